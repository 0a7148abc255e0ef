//! gCO2eq = kWh × intensity of the hour the energy was spent × PUE.
//!
//! Energy is bucketed by UTC hour, as Zeus's carbon monitor and the
//! CE-NAS simulator do: an interval that spans an hour boundary is split
//! pro rata by time between the hours (constant power within an interval is
//! the only assumption available without finer readings). An hour the
//! signal has no value for is an error, never filled in.

use std::fmt;

use crate::error::CarbonError;
use crate::intensity::{
    GramsPerKwh, IntensityKind, IntensitySignal, IntensitySource, UtcMillis, HOUR_MS,
};

/// Where an energy figure came from; carried through to its carbon.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EnergyProvenance {
    /// Read from an energy counter.
    Measured,
    /// From a model of other readings.
    Estimated,
    /// From a simulated source.
    Simulated,
    /// Predicted by a fitted energy model before running.
    Predicted,
}

impl From<shared::Provenance> for EnergyProvenance {
    fn from(p: shared::Provenance) -> Self {
        match p {
            shared::Provenance::Measured => EnergyProvenance::Measured,
            shared::Provenance::Estimated => EnergyProvenance::Estimated,
            shared::Provenance::Simulated => EnergyProvenance::Simulated,
        }
    }
}

impl fmt::Display for EnergyProvenance {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            EnergyProvenance::Measured => "measured",
            EnergyProvenance::Estimated => "estimated",
            EnergyProvenance::Simulated => "simulated",
            EnergyProvenance::Predicted => "predicted",
        })
    }
}

/// Power usage effectiveness: facility energy / IT energy, at least 1.0.
/// 1.0 (no overhead counted) is what CodeCarbon reports by default; pass
/// the site's figure (1.1 modern hyperscale .. 2.2 old rooms).
#[derive(Debug, Clone, Copy, PartialEq, PartialOrd)]
pub struct Pue(f64);

impl Pue {
    /// A validated PUE.
    pub fn new(value: f64) -> Result<Self, CarbonError> {
        if value.is_finite() && value >= 1.0 {
            Ok(Pue(value))
        } else {
            Err(CarbonError::BadPue(value))
        }
    }

    /// The multiplier.
    pub fn get(self) -> f64 {
        self.0
    }
}

/// Energy spent between two instants (IT energy, before PUE).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct EnergyInterval {
    /// Start (inclusive).
    pub start: UtcMillis,
    /// End (exclusive); equal to `start` for an instantaneous charge.
    pub end: UtcMillis,
    /// Energy in kWh.
    pub energy_kwh: f64,
}

/// Joules in a kilowatt-hour.
pub const J_PER_KWH: f64 = 3.6e6;

impl EnergyInterval {
    /// An interval of `joules` between two instants.
    pub fn from_joules(start: UtcMillis, end: UtcMillis, joules: f64) -> Self {
        EnergyInterval {
            start,
            end,
            energy_kwh: joules / J_PER_KWH,
        }
    }
}

/// CLOCK_MONOTONIC and UTC read at one instant, to place the project's
/// monotonic timestamps (trial and span times) on the calendar the grid
/// signal is published against. Valid only for timestamps of the same
/// boot as the anchor (the monotonic clock restarts at boot), and it
/// assumes the wall clock was not stepped in between.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClockAnchor {
    monotonic: shared::MonotonicNs,
    utc: UtcMillis,
    /// Calendar milliseconds per `per_real_ms` real milliseconds: 1/1 for
    /// the wall clock; a replay of a trace runs the calendar faster (an
    /// integer ratio keeps the anchor exact and comparable).
    calendar_ms: u64,
    per_real_ms: u64,
}

impl ClockAnchor {
    /// An anchor from two readings the caller took together.
    pub fn new(monotonic: shared::MonotonicNs, utc: UtcMillis) -> Self {
        ClockAnchor {
            monotonic,
            utc,
            calendar_ms: 1,
            per_real_ms: 1,
        }
    }

    /// A replayed calendar: monotonic time `monotonic` is the instant
    /// `utc`, and every `real_ms_per_hour` real milliseconds after it
    /// advance the calendar by one hour (a trace replayed faster than it
    /// was recorded). `None` for a zero rate.
    pub fn replayed(
        monotonic: shared::MonotonicNs,
        utc: UtcMillis,
        real_ms_per_hour: u64,
    ) -> Option<Self> {
        (real_ms_per_hour > 0).then_some(ClockAnchor {
            monotonic,
            utc,
            calendar_ms: 3_600_000,
            per_real_ms: real_ms_per_hour,
        })
    }

