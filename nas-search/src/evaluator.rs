//! What turns a configuration into metrics: the [`Evaluator`] trait, and
//! [`TableEvaluator`], which looks results up in a CSV of precomputed runs
//! (`--evaluator table:FILE.csv`) so strategies can be compared cheaply and
//! reproducibly.
//!
//! Table format: a header row; one row per configuration (optionally per
//! configuration and fidelity). Columns are parameter names and metric
//! columns; which are which is declared by the caller (metric names, or the
//! parameter names of a space). Reserved columns: `fidelity` (fraction of
//! full training the row was measured at; rows without it are full
//! fidelity), `provenance` (`measured`, `estimated` or `simulated`: where the
//! energy figures of the row come from), `energy_spent_j` (energy the run
//! that produced the row spent), and `kernel_energy_j:NAME` (energy of one
//! kernel type). An empty cell in a parameter column means the parameter is
//! inactive in that row.

use crate::objective::Metrics;
use crate::space::{Config, ParamValue, SearchSpace, SpaceError};
use shared::Provenance;
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

/// Energy of one kernel type within a trial.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct KernelEnergyFigure {
    /// Kernel type, e.g. `matmul`, `relu`.
    pub name: String,
    /// Energy attributed, joules (`None` when it could not be attributed).
    pub energy_j: Option<f64>,
    /// Time spent in the kernel type.
    pub time_ns: u64,
    /// Number of spans.
    pub count: u64,
}

/// What one evaluation produced.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct TrialResult {
    /// Metrics by name (objectives are read from here).
    pub metrics: Metrics,
    /// Energy per kernel type.
    pub kernel_energy: Vec<KernelEnergyFigure>,
    /// Energy the evaluation itself spent (training and measuring), joules.
    pub energy_spent_j: Option<f64>,
    /// Where the energy figures come from (`None` when there are none).
    pub provenance: Option<Provenance>,
    /// Free-form notes kept with the trial (method, caveats).
    pub notes: Vec<String>,
}

/// Why an evaluation failed. The trial is recorded as failed, the search
/// goes on.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum EvalError {
    /// The configuration is not in the lookup table.
    #[error("configuration {config} is not in table {table}")]
    NotInTable {
        /// The table.
        table: PathBuf,
        /// The configuration.
        config: String,
    },
    /// Training or measurement failed.
    #[error("evaluation failed: {0}")]
    Failed(String),
}

/// Evaluates configurations. Called from several worker threads at once;
/// the energy of a trial must be attributed to that trial alone (e.g. by
/// reporting kernel spans of the calling thread only).
pub trait Evaluator: Send + Sync {
    /// Evaluates `config` at `fidelity` (fraction of the full training
    /// budget, in `(0, 1]`), using `seed` for every random choice.
    fn evaluate(&self, config: &Config, fidelity: f64, seed: u64)
        -> Result<TrialResult, EvalError>;
}

/// Errors loading a table.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TableError {
    /// Reading or parsing the CSV failed.
    #[error("table {file}: {message}")]
    Csv {
        /// The file.
        file: PathBuf,
        /// What failed (with the line where known).
        message: String,
    },
    /// A cell has the wrong content.
    #[error("table {file}, line {line}, column `{column}`: {message}")]
    Cell {
        /// The file.
        file: PathBuf,
        /// 1-based line in the file.
        line: u64,
        /// The column.
        column: String,
        /// What is wrong.
        message: String,
    },
    /// The derived space is unusable.
    #[error("table {file}: {source}")]
    Space {
        /// The file.
        file: PathBuf,
        /// Why.
        source: Box<SpaceError>,
    },
}

#[derive(Debug, Clone)]
struct TableRow {
    config: Config,
    fidelity: f64,
    result: TrialResult,
}

/// Looks results up in a CSV of precomputed runs.
#[derive(Debug, Clone)]
pub struct TableEvaluator {
    file: PathBuf,
    space: SearchSpace,
    /// Rows by configuration key.
    rows: HashMap<String, Vec<TableRow>>,
    metric_names: Vec<String>,
    nearest: bool,
}

