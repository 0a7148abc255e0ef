//! Reports people can use: the Pareto front and all trials as CSV and JSON,
//! a Pareto plot as SVG and PNG, a Markdown summary, and a JSON summary
//! (`finished_trials`, `front`, `hypervolume`, energy spent by the search).
//!
//! Plots: the SVG is written by hand (text is left to the viewer's fonts,
//! so it needs none here). The PNG is drawn with plotters' bitmap backend,
//! whose text needs a TrueType font: the first of `$NAS_SEARCH_FONT`,
//! common DejaVu/Liberation/FreeFont paths, or any `.ttf` under
//! `/usr/share/fonts` is used. A fresh Debian machine has none until
//! `fonts-dejavu-core` is installed; the PNG is then drawn without text
//! (points, front line and frame only) and the summary says so.

use crate::objective::{Direction, Metrics, ObjectiveSet};
use crate::runner::{front_indices, trials_hypervolume};
use crate::space::Config;
use crate::study::{Study, StudyError, StudySpec, TrialRecord, TrialStatus};
use serde::Serialize;
use shared::Provenance;
use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

/// Errors writing a report.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ReportError {
    /// Reading the study failed.
    #[error(transparent)]
    Study(#[from] StudyError),
    /// Writing a file failed.
    #[error("cannot write {file}: {message}")]
    Write {
        /// The file.
        file: PathBuf,
        /// Why.
        message: String,
    },
}

/// A member of the front, as reported.
#[derive(Debug, Clone, Serialize)]
pub struct FrontEntry {
    /// Trial number.
    pub number: u64,
    /// Configuration.
    pub config: Config,
    /// Metrics.
    pub metrics: Metrics,
    /// Provenance of its energy figures.
    pub provenance: Option<Provenance>,
}

/// An architecture picked from the front, and why.
#[derive(Debug, Clone, Serialize)]
pub struct ChosenArchitecture {
    /// Why it was chosen (e.g. `best val_accuracy`, `balanced`).
    pub reason: String,
    /// The front member.
    pub entry: FrontEntry,
}

/// Energy the search itself spent (sum over its trials).
#[derive(Debug, Clone, Serialize)]
pub struct SearchEnergy {
    /// Total, joules (`None` when no trial reported energy).
    pub energy_j: Option<f64>,
    /// Weakest provenance among the trials summed.
    pub provenance: Option<Provenance>,
    /// Trials that reported energy.
    pub trials_with_energy: usize,
}

/// Summary of a study (what `nas-client report --json` prints).
#[derive(Debug, Clone, Serialize)]
pub struct ReportSummary {
    /// Strategy specification.
    pub strategy: String,
    /// Objectives, as `name:min|max[:ref=..][:ideal=..]`.
    pub objectives: Vec<String>,
    /// Finished trials.
    pub finished_trials: usize,
    /// Failed trials.
    pub failed_trials: usize,
    /// Trials queued or running (e.g. of a live or crashed process).
    pub unfinished_trials: usize,
    /// The Pareto front (feasible, full fidelity).
    pub front: Vec<FrontEntry>,
    /// Hypervolume of the front (`None` without reference points).
    pub hypervolume: Option<f64>,
    /// Architectures picked from the front.
    pub chosen: Vec<ChosenArchitecture>,
    /// Energy spent by the search.
    pub search_energy: SearchEnergy,
    /// Mean engine time per trial outside the evaluator, milliseconds.
    pub mean_overhead_ms: Option<f64>,
    /// Trials holding both a predicted figure (`predicted_M`) and a
    /// measured one (`M`), side by side.
    pub predicted_vs_measured: Vec<PredictedMeasured>,
}

/// A predicted figure next to the measurement of the same thing.
#[derive(Debug, Clone, Serialize)]
pub struct PredictedMeasured {
    /// Trial number.
    pub number: u64,
    /// The measured metric (`M`; the prediction is `predicted_M`).
    pub metric: String,
    /// Predicted value.
    pub predicted: f64,
    /// Measured value.
    pub measured: f64,
    /// (predicted − measured) / measured, percent (`None` if measured is 0).
    pub error_pct: Option<f64>,
}

/// Prefix of a metric predicted rather than measured (by a calibration).
pub const PREDICTED_PREFIX: &str = "predicted_";

