//! `nas-client oneshot`: one-shot energy-aware architecture search
//! (issue 13). Three phases, each resumable:
//!
//! 1. a weight-entangled supernet (`supernet` crate) of the backbone's
//!    default space ([`default_space`]) is trained by the sandwich rule in
//!    this process, measured by energyd through the same
//!    [`ProcessSession`] / [`PhaseMeter`] path `nas-client train` uses; the
//!    supernet is checkpointed after every epoch into `STUDY.oneshot/`;
//! 2. the policy-gradient controller (`nas_search::controller`) searches
//!    the space: a child's quality is its validation accuracy with
//!    inherited weights (`Supernet::evaluate_child`, BatchNorm
//!    recalibrated, cached by `SupernetSpace::canonical`), its cost the
//!    inference energy per 1000 rows predicted in process by the
//!    calibration (`--energy-budget`: TabNAS rejection; `--reward
//!    mnas:T:W`: MnasNet's soft reward); the controller's state is saved
//!    with the checkpoint, and its phase measured by energyd too;
//! 3. the controller's pick and K other children it evaluated (the best
//!    by reward, or with `--retrain-by front` those spreading the final set
//!    over the predicted front) are retrained from scratch as normal trials of the study, each in a child
//!    `nas-client trial` process measured by energyd (the search's
//!    [`TrainingEvaluator`]), tagged `oneshot-pick` / `oneshot-top-N`, with
//!    their predicted energy and inherited accuracy stored beside the
//!    measured figures.
//!
//! The supernet's and the controller's energy is stored as a trial of its
//! own, tagged `oneshot-supernet` (configuration: the supernet's largest
//! child, `kind = supernet`), without objective metrics: it is never on a
//! front, but its `energy_spent_j` is summed into the study's search
//! energy like every trial's.

use crate::search::calibrated::{network_run, EnergyModel};
use crate::search::trainer::{
    architecture_params, record_trial, DataSource, TrainingEvaluator, TrialMetric,
};
use anyhow::{bail, Context, Result};
use clap::{Args, ValueEnum};
use nas_search::controller::{
    shaped_reward, Child, Controller, ControllerSettings, ControllerState, Decision as CtlDecision,
    EnergyHandling, StepOutcome, MNAS_SOFT_EXPONENT,
};
use nas_search::evaluator::{Evaluator, TrialResult};
use nas_search::metric::{MetricInfo, MetricRegistry};
use nas_search::objective::{hypervolume, Direction, Objective, ObjectiveSet};
use nas_search::space::{Config, ParamValue, SearchSpace};
use nas_search::study::{Study, StudyLocation, StudySpec, TrialStatus, WorkerIdentity};
use nn_plan::{Activation, DatasetShape, FtDropouts, ModelSpec, Norm};
use serde::{Deserialize, Serialize};
use shared::{MonotonicNs, Provenance};
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use supernet::{
    ChildSettings, EvalSettings, FtSettings, SandwichConfig, Supernet, SupernetCheckpoint,
    SupernetSpace,
};
use tabular_nn::data::{bundled, Task};
use tabular_nn::meter::{PhaseEnergy, PhaseMeter};
use tabular_nn::session::ProcessSession;
use tabular_nn::train::optim::ParamState;
use tabular_nn::train::TrainConfig;

/// Which supernet.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OneshotBackbone {
    /// MLP: 1–3 hidden layers of 16–256 units (BatchNorm, ReLU).
    Mlp,
    /// ResNet: main width 32–128, 1–3 blocks of hidden width 32–256.
    Resnet,
    /// FT-Transformer: token width 8–64 (4 heads), 1–3 blocks, ReGLU
    /// width 16–96 shared by the blocks, the published dropouts.
    FtTransformer,
}

/// How the children retrained besides the pick are chosen among those the
/// controller evaluated.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, ValueEnum, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RetrainChoice {
    /// The best by the controller's reward (a runner-up list).
    #[default]
    Reward,
    /// Spread over the predicted front: greedily, the child adding the
    /// most hypervolume of (inherited accuracy, predicted inference energy)
    /// to the pick and the children already chosen, so that the final set
    /// covers the trade-off instead of crowding around the pick.
    Front,
}

/// MnasNet's soft reward `accuracy × (energy / target)^w`, from
/// `mnas:TARGET:W` (`W` ≤ 0; `mnas:TARGET` takes MnasNet's −0.07).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct MnasReward {
    /// Target inference energy, J per 1000 rows.
    pub target_j_per_1k: f64,
    /// The exponent (≤ 0).
    pub exponent: f64,
}

/// Parses `--reward mnas:TARGET[:W]`.
pub fn parse_reward(s: &str) -> std::result::Result<MnasReward, String> {
    let mut parts = s.split(':');
    if parts.next() != Some("mnas") {
        return Err(format!(
            "{s:?}: expected mnas:TARGET:W (target J per 1000 rows, exponent ≤ 0)"
        ));
    }
    let target: f64 = parts
        .next()
        .ok_or_else(|| format!("{s:?}: missing TARGET in mnas:TARGET:W"))?
        .parse()
        .map_err(|e| format!("{s:?}: TARGET: {e}"))?;
    let exponent: f64 = match parts.next() {
        Some(w) => w.parse().map_err(|e| format!("{s:?}: W: {e}"))?,
        None => MNAS_SOFT_EXPONENT,
    };
    if parts.next().is_some() {
        return Err(format!("{s:?}: expected mnas:TARGET:W"));
    }
    if !(target.is_finite() && target > 0.0) {
        return Err(format!(
            "{s:?}: TARGET must be a positive number of J per 1000 rows"
        ));
    }
    if !(exponent.is_finite() && exponent <= 0.0) {
        return Err(format!("{s:?}: W must be ≤ 0 (MnasNet: -0.07)"));
    }
    Ok(MnasReward {
        target_j_per_1k: target,
        exponent,
    })
}

