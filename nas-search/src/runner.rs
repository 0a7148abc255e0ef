//! Runs a study: K worker threads claim trials, evaluate them and commit
//! each result as soon as it is known, until the budget of finished trials
//! is reached (counting trials finished by other processes on the same
//! study). A heartbeat thread keeps this process's running trials fresh so
//! other processes do not take them for abandoned.

use crate::evaluator::{EvalError, Evaluator};
use crate::objective::ObjectiveSet;
use crate::strategy::{Strategy, FULL_FIDELITY};
use crate::study::{
    Claim, StatusCounts, Study, StudyError, StudyLocation, StudySpec, TrialRecord, TrialStatus,
    WorkerIdentity,
};
use shared::MonotonicNs;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// How to run a study.
#[derive(Clone)]
pub struct RunOptions {
    /// Where the study is (a SQLite file or a PostgreSQL study).
    pub study: StudyLocation,
    /// Stop when this many trials are finished (all processes together).
    pub budget: usize,
    /// Worker threads in this process.
    pub workers: usize,
    /// Continue an existing study (and create it if missing).
    pub resume: bool,
    /// Grace period: a running trial whose heartbeat is older than this is
    /// presumed abandoned and re-queued (SQLite also detects a dead process
    /// on this host at once; PostgreSQL goes by the heartbeat alone, for
    /// workers on every machine alike).
    pub stale_after: Duration,
    /// How often this process refreshes its heartbeats.
    pub heartbeat_every: Duration,
    /// Give up after this many failed trials (a broken evaluator should not
    /// spin forever).
    pub max_failures: usize,
    /// Set to stop early (e.g. on Ctrl-C); running trials finish first.
    pub stop: Arc<AtomicBool>,
}

impl RunOptions {
    /// Defaults: 1 worker, no resume, 10 min stale limit, 2 s heartbeat,
    /// failures up to the budget.
    pub fn new(study: impl Into<StudyLocation>, budget: usize) -> RunOptions {
        RunOptions {
            study: study.into(),
            budget,
            workers: 1,
            resume: false,
            stale_after: Duration::from_secs(600),
            heartbeat_every: Duration::from_secs(2),
            max_failures: budget.max(10),
            stop: Arc::new(AtomicBool::new(false)),
        }
    }
}

/// A point of the current front, for progress display.
#[derive(Debug, Clone, PartialEq)]
pub struct FrontPoint {
    /// Trial number.
    pub number: u64,
    /// Objective values in declaration order (original units and signs).
    pub values: Vec<f64>,
}

/// Progress after a trial completes.
#[derive(Debug, Clone)]
pub struct Progress {
    /// Finished trials in the study (all processes).
    pub finished: usize,
    /// Failed trials.
    pub failed: usize,
    /// Budget.
    pub budget: usize,
    /// The trial that just completed.
    pub last: TrialRecord,
    /// The current Pareto front (feasible, full fidelity).
    pub front: Vec<FrontPoint>,
}

/// What a run ends with.
#[derive(Debug, Clone)]
pub struct RunSummary {
    /// Every trial of the study at the end.
    pub trials: Vec<TrialRecord>,
    /// Indices into `trials` of the Pareto front.
    pub front: Vec<usize>,
    /// Hypervolume of the front, if every objective has a reference point.
    pub hypervolume: Option<f64>,
    /// Trials this process evaluated.
    pub evaluated_here: usize,
    /// Why the run stopped.
    pub stop_reason: StopReason,
}

/// Why a run stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopReason {
    /// The budget of finished trials was reached.
    Budget,
    /// The strategy ran out of new configurations.
    Exhausted,
    /// Too many trials failed.
    TooManyFailures,
    /// The stop flag was set.
    Stopped,
}

/// Errors of a run.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RunError {
    /// The study database failed.
    #[error(transparent)]
    Study(#[from] StudyError),
    /// A worker thread panicked outside the evaluator.
    #[error("worker thread {0} panicked")]
    WorkerPanic(usize),
}

/// Indices of the Pareto front among `trials`: finished, full fidelity,
/// feasible under the constraints, non-dominated.
pub fn front_indices(trials: &[TrialRecord], objectives: &ObjectiveSet) -> Vec<usize> {
    let mut idx = Vec::new();
    let mut points = Vec::new();
    for (i, t) in trials.iter().enumerate() {
        if t.status != TrialStatus::Finished || (t.fidelity - FULL_FIDELITY).abs() > 1e-9 {
            continue;
        }
        let Some(m) = &t.metrics else { continue };
        if let Ok(p) = objectives.minimization_vector(m) {
            idx.push(i);
            points.push(p);
        }
    }
    let metrics: Vec<_> = idx
        .iter()
        .filter_map(|&i| trials[i].metrics.as_ref())
        .collect();
    let violations = objectives.violations(&metrics);
    let feasible: Vec<usize> = (0..idx.len()).filter(|&k| violations[k] <= 0.0).collect();
    let fpoints: Vec<Vec<f64>> = feasible.iter().map(|&k| points[k].clone()).collect();
    crate::objective::pareto_front(&fpoints)
        .into_iter()
        .map(|k| idx[feasible[k]])
        .collect()
}

