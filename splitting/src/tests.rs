//! Acceptance tests of splitting over whole networks.

use crate::eigen::exact_eigenpairs;
use crate::matrices::splitting_matrices;
use crate::rayleigh::{fast_eigenpairs, RayleighConfig};
use crate::site::split_sites;
use crate::split::{apply_splits, SplitPlan};
use ndarray::{Array1, Array2, ArrayView1, ArrayView2};
use nn_plan::{Activation, Backbone, ModelSpec, Norm};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use tabular_nn::kernels::NullSink;
use tabular_nn::model::layers::{Ctx, Layer, Mode};
use tabular_nn::model::{BuildNetwork, Network};
use tabular_nn::train::{LossKind, Optimizer, OptimizerKind};

fn spec(backbone: Backbone, activation: Activation, norm: Norm) -> ModelSpec {
    ModelSpec {
        backbone,
        activation,
        dropout: 0.0,
        norm,
    }
}

/// Rows of 4 features in ±1.5 and a smooth regression target.
fn regression_data(rows: usize, seed: u64) -> (Array2<f32>, Array1<f32>) {
    let mut rng = SmallRng::seed_from_u64(seed);
    let x = Array2::from_shape_fn((rows, 4), |_| rng.gen_range(-1.5f32..1.5));
    let y = Array1::from_shape_fn(rows, |i| {
        (2.0 * x[[i, 0]]).sin() + x[[i, 1]] * x[[i, 2]] - 0.5 * x[[i, 3]].abs()
    });
    (x, y)
}

/// Two classes split by a circle.
fn classification_data(rows: usize, seed: u64) -> (Array2<f32>, Array1<f32>) {
    let mut rng = SmallRng::seed_from_u64(seed);
    let x = Array2::from_shape_fn((rows, 5), |_| rng.gen_range(-1.5f32..1.5));
    let y = Array1::from_shape_fn(rows, |i| {
        f32::from(u8::from(x[[i, 0]].powi(2) + x[[i, 1]].powi(2) > 1.0))
    });
    (x, y)
}

/// Eval-mode outputs.
fn outputs(net: &mut Network, x: ArrayView2<f32>) -> Array2<f32> {
    let mut sink = NullSink;
    let mut ctx = Ctx::new(&mut sink, 0);
    net.body.forward(x, Mode::Eval, &mut ctx);
    net.body.output().to_owned()
}

fn mean_loss(net: &mut Network, x: ArrayView2<f32>, y: ArrayView1<f32>, kind: LossKind) -> f64 {
    let mut sink = NullSink;
    let mut ctx = Ctx::new(&mut sink, 0);
    net.body.forward(x, Mode::Eval, &mut ctx);
    kind.build(x.nrows(), net.outputs)
        .forward(net.body.output(), y, &mut ctx)
}

/// Gives every batch norm non-trivial γ, β and running statistics, so a
/// split that mishandled them would show.
fn perturb_norms(net: &mut Network, seed: u64) {
    let mut rng = SmallRng::seed_from_u64(seed);
    tabular_nn::model::visit::visit_layers(&mut net.body, &mut |_, layer| {
        if let tabular_nn::model::layers::LayerRef::BatchNorm(bn) = layer {
            bn.visit_parameters(&mut |mut p| {
                p.value.mapv_inplace(|v| v + rng.gen_range(-0.4..0.4));
            });
            bn.visit_buffers(&mut |mut b| {
                let name = b.name;
                b.value.mapv_inplace(|v| {
                    if name == "running_var" {
                        v * rng.gen_range(0.5..2.0)
                    } else {
                        v + rng.gen_range(-0.5..0.5)
                    }
                });
            });
        }
    });
}

fn random_plans(net: &mut Network, per_site: usize, seed: u64) -> Vec<SplitPlan> {
    let mut rng = SmallRng::seed_from_u64(seed);
    let sites = split_sites(net).expect("sites");
    let mut plans = Vec::new();
    for (i, s) in sites.iter().enumerate() {
        for neuron in (0..s.width)
            .step_by((s.width / per_site).max(1))
            .take(per_site)
        {
            let mut d: Vec<f64> = (0..=s.fan_in).map(|_| rng.gen_range(-1.0..1.0)).collect();
            let n = d.iter().map(|v| v * v).sum::<f64>().sqrt();
            d.iter_mut().for_each(|v| *v /= n);
            plans.push(SplitPlan {
                site: i,
                neuron,
                direction: d,
            });
        }
    }
    plans
}

