//! energy-model: what each kernel of the trainer costs on this machine,
//! and what a whole network will cost, from a calibration file.
//!
//! - [`fingerprint`]: the machine a calibration belongs to (CPU, cores,
//!   kernel, GPU, energy sources and their provenance).
//! - [`model`]: per-kernel time and power models fitted with linfa-linear,
//!   with their fit quality, at fit coordinates ([`FitShape`], the one
//!   projection of an `nn_plan::KernelShape`).
//! - [`file`]: the versioned TOML calibration file, its loading with clear
//!   errors, and the machine check.
//! - [`predict`]: energy of a kernel plan; [`network`]: energy of a whole
//!   network run ([`NetworkRun`] → `nn_plan::RunPlan` →
//!   [`NetworkEnergyPrediction`]), the entry point for searches, in
//!   process and in microseconds.
//! - [`validate`]: predicted against measured energy of whole networks.
//!
//! Invariant: knows nothing of the trainer or of energyd: kernels and plans
//! come from `nn_plan`, measurements from whoever runs the microbenchmarks
//! (the `calibration` program). Every energy figure derived from a
//! calibration carries the provenance of the sources it was measured with
//! (on a machine without hardware counters: `estimated`).
#![warn(missing_docs)]

pub mod file;
pub mod fingerprint;
pub mod model;
pub mod network;
pub mod predict;
pub mod validate;

pub use file::{Calibration, CalibrationError, FORMAT_VERSION};
pub use fingerprint::MachineFingerprint;
pub use model::{FitShape, KernelModel, Observation};
pub use network::{NetworkEnergyPrediction, NetworkPredictError, NetworkRun};
pub use predict::{EnergyPrediction, KernelPlan, NetworkPlan, PredictError};
