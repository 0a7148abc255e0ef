//! The hourly decisions of a live carbon-aware search (`nas-client search
//! --carbon-aware`): which trace hour it is, the intensity of that hour and
//! its forecast, and how many of the worker slots the same [`Policy`] the
//! simulator runs gives to heavy work. Pure bookkeeping: the search itself
//! (processes, energyd, the study) lives in nas-client, and nothing here
//! reads a clock or prints.
//!
//! Time: an hour is a UTC hour of the wall clock, or, in a replay, a trace
//! hour that lasts `hour_seconds` real seconds from a chosen start
//! ([`HourClock::Replay`]): replays are for demonstrations and tests, and
//! every report of one says "replayed".

use std::collections::HashMap;

use carbon::forecast::{ForecasterConfig, HourlySeries, RidgeForecaster};
use carbon::{IntensitySignal, UtcMillis};

use crate::error::ScheduleError;
use crate::policy::{CeNasHeuristic, ThresholdPolicy};
use crate::sim::{HourView, Policy};

/// Hours of past intensity a live policy sees: the threshold policy's
/// 4-week percentile window (the longest either policy looks back).
pub const LIVE_LOOKBACK_HOURS: usize = 4 * 7 * 24;

/// Hours of forecast the heuristic's range takes in (as in the simulator).
pub const FORECAST_HOURS: usize = 24;

/// Which hour it is.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum HourClock {
    /// The UTC hour of the wall clock.
    Wall,
    /// A replayed trace: hour `from_hour` (hours since the epoch) starts
    /// when the search starts, and each hour lasts `hour_seconds` real
    /// seconds.
    Replay {
        /// First replayed hour, hours since the epoch.
        from_hour: i64,
        /// Real seconds per trace hour (> 0).
        hour_seconds: f64,
    },
}

impl HourClock {
    /// A replay clock; the rate must be a positive number of seconds.
    pub fn replay(from: UtcMillis, hour_seconds: f64) -> Result<HourClock, ScheduleError> {
        if !(hour_seconds.is_finite() && hour_seconds > 0.0) {
            return Err(ScheduleError::Config(format!(
                "--hour-seconds {hour_seconds}: give a positive number of real seconds per trace hour"
            )));
        }
        Ok(HourClock::Replay {
            from_hour: from.hour_index(),
            hour_seconds,
        })
    }

    /// The hour (since the epoch) at wall time `now`, `elapsed_s` real
    /// seconds after the search started.
    pub fn hour(&self, now: UtcMillis, elapsed_s: f64) -> i64 {
        match *self {
            HourClock::Wall => now.hour_index(),
            HourClock::Replay {
                from_hour,
                hour_seconds,
            } => from_hour + (elapsed_s.max(0.0) / hour_seconds).floor() as i64,
        }
    }

    /// Real seconds from `elapsed_s` (since the search started; wall time
    /// `now`) until hour `hour` starts (0 when it has).
    pub fn seconds_until(&self, hour: i64, now: UtcMillis, elapsed_s: f64) -> f64 {
        match *self {
            HourClock::Wall => {
                let start_ms = UtcMillis::from_hour_index(hour).0;
                ((start_ms - now.0) as f64 / 1000.0).max(0.0)
            }
            HourClock::Replay {
                from_hour,
                hour_seconds,
            } => ((hour - from_hour) as f64 * hour_seconds - elapsed_s).max(0.0),
        }
    }

    /// Whether the hours are replayed from a trace rather than live.
    pub fn is_replay(&self) -> bool {
        matches!(self, HourClock::Replay { .. })
    }
}

/// The policy of a live search (both run through [`Policy`], the
/// simulator's trait).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum LivePolicy {
    /// [`CeNasHeuristic`] over the last 24 h and the next 24 h's forecast.
    Heuristic,
    /// [`ThresholdPolicy`] with these settings.
    Threshold(ThresholdPolicy),
}

