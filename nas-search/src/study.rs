//! Durable studies in SQLite: metadata, and every trial from proposal to
//! result.
//!
//! Durability: the database runs in WAL mode with `synchronous=NORMAL`;
//! every state change is its own committed transaction, so a process killed
//! with SIGKILL at any moment loses nothing that was committed (SIGKILL does
//! not lose data already handed to the OS; only a power cut could lose the
//! last WAL frames, which `synchronous=FULL` would prevent at a cost of an
//! fsync per trial).
//!
//! Concurrency: proposing a trial (reading the history, asking the strategy,
//! inserting the row as `running`) happens inside one `BEGIN IMMEDIATE`
//! transaction, which SQLite serialises across threads and processes; a
//! unique index on (configuration key, fidelity, bracket tag) backs this up.
//! So several processes on one study never evaluate a trial twice, and never
//! run past the budget.
//!
//! Recovery: a `running` trial whose worker process is gone (same boot and
//! host, pid dead or reused) or whose heartbeat is older than the stale
//! limit goes back to `queued` and is claimed again before anything new is
//! proposed. Its number, configuration and seed stay the same.
//!
//! Metrics: the study stores the evaluator's metric registry
//! ([`crate::metric::MetricRegistry`]) under `study_meta.metrics`. Schema
//! 1 (before registries) had none: opening such a study to resume it
//! stores the registry given and moves it to schema 2; opening it to read
//! gives an empty registry, which reports show as "declares no metrics".
//!
//! Timestamps are CLOCK_MONOTONIC nanoseconds (see `shared::MonotonicNs`);
//! the boot they belong to is in each worker id.

use crate::evaluator::{KernelEnergyFigure, TrialResult};
use crate::metric::{MetricError, MetricRegistry};
use crate::objective::{Metrics, ObjectiveSet};
use crate::space::{Config, SearchSpace, SpaceDefinition};
use crate::strategy::{Ask, History, Strategy};
use rand::rngs::StdRng;
use rand::SeedableRng;
use rusqlite::{params, Connection, OptionalExtension, TransactionBehavior};
use serde::{Deserialize, Serialize};
use shared::{MonotonicNs, Provenance};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Version of the database layout written by this crate: 2 added the
/// metric registry (`study_meta.metrics`); studies of version 1 are read,
/// and upgraded when opened for writing.
pub const SCHEMA_VERSION: i64 = 2;

