//! Model descriptions and the shape-only architecture they expand to.
//!
//! Backbones follow Gorishniy et al., "Revisiting Deep Learning Models for
//! Tabular Data" (NeurIPS 2021):
//! - MLP: blocks `Linear → [Norm] → Activation → Dropout`, then a linear head;
//! - ResNet: `Linear(d_in, d_main)`, blocks
//!   `x + Dropout(Linear(Dropout(Act(Linear(Norm(x))))))`, then
//!   `Norm → Activation → Linear` as the head.
//!
//! [`ModelSpec::architecture`] is the one place a backbone is expanded into
//! layers: the trainer builds its layers from the [`Architecture`] and the
//! kernel plan walks the same [`Architecture`]. A new backbone is a new
//! [`Backbone`] variant, an arm there, and (if it needs a new layer) a
//! [`LayerShape`] variant with its kernels in `crate::plan` and its layer
//! in the trainer.

use crate::kernel::KernelKind;
use serde::{Deserialize, Serialize};

/// Element-wise non-linearities.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "clap", derive(clap::ValueEnum))]
#[serde(rename_all = "lowercase")]
pub enum Activation {
    /// max(0, x).
    Relu,
    /// Gaussian error linear unit, tanh approximation.
    Gelu,
    /// x·sigmoid(x).
    #[cfg_attr(feature = "clap", value(alias = "swish"))]
    Silu,
    /// Hyperbolic tangent.
    Tanh,
    /// Scaled exponential linear unit (Klambauer et al. 2017).
    Selu,
}

const SELU_LAMBDA: f32 = 1.050_701;
const SELU_ALPHA: f32 = 1.673_263_2;
const GELU_K: f32 = 0.797_884_6; // sqrt(2/π)

impl Activation {
    /// Every activation, in declaration order (the order of `from_index`).
    pub const ALL: [Activation; 5] = [
        Activation::Relu,
        Activation::Gelu,
        Activation::Silu,
        Activation::Tanh,
        Activation::Selu,
    ];

    /// Parses `relu`, `gelu`, `silu` (or `swish`), `tanh`, `selu`.
    pub fn parse(name: &str) -> Option<Activation> {
        match name.to_ascii_lowercase().as_str() {
            "relu" => Some(Activation::Relu),
            "gelu" => Some(Activation::Gelu),
            "silu" | "swish" => Some(Activation::Silu),
            "tanh" => Some(Activation::Tanh),
            "selu" => Some(Activation::Selu),
            _ => None,
        }
    }
    /// Kernel kind of the forward pass.
    pub fn forward_kind(self) -> KernelKind {
        match self {
            Activation::Relu => KernelKind::ReluFwd,
            Activation::Gelu => KernelKind::GeluFwd,
            Activation::Silu => KernelKind::SiluFwd,
            Activation::Tanh => KernelKind::TanhFwd,
            Activation::Selu => KernelKind::SeluFwd,
        }
    }
    /// Kernel kind of the backward pass.
    pub fn backward_kind(self) -> KernelKind {
        match self {
            Activation::Relu => KernelKind::ReluBwd,
            Activation::Gelu => KernelKind::GeluBwd,
            Activation::Silu => KernelKind::SiluBwd,
            Activation::Tanh => KernelKind::TanhBwd,
            Activation::Selu => KernelKind::SeluBwd,
        }
    }
    /// Rough floating-point cost per element of the forward pass.
    pub fn flops_per_element(self) -> u64 {
        match self {
            Activation::Relu => 1,
            Activation::Gelu => 10,
            Activation::Silu => 5,
            Activation::Tanh => 5,
            Activation::Selu => 5,
        }
    }
    /// The activation of index `index` in [`Activation::ALL`] (the last
    /// one beyond): lets the trainer compile its loops once per variant
    /// from a `const` index.
    pub const fn from_index(index: u8) -> Activation {
        match index {
            0 => Activation::Relu,
            1 => Activation::Gelu,
            2 => Activation::Silu,
            3 => Activation::Tanh,
            _ => Activation::Selu,
        }
    }
    /// The function at `x`. Inlined into the trainer's element-wise loops
    /// (the definition of the activation is part of what it is).
    #[inline(always)]
    pub fn apply(self, x: f32) -> f32 {
        match self {
            Activation::Relu => x.max(0.0),
            Activation::Gelu => 0.5 * x * (1.0 + (GELU_K * (x + 0.044_715 * x * x * x)).tanh()),
            Activation::Silu => x / (1.0 + (-x).exp()),
            Activation::Tanh => x.tanh(),
            Activation::Selu => {
                if x > 0.0 {
                    SELU_LAMBDA * x
                } else {
                    SELU_LAMBDA * SELU_ALPHA * (x.exp() - 1.0)
                }
            }
        }
    }
    /// σ'(x), given the output `y = σ(x)` (ReLU: 0 at the kink).
    #[inline(always)]
    pub fn derivative(self, x: f32, y: f32) -> f32 {
        match self {
            Activation::Relu => {
                if x > 0.0 {
                    1.0
                } else {
                    0.0
                }
            }
            Activation::Gelu => {
                let u = GELU_K * (x + 0.044_715 * x * x * x);
                let t = u.tanh();
                0.5 * (1.0 + t) + 0.5 * x * (1.0 - t * t) * GELU_K * (1.0 + 3.0 * 0.044_715 * x * x)
            }
            Activation::Silu => {
                let s = 1.0 / (1.0 + (-x).exp());
                s * (1.0 + x * (1.0 - s))
            }
            Activation::Tanh => 1.0 - y * y,
            Activation::Selu => {
                if x > 0.0 {
                    SELU_LAMBDA
                } else {
                    y + SELU_LAMBDA * SELU_ALPHA
                }
            }
        }
    }

