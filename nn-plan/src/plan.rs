//! The kernel plan of a network: exactly the spans the trainer records,
//! for one training step, one forward pass, and a whole training run with
//! its inference.
//!
//! What the trainer does, and so what the plan lists:
//! - per training step: `batch_gather` (rows × input features), every
//!   layer forward in training mode, loss forward and backward (rows ×
//!   outputs), every layer backward in reverse (the first layer computes no
//!   input gradient, so it has no `linear_bwd_data`; activation, dropout
//!   and residual layers without an input gradient record nothing;
//!   normalisations always record their backward), and **one** optimizer
//!   step over every parameter of the model ([`KernelShape::Elementwise`]
//!   with n = parameters);
//! - per epoch: the steps (full batches, then the last partial one), then
//!   a forward pass in evaluation mode and the loss over the validation
//!   split in chunks of `eval_batch_size`;
//! - after the epochs: validation and test splits evaluated once more;
//! - inference: forward passes in evaluation mode over the test split in
//!   chunks of `eval_batch_size`, no loss.

use crate::kernel::{KernelCall, KernelKind, KernelShape, Pass};
use crate::spec::{Architecture, LayerShape, ModelSpec, NamedLayer, OptimizerKind, SpecError};
use serde::{Deserialize, Serialize};

/// The sizes of a dataset that decide a network's kernels.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct DatasetShape {
    /// Encoded input features.
    pub inputs: usize,
    /// Model outputs (classes, or 1 for regression).
    pub outputs: usize,
    /// Regression (MSE loss) rather than classification (softmax
    /// cross-entropy).
    pub regression: bool,
    /// Rows of the training split.
    pub train_rows: usize,
    /// Rows of the validation split.
    pub val_rows: usize,
    /// Rows of the test split.
    pub test_rows: usize,
}

impl DatasetShape {
    /// Loss kernels (forward, backward) of this task.
    pub fn loss_kinds(&self) -> (KernelKind, KernelKind) {
        if self.regression {
            (KernelKind::MseFwd, KernelKind::MseBwd)
        } else {
            (KernelKind::SoftmaxXentFwd, KernelKind::SoftmaxXentBwd)
        }
    }
}

/// The settings of a training run that decide its kernels besides the
/// model and the data.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunShape {
    /// Optimizer.
    pub optimizer: OptimizerKind,
    /// Rows per training step.
    pub batch_size: usize,
    /// Rows per forward pass in evaluation and inference.
    pub eval_batch_size: usize,
    /// Epochs trained (with early stopping, the epochs actually run; for a
    /// prediction before training, the maximum).
    pub epochs: usize,
    /// Threads the kernels run with.
    pub threads: u32,
}

