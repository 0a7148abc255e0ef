//! `nas-client`: command-line wiring over the libraries. `train` trains and
//! evaluates one model (with energy from energyd when it runs), `datasets`
//! lists the bundled data, `search`/`report`/`compare` run the
//! architecture search, `study copy` moves a study between SQLite and
//! PostgreSQL, and `trial` is one search trial's child process
//! (a JSON `TrialRequest` in on stdin, a JSON `TrainReport` out).

use anyhow::Context;
use clap::{Args, Parser, Subcommand};
use indicatif::{ProgressBar, ProgressStyle};
use nas_client::search::trainer::TrialRequest;
use nas_client::train_cli::{config_from, fit_model_to, load_dataset, TrainArgs};
use std::io::IsTerminal;
use std::path::PathBuf;
use tabular_nn::baselines::run_baselines;
use tabular_nn::data::{bundled, Dataset};
use tabular_nn::kernels::KernelTime;
use tabular_nn::meter::{PhaseEnergy, PhaseMeter};
use tabular_nn::metrics::Metrics;
use tabular_nn::session::ProcessSession;
use tabular_nn::train::{train_and_evaluate, EpochRecord, TrainConfig, TrainReport};

#[derive(Parser)]
#[command(
    name = "nas-client",
    version,
    about = "Tabular training with per-kernel energy from energyd"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Train and evaluate one model.
    Train(Box<TrainArgs>),
    /// List the bundled datasets.
    Datasets,
    /// Write a dataset's encoded splits as raw little-endian f32 files
    /// (`{train,val,test}_{x,y}.f32` and `meta.json`), so other frameworks
    /// (bench/training) train on exactly the same matrices.
    Export(ExportArgs),
    /// Energy-aware architecture search.
    Search(nas_client::search::SearchArgs),
    /// Grow a network by energy-aware neuron splitting (each round a
    /// trial of a study).
    Grow(Box<nas_client::grow::GrowArgs>),
    /// Inference energy of saved growth rounds, measured interleaved
    /// (A B A B …) in one process: median and spread per network and of
    /// each one's paired ratio to the first.
    MeasureInference(nas_client::inference_ab::MeasureInferenceArgs),
    /// One-shot energy-aware search: train a weight-sharing supernet
    /// (measured by energyd), search it with a policy-gradient controller
    /// on inherited accuracy and calibrated predicted energy, retrain the
    /// pick and the best others as trials of the study. Resumable.
    Oneshot(Box<nas_client::oneshot::OneshotArgs>),
    /// Report on a search study.
    Report(nas_client::search::ReportArgs),
    /// Compare energy-aware and accuracy-only searches; with --calibration,
    /// also a calibrated search against the measured one.
    Compare(nas_client::search::CompareArgs),
    /// Score a study's (or a table's) trained architectures with zero-cost
    /// proxies: Kendall τ and Spearman ρ against their accuracy, and cost.
    Proxies(Box<nas_client::proxies_cli::ProxiesArgs>),
    /// Manage studies (copy between SQLite and PostgreSQL).
    #[command(subcommand)]
    Study(StudyCommand),
    /// One search trial (the child process a search starts): reads a JSON
    /// trial request on stdin, trains, writes the JSON training report on
    /// stdout.
    #[command(hide = true)]
    Trial,
    /// One light evaluation of a carbon-aware search (the child process it
    /// starts): reads a JSON light request on stdin, scores the untrained
    /// network with a zero-cost proxy measured by energyd, writes JSON.
    #[command(hide = true)]
    LightTrial,
}

#[derive(Subcommand)]
enum StudyCommand {
    /// Copy a study into a new one, between SQLite files and PostgreSQL
    /// studies either way: spec, metric registry, every trial.
    Copy(nas_client::search::StudyCopyArgs),
}

#[derive(Args, Debug)]
struct ExportArgs {
    /// Bundled dataset.
    #[arg(long)]
    dataset: String,
    /// Seed of the split.
    #[arg(long, default_value_t = 0)]
    split_seed: u64,
    /// Output directory (created).
    #[arg(long)]
    out: PathBuf,
}

