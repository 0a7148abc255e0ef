//! Zero-cost proxies: scores of an *untrained* network from one minibatch
//! (ZiCo: two or more), meant to rank architectures by the accuracy they
//! would reach once trained, at a tiny fraction of a training's cost.
//!
//! Every proxy is computed on a network built from an
//! [`nn_plan::ModelSpec`] by the trainer (`tabular-nn`), through its layer
//! API only: parameters and their gradients ([`tabular_nn::model::param`]),
//! the layer visitor and [`Observer`](tabular_nn::model::visit::Observer)
//! hooks seeing each layer's input, output and output gradient. So any
//! backbone the trainer builds (MLP, ResNet, with or without batch or layer
//! normalisation) is scored; an FT-Transformer will be once the trainer
//! builds one. [`ProxyKind`] names them; [`score`] computes one; [`rank`]
//! holds Kendall τ-b and Spearman ρ and the random and stratified samples
//! the benchmark judges proxies on; [`evolve`] is the core of evolved
//! proxies (expression trees over per-layer tensors, fitness = Kendall τ,
//! seeded evolution), which `nas-client proxies --evolve-table` runs;
//! [`scalar`] is its second, architecture-level expression form, whose
//! terminals are the standard proxies' scores and per-layer expressions
//! (`--evolve-terminals proxies+tensors`).
//!
//! # Protocol (faithful to the reference code, see
//! `shared/research/proxies-splitting.md` §2)
//! - Per-weight saliencies are taken on the weight matrices of every
//!   linear layer (not biases, not norm parameters) and summed to one
//!   scalar, as Samsung's `zero-cost-nas` does on Conv2d/Linear weights.
//! - Networks are scored at initialisation (the trainer's init, seeded),
//!   in training mode (batch normalisation on batch statistics), with
//!   **dropout removed**: dropout is a training regulariser, and its random
//!   mask would make a score depend on the draw.
//! - Loss: the training loss of the task (softmax cross-entropy, or mean
//!   squared error for regression), a mean over the batch.
//!
//! # Sign convention
//! Every [`ProxyKind`] is oriented so that **higher = better** (predicts a
//! higher trained accuracy). All reference implementations are already so
//! oriented except GraSP, whose reference code negates its score
//! (`-W ⊙ Hg`); we keep that negation. Degenerate scores are `-∞` (NASWOT
//! with a singular kernel, Zen with no output change, jacob_cov with a
//! constant Jacobian row): the worst possible score, never a panic; a NaN
//! never leaves [`score`].
//!
//! # What differs from the references, and why
//! - synflow: the reference linearises in float64. Our layers are f32, so
//!   the forward and backward passes run in f32 (sums of the score in f64).
//!   With |θ| weights and an all-ones input every term is positive, so
//!   there is no cancellation; the only f32 risk is overflow, which makes
//!   the score +∞ (not seen on the benchmark's tables: widths ≤ 128, at
//!   most 3 hidden layers; deeper and wider spaces should check). Norm layers are removed by building the spec
//!   without them (the linear layers get the same initial weights).
//! - GraSP's Hessian-vector product is a central finite difference of two
//!   gradients (`H v ≈ (∇L(θ+εv) − ∇L(θ−εv)) / 2ε`, step in
//!   [`HVP_STEP`]), not a double backward pass: our layers have no
//!   second-order backward. It is checked against an f64 finite-difference
//!   Hessian in the tests.
//! - NASWOT hooks every activation's input (the reference hooks ReLUs);
//!   the binary code `1[x > 0]` is the sign pattern of the pre-activation,
//!   which for tanh/GELU/SiLU is still the side of the origin a unit is on,
//!   so networks of any activation get a score rather than -∞.
//! - Zen's "feature map before global pooling" is the input of the last
//!   linear layer (the head), and its batch-norm factor uses the batch
//!   variance each batch norm normalises with on the data pass (the
//!   reference reads running variances that its own forward passes just
//!   updated from the same batches).
//! - jacob_cov: eigenvalues of the correlation matrix below zero (rounding;
//!   the matrix is positive semi-definite) are clamped to zero, where the
//!   reference would take the log of a negative number.
//! - ExpressFlow: `V = z ⊙ |∂R/∂z|` on every activation output of the
//!   |θ| network; the score sums, over the first ⌈L/2⌉ activation layers
//!   (those nearest the input), ΣV × the layer's width, divided by 10.
#![deny(missing_docs)]

pub mod evolve;
mod measures;
pub mod named;
pub mod probe;
pub mod rank;
pub mod scalar;

