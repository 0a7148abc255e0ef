//! `nas-client grow`: growing a network by splitting steepest descent
//! (the `splitting` crate) instead of searching a space.
//!
//! A narrow seed network (MLP or ResNet) is trained, then each round:
//! splitting matrices (or `S·v` products) on the training split → each
//! hidden neuron's minimum eigenpair → selection (plain quantile, or the
//! energy knapsack LP priced by the calibrated energy model) → split →
//! fine-tune. Every round, the seed's training included, is stored as a
//! trial of a nas-search study (its spec as the configuration, accuracy,
//! measured inference and training energy, the round's search energy:
//! eigen phase plus fine-tuning), so `nas-client report` plots the growth
//! path like a search's trials. The grown weights of each round are kept
//! beside the study (`STUDY.grow/round-N.json`), so a stopped run resumes
//! at the next round.

use anyhow::{bail, Context, Result};
use clap::{Args, ValueEnum};
use energy_model::Calibration;
use nas_search::evaluator::TrialResult;
use nas_search::objective::ObjectiveSet;
use nas_search::space::{Config, ParamValue, SearchSpace};
use nas_search::study::{Study, StudyLocation, StudySpec, TrialStatus, WorkerIdentity};
use nn_plan::{Activation, Backbone, DatasetShape, ModelSpec, Norm, RunShape};
use serde::{Deserialize, Serialize};
use shared::MonotonicNs;
use splitting::cost::{price_by_flops, price_with_calibration};
use splitting::{
    apply_splits, exact_eigenpairs, fast_eigenpairs, select_energy_aware, select_plain,
    split_sites, splitting_matrices, NeuronCosts, NeuronEigen, RayleighConfig, SplitPlan,
};
use std::path::{Path, PathBuf};
use tabular_nn::data::{bundled, Dataset, Task};
use tabular_nn::meter::PhaseMeter;
use tabular_nn::model::{BuildNetwork, Network};
use tabular_nn::session::ProcessSession;
use tabular_nn::train::{train_network, LossKind, TrainConfig, TrainReport};

use crate::search::trainer::{
    architecture_params, metric, record_trial, trial_result, TrialMetric,
};
use nas_search::metric::{MetricInfo, MetricRegistry};
use nas_search::objective::Direction;

/// The search space a growth study's trials are stored in: the spec of
/// each round's network, the variant and the round.
const GROW_SPACE_TOML: &str = r#"
[[param]]
name = "variant"
type = "categorical"
choices = ["plain", "energy_aware"]

[[param]]
name = "round"
type = "int"
low = 0
high = 1000

[[param]]
name = "backbone"
type = "categorical"
choices = ["mlp", "resnet"]

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
high = 8

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
name = "width_5"
type = "int"
low = 1
high = 65536
when = { param = "n_layers", at_least = 5 }

[[param]]
name = "width_6"
type = "int"
low = 1
high = 65536
when = { param = "n_layers", at_least = 6 }

[[param]]
name = "width_7"
type = "int"
low = 1
high = 65536
when = { param = "n_layers", at_least = 7 }

[[param]]
name = "width_8"
type = "int"
low = 1
high = 65536
when = { param = "n_layers", at_least = 8 }
"#;

/// Most hidden layers a seed may have (the stored space's widths).
const MAX_LAYERS: usize = 8;

/// Which eigensolver.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Solver {
    /// Symmetric eigendecomposition of each averaged splitting matrix.
    Exact,
    /// Rayleigh-quotient RMSprop on `S·v` products (the fast variant).
    Fast,
}