/// Every (trial, metric) where both `predicted_M` and `M` are known, in
/// trial order.
pub fn predicted_vs_measured(trials: &[TrialRecord]) -> Vec<PredictedMeasured> {
    let mut out = Vec::new();
    for t in trials.iter().filter(|t| t.status == TrialStatus::Finished) {
        let Some(m) = &t.metrics else { continue };
        for (name, &predicted) in m {
            let Some(measured_name) = name.strip_prefix(PREDICTED_PREFIX) else {
                continue;
            };
            if let Some(&measured) = m.get(measured_name) {
                out.push(PredictedMeasured {
                    number: t.number,
                    metric: measured_name.to_owned(),
                    predicted,
                    measured,
                    error_pct: (measured != 0.0).then(|| (predicted - measured) / measured * 100.0),
                });
            }
        }
    }
    out
}

/// Summarises trials of a study.
pub fn summarize(spec: &StudySpec, trials: &[TrialRecord]) -> ReportSummary {
    let objectives = &spec.objectives;
    let front_idx = front_indices(trials, objectives);
    let entry = |t: &TrialRecord| FrontEntry {
        number: t.number,
        config: t.config.clone(),
        metrics: t.metrics.clone().unwrap_or_default(),
        provenance: t.provenance,
    };
    let front: Vec<FrontEntry> = front_idx.iter().map(|&i| entry(&trials[i])).collect();
    let count = |s: TrialStatus| trials.iter().filter(|t| t.status == s).count();
    let overheads: Vec<f64> = trials
        .iter()
        .filter_map(|t| t.overhead_ns)
        .map(|ns| ns as f64 / 1e6)
        .collect();
    ReportSummary {
        strategy: spec.strategy.clone(),
        objectives: objectives
            .objectives
            .iter()
            .map(|o| o.to_string())
            .collect(),
        finished_trials: count(TrialStatus::Finished),
        failed_trials: count(TrialStatus::Failed),
        unfinished_trials: count(TrialStatus::Queued) + count(TrialStatus::Running),
        chosen: choose(&front, objectives),
        front,
        hypervolume: trials_hypervolume(trials, objectives),
        search_energy: search_energy(trials),
        mean_overhead_ms: (!overheads.is_empty())
            .then(|| overheads.iter().sum::<f64>() / overheads.len() as f64),
        predicted_vs_measured: predicted_vs_measured(trials),
    }
}

/// Energy the trials spent, with the weakest provenance among them (a
/// trial that reports energy without a provenance counts as estimated).
pub fn search_energy(trials: &[TrialRecord]) -> SearchEnergy {
    let mut out = SearchEnergy {
        energy_j: None,
        provenance: None,
        trials_with_energy: 0,
    };
    for t in trials {
        if let Some(e) = t.energy_spent_j {
            *out.energy_j.get_or_insert(0.0) += e;
            out.trials_with_energy += 1;
            let p = t.provenance.unwrap_or(Provenance::Estimated);
            out.provenance = Some(out.provenance.map_or(p, |q| q.combine(p)));
        }
    }
    out
}

/// Picks the best front member for each objective, and the balanced one
/// (closest to the ideal corner after scaling each objective to the
/// front's range).
pub fn choose(front: &[FrontEntry], objectives: &ObjectiveSet) -> Vec<ChosenArchitecture> {
    let vectors: Vec<Vec<f64>> = front
        .iter()
        .filter_map(|e| objectives.minimization_vector(&e.metrics).ok())
        .collect();
    if vectors.len() != front.len() || front.is_empty() {
        return Vec::new();
    }
    let mut chosen: Vec<ChosenArchitecture> = Vec::new();
    let mut push = |reason: String, i: usize| {
        if let Some(c) = chosen
            .iter_mut()
            .find(|c| c.entry.number == front[i].number)
        {
            c.reason = format!("{}; {reason}", c.reason);
        } else {
            chosen.push(ChosenArchitecture {
                reason,
                entry: front[i].clone(),
            });
        }
    };
    for (d, o) in objectives.objectives.iter().enumerate() {
        if let Some(i) = (0..front.len()).min_by(|&a, &b| vectors[a][d].total_cmp(&vectors[b][d])) {
            let word = match o.direction {
                Direction::Maximize => "highest",
                Direction::Minimize => "lowest",
            };
            push(format!("{word} {}", o.name), i);
        }
    }
    if objectives.objectives.len() > 1 {
        let dims = objectives.objectives.len();
        let lo: Vec<f64> = (0..dims)
            .map(|d| vectors.iter().map(|v| v[d]).fold(f64::INFINITY, f64::min))
            .collect();
        let hi: Vec<f64> = (0..dims)
            .map(|d| {
                vectors
                    .iter()
                    .map(|v| v[d])
                    .fold(f64::NEG_INFINITY, f64::max)
            })
            .collect();
        let dist = |v: &Vec<f64>| -> f64 {
            (0..dims)
                .map(|d| {
                    let span = hi[d] - lo[d];
                    if span > 0.0 {
                        ((v[d] - lo[d]) / span).powi(2)
                    } else {
                        0.0
                    }
                })
                .sum()
        };
        if let Some(i) =
            (0..front.len()).min_by(|&a, &b| dist(&vectors[a]).total_cmp(&dist(&vectors[b])))
        {
            push("balanced (closest to the ideal corner)".into(), i);
        }
    }
    chosen
}