/// Arguments of `nas-client oneshot`.
#[derive(Debug, Clone, Args)]
pub struct OneshotArgs {
    /// Bundled classification dataset (see `nas-client datasets`).
    #[arg(long)]
    pub dataset: String,
    /// Supernet backbone.
    #[arg(long, value_enum, default_value_t = OneshotBackbone::Mlp)]
    pub backbone: OneshotBackbone,
    /// Study (SQLite file or `postgresql://…?study=NAME`); the supernet's
    /// checkpoints go to `STUDY.oneshot/` (`NAME.oneshot/` here for
    /// PostgreSQL).
    #[arg(long)]
    pub study: StudyLocation,
    /// Calibration file (`calibration run`): predicts each child's
    /// inference energy in process. Required.
    #[arg(long)]
    pub calibration: Option<PathBuf>,
    /// Use a calibration made on another machine.
    #[arg(long)]
    pub force_calibration: bool,
    /// TabNAS rejection: children predicted above this inference energy
    /// (J per 1000 rows) are rejected.
    #[arg(long, conflicts_with = "reward")]
    pub energy_budget: Option<f64>,
    /// MnasNet's soft reward, `mnas:TARGET:W` (TARGET J per 1000 rows,
    /// W ≤ 0, e.g. -0.07). Without this and --energy-budget: accuracy only.
    #[arg(long, value_parser = parse_reward)]
    pub reward: Option<MnasReward>,
    /// Epochs of supernet training.
    #[arg(long, default_value_t = 10)]
    pub supernet_epochs: usize,
    /// Controller steps (children sampled).
    #[arg(long, default_value_t = 200)]
    pub controller_steps: u64,
    /// Children retrained besides the pick: the best by reward among
    /// those the controller evaluated.
    #[arg(long, default_value_t = 3)]
    pub retrain: usize,
    /// How those children are chosen: by reward, or spread over the
    /// predicted front (hypervolume of inherited accuracy and predicted
    /// energy, with the pick).
    #[arg(long, value_enum, default_value_t = RetrainChoice::Reward)]
    pub retrain_by: RetrainChoice,
    /// Epochs of each from-scratch retraining.
    #[arg(long, default_value_t = 20)]
    pub retrain_epochs: usize,
    /// Seed of the supernet, the controller and the retrainings.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Threads (supernet training, child evaluation, each retraining);
    /// the calibration must cover this thread count.
    #[arg(long)]
    pub threads: Option<usize>,
    /// energyd socket (default: the daemon's standard socket).
    #[arg(long)]
    pub socket: Option<PathBuf>,
    /// Print a JSON summary on stdout.
    #[arg(long)]
    pub json: bool,
    /// Stop after this many supernet epochs are checkpointed (to test and
    /// demonstrate resuming; a rerun continues).
    #[arg(long, hide = true)]
    pub stop_after_epochs: Option<usize>,
}

/// The default space of a backbone (as [`OneshotBackbone`]'s variants
/// state): the widths of `bench/supernet` widened to 256, up to three
/// layers or blocks; BatchNorm, ReLU, no dropout. The FT-Transformer space
/// is small enough to train on two cores (the published model is d_token
/// 192, 8 heads, 3 blocks, ReGLU 256); its tokenizer treats every column as
/// numeric until fitted to a dataset (`SupernetSpace::with_feature_widths`).
pub fn default_space(backbone: OneshotBackbone) -> Result<SupernetSpace> {
    let settings = ChildSettings {
        activation: Activation::Relu,
        norm: Norm::Batch,
        dropout: 0.0,
    };
    Ok(match backbone {
        OneshotBackbone::Mlp => {
            SupernetSpace::mlp(vec![vec![16, 32, 64, 128, 256]; 3], vec![1, 2, 3], settings)?
        }
        OneshotBackbone::Resnet => SupernetSpace::resnet(
            vec![32, 64, 128],
            vec![vec![32, 64, 128, 256]; 3],
            vec![1, 2, 3],
            settings,
        )?,
        OneshotBackbone::FtTransformer => SupernetSpace::ft_transformer(
            vec![8, 16, 32, 64],
            vec![1, 2, 3],
            vec![16, 32, 64, 96],
            FtSettings {
                heads: 4,
                dropouts: FtDropouts::PUBLISHED,
                feature_widths: Vec::new(),
            },
        )?,
    })
}

/// The settings a stopped run must be resumed with (stored in
/// `STUDY.oneshot/settings.json`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct RunSettings {
    dataset: String,
    backbone: OneshotBackbone,
    supernet_epochs: usize,
    controller_steps: u64,
    energy: EnergyHandling,
    retrain: usize,
    /// Absent in runs stored before the choice existed: by reward.
    #[serde(default)]
    retrain_by: RetrainChoice,
    retrain_epochs: usize,
    seed: u64,
    threads: usize,
}

impl RunSettings {
    /// The names of the settings that differ, with both values.
    fn differences(&self, other: &RunSettings) -> Vec<String> {
        let a = serde_json::to_value(self).unwrap_or_default();
        let b = serde_json::to_value(other).unwrap_or_default();
        let (Some(a), Some(b)) = (a.as_object(), b.as_object()) else {
            return vec!["settings".into()];
        };
        a.iter()
            .filter(|(k, v)| b.get(*k) != Some(v))
            .map(|(k, v)| {
                format!(
                    "{k}: stored {v}, given {}",
                    b.get(k).cloned().unwrap_or_default()
                )
            })
            .collect()
    }
}

/// An energy figure summed over phases: joules, one-sigma (quadrature),
/// weakest provenance.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct EnergySum {
    /// Joules.
    pub joules: f64,
    /// One-sigma uncertainty, joules.
    pub sigma_j: f64,
    /// Weakest provenance of the phases summed.
    pub provenance: Provenance,
}

impl EnergySum {
    fn add(acc: Option<EnergySum>, p: &PhaseEnergy) -> EnergySum {
        match acc {
            None => EnergySum {
                joules: p.process_j,
                sigma_j: p.uncertainty_j,
                provenance: p.provenance,
            },
            Some(a) => EnergySum {
                joules: a.joules + p.process_j,
                sigma_j: a.sigma_j.hypot(p.uncertainty_j),
                provenance: a.provenance.combine(p.provenance),
            },
        }
    }
    fn plus(a: Option<EnergySum>, b: Option<EnergySum>) -> Option<EnergySum> {
        match (a, b) {
            (Some(a), Some(b)) => Some(EnergySum {
                joules: a.joules + b.joules,
                sigma_j: a.sigma_j.hypot(b.sigma_j),
                provenance: a.provenance.combine(b.provenance),
            }),
            (a, b) => a.or(b),
        }
    }
}

/// A [`ParamState`] as plain vectors.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct StoredMoments {
    first_shape: (usize, usize),
    first: Vec<f32>,
    second_shape: (usize, usize),
    second: Vec<f32>,
    steps: u64,
}

