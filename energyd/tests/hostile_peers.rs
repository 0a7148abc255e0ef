//! Regression tests for issue 12 (energyd under attack): each test drives
//! the daemon the way the probe did and checks the fix.
//!
//! - item 1: made-up spans on an idle process give an unprivileged caller
//!   no kernel figures, and no numeric diagnostics;
//! - item 2: one uid's connections cannot lock others (root included) out;
//!   a refused peer gets `ResourceExhausted` at once; silent unprivileged
//!   connections are closed after the short idle timeout;
//! - item 4: span budgets per uid, breakdowns charged by their work, and a
//!   bound on concurrent breakdowns;
//! - item 7: a pid reused by another uid does not delete the first uid's
//!   record;
//! - item 10: an idle daemon samples at the idle rate, and at the full
//!   rate as soon as someone tracks; answers stay right across the change.
//!
//! Unprivileged peers over the socket are this test binary re-executed
//! under uid 65534 (when run as root) or this process itself (when not).

use energyd::config::Config;
use energyd::daemon::build_state;
use energyd::policy::{BreakdownGate, Caller};
use energyd::service::DaemonState;
use shared::client::Client;
use shared::protocol::{ErrorCode, Request, Response, SpanBatch};
use shared::MonotonicNs;
use std::io::{BufRead, Write};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

const SIMULATED: &str = r#"
[sources]
powercap_root = "/nonexistent"
msr_root = "/nonexistent"
nvml = false
[sources.simulated]
curve = { shape = "constant", watts = 10.0 }
"#;

fn state_with(extra: &str) -> Arc<DaemonState> {
    let config = Config::parse(&format!("{extra}\n{SIMULATED}")).expect("config");
    build_state(config, true).expect("state")
}

fn me() -> u32 {
    nix::unistd::geteuid().as_raw()
}

/// This uid, seen as unprivileged (the handler decides by the flag).
fn user() -> Caller {
    Caller {
        pid: std::process::id(),
        uid: me(),
        gid: nix::unistd::getegid().as_raw(),
        privileged: false,
    }
}

const ROOT: Caller = Caller {
    pid: 1,
    uid: 0,
    gid: 0,
    privileged: true,
};

fn idle_child() -> std::process::Child {
    Command::new("sleep")
        .arg("60")
        .spawn()
        .expect("spawn sleep")
}

