//! `energyctl`: command-line client of energyd. Argument parsing, calls
//! through `shared::client`, and printing; no logic of its own.

use anyhow::{bail, Context};
use attribution::calltree::{CallForest, CallTreeOptions};
use attribution::optable::OpTable;
use attribution::spanfile::{
    read_span_file, CategoryFilter, ClockOption, SpanFile, SpanFileOptions,
};
use clap::{Parser, Subcommand};
use serde_json::json;
use shared::client::{Client, ClientError};
use shared::protocol::{
    Breakdown, CgroupEnergy, CgroupSelector, CgroupTracking, EnergyReport, PowerSnapshot, SpanBatch,
};
use shared::source::SourceInfo;
use shared::{Domain, MonotonicNs, SourceId};
use std::collections::HashMap;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

/// Query a running energyd.
#[derive(Parser, Debug)]
#[command(version, about)]
struct Args {
    /// Socket of the daemon (default: the user-mode socket if present, else
    /// the system one).
    #[arg(long, global = true)]
    socket: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Daemon version, sources with provenance, sampling rate, overruns and current power.
    Status {
        /// One JSON document instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Machine-wide energy per source over an interval; with `--unit` or
    /// `--cgroup`, the energy of that control group (attributed like a
    /// process's: its CPU time's share of each domain).
    Energy {
        /// Start (CLOCK_MONOTONIC ns).
        #[arg(long, requires = "to", conflicts_with = "last")]
        from: Option<u64>,
        /// End (CLOCK_MONOTONIC ns).
        #[arg(long, requires = "from")]
        to: Option<u64>,
        /// The interval ending now, e.g. `1s`, `250ms`, `2m`. With a cgroup
        /// not tracked yet: track it, measure for this long, report.
        #[arg(long, value_parser = parse_duration)]
        last: Option<Duration>,
        #[command(flatten)]
        cgroup: CgroupArgs,
        /// JSON output.
        #[arg(long)]
        json: bool,
    },
    /// Keep tracking a control group (a systemd unit's or a cgroup path),
    /// so `energy --unit/--cgroup` can report any interval from now on.
    Track {
        #[command(flatten)]
        cgroup: CgroupArgs,
    },
    /// Stop tracking a control group.
    Untrack {
        #[command(flatten)]
        cgroup: CgroupArgs,
    },
    /// Live power, one line per update.
    Watch {
        /// Interval between updates, e.g. `500ms` (clamped to your policy window).
        #[arg(long, value_parser = parse_duration, default_value = "1s")]
        interval: Duration,
        /// Stop after this many updates (default: until interrupted).
        #[arg(long)]
        count: Option<u64>,
        /// JSON lines output.
        #[arg(long)]
        json: bool,
    },
    /// Run a command, track it and its children, and print its energy when it exits.
    Run {
        /// JSON output (on stderr's behalf, printed to stdout after the command).
        #[arg(long)]
        json: bool,
        /// A span file the command writes (CSV or PyTorch Chrome trace):
        /// attributed to the command's kernels when it exits.
        #[arg(long)]
        spans: Option<PathBuf>,
        #[command(flatten)]
        span_options: SpanArgs,
        /// The command and its arguments.
        #[arg(required = true, trailing_var_arg = true, allow_hyphen_values = true)]
        command: Vec<String>,
    },
    /// Attribute a tracked process's energy to the kernel spans in a file
    /// (CSV `name,start_ns,end_ns[,pid,tid]` or the Chrome trace JSON of the
    /// PyTorch profiler).
    Attribute {
        /// The span file.
        #[arg(long)]
        spans: PathBuf,
        /// The tracked process the spans belong to (e.g. the pid
        /// `energyctl run` printed). Default: the pids in the file.
        #[arg(long)]
        pid: Option<u32>,
        #[command(flatten)]
        span_options: SpanArgs,
        /// JSON output.
        #[arg(long)]
        json: bool,
    },
}

/// A control group, by systemd unit or by path.
#[derive(clap::Args, Debug, Clone)]
#[group(multiple = false)]
struct CgroupArgs {
    /// A systemd unit with a cgroup, e.g. `nginx.service`, `machine.slice`.
    #[arg(long)]
    unit: Option<String>,
    /// A cgroup path as `/proc/PID/cgroup` prints it, e.g.
    /// `/system.slice/nginx.service`.
    #[arg(long)]
    cgroup: Option<String>,
}

impl CgroupArgs {
    fn selector(&self) -> Option<CgroupSelector> {
        match (&self.unit, &self.cgroup) {
            (Some(name), _) => Some(CgroupSelector::Unit { name: name.clone() }),
            (None, Some(path)) => Some(CgroupSelector::Path { path: path.clone() }),
            (None, None) => None,
        }
    }

