//! Weight-entangled supernets over tabular-nn networks (issue 13): one
//! max-size MLP, ResNet or FT-Transformer per search space, whose children
//! run on the leading block `W[..in, ..out]` of each layer's weights (and,
//! for depth, on the first layers or blocks), trained by the sandwich rule
//! with in-place distillation and evaluated with inherited weights after
//! per-child BatchNorm recalibration (a no-op for the FT-Transformer,
//! which has none). An FT-Transformer child's token width is the leading
//! `d` of every token-width axis (tokenizer, [CLS], projections, norms,
//! head) with the space's fixed head count, and its ReGLU width `h` the
//! leading `h` units of both halves of each block's first FFN layer (see
//! [`space`] and tabular-nn's `model::ft`).
//!
//! - [`space`]: [`SupernetSpace`] (typed decisions with their choices and
//!   labels; a child is one choice index per decision, as a controller
//!   samples it; [`SupernetSpace::child_spec`] gives the child's
//!   [`nn_plan::ModelSpec`] for the energy model and for retraining);
//! - [`net`]: [`Supernet`] (a child at a time through tabular-nn's
//!   `Trainer`, [`Supernet::with_child`]; BatchNorm recalibration;
//!   evaluation of a child);
//! - [`sandwich`]: training by the sandwich rule
//!   ([`Supernet::train`], [`SandwichConfig`]), measured through
//!   tabular-nn's `PhaseMeter`, with a per-epoch callback;
//! - [`checkpoint`]: stop and resume ([`Supernet::checkpoint`],
//!   [`Supernet::restore`], [`Supernet::train_epochs`]), exact.
//!
//! What a one-shot search does with it:
//!
//! ```no_run
//! use supernet::{ChildSettings, EvalSettings, SandwichConfig, Supernet, SupernetSpace};
//! use tabular_nn::model::layers::{Activation, Norm};
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let data = tabular_nn::data::bundled::load("phoneme", 0)?;
//! let settings = ChildSettings { activation: Activation::Relu, norm: Norm::Batch, dropout: 0.0 };
//! // Two hidden layers of 8..128 units, one or two of them.
//! let space = SupernetSpace::mlp(vec![vec![8, 32, 128]; 2], vec![1, 2], settings)?;
//! for d in space.decisions() {
//!     // A controller's categorical per decision: d.choices() logits.
//!     let _ = (d.kind, d.choices(), d.labels());
//! }
//! let mut sup = Supernet::for_dataset(space.clone(), &data, 0)?;
//! sup.train(&data, &SandwichConfig::default(), None, &mut |_epoch| {})?;
//! let child = space.sample(&mut rand::thread_rng());
//! let spec = space.child_spec(&child)?; // priced by the energy model
//! let accuracy = sup.evaluate_child(&child, &data, &EvalSettings::default())?.score();
//! # let _ = (spec, accuracy);
//! # Ok(())
//! # }
//! ```
//!
//! Everything goes through tabular-nn's model API (active widths, the
//! visitor, accumulated gradients, `Trainer`, `Network::spec`); the crate
//! knows nothing of the energy model or of energyd. Sources: US-Nets
//! (sandwich rule, in-place distillation), AttentiveNAS's training loop
//! and BN calibration, Once-for-All's elastic depth, AutoFormer's weight
//! entanglement (`shared/research/tabular-nas.md` §2, §5).
//!
//! Invariant: the library never prints; a child's forward and backward
//! passes equal those of a standalone network built from its spec holding
//! its sliced weights (tested for MLP and ResNet, with and without
//! BatchNorm, at every depth, and for the FT-Transformer at every depth,
//! token width and ReGLU width, every dropout on).
#![deny(missing_docs)]

pub mod checkpoint;
pub mod net;
pub mod sandwich;
pub mod space;

pub use checkpoint::SupernetCheckpoint;
pub use net::{ChildEvaluation, EvalSettings, Supernet, SupernetError};
pub use sandwich::{SandwichConfig, SandwichEpoch, SandwichReport, StepLosses};
pub use space::{
    ChildSettings, Decision, DecisionKind, FtSettings, SpaceBackbone, SpaceError, SupernetSpace,
};

#[cfg(test)]
mod ft_tests;
#[cfg(test)]
mod tests;
