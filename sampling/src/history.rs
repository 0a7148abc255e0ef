//! Per-source energy history: a fixed-memory ring of (timestamp, cumulative
//! joules) covering a time window, and the interval queries the daemon
//! answers from it.
//!
//! Energy over `[from, to]` is the difference of the cumulative series at
//! both ends, each end found by binary search and linear interpolation
//! between the two samples around it. Power readings are integrated
//! (trapezoid rule) into the same cumulative series when inserted, so every
//! query works the same way whatever the source reads.

use crate::ring::TimeRing;
use shared::MonotonicNs;

/// Energy of one source over an interval.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct IntervalEnergy {
    /// Energy over the covered part of the interval, in joules.
    pub joules: f64,
    /// Fraction (0..=1) of `[from, to]` that lies between the first and last
    /// sample of the history. Energy outside the covered part is not counted.
    pub coverage: f64,
    /// Bound on the error of `joules`: counter resolution at both ends plus
    /// the interpolation error, which is exact if power within the sample gap
    /// around each end stays between 0 and twice its mean over that gap.
    pub uncertainty_j: f64,
    /// The interval is shorter than the hardware's update period: the figure
    /// is interpolated from values that did not change within it.
    pub below_update_period: bool,
}

/// Fixed-memory history of one source's cumulative energy.
#[derive(Debug, Clone)]
pub struct EnergyHistory {
    ring: TimeRing<f64>,
    resolution_j: f64,
    update_period_ns: u64,
    /// Last power reading, for trapezoid integration of power sources.
    last_power: Option<(u64, f64)>,
    /// Cumulative energy of a power source, continued across ring overwrites.
    integrated_j: f64,
    /// The first value ever pushed: energy since the history began is
    /// measured from it, whatever the ring has overwritten since.
    origin_j: Option<f64>,
}

impl EnergyHistory {
    /// A history holding `capacity` samples of a source with the given
    /// counter resolution and hardware update period.
    pub fn new(capacity: usize, resolution_j: f64, update_period_ns: u64) -> Self {
        Self {
            ring: TimeRing::new(capacity),
            resolution_j,
            update_period_ns,
            last_power: None,
            integrated_j: 0.0,
            origin_j: None,
        }
    }

    /// Capacity for a window sampled at a period, with 1 % headroom so a
    /// slightly fast sampler still covers the whole window.
    pub fn capacity_for(window_ns: u64, period_ns: u64) -> usize {
        let n = window_ns / period_ns.max(1) + 1;
        (n + n / 100 + 2) as usize
    }

    /// Records a cumulative energy reading.
    pub fn push_energy(&mut self, t: MonotonicNs, cumulative_j: f64) {
        self.origin_j.get_or_insert(cumulative_j);
        self.ring.push(t.as_ns(), cumulative_j);
    }

    /// Records a power reading, integrated with the previous one by the
    /// trapezoid rule. The first reading starts the series at 0 J.
    pub fn push_power(&mut self, t: MonotonicNs, power_w: f64) {
        let t_ns = t.as_ns();
        if let Some((last_t, last_w)) = self.last_power {
            let dt_s = t_ns.saturating_sub(last_t) as f64 * 1e-9;
            self.integrated_j += 0.5 * (last_w + power_w) * dt_s;
        }
        self.last_power = Some((t_ns, power_w));
        self.origin_j.get_or_insert(self.integrated_j);
        self.ring.push(t_ns, self.integrated_j);
    }

    /// Samples held.
    pub fn len(&self) -> usize {
        self.ring.len()
    }

    /// Whether no sample is held.
    pub fn is_empty(&self) -> bool {
        self.ring.is_empty()
    }

    /// Newest sample.
    pub fn latest(&self) -> Option<(MonotonicNs, f64)> {
        self.ring.last().map(|(t, e)| (MonotonicNs(t), e))
    }

    /// Oldest sample.
    pub fn oldest(&self) -> Option<(MonotonicNs, f64)> {
        self.ring.first().map(|(t, e)| (MonotonicNs(t), e))
    }

