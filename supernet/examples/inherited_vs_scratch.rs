//! Inherited-weight accuracy of supernet children against the same
//! architectures trained from scratch, on one bundled dataset: how well
//! does the supernet rank its children? (Run by `bench/supernet`.)
//!
//! Spaces (ReLU, BatchNorm, no dropout, 12 distinct networks each): MLP
//! with 1 or 2 hidden layers of 8, 32 or 128 units; ResNet with main width
//! 16 or 64 and 1 or 2 blocks of hidden width 16 or 64. FT-Transformer (8
//! networks): token width 8 or 32 with 4 heads, 1 or 2 blocks, ReGLU width
//! 16 or 64, the published dropouts, tokenizer fitted to the data; its
//! from-scratch trainings use the same lr 1e-3 as the supernet and the
//! other backbones (not the published 1e-4, which under-trains these small
//! networks within 40 epochs). The supernet is trained
//! by the sandwich rule (largest, smallest and 2 random children per step,
//! in-place distillation) for as many epochs as a from-scratch training
//! may run; every child is then evaluated with inherited weights (BN
//! recalibrated on 20 batches of 256 training rows) and trained from
//! scratch with `nas-client train`'s defaults (AdamW lr 1e-3, batch 256,
//! up to 40 epochs, patience 8) at the same split. Figures: validation
//! accuracy of both, Kendall τ-b between them, wall times (no energy: this
//! example does not talk to energyd).
//!
//! Usage: `inherited_vs_scratch [DATASET] [EPOCHS] [THREADS] [mlp|resnet|ft-transformer]`
//! (default phoneme 40 2 mlp). Last line: `kendall_tau=… children=… dataset=… …`.

use nn_plan::FtDropouts;
use std::time::Instant;
use supernet::{ChildSettings, EvalSettings, FtSettings, SandwichConfig, Supernet, SupernetSpace};
use tabular_nn::model::layers::{Activation, Norm};
use tabular_nn::{train_and_evaluate, TrainConfig};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let dataset = args.first().map_or("phoneme", String::as_str);
    let epochs: usize = args.get(1).map_or(Ok(40), |s| s.parse())?;
    let threads: usize = args.get(2).map_or(Ok(2), |s| s.parse())?;
    let backbone = args.get(3).map_or("mlp", String::as_str);
    let data = tabular_nn::data::bundled::load(dataset, 0)?;
    let settings = ChildSettings {
        activation: Activation::Relu,
        norm: Norm::Batch,
        dropout: 0.0,
    };
    let space = match backbone {
        "mlp" => SupernetSpace::mlp(vec![vec![8, 32, 128]; 2], vec![1, 2], settings)?,
        "resnet" => {
            SupernetSpace::resnet(vec![16, 64], vec![vec![16, 64]; 2], vec![1, 2], settings)?
        }
        "ft-transformer" => SupernetSpace::ft_transformer(
            vec![8, 32],
            vec![1, 2],
            vec![16, 64],
            FtSettings {
                heads: 4,
                dropouts: FtDropouts::PUBLISHED,
                feature_widths: Vec::new(),
            },
        )?
        .with_feature_widths(data.feature_widths()),
        other => return Err(format!("backbone {other:?}: mlp, resnet or ft-transformer").into()),
    };
    // Every distinct network once (choice vectors that differ only in the
    // widths of skipped layers name the same network).
    let mut children: Vec<Vec<usize>> = vec![Vec::new()];
    for d in space.decisions() {
        children = children
            .into_iter()
            .flat_map(|c| {
                (0..d.choices()).map(move |i| {
                    let mut c = c.clone();
                    c.push(i);
                    c
                })
            })
            .collect();
    }
    let mut distinct = Vec::new();
    for c in &children {
        let c = space.canonical(c)?;
        if !distinct.contains(&c) {
            distinct.push(c);
        }
    }
    let children = distinct;
    let config = SandwichConfig {
        epochs,
        threads,
        ..SandwichConfig::default()
    };
    println!(
        "dataset {dataset}: {} train / {} validation rows, {} features; supernet {}",
        data.train.rows(),
        data.val.rows(),
        data.n_features(),
        space.supernet_spec().describe()
    );
    let started = Instant::now();
    let mut sup = Supernet::for_dataset(space.clone(), &data, 0)?;
    let report = sup.train(&data, &config, None, &mut |e| {
        if e.epoch % 10 == 0 || e.epoch == epochs {
            println!(
                "  supernet epoch {:>3}: loss largest {:.4} smallest {:.4} random {:.4}",
                e.epoch, e.largest_loss, e.smallest_loss, e.random_loss
            );
        }
    })?;
    let supernet_s = report.train_wall_ns as f64 * 1e-9;
    let eval = EvalSettings::default();
    let mut inherited = Vec::new();
    for c in &children {
        inherited.push(sup.evaluate_child(c, &data, &eval)?.score());
    }
    let supernet_total_s = started.elapsed().as_secs_f64();
    let mut scratch = Vec::new();
    let mut scratch_s = 0.0;
    println!(
        "{:<14} {:>10} {:>10} {:>9}",
        "child", "inherited", "scratch", "scratch s"
    );
    for (c, inh) in children.iter().zip(&inherited) {
        let spec = space.child_spec(c)?;
        let cfg = TrainConfig {
            model: spec.clone(),
            threads,
            inference_min_ns: 0,
            measure_inference_energy: false,
            ..TrainConfig::default()
        };
        let t = Instant::now();
        let r = train_and_evaluate(&data, &cfg, None, &mut |_| {})?;
        let s = t.elapsed().as_secs_f64();
        scratch_s += s;
        let acc = r.val.score();
        scratch.push(acc);
        println!(
            "{:<14} {:>10.4} {:>10.4} {:>9.1}",
            spec.backbone.arch_string(),
            inh,
            acc,
            s
        );
    }
    let (tau, _) =
        kendalls::tau_b_with_comparator(&inherited, &scratch, |a: &f64, b: &f64| a.total_cmp(b))?;
    let mean_gap = inherited
        .iter()
        .zip(&scratch)
        .map(|(a, b)| b - a)
        .sum::<f64>()
        / children.len() as f64;
    let argmax = |v: &[f64]| {
        (0..v.len())
            .max_by(|&i, &j| v[i].total_cmp(&v[j]))
            .unwrap_or(0)
    };
    let pick = argmax(&inherited);
    let best = argmax(&scratch);
    // Scratch accuracy lost by picking the supernet's favourite.
    let regret = scratch[best] - scratch[pick];
    println!(
        "supernet: {:.1} s training ({} steps, {} child passes), {:.1} s with the {} evaluations; \
         from scratch: {:.1} s for {} trainings (wall times, 2-core VM, dev build; energy not measured)",
        supernet_s,
        report.steps,
        report.child_passes,
        supernet_total_s,
        children.len(),
        scratch_s,
        children.len()
    );
    println!(
        "kendall_tau={tau:.3} children={} dataset={dataset} backbone={backbone} mean_scratch_minus_inherited={mean_gap:.4} \
         pick_regret={regret:.4} supernet_s={supernet_total_s:.1} scratch_s={scratch_s:.1}",
        children.len()
    );
    Ok(())
}
