//! The request handler: a function of (caller, request) and the daemon
//! state. It never touches a socket, so tests and the fuzzer drive it with
//! decoded requests directly.

use crate::breakdown;
use crate::config::Config;
use crate::policy::{
    process_owner, BreakdownGate, BreakdownPermit, Caller, Coarsening, ConnectionSlots,
    PrivilegeRule, RateLimiter,
};
use crate::spans::SpanStore;
use sampling::activity::ActivityTracker;
use sampling::cgroup::{CgroupError, CgroupRoot};
use sampling::engine::{DemandGuard, SamplingEngine};
use shared::protocol::{
    CgroupEnergy, CgroupSelector, CgroupTracking, DaemonStatus, EnergyReport, ErrorCode,
    PowerReading, PowerSnapshot, Request, Response, SourceEnergy, SourceStatus, SpanBatch,
    PROTOCOL_VERSION,
};
use shared::{MonotonicNs, SourceId};
use std::collections::HashMap;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

/// Window over which "current power" is averaged for privileged callers
/// (unprivileged ones get their policy window).
pub const CURRENT_POWER_WINDOW_NS: u64 = 100_000_000;

/// A process some client asked the daemon to track: one process
/// *instance*, identified by pid and start time, so that a pid reused by
/// another process (of another uid, after ~32 k forks) is another record
/// and never touches this one (issue 12, item 7).
#[derive(Debug, Clone, Copy)]
pub struct TrackedProcess {
    /// Key of this record in the activity tracker and the span store.
    pub key: u64,
    /// The process id.
    pub pid: u32,
    /// Its start time (clock ticks since boot, `stat` field 22).
    pub start_ticks: u64,
    /// uid that owns it (checked at registration).
    pub owner_uid: u32,
    /// Its descendants are tracked too.
    pub include_children: bool,
    /// When tracking began.
    pub since: MonotonicNs,
}

/// A control group some client (or the configuration) asked the daemon to
/// track, by its resolved path.
#[derive(Debug, Clone)]
pub struct TrackedCgroup {
    /// Key of this record in the activity tracker.
    pub key: u64,
    /// Path relative to the cgroup root, `/`-prefixed.
    pub path: String,
    /// Its directory.
    pub dir: PathBuf,
    /// Owner of the directory when tracking began (the access rule).
    pub owner_uid: u32,
    /// When tracking began.
    pub since: MonotonicNs,
    /// Tracked by the configuration (`exporter.units` / `exporter.cgroups`):
    /// exported, and never untracked or expired.
    pub configured: bool,
    /// The unit name it was asked for by, when it was.
    pub unit: Option<String>,
}

impl TrackedCgroup {
    /// Its state as the protocol tells it.
    pub fn to_protocol(&self, tracker: &ActivityTracker, tracked: bool) -> CgroupTracking {
        CgroupTracking {
            path: self.path.clone(),
            owner_uid: self.owner_uid,
            tracked,
            since: self.since,
            configured: self.configured,
            present: !tracker.exited(self.key),
        }
    }
}

/// One uid's remembered batch answers: `(batch id, (accepted, rejected))`,
/// oldest first.
type BatchAnswers = std::collections::VecDeque<(u64, (u32, u32))>;

/// Answers to idempotent span batches, the most recent `per_uid` of each
/// uid.
#[derive(Debug)]
pub struct BatchMemory {
    per_uid: usize,
    answers: Mutex<HashMap<u32, BatchAnswers>>,
}

impl BatchMemory {
    /// Remembers up to `per_uid` batch answers per uid.
    pub fn new(per_uid: usize) -> BatchMemory {
        BatchMemory {
            per_uid: per_uid.max(1),
            answers: Mutex::new(HashMap::new()),
        }
    }
}

