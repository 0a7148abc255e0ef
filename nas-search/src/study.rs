//! Durable studies: metadata, and every trial from proposal to result, in
//! SQLite (a file) or PostgreSQL (a server shared by workers on many
//! machines).
//!
//! [`Study`] is the one API; where it is stored is a [`StudyLocation`]
//! (`--study runs/s.db` or `--study postgresql://host/db?study=NAME`), and
//! each storage is a backend behind the crate-private `Store` trait
//! (`sqlite`, `postgres` submodules) with the same semantics:
//!
//! - Claims are atomic: a trial is handed to one worker at a time, a new
//!   proposal (history read, strategy asked, row inserted) is serialised
//!   across processes, a unique index on (configuration key, fidelity,
//!   bracket tag) backs this up, and no process runs past the budget.
//! - Every state change is its own committed transaction: a worker killed
//!   at any moment loses nothing that was committed.
//! - A `running` trial whose worker is gone goes back to `queued` and is
//!   claimed again before anything new is proposed, with the same number,
//!   configuration and seed. SQLite sees a dead process on its own host at
//!   once and otherwise goes by heartbeats on this boot's monotonic clock;
//!   PostgreSQL goes by heartbeats on the server's clock only, so it is the
//!   same for workers on every machine (see `postgres`).
//! - Readers keep a cache of trials and read only rows changed since a
//!   study-wide version counter they last saw; every writer bumps the
//!   counter in the transaction of its change, and writers commit in
//!   counter order.
//!
//! Metrics: the study stores the evaluator's metric registry
//! ([`crate::metric::MetricRegistry`]) under `study_meta.metrics`. Schema
//! 1 (before registries) had none: opening such a study to resume it
//! stores the registry given and moves it to schema 2; opening it to read
//! gives an empty registry, which reports show as "declares no metrics".
//!
//! [`copy_study`] copies a study between storages, everything included.
//!
//! Timestamps in trial records are CLOCK_MONOTONIC nanoseconds of the
//! worker's machine (see `shared::MonotonicNs`); the host and boot they
//! belong to are in each worker id.

mod location;
mod postgres;
mod sqlite;

pub use location::{LocationError, PgLocation, StudyLocation, DEFAULT_PG_STUDY};

use crate::evaluator::{KernelEnergyFigure, TrialResult};
use crate::metric::{MetricError, MetricRegistry};
use crate::objective::{Metrics, ObjectiveSet};
use crate::space::{Config, SearchSpace, SpaceDefinition};
use crate::strategy::{Ask, History, Strategy};
use rand::rngs::StdRng;
use rand::SeedableRng;
use serde::{Deserialize, Serialize};
use shared::Provenance;
use std::time::Duration;

/// Version of the study layout written by this crate: 2 added the
/// metric registry (`study_meta.metrics`); SQLite studies of version 1 are
/// read, and upgraded when opened for writing. PostgreSQL studies start at
/// 2 (their migrations are listed in the `postgres` module).
pub const SCHEMA_VERSION: i64 = 2;

/// Errors about studies. Each names the study (a file, or a PostgreSQL
/// location with its password hidden).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StudyError {
    /// SQLite failed.
    #[error("study {study}: {source}")]
    Sql {
        /// The study.
        study: StudyLocation,
        /// SQLite's error.
        source: rusqlite::Error,
    },
    /// PostgreSQL failed during a query.
    #[error("study {study}: PostgreSQL: {source}")]
    Postgres {
        /// The study.
        study: StudyLocation,
        /// The driver's error.
        source: ::postgres::Error,
    },
    /// The PostgreSQL server could not be reached (refused, no route,
    /// timed out, no such socket).
    #[error("study {study}: cannot reach the PostgreSQL server: {message}")]
    Unreachable {
        /// The study.
        study: StudyLocation,
        /// What the connection attempt said.
        message: String,
    },
    /// The server refused the login (password, role or `pg_hba.conf`).
    #[error("study {study}: PostgreSQL refused the login: {message}")]
    Auth {
        /// The study.
        study: StudyLocation,
        /// The server's message.
        message: String,
    },
    /// The server is reached but the database cannot hold the study (no
    /// such database, no right to create the study's schema).
    #[error("study {study}: the PostgreSQL database cannot be used: {message}")]
    Database {
        /// The study.
        study: StudyLocation,
        /// The server's message.
        message: String,
    },
    /// The location is not a valid study location.
    #[error(transparent)]
    Location(#[from] LocationError),
    /// The study exists and holds trials, but resuming was not asked for.
    #[error("study {study} already holds {trials} trials; pass --resume to continue it")]
    Exists {
        /// The study.
        study: StudyLocation,
        /// Trials it holds.
        trials: usize,
    },
    /// A copy's destination already holds a study.
    #[error("study {study} already exists; copy into a new study")]
    NotEmpty {
        /// The destination.
        study: StudyLocation,
    },
    /// The study was created with different settings.
    #[error("study {study} was created with a different {what}: stored {stored}, given {given}")]
    Mismatch {
        /// The study.
        study: StudyLocation,
        /// Which setting differs.
        what: String,
        /// Value in the database.
        stored: String,
        /// Value given now.
        given: String,
    },
    /// Stored data could not be decoded.
    #[error("study {study}: corrupt {what}: {message}")]
    Corrupt {
        /// The study.
        study: StudyLocation,
        /// What could not be decoded.
        what: String,
        /// Why.
        message: String,
    },
    /// The study was written by a newer version of this crate.
    #[error(
        "study {study} has schema version {found}; this build reads versions up to {supported}"
    )]
    NewerSchema {
        /// The study.
        study: StudyLocation,
        /// Its schema version.
        found: i64,
        /// The newest this build reads.
        supported: i64,
    },
    /// The metrics declared now contradict those the study stores.
    #[error("study {study}: the metrics declared now disagree with the study's: {source}")]
    Metrics {
        /// The study.
        study: StudyLocation,
        /// The disagreement.
        source: MetricError,
    },
    /// There is no study there (a missing file, or no study of that name
    /// in the database, when opening to read).
    #[error("{study} is not a study database: {message}")]
    NotAStudy {
        /// The location.
        study: StudyLocation,
        /// Why.
        message: String,
    },
}

