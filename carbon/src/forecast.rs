//! Forecasting hourly carbon intensity 1..72 hours ahead, and measuring it.
//!
//! The model is *direct*: one ridge regression per horizon h, fitted on
//! past data only, predicting ln(intensity) at T = t + h from what is known
//! at the issue hour t (the last complete hour):
//! - recent lags `z[t]`, `z[t−1]`, `z[t−2]`, `z[t−3]`, `z[t−6]`, `z[t−12]`, `z[t−23]`;
//! - daily seasonal lags: the latest observed value at T's hour of day,
//!   `z[T − 24k]` with k = ⌈h/24⌉, and the day before it, `z[T − 24(k+1)]`;
//! - weekly seasonal lags `z[T − 168]`, `z[T − 336]`;
//! - the means of the last 24 h and the last 168 h;
//! - one-hot hour of day (24) and day of week (7) of T.
//!
//! Working in logs makes the squared loss close to the relative error MAPE
//! scores. Features are standardised on the training rows; the ridge
//! penalty is `lambda × rows` on the standardised weights, so one lambda
//! suits any amount of history; the intercept is not penalised.
//!
//! Baselines: persistence (`ŷ[T]` = `y[t]`); seasonal-naive daily (`ŷ[T]` = the
//! latest observed value at T's hour of day, `y[T − 24⌈h/24⌉]`: "same hour
//! yesterday" for day-ahead forecasts); seasonal-naive weekly
//! (`ŷ[T]` = `y[T − 168]`, same hour a week ago).

use linfa_linalg::cholesky::SolveC;
use ndarray::{Array1, Array2};

use crate::error::CarbonError;
use crate::intensity::HourlyIntensity;

/// Hours of history the features reach back (two weeks of weekly lags).
pub const HISTORY_HOURS: usize = 336;

/// A gap-free hourly series.
#[derive(Debug, Clone, PartialEq)]
pub struct HourlySeries {
    /// Hour index (hours since the epoch) of `values[0]`.
    pub first_hour: i64,
    /// gCO2eq/kWh, one per hour.
    pub values: Vec<f64>,
    /// How many hours had no trace point and were filled by linear
    /// interpolation between their neighbours (reported, never hidden).
    pub interpolated_hours: usize,
}

impl HourlySeries {
    /// Builds a series from hourly buckets: leading and trailing empty
    /// hours are dropped, inner gaps linearly interpolated and counted.
    pub fn from_hourly(h: &HourlyIntensity) -> Result<Self, CarbonError> {
        let first = h.values.iter().position(Option::is_some);
        let last = h.values.iter().rposition(Option::is_some);
        let (Some(first), Some(last)) = (first, last) else {
            return Err(CarbonError::Forecast(format!(
                "{}: no hourly values",
                h.source.name
            )));
        };
        let raw = &h.values[first..=last];
        let mut values = Vec::with_capacity(raw.len());
        let mut interpolated_hours = 0;
        let mut prev: Option<(usize, f64)> = None;
        for (i, v) in raw.iter().enumerate() {
            if let Some(v) = *v {
                if let Some((pi, pv)) = prev {
                    for j in pi + 1..i {
                        let w = (j - pi) as f64 / (i - pi) as f64;
                        values.push(pv + w * (v - pv));
                        interpolated_hours += 1;
                    }
                }
                values.push(v);
                prev = Some((i, v));
            }
        }
        Ok(HourlySeries {
            first_hour: h.first_hour + first as i64,
            values,
            interpolated_hours,
        })
    }
}

/// Settings of [`RidgeForecaster`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ForecasterConfig {
    /// Longest horizon, hours (models for 1..=horizons).
    pub horizons: usize,
    /// Ridge penalty per training row on standardised weights.
    pub lambda: f64,
    /// Fit on only the last this-many hours before the fit point (all
    /// history when `None`): grids drift with the seasons, so recent
    /// weeks can describe tomorrow better than last summer does.
    pub window_hours: Option<usize>,
}

impl Default for ForecasterConfig {
    fn default() -> Self {
        // 72 h: the longest horizon the issue asks for. lambda 1e-3: a
        // light penalty that keeps the normal equations well conditioned
        // (the one-hot columns are collinear with the intercept); it was not
        // tuned on the held-out weeks.
        ForecasterConfig {
            horizons: 72,
            lambda: 1e-3,
            window_hours: None,
        }
    }
}

/// Log transform of intensities; +1 keeps a 0 g/kWh hour finite.
fn to_log(v: f64) -> f64 {
    (v + 1.0).ln()
}

fn from_log(z: f64) -> f64 {
    (z.exp() - 1.0).max(0.0)
}

