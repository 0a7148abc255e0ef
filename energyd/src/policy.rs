//! Who a peer is and what it may see.
//!
//! Threat model (see ARCHITECTURE.md): local unprivileged users may connect.
//! Fine-grained machine-wide energy is a side channel (Platypus,
//! CVE-2020-8694/8695), and one user's process activity is private to that
//! user. So:
//! - a peer is identified by the kernel (SO_PEERCRED), never by what it says;
//! - root and members of the configured group are *privileged*: they see
//!   every process and machine readings at full resolution;
//! - everyone else may only register, report spans for, and query processes
//!   they own (by the rule ptrace uses: real, effective and saved uid all
//!   equal to the peer's uid); machine-wide readings reach them only over
//!   aligned windows of at least `min_window_ms`, quantised; and their
//!   requests are rate-limited per uid.

use crate::config::PolicyConfig;
use shared::protocol::{ClientPolicy, PeerInfo};
use shared::MonotonicNs;
use std::collections::HashMap;
use std::path::Path;
use std::sync::Mutex;

/// A connected peer as the kernel reported it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Caller {
    /// Peer process id (0 if the kernel did not say).
    pub pid: u32,
    /// Effective uid.
    pub uid: u32,
    /// Effective gid.
    pub gid: u32,
    /// Root, or a member of the privileged group.
    pub privileged: bool,
}

impl Caller {
    /// The caller as reported to it in the handshake.
    pub fn info(&self) -> PeerInfo {
        PeerInfo {
            pid: self.pid,
            uid: self.uid,
            gid: self.gid,
            privileged: self.privileged,
        }
    }
}

/// Decides privilege for a peer from its credentials.
#[derive(Debug, Clone)]
pub struct PrivilegeRule {
    /// The privileged group's gid, if one is configured.
    pub group_gid: Option<u32>,
    /// procfs root, to read a peer's supplementary groups.
    pub proc_root: std::path::PathBuf,
}

impl PrivilegeRule {
    /// Builds a caller from SO_PEERCRED values.
    pub fn caller(&self, pid: u32, uid: u32, gid: u32) -> Caller {
        let privileged = uid == 0
            || self.group_gid.is_some_and(|g| {
                g == gid || (pid != 0 && supplementary_groups(&self.proc_root, pid).contains(&g))
            });
        Caller {
            pid,
            uid,
            gid,
            privileged,
        }
    }
}

/// Supplementary groups of a process (empty if unreadable).
fn supplementary_groups(proc_root: &Path, pid: u32) -> Vec<u32> {
    let Ok(status) = std::fs::read_to_string(proc_root.join(pid.to_string()).join("status")) else {
        return Vec::new();
    };
    status
        .lines()
        .find_map(|l| l.strip_prefix("Groups:"))
        .map(|g| {
            g.split_whitespace()
                .filter_map(|x| x.parse().ok())
                .collect()
        })
        .unwrap_or_default()
}

/// Owner of a live process by the ptrace rule: `Some(uid)` when its real,
/// effective and saved uids are all `uid`; `None` when the process does not
/// exist or its uids differ (a setuid program: nobody but privileged peers
/// may see it).
pub fn process_owner(proc_root: &Path, pid: u32) -> Option<u32> {
    let status = std::fs::read_to_string(proc_root.join(pid.to_string()).join("status")).ok()?;
    let uids: Vec<u32> = status
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))?
        .split_whitespace()
        .filter_map(|x| x.parse().ok())
        .collect();
    match uids.as_slice() {
        [real, effective, saved, ..] if real == effective && effective == saved => Some(*real),
        _ => None,
    }
}

/// Coarsening of machine-wide readings for one caller.
#[derive(Debug, Clone, Copy)]
pub struct Coarsening {
    /// Window grid step and minimum length (ns); 0 = none.
    pub window_ns: u64,
    /// Energy quantum (J); 0 = none.
    pub quantum_j: f64,
}

impl Coarsening {
    /// What applies to `caller` under `policy`.
    pub fn for_caller(caller: &Caller, policy: &PolicyConfig) -> Coarsening {
        if caller.privileged {
            Coarsening {
                window_ns: 0,
                quantum_j: 0.0,
            }
        } else {
            Coarsening {
                window_ns: policy.min_window_ms * 1_000_000,
                quantum_j: policy.energy_quantum_j,
            }
        }
    }

    /// Aligns `[from, to]` outward to the window grid, at least one window
    /// long, ending no later than the last grid point before `now` (a window
    /// still in progress would leak its partial energy). `None` when no
    /// whole window exists yet.
    pub fn interval(
        &self,
        from: MonotonicNs,
        to: MonotonicNs,
        now: MonotonicNs,
    ) -> Option<(MonotonicNs, MonotonicNs)> {
        if self.window_ns == 0 {
            return Some((from, to));
        }
        let w = self.window_ns;
        let last = self.floor(now).0;
        let mut end = to.0.div_ceil(w).saturating_mul(w).min(last);
        let mut start = (from.0 / w * w).min(end.saturating_sub(w));
        if end < w {
            return None;
        }
        if end - start < w {
            start = end - w;
        }
        if start > end {
            end = start;
        }
        Some((MonotonicNs(start), MonotonicNs(end)))
    }