    /// Samples in `[from, to]`, plus the one just before `from` and the one
    /// just after `to` when present.
    pub fn samples(&self, from: MonotonicNs, to: MonotonicNs) -> Vec<(MonotonicNs, f64)> {
        self.ring
            .range_with_neighbours(from.as_ns(), to.as_ns())
            .into_iter()
            .map(|(t, e)| (MonotonicNs(t), e))
            .collect()
    }

    /// Samples taken in the `window_ns` before the newest one, and the
    /// time they span: the basis of the achieved-rate statistic.
    pub fn recent_count(&self, window_ns: u64) -> (usize, u64) {
        let Some((last_t, _)) = self.ring.last() else {
            return (0, 0);
        };
        let start_t = last_t.saturating_sub(window_ns);
        let first_idx = self.ring.partition(start_t.saturating_sub(1));
        let first_t = self.ring.get(first_idx).map_or(last_t, |(t, _)| t);
        (self.ring.len() - first_idx, last_t - first_t)
    }

    /// Timestamps of the samples taken in the `window_ns` before the newest
    /// one (inclusive), oldest first.
    pub fn timestamps_since_last(&self, window_ns: u64) -> Vec<u64> {
        let Some((last_t, _)) = self.ring.last() else {
            return Vec::new();
        };
        let start_t = last_t.saturating_sub(window_ns);
        let first_idx = self.ring.partition(start_t.saturating_sub(1));
        (first_idx..self.ring.len())
            .filter_map(|i| self.ring.get(i).map(|(t, _)| t))
            .collect()
    }

    /// Memory of the ring once full, in bytes: capacity × the size of one
    /// `(timestamp ns, cumulative J)` entry (16 bytes).
    pub fn capacity_bytes(&self) -> usize {
        self.ring.capacity() * std::mem::size_of::<(u64, f64)>()
    }

    /// Cumulative energy at `t_ns` and the interpolation error bound there,
    /// clamped to the first/last sample outside the covered range.
    fn cumulative_at(&self, t_ns: u64) -> (f64, f64) {
        let n = self.ring.partition(t_ns);
        if n == 0 {
            return (self.ring.first().map_or(0.0, |(_, e)| e), 0.0);
        }
        let (t0, e0) = self.ring.get(n - 1).unwrap_or((t_ns, 0.0));
        match self.ring.get(n) {
            None => (e0, 0.0),
            Some((t1, e1)) if t1 > t0 => {
                let f = (t_ns - t0) as f64 / (t1 - t0) as f64;
                let gap_j = e1 - e0;
                (e0 + f * gap_j, gap_j.abs() * f.min(1.0 - f))
            }
            Some(_) => (e0, 0.0),
        }
    }

    /// Energy from the first sample ever taken to `at` (interpolated;
    /// clamped to the newest sample after it), a cumulative counter that
    /// keeps counting when the ring overwrites old samples: what the
    /// Prometheus exporter publishes. `None` before the first sample.
    pub fn energy_since_start(&self, at: MonotonicNs) -> Option<f64> {
        let origin = self.origin_j?;
        Some((self.cumulative_at(at.as_ns()).0 - origin).max(0.0))
    }

