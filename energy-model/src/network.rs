//! The kernels a nas-client network emits, as [`NetworkPlan`]s a
//! calibration can price.
//!
//! [`NetworkDescription`] says everything about a training run that
//! decides which kernels run and at which shapes: the model
//! ([`nas_client::ModelSpec`]), the data sizes, batch sizes, epochs,
//! optimizer and threads. [`NetworkDescription::plan`] walks the layers the
//! way nas-client's `ModelSpec::build`, `Sequential`, `Residual` and
//! `train_and_evaluate` run them:
//!
//! - per training step: `batch_gather`, every layer forward (train mode),
//!   loss forward and backward, every layer backward (the first layer
//!   computes no input gradient, so it has no `linear_bwd_data`; activation,
//!   dropout and residual layers without an input gradient emit nothing;
//!   normalisations always emit their backward), one optimizer step;
//! - per epoch: the steps, then a forward pass (eval mode) and loss over the
//!   validation split in chunks of `eval_batch_size`;
//! - after the epochs: validation and test splits evaluated once more;
//! - inference: forward passes (eval mode) over the test split in chunks of
//!   `eval_batch_size`, no loss.
//!
//! Evaluation-mode dropout draws no mask: its `dropout_fwd` span is a mask
//! fill and an element-wise multiply, the work of `dropout_bwd`, and the
//! plan lists it under that name so it is priced as such.
//!
//! Shapes follow [`nas_client::kernels::run_isolated`], which the
//! calibration microbenchmarks: GEMMs are (batch, in, out); element-wise
//! kernels, normalisations and dropout are (batch, w, w); losses are
//! (batch, k, k) with k the logit columns (1 for MSE); the batch gather is
//! (batch, features, features).
//!
//! One approximation: nas-client's optimizer step is one span over every
//! parameter of the model, while `run_isolated` steps one dense layer. The
//! plan prices a step as one call per dense layer at that layer's shape;
//! normalisation parameters (2 per feature) are left out. The test of this
//! module checks the plan's per-kernel call counts against a real training
//! run's span counts.

use crate::file::Calibration;
use crate::predict::{KernelPlan, NetworkPlan, PredictError};
use crate::KernelShape;
use nas_client::kernels::KernelKind;
use nas_client::model::layers::{Activation, Norm};
use nas_client::model::{Backbone, ModelSpec};
use nas_client::train::OptimizerKind;
use serde::{Deserialize, Serialize};
use shared::Provenance;

/// What decides the kernels of a nas-client training run and of its
/// inference. Serialisable: it is the input of `calibration predict`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NetworkDescription {
    /// The model (as `nas-client train` builds it).
    pub model: ModelSpec,
    /// Encoded input features (`Dataset::n_features`).
    pub inputs: usize,
    /// Model outputs: classes, or 1 for regression (`Dataset::n_outputs`).
    pub outputs: usize,
    /// Regression (MSE loss) rather than classification (softmax
    /// cross-entropy).
    #[serde(default)]
    pub regression: bool,
    /// Optimizer.
    pub optimizer: OptimizerKind,
    /// Rows per training step.
    pub batch_size: usize,
    /// Rows per forward pass in evaluation and inference.
    pub eval_batch_size: usize,
    /// Epochs trained (with early stopping, the epochs actually run; for a
    /// prediction before training, the maximum).
    pub epochs: usize,
    /// Rows of the training split.
    pub train_rows: usize,
    /// Rows of the validation split.
    pub val_rows: usize,
    /// Rows of the test split (one inference pass).
    pub test_rows: usize,
    /// Threads the run uses (must be calibrated).
    pub threads: u32,
}

/// Why a description has no plan.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum PlanError {
    /// A size that must be positive is zero.
    #[error("network description: `{0}` must be at least 1")]
    Zero(&'static str),
    /// A backbone this build does not know how to walk.
    #[error("network description: backbone {0:?} has no kernel plan in this build of calibration")]
    UnknownBackbone(String),
}

