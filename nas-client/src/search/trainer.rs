//! The training evaluator: each trial trains a network in a child
//! `nas-client trial` process of its own, so that the energy energyd
//! reports for that process belongs to that trial alone even when several
//! trials run at once (`--workers K`); the child registers itself with
//! energyd and reports its kernel spans.
//!
//! The boundary is typed both ways: the child reads a [`TrialRequest`]
//! (the data, the exact [`TrainConfig`], the energyd settings) as JSON on
//! its standard input and writes the [`TrainReport`] as JSON on its
//! standard output, which the parent deserializes. The configuration a
//! trial trains is built once, by [`TrainingEvaluator::train_config`], and
//! is also the one a calibrated search prices.
//!
//! This module owns the mapping between search-space parameters and the
//! trainer's configuration, and between the report and trial metrics
//! (named by the [`TrialMetric`] registry).

use anyhow::Context;
use nas_search::evaluator::{EvalError, Evaluator, KernelEnergyFigure, TrialResult};
use nas_search::metric::{MetricInfo, MetricRegistry};
use nas_search::objective::Direction;
use nas_search::space::{Config, ParamValue};
use nas_search::strategy::{Ask, History, Proposal, Strategy};
use nas_search::study::{Claim, Study, WorkerIdentity};
use nn_plan::{Activation, Backbone, Norm};
use serde::{Deserialize, Serialize};
use shared::Provenance;
use std::collections::BTreeMap;
use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use tabular_nn::data::{bundled, Dataset, LoadOptions};
use tabular_nn::train::{TrainConfig, TrainReport};

/// Where a figure comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    /// Measured or computed from the trained network (accuracy, energy
    /// from energyd with its own provenance, parameter counts).
    Measured,
    /// Predicted from a calibration, never a measurement: a prediction of
    /// the measured metric it names (or, for an uncertainty, about it).
    Predicted(TrialMetric),
}

