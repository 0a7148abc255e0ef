//! The one error type of this crate; each variant names what the caller
//! must fix (a flag, a file's line and field, a setting).

use std::path::PathBuf;

/// Everything that can go wrong reading a signal, accounting or forecasting.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CarbonError {
    /// No intensity spec was given; carbon is never computed from a silent default.
    #[error(
        "no carbon-intensity source given: pass one of const:G_PER_KWH, trace:PATH \
         (Time,Carbon Intensity CSV), electricitymaps:PATH (Electricity Maps CSV export), \
         watttime:PATH (WattTime MOER CSV, point_time,value in lbs/MWh) or cmd:COMMAND \
         (prints the current gCO2eq/kWh)"
    )]
    NoSpec,
    /// The spec string could not be understood.
    #[error("bad carbon-intensity spec {spec:?}: {reason}")]
    BadSpec {
        /// The spec as given.
        spec: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A trace file could not be opened or read. The OS error is the
    /// `source`, not part of the message, so an error chain names it once.
    #[error("cannot read {path}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// A trace file lacks a column its format needs.
    #[error("{path}: line 1: missing column {column:?} (header has: {header})")]
    MissingColumn {
        /// The file.
        path: PathBuf,
        /// The column that was expected.
        column: String,
        /// The columns found.
        header: String,
    },
    /// A field of a trace row is malformed (bad timestamp, not a number,
    /// negative, absent).
    #[error("{path}: line {line}: field {field:?}: {reason}")]
    Malformed {
        /// The file.
        path: PathBuf,
        /// 1-based line number (the header is line 1).
        line: u64,
        /// The column name.
        field: String,
        /// What is wrong.
        reason: String,
    },
    /// Timestamps of a trace do not strictly increase.
    #[error("{path}: line {line}: field {field:?}: time {this} is not after the previous row's {previous}")]
    NonMonotonic {
        /// The file.
        path: PathBuf,
        /// 1-based line number.
        line: u64,
        /// The time column name.
        field: String,
        /// The previous row's time.
        previous: String,
        /// This row's time.
        this: String,
    },
    /// A trace file has a header but no rows.
    #[error("{path}: no data rows")]
    Empty {
        /// The file.
        path: PathBuf,
    },
    /// `cmd:` failed or printed something that is not an intensity.
    #[error("intensity command {command:?}: {reason}")]
    Command {
        /// The command line.
        command: String,
        /// What went wrong.
        reason: String,
    },
    /// A PUE below 1.0 (or not finite): a data centre cannot use less
    /// energy than its IT equipment.
    #[error("PUE must be a finite number >= 1.0, got {0}")]
    BadPue(f64),
    /// An intensity value that is negative or not finite.
    #[error("carbon intensity must be a finite number >= 0 gCO2eq/kWh, got {0}")]
    BadIntensity(f64),
    /// An energy interval that ends before it starts or has negative or
    /// non-finite energy.
    #[error("energy interval {index}: {reason}")]
    BadEnergy {
        /// Index of the interval in the record.
        index: usize,
        /// What is wrong.
        reason: String,
    },
    /// The signal has no value for an hour in which energy was spent.
    #[error("intensity source {source_name} has no value for the hour starting {hour_start} UTC")]
    NoIntensity {
        /// The signal's name.
        source_name: String,
        /// The hour, formatted.
        hour_start: String,
    },
    /// The forecaster cannot be trained or evaluated on the data given.
    #[error("forecast: {0}")]
    Forecast(String),
}
