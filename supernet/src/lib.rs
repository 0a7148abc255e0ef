//! Weight-entangled supernets over tabular-nn networks (issue 13): one
//! max-size MLP or ResNet per search space, whose children run on the
//! leading block `W[..in, ..out]` of each layer's weights (and, for depth,
//! on the first layers or blocks), trained by the sandwich rule with
//! in-place distillation and evaluated with inherited weights after
//! per-child BatchNorm recalibration.
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
//! BatchNorm, at every depth).
#![deny(missing_docs)]

pub mod checkpoint;
pub mod net;
pub mod sandwich;
pub mod space;

pub use checkpoint::SupernetCheckpoint;
pub use net::{ChildEvaluation, EvalSettings, Supernet, SupernetError};
pub use sandwich::{SandwichConfig, SandwichEpoch, SandwichReport, StepLosses};
pub use space::{ChildSettings, Decision, DecisionKind, SpaceBackbone, SpaceError, SupernetSpace};

#[cfg(test)]
mod tests;