/// Arguments of `nas-client grow`.
#[derive(Debug, Clone, Args)]
pub struct GrowArgs {
    /// Bundled dataset (see `nas-client datasets`); classification.
    #[arg(long)]
    pub dataset: String,
    /// Energy-aware selection (LP knapsack priced per neuron) instead of
    /// the plain bottom-quantile rule.
    #[arg(long)]
    pub energy_aware: bool,
    /// Splitting rounds after the seed's training.
    #[arg(long, default_value_t = 3)]
    pub rounds: usize,
    /// Energy-aware round budget, as a fraction of what the splittable
    /// neurons cost now (Σ neurons × one neuron's cost, the reference's
    /// `grow·Σ channels·f`).
    #[arg(long, default_value_t = 0.3)]
    pub budget: f64,
    /// Plain rule: split the neurons below this quantile of λ_min (and
    /// negative).
    #[arg(long, default_value_t = 0.3)]
    pub grow_rate: f64,
    /// Study the rounds are stored in (created, or resumed): a SQLite
    /// file (round weights in `STUDY.grow/`) or a `postgresql://` URL
    /// (round weights in --checkpoints).
    #[arg(long)]
    pub study: StudyLocation,
    /// Directory of the round weights (default: `STUDY.grow` beside a
    /// SQLite study, `NAME.grow` in the current directory for a
    /// PostgreSQL study named NAME).
    #[arg(long)]
    pub checkpoints: Option<PathBuf>,
    /// Calibration file pricing a neuron's energy; without one a FLOPs
    /// fallback prices it (and is labelled so).
    #[arg(long)]
    pub calibration: Option<PathBuf>,
    /// Seed backbone.
    #[arg(long, default_value = "mlp")]
    pub backbone: String,
    /// Seed widths (`8-8`; for a ResNet the main width then each block's
    /// hidden width).
    #[arg(long, default_value = "8-8")]
    pub seed_widths: String,
    /// Widest a hidden layer may grow.
    #[arg(long, default_value_t = 256)]
    pub max_width: usize,
    /// Activation (ReLU's σ'' is the softplus β = 3 surrogate).
    #[arg(long, default_value = "relu")]
    pub activation: String,
    /// Normalisation: none or batch (layer norm cannot split per neuron).
    #[arg(long, default_value = "batch")]
    pub norm: String,
    /// Eigensolver.
    #[arg(long, value_enum, default_value = "exact")]
    pub solver: Solver,
    /// Offspring offset along the unit eigenvector.
    #[arg(long, default_value_t = splitting::DEFAULT_EPSILON)]
    pub epsilon: f32,
    /// Epochs of the seed's training.
    #[arg(long, default_value_t = 20)]
    pub seed_epochs: usize,
    /// Epochs of fine-tuning after each split.
    #[arg(long, default_value_t = 10)]
    pub finetune_epochs: usize,
    /// Learning rate (AdamW, as `nas-client train`).
    #[arg(long, default_value_t = 1e-3)]
    pub lr: f32,
    /// Rows per training step and per splitting-matrix batch.
    #[arg(long, default_value_t = 128)]
    pub batch_size: usize,
    /// Each round's inference phase (forward passes over the test split,
    /// repeated) runs at least this long, so its measured energy per 1000
    /// rows stands well above what energyd resolves (the trainer's default
    /// is 300 ms; small grown networks need seconds on an estimated
    /// source).
    #[arg(long, default_value_t = 300)]
    pub inference_min_ms: u64,
    /// Threads.
    #[arg(long)]
    pub threads: Option<usize>,
    /// energyd socket (the default socket when absent).
    #[arg(long)]
    pub socket: Option<PathBuf>,
    /// Do not measure energy (then the study's energy objective is FLOPs).
    #[arg(long)]
    pub no_energy: bool,
    /// Seed of initialisation and shuffling.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
}

/// What a round leaves for the next (and for a resumed run).
#[derive(Serialize, Deserialize)]
struct Checkpoint {
    round: usize,
    spec: ModelSpec,
    inputs: usize,
    outputs: usize,
    weights: Vec<Vec<f32>>,
}

/// Where round weights are kept: `--checkpoints`, or `STUDY.grow` beside
/// a SQLite study, or `NAME.grow` here for a PostgreSQL study.
fn checkpoint_dir(study: &StudyLocation, given: Option<&Path>) -> PathBuf {
    if let Some(dir) = given {
        return dir.to_path_buf();
    }
    match study {
        StudyLocation::Sqlite(file) => {
            let mut dir = file.as_os_str().to_owned();
            dir.push(".grow");
            PathBuf::from(dir)
        }
        StudyLocation::Postgres(pg) => PathBuf::from(format!("{}.grow", pg.study())),
    }
}

