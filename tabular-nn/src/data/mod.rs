//! Tabular data: reading files ([`table`]), typing columns, encoding them
//! into a float matrix, and seeded stratified splits ([`Dataset`]); the
//! datasets bundled with the project ([`bundled`]).
//!
//! Invariant: every statistic used for encoding (means, deviations,
//! category vocabularies, the regression target's scale) is fitted on the
//! training split only, so validation and test rows never leak into it.

pub mod bundled;
pub mod table;

use ndarray::{Array1, Array2};
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::SeedableRng;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};
use std::path::Path;
pub use table::{read_table, read_table_bytes, RawTable};

/// Why a dataset could not be loaded. Messages name the file, and the line
/// and column where there is one.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DataError {
    /// The file could not be read.
    #[error("{path}: {source}")]
    Io {
        /// File.
        path: String,
        /// Cause.
        source: std::io::Error,
    },
    /// The file has no header or no data.
    #[error("{path}: the file is empty ({what})")]
    Empty {
        /// File.
        path: String,
        /// What was missing.
        what: String,
    },
    /// The CSV parser failed.
    #[error("{path}: line {line}: {message}")]
    Parse {
        /// File.
        path: String,
        /// 1-based line.
        line: u64,
        /// Parser message.
        message: String,
    },
    /// A row has a different number of cells than the header.
    #[error("{path}: line {line}: expected {expected} columns (as in the header), found {found}")]
    Ragged {
        /// File.
        path: String,
        /// 1-based line.
        line: u64,
        /// Header width.
        expected: usize,
        /// This row's width.
        found: usize,
    },
    /// A value that is not a number in a numeric column.
    #[error(
        "{path}: line {line}, column {column_number} ({column:?}): {value:?} is not a number, \
         but the column is numeric ({why}); fix the value or mark the column categorical"
    )]
    NonNumeric {
        /// File.
        path: String,
        /// 1-based line.
        line: u64,
        /// Column name.
        column: String,
        /// 1-based column number.
        column_number: usize,
        /// The offending cell.
        value: String,
        /// Why the column is numeric (inferred or asked for).
        why: String,
    },
    /// The target (or an overridden column) is not in the header.
    #[error("{path}: no column named {name:?} (columns: {available})")]
    UnknownColumn {
        /// File.
        path: String,
        /// The name asked for.
        name: String,
        /// The header, comma-separated.
        available: String,
    },
    /// The target takes one value only: nothing to learn.
    #[error("{path}: column {column_number} ({target:?}), the target, has the single value {value:?} on every row")]
    ConstantTarget {
        /// File.
        path: String,
        /// Target column.
        target: String,
        /// 1-based column number.
        column_number: usize,
        /// Its only value.
        value: String,
    },
    /// The task asked for does not fit the target.
    #[error("{path}: target {target:?}: {message}")]
    TaskMismatch {
        /// File.
        path: String,
        /// Target column.
        target: String,
        /// What does not fit.
        message: String,
    },
    /// Too few rows to make three splits.
    #[error(
        "{path}: {rows} usable rows; at least {needed} are needed for train/validation/test splits"
    )]
    TooFewRows {
        /// File.
        path: String,
        /// Rows with a target.
        rows: usize,
        /// Minimum.
        needed: usize,
    },
    /// No bundled dataset has this name.
    #[error("no bundled dataset named {name:?} (bundled: {available})")]
    UnknownDataset {
        /// The name asked for.
        name: String,
        /// Bundled names.
        available: String,
    },
}

/// What is predicted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Task {
    /// Two classes.
    Binary,
    /// More than two classes.
    Multiclass,
    /// A real number.
    Regression,
}

impl Task {
    /// Parses `binary`, `multiclass`, `regression` (and `classification`,
    /// which becomes binary or multiclass by the number of classes: `None`
    /// here, decided at load time).
    pub fn parse(name: &str) -> Option<Option<Task>> {
        match name.to_ascii_lowercase().as_str() {
            "binary" => Some(Some(Task::Binary)),
            "multiclass" => Some(Some(Task::Multiclass)),
            "regression" => Some(Some(Task::Regression)),
            "classification" | "auto" => Some(None),
            _ => None,
        }
    }

    /// Whether this is a classification task.
    pub fn is_classification(self) -> bool {
        !matches!(self, Task::Regression)
    }
}

/// How a column is encoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ColumnKind {
    /// Parsed as a number, standardised.
    Numeric,
    /// One-hot encoded by value.
    Categorical,
}

/// How numeric columns are scaled, fitted on the training split only.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum NumericScaling {
    /// Standardisation: `(x − mean) / std` of the training split.
    #[default]
    Standard,
    /// Quantile transformation to a standard normal, as scikit-learn's
    /// `QuantileTransformer(output_distribution='normal')` with the
    /// reference's settings for the FT-Transformer (rtdl-revisiting-models
    /// `lib/data.py`): `max(min(N_train / 30, 1000), 10)` quantiles, fitted
    /// on the training values plus Gaussian noise of standard deviation
    /// `1e-3 / max(std, 1e-3)` (which breaks ties of discrete columns),
    /// ranks clipped to [1e-7, 1 − 1e-7] before the normal quantile.
    QuantileNormal,
}