/// Files written by [`write_report`].
#[derive(Debug, Clone, Serialize)]
pub struct ReportFiles {
    /// Every file written.
    pub files: Vec<PathBuf>,
    /// Whether the PNG carries text (a font was found).
    pub png_has_text: bool,
}

/// Writes the full report of the study in `study_file` into `out_dir`
/// (created if missing). Returns the summary and the files written.
pub fn write_report(
    study_file: &Path,
    out_dir: &Path,
) -> Result<(ReportSummary, ReportFiles), ReportError> {
    let mut study = Study::open_existing(study_file)?;
    let trials = study.trials()?;
    let spec = study.spec().clone();
    write_report_for(&spec, &trials, study_file, out_dir)
}

/// Writes a report for trials already loaded.
pub fn write_report_for(
    spec: &StudySpec,
    trials: &[TrialRecord],
    study_file: &Path,
    out_dir: &Path,
) -> Result<(ReportSummary, ReportFiles), ReportError> {
    std::fs::create_dir_all(out_dir).map_err(|e| ReportError::Write {
        file: out_dir.into(),
        message: e.to_string(),
    })?;
    let summary = summarize(spec, trials);
    let front_idx = front_indices(trials, &spec.objectives);
    let front_trials: Vec<TrialRecord> = front_idx.iter().map(|&i| trials[i].clone()).collect();
    let mut files = Vec::new();
    let mut write = |name: &str, bytes: &[u8]| -> Result<(), ReportError> {
        let path = out_dir.join(name);
        std::fs::write(&path, bytes).map_err(|e| ReportError::Write {
            file: path.clone(),
            message: e.to_string(),
        })?;
        files.push(path);
        Ok(())
    };
    write("trials.csv", trials_csv(trials).as_bytes())?;
    write("front.csv", trials_csv(&front_trials).as_bytes())?;
    write("trials.json", to_json(trials).as_bytes())?;
    write("front.json", to_json(&front_trials).as_bytes())?;
    write("summary.json", to_json(&summary).as_bytes())?;
    let points = plot_points(spec, trials, &front_idx);
    if let Some(p) = &points {
        write("pareto.svg", pareto_svg(p).as_bytes())?;
    }
    let md_probe = font_available();
    let md = markdown(spec, &summary, study_file, points.is_some(), md_probe);
    write("summary.md", md.as_bytes())?;
    let mut png_has_text = false;
    if let Some(p) = &points {
        let path = out_dir.join("pareto.png");
        png_has_text = pareto_png(p, &path).map_err(|message| ReportError::Write {
            file: path.clone(),
            message,
        })?;
        files.push(path);
    }
    Ok((
        summary,
        ReportFiles {
            files,
            png_has_text,
        },
    ))
}

fn to_json<T: Serialize + ?Sized>(v: &T) -> String {
    serde_json::to_string_pretty(v).unwrap_or_else(|e| format!("{{\"error\": \"{e}\"}}"))
}

fn csv_field(s: &str) -> String {
    if s.contains([',', '"', '\n']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_string()
    }
}

/// All trials as CSV: bookkeeping columns, then every parameter and metric
/// seen in any trial (empty where inactive or missing).
pub fn trials_csv(trials: &[TrialRecord]) -> String {
    let params: BTreeSet<&String> = trials.iter().flat_map(|t| t.config.0.keys()).collect();
    let metrics: BTreeSet<&String> = trials
        .iter()
        .filter_map(|t| t.metrics.as_ref())
        .flat_map(|m| m.keys())
        .collect();
    let mut out = String::from(
        "number,status,fidelity,seed,attempts,provenance,energy_spent_j,eval_ms,overhead_ms,tag,error",
    );
    for p in &params {
        out.push(',');
        out.push_str(&csv_field(p));
    }
    for m in &metrics {
        out.push(',');
        out.push_str(&csv_field(m));
    }
    out.push('\n');
    let opt = |x: Option<f64>| x.map(|v| v.to_string()).unwrap_or_default();
    for t in trials {
        let row = [
            t.number.to_string(),
            t.status.label().to_string(),
            t.fidelity.to_string(),
            t.seed.to_string(),
            t.attempts.to_string(),
            t.provenance
                .map(|p| p.label().to_string())
                .unwrap_or_default(),
            opt(t.energy_spent_j),
            opt(t.eval_ns.map(|n| n as f64 / 1e6)),
            opt(t.overhead_ns.map(|n| n as f64 / 1e6)),
            csv_field(t.tag.as_deref().unwrap_or("")),
            csv_field(t.error.as_deref().unwrap_or("")),
        ];
        out.push_str(&row.join(","));
        for p in &params {
            out.push(',');
            out.push_str(&csv_field(
                &t.config.get(p).map(|v| v.to_string()).unwrap_or_default(),
            ));
        }
        for m in &metrics {
            out.push(',');
            out.push_str(&opt(t.metrics.as_ref().and_then(|x| x.get(*m).copied())));
        }
        out.push('\n');
    }
    out
}

