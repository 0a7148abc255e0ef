//! The SQLite backend: one file per study, one connection per [`Study`]
//! handle (one per thread).
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
//!
//! Recovery: a `running` trial whose worker process is gone (same boot and
//! host, pid dead or reused) or whose heartbeat (CLOCK_MONOTONIC of this
//! boot) is older than the stale limit goes back to `queued`.
//!
//! [`Study`]: super::Study

use super::{
    worker_is_dead, Claim, ClaimedTrial, MetaTx, RawTrial, StatusCounts, Store, StudyError,
    StudyLocation, TrialCache, TrialRecord, WorkerIdentity,
};
use crate::evaluator::TrialResult;
use crate::objective::Metrics;
use crate::strategy::Ask;
use rusqlite::{params, Connection, OptionalExtension, TransactionBehavior};
use shared::MonotonicNs;
use std::path::{Path, PathBuf};
use std::time::Duration;

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

/// A study in a SQLite file.
pub(crate) struct SqliteStore {
    file: PathBuf,
    location: StudyLocation,
    conn: Connection,
}

fn sql(file: &Path) -> impl Fn(rusqlite::Error) -> StudyError + '_ {
    move |source| StudyError::Sql {
        study: StudyLocation::Sqlite(file.to_path_buf()),
        source,
    }
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

/// The metadata of a study inside one SQLite transaction.
struct SqliteMeta<'a> {
    tx: &'a rusqlite::Transaction<'a>,
    file: &'a Path,
}

impl MetaTx for SqliteMeta<'_> {
    fn get(&mut self, key: &str) -> Result<Option<String>, StudyError> {
        self.tx
            .query_row("SELECT value FROM study_meta WHERE key = ?1", [key], |r| {
                r.get(0)
            })
            .optional()
            .map_err(sql(self.file))
    }

    fn put(&mut self, key: &str, value: &str) -> Result<(), StudyError> {
        self.tx
            .execute(
                "INSERT INTO study_meta (key, value) VALUES (?1, ?2)
                 ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                params![key, value],
            )
            .map_err(sql(self.file))?;
        Ok(())
    }

    fn trial_count(&mut self) -> Result<u64, StudyError> {
        self.tx
            .query_row("SELECT COUNT(*) FROM trials", [], |r| r.get::<_, i64>(0))
            .map(|n| n as u64)
            .map_err(sql(self.file))
    }
}

impl SqliteStore {
    /// Opens the study file and runs `f` over its metadata in one
    /// transaction (`BEGIN IMMEDIATE` when creating). With `create`, a
    /// missing file or layout is created; without, a missing file or one
    /// without study tables is [`StudyError::NotAStudy`].
    pub(crate) fn open(
        file: &Path,
        create: bool,
        f: &mut dyn FnMut(&mut dyn MetaTx) -> Result<(), StudyError>,
    ) -> Result<SqliteStore, StudyError> {
        let location = StudyLocation::Sqlite(file.to_path_buf());
        if !create && !file.exists() {
            return Err(StudyError::NotAStudy {
                study: location,
                message: "no such file".into(),
            });
        }
        let mut conn = open_connection(file)?;
        let behavior = if create {
            TransactionBehavior::Immediate
        } else {
            TransactionBehavior::Deferred
        };
        let tx = conn
            .transaction_with_behavior(behavior)
            .map_err(sql(file))?;
        if create {
            tx.execute_batch(SCHEMA).map_err(sql(file))?;
        } else {
            let has_meta: bool = tx
                .query_row(
                    "SELECT EXISTS (SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'study_meta')",
                    [],
                    |r| r.get(0),
                )
                .map_err(|e| StudyError::NotAStudy {
                    study: location.clone(),
                    message: e.to_string(),
                })?;
            if !has_meta {
                return Err(StudyError::NotAStudy {
                    study: location,
                    message: "no study metadata".into(),
                });
            }
        }
        f(&mut SqliteMeta { tx: &tx, file })?;
        tx.commit().map_err(sql(file))?;
        Ok(SqliteStore {
            file: file.to_path_buf(),
            location,
            conn,
        })
    }
}

impl Store for SqliteStore {
    fn location(&self) -> &StudyLocation {
        &self.location
    }

    fn reopen(&self) -> Result<Box<dyn Store>, StudyError> {
        Ok(Box::new(SqliteStore {
            file: self.file.clone(),
            location: self.location.clone(),
            conn: open_connection(&self.file)?,
        }))
    }

    fn counts(&self) -> Result<StatusCounts, StudyError> {
        counts(&self.conn).map_err(sql(&self.file))
    }

    fn refresh(&mut self, cache: &mut TrialCache) -> Result<(), StudyError> {
        refresh_in(&self.conn, &self.file, cache)
    }