/// What the policy decided at the start of an hour.
#[derive(Debug, Clone, PartialEq)]
pub struct HourDecision {
    /// The hour, hours since the epoch.
    pub hour: i64,
    /// gCO2eq/kWh of the hour, from the signal.
    pub intensity: f64,
    /// Slots given to heavy work (training).
    pub heavy_slots: usize,
    /// Slots given to light work (scoring).
    pub light_slots: usize,
    /// Hours of forecast the decision used (0: none).
    pub forecast_hours: usize,
    /// Why there was no forecast, when there was none.
    pub forecast_note: Option<String>,
}

/// Decides each hour's split from the intensity signal.
#[derive(Debug, Clone)]
pub struct HourPlanner {
    signal: IntensitySignal,
    series: Option<HourlySeries>,
    policy: LivePolicy,
    slots: usize,
}

impl HourPlanner {
    /// A planner for `slots` worker slots (≥ 1).
    pub fn new(
        signal: IntensitySignal,
        policy: LivePolicy,
        slots: usize,
    ) -> Result<HourPlanner, ScheduleError> {
        if slots == 0 {
            return Err(ScheduleError::Config(
                "need at least one worker slot".into(),
            ));
        }
        let series = match &signal {
            IntensitySignal::Hourly(h) => Some(HourlySeries::from_hourly(h)?),
            IntensitySignal::Constant { .. } => None,
        };
        Ok(HourPlanner {
            signal,
            series,
            policy,
            slots,
        })
    }

    /// The intensity signal.
    pub fn signal(&self) -> &IntensitySignal {
        &self.signal
    }

    /// The past hours before `hour` the signal holds without a gap (at most
    /// [`LIVE_LOOKBACK_HOURS`], oldest first).
    fn past(&self, hour: i64) -> Vec<f64> {
        let mut past = Vec::new();
        for h in (hour - LIVE_LOOKBACK_HOURS as i64..hour).rev() {
            match self.signal.for_hour(h) {
                Ok(v) => past.push(v),
                Err(_) => break,
            }
        }
        past.reverse();
        past
    }

    /// The forecast of the [`FORECAST_HOURS`] after `hour`, from a
    /// forecaster fitted on the trace's hours up to `hour` only.
    fn forecast(&self, hour: i64) -> Result<Vec<f64>, String> {
        let Some(series) = &self.series else {
            return Err("a constant signal has nothing to forecast".into());
        };
        let t = usize::try_from(hour - series.first_hour)
            .ok()
            .filter(|&t| t < series.values.len())
            .ok_or_else(|| "the hour lies outside the trace".to_owned())?;
        let config = ForecasterConfig {
            horizons: FORECAST_HOURS,
            ..ForecasterConfig::default()
        };
        let fc = RidgeForecaster::fit(series, t + 1, config).map_err(|e| e.to_string())?;
        fc.forecast(&series.values[..=t], t)
            .map_err(|e| e.to_string())
    }