    fn required(&self) -> anyhow::Result<CgroupSelector> {
        self.selector()
            .context("give the control group with --unit NAME or --cgroup PATH")
    }
}

/// How span-file times are read.
#[derive(clap::Args, Debug, Clone)]
struct SpanArgs {
    /// Clock of the file's times: `auto` (CSV: CLOCK_MONOTONIC; Chrome
    /// trace: epoch times are moved onto CLOCK_MONOTONIC), `realtime`,
    /// `monotonic`, or a number of ns to add to every time.
    #[arg(long, default_value = "auto", value_parser = parse_clock)]
    clock: ClockOption,
    /// Chrome trace: take only events of these categories (comma-separated,
    /// e.g. `cpu_op,user_annotation`; default: every complete event, nested
    /// ones attributed by self time).
    #[arg(long, value_delimiter = ',')]
    categories: Vec<String>,
    /// Ops shown before the `rest` row (`--json` has them all).
    #[arg(long, default_value_t = 15)]
    top: usize,
}

impl SpanArgs {
    fn options(&self) -> SpanFileOptions {
        SpanFileOptions {
            clock: self.clock,
            categories: if self.categories.is_empty() {
                CategoryFilter::All
            } else {
                CategoryFilter::Only(self.categories.clone())
            },
            realtime_to_monotonic_ns: None,
        }
    }
}

fn parse_clock(text: &str) -> Result<ClockOption, String> {
    match text {
        "auto" => Ok(ClockOption::Auto),
        "realtime" => Ok(ClockOption::Realtime),
        "monotonic" => Ok(ClockOption::Monotonic),
        n => n
            .parse::<i64>()
            .map(ClockOption::OffsetNs)
            .map_err(|_| format!("`{n}` is not auto, realtime, monotonic or a number of ns")),
    }
}

fn main() -> ExitCode {
    let args = Args::parse();
    match run(args) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("energyctl: {e:#}");
            ExitCode::from(2)
        }
    }
}

