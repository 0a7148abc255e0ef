//! The way back from a network to its description: [`Network::spec`].
//!
//! A supernet child (active widths) or a grown network is described by the
//! [`ModelSpec`] that builds a network of the same shape, so it can be
//! priced by the energy model, stored as a trial and retrained. The spec is
//! read from the layers (the free widths of [`super::widths`] are the
//! backbone's sizes) and then checked: the network it builds must have the
//! same layers, paths and widths, else the network is not one a
//! [`ModelSpec`] describes and the answer is an error, never a guess.

use super::layers::{Activation, Layer, LayerRef, Norm, WidthError};
use super::visit::visit_layers;
use super::{Backbone, BuildNetwork, ModelSpec, Network, SpecError};

/// Why a network has no [`ModelSpec`].
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum SpecOfError {
    /// Its widths are inconsistent or unknown.
    #[error(transparent)]
    Widths(#[from] WidthError),
    /// Blocks differ in a choice a spec makes once for all blocks.
    #[error("layers differ in their {0}; a model spec has one for all blocks")]
    Mixed(&'static str),
    /// The spec read from the layers builds a different network.
    #[error("the network is not one a model spec builds: {0}")]
    Structure(String),
    /// The spec read from the layers does not build.
    #[error(transparent)]
    Spec(#[from] SpecError),
}

/// One entry per layer: path and description (which includes the widths).
fn signature(body: &mut dyn Layer) -> Vec<(String, String)> {
    let mut out = Vec::new();
    visit_layers(body, &mut |path, layer| {
        let described = match layer {
            LayerRef::Linear(l) => l.describe(),
            LayerRef::Activation(l) => format!("{} {}", l.describe(), l.out_dim()),
            LayerRef::BatchNorm(l) => l.describe(),
            LayerRef::LayerNorm(l) => l.describe(),
            LayerRef::Dropout(l) => format!("{} {}", l.describe(), l.out_dim()),
            LayerRef::Sequential(_) => "sequential".to_owned(),
            LayerRef::Residual(_) => "residual".to_owned(),
            LayerRef::SelectToken(l) => l.describe(),
            LayerRef::Tokenizer(l) => l.describe(),
            LayerRef::Attention(l) => l.describe(),
            LayerRef::Reglu(l) => l.describe(),
            LayerRef::Other(l) => l.describe(),
        };
        out.push((path.to_owned(), described));
    });
    out
}

/// Keeps the first value seen and notes a disagreement.
fn agree<T: PartialEq + Copy>(slot: &mut Option<T>, value: T, mixed: &mut bool) {
    match slot {
        Some(v) if *v != value => *mixed = true,
        Some(_) => {}
        None => *slot = Some(value),
    }
}

impl Network {
    /// The description of the network at its active widths: the spec whose
    /// [`BuildNetwork::build`] gives a network of the same layers and shapes.
    pub fn spec(&mut self) -> Result<ModelSpec, SpecOfError> {
        let widths = self.widths()?.active_widths();
        let (mut activation, mut norm, mut dropout) = (None, None, None);
        let (mut residual, mut mixed) = (false, [false; 3]);
        visit_layers(&mut self.body, &mut |_, layer| match layer {
            LayerRef::Activation(l) => agree(&mut activation, l.activation, &mut mixed[0]),
            LayerRef::BatchNorm(_) => agree(&mut norm, Norm::Batch, &mut mixed[1]),
            LayerRef::LayerNorm(_) => agree(&mut norm, Norm::Layer, &mut mixed[1]),
            LayerRef::Dropout(l) => agree(&mut dropout, l.p.to_bits(), &mut mixed[2]),
            LayerRef::Residual(_) => residual = true,
            _ => {}
        });
        for (m, what) in mixed.iter().zip(["activation", "normalisation", "dropout"]) {
            if *m {
                return Err(SpecOfError::Mixed(what));
            }
        }
        let backbone = if residual {
            match widths.split_first() {
                Some((&d_main, hidden)) => Backbone::Resnet {
                    d_main,
                    d_hidden: hidden.to_vec(),
                },
                None => return Err(SpecOfError::Structure("a resnet without widths".into())),
            }
        } else {
            Backbone::Mlp { widths }
        };
        let spec = ModelSpec {
            backbone,
            // A linear model has no activation; any value builds the same.
            activation: activation.unwrap_or(Activation::Relu),
            dropout: dropout.map_or(0.0, f32::from_bits),
            norm: norm.unwrap_or(Norm::None),
        };
        let mut rebuilt = spec.build(self.inputs, self.outputs, 0)?;
        let (mine, theirs) = (signature(&mut self.body), signature(&mut rebuilt.body));
        if mine != theirs {
            let first = mine.iter().zip(&theirs).find(|(a, b)| a != b).map_or_else(
                || format!("{} layers against {}", mine.len(), theirs.len()),
                |(a, b)| format!("{} is {:?}, the spec builds {:?}", a.0, a.1, b.1),
            );
            return Err(SpecOfError::Structure(first));
        }
        Ok(spec)
    }
}
