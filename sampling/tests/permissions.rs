//! Permission denied, for real: a zone whose `energy_uj` the reading user
//! may not open is one per-zone problem, and the other zones still open;
//! perf counters on another user's process are "not permitted" per counter.
//!
//! Tests run as root here, and root reads a `chmod 0400` file anyway. So,
//! when root, the test re-executes its own test binary as `nobody`
//! (`CommandExt::uid`) with the fixture path in an environment variable;
//! that child does the unprivileged reading and prints what it found on
//! `PROBE` lines, which the parent checks. When not root, the fixture file
//! is made mode 000, which its non-root owner cannot read either, and the
//! same checks run in-process. Either way the kernel refuses the `open`:
//! nothing is simulated.

use sampling::discovery::SourceProblem;
use sampling::fixtures::PowercapTree;
use sampling::perf::{CounterValue, ProcessCounters};
use sampling::powercap;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::Command;

/// Set in the re-executed child: the fixture root to probe.
const PROBE_ROOT_ENV: &str = "SAMPLING_PERMISSION_PROBE_ROOT";
/// Set in the re-executed child: a pid owned by another user.
const PROBE_PID_ENV: &str = "SAMPLING_PERMISSION_PROBE_PID";
/// `nobody` on Debian.
const NOBODY: u32 = 65534;
const TEST_NAME: &str = "unreadable_zone_and_foreign_process_are_reported_per_item";

/// What the unprivileged side found.
#[derive(Debug, Default)]
struct Findings {
    opened: Vec<String>,
    problems: Vec<SourceProblem>,
    task_clock: Option<String>,
}

/// The unprivileged reading, run in whichever process lacks the rights.
fn probe(root: &Path, foreign_pid: u32) -> Findings {
    let (samplers, problems) = powercap::open_all(root);
    let counters = ProcessCounters::open(Path::new("/proc"), foreign_pid)
        .read()
        .task_clock_ns;
    Findings {
        opened: samplers.iter().map(|s| s.zone().zone.clone()).collect(),
        problems,
        task_clock: match counters {
            CounterValue::Count(_) => None,
            CounterValue::Unsupported(why) => Some(why),
        },
    }
}

fn print_probe(f: &Findings) {
    for z in &f.opened {
        println!("PROBE opened\t{z}");
    }
    for p in &f.problems {
        println!("PROBE problem\t{}\t{}", p.what, p.why);
    }
    if let Some(why) = &f.task_clock {
        println!("PROBE task_clock_unsupported\t{why}");
    }
}

fn parse_probe(stdout: &str) -> Findings {
    let mut f = Findings::default();
    // The harness's own "test … " may start the first line.
    for line in stdout
        .lines()
        .filter_map(|l| l.find("PROBE ").map(|i| &l[i + "PROBE ".len()..]))
    {
        let fields: Vec<&str> = line.split('\t').collect();
        match fields.as_slice() {
            ["opened", zone] => f.opened.push(zone.to_string()),
            ["problem", what, why] => f.problems.push(SourceProblem {
                what: what.to_string(),
                why: why.to_string(),
            }),
            ["task_clock_unsupported", why] => f.task_clock = Some(why.to_string()),
            other => panic!("unexpected probe line {other:?}"),
        }
    }
    f
}

#[test]
fn unreadable_zone_and_foreign_process_are_reported_per_item() {
    // Child role: probe and report, nothing else.
    if let Ok(root) = std::env::var(PROBE_ROOT_ENV) {
        let pid: u32 = std::env::var(PROBE_PID_ENV)
            .expect("parent passes the pid")
            .parse()
            .expect("pid is a number");
        print_probe(&probe(Path::new(&root), pid));
        return;
    }

    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let tree = PowercapTree::builder()
        .packages(2)
        .dram(true)
        .build(dir.path())
        .unwrap();
    let denied = dir.path().join("intel-rapl:1:1").join("energy_uj");
    let root_user = nix::unistd::geteuid().is_root();
    let findings = if root_user {
        // Root-only, like real energy_uj since CVE-2020-8694.
        std::fs::set_permissions(&denied, std::fs::Permissions::from_mode(0o400)).unwrap();
        let out = Command::new(std::env::current_exe().unwrap())
            .args(["--exact", TEST_NAME, "--nocapture", "--test-threads=1"])
            .env(PROBE_ROOT_ENV, tree.root())
            .env(PROBE_PID_ENV, std::process::id().to_string())
            .uid(NOBODY)
            .gid(NOBODY)
            .output()
            .expect("re-run the test binary as nobody");
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "child failed: {stdout}{}",
            String::from_utf8_lossy(&out.stderr)
        );
        parse_probe(&stdout)
    } else {
        std::fs::set_permissions(&denied, std::fs::Permissions::from_mode(0o000)).unwrap();
        // pid 1 belongs to root (or to another user in a container).
        probe(tree.root(), 1)
    };

    assert_eq!(
        findings.opened,
        vec![
            "intel-rapl:0",
            "intel-rapl:0:0",
            "intel-rapl:0:1",
            "intel-rapl:1",
            "intel-rapl:1:0"
        ],
        "every other zone opens: {findings:?}"
    );
    assert_eq!(findings.problems.len(), 1, "{findings:?}");
    let problem = &findings.problems[0];
    assert_eq!(problem.what, "intel-rapl:1:1");
    assert!(
        problem.why.contains("permission denied") && problem.why.contains("energy_uj"),
        "{problem:?}"
    );
    let why = findings
        .task_clock
        .expect("perf must refuse another user's process");
    assert!(why.contains("not permitted"), "{why}");
}