fn checkpoint_path(dir: &Path, round: usize) -> PathBuf {
    dir.join(format!("round-{round}.json"))
}

fn save_checkpoint(dir: &Path, round: usize, net: &mut Network) -> Result<()> {
    let spec = net.spec().context("the grown network has no spec")?;
    let c = Checkpoint {
        round,
        spec,
        inputs: net.inputs,
        outputs: net.outputs,
        weights: net.snapshot(),
    };
    let path = checkpoint_path(dir, round);
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let json = serde_json::to_vec(&c)?;
    std::fs::write(&path, json).with_context(|| format!("writing {}", path.display()))
}

fn load_checkpoint(dir: &Path, round: usize) -> Result<Network> {
    let path = checkpoint_path(dir, round);
    load_round_file(&path)
        .with_context(|| format!("the study has round {round}; its weights are needed to resume"))
}

/// The network a growth round saved (`STUDY.grow/round-N.json`): its spec
/// rebuilt and its weights restored, checked against each other.
pub fn load_round_file(path: &Path) -> Result<Network> {
    let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    let c: Checkpoint =
        serde_json::from_slice(&bytes).with_context(|| format!("parsing {}", path.display()))?;
    let mut net = c
        .spec
        .build(c.inputs, c.outputs, 0)
        .with_context(|| format!("{}: its spec does not build", path.display()))?;
    let expected = net.snapshot();
    let shapes_match = expected.len() == c.weights.len()
        && expected
            .iter()
            .zip(&c.weights)
            .all(|(a, b)| a.len() == b.len());
    if !shapes_match {
        bail!("{}: the weights do not fit its spec", path.display());
    }
    net.restore(&c.weights);
    Ok(net)
}

/// The stored configuration of a round's network.
fn round_config(spec: &ModelSpec, variant: &str, round: usize) -> Result<Config> {
    let mut map = architecture_params(spec)?;
    map.insert("variant".into(), ParamValue::Str(variant.into()));
    map.insert("round".into(), ParamValue::Int(round as i64));
    Ok(Config(map))
}

fn seed_spec(args: &GrowArgs) -> Result<ModelSpec> {
    let backbone = Backbone::parse(&args.backbone, &args.seed_widths)
        .map_err(|e| anyhow::anyhow!("--backbone/--seed-widths: {e}"))?;
    let layers = match &backbone {
        Backbone::Mlp { widths } => widths.len(),
        Backbone::Resnet { d_hidden, .. } => d_hidden.len(),
        _ => 0,
    };
    if layers == 0 || layers > MAX_LAYERS {
        bail!("--seed-widths: 1 to {MAX_LAYERS} hidden layers, got {layers}");
    }
    let activation = Activation::parse(&args.activation)
        .with_context(|| format!("--activation: unknown activation {:?}", args.activation))?;
    let norm = Norm::parse(&args.norm)
        .with_context(|| format!("--norm: unknown normalisation {:?}", args.norm))?;
    if norm == Norm::Layer {
        bail!("--norm layer: a layer norm mixes neurons, so they cannot split one by one; use none or batch");
    }
    Ok(ModelSpec {
        backbone,
        activation,
        dropout: 0.0,
        norm,
    })
}

fn variant(args: &GrowArgs) -> &'static str {
    if args.energy_aware {
        "energy_aware"
    } else {
        "plain"
    }
}

/// Objectives of the growth study: accuracy against measured inference
/// energy, or against FLOPs when energy is not measured.
fn objectives(no_energy: bool) -> Result<ObjectiveSet> {
    let text = if no_energy {
        format!(
            "{}:max:ref=0:ideal=1,{}:min",
            metric::VAL_ACCURACY,
            metric::FLOPS
        )
    } else {
        crate::search::DEFAULT_OBJECTIVES.to_owned()
    };
    let list = text
        .split(',')
        .map(nas_search::objective::Objective::parse)
        .collect::<Result<Vec<_>, _>>()?;
    Ok(ObjectiveSet::new(list)?)
}