fn run(args: Args) -> anyhow::Result<ExitCode> {
    let socket = args
        .socket
        .unwrap_or_else(shared::paths::client_default_socket);
    // The hint is for an absent daemon only: one that is up but slow to
    // answer gets its own message (ClientError::Timeout).
    let connect = || {
        Client::connect(&socket, "energyctl").map_err(|e| match e {
            e @ ClientError::Connect { .. } => {
                anyhow::Error::new(e).context("is energyd running? start it with `energyd --user`")
            }
            other => anyhow::Error::new(other),
        })
    };
    match args.command {
        Command::Status { json } => {
            let mut client = connect()?;
            let status = client.status()?;
            if json {
                let sources: Vec<_> = status
                    .sources
                    .iter()
                    .map(|s| {
                        let watts = status
                            .power
                            .readings
                            .iter()
                            .find(|r| r.source == s.info.id)
                            .map(|r| r.watts);
                        json!({
                            "id": s.info.id.0,
                            "name": s.info.name,
                            "domain": s.info.domain.to_string(),
                            "kind": s.info.kind.label(),
                            "provenance": s.info.provenance.label(),
                            "period_ns": s.info.period_ns,
                            "rate_hz": s.stats.rate_hz,
                            "samples": s.stats.samples,
                            "overruns": s.stats.overruns,
                            "read_errors": s.stats.read_errors,
                            "wraps": s.stats.wraps,
                            "power_w": watts,
                        })
                    })
                    .collect();
                let doc = json!({
                    "daemon_version": status.daemon_version,
                    "protocol_version": status.protocol_version,
                    "user_mode": status.user_mode,
                    "uptime_s": status.now.saturating_sub(status.started_at) as f64 / 1e9,
                    "peer": {"uid": client.peer.uid, "privileged": client.peer.privileged},
                    "policy": {"min_window_ns": client.policy.min_window_ns, "energy_quantum_j": client.policy.energy_quantum_j},
                    "power_window_ns": status.power.to.saturating_sub(status.power.from),
                    "tracked_processes": status.tracked_processes,
                    "sources": sources,
                });
                println!("{}", serde_json::to_string_pretty(&doc)?);
            } else {
                println!(
                    "energyd {} (protocol {}), {} mode, up {:.1} s; you are uid {}{}",
                    status.daemon_version,
                    status.protocol_version,
                    if status.user_mode { "user" } else { "system" },
                    status.now.saturating_sub(status.started_at) as f64 / 1e9,
                    client.peer.uid,
                    if client.peer.privileged {
                        " (privileged)"
                    } else {
                        ""
                    }
                );
                println!(
                    "{:<4} {:<28} {:<12} {:<14} {:<10} {:>10} {:>9} {:>10}",
                    "id",
                    "source",
                    "domain",
                    "kind",
                    "provenance",
                    "rate Hz",
                    "overruns",
                    "power W"
                );
                for s in &status.sources {
                    let watts = status
                        .power
                        .readings
                        .iter()
                        .find(|r| r.source == s.info.id)
                        .map_or(f64::NAN, |r| r.watts);
                    println!(
                        "{:<4} {:<28} {:<12} {:<14} {:<10} {:>10.1} {:>9} {:>10.3}",
                        s.info.id.0,
                        s.info.name,
                        s.info.domain.to_string(),
                        s.info.kind.label(),
                        s.info.provenance.label(),
                        s.stats.rate_hz,
                        s.stats.overruns,
                        watts
                    );
                }
                println!(
                    "{} tracked process(es) visible to you",
                    status.tracked_processes
                );
            }
        }
        Command::Energy {
            from,
            to,
            last,
            cgroup,
            json,
        } => {
            if let Some(selector) = cgroup.selector() {
                let mut client = connect()?;
                let sources = client.sources()?;
                let interval = from.zip(to).map(|(f, t)| (MonotonicNs(f), MonotonicNs(t)));
                let energy = cgroup_energy(&mut client, &selector, interval, last)?;
                print_cgroup_energy(&sources, &selector, &energy, json)?;
                return Ok(ExitCode::SUCCESS);
            }
            let (from, to) = match (from, to, last) {
                (Some(f), Some(t), None) => (MonotonicNs(f), MonotonicNs(t)),
                (None, None, Some(d)) => {
                    let now = MonotonicNs::now();
                    (now.saturating_sub_ns(d.as_nanos() as u64), now)
                }
                _ => bail!("give either --from and --to, or --last"),
            };
            let mut client = connect()?;
            let sources = client.sources()?;
            let report = client.energy(from, to)?;
            print_energy(&sources, &report, json)?;
        }
        Command::Track { cgroup } => {
            let t = connect()?.track_cgroup(&cgroup.required()?)?;
            print_tracking(&t);
        }
        Command::Untrack { cgroup } => {
            let t = connect()?.untrack_cgroup(&cgroup.required()?)?;
            print_tracking(&t);
        }
        Command::Watch {
            interval,
            count,
            json,
        } => {
            let mut client = connect()?;
            let sources = client.sources()?;
            let names: HashMap<SourceId, &SourceInfo> = sources.iter().map(|s| (s.id, s)).collect();
            let stream = client.subscribe(interval.as_nanos() as u64)?;
            for (i, update) in stream.enumerate() {
                let snapshot = update?;
                print_power(&names, &snapshot, json)?;
                if count.is_some_and(|c| i as u64 + 1 >= c) {
                    break;
                }
            }
        }
        Command::Run {
            json,
            spans,
            span_options,
            command,
        } => {
            let spans = spans.map(|path| (path, span_options.options()));
            return run_command(&socket, &command, spans.as_ref(), span_options.top, json);
        }
        Command::Attribute {
            spans,
            pid,
            span_options,
            json,
        } => attribute(
            &mut connect()?,
            &spans,
            pid,
            &span_options.options(),
            span_options.top,
            json,
        )?,
    }
    Ok(ExitCode::SUCCESS)
}

