//! Search spaces of weight-entangled supernets: the decisions a controller
//! makes (one choice index per decision), the child each choice vector
//! names, and the [`ModelSpec`] of that child (what the energy model
//! prices and what a from-scratch retraining builds).
//!
//! Choice values of a decision are strictly increasing, so index 0 is the
//! smallest value and the last index the largest: the sandwich rule's
//! smallest child is all zeros ([`SupernetSpace::smallest`]) and its
//! largest all last indices ([`SupernetSpace::largest`]).
//!
//! Depth is entangled as Once-for-All's elastic depth: a child of depth
//! `d` is the first `d` hidden layers (MLP) or residual blocks (ResNet) of
//! the supernet, followed by the supernet's head; the later layers or
//! blocks are skipped, and their width decisions do not change the child
//! (two choice vectors that differ only there name the same network). An
//! MLP head reads the last kept layer, so in an MLP space with a depth
//! decision every hidden layer is allocated at the largest width of any
//! layer (the head's input rows are then shared by every depth, each child
//! using the leading block); without a depth decision each layer is
//! allocated at its own largest choice.
//!
//! FT-Transformer spaces ([`SupernetSpace::ft_transformer`]) entangle the
//! token width `d_token` (the leading `d` columns of the tokenizer's
//! embeddings, biases and [CLS], of every projection `W[..d, ..d]`, of
//! every LayerNorm and of the head's input rows), the number of blocks
//! (the first `k`, then the head) and the ReGLU hidden width `h`, one for
//! every block (the leading `h` units of the value half and of the gate
//! half of each block's first FFN layer, the leading `h` input rows of its
//! second). The head count is fixed per space: a choice of heads would
//! change the head dimension `d/heads`, and the children would not be
//! leading slices of one another; every token-width choice must be a
//! multiple of it. The hidden width is shared by the blocks because a
//! [`ModelSpec`] has one `d_ffn` for all blocks.

use nn_plan::{Activation, Backbone, FtDropouts, ModelSpec, Norm};
use rand::Rng;
use std::fmt;

/// Why a space or a choice vector is not valid.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SpaceError {
    /// A decision without choices.
    #[error("decision {decision} has no choices")]
    NoChoices {
        /// The decision.
        decision: DecisionKind,
    },
    /// Choice values must be ≥ 1 and strictly increasing.
    #[error(
        "decision {decision}: choice values {values:?} must be at least 1 and strictly increasing"
    )]
    Values {
        /// The decision.
        decision: DecisionKind,
        /// The values given.
        values: Vec<usize>,
    },
    /// A depth choice larger than the layers (or blocks) given choices.
    #[error(
        "decision {decision}: depth {depth} exceeds the {available} layers given width choices"
    )]
    Depth {
        /// The depth decision.
        decision: DecisionKind,
        /// The depth asked for.
        depth: usize,
        /// Layers (or blocks) with width choices.
        available: usize,
    },
    /// The deepest child must use every layer given width choices.
    #[error("{available} layers have width choices but the deepest child has {deepest}")]
    UnusedLayers {
        /// Layers (or blocks) with width choices.
        available: usize,
        /// Largest depth choice.
        deepest: usize,
    },
    /// Dropout outside [0, 1).
    #[error("dropout {0} is outside [0, 1)")]
    Dropout(String),
    /// A token width that the heads do not divide.
    #[error("{heads} heads do not divide the token width {d_token}")]
    Heads {
        /// The token width.
        d_token: usize,
        /// The heads.
        heads: usize,
    },
    /// A choice vector of the wrong length.
    #[error("a child has one choice per decision: {expected} decisions, {got} choices")]
    ChoiceCount {
        /// Decisions of the space.
        expected: usize,
        /// Choices given.
        got: usize,
    },
    /// A choice index outside a decision's choices.
    #[error("choice {index} of decision {decision} is outside 0..{choices}")]
    ChoiceIndex {
        /// The decision.
        decision: DecisionKind,
        /// The index given.
        index: usize,
        /// Its number of choices.
        choices: usize,
    },
}