macro_rules! trial_metrics {
    ($($(#[doc = $doc:literal])* $variant:ident => ($name:literal, $unit:literal, $direction:ident, $origin:expr),)*) => {
        /// Every metric a training trial reports: one registry of names,
        /// units, the direction that is better and where the figure comes
        /// from. Objectives and constraints of a search refer to the names.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum TrialMetric {
            $($(#[doc = $doc])* $variant,)*
        }

        impl TrialMetric {
            /// Every metric, in declaration order.
            pub const ALL: &'static [TrialMetric] = &[$(TrialMetric::$variant,)*];

            /// The stable name (stored in studies, used in objectives).
            pub const fn name(self) -> &'static str {
                match self {
                    $(TrialMetric::$variant => $name,)*
                }
            }

            /// Unit of the figure.
            pub const fn unit(self) -> &'static str {
                match self {
                    $(TrialMetric::$variant => $unit,)*
                }
            }

            /// Which way is better.
            pub const fn direction(self) -> Direction {
                match self {
                    $(TrialMetric::$variant => Direction::$direction,)*
                }
            }

            /// Measured or predicted (and then of which measured metric).
            pub const fn origin(self) -> Origin {
                #[allow(unused_imports)]
                use {Origin::*, TrialMetric::*};
                match self {
                    $(TrialMetric::$variant => $origin,)*
                }
            }
        }
    };
}

trial_metrics! {
    /// Validation accuracy (classification).
    ValAccuracy => ("val_accuracy", "fraction", Maximize, Measured),
    /// Test accuracy (classification).
    TestAccuracy => ("test_accuracy", "fraction", Maximize, Measured),
    /// Inference energy per 1000 rows, measured by energyd.
    InferenceEnergyJPer1k => ("inference_energy_j_per_1k", "J per 1000 rows", Minimize, Measured),
    /// Training energy, measured by energyd.
    TrainingEnergyJ => ("training_energy_j", "J", Minimize, Measured),
    /// energyd's one-sigma uncertainty of the inference energy per 1000
    /// rows (a payback states its range from it).
    InferenceEnergySigmaJPer1k => ("inference_energy_sigma_j_per_1k", "J per 1000 rows", Minimize, Measured),
    /// energyd's one-sigma uncertainty of the trial's energy (training and
    /// inference phases, independent), for the search energy's range.
    EnergySpentSigmaJ => ("energy_spent_sigma_j", "J", Minimize, Measured),
    /// Inference time per 1000 rows.
    LatencyMsPer1k => ("latency_ms_per_1k", "ms per 1000 rows", Minimize, Measured),
    /// Trainable parameters.
    Params => ("params", "parameters", Minimize, Measured),
    /// Forward FLOPs per row.
    Flops => ("flops", "FLOP per row", Minimize, Measured),
    /// Training wall time.
    TrainTimeS => ("train_time_s", "s", Minimize, Measured),
    /// Epochs actually trained (early stopping may end before the most).
    EpochsRun => ("epochs_run", "epochs", Minimize, Measured),
    /// Validation accuracy of a front member's re-measurement run.
    RemeasuredValAccuracy => ("remeasured_val_accuracy", "fraction", Maximize, Measured),
    /// Inference energy per 1000 rows predicted from a calibration.
    PredictedInferenceEnergyJPer1k => ("predicted_inference_energy_j_per_1k", "J per 1000 rows", Minimize, Predicted(InferenceEnergyJPer1k)),
    /// Training energy predicted from a calibration.
    PredictedTrainingEnergyJ => ("predicted_training_energy_j", "J", Minimize, Predicted(TrainingEnergyJ)),
    /// One-sigma uncertainty of the predicted inference energy.
    PredictedInferenceEnergySigma => ("predicted_inference_energy_sigma_j_per_1k", "J per 1000 rows", Minimize, Predicted(InferenceEnergyJPer1k)),
    /// One-sigma uncertainty of the predicted training energy.
    PredictedTrainingEnergySigma => ("predicted_training_energy_sigma_j", "J", Minimize, Predicted(TrainingEnergyJ)),
    /// A carbon-aware search's light evaluation: the zero-cost proxy's
    /// score of the untrained network (higher is better; which proxy is in
    /// the trial's notes).
    LightScore => ("light_score", "proxy score", Maximize, Measured),
    /// A carbon-aware search: grid intensity of the UTC (or replayed) hour
    /// the evaluation started in, from the study's intensity source.
    HourIntensity => ("hour_intensity_g_per_kwh", "gCO2eq/kWh", Minimize, Measured),
}

impl TrialMetric {
    /// The metric of this name.
    pub fn from_name(name: &str) -> Option<TrialMetric> {
        TrialMetric::ALL.iter().copied().find(|m| m.name() == name)
    }

    /// The metric whose one-sigma uncertainty this is. (The uncertainty
    /// of a trial's energy spent, [`TrialMetric::EnergySpentSigmaJ`],
    /// belongs to the study's energy column, not to a metric.)
    pub const fn uncertainty_of(self) -> Option<TrialMetric> {
        match self {
            TrialMetric::InferenceEnergySigmaJPer1k => Some(TrialMetric::InferenceEnergyJPer1k),
            TrialMetric::PredictedInferenceEnergySigma => {
                Some(TrialMetric::PredictedInferenceEnergyJPer1k)
            }
            TrialMetric::PredictedTrainingEnergySigma => {
                Some(TrialMetric::PredictedTrainingEnergyJ)
            }
            _ => None,
        }
    }

    /// The predicted counterpart of a measured figure (what a calibrated
    /// search optimises in its place): the registry's prediction of it.
    pub fn predicted(self) -> Option<TrialMetric> {
        TrialMetric::ALL.iter().copied().find(|p| {
            p.uncertainty_of().is_none()
                && matches!(p.origin(), Origin::Predicted(of) if of == self)
        })
    }

    /// This metric as the study's registry stores it.
    pub fn info(self) -> MetricInfo {
        let info = match self.origin() {
            Origin::Measured => MetricInfo::measured(self.name(), self.unit(), self.direction()),
            Origin::Predicted(of) => {
                MetricInfo::predicted(self.name(), self.unit(), self.direction(), of.name())
            }
        };
        match self.uncertainty_of() {
            Some(of) => info.uncertainty_of(of.name()),
            None => info,
        }
    }

    /// Every metric a training trial reports, as the registry a study
    /// declares (nas-search finds predictions and uncertainties here).
    pub fn registry() -> MetricRegistry {
        // The declarations above are consistent (a unit test checks it).
        MetricRegistry::new(TrialMetric::ALL.iter().map(|m| m.info())).unwrap_or_default()
    }
}

/// Metric names, for the code that indexes trial metrics by name (the
/// registry's names, as constants).
pub mod metric {
    use super::TrialMetric as M;
    /// See [`M::ValAccuracy`].
    pub const VAL_ACCURACY: &str = M::ValAccuracy.name();
    /// See [`M::TestAccuracy`].
    pub const TEST_ACCURACY: &str = M::TestAccuracy.name();
    /// See [`M::InferenceEnergyJPer1k`].
    pub const INFERENCE_ENERGY_J_PER_1K: &str = M::InferenceEnergyJPer1k.name();
    /// See [`M::TrainingEnergyJ`].
    pub const TRAINING_ENERGY_J: &str = M::TrainingEnergyJ.name();
    /// See [`M::LatencyMsPer1k`].
    pub const LATENCY_MS_PER_1K: &str = M::LatencyMsPer1k.name();
    /// See [`M::Params`].
    pub const PARAMS: &str = M::Params.name();
    /// See [`M::Flops`].
    pub const FLOPS: &str = M::Flops.name();
    /// See [`M::TrainTimeS`].
    pub const TRAIN_TIME_S: &str = M::TrainTimeS.name();
    /// See [`M::LightScore`].
    pub const LIGHT_SCORE: &str = M::LightScore.name();
    /// See [`M::HourIntensity`].
    pub const HOUR_INTENSITY: &str = M::HourIntensity.name();
    /// See [`M::EpochsRun`].
    pub const EPOCHS_RUN: &str = M::EpochsRun.name();
    /// See [`M::RemeasuredValAccuracy`].
    pub const REMEASURED_VAL_ACCURACY: &str = M::RemeasuredValAccuracy.name();
}

/// Where the training data comes from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DataSource {
    /// A bundled dataset by name.
    Bundled(String),
    /// A CSV/TSV file and its target column.
    File {
        /// The file.
        path: PathBuf,
        /// Target column.
        target: String,
    },
}