/// Status of a trial.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TrialStatus {
    /// Waiting for a worker (re-queued after its worker died).
    Queued,
    /// Claimed by a worker.
    Running,
    /// Result committed.
    Finished,
    /// The evaluator failed; the error is stored.
    Failed,
}

impl TrialStatus {
    /// Lower-case label stored in the database.
    pub fn label(self) -> &'static str {
        match self {
            TrialStatus::Queued => "queued",
            TrialStatus::Running => "running",
            TrialStatus::Finished => "finished",
            TrialStatus::Failed => "failed",
        }
    }
    pub(crate) fn parse(s: &str) -> Option<TrialStatus> {
        Some(match s {
            "queued" => TrialStatus::Queued,
            "running" => TrialStatus::Running,
            "finished" => TrialStatus::Finished,
            "failed" => TrialStatus::Failed,
            _ => return None,
        })
    }
}

/// One trial as stored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrialRecord {
    /// Proposal number, from 0, unique in the study.
    pub number: u64,
    /// The configuration.
    pub config: Config,
    /// Its canonical key.
    pub config_key: String,
    /// Fraction of full training asked for.
    pub fidelity: f64,
    /// Strategy bookkeeping (bracket, parents).
    pub tag: Option<String>,
    /// Status.
    pub status: TrialStatus,
    /// Worker that ran (or runs) it: `host/boot/pid/start/thread`.
    pub worker: Option<String>,
    /// Seed handed to the evaluator.
    pub seed: u64,
    /// Metrics, once finished.
    pub metrics: Option<Metrics>,
    /// Energy per kernel type, once finished.
    pub kernel_energy: Vec<KernelEnergyFigure>,
    /// Provenance of the trial's energy figures.
    pub provenance: Option<Provenance>,
    /// Energy the trial spent, joules.
    pub energy_spent_j: Option<f64>,
    /// Error message of a failed trial.
    pub error: Option<String>,
    /// Evaluator notes.
    pub notes: Vec<String>,
    /// When proposed (CLOCK_MONOTONIC ns).
    pub created_ns: u64,
    /// When last claimed.
    pub started_ns: Option<u64>,
    /// When its result was committed.
    pub finished_ns: Option<u64>,
    /// Order in which results were committed (0, 1, ...), across processes.
    pub finish_seq: Option<u64>,
    /// Time spent in the evaluator.
    pub eval_ns: Option<u64>,
    /// Time the engine spent on this trial outside the evaluator
    /// (claiming, proposing, committing).
    pub overhead_ns: Option<u64>,
    /// How many times it was claimed (more than 1 after a crash).
    pub attempts: u32,
}

/// What a study is: stored once, checked on every open.
#[derive(Debug, Clone)]
pub struct StudySpec {
    /// The search space.
    pub space: SearchSpace,
    /// Objectives and constraints.
    pub objectives: ObjectiveSet,
    /// Strategy specification (see `strategy_from_spec`).
    pub strategy: String,
    /// Study seed: with it and one worker, a study is reproducible.
    pub seed: u64,
    /// What the metrics its trials report are (stored with the study; a
    /// resumed study keeps the union of what was declared).
    pub metrics: MetricRegistry,
}

#[derive(Serialize, Deserialize)]
struct StoredSpec {
    space: SpaceDefinition,
    objectives: ObjectiveSet,
    strategy: String,
    seed: u64,
}

/// Identity of a worker thread, precise enough to tell whether its process
/// is still alive.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkerIdentity {
    /// Host name.
    pub host: String,
    /// Kernel boot id (pids and monotonic clocks restart with each boot).
    pub boot_id: String,
    /// Process id.
    pub pid: u32,
    /// Process start time in clock ticks since boot (tells pid reuse apart).
    pub start_ticks: u64,
    /// Worker index within the process.
    pub thread: usize,
}

impl WorkerIdentity {
    /// Identity of worker `thread` of the current process.
    pub fn current(thread: usize) -> WorkerIdentity {
        let pid = std::process::id();
        WorkerIdentity {
            host: read_trimmed("/proc/sys/kernel/hostname").unwrap_or_else(|| "unknown".into()),
            boot_id: read_trimmed("/proc/sys/kernel/random/boot_id")
                .unwrap_or_else(|| "unknown".into()),
            pid,
            start_ticks: process_start_ticks(pid).unwrap_or(0),
            thread,
        }
    }

    /// Text form stored in the database.
    pub fn label(&self) -> String {
        format!(
            "{}/{}/{}/{}/{}",
            self.host, self.boot_id, self.pid, self.start_ticks, self.thread
        )
    }

    fn process_label(&self) -> String {
        format!(
            "{}/{}/{}/{}/",
            self.host, self.boot_id, self.pid, self.start_ticks
        )
    }
}

fn read_trimmed(path: &str) -> Option<String> {
    std::fs::read_to_string(path)
        .ok()
        .map(|s| s.trim().to_string())
}

