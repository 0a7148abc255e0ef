//! Pre-screening: a strategy wrapper that prices each new candidate with
//! a cheap predictor before it is evaluated and redraws those that cannot
//! join the front cheaply.
//!
//! Generic over what is predicted: a [`CandidatePricer`] gives a
//! candidate's predicted cost, and [`PrescreenMetrics`] names the quality
//! metric and the cost metric of finished trials, whose prediction it
//! finds in the study's metric registry. nas-client plugs in its
//! calibrated energy model (predicted inference energy against validation
//! accuracy).

use crate::metric::{MetricError, MetricRegistry};
use crate::space::Config;
use crate::strategy::{Ask, History, Strategy, FULL_FIDELITY};
use crate::study::{TrialRecord, TrialStatus};
use rand::rngs::StdRng;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

/// How many candidates [`Prescreen`] priced and turned down.
#[derive(Debug, Default)]
pub struct PrescreenCounts {
    /// New candidates priced.
    pub priced: AtomicUsize,
    /// Of those, turned down (redrawn).
    pub rejected: AtomicUsize,
    /// Proposals made although every draw was turned down (the cheapest
    /// draw is taken so the search goes on).
    pub forced: AtomicUsize,
}

/// Pre-screening: prices each *new* candidate of the wrapped strategy
/// before it is trained and redraws those that cannot join the front
/// cheaply.
///
/// The rule: once `warmup` full-fidelity trials have both an accuracy and a
/// predicted inference energy, let R be the most accurate of them. A
/// candidate predicted to cost more than `factor` × R's predicted inference
/// energy could only join the front by being more accurate than every
/// network trained so far; it is turned down and the wrapped strategy asked
/// again (up to `draws` times; if every draw is turned down, the cheapest
/// is trained, so the search never stalls). Promotions and re-evaluations
/// of configurations already in the study are never screened. A candidate
/// the calibration cannot price is not screened either.
///
/// Screening happens inside the study's claim (the study is locked while
/// a strategy proposes), which a prediction's sub-millisecond cost allows.
pub struct Prescreen {
    inner: Box<dyn Strategy>,
    pricer: Box<dyn CandidatePricer>,
    metrics: PrescreenMetrics,
    factor: f64,
    warmup: usize,
    draws: usize,
    counts: Arc<PrescreenCounts>,
}

/// Prices a candidate before it is evaluated: its predicted cost (in the
/// unit of [`PrescreenMetrics::predicted_cost`]'s metric), or `None` when
/// it cannot be priced.
pub trait CandidatePricer: Send {
    /// Predicted cost of `config` at `fidelity`.
    fn predicted_cost(&self, config: &Config, fidelity: f64) -> Option<f64>;
}

/// The metrics [`Prescreen`] reads from finished trials: the quality it
/// ranks by (maximised) and the predicted cost the pricer also predicts
/// (minimised), found as a registry's prediction of a measured cost.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PrescreenMetrics {
    quality: String,
    predicted_cost: String,
}

impl PrescreenMetrics {
    /// Ranks by `quality` against the prediction of the measured metric
    /// `cost` that `metrics` declares; an error naming the metric when
    /// `quality` is undeclared or `cost` has no prediction.
    pub fn resolve(
        metrics: &MetricRegistry,
        quality: &str,
        cost: &str,
    ) -> Result<PrescreenMetrics, MetricError> {
        if metrics.get(quality).is_none() {
            return Err(MetricError::Undeclared {
                name: quality.to_owned(),
            });
        }
        Ok(PrescreenMetrics {
            quality: quality.to_owned(),
            predicted_cost: metrics.require_prediction_of(cost)?.name.clone(),
        })
    }

    /// The quality metric.
    pub fn quality(&self) -> &str {
        &self.quality
    }

    /// The predicted-cost metric.
    pub fn predicted_cost(&self) -> &str {
        &self.predicted_cost
    }
}

impl Prescreen {
    /// Wraps `inner`; `factor` and `warmup` as in the type's doc.
    pub fn new(
        inner: Box<dyn Strategy>,
        pricer: Box<dyn CandidatePricer>,
        metrics: PrescreenMetrics,
        factor: f64,
        warmup: usize,
    ) -> Prescreen {
        Prescreen {
            inner,
            pricer,
            metrics,
            factor,
            warmup,
            draws: 16,
            counts: Arc::default(),
        }
    }