fn print_tracking(t: &CgroupTracking) {
    println!(
        "cgroup {} (owner uid {}): {}{}{}",
        t.path,
        t.owner_uid,
        if t.tracked {
            "tracked"
        } else {
            "no longer tracked"
        },
        if t.configured {
            ", by the daemon's configuration"
        } else {
            ""
        },
        if t.present {
            ""
        } else {
            " (absent now: the unit is stopped)"
        }
    );
}

/// A cgroup's energy: over `interval`, over the `last` duration, or since
/// tracking began. A cgroup not tracked yet, asked for `--last D`, is
/// tracked for D from now, reported, and let go again.
fn cgroup_energy(
    client: &mut Client,
    selector: &CgroupSelector,
    interval: Option<(MonotonicNs, MonotonicNs)>,
    last: Option<Duration>,
) -> anyhow::Result<CgroupEnergy> {
    let ask = |client: &mut Client| match (interval, last) {
        (Some((from, to)), _) => client.cgroup_energy(selector, Some(from), Some(to)),
        (None, Some(d)) => {
            let now = MonotonicNs::now();
            client.cgroup_energy(
                selector,
                Some(now.saturating_sub_ns(d.as_nanos() as u64)),
                Some(now),
            )
        }
        (None, None) => client.cgroup_energy(selector, None, None),
    };
    let first = ask(client);
    let not_tracked = matches!(
        &first,
        Err(ClientError::Daemon { code: shared::ErrorCode::NotFound | shared::ErrorCode::PermissionDenied, message })
            if message.contains("not tracked")
    );
    let (Some(d), true) = (last, not_tracked) else {
        return first.with_context(|| {
            if not_tracked {
                format!(
                    "energy of {selector} (track it first with `energyctl track`, or give --last)"
                )
            } else {
                format!("energy of {selector}")
            }
        });
    };
    let tracking = client
        .track_cgroup(selector)
        .with_context(|| format!("cannot track {selector}"))?;
    let start = MonotonicNs::now();
    std::thread::sleep(d);
    // Let the tracker take its sample at the end of the interval.
    std::thread::sleep(Duration::from_millis(30));
    let mut energy = client.cgroup_energy(selector, Some(start), Some(MonotonicNs::now()))?;
    if !tracking.configured {
        client.untrack_cgroup(selector)?;
    }
    energy.notes.push(format!(
        "{} was not tracked: tracked for the {:.3} s of this report",
        tracking.path,
        d.as_secs_f64()
    ));
    Ok(energy)
}

fn print_cgroup_energy(
    sources: &[SourceInfo],
    selector: &CgroupSelector,
    energy: &CgroupEnergy,
    json: bool,
) -> anyhow::Result<()> {
    let b = Breakdown {
        pid: 0,
        from: energy.from,
        to: energy.to,
        domains: energy.domains.clone(),
        kernels: Vec::new(),
        notes: energy.notes.clone(),
    };
    let mut doc = breakdown_json(sources, &b, None);
    if let Some(map) = doc.as_object_mut() {
        map.remove("pid");
        map.remove("exit_code");
        map.remove("kernels");
        map.insert("cgroup".into(), json!(energy.cgroup.path));
        map.insert("owner_uid".into(), json!(energy.cgroup.owner_uid));
        map.insert("present".into(), json!(energy.cgroup.present));
        if let CgroupSelector::Unit { name } = selector {
            map.insert("unit".into(), json!(name));
        }
    }
    if json {
        println!("{}", serde_json::to_string_pretty(&doc)?);
        return Ok(());
    }
    let title = match selector {
        CgroupSelector::Unit { name } => format!("{name} (cgroup {})", energy.cgroup.path),
        CgroupSelector::Path { .. } => format!("cgroup {}", energy.cgroup.path),
    };
    write_breakdown_text(
        &mut std::io::stdout(),
        sources,
        &b,
        None,
        0,
        &title,
        None,
        &doc,
    )
}

