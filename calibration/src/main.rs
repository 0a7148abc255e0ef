//! `calibration`: measure what each kernel type costs on this machine
//! (`run`), check the predictions on whole networks (`validate`), predict
//! networks from the command line (`predict`), and show a calibration file
//! (`show`). Argument parsing and wiring only; the logic lives in the
//! library.

mod trainer;

use anyhow::{bail, Context};
use calibration::meter::DaemonMeter;
use calibration::microbench::{measure_point, Grid, RunCheckpoint};
use clap::{Parser, Subcommand};
use energy_model::fingerprint::DifferenceWeight;
use energy_model::validate::{summarize, NetworkComparison};
use energy_model::{Calibration, MachineFingerprint};
use indicatif::{ProgressBar, ProgressStyle};
use std::path::{Path, PathBuf};
use std::process::Command;
use trainer::RunnerKind;

/// Per-kernel energy calibration of this machine.
#[derive(Parser, Debug)]
#[command(version, about)]
struct Args {
    /// Log filter (tracing EnvFilter syntax); RUST_LOG also works.
    #[arg(long, default_value = "warn", global = true)]
    log: String,
    #[command(subcommand)]
    command: Cmd,
}

/// Arguments of `calibration run`.
#[derive(clap::Args, Debug)]
struct RunArgs {
    /// energyd socket (default: the user socket if present, else the system one).
    #[arg(long)]
    socket: Option<PathBuf>,
    /// Calibration file to write.
    #[arg(long, default_value = "calibration.toml")]
    out: PathBuf,
    /// Thread counts to calibrate, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "1,2")]
    threads: Vec<u32>,
    /// Kernel types to calibrate (default: every kind the trainer emits).
    #[arg(long, value_delimiter = ',')]
    kernels: Vec<String>,
    /// Measured window per point, milliseconds (the estimated CPU
    /// source steps every 10 ms, so 200 ms resolves a point to ~5 %).
    #[arg(long, default_value_t = 200)]
    window_ms: u64,
    /// Wait after each window before asking energyd for its energy, ms
    /// (the daemon's last sample of the window must have arrived).
    #[arg(long, default_value_t = 100)]
    settle_ms: u64,
    /// Continue a stopped run from `<out>.partial.json`.
    #[arg(long)]
    resume: bool,
    /// Which kernels to measure.
    #[arg(long, value_enum, default_value = "trainer")]
    runner: RunnerKind,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Microbenchmark every kernel type over a grid of shapes and thread
    /// counts while energyd attributes their energy, fit the models and
    /// write the calibration file. Ctrl-C stops; `--resume` continues.
    Run(RunArgs),
    /// Predict the energy of networks never seen in fitting, train them
    /// while energyd measures, and print predicted against measured.
    Validate {
        /// Calibration file.
        #[arg(long)]
        calibration: PathBuf,
        /// energyd socket.
        #[arg(long)]
        socket: Option<PathBuf>,
        /// Use a calibration made on another machine.
        #[arg(long)]
        force_calibration: bool,
        /// Bundled dataset the trainer's networks are trained on.
        #[arg(long, default_value = "phoneme")]
        dataset: String,
        /// Threads to train with (must be calibrated).
        #[arg(long, default_value_t = 1)]
        threads: u32,
        /// Which networks to train: the trainer's, or the reference MLPs.
        #[arg(long, value_enum, default_value = "trainer")]
        runner: RunnerKind,
    },
    /// Predict networks without running them: reads one JSON network run
    /// (`{"model": …, "data": …, "run": …}`, energy_model::NetworkRun) per
    /// line on stdin (or `--network`), writes one JSON prediction per line
    /// (`{"error": "..."}` for a line that fails). Searches do not use
    /// this: nas-client links the energy model.
    Predict {
        /// Calibration file.
        #[arg(long)]
        calibration: PathBuf,
        /// Use a calibration made on another machine.
        #[arg(long)]
        force_calibration: bool,
        /// One network run (JSON) instead of stdin.
        #[arg(long)]
        network: Option<String>,
    },
    /// Print a calibration file's machine, provenance and per-kernel fit quality.
    Show {
        /// Calibration file.
        #[arg(long)]
        calibration: PathBuf,
    },
    /// One thread count of a run (`run` starts one worker process per
    /// thread count, so each count's measurements start from a fresh
    /// process).
    #[command(hide = true)]
    MeasureWorker {
        #[arg(long)]
        socket: PathBuf,
        #[arg(long)]
        settle_ms: u64,
        #[arg(long)]
        checkpoint: PathBuf,
        #[arg(long)]
        threads: u32,
        #[arg(long, value_enum)]
        runner: RunnerKind,
    },
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(&args.log));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
    match args.command {
        Cmd::Run(args) => run(args),
        Cmd::Validate {
            calibration,
            socket,
            force_calibration,
            dataset,
            threads,
            runner,
        } => validate(
            &calibration,
            socket,
            force_calibration,
            &dataset,
            threads,
            runner,
        ),
        Cmd::Predict {
            calibration,
            force_calibration,
            network,
        } => predict(&calibration, force_calibration, network),
        Cmd::Show { calibration } => show(&calibration),
        Cmd::MeasureWorker {
            socket,
            settle_ms,
            checkpoint,
            threads,
            runner,
        } => measure_worker(&socket, settle_ms, &checkpoint, threads, runner),
    }
}

