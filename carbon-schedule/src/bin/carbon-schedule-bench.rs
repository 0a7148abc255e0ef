//! `carbon-schedule-bench`: simulated carbon-aware search on a lookup
//! table of real trainings and real hourly intensity traces; carbon each
//! policy needs to reach 0.98 of train-everything's final hypervolume,
//! hypervolume under carbon caps. Every gram printed is SIMULATED (table
//! energies are energyd estimates, scaled to search-length trainings).
//!
//! Usage: carbon-schedule-bench [--table CSV] [--light-score SCORE[,SCORE...]]
//!   (SCORE: COLUMN or csv:PATH:COLUMN; with several, each trace picks one on its earlier weeks)
//!   (a leading '-' negates a column: -params = smaller is more promising)
//!   [--predicted-energy COLUMN] [--slots W] [--pue X] [--seeds N] [--mean-train-hours H]
//!   [--light-seconds S] [--light-joules J] [--horizon-days D]
//!   [--eval-start YYYY-MM-DD] [--tune-start YYYY-MM-DD] [--curves DIR] TRACE.csv...

use std::collections::HashMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use carbon::forecast::{ForecasterConfig, HourlySeries, RidgeForecaster};
use carbon::IntensitySpec;
use carbon_schedule::policy::{AllHeavyQueued, CeNasHeuristic, LightOnly, TrainEverything};
use carbon_schedule::report::{
    first_reaching, hypervolume_of, hypervolume_under_cap, reference_point, CurvePoint,
};
use carbon_schedule::sim::Policy;
use carbon_schedule::table::{column_from_csv, LightCost, LightEstimates, Table};
use carbon_schedule::tune::{choose_threshold, Setting};

/// Builds a fresh policy for each run.
type MakePolicy = Box<dyn Fn() -> Box<dyn Policy>>;

const TARGET_FRACTION: f64 = 0.98;
const PERCENTILES: [f64; 10] = [10.0, 20.0, 30.0, 40.0, 50.0, 60.0, 70.0, 80.0, 90.0, 100.0];
/// Threshold percentile window: four weeks of past hours.
const THRESHOLD_WINDOW_H: usize = 4 * 168;
/// Caps as fractions of train-everything's mean carbon to the target.
const CAP_FRACTIONS: [f64; 4] = [0.1, 0.25, 0.5, 1.0];

struct Args {
    table: PathBuf,
    light_score: String,
    predicted_energy: String,
    slots: usize,
    pue: carbon::Pue,
    seeds: usize,
    mean_train_hours: f64,
    light_seconds: f64,
    light_joules: Option<f64>,
    horizon_days: usize,
    eval_start: String,
    tune_start: String,
    curves: Option<PathBuf>,
    traces: Vec<PathBuf>,
}

fn parse_args() -> Result<Args> {
    let mut a = Args {
        table: "bench/search-data/table2-magic.csv".into(),
        light_score: "params".into(),
        predicted_energy: "flops".into(),
        slots: 8,
        pue: carbon::Pue::new(1.0)?,
        seeds: 10,
        mean_train_hours: 1.0,
        light_seconds: 36.0,
        light_joules: None,
        horizon_days: 14,
        eval_start: "2020-10-01".into(),
        tune_start: "2020-07-01".into(),
        curves: None,
        traces: Vec::new(),
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut val = |name: &str| it.next().with_context(|| format!("{name} needs a value"));
        match flag.as_str() {
            "--table" => a.table = val("--table")?.into(),
            "--light-score" => a.light_score = val("--light-score")?,
            "--predicted-energy" => a.predicted_energy = val("--predicted-energy")?,
            "--slots" => a.slots = val("--slots")?.parse().context("--slots")?,
            "--pue" => {
                let x: f64 = val("--pue")?.parse().context("--pue")?;
                a.pue = carbon::Pue::new(x).context("--pue")?;
            }
            "--seeds" => a.seeds = val("--seeds")?.parse().context("--seeds")?,
            "--mean-train-hours" => {
                a.mean_train_hours = val("--mean-train-hours")?
                    .parse()
                    .context("--mean-train-hours")?
            }
            "--light-seconds" => {
                a.light_seconds = val("--light-seconds")?.parse().context("--light-seconds")?
            }
            "--light-joules" => {
                a.light_joules = Some(val("--light-joules")?.parse().context("--light-joules")?)
            }
            "--horizon-days" => {
                a.horizon_days = val("--horizon-days")?.parse().context("--horizon-days")?
            }
            "--eval-start" => a.eval_start = val("--eval-start")?,
            "--tune-start" => a.tune_start = val("--tune-start")?,
            "--curves" => a.curves = Some(val("--curves")?.into()),
            f if f.starts_with("--") => bail!("unknown flag {f}"),
            _ => a.traces.push(flag.into()),
        }
    }
    if a.traces.is_empty() {
        bail!("usage: carbon-schedule-bench [flags] TRACE.csv... (see the source's header)");
    }
    if a.seeds == 0 || a.slots == 0 {
        bail!("--seeds and --slots must be >= 1");
    }
    Ok(a)
}