impl NumericScaling {
    /// Parses `standard` or `quantile-normal` (also `quantile`).
    pub fn parse(name: &str) -> Option<NumericScaling> {
        match name.to_ascii_lowercase().as_str() {
            "standard" => Some(NumericScaling::Standard),
            "quantile-normal" | "quantile_normal" | "quantile" => {
                Some(NumericScaling::QuantileNormal)
            }
            _ => None,
        }
    }
}

/// The scaling of one numeric column, fitted on training values.
#[derive(Debug, Clone)]
enum Scale {
    Standard {
        mean: f64,
        std: f64,
    },
    /// Training quantiles at evenly spaced ranks 0..1.
    QuantileNormal {
        quantiles: Vec<f64>,
    },
}

/// The rank clip of scikit-learn's `QuantileTransformer` (BOUNDS_THRESHOLD).
const QUANTILE_BOUND: f64 = 1e-7;

impl Scale {
    /// Fits a quantile-normal scale on `values` (the training split's
    /// present values), with the reference's noise drawn from `seed`.
    fn quantile_normal(values: &[f64], seed: u64) -> Scale {
        use rand::SeedableRng;
        use rand_distr::{Distribution, StandardNormal};
        let n = values.len();
        if n == 0 {
            return Scale::QuantileNormal {
                quantiles: vec![0.0],
            };
        }
        let mean = values.iter().sum::<f64>() / n as f64;
        let std = (values.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / n as f64).sqrt();
        let noise_std = 1e-3 / std.max(1e-3);
        let mut rng = rand::rngs::SmallRng::seed_from_u64(seed);
        let mut noisy: Vec<f64> = values
            .iter()
            .map(|v| {
                let z: f64 = StandardNormal.sample(&mut rng);
                v + noise_std * z
            })
            .collect();
        noisy.sort_by(f64::total_cmp);
        let count = (n / 30).clamp(10, 1000).min(n);
        // numpy's linear percentile at each rank.
        let quantiles = (0..count)
            .map(|i| {
                let rank = if count == 1 {
                    0.0
                } else {
                    i as f64 / (count - 1) as f64
                };
                let pos = rank * (n - 1) as f64;
                let (lo, frac) = (pos.floor() as usize, pos.fract());
                let hi = (lo + 1).min(n - 1);
                noisy[lo] + frac * (noisy[hi] - noisy[lo])
            })
            .collect();
        Scale::QuantileNormal { quantiles }
    }

    fn apply(&self, v: f64) -> f64 {
        match self {
            Scale::Standard { mean, std } => (v - mean) / std,
            Scale::QuantileNormal { quantiles } => normal_quantile(
                quantile_rank(quantiles, v).clamp(QUANTILE_BOUND, 1.0 - QUANTILE_BOUND),
            ),
        }
    }
}

/// The rank of `v` among `quantiles` (at evenly spaced ranks), as
/// scikit-learn interpolates it: the mean of the interpolation from below
/// and from above, so a run of equal quantiles maps to its middle rank;
/// 0 below the first quantile, 1 above the last.
fn quantile_rank(quantiles: &[f64], v: f64) -> f64 {
    let n = quantiles.len();
    if n < 2 {
        return 0.5;
    }
    let rank = |i: usize| i as f64 / (n - 1) as f64;
    // Forward: the last segment [q_i, q_{i+1}] with q_i <= v.
    let interp = |q: &dyn Fn(usize) -> f64, x: f64| -> f64 {
        if x <= q(0) {
            return 0.0;
        }
        if x >= q(n - 1) {
            return 1.0;
        }
        // First index with q(i) > x (q is non-decreasing).
        let (mut lo, mut hi) = (0, n - 1);
        while hi - lo > 1 {
            let mid = (lo + hi) / 2;
            if q(mid) > x {
                hi = mid;
            } else {
                lo = mid;
            }
        }
        let (a, b) = (q(lo), q(hi));
        if b > a {
            rank(lo) + (x - a) / (b - a) * (rank(hi) - rank(lo))
        } else {
            rank(lo)
        }
    };
    let forward = interp(&|i| quantiles[i], v);
    // Backward: the same on the reversed, negated quantiles.
    let backward = 1.0 - interp(&|i| -quantiles[n - 1 - i], -v);
    0.5 * (forward + backward)
}

/// Φ⁻¹(p), the standard normal quantile, for p in (0, 1): the
/// Abramowitz–Stegun 26.2.23 start (error < 4.5e-4), polished by Newton
/// steps on Φ(x) = erfc(−x/√2)/2 (libm's erfc).
pub fn normal_quantile(p: f64) -> f64 {
    let q = p.min(1.0 - p);
    let t = (-2.0 * q.ln()).sqrt();
    let mut x = t
        - (2.515_517 + 0.802_853 * t + 0.010_328 * t * t)
            / (1.0 + 1.432_788 * t + 0.189_269 * t * t + 0.001_308 * t * t * t);
    if p < 0.5 {
        x = -x;
    }
    for _ in 0..3 {
        let cdf = 0.5 * libm::erfc(-x / std::f64::consts::SQRT_2);
        let pdf = (-0.5 * x * x).exp() / (2.0 * std::f64::consts::PI).sqrt();
        if pdf <= 0.0 {
            break;
        }
        x -= (cdf - p) / pdf;
    }
    x
}

