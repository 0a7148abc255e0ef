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

use crate::perf::{thread_ids, ThreadClocks};
use crate::procstat::{ns_per_tick, PidStat, PidStatFile, ProcStatReader};
use crate::ring::TimeRing;
use serde::Deserialize;
use shared::MonotonicNs;
use std::collections::{HashMap, HashSet};
use std::fs::File;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, PoisonError, RwLock};
use std::thread::JoinHandle;
use thiserror::Error;

/// Activity tracker settings.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ActivityConfig {
    /// Where procfs is mounted. Default `/proc`.
    pub proc_root: PathBuf,
    /// Sampling period while at least one process is tracked. Default
    /// 10 ms (one clock tick).
    pub period_ns: u64,
    /// Sampling period of the machine's CPU time while nothing is tracked.
    /// Default 100 ms: an idle daemon wakes 10 times a second instead of
    /// 100 (issue 12, item 10). Breakdowns only need the machine's history
    /// at the tracked rate while a process is tracked; before that, it
    /// serves the 30 s idle-power look-back, where 100 ms is ample. A
    /// `track` call wakes the thread at once, so a new process's history
    /// starts without waiting for the idle period.
    pub idle_period_ns: u64,
    /// How far back the CPU history reaches. Default 10 minutes.
    pub history_window_ns: u64,
    /// Use perf task-clock for per-process CPU time when perf allows it.
    /// Default true. Only meaningful with `proc_root = /proc` (perf counts
    /// real threads); with another root, procfs ticks are used.
    pub use_task_clock: bool,
    /// Per-thread task-clock counters (one perf descriptor each) kept open
    /// per tracked tree. Default 256: a trainer's thread pool fits many
    /// times over, while a hostile 1 000-thread process cannot make the
    /// daemon hold 1 000 descriptors per tree (issue 12: two 1 100-thread
    /// processes exhausted a 1 024-descriptor limit). Members beyond it are
    /// counted from procfs (10 ms ticks) instead.
    pub max_perf_threads_per_tree: usize,
    /// The same bound over all trees together. Default 8 192, well inside
    /// the unit's `LimitNOFILE=65536` with room for connections.
    pub max_perf_threads_total: usize,
}

