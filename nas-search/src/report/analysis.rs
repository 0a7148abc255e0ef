//! What a report says, computed from the trials: the summary, the chosen
//! architectures, the decision and its payback, the accuracy floors of the
//! constraints, and the search's progress against the energy it spent.

use super::{
    ChosenArchitecture, ConstraintLine, Decision, DecisionRule, FrontEntry, PaybackMissing,
    PredictedMeasured, ProgressPoint, ReportSummary, SearchEnergy,
};
use crate::metric::MetricRegistry;
use crate::objective::{Bound, Direction, Metrics, ObjectiveSet};
use crate::payback::{
    metric, most_accurate, payback, search_energy_figure, Candidate, PaybackReference,
    PaybackSettings,
};
use crate::runner::{front_indices, trials_hypervolume};
use crate::strategy::FULL_FIDELITY;
use crate::study::{StudySpec, TrialRecord, TrialStatus};
use shared::Provenance;

/// Whether a trial is finished at full fidelity (the only trials on a
/// front, in a plot or picked).
pub(crate) fn full_and_finished(t: &TrialRecord) -> bool {
    t.status == TrialStatus::Finished && (t.fidelity - FULL_FIDELITY).abs() < 1e-9
}

/// Every (trial, metric) where a measured metric and its prediction (as
/// `metrics` declares it) are both known, in trial order.
pub fn predicted_vs_measured(
    trials: &[TrialRecord],
    metrics: &MetricRegistry,
) -> Vec<PredictedMeasured> {
    let mut out = Vec::new();
    for t in trials.iter().filter(|t| t.status == TrialStatus::Finished) {
        let Some(m) = &t.metrics else { continue };
        for (name, &predicted) in m {
            let Some(info) = metrics.get(name).filter(|i| i.is_value()) else {
                continue;
            };
            let Some(measured_name) = info.predicts() else {
                continue;
            };
            if let Some(&measured) = m.get(measured_name) {
                out.push(PredictedMeasured {
                    number: t.number,
                    metric: measured_name.to_owned(),
                    predicted_metric: name.clone(),
                    predicted,
                    measured,
                    error_pct: (measured != 0.0).then(|| (predicted - measured) / measured * 100.0),
                });
            }
        }
    }
    out
}

/// Summarises trials of a study, with the payback of its decision measured
/// against its own most accurate trial.
pub fn summarize(spec: &StudySpec, trials: &[TrialRecord]) -> ReportSummary {
    summarize_with(spec, trials, &PaybackSettings::default())
}

/// Summarises trials of a study; the decision's payback follows `settings`
/// (against the user's baseline when given, else against the study's most
/// accurate trial).
pub fn summarize_with(
    spec: &StudySpec,
    trials: &[TrialRecord],
    settings: &PaybackSettings,
) -> ReportSummary {
    let objectives = &spec.objectives;
    let front_idx = front_indices(trials, objectives);
    let front: Vec<FrontEntry> = front_idx.iter().map(|&i| entry(&trials[i])).collect();
    let count = |s: TrialStatus| trials.iter().filter(|t| t.status == s).count();
    let overheads: Vec<f64> = trials
        .iter()
        .filter_map(|t| t.overhead_ns)
        .map(|ns| ns as f64 / 1e6)
        .collect();
    let chosen = choose(&front, objectives);
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
        decision: decide(objectives, &spec.metrics, trials, &front_idx, settings),
        floors: accuracy_floors(objectives, trials),
        chosen,
        front,
        hypervolume: trials_hypervolume(trials, objectives),
        search_energy: search_energy(trials),
        carbon: settings.search_carbon.clone(),
        mean_overhead_ms: (!overheads.is_empty())
            .then(|| overheads.iter().sum::<f64>() / overheads.len() as f64),
        predicted_vs_measured: predicted_vs_measured(trials, &spec.metrics),
        undeclared_metrics: spec.metrics.undeclared(
            trials
                .iter()
                .filter_map(|t| t.metrics.as_ref())
                .flat_map(|m| m.keys().map(String::as_str)),
        ),
        progress: search_progress(objectives, &spec.metrics, trials),
    }
}