fn print_energy(sources: &[SourceInfo], report: &EnergyReport, json: bool) -> anyhow::Result<()> {
    let name = |id: SourceId| {
        sources
            .iter()
            .find(|s| s.id == id)
            .map_or("?".to_owned(), |s| s.name.clone())
    };
    let secs = report.to.saturating_sub(report.from) as f64 / 1e9;
    if json {
        let doc = json!({
            "from_ns": report.from.0,
            "to_ns": report.to.0,
            "duration_s": secs,
            "sources": report.sources.iter().map(|e| json!({
                "id": e.source.0,
                "name": name(e.source),
                "energy_j": e.joules,
                "uncertainty_j": e.uncertainty_j,
                "coverage": e.coverage,
                "provenance": e.provenance.label(),
                "below_update_period": e.below_update_period,
            })).collect::<Vec<_>>(),
        });
        println!("{}", serde_json::to_string_pretty(&doc)?);
    } else {
        println!(
            "interval {} .. {} ({secs:.3} s)",
            report.from.0, report.to.0
        );
        for e in &report.sources {
            println!(
                "{:<28} {:>12.4} J ± {:.4} J  coverage {:>5.1}%  {}{}",
                name(e.source),
                e.joules,
                e.uncertainty_j,
                e.coverage * 100.0,
                e.provenance.label(),
                if e.below_update_period {
                    "  (shorter than the sensor's update period: interpolated)"
                } else {
                    ""
                }
            );
        }
    }
    Ok(())
}

fn print_power(
    names: &HashMap<SourceId, &SourceInfo>,
    snapshot: &PowerSnapshot,
    json: bool,
) -> anyhow::Result<()> {
    if json {
        let doc = json!({
            "from_ns": snapshot.from.0,
            "to_ns": snapshot.to.0,
            "readings": snapshot.readings.iter().map(|r| json!({
                "id": r.source.0,
                "name": names.get(&r.source).map(|s| s.name.clone()),
                "power_w": r.watts,
                "provenance": r.provenance.label(),
            })).collect::<Vec<_>>(),
        });
        println!("{}", serde_json::to_string(&doc)?);
    } else {
        let parts: Vec<String> = snapshot
            .readings
            .iter()
            .map(|r| {
                let name = names
                    .get(&r.source)
                    .map_or("?".to_owned(), |s| s.name.clone());
                format!("{name}: {:.3} W ({})", r.watts, r.provenance.label())
            })
            .collect();
        println!("{:.3} s  {}", snapshot.to.as_secs_f64(), parts.join("  "));
    }
    Ok(())
}

/// `energyctl run`: spawn, track, wait, report; exit with the command's code.
fn run_command(
    socket: &std::path::Path,
    command: &[String],
    spans: Option<&(PathBuf, SpanFileOptions)>,
    top: usize,
    json: bool,
) -> anyhow::Result<ExitCode> {
    let mut client = Client::connect(socket, "energyctl run").with_context(|| {
        "energyctl run needs a running energyd (start one with `energyd --user`)"
    })?;
    let sources = client.sources()?;
    let start = MonotonicNs::now();
    let mut child = std::process::Command::new(&command[0])
        .args(&command[1..])
        .spawn()
        .with_context(|| format!("cannot start {:?}", command[0]))?;
    let pid = child.id();
    let tracked = client.register_process(pid, true);
    let status = child.wait().context("cannot wait for the command")?;
    let end = MonotonicNs::now();
    let code = exit_code(&status);
    if let Err(e) = tracked {
        eprintln!("energyctl: could not track process {pid}: {e}");
        return Ok(ExitCode::from(code));
    }
    // From here on the command has run: whatever happens to energyd (it
    // died, restarted, timed out), energyctl exits with the command's
    // status and says once why there is no report.
    if let Err(e) = report_run(
        &mut client,
        &sources,
        command,
        spans,
        top,
        json,
        pid,
        (start, end),
        code,
    ) {
        eprintln!("energyctl: no energy report for process {pid}: {e:#}");
    }
    Ok(ExitCode::from(code))
}