/// Start time (field 22 of /proc/PID/stat) and whether the process is a
/// zombie; `None` if there is no such process.
fn process_state(pid: u32) -> Option<(u64, bool)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may hold spaces and parentheses: fields follow the last ')'.
    let rest = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let zombie = fields.first().is_some_and(|s| *s == "Z" || *s == "X");
    // After ')': state is field 3, starttime is field 22 -> index 19.
    let start = fields.get(19)?.parse().ok()?;
    Some((start, zombie))
}

fn process_start_ticks(pid: u32) -> Option<u64> {
    process_state(pid).map(|(s, _)| s)
}

/// Whether the worker that wrote `label` is certainly gone. Workers on other
/// hosts cannot be checked here (their heartbeat decides).
fn worker_is_dead(label: &str, me: &WorkerIdentity) -> bool {
    let parts: Vec<&str> = label.split('/').collect();
    if parts.len() < 4 || parts[0] != me.host {
        return false;
    }
    if parts[1] != me.boot_id {
        return true; // the machine rebooted since
    }
    let (Ok(pid), Ok(start)) = (parts[2].parse::<u32>(), parts[3].parse::<u64>()) else {
        return false;
    };
    match process_state(pid) {
        None => true,
        Some((_, true)) => true,
        Some((s, false)) => start != 0 && s != start,
    }
}

/// Counts of trials by status.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct StatusCounts {
    /// Queued.
    pub queued: usize,
    /// Running.
    pub running: usize,
    /// Finished.
    pub finished: usize,
    /// Failed.
    pub failed: usize,
}

/// The outcome of asking the study for work.
#[derive(Debug, Clone, PartialEq)]
pub enum Claim {
    /// Evaluate this trial (already marked `running` for this worker).
    Trial(ClaimedTrial),
    /// Nothing to do now; running trials may free budget or inform the
    /// strategy. Ask again shortly.
    Wait,
    /// The budget of finished trials is reached.
    BudgetReached,
    /// The strategy has nothing new to propose and nothing is running.
    Exhausted,
}

/// A trial handed to a worker.
#[derive(Debug, Clone, PartialEq)]
pub struct ClaimedTrial {
    /// Row id.
    pub id: i64,
    /// Proposal number.
    pub number: u64,
    /// Configuration.
    pub config: Config,
    /// Fidelity.
    pub fidelity: f64,
    /// Seed for the evaluator.
    pub seed: u64,
    /// Whether this is a re-run after a worker died.
    pub rerun: bool,
}

impl StatusCounts {
    /// Adds `n` trials of the stored status `label` (unknown labels are
    /// ignored: the schema's CHECK keeps them out).
    pub(crate) fn add(&mut self, label: &str, n: usize) {
        match label {
            "queued" => self.queued = n,
            "running" => self.running = n,
            "finished" => self.finished = n,
            "failed" => self.failed = n,
            _ => {}
        }
    }
}

/// A study's metadata (`study_meta`, key to text) inside one transaction
/// of a backend, and the number of trials.
pub(crate) trait MetaTx {
    /// The value under `key`.
    fn get(&mut self, key: &str) -> Result<Option<String>, StudyError>;
    /// Sets `key` (insert or replace).
    fn put(&mut self, key: &str, value: &str) -> Result<(), StudyError>;
    /// Trials stored.
    fn trial_count(&mut self) -> Result<u64, StudyError>;
}

/// One storage of studies. Both backends give the guarantees in the
/// module documentation; `Study` holds one and adds what does not depend
/// on storage (the spec, the strategy call, the trial cache).
pub(crate) trait Store: Send {
    /// Where the study is.
    fn location(&self) -> &StudyLocation;
    /// Another handle on the same study, for another thread (SQLite: a new
    /// connection; PostgreSQL: the same pool).
    fn reopen(&self) -> Result<Box<dyn Store>, StudyError>;
    /// Counts of trials by status.
    fn counts(&self) -> Result<StatusCounts, StudyError>;
    /// Brings `cache` up to date (rows changed since its version).
    fn refresh(&mut self, cache: &mut TrialCache) -> Result<(), StudyError>;
    /// Re-queues running trials whose worker is gone.
    fn requeue_stale(
        &mut self,
        me: &WorkerIdentity,
        stale_after: Duration,
    ) -> Result<usize, StudyError>;
    /// Claims work (see [`Study::claim`]): `propose(history, number)` is
    /// called, with the history up to date and while no one else can
    /// propose, when a new trial may be proposed.
    fn claim(
        &mut self,
        worker: &WorkerIdentity,
        budget: usize,
        stale_after: Duration,
        study_seed: u64,
        cache: &mut TrialCache,
        propose: &mut dyn FnMut(&[TrialRecord], u64) -> Ask,
    ) -> Result<Claim, StudyError>;
    /// See [`Study::finish`].
    fn finish(
        &mut self,
        trial_id: i64,
        outcome: &Result<TrialResult, String>,
        eval_ns: u64,
        overhead_ns: u64,
    ) -> Result<bool, StudyError>;
    /// See [`Study::add_measurement`].
    fn add_measurement(
        &mut self,
        number: u64,
        metrics: &Metrics,
        energy_spent_j: Option<f64>,
        note: &str,
    ) -> Result<bool, StudyError>;
    /// See [`Study::record_overhead`].
    fn record_overhead(&self, trial_id: i64, overhead_ns: u64) -> Result<(), StudyError>;
    /// See [`Study::heartbeat`].
    fn heartbeat(&self, me: &WorkerIdentity) -> Result<usize, StudyError>;
    /// Every metadata entry (for copies).
    fn meta_entries(&self) -> Result<Vec<(String, String)>, StudyError>;
    /// Writes `meta` and `trials` (with their row ids) into this study,
    /// which must hold no study yet, in one transaction; the version
    /// counter restarts at 0.
    fn import(
        &mut self,
        meta: &[(String, String)],
        trials: &[(i64, TrialRecord)],
    ) -> Result<(), StudyError>;
}

