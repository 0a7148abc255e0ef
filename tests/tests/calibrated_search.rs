//! A calibrated search end to end, with real processes: `nas-client search
//! --calibration` prices networks with the energy model it links, trains
//! each trial in a `nas-client trial` child under a real energyd, pre-screens
//! candidates, re-measures the predicted front, and the report shows the
//! predicted and measured energy side by side. A calibration of another
//! machine is refused before anything is trained.
//!
//! The calibration is synthetic (made with the energy-model crate's own
//! types and fit, for this machine's fingerprint), so the test checks the
//! wiring, not the accuracy of a real calibration (`bench/calibration`).

use energy_model::MachineFingerprint;
use integration_tests::fixtures::{small_mlp_space, synthetic_calibration};
use integration_tests::{workspace_bin, Daemon, SIMULATED_CONFIG};
use serde_json::Value;
use std::path::Path;
use std::process::Command;

fn search(
    d: &Daemon,
    dir: &Path,
    calibration: &Path,
    study: &str,
    extra: &[&str],
) -> std::process::Output {
    Command::new(workspace_bin("nas-client", "nas-client"))
        .args([
            "search",
            "--dataset",
            "credit_g",
            "--budget",
            "6",
            "--threads",
            "1",
        ])
        .args(["--strategy", "random", "--seed", "3"])
        .arg("--space")
        .arg(dir.join("space.toml"))
        .arg("--study")
        .arg(dir.join(study))
        .arg("--socket")
        .arg(&d.socket)
        .arg("--calibration")
        .arg(calibration)
        .args([
            "--prescreen",
            "--prescreen-warmup",
            "2",
            "--measure-front",
            "--json",
        ])
        .args(extra)
        .output()
        .expect("run nas-client search")
}

#[test]
fn calibrated_search_predicts_prescreens_and_remeasures_its_front() {
    let d = Daemon::start(SIMULATED_CONFIG);
    let dir = tempfile::tempdir().unwrap();
    // Few, small, short trainings — but each long enough (≥ 40 ms) to span
    // several of energyd's 10 ms activity samples: a 6 ms training could
    // fall between two and measure 0 J, and an 11 ms one (10–12 epochs) did
    // so once in five runs on a loaded 2-core VM.
    std::fs::write(dir.path().join("space.toml"), small_mlp_space(40, 48)).unwrap();
    let here = MachineFingerprint::probe(&[]).expect("fingerprint of this machine");

    // Another machine's calibration is refused, with the reason, before
    // any trial is trained.
    let mut other = here.clone();
    other.cpu_model = format!("{} (another one)", other.cpu_model);
    let foreign = dir.path().join("foreign.toml");
    synthetic_calibration(other, "calibrated_search test")
        .save(&foreign)
        .unwrap();
    let out = search(&d, dir.path(), &foreign, "foreign.db", &[]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "a foreign calibration was used");
    assert!(stderr.contains("cpu") || stderr.contains("CPU"), "{stderr}");
    assert!(
        stderr.contains("force"),
        "the refusal says how to override: {stderr}"
    );

    let cal = dir.path().join("calibration.toml");
    synthetic_calibration(here, "calibrated_search test")
        .save(&cal)
        .unwrap();
    let out = search(&d, dir.path(), &cal, "study.db", &[]);
    assert!(
        out.status.success(),
        "search failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let summary: Value = serde_json::from_slice(&out.stdout).expect("search --json prints JSON");
    assert_eq!(summary["finished_trials"], 6, "{summary}");
    let objectives: Vec<&str> = summary["objectives"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert!(
        objectives
            .iter()
            .any(|o| o.starts_with("predicted_inference_energy_j_per_1k:min")),
        "{objectives:?}"
    );
    assert!(summary["strategy"]
        .as_str()
        .unwrap()
        .starts_with("prescreen:"));

    // Every trial carries predictions and its measured training energy;
    // only the front was measured for inference, and it is shown next to
    // the prediction.
    let report = dir.path().join("report");
    let status = Command::new(workspace_bin("nas-client", "nas-client"))
        .args(["report", "--study"])
        .arg(dir.path().join("study.db"))
        .arg("--out")
        .arg(&report)
        .output()
        .unwrap();
    assert!(status.status.success());
    let trials: Value =
        serde_json::from_str(&std::fs::read_to_string(report.join("trials.json")).unwrap())
            .unwrap();
    let front: Vec<u64> = summary["front"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["number"].as_u64().unwrap())
        .collect();
    assert!(!front.is_empty());
    for t in trials.as_array().unwrap() {
        let m = &t["metrics"];
        let number = t["number"].as_u64().unwrap();
        assert!(m["predicted_inference_energy_j_per_1k"].as_f64().unwrap() > 0.0);
        assert!(m["predicted_training_energy_j"].as_f64().unwrap() > 0.0);
        assert!(m["training_energy_j"].as_f64().unwrap() > 0.0, "{t}");
        // Predicted (estimated) combined with a simulated source's
        // measurement of the training: the weaker label, never "measured".
        assert_eq!(t["provenance"], "Simulated", "{t}");
        let measured = m["inference_energy_j_per_1k"].as_f64();
        assert_eq!(measured.is_some(), front.contains(&number), "{t}");
        if let Some(j) = measured {
            assert!(j > 0.0);
        }
    }
    let md = std::fs::read_to_string(report.join("summary.md")).unwrap();
    assert!(md.contains("## Predicted and measured"), "{md}");
    let pairs = summary["predicted_vs_measured"].as_array().unwrap();
    assert!(pairs
        .iter()
        .any(|p| p["metric"] == "inference_energy_j_per_1k"));

    // Resuming measures nothing again (the front is already measured).
    let spent: f64 = trials
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|t| t["energy_spent_j"].as_f64())
        .sum();
    let again = search(&d, dir.path(), &cal, "study.db", &["--resume"]);
    assert!(
        again.status.success(),
        "{}",
        String::from_utf8_lossy(&again.stderr)
    );
    let summary: Value = serde_json::from_slice(&again.stdout).unwrap();
    let spent_again = summary["search_energy"]["energy_j"].as_f64().unwrap();
    assert!(
        (spent_again - spent).abs() < 1e-9,
        "{spent} J then {spent_again} J"
    );
}
