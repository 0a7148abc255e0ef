//! PostgreSQL studies against a real server that the test starts itself
//! (see `pg_server`): many worker processes on one study, workers killed
//! mid-trial, copies between storages, the same semantics as SQLite, and
//! clear errors. Each test skips, saying so, only where the PostgreSQL
//! server binaries are not installed.

mod common;
mod pg_server;

use nas_search::evaluator::{TableColumns, TableEvaluator, TrialResult};
use nas_search::metric::{MetricInfo, MetricRegistry};
use nas_search::objective::{Direction, Metrics, Objective, ObjectiveSet};
use nas_search::runner::{run_study, RunOptions};
use nas_search::space::SearchSpace;
use nas_search::strategy::strategy_from_spec;
use nas_search::study::{
    copy_study, Claim, Study, StudyError, StudyLocation, StudySpec, TrialRecord, TrialStatus,
    WorkerIdentity, SCHEMA_VERSION,
};
use pg_server::PgServer;
use shared::{MonotonicNs, Provenance};
use std::collections::{BTreeMap, HashSet};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_nas-search-table");

fn location(url: &str, study: &str) -> StudyLocation {
    StudyLocation::parse(&format!("{url}?study={study}")).expect("valid location")
}

/// A `nas-search-table run` worker process on `study`.
fn worker(table: &Path, study: &StudyLocation, budget: usize, extra: &[&str]) -> Child {
    let url = match study {
        StudyLocation::Postgres(pg) => format!("{}?study={}", pg.url(), pg.study()),
        StudyLocation::Sqlite(p) => p.display().to_string(),
    };
    Command::new(BIN)
        .arg("--table")
        .arg(table)
        .args(["--metrics", "flops", "--strategy", "random", "--seed", "5"])
        .args(["--study", &url, "--budget", &budget.to_string(), "--resume"])
        .args(extra)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn nas-search-table")
}

fn trials(study: &StudyLocation) -> Vec<TrialRecord> {
    Study::open_existing(study)
        .and_then(|mut s| s.trials())
        .unwrap_or_default()
}

