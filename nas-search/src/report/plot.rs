//! The two plots, laid out once in pixels on a [`Canvas`]:
//!
//! - the Pareto plot: accuracy against inference energy, the front in red,
//!   other feasible trials in blue, infeasible trials as grey crosses, the
//!   constraint thresholds (the accuracy floor) as dashed lines, the picks
//!   ringed and labelled; on a predicted energy axis the predictions are
//!   hollow and the re-measured figures filled black diamonds, joined to
//!   their prediction; another search's trials (compare) as green
//!   triangles;
//! - the progress plot: hypervolume (top) and least feasible inference
//!   energy (bottom) against the energy the search had spent, one step line
//!   per search.

use super::analysis::{energy_objective, full_and_finished};
use super::canvas::{Anchor, Canvas, PngCanvas, Rgb, SvgCanvas};
use super::{ProgressPoint, ReportSummary};
use crate::objective::Bound;
use crate::payback::FigureProvenance;
use crate::runner::front_indices;
use crate::study::{StudySpec, TrialRecord};
use std::collections::BTreeMap;
use std::path::Path;

/// A plot that can be written as SVG and PNG.
pub(crate) trait PlotFiles {
    /// The SVG document.
    fn svg(&self) -> String;
    /// Writes the PNG; `true` if it has text.
    fn png(&self, path: &Path) -> Result<bool, String>;
}

const RED: Rgb = Rgb(214, 39, 40);
const BLUE: Rgb = Rgb(31, 119, 180);
const GREY: Rgb = Rgb(140, 140, 140);
const GREEN: Rgb = Rgb(44, 160, 44);
const ORANGE: Rgb = Rgb(255, 127, 14);
const BLACK: Rgb = Rgb(0, 0, 0);
const DARK: Rgb = Rgb(60, 60, 60);
const LIGHT: Rgb = Rgb(225, 225, 225);

/// What a point on the Pareto plot is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum PointClass {
    /// On the front (feasible, non-dominated).
    Front,
    /// Feasible, dominated.
    Feasible,
    /// Violates a constraint.
    Infeasible,
    /// A trial of the other search of a comparison.
    OtherSearch,
}

/// A trial on the Pareto plot.
#[derive(Debug, Clone)]
pub(crate) struct ScatterPoint {
    pub(crate) x: f64,
    pub(crate) y: f64,
    pub(crate) class: PointClass,
    /// The x figure is a prediction.
    pub(crate) predicted: bool,
    /// The measured x of a predicted point, where it was re-measured.
    pub(crate) measured_x: Option<f64>,
}

/// A ringed, labelled pick.
#[derive(Debug, Clone)]
pub(crate) struct PickLabel {
    pub(crate) x: f64,
    pub(crate) y: f64,
    pub(crate) text: String,
}

/// A constraint threshold drawn across the plot.
#[derive(Debug, Clone)]
pub(crate) struct ThresholdLine {
    /// Across the plot at this y (else: up the plot at this x).
    pub(crate) horizontal: bool,
    pub(crate) value: f64,
    pub(crate) label: String,
}

impl ThresholdLine {
    /// The label up to its explanation in brackets.
    fn short_label(&self) -> String {
        self.label
            .split_once(" (")
            .map_or(self.label.clone(), |(a, _)| a.to_owned())
    }
}

/// The Pareto plot.
#[derive(Debug, Clone)]
pub(crate) struct ParetoPlot {
    pub(crate) title: String,
    pub(crate) x_label: String,
    pub(crate) y_label: String,
    pub(crate) points: Vec<ScatterPoint>,
    pub(crate) lines: Vec<ThresholdLine>,
    pub(crate) picks: Vec<PickLabel>,
    /// Legend text of [`PointClass::OtherSearch`] points.
    pub(crate) other_label: String,
}

