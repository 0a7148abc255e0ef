//! Input series: the cumulative energy of one domain with its metadata, and
//! cumulative activity (CPU time, GPU busy time) of processes and of the
//! machine. This module owns validation of those inputs and the few
//! operations on them everything else builds on: interpolating a cumulative
//! value, cutting an interval into sample pieces, and the energy of an
//! interval with its uncertainty.
//!
//! Invariants checked by the constructors: timestamps strictly increase,
//! values are finite and never decrease (wraparounds were corrected by the
//! sampler), and there are at least two samples.

use crate::error::AttributionError;
use shared::source::ReadingKind;
use shared::{MonotonicNs, Provenance};

/// How one domain's energy series was obtained.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SeriesMeta {
    /// Where the readings come from.
    pub provenance: Provenance,
    /// Smallest energy step the counter can show (joules); 0 if exact.
    pub resolution_j: f64,
    /// How often the hardware refreshes the value (0 if unknown).
    pub update_period_ns: u64,
    /// What a raw sample was before the daemon made it cumulative. For
    /// [`ReadingKind::AveragedPower`] the series is the integral of the
    /// sensor's trailing average, not of the true power.
    pub reading: ReadingKind,
}

/// A domain's energy history: `(time, cumulative joules)` samples.
#[derive(Debug, Clone, Copy)]
pub struct EnergySeries<'a> {
    samples: &'a [(MonotonicNs, f64)],
    meta: SeriesMeta,
}

/// One sample interval of a series, clipped to a query interval.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Piece {
    /// Index `i` of the sample interval `[t_i, t_{i+1}]`.
    pub sample_index: usize,
    /// Start of the clipped piece.
    pub start: MonotonicNs,
    /// End of the clipped piece.
    pub end: MonotonicNs,
    /// Energy in the piece, assuming constant power within the sample
    /// interval when clipped.
    pub energy_j: f64,
    /// Length of the whole sample interval (not clipped).
    pub sample_interval_ns: u64,
}

impl Piece {
    /// Length of the piece.
    pub fn len_ns(&self) -> u64 {
        self.end.saturating_sub(self.start)
    }
}

/// Energy of a domain over an interval, with what limits its accuracy.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct IntervalEnergy {
    /// Energy over the part of the interval covered by samples.
    pub joules: f64,
    /// Fraction (0..=1) of the interval covered by samples.
    pub coverage: f64,
    /// One-sigma uncertainty: counter resolution, interpolation at the
    /// interval's ends, the uncovered part, and the smearing of an averaging
    /// sensor, added in quadrature.
    pub uncertainty_j: f64,
    /// The interval is shorter than the sensor's update period: the figure
    /// is interpolated between updates, not observed.
    pub below_update_period: bool,
    /// Where the figure comes from.
    pub provenance: Provenance,
}

fn validate_cumulative(
    series: &'static str,
    samples: &[(MonotonicNs, f64)],
) -> Result<(), AttributionError> {
    let bad = |index: usize, reason: String| AttributionError::BadSeries {
        series,
        index,
        reason,
    };
    if samples.len() < 2 {
        return Err(bad(
            samples.len(),
            format!("needs at least 2 samples, got {}", samples.len()),
        ));
    }
    for (i, &(t, v)) in samples.iter().enumerate() {
        if !v.is_finite() {
            return Err(bad(i, format!("value {v} is not finite")));
        }
        if i > 0 {
            let (tp, vp) = samples[i - 1];
            if t <= tp {
                return Err(bad(
                    i,
                    format!("timestamp {t} does not follow previous {tp}"),
                ));
            }
            if v < vp {
                return Err(bad(
                    i,
                    format!("cumulative value decreases from {vp} to {v}"),
                ));
            }
        }
    }
    Ok(())
}

/// Linear interpolation of a validated cumulative series; `None` outside it.
fn cumulative_at(samples: &[(MonotonicNs, f64)], t: MonotonicNs) -> Option<f64> {
    let first = samples.first()?;
    let last = samples.last()?;
    if t < first.0 || t > last.0 {
        return None;
    }
    // Index of the first sample at or after t.
    let j = samples.partition_point(|s| s.0 < t);
    if samples[j].0 == t {
        return Some(samples[j].1);
    }
    let (t0, v0) = samples[j - 1];
    let (t1, v1) = samples[j];
    let f = (t.0 - t0.0) as f64 / (t1.0 - t0.0) as f64;
    Some(v0 + f * (v1 - v0))
}

/// Clamps `t` into the series' time range and interpolates.
fn cumulative_clamped(samples: &[(MonotonicNs, f64)], t: MonotonicNs) -> f64 {
    let (first, last) = (samples[0], samples[samples.len() - 1]);
    if t <= first.0 {
        first.1
    } else if t >= last.0 {
        last.1
    } else {
        cumulative_at(samples, t).unwrap_or(first.1)
    }
}

