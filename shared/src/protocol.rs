//! Requests and responses exchanged over the energyd socket.
//!
//! A connection starts with [`Request::Hello`]; the daemon answers
//! [`Response::Hello`] or, on a version mismatch, [`Response::Error`] with
//! [`ErrorCode::VersionMismatch`] and closes. After that, each request gets
//! exactly one response, in order, except [`Request::Subscribe`], after which
//! the daemon sends [`Response::PowerUpdate`] frames until the client closes.
//!
//! Compatibility rule: `Hello` is variant 0 of both enums and its first field
//! is the protocol version, so any two versions can at least tell each other
//! that they differ. New variants are appended; changing an existing variant
//! bumps [`PROTOCOL_VERSION`]. The cgroup requests ([`Request::TrackCgroup`],
//! [`Request::UntrackCgroup`], [`Request::CgroupEnergy`]) were appended so:
//! a daemon older than them answers `MalformedFrame`.

use crate::source::{Provenance, SourceId, SourceInfo, SourceStats};
use crate::time::MonotonicNs;
use serde::{Deserialize, Serialize};
use std::fmt;

/// Version of this protocol. Bumped on any incompatible change.
pub const PROTOCOL_VERSION: u32 = 2;

/// A message from a client to the daemon.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Request {
    /// First message of every connection.
    Hello {
        /// The client's [`PROTOCOL_VERSION`].
        protocol_version: u32,
        /// Free-form client name for logs (truncated by the daemon).
        client_name: String,
    },
    /// Daemon version, sources with statistics, and current power.
    Status,
    /// The sources and what they measure.
    ListSources,
    /// Current power per source (averaged over the caller's minimum window).
    CurrentPower,
    /// Machine-wide energy per source over an interval.
    Energy {
        /// Start of the interval.
        from: MonotonicNs,
        /// End of the interval.
        to: MonotonicNs,
    },
    /// Start tracking a process (and, if asked, its descendants).
    RegisterProcess {
        /// Process id, in the daemon's pid namespace.
        pid: u32,
        /// Track children too.
        include_children: bool,
    },
    /// Stop tracking a process.
    UnregisterProcess {
        /// Process id.
        pid: u32,
    },
    /// A batch of kernel spans recorded by the client.
    SubmitSpans(SpanBatch),
    /// Energy of a tracked process, per domain and per kernel type.
    Breakdown {
        /// Process id.
        pid: u32,
        /// Start of the interval (default: when tracking began).
        from: Option<MonotonicNs>,
        /// End of the interval (default: now).
        to: Option<MonotonicNs>,
    },
    /// Stream power readings every `interval_ns` (clamped to the caller's
    /// minimum window) until the connection closes.
    Subscribe {
        /// Requested interval between updates.
        interval_ns: u64,
    },
    /// [`Request::SubmitSpans`], idempotent: the daemon remembers the
    /// answer to each `batch_id` of the caller's uid (the most recent
    /// `policy.remembered_batches_per_uid`), and answers a batch it has
    /// already stored with that answer instead of storing it again. A
    /// client whose answer was lost (timeout, daemon restart, broken
    /// connection) can therefore resend the batch without duplicating it.
    /// Ids are the client's: unique per uid (e.g. pid, start time and a
    /// counter; see `client::SpanUploader`).
    SubmitSpansOnce {
        /// Unique per batch and uid.
        batch_id: u64,
        /// The spans.
        batch: SpanBatch,
    },
    /// Start tracking a control group (a systemd unit's, a container's)
    /// like a process tree: its CPU time from the cgroup's `cpu.stat`. Who
    /// may: privileged peers any cgroup, others only cgroups whose
    /// directory they own (systemd delegates `user@UID.service` to UID).
    TrackCgroup {
        /// Which cgroup.
        cgroup: CgroupSelector,
    },
    /// Stop tracking a control group (cgroups the daemon's configuration
    /// tracks stay tracked).
    UntrackCgroup {
        /// Which cgroup.
        cgroup: CgroupSelector,
    },
    /// Energy of a tracked control group per domain, attributed like a
    /// process's ([`Request::Breakdown`] without kernels).
    CgroupEnergy {
        /// Which cgroup.
        cgroup: CgroupSelector,
        /// Start of the interval (default: when tracking began).
        from: Option<MonotonicNs>,
        /// End of the interval (default: now).
        to: Option<MonotonicNs>,
    },
}

