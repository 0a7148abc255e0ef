//! The hourly simulator: W worker slots, each hour split by a [`Policy`]
//! between light evaluation (scoring candidates into a dominance-ranked
//! queue) and heavy evaluation (training queued candidates), every joule
//! charged to the hour it was spent in × that hour's intensity.
//!
//! Mechanics taken from the public CE-NAS simulator (cake-lab/CE-NAS, see
//! `shared/research/carbon-distributed.md` §1): one step = one hour, every
//! slot gets 3,600 s per step; heavy slots take the queued candidate with
//! the lowest dominance count (by the light estimates); a training not
//! finished within the hour is preempted and resumed in a later hour
//! (their `halfwork` queue), resumed work before new work.
//!
//! Ours (the public code differs or says nothing):
//! - light evaluations are charged too (their joules × the hour's
//!   intensity); CE-NAS charged only training GPU time, at an implicit 1 kW;
//!   we charge each row's training joules (energyd estimates, scaled);
//! - a heavy slot with nothing to train scores candidates for the rest of
//!   the hour instead; a slot with nothing at all to do draws no energy
//!   (idle power is not charged; in CE-NAS likewise);
//! - candidates scored in hour h join the queue at the end of hour h
//!   (causal: nothing is trained on a score not yet computed);
//! - the queue is unbounded (CE-NAS: capacity 10) and sampling is a random
//!   permutation of the table (CE-NAS: LaMOO-partitioned sampling);
//! - the carbon-agnostic baseline trains in a random order without any
//!   light work (vanilla NAS with random sampling).

use rand::seq::SliceRandom;
use rand::SeedableRng;

use crate::error::ScheduleError;
use crate::queue::DominanceQueue;
use crate::table::{Candidate, LightEstimates};

/// Seconds of one slot in one simulated hour.
pub const SLOT_SECONDS: f64 = 3600.0;
const JOULES_PER_KWH: f64 = 3.6e6;
/// Remaining work below this is finished (float round-off of splits).
const EPS_SECONDS: f64 = 1e-9;

/// How heavy slots choose what to train next (after resumed work).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Order {
    /// A seeded random order of the whole table, no light work needed.
    Random,
    /// The queued (light-scored) candidate dominated by the fewest others.
    Dominance,
}

/// What a policy sees at the start of an hour.
#[derive(Debug, Clone, Copy)]
pub struct HourView<'a> {
    /// Index of this hour in `intensity`.
    pub hour: usize,
    /// The whole trace up to and including this hour (the current hour's
    /// value is known, as in the CE-NAS simulator's state).
    pub intensity: &'a [f64],
    /// Worker slots.
    pub slots: usize,
    /// Candidates scored and waiting to be trained.
    pub queued: usize,
    /// Candidates not yet scored.
    pub unscored: usize,
    /// Trainings started and preempted, waiting to resume.
    pub in_progress: usize,
}

/// Splits each hour's slots: returns how many do heavy work.
pub trait Policy {
    /// Name for reports.
    fn name(&self) -> String;
    /// How heavy slots pick candidates.
    fn order(&self) -> Order;
    /// Heavy slots this hour (clamped to `view.slots`); the rest do light work.
    fn heavy_slots(&mut self, view: &HourView) -> usize;
}

/// Settings of one simulated search.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SimConfig {
    /// Worker slots (≥ 1).
    pub slots: usize,
    /// Index into the intensity series of the first simulated hour.
    pub start: usize,
    /// Simulated hours at most (the run also stops when all is trained).
    pub horizon_hours: usize,
    /// Seed of the sampling and random orders.
    pub seed: u64,
    /// Facility energy over IT energy: every charge's grams are × PUE
    /// (its joules stay IT energy, as measured).
    pub pue: carbon::Pue,
}

/// Kind of an evaluation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EvalKind {
    /// Light scoring.
    Light,
    /// Training.
    Heavy,
}

/// Energy and carbon of one piece of one evaluation, within one hour.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Charge {
    /// Candidate index.
    pub candidate: usize,
    /// Light or heavy.
    pub kind: EvalKind,
    /// Index of the hour in the intensity series.
    pub hour: usize,
    /// Slot seconds spent.
    pub seconds: f64,
    /// Joules spent (simulated, from the table's estimated energies).
    pub joules: f64,
    /// gCO2eq = joules / 3.6e6 × intensity of the hour × PUE.
    pub grams: f64,
}