    /// Counters shared with the caller (for the summary).
    pub fn counts(&self) -> Arc<PrescreenCounts> {
        Arc::clone(&self.counts)
    }

    /// Predicted cost of R, the best priced trial,
    /// once there are `warmup` of them.
    fn reference_energy(&self, trials: &[TrialRecord]) -> Option<f64> {
        let priced: Vec<(f64, f64)> = trials
            .iter()
            .filter(|t| {
                t.status == TrialStatus::Finished && (t.fidelity - FULL_FIDELITY).abs() < 1e-9
            })
            .filter_map(|t| {
                let m = t.metrics.as_ref()?;
                Some((
                    *m.get(&self.metrics.quality)?,
                    *m.get(&self.metrics.predicted_cost)?,
                ))
            })
            .collect();
        if priced.len() < self.warmup.max(1) {
            return None;
        }
        priced
            .into_iter()
            .max_by(|a, b| a.0.total_cmp(&b.0).then(b.1.total_cmp(&a.1)))
            .map(|(_, e)| e)
    }
}

impl Strategy for Prescreen {
    fn spec(&self) -> String {
        format!(
            "prescreen:factor={},warmup={}+{}",
            self.factor,
            self.warmup,
            self.inner.spec()
        )
    }

    fn ask(&mut self, history: &History<'_>, rng: &mut StdRng) -> Ask {
        let Some(reference) = self.reference_energy(history.trials) else {
            return self.inner.ask(history, rng);
        };
        let limit = self.factor * reference;
        let seen = history.seen_anywhere();
        let mut cheapest: Option<(f64, Ask)> = None;
        for _ in 0..self.draws {
            let ask = self.inner.ask(history, rng);
            let Ask::Propose(proposal) = &ask else {
                return cheapest.map_or(ask, |(_, a)| a);
            };
            if seen.contains(proposal.config.key().as_str()) {
                return ask;
            }
            let energy = self
                .pricer
                .predicted_cost(&proposal.config, proposal.fidelity);
            let Some(energy) = energy else {
                return ask;
            };
            self.counts.priced.fetch_add(1, Ordering::Relaxed);
            if energy <= limit {
                return ask;
            }
            self.counts.rejected.fetch_add(1, Ordering::Relaxed);
            if cheapest.as_ref().is_none_or(|(e, _)| energy < *e) {
                cheapest = Some((energy, ask));
            }
        }
        self.counts.forced.fetch_add(1, Ordering::Relaxed);
        match cheapest {
            Some((_, ask)) => ask,
            None => self.inner.ask(history, rng),
        }
    }