/// One layer as far as kernels are concerned.
#[derive(Debug, Clone)]
enum Op {
    Linear { inputs: u64, outputs: u64 },
    Norm { norm: Norm, width: u64 },
    Act { activation: Activation, width: u64 },
    Dropout { width: u64 },
    Residual { inner: Vec<Op>, width: u64 },
}

fn square(batch: u64, width: u64) -> KernelShape {
    KernelShape {
        batch,
        in_width: width,
        out_width: width,
    }
}

fn norm_kinds(norm: Norm) -> Option<(KernelKind, KernelKind)> {
    match norm {
        Norm::Batch => Some((KernelKind::BatchnormFwd, KernelKind::BatchnormBwd)),
        Norm::Layer => Some((KernelKind::LayernormFwd, KernelKind::LayernormBwd)),
        Norm::None => None,
    }
}

/// The layers of `spec`, in the order `ModelSpec::build` creates them.
fn layers(spec: &ModelSpec, inputs: u64, outputs: u64) -> Result<Vec<Op>, PlanError> {
    let act = spec.activation;
    let with_dropout = spec.dropout > 0.0;
    let mut ops = Vec::new();
    let push_norm = |ops: &mut Vec<Op>, width: u64| {
        if spec.norm != Norm::None {
            ops.push(Op::Norm {
                norm: spec.norm,
                width,
            });
        }
    };
    match &spec.backbone {
        Backbone::Mlp { widths } => {
            let mut d = inputs;
            for &w in widths {
                let w = w as u64;
                ops.push(Op::Linear {
                    inputs: d,
                    outputs: w,
                });
                push_norm(&mut ops, w);
                ops.push(Op::Act {
                    activation: act,
                    width: w,
                });
                if with_dropout {
                    ops.push(Op::Dropout { width: w });
                }
                d = w;
            }
            ops.push(Op::Linear { inputs: d, outputs });
        }
        Backbone::Resnet { d_main, d_hidden } => {
            let d = *d_main as u64;
            ops.push(Op::Linear { inputs, outputs: d });
            for &h in d_hidden {
                let h = h as u64;
                let mut block = Vec::new();
                push_norm(&mut block, d);
                block.push(Op::Linear {
                    inputs: d,
                    outputs: h,
                });
                block.push(Op::Act {
                    activation: act,
                    width: h,
                });
                if with_dropout {
                    block.push(Op::Dropout { width: h });
                }
                block.push(Op::Linear {
                    inputs: h,
                    outputs: d,
                });
                if with_dropout {
                    block.push(Op::Dropout { width: d });
                }
                ops.push(Op::Residual {
                    inner: block,
                    width: d,
                });
            }
            push_norm(&mut ops, d);
            ops.push(Op::Act {
                activation: act,
                width: d,
            });
            ops.push(Op::Linear { inputs: d, outputs });
        }
        #[allow(unreachable_patterns)] // Backbone is non_exhaustive
        other => return Err(PlanError::UnknownBackbone(other.kind_name().to_owned())),
    }
    Ok(ops)
}

/// Whether a forward pass trains (dropout draws masks) or evaluates.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Pass {
    Train,
    Eval,
}

fn forward(ops: &[Op], batch: u64, pass: Pass, plan: &mut KernelPlan) {
    for op in ops {
        match op {
            Op::Linear { inputs, outputs } => plan.add(
                KernelKind::LinearFwd.as_str(),
                KernelShape {
                    batch,
                    in_width: *inputs,
                    out_width: *outputs,
                },
                1,
            ),
            Op::Norm { norm, width } => {
                if let Some((fwd, _)) = norm_kinds(*norm) {
                    plan.add(fwd.as_str(), square(batch, *width), 1);
                }
            }
            Op::Act { activation, width } => {
                plan.add(activation.forward_kind().as_str(), square(batch, *width), 1)
            }
            // In evaluation, dropout's forward span covers only a mask fill
            // and the element-wise multiply that `dropout_bwd` is, about a
            // tenth of a training-mode forward (no random draws): it is
            // priced as `dropout_bwd`.
            Op::Dropout { width } => plan.add(
                match pass {
                    Pass::Train => KernelKind::DropoutFwd.as_str(),
                    Pass::Eval => KernelKind::DropoutBwd.as_str(),
                },
                square(batch, *width),
                1,
            ),
            Op::Residual { inner, width } => {
                forward(inner, batch, pass, plan);
                plan.add(
                    KernelKind::ResidualAddFwd.as_str(),
                    square(batch, *width),
                    1,
                );
            }
        }
    }
}