    /// σ''(x), for second-order methods (neuron splitting's
    /// S = E[g·σ''(h)·x xᵀ]).
    ///
    /// ReLU's second derivative is zero wherever it exists, which would make
    /// every splitting matrix zero; it is replaced by that of the softplus
    /// surrogate `softplus(βx)/β` with β = [`RELU_SURROGATE_BETA`] (= 3, the
    /// constant of the splitting authors' reference code), whose second
    /// derivative is `β·s(1−s)` with `s = sigmoid(βx)`. SELU's kink at 0
    /// takes the left-hand value. GELU is the tanh form used by
    /// [`Activation::apply`].
    pub fn second_derivative(self, x: f32) -> f32 {
        match self {
            Activation::Relu => {
                let s = sigmoid(RELU_SURROGATE_BETA * x);
                RELU_SURROGATE_BETA * s * (1.0 - s)
            }
            Activation::Gelu => {
                let du = GELU_K * (1.0 + 3.0 * 0.044_715 * x * x);
                let d2u = GELU_K * 6.0 * 0.044_715 * x;
                let t = (GELU_K * (x + 0.044_715 * x * x * x)).tanh();
                let sech2 = 1.0 - t * t;
                sech2 * (du + 0.5 * x * (d2u - 2.0 * t * du * du))
            }
            Activation::Silu => {
                let s = sigmoid(x);
                s * (1.0 - s) * (2.0 + x * (1.0 - 2.0 * s))
            }
            Activation::Tanh => {
                let t = x.tanh();
                -2.0 * t * (1.0 - t * t)
            }
            Activation::Selu => {
                if x > 0.0 {
                    0.0
                } else {
                    SELU_LAMBDA * SELU_ALPHA * x.exp()
                }
            }
        }
    }
}

/// Sharpness β of the softplus surrogate whose σ'' stands in for ReLU's
/// (see [`Activation::second_derivative`]).
pub const RELU_SURROGATE_BETA: f32 = 3.0;

fn sigmoid(x: f32) -> f32 {
    1.0 / (1.0 + (-x).exp())
}

/// Normalisation of a hidden layer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "clap", derive(clap::ValueEnum))]
#[serde(rename_all = "lowercase")]
pub enum Norm {
    /// Batch normalisation (Ioffe and Szegedy 2015).
    #[cfg_attr(feature = "clap", value(alias = "batchnorm", alias = "bn"))]
    Batch,
    /// Layer normalisation (Ba et al. 2016).
    #[cfg_attr(feature = "clap", value(alias = "layernorm", alias = "ln"))]
    Layer,
    /// No normalisation.
    None,
}

impl Norm {
    /// Parses `batch`, `layer`, `none` (and `batchnorm`/`bn`,
    /// `layernorm`/`ln`).
    pub fn parse(name: &str) -> Option<Norm> {
        match name.to_ascii_lowercase().as_str() {
            "batch" | "batchnorm" | "bn" => Some(Norm::Batch),
            "layer" | "layernorm" | "ln" => Some(Norm::Layer),
            "none" => Some(Norm::None),
            _ => None,
        }
    }
    /// Kernel kinds (forward, backward), `None` for [`Norm::None`].
    pub fn kinds(self) -> Option<(KernelKind, KernelKind)> {
        match self {
            Norm::Batch => Some((KernelKind::BatchnormFwd, KernelKind::BatchnormBwd)),
            Norm::Layer => Some((KernelKind::LayernormFwd, KernelKind::LayernormBwd)),
            Norm::None => None,
        }
    }
}

/// Which optimizer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "clap", derive(clap::ValueEnum))]
#[serde(rename_all = "lowercase")]
pub enum OptimizerKind {
    /// Adam with decoupled weight decay (Loshchilov and Hutter 2019), as
    /// PyTorch's `AdamW`.
    #[serde(rename = "adamw")]
    #[cfg_attr(feature = "clap", value(name = "adamw", alias = "adam"))]
    AdamW,
    /// SGD with momentum and L2 weight decay, as PyTorch's `SGD`.
    Sgd,
}

