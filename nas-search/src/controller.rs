//! The policy-gradient architecture controller of one-shot search: REINFORCE
//! over a factorized categorical policy (one softmax per decision), an EMA
//! reward baseline, Adam on the logits, and three ways to bring in a cost
//! such as a child's predicted energy:
//!
//! - [`EnergyHandling::Rejection`]: TabNAS (Yang et al., NeurIPS 2022).
//!   Children over the budget are rejected (not evaluated, no update, the
//!   baseline untouched); a feasible child's loss is
//!   `−A · log(p(y) / P̂(V))` where `P̂(V)` sums `p(z)` over the feasible
//!   ones among N fresh Monte-Carlo samples (duplicates counted), and the
//!   step is skipped when none of them is feasible;
//! - [`EnergyHandling::MnasSoft`]: MnasNet's soft reward
//!   `Q · (T / T0)^w`, `w = α` at or under the target and `β` over it
//!   (MnasNet: α = β = −0.07; EnergyNAS uses w = −0.07);
//! - [`EnergyHandling::AbsReward`]: TuNAS's "Abs" reward as TabNAS compares
//!   against, `Q − β · |T / T0 − 1|`.
//!
//! Quality and cost are closures of the caller (a child's validation
//! accuracy with inherited supernet weights; its energy predicted by the
//! calibrated kernel model), so nothing here trains or measures.
//!
//! Faithful to the official TabNAS toy notebooks (google-research/tabnas,
//! `toy_example/`): logits start at 0; the baseline is the bias-corrected
//! EMA of rewards with momentum 0.9, updated with the current reward
//! before the advantage is taken; Adam (betas 0.9/0.999, eps 1e-8) at
//! lr 0.1 for rejection and 0.05 for reward shaping; N = 5 Monte-Carlo
//! samples; the final architecture the argmax of the policy. We follow the
//! TF2 notebook where the two disagree: there `P̂(V)` is differentiable and
//! each step uses that step's gradient alone. The PyTorch notebook builds
//! `P̂` with `torch.tensor([...])`, which detaches it, and never calls
//! `zero_grad`, so its Adam sees gradients summed over all past steps.
//! Ours: the step's random stream is seeded from (seed, step) like the
//! notebook's `manual_seed(1000·rep + iter)`, which makes a resumed run
//! identical to an uninterrupted one; for rejection the final pick is the
//! most probable *feasible* child (best-first enumeration), not the
//! unconstrained argmax.
//!
//! Invariant: [`ControllerState`] is everything a run is (serde); a run
//! saved after step k and resumed does what the uninterrupted run does.

use crate::space::{Config, ParamValue};
use rand::rngs::StdRng;
use rand::SeedableRng;
use serde::{Deserialize, Serialize};
use shared::Provenance;
use std::collections::BTreeMap;

mod optim;
mod policy;
pub mod toy;
#[cfg(test)]
mod toy_tests;

pub use optim::{AdamSettings, AdamState, EmaBaseline};
pub use policy::{Child, FactorizedPolicy};

/// The notebook's number of Monte-Carlo samples for `P̂(V)` per step.
pub const TABNAS_MC_SAMPLES: usize = 5;
/// The notebook's Adam learning rate for rejection-based search.
pub const TABNAS_LEARNING_RATE: f64 = 0.1;
/// The notebook's Adam learning rate for reward-shaping searches.
pub const REWARD_SHAPING_LEARNING_RATE: f64 = 0.05;
/// The notebook's baseline momentum.
pub const BASELINE_MOMENTUM: f64 = 0.9;
/// MnasNet's soft-constraint exponent (α = β = −0.07).
pub const MNAS_SOFT_EXPONENT: f64 = -0.07;
/// How many children the final pick examines, most probable first, before
/// it gives up finding a feasible one.
pub const PICK_EXAMINE_LIMIT: usize = 1_000_000;