impl ParetoPlot {
    /// The plot of a study: y is the first objective, x the second (or the
    /// inference energy when there is one objective). `None` when no trial
    /// has both.
    pub(crate) fn of_study(
        spec: &StudySpec,
        trials: &[TrialRecord],
        summary: &ReportSummary,
    ) -> Option<ParetoPlot> {
        let objs = &spec.objectives.objectives;
        let y_name = objs.first()?.name.clone();
        let x_name = match objs.get(1) {
            Some(o) => o.name.clone(),
            None => [
                Some(crate::payback::metric::INFERENCE_ENERGY_J_PER_1K),
                spec.metrics
                    .prediction_of(crate::payback::metric::INFERENCE_ENERGY_J_PER_1K)
                    .map(|p| p.name.as_str()),
            ]
            .into_iter()
            .flatten()
            .find(|m| {
                trials
                    .iter()
                    .any(|t| t.metrics.as_ref().is_some_and(|x| x.contains_key(*m)))
            })?
            .to_owned(),
        };
        // When x is a prediction, the measured metric it predicts (its
        // re-measured points are drawn too).
        let measured_name = spec
            .metrics
            .get(&x_name)
            .and_then(|m| m.predicts())
            .map(str::to_owned);
        let get = |t: &TrialRecord, n: &str| {
            t.metrics
                .as_ref()
                .and_then(|m| m.get(n).copied())
                .filter(|v| v.is_finite())
        };
        // Feasibility as the front sees it: among trials with every
        // objective, relative bounds against the best of them.
        let idx: Vec<usize> = (0..trials.len())
            .filter(|&i| full_and_finished(&trials[i]))
            .filter(|&i| {
                trials[i]
                    .metrics
                    .as_ref()
                    .is_some_and(|m| spec.objectives.minimization_vector(m).is_ok())
            })
            .collect();
        let metrics: Vec<_> = idx
            .iter()
            .filter_map(|&i| trials[i].metrics.as_ref())
            .collect();
        let violations = spec.objectives.violations(&metrics);
        let infeasible: BTreeMap<usize, bool> = idx
            .iter()
            .zip(&violations)
            .map(|(&i, v)| (i, *v > 0.0))
            .collect();
        let front: Vec<usize> = front_indices(trials, &spec.objectives);
        let mut points = Vec::new();
        let mut provenance = None;
        for (i, t) in trials.iter().enumerate() {
            if !full_and_finished(t) {
                continue;
            }
            let (Some(x), Some(y)) = (get(t, &x_name), get(t, &y_name)) else {
                continue;
            };
            let class = if front.contains(&i) {
                PointClass::Front
            } else if infeasible.get(&i).copied().unwrap_or(false) {
                PointClass::Infeasible
            } else {
                PointClass::Feasible
            };
            if let Some(p) = t.provenance {
                provenance = Some(provenance.map_or(p, |q: shared::Provenance| q.combine(p)));
            }
            points.push(ScatterPoint {
                x,
                y,
                class,
                predicted: measured_name.is_some(),
                measured_x: measured_name.as_deref().and_then(|m| get(t, m)),
            });
        }
        if points.is_empty() {
            return None;
        }
        let lines = summary
            .floors
            .iter()
            .filter(|f| f.metric == y_name || f.metric == x_name)
            .map(|f| ThresholdLine {
                horizontal: f.metric == y_name,
                value: f.value,
                label: format!(
                    "{} {} {} {}{}",
                    if f.at_least { "floor:" } else { "ceiling:" },
                    f.metric,
                    if f.at_least { "≥" } else { "≤" },
                    super::tick(f.value),
                    match f.bound {
                        Bound::AtLeastFractionOfBest(k) => format!(" ({k} × the best found)"),
                        Bound::AtMostFactorOfBest(k) => format!(" ({k} × the least found)"),
                        _ => String::new(),
                    }
                ),
            })
            .collect();
        // Picks, one label per trial.
        let mut labels: BTreeMap<u64, Vec<String>> = BTreeMap::new();
        if let Some(d) = &summary.decision {
            labels
                .entry(d.deploy.number)
                .or_default()
                .push("deploy".into());
        }
        for c in &summary.chosen {
            let word = if c.reason.contains("balanced") {
                "balanced"
            } else if c.reason.starts_with("highest") {
                "most accurate"
            } else {
                "least energy"
            };
            let v = labels.entry(c.entry.number).or_default();
            if !(word == "least energy" && v.iter().any(|s| s == "deploy")) {
                v.push(word.into());
            }
        }
        let picks = labels
            .into_iter()
            .filter_map(|(n, words)| {
                let t = trials.iter().find(|t| t.number == n)?;
                Some(PickLabel {
                    x: get(t, &x_name)?,
                    y: get(t, &y_name)?,
                    text: format!("#{n} {}", words.join(", ")),
                })
            })
            .collect();
        let x_prov = if measured_name.is_some() {
            "predicted".to_owned()
        } else if energy_objective(&spec.objectives, &spec.metrics).is_some()
            || x_name == crate::payback::metric::INFERENCE_ENERGY_J_PER_1K
        {
            provenance.map_or("provenance unknown".to_owned(), |p| p.label().to_owned())
        } else {
            String::new()
        };
        let count = |c: PointClass| points.iter().filter(|p| p.class == c).count();
        Some(ParetoPlot {
            title: format!(
                "Pareto front: {} trials, {} on the front, {} infeasible",
                points.len(),
                count(PointClass::Front),
                count(PointClass::Infeasible)
            ),
            x_label: if x_prov.is_empty() {
                x_name.clone()
            } else {
                format!("{x_name} [{x_prov}]")
            },
            y_label: y_name,
            points,
            lines,
            picks,
            other_label: "other search".into(),
        })
    }
}