impl OptimizerKind {
    /// Parses `adamw` (or `adam`) or `sgd`.
    pub fn parse(name: &str) -> Option<OptimizerKind> {
        match name.to_ascii_lowercase().as_str() {
            "adamw" | "adam" => Some(OptimizerKind::AdamW),
            "sgd" => Some(OptimizerKind::Sgd),
            _ => None,
        }
    }
    /// The kernel of one step over every parameter.
    pub fn step_kind(self) -> KernelKind {
        match self {
            OptimizerKind::AdamW => KernelKind::AdamwStep,
            OptimizerKind::Sgd => KernelKind::SgdStep,
        }
    }
}

/// The network family and its sizes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
#[non_exhaustive]
pub enum Backbone {
    /// Multi-layer perceptron with these hidden widths (may be empty: a
    /// linear model).
    Mlp {
        /// Width of each hidden layer.
        widths: Vec<usize>,
    },
    /// Tabular ResNet.
    Resnet {
        /// Width of the residual stream.
        d_main: usize,
        /// Hidden width of each block (one entry per block).
        d_hidden: Vec<usize>,
    },
    /// FT-Transformer (feature tokenizer + Transformer, Gorishniy et al.
    /// 2021). Its dropouts are its own ([`FtDropouts`]); the spec's
    /// `activation`, `dropout` and `norm` do not apply to it.
    #[serde(rename = "ft-transformer")]
    FtTransformer {
        /// Token width (d_token).
        d_token: usize,
        /// Transformer blocks.
        n_blocks: usize,
        /// Attention heads (divides `d_token`).
        n_heads: usize,
        /// Hidden width h of the ReGLU feed-forward (its first linear layer
        /// has 2h outputs); published: `int(d_token · 4/3)`.
        d_ffn: usize,
        /// Attention, feed-forward and residual dropout.
        dropouts: FtDropouts,
        /// Encoded input columns of each feature, in input order: 1 for a
        /// numeric feature (its token is `x·w + b`), the one-hot width for
        /// a categorical one (its token is the embedding of its category
        /// plus a bias: `Σ_c x_c·E_c + b`, a lookup for a one-hot block).
        /// Empty: every input column is a numeric feature.
        #[serde(default)]
        feature_widths: Vec<usize>,
    },
}

/// Dropout probabilities of an FT-Transformer. Compared by their bits,
/// so a description is `Eq` (two descriptions are the same network).
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
pub struct FtDropouts {
    /// On the attention probabilities.
    pub attention: f32,
    /// Inside the feed-forward, after ReGLU.
    pub ffn: f32,
    /// On each residual branch's output.
    pub residual: f32,
}

impl PartialEq for FtDropouts {
    fn eq(&self, other: &FtDropouts) -> bool {
        self.attention.to_bits() == other.attention.to_bits()
            && self.ffn.to_bits() == other.ffn.to_bits()
            && self.residual.to_bits() == other.residual.to_bits()
    }
}

impl Eq for FtDropouts {}

impl FtDropouts {
    /// The published default FT-Transformer's (attention 0.2, FFN 0.1,
    /// residual 0).
    pub const PUBLISHED: FtDropouts = FtDropouts {
        attention: 0.2,
        ffn: 0.1,
        residual: 0.0,
    };
}

/// Why a description cannot be built.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum SpecError {
    /// An architecture string did not parse.
    #[error("cannot parse architecture {0:?}: expected widths joined by '-', e.g. '256-256'")]
    Arch(String),
    /// A width is zero.
    #[error("architecture {0:?} has a zero width")]
    ZeroWidth(String),
    /// An FT-Transformer description is inconsistent.
    #[error("ft-transformer: {0}")]
    FtTransformer(String),
    /// A ResNet needs its main width and at least one block.
    #[error("a resnet architecture is 'D_MAIN-D_HIDDEN[-D_HIDDEN...]' (one hidden width per block), got {0:?}")]
    Resnet(String),
    /// Dropout outside [0, 1).
    #[error("dropout {0} is outside [0, 1)")]
    Dropout(f32),
    /// The network has no inputs or no outputs.
    #[error("a network needs at least one input and one output, got {inputs} → {outputs}")]
    Empty {
        /// Input features.
        inputs: usize,
        /// Outputs.
        outputs: usize,
    },
}