impl Default for ActivityConfig {
    fn default() -> Self {
        Self {
            proc_root: PathBuf::from("/proc"),
            period_ns: 10_000_000,
            idle_period_ns: 100_000_000,
            history_window_ns: 600_000_000_000,
            use_task_clock: true,
            max_perf_threads_per_tree: 256,
            max_perf_threads_total: 8_192,
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
    /// A cgroup's `cpu.stat` could not be opened or read.
    #[error("cannot read {}/cpu.stat: {reason}", dir.display())]
    CgroupUnreadable {
        /// The cgroup directory.
        dir: PathBuf,
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

/// How a tracked tree's CPU time was counted, which bounds how finely it
/// can be split in time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CpuTimeSource {
    /// Every member by per-thread perf task-clock counters (nanoseconds).
    TaskClock,
    /// At least one member, at some time, only by `/proc/<pid>/stat`
    /// ticks: perf refused or not asked for, or the tree past its counter
    /// cap.
    ProcfsTicks,
    /// A control group, by its `cpu.stat` `usage_usec` (microseconds,
    /// every task of the cgroup and its descendants).
    CgroupCpuStat,
}

/// Which tracked tree a query means. Trees tracked with
/// [`ActivityTracker::track`] are keyed by their pid (`key == pid`);
/// [`ActivityTracker::track_process`] keys a tree by the caller's own key
/// and binds it to one process *instance* (pid and start time), so a pid
/// reused by another process after the first exits is a different tree:
/// its history never mixes with, or replaces, the first one's.
pub type TreeKey = u64;

/// What the readers see of one tracked tree.
#[derive(Debug)]
struct TrackedView {
    /// The root process (0 for a cgroup).
    pid: u32,
    /// The cgroup directory, for a tracked cgroup.
    cgroup: Option<PathBuf>,
    /// Its start time (clock ticks since boot) when bound to one instance.
    start_ticks: Option<u64>,
    include_children: bool,
    since: MonotonicNs,
    exited: bool,
    /// How its CPU time was counted so far.
    cpu_time_source: CpuTimeSource,
    /// (t, cumulative CPU ns of the tree).
    series: TimeRing<u64>,
}

#[derive(Debug)]
struct SharedState {
    tracked: HashMap<TreeKey, TrackedView>,
    /// (t, (machine busy ns, machine total ns)).
    machine: TimeRing<(u64, u64)>,
}

#[derive(Debug)]
struct Inner {
    config: ActivityConfig,
    ring_capacity: usize,
    stop: AtomicBool,
    state: RwLock<SharedState>,
    /// Set (and signalled) when a tree is tracked, to end an idle sleep.
    wake: (Mutex<bool>, Condvar),
}

impl Inner {
    /// Ends an idle sleep of the sampling thread now.
    fn wake_up(&self) {
        *self.wake.0.lock().unwrap_or_else(PoisonError::into_inner) = true;
        self.wake.1.notify_all();
    }

    /// Sleeps until `deadline` unless woken (a tree tracked) or stopped.
    fn idle_sleep_until(&self, deadline: MonotonicNs) {
        let mut woken = self.wake.0.lock().unwrap_or_else(PoisonError::into_inner);
        loop {
            let now = MonotonicNs::now();
            if *woken || now >= deadline || self.stop.load(Ordering::Relaxed) {
                break;
            }
            // Bounded so that a stop request is seen promptly.
            let wait =
                std::time::Duration::from_nanos(deadline.saturating_sub(now).min(50_000_000));
            woken = self
                .wake
                .1
                .wait_timeout(woken, wait)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
        *woken = false;
    }

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

/// What `track` checks of a process before accepting it (through the
/// `procfs` crate, for its error kinds; the sampling loop reads
/// [`PidStatFile`]s instead).
#[derive(Debug, Clone, Copy)]
struct ProcStatus {
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
        zombie: stat.state == 'Z' || stat.state == 'X',
    })
}

/// How often, in samples, a member's `stat` is read and its threads listed
/// again even when nothing says they changed. At the default 10 ms period:
/// every 100 ms.
///
/// Between those, a member with perf task-clock and a pidfd costs, per
/// sample: its share of one `poll` over all members' pidfds (exit
/// detection), one `fstat` of its open `task` directory (whose link count
/// follows the thread count), one perf read per thread and one `pread` per
/// thread's `children`: no `/proc/<pid>/stat` formatting, no directory
/// listing, no path lookup. A thread that exits and another that starts
/// between two samples leave the count unchanged; the newcomer is then
/// counted from the next listing, so up to this many periods of its CPU
/// time are missed by the counters — and recovered at that listing, whose
/// `stat` read (all threads, to the tick) raises the clock to it.
const THREAD_RELIST_SAMPLES: u32 = 10;

/// Opens a pidfd for `pid` (Linux 5.3+): it becomes readable when the
/// process exits. `None` where the kernel has none.
fn pidfd_open(pid: u32) -> Option<OwnedFd> {
    // SAFETY: pidfd_open(pid_t, unsigned int) passes no memory; it returns
    // a new descriptor or -1.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid as libc::pid_t, 0u32) };
    if fd < 0 {
        return None;
    }
    // SAFETY: `fd` was just returned by the kernel and nothing else owns it.
    Some(unsafe { OwnedFd::from_raw_fd(fd as RawFd) })
}

/// For each pidfd, whether its process may have exited (readable now).
/// One `poll` call, no waiting. If `poll` itself fails, every entry is
/// `true`, so callers take their exact (slower) path.
fn exited_now(pidfds: &[RawFd]) -> Vec<bool> {
    let mut polled: Vec<libc::pollfd> = pidfds
        .iter()
        .map(|&fd| libc::pollfd {
            fd,
            events: libc::POLLIN,
            revents: 0,
        })
        .collect();
    // SAFETY: `polled` is a live, exclusively borrowed array of
    // `polled.len()` pollfd structs; timeout 0 returns at once.
    let n = unsafe { libc::poll(polled.as_mut_ptr(), polled.len() as libc::nfds_t, 0) };
    if n < 0 {
        return vec![true; pidfds.len()];
    }
    polled.iter().map(|p| p.revents != 0).collect()
}

/// Pids listed in a `children` file, appended to `out`.
fn parse_children(text: &[u8], out: &mut Vec<u32>) {
    if let Ok(text) = std::str::from_utf8(text) {
        out.extend(
            text.split_ascii_whitespace()
                .filter_map(|c| c.parse::<u32>().ok()),
        );
    }
}

/// Sampling-thread state of one member process.
#[derive(Debug)]
struct Member {
    start_ticks: u64,
    /// Last CPU time read (kept after exit).
    cpu_ns: u64,
    /// Fine clocks, when perf task-clock is in use.
    clocks: Option<ThreadClocks>,
    /// `<pid>/stat`, kept open.
    stat: PidStatFile,
    /// Readable once the process exits (with task-clock only: the cheap
    /// path needs both).
    pidfd: Option<OwnedFd>,
    /// `<pid>/task`, kept open: its link count is 2 + the thread count.
    task_dir: Option<File>,
    /// Link count of `task_dir` when the threads were last listed.
    listed_task_links: u64,
    /// Threads as last listed.
    threads: Vec<u32>,
    /// `<pid>/task/<tid>/children` of those threads, kept open (empty when
    /// children are not tracked).
    children_files: Vec<File>,
    /// Thread count (from `stat`) when the threads were last listed.
    listed_num_threads: u64,
    samples_since_listing: u32,
    /// Threads this member may hold perf counters for (set by its tree
    /// before each refresh); past it the member drops its counters and is
    /// counted from procfs.
    perf_allowance: usize,
}

/// What one refresh of a member found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum MemberState {
    Alive,
    /// Exited (zombie or reaped) or replaced by another process with the
    /// same pid; its last CPU time is final.
    Gone,
}

impl Member {
    /// Opens the member's files; `None` if it is already gone.
    fn open(
        proc_root: &Path,
        pid: u32,
        use_task_clock: bool,
        perf_allowance: usize,
    ) -> Option<Member> {
        let mut stat = PidStatFile::open(proc_root, pid).ok()?;
        let first = stat.read()?;
        let cpu_ns = first.cpu_ticks * ns_per_tick();
        // Checked before opening: a process with more threads than the
        // allowance never makes the daemon open a counter per thread.
        let clocks = (use_task_clock && first.num_threads <= perf_allowance as u64)
            .then(|| ThreadClocks::open(proc_root, pid, cpu_ns))
            .flatten();
        let pidfd = clocks.as_ref().and_then(|_| pidfd_open(pid));
        Some(Member {
            start_ticks: first.start_ticks,
            cpu_ns,
            clocks,
            stat,
            pidfd,
            task_dir: File::open(proc_root.join(pid.to_string()).join("task")).ok(),
            listed_task_links: 0,
            threads: Vec::new(),
            children_files: Vec::new(),
            // Forces a listing at the first refresh.
            listed_num_threads: u64::MAX,
            samples_since_listing: 0,
            perf_allowance,
        })
    }

    /// Closes what an exited member no longer needs (counters, pidfd, the
    /// task directory and children files); its last CPU time stays.
    fn release_handles(&mut self) {
        self.clocks = None;
        self.pidfd = None;
        self.task_dir = None;
        self.threads.clear();
        self.children_files.clear();
    }

    /// Perf counters this member holds (one per listed thread).
    fn perf_threads(&self) -> usize {
        if self.clocks.is_some() {
            self.threads.len()
        } else {
            0
        }
    }

    fn list_threads(&mut self, proc_root: &Path, pid: u32, include_children: bool, stat: &PidStat) {
        self.threads = thread_ids(proc_root, pid);
        self.children_files.clear();
        if include_children {
            let task_dir = proc_root.join(pid.to_string()).join("task");
            for tid in &self.threads {
                // A thread that exits meanwhile is simply skipped.
                if let Ok(f) = File::open(task_dir.join(tid.to_string()).join("children")) {
                    self.children_files.push(f);
                }
            }
        }
        self.listed_num_threads = stat.num_threads;
        self.listed_task_links = self.task_links().unwrap_or(0);
        self.samples_since_listing = 0;
        if self.clocks.is_some() && self.threads.len() > self.perf_allowance {
            // Over the cap: close every counter of this member and count it
            // from procfs from now on (its CPU time so far is kept).
            tracing::debug!(
                pid,
                threads = self.threads.len(),
                allowance = self.perf_allowance,
                "too many threads for per-thread counters; counting from procfs"
            );
            self.clocks = None;
            self.pidfd = None;
        }
    }

    /// Link count of the open `task` directory (2 + threads), if known.
    fn task_links(&self) -> Option<u64> {
        self.task_dir
            .as_ref()
            .and_then(|d| d.metadata().ok())
            .map(|m| m.nlink())
    }

    /// Whether this sample can skip `stat`: task-clock gives the CPU time,
    /// the pidfd says the process has not exited, the thread count has not
    /// moved, and a full refresh is not due.
    fn can_skip_stat(&self, may_have_exited: bool, include_children: bool) -> bool {
        self.clocks.is_some()
            && self.pidfd.is_some()
            && !may_have_exited
            && self.samples_since_listing + 1 < THREAD_RELIST_SAMPLES
            && !(include_children && self.children_files.is_empty())
            && self
                .task_links()
                .is_some_and(|n| n == self.listed_task_links)
    }

    fn read_children(&mut self, children: &mut Vec<u32>) {
        let mut buf = [0u8; 4096];
        for f in &self.children_files {
            match f.read_at(&mut buf, 0) {
                Ok(n) => parse_children(&buf[..n], children),
                // The thread exited: list the threads again next time.
                Err(_) => self.samples_since_listing = THREAD_RELIST_SAMPLES,
            }
        }
    }

    /// Reads the member's CPU time, and its children's pids into
    /// `children` when asked. `may_have_exited` is the pidfd's word (true
    /// when there is none).
    fn refresh(
        &mut self,
        proc_root: &Path,
        pid: u32,
        include_children: bool,
        may_have_exited: bool,
        children: &mut Vec<u32>,
    ) -> MemberState {
        if self.can_skip_stat(may_have_exited, include_children) {
            self.samples_since_listing += 1;
            if let Some(clocks) = self.clocks.as_mut() {
                self.cpu_ns = self.cpu_ns.max(clocks.read_threads(&self.threads));
            }
            if include_children {
                self.read_children(children);
            }
            return MemberState::Alive;
        }
        let Some(stat) = self.stat.read() else {
            return MemberState::Gone; // reaped: the open file no longer reads
        };
        if stat.start_ticks != self.start_ticks {
            return MemberState::Gone; // defensive: the file is bound to our process
        }
        self.samples_since_listing += 1;
        let children_wanted_but_unopened = include_children && self.children_files.is_empty();
        if stat.num_threads != self.listed_num_threads
            || self.samples_since_listing >= THREAD_RELIST_SAMPLES
            || children_wanted_but_unopened
        {
            self.list_threads(proc_root, pid, include_children, &stat);
        }
        let ticks_ns = stat.cpu_ticks * ns_per_tick();
        let cpu_ns = match self.clocks.as_mut() {
            Some(clocks) => {
                // procfs counts every thread the process ever had, rounded
                // down to the tick, so it never exceeds the true CPU time;
                // the counters miss threads that worked before they were
                // listed (a pool started for one job and gone after it).
                // Behind procfs means missed time: the clock catches up.
                let fine = clocks.read_threads(&self.threads);
                if ticks_ns > fine {
                    clocks.raise_to(ticks_ns, fine);
                }
                fine.max(ticks_ns)
            }
            None => ticks_ns,
        };
        // CPU time never goes back (a thread counter that vanished is kept by ThreadClocks).
        self.cpu_ns = self.cpu_ns.max(cpu_ns);
        if stat.exited() {
            return MemberState::Gone;
        }
        if include_children {
            self.read_children(children);
        }
        MemberState::Alive
    }
}

/// Sampling-thread state of one tracked tree.
#[derive(Debug)]
struct TreeWork {
    root: u32,
    include_children: bool,
    root_exited: bool,
    members: HashMap<u32, Member>,
    /// CPU time of members that exited and were dropped from `members`.
    exited_cpu_ns: u64,
    /// Members already counted as exited, by (pid, start time): an exited
    /// child stays listed in its parent's `children` as a zombie until it
    /// is reaped, and must not be counted again then.
    counted_exits: HashSet<(u32, u64)>,
    /// Whether a live member was ever counted without task-clock counters.
    counted_by_ticks: bool,
}

impl TreeWork {
    fn new(
        proc_root: &Path,
        root: u32,
        include_children: bool,
        use_task_clock: bool,
        perf_allowance: usize,
    ) -> Result<Self, TrackError> {
        let status = read_status(proc_root, root)?;
        let member = Member::open(proc_root, root, use_task_clock, perf_allowance)
            .ok_or(TrackError::NotFound { pid: root })?;
        let counted_by_ticks = member.clocks.is_none();
        let mut members = HashMap::new();
        members.insert(root, member);
        Ok(TreeWork {
            root,
            include_children,
            root_exited: status.zombie,
            members,
            exited_cpu_ns: 0,
            counted_exits: HashSet::new(),
            counted_by_ticks,
        })
    }

    /// Refreshes members and returns the tree's cumulative CPU time.
    /// `exited`: pids whose pidfd was readable at this sample's poll.
    /// Start time of the root process, as first read.
    fn root_start_ticks(&self) -> Option<u64> {
        self.members.get(&self.root).map(|m| m.start_ticks)
    }

    /// Perf counters the tree holds.
    fn perf_threads(&self) -> usize {
        self.members.values().map(Member::perf_threads).sum()
    }

    fn cpu_time_source(&self) -> CpuTimeSource {
        if self.counted_by_ticks {
            CpuTimeSource::ProcfsTicks
        } else {
            CpuTimeSource::TaskClock
        }
    }

    fn sample(
        &mut self,
        proc_root: &Path,
        root: u32,
        use_task_clock: bool,
        exited: &HashSet<u32>,
        perf_allowance: usize,
    ) -> u64 {
        let include_children = self.include_children;
        let mut gone = Vec::new();
        let mut frontier = Vec::new();
        let mut used = self.perf_threads();
        for (&pid, member) in self.members.iter_mut() {
            // What the other members leave of the tree's allowance.
            let own = member.perf_threads();
            member.perf_allowance = perf_allowance.saturating_sub(used - own);
            let may_have_exited = member.pidfd.is_none() || exited.contains(&pid);
            let state = member.refresh(
                proc_root,
                pid,
                include_children,
                may_have_exited,
                &mut frontier,
            );
            used = used - own + member.perf_threads();
            // An exited root has let its counters go (below): not a fallback.
            let released = pid == root && self.root_exited;
            self.counted_by_ticks |= member.clocks.is_none() && !released;
            if state == MemberState::Gone {
                gone.push(pid);
            }
        }
        for pid in gone {
            if pid == root {
                self.root_exited = true;
                // The root stays (its value is part of the history), but
                // its counters, pidfd and listings can no longer tell
                // anything: give the descriptors back now rather than when
                // the record expires.
                if let Some(m) = self.members.get_mut(&pid) {
                    m.release_handles();
                }
                continue;
            }
            if let Some(m) = self.members.remove(&pid) {
                self.exited_cpu_ns += m.cpu_ns;
                self.counted_exits.insert((pid, m.start_ticks));
            }
        }
        if include_children {
            // Depth-first over new children, then theirs.
            let mut listed: HashSet<u32> = frontier.iter().copied().collect();
            while let Some(child) = frontier.pop() {
                if self.members.contains_key(&child) {
                    continue;
                }
                let left = perf_allowance.saturating_sub(used);
                let Some(mut member) = Member::open(proc_root, child, use_task_clock, left) else {
                    continue; // reaped before we looked
                };
                if self.counted_exits.contains(&(child, member.start_ticks)) {
                    continue; // a zombie counted when it exited
                }
                let before = frontier.len();
                let state = member.refresh(proc_root, child, true, true, &mut frontier);
                listed.extend(frontier[before..].iter().copied());
                match state {
                    MemberState::Alive => {
                        used += member.perf_threads();
                        self.counted_by_ticks |= member.clocks.is_none();
                        self.members.insert(child, member);
                    }
                    // First seen already exited: its CPU time counts once.
                    MemberState::Gone => {
                        self.exited_cpu_ns += member.cpu_ns;
                        self.counted_exits.insert((child, member.start_ticks));
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
            wake: (Mutex::new(false), Condvar::new()),
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
        self.track_tree(TreeKey::from(pid), pid, None, include_children)
    }

    /// Starts tracking the process instance `pid` started at `start_ticks`
    /// (field 22 of its `stat`) as tree `key`: if `pid` is by now another
    /// process, the tree is born exited and never samples it.
    pub fn track_process(
        &self,
        key: TreeKey,
        pid: u32,
        start_ticks: u64,
        include_children: bool,
    ) -> Result<(), TrackError> {
        self.track_tree(key, pid, Some(start_ticks), include_children)
    }

    fn track_tree(
        &self,
        key: TreeKey,
        pid: u32,
        start_ticks: Option<u64>,
        include_children: bool,
    ) -> Result<(), TrackError> {
        // Checked here so the caller gets NotFound synchronously.
        let status = read_status(&self.inner.config.proc_root, pid)?;
        if status.zombie {
            return Err(TrackError::NotFound { pid });
        }
        let mut state = self.inner.write();
        let capacity = self.inner.ring_capacity;
        let view = state.tracked.entry(key).or_insert_with(|| TrackedView {
            pid,
            cgroup: None,
            start_ticks,
            include_children,
            since: MonotonicNs::now(),
            exited: false,
            cpu_time_source: CpuTimeSource::TaskClock,
            series: TimeRing::new(capacity),
        });
        view.include_children = include_children;
        drop(state);
        self.inner.wake_up();
        Ok(())
    }

    /// Starts tracking the control group whose directory is `dir` as tree
    /// `key`: its CPU time is the cgroup's `cpu.stat` `usage_usec`, read
    /// every period like a process tree's. A cgroup that disappears (a
    /// stopped unit: a read fails, or the path's `cpu.stat` is another
    /// file, checked every [`CGROUP_RETRY_SAMPLES`] samples) is reported
    /// exited, its series stays flat, and it is looked for again as often: a unit
    /// started again continues the same series (its new cgroup's CPU time
    /// added to what the earlier ones used).
    pub fn track_cgroup(&self, key: TreeKey, dir: PathBuf) -> Result<(), TrackError> {
        // Checked here so the caller gets the error synchronously.
        crate::cgroup::CpuStatFile::open(&dir)
            .and_then(|mut f| f.usage_ns())
            .map_err(|e| TrackError::CgroupUnreadable {
                dir: dir.clone(),
                reason: e.to_string(),
            })?;
        let mut state = self.inner.write();
        let capacity = self.inner.ring_capacity;
        state.tracked.entry(key).or_insert_with(|| TrackedView {
            pid: 0,
            cgroup: Some(dir),
            start_ticks: None,
            include_children: true,
            since: MonotonicNs::now(),
            exited: false,
            cpu_time_source: CpuTimeSource::CgroupCpuStat,
            series: TimeRing::new(capacity),
        });
        drop(state);
        self.inner.wake_up();
        Ok(())
    }

    /// Stops tracking tree `key` (a pid, for trees tracked by pid) and
    /// drops its history; false if it was not tracked.
    pub fn untrack(&self, key: impl Into<TreeKey>) -> bool {
        self.inner.write().tracked.remove(&key.into()).is_some()
    }

    /// Trees tracked now (with none, the tracker samples the machine at
    /// [`ActivityConfig::idle_period_ns`]).
    pub fn tracked_count(&self) -> usize {
        self.inner.read().tracked.len()
    }

    /// Whether tree `key` is tracked.
    pub fn is_tracked(&self, key: impl Into<TreeKey>) -> bool {
        self.inner.read().tracked.contains_key(&key.into())
    }

    /// Tracked root pids, sorted.
    pub fn tracked(&self) -> Vec<u32> {
        let mut pids: Vec<u32> = self
            .inner
            .read()
            .tracked
            .values()
            .filter(|v| v.cgroup.is_none())
            .map(|v| v.pid)
            .collect();
        pids.sort_unstable();
        pids
    }

    /// When tracking of tree `key` started.
    pub fn tracked_since(&self, key: impl Into<TreeKey>) -> Option<MonotonicNs> {
        self.inner.read().tracked.get(&key.into()).map(|v| v.since)
    }

    /// How tree `key`'s CPU time has been counted so far (`None` for an
    /// untracked tree). A tree is [`CpuTimeSource::TaskClock`] until its
    /// first sample; the precision of its activity shares follows this.
    pub fn cpu_time_source(&self, key: impl Into<TreeKey>) -> Option<CpuTimeSource> {
        self.inner
            .read()
            .tracked
            .get(&key.into())
            .map(|v| v.cpu_time_source)
    }

    /// Whether the tracked root process has exited (its history is kept
    /// until [`Self::untrack`]). False for untracked trees.
    pub fn exited(&self, key: impl Into<TreeKey>) -> bool {
        self.inner
            .read()
            .tracked
            .get(&key.into())
            .is_some_and(|v| v.exited)
    }

    /// CPU time of the tracked process (+ descendants if asked) and of the
    /// whole machine over `[from, to]`, interpolated between samples.
    pub fn cpu_between(
        &self,
        key: impl Into<TreeKey>,
        from: MonotonicNs,
        to: MonotonicNs,
    ) -> Option<ProcessCpu> {
        if to < from {
            return None;
        }
        let state = self.inner.read();
        let view = state.tracked.get(&key.into())?;
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

    /// The newest `(t, cumulative CPU ns)` sample of tree `key`.
    pub fn last_sample(&self, key: impl Into<TreeKey>) -> Option<(MonotonicNs, u64)> {
        self.inner
            .read()
            .tracked
            .get(&key.into())
            .and_then(|v| v.series.last())
            .map(|(t, c)| (MonotonicNs(t), c))
    }

    /// `(t, cumulative process CPU ns)` samples in `[from, to]` with the
    /// neighbours just outside.
    pub fn cpu_samples(
        &self,
        key: impl Into<TreeKey>,
        from: MonotonicNs,
        to: MonotonicNs,
    ) -> Vec<(MonotonicNs, u64)> {
        let state = self.inner.read();
        state
            .tracked
            .get(&key.into())
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
        self.inner.wake_up();
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

/// While a tracked cgroup is absent (its unit stopped), its directory is
/// looked for again every this many samples (100 ms at the default 10 ms
/// period), so a restarted unit is followed within that time.
pub const CGROUP_RETRY_SAMPLES: u32 = 10;

/// Sampling-thread state of one tracked cgroup.
#[derive(Debug)]
struct CgroupWork {
    dir: PathBuf,
    /// `cpu.stat` of the cgroup's current incarnation, while it exists.
    stat: Option<crate::cgroup::CpuStatFile>,
    /// CPU time of earlier incarnations (a unit stopped and started again
    /// gets a new cgroup whose `usage_usec` starts from zero).
    earlier_ns: u64,
    /// Last CPU time read of the current incarnation.
    current_ns: u64,
    samples_since_retry: u32,
}

impl CgroupWork {
    fn new(dir: PathBuf) -> CgroupWork {
        CgroupWork {
            dir,
            stat: None,
            earlier_ns: 0,
            current_ns: 0,
            // Look at once.
            samples_since_retry: CGROUP_RETRY_SAMPLES,
        }
    }

    /// The cgroup's cumulative CPU ns over its incarnations, and whether
    /// it exists now.
    fn sample(&mut self) -> (u64, bool) {
        if self.stat.is_none() {
            self.samples_since_retry += 1;
            if self.samples_since_retry >= CGROUP_RETRY_SAMPLES {
                self.samples_since_retry = 0;
                if let Ok(mut f) = crate::cgroup::CpuStatFile::open(&self.dir) {
                    if let Ok(ns) = f.usage_ns() {
                        self.current_ns = ns;
                        self.stat = Some(f);
                    }
                }
            }
        } else if let Some(f) = self.stat.as_mut() {
            self.samples_since_retry += 1;
            let replaced = self.samples_since_retry >= CGROUP_RETRY_SAMPLES && {
                self.samples_since_retry = 0;
                !f.is_current(&self.dir)
            };
            let read = if replaced {
                Err(std::io::Error::from(std::io::ErrorKind::NotFound))
            } else {
                f.usage_ns()
            };
            match read {
                // CPU time never goes back within one incarnation.
                Ok(ns) => self.current_ns = self.current_ns.max(ns),
                Err(e) if e.kind() == std::io::ErrorKind::InvalidData => {
                    // A text without usage_usec (a fixture being written):
                    // keep the last value, try again next sample.
                }
                Err(_) => {
                    // Removed (ENODEV): this incarnation's time is final.
                    self.earlier_ns = self.earlier_ns.saturating_add(self.current_ns);
                    self.current_ns = 0;
                    self.stat = None;
                    self.samples_since_retry = 0;
                }
            }
        }
        (
            self.earlier_ns.saturating_add(self.current_ns),
            self.stat.is_some(),
        )
    }
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
    let mut work: HashMap<TreeKey, TreeWork> = HashMap::new();
    let mut cgroups: HashMap<TreeKey, CgroupWork> = HashMap::new();
    let period_ns = inner.config.period_ns;
    let idle_period_ns = inner.config.idle_period_ns.max(period_ns);
    let mut deadline = MonotonicNs::now();
    while !inner.stop.load(Ordering::Relaxed) {
        // Which trees and cgroups to sample (a short read lock).
        let (wanted, wanted_cgroups) = {
            let state = inner.read();
            let wanted: Vec<(TreeKey, u32, Option<u64>, bool)> = state
                .tracked
                .iter()
                .filter(|(_, v)| v.cgroup.is_none())
                .map(|(&key, v)| (key, v.pid, v.start_ticks, v.include_children))
                .collect();
            let wanted_cgroups: Vec<(TreeKey, PathBuf)> = state
                .tracked
                .iter()
                .filter_map(|(&key, v)| v.cgroup.clone().map(|dir| (key, dir)))
                .collect();
            (wanted, wanted_cgroups)
        };
        work.retain(|key, _| wanted.iter().any(|(k, ..)| k == key));
        cgroups.retain(|key, _| wanted_cgroups.iter().any(|(k, _)| k == key));
        // One poll over every member's pidfd says which may have exited.
        let with_pidfd: Vec<(u32, RawFd)> = work
            .values()
            .flat_map(|tree| tree.members.iter())
            .filter_map(|(&pid, m)| m.pidfd.as_ref().map(|fd| (pid, fd.as_raw_fd())))
            .collect();
        let fds: Vec<RawFd> = with_pidfd.iter().map(|&(_, fd)| fd).collect();
        let exited: HashSet<u32> = with_pidfd
            .iter()
            .zip(exited_now(&fds))
            .filter_map(|(&(pid, _), exited)| exited.then_some(pid))
            .collect();
        let mut results = Vec::with_capacity(wanted.len());
        let per_tree = inner.config.max_perf_threads_per_tree;
        let mut total_used: usize = work.values().map(TreeWork::perf_threads).sum();
        for (key, pid, start_ticks, include_children) in wanted {
            let own = work.get(&key).map_or(0, TreeWork::perf_threads);
            // The tree's cap, and what the other trees leave of the total.
            let allowance = per_tree.min(
                inner
                    .config
                    .max_perf_threads_total
                    .saturating_sub(total_used - own),
            );
            let tree = match work.entry(key) {
                std::collections::hash_map::Entry::Occupied(e) => e.into_mut(),
                std::collections::hash_map::Entry::Vacant(e) => {
                    match TreeWork::new(
                        &proc_root,
                        pid,
                        include_children,
                        use_task_clock,
                        allowance,
                    ) {
                        // Another process now holds the pid: the tracked
                        // one is gone, and the newcomer is not ours.
                        Ok(t) if start_ticks.is_some_and(|s| t.root_start_ticks() != Some(s)) => {
                            results.push((key, None, true, None));
                            continue;
                        }
                        Ok(t) => e.insert(t),
                        Err(_) => {
                            // Gone between track() and now: an exit with no CPU history.
                            results.push((key, None, true, None));
                            continue;
                        }
                    }
                }
            };
            tree.include_children = include_children;
            let cumulative = tree.sample(&proc_root, pid, use_task_clock, &exited, allowance);
            total_used = total_used - own + tree.perf_threads();
            results.push((
                key,
                Some(cumulative),
                tree.root_exited,
                Some(tree.cpu_time_source()),
            ));
        }
        for (key, dir) in wanted_cgroups {
            let cgroup = cgroups.entry(key).or_insert_with(|| CgroupWork::new(dir));
            let (cumulative, present) = cgroup.sample();
            results.push((
                key,
                Some(cumulative),
                !present,
                Some(CpuTimeSource::CgroupCpuStat),
            ));
        }
        let t = MonotonicNs::now();
        let machine_now = machine.as_mut().and_then(|m| m.read().ok());
        {
            let mut state = inner.write();
            if let Some(m) = machine_now {
                state.machine.push(t.as_ns(), (m.busy_ns, m.total_ns));
            }
            for (key, cumulative, exited, source) in results {
                if let Some(view) = state.tracked.get_mut(&key) {
                    if let Some(c) = cumulative {
                        view.series.push(t.as_ns(), c);
                    }
                    if let Some(source) = source {
                        view.cpu_time_source = source;
                    }
                    view.exited = exited;
                }
            }
        }
        // Nothing tracked: only the machine's CPU time is sampled, at the
        // idle period, in a sleep that `track` ends.
        let idle = work.is_empty() && inner.read().tracked.is_empty();
        let step_ns = if idle { idle_period_ns } else { period_ns };
        deadline = deadline.saturating_add_ns(step_ns);
        let now = MonotonicNs::now();
        if now > deadline {
            deadline =
                deadline.saturating_add_ns((now.saturating_sub(deadline) / step_ns) * step_ns);
        }
        if idle {
            inner.idle_sleep_until(deadline);
            // Woken early by `track`: the next sample is now.
            deadline = deadline.min(MonotonicNs::now());
        } else {
            crate::engine::sleep_until(deadline, &inner.stop);
        }
    }
}
