//! Conventional (accuracy-only) search against energy-aware search: how much
//! inference energy the energy-aware pick saves at (nearly) the accuracy of
//! the conventional pick, and how well FLOPs rank trials by measured energy.

use crate::study::{TrialRecord, TrialStatus};
use serde::Serialize;
use shared::Provenance;

/// Which metrics to compare, and the accuracy tolerance.
#[derive(Debug, Clone)]
pub struct CompareOptions {
    /// Accuracy metric (maximised), e.g. `val_accuracy`.
    pub accuracy_metric: String,
    /// Inference energy metric (minimised), e.g. `inference_energy_j_per_1k`.
    pub energy_metric: String,
    /// FLOPs metric, e.g. `flops`.
    pub flops_metric: String,
    /// The energy-aware pick must reach this fraction of the conventional
    /// pick's accuracy (0.98 in the issue).
    pub accuracy_fraction: f64,
}

impl Default for CompareOptions {
    fn default() -> Self {
        CompareOptions {
            accuracy_metric: "val_accuracy".into(),
            energy_metric: "inference_energy_j_per_1k".into(),
            flops_metric: "flops".into(),
            accuracy_fraction: 0.98,
        }
    }
}

/// A picked trial.
#[derive(Debug, Clone, Serialize)]
pub struct Pick {
    /// Trial number in its study.
    pub number: u64,
    /// Its accuracy.
    pub accuracy: f64,
    /// Its inference energy.
    pub energy: f64,
    /// Provenance of the energy figure.
    pub provenance: Option<Provenance>,
    /// Its configuration, as text.
    pub config: String,
}

/// Result of a comparison.
#[derive(Debug, Clone, Serialize)]
pub struct Comparison {
    /// Most accurate trial of the conventional search.
    pub conventional_pick: Pick,
    /// Least inference energy among energy-aware trials reaching the floor
    /// (`None` when none reaches it: the energy-aware search found nothing
    /// accurate enough, a result in itself).
    pub energy_aware_pick: Option<Pick>,
    /// Most accurate energy-aware trial (to say how far it fell short when
    /// none reaches the floor).
    pub energy_aware_best: Pick,
    /// `accuracy_fraction × conventional accuracy`.
    pub accuracy_floor: f64,
    /// `1 - energy_aware / conventional` inference energy (0.4 = 40% less);
    /// `None` without an energy-aware pick.
    pub inference_energy_reduction: Option<f64>,
    /// Weakest provenance of the two energy figures compared.
    pub energy_provenance: Option<Provenance>,
    /// Spearman rank correlation between FLOPs and measured inference
    /// energy over all finished trials of both studies (`None` if fewer than
    /// 3 trials have both, or one is constant).
    pub spearman_flops_energy: Option<f64>,
    /// Trials in that correlation.
    pub correlated_trials: usize,
}

/// Errors of a comparison.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CompareError {
    /// No finished trial with the accuracy and energy metrics.
    #[error("the {which} study has no finished full-fidelity trial with metrics `{accuracy}` and `{energy}`")]
    NoTrials {
        /// `conventional` or `energy-aware`.
        which: &'static str,
        /// Accuracy metric.
        accuracy: String,
        /// Energy metric.
        energy: String,
    },
}

fn usable<'a>(trials: &'a [TrialRecord], o: &CompareOptions) -> Vec<(&'a TrialRecord, f64, f64)> {
    trials
        .iter()
        .filter(|t| t.status == TrialStatus::Finished && (t.fidelity - 1.0).abs() < 1e-9)
        .filter_map(|t| {
            let m = t.metrics.as_ref()?;
            let a = *m.get(&o.accuracy_metric)?;
            let e = *m.get(&o.energy_metric)?;
            (a.is_finite() && e.is_finite()).then_some((t, a, e))
        })
        .collect()
}

fn pick((t, a, e): (&TrialRecord, f64, f64)) -> Pick {
    Pick {
        number: t.number,
        accuracy: a,
        energy: e,
        provenance: t.provenance,
        config: t.config.to_string(),
    }
}

/// Compares a conventional study's trials with an energy-aware study's.
pub fn compare(
    conventional: &[TrialRecord],
    energy_aware: &[TrialRecord],
    options: &CompareOptions,
) -> Result<Comparison, CompareError> {
    let no_trials = |which| CompareError::NoTrials {
        which,
        accuracy: options.accuracy_metric.clone(),
        energy: options.energy_metric.clone(),
    };
    let conv = usable(conventional, options);
    let aware = usable(energy_aware, options);
    // Most accurate; ties go to the cheaper one.
    let best = conv
        .iter()
        .copied()
        .max_by(|a, b| a.1.total_cmp(&b.1).then(b.2.total_cmp(&a.2)))
        .ok_or_else(|| no_trials("conventional"))?;
    let aware_best = aware
        .iter()
        .copied()
        .max_by(|a, b| a.1.total_cmp(&b.1).then(b.2.total_cmp(&a.2)))
        .ok_or_else(|| no_trials("energy-aware"))?;
    let floor = options.accuracy_fraction * best.1;
    let chosen = aware
        .iter()
        .copied()
        .filter(|x| x.1 >= floor)
        .min_by(|a, b| a.2.total_cmp(&b.2).then(b.1.total_cmp(&a.1)));
    let reduction = chosen.map(|c| {
        if best.2 > 0.0 {
            1.0 - c.2 / best.2
        } else {
            0.0
        }
    });
    let compared = chosen.unwrap_or(aware_best);
    let provenance = match (best.0.provenance, compared.0.provenance) {
        (Some(a), Some(b)) => Some(a.combine(b)),
        (a, b) => a.or(b),
    };
    let mut flops = Vec::new();
    let mut energy = Vec::new();
    for t in conventional.iter().chain(energy_aware) {
        if t.status != TrialStatus::Finished {
            continue;
        }
        let Some(m) = &t.metrics else { continue };
        if let (Some(f), Some(e)) = (m.get(&options.flops_metric), m.get(&options.energy_metric)) {
            if f.is_finite() && e.is_finite() {
                flops.push(*f);
                energy.push(*e);
            }
        }
    }
    Ok(Comparison {
        conventional_pick: pick(best),
        energy_aware_pick: chosen.map(pick),
        energy_aware_best: pick(aware_best),
        accuracy_floor: floor,
        inference_energy_reduction: reduction,
        energy_provenance: provenance,
        spearman_flops_energy: spearman(&flops, &energy),
        correlated_trials: flops.len(),
    })
}