    /// Whether this anchor replays a calendar at another rate than the
    /// wall clock's.
    pub fn is_replay(&self) -> bool {
        self.calendar_ms != self.per_real_ms
    }

    /// Reads both clocks now, back to back.
    pub fn now() -> Self {
        let monotonic = shared::MonotonicNs::now();
        let since_epoch = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        let utc = UtcMillis(i64::try_from(since_epoch.as_millis()).unwrap_or(i64::MAX));
        ClockAnchor {
            monotonic,
            utc,
            calendar_ms: 1,
            per_real_ms: 1,
        }
    }

    /// The UTC instant of monotonic time `t` (same boot).
    pub fn to_utc(&self, t: shared::MonotonicNs) -> UtcMillis {
        let delta_ns = i128::from(t.0) - i128::from(self.monotonic.0);
        let delta_ms = (delta_ns * i128::from(self.calendar_ms))
            .div_euclid(1_000_000 * i128::from(self.per_real_ms));
        UtcMillis(
            self.utc
                .0
                .saturating_add(i64::try_from(delta_ms).unwrap_or(i64::MAX)),
        )
    }
}

/// A set of intervals whose energy has one provenance.
#[derive(Debug, Clone, PartialEq)]
pub struct EnergyRecord {
    /// The intervals (any order, may overlap: each is charged once).
    pub intervals: Vec<EnergyInterval>,
    /// Where the energy figures came from.
    pub provenance: EnergyProvenance,
}

/// The carbon of one UTC hour.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct HourCarbon {
    /// Start of the hour.
    pub hour_start: UtcMillis,
    /// IT energy spent in the hour, kWh (before PUE).
    pub it_energy_kwh: f64,
    /// The hour's intensity, gCO2eq/kWh.
    pub intensity: f64,
    /// Emissions, gCO2eq (IT energy × PUE × intensity).
    pub grams_co2eq: f64,
}

/// The result of [`account`]: totals, the hours, and what they rest on.
#[derive(Debug, Clone, PartialEq)]
pub struct CarbonReport {
    /// Total emissions, gCO2eq.
    pub grams_co2eq: f64,
    /// Total IT energy, kWh.
    pub it_energy_kwh: f64,
    /// The PUE applied.
    pub pue: Pue,
    /// The intensity signal's source (its name and kind).
    pub intensity_source: IntensitySource,
    /// Provenance of the energy the carbon was computed from.
    pub energy_provenance: EnergyProvenance,
    /// Per-hour breakdown, in time order, only hours with energy.
    pub hours: Vec<HourCarbon>,
}

impl CarbonReport {
    /// Grams per kWh of IT energy: the energy-weighted mean intensity of
    /// the hours the energy was spent in, times the PUE, so that IT energy
    /// × this = [`CarbonReport::grams_co2eq`]. This is the single search
    /// intensity a report that multiplies one energy by one intensity (such
    /// as nas-search's payback) should be given. `None` without energy.
    pub fn effective_intensity(&self) -> Option<GramsPerKwh> {
        if self.it_energy_kwh > 0.0 {
            GramsPerKwh::new(self.grams_co2eq / self.it_energy_kwh).ok()
        } else {
            None
        }
    }

    /// Average or marginal: what the grams mean.
    pub fn kind(&self) -> IntensityKind {
        self.intensity_source.kind
    }

    /// Facility energy, kWh (IT energy × PUE).
    pub fn facility_energy_kwh(&self) -> f64 {
        self.it_energy_kwh * self.pue.get()
    }
}

impl fmt::Display for CarbonReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{:.3} gCO2eq ({} intensity from {}; {:.6} kWh {} energy × PUE {})",
            self.grams_co2eq,
            self.intensity_source.kind,
            self.intensity_source.name,
            self.it_energy_kwh,
            self.energy_provenance,
            self.pue.get()
        )
    }
}