/// `STUDY.oneshot/supernet.json`: the supernet after some epochs and the
/// energy those epochs took.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct StoredSupernet {
    epochs_done: usize,
    tensors: Vec<Vec<f32>>,
    moments: Vec<Option<StoredMoments>>,
    energy: Option<EnergySum>,
    notes: Vec<String>,
}

impl StoredSupernet {
    fn from_checkpoint(
        c: SupernetCheckpoint,
        energy: Option<EnergySum>,
        notes: Vec<String>,
    ) -> Self {
        let moments = c
            .moments
            .into_iter()
            .map(|m| {
                m.map(|s| StoredMoments {
                    first_shape: s.first.dim(),
                    first: s.first.iter().copied().collect(),
                    second_shape: s.second.dim(),
                    second: s.second.iter().copied().collect(),
                    steps: s.steps,
                })
            })
            .collect();
        StoredSupernet {
            epochs_done: c.epochs_done,
            tensors: c.tensors,
            moments,
            energy,
            notes,
        }
    }

    fn checkpoint(&self, path: &Path) -> Result<SupernetCheckpoint> {
        let mut moments = Vec::with_capacity(self.moments.len());
        for m in &self.moments {
            moments.push(match m {
                None => None,
                Some(s) => Some(ParamState {
                    first: ndarray::Array2::from_shape_vec(s.first_shape, s.first.clone())
                        .with_context(|| format!("{}: a first moment's shape", path.display()))?,
                    second: ndarray::Array2::from_shape_vec(s.second_shape, s.second.clone())
                        .with_context(|| format!("{}: a second moment's shape", path.display()))?,
                    steps: s.steps,
                }),
            });
        }
        Ok(SupernetCheckpoint {
            epochs_done: self.epochs_done,
            tensors: self.tensors.clone(),
            moments,
        })
    }
}

/// `STUDY.oneshot/controller.json`: the controller's run and the energy
/// its phases took.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct StoredController {
    state: ControllerState,
    energy: Option<EnergySum>,
}

/// Where a run's checkpoints live.
pub fn oneshot_dir(study: &StudyLocation) -> PathBuf {
    match study {
        StudyLocation::Sqlite(file) => {
            let mut dir = file.as_os_str().to_owned();
            dir.push(".oneshot");
            PathBuf::from(dir)
        }
        StudyLocation::Postgres(pg) => PathBuf::from(format!("{}.oneshot", pg.study())),
    }
}

fn read_json<T: serde::de::DeserializeOwned>(path: &Path) -> Result<Option<T>> {
    match std::fs::read(path) {
        Ok(bytes) => Ok(Some(
            serde_json::from_slice(&bytes)
                .with_context(|| format!("parsing {}", path.display()))?,
        )),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
    }
}

/// Written to a temporary file then renamed, so a run killed while
/// writing leaves the previous checkpoint whole.
fn write_json<T: Serialize>(path: &Path, value: &T) -> Result<()> {
    let tmp = path.with_extension("json.tmp");
    let bytes = serde_json::to_vec(value)?;
    std::fs::write(&tmp, bytes).with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("renaming to {}", path.display()))
}

/// The study's space: a retrained child's (or the supernet's)
/// architecture and training settings, read by the training evaluator.
const ONESHOT_SPACE_TOML: &str = r#"
[[param]]
name = "kind"
type = "categorical"
choices = ["supernet", "child"]

[[param]]
name = "backbone"
type = "categorical"
choices = ["mlp", "resnet", "ft-transformer"]

[[param]]
name = "n_heads"
type = "int"
low = 1
high = 65536
when = { param = "backbone", in = ["ft-transformer"] }

[[param]]
name = "d_ffn"
type = "int"
low = 1
high = 65536
when = { param = "backbone", in = ["ft-transformer"] }

[[param]]
name = "d_main"
type = "int"
low = 1
high = 65536
when = { param = "backbone", in = ["resnet"] }

[[param]]
name = "n_layers"
type = "int"
low = 1
high = 4

[[param]]
name = "width_1"
type = "int"
low = 1
high = 65536

[[param]]
name = "width_2"
type = "int"
low = 1
high = 65536
when = { param = "n_layers", at_least = 2 }

[[param]]
name = "width_3"
type = "int"
low = 1
high = 65536
when = { param = "n_layers", at_least = 3 }

[[param]]
name = "width_4"
type = "int"
low = 1
high = 65536
when = { param = "n_layers", at_least = 4 }

[[param]]
name = "activation"
type = "categorical"
choices = ["relu", "gelu", "silu", "tanh", "selu"]

[[param]]
name = "normalization"
type = "categorical"
choices = ["none", "batch", "layer"]

[[param]]
name = "dropout"
type = "float"
low = 0.0
high = 0.99

[[param]]
name = "epochs"
type = "int"
low = 1
high = 100000
"#;

/// Metrics a one-shot run adds to the trainer's.
pub mod metric {
    /// A retrained child's validation accuracy with the supernet's weights.
    pub const INHERITED_VAL_ACCURACY: &str = "inherited_val_accuracy";
    /// The controller's reward of a retrained child.
    pub const CONTROLLER_REWARD: &str = "controller_reward";
    /// The supernet trial: epochs trained.
    pub const SUPERNET_EPOCHS: &str = "supernet_epochs";
    /// The supernet trial: controller steps run.
    pub const CONTROLLER_STEPS: &str = "controller_steps";
    /// The supernet trial: energy of the supernet's training phase.
    pub const SUPERNET_ENERGY_J: &str = "supernet_energy_j";
    /// The supernet trial: energy of the controller's phase.
    pub const CONTROLLER_ENERGY_J: &str = "controller_energy_j";
}

fn oneshot_registry() -> Result<MetricRegistry> {
    let extra = [
        MetricInfo::measured(
            metric::INHERITED_VAL_ACCURACY,
            "fraction",
            Direction::Maximize,
        ),
        MetricInfo::measured(metric::CONTROLLER_REWARD, "reward", Direction::Maximize),
        MetricInfo::measured(metric::SUPERNET_EPOCHS, "epochs", Direction::Minimize),
        MetricInfo::measured(metric::CONTROLLER_STEPS, "steps", Direction::Minimize),
        MetricInfo::measured(metric::SUPERNET_ENERGY_J, "J", Direction::Minimize),
        MetricInfo::measured(metric::CONTROLLER_ENERGY_J, "J", Direction::Minimize),
    ];
    let trainer = TrialMetric::ALL.iter().map(|m| m.info());
    Ok(MetricRegistry::new(trainer.chain(extra))?)
}

