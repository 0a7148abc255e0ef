//! Screening: a strategy wrapper that draws a pool of candidates from the
//! wrapped strategy, ranks them by a light score (a zero-cost proxy, a
//! surrogate) and lets only the top fraction be trained.
//!
//! A light score has one or more values, each higher = better. With one,
//! the pool is ranked by it; with several (e.g. a proxy for accuracy and
//! minus FLOPs for a multi-objective front), by non-dominated rank, then
//! crowding distance, as NSGA-II ranks a population.
//!
//! The pool comes from the *inner strategy's proposals*, not from the
//! space: [`Screen`] asks the inner strategy `pool` times in a row, each
//! time with the candidates drawn so far added to the history as running
//! trials (so a strategy that skips seen configurations draws distinct
//! ones, and a model-guided strategy draws from its model as it would with
//! `pool` workers). Screening therefore works with every strategy; over
//! `random` the pool is a uniform sample of the unseen space.
//!
//! Screened-out candidates are never trained and never enter the study;
//! the wrapper remembers them and shows them to the inner strategy as
//! failed trials, so they are not drawn again (and count towards an inner
//! strategy's "first N trials are random" phase like any proposal). Their
//! light score's cost is counted in [`ScreenLog::light_cost_j`], which a
//! search's energy bill must add to its trainings' energy.
//!
//! A proposal of a configuration the study already holds (a promotion to a
//! higher fidelity, a re-evaluation) is passed through unscreened: its
//! training was already judged worth doing.
//!
//! State: the queue of kept candidates and the screened-out set live in the
//! wrapper, not in the study, so a resumed study draws a fresh pool and may
//! redraw candidates screened out before the crash.

use crate::objective::constrained_rank;
use crate::space::Config;
use crate::strategy::{Ask, History, Proposal, Strategy};
use crate::study::{TrialRecord, TrialStatus};
use rand::rngs::StdRng;
use shared::Provenance;
use std::collections::{HashSet, VecDeque};
use std::sync::{Arc, Mutex};

/// A light score of one candidate.
#[derive(Debug, Clone, PartialEq)]
pub struct LightScore {
    /// The score's values, each higher = better (the same number for every
    /// candidate of a scorer); NaN or infinite values rank last.
    pub values: Vec<f64>,
    /// Energy spent computing it, joules.
    pub cost_j: f64,
}

/// Scores an untrained candidate cheaply (e.g. a zero-cost proxy).
pub trait LightScorer: Send {
    /// Score of `config`, or `None` when it cannot be scored (such a
    /// candidate is trained: there is no evidence against it).
    fn score(&self, config: &Config) -> Option<LightScore>;
    /// Where the cost figures come from.
    fn cost_provenance(&self) -> Provenance;
    /// Short name stored in the strategy's specification.
    fn name(&self) -> String;
}

/// What [`Screen`] did: shared with the caller through [`Screen::log`].
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ScreenLog {
    /// Pools drawn.
    pub pools: usize,
    /// New candidates drawn into pools.
    pub drawn: usize,
    /// Of those, scored (the others are trained unscored).
    pub scored: usize,
    /// Of those drawn, let through to training.
    pub kept: usize,
    /// Candidates screened out, in the order they were judged.
    pub screened_out: Vec<Config>,
    /// Energy of all light scores computed, joules.
    pub light_cost_j: f64,
    /// Provenance of `light_cost_j` (the scorer's).
    pub light_cost_provenance: Option<Provenance>,
}

/// The screening wrapper (see the module doc).
pub struct Screen {
    inner: Box<dyn Strategy>,
    scorer: Box<dyn LightScorer>,
    pool: usize,
    keep: f64,
    /// Proposals to hand out, with whether each is a new (screened)
    /// candidate rather than a passed-through promotion.
    queue: VecDeque<(Proposal, bool)>,
    /// Keys of screened-out candidates (also in the log, as configs).
    rejected: HashSet<String>,
    log: Arc<Mutex<ScreenLog>>,
}

