//! Kernel kinds and shapes.
//!
//! Every op of training and inference is a *kernel* of a [`KernelKind`]:
//! each GEMM of the forward pass, of the backward pass for the data and for
//! the weights, each activation, normalisation, dropout, loss and optimizer
//! step. The trainer reports each execution as a span; the energy model
//! prices each planned call at its [`KernelShape`].

use serde::{Deserialize, Serialize};
use std::fmt;

macro_rules! kernel_kinds {
    ($($(#[doc = $doc:literal])* $variant:ident => $name:literal,)*) => {
        /// A kind of kernel. The string names ([`KernelKind::as_str`]) are
        /// stable: they are sent to energyd and stored in calibrations.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub enum KernelKind {
            $($(#[doc = $doc])* $variant,)*
        }

        impl KernelKind {
            /// Every kind, in declaration order (the order of `as_index`).
            pub const ALL: &'static [KernelKind] = &[$(KernelKind::$variant,)*];

            /// The stable name of this kind.
            pub const fn as_str(self) -> &'static str {
                match self {
                    $(KernelKind::$variant => $name,)*
                }
            }

            /// The kind with this stable name.
            pub fn from_name(name: &str) -> Option<KernelKind> {
                match name {
                    $($name => Some(KernelKind::$variant),)*
                    _ => None,
                }
            }
        }
    };
}

kernel_kinds! {
    /// Gather of a mini-batch's rows (and targets) from the training matrix.
    BatchGather => "batch_gather",
    /// Dense layer forward: `Y = X·W + b`, GEMM (batch×in)·(in×out).
    LinearFwd => "linear_fwd",
    /// Dense layer backward to the input: `dX = dY·Wᵀ`, GEMM (batch×out)·(out×in).
    LinearBwdData => "linear_bwd_data",
    /// Dense layer backward to the weights: `dW = Xᵀ·dY`, GEMM (in×batch)·(batch×out),
    /// plus the bias gradient (column sums of dY).
    LinearBwdWeight => "linear_bwd_weight",
    /// ReLU forward, element-wise on (batch, out).
    ReluFwd => "relu_fwd",
    /// ReLU backward, element-wise.
    ReluBwd => "relu_bwd",
    /// GELU forward (tanh approximation), element-wise.
    GeluFwd => "gelu_fwd",
    /// GELU backward, element-wise.
    GeluBwd => "gelu_bwd",
    /// SiLU (swish) forward, element-wise.
    SiluFwd => "silu_fwd",
    /// SiLU backward, element-wise.
    SiluBwd => "silu_bwd",
    /// tanh forward, element-wise.
    TanhFwd => "tanh_fwd",
    /// tanh backward, element-wise.
    TanhBwd => "tanh_bwd",
    /// SELU forward, element-wise.
    SeluFwd => "selu_fwd",
    /// SELU backward, element-wise.
    SeluBwd => "selu_bwd",
    /// Batch normalisation forward (batch statistics in training, running
    /// statistics in evaluation) on (batch, features).
    BatchnormFwd => "batchnorm_fwd",
    /// Batch normalisation backward (input, scale and shift gradients).
    BatchnormBwd => "batchnorm_bwd",
    /// Layer normalisation forward, per row of (batch, features).
    LayernormFwd => "layernorm_fwd",
    /// Layer normalisation backward.
    LayernormBwd => "layernorm_bwd",
    /// Dropout forward: draws a mask and scales, element-wise (in
    /// evaluation: a copy).
    DropoutFwd => "dropout_fwd",
    /// Dropout backward: applies the mask, element-wise.
    DropoutBwd => "dropout_bwd",
    /// Residual addition `y = x + f(x)` of a ResNet block, element-wise.
    ResidualAddFwd => "residual_add_fwd",
    /// Residual backward: adds the skip gradient, element-wise.
    ResidualAddBwd => "residual_add_bwd",
    /// Softmax + cross-entropy loss over (batch, classes) logits.
    SoftmaxXentFwd => "softmax_xent_fwd",
    /// Gradient of softmax + cross-entropy with respect to the logits.
    SoftmaxXentBwd => "softmax_xent_bwd",
    /// Mean squared error loss over (batch, 1) predictions.
    MseFwd => "mse_fwd",
    /// Gradient of the mean squared error.
    MseBwd => "mse_bwd",
    /// One AdamW step over every parameter of the model.
    AdamwStep => "adamw_step",
    /// One SGD-with-momentum step over every parameter of the model.
    SgdStep => "sgd_step",
    /// FT-Transformer feature tokenizer forward: per feature `Σ x_c·E_c + b`
    /// over its encoded columns, [CLS] first; rows (batch·tokens) × d_token.
    TokenizerFwd => "tokenizer_fwd",
    /// Feature tokenizer backward (embedding, bias and [CLS] gradients).
    TokenizerBwd => "tokenizer_bwd",
    /// Attention scores `Q·Kᵀ/√d_head`: batch·heads products
    /// (tokens×d_head)·(d_head×tokens).
    AttentionScoreFwd => "attention_score_fwd",
    /// Backward of the scores to Q and K: two GEMMs per (sample, head).
    AttentionScoreBwd => "attention_score_bwd",
    /// Row softmax of the attention scores, rows (batch·heads·tokens) × tokens.
    AttentionSoftmaxFwd => "attention_softmax_fwd",
    /// Softmax backward, same rows.
    AttentionSoftmaxBwd => "attention_softmax_bwd",
    /// Attention context `P·V`: batch·heads products
    /// (tokens×tokens)·(tokens×d_head).
    AttentionContextFwd => "attention_context_fwd",
    /// Context backward to P and V: two GEMMs per (sample, head).
    AttentionContextBwd => "attention_context_bwd",
    /// ReGLU forward `a·ReLU(b)` of the halves of (rows, 2h), on (rows, h).
    RegluFwd => "reglu_fwd",
    /// ReGLU backward, on (rows, h).
    RegluBwd => "reglu_bwd",
}

impl KernelKind {
    /// Dense index of this kind, `0..KernelKind::ALL.len()`.
    pub fn as_index(self) -> usize {
        self as usize
    }

    /// The shape class calls of this kind have.
    pub fn shape_class(self) -> ShapeClass {
        match self {
            KernelKind::LinearFwd
            | KernelKind::LinearBwdData
            | KernelKind::LinearBwdWeight
            | KernelKind::AttentionScoreFwd
            | KernelKind::AttentionScoreBwd
            | KernelKind::AttentionContextFwd
            | KernelKind::AttentionContextBwd => ShapeClass::Gemm,
            KernelKind::AdamwStep | KernelKind::SgdStep => ShapeClass::Elementwise,
            _ => ShapeClass::Rows,
        }
    }
}

impl fmt::Display for KernelKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Serialize for KernelKind {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for KernelKind {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let name = String::deserialize(d)?;
        KernelKind::from_name(&name)
            .ok_or_else(|| serde::de::Error::custom(format!("unknown kernel kind {name:?}")))
    }
}

/// Which [`KernelShape`] variant a kind's calls have.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ShapeClass {
    /// [`KernelShape::Gemm`].
    Gemm,
    /// [`KernelShape::Rows`].
    Rows,
    /// [`KernelShape::Elementwise`].
    Elementwise,
}

/// The shape of one kernel call.
///
/// A dense layer's three GEMMs all carry the *layer's* dimensions (`m`
/// rows, `k` inputs, `n` outputs), whichever operand is transposed, so a
/// layer's forward and backward calls are priced on the same axes. `count`
/// independent products of that size make one call (1 for dense layers;
/// batch × heads for attention).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum KernelShape {
    /// `count` products of an (m×k) by a (k×n) matrix.
    Gemm {
        /// Rows (batch).
        m: u64,
        /// Output columns.
        n: u64,
        /// Inner dimension (input features).
        k: u64,
        /// Independent products in the call.
        count: u64,
    },
    /// A kernel over `rows` rows of `width` features: activations,
    /// normalisations, dropout, residual additions, losses (width = logit
    /// columns), the batch gather (width = input features).
    Rows {
        /// Rows.
        rows: u64,
        /// Features per row.
        width: u64,
    },
    /// `n` independent elements: an optimizer step over `n` parameters.
    Elementwise {
        /// Elements.
        n: u64,
    },
}