fn main() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
    let cli = Cli::parse();
    if matches!(cli.command, Command::Datasets | Command::Report(_)) {
        quiet_on_closed_stdout();
    }
    let result = match cli.command {
        Command::Train(args) => train(*args),
        Command::Datasets => {
            for d in bundled::BUNDLED {
                println!(
                    "{:<20} {:<26} target {:<20} {}",
                    d.name, d.file, d.target, d.description
                );
            }
            Ok(())
        }
        Command::Export(a) => export(&a),
        Command::Search(a) => nas_client::search::search(a),
        Command::Grow(a) => nas_client::grow::grow(*a),
        Command::MeasureInference(a) => nas_client::inference_ab::measure_inference(a),
        Command::Oneshot(a) => oneshot(&a),
        Command::Report(a) => nas_client::search::report(a),
        Command::Compare(a) => nas_client::search::compare(a),
        Command::Proxies(a) => nas_client::proxies_cli::proxies(*a),
        Command::Study(StudyCommand::Copy(a)) => nas_client::search::study_copy(a),
        Command::Trial => trial(),
        Command::LightTrial => nas_client::search::carbon_aware::light_trial(),
    };
    if let Err(e) = result {
        eprintln!("nas-client: error: {e:#}");
        std::process::exit(1);
    }
}

/// `nas-client report | head` should end quietly, as any Unix filter does.
/// Rust starts with SIGPIPE ignored, so a write to a closed pipe is an
/// error that `println!` turns into a panic; the default disposition lets
/// the kernel end the process instead. Only for commands that just print:
/// `search`, `compare`, `grow` and `train` write to their trial children's
/// stdin and to energyd's socket, where a dead peer must be an error they
/// handle, not a signal that kills them.
fn quiet_on_closed_stdout() {
    // SAFETY: called on the main thread before any other thread exists;
    // SIG_DFL is a valid disposition for SIGPIPE.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
}

fn export(args: &ExportArgs) -> anyhow::Result<()> {
    let ds = bundled::load(&args.dataset, args.split_seed)?;
    std::fs::create_dir_all(&args.out)
        .with_context(|| format!("creating {}", args.out.display()))?;
    let write = |name: &str, values: &mut dyn Iterator<Item = f32>| -> anyhow::Result<()> {
        let bytes: Vec<u8> = values.flat_map(f32::to_le_bytes).collect();
        let path = args.out.join(name);
        std::fs::write(&path, bytes).with_context(|| format!("writing {}", path.display()))
    };
    for (name, split) in [("train", &ds.train), ("val", &ds.val), ("test", &ds.test)] {
        write(&format!("{name}_x.f32"), &mut split.x.iter().copied())?;
        write(&format!("{name}_y.f32"), &mut split.y.iter().copied())?;
    }
    let meta = serde_json::json!({
        "dataset": ds.name,
        "task": ds.task,
        "features": ds.n_features(),
        "outputs": ds.n_outputs(),
        "rows": { "train": ds.train.rows(), "val": ds.val.rows(), "test": ds.test.rows() },
    });
    std::fs::write(
        args.out.join("meta.json"),
        serde_json::to_string_pretty(&meta)?,
    )
    .with_context(|| format!("writing {}/meta.json", args.out.display()))?;
    Ok(())
}

/// Trains `config` on `dataset`, measured by energyd at `socket` (the
/// default socket when `None`) unless `no_energy`; a daemon that cannot be
/// reached is noted in the report, not an error.
fn train_measured(
    dataset: &Dataset,
    config: &TrainConfig,
    socket: Option<PathBuf>,
    no_energy: bool,
    on_epoch: &mut (dyn FnMut(&EpochRecord) + Send),
) -> anyhow::Result<TrainReport> {
    let mut session = None;
    let mut energy_note = None;
    if no_energy {
        energy_note = Some("energy not measured (--no-energy)".to_owned());
    } else {
        let socket = socket.unwrap_or_else(shared::paths::client_default_socket);
        match ProcessSession::connect(&socket, "nas-client", false) {
            Ok(s) => session = Some(s),
            Err(e) => {
                energy_note = Some(format!(
                    "energyd not reachable ({e}); training without energy figures"
                ))
            }
        }
    }
    if let Some(note) = &energy_note {
        eprintln!("nas-client: {note}");
    }
    let meter = session.as_mut().map(|s| s as &mut dyn PhaseMeter);
    let mut report = train_and_evaluate(dataset, config, meter, on_epoch)?;
    if let Some(s) = session {
        s.close();
    }
    // The span uploader's first problem, once (later ones are counted in
    // the report's span delivery).
    if let Some(w) = report
        .span_delivery
        .as_ref()
        .and_then(|d| d.warning.as_ref())
    {
        eprintln!("nas-client: warning: {w}");
    }
    if report.energy.is_none() {
        if let Some(note) = energy_note {
            report.energy_unavailable = Some(note);
        }
    }
    Ok(report)
}

