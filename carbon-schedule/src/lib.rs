//! Trace-driven simulation of a carbon-aware architecture search (CE-NAS,
//! Zhao et al., HotCarbon'23 / NeurIPS'24), on lookup tables of real
//! trainings and real hourly carbon-intensity traces.
//!
//! - [`table`]: candidates with their measured outcome and training cost,
//!   and the light (cheap) estimates that rank them before training.
//! - [`sim`]: the hourly simulator (slots split light/heavy, dominance
//!   queue, preemption and carry-over, every joule charged to its hour).
//! - [`queue`]: the dominance-ranked queue of scored candidates (shared
//!   with the live search).
//! - [`live`]: the hourly decisions of a live or replayed search
//!   (`nas-client search --carbon-aware`): hour clock, the policy run on
//!   the signal and a forecaster fitted on past hours only.
//! - [`policy`]: train-everything, light-only, the CE-NAS heuristic and a
//!   percentile-threshold policy.
//! - [`report`]: hypervolume against cumulative gCO2eq and time, carbon
//!   to reach a target, hypervolume under carbon caps; [`tune`]: the
//!   threshold chosen on earlier weeks.
//!
//! All energies and grams of [`sim`] are **simulated** (table energies are
//! energyd estimates, scaled; see the bench's README); the library never
//! prints.
#![deny(missing_docs)]

pub mod error;
pub mod live;
pub mod policy;
pub mod queue;
pub mod report;
pub mod sim;
pub mod table;
pub mod tune;

pub use error::ScheduleError;