/// How to load a table into a [`Dataset`].
#[derive(Debug, Clone)]
pub struct LoadOptions {
    /// Target column name.
    pub target: String,
    /// Task; `None` infers it from the target column.
    pub task: Option<Task>,
    /// Columns forced to a kind (overrides inference).
    pub column_kinds: HashMap<String, ColumnKind>,
    /// Seed of the splits.
    pub seed: u64,
    /// Share of rows held out for testing.
    pub test_fraction: f64,
    /// Share of rows held out for validation (early stopping).
    pub val_fraction: f64,
    /// Most one-hot columns per categorical feature; rarer training
    /// categories share one "other" column.
    pub max_categories: usize,
    /// Cells that mean "missing" (compared after trimming).
    pub missing_tokens: Vec<String>,
    /// Scaling of numeric columns.
    pub numeric_scaling: NumericScaling,
}

impl LoadOptions {
    /// Defaults for a target: inferred task and kinds, seed 0, 64/16/20
    /// train/validation/test split (as Gorishniy et al. 2021), at most 64
    /// categories per column, missing = `""`, `?`, `NA`, `N/A`, `NaN`,
    /// `null`, `None`.
    pub fn new(target: &str) -> LoadOptions {
        LoadOptions {
            target: target.to_owned(),
            task: None,
            column_kinds: HashMap::new(),
            seed: 0,
            test_fraction: 0.2,
            val_fraction: 0.16,
            max_categories: 64,
            missing_tokens: ["", "?", "NA", "N/A", "NaN", "nan", "null", "NULL", "None"]
                .iter()
                .map(|s| s.to_string())
                .collect(),
            numeric_scaling: NumericScaling::Standard,
        }
    }
}

/// Features and targets of one split.
#[derive(Debug, Clone)]
pub struct Split {
    /// Encoded features, (rows, features).
    pub x: Array2<f32>,
    /// Targets: class index (classification) or standardised value
    /// (regression, see [`Dataset::target_scale`]).
    pub y: Array1<f32>,
}

impl Split {
    /// Number of rows.
    pub fn rows(&self) -> usize {
        self.x.nrows()
    }
}

/// Mean and deviation used to standardise a regression target (identity for
/// classification).
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct TargetScale {
    /// Training mean.
    pub mean: f64,
    /// Training standard deviation.
    pub std: f64,
}

impl TargetScale {
    /// Back to the original units.
    pub fn unscale(&self, v: f64) -> f64 {
        v * self.std + self.mean
    }
}

/// How one input column was encoded.
#[derive(Debug, Clone, Serialize)]
pub struct ColumnSummary {
    /// Column name.
    pub name: String,
    /// Kind used.
    pub kind: ColumnKind,
    /// Missing cells over all rows.
    pub missing: usize,
    /// Encoded features it produced.
    pub features: usize,
}

/// What loading did.
#[derive(Debug, Clone, Serialize)]
pub struct LoadSummary {
    /// Where the data came from.
    pub source: String,
    /// Data rows read.
    pub rows_read: usize,
    /// Rows dropped because their target was missing.
    pub rows_dropped: usize,
    /// Input columns.
    pub columns: Vec<ColumnSummary>,
}

/// A dataset ready for training: encoded, split, standardised.
#[derive(Debug, Clone)]
pub struct Dataset {
    /// Short name (bundled name or file stem).
    pub name: String,
    /// What is predicted.
    pub task: Task,
    /// Target column.
    pub target: String,
    /// Class names in index order (empty for regression).
    pub classes: Vec<String>,
    /// Names of the encoded features, e.g. `age`, `workclass=Private`.
    pub feature_names: Vec<String>,
    /// Training split.
    pub train: Split,
    /// Validation split (early stopping, model selection).
    pub val: Split,
    /// Test split (reported metrics).
    pub test: Split,
    /// Scale of the regression target.
    pub target_scale: TargetScale,
    /// What loading did.
    pub summary: LoadSummary,
}

impl Dataset {
    /// The sizes that decide a network's kernels on this data (what the
    /// kernel plan and the energy model need of it).
    pub fn shape(&self) -> nn_plan::DatasetShape {
        nn_plan::DatasetShape {
            inputs: self.n_features(),
            outputs: self.n_outputs(),
            regression: self.task == Task::Regression,
            train_rows: self.train.rows(),
            val_rows: self.val.rows(),
            test_rows: self.test.rows(),
        }
    }

    /// Encoded columns of each input feature, in input order, as an
    /// FT-Transformer's tokenizer reads them (`nn_plan::Backbone::
    /// FtTransformer`'s `feature_widths`): a categorical column is one
    /// feature over its one-hot block; a numeric column is one feature, and
    /// its missing-value indicator (when it has one) another.
    pub fn feature_widths(&self) -> Vec<usize> {
        self.summary
            .columns
            .iter()
            .flat_map(|c| match c.kind {
                ColumnKind::Categorical => vec![c.features],
                ColumnKind::Numeric => vec![1; c.features],
            })
            .collect()
    }

    /// Encoded input width.
    pub fn n_features(&self) -> usize {
        self.feature_names.len()
    }

    /// Model outputs: classes for classification, 1 for regression.
    pub fn n_outputs(&self) -> usize {
        match self.task {
            Task::Regression => 1,
            _ => self.classes.len(),
        }
    }