const RECENT_LAGS: [usize; 7] = [0, 1, 2, 3, 6, 12, 23];
const FEATURES: usize = RECENT_LAGS.len() + 2 + 2 + 2 + 24 + 7;

/// Features of target T = t + h, from `z[..=t]` only.
fn features(z: &[f64], first_hour: i64, t: usize, h: usize, out: &mut Vec<f64>) {
    out.clear();
    for lag in RECENT_LAGS {
        out.push(z[t - lag]);
    }
    let target = t + h;
    let k = h.div_ceil(24);
    out.push(z[target - 24 * k]);
    out.push(z[target - 24 * (k + 1)]);
    out.push(z[target - 168]);
    out.push(z[target - 336]);
    out.push(z[t + 1 - 24..=t].iter().sum::<f64>() / 24.0);
    out.push(z[t + 1 - 168..=t].iter().sum::<f64>() / 168.0);
    let hour = first_hour + target as i64;
    let hod = hour.rem_euclid(24) as usize;
    // 1970-01-01 was a Thursday: day 0 → index 3 with Monday = 0.
    let dow = (hour.div_euclid(24) + 3).rem_euclid(7) as usize;
    out.extend((0..24).map(|i| f64::from(u8::from(i == hod))));
    out.extend((0..7).map(|i| f64::from(u8::from(i == dow))));
    debug_assert_eq!(out.len(), FEATURES);
}

#[derive(Debug, Clone)]
struct HorizonModel {
    mean: Array1<f64>,
    scale: Array1<f64>,
    weights: Array1<f64>,
    intercept: f64,
}

/// One ridge regression per horizon, on ln(intensity).
#[derive(Debug, Clone)]
pub struct RidgeForecaster {
    first_hour: i64,
    models: Vec<HorizonModel>,
}

impl RidgeForecaster {
    /// Fits on `series.values[..train_end]`: every training target lies
    /// before `train_end`, so nothing from later hours is seen.
    pub fn fit(
        series: &HourlySeries,
        train_end: usize,
        config: ForecasterConfig,
    ) -> Result<Self, CarbonError> {
        if config.horizons == 0 || config.lambda.is_nan() || config.lambda <= 0.0 {
            return Err(CarbonError::Forecast(
                "need horizons >= 1 and lambda > 0".into(),
            ));
        }
        let train_end = train_end.min(series.values.len());
        let z: Vec<f64> = series.values[..train_end]
            .iter()
            .map(|&v| to_log(v))
            .collect();
        let min_rows = 2 * FEATURES;
        let mut models = Vec::with_capacity(config.horizons);
        let mut row = Vec::with_capacity(FEATURES);
        for h in 1..=config.horizons {
            // Origins t with t ≥ HISTORY_HOURS and t + h < train_end, the
            // targets within the window.
            let first = config
                .window_hours
                .map_or(0, |w| train_end.saturating_sub(w + h))
                .max(HISTORY_HOURS);
            let origins = first..train_end.saturating_sub(h);
            let n = origins.len();
            if n < min_rows {
                return Err(CarbonError::Forecast(format!(
                    "{n} training rows for horizon {h}, need {min_rows}: give at least {} hours of history",
                    HISTORY_HOURS + h + min_rows
                )));
            }
            let mut x = Array2::<f64>::zeros((n, FEATURES));
            let mut y = Array1::<f64>::zeros(n);
            for (r, t) in origins.enumerate() {
                features(&z, series.first_hour, t, h, &mut row);
                x.row_mut(r).assign(&ndarray::ArrayView1::from(&row[..]));
                y[r] = z[t + h];
            }
            models.push(fit_ridge(x, y, config.lambda)?);
        }
        Ok(RidgeForecaster {
            first_hour: series.first_hour,
            models,
        })
    }

    /// Longest horizon this forecaster predicts.
    pub fn horizons(&self) -> usize {
        self.models.len()
    }

    /// Forecast for hours t+1..=t+horizons, from `values[..=t]` only
    /// (`values[0]` is the hour the forecaster was fitted from).
    pub fn forecast(&self, values: &[f64], t: usize) -> Result<Vec<f64>, CarbonError> {
        if t < HISTORY_HOURS || t >= values.len() {
            return Err(CarbonError::Forecast(format!(
                "issue hour {t} needs {HISTORY_HOURS} hours of history and data up to it ({} hours given)",
                values.len()
            )));
        }
        let z: Vec<f64> = values[..=t].iter().map(|&v| to_log(v)).collect();
        // Features may look at T − 24k etc., all ≤ t; pad so indexing T works.
        let mut padded = z;
        padded.resize(t + 1 + self.models.len(), f64::NAN);
        let mut row = Vec::with_capacity(FEATURES);
        let mut out = Vec::with_capacity(self.models.len());
        for (i, m) in self.models.iter().enumerate() {
            features(&padded, self.first_hour, t, i + 1, &mut row);
            let mut pred = m.intercept;
            for (j, f) in row.iter().enumerate() {
                pred += m.weights[j] * (f - m.mean[j]) / m.scale[j];
            }
            out.push(from_log(pred));
        }
        Ok(out)
    }
}