impl DataSource {
    /// Loads the data (split seed 0, task and column kinds detected), as
    /// `nas-client train --dataset NAME` or `--data FILE --target COLUMN`.
    pub fn load(&self) -> anyhow::Result<Dataset> {
        match self {
            DataSource::Bundled(name) => {
                bundled::load(name, 0).with_context(|| format!("loading bundled dataset {name}"))
            }
            DataSource::File { path, target } => {
                Dataset::from_file(path, &LoadOptions::new(target))
                    .with_context(|| format!("loading {}", path.display()))
            }
        }
    }

    /// Short label for reports.
    pub fn label(&self) -> String {
        match self {
            DataSource::Bundled(name) => name.clone(),
            DataSource::File { path, target } => format!("{} ({target})", path.display()),
        }
    }
}

/// What a `nas-client trial` child trains: read as JSON on its standard
/// input.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TrialRequest {
    /// The data.
    pub data: DataSource,
    /// The exact training configuration.
    pub config: TrainConfig,
    /// energyd socket (the default socket when `None`).
    pub socket: Option<PathBuf>,
}

/// Trains each trial in a child `nas-client trial` process.
#[derive(Debug, Clone)]
pub struct TrainingEvaluator {
    /// The nas-client executable.
    pub exe: PathBuf,
    /// The data.
    pub data: DataSource,
    /// energyd socket (the trainer's default when `None`).
    pub socket: Option<PathBuf>,
    /// Threads of each training process.
    pub threads: usize,
    /// Measure the inference phase's energy (the measured inference-energy
    /// objective needs it; a search on predicted energy does not).
    pub measure_inference: bool,
}

fn bad(message: String) -> EvalError {
    EvalError::Failed(message)
}