/// Why there is no plan.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum PlanError {
    /// The model description is invalid.
    #[error(transparent)]
    Spec(#[from] SpecError),
    /// A size that must be positive is zero.
    #[error("kernel plan: `{0}` must be at least 1")]
    Zero(&'static str),
}

fn rows(rows: usize, width: usize) -> KernelShape {
    KernelShape::Rows {
        rows: rows as u64,
        width: width as u64,
    }
}

fn gemm(m: usize, n: usize, k: usize, count: usize) -> KernelShape {
    KernelShape::Gemm {
        m: m as u64,
        n: n as u64,
        k: k as u64,
        count: count as u64,
    }
}

/// The attention kernels of one (sample, head) pass over `rows` token
/// rows: (score GEMM, softmax/dropout rows, context GEMM).
fn attention_shapes(
    rows: usize,
    tokens: usize,
    width: usize,
    heads: usize,
) -> (KernelShape, KernelShape, KernelShape) {
    let d_head = width / heads;
    let pairs = rows / tokens * heads;
    (
        gemm(tokens, tokens, d_head, pairs),
        self::rows(pairs * tokens, tokens),
        gemm(tokens, d_head, tokens, pairs),
    )
}

/// Appends the kernels of a forward pass of `layers` over `batch` rows
/// (rows change where a layer adds or removes the token axis:
/// [`LayerShape::out_rows`]).
pub fn forward(layers: &[NamedLayer], batch: usize, pass: Pass, out: &mut Vec<KernelCall>) {
    let mut rows_in = batch;
    for layer in layers {
        let batch = rows_in;
        rows_in = layer.shape.out_rows(batch);
        let (kind, shape) = match &layer.shape {
            LayerShape::Linear { inputs, outputs } => (
                KernelKind::LinearFwd,
                KernelShape::dense(batch as u64, *inputs as u64, *outputs as u64),
            ),
            LayerShape::Norm { norm, width } => match norm.kinds() {
                Some((fwd, _)) => (fwd, rows(batch, *width)),
                None => continue,
            },
            LayerShape::Activation { activation, width } => {
                (activation.forward_kind(), rows(batch, *width))
            }
            LayerShape::Dropout { width, .. } => (KernelKind::DropoutFwd, rows(batch, *width)),
            LayerShape::Residual { inner, width } => {
                forward(inner, batch, pass, out);
                (KernelKind::ResidualAddFwd, rows(batch, *width))
            }
            LayerShape::FeatureTokenizer { width, .. } => (
                KernelKind::TokenizerFwd,
                rows(layer.shape.out_rows(batch), *width),
            ),
            LayerShape::Attention {
                tokens,
                width,
                heads,
                dropout,
            } => {
                let mut push = |kind, shape| out.push(KernelCall { kind, shape, pass });
                let qkv = KernelShape::dense(batch as u64, *width as u64, *width as u64);
                for _ in 0..3 {
                    push(KernelKind::LinearFwd, qkv);
                }
                let (score, probs, context) = attention_shapes(batch, *tokens, *width, *heads);
                push(KernelKind::AttentionScoreFwd, score);
                push(KernelKind::AttentionSoftmaxFwd, probs);
                if *dropout > 0.0 {
                    push(KernelKind::DropoutFwd, probs);
                }
                if *heads > 1 {
                    push(KernelKind::AttentionContextFwd, context);
                    (KernelKind::LinearFwd, qkv)
                } else {
                    (KernelKind::AttentionContextFwd, context)
                }
            }
            LayerShape::Reglu { width } => (KernelKind::RegluFwd, rows(batch, *width)),
            LayerShape::SelectToken { width, .. } => (
                KernelKind::BatchGather,
                rows(layer.shape.out_rows(batch), *width),
            ),
        };
        out.push(KernelCall { kind, shape, pass });
    }
}

/// Appends the kernels of a backward pass of `layers` over `batch` rows:
/// layer `i` computes its input gradient when `i > 0` or the caller needs
/// it (`need_grad_input`), as the trainer's `Sequential` does.
pub fn backward(
    layers: &[NamedLayer],
    batch: usize,
    need_grad_input: bool,
    out: &mut Vec<KernelCall>,
) {
    // Rows at each layer's input.
    let mut rows_in = Vec::with_capacity(layers.len());
    let mut r = batch;
    for layer in layers {
        rows_in.push(r);
        r = layer.shape.out_rows(r);
    }
    for (i, layer) in layers.iter().enumerate().rev() {
        let batch = rows_in[i];
        let need = i > 0 || need_grad_input;
        let mut push = |kind, shape| {
            out.push(KernelCall {
                kind,
                shape,
                pass: Pass::Train,
            })
        };
        match &layer.shape {
            LayerShape::Linear { inputs, outputs } => {
                let shape = KernelShape::dense(batch as u64, *inputs as u64, *outputs as u64);
                push(KernelKind::LinearBwdWeight, shape);
                if need {
                    push(KernelKind::LinearBwdData, shape);
                }
            }
            LayerShape::Norm { norm, width } => {
                if let Some((_, bwd)) = norm.kinds() {
                    push(bwd, rows(batch, *width));
                }
            }
            LayerShape::Activation { activation, width } => {
                if need {
                    push(activation.backward_kind(), rows(batch, *width));
                }
            }
            LayerShape::Dropout { width, .. } => {
                if need {
                    push(KernelKind::DropoutBwd, rows(batch, *width));
                }
            }
            LayerShape::Residual { inner, width } => {
                backward(inner, batch, need, out);
                if need {
                    out.push(KernelCall {
                        kind: KernelKind::ResidualAddBwd,
                        shape: rows(batch, *width),
                        pass: Pass::Train,
                    });
                }
            }
            // Parameter gradients always; the input gradient is folded into
            // the same span when asked for.
            LayerShape::FeatureTokenizer { width, .. } => push(
                KernelKind::TokenizerBwd,
                rows(layer.shape.out_rows(batch), *width),
            ),
            LayerShape::Attention {
                tokens,
                width,
                heads,
                dropout,
            } => {
                let qkv = KernelShape::dense(batch as u64, *width as u64, *width as u64);
                if *heads > 1 {
                    push(KernelKind::LinearBwdWeight, qkv);
                    push(KernelKind::LinearBwdData, qkv);
                }
                let (score, probs, context) = attention_shapes(batch, *tokens, *width, *heads);
                push(KernelKind::AttentionContextBwd, context);
                if *dropout > 0.0 {
                    push(KernelKind::DropoutBwd, probs);
                }
                push(KernelKind::AttentionSoftmaxBwd, probs);
                push(KernelKind::AttentionScoreBwd, score);
                for _ in 0..3 {
                    push(KernelKind::LinearBwdWeight, qkv);
                }
                if need {
                    for _ in 0..3 {
                        push(KernelKind::LinearBwdData, qkv);
                    }
                }
            }
            LayerShape::Reglu { width } => {
                if need {
                    push(KernelKind::RegluBwd, rows(batch, *width));
                }
            }
            LayerShape::SelectToken { width, .. } => {
                if need {
                    push(
                        KernelKind::BatchGather,
                        rows(layer.shape.out_rows(batch), *width),
                    );
                }
            }
        }
    }
}

/// The kernels of one training step on a mini-batch of `batch` rows, in
/// the order the trainer records them: batch gather, forward, loss forward
/// and backward, backward, one optimizer step over every parameter.
pub fn step_calls(
    arch: &Architecture,
    data: &DatasetShape,
    optimizer: OptimizerKind,
    batch: usize,
) -> Vec<KernelCall> {
    let (loss_fwd, loss_bwd) = data.loss_kinds();
    let mut out = vec![KernelCall {
        kind: KernelKind::BatchGather,
        shape: rows(batch, arch.inputs),
        pass: Pass::Train,
    }];
    forward(&arch.layers, batch, Pass::Train, &mut out);
    for kind in [loss_fwd, loss_bwd] {
        out.push(KernelCall {
            kind,
            shape: rows(batch, arch.outputs),
            pass: Pass::Train,
        });
    }
    backward(&arch.layers, batch, false, &mut out);
    out.push(KernelCall {
        kind: optimizer.step_kind(),
        shape: KernelShape::Elementwise {
            n: arch.parameters() as u64,
        },
        pass: Pass::Train,
    });
    out
}

/// The kernels of one forward pass over `batch` rows in evaluation mode
/// (inference), in order.
pub fn inference_calls(arch: &Architecture, batch: usize) -> Vec<KernelCall> {
    let mut out = Vec::new();
    forward(&arch.layers, batch, Pass::Eval, &mut out);
    out
}

/// Calls of each distinct [`KernelCall`] of a piece of work.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct PlannedCalls {
    /// (call, how many times), in order of first appearance.
    pub calls: Vec<(KernelCall, u64)>,
}

