//! Networks built from a description ([`ModelSpec`], from [`nn_plan`]):
//! the layers of [`layers`] assembled in the order of the description's
//! [`Architecture`], the one expansion of a backbone that the kernel plan
//! also walks (see `nn_plan::spec` for the backbones and their sources).

#[cfg(test)]
mod gradcheck;
pub mod layers;

use layers::{ActivationLayer, BatchNorm, Dropout, Layer, LayerNorm, Linear, Residual, Sequential};
pub use nn_plan::{Architecture, Backbone, LayerShape, ModelSpec, Norm, SpecError};
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
            body: Sequential::new(inputs, build_layers(&arch.layers, &mut rng)),
            inputs,
            outputs,
        })
    }
}

fn build_layers(shapes: &[LayerShape], rng: &mut SmallRng) -> Vec<Box<dyn Layer>> {
    shapes
        .iter()
        .filter_map(|shape| -> Option<Box<dyn Layer>> {
            Some(match shape {
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
                LayerShape::Residual { inner, width } => Box::new(Residual::new(Sequential::new(
                    *width,
                    build_layers(inner, rng),
                ))),
            })
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

    /// A copy of every parameter and buffer (for keeping the best epoch).
    pub fn snapshot(&mut self) -> Vec<Vec<f32>> {
        let mut out = Vec::new();
        self.body
            .visit_parameters(&mut |p| out.push(p.value.to_vec()));
        self.body.visit_buffers(&mut |b| out.push(b.to_vec()));
        out
    }

    /// Restores a [`Network::snapshot`] of this network.
    pub fn restore(&mut self, snapshot: &[Vec<f32>]) {
        let mut it = snapshot.iter();
        let mut copy = |dst: &mut [f32]| {
            if let Some(src) = it.next() {
                dst.copy_from_slice(src);
            }
        };
        self.body.visit_parameters(&mut |p| copy(p.value));
        self.body.visit_buffers(&mut |b| copy(b));
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
