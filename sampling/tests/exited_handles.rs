//! A tracked process that exits gives its descriptors back at once, and the
//! tracker says how its CPU time was counted.
//!
//! Seen under the installed unit (systemd/test-under-systemd): every
//! process `energyctl run` had tracked kept one perf descriptor and one
//! pidfd open after it exited, until its record expired. And when perf was
//! refused, the tracker counted from procfs ticks while breakdowns assumed
//! task-clock precision.
//!
//! One test in this file: it counts this process's descriptors, so nothing
//! else may open any meanwhile.

use sampling::activity::{ActivityConfig, ActivityTracker, CpuTimeSource};
use shared::MonotonicNs;
use std::process::Command;
use std::time::{Duration, Instant};

/// Descriptors of this process whose link names contain `what`.
fn fds(what: &str) -> usize {
    std::fs::read_dir("/proc/self/fd")
        .unwrap()
        .flatten()
        .filter(|e| {
            std::fs::read_link(e.path())
                .map(|l| l.to_string_lossy().contains(what))
                .unwrap_or(false)
        })
        .count()
}

fn wait_for(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn an_exited_process_gives_back_its_counters_and_says_how_it_was_counted() {
    let tracker = ActivityTracker::start(ActivityConfig::default());
    let (perf_before, pidfd_before) = (fds("perf_event"), fds("pidfd"));
    let mut child = Command::new("sleep").arg("1").spawn().unwrap();
    let pid = child.id();
    tracker.track(pid, false).unwrap();
    wait_for("samples of the child", || {
        tracker
            .cpu_samples(pid, MonotonicNs(0), MonotonicNs::now())
            .len()
            >= 3
    });
    let perf_held = fds("perf_event") - perf_before;
    let source = tracker.cpu_time_source(pid);
    if perf_held > 0 {
        assert_eq!(source, Some(CpuTimeSource::TaskClock));
        assert!(
            fds("pidfd") > pidfd_before,
            "task-clock tracking holds a pidfd"
        );
    } else {
        // perf refused here: the fallback is said, not hidden.
        assert_eq!(source, Some(CpuTimeSource::ProcfsTicks));
    }

    child.wait().unwrap();
    wait_for("the tracker to see the exit", || tracker.exited(pid));
    // The record stays (its history is still queryable) ...
    assert!(tracker.is_tracked(pid));
    let samples = tracker.cpu_samples(pid, MonotonicNs(0), MonotonicNs::now());
    assert!(samples.len() >= 3);
    // ... but its descriptors are closed.
    assert_eq!(
        fds("perf_event"),
        perf_before,
        "perf descriptors kept after exit"
    );
    assert_eq!(fds("pidfd"), pidfd_before, "pidfd kept after exit");
    // Letting the counters go is not a fallback to procfs.
    assert_eq!(tracker.cpu_time_source(pid), source);

    // Tracking without task-clock is reported as such.
    let ticks_only = ActivityTracker::start(ActivityConfig {
        use_task_clock: false,
        ..ActivityConfig::default()
    });
    let mut child = Command::new("sleep").arg("1").spawn().unwrap();
    let pid = child.id();
    ticks_only.track(pid, false).unwrap();
    wait_for("samples of the second child", || {
        ticks_only
            .cpu_samples(pid, MonotonicNs(0), MonotonicNs::now())
            .len()
            >= 2
    });
    assert_eq!(
        ticks_only.cpu_time_source(pid),
        Some(CpuTimeSource::ProcfsTicks)
    );
    assert_eq!(ticks_only.cpu_time_source(pid + 1_000_000), None);
    child.kill().unwrap();
    child.wait().unwrap();
    ticks_only.shutdown();
    tracker.shutdown();
}
