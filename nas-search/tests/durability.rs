//! Durability with real processes: a study killed with SIGKILL mid-run
//! resumes without losing a finished trial (half-finished ones are re-run),
//! and two processes working on one study never duplicate a trial.

mod common;

use nas_search::study::{Study, TrialRecord, TrialStatus};
use std::collections::{BTreeMap, HashSet};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_nas-search-table");

fn spawn(
    table: &Path,
    db: &Path,
    budget: usize,
    workers: usize,
    delay_ms: u64,
    resume: bool,
) -> Child {
    let mut cmd = Command::new(BIN);
    cmd.arg("--table")
        .arg(table)
        .args(["--metrics", "flops", "--strategy", "nsga2", "--seed", "3"])
        .arg("--study")
        .arg(db)
        .args([
            "--budget",
            &budget.to_string(),
            "--workers",
            &workers.to_string(),
        ])
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
    // The database may not exist yet, or be mid-creation.
    Study::open_existing(db)
        .and_then(|s| s.counts())
        .map(|c| c.finished)
        .unwrap_or(0)
}

fn assert_no_duplicates(all: &[TrialRecord]) {
    let mut keys = HashSet::new();
    let mut numbers = HashSet::new();
    for t in all {
        assert!(
            keys.insert(t.config_key.clone()),
            "configuration evaluated twice: {}",
            t.config
        );
        assert!(numbers.insert(t.number), "trial number {} twice", t.number);
    }
    let mut seqs: Vec<u64> = all.iter().filter_map(|t| t.finish_seq).collect();
    seqs.sort_unstable();
    assert_eq!(
        seqs,
        (0..seqs.len() as u64).collect::<Vec<_>>(),
        "commit order has gaps or repeats"
    );
}

#[test]
fn sigkill_mid_run_then_resume_loses_no_finished_trial() {
    let dir = tempfile::tempdir().unwrap();
    let table = common::write_table(dir.path(), &[8, 16, 32, 64], false);
    let db = dir.path().join("study.db");
    let budget = 60;
    let mut child = spawn(&table, &db, budget, 2, 40, false);
    let start = Instant::now();
    while finished_count(&db) < 12 {
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "no progress before the kill"
        );
        assert!(
            child.try_wait().unwrap().is_none(),
            "finished before it could be killed"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    child.kill().unwrap(); // SIGKILL on Unix
    let status = child.wait().unwrap();
    assert!(!status.success());

    let before = trials(&db);
    let finished_before: BTreeMap<u64, TrialRecord> = before
        .iter()
        .filter(|t| t.status == TrialStatus::Finished)
        .map(|t| (t.number, t.clone()))
        .collect();
    let half_finished: Vec<u64> = before
        .iter()
        .filter(|t| t.status == TrialStatus::Running)
        .map(|t| t.number)
        .collect();
    assert!(finished_before.len() >= 12 && finished_before.len() < budget);
    assert!(
        !half_finished.is_empty(),
        "two workers with 40 ms trials: one was mid-trial"
    );

    // Without --resume the study is refused, and nothing changes.
    let out = spawn(&table, &db, budget, 2, 0, false)
        .wait_with_output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--resume"));
    assert_eq!(trials(&db), before);

    let out = spawn(&table, &db, budget, 2, 1, true)
        .wait_with_output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let after = trials(&db);
    assert_no_duplicates(&after);
    assert_eq!(
        after
            .iter()
            .filter(|t| t.status == TrialStatus::Finished)
            .count(),
        budget
    );
    assert!(after.iter().all(|t| t.status == TrialStatus::Finished));
    for (number, t) in &finished_before {
        let now = after
            .iter()
            .find(|a| a.number == *number)
            .expect("finished trial lost");
        assert_eq!(now, t, "finished trial {number} changed on resume");
    }
    for number in half_finished {
        let t = after.iter().find(|a| a.number == number).unwrap();
        assert_eq!(t.status, TrialStatus::Finished);
        assert_eq!(t.attempts, 2, "trial {number} re-run once");
    }
}

#[test]
fn two_processes_on_one_study_do_not_duplicate_trials() {
    let dir = tempfile::tempdir().unwrap();
    let table = common::write_table(dir.path(), &[8, 16, 32, 64], false);
    let db = dir.path().join("study.db");
    let budget = 50;
    let a = spawn(&table, &db, budget, 2, 15, true);
    let b = spawn(&table, &db, budget, 2, 15, true);
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
    assert_eq!(all.len(), budget, "no trial beyond the budget");
    assert!(all.iter().all(|t| t.status == TrialStatus::Finished));
    let pids: HashSet<&str> = all
        .iter()
        .filter_map(|t| t.worker.as_deref())
        .filter_map(|w| w.split('/').nth(2))
        .collect();
    assert_eq!(pids.len(), 2, "both processes evaluated trials");
}