/// What the plots show: the first two objectives of every finished
/// full-fidelity trial, the front highlighted.
struct PlotPoints {
    x_name: String,
    y_name: String,
    all: Vec<(f64, f64)>,
    front: Vec<(f64, f64)>,
}

fn plot_points(
    spec: &StudySpec,
    trials: &[TrialRecord],
    front_idx: &[usize],
) -> Option<PlotPoints> {
    let objs = &spec.objectives.objectives;
    let (xo, yo) = match objs.len() {
        0 => return None,
        1 => (&objs[0], &objs[0]),
        _ => (&objs[1], &objs[0]),
    };
    let get = |t: &TrialRecord| -> Option<(f64, f64)> {
        let m = t.metrics.as_ref()?;
        Some((*m.get(&xo.name)?, *m.get(&yo.name)?))
    };
    let all: Vec<(f64, f64)> = trials
        .iter()
        .filter(|t| t.status == TrialStatus::Finished && (t.fidelity - 1.0).abs() < 1e-9)
        .filter_map(get)
        .filter(|(x, y)| x.is_finite() && y.is_finite())
        .collect();
    if all.is_empty() {
        return None;
    }
    let mut front: Vec<(f64, f64)> = front_idx.iter().filter_map(|&i| get(&trials[i])).collect();
    front.sort_by(|a, b| a.0.total_cmp(&b.0));
    Some(PlotPoints {
        x_name: xo.name.clone(),
        y_name: yo.name.clone(),
        all,
        front,
    })
}

fn bounds(p: &PlotPoints) -> (f64, f64, f64, f64) {
    let (mut x0, mut x1, mut y0, mut y1) = (
        f64::INFINITY,
        f64::NEG_INFINITY,
        f64::INFINITY,
        f64::NEG_INFINITY,
    );
    for &(x, y) in &p.all {
        x0 = x0.min(x);
        x1 = x1.max(x);
        y0 = y0.min(y);
        y1 = y1.max(y);
    }
    let pad = |a: f64, b: f64| {
        let s = (b - a).abs().max(1e-12 * a.abs().max(1.0));
        (a - 0.05 * s, b + 0.05 * s)
    };
    let (x0, x1) = pad(x0, x1);
    let (y0, y1) = pad(y0, y1);
    (x0, x1, y0, y1)
}

fn xml_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

