//! Per-process perf counters: task-clock (CPU time in nanoseconds, finer
//! than procfs ticks), context switches, and the hardware counters
//! (cycles, instructions, cache misses) where the machine has them.
//!
//! Crate choice: `perf-event2` 0.7 rather than `perf-event` 0.4.9. Both count
//! software events for other pids here, but `perf-event2` exposes the whole
//! `perf_event_attr` through its builder (`attrs_mut`), which the RAPL perf
//! source needs to open events of a dynamic PMU type read from sysfs, and
//! chaining builder keeps one code path for both uses. It is also the
//! version pinned in the workspace.
//!
//! A perf counter opened on a pid counts only that thread (and threads it
//! creates later, folded in only when they exit), so every counter here is
//! opened per thread, threads being listed from `/proc/<pid>/task` at each
//! read.
//!
//! Permissions: counting another pid needs ptrace rights over it (root, or
//! same uid with `perf_event_paranoid <= 2`); `include_kernel` needs
//! `perf_event_paranoid <= 1` or CAP_PERFMON. Each counter that cannot be
//! opened is reported as [`CounterValue::Unsupported`] with the reason
//! (hardware events fail with ENOENT on machines without a `cpu` PMU, like
//! VMs), never as an error of the whole set.

use perf_event::events::{Hardware, Software};
use perf_event::{Builder, Counter};
use std::collections::HashMap;
use std::path::Path;

/// A counter's value, or why it is not available.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CounterValue {
    /// Count since the counter was opened.
    Count(u64),
    /// The counter could not be opened or read here.
    Unsupported(String),
}

impl CounterValue {
    /// The count, if available.
    pub fn count(&self) -> Option<u64> {
        match self {
            CounterValue::Count(c) => Some(*c),
            CounterValue::Unsupported(_) => None,
        }
    }
}

/// Values of a [`ProcessCounters`] set at one instant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProcessCounterValues {
    /// CPU time in nanoseconds.
    pub task_clock_ns: CounterValue,
    /// Context switches (kernel events included when permitted).
    pub context_switches: CounterValue,
    /// CPU cycles.
    pub cycles: CounterValue,
    /// Retired instructions.
    pub instructions: CounterValue,
    /// Last-level cache misses.
    pub cache_misses: CounterValue,
}

/// The events this module counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ProcessEvent {
    /// CPU time in nanoseconds (software event, always available).
    TaskClock,
    /// Context switches (software event; kernel-side when permitted).
    ContextSwitches,
    /// CPU cycles (hardware).
    Cycles,
    /// Retired instructions (hardware).
    Instructions,
    /// Last-level cache misses (hardware).
    CacheMisses,
}

impl ProcessEvent {
    fn builder(self) -> Builder<'static> {
        match self {
            ProcessEvent::TaskClock => Builder::new(Software::TASK_CLOCK),
            ProcessEvent::ContextSwitches => Builder::new(Software::CONTEXT_SWITCHES),
            ProcessEvent::Cycles => Builder::new(Hardware::CPU_CYCLES),
            ProcessEvent::Instructions => Builder::new(Hardware::INSTRUCTIONS),
            ProcessEvent::CacheMisses => Builder::new(Hardware::CACHE_MISSES),
        }
    }

    /// Context switches happen in the kernel: counting only user space
    /// always reads 0, so kernel events are asked for.
    fn wants_kernel(self) -> bool {
        matches!(
            self,
            ProcessEvent::TaskClock | ProcessEvent::ContextSwitches
        )
    }
}

fn describe_open_error(e: &std::io::Error) -> String {
    match e.raw_os_error() {
        Some(libc::ENOENT) | Some(libc::EOPNOTSUPP) => {
            format!("event not supported by this machine ({e})")
        }
        Some(libc::EACCES) | Some(libc::EPERM) => {
            format!("not permitted (perf_event_paranoid or capabilities) ({e})")
        }
        Some(libc::ESRCH) => format!("thread not found ({e})"),
        _ => e.to_string(),
    }
}