/// An open study: a handle on its storage (open one per thread with
/// [`Study::reopen`]), its settings, and the trials read so far.
pub struct Study {
    store: Box<dyn Store>,
    spec: StudySpec,
    /// Trials read so far, in row-id (= proposal) order, with their row ids
    /// alongside, and the change counter they reflect: each claim only reads
    /// rows changed since, and strategies borrow this history in place
    /// rather than a copy of it.
    cache: TrialCache,
}

/// Trials by row id, kept as a slice (strategies take `&[TrialRecord]`),
/// and the study's version counter they reflect (-1: nothing read yet).
pub(crate) struct TrialCache {
    /// Row ids, ascending; `ids[i]` is the row of `trials[i]`.
    ids: Vec<i64>,
    trials: Vec<TrialRecord>,
    version: i64,
}

impl Default for TrialCache {
    fn default() -> Self {
        TrialCache {
            ids: Vec::new(),
            trials: Vec::new(),
            version: -1,
        }
    }
}

impl TrialCache {
    /// Inserts or replaces the trial of row `id`. Rows arrive almost always
    /// in ascending order (new proposals), so this is an append.
    fn upsert(&mut self, id: i64, trial: TrialRecord) {
        match self.ids.binary_search(&id) {
            Ok(i) => self.trials[i] = trial,
            Err(i) => {
                self.ids.insert(i, id);
                self.trials.insert(i, trial);
            }
        }
    }
}

/// Mixes the study seed with a trial number (splitmix64).
pub fn derive_seed(study_seed: u64, number: u64) -> u64 {
    let mut z = study_seed ^ number.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Opens the storage at `location` and runs `f` over its metadata in one
/// transaction (see the backends' `open`).
fn open_store(
    location: &StudyLocation,
    create: bool,
    f: &mut dyn FnMut(&mut dyn MetaTx) -> Result<(), StudyError>,
) -> Result<Box<dyn Store>, StudyError> {
    Ok(match location {
        StudyLocation::Sqlite(file) => Box::new(sqlite::SqliteStore::open(file, create, f)?),
        StudyLocation::Postgres(pg) => Box::new(postgres::PgStore::open(pg, create, f)?),
    })
}

impl Study {
    /// Opens (creating if needed) a study. With `resume == false`, a study
    /// that already holds trials is refused; with `resume == true` it is
    /// continued (and created if missing). Either way, an existing study
    /// must have been created with the same space, objectives, strategy and
    /// seed. `location` is a SQLite path or a [`StudyLocation`].
    pub fn open(
        location: impl Into<StudyLocation>,
        spec: StudySpec,
        resume: bool,
    ) -> Result<Study, StudyError> {
        let location = location.into();
        let mut spec = spec;
        let store = open_store(&location, true, &mut |meta| {
            open_meta(meta, &location, &mut spec, resume)
        })?;
        Ok(Study {
            store,
            spec,
            cache: TrialCache::default(),
        })
    }

    /// Opens an existing study with the settings stored in it (for reports).
    pub fn open_existing(location: impl Into<StudyLocation>) -> Result<Study, StudyError> {
        let location = location.into();
        let mut spec = None;
        let store = open_store(&location, false, &mut |meta| {
            spec = Some(read_spec(meta, &location)?);
            Ok(())
        })?;
        let spec = spec.ok_or_else(|| StudyError::NotAStudy {
            study: location.clone(),
            message: "no study metadata".into(),
        })?;
        Ok(Study {
            store,
            spec,
            cache: TrialCache::default(),
        })
    }

    /// Another connection to the same study (for another thread).
    pub fn reopen(&self) -> Result<Study, StudyError> {
        Ok(Study {
            store: self.store.reopen()?,
            spec: self.spec.clone(),
            cache: TrialCache::default(),
        })
    }

    /// The study's settings.
    pub fn spec(&self) -> &StudySpec {
        &self.spec
    }

    /// Where the study is stored.
    pub fn location(&self) -> &StudyLocation {
        self.store.location()
    }

    /// Counts of trials by status.
    pub fn counts(&self) -> Result<StatusCounts, StudyError> {
        self.store.counts()
    }

    /// Every trial, in proposal order.
    pub fn trials(&mut self) -> Result<Vec<TrialRecord>, StudyError> {
        Ok(self.trials_view()?.to_vec())
    }

    /// Every trial, in proposal order, borrowed from this connection's
    /// cache after bringing it up to date (reads only rows changed since the
    /// last call): the cheap form of [`Study::trials`] for callers that look
    /// at the history after every trial.
    pub fn trials_view(&mut self) -> Result<&[TrialRecord], StudyError> {
        self.store.refresh(&mut self.cache)?;
        Ok(&self.cache.trials)
    }

    /// Re-queues `running` trials whose worker is gone (SQLite: a dead
    /// process on this host, or) whose heartbeat is older than
    /// `stale_after`. Returns how many.
    pub fn requeue_stale(
        &mut self,
        me: &WorkerIdentity,
        stale_after: Duration,
    ) -> Result<usize, StudyError> {
        self.store.requeue_stale(me, stale_after)
    }

    /// Claims work for `worker`: a queued trial if any, otherwise a new one
    /// from `strategy`, within `budget` finished trials. Atomic across
    /// processes (and machines, with PostgreSQL). Trials whose worker is
    /// gone (see [`Study::requeue_stale`]) are re-queued first.
    pub fn claim(
        &mut self,
        worker: &WorkerIdentity,
        budget: usize,
        strategy: &mut dyn Strategy,
        stale_after: Duration,
    ) -> Result<Claim, StudyError> {
        let spec = &self.spec;
        let mut propose = |trials: &[TrialRecord], number: u64| {
            let history = History {
                trials,
                space: &spec.space,
                objectives: &spec.objectives,
            };
            let mut rng = StdRng::seed_from_u64(derive_seed(spec.seed, number ^ 0x5eed));
            strategy.ask(&history, &mut rng)
        };
        self.store.claim(
            worker,
            budget,
            stale_after,
            spec.seed,
            &mut self.cache,
            &mut propose,
        )
    }

    /// Commits the outcome of a trial. Returns `false` (and stores nothing)
    /// if the trial was already finished by another worker (possible only
    /// after a worker was wrongly presumed dead).
    pub fn finish(
        &mut self,
        trial_id: i64,
        outcome: &Result<TrialResult, String>,
        eval_ns: u64,
        overhead_ns: u64,
    ) -> Result<bool, StudyError> {
        self.store.finish(trial_id, outcome, eval_ns, overhead_ns)
    }

    /// Adds figures to a finished trial after the fact: `metrics` are merged
    /// into its metrics (replacing same-named ones), `energy_spent_j` is
    /// added to what the trial spent, `note` is appended to its notes. Used
    /// to store a later measurement of a trial next to what the search
    /// evaluated (a calibrated search re-measuring its predicted front).
    /// Returns `false` when no finished trial has that number.
    pub fn add_measurement(
        &mut self,
        number: u64,
        metrics: &Metrics,
        energy_spent_j: Option<f64>,
        note: &str,
    ) -> Result<bool, StudyError> {
        self.store
            .add_measurement(number, metrics, energy_spent_j, note)
    }

    /// Stores the engine time spent on a trial outside the evaluator (known
    /// only after its result is committed).
    pub fn record_overhead(&self, trial_id: i64, overhead_ns: u64) -> Result<(), StudyError> {
        self.store.record_overhead(trial_id, overhead_ns)
    }

    /// Refreshes the heartbeat of every trial this process is running.
    pub fn heartbeat(&self, me: &WorkerIdentity) -> Result<usize, StudyError> {
        self.store.heartbeat(me)
    }
}

/// What [`copy_study`] copied.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CopySummary {
    /// Trials copied.
    pub trials: usize,
    /// Metadata entries copied (spec, metric registry, schema version).
    pub meta_entries: usize,
}