fn pareto_svg(p: &PlotPoints) -> String {
    let (w, h, left, right, top, bottom) = (800.0, 560.0, 90.0, 30.0, 40.0, 70.0);
    let (x0, x1, y0, y1) = bounds(p);
    let sx = |x: f64| left + (x - x0) / (x1 - x0) * (w - left - right);
    let sy = |y: f64| h - bottom - (y - y0) / (y1 - y0) * (h - top - bottom);
    let mut s = String::new();
    let _ = writeln!(
        s,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" viewBox="0 0 {w} {h}" font-family="sans-serif" font-size="12">"#
    );
    let _ = writeln!(s, r#"<rect width="100%" height="100%" fill="white"/>"#);
    let _ = writeln!(
        s,
        r#"<rect x="{left}" y="{top}" width="{}" height="{}" fill="none" stroke="black"/>"#,
        w - left - right,
        h - top - bottom
    );
    for k in 0..=5 {
        let fx = x0 + (x1 - x0) * k as f64 / 5.0;
        let fy = y0 + (y1 - y0) * k as f64 / 5.0;
        let _ = writeln!(
            s,
            r#"<line x1="{0:.1}" y1="{1:.1}" x2="{0:.1}" y2="{2:.1}" stroke="black"/><text x="{0:.1}" y="{3:.1}" text-anchor="middle">{4}</text>"#,
            sx(fx),
            h - bottom,
            h - bottom + 5.0,
            h - bottom + 20.0,
            tick(fx)
        );
        let _ = writeln!(
            s,
            r#"<line x1="{0:.1}" y1="{1:.1}" x2="{2:.1}" y2="{1:.1}" stroke="black"/><text x="{3:.1}" y="{4:.1}" text-anchor="end">{5}</text>"#,
            left,
            sy(fy),
            left - 5.0,
            left - 8.0,
            sy(fy) + 4.0,
            tick(fy)
        );
    }
    let _ = writeln!(
        s,
        r#"<text x="{:.1}" y="{:.1}" text-anchor="middle" font-size="14">{}</text>"#,
        left + (w - left - right) / 2.0,
        h - 20.0,
        xml_escape(&p.x_name)
    );
    let _ = writeln!(
        s,
        r#"<text transform="translate(22,{:.1}) rotate(-90)" text-anchor="middle" font-size="14">{}</text>"#,
        top + (h - top - bottom) / 2.0,
        xml_escape(&p.y_name)
    );
    let _ = writeln!(
        s,
        r#"<text x="{:.1}" y="24" text-anchor="middle" font-size="16">Pareto front ({} trials, {} on the front)</text>"#,
        w / 2.0,
        p.all.len(),
        p.front.len()
    );
    for &(x, y) in &p.all {
        let _ = writeln!(
            s,
            r##"<circle cx="{:.1}" cy="{:.1}" r="3" fill="#9a9a9a"/>"##,
            sx(x),
            sy(y)
        );
    }
    let path: Vec<String> = p
        .front
        .iter()
        .map(|&(x, y)| format!("{:.1},{:.1}", sx(x), sy(y)))
        .collect();
    let _ = writeln!(
        s,
        r##"<polyline points="{}" fill="none" stroke="#d62728" stroke-width="1.5"/>"##,
        path.join(" ")
    );
    for &(x, y) in &p.front {
        let _ = writeln!(
            s,
            r##"<circle cx="{:.1}" cy="{:.1}" r="5" fill="#d62728"/>"##,
            sx(x),
            sy(y)
        );
    }
    s.push_str("</svg>\n");
    s
}

fn tick(v: f64) -> String {
    if v != 0.0 && (v.abs() < 1e-3 || v.abs() >= 1e5) {
        format!("{v:.2e}")
    } else {
        format!("{v:.4}")
    }
}

/// Registers a TrueType font for plotters once; `true` if one was found.
fn font_available() -> bool {
    static FONT: OnceLock<bool> = OnceLock::new();
    *FONT.get_or_init(|| {
        let mut candidates: Vec<PathBuf> = Vec::new();
        if let Some(p) = std::env::var_os("NAS_SEARCH_FONT") {
            candidates.push(p.into());
        }
        for p in [
            "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
            "/usr/share/fonts/TTF/DejaVuSans.ttf",
            "/usr/share/fonts/dejavu/DejaVuSans.ttf",
            "/usr/share/fonts/truetype/liberation/LiberationSans-Regular.ttf",
            "/usr/share/fonts/truetype/freefont/FreeSans.ttf",
        ] {
            candidates.push(p.into());
        }
        candidates.extend(find_ttf(Path::new("/usr/share/fonts"), 4));
        for path in candidates {
            let Ok(bytes) = std::fs::read(&path) else {
                continue;
            };
            // plotters keeps font bytes for the life of the process; one
            // font, loaded once, is leaked on purpose.
            let bytes: &'static [u8] = Box::leak(bytes.into_boxed_slice());
            if plotters::style::register_font(
                "sans-serif",
                plotters::style::FontStyle::Normal,
                bytes,
            )
            .is_ok()
            {
                tracing::debug!(font = %path.display(), "PNG font");
                return true;
            }
        }
        false
    })
}

fn find_ttf(dir: &Path, depth: usize) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return out;
    };
    let mut entries: Vec<PathBuf> = entries.filter_map(|e| e.ok().map(|e| e.path())).collect();
    entries.sort();
    for p in entries {
        if p.is_dir() && depth > 0 {
            out.extend(find_ttf(&p, depth - 1));
        } else if p.extension().is_some_and(|e| e.eq_ignore_ascii_case("ttf")) {
            out.push(p);
        }
    }
    out
}

