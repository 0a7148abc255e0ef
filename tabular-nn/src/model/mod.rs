//! Networks built from a description ([`ModelSpec`], from [`nn_plan`]):
//! the layers of [`layers`] assembled in the order of the description's
//! [`Architecture`], the one expansion of a backbone that the kernel plan
//! also walks (see `nn_plan::spec` for the backbones and their sources).
//! Each layer is named as the [`Architecture`] names it, so its path
//! (`block0.linear1`) is the same in the description and in the network.
//!
//! The API the research features use (supernets, proxies, splitting):
//! [`param`] (parameter identity, 2-D views, accumulated gradients),
//! [`visit`] (layer paths, typed references, hooks), [`widths`] (active
//! widths of supernet children, growth), [`spec_of`] (the way back from a
//! network to its [`ModelSpec`]) and [`tokens`] (the token axis).

#[cfg(test)]
mod api_tests;
pub mod ft;
#[cfg(test)]
mod gradcheck;
pub mod layers;
pub mod param;
pub mod spec_of;
pub mod tokens;
pub mod visit;
pub mod widths;

use layers::{ActivationLayer, BatchNorm, Dropout, Layer, LayerNorm, Linear, Residual, Sequential};
pub use nn_plan::{Architecture, Backbone, LayerShape, ModelSpec, NamedLayer, Norm, SpecError};
use rand::rngs::SmallRng;
use rand::SeedableRng;

/// Builds a [`Network`] from a [`ModelSpec`] (a trait because the
/// description lives in `nn_plan`, which knows nothing of layers).
pub trait BuildNetwork {
    /// Builds the network for `inputs` features and `outputs` outputs,
    /// initialised from `seed`.
    fn build(&self, inputs: usize, outputs: usize, seed: u64) -> Result<Network, SpecError>;
}

impl BuildNetwork for ModelSpec {
    fn build(&self, inputs: usize, outputs: usize, seed: u64) -> Result<Network, SpecError> {
        let arch = self.architecture(inputs, outputs)?;
        let mut rng = SmallRng::seed_from_u64(seed);
        Ok(Network {
            body: Sequential::named(inputs, build_layers(&arch.layers, &mut rng)),
            inputs,
            outputs,
        })
    }
}

/// The layers of `shapes`, each with its name (its path segment).
fn build_layers(shapes: &[NamedLayer], rng: &mut SmallRng) -> Vec<(String, Box<dyn Layer>)> {
    shapes
        .iter()
        .filter_map(|layer| -> Option<(String, Box<dyn Layer>)> {
            let built: Box<dyn Layer> = match &layer.shape {
                LayerShape::Linear { inputs, outputs } => {
                    Box::new(Linear::new(*inputs, *outputs, rng))
                }
                LayerShape::Norm { norm, width } => match norm {
                    Norm::Batch => Box::new(BatchNorm::new(*width)),
                    Norm::Layer => Box::new(LayerNorm::new(*width)),
                    Norm::None => return None,
                },
                LayerShape::Activation { activation, width } => {
                    Box::new(ActivationLayer::new(*activation, *width))
                }
                LayerShape::Dropout { p, width } => Box::new(Dropout::new(*p, *width)),
                LayerShape::Residual { inner, width } => Box::new(Residual::new(
                    Sequential::named(*width, build_layers(inner, rng)),
                )),
                LayerShape::FeatureTokenizer {
                    feature_widths,
                    width,
                } => Box::new(ft::FeatureTokenizer::new(feature_widths, *width, rng)),
                LayerShape::Attention {
                    tokens,
                    width,
                    heads,
                    dropout,
                } => Box::new(ft::MultiHeadAttention::new(
                    *tokens, *width, *heads, *dropout, rng,
                )),
                LayerShape::Reglu { width } => Box::new(ft::Reglu::new(*width)),
                LayerShape::SelectToken {
                    tokens,
                    index,
                    width,
                } => Box::new(tokens::SelectToken::new(*tokens, *index, *width)),
            };
            Some((layer.name.clone(), built))
        })
        .collect()
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
        assert_eq!(
            net.parameter_count(),
            spec.architecture(4, 1).unwrap().parameters()
        );
        spec.dropout = 1.0;
        assert!(spec.build(4, 1, 0).is_err());
    }
}