/// A message from the daemon to a client.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Response {
    /// Answer to [`Request::Hello`].
    Hello {
        /// The daemon's [`PROTOCOL_VERSION`].
        protocol_version: u32,
        /// The daemon's crate version.
        daemon_version: String,
        /// The caller as the daemon sees it.
        peer: PeerInfo,
        /// The limits that apply to this caller.
        policy: ClientPolicy,
    },
    /// Answer to [`Request::Status`].
    Status(DaemonStatus),
    /// Answer to [`Request::ListSources`].
    Sources(Vec<SourceInfo>),
    /// Answer to [`Request::CurrentPower`], and each update of a subscription.
    Power(PowerSnapshot),
    /// Answer to [`Request::Energy`].
    Energy(EnergyReport),
    /// Answer to [`Request::RegisterProcess`] / [`Request::UnregisterProcess`].
    Registered {
        /// The process.
        pid: u32,
        /// Whether it is now tracked.
        tracked: bool,
    },
    /// Answer to [`Request::SubmitSpans`].
    SpansAccepted {
        /// Spans stored.
        accepted: u32,
        /// Spans refused (malformed, ending after the daemon's clock at
        /// submission, or of a process the caller may not report).
        rejected: u32,
    },
    /// Answer to [`Request::Breakdown`].
    Breakdown(Breakdown),
    /// One update of a subscription.
    PowerUpdate(PowerSnapshot),
    /// The request failed.
    Error {
        /// What kind of failure, for programs.
        code: ErrorCode,
        /// What went wrong, for people.
        message: String,
    },
    /// Answer to [`Request::TrackCgroup`] and [`Request::UntrackCgroup`].
    CgroupTracking(CgroupTracking),
    /// Answer to [`Request::CgroupEnergy`].
    CgroupEnergy(CgroupEnergy),
}

/// A control group, as a client names it. The daemon resolves it under
/// its cgroup v2 mount (`cgroups.root` of its configuration).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum CgroupSelector {
    /// A systemd unit (`nginx.service`, `user@1000.service`,
    /// `machine.slice`, `session-3.scope`): the cgroup directory of that
    /// name in the hierarchy.
    Unit {
        /// The unit name, suffix included.
        name: String,
    },
    /// A cgroup path relative to the cgroup v2 root, as
    /// `/proc/PID/cgroup` prints it (`/system.slice/nginx.service`).
    Path {
        /// The path, starting with `/`.
        path: String,
    },
}

impl fmt::Display for CgroupSelector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CgroupSelector::Unit { name } => write!(f, "unit {name}"),
            CgroupSelector::Path { path } => write!(f, "cgroup {path}"),
        }
    }
}

/// A tracked (or no longer tracked) control group.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CgroupTracking {
    /// Its path relative to the cgroup v2 root (`/system.slice/x.service`).
    pub path: String,
    /// The uid that owns its directory.
    pub owner_uid: u32,
    /// Whether it is tracked now.
    pub tracked: bool,
    /// When tracking began.
    pub since: MonotonicNs,
    /// Tracked by the daemon's configuration (clients cannot untrack it).
    pub configured: bool,
    /// The cgroup directory exists now (a stopped unit's does not; its
    /// history stays, and tracking resumes when it comes back).
    pub present: bool,
}

/// Energy of a control group over an interval, per domain.
///
/// Invariant: as in [`Breakdown`], each domain's `process_j` is the
/// cgroup's dynamic energy by CPU time plus its share of static power.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CgroupEnergy {
    /// The cgroup.
    pub cgroup: CgroupTracking,
    /// Start of the interval.
    pub from: MonotonicNs,
    /// End of the interval.
    pub to: MonotonicNs,
    /// Per domain (source): machine energy and the cgroup's share.
    pub domains: Vec<DomainShare>,
    /// Notes on how figures were obtained.
    pub notes: Vec<String>,
}

