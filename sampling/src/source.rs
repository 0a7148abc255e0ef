//! The one trait every energy source implements, and what a source says
//! about itself. A source only reads its hardware; the sampling engine owns
//! timing, timestamps, history and statistics.

use shared::source::{ReadingKind, SourceKind};
use shared::{Domain, Joules, Provenance, Watts};
use thiserror::Error;

/// One energy or power source (a RAPL zone, a GPU, a model, a simulation).
pub trait Sampler: Send {
    /// What this source measures and how.
    fn descriptor(&self) -> SourceDescriptor;

    /// Take one reading now. Called from a dedicated sampling thread, never
    /// from async code. Must not sleep: the engine times the call and stamps
    /// the result with the clock read around it.
    fn sample(&mut self) -> Result<Reading, SampleError>;

    /// Counter wraparounds corrected so far (0 for sources without a
    /// wrapping counter).
    fn wraps(&self) -> u64 {
        0
    }

    /// Energy the source's hardware counter holds before it wraps, in
    /// joules (`None` for sources without a wrapping counter, or with one
    /// the kernel already extends to 64 bits). The engine sizes the
    /// sampling period from it so that no counter can wrap twice between
    /// two reads (see [`crate::counter::max_period_ns_for_range`]).
    fn counter_range_j(&self) -> Option<f64> {
        None
    }
}

/// What a source measures and how, as fixed when it is opened.
#[derive(Debug, Clone, PartialEq)]
pub struct SourceDescriptor {
    /// Human-readable name, e.g. `intel-rapl:0 (package-0)`.
    pub name: String,
    /// The resource measured.
    pub domain: Domain,
    /// How it is read.
    pub kind: SourceKind,
    /// Where its numbers come from.
    pub provenance: Provenance,
    /// What one reading is.
    pub reading: ReadingKind,
    /// Smallest energy step a reading can show, in joules.
    pub resolution_j: f64,
    /// How often the hardware refreshes the value (0 if unknown).
    pub update_period_ns: u64,
    /// Sampling period this source is meant to run at when the
    /// configuration does not say otherwise.
    pub default_period_ns: u64,
}

/// One reading.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Reading {
    /// Cumulative energy since the source started, wrap-corrected,
    /// monotonic.
    Energy(Joules),
    /// Power at this instant (or sensor-averaged, per
    /// [`SourceDescriptor::reading`]).
    Power(Watts),
}

/// Why a reading failed, named by what the caller does about it.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum SampleError {
    /// This reading failed; keep sampling (counted as a read error).
    #[error("reading failed, will retry: {0}")]
    Retry(String),
    /// The source is gone for good; stop sampling it.
    #[error("source failed permanently: {0}")]
    Fatal(String),
}