impl PlannedCalls {
    /// Adds `count` executions of `call`.
    pub fn add(&mut self, call: KernelCall, count: u64) {
        match self.calls.iter_mut().find(|(c, _)| *c == call) {
            Some((_, n)) => *n += count,
            None => self.calls.push((call, count)),
        }
    }

    /// Adds every call of `calls`, `times` times each.
    pub fn add_all(&mut self, calls: &[KernelCall], times: u64) {
        for &c in calls {
            self.add(c, times);
        }
    }

    /// Adds `other`, `times` times.
    pub fn extend(&mut self, other: &PlannedCalls, times: u64) {
        for &(c, n) in &other.calls {
            self.add(c, n * times);
        }
    }

    /// Total executions per kernel kind.
    pub fn count_of(&self, kind: KernelKind) -> u64 {
        self.calls
            .iter()
            .filter(|(c, _)| c.kind == kind)
            .map(|(_, n)| n)
            .sum()
    }

    /// Total executions.
    pub fn total(&self) -> u64 {
        self.calls.iter().map(|(_, n)| n).sum()
    }
}

/// `rows` split into chunks of at most `chunk` rows: (chunk rows, count).
fn chunks(rows: usize, chunk: usize) -> Vec<(usize, u64)> {
    let full = rows / chunk;
    let rest = rows % chunk;
    let mut out = Vec::new();
    if full > 0 {
        out.push((chunk, full as u64));
    }
    if rest > 0 {
        out.push((rest, 1));
    }
    out
}

/// The kernels of a whole training run and of one inference pass over the
/// test split.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunPlan {
    /// Threads the kernels run with.
    pub threads: u32,
    /// Every kernel call of the training run (validation passes included).
    pub training: PlannedCalls,
    /// Every kernel call of one inference pass over the test split.
    pub inference: PlannedCalls,
    /// Rows `inference` covers.
    pub inference_rows: u64,
}