/// The architecture parameters of `spec` as a study stores them and
/// [`train_config`] reads them back: `backbone`, a ResNet's `d_main`, an
/// FT-Transformer's `n_heads` and `d_ffn`, `n_layers` and `width_1..`
/// (an FT-Transformer's d_token for every block). For programs that store networks they built
/// themselves (`grow`, `oneshot`) rather than ones a strategy proposed.
pub fn architecture_params(
    spec: &nn_plan::ModelSpec,
) -> anyhow::Result<BTreeMap<String, ParamValue>> {
    let mut map = BTreeMap::new();
    let ft_widths: Vec<usize>;
    let widths = match &spec.backbone {
        Backbone::Mlp { widths } => {
            map.insert("backbone".into(), ParamValue::Str("mlp".into()));
            widths
        }
        Backbone::Resnet { d_main, d_hidden } => {
            map.insert("backbone".into(), ParamValue::Str("resnet".into()));
            map.insert("d_main".into(), ParamValue::Int(*d_main as i64));
            d_hidden
        }
        // As a search stores it (d_token as every block's width), with the
        // heads and ReGLU width; the trial fits the tokenizer to the data
        // and trains the published dropouts, so others have no stored form.
        Backbone::FtTransformer {
            d_token,
            n_blocks,
            n_heads,
            d_ffn,
            dropouts,
            ..
        } if *dropouts == nn_plan::FtDropouts::PUBLISHED => {
            map.insert("backbone".into(), ParamValue::Str("ft-transformer".into()));
            map.insert("n_heads".into(), ParamValue::Int(*n_heads as i64));
            map.insert("d_ffn".into(), ParamValue::Int(*d_ffn as i64));
            ft_widths = vec![*d_token; *n_blocks];
            &ft_widths
        }
        other => anyhow::bail!("no stored form for a {other:?} network built outside a search"),
    };
    map.insert("n_layers".into(), ParamValue::Int(widths.len() as i64));
    for (i, w) in widths.iter().enumerate() {
        map.insert(format!("width_{}", i + 1), ParamValue::Int(*w as i64));
    }
    Ok(map)
}

/// Stores one evaluation that ran outside the runner (a growth round, a
/// one-shot phase or retraining) as a finished trial of `study`, through
/// the study's claim (the one way trials enter a study); returns its number.
pub fn record_trial(
    study: &mut Study,
    worker: &WorkerIdentity,
    config: Config,
    tag: Option<&str>,
    outcome: &Result<TrialResult, String>,
    eval_ns: u64,
) -> anyhow::Result<u64> {
    let mut once = OneProposal(Some(Proposal {
        config,
        fidelity: 1.0,
        tag: tag.map(str::to_owned),
    }));
    let trial = match study.claim(
        worker,
        usize::MAX,
        &mut once,
        std::time::Duration::from_secs(3600),
    )? {
        Claim::Trial(t) => t,
        other => anyhow::bail!(
            "the study did not take the {} trial: {other:?}",
            tag.unwrap_or("untagged")
        ),
    };
    study.finish(trial.id, outcome, eval_ns, 0)?;
    Ok(trial.number)
}

/// Proposes one given configuration, once.
struct OneProposal(Option<Proposal>);

impl Strategy for OneProposal {
    fn spec(&self) -> String {
        "given".into()
    }
    fn ask(&mut self, _history: &History<'_>, _rng: &mut rand::rngs::StdRng) -> Ask {
        match self.0.take() {
            Some(p) => Ask::Propose(p),
            None => Ask::Exhausted,
        }
    }
}

