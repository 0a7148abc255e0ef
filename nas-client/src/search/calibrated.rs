//! Calibrated searches: a candidate's energy predicted from a per-kernel
//! calibration of this machine instead of (or before) measuring it.
//!
//! The calibration crate owns the calibration file, its machine check and
//! the pricing of a network's kernel plan; it depends on this crate (it
//! microbenchmarks our kernels), so this crate cannot link it. Predictions
//! therefore come from `calibration predict` run as a co-process: one JSON
//! network description per line in, one JSON prediction per line out
//! ([`Predictor`]). The description ([`NetworkQuery`]) is built from exactly
//! the `nas-client train` flags a trial's child process gets, parsed by the
//! same code ([`crate::train_cli`]), so the prediction prices the network
//! that is trained. A test of the calibration crate decodes a
//! [`NetworkQuery`] as its `NetworkDescription`: the two cannot drift apart.
//!
//! Three uses, all behind `--calibration FILE`:
//! - [`CalibratedEvaluator`]: the energy objectives are predicted
//!   (`predicted_inference_energy_j_per_1k`, `predicted_training_energy_j`);
//!   the trial still trains (accuracy needs it) and energyd still measures
//!   the training phase (what the search spent), but the inference phase is
//!   a single timed pass with no energy window.
//! - [`Prescreen`]: a strategy wrapper that prices each new candidate before
//!   it is trained and redraws candidates that cannot reach the front
//!   cheaply (see [`Prescreen`] for the rule).
//! - [`measure_front`]: after the search, the predicted front is trained
//!   again with energyd measuring, and the measured figures are stored next
//!   to the predicted ones in the same trials.
//!
//! Every predicted figure is labelled `estimated`, whatever the calibration
//! was measured with: a model's output is never a measurement.

use super::trainer::{metric, TrainingEvaluator};
use crate::data::{Dataset, Task};
use crate::model::ModelSpec;
use crate::train::{OptimizerKind, TrainConfig};
use crate::train_cli::{config_from, parse_train_flags};
use anyhow::{bail, Context, Result};
use nas_search::evaluator::{EvalError, Evaluator, TrialResult};
use nas_search::objective::{Metrics, ObjectiveSet};
use nas_search::runner::front_indices;
use nas_search::space::Config;
use nas_search::strategy::{Ask, History, Strategy, FULL_FIDELITY};
use nas_search::study::{Study, TrialRecord, TrialStatus};
use rand::rngs::StdRng;
use serde::{Deserialize, Serialize};
use shared::Provenance;
use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

/// The sizes of a dataset that decide a network's kernels.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DatasetShape {
    /// Encoded input features.
    pub inputs: usize,
    /// Model outputs (classes, or 1 for regression).
    pub outputs: usize,
    /// Regression (MSE loss).
    pub regression: bool,
    /// Rows of the training split.
    pub train_rows: usize,
    /// Rows of the validation split.
    pub val_rows: usize,
    /// Rows of the test split.
    pub test_rows: usize,
}

impl DatasetShape {
    /// The shape of a loaded dataset.
    pub fn of(ds: &Dataset) -> DatasetShape {
        DatasetShape {
            inputs: ds.n_features(),
            outputs: ds.n_outputs(),
            regression: ds.task == Task::Regression,
            train_rows: ds.train.rows(),
            val_rows: ds.val.rows(),
            test_rows: ds.test.rows(),
        }
    }
}

/// What `calibration predict` needs to price a training run and its
/// inference: the JSON form of the calibration crate's
/// `NetworkDescription` (same fields, same names).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct NetworkQuery {
    /// The model.
    pub model: ModelSpec,
    /// Encoded input features.
    pub inputs: usize,
    /// Model outputs.
    pub outputs: usize,
    /// Regression rather than classification.
    pub regression: bool,
    /// Optimizer.
    pub optimizer: OptimizerKind,
    /// Rows per training step.
    pub batch_size: usize,
    /// Rows per forward pass in evaluation and inference.
    pub eval_batch_size: usize,
    /// Epochs trained.
    pub epochs: usize,
    /// Rows of the training split.
    pub train_rows: usize,
    /// Rows of the validation split.
    pub val_rows: usize,
    /// Rows of the test split.
    pub test_rows: usize,
    /// Threads of the run.
    pub threads: u32,
}