/// Copies the study at `from` into `to` (SQLite or PostgreSQL, either
/// way), which must not hold a study yet: the spec, the metric registry,
/// the schema version and every trial with its number, row id, status,
/// worker, seed, metrics, measurements, notes, timings and attempts. What
/// only matters while workers run (heartbeats, the change counter) starts
/// afresh. Copy a study no worker is writing to.
pub fn copy_study(from: &StudyLocation, to: &StudyLocation) -> Result<CopySummary, StudyError> {
    let mut source = Study::open_existing(from)?;
    source.store.refresh(&mut source.cache)?;
    let meta: Vec<(String, String)> = source
        .store
        .meta_entries()?
        .into_iter()
        .filter(|(k, _)| k != "version")
        .collect();
    let trials: Vec<(i64, TrialRecord)> = source
        .cache
        .ids
        .iter()
        .copied()
        .zip(source.cache.trials.iter().cloned())
        .collect();
    let mut dest = open_store(to, true, &mut |m| check_empty(m, to))?;
    dest.import(&meta, &trials)?;
    Ok(CopySummary {
        trials: trials.len(),
        meta_entries: meta.len(),
    })
}

/// Refuses a destination that already holds a study.
pub(crate) fn check_empty(meta: &mut dyn MetaTx, at: &StudyLocation) -> Result<(), StudyError> {
    if meta.get("spec")?.is_some() || meta.trial_count()? > 0 {
        return Err(StudyError::NotEmpty { study: at.clone() });
    }
    Ok(())
}

/// The open-for-writing logic both backends share: create the study's
/// metadata, or check the stored settings against `spec`, refuse a study
/// with trials without `resume`, and merge the metric registries (moving a
/// schema-1 study to schema 2).
fn open_meta(
    meta: &mut dyn MetaTx,
    at: &StudyLocation,
    spec: &mut StudySpec,
    resume: bool,
) -> Result<(), StudyError> {
    let stored = StoredSpec {
        space: spec.space.definition(),
        objectives: spec.objectives.clone(),
        strategy: spec.strategy.clone(),
        seed: spec.seed,
    };
    match meta.get("spec")? {
        None => {
            let json = serde_json::to_string(&stored).map_err(|e| StudyError::Corrupt {
                study: at.clone(),
                what: "spec".into(),
                message: e.to_string(),
            })?;
            meta.put("spec", &json)?;
            meta.put("schema_version", &SCHEMA_VERSION.to_string())?;
            meta.put("version", "0")?;
            write_metrics(meta, at, &spec.metrics)?;
        }
        Some(json) => {
            check_schema(meta, at)?;
            let old: StoredSpec = serde_json::from_str(&json).map_err(|e| StudyError::Corrupt {
                study: at.clone(),
                what: "spec".into(),
                message: e.to_string(),
            })?;
            check_same(at, &old, &stored)?;
            let trials = meta.trial_count()?;
            if trials > 0 && !resume {
                return Err(StudyError::Exists {
                    study: at.clone(),
                    trials: trials as usize,
                });
            }
            // A study of schema 1 has no registry: it takes the one
            // given. Otherwise the union of both, unless they disagree.
            if let Some(stored) = read_metrics(meta, at)? {
                spec.metrics =
                    stored
                        .merged(&spec.metrics)
                        .map_err(|source| StudyError::Metrics {
                            study: at.clone(),
                            source,
                        })?;
            }
            write_metrics(meta, at, &spec.metrics)?;
        }
    }
    Ok(())
}