/// The report half of `energyctl run`, once the command has exited.
#[allow(clippy::too_many_arguments)]
fn report_run(
    client: &mut Client,
    sources: &[shared::SourceInfo],
    command: &[String],
    spans: Option<&(PathBuf, SpanFileOptions)>,
    top: usize,
    json: bool,
    pid: u32,
    (start, end): (MonotonicNs, MonotonicNs),
    code: u8,
) -> anyhow::Result<()> {
    // Let the tracker take its last sample of the exited process.
    std::thread::sleep(Duration::from_millis(60));
    let mut notes = Vec::new();
    let mut forest = None;
    if let Some((path, options)) = spans {
        // The command's spans may carry the pids of its children: they are
        // all charged to the tracked tree, whose root is `pid`.
        match read_span_file(path, options) {
            Ok(file) => {
                let tree = CallForest::build(&file, &CallTreeOptions::default());
                let (accepted, rejected) = submit_spans(client, &tree, Some(pid))?;
                notes.push(format!(
                    "{accepted} self-time segments of {} spans from {} ({}), {rejected} refused",
                    file.spans.len(),
                    path.display(),
                    file.clock.describe()
                ));
                forest = Some(tree);
            }
            Err(e) => notes.push(format!("spans not attributed: {e}")),
        }
    }
    let mut breakdown = client.breakdown(pid, Some(start), Some(end))?;
    breakdown.notes.extend(notes);
    let table = forest.map(|f| OpTable::build(&f, &breakdown, sources));
    let title = format!("'{}' (pid {pid})", command.join(" "));
    print_breakdown(
        sources,
        &breakdown,
        table.as_ref(),
        top,
        &title,
        Some(code),
        json,
    )?;
    Ok(())
}

/// Spans sent per request: far below the frame limit.
const SPANS_PER_BATCH: usize = 20_000;

/// Sends the self-time segments of the file's call trees (each op's own
/// time, so nested spans are not counted twice), all as `pid`'s when
/// given; returns (accepted, rejected).
fn submit_spans(
    client: &mut Client,
    forest: &CallForest,
    pid: Option<u32>,
) -> anyhow::Result<(u64, u64)> {
    let all = forest.segments_batch(pid, 0);
    let (mut accepted, mut rejected) = (0, 0);
    for chunk in all.spans.chunks(SPANS_PER_BATCH) {
        let batch = SpanBatch {
            names: all.names.clone(),
            spans: chunk.to_vec(),
        };
        let (a, r) = client.submit_spans(&batch)?;
        accepted += a;
        rejected += r;
    }
    Ok((accepted, rejected))
}

/// `energyctl attribute`: submit the file's spans for their process(es)
/// and print each process's breakdown over the spans' time range.
fn attribute(
    client: &mut Client,
    path: &std::path::Path,
    pid: Option<u32>,
    options: &SpanFileOptions,
    top: usize,
    json: bool,
) -> anyhow::Result<()> {
    let file = read_span_file(path, options)?;
    let Some((from, to)) = file.time_range() else {
        bail!("{}: no spans", path.display());
    };
    let pids: Vec<u32> = match pid {
        Some(p) => vec![p],
        None => {
            let mut pids: Vec<u32> = file.spans.iter().filter_map(|s| s.pid).collect();
            pids.sort_unstable();
            pids.dedup();
            if pids.is_empty() || file.spans.iter().any(|s| s.pid.is_none()) {
                bail!(
                    "{}: some spans carry no pid; give the tracked process with --pid",
                    path.display()
                );
            }
            pids
        }
    };
    let sources = client.sources()?;
    let forest = CallForest::build(&file, &CallTreeOptions::default());
    let (accepted, rejected) = submit_spans(client, &forest, pid)?;
    if accepted == 0 {
        bail!(
            "energyd refused all {rejected} spans: process(es) {pids:?} are not tracked for \
             you (run the program under `energyctl run`, then attribute within the history \
             window; or give its pid with --pid)"
        );
    }
    let mut docs = Vec::new();
    for p in pids {
        let mut b = client
            .breakdown(p, Some(from), Some(to))
            .with_context(|| format!("breakdown of process {p}"))?;
        b.notes.push(format!(
            "{accepted} self-time segments accepted, {rejected} refused; {}",
            file.clock.describe()
        ));
        // The ops of this process: its spans, and those without a pid.
        let own = SpanFile {
            spans: file
                .spans
                .iter()
                .filter(|s| pid.is_some() || s.pid.is_none_or(|sp| sp == p))
                .copied()
                .collect(),
            ..file.clone()
        };
        let table = OpTable::build(
            &CallForest::build(&own, &CallTreeOptions::default()),
            &b,
            &sources,
        );
        if json {
            let mut doc = breakdown_json(&sources, &b, None);
            doc["op_table"] = table.to_json();
            docs.push(doc);
        } else {
            print_breakdown(
                &sources,
                &b,
                Some(&table),
                top,
                &format!("process {p}"),
                None,
                false,
            )?;
        }
    }
    if json {
        let doc = if docs.len() == 1 {
            docs.remove(0)
        } else {
            serde_json::Value::Array(docs)
        };
        println!("{}", serde_json::to_string_pretty(&doc)?);
    }
    Ok(())
}

