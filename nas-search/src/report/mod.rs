//! Reports people can use. `summary.md` opens with the decision (which
//! network to deploy, its accuracy and inference energy, whether the search
//! pays for itself), then the detail; beside it the Pareto front and all
//! trials as CSV and JSON, a JSON summary, a Pareto plot and a progress
//! plot, each as SVG and PNG.
//!
//! Map of the module, one file per job:
//! - `analysis`: what the report says (summary, picks, decision and its
//!   payback, constraint thresholds, progress against energy spent);
//! - `csv`: trials as CSV;
//! - `plot`: the two plots laid out once, in pixels, on a `Canvas`;
//! - `canvas`: the SVG canvas (text left to the viewer's fonts) and the PNG
//!   canvas (plotters' bitmap backend), and the font the PNG needs;
//! - `markdown`: `summary.md`.
//!
//! The PNG's text needs a TrueType font: the first of `$NAS_SEARCH_FONT`,
//! common DejaVu/Liberation/FreeFont paths, or any `.ttf` under
//! `/usr/share/fonts` is used. A fresh Debian machine has none until
//! `fonts-dejavu-core` is installed; the PNGs are then drawn without text
//! (points and lines only), the SVGs keep theirs, and the summary says so.

mod analysis;
mod canvas;
mod csv;
mod markdown;
mod plot;

pub use analysis::{
    accuracy_floors, choose, decide, predicted_vs_measured, search_energy, search_progress,
    summarize, summarize_with, with_derived_references,
};
pub use csv::trials_csv;
pub(crate) use markdown::{carbon_lines, decision_lines, figure, payback_lines};
pub(crate) use plot::{
    ParetoPlot, PickLabel, PlotFiles, PointClass, ProgressPlot, ProgressSeries, ScatterPoint,
    ThresholdLine,
};

use crate::objective::{Bound, Metrics};
use crate::payback::{Candidate, Payback, PaybackSettings};
use crate::runner::front_indices;
use crate::space::Config;
use crate::study::{Study, StudyError, StudyLocation, StudySpec, TrialRecord};
use serde::Serialize;
use shared::Provenance;
use std::path::{Path, PathBuf};

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
    /// The trial's tag (what proposed it: a bracket, `oneshot-pick`, …).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tag: Option<String>,
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

/// How the network to deploy was chosen.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum DecisionRule {
    /// The front member with the least inference energy: every front
    /// member meets the constraints (the accuracy floor).
    LeastEnergyWithinConstraints,
    /// The most accurate front member (the study has no energy objective).
    MostAccurate,
}

/// Why a decision has no payback.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum PaybackMissing {
    /// The picked trial has no inference energy, measured or predicted.
    NoInferenceEnergy,
    /// No trial to compare with (no accurate trial with an inference
    /// energy) and no baseline given.
    NoReference,
    /// No trial reported the energy it spent.
    NoSearchEnergy,
}

impl PaybackMissing {
    /// Why, in words.
    pub fn explain(self) -> &'static str {
        match self {
            PaybackMissing::NoInferenceEnergy => {
                "the picked trial has no inference energy, measured or predicted"
            }
            PaybackMissing::NoReference => {
                "nothing to compare with: no trial with accuracy and inference energy, and no baseline given"
            }
            PaybackMissing::NoSearchEnergy => "no trial reported the energy it spent",
        }
    }
}

/// Which network to deploy, and whether the search paid for itself.
#[derive(Debug, Clone, Serialize)]
pub struct Decision {
    /// How it was chosen.
    pub rule: DecisionRule,
    /// The network.
    pub deploy: FrontEntry,
    /// Its accuracy (the study's accuracy objective).
    pub accuracy: Option<f64>,
    /// It as a payback candidate (its inference energy with provenance).
    pub candidate: Option<Candidate>,
    /// The payback of the search that found it.
    pub payback: Option<Payback>,
    /// Why there is no payback, when there is none.
    pub payback_missing: Option<PaybackMissing>,
}

/// The threshold of a constraint, resolved against the trials (drawn as a
/// line on the Pareto plot).
#[derive(Debug, Clone, Serialize)]
pub struct ConstraintLine {
    /// The constrained metric.
    pub metric: String,
    /// The threshold.
    pub value: f64,
    /// `metric >= value` (a floor) rather than `metric <= value`.
    pub at_least: bool,
    /// The bound as declared.
    pub bound: Bound,
}