/// Errors of the controller.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ControllerError {
    /// A setting or a saved state is not usable.
    #[error("controller setting `{field}`: {message}")]
    Setting {
        /// The field.
        field: &'static str,
        /// What is wrong.
        message: String,
    },
    /// A child does not fit the decisions.
    #[error("child does not fit the decisions: {message}")]
    ChildShape {
        /// What is wrong.
        message: String,
    },
    /// The quality or cost closure failed.
    #[error("step {step}: the {what} of child {child:?} could not be evaluated: {source}")]
    Evaluation {
        /// The step.
        step: u64,
        /// `quality` or `cost`.
        what: &'static str,
        /// The child.
        child: Child,
        /// The closure's error.
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// A closure returned a value the reward cannot use.
    #[error("step {step}: the {what} of child {child:?} is {value}, {message}")]
    BadValue {
        /// The step.
        step: u64,
        /// `quality` or `cost`.
        what: &'static str,
        /// The child.
        child: Child,
        /// The value.
        value: f64,
        /// Why it is refused.
        message: &'static str,
    },
    /// No child of the first [`PICK_EXAMINE_LIMIT`] most probable is within
    /// the budget.
    #[error("no child within the budget {budget} among the {examined} most probable")]
    NoFeasibleChild {
        /// The budget.
        budget: f64,
        /// Children examined.
        examined: usize,
    },
}

/// One decision of the search: a name (the configuration key) and its
/// options, in the order the policy indexes them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Decision {
    /// Name, e.g. `width0`.
    pub name: String,
    /// The options, at least one.
    pub choices: Vec<ParamValue>,
}

impl Child {
    /// The child as a search-space configuration (decision name → chosen
    /// value), so it can be stored as a study trial.
    pub fn config(&self, decisions: &[Decision]) -> Result<Config, ControllerError> {
        if self.0.len() != decisions.len() {
            return Err(ControllerError::ChildShape {
                message: format!(
                    "child has {} choices, there are {} decisions",
                    self.0.len(),
                    decisions.len()
                ),
            });
        }
        let mut map = BTreeMap::new();
        for (&c, d) in self.0.iter().zip(decisions) {
            let value = d
                .choices
                .get(c)
                .ok_or_else(|| ControllerError::ChildShape {
                    message: format!("decision `{}` has no option {c}", d.name),
                })?;
            map.insert(d.name.clone(), value.clone());
        }
        Ok(Config(map))
    }
}

/// How the cost (e.g. a child's predicted energy) enters the search.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum EnergyHandling {
    /// Accuracy only: reward = quality; the cost closure is never called.
    QualityOnly,
    /// TabNAS rejection: children with cost over `budget` are rejected,
    /// `P̂(V)` from `mc_samples` samples per step.
    Rejection {
        /// Largest admissible cost (inclusive).
        budget: f64,
        /// Monte-Carlo samples per step (notebook: 5).
        mc_samples: usize,
    },
    /// MnasNet: reward = `Q · (T / target)^w`, `w = under_exponent` when
    /// `T ≤ target`, else `over_exponent` (both ≤ 0).
    MnasSoft {
        /// Target cost `T0` (> 0).
        target: f64,
        /// α, the exponent at or under the target.
        under_exponent: f64,
        /// β, the exponent over the target.
        over_exponent: f64,
    },
    /// TuNAS "Abs" reward: `Q − beta · |T / target − 1|`.
    AbsReward {
        /// Target cost `T0` (> 0).
        target: f64,
        /// Penalty weight (> 0; notebook 2).
        beta: f64,
    },
}

impl EnergyHandling {
    fn check(&self) -> Result<(), ControllerError> {
        let bad = |message: String| {
            Err(ControllerError::Setting {
                field: "energy",
                message,
            })
        };
        match *self {
            EnergyHandling::QualityOnly => Ok(()),
            EnergyHandling::Rejection { budget, mc_samples } => {
                if !budget.is_finite() {
                    return bad(format!("budget {budget} is not finite"));
                }
                if mc_samples == 0 {
                    return bad("rejection needs at least one Monte-Carlo sample".into());
                }
                Ok(())
            }
            EnergyHandling::MnasSoft {
                target,
                under_exponent,
                over_exponent,
            } => {
                if !(target.is_finite() && target > 0.0) {
                    return bad(format!("target {target} must be finite and positive"));
                }
                let usable = |w: f64| w.is_finite() && w <= 0.0;
                if !(usable(under_exponent) && usable(over_exponent)) {
                    return bad(format!(
                        "exponents α = {under_exponent}, β = {over_exponent} must be finite and ≤ 0"
                    ));
                }
                Ok(())
            }
            EnergyHandling::AbsReward { target, beta } => {
                if !(target.is_finite() && target > 0.0) {
                    return bad(format!("target {target} must be finite and positive"));
                }
                if !(beta.is_finite() && beta >= 0.0) {
                    return bad(format!("beta {beta} must be finite and ≥ 0"));
                }
                Ok(())
            }
        }
    }

    fn uses_cost(&self) -> bool {
        !matches!(self, EnergyHandling::QualityOnly)
    }
}

