//! Per-process perf counters on this very process: software events always
//! count; each hardware event either counts or is "unsupported" on its own,
//! with the reason, and which one is decided by whether the machine has a
//! CPU PMU at all (checked independently in sysfs).

use sampling::perf::{CounterValue, ProcessCounters};
use std::path::Path;
use std::time::Duration;

/// Whether the kernel exposes a core PMU (`cpu`, or `cpu_core`/`cpu_atom`
/// on hybrid parts). VMs without PMU passthrough, like our CI, have none.
fn has_cpu_pmu() -> bool {
    ["cpu", "cpu_core", "cpu_atom"]
        .iter()
        .any(|p| Path::new("/sys/bus/event_source/devices").join(p).exists())
}

#[test]
fn software_events_count_and_hardware_events_are_unsupported_per_counter() {
    let mut counters = ProcessCounters::open(Path::new("/proc"), std::process::id());
    let before = counters.read();
    let mut x = 0u64;
    for i in 0..5_000_000u64 {
        x = x.wrapping_mul(31).wrapping_add(i);
    }
    std::hint::black_box(x);
    for _ in 0..5 {
        std::thread::sleep(Duration::from_millis(1));
    }
    let after = counters.read();

    let (Some(b), Some(a)) = (before.task_clock_ns.count(), after.task_clock_ns.count()) else {
        panic!("task-clock must be countable for our own process: {after:?}");
    };
    assert!(a > b, "task-clock advanced: {b} -> {a}");
    match (&before.context_switches, &after.context_switches) {
        (CounterValue::Count(b), CounterValue::Count(a)) => {
            // Five sleeps are at least five switches away from this thread
            // (kernel-side counting is on when permitted, as root here).
            if nix::unistd::geteuid().is_root() {
                assert!(a - b >= 5, "context switches {b} -> {a}");
            }
        }
        other => panic!("context switches are a software event: {other:?}"),
    }

    let hardware = [
        ("cycles", &after.cycles),
        ("instructions", &after.instructions),
        ("cache misses", &after.cache_misses),
    ];
    if has_cpu_pmu() {
        for (name, value) in hardware {
            if let CounterValue::Unsupported(why) = value {
                // A PMU may still lack one event; it must say why.
                assert!(!why.is_empty(), "{name}");
            }
        }
    } else {
        for (name, value) in hardware {
            match value {
                CounterValue::Unsupported(why) => assert!(
                    why.starts_with("event not supported by this machine"),
                    "{name}: {why}"
                ),
                CounterValue::Count(c) => panic!("{name} counted {c} without a CPU PMU"),
            }
        }
    }
}