/// Tags of the trials a run stores.
pub mod tag {
    /// The supernet's and controller's energy.
    pub const SUPERNET: &str = "oneshot-supernet";
    /// The controller's pick, retrained.
    pub const PICK: &str = "oneshot-pick";
    /// The N-th best other child by reward, retrained (`oneshot-top-N`).
    pub fn top(rank: usize) -> String {
        format!("oneshot-top-{rank}")
    }
}

fn activation_name(a: Activation) -> &'static str {
    match a {
        Activation::Relu => "relu",
        Activation::Gelu => "gelu",
        Activation::Silu => "silu",
        Activation::Tanh => "tanh",
        Activation::Selu => "selu",
    }
}

fn norm_name(n: Norm) -> &'static str {
    match n {
        Norm::None => "none",
        Norm::Batch => "batch",
        Norm::Layer => "layer",
    }
}

/// The study configuration of a network: what the training evaluator
/// builds back (`trainer::train_config`).
pub fn spec_config(spec: &ModelSpec, kind: &str, epochs: usize) -> Result<Config> {
    let mut map = architecture_params(spec)?;
    map.insert("kind".into(), ParamValue::Str(kind.into()));
    map.insert(
        "activation".into(),
        ParamValue::Str(activation_name(spec.activation).into()),
    );
    map.insert(
        "normalization".into(),
        ParamValue::Str(norm_name(spec.norm).into()),
    );
    map.insert("dropout".into(), ParamValue::Float(f64::from(spec.dropout)));
    map.insert("epochs".into(), ParamValue::Int(epochs as i64));
    Ok(Config(map))
}

/// One child the controller evaluated, as the summary shows it.
#[derive(Debug, Clone, Serialize)]
pub struct EvaluatedChild {
    /// Choice indices (canonical).
    pub choice: Vec<usize>,
    /// Its network.
    pub spec: String,
    /// Validation accuracy with inherited weights.
    pub inherited_val_accuracy: f64,
    /// Predicted inference energy, J per 1000 rows (estimated).
    pub predicted_inference_j_per_1k: f64,
    /// The controller's reward.
    pub reward: f64,
}

/// A retrained trial in the summary.
#[derive(Debug, Clone, Serialize)]
pub struct RetrainedTrial {
    /// Trial number in the study.
    pub number: u64,
    /// `oneshot-pick` or `oneshot-top-N`.
    pub tag: String,
    /// The child.
    pub child: EvaluatedChild,
    /// Validation accuracy trained from scratch.
    pub val_accuracy: Option<f64>,
    /// Measured inference energy, J per 1000 rows.
    pub inference_energy_j_per_1k: Option<f64>,
    /// What the retraining spent, joules.
    pub energy_spent_j: Option<f64>,
    /// Provenance of its energy figures.
    pub provenance: Option<Provenance>,
}

/// `--json`'s summary.
#[derive(Debug, Clone, Serialize)]
pub struct OneshotSummary {
    /// The study.
    pub study: String,
    /// The supernet's epochs in all.
    pub supernet_epochs: usize,
    /// Epochs this run trained (the rest came from the checkpoint).
    pub supernet_epochs_trained_now: usize,
    /// Epochs restored from a checkpoint.
    pub resumed_from_epoch: usize,
    /// Energy of the supernet's training phase (measured by energyd, its
    /// provenance), all epochs.
    pub supernet_energy: Option<EnergySum>,
    /// Energy of the controller's phase.
    pub controller_energy: Option<EnergySum>,
    /// Controller steps run in all.
    pub controller_steps: u64,
    /// Distinct children evaluated with inherited weights.
    pub children_evaluated: usize,
    /// Of the steps, how many were rejected over the budget.
    pub rejected_steps: usize,
    /// How the energy entered.
    pub energy: EnergyHandling,
    /// The controller's pick.
    pub pick: EvaluatedChild,
    /// The pick's probability under the final policy.
    pub pick_probability: f64,
    /// Predicted inference energy of the space's smallest and largest
    /// child, J per 1000 rows (estimated): the range a budget cuts.
    pub space_predicted_j_per_1k: (f64, f64),
    /// The retrained trials, pick first.
    pub retrained: Vec<RetrainedTrial>,
    /// Notes (energyd unreachable, etc.).
    pub notes: Vec<String>,
}

/// A child's inference energy per 1000 rows predicted by the calibration
/// (estimated).
fn predict_child(
    model: &EnergyModel,
    calibration: &Path,
    space: &SupernetSpace,
    shape: &DatasetShape,
    threads: usize,
    choice: &[usize],
) -> Result<f64> {
    let spec = space.child_spec(choice)?;
    let run = network_run(
        &TrainConfig {
            model: spec,
            threads,
            ..TrainConfig::default()
        },
        shape,
        1,
    );
    Ok(model
        .predict(&run)
        .with_context(|| format!("calibration {}", calibration.display()))?
        .inference_j_per_1000_rows)
}

/// The inference energy per 1000 rows of the backbone's smallest and
/// largest child on a bundled dataset, predicted by a calibration
/// (estimated): the range an `--energy-budget` cuts. Nothing is trained.
pub fn predicted_range(
    backbone: OneshotBackbone,
    dataset: &str,
    calibration: &Path,
    force_calibration: bool,
    threads: usize,
) -> Result<(f64, f64)> {
    let model = EnergyModel::load(calibration, force_calibration)?;
    let data =
        bundled::load(dataset, 0).with_context(|| format!("loading bundled dataset {dataset}"))?;
    let space = default_space(backbone)?.with_feature_widths(data.feature_widths());
    let shape = data.shape();
    let price = |c: &[usize]| predict_child(&model, calibration, &space, &shape, threads, c);
    Ok((price(&space.smallest())?, price(&space.largest())?))
}

/// The default energy budget of a space whose children are predicted
/// between `smallest` and `largest` J per 1000 rows: their geometric mean,
/// the middle of a range that spans an order of magnitude or more.
pub fn default_energy_budget((smallest, largest): (f64, f64)) -> f64 {
    (smallest * largest).sqrt()
}