impl<'a> EnergySeries<'a> {
    /// Checks the samples (see the module invariants) and the metadata.
    pub fn new(
        samples: &'a [(MonotonicNs, f64)],
        meta: SeriesMeta,
    ) -> Result<Self, AttributionError> {
        validate_cumulative("energy", samples)?;
        if !(meta.resolution_j.is_finite() && meta.resolution_j >= 0.0) {
            return Err(AttributionError::BadConfig(format!(
                "energy resolution {} J is not a non-negative number",
                meta.resolution_j
            )));
        }
        if let ReadingKind::AveragedPower { window_ns: 0 } = meta.reading {
            return Err(AttributionError::BadConfig(
                "averaged-power sensor with a zero-length window".to_owned(),
            ));
        }
        Ok(EnergySeries { samples, meta })
    }

    /// The samples.
    pub fn samples(&self) -> &'a [(MonotonicNs, f64)] {
        self.samples
    }

    /// The metadata.
    pub fn meta(&self) -> &SeriesMeta {
        &self.meta
    }

    /// First and last sample times.
    pub fn span(&self) -> (MonotonicNs, MonotonicNs) {
        (self.samples[0].0, self.samples[self.samples.len() - 1].0)
    }

    /// Length of the sensor's averaging window, if it averages.
    pub fn averaging_window_ns(&self) -> Option<u64> {
        match self.meta.reading {
            ReadingKind::AveragedPower { window_ns } => Some(window_ns),
            _ => None,
        }
    }

    /// Cumulative energy at `t` by linear interpolation; `None` outside the
    /// series.
    pub fn energy_at(&self, t: MonotonicNs) -> Option<f64> {
        cumulative_at(self.samples, t)
    }

    /// Median distance between consecutive samples.
    pub fn median_period_ns(&self) -> u64 {
        let mut periods: Vec<u64> = self
            .samples
            .windows(2)
            .map(|w| w[1].0.saturating_sub(w[0].0))
            .collect();
        periods.sort_unstable();
        periods[periods.len() / 2]
    }

    /// Average power of the sample interval containing `t` (the "power at
    /// that moment" a naive attribution would use); `None` outside.
    pub fn power_at_w(&self, t: MonotonicNs) -> Option<f64> {
        let (first, last) = self.span();
        if t < first || t > last {
            return None;
        }
        let j = self
            .samples
            .partition_point(|s| s.0 <= t)
            .clamp(1, self.samples.len() - 1);
        let (t0, e0) = self.samples[j - 1];
        let (t1, e1) = self.samples[j];
        Some((e1 - e0) / ((t1.0 - t0.0) as f64 * 1e-9))
    }

    /// The sample intervals overlapping `[from, to]`, clipped to it, in
    /// time order. Parts of the interval outside the series yield nothing.
    pub fn pieces(&self, from: MonotonicNs, to: MonotonicNs) -> Vec<Piece> {
        let mut out = Vec::new();
        if to <= from {
            return out;
        }
        // First sample interval whose end is after `from`.
        let start_idx = self
            .samples
            .partition_point(|s| s.0 <= from)
            .saturating_sub(1);
        for i in start_idx..self.samples.len() - 1 {
            let (t0, e0) = self.samples[i];
            let (t1, e1) = self.samples[i + 1];
            if t0 >= to {
                break;
            }
            let a = t0.max(from);
            let b = t1.min(to);
            if b <= a {
                continue;
            }
            let dt = t1.0 - t0.0;
            let energy_j = if a == t0 && b == t1 {
                e1 - e0
            } else {
                (e1 - e0) * (b.0 - a.0) as f64 / dt as f64
            };
            out.push(Piece {
                sample_index: i,
                start: a,
                end: b,
                energy_j,
                sample_interval_ns: dt,
            });
        }
        out
    }

    /// Energy over `[from, to]` with its uncertainty.
    pub fn energy_between(
        &self,
        from: MonotonicNs,
        to: MonotonicNs,
    ) -> Result<IntervalEnergy, AttributionError> {
        if to <= from {
            return Err(AttributionError::BadInterval { from, to });
        }
        let pieces = self.pieces(from, to);
        let joules: f64 = pieces.iter().map(|p| p.energy_j).sum();
        let covered_ns: u64 = pieces.iter().map(Piece::len_ns).sum();
        let length_ns = to.0 - from.0;
        let coverage = covered_ns as f64 / length_ns as f64;

        // Counter quantisation: each of the two readings that bound the
        // interval is off by a uniform amount in [0, resolution).
        let quantisation_var = self.meta.resolution_j.powi(2) / 6.0;
        // Interpolation at a clipped end: the energy split inside a sample
        // interval is unknown; linear interpolation is off by at most
        // energy * min(f, 1 - f), taken as the bound of a uniform error.
        let mut interpolation_var = 0.0;
        for p in [pieces.first(), pieces.last()].into_iter().flatten() {
            let f = p.len_ns() as f64 / p.sample_interval_ns as f64;
            if f < 1.0 {
                let whole_j = p.energy_j / f.max(f64::MIN_POSITIVE);
                let bound = whole_j * f.min(1.0 - f);
                interpolation_var += bound * bound / 3.0;
            }
        }
        if pieces.len() == 1 {
            // The same piece was counted as both ends.
            interpolation_var /= 2.0;
        }
        // Uncovered part: we do not know its energy; one sigma is what it
        // would hold at the covered part's mean power.
        let uncovered_j = if covered_ns > 0 {
            joules / covered_ns as f64 * (length_ns - covered_ns) as f64
        } else {
            0.0
        };
        // Averaging sensor: the integral of a trailing average differs from
        // the true integral by about (P(from) - P(to)) * W / 2, where P is
        // the power around each end.
        let smear_j = match (
            self.averaging_window_ns(),
            self.power_at_w(from),
            self.power_at_w(to),
        ) {
            (Some(w), Some(pa), Some(pb)) => (pa - pb).abs() * w as f64 * 1e-9 / 2.0,
            _ => 0.0,
        };
        let uncertainty_j =
            (quantisation_var + interpolation_var + uncovered_j.powi(2) + smear_j.powi(2)).sqrt();
        Ok(IntervalEnergy {
            joules,
            coverage,
            uncertainty_j,
            below_update_period: length_ns < self.meta.update_period_ns,
            provenance: self.meta.provenance,
        })
    }
}