fn max_abs_diff(a: &Array2<f32>, b: &Array2<f32>) -> f32 {
    assert_eq!(a.dim(), b.dim());
    a.iter()
        .zip(b)
        .fold(0.0f32, |m, (x, y)| m.max((x - y).abs()))
}

/// A split leaves the network's function unchanged: exactly (to float
/// rounding) at ε = 0, for an MLP with batch norm and a ResNet; at ε > 0
/// the change is second order (halving ε quarters it).
#[test]
fn split_keeps_the_network_function() {
    let (x, _) = classification_data(64, 1);
    let backbones = [
        (Backbone::Mlp { widths: vec![6, 5] }, Norm::Batch),
        (
            Backbone::Resnet {
                d_main: 6,
                d_hidden: vec![5, 7],
            },
            Norm::Batch,
        ),
        (Backbone::Mlp { widths: vec![6, 5] }, Norm::None),
    ];
    for (backbone, norm) in backbones {
        let spec = spec(backbone, Activation::Silu, norm);
        let mut net = spec.build(5, 2, 3).unwrap();
        perturb_norms(&mut net, 4);
        let before = outputs(&mut net, x.view());
        let scale = before.iter().fold(0.0f32, |m, v| m.max(v.abs()));
        let plans = random_plans(&mut net, 2, 5);
        let sites = split_sites(&mut net).unwrap();
        let widths_before = net.widths().unwrap().active_widths();

        let mut at_zero = spec.build(5, 2, 3).unwrap();
        perturb_norms(&mut at_zero, 4);
        apply_splits(&mut at_zero, &sites, &plans, 0.0, None).unwrap();
        let after = outputs(&mut at_zero, x.view());
        assert!(
            max_abs_diff(&before, &after) <= 1e-5 * scale.max(1.0),
            "{}: ε = 0 changed outputs by {}",
            spec.describe(),
            max_abs_diff(&before, &after)
        );
        let grown = at_zero.widths().unwrap().active_widths();
        assert_ne!(grown, widths_before, "the network grew");

        let change = |eps: f32| {
            let mut n = spec.build(5, 2, 3).unwrap();
            perturb_norms(&mut n, 4);
            apply_splits(&mut n, &sites, &plans, eps, None).unwrap();
            max_abs_diff(&before, &outputs(&mut n, x.view()))
        };
        let (big, small) = (change(0.1), change(0.05));
        assert!(big > 0.0 && big < 0.05 * scale.max(1.0), "{big}");
        let ratio = big / small;
        assert!(
            (3.0..5.0).contains(&ratio),
            "{}: change at ε=0.1 {big}, at 0.05 {small}: not second order",
            spec.describe()
        );
    }
}

/// Right after a split along the minimum eigenvectors, the loss falls by
/// (ε²/2)·Σλ (the second-order prediction) on a small regression problem,
/// with and without a batch norm folded into the splitting matrices.
#[test]
fn loss_falls_by_half_epsilon_squared_sum_lambda() {
    let (x, y) = regression_data(400, 2);
    for norm in [Norm::None, Norm::Batch] {
        let spec = spec(Backbone::Mlp { widths: vec![8, 6] }, Activation::Tanh, norm);
        let mut net = spec.build(4, 1, 11).unwrap();
        perturb_norms(&mut net, 12);
        let m = splitting_matrices(&mut net, x.view(), y.view(), LossKind::Mse, 64).unwrap();
        let eigs = exact_eigenpairs(&m);
        let chosen: Vec<_> = eigs.iter().filter(|e| e.lambda < 0.0).collect();
        assert!(chosen.len() >= 2, "{norm:?}: few negative λ: {eigs:?}");
        let lambda_sum: f64 = chosen.iter().map(|e| e.lambda).sum();
        let plans: Vec<SplitPlan> = chosen
            .iter()
            .map(|e| SplitPlan {
                site: e.site,
                neuron: e.neuron,
                direction: e.direction.clone(),
            })
            .collect();
        let before = mean_loss(&mut net, x.view(), y.view(), LossKind::Mse);
        assert!((before - m.mean_loss).abs() < 1e-6 * before.max(1.0));
        let eps = 0.05f32;
        apply_splits(&mut net, &m.sites, &plans, eps, None).unwrap();
        let after = mean_loss(&mut net, x.view(), y.view(), LossKind::Mse);
        let predicted = 0.5 * f64::from(eps * eps) * lambda_sum;
        let observed = after - before;
        assert!(
            (observed - predicted).abs() <= 0.1 * predicted.abs(),
            "{norm:?}: loss change {observed:e}, predicted (ε²/2)Σλ = {predicted:e}"
        );
    }
}

