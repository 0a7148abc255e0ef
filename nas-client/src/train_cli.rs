//! The flags of `nas-client train` and what they turn into: the dataset
//! ([`load_dataset`]) and the [`TrainConfig`] ([`config_from`]). A search
//! does not go through these flags: its trial children receive their
//! `TrainConfig` as JSON (`search::trainer::TrialRequest`).

use anyhow::{bail, Context, Result};
use clap::Args;
use nn_plan::{Activation, Backbone, ModelSpec, Norm, OptimizerKind};
use std::path::PathBuf;
use tabular_nn::data::{bundled, ColumnKind, Dataset, LoadOptions, NumericScaling, Task};
use tabular_nn::train::{Schedule, TrainConfig};

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
    /// Scaling of numeric columns, fitted on the training split:
    /// standard, or quantile-normal (as the FT-Transformer paper's
    /// QuantileTransformer, with its noise).
    #[arg(long, default_value = "standard")]
    pub preprocess: String,
    /// Backbone: mlp, resnet or ft-transformer.
    #[arg(long, default_value = "mlp")]
    pub backbone: String,
    /// Widths: MLP hidden widths ('256-256'); ResNet 'D_MAIN-D_HIDDEN[-D_HIDDEN..]' (one per block);
    /// FT-Transformer 'D_TOKEN-N_BLOCKS-N_HEADS-D_FFN' (default: the published 192-3-8-256).
    /// Default for mlp and resnet: 256-256.
    #[arg(long)]
    pub arch: Option<String>,
    /// Activation (mlp, resnet; the FT-Transformer uses ReGLU and a ReLU head).
    #[arg(long, value_enum, default_value = "relu")]
    pub activation: Activation,
    /// Dropout probability (mlp, resnet).
    #[arg(long, default_value_t = 0.1)]
    pub dropout: f32,
    /// Normalisation (mlp, resnet; the FT-Transformer uses layer norms).
    #[arg(long, value_enum, default_value = "none")]
    pub norm: Norm,
    /// FT-Transformer: dropout on attention probabilities (published 0.2).
    #[arg(long)]
    pub attention_dropout: Option<f32>,
    /// FT-Transformer: dropout after ReGLU in the feed-forward (published 0.1).
    #[arg(long)]
    pub ffn_dropout: Option<f32>,
    /// FT-Transformer: dropout on each residual branch (published 0).
    #[arg(long)]
    pub residual_dropout: Option<f32>,
    /// Optimizer.
    #[arg(long, value_enum, default_value = "adamw")]
    pub optimizer: OptimizerKind,
    /// Peak learning rate (default 1e-3; FT-Transformer: the published 1e-4).
    #[arg(long)]
    pub lr: Option<f32>,
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
    /// Early-stopping patience in epochs; 0 trains every epoch (default 8;
    /// FT-Transformer: the published 16).
    #[arg(long)]
    pub patience: Option<usize>,
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
    let scaling = NumericScaling::parse(&args.preprocess).with_context(|| {
        format!(
            "--preprocess {:?}: expected standard or quantile-normal",
            args.preprocess
        )
    })?;
    let apply = |opts: &mut LoadOptions| {
        opts.task = task;
        opts.numeric_scaling = scaling;
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

/// The training configuration of the flags; an unknown schedule or a bad
/// architecture is an error naming the flag (activations, norms and
/// optimizers are checked by clap).
pub fn config_from(args: &TrainArgs) -> Result<TrainConfig> {
    let default_arch = match args.backbone.as_str() {
        "mlp" | "resnet" => "256-256",
        _ => "",
    };
    let arch = args.arch.as_deref().unwrap_or(default_arch);
    let mut backbone = Backbone::parse(&args.backbone, arch).context("--backbone/--arch")?;
    let ft_flags = [
        ("--attention-dropout", args.attention_dropout),
        ("--ffn-dropout", args.ffn_dropout),
        ("--residual-dropout", args.residual_dropout),
    ];
    let ft = matches!(backbone, Backbone::FtTransformer { .. });
    if let Backbone::FtTransformer { dropouts, .. } = &mut backbone {
        let [a, f, r] = ft_flags.map(|(_, v)| v);
        dropouts.attention = a.unwrap_or(dropouts.attention);
        dropouts.ffn = f.unwrap_or(dropouts.ffn);
        dropouts.residual = r.unwrap_or(dropouts.residual);
    } else if let Some((flag, _)) = ft_flags.iter().find(|(_, v)| v.is_some()) {
        bail!("{flag} is a setting of --backbone ft-transformer");
    }
    // The published FT-Transformer trains with AdamW at 1e-4, patience 16.
    let (default_lr, default_patience) = if ft { (1e-4, 16) } else { (1e-3, 8) };
    let patience = args.patience.unwrap_or(default_patience);
    let (activation, norm, optimizer) = (args.activation, args.norm, args.optimizer);
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
        lr: args.lr.unwrap_or(default_lr),
        weight_decay: args.weight_decay,
        momentum: args.momentum,
        batch_size: args.batch_size,
        epochs: args.epochs,
        warmup_epochs: args.warmup,
        schedule,
        patience: (patience > 0).then_some(patience),
        seed: args.seed,
        threads: args.threads.unwrap_or_else(tabular_nn::threads::available),
        eval_batch_size: args.eval_batch_size,
        inference_min_ns: args.inference_ms.saturating_mul(1_000_000),
        measure_inference_energy: !args.no_inference_energy,
    })
}

