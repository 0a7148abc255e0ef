//! The model-based strategies (multi-objective TPE, LaMOO) against random
//! search on synthetic problems whose fronts are known, at equal budgets
//! over seeds; and their durability: resumed after SIGKILL with no finished
//! trial lost, several workers and processes without duplicates.
//!
//! The search loop here asks the strategy directly and evaluates the
//! problem in memory (no database), as the runner does with one worker:
//! the generator of trial `n` is seeded from the seed and `n`.

mod common;

use nas_search::objective::{Metrics, Objective, ObjectiveSet};
use nas_search::space::{Config, SearchSpace};
use nas_search::strategy::{strategy_from_spec, Ask, History};
use nas_search::study::{derive_seed, Study, TrialRecord, TrialStatus};
use rand::rngs::StdRng;
use rand::SeedableRng;
use std::collections::{BTreeMap, HashSet};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// ZDT1 with 5 variables: f1 = x1, g = 1 + 9 mean(x2..x5),
/// f2 = g (1 - sqrt(f1 / g)); the front is g = 1, f2 = 1 - sqrt(f1).
fn zdt1_space() -> SearchSpace {
    let mut toml = String::new();
    for i in 1..=5 {
        toml.push_str(&format!(
            "[[param]]\nname = \"x{i}\"\ntype = \"float\"\nlow = 0.0\nhigh = 1.0\n"
        ));
    }
    SearchSpace::from_toml_str(&toml, "zdt1").unwrap()
}

fn zdt1(c: &Config) -> Metrics {
    let x: Vec<f64> = (1..=5)
        .map(|i| c.get(&format!("x{i}")).unwrap().as_f64().unwrap())
        .collect();
    let g = 1.0 + 9.0 * x[1..].iter().sum::<f64>() / 4.0;
    let f1 = x[0];
    let f2 = g * (1.0 - (f1 / g).sqrt());
    BTreeMap::from([("f1".to_string(), f1), ("f2".to_string(), f2)])
}

/// A conditional space: `branch` smooth (a float, b log-float) or rough
/// (k integer, c categorical). The front lies in the smooth branch at
/// b = 10^-1.5: f1 = a, f2 = 1 - sqrt(a); the rough branch is dominated.
fn conditional_space() -> SearchSpace {
    SearchSpace::from_toml_str(
        r#"
[[param]]
name = "branch"
type = "categorical"
choices = ["smooth", "rough"]
[[param]]
name = "a"
type = "float"
low = 0.0
high = 1.0
when = { param = "branch", in = ["smooth"] }
[[param]]
name = "b"
type = "float"
low = 0.001
high = 1.0
log = true
when = { param = "branch", in = ["smooth"] }
[[param]]
name = "k"
type = "int"
low = 1
high = 20
when = { param = "branch", in = ["rough"] }
[[param]]
name = "c"
type = "categorical"
choices = ["p", "q", "r"]
when = { param = "branch", in = ["rough"] }
"#,
        "conditional",
    )
    .unwrap()
}

fn conditional(c: &Config) -> Metrics {
    let num = |n: &str| c.get(n).and_then(|v| v.as_f64());
    let (f1, f2) = match c.get("branch").and_then(|v| v.as_str()) {
        Some("smooth") => {
            let a = num("a").unwrap();
            let g = 1.0 + 4.0 * (num("b").unwrap().log10() + 1.5).abs() / 1.5;
            (a, g * (1.0 - (a / g).sqrt()))
        }
        _ => {
            let k = num("k").unwrap() / 20.0;
            let off = if c.get("c").and_then(|v| v.as_str()) == Some("q") {
                0.0
            } else {
                1.0
            };
            (k, 1.5 - 0.5 * k + off)
        }
    };
    BTreeMap::from([("f1".to_string(), f1), ("f2".to_string(), f2)])
}

fn objectives(ref_f2: f64) -> ObjectiveSet {
    ObjectiveSet::new(vec![
        Objective::parse("f1:min:ref=1.1:ideal=0").unwrap(),
        Objective::parse(&format!("f2:min:ref={ref_f2}:ideal=0")).unwrap(),
    ])
    .unwrap()
}

fn record(number: u64, config: Config, metrics: Metrics) -> TrialRecord {
    TrialRecord {
        number,
        config_key: config.key(),
        config,
        fidelity: 1.0,
        tag: None,
        status: TrialStatus::Finished,
        worker: None,
        seed: 0,
        metrics: Some(metrics),
        kernel_energy: Vec::new(),
        provenance: None,
        energy_spent_j: None,
        error: None,
        notes: Vec::new(),
        created_ns: 0,
        started_ns: None,
        finished_ns: None,
        finish_seq: Some(number),
        eval_ns: None,
        overhead_ns: None,
        attempts: 1,
    }
}

