//! Fixtures shared by the integration tests: a synthetic lookup table whose
//! front is known (computed by brute force over its rows).

#![allow(dead_code)]

use nas_search::evaluator::{TableColumns, TableEvaluator};
use nas_search::objective::{pareto_front, Objective, ObjectiveSet};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

/// Objectives of the synthetic table, with reference points and ideals.
pub fn objectives() -> ObjectiveSet {
    ObjectiveSet::new(vec![
        Objective::parse("val_accuracy:max:ref=0.5:ideal=1").unwrap(),
        Objective::parse("inference_energy_j_per_1k:min:ref=2:ideal=0").unwrap(),
    ])
    .unwrap()
}

/// Writes a table of MLP-like configurations: `n_layers` 1..=3, a width per
/// active layer from `widths`, and an activation. Accuracy grows with
/// capacity with diminishing returns (tanh a little worse, very deep-narrow
/// nets a little worse); energy grows with multiply-adds. With
/// `fidelities`, rows at 1/9 and 1/3 of training are added with accuracy
/// lowered by a fidelity-dependent offset (rank-preserving).
pub fn write_table(dir: &Path, widths: &[u32], fidelities: bool) -> PathBuf {
    let mut csv = String::from("n_layers,width_1,width_2,width_3,activation,fidelity,val_accuracy,inference_energy_j_per_1k,flops,provenance\n");
    let features = 8.0;
    let mut configs: Vec<Vec<u32>> = Vec::new();
    for &a in widths {
        configs.push(vec![a]);
        for &b in widths {
            configs.push(vec![a, b]);
            for &c in widths {
                configs.push(vec![a, b, c]);
            }
        }
    }
    let mut rng = StdRng::seed_from_u64(2024);
    for layers in &configs {
        for act in ["relu", "tanh"] {
            let mut flops = 0.0;
            let mut prev = features;
            for &w in layers {
                flops += 2.0 * prev * w as f64;
                prev = w as f64;
            }
            flops += 2.0 * prev;
            let capacity = (flops / 100.0).ln_1p();
            let mut acc = 0.6 + 0.35 * (1.0 - (-capacity / 2.0).exp());
            if act == "tanh" {
                acc -= 0.01;
            }
            if layers.len() == 3 && layers.iter().any(|&w| w == widths[0]) {
                acc -= 0.02; // a narrow layer in a deep net hurts
            }
            // Seeded "architecture luck" in accuracy and measurement
            // spread in energy, so most configurations are dominated (as in
            // real results).
            acc += rng.gen_range(-0.03..0.03);
            let energy = (0.02 + flops * 2e-5 * if act == "tanh" { 1.3 } else { 1.0 })
                * rng.gen_range(0.7..1.3);
            let fids: &[f64] = if fidelities {
                &[1.0 / 9.0, 1.0 / 3.0, 1.0]
            } else {
                &[1.0]
            };
            for &f in fids {
                let a_f = acc - 0.1 * (1.0 - f);
                let cells: Vec<String> = (0..3)
                    .map(|i| layers.get(i).map(|w| w.to_string()).unwrap_or_default())
                    .collect();
                let _ = writeln!(
                    csv,
                    "{},{},{act},{f},{a_f:.6},{energy:.6},{flops},simulated",
                    layers.len(),
                    cells.join(",")
                );
            }
        }
    }
    let path = dir.join("table.csv");
    std::fs::write(&path, csv).unwrap();
    path
}

/// Metric columns of the synthetic table.
pub fn metric_names() -> Vec<String> {
    vec![
        "val_accuracy".into(),
        "inference_energy_j_per_1k".into(),
        "flops".into(),
    ]
}

/// Loads the table.
pub fn load(path: &Path) -> TableEvaluator {
    TableEvaluator::from_csv(path, TableColumns::Metrics(&metric_names())).unwrap()
}

/// Keys of the configurations on the table's true front.
pub fn known_front(table: &TableEvaluator) -> BTreeSet<String> {
    let objs = objectives();
    let rows = table.full_fidelity_metrics();
    let points: Vec<Vec<f64>> = rows
        .iter()
        .map(|(_, m)| objs.minimization_vector(m).unwrap())
        .collect();
    pareto_front(&points)
        .into_iter()
        .map(|i| rows[i].0.key())
        .collect()
}
