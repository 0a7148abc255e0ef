//! Issue 12 item 6: the trainer's kernel spans reach energyd whole under
//! the per-uid rate limit. `nas-client train` used to submit its spans at
//! every epoch end: with short epochs that is one request per epoch, and
//! under the limit it lost spans (816 of 27 143) with only a warning; the
//! workers of one search (one uid, one token bucket) starved each other.
//! Now spans go through `shared::uploader::SpanUploader` (batches by time
//! and size, retried on a rate limit) and are flushed before the energy of
//! the phases is asked for.
//!
//! Two trainers of one unprivileged uid run at once against an energyd
//! whose limit (2 requests/s, burst 4) is far below one request per epoch
//! (80 epochs each, a fraction of a second apiece): both must deliver
//! every span and get their energy. Needs root to run the trainers as
//! another uid (a root peer is privileged and never rate-limited).

use integration_tests::{skip_unless_root, workspace_bin, Daemon, NOBODY, SIMULATED_CONFIG};
use serde_json::Value;
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};

const EPOCHS: u64 = 80;

#[test]
fn short_epochs_of_two_trainers_of_one_uid_lose_no_span_under_the_rate_limit() {
    if skip_unless_root("short_epochs_of_two_trainers_of_one_uid_lose_no_span_under_the_rate_limit")
    {
        return;
    }
    let config = format!("{SIMULATED_CONFIG}\n[policy]\nrequests_per_sec = 2.0\nburst = 4.0\n");
    let daemon = Daemon::start(&config);
    let exe = workspace_bin("nas-client", "nas-client");
    let trainers: Vec<_> = (0..2)
        .map(|seed| {
            Command::new(&exe)
                .args(["train", "--dataset", "phoneme", "--arch", "8"])
                .args(["--batch-size", "512", "--patience", "0", "--threads", "1"])
                .args(["--epochs", &EPOCHS.to_string(), "--seed", &seed.to_string()])
                .args(["--inference-ms", "150", "--json", "--socket"])
                .arg(&daemon.socket)
                .uid(NOBODY)
                .gid(NOBODY)
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .expect("start nas-client train")
        })
        .collect();
    for child in trainers {
        let out = child.wait_with_output().expect("wait for nas-client train");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "nas-client train failed: {stderr}");
        let report: Value = serde_json::from_slice(&out.stdout).expect("a JSON report");
        assert_eq!(report["epochs_run"], EPOCHS, "every epoch trained");
        let d = &report["span_delivery"];
        let recorded = d["recorded"].as_u64().expect("span counts in the report");
        // Every epoch records the training steps' and validation's spans.
        assert!(recorded >= EPOCHS * 10, "{d}");
        assert_eq!(
            report["spans_recorded"].as_u64(),
            Some(recorded),
            "every span the recorders took went to the uploader: {d}"
        );
        assert_eq!(
            d["accepted"].as_u64(),
            Some(recorded),
            "no span lost: {d} ({stderr})"
        );
        assert_eq!(d["rejected"], 0, "{d}");
        assert_eq!(d["dropped"], 0, "{d}");
        assert_eq!(d["pending"], 0, "{d}");
        assert!(
            report["energy"]["train"]["process_j"].as_f64().is_some(),
            "the trainer got its energy despite sharing the uid's budget: {}",
            report["energy_unavailable"]
        );
        assert!(report["energy"]["inference"]["process_j"]
            .as_f64()
            .is_some());
        // A warning, when one was met, is printed once.
        assert!(stderr.matches("warning:").count() <= 1, "{stderr}");
    }
}