/// One simulated hour.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct HourRecord {
    /// Index of the hour in the intensity series.
    pub hour: usize,
    /// gCO2eq/kWh of the hour.
    pub intensity: f64,
    /// Slots the policy gave to heavy work.
    pub heavy_slots: usize,
    /// Light evaluations done.
    pub light_evaluations: usize,
    /// Slot seconds of training done.
    pub heavy_seconds: f64,
    /// Joules spent (light + heavy).
    pub joules: f64,
    /// gCO2eq emitted.
    pub grams: f64,
}

/// A finished training.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Completion {
    /// Candidate index.
    pub candidate: usize,
    /// Simulated hours since the start.
    pub time_h: f64,
    /// Cumulative gCO2eq emitted by the search up to that instant.
    pub grams: f64,
}

/// Everything a simulated search did.
#[derive(Debug, Clone, PartialEq)]
pub struct SimResult {
    /// Policy name.
    pub policy: String,
    /// One per simulated hour.
    pub hours: Vec<HourRecord>,
    /// Every charged piece of work.
    pub charges: Vec<Charge>,
    /// Trainings in the order they finished.
    pub completions: Vec<Completion>,
    /// Trainings started but not finished when the horizon ended.
    pub unfinished: Vec<(usize, f64)>,
}

impl SimResult {
    /// Total gCO2eq.
    pub fn total_grams(&self) -> f64 {
        self.hours.iter().map(|h| h.grams).sum()
    }
}

/// A piece of work inside an hour: `[start, end)` seconds of one slot.
struct Segment {
    start: f64,
    end: f64,
    joules: f64,
}

/// Cumulative joules of the hour's segments up to second `t`: each
/// segment's energy accrues evenly over its span.
fn joules_until(segments: &[Segment], t: f64) -> f64 {
    segments
        .iter()
        .map(|s| {
            if s.end <= s.start {
                if t >= s.end {
                    s.joules
                } else {
                    0.0
                }
            } else {
                s.joules * ((t - s.start) / (s.end - s.start)).clamp(0.0, 1.0)
            }
        })
        .sum()
}

/// The simulator's queue: table rows with their light estimates.
fn push_row(queue: &mut DominanceQueue<usize>, light: &LightEstimates, c: usize) {
    queue.push(c, light.score[c], light.predicted_energy[c]);
}