fn exit_code(status: &std::process::ExitStatus) -> u8 {
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (Some(c), _) => c as u8,
        (None, Some(sig)) => 128u8.saturating_add(sig as u8),
        _ => 1,
    }
}

/// Whether a domain's energy adds to the machine total without counting
/// another domain twice: cores and uncore are parts of their package, and
/// psys (the whole platform) includes everything else.
fn additive(domain: &Domain, sources: &[SourceInfo]) -> bool {
    let has_psys = sources.iter().any(|s| s.domain == Domain::Psys);
    match domain {
        Domain::Psys => true,
        Domain::Core { .. } | Domain::Uncore { .. } => false,
        Domain::Package { .. } | Domain::Dram { .. } | Domain::Cpu => !has_psys,
        Domain::Gpu { .. } | Domain::Other(_) => true,
    }
}

fn breakdown_json(sources: &[SourceInfo], b: &Breakdown, code: Option<u8>) -> serde_json::Value {
    let secs = b.to.saturating_sub(b.from) as f64 / 1e9;
    let source = |id: SourceId| sources.iter().find(|s| s.id == id);
    let counted = |id: SourceId| source(id).is_some_and(|s| additive(&s.domain, sources));
    let total_j: f64 = b
        .domains
        .iter()
        .filter(|d| counted(d.source))
        .map(|d| d.process_j)
        .sum();
    let provenance = b
        .domains
        .iter()
        .map(|d| d.provenance)
        .reduce(|a, p| a.combine(p))
        .map_or("none", |p| p.label());
    json!({
        "pid": b.pid,
        "exit_code": code,
        "from_ns": b.from.0,
        "to_ns": b.to.0,
        "duration_s": secs,
        "energy_j": total_j,
        "average_power_w": if secs > 0.0 { total_j / secs } else { 0.0 },
        "provenance": provenance,
        "domains": b.domains.iter().map(|d| json!({
            "id": d.source.0,
            "name": source(d.source).map(|s| s.name.clone()),
            "domain": source(d.source).map(|s| s.domain.to_string()),
            "in_total": counted(d.source),
            "energy_j": d.process_j,
            "dynamic_energy_j": d.process_dynamic_j,
            "static_energy_j": d.process_j - d.process_dynamic_j,
            "machine_energy_j": d.machine_j,
            "activity_share": d.activity_share,
            "unattributed_j": d.unattributed_j,
            "uncertainty_j": d.uncertainty_j,
            "provenance": d.provenance.label(),
        })).collect::<Vec<_>>(),
        "kernels": b.kernels.iter().map(|k| json!({
            "name": k.name,
            "count": k.count,
            "total_time_s": k.total_time_ns as f64 / 1e9,
            "energy_j": k.energy_j,
            "share": k.share,
            "uncertainty_j": k.uncertainty_j,
            "confidence": k.confidence,
            "method": format!("{:?}", k.method).to_lowercase(),
        })).collect::<Vec<_>>(),
        "notes": b.notes,
    })
}

/// Prints a breakdown like `perf stat`, on stderr (the command's own
/// output owns stdout), or as JSON on stdout.
fn print_breakdown(
    sources: &[SourceInfo],
    b: &Breakdown,
    table: Option<&OpTable>,
    top: usize,
    title: &str,
    code: Option<u8>,
    json: bool,
) -> anyhow::Result<()> {
    let mut doc = breakdown_json(sources, b, code);
    if json {
        if let Some(code) = code {
            doc["exit_code"] = json!(code);
        }
        if let Some(table) = table {
            doc["op_table"] = table.to_json();
        }
        println!("{}", serde_json::to_string_pretty(&doc)?);
        return Ok(());
    }
    write_breakdown_text(
        &mut std::io::stderr(),
        sources,
        b,
        table,
        top,
        title,
        code,
        &doc,
    )
}

