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
    /// Derivative at input `x` with output `y`.
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
    /// Parses `'256-256'` for `mlp` (hidden widths; `''` or `'-'` is a
    /// linear model) or `'128-256-256'` for `resnet` (main width, then one
    /// hidden width per block).
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
            _ => Err(SpecError::Arch(format!(
                "{kind}: unknown backbone (mlp, resnet)"
            ))),
        }
    }

    /// The architecture string [`Backbone::parse`] reads.
    pub fn arch_string(&self) -> String {
        let join = |w: &[usize]| w.iter().map(usize::to_string).collect::<Vec<_>>().join("-");
        match self {
            Backbone::Mlp { widths } => join(widths),
            Backbone::Resnet { d_main, d_hidden } => format!("{d_main}-{}", join(d_hidden)),
        }
    }

    /// `mlp` or `resnet`.
    pub fn kind_name(&self) -> &'static str {
        match self {
            Backbone::Mlp { .. } => "mlp",
            Backbone::Resnet { .. } => "resnet",
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
        /// The branch.
        inner: Vec<LayerShape>,
        /// Features in and out.
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
            | LayerShape::Residual { width, .. } => *width,
        }
    }

    /// Trainable scalars (a dense layer's weights and bias, a
    /// normalisation's scale and shift).
    pub fn parameters(&self) -> usize {
        match self {
            LayerShape::Linear { inputs, outputs } => (inputs + 1) * outputs,
            LayerShape::Norm { width, .. } => 2 * width,
            LayerShape::Activation { .. } | LayerShape::Dropout { .. } => 0,
            LayerShape::Residual { inner, .. } => inner.iter().map(LayerShape::parameters).sum(),
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
    pub layers: Vec<LayerShape>,
}

impl Architecture {
    /// Trainable scalars of the whole network.
    pub fn parameters(&self) -> usize {
        self.layers.iter().map(LayerShape::parameters).sum()
    }
}

impl ModelSpec {
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
        let dropout = |layers: &mut Vec<LayerShape>, width: usize| {
            if self.dropout > 0.0 {
                layers.push(LayerShape::Dropout {
                    p: self.dropout,
                    width,
                });
            }
        };
        let norm = |layers: &mut Vec<LayerShape>, width: usize| {
            if self.norm != Norm::None {
                layers.push(LayerShape::Norm {
                    norm: self.norm,
                    width,
                });
            }
        };
        let mut layers = Vec::new();
        match &self.backbone {
            Backbone::Mlp { widths } => {
                let mut d = inputs;
                for &w in widths {
                    layers.push(LayerShape::Linear {
                        inputs: d,
                        outputs: w,
                    });
                    norm(&mut layers, w);
                    layers.push(LayerShape::Activation {
                        activation,
                        width: w,
                    });
                    dropout(&mut layers, w);
                    d = w;
                }
                layers.push(LayerShape::Linear { inputs: d, outputs });
            }
            Backbone::Resnet { d_main, d_hidden } => {
                let d_main = *d_main;
                layers.push(LayerShape::Linear {
                    inputs,
                    outputs: d_main,
                });
                for &h in d_hidden {
                    let mut block = Vec::new();
                    norm(&mut block, d_main);
                    block.push(LayerShape::Linear {
                        inputs: d_main,
                        outputs: h,
                    });
                    block.push(LayerShape::Activation {
                        activation,
                        width: h,
                    });
                    dropout(&mut block, h);
                    block.push(LayerShape::Linear {
                        inputs: h,
                        outputs: d_main,
                    });
                    dropout(&mut block, d_main);
                    layers.push(LayerShape::Residual {
                        inner: block,
                        width: d_main,
                    });
                }
                norm(&mut layers, d_main);
                layers.push(LayerShape::Activation {
                    activation,
                    width: d_main,
                });
                layers.push(LayerShape::Linear {
                    inputs: d_main,
                    outputs,
                });
            }
        }
        Ok(Architecture {
            inputs,
            outputs,
            layers,
        })
    }

    /// One-line description, e.g. `mlp 256-256 relu dropout 0.1 norm none`.
    pub fn describe(&self) -> String {
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
