//! Clients when the daemon is busy, restarts or dies (issue 12, items 6
//! and 8):
//! - `energyctl run` keeps the command's exit status when energyd dies
//!   while the command runs (it returned 2 and "Broken pipe");
//! - a span batch resent after its answer was lost is stored once;
//! - the shared uploader delivers every span through a rate limit and a
//!   daemon restart, reconnects, and warns once;
//! - a daemon that is up but silent is reported as a timeout, not as
//!   "is energyd running?".

use energyd::config::Config;
use energyd::daemon::build_state;
use energyd::policy::Caller;
use energyd::service::DaemonState;
use shared::client::{Client, ClientError};
use shared::protocol::{Request, Response, SpanBatch};
use shared::uploader::{SpanUploader, UploaderConfig};
use shared::MonotonicNs;
use std::path::{Path, PathBuf};
use std::process::Command;
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

/// A daemon serving `socket` on its own runtime until dropped.
struct Server {
    state: Arc<DaemonState>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Server {
    fn start(socket: &Path, extra: &str) -> Server {
        let state = state_with(extra);
        let bound = energyd::listener::bind(socket, 0o600).unwrap();
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let served = state.clone();
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(1)
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                let _ = energyd::daemon::serve(bound, served, async {
                    let _ = rx.await;
                })
                .await;
            });
        });
        Server {
            state,
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

fn spans_of(state: &DaemonState, pid: u32) -> usize {
    let registry = state.registry.lock().unwrap();
    registry.get(&pid).map_or(0, |records| {
        records
            .iter()
            .map(|t| {
                state
                    .spans
                    .count_in(t.key, MonotonicNs(0), MonotonicNs(u64::MAX))
            })
            .sum()
    })
}

#[test]
fn a_resent_batch_is_stored_once() {
    let state = state_with("");
    let me = std::process::id();
    let root = Caller {
        pid: me,
        uid: 0,
        gid: 0,
        privileged: true,
    };
    assert!(matches!(
        state.handle(
            &root,
            Request::RegisterProcess {
                pid: me,
                include_children: false
            }
        ),
        Response::Registered { tracked: true, .. }
    ));
    let now = MonotonicNs::now();
    let mut batch = SpanBatch::default();
    for i in 0..10u64 {
        batch.push(
            "k",
            MonotonicNs(now.0 - 100 - i),
            MonotonicNs(now.0 - i),
            me,
            me,
        );
    }
    let send = || {
        state.handle(
            &root,
            Request::SubmitSpansOnce {
                batch_id: 77,
                batch: batch.clone(),
            },
        )
    };
    let first = send();
    assert_eq!(
        first,
        Response::SpansAccepted {
            accepted: 10,
            rejected: 0
        }
    );
    // The answer was lost; the client sends the same batch again.
    assert_eq!(send(), first, "the repeat gets the first answer");
    assert_eq!(spans_of(&state, me), 10, "stored once");
    // Another id is another batch.
    assert!(matches!(
        state.handle(
            &root,
            Request::SubmitSpansOnce {
                batch_id: 78,
                batch: batch.clone()
            }
        ),
        Response::SpansAccepted { accepted: 10, .. }
    ));
    assert_eq!(spans_of(&state, me), 20);
}

#[test]
fn uploader_delivers_every_span_through_rate_limits_and_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("energyd.sock");
    // A tight limit: 20 requests/s, burst 5. As root the caller is
    // privileged and not limited; the limit then plays no part, and the
    // restart is what is tested.
    let limits = "[policy]\nrequests_per_sec = 20.0\nburst = 5.0\n";
    let server = Server::start(&socket, limits);
    let me = std::process::id();
    let mut config = UploaderConfig::new(socket.clone(), "test-trainer");
    config.flush_spans = 100;
    config.initial_backoff = Duration::from_millis(20);
    config.max_backoff = Duration::from_millis(200);
    let mut up = SpanUploader::new(config);
    up.register(me, false).expect("register");
    let record = |up: &mut SpanUploader, n: u64| {
        for _ in 0..n {
            let t = MonotonicNs::now();
            up.record("gemm", t, t.saturating_add_ns(0), me, me);
            up.poll();
        }
    };
    record(&mut up, 2_000);
    let counts = up.flush(Duration::from_secs(30));
    assert_eq!(counts.pending, 0, "{counts:?}");
    assert_eq!(counts.accepted, 2_000, "{counts:?}");
    assert_eq!(spans_of(&server.state, me), 2_000);
    // The daemon goes away; the trainer keeps recording.
    drop(server);
    record(&mut up, 500);
    up.poll();
    let warning = up.take_warning().expect("one warning");
    assert!(warning.to_string().contains("unavailable"), "{warning}");
    record(&mut up, 500);
    assert!(up.take_warning().is_none(), "the warning is given once");
    // It comes back on the same socket: the uploader reconnects,
    // registers again and delivers what waited.
    let server = Server::start(&socket, limits);
    let counts = up.flush(Duration::from_secs(30));
    assert_eq!(counts.pending, 0, "{counts:?}");
    assert_eq!(counts.accepted, 3_000, "{counts:?}");
    assert!(counts.reconnects >= 1, "{counts:?}");
    assert_eq!(
        spans_of(&server.state, me),
        1_000,
        "the restarted daemon got the rest"
    );
    assert!(up.take_warning().is_none());
}

#[test]
fn a_silent_daemon_is_a_timeout_not_an_absent_one() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("silent.sock");
    let listener = std::os::unix::net::UnixListener::bind(&socket).unwrap();
    // Accepts and never answers.
    let _hold = std::thread::spawn(move || {
        let conn = listener.accept();
        std::thread::sleep(Duration::from_secs(3));
        drop(conn);
    });
    match Client::connect_with_timeout(&socket, "t", Duration::from_millis(200)) {
        Err(e @ ClientError::Timeout(_)) => {
            assert!(!e.daemon_gone());
            assert!(!e.to_string().contains("running"), "{e}");
        }
        Err(other) => panic!("expected a timeout, got {other}"),
        Ok(_) => panic!("a silent daemon answered"),
    }
}

fn energyctl() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_energyctl"))
}

#[test]
fn energyctl_run_keeps_the_commands_status_when_energyd_dies() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("energyd.sock");
    let config = dir.path().join("energyd.toml");
    std::fs::write(&config, SIMULATED).unwrap();
    let mut daemon = Command::new(env!("CARGO_BIN_EXE_energyd"))
        .args(["--user", "--log", "warn", "--socket"])
        .arg(&socket)
        .arg("--config")
        .arg(&config)
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while Client::connect(&socket, "wait").is_err() {
        assert!(Instant::now() < deadline, "energyd did not start");
        std::thread::sleep(Duration::from_millis(20));
    }
    // The command kills energyd, waits until it is gone (reaped by the
    // thread below: a zombie still answers `kill -0`), and exits 7.
    let script = format!(
        "kill -KILL {pid}; while kill -0 {pid} 2>/dev/null; do sleep 0.02; done; exit 7",
        pid = daemon.id()
    );
    let reaper = std::thread::spawn(move || daemon.wait());
    let out = Command::new(energyctl())
        .arg("--socket")
        .arg(&socket)
        .args(["run", "--", "sh", "-c", &script])
        .output()
        .unwrap();
    let _ = reaper.join();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(7), "stderr: {stderr}");
    assert_eq!(
        stderr
            .lines()
            .filter(|l| l.starts_with("energyctl:"))
            .count(),
        1,
        "one line says why there is no report: {stderr}"
    );
}