/// Polls `cond` every 10 ms until it holds; fails after `limit`.
fn wait_for(what: &str, limit: Duration, mut cond: impl FnMut() -> bool) {
    let start = Instant::now();
    while !cond() {
        assert!(start.elapsed() < limit, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn pid_of(t: &TrialRecord) -> Option<u32> {
    t.worker.as_deref()?.split('/').nth(2)?.parse().ok()
}

/// Every trial finished exactly once: distinct numbers from 0, distinct
/// configurations, commit order without gaps or repeats.
fn assert_each_finished_once(all: &[TrialRecord], budget: usize) {
    assert_eq!(all.len(), budget, "no trial beyond the budget");
    let numbers: Vec<u64> = all.iter().map(|t| t.number).collect();
    assert_eq!(numbers, (0..budget as u64).collect::<Vec<_>>());
    let keys: HashSet<&str> = all.iter().map(|t| t.config_key.as_str()).collect();
    assert_eq!(keys.len(), budget, "a configuration was evaluated twice");
    let mut seqs: Vec<u64> = all.iter().filter_map(|t| t.finish_seq).collect();
    seqs.sort_unstable();
    assert_eq!(seqs, (0..budget as u64).collect::<Vec<_>>());
    assert!(all.iter().all(|t| t.status == TrialStatus::Finished));
}

#[test]
fn eight_worker_processes_finish_a_200_trial_study_each_trial_once() {
    let Some(server) = PgServer::start() else {
        return;
    };
    let url = server.database("eight");
    let dir = tempfile::tempdir().unwrap();
    // 5 widths: 310 configurations, enough for 200 distinct trials.
    let table = common::write_table(dir.path(), &[8, 16, 32, 64, 128], false);
    let study = location(&url, "table200");
    let budget = 200;
    let children: Vec<Child> = (0..8)
        .map(|_| worker(&table, &study, budget, &["--delay-ms", "5"]))
        .collect();
    let mut pids = HashSet::new();
    for child in children {
        pids.insert(child.id());
        let out = child.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let all = trials(&study);
    assert_each_finished_once(&all, budget);
    assert!(
        all.iter().all(|t| t.attempts == 1),
        "no trial claimed twice"
    );
    let workers: HashSet<u32> = all.iter().filter_map(pid_of).collect();
    assert!(workers.is_subset(&pids));
    assert!(
        workers.len() >= 4,
        "the 8 processes shared the work: {} took part",
        workers.len()
    );
}

#[test]
fn sigkilled_workers_lose_nothing_and_their_trials_are_rerun_after_the_grace_period() {
    let Some(server) = PgServer::start() else {
        return;
    };
    let url = server.database("kill");
    let dir = tempfile::tempdir().unwrap();
    let table = common::write_table(dir.path(), &[8, 16, 32, 64], false);
    let study = location(&url, "killed");
    let budget = 40;
    let grace = Duration::from_millis(1500);
    let heartbeat = Duration::from_millis(100);
    let timing = [
        "--delay-ms",
        "150",
        "--stale-after-ms",
        &grace.as_millis().to_string(),
        "--heartbeat-ms",
        &heartbeat.as_millis().to_string(),
    ];
    let mut children: Vec<Child> = (0..4)
        .map(|_| worker(&table, &study, budget, &timing))
        .collect();
    wait_for("8 finished trials", Duration::from_secs(30), || {
        trials(&study)
            .iter()
            .filter(|t| t.status == TrialStatus::Finished)
            .count()
            >= 8
    });
    // Kill two workers while each holds a running trial: stop one (its
    // state cannot change while stopped), look, kill it if it is mid-trial,
    // else let it go on and look again.
    let mut killed = Vec::new();
    let mut stopped_ns = BTreeMap::new();
    for child in children.iter_mut().take(2) {
        let pid = child.id();
        wait_for(
            "the worker to be stopped mid-trial",
            Duration::from_secs(20),
            || {
                signal("STOP", pid);
                stopped_ns.insert(pid, MonotonicNs::now().as_ns());
                let mid_trial = trials(&study)
                    .iter()
                    .any(|t| t.status == TrialStatus::Running && pid_of(t) == Some(pid));
                if !mid_trial {
                    signal("CONT", pid);
                }
                mid_trial
            },
        );
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        killed.push(pid);
    }
    let at_kill = trials(&study);
    let finished_at_kill: BTreeMap<u64, TrialRecord> = at_kill
        .iter()
        .filter(|t| t.status == TrialStatus::Finished)
        .map(|t| (t.number, t.clone()))
        .collect();
    let orphans: Vec<u64> = at_kill
        .iter()
        .filter(|t| {
            t.status == TrialStatus::Running && pid_of(t).is_some_and(|p| killed.contains(&p))
        })
        .map(|t| t.number)
        .collect();
    assert_eq!(orphans.len(), 2, "each killed worker held one trial");

    for child in children.into_iter().skip(2) {
        let out = child.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let after = trials(&study);
    assert_each_finished_once(&after, budget);
    for (number, t) in &finished_at_kill {
        assert_eq!(
            &after[*number as usize], t,
            "finished trial {number} changed"
        );
    }
    for number in orphans {
        let t = &after[number as usize];
        assert_eq!(t.attempts, 2, "trial {number} re-run once");
        let by = pid_of(t).unwrap();
        assert!(
            !killed.contains(&by),
            "trial {number} re-run by a live worker"
        );
        // Re-queued only once its heartbeat expired: the dead worker's last
        // heartbeat was at most a period (and a tick) before it stopped.
        let dead = at_kill[number as usize]
            .worker
            .as_deref()
            .and_then(|w| w.split('/').nth(2)?.parse::<u32>().ok());
        let stop = stopped_ns[&dead.unwrap()];
        let earliest = stop + grace.as_nanos() as u64 - 2 * heartbeat.as_nanos() as u64;
        let started = t.started_ns.unwrap();
        assert!(
            started >= earliest,
            "trial {number} re-run {} ms after its worker stopped, before the grace period",
            (started.saturating_sub(stop)) / 1_000_000
        );
    }
}

fn signal(name: &str, pid: u32) {
    let ok = Command::new("kill")
        .args([&format!("-{name}"), &pid.to_string()])
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    assert!(ok, "kill -{name} {pid}");
}

/// A SQLite study with every kind of trial: finished (with kernel energy,
/// notes, a later measurement), failed, and one still running.
fn rich_sqlite_study(dir: &Path) -> StudyLocation {
    let table = common::write_table(dir, &[8, 16, 32], false);
    let names: Vec<String> = ["val_accuracy", "inference_energy_j_per_1k", "flops"]
        .map(String::from)
        .to_vec();
    let evaluator = TableEvaluator::from_csv(&table, TableColumns::Metrics(&names)).unwrap();
    let spec = StudySpec {
        space: evaluator.space().clone(),
        objectives: common::objectives(),
        strategy: "nsga2".into(),
        seed: 9,
        metrics: MetricRegistry::new([
            MetricInfo::measured("val_accuracy", "fraction", Direction::Maximize),
            MetricInfo::measured("inference_energy_j_per_1k", "J", Direction::Minimize),
        ])
        .unwrap(),
    };
    let location = StudyLocation::Sqlite(dir.join("source.db"));
    let options = RunOptions::new(&location, 20);
    run_study(
        spec.clone(),
        Arc::new(evaluator),
        strategy_from_spec("nsga2").unwrap(),
        &options,
        &|_| {},
    )
    .unwrap();
    let mut study = Study::open(&location, spec, true).unwrap();
    let extra: Metrics = [("measured_energy".to_string(), 1.25)]
        .into_iter()
        .collect();
    assert!(study
        .add_measurement(3, &extra, Some(2.5), "re-measured")
        .unwrap());
    let mut strategy = strategy_from_spec("nsga2").unwrap();
    let me = WorkerIdentity::current(0);
    let Claim::Trial(failed) = study
        .claim(&me, 30, strategy.as_mut(), Duration::from_secs(600))
        .unwrap()
    else {
        panic!("expected a trial");
    };
    study
        .finish(failed.id, &Err("out of memory".into()), 7, 3)
        .unwrap();
    let Claim::Trial(_) = study
        .claim(&me, 30, strategy.as_mut(), Duration::from_secs(600))
        .unwrap()
    else {
        panic!("expected a trial");
    };
    location
}

fn assert_same_study(a: &StudyLocation, b: &StudyLocation) {
    let mut x = Study::open_existing(a).unwrap();
    let mut y = Study::open_existing(b).unwrap();
    let (sx, sy) = (x.spec().clone(), y.spec().clone());
    let json = |s: &StudySpec| serde_json::to_string(&s.space.definition()).unwrap();
    assert_eq!(json(&sx), json(&sy));
    assert_eq!(sx.objectives, sy.objectives);
    assert_eq!((sx.strategy, sx.seed), (sy.strategy, sy.seed));
    assert_eq!(sx.metrics, sy.metrics);
    assert_eq!(x.trials().unwrap(), y.trials().unwrap());
}

#[test]
fn a_study_copied_sqlite_to_postgres_and_back_compares_equal() {
    let Some(server) = PgServer::start() else {
        return;
    };
    let url = server.database("copies");
    let dir = tempfile::tempdir().unwrap();
    let source = rich_sqlite_study(dir.path());
    let pg = location(&url, "copied");
    let back = StudyLocation::Sqlite(dir.path().join("back.db"));
    let c1 = copy_study(&source, &pg).unwrap();
    let c2 = copy_study(&pg, &back).unwrap();
    assert_eq!(c1, c2);
    assert_eq!(c1.trials, 22);
    assert_same_study(&source, &pg);
    assert_same_study(&source, &back);
    let statuses: HashSet<TrialStatus> = trials(&back).iter().map(|t| t.status).collect();
    assert_eq!(
        statuses,
        [
            TrialStatus::Finished,
            TrialStatus::Failed,
            TrialStatus::Running
        ]
        .into_iter()
        .collect()
    );
    let measured = &trials(&back)[3];
    assert_eq!(measured.metrics.as_ref().unwrap()["measured_energy"], 1.25);
    assert_eq!(measured.notes.last().unwrap(), "re-measured");
    // A copy never overwrites a study.
    let e = copy_study(&source, &pg).unwrap_err();
    assert!(matches!(e, StudyError::NotEmpty { .. }), "{e}");
    // The copied study goes on: new trials are numbered after the copied.
    let mut resumed =
        Study::open(&pg, Study::open_existing(&pg).unwrap().spec().clone(), true).unwrap();
    let mut strategy = strategy_from_spec("nsga2").unwrap();
    let me = WorkerIdentity::current(0);
    // The copied running trial has no heartbeat here: re-queued at once.
    let Claim::Trial(t) = resumed
        .claim(&me, 30, strategy.as_mut(), Duration::from_secs(600))
        .unwrap()
    else {
        panic!("expected a trial");
    };
    assert!(t.rerun);
    assert_eq!(t.number, 21);
    let Claim::Trial(t) = resumed
        .claim(&me, 30, strategy.as_mut(), Duration::from_secs(600))
        .unwrap()
    else {
        panic!("expected a trial");
    };
    assert_eq!(t.number, 22);
    assert!(resumed
        .finish(t.id, &Ok(TrialResult::default()), 1, 1)
        .unwrap());
}

fn small_spec(seed: u64) -> StudySpec {
    StudySpec {
        space: SearchSpace::default_tabular(),
        objectives: ObjectiveSet::new(vec![Objective::parse("acc:max").unwrap()]).unwrap(),
        strategy: "random".into(),
        seed,
        metrics: MetricRegistry::new([MetricInfo::measured(
            "acc",
            "fraction",
            Direction::Maximize,
        )])
        .unwrap(),
    }
}

/// The semantics of `study`'s SQLite unit tests, on PostgreSQL.
#[test]
fn claims_results_measurements_and_reopening_behave_as_on_sqlite() {
    let Some(server) = PgServer::start() else {
        return;
    };
    let url = server.database("semantics");
    let at = location(&url, "unit");
    let mut study = Study::open(&at, small_spec(1), false).unwrap();
    let me = WorkerIdentity::current(0);
    let mut strat = strategy_from_spec("random").unwrap();
    let Claim::Trial(t) = study
        .claim(&me, 2, strat.as_mut(), Duration::from_secs(60))
        .unwrap()
    else {
        panic!("expected a trial");
    };
    assert_eq!(t.number, 0);
    let result = TrialResult {
        metrics: [("acc".to_string(), 0.9), ("e".to_string(), 1.0)]
            .into_iter()
            .collect(),
        provenance: Some(Provenance::Estimated),
        energy_spent_j: Some(10.0),
        notes: vec!["first".into()],
        ..Default::default()
    };
    assert!(study.finish(t.id, &Ok(result), 10, 5).unwrap());
    assert!(!study.finish(t.id, &Err("late".into()), 10, 5).unwrap());
    let before = study.trials().unwrap();
    assert_eq!(before[0].status, TrialStatus::Finished);
    assert_eq!(before[0].finish_seq, Some(0));
    assert_eq!(before[0].provenance, Some(Provenance::Estimated));
    let extra: Metrics = [("e".to_string(), 2.0)].into_iter().collect();
    assert!(study
        .add_measurement(0, &extra, Some(4.5), "again")
        .unwrap());
    let after = study.trials().unwrap();
    assert_eq!(after[0].metrics.as_ref().unwrap()["e"], 2.0);
    assert_eq!(after[0].energy_spent_j, Some(14.5));
    assert_eq!(after[0].notes, ["first", "again"]);
    assert!(!study.add_measurement(7, &extra, None, "x").unwrap());
    drop(study);
    assert!(matches!(
        Study::open(&at, small_spec(1), false),
        Err(StudyError::Exists { .. })
    ));
    let e = Study::open(&at, small_spec(2), true)
        .err()
        .unwrap()
        .to_string();
    assert!(e.contains("seed"), "{e}");
    let mut study = Study::open(&at, small_spec(1), true).unwrap();
    assert!(matches!(
        study
            .claim(&me, 1, strat.as_mut(), Duration::from_secs(60))
            .unwrap(),
        Claim::BudgetReached
    ));
    // A trial whose worker stops sending heartbeats is re-queued after the
    // grace period, by whoever claims next, with the same seed.
    // (Another process: heartbeats are per process.)
    let mut ghost = WorkerIdentity::current(0);
    ghost.pid = u32::MAX - 1;
    let Claim::Trial(lost) = study
        .claim(&ghost, 5, strat.as_mut(), Duration::from_secs(60))
        .unwrap()
    else {
        panic!("expected a trial");
    };
    let Claim::Trial(fresh) = study
        .claim(&me, 5, strat.as_mut(), Duration::from_secs(60))
        .unwrap()
    else {
        panic!("expected a trial");
    };
    assert!(!fresh.rerun, "within the grace period nothing is re-queued");
    std::thread::sleep(Duration::from_millis(300));
    assert!(study.heartbeat(&me).unwrap() >= 1);
    let Claim::Trial(again) = study
        .claim(&me, 5, strat.as_mut(), Duration::from_millis(200))
        .unwrap()
    else {
        panic!("expected the re-queued trial");
    };
    assert!(again.rerun);
    assert_eq!(
        (again.number, again.seed, again.config),
        (lost.number, lost.seed, lost.config)
    );
    // Two studies in one database are apart.
    let other = location(&url, "unit_two");
    let s2 = Study::open(&other, small_spec(3), false).unwrap();
    assert_eq!(s2.counts().unwrap().finished, 0);
}

#[test]
fn errors_say_what_is_wrong() {
    // Nothing listens on this port: the server is unreachable.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let nowhere = location(&format!("postgresql://u@127.0.0.1:{port}/db"), "s");
    let e = Study::open_existing(&nowhere).err().unwrap();
    assert!(matches!(e, StudyError::Unreachable { .. }), "{e}");
    assert!(e.to_string().contains("cannot reach"), "{e}");
    // A bad URL is refused before anything is tried.
    let e = "postgresql://h:port/db"
        .parse::<StudyLocation>()
        .unwrap_err();
    assert!(e.to_string().contains("not a valid URL"), "{e}");

    let Some(server) = PgServer::start() else {
        return;
    };
    let url = server.database("errs");
    let port = server.port();
    let wrong = location(
        &format!(
            "postgresql://{}:wrong@127.0.0.1:{port}/errs",
            pg_server::PASSWORD_ROLE
        ),
        "s",
    );
    let e = Study::open(&wrong, small_spec(1), false).err().unwrap();
    assert!(matches!(e, StudyError::Auth { .. }), "{e}");
    assert!(!e.to_string().contains(":wrong@"), "password shown: {e}");
    let right = location(
        &format!(
            "postgresql://{}:{}@127.0.0.1:{port}/errs",
            pg_server::PASSWORD_ROLE,
            pg_server::PASSWORD_ROLE_SECRET
        ),
        "s",
    );
    // Logged in, but not allowed to create the study's schema.
    let e = Study::open(&right, small_spec(1), false).err().unwrap();
    assert!(matches!(e, StudyError::Database { .. }), "{e}");
    let missing_db = location(&format!("postgresql://postgres@127.0.0.1:{port}/nope"), "s");
    let e = Study::open(&missing_db, small_spec(1), false)
        .err()
        .unwrap();
    assert!(matches!(e, StudyError::Database { .. }), "{e}");
    assert!(e.to_string().contains("nope"), "{e}");
    let absent = location(&url, "absent");
    let e = Study::open_existing(&absent).err().unwrap();
    assert!(matches!(e, StudyError::NotAStudy { .. }), "{e}");
    // A study written by a newer layout is refused, to read or to write.
    let newer = location(&url, "newer");
    Study::open(&newer, small_spec(1), false).unwrap();
    server.execute(
        "errs",
        "UPDATE newer.study_meta SET value = '99' WHERE key = 'schema_version'",
    );
    for e in [
        Study::open_existing(&newer).err().unwrap(),
        Study::open(&newer, small_spec(1), true).err().unwrap(),
    ] {
        assert!(
            matches!(e, StudyError::NewerSchema { found: 99, supported, .. } if supported == SCHEMA_VERSION),
            "{e}"
        );
    }
}