    /// Loads a CSV/TSV file (gzipped or not).
    pub fn from_file(path: &Path, opts: &LoadOptions) -> Result<Dataset, DataError> {
        let table = read_table(path)?;
        let name = path
            .file_name()
            .and_then(|n| n.to_str())
            .map(|n| n.split('.').next().unwrap_or(n).to_owned())
            .unwrap_or_else(|| "data".to_owned());
        Dataset::from_table(&name, &table, opts)
    }

    /// Types, encodes and splits a table.
    pub fn from_table(
        name: &str,
        table: &RawTable,
        opts: &LoadOptions,
    ) -> Result<Dataset, DataError> {
        prepare(name, table, opts)
    }
}

/// Parses a cell as a finite number.
fn parse_number(cell: &str) -> Option<f64> {
    cell.parse::<f64>().ok().filter(|v| v.is_finite())
}

/// Share of non-missing values that must parse as numbers for a column to
/// be inferred numeric when a few do not (those then are errors, since a
/// stray word in a numeric column is far likelier a data error than a
/// category).
const NUMERIC_MAJORITY: f64 = 0.95;

/// Numeric targets with at most this many distinct integer values are
/// classes; more make a regression.
const MAX_INFERRED_CLASSES: usize = 32;

fn prepare(name: &str, table: &RawTable, opts: &LoadOptions) -> Result<Dataset, DataError> {
    let path = table.source.as_str();
    let unknown = |n: &str| DataError::UnknownColumn {
        path: path.to_owned(),
        name: n.to_owned(),
        available: table.header.join(", "),
    };
    let target_col = table
        .column_index(&opts.target)
        .ok_or_else(|| unknown(&opts.target))?;
    let mut forced: HashMap<usize, ColumnKind> = HashMap::new();
    for (col, &kind) in &opts.column_kinds {
        forced.insert(table.column_index(col).ok_or_else(|| unknown(col))?, kind);
    }
    let is_missing = |cell: &str| opts.missing_tokens.iter().any(|t| t == cell);

    // Rows with a target.
    let kept: Vec<usize> = (0..table.rows.len())
        .filter(|&r| !is_missing(&table.rows[r][target_col]))
        .collect();
    let rows_dropped = table.rows.len() - kept.len();
    if rows_dropped > 0 {
        tracing::warn!(rows_dropped, "{path}: dropped rows whose target is missing");
    }

    // Target: task, classes, values.
    let (task, classes, y_all) = encode_target(table, target_col, &kept, opts)?;

    // Splits over the kept rows (positions into `kept`).
    const MIN_ROWS: usize = 10;
    if kept.len() < MIN_ROWS {
        return Err(DataError::TooFewRows {
            path: path.to_owned(),
            rows: kept.len(),
            needed: MIN_ROWS,
        });
    }
    let (train_idx, val_idx, test_idx) = split_indices(task, &y_all, opts);

    // Input columns.
    let mut feature_names = Vec::new();
    let mut encoders = Vec::new();
    let mut columns = Vec::new();
    for col in 0..table.header.len() {
        if col == target_col {
            continue;
        }
        let cell = |pos: usize| table.rows[kept[pos]][col].as_str();
        let missing = (0..kept.len()).filter(|&p| is_missing(cell(p))).count();
        let kind = column_kind(table, col, &kept, forced.get(&col).copied(), &is_missing)?;
        let encoder = match kind {
            ColumnKind::Numeric => {
                let (mut sum, mut n) = (0.0f64, 0usize);
                for &p in &train_idx {
                    if let Some(v) = parse_number(cell(p)) {
                        sum += v;
                        n += 1;
                    }
                }
                let mean = if n > 0 { sum / n as f64 } else { 0.0 };
                let var = train_idx
                    .iter()
                    .filter_map(|&p| parse_number(cell(p)))
                    .map(|v| (v - mean) * (v - mean))
                    .sum::<f64>()
                    / n.max(1) as f64;
                let std = if var.sqrt() > 1e-12 { var.sqrt() } else { 1.0 };
                let scale = match opts.numeric_scaling {
                    NumericScaling::Standard => Scale::Standard { mean, std },
                    NumericScaling::QuantileNormal => {
                        let present: Vec<f64> = train_idx
                            .iter()
                            .filter_map(|&p| parse_number(cell(p)))
                            .collect();
                        // One noise stream per column, from the split seed.
                        Scale::quantile_normal(&present, opts.seed ^ (col as u64) << 32)
                    }
                };
                feature_names.push(table.header[col].clone());
                if missing > 0 {
                    feature_names.push(format!("{}=missing", table.header[col]));
                }
                Encoder::Numeric {
                    col,
                    scale,
                    indicator: missing > 0,
                }
            }
            ColumnKind::Categorical => {
                let mut counts: HashMap<&str, usize> = HashMap::new();
                for &p in &train_idx {
                    let c = cell(p);
                    let c = if is_missing(c) { MISSING_CATEGORY } else { c };
                    *counts.entry(c).or_default() += 1;
                }
                let mut cats: Vec<(&str, usize)> = counts.into_iter().collect();
                cats.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(b.0)));
                let limit = opts.max_categories.max(2);
                let other = cats.len() > limit;
                if other {
                    cats.truncate(limit - 1);
                }
                let index: HashMap<String, usize> = cats
                    .iter()
                    .enumerate()
                    .map(|(i, (c, _))| (c.to_string(), i))
                    .collect();
                for (c, _) in &cats {
                    feature_names.push(format!("{}={}", table.header[col], c));
                }
                if other {
                    feature_names.push(format!("{}=other", table.header[col]));
                }
                Encoder::Categorical { col, index, other }
            }
        };
        columns.push(ColumnSummary {
            name: table.header[col].clone(),
            kind,
            missing,
            features: encoder.width(),
        });
        encoders.push(encoder);
    }

    let width = feature_names.len();
    let encode = |positions: &[usize]| -> Split {
        let mut x = Array2::<f32>::zeros((positions.len(), width));
        for (r, &p) in positions.iter().enumerate() {
            let row = &table.rows[kept[p]];
            let mut offset = 0;
            for enc in &encoders {
                enc.encode(row, &is_missing, &mut x.row_mut(r), offset);
                offset += enc.width();
            }
        }
        let y = positions.iter().map(|&p| y_all[p]).collect::<Array1<f64>>();
        Split {
            x,
            y: y.mapv(|v| v as f32),
        }
    };
    let mut train = encode(&train_idx);
    let mut val = encode(&val_idx);
    let mut test = encode(&test_idx);

    let target_scale = if task == Task::Regression {
        let n = train_idx.len() as f64;
        let mean = train_idx.iter().map(|&p| y_all[p]).sum::<f64>() / n;
        let var = train_idx
            .iter()
            .map(|&p| (y_all[p] - mean).powi(2))
            .sum::<f64>()
            / n;
        let std = if var.sqrt() > 1e-12 { var.sqrt() } else { 1.0 };
        for (split, idx) in [
            (&mut train, &train_idx),
            (&mut val, &val_idx),
            (&mut test, &test_idx),
        ] {
            split.y = idx
                .iter()
                .map(|&p| ((y_all[p] - mean) / std) as f32)
                .collect();
        }
        TargetScale { mean, std }
    } else {
        TargetScale {
            mean: 0.0,
            std: 1.0,
        }
    };

    Ok(Dataset {
        name: name.to_owned(),
        task,
        target: table.header[target_col].clone(),
        classes,
        feature_names,
        train,
        val,
        test,
        target_scale,
        summary: LoadSummary {
            source: path.to_owned(),
            rows_read: table.rows.len(),
            rows_dropped,
            columns,
        },
    })
}

