//! The machine's floor for periodic sampling: CPU time per wall second of
//! a thread that does nothing but sleep to absolute deadlines with the
//! engine's own [`sampling::engine::sleep_until`], at a given period.
//!
//! ```text
//! cargo run --release -p sampling --example wakeup_floor -- [PERIOD_NS=1000000] [SECONDS=5]
//! ```
//!
//! Prints `wakeup_floor_pct_of_core=… per_wakeup_us=… period_ns=…`. Any
//! sampler at this period costs at least this much here; `bench/sampler`
//! prints it beside energyd's figure so the daemon's own work can be told
//! from the cost of waking up (large in VMs, where each timer wake-up
//! exits to the hypervisor).

use sampling::engine::sleep_until;
use shared::MonotonicNs;
use std::process::ExitCode;
use std::sync::atomic::AtomicBool;

/// CPU time of the calling thread, in ns (`/proc/thread-self/schedstat`).
fn thread_cpu_ns() -> Option<u64> {
    std::fs::read_to_string("/proc/thread-self/schedstat")
        .ok()?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let period_ns: u64 = match args.first().map(|s| s.parse()) {
        None => 1_000_000,
        Some(Ok(p)) if p > 0 => p,
        Some(_) => {
            eprintln!("PERIOD_NS must be a positive integer");
            return ExitCode::from(2);
        }
    };
    let seconds: u64 = match args.get(1).map(|s| s.parse()) {
        None => 5,
        Some(Ok(s)) if s > 0 => s,
        Some(_) => {
            eprintln!("SECONDS must be a positive integer");
            return ExitCode::from(2);
        }
    };
    let stop = AtomicBool::new(false);
    let wakeups = seconds * 1_000_000_000 / period_ns;
    let (Some(cpu0), start) = (thread_cpu_ns(), MonotonicNs::now()) else {
        eprintln!("cannot read /proc/thread-self/schedstat");
        return ExitCode::FAILURE;
    };
    let mut deadline = start;
    for _ in 0..wakeups {
        deadline = deadline.saturating_add_ns(period_ns);
        sleep_until(deadline, &stop);
    }
    let wall_ns = MonotonicNs::now().saturating_sub(start);
    let Some(cpu1) = thread_cpu_ns() else {
        eprintln!("cannot read /proc/thread-self/schedstat");
        return ExitCode::FAILURE;
    };
    let cpu_ns = cpu1.saturating_sub(cpu0);
    println!(
        "wakeup_floor_pct_of_core={:.3} per_wakeup_us={:.2} period_ns={period_ns}",
        100.0 * cpu_ns as f64 / wall_ns as f64,
        cpu_ns as f64 / wakeups as f64 / 1e3,
    );
    ExitCode::SUCCESS
}
