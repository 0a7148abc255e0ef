//! `nas-client search --carbon-aware` end to end, with real processes: a
//! replayed hand-made trace (clean 50, dirty 500, clean 50 gCO2eq/kWh,
//! then one more clean hour for trainings that carry over), four worker
//! slots, light work scored by `nas-client light-trial` children and heavy
//! work trained by `nas-client trial` children, both measured by a real
//! energyd on a simulated source.
//!
//! Deterministic: the assertions are on the recorded decisions (which the
//! policy derives from the trace alone), on where each training's
//! candidate came from, and on the carbon report's sums, never on how much
//! work fitted in an hour.

use integration_tests::fixtures::small_mlp_space;
use integration_tests::{workspace_bin, Daemon, SIMULATED_CONFIG};
use nas_search::study::{Study, TrialStatus};
use serde_json::Value;
use std::collections::HashMap;
use std::process::Command;

const TRACE: &str = "Time,Carbon Intensity
2020-01-06 00:00:00,50
2020-01-06 01:00:00,500
2020-01-06 02:00:00,50
2020-01-06 03:00:00,50
";

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() <= 1e-9 * (1.0 + a.abs().max(b.abs()))
}

#[test]
fn replayed_carbon_aware_search_moves_slots_to_light_work_in_the_dirty_hour() {
    let d = Daemon::start(SIMULATED_CONFIG);
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("space.toml"), small_mlp_space(10, 12)).unwrap();
    std::fs::write(dir.path().join("trace.csv"), TRACE).unwrap();
    let study = dir.path().join("s.db");
    let out = Command::new(workspace_bin("nas-client", "nas-client"))
        .args(["search", "--dataset", "credit_g", "--threads", "1"])
        .args(["--workers", "4", "--budget", "1000"])
        .args(["--strategy", "random", "--seed", "3"])
        .arg("--space")
        .arg(dir.path().join("space.toml"))
        .arg("--study")
        .arg(&study)
        .arg("--socket")
        .arg(&d.socket)
        .arg("--carbon-intensity")
        .arg(format!("trace:{}", dir.path().join("trace.csv").display()))
        .args([
            "--pue",
            "1.2",
            "--carbon-aware",
            "--carbon-policy",
            "heuristic",
        ])
        .args(["--carbon-replay-from", "2020-01-06T00:00:00Z"])
        .args(["--hour-seconds", "1", "--replay-hours", "3", "--json"])
        .output()
        .expect("run nas-client search");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let summary: Value = serde_json::from_slice(&out.stdout).expect("JSON on stdout");
    let schedule = &summary["carbon_schedule"];
    assert_eq!(schedule["mode"], "replayed");
    assert_eq!(schedule["policy"], "ce-nas-heuristic");
    assert_eq!(schedule["light_proxy"], "zen");
    assert_eq!(schedule["stopped"], "replayed 3 trace hours");

    // The decisions, by hand (carbon_schedule::live's test derives them):
    // hour 0 has no range yet (2 heavy of 4), the dirty hour is the top of
    // [50, 500] (1 heavy, the CE-NAS floor), the clean hour after it the
    // bottom (3 heavy).
    let hours = schedule["hours"].as_array().unwrap();
    let row = |h: &Value| {
        (
            h["intensity"].as_f64().unwrap(),
            h["heavy_slots"].as_u64().unwrap(),
            h["light_slots"].as_u64().unwrap(),
        )
    };
    let rows: Vec<_> = hours.iter().map(row).collect();
    assert_eq!(rows, [(50.0, 2, 2), (500.0, 1, 3), (50.0, 3, 1)]);
    assert!(rows[1].2 > rows[0].2 && rows[1].2 > rows[2].2);
    let intensity_of: HashMap<i64, f64> = hours
        .iter()
        .map(|h| {
            (
                h["hour"].as_i64().unwrap(),
                h["intensity"].as_f64().unwrap(),
            )
        })
        .collect();

    // Every trained candidate came from the queue: its light trial scored
    // the same configuration and finished before the training started, and
    // no light trial was trained twice.
    let trials = Study::open_existing(&study).unwrap().trials().unwrap();
    let by_number: HashMap<u64, _> = trials.iter().map(|t| (t.number, t)).collect();
    let tag = |t: &nas_search::study::TrialRecord| t.tag.clone().unwrap_or_default();
    let light: Vec<_> = trials
        .iter()
        .filter(|t| tag(t).starts_with("carbon-light"))
        .collect();
    let heavy: Vec<_> = trials
        .iter()
        .filter(|t| tag(t).starts_with("carbon-heavy"))
        .collect();
    assert_eq!(
        light.len() + heavy.len(),
        trials.len(),
        "every trial is tagged"
    );
    assert!(!light.is_empty() && !heavy.is_empty(), "{stderr}");
    let mut trained_from = std::collections::HashSet::new();
    for h in &heavy {
        let from: u64 = tag(h)
            .strip_prefix("carbon-heavy from #")
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("tag {:?}", h.tag));
        let l = by_number[&from];
        assert!(tag(l).starts_with("carbon-light"));
        assert_eq!(l.config_key, h.config_key);
        assert!(l.finished_ns.unwrap() <= h.started_ns.unwrap());
        assert!(
            trained_from.insert(from),
            "light trial #{from} trained twice"
        );
        assert!(h.metrics.as_ref().unwrap().contains_key("val_accuracy"));
    }
    // The schedule's records say the same, and each evaluation stored the
    // intensity of the hour it started in.
    let evaluations = schedule["evaluations"].as_array().unwrap();
    assert_eq!(evaluations.len(), trials.len());
    for e in evaluations {
        let t = by_number[&e["trial"].as_u64().unwrap()];
        assert_eq!(t.status, TrialStatus::Finished, "{:?}", t.error);
        let kind = e["kind"].as_str().unwrap();
        assert!(tag(t).starts_with(&format!("carbon-{kind}")));
        let hour = e["hour"].as_i64().unwrap();
        assert_eq!(
            t.metrics.as_ref().unwrap()["hour_intensity_g_per_kwh"],
            intensity_of[&hour]
        );
        if kind == "light" {
            assert!(t.metrics.as_ref().unwrap().contains_key("light_score"));
        }
    }

    // Charged once: the report's energy is the sum of every evaluation's
    // own energy (light and heavy, each from its own process), and its
    // grams are each hour's energy × that hour's intensity × PUE.
    let carbon = &summary["carbon"];
    assert!(carbon["intensity_source"]
        .as_str()
        .unwrap()
        .contains("replayed"));
    let spent: f64 = trials.iter().map(|t| t.energy_spent_j.unwrap()).sum();
    assert!(spent > 0.0);
    let kwh = carbon["it_energy_kwh"].as_f64().unwrap();
    assert!(close(kwh * 3.6e6, spent), "{kwh} kWh vs {spent} J");
    let mut grams = 0.0;
    let mut hour_kwh = 0.0;
    for h in carbon["hours"].as_array().unwrap() {
        let i = h["intensity_g_per_kwh"].as_f64().unwrap();
        let e = h["it_energy_kwh"].as_f64().unwrap();
        assert!([50.0, 500.0].contains(&i));
        grams += e * i * 1.2;
        hour_kwh += e;
    }
    assert!(close(hour_kwh, kwh));
    assert!(close(carbon["grams_co2eq"].as_f64().unwrap(), grams));
    // Light and heavy work each charged on their own add up to the whole.
    let kinds = &summary["carbon_by_kind"];
    let part = |k: &str, f: &str| kinds[k][f].as_f64().unwrap();
    assert!(close(
        part("light", "energy_spent_j") + part("heavy", "energy_spent_j"),
        spent
    ));
    assert!(close(
        part("light", "grams_co2eq") + part("heavy", "grams_co2eq"),
        grams
    ));
    d.stop().unwrap();
}