impl KernelShape {
    /// A dense layer over `rows` rows from `inputs` to `outputs` features.
    pub fn dense(rows: u64, inputs: u64, outputs: u64) -> KernelShape {
        KernelShape::Gemm {
            m: rows,
            n: outputs,
            k: inputs,
            count: 1,
        }
    }

    /// The shape a kernel of `kind` has inside a dense block of `rows`
    /// rows from `inputs` to `outputs` features: the GEMMs are the block's
    /// layer, row-wise kernels run on its output (the batch gather on its
    /// input), an optimizer step updates its `(inputs + 1) × outputs`
    /// parameters. Microbenchmark grids are written in these terms.
    pub fn in_dense_block(kind: KernelKind, rows: u64, inputs: u64, outputs: u64) -> KernelShape {
        match kind.shape_class() {
            ShapeClass::Gemm => KernelShape::dense(rows, inputs, outputs),
            ShapeClass::Elementwise => KernelShape::Elementwise {
                n: (inputs + 1) * outputs,
            },
            ShapeClass::Rows if kind == KernelKind::BatchGather => KernelShape::Rows {
                rows,
                width: inputs,
            },
            ShapeClass::Rows => KernelShape::Rows {
                rows,
                width: outputs,
            },
        }
    }

    /// Whether a dimension is zero (nothing to run).
    pub fn is_empty(&self) -> bool {
        match *self {
            KernelShape::Gemm { m, n, k, count } => m == 0 || n == 0 || k == 0 || count == 0,
            KernelShape::Rows { rows, width } => rows == 0 || width == 0,
            KernelShape::Elementwise { n } => n == 0,
        }
    }