    fn requeue_stale(
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

    fn claim(
        &mut self,
        worker: &WorkerIdentity,
        budget: usize,
        stale_after: Duration,
        study_seed: u64,
        cache: &mut TrialCache,
        propose: &mut dyn FnMut(&[TrialRecord], u64) -> Ask,
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
            return super::rerun_claim(&self.location, id, number, &config_json, fidelity, seed);
        }
        if c.finished + c.running >= budget {
            tx.commit().map_err(sql(&file))?;
            return Ok(Claim::Wait);
        }
        // Bring the history up to date inside the transaction: nobody else
        // can propose until we commit.
        refresh_in(&tx, &file, cache)?;
        let number: u64 = tx
            .prepare_cached("SELECT COALESCE(MAX(number) + 1, 0) FROM trials")
            .and_then(|mut st| st.query_row([], |r| r.get::<_, i64>(0)))
            .map_err(sql(&file))? as u64;
        let proposal = match propose(&cache.trials, number) {
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
        let seed = super::derive_seed(study_seed, number);
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

    fn finish(
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

    fn add_measurement(
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
        let (merged, notes) = super::merge_measurement(
            &self.location,
            number,
            metrics_json.as_deref(),
            notes_json.as_deref(),
            metrics,
            note,
        )?;
        let version = bump_version(&tx).map_err(sql(&file))?;
        tx.execute(
            "UPDATE trials SET metrics_json = ?2, notes_json = ?3,
                 energy_spent_j = CASE WHEN ?4 IS NULL THEN energy_spent_j
                                       ELSE COALESCE(energy_spent_j, 0) + ?4 END,
                 version = ?5
             WHERE id = ?1",
            params![id, merged, notes, energy_spent_j, version],
        )
        .map_err(sql(&file))?;
        tx.commit().map_err(sql(&file))?;
        Ok(true)
    }

    fn record_overhead(&self, trial_id: i64, overhead_ns: u64) -> Result<(), StudyError> {
        self.conn
            .execute(
                "UPDATE trials SET overhead_ns = ?2 WHERE id = ?1",
                params![trial_id, overhead_ns as i64],
            )
            .map_err(sql(&self.file))?;
        Ok(())
    }

    fn heartbeat(&self, me: &WorkerIdentity) -> Result<usize, StudyError> {
        let now = MonotonicNs::now().as_ns() as i64;
        let prefix = format!("{}%", me.process_label());
        self.conn
            .execute(
                "UPDATE trials SET heartbeat_ns = ?1 WHERE status = 'running' AND worker_id LIKE ?2",
                params![now, prefix],
            )
            .map_err(sql(&self.file))
    }

    fn meta_entries(&self) -> Result<Vec<(String, String)>, StudyError> {
        let mut st = self
            .conn
            .prepare("SELECT key, value FROM study_meta ORDER BY key")
            .map_err(sql(&self.file))?;
        let rows = st
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
            .map_err(sql(&self.file))?
            .collect::<rusqlite::Result<Vec<(String, String)>>>()
            .map_err(sql(&self.file))?;
        Ok(rows)
    }

    fn import(
        &mut self,
        meta: &[(String, String)],
        trials: &[(i64, TrialRecord)],
    ) -> Result<(), StudyError> {
        let file = self.file.clone();
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(sql(&file))?;
        super::check_empty(
            &mut SqliteMeta {
                tx: &tx,
                file: &file,
            },
            &self.location,
        )?;
        for (k, v) in meta {
            tx.execute(
                "INSERT INTO study_meta (key, value) VALUES (?1, ?2)
                 ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                params![k, v],
            )
            .map_err(sql(&file))?;
        }
        tx.execute(
            "INSERT INTO study_meta (key, value) VALUES ('version', '0')
             ON CONFLICT (key) DO UPDATE SET value = excluded.value",
            [],
        )
        .map_err(sql(&file))?;
        let mut st = tx
            .prepare(
                "INSERT INTO trials (id, number, config_json, config_key, fidelity, tag, status,
                     worker_id, heartbeat_ns, seed, metrics_json, kernel_energy_json, provenance,
                     energy_spent_j, error, notes_json, created_ns, started_ns, finished_ns,
                     finish_seq, eval_ns, overhead_ns, attempts, version)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, NULL, ?9, ?10, ?11, ?12, ?13, ?14, ?15,
                     ?16, ?17, ?18, ?19, ?20, ?21, ?22, 0)",
            )
            .map_err(sql(&file))?;
        for (id, t) in trials {
            let r = RawTrial::encode(*id, t);
            st.execute(params![
                r.id,
                r.number,
                r.config_json,
                r.config_key,
                r.fidelity,
                r.tag,
                r.status,
                r.worker,
                r.seed,
                r.metrics_json,
                r.kernel_json,
                r.provenance,
                r.energy_spent_j,
                r.error,
                r.notes_json,
                r.created_ns,
                r.started_ns,
                r.finished_ns,
                r.finish_seq,
                r.eval_ns,
                r.overhead_ns,
                r.attempts
            ])
            .map_err(sql(&file))?;
        }
        drop(st);
        tx.commit().map_err(sql(&file))?;
        Ok(())
    }
}

fn counts(conn: &Connection) -> rusqlite::Result<StatusCounts> {
    let mut c = StatusCounts::default();
    let mut stmt = conn.prepare_cached("SELECT status, COUNT(*) FROM trials GROUP BY status")?;
    let rows = stmt.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?)))?;
    for row in rows {
        let (s, n) = row?;
        c.add(&s, n as usize);
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

/// Brings `cache` up to date: reads only rows changed since its version.
fn refresh_in(conn: &Connection, file: &Path, cache: &mut TrialCache) -> Result<(), StudyError> {
    let version = current_version(conn).map_err(sql(file))?;
    if version != cache.version {
        for (id, rec) in load_trials(conn, file, cache.version)? {
            cache.upsert(id, rec);
        }
        cache.version = version;
    }
    Ok(())
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
    let location = StudyLocation::Sqlite(file.to_path_buf());
    raw.into_iter().map(|r| r.decode(&location)).collect()
}