/// Backward of a sequence: layer `i` computes its input gradient when
/// `i > 0` or the sequence's caller needs it (nas-client's `Sequential`).
fn backward(ops: &[Op], batch: u64, need_input_grad: bool, plan: &mut KernelPlan) {
    for (i, op) in ops.iter().enumerate().rev() {
        let need = i > 0 || need_input_grad;
        match op {
            Op::Linear { inputs, outputs } => {
                let shape = KernelShape {
                    batch,
                    in_width: *inputs,
                    out_width: *outputs,
                };
                plan.add(KernelKind::LinearBwdWeight.as_str(), shape, 1);
                if need {
                    plan.add(KernelKind::LinearBwdData.as_str(), shape, 1);
                }
            }
            Op::Norm { norm, width } => {
                if let Some((_, bwd)) = norm_kinds(*norm) {
                    plan.add(bwd.as_str(), square(batch, *width), 1);
                }
            }
            Op::Act { activation, width } => {
                if need {
                    plan.add(
                        activation.backward_kind().as_str(),
                        square(batch, *width),
                        1,
                    );
                }
            }
            Op::Dropout { width } => {
                if need {
                    plan.add(KernelKind::DropoutBwd.as_str(), square(batch, *width), 1);
                }
            }
            Op::Residual { inner, width } => {
                backward(inner, batch, need, plan);
                if need {
                    plan.add(
                        KernelKind::ResidualAddBwd.as_str(),
                        square(batch, *width),
                        1,
                    );
                }
            }
        }
    }
}

fn linear_shapes(ops: &[Op], batch: u64, out: &mut Vec<KernelShape>) {
    for op in ops {
        match op {
            Op::Linear { inputs, outputs } => out.push(KernelShape {
                batch,
                in_width: *inputs,
                out_width: *outputs,
            }),
            Op::Residual { inner, .. } => linear_shapes(inner, batch, out),
            _ => {}
        }
    }
}

/// `rows` split into chunks of at most `chunk` rows: (chunk rows, count).
fn chunks(rows: usize, chunk: usize) -> Vec<(u64, u64)> {
    let full = rows / chunk;
    let rest = rows % chunk;
    let mut out = Vec::new();
    if full > 0 {
        out.push((chunk as u64, full as u64));
    }
    if rest > 0 {
        out.push((rest as u64, 1));
    }
    out
}

impl NetworkDescription {
    fn check(&self) -> Result<(), PlanError> {
        let positive = [
            ("inputs", self.inputs),
            ("outputs", self.outputs),
            ("batch_size", self.batch_size),
            ("eval_batch_size", self.eval_batch_size),
            ("epochs", self.epochs),
            ("train_rows", self.train_rows),
            ("test_rows", self.test_rows),
            ("threads", self.threads as usize),
        ];
        match positive.iter().find(|(_, v)| *v == 0) {
            Some((name, _)) => Err(PlanError::Zero(name)),
            None => Ok(()),
        }
    }

    /// Logit columns the loss kernels see.
    fn loss_columns(&self) -> u64 {
        if self.regression {
            1
        } else {
            self.outputs.max(2) as u64
        }
    }

    fn loss_kinds(&self) -> (KernelKind, KernelKind) {
        if self.regression {
            (KernelKind::MseFwd, KernelKind::MseBwd)
        } else {
            (KernelKind::SoftmaxXentFwd, KernelKind::SoftmaxXentBwd)
        }
    }