/// Everything the handler reads and changes.
pub struct DaemonState {
    /// Configuration in force.
    pub config: Config,
    /// Started with `--user`.
    pub user_mode: bool,
    /// When the daemon started.
    pub started_at: MonotonicNs,
    /// Energy sources and their history.
    pub engine: Arc<SamplingEngine>,
    /// CPU activity of tracked processes.
    pub tracker: Arc<ActivityTracker>,
    /// Per-process GPU activity, when NVML is loaded.
    pub gpu: Option<Arc<crate::gpu_activity::GpuActivity>>,
    /// Kernel spans per process.
    pub spans: SpanStore,
    /// Tracked process instances by pid (several when a pid was reused:
    /// at most one of them alive).
    pub registry: Mutex<HashMap<u32, Vec<TrackedProcess>>>,
    /// Per-uid request budget.
    pub rate: RateLimiter,
    /// Who is privileged.
    pub privilege: PrivilegeRule,
    /// Unprivileged breakdowns running at once.
    pub breakdowns: BreakdownGate,
    /// Connection slots per uid and in all.
    pub connections: Arc<ConnectionSlots>,
    /// Answers to idempotent span batches.
    pub batches: BatchMemory,
    /// Next tracking record key.
    pub next_record_key: AtomicU64,
    /// Full sampling rate held while a live process is tracked.
    pub tracking_demand: Mutex<Option<DemandGuard>>,
    /// The cgroup v2 hierarchy cgroups are resolved in.
    pub cgroup_root: CgroupRoot,
    /// Tracked cgroups by path (relative to the root).
    pub cgroups: Mutex<HashMap<String, TrackedCgroup>>,
    /// Configured cgroups not found yet (a unit not started): looked for
    /// again at every expiry pass.
    pub pending_cgroups: Mutex<Vec<CgroupSelector>>,
}

/// An error answer.
pub fn error(code: ErrorCode, message: impl Into<String>) -> Response {
    Response::Error {
        code,
        message: message.into(),
    }
}

impl DaemonState {
    /// Answers the first message of a connection: `Ok` with the `Hello`
    /// answer, or `Err` with the error to send before closing.
    pub fn handshake(&self, caller: &Caller, req: &Request) -> Result<Response, Response> {
        match req {
            Request::Hello { protocol_version, .. } if *protocol_version == PROTOCOL_VERSION => {
                let coarse = Coarsening::for_caller(caller, &self.config.policy);
                Ok(Response::Hello {
                    protocol_version: PROTOCOL_VERSION,
                    daemon_version: env!("CARGO_PKG_VERSION").to_owned(),
                    peer: caller.info(),
                    policy: coarse.announce(&self.config.policy, caller.privileged),
                })
            }
            Request::Hello { protocol_version, .. } => Err(error(
                ErrorCode::VersionMismatch,
                format!(
                    "client speaks protocol version {protocol_version}, energyd {} speaks version {PROTOCOL_VERSION}",
                    env!("CARGO_PKG_VERSION")
                ),
            )),
            _ => Err(error(ErrorCode::HandshakeRequired, "the first request must be Hello")),
        }
    }

