//! `nas-client oneshot` end to end, with real processes: a supernet trained
//! in the searching process and measured by a real energyd, the controller
//! searching it under an energy budget priced by a calibration, the pick
//! and the best other child retrained in `nas-client trial` children and
//! stored as trials that `nas-client report` reads. A run stopped after the
//! first supernet epoch resumes from its checkpoint without training that
//! epoch again; other settings are refused; a missing calibration says how
//! to make one.
//!
//! The calibration is synthetic (`integration_tests::fixtures`), so the
//! test checks the wiring, not the accuracy of a calibration.

use energy_model::MachineFingerprint;
use integration_tests::fixtures::synthetic_calibration;
use integration_tests::{workspace_bin, Daemon, SIMULATED_CONFIG};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// Cuts the default MLP space of credit_g under the synthetic calibration
/// between its smallest and largest child (checked below, so a change of
/// the space or the pricing fails here with the figures, not later).
const BUDGET_J_PER_1K: f64 = 0.05;

fn oneshot(d: &Daemon, dir: &Path, calibration: Option<&Path>, extra: &[&str]) -> Output {
    let budget = BUDGET_J_PER_1K.to_string();
    let mut extra = extra.to_vec();
    if !extra.contains(&"--reward") && !extra.contains(&"--energy-budget") {
        extra.extend(["--energy-budget", &budget]);
    }
    if !extra.contains(&"--retrain") {
        extra.extend(["--retrain", "1"]);
    }
    let mut cmd = Command::new(workspace_bin("nas-client", "nas-client"));
    cmd.args(["oneshot", "--dataset", "credit_g"])
        .arg("--study")
        .arg(dir.join("study.db"))
        .arg("--socket")
        .arg(&d.socket)
        .args(["--threads", "1", "--seed", "5", "--json"])
        .args(["--controller-steps", "30"])
        // Long enough (≥ 40 ms) to span several of energyd's 10 ms
        // activity samples (see calibrated_search.rs).
        .args(["--retrain-epochs", "40"]);
    if let Some(c) = calibration {
        cmd.arg("--calibration").arg(c);
    }
    cmd.args(&extra).output().expect("run nas-client oneshot")
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// A simulated energyd, a scratch folder, and a synthetic calibration of
/// this machine saved in it (what every test here starts from).
fn daemon_and_calibration() -> (Daemon, tempfile::TempDir, PathBuf) {
    let d = Daemon::start(SIMULATED_CONFIG);
    let dir = tempfile::tempdir().unwrap();
    let cal = dir.path().join("calibration.toml");
    let here = MachineFingerprint::probe(&[]).expect("fingerprint of this machine");
    synthetic_calibration(here, "oneshot_search test")
        .save(&cal)
        .unwrap();
    (d, dir, cal)
}

#[test]
fn oneshot_trains_searches_retrains_and_resumes() {
    let (d, dir, cal) = daemon_and_calibration();

    // Without a calibration: refused, saying how to make one.
    let out = oneshot(
        &d,
        dir.path(),
        None,
        &["--supernet-epochs", "2", "--backbone", "mlp"],
    );
    assert!(!out.status.success());
    assert!(stderr(&out).contains("calibration run"), "{}", stderr(&out));

    // Stopped after the first of two supernet epochs: an error (not a
    // finished search), the checkpoint kept.
    let out = oneshot(
        &d,
        dir.path(),
        Some(&cal),
        &[
            "--supernet-epochs",
            "2",
            "--backbone",
            "mlp",
            "--stop-after-epochs",
            "1",
        ],
    );
    assert!(!out.status.success(), "a stopped run reported success");
    assert!(
        stderr(&out).contains("stopped after supernet epoch 1"),
        "{}",
        stderr(&out)
    );
    assert!(dir.path().join("study.db.oneshot/supernet.json").is_file());

    // Other settings are refused, naming what differs.
    let out = oneshot(
        &d,
        dir.path(),
        Some(&cal),
        &["--supernet-epochs", "3", "--backbone", "mlp"],
    );
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("supernet_epochs: stored 2, given 3"),
        "{}",
        stderr(&out)
    );

    // The same command resumes: one epoch restored, one trained.
    let out = oneshot(
        &d,
        dir.path(),
        Some(&cal),
        &["--supernet-epochs", "2", "--backbone", "mlp"],
    );
    assert!(out.status.success(), "oneshot failed: {}", stderr(&out));
    let summary: Value = serde_json::from_slice(&out.stdout).expect("--json prints JSON");
    assert_eq!(summary["resumed_from_epoch"], 1, "{summary}");
    assert_eq!(summary["supernet_epochs_trained_now"], 1, "{summary}");
    assert_eq!(summary["supernet_epochs"], 2, "{summary}");
    assert_eq!(summary["controller_steps"], 30, "{summary}");
    let (smallest, largest) = (
        summary["space_predicted_j_per_1k"][0].as_f64().unwrap(),
        summary["space_predicted_j_per_1k"][1].as_f64().unwrap(),
    );
    assert!(
        smallest <= BUDGET_J_PER_1K && BUDGET_J_PER_1K < largest,
        "the budget {BUDGET_J_PER_1K} must cut the space's range {smallest}..{largest}"
    );
    // The supernet's training was measured (energyd's simulated source),
    // both epochs together; so was the controller.
    let supernet_j = summary["supernet_energy"]["joules"].as_f64().unwrap();
    assert!(supernet_j > 0.0, "{summary}");
    assert_eq!(summary["supernet_energy"]["provenance"], "Simulated");

    // The pick respects the budget.
    let pick_j = summary["pick"]["predicted_inference_j_per_1k"]
        .as_f64()
        .unwrap();
    assert!(pick_j <= BUDGET_J_PER_1K, "{summary}");

    // The study: the supernet's trial, the pick and one more, retrained
    // with measured energy and the predicted energy beside it.
    let report = dir.path().join("report");
    let status = Command::new(workspace_bin("nas-client", "nas-client"))
        .args(["report", "--study"])
        .arg(dir.path().join("study.db"))
        .arg("--out")
        .arg(&report)
        .output()
        .unwrap();
    assert!(status.status.success(), "report: {}", stderr(&status));
    let trials: Value =
        serde_json::from_str(&std::fs::read_to_string(report.join("trials.json")).unwrap())
            .unwrap();
    let trials = trials.as_array().unwrap();
    let tags: Vec<&str> = trials.iter().filter_map(|t| t["tag"].as_str()).collect();
    assert_eq!(
        tags,
        ["oneshot-supernet", "oneshot-pick", "oneshot-top-1"],
        "{trials:?}"
    );
    let supernet = &trials[0];
    let spent = supernet["energy_spent_j"].as_f64().unwrap();
    let m = &supernet["metrics"];
    // A controller phase energyd could not measure is a note, not a
    // failure, so its figure may be absent.
    let parts =
        m["supernet_energy_j"].as_f64().unwrap() + m["controller_energy_j"].as_f64().unwrap_or(0.0);
    assert!((spent - parts).abs() < 1e-9, "{supernet}");
    assert!((m["supernet_energy_j"].as_f64().unwrap() - supernet_j).abs() < 1e-9);
    assert!(
        m.get("val_accuracy").is_none(),
        "never on a front: {supernet}"
    );
    for t in &trials[1..] {
        let m = &t["metrics"];
        assert_eq!(t["status"], "finished", "{t}");
        assert!(
            m["inference_energy_j_per_1k"].as_f64().unwrap() > 0.0,
            "{t}"
        );
        assert!(m["training_energy_j"].as_f64().unwrap() > 0.0, "{t}");
        assert!(m["predicted_inference_energy_j_per_1k"].as_f64().unwrap() > 0.0);
        assert!(m["inherited_val_accuracy"].as_f64().is_some());
        assert_eq!(t["config"]["kind"], "child");
        assert_eq!(t["config"]["epochs"], 40);
    }
    assert_eq!(
        trials[1]["metrics"]["predicted_inference_energy_j_per_1k"]
            .as_f64()
            .unwrap(),
        pick_j
    );
    // The report's tables name the pick.
    let md = std::fs::read_to_string(report.join("summary.md")).unwrap();
    assert!(md.contains(" (oneshot-pick) |"), "{md}");
    // The report's search energy is every trial's, the supernet's and
    // the controller's included.
    let report_summary: Value =
        serde_json::from_str(&std::fs::read_to_string(report.join("summary.json")).unwrap())
            .unwrap();
    let all: f64 = trials
        .iter()
        .map(|t| t["energy_spent_j"].as_f64().unwrap())
        .sum();
    let search_j = report_summary["search_energy"]["energy_j"]
        .as_f64()
        .unwrap();
    assert!(
        (search_j - all).abs() < 1e-9,
        "{search_j} J, trials {all} J"
    );
    assert_eq!(report_summary["search_energy"]["trials_with_energy"], 3);
    // The summary's retrained trials are those of the study.
    let numbers: Vec<u64> = summary["retrained"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["number"].as_u64().unwrap())
        .collect();
    assert_eq!(numbers, [1, 2], "{summary}");

    // A rerun of the finished run trains nothing and stores nothing new.
    let out = oneshot(
        &d,
        dir.path(),
        Some(&cal),
        &["--supernet-epochs", "2", "--backbone", "mlp"],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let again: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(again["supernet_epochs_trained_now"], 0, "{again}");
    assert_eq!(again["pick"], summary["pick"]);
    assert_eq!(again["retrained"], summary["retrained"]);
}

/// The ResNet supernet under MnasNet's soft reward: one epoch, a few
/// steps, the pick retrained alone; its trial is the ResNet the supernet
/// picked (main width apart from the blocks' widths).
#[test]
fn oneshot_searches_a_resnet_supernet_with_the_soft_reward() {
    let (d, dir, cal) = daemon_and_calibration();
    let out = oneshot(
        &d,
        dir.path(),
        Some(&cal),
        &[
            "--backbone",
            "resnet",
            "--supernet-epochs",
            "1",
            "--reward",
            "mnas:0.05:-0.07",
            "--retrain",
            "0",
        ],
    );
    assert!(out.status.success(), "oneshot failed: {}", stderr(&out));
    let summary: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(summary["energy"]["kind"], "mnas_soft", "{summary}");
    assert_eq!(summary["rejected_steps"], 0, "{summary}");
    let pick = &summary["pick"];
    // MnasNet's reward, recomputed: accuracy × (energy / target)^w.
    let (q, e) = (
        pick["inherited_val_accuracy"].as_f64().unwrap(),
        pick["predicted_inference_j_per_1k"].as_f64().unwrap(),
    );
    let expected = q * (e / 0.05).powf(-0.07);
    assert!(
        (pick["reward"].as_f64().unwrap() - expected).abs() < 1e-9,
        "{summary}"
    );
    assert!(
        pick["spec"].as_str().unwrap().starts_with("resnet"),
        "{summary}"
    );
    let retrained = summary["retrained"].as_array().unwrap();
    assert_eq!(retrained.len(), 1, "{summary}");
    assert_eq!(retrained[0]["tag"], "oneshot-pick");
    assert!(retrained[0]["inference_energy_j_per_1k"].as_f64().unwrap() > 0.0);
}

/// The FT-Transformer supernet (tokenizer fitted to credit_g's categorical
/// columns) under a budget of 1 J per 1000 rows (its children cost more
/// than the MLP's under the synthetic calibration): one epoch, a few steps, the pick retrained
/// alone; its stored trial is the FT-Transformer the controller picked
/// (token width, blocks, heads, ReGLU width).
#[test]
fn oneshot_searches_an_ft_transformer_supernet() {
    let (d, dir, cal) = daemon_and_calibration();
    let out = oneshot(
        &d,
        dir.path(),
        Some(&cal),
        &[
            "--backbone",
            "ft-transformer",
            "--supernet-epochs",
            "1",
            "--retrain",
            "0",
            "--energy-budget",
            "1",
        ],
    );
    assert!(out.status.success(), "oneshot failed: {}", stderr(&out));
    let summary: Value = serde_json::from_slice(&out.stdout).unwrap();
    let (smallest, largest) = (
        summary["space_predicted_j_per_1k"][0].as_f64().unwrap(),
        summary["space_predicted_j_per_1k"][1].as_f64().unwrap(),
    );
    assert!(
        smallest <= 1.0 && 1.0 < largest,
        "the budget must cut the space's range {smallest}..{largest}"
    );
    let pick = &summary["pick"];
    assert!(pick["predicted_inference_j_per_1k"].as_f64().unwrap() <= 1.0);
    let spec = pick["spec"].as_str().unwrap();
    // "ft-transformer D-B-H-F dropouts …"
    let sizes: Vec<i64> = spec
        .strip_prefix("ft-transformer ")
        .and_then(|rest| rest.split(' ').next())
        .unwrap_or_else(|| panic!("not an ft-transformer: {summary}"))
        .split('-')
        .map(|v| v.parse().unwrap())
        .collect();
    assert_eq!(sizes[2], 4, "the space's heads: {summary}");
    let retrained = summary["retrained"].as_array().unwrap();
    assert_eq!(retrained.len(), 1, "{summary}");
    assert!(retrained[0]["inference_energy_j_per_1k"].as_f64().unwrap() > 0.0);
    let trials = nas_search::study::Study::open_existing(nas_search::study::StudyLocation::Sqlite(
        dir.path().join("study.db"),
    ))
    .unwrap()
    .trials()
    .unwrap();
    let config = serde_json::to_value(&trials[1].config).unwrap();
    assert_eq!(config["backbone"], "ft-transformer", "{config}");
    let stored = [
        &config["width_1"],
        &config["n_layers"],
        &config["n_heads"],
        &config["d_ffn"],
    ]
    .map(|v| v.as_i64().unwrap());
    assert_eq!(stored.to_vec(), sizes, "{config}");
}

/// `compare --oneshot`: the one-shot study runs beside the accuracy-only,
/// energy-aware and calibrated ones, with as many final trainings as each
/// has trials, and the comparison carries its pick, its search energy (the
/// supernet's trial included: recomputed here from the study) and both
/// measured hypervolumes. Without a calibration `--oneshot` is refused.
#[test]
fn compare_adds_a_oneshot_search() {
    let (d, dir, cal) = daemon_and_calibration();
    // The one-shot MLP space, at the retrainings' epochs (≥ 40 ms of
    // training each, as above).
    let space = dir.path().join("space.toml");
    std::fs::write(
        &space,
        r#"
[[param]]
name = "n_layers"
type = "int"
low = 1
high = 2
[[param]]
name = "width_1"
type = "categorical"
choices = [16, 64, 256]
[[param]]
name = "width_2"
type = "categorical"
choices = [16, 64, 256]
when = { param = "n_layers", at_least = 2 }
[[param]]
name = "activation"
type = "categorical"
choices = ["relu"]
[[param]]
name = "normalization"
type = "categorical"
choices = ["batch"]
[[param]]
name = "epochs"
type = "int"
low = 40
high = 40
"#,
    )
    .unwrap();
    let compare = |with_calibration: bool| {
        let mut cmd = Command::new(workspace_bin("nas-client", "nas-client"));
        cmd.args(["compare", "--dataset", "credit_g", "--budget", "2"])
            .arg("--space")
            .arg(&space)
            .arg("--dir")
            .arg(dir.path().join("run"))
            .arg("--socket")
            .arg(&d.socket)
            .args(["--threads", "1", "--seed", "3", "--json", "--oneshot"])
            .args(["--oneshot-energy-budget", &BUDGET_J_PER_1K.to_string()])
            .args(["--oneshot-supernet-epochs", "1"])
            .args(["--oneshot-controller-steps", "10"])
            .args(["--oneshot-retrain-epochs", "40"]);
        if with_calibration {
            cmd.arg("--calibration").arg(&cal);
        }
        cmd.output().expect("run nas-client compare")
    };
    let out = compare(false);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("--calibration"), "{}", stderr(&out));

    let out = compare(true);
    assert!(out.status.success(), "compare failed: {}", stderr(&out));
    let v: Value = serde_json::from_slice(&out.stdout).expect("--json prints JSON");
    let study = dir.path().join("run/oneshot.db");
    assert_eq!(v["oneshot_study"], study.display().to_string(), "{v}");
    let o = &v["payback"]["oneshot"];

    // The one-shot study: the supernet's trial and 2 retrained children.
    let trials = nas_search::study::Study::open_existing(nas_search::study::StudyLocation::Sqlite(
        study.clone(),
    ))
    .unwrap()
    .trials()
    .unwrap();
    let tags: Vec<_> = trials
        .iter()
        .map(|t| t.tag.clone().unwrap_or_default())
        .collect();
    assert_eq!(tags, ["oneshot-supernet", "oneshot-pick", "oneshot-top-1"]);
    let spent: f64 = trials.iter().filter_map(|t| t.energy_spent_j).sum();
    assert!(trials[0].energy_spent_j.unwrap() > 0.0, "{:?}", trials[0]);
    assert!(
        (o["search_energy_j"]["value"].as_f64().unwrap() - spent).abs() < 1e-9,
        "{o}"
    );
    assert_eq!(o["search_energy_j"]["provenance"], "simulated", "{o}");

    // Its pick, by hand: the cheapest retrained child at the floor of the
    // accuracy-only pick's accuracy.
    let floor = v["comparison"]["accuracy_floor"].as_f64().unwrap();
    let conv_e = v["comparison"]["conventional_pick"]["energy"]
        .as_f64()
        .unwrap();
    let m = |t: &nas_search::study::TrialRecord, k: &str| t.metrics.as_ref().unwrap()[k];
    let expected = trials[1..]
        .iter()
        .filter(|t| m(t, "val_accuracy") >= floor)
        .min_by(|a, b| {
            m(a, "inference_energy_j_per_1k").total_cmp(&m(b, "inference_energy_j_per_1k"))
        });
    match expected {
        Some(t) => {
            assert_eq!(o["pick"]["number"], t.number, "{o}");
            let r = 1.0 - m(t, "inference_energy_j_per_1k") / conv_e;
            assert!(
                (o["inference_energy_reduction"].as_f64().unwrap() - r).abs() < 1e-9,
                "{o}"
            );
        }
        None => assert!(o["pick"].is_null(), "{o}"),
    }
    // Both fronts measured, under one reference point.
    assert!(o["hypervolume"].as_f64().unwrap() > 0.0, "{o}");
    assert!(o["hypervolume_multi_trial"].as_f64().unwrap() > 0.0, "{o}");
    let md = std::fs::read_to_string(dir.path().join("run/report/summary.md")).unwrap();
    assert!(md.contains("One-shot search:"), "{md}");
    assert!(md.contains("measured hypervolume: one-shot"), "{md}");
}