    /// Forward passes (and the loss, when `with_loss`) over `rows` rows in
    /// evaluation chunks.
    fn evaluation(&self, ops: &[Op], rows: usize, with_loss: bool, plan: &mut KernelPlan) {
        let (loss_fwd, _) = self.loss_kinds();
        let k = self.loss_columns();
        for (chunk, count) in chunks(rows, self.eval_batch_size) {
            let mut once = KernelPlan::new(plan.threads);
            forward(ops, chunk, Pass::Eval, &mut once);
            if with_loss {
                once.add(loss_fwd.as_str(), square(chunk, k), 1);
            }
            plan.extend(&once.repeated(count));
        }
    }

    /// Kernels of the whole training run and of one inference pass over
    /// the test split.
    pub fn plan(&self) -> Result<NetworkPlan, PlanError> {
        self.check()?;
        let ops = layers(&self.model, self.inputs as u64, self.outputs as u64)?;
        let (loss_fwd, loss_bwd) = self.loss_kinds();
        let k = self.loss_columns();

        let mut epoch = KernelPlan::new(self.threads);
        for (batch, count) in chunks(self.train_rows, self.batch_size) {
            let mut step = KernelPlan::new(self.threads);
            step.add(
                KernelKind::BatchGather.as_str(),
                square(batch, self.inputs as u64),
                1,
            );
            forward(&ops, batch, Pass::Train, &mut step);
            step.add(loss_fwd.as_str(), square(batch, k), 1);
            step.add(loss_bwd.as_str(), square(batch, k), 1);
            backward(&ops, batch, false, &mut step);
            let optimizer = match self.optimizer {
                OptimizerKind::AdamW => KernelKind::AdamwStep,
                OptimizerKind::Sgd => KernelKind::SgdStep,
            };
            let mut shapes = Vec::new();
            linear_shapes(&ops, batch, &mut shapes);
            for shape in shapes {
                step.add(optimizer.as_str(), shape, 1);
            }
            epoch.extend(&step.repeated(count));
        }
        self.evaluation(&ops, self.val_rows, true, &mut epoch);

        let mut training = epoch.repeated(self.epochs as u64);
        // Final evaluation of the kept weights on validation and test.
        self.evaluation(&ops, self.val_rows, true, &mut training);
        self.evaluation(&ops, self.test_rows, true, &mut training);

        let mut inference = KernelPlan::new(self.threads);
        self.evaluation(&ops, self.test_rows, false, &mut inference);
        Ok(NetworkPlan {
            training,
            inference,
            inference_rows: self.test_rows as u64,
        })
    }

    /// Every kernel type the plan of this description uses.
    pub fn kernel_kinds(&self) -> Result<Vec<String>, PlanError> {
        let plan = self.plan()?;
        let mut names: Vec<String> = plan
            .training
            .kernels
            .iter()
            .chain(&plan.inference.kernels)
            .map(|k| k.kernel.clone())
            .collect();
        names.sort();
        names.dedup();
        Ok(names)
    }
}

/// Predicted energy of a network: its whole training run, and inference
/// per 1000 rows. This is what `calibration predict` prints as JSON.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NetworkEnergyPrediction {
    /// Energy of the whole training run (all epochs of the description,
    /// validation passes included).
    pub training_j: f64,
    /// One-sigma uncertainty of `training_j` from the fit residuals.
    pub training_uncertainty_j: f64,
    /// Predicted kernel time of the training run.
    pub training_cpu_time_ns: f64,
    /// Inference energy per 1000 rows (eval batches of the description).
    pub inference_j_per_1000_rows: f64,
    /// One-sigma uncertainty of `inference_j_per_1000_rows`.
    pub inference_uncertainty_j_per_1000_rows: f64,
    /// Predicted kernel time of inference over 1000 rows.
    pub inference_cpu_time_ns_per_1000_rows: f64,
    /// Provenance of the calibration (and so of the figures).
    #[serde(with = "crate::fingerprint::provenance_label")]
    pub provenance: Provenance,
}