/// Hypervolume of the front of `trials` (None without reference points).
pub fn trials_hypervolume(trials: &[TrialRecord], objectives: &ObjectiveSet) -> Option<f64> {
    let front = front_indices(trials, objectives);
    let metrics: Vec<_> = front
        .iter()
        .filter_map(|&i| trials[i].metrics.as_ref())
        .collect();
    objectives.hypervolume(&metrics).ok()
}

/// Runs the study described by `spec` with `evaluator` and `strategy`
/// (whose `spec()` must match `spec.strategy`) until the budget is reached.
/// `progress` is called from worker threads after each completed trial.
pub fn run_study(
    spec: StudySpec,
    evaluator: Arc<dyn Evaluator>,
    strategy: Box<dyn Strategy>,
    options: &RunOptions,
    progress: &(dyn Fn(&Progress) + Sync),
) -> Result<RunSummary, RunError> {
    let mut study = Study::open(&options.study, spec, options.resume)?;
    let main_identity = WorkerIdentity::current(0);
    let requeued = study.requeue_stale(&main_identity, options.stale_after)?;
    if requeued > 0 {
        tracing::info!(requeued, "resuming: trials of dead workers will be re-run");
    }
    let strategy = Mutex::new(strategy);
    let done = AtomicBool::new(false);
    let reasons: Mutex<Vec<StopReason>> = Mutex::new(Vec::new());
    let evaluated = std::sync::atomic::AtomicUsize::new(0);
    let workers = options.workers.max(1);

    let outcome: Result<(), RunError> = std::thread::scope(|scope| {
        let heartbeat_study = study.reopen();
        let done_ref = &done;
        let hb = scope.spawn(move || -> Result<(), StudyError> {
            let hb_study = heartbeat_study?;
            let me = WorkerIdentity::current(0);
            let tick = Duration::from_millis(50);
            let mut waited = Duration::ZERO;
            while !done_ref.load(Ordering::Relaxed) {
                std::thread::sleep(tick);
                waited += tick;
                if waited >= options.heartbeat_every {
                    waited = Duration::ZERO;
                    if let Err(e) = hb_study.heartbeat(&me) {
                        tracing::warn!(error = %e, "heartbeat failed");
                    }
                }
            }
            Ok(())
        });
        let mut handles = Vec::new();
        for w in 0..workers {
            let conn = study.reopen();
            let strategy = &strategy;
            let evaluator = evaluator.clone();
            let reasons = &reasons;
            let evaluated = &evaluated;
            handles.push(scope.spawn(move || -> Result<(), RunError> {
                let mut study = conn?;
                let me = WorkerIdentity::current(w);
                let reason = worker_loop(
                    &mut study,
                    &me,
                    strategy,
                    evaluator.as_ref(),
                    options,
                    progress,
                    evaluated,
                )?;
                if let Ok(mut r) = reasons.lock() {
                    r.push(reason);
                }
                Ok(())
            }));
        }
        let mut result = Ok(());
        for (w, h) in handles.into_iter().enumerate() {
            match h.join() {
                Ok(Ok(())) => {}
                Ok(Err(e)) => result = Err(e),
                Err(_) => result = Err(RunError::WorkerPanic(w)),
            }
        }
        done.store(true, Ordering::Relaxed);
        match hb.join() {
            Ok(Err(e)) => tracing::warn!(error = %e, "heartbeat thread could not open the study"),
            Err(_) => tracing::warn!("heartbeat thread panicked"),
            Ok(Ok(())) => {}
        }
        result
    });
    outcome?;

    let trials = study.trials()?;
    let objectives = study.spec().objectives.clone();
    let front = front_indices(&trials, &objectives);
    let hypervolume = trials_hypervolume(&trials, &objectives);
    let reasons = reasons.into_inner().unwrap_or_default();
    let stop_reason = [
        StopReason::TooManyFailures,
        StopReason::Stopped,
        StopReason::Exhausted,
        StopReason::Budget,
    ]
    .into_iter()
    .find(|r| reasons.contains(r))
    .unwrap_or(StopReason::Budget);
    Ok(RunSummary {
        trials,
        front,
        hypervolume,
        evaluated_here: evaluated.load(Ordering::Relaxed),
        stop_reason,
    })
}

