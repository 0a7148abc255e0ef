//! Carbon accounting for the energy this project measures.
//!
//! - [`intensity`]: typed grid carbon-intensity signals (gCO2eq/kWh,
//!   average or marginal, always with a named source) and
//!   [`IntensitySpec`], the flag string that says where one comes from
//!   (`const:`, `trace:`, `electricitymaps:`, `watttime:`, `cmd:`). There is
//!   no default signal: a missing spec is an error that says how to give one.
//! - [`trace`]: the parsers of trace files (the bundled `Time,Carbon
//!   Intensity` format, Electricity Maps' CSV export, WattTime's MOER), whose
//!   errors name the file, line and field.
//! - [`accounting`]: gCO2eq = kWh × intensity of the hour the energy was
//!   spent × PUE, in hourly UTC buckets; every report names the intensity
//!   source, its kind and the provenance of the energy.
//! - [`forecast`]: a per-horizon ridge forecaster of hourly intensity for
//!   the next 72 hours, trained on past data only, and its evaluation against
//!   persistence and seasonal-naive baselines.
//!
//! Wall-clock time here is UTC milliseconds since the Unix epoch
//! ([`UtcMillis`]): grid signals are published against the calendar, not
//! against CLOCK_MONOTONIC, so the caller converts its monotonic spans once,
//! at the boundary ([`ClockAnchor`]: both clocks read at one instant).
//! [`CarbonReport::effective_intensity`] and [`mean_intensity`] give the
//! single search and deployment intensities a report that multiplies one
//! energy by one intensity (nas-search's payback) needs.
#![deny(missing_docs)]

pub mod accounting;
pub mod error;
pub mod forecast;
pub mod intensity;
pub mod trace;

pub use accounting::{
    account, mean_intensity, CarbonReport, ClockAnchor, EnergyInterval, EnergyProvenance,
    EnergyRecord, Pue,
};
pub use error::CarbonError;
pub use intensity::{
    GramsPerKwh, HourlyIntensity, IntensityKind, IntensitySignal, IntensitySource, IntensitySpec,
    UtcMillis,
};
