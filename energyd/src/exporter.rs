//! The Prometheus/OpenMetrics exporter: `GET /metrics` over HTTP on a
//! local address, off unless `[exporter] enabled` (or `energyd
//! --metrics-address`).
//!
//! What it publishes (all names `energyd_…`; see README, "Prometheus"):
//! - per source: `source_energy_joules_total` (labels `source`, `domain`,
//!   `kind`, `provenance`, `reading`), a counter from the source's first
//!   sample, which keeps counting when the history ring overwrites old
//!   samples; sampler health: `source_samples_total`,
//!   `source_overruns_total`, `source_read_errors_total`,
//!   `source_glitches_total`, `source_wraps_total`,
//!   `source_sampling_rate_hertz`, `source_period_seconds`,
//!   `source_coverage_ratio` (share of the last minute covered by samples),
//!   `source_stuck`, `source_failed`;
//! - per configured cgroup (`exporter.units`, `exporter.cgroups`):
//!   `cgroup_energy_joules_total` per domain, `cgroup_cpu_seconds_total`,
//!   `cgroup_present`;
//! - per tracked process of a uid listed in `exporter.process_uids`:
//!   `process_energy_joules_total` per domain, `process_cpu_seconds_total`.
//!
//! Policy (ARCHITECTURE.md, "Security policy"): whoever reaches the port
//! is nobody in particular, so with `machine_resolution = "coarse"` (the
//! default) every energy counter advances only at the end of whole
//! `policy.min_window_ms` windows and is rounded to
//! `policy.energy_quantum_j`, as an unprivileged client's readings are;
//! per-process series exist only for the uids the operator lists. The
//! `provenance` label is the source's own; a degraded stretch (a glitch,
//! a stuck counter) shows in `source_glitches_total` / `source_stuck`,
//! not as a new series.
//!
//! Cgroup and process energy is attributed exactly as `Breakdown` and
//! `CgroupEnergy` answers are (`breakdown::compute_subject`), step by step:
//! each scrape adds the attribution of the interval since the previous
//! one, up to where both the CPU-time and the energy histories reach.
//!
//! Isolation: scrapes never touch the sampling threads (they read the
//! histories under the same short locks as any query, on the blocking
//! pool), and do not raise the sampling rate: a dashboard scraping every
//! 15 s must not keep a 1 kHz sampler running for ever. Connections are
//! capped (`max_connections`; beyond, closed at once) and closed
//! `connection_timeout_ms` after they open; requests are answered 404
//! (unknown path) or 405 (method), never by a panic.

use crate::breakdown::{self, Subject};
use crate::config::MachineResolution;
use crate::policy::{Caller, Coarsening};
use crate::service::DaemonState;
use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::{HeaderValue, ALLOW, CONTENT_TYPE};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::{Registry, Unit};
use shared::source::ReadingKind;
use shared::{MonotonicNs, SourceId, SourceInfo};
use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// The path Prometheus scrapes.
pub const METRICS_PATH: &str = "/metrics";

/// OpenMetrics text, which Prometheus negotiates and prometheus-client
/// writes.
pub const CONTENT_TYPE_OPENMETRICS: &str =
    "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// `source_coverage_ratio` is over this much of the recent past.
const COVERAGE_WINDOW_NS: u64 = 60_000_000_000;

/// A tracked subject's energy is advanced by at least this much at a time
/// (the activity tracker's default period: a shorter step has no new CPU
/// sample to split by).
const MIN_STEP_NS: u64 = 10_000_000;

/// Headers must arrive within this long of a connection's request start.
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);

/// Who the exporter computes attribution as: the daemon itself. What the
/// port's readers may see is decided afterwards, by the coarsening.
const DAEMON: Caller = Caller {
    pid: 0,
    uid: 0,
    gid: 0,
    privileged: true,
};

/// A cgroup's or a process's energy so far, advanced at each scrape.
#[derive(Debug, Clone)]
struct Accumulated {
    /// Attributed up to here.
    to: MonotonicNs,
    /// Energy per source.
    joules: BTreeMap<SourceId, f64>,
    /// CPU time.
    cpu_ns: u64,
}

/// Exported subject: a configured cgroup or a tracked process.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
enum SubjectKey {
    Cgroup(u64),
    Process(u64),
}