fn fit_ridge(mut x: Array2<f64>, y: Array1<f64>, lambda: f64) -> Result<HorizonModel, CarbonError> {
    let n = x.nrows() as f64;
    let mean = x.mean_axis(ndarray::Axis(0)).expect("rows checked above");
    let mut scale = x.std_axis(ndarray::Axis(0), 0.0);
    // A constant column (an hour never seen) gets weight 0 through the
    // penalty; scale 1 keeps it finite.
    scale.mapv_inplace(|s| if s > 1e-12 { s } else { 1.0 });
    x -= &mean;
    x /= &scale;
    let intercept = y.mean().expect("rows checked above");
    let yc = &y - intercept;
    let mut gram = x.t().dot(&x);
    for i in 0..gram.nrows() {
        gram[[i, i]] += lambda * n;
    }
    let rhs = x.t().dot(&yc).insert_axis(ndarray::Axis(1));
    let w = gram
        .solvec(&rhs)
        .map_err(|e| CarbonError::Forecast(format!("ridge solve failed: {e}")))?;
    Ok(HorizonModel {
        mean,
        scale,
        weights: w.column(0).to_owned(),
        intercept,
    })
}

/// MAPE (percent) per horizon, index h−1, for a method.
#[derive(Debug, Clone, PartialEq)]
pub struct MapeByHorizon(pub Vec<f64>);

impl MapeByHorizon {
    /// MAPE at horizon `h` hours (1-based), if evaluated.
    pub fn at(&self, h: usize) -> Option<f64> {
        self.0.get(h.checked_sub(1)?).copied()
    }

    /// Day-ahead MAPE: the mean over horizons 1..=24 of forecasts issued
    /// daily at 00:00 UTC, i.e. the error on the next calendar day (over
    /// the horizons evaluated, if fewer than 24).
    pub fn day_ahead(&self) -> f64 {
        let day = &self.0[..self.0.len().min(24)];
        day.iter().sum::<f64>() / day.len().max(1) as f64
    }
}

/// Held-out evaluation of the forecaster and the baselines.
#[derive(Debug, Clone, PartialEq)]
pub struct HeldOutEvaluation {
    /// Hours of the series before the held-out weeks (the first fit's data;
    /// later weekly refits also see the held-out weeks already past).
    pub train_hours: usize,
    /// Forecasts issued (one per day at 00:00 UTC in the held-out weeks).
    pub issues: usize,
    /// The ridge forecaster.
    pub forecaster: MapeByHorizon,
    /// `ŷ[T]` = `y[t]`.
    pub persistence: MapeByHorizon,
    /// `ŷ[T]` = `y[T − 24⌈h/24⌉]` (same hour, latest observed day).
    pub seasonal_daily: MapeByHorizon,
    /// `ŷ[T]` = `y[T − 168]` (same hour a week earlier).
    pub seasonal_weekly: MapeByHorizon,
}