/// Why a request failed. Named by what the caller should do about it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum ErrorCode {
    /// Client and daemon speak different protocol versions: upgrade one.
    VersionMismatch,
    /// The first message was not `Hello`.
    HandshakeRequired,
    /// The frame could not be decoded: a client bug.
    MalformedFrame,
    /// The frame is larger than [`crate::frame::MAX_FRAME_LEN`].
    FrameTooLarge,
    /// The caller may not see this (another uid's process).
    PermissionDenied,
    /// Too many requests: wait and retry.
    RateLimited,
    /// The process, source or interval is unknown.
    NotFound,
    /// The arguments are invalid (e.g. `from > to`).
    InvalidArgument,
    /// The daemon is at a configured capacity (connections, tracked processes).
    ResourceExhausted,
    /// A bug or an unexpected failure in the daemon.
    Internal,
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self, f)
    }
}

/// The caller's identity as read from the socket (SO_PEERCRED).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct PeerInfo {
    /// Process id of the peer.
    pub pid: u32,
    /// Effective uid.
    pub uid: u32,
    /// Effective gid.
    pub gid: u32,
    /// Whether the peer sees every process and fine-grained machine readings.
    pub privileged: bool,
}

/// Limits that apply to a caller (all zero/unbounded for privileged callers).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct ClientPolicy {
    /// Machine-wide readings cover windows at least this long.
    pub min_window_ns: u64,
    /// Machine-wide energy is rounded to a multiple of this (joules).
    pub energy_quantum_j: f64,
    /// Requests allowed per second per uid (sustained).
    pub requests_per_sec: f64,
}

/// Answer to [`Request::Status`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DaemonStatus {
    /// Daemon crate version.
    pub daemon_version: String,
    /// Protocol version.
    pub protocol_version: u32,
    /// `true` when running with `--user`.
    pub user_mode: bool,
    /// When the daemon started.
    pub started_at: MonotonicNs,
    /// Now, by the daemon's clock.
    pub now: MonotonicNs,
    /// Each source with its live statistics.
    pub sources: Vec<SourceStatus>,
    /// Current power per source.
    pub power: PowerSnapshot,
    /// Processes currently tracked (only the caller's own, unless privileged).
    pub tracked_processes: u32,
}

/// A source with its statistics.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SourceStatus {
    /// The source.
    pub info: SourceInfo,
    /// Its sampling statistics.
    pub stats: SourceStats,
}

/// Power of every source over a recent window.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PowerSnapshot {
    /// Start of the window the power is averaged over.
    pub from: MonotonicNs,
    /// End of that window.
    pub to: MonotonicNs,
    /// One reading per source.
    pub readings: Vec<PowerReading>,
}

/// Average power of one source over a window.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PowerReading {
    /// The source.
    pub source: SourceId,
    /// Average power in watts.
    pub watts: f64,
    /// Where the figure comes from.
    pub provenance: Provenance,
}

/// Machine-wide energy per source over an interval.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EnergyReport {
    /// Start of the interval actually answered (may be widened to the
    /// caller's minimum window).
    pub from: MonotonicNs,
    /// End of the interval actually answered.
    pub to: MonotonicNs,
    /// One entry per source.
    pub sources: Vec<SourceEnergy>,
}

/// Energy of one source over an interval.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SourceEnergy {
    /// The source.
    pub source: SourceId,
    /// Energy in joules.
    pub joules: f64,
    /// Fraction (0..=1) of the interval covered by samples.
    pub coverage: f64,
    /// One-sigma uncertainty of `joules`, in joules.
    pub uncertainty_j: f64,
    /// Where the figure comes from.
    pub provenance: Provenance,
    /// The interval is shorter than the sensor's update period: the figure
    /// is interpolated, not observed.
    pub below_update_period: bool,
}