impl NetworkQuery {
    /// The query for `config` trained on data of `shape` for `epochs`.
    pub fn new(config: &TrainConfig, shape: &DatasetShape, epochs: usize) -> NetworkQuery {
        NetworkQuery {
            model: config.model.clone(),
            inputs: shape.inputs,
            outputs: shape.outputs,
            regression: shape.regression,
            optimizer: config.optimizer,
            batch_size: config.batch_size,
            eval_batch_size: config.eval_batch_size,
            epochs: epochs.max(1),
            train_rows: shape.train_rows,
            val_rows: shape.val_rows,
            test_rows: shape.test_rows,
            threads: config.threads.max(1) as u32,
        }
    }
}

/// One answer of `calibration predict` (its `NetworkEnergyPrediction`).
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct Prediction {
    /// Energy of the whole training run, joules.
    pub training_j: f64,
    /// One-sigma uncertainty of `training_j`.
    pub training_uncertainty_j: f64,
    /// Inference energy per 1000 rows, joules.
    pub inference_j_per_1000_rows: f64,
    /// One-sigma uncertainty of `inference_j_per_1000_rows`.
    pub inference_uncertainty_j_per_1000_rows: f64,
    /// Provenance of the energy the calibration was fitted on.
    pub provenance: String,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum Answer {
    Prediction(Prediction),
    Error { error: String },
}

struct CoProcess {
    child: Child,
    stdin: Option<ChildStdin>,
    stdout: BufReader<ChildStdout>,
}

/// `calibration predict` as a co-process. Shared by the worker threads of
/// a search (one request at a time, under a lock: a prediction takes well
/// under a millisecond, a trial seconds).
pub struct Predictor {
    process: Mutex<CoProcess>,
    calibration: PathBuf,
}

impl std::fmt::Debug for Predictor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Predictor")
            .field("calibration", &self.calibration)
            .finish_non_exhaustive()
    }
}

/// The `calibration` program to run: `explicit`, else the one next to this
/// executable (where `cargo build` and `cargo install` put it), else
/// `calibration` from `PATH`.
pub fn calibration_program(explicit: Option<&Path>) -> PathBuf {
    if let Some(p) = explicit {
        return p.to_path_buf();
    }
    std::env::current_exe()
        .ok()
        .map(|exe| exe.with_file_name("calibration"))
        .filter(|p| p.is_file())
        .unwrap_or_else(|| PathBuf::from("calibration"))
}

impl Predictor {
    /// Starts `program predict --calibration FILE` (with
    /// `--force-calibration` when `force`) and checks it answers `probe`:
    /// a calibration of another machine, a bad file or one that cannot
    /// price the search's kernels fails here, with the co-process's own
    /// message, before anything is trained.
    pub fn start(
        program: &Path,
        calibration: &Path,
        force: bool,
        probe: &NetworkQuery,
    ) -> Result<Predictor> {
        let mut cmd = Command::new(program);
        cmd.arg("predict").arg("--calibration").arg(calibration);
        if force {
            cmd.arg("--force-calibration");
        }
        let mut child = cmd
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .with_context(|| {
                format!(
                    "starting `{} predict` (the calibration program; --calibration-bin names another)",
                    program.display()
                )
            })?;
        let (Some(stdin), Some(stdout)) = (child.stdin.take(), child.stdout.take()) else {
            bail!(
                "`{} predict`: no pipes to the co-process",
                program.display()
            );
        };
        let predictor = Predictor {
            process: Mutex::new(CoProcess {
                child,
                stdin: Some(stdin),
                stdout: BufReader::new(stdout),
            }),
            calibration: calibration.to_path_buf(),
        };
        predictor
            .predict(probe)
            .map_err(|e| anyhow::anyhow!("calibration {}: {e}", calibration.display()))?;
        Ok(predictor)
    }

