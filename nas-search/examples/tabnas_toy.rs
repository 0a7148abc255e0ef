//! The controller on the TabNAS toy problem, over many seeds: how often
//! each handling of the parameter budget ends at which child. Run by
//! `bench/tabnas-toy`. Usage: `tabnas_toy [SEEDS]` (default 200).

use nas_search::controller::toy;
use nas_search::controller::{Child, Controller, ControllerSettings, MNAS_SOFT_EXPONENT};
use shared::Provenance;
use std::collections::BTreeMap;

type Settings = fn(u64) -> ControllerSettings;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let seeds: u64 = match std::env::args().nth(1) {
        Some(s) => s.parse().map_err(|e| format!("SEEDS `{s}`: {e}"))?,
        None => 200,
    };
    let budget = toy::PARAMETER_BUDGET;
    // The toy's parameter counts are exact, not measured: simulated.
    let configs: [(&str, Settings); 6] = [
        ("rejection_lr0.1", |s| {
            ControllerSettings::tabnas_rejection(toy::PARAMETER_BUDGET, s, Provenance::Simulated)
        }),
        ("rejection_lr0.05", |s| {
            let mut c = ControllerSettings::tabnas_rejection(
                toy::PARAMETER_BUDGET,
                s,
                Provenance::Simulated,
            );
            c.adam.learning_rate = 0.05;
            c
        }),
        ("rejection_lr0.02", |s| {
            let mut c = ControllerSettings::tabnas_rejection(
                toy::PARAMETER_BUDGET,
                s,
                Provenance::Simulated,
            );
            c.adam.learning_rate = 0.02;
            c
        }),
        ("abs_beta2", |s| {
            ControllerSettings::abs_reward(toy::PARAMETER_BUDGET, 2.0, s, Provenance::Simulated)
        }),
        ("abs_beta0.5", |s| {
            ControllerSettings::abs_reward(toy::PARAMETER_BUDGET, 0.5, s, Provenance::Simulated)
        }),
        ("mnas_soft", |s| {
            ControllerSettings::mnas_soft(
                toy::PARAMETER_BUDGET,
                MNAS_SOFT_EXPONENT,
                s,
                Provenance::Simulated,
            )
        }),
    ];
    let best = Child(toy::BEST_FEASIBLE.to_vec());
    let mut summary = Vec::new();
    for (name, settings) in configs {
        let mut counts: BTreeMap<(usize, usize), u64> = BTreeMap::new();
        let mut over_budget = 0;
        let mut first20 = 0;
        for seed in 0..seeds {
            let mut c = Controller::new(toy::decisions(), settings(seed))?;
            c.run_until(toy::STEPS, toy::quality, toy::parameter_count)?;
            let pick = c.pick(toy::parameter_count)?;
            *counts.entry(toy::widths(&pick.child)?).or_insert(0) += 1;
            if toy::parameter_count(&pick.child)? > budget {
                over_budget += 1;
            }
            if pick.child == best && seed < 20 {
                first20 += 1;
            }
        }
        let shown: Vec<String> = counts
            .iter()
            .map(|((a, b), n)| format!("{a}-{b}:{n}"))
            .collect();
        let found = counts.get(&(4, 2)).copied().unwrap_or(0);
        println!(
            "{name}: picks {} (of {seeds}); 4-2 in {first20} of seeds 0..20; over budget {over_budget}",
            shown.join(" ")
        );
        summary.push(format!("{name}_4_2={found}/{seeds}"));
    }
    println!("{}", summary.join(" "));
    Ok(())
}
