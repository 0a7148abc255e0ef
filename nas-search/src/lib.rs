//! Multi-objective neural architecture search engine with durable studies.
//!
//! Map of the crate:
//! - [`space`]: generic parameters with conditions, TOML spaces, sampling,
//!   mutation, crossover, canonical configuration keys.
//! - [`metric`]: the study's metric registry (name, unit, direction,
//!   measured or predicted, uncertainty of which metric): where reports
//!   find "the prediction of X", never from a metric's name.
//! - [`objective`]: objectives with directions, constraints, Pareto
//!   dominance, non-dominated sorting, crowding, exact hypervolume.
//! - [`strategy`]: the ask/tell [`strategy::Strategy`] trait and random
//!   search, regularised evolution, NSGA-II, successive halving, Hyperband.
//! - [`controller`]: the policy-gradient controller of one-shot search
//!   (REINFORCE over a factorized categorical policy; TabNAS rejection,
//!   MnasNet soft reward, Abs reward), resumable from its saved state.
//! - [`evaluator`]: the [`evaluator::Evaluator`] trait and the lookup-table
//!   evaluator.
//! - [`study`]: the SQLite study database (claims, results, recovery).
//! - [`runner`]: worker threads running a study to its budget.
//! - [`prescreen`]: a strategy wrapper that prices new candidates with a
//!   cheap predictor and redraws those that cannot join the front cheaply.
//! - [`remeasure`]: re-evaluating a predicted front with a measuring
//!   evaluator, stored next to the predictions.
//! - [`report`]: the decision and its payback, CSV, JSON, Pareto and
//!   progress plots (SVG/PNG) and Markdown reports of a study.
//! - [`compare`]: accuracy-only against energy-aware search.
//! - [`payback`]: whether a search pays for itself: its energy against
//!   its pick's inference saving, in predictions, days and CO₂.
//! - [`footprint`]: the search's own carbon: its trials' energy charged at
//!   the grid intensity of the hours it was spent in (the `carbon` crate),
//!   × PUE, with the source named.
//!
//! Nothing here trains a model or measures energy: evaluators do, and report
//! figures with their provenance, which studies store as given.
#![warn(missing_docs)]

pub mod compare;
pub mod controller;
pub mod evaluator;
pub mod footprint;
pub mod metric;
pub mod objective;
pub mod payback;
pub mod prescreen;
pub mod remeasure;
pub mod report;
pub mod runner;
pub mod space;
pub mod strategy;
pub mod study;
