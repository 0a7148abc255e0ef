//! Start-up wiring: configuration → sources → sampling engine and process
//! tracker → daemon state → socket server, and the orderly stop.

use crate::config::Config;
use crate::listener::{self, BoundSocket};
use crate::policy::{BreakdownGate, ConnectionSlots, PrivilegeRule, RateLimiter};
use crate::service::DaemonState;
use crate::spans::{SpanLimits, SpanStore};
use anyhow::Context;
use sampling::activity::{ActivityConfig, ActivityTracker};
use sampling::discovery;
use sampling::engine::{EngineConfig, SamplingEngine};
use shared::MonotonicNs;
use std::collections::HashMap;
use std::future::Future;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// How often exited processes and old spans are forgotten.
const EXPIRY_PERIOD: Duration = Duration::from_secs(10);

/// Opens the sources and starts sampling. Problems with individual sources
/// (a zone that cannot be read, no GPU driver) are logged, not fatal.
pub fn build_state(config: Config, user_mode: bool) -> anyhow::Result<Arc<DaemonState>> {
    let found = discovery::discover(&config.sources);
    for problem in &found.problems {
        tracing::warn!(%problem, "energy source unavailable");
    }
    if let Some(path) = &found.rapl_path_in_use {
        tracing::info!(path, "RAPL read path in use");
    }
    anyhow::ensure!(
        !found.sources.is_empty(),
        "no energy source could be opened (see the warnings above)"
    );
    let gpu_provider = found.gpu_provider.clone();
    let engine = SamplingEngine::start(
        found.sources,
        EngineConfig {
            history_window_ns: config.history.window_s.saturating_mul(1_000_000_000),
            idle_period_ns: (config.sampling.idle_period_ms > 0)
                .then(|| config.sampling.idle_period_ms.saturating_mul(1_000_000)),
            ..EngineConfig::default()
        },
    );
    for info in engine.sources() {
        tracing::info!(
            id = info.id.0,
            name = %info.name,
            domain = %info.domain,
            kind = info.kind.label(),
            provenance = %info.provenance,
            period_ns = info.period_ns,
            "sampling source"
        );
    }
    let history_bytes = engine.history_capacity_bytes();
    tracing::info!(
        history_bytes,
        history_mib = history_bytes as f64 / (1024.0 * 1024.0),
        window_s = config.history.window_s,
        "energy history memory once full (ring capacity x 16 B per sample)"
    );
    // Process CPU history reaches as far back as the energy history.
    let tracker = ActivityTracker::start(ActivityConfig {
        history_window_ns: config.history.window_s.saturating_mul(1_000_000_000),
        ..config.activity.clone()
    });
    let gpu_devices: Vec<u32> = engine
        .sources()
        .iter()
        .filter_map(|s| match s.domain {
            shared::Domain::Gpu { index } => Some(index),
            _ => None,
        })
        .collect();
    let gpu = match gpu_provider {
        Some(provider) if !gpu_devices.is_empty() => {
            Some(Arc::new(crate::gpu_activity::GpuActivity::start(
                provider,
                gpu_devices,
                crate::gpu_activity::GpuActivityConfig {
                    // NVML's per-process samples come about every 1/6 s.
                    period_ns: 100_000_000,
                    history_window_ns: config.history.window_s.saturating_mul(1_000_000_000),
                    proc_root: config.activity.proc_root.clone(),
                },
            )))
        }
        _ => None,
    };
    let group_gid = match &config.server.privileged_group {
        None => None,
        Some(name) => Some(
            nix::unistd::Group::from_name(name)
                .with_context(|| format!("cannot look up privileged_group {name:?}"))?
                .with_context(|| format!("privileged_group {name:?} does not exist"))?
                .gid
                .as_raw(),
        ),
    };
    let cgroup_root = match &config.cgroups.root {
        Some(root) => sampling::cgroup::CgroupRoot::at(root),
        None => sampling::cgroup::CgroupRoot::detect(&config.activity.proc_root),
    };
    tracing::info!(root = %cgroup_root.path().display(), "cgroup v2 hierarchy");
    let configured_cgroups: Vec<shared::protocol::CgroupSelector> = config
        .exporter
        .units
        .iter()
        .map(|name| shared::protocol::CgroupSelector::Unit { name: name.clone() })
        .chain(
            config
                .exporter
                .cgroups
                .iter()
                .map(|path| shared::protocol::CgroupSelector::Path { path: path.clone() }),
        )
        .collect();
    let state = Arc::new(DaemonState {
        rate: RateLimiter::new(config.policy.requests_per_sec, config.policy.burst),
        spans: SpanStore::with_limits(SpanLimits {
            per_process: config.policy.max_spans_per_process,
            per_uid: config.policy.max_spans_per_uid,
            total: config.policy.max_spans_total,
        }),
        breakdowns: BreakdownGate::new(
            config.policy.max_concurrent_breakdowns,
            config.policy.max_concurrent_breakdowns_per_uid,
        ),
        connections: Arc::new(ConnectionSlots::new(
            config.server.max_connections,
            config.server.max_connections_per_uid,
            config.server.reserved_privileged_connections,
        )),
        batches: crate::service::BatchMemory::new(config.policy.remembered_batches_per_uid),
        next_record_key: std::sync::atomic::AtomicU64::new(1),
        tracking_demand: Mutex::new(None),
        privilege: PrivilegeRule {
            group_gid,
            proc_root: config.activity.proc_root.clone(),
        },
        registry: Mutex::new(HashMap::new()),
        engine: Arc::new(engine),
        tracker: Arc::new(tracker),
        gpu,
        started_at: MonotonicNs::now(),
        user_mode,
        config,
        cgroup_root,
        cgroups: Mutex::new(HashMap::new()),
        pending_cgroups: Mutex::new(configured_cgroups),
    });
    state.track_configured_cgroups(MonotonicNs::now(), true);
    Ok(state)
}