    /// The calibration file.
    pub fn calibration(&self) -> &Path {
        &self.calibration
    }

    /// Predicts one network. Errors are the co-process's message (a kernel
    /// the calibration cannot price, an uncalibrated thread count), or say
    /// that it is gone and why.
    pub fn predict(&self, query: &NetworkQuery) -> Result<Prediction, String> {
        let line = serde_json::to_string(query).map_err(|e| format!("encoding the query: {e}"))?;
        let mut p = self.process.lock().unwrap_or_else(|e| e.into_inner());
        let sent = match p.stdin.as_mut() {
            Some(stdin) => writeln!(stdin, "{line}").and_then(|_| stdin.flush()),
            None => Err(std::io::Error::other("closed")),
        };
        let mut answer = String::new();
        let read = sent.and_then(|_| p.stdout.read_line(&mut answer));
        match read {
            Ok(n) if n > 0 => match serde_json::from_str::<Answer>(answer.trim()) {
                Ok(Answer::Prediction(pred)) => Ok(pred),
                Ok(Answer::Error { error }) => Err(error),
                Err(e) => Err(format!("unreadable prediction `{}`: {e}", answer.trim())),
            },
            // End of output or a broken pipe: the co-process is gone; its
            // standard error says why (a refused calibration, most often).
            _ => {
                p.stdin = None;
                let status = p.child.wait().ok();
                let mut stderr = String::new();
                if let Some(mut e) = p.child.stderr.take() {
                    let _ = e.read_to_string(&mut stderr);
                }
                Err(format!(
                    "`calibration predict` exited ({}): {}",
                    status.map_or("unknown status".to_owned(), |s| s.to_string()),
                    stderr.trim()
                ))
            }
        }
    }
}

impl Drop for Predictor {
    fn drop(&mut self) {
        let p = self.process.get_mut().unwrap_or_else(|e| e.into_inner());
        // Closing its input ends the co-process.
        p.stdin = None;
        let _ = p.child.wait();
    }
}

/// Builds the [`NetworkQuery`] of a trial from the flags of its
/// `nas-client train` child.
#[derive(Debug, Clone)]
pub struct TrialPricer {
    /// The evaluator whose children are priced.
    pub trainer: TrainingEvaluator,
    /// The data's shape.
    pub shape: DatasetShape,
}

impl TrialPricer {
    /// The query for `config` at `fidelity`, trained for `epochs` (the
    /// configured maximum when `None`: before training, early stopping is
    /// not known).
    pub fn query(
        &self,
        config: &Config,
        fidelity: f64,
        epochs: Option<usize>,
    ) -> Result<NetworkQuery, EvalError> {
        let flags = self.trainer.child_flags(config, fidelity, 0)?;
        let train = parse_train_flags(&flags)
            .and_then(|args| config_from(&args))
            .map_err(|e| EvalError::Failed(format!("{e:#}")))?;
        let epochs = epochs.unwrap_or(train.epochs);
        Ok(NetworkQuery::new(&train, &self.shape, epochs))
    }
}

/// Trains each trial (accuracy needs it) and predicts its energy from the
/// calibration; energyd measures the training phase only.
pub struct CalibratedEvaluator {
    /// Builds queries; its trainer runs the trials (with
    /// `measure_inference` off).
    pub pricer: TrialPricer,
    /// The co-process.
    pub predictor: Arc<Predictor>,
}