fn hour_of(date: &str) -> Result<i64> {
    let d = chrono::NaiveDate::parse_from_str(date, "%Y-%m-%d")
        .with_context(|| format!("date {date:?} (want YYYY-MM-DD)"))?;
    let t = d
        .and_hms_opt(0, 0, 0)
        .context("midnight")?
        .and_utc()
        .timestamp();
    Ok(t.div_euclid(3600))
}

/// Per policy, over the seeds.
#[derive(Default)]
struct Summary {
    carbon_to_target: Vec<Option<f64>>,
    time_to_target: Vec<Option<f64>>,
    final_hv: Vec<f64>,
    total_grams: Vec<f64>,
    trained: Vec<usize>,
    curves: Vec<Vec<CurvePoint>>,
}

fn mean(v: &[f64]) -> f64 {
    v.iter().sum::<f64>() / v.len().max(1) as f64
}

fn mean_if_all(v: &[Option<f64>]) -> Option<f64> {
    v.iter()
        .copied()
        .collect::<Option<Vec<f64>>>()
        .map(|v| mean(&v))
}

fn light_estimates(a: &Args, table: &Table, spec: &str) -> Result<LightEstimates> {
    let n = table.candidates.len();
    let score = if let Some(rest) = spec.strip_prefix("csv:") {
        let (path, col) = rest
            .rsplit_once(':')
            .context("--light-score csv:PATH:COLUMN")?;
        column_from_csv(Path::new(path), col, n)?
    } else if let Some(col) = spec.strip_prefix('-') {
        table.column(col)?.into_iter().map(|x| -x).collect()
    } else {
        table.column(spec)?
    };
    let predicted_energy = table.column(&a.predicted_energy)?;
    let power: f64 = table.candidates.iter().map(|c| c.train_joules).sum::<f64>()
        / table
            .candidates
            .iter()
            .map(|c| c.train_seconds)
            .sum::<f64>();
    let (joules, provenance) = match a.light_joules {
        Some(j) => (j, "given by --light-joules".to_string()),
        None => (
            a.light_seconds * power,
            format!(
                "assumed: {} s of one slot at the table's mean training power {power:.3} W (estimated by energyd)",
                a.light_seconds
            ),
        ),
    };
    Ok(LightEstimates {
        name: spec.to_string(),
        score,
        predicted_energy,
        cost: LightCost {
            seconds: a.light_seconds,
            joules,
            provenance,
        },
    })
}