    /// The last grid point at or before `t` (`t` itself without a grid).
    pub fn floor(&self, t: MonotonicNs) -> MonotonicNs {
        match t.0.checked_div(self.window_ns) {
            Some(windows) => MonotonicNs(windows * self.window_ns),
            None => t,
        }
    }

    /// Rounds an energy figure to the quantum.
    pub fn energy(&self, joules: f64) -> f64 {
        if self.quantum_j > 0.0 {
            (joules / self.quantum_j).round() * self.quantum_j
        } else {
            joules
        }
    }

    /// The limits announced to the caller in the handshake.
    pub fn announce(&self, policy: &PolicyConfig, privileged: bool) -> ClientPolicy {
        ClientPolicy {
            min_window_ns: self.window_ns,
            energy_quantum_j: self.quantum_j,
            requests_per_sec: if privileged {
                f64::INFINITY
            } else {
                policy.requests_per_sec
            },
        }
    }
}

/// Per-uid token buckets.
#[derive(Debug)]
pub struct RateLimiter {
    rate_per_ns: f64,
    burst: f64,
    buckets: Mutex<HashMap<u32, (f64, MonotonicNs)>>,
}

impl RateLimiter {
    /// `rate_per_sec` sustained, `burst` at once.
    pub fn new(rate_per_sec: f64, burst: f64) -> RateLimiter {
        RateLimiter {
            rate_per_ns: rate_per_sec / 1e9,
            burst,
            buckets: Mutex::new(HashMap::new()),
        }
    }

    /// Takes one token for `uid` at `now`; `false` when the bucket is empty.
    pub fn allow(&self, uid: u32, now: MonotonicNs) -> bool {
        self.take(uid, now, 1.0)
    }

    /// Takes `cost` tokens for `uid` at `now` (work that costs more than a
    /// request, such as a breakdown over many spans); `false`, taking
    /// nothing, when the bucket holds fewer. A cost above the burst is
    /// capped at the burst, so any request can eventually run.
    pub fn take(&self, uid: u32, now: MonotonicNs, cost: f64) -> bool {
        let cost = cost.clamp(0.0, self.burst);
        let mut buckets = self.buckets.lock().unwrap_or_else(|p| p.into_inner());
        let (tokens, last) = buckets.entry(uid).or_insert((self.burst, now));
        *tokens = (*tokens + now.saturating_sub(*last) as f64 * self.rate_per_ns).min(self.burst);
        *last = now;
        if *tokens >= cost {
            *tokens -= cost;
            true
        } else {
            false
        }
    }
}

/// Breakdowns running at once: a breakdown over a million spans takes
/// seconds of CPU and hundreds of MiB, so unprivileged callers may run only
/// a few at a time (issue 12: 16 at once took 27 s each and +1.6 GiB within
/// the request rate). Privileged callers are not counted.
#[derive(Debug)]
pub struct BreakdownGate {
    max_total: usize,
    max_per_uid: usize,
    running: Mutex<(usize, HashMap<u32, usize>)>,
}

/// A running breakdown's place in the [`BreakdownGate`]; freed on drop.
#[derive(Debug)]
pub struct BreakdownPermit<'a> {
    gate: &'a BreakdownGate,
    uid: Option<u32>,
}

impl BreakdownGate {
    /// At most `max_total` unprivileged breakdowns at once, `max_per_uid`
    /// of them for one uid.
    pub fn new(max_total: usize, max_per_uid: usize) -> BreakdownGate {
        BreakdownGate {
            max_total,
            max_per_uid,
            running: Mutex::new((0, HashMap::new())),
        }
    }

    /// A place for `caller`'s breakdown, or `None` when the limits are
    /// reached (the caller is told to retry).
    pub fn enter(&self, caller: &Caller) -> Option<BreakdownPermit<'_>> {
        if caller.privileged {
            return Some(BreakdownPermit {
                gate: self,
                uid: None,
            });
        }
        let mut running = self.running.lock().unwrap_or_else(|p| p.into_inner());
        let mine = running.1.get(&caller.uid).copied().unwrap_or(0);
        if running.0 >= self.max_total || mine >= self.max_per_uid {
            return None;
        }
        running.0 += 1;
        *running.1.entry(caller.uid).or_default() += 1;
        Some(BreakdownPermit {
            gate: self,
            uid: Some(caller.uid),
        })
    }
}

impl Drop for BreakdownPermit<'_> {
    fn drop(&mut self) {
        let Some(uid) = self.uid else { return };
        let mut running = self.gate.running.lock().unwrap_or_else(|p| p.into_inner());
        running.0 = running.0.saturating_sub(1);
        if let Some(n) = running.1.get_mut(&uid) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                running.1.remove(&uid);
            }
        }
    }
}

/// Connections held at once, per uid and in all, with slots kept for
/// privileged peers (issue 12: 256 idle connections of one uid locked
/// everyone out, root included). A peer over a limit is answered
/// `ResourceExhausted` and closed at once instead of waiting in the
/// backlog.
#[derive(Debug)]
pub struct ConnectionSlots {
    max_total: usize,
    max_per_uid: usize,
    reserved_privileged: usize,
    held: Mutex<(usize, HashMap<u32, usize>)>,
}