/// Hypervolume after `budget` trials of `strategy` on a problem.
fn search(
    strategy: &str,
    space: &SearchSpace,
    objectives: &ObjectiveSet,
    problem: fn(&Config) -> Metrics,
    budget: usize,
    seed: u64,
) -> f64 {
    let mut s = strategy_from_spec(strategy).unwrap();
    let mut trials: Vec<TrialRecord> = Vec::new();
    for n in 0..budget as u64 {
        let history = History {
            trials: &trials,
            space,
            objectives,
        };
        let mut rng = StdRng::seed_from_u64(derive_seed(seed, n));
        let Ask::Propose(p) = s.ask(&history, &mut rng) else {
            panic!("{strategy}: nothing proposed at trial {n}");
        };
        space.validate(&p.config).unwrap();
        let m = problem(&p.config);
        trials.push(record(n, p.config, m));
    }
    let all: Vec<&Metrics> = trials.iter().filter_map(|t| t.metrics.as_ref()).collect();
    objectives.hypervolume(&all).unwrap()
}

fn mean_hv(
    strategy: &str,
    space: &SearchSpace,
    objectives: &ObjectiveSet,
    problem: fn(&Config) -> Metrics,
    budget: usize,
    seeds: u64,
) -> f64 {
    (0..seeds)
        .map(|seed| search(strategy, space, objectives, problem, budget, seed))
        .sum::<f64>()
        / seeds as f64
}

#[test]
fn model_based_strategies_beat_random_search_on_zdt1() {
    let space = zdt1_space();
    let objs = objectives(6.0);
    let random = mean_hv("random", &space, &objs, zdt1, 50, 6);
    for strategy in ["tpe", "lamoo", "lamoo-tpe"] {
        let hv = mean_hv(strategy, &space, &objs, zdt1, 50, 6);
        eprintln!("zdt1, 50 trials, 6 seeds: {strategy} {hv:.4} random {random:.4}");
        assert!(hv > random, "{strategy} {hv} <= random {random}");
    }
}

#[test]
fn model_based_strategies_beat_random_search_on_a_conditional_space() {
    let space = conditional_space();
    let objs = objectives(3.0);
    let random = mean_hv("random", &space, &objs, conditional, 40, 6);
    for strategy in ["tpe", "lamoo", "lamoo-tpe"] {
        let hv = mean_hv(strategy, &space, &objs, conditional, 40, 6);
        eprintln!("conditional, 40 trials, 6 seeds: {strategy} {hv:.4} random {random:.4}");
        assert!(hv > random, "{strategy} {hv} <= random {random}");
    }
}

#[test]
fn tpe_proposals_are_deterministic_in_the_history() {
    let space = zdt1_space();
    let objs = objectives(6.0);
    for strategy in ["tpe", "lamoo-tpe"] {
        let a = search(strategy, &space, &objs, zdt1, 25, 3);
        let b = search(strategy, &space, &objs, zdt1, 25, 3);
        assert_eq!(a.to_bits(), b.to_bits(), "{strategy}");
    }
}

// ---- durability with real processes ---------------------------------------

const BIN: &str = env!("CARGO_BIN_EXE_nas-search-table");

fn spawn(
    strategy: &str,
    table: &Path,
    db: &Path,
    budget: usize,
    delay_ms: u64,
    resume: bool,
) -> Child {
    let mut cmd = Command::new(BIN);
    cmd.arg("--table")
        .arg(table)
        .args(["--metrics", "flops", "--strategy", strategy, "--seed", "3"])
        .arg("--study")
        .arg(db)
        .args(["--budget", &budget.to_string(), "--workers", "2"])
        .args(["--delay-ms", &delay_ms.to_string()])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    if resume {
        cmd.arg("--resume");
    }
    cmd.spawn().expect("spawn nas-search-table")
}

fn trials(db: &Path) -> Vec<TrialRecord> {
    Study::open_existing(db).unwrap().trials().unwrap()
}

fn finished_count(db: &Path) -> usize {
    Study::open_existing(db)
        .and_then(|s| s.counts())
        .map(|c| c.finished)
        .unwrap_or(0)
}

fn assert_no_duplicates(all: &[TrialRecord]) {
    let mut keys = HashSet::new();
    for t in all {
        assert!(
            keys.insert(t.config_key.clone()),
            "configuration evaluated twice: {}",
            t.config
        );
    }
}