impl Backbone {
    /// The published default FT-Transformer (output/*/ft_transformer/
    /// default/0.toml): 3 blocks, d_token 192, 8 heads, ReGLU hidden
    /// int(192·4/3) = 256, attention dropout 0.2, FFN dropout 0.1, no
    /// residual dropout; every input column a numeric feature until
    /// `feature_widths` says otherwise.
    pub fn ft_transformer_default() -> Backbone {
        Backbone::FtTransformer {
            d_token: 192,
            n_blocks: 3,
            n_heads: 8,
            d_ffn: 256,
            dropouts: FtDropouts::PUBLISHED,
            feature_widths: Vec::new(),
        }
    }

    /// Parses `'256-256'` for `mlp` (hidden widths; `''` or `'-'` is a
    /// linear model), `'128-256-256'` for `resnet` (main width, then one
    /// hidden width per block), or `'D_TOKEN-N_BLOCKS-N_HEADS-D_FFN'` for
    /// `ft-transformer` (`''`: the published default; dropouts published).
    pub fn parse(kind: &str, arch: &str) -> Result<Backbone, SpecError> {
        let trimmed = arch.trim().trim_matches('-');
        let widths: Vec<usize> = if trimmed.is_empty() {
            Vec::new()
        } else {
            trimmed
                .split(['-', ',', 'x'])
                .map(|w| {
                    w.trim()
                        .parse::<usize>()
                        .map_err(|_| SpecError::Arch(arch.to_owned()))
                })
                .collect::<Result<_, _>>()?
        };
        if widths.contains(&0) {
            return Err(SpecError::ZeroWidth(arch.to_owned()));
        }
        match kind.to_ascii_lowercase().as_str() {
            "mlp" => Ok(Backbone::Mlp { widths }),
            "resnet" => match widths.split_first() {
                Some((&d_main, rest)) if !rest.is_empty() => Ok(Backbone::Resnet {
                    d_main,
                    d_hidden: rest.to_vec(),
                }),
                _ => Err(SpecError::Resnet(arch.to_owned())),
            },
            "ft-transformer" | "ft_transformer" | "ftt" => match widths[..] {
                [] => Ok(Backbone::ft_transformer_default()),
                [d_token, n_blocks, n_heads, d_ffn] => Ok(Backbone::FtTransformer {
                    d_token,
                    n_blocks,
                    n_heads,
                    d_ffn,
                    dropouts: FtDropouts::PUBLISHED,
                    feature_widths: Vec::new(),
                }),
                _ => Err(SpecError::FtTransformer(format!(
                    "architecture is 'D_TOKEN-N_BLOCKS-N_HEADS-D_FFN' (e.g. '192-3-8-256'), got {arch:?}"
                ))),
            },
            _ => Err(SpecError::Arch(format!(
                "{kind}: unknown backbone (mlp, resnet, ft-transformer)"
            ))),
        }
    }

    /// The architecture string [`Backbone::parse`] reads.
    pub fn arch_string(&self) -> String {
        let join = |w: &[usize]| w.iter().map(usize::to_string).collect::<Vec<_>>().join("-");
        match self {
            Backbone::Mlp { widths } => join(widths),
            Backbone::Resnet { d_main, d_hidden } => format!("{d_main}-{}", join(d_hidden)),
            Backbone::FtTransformer {
                d_token,
                n_blocks,
                n_heads,
                d_ffn,
                ..
            } => format!("{d_token}-{n_blocks}-{n_heads}-{d_ffn}"),
        }
    }

    /// `mlp` or `resnet`.
    pub fn kind_name(&self) -> &'static str {
        match self {
            Backbone::Mlp { .. } => "mlp",
            Backbone::Resnet { .. } => "resnet",
            Backbone::FtTransformer { .. } => "ft-transformer",
        }
    }
}

/// A model description: backbone plus the choices shared by its blocks.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelSpec {
    /// Family and sizes.
    pub backbone: Backbone,
    /// Non-linearity of every block.
    pub activation: Activation,
    /// Dropout probability after each activation (and, in a ResNet, on the
    /// residual branch).
    pub dropout: f32,
    /// Normalisation of each block (MLP: after the linear layer; ResNet:
    /// at the start of each block and in the head).
    pub norm: Norm,
}

impl Default for ModelSpec {
    /// The default of `nas-client train`: MLP 256-256, ReLU, dropout 0.1,
    /// no normalisation.
    fn default() -> ModelSpec {
        ModelSpec {
            backbone: Backbone::Mlp {
                widths: vec![256, 256],
            },
            activation: Activation::Relu,
            dropout: 0.1,
            norm: Norm::None,
        }
    }
}

