//! The simulator against hand-computed schedules and grams, its
//! conservation of work and energy, and the policies' sanity.

use std::collections::HashMap;

use carbon_schedule::policy::{CeNasHeuristic, TrainEverything};
use carbon_schedule::report::{curve, hypervolume_under_cap, reference_point};
use carbon_schedule::sim::{simulate, EvalKind, HourView, Order, Policy, SimConfig};
use carbon_schedule::table::{Candidate, LightCost, LightEstimates, Table};
use carbon_schedule::ScheduleError;
use rand::{Rng, SeedableRng};

/// Heavy slots from a fixed list, one entry per simulated hour.
struct Fixed {
    start: usize,
    heavy: Vec<usize>,
}

impl Policy for Fixed {
    fn name(&self) -> String {
        "fixed".into()
    }
    fn order(&self) -> Order {
        Order::Dominance
    }
    fn heavy_slots(&mut self, view: &HourView) -> usize {
        self.heavy[view.hour - self.start]
    }
}

fn cand(acc: f64, energy: f64, secs: f64, joules: f64) -> Candidate {
    Candidate {
        val_accuracy: acc,
        inference_energy_j_per_1k: energy,
        train_seconds: secs,
        train_joules: joules,
    }
}

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() <= 1e-9 * (1.0 + a.abs().max(b.abs()))
}

#[test]
fn pue_multiplies_every_charge_and_leaves_the_joules() {
    // Two candidates: c0 1 h and 1 kWh, c1 0.5 h and 0.5 kWh; light work
    // 0.1 kWh each, 1200 s. One slot; hour 0 light (100 g/kWh), hour 1
    // heavy (400 g/kWh), at PUE 1.25.
    let cands = vec![cand(0.9, 1.0, 3600.0, 3.6e6), cand(0.8, 0.5, 1800.0, 1.8e6)];
    let light = LightEstimates {
        name: "hand".into(),
        score: vec![2.0, 1.0],
        predicted_energy: vec![1.0, 0.5],
        cost: LightCost {
            seconds: 1200.0,
            joules: 0.36e6,
            provenance: "test".into(),
        },
    };
    let mut policy = Fixed {
        start: 0,
        heavy: vec![0, 1],
    };
    let cfg = SimConfig {
        slots: 1,
        start: 0,
        horizon_hours: 2,
        seed: 1,
        pue: carbon::Pue::new(1.25).unwrap(),
    };
    let r = simulate(&cands, &light, &[100.0, 400.0], &mut policy, cfg).unwrap();
    // Hour 0: 2 light evaluations, 0.2 kWh × 100 × 1.25 = 25 g.
    // Hour 1: the slot trains c0 for the whole hour (it is dominated by
    //   nobody and scores higher): 1 kWh × 400 × 1.25 = 500 g; c1 waits.
    assert_eq!(r.hours[0].light_evaluations, 2);
    assert!(close(r.hours[0].grams, 25.0), "{:?}", r.hours);
    assert!(close(r.hours[0].joules, 0.72e6));
    assert!(close(r.hours[1].grams, 500.0), "{:?}", r.hours);
    assert!(close(r.hours[1].joules, 3.6e6));
    for c in &r.charges {
        let i = if c.hour == 0 { 100.0 } else { 400.0 };
        assert!(close(c.grams, c.joules / 3.6e6 * i * 1.25));
    }
    assert!(close(r.total_grams(), 525.0));
}