/// The search after one more trial completed.
#[derive(Debug, Clone, Serialize)]
pub struct ProgressPoint {
    /// Trials completed (finished or failed) so far.
    pub completed: usize,
    /// The trial that just completed.
    pub trial: u64,
    /// Energy spent by the search so far, joules.
    pub cumulative_search_energy_j: f64,
    /// Hypervolume of the front so far (`None` without reference points).
    pub hypervolume: Option<f64>,
    /// Least inference energy on the front so far (`None` without an
    /// energy objective or a feasible trial).
    pub best_feasible_energy_j_per_1k: Option<f64>,
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
    /// Which network to deploy and the search's payback (`None` with no
    /// feasible trial).
    pub decision: Option<Decision>,
    /// The constraints' thresholds.
    pub floors: Vec<ConstraintLine>,
    /// The Pareto front (feasible, full fidelity).
    pub front: Vec<FrontEntry>,
    /// Hypervolume of the front (`None` without reference points).
    pub hypervolume: Option<f64>,
    /// Architectures picked from the front.
    pub chosen: Vec<ChosenArchitecture>,
    /// Energy spent by the search.
    pub search_energy: SearchEnergy,
    /// The search's carbon, when an intensity source was given (`None`:
    /// no carbon figures; there is no default intensity).
    pub carbon: Option<crate::footprint::SearchCarbon>,
    /// Mean engine time per trial outside the evaluator, milliseconds.
    pub mean_overhead_ms: Option<f64>,
    /// Trials holding both a predicted figure and the measured one it
    /// predicts (as the study's metric registry declares), side by side.
    pub predicted_vs_measured: Vec<PredictedMeasured>,
    /// Metrics the trials report that the study's registry does not
    /// declare (their unit, direction and origin are unknown; a study
    /// written before registries declares none).
    pub undeclared_metrics: Vec<String>,
    /// Hypervolume and least feasible energy against energy spent.
    pub progress: Vec<ProgressPoint>,
}

impl ReportSummary {
    /// The decision and its payback as lines to print (Markdown emphasis
    /// and bullets removed).
    pub fn decision_text(&self) -> Vec<String> {
        let Some(d) = &self.decision else {
            return vec!["decision: no network meets the constraints".into()];
        };
        let floor = self.floors.first().map(|f| {
            format!(
                "{} {} {}",
                f.metric,
                if f.at_least { ">=" } else { "<=" },
                tick(f.value)
            )
        });
        decision_lines(d, floor.as_deref())
            .into_iter()
            .filter(|l| !l.is_empty())
            .map(|l| {
                let l = l.replace("**", "");
                match l.strip_prefix("- ") {
                    Some(rest) => format!("  {rest}"),
                    None => l,
                }
            })
            .collect()
    }
}

/// A predicted figure next to the measurement of the same thing.
#[derive(Debug, Clone, Serialize)]
pub struct PredictedMeasured {
    /// Trial number.
    pub number: u64,
    /// The measured metric.
    pub metric: String,
    /// The metric predicting it (per the study's registry).
    pub predicted_metric: String,
    /// Predicted value.
    pub predicted: f64,
    /// Measured value.
    pub measured: f64,
    /// (predicted − measured) / measured, percent (`None` if measured is 0).
    pub error_pct: Option<f64>,
}

/// Files written by [`write_report`].
#[derive(Debug, Clone, Serialize)]
pub struct ReportFiles {
    /// Every file written.
    pub files: Vec<PathBuf>,
    /// Whether the PNGs carry text (a font was found).
    pub png_has_text: bool,
}

/// Writes the full report of the study in `study_file` into `out_dir`
/// (created if missing). Returns the summary and the files written.
pub fn write_report(
    study_file: impl Into<StudyLocation>,
    out_dir: &Path,
) -> Result<(ReportSummary, ReportFiles), ReportError> {
    let study_file: StudyLocation = study_file.into();
    let mut study = Study::open_existing(&study_file)?;
    let trials = study.trials()?;
    let spec = study.spec().clone();
    write_report_for(&spec, &trials, study_file, out_dir)
}

/// Writes a report for trials already loaded (payback against the study's
/// own most accurate trial, no rate, no carbon).
pub fn write_report_for(
    spec: &StudySpec,
    trials: &[TrialRecord],
    study_file: impl Into<StudyLocation>,
    out_dir: &Path,
) -> Result<(ReportSummary, ReportFiles), ReportError> {
    write_report_with(
        spec,
        trials,
        study_file,
        out_dir,
        &PaybackSettings::default(),
    )
}