/// Everything that shapes a run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ControllerSettings {
    /// Seed of the run; step `k` draws from a stream seeded by (seed, k).
    pub seed: u64,
    /// Adam on the logits.
    pub adam: AdamSettings,
    /// Momentum of the EMA baseline.
    pub baseline_momentum: f64,
    /// How the cost enters.
    pub energy: EnergyHandling,
    /// Where the cost figures come from (a prediction of the calibrated
    /// energy model is `Estimated`; the toy's parameter counts are exact,
    /// `Simulated`), kept with every cost in the history.
    pub cost_provenance: Provenance,
}

impl ControllerSettings {
    /// TabNAS rejection with the notebook's constants (lr 0.1, N = 5).
    pub fn tabnas_rejection(budget: f64, seed: u64, cost_provenance: Provenance) -> Self {
        ControllerSettings {
            seed,
            adam: AdamSettings::with_learning_rate(TABNAS_LEARNING_RATE),
            baseline_momentum: BASELINE_MOMENTUM,
            energy: EnergyHandling::Rejection {
                budget,
                mc_samples: TABNAS_MC_SAMPLES,
            },
            cost_provenance,
        }
    }

    /// MnasNet's soft reward with α = β = `exponent` (MnasNet and EnergyNAS:
    /// −0.07) at the notebook's reward-shaping lr 0.05.
    pub fn mnas_soft(target: f64, exponent: f64, seed: u64, cost_provenance: Provenance) -> Self {
        ControllerSettings {
            seed,
            adam: AdamSettings::with_learning_rate(REWARD_SHAPING_LEARNING_RATE),
            baseline_momentum: BASELINE_MOMENTUM,
            energy: EnergyHandling::MnasSoft {
                target,
                under_exponent: exponent,
                over_exponent: exponent,
            },
            cost_provenance,
        }
    }

    /// The Abs reward at the notebook's lr 0.05.
    pub fn abs_reward(target: f64, beta: f64, seed: u64, cost_provenance: Provenance) -> Self {
        ControllerSettings {
            seed,
            adam: AdamSettings::with_learning_rate(REWARD_SHAPING_LEARNING_RATE),
            baseline_momentum: BASELINE_MOMENTUM,
            energy: EnergyHandling::AbsReward { target, beta },
            cost_provenance,
        }
    }

    /// Accuracy only, at the reward-shaping lr 0.05.
    pub fn quality_only(seed: u64) -> Self {
        ControllerSettings {
            seed,
            adam: AdamSettings::with_learning_rate(REWARD_SHAPING_LEARNING_RATE),
            baseline_momentum: BASELINE_MOMENTUM,
            energy: EnergyHandling::QualityOnly,
            cost_provenance: Provenance::Simulated,
        }
    }

    fn check(&self) -> Result<(), ControllerError> {
        let a = &self.adam;
        let ok = a.learning_rate.is_finite()
            && a.learning_rate > 0.0
            && (0.0..1.0).contains(&a.beta1)
            && (0.0..1.0).contains(&a.beta2)
            && a.eps.is_finite()
            && a.eps > 0.0;
        if !ok {
            return Err(ControllerError::Setting {
                field: "adam",
                message: format!("{a:?}: needs lr > 0, betas in [0, 1), eps > 0"),
            });
        }
        if !(0.0..1.0).contains(&self.baseline_momentum) {
            return Err(ControllerError::Setting {
                field: "baseline_momentum",
                message: format!("{} is not in [0, 1)", self.baseline_momentum),
            });
        }
        self.energy.check()
    }
}

/// What a step did.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum StepOutcome {
    /// Over the budget: not evaluated, no update, baseline untouched.
    Rejected,
    /// Evaluated and the baseline updated, but none of the Monte-Carlo
    /// samples was feasible, so no `P̂(V)` and no logit update (notebook).
    NoFeasibleEstimate {
        /// The child's quality.
        quality: f64,
        /// Its reward.
        reward: f64,
        /// The baseline after taking in the reward.
        baseline: f64,
    },
    /// Evaluated and the logits updated.
    Updated {
        /// The child's quality.
        quality: f64,
        /// Its reward (the quality under rejection).
        reward: f64,
        /// The baseline after taking in the reward.
        baseline: f64,
        /// `reward − baseline`.
        advantage: f64,
        /// `P̂(V)` under rejection.
        feasible_estimate: Option<f64>,
    },
}