/// Waits (bounded) until `cond` holds; the time taken is not asserted.
fn wait_for(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !cond() {
        assert!(Instant::now() < deadline, "{what}: not reached in 20 s");
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn register(state: &DaemonState, caller: &Caller, pid: u32) {
    match state.handle(
        caller,
        Request::RegisterProcess {
            pid,
            include_children: false,
        },
    ) {
        Response::Registered { tracked: true, .. } => {}
        other => panic!("register {pid}: {other:?}"),
    }
}

// ---------------------------------------------------------------- item 1

/// Whether `note` states a power or energy figure: a number followed by a
/// unit of power or energy.
fn has_figure(note: &str) -> bool {
    let words: Vec<&str> = note.split_whitespace().collect();
    words.windows(2).any(|w| {
        let unit = w[1].trim_end_matches([',', ')', ';', '.', ':']);
        w[0].ends_with(|c: char| c.is_ascii_digit())
            && matches!(unit, "W" | "mW" | "µW" | "J" | "mJ" | "µJ" | "kJ")
    })
}

#[test]
fn made_up_spans_on_an_idle_process_reveal_nothing_to_an_unprivileged_caller() {
    let state = state_with("");
    let mut child = idle_child();
    let pid = child.id();
    let user = user();
    register(&state, &user, pid);
    let start = MonotonicNs::now();
    std::thread::sleep(Duration::from_millis(600));
    // One 1 ms span every 10 ms: the probe's pattern.
    let mut batch = SpanBatch::default();
    let mut t = start.saturating_add_ns(20_000_000);
    let end = MonotonicNs::now().saturating_sub_ns(20_000_000);
    while t < end {
        batch.push("probe", t, t.saturating_add_ns(1_000_000), pid, pid);
        t = t.saturating_add_ns(10_000_000);
    }
    let n = batch.spans.len();
    match state.handle(&user, Request::SubmitSpans(batch)) {
        Response::SpansAccepted { accepted, .. } => assert_eq!(accepted as usize, n),
        other => panic!("{other:?}"),
    }
    let breakdown = |caller: &Caller| match state.handle(
        caller,
        Request::Breakdown {
            pid,
            from: Some(start),
            to: Some(end),
        },
    ) {
        Response::Breakdown(b) => b,
        other => panic!("{other:?}"),
    };
    let b = breakdown(&user);
    assert!(
        b.kernels
            .iter()
            .all(|k| k.energy_j.is_none() && k.count == 0)
            || b.kernels.is_empty(),
        "kernel figures from made-up spans on an idle process: {:?}",
        b.kernels
    );
    for note in &b.notes {
        assert!(
            !has_figure(note),
            "numeric diagnostic for an unprivileged caller: {note}"
        );
    }
    // A privileged caller still gets the spans attributed (the test would
    // be empty otherwise).
    let b = breakdown(&ROOT);
    assert!(b.kernels.iter().any(|k| k.count > 0), "{:?}", b.kernels);
    let _ = child.kill();
    let _ = child.wait();
}

// ---------------------------------------------------------------- item 4

#[test]
fn spans_are_bounded_per_uid() {
    let state = state_with("[policy]\nmax_spans_per_uid = 1000\n");
    let mut a = idle_child();
    let mut b = idle_child();
    let user = user();
    register(&state, &user, a.id());
    register(&state, &user, b.id());
    let now = MonotonicNs::now();
    let mut batch = SpanBatch::default();
    for i in 0..800u64 {
        for pid in [a.id(), b.id()] {
            batch.push(
                "k",
                MonotonicNs(now.0 - 1_000_000 - i),
                MonotonicNs(now.0 - i),
                pid,
                1,
            );
        }
    }
    match state.handle(&user, Request::SubmitSpans(batch)) {
        Response::SpansAccepted { accepted, rejected } => {
            assert_eq!((accepted, rejected), (1000, 600), "1600 spans, budget 1000")
        }
        other => panic!("{other:?}"),
    }
    let _ = a.kill();
    let _ = b.kill();
    let _ = a.wait();
    let _ = b.wait();
}

#[test]
fn a_breakdown_costs_tokens_by_the_spans_it_considers() {
    let state = state_with(
        "[policy]\nrequests_per_sec = 0.001\nburst = 50\nbreakdown_spans_per_token = 10\n",
    );
    let mut child = idle_child();
    let pid = child.id();
    let user = user();
    register(&state, &user, pid);
    let now = MonotonicNs::now();
    let mut batch = SpanBatch::default();
    for i in 0..400u64 {
        batch.push(
            "k",
            MonotonicNs(now.0 - 1_000 - i),
            MonotonicNs(now.0 - i),
            pid,
            1,
        );
    }
    assert!(matches!(
        state.handle(&user, Request::SubmitSpans(batch)),
        Response::SpansAccepted { accepted: 400, .. }
    ));
    let ask = || {
        state.handle(
            &user,
            Request::Breakdown {
                pid,
                from: None,
                to: None,
            },
        )
    };
    // 2 tokens spent; this one costs 1 + 40.
    assert!(matches!(ask(), Response::Breakdown(_)));
    // 7 left: the next costs 41 again.
    match ask() {
        Response::Error {
            code: ErrorCode::RateLimited,
            ..
        } => {}
        other => panic!("a second 400-span breakdown within the burst: {other:?}"),
    }
    let _ = child.kill();
    let _ = child.wait();
}

#[test]
fn concurrent_breakdowns_are_bounded_per_uid_and_in_all() {
    let gate = BreakdownGate::new(2, 1);
    let u1 = user();
    let u2 = Caller { uid: 4242, ..u1 };
    let u3 = Caller { uid: 4343, ..u1 };
    let first = gate.enter(&u1).expect("first");
    assert!(gate.enter(&u1).is_none(), "one per uid");
    let second = gate.enter(&u2).expect("another uid");
    assert!(gate.enter(&u3).is_none(), "two in all");
    assert!(
        gate.enter(&ROOT).is_some(),
        "privileged callers are not counted"
    );
    drop(first);
    assert!(
        gate.enter(&u3).is_some(),
        "a finished breakdown frees its place"
    );
    drop(second);
}

// ---------------------------------------------------------------- item 7

/// A fake procfs: `stat` for the machine, and `<pid>/stat`, `<pid>/status`
/// for one process whose owner and start time the test sets. Files are
/// rewritten in place, as procfs content changes under open descriptors.
struct FakeProc {
    root: tempfile::TempDir,
}

impl FakeProc {
    const PID: u32 = 4711;

    fn new() -> FakeProc {
        let root = tempfile::tempdir().unwrap();
        std::fs::write(
            root.path().join("stat"),
            "cpu  100 0 100 1000 0 0 0 0 0 0\ncpu0 100 0 100 1000 0 0 0 0 0 0\n",
        )
        .unwrap();
        std::fs::create_dir(root.path().join(Self::PID.to_string())).unwrap();
        FakeProc { root }
    }

    fn path(&self) -> &Path {
        self.root.path()
    }

    /// The process is `state` (R or Z), owned by `uid`, started at `start`.
    fn set(&self, state: char, uid: u32, start: u64) {
        let dir = self.root.path().join(Self::PID.to_string());
        let stat = format!(
            "{} (worker) {state} 1 {p} {p} 0 -1 4194304 100 0 0 0 5 5 0 0 20 0 1 0 {start} \
             1000000 100 18446744073709551615 1 1 0 0 0 0 0 0 0 0 0 0 17 0 0 0 0 0 0 0 0 0 0 0 0 0 0\n",
            Self::PID,
            p = Self::PID,
        );
        let status = format!(
            "Name:\tworker\nState:\t{state}\nUid:\t{uid}\t{uid}\t{uid}\t{uid}\nGid:\t{uid}\t{uid}\t{uid}\t{uid}\nGroups:\t\n"
        );
        for (name, text) in [("stat", stat), ("status", status)] {
            let mut f = std::fs::OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .open(dir.join(name))
                .unwrap();
            f.write_all(text.as_bytes()).unwrap();
        }
    }
}

#[test]
fn a_reused_pid_does_not_delete_another_uids_record() {
    let proc = FakeProc::new();
    let (alice, bob) = (5001u32, 5002u32);
    proc.set('R', alice, 1_000);
    let state = state_with(&format!(
        "[activity]\nproc_root = \"{}\"\nuse_task_clock = false\n",
        proc.path().display()
    ));
    let as_uid = |uid| Caller {
        pid: 1,
        uid,
        gid: uid,
        privileged: false,
    };
    let pid = FakeProc::PID;
    register(&state, &as_uid(alice), pid);
    let mut batch = SpanBatch::default();
    let now = MonotonicNs::now();
    batch.push("alice_kernel", now.saturating_sub_ns(2_000), now, pid, pid);
    assert!(matches!(
        state.handle(&as_uid(alice), Request::SubmitSpans(batch)),
        Response::SpansAccepted { accepted: 1, .. }
    ));
    // Alice's process exits; the tracker sees it.
    proc.set('Z', alice, 1_000);
    wait_for("exit seen", || {
        state
            .registry
            .lock()
            .unwrap()
            .values()
            .flatten()
            .all(|t| state.tracker.exited(t.key))
    });
    // Bob's new process gets the same pid.
    proc.set('R', bob, 9_000);
    register(&state, &as_uid(bob), pid);
    // Alice's record, and her spans, are still hers.
    let alice_key = state.registry.lock().unwrap()[&pid]
        .iter()
        .find(|t| t.owner_uid == alice)
        .map(|t| t.key)
        .expect("alice's record survives bob's registration");
    assert_eq!(
        state
            .spans
            .count_in(alice_key, MonotonicNs(0), MonotonicNs(u64::MAX)),
        1,
        "alice's spans survive"
    );
    match state.handle(
        &as_uid(alice),
        Request::Breakdown {
            pid,
            from: None,
            to: None,
        },
    ) {
        Response::Breakdown(_) => {}
        other => panic!("alice lost her record to a pid reuse: {other:?}"),
    }
    // And Bob sees only his own record, without Alice's spans.
    match state.handle(
        &as_uid(bob),
        Request::Breakdown {
            pid,
            from: None,
            to: None,
        },
    ) {
        Response::Breakdown(b) => assert!(b.kernels.is_empty(), "{:?}", b.kernels),
        other => panic!("{other:?}"),
    }
}

// ---------------------------------------------------------------- item 10

#[test]
fn idle_daemon_samples_slowly_and_answers_stay_right_at_full_rate() {
    let state = state_with("[sampling]\nidle_period_ms = 100\nfull_rate_hold_ms = 200\n");
    let id = state
        .engine
        .sources()
        .iter()
        .find(|s| s.name == "simulated")
        .expect("the simulated source")
        .id;
    let samples_in = |from: MonotonicNs, to: MonotonicNs| {
        state
            .engine
            .samples(id, from, to)
            .into_iter()
            .filter(|(t, _)| *t >= from && *t <= to)
            .count()
    };
    // Nobody asks anything: after a second, a second of history holds
    // about 10 samples of a 1 ms source (a loaded machine only has fewer).
    std::thread::sleep(Duration::from_millis(1300));
    let now = MonotonicNs::now();
    let idle = samples_in(now.saturating_sub_ns(1_000_000_000), now);
    assert!(idle <= 30, "{idle} samples in an idle second (10 expected)");
    // Someone tracks a process: full rate from now on.
    let mut child = idle_child();
    let since = MonotonicNs::now();
    register(&state, &ROOT, child.id());
    wait_for("full rate", || samples_in(since, MonotonicNs::now()) >= 200);
    // Energy across the change is still the constant 10 W times the time.
    let now = MonotonicNs::now();
    let from = now.saturating_sub_ns(1_500_000_000);
    let to = now.saturating_sub_ns(50_000_000);
    let e = state.engine.energy(id, from, to).unwrap();
    let expected = 10.0 * to.saturating_sub(from) as f64 * 1e-9;
    assert!(
        (e.joules - expected).abs() <= 0.01 * expected + e.uncertainty_j,
        "{} J over an interval spanning the rate change, {expected} J expected ({e:?})",
        e.joules
    );
    let _ = child.kill();
    let _ = child.wait();
}

// ---------------------------------------------------------------- item 2

/// The unprivileged side of the connection test, run in a child process:
/// opens `HOSTILE_N` connections, prints `held OK REFUSED`, waits for a
/// line on stdin, sleeps `HOSTILE_WAIT_MS`, prints `alive N` (connections
/// still answering), and exits. Does nothing unless `HOSTILE_SOCKET` is set.
#[test]
fn hostile_helper() {
    let Ok(socket) = std::env::var("HOSTILE_SOCKET") else {
        return;
    };
    let n: usize = std::env::var("HOSTILE_N").unwrap().parse().unwrap();
    let wait_ms: u64 = std::env::var("HOSTILE_WAIT_MS").unwrap().parse().unwrap();
    let mut held = Vec::new();
    let mut refused = 0;
    for _ in 0..n {
        match Client::connect_with_timeout(Path::new(&socket), "hostile", Duration::from_secs(10)) {
            Ok(c) => held.push(c),
            Err(shared::client::ClientError::Daemon {
                code: ErrorCode::ResourceExhausted,
                ..
            }) => refused += 1,
            Err(e) => panic!("unexpected: {e}"),
        }
    }
    // Written to the descriptor, not through `println!`, which the test
    // harness may capture.
    let mut out = std::io::stdout();
    writeln!(out, "held {} {refused}", held.len()).unwrap();
    out.flush().unwrap();
    let mut line = String::new();
    std::io::stdin().lock().read_line(&mut line).unwrap();
    std::thread::sleep(Duration::from_millis(wait_ms));
    let alive = held
        .iter_mut()
        .map(|c| c.status().is_ok())
        .filter(|ok| *ok)
        .count();
    writeln!(out, "alive {alive}").unwrap();
    out.flush().unwrap();
}

struct Server {
    socket: PathBuf,
    _dir: tempfile::TempDir,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Server {
    fn start(extra: &str) -> Server {
        let dir = tempfile::tempdir().unwrap();
        // Reachable by the unprivileged helper.
        std::fs::set_permissions(
            dir.path(),
            std::os::unix::fs::PermissionsExt::from_mode(0o755),
        )
        .unwrap();
        let socket = dir.path().join("energyd.sock");
        let state = state_with(extra);
        let bound = energyd::listener::bind(&socket, 0o666).unwrap();
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                let _ = energyd::daemon::serve(bound, state, async {
                    let _ = rx.await;
                })
                .await;
            });
        });
        Server {
            socket,
            _dir: dir,
            stop: Some(tx),
            thread: Some(thread),
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

#[test]
fn one_uid_cannot_lock_out_others_and_idle_connections_are_closed() {
    let server = Server::start("[server]\nmax_connections = 64\nidle_timeout_ms = 300\n");
    let mut cmd = Command::new(std::env::current_exe().unwrap());
    cmd.args([
        "hostile_helper",
        "--exact",
        "--nocapture",
        "--test-threads=1",
    ])
    .env("HOSTILE_SOCKET", &server.socket)
    .env("HOSTILE_N", "64")
    .env("HOSTILE_WAIT_MS", "1500")
    .stdin(Stdio::piped())
    .stdout(Stdio::piped());
    let root = me() == 0;
    if root {
        // Unprivileged for real: uid 65534.
        cmd.uid(65534).gid(65534);
    }
    let mut helper = cmd.spawn().unwrap();
    let mut out = std::io::BufReader::new(helper.stdout.take().unwrap());
    let mut line = String::new();
    let held = loop {
        line.clear();
        assert!(out.read_line(&mut line).unwrap() > 0, "helper ended early");
        // libtest may print "test hostile_helper ... " before it.
        if let Some(rest) = line.trim().split("held ").nth(1) {
            let v: Vec<usize> = rest.split(' ').map(|x| x.parse().unwrap()).collect();
            break (v[0], v[1]);
        }
    };
    assert_eq!(held.0 + held.1, 64);
    assert!(
        held.0 <= 32 && held.1 >= 32,
        "one uid held {} of 64 connections, {} refused",
        held.0,
        held.1
    );
    if root {
        // Root still gets in while the other uid holds everything it can.
        let mut c = Client::connect_with_timeout(&server.socket, "root", Duration::from_secs(10))
            .expect("root locked out");
        c.status().expect("root served");
    }
    helper.stdin.take().unwrap().write_all(b"go\n").unwrap();
    let alive = loop {
        line.clear();
        assert!(out.read_line(&mut line).unwrap() > 0, "helper ended early");
        if let Some(rest) = line.trim().split("alive ").nth(1) {
            break rest.parse::<usize>().unwrap();
        }
    };
    assert!(helper.wait().unwrap().success());
    assert_eq!(
        alive, 0,
        "silent unprivileged connections outlived the idle timeout"
    );
}
