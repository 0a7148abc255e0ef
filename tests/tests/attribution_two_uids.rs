//! Two processes of two different uids run at once under the daemon
//! (simulated constant-power source plus the estimated CPU source): each
//! uid registers, reports spans for and breaks down only its own process;
//! neither can see or feed the other's; and the processes' shares, with
//! the rest of the machine, add up to the machine's energy, each share in
//! proportion to the CPU the process used.

use integration_tests::{probe, skip_unless_root, Daemon, NOBODY, OTHER_UID, SIMULATED_CONFIG};
use shared::protocol::Breakdown;
use shared::{MonotonicNs, Provenance, SourceId};
use std::os::unix::process::CommandExt;
use std::process::{Child, Command};
use std::time::Duration;

/// The one-shot client this package builds, run under other uids.
const PROBE_CLIENT: &str = env!("CARGO_BIN_EXE_probe-client");

/// A CPU-bound shell loop owned by `uid` (no child processes); killed by
/// the test.
fn busy_loop(uid: u32) -> Child {
    Command::new("sh")
        .arg("-c")
        .arg("while :; do :; done")
        .uid(uid)
        .gid(uid)
        .spawn()
        .expect("spawn busy loop")
}

/// utime + stime of `pid` in ns, from procfs (clock ticks of 10 ms).
fn cpu_ns(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let after_comm = &stat[stat.rfind(')').unwrap() + 2..];
    let fields: Vec<&str> = after_comm.split_whitespace().collect();
    // Fields 14 and 15 of stat(5); after the comm, indices 11 and 12.
    let ticks: u64 = fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap();
    ticks as f64 * 10_000_000.0
}

fn domain(b: &Breakdown, id: SourceId) -> &shared::protocol::DomainShare {
    b.domains
        .iter()
        .find(|d| d.source == id)
        .expect("domain present")
}

#[test]
fn two_uids_see_only_their_own_breakdown_and_shares_add_up() {
    if skip_unless_root("two_uids_see_only_their_own_breakdown_and_shares_add_up") {
        return;
    }
    let d = Daemon::start(SIMULATED_CONFIG);
    let mut a = busy_loop(NOBODY);
    let mut b = busy_loop(OTHER_UID);
    let (pa, pb) = (a.id().to_string(), b.id().to_string());

    // Each uid registers its own process, and not the other's.
    assert_eq!(
        probe(PROBE_CLIENT, &d.socket, NOBODY, &["register", &pa]),
        "ok"
    );
    assert_eq!(
        probe(PROBE_CLIENT, &d.socket, OTHER_UID, &["register", &pb]),
        "ok"
    );
    let from = MonotonicNs::now();
    let cpu_from = [cpu_ns(a.id()), cpu_ns(b.id())];
    std::thread::sleep(Duration::from_millis(1500));

    // Spans: accepted for one's own process, refused for the other's.
    assert_eq!(
        probe(PROBE_CLIENT, &d.socket, NOBODY, &["spans", &pa]),
        "ok 100 0"
    );
    assert_eq!(
        probe(PROBE_CLIENT, &d.socket, OTHER_UID, &["spans", &pa]),
        "ok 0 100"
    );
    assert_eq!(
        probe(PROBE_CLIENT, &d.socket, OTHER_UID, &["spans", &pb]),
        "ok 100 0"
    );
    let to = MonotonicNs::now();
    let cpu_to = [cpu_ns(a.id()), cpu_ns(b.id())];

    // Each sees its own breakdown, with energy in it, and not the other's.
    for (uid, own, other) in [(NOBODY, &pa, &pb), (OTHER_UID, &pb, &pa)] {
        let answer = probe(PROBE_CLIENT, &d.socket, uid, &["breakdown", own]);
        let total: f64 = answer
            .strip_prefix("ok ")
            .unwrap_or_else(|| panic!("uid {uid} own breakdown: {answer}"))
            .parse()
            .unwrap();
        assert!(total > 0.0, "uid {uid}: own process got no energy");
        let denied = probe(PROBE_CLIENT, &d.socket, uid, &["breakdown", other]);
        assert!(
            denied.starts_with("error PermissionDenied"),
            "uid {uid} saw the other uid's process: {denied}"
        );
    }

    // Root sees both, over the same interval, and they add up.
    let mut root = d.client();
    let sources = root.sources().unwrap();
    let ba = root.breakdown(a.id(), Some(from), Some(to)).unwrap();
    let bb = root.breakdown(b.id(), Some(from), Some(to)).unwrap();
    let machine = root.energy(from, to).unwrap();
    let ncpu = std::thread::available_parallelism().unwrap().get() as f64;
    for s in &sources {
        let (da, db) = (domain(&ba, s.id), domain(&bb, s.id));
        let m = machine
            .sources
            .iter()
            .find(|e| e.source == s.id)
            .expect("machine energy per source");
        // Both breakdowns speak of the same machine energy as `energy`.
        assert!((da.machine_j - m.joules).abs() <= 1e-9 * m.joules.max(1.0));
        assert!((db.machine_j - m.joules).abs() <= 1e-9 * m.joules.max(1.0));
        assert!(m.joules > 0.0, "{}: no machine energy", s.name);
        let rest = m.joules - da.process_j - db.process_j;
        assert!(
            rest >= -1e-6 * m.joules,
            "{}: processes {} + {} exceed the machine's {}",
            s.name,
            da.process_j,
            db.process_j,
            m.joules
        );
        for (name, share) in [("a", da), ("b", db)] {
            assert!(
                share.process_j > 0.0,
                "{}: process {name} got nothing",
                s.name
            );
            assert!(share.process_dynamic_j <= share.process_j + 1e-12);
            assert!(share.unattributed_j <= share.process_j + 1e-9);
            assert_eq!(share.provenance, s.provenance);
            assert!(share.uncertainty_j.is_finite());
        }
        // Under constant power all energy is static, split by the share of
        // the machine's CPU capacity each process held: check it against
        // the processes' own procfs CPU time (10 ms ticks, hence the slack).
        if s.provenance == Provenance::Simulated {
            let capacity_ns = ncpu * to.saturating_sub(from) as f64;
            for (i, share) in [da, db].into_iter().enumerate() {
                let used = (cpu_to[i] - cpu_from[i]) / capacity_ns;
                let fraction = share.process_j / m.joules;
                let slack = 0.25 * used + 3.0 * 10_000_000.0 / capacity_ns;
                assert!(
                    (fraction - used).abs() <= slack,
                    "process {i}: {fraction:.4} of the energy, {used:.4} of the CPU capacity"
                );
            }
        }
    }
    // The spans appear, as one kernel type, in the owner's breakdown only.
    let probe_kernel = |b: &Breakdown| b.kernels.iter().find(|k| k.name == "probe").cloned();
    let ka = probe_kernel(&ba)
        .unwrap_or_else(|| panic!("a's spans not in its breakdown: {:?}", ba.notes));
    assert_eq!(ka.count, 100);
    assert_eq!(ka.total_time_ns, 100 * 1_000_000);
    assert!(probe_kernel(&bb).is_some_and(|k| k.count == 100));
    assert!(ba.kernels.len() == 1 && bb.kernels.len() == 1);

    let _ = a.kill();
    let _ = b.kill();
    let _ = a.wait();
    let _ = b.wait();
}