/// Opens one counter on one thread (no inheritance: every thread gets its
/// own counter, so threads that already exist are all counted). Kernel
/// events are included when asked and permitted, else user space only.
fn open_thread_counter(event: ProcessEvent, tid: u32) -> std::io::Result<Counter> {
    let mut builder = event.builder();
    builder.observe_pid(tid as i32).any_cpu();
    if event.wants_kernel() {
        builder.include_kernel();
    }
    let mut counter = match builder.build() {
        Ok(c) => c,
        Err(e)
            if event.wants_kernel()
                && matches!(e.raw_os_error(), Some(libc::EACCES) | Some(libc::EPERM)) =>
        {
            builder.exclude_kernel(true);
            builder.build()?
        }
        Err(e) => return Err(e),
    };
    counter.enable()?;
    Ok(counter)
}

/// Thread ids of `pid` listed in `<proc_root>/<pid>/task`.
pub(crate) fn thread_ids(proc_root: &Path, pid: u32) -> Vec<u32> {
    std::fs::read_dir(proc_root.join(pid.to_string()).join("task"))
        .map(|dir| {
            dir.flatten()
                .filter_map(|e| e.file_name().to_str().and_then(|s| s.parse().ok()))
                .collect()
        })
        .unwrap_or_default()
}

/// One event counted over every thread of a process: a counter per thread,
/// threads discovered at each read, exited threads frozen at their last
/// value. A thread that lives less than one read period is missed.
#[derive(Debug)]
pub struct ThreadCounterSet {
    event: ProcessEvent,
    threads: HashMap<u32, (Counter, u64)>,
    exited: u64,
}

impl ThreadCounterSet {
    /// Opens `event` on every thread of `pid`; the error of the first
    /// thread when the event cannot be counted at all.
    pub fn open(event: ProcessEvent, proc_root: &Path, pid: u32) -> Result<Self, String> {
        let mut threads = HashMap::new();
        let mut first_error = None;
        for tid in thread_ids(proc_root, pid) {
            match open_thread_counter(event, tid) {
                Ok(c) => {
                    threads.insert(tid, (c, 0));
                }
                // A thread that exited meanwhile is not a failure of the event.
                Err(e) if e.raw_os_error() == Some(libc::ESRCH) => {}
                Err(e) => {
                    first_error.get_or_insert(describe_open_error(&e));
                }
            }
        }
        if threads.is_empty() {
            return Err(
                first_error.unwrap_or_else(|| format!("process {pid} has no readable threads"))
            );
        }
        Ok(Self {
            event,
            threads,
            exited: 0,
        })
    }

    /// The event counted.
    pub fn event(&self) -> ProcessEvent {
        self.event
    }

    /// Sum over all threads seen so far, refreshing the thread list.
    pub fn read(&mut self, proc_root: &Path, pid: u32) -> u64 {
        self.read_threads(&thread_ids(proc_root, pid))
    }

    /// Sum over all threads seen so far, with `tids` the process's current
    /// threads as the caller last listed them: counters of threads not in
    /// it are frozen, threads new in it get a counter.
    pub fn read_threads(&mut self, tids: &[u32]) -> u64 {
        let gone: Vec<u32> = self
            .threads
            .keys()
            .copied()
            .filter(|t| !tids.contains(t))
            .collect();
        for tid in gone {
            if let Some((mut c, last)) = self.threads.remove(&tid) {
                // The fd of an exited thread still reads its final count.
                self.exited += c.read().unwrap_or(last).max(last);
            }
        }
        for &tid in tids {
            if let std::collections::hash_map::Entry::Vacant(e) = self.threads.entry(tid) {
                if let Ok(c) = open_thread_counter(self.event, tid) {
                    e.insert((c, 0));
                }
            }
        }
        let mut live = 0;
        for (c, last) in self.threads.values_mut() {
            if let Ok(v) = c.read() {
                *last = (*last).max(v);
            }
            live += *last;
        }
        self.exited + live
    }
}

/// The counter set of one process: every [`ProcessEvent`] over all of its
/// threads, each either counting or unsupported with the reason.
#[derive(Debug)]
pub struct ProcessCounters {
    proc_root: std::path::PathBuf,
    pid: u32,
    sets: Vec<(ProcessEvent, Result<ThreadCounterSet, String>)>,
}