/// One layer of an [`Architecture`], by shape only.
#[derive(Debug, Clone, PartialEq)]
pub enum LayerShape {
    /// Dense layer `inputs → outputs` with a bias.
    Linear {
        /// Input features.
        inputs: usize,
        /// Output features.
        outputs: usize,
    },
    /// Normalisation over `width` features (never [`Norm::None`]).
    Norm {
        /// Which.
        norm: Norm,
        /// Features.
        width: usize,
    },
    /// Activation over `width` features.
    Activation {
        /// Which.
        activation: Activation,
        /// Features.
        width: usize,
    },
    /// Dropout with probability `p` (> 0) over `width` features.
    Dropout {
        /// Drop probability.
        p: f32,
        /// Features.
        width: usize,
    },
    /// `x + inner(x)` over `width` features.
    Residual {
        /// The branch (its layers' names are path segments below the
        /// block's own name).
        inner: Vec<NamedLayer>,
        /// Features in and out.
        width: usize,
    },
    /// FT-Transformer feature tokenizer: (rows, Σ feature_widths) →
    /// (rows·tokens, width), tokens = 1 + features, [CLS] first.
    FeatureTokenizer {
        /// Encoded columns of each feature (see [`Backbone::FtTransformer`]).
        feature_widths: Vec<usize>,
        /// d_token.
        width: usize,
    },
    /// Multi-head self-attention over `tokens` tokens of `width`
    /// features: W_q, W_k, W_v (and W_out when `heads` > 1), dropout `p`
    /// on the attention probabilities.
    Attention {
        /// Tokens per sample.
        tokens: usize,
        /// d_token.
        width: usize,
        /// Heads.
        heads: usize,
        /// Attention dropout (0: none).
        dropout: f32,
    },
    /// ReGLU `a·ReLU(b)` of the halves `(a, b)` of 2·`width` features.
    Reglu {
        /// Output features (half the input's).
        width: usize,
    },
    /// Token `index` of each sample of `tokens` tokens:
    /// (rows·tokens, width) → (rows, width).
    SelectToken {
        /// Tokens per sample.
        tokens: usize,
        /// Which one.
        index: usize,
        /// Features.
        width: usize,
    },
}

impl LayerShape {
    /// Output features.
    pub fn out_width(&self) -> usize {
        match self {
            LayerShape::Linear { outputs, .. } => *outputs,
            LayerShape::Norm { width, .. }
            | LayerShape::Activation { width, .. }
            | LayerShape::Dropout { width, .. }
            | LayerShape::Residual { width, .. }
            | LayerShape::FeatureTokenizer { width, .. }
            | LayerShape::Attention { width, .. }
            | LayerShape::Reglu { width }
            | LayerShape::SelectToken { width, .. } => *width,
        }
    }

    /// Output rows for `rows` input rows: the tokenizer multiplies them by
    /// its tokens, a token selection divides them (see tabular-nn's
    /// `model::tokens`), every other layer keeps them.
    pub fn out_rows(&self, rows: usize) -> usize {
        match self {
            LayerShape::FeatureTokenizer { feature_widths, .. } => {
                rows * (1 + feature_widths.len())
            }
            LayerShape::SelectToken { tokens, .. } => rows / tokens,
            _ => rows,
        }
    }

    /// Trainable scalars (a dense layer's weights and bias, a
    /// normalisation's scale and shift).
    pub fn parameters(&self) -> usize {
        match self {
            LayerShape::Linear { inputs, outputs } => (inputs + 1) * outputs,
            LayerShape::Norm { width, .. } => 2 * width,
            LayerShape::Activation { .. } | LayerShape::Dropout { .. } => 0,
            LayerShape::Residual { inner, .. } => inner.iter().map(|l| l.shape.parameters()).sum(),
            // Embeddings (one row per encoded column), a bias per feature,
            // the [CLS] row.
            LayerShape::FeatureTokenizer {
                feature_widths,
                width,
            } => (feature_widths.iter().sum::<usize>() + feature_widths.len() + 1) * width,
            LayerShape::Attention { width, heads, .. } => {
                let projections = if *heads > 1 { 4 } else { 3 };
                projections * (width + 1) * width
            }
            LayerShape::Reglu { .. } | LayerShape::SelectToken { .. } => 0,
        }
    }
}

/// A layer of an [`Architecture`] with its name.
///
/// The name is the layer's path segment in the trainer (`linear0`,
/// `head`; a residual block `block0` with `block0.linear1` below it), so
/// tools that address layers by path (visitors, hooks, the way back from a
/// network to its spec) use the names given here, in the one expansion of
/// a backbone. Names are unique among siblings and contain no dot.
#[derive(Debug, Clone, PartialEq)]
pub struct NamedLayer {
    /// Path segment.
    pub name: String,
    /// What the layer is.
    pub shape: LayerShape,
}

impl NamedLayer {
    fn new(name: impl Into<String>, shape: LayerShape) -> NamedLayer {
        NamedLayer {
            name: name.into(),
            shape,
        }
    }
}

/// A network by shape: its layers in order, from `inputs` features to
/// `outputs` outputs.
#[derive(Debug, Clone, PartialEq)]
pub struct Architecture {
    /// Input features.
    pub inputs: usize,
    /// Outputs (logits, or 1 for regression).
    pub outputs: usize,
    /// The layers, applied one after the other.
    pub layers: Vec<NamedLayer>,
}