/// Round tick values covering `lo..hi`, about `n` of them.
fn nice_ticks(lo: f64, hi: f64, n: usize) -> Vec<f64> {
    let span = hi - lo;
    if span.is_nan() || span <= 0.0 || !span.is_finite() {
        return vec![lo];
    }
    let raw = span / n.max(1) as f64;
    let mag = 10f64.powf(raw.log10().floor());
    let step = [1.0, 2.0, 2.5, 5.0, 10.0]
        .iter()
        .map(|m| m * mag)
        .find(|s| *s >= raw)
        .unwrap_or(10.0 * mag);
    let first = (lo / step).ceil() * step;
    (0..)
        .map(|k| first + k as f64 * step)
        .take_while(|v| *v <= hi + step * 1e-9)
        .take(50)
        .collect()
}

/// Ticks of a log axis: 1, 2 and 5 times each power of ten in `lo..hi`
/// (every power only, when that gives too many).
fn log_ticks(lo: f64, hi: f64) -> Vec<f64> {
    let (a, b) = (lo.log10().floor() as i32, hi.log10().ceil() as i32);
    let all: Vec<f64> = (a..=b)
        .flat_map(|e| [1.0, 2.0, 5.0].map(|m| m * 10f64.powi(e)))
        .filter(|v| *v >= lo && *v <= hi)
        .collect();
    if all.len() <= 9 {
        return all;
    }
    (a..=b)
        .map(|e| 10f64.powi(e))
        .filter(|v| *v >= lo && *v <= hi)
        .collect()
}

fn tick_label(v: f64, step: f64) -> String {
    if v != 0.0 && (v.abs() < 1e-3 || v.abs() >= 1e5) {
        return format!("{v:.2e}");
    }
    let decimals = if step > 0.0 {
        (-step.log10().floor()).max(0.0) as usize + 1
    } else {
        3
    };
    format!("{v:.*}", decimals.min(6))
}

/// A rectangle of the canvas mapped to data bounds.
struct Frame {
    left: f64,
    top: f64,
    right: f64,
    bottom: f64,
    x0: f64,
    x1: f64,
    y0: f64,
    y1: f64,
    /// x on a log scale (`x0 > 0`).
    x_log: bool,
}

impl Frame {
    fn sx(&self, x: f64) -> f64 {
        let (x, x0, x1) = if self.x_log {
            (x.max(1e-300).log10(), self.x0.log10(), self.x1.log10())
        } else {
            (x, self.x0, self.x1)
        };
        self.left + (x - x0) / (x1 - x0) * (self.right - self.left)
    }
    fn sy(&self, y: f64) -> f64 {
        self.bottom - (y - self.y0) / (self.y1 - self.y0) * (self.bottom - self.top)
    }