/// Errors about studies.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StudyError {
    /// SQLite failed.
    #[error("study {file}: {source}")]
    Sql {
        /// The database file.
        file: PathBuf,
        /// SQLite's error.
        source: rusqlite::Error,
    },
    /// The study exists and holds trials, but resuming was not asked for.
    #[error("study {file} already holds {trials} trials; pass --resume to continue it")]
    Exists {
        /// The database file.
        file: PathBuf,
        /// Trials it holds.
        trials: usize,
    },
    /// The study was created with different settings.
    #[error("study {file} was created with a different {what}: stored {stored}, given {given}")]
    Mismatch {
        /// The database file.
        file: PathBuf,
        /// Which setting differs.
        what: String,
        /// Value in the database.
        stored: String,
        /// Value given now.
        given: String,
    },
    /// Stored data could not be decoded.
    #[error("study {file}: corrupt {what}: {message}")]
    Corrupt {
        /// The database file.
        file: PathBuf,
        /// What could not be decoded.
        what: String,
        /// Why.
        message: String,
    },
    /// The study was written by a newer version of this crate.
    #[error(
        "study {file} has schema version {found}; this build reads versions up to {supported}"
    )]
    NewerSchema {
        /// The database file.
        file: PathBuf,
        /// Its schema version.
        found: i64,
        /// The newest this build reads.
        supported: i64,
    },
    /// The metrics declared now contradict those the study stores.
    #[error("study {file}: the metrics declared now disagree with the study's: {source}")]
    Metrics {
        /// The database file.
        file: PathBuf,
        /// The disagreement.
        source: MetricError,
    },
    /// The file is not a study (or is missing when opening read-only).
    #[error("{file} is not a study database: {message}")]
    NotAStudy {
        /// The file.
        file: PathBuf,
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
    fn parse(s: &str) -> Option<TrialStatus> {
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

/// An open study (one SQLite connection; open one per thread).
pub struct Study {
    file: PathBuf,
    conn: Connection,
    spec: StudySpec,
    /// Trials read so far, in row-id (= proposal) order, with their row ids
    /// alongside, and the change counter they reflect: each claim only reads
    /// rows changed since, and strategies borrow this history in place
    /// rather than a copy of it.
    cache: TrialCache,
    cache_version: i64,
}

/// Trials by row id, kept as a slice (strategies take `&[TrialRecord]`).
#[derive(Default)]
struct TrialCache {
    /// Row ids, ascending; `ids[i]` is the row of `trials[i]`.
    ids: Vec<i64>,
    trials: Vec<TrialRecord>,
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

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS study_meta (
    key TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS trials (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    number INTEGER NOT NULL UNIQUE,
    config_json TEXT NOT NULL,
    config_key TEXT NOT NULL,
    fidelity REAL NOT NULL,
    tag TEXT NOT NULL DEFAULT '',
    status TEXT NOT NULL CHECK (status IN ('queued', 'running', 'finished', 'failed')),
    worker_id TEXT,
    heartbeat_ns INTEGER,
    seed INTEGER NOT NULL,
    metrics_json TEXT,
    kernel_energy_json TEXT,
    provenance TEXT,
    energy_spent_j REAL,
    error TEXT,
    notes_json TEXT,
    created_ns INTEGER NOT NULL,
    started_ns INTEGER,
    finished_ns INTEGER,
    finish_seq INTEGER UNIQUE,
    eval_ns INTEGER,
    overhead_ns INTEGER,
    attempts INTEGER NOT NULL DEFAULT 0,
    version INTEGER NOT NULL
);
CREATE UNIQUE INDEX IF NOT EXISTS trials_unique_config ON trials (config_key, fidelity, tag);
CREATE INDEX IF NOT EXISTS trials_status ON trials (status);
CREATE INDEX IF NOT EXISTS trials_version ON trials (version);
";

fn sql(file: &Path) -> impl Fn(rusqlite::Error) -> StudyError + '_ {
    move |source| StudyError::Sql {
        file: file.to_path_buf(),
        source,
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

fn open_connection(file: &Path) -> Result<Connection, StudyError> {
    let conn = Connection::open(file).map_err(sql(file))?;
    // Several processes share the file: wait for the write lock rather
    // than fail; a proposal holds it for well under a millisecond.
    conn.busy_timeout(Duration::from_secs(60))
        .map_err(sql(file))?;
    // Switching a fresh file to WAL takes an exclusive lock, and SQLite
    // answers SQLITE_BUSY at once, without the busy handler, where waiting
    // could deadlock: two processes opening a new study together both hold
    // a shared lock here. Retry, bounded like the busy timeout.
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        match conn.pragma_update(None, "journal_mode", "WAL") {
            Ok(()) => break,
            Err(rusqlite::Error::SqliteFailure(e, _))
                if e.code == rusqlite::ErrorCode::DatabaseBusy
                    && std::time::Instant::now() < deadline =>
            {
                std::thread::sleep(Duration::from_millis(5));
            }
            Err(e) => return Err(sql(file)(e)),
        }
    }
    conn.pragma_update(None, "synchronous", "NORMAL")
        .map_err(sql(file))?;
    Ok(conn)
}

impl Study {
    /// Opens (creating if needed) a study. With `resume == false`, a study
    /// that already holds trials is refused; with `resume == true` it is
    /// continued (and created if missing). Either way, an existing study
    /// must have been created with the same space, objectives, strategy and
    /// seed.
    pub fn open(file: &Path, spec: StudySpec, resume: bool) -> Result<Study, StudyError> {
        let mut spec = spec;
        let mut conn = open_connection(file)?;
        let stored = StoredSpec {
            space: spec.space.definition(),
            objectives: spec.objectives.clone(),
            strategy: spec.strategy.clone(),
            seed: spec.seed,
        };
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(sql(file))?;
        tx.execute_batch(SCHEMA).map_err(sql(file))?;
        let existing: Option<String> = tx
            .query_row("SELECT value FROM study_meta WHERE key = 'spec'", [], |r| {
                r.get(0)
            })
            .optional()
            .map_err(sql(file))?;
        match existing {
            None => {
                let json = serde_json::to_string(&stored).map_err(|e| StudyError::Corrupt {
                    file: file.into(),
                    what: "spec".into(),
                    message: e.to_string(),
                })?;
                tx.execute(
                    "INSERT INTO study_meta (key, value) VALUES ('spec', ?1), ('schema_version', ?2), ('version', '0')",
                    params![json, SCHEMA_VERSION.to_string()],
                )
                .map_err(sql(file))?;
                write_metrics(&tx, file, &spec.metrics)?;
            }
            Some(json) => {
                check_schema(&tx, file)?;
                let old: StoredSpec =
                    serde_json::from_str(&json).map_err(|e| StudyError::Corrupt {
                        file: file.into(),
                        what: "spec".into(),
                        message: e.to_string(),
                    })?;
                check_same(file, &old, &stored)?;
                let trials: i64 = tx
                    .query_row("SELECT COUNT(*) FROM trials", [], |r| r.get(0))
                    .map_err(sql(file))?;
                if trials > 0 && !resume {
                    return Err(StudyError::Exists {
                        file: file.into(),
                        trials: trials as usize,
                    });
                }
                // A study of schema 1 has no registry: it takes the one
                // given. Otherwise the union of both, unless they disagree.
                if let Some(stored) = read_metrics(&tx, file)? {
                    spec.metrics =
                        stored
                            .merged(&spec.metrics)
                            .map_err(|source| StudyError::Metrics {
                                file: file.into(),
                                source,
                            })?;
                }
                write_metrics(&tx, file, &spec.metrics)?;
            }
        }
        tx.commit().map_err(sql(file))?;
        Ok(Study {
            file: file.into(),
            conn,
            spec,
            cache: TrialCache::default(),
            cache_version: -1,
        })
    }

    /// Opens an existing study with the settings stored in it (for reports).
    pub fn open_existing(file: &Path) -> Result<Study, StudyError> {
        if !file.exists() {
            return Err(StudyError::NotAStudy {
                file: file.into(),
                message: "no such file".into(),
            });
        }
        let conn = open_connection(file)?;
        let json: Option<String> = conn
            .query_row("SELECT value FROM study_meta WHERE key = 'spec'", [], |r| {
                r.get(0)
            })
            .optional()
            .map_err(|e| StudyError::NotAStudy {
                file: file.into(),
                message: e.to_string(),
            })?;
        let json = json.ok_or_else(|| StudyError::NotAStudy {
            file: file.into(),
            message: "no study metadata".into(),
        })?;
        let stored: StoredSpec = serde_json::from_str(&json).map_err(|e| StudyError::Corrupt {
            file: file.into(),
            what: "spec".into(),
            message: e.to_string(),
        })?;
        let space =
            SearchSpace::from_definition(stored.space).map_err(|e| StudyError::Corrupt {
                file: file.into(),
                what: "space".into(),
                message: e.to_string(),
            })?;
        check_schema(&conn, file)?;
        // Schema 1 (before registries): nothing declared.
        let metrics = read_metrics(&conn, file)?.unwrap_or_default();
        Ok(Study {
            file: file.into(),
            conn,
            spec: StudySpec {
                space,
                objectives: stored.objectives,
                strategy: stored.strategy,
                seed: stored.seed,
                metrics,
            },
            cache: TrialCache::default(),
            cache_version: -1,
        })
    }

    /// Another connection to the same study (for another thread).
    pub fn reopen(&self) -> Result<Study, StudyError> {
        Ok(Study {
            file: self.file.clone(),
            conn: open_connection(&self.file)?,
            spec: self.spec.clone(),
            cache: TrialCache::default(),
            cache_version: -1,
        })
    }

    /// The study's settings.
    pub fn spec(&self) -> &StudySpec {
        &self.spec
    }

    /// The database file.
    pub fn file(&self) -> &Path {
        &self.file
    }

    /// Counts of trials by status.
    pub fn counts(&self) -> Result<StatusCounts, StudyError> {
        counts(&self.conn).map_err(sql(&self.file))
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
        let version = current_version(&self.conn).map_err(sql(&self.file))?;
        if version != self.cache_version {
            for (id, rec) in load_trials(&self.conn, &self.file, self.cache_version)? {
                self.cache.upsert(id, rec);
            }
            self.cache_version = version;
        }
        Ok(&self.cache.trials)
    }

    /// Re-queues `running` trials whose worker is gone or whose heartbeat is
    /// older than `stale_after`. Returns how many.
    pub fn requeue_stale(
        &mut self,
        me: &WorkerIdentity,
        stale_after: Duration,
    ) -> Result<usize, StudyError> {
        let file = self.file.clone();
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(sql(&file))?;
        let n = requeue_stale_in(&tx, me, stale_after).map_err(sql(&file))?;
        tx.commit().map_err(sql(&file))?;
        Ok(n)
    }

    /// Claims work for `worker`: a queued trial if any, otherwise a new one
    /// from `strategy`, within `budget` finished trials. Atomic across
    /// processes.
    pub fn claim(
        &mut self,
        worker: &WorkerIdentity,
        budget: usize,
        strategy: &mut dyn Strategy,
        stale_after: Duration,
    ) -> Result<Claim, StudyError> {
        let file = self.file.clone();
        let now = MonotonicNs::now().as_ns() as i64;
        let label = worker.label();
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(sql(&file))?;
        let requeued = requeue_stale_in(&tx, worker, stale_after).map_err(sql(&file))?;
        if requeued > 0 {
            tracing::info!(requeued, "re-queued trials whose worker is gone");
        }
        let c = counts(&tx).map_err(sql(&file))?;
        if c.finished >= budget {
            tx.commit().map_err(sql(&file))?;
            return Ok(Claim::BudgetReached);
        }
        let queued: Option<(i64, u64, String, f64, i64)> = tx
            .prepare_cached(
                "SELECT id, number, config_json, fidelity, seed FROM trials
                 WHERE status = 'queued' ORDER BY number LIMIT 1",
            )
            .and_then(|mut st| {
                st.query_row([], |r| {
                    Ok((
                        r.get(0)?,
                        r.get::<_, i64>(1)? as u64,
                        r.get(2)?,
                        r.get(3)?,
                        r.get(4)?,
                    ))
                })
                .optional()
            })
            .map_err(sql(&file))?;
        if let Some((id, number, config_json, fidelity, seed)) = queued {
            let version = bump_version(&tx).map_err(sql(&file))?;
            tx.prepare_cached(
                "UPDATE trials SET status = 'running', worker_id = ?2, heartbeat_ns = ?3,
                 started_ns = ?3, attempts = attempts + 1, version = ?4 WHERE id = ?1",
            )
            .and_then(|mut st| st.execute(params![id, label, now, version]))
            .map_err(sql(&file))?;
            tx.commit().map_err(sql(&file))?;
            let config = Config::from_json(&config_json).map_err(|e| StudyError::Corrupt {
                file: file.clone(),
                what: format!("configuration of trial {number}"),
                message: e.to_string(),
            })?;
            return Ok(Claim::Trial(ClaimedTrial {
                id,
                number,
                config,
                fidelity,
                seed: seed as u64,
                rerun: true,
            }));
        }
        if c.finished + c.running >= budget {
            tx.commit().map_err(sql(&file))?;
            return Ok(Claim::Wait);
        }
        // Bring the history up to date inside the transaction: nobody else
        // can propose until we commit.
        let version = current_version(&tx).map_err(sql(&file))?;
        if version != self.cache_version {
            for (id, rec) in load_trials(&tx, &file, self.cache_version)? {
                self.cache.upsert(id, rec);
            }
            self.cache_version = version;
        }
        let number: u64 = tx
            .prepare_cached("SELECT COALESCE(MAX(number) + 1, 0) FROM trials")
            .and_then(|mut st| st.query_row([], |r| r.get::<_, i64>(0)))
            .map_err(sql(&file))? as u64;
        let history = History {
            trials: &self.cache.trials,
            space: &self.spec.space,
            objectives: &self.spec.objectives,
        };
        let mut rng = StdRng::seed_from_u64(derive_seed(self.spec.seed, number ^ 0x5eed));
        let proposal = match strategy.ask(&history, &mut rng) {
            Ask::Propose(p) => p,
            Ask::Wait => {
                tx.commit().map_err(sql(&file))?;
                return Ok(Claim::Wait);
            }
            Ask::Exhausted => {
                tx.commit().map_err(sql(&file))?;
                return Ok(if c.running > 0 {
                    Claim::Wait
                } else {
                    Claim::Exhausted
                });
            }
        };
        let seed = derive_seed(self.spec.seed, number);
        let config_json = proposal.config.key();
        let version = bump_version(&tx).map_err(sql(&file))?;
        let id = tx
            .prepare_cached(
                "INSERT INTO trials (number, config_json, config_key, fidelity, tag, status,
                     worker_id, heartbeat_ns, seed, created_ns, started_ns, attempts, version)
                 VALUES (?1, ?2, ?2, ?3, ?4, 'running', ?5, ?6, ?7, ?6, ?6, 1, ?8)
                 RETURNING id",
            )
            .and_then(|mut st| {
                st.query_row(
                    params![
                        number as i64,
                        config_json,
                        proposal.fidelity,
                        proposal.tag.clone().unwrap_or_default(),
                        label,
                        now,
                        seed as i64,
                        version
                    ],
                    |r| r.get::<_, i64>(0),
                )
            })
            .map_err(sql(&file))?;
        tx.commit().map_err(sql(&file))?;
        Ok(Claim::Trial(ClaimedTrial {
            id,
            number,
            config: proposal.config,
            fidelity: proposal.fidelity,
            seed,
            rerun: false,
        }))
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
        let file = self.file.clone();
        let now = MonotonicNs::now().as_ns() as i64;
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(sql(&file))?;
        let version = bump_version(&tx).map_err(sql(&file))?;
        let changed = match outcome {
            Ok(r) => {
                let metrics = serde_json::to_string(&r.metrics).unwrap_or_default();
                let kernels = serde_json::to_string(&r.kernel_energy).unwrap_or_default();
                let notes = serde_json::to_string(&r.notes).unwrap_or_default();
                tx.prepare_cached(
                    "UPDATE trials SET status = 'finished', metrics_json = ?2, kernel_energy_json = ?3,
                         provenance = ?4, energy_spent_j = ?5, notes_json = ?6, finished_ns = ?7,
                         finish_seq = (SELECT COALESCE(MAX(finish_seq) + 1, 0) FROM trials),
                         eval_ns = ?8, overhead_ns = ?9, version = ?10, error = NULL
                     WHERE id = ?1 AND status IN ('running', 'queued')",
                )
                .and_then(|mut st| {
                    st.execute(params![
                        trial_id,
                        metrics,
                        kernels,
                        r.provenance.map(|p| p.label()),
                        r.energy_spent_j,
                        notes,
                        now,
                        eval_ns as i64,
                        overhead_ns as i64,
                        version
                    ])
                })
                .map_err(sql(&file))?
            }
            Err(message) => tx
                .prepare_cached(
                    "UPDATE trials SET status = 'failed', error = ?2, finished_ns = ?3,
                         eval_ns = ?4, overhead_ns = ?5, version = ?6
                     WHERE id = ?1 AND status IN ('running', 'queued')",
                )
                .and_then(|mut st| {
                    st.execute(params![
                        trial_id,
                        message,
                        now,
                        eval_ns as i64,
                        overhead_ns as i64,
                        version
                    ])
                })
                .map_err(sql(&file))?,
        };
        tx.commit().map_err(sql(&file))?;
        Ok(changed == 1)
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
        let file = self.file.clone();
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(sql(&file))?;
        let row: Option<(i64, Option<String>, Option<String>)> = tx
            .query_row(
                "SELECT id, metrics_json, notes_json FROM trials
                 WHERE number = ?1 AND status = 'finished'",
                params![number as i64],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
            )
            .optional()
            .map_err(sql(&file))?;
        let Some((id, metrics_json, notes_json)) = row else {
            return Ok(false);
        };
        let corrupt = |what: &str, e: serde_json::Error| StudyError::Corrupt {
            file: file.clone(),
            what: format!("{what} of trial {number}"),
            message: e.to_string(),
        };
        let mut merged: Metrics = match metrics_json.as_deref() {
            Some(text) => serde_json::from_str(text).map_err(|e| corrupt("metrics", e))?,
            None => Metrics::new(),
        };
        merged.extend(metrics.iter().map(|(k, v)| (k.clone(), *v)));
        let mut notes: Vec<String> = match notes_json.as_deref() {
            Some(text) => serde_json::from_str(text).map_err(|e| corrupt("notes", e))?,
            None => Vec::new(),
        };
        notes.push(note.to_owned());
        let version = bump_version(&tx).map_err(sql(&file))?;
        tx.execute(
            "UPDATE trials SET metrics_json = ?2, notes_json = ?3,
                 energy_spent_j = CASE WHEN ?4 IS NULL THEN energy_spent_j
                                       ELSE COALESCE(energy_spent_j, 0) + ?4 END,
                 version = ?5
             WHERE id = ?1",
            params![
                id,
                serde_json::to_string(&merged).unwrap_or_default(),
                serde_json::to_string(&notes).unwrap_or_default(),
                energy_spent_j,
                version
            ],
        )
        .map_err(sql(&file))?;
        tx.commit().map_err(sql(&file))?;
        Ok(true)
    }

    /// Stores the engine time spent on a trial outside the evaluator (known
    /// only after its result is committed).
    pub fn record_overhead(&self, trial_id: i64, overhead_ns: u64) -> Result<(), StudyError> {
        self.conn
            .execute(
                "UPDATE trials SET overhead_ns = ?2 WHERE id = ?1",
                params![trial_id, overhead_ns as i64],
            )
            .map_err(sql(&self.file))?;
        Ok(())
    }

    /// Refreshes the heartbeat of every trial this process is running.
    pub fn heartbeat(&self, me: &WorkerIdentity) -> Result<usize, StudyError> {
        let now = MonotonicNs::now().as_ns() as i64;
        let prefix = format!("{}%", me.process_label());
        self.conn
            .execute(
                "UPDATE trials SET heartbeat_ns = ?1 WHERE status = 'running' AND worker_id LIKE ?2",
                params![now, prefix],
            )
            .map_err(sql(&self.file))
    }
}

/// Refuses a study written by a newer layout than this build knows.
fn check_schema(conn: &Connection, file: &Path) -> Result<(), StudyError> {
    let text: Option<String> = conn
        .query_row(
            "SELECT value FROM study_meta WHERE key = 'schema_version'",
            [],
            |r| r.get(0),
        )
        .optional()
        .map_err(sql(file))?;
    // Studies always stored it; a missing one is read as the first layout.
    let found = match text {
        None => 1,
        Some(t) => t.trim().parse::<i64>().map_err(|e| StudyError::Corrupt {
            file: file.into(),
            what: "schema_version".into(),
            message: format!("{t:?}: {e}"),
        })?,
    };
    if found > SCHEMA_VERSION {
        return Err(StudyError::NewerSchema {
            file: file.into(),
            found,
            supported: SCHEMA_VERSION,
        });
    }
    Ok(())
}

/// The stored metric registry; `None` for a study of schema 1.
fn read_metrics(conn: &Connection, file: &Path) -> Result<Option<MetricRegistry>, StudyError> {
    let text: Option<String> = conn
        .query_row(
            "SELECT value FROM study_meta WHERE key = 'metrics'",
            [],
            |r| r.get(0),
        )
        .optional()
        .map_err(sql(file))?;
    text.map(|t| {
        serde_json::from_str(&t).map_err(|e| StudyError::Corrupt {
            file: file.into(),
            what: "metric registry".into(),
            message: e.to_string(),
        })
    })
    .transpose()
}

/// Stores `metrics` as the study's registry, at the current schema.
fn write_metrics(
    conn: &Connection,
    file: &Path,
    metrics: &MetricRegistry,
) -> Result<(), StudyError> {
    let json = serde_json::to_string(metrics).map_err(|e| StudyError::Corrupt {
        file: file.into(),
        what: "metric registry".into(),
        message: e.to_string(),
    })?;
    conn.execute(
        "INSERT INTO study_meta (key, value) VALUES ('metrics', ?1), ('schema_version', ?2)
         ON CONFLICT (key) DO UPDATE SET value = excluded.value",
        params![json, SCHEMA_VERSION.to_string()],
    )
    .map_err(sql(file))?;
    Ok(())
}

fn check_same(file: &Path, old: &StoredSpec, new: &StoredSpec) -> Result<(), StudyError> {
    let mismatch = |what: &str, a: String, b: String| StudyError::Mismatch {
        file: file.into(),
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

fn counts(conn: &Connection) -> rusqlite::Result<StatusCounts> {
    let mut c = StatusCounts::default();
    let mut stmt = conn.prepare_cached("SELECT status, COUNT(*) FROM trials GROUP BY status")?;
    let rows = stmt.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?)))?;
    for row in rows {
        let (s, n) = row?;
        let n = n as usize;
        match s.as_str() {
            "queued" => c.queued = n,
            "running" => c.running = n,
            "finished" => c.finished = n,
            "failed" => c.failed = n,
            _ => {}
        }
    }
    Ok(c)
}

// Statements on the per-trial path are prepared once per connection
// (`prepare_cached`): parsing them anew on every call cost more than running
// them.

fn current_version(conn: &Connection) -> rusqlite::Result<i64> {
    conn.prepare_cached("SELECT CAST(value AS INTEGER) FROM study_meta WHERE key = 'version'")?
        .query_row([], |r| r.get(0))
}

fn bump_version(conn: &Connection) -> rusqlite::Result<i64> {
    conn.prepare_cached(
        "UPDATE study_meta SET value = CAST(value AS INTEGER) + 1 WHERE key = 'version' RETURNING CAST(value AS INTEGER)",
    )?
    .query_row([], |r| r.get(0))
}

fn requeue_stale_in(
    conn: &Connection,
    me: &WorkerIdentity,
    stale_after: Duration,
) -> rusqlite::Result<usize> {
    let now = MonotonicNs::now().as_ns() as i64;
    let stale_before = now - stale_after.as_nanos().min(i64::MAX as u128) as i64;
    let mut stmt = conn.prepare_cached(
        "SELECT id, COALESCE(worker_id, ''), COALESCE(heartbeat_ns, 0) FROM trials WHERE status = 'running'",
    )?;
    let running: Vec<(i64, String, i64)> = stmt
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?
        .collect::<rusqlite::Result<_>>()?;
    let mut n = 0;
    for (id, worker, heartbeat) in running {
        let same_boot = worker.split('/').nth(1) == Some(me.boot_id.as_str());
        let stale_heartbeat = same_boot && heartbeat < stale_before;
        if worker_is_dead(&worker, me) || stale_heartbeat {
            let version = bump_version(conn)?;
            n += conn.execute(
                "UPDATE trials SET status = 'queued', worker_id = NULL, version = ?2 WHERE id = ?1 AND status = 'running'",
                params![id, version],
            )?;
            tracing::warn!(trial_id = id, worker = %worker, "worker gone; trial re-queued");
        }
    }
    Ok(n)
}

fn load_trials(
    conn: &Connection,
    file: &Path,
    since_version: i64,
) -> Result<Vec<(i64, TrialRecord)>, StudyError> {
    let mut stmt = conn
        .prepare_cached(
            "SELECT id, number, config_json, config_key, fidelity, tag, status, worker_id, seed,
                    metrics_json, kernel_energy_json, provenance, energy_spent_j, error, notes_json,
                    created_ns, started_ns, finished_ns, finish_seq, eval_ns, overhead_ns, attempts
             FROM trials WHERE version > ?1 ORDER BY number",
        )
        .map_err(sql(file))?;
    let raw = stmt
        .query_map([since_version], |r| {
            Ok(RawTrial {
                id: r.get(0)?,
                number: r.get(1)?,
                config_json: r.get(2)?,
                config_key: r.get(3)?,
                fidelity: r.get(4)?,
                tag: r.get(5)?,
                status: r.get(6)?,
                worker: r.get(7)?,
                seed: r.get(8)?,
                metrics_json: r.get(9)?,
                kernel_json: r.get(10)?,
                provenance: r.get(11)?,
                energy_spent_j: r.get(12)?,
                error: r.get(13)?,
                notes_json: r.get(14)?,
                created_ns: r.get(15)?,
                started_ns: r.get(16)?,
                finished_ns: r.get(17)?,
                finish_seq: r.get(18)?,
                eval_ns: r.get(19)?,
                overhead_ns: r.get(20)?,
                attempts: r.get(21)?,
            })
        })
        .map_err(sql(file))?
        .collect::<rusqlite::Result<Vec<_>>>()
        .map_err(sql(file))?;
    raw.into_iter().map(|r| r.decode(file)).collect()
}

struct RawTrial {
    id: i64,
    number: i64,
    config_json: String,
    config_key: String,
    fidelity: f64,
    tag: String,
    status: String,
    worker: Option<String>,
    seed: i64,
    metrics_json: Option<String>,
    kernel_json: Option<String>,
    provenance: Option<String>,
    energy_spent_j: Option<f64>,
    error: Option<String>,
    notes_json: Option<String>,
    created_ns: i64,
    started_ns: Option<i64>,
    finished_ns: Option<i64>,
    finish_seq: Option<i64>,
    eval_ns: Option<i64>,
    overhead_ns: Option<i64>,
    attempts: i64,
}

impl RawTrial {
    fn decode(self, file: &Path) -> Result<(i64, TrialRecord), StudyError> {
        let corrupt = |what: &str, message: String| StudyError::Corrupt {
            file: file.into(),
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
