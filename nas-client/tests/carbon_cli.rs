//! `--carbon-intensity` and `--pue` end to end: a table-driven search (no
//! training) whose every trial spent 0.2 kWh, reported with a bare number,
//! a constant, a trace around the current hour (trials placed in time with
//! this boot's clocks), and bad specs that must fail naming the spot.

use std::path::Path;
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

fn json(out: &Output) -> serde_json::Value {
    assert!(out.status.success(), "{}", stderr(out));
    serde_json::from_slice(&out.stdout).expect("JSON on stdout")
}

/// Joules every table row says its run spent: 0.2 kWh.
const SPENT_J: f64 = 720_000.0;

/// A four-row table and a three-trial search over it.
fn searched_study(dir: &Path) -> (String, serde_json::Value) {
    let table = dir.join("table.csv");
    let mut csv =
        String::from("width,val_accuracy,inference_energy_j_per_1k,energy_spent_j,provenance\n");
    for (w, acc, e) in [
        (8, 0.80, 0.5),
        (16, 0.86, 1.0),
        (32, 0.90, 2.0),
        (64, 0.91, 4.0),
    ] {
        csv.push_str(&format!("{w},{acc},{e},{SPENT_J},simulated\n"));
    }
    std::fs::write(&table, csv).unwrap();
    let study = dir.join("s.db").display().to_string();
    let evaluator = format!("table:{}", table.display());
    let out = nas_client(&[
        "search",
        "--evaluator",
        &evaluator,
        "--study",
        &study,
        "--budget",
        "3",
        "--strategy",
        "random",
        "--objectives",
        "val_accuracy:max:ref=0:ideal=1,inference_energy_j_per_1k:min",
        "--constraints",
        "none",
        "--carbon-intensity",
        "250",
        "--json",
    ]);
    (study, json(&out))
}

#[test]
fn carbon_of_a_search_and_its_report() {
    let tmp = tempfile::tempdir().unwrap();
    let (study, summary) = searched_study(tmp.path());
    let n = summary["finished_trials"].as_u64().unwrap() as f64;
    assert_eq!(n, 3.0);
    // A bare number is `const:`: 3 × 0.2 kWh × 250 g/kWh = 150 g, PUE 1 by default.
    let c = &summary["carbon"];
    assert_eq!(c["intensity_source"], "const:250");
    assert_eq!(c["intensity_kind"], "average");
    assert_eq!(c["pue"], 1.0);
    assert_eq!(c["pue_origin"], "default");
    assert_eq!(c["energy_provenance"], "simulated");
    assert!(
        (c["grams_co2eq"].as_f64().unwrap() - 150.0).abs() < 1e-9,
        "{c}"
    );

    // No spec: no carbon figures.
    let plain = json(&nas_client(&["report", "--json", "--study", &study]));
    assert!(plain["carbon"].is_null());

    // A trace around now, 100 g/kWh every hour: the trials ran minutes ago
    // in this boot, so they are placed in time and charged at 100 × PUE.
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    let hour = now_ms.div_euclid(3_600_000);
    let mut trace = String::from("Time,Carbon Intensity\n");
    for h in hour - 3..=hour + 3 {
        trace.push_str(&format!("{},100\n", carbon::UtcMillis::from_hour_index(h)));
    }
    let trace_path = tmp.path().join("grid.csv");
    std::fs::write(&trace_path, trace).unwrap();
    let spec = format!("trace:{}", trace_path.display());
    let out = tmp.path().join("report");
    let r = json(&nas_client(&[
        "report",
        "--json",
        "--study",
        &study,
        "--out",
        out.to_str().unwrap(),
        "--carbon-intensity",
        &spec,
        "--pue",
        "1.25",
    ]));
    let c = &r["carbon"];
    assert_eq!(c["intensity_source"], spec.as_str());
    assert_eq!(c["timing"], "hourly-from-trial-times");
    assert_eq!(c["pue_origin"], "given");
    // 0.6 kWh × 100 × 1.25 = 75 g.
    assert!(
        (c["grams_co2eq"].as_f64().unwrap() - 75.0).abs() < 1e-9,
        "{c}"
    );
    let md = std::fs::read_to_string(out.join("summary.md")).unwrap();
    assert!(
        md.contains(&format!(
            "**75.00 gCO₂eq** (average intensity from {spec}, PUE 1.25)"
        )),
        "{md}"
    );

    // Terminal output names the source too.
    let text_out = tmp.path().join("text-report");
    let text = nas_client(&[
        "report",
        "--study",
        &study,
        "--out",
        text_out.to_str().unwrap(),
        "--carbon-intensity",
        "const:250",
    ]);
    assert!(text.status.success(), "{}", stderr(&text));
    let stdout = String::from_utf8_lossy(&text.stdout);
    assert!(
        stdout.contains("carbon of the search: 150.000 gCO2eq (average intensity from const:250, PUE 1.0 (default: no facility overhead counted)"),
        "{stdout}"
    );
}