    /// The split of hour `hour` (hours since the epoch), with `queued`
    /// candidates scored and waiting and `in_progress` trainings running.
    /// An hour the signal has no value for is an error naming it.
    pub fn decide(
        &self,
        hour: i64,
        queued: usize,
        in_progress: usize,
    ) -> Result<HourDecision, ScheduleError> {
        let now = self.signal.for_hour(hour)?;
        let mut intensity = self.past(hour);
        let index = intensity.len();
        intensity.push(now);
        let view = HourView {
            hour: index,
            intensity: &intensity,
            slots: self.slots,
            queued,
            // A live search does not enumerate its space.
            unscored: 0,
            in_progress,
        };
        let (heavy, forecast_hours, forecast_note) = match self.policy {
            LivePolicy::Heuristic => {
                let (forecasts, hours, note) = match self.forecast(hour) {
                    Ok(f) => {
                        let n = f.len();
                        (HashMap::from([(index, f)]), n, None)
                    }
                    Err(why) => (HashMap::new(), 0, Some(why)),
                };
                let mut p = CeNasHeuristic {
                    lookback_hours: 24,
                    forecasts,
                };
                (p.heavy_slots(&view), hours, note)
            }
            LivePolicy::Threshold(mut p) => (
                p.heavy_slots(&view),
                0,
                Some("the threshold policy uses no forecast".into()),
            ),
        };
        let heavy = heavy.min(self.slots);
        Ok(HourDecision {
            hour,
            intensity: now,
            heavy_slots: heavy,
            light_slots: self.slots - heavy,
            forecast_hours,
            forecast_note,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use carbon::{HourlyIntensity, IntensityKind, IntensitySource};

    fn hourly(first_hour: i64, values: &[f64]) -> IntensitySignal {
        IntensitySignal::Hourly(HourlyIntensity {
            source: IntensitySource {
                name: "trace:test".into(),
                kind: IntensityKind::Average,
            },
            first_hour,
            values: values.iter().map(|&v| Some(v)).collect(),
        })
    }

    #[test]
    fn replay_hours_advance_every_hour_seconds() {
        let c = HourClock::replay(UtcMillis::from_hour_index(100), 2.0).unwrap();
        let now = UtcMillis(0);
        assert_eq!(c.hour(now, 0.0), 100);
        assert_eq!(c.hour(now, 1.999), 100);
        assert_eq!(c.hour(now, 2.0), 101);
        assert_eq!(c.hour(now, 5.0), 102);
        assert!((c.seconds_until(102, now, 1.5) - 2.5).abs() < 1e-12);
        assert_eq!(c.seconds_until(100, now, 1.5), 0.0);
        assert!(HourClock::replay(now, 0.0).is_err());
        assert!(HourClock::replay(now, f64::NAN).is_err());
        let w = HourClock::Wall;
        assert_eq!(w.hour(UtcMillis(3 * 3_600_000 + 5), 99.0), 3);
        assert!(
            (w.seconds_until(4, UtcMillis(3 * 3_600_000 + 600_000), 0.0) - 3000.0).abs() < 1e-9
        );
    }

    /// Clean, dirty, clean over 4 slots, by hand: hour 0 has no range
    /// (x = 0.5, level round(4.5) = 5, ⌊4·5/10⌋ = 2 heavy); hour 1 is the
    /// top of [50, 500] (x = 1, level 0, floor 1 heavy); hour 2 the bottom
    /// (x = 0, level 9, ⌊4·9/10⌋ = 3 heavy). No forecast: three hours of
    /// trace are far too few to fit one, and the decision says so.
    #[test]
    fn heuristic_gives_light_work_the_dirty_hour() {
        let p =
            HourPlanner::new(hourly(10, &[50.0, 500.0, 50.0]), LivePolicy::Heuristic, 4).unwrap();
        let d: Vec<HourDecision> = (10..13).map(|h| p.decide(h, 0, 0).unwrap()).collect();
        assert_eq!(
            d.iter().map(|d| d.heavy_slots).collect::<Vec<_>>(),
            [2, 1, 3]
        );
        assert_eq!(
            d.iter().map(|d| d.light_slots).collect::<Vec<_>>(),
            [2, 3, 1]
        );
        assert_eq!(d[1].intensity, 500.0);
        assert!(d.iter().all(|d| d.forecast_hours == 0));
        assert!(d[0].forecast_note.as_deref().unwrap().contains("history"));
        // An hour the trace lacks is an error naming the hour.
        let e = p.decide(13, 0, 0).unwrap_err().to_string();
        assert!(e.contains("no value for the hour"), "{e}");
    }

    /// The threshold policy sees only the hours before the current one.
    #[test]
    fn threshold_compares_with_past_hours_only() {
        let t = ThresholdPolicy {
            percentile: 50.0,
            window_hours: LIVE_LOOKBACK_HOURS,
            floor: 1,
        };
        let p = HourPlanner::new(
            hourly(0, &[100.0, 300.0, 200.0, 400.0, 150.0]),
            LivePolicy::Threshold(t),
            3,
        )
        .unwrap();
        // Hour 0: no past, all heavy. Hour 1: 300 > p50 of [100]: floor.
        // Hour 2: 200 ≤ p50 of [100, 300] (nearest rank: 100)? no: floor.
        // Hour 3: 400 > p50 [100, 300, 200] = 200: floor. Hour 4: 150 ≤
        // p50 of [100, 300, 200, 400] = 200: all heavy.
        let heavy: Vec<usize> = (0..5)
            .map(|h| p.decide(h, 0, 0).unwrap().heavy_slots)
            .collect();
        assert_eq!(heavy, [3, 1, 1, 1, 3]);
    }
}
