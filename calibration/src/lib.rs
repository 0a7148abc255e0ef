//! Per-kernel energy calibration: learn once per machine what each kernel
//! type of the trainer costs, so a search can predict a candidate's energy
//! before (or instead of) training it.
//!
//! - [`fingerprint`]: the machine a calibration belongs to (CPU, cores,
//!   kernel, GPU, energy sources and their provenance).
//! - [`model`]: per-kernel time and power models fitted with linfa-linear,
//!   with their fit quality.
//! - [`file`]: the versioned TOML calibration file, its loading with clear
//!   errors, and the machine check.
//! - [`predict`]: energy of a whole network from the kernels it emits.
//! - [`network`]: the kernels a nas-client network emits in training and
//!   inference ([`NetworkDescription`] → [`NetworkPlan`]), and
//!   [`Calibration::predict_network`], the entry point for searches.
//! - [`microbench`]: the grid of microbenchmarks, one measured point, the
//!   resumable checkpoint and the fit of a whole run.
//! - [`meter`]: energy of a window as energyd attributes it to this process.
//! - [`reference`]: reference dense/ReLU kernels and MLP that check the
//!   method independently of the trainer.
//! - [`validate`]: predicted against measured energy of whole networks.
//!
//! Every energy figure derived from a calibration carries the provenance of
//! the sources it was measured with (on a machine without hardware
//! counters: `estimated`).
#![warn(missing_docs)]

pub mod file;
pub mod fingerprint;
pub mod meter;
pub mod microbench;
pub mod model;
pub mod network;
pub mod predict;
pub mod reference;
pub mod validate;

pub use file::{Calibration, CalibrationError, FORMAT_VERSION};
pub use fingerprint::MachineFingerprint;
pub use model::{KernelModel, KernelShape, Observation};
pub use network::{NetworkDescription, NetworkEnergyPrediction, NetworkPredictError};
pub use predict::{EnergyPrediction, KernelPlan, NetworkPlan, PredictError};
