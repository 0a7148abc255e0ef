//! `carbon-bench`: held-out forecast accuracy on hourly carbon-intensity
//! traces, against persistence and seasonal-naive baselines.
//!
//! Usage: carbon-bench [--test-weeks N] [--window-weeks W | --select-window] TRACE.csv...
//! (traces in the bundled `Time,Carbon Intensity` format).

use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use carbon::forecast::{evaluate_held_out, select_window, ForecasterConfig, HourlySeries};
use carbon::IntensitySpec;

/// Day-ahead MAPE of DACF (Maji et al., e-Energy'22), the published anchor.
const DACF_DAY_AHEAD_MAPE_PCT: f64 = 6.4;
const SHOWN_HORIZONS: [usize; 5] = [1, 6, 24, 48, 72];

fn main() -> Result<()> {
    let mut args = std::env::args().skip(1);
    let mut test_weeks = 8usize;
    let mut config = ForecasterConfig::default();
    let mut select = false;
    let mut traces = Vec::new();
    while let Some(a) = args.next() {
        if a == "--test-weeks" {
            let v = args.next().context("--test-weeks needs a number")?;
            test_weeks = v.parse().with_context(|| format!("--test-weeks {v:?}"))?;
        } else if a == "--select-window" {
            select = true;
        } else if a == "--window-weeks" {
            let v = args.next().context("--window-weeks needs a number")?;
            let weeks: usize = v.parse().with_context(|| format!("--window-weeks {v:?}"))?;
            config.window_hours = Some(weeks * 168);
        } else {
            traces.push(PathBuf::from(a));
        }
    }
    if traces.is_empty() {
        bail!("usage: carbon-bench [--test-weeks N] [--window-weeks W | --select-window] TRACE.csv...");
    }
    let (mut ours, mut seasonal, mut persistence) = (Vec::new(), Vec::new(), Vec::new());
    let mut beating = 0;
    for path in &traces {
        let signal = IntensitySpec::Trace(path.clone()).load()?;
        let carbon::IntensitySignal::Hourly(hourly) = &signal else {
            bail!("{}: not an hourly trace", path.display());
        };
        let series = HourlySeries::from_hourly(hourly)?;
        let config = if select {
            let candidates = [Some(4 * 168), Some(8 * 168), Some(16 * 168), None];
            let (best, scores) = select_window(&series, test_weeks, &candidates, config)?;
            println!("   window validation (day-ahead MAPE % on the {test_weeks} weeks before the held-out ones): {}",
                scores.iter().map(|(w, m)| format!("{}={m:.2}", w.map_or("all".to_string(), |w| format!("{}w", w / 168)))).collect::<Vec<_>>().join(" "));
            ForecasterConfig {
                window_hours: best,
                ..config
            }
        } else {
            config
        };
        let e = evaluate_held_out(&series, test_weeks, config)?;
        println!(
            "== {} ({}): {} hours, {} interpolated; first fit on {} h (window {}), refit weekly; {} daily forecasts issued 00:00 UTC over the last {} weeks",
            path.display(),
            signal.source().kind,
            series.values.len(),
            series.interpolated_hours,
            e.train_hours,
            config
                .window_hours
                .map_or("all history".to_string(), |w| format!("{} weeks", w / 168)),
            e.issues,
            test_weeks
        );
        print!("{:<28}", "MAPE % at horizon");
        for h in SHOWN_HORIZONS {
            print!("{:>8}", format!("{h}h"));
        }
        println!("{:>11}", "day-ahead");
        for (name, m) in [
            ("ridge forecaster", &e.forecaster),
            ("persistence", &e.persistence),
            ("seasonal-naive (yesterday)", &e.seasonal_daily),
            ("seasonal-naive (last week)", &e.seasonal_weekly),
        ] {
            print!("{name:<28}");
            for h in SHOWN_HORIZONS {
                print!("{:>8.2}", m.at(h).unwrap_or(f64::NAN));
            }
            println!("{:>11.2}", m.day_ahead());
        }
        println!(
            "{:<28}{:>51.2}",
            "DACF (published anchor)", DACF_DAY_AHEAD_MAPE_PCT
        );
        // The stricter baseline: the better of the two seasonal-naive ones.
        let best_seasonal = e
            .seasonal_daily
            .day_ahead()
            .min(e.seasonal_weekly.day_ahead());
        if e.forecaster.day_ahead() < best_seasonal {
            beating += 1;
        }
        ours.push(e.forecaster.day_ahead());
        seasonal.push(best_seasonal);
        persistence.push(e.persistence.day_ahead());
    }
    let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len() as f64;
    println!(
        "forecast_mape_day_ahead_pct={:.2} seasonal_naive_mape_pct={:.2} persistence_mape_pct={:.2} traces_beating_seasonal_naive={}/{}",
        mean(&ours),
        mean(&seasonal),
        mean(&persistence),
        beating,
        traces.len()
    );
    Ok(())
}