fn main() -> Result<()> {
    let a = parse_args()?;
    let mut table = Table::load(&a.table)?;
    let n = table.candidates.len();
    let mean_secs = table
        .candidates
        .iter()
        .map(|c| c.train_seconds)
        .sum::<f64>()
        / n as f64;
    let factor = a.mean_train_hours * 3600.0 / mean_secs;
    table.scale_training(factor)?;
    let lights: Vec<LightEstimates> = a
        .light_score
        .split(',')
        .map(|spec| light_estimates(&a, &table, spec))
        .collect::<Result<_>>()?;
    let cands = &table.candidates;
    let reference = reference_point(cands);
    let all: Vec<usize> = (0..n).collect();
    let full_hv = hypervolume_of(cands, &all, &reference);
    let target = TARGET_FRACTION * full_hv;
    let horizon = a.horizon_days * 24;
    println!(
        "SIMULATED search: {} ({n} rows), {} slots, horizon {} days, {} seeds (seed s starts s weeks after the evaluation start)",
        a.table.display(),
        a.slots,
        a.horizon_days,
        a.seeds
    );
    println!(
        "  trainings scaled x{factor:.0} to a mean of {} h per slot (table: {mean_secs:.2} s, 8 epochs on a 2-core VM); energies energyd ESTIMATES x the same factor",
        a.mean_train_hours
    );
    println!(
        "  light scores {:?} (higher = more promising; '-' negates), predicted energy {:?}; light cost {} s, {:.3} J per evaluation ({})",
        a.light_score, a.predicted_energy, lights[0].cost.seconds, lights[0].cost.joules, lights[0].cost.provenance
    );
    println!(
        "  hypervolume (val_accuracy max, inference energy min) vs reference {reference:?}: all {n} rows {full_hv:.6}; target {TARGET_FRACTION} x = {target:.6}"
    );
    let mut reductions = Vec::new();
    let mut summary_line = String::new();
    for path in &a.traces {
        let signal = IntensitySpec::Trace(path.clone()).load()?;
        let carbon::IntensitySignal::Hourly(hourly) = &signal else {
            bail!("{}: not an hourly trace", path.display());
        };
        let series = HourlySeries::from_hourly(hourly)?;
        let index = |date: &str| -> Result<usize> {
            let i = hour_of(date)? - series.first_hour;
            usize::try_from(i)
                .with_context(|| format!("{date} lies before the trace of {}", path.display()))
        };
        let eval0 = index(&a.eval_start)?;
        let tune0 = index(&a.tune_start)?;
        let week = 168;
        let eval_runs: Vec<(usize, u64)> =
            (0..a.seeds).map(|s| (eval0 + s * week, s as u64)).collect();
        let tune_runs: Vec<(usize, u64)> = (0..a.seeds)
            .map(|s| (tune0 + s * week, 1000 + s as u64))
            .collect();
        if tune0 + (a.seeds - 1) * week + horizon > eval0 {
            bail!(
                "tuning runs ({}) overlap the evaluated period ({}): move --tune-start earlier",
                a.tune_start,
                a.eval_start
            );
        }
        if eval0 + (a.seeds - 1) * week + horizon > series.values.len() {
            bail!("{}: evaluated runs go past the trace's end", path.display());
        }
        let v = &series.values;
        // Light score and threshold chosen together on the earlier weeks.
        let mut choice = None;
        for light in &lights {
            let setting = Setting {
                candidates: cands,
                light,
                intensity: v,
                slots: a.slots,
                pue: a.pue,
                horizon_hours: horizon,
                reference: &reference,
            };
            let (best, scores) = choose_threshold(
                &setting,
                &PERCENTILES,
                THRESHOLD_WINDOW_H,
                &tune_runs,
                target,
            )?;
            let carbon = scores.iter().map(|x| x.1).fold(f64::INFINITY, f64::min);
            println!(
                "   [{}] tuning on earlier weeks, light score {:?}: mean gCO2 to target per threshold: {}",
                path.display(),
                light.name,
                scores
                    .iter()
                    .map(|(p, g)| format!("p{}f{}={g:.4}", p.percentile, p.floor))
                    .collect::<Vec<_>>()
                    .join(" ")
            );
            if choice
                .as_ref()
                .is_none_or(|(_, _, c): &(&LightEstimates, _, f64)| carbon < *c)
            {
                choice = Some((light, best, carbon));
            }
        }
        let (light, best_threshold, _) = choice.context("no light score given")?;
        let setting = Setting {
            candidates: cands,
            light,
            intensity: v,
            slots: a.slots,
            pue: a.pue,
            horizon_hours: horizon,
            reference: &reference,
        };
        // Forecaster fitted once on everything before the evaluated period.
        let fc = RidgeForecaster::fit(
            &series,
            eval0,
            ForecasterConfig {
                horizons: 24,
                ..ForecasterConfig::default()
            },
        )?;
        let mut forecasts = HashMap::new();
        for t in eval0..eval0 + (a.seeds - 1) * week + horizon {
            forecasts.insert(t, fc.forecast(&v[..=t], t)?);
        }
        println!("\n== {} ({}), evaluated from {} (runs of {} days); chosen on runs from {}: light score {:?}, {}",
            path.display(), signal.source().kind, a.eval_start, a.horizon_days, a.tune_start, light.name, best_threshold.name());
        let mut policies: Vec<(String, MakePolicy)> = vec![
            (
                "train-everything".into(),
                Box::new(|| Box::new(TrainEverything) as Box<dyn Policy>),
            ),
            (
                "all-heavy-queued".into(),
                Box::new(|| Box::new(AllHeavyQueued) as Box<dyn Policy>),
            ),
            (
                "light-only".into(),
                Box::new(|| Box::new(LightOnly) as Box<dyn Policy>),
            ),
        ];
        let fcs = forecasts.clone();
        policies.push((
            CeNasHeuristic::default().name(),
            Box::new(move || {
                Box::new(CeNasHeuristic {
                    lookback_hours: 24,
                    forecasts: fcs.clone(),
                }) as Box<dyn Policy>
            }),
        ));
        policies.push((
            format!("{} (tuned)", best_threshold.name()),
            Box::new(move || Box::new(best_threshold) as Box<dyn Policy>),
        ));
        let mut sums: Vec<(String, Summary)> = Vec::new();
        for (name, make) in &policies {
            let mut s = Summary::default();
            for &(start, seed) in &eval_runs {
                let (r, c) = setting.run(make().as_mut(), start, seed)?;
                let hit = first_reaching(&c, target);
                s.carbon_to_target.push(hit.map(|p| p.grams));
                s.time_to_target.push(hit.map(|p| p.time_h));
                s.final_hv.push(c.last().map_or(0.0, |p| p.hypervolume));
                s.total_grams.push(r.total_grams());
                s.trained.push(r.completions.len());
                s.curves.push(c);
            }
            sums.push((name.clone(), s));
        }
        let te_carbon = mean_if_all(&sums[0].1.carbon_to_target)
            .context("train-everything missed the target on some run: lengthen --horizon-days")?;
        println!(
            "   {:<26}{:>14}{:>12}{:>10}{:>13}{:>10}{:>11}   HV at caps {} x TE carbon-to-target",
            "policy (means, SIMULATED)",
            "gCO2 to 0.98",
            "h to 0.98",
            "final HV",
            "total gCO2",
            "trained",
            "reduction",
            CAP_FRACTIONS
                .iter()
                .map(|f| f.to_string())
                .collect::<Vec<_>>()
                .join("/")
        );
        let mut best_aware = f64::INFINITY;
        for (i, (name, s)) in sums.iter().enumerate() {
            let c = mean_if_all(&s.carbon_to_target);
            let t = mean_if_all(&s.time_to_target);
            let caps: Vec<String> = CAP_FRACTIONS
                .iter()
                .map(|f| {
                    let hv: Vec<f64> = s
                        .curves
                        .iter()
                        .map(|cv| hypervolume_under_cap(cv, f * te_carbon))
                        .collect();
                    format!("{:.4}", mean(&hv) / full_hv)
                })
                .collect();
            let reached = s.carbon_to_target.iter().filter(|x| x.is_some()).count();
            println!(
                "   {:<26}{:>14}{:>12}{:>10.4}{:>13.4}{:>10}{:>11}   {} (HV / all-rows HV)",
                name,
                c.map_or(format!("n/a ({reached}/{})", a.seeds), |c| format!(
                    "{c:.4}"
                )),
                t.map_or("n/a".into(), |t| format!("{t:.1}")),
                mean(&s.final_hv) / full_hv,
                mean(&s.total_grams),
                format!(
                    "{}-{}",
                    s.trained.iter().min().unwrap_or(&0),
                    s.trained.iter().max().unwrap_or(&0)
                ),
                c.map_or("-".into(), |c| format!("{:.2}x", te_carbon / c)),
                caps.join("/")
            );
            if i >= 3 {
                if let Some(c) = c {
                    best_aware = best_aware.min(c);
                }
            }
        }
        let reduction = te_carbon / best_aware;
        println!("   reduction (train-everything / best carbon-aware, carbon to 0.98 of TE's final HV): {reduction:.2}x");
        if let Some(q) = mean_if_all(&sums[1].1.carbon_to_target) {
            println!(
                "   of which the queue's order (train-everything / all-heavy-queued) {:.2}x, the timing (all-heavy-queued / best carbon-aware) {:.2}x",
                te_carbon / q,
                q / best_aware
            );
        }
        let name = path
            .file_stem()
            .map_or("trace".into(), |s| s.to_string_lossy().to_string());
        let _ = write!(
            summary_line,
            " reduction_{}={reduction:.2}",
            name.split('_').next().unwrap_or("trace")
        );
        reductions.push(reduction);
        if let Some(dir) = &a.curves {
            std::fs::create_dir_all(dir)?;
            let mut out = String::from("policy,seed,time_h,grams_simulated,hypervolume\n");
            for (pname, s) in &sums {
                for (seed, cv) in s.curves.iter().enumerate() {
                    for p in cv {
                        let _ = writeln!(
                            out,
                            "{pname},{seed},{:.4},{:.6},{:.8}",
                            p.time_h, p.grams, p.hypervolume
                        );
                    }
                }
            }
            let f = dir.join(format!("{name}-curves.csv"));
            std::fs::write(&f, out).with_context(|| f.display().to_string())?;
            let f = dir.join(format!("{name}-hv.svg"));
            let title = format!(
                "{} — SIMULATED search, {} (energies estimated)",
                name,
                a.table.display()
            );
            std::fs::write(&f, svg(&title, &sums, full_hv, 3.0 * te_carbon))
                .with_context(|| f.display().to_string())?;
        }
    }
    let worst = reductions.iter().copied().fold(f64::INFINITY, f64::min);
    println!("\nmin_carbon_reduction={worst:.2}{summary_line}");
    Ok(())
}