impl RunPlan {
    /// The plan of training `model` on data of shape `data` as `run` says.
    pub fn new(
        model: &ModelSpec,
        data: &DatasetShape,
        run: &RunShape,
    ) -> Result<RunPlan, PlanError> {
        let positive = [
            ("inputs", data.inputs),
            ("outputs", data.outputs),
            ("train_rows", data.train_rows),
            ("test_rows", data.test_rows),
            ("batch_size", run.batch_size),
            ("eval_batch_size", run.eval_batch_size),
            ("epochs", run.epochs),
            ("threads", run.threads as usize),
        ];
        if let Some((name, _)) = positive.iter().find(|(_, v)| *v == 0) {
            return Err(PlanError::Zero(name));
        }
        let arch = model.architecture(data.inputs, data.outputs)?;
        let (loss_fwd, _) = data.loss_kinds();
        let evaluation = |split_rows: usize, with_loss: bool, plan: &mut PlannedCalls| {
            for (chunk, count) in chunks(split_rows, run.eval_batch_size) {
                plan.add_all(&inference_calls(&arch, chunk), count);
                if with_loss {
                    plan.add(
                        KernelCall {
                            kind: loss_fwd,
                            shape: rows(chunk, arch.outputs),
                            pass: Pass::Eval,
                        },
                        count,
                    );
                }
            }
        };
        let mut epoch = PlannedCalls::default();
        for (batch, count) in chunks(data.train_rows, run.batch_size) {
            epoch.add_all(&step_calls(&arch, data, run.optimizer, batch), count);
        }
        evaluation(data.val_rows, true, &mut epoch);
        let mut training = PlannedCalls::default();
        training.extend(&epoch, run.epochs as u64);
        // Final evaluation of the kept weights on validation and test.
        evaluation(data.val_rows, true, &mut training);
        evaluation(data.test_rows, true, &mut training);
        let mut inference = PlannedCalls::default();
        evaluation(data.test_rows, false, &mut inference);
        Ok(RunPlan {
            threads: run.threads,
            training,
            inference,
            inference_rows: data.test_rows as u64,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::{Activation, Backbone, Norm};

    fn data() -> DatasetShape {
        DatasetShape {
            inputs: 5,
            outputs: 3,
            regression: false,
            train_rows: 100,
            val_rows: 30,
            test_rows: 50,
        }
    }

    #[test]
    fn mlp_step_in_order() {
        let spec = ModelSpec {
            backbone: Backbone::Mlp { widths: vec![4] },
            activation: Activation::Relu,
            dropout: 0.5,
            norm: Norm::Layer,
        };
        let arch = spec.architecture(5, 3).unwrap();
        let kinds: Vec<KernelKind> = step_calls(&arch, &data(), OptimizerKind::Sgd, 8)
            .iter()
            .map(|c| c.kind)
            .collect();
        use KernelKind::*;
        assert_eq!(
            kinds,
            [
                BatchGather,
                LinearFwd,
                LayernormFwd,
                ReluFwd,
                DropoutFwd,
                LinearFwd,
                SoftmaxXentFwd,
                SoftmaxXentBwd,
                LinearBwdWeight,
                LinearBwdData,
                DropoutBwd,
                ReluBwd,
                LayernormBwd,
                LinearBwdWeight,
                SgdStep,
            ]
        );
        let step = step_calls(&arch, &data(), OptimizerKind::Sgd, 8);
        assert_eq!(
            step.last().unwrap().shape,
            KernelShape::Elementwise {
                n: ((5 + 1) * 4 + 2 * 4 + (4 + 1) * 3) as u64
            }
        );
    }

    #[test]
    fn resnet_forward_continues_after_blocks() {
        let spec = ModelSpec {
            backbone: Backbone::Resnet {
                d_main: 4,
                d_hidden: vec![6, 6],
            },
            activation: Activation::Gelu,
            dropout: 0.0,
            norm: Norm::None,
        };
        let arch = spec.architecture(5, 3).unwrap();
        let kinds: Vec<KernelKind> = inference_calls(&arch, 2).iter().map(|c| c.kind).collect();
        use KernelKind::*;
        assert_eq!(
            kinds,
            [
                LinearFwd,
                LinearFwd,
                GeluFwd,
                LinearFwd,
                ResidualAddFwd,
                LinearFwd,
                GeluFwd,
                LinearFwd,
                ResidualAddFwd,
                GeluFwd,
                LinearFwd,
            ]
        );
    }

    #[test]
    fn run_plan_counts_steps_and_evaluations() {
        let run = RunShape {
            optimizer: OptimizerKind::AdamW,
            batch_size: 32,
            eval_batch_size: 20,
            epochs: 3,
            threads: 1,
        };
        let plan = RunPlan::new(&ModelSpec::default(), &data(), &run).unwrap();
        // 100 rows in batches of 32: 4 steps per epoch.
        assert_eq!(plan.training.count_of(KernelKind::AdamwStep), 12);
        assert_eq!(plan.training.count_of(KernelKind::BatchGather), 12);
        // Loss forward: one per step, plus validation (2 chunks of 30 rows)
        // per epoch, plus final validation (2) and test (3 chunks of 50).
        assert_eq!(
            plan.training.count_of(KernelKind::SoftmaxXentFwd),
            12 + 3 * 2 + 2 + 3
        );
        assert_eq!(plan.inference.count_of(KernelKind::SoftmaxXentFwd), 0);
        assert_eq!(plan.inference.count_of(KernelKind::LinearFwd), 3 * 3);
        assert_eq!(plan.inference_rows, 50);
        let bad = RunShape { epochs: 0, ..run };
        assert_eq!(
            RunPlan::new(&ModelSpec::default(), &data(), &bad),
            Err(PlanError::Zero("epochs"))
        );
    }

    /// An FT-Transformer step by hand: tokens = 1 + 3 features, the
    /// token axis from the tokenizer to the [CLS] selection, the first
    /// block without its attention norm, W_out with two heads.
    #[test]
    fn ft_transformer_step_tracks_the_token_axis() {
        use crate::spec::FtDropouts;
        let spec = ModelSpec {
            backbone: Backbone::FtTransformer {
                d_token: 4,
                n_blocks: 2,
                n_heads: 2,
                d_ffn: 3,
                dropouts: FtDropouts {
                    attention: 0.2,
                    ffn: 0.0,
                    residual: 0.0,
                },
                feature_widths: vec![1, 3, 1],
            },
            ..ModelSpec::ft_transformer(Vec::new())
        };
        let arch = spec.architecture(5, 3).unwrap();
        // Tokenizer (5 columns + 3 biases + CLS) × 4; per block attention
        // 4·(4+1)·4, norms 2·4 each (one in block 0, two in block 1), FFN
        // (4+1)·6 + (3+1)·4; head norm and linear.
        let blocks = 2 * (4 * 5 * 4 + (5 * 6 + 4 * 4)) + 3 * 8;
        assert_eq!(arch.parameters(), 9 * 4 + blocks + 8 + 5 * 3);
        let (b, t) = (8usize, 4usize);
        let step = step_calls(&arch, &data(), OptimizerKind::AdamW, b);
        let find = |kind| step.iter().find(|c| c.kind == kind).unwrap().shape;
        assert_eq!(find(KernelKind::TokenizerFwd), rows(b * t, 4));
        assert_eq!(
            find(KernelKind::AttentionScoreFwd),
            KernelShape::Gemm {
                m: 4,
                n: 4,
                k: 2,
                count: (b * 2) as u64
            }
        );
        assert_eq!(find(KernelKind::AttentionSoftmaxFwd), rows(b * 2 * t, t));
        assert_eq!(find(KernelKind::RegluFwd), rows(b * t, 3));
        // The [CLS] gather and the loss are back on batch rows.
        assert_eq!(find(KernelKind::BatchGather), rows(b, 5));
        let gathers: Vec<_> = step
            .iter()
            .filter(|c| c.kind == KernelKind::BatchGather)
            .map(|c| c.shape)
            .collect();
        assert_eq!(gathers, [rows(b, 5), rows(b, 4), rows(b, 4)]);
        assert_eq!(find(KernelKind::SoftmaxXentFwd), rows(b, 3));
        let count = |kind| step.iter().filter(|c| c.kind == kind).count();
        // Layer norms: block 0 FFN, block 1 attention and FFN, head.
        assert_eq!(count(KernelKind::LayernormFwd), 4);
        // Forward: 4 projections per block, 2 FFN linears, the head.
        assert_eq!(count(KernelKind::LinearFwd), 2 * 6 + 1);
        // Attention dropout only (FFN and residual dropouts are 0).
        assert_eq!(count(KernelKind::DropoutFwd), 2);
        // The tokenizer's backward is recorded though it needs no input
        // gradient; the first attention's q/k/v data GEMMs are needed
        // (the tokenizer comes before it).
        assert_eq!(count(KernelKind::TokenizerBwd), 1);
        assert_eq!(count(KernelKind::LinearBwdData), 2 * (1 + 3 + 2) + 1);
        assert!(spec.architecture(5, 3).is_ok());
        let mut bad = spec.clone();
        if let Backbone::FtTransformer { n_heads, .. } = &mut bad.backbone {
            *n_heads = 3;
        }
        assert!(matches!(
            bad.architecture(5, 3),
            Err(crate::SpecError::FtTransformer(_))
        ));
        assert!(spec.architecture(6, 3).is_err(), "widths cover 5 columns");
    }
}
