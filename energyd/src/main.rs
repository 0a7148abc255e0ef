//! `energyd`: the energy measurement daemon. Argument parsing and wiring
//! only; the logic lives in the library.

use anyhow::Context;
use clap::Parser;
use energyd::config::Config;
use energyd::daemon;
use std::path::PathBuf;

/// Samples hardware energy (RAPL, NVML, perf, procfs; an estimate where no
/// hardware counter is readable) and serves it to local clients.
#[derive(Parser, Debug)]
#[command(version, about)]
struct Args {
    /// Run as an unprivileged user service (socket under $XDG_RUNTIME_DIR).
    #[arg(long)]
    user: bool,
    /// Socket path (overrides the config file and the default).
    #[arg(long)]
    socket: Option<PathBuf>,
    /// Configuration file (TOML). Without it, documented defaults apply.
    #[arg(long)]
    config: Option<PathBuf>,
    /// Root of the powercap tree (default /sys/class/powercap); overrides
    /// `[sources] powercap_root` of the config file. For fixtures and
    /// containers that mount the host's tree elsewhere.
    #[arg(long)]
    powercap_root: Option<PathBuf>,
    /// Root of the msr devices (default /dev/cpu); overrides
    /// `[sources] msr_root` of the config file.
    #[arg(long)]
    msr_root: Option<PathBuf>,
    /// Serve Prometheus/OpenMetrics metrics at http://ADDR/metrics (turns
    /// `[exporter]` on; e.g. `127.0.0.1:9477`). A non-loopback address
    /// needs `exporter.allow_non_loopback = true` in the config file.
    #[arg(long, value_name = "ADDR")]
    metrics_address: Option<std::net::SocketAddr>,
    /// Log filter (tracing EnvFilter syntax); RUST_LOG also works.
    #[arg(long, default_value = "info")]
    log: String,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(&args.log));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();

    let mut config = match &args.config {
        Some(path) => Config::load(path)?,
        None => Config::default(),
    };
    config.override_rapl_roots(args.powercap_root, args.msr_root);
    config.enable_exporter(args.metrics_address)?;
    // Bind first: a bad socket path or metrics address is refused before
    // any sampling starts.
    let socket = daemon::open_socket(&config, args.user, args.socket)?;
    let metrics = daemon::open_exporter(&config)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(async {
        // Handlers are installed before serving, so an early SIGTERM is not lost.
        let shutdown = daemon::termination_signal()?;
        let state = daemon::build_state(config, args.user)?;
        daemon::serve_with_exporter(socket, metrics, state, shutdown).await
    })?;
    tracing::info!("stopped");
    Ok(())
}