/// Holds out the last `test_weeks` weeks (plus 72 h so the last
/// forecast's targets exist) and issues one forecast per day at 00:00 UTC
/// in them, refitting the forecaster at the start of each held-out week on
/// all hours before it (never on the week it forecasts); every method is
/// scored on the same targets. Hours whose actual is 0 are skipped (their APE is undefined).
pub fn evaluate_held_out(
    series: &HourlySeries,
    test_weeks: usize,
    config: ForecasterConfig,
) -> Result<HeldOutEvaluation, CarbonError> {
    let n = series.values.len();
    let horizons = config.horizons;
    let held_out = test_weeks * 168 + horizons;
    if n < held_out + HISTORY_HOURS + 2 * FEATURES + horizons {
        return Err(CarbonError::Forecast(format!(
            "{n} hours is too short to hold out {test_weeks} weeks and train"
        )));
    }
    let test_start = n - held_out;
    // Walk forward: refit at the first issue of each held-out week on
    // every hour before it, as an operator retraining weekly would.
    let mut model: Option<RidgeForecaster> = None;
    let y = &series.values;
    let mut sums = [
        vec![0.0; horizons],
        vec![0.0; horizons],
        vec![0.0; horizons],
        vec![0.0; horizons],
    ];
    let mut counts = vec![0usize; horizons];
    let mut issues = 0;
    // Issue hour t = the hour 23:00–24:00 just completed at midnight.
    for t in test_start.saturating_sub(1)..n - horizons {
        if (series.first_hour + t as i64 + 1).rem_euclid(24) != 0 {
            continue;
        }
        if issues == test_weeks * 7 {
            break;
        }
        if issues % 7 == 0 {
            model = None;
        }
        let m = match &mut model {
            Some(m) => m,
            slot @ None => slot.insert(RidgeForecaster::fit(series, t + 1, config)?),
        };
        issues += 1;
        let pred = m.forecast(&y[..=t], t)?;
        for h in 1..=horizons {
            let target = t + h;
            let actual = y[target];
            if actual <= 0.0 {
                continue;
            }
            let k = h.div_ceil(24);
            let guesses = [pred[h - 1], y[t], y[target - 24 * k], y[target - 168]];
            for (s, g) in sums.iter_mut().zip(guesses) {
                s[h - 1] += (g - actual).abs() / actual * 100.0;
            }
            counts[h - 1] += 1;
        }
    }
    if counts.contains(&0) {
        return Err(CarbonError::Forecast(
            "no scorable forecast in the held-out weeks".into(),
        ));
    }
    let [f, p, sd, sw] =
        sums.map(|s| MapeByHorizon(s.iter().zip(&counts).map(|(s, &c)| s / c as f64).collect()));
    Ok(HeldOutEvaluation {
        train_hours: test_start,
        issues,
        forecaster: f,
        persistence: p,
        seasonal_daily: sd,
        seasonal_weekly: sw,
    })
}

/// Validation day-ahead MAPE (percent) per candidate fit window (hours;
/// `None` = all history).
pub type WindowScores = Vec<(Option<usize>, f64)>;