/// Category name of missing cells in a categorical column.
const MISSING_CATEGORY: &str = "<missing>";

enum Encoder {
    Numeric {
        col: usize,
        scale: Scale,
        indicator: bool,
    },
    Categorical {
        col: usize,
        index: HashMap<String, usize>,
        other: bool,
    },
}

impl Encoder {
    fn width(&self) -> usize {
        match self {
            Encoder::Numeric { indicator, .. } => 1 + usize::from(*indicator),
            Encoder::Categorical { index, other, .. } => index.len() + usize::from(*other),
        }
    }

    fn encode(
        &self,
        row: &[String],
        is_missing: &dyn Fn(&str) -> bool,
        out: &mut ndarray::ArrayViewMut1<f32>,
        offset: usize,
    ) {
        match self {
            Encoder::Numeric {
                col,
                scale,
                indicator,
            } => {
                // Missing (or, in validation/test, unparsable) values take the
                // training mean, i.e. 0 after standardisation, flagged by the
                // indicator feature.
                match parse_number(&row[*col]) {
                    Some(v) => out[offset] = scale.apply(v) as f32,
                    None => {
                        out[offset] = 0.0;
                        if *indicator {
                            out[offset + 1] = 1.0;
                        }
                    }
                }
            }
            Encoder::Categorical { col, index, other } => {
                let c = row[*col].as_str();
                let c = if is_missing(c) { MISSING_CATEGORY } else { c };
                match index.get(c) {
                    Some(&i) => out[offset + i] = 1.0,
                    // Categories unseen in training stay all-zero unless
                    // there is an "other" column for the rare ones.
                    None if *other => out[offset + index.len()] = 1.0,
                    None => {}
                }
            }
        }
    }
}

fn column_kind(
    table: &RawTable,
    col: usize,
    kept: &[usize],
    forced: Option<ColumnKind>,
    is_missing: &dyn Fn(&str) -> bool,
) -> Result<ColumnKind, DataError> {
    if forced == Some(ColumnKind::Categorical) {
        return Ok(ColumnKind::Categorical);
    }
    let mut present = 0usize;
    let mut numeric = 0usize;
    let mut first_bad = None;
    for &r in kept {
        let cell = table.rows[r][col].as_str();
        if is_missing(cell) {
            continue;
        }
        present += 1;
        if parse_number(cell).is_some() {
            numeric += 1;
        } else if first_bad.is_none() {
            first_bad = Some(r);
        }
    }
    let bad_error = |r: usize, why: String| DataError::NonNumeric {
        path: table.source.clone(),
        line: table.lines[r],
        column: table.header[col].clone(),
        column_number: col + 1,
        value: table.rows[r][col].clone(),
        why,
    };
    match (forced, first_bad) {
        (_, None) if present > 0 => Ok(ColumnKind::Numeric),
        (Some(ColumnKind::Numeric), Some(r)) => Err(bad_error(r, "asked for".into())),
        (Some(ColumnKind::Numeric), None) => Ok(ColumnKind::Numeric),
        (_, Some(r)) if numeric as f64 >= NUMERIC_MAJORITY * present as f64 => Err(bad_error(
            r,
            format!("{numeric} of its {present} values are numbers"),
        )),
        _ => Ok(ColumnKind::Categorical),
    }
}

