//! The policies that split each hour's slots between light and heavy work.
//!
//! - [`TrainEverything`]: carbon-agnostic vanilla search, every slot
//!   trains, random order (CE-NAS's "vanilla" baseline).
//! - [`LightOnly`]: every slot scores; nothing is trained (CE-NAS's
//!   one-shot baseline without its final training; its measured
//!   hypervolume is therefore zero, reported as such).
//! - [`CeNasHeuristic`]: the share of heavy slots falls as the current
//!   intensity rises within its recent range and forecast.
//! - [`ThresholdPolicy`]: all slots heavy when the current intensity is at
//!   or below a percentile of the past weeks, else all light; the
//!   percentile is chosen on earlier weeks ([`crate::report`] does it).

use std::collections::HashMap;

use crate::sim::{HourView, Order, Policy};

/// Every slot trains, candidates in a random order.
#[derive(Debug, Clone, Copy, Default)]
pub struct TrainEverything;

impl Policy for TrainEverything {
    fn name(&self) -> String {
        "train-everything".into()
    }
    fn order(&self) -> Order {
        Order::Random
    }
    fn heavy_slots(&mut self, view: &HourView) -> usize {
        view.slots
    }
}

/// Every slot scores; nothing is trained.
#[derive(Debug, Clone, Copy, Default)]
pub struct LightOnly;

impl Policy for LightOnly {
    fn name(&self) -> String {
        "light-only".into()
    }
    fn order(&self) -> Order {
        Order::Dominance
    }
    fn heavy_slots(&mut self, _view: &HourView) -> usize {
        0
    }
}

/// The CE-NAS heuristic allocation, as far as the sources describe it.
///
/// The paper's (HotCarbon'23) rule: "more GPUs to sampling when carbon
/// intensity is high, more to evaluation when it is low", driven by the
/// current intensity (NeurIPS'24: and its forecast). Its exact formula was
/// not retrieved (research notes §1), so the mapping is ours, built from
/// the public simulator's action space: 10 discrete levels a ∈ 0..=9, heavy
/// slots = max(⌊W·a/10⌋, 1) (at least one training slot, as there). Ours:
/// the level is a = round(9 · (1 − x)), x = position of the current
/// intensity in [min, max] of the last `lookback_hours` hours and the
/// forecast of the next ones (x = 0.5 when the range is flat).
#[derive(Debug, Clone, Default)]
pub struct CeNasHeuristic {
    /// Hours of past intensity in the range (24 here: a day's cycle).
    pub lookback_hours: usize,
    /// Forecast issued at each hour (by series index) for the next hours;
    /// an hour without one uses the past range only.
    pub forecasts: HashMap<usize, Vec<f64>>,
}

impl CeNasHeuristic {
    /// Heavy slots for an intensity `now` within `[lo, hi]`.
    pub fn allocation(slots: usize, now: f64, lo: f64, hi: f64) -> usize {
        let x = if hi > lo {
            ((now - lo) / (hi - lo)).clamp(0.0, 1.0)
        } else {
            0.5
        };
        let level = (9.0 * (1.0 - x)).round() as usize;
        (slots * level / 10).max(1)
    }
}

impl Policy for CeNasHeuristic {
    fn name(&self) -> String {
        "ce-nas-heuristic".into()
    }
    fn order(&self) -> Order {
        Order::Dominance
    }
    fn heavy_slots(&mut self, view: &HourView) -> usize {
        let now = view.intensity[view.hour];
        let past = &view.intensity[view.hour.saturating_sub(self.lookback_hours)..=view.hour];
        let future = self
            .forecasts
            .get(&view.hour)
            .map_or(&[][..], Vec::as_slice);
        let (lo, hi) = past
            .iter()
            .chain(future)
            .fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), &v| {
                (lo.min(v), hi.max(v))
            });
        Self::allocation(view.slots, now, lo, hi)
    }
}

/// All slots heavy when the current intensity is at or below the
/// `percentile` of the last `window_hours` hours (past only), else
/// `floor` heavy slots.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ThresholdPolicy {
    /// Percentile in (0, 100].
    pub percentile: f64,
    /// Hours of history the percentile is taken over.
    pub window_hours: usize,
    /// Heavy slots in dirty hours (0, or 1 as CE-NAS keeps).
    pub floor: usize,
}

/// Carbon-agnostic like [`TrainEverything`] (every slot heavy, every
/// hour) but in the light-score queue's order: separates what the order
/// saves from what the timing saves.
#[derive(Debug, Clone, Copy, Default)]
pub struct AllHeavyQueued;

impl Policy for AllHeavyQueued {
    fn name(&self) -> String {
        "all-heavy-queued".into()
    }
    fn order(&self) -> Order {
        Order::Dominance
    }
    fn heavy_slots(&mut self, view: &HourView) -> usize {
        view.slots
    }
}

/// The `p`-th percentile (nearest rank) of `values`; NaN when empty.
pub fn percentile(values: &[f64], p: f64) -> f64 {
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    if v.is_empty() {
        return f64::NAN;
    }
    let rank = ((p / 100.0) * v.len() as f64).ceil() as usize;
    v[rank.clamp(1, v.len()) - 1]
}

impl Policy for ThresholdPolicy {
    fn name(&self) -> String {
        format!("threshold-p{}-floor{}", self.percentile, self.floor)
    }
    fn order(&self) -> Order {
        Order::Dominance
    }
    fn heavy_slots(&mut self, view: &HourView) -> usize {
        let now = view.intensity[view.hour];
        let past = &view.intensity[view.hour.saturating_sub(self.window_hours)..view.hour];
        if past.is_empty() || now <= percentile(past, self.percentile) {
            view.slots
        } else {
            self.floor
        }
    }
}