    /// Answers one request of a handshaken connection. `Subscribe` is
    /// answered by the server (it streams); here it only checks the rate.
    pub fn handle(&self, caller: &Caller, req: Request) -> Response {
        let now = MonotonicNs::now();
        // Someone is asking: sample at the full rate for a while.
        self.engine.demand().touch(
            now,
            self.config
                .sampling
                .full_rate_hold_ms
                .saturating_mul(1_000_000),
        );
        if !caller.privileged && !self.rate.allow(caller.uid, now) {
            return error(
                ErrorCode::RateLimited,
                format!(
                    "uid {} exceeds {} requests/s",
                    caller.uid, self.config.policy.requests_per_sec
                ),
            );
        }
        match req {
            Request::Hello { .. } => {
                error(ErrorCode::InvalidArgument, "Hello was already exchanged")
            }
            Request::Status => Response::Status(self.status(caller, now)),
            Request::ListSources => Response::Sources(self.engine.sources()),
            Request::CurrentPower => Response::Power(self.power_snapshot(caller, now)),
            Request::Energy { from, to } => self.energy(caller, from, to, now),
            Request::RegisterProcess {
                pid,
                include_children,
            } => self.register(caller, pid, include_children, now),
            Request::UnregisterProcess { pid } => self.unregister(caller, pid),
            Request::SubmitSpans(batch) => self.submit_spans(caller, &batch, now),
            Request::SubmitSpansOnce { batch_id, batch } => {
                self.submit_spans_once(caller, batch_id, &batch, now)
            }
            Request::Breakdown { pid, from, to } => match self.visible_process(caller, pid) {
                Err(resp) => resp,
                Ok(tracked) => {
                    let (from, to, _permit) =
                        match self.breakdown_window(caller, from, to, tracked.since, now) {
                            Ok(w) => w,
                            Err(resp) => return resp,
                        };
                    if !caller.privileged {
                        // The rate limit counts work: one token per
                        // `breakdown_spans_per_token` spans considered.
                        let spans = self.spans.count_in(tracked.key, from, to) as u64;
                        let cost = spans / self.config.policy.breakdown_spans_per_token;
                        if cost > 0 && !self.rate.take(caller.uid, now, cost as f64) {
                            return error(
                                ErrorCode::RateLimited,
                                format!(
                                    "a breakdown over {spans} spans costs {cost} request tokens; \
                                     uid {} has fewer left (refill {}/s)",
                                    caller.uid, self.config.policy.requests_per_sec
                                ),
                            );
                        }
                    }
                    Response::Breakdown(breakdown::compute(self, caller, &tracked, from, to))
                }
            },
            Request::Subscribe { .. } => error(
                ErrorCode::InvalidArgument,
                "Subscribe is handled by the connection",
            ),
            Request::TrackCgroup { cgroup } => match self.track_cgroup(caller, &cgroup, false, now)
            {
                Ok(t) => Response::CgroupTracking(t),
                Err(resp) => resp,
            },
            Request::UntrackCgroup { cgroup } => self.untrack_cgroup(caller, &cgroup),
            Request::CgroupEnergy { cgroup, from, to } => {
                self.cgroup_energy(caller, &cgroup, from, to, now)
            }
        }
    }

    /// The answer an unprivileged caller gets for a cgroup it may not see,
    /// the same whether it exists or not (no oracle for others' cgroups).
    fn cgroup_denied(caller: &Caller, cgroup: &CgroupSelector) -> Response {
        error(
            ErrorCode::PermissionDenied,
            format!(
                "{cgroup} does not exist or is not owned by uid {}",
                caller.uid
            ),
        )
    }

    /// Resolves `cgroup` to (path, directory, owner) among the cgroups the
    /// caller may see: any for privileged callers, their own directories
    /// for others.
    fn resolve_cgroup(
        &self,
        caller: &Caller,
        cgroup: &CgroupSelector,
    ) -> Result<(String, PathBuf, u32), Response> {
        let owner_of = |dir: &Path| std::fs::metadata(dir).ok().map(|m| m.uid());
        let visible = |dir: &Path| caller.privileged || owner_of(dir) == Some(caller.uid);
        let resolved = match cgroup {
            CgroupSelector::Unit { name } => self
                .cgroup_root
                .resolve_unit(name, visible)
                .and_then(|rel| self.cgroup_root.dir_of(&rel).map(|dir| (rel, dir))),
            CgroupSelector::Path { path } => sampling::cgroup::relative_path(path)
                .and_then(|rel| self.cgroup_root.dir_of(&rel).map(|dir| (rel, dir))),
        };
        let (rel, dir) = resolved.map_err(|e| match e {
            CgroupError::BadUnitName { .. } | CgroupError::BadPath { .. } => {
                error(ErrorCode::InvalidArgument, e.to_string())
            }
            _ if !caller.privileged => Self::cgroup_denied(caller, cgroup),
            CgroupError::Ambiguous { .. } => error(ErrorCode::InvalidArgument, e.to_string()),
            _ => error(ErrorCode::NotFound, e.to_string()),
        })?;
        let owner = owner_of(&dir).ok_or_else(|| Self::cgroup_denied(caller, cgroup))?;
        if !caller.privileged && owner != caller.uid {
            return Err(Self::cgroup_denied(caller, cgroup));
        }
        Ok((sampling::cgroup::display_path(&rel), dir, owner))
    }