/// The model and schedule (no seed or threads) of `config` at `fidelity`
/// (a fraction of `epochs`, at least one epoch), over the defaults of
/// `nas-client train`. Parameters: `backbone` (mlp, resnet with an optional
/// `d_main`, ft-transformer:
/// d_token `width_1`, `n_layers` blocks, `n_heads`, optional `d_ffn`), `n_layers` and
/// `width_1..` (a ResNet's main width is its first width, one block per
/// width), `activation`, `dropout`, `normalization`, `learning_rate`,
/// `batch_size`, `epochs`.
pub fn train_config(config: &Config, fidelity: f64) -> Result<TrainConfig, EvalError> {
    let num = |name: &str| config.get(name).and_then(ParamValue::as_f64);
    let text = |name: &str| config.get(name).and_then(ParamValue::as_str);
    let n_layers = num("n_layers")
        .ok_or_else(|| bad("configuration has no integer `n_layers`".into()))?
        as usize;
    let mut widths = Vec::with_capacity(n_layers);
    for i in 1..=n_layers {
        let w = num(&format!("width_{i}")).ok_or_else(|| {
            bad(format!(
                "configuration has {n_layers} layers but no width_{i}"
            ))
        })?;
        if w < 1.0 {
            return Err(bad(format!("width_{i} is {w}, not a positive width")));
        }
        widths.push(w.round() as usize);
    }
    let mut out = TrainConfig::default();
    out.model.backbone = match text("backbone").unwrap_or("mlp") {
        "mlp" => Backbone::Mlp { widths },
        // The main width is `d_main` when given (a one-shot search's
        // children choose it apart from the blocks' widths), else the
        // first width.
        "resnet" => Backbone::Resnet {
            d_main: match num("d_main") {
                Some(d) if d >= 1.0 => d.round() as usize,
                Some(d) => return Err(bad(format!("d_main is {d}, not a positive width"))),
                None => *widths
                    .first()
                    .ok_or_else(|| bad("a resnet needs at least one layer".into()))?,
            },
            d_hidden: widths,
        },
        // d_token is the first width and a block per layer; heads from
        // `n_heads` (published 8), ReGLU hidden width from `d_ffn`
        // (published d·4/3), dropouts as published. The trial fits the
        // tokenizer to the data's columns.
        "ft-transformer" => {
            let d_token = *widths
                .first()
                .ok_or_else(|| bad("an ft-transformer needs at least one block".into()))?;
            let n_heads = num("n_heads").map_or(8, |h| h.round() as usize);
            if n_heads == 0 || d_token % n_heads != 0 {
                return Err(bad(format!(
                    "{n_heads} heads do not divide the ft-transformer's width_1 {d_token}"
                )));
            }
            let d_ffn = match num("d_ffn") {
                Some(h) if h >= 1.0 => h.round() as usize,
                Some(h) => return Err(bad(format!("d_ffn is {h}, not a positive width"))),
                None => (d_token * 4 / 3).max(1),
            };
            Backbone::FtTransformer {
                d_token,
                n_blocks: n_layers,
                n_heads,
                d_ffn,
                dropouts: nn_plan::FtDropouts::PUBLISHED,
                feature_widths: Vec::new(),
            }
        }
        other => {
            return Err(bad(format!(
                "unknown backbone {other:?} (mlp, resnet, ft-transformer)"
            )))
        }
    };
    if let Some(a) = text("activation") {
        out.model.activation =
            Activation::parse(a).ok_or_else(|| bad(format!("unknown activation {a:?}")))?;
    }
    if let Some(n) = text("normalization") {
        out.model.norm =
            Norm::parse(n).ok_or_else(|| bad(format!("unknown normalization {n:?}")))?;
    }
    if let Some(d) = num("dropout") {
        out.model.dropout = d as f32;
    }
    if let Some(lr) = num("learning_rate") {
        out.lr = lr as f32;
    }
    if let Some(b) = num("batch_size") {
        out.batch_size = b.round().max(1.0) as usize;
    }
    if let Some(epochs) = num("epochs") {
        out.epochs = (epochs * fidelity).ceil().max(1.0) as usize;
    }
    Ok(out)
}

impl TrainingEvaluator {
    /// The exact configuration the child of a trial trains.
    pub fn train_config(
        &self,
        config: &Config,
        fidelity: f64,
        seed: u64,
    ) -> Result<TrainConfig, EvalError> {
        let mut out = train_config(config, fidelity)?;
        out.seed = seed;
        out.threads = self.threads.max(1);
        out.measure_inference_energy = self.measure_inference;
        Ok(out)
    }
}

impl Evaluator for TrainingEvaluator {
    fn evaluate(
        &self,
        config: &Config,
        fidelity: f64,
        seed: u64,
    ) -> Result<TrialResult, EvalError> {
        let request = TrialRequest {
            data: self.data.clone(),
            config: self.train_config(config, fidelity, seed)?,
            socket: self.socket.clone(),
        };
        let input = serde_json::to_vec(&request)
            .map_err(|e| bad(format!("encoding the trial request: {e}")))?;
        let mut child = Command::new(&self.exe)
            .arg("trial")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| bad(format!("cannot start {} trial: {e}", self.exe.display())))?;
        if let Some(mut stdin) = child.stdin.take() {
            // A child that exits early closes the pipe; its status says why.
            let _ = stdin.write_all(&input);
        }
        let output = child
            .wait_with_output()
            .map_err(|e| bad(format!("waiting for {} trial: {e}", self.exe.display())))?;
        if !output.status.success() {
            let stderr = String::from_utf8_lossy(&output.stderr);
            let tail: Vec<&str> = stderr.lines().rev().take(5).collect();
            return Err(bad(format!(
                "nas-client trial exited with {}: {}",
                output.status,
                tail.into_iter().rev().collect::<Vec<_>>().join(" | ")
            )));
        }
        let report: TrainReport = serde_json::from_slice(&output.stdout)
            .map_err(|e| bad(format!("nas-client trial: unreadable report: {e}")))?;
        trial_result(&report)
    }
}

