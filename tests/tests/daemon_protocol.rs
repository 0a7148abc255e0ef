//! energyd, started in-process on a temporary socket, driven as clients
//! would: handshake, version mismatch, uid separation, hostile frames,
//! concurrency, the live stream, a clean stop. (The daemon *process*: its
//! signals, command line and energyctl are tested in energyd/tests.)

use integration_tests::{probe, skip_unless_root, Daemon, NOBODY, OTHER_UID, SIMULATED_CONFIG};
use shared::client::{Client, ClientError};
use shared::frame::{self, MAX_FRAME_LEN};
use shared::protocol::{ErrorCode, Request, Response, PROTOCOL_VERSION};
use shared::{MonotonicNs, Provenance};
use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::os::unix::process::CommandExt;
use std::process::Command;
use std::time::Duration;

/// The one-shot client this package builds, run under other uids.
const PROBE_CLIENT: &str = env!("CARGO_BIN_EXE_probe-client");

fn raw_hello(socket: &std::path::Path) -> UnixStream {
    let mut s = UnixStream::connect(socket).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    frame::write_frame(
        &mut s,
        &Request::Hello {
            protocol_version: PROTOCOL_VERSION,
            client_name: "raw".into(),
        },
    )
    .unwrap();
    let resp: Response = frame::read_frame(&mut s, MAX_FRAME_LEN).unwrap().unwrap();
    assert!(matches!(resp, Response::Hello { .. }), "{resp:?}");
    s
}

#[test]
fn handshake_reports_version_peer_and_simulated_source() {
    let d = Daemon::start(SIMULATED_CONFIG);
    let mut c = d.client();
    assert_eq!(c.daemon_version, env!("CARGO_PKG_VERSION"));
    assert_eq!(c.peer.uid, nix::unistd::geteuid().as_raw());
    let sources = c.sources().unwrap();
    let sim = sources
        .iter()
        .find(|s| s.provenance == Provenance::Simulated)
        .expect("simulated source listed");
    // 50 W constant: one second of history holds about 50 J.
    std::thread::sleep(Duration::from_millis(300));
    let now = MonotonicNs::now();
    let e = c
        .energy(
            now.saturating_sub_ns(200_000_000),
            now.saturating_sub_ns(50_000_000),
        )
        .unwrap();
    let got = e.sources.iter().find(|s| s.source == sim.id).unwrap();
    assert!(
        (got.joules - 7.5).abs() < 0.2,
        "150 ms at 50 W should be 7.5 J, got {}",
        got.joules
    );
    assert_eq!(got.provenance, Provenance::Simulated);
    assert!(got.coverage > 0.99);

    // Stopped as by SIGTERM, with a client still connected: the server
    // ends cleanly and removes its socket file.
    let socket = d.socket.clone();
    d.stop().expect("the server stops cleanly");
    assert!(!socket.exists(), "socket file removed");
}

#[test]
fn version_mismatch_is_a_clear_error() {
    let d = Daemon::start(SIMULATED_CONFIG);
    match Client::connect_with_version(&d.socket, "old", PROTOCOL_VERSION + 7) {
        Err(ClientError::Daemon {
            code: ErrorCode::VersionMismatch,
            message,
        }) => {
            assert!(
                message.contains(&format!("version {}", PROTOCOL_VERSION + 7)),
                "{message}"
            );
        }
        Err(e) => panic!("expected VersionMismatch, got {e}"),
        Ok(_) => panic!("expected VersionMismatch, got a connection"),
    }
    // A first message other than Hello is refused too.
    let mut s = UnixStream::connect(&d.socket).unwrap();
    frame::write_frame(&mut s, &Request::Status).unwrap();
    let resp: Response = frame::read_frame(&mut s, MAX_FRAME_LEN).unwrap().unwrap();
    assert!(
        matches!(
            resp,
            Response::Error {
                code: ErrorCode::HandshakeRequired,
                ..
            }
        ),
        "{resp:?}"
    );
}