/// A cumulative activity series: `(time, cumulative active ns)`. For CPU
/// time that is the process's (or machine's) CPU ns; for a GPU it is the
/// integral of utilisation (see [`integrate_utilisation`]).
#[derive(Debug, Clone, Copy)]
pub struct ActivitySeries<'a> {
    samples: &'a [(MonotonicNs, f64)],
}

impl<'a> ActivitySeries<'a> {
    /// Checks the samples (see the module invariants). `series` names the
    /// series in errors.
    pub fn new(
        series: &'static str,
        samples: &'a [(MonotonicNs, f64)],
    ) -> Result<Self, AttributionError> {
        validate_cumulative(series, samples)?;
        Ok(ActivitySeries { samples })
    }

    /// The samples.
    pub fn samples(&self) -> &'a [(MonotonicNs, f64)] {
        self.samples
    }

    /// Activity in `[a, b]`, by linear interpolation; times outside the
    /// series are clamped to it (no activity is invented there).
    pub fn delta(&self, a: MonotonicNs, b: MonotonicNs) -> f64 {
        if b <= a {
            return 0.0;
        }
        cumulative_clamped(self.samples, b) - cumulative_clamped(self.samples, a)
    }

    /// Fraction of `[a, b]` covered by the series.
    pub fn coverage(&self, a: MonotonicNs, b: MonotonicNs) -> f64 {
        if b <= a {
            return 0.0;
        }
        let (first, last) = (self.samples[0].0, self.samples[self.samples.len() - 1].0);
        let lo = a.max(first);
        let hi = b.min(last);
        if hi <= lo {
            0.0
        } else {
            (hi.0 - lo.0) as f64 / (b.0 - a.0) as f64
        }
    }
}

/// What a domain's activity is measured against.
#[derive(Debug, Clone, Copy)]
pub struct MachineActivity<'a> {
    /// Cumulative busy ns of the whole domain (all processes): CPU time of
    /// all CPUs for package/core, device busy time for a GPU.
    pub busy: ActivitySeries<'a>,
    /// Cumulative capacity ns: all CPUs' total time (busy + idle) for a CPU
    /// domain, elapsed time for one GPU. Used to split static power by the
    /// share of the machine a process held.
    pub capacity: ActivitySeries<'a>,
}