/// The socket to serve: systemd's if socket-activated, else `socket` (or the
/// configured / default path) bound by us.
pub fn open_socket(
    config: &Config,
    user_mode: bool,
    socket: Option<PathBuf>,
) -> anyhow::Result<BoundSocket> {
    if socket.is_none() {
        if let Some(listener) = listener::from_systemd()? {
            tracing::info!("using the socket passed by systemd");
            return Ok(BoundSocket {
                listener,
                owned_path: None,
            });
        }
    }
    let path = socket
        .or_else(|| config.server.socket.clone())
        .unwrap_or_else(|| {
            if user_mode {
                shared::paths::user_socket()
            } else {
                PathBuf::from(shared::paths::SYSTEM_SOCKET)
            }
        });
    let bound = listener::bind(&path, config.socket_mode(user_mode))?;
    tracing::info!(path = %path.display(), mode = format!("{:o}", config.socket_mode(user_mode)), "listening");
    Ok(bound)
}

/// The exporter's listening socket when `[exporter]` is enabled (bound
/// now, so a taken or refused address fails start-up before sampling).
pub fn open_exporter(config: &Config) -> anyhow::Result<Option<std::net::TcpListener>> {
    if !config.exporter.enabled {
        return Ok(None);
    }
    let listener = std::net::TcpListener::bind(config.exporter.listen).with_context(|| {
        format!(
            "cannot listen for metrics on {} (exporter.listen / --metrics-address)",
            config.exporter.listen
        )
    })?;
    listener
        .set_nonblocking(true)
        .context("cannot make the metrics socket non-blocking")?;
    let address = listener.local_addr().context("metrics socket address")?;
    tracing::info!(%address, resolution = ?config.exporter.machine_resolution, "serving metrics at /metrics");
    Ok(Some(listener))
}

/// Serves until `shutdown` completes, then stops sampling. The socket file
/// (if ours) is removed when `socket` drops, after the server has stopped.
pub async fn serve(
    socket: BoundSocket,
    state: Arc<DaemonState>,
    shutdown: impl Future<Output = ()>,
) -> anyhow::Result<()> {
    serve_with_exporter(socket, None, state, shutdown).await
}

/// [`serve`], plus the Prometheus exporter on `metrics` (from
/// [`open_exporter`]) until the same shutdown.
pub async fn serve_with_exporter(
    socket: BoundSocket,
    metrics: Option<std::net::TcpListener>,
    state: Arc<DaemonState>,
    shutdown: impl Future<Output = ()>,
) -> anyhow::Result<()> {
    let (stop_metrics, metrics_stopped) = tokio::sync::watch::channel(false);
    let exporter = match metrics {
        Some(listener) => {
            let listener = tokio::net::TcpListener::from_std(listener)
                .context("cannot register the metrics socket with the runtime")?;
            let exporter = Arc::new(crate::exporter::Exporter::new(state.clone()));
            let mut stopped = metrics_stopped;
            Some(tokio::spawn(crate::exporter::serve(
                listener,
                exporter,
                async move {
                    let _ = stopped.changed().await;
                },
            )))
        }
        None => None,
    };
    socket
        .listener
        .set_nonblocking(true)
        .context("cannot make the socket non-blocking")?;
    let listener = tokio::net::UnixListener::from_std(socket.listener.try_clone()?)
        .context("cannot register the socket with the runtime")?;
    let expiry = {
        let state = state.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(EXPIRY_PERIOD);
            loop {
                tick.tick().await;
                state.expire(MonotonicNs::now());
            }
        })
    };
    crate::server::run(listener, state.clone(), shutdown).await;
    let _ = stop_metrics.send(true);
    if let Some(exporter) = exporter {
        let _ = exporter.await;
    }
    expiry.abort();
    state.tracker.shutdown();
    if let Some(gpu) = &state.gpu {
        gpu.shutdown();
    }
    state.engine.shutdown();
    log_sampling_summary(&state);
    drop(socket);
    Ok(())
}

/// Logs, per source, how regularly it was sampled over the daemon's life
/// (or the history window, if shorter): sample-interval error percentiles,
/// overruns and read errors. The figures benchmarks and operators read.
fn log_sampling_summary(state: &DaemonState) {
    let uptime_ns = MonotonicNs::now().saturating_sub(state.started_at);
    for info in state.engine.sources() {
        let (Some(stats), Some(timing)) = (
            state.engine.stats(info.id),
            state.engine.timing(info.id, uptime_ns),
        ) else {
            continue;
        };
        tracing::info!(
            id = info.id.0,
            name = %info.name,
            period_ns = info.period_ns,
            samples = stats.samples,
            intervals = timing.intervals,
            mean_interval_ns = timing.mean_interval_ns.round() as u64,
            error_p50_ns = timing.error_p50_ns,
            error_p99_ns = timing.error_p99_ns,
            error_max_ns = timing.error_max_ns,
            overruns = stats.overruns,
            read_errors = stats.read_errors,
            wraps = stats.wraps,
            "sampling summary"
        );
    }
}

/// Installs SIGTERM and SIGINT handlers now (inside the runtime) and
/// returns a future that completes on the first of them.
pub fn termination_signal() -> anyhow::Result<impl Future<Output = ()>> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).context("cannot install SIGTERM handler")?;
    let mut int = signal(SignalKind::interrupt()).context("cannot install SIGINT handler")?;
    Ok(async move {
        tokio::select! {
            _ = term.recv() => tracing::info!("SIGTERM: shutting down"),
            _ = int.recv() => tracing::info!("SIGINT: shutting down"),
        }
    })
}