#[test]
fn bad_carbon_flags_fail_naming_the_spot() {
    let tmp = tempfile::tempdir().unwrap();
    let (study, _) = searched_study(tmp.path());
    let report = |extra: &[&str]| {
        let mut args = vec!["report", "--json", "--study", study.as_str()];
        args.extend_from_slice(extra);
        nas_client(&args)
    };
    let out = report(&["--carbon-intensity", "gas:1"]);
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(
        err.contains("--carbon-intensity") && err.contains("unknown scheme"),
        "{err}"
    );

    let missing = tmp.path().join("missing.csv");
    let out = report(&[
        "--carbon-intensity",
        &format!("trace:{}", missing.display()),
    ]);
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(
        err.contains("--carbon-intensity") && err.contains("missing.csv"),
        "{err}"
    );

    let bad = tmp.path().join("bad.csv");
    std::fs::write(
        &bad,
        "Time,Carbon Intensity\n2020-01-01 00:00:00,100\n2020-01-01 01:00:00,lots\n",
    )
    .unwrap();
    let out = report(&["--carbon-intensity", &format!("trace:{}", bad.display())]);
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(
        err.contains("bad.csv") && err.contains("line 3") && err.contains("Carbon Intensity"),
        "{err}"
    );

    // A trace that misses the hours the search ran in: the hour is named.
    let old = tmp.path().join("old.csv");
    std::fs::write(&old, "Time,Carbon Intensity\n2020-01-01 00:00:00,100\n").unwrap();
    let out = report(&["--carbon-intensity", &format!("trace:{}", old.display())]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("has no value for the hour starting"),
        "{}",
        stderr(&out)
    );
    // The same at the end of a search: the search succeeded and is stored,
    // so it exits 0 and says why there are no carbon figures.
    let table = tmp.path().join("table.csv").display().to_string();
    let out = nas_client(&[
        "search",
        "--evaluator",
        &format!("table:{table}"),
        "--study",
        tmp.path().join("s2.db").to_str().unwrap(),
        "--budget",
        "2",
        "--strategy",
        "random",
        "--objectives",
        "val_accuracy:max:ref=0:ideal=1,inference_energy_j_per_1k:min",
        "--constraints",
        "none",
        "--carbon-intensity",
        &format!("trace:{}", old.display()),
        "--json",
    ]);
    let summary = json(&out);
    assert!(summary["carbon"].is_null());
    let err = stderr(&out);
    assert!(
        err.contains("note: no carbon figures")
            && err.contains("has no value for the hour starting"),
        "{err}"
    );

    let out = report(&["--carbon-intensity", "const:250", "--pue", "0.9"]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("PUE must be a finite number >= 1.0, got 0.9"),
        "{}",
        stderr(&out)
    );

    // A PUE alone would mean a default intensity: refused.
    let out = report(&["--pue", "1.2"]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("--carbon-intensity"),
        "{}",
        stderr(&out)
    );

    let out = report(&["--carbon-intensity=-3"]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("carbon intensity must be a finite number >= 0"),
        "{}",
        stderr(&out)
    );
}