pub(crate) fn entry(t: &TrialRecord) -> FrontEntry {
    FrontEntry {
        number: t.number,
        config: t.config.clone(),
        metrics: t.metrics.clone().unwrap_or_default(),
        provenance: t.provenance,
        tag: t.tag.clone(),
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

/// The inference-energy objective of a set: a minimised objective on the
/// measured inference energy or on its prediction (as `metrics` declares
/// it).
pub(crate) fn energy_objective<'a>(
    objectives: &'a ObjectiveSet,
    metrics: &MetricRegistry,
) -> Option<&'a str> {
    let predicted = metrics.prediction_of(metric::INFERENCE_ENERGY_J_PER_1K);
    objectives
        .objectives
        .iter()
        .find(|o| {
            o.direction == Direction::Minimize
                && (o.name == metric::INFERENCE_ENERGY_J_PER_1K
                    || predicted.is_some_and(|p| p.name == o.name))
        })
        .map(|o| o.name.as_str())
}

/// The accuracy objective: the first maximised one.
pub(crate) fn accuracy_objective(objectives: &ObjectiveSet) -> Option<&str> {
    objectives
        .objectives
        .iter()
        .find(|o| o.direction == Direction::Maximize)
        .map(|o| o.name.as_str())
}

/// Which network to deploy: the front member with the least inference
/// energy (every front member meets the constraints, so this is the
/// thriftiest network accurate enough), or the most accurate one when the
/// study has no energy objective; then its payback.
pub fn decide(
    objectives: &ObjectiveSet,
    metrics: &MetricRegistry,
    trials: &[TrialRecord],
    front_idx: &[usize],
    settings: &PaybackSettings,
) -> Option<Decision> {
    let front: Vec<&TrialRecord> = front_idx.iter().map(|&i| &trials[i]).collect();
    let value = |t: &TrialRecord, name: &str| {
        t.metrics
            .as_ref()
            .and_then(|m| m.get(name).copied())
            .filter(|v| v.is_finite())
    };
    let (rule, chosen) = match energy_objective(objectives, metrics) {
        Some(e) => (
            DecisionRule::LeastEnergyWithinConstraints,
            front
                .iter()
                .copied()
                .filter(|t| value(t, e).is_some())
                .min_by(|a, b| {
                    let (x, y) = (value(a, e).unwrap_or(0.0), value(b, e).unwrap_or(0.0));
                    x.total_cmp(&y).then(a.number.cmp(&b.number))
                })?,
        ),
        None => {
            let a = accuracy_objective(objectives)?;
            (
                DecisionRule::MostAccurate,
                front
                    .iter()
                    .copied()
                    .filter(|t| value(t, a).is_some())
                    .max_by(|x, y| {
                        let (p, q) = (value(x, a).unwrap_or(0.0), value(y, a).unwrap_or(0.0));
                        p.total_cmp(&q).then(y.number.cmp(&x.number))
                    })?,
            )
        }
    };
    let candidate = Candidate::of_trial(chosen, metrics);
    let reference = match &settings.baseline {
        Some(b) => Some(b.reference()),
        None => most_accurate(trials, metrics).map(PaybackReference::MostAccurateInStudy),
    };
    let spent = search_energy_figure(trials);
    let (payback, missing) = match (&candidate, reference, spent) {
        (None, _, _) => (None, Some(PaybackMissing::NoInferenceEnergy)),
        (Some(_), None, _) => (None, Some(PaybackMissing::NoReference)),
        (Some(_), Some(_), None) => (None, Some(PaybackMissing::NoSearchEnergy)),
        (Some(c), Some(r), Some(s)) => (
            Some(payback(
                s,
                c.clone(),
                r,
                settings.predictions_per_day,
                settings.carbon.clone(),
            )),
            None,
        ),
    };
    Some(Decision {
        rule,
        deploy: entry(chosen),
        accuracy: accuracy_objective(objectives).and_then(|a| value(chosen, a)),
        candidate,
        payback,
        payback_missing: missing,
    })
}

