//! Where a network can split: a *site* is a hidden width made by one
//! linear layer, optionally batch-normalised, passed through an activation
//! (and optionally dropout) and read by one linear layer, all in the same
//! sequence. An MLP's hidden layers and a ResNet block's hidden layer
//! (`linear1 → act → linear2`) are sites; a ResNet's main width is not
//! (every block and the skip path share it), nor is a layer-normalised
//! width (layer norm mixes the neurons, so a neuron's splitting matrix is
//! not its own).

use crate::SplitError;
use nn_plan::Activation;
use std::collections::HashMap;
use tabular_nn::model::layers::LayerRef;
use tabular_nn::model::visit::visit_layers;
use tabular_nn::model::widths::Tie;
use tabular_nn::model::Network;

/// One splittable hidden width.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SplitSite {
    /// Path of the linear layer computing the neurons' pre-activations.
    pub incoming: String,
    /// Path of the batch norm between it and the activation, if any.
    pub norm: Option<String>,
    /// Path of the activation layer.
    pub activation_path: String,
    /// The activation.
    pub activation: Activation,
    /// Path of the linear layer reading the neurons.
    pub outgoing: String,
    /// Index of the width among the network's free widths (the backbone's
    /// sizes, see `tabular_nn::model::widths`).
    pub width_index: usize,
    /// Neurons now.
    pub width: usize,
    /// Inputs of each neuron (without the bias): `x̃` has `fan_in + 1`
    /// entries.
    pub fan_in: usize,
}

/// One layer as the site finder sees it.
struct Entry {
    path: String,
    parent: String,
    kind: EntryKind,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum EntryKind {
    Linear { inputs: usize, outputs: usize },
    BatchNorm,
    LayerNorm,
    Activation(Activation),
    Dropout,
    Other,
}

fn parent_of(path: &str) -> &str {
    path.rsplit_once('.').map_or("", |(p, _)| p)
}

/// The sites of `net`, in layer order. The network must run at its max
/// widths (a supernet child has no sites of its own).
pub fn split_sites(net: &mut Network) -> Result<Vec<SplitSite>, SplitError> {
    let graph = net.widths()?;
    let mut entries = Vec::new();
    visit_layers(&mut net.body, &mut |path, layer| {
        let kind = match layer {
            LayerRef::Linear(l) => EntryKind::Linear {
                inputs: l.in_dim(),
                outputs: tabular_nn::model::layers::Layer::out_dim(l),
            },
            LayerRef::BatchNorm(_) => EntryKind::BatchNorm,
            LayerRef::LayerNorm(_) => EntryKind::LayerNorm,
            LayerRef::Activation(a) => EntryKind::Activation(a.activation),
            LayerRef::Dropout(_) => EntryKind::Dropout,
            LayerRef::Sequential(_) | LayerRef::Residual(_) => return,
            _ => EntryKind::Other,
        };
        entries.push(Entry {
            path: path.to_owned(),
            parent: parent_of(path).to_owned(),
            kind,
        });
    });
    let ties: HashMap<&str, Tie> = graph.ties.iter().map(|(p, t)| (p.as_str(), *t)).collect();
    let mut sites = Vec::new();
    for (i, first) in entries.iter().enumerate() {
        let EntryKind::Linear {
            inputs: fan_in,
            outputs: width,
        } = first.kind
        else {
            continue;
        };
        let mut j = i + 1;
        let same = |k: usize| entries.get(k).filter(|e| e.parent == first.parent);
        let mut norm = None;
        match same(j).map(|e| e.kind) {
            Some(EntryKind::BatchNorm) => {
                norm = Some(entries[j].path.clone());
                j += 1;
            }
            Some(EntryKind::LayerNorm) => continue,
            _ => {}
        }
        let Some(EntryKind::Activation(activation)) = same(j).map(|e| e.kind) else {
            continue;
        };
        let activation_path = entries[j].path.clone();
        j += 1;
        if same(j).map(|e| e.kind) == Some(EntryKind::Dropout) {
            j += 1;
        }
        let Some(EntryKind::Linear { .. }) = same(j).map(|e| e.kind) else {
            continue;
        };
        let outgoing = entries[j].path.clone();
        // The width must be free and used by these layers only.
        let Some(Tie::Linear { output: dim, .. }) = ties.get(first.path.as_str()).copied() else {
            continue;
        };
        let Some(width_index) = graph.free.iter().position(|&d| d == dim) else {
            continue;
        };
        let users = graph
            .ties
            .iter()
            .filter(|(_, t)| match *t {
                Tie::Linear { input, output } => input == dim || output == dim,
                Tie::Features(d) => d == dim,
            })
            .count();
        // incoming, activation, the reader, and the optional norm and dropout.
        let mine = entries[i..=j]
            .iter()
            .filter(|e| e.kind != EntryKind::Other)
            .count();
        if users != mine {
            continue;
        }
        sites.push(SplitSite {
            incoming: first.path.clone(),
            norm,
            activation_path,
            activation,
            outgoing,
            width_index,
            width,
            fan_in,
        });
    }
    if sites.is_empty() {
        return Err(SplitError::NoSites);
    }
    Ok(sites)
}

#[cfg(test)]
mod tests {
    use super::*;
    use nn_plan::{Backbone, ModelSpec, Norm};
    use tabular_nn::model::BuildNetwork;

    #[test]
    fn mlp_and_resnet_sites() {
        let spec = ModelSpec {
            backbone: Backbone::Mlp { widths: vec![5, 7] },
            activation: Activation::Relu,
            dropout: 0.1,
            norm: Norm::Batch,
        };
        let mut net = spec.build(3, 2, 0).unwrap();
        let sites = split_sites(&mut net).unwrap();
        assert_eq!(sites.len(), 2);
        assert_eq!(sites[0].incoming, "linear0");
        assert_eq!(sites[0].norm.as_deref(), Some("norm0"));
        assert_eq!(sites[0].outgoing, "linear1");
        assert_eq!((sites[0].width, sites[0].fan_in), (5, 3));
        assert_eq!(sites[1].outgoing, "head");
        assert_eq!((sites[1].width_index, sites[1].width), (1, 7));

        let spec = ModelSpec {
            backbone: Backbone::Resnet {
                d_main: 4,
                d_hidden: vec![6, 8],
            },
            activation: Activation::Silu,
            dropout: 0.0,
            norm: Norm::Batch,
        };
        let mut net = spec.build(3, 1, 0).unwrap();
        let sites = split_sites(&mut net).unwrap();
        let paths: Vec<_> = sites.iter().map(|s| s.incoming.as_str()).collect();
        assert_eq!(paths, ["block0.linear1", "block1.linear1"]);
        assert_eq!(sites[1].outgoing, "block1.linear2");
        assert_eq!(sites[1].norm, None);
        // Free widths: d_main first, then the blocks' hidden widths.
        assert_eq!((sites[0].width_index, sites[1].width_index), (1, 2));

        let spec = ModelSpec {
            backbone: Backbone::Mlp { widths: vec![5] },
            activation: Activation::Relu,
            dropout: 0.0,
            norm: Norm::Layer,
        };
        let mut net = spec.build(3, 2, 0).unwrap();
        assert!(matches!(split_sites(&mut net), Err(SplitError::NoSites)));
    }
}