type EncodedTarget = (Task, Vec<String>, Vec<f64>);

fn encode_target(
    table: &RawTable,
    col: usize,
    kept: &[usize],
    opts: &LoadOptions,
) -> Result<EncodedTarget, DataError> {
    let path = &table.source;
    let cells: Vec<&str> = kept.iter().map(|&r| table.rows[r][col].as_str()).collect();
    let numbers: Vec<Option<f64>> = cells.iter().map(|c| parse_number(c)).collect();
    let all_numeric = numbers.iter().all(Option::is_some);
    let mismatch = |message: String| DataError::TaskMismatch {
        path: path.clone(),
        target: table.header[col].clone(),
        message,
    };

    // Distinct labels, numeric ones by value (so "1" and "1.0" agree).
    let mut distinct: BTreeMap<LabelKey, String> = BTreeMap::new();
    for (c, n) in cells.iter().zip(&numbers) {
        let key = match (all_numeric, n) {
            (true, Some(v)) => LabelKey::Number(OrdF64(*v)),
            _ => LabelKey::Text(c.to_string()),
        };
        distinct.entry(key).or_insert_with(|| c.to_string());
    }
    if distinct.len() < 2 {
        return Err(DataError::ConstantTarget {
            path: path.clone(),
            target: table.header[col].clone(),
            column_number: col + 1,
            value: distinct.values().next().cloned().unwrap_or_default(),
        });
    }
    let integer_valued = all_numeric && numbers.iter().flatten().all(|v| v.fract() == 0.0);
    let task = match opts.task {
        Some(Task::Regression) => {
            if let Some(p) = numbers.iter().position(Option::is_none) {
                return Err(DataError::NonNumeric {
                    path: path.clone(),
                    line: table.lines[kept[p]],
                    column: table.header[col].clone(),
                    column_number: col + 1,
                    value: cells[p].to_owned(),
                    why: "it is the target of a regression".into(),
                });
            }
            Task::Regression
        }
        Some(Task::Binary) if distinct.len() != 2 => {
            return Err(mismatch(format!(
                "binary classification asked for, but it has {} classes",
                distinct.len()
            )))
        }
        Some(t) => t,
        None if all_numeric && !(integer_valued && distinct.len() <= MAX_INFERRED_CLASSES) => {
            Task::Regression
        }
        None if distinct.len() == 2 => Task::Binary,
        None => Task::Multiclass,
    };
    if task == Task::Regression {
        return Ok((
            task,
            Vec::new(),
            numbers.into_iter().map(|v| v.unwrap_or(0.0)).collect(),
        ));
    }
    if task == Task::Multiclass && distinct.len() == 2 {
        tracing::info!("{path}: two classes; treating multiclass as binary");
    }
    let task = if distinct.len() == 2 {
        Task::Binary
    } else {
        Task::Multiclass
    };
    let index: BTreeMap<&LabelKey, usize> =
        distinct.keys().enumerate().map(|(i, k)| (k, i)).collect();
    let y = cells
        .iter()
        .zip(&numbers)
        .map(|(c, n)| {
            let key = match (all_numeric, n) {
                (true, Some(v)) => LabelKey::Number(OrdF64(*v)),
                _ => LabelKey::Text(c.to_string()),
            };
            index[&key] as f64
        })
        .collect();
    Ok((task, distinct.into_values().collect(), y))
}