/// Which columns of a table are metrics.
#[derive(Debug, Clone)]
pub enum TableColumns<'a> {
    /// These columns are metrics; every other non-reserved column is a
    /// parameter.
    Metrics(&'a [String]),
    /// These columns are parameters; every other non-reserved column is a
    /// metric.
    Params(&'a [String]),
}

impl TableEvaluator {
    /// Loads a table. The search space is derived from the parameter columns
    /// (their observed values, conditions from empty cells) and restricted
    /// to the table's configurations, so strategies only propose rows that
    /// exist.
    pub fn from_csv(path: &Path, columns: TableColumns<'_>) -> Result<TableEvaluator, TableError> {
        let csv_err = |message: String| TableError::Csv {
            file: path.to_path_buf(),
            message,
        };
        let mut reader = csv::ReaderBuilder::new()
            .trim(csv::Trim::All)
            .from_path(path)
            .map_err(|e| csv_err(e.to_string()))?;
        let header: Vec<String> = reader
            .headers()
            .map_err(|e| csv_err(e.to_string()))?
            .iter()
            .map(str::to_string)
            .collect();
        let reserved = |c: &str| {
            matches!(c, "fidelity" | "provenance" | "energy_spent_j")
                || c.starts_with("kernel_energy_j:")
        };
        let is_param = |c: &str| match &columns {
            TableColumns::Metrics(m) => !reserved(c) && !m.iter().any(|x| x == c),
            TableColumns::Params(p) => p.iter().any(|x| x == c),
        };
        let param_cols: Vec<usize> = (0..header.len())
            .filter(|&i| is_param(&header[i]))
            .collect();
        let metric_cols: Vec<usize> = (0..header.len())
            .filter(|&i| !reserved(&header[i]) && !is_param(&header[i]))
            .collect();
        if let TableColumns::Metrics(m) = &columns {
            if let Some(missing) = m.iter().find(|x| !header.contains(x)) {
                return Err(csv_err(format!(
                    "no column `{missing}` (header: {})",
                    header.join(",")
                )));
            }
        }
        if param_cols.is_empty() {
            return Err(csv_err("no parameter columns".into()));
        }
        let col = |name: &str| header.iter().position(|h| h == name);
        let (fid_col, prov_col, spent_col) =
            (col("fidelity"), col("provenance"), col("energy_spent_j"));
        let kernel_cols: Vec<(usize, String)> = header
            .iter()
            .enumerate()
            .filter_map(|(i, h)| {
                h.strip_prefix("kernel_energy_j:")
                    .map(|n| (i, n.to_string()))
            })
            .collect();

        let mut raw_params: Vec<Vec<Option<ParamValue>>> = Vec::new();
        let mut parsed: Vec<(f64, TrialResult)> = Vec::new();
        for record in reader.records() {
            let record = record.map_err(|e| csv_err(e.to_string()))?;
            let line = record.position().map(|p| p.line()).unwrap_or(0);
            let cell_err = |c: usize, message: String| TableError::Cell {
                file: path.to_path_buf(),
                line,
                column: header[c].clone(),
                message,
            };
            let number = |c: usize| -> Result<Option<f64>, TableError> {
                let s = record.get(c).unwrap_or("");
                if s.is_empty() {
                    return Ok(None);
                }
                s.parse::<f64>()
                    .map(Some)
                    .map_err(|_| cell_err(c, format!("`{s}` is not a number")))
            };
            raw_params.push(
                param_cols
                    .iter()
                    .map(|&c| {
                        let s = record.get(c).unwrap_or("");
                        (!s.is_empty()).then(|| ParamValue::parse_cell(s))
                    })
                    .collect(),
            );
            let mut result = TrialResult::default();
            for &c in &metric_cols {
                if let Some(v) = number(c)? {
                    result.metrics.insert(header[c].clone(), v);
                }
            }
            let fidelity = match fid_col {
                Some(c) => number(c)?.unwrap_or(1.0),
                None => 1.0,
            };
            if !(fidelity > 0.0 && fidelity <= 1.0) {
                return Err(cell_err(
                    fid_col.unwrap_or(0),
                    format!("fidelity {fidelity} outside (0, 1]"),
                ));
            }
            if let Some(c) = prov_col {
                result.provenance = match record.get(c).unwrap_or("") {
                    "" => None,
                    "measured" => Some(Provenance::Measured),
                    "estimated" => Some(Provenance::Estimated),
                    "simulated" => Some(Provenance::Simulated),
                    other => {
                        return Err(cell_err(
                            c,
                            format!("`{other}` is not measured, estimated or simulated"),
                        ))
                    }
                };
            }
            if let Some(c) = spent_col {
                result.energy_spent_j = number(c)?;
            }
            for (c, name) in &kernel_cols {
                if let Some(e) = number(*c)? {
                    result.kernel_energy.push(KernelEnergyFigure {
                        name: name.clone(),
                        energy_j: Some(e),
                        time_ns: 0,
                        count: 0,
                    });
                }
            }
            result
                .notes
                .push(format!("looked up in {} line {line}", path.display()));
            parsed.push((fidelity, result));
        }
        if parsed.is_empty() {
            return Err(csv_err("no rows".into()));
        }
        let names: Vec<String> = param_cols.iter().map(|&c| header[c].clone()).collect();
        let space = SearchSpace::derive_from_rows(&names, &raw_params).map_err(|source| {
            TableError::Space {
                file: path.to_path_buf(),
                source: Box::new(source),
            }
        })?;
        let mut rows: HashMap<String, Vec<TableRow>> = HashMap::new();
        for (params, (fidelity, result)) in raw_params.into_iter().zip(parsed) {
            let config = Config(
                names
                    .iter()
                    .zip(params)
                    .filter_map(|(n, v)| v.map(|v| (n.clone(), v)))
                    .collect(),
            );
            rows.entry(config.key()).or_default().push(TableRow {
                config,
                fidelity,
                result,
            });
        }
        Ok(TableEvaluator {
            file: path.to_path_buf(),
            space,
            rows,
            metric_names: metric_cols.iter().map(|&c| header[c].clone()).collect(),
            nearest: false,
        })
    }

    /// Answers a configuration missing from the table with the nearest row
    /// (by [`SearchSpace::distance`]) instead of an error.
    pub fn with_nearest(mut self, nearest: bool) -> TableEvaluator {
        self.nearest = nearest;
        self
    }

    /// The space derived from the table (finite: its configurations).
    pub fn space(&self) -> &SearchSpace {
        &self.space
    }

    /// The metric columns.
    pub fn metric_names(&self) -> &[String] {
        &self.metric_names
    }

    /// Full-fidelity metrics of every configuration (for computing the known
    /// front of a table).
    pub fn full_fidelity_metrics(&self) -> Vec<(Config, Metrics)> {
        let mut out: Vec<(Config, Metrics)> = self
            .rows
            .values()
            .filter_map(|rows| {
                rows.iter()
                    .max_by(|a, b| a.fidelity.total_cmp(&b.fidelity))
                    .map(|r| (r.config.clone(), r.result.metrics.clone()))
            })
            .collect();
        out.sort_by_key(|(c, _)| c.key());
        out
    }

    fn lookup(&self, config: &Config) -> Option<&Vec<TableRow>> {
        if let Some(rows) = self.rows.get(&config.key()) {
            return Some(rows);
        }
        if !self.nearest {
            return None;
        }
        self.rows.values().min_by(|a, b| {
            self.space
                .distance(config, &a[0].config)
                .total_cmp(&self.space.distance(config, &b[0].config))
        })
    }
}

impl Evaluator for TableEvaluator {
    fn evaluate(
        &self,
        config: &Config,
        fidelity: f64,
        _seed: u64,
    ) -> Result<TrialResult, EvalError> {
        let rows = self.lookup(config).ok_or_else(|| EvalError::NotInTable {
            table: self.file.clone(),
            config: config.to_string(),
        })?;
        // The row measured at the fidelity closest to the one asked for.
        let row = rows
            .iter()
            .min_by(|a, b| {
                (a.fidelity - fidelity)
                    .abs()
                    .total_cmp(&(b.fidelity - fidelity).abs())
            })
            .ok_or_else(|| EvalError::Failed("empty row group".into()))?;
        let mut result = row.result.clone();
        if row.config != *config {
            result.notes.push(format!("nearest row to {config}"));
        }
        Ok(result)
    }
}

/// Per-objective extremes over a set of metrics: `(best, worst)` by
/// direction, for deriving hypervolume reference points from a table.
pub fn metric_extremes(all: &[Metrics], name: &str) -> Option<(f64, f64)> {
    let values: Vec<f64> = all.iter().filter_map(|m| m.get(name).copied()).collect();
    if values.is_empty() {
        return None;
    }
    let lo = values.iter().copied().fold(f64::INFINITY, f64::min);
    let hi = values.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    Some((lo, hi))
}

/// Builds metrics from pairs (convenience for evaluators and tests).
pub fn metrics_from(pairs: &[(&str, f64)]) -> Metrics {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), *v))
        .collect::<BTreeMap<_, _>>()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn write_table(text: &str) -> tempfile::NamedTempFile {
        let mut f = tempfile::NamedTempFile::new().unwrap();
        f.write_all(text.as_bytes()).unwrap();
        f
    }

    #[test]
    fn table_rows_become_a_finite_space_and_lookups_work() {
        let f = write_table(
            "n_layers,width_1,width_2,act,acc,energy,provenance,fidelity\n\
             1,16,,relu,0.80,1.0,estimated,1\n\
             1,16,,relu,0.70,1.0,estimated,0.25\n\
             2,16,32,relu,0.85,2.0,estimated,1\n\
             2,32,32,tanh,0.86,3.0,estimated,1\n",
        );
        let metrics = vec!["acc".to_string(), "energy".to_string()];
        let t = TableEvaluator::from_csv(f.path(), TableColumns::Metrics(&metrics)).unwrap();
        assert_eq!(t.space().size_hint(), Some(3));
        let c = t.space().allowed().unwrap()[0].clone();
        t.space().validate(&c).unwrap();
        let full = t.evaluate(&c, 1.0, 0).unwrap();
        let low = t.evaluate(&c, 0.3, 0).unwrap();
        if c.get("n_layers") == Some(&ParamValue::Int(1)) {
            assert_eq!(full.metrics["acc"], 0.80);
            assert_eq!(low.metrics["acc"], 0.70);
        }
        assert_eq!(full.provenance, Some(Provenance::Estimated));
        let mut missing = c.clone();
        missing
            .0
            .insert("act".into(), ParamValue::Str("gelu".into()));
        let e = t.evaluate(&missing, 1.0, 0).unwrap_err().to_string();
        assert!(e.contains("not in table") && e.contains("act=gelu"), "{e}");
        let near = t
            .clone()
            .with_nearest(true)
            .evaluate(&missing, 1.0, 0)
            .unwrap();
        assert!(near.notes.iter().any(|n| n.contains("nearest")));
        assert_eq!(t.full_fidelity_metrics().len(), 3);
    }

    #[test]
    fn table_errors_name_file_line_and_column() {
        let f = write_table("a,acc\n1,0.5\n2,high\n");
        let metrics = vec!["acc".to_string()];
        let e = TableEvaluator::from_csv(f.path(), TableColumns::Metrics(&metrics))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("line 3") && e.contains("`acc`") && e.contains("high"),
            "{e}"
        );
        let e = TableEvaluator::from_csv(f.path(), TableColumns::Metrics(&["nope".to_string()]))
            .unwrap_err()
            .to_string();
        assert!(e.contains("no column `nope`"), "{e}");
    }
}