    /// Grid, frame, ticks and axis labels.
    fn axes(&self, c: &mut dyn Canvas, x_label: Option<&str>, y_label: &str) {
        let xt = if self.x_log {
            log_ticks(self.x0, self.x1)
        } else {
            nice_ticks(self.x0, self.x1, 6)
        };
        let yt = nice_ticks(self.y0, self.y1, 6);
        let xs = xt.get(1).map_or(0.0, |b| b - xt[0]);
        let ys = yt.get(1).map_or(0.0, |b| b - yt[0]);
        for &x in &xt {
            let px = self.sx(x);
            c.polyline(&[(px, self.top), (px, self.bottom)], LIGHT, 1.0);
            c.polyline(&[(px, self.bottom), (px, self.bottom + 5.0)], BLACK, 1.0);
            if x_label.is_some() {
                c.text(
                    (px, self.bottom + 16.0),
                    &tick_label(x, if self.x_log { x } else { xs }),
                    12.0,
                    Anchor::Middle,
                    BLACK,
                    false,
                );
            }
        }
        for &y in &yt {
            let py = self.sy(y);
            c.polyline(&[(self.left, py), (self.right, py)], LIGHT, 1.0);
            c.polyline(&[(self.left - 5.0, py), (self.left, py)], BLACK, 1.0);
            c.text(
                (self.left - 8.0, py),
                &tick_label(y, ys),
                12.0,
                Anchor::End,
                BLACK,
                false,
            );
        }
        c.polygon(
            &[
                (self.left, self.top),
                (self.right, self.top),
                (self.right, self.bottom),
                (self.left, self.bottom),
            ],
            None,
            Some(BLACK),
        );
        if let Some(l) = x_label {
            c.text(
                ((self.left + self.right) / 2.0, self.bottom + 38.0),
                l,
                14.0,
                Anchor::Middle,
                BLACK,
                false,
            );
        }
        c.text(
            (self.left - 62.0, (self.top + self.bottom) / 2.0),
            y_label,
            14.0,
            Anchor::Middle,
            BLACK,
            true,
        );
    }
}

fn padded(lo: f64, hi: f64) -> (f64, f64) {
    let s = (hi - lo).abs().max(1e-12 * lo.abs().max(1.0));
    (lo - 0.06 * s, hi + 0.06 * s)
}

fn cross(c: &mut dyn Canvas, p: (f64, f64), r: f64, color: Rgb) {
    c.polyline(&[(p.0 - r, p.1 - r), (p.0 + r, p.1 + r)], color, 2.0);
    c.polyline(&[(p.0 - r, p.1 + r), (p.0 + r, p.1 - r)], color, 2.0);
}

fn triangle(c: &mut dyn Canvas, p: (f64, f64), r: f64, fill: Option<Rgb>, stroke: Option<Rgb>) {
    c.polygon(
        &[
            (p.0, p.1 - r),
            (p.0 + r * 0.9, p.1 + r * 0.6),
            (p.0 - r * 0.9, p.1 + r * 0.6),
        ],
        fill,
        stroke,
    );
}

fn diamond(c: &mut dyn Canvas, p: (f64, f64), r: f64, color: Rgb) {
    c.polygon(
        &[
            (p.0, p.1 - r),
            (p.0 + r, p.1),
            (p.0, p.1 + r),
            (p.0 - r, p.1),
        ],
        Some(color),
        None,
    );
}

/// A point of a class, hollow when predicted.
fn marker(c: &mut dyn Canvas, p: (f64, f64), class: PointClass, predicted: bool) {
    let (color, r) = match class {
        PointClass::Front => (RED, 5.5),
        PointClass::Feasible => (BLUE, 4.0),
        PointClass::Infeasible => (GREY, 4.0),
        PointClass::OtherSearch => (GREEN, 5.0),
    };
    match class {
        PointClass::Infeasible => cross(c, p, r, color),
        PointClass::OtherSearch => triangle(c, p, r, None, Some(color)),
        _ if predicted => c.circle(p, r, Some(Rgb(255, 255, 255)), Some(color)),
        _ => c.circle(p, r, Some(color), None),
    }
}