/// One step of the history, enough to draw the run's progress.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StepRecord {
    /// The step, from 0.
    pub step: u64,
    /// The sampled child.
    pub child: Child,
    /// Its cost, when the handling uses one (provenance in the settings).
    pub cost: Option<f64>,
    /// What happened.
    pub outcome: StepOutcome,
    /// Every decision's probabilities when the child was drawn (before
    /// this step's update).
    pub probabilities: Vec<Vec<f64>>,
}

/// A run, whole: settings, policy, optimizer, baseline, history. Saved
/// with serde and resumed with [`Controller::from_state`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ControllerState {
    /// The decisions.
    pub decisions: Vec<Decision>,
    /// The settings.
    pub settings: ControllerSettings,
    /// The policy now.
    pub policy: FactorizedPolicy,
    /// Adam's moments.
    pub adam: AdamState,
    /// The baseline.
    pub baseline: EmaBaseline,
    /// The next step to run (= steps run so far).
    pub next_step: u64,
    /// Every step so far.
    pub history: Vec<StepRecord>,
}

/// The final choice of a run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Pick {
    /// The chosen child.
    pub child: Child,
    /// Its probability under the policy.
    pub probability: f64,
    /// Its cost, when the handling uses one.
    pub cost: Option<f64>,
    /// Children examined (most probable first) to find it.
    pub examined: usize,
}

/// The policy-gradient controller (module doc).
#[derive(Debug, Clone)]
pub struct Controller {
    state: ControllerState,
}

type BoxError = Box<dyn std::error::Error + Send + Sync>;

impl Controller {
    /// A fresh run over `decisions` (uniform policy).
    pub fn new(
        decisions: Vec<Decision>,
        settings: ControllerSettings,
    ) -> Result<Controller, ControllerError> {
        settings.check()?;
        let counts: Vec<usize> = decisions.iter().map(|d| d.choices.len()).collect();
        let policy = FactorizedPolicy::uniform(&counts)?;
        let n = counts.iter().sum();
        Ok(Controller {
            state: ControllerState {
                decisions,
                baseline: EmaBaseline::new(settings.baseline_momentum),
                settings,
                policy,
                adam: AdamState::new(n),
                next_step: 0,
                history: Vec::new(),
            },
        })
    }

    /// Resumes a saved run (checked for consistency).
    pub fn from_state(state: ControllerState) -> Result<Controller, ControllerError> {
        state.settings.check()?;
        let counts = state.policy.choice_counts();
        let decision_counts: Vec<usize> = state.decisions.iter().map(|d| d.choices.len()).collect();
        // Re-validates the logits (finite, non-empty rows).
        FactorizedPolicy::from_logits(state.policy.logits().to_vec())?;
        if counts != decision_counts {
            return Err(ControllerError::Setting {
                field: "policy",
                message: format!(
                    "policy has {counts:?} options per decision, the decisions {decision_counts:?}"
                ),
            });
        }
        let n: usize = counts.iter().sum();
        if state.adam.m.len() != n || state.adam.v.len() != n {
            return Err(ControllerError::Setting {
                field: "adam",
                message: format!(
                    "moments for {} logits, the policy has {n}",
                    state.adam.m.len()
                ),
            });
        }
        if state.history.len() as u64 != state.next_step {
            return Err(ControllerError::Setting {
                field: "history",
                message: format!(
                    "{} steps recorded, next step {}",
                    state.history.len(),
                    state.next_step
                ),
            });
        }
        Ok(Controller { state })
    }

    /// The run as it stands (serialize it to save the run).
    pub fn state(&self) -> &ControllerState {
        &self.state
    }

    /// The policy now.
    pub fn policy(&self) -> &FactorizedPolicy {
        &self.state.policy
    }

    /// Every step so far.
    pub fn history(&self) -> &[StepRecord] {
        &self.state.history
    }