/// What one decision decides.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DecisionKind {
    /// Number of hidden layers of an MLP.
    HiddenLayers,
    /// Width of MLP hidden layer `layer` (0-based).
    LayerWidth {
        /// The layer.
        layer: usize,
    },
    /// Main width `d_main` of a ResNet (the residual stream).
    MainWidth,
    /// Number of residual blocks of a ResNet.
    Blocks,
    /// Hidden width of ResNet block `block` (0-based).
    BlockHiddenWidth {
        /// The block.
        block: usize,
    },
    /// Token width `d_token` of an FT-Transformer.
    TokenWidth,
    /// ReGLU hidden width of every FT-Transformer block.
    FfnHiddenWidth,
}

impl fmt::Display for DecisionKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DecisionKind::HiddenLayers => write!(f, "hidden layers"),
            DecisionKind::LayerWidth { layer } => write!(f, "layer {layer} width"),
            DecisionKind::MainWidth => write!(f, "main width"),
            DecisionKind::Blocks => write!(f, "blocks"),
            DecisionKind::BlockHiddenWidth { block } => write!(f, "block {block} hidden width"),
            DecisionKind::TokenWidth => write!(f, "token width"),
            DecisionKind::FfnHiddenWidth => write!(f, "ffn hidden width"),
        }
    }
}

/// One decision: what it decides and its choice values (strictly
/// increasing, each ≥ 1).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    /// What it decides.
    pub kind: DecisionKind,
    values: Vec<usize>,
}

impl Decision {
    fn new(kind: DecisionKind, values: Vec<usize>) -> Result<Decision, SpaceError> {
        if values.is_empty() {
            return Err(SpaceError::NoChoices { decision: kind });
        }
        if values[0] == 0 || values.windows(2).any(|w| w[0] >= w[1]) {
            return Err(SpaceError::Values {
                decision: kind,
                values,
            });
        }
        Ok(Decision { kind, values })
    }

    /// Number of choices (a controller's categorical has this many).
    pub fn choices(&self) -> usize {
        self.values.len()
    }

    /// The value of every choice, in index order (widths in units, depths
    /// in layers or blocks).
    pub fn values(&self) -> &[usize] {
        &self.values
    }

    /// The value of choice `index`.
    pub fn value(&self, index: usize) -> Option<usize> {
        self.values.get(index).copied()
    }

    /// Largest value.
    pub fn max(&self) -> usize {
        self.values[self.values.len() - 1]
    }

    /// A label per choice, e.g. `layer 0 width 64`.
    pub fn labels(&self) -> Vec<String> {
        self.values
            .iter()
            .map(|v| format!("{} {v}", self.kind))
            .collect()
    }
}

/// Which backbone a space's children have.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SpaceBackbone {
    /// Fully connected layers.
    Mlp,
    /// Residual blocks on a main width.
    Resnet,
    /// FT-Transformer: feature tokenizer, Transformer blocks, [CLS] head.
    FtTransformer,
}

/// What every child of an FT-Transformer space shares.
#[derive(Debug, Clone, PartialEq)]
pub struct FtSettings {
    /// Attention heads (divides every token-width choice).
    pub heads: usize,
    /// Attention, FFN and residual dropout.
    pub dropouts: FtDropouts,
    /// Encoded input columns of each feature (see
    /// [`Backbone::FtTransformer`]); empty: every column numeric until
    /// [`SupernetSpace::with_feature_widths`] fits the space to a dataset.
    pub feature_widths: Vec<usize>,
}

/// What every child shares: activation, normalisation, dropout.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ChildSettings {
    /// Activation of every layer.
    pub activation: Activation,
    /// Normalisation (MLP: after each hidden linear; ResNet: PreNorm and
    /// head).
    pub norm: Norm,
    /// Dropout probability, in [0, 1).
    pub dropout: f32,
}

/// A weight-entangled search space over MLP, ResNet or FT-Transformer
/// children.
#[derive(Debug, Clone, PartialEq)]
pub struct SupernetSpace {
    backbone: SpaceBackbone,
    settings: ChildSettings,
    decisions: Vec<Decision>,
    /// Index of the depth decision, if depth is searched.
    depth: Option<usize>,
    /// Index of the first per-layer (per-block) width decision.
    first_width: usize,
    /// Layers (MLP) or blocks (ResNet, FT-Transformer) with width choices.
    layers: usize,
    /// `Some` exactly in FT-Transformer spaces (so the match arms below
    /// that pair `FtTransformer` with `None` are never taken).
    ft: Option<FtSettings>,
}