/// One growth round's outcome, as printed.
struct RoundLine {
    round: usize,
    spec: String,
    splits: usize,
    lambda_sum: f64,
    report: TrainReport,
    search_j: Option<f64>,
}

fn print_round(r: &RoundLine) {
    let acc = r.report.val.accuracy.unwrap_or(f64::NAN);
    let energy = r
        .report
        .energy
        .as_ref()
        .and_then(|e| e.inference_j_per_1000_rows)
        .map_or("-".to_owned(), |j| format!("{j:.4} J/1k"));
    let search = r.search_j.map_or("-".to_owned(), |j| format!("{j:.2} J"));
    eprintln!(
        "grow round {}: {} | {} splits (Σλ {:.3e}) | val acc {:.4} | inference {} | search {}",
        r.round, r.spec, r.splits, r.lambda_sum, acc, energy, search
    );
}

/// The trainer's metrics and the ones a growth round adds.
fn grow_registry() -> Result<MetricRegistry> {
    let round = [
        MetricInfo::measured(ROUND, "round", Direction::Minimize),
        MetricInfo::measured(SPLITS, "neurons split", Direction::Minimize),
        MetricInfo::measured(
            LAMBDA_SUM,
            "loss per ε² (Σλ of the split neurons)",
            Direction::Minimize,
        ),
        MetricInfo::measured(EIGEN_ENERGY_J, "J", Direction::Minimize),
    ];
    let trainer = TrialMetric::ALL.iter().map(|m| m.info());
    Ok(MetricRegistry::new(trainer.chain(round))?)
}

/// Names of the metrics a growth round adds to its trial.
const ROUND: &str = "round";
const SPLITS: &str = "splits";
const LAMBDA_SUM: &str = "lambda_sum";
const EIGEN_ENERGY_J: &str = "eigen_energy_j";

