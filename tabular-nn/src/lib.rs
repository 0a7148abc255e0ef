//! tabular-nn: trains tabular neural networks with every op reported as a
//! named kernel span.
//!
//! Map of the crate, bottom up (each module imports only from those above
//! it in this list, and from `nn_plan`/`shared`):
//! - [`threads`]: the one thread setting for GEMMs and element-wise kernels;
//! - [`kernels`]: span recording ([`kernels::SpanSink`],
//!   [`kernels::SpanRecorder`]); kinds and shapes are `nn_plan`'s;
//! - [`data`]: reading CSV/TSV files, typing and encoding columns, seeded
//!   stratified splits, bundled datasets;
//! - [`metrics`]: classification and regression metrics;
//! - [`model`]: layers with hand-written backward passes, and networks
//!   built from an `nn_plan::ModelSpec`;
//! - [`meter`]: the [`meter::PhaseMeter`] trait the training loop measures
//!   energy through;
//! - [`train`]: losses, optimizers, schedule, the training loop with early
//!   stopping, [`train::train_and_evaluate`];
//! - [`baselines`]: linfa models to place an MLP against;
//! - [`session`]: energyd's implementation of the meter, also the
//!   calibration's meter (one client measuring this process);
//! - [`bench`]: one kernel in isolation ([`bench::run_isolated`]), on top of
//!   everything (the calibration microbenchmarks through it).
//!
//! Invariant: the library never prints and parses no command line; the
//! binaries (`nas-client`, `calibration`) do.
#![warn(missing_docs)]

pub mod baselines;
pub mod bench;
pub mod data;
pub mod gemm;
pub mod kernels;
pub mod meter;
pub mod metrics;
pub mod model;
pub mod session;
pub mod threads;
pub mod train;

pub use data::Dataset;
pub use nn_plan::{Backbone, ModelSpec};
pub use train::{train_and_evaluate, TrainConfig, TrainReport};