impl SupernetSpace {
    /// An MLP space: `widths[i]` are the width choices of hidden layer
    /// `i`; `depths` the choices of the number of hidden layers (one value
    /// or none: every layer, no depth decision). Decisions, in order:
    /// [`DecisionKind::HiddenLayers`] (when searched), then
    /// [`DecisionKind::LayerWidth`] per layer.
    pub fn mlp(
        widths: Vec<Vec<usize>>,
        depths: Vec<usize>,
        settings: ChildSettings,
    ) -> Result<SupernetSpace, SpaceError> {
        let width_kind = |layer| DecisionKind::LayerWidth { layer };
        SupernetSpace::build(
            SpaceBackbone::Mlp,
            Vec::new(),
            (DecisionKind::HiddenLayers, depths),
            widths,
            width_kind,
            settings,
        )
    }

    /// A ResNet space: `d_main` the main-width choices, `hidden[i]` the
    /// hidden-width choices of block `i`, `blocks` the choices of the
    /// number of blocks (one value or none: every block). Decisions, in
    /// order: [`DecisionKind::MainWidth`], [`DecisionKind::Blocks`] (when
    /// searched), then [`DecisionKind::BlockHiddenWidth`] per block.
    pub fn resnet(
        d_main: Vec<usize>,
        hidden: Vec<Vec<usize>>,
        blocks: Vec<usize>,
        settings: ChildSettings,
    ) -> Result<SupernetSpace, SpaceError> {
        let main = Decision::new(DecisionKind::MainWidth, d_main)?;
        let width_kind = |block| DecisionKind::BlockHiddenWidth { block };
        SupernetSpace::build(
            SpaceBackbone::Resnet,
            vec![main],
            (DecisionKind::Blocks, blocks),
            hidden,
            width_kind,
            settings,
        )
    }

    fn build(
        backbone: SpaceBackbone,
        mut decisions: Vec<Decision>,
        (depth_kind, depths): (DecisionKind, Vec<usize>),
        widths: Vec<Vec<usize>>,
        width_kind: impl Fn(usize) -> DecisionKind,
        settings: ChildSettings,
    ) -> Result<SupernetSpace, SpaceError> {
        if !(0.0..1.0).contains(&settings.dropout) {
            return Err(SpaceError::Dropout(settings.dropout.to_string()));
        }
        let layers = widths.len();
        let depth = if depths.len() > 1 {
            let d = Decision::new(depth_kind, depths)?;
            if d.max() > layers {
                return Err(SpaceError::Depth {
                    decision: depth_kind,
                    depth: d.max(),
                    available: layers,
                });
            }
            if d.max() < layers {
                return Err(SpaceError::UnusedLayers {
                    available: layers,
                    deepest: d.max(),
                });
            }
            decisions.push(d);
            Some(decisions.len() - 1)
        } else {
            if let Some(&d) = depths.first() {
                if d != layers {
                    return Err(SpaceError::UnusedLayers {
                        available: layers,
                        deepest: d,
                    });
                }
            }
            None
        };
        if layers == 0 {
            return Err(SpaceError::NoChoices {
                decision: width_kind(0),
            });
        }
        let first_width = decisions.len();
        for (i, w) in widths.into_iter().enumerate() {
            decisions.push(Decision::new(width_kind(i), w)?);
        }
        Ok(SupernetSpace {
            backbone,
            settings,
            decisions,
            depth,
            first_width,
            layers,
            ft: None,
        })
    }