#[test]
fn three_hours_three_candidates_by_hand() {
    // c0: 1.5 h, 1 kWh; c1: 0.5 h, 0.5 kWh; c2: 1 h, 2 kWh.
    let cands = vec![
        cand(0.9, 1.0, 5400.0, 3.6e6),
        cand(0.8, 0.5, 1800.0, 1.8e6),
        cand(0.7, 2.0, 3600.0, 7.2e6),
    ];
    // By the light estimates c0 and c1 both dominate c2, so the queue
    // gives c0 (count 0, higher score), c1 (count 0), then c2 (count 2).
    let light = LightEstimates {
        name: "hand".into(),
        score: vec![3.0, 2.0, 1.0],
        predicted_energy: vec![1.0, 0.5, 2.0],
        cost: LightCost {
            seconds: 1200.0,
            joules: 0.36e6, // 0.1 kWh
            provenance: "test".into(),
        },
    };
    let intensity = [100.0, 400.0, 200.0];
    let mut policy = Fixed {
        start: 0,
        heavy: vec![0, 1, 2],
    };
    let cfg = SimConfig {
        slots: 2,
        start: 0,
        horizon_hours: 3,
        seed: 7,
        pue: carbon::Pue::new(1.0).unwrap(),
    };
    let r = simulate(&cands, &light, &intensity, &mut policy, cfg).unwrap();
    // Hour 0 (100 g/kWh): two light slots, 3 evaluations of 0.1 kWh: 30 g.
    // Hour 1 (400): one heavy slot trains c0 for 3600 of 5400 s,
    //   2/3 kWh: 266.67 g; c0 carries 1800 s over.
    // Hour 2 (200): slot 0 resumes c0 (1800 s, 1/3 kWh: 66.67 g), then c1
    //   (1800 s, 0.5 kWh: 100 g); slot 1 trains c2 (2 kWh: 400 g).
    let grams: Vec<f64> = r.hours.iter().map(|h| h.grams).collect();
    let want = [30.0, 800.0 / 3.0, 200.0 / 3.0 + 100.0 + 400.0];
    assert_eq!(grams.len(), 3);
    for (g, w) in grams.iter().zip(want) {
        assert!(close(*g, w), "{grams:?} vs {want:?}");
    }
    assert_eq!(r.hours[0].light_evaluations, 3);
    assert_eq!(
        r.hours.iter().map(|h| h.heavy_slots).collect::<Vec<_>>(),
        [0, 1, 2]
    );
    assert!(close(r.total_grams(), 30.0 + 800.0 / 3.0 + 1700.0 / 3.0));
    // Completions: c0 at 2.5 h, having emitted 30 + 266.67 + (c0's
    // 1/3 kWh + half of c2's 2 kWh) × 200 = 563.33 g; c1 and c2 at 3 h.
    let order: Vec<usize> = r.completions.iter().map(|c| c.candidate).collect();
    assert_eq!(order, [0, 1, 2]);
    assert!(close(r.completions[0].time_h, 2.5));
    assert!(close(
        r.completions[0].grams,
        30.0 + 800.0 / 3.0 + 800.0 / 3.0
    ));
    assert!(close(r.completions[2].time_h, 3.0));
    assert!(close(
        r.completions[2].grams,
        30.0 + 800.0 / 3.0 + 1700.0 / 3.0
    ));
    assert!(r.unfinished.is_empty());
    // Hypervolume against the table's nadir (−0.7, 2.0): c0 adds
    // 0.2 × 1.0 = 0.2; c1 adds (0.8−0.7) × (2.0−0.5) − overlap with c0
    // (0.1 × 1.0) = 0.05; c2 lies on the reference and adds nothing.
    let reference = reference_point(&cands);
    let cv = curve(&r, &cands, &reference);
    assert!(close(cv[0].hypervolume, 0.2));
    assert!(close(cv[1].hypervolume, 0.25));
    assert!(close(cv[2].hypervolume, 0.25));
    assert!(close(hypervolume_under_cap(&cv, 600.0), 0.2));
    assert_eq!(hypervolume_under_cap(&cv, 500.0), 0.0);
}

fn random_setting(seed: u64, n: usize, hours: usize) -> (Vec<Candidate>, LightEstimates, Vec<f64>) {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let cands: Vec<Candidate> = (0..n)
        .map(|_| {
            cand(
                rng.gen_range(0.5..0.9),
                rng.gen_range(0.1..2.0),
                rng.gen_range(300.0..9000.0),
                rng.gen_range(1e5..5e6),
            )
        })
        .collect();
    let light = LightEstimates {
        name: "random".into(),
        score: (0..n).map(|_| rng.gen()).collect(),
        predicted_energy: (0..n).map(|_| rng.gen()).collect(),
        cost: LightCost {
            seconds: 700.0,
            joules: 2e4,
            provenance: "test".into(),
        },
    };
    let intensity: Vec<f64> = (0..hours).map(|_| rng.gen_range(20.0..600.0)).collect();
    (cands, light, intensity)
}