    fn tell(&mut self, trial: &TrialRecord) {
        self.inner.tell(trial);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::objective::ObjectiveSet;

    fn metrics() -> PrescreenMetrics {
        use crate::metric::{MetricInfo, MetricRegistry};
        use crate::objective::Direction::{Maximize, Minimize};
        let registry = MetricRegistry::new([
            MetricInfo::measured("val_accuracy", "fraction", Maximize),
            MetricInfo::measured("energy", "J", Minimize),
            MetricInfo::predicted("priced_energy", "J", Minimize, "energy"),
        ])
        .unwrap();
        assert!(matches!(
            PrescreenMetrics::resolve(&registry, "val_accuracy", "val_accuracy"),
            Err(MetricError::NoPrediction { .. })
        ));
        assert!(matches!(
            PrescreenMetrics::resolve(&registry, "accuracy", "energy"),
            Err(MetricError::Undeclared { .. })
        ));
        let m = PrescreenMetrics::resolve(&registry, "val_accuracy", "energy").unwrap();
        assert_eq!(m.predicted_cost(), "priced_energy");
        m
    }

    /// A strategy proposing fixed widths in turn.
    struct Cycle(Vec<i64>, usize);

    impl Strategy for Cycle {
        fn spec(&self) -> String {
            "cycle".into()
        }
        fn ask(&mut self, _: &History<'_>, _: &mut StdRng) -> Ask {
            let w = self.0[self.1 % self.0.len()];
            self.1 += 1;
            Ask::Propose(crate::strategy::Proposal {
                config: Config::from_json(&format!(r#"{{"n_layers":1,"width_1":{w}}}"#)).unwrap(),
                fidelity: 1.0,
                tag: None,
            })
        }
    }

    /// Energy = width / 100 J per 1000 rows.
    struct ByWidth;

    impl CandidatePricer for ByWidth {
        fn predicted_cost(&self, config: &Config, _: f64) -> Option<f64> {
            Some(config.get("width_1")?.as_f64()? / 100.0)
        }
    }

    fn finished(number: u64, width: i64, acc: f64) -> TrialRecord {
        let config = Config::from_json(&format!(r#"{{"n_layers":1,"width_1":{width}}}"#)).unwrap();
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
                    ("val_accuracy".to_string(), acc),
                    ("priced_energy".to_string(), width as f64 / 100.0),
                ]
                .into_iter()
                .collect(),
            ),
            kernel_energy: Vec::new(),
            provenance: None,
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

    fn proposed_width(ask: Ask) -> i64 {
        let Ask::Propose(p) = ask else {
            panic!("expected a proposal")
        };
        p.config.get("width_1").unwrap().as_f64().unwrap() as i64
    }

    #[test]
    fn prescreen_redraws_candidates_too_costly_to_join_the_front() {
        use rand::SeedableRng;
        let space = crate::space::SearchSpace::default_tabular();
        let objectives =
            ObjectiveSet::new(vec![
                crate::objective::Objective::parse("val_accuracy:max").unwrap()
            ])
            .unwrap();
        let mut rng = StdRng::seed_from_u64(1);
        fn history<'a>(
            trials: &'a [TrialRecord],
            space: &'a crate::space::SearchSpace,
            objectives: &'a ObjectiveSet,
        ) -> History<'a> {
            History {
                trials,
                space,
                objectives,
            }
        }
        let mut p = Prescreen::new(
            Box::new(Cycle(vec![512, 256, 32], 0)),
            Box::new(ByWidth),
            metrics(),
            1.5,
            2,
        );
        // Before the warm-up, nothing is screened.
        let one = [finished(0, 64, 0.9)];
        assert_eq!(
            proposed_width(p.ask(&history(&one, &space, &objectives), &mut rng)),
            512
        );
        assert_eq!(p.counts().priced.load(Ordering::Relaxed), 0);
        // The most accurate trial (width 64) costs 0.64: anything above
        // 1.5 x 0.64 = 0.96 is redrawn; 32 (0.32) passes.
        let two = [finished(0, 64, 0.9), finished(1, 16, 0.8)];
        let mut p = Prescreen::new(
            Box::new(Cycle(vec![512, 256, 32], 0)),
            Box::new(ByWidth),
            metrics(),
            1.5,
            2,
        );
        assert_eq!(
            proposed_width(p.ask(&history(&two, &space, &objectives), &mut rng)),
            32
        );
        let c = p.counts();
        assert_eq!(c.priced.load(Ordering::Relaxed), 3);
        assert_eq!(c.rejected.load(Ordering::Relaxed), 2);
        // Every draw too costly: the cheapest is taken, and counted.
        let mut p = Prescreen::new(
            Box::new(Cycle(vec![512, 256], 0)),
            Box::new(ByWidth),
            metrics(),
            1.5,
            2,
        );
        assert_eq!(
            proposed_width(p.ask(&history(&two, &space, &objectives), &mut rng)),
            256
        );
        assert_eq!(p.counts().forced.load(Ordering::Relaxed), 1);
        // A configuration already in the study is never screened.
        let seen = [
            finished(0, 64, 0.9),
            finished(1, 16, 0.8),
            finished(2, 512, 0.7),
        ];
        let mut p = Prescreen::new(
            Box::new(Cycle(vec![512], 0)),
            Box::new(ByWidth),
            metrics(),
            1.5,
            2,
        );
        assert_eq!(
            proposed_width(p.ask(&history(&seen, &space, &objectives), &mut rng)),
            512
        );
        assert_eq!(p.counts().priced.load(Ordering::Relaxed), 0);
        assert_eq!(p.spec(), "prescreen:factor=1.5,warmup=2+cycle");
    }
}