/// Mean over runs of the hypervolume reached by `x` (gCO2 or hours).
fn mean_step(curves: &[Vec<CurvePoint>], x: f64, by_time: bool) -> f64 {
    let v: Vec<f64> = curves
        .iter()
        .map(|c| {
            c.iter()
                .take_while(|p| if by_time { p.time_h } else { p.grams } <= x)
                .last()
                .map_or(0.0, |p| p.hypervolume)
        })
        .collect();
    mean(&v)
}

/// Two panels, hand-written SVG: mean HV (fraction of all rows') against
/// cumulative gCO2 (up to `max_grams`) and against hours (up to 24).
fn svg(title: &str, sums: &[(String, Summary)], full_hv: f64, max_grams: f64) -> String {
    const COLORS: [&str; 6] = [
        "#444444", "#1f77b4", "#bbbbbb", "#d62728", "#2ca02c", "#9467bd",
    ];
    let (w, h, pw, ph, top) = (960.0, 420.0, 400.0, 300.0, 60.0);
    let mut out = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{w}\" height=\"{h}\" font-family=\"sans-serif\">\n<rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n<text x=\"{}\" y=\"24\" font-size=\"15\" text-anchor=\"middle\">{}</text>\n",
        w / 2.0,
        title.replace('&', "&amp;").replace('<', "&lt;")
    );
    for (panel, (xlabel, xmax, by_time)) in [
        ("cumulative gCO2 (SIMULATED)", max_grams, false),
        ("simulated hours", 24.0, true),
    ]
    .into_iter()
    .enumerate()
    {
        let left = 70.0 + panel as f64 * 470.0;
        let _ = writeln!(
            out,
            "<rect x=\"{left}\" y=\"{top}\" width=\"{pw}\" height=\"{ph}\" fill=\"none\" stroke=\"black\"/>"
        );
        for k in 0..=4 {
            let f = k as f64 / 4.0;
            let _ = writeln!(
                out,
                "<text x=\"{}\" y=\"{}\" font-size=\"11\" text-anchor=\"end\">{:.2}</text><text x=\"{}\" y=\"{}\" font-size=\"11\" text-anchor=\"middle\">{:.3}</text>",
                left - 4.0,
                top + ph - f * ph + 4.0,
                f,
                left + f * pw,
                top + ph + 16.0,
                f * xmax
            );
        }
        let _ = writeln!(
            out,
            "<text x=\"{}\" y=\"{}\" font-size=\"12\" text-anchor=\"middle\">{xlabel}</text><text x=\"{}\" y=\"{}\" font-size=\"12\" text-anchor=\"middle\" transform=\"rotate(-90 {} {})\">mean HV / all rows' HV</text>",
            left + pw / 2.0,
            top + ph + 34.0,
            left - 40.0,
            top + ph / 2.0,
            left - 40.0,
            top + ph / 2.0
        );
        for (i, (name, s)) in sums.iter().enumerate() {
            let pts: Vec<String> = (0..=200)
                .map(|k| {
                    let x = xmax * k as f64 / 200.0;
                    let y = mean_step(&s.curves, x, by_time) / full_hv;
                    format!(
                        "{:.1},{:.1}",
                        left + pw * k as f64 / 200.0,
                        top + ph - y * ph
                    )
                })
                .collect();
            let color = COLORS[i % COLORS.len()];
            let _ = writeln!(
                out,
                "<polyline fill=\"none\" stroke=\"{color}\" stroke-width=\"1.8\" points=\"{}\"/>",
                pts.join(" ")
            );
            if panel == 1 {
                let _ = writeln!(
                    out,
                    "<text x=\"{}\" y=\"{}\" font-size=\"11\" fill=\"{color}\" text-anchor=\"end\">{name}</text>",
                    left + pw - 6.0,
                    top + ph - 12.0 - 14.0 * i as f64
                );
            }
        }
    }
    out.push_str("</svg>\n");
    out
}