/// The exporter: the daemon's state and the accumulated subject energies.
pub struct Exporter {
    state: Arc<DaemonState>,
    accumulated: Mutex<HashMap<SubjectKey, Accumulated>>,
}

/// A subject to export: its key, what to attribute, since when, labels.
type ExportedSubject = (
    SubjectKey,
    Subject,
    MonotonicNs,
    Vec<(&'static str, String)>,
);

/// A per-source counter: name, help, value.
type SourceCounter = (&'static str, &'static str, fn(&SourceFigures) -> u64);

/// A per-source gauge: name, help, unit, value.
type SourceGauge = (
    &'static str,
    &'static str,
    Option<Unit>,
    fn(&SourceFigures) -> f64,
);

/// One source's figures in a scrape.
#[derive(Debug, Clone)]
struct SourceFigures {
    info: SourceInfo,
    energy_j: f64,
    stats: shared::source::SourceStats,
    coverage: f64,
    failed: bool,
}

/// One exported subject's figures in a scrape.
#[derive(Debug, Clone)]
struct SubjectFigures {
    /// Labels naming it (`cgroup`, `unit` or `pid`, `uid`, `comm`).
    labels: Vec<(&'static str, String)>,
    /// Energy per source present in the scrape.
    joules: BTreeMap<SourceId, f64>,
    cpu_s: f64,
    present: bool,
}

/// Everything one scrape publishes, computed before encoding.
#[derive(Debug, Clone)]
struct Snapshot {
    coarse: bool,
    sources: Vec<SourceFigures>,
    cgroups: Vec<SubjectFigures>,
    processes: Vec<SubjectFigures>,
}

fn reading_label(r: ReadingKind) -> &'static str {
    match r {
        ReadingKind::CumulativeEnergy => "cumulative_energy",
        ReadingKind::InstantPower => "instant_power",
        ReadingKind::AveragedPower { .. } => "averaged_power",
    }
}

impl Exporter {
    /// An exporter of `state`.
    pub fn new(state: Arc<DaemonState>) -> Exporter {
        Exporter {
            state,
            accumulated: Mutex::new(HashMap::new()),
        }
    }

    fn coarsening(&self) -> Coarsening {
        match self.state.config.exporter.machine_resolution {
            MachineResolution::Full => Coarsening {
                window_ns: 0,
                quantum_j: 0.0,
            },
            MachineResolution::Coarse => Coarsening {
                window_ns: self
                    .state
                    .config
                    .policy
                    .min_window_ms
                    .saturating_mul(1_000_000),
                quantum_j: self.state.config.policy.energy_quantum_j,
            },
        }
    }

    /// The metrics text at `now` (OpenMetrics, ending in `# EOF`).
    pub fn render(&self, now: MonotonicNs) -> String {
        let snapshot = self.snapshot(now);
        let mut registry = Registry::with_prefix("energyd");
        registry.register_collector(Box::new(snapshot));
        let mut text = String::new();
        // Writing into a String cannot fail; an error would be a bug of the
        // collector, answered as an empty body by the caller.
        if prometheus_client::encoding::text::encode(&mut text, &registry).is_err() {
            tracing::error!("metrics encoding failed");
            text.clear();
        }
        text
    }

    fn snapshot(&self, now: MonotonicNs) -> Snapshot {
        let coarse = self.coarsening();
        // Coarse: each counter is read at the last grid point its history
        // has reached (and `now` has passed), so a published value depends
        // on that grid point alone: it cannot move within a window when a
        // sample arrives late. Full: no grid, read at the newest sample.
        let engine = &self.state.engine;
        let infos = engine.sources();
        let sources = infos
            .iter()
            .map(|info| {
                let end = coarse.floor(engine.latest(info.id).map_or(now, |(t, _)| now.min(t)));
                let energy_j =
                    coarse.energy(engine.energy_since_start(info.id, end).unwrap_or(0.0));
                let coverage = engine
                    .energy(
                        info.id,
                        now.saturating_sub_ns(COVERAGE_WINDOW_NS)
                            .max(self.state.started_at),
                        now,
                    )
                    .map_or(0.0, |e| e.coverage);
                SourceFigures {
                    info: info.clone(),
                    energy_j,
                    stats: engine.stats(info.id).unwrap_or_default(),
                    coverage,
                    failed: engine.failure(info.id).is_some(),
                }
            })
            .collect();
        // Attribution can go as far as every source's history and the
        // subject's CPU history reach.
        // (A source that stopped for good is left out: it would hold every
        // subject back for ever.)
        let energy_reach = infos
            .iter()
            .filter(|i| engine.failure(i.id).is_none())
            .filter_map(|i| engine.latest(i.id).map(|(t, _)| t))
            .min()
            .unwrap_or(MonotonicNs(0));
        let mut subjects: Vec<ExportedSubject> = Vec::new();
        for t in self
            .state
            .cgroups
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .filter(|t| t.configured)
        {
            subjects.push((
                SubjectKey::Cgroup(t.key),
                Subject {
                    key: t.key,
                    pid: None,
                    include_children: true,
                },
                t.since,
                vec![
                    ("cgroup", t.path.clone()),
                    ("unit", t.unit.clone().unwrap_or_default()),
                ],
            ));
        }
        let uids = &self.state.config.exporter.process_uids;
        if !uids.is_empty() {
            let registry = self
                .state
                .registry
                .lock()
                .unwrap_or_else(|p| p.into_inner());
            for t in registry.values().flatten() {
                if !uids.contains(&t.owner_uid) {
                    continue;
                }
                let comm = std::fs::read_to_string(
                    self.state
                        .config
                        .activity
                        .proc_root
                        .join(t.pid.to_string())
                        .join("comm"),
                )
                .map(|c| c.trim_end().to_owned())
                .unwrap_or_default();
                subjects.push((
                    SubjectKey::Process(t.key),
                    Subject::from(t),
                    t.since,
                    vec![
                        ("pid", t.pid.to_string()),
                        ("uid", t.owner_uid.to_string()),
                        ("comm", comm),
                    ],
                ));
            }
        }
        let mut accumulated = self.accumulated.lock().unwrap_or_else(|p| p.into_inner());
        accumulated.retain(|k, _| subjects.iter().any(|(s, ..)| s == k));
        let mut cgroups = Vec::new();
        let mut processes = Vec::new();
        for (key, subject, since, labels) in subjects {
            let acc = accumulated
                .entry(key.clone())
                .or_insert_with(|| Accumulated {
                    to: since,
                    joules: BTreeMap::new(),
                    cpu_ns: 0,
                });
            let reach = self
                .state
                .tracker
                .last_sample(subject.key)
                .map_or(MonotonicNs(0), |(t, _)| t)
                .min(energy_reach)
                .min(now);
            // Coarse: attributed up to a grid point only.
            let reach = coarse.floor(reach);
            self.advance(acc, &subject, reach);
            let figures = SubjectFigures {
                labels,
                joules: acc
                    .joules
                    .iter()
                    .map(|(&id, &j)| (id, coarse.energy(j)))
                    .collect(),
                cpu_s: acc.cpu_ns as f64 * 1e-9,
                present: !self.state.tracker.exited(subject.key),
            };
            match key {
                SubjectKey::Cgroup(_) => cgroups.push(figures),
                SubjectKey::Process(_) => processes.push(figures),
            }
        }
        Snapshot {
            coarse: coarse.window_ns > 0,
            sources,
            cgroups,
            processes,
        }
    }

    /// Adds the attribution of `(acc.to, to]` to `acc`.
    fn advance(&self, acc: &mut Accumulated, subject: &Subject, to: MonotonicNs) {
        if to.saturating_sub(acc.to) < MIN_STEP_NS {
            return;
        }
        if self
            .state
            .tracker
            .cpu_samples(subject.key, acc.to, to)
            .len()
            < 2
        {
            return; // no CPU history to split by yet
        }
        let b = breakdown::compute_subject(&self.state, &DAEMON, subject, acc.to, to);
        for d in &b.domains {
            *acc.joules.entry(d.source).or_default() += d.process_j.max(0.0);
        }
        if let Some(cpu) = self.state.tracker.cpu_between(subject.key, acc.to, to) {
            acc.cpu_ns = acc.cpu_ns.saturating_add(cpu.process_cpu_ns);
        }
        acc.to = to;
    }

    /// Answers one HTTP request.
    async fn respond(self: Arc<Self>, req: Request<Incoming>) -> Response<Full<Bytes>> {
        let plain = |status: StatusCode, text: &'static str| {
            let mut r = Response::new(Full::new(Bytes::from_static(text.as_bytes())));
            *r.status_mut() = status;
            r.headers_mut().insert(
                CONTENT_TYPE,
                HeaderValue::from_static("text/plain; charset=utf-8"),
            );
            r
        };
        match (req.method(), req.uri().path()) {
            (&Method::GET | &Method::HEAD, METRICS_PATH) => {
                let exporter = self.clone();
                match tokio::task::spawn_blocking(move || exporter.render(MonotonicNs::now())).await
                {
                    Ok(text) => {
                        let mut r = Response::new(Full::new(Bytes::from(text)));
                        r.headers_mut().insert(
                            CONTENT_TYPE,
                            HeaderValue::from_static(CONTENT_TYPE_OPENMETRICS),
                        );
                        r
                    }
                    Err(e) => {
                        tracing::error!(error = %e, "metrics rendering failed");
                        plain(
                            StatusCode::INTERNAL_SERVER_ERROR,
                            "metrics rendering failed\n",
                        )
                    }
                }
            }
            (&Method::GET | &Method::HEAD, "/") => {
                plain(StatusCode::OK, "energyd exporter: metrics at /metrics\n")
            }
            (_, METRICS_PATH) => {
                let mut r = plain(StatusCode::METHOD_NOT_ALLOWED, "use GET\n");
                r.headers_mut()
                    .insert(ALLOW, HeaderValue::from_static("GET, HEAD"));
                r
            }
            _ => plain(
                StatusCode::NOT_FOUND,
                "not found: metrics are at /metrics\n",
            ),
        }
    }
}

