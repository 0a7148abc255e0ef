//! Choosing the threshold policy's percentile on earlier weeks of the
//! trace (never on the evaluated period): the percentile whose searches
//! reach the target hypervolume with the least mean carbon there.

use crate::error::ScheduleError;
use crate::policy::ThresholdPolicy;
use crate::report::{curve, first_reaching, CurvePoint};
use crate::sim::{simulate, Policy, SimConfig, SimResult};
use crate::table::{Candidate, LightEstimates};

/// A table, its light estimates and a trace, with the search settings.
#[derive(Debug, Clone, Copy)]
pub struct Setting<'a> {
    /// The candidates (training costs already scaled).
    pub candidates: &'a [Candidate],
    /// Their light estimates.
    pub light: &'a LightEstimates,
    /// gCO2eq/kWh, one per hour, gap-free.
    pub intensity: &'a [f64],
    /// Worker slots.
    pub slots: usize,
    /// Facility energy over IT energy (grams × PUE).
    pub pue: carbon::Pue,
    /// Simulated hours at most per search.
    pub horizon_hours: usize,
    /// Hypervolume reference point.
    pub reference: &'a [f64],
}

impl Setting<'_> {
    /// One search from series index `start` with `seed`, and its curve.
    pub fn run(
        &self,
        policy: &mut dyn Policy,
        start: usize,
        seed: u64,
    ) -> Result<(SimResult, Vec<CurvePoint>), ScheduleError> {
        let r = simulate(
            self.candidates,
            self.light,
            self.intensity,
            policy,
            SimConfig {
                slots: self.slots,
                start,
                horizon_hours: self.horizon_hours,
                seed,
                pue: self.pue,
            },
        )?;
        let c = curve(&r, self.candidates, self.reference);
        Ok((r, c))
    }
}

/// Mean carbon to reach `target` over the `(start, seed)` runs of `make()`;
/// infinite when any run misses it.
pub fn mean_carbon_to_target(
    setting: &Setting,
    make: &mut dyn FnMut() -> Box<dyn Policy>,
    runs: &[(usize, u64)],
    target: f64,
) -> Result<f64, ScheduleError> {
    let mut sum = 0.0;
    for &(start, seed) in runs {
        let (_, c) = setting.run(make().as_mut(), start, seed)?;
        match first_reaching(&c, target) {
            Some(p) => sum += p.grams,
            None => return Ok(f64::INFINITY),
        }
    }
    Ok(sum / runs.len().max(1) as f64)
}

/// The threshold policy (percentile × dirty-hour floor of 0 or 1 heavy
/// slots) with the least mean carbon to `target` on `runs` (which the
/// caller places before the evaluated period), with every candidate's
/// mean carbon (infinite when a run missed the target).
pub fn choose_threshold(
    setting: &Setting,
    percentiles: &[f64],
    window_hours: usize,
    runs: &[(usize, u64)],
    target: f64,
) -> Result<(ThresholdPolicy, Vec<(ThresholdPolicy, f64)>), ScheduleError> {
    let mut scores = Vec::with_capacity(2 * percentiles.len());
    for floor in [0, 1] {
        for &percentile in percentiles {
            if !(percentile > 0.0 && percentile <= 100.0) {
                return Err(ScheduleError::Config(format!(
                    "percentile {percentile} not in (0, 100]"
                )));
            }
            let policy = ThresholdPolicy {
                percentile,
                window_hours,
                floor,
            };
            let mut make = || -> Box<dyn Policy> { Box::new(policy) };
            scores.push((
                policy,
                mean_carbon_to_target(setting, &mut make, runs, target)?,
            ));
        }
    }
    let best = scores
        .iter()
        .min_by(|a, b| a.1.total_cmp(&b.1))
        .map(|(p, _)| *p)
        .ok_or_else(|| ScheduleError::Config("no percentile to choose from".into()))?;
    Ok((best, scores))
}