/// One held connection slot; freed on drop.
#[derive(Debug)]
pub struct ConnectionSlot {
    slots: std::sync::Arc<ConnectionSlots>,
    uid: u32,
}

/// Why a connection was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SlotRefusal {
    /// The uid holds its maximum.
    PerUid(usize),
    /// Every slot open to this peer is taken.
    Total(usize),
}

impl ConnectionSlots {
    /// `max_total` connections, `max_per_uid` per unprivileged uid, the
    /// last `reserved_privileged` of the total for privileged peers only.
    pub fn new(
        max_total: usize,
        max_per_uid: usize,
        reserved_privileged: usize,
    ) -> ConnectionSlots {
        ConnectionSlots {
            max_total,
            max_per_uid,
            reserved_privileged: reserved_privileged.min(max_total.saturating_sub(1)),
            held: Mutex::new((0, HashMap::new())),
        }
    }

    /// A slot for `caller`, or why not.
    pub fn acquire(
        self: &std::sync::Arc<Self>,
        caller: &Caller,
    ) -> Result<ConnectionSlot, SlotRefusal> {
        let mut held = self.held.lock().unwrap_or_else(|p| p.into_inner());
        if caller.privileged {
            if held.0 >= self.max_total {
                return Err(SlotRefusal::Total(self.max_total));
            }
        } else {
            let open = self.max_total - self.reserved_privileged;
            if held.0 >= open {
                return Err(SlotRefusal::Total(open));
            }
            if held.1.get(&caller.uid).copied().unwrap_or(0) >= self.max_per_uid {
                return Err(SlotRefusal::PerUid(self.max_per_uid));
            }
        }
        held.0 += 1;
        *held.1.entry(caller.uid).or_default() += 1;
        Ok(ConnectionSlot {
            slots: self.clone(),
            uid: caller.uid,
        })
    }

    /// Connections held now, in all.
    pub fn held(&self) -> usize {
        self.held.lock().unwrap_or_else(|p| p.into_inner()).0
    }
}

impl Drop for ConnectionSlot {
    fn drop(&mut self) {
        let mut held = self.slots.held.lock().unwrap_or_else(|p| p.into_inner());
        held.0 = held.0.saturating_sub(1);
        if let Some(n) = held.1.get_mut(&self.uid) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                held.1.remove(&self.uid);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: u64 = 1_000_000;

    #[test]
    fn unprivileged_intervals_are_aligned_and_at_least_one_window() {
        let c = Coarsening {
            window_ns: 100 * MS,
            quantum_j: 0.01,
        };
        let now = MonotonicNs(10_050 * MS);
        // A 1 ms query becomes the 100 ms grid window around it.
        assert_eq!(
            c.interval(MonotonicNs(5_001 * MS), MonotonicNs(5_002 * MS), now),
            Some((MonotonicNs(5_000 * MS), MonotonicNs(5_100 * MS)))
        );
        // A window reaching into the current, unfinished one is cut back.
        let (s, e) = c
            .interval(MonotonicNs(9_990 * MS), MonotonicNs(10_049 * MS), now)
            .unwrap();
        assert_eq!(e, MonotonicNs(10_000 * MS));
        assert_eq!(s, MonotonicNs(9_900 * MS));
        // Nothing before the first whole window.
        assert_eq!(
            c.interval(MonotonicNs(0), MonotonicNs(1), MonotonicNs(50 * MS)),
            None
        );
        assert!((c.energy(1.234_56) - 1.23).abs() < 1e-9);
    }

    #[test]
    fn privileged_callers_get_exact_intervals() {
        let caller = Caller {
            pid: 1,
            uid: 0,
            gid: 0,
            privileged: true,
        };
        let c = Coarsening::for_caller(&caller, &PolicyConfig::default());
        assert_eq!(
            c.interval(MonotonicNs(3), MonotonicNs(7), MonotonicNs(9)),
            Some((MonotonicNs(3), MonotonicNs(7)))
        );
        assert_eq!(c.energy(1.234_56), 1.234_56);
    }

    #[test]
    fn rate_limiter_allows_burst_then_refills() {
        let rl = RateLimiter::new(10.0, 3.0);
        let t = MonotonicNs(1_000_000_000);
        assert!(rl.allow(7, t) && rl.allow(7, t) && rl.allow(7, t));
        assert!(!rl.allow(7, t));
        assert!(rl.allow(8, t), "buckets are per uid");
        assert!(
            rl.allow(7, t.saturating_add_ns(100 * MS)),
            "one token after 100 ms at 10/s"
        );
    }

    #[test]
    fn own_process_is_owned_by_our_uid() {
        let me = nix::unistd::getuid().as_raw();
        assert_eq!(
            process_owner(Path::new("/proc"), std::process::id()),
            Some(me)
        );
        assert_eq!(process_owner(Path::new("/proc"), u32::MAX), None);
    }
}