/// Runs `nas-client grow`.
pub fn grow(args: GrowArgs) -> Result<()> {
    let dataset = bundled::load(&args.dataset, 0)
        .with_context(|| format!("loading bundled dataset {}", args.dataset))?;
    if dataset.task == Task::Regression {
        bail!(
            "--dataset {}: growth is stored against accuracy; pick a classification dataset",
            args.dataset
        );
    }
    let seed = seed_spec(&args)?;
    let space = SearchSpace::from_toml_str(GROW_SPACE_TOML, "grow space")?;
    let spec = StudySpec {
        space,
        objectives: objectives(args.no_energy)?,
        strategy: format!("splitting:{}:{:?}", variant(&args), args.solver).to_lowercase(),
        seed: args.seed,
        metrics: grow_registry()?,
    };
    let mut study = Study::open(&args.study, spec, true)
        .with_context(|| format!("opening study {}", args.study))?;
    let checkpoints = checkpoint_dir(&args.study, args.checkpoints.as_deref());
    let done: Vec<u64> = study
        .trials()?
        .iter()
        .filter(|t| t.status == TrialStatus::Finished)
        .map(|t| t.number)
        .collect();
    let first_round = done.len();
    let calibration = match &args.calibration {
        Some(p) => Some(
            Calibration::load(p, false)
                .with_context(|| format!("loading calibration {}", p.display()))?,
        ),
        None => None,
    };
    if args.energy_aware && calibration.is_none() {
        eprintln!(
            "nas-client grow: no --calibration: a neuron's cost is its forward FLOPs (fallback, not energy)"
        );
    }
    let threads = args.threads.unwrap_or_else(tabular_nn::threads::available);
    let base_config = TrainConfig {
        model: seed.clone(),
        lr: args.lr,
        batch_size: args.batch_size,
        epochs: args.seed_epochs,
        patience: None,
        seed: args.seed,
        threads,
        inference_min_ns: args.inference_min_ms.saturating_mul(1_000_000),
        ..TrainConfig::default()
    };
    let mut session = None;
    if !args.no_energy {
        let socket = args
            .socket
            .clone()
            .unwrap_or_else(shared::paths::client_default_socket);
        match ProcessSession::connect(&socket, "nas-client", false) {
            Ok(s) => session = Some(s),
            Err(e) => eprintln!("nas-client grow: energyd not reachable ({e}); no energy figures"),
        }
    }
    let mut net = if first_round == 0 {
        seed.build(dataset.n_features(), dataset.n_outputs(), args.seed)?
    } else {
        eprintln!(
            "nas-client grow: resuming {} after round {}",
            args.study,
            first_round - 1
        );
        load_checkpoint(&checkpoints, first_round - 1)?
    };
    let loss = LossKind::SoftmaxCrossEntropy;
    let worker = WorkerIdentity::current(0);
    for round in first_round..=args.rounds {
        let started = MonotonicNs::now();
        let mut splits = 0;
        let mut lambda_sum = 0.0;
        let mut eigen_j = None;
        let mut notes = Vec::new();
        if round > 0 {
            let t0 = MonotonicNs::now();
            let (eigs, sites) = eigenpairs(&mut net, &dataset, loss, &args)?;
            let caps: Vec<usize> = sites
                .iter()
                .map(|s| s.width.min(args.max_width.saturating_sub(s.width)))
                .collect();
            let selection = if args.energy_aware {
                let costs = neuron_costs(
                    &mut net,
                    &dataset,
                    calibration.as_ref(),
                    &base_config,
                    &sites,
                )?;
                notes.push(format!(
                    "neuron cost in {}: {:?}",
                    costs.source.unit(),
                    costs.per_site
                ));
                // The reference's budget: `grow` × Σ over layers of
                // neurons × one neuron's cost (its `grow·Σ channels·f`),
                // i.e. a fraction of what the splittable neurons cost, not
                // of the whole network's energy, whose per-call overhead
                // would let a small network double at every round.
                let neurons_cost: f64 = sites
                    .iter()
                    .zip(&costs.per_site)
                    .map(|(site, cost)| site.width as f64 * cost)
                    .sum();
                let budget = args.budget * neurons_cost;
                select_energy_aware(&eigs, &costs.per_site, budget, &caps)?
            } else {
                select_plain(&eigs, args.grow_rate, &caps)
            };
            let plans: Vec<SplitPlan> = selection
                .chosen
                .iter()
                .map(|&i| SplitPlan {
                    site: eigs[i].site,
                    neuron: eigs[i].neuron,
                    direction: eigs[i].direction.clone(),
                })
                .collect();
            splits = plans.len();
            lambda_sum = selection.lambda_sum;
            apply_splits(&mut net, &sites, &plans, args.epsilon, None)?;
            let t1 = MonotonicNs::now();
            if let Some(s) = session.as_mut() {
                match PhaseMeter::phase(s, t0, t1) {
                    Ok(p) => eigen_j = Some(p.process_j),
                    Err(e) => notes.push(format!("eigen phase not measured: {e}")),
                }
            }
        }
        let model = net.spec().context("the grown network has no spec")?;
        let config = TrainConfig {
            model: model.clone(),
            epochs: if round == 0 {
                args.seed_epochs
            } else {
                args.finetune_epochs
            },
            seed: args.seed.wrapping_add(round as u64),
            ..base_config.clone()
        };
        let meter = session.as_mut().map(|s| s as &mut dyn PhaseMeter);
        let (report, trained) = train_network(&dataset, &config, net, meter, &mut |_| {})?;
        net = trained;
        let mut result: TrialResult =
            trial_result(&report).map_err(|e| anyhow::anyhow!("round {round}: {e}"))?;
        result.metrics.insert(ROUND.into(), round as f64);
        result.metrics.insert(SPLITS.into(), splits as f64);
        result.metrics.insert(LAMBDA_SUM.into(), lambda_sum);
        if let Some(j) = eigen_j {
            result.metrics.insert(EIGEN_ENERGY_J.into(), j);
            result.energy_spent_j = result.energy_spent_j.map(|t| t + j);
        }
        result.notes.extend(notes);
        result.notes.push(format!(
            "splitting round {round} ({}), {} splits, solver {:?}, ε {}",
            variant(&args),
            splits,
            args.solver,
            args.epsilon
        ));
        let eval_ns = MonotonicNs::now().saturating_sub(started);
        record_trial(
            &mut study,
            &worker,
            round_config(&model, variant(&args), round)?,
            None,
            &Ok(result.clone()),
            eval_ns,
        )?;
        save_checkpoint(&checkpoints, round, &mut net)?;
        print_round(&RoundLine {
            round,
            spec: model.describe(),
            splits,
            lambda_sum,
            report,
            search_j: result.energy_spent_j,
        });
    }
    if let Some(s) = session {
        s.close();
    }
    Ok(())
}