#[test]
fn every_evaluation_is_charged_once_with_carry_over() {
    for (seed, horizon) in [(1u64, 200usize), (2, 9), (3, 4)] {
        let (cands, light, intensity) = random_setting(seed, 30, 240);
        let mut policy = CeNasHeuristic {
            lookback_hours: 24,
            forecasts: HashMap::new(),
        };
        let cfg = SimConfig {
            slots: 3,
            start: 30,
            horizon_hours: horizon,
            seed,
            pue: carbon::Pue::new(1.0).unwrap(),
        };
        let r = simulate(&cands, &light, &intensity, &mut policy, cfg).unwrap();
        let mut light_count = vec![0usize; cands.len()];
        let mut heavy_secs = vec![0.0f64; cands.len()];
        let mut heavy_joules = vec![0.0f64; cands.len()];
        for c in &r.charges {
            assert!(close(c.grams, c.joules / 3.6e6 * intensity[c.hour]));
            match c.kind {
                EvalKind::Light => light_count[c.candidate] += 1,
                EvalKind::Heavy => {
                    heavy_secs[c.candidate] += c.seconds;
                    heavy_joules[c.candidate] += c.joules;
                }
            }
        }
        assert!(light_count.iter().all(|&k| k <= 1));
        let mut done = vec![false; cands.len()];
        for c in &r.completions {
            assert!(!done[c.candidate], "trained twice");
            done[c.candidate] = true;
            assert_eq!(light_count[c.candidate], 1, "trained without a score");
            assert!(close(
                heavy_secs[c.candidate],
                cands[c.candidate].train_seconds
            ));
            assert!(close(
                heavy_joules[c.candidate],
                cands[c.candidate].train_joules
            ));
        }
        for &(c, left) in &r.unfinished {
            assert!(!done[c]);
            assert!(close(heavy_secs[c] + left, cands[c].train_seconds));
            assert!(close(
                heavy_joules[c],
                cands[c].train_joules * heavy_secs[c] / cands[c].train_seconds
            ));
        }
        // Nothing else was trained.
        for i in 0..cands.len() {
            if !done[i] && !r.unfinished.iter().any(|u| u.0 == i) {
                assert_eq!(heavy_secs[i], 0.0);
            }
        }
        // Hours and charges agree, and no slot worked more than an hour.
        let by_hours: f64 = r.hours.iter().map(|h| h.grams).sum();
        let by_charges: f64 = r.charges.iter().map(|c| c.grams).sum();
        assert!(close(by_hours, by_charges));
        for h in &r.hours {
            let secs: f64 = r
                .charges
                .iter()
                .filter(|c| c.hour == h.hour)
                .map(|c| c.seconds)
                .sum();
            assert!(secs <= 3.0 * 3600.0 + 1e-6);
            assert!(h.heavy_seconds <= h.heavy_slots as f64 * 3600.0 + 1e-6);
        }
        if horizon == 200 {
            assert_eq!(r.completions.len(), cands.len(), "long horizon trains all");
            let last = r.completions.last().unwrap();
            assert!(close(last.grams, r.total_grams()));
        }
    }
}

#[test]
fn heuristic_trains_more_in_the_clean_half() {
    // 48 h of history alternating 100/400 every 6 h, then a clean day
    // (100) and a dirty day (400): with a 48-h lookback the range is
    // always [100, 400], so clean hours get level 9 (9 of 10 slots), dirty
    // hours the floor of one slot.
    let mut intensity: Vec<f64> = (0..48)
        .map(|h| if (h / 6) % 2 == 0 { 100.0 } else { 400.0 })
        .collect();
    intensity.extend(std::iter::repeat_n(100.0, 24));
    intensity.extend(std::iter::repeat_n(400.0, 24));
    let (cands, mut light, _) = random_setting(5, 400, 1);
    light.cost.seconds = 10.0;
    let cands: Vec<Candidate> = cands
        .into_iter()
        .map(|c| Candidate {
            train_seconds: 3600.0,
            ..c
        })
        .collect();
    let mut policy = CeNasHeuristic {
        lookback_hours: 48,
        forecasts: HashMap::new(),
    };
    let cfg = SimConfig {
        slots: 10,
        start: 48,
        horizon_hours: 48,
        seed: 1,
        pue: carbon::Pue::new(1.0).unwrap(),
    };
    let r = simulate(&cands, &light, &intensity, &mut policy, cfg).unwrap();
    let clean: f64 = r.hours[..24].iter().map(|h| h.heavy_seconds).sum();
    let dirty: f64 = r.hours[24..].iter().map(|h| h.heavy_seconds).sum();
    assert!(r.hours[..24].iter().all(|h| h.heavy_slots == 9));
    assert!(r.hours[24..].iter().all(|h| h.heavy_slots == 1));
    assert!(clean > 5.0 * dirty, "clean {clean} dirty {dirty}");
    // The carbon-agnostic baseline trains at full rate in both halves.
    let te = simulate(&cands, &light, &intensity, &mut TrainEverything, cfg).unwrap();
    let te_clean: f64 = te.hours[..24].iter().map(|h| h.heavy_seconds).sum();
    assert!(close(te_clean, 24.0 * 10.0 * 3600.0));
}