/// Charges every interval's energy to the hours it was spent in.
pub fn account(
    energy: &EnergyRecord,
    signal: &IntensitySignal,
    pue: Pue,
) -> Result<CarbonReport, CarbonError> {
    let mut by_hour: std::collections::BTreeMap<i64, f64> = std::collections::BTreeMap::new();
    for (index, iv) in energy.intervals.iter().enumerate() {
        let bad = |reason: String| CarbonError::BadEnergy { index, reason };
        if !iv.energy_kwh.is_finite() || iv.energy_kwh < 0.0 {
            return Err(bad(format!(
                "energy {} kWh is not a finite non-negative number",
                iv.energy_kwh
            )));
        }
        if iv.end < iv.start {
            return Err(bad(format!(
                "ends ({}) before it starts ({})",
                iv.end, iv.start
            )));
        }
        if iv.end == iv.start {
            *by_hour.entry(iv.start.hour_index()).or_default() += iv.energy_kwh;
            continue;
        }
        let duration = (iv.end.0 - iv.start.0) as f64;
        // The last hour touched holds end − 1 ms: `end` is exclusive.
        let last_hour = (iv.end.0 - 1).div_euclid(HOUR_MS);
        for hour in iv.start.hour_index()..=last_hour {
            let lo = iv.start.0.max(hour * HOUR_MS);
            let hi = iv.end.0.min((hour + 1) * HOUR_MS);
            *by_hour.entry(hour).or_default() += iv.energy_kwh * (hi - lo) as f64 / duration;
        }
    }
    let mut hours = Vec::with_capacity(by_hour.len());
    for (hour, it_energy_kwh) in by_hour {
        let intensity = signal.for_hour(hour)?;
        hours.push(HourCarbon {
            hour_start: UtcMillis::from_hour_index(hour),
            it_energy_kwh,
            intensity,
            grams_co2eq: it_energy_kwh * pue.get() * intensity,
        });
    }
    Ok(CarbonReport {
        grams_co2eq: hours.iter().map(|h| h.grams_co2eq).sum(),
        it_energy_kwh: hours.iter().map(|h| h.it_energy_kwh).sum(),
        pue,
        intensity_source: signal.source().clone(),
        energy_provenance: energy.provenance,
        hours,
    })
}