/// Minimum eigenpairs of every neuron on the training split, with the
/// sites they refer to.
fn eigenpairs(
    net: &mut Network,
    dataset: &Dataset,
    loss: LossKind,
    args: &GrowArgs,
) -> Result<(Vec<NeuronEigen>, Vec<splitting::SplitSite>)> {
    let (x, y) = (dataset.train.x.view(), dataset.train.y.view());
    let sites = split_sites(net)?;
    let eigs = match args.solver {
        Solver::Exact => {
            let m = splitting_matrices(net, x, y, loss, args.batch_size)?;
            exact_eigenpairs(&m)
        }
        Solver::Fast => fast_eigenpairs(
            net,
            x,
            y,
            loss,
            args.batch_size,
            RayleighConfig::default(),
            args.seed,
        )?,
    };
    Ok((eigs, sites))
}

/// What one more neuron at each site costs.
fn neuron_costs(
    net: &mut Network,
    dataset: &Dataset,
    calibration: Option<&Calibration>,
    config: &TrainConfig,
    sites: &[splitting::SplitSite],
) -> Result<NeuronCosts> {
    let spec = net.spec()?;
    Ok(match calibration {
        Some(cal) => {
            let data: DatasetShape = dataset.shape();
            let run = RunShape {
                optimizer: config.optimizer,
                batch_size: config.batch_size,
                eval_batch_size: config.eval_batch_size,
                epochs: config.epochs,
                threads: config.threads as u32,
            };
            price_with_calibration(cal, &spec, &data, &run, sites)?
        }
        None => price_by_flops(&spec, net.inputs, net.outputs, sites)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        grow: GrowArgs,
    }

    fn args(study: &Path, extra: &[&str]) -> GrowArgs {
        let mut argv = vec![
            "grow",
            "--dataset",
            "credit_g",
            "--no-energy",
            "--seed-epochs",
            "2",
            "--finetune-epochs",
            "1",
            "--threads",
            "1",
            "--study",
        ];
        let study = study.to_str().expect("utf-8 temp path");
        argv.push(study);
        argv.extend_from_slice(extra);
        Cli::parse_from(argv).grow
    }

    /// Rounds are stored as trials of a study (the seed, then each split
    /// network, widths growing), and a second run resumes after the last
    /// stored round from its saved weights.
    #[test]
    fn rounds_become_trials_and_a_run_resumes() {
        let dir = tempfile::tempdir().unwrap();
        let study = dir.path().join("grow.db");
        grow(args(&study, &["--rounds", "1", "--energy-aware"])).expect("first run");
        grow(args(&study, &["--rounds", "2", "--energy-aware"])).expect("resumed run");
        let mut s = Study::open_existing(&study).unwrap();
        let trials = s.trials().unwrap();
        assert_eq!(trials.len(), 3);
        let mut last_params = 0.0;
        for (round, t) in trials.iter().enumerate() {
            assert_eq!(t.status, TrialStatus::Finished);
            let m = t.metrics.as_ref().expect("metrics");
            assert_eq!(m["round"], round as f64);
            assert!(m[metric::VAL_ACCURACY] > 0.0);
            assert!(m[metric::PARAMS] >= last_params, "networks only grow");
            last_params = m[metric::PARAMS];
            assert_eq!(
                t.config.0.get("variant"),
                Some(&ParamValue::Str("energy_aware".into()))
            );
        }
        let dir = checkpoint_dir(&StudyLocation::Sqlite(study.clone()), None);
        assert!(checkpoint_path(&dir, 2).exists());
        // A different variant is another study: refused here.
        assert!(grow(args(&study, &["--rounds", "3"])).is_err());
    }
}
