//! The flags of `nas-client train` and what they turn into: the dataset
//! ([`load_dataset`]) and the [`TrainConfig`] ([`config_from`]). In the
//! library rather than the binary so that a search, which runs each trial as
//! a `nas-client train` child, can build exactly the configuration that
//! child will train from the same flags ([`parse_train_flags`]) — for
//! instance to predict its energy from a calibration before training it.

use crate::data::{bundled, ColumnKind, Dataset, LoadOptions, Task};
use crate::model::layers::{Activation, Norm};
use crate::model::{Backbone, ModelSpec};
use crate::train::{OptimizerKind, Schedule, TrainConfig};
use anyhow::{bail, Context, Result};
use clap::{Args, Parser};
use std::path::PathBuf;

/// Flags of `nas-client train`.
#[derive(Args, Debug, Clone)]
pub struct TrainArgs {
    /// Bundled dataset (see `nas-client datasets`).
    #[arg(long, conflicts_with = "data", required_unless_present = "data")]
    pub dataset: Option<String>,
    /// A CSV or TSV file, gzipped or not, with a header row.
    #[arg(long, requires = "target")]
    pub data: Option<PathBuf>,
    /// Target column of --data (by name).
    #[arg(long)]
    pub target: Option<String>,
    /// Task: auto, binary, multiclass, regression.
    #[arg(long, default_value = "auto")]
    pub task: String,
    /// Columns to treat as categorical (comma-separated).
    #[arg(long, value_delimiter = ',')]
    pub categorical: Vec<String>,
    /// Columns to treat as numeric (comma-separated).
    #[arg(long, value_delimiter = ',')]
    pub numeric: Vec<String>,
    /// Seed of the train/validation/test split.
    #[arg(long, default_value_t = 0)]
    pub split_seed: u64,
    /// Backbone: mlp or resnet.
    #[arg(long, default_value = "mlp")]
    pub backbone: String,
    /// Widths: MLP hidden widths ('256-256'); ResNet 'D_MAIN-D_HIDDEN[-D_HIDDEN..]' (one per block).
    #[arg(long, default_value = "256-256")]
    pub arch: String,
    /// Activation: relu, gelu, silu, tanh, selu.
    #[arg(long, default_value = "relu")]
    pub activation: String,
    /// Dropout probability.
    #[arg(long, default_value_t = 0.1)]
    pub dropout: f32,
    /// Normalisation: none, batch, layer.
    #[arg(long, default_value = "none")]
    pub norm: String,
    /// Optimizer: adamw or sgd.
    #[arg(long, default_value = "adamw")]
    pub optimizer: String,
    /// Peak learning rate.
    #[arg(long, default_value_t = 1e-3)]
    pub lr: f32,
    /// Weight decay.
    #[arg(long, default_value_t = 1e-5)]
    pub weight_decay: f32,
    /// AdamW β₁ or SGD momentum.
    #[arg(long, default_value_t = 0.9)]
    pub momentum: f32,
    /// Mini-batch size.
    #[arg(long, default_value_t = 256)]
    pub batch_size: usize,
    /// Maximum epochs.
    #[arg(long, default_value_t = 40)]
    pub epochs: usize,
    /// Warm-up epochs (fractional allowed).
    #[arg(long, default_value_t = 1.0)]
    pub warmup: f32,
    /// Learning-rate schedule: cosine or constant.
    #[arg(long, default_value = "cosine")]
    pub schedule: String,
    /// Early-stopping patience in epochs; 0 trains every epoch.
    #[arg(long, default_value_t = 8)]
    pub patience: usize,
    /// Seed of initialisation, shuffling and dropout.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Threads for every heavy op (default: all cores).
    #[arg(long)]
    pub threads: Option<usize>,
    /// Rows per forward pass in evaluation and inference.
    #[arg(long, default_value_t = 4096)]
    pub eval_batch_size: usize,
    /// Minimum inference timing window, ms.
    #[arg(long, default_value_t = 300)]
    pub inference_ms: u64,
    /// energyd socket (default: the user socket if it exists, else the system one).
    #[arg(long)]
    pub socket: Option<PathBuf>,
    /// Do not contact energyd.
    #[arg(long)]
    pub no_energy: bool,
    /// With energyd, measure the training phase only: inference runs for
    /// --inference-ms (latency) and its energy is not asked for.
    #[arg(long)]
    pub no_inference_energy: bool,
    /// Also fit linfa baselines (logistic regression, decision tree / linear regression).
    #[arg(long)]
    pub baselines: bool,
    /// Print one JSON object instead of tables.
    #[arg(long)]
    pub json: bool,
}