fn pareto_png(p: &PlotPoints, path: &Path) -> Result<bool, String> {
    use plotters::prelude::*;
    let text = font_available();
    let (x0, x1, y0, y1) = bounds(p);
    let root = BitMapBackend::new(path, (800, 560)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| e.to_string())?;
    let grey = RGBColor(154, 154, 154);
    let red = RGBColor(214, 39, 40);
    if text {
        let mut chart = ChartBuilder::on(&root)
            .caption(
                format!(
                    "Pareto front ({} trials, {} on the front)",
                    p.all.len(),
                    p.front.len()
                ),
                ("sans-serif", 20),
            )
            .margin(15)
            .x_label_area_size(45)
            .y_label_area_size(75)
            .build_cartesian_2d(x0..x1, y0..y1)
            .map_err(|e| e.to_string())?;
        chart
            .configure_mesh()
            .x_desc(p.x_name.as_str())
            .y_desc(p.y_name.as_str())
            .x_label_formatter(&|v| tick(*v))
            .y_label_formatter(&|v| tick(*v))
            .draw()
            .map_err(|e| e.to_string())?;
        chart
            .draw_series(
                p.all
                    .iter()
                    .map(|&(x, y)| Circle::new((x, y), 3, grey.filled())),
            )
            .map_err(|e| e.to_string())?;
        chart
            .draw_series(LineSeries::new(
                p.front.iter().copied(),
                red.stroke_width(2),
            ))
            .map_err(|e| e.to_string())?;
        chart
            .draw_series(
                p.front
                    .iter()
                    .map(|&(x, y)| Circle::new((x, y), 5, red.filled())),
            )
            .map_err(|e| e.to_string())?;
    } else {
        // No font: same layout, no text.
        let area = root.margin(40, 60, 80, 30);
        let mut chart = ChartBuilder::on(&area)
            .build_cartesian_2d(x0..x1, y0..y1)
            .map_err(|e| e.to_string())?;
        chart
            .plotting_area()
            .draw(&Rectangle::new([(x0, y0), (x1, y1)], BLACK.stroke_width(1)))
            .map_err(|e| e.to_string())?;
        chart
            .draw_series(
                p.all
                    .iter()
                    .map(|&(x, y)| Circle::new((x, y), 3, grey.filled())),
            )
            .map_err(|e| e.to_string())?;
        chart
            .draw_series(LineSeries::new(
                p.front.iter().copied(),
                red.stroke_width(2),
            ))
            .map_err(|e| e.to_string())?;
        chart
            .draw_series(
                p.front
                    .iter()
                    .map(|&(x, y)| Circle::new((x, y), 5, red.filled())),
            )
            .map_err(|e| e.to_string())?;
    }
    root.present().map_err(|e| e.to_string())?;
    Ok(text)
}

fn fmt_metric(v: Option<&f64>) -> String {
    match v {
        Some(x) => tick(*x),
        None => "-".into(),
    }
}

