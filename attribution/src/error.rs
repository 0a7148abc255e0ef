//! Errors of the attribution functions (not of span-file parsing, see
//! [`crate::spanfile::SpanFileError`]). Each names the input and the element
//! it is about, so the daemon can pass it on to the client unchanged.

use shared::MonotonicNs;

/// Why an attribution could not be computed. Named by what is wrong with the
/// input; the caller fixes the input (or reports it), there is nothing to retry.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum AttributionError {
    /// A cumulative series (energy or activity) is malformed.
    #[error("{series} series, sample {index}: {reason}")]
    BadSeries {
        /// Which series ("energy", "process activity", ...).
        series: &'static str,
        /// Index of the offending sample.
        index: usize,
        /// What is wrong with it.
        reason: String,
    },
    /// The interval is empty or reversed.
    #[error("interval [{from}, {to}] is empty or reversed")]
    BadInterval {
        /// Requested start.
        from: MonotonicNs,
        /// Requested end.
        to: MonotonicNs,
    },
    /// A span is malformed.
    #[error("span {index}: {reason}")]
    BadSpan {
        /// Index of the span in the caller's slice.
        index: usize,
        /// What is wrong with it.
        reason: String,
    },
    /// A configuration value is out of range.
    #[error("configuration: {0}")]
    BadConfig(String),
}
