//! Per-process CPU activity for energy attribution: which share of the
//! machine's CPU time a tracked process (and, if asked, its descendants)
//! used over an interval.
//!
//! A dedicated OS thread samples, every `period_ns` (10 ms by default):
//! machine-wide busy and total CPU time from `<proc_root>/stat`, and for
//! each tracked process tree the cumulative CPU time of its members. A
//! tree's cumulative CPU time is the sum over every member ever seen; a
//! member that exits keeps the last value read for it, so children that end
//! mid-run still count. Per-member CPU time comes from the perf task-clock
//! (nanoseconds, one counter per thread, see [`crate::perf`]) where perf is
//! usable, and from procfs `utime + stime` (clock ticks) otherwise.
//!
//! Descendants are found through `<pid>/task/<tid>/children` of every member
//! thread. An exited child is counted once: it stays listed there as a
//! zombie until its parent reaps it, and is not added back meanwhile. Limit: a child that starts and exits between two samples is never
//! seen (its time shows up only in its parent's `cutime`, which is not
//! counted to avoid double counting children that were seen).
//!
//! The sampling thread reads `/proc` without holding any lock; it takes the
//! write lock only to append the new samples, so queries wait at most for
//! a few pushes.

use crate::perf::ThreadClocks;
use crate::procstat::{ns_per_tick, ProcStatReader};
use crate::ring::TimeRing;
use serde::Deserialize;
use shared::MonotonicNs;
use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::thread::JoinHandle;
use thiserror::Error;

/// Activity tracker settings.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ActivityConfig {
    /// Where procfs is mounted. Default `/proc`.
    pub proc_root: PathBuf,
    /// Sampling period. Default 10 ms (one clock tick).
    pub period_ns: u64,
    /// How far back the CPU history reaches. Default 10 minutes.
    pub history_window_ns: u64,
    /// Use perf task-clock for per-process CPU time when perf allows it.
    /// Default true. Only meaningful with `proc_root = /proc` (perf counts
    /// real threads); with another root, procfs ticks are used.
    pub use_task_clock: bool,
}

impl Default for ActivityConfig {
    fn default() -> Self {
        Self {
            proc_root: PathBuf::from("/proc"),
            period_ns: 10_000_000,
            history_window_ns: 600_000_000_000,
            use_task_clock: true,
        }
    }
}

/// Why a process cannot be tracked.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum TrackError {
    /// No such process.
    #[error("process {pid} not found")]
    NotFound {
        /// The pid.
        pid: u32,
    },
    /// The process exists but its stat could not be read.
    #[error("cannot read process {pid}: {reason}")]
    Unreadable {
        /// The pid.
        pid: u32,
        /// The error.
        reason: String,
    },
}

/// CPU time of a tracked process and of the machine over an interval.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ProcessCpu {
    /// CPU time of the process (and its descendants if tracked with them).
    pub process_cpu_ns: u64,
    /// Busy CPU time of the whole machine.
    pub machine_busy_cpu_ns: u64,
    /// All CPU time of the machine (busy + idle + iowait + steal): CPUs ×
    /// wall time.
    pub machine_total_cpu_ns: u64,
    /// Fraction (0..=1) of the interval covered by both histories.
    pub coverage: f64,
}

/// What the readers see of one tracked tree.
#[derive(Debug)]
struct TrackedView {
    include_children: bool,
    since: MonotonicNs,
    exited: bool,
    /// (t, cumulative CPU ns of the tree).
    series: TimeRing<u64>,
}

#[derive(Debug)]
struct SharedState {
    tracked: HashMap<u32, TrackedView>,
    /// (t, (machine busy ns, machine total ns)).
    machine: TimeRing<(u64, u64)>,
}

#[derive(Debug)]
struct Inner {
    config: ActivityConfig,
    ring_capacity: usize,
    stop: AtomicBool,
    state: RwLock<SharedState>,
}