impl Evaluator for CalibratedEvaluator {
    fn evaluate(
        &self,
        config: &Config,
        fidelity: f64,
        seed: u64,
    ) -> Result<TrialResult, EvalError> {
        let mut result = self.pricer.trainer.evaluate(config, fidelity, seed)?;
        let epochs_run = result
            .metrics
            .get(metric::EPOCHS_RUN)
            .map(|&e| e.round() as usize);
        let query = self.pricer.query(config, fidelity, epochs_run)?;
        let p = self
            .predictor
            .predict(&query)
            .map_err(|e| EvalError::Failed(format!("predicting the trial's energy: {e}")))?;
        for (name, value) in [
            (
                metric::PREDICTED_INFERENCE_ENERGY_J_PER_1K,
                p.inference_j_per_1000_rows,
            ),
            (
                metric::PREDICTED_INFERENCE_ENERGY_SIGMA,
                p.inference_uncertainty_j_per_1000_rows,
            ),
            (metric::PREDICTED_TRAINING_ENERGY_J, p.training_j),
            (
                metric::PREDICTED_TRAINING_ENERGY_SIGMA,
                p.training_uncertainty_j,
            ),
        ] {
            if value.is_finite() {
                result.metrics.insert(name.to_owned(), value);
            }
        }
        // A prediction is an estimate, whatever the calibration measured.
        result.provenance = Some(
            result
                .provenance
                .map_or(Provenance::Estimated, |m| m.combine(Provenance::Estimated)),
        );
        result.notes.push(format!(
            "energy objectives predicted from calibration {} (fitted on {} energy); \
             training energy measured by energyd when it ran",
            self.predictor.calibration().display(),
            p.provenance
        ));
        Ok(result)
    }
}

/// How many candidates [`Prescreen`] priced and turned down.
#[derive(Debug, Default)]
pub struct PrescreenCounts {
    /// New candidates priced.
    pub priced: AtomicUsize,
    /// Of those, turned down (redrawn).
    pub rejected: AtomicUsize,
    /// Proposals made although every draw was turned down (the cheapest
    /// draw is taken so the search goes on).
    pub forced: AtomicUsize,
}

/// Pre-screening: prices each *new* candidate of the wrapped strategy
/// before it is trained and redraws those that cannot join the front
/// cheaply.
///
/// The rule: once `warmup` full-fidelity trials have both an accuracy and a
/// predicted inference energy, let R be the most accurate of them. A
/// candidate predicted to cost more than `factor` × R's predicted inference
/// energy could only join the front by being more accurate than every
/// network trained so far; it is turned down and the wrapped strategy asked
/// again (up to `draws` times; if every draw is turned down, the cheapest
/// is trained, so the search never stalls). Promotions and re-evaluations
/// of configurations already in the study are never screened. A candidate
/// the calibration cannot price is not screened either.
///
/// Screening happens inside the study's claim (the study is locked while
/// a strategy proposes), which a prediction's sub-millisecond cost allows.
pub struct Prescreen {
    inner: Box<dyn Strategy>,
    pricer: Box<dyn CandidatePricer>,
    factor: f64,
    warmup: usize,
    draws: usize,
    counts: Arc<PrescreenCounts>,
}

/// Prices a candidate before it is trained: its predicted inference energy
/// per 1000 rows, or `None` when it cannot be priced.
pub trait CandidatePricer: Send {
    /// Predicted inference energy of `config` at `fidelity`, J per 1000 rows.
    fn inference_j_per_1k(&self, config: &Config, fidelity: f64) -> Option<f64>;
}

/// [`CandidatePricer`] from a calibration: the trial's query, priced by
/// the co-process.
pub struct CalibrationPricer {
    /// Builds the query.
    pub pricer: TrialPricer,
    /// Prices it.
    pub predictor: Arc<Predictor>,
}

impl CandidatePricer for CalibrationPricer {
    fn inference_j_per_1k(&self, config: &Config, fidelity: f64) -> Option<f64> {
        let query = self.pricer.query(config, fidelity, None).ok()?;
        let p = self.predictor.predict(&query).ok()?;
        Some(p.inference_j_per_1000_rows)
    }
}

