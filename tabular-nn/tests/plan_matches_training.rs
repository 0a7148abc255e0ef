//! The one kernel plan (`nn_plan::RunPlan`) lists exactly the spans a real
//! training run records, per kernel kind, in training and in inference,
//! for an MLP and a ResNet with every optional layer, classification and
//! regression, AdamW and SGD. This is what makes pricing a plan price the
//! network that is trained.

use nn_plan::{
    Activation, Backbone, FtDropouts, ModelSpec, Norm, OptimizerKind, RunPlan, RunShape,
};
use std::collections::BTreeMap;
use tabular_nn::data::{Dataset, LoadOptions, Task};
use tabular_nn::train::{train_and_evaluate, Schedule, TrainConfig};

/// A small seeded table with 3 classes (or a numeric target).
fn dataset(dir: &std::path::Path, regression: bool, categorical: bool) -> Dataset {
    let path = dir.join("toy.csv");
    let mut text = String::from("a,b,c,target\n");
    for i in 0..230u32 {
        let a = f64::from(i % 17) / 17.0;
        let b = f64::from((i * 7) % 13) / 13.0;
        let c = f64::from((i * 11) % 5);
        let y = if regression {
            format!("{:.3}", a + 2.0 * b)
        } else {
            (i % 3).to_string()
        };
        text.push_str(&format!("{a},{b},{c},{y}\n"));
    }
    std::fs::write(&path, text).unwrap();
    let mut opts = LoadOptions::new("target");
    if categorical {
        opts.column_kinds
            .insert("c".to_owned(), tabular_nn::data::ColumnKind::Categorical);
    }
    if regression {
        opts.task = Some(Task::Regression);
    }
    Dataset::from_file(&path, &opts).unwrap()
}

#[test]
fn plan_counts_match_a_real_training_run() {
    let dir = tempfile::tempdir().unwrap();
    let cases = [
        (
            "mlp",
            "24-12",
            Activation::Gelu,
            0.2,
            Norm::Batch,
            OptimizerKind::AdamW,
            false,
        ),
        (
            "resnet",
            "16-20-12",
            Activation::Relu,
            0.1,
            Norm::Layer,
            OptimizerKind::Sgd,
            true,
        ),
        (
            "mlp",
            "",
            Activation::Tanh,
            0.0,
            Norm::None,
            OptimizerKind::AdamW,
            false,
        ),
    ];
    let ft_cases = [
        // Two heads (W_out), every dropout, the `c` column categorical.
        (
            Backbone::FtTransformer {
                d_token: 8,
                n_blocks: 2,
                n_heads: 2,
                d_ffn: 6,
                dropouts: FtDropouts {
                    attention: 0.2,
                    ffn: 0.1,
                    residual: 0.1,
                },
                feature_widths: Vec::new(),
            },
            true,
            OptimizerKind::AdamW,
            false,
        ),
        // One head (no W_out), no dropout, all numeric, regression.
        (
            Backbone::FtTransformer {
                d_token: 4,
                n_blocks: 1,
                n_heads: 1,
                d_ffn: 5,
                dropouts: FtDropouts {
                    attention: 0.0,
                    ffn: 0.0,
                    residual: 0.0,
                },
                feature_widths: Vec::new(),
            },
            false,
            OptimizerKind::Sgd,
            true,
        ),
    ];
    let cases = cases
        .into_iter()
        .map(
            |(kind, arch, activation, dropout, norm, optimizer, regression)| {
                let model = ModelSpec {
                    backbone: Backbone::parse(kind, arch).unwrap(),
                    activation,
                    dropout,
                    norm,
                };
                (model, false, optimizer, regression)
            },
        )
        .chain(
            ft_cases
                .into_iter()
                .map(|(backbone, categorical, optimizer, regression)| {
                    let model = ModelSpec {
                        backbone,
                        ..ModelSpec::ft_transformer(Vec::new())
                    };
                    (model, categorical, optimizer, regression)
                }),
        );
    for (mut model, categorical, optimizer, regression) in cases {
        let ds = dataset(dir.path(), regression, categorical);
        if let Backbone::FtTransformer { feature_widths, .. } = &mut model.backbone {
            *feature_widths = ds.feature_widths();
        }
        let (kind, arch) = (model.backbone.kind_name(), model.backbone.arch_string());
        let config = TrainConfig {
            model,
            optimizer,
            lr: 1e-3,
            batch_size: 32,
            epochs: 2,
            schedule: Schedule::Cosine,
            patience: None,
            threads: 1,
            eval_batch_size: 50,
            inference_min_ns: 0,
            ..TrainConfig::default()
        };
        let report = train_and_evaluate(&ds, &config, None, &mut |_| {}).unwrap();
        let run = RunShape {
            optimizer,
            batch_size: config.batch_size,
            eval_batch_size: config.eval_batch_size,
            epochs: report.epochs_run,
            threads: 1,
        };
        let plan = RunPlan::new(&config.model, &ds.shape(), &run).unwrap();
        let per_kind = |calls: &nn_plan::PlannedCalls, times: u64| -> BTreeMap<String, u64> {
            let mut out = BTreeMap::new();
            for (call, n) in &calls.calls {
                *out.entry(call.kind.as_str().to_owned()).or_default() += n * times;
            }
            out
        };
        let measured = |kernels: &[tabular_nn::kernels::KernelTime]| -> BTreeMap<String, u64> {
            kernels
                .iter()
                .map(|k| (k.kind.as_str().to_owned(), k.count))
                .collect()
        };
        assert_eq!(
            per_kind(&plan.training, 1),
            measured(&report.train_kernels),
            "{kind} {arch} training"
        );
        assert_eq!(
            per_kind(&plan.inference, u64::from(report.inference.passes)),
            measured(&report.inference_kernels),
            "{kind} {arch} inference"
        );
    }
}