/// With a calibration the queue's energy axis is the predicted inference
/// energy: every light trial stores it (as a prediction) and says so;
/// trainings are still measured.
#[test]
fn calibrated_carbon_aware_search_queues_by_predicted_energy() {
    let d = Daemon::start(SIMULATED_CONFIG);
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("space.toml"), small_mlp_space(10, 12)).unwrap();
    std::fs::write(dir.path().join("trace.csv"), TRACE).unwrap();
    let cal = dir.path().join("calibration.toml");
    integration_tests::fixtures::synthetic_calibration(
        energy_model::MachineFingerprint::probe(&[]).expect("fingerprint"),
        "carbon_aware_search test",
    )
    .save(&cal)
    .unwrap();
    let study = dir.path().join("s.db");
    let out = Command::new(workspace_bin("nas-client", "nas-client"))
        .args(["search", "--dataset", "credit_g", "--threads", "1"])
        .args(["--workers", "2", "--budget", "2"])
        .args(["--strategy", "random", "--seed", "5"])
        .arg("--space")
        .arg(dir.path().join("space.toml"))
        .arg("--study")
        .arg(&study)
        .arg("--socket")
        .arg(&d.socket)
        .arg("--calibration")
        .arg(&cal)
        .arg("--carbon-intensity")
        .arg(format!("trace:{}", dir.path().join("trace.csv").display()))
        .args([
            "--carbon-aware",
            "--carbon-replay-from",
            "2020-01-06T00:00:00Z",
        ])
        .args(["--hour-seconds", "2", "--replay-hours", "2", "--json"])
        .output()
        .expect("run nas-client search");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let trials = Study::open_existing(&study).unwrap().trials().unwrap();
    let light: Vec<_> = trials
        .iter()
        .filter(|t| t.tag.as_deref().unwrap_or("").starts_with("carbon-light"))
        .collect();
    assert!(!light.is_empty(), "{stderr}");
    for t in light {
        let e = t.metrics.as_ref().unwrap()["predicted_inference_energy_j_per_1k"];
        assert!(e > 0.0 && e.is_finite());
        assert!(
            t.notes
                .iter()
                .any(|n| n.contains("predicted from calibration")),
            "{:?}",
            t.notes
        );
    }
    for t in trials
        .iter()
        .filter(|t| t.tag.as_deref().unwrap_or("").starts_with("carbon-heavy"))
    {
        let m = t.metrics.as_ref().unwrap();
        assert!(
            m.contains_key("inference_energy_j_per_1k"),
            "measured: {m:?}"
        );
    }
    d.stop().unwrap();
}