/// Loads the dataset the flags name (bundled or a file), with the task,
/// column kinds and split seed they set.
pub fn load_dataset(args: &TrainArgs) -> Result<Dataset> {
    let task = Task::parse(&args.task).with_context(|| {
        format!(
            "--task {:?}: expected auto, binary, multiclass or regression",
            args.task
        )
    })?;
    let apply = |opts: &mut LoadOptions| {
        opts.task = task;
        opts.seed = args.split_seed;
        for c in &args.categorical {
            opts.column_kinds.insert(c.clone(), ColumnKind::Categorical);
        }
        for c in &args.numeric {
            opts.column_kinds.insert(c.clone(), ColumnKind::Numeric);
        }
    };
    match (&args.dataset, &args.data) {
        (Some(name), _) => {
            let d = bundled::find(name)?;
            let mut opts = d.options();
            if let Some(t) = &args.target {
                opts.target = t.clone();
            }
            apply(&mut opts);
            Ok(d.load_with(&opts)?)
        }
        (None, Some(path)) => {
            let target = args
                .target
                .as_deref()
                .context("--data needs --target COLUMN")?;
            let mut opts = LoadOptions::new(target);
            apply(&mut opts);
            Ok(Dataset::from_file(path, &opts)?)
        }
        (None, None) => bail!("give --dataset NAME or --data FILE --target COLUMN"),
    }
}

/// The training configuration of the flags; unknown activations, norms,
/// optimizers and schedules are errors naming the flag.
pub fn config_from(args: &TrainArgs) -> Result<TrainConfig> {
    let backbone = Backbone::parse(&args.backbone, &args.arch)?;
    let activation = Activation::parse(&args.activation).with_context(|| {
        format!(
            "--activation {:?}: expected relu, gelu, silu, tanh or selu",
            args.activation
        )
    })?;
    let norm = Norm::parse(&args.norm)
        .with_context(|| format!("--norm {:?}: expected none, batch or layer", args.norm))?;
    let optimizer = OptimizerKind::parse(&args.optimizer)
        .with_context(|| format!("--optimizer {:?}: expected adamw or sgd", args.optimizer))?;
    let schedule = Schedule::parse(&args.schedule).with_context(|| {
        format!(
            "--schedule {:?}: expected cosine or constant",
            args.schedule
        )
    })?;
    if args.threads == Some(0) {
        bail!("--threads must be at least 1");
    }
    Ok(TrainConfig {
        model: ModelSpec {
            backbone,
            activation,
            dropout: args.dropout,
            norm,
        },
        optimizer,
        lr: args.lr,
        weight_decay: args.weight_decay,
        momentum: args.momentum,
        batch_size: args.batch_size,
        epochs: args.epochs,
        warmup_epochs: args.warmup,
        schedule,
        patience: (args.patience > 0).then_some(args.patience),
        seed: args.seed,
        threads: args.threads.unwrap_or_else(crate::threads::available),
        eval_batch_size: args.eval_batch_size,
        inference_min_ns: args.inference_ms.saturating_mul(1_000_000),
        measure_inference_energy: !args.no_inference_energy,
    })
}

#[derive(Parser)]
#[command(name = "train")]
struct TrainCommandLine {
    #[command(flatten)]
    args: TrainArgs,
}

/// Parses `nas-client train` flags (without the `train` word), as the
/// child process would.
pub fn parse_train_flags<S: AsRef<str>>(flags: &[S]) -> Result<TrainArgs> {
    let argv = std::iter::once("train").chain(flags.iter().map(AsRef::as_ref));
    TrainCommandLine::try_parse_from(argv)
        .map(|c| c.args)
        .map_err(|e| anyhow::anyhow!("train flags: {}", e.to_string().trim()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_become_the_configuration_the_child_trains() {
        let args = parse_train_flags(&[
            "--dataset",
            "phoneme",
            "--arch",
            "64-32",
            "--activation",
            "gelu",
            "--norm",
            "layer",
            "--batch-size",
            "128",
            "--epochs",
            "7",
            "--threads",
            "1",
        ])
        .unwrap();
        let config = config_from(&args).unwrap();
        assert_eq!(config.batch_size, 128);
        assert_eq!(config.epochs, 7);
        assert_eq!(config.threads, 1);
        assert_eq!(config.model.norm, Norm::Layer);
        assert_eq!(config.model.activation, Activation::Gelu);
        // Defaults are the binary's.
        assert_eq!(config.eval_batch_size, 4096);
        assert_eq!(config.optimizer, OptimizerKind::AdamW);
        assert!(parse_train_flags(&["--dataset", "phoneme", "--bogus"]).is_err());
        assert!(
            config_from(&parse_train_flags(&["--dataset", "x", "--norm", "group"]).unwrap())
                .is_err()
        );
    }
}