    /// One REINFORCE step (module doc). `quality` and `cost` evaluate a
    /// child; `cost` is not called under [`EnergyHandling::QualityOnly`]
    /// and `quality` not on a rejected child.
    pub fn step<Q, C, EQ, EC>(
        &mut self,
        mut quality: Q,
        mut cost: C,
    ) -> Result<&StepRecord, ControllerError>
    where
        Q: FnMut(&Child) -> Result<f64, EQ>,
        C: FnMut(&Child) -> Result<f64, EC>,
        EQ: Into<BoxError>,
        EC: Into<BoxError>,
    {
        let step = self.state.next_step;
        let mut rng = step_rng(self.state.settings.seed, step);
        let policy = &self.state.policy;
        let probabilities = policy.probabilities();
        let child = policy.sample(&mut rng);
        let energy = self.state.settings.energy.clone();
        let child_cost = if energy.uses_cost() {
            Some(eval(step, "cost", &child, &mut cost)?)
        } else {
            None
        };
        let mut record = StepRecord {
            step,
            child: child.clone(),
            cost: child_cost,
            outcome: StepOutcome::Rejected,
            probabilities,
        };
        if let (EnergyHandling::Rejection { budget, .. }, Some(c)) = (&energy, child_cost) {
            if c > *budget {
                return Ok(self.push(record));
            }
        }
        let q = eval(step, "quality", &child, &mut quality)?;
        let reward =
            shaped_reward(&energy, q, child_cost).map_err(|message| ControllerError::BadValue {
                step,
                what: "cost",
                child: child.clone(),
                value: child_cost.unwrap_or(f64::NAN),
                message,
            })?;
        let baseline = self.state.baseline.update(reward);
        let advantage = reward - baseline;
        // d(−A · log(p(y)/P̂))/dθ = −A · ∇log(p(y)/P̂).
        let (score, feasible_estimate) = match energy {
            EnergyHandling::Rejection {
                budget, mc_samples, ..
            } => {
                let mut feasible = Vec::with_capacity(mc_samples);
                for _ in 0..mc_samples {
                    let z = self.state.policy.sample(&mut rng);
                    if eval(step, "cost", &z, &mut cost)? <= budget {
                        feasible.push(z);
                    }
                }
                match self.state.policy.grad_log_conditional(&child, &feasible) {
                    Some(g) => (g, Some(self.state.policy.set_prob(&feasible))),
                    None => {
                        record.outcome = StepOutcome::NoFeasibleEstimate {
                            quality: q,
                            reward,
                            baseline,
                        };
                        return Ok(self.push(record));
                    }
                }
            }
            _ => (self.state.policy.grad_log_prob(&child), None),
        };
        let grad: Vec<f64> = score.iter().flatten().map(|s| -advantage * s).collect();
        let delta = self.state.adam.step(&self.state.settings.adam, &grad);
        self.state.policy.apply(&delta);
        record.outcome = StepOutcome::Updated {
            quality: q,
            reward,
            baseline,
            advantage,
            feasible_estimate,
        };
        Ok(self.push(record))
    }

    /// Runs steps until `total_steps` have been run (none if already there).
    pub fn run_until<Q, C, EQ, EC>(
        &mut self,
        total_steps: u64,
        mut quality: Q,
        mut cost: C,
    ) -> Result<(), ControllerError>
    where
        Q: FnMut(&Child) -> Result<f64, EQ>,
        C: FnMut(&Child) -> Result<f64, EC>,
        EQ: Into<BoxError>,
        EC: Into<BoxError>,
    {
        while self.state.next_step < total_steps {
            self.step(&mut quality, &mut cost)?;
        }
        Ok(())
    }

    /// The final architecture: the policy's argmax; under rejection the
    /// most probable child within the budget. `cost` is called on the
    /// children examined (under rejection) or on the pick (to report it).
    pub fn pick<C, EC>(&self, mut cost: C) -> Result<Pick, ControllerError>
    where
        C: FnMut(&Child) -> Result<f64, EC>,
        EC: Into<BoxError>,
    {
        let step = self.state.next_step;
        let policy = &self.state.policy;
        match self.state.settings.energy {
            EnergyHandling::Rejection { budget, .. } => {
                let mut last_cost = None;
                let found = policy.argmax_where(PICK_EXAMINE_LIMIT, |z| {
                    let c = eval(step, "cost", z, &mut cost)?;
                    last_cost = Some(c);
                    Ok::<_, ControllerError>(c <= budget)
                })?;
                match found {
                    Some((child, examined)) => Ok(Pick {
                        probability: policy.prob(&child),
                        child,
                        cost: last_cost,
                        examined,
                    }),
                    None => Err(ControllerError::NoFeasibleChild {
                        budget,
                        examined: PICK_EXAMINE_LIMIT,
                    }),
                }
            }
            ref other => {
                let child = policy.argmax();
                let c = if other.uses_cost() {
                    Some(eval(step, "cost", &child, &mut cost)?)
                } else {
                    None
                };
                Ok(Pick {
                    probability: policy.prob(&child),
                    child,
                    cost: c,
                    examined: 1,
                })
            }
        }
    }