#[test]
fn heuristic_allocation_levels() {
    assert_eq!(CeNasHeuristic::allocation(8, 100.0, 100.0, 400.0), 7); // level 9: ⌊72/10⌋
    assert_eq!(CeNasHeuristic::allocation(8, 400.0, 100.0, 400.0), 1); // level 0, floor of 1
    assert_eq!(CeNasHeuristic::allocation(8, 250.0, 100.0, 400.0), 4); // level round(4.5)=5: ⌊40/10⌋
    assert_eq!(CeNasHeuristic::allocation(8, 5.0, 5.0, 5.0), 4); // flat range: x = 0.5
}

#[test]
fn malformed_table_names_line_and_field() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("t.csv");
    std::fs::write(
        &p,
        "val_accuracy,inference_energy_j_per_1k,training_energy_j,train_time_s\n0.8,0.1,2.0,3.0\n0.7,0.2,x,3.0\n",
    )
    .unwrap();
    let e = Table::load(&p).unwrap_err();
    assert!(
        matches!(&e, ScheduleError::Table { line: 3, field, .. } if field == "training_energy_j"),
        "{e}"
    );
    std::fs::write(
        &p,
        "val_accuracy,inference_energy_j_per_1k,training_energy_j\n0.8,0.1,2.0\n",
    )
    .unwrap();
    let e = Table::load(&p).unwrap_err();
    assert!(
        matches!(&e, ScheduleError::Table { line: 1, field, .. } if field == "train_time_s"),
        "{e}"
    );
}

#[test]
fn idle_heavy_slots_score_and_nothing_trains_unscored() {
    // All slots heavy from the first hour: the queue is empty, so the
    // slots score instead (3 slots × ⌊3600/700⌋ = 15 ≥ 12 candidates);
    // training starts in hour 1.
    let (cands, light, intensity) = random_setting(9, 12, 100);
    let r = simulate(
        &cands,
        &light,
        &intensity,
        &mut carbon_schedule::policy::AllHeavyQueued,
        SimConfig {
            slots: 3,
            start: 0,
            horizon_hours: 100,
            seed: 3,
            pue: carbon::Pue::new(1.0).unwrap(),
        },
    )
    .unwrap();
    assert_eq!(r.hours[0].light_evaluations, 12);
    assert_eq!(r.hours[0].heavy_seconds, 0.0);
    assert!(r
        .charges
        .iter()
        .filter(|c| c.kind == EvalKind::Heavy)
        .all(|c| c.hour >= 1));
    assert_eq!(r.completions.len(), 12);
}

#[test]
fn percentile_is_nearest_rank_and_tuning_picks_the_least_carbon() {
    use carbon_schedule::policy::percentile;
    let v = [5.0, 1.0, 4.0, 2.0, 3.0];
    assert_eq!(percentile(&v, 20.0), 1.0);
    assert_eq!(percentile(&v, 50.0), 3.0);
    assert_eq!(percentile(&v, 100.0), 5.0);
    // Clean hours every other hour: a low percentile waits for them.
    let intensity: Vec<f64> = (0..400)
        .map(|h| if h % 2 == 0 { 50.0 } else { 500.0 })
        .collect();
    let (cands, light, _) = random_setting(4, 20, 1);
    let reference = reference_point(&cands);
    let setting = carbon_schedule::tune::Setting {
        candidates: &cands,
        light: &light,
        intensity: &intensity,
        slots: 4,
        pue: carbon::Pue::new(1.0).unwrap(),
        horizon_hours: 150,
        reference: &reference,
    };
    let all: Vec<usize> = (0..cands.len()).collect();
    let target = 0.98 * carbon_schedule::report::hypervolume_of(&cands, &all, &reference);
    let (best, scores) =
        carbon_schedule::tune::choose_threshold(&setting, &[50.0, 100.0], 48, &[(200, 1)], target)
            .unwrap();
    let min = scores.iter().map(|s| s.1).fold(f64::INFINITY, f64::min);
    let best_score = scores
        .iter()
        .find(|s| s.0.percentile == best.percentile && s.0.floor == best.floor)
        .unwrap()
        .1;
    assert_eq!(best_score, min);
    // Waiting for the 50 g hours (p50, floor 0) beats training in every hour.
    assert_eq!((best.percentile, best.floor), (50.0, 0));
}
