//! Hypervolume of the trained candidates against cumulative carbon and
//! time, and the figures the bench reports from it.
//!
//! Objectives: validation accuracy (max) and inference energy (min), the
//! same as bench/search; the exact hypervolume is nas-search's
//! ([`nas_search::objective::hypervolume`]), on minimisation vectors
//! (−accuracy, energy) against a reference point fixed per table.

use crate::sim::SimResult;
use crate::table::Candidate;

/// One point of a curve: after a training finished.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CurvePoint {
    /// Simulated hours since the start.
    pub time_h: f64,
    /// Cumulative gCO2eq (simulated).
    pub grams: f64,
    /// Hypervolume of everything trained so far.
    pub hypervolume: f64,
}

/// The table's nadir, the reference point: (−lowest accuracy, highest
/// inference energy). Points on it contribute nothing; it depends only on
/// the table, so every policy and seed is measured against the same one.
pub fn reference_point(candidates: &[Candidate]) -> Vec<f64> {
    let worst_acc = candidates
        .iter()
        .map(|c| c.val_accuracy)
        .fold(f64::INFINITY, f64::min);
    let worst_energy = candidates
        .iter()
        .map(|c| c.inference_energy_j_per_1k)
        .fold(f64::NEG_INFINITY, f64::max);
    vec![-worst_acc, worst_energy]
}

fn point(c: &Candidate) -> Vec<f64> {
    vec![-c.val_accuracy, c.inference_energy_j_per_1k]
}

/// Hypervolume of a set of candidates.
pub fn hypervolume_of(candidates: &[Candidate], chosen: &[usize], reference: &[f64]) -> f64 {
    let pts: Vec<Vec<f64>> = chosen.iter().map(|&i| point(&candidates[i])).collect();
    nas_search::objective::hypervolume(&pts, reference)
}

/// Hypervolume after each completed training, in completion order.
pub fn curve(result: &SimResult, candidates: &[Candidate], reference: &[f64]) -> Vec<CurvePoint> {
    let mut pts: Vec<Vec<f64>> = Vec::with_capacity(result.completions.len());
    let mut out = Vec::with_capacity(result.completions.len());
    // Only a point on the current front can raise the hypervolume; the
    // front stays small, so recomputing on it is cheap.
    let mut hv = 0.0;
    for c in &result.completions {
        let p = point(&candidates[c.candidate]);
        if !pts.iter().any(|q| q.iter().zip(&p).all(|(a, b)| a <= b)) {
            pts.retain(|q| !nas_search::objective::dominates(&p, q));
            pts.push(p);
            hv = nas_search::objective::hypervolume(&pts, reference);
        }
        out.push(CurvePoint {
            time_h: c.time_h,
            grams: c.grams,
            hypervolume: hv,
        });
    }
    out
}

/// The first point whose hypervolume reaches `target`.
pub fn first_reaching(curve: &[CurvePoint], target: f64) -> Option<CurvePoint> {
    curve.iter().copied().find(|p| p.hypervolume >= target)
}

/// Hypervolume reached with at most `cap` gCO2eq emitted (the carbon of
/// unfinished work counts toward the cap: it was emitted).
pub fn hypervolume_under_cap(curve: &[CurvePoint], cap: f64) -> f64 {
    curve
        .iter()
        .take_while(|p| p.grams <= cap)
        .last()
        .map_or(0.0, |p| p.hypervolume)
}