impl Architecture {
    /// Trainable scalars of the whole network.
    pub fn parameters(&self) -> usize {
        self.layers.iter().map(|l| l.shape.parameters()).sum()
    }
}

struct FtSizes {
    d: usize,
    blocks: usize,
    heads: usize,
    hidden: usize,
}

/// The FT-Transformer's layers, as `bin/ft_transformer.py` of the
/// reference code runs them: tokenizer ([CLS] first), per block
/// `x + Drop_res(Attn(LN(x)))` (no LN in the first block) and
/// `x + Drop_res(Linear(Drop_ffn(ReGLU(Linear(LN(x))))))`, then the head
/// `Linear(ReLU(LN(x_cls)))`. One change: the last block runs on every
/// token, where the reference computes its attention and FFN for the
/// [CLS] query only; the head reads only [CLS], so the function is the
/// same and only the last block's work on the other tokens is extra.
fn ft_transformer_layers(
    layers: &mut Vec<NamedLayer>,
    FtSizes {
        d,
        blocks,
        heads,
        hidden,
    }: FtSizes,
    dropouts: FtDropouts,
    feature_widths: &[usize],
    inputs: usize,
    outputs: usize,
) -> Result<(), SpecError> {
    let bad = |m: String| Err(SpecError::FtTransformer(m));
    if d == 0 || blocks == 0 || heads == 0 || hidden == 0 {
        return bad(format!(
            "d_token {d}, blocks {blocks}, heads {heads} and d_ffn {hidden} must be at least 1"
        ));
    }
    if d % heads != 0 {
        return bad(format!("{heads} heads do not divide d_token {d}"));
    }
    for p in [dropouts.attention, dropouts.ffn, dropouts.residual] {
        if !(0.0..1.0).contains(&p) {
            return Err(SpecError::Dropout(p));
        }
    }
    let feature_widths: Vec<usize> = if feature_widths.is_empty() {
        vec![1; inputs]
    } else {
        feature_widths.to_vec()
    };
    if feature_widths.contains(&0) || feature_widths.iter().sum::<usize>() != inputs {
        return bad(format!(
            "feature widths {feature_widths:?} do not cover the {inputs} input columns"
        ));
    }
    let tokens = 1 + feature_widths.len();
    let norm = |width| LayerShape::Norm {
        norm: Norm::Layer,
        width,
    };
    let dropout = |p: f32, width, name: &str, into: &mut Vec<NamedLayer>| {
        if p > 0.0 {
            into.push(NamedLayer::new(name, LayerShape::Dropout { p, width }));
        }
    };
    layers.push(NamedLayer::new(
        "tokenizer",
        LayerShape::FeatureTokenizer {
            feature_widths,
            width: d,
        },
    ));
    for i in 0..blocks {
        let mut attn = Vec::new();
        if i > 0 {
            attn.push(NamedLayer::new("norm", norm(d)));
        }
        attn.push(NamedLayer::new(
            "attention",
            LayerShape::Attention {
                tokens,
                width: d,
                heads,
                dropout: dropouts.attention,
            },
        ));
        dropout(dropouts.residual, d, "dropout", &mut attn);
        layers.push(NamedLayer::new(
            format!("attn{i}"),
            LayerShape::Residual {
                inner: attn,
                width: d,
            },
        ));
        let mut ffn = vec![
            NamedLayer::new("norm", norm(d)),
            NamedLayer::new(
                "linear1",
                LayerShape::Linear {
                    inputs: d,
                    outputs: 2 * hidden,
                },
            ),
            NamedLayer::new("reglu", LayerShape::Reglu { width: hidden }),
        ];
        dropout(dropouts.ffn, hidden, "dropout1", &mut ffn);
        ffn.push(NamedLayer::new(
            "linear2",
            LayerShape::Linear {
                inputs: hidden,
                outputs: d,
            },
        ));
        dropout(dropouts.residual, d, "dropout2", &mut ffn);
        layers.push(NamedLayer::new(
            format!("ffn{i}"),
            LayerShape::Residual {
                inner: ffn,
                width: d,
            },
        ));
    }
    layers.push(NamedLayer::new(
        "cls",
        LayerShape::SelectToken {
            tokens,
            index: 0,
            width: d,
        },
    ));
    layers.push(NamedLayer::new("head_norm", norm(d)));
    layers.push(NamedLayer::new(
        "head_act",
        LayerShape::Activation {
            activation: Activation::Relu,
            width: d,
        },
    ));
    layers.push(NamedLayer::new(
        "head",
        LayerShape::Linear { inputs: d, outputs },
    ));
    Ok(())
}

