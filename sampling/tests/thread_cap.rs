//! Descriptors per tracked thread are bounded (issue 12, item 5): a tracked
//! process with 1 001 threads cost 1 005 perf descriptors, and two such
//! processes exhausted a 1 024-descriptor limit. Beyond the per-tree cap
//! (default 256) a process is counted from procfs instead.
//!
//! This test tracks its own process (one test in this file, so nothing
//! else opens descriptors meanwhile) with 300 parked threads.

use sampling::activity::{ActivityConfig, ActivityTracker, CpuTimeSource};
use shared::MonotonicNs;
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

fn perf_fds() -> usize {
    std::fs::read_dir("/proc/self/fd")
        .unwrap()
        .flatten()
        .filter(|e| {
            std::fs::read_link(e.path())
                .map(|l| l.to_string_lossy().contains("perf_event"))
                .unwrap_or(false)
        })
        .count()
}

#[test]
fn a_process_with_many_threads_does_not_cost_a_descriptor_each() {
    let config = ActivityConfig::default();
    let cap = config.max_perf_threads_per_tree;
    assert!(
        cap < 300,
        "the test needs more threads than the default cap"
    );
    let release = Arc::new(Barrier::new(301));
    let threads: Vec<_> = (0..300)
        .map(|_| {
            let r = release.clone();
            std::thread::Builder::new()
                .stack_size(64 * 1024)
                .spawn(move || {
                    r.wait();
                })
                .unwrap()
        })
        .collect();
    let tracker = ActivityTracker::start(config);
    let me = std::process::id();
    tracker.track(me, false).unwrap();
    // Wait (bounded, not asserted) for a few samples of our process.
    let deadline = Instant::now() + Duration::from_secs(20);
    while tracker
        .cpu_samples(me, MonotonicNs(0), MonotonicNs::now())
        .len()
        < 5
    {
        assert!(Instant::now() < deadline, "tracker took no samples");
        std::thread::sleep(Duration::from_millis(10));
    }
    let held = perf_fds();
    // Past the cap the tree is counted from procfs, and says so.
    assert_eq!(
        tracker.cpu_time_source(me),
        Some(CpuTimeSource::ProcfsTicks)
    );
    // CPU time is still counted (from procfs beyond the cap).
    let samples = tracker.cpu_samples(me, MonotonicNs(0), MonotonicNs::now());
    assert!(samples.windows(2).all(|w| w[1].1 >= w[0].1));
    tracker.shutdown();
    release.wait();
    for t in threads {
        t.join().unwrap();
    }
    assert!(
        held <= cap,
        "{held} perf descriptors held for one process of 300+ threads (cap {cap})"
    );
}
