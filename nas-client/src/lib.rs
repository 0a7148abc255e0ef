//! nas-client: trains tabular neural networks with every op reported to
//! energyd as a named kernel, and searches for energy-efficient
//! architectures.
//!
//! Map of the crate:
//! - [`data`]: reading CSV/TSV files, typing and encoding columns, seeded
//!   stratified splits, bundled datasets;
//! - [`model`]: layers with hand-written backward passes, and backbones
//!   (MLP, tabular ResNet) built from a [`model::ModelSpec`];
//! - [`train`]: losses, optimizers, schedule, the training loop with early
//!   stopping, [`train::train_and_evaluate`];
//! - [`metrics`]: classification and regression metrics;
//! - [`baselines`]: linfa models to place an MLP against;
//! - [`kernels`]: kernel names, span recording, isolated kernel runs (used
//!   by calibration);
//! - [`energy`]: the energyd session (spans out, breakdowns in);
//! - [`threads`]: the `--threads` setting;
//! - [`train_cli`]: the flags of `nas-client train` and the configuration
//!   they build (shared by the binary and the search's trial children);
//! - [`search`]: the `search`, `report` and `compare` commands.
//!
//! Invariant: the library never prints; the binary (`src/main.rs`) does.
#![warn(missing_docs)]

pub mod baselines;
pub mod data;
pub mod energy;
pub mod kernels;
pub mod metrics;
pub mod model;
pub mod search;
pub mod threads;
pub mod train;
pub mod train_cli;

pub use data::Dataset;
pub use model::{Backbone, ModelSpec};
pub use train::{train_and_evaluate, TrainConfig, TrainReport};