/// The settings stored in a study (read-only open).
fn read_spec(meta: &mut dyn MetaTx, at: &StudyLocation) -> Result<StudySpec, StudyError> {
    let json = meta.get("spec")?.ok_or_else(|| StudyError::NotAStudy {
        study: at.clone(),
        message: "no study metadata".into(),
    })?;
    let stored: StoredSpec = serde_json::from_str(&json).map_err(|e| StudyError::Corrupt {
        study: at.clone(),
        what: "spec".into(),
        message: e.to_string(),
    })?;
    let space = SearchSpace::from_definition(stored.space).map_err(|e| StudyError::Corrupt {
        study: at.clone(),
        what: "space".into(),
        message: e.to_string(),
    })?;
    check_schema(meta, at)?;
    // Schema 1 (before registries): nothing declared.
    let metrics = read_metrics(meta, at)?.unwrap_or_default();
    Ok(StudySpec {
        space,
        objectives: stored.objectives,
        strategy: stored.strategy,
        seed: stored.seed,
        metrics,
    })
}

/// The schema version a study records (1 when it records none: studies
/// always stored it, a missing one is read as the first layout).
pub(crate) fn stored_schema(meta: &mut dyn MetaTx, at: &StudyLocation) -> Result<i64, StudyError> {
    match meta.get("schema_version")? {
        None => Ok(1),
        Some(t) => t.trim().parse::<i64>().map_err(|e| StudyError::Corrupt {
            study: at.clone(),
            what: "schema_version".into(),
            message: format!("{t:?}: {e}"),
        }),
    }
}

/// Refuses a study written by a newer layout than this build knows.
fn check_schema(meta: &mut dyn MetaTx, at: &StudyLocation) -> Result<(), StudyError> {
    let found = stored_schema(meta, at)?;
    if found > SCHEMA_VERSION {
        return Err(StudyError::NewerSchema {
            study: at.clone(),
            found,
            supported: SCHEMA_VERSION,
        });
    }
    Ok(())
}

/// The stored metric registry; `None` for a study of schema 1.
fn read_metrics(
    meta: &mut dyn MetaTx,
    at: &StudyLocation,
) -> Result<Option<MetricRegistry>, StudyError> {
    meta.get("metrics")?
        .map(|t| {
            serde_json::from_str(&t).map_err(|e| StudyError::Corrupt {
                study: at.clone(),
                what: "metric registry".into(),
                message: e.to_string(),
            })
        })
        .transpose()
}

/// Stores `metrics` as the study's registry, at the current schema.
fn write_metrics(
    meta: &mut dyn MetaTx,
    at: &StudyLocation,
    metrics: &MetricRegistry,
) -> Result<(), StudyError> {
    let json = serde_json::to_string(metrics).map_err(|e| StudyError::Corrupt {
        study: at.clone(),
        what: "metric registry".into(),
        message: e.to_string(),
    })?;
    meta.put("metrics", &json)?;
    meta.put("schema_version", &SCHEMA_VERSION.to_string())
}

/// The claim of a re-queued trial, its stored configuration decoded.
pub(crate) fn rerun_claim(
    at: &StudyLocation,
    id: i64,
    number: u64,
    config_json: &str,
    fidelity: f64,
    seed: i64,
) -> Result<Claim, StudyError> {
    let config = Config::from_json(config_json).map_err(|e| StudyError::Corrupt {
        study: at.clone(),
        what: format!("configuration of trial {number}"),
        message: e.to_string(),
    })?;
    Ok(Claim::Trial(ClaimedTrial {
        id,
        number,
        config,
        fidelity,
        seed: seed as u64,
        rerun: true,
    }))
}

/// A later measurement merged into a trial's stored metrics and notes:
/// the new metrics and notes as JSON text.
pub(crate) fn merge_measurement(
    at: &StudyLocation,
    number: u64,
    metrics_json: Option<&str>,
    notes_json: Option<&str>,
    metrics: &Metrics,
    note: &str,
) -> Result<(String, String), StudyError> {
    let corrupt = |what: &str, e: serde_json::Error| StudyError::Corrupt {
        study: at.clone(),
        what: format!("{what} of trial {number}"),
        message: e.to_string(),
    };
    let mut merged: Metrics = match metrics_json {
        Some(text) => serde_json::from_str(text).map_err(|e| corrupt("metrics", e))?,
        None => Metrics::new(),
    };
    merged.extend(metrics.iter().map(|(k, v)| (k.clone(), *v)));
    let mut notes: Vec<String> = match notes_json {
        Some(text) => serde_json::from_str(text).map_err(|e| corrupt("notes", e))?,
        None => Vec::new(),
    };
    notes.push(note.to_owned());
    Ok((
        serde_json::to_string(&merged).unwrap_or_default(),
        serde_json::to_string(&notes).unwrap_or_default(),
    ))
}