#[derive(Debug, Clone, Copy, PartialEq)]
struct OrdF64(f64);
impl Eq for OrdF64 {}
impl PartialOrd for OrdF64 {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for OrdF64 {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.0.total_cmp(&other.0)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
enum LabelKey {
    Number(OrdF64),
    Text(String),
}

/// Seeded train/validation/test positions; stratified by class for
/// classification, so each split keeps the class proportions.
fn split_indices(
    task: Task,
    y: &[f64],
    opts: &LoadOptions,
) -> (Vec<usize>, Vec<usize>, Vec<usize>) {
    let mut rng = StdRng::seed_from_u64(opts.seed);
    let groups: Vec<Vec<usize>> = if task.is_classification() {
        let classes = y.iter().fold(0usize, |m, &v| m.max(v as usize + 1));
        let mut g = vec![Vec::new(); classes];
        for (i, &v) in y.iter().enumerate() {
            g[v as usize].push(i);
        }
        g
    } else {
        vec![(0..y.len()).collect()]
    };
    let (mut train, mut val, mut test) = (Vec::new(), Vec::new(), Vec::new());
    for mut group in groups {
        group.shuffle(&mut rng);
        let n = group.len();
        let n_test = ((n as f64 * opts.test_fraction).round() as usize).min(n);
        let n_val = ((n as f64 * opts.val_fraction).round() as usize).min(n - n_test);
        test.extend_from_slice(&group[..n_test]);
        val.extend_from_slice(&group[n_test..n_test + n_val]);
        train.extend_from_slice(&group[n_test + n_val..]);
    }
    // Every split needs a row; borrow from train when rounding left one empty.
    for split in [&mut val, &mut test] {
        if split.is_empty() {
            if let Some(p) = train.pop() {
                split.push(p);
            }
        }
    }
    train.shuffle(&mut rng);
    val.shuffle(&mut rng);
    test.shuffle(&mut rng);
    (train, val, test)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table(text: &str) -> RawTable {
        read_table_bytes("t.csv", text.as_bytes()).expect("reads")
    }

    fn rows(n: usize, f: impl Fn(usize) -> String) -> String {
        (0..n).map(f).collect::<Vec<_>>().join("\n")
    }

    #[test]
    fn encodes_mixed_columns_with_missing_values() {
        let text = format!(
            "age, color, income, label\n{}",
            rows(100, |i| format!(
                "{}, {}, {}, {}",
                if i % 10 == 3 {
                    "?".to_string()
                } else {
                    (20 + i % 40).to_string()
                },
                ["red", "green", "blue", ""][i % 4],
                i * 10,
                if i % 3 == 0 { ">50K" } else { "<=50K" }
            ))
        );
        let ds =
            Dataset::from_table("t", &table(&text), &LoadOptions::new("label")).expect("loads");
        assert_eq!(ds.task, Task::Binary);
        assert_eq!(ds.classes, ["<=50K", ">50K"]);
        // age + age=missing, 4 colors (one is <missing>), income.
        assert_eq!(ds.n_features(), 2 + 4 + 1, "{:?}", ds.feature_names);
        assert!(ds.feature_names.contains(&"color=<missing>".to_string()));
        // FT-Transformer features: age, its missing indicator, color's
        // one-hot block, income, over the columns in that order.
        assert_eq!(ds.feature_widths(), [1, 1, 4, 1]);
        assert!(ds.feature_names[2..6]
            .iter()
            .all(|n| n.starts_with("color=")));
        assert_eq!(ds.train.rows() + ds.val.rows() + ds.test.rows(), 100);
        assert_eq!(ds.test.rows(), 20);
        // Standardised on train: training mean of each numeric column is ~0.
        let income = ds
            .feature_names
            .iter()
            .position(|n| n == "income")
            .expect("income");
        let mean = ds.train.x.column(income).mean().expect("rows");
        assert!(mean.abs() < 1e-5, "{mean}");
        // One-hot rows sum to one over the color block.
        for r in 0..ds.train.rows() {
            let s: f32 = (2..6).map(|c| ds.train.x[[r, c]]).sum();
            assert_eq!(s, 1.0);
        }
    }

    #[test]
    fn splits_are_seeded_and_stratified() {
        let text = format!(
            "x,y\n{}",
            rows(200, |i| format!(
                "{i},{}",
                if i % 4 == 0 { "a" } else { "b" }
            ))
        );
        let t = table(&text);
        let a = Dataset::from_table("t", &t, &LoadOptions::new("y")).expect("loads");
        let b = Dataset::from_table("t", &t, &LoadOptions::new("y")).expect("loads");
        assert_eq!(a.test.x, b.test.x);
        let mut other = LoadOptions::new("y");
        other.seed = 1;
        let c = Dataset::from_table("t", &t, &other).expect("loads");
        assert_ne!(a.test.x, c.test.x);
        // 25 % of class "a" in every split.
        for s in [&a.train, &a.val, &a.test] {
            let share = s.y.iter().filter(|&&v| v == 0.0).count() as f64 / s.rows() as f64;
            assert!((share - 0.25).abs() < 0.02, "{share}");
        }
    }

    #[test]
    fn regression_target_is_standardised_and_inferred() {
        let text = format!(
            "x,y\n{}",
            rows(100, |i| format!("{i},{}", i as f64 * 1.5 + 0.25))
        );
        let ds = Dataset::from_table("t", &table(&text), &LoadOptions::new("y")).expect("loads");
        assert_eq!(ds.task, Task::Regression);
        assert_eq!(ds.n_outputs(), 1);
        assert!(ds.target_scale.std > 1.0);
        let back = ds.target_scale.unscale(f64::from(ds.test.y[0]));
        assert!((back - 0.25).rem_euclid(1.5) < 1e-3 || (back - 0.25).rem_euclid(1.5) > 1.499);
    }

    #[test]
    fn unknown_target_lists_the_columns() {
        let err = Dataset::from_table("t", &table("a,b\n1,2\n"), &LoadOptions::new("salary"))
            .expect_err("unknown");
        let msg = err.to_string();
        assert!(matches!(err, DataError::UnknownColumn { .. }));
        assert!(
            msg.contains("t.csv") && msg.contains("salary") && msg.contains("a, b"),
            "{msg}"
        );
    }

    #[test]
    fn constant_target_is_an_error() {
        let text = format!("a,b\n{}", rows(20, |i| format!("{i},yes")));
        let err =
            Dataset::from_table("t", &table(&text), &LoadOptions::new("b")).expect_err("constant");
        let msg = err.to_string();
        assert!(
            matches!(
                err,
                DataError::ConstantTarget {
                    column_number: 2,
                    ..
                }
            ),
            "{msg}"
        );
        assert!(msg.contains("t.csv") && msg.contains("yes"), "{msg}");
    }

    #[test]
    fn non_numeric_value_in_numeric_column_names_line_and_column() {
        // Inferred numeric (99 of 100 values are numbers): the stray word is an error.
        let text = format!(
            "a,b,y\n{}",
            rows(100, |i| format!(
                "{i},{},{}",
                if i == 41 { "abc".into() } else { i.to_string() },
                i % 2
            ))
        );
        let err = Dataset::from_table("t", &table(&text), &LoadOptions::new("y")).expect_err("bad");
        let msg = err.to_string();
        assert!(
            matches!(&err, DataError::NonNumeric { line: 43, column_number: 2, value, .. } if value == "abc"),
            "{msg}"
        );
        assert!(
            msg.contains("t.csv") && msg.contains("line 43") && msg.contains("column 2"),
            "{msg}"
        );

        // Forced numeric: any word is an error.
        let text = "a,y\n1,0\nx,1\n3,0\n4,1\n5,0\n6,1\n7,0\n8,1\n9,0\n10,1\n";
        let mut opts = LoadOptions::new("y");
        opts.column_kinds.insert("a".into(), ColumnKind::Numeric);
        let err = Dataset::from_table("t", &table(text), &opts).expect_err("bad");
        assert!(
            matches!(err, DataError::NonNumeric { line: 3, .. }),
            "{err}"
        );
        // Forced categorical: fine.
        opts.column_kinds
            .insert("a".into(), ColumnKind::Categorical);
        assert!(Dataset::from_table("t", &table(text), &opts).is_ok());
    }

    #[test]
    fn raw_files_load_as_they_are() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../data");
        let adult = Dataset::from_file(&root.join("adult.tsv.gz"), &LoadOptions::new("target"))
            .expect("adult");
        assert_eq!(adult.task, Task::Binary);
        let housing = Dataset::from_file(
            &root.join("california_housing.csv.gz"),
            &LoadOptions::new("median_house_value"),
        )
        .expect("housing");
        assert_eq!(housing.task, Task::Regression);
        let bedrooms = housing
            .summary
            .columns
            .iter()
            .find(|c| c.name == "total_bedrooms")
            .expect("column");
        assert_eq!(
            (bedrooms.kind, bedrooms.missing),
            (ColumnKind::Numeric, 207)
        );
        let ocean = housing
            .summary
            .columns
            .iter()
            .find(|c| c.name == "ocean_proximity")
            .expect("column");
        assert_eq!(ocean.kind, ColumnKind::Categorical);
    }