/// The text form of a breakdown (or of a cgroup's energy) on `out`.
#[allow(clippy::too_many_arguments)]
fn write_breakdown_text(
    out: &mut dyn std::io::Write,
    sources: &[SourceInfo],
    b: &Breakdown,
    table: Option<&OpTable>,
    top: usize,
    title: &str,
    code: Option<u8>,
    doc: &serde_json::Value,
) -> anyhow::Result<()> {
    let secs = doc["duration_s"].as_f64().unwrap_or(0.0);
    let total_j = doc["energy_j"].as_f64().unwrap_or(0.0);
    let provenance = doc["provenance"].as_str().unwrap_or("none");
    let source = |id: SourceId| sources.iter().find(|s| s.id == id);
    writeln!(out)?;
    writeln!(out, " Energy of {title}:")?;
    writeln!(out)?;
    for d in &b.domains {
        let s = source(d.source);
        writeln!(out,
            "  {:>12.4} J  ± {:<9.4} {:<12} {:>5.1}% of activity  (dynamic {:.4} J, machine {:.4} J)  {}{}",
            d.process_j,
            d.uncertainty_j,
            s.map_or("?".to_owned(), |s| s.domain.to_string()),
            d.activity_share * 100.0,
            d.process_dynamic_j,
            d.machine_j,
            d.provenance.label(),
            if s.is_some_and(|s| additive(&s.domain, sources)) {
                ""
            } else {
                "  (part of another domain: not in the total)"
            }
        )?;
    }
    writeln!(out)?;
    writeln!(
        out,
        "  {:>12.4} J  total ({provenance}), {:.3} W average",
        total_j,
        if secs > 0.0 { total_j / secs } else { 0.0 }
    )?;
    match code {
        Some(code) => writeln!(out, "  {secs:>12.3} s  elapsed, exit code {code}")?,
        None => writeln!(out, "  {secs:>12.3} s  interval")?,
    }
    if let Some(table) = table {
        writeln!(out)?;
        write!(out, "{}", table.render_text(top))?;
    } else if !b.kernels.is_empty() {
        writeln!(out)?;
        writeln!(
            out,
            "  {:<32} {:>9} {:>11} {:>12} {:>11} {:>7} {:>6}  method",
            "kernel", "count", "time s", "energy J", "± J", "share", "conf"
        )?;
        for k in &b.kernels {
            let energy = k.energy_j.map_or("n/a".to_owned(), |e| format!("{e:.5}"));
            let share = k
                .share
                .map_or("n/a".to_owned(), |s| format!("{:.1}%", s * 100.0));
            writeln!(
                out,
                "  {:<32} {:>9} {:>11.4} {:>12} {:>11.5} {:>7} {:>6.2}  {}",
                k.name,
                k.count,
                k.total_time_ns as f64 / 1e9,
                energy,
                k.uncertainty_j,
                share,
                k.confidence,
                format!("{:?}", k.method).to_lowercase()
            )?;
        }
        writeln!(out)?;
        for d in b.domains.iter().filter(|d| d.unattributed_j < d.process_j) {
            writeln!(out,
                "  {:<32} {:>9} {:>11} {:>12.5}  (on {}: static share, non-kernel work, types without a figure)",
                "unattributed",
                "",
                "",
                d.unattributed_j,
                source(d.source).map_or("?".to_owned(), |s| s.name.clone())
            )?;
        }
    }
    for note in &b.notes {
        writeln!(out, "  note: {note}")?;
    }
    Ok(())
}

/// Parses `1s`, `250ms`, `10us`, `5000ns`, `2m`, `1.5s`.
fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let value: f64 = number
        .parse()
        .map_err(|_| format!("{text:?} is not a duration like 1s or 250ms"))?;
    let scale = match unit {
        "ns" => 1e-9,
        "us" | "µs" => 1e-6,
        "ms" => 1e-3,
        "s" | "" => 1.0,
        "m" | "min" => 60.0,
        "h" => 3600.0,
        _ => {
            return Err(format!(
                "unknown unit {unit:?} in {text:?} (use ns, us, ms, s, m, h)"
            ))
        }
    };
    if !(value.is_finite() && value >= 0.0) {
        return Err(format!("{text:?} is not a duration"));
    }
    Ok(Duration::from_secs_f64(value * scale))
}