impl Prescreen {
    /// Wraps `inner`; `factor` and `warmup` as in the type's doc.
    pub fn new(
        inner: Box<dyn Strategy>,
        pricer: Box<dyn CandidatePricer>,
        factor: f64,
        warmup: usize,
    ) -> Prescreen {
        Prescreen {
            inner,
            pricer,
            factor,
            warmup,
            draws: 16,
            counts: Arc::default(),
        }
    }

    /// Counters shared with the caller (for the summary).
    pub fn counts(&self) -> Arc<PrescreenCounts> {
        Arc::clone(&self.counts)
    }

    /// Predicted inference energy of R, the most accurate priced trial,
    /// once there are `warmup` of them.
    fn reference_energy(&self, trials: &[TrialRecord]) -> Option<f64> {
        let priced: Vec<(f64, f64)> = trials
            .iter()
            .filter(|t| {
                t.status == TrialStatus::Finished && (t.fidelity - FULL_FIDELITY).abs() < 1e-9
            })
            .filter_map(|t| {
                let m = t.metrics.as_ref()?;
                Some((
                    *m.get(metric::VAL_ACCURACY)?,
                    *m.get(metric::PREDICTED_INFERENCE_ENERGY_J_PER_1K)?,
                ))
            })
            .collect();
        if priced.len() < self.warmup.max(1) {
            return None;
        }
        priced
            .into_iter()
            .max_by(|a, b| a.0.total_cmp(&b.0).then(b.1.total_cmp(&a.1)))
            .map(|(_, e)| e)
    }
}

impl Strategy for Prescreen {
    fn spec(&self) -> String {
        format!(
            "prescreen:factor={},warmup={}+{}",
            self.factor,
            self.warmup,
            self.inner.spec()
        )
    }

    fn ask(&mut self, history: &History<'_>, rng: &mut StdRng) -> Ask {
        let Some(reference) = self.reference_energy(history.trials) else {
            return self.inner.ask(history, rng);
        };
        let limit = self.factor * reference;
        let seen = history.seen_anywhere();
        let mut cheapest: Option<(f64, Ask)> = None;
        for _ in 0..self.draws {
            let ask = self.inner.ask(history, rng);
            let Ask::Propose(proposal) = &ask else {
                return cheapest.map_or(ask, |(_, a)| a);
            };
            if seen.contains(proposal.config.key().as_str()) {
                return ask;
            }
            let energy = self
                .pricer
                .inference_j_per_1k(&proposal.config, proposal.fidelity);
            let Some(energy) = energy else {
                return ask;
            };
            self.counts.priced.fetch_add(1, Ordering::Relaxed);
            if energy <= limit {
                return ask;
            }
            self.counts.rejected.fetch_add(1, Ordering::Relaxed);
            if cheapest.as_ref().is_none_or(|(e, _)| energy < *e) {
                cheapest = Some((energy, ask));
            }
        }
        self.counts.forced.fetch_add(1, Ordering::Relaxed);
        match cheapest {
            Some((_, ask)) => ask,
            None => self.inner.ask(history, rng),
        }
    }

    fn tell(&mut self, trial: &TrialRecord) {
        self.inner.tell(trial);
    }
}

/// One front member measured by [`measure_front`].
#[derive(Debug, Clone, Serialize)]
pub struct FrontMeasurement {
    /// Trial number.
    pub number: u64,
    /// Predicted inference energy per 1000 rows.
    pub predicted_j_per_1k: Option<f64>,
    /// Measured inference energy per 1000 rows.
    pub measured_j_per_1k: f64,
    /// Validation accuracy of the re-run (same seed as the trial).
    pub val_accuracy: Option<f64>,
    /// Energy the re-run spent.
    pub energy_spent_j: Option<f64>,
}