/// The trial metrics, per-kernel energy and provenance of a training
/// report.
pub fn trial_result(report: &TrainReport) -> Result<TrialResult, EvalError> {
    let mut result = TrialResult::default();
    let mut put = |m: TrialMetric, value: Option<f64>| {
        if let Some(x) = value.filter(|x| x.is_finite()) {
            result.metrics.insert(m.name().to_owned(), x);
        }
    };
    let energy = report.energy.as_ref();
    put(TrialMetric::ValAccuracy, report.val.accuracy);
    put(TrialMetric::TestAccuracy, report.test.accuracy);
    put(
        TrialMetric::InferenceEnergyJPer1k,
        energy.and_then(|e| e.inference_j_per_1000_rows),
    );
    put(
        TrialMetric::TrainingEnergyJ,
        energy.map(|e| e.train.process_j),
    );
    let inference = &report.inference;
    // Names shared with nas_search::payback::metric, which reads them.
    put(
        TrialMetric::InferenceEnergySigmaJPer1k,
        energy
            .and_then(|e| e.inference.as_ref())
            .filter(|_| inference.rows > 0)
            .map(|p| p.uncertainty_j / inference.rows as f64 * 1000.0),
    );
    put(
        TrialMetric::EnergySpentSigmaJ,
        energy.map(|e| {
            let inf = e.inference.as_ref().map_or(0.0, |p| p.uncertainty_j);
            e.train.uncertainty_j.hypot(inf)
        }),
    );
    put(
        TrialMetric::LatencyMsPer1k,
        (inference.rows > 0)
            .then(|| inference.time_ns as f64 / inference.rows as f64 * 1000.0 / 1e6),
    );
    put(TrialMetric::Params, Some(report.parameters as f64));
    put(
        TrialMetric::Flops,
        Some(report.flops_per_row_inference as f64),
    );
    put(
        TrialMetric::TrainTimeS,
        Some(report.train_wall_ns as f64 / 1e9),
    );
    put(TrialMetric::EpochsRun, Some(report.epochs_run as f64));
    if !result.metrics.contains_key(metric::VAL_ACCURACY) {
        return Err(bad(
            "the trial reported no validation accuracy (regression targets need --objectives on another metric)".into(),
        ));
    }
    if let Some(e) = energy {
        // The provenance of the objective (inference energy) and of the
        // training energy: the weaker of the two phases.
        result.provenance = Some(e.inference.as_ref().map_or(e.train.provenance, |i| {
            e.train.provenance.combine(i.provenance)
        }));
        result.kernel_energy = e
            .train
            .kernels
            .iter()
            .map(|k| KernelEnergyFigure {
                name: k.name.clone(),
                energy_j: k.energy_j,
                time_ns: k.total_time_ns,
                count: k.count,
            })
            .collect();
        // What the trial cost: training plus the inference measurement.
        result.energy_spent_j =
            Some(e.train.process_j + e.inference.as_ref().map_or(0.0, |i| i.process_j));
    }
    if let Some(why) = &report.energy_unavailable {
        result.notes.push(format!("no energy: {why}"));
    }
    if let Some(d) = &report.span_delivery {
        if !d.complete() || d.warning.is_some() {
            result.notes.push(format!(
                "kernel spans: {} recorded, {} stored by energyd, {} refused, {} dropped, {} unsent{}",
                d.recorded,
                d.accepted,
                d.rejected,
                d.dropped,
                d.pending,
                d.warning.as_ref().map_or(String::new(), |w| format!(" ({w})"))
            ));
        }
    }
    Ok(result)
}