    fn push(&mut self, record: StepRecord) -> &StepRecord {
        self.state.next_step += 1;
        self.state.history.push(record);
        // Just pushed, so the history is not empty.
        &self.state.history[self.state.history.len() - 1]
    }
}

/// The random stream of one step: a function of (seed, step) only, so a
/// resumed run draws what the uninterrupted one would.
fn step_rng(seed: u64, step: u64) -> StdRng {
    StdRng::seed_from_u64(seed ^ step.wrapping_mul(0x9E37_79B9_7F4A_7C15))
}

fn eval<E: Into<BoxError>>(
    step: u64,
    what: &'static str,
    child: &Child,
    f: &mut impl FnMut(&Child) -> Result<f64, E>,
) -> Result<f64, ControllerError> {
    let value = f(child).map_err(|e| ControllerError::Evaluation {
        step,
        what,
        child: child.clone(),
        source: e.into(),
    })?;
    if !value.is_finite() {
        return Err(ControllerError::BadValue {
            step,
            what,
            child: child.clone(),
            value,
            message: "not a finite number",
        });
    }
    Ok(value)
}

/// The reward of a child of quality `q` and cost `cost` (Some whenever the
/// handling uses a cost). Err names why a cost cannot be used.
pub fn shaped_reward(
    energy: &EnergyHandling,
    q: f64,
    cost: Option<f64>,
) -> Result<f64, &'static str> {
    match (energy, cost) {
        (EnergyHandling::QualityOnly | EnergyHandling::Rejection { .. }, _) => Ok(q),
        (
            EnergyHandling::MnasSoft {
                target,
                under_exponent,
                over_exponent,
            },
            Some(t),
        ) => {
            if t <= 0.0 {
                return Err("the MnasNet reward needs a positive cost");
            }
            let w = if t <= *target {
                *under_exponent
            } else {
                *over_exponent
            };
            Ok(q * (t / target).powf(w))
        }
        (EnergyHandling::AbsReward { target, beta }, Some(t)) => {
            Ok(q - beta * (t / target - 1.0).abs())
        }
        (_, None) => Err("this reward needs a cost"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shaped_rewards_by_hand() {
        let mnas = EnergyHandling::MnasSoft {
            target: 10.0,
            under_exponent: 0.0,
            over_exponent: -1.0,
        };
        // Under the target α = 0: the quality; over it β = −1: Q·T0/T.
        assert_eq!(shaped_reward(&mnas, 0.8, Some(5.0)), Ok(0.8));
        assert!((shaped_reward(&mnas, 0.8, Some(20.0)).unwrap() - 0.4).abs() < 1e-15);
        let soft = EnergyHandling::MnasSoft {
            target: 10.0,
            under_exponent: -0.07,
            over_exponent: -0.07,
        };
        let r = shaped_reward(&soft, 0.9, Some(20.0)).unwrap();
        assert!((r - 0.9 * 2f64.powf(-0.07)).abs() < 1e-15);
        assert!(shaped_reward(&soft, 0.9, Some(0.0)).is_err());
        let abs = EnergyHandling::AbsReward {
            target: 25.0,
            beta: 2.0,
        };
        // The notebook's 4-4 (37 parameters): 0.9 − 2·|37/25 − 1| = 0.9 − 0.96.
        let r = shaped_reward(&abs, 0.9, Some(37.0)).unwrap();
        assert!((r - (0.9 - 0.96)).abs() < 1e-12);
    }

    #[test]
    fn settings_and_states_are_checked() {
        let d = vec![Decision {
            name: "w".into(),
            choices: vec![ParamValue::Int(1)],
        }];
        let bad = ControllerSettings::tabnas_rejection(f64::NAN, 0, Provenance::Simulated);
        assert!(matches!(
            Controller::new(d.clone(), bad),
            Err(ControllerError::Setting {
                field: "energy",
                ..
            })
        ));
        let empty = vec![Decision {
            name: "w".into(),
            choices: vec![],
        }];
        assert!(Controller::new(empty, ControllerSettings::quality_only(0)).is_err());
        let c = Controller::new(d, ControllerSettings::quality_only(0)).unwrap();
        let mut s = c.state().clone();
        s.next_step = 3;
        assert!(matches!(
            Controller::from_state(s),
            Err(ControllerError::Setting {
                field: "history",
                ..
            })
        ));
        let child = Child(vec![0, 1]);
        assert!(child.config(&c.state().decisions).is_err());
    }
}
