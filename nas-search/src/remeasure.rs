//! Re-measuring a study's front: after a search whose cost objective was
//! predicted, evaluate every front member again with an evaluator that
//! measures, and store the measured figures next to the predicted ones in
//! the same trials ([`Study::add_measurement`]).
//!
//! Generic over the figures: [`RemeasureMetrics`] names the measured metric
//! the re-run must report (its prediction is the one the study's metric
//! registry declares) and the metrics copied from the re-run (under a name of the caller's choosing, so a
//! re-run's accuracy does not overwrite the trial's).

use crate::evaluator::Evaluator;
use crate::metric::MetricError;
use crate::objective::{Metrics, ObjectiveSet};
use crate::runner::front_indices;
use crate::study::{Study, StudyError, StudyLocation, TrialRecord};
use serde::Serialize;

/// Which metrics a re-measurement reads and writes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemeasureMetrics {
    /// The measured figure the re-run must report (stored under this
    /// name); its prediction in the trials, reported alongside, is the one
    /// the study's metric registry declares.
    pub measured: String,
    /// Quality of the re-run, reported alongside (e.g. validation accuracy).
    pub quality: String,
    /// (metric of the re-run, name stored in the trial), copied when present.
    pub copied: Vec<(String, String)>,
}

/// One front member re-measured by [`remeasure_front`].
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FrontMeasurement {
    /// Trial number.
    pub number: u64,
    /// Predicted figure.
    pub predicted: Option<f64>,
    /// Measured figure.
    pub measured: f64,
    /// Quality of the re-run (same seed as the trial); `None` when the
    /// trial was re-measured by an earlier run and the figure not stored.
    pub quality: Option<f64>,
    /// Energy the re-run spent.
    pub energy_spent_j: Option<f64>,
}

/// Why a front could not be re-measured.
#[derive(Debug, thiserror::Error)]
pub enum RemeasureError {
    /// The study could not be read or written.
    #[error(transparent)]
    Study(#[from] StudyError),
    /// The study's registry declares no prediction of the measured metric.
    #[error("study {study}: {source}")]
    Metric {
        /// The study.
        study: StudyLocation,
        /// What the registry lacks.
        source: MetricError,
    },
    /// The re-run failed.
    #[error("re-measuring trial {number}: {message}")]
    Evaluation {
        /// Trial number.
        number: u64,
        /// The evaluator's error.
        message: String,
    },
    /// The re-run did not report the measured figure.
    #[error("re-measuring trial {number}: no `{metric}` in the re-run ({notes})")]
    NotMeasured {
        /// Trial number.
        number: u64,
        /// The missing metric.
        metric: String,
        /// The re-run's notes.
        notes: String,
    },
}

/// Evaluates every member of the front of `study_file` under `objectives`
/// again with `measurer` and stores the measured figures in the same
/// trials (the re-run's energy added to what the trial spent). Trials that
/// already carry the measured figure are skipped, so a stopped run
/// continues. `progress(done, total)` after each.
pub fn remeasure_front(
    study_file: impl Into<StudyLocation>,
    objectives: &ObjectiveSet,
    measurer: &dyn Evaluator,
    names: &RemeasureMetrics,
    progress: &dyn Fn(usize, usize),
) -> Result<Vec<FrontMeasurement>, RemeasureError> {
    let study_file: StudyLocation = study_file.into();
    let mut study = Study::open_existing(&study_file)?;
    let predicted_name = study
        .spec()
        .metrics
        .require_prediction_of(&names.measured)
        .map_err(|source| RemeasureError::Metric {
            study: study_file.clone(),
            source,
        })?
        .name
        .clone();
    let trials = study.trials()?;
    let front: Vec<TrialRecord> = front_indices(&trials, objectives)
        .into_iter()
        .map(|i| trials[i].clone())
        .collect();
    let stored_quality = names
        .copied
        .iter()
        .find(|(from, _)| *from == names.quality)
        .map(|(_, to)| to.as_str());
    let mut out = Vec::new();
    for (k, t) in front.iter().enumerate() {
        let m = t.metrics.clone().unwrap_or_default();
        let predicted = m.get(&predicted_name).copied();
        if let Some(&measured) = m.get(&names.measured) {
            out.push(FrontMeasurement {
                number: t.number,
                predicted,
                measured,
                quality: stored_quality.and_then(|q| m.get(q).copied()),
                energy_spent_j: None,
            });
            progress(k + 1, front.len());
            continue;
        }
        let r = measurer
            .evaluate(&t.config, t.fidelity, t.seed)
            .map_err(|e| RemeasureError::Evaluation {
                number: t.number,
                message: e.to_string(),
            })?;
        let Some(&measured) = r.metrics.get(&names.measured) else {
            return Err(RemeasureError::NotMeasured {
                number: t.number,
                metric: names.measured.clone(),
                notes: r.notes.join("; "),
            });
        };
        let mut extra = Metrics::new();
        extra.insert(names.measured.clone(), measured);
        for (from, to) in &names.copied {
            if let Some(&v) = r.metrics.get(from) {
                extra.insert(to.clone(), v);
            }
        }
        let note = format!(
            "front re-measurement: {} measured ({})",
            names.measured,
            r.provenance.map_or("unknown provenance", |p| p.label())
        );
        study.add_measurement(t.number, &extra, r.energy_spent_j, &note)?;
        out.push(FrontMeasurement {
            number: t.number,
            predicted,
            measured,
            quality: r.metrics.get(&names.quality).copied(),
            energy_spent_j: r.energy_spent_j,
        });
        progress(k + 1, front.len());
    }
    Ok(out)
}
