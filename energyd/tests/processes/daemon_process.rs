//! The daemon process: clean stop on SIGTERM, refusing unusable socket
//! paths on its command line, and `energyctl status --json`.

use crate::support::{Daemon, ENERGYD, SIMULATED_CONFIG};
use std::process::{Command, Stdio};

#[test]
fn sigterm_stops_cleanly_and_removes_the_socket() {
    let d = Daemon::start(SIMULATED_CONFIG, &[]);
    let socket = d.socket.clone();
    let _c = d.client();
    let (status, stderr) = d.terminate();
    assert!(status.success(), "exit {status}: {stderr}");
    assert!(!socket.exists(), "socket file removed");
    assert!(stderr.contains("SIGTERM"), "{stderr}");
}

#[test]
fn unusable_socket_paths_are_refused_with_a_message() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(ENERGYD)
        .args(["--user", "--socket"])
        .arg(dir.path().join("missing/energyd.sock"))
        .stderr(Stdio::piped())
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("does not exist"), "{err}");

    // A socket another daemon is serving is not taken over.
    let d = Daemon::start(SIMULATED_CONFIG, &[]);
    let out = Command::new(ENERGYD)
        .args(["--user", "--socket"])
        .arg(&d.socket)
        .stderr(Stdio::piped())
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("listening"));
    assert!(d.client().status().is_ok(), "the first daemon still serves");
}

#[test]
fn energyctl_status_json_is_one_document_with_provenance() {
    let d = Daemon::start(SIMULATED_CONFIG, &[]);
    let out = d.energyctl().args(["status", "--json"]).output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).expect("one JSON document");
    let sources = doc["sources"].as_array().unwrap();
    assert!(sources.iter().any(|s| s["provenance"] == "simulated"));
    assert!(sources
        .iter()
        .all(|s| s["provenance"].is_string() && s["rate_hz"].is_number()));
    assert_eq!(doc["protocol_version"], shared::protocol::PROTOCOL_VERSION);
}
