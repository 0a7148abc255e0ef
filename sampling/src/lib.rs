//! Energy sources and the machinery that samples them at high frequency.
//!
//! - [`source`]: the one [`source::Sampler`] trait every source implements.
//! - [`counter`]: the one wrap-aware counter type all counter sources use.
//! - Sources: [`simulated`] (configured power curve), [`estimated`]
//!   (utilisation model for machines without RAPL).
//! - [`engine`]: dedicated sampling threads with drift-free absolute
//!   deadlines, and the per-source [`history`] the daemon queries.
//! - [`activity`]: per-process CPU time (procfs, perf task-clock) for
//!   attribution, and of control groups ([`cgroup`]: naming, finding and
//!   reading a cgroup v2 directory); [`perf`]: per-process perf counters.
//! - [`discovery`]: what the daemon calls at start-up to open sources from
//!   its configuration.
//!
//! Invariants: timestamps are CLOCK_MONOTONIC nanoseconds; samplers run on
//! OS threads and never on an async runtime; every source carries its
//! [`shared::Provenance`]; every source is built from a root path or a
//! provider handle, so tests, containers and production share one code path.
#![warn(missing_docs)]

pub mod activity;
pub mod cgroup;
pub mod counter;
pub mod discovery;
pub mod engine;
pub mod estimated;
pub mod fixtures;
pub mod history;
pub mod msr;
pub mod nvml;
pub mod perf;
pub mod perf_rapl;
pub mod powercap;
pub mod procstat;
pub mod ring;
pub mod simulated;
pub mod source;

pub use engine::{ConfiguredSource, EngineConfig, SampleTiming, SamplingEngine};
pub use history::IntervalEnergy;
pub use source::{Reading, SampleError, Sampler, SourceDescriptor};