/// One worker: claim, evaluate, commit, report, until told to stop.
///
/// The overhead stored with each trial is the worker's wall time between
/// the end of its previous evaluation (or its start) and the start of this
/// one, minus time spent idle waiting for work: committing the previous
/// result, refreshing the history and front for progress, and claiming and
/// proposing this trial. Summed over trials it covers the whole loop except
/// the commit after the last evaluation, without a separate write to store it.
fn worker_loop(
    study: &mut Study,
    me: &WorkerIdentity,
    strategy: &Mutex<Box<dyn Strategy>>,
    evaluator: &dyn Evaluator,
    options: &RunOptions,
    progress: &(dyn Fn(&Progress) + Sync),
    evaluated: &std::sync::atomic::AtomicUsize,
) -> Result<StopReason, RunError> {
    let objectives = study.spec().objectives.clone();
    let mut failed = study.counts()?.failed;
    let mut engine_since = MonotonicNs::now();
    let mut idle_ns = 0u64;
    loop {
        if options.stop.load(Ordering::Relaxed) {
            return Ok(StopReason::Stopped);
        }
        if failed >= options.max_failures {
            tracing::error!(failed, "too many failed trials; stopping");
            return Ok(StopReason::TooManyFailures);
        }
        let claim = {
            let mut s = match strategy.lock() {
                Ok(s) => s,
                Err(poisoned) => poisoned.into_inner(),
            };
            study.claim(me, options.budget, s.as_mut(), options.stale_after)?
        };
        let trial = match claim {
            Claim::Trial(t) => t,
            Claim::BudgetReached => return Ok(StopReason::Budget),
            Claim::Exhausted => return Ok(StopReason::Exhausted),
            Claim::Wait => {
                let wait = Duration::from_millis(20);
                std::thread::sleep(wait);
                idle_ns += wait.as_nanos() as u64;
                // Other processes may be failing trials meanwhile.
                failed = study.counts()?.failed;
                continue;
            }
        };
        if trial.rerun {
            tracing::info!(trial = trial.number, "re-running a trial whose worker died");
        }
        let eval_start = MonotonicNs::now();
        let overhead_ns = eval_start
            .saturating_sub(engine_since)
            .saturating_sub(idle_ns);
        let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            evaluator.evaluate(&trial.config, trial.fidelity, trial.seed)
        }));
        let eval_end = MonotonicNs::now();
        let eval_ns = eval_end.saturating_sub(eval_start);
        engine_since = eval_end;
        idle_ns = 0;
        let outcome = match outcome {
            Ok(Ok(r)) => Ok(r),
            Ok(Err(e)) => Err(describe(&e)),
            Err(_) => Err("evaluator panicked".to_string()),
        };
        if let Err(e) = &outcome {
            tracing::warn!(trial = trial.number, error = %e, "trial failed");
        }
        let stored = study.finish(trial.id, &outcome, eval_ns, overhead_ns)?;
        if !stored {
            tracing::warn!(
                trial = trial.number,
                "trial already finished elsewhere; result dropped"
            );
            continue;
        }
        evaluated.fetch_add(1, Ordering::Relaxed);
        // The history borrowed in place (only rows changed since the last
        // look are read): no copy of every trial per trial.
        let trials = study.trials_view()?;
        let mut counts = StatusCounts::default();
        for t in trials {
            match t.status {
                TrialStatus::Queued => counts.queued += 1,
                TrialStatus::Running => counts.running += 1,
                TrialStatus::Finished => counts.finished += 1,
                TrialStatus::Failed => counts.failed += 1,
            }
        }
        failed = counts.failed;
        let Some(last) = trials.iter().find(|t| t.number == trial.number) else {
            continue;
        };
        if let Ok(mut s) = strategy.lock() {
            s.tell(last);
        }
        let front = front_indices(trials, &objectives)
            .into_iter()
            .filter_map(|i| {
                let t = &trials[i];
                let m = t.metrics.as_ref()?;
                Some(FrontPoint {
                    number: t.number,
                    values: objectives
                        .objectives
                        .iter()
                        .map(|o| m.get(&o.name).copied().unwrap_or(f64::NAN))
                        .collect(),
                })
            })
            .collect();
        progress(&Progress {
            finished: counts.finished,
            failed: counts.failed,
            budget: options.budget,
            last: last.clone(),
            front,
        });
    }
}

fn describe(e: &EvalError) -> String {
    e.to_string()
}