impl ModelSpec {
    /// An FT-Transformer at the published defaults
    /// ([`Backbone::ft_transformer_default`]) over inputs whose features
    /// span `feature_widths` encoded columns (empty: all numeric).
    pub fn ft_transformer(feature_widths: Vec<usize>) -> ModelSpec {
        let mut backbone = Backbone::ft_transformer_default();
        if let Backbone::FtTransformer {
            feature_widths: f, ..
        } = &mut backbone
        {
            *f = feature_widths;
        }
        ModelSpec {
            backbone,
            activation: Activation::Relu,
            dropout: 0.0,
            norm: Norm::Layer,
        }
    }

    /// The layers of this model for `inputs` features and `outputs`
    /// outputs.
    pub fn architecture(&self, inputs: usize, outputs: usize) -> Result<Architecture, SpecError> {
        if !(0.0..1.0).contains(&self.dropout) {
            return Err(SpecError::Dropout(self.dropout));
        }
        if inputs == 0 || outputs == 0 {
            return Err(SpecError::Empty { inputs, outputs });
        }
        let activation = self.activation;
        // Names are the trainer's path segments (see `NamedLayer`).
        let dropout = |layers: &mut Vec<NamedLayer>, name: String, width: usize| {
            if self.dropout > 0.0 {
                let p = self.dropout;
                layers.push(NamedLayer::new(name, LayerShape::Dropout { p, width }));
            }
        };
        let norm = |layers: &mut Vec<NamedLayer>, name: String, width: usize| {
            if self.norm != Norm::None {
                let norm = self.norm;
                layers.push(NamedLayer::new(name, LayerShape::Norm { norm, width }));
            }
        };
        let linear = |name: String, inputs: usize, outputs: usize| {
            NamedLayer::new(name, LayerShape::Linear { inputs, outputs })
        };
        let act = |name: String, width: usize| {
            NamedLayer::new(name, LayerShape::Activation { activation, width })
        };
        let mut layers = Vec::new();
        match &self.backbone {
            Backbone::Mlp { widths } => {
                let mut d = inputs;
                for (i, &w) in widths.iter().enumerate() {
                    layers.push(linear(format!("linear{i}"), d, w));
                    norm(&mut layers, format!("norm{i}"), w);
                    layers.push(act(format!("act{i}"), w));
                    dropout(&mut layers, format!("dropout{i}"), w);
                    d = w;
                }
                layers.push(linear("head".into(), d, outputs));
            }
            Backbone::Resnet { d_main, d_hidden } => {
                let d_main = *d_main;
                layers.push(linear("stem".into(), inputs, d_main));
                for (i, &h) in d_hidden.iter().enumerate() {
                    let mut block = Vec::new();
                    norm(&mut block, "norm".into(), d_main);
                    block.push(linear("linear1".into(), d_main, h));
                    block.push(act("act".into(), h));
                    dropout(&mut block, "dropout1".into(), h);
                    block.push(linear("linear2".into(), h, d_main));
                    dropout(&mut block, "dropout2".into(), d_main);
                    let shape = LayerShape::Residual {
                        inner: block,
                        width: d_main,
                    };
                    layers.push(NamedLayer::new(format!("block{i}"), shape));
                }
                norm(&mut layers, "head_norm".into(), d_main);
                layers.push(act("head_act".into(), d_main));
                layers.push(linear("head".into(), d_main, outputs));
            }
            Backbone::FtTransformer {
                d_token,
                n_blocks,
                n_heads,
                d_ffn,
                dropouts,
                feature_widths,
            } => {
                ft_transformer_layers(
                    &mut layers,
                    FtSizes {
                        d: *d_token,
                        blocks: *n_blocks,
                        heads: *n_heads,
                        hidden: *d_ffn,
                    },
                    *dropouts,
                    feature_widths,
                    inputs,
                    outputs,
                )?;
            }
        }
        Ok(Architecture {
            inputs,
            outputs,
            layers,
        })
    }