fn markdown(
    spec: &StudySpec,
    s: &ReportSummary,
    study_file: &Path,
    plotted: bool,
    png_text: bool,
) -> String {
    let mut md = String::new();
    let _ = writeln!(md, "# Architecture search report\n");
    let _ = writeln!(md, "- Study: `{}`", study_file.display());
    let _ = writeln!(md, "- Strategy: `{}`, seed {}", s.strategy, spec.seed);
    let _ = writeln!(
        md,
        "- Objectives: {}",
        s.objectives
            .iter()
            .map(|o| format!("`{o}`"))
            .collect::<Vec<_>>()
            .join(", ")
    );
    if !spec.objectives.constraints.is_empty() {
        let c: Vec<String> = spec
            .objectives
            .constraints
            .iter()
            .map(|c| format!("`{} {:?}`", c.metric, c.bound))
            .collect();
        let _ = writeln!(md, "- Constraints: {}", c.join(", "));
    }
    let _ = writeln!(
        md,
        "- Trials: {} finished, {} failed, {} unfinished",
        s.finished_trials, s.failed_trials, s.unfinished_trials
    );
    match s.hypervolume {
        Some(hv) => {
            let _ = writeln!(md, "- Hypervolume of the front: {hv:.6} (against the declared reference point; normalised to [0, 1] where ideals are declared)");
        }
        None => {
            let _ = writeln!(
                md,
                "- Hypervolume: not computed (no reference point declared)"
            );
        }
    }
    match (s.search_energy.energy_j, s.search_energy.provenance) {
        (Some(e), p) => {
            let _ = writeln!(
                md,
                "- Energy spent by the search itself: {e:.3} J ({}), over {} trials that reported it",
                p.map(|p| p.label()).unwrap_or("unknown provenance"),
                s.search_energy.trials_with_energy
            );
        }
        (None, _) => {
            let _ = writeln!(
                md,
                "- Energy spent by the search itself: not reported by the evaluator"
            );
        }
    }
    if let Some(o) = s.mean_overhead_ms {
        let _ = writeln!(
            md,
            "- Engine overhead per trial (outside the evaluator): {o:.3} ms"
        );
    }
    let names: Vec<&str> = spec
        .objectives
        .objectives
        .iter()
        .map(|o| o.name.as_str())
        .collect();
    let _ = writeln!(md, "\n## Chosen architectures\n");
    let _ = writeln!(
        md,
        "| why | trial | {} | configuration |",
        names.join(" | ")
    );
    let _ = writeln!(md, "|---|---|{}---|", "---|".repeat(names.len()));
    for c in &s.chosen {
        let vals: Vec<String> = names
            .iter()
            .map(|n| fmt_metric(c.entry.metrics.get(*n)))
            .collect();
        let _ = writeln!(
            md,
            "| {} | {} | {} | `{}` |",
            c.reason,
            c.entry.number,
            vals.join(" | "),
            c.entry.config
        );
    }
    let _ = writeln!(md, "\n## Pareto front ({} trials)\n", s.front.len());
    let _ = writeln!(
        md,
        "| trial | {} | provenance | configuration |",
        names.join(" | ")
    );
    let _ = writeln!(md, "|---|{}---|---|", "---|".repeat(names.len()));
    for e in &s.front {
        let vals: Vec<String> = names
            .iter()
            .map(|n| fmt_metric(e.metrics.get(*n)))
            .collect();
        let _ = writeln!(
            md,
            "| {} | {} | {} | `{}` |",
            e.number,
            vals.join(" | "),
            e.provenance.map(|p| p.label()).unwrap_or("-"),
            e.config
        );
    }
    if !s.predicted_vs_measured.is_empty() {
        let _ = writeln!(md, "\n## Predicted and measured\n");
        let _ = writeln!(
            md,
            "Figures predicted from the calibration next to what energyd measured for the same trial."
        );
        let _ = writeln!(md);
        let _ = writeln!(md, "| trial | metric | predicted | measured | error |");
        let _ = writeln!(md, "|---|---|---|---|---|");
        for p in &s.predicted_vs_measured {
            let _ = writeln!(
                md,
                "| {} | `{}` | {} | {} | {} |",
                p.number,
                p.metric,
                fmt_metric(Some(&p.predicted)),
                fmt_metric(Some(&p.measured)),
                p.error_pct.map_or("-".to_owned(), |e| format!("{e:+.1}%"))
            );
        }
        let errors: Vec<f64> = s
            .predicted_vs_measured
            .iter()
            .filter_map(|p| p.error_pct.map(f64::abs))
            .collect();
        if !errors.is_empty() {
            let _ = writeln!(
                md,
                "\nMean absolute error: {:.1}% over {} figures.",
                errors.iter().sum::<f64>() / errors.len() as f64,
                errors.len()
            );
        }
    }
    let _ = writeln!(md, "\n## Files\n");
    let _ = writeln!(
        md,
        "- `front.csv`, `front.json`: the front; `trials.csv`, `trials.json`: every trial"
    );
    if plotted {
        let _ = writeln!(
            md,
            "- `pareto.svg`, `pareto.png`: the first two objectives, front in red"
        );
        if !png_text {
            let _ = writeln!(md, "- Note: no TrueType font was found, so `pareto.png` has no text (install `fonts-dejavu-core` or set `NAS_SEARCH_FONT`); `pareto.svg` is labelled.");
        }
    }
    let _ = writeln!(md, "- `summary.json`: this summary");
    md
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::objective::{Objective, ObjectiveSet};
    use crate::space::{ParamValue, SearchSpace};

    fn trial(number: u64, acc: f64, energy: f64) -> TrialRecord {
        let mut config = Config::default();
        config.0.insert("w".into(), ParamValue::Int(number as i64));
        TrialRecord {
            number,
            config_key: config.key(),
            config,
            fidelity: 1.0,
            tag: None,
            status: TrialStatus::Finished,
            worker: None,
            seed: 0,
            metrics: Some(
                [("acc".to_string(), acc), ("energy".to_string(), energy)]
                    .into_iter()
                    .collect(),
            ),
            kernel_energy: Vec::new(),
            provenance: Some(Provenance::Estimated),
            energy_spent_j: Some(2.0),
            error: None,
            notes: Vec::new(),
            created_ns: 0,
            started_ns: None,
            finished_ns: None,
            finish_seq: Some(number),
            eval_ns: Some(1_000_000),
            overhead_ns: Some(100_000),
            attempts: 1,
        }
    }

    #[test]
    fn predicted_figures_are_shown_next_to_measured_ones() {
        let mut a = trial(0, 0.9, 5.0);
        let m = a.metrics.as_mut().unwrap();
        m.insert("predicted_energy".into(), 6.0);
        // A prediction without a measurement, and one of a metric never
        // measured, are not paired.
        let mut b = trial(1, 0.8, 1.0);
        b.metrics
            .as_mut()
            .unwrap()
            .insert("predicted_training_energy_j".into(), 3.0);
        let pairs = predicted_vs_measured(&[a.clone(), b]);
        assert_eq!(pairs.len(), 1);
        assert_eq!((pairs[0].number, pairs[0].metric.as_str()), (0, "energy"));
        assert!((pairs[0].error_pct.unwrap() - 20.0).abs() < 1e-12);
        let spec = StudySpec {
            space: SearchSpace::default_tabular(),
            objectives: ObjectiveSet::new(vec![
                Objective::parse("acc:max:ref=0:ideal=1").unwrap(),
                Objective::parse("predicted_energy:min:ref=10:ideal=0").unwrap(),
            ])
            .unwrap(),
            strategy: "random".into(),
            seed: 3,
        };
        let dir = tempfile::tempdir().unwrap();
        let (s, _) = write_report_for(&spec, &[a], Path::new("x.db"), dir.path()).unwrap();
        assert_eq!(s.predicted_vs_measured.len(), 1);
        let md = std::fs::read_to_string(dir.path().join("summary.md")).unwrap();
        assert!(md.contains("## Predicted and measured"), "{md}");
        assert!(
            md.contains("| 0 | `energy` |") && md.contains("+20.0%"),
            "{md}"
        );
    }

    #[test]
    fn report_files_and_summary() {
        let spec = StudySpec {
            space: SearchSpace::default_tabular(),
            objectives: ObjectiveSet::new(vec![
                Objective::parse("acc:max:ref=0:ideal=1").unwrap(),
                Objective::parse("energy:min:ref=10:ideal=0").unwrap(),
            ])
            .unwrap(),
            strategy: "random".into(),
            seed: 3,
        };
        let trials = vec![trial(0, 0.9, 5.0), trial(1, 0.8, 1.0), trial(2, 0.7, 6.0)];
        let dir = tempfile::tempdir().unwrap();
        let (s, files) = write_report_for(&spec, &trials, Path::new("x.db"), dir.path()).unwrap();
        assert_eq!(s.finished_trials, 3);
        assert_eq!(
            s.front.iter().map(|e| e.number).collect::<Vec<_>>(),
            vec![0, 1]
        );
        // Union of boxes: 0.9*0.5 + 0.8*0.9 - 0.8*0.5 = 0.77.
        assert!((s.hypervolume.unwrap() - 0.77).abs() < 1e-12);
        assert_eq!(s.search_energy.energy_j, Some(6.0));
        assert_eq!(s.search_energy.provenance, Some(Provenance::Estimated));
        assert!(s
            .chosen
            .iter()
            .any(|c| c.reason.contains("highest acc") && c.entry.number == 0));
        assert!(s
            .chosen
            .iter()
            .any(|c| c.reason.contains("lowest energy") && c.entry.number == 1));
        for name in [
            "trials.csv",
            "front.csv",
            "trials.json",
            "front.json",
            "summary.json",
            "pareto.svg",
            "pareto.png",
            "summary.md",
        ] {
            let p = dir.path().join(name);
            assert!(p.metadata().unwrap().len() > 0, "{name}");
            assert!(files.files.contains(&p));
        }
        let png = std::fs::read(dir.path().join("pareto.png")).unwrap();
        assert_eq!(&png[1..4], b"PNG");
        let json: serde_json::Value = serde_json::from_str(
            &std::fs::read_to_string(dir.path().join("summary.json")).unwrap(),
        )
        .unwrap();
        assert_eq!(json["finished_trials"], 3);
        assert_eq!(json["front"].as_array().unwrap().len(), 2);
        let csv = std::fs::read_to_string(dir.path().join("trials.csv")).unwrap();
        assert_eq!(csv.lines().count(), 4);
        assert!(csv.lines().next().unwrap().ends_with(",w,acc,energy"));
        let md = std::fs::read_to_string(dir.path().join("summary.md")).unwrap();
        assert!(md.contains("Hypervolume of the front: 0.770000"));
        assert!(md.contains("6.000 J (estimated)"));
    }
}