/// Runs `nas-client oneshot`; returns the summary (the binary prints it).
pub fn oneshot(args: &OneshotArgs, progress: &dyn Fn(&str)) -> Result<OneshotSummary> {
    let Some(calibration) = &args.calibration else {
        bail!(
            "--calibration FILE is required: a child's energy is predicted from a calibration of \
             this machine; make one with `calibration run` (see `calibration --help`)"
        );
    };
    let model = EnergyModel::load(calibration, args.force_calibration)?;
    let dataset = bundled::load(&args.dataset, 0)
        .with_context(|| format!("loading bundled dataset {}", args.dataset))?;
    if dataset.task == Task::Regression {
        bail!(
            "--dataset {}: the controller's reward is an accuracy; pick a classification dataset",
            args.dataset
        );
    }
    let threads = args
        .threads
        .unwrap_or_else(tabular_nn::threads::available)
        .max(1);
    let energy = match (args.energy_budget, args.reward) {
        (Some(budget), _) => {
            if !(budget.is_finite() && budget > 0.0) {
                bail!("--energy-budget {budget}: a positive number of J per 1000 rows");
            }
            ControllerSettings::tabnas_rejection(budget, args.seed, Provenance::Estimated)
        }
        (None, Some(r)) => ControllerSettings::mnas_soft(
            r.target_j_per_1k,
            r.exponent,
            args.seed,
            Provenance::Estimated,
        ),
        (None, None) => ControllerSettings::quality_only(args.seed),
    };
    if args.supernet_epochs == 0 {
        bail!("--supernet-epochs must be at least 1");
    }
    if args.retrain_epochs == 0 {
        bail!("--retrain-epochs must be at least 1");
    }
    let settings = RunSettings {
        dataset: args.dataset.clone(),
        backbone: args.backbone,
        supernet_epochs: args.supernet_epochs,
        controller_steps: args.controller_steps,
        energy: energy.energy.clone(),
        retrain: args.retrain,
        retrain_by: args.retrain_by,
        retrain_epochs: args.retrain_epochs,
        seed: args.seed,
        threads,
    };
    let dir = oneshot_dir(&args.study);
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let settings_path = dir.join("settings.json");
    match read_json::<RunSettings>(&settings_path)? {
        Some(stored) if stored != settings => bail!(
            "{} holds a one-shot run with other settings ({}); rerun with the same settings to \
             resume it, or use another --study",
            settings_path.display(),
            stored.differences(&settings).join("; ")
        ),
        Some(_) => {}
        None => write_json(&settings_path, &settings)?,
    }
    // The FT tokenizer as the retrainings fit it (`train_cli::fit_model_to`),
    // so the energy model prices the networks that are trained.
    let space = default_space(args.backbone)?.with_feature_widths(dataset.feature_widths());
    let shape = dataset.shape();
    let price =
        |choice: &[usize]| predict_child(&model, calibration, &space, &shape, threads, choice);
    // A calibration that cannot price this space's networks fails here,
    // before anything is trained.
    let space_range = (price(&space.smallest())?, price(&space.largest())?);
    progress(&format!(
        "space: {} decisions, {} children; predicted inference energy from {:.6} (smallest) to \
         {:.6} (largest) J per 1000 rows (estimated)",
        space.decisions().len(),
        space.size(),
        space_range.0,
        space_range.1
    ));

    let study_spec = StudySpec {
        space: SearchSpace::from_toml_str(ONESHOT_SPACE_TOML, "oneshot space")?,
        objectives: ObjectiveSet::new(
            crate::search::DEFAULT_OBJECTIVES
                .split(',')
                .map(Objective::parse)
                .collect::<Result<Vec<_>, _>>()?,
        )?,
        strategy: format!("oneshot:{:?}", args.backbone).to_lowercase(),
        seed: args.seed,
        metrics: oneshot_registry()?,
    };
    let mut study = Study::open(&args.study, study_spec, true)
        .with_context(|| format!("opening study {}", args.study))?;

    let mut notes = Vec::new();
    let mut session = None;
    let socket = args
        .socket
        .clone()
        .unwrap_or_else(shared::paths::client_default_socket);
    match ProcessSession::connect(&socket, "nas-client", false) {
        Ok(s) => session = Some(s),
        Err(e) => {
            let note = format!("energyd not reachable ({e}); no energy figures");
            progress(&note);
            notes.push(note);
        }
    }

    // Phase 1: the supernet.
    let mut net = Supernet::for_dataset(space.clone(), &dataset, args.seed)?;
    let sandwich = SandwichConfig {
        epochs: args.supernet_epochs,
        seed: args.seed,
        threads,
        ..SandwichConfig::default()
    };
    let supernet_path = dir.join("supernet.json");
    let (mut done, mut supernet_energy, mut supernet_notes) =
        match read_json::<StoredSupernet>(&supernet_path)? {
            Some(stored) => {
                net.restore(&stored.checkpoint(&supernet_path)?)
                    .with_context(|| format!("restoring {}", supernet_path.display()))?;
                progress(&format!(
                    "supernet: resuming after epoch {}/{} from {}",
                    stored.epochs_done,
                    args.supernet_epochs,
                    supernet_path.display()
                ));
                (stored.epochs_done, stored.energy, stored.notes)
            }
            None => (0, None, Vec::new()),
        };
    let resumed_from_epoch = done;
    let mut trained_now = 0;
    while done < args.supernet_epochs {
        if args.stop_after_epochs.is_some_and(|k| done >= k) {
            progress(&format!(
                "supernet: stopped after epoch {done} (--stop-after-epochs); rerun to resume"
            ));
            bail_stopped(done)?;
        }
        let epoch = done + 1;
        let meter = session.as_mut().map(|s| s as &mut dyn PhaseMeter);
        let report = net.train_epochs(&dataset, &sandwich, epoch..=epoch, meter, &mut |_| {})?;
        match &report.energy {
            Some(p) => supernet_energy = Some(EnergySum::add(supernet_energy, p)),
            None => {
                if let Some(why) = &report.energy_unavailable {
                    supernet_notes.push(format!("epoch {epoch}: no energy: {why}"));
                }
            }
        }
        let last = report.history.last();
        progress(&format!(
            "supernet: epoch {epoch}/{} largest loss {:.4} smallest loss {:.4} energy so far {}",
            args.supernet_epochs,
            last.map_or(f64::NAN, |e| e.largest_loss),
            last.map_or(f64::NAN, |e| e.smallest_loss),
            energy_text(supernet_energy)
        ));
        let checkpoint = net.checkpoint(epoch)?;
        write_json(
            &supernet_path,
            &StoredSupernet::from_checkpoint(checkpoint, supernet_energy, supernet_notes.clone()),
        )?;
        done = epoch;
        trained_now += 1;
    }
    notes.extend(supernet_notes);

    // Phase 2: the controller.
    let decisions: Vec<CtlDecision> = space
        .decisions()
        .iter()
        .map(|d| CtlDecision {
            name: d.kind.to_string().replace(' ', "_"),
            choices: d
                .values()
                .iter()
                .map(|&v| ParamValue::Int(v as i64))
                .collect(),
        })
        .collect();
    let controller_path = dir.join("controller.json");
    let (mut controller, mut controller_energy) =
        match read_json::<StoredController>(&controller_path)? {
            Some(s) => (Controller::from_state(s.state)?, s.energy),
            None => (Controller::new(decisions, energy)?, None),
        };
    let pool = tabular_nn::threads::build_pool(threads)
        .map_err(|e| anyhow::anyhow!("building a pool of {threads} threads: {e}"))?;
    let eval_settings = EvalSettings {
        seed: args.seed,
        ..EvalSettings::default()
    };
    let mut accuracy: HashMap<Vec<usize>, f64> = HashMap::new();
    let mut cost: HashMap<Vec<usize>, f64> = HashMap::new();
    let mut quality_of = |net: &mut Supernet, choice: &[usize]| -> Result<f64> {
        let key = space.canonical(choice)?;
        if let Some(&a) = accuracy.get(&key) {
            return Ok(a);
        }
        let e = pool.install(|| net.evaluate_child(&key, &dataset, &eval_settings))?;
        let a = e.score();
        accuracy.insert(key, a);
        Ok(a)
    };
    let mut cost_of = |choice: &[usize]| -> Result<f64> {
        let key = space.canonical(choice)?;
        if let Some(&c) = cost.get(&key) {
            return Ok(c);
        }
        let c = price(&key)?;
        cost.insert(key, c);
        Ok(c)
    };
    // Steps in chunks, saved after each, so a stopped run loses at most a
    // chunk.
    const CHUNK: u64 = 25;
    while controller.state().next_step < args.controller_steps {
        let until = (controller.state().next_step + CHUNK).min(args.controller_steps);
        let t0 = MonotonicNs::now();
        controller.run_until(
            until,
            |c: &Child| quality_of(&mut net, &c.0),
            |c: &Child| cost_of(&c.0),
        )?;
        let t1 = MonotonicNs::now();
        if let Some(s) = session.as_mut() {
            s.flush_spans();
            match PhaseMeter::phase(s, t0, t1) {
                Ok(p) => controller_energy = Some(EnergySum::add(controller_energy, &p)),
                Err(e) => notes.push(format!("controller steps to {until}: not measured: {e}")),
            }
        }
        write_json(
            &controller_path,
            &StoredController {
                state: controller.state().clone(),
                energy: controller_energy,
            },
        )?;
        let argmax = controller.policy().argmax();
        progress(&format!(
            "controller: step {until}/{} argmax {} energy so far {}",
            args.controller_steps,
            space
                .child_spec(&argmax.0)
                .map_or_else(|e| e.to_string(), |s| s.describe()),
            energy_text(controller_energy)
        ));
    }
    let pick = controller.pick(|c: &Child| cost_of(&c.0))?;
    let pick_key = space.canonical(&pick.child.0)?;
    let handling = controller.state().settings.energy.clone();
    let describe = |net: &mut Supernet,
                    key: &[usize],
                    reward: Option<f64>,
                    quality_of: &mut dyn FnMut(&mut Supernet, &[usize]) -> Result<f64>,
                    cost_of: &mut dyn FnMut(&[usize]) -> Result<f64>|
     -> Result<EvaluatedChild> {
        let q = quality_of(net, key)?;
        let c = cost_of(key)?;
        let reward = match reward {
            Some(r) => r,
            None => shaped_reward(&handling, q, Some(c)).map_err(|m| anyhow::anyhow!("{m}"))?,
        };
        Ok(EvaluatedChild {
            choice: key.to_vec(),
            spec: space.child_spec(key)?.describe(),
            inherited_val_accuracy: q,
            predicted_inference_j_per_1k: c,
            reward,
        })
    };
    let pick_child = describe(&mut net, &pick_key, None, &mut quality_of, &mut cost_of)?;
    // The other children evaluated, best by reward first (ties by choice,
    // so the order is the same on every run); then those to retrain.
    let mut best: BTreeMap<Vec<usize>, f64> = BTreeMap::new();
    let mut rejected_steps = 0;
    for r in controller.history() {
        let reward = match r.outcome {
            StepOutcome::Rejected => {
                rejected_steps += 1;
                continue;
            }
            StepOutcome::NoFeasibleEstimate { reward, .. }
            | StepOutcome::Updated { reward, .. } => reward,
        };
        let key = space.canonical(&r.child.0)?;
        let e = best.entry(key).or_insert(f64::NEG_INFINITY);
        *e = e.max(reward);
    }
    let children_evaluated = best.len();
    let mut ranked: Vec<(Vec<usize>, f64)> =
        best.into_iter().filter(|(k, _)| *k != pick_key).collect();
    ranked.sort_by(|a, b| b.1.total_cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    if args.retrain_by == RetrainChoice::Front {
        let point = |net: &mut Supernet,
                     key: &[usize],
                     quality_of: &mut dyn FnMut(&mut Supernet, &[usize]) -> Result<f64>,
                     cost_of: &mut dyn FnMut(&[usize]) -> Result<f64>|
         -> Result<(f64, f64)> { Ok((quality_of(net, key)?, cost_of(key)?)) };
        let mut candidates = Vec::with_capacity(ranked.len());
        for (key, _) in &ranked {
            candidates.push(point(&mut net, key, &mut quality_of, &mut cost_of)?);
        }
        let fixed = [(
            pick_child.inherited_val_accuracy,
            pick_child.predicted_inference_j_per_1k,
        )];
        let order = front_choice(&fixed, &candidates, args.retrain);
        let mut taken: Vec<Option<(Vec<usize>, f64)>> = ranked.into_iter().map(Some).collect();
        ranked = order.into_iter().filter_map(|i| taken[i].take()).collect();
    }
    let mut chosen = vec![(tag::PICK.to_owned(), pick_child.clone())];
    for (rank, (key, reward)) in ranked.into_iter().take(args.retrain).enumerate() {
        chosen.push((
            tag::top(rank + 1),
            describe(&mut net, &key, Some(reward), &mut quality_of, &mut cost_of)?,
        ));
    }
    progress(&format!(
        "controller: pick {} (predicted {:.5} J per 1000 rows, estimated; inherited accuracy {:.4})",
        pick_child.spec, pick_child.predicted_inference_j_per_1k, pick_child.inherited_val_accuracy
    ));
    if let Some(s) = session {
        s.close();
    }

    // The supernet's and controller's energy, as a trial of its own.
    let worker = WorkerIdentity::current(0);
    let existing = study.trials()?;
    let has_tag = |t: &str| {
        existing
            .iter()
            .any(|r| r.tag.as_deref() == Some(t) && r.status == TrialStatus::Finished)
    };
    if !has_tag(tag::SUPERNET) {
        let spec = space.child_spec(&space.largest())?;
        let mut result = TrialResult::default();
        result
            .metrics
            .insert(metric::SUPERNET_EPOCHS.into(), args.supernet_epochs as f64);
        result.metrics.insert(
            metric::CONTROLLER_STEPS.into(),
            controller.state().next_step as f64,
        );
        if let Some(e) = supernet_energy {
            result
                .metrics
                .insert(metric::SUPERNET_ENERGY_J.into(), e.joules);
        }
        if let Some(e) = controller_energy {
            result
                .metrics
                .insert(metric::CONTROLLER_ENERGY_J.into(), e.joules);
        }
        if let Some(total) = EnergySum::plus(supernet_energy, controller_energy) {
            result.energy_spent_j = Some(total.joules);
            result.provenance = Some(total.provenance);
            result
                .metrics
                .insert(TrialMetric::EnergySpentSigmaJ.name().into(), total.sigma_j);
        }
        result.notes.push(format!(
            "one-shot search overhead: supernet ({} epochs, sandwich rule) and controller ({} \
             steps) measured by energyd in the searching process; not a trained child",
            args.supernet_epochs,
            controller.state().next_step
        ));
        result.notes.extend(notes.iter().cloned());
        record_trial(
            &mut study,
            &worker,
            spec_config(&spec, "supernet", args.supernet_epochs)?,
            Some(tag::SUPERNET),
            &Ok(result),
            0,
        )?;
    }

    // Phase 3: retrain from scratch, as `search` trains its trials.
    let evaluator = TrainingEvaluator {
        exe: std::env::current_exe().context("locating the nas-client executable")?,
        data: DataSource::Bundled(args.dataset.clone()),
        socket: args.socket.clone(),
        threads,
        measure_inference: true,
    };
    let mut retrained = Vec::new();
    for (i, (t, child)) in chosen.iter().enumerate() {
        let found = study
            .trials()?
            .into_iter()
            .find(|r| r.tag.as_deref() == Some(t.as_str()) && r.status == TrialStatus::Finished);
        let record = match found {
            Some(r) => r,
            None => {
                let spec = space.child_spec(&child.choice)?;
                let config = spec_config(&spec, "child", args.retrain_epochs)?;
                let seed = args.seed.wrapping_add(i as u64);
                progress(&format!(
                    "retraining {t}: {} ({} epochs, child process measured by energyd)",
                    child.spec, args.retrain_epochs
                ));
                let started = MonotonicNs::now();
                let outcome = evaluator
                    .evaluate(&config, 1.0, seed)
                    .map(|mut r| {
                        add_prediction(&mut r, &model, &spec, &shape, threads, child);
                        r
                    })
                    .map_err(|e| e.to_string());
                let eval_ns = MonotonicNs::now().saturating_sub(started);
                let number = record_trial(&mut study, &worker, config, Some(t), &outcome, eval_ns)?;
                study
                    .trials()?
                    .into_iter()
                    .find(|r| r.number == number)
                    .context("the stored trial is not in the study")?
            }
        };
        let m = record.metrics.clone().unwrap_or_default();
        retrained.push(RetrainedTrial {
            number: record.number,
            tag: t.clone(),
            child: child.clone(),
            val_accuracy: m.get(TrialMetric::ValAccuracy.name()).copied(),
            inference_energy_j_per_1k: m.get(TrialMetric::InferenceEnergyJPer1k.name()).copied(),
            energy_spent_j: record.energy_spent_j,
            provenance: record.provenance,
        });
        if let Some(e) = &record.error {
            progress(&format!("retraining {t} failed: {e}"));
        }
    }
    Ok(OneshotSummary {
        study: args.study.to_string(),
        supernet_epochs: done,
        supernet_epochs_trained_now: trained_now,
        resumed_from_epoch,
        supernet_energy,
        controller_energy,
        controller_steps: controller.state().next_step,
        children_evaluated,
        rejected_steps,
        energy: controller.state().settings.energy.clone(),
        pick: pick_child,
        pick_probability: pick.probability,
        space_predicted_j_per_1k: space_range,
        retrained,
        notes,
    })
}

/// `k` of `candidates` (inherited accuracy, predicted energy), greedily:
/// each time the one adding the most hypervolume (accuracy maximised from
/// 0, energy minimised up to 1.1 × the largest energy of all points) to
/// `fixed` and those already chosen. Ties, and candidates adding nothing
/// once the front is covered, go to the earliest (the caller orders
/// candidates best by reward first). Greedy selection is the usual
/// approximation of the best subset (hypervolume is submodular: within
/// 1 − 1/e of the optimum).
fn front_choice(fixed: &[(f64, f64)], candidates: &[(f64, f64)], k: usize) -> Vec<usize> {
    let e_ref = 1.1
        * fixed
            .iter()
            .chain(candidates)
            .map(|p| p.1)
            .fold(f64::MIN_POSITIVE, f64::max);
    let reference = [0.0, e_ref];
    let as_min = |p: &(f64, f64)| vec![-p.0, p.1];
    let mut set: Vec<Vec<f64>> = fixed.iter().map(as_min).collect();
    let mut order = Vec::new();
    let mut left: Vec<usize> = (0..candidates.len()).collect();
    while order.len() < k && !left.is_empty() {
        let base = hypervolume(&set, &reference);
        let mut best = (0, f64::NEG_INFINITY);
        for (j, &i) in left.iter().enumerate() {
            set.push(as_min(&candidates[i]));
            let gain = hypervolume(&set, &reference) - base;
            set.pop();
            if gain > best.1 {
                best = (j, gain);
            }
        }
        let i = left.remove(best.0);
        set.push(as_min(&candidates[i]));
        order.push(i);
    }
    order
}

/// A run stopped on purpose (`--stop-after-epochs`): an error, so a
/// caller never mistakes it for a finished search.
fn bail_stopped(done: usize) -> Result<()> {
    bail!("stopped after supernet epoch {done} as asked (--stop-after-epochs); the checkpoint is kept, rerun the same command to resume")
}

fn energy_text(e: Option<EnergySum>) -> String {
    e.map_or("not measured".to_owned(), |e| {
        format!("{:.3} J ± {:.3} ({})", e.joules, e.sigma_j, e.provenance)
    })
}

/// The retrained trial's predicted energy (estimated) and what the
/// supernet said of it, beside its measured figures.
fn add_prediction(
    result: &mut TrialResult,
    model: &EnergyModel,
    spec: &ModelSpec,
    shape: &DatasetShape,
    threads: usize,
    child: &EvaluatedChild,
) {
    result.metrics.insert(
        TrialMetric::PredictedInferenceEnergyJPer1k.name().into(),
        child.predicted_inference_j_per_1k,
    );
    let epochs = result
        .metrics
        .get(TrialMetric::EpochsRun.name())
        .map_or(1, |&e| e.round().max(1.0) as usize);
    let run = network_run(
        &TrainConfig {
            model: spec.clone(),
            threads,
            ..TrainConfig::default()
        },
        shape,
        epochs,
    );
    if let Ok(p) = model.predict(&run) {
        for (m, v) in [
            (
                TrialMetric::PredictedInferenceEnergySigma,
                p.inference_uncertainty_j_per_1000_rows,
            ),
            (TrialMetric::PredictedTrainingEnergyJ, p.training_j),
        ] {
            if v.is_finite() {
                result.metrics.insert(m.name().into(), v);
            }
        }
    }
    result.metrics.insert(
        metric::INHERITED_VAL_ACCURACY.into(),
        child.inherited_val_accuracy,
    );
    result
        .metrics
        .insert(metric::CONTROLLER_REWARD.into(), child.reward);
    result.notes.push(format!(
        "one-shot child {:?}: predicted inference energy from calibration {} (estimated); \
         accuracy with inherited supernet weights {:.4}",
        child.choice,
        model.path().display(),
        child.inherited_val_accuracy
    ));
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::search::trainer::train_config;

    #[test]
    fn rewards_parse_with_their_defaults_and_refuse_bad_values() {
        assert_eq!(
            parse_reward("mnas:0.5:-0.1").unwrap(),
            MnasReward {
                target_j_per_1k: 0.5,
                exponent: -0.1
            }
        );
        assert_eq!(parse_reward("mnas:2").unwrap().exponent, MNAS_SOFT_EXPONENT);
        for bad in [
            "abs:1",
            "mnas",
            "mnas:0:-0.1",
            "mnas:1:0.2",
            "mnas:1:-1:3",
            "mnas:x",
        ] {
            assert!(parse_reward(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn a_child_is_stored_as_the_network_its_retraining_builds() {
        for backbone in [
            OneshotBackbone::Mlp,
            OneshotBackbone::Resnet,
            OneshotBackbone::FtTransformer,
        ] {
            let space = default_space(backbone).unwrap();
            for choice in [space.smallest(), space.largest()] {
                let spec = space.child_spec(&choice).unwrap();
                let config = spec_config(&spec, "child", 7).unwrap();
                let trained = train_config(&config, 1.0).unwrap();
                assert_eq!(trained.model, spec, "{backbone:?} {choice:?}");
                assert_eq!(trained.epochs, 7);
                // And the study's space holds it.
                let study_space =
                    SearchSpace::from_toml_str(ONESHOT_SPACE_TOML, "oneshot space").unwrap();
                study_space.validate(&config).unwrap();
            }
        }
    }

    #[test]
    fn differing_settings_are_named() {
        let a = RunSettings {
            dataset: "adult".into(),
            backbone: OneshotBackbone::Mlp,
            supernet_epochs: 3,
            controller_steps: 10,
            energy: EnergyHandling::QualityOnly,
            retrain: 3,
            retrain_by: RetrainChoice::Reward,
            retrain_epochs: 5,
            seed: 0,
            threads: 1,
        };
        let b = RunSettings {
            supernet_epochs: 4,
            ..a.clone()
        };
        let d = a.differences(&b);
        assert_eq!(d, vec!["supernet_epochs: stored 3, given 4".to_owned()]);
        assert!(a.differences(&a).is_empty());
    }

    #[test]
    fn phases_sum_in_quadrature_with_the_weakest_provenance() {
        let phase = |j: f64, s: f64, p: Provenance| PhaseEnergy {
            from_ns: 0,
            to_ns: 1,
            process_j: j,
            uncertainty_j: s,
            provenance: p,
            domains: Vec::new(),
            kernels: Vec::new(),
            notes: Vec::new(),
        };
        let a = EnergySum::add(None, &phase(1.0, 0.3, Provenance::Measured));
        let b = EnergySum::add(Some(a), &phase(2.0, 0.4, Provenance::Estimated));
        assert!((b.joules - 3.0).abs() < 1e-12);
        assert!((b.sigma_j - 0.5).abs() < 1e-12);
        assert_eq!(
            b.provenance,
            Provenance::Measured.combine(Provenance::Estimated)
        );
    }

    #[test]
    fn front_choice_spreads_the_final_set_over_the_front() {
        // The pick at (0.90, 10). Candidates, best by reward first: two
        // near copies of the pick, a cheap one and a middle one.
        let fixed = [(0.90, 10.0)];
        let candidates = [(0.89, 10.0), (0.90, 9.9), (0.70, 1.0), (0.85, 5.0)];
        // Reference energy 11. Gains alone: (0.90, 9.9) adds 0.1·0.90 =
        // 0.09; (0.70, 1.0) adds 0.70·9 = 6.3; (0.85, 5.0) adds
        // 0.85·5 = 4.25; the dominated copy adds 0. After the cheap one,
        // (0.85, 5.0) adds (0.85 − 0.70)·4 = 0.6, still the most.
        assert_eq!(front_choice(&fixed, &candidates, 2), vec![2, 3]);
        // Once nothing adds hypervolume the earliest (best by reward)
        // comes next: (0.90, 9.9) adds 0.09 > 0 before the copy.
        assert_eq!(front_choice(&fixed, &candidates, 4), vec![2, 3, 1, 0]);
        assert!(front_choice(&fixed, &[], 3).is_empty());
    }
}
