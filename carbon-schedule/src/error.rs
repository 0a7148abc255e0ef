//! The one error type of this crate; each variant names what the caller
//! must fix (a file's line and field, a setting).

use std::path::PathBuf;

/// Everything that can go wrong loading a table or configuring a run.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ScheduleError {
    /// A table or score file could not be read or parsed.
    #[error("{path}: line {line}: field {field:?}: {reason}")]
    Table {
        /// The file.
        path: PathBuf,
        /// 1-based line (1 is the header).
        line: usize,
        /// The column.
        field: String,
        /// What is wrong.
        reason: String,
    },
    /// A setting is out of range or inconsistent.
    #[error("bad setting: {0}")]
    Config(String),
    /// The intensity trace or forecaster failed.
    #[error(transparent)]
    Carbon(#[from] carbon::CarbonError),
}