impl Inner {
    fn read(&self) -> std::sync::RwLockReadGuard<'_, SharedState> {
        self.state.read().unwrap_or_else(PoisonError::into_inner)
    }
    fn write(&self) -> std::sync::RwLockWriteGuard<'_, SharedState> {
        self.state.write().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Tracks per-process CPU activity on its own sampling thread.
/// `Send + Sync`: the daemon keeps it in an `Arc`.
#[derive(Debug)]
pub struct ActivityTracker {
    inner: Arc<Inner>,
    thread: Mutex<Option<JoinHandle<()>>>,
}

/// One process's identity and CPU time as read from procfs.
#[derive(Debug, Clone, Copy)]
struct ProcStatus {
    start_ticks: u64,
    cpu_ns: u64,
    zombie: bool,
}

fn read_status(proc_root: &Path, pid: u32) -> Result<ProcStatus, TrackError> {
    let process = procfs::process::Process::new_with_root(proc_root.join(pid.to_string()))
        .map_err(|e| match e {
            procfs::ProcError::NotFound(_) => TrackError::NotFound { pid },
            other => TrackError::Unreadable {
                pid,
                reason: other.to_string(),
            },
        })?;
    let stat = process.stat().map_err(|e| match e {
        procfs::ProcError::NotFound(_) => TrackError::NotFound { pid },
        other => TrackError::Unreadable {
            pid,
            reason: other.to_string(),
        },
    })?;
    Ok(ProcStatus {
        start_ticks: stat.starttime,
        cpu_ns: (stat.utime + stat.stime) * ns_per_tick(),
        zombie: stat.state == 'Z' || stat.state == 'X',
    })
}

/// Children of every thread of `pid`.
fn children_of(proc_root: &Path, pid: u32) -> Vec<u32> {
    let Ok(tasks) = std::fs::read_dir(proc_root.join(pid.to_string()).join("task")) else {
        return Vec::new();
    };
    let mut children = Vec::new();
    for task in tasks.flatten() {
        // A thread that exits while we list is simply skipped.
        if let Ok(text) = std::fs::read_to_string(task.path().join("children")) {
            children.extend(
                text.split_whitespace()
                    .filter_map(|c| c.parse::<u32>().ok()),
            );
        }
    }
    children
}

/// Sampling-thread state of one member process.
#[derive(Debug)]
struct Member {
    start_ticks: u64,
    /// Last CPU time read (kept after exit).
    cpu_ns: u64,
    /// Fine clocks, when perf task-clock is in use.
    clocks: Option<ThreadClocks>,
}

/// Sampling-thread state of one tracked tree.
#[derive(Debug)]
struct TreeWork {
    include_children: bool,
    root_exited: bool,
    members: HashMap<u32, Member>,
    /// CPU time of members that exited and were dropped from `members`.
    exited_cpu_ns: u64,
    /// Members already counted as exited, by (pid, start time): an exited
    /// child stays listed in its parent's `children` as a zombie until it
    /// is reaped, and must not be counted again then.
    counted_exits: HashSet<(u32, u64)>,
}

/// Reads one member's CPU time; `None` once it has exited.
fn read_member(proc_root: &Path, pid: u32, member: &mut Member) -> Option<u64> {
    let status = read_status(proc_root, pid).ok()?;
    if status.start_ticks != member.start_ticks {
        return None; // the pid was reused: our process is gone
    }
    let cpu_ns = match member.clocks.as_mut() {
        Some(clocks) => clocks.read(proc_root, pid),
        None => status.cpu_ns,
    };
    // CPU time never goes back (a thread counter that vanished is kept by ThreadClocks).
    member.cpu_ns = member.cpu_ns.max(cpu_ns);
    if status.zombie {
        None
    } else {
        Some(member.cpu_ns)
    }
}