/// Why a network's energy could not be predicted.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum NetworkPredictError {
    /// The description has no kernel plan.
    #[error(transparent)]
    Plan(#[from] PlanError),
    /// The calibration cannot price a kernel of the plan.
    #[error(transparent)]
    Predict(#[from] PredictError),
}

impl Calibration {
    /// Predicted training energy and inference energy per 1000 rows of a
    /// nas-client network, without running it.
    pub fn predict_network(
        &self,
        description: &NetworkDescription,
    ) -> Result<NetworkEnergyPrediction, NetworkPredictError> {
        let plan = description.plan()?;
        let training = self.predict_training_energy_j(&plan)?;
        let inference = self.predict_inference_energy_per_1000_rows_j(&plan)?;
        Ok(NetworkEnergyPrediction {
            training_j: training.energy_j,
            training_uncertainty_j: training.uncertainty_j,
            training_cpu_time_ns: training.cpu_time_ns,
            inference_j_per_1000_rows: inference.energy_j,
            inference_uncertainty_j_per_1000_rows: inference.uncertainty_j,
            inference_cpu_time_ns_per_1000_rows: inference.cpu_time_ns,
            provenance: self.provenance,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use nas_client::data::{Dataset, LoadOptions};
    use nas_client::train::{train_and_evaluate, Schedule, TrainConfig};
    use std::collections::BTreeMap;

    fn calls(plan: &KernelPlan) -> BTreeMap<String, u64> {
        let mut out = BTreeMap::new();
        for k in &plan.kernels {
            *out.entry(k.kernel.clone()).or_default() += k.calls;
        }
        out
    }

    /// nas-client builds the descriptions of its calibrated searches
    /// itself (it cannot link this crate): what it sends must decode as a
    /// description, field for field.
    #[test]
    fn nas_client_queries_decode_as_descriptions() {
        use nas_client::search::calibrated::{DatasetShape, NetworkQuery};
        let dir = tempfile::tempdir().unwrap();
        let ds = dataset(dir.path(), false);
        let config = TrainConfig {
            model: ModelSpec {
                backbone: Backbone::parse("resnet", "16-32").unwrap(),
                activation: Activation::Gelu,
                dropout: 0.1,
                norm: Norm::Layer,
            },
            optimizer: OptimizerKind::Sgd,
            batch_size: 48,
            eval_batch_size: 100,
            threads: 2,
            ..TrainConfig::default()
        };
        let query = NetworkQuery::new(&config, &DatasetShape::of(&ds), 7);
        let json = serde_json::to_string(&query).unwrap();
        let decoded: NetworkDescription = serde_json::from_str(&json).unwrap();
        assert_eq!(decoded, description(&ds, &config, 7));
    }

    /// A small seeded classification table with 3 classes.
    fn dataset(dir: &std::path::Path, regression: bool) -> Dataset {
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
        if regression {
            opts.task = Some(nas_client::data::Task::Regression);
        }
        Dataset::from_file(&path, &opts).unwrap()
    }

    fn description(ds: &Dataset, config: &TrainConfig, epochs: usize) -> NetworkDescription {
        NetworkDescription {
            model: config.model.clone(),
            inputs: ds.n_features(),
            outputs: ds.n_outputs(),
            regression: !ds.task.is_classification(),
            optimizer: config.optimizer,
            batch_size: config.batch_size,
            eval_batch_size: config.eval_batch_size,
            epochs,
            train_rows: ds.train.rows(),
            val_rows: ds.val.rows(),
            test_rows: ds.test.rows(),
            threads: config.threads as u32,
        }
    }

    /// The plan counts exactly the spans a real run records, per kernel
    /// type, for an MLP and a ResNet with every optional layer.
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
        for (kind, arch, activation, dropout, norm, optimizer, regression) in cases {
            let ds = dataset(dir.path(), regression);
            let config = TrainConfig {
                model: ModelSpec {
                    backbone: Backbone::parse(kind, arch).unwrap(),
                    activation,
                    dropout,
                    norm,
                },
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
            let plan = description(&ds, &config, report.epochs_run).plan().unwrap();
            let mut expected_train = calls(&plan.training);
            // The plan prices one optimizer span as one call per dense
            // layer; a run records one span per step.
            let steps = (ds.train.rows().div_ceil(config.batch_size) * report.epochs_run) as u64;
            let opt = match optimizer {
                OptimizerKind::AdamW => "adamw_step",
                OptimizerKind::Sgd => "sgd_step",
            };
            assert_eq!(expected_train[opt] % steps, 0, "{kind} {arch}");
            expected_train.insert(opt.to_owned(), steps);
            let measured_train: BTreeMap<String, u64> = report
                .train_kernels
                .iter()
                .map(|k| (k.kind.as_str().to_owned(), k.count))
                .collect();
            // Evaluation-mode dropout forwards are planned as `dropout_bwd`.
            let eval_dropout = (expected_train.get("dropout_bwd").copied().unwrap_or(0))
                .saturating_sub(measured_train.get("dropout_bwd").copied().unwrap_or(0));
            if eval_dropout > 0 {
                *expected_train.entry("dropout_bwd".into()).or_default() -= eval_dropout;
                *expected_train.entry("dropout_fwd".into()).or_default() += eval_dropout;
            }
            assert_eq!(expected_train, measured_train, "{kind} {arch} training");

            let passes = u64::from(report.inference.passes);
            let expected_infer: BTreeMap<String, u64> = calls(&plan.inference)
                .into_iter()
                .map(|(k, c)| {
                    let k = if k == "dropout_bwd" {
                        "dropout_fwd".into()
                    } else {
                        k
                    };
                    (k, c * passes)
                })
                .collect();
            let measured_infer: BTreeMap<String, u64> = report
                .inference_kernels
                .iter()
                .map(|k| (k.kind.as_str().to_owned(), k.count))
                .collect();
            assert_eq!(expected_infer, measured_infer, "{kind} {arch} inference");
        }
    }

    #[test]
    fn shapes_follow_the_layers() {
        let desc = NetworkDescription {
            model: ModelSpec {
                backbone: Backbone::Mlp {
                    widths: vec![64, 32],
                },
                activation: Activation::Relu,
                dropout: 0.0,
                norm: Norm::None,
            },
            inputs: 10,
            outputs: 3,
            regression: false,
            optimizer: OptimizerKind::AdamW,
            batch_size: 100,
            eval_batch_size: 1000,
            epochs: 1,
            train_rows: 250,
            val_rows: 0,
            test_rows: 1500,
            threads: 1,
        };
        let plan = desc.plan().unwrap();
        let shapes: Vec<KernelShape> = plan
            .training
            .kernels
            .iter()
            .filter(|k| k.kernel == "linear_fwd")
            .map(|k| k.shape)
            .collect();
        // Two full batches of 100 and one of 50; then the test split
        // evaluated once at the end (1000 + 500 rows).
        assert!(shapes.contains(&KernelShape {
            batch: 100,
            in_width: 10,
            out_width: 64
        }));
        assert!(shapes.contains(&KernelShape {
            batch: 50,
            in_width: 32,
            out_width: 3
        }));
        assert!(shapes.contains(&KernelShape {
            batch: 500,
            in_width: 64,
            out_width: 32
        }));
        let infer = calls(&plan.inference);
        assert_eq!(infer["linear_fwd"], 6);
        assert_eq!(infer["relu_fwd"], 4);
        assert_eq!(plan.inference_rows, 1500);

        let err = NetworkDescription {
            batch_size: 0,
            ..desc
        }
        .plan()
        .unwrap_err();
        assert!(err.to_string().contains("batch_size"), "{err}");
    }

    #[test]
    fn description_is_json() {
        let text = r#"{"model":{"backbone":{"kind":"mlp","widths":[128,64]},"activation":"relu",
            "dropout":0.1,"norm":"none"},"inputs":14,"outputs":2,"optimizer":"adamw",
            "batch_size":256,"eval_batch_size":4096,"epochs":10,"train_rows":30000,
            "val_rows":7000,"test_rows":9000,"threads":1}"#;
        let desc: NetworkDescription = serde_json::from_str(text).unwrap();
        assert!(!desc.regression);
        assert_eq!(desc.plan().unwrap().inference_rows, 9000);
        let err = serde_json::from_str::<NetworkDescription>(&text.replace("inputs", "input"))
            .unwrap_err();
        assert!(err.to_string().contains("input"), "{err}");
    }
}