impl Screen {
    /// Wraps `inner`: pools of `pool` candidates (at least 1), of which the
    /// best `ceil(keep × pool)` (at least 1; `keep` clamped to `(0, 1]`)
    /// are trained.
    pub fn new(
        inner: Box<dyn Strategy>,
        scorer: Box<dyn LightScorer>,
        pool: usize,
        keep: f64,
    ) -> Screen {
        let keep = if keep.is_finite() {
            keep.clamp(f64::MIN_POSITIVE, 1.0)
        } else {
            1.0
        };
        Screen {
            inner,
            scorer,
            pool: pool.max(1),
            keep,
            queue: VecDeque::new(),
            rejected: HashSet::new(),
            log: Arc::new(Mutex::new(ScreenLog::default())),
        }
    }

    /// The log, shared: it keeps filling as the wrapper is asked.
    pub fn log(&self) -> Arc<Mutex<ScreenLog>> {
        Arc::clone(&self.log)
    }

    /// How many of a pool of `n` are trained.
    fn kept_of(&self, n: usize) -> usize {
        ((self.keep * n as f64).ceil() as usize).clamp(1, n.max(1))
    }

    /// The study's history plus the screened-out candidates as failed
    /// trials, for the inner strategy.
    fn with_rejected(&self, history: &History<'_>) -> Vec<TrialRecord> {
        let log = self.log.lock().unwrap_or_else(|e| e.into_inner());
        let mut trials = history.trials.to_vec();
        let first = next_number(&trials);
        for (number, config) in (first..).zip(&log.screened_out) {
            trials.push(pseudo_trial(number, config.clone(), TrialStatus::Failed));
        }
        trials
    }
}

/// Sorts scored candidates best first: by non-dominated rank of their
/// values (maximised), then crowding distance; ties keep the inner
/// strategy's order (stable sort). With one value this is a sort by it.
fn rank_by_score(ranked: &mut Vec<(Proposal, Option<LightScore>)>) {
    let width = ranked
        .iter()
        .filter_map(|(_, s)| s.as_ref().map(|s| s.values.len()))
        .max()
        .unwrap_or(0);
    // Minimisation vectors; a missing or non-finite value is the worst.
    let points: Vec<Vec<f64>> = ranked
        .iter()
        .map(|(_, s)| {
            (0..width)
                .map(|i| {
                    s.as_ref()
                        .and_then(|s| s.values.get(i))
                        .filter(|v| v.is_finite())
                        .map_or(f64::MAX, |v| -v)
                })
                .collect()
        })
        .collect();
    let ranks = constrained_rank(&points, &vec![0.0; points.len()]);
    let mut order: Vec<usize> = (0..ranked.len()).collect();
    order.sort_by(|&a, &b| {
        let (ra, rb) = (ranks[a], ranks[b]);
        ra.0.cmp(&rb.0).then(rb.1.total_cmp(&ra.1))
    });
    let mut taken: Vec<Option<(Proposal, Option<LightScore>)>> =
        std::mem::take(ranked).into_iter().map(Some).collect();
    ranked.extend(order.into_iter().filter_map(|i| taken[i].take()));
}

fn next_number(trials: &[TrialRecord]) -> u64 {
    trials.iter().map(|t| t.number + 1).max().unwrap_or(0)
}

/// A trial that never reached the study: a pool member being drawn
/// (`Running`) or a screened-out candidate (`Failed`).
fn pseudo_trial(number: u64, config: Config, status: TrialStatus) -> TrialRecord {
    TrialRecord {
        number,
        config_key: config.key(),
        config,
        fidelity: crate::strategy::FULL_FIDELITY,
        tag: Some("screen".into()),
        status,
        worker: None,
        seed: 0,
        metrics: None,
        kernel_energy: Vec::new(),
        provenance: None,
        energy_spent_j: None,
        error: (status == TrialStatus::Failed).then(|| "screened out".into()),
        notes: Vec::new(),
        created_ns: 0,
        started_ns: None,
        finished_ns: None,
        finish_seq: None,
        eval_ns: None,
        overhead_ns: None,
        attempts: 0,
    }
}