impl TreeWork {
    fn new(
        proc_root: &Path,
        root: u32,
        include_children: bool,
        use_task_clock: bool,
    ) -> Result<Self, TrackError> {
        let status = read_status(proc_root, root)?;
        let mut work = TreeWork {
            include_children,
            root_exited: status.zombie,
            members: HashMap::new(),
            exited_cpu_ns: 0,
            counted_exits: HashSet::new(),
        };
        work.add_member(proc_root, root, status, use_task_clock);
        Ok(work)
    }

    fn add_member(&mut self, proc_root: &Path, pid: u32, status: ProcStatus, use_task_clock: bool) {
        let clocks = use_task_clock
            .then(|| ThreadClocks::open(proc_root, pid, status.cpu_ns))
            .flatten();
        self.members.insert(
            pid,
            Member {
                start_ticks: status.start_ticks,
                cpu_ns: status.cpu_ns,
                clocks,
            },
        );
    }

    /// Refreshes members and returns the tree's cumulative CPU time.
    fn sample(&mut self, proc_root: &Path, root: u32, use_task_clock: bool) -> u64 {
        let mut gone = Vec::new();
        let mut alive = Vec::new();
        for (&pid, member) in self.members.iter_mut() {
            match read_member(proc_root, pid, member) {
                Some(_) => alive.push(pid),
                None => gone.push(pid),
            }
        }
        for pid in gone {
            if pid == root {
                self.root_exited = true;
                continue; // the root stays: its value is part of the history
            }
            if let Some(m) = self.members.remove(&pid) {
                self.exited_cpu_ns += m.cpu_ns;
                self.counted_exits.insert((pid, m.start_ticks));
            }
        }
        if self.include_children {
            // Breadth-first over live members: new children, then theirs.
            let mut listed = HashSet::new();
            let mut frontier = alive;
            while let Some(pid) = frontier.pop() {
                for child in children_of(proc_root, pid) {
                    listed.insert(child);
                    if self.members.contains_key(&child) {
                        continue;
                    }
                    if let Ok(status) = read_status(proc_root, child) {
                        if self.counted_exits.contains(&(child, status.start_ticks)) {
                            continue; // a zombie counted when it exited
                        }
                        // A child first seen as a zombie is added once: its
                        // CPU time counts at the next sample, then it is done.
                        self.add_member(proc_root, child, status, use_task_clock);
                        frontier.push(child);
                    }
                }
            }
            // Once reaped, a pid is no longer listed and cannot come back.
            self.counted_exits.retain(|(pid, _)| listed.contains(pid));
        }
        self.exited_cpu_ns + self.members.values().map(|m| m.cpu_ns).sum::<u64>()
    }
}

impl ActivityTracker {
    /// Starts the sampling thread.
    pub fn start(config: ActivityConfig) -> ActivityTracker {
        let period_ns = config.period_ns.max(1);
        let ring_capacity =
            crate::history::EnergyHistory::capacity_for(config.history_window_ns, period_ns);
        let inner = Arc::new(Inner {
            config: ActivityConfig {
                period_ns,
                ..config
            },
            ring_capacity,
            stop: AtomicBool::new(false),
            state: RwLock::new(SharedState {
                tracked: HashMap::new(),
                machine: TimeRing::new(ring_capacity),
            }),
        });
        let worker = Arc::clone(&inner);
        let thread = std::thread::Builder::new()
            .name("activity".to_string())
            .spawn(move || run(&worker))
            .map_err(|e| tracing::error!(error = %e, "cannot start the activity thread"))
            .ok();
        ActivityTracker {
            inner,
            thread: Mutex::new(thread),
        }
    }

    /// Starts tracking `pid` (and its descendants if `include_children`).
    /// Tracking an already tracked pid updates `include_children` and keeps
    /// its history.
    pub fn track(&self, pid: u32, include_children: bool) -> Result<(), TrackError> {
        // Checked here so the caller gets NotFound synchronously.
        let status = read_status(&self.inner.config.proc_root, pid)?;
        if status.zombie {
            return Err(TrackError::NotFound { pid });
        }
        let mut state = self.inner.write();
        let capacity = self.inner.ring_capacity;
        let view = state.tracked.entry(pid).or_insert_with(|| TrackedView {
            include_children,
            since: MonotonicNs::now(),
            exited: false,
            series: TimeRing::new(capacity),
        });
        view.include_children = include_children;
        Ok(())
    }