fn socket_or_default(socket: Option<PathBuf>) -> PathBuf {
    socket.unwrap_or_else(shared::paths::client_default_socket)
}

fn run(args: RunArgs) -> anyhow::Result<()> {
    let RunArgs {
        socket,
        out,
        threads,
        kernels,
        window_ms,
        settle_ms,
        resume,
        runner,
    } = args;
    let out = out.as_path();
    let socket = socket_or_default(socket);
    if threads.is_empty() || threads.contains(&0) {
        bail!("--threads needs thread counts of at least 1");
    }
    let sources = DaemonMeter::connect(&socket, "calibration")
        .and_then(|mut m| m.session().sources())
        .with_context(|| format!("asking energyd at {} for its sources", socket.display()))?;
    let machine = MachineFingerprint::probe(&sources).context("describing this machine")?;
    let checkpoint_path = RunCheckpoint::path_for(out);
    let checkpoint = if checkpoint_path.exists() {
        if !resume {
            bail!(
                "a stopped run left {}: pass --resume to continue it, or remove it to start again",
                checkpoint_path.display()
            );
        }
        let cp = RunCheckpoint::load(&checkpoint_path)?;
        let refused: Vec<String> = cp
            .machine
            .differences(&machine)
            .iter()
            .filter(|d| d.weight == DifferenceWeight::Identity)
            .map(ToString::to_string)
            .collect();
        if !refused.is_empty() {
            bail!(
                "{} was measured on a different machine ({}); remove it to start again",
                checkpoint_path.display(),
                refused.join("; ")
            );
        }
        eprintln!(
            "resuming {}: {} of {} points measured",
            checkpoint_path.display(),
            cp.observations.len(),
            cp.grid.points().len()
        );
        cp
    } else {
        let kernels = if kernels.is_empty() {
            trainer::kernel_names(runner)
        } else {
            kernels
        };
        let grid = Grid {
            kernels,
            shapes: Grid::default_shapes(),
            threads,
            window_ms,
        };
        let cp = RunCheckpoint::new(machine.clone(), grid);
        cp.save(&checkpoint_path)?;
        cp
    };
    eprintln!(
        "calibrating {} kernel types x {} shapes x threads {:?} ({} ms per point); energy source provenance: {}",
        checkpoint.grid.kernels.len(),
        checkpoint.grid.shapes.len(),
        checkpoint.grid.threads,
        checkpoint.grid.window_ms,
        machine.provenance
    );
    let exe = std::env::current_exe().context("finding this program to start workers")?;
    for &t in &checkpoint.grid.threads {
        let status = Command::new(&exe)
            .arg("measure-worker")
            .arg("--socket")
            .arg(&socket)
            .arg("--settle-ms")
            .arg(settle_ms.to_string())
            .arg("--checkpoint")
            .arg(&checkpoint_path)
            .arg("--threads")
            .arg(t.to_string())
            .arg("--runner")
            .arg(runner.arg())
            .status()
            .with_context(|| format!("starting the worker for {t} threads"))?;
        if !status.success() {
            bail!(
                "the worker for {t} threads stopped ({status}); measured points are kept in {}: \
                 rerun with --resume",
                checkpoint_path.display()
            );
        }
    }
    let checkpoint = RunCheckpoint::load(&checkpoint_path)?;
    let (calibration, failures) =
        checkpoint.fit(&format!("calibration {}", env!("CARGO_PKG_VERSION")));
    for (kernel, threads, e) in &failures {
        eprintln!("warning: no model for {kernel} at {threads} threads: {e}");
    }
    if calibration.kernels.is_empty() {
        bail!(
            "no kernel type could be fitted; measured points are kept in {}",
            checkpoint_path.display()
        );
    }
    calibration
        .save(out)
        .with_context(|| format!("writing {}", out.display()))?;
    print_models(&calibration);
    std::fs::remove_file(&checkpoint_path)
        .with_context(|| format!("removing {}", checkpoint_path.display()))?;
    println!(
        "wrote {} ({} models, {} failed points); provenance={}",
        out.display(),
        calibration.kernels.len(),
        checkpoint.failures.len(),
        calibration.provenance
    );
    Ok(())
}