    /// An FT-Transformer space: `d_token` the token-width choices (each a
    /// multiple of `ft.heads`), `blocks` the choices of the number of
    /// blocks (one value or none: a fixed count, then `blocks` must name
    /// it), `d_ffn` the ReGLU hidden-width choices shared by every block.
    /// Decisions, in order: [`DecisionKind::TokenWidth`],
    /// [`DecisionKind::Blocks`] (when searched),
    /// [`DecisionKind::FfnHiddenWidth`]. The spec fields `activation`,
    /// `dropout`, `norm` of its children are those of
    /// [`ModelSpec::ft_transformer`] (they do not apply to the backbone).
    pub fn ft_transformer(
        d_token: Vec<usize>,
        blocks: Vec<usize>,
        d_ffn: Vec<usize>,
        ft: FtSettings,
    ) -> Result<SupernetSpace, SpaceError> {
        let token = Decision::new(DecisionKind::TokenWidth, d_token)?;
        if ft.heads == 0 {
            return Err(SpaceError::Heads {
                d_token: token.values[0],
                heads: 0,
            });
        }
        if let Some(&d) = token.values.iter().find(|&&d| d % ft.heads != 0) {
            return Err(SpaceError::Heads {
                d_token: d,
                heads: ft.heads,
            });
        }
        let d = &ft.dropouts;
        for p in [d.attention, d.ffn, d.residual] {
            if !(0.0..1.0).contains(&p) {
                return Err(SpaceError::Dropout(p.to_string()));
            }
        }
        let deepest = match blocks.iter().max() {
            Some(&b) => b,
            None => {
                return Err(SpaceError::NoChoices {
                    decision: DecisionKind::Blocks,
                })
            }
        };
        let hidden = Decision::new(DecisionKind::FfnHiddenWidth, d_ffn)?;
        let reference = ModelSpec::ft_transformer(Vec::new());
        let settings = ChildSettings {
            activation: reference.activation,
            norm: reference.norm,
            dropout: reference.dropout,
        };
        // `build` checks the depth choices against `deepest` blocks and
        // makes one width decision per block; the blocks share one, so only
        // the first is kept (`width_of` reads it for every block).
        let mut space = SupernetSpace::build(
            SpaceBackbone::FtTransformer,
            vec![token],
            (DecisionKind::Blocks, blocks),
            vec![hidden.values.clone(); deepest],
            |_| DecisionKind::FfnHiddenWidth,
            settings,
        )?;
        space.decisions.truncate(space.first_width + 1);
        space.ft = Some(ft);
        Ok(space)
    }

    /// The space with its FT-Transformer children's tokenizer fitted to
    /// inputs whose features span `feature_widths` encoded columns (a
    /// dataset's `feature_widths()`); MLP and ResNet spaces are unchanged.
    pub fn with_feature_widths(mut self, feature_widths: Vec<usize>) -> SupernetSpace {
        if let Some(ft) = &mut self.ft {
            ft.feature_widths = feature_widths;
        }
        self
    }

    /// The FT-Transformer settings (FT-Transformer spaces only).
    pub fn ft_settings(&self) -> Option<&FtSettings> {
        self.ft.as_ref()
    }

    /// The backbone of every child.
    pub fn backbone(&self) -> SpaceBackbone {
        self.backbone
    }

    /// What every child shares.
    pub fn settings(&self) -> ChildSettings {
        self.settings
    }

    /// The decisions, in the order of a choice vector.
    pub fn decisions(&self) -> &[Decision] {
        &self.decisions
    }

    /// Number of distinct choice vectors (children counted once per vector,
    /// also where depth makes two vectors the same network).
    pub fn size(&self) -> f64 {
        self.decisions.iter().map(|d| d.choices() as f64).product()
    }

    /// The largest child: the last choice of every decision.
    pub fn largest(&self) -> Vec<usize> {
        self.decisions.iter().map(|d| d.choices() - 1).collect()
    }

    /// The smallest child: the first choice of every decision.
    pub fn smallest(&self) -> Vec<usize> {
        vec![0; self.decisions.len()]
    }

    /// A child drawn uniformly, each decision independently.
    pub fn sample(&self, rng: &mut impl Rng) -> Vec<usize> {
        self.decisions
            .iter()
            .map(|d| rng.gen_range(0..d.choices()))
            .collect()
    }

    /// Checks a choice vector against the decisions.
    pub fn check(&self, choice: &[usize]) -> Result<(), SpaceError> {
        if choice.len() != self.decisions.len() {
            return Err(SpaceError::ChoiceCount {
                expected: self.decisions.len(),
                got: choice.len(),
            });
        }
        for (d, &i) in self.decisions.iter().zip(choice) {
            if i >= d.choices() {
                return Err(SpaceError::ChoiceIndex {
                    decision: d.kind,
                    index: i,
                    choices: d.choices(),
                });
            }
        }
        Ok(())
    }

    /// Number of hidden layers (MLP) or blocks (ResNet) of the child.
    fn depth_of(&self, choice: &[usize]) -> usize {
        self.depth
            .map_or(self.layers, |d| self.decisions[d].values[choice[d]])
    }

    /// Width of layer (block) `i` of the child (an FT-Transformer's blocks
    /// share one decision).
    fn width_of(&self, choice: &[usize], i: usize) -> usize {
        let d = if self.ft.is_some() {
            self.first_width
        } else {
            self.first_width + i
        };
        self.decisions[d].values[choice[d]]
    }