#[test]
fn a_second_uid_cannot_see_or_take_the_first_uids_process() {
    if skip_unless_root("a_second_uid_cannot_see_or_take_the_first_uids_process") {
        return;
    }
    let d = Daemon::start(SIMULATED_CONFIG);
    // A process of uid NOBODY, registered by a client running as NOBODY.
    let mut victim = Command::new("sleep")
        .arg("30")
        .uid(NOBODY)
        .gid(NOBODY)
        .spawn()
        .unwrap();
    let pid = victim.id().to_string();
    assert_eq!(
        probe(PROBE_CLIENT, &d.socket, NOBODY, &["register", &pid]),
        "ok"
    );
    assert!(probe(PROBE_CLIENT, &d.socket, NOBODY, &["breakdown", &pid]).starts_with("ok"));

    // Another unprivileged uid is refused everything about it.
    for action in ["breakdown", "register", "unregister"] {
        let answer = probe(PROBE_CLIENT, &d.socket, OTHER_UID, &[action, &pid]);
        assert!(
            answer.starts_with("error PermissionDenied"),
            "{action}: {answer}"
        );
    }
    // It does not even count among the other uid's tracked processes.
    assert_eq!(
        probe(PROBE_CLIENT, &d.socket, OTHER_UID, &["status"]),
        "ok 0"
    );
    assert_eq!(probe(PROBE_CLIENT, &d.socket, NOBODY, &["status"]), "ok 1");

    // Unprivileged machine-wide readings are coarsened to the 100 ms grid.
    let energy = probe(PROBE_CLIENT, &d.socket, OTHER_UID, &["energy"]);
    let fields: Vec<u64> = energy
        .split_whitespace()
        .skip(1)
        .take(2)
        .map(|x| x.parse().unwrap())
        .collect();
    assert_eq!(fields[0] % 100_000_000, 0, "{energy}");
    assert_eq!(fields[1] % 100_000_000, 0, "{energy}");

    // Root sees it.
    let b = d.client().breakdown(victim.id(), None, None).unwrap();
    assert_eq!(b.pid, victim.id());
    victim.kill().unwrap();
    victim.wait().unwrap();
}

#[test]
fn oversized_and_truncated_frames_end_only_that_connection() {
    let d = Daemon::start(SIMULATED_CONFIG);
    let mut bystander = d.client();

    // Oversized: the daemon answers FrameTooLarge without reading a payload.
    let mut s = raw_hello(&d.socket);
    s.write_all(&((MAX_FRAME_LEN + 1) as u32).to_be_bytes())
        .unwrap();
    let resp: Response = frame::read_frame(&mut s, MAX_FRAME_LEN).unwrap().unwrap();
    assert!(
        matches!(
            resp,
            Response::Error {
                code: ErrorCode::FrameTooLarge,
                ..
            }
        ),
        "{resp:?}"
    );
    let mut rest = Vec::new();
    assert_eq!(
        s.read_to_end(&mut rest).unwrap(),
        0,
        "connection closed after the error"
    );

    // Truncated: a header promising 100 bytes, then 10, then EOF.
    let mut s = raw_hello(&d.socket);
    s.write_all(&100u32.to_be_bytes()).unwrap();
    s.write_all(&[1u8; 10]).unwrap();
    s.shutdown(std::net::Shutdown::Write).unwrap();
    let mut rest = Vec::new();
    s.read_to_end(&mut rest).unwrap();
    assert!(rest.is_empty());

    // Garbage payload: MalformedFrame.
    let mut s = raw_hello(&d.socket);
    s.write_all(&4u32.to_be_bytes()).unwrap();
    s.write_all(&[0xff, 0xff, 0xff, 0xff]).unwrap();
    let resp: Response = frame::read_frame(&mut s, MAX_FRAME_LEN).unwrap().unwrap();
    assert!(
        matches!(
            resp,
            Response::Error {
                code: ErrorCode::MalformedFrame,
                ..
            }
        ),
        "{resp:?}"
    );

    // The other client noticed nothing.
    assert!(!bystander.status().unwrap().sources.is_empty());
}

#[test]
fn sixty_four_concurrent_clients_are_all_served() {
    let d = Daemon::start(SIMULATED_CONFIG);
    let socket = d.socket.clone();
    let handles: Vec<_> = (0..64)
        .map(|_| {
            let socket = socket.clone();
            std::thread::spawn(move || {
                let mut c = Client::connect(&socket, "concurrent").unwrap();
                let mut answered = 0;
                for _ in 0..10 {
                    c.status().unwrap();
                    let now = MonotonicNs::now();
                    c.energy(now.saturating_sub_ns(100_000_000), now).unwrap();
                    answered += 2;
                }
                answered
            })
        })
        .collect();
    let total: u32 = handles.into_iter().map(|h| h.join().unwrap()).sum();
    assert_eq!(total, 64 * 20);
}

#[test]
fn live_power_stream_delivers_updates() {
    let d = Daemon::start(SIMULATED_CONFIG);
    let stream = d.client().subscribe(20_000_000).unwrap();
    let updates: Vec<_> = stream.take(3).map(|u| u.unwrap()).collect();
    assert_eq!(updates.len(), 3);
    for u in &updates {
        let w = u
            .readings
            .iter()
            .find(|r| r.provenance == Provenance::Simulated)
            .unwrap()
            .watts;
        assert!((w - 50.0).abs() < 1.0, "simulated 50 W, got {w}");
    }
}