/// The provenance a trial's predicted figures carry: a model's output is
/// never a measurement, whatever the calibration was measured with.
pub fn prediction_provenance(measured: Option<Provenance>) -> Provenance {
    measured.map_or(Provenance::Estimated, |m| m.combine(Provenance::Estimated))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parameters_become_the_configuration() {
        let config = Config::from_json(
            r#"{"n_layers":2,"width_1":64,"width_2":32,"activation":"gelu","normalization":"layer","epochs":10,"learning_rate":0.01,"batch_size":128,"dropout":0.2}"#,
        )
        .unwrap();
        let c = train_config(&config, 1.0 / 3.0).unwrap();
        assert_eq!(
            c.model.backbone,
            Backbone::Mlp {
                widths: vec![64, 32]
            }
        );
        assert_eq!(c.model.activation, Activation::Gelu);
        assert_eq!(c.model.norm, Norm::Layer);
        assert_eq!(c.epochs, 4);
        assert_eq!(c.batch_size, 128);
        assert!((c.lr - 0.01).abs() < 1e-9 && (c.model.dropout - 0.2).abs() < 1e-7);
        // Defaults are the trainer's.
        assert_eq!(c.eval_batch_size, TrainConfig::default().eval_batch_size);
        let missing = Config::from_json(r#"{"n_layers":2,"width_1":64}"#).unwrap();
        assert!(train_config(&missing, 1.0).is_err());
        let bad_act =
            Config::from_json(r#"{"n_layers":1,"width_1":8,"activation":"mish"}"#).unwrap();
        assert!(train_config(&bad_act, 1.0).is_err());
    }

    #[test]
    fn resnet_main_width_is_the_first_width() {
        let config =
            Config::from_json(r#"{"backbone":"resnet","n_layers":2,"width_1":64,"width_2":32}"#)
                .unwrap();
        let c = train_config(&config, 1.0).unwrap();
        assert_eq!(
            c.model.backbone,
            Backbone::Resnet {
                d_main: 64,
                d_hidden: vec![64, 32]
            }
        );
        let empty = Config::from_json(r#"{"backbone":"resnet","n_layers":0}"#).unwrap();
        assert!(train_config(&empty, 1.0).is_err());
    }

    #[test]
    fn ft_transformer_width_is_d_token_and_layers_are_blocks() {
        let config = Config::from_json(
            r#"{"backbone":"ft-transformer","n_layers":2,"width_1":64,"width_2":64,"n_heads":4}"#,
        )
        .unwrap();
        let c = train_config(&config, 1.0).unwrap();
        assert_eq!(
            c.model.backbone,
            Backbone::FtTransformer {
                d_token: 64,
                n_blocks: 2,
                n_heads: 4,
                d_ffn: 85,
                dropouts: nn_plan::FtDropouts::PUBLISHED,
                feature_widths: Vec::new(),
            }
        );
        let bad = Config::from_json(
            r#"{"backbone":"ft-transformer","n_layers":1,"width_1":64,"n_heads":5}"#,
        )
        .unwrap();
        assert!(train_config(&bad, 1.0).is_err());
    }

    /// A real (tiny) training report survives the JSON boundary and maps
    /// to metrics.
    #[test]
    fn a_report_crosses_the_boundary_and_maps_to_metrics() {
        let ds = bundled::load("phoneme", 0).unwrap();
        let mut config = train_config(
            &Config::from_json(r#"{"n_layers":1,"width_1":8,"epochs":1}"#).unwrap(),
            1.0,
        )
        .unwrap();
        config.threads = 1;
        config.inference_min_ns = 0;
        let report = tabular_nn::train_and_evaluate(&ds, &config, None, &mut |_| {}).unwrap();
        let json = serde_json::to_string(&report).unwrap();
        let back: TrainReport = serde_json::from_str(&json).unwrap();
        assert_eq!(back.config.model, report.config.model);
        assert_eq!(back.train_kernels, report.train_kernels);
        assert_eq!(back.history.len(), report.history.len());
        assert_eq!(back.val, report.val);
        let r = trial_result(&back).unwrap();
        assert_eq!(
            r.metrics[metric::VAL_ACCURACY],
            report.val.accuracy.unwrap()
        );
        assert_eq!(r.metrics[metric::PARAMS], report.parameters as f64);
        assert_eq!(r.metrics[metric::EPOCHS_RUN], 1.0);
        assert_eq!(r.provenance, None);
        assert_eq!(r.energy_spent_j, None);
        assert!(!r.metrics.contains_key(metric::INFERENCE_ENERGY_J_PER_1K));
        assert!(r.notes.iter().any(|n| n.contains("energyd not used")));
    }

    #[test]
    fn energyd_uncertainties_become_the_metrics_paybacks_read() {
        assert_eq!(
            TrialMetric::InferenceEnergySigmaJPer1k.name(),
            nas_search::payback::metric::INFERENCE_ENERGY_SIGMA_J_PER_1K
        );
        assert_eq!(
            TrialMetric::EnergySpentSigmaJ.name(),
            nas_search::payback::metric::ENERGY_SPENT_SIGMA_J
        );
        let ds = bundled::load("phoneme", 0).unwrap();
        let mut config = train_config(
            &Config::from_json(r#"{"n_layers":1,"width_1":8,"epochs":1}"#).unwrap(),
            1.0,
        )
        .unwrap();
        config.threads = 1;
        config.inference_min_ns = 0;
        let mut report = tabular_nn::train_and_evaluate(&ds, &config, None, &mut |_| {}).unwrap();
        let phase = |j: f64, sigma: f64| tabular_nn::meter::PhaseEnergy {
            from_ns: 0,
            to_ns: 1,
            process_j: j,
            uncertainty_j: sigma,
            provenance: shared::Provenance::Estimated,
            domains: Vec::new(),
            kernels: Vec::new(),
            notes: Vec::new(),
        };
        let rows = report.inference.rows as f64;
        assert!(rows > 0.0);
        report.energy = Some(tabular_nn::train::RunEnergy {
            train: phase(12.0, 0.3),
            inference: Some(phase(2.0, 0.4)),
            inference_j_per_1000_rows: Some(2.0 / rows * 1000.0),
        });
        let r = trial_result(&report).unwrap();
        let sigma_1k = r.metrics[TrialMetric::InferenceEnergySigmaJPer1k.name()];
        assert!((sigma_1k - 0.4 / rows * 1000.0).abs() < 1e-12, "{sigma_1k}");
        // Independent phases: 0.3 and 0.4 in quadrature.
        let spent = r.metrics[TrialMetric::EnergySpentSigmaJ.name()];
        assert!((spent - 0.5).abs() < 1e-12, "{spent}");
    }

    #[test]
    fn the_registry_names_are_unique_and_energy_has_predictions() {
        let mut names: Vec<&str> = TrialMetric::ALL.iter().map(|m| m.name()).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), TrialMetric::ALL.len());
        for &m in TrialMetric::ALL {
            assert_eq!(TrialMetric::from_name(m.name()), Some(m));
            if let Some(p) = m.predicted() {
                assert_eq!(p.origin(), Origin::Predicted(m));
                assert_eq!((p.unit(), p.direction()), (m.unit(), m.direction()));
            }
        }
        assert_eq!(
            TrialMetric::InferenceEnergyJPer1k.predicted(),
            Some(TrialMetric::PredictedInferenceEnergyJPer1k)
        );
        assert_eq!(
            TrialMetric::TrainingEnergyJ.predicted(),
            Some(TrialMetric::PredictedTrainingEnergyJ)
        );
        assert_eq!(TrialMetric::ValAccuracy.predicted(), None);
    }

    /// The registry a study stores is the checked one (not the empty
    /// fallback), and nas-search finds through it what the trainer means.
    #[test]
    fn the_registry_declares_every_metric_with_its_relations() {
        let declared = MetricRegistry::new(TrialMetric::ALL.iter().map(|m| m.info()))
            .expect("the declarations are consistent");
        let r = TrialMetric::registry();
        assert_eq!(r, declared);
        assert_eq!(r.iter().count(), TrialMetric::ALL.len());
        let name = |m: TrialMetric| m.name();
        assert_eq!(
            r.prediction_of(name(TrialMetric::InferenceEnergyJPer1k))
                .map(|m| m.name.as_str()),
            Some(name(TrialMetric::PredictedInferenceEnergyJPer1k))
        );
        assert_eq!(
            r.uncertainty_of(name(TrialMetric::PredictedInferenceEnergyJPer1k))
                .map(|m| m.name.as_str()),
            Some(name(TrialMetric::PredictedInferenceEnergySigma))
        );
        assert_eq!(
            r.uncertainty_of(name(TrialMetric::InferenceEnergyJPer1k))
                .map(|m| m.name.as_str()),
            Some(name(TrialMetric::InferenceEnergySigmaJPer1k))
        );
        for &m in TrialMetric::ALL {
            let info = r.get(m.name()).expect("declared");
            assert_eq!(info.is_predicted(), m.origin() != Origin::Measured);
            assert_eq!(
                (info.unit.as_str(), info.direction),
                (m.unit(), m.direction())
            );
        }
    }
}
