//! Candidates of a lookup table of real trainings, and the cheap ("light")
//! estimates the scheduler ranks them by before training them.
//!
//! A table row gives the *true* objectives (validation accuracy,
//! inference energy) and the cost of its *heavy* evaluation (training
//! seconds and joules). A [`LightEstimates`] gives, per row, what a light
//! evaluation reveals (a score, higher = more promising, and a predicted
//! inference energy, lower = better) and the cost of one light evaluation.
//! The light score is any per-row vector: a table column (params, flops),
//! a column of another CSV joined by row index (zero-cost proxies), or the
//! true accuracy as an explicitly labelled upper bound.

use std::path::{Path, PathBuf};

use crate::error::ScheduleError;

/// One candidate architecture with its measured outcome and training cost.
#[derive(Debug, Clone, PartialEq)]
pub struct Candidate {
    /// Validation accuracy after training (maximised).
    pub val_accuracy: f64,
    /// Inference energy, J per 1000 samples (minimised).
    pub inference_energy_j_per_1k: f64,
    /// Wall time of the training on one worker slot, seconds (> 0).
    pub train_seconds: f64,
    /// Energy of the training, joules (≥ 0).
    pub train_joules: f64,
}

/// A table of candidates and its raw columns (for light scores).
#[derive(Debug, Clone)]
pub struct Table {
    /// The file it came from.
    pub path: PathBuf,
    /// One per data row, in file order.
    pub candidates: Vec<Candidate>,
    header: Vec<String>,
    rows: Vec<Vec<String>>,
}

fn table_err(path: &Path, line: usize, field: &str, reason: impl Into<String>) -> ScheduleError {
    ScheduleError::Table {
        path: path.to_path_buf(),
        line,
        field: field.to_string(),
        reason: reason.into(),
    }
}

fn read_csv(path: &Path) -> Result<(Vec<String>, Vec<Vec<String>>), ScheduleError> {
    let mut r = csv::ReaderBuilder::new()
        .has_headers(true)
        .from_path(path)
        .map_err(|e| table_err(path, 1, "", e.to_string()))?;
    let header: Vec<String> = r
        .headers()
        .map_err(|e| table_err(path, 1, "", e.to_string()))?
        .iter()
        .map(str::to_string)
        .collect();
    let mut rows = Vec::new();
    for (i, rec) in r.records().enumerate() {
        let rec = rec.map_err(|e| table_err(path, i + 2, "", e.to_string()))?;
        rows.push(rec.iter().map(str::to_string).collect());
    }
    Ok((header, rows))
}

fn numeric_column(
    path: &Path,
    header: &[String],
    rows: &[Vec<String>],
    name: &str,
) -> Result<Vec<f64>, ScheduleError> {
    let col = header.iter().position(|h| h == name).ok_or_else(|| {
        table_err(
            path,
            1,
            name,
            format!("no such column (header has: {})", header.join(",")),
        )
    })?;
    rows.iter()
        .enumerate()
        .map(|(i, row)| {
            let cell = row.get(col).map_or("", String::as_str);
            cell.trim()
                .parse::<f64>()
                .ok()
                .filter(|v| v.is_finite())
                .ok_or_else(|| {
                    table_err(
                        path,
                        i + 2,
                        name,
                        format!("{cell:?} is not a finite number"),
                    )
                })
        })
        .collect()
}

