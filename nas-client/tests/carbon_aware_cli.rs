//! `search --carbon-aware` refuses what it cannot do before anything runs
//! (no energyd needed: nothing is trained or scored).

use std::process::{Command, Output};

fn nas_client(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_nas-client"))
        .args(args)
        .output()
        .expect("nas-client runs")
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn carbon_aware_search_refuses_what_it_cannot_run() {
    let dir = tempfile::tempdir().unwrap();
    let study = dir.path().join("s.db");
    let study = study.to_str().unwrap();
    let trace = dir.path().join("trace.csv");
    std::fs::write(
        &trace,
        "Time,Carbon Intensity\n2020-01-06 00:00:00,50\n2020-01-06 01:00:00,500\n",
    )
    .unwrap();
    let trace = format!("trace:{}", trace.display());
    let base = ["search", "--dataset", "credit_g", "--study", study];

    // No intensity source: there is no default.
    let out = nas_client(&[&base[..], &["--carbon-aware"]].concat());
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("--carbon-intensity"),
        "{}",
        stderr(&out)
    );

    // Replay needs its rate.
    let out = nas_client(
        &[
            &base[..],
            &["--carbon-intensity", &trace, "--carbon-aware"],
            &["--carbon-replay-from", "2020-01-06T00:00:00Z"],
        ]
        .concat(),
    );
    assert!(!out.status.success());
    assert!(stderr(&out).contains("--hour-seconds"), "{}", stderr(&out));

    // A replay start the trace does not hold fails naming the hour,
    // before any trial.
    let out = nas_client(
        &[
            &base[..],
            &["--carbon-intensity", &trace, "--carbon-aware"],
            &[
                "--carbon-replay-from",
                "2020-01-07T00:00:00Z",
                "--hour-seconds",
                "1",
            ],
        ]
        .concat(),
    );
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let e = stderr(&out);
    assert!(
        e.contains("2020-01-07 00:00:00") && e.contains("no value"),
        "{e}"
    );
    let trials = finished_trials(study);
    assert_eq!(trials, 0);

    // A bad replay time names itself.
    let out = nas_client(
        &[
            &base[..],
            &["--carbon-intensity", &trace, "--carbon-aware"],
            &["--carbon-replay-from", "yesterday", "--hour-seconds", "1"],
        ]
        .concat(),
    );
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("`yesterday` is not a UTC time"),
        "{}",
        stderr(&out)
    );
}

/// Trials in the study, through `nas-client report --json` (0 when the
/// study holds none).
fn finished_trials(study: &str) -> u64 {
    let out = nas_client(&["report", "--study", study, "--json"]);
    if !out.status.success() {
        return 0;
    }
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    v["finished_trials"].as_u64().unwrap_or(0)
}