    /// Stops tracking `pid` and drops its history; false if it was not tracked.
    pub fn untrack(&self, pid: u32) -> bool {
        self.inner.write().tracked.remove(&pid).is_some()
    }

    /// Whether `pid` is tracked.
    pub fn is_tracked(&self, pid: u32) -> bool {
        self.inner.read().tracked.contains_key(&pid)
    }

    /// Tracked root pids, sorted.
    pub fn tracked(&self) -> Vec<u32> {
        let mut pids: Vec<u32> = self.inner.read().tracked.keys().copied().collect();
        pids.sort_unstable();
        pids
    }

    /// When tracking of `pid` started.
    pub fn tracked_since(&self, pid: u32) -> Option<MonotonicNs> {
        self.inner.read().tracked.get(&pid).map(|v| v.since)
    }

    /// Whether the tracked root process has exited (its history is kept
    /// until [`Self::untrack`]). False for untracked pids.
    pub fn exited(&self, pid: u32) -> bool {
        self.inner
            .read()
            .tracked
            .get(&pid)
            .is_some_and(|v| v.exited)
    }

    /// CPU time of the tracked process (+ descendants if asked) and of the
    /// whole machine over `[from, to]`, interpolated between samples.
    pub fn cpu_between(&self, pid: u32, from: MonotonicNs, to: MonotonicNs) -> Option<ProcessCpu> {
        if to < from {
            return None;
        }
        let state = self.inner.read();
        let view = state.tracked.get(&pid)?;
        let (p_from, p_to, p_cov) = interval(&view.series, from, to, |v| v as f64)?;
        let (b_from, b_to, m_cov) = interval(&state.machine, from, to, |v| v.0 as f64)?;
        let (t_from, t_to, _) = interval(&state.machine, from, to, |v| v.1 as f64)?;
        Some(ProcessCpu {
            process_cpu_ns: (p_to - p_from).max(0.0).round() as u64,
            machine_busy_cpu_ns: (b_to - b_from).max(0.0).round() as u64,
            machine_total_cpu_ns: (t_to - t_from).max(0.0).round() as u64,
            coverage: p_cov.min(m_cov),
        })
    }