impl ProcessCounters {
    /// Opens every counter it can for `pid` (threads listed under
    /// `<proc_root>/<pid>/task`); the ones it cannot are recorded as
    /// unsupported with the reason.
    pub fn open(proc_root: &Path, pid: u32) -> Self {
        let sets = [
            ProcessEvent::TaskClock,
            ProcessEvent::ContextSwitches,
            ProcessEvent::Cycles,
            ProcessEvent::Instructions,
            ProcessEvent::CacheMisses,
        ]
        .into_iter()
        .map(|ev| (ev, ThreadCounterSet::open(ev, proc_root, pid)))
        .collect();
        Self {
            proc_root: proc_root.to_path_buf(),
            pid,
            sets,
        }
    }

    /// The process counted.
    pub fn pid(&self) -> u32 {
        self.pid
    }

    fn value(&mut self, event: ProcessEvent) -> CounterValue {
        let (proc_root, pid) = (&self.proc_root, self.pid);
        match self.sets.iter_mut().find(|(e, _)| *e == event) {
            Some((_, Ok(set))) => CounterValue::Count(set.read(proc_root, pid)),
            Some((_, Err(why))) => CounterValue::Unsupported(why.clone()),
            None => CounterValue::Unsupported("not opened".to_string()),
        }
    }

    /// Reads every counter now.
    pub fn read(&mut self) -> ProcessCounterValues {
        ProcessCounterValues {
            task_clock_ns: self.value(ProcessEvent::TaskClock),
            context_switches: self.value(ProcessEvent::ContextSwitches),
            cycles: self.value(ProcessEvent::Cycles),
            instructions: self.value(ProcessEvent::Instructions),
            cache_misses: self.value(ProcessEvent::CacheMisses),
        }
    }
}

/// Nanosecond CPU time of one process from per-thread task-clock counters:
/// the process's procfs CPU time when opened (time before counting) plus
/// the task-clock of every thread since.
#[derive(Debug)]
pub struct ThreadClocks {
    baseline_ns: u64,
    set: ThreadCounterSet,
}

impl ThreadClocks {
    /// Opens task-clock on every thread of `pid`; `None` when perf cannot
    /// count it (the caller then uses procfs ticks).
    pub fn open(proc_root: &Path, pid: u32, procfs_cpu_ns: u64) -> Option<Self> {
        match ThreadCounterSet::open(ProcessEvent::TaskClock, proc_root, pid) {
            Ok(set) => Some(Self {
                baseline_ns: procfs_cpu_ns,
                set,
            }),
            Err(why) => {
                tracing::debug!(pid, %why, "task-clock unavailable; using procfs ticks");
                None
            }
        }
    }

    /// Current CPU time of the process in nanoseconds.
    pub fn read(&mut self, proc_root: &Path, pid: u32) -> u64 {
        self.baseline_ns + self.set.read(proc_root, pid)
    }

    /// [`Self::read`] with the thread list given by the caller.
    pub fn read_threads(&mut self, tids: &[u32]) -> u64 {
        self.baseline_ns + self.set.read_threads(tids)
    }

    /// Raises the clock to at least `floor_ns` (the process's whole CPU
    /// time from procfs), given `current_ns` as last read: CPU time of
    /// threads that ran before their counter was opened (or started and
    /// ended between two listings) is in procfs but in no counter. Later
    /// reads continue from the raised value.
    pub fn raise_to(&mut self, floor_ns: u64, current_ns: u64) {
        self.baseline_ns += floor_ns.saturating_sub(current_ns);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn open_errors_are_named_by_cause() {
        let unsupported = describe_open_error(&std::io::Error::from_raw_os_error(libc::ENOENT));
        assert!(unsupported.starts_with("event not supported by this machine"));
        let denied = describe_open_error(&std::io::Error::from_raw_os_error(libc::EACCES));
        assert!(denied.starts_with("not permitted"));
        let gone = describe_open_error(&std::io::Error::from_raw_os_error(libc::ESRCH));
        assert!(gone.starts_with("thread not found"));
    }
}