/// Draws a legend row's marker centred on a point.
type LegendMarker = dyn Fn(&mut dyn Canvas, (f64, f64));

const PARETO_W: f64 = 980.0;
const PARETO_H: f64 = 620.0;

impl ParetoPlot {
    fn draw(&self, c: &mut dyn Canvas) {
        let xs = self
            .points
            .iter()
            .flat_map(|p| std::iter::once(p.x).chain(p.measured_x))
            .chain(self.lines.iter().filter(|l| !l.horizontal).map(|l| l.value));
        let ys = self
            .points
            .iter()
            .map(|p| p.y)
            .chain(self.lines.iter().filter(|l| l.horizontal).map(|l| l.value));
        let (x0, x1) = xs.fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), v| {
            (a.min(v), b.max(v))
        });
        let (y0, y1) = ys.fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), v| {
            (a.min(v), b.max(v))
        });
        // Inference energies span orders of magnitude: a log axis keeps
        // the thrifty networks, where the decision is, apart.
        let x_log = x0 > 0.0 && x1 / x0 >= 20.0;
        let (x0, x1) = if x_log {
            let (a, b) = padded(x0.log10(), x1.log10());
            (10f64.powf(a), 10f64.powf(b))
        } else {
            padded(x0, x1)
        };
        let (y0, y1) = padded(y0, y1);
        let f = Frame {
            left: 95.0,
            top: 45.0,
            right: PARETO_W - 265.0,
            bottom: PARETO_H - 65.0,
            x0,
            x1,
            y0,
            y1,
            x_log,
        };
        c.text(
            ((f.left + f.right) / 2.0, 22.0),
            &self.title,
            16.0,
            Anchor::Middle,
            BLACK,
            false,
        );
        let x_label = if x_log {
            format!("{} (log scale)", self.x_label)
        } else {
            self.x_label.clone()
        };
        f.axes(c, Some(&x_label), &self.y_label);
        for l in &self.lines {
            if l.horizontal {
                let y = f.sy(l.value);
                c.dashed((f.left, y), (f.right, y), ORANGE, 2.0, 8.0);
                // A short label at the left end, where an accuracy floor
                // has the empty corner (cheap and accurate) above it; the
                // full one is in the legend.
                c.text(
                    (f.left + 6.0, y - 10.0),
                    &l.short_label(),
                    12.0,
                    Anchor::Start,
                    ORANGE,
                    false,
                );
            } else {
                let x = f.sx(l.value);
                c.dashed((x, f.top), (x, f.bottom), ORANGE, 2.0, 8.0);
                c.text(
                    (x + 6.0, f.top + 12.0),
                    &l.short_label(),
                    12.0,
                    Anchor::Start,
                    ORANGE,
                    false,
                );
            }
        }
        let order = [
            PointClass::OtherSearch,
            PointClass::Infeasible,
            PointClass::Feasible,
        ];
        for class in order {
            for p in self.points.iter().filter(|p| p.class == class) {
                marker(c, (f.sx(p.x), f.sy(p.y)), class, p.predicted);
            }
        }
        let mut front: Vec<&ScatterPoint> = self
            .points
            .iter()
            .filter(|p| p.class == PointClass::Front)
            .collect();
        front.sort_by(|a, b| a.x.total_cmp(&b.x));
        if front.len() > 1 {
            let line: Vec<(f64, f64)> = front.iter().map(|p| (f.sx(p.x), f.sy(p.y))).collect();
            c.polyline(&line, RED, 1.5);
        }
        for p in &front {
            marker(c, (f.sx(p.x), f.sy(p.y)), PointClass::Front, p.predicted);
        }
        // Re-measured figures of predicted points, joined to the prediction.
        for p in &self.points {
            if let (true, Some(m)) = (p.predicted, p.measured_x) {
                let (a, b) = ((f.sx(p.x), f.sy(p.y)), (f.sx(m), f.sy(p.y)));
                c.dashed(a, b, DARK, 1.0, 3.0);
                diamond(c, b, 5.0, BLACK);
            }
        }
        // Picks: ringed and labelled where the label covers no other
        // label, no point and stays inside the frame (first fit among
        // growing offsets in four directions).
        let markers: Vec<(f64, f64)> = self.points.iter().map(|p| (f.sx(p.x), f.sy(p.y))).collect();
        let mut placed: Vec<[f64; 4]> = Vec::new();
        let mut picks: Vec<&PickLabel> = self.picks.iter().collect();
        picks.sort_by(|a, b| b.y.total_cmp(&a.y));
        for p in picks {
            let at = (f.sx(p.x), f.sy(p.y));
            c.circle(at, 10.0, None, Some(BLACK));
            let w = 7.4 * p.text.chars().count() as f64;
            let h = 16.0;
            let box_at = |end: (f64, f64), right: bool| {
                let x0 = if right { end.0 + 3.0 } else { end.0 - 3.0 - w };
                [x0, end.1 - h / 2.0, x0 + w, end.1 + h / 2.0]
            };
            let free = |b: &[f64; 4]| {
                b[0] >= f.left + 2.0
                    && b[2] <= f.right - 2.0
                    && b[1] >= f.top + 2.0
                    && b[3] <= f.bottom - 2.0
                    && placed
                        .iter()
                        .all(|q| b[2] < q[0] || b[0] > q[2] || b[3] < q[1] || b[1] > q[3])
                    && markers.iter().all(|m| {
                        m.0 < b[0] - 6.0 || m.0 > b[2] + 6.0 || m.1 < b[1] - 6.0 || m.1 > b[3] + 6.0
                    })
            };
            let mut candidates = Vec::new();
            for dist in [28.0, 48.0, 72.0, 100.0, 140.0] {
                for (dx, dy) in [(1.0, -1.0), (1.0, 1.0), (-1.0, -1.0), (-1.0, 1.0)] {
                    let end = (at.0 + dx * dist, at.1 + dy * dist * 0.7);
                    candidates.push((end, dx > 0.0));
                }
            }
            let (end, right) = candidates
                .iter()
                .copied()
                .find(|(e, r)| free(&box_at(*e, *r)))
                .unwrap_or_else(|| {
                    // Nowhere free: the nearest spot inside the frame.
                    candidates
                        .iter()
                        .copied()
                        .find(|(e, r)| {
                            let b = box_at(*e, *r);
                            b[0] >= f.left && b[2] <= f.right && b[1] >= f.top && b[3] <= f.bottom
                        })
                        .unwrap_or(candidates[0])
                });
            placed.push(box_at(end, right));
            let start = (
                at.0 + (end.0 - at.0).signum() * 7.0,
                at.1 + (end.1 - at.1).signum() * 7.0,
            );
            c.polyline(&[start, end], BLACK, 1.0);
            c.text(
                (end.0 + if right { 3.0 } else { -3.0 }, end.1),
                &p.text,
                13.0,
                if right { Anchor::Start } else { Anchor::End },
                BLACK,
                false,
            );
        }
        self.legend(c, f.right + 22.0, f.top + 10.0);
    }

    fn legend(&self, c: &mut dyn Canvas, x: f64, mut y: f64) {
        let has = |class: PointClass| self.points.iter().any(|p| p.class == class);
        let predicted = self.points.iter().any(|p| p.predicted);
        let mut row = |c: &mut dyn Canvas, draw: &LegendMarker, text: &str| {
            draw(c, (x + 8.0, y));
            c.text((x + 24.0, y), text, 12.0, Anchor::Start, BLACK, false);
            y += 22.0;
        };
        if has(PointClass::Front) {
            row(
                c,
                &|c, p| marker(c, p, PointClass::Front, false),
                "Pareto front (feasible)",
            );
        }
        if has(PointClass::Feasible) {
            row(
                c,
                &|c, p| marker(c, p, PointClass::Feasible, false),
                "feasible, dominated",
            );
        }
        if has(PointClass::Infeasible) {
            row(
                c,
                &|c, p| marker(c, p, PointClass::Infeasible, false),
                "infeasible (breaks a constraint)",
            );
        }
        if has(PointClass::OtherSearch) {
            let label = self.other_label.clone();
            row(
                c,
                &|c, p| marker(c, p, PointClass::OtherSearch, false),
                &label,
            );
        }
        for l in &self.lines {
            // Wrapped at the explanation in brackets: the legend is narrow.
            let (first, rest) = match l.label.split_once(" (") {
                Some((a, b)) => (a.to_owned(), Some(format!("({b}"))),
                None => (l.label.clone(), None),
            };
            row(
                c,
                &|c, p| c.dashed((p.0 - 8.0, p.1), (p.0 + 8.0, p.1), ORANGE, 2.0, 4.0),
                &first,
            );
            if let Some(rest) = rest {
                row(c, &|_, _| {}, &rest);
            }
        }
        if predicted {
            row(
                c,
                &|c, p| c.circle(p, 5.0, Some(Rgb(255, 255, 255)), Some(RED)),
                "predicted energy (hollow)",
            );
            if self.points.iter().any(|p| p.measured_x.is_some()) {
                row(c, &|c, p| diamond(c, p, 5.0, BLACK), "re-measured energy");
            }
        }
        if !self.picks.is_empty() {
            row(
                c,
                &|c, p| c.circle(p, 8.0, None, Some(BLACK)),
                "pick (labelled)",
            );
        }
    }
}