#[cfg(test)]
mod tests;

pub use measures::{zen_inputs, zen_reinit};
pub use named::{NamedProxyError, Proxy};
use ndarray::{Array1, Array2};
use nn_plan::ModelSpec;
use std::fmt;
use std::str::FromStr;
pub use tabular_nn::train::LossKind;

/// Relative step of GraSP's finite-difference Hessian-vector product: the
/// largest weight moves by this much (f32 gradients keep about 7 digits,
/// so a step much smaller loses the difference to rounding, a larger one
/// adds curvature error; at 1e-3 the product is within 2e-3 relative of an
/// f64 finite-difference Hessian in the tests).
pub const HVP_STEP: f32 = 1e-3;

/// Zen's perturbation of the Gaussian input (the reference's mixup γ).
pub const ZEN_MIXUP: f32 = 1e-2;

/// jacob_cov's and the reference's regulariser of eigenvalues.
pub const JACOB_COV_K: f64 = 1e-5;

/// One zero-cost proxy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ProxyKind {
    /// Σ over linear layers of ‖∂L/∂W‖_F.
    GradNorm,
    /// Σ |W ⊙ ∂L/∂W| (SNIP saliency).
    Snip,
    /// −Σ W ⊙ (H ∂L/∂W) (GraSP, sign as in the reference code).
    Grasp,
    /// Σ over linear output units of fan-in × ½ mean_n (a ⊙ ∂L/∂a)².
    Fisher,
    /// Σ |θ ⊙ ∂R/∂θ| with |θ| weights, all-ones input, R = Σ outputs.
    Synflow,
    /// −Σ [log(λ + k) + 1/(λ + k)] over the eigenvalues of the input
    /// Jacobians' correlation matrix.
    JacobCov,
    /// log |det K| of the activation-pattern kernel (NASWOT).
    Naswot,
    /// log of the output change under a small input perturbation at
    /// Gaussian weights, plus batch-norm scales (Zen-NAS).
    Zen,
    /// Σ_layers log Σ_θ mean|g| / std(g) over batches (ZiCo).
    Zico,
    /// ExpressFlow (ATLAS): activation × |gradient| of the |θ| network.
    ExpressFlow,
    /// Trainable parameters (baseline).
    Params,
    /// Inference FLOPs per row (baseline).
    Flops,
}

impl ProxyKind {
    /// Every proxy, in a fixed order.
    pub const ALL: [ProxyKind; 12] = [
        ProxyKind::GradNorm,
        ProxyKind::Snip,
        ProxyKind::Grasp,
        ProxyKind::Fisher,
        ProxyKind::Synflow,
        ProxyKind::JacobCov,
        ProxyKind::Naswot,
        ProxyKind::Zen,
        ProxyKind::Zico,
        ProxyKind::ExpressFlow,
        ProxyKind::Params,
        ProxyKind::Flops,
    ];

    /// The name used on command lines and in reports.
    pub fn name(self) -> &'static str {
        match self {
            ProxyKind::GradNorm => "grad_norm",
            ProxyKind::Snip => "snip",
            ProxyKind::Grasp => "grasp",
            ProxyKind::Fisher => "fisher",
            ProxyKind::Synflow => "synflow",
            ProxyKind::JacobCov => "jacob_cov",
            ProxyKind::Naswot => "naswot",
            ProxyKind::Zen => "zen",
            ProxyKind::Zico => "zico",
            ProxyKind::ExpressFlow => "expressflow",
            ProxyKind::Params => "params",
            ProxyKind::Flops => "flops",
        }
    }

    /// Batches the proxy needs (ZiCo compares gradients across batches).
    pub fn min_batches(self) -> usize {
        match self {
            ProxyKind::Zico => 2,
            _ => 1,
        }
    }

    /// Whether the proxy reads the data (labels or inputs); synflow, Zen
    /// and the baselines do not.
    pub fn uses_data(self) -> bool {
        !matches!(
            self,
            ProxyKind::Synflow | ProxyKind::Zen | ProxyKind::Params | ProxyKind::Flops
        )
    }
}

