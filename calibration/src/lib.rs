//! The calibration program's library: measuring what each kernel of the
//! trainer costs on this machine, so that `energy-model` can fit and
//! predict from it.
//!
//! - [`microbench`]: the grid of microbenchmarks, one measured point, the
//!   resumable checkpoint and the fit of a whole run (into an
//!   `energy_model::Calibration`).
//! - [`meter`]: energy of a window as energyd attributes it to this
//!   process (tabular-nn's `ProcessSession`).
//! - [`reference`]: reference dense/ReLU kernels and MLP that check the
//!   method independently of the trainer.
//!
//! The pricing side (file, fingerprint, fits, prediction, validation
//! maths) is `energy-model`, which knows nothing of the trainer; this
//! crate sits on top of both.
#![warn(missing_docs)]

pub mod meter;
pub mod microbench;
pub mod reference;