impl PlotFiles for ParetoPlot {
    fn svg(&self) -> String {
        let mut c = SvgCanvas::new(PARETO_W, PARETO_H);
        self.draw(&mut c);
        c.finish()
    }

    fn png(&self, path: &Path) -> Result<bool, String> {
        let mut c = PngCanvas::new(path, PARETO_W as u32, PARETO_H as u32)?;
        self.draw(&mut c);
        c.finish()
    }
}

/// One search's progress, as a series of the progress plot.
#[derive(Debug, Clone)]
pub(crate) struct ProgressSeries {
    pub(crate) label: String,
    pub(crate) points: Vec<ProgressPoint>,
}

/// The progress plot.
#[derive(Debug, Clone)]
pub(crate) struct ProgressPlot {
    pub(crate) series: Vec<ProgressSeries>,
    /// Weakest provenance of the energy spent, for the axis label.
    pub(crate) energy_provenance: Option<FigureProvenance>,
}

const PROGRESS_W: f64 = 980.0;
const PROGRESS_H: f64 = 680.0;
const SERIES_COLORS: [Rgb; 4] = [RED, GREEN, BLUE, ORANGE];

impl ProgressPlot {
    /// `None` when no series has a point.
    pub(crate) fn of_progress(
        series: Vec<ProgressSeries>,
        energy_provenance: Option<FigureProvenance>,
    ) -> Option<ProgressPlot> {
        series
            .iter()
            .any(|s| !s.points.is_empty())
            .then_some(ProgressPlot {
                series,
                energy_provenance,
            })
    }