fn check_same(at: &StudyLocation, old: &StoredSpec, new: &StoredSpec) -> Result<(), StudyError> {
    let mismatch = |what: &str, a: String, b: String| StudyError::Mismatch {
        study: at.clone(),
        what: what.into(),
        stored: a,
        given: b,
    };
    if old.strategy != new.strategy {
        return Err(mismatch(
            "strategy",
            old.strategy.clone(),
            new.strategy.clone(),
        ));
    }
    if old.seed != new.seed {
        return Err(mismatch("seed", old.seed.to_string(), new.seed.to_string()));
    }
    if old.objectives != new.objectives {
        let show = |o: &ObjectiveSet| {
            o.objectives
                .iter()
                .map(|x| x.to_string())
                .collect::<Vec<_>>()
                .join(",")
        };
        return Err(mismatch(
            "objectives or constraints",
            show(&old.objectives),
            show(&new.objectives),
        ));
    }
    let a = serde_json::to_string(&old.space).unwrap_or_default();
    let b = serde_json::to_string(&new.space).unwrap_or_default();
    if a != b {
        return Err(mismatch(
            "search space",
            format!("{} parameters", old.space.params.len()),
            format!("{} parameters", new.space.params.len()),
        ));
    }
    Ok(())
}

/// A trial row as both backends store it (same columns, same types).
pub(crate) struct RawTrial {
    pub(crate) id: i64,
    pub(crate) number: i64,
    pub(crate) config_json: String,
    pub(crate) config_key: String,
    pub(crate) fidelity: f64,
    pub(crate) tag: String,
    pub(crate) status: String,
    pub(crate) worker: Option<String>,
    pub(crate) seed: i64,
    pub(crate) metrics_json: Option<String>,
    pub(crate) kernel_json: Option<String>,
    pub(crate) provenance: Option<String>,
    pub(crate) energy_spent_j: Option<f64>,
    pub(crate) error: Option<String>,
    pub(crate) notes_json: Option<String>,
    pub(crate) created_ns: i64,
    pub(crate) started_ns: Option<i64>,
    pub(crate) finished_ns: Option<i64>,
    pub(crate) finish_seq: Option<i64>,
    pub(crate) eval_ns: Option<i64>,
    pub(crate) overhead_ns: Option<i64>,
    pub(crate) attempts: i64,
}

impl RawTrial {
    /// The row of `trial` (row id `id`), as stored.
    pub(crate) fn encode(id: i64, t: &TrialRecord) -> RawTrial {
        let i = |x: Option<u64>| x.map(|v| v as i64);
        RawTrial {
            id,
            number: t.number as i64,
            config_json: t.config.key(),
            config_key: t.config_key.clone(),
            fidelity: t.fidelity,
            tag: t.tag.clone().unwrap_or_default(),
            status: t.status.label().to_owned(),
            worker: t.worker.clone(),
            seed: t.seed as i64,
            metrics_json: t.metrics.as_ref().map(to_json),
            kernel_json: (!t.kernel_energy.is_empty()).then(|| to_json(&t.kernel_energy)),
            provenance: t.provenance.map(|p| p.label().to_owned()),
            energy_spent_j: t.energy_spent_j,
            error: t.error.clone(),
            notes_json: (!t.notes.is_empty()).then(|| to_json(&t.notes)),
            created_ns: t.created_ns as i64,
            started_ns: i(t.started_ns),
            finished_ns: i(t.finished_ns),
            finish_seq: i(t.finish_seq),
            eval_ns: i(t.eval_ns),
            overhead_ns: i(t.overhead_ns),
            attempts: t.attempts as i64,
        }
    }

    pub(crate) fn decode(self, at: &StudyLocation) -> Result<(i64, TrialRecord), StudyError> {
        let corrupt = |what: &str, message: String| StudyError::Corrupt {
            study: at.clone(),
            what: format!("{what} of trial {}", self.number),
            message,
        };
        let config = Config::from_json(&self.config_json)
            .map_err(|e| corrupt("configuration", e.to_string()))?;
        let status = TrialStatus::parse(&self.status)
            .ok_or_else(|| corrupt("status", self.status.clone()))?;
        let metrics = match &self.metrics_json {
            Some(j) => {
                Some(serde_json::from_str(j).map_err(|e| corrupt("metrics", e.to_string()))?)
            }
            None => None,
        };
        let kernel_energy = match &self.kernel_json {
            Some(j) => {
                serde_json::from_str(j).map_err(|e| corrupt("kernel energy", e.to_string()))?
            }
            None => Vec::new(),
        };
        let notes = match &self.notes_json {
            Some(j) => serde_json::from_str(j).map_err(|e| corrupt("notes", e.to_string()))?,
            None => Vec::new(),
        };
        let provenance = match self.provenance.as_deref() {
            None => None,
            Some("measured") => Some(Provenance::Measured),
            Some("estimated") => Some(Provenance::Estimated),
            Some("simulated") => Some(Provenance::Simulated),
            Some(other) => return Err(corrupt("provenance", other.into())),
        };
        let u = |x: Option<i64>| x.map(|v| v as u64);
        Ok((
            self.id,
            TrialRecord {
                number: self.number as u64,
                config,
                config_key: self.config_key,
                fidelity: self.fidelity,
                tag: (!self.tag.is_empty()).then_some(self.tag),
                status,
                worker: self.worker,
                seed: self.seed as u64,
                metrics,
                kernel_energy,
                provenance,
                energy_spent_j: self.energy_spent_j,
                error: self.error,
                notes,
                created_ns: self.created_ns as u64,
                started_ns: u(self.started_ns),
                finished_ns: u(self.finished_ns),
                finish_seq: u(self.finish_seq),
                eval_ns: u(self.eval_ns),
                overhead_ns: u(self.overhead_ns),
                attempts: self.attempts as u32,
            },
        ))
    }
}

