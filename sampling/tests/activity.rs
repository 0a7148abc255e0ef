//! Process-tree tracking on real processes: a shell whose two CPU-burning
//! children exit mid-run. The tracked tree's CPU time must keep the
//! children's time after they are gone, and match what the kernel itself
//! says the tree used (the shell's own plus its reaped children's CPU time
//! from `/proc/<pid>/stat`).

use sampling::activity::{ActivityConfig, ActivityTracker};
use shared::MonotonicNs;
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

/// `utime + stime + cutime + cstime` of `pid`, in nanoseconds: the CPU
/// time of the process and of every child it has reaped.
fn kernel_tree_cpu_ns(pid: u32) -> u64 {
    let stat = procfs::process::Process::new(pid as i32)
        .and_then(|p| p.stat())
        .expect("the shell is still alive");
    let ticks = stat.utime + stat.stime + stat.cutime.max(0) as u64 + stat.cstime.max(0) as u64;
    ticks * (1_000_000_000 / procfs::ticks_per_second())
}

#[test]
fn children_that_exit_mid_run_stay_counted() {
    let tracker = ActivityTracker::start(ActivityConfig {
        history_window_ns: 30_000_000_000,
        ..ActivityConfig::default()
    });
    // Two busy children, reaped by `wait`; then the shell idles so its
    // stat can be read with the children's time folded into cutime.
    let script = r#"
        burn() { i=0; while [ $i -lt 150000 ]; do i=$((i+1)); done; }
        burn & burn & wait
        echo children-done
        sleep 2
    "#;
    let mut shell = Command::new("sh")
        .args(["-c", script])
        .stdout(Stdio::piped())
        .spawn()
        .expect("spawn sh");
    let pid = shell.id();
    tracker.track(pid, true).expect("track the shell");
    let started = MonotonicNs::now();

    let mut line = String::new();
    BufReader::new(shell.stdout.take().expect("piped stdout"))
        .read_line(&mut line)
        .expect("read the shell's output");
    assert_eq!(line.trim(), "children-done");
    // Let the tracker see the exits and take a few samples after them.
    std::thread::sleep(Duration::from_millis(200));
    let kernel_ns = kernel_tree_cpu_ns(pid);
    let now = MonotonicNs::now();

    let samples = tracker.cpu_samples(pid, started, now);
    assert!(samples.len() > 20, "{} samples", samples.len());
    assert!(
        samples.windows(2).all(|w| w[1].1 >= w[0].1),
        "the tree's CPU time never goes back when members exit"
    );
    let tracked_ns = samples.last().expect("samples").1;
    // The children burnt most of it: the shell alone uses a few ms.
    assert!(kernel_ns > 50_000_000, "children burnt {kernel_ns} ns");
    let tolerance_ns = kernel_ns / 10 + 40_000_000;
    assert!(
        tracked_ns.abs_diff(kernel_ns) <= tolerance_ns,
        "tracked {tracked_ns} ns, kernel says {kernel_ns} ns"
    );
    assert!(!tracker.exited(pid), "the shell itself is still running");
    let share = tracker
        .cpu_between(pid, started, now)
        .expect("interval over the run");
    assert!(share.process_cpu_ns <= share.machine_busy_cpu_ns + 20_000_000);

    shell.kill().ok();
    shell.wait().expect("reap the shell");
    std::thread::sleep(Duration::from_millis(100));
    assert!(tracker.exited(pid));
    // The history of an exited tree is kept until it is untracked.
    assert!(tracker.cpu_samples(pid, started, MonotonicNs::now()).len() >= samples.len());
    assert!(tracker.untrack(pid));
    tracker.shutdown();
}

/// `utime + stime` of this process (all its threads, live and gone), ns.
fn own_cpu_ns() -> u64 {
    let stat = procfs::process::Process::myself()
        .and_then(|p| p.stat())
        .expect("own stat");
    (stat.utime + stat.stime) * (1_000_000_000 / procfs::ticks_per_second())
}

/// CPU time of the calling thread, ns.
fn thread_cpu_ns() -> u64 {
    let t = nix::time::clock_gettime(nix::time::ClockId::CLOCK_THREAD_CPUTIME_ID)
        .expect("thread CPU clock");
    t.tv_sec() as u64 * 1_000_000_000 + t.tv_nsec() as u64
}

/// Work done on threads that live shorter than a sample period (a thread
/// pool built for one job and dropped after it) is never seen by a
/// per-thread counter; the tracker must still count it, from procfs.
#[test]
fn short_lived_threads_are_counted() {
    let tracker = ActivityTracker::start(ActivityConfig {
        history_window_ns: 30_000_000_000,
        ..ActivityConfig::default()
    });
    let pid = std::process::id();
    tracker.track(pid, false).expect("track this process");
    std::thread::sleep(Duration::from_millis(200));
    let (t0, cpu0) = (MonotonicNs::now(), own_cpu_ns());
    for _ in 0..60 {
        // Each worker burns 8 ms of its own CPU time, not of wall time: on
        // a loaded machine a wall-time spin got as little as 5 ms of CPU
        // per worker and the test measured the scheduler, not the tracker.
        std::thread::spawn(|| {
            let mut x = 1u64;
            while thread_cpu_ns() < 8_000_000 {
                for _ in 0..1000 {
                    x = x.wrapping_mul(6364136223846793005).wrapping_add(1);
                }
            }
            std::hint::black_box(x);
        })
        .join()
        .expect("worker");
    }
    // Until the tracker has sampled past its next full refresh (every 10
    // samples of 10 ms) after the last worker ended; waited for, not slept
    // for, since a loaded machine delays the sampler's thread too.
    let done = MonotonicNs::now();
    let deadline = Duration::from_secs(20);
    let waited = std::time::Instant::now();
    while tracker
        .cpu_samples(pid, done, MonotonicNs::now())
        .last()
        .is_none_or(|s| s.0.saturating_sub(done) < 250_000_000)
    {
        assert!(
            waited.elapsed() < deadline,
            "no sample 250 ms after the workers in 20 s"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let (t1, cpu1) = (MonotonicNs::now(), own_cpu_ns());
    let samples = tracker.cpu_samples(pid, t0, t1);
    let (first, last) = (
        samples.first().expect("samples").1,
        samples.last().unwrap().1,
    );
    let tracked = last.saturating_sub(first);
    let kernel = cpu1.saturating_sub(cpu0);
    assert!(kernel > 400_000_000, "the workers burnt {kernel} ns");
    // Ticks at both ends, and other tests of this binary running meanwhile
    // on threads the tracker also counts.
    let tolerance = kernel / 10 + 30_000_000;
    assert!(
        tracked.abs_diff(kernel) <= tolerance,
        "tracked {tracked} ns of CPU, procfs says {kernel} ns"
    );
}