/// Trains every member of the study's front under `objectives` again with
/// energyd measuring both phases (`measurer` must measure inference) and
/// stores the measured figures in the same trials (`inference_energy_j_per_1k`
/// and `latency_ms_per_1k` from the measurement, the re-run's accuracy as
/// `remeasured_val_accuracy`, its energy added to what the trial spent).
/// Trials already measured are skipped, so a stopped run continues.
/// `progress(done, total)` after each.
pub fn measure_front(
    study_file: &Path,
    objectives: &ObjectiveSet,
    measurer: &TrainingEvaluator,
    progress: &dyn Fn(usize, usize),
) -> Result<Vec<FrontMeasurement>> {
    let mut study = Study::open_existing(study_file)
        .with_context(|| format!("opening study {}", study_file.display()))?;
    let trials = study.trials()?;
    let front: Vec<TrialRecord> = front_indices(&trials, objectives)
        .into_iter()
        .map(|i| trials[i].clone())
        .collect();
    let mut out = Vec::new();
    for (k, t) in front.iter().enumerate() {
        let m = t.metrics.clone().unwrap_or_default();
        let predicted = m.get(metric::PREDICTED_INFERENCE_ENERGY_J_PER_1K).copied();
        if let Some(&measured) = m.get(metric::INFERENCE_ENERGY_J_PER_1K) {
            out.push(FrontMeasurement {
                number: t.number,
                predicted_j_per_1k: predicted,
                measured_j_per_1k: measured,
                val_accuracy: m.get("remeasured_val_accuracy").copied(),
                energy_spent_j: None,
            });
            progress(k + 1, front.len());
            continue;
        }
        let r = measurer
            .evaluate(&t.config, t.fidelity, t.seed)
            .map_err(|e| anyhow::anyhow!("re-measuring trial {}: {e}", t.number))?;
        let Some(&measured) = r.metrics.get(metric::INFERENCE_ENERGY_J_PER_1K) else {
            bail!(
                "re-measuring trial {}: energyd reported no inference energy ({}); \
                 is energyd running?",
                t.number,
                r.notes.join("; ")
            );
        };
        let mut extra = Metrics::new();
        extra.insert(metric::INFERENCE_ENERGY_J_PER_1K.to_owned(), measured);
        for (from, to) in [
            (metric::LATENCY_MS_PER_1K, metric::LATENCY_MS_PER_1K),
            (metric::VAL_ACCURACY, "remeasured_val_accuracy"),
        ] {
            if let Some(&v) = r.metrics.get(from) {
                extra.insert(to.to_owned(), v);
            }
        }
        let note = format!(
            "front re-measurement: inference energy measured by energyd ({})",
            r.provenance.map_or("unknown provenance", |p| p.label())
        );
        study.add_measurement(t.number, &extra, r.energy_spent_j, &note)?;
        out.push(FrontMeasurement {
            number: t.number,
            predicted_j_per_1k: predicted,
            measured_j_per_1k: measured,
            val_accuracy: r.metrics.get(metric::VAL_ACCURACY).copied(),
            energy_spent_j: r.energy_spent_j,
        });
        progress(k + 1, front.len());
    }
    Ok(out)
}