    /// Φ⁻¹ at known points (the normal table) and through Φ.
    #[test]
    fn normal_quantile_inverts_the_normal_cdf() {
        assert!(normal_quantile(0.5).abs() < 1e-12);
        assert!((normal_quantile(0.975) - 1.959_963_984_540_054).abs() < 1e-9);
        assert!((normal_quantile(0.025) + 1.959_963_984_540_054).abs() < 1e-9);
        assert!((normal_quantile(0.841_344_746_068_543) - 1.0).abs() < 1e-9);
        assert!((normal_quantile(1e-7) + 5.199_337_582_192_817).abs() < 1e-7);
    }

    /// Ranks as scikit-learn's `QuantileTransformer` interpolates them:
    /// linear between quantiles, the middle of a run of equal quantiles,
    /// 0 and 1 outside.
    #[test]
    fn quantile_ranks_by_hand() {
        let q = [0.0, 1.0, 1.0, 1.0, 4.0];
        assert_eq!(quantile_rank(&q, -3.0), 0.0);
        assert_eq!(quantile_rank(&q, 9.0), 1.0);
        assert!((quantile_rank(&q, 0.5) - 0.125).abs() < 1e-12);
        // The run of 1s spans ranks 0.25..0.75: its middle.
        assert!((quantile_rank(&q, 1.0) - 0.5).abs() < 1e-12);
        assert!((quantile_rank(&q, 2.5) - 0.875).abs() < 1e-12);
    }

    /// Fitted on the training split only, the transform of a skewed
    /// column is close to standard normal there (mean 0, sd 1, the
    /// median at 0), and a value beyond the training range is clipped at
    /// Φ⁻¹(1 − 1e-7), never infinite.
    #[test]
    fn quantile_normal_scaling_normalises_a_skewed_column() {
        let text = format!(
            "x, label\n{}",
            rows(3000, |i| format!(
                "{}, {}",
                ((i * 7919) % 3001).pow(3),
                i % 2
            ))
        );
        let mut opts = LoadOptions::new("label");
        opts.numeric_scaling = NumericScaling::QuantileNormal;
        let ds = Dataset::from_table("t", &table(&text), &opts).expect("loads");
        let x = ds.train.x.column(0);
        let n = x.len() as f64;
        let mean = x.iter().map(|&v| f64::from(v)).sum::<f64>() / n;
        let sd = (x
            .iter()
            .map(|&v| (f64::from(v) - mean).powi(2))
            .sum::<f64>()
            / n)
            .sqrt();
        assert!(mean.abs() < 0.05, "mean {mean}");
        assert!((sd - 1.0).abs() < 0.1, "sd {sd}");
        assert!(x.iter().all(|v| v.is_finite() && v.abs() <= 5.2));
        assert_eq!(
            NumericScaling::parse("quantile-normal"),
            Some(NumericScaling::QuantileNormal)
        );
        assert_eq!(
            NumericScaling::parse("standard"),
            Some(NumericScaling::Standard)
        );
        assert_eq!(NumericScaling::parse("minmax"), None);
    }
}
