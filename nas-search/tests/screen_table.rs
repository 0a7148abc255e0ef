//! `nas-search-table sim --screen-scores`: screened against unscreened
//! search on a synthetic table whose figures are known by construction.

use std::path::Path;
use std::process::Command;

const BIN: &str = env!("CARGO_BIN_EXE_nas-search-table");

/// 120 configurations `x`; accuracy `x / 120`, the same inference energy
/// for all, and training energy 1 J (x even) or 3 J (x odd). The scores
/// file's `good` column is the accuracy, `bad` its negation.
fn write_files(dir: &Path) {
    let mut table = String::from("x,val_accuracy,inference_energy_j_per_1k,training_energy_j\n");
    let mut scores = String::from("architecture,accuracy,good,bad\n");
    for x in 0..120 {
        let acc = x as f64 / 120.0;
        let train = if x % 2 == 0 { 1.0 } else { 3.0 };
        table.push_str(&format!("{x},{acc},0.5,{train}\n"));
        scores.push_str(&format!("mlp {x},{acc},{acc},{}\n", -acc));
    }
    std::fs::write(dir.join("t.csv"), table).unwrap();
    std::fs::write(dir.join("s.csv"), scores).unwrap();
}

fn sim(dir: &Path, column: &str) -> (bool, String, String) {
    let out = Command::new(BIN)
        .args(["sim", "--table"])
        .arg(dir.join("t.csv"))
        .args(["--metrics", "training_energy_j", "--strategy", "random"])
        .args(["--seeds", "1-2", "--at", "100", "--screen-cost-j", "0.01"])
        .arg("--screen-scores")
        .arg(format!("{}:{column}", dir.join("s.csv").display()))
        .env_remove("RUST_BACKTRACE")
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn field(line: &str, key: &str) -> f64 {
    line.split_whitespace()
        .find_map(|kv| kv.strip_prefix(&format!("{key}=")))
        .unwrap_or_else(|| panic!("no {key} in {line}"))
        .parse()
        .unwrap()
}

#[test]
fn screened_search_trains_the_kept_fraction_and_counts_light_cost() {
    let dir = tempfile::tempdir().unwrap();
    write_files(dir.path());
    let (ok, good, err) = sim(dir.path(), "good");
    assert!(ok, "{err}");
    let (ok, bad, err) = sim(dir.path(), "bad");
    assert!(ok, "{err}");
    let seeds = |s: &str| -> Vec<String> {
        s.lines()
            .filter(|l| !l.starts_with("mean"))
            .map(String::from)
            .collect()
    };
    for (g, b) in seeds(&good).iter().zip(seeds(&bad).iter()) {
        // 100 candidates in 10 pools of 10, 3 of each trained.
        for line in [g, b] {
            assert_eq!(field(line, "full_trained"), 100.0);
            assert_eq!(field(line, "screened_trained"), 30.0);
            assert_eq!(field(line, "screened_out"), 70.0);
            assert_eq!(field(line, "unscored"), 0.0);
            // 100 scores at 0.01 J.
            assert!((field(line, "light_j") - 1.0).abs() < 1e-9);
            let total = field(line, "screened_energy_j");
            let training = field(line, "screened_training_j");
            assert!((total - training - 1.0).abs() < 1e-3);
            // 30 trainings of 1 or 3 J each.
            assert!((30.0..=90.0).contains(&training));
        }
        // The correlated score trains the best of the 100 candidates it
        // considers (x ≥ 99: 100 distinct of 120), the anti-correlated one
        // only each pool's worst three (the inference energy is the same
        // for all, so the hypervolume grows with the best accuracy).
        assert!(field(g, "screened_hv") > field(b, "screened_hv"));
        assert_eq!(field(g, "full_hv"), field(b, "full_hv"));
    }
    assert!(good.lines().last().unwrap().starts_with("mean "));
    // `-COLUMN` negates: `-bad` is `good`, and the Pareto ranking of two
    // equal values orders a pool as the one value does.
    let (ok, neg, err) = sim(dir.path(), "-bad");
    assert!(ok, "{err}");
    assert_eq!(neg, good);
    let (ok, two, err) = sim(dir.path(), "good,-bad");
    assert!(ok, "{err}");
    assert_eq!(two, good);
}

#[test]
fn scores_of_another_table_are_refused_with_the_file_named() {
    let dir = tempfile::tempdir().unwrap();
    write_files(dir.path());
    let (ok, _, err) = sim(dir.path(), "nope");
    assert!(!ok);
    assert!(err.contains("no column `nope`"), "{err}");
    // Rows out of order: the accuracies no longer match the table's.
    let s = std::fs::read_to_string(dir.path().join("s.csv")).unwrap();
    let mut lines: Vec<&str> = s.lines().collect();
    lines.swap(1, 2);
    std::fs::write(dir.path().join("s.csv"), lines.join("\n") + "\n").unwrap();
    let (ok, _, err) = sim(dir.path(), "good");
    assert!(!ok);
    assert!(
        err.contains("s.csv line 2") && err.contains("not the same rows"),
        "{err}"
    );
    // A row missing.
    lines.truncate(50);
    std::fs::write(dir.path().join("s.csv"), lines.join("\n") + "\n").unwrap();
    let (ok, _, err) = sim(dir.path(), "good");
    assert!(!ok);
    assert!(err.contains("49 rows") && err.contains("120"), "{err}");
}