#[test]
fn model_based_strategies_resume_after_sigkill_without_losing_trials() {
    for strategy in ["tpe", "lamoo-tpe"] {
        let dir = tempfile::tempdir().unwrap();
        let table = common::write_table(dir.path(), &[8, 16, 32, 64], false);
        let db = dir.path().join("study.db");
        let budget = 40;
        let mut child = spawn(strategy, &table, &db, budget, 30, false);
        let start = Instant::now();
        // Past the random start-up, so the model is in use when killed.
        while finished_count(&db) < 16 {
            assert!(
                start.elapsed() < Duration::from_secs(60),
                "{strategy}: no progress"
            );
            assert!(
                child.try_wait().unwrap().is_none(),
                "{strategy}: done too soon"
            );
            std::thread::sleep(Duration::from_millis(5));
        }
        child.kill().unwrap();
        assert!(!child.wait().unwrap().success());
        let before: BTreeMap<u64, TrialRecord> = trials(&db)
            .into_iter()
            .filter(|t| t.status == TrialStatus::Finished)
            .map(|t| (t.number, t))
            .collect();
        assert!(before.len() >= 16 && before.len() < budget);
        let out = spawn(strategy, &table, &db, budget, 1, true)
            .wait_with_output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let after = trials(&db);
        assert_no_duplicates(&after);
        assert_eq!(after.len(), budget, "{strategy}");
        assert!(after.iter().all(|t| t.status == TrialStatus::Finished));
        for (number, t) in &before {
            let now = after.iter().find(|a| a.number == *number).expect("lost");
            assert_eq!(now, t, "{strategy}: finished trial {number} changed");
        }
        // The model proposed after the restart, not random search only.
        assert!(
            after
                .iter()
                .filter(|t| !before.contains_key(&t.number))
                .any(|t| t
                    .tag
                    .as_deref()
                    .is_some_and(|g| g.starts_with("tpe") || g.starts_with("lamoo"))),
            "{strategy}: no model-based proposal after the restart"
        );
    }
}

#[test]
fn model_based_strategies_share_a_study_between_processes() {
    for strategy in ["tpe", "lamoo"] {
        let dir = tempfile::tempdir().unwrap();
        let table = common::write_table(dir.path(), &[8, 16, 32, 64], false);
        let db = dir.path().join("study.db");
        let budget = 40;
        let a = spawn(strategy, &table, &db, budget, 10, true);
        let b = spawn(strategy, &table, &db, budget, 10, true);
        for child in [a, b] {
            let out = child.wait_with_output().unwrap();
            assert!(
                out.status.success(),
                "{}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        let all = trials(&db);
        assert_no_duplicates(&all);
        assert_eq!(all.len(), budget, "{strategy}");
        assert!(all.iter().all(|t| t.status == TrialStatus::Finished));
    }
}

#[test]
fn sim_gives_the_hypervolumes_of_a_run() {
    // `nas-search-table sim` (in memory) and `run` + `score` (a study in
    // SQLite, one worker) propose the same trials for a seed.
    let dir = tempfile::tempdir().unwrap();
    let table = common::write_table(dir.path(), &[8, 16, 32, 64], false);
    for strategy in ["lamoo", "tpe"] {
        let db = dir.path().join(format!("{strategy}.db"));
        let out = Command::new(BIN)
            .arg("run")
            .arg("--table")
            .arg(&table)
            .arg("--study")
            .arg(&db)
            .args(["--metrics", "flops", "--strategy", strategy, "--seed", "3"])
            .args(["--budget", "30", "--workers", "1"])
            .output()
            .unwrap();
        assert!(out.status.success());
        let run = |args: &[&str]| {
            let out = Command::new(BIN)
                .args(args)
                .arg("--table")
                .arg(&table)
                .args(["--metrics", "flops", "--at", "10,20,30"])
                .output()
                .unwrap();
            assert!(
                out.status.success(),
                "{}",
                String::from_utf8_lossy(&out.stderr)
            );
            String::from_utf8(out.stdout).unwrap()
        };
        let scored = run(&["score", "--study", db.to_str().unwrap()]);
        let simulated = run(&["sim", "--strategy", strategy, "--seeds", "3"]);
        // score: "hv_10=… hv_20=… hv_30=… trials=30 …"; sim: "3 hv_10=… …".
        let hv = |s: &str| -> Vec<String> {
            s.split_whitespace()
                .filter(|w| w.starts_with("hv_"))
                .map(String::from)
                .collect()
        };
        assert_eq!(hv(&scored).len(), 3, "{scored}");
        assert_eq!(hv(&scored), hv(&simulated), "{strategy}");
    }
}