/// A batch of kernel spans. Names are sent once per batch and referenced by
/// index, so a batch of 10 000 spans of 20 kernel types costs about 20 bytes
/// a span on the wire.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct SpanBatch {
    /// Kernel names referenced by [`SpanRecord::name`].
    pub names: Vec<String>,
    /// The spans.
    pub spans: Vec<SpanRecord>,
}

/// One execution of a kernel.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct SpanRecord {
    /// Index into [`SpanBatch::names`].
    pub name: u32,
    /// Start (CLOCK_MONOTONIC ns).
    pub start: MonotonicNs,
    /// End (CLOCK_MONOTONIC ns), `>= start`.
    pub end: MonotonicNs,
    /// Process that ran it.
    pub pid: u32,
    /// Thread that ran it.
    pub tid: u32,
}

impl SpanBatch {
    /// Adds a span, interning its name.
    pub fn push(&mut self, name: &str, start: MonotonicNs, end: MonotonicNs, pid: u32, tid: u32) {
        let idx = match self.names.iter().position(|n| n == name) {
            Some(i) => i,
            None => {
                self.names.push(name.to_owned());
                self.names.len() - 1
            }
        };
        self.spans.push(SpanRecord {
            name: idx as u32,
            start,
            end,
            pid,
            tid,
        });
    }

    /// Name of a span, if its index is valid.
    pub fn name_of(&self, span: &SpanRecord) -> Option<&str> {
        self.names.get(span.name as usize).map(String::as_str)
    }
}

/// Energy of a process over an interval, per domain and per kernel type.
///
/// Invariant: for each domain, `process_j` equals the sum of the kernel
/// energies of that domain plus `unattributed_j` of that domain.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Breakdown {
    /// The process.
    pub pid: u32,
    /// Start of the interval.
    pub from: MonotonicNs,
    /// End of the interval.
    pub to: MonotonicNs,
    /// Per domain (source): machine energy and the process's share.
    pub domains: Vec<DomainShare>,
    /// Per kernel type.
    pub kernels: Vec<KernelEnergy>,
    /// Notes on how figures were obtained (method, caveats).
    pub notes: Vec<String>,
}

/// The part of one source's energy that belongs to a process.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DomainShare {
    /// The source.
    pub source: SourceId,
    /// Machine-wide energy of the source over the interval.
    pub machine_j: f64,
    /// Energy attributed to the process: its dynamic energy plus its share
    /// of static (idle) power.
    pub process_j: f64,
    /// The dynamic part of `process_j`.
    pub process_dynamic_j: f64,
    /// Activity share of the process in this domain (0..=1).
    pub activity_share: f64,
    /// Part of `process_j` not attributed to any kernel.
    pub unattributed_j: f64,
    /// One-sigma uncertainty of `process_j`.
    pub uncertainty_j: f64,
    /// Where the figure comes from.
    pub provenance: Provenance,
}

/// Energy of one kernel type within a process.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct KernelEnergy {
    /// Kernel name.
    pub name: String,
    /// Number of spans.
    pub count: u64,
    /// Sum of span durations.
    pub total_time_ns: u64,
    /// Energy attributed, in joules (`None` when there is not enough
    /// information to say, e.g. a single short span).
    pub energy_j: Option<f64>,
    /// Share of the process's energy (0..=1), when known.
    pub share: Option<f64>,
    /// One-sigma uncertainty of `energy_j`.
    pub uncertainty_j: f64,
    /// Confidence of the figure (0..=1), from the fit or the coverage.
    pub confidence: f64,
    /// How the figure was obtained.
    pub method: AttributionMethod,
}

/// How a kernel's energy was obtained.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum AttributionMethod {
    /// Integrated over the history, spans longer than the sample period.
    Integrated,
    /// Per-type power from a non-negative least-squares fit over many windows.
    Regression,
    /// Integrated, with a model of the sensor's averaging window.
    Deconvolved,
    /// Not enough information to attribute.
    Insufficient,
}