/// Fits the model of `config` to the columns of `dataset` where it
/// depends on them: an FT-Transformer's tokenizer gets one feature per
/// numeric column and one per categorical column's one-hot block, unless
/// the description already says how its inputs group.
pub fn fit_model_to(config: &mut TrainConfig, dataset: &Dataset) {
    if let Backbone::FtTransformer { feature_widths, .. } = &mut config.model.backbone {
        if feature_widths.is_empty() {
            *feature_widths = dataset.feature_widths();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cmd {
        #[command(flatten)]
        args: TrainArgs,
    }

    fn parse(flags: &[&str]) -> Result<TrainArgs, clap::Error> {
        Cmd::try_parse_from(std::iter::once("train").chain(flags.iter().copied())).map(|c| c.args)
    }

    #[test]
    fn flags_become_the_configuration() {
        let args = parse(&[
            "--dataset",
            "phoneme",
            "--arch",
            "64-32",
            "--activation",
            "swish",
            "--norm",
            "ln",
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
        assert_eq!(config.model.activation, Activation::Silu);
        // Defaults are the trainer's.
        let default = TrainConfig::default();
        assert_eq!(config.eval_batch_size, default.eval_batch_size);
        assert_eq!(config.optimizer, default.optimizer);
        assert!(parse(&["--dataset", "phoneme", "--bogus"]).is_err());
        // An unknown choice is refused by clap, naming the choices.
        let e = parse(&["--dataset", "x", "--norm", "group"]).err().unwrap();
        assert!(e.to_string().contains("batch"), "{e}");
        assert!(config_from(&parse(&["--dataset", "x", "--arch", "0-3"]).unwrap()).is_err());
        assert_eq!(config.lr, 1e-3);
        assert_eq!(config.patience, Some(8));
        let e = load_dataset(&parse(&["--dataset", "x", "--preprocess", "minmax"]).unwrap())
            .err()
            .unwrap();
        assert!(format!("{e:#}").contains("--preprocess"), "{e:#}");
    }

    #[test]
    fn ft_transformer_flags_and_published_defaults() {
        let args = parse(&["--dataset", "adult", "--backbone", "ft-transformer"]).unwrap();
        let config = config_from(&args).unwrap();
        assert_eq!(config.model.backbone, Backbone::ft_transformer_default());
        assert_eq!((config.lr, config.patience), (1e-4, Some(16)));
        let args = parse(&[
            "--dataset",
            "adult",
            "--backbone",
            "ft-transformer",
            "--arch",
            "64-2-4-86",
            "--attention-dropout",
            "0.1",
            "--residual-dropout",
            "0.05",
            "--lr",
            "3e-4",
        ])
        .unwrap();
        let config = config_from(&args).unwrap();
        match &config.model.backbone {
            Backbone::FtTransformer {
                d_token: 64,
                n_blocks: 2,
                n_heads: 4,
                d_ffn: 86,
                dropouts,
                ..
            } => assert_eq!(
                (dropouts.attention, dropouts.ffn, dropouts.residual),
                (0.1, 0.1, 0.05)
            ),
            other => panic!("{other:?}"),
        }
        assert_eq!(config.lr, 3e-4);
        // Transformer settings on another backbone are refused, by name.
        let e = config_from(&parse(&["--dataset", "x", "--ffn-dropout", "0.2"]).unwrap())
            .err()
            .unwrap();
        assert!(e.to_string().contains("--ffn-dropout"), "{e}");
        let e = config_from(
            &parse(&["--dataset", "x", "--backbone", "ftt", "--arch", "64-3-5-8"]).unwrap(),
        )
        .unwrap();
        let arch = e.model.architecture(4, 2);
        assert!(arch.is_err(), "5 heads do not divide 64");
    }
}