    /// One-line description, e.g. `mlp 256-256 relu dropout 0.1 norm none`
    /// (`ft-transformer 192-3-8-256 dropouts attention 0.2 ffn 0.1
    /// residual 0`).
    pub fn describe(&self) -> String {
        if let Backbone::FtTransformer { dropouts, .. } = &self.backbone {
            return format!(
                "ft-transformer {} dropouts attention {} ffn {} residual {}",
                self.backbone.arch_string(),
                dropouts.attention,
                dropouts.ffn,
                dropouts.residual
            );
        }
        format!(
            "{} {} {:?} dropout {} norm {:?}",
            self.backbone.kind_name(),
            self.backbone.arch_string(),
            self.activation,
            self.dropout,
            self.norm
        )
        .to_lowercase()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_prints_architectures() {
        let mlp = Backbone::parse("mlp", "256-128").expect("parses");
        assert_eq!(
            mlp,
            Backbone::Mlp {
                widths: vec![256, 128]
            }
        );
        assert_eq!(mlp.arch_string(), "256-128");
        assert_eq!(
            Backbone::parse("mlp", "").expect("linear"),
            Backbone::Mlp { widths: vec![] }
        );
        let res = Backbone::parse("resnet", "64-128-128").expect("parses");
        assert_eq!(
            res,
            Backbone::Resnet {
                d_main: 64,
                d_hidden: vec![128, 128]
            }
        );
        assert!(Backbone::parse("resnet", "64").is_err());
        assert!(Backbone::parse("mlp", "12-x").is_err());
        assert!(Backbone::parse("mlp", "0-3").is_err());
        assert!(Backbone::parse("transformer", "3").is_err());
        let ftt = Backbone::parse("ft-transformer", "").expect("default");
        assert_eq!(ftt, Backbone::ft_transformer_default());
        assert_eq!(ftt.arch_string(), "192-3-8-256");
        assert_eq!(Backbone::parse("ftt", &ftt.arch_string()), Ok(ftt));
        assert!(Backbone::parse("ft-transformer", "192-3").is_err());
    }

    #[test]
    fn architectures_count_parameters() {
        let mut spec = ModelSpec::default();
        let arch = spec.architecture(10, 2).expect("expands");
        assert_eq!(
            arch.parameters(),
            10 * 256 + 256 + 256 * 256 + 256 + 256 * 2 + 2
        );
        spec.backbone = Backbone::Resnet {
            d_main: 8,
            d_hidden: vec![16],
        };
        spec.norm = Norm::Batch;
        let arch = spec.architecture(4, 1).expect("expands");
        // in-linear, block (bn, 8→16, 16→8), head bn, out-linear.
        let expect = (4 * 8 + 8) + (2 * 8) + (8 * 16 + 16) + (16 * 8 + 8) + (2 * 8) + (8 + 1);
        assert_eq!(arch.parameters(), expect);
        spec.dropout = 1.0;
        assert_eq!(spec.architecture(4, 1), Err(SpecError::Dropout(1.0)));
        spec.dropout = 0.0;
        assert!(spec.architecture(0, 1).is_err());
    }

    /// Every layer has a path segment: unique among its siblings, without
    /// dots, in the trainer's naming (`linear0`, `block0`, `head`).
    #[test]
    fn architectures_name_their_layers() {
        fn check(layers: &[NamedLayer], paths: &mut Vec<String>, prefix: &str) {
            let mut seen = std::collections::HashSet::new();
            for l in layers {
                assert!(!l.name.is_empty() && !l.name.contains('.'), "{l:?}");
                assert!(seen.insert(l.name.clone()), "duplicate {}", l.name);
                let path = format!("{prefix}{}", l.name);
                if let LayerShape::Residual { inner, .. } = &l.shape {
                    check(inner, paths, &format!("{path}."));
                }
                paths.push(path);
            }
        }
        let mut spec = ModelSpec {
            norm: Norm::Layer,
            ..ModelSpec::default()
        };
        let mut paths = Vec::new();
        check(&spec.architecture(3, 2).unwrap().layers, &mut paths, "");
        assert_eq!(
            paths,
            [
                "linear0", "norm0", "act0", "dropout0", "linear1", "norm1", "act1", "dropout1",
                "head"
            ]
        );
        spec.backbone = Backbone::Resnet {
            d_main: 4,
            d_hidden: vec![5, 6],
        };
        let mut paths = Vec::new();
        check(&spec.architecture(3, 2).unwrap().layers, &mut paths, "");
        assert_eq!(paths[0], "stem");
        assert_eq!(
            &paths[1..7],
            [
                "block0.norm",
                "block0.linear1",
                "block0.act",
                "block0.dropout1",
                "block0.linear2",
                "block0.dropout2"
            ]
        );
        assert_eq!(paths[7], "block0");
        assert_eq!(&paths[paths.len() - 3..], ["head_norm", "head_act", "head"]);
    }

    #[test]
    fn parsers_agree_with_serde_names() {
        for a in Activation::ALL {
            let name = serde_json::to_string(&a).unwrap();
            assert_eq!(Activation::parse(name.trim_matches('"')), Some(a));
            assert_eq!(Activation::from_index(a as u8), a);
        }
        for n in [Norm::Batch, Norm::Layer, Norm::None] {
            let name = serde_json::to_string(&n).unwrap();
            assert_eq!(Norm::parse(name.trim_matches('"')), Some(n));
        }
        for o in [OptimizerKind::AdamW, OptimizerKind::Sgd] {
            let name = serde_json::to_string(&o).unwrap();
            assert_eq!(OptimizerKind::parse(name.trim_matches('"')), Some(o));
        }
    }
}