/// Picks the fit window by validation on past data only: each candidate
/// (`None` = all history) is scored by [`evaluate_held_out`] on the
/// series *before* the last `test_weeks` weeks (+ horizons) that a later
/// test will hold out, its own last `test_weeks` weeks serving as
/// validation. Returns the window with the lowest validation day-ahead
/// MAPE and every candidate's score, in the order given.
pub fn select_window(
    series: &HourlySeries,
    test_weeks: usize,
    candidates: &[Option<usize>],
    config: ForecasterConfig,
) -> Result<(Option<usize>, WindowScores), CarbonError> {
    let held_out = test_weeks * 168 + config.horizons;
    let past = HourlySeries {
        first_hour: series.first_hour,
        values: series.values[..series.values.len().saturating_sub(held_out)].to_vec(),
        interpolated_hours: 0,
    };
    let mut scores = Vec::with_capacity(candidates.len());
    for &window_hours in candidates {
        let e = evaluate_held_out(
            &past,
            test_weeks,
            ForecasterConfig {
                window_hours,
                ..config
            },
        )?;
        scores.push((window_hours, e.forecaster.day_ahead()));
    }
    let best = scores
        .iter()
        .min_by(|a, b| a.1.total_cmp(&b.1))
        .map(|s| s.0)
        .ok_or_else(|| CarbonError::Forecast("no window candidates".into()))?;
    Ok((best, scores))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::intensity::{IntensityKind, IntensitySource};
    use rand::{Rng, SeedableRng};

    /// Daily and weekly cycles plus AR(1) noise: what a grid trace looks like.
    fn synthetic(weeks: usize, seed: u64) -> HourlySeries {
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
        let mut noise = 0.0;
        let values = (0..weeks * 168)
            .map(|i| {
                let t = i as f64;
                noise = 0.8 * noise + rng.gen_range(-8.0..8.0);
                let daily = 80.0 * (2.0 * std::f64::consts::PI * t / 24.0).sin();
                let weekly = 30.0 * (2.0 * std::f64::consts::PI * t / 168.0).sin();
                200.0 + daily + weekly + noise
            })
            .collect();
        HourlySeries {
            first_hour: 0,
            values,
            interpolated_hours: 0,
        }
    }

    #[test]
    fn beats_persistence_on_a_synthetic_seasonal_series() {
        let s = synthetic(12, 7);
        let e = evaluate_held_out(&s, 2, ForecasterConfig::default()).unwrap();
        assert_eq!(e.issues, 14);
        let ours = e.forecaster.day_ahead();
        let persistence = e.persistence.day_ahead();
        assert!(
            ours < 0.5 * persistence,
            "ours {ours:.2}% vs persistence {persistence:.2}%"
        );
        assert!(
            ours < e.seasonal_daily.day_ahead(),
            "{ours} vs {}",
            e.seasonal_daily.day_ahead()
        );
        // At 12 h persistence guesses the opposite phase of the daily cycle.
        assert!(e.forecaster.at(12).unwrap() < 0.3 * e.persistence.at(12).unwrap());
    }

    #[test]
    fn baselines_match_a_hand_computed_case() {
        // A pure daily cycle: seasonal-naive daily is exact, persistence is not.
        let values: Vec<f64> = (0..10 * 168).map(|i| 100.0 + (i % 24) as f64).collect();
        let s = HourlySeries {
            first_hour: 0,
            values,
            interpolated_hours: 0,
        };
        let e = evaluate_held_out(&s, 1, ForecasterConfig::default()).unwrap();
        assert!(e.seasonal_daily.day_ahead().abs() < 1e-12);
        assert!(e.seasonal_weekly.day_ahead().abs() < 1e-12);
        // Issued after hour 23 (value 123): horizon 1 targets hour 0 (100):
        // APE = 23/100 = 23%.
        assert!((e.persistence.at(1).unwrap() - 23.0).abs() < 1e-9);
        assert!(
            e.forecaster.day_ahead() < 0.5,
            "{}",
            e.forecaster.day_ahead()
        );
    }

    #[test]
    fn forecast_uses_only_the_past() {
        let s = synthetic(6, 3);
        let m = RidgeForecaster::fit(&s, 700, ForecasterConfig::default()).unwrap();
        let t = 800;
        let a = m.forecast(&s.values[..=t], t).unwrap();
        let mut altered = s.values.clone();
        for v in &mut altered[t + 1..] {
            *v = 1e6;
        }
        let b = m.forecast(&altered, t).unwrap();
        assert_eq!(a, b);
        assert!(m.forecast(&s.values, 100).is_err());
    }

    #[test]
    fn a_window_fits_on_recent_weeks_only() {
        // Six weeks at level 1000, then four at 100 (same daily shape): a
        // two-week window sees only the new level; all history averages both.
        let values: Vec<f64> = (0..10 * 168)
            .map(|i| {
                let level = if i < 6 * 168 { 1000.0 } else { 100.0 };
                level * (1.0 + 0.2 * ((i % 24) as f64 / 24.0))
            })
            .collect();
        let s = HourlySeries {
            first_hour: 0,
            values,
            interpolated_hours: 0,
        };
        let t = 10 * 168 - 73;
        let windowed = ForecasterConfig {
            window_hours: Some(2 * 168),
            ..ForecasterConfig::default()
        };
        let m = RidgeForecaster::fit(&s, t + 1, windowed).unwrap();
        let f = m.forecast(&s.values[..=t], t).unwrap();
        for (h, p) in f.iter().enumerate() {
            let actual = s.values[t + 1 + h];
            assert!(
                (p - actual).abs() / actual < 0.01,
                "h={} {p} vs {actual}",
                h + 1
            );
        }
    }

    #[test]
    fn window_selection_never_sees_the_test_weeks() {
        let s = synthetic(12, 5);
        let candidates = [Some(4 * 168), None];
        let config = ForecasterConfig::default();
        let (best, scores) = select_window(&s, 1, &candidates, config).unwrap();
        let mut altered = s.clone();
        let n = altered.values.len();
        for v in &mut altered.values[n - (168 + 72)..] {
            *v *= 3.0;
        }
        let (best2, scores2) = select_window(&altered, 1, &candidates, config).unwrap();
        assert_eq!((best, &scores), (best2, &scores2));
        assert_eq!(scores.len(), 2);
        let min = scores.iter().map(|s| s.1).fold(f64::INFINITY, f64::min);
        assert_eq!(scores.iter().find(|s| s.0 == best).unwrap().1, min);
    }

    #[test]
    fn gaps_are_interpolated_and_counted() {
        let h = HourlyIntensity {
            source: IntensitySource {
                name: "g".into(),
                kind: IntensityKind::Average,
            },
            first_hour: 5,
            values: vec![None, Some(10.0), None, None, Some(40.0), None],
        };
        let s = HourlySeries::from_hourly(&h).unwrap();
        assert_eq!(s.first_hour, 6);
        assert_eq!(s.values, vec![10.0, 20.0, 30.0, 40.0]);
        assert_eq!(s.interpolated_hours, 2);
    }

    #[test]
    fn too_short_a_series_is_an_error() {
        let s = synthetic(2, 1);
        assert!(matches!(
            evaluate_held_out(&s, 1, ForecasterConfig::default()),
            Err(CarbonError::Forecast(_))
        ));
    }
}