/// Turns utilisation readings `(time, percent)` (NVML per-process or
/// device utilisation) into a cumulative busy-ns series. Each reading
/// covers the interval since the previous one, which is what NVML reports
/// (utilisation over the past sample period); the first reading only sets
/// the start.
pub fn integrate_utilisation(
    series: &'static str,
    readings: &[(MonotonicNs, f64)],
) -> Result<Vec<(MonotonicNs, f64)>, AttributionError> {
    let mut out = Vec::with_capacity(readings.len());
    let mut total = 0.0;
    for (i, &(t, pct)) in readings.iter().enumerate() {
        if !(pct.is_finite() && (0.0..=100.0).contains(&pct)) {
            return Err(AttributionError::BadSeries {
                series,
                index: i,
                reason: format!("utilisation {pct}% is not within 0..=100"),
            });
        }
        if let Some(&(tp, _)) = out.last() {
            if t <= tp {
                return Err(AttributionError::BadSeries {
                    series,
                    index: i,
                    reason: format!("timestamp {t} does not follow previous {tp}"),
                });
            }
            total += (t.0 - tp.0) as f64 * pct / 100.0;
        }
        out.push((t, total));
    }
    Ok(out)
}

/// A cumulative capacity series of `units` devices that are always there:
/// `units × elapsed ns` at each of `times`.
pub fn wall_clock_capacity(times: &[MonotonicNs], units: f64) -> Vec<(MonotonicNs, f64)> {
    let Some(&t0) = times.first() else {
        return Vec::new();
    };
    times
        .iter()
        .map(|&t| (t, t.saturating_sub(t0) as f64 * units))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta() -> SeriesMeta {
        SeriesMeta {
            provenance: Provenance::Simulated,
            resolution_j: 1e-6,
            update_period_ns: 1_000_000,
            reading: ReadingKind::CumulativeEnergy,
        }
    }

    #[test]
    fn constant_power_integrates_exactly() {
        // 10 W for 10 ms in 1 ms samples.
        let samples: Vec<_> = (0..=10)
            .map(|i| (MonotonicNs(i * 1_000_000), i as f64 * 0.01))
            .collect();
        let s = EnergySeries::new(&samples, meta()).unwrap();
        let e = s
            .energy_between(MonotonicNs(2_500_000), MonotonicNs(7_500_000))
            .unwrap();
        assert!((e.joules - 0.05).abs() < 1e-12);
        assert_eq!(e.coverage, 1.0);
        assert!(!e.below_update_period);
        let short = s
            .energy_between(MonotonicNs(2_000_000), MonotonicNs(2_400_000))
            .unwrap();
        assert!(short.below_update_period);
        assert!((short.joules - 0.004).abs() < 1e-12);
        let p = s.power_at_w(MonotonicNs(3_300_000)).unwrap();
        assert!((p - 10.0).abs() < 1e-9, "power {p}");
    }

    #[test]
    fn uncovered_part_lowers_coverage_and_raises_uncertainty() {
        let samples = [(MonotonicNs(1_000), 0.0), (MonotonicNs(2_000), 1.0)];
        let s = EnergySeries::new(&samples, meta()).unwrap();
        let e = s
            .energy_between(MonotonicNs(0), MonotonicNs(2_000))
            .unwrap();
        assert_eq!(e.coverage, 0.5);
        assert!((e.joules - 1.0).abs() < 1e-12);
        assert!(e.uncertainty_j >= 1.0);
    }

    #[test]
    fn malformed_series_are_refused_with_the_sample_index() {
        let backwards = [(MonotonicNs(5), 0.0), (MonotonicNs(5), 1.0)];
        match EnergySeries::new(&backwards, meta()) {
            Err(AttributionError::BadSeries { index: 1, .. }) => {}
            other => panic!("expected BadSeries at 1, got {other:?}"),
        }
        let decreasing = [(MonotonicNs(1), 2.0), (MonotonicNs(5), 1.0)];
        assert!(EnergySeries::new(&decreasing, meta()).is_err());
        let nan = [(MonotonicNs(1), 0.0), (MonotonicNs(5), f64::NAN)];
        assert!(EnergySeries::new(&nan, meta()).is_err());
        assert!(EnergySeries::new(&nan[..1], meta()).is_err());
    }

    #[test]
    fn utilisation_integrates_to_busy_ns() {
        let r = [
            (MonotonicNs(0), 0.0),
            (MonotonicNs(1_000), 50.0),
            (MonotonicNs(3_000), 100.0),
        ];
        let c = integrate_utilisation("gpu", &r).unwrap();
        assert_eq!(c[2].1, 500.0 + 2_000.0);
        assert!(integrate_utilisation("gpu", &[(MonotonicNs(0), 120.0)]).is_err());
        let a = ActivitySeries::new("gpu", &c).unwrap();
        assert_eq!(a.delta(MonotonicNs(1_000), MonotonicNs(2_000)), 1_000.0);
        assert_eq!(a.delta(MonotonicNs(2_000), MonotonicNs(9_000)), 1_000.0);
        assert!((a.coverage(MonotonicNs(2_000), MonotonicNs(4_000)) - 0.5).abs() < 1e-12);
    }
}