/// Collects the files a report writes, naming the file in any error.
pub(crate) struct OutDir<'a> {
    dir: &'a Path,
    pub(crate) files: Vec<PathBuf>,
}

impl<'a> OutDir<'a> {
    pub(crate) fn create(dir: &'a Path) -> Result<OutDir<'a>, ReportError> {
        std::fs::create_dir_all(dir).map_err(|e| ReportError::Write {
            file: dir.into(),
            message: e.to_string(),
        })?;
        Ok(OutDir {
            dir,
            files: Vec::new(),
        })
    }

    pub(crate) fn write(&mut self, name: &str, bytes: &[u8]) -> Result<(), ReportError> {
        let path = self.dir.join(name);
        std::fs::write(&path, bytes).map_err(|e| ReportError::Write {
            file: path.clone(),
            message: e.to_string(),
        })?;
        self.files.push(path);
        Ok(())
    }

    /// Writes `<stem>.svg` and `<stem>.png` of a plot; `true` if the PNG
    /// has text.
    pub(crate) fn plot(&mut self, stem: &str, plot: &dyn PlotFiles) -> Result<bool, ReportError> {
        self.write(&format!("{stem}.svg"), plot.svg().as_bytes())?;
        let path = self.dir.join(format!("{stem}.png"));
        let text = plot.png(&path).map_err(|message| ReportError::Write {
            file: path.clone(),
            message,
        })?;
        self.files.push(path);
        Ok(text)
    }
}

/// Writes a report for trials already loaded, the decision's payback
/// following `settings`.
pub fn write_report_with(
    spec: &StudySpec,
    trials: &[TrialRecord],
    study_file: impl Into<StudyLocation>,
    out_dir: &Path,
    settings: &PaybackSettings,
) -> Result<(ReportSummary, ReportFiles), ReportError> {
    let study_file: StudyLocation = study_file.into();
    let mut out = OutDir::create(out_dir)?;
    let summary = summarize_with(spec, trials, settings);
    let front_idx = front_indices(trials, &spec.objectives);
    let front_trials: Vec<TrialRecord> = front_idx.iter().map(|&i| trials[i].clone()).collect();
    out.write("trials.csv", trials_csv(trials).as_bytes())?;
    out.write("front.csv", trials_csv(&front_trials).as_bytes())?;
    out.write("trials.json", to_json(trials).as_bytes())?;
    out.write("front.json", to_json(&front_trials).as_bytes())?;
    out.write("summary.json", to_json(&summary).as_bytes())?;
    let pareto = ParetoPlot::of_study(spec, trials, &summary);
    let progress = ProgressPlot::of_progress(
        vec![ProgressSeries {
            label: "this search".into(),
            points: summary.progress.clone(),
        }],
        crate::payback::search_energy_figure(trials).map(|f| f.provenance),
    );
    let mut png_has_text = true;
    if let Some(p) = &pareto {
        png_has_text &= out.plot("pareto", p)?;
    }
    if let Some(p) = &progress {
        png_has_text &= out.plot("progress", p)?;
    }
    let md = markdown::study_markdown(
        spec,
        &summary,
        &study_file,
        pareto.is_some(),
        progress.is_some(),
        canvas::font_available(),
    );
    out.write("summary.md", md.as_bytes())?;
    Ok((
        summary,
        ReportFiles {
            files: out.files,
            png_has_text,
        },
    ))
}

pub(crate) fn to_json<T: Serialize + ?Sized>(v: &T) -> String {
    serde_json::to_string_pretty(v).unwrap_or_else(|e| format!("{{\"error\": \"{e}\"}}"))
}

/// A number in few characters (scientific outside 1e-3..1e5).
pub(crate) fn tick(v: f64) -> String {
    if v != 0.0 && (v.abs() < 1e-3 || v.abs() >= 1e5) {
        format!("{v:.2e}")
    } else {
        format!("{v:.4}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metric::{MetricInfo, MetricRegistry};
    use crate::objective::{Objective, ObjectiveSet};
    use crate::space::{ParamValue, SearchSpace};
    use crate::study::TrialStatus;

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

    /// A registry whose predicted metrics are named freely: `model_energy`
    /// predicts `energy` (no `predicted_` prefix), and `predicted_time`
    /// is, despite its name, a measured metric of its own.
    fn registry() -> MetricRegistry {
        use crate::objective::Direction::{Maximize, Minimize};
        MetricRegistry::new([
            MetricInfo::measured("acc", "fraction", Maximize),
            MetricInfo::measured("energy", "J", Minimize),
            MetricInfo::predicted("model_energy", "J", Minimize, "energy"),
            MetricInfo::measured("time", "s", Minimize),
            MetricInfo::measured("predicted_time", "s", Minimize),
        ])
        .unwrap()
    }

    #[test]
    fn predicted_figures_are_paired_with_measured_ones_by_the_registry() {
        let mut a = trial(0, 0.9, 5.0);
        let m = a.metrics.as_mut().unwrap();
        m.insert("model_energy".into(), 6.0);
        // Named like a prediction of `time`, declared measured: no pair.
        m.insert("time".into(), 1.0);
        m.insert("predicted_time".into(), 2.0);
        // A prediction without a measurement is not paired.
        let mut b = trial(1, 0.8, 1.0);
        let m = b.metrics.as_mut().unwrap();
        m.remove("energy");
        m.insert("model_energy".into(), 3.0);
        let pairs = predicted_vs_measured(&[a.clone(), b], &registry());
        assert_eq!(pairs.len(), 1, "{pairs:?}");
        assert_eq!(
            (
                pairs[0].number,
                pairs[0].metric.as_str(),
                pairs[0].predicted_metric.as_str()
            ),
            (0, "energy", "model_energy")
        );
        assert!((pairs[0].error_pct.unwrap() - 20.0).abs() < 1e-12);
        // With no registry nothing is paired, whatever the names.
        assert!(predicted_vs_measured(&[a.clone()], &MetricRegistry::default()).is_empty());
        let spec = StudySpec {
            space: SearchSpace::default_tabular(),
            objectives: ObjectiveSet::new(vec![
                Objective::parse("acc:max:ref=0:ideal=1").unwrap(),
                Objective::parse("model_energy:min:ref=10:ideal=0").unwrap(),
            ])
            .unwrap(),
            strategy: "random".into(),
            seed: 3,
            metrics: registry(),
        };
        let dir = tempfile::tempdir().unwrap();
        let (s, _) = write_report_for(&spec, &[a], Path::new("x.db"), dir.path()).unwrap();
        assert_eq!(s.predicted_vs_measured.len(), 1);
        assert!(
            s.undeclared_metrics.is_empty(),
            "{:?}",
            s.undeclared_metrics
        );
        let md = std::fs::read_to_string(dir.path().join("summary.md")).unwrap();
        assert!(md.contains("## Predicted and measured"), "{md}");
        assert!(
            md.contains("| 0 | `energy` | `model_energy` |") && md.contains("+20.0%"),
            "{md}"
        );
        assert!(!md.contains("not declared"), "{md}");
    }

    #[test]
    fn a_metric_the_registry_does_not_declare_is_reported_as_such() {
        let mut a = trial(0, 0.9, 5.0);
        a.metrics.as_mut().unwrap().insert("mystery_j".into(), 4.0);
        let spec = StudySpec {
            space: SearchSpace::default_tabular(),
            objectives: ObjectiveSet::new(vec![
                Objective::parse("acc:max:ref=0:ideal=1").unwrap(),
                Objective::parse("energy:min:ref=10:ideal=0").unwrap(),
            ])
            .unwrap(),
            strategy: "random".into(),
            seed: 3,
            metrics: registry(),
        };
        let dir = tempfile::tempdir().unwrap();
        let (s, _) = write_report_for(&spec, &[a], Path::new("x.db"), dir.path()).unwrap();
        assert_eq!(s.undeclared_metrics, ["mystery_j"]);
        let md = std::fs::read_to_string(dir.path().join("summary.md")).unwrap();
        assert!(
            md.contains("not declared in the study's metric registry")
                && md.contains("`mystery_j`"),
            "{md}"
        );
        let json: serde_json::Value = serde_json::from_str(
            &std::fs::read_to_string(dir.path().join("summary.json")).unwrap(),
        )
        .unwrap();
        assert_eq!(json["undeclared_metrics"][0], "mystery_j");
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
            metrics: registry(),
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