impl Table {
    /// Reads a table with columns `val_accuracy`, `inference_energy_j_per_1k`,
    /// `training_energy_j` and `train_time_s` (bench/search-data/table2-magic.csv
    /// has them; table1 has no training time and is refused here rather than
    /// given an invented one).
    pub fn load(path: &Path) -> Result<Table, ScheduleError> {
        let (header, rows) = read_csv(path)?;
        let acc = numeric_column(path, &header, &rows, "val_accuracy")?;
        let inf = numeric_column(path, &header, &rows, "inference_energy_j_per_1k")?;
        let joules = numeric_column(path, &header, &rows, "training_energy_j")?;
        let secs = numeric_column(path, &header, &rows, "train_time_s")?;
        let mut candidates = Vec::with_capacity(rows.len());
        for i in 0..rows.len() {
            if secs[i] <= 0.0 {
                return Err(table_err(path, i + 2, "train_time_s", "must be > 0"));
            }
            if joules[i] < 0.0 {
                return Err(table_err(path, i + 2, "training_energy_j", "must be >= 0"));
            }
            candidates.push(Candidate {
                val_accuracy: acc[i],
                inference_energy_j_per_1k: inf[i],
                train_seconds: secs[i],
                train_joules: joules[i],
            });
        }
        if candidates.is_empty() {
            return Err(table_err(path, 2, "", "the table has no rows"));
        }
        Ok(Table {
            path: path.to_path_buf(),
            candidates,
            header,
            rows,
        })
    }

    /// A numeric column of this table, one value per candidate.
    pub fn column(&self, name: &str) -> Result<Vec<f64>, ScheduleError> {
        numeric_column(&self.path, &self.header, &self.rows, name)
    }

    /// Multiplies every training's time and energy by `factor` (same
    /// power): the tables' 8-epoch trainings last seconds, a search's last
    /// hours; the factor is the caller's stated assumption.
    pub fn scale_training(&mut self, factor: f64) -> Result<(), ScheduleError> {
        if !(factor.is_finite() && factor > 0.0) {
            return Err(ScheduleError::Config(format!(
                "training scale factor {factor} must be finite and > 0"
            )));
        }
        for c in &mut self.candidates {
            c.train_seconds *= factor;
            c.train_joules *= factor;
        }
        Ok(())
    }
}

/// Reads column `name` of another CSV, joined to a table by row index
/// (row i of the file scores candidate i); the row count must match.
pub fn column_from_csv(path: &Path, name: &str, rows: usize) -> Result<Vec<f64>, ScheduleError> {
    let (header, data) = read_csv(path)?;
    let v = numeric_column(path, &header, &data, name)?;
    if v.len() != rows {
        return Err(table_err(
            path,
            v.len() + 1,
            name,
            format!(
                "{} rows, the table has {rows} (joined by row index)",
                v.len()
            ),
        ));
    }
    Ok(v)
}

/// The cost of one light evaluation, with where the figure comes from.
#[derive(Debug, Clone, PartialEq)]
pub struct LightCost {
    /// Seconds of one worker slot per light evaluation (≥ 0).
    pub seconds: f64,
    /// Joules per light evaluation (≥ 0).
    pub joules: f64,
    /// Provenance of the two figures (measured / estimated / assumed and why).
    pub provenance: String,
}

/// What one light evaluation of each candidate reveals, and its cost.
#[derive(Debug, Clone, PartialEq)]
pub struct LightEstimates {
    /// Name of the score (column or proxy), for reports.
    pub name: String,
    /// Per candidate, higher = more promising accuracy.
    pub score: Vec<f64>,
    /// Per candidate, predicted inference cost, lower = better (any
    /// monotone proxy works: the queue only compares by dominance).
    pub predicted_energy: Vec<f64>,
    /// Cost of one light evaluation.
    pub cost: LightCost,
}

impl LightEstimates {
    /// Checks lengths against `n` candidates and the cost's signs.
    pub fn validate(&self, n: usize) -> Result<(), ScheduleError> {
        if self.score.len() != n || self.predicted_energy.len() != n {
            return Err(ScheduleError::Config(format!(
                "light estimates {:?}: {} scores and {} predicted energies for {n} candidates",
                self.name,
                self.score.len(),
                self.predicted_energy.len()
            )));
        }
        let c = &self.cost;
        if !(c.seconds.is_finite() && c.seconds >= 0.0 && c.joules.is_finite() && c.joules >= 0.0) {
            return Err(ScheduleError::Config(format!(
                "light cost {} s / {} J must be finite and >= 0",
                c.seconds, c.joules
            )));
        }
        Ok(())
    }
}