/// `nas-client oneshot`: progress on stderr, the summary on stdout.
fn oneshot(args: &nas_client::oneshot::OneshotArgs) -> anyhow::Result<()> {
    let summary =
        nas_client::oneshot::oneshot(args, &|line| eprintln!("nas-client oneshot: {line}"))?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&summary)?);
        return Ok(());
    }
    let energy = |e: Option<nas_client::oneshot::EnergySum>| {
        e.map_or("not measured".to_owned(), |e| {
            format!("{:.3} J ± {:.3} ({})", e.joules, e.sigma_j, e.provenance)
        })
    };
    println!(
        "supernet     {} epochs ({} this run), energy {}",
        summary.supernet_epochs,
        summary.supernet_epochs_trained_now,
        energy(summary.supernet_energy)
    );
    println!(
        "controller   {} steps ({} rejected), {} children evaluated, energy {}",
        summary.controller_steps,
        summary.rejected_steps,
        summary.children_evaluated,
        energy(summary.controller_energy)
    );
    println!(
        "pick         {}: inherited accuracy {:.4}, predicted {:.5} J per 1000 rows (estimated)",
        summary.pick.spec,
        summary.pick.inherited_val_accuracy,
        summary.pick.predicted_inference_j_per_1k
    );
    for t in &summary.retrained {
        println!(
            "trial #{:<4} {:<14} {}: val accuracy {}, inference {} J per 1000 rows ({})",
            t.number,
            t.tag,
            t.child.spec,
            t.val_accuracy.map_or("-".into(), |a| format!("{a:.4}")),
            t.inference_energy_j_per_1k
                .map_or("-".into(), |j| format!("{j:.5}")),
            t.provenance.map_or("no energy".into(), |p| p.to_string())
        );
    }
    println!("report: nas-client report --study {}", summary.study);
    Ok(())
}

/// `nas-client trial`: one search trial, typed both ways.
fn trial() -> anyhow::Result<()> {
    let request: TrialRequest = serde_json::from_reader(std::io::stdin().lock())
        .context("reading the trial request (JSON) on stdin")?;
    let dataset = request.data.load()?;
    let mut config = request.config;
    fit_model_to(&mut config, &dataset);
    let report = train_measured(&dataset, &config, request.socket, false, &mut |_| {})?;
    println!(
        "{}",
        serde_json::to_string(&report).context("writing the report")?
    );
    Ok(())
}

fn train(args: TrainArgs) -> anyhow::Result<()> {
    let mut config = config_from(&args)?;
    let dataset = load_dataset(&args)?;
    fit_model_to(&mut config, &dataset);
    if !args.json {
        eprintln!(
            "nas-client: {} ({:?}): {} train / {} validation / {} test rows, {} features; {}; {} threads",
            dataset.name,
            dataset.task,
            dataset.train.rows(),
            dataset.val.rows(),
            dataset.test.rows(),
            dataset.n_features(),
            config.model.describe(),
            config.threads
        );
    }
    let bar = if args.json {
        ProgressBar::hidden()
    } else {
        let bar = ProgressBar::new(config.epochs as u64);
        bar.set_style(
            ProgressStyle::with_template("{prefix} [{bar:30}] epoch {pos}/{len} {msg}")
                .unwrap_or_else(|_| ProgressStyle::default_bar())
                .progress_chars("=> "),
        );
        bar.set_prefix("training");
        bar
    };
    let mut on_epoch = |e: &EpochRecord| {
        bar.set_position(e.epoch as u64);
        bar.set_message(format!(
            "train loss {:.4}  val loss {:.4}  val score {:.4}",
            e.train_loss, e.val_loss, e.val_score
        ));
    };
    let report = train_measured(
        &dataset,
        &config,
        args.socket.clone(),
        args.no_energy,
        &mut on_epoch,
    )?;
    bar.finish_and_clear();
    let baselines = if args.baselines {
        run_baselines(&dataset)
    } else {
        Vec::new()
    };
    if args.json {
        let baselines_json: Vec<serde_json::Value> = baselines
            .iter()
            .map(|b| match b {
                Ok(r) => serde_json::to_value(r).unwrap_or_default(),
                Err(e) => serde_json::json!({ "error": e.to_string() }),
            })
            .collect();
        let mut value = serde_json::to_value(&report).context("serialising the report")?;
        if let Some(obj) = value.as_object_mut() {
            obj.insert("baselines".into(), baselines_json.into());
        }
        println!("{}", serde_json::to_string_pretty(&value)?);
        return Ok(());
    }
    print_report(&report);
    if !baselines.is_empty() {
        println!("\nbaselines (linfa, same encoded training split; test metrics):");
        for b in baselines {
            match b {
                Ok(r) => println!(
                    "  {:<28} {}  (fit {:.2} s)",
                    r.model,
                    metrics_line(&r.test),
                    r.fit_ns as f64 * 1e-9
                ),
                Err(e) => println!("  {e}"),
            }
        }
    }
    Ok(())
}