    /// `(t, cumulative process CPU ns)` samples in `[from, to]` with the
    /// neighbours just outside.
    pub fn cpu_samples(
        &self,
        pid: u32,
        from: MonotonicNs,
        to: MonotonicNs,
    ) -> Vec<(MonotonicNs, u64)> {
        let state = self.inner.read();
        state
            .tracked
            .get(&pid)
            .map(|v| {
                v.series
                    .range_with_neighbours(from.as_ns(), to.as_ns())
                    .into_iter()
                    .map(|(t, c)| (MonotonicNs(t), c))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// `(t, machine busy ns, machine total ns)` samples in `[from, to]` with
    /// the neighbours just outside.
    pub fn machine_samples(
        &self,
        from: MonotonicNs,
        to: MonotonicNs,
    ) -> Vec<(MonotonicNs, u64, u64)> {
        self.inner
            .read()
            .machine
            .range_with_neighbours(from.as_ns(), to.as_ns())
            .into_iter()
            .map(|(t, (busy, total))| (MonotonicNs(t), busy, total))
            .collect()
    }

    /// Stops and joins the sampling thread. Idempotent; also run on drop.
    pub fn shutdown(&self) {
        self.inner.stop.store(true, Ordering::SeqCst);
        let handle = self
            .thread
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        if let Some(h) = handle {
            if h.join().is_err() {
                tracing::error!("the activity thread panicked");
            }
        }
    }
}

impl Drop for ActivityTracker {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// Interpolated values of a cumulative series at both ends of `[from, to]`
/// and the covered fraction; `None` if the series is empty.
fn interval<T: Copy>(
    ring: &TimeRing<T>,
    from: MonotonicNs,
    to: MonotonicNs,
    value: impl Fn(T) -> f64,
) -> Option<(f64, f64, f64)> {
    let (first_t, _) = ring.first()?;
    let (last_t, _) = ring.last()?;
    let at = |t_ns: u64| -> f64 {
        let n = ring.partition(t_ns);
        if n == 0 {
            return ring.first().map_or(0.0, |(_, v)| value(v));
        }
        let Some((t0, v0)) = ring.get(n - 1) else {
            return 0.0;
        };
        match ring.get(n) {
            Some((t1, v1)) if t1 > t0 => {
                let f = (t_ns - t0) as f64 / (t1 - t0) as f64;
                value(v0) + f * (value(v1) - value(v0))
            }
            _ => value(v0),
        }
    };
    let (from_ns, to_ns) = (from.as_ns(), to.as_ns());
    let coverage = if to_ns == from_ns {
        f64::from(u8::from((first_t..=last_t).contains(&from_ns)))
    } else {
        to_ns.min(last_t).saturating_sub(from_ns.max(first_t)) as f64 / (to_ns - from_ns) as f64
    };
    Some((at(from_ns), at(to_ns), coverage))
}

/// Body of the sampling thread.
fn run(inner: &Inner) {
    let proc_root = inner.config.proc_root.clone();
    let use_task_clock = inner.config.use_task_clock && proc_root == Path::new("/proc");
    let mut machine = match ProcStatReader::open(&proc_root) {
        Ok(r) => Some(r),
        Err(e) => {
            tracing::error!(error = %e, "machine CPU time unavailable; activity shares cannot be computed");
            None
        }
    };
    let mut work: HashMap<u32, TreeWork> = HashMap::new();
    let period_ns = inner.config.period_ns;
    let mut deadline = MonotonicNs::now();
    while !inner.stop.load(Ordering::Relaxed) {
        // Which trees to sample (a short read lock).
        let wanted: Vec<(u32, bool)> = inner
            .read()
            .tracked
            .iter()
            .map(|(&pid, v)| (pid, v.include_children))
            .collect();
        work.retain(|pid, _| wanted.iter().any(|(p, _)| p == pid));
        let mut results = Vec::with_capacity(wanted.len());
        for (pid, include_children) in wanted {
            let tree = match work.entry(pid) {
                std::collections::hash_map::Entry::Occupied(e) => e.into_mut(),
                std::collections::hash_map::Entry::Vacant(e) => {
                    match TreeWork::new(&proc_root, pid, include_children, use_task_clock) {
                        Ok(t) => e.insert(t),
                        Err(_) => {
                            // Gone between track() and now: an exit with no CPU history.
                            results.push((pid, None, true));
                            continue;
                        }
                    }
                }
            };
            tree.include_children = include_children;
            let cumulative = tree.sample(&proc_root, pid, use_task_clock);
            results.push((pid, Some(cumulative), tree.root_exited));
        }
        let t = MonotonicNs::now();
        let machine_now = machine.as_mut().and_then(|m| m.read().ok());
        {
            let mut state = inner.write();
            if let Some(m) = machine_now {
                state.machine.push(t.as_ns(), (m.busy_ns, m.total_ns));
            }
            for (pid, cumulative, exited) in results {
                if let Some(view) = state.tracked.get_mut(&pid) {
                    if let Some(c) = cumulative {
                        view.series.push(t.as_ns(), c);
                    }
                    view.exited = exited;
                }
            }
        }
        deadline = deadline.saturating_add_ns(period_ns);
        let now = MonotonicNs::now();
        if now > deadline {
            deadline =
                deadline.saturating_add_ns((now.saturating_sub(deadline) / period_ns) * period_ns);
        }
        crate::engine::sleep_until(deadline, &inner.stop);
    }
}
