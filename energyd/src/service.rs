//! The request handler: a function of (caller, request) and the daemon
//! state. It never touches a socket, so tests and the fuzzer drive it with
//! decoded requests directly.

use crate::breakdown;
use crate::config::Config;
use crate::policy::{process_owner, Caller, Coarsening, PrivilegeRule, RateLimiter};
use crate::spans::SpanStore;
use sampling::activity::ActivityTracker;
use sampling::engine::SamplingEngine;
use shared::protocol::{
    DaemonStatus, EnergyReport, ErrorCode, PowerReading, PowerSnapshot, Request, Response,
    SourceEnergy, SourceStatus, PROTOCOL_VERSION,
};
use shared::{MonotonicNs, SourceId};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// Window over which "current power" is averaged for privileged callers
/// (unprivileged ones get their policy window).
pub const CURRENT_POWER_WINDOW_NS: u64 = 100_000_000;

/// A process some client asked the daemon to track.
#[derive(Debug, Clone, Copy)]
pub struct TrackedProcess {
    /// uid that owns it (checked at registration).
    pub owner_uid: u32,
    /// Its descendants are tracked too.
    pub include_children: bool,
    /// When tracking began.
    pub since: MonotonicNs,
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
    /// Tracked processes and their owners.
    pub registry: Mutex<HashMap<u32, TrackedProcess>>,
    /// Per-uid request budget.
    pub rate: RateLimiter,
    /// Who is privileged.
    pub privilege: PrivilegeRule,
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
            Request::SubmitSpans(batch) => {
                let registry = self.registry.lock().unwrap_or_else(|p| p.into_inner());
                let (accepted, rejected) = self.spans.insert(&batch, now, |pid| {
                    registry
                        .get(&pid)
                        .is_some_and(|t| caller.privileged || t.owner_uid == caller.uid)
                });
                Response::SpansAccepted { accepted, rejected }
            }
            Request::Breakdown { pid, from, to } => match self.visible_process(caller, pid) {
                Err(resp) => resp,
                Ok(tracked) => {
                    let from = from.unwrap_or(tracked.since);
                    // Nothing is known after now: a later end would only
                    // stretch the interval over history that does not exist.
                    let to = to.map_or(now, |to| to.min(now));
                    if from > to {
                        return error(
                            ErrorCode::InvalidArgument,
                            format!("from ({from}) is after to ({to})"),
                        );
                    }
                    Response::Breakdown(breakdown::compute(self, caller, pid, from, to))
                }
            },
            Request::Subscribe { .. } => error(
                ErrorCode::InvalidArgument,
                "Subscribe is handled by the connection",
            ),
        }
    }

    /// The process `pid` if the caller may see it.
    fn visible_process(&self, caller: &Caller, pid: u32) -> Result<TrackedProcess, Response> {
        let registry = self.registry.lock().unwrap_or_else(|p| p.into_inner());
        match registry.get(&pid) {
            Some(t) if caller.privileged || t.owner_uid == caller.uid => Ok(*t),
            // Same answer for "not tracked" and "someone else's": an
            // unprivileged caller must not learn which pids others track.
            Some(_) if !caller.privileged => Err(error(
                ErrorCode::PermissionDenied,
                format!("process {pid} is not tracked for uid {}", caller.uid),
            )),
            _ if caller.privileged => Err(error(
                ErrorCode::NotFound,
                format!("process {pid} is not tracked"),
            )),
            _ => Err(error(
                ErrorCode::PermissionDenied,
                format!("process {pid} is not tracked for uid {}", caller.uid),
            )),
        }
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
        let mut registry = self.registry.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(existing) = registry.get(&pid) {
            if existing.owner_uid == owner && !self.tracker.exited(pid) {
                return Response::Registered { pid, tracked: true };
            }
            // A stale entry whose pid was reused: start afresh.
            registry.remove(&pid);
            self.tracker.untrack(pid);
            self.spans.remove(pid);
        }
        let limit = self.config.policy.max_tracked_per_uid;
        if !caller.privileged {
            let mine: Vec<(u32, MonotonicNs)> = registry
                .iter()
                .filter(|(_, t)| t.owner_uid == owner)
                .map(|(p, t)| (*p, t.since))
                .collect();
            if mine.len() >= limit {
                // Make room by forgetting the oldest of this uid's exited processes.
                let oldest_exited = mine
                    .iter()
                    .filter(|(p, _)| self.tracker.exited(*p))
                    .min_by_key(|(_, since)| *since)
                    .map(|(p, _)| *p);
                match oldest_exited {
                    Some(old) => {
                        registry.remove(&old);
                        self.tracker.untrack(old);
                        self.spans.remove(old);
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
        if let Err(e) = self.tracker.track(pid, include_children) {
            return error(
                ErrorCode::NotFound,
                format!("cannot track process {pid}: {e}"),
            );
        }
        registry.insert(
            pid,
            TrackedProcess {
                owner_uid: owner,
                include_children,
                since: now,
            },
        );
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
        if let Err(resp) = self.visible_process(caller, pid) {
            return resp;
        }
        self.registry
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&pid);
        self.tracker.untrack(pid);
        self.spans.remove(pid);
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
                SourceEnergy {
                    source: info.id,
                    joules: coarse.energy(joules),
                    coverage,
                    uncertainty_j: (uncertainty_j.powi(2) + quant_sigma.powi(2)).sqrt(),
                    provenance: info.provenance,
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
        registry.retain(|pid, t| {
            let keep = !(self.tracker.exited(*pid) && t.since < cutoff);
            if !keep {
                self.tracker.untrack(*pid);
                self.spans.remove(*pid);
            }
            keep
        });
        self.spans.expire_before(cutoff);
    }

    /// Source ids in order.
    pub fn source_ids(&self) -> Vec<SourceId> {
        self.engine.sources().iter().map(|s| s.id).collect()
    }
}

fn process_exists(proc_root: &std::path::Path, pid: u32) -> bool {
    pid != 0 && proc_root.join(pid.to_string()).exists()
}