impl Collector for Snapshot {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let source_labels = |s: &SourceFigures| -> Vec<(&'static str, String)> {
            vec![
                ("source", s.info.name.clone()),
                ("domain", s.info.domain.to_string()),
            ]
        };
        // Energy counters.
        {
            let mut family = encoder.encode_descriptor(
                "source_energy",
                "Energy of the source since energyd started (coarse: at the last whole policy \
                 window, rounded to the policy quantum)",
                Some(&Unit::Joules),
                MetricType::Counter,
            )?;
            for s in &self.sources {
                let mut labels = source_labels(s);
                labels.push(("kind", s.info.kind.label().to_owned()));
                labels.push(("provenance", s.info.provenance.label().to_owned()));
                labels.push(("reading", reading_label(s.info.reading).to_owned()));
                ConstCounter::new(s.energy_j).encode(family.encode_family(&labels)?)?;
            }
        }
        let counters: [SourceCounter; 5] = [
            ("source_samples", "Samples taken", |s| s.stats.samples),
            (
                "source_overruns",
                "Sampling deadlines missed by more than a period",
                |s| s.stats.overruns,
            ),
            ("source_read_errors", "Reads that failed", |s| {
                s.stats.read_errors
            }),
            (
                "source_glitches",
                "Readings re-based as counter glitches (answers over them are estimates)",
                |s| s.stats.glitches,
            ),
            ("source_wraps", "Counter wraparounds corrected", |s| {
                s.stats.wraps
            }),
        ];
        for (name, help, value) in counters {
            let mut family = encoder.encode_descriptor(name, help, None, MetricType::Counter)?;
            for s in &self.sources {
                ConstCounter::new(value(s)).encode(family.encode_family(&source_labels(s))?)?;
            }
        }
        let gauges: [SourceGauge; 5] = [
            (
                "source_sampling_rate",
                "Achieved sampling rate over the last second",
                Some(Unit::Other("hertz".to_owned())),
                |s| s.stats.rate_hz,
            ),
            (
                "source_period",
                "Configured sampling period at full rate",
                Some(Unit::Seconds),
                |s| s.info.period_ns as f64 * 1e-9,
            ),
            (
                "source_coverage",
                "Share of the last minute (or of the uptime) covered by samples",
                Some(Unit::Other("ratio".to_owned())),
                |s| s.coverage,
            ),
            (
                "source_stuck",
                "1 when the counter has not moved for over 2 s (figures are estimates)",
                None,
                |s| f64::from(u8::from(s.stats.stuck)),
            ),
            (
                "source_failed",
                "1 when the source stopped sampling after a fatal read error",
                None,
                |s| f64::from(u8::from(s.failed)),
            ),
        ];
        for (name, help, unit, value) in gauges {
            let mut family =
                encoder.encode_descriptor(name, help, unit.as_ref(), MetricType::Gauge)?;
            for s in &self.sources {
                ConstGauge::new(value(s)).encode(family.encode_family(&source_labels(s))?)?;
            }
        }
        for (kind, list, what) in [
            ("cgroup", &self.cgroups, "configured cgroup (unit)"),
            (
                "process",
                &self.processes,
                "tracked process of an exported uid",
            ),
        ] {
            if list.is_empty() {
                continue;
            }
            let (energy_name, cpu_name, present_name) = (
                format!("{kind}_energy"),
                format!("{kind}_cpu"),
                format!("{kind}_present"),
            );
            let (energy_help, cpu_help, present_help) = (
                format!(
                    "Energy attributed to the {what} per domain since it was tracked \
                     (share of dynamic energy by CPU time plus share of static power)"
                ),
                format!("CPU time of the {what} since it was tracked"),
                format!("1 while the {what} exists"),
            );
            {
                let mut family = encoder.encode_descriptor(
                    &energy_name,
                    &energy_help,
                    Some(&Unit::Joules),
                    MetricType::Counter,
                )?;
                for subject in list.iter() {
                    for s in &self.sources {
                        let Some(&j) = subject.joules.get(&s.info.id) else {
                            continue;
                        };
                        let mut labels = subject.labels.clone();
                        labels.extend(source_labels(s));
                        labels.push(("provenance", s.info.provenance.label().to_owned()));
                        ConstCounter::new(j).encode(family.encode_family(&labels)?)?;
                    }
                }
            }
            {
                let mut family = encoder.encode_descriptor(
                    &cpu_name,
                    &cpu_help,
                    Some(&Unit::Seconds),
                    MetricType::Counter,
                )?;
                for subject in list.iter() {
                    ConstCounter::new(subject.cpu_s)
                        .encode(family.encode_family(&subject.labels)?)?;
                }
            }
            {
                let mut family = encoder.encode_descriptor(
                    &present_name,
                    &present_help,
                    None,
                    MetricType::Gauge,
                )?;
                for subject in list.iter() {
                    ConstGauge::new(f64::from(u8::from(subject.present)))
                        .encode(family.encode_family(&subject.labels)?)?;
                }
            }
        }
        let gauge = ConstGauge::new(i64::from(self.coarse));
        gauge.encode(encoder.encode_descriptor(
            "exporter_coarse",
            "1 when machine-wide readings are coarsened as for unprivileged clients",
            None,
            gauge.metric_type(),
        )?)?;
        Ok(())
    }
}