impl fmt::Display for ProxyKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A proxy name that is not one of [`ProxyKind::ALL`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown proxy {0:?} (known: grad_norm, snip, grasp, fisher, synflow, jacob_cov, naswot, zen, zico, expressflow, params, flops)")]
pub struct UnknownProxy(pub String);

impl FromStr for ProxyKind {
    type Err = UnknownProxy;
    /// Parses a [`ProxyKind::name`] (case-insensitive; `-` for `_`, and the
    /// aliases `nwot`, `jacov`, `express_flow`).
    fn from_str(s: &str) -> Result<ProxyKind, UnknownProxy> {
        let key = s.trim().to_ascii_lowercase().replace('-', "_");
        let alias = match key.as_str() {
            "nwot" => Some(ProxyKind::Naswot),
            "jacov" => Some(ProxyKind::JacobCov),
            "express_flow" => Some(ProxyKind::ExpressFlow),
            _ => None,
        };
        alias
            .or_else(|| ProxyKind::ALL.into_iter().find(|k| k.name() == key))
            .ok_or_else(|| UnknownProxy(s.to_owned()))
    }
}

/// Why a proxy cannot be computed.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum ProxyError {
    /// The spec does not build.
    #[error("the model spec does not build: {0}")]
    Spec(#[from] nn_plan::SpecError),
    /// No batch given, or fewer than the proxy needs.
    #[error("{proxy} needs {needed} batches, got {got}")]
    Batches {
        /// The proxy.
        proxy: ProxyKind,
        /// Batches it needs.
        needed: usize,
        /// Batches given.
        got: usize,
    },
    /// A batch's shape disagrees with the others or with its labels.
    #[error("batch {index}: {problem}")]
    Batch {
        /// Which batch (from 0).
        index: usize,
        /// What is wrong.
        problem: String,
    },
}

/// One minibatch: rows of encoded features and their targets (class
/// indices as f32, or standardised regression values).
#[derive(Debug, Clone)]
pub struct ProxyBatch {
    /// Features, (rows, inputs).
    pub x: Array2<f32>,
    /// Targets, one per row.
    pub y: Array1<f32>,
}

/// What proxies are computed on: the batches (the first for one-batch
/// proxies, all for ZiCo), the loss, and the network's outputs.
///
/// Invariant (checked by [`ProxyData::new`]): at least one batch, every
/// batch has at least 2 rows, the same number of columns, and one target
/// per row.
#[derive(Debug, Clone)]
pub struct ProxyData {
    batches: Vec<ProxyBatch>,
    loss: LossKind,
    outputs: usize,
}

impl ProxyData {
    /// Checks and keeps the batches. `outputs`: classes for a
    /// classification, 1 for a regression.
    pub fn new(
        batches: Vec<ProxyBatch>,
        loss: LossKind,
        outputs: usize,
    ) -> Result<ProxyData, ProxyError> {
        let Some(first) = batches.first() else {
            return Err(ProxyError::Batches {
                proxy: ProxyKind::GradNorm,
                needed: 1,
                got: 0,
            });
        };
        let cols = first.x.ncols();
        for (index, b) in batches.iter().enumerate() {
            let problem = if b.x.nrows() < 2 {
                Some(format!("{} rows (proxies need at least 2)", b.x.nrows()))
            } else if b.x.ncols() != cols || cols == 0 {
                Some(format!("{} columns where batch 0 has {cols}", b.x.ncols()))
            } else if b.y.len() != b.x.nrows() {
                Some(format!("{} targets for {} rows", b.y.len(), b.x.nrows()))
            } else {
                None
            };
            if let Some(problem) = problem {
                return Err(ProxyError::Batch { index, problem });
            }
        }
        if outputs == 0 {
            return Err(ProxyError::Spec(nn_plan::SpecError::Empty {
                inputs: cols,
                outputs,
            }));
        }
        Ok(ProxyData {
            batches,
            loss,
            outputs,
        })
    }

    /// The batches.
    pub fn batches(&self) -> &[ProxyBatch] {
        &self.batches
    }

    /// The loss.
    pub fn loss(&self) -> LossKind {
        self.loss
    }

    /// Input features.
    pub fn inputs(&self) -> usize {
        self.batches[0].x.ncols()
    }

    /// Network outputs.
    pub fn outputs(&self) -> usize {
        self.outputs
    }
}

/// Scores the architecture `spec` with `kind` on `data`, the network
/// initialised from `seed` (with dropout removed; see the crate doc).
/// Higher is better; degenerate networks get -∞, never NaN.
pub fn score(
    kind: ProxyKind,
    spec: &ModelSpec,
    data: &ProxyData,
    seed: u64,
) -> Result<f64, ProxyError> {
    if data.batches.len() < kind.min_batches() {
        return Err(ProxyError::Batches {
            proxy: kind,
            needed: kind.min_batches(),
            got: data.batches.len(),
        });
    }
    let value = measures::compute(kind, spec, data, seed)?;
    Ok(if value.is_nan() {
        f64::NEG_INFINITY
    } else {
        value
    })
}