fn metrics_line(m: &Metrics) -> String {
    let mut parts = Vec::new();
    let mut add = |name: &str, v: Option<f64>| {
        if let Some(v) = v {
            parts.push(format!("{name} {v:.4}"));
        }
    };
    add("accuracy", m.accuracy);
    add("balanced_accuracy", m.balanced_accuracy);
    add("log_loss", m.log_loss);
    add("roc_auc", m.roc_auc);
    add("rmse", m.rmse);
    add("mae", m.mae);
    add("r2", m.r2);
    parts.join("  ")
}

fn print_kernels(title: &str, kernels: &[KernelTime], energy: Option<&PhaseEnergy>) {
    let total_ns: u64 = kernels.iter().map(|k| k.total_ns).sum();
    println!("\n{title}");
    match energy {
        Some(_) => println!(
            "  {:<20} {:>9} {:>10} {:>7} {:>11} {:>7}  method",
            "kernel", "count", "time ms", "time %", "energy J", "energy %"
        ),
        None => println!(
            "  {:<20} {:>9} {:>10} {:>7}",
            "kernel", "count", "time ms", "time %"
        ),
    }
    for k in kernels {
        let pct = 100.0 * k.total_ns as f64 / total_ns.max(1) as f64;
        let base = format!(
            "  {:<20} {:>9} {:>10.1} {:>6.1}%",
            k.kind.as_str(),
            k.count,
            k.total_ns as f64 * 1e-6,
            pct
        );
        match energy.and_then(|e| e.kernels.iter().find(|x| x.name == k.kind.as_str())) {
            Some(ke) => println!(
                "{base} {:>11} {:>7}  {:?}",
                ke.energy_j.map_or("-".into(), |j| format!("{j:.4}")),
                ke.share
                    .map_or("-".into(), |s| format!("{:.1}%", 100.0 * s)),
                ke.method
            ),
            None => println!("{base}"),
        }
    }
}

fn print_report(r: &TrainReport) {
    println!(
        "model        {} ({} parameters, {} forward FLOP/row)",
        r.model, r.parameters, r.flops_per_row_inference
    );
    println!(
        "training     {} epochs (best {}{}), {:.2} s in steps, {:.2} s wall, {:.0} rows/s",
        r.epochs_run,
        r.best_epoch,
        if r.stopped_early {
            ", stopped early"
        } else {
            ""
        },
        r.train_step_time_ns as f64 * 1e-9,
        r.train_wall_ns as f64 * 1e-9,
        r.train_rows_per_s
    );
    println!(
        "inference    {} rows in {:.3} s ({} passes over test): {:.0} rows/s",
        r.inference.rows,
        r.inference.time_ns as f64 * 1e-9,
        r.inference.passes,
        r.inference.rows_per_s
    );
    println!("validation   {}", metrics_line(&r.val));
    println!("test         {}", metrics_line(&r.test));
    println!(
        "spans        {} recorded at {:.1} ns each: {:.3}% of step time",
        r.spans_recorded,
        r.span_cost_ns,
        100.0 * r.span_overhead_fraction
    );
    match &r.energy {
        Some(e) => {
            println!(
                "energy       training {:.3} J ± {:.3} ({}), inference {}",
                e.train.process_j,
                e.train.uncertainty_j,
                e.train.provenance,
                match (&e.inference, e.inference_j_per_1000_rows) {
                    (Some(i), Some(j)) => format!("{j:.5} J per 1000 rows ({})", i.provenance),
                    _ => "not measured (--no-inference-energy)".to_owned(),
                }
            );
            for n in &e.train.notes {
                println!("             note: {n}");
            }
        }
        None => println!(
            "energy       none: {}",
            r.energy_unavailable
                .as_deref()
                .unwrap_or("energyd not used")
        ),
    }
    if let Some(d) = &r.span_delivery {
        println!(
            "             spans to energyd: {} recorded, {} accepted, {} rejected, {} dropped, {} unsent ({} retries, {} reconnects)",
            d.recorded, d.accepted, d.rejected, d.dropped, d.pending, d.retries, d.reconnects
        );
    }
    let energy = r.energy.as_ref();
    print_kernels(
        "training kernels",
        &r.train_kernels,
        energy.map(|e| &e.train),
    );
    print_kernels(
        "inference kernels",
        &r.inference_kernels,
        energy.and_then(|e| e.inference.as_ref()),
    );
}
