//! Models built from a description ([`ModelSpec`]): the backbones of the
//! tabular deep-learning literature, assembled from the layers of
//! [`layers`].
//!
//! Backbones follow Gorishniy et al., "Revisiting Deep Learning Models for
//! Tabular Data" (NeurIPS 2021):
//! - MLP: blocks `Linear → [Norm] → Activation → Dropout`, then a linear head;
//! - ResNet: `Linear(d_in, d_main)`, blocks
//!   `x + Dropout(Linear(Dropout(Act(Linear(Norm(x))))))`, then
//!   `Norm → Activation → Linear` as the head.
//!
//! [`Backbone`] is an open enum: a third backbone (FT-Transformer) is a new
//! variant plus a `build` arm.

#[cfg(test)]
mod api_tests;
#[cfg(test)]
mod gradcheck;
pub mod layers;
pub mod param;
pub mod spec_of;
pub mod tokens;
pub mod visit;
pub mod widths;

use layers::{Activation, ActivationLayer, Dropout, Layer, Linear, Norm, Residual, Sequential};
use rand::rngs::SmallRng;
use rand::SeedableRng;
use serde::{Deserialize, Serialize};

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

impl ModelSpec {
    /// Builds the network for `inputs` features and `outputs` outputs,
    /// initialised from `seed`.
    pub fn build(&self, inputs: usize, outputs: usize, seed: u64) -> Result<Network, SpecError> {
        if !(0.0..1.0).contains(&self.dropout) {
            return Err(SpecError::Dropout(self.dropout));
        }
        let mut rng = SmallRng::seed_from_u64(seed);
        let act = self.activation;
        let dropout = |width: usize| -> Option<Box<dyn Layer>> {
            (self.dropout > 0.0)
                .then(|| Box::new(Dropout::new(self.dropout, width)) as Box<dyn Layer>)
        };
        // Names are the layers' path segments (see `visit`).
        let mut layers: Vec<(String, Box<dyn Layer>)> = Vec::new();
        match &self.backbone {
            Backbone::Mlp { widths } => {
                let mut d = inputs;
                for (i, &w) in widths.iter().enumerate() {
                    layers.push((format!("linear{i}"), Box::new(Linear::new(d, w, &mut rng))));
                    if let Some(n) = self.norm.build(w) {
                        layers.push((format!("norm{i}"), n));
                    }
                    layers.push((format!("act{i}"), Box::new(ActivationLayer::new(act, w))));
                    if let Some(l) = dropout(w) {
                        layers.push((format!("dropout{i}"), l));
                    }
                    d = w;
                }
                layers.push(("head".into(), Box::new(Linear::new(d, outputs, &mut rng))));
            }
            Backbone::Resnet { d_main, d_hidden } => {
                let d_main = *d_main;
                layers.push((
                    "stem".into(),
                    Box::new(Linear::new(inputs, d_main, &mut rng)),
                ));
                for (i, &h) in d_hidden.iter().enumerate() {
                    let mut block: Vec<(String, Box<dyn Layer>)> = Vec::new();
                    if let Some(n) = self.norm.build(d_main) {
                        block.push(("norm".into(), n));
                    }
                    block.push(("linear1".into(), Box::new(Linear::new(d_main, h, &mut rng))));
                    block.push(("act".into(), Box::new(ActivationLayer::new(act, h))));
                    if let Some(l) = dropout(h) {
                        block.push(("dropout1".into(), l));
                    }
                    block.push(("linear2".into(), Box::new(Linear::new(h, d_main, &mut rng))));
                    if let Some(l) = dropout(d_main) {
                        block.push(("dropout2".into(), l));
                    }
                    let block = Residual::new(Sequential::named(d_main, block));
                    layers.push((format!("block{i}"), Box::new(block)));
                }
                if let Some(n) = self.norm.build(d_main) {
                    layers.push(("head_norm".into(), n));
                }
                layers.push((
                    "head_act".into(),
                    Box::new(ActivationLayer::new(act, d_main)),
                ));
                layers.push((
                    "head".into(),
                    Box::new(Linear::new(d_main, outputs, &mut rng)),
                ));
            }
        }
        Ok(Network {
            body: Sequential::named(inputs, layers),
            inputs,
            outputs,
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

/// A built model: a sequence of layers from `inputs` features to `outputs`
/// logits (or one regression output).
pub struct Network {
    /// The layers.
    pub body: Sequential,
    /// Input features.
    pub inputs: usize,
    /// Outputs.
    pub outputs: usize,
}

impl Network {
    /// Trainable scalars.
    pub fn parameter_count(&mut self) -> usize {
        layers::parameter_count(&mut self.body)
    }

    /// Floating-point operations per row: (inference forward, one training
    /// step's forward + backward).
    pub fn flops_per_row(&self) -> (u64, u64) {
        let (f, b) = self.body.flops_per_row();
        (f, f + b)
    }

    /// Clears the accumulated gradients of every parameter.
    pub fn zero_grad(&mut self) {
        self.body.zero_grad();
    }

    /// A copy of every parameter and buffer at the active widths (for
    /// keeping the best epoch).
    pub fn snapshot(&mut self) -> Vec<Vec<f32>> {
        let mut out = Vec::new();
        self.body
            .visit_parameters(&mut |p| out.push(p.value.iter().copied().collect()));
        self.body
            .visit_buffers(&mut |b| out.push(b.value.iter().copied().collect()));
        out
    }

    /// Restores a [`Network::snapshot`] of this network (at the same
    /// active widths).
    pub fn restore(&mut self, snapshot: &[Vec<f32>]) {
        let mut it = snapshot.iter();
        let mut copy = |mut dst: ndarray::ArrayViewMut2<f32>| {
            if let Some(src) = it.next() {
                dst.iter_mut().zip(src).for_each(|(d, &s)| *d = s);
            }
        };
        self.body.visit_parameters(&mut |p| copy(p.value));
        self.body.visit_buffers(&mut |b| copy(b.value));
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
    fn builds_with_expected_parameter_counts() {
        let mut spec = ModelSpec::default();
        let mut net = spec.build(10, 2, 0).expect("builds");
        assert_eq!(
            net.parameter_count(),
            10 * 256 + 256 + 256 * 256 + 256 + 256 * 2 + 2
        );
        spec.backbone = Backbone::Resnet {
            d_main: 8,
            d_hidden: vec![16],
        };
        spec.norm = Norm::Batch;
        let mut net = spec.build(4, 1, 0).expect("builds");
        // in-linear, block (bn, 8→16, 16→8), head bn, out-linear.
        let expect = (4 * 8 + 8) + (2 * 8) + (8 * 16 + 16) + (16 * 8 + 8) + (2 * 8) + (8 + 1);
        assert_eq!(net.parameter_count(), expect);
        spec.dropout = 1.0;
        assert!(spec.build(4, 1, 0).is_err());
    }
}