    fn draw(&self, c: &mut dyn Canvas) {
        let x_max = self
            .series
            .iter()
            .flat_map(|s| s.points.iter().map(|p| p.cumulative_search_energy_j))
            .fold(0.0f64, f64::max);
        let (x0, x1) = (0.0, if x_max > 0.0 { x_max * 1.04 } else { 1.0 });
        c.text(
            ((95.0 + PROGRESS_W - 265.0) / 2.0, 22.0),
            "Search progress against the energy it spent",
            16.0,
            Anchor::Middle,
            BLACK,
            false,
        );
        type Pick = fn(&ProgressPoint) -> Option<f64>;
        let panels: [(&str, Pick, f64, f64); 2] = [
            ("hypervolume of the front", |p| p.hypervolume, 45.0, 315.0),
            (
                "least feasible J / 1000 predictions",
                |p| p.best_feasible_energy_j_per_1k,
                365.0,
                PROGRESS_H - 65.0,
            ),
        ];
        for (k, (label, get, top, bottom)) in panels.into_iter().enumerate() {
            let vals: Vec<f64> = self
                .series
                .iter()
                .flat_map(|s| s.points.iter().filter_map(get))
                .filter(|v| v.is_finite())
                .collect();
            let (lo, hi) = vals
                .iter()
                .fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), v| {
                    (a.min(*v), b.max(*v))
                });
            let (y0, y1) = if vals.is_empty() {
                (0.0, 1.0)
            } else {
                padded(lo, hi)
            };
            let f = Frame {
                left: 95.0,
                top,
                right: PROGRESS_W - 265.0,
                bottom,
                x0,
                x1,
                y0,
                y1,
                x_log: false,
            };
            let x_label = format!(
                "energy spent by the search so far (J) [{}]",
                self.energy_provenance
                    .map_or("provenance unknown", FigureProvenance::label)
            );
            f.axes(c, (k == 1).then_some(x_label.as_str()), label);
            if vals.is_empty() {
                c.text(
                    ((f.left + f.right) / 2.0, (f.top + f.bottom) / 2.0),
                    if k == 0 {
                        "no hypervolume (an objective has no reference point)"
                    } else {
                        "no feasible trial with an inference energy"
                    },
                    13.0,
                    Anchor::Middle,
                    DARK,
                    false,
                );
            }
            for (s, color) in self.series.iter().zip(SERIES_COLORS.iter().cycle()) {
                let mut line: Vec<(f64, f64)> = Vec::new();
                let mut last: Option<f64> = None;
                for p in &s.points {
                    let x = f.sx(p.cumulative_search_energy_j);
                    if let Some(v) = get(p).filter(|v| v.is_finite()) {
                        if let Some(prev) = last {
                            line.push((x, f.sy(prev)));
                        }
                        line.push((x, f.sy(v)));
                        last = Some(v);
                    }
                }
                if let (Some(v), Some(end)) = (last, s.points.last()) {
                    line.push((f.sx(end.cumulative_search_energy_j), f.sy(v)));
                }
                if line.len() > 1 {
                    c.polyline(&line, *color, 2.0);
                }
                for p in &s.points {
                    if let Some(v) = get(p).filter(|v| v.is_finite()) {
                        c.circle(
                            (f.sx(p.cumulative_search_energy_j), f.sy(v)),
                            2.5,
                            Some(*color),
                            None,
                        );
                    }
                }
            }
        }
        let (x, mut y) = (PROGRESS_W - 243.0, 55.0);
        for (s, color) in self.series.iter().zip(SERIES_COLORS.iter().cycle()) {
            c.polyline(&[(x, y), (x + 18.0, y)], *color, 3.0);
            let last = s.points.last();
            c.text((x + 26.0, y), &s.label, 12.0, Anchor::Start, BLACK, false);
            if let Some(l) = last {
                c.text(
                    (x + 26.0, y + 16.0),
                    &format!(
                        "{} trials, {:.1} J",
                        l.completed, l.cumulative_search_energy_j
                    ),
                    11.0,
                    Anchor::Start,
                    DARK,
                    false,
                );
            }
            y += 40.0;
        }
    }
}

impl PlotFiles for ProgressPlot {
    fn svg(&self) -> String {
        let mut c = SvgCanvas::new(PROGRESS_W, PROGRESS_H);
        self.draw(&mut c);
        c.finish()
    }

    fn png(&self, path: &Path) -> Result<bool, String> {
        let mut c = PngCanvas::new(path, PROGRESS_W as u32, PROGRESS_H as u32)?;
        self.draw(&mut c);
        c.finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ticks_are_round_and_cover_the_range() {
        let t = nice_ticks(0.0, 1.0, 5);
        assert_eq!(t.len(), 6, "{t:?}");
        assert!(t
            .iter()
            .zip([0.0, 0.2, 0.4, 0.6, 0.8, 1.0])
            .all(|(a, b)| (a - b).abs() < 1e-12));
        let t = nice_ticks(0.8123, 0.9377, 6);
        assert!(t.iter().all(|v| (0.8123..=0.9377).contains(v)), "{t:?}");
        assert!(t.len() >= 4 && t.len() <= 8, "{t:?}");
        assert_eq!(nice_ticks(3.0, 3.0, 5), vec![3.0]);
        assert_eq!(tick_label(0.825, 0.025), "0.825");
    }
}