/// Ranks with ties averaged (1-based).
fn ranks(v: &[f64]) -> Vec<f64> {
    let mut order: Vec<usize> = (0..v.len()).collect();
    order.sort_by(|&a, &b| v[a].total_cmp(&v[b]));
    let mut r = vec![0.0; v.len()];
    let mut i = 0;
    while i < order.len() {
        let mut j = i;
        while j + 1 < order.len() && v[order[j + 1]] == v[order[i]] {
            j += 1;
        }
        let avg = (i + j) as f64 / 2.0 + 1.0;
        for &k in &order[i..=j] {
            r[k] = avg;
        }
        i = j + 1;
    }
    r
}

/// Spearman rank correlation (Pearson correlation of tie-averaged ranks).
/// `None` for fewer than 3 pairs or a constant series.
pub fn spearman(x: &[f64], y: &[f64]) -> Option<f64> {
    if x.len() != y.len() || x.len() < 3 {
        return None;
    }
    let (rx, ry) = (ranks(x), ranks(y));
    let n = x.len() as f64;
    let (mx, my) = (rx.iter().sum::<f64>() / n, ry.iter().sum::<f64>() / n);
    let cov: f64 = rx.iter().zip(&ry).map(|(a, b)| (a - mx) * (b - my)).sum();
    let vx: f64 = rx.iter().map(|a| (a - mx).powi(2)).sum();
    let vy: f64 = ry.iter().map(|b| (b - my).powi(2)).sum();
    (vx > 0.0 && vy > 0.0).then(|| cov / (vx * vy).sqrt())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::space::{Config, ParamValue};

    fn t(number: u64, acc: f64, energy: f64, flops: f64) -> TrialRecord {
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
                [
                    ("val_accuracy", acc),
                    ("inference_energy_j_per_1k", energy),
                    ("flops", flops),
                ]
                .into_iter()
                .map(|(k, v)| (k.to_string(), v))
                .collect(),
            ),
            kernel_energy: Vec::new(),
            provenance: Some(Provenance::Measured),
            energy_spent_j: None,
            error: None,
            notes: Vec::new(),
            created_ns: 0,
            started_ns: None,
            finished_ns: None,
            finish_seq: None,
            eval_ns: None,
            overhead_ns: None,
            attempts: 1,
        }
    }

    #[test]
    fn spearman_by_hand() {
        assert_eq!(
            spearman(&[1.0, 2.0, 3.0, 4.0], &[10.0, 20.0, 30.0, 40.0]),
            Some(1.0)
        );
        assert_eq!(spearman(&[1.0, 2.0, 3.0], &[3.0, 2.0, 1.0]), Some(-1.0));
        // Ranks x: 1,2,3,4; y: 2,1,4,3 -> d^2 = 4 -> 1 - 6*4/(4*15) = 0.6.
        let r = spearman(&[1.0, 2.0, 3.0, 4.0], &[2.0, 1.0, 4.0, 3.0]).unwrap();
        assert!((r - 0.6).abs() < 1e-12);
        assert_eq!(ranks(&[5.0, 1.0, 5.0]), vec![2.5, 1.0, 2.5]);
        assert_eq!(spearman(&[1.0, 1.0, 1.0], &[1.0, 2.0, 3.0]), None);
    }

    #[test]
    fn energy_aware_pick_within_two_percent() {
        let conv = vec![t(0, 0.90, 10.0, 100.0), t(1, 0.85, 4.0, 40.0)];
        let aware = vec![
            t(0, 0.885, 3.0, 30.0),
            t(1, 0.80, 1.0, 10.0),
            t(2, 0.95, 9.0, 90.0),
        ];
        let c = compare(&conv, &aware, &CompareOptions::default()).unwrap();
        assert_eq!(c.conventional_pick.number, 0);
        assert!((c.accuracy_floor - 0.882).abs() < 1e-12);
        // 0.80 is below the floor; 0.885 at 3.0 J beats 0.95 at 9.0 J.
        assert_eq!(c.energy_aware_pick.as_ref().unwrap().number, 0);
        assert_eq!(c.energy_aware_best.number, 2);
        assert!((c.inference_energy_reduction.unwrap() - 0.7).abs() < 1e-12);
        assert_eq!(c.spearman_flops_energy, Some(1.0));
        assert_eq!(c.correlated_trials, 5);
        // Nothing accurate enough: no pick and no reduction, but the best
        // energy-aware trial says how far it fell short.
        let none = compare(&conv, &aware[1..2], &CompareOptions::default()).unwrap();
        assert!(none.energy_aware_pick.is_none() && none.inference_energy_reduction.is_none());
        assert_eq!(none.energy_aware_best.accuracy, 0.80);
        assert!(compare(&conv, &[], &CompareOptions::default()).is_err());
    }
}