    /// Energy over `[from, to]`; `None` when the history is empty or
    /// `to < from`.
    pub fn energy(&self, from: MonotonicNs, to: MonotonicNs) -> Option<IntervalEnergy> {
        let (first_t, _) = self.ring.first()?;
        let (last_t, _) = self.ring.last()?;
        let (from_ns, to_ns) = (from.as_ns(), to.as_ns());
        if to_ns < from_ns {
            return None;
        }
        let covered_ns = to_ns.min(last_t).saturating_sub(from_ns.max(first_t));
        let coverage = if to_ns == from_ns {
            if (first_t..=last_t).contains(&from_ns) {
                1.0
            } else {
                0.0
            }
        } else {
            covered_ns as f64 / (to_ns - from_ns) as f64
        };
        let (e_from, err_from) = self.cumulative_at(from_ns);
        let (e_to, err_to) = self.cumulative_at(to_ns);
        Some(IntervalEnergy {
            joules: (e_to - e_from).max(0.0),
            coverage,
            uncertainty_j: 2.0 * self.resolution_j + err_from + err_to,
            below_update_period: to_ns - from_ns < self.update_period_ns,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn steady(n: u64, period_ns: u64, watts: f64) -> EnergyHistory {
        let mut h = EnergyHistory::new(1000, 1e-6, 1_000_000);
        for i in 0..n {
            h.push_energy(
                MonotonicNs(i * period_ns),
                watts * (i * period_ns) as f64 * 1e-9,
            );
        }
        h
    }

    #[test]
    fn interpolates_between_samples() {
        let h = steady(101, 10_000_000, 50.0); // 1 s at 50 W, 10 ms apart
        let e = h
            .energy(MonotonicNs(5_000_000), MonotonicNs(505_000_000))
            .unwrap();
        assert!((e.joules - 25.0).abs() < 1e-9, "{e:?}");
        assert_eq!(e.coverage, 1.0);
        // Both ends mid-gap: 0.5 J gaps, bound 0.25 J each.
        assert!((e.uncertainty_j - (0.5 + 2e-6)).abs() < 1e-9, "{e:?}");
        assert!(!e.below_update_period);
    }

    #[test]
    fn partial_coverage_counts_only_covered_part() {
        let h = steady(11, 100_000_000, 10.0); // samples 0..=1 s
        let e = h
            .energy(MonotonicNs(500_000_000), MonotonicNs(1_500_000_000))
            .unwrap();
        assert!((e.coverage - 0.5).abs() < 1e-12);
        assert!((e.joules - 5.0).abs() < 1e-9);
        assert!(h.energy(MonotonicNs(2), MonotonicNs(1)).is_none());
        let tiny = h.energy(MonotonicNs(1000), MonotonicNs(2000)).unwrap();
        assert!(tiny.below_update_period);
    }

    #[test]
    fn power_readings_are_integrated_by_trapezoid() {
        let mut h = EnergyHistory::new(10, 1e-3, 0);
        h.push_power(MonotonicNs(0), 10.0);
        h.push_power(MonotonicNs(1_000_000_000), 30.0); // mean 20 W over 1 s
        h.push_power(MonotonicNs(2_000_000_000), 30.0);
        let e = h
            .energy(MonotonicNs(0), MonotonicNs(2_000_000_000))
            .unwrap();
        assert!((e.joules - 50.0).abs() < 1e-9);
        assert_eq!(h.latest(), Some((MonotonicNs(2_000_000_000), 50.0)));
    }

    #[test]
    fn ring_keeps_cumulative_across_overwrite() {
        let mut h = EnergyHistory::new(4, 1e-3, 0);
        for i in 0..10u64 {
            h.push_power(MonotonicNs(i * 1_000_000_000), 1.0);
        }
        assert_eq!(h.len(), 4);
        assert_eq!(h.oldest(), Some((MonotonicNs(6_000_000_000), 6.0)));
        assert_eq!(h.latest(), Some((MonotonicNs(9_000_000_000), 9.0)));
    }

    #[test]
    fn energy_since_start_survives_overwrites_and_starts_at_the_first_reading() {
        let mut h = EnergyHistory::new(4, 1e-6, 0);
        assert_eq!(h.energy_since_start(MonotonicNs(0)), None);
        // A counter that read 1000 J when the daemon started.
        for i in 0..10u64 {
            h.push_energy(MonotonicNs(i * 1_000_000_000), 1000.0 + 2.0 * i as f64);
        }
        let at = |s: f64| h.energy_since_start(MonotonicNs((s * 1e9) as u64)).unwrap();
        assert!((at(8.5) - 17.0).abs() < 1e-9);
        // After the newest sample: its value, not an extrapolation.
        assert!((at(20.0) - 18.0).abs() < 1e-9);
    }
}