impl Strategy for Screen {
    fn spec(&self) -> String {
        format!(
            "screen:pool={},keep={},score={}>{}",
            self.pool,
            self.keep,
            self.scorer.name(),
            self.inner.spec()
        )
    }

    fn ask(&mut self, history: &History<'_>, rng: &mut StdRng) -> Ask {
        let seen = history.seen_anywhere();
        // Kept candidates another worker's proposal may have overtaken.
        while let Some((p, new)) = self.queue.pop_front() {
            if !new || !seen.contains(p.config.key().as_str()) {
                return Ask::Propose(p);
            }
        }
        let mut trials = self.with_rejected(history);
        let mut pool: Vec<Proposal> = Vec::new();
        let mut last = Ask::Exhausted;
        while pool.len() < self.pool {
            let view = History {
                trials: &trials,
                space: history.space,
                objectives: history.objectives,
            };
            match self.inner.ask(&view, rng) {
                Ask::Propose(p) => {
                    let key = p.config.key();
                    if seen.contains(key.as_str()) {
                        // A promotion or re-evaluation: passes unscreened
                        // (ahead of the pool, which is kept for later).
                        if pool.is_empty() {
                            return Ask::Propose(p);
                        }
                        self.queue.push_back((p, false));
                        break;
                    }
                    if self.rejected.contains(&key) || pool.iter().any(|q| q.config.key() == key) {
                        // The inner strategy ignored the history; stop
                        // drawing rather than loop.
                        break;
                    }
                    let n = next_number(&trials);
                    trials.push(pseudo_trial(n, p.config.clone(), TrialStatus::Running));
                    pool.push(p);
                }
                other => {
                    last = other;
                    break;
                }
            }
        }
        if pool.is_empty() {
            return last;
        }
        let scored: Vec<(Proposal, Option<LightScore>)> = pool
            .into_iter()
            .map(|p| {
                let s = self.scorer.score(&p.config);
                (p, s)
            })
            .collect();
        let (mut ranked, unscored): (Vec<_>, Vec<_>) =
            scored.into_iter().partition(|(_, s)| s.is_some());
        rank_by_score(&mut ranked);
        let drawn = ranked.len() + unscored.len();
        let top = if ranked.is_empty() {
            0
        } else {
            self.kept_of(drawn).saturating_sub(unscored.len()).max(1)
        };
        let mut log = self.log.lock().unwrap_or_else(|e| e.into_inner());
        log.pools += 1;
        log.drawn += drawn;
        log.scored += ranked.len();
        log.light_cost_j += ranked
            .iter()
            .filter_map(|(_, s)| s.as_ref().map(|s| s.cost_j))
            .sum::<f64>();
        if !ranked.is_empty() {
            log.light_cost_provenance = Some(self.scorer.cost_provenance());
        }
        let mut kept: Vec<Proposal> = unscored.into_iter().map(|(p, _)| p).collect();
        for (i, (p, _)) in ranked.into_iter().enumerate() {
            if i < top {
                kept.push(p);
            } else {
                self.rejected.insert(p.config.key());
                log.screened_out.push(p.config);
            }
        }
        log.kept += kept.len();
        drop(log);
        self.queue.extend(kept.into_iter().map(|p| (p, true)));
        // A promotion met while drawing ended the pool and goes first.
        match self.queue.pop_front() {
            Some((p, _)) => Ask::Propose(p),
            None => last,
        }
    }