fn to_json<T: Serialize + ?Sized>(v: &T) -> String {
    serde_json::to_string(v).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::objective::Objective;
    use crate::strategy::strategy_from_spec;

    fn spec() -> StudySpec {
        StudySpec {
            space: SearchSpace::default_tabular(),
            objectives: ObjectiveSet::new(vec![Objective::parse("acc:max").unwrap()]).unwrap(),
            strategy: "random".into(),
            seed: 1,
            metrics: MetricRegistry::new([crate::metric::MetricInfo::measured(
                "acc",
                "fraction",
                crate::objective::Direction::Maximize,
            )])
            .unwrap(),
        }
    }

    #[test]
    fn claim_finish_and_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("s.db");
        let mut study = Study::open(&db, spec(), false).unwrap();
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
            metrics: [("acc".to_string(), 0.9)].into_iter().collect(),
            provenance: Some(Provenance::Estimated),
            ..Default::default()
        };
        assert!(study.finish(t.id, &Ok(result), 10, 5).unwrap());
        // A second finish of the same trial is refused.
        assert!(!study.finish(t.id, &Err("late".into()), 10, 5).unwrap());
        let trials = study.trials().unwrap();
        assert_eq!(trials.len(), 1);
        assert_eq!(trials[0].status, TrialStatus::Finished);
        assert_eq!(trials[0].finish_seq, Some(0));
        assert_eq!(trials[0].provenance, Some(Provenance::Estimated));
        drop(study);
        // Without resume, an existing study with trials is refused.
        assert!(matches!(
            Study::open(&db, spec(), false),
            Err(StudyError::Exists { .. })
        ));
        // With other settings, it is refused with the setting named.
        let mut other = spec();
        other.seed = 2;
        let e = Study::open(&db, other, true).err().unwrap().to_string();
        assert!(e.contains("seed"), "{e}");
        let mut study = Study::open(&db, spec(), true).unwrap();
        assert_eq!(study.counts().unwrap().finished, 1);
        let reopened = Study::open_existing(&db).unwrap();
        assert_eq!(reopened.spec().strategy, "random");
        assert!(matches!(
            study
                .claim(&me, 1, strat.as_mut(), Duration::from_secs(60))
                .unwrap(),
            Claim::BudgetReached
        ));
    }

    #[test]
    fn a_later_measurement_is_merged_into_a_finished_trial() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("s.db");
        let mut study = Study::open(&db, spec(), false).unwrap();
        let me = WorkerIdentity::current(0);
        let mut strat = strategy_from_spec("random").unwrap();
        let Claim::Trial(t) = study
            .claim(&me, 2, strat.as_mut(), Duration::from_secs(60))
            .unwrap()
        else {
            panic!("expected a trial");
        };
        let result = TrialResult {
            metrics: [("acc".to_string(), 0.9), ("e".to_string(), 1.0)]
                .into_iter()
                .collect(),
            energy_spent_j: Some(10.0),
            notes: vec!["first".into()],
            ..Default::default()
        };
        assert!(study.finish(t.id, &Ok(result), 10, 5).unwrap());
        let before = study.trials().unwrap();
        let extra: Metrics = [("e".to_string(), 2.0), ("measured".to_string(), 3.0)]
            .into_iter()
            .collect();
        assert!(study
            .add_measurement(0, &extra, Some(4.5), "re-measured")
            .unwrap());
        // A cached connection sees the change (the version moved).
        let after = study.trials().unwrap();
        assert_ne!(before, after);
        let m = after[0].metrics.as_ref().unwrap();
        assert_eq!((m["acc"], m["e"], m["measured"]), (0.9, 2.0, 3.0));
        assert_eq!(after[0].energy_spent_j, Some(14.5));
        assert_eq!(after[0].notes, ["first", "re-measured"]);
        // No energy given: what was spent stays.
        assert!(study
            .add_measurement(0, &Metrics::new(), None, "n")
            .unwrap());
        assert_eq!(study.trials().unwrap()[0].energy_spent_j, Some(14.5));
        // No such finished trial.
        assert!(!study.add_measurement(7, &extra, None, "x").unwrap());
    }

    #[test]
    fn dead_worker_trial_is_requeued_and_rerun_with_same_seed() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("s.db");
        let mut study = Study::open(&db, spec(), false).unwrap();
        let mut strat = strategy_from_spec("random").unwrap();
        // A worker of a process that does not exist (pid 0 is never a process).
        let mut ghost = WorkerIdentity::current(0);
        ghost.pid = u32::MAX - 1;
        let Claim::Trial(t) = study
            .claim(&ghost, 5, strat.as_mut(), Duration::from_secs(600))
            .unwrap()
        else {
            panic!("expected a trial");
        };
        let me = WorkerIdentity::current(0);
        let Claim::Trial(again) = study
            .claim(&me, 5, strat.as_mut(), Duration::from_secs(600))
            .unwrap()
        else {
            panic!("expected the re-queued trial");
        };
        assert!(again.rerun);
        assert_eq!(
            (again.number, again.seed, again.config.clone()),
            (t.number, t.seed, t.config)
        );
        let trials = study.trials().unwrap();
        assert_eq!(trials.len(), 1);
        assert_eq!(trials[0].attempts, 2);
        // Our own live process is never presumed dead.
        assert!(!worker_is_dead(&me.label(), &me));
    }
}