    /// The FT-Transformer backbone of token width `d_token`, `blocks`
    /// blocks and hidden width `d_ffn`.
    fn ft_backbone(
        &self,
        ft: &FtSettings,
        d_token: usize,
        blocks: usize,
        d_ffn: usize,
    ) -> Backbone {
        Backbone::FtTransformer {
            d_token,
            n_blocks: blocks,
            n_heads: ft.heads,
            d_ffn,
            dropouts: ft.dropouts,
            feature_widths: ft.feature_widths.clone(),
        }
    }

    fn spec_with(&self, backbone: Backbone) -> ModelSpec {
        ModelSpec {
            backbone,
            activation: self.settings.activation,
            dropout: self.settings.dropout,
            norm: self.settings.norm,
        }
    }

    /// The description of the child `choice` names: the network a
    /// from-scratch retraining builds and the energy model prices.
    pub fn child_spec(&self, choice: &[usize]) -> Result<ModelSpec, SpaceError> {
        self.check(choice)?;
        let depth = self.depth_of(choice);
        let widths: Vec<usize> = (0..depth).map(|i| self.width_of(choice, i)).collect();
        let backbone = match (self.backbone, &self.ft) {
            (SpaceBackbone::FtTransformer, Some(ft)) => self.ft_backbone(
                ft,
                self.decisions[0].values[choice[0]],
                depth,
                self.width_of(choice, 0),
            ),
            (SpaceBackbone::Mlp, _) => Backbone::Mlp { widths },
            (SpaceBackbone::Resnet | SpaceBackbone::FtTransformer, _) => Backbone::Resnet {
                d_main: self.decisions[0].values[choice[0]],
                d_hidden: widths,
            },
        };
        Ok(self.spec_with(backbone))
    }

    /// The choice vector with the decisions that do not change the child
    /// (widths of layers or blocks beyond its depth) set to 0: two choice
    /// vectors name the same network exactly when their canonical forms
    /// are equal (a key for caching evaluations).
    pub fn canonical(&self, choice: &[usize]) -> Result<Vec<usize>, SpaceError> {
        self.check(choice)?;
        let depth = self.depth_of(choice);
        let mut out = choice.to_vec();
        if self.ft.is_some() {
            // Every depth uses the shared hidden width.
            return Ok(out);
        }
        for slot in out.iter_mut().skip(self.first_width + depth) {
            *slot = 0;
        }
        Ok(out)
    }

    /// The free widths of the child (tabular-nn's order, see
    /// `tabular_nn::model::widths`): an MLP's hidden widths; a ResNet's
    /// main width, then each block's hidden width; an FT-Transformer's
    /// token width, then each block's ReGLU width.
    pub fn child_widths(&self, choice: &[usize]) -> Result<Vec<usize>, SpaceError> {
        self.check(choice)?;
        let hidden = (0..self.depth_of(choice)).map(|i| self.width_of(choice, i));
        Ok(match self.backbone {
            SpaceBackbone::Mlp => hidden.collect(),
            SpaceBackbone::Resnet | SpaceBackbone::FtTransformer => {
                std::iter::once(self.decisions[0].values[choice[0]])
                    .chain(hidden)
                    .collect()
            }
        })
    }