    fn tell(&mut self, trial: &TrialRecord) {
        self.inner.tell(trial);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::objective::{Metrics, Objective, ObjectiveSet};
    use crate::space::SearchSpace;
    use crate::strategy::strategy_from_spec;
    use rand::SeedableRng;

    /// One parameter `x` in 0..40; accuracy `x / 40` (the best is x = 39).
    fn space() -> SearchSpace {
        let choices: Vec<String> = (0..40).map(|i| i.to_string()).collect();
        let toml = format!(
            "[[param]]\nname = \"x\"\ntype = \"categorical\"\nchoices = [{}]\n",
            choices.join(", ")
        );
        SearchSpace::from_toml_str(&toml, "test").unwrap()
    }

    fn x_of(c: &Config) -> f64 {
        c.get("x").and_then(|v| v.as_f64()).unwrap()
    }

    /// Scores `sign × x` at 0.5 J each.
    struct Linear {
        sign: f64,
    }

    impl LightScorer for Linear {
        fn score(&self, config: &Config) -> Option<LightScore> {
            Some(LightScore {
                values: vec![self.sign * x_of(config)],
                cost_j: 0.5,
            })
        }
        fn cost_provenance(&self) -> Provenance {
            Provenance::Simulated
        }
        fn name(&self) -> String {
            "linear".into()
        }
    }

    /// Runs `strategy` until it stops proposing (or 200 asks), "training"
    /// every proposal; returns the trials.
    fn run(strategy: &mut dyn Strategy, space: &SearchSpace) -> Vec<TrialRecord> {
        let objectives = ObjectiveSet::new(vec![Objective::parse("acc:max").unwrap()]).unwrap();
        let mut trials: Vec<TrialRecord> = Vec::new();
        let mut rng = StdRng::seed_from_u64(7);
        for n in 0..200u64 {
            let history = History {
                trials: &trials,
                space,
                objectives: &objectives,
            };
            let Ask::Propose(p) = strategy.ask(&history, &mut rng) else {
                break;
            };
            let mut t = pseudo_trial(n, p.config, TrialStatus::Finished);
            t.fidelity = p.fidelity;
            t.tag = p.tag;
            t.error = None;
            let metrics: Metrics = [("acc".to_string(), x_of(&t.config) / 40.0)]
                .into_iter()
                .collect();
            t.metrics = Some(metrics);
            t.finish_seq = Some(n);
            t.finished_ns = Some(n + 1);
            strategy.tell(&t);
            trials.push(t);
        }
        trials
    }

    fn screened(inner: &str, sign: f64) -> (Vec<TrialRecord>, ScreenLog) {
        let space = space();
        let mut s = Screen::new(
            strategy_from_spec(inner).unwrap(),
            Box::new(Linear { sign }),
            10,
            0.3,
        );
        let log = s.log();
        let trials = run(&mut s, &space);
        let log = log.lock().unwrap().clone();
        (trials, log)
    }

    #[test]
    fn correlated_score_trains_the_best_and_anti_correlated_never_does() {
        // Random search over 40 configurations in pools of 10, keeping
        // ceil(0.3 × 10) = 3 per pool: the pools partition the space, 12
        // are trained, 28 screened out, 40 scores paid for at 0.5 J.
        for sign in [1.0, -1.0] {
            let (trials, log) = screened("random", sign);
            assert_eq!(trials.len(), 12);
            assert_eq!((log.pools, log.drawn, log.kept), (4, 40, 12));
            assert_eq!(log.scored, 40);
            assert_eq!(log.screened_out.len(), 28);
            assert_eq!(log.light_cost_j, 20.0);
            assert_eq!(log.light_cost_provenance, Some(Provenance::Simulated));
            let best = trials.iter().map(|t| x_of(&t.config)).fold(0.0, f64::max);
            let worst = trials.iter().map(|t| x_of(&t.config)).fold(99.0, f64::min);
            if sign > 0.0 {
                // x = 39 tops whichever pool it is in; x = 0 never does.
                assert_eq!(best, 39.0);
                assert!(worst > 0.0);
            } else {
                assert_eq!(worst, 0.0);
                assert!(best < 39.0);
            }
            // Pool by pool (3 trained, then 7 screened out), every trained
            // candidate scores at least as well as every one screened out.
            for (k, kept) in trials.chunks(3).enumerate() {
                let out = &log.screened_out[7 * k..7 * (k + 1)];
                let lowest_kept = kept
                    .iter()
                    .map(|t| sign * x_of(&t.config))
                    .fold(f64::INFINITY, f64::min);
                assert!(out.iter().all(|c| sign * x_of(c) <= lowest_kept));
            }
        }
    }

    #[test]
    fn screened_out_candidates_are_never_trained_with_any_strategy() {
        for inner in [
            "random",
            "evolution:population=4,sample=2",
            "nsga2:population=4",
            "tpe:startup=4",
            "lamoo:initial=4,leaf_size=4",
        ] {
            let (trials, log) = screened(inner, 1.0);
            let trained: HashSet<String> = trials.iter().map(|t| t.config_key.clone()).collect();
            assert_eq!(
                trained.len(),
                trials.len(),
                "{inner}: a config trained twice"
            );
            assert!(
                log.screened_out.iter().all(|c| !trained.contains(&c.key())),
                "{inner}: a screened-out candidate was trained"
            );
            assert_eq!(log.kept, trials.len(), "{inner}");
            assert_eq!(log.kept + log.screened_out.len(), log.drawn, "{inner}");
            assert!(log.drawn <= 40 && !trials.is_empty(), "{inner}");
        }
    }

    #[test]
    fn several_values_rank_by_pareto_front_then_crowding() {
        let p = |x: i64| Proposal {
            config: Config([("x".to_string(), crate::space::ParamValue::Int(x))].into()),
            fidelity: 1.0,
            tag: None,
        };
        let s = |a: f64, b: f64| {
            Some(LightScore {
                values: vec![a, b],
                cost_j: 0.0,
            })
        };
        // (1,1) is dominated by (2,2); (3,0), (2,2), (0,3) are mutually
        // non-dominated, (3,0) and (0,3) the extremes (infinite crowding);
        // a NaN counts as the worst value, so (NaN, -1) is behind (1,1).
        let mut v = vec![
            (p(0), s(1.0, 1.0)),
            (p(1), s(2.0, 2.0)),
            (p(2), s(f64::NAN, -1.0)),
            (p(3), s(3.0, 0.0)),
            (p(4), s(0.0, 3.0)),
        ];
        rank_by_score(&mut v);
        let order: Vec<f64> = v.iter().map(|(p, _)| x_of(&p.config)).collect();
        assert_eq!(order[3..], [0.0, 2.0]);
        assert_eq!(order[2], 1.0);
        let mut ends = order[..2].to_vec();
        ends.sort_by(f64::total_cmp);
        assert_eq!(ends, [3.0, 4.0]);
    }

    #[test]
    fn promotions_pass_unscreened() {
        // Successive halving promotes configurations already in the study:
        // those pass; only new ones are screened.
        let (trials, log) = screened("sha:eta=3,min_fidelity=0.111", 1.0);
        let new: HashSet<&str> = trials.iter().map(|t| t.config_key.as_str()).collect();
        assert_eq!(new.len(), log.kept);
        assert!(trials.len() > log.kept, "some promotions were proposed");
    }

    #[test]
    fn unscored_candidates_are_trained_and_keep_bounds_hold() {
        struct Nothing;
        impl LightScorer for Nothing {
            fn score(&self, _: &Config) -> Option<LightScore> {
                None
            }
            fn cost_provenance(&self) -> Provenance {
                Provenance::Estimated
            }
            fn name(&self) -> String {
                "none".into()
            }
        }
        let space = space();
        let mut s = Screen::new(
            strategy_from_spec("random").unwrap(),
            Box::new(Nothing),
            10,
            0.1,
        );
        let log = s.log();
        assert_eq!(run(&mut s, &space).len(), 40);
        let log = log.lock().unwrap();
        assert!(log.screened_out.is_empty());
        assert_eq!((log.drawn, log.scored), (40, 0));
        assert_eq!((log.light_cost_j, log.light_cost_provenance), (0.0, None));
        assert_eq!(s.kept_of(10), 1);
        let s = Screen::new(
            strategy_from_spec("random").unwrap(),
            Box::new(Nothing),
            0,
            7.0,
        );
        assert_eq!((s.pool, s.kept_of(1)), (1, 1));
    }
}