/// The thresholds of the constraints, resolved against the full-fidelity
/// finished trials (a relative bound `≥ 0.98 × best` becomes a number).
pub fn accuracy_floors(objectives: &ObjectiveSet, trials: &[TrialRecord]) -> Vec<ConstraintLine> {
    let values = |name: &str| -> Vec<f64> {
        trials
            .iter()
            .filter(|t| full_and_finished(t))
            .filter_map(|t| t.metrics.as_ref()?.get(name).copied())
            .filter(|v| v.is_finite())
            .collect()
    };
    objectives
        .constraints
        .iter()
        .filter_map(|c| {
            let v = values(&c.metric);
            let (value, at_least) = match c.bound {
                Bound::AtLeast(x) => (x, true),
                Bound::AtMost(x) => (x, false),
                Bound::AtLeastFractionOfBest(f) => {
                    (f * v.iter().copied().fold(f64::NAN, f64::max), true)
                }
                Bound::AtMostFactorOfBest(f) => {
                    (f * v.iter().copied().fold(f64::NAN, f64::min), false)
                }
            };
            value.is_finite().then(|| ConstraintLine {
                metric: c.metric.clone(),
                value,
                at_least,
                bound: c.bound.clone(),
            })
        })
        .collect()
}

/// The search's progress in the order results were committed: after each
/// trial, the energy spent so far (every trial that reported energy,
/// failed and low-fidelity ones included: they cost energy too), the
/// hypervolume of the front so far and its least inference energy.
pub fn search_progress(
    objectives: &ObjectiveSet,
    metrics: &MetricRegistry,
    trials: &[TrialRecord],
) -> Vec<ProgressPoint> {
    let mut order: Vec<&TrialRecord> = trials
        .iter()
        .filter(|t| matches!(t.status, TrialStatus::Finished | TrialStatus::Failed))
        .collect();
    order.sort_by_key(|t| (t.finish_seq.unwrap_or(u64::MAX), t.number));
    let energy = energy_objective(objectives, metrics);
    let mut spent = 0.0;
    let mut seen: Vec<TrialRecord> = Vec::with_capacity(order.len());
    let mut out = Vec::with_capacity(order.len());
    for (k, t) in order.into_iter().enumerate() {
        spent += t.energy_spent_j.filter(|e| e.is_finite()).unwrap_or(0.0);
        seen.push(t.clone());
        let front = front_indices(&seen, objectives);
        let best_energy = energy.and_then(|e| {
            front
                .iter()
                .filter_map(|&i| seen[i].metrics.as_ref()?.get(e).copied())
                .filter(|v| v.is_finite())
                .fold(None, |acc: Option<f64>, v| {
                    Some(acc.map_or(v, |a| a.min(v)))
                })
        });
        out.push(ProgressPoint {
            completed: k + 1,
            trial: t.number,
            cumulative_search_energy_j: spent,
            hypervolume: trials_hypervolume(&seen, objectives),
            best_feasible_energy_j_per_1k: best_energy,
        });
    }
    out
}

/// A copy of `objectives` where an objective without a reference point
/// gets one from `all` (its worst value plus 10% of the range) and an
/// ideal (its best), so hypervolumes can be reported and compared over the
/// same trials.
pub fn with_derived_references(objectives: &ObjectiveSet, all: &[&Metrics]) -> ObjectiveSet {
    let mut out = objectives.clone();
    for o in &mut out.objectives {
        if o.reference.is_some() {
            continue;
        }
        let vals: Vec<f64> = all
            .iter()
            .filter_map(|m| m.get(&o.name).copied())
            .filter(|v| v.is_finite())
            .collect();
        let (Some(lo), Some(hi)) = (
            vals.iter().copied().reduce(f64::min),
            vals.iter().copied().reduce(f64::max),
        ) else {
            continue;
        };
        let margin = 0.1 * (hi - lo).max(1e-12);
        let (best, worst) = match o.direction {
            Direction::Minimize => (lo, hi + margin),
            Direction::Maximize => (hi, lo - margin),
        };
        o.reference = Some(worst);
        o.ideal.get_or_insert(best);
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