    /// The description of the supernet itself: every layer (block) at the
    /// width its parameters are allocated for (see the module doc for MLP
    /// spaces with a depth decision).
    pub fn supernet_spec(&self) -> ModelSpec {
        let maxes: Vec<usize> = (0..self.layers)
            .map(|i| self.decisions[(self.first_width + i).min(self.decisions.len() - 1)].max())
            .collect();
        let backbone = match (self.backbone, &self.ft) {
            (SpaceBackbone::FtTransformer, Some(ft)) => self.ft_backbone(
                ft,
                self.decisions[0].max(),
                self.layers,
                self.decisions[self.first_width].max(),
            ),
            (SpaceBackbone::Mlp, _) => {
                let widths = if self.depth.is_some() {
                    let widest = maxes.iter().copied().max().unwrap_or(1);
                    vec![widest; self.layers]
                } else {
                    maxes
                };
                Backbone::Mlp { widths }
            }
            (SpaceBackbone::Resnet | SpaceBackbone::FtTransformer, _) => Backbone::Resnet {
                d_main: self.decisions[0].max(),
                d_hidden: maxes,
            },
        };
        self.spec_with(backbone)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings() -> ChildSettings {
        ChildSettings {
            activation: Activation::Relu,
            norm: Norm::None,
            dropout: 0.0,
        }
    }

    #[test]
    fn mlp_children_have_the_specs_their_choices_name() {
        let space = SupernetSpace::mlp(
            vec![vec![4, 8], vec![2, 6, 10], vec![3]],
            vec![1, 2, 3],
            settings(),
        )
        .expect("valid");
        let kinds: Vec<DecisionKind> = space.decisions().iter().map(|d| d.kind).collect();
        assert_eq!(
            kinds,
            [
                DecisionKind::HiddenLayers,
                DecisionKind::LayerWidth { layer: 0 },
                DecisionKind::LayerWidth { layer: 1 },
                DecisionKind::LayerWidth { layer: 2 },
            ]
        );
        assert_eq!(space.decisions()[2].choices(), 3);
        assert_eq!(
            space.decisions()[2].labels(),
            ["layer 1 width 2", "layer 1 width 6", "layer 1 width 10"]
        );
        assert_eq!(space.size(), 18.0);
        let widths = |spec: ModelSpec| match spec.backbone {
            Backbone::Mlp { widths } => widths,
            other => panic!("an mlp space built {other:?}"),
        };
        assert_eq!(widths(space.child_spec(&[1, 0, 2, 0]).unwrap()), [4, 10]);
        assert_eq!(
            widths(space.child_spec(&space.largest()).unwrap()),
            [8, 10, 3]
        );
        assert_eq!(widths(space.child_spec(&space.smallest()).unwrap()), [4]);
        // With a depth decision every layer is allocated at the widest.
        assert_eq!(widths(space.supernet_spec()), [10, 10, 10]);
        let fixed = SupernetSpace::mlp(vec![vec![4, 8], vec![2, 6]], vec![], settings()).unwrap();
        assert_eq!(widths(fixed.supernet_spec()), [8, 6]);
        assert_eq!(
            space.child_spec(&[0, 2, 0, 0]),
            Err(SpaceError::ChoiceIndex {
                decision: DecisionKind::LayerWidth { layer: 0 },
                index: 2,
                choices: 2
            })
        );
        assert_eq!(space.canonical(&[0, 1, 2, 0]).unwrap(), [0, 1, 0, 0]);
        assert_eq!(space.canonical(&[2, 1, 2, 0]).unwrap(), [2, 1, 2, 0]);
        assert!(matches!(
            space.child_spec(&[0, 0]),
            Err(SpaceError::ChoiceCount { .. })
        ));
    }

    #[test]
    fn resnet_children_have_the_specs_their_choices_name() {
        let space = SupernetSpace::resnet(
            vec![4, 8],
            vec![vec![3, 5], vec![6]],
            vec![1, 2],
            settings(),
        )
        .expect("valid");
        assert_eq!(space.decisions()[1].kind, DecisionKind::Blocks);
        assert_eq!(
            space.child_spec(&[0, 0, 1, 0]).unwrap().backbone,
            Backbone::Resnet {
                d_main: 4,
                d_hidden: vec![5]
            }
        );
        assert_eq!(
            space.supernet_spec().backbone,
            Backbone::Resnet {
                d_main: 8,
                d_hidden: vec![5, 6]
            }
        );
    }

    #[test]
    fn malformed_spaces_are_refused() {
        let s = settings();
        assert!(matches!(
            SupernetSpace::mlp(vec![vec![4, 4]], vec![], s),
            Err(SpaceError::Values { .. })
        ));
        assert!(matches!(
            SupernetSpace::mlp(vec![vec![]], vec![], s),
            Err(SpaceError::NoChoices { .. })
        ));
        assert!(matches!(
            SupernetSpace::mlp(vec![vec![4]], vec![1, 2], s),
            Err(SpaceError::Depth { .. })
        ));
        assert!(matches!(
            SupernetSpace::mlp(vec![vec![4], vec![4]], vec![1], s),
            Err(SpaceError::UnusedLayers { .. })
        ));
        assert!(matches!(
            SupernetSpace::resnet(vec![0, 3], vec![vec![4]], vec![], s),
            Err(SpaceError::Values { .. })
        ));
        assert!(SupernetSpace::mlp(vec![], vec![], s).is_err());
        let bad_dropout = ChildSettings { dropout: 1.0, ..s };
        assert!(SupernetSpace::mlp(vec![vec![4]], vec![], bad_dropout).is_err());
    }
}
