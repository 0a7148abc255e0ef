//! Attribution of measured energy to processes and to kernel spans.
//!
//! The daemon hands this crate plain data from its sampling history and its
//! span store; the crate answers with figures that carry their uncertainty,
//! provenance and method. Nothing here does I/O except [`spanfile`], which
//! parses span files recorded by other programs.
//!
//! - [`series`]: the inputs (cumulative energy with metadata, cumulative
//!   activity) and interval energy with its uncertainty.
//! - [`process`]: a domain's energy split between processes and the rest
//!   of the machine, static apart from dynamic.
//! - [`kernels`]: a process's energy split between kernel types:
//!   integration for long spans, a non-negative least-squares fit of
//!   per-type power for short ones, with a model of averaging sensors.
//! - [`nnls`]: the Lawson–Hanson solver the fit uses.
//! - [`spanfile`]: CSV and Chrome-trace (PyTorch profiler) span files.
//! - [`calltree`]: each thread's call tree of nested spans, self times,
//!   and the self-time segments that partition the busy time (what energyd
//!   attributes); GPU kernels linked to their launches by flow events.
//! - [`optable`]: per-op self and total energy with uncertainty, roll-ups
//!   per profiler step, label and module, and their text/JSON tables.
//! - [`convert`]: from the daemon's data (source info, CPU-time samples,
//!   span records) to the inputs here, and from the answers here to the
//!   protocol's `DomainShare` and `KernelEnergy`.
#![warn(missing_docs)]

pub mod calltree;
pub mod convert;
pub mod error;
pub mod kernels;
pub mod nnls;
pub mod optable;
pub mod process;
pub mod series;
pub mod spanfile;

pub use convert::{
    cpu_series, domain_share, kernel_energies, machine_cpu_series, spans_of_process,
};
pub use error::AttributionError;
pub use kernels::{
    attribute_spans, AttributionInterval, KernelAttribution, KernelConfig, KernelSpan,
    KernelTypeResult, Method, ProcessEnergy,
};
pub use process::{
    process_share, split_machine, IdlePower, ProcessShare, ProcessShareConfig, StaticSplit,
};
pub use series::{ActivitySeries, EnergySeries, MachineActivity, SeriesMeta};
pub use spanfile::{
    read_span_file, CategoryFilter, ClockOption, SpanFile, SpanFileError, SpanFileOptions,
};