/// On real splitting matrices (a batch-normalised ReLU network with the
/// softplus surrogate, minibatch products), the fast solver's λ_min is
/// within 5% of the exact one for the neurons whose split matters
/// (|λ| at least a tenth of the largest |λ_min|). The solver is
/// stochastic (random start, minibatch products), so this is checked
/// over 12 solver seeds: at least 95% of (seed, neuron) pairs within 5%
/// and every one within 10%. (Seen: one seed of twelve stalls near the
/// second eigenvector of a neuron whose two lowest eigenvalues are 7%
/// apart, at 7% above λ_min.) λ of a unit vector is never below λ_min.
#[test]
fn fast_solver_matches_exact_on_real_splitting_matrices() {
    let (x, y) = classification_data(512, 3);
    let spec = spec(
        Backbone::Mlp { widths: vec![6, 6] },
        Activation::Relu,
        Norm::Batch,
    );
    let mut net = spec.build(5, 2, 21).unwrap();
    perturb_norms(&mut net, 22);
    let loss = LossKind::SoftmaxCrossEntropy;
    let exact =
        exact_eigenpairs(&splitting_matrices(&mut net, x.view(), y.view(), loss, 64).unwrap());
    // The reference's RMSprop settings; 40 passes over this small set
    // (32 steps each), the rate × 0.2 every 10.
    let config = RayleighConfig {
        epochs: 40,
        decay_every: 10,
        ..RayleighConfig::default()
    };
    let biggest = exact.iter().fold(0.0f64, |m, e| m.max(e.lambda.abs()));
    let (mut compared, mut within_5) = (0, 0);
    for seed in 0..12 {
        let fast = fast_eigenpairs(&mut net, x.view(), y.view(), loss, 16, config, seed).unwrap();
        for (e, f) in exact.iter().zip(&fast) {
            assert_eq!((e.site, e.neuron), (f.site, f.neuron));
            assert!(f.lambda >= e.lambda - 1e-9 * biggest, "{e:?} {f:?}");
            if e.lambda.abs() >= 0.1 * biggest {
                compared += 1;
                let err = (f.lambda - e.lambda).abs() / e.lambda.abs();
                within_5 += usize::from(err <= 0.05);
                assert!(
                    err <= 0.10,
                    "seed {seed} site {} neuron {}: fast {} exact {}",
                    e.site,
                    e.neuron,
                    f.lambda,
                    e.lambda
                );
            }
        }
    }
    assert!(compared >= 4 * 12, "only {compared} pairs compared");
    assert!(
        within_5 as f64 >= 0.95 * compared as f64,
        "{within_5} of {compared} within 5%"
    );
}