    /// The tracked record `cgroup` names, if the caller may see it: by
    /// path, or by unit name among tracked records (so a stopped unit's
    /// record is still found), else by resolving it in the hierarchy.
    fn visible_cgroup(
        &self,
        caller: &Caller,
        cgroup: &CgroupSelector,
    ) -> Result<TrackedCgroup, Response> {
        let may_see = |t: &TrackedCgroup| caller.privileged || t.owner_uid == caller.uid;
        let not_tracked = || {
            if caller.privileged {
                error(
                    ErrorCode::NotFound,
                    format!("{cgroup} is not tracked (track it first: TrackCgroup)"),
                )
            } else {
                error(
                    ErrorCode::PermissionDenied,
                    format!("{cgroup} is not tracked for uid {}", caller.uid),
                )
            }
        };
        let cgroups = self.cgroups.lock().unwrap_or_else(|p| p.into_inner());
        let by_name: Vec<&TrackedCgroup> = match cgroup {
            CgroupSelector::Unit { name } => cgroups
                .values()
                .filter(|t| may_see(t) && t.path.rsplit('/').next() == Some(name.as_str()))
                .collect(),
            CgroupSelector::Path { path } => {
                let Ok(rel) = sampling::cgroup::relative_path(path) else {
                    return Err(error(
                        ErrorCode::InvalidArgument,
                        format!("{path:?} is not a cgroup path"),
                    ));
                };
                cgroups
                    .get(&sampling::cgroup::display_path(&rel))
                    .filter(|t| may_see(t))
                    .into_iter()
                    .collect()
            }
        };
        if let [one] = by_name.as_slice() {
            return Ok((*one).clone());
        }
        drop(cgroups);
        let (path, _, _) = self.resolve_cgroup(caller, cgroup)?;
        self.cgroups
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&path)
            .filter(|t| may_see(t))
            .cloned()
            .ok_or_else(not_tracked)
    }

    /// Starts tracking a cgroup (or returns its record if tracked already).
    /// `configured`: asked for by the configuration, on the daemon's behalf.
    pub fn track_cgroup(
        &self,
        caller: &Caller,
        cgroup: &CgroupSelector,
        configured: bool,
        now: MonotonicNs,
    ) -> Result<CgroupTracking, Response> {
        let (path, dir, owner) = self.resolve_cgroup(caller, cgroup)?;
        let mut cgroups = self.cgroups.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(t) = cgroups.get_mut(&path) {
            t.configured |= configured;
            return Ok(t.to_protocol(&self.tracker, true));
        }
        if !caller.privileged {
            let limit = self.config.cgroups.max_tracked_per_uid;
            let mine = cgroups
                .values()
                .filter(|t| t.owner_uid == caller.uid && !t.configured)
                .count();
            if mine >= limit {
                return Err(error(
                    ErrorCode::ResourceExhausted,
                    format!("uid {} already tracks {limit} cgroups", caller.uid),
                ));
            }
        }
        let key = self.next_record_key.fetch_add(1, Ordering::Relaxed);
        if let Err(e) = self.tracker.track_cgroup(key, dir.clone()) {
            return Err(error(
                ErrorCode::NotFound,
                format!("cannot track {cgroup}: {e}"),
            ));
        }
        let record = TrackedCgroup {
            key,
            path: path.clone(),
            dir,
            owner_uid: owner,
            since: now,
            configured,
            unit: match cgroup {
                CgroupSelector::Unit { name } => Some(name.clone()),
                CgroupSelector::Path { .. } => None,
            },
        };
        let answer = record.to_protocol(&self.tracker, true);
        cgroups.insert(path.clone(), record);
        tracing::info!(
            path,
            owner,
            by_uid = caller.uid,
            configured,
            "tracking cgroup"
        );
        Ok(answer)
    }

    fn untrack_cgroup(&self, caller: &Caller, cgroup: &CgroupSelector) -> Response {
        let record = match self.visible_cgroup(caller, cgroup) {
            Ok(t) => t,
            Err(resp) => return resp,
        };
        if record.configured {
            return error(
                ErrorCode::PermissionDenied,
                format!(
                    "{cgroup} ({}) is tracked by the daemon's configuration",
                    record.path
                ),
            );
        }
        self.cgroups
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&record.path);
        let answer = record.to_protocol(&self.tracker, false);
        self.tracker.untrack(record.key);
        Response::CgroupTracking(answer)
    }

    /// The interval of a breakdown (a process's or a cgroup's) and the
    /// permit to compute it: `from` defaults to when tracking began, `to`
    /// is clamped to now (nothing is known after now: a later end would
    /// only stretch the interval over history that does not exist).
    fn breakdown_window(
        &self,
        caller: &Caller,
        from: Option<MonotonicNs>,
        to: Option<MonotonicNs>,
        since: MonotonicNs,
        now: MonotonicNs,
    ) -> Result<(MonotonicNs, MonotonicNs, BreakdownPermit<'_>), Response> {
        let from = from.unwrap_or(since);
        let to = to.map_or(now, |to| to.min(now));
        if from > to {
            return Err(error(
                ErrorCode::InvalidArgument,
                format!("from ({from}) is after to ({to})"),
            ));
        }
        let permit = self.breakdowns.enter(caller).ok_or_else(|| {
            error(
                ErrorCode::ResourceExhausted,
                format!(
                    "too many breakdowns running (at most {} at once, {} per uid); retry when \
                     one has finished",
                    self.config.policy.max_concurrent_breakdowns,
                    self.config.policy.max_concurrent_breakdowns_per_uid
                ),
            )
        })?;
        Ok((from, to, permit))
    }

    fn cgroup_energy(
        &self,
        caller: &Caller,
        cgroup: &CgroupSelector,
        from: Option<MonotonicNs>,
        to: Option<MonotonicNs>,
        now: MonotonicNs,
    ) -> Response {
        let record = match self.visible_cgroup(caller, cgroup) {
            Ok(t) => t,
            Err(resp) => return resp,
        };
        let (from, to, _permit) = match self.breakdown_window(caller, from, to, record.since, now) {
            Ok(w) => w,
            Err(resp) => return resp,
        };
        let subject = breakdown::Subject {
            key: record.key,
            pid: None,
            include_children: true,
        };
        let b = breakdown::compute_subject(self, caller, &subject, from, to);
        Response::CgroupEnergy(CgroupEnergy {
            cgroup: record.to_protocol(&self.tracker, true),
            from: b.from,
            to: b.to,
            domains: b.domains,
            notes: b.notes,
        })
    }

    /// Tracks the cgroups the configuration names (`exporter.units`,
    /// `exporter.cgroups`) on the daemon's behalf; those not found now are
    /// kept and looked for again at every expiry pass (logged as a warning
    /// when `first`, at debug level afterwards).
    pub fn track_configured_cgroups(&self, now: MonotonicNs, first: bool) {
        let wanted: Vec<CgroupSelector> = {
            let mut pending = self
                .pending_cgroups
                .lock()
                .unwrap_or_else(|p| p.into_inner());
            std::mem::take(&mut *pending)
        };
        let daemon = Caller {
            pid: std::process::id(),
            uid: 0,
            gid: 0,
            privileged: true,
        };
        let mut still = Vec::new();
        for selector in wanted {
            match self.track_cgroup(&daemon, &selector, true, now) {
                Ok(_) => {}
                Err(Response::Error { message, .. }) => {
                    if first {
                        tracing::warn!(%selector, %message, "configured cgroup not tracked yet; looking for it every 10 s");
                    } else {
                        tracing::debug!(%selector, %message, "configured cgroup still not found");
                    }
                    still.push(selector);
                }
                Err(_) => still.push(selector),
            }
        }
        self.pending_cgroups
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .extend(still);
    }

    fn submit_spans(&self, caller: &Caller, batch: &SpanBatch, now: MonotonicNs) -> Response {
        let registry = self.registry.lock().unwrap_or_else(|p| p.into_inner());
        let (accepted, rejected) = self.spans.insert(batch, now, |pid| {
            self.pick_record(&registry, caller, pid)
                .map(|t| (t.key, t.owner_uid))
        });
        Response::SpansAccepted { accepted, rejected }
    }

    /// Stores a batch once per (uid, batch id); a repeat gets the first
    /// answer again.
    fn submit_spans_once(
        &self,
        caller: &Caller,
        batch_id: u64,
        batch: &SpanBatch,
        now: MonotonicNs,
    ) -> Response {
        // Held across the insert, so two copies racing on two connections
        // cannot both be stored.
        let mut answers = self
            .batches
            .answers
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        let mine = answers.entry(caller.uid).or_default();
        if let Some((_, (accepted, rejected))) = mine.iter().find(|(id, _)| *id == batch_id) {
            return Response::SpansAccepted {
                accepted: *accepted,
                rejected: *rejected,
            };
        }
        let resp = self.submit_spans(caller, batch, now);
        if let Response::SpansAccepted { accepted, rejected } = resp {
            if mine.len() >= self.batches.per_uid {
                mine.pop_front();
            }
            mine.push_back((batch_id, (accepted, rejected)));
        }
        resp
    }

    /// The record of `pid` that `caller` means: among those it may see,
    /// the live one, else the most recently registered.
    fn pick_record(
        &self,
        registry: &HashMap<u32, Vec<TrackedProcess>>,
        caller: &Caller,
        pid: u32,
    ) -> Option<TrackedProcess> {
        registry
            .get(&pid)?
            .iter()
            .filter(|t| caller.privileged || t.owner_uid == caller.uid)
            .max_by_key(|t| (!self.tracker.exited(t.key), t.since))
            .copied()
    }

    /// The process `pid` if the caller may see it.
    fn visible_process(&self, caller: &Caller, pid: u32) -> Result<TrackedProcess, Response> {
        let registry = self.registry.lock().unwrap_or_else(|p| p.into_inner());
        match self.pick_record(&registry, caller, pid) {
            Some(t) => Ok(t),
            _ if caller.privileged => Err(error(
                ErrorCode::NotFound,
                format!("process {pid} is not tracked"),
            )),
            // Same answer for "not tracked" and "someone else's": an
            // unprivileged caller must not learn which pids others track.
            _ => Err(error(
                ErrorCode::PermissionDenied,
                format!("process {pid} is not tracked for uid {}", caller.uid),
            )),
        }
    }

    /// Holds the full sampling rate while any tracked process is alive.
    pub fn update_tracking_demand(&self) {
        let live = self
            .registry
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .flatten()
            .any(|t| !self.tracker.exited(t.key));
        let mut guard = self
            .tracking_demand
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        match (live, guard.is_some()) {
            (true, false) => *guard = Some(self.engine.demand().hold()),
            (false, true) => *guard = None,
            _ => {}
        }
    }

    fn forget_record(&self, t: &TrackedProcess) {
        self.tracker.untrack(t.key);
        self.spans.remove(t.key);
    }

    fn register(
        &self,
        caller: &Caller,
        pid: u32,
        include_children: bool,
        now: MonotonicNs,
    ) -> Response {
        let owner = match process_owner(&self.config.activity.proc_root, pid) {
            Some(owner) => owner,
            None if caller.privileged && process_exists(&self.config.activity.proc_root, pid) => 0,
            None => {
                return error(
                    if process_exists(&self.config.activity.proc_root, pid) {
                        ErrorCode::PermissionDenied
                    } else {
                        ErrorCode::NotFound
                    },
                    format!(
                        "process {pid} does not exist or is not owned by uid {}",
                        caller.uid
                    ),
                )
            }
        };
        if !caller.privileged && owner != caller.uid {
            return error(
                ErrorCode::PermissionDenied,
                format!(
                    "process {pid} does not exist or is not owned by uid {}",
                    caller.uid
                ),
            );
        }
        let Some(start_ticks) = process_start_ticks(&self.config.activity.proc_root, pid) else {
            return error(ErrorCode::NotFound, format!("process {pid} does not exist"));
        };
        let mut registry = self.registry.lock().unwrap_or_else(|p| p.into_inner());
        let records = registry.entry(pid).or_default();
        if records.iter().any(|t| {
            t.start_ticks == start_ticks && t.owner_uid == owner && !self.tracker.exited(t.key)
        }) {
            return Response::Registered { pid, tracked: true };
        }
        // This owner's records of earlier processes with this pid are
        // stale: start afresh. Other owners' records stay: they are other
        // process instances (pid + start time), and their history is
        // theirs, not the newcomer's to delete.
        let (stale, kept): (Vec<TrackedProcess>, Vec<TrackedProcess>) =
            records.drain(..).partition(|t| t.owner_uid == owner);
        *records = kept;
        for t in &stale {
            self.forget_record(t);
        }
        let limit = self.config.policy.max_tracked_per_uid;
        if !caller.privileged {
            let mine: Vec<TrackedProcess> = registry
                .values()
                .flatten()
                .filter(|t| t.owner_uid == owner)
                .copied()
                .collect();
            if mine.len() >= limit {
                // Make room by forgetting the oldest of this uid's exited processes.
                let oldest_exited = mine
                    .iter()
                    .filter(|t| self.tracker.exited(t.key))
                    .min_by_key(|t| t.since)
                    .copied();
                match oldest_exited {
                    Some(old) => {
                        if let Some(list) = registry.get_mut(&old.pid) {
                            list.retain(|t| t.key != old.key);
                        }
                        self.forget_record(&old);
                    }
                    None => {
                        return error(
                            ErrorCode::ResourceExhausted,
                            format!("uid {} already tracks {limit} live processes", caller.uid),
                        )
                    }
                }
            }
        }
        let key = self.next_record_key.fetch_add(1, Ordering::Relaxed);
        if let Err(e) = self
            .tracker
            .track_process(key, pid, start_ticks, include_children)
        {
            return error(
                ErrorCode::NotFound,
                format!("cannot track process {pid}: {e}"),
            );
        }
        registry.entry(pid).or_default().push(TrackedProcess {
            key,
            pid,
            start_ticks,
            owner_uid: owner,
            include_children,
            since: now,
        });
        drop(registry);
        self.update_tracking_demand();
        tracing::info!(
            pid,
            owner,
            include_children,
            by_uid = caller.uid,
            "tracking process"
        );
        Response::Registered { pid, tracked: true }
    }

    fn unregister(&self, caller: &Caller, pid: u32) -> Response {
        let record = match self.visible_process(caller, pid) {
            Err(resp) => return resp,
            Ok(t) => t,
        };
        {
            let mut registry = self.registry.lock().unwrap_or_else(|p| p.into_inner());
            if let Some(list) = registry.get_mut(&pid) {
                list.retain(|t| t.key != record.key);
                if list.is_empty() {
                    registry.remove(&pid);
                }
            }
        }
        self.forget_record(&record);
        self.update_tracking_demand();
        Response::Registered {
            pid,
            tracked: false,
        }
    }

    fn energy(
        &self,
        caller: &Caller,
        from: MonotonicNs,
        to: MonotonicNs,
        now: MonotonicNs,
    ) -> Response {
        if from > to {
            return error(
                ErrorCode::InvalidArgument,
                format!("from ({from}) is after to ({to})"),
            );
        }
        let coarse = Coarsening::for_caller(caller, &self.config.policy);
        let Some((from, to)) = coarse.interval(from, to, now) else {
            return error(
                ErrorCode::InvalidArgument,
                "no whole policy window has elapsed in that interval yet",
            );
        };
        Response::Energy(EnergyReport {
            from,
            to,
            sources: self.source_energies(&coarse, from, to),
        })
    }

    fn source_energies(
        &self,
        coarse: &Coarsening,
        from: MonotonicNs,
        to: MonotonicNs,
    ) -> Vec<SourceEnergy> {
        self.engine
            .sources()
            .iter()
            .map(|info| {
                let e = self.engine.energy(info.id, from, to);
                let (joules, coverage, uncertainty_j, below) = match e {
                    Some(e) => (e.joules, e.coverage, e.uncertainty_j, e.below_update_period),
                    None => (0.0, 0.0, 0.0, false),
                };
                // Rounding to the quantum adds a uniform error of quantum/√12.
                let quant_sigma = coarse.quantum_j / 12f64.sqrt();
                // A figure over a re-based counter glitch, or from a stuck
                // counter, is not a measurement.
                let health = self.engine.health(info.id, from, to);
                SourceEnergy {
                    source: info.id,
                    joules: coarse.energy(joules),
                    coverage,
                    uncertainty_j: (uncertainty_j.powi(2) + quant_sigma.powi(2)).sqrt(),
                    provenance: health.provenance(info.provenance),
                    below_update_period: below,
                }
            })
            .collect()
    }

    /// Average power of every source over the latest window the caller may see.
    pub fn power_snapshot(&self, caller: &Caller, now: MonotonicNs) -> PowerSnapshot {
        let coarse = Coarsening::for_caller(caller, &self.config.policy);
        let window = coarse.window_ns.max(CURRENT_POWER_WINDOW_NS);
        let (from, to) = coarse
            .interval(now.saturating_sub_ns(window), now, now)
            .unwrap_or((now.saturating_sub_ns(window), now));
        let readings = self
            .source_energies(&coarse, from, to)
            .into_iter()
            .map(|e| PowerReading {
                source: e.source,
                watts: shared::Joules(e.joules).over_ns(to.saturating_sub(from)).0,
                provenance: e.provenance,
            })
            .collect();
        PowerSnapshot { from, to, readings }
    }

    fn status(&self, caller: &Caller, now: MonotonicNs) -> DaemonStatus {
        let sources = self
            .engine
            .sources()
            .into_iter()
            .map(|info| {
                let stats = self.engine.stats(info.id).unwrap_or_default();
                SourceStatus { info, stats }
            })
            .collect();
        let tracked = self
            .registry
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .flatten()
            .filter(|t| caller.privileged || t.owner_uid == caller.uid)
            .count();
        DaemonStatus {
            daemon_version: env!("CARGO_PKG_VERSION").to_owned(),
            protocol_version: PROTOCOL_VERSION,
            user_mode: self.user_mode,
            started_at: self.started_at,
            now,
            sources,
            power: self.power_snapshot(caller, now),
            tracked_processes: tracked as u32,
        }
    }

    /// Forgets processes that exited longer ago than the history window,
    /// and spans older than the history.
    pub fn expire(&self, now: MonotonicNs) {
        let window_ns = self.config.history.window_s.saturating_mul(1_000_000_000);
        let cutoff = now.saturating_sub_ns(window_ns);
        let mut registry = self.registry.lock().unwrap_or_else(|p| p.into_inner());
        for list in registry.values_mut() {
            list.retain(|t| {
                let keep = !(self.tracker.exited(t.key) && t.since < cutoff);
                if !keep {
                    self.forget_record(t);
                }
                keep
            });
        }
        registry.retain(|_, list| !list.is_empty());
        drop(registry);
        self.cgroups
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .retain(|_, t| {
                let keep = t.configured || !(self.tracker.exited(t.key) && t.since < cutoff);
                if !keep {
                    self.tracker.untrack(t.key);
                }
                keep
            });
        if !self
            .pending_cgroups
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .is_empty()
        {
            self.track_configured_cgroups(now, false);
        }
        self.spans.expire_before(cutoff);
        self.update_tracking_demand();
    }

    /// Source ids in order.
    pub fn source_ids(&self) -> Vec<SourceId> {
        self.engine.sources().iter().map(|s| s.id).collect()
    }
}

/// Start time of `pid` (clock ticks since boot), `None` if it is gone.
fn process_start_ticks(proc_root: &std::path::Path, pid: u32) -> Option<u64> {
    sampling::procstat::PidStatFile::open(proc_root, pid)
        .ok()?
        .read()
        .map(|s| s.start_ticks)
}

fn process_exists(proc_root: &std::path::Path, pid: u32) -> bool {
    pid != 0 && proc_root.join(pid.to_string()).exists()
}