/// The time-weighted mean intensity of `[start, end)`: what constant power
/// over that interval would be charged per kWh (e.g. the deployment
/// intensity of a payback over the hours a model will serve).
pub fn mean_intensity(
    signal: &IntensitySignal,
    start: UtcMillis,
    end: UtcMillis,
) -> Result<GramsPerKwh, CarbonError> {
    let record = EnergyRecord {
        intervals: vec![EnergyInterval {
            start,
            end,
            energy_kwh: 1.0,
        }],
        provenance: EnergyProvenance::Simulated,
    };
    let report = account(&record, signal, Pue(1.0))?;
    GramsPerKwh::new(report.grams_co2eq)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::intensity::{HourlyIntensity, IntensityPoint, IntensitySpec};
    use crate::trace::{parse_trace, TraceFormat};

    const MIN: i64 = 60_000;

    fn hourly(values: &[f64], kind: IntensityKind) -> IntensitySignal {
        IntensitySignal::Hourly(HourlyIntensity {
            source: IntensitySource {
                name: "test-trace".into(),
                kind,
            },
            first_hour: 0,
            values: values.iter().map(|v| Some(*v)).collect(),
        })
    }

    fn record(intervals: &[(i64, i64, f64)]) -> EnergyRecord {
        EnergyRecord {
            intervals: intervals
                .iter()
                .map(|&(s, e, kwh)| EnergyInterval {
                    start: UtcMillis(s),
                    end: UtcMillis(e),
                    energy_kwh: kwh,
                })
                .collect(),
            provenance: EnergyProvenance::Measured,
        }
    }

    #[test]
    fn interval_across_an_hour_boundary_is_split_by_time() {
        // 00:45–01:15, 2 kWh: 1 kWh at 100 g/kWh + 1 kWh at 300 = 400 g.
        let r = account(
            &record(&[(45 * MIN, 75 * MIN, 2.0)]),
            &hourly(&[100.0, 300.0], IntensityKind::Average),
            Pue::new(1.0).unwrap(),
        )
        .unwrap();
        assert!((r.grams_co2eq - 400.0).abs() < 1e-9);
        assert_eq!(r.hours.len(), 2);
        assert!((r.hours[0].it_energy_kwh - 1.0).abs() < 1e-12);
        // 00:40–02:10, 9 kWh over 90 min: 20/90, 60/90, 10/90 of it.
        let r = account(
            &record(&[(40 * MIN, 130 * MIN, 9.0)]),
            &hourly(&[10.0, 20.0, 30.0], IntensityKind::Average),
            Pue::new(1.0).unwrap(),
        )
        .unwrap();
        let expected = 2.0 * 10.0 + 6.0 * 20.0 + 1.0 * 30.0;
        assert!((r.grams_co2eq - expected).abs() < 1e-9, "{}", r.grams_co2eq);
    }

    #[test]
    fn interval_ending_exactly_on_the_hour_stays_in_its_hour() {
        let r = account(
            &record(&[(0, 60 * MIN, 1.5), (60 * MIN, 60 * MIN, 0.5)]),
            &hourly(&[100.0, 1000.0], IntensityKind::Average),
            Pue::new(1.0).unwrap(),
        )
        .unwrap();
        // 1.5 kWh in hour 0; the instantaneous 0.5 kWh at 01:00 in hour 1.
        assert!((r.grams_co2eq - (150.0 + 500.0)).abs() < 1e-9);
    }

    #[test]
    fn pue_multiplies_and_is_validated() {
        let e = record(&[(0, 30 * MIN, 2.0)]);
        let s = hourly(&[250.0], IntensityKind::Average);
        let r = account(&e, &s, Pue::new(1.5).unwrap()).unwrap();
        // 2 kWh × 1.5 × 250 = 750 g.
        assert!((r.grams_co2eq - 750.0).abs() < 1e-9);
        assert!((r.facility_energy_kwh() - 3.0).abs() < 1e-12);
        assert!((r.it_energy_kwh - 2.0).abs() < 1e-12);
        for bad in [0.9, f64::NAN, f64::INFINITY, -1.0] {
            assert!(matches!(Pue::new(bad), Err(CarbonError::BadPue(_))));
        }
    }

    #[test]
    fn marginal_and_average_signals_are_labelled() {
        let e = record(&[(0, 10 * MIN, 1.0)]);
        let avg = account(
            &e,
            &hourly(&[100.0], IntensityKind::Average),
            Pue::new(1.0).unwrap(),
        )
        .unwrap();
        assert_eq!(avg.kind(), IntensityKind::Average);
        // A WattTime file: 1000 lbs/MWh over hour 0 → 453.592 g/kWh, marginal.
        let points = parse_trace(
            "point_time,value\n1970-01-01T00:00:00Z,1000\n1970-01-01T00:30:00Z,1000\n".as_bytes(),
            std::path::Path::new("w.csv"),
            TraceFormat::WattTime,
        )
        .unwrap();
        let signal = IntensitySignal::Hourly(HourlyIntensity::from_points(
            IntensitySource {
                name: "watttime:w.csv".into(),
                kind: TraceFormat::WattTime.kind(),
            },
            &points,
        ));
        let m = account(&e, &signal, Pue::new(1.0).unwrap()).unwrap();
        assert_eq!(m.kind(), IntensityKind::Marginal);
        assert!((m.grams_co2eq - 453.592).abs() < 1e-9);
        assert!(m
            .to_string()
            .contains("marginal intensity from watttime:w.csv"));
        assert!(m.to_string().contains("measured energy"));
    }

    #[test]
    fn hour_without_intensity_is_an_error_not_a_default() {
        let signal = IntensitySignal::Hourly(HourlyIntensity {
            source: IntensitySource {
                name: "gappy".into(),
                kind: IntensityKind::Average,
            },
            first_hour: 0,
            values: vec![Some(1.0), None],
        });
        let e = account(
            &record(&[(50 * MIN, 70 * MIN, 1.0)]),
            &signal,
            Pue::new(1.0).unwrap(),
        )
        .unwrap_err();
        assert_eq!(
            e.to_string(),
            "intensity source gappy has no value for the hour starting 1970-01-01 01:00:00 UTC"
        );
    }

    #[test]
    fn bad_intervals_are_refused() {
        let s = IntensitySpec::Constant(GramsPerKwh::new(1.0).unwrap())
            .load()
            .unwrap();
        let pue = Pue::new(1.0).unwrap();
        for iv in [(10, 5, 1.0), (0, 5, -1.0), (0, 5, f64::NAN)] {
            assert!(matches!(
                account(&record(&[(0, 1, 0.0), iv]), &s, pue),
                Err(CarbonError::BadEnergy { index: 1, .. })
            ));
        }
    }

    #[test]
    fn constant_signal_and_provenance_carry_through() {
        let s = IntensitySpec::Constant(GramsPerKwh::new(475.0).unwrap())
            .load()
            .unwrap();
        let mut e = record(&[(0, 3 * HOUR_MS, 0.3)]);
        e.provenance = EnergyProvenance::from(shared::Provenance::Estimated);
        let r = account(&e, &s, Pue::new(1.0).unwrap()).unwrap();
        assert!((r.grams_co2eq - 0.3 * 475.0).abs() < 1e-9);
        assert_eq!(r.energy_provenance, EnergyProvenance::Estimated);
        assert_eq!(r.intensity_source.name, "const:475");
        assert_eq!(r.hours.len(), 3);
    }

    #[test]
    fn hourly_value_is_the_mean_of_the_trace_points_in_the_hour() {
        let pts: Vec<IntensityPoint> = [(0, 100.0), (15, 200.0), (30, 300.0), (45, 400.0)]
            .iter()
            .map(|&(m, v)| IntensityPoint {
                time: UtcMillis(m * MIN),
                value: GramsPerKwh::new(v).unwrap(),
            })
            .collect();
        let signal = IntensitySignal::Hourly(HourlyIntensity::from_points(
            IntensitySource {
                name: "q".into(),
                kind: IntensityKind::Average,
            },
            &pts,
        ));
        // Energy in 00:00–00:10 is charged at the hour's mean 250, not the 100 of its quarter.
        let r = account(
            &record(&[(0, 10 * MIN, 2.0)]),
            &signal,
            Pue::new(1.0).unwrap(),
        )
        .unwrap();
        assert!((r.grams_co2eq - 500.0).abs() < 1e-9);
    }

    #[test]
    fn monotonic_spans_are_placed_on_the_calendar_and_charged() {
        // Anchor: monotonic 10000 s ↔ 01:00 UTC. A trial from monotonic
        // 10000 s − 30 min to 10000 s + 30 min (00:30–01:30), 7.2 MJ = 2 kWh.
        let anchor = ClockAnchor::new(shared::MonotonicNs(10_000_000_000_000), UtcMillis(HOUR_MS));
        let start = anchor.to_utc(shared::MonotonicNs(10_000_000_000_000 - 1_800_000_000_000));
        let end = anchor.to_utc(shared::MonotonicNs(10_000_000_000_000 + 1_800_000_000_000));
        assert_eq!((start, end), (UtcMillis(30 * MIN), UtcMillis(90 * MIN)));
        let e = EnergyRecord {
            intervals: vec![EnergyInterval::from_joules(start, end, 7.2e6)],
            provenance: EnergyProvenance::Estimated,
        };
        let r = account(
            &e,
            &hourly(&[100.0, 300.0], IntensityKind::Average),
            Pue::new(1.2).unwrap(),
        )
        .unwrap();
        // 1 kWh × 100 + 1 kWh × 300, × 1.2 = 480 g; 480 / 2 kWh = 240 g/kWh.
        assert!((r.grams_co2eq - 480.0).abs() < 1e-9);
        assert!((r.effective_intensity().unwrap().get() - 240.0).abs() < 1e-9);
        let none = account(
            &EnergyRecord {
                intervals: vec![],
                provenance: EnergyProvenance::Measured,
            },
            &hourly(&[1.0], IntensityKind::Average),
            Pue::new(1.0).unwrap(),
        )
        .unwrap();
        assert_eq!(none.effective_intensity(), None);
        // Replayed at 2 real seconds per hour: 1 real second later is
        // half an hour later on the calendar.
        let replay = ClockAnchor::replayed(
            shared::MonotonicNs(5_000_000_000),
            UtcMillis(HOUR_MS),
            2_000,
        )
        .unwrap();
        assert!(replay.is_replay());
        assert_eq!(
            replay.to_utc(shared::MonotonicNs(6_000_000_000)),
            UtcMillis(HOUR_MS + 30 * MIN)
        );
        assert_eq!(
            replay.to_utc(shared::MonotonicNs(4_000_000_000)),
            UtcMillis(30 * MIN)
        );
        assert!(ClockAnchor::replayed(shared::MonotonicNs(0), UtcMillis(0), 0).is_none());
        let now = ClockAnchor::now();
        assert!(
            now.utc.0 > 1_700_000_000_000,
            "the wall clock reads after 2023"
        );
    }

    #[test]
    fn mean_intensity_is_time_weighted() {
        // 00:30–02:00 over 100, 300, 600: (30·100 + 60·300) / 90 = 233.33…
        let s = hourly(&[100.0, 300.0, 600.0], IntensityKind::Average);
        let m = mean_intensity(&s, UtcMillis(30 * MIN), UtcMillis(120 * MIN)).unwrap();
        assert!((m.get() - 21_000.0 / 90.0).abs() < 1e-9);
        assert!(mean_intensity(&s, UtcMillis(0), UtcMillis(4 * HOUR_MS)).is_err());
    }
}