    /// Whether this shape is of `class`.
    pub fn is(&self, class: ShapeClass) -> bool {
        matches!(
            (self, class),
            (KernelShape::Gemm { .. }, ShapeClass::Gemm)
                | (KernelShape::Rows { .. }, ShapeClass::Rows)
                | (KernelShape::Elementwise { .. }, ShapeClass::Elementwise)
        )
    }
}

impl fmt::Display for KernelShape {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            KernelShape::Gemm { m, n, k, count: 1 } => write!(f, "gemm {m}x{k}->{n}"),
            KernelShape::Gemm { m, n, k, count } => write!(f, "gemm {count}*({m}x{k}->{n})"),
            KernelShape::Rows { rows, width } => write!(f, "rows {rows}x{width}"),
            KernelShape::Elementwise { n } => write!(f, "elements {n}"),
        }
    }
}

/// Whether a forward pass trains or evaluates. Some kernels do different
/// work in the two (dropout draws a mask only in training; in evaluation
/// its `dropout_fwd` span is a copy), which pricing takes into account.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Pass {
    /// Training step (forward in training mode, backward, optimizer).
    Train,
    /// Evaluation or inference forward pass.
    Eval,
}

/// One kernel execution the trainer will record: which kernel, at which
/// shape, in which pass.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct KernelCall {
    /// The kernel (the span's name).
    pub kind: KernelKind,
    /// Its shape.
    pub shape: KernelShape,
    /// Training or evaluation.
    pub pass: Pass,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_are_unique() {
        let mut seen = std::collections::HashSet::new();
        for (i, &k) in KernelKind::ALL.iter().enumerate() {
            assert_eq!(k.as_index(), i);
            assert_eq!(KernelKind::from_name(k.as_str()), Some(k));
            assert!(seen.insert(k.as_str()), "duplicate name {}", k);
            let json = serde_json::to_string(&k).unwrap();
            assert_eq!(serde_json::from_str::<KernelKind>(&json).unwrap(), k);
        }
        assert_eq!(KernelKind::LinearFwd.as_str(), "linear_fwd");
        assert_eq!(KernelKind::from_name("nope"), None);
        assert!(serde_json::from_str::<KernelKind>("\"nope\"").is_err());
    }

    #[test]
    fn dense_block_shapes_follow_the_kind() {
        for &k in KernelKind::ALL {
            let s = KernelShape::in_dense_block(k, 8, 5, 3);
            assert!(s.is(k.shape_class()), "{k}: {s}");
            assert!(!s.is_empty());
        }
        assert_eq!(
            KernelShape::in_dense_block(KernelKind::AdamwStep, 8, 5, 3),
            KernelShape::Elementwise { n: 18 }
        );
        assert_eq!(
            KernelShape::in_dense_block(KernelKind::BatchGather, 8, 5, 3),
            KernelShape::Rows { rows: 8, width: 5 }
        );
        assert!(KernelShape::Rows { rows: 0, width: 3 }.is_empty());
    }
}