fn measure_worker(
    socket: &Path,
    settle_ms: u64,
    checkpoint_path: &Path,
    threads: u32,
    runner: RunnerKind,
) -> anyhow::Result<()> {
    let runner_kind = runner;
    let mut runner = trainer::kernel_runner(runner);
    let mut meter = DaemonMeter::connect(socket, "calibration-worker")
        .with_context(|| format!("connecting to energyd at {}", socket.display()))?
        .with_settle(std::time::Duration::from_millis(settle_ms));
    let mut checkpoint = RunCheckpoint::load(checkpoint_path)?;
    let points: Vec<calibration::microbench::GridPoint> = checkpoint
        .grid
        .points()
        .into_iter()
        .filter(|p| p.threads == threads)
        // Grid shapes are dense-block coordinates; each point is measured
        // (and recorded) at the fit coordinates of the call it runs.
        .map(|p| calibration::microbench::GridPoint {
            shape: runner.fit_shape(&p.kernel, p.shape),
            ..p
        })
        .fold(Vec::new(), |mut unique, p| {
            // Optimizer steps depend on the parameter count only: the
            // grid's batch sizes give the same point several times.
            if !unique.contains(&p) {
                unique.push(p);
            }
            unique
        });
    let done = points.iter().filter(|p| checkpoint.is_done(p)).count();
    let bar = ProgressBar::new(points.len() as u64);
    bar.set_style(
        ProgressStyle::with_template(
            "{prefix} [{elapsed_precise}] {wide_bar} {pos}/{len} (eta {eta}) {msg}",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    bar.set_prefix(format!("{threads} thread(s)"));
    bar.set_position(done as u64);
    let window_ms = checkpoint.grid.window_ms;
    let todo: Vec<_> = points.iter().filter(|p| !checkpoint.is_done(p)).collect();
    for point in todo {
        bar.set_message(format!("{} {}", point.kernel, point.shape));
        match measure_point(runner.as_mut(), &mut meter, point, window_ms) {
            Ok((observation, provenance)) => checkpoint.record(observation, provenance),
            Err(e) => {
                if bar.is_hidden() {
                    eprintln!("warning: {e}");
                } else {
                    bar.println(format!("warning: {e}"));
                }
                checkpoint.failures.push(e.to_string());
            }
        }
        checkpoint.save(checkpoint_path)?;
        bar.inc(1);
        // Without a terminal the bar draws nothing: print every tenth.
        let (pos, len) = (bar.position(), bar_len_nonzero(&bar));
        if bar.is_hidden() && pos * 10 / len != (pos - 1) * 10 / len {
            eprintln!("{threads} thread(s): {pos}/{len} points");
        }
    }
    bar.finish_with_message("done");
    // Whole calibration networks for the overhead around kernels, once
    // per thread count (the trainer's networks only: the reference kernels
    // have no training loop to measure).
    if runner_kind == RunnerKind::Trainer
        && !checkpoint
            .networks
            .iter()
            .any(|n| n.description.run.threads == threads)
    {
        eprintln!("{threads} thread(s): training the calibration networks");
        trainer::measure_calibration_networks(&mut checkpoint, &mut meter, threads)?;
        checkpoint.save(checkpoint_path)?;
    }
    Ok(())
}

fn bar_len_nonzero(bar: &ProgressBar) -> u64 {
    bar.length().unwrap_or(1).max(1)
}

fn print_models(calibration: &Calibration) {
    println!(
        "{:<20} {:>3} {:>4} {:>8} {:>9} {:>8} {:>9} {:>10}",
        "kernel", "thr", "n", "cpu_r2", "cpu_mape", "w_per_cpu", "energy_r2", "energy_mape"
    );
    for m in &calibration.kernels {
        let mean_power: f64 = m.power_w.predict(energy_model::FitShape {
            batch: 64,
            in_width: 64,
            out_width: 64,
        });
        println!(
            "{:<20} {:>3} {:>4} {:>8.3} {:>8.1}% {:>8.2} {:>9.3} {:>9.1}%",
            m.kernel,
            m.threads,
            m.cpu_time_ns.fit.samples,
            m.cpu_time_ns.fit.r2,
            m.cpu_time_ns.fit.mean_abs_pct_error,
            mean_power,
            m.energy_j.fit.r2,
            m.energy_j.fit.mean_abs_pct_error
        );
    }
    for o in &calibration.overheads {
        println!(
            "overhead around kernels at {} thread(s): {:.3e} J per kernel call ({} network phases)",
            o.threads, o.j_per_call, o.samples
        );
    }
}

fn show(path: &Path) -> anyhow::Result<()> {
    let calibration = Calibration::load_unchecked(path)?;
    let m = &calibration.machine;
    println!(
        "calibration {} (format {}, {}), provenance: {}",
        path.display(),
        calibration.format_version,
        calibration.created_by,
        calibration.provenance
    );
    println!(
        "machine: {} x{} cpus, kernel {}, gpu {}",
        m.cpu_model,
        m.logical_cpus,
        m.kernel_release,
        m.gpu.as_deref().unwrap_or("none")
    );
    for s in &m.energy_sources {
        println!("source: {} [{}] {}", s.name, s.kind, s.provenance);
    }
    for n in &calibration.notes {
        println!("note: {n}");
    }
    print_models(&calibration);
    Ok(())
}

fn validate(
    path: &Path,
    socket: Option<PathBuf>,
    force: bool,
    dataset: &str,
    threads: u32,
    runner: RunnerKind,
) -> anyhow::Result<()> {
    let socket = socket_or_default(socket);
    let calibration = Calibration::load_unchecked(path)?;
    let mut meter = DaemonMeter::connect(&socket, "calibration-validate")
        .with_context(|| format!("connecting to energyd at {}", socket.display()))?;
    let sources = meter
        .session()
        .sources()
        .context("asking energyd for its sources")?;
    let here = MachineFingerprint::probe(&sources).context("describing this machine")?;
    for d in calibration.check_machine(path, &here, force)? {
        eprintln!("warning: machine differs: {d}");
    }
    let rows: Vec<NetworkComparison> =
        trainer::validate_networks(runner, &calibration, &mut meter, dataset, threads)?;
    println!(
        "{:<36} {:<9} {:>12} {:>12} {:>8}  provenance",
        "network", "phase", "predicted_j", "measured_j", "error"
    );
    for r in &rows {
        println!(
            "{:<36} {:<9} {:>12.4} {:>12.4} {:>7.1}%  {}",
            r.network,
            r.phase,
            r.predicted_j,
            r.measured_j,
            r.abs_pct_error(),
            r.provenance
        );
    }
    let summary = summarize(&rows).context("no network was validated")?;
    for (network, mape) in &summary.per_network {
        println!("mape_pct[{network}]={mape:.1}");
    }
    // nn-Meter's accuracy: the share of predictions within ±5% / ±10%.
    for (backbone, a) in &summary.per_backbone {
        println!(
            "backbone[{backbone}] rows={} mape_pct={:.1} within_5pct={:.0}% within_10pct={:.0}%",
            a.rows,
            a.mape_pct,
            100.0 * a.within_5pct_share,
            100.0 * a.within_10pct_share
        );
    }
    println!(
        "mape_pct={:.1} kernels={} networks={} provenance={} within_10pct={:.0}%",
        summary.overall_mape_pct,
        calibration.kernel_names().len(),
        summary.per_network.len(),
        summary.provenance,
        100.0 * summary.overall.within_10pct_share
    );
    Ok(())
}

fn predict(path: &Path, force: bool, network: Option<String>) -> anyhow::Result<()> {
    use energy_model::NetworkRun;
    use std::io::{BufRead, Write};
    let calibration = Calibration::load(path, force)?;
    let answer = |line: &str| -> serde_json::Value {
        let result = serde_json::from_str::<NetworkRun>(line)
            .map_err(|e| format!("network run: {e}"))
            .and_then(|d| calibration.predict_network(&d).map_err(|e| e.to_string()));
        match result {
            Ok(p) => serde_json::to_value(p)
                .unwrap_or_else(|e| serde_json::json!({ "error": e.to_string() })),
            Err(e) => serde_json::json!({ "error": e }),
        }
    };
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    if let Some(line) = network {
        writeln!(out, "{}", answer(&line)).context("writing the prediction")?;
        return Ok(());
    }
    for line in std::io::stdin().lock().lines() {
        let line = line.context("reading a network description from stdin")?;
        if line.trim().is_empty() {
            continue;
        }
        writeln!(out, "{}", answer(&line)).context("writing a prediction")?;
        out.flush().context("writing a prediction")?;
    }
    Ok(())
}