/// Serves `listener` until `shutdown` completes.
pub async fn serve(
    listener: tokio::net::TcpListener,
    exporter: Arc<Exporter>,
    shutdown: impl Future<Output = ()>,
) {
    let config = &exporter.state.config.exporter;
    // Connection slots: a scraper beyond them is closed at once.
    let slots = Arc::new(tokio::sync::Semaphore::new(config.max_connections));
    let connection_timeout = Duration::from_millis(config.connection_timeout_ms);
    let mut tasks = tokio::task::JoinSet::new();
    tokio::pin!(shutdown);
    loop {
        let accepted = tokio::select! {
            _ = &mut shutdown => break,
            accepted = listener.accept() => accepted,
        };
        match accepted {
            Ok((stream, peer)) => {
                let Ok(permit) = slots.clone().try_acquire_owned() else {
                    tracing::debug!(%peer, "metrics connection refused: all slots taken");
                    continue;
                };
                let exporter = exporter.clone();
                tasks.spawn(async move {
                    let service = hyper::service::service_fn(move |req| {
                        let exporter = exporter.clone();
                        async move { Ok::<_, std::convert::Infallible>(exporter.respond(req).await) }
                    });
                    let mut builder = hyper::server::conn::http1::Builder::new();
                    builder
                        .timer(TokioTimer::new())
                        .header_read_timeout(HEADER_READ_TIMEOUT);
                    let connection = builder.serve_connection(TokioIo::new(stream), service);
                    if let Ok(Err(e)) = tokio::time::timeout(connection_timeout, connection).await {
                        tracing::debug!(%peer, error = %e, "metrics connection ended");
                    }
                    drop(permit);
                });
            }
            Err(e) => {
                tracing::warn!(error = %e, "metrics accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
        while tasks.try_join_next().is_some() {}
    }
    tasks.abort_all();
    while tasks.join_next().await.is_some() {}
}