/// Runs one simulated search over `intensity` (gCO2eq/kWh, one value per
/// hour, gap-free) from `config.start`.
pub fn simulate(
    candidates: &[Candidate],
    light: &LightEstimates,
    intensity: &[f64],
    policy: &mut dyn Policy,
    config: SimConfig,
) -> Result<SimResult, ScheduleError> {
    let n = candidates.len();
    light.validate(n)?;
    if config.slots == 0 {
        return Err(ScheduleError::Config(
            "need at least one worker slot".into(),
        ));
    }
    if config.start + config.horizon_hours > intensity.len() {
        return Err(ScheduleError::Config(format!(
            "hours {}..{} lie beyond the trace's {} hours",
            config.start,
            config.start + config.horizon_hours,
            intensity.len()
        )));
    }
    let order = policy.order();
    let mut rng = rand::rngs::StdRng::seed_from_u64(config.seed);
    let mut perm: Vec<usize> = (0..n).collect();
    perm.shuffle(&mut rng);
    // Popped from the back: `unscored` for light work, or the training
    // order of the carbon-agnostic baseline.
    perm.reverse();
    let mut unscored = perm;
    let mut queue = DominanceQueue::new();
    // Preempted trainings: (candidate, remaining seconds), oldest first.
    let mut in_progress: Vec<(usize, f64)> = Vec::new();
    let mut result = SimResult {
        policy: policy.name(),
        hours: Vec::new(),
        charges: Vec::new(),
        completions: Vec::new(),
        unfinished: Vec::new(),
    };
    let mut trained = 0usize;
    let mut grams_before = 0.0;
    for k in 0..config.horizon_hours {
        // A light-only search keeps its (idle, uncharged) slots to the horizon.
        if trained == n {
            break;
        }
        let hour = config.start + k;
        let ci = intensity[hour];
        if !(ci.is_finite() && ci >= 0.0) {
            return Err(ScheduleError::Config(format!(
                "intensity {ci} at hour index {hour} is not a finite non-negative value"
            )));
        }
        let view = HourView {
            hour,
            intensity: &intensity[..=hour],
            slots: config.slots,
            queued: queue.len(),
            unscored: if order == Order::Random {
                0
            } else {
                unscored.len()
            },
            in_progress: in_progress.len(),
        };
        let heavy = policy.heavy_slots(&view).min(config.slots);
        let light_slots = if order == Order::Random {
            0
        } else {
            config.slots - heavy
        };
        let mut segments: Vec<Segment> = Vec::new();
        let pue = config.pue.get();
        let charge_of = |joules: f64| joules / JOULES_PER_KWH * ci * pue;
        let first_charge = result.charges.len();

        // Heavy work: resumed trainings first, then new ones.
        let mut carried: Vec<(usize, f64)> = Vec::new();
        let mut finished_now: Vec<(usize, f64)> = Vec::new();
        let mut heavy_seconds = 0.0;
        in_progress.reverse(); // pop oldest first
                               // When each slot is free for light work: light slots from the
                               // hour's start, heavy slots once they run out of training (a slot
                               // with nothing to train scores instead of idling).
        let mut free_from: Vec<f64> = vec![0.0; light_slots];
        for _slot in 0..heavy {
            let mut t = 0.0;
            while t < SLOT_SECONDS {
                let job = if let Some(job) = in_progress.pop() {
                    Some(job)
                } else {
                    let next = match order {
                        Order::Random => unscored.pop(),
                        Order::Dominance => queue.pop(),
                    };
                    next.map(|c| (c, candidates[c].train_seconds))
                };
                let Some((c, remaining)) = job else { break };
                let run = remaining.min(SLOT_SECONDS - t);
                let cand = &candidates[c];
                let joules = cand.train_joules * run / cand.train_seconds;
                segments.push(Segment {
                    start: t,
                    end: t + run,
                    joules,
                });
                result.charges.push(Charge {
                    candidate: c,
                    kind: EvalKind::Heavy,
                    hour,
                    seconds: run,
                    joules,
                    grams: charge_of(joules),
                });
                heavy_seconds += run;
                t += run;
                let left = remaining - run;
                if left <= EPS_SECONDS {
                    finished_now.push((c, t));
                } else {
                    carried.push((c, left));
                }
            }
            if order == Order::Dominance && t < SLOT_SECONDS {
                free_from.push(t);
            }
        }
        in_progress.reverse();
        in_progress.extend(carried);

        // Light work: each evaluation on the slot free earliest.
        let mut scored_now = Vec::new();
        if light.cost.seconds > 0.0 {
            loop {
                let earliest = free_from
                    .iter()
                    .copied()
                    .enumerate()
                    .min_by(|a, b| a.1.total_cmp(&b.1));
                let Some((slot, t)) = earliest else { break };
                if t + light.cost.seconds > SLOT_SECONDS + EPS_SECONDS {
                    break;
                }
                let Some(c) = unscored.pop() else { break };
                free_from[slot] = t + light.cost.seconds;
                segments.push(Segment {
                    start: t,
                    end: t + light.cost.seconds,
                    joules: light.cost.joules,
                });
                push_light(
                    &mut result.charges,
                    c,
                    hour,
                    light,
                    charge_of(light.cost.joules),
                );
                scored_now.push(c);
            }
        } else if !free_from.is_empty() {
            // Free light evaluations: everything left is scored at once.
            while let Some(c) = unscored.pop() {
                segments.push(Segment {
                    start: 0.0,
                    end: 0.0,
                    joules: light.cost.joules,
                });
                push_light(
                    &mut result.charges,
                    c,
                    hour,
                    light,
                    charge_of(light.cost.joules),
                );
                scored_now.push(c);
            }
        }

        let joules: f64 = result.charges[first_charge..]
            .iter()
            .map(|c| c.joules)
            .sum();
        let grams: f64 = result.charges[first_charge..].iter().map(|c| c.grams).sum();
        for (c, t) in finished_now {
            result.completions.push(Completion {
                candidate: c,
                time_h: k as f64 + t / SLOT_SECONDS,
                grams: grams_before + charge_of(joules_until(&segments, t)),
            });
            trained += 1;
        }
        result
            .completions
            .sort_by(|a, b| a.time_h.total_cmp(&b.time_h));
        for c in scored_now {
            push_row(&mut queue, light, c);
        }
        result.hours.push(HourRecord {
            hour,
            intensity: ci,
            heavy_slots: heavy,
            light_evaluations: result.charges[first_charge..]
                .iter()
                .filter(|c| c.kind == EvalKind::Light)
                .count(),
            heavy_seconds,
            joules,
            grams,
        });
        grams_before += grams;
    }
    result.unfinished = in_progress;
    Ok(result)
}

fn push_light(
    charges: &mut Vec<Charge>,
    c: usize,
    hour: usize,
    light: &LightEstimates,
    grams: f64,
) {
    charges.push(Charge {
        candidate: c,
        kind: EvalKind::Light,
        hour,
        seconds: light.cost.seconds,
        joules: light.cost.joules,
        grams,
    });
}