/// Optimizer state follows a split: the new neuron's incoming moments
/// are the parent's halved (first) and quartered (second), as the
/// parent's now are; its outgoing moments are the parent's.
#[test]
fn optimizer_state_follows_the_split() {
    let (x, y) = classification_data(64, 4);
    let spec = spec(
        Backbone::Mlp { widths: vec![4] },
        Activation::Relu,
        Norm::None,
    );
    let net = spec.build(5, 2, 1).unwrap();
    let opt = Optimizer::new(OptimizerKind::AdamW, 0.9, 0.999, 0.0);
    let mut t = tabular_nn::train::trainer::Trainer::new(net, opt, LossKind::SoftmaxCrossEntropy);
    let mut sink = NullSink;
    let mut ctx = Ctx::new(&mut sink, 0);
    for _ in 0..3 {
        t.step(x.view(), y.view(), 0.01, &mut ctx);
    }
    let sites = split_sites(&mut t.net).unwrap();
    let ids = |net: &mut Network, path: &str| {
        let mut out = None;
        tabular_nn::model::visit::visit_layers(&mut net.body, &mut |p, layer| {
            if let tabular_nn::model::layers::LayerRef::Linear(l) = layer {
                if p == path {
                    out = Some(l.param_ids());
                }
            }
        });
        out.expect("layer")
    };
    let (w_in, _) = ids(&mut t.net, "linear0");
    let (w_out, _) = ids(&mut t.net, "head");
    let first_in = t.opt.state(w_in).unwrap().first.clone();
    let second_in = t.opt.state(w_in).unwrap().second.clone();
    let first_out = t.opt.state(w_out).unwrap().first.clone();
    let plan = SplitPlan {
        site: 0,
        neuron: 2,
        direction: vec![0.0, 0.0, 0.0, 0.0, 0.0, 1.0],
    };
    apply_splits(&mut t.net, &sites, &[plan], 0.01, Some(&mut t.opt)).unwrap();
    let s_in = t.opt.state(w_in).unwrap();
    for r in 0..5 {
        for c in [2usize, 4] {
            assert!((s_in.first[[r, c]] - 0.5 * first_in[[r, 2]]).abs() < 1e-12);
            assert!((s_in.second[[r, c]] - 0.25 * second_in[[r, 2]]).abs() < 1e-12);
        }
        assert_eq!(s_in.first[[r, 1]], first_in[[r, 1]]);
    }
    let s_out = t.opt.state(w_out).unwrap();
    assert_eq!(s_out.first.row(4), first_out.row(2));
    assert_eq!(s_out.first.row(2), first_out.row(2));
    // Training goes on at the new width.
    let l = t.step(x.view(), y.view(), 0.01, &mut ctx);
    assert!(l.is_finite());
}

/// A grown network round-trips to a spec (the spec builds a network of
/// the same shape, with the grown widths) and retrains from its weights.
#[test]
fn grown_network_round_trips_to_a_spec_and_retrains() {
    use tabular_nn::data::{read_table_bytes, Dataset, LoadOptions};
    let (x, y) = classification_data(600, 5);
    let mut text = String::from("a,b,c,d,e,label\n");
    for (row, label) in x.rows().into_iter().zip(&y) {
        let cells: Vec<String> = row.iter().map(|v| v.to_string()).collect();
        text.push_str(&format!(
            "{},{}\n",
            cells.join(","),
            ["in", "out"][*label as usize]
        ));
    }
    let table = read_table_bytes("circle.csv", text.as_bytes()).unwrap();
    let ds = Dataset::from_table("circle", &table, &LoadOptions::new("label")).unwrap();
    for (backbone, grown) in [
        (
            Backbone::Mlp { widths: vec![4, 3] },
            Backbone::Mlp { widths: vec![6, 5] },
        ),
        (
            Backbone::Resnet {
                d_main: 4,
                d_hidden: vec![3],
            },
            Backbone::Resnet {
                d_main: 4,
                d_hidden: vec![5],
            },
        ),
    ] {
        let seed_spec = spec(backbone, Activation::Relu, Norm::Batch);
        let mut net = seed_spec.build(ds.n_features(), 2, 0).unwrap();
        let plans = random_plans(&mut net, 2, 6);
        let sites = split_sites(&mut net).unwrap();
        apply_splits(&mut net, &sites, &plans, 0.01, None).unwrap();
        let got = net.spec().expect("a grown network has a spec");
        assert_eq!(got.backbone, grown);
        assert_eq!((got.norm, got.activation), (Norm::Batch, Activation::Relu));
        let config = tabular_nn::TrainConfig {
            model: got,
            epochs: 3,
            lr: 1e-2,
            batch_size: 64,
            threads: 1,
            inference_min_ns: 0,
            patience: None,
            ..tabular_nn::TrainConfig::default()
        };
        let before = mean_loss(
            &mut net,
            ds.val.x.view(),
            ds.val.y.view(),
            LossKind::SoftmaxCrossEntropy,
        );
        let (report, _) =
            tabular_nn::train::train_network(&ds, &config, net, None, &mut |_| {}).unwrap();
        let after = report.history.last().unwrap().val_loss;
        assert!(after < before, "retraining: val loss {before} → {after}");
    }
}