/// The measured-energy name of an objective of a calibrated search: the
/// energy objectives a user names (`inference_energy_j_per_1k`,
/// `training_energy_j`) are read from their predicted counterparts; other
/// objectives are unchanged.
pub fn predicted_objective_name(name: &str) -> &str {
    match name {
        metric::INFERENCE_ENERGY_J_PER_1K => metric::PREDICTED_INFERENCE_ENERGY_J_PER_1K,
        metric::TRAINING_ENERGY_J => metric::PREDICTED_TRAINING_ENERGY_J,
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::search::trainer::DataSource;

    fn pricer(threads: usize) -> TrialPricer {
        TrialPricer {
            trainer: TrainingEvaluator {
                exe: PathBuf::from("nas-client"),
                data: DataSource::Bundled("phoneme".into()),
                socket: None,
                threads,
                measure_inference: false,
            },
            shape: DatasetShape {
                inputs: 5,
                outputs: 2,
                regression: false,
                train_rows: 3000,
                val_rows: 1000,
                test_rows: 1000,
            },
        }
    }

    #[test]
    fn a_trial_is_priced_as_its_child_will_train_it() {
        let config = Config::from_json(
            r#"{"n_layers":2,"width_1":64,"width_2":32,"activation":"gelu","normalization":"layer","batch_size":128,"epochs":9,"dropout":0.1}"#,
        )
        .unwrap();
        let q = pricer(2).query(&config, 1.0 / 3.0, None).unwrap();
        assert_eq!(q.batch_size, 128);
        // A third of 9 epochs, as the child's --epochs.
        assert_eq!(q.epochs, 3);
        assert_eq!(q.threads, 2);
        assert_eq!((q.inputs, q.outputs, q.test_rows), (5, 2, 1000));
        assert_eq!(q.model.describe(), {
            let args = parse_train_flags(&[
                "--dataset",
                "phoneme",
                "--arch",
                "64-32",
                "--activation",
                "gelu",
                "--norm",
                "layer",
                "--dropout",
                "0.1",
            ])
            .unwrap();
            config_from(&args).unwrap().model.describe()
        });
        // Epochs actually run override the most.
        assert_eq!(pricer(1).query(&config, 1.0, Some(5)).unwrap().epochs, 5);
        // The JSON has exactly the description's field names.
        let v = serde_json::to_value(&q).unwrap();
        let keys: Vec<&str> = v.as_object().unwrap().keys().map(String::as_str).collect();
        assert_eq!(
            keys,
            [
                "batch_size",
                "epochs",
                "eval_batch_size",
                "inputs",
                "model",
                "optimizer",
                "outputs",
                "regression",
                "test_rows",
                "threads",
                "train_rows",
                "val_rows"
            ]
        );
    }

    #[test]
    fn energy_objectives_map_to_their_predictions() {
        assert_eq!(
            predicted_objective_name("inference_energy_j_per_1k"),
            "predicted_inference_energy_j_per_1k"
        );
        assert_eq!(
            predicted_objective_name("training_energy_j"),
            "predicted_training_energy_j"
        );
        assert_eq!(predicted_objective_name("val_accuracy"), "val_accuracy");
    }

    #[test]
    fn a_missing_program_is_a_clear_error() {
        let q = pricer(1)
            .query(
                &Config::from_json(r#"{"n_layers":1,"width_1":8}"#).unwrap(),
                1.0,
                None,
            )
            .unwrap();
        let e = Predictor::start(
            Path::new("/nonexistent/calibration"),
            Path::new("c.toml"),
            false,
            &q,
        )
        .unwrap_err();
        assert!(
            format!("{e:#}").contains("/nonexistent/calibration"),
            "{e:#}"
        );
        // A program that exits at once: the error says it is gone.
        let e = Predictor::start(Path::new("false"), Path::new("c.toml"), false, &q).unwrap_err();
        assert!(format!("{e:#}").contains("exited"), "{e:#}");
    }

    /// A strategy proposing fixed widths in turn.
    struct Cycle(Vec<i64>, usize);

    impl Strategy for Cycle {
        fn spec(&self) -> String {
            "cycle".into()
        }
        fn ask(&mut self, _: &History<'_>, _: &mut StdRng) -> Ask {
            let w = self.0[self.1 % self.0.len()];
            self.1 += 1;
            Ask::Propose(nas_search::strategy::Proposal {
                config: Config::from_json(&format!(r#"{{"n_layers":1,"width_1":{w}}}"#)).unwrap(),
                fidelity: 1.0,
                tag: None,
            })
        }
    }

    /// Energy = width / 100 J per 1000 rows.
    struct ByWidth;

    impl CandidatePricer for ByWidth {
        fn inference_j_per_1k(&self, config: &Config, _: f64) -> Option<f64> {
            Some(config.get("width_1")?.as_f64()? / 100.0)
        }
    }

    fn finished(number: u64, width: i64, acc: f64) -> TrialRecord {
        let config = Config::from_json(&format!(r#"{{"n_layers":1,"width_1":{width}}}"#)).unwrap();
        TrialRecord {
            number,
            config_key: config.key(),
            config,
            fidelity: 1.0,
            tag: None,
            status: TrialStatus::Finished,
            worker: None,
            seed: 0,
            metrics: Some(
                [
                    (metric::VAL_ACCURACY.to_string(), acc),
                    (
                        metric::PREDICTED_INFERENCE_ENERGY_J_PER_1K.to_string(),
                        width as f64 / 100.0,
                    ),
                ]
                .into_iter()
                .collect(),
            ),
            kernel_energy: Vec::new(),
            provenance: None,
            energy_spent_j: None,
            error: None,
            notes: Vec::new(),
            created_ns: 0,
            started_ns: None,
            finished_ns: None,
            finish_seq: None,
            eval_ns: None,
            overhead_ns: None,
            attempts: 1,
        }
    }

    fn proposed_width(ask: Ask) -> i64 {
        let Ask::Propose(p) = ask else {
            panic!("expected a proposal")
        };
        p.config.get("width_1").unwrap().as_f64().unwrap() as i64
    }

    #[test]
    fn prescreen_redraws_candidates_too_costly_to_join_the_front() {
        use rand::SeedableRng;
        let space = nas_search::space::SearchSpace::default_tabular();
        let objectives = ObjectiveSet::new(vec![nas_search::objective::Objective::parse(
            "val_accuracy:max",
        )
        .unwrap()])
        .unwrap();
        let mut rng = StdRng::seed_from_u64(1);
        fn history<'a>(
            trials: &'a [TrialRecord],
            space: &'a nas_search::space::SearchSpace,
            objectives: &'a ObjectiveSet,
        ) -> History<'a> {
            History {
                trials,
                space,
                objectives,
            }
        }
        let mut p = Prescreen::new(
            Box::new(Cycle(vec![512, 256, 32], 0)),
            Box::new(ByWidth),
            1.5,
            2,
        );
        // Before the warm-up, nothing is screened.
        let one = [finished(0, 64, 0.9)];
        assert_eq!(
            proposed_width(p.ask(&history(&one, &space, &objectives), &mut rng)),
            512
        );
        assert_eq!(p.counts().priced.load(Ordering::Relaxed), 0);
        // The most accurate trial (width 64) costs 0.64: anything above
        // 1.5 x 0.64 = 0.96 is redrawn; 32 (0.32) passes.
        let two = [finished(0, 64, 0.9), finished(1, 16, 0.8)];
        let mut p = Prescreen::new(
            Box::new(Cycle(vec![512, 256, 32], 0)),
            Box::new(ByWidth),
            1.5,
            2,
        );
        assert_eq!(
            proposed_width(p.ask(&history(&two, &space, &objectives), &mut rng)),
            32
        );
        let c = p.counts();
        assert_eq!(c.priced.load(Ordering::Relaxed), 3);
        assert_eq!(c.rejected.load(Ordering::Relaxed), 2);
        // Every draw too costly: the cheapest is taken, and counted.
        let mut p = Prescreen::new(
            Box::new(Cycle(vec![512, 256], 0)),
            Box::new(ByWidth),
            1.5,
            2,
        );
        assert_eq!(
            proposed_width(p.ask(&history(&two, &space, &objectives), &mut rng)),
            256
        );
        assert_eq!(p.counts().forced.load(Ordering::Relaxed), 1);
        // A configuration already in the study is never screened.
        let seen = [
            finished(0, 64, 0.9),
            finished(1, 16, 0.8),
            finished(2, 512, 0.7),
        ];
        let mut p = Prescreen::new(Box::new(Cycle(vec![512], 0)), Box::new(ByWidth), 1.5, 2);
        assert_eq!(
            proposed_width(p.ask(&history(&seen, &space, &objectives), &mut rng)),
            512
        );
        assert_eq!(p.counts().priced.load(Ordering::Relaxed), 0);
        assert_eq!(p.spec(), "prescreen:factor=1.5,warmup=2+cycle");
    }
}
