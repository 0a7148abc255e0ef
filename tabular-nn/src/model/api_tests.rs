//! Tests of the layer/parameter API the research features build on:
//! supernet children against standalone networks, gradient accumulation,
//! optimizer state across width changes and growth, hooks against finite
//! differences, σ'', BatchNorm recalibration, and network → spec.

use super::layers::*;
use super::visit::{visit_layers, visit_named_parameters, Recorder};
use super::{Backbone, BuildNetwork, ModelSpec, Network};
use crate::kernels::NullSink;
use crate::train::{LossKind, Optimizer, OptimizerKind};
use ndarray::{s, Array1, Array2};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use std::collections::HashMap;

const CTX_SEED: u64 = 5;

fn random(rows: usize, cols: usize, rng: &mut SmallRng) -> Array2<f32> {
    Array2::from_shape_fn((rows, cols), |_| rng.gen_range(-1.2f32..1.2))
}

fn labels(rows: usize, classes: usize) -> Array1<f32> {
    Array1::from_shape_fn(rows, |i| (i % classes) as f32)
}

/// Moves every parameter and running statistic away from its initial
/// value, so norms and biases are exercised.
fn perturb(net: &mut Network, rng: &mut SmallRng) {
    net.body.visit_parameters(&mut |mut p| {
        p.value.mapv_inplace(|v| v + rng.gen_range(-0.3f32..0.3));
    });
    net.body.visit_buffers(&mut |mut b| {
        let var = b.name == "running_var";
        b.value.mapv_inplace(|v| {
            if var {
                v + rng.gen_range(0.1f32..0.5)
            } else {
                v + rng.gen_range(-0.3f32..0.3)
            }
        });
    });
}

/// Every parameter gradient, by full name, at the active widths.
fn grads(net: &mut Network) -> HashMap<String, Array2<f32>> {
    let mut out = HashMap::new();
    visit_named_parameters(&mut net.body, &mut |path, p| {
        out.insert(format!("{path}.{}", p.name), p.grad.to_owned());
    });
    out
}

fn values(net: &mut Network) -> HashMap<String, Array2<f32>> {
    let mut out = HashMap::new();
    visit_named_parameters(&mut net.body, &mut |path, p| {
        out.insert(format!("{path}.{}", p.name), p.value.to_owned());
    });
    out
}

/// One forward and backward pass of the mean cross-entropy; returns the
/// loss, leaves gradients accumulated in the network.
fn pass(net: &mut Network, x: &Array2<f32>, y: &Array1<f32>, mode: Mode) -> f64 {
    let mut sink = NullSink;
    let mut ctx = Ctx::new(&mut sink, CTX_SEED);
    let mut loss = LossKind::SoftmaxCrossEntropy.build(x.nrows(), net.outputs);
    net.body.forward(x.view(), mode, &mut ctx);
    let value = loss.forward(net.body.output(), y.view(), &mut ctx);
    loss.backward(net.body.output(), y.view(), &mut ctx);
    net.body.backward(x.view(), loss.grad(), true, &mut ctx);
    value
}

fn assert_close(what: &str, a: &Array2<f32>, b: &Array2<f32>, tol: f32) {
    assert_eq!(a.dim(), b.dim(), "{what}: shapes");
    for ((i, &x), &y) in a.indexed_iter().zip(b.iter()) {
        assert!(
            (x - y).abs() <= tol * (1.0 + x.abs().max(y.abs())),
            "{what}{i:?}: {x} vs {y}"
        );
    }
}

/// Copies a child's active weights into a standalone network of the
/// child's shape: linear layers explicitly from `W[..in, ..out]`, the
/// other parameters and the running statistics through their views.
fn copy_child(child: &mut Network, alone: &mut Network) {
    let mut linear: HashMap<String, (Array2<f32>, Array1<f32>)> = HashMap::new();
    visit_layers(&mut child.body, &mut |path, layer| {
        if let LayerRef::Linear(l) = layer {
            let (i, o) = (l.in_dim(), l.out_dim());
            linear.insert(
                path.to_owned(),
                (
                    l.weight.slice(s![..i, ..o]).to_owned(),
                    l.bias.slice(s![..o]).to_owned(),
                ),
            );
        }
    });
    let mut copied = 0;
    visit_layers(&mut alone.body, &mut |path, layer| {
        if let LayerRef::Linear(l) = layer {
            let (w, b) = &linear[path];
            l.weight.assign(w);
            l.bias.assign(b);
            copied += 1;
        }
    });
    assert_eq!(copied, linear.len());
    let others = values(child);
    visit_named_parameters(&mut alone.body, &mut |path, mut p| {
        if p.name != "weight" && p.name != "bias" {
            p.value.assign(&others[&format!("{path}.{}", p.name)]);
        }
    });
    let mut buffers = Vec::new();
    child
        .body
        .visit_buffers(&mut |b| buffers.push(b.value.to_owned()));
    let mut it = buffers.into_iter();
    alone
        .body
        .visit_buffers(&mut |mut b| b.value.assign(&it.next().expect("same buffers")));
}

fn supernets() -> Vec<(ModelSpec, Vec<usize>)> {
    let spec = |backbone, norm, activation| ModelSpec {
        backbone,
        activation,
        dropout: 0.25,
        norm,
    };
    vec![
        (
            spec(
                Backbone::Mlp {
                    widths: vec![9, 7, 6],
                },
                Norm::Batch,
                Activation::Relu,
            ),
            vec![5, 7, 2],
        ),
        (
            spec(
                Backbone::Mlp { widths: vec![8, 8] },
                Norm::Layer,
                Activation::Gelu,
            ),
            vec![3, 6],
        ),
        (
            spec(
                Backbone::Resnet {
                    d_main: 8,
                    d_hidden: vec![10, 6],
                },
                Norm::Batch,
                Activation::Silu,
            ),
            vec![5, 4, 6],
        ),
        (
            spec(
                Backbone::Resnet {
                    d_main: 7,
                    d_hidden: vec![9],
                },
                Norm::Layer,
                Activation::Tanh,
            ),
            vec![3, 2],
        ),
    ]
}

/// A child at active widths (k₁, k₂, …) computes the same outputs, input
/// gradients and parameter gradients as a standalone network built from
/// the child's spec and holding the sliced weights, in training mode
/// (dropout masks, batch statistics) and in evaluation mode.
#[test]
fn a_child_equals_a_standalone_network_with_its_sliced_weights() {
    let mut rng = SmallRng::seed_from_u64(1);
    for (spec, child_widths) in supernets() {
        let mut sup = spec.build(5, 3, 11).expect("builds");
        perturb(&mut sup, &mut rng);
        sup.set_active_widths(&child_widths).expect("within max");
        let child_spec = sup.spec().expect("a child has a spec");
        let mut alone = child_spec.build(5, 3, 12).expect("builds");
        copy_child(&mut sup, &mut alone);
        assert_eq!(sup.parameter_count(), alone.parameter_count());
        let x = random(9, 5, &mut rng);
        let y = labels(9, 3);
        for mode in [Mode::Train, Mode::Eval] {
            sup.zero_grad();
            alone.zero_grad();
            let a = pass(&mut sup, &x, &y, mode);
            let b = pass(&mut alone, &x, &y, mode);
            let what = format!("{} child {child_widths:?} {mode:?}", spec.describe());
            assert!((a - b).abs() < 1e-6, "{what}: loss {a} vs {b}");
            assert_close(
                &format!("{what} output"),
                &sup.body.output().to_owned(),
                &alone.body.output().to_owned(),
                1e-5,
            );
            assert_close(
                &format!("{what} input gradient"),
                &sup.body.grad_input().to_owned(),
                &alone.body.grad_input().to_owned(),
                1e-5,
            );
            let (ga, gb) = (grads(&mut sup), grads(&mut alone));
            assert_eq!(ga.len(), gb.len());
            for (name, g) in &ga {
                assert_close(&format!("{what} {name}"), g, &gb[name], 1e-5);
            }
        }
    }
}

/// The child runs on the leading block only: weights outside it do not
/// change the output.
#[test]
fn weights_outside_the_active_block_are_not_read() {
    let mut rng = SmallRng::seed_from_u64(2);
    let (spec, widths) = supernets().remove(2);
    let mut net = spec.build(5, 3, 1).expect("builds");
    net.set_active_widths(&widths).expect("within max");
    let x = random(4, 5, &mut rng);
    let y = labels(4, 3);
    pass(&mut net, &x, &y, Mode::Eval);
    let before = net.body.output().to_owned();
    visit_layers(&mut net.body, &mut |_, layer| {
        if let LayerRef::Linear(l) = layer {
            let (i, o) = (l.in_dim(), l.out_dim());
            l.weight.slice_mut(s![i.., ..]).fill(f32::NAN);
            l.weight.slice_mut(s![.., o..]).fill(f32::NAN);
            l.bias.slice_mut(s![o..]).fill(f32::NAN);
        }
    });
    pass(&mut net, &x, &y, Mode::Eval);
    assert_eq!(net.body.output().to_owned(), before);
}

/// Gradients accumulated over three passes equal the sum of three single
/// passes: at one width, and across children of different widths (the
/// sandwich rule), where each child's gradient lands in its leading block.
#[test]
fn gradients_accumulate_over_passes_and_widths() {
    let mut rng = SmallRng::seed_from_u64(3);
    for (spec, child) in supernets() {
        let mut net = spec.build(5, 3, 2).expect("builds");
        perturb(&mut net, &mut rng);
        let max = net.widths().expect("widths").max_widths();
        let min = vec![1; max.len()];
        let full_shapes: HashMap<String, (usize, usize)> = values(&mut net)
            .into_iter()
            .map(|(name, v)| (name, v.dim()))
            .collect();
        let batches: Vec<_> = (0..3)
            .map(|_| (random(6, 5, &mut rng), labels(6, 3)))
            .collect();
        for widths in [
            vec![max.clone(), max.clone(), max.clone()],
            vec![max.clone(), min.clone(), child.clone()],
            // Smallest first: later, wider passes extend the live block
            // over cells that still hold an earlier step's gradient.
            vec![min.clone(), child.clone(), max.clone()],
        ] {
            // Single passes, each embedded at full size.
            let mut sum: HashMap<String, Array2<f32>> = HashMap::new();
            for ((x, y), w) in batches.iter().zip(&widths) {
                net.set_active_widths(w).expect("within max");
                net.zero_grad();
                pass(&mut net, x, y, Mode::Train);
                for (name, g) in grads(&mut net) {
                    let full = sum
                        .entry(name.clone())
                        .or_insert_with(|| Array2::zeros(full_shapes[&name]));
                    let (r, c) = g.dim();
                    let mut block = full.slice_mut(s![..r, ..c]);
                    block += &g;
                }
            }
            // The same passes without clearing in between.
            net.zero_grad();
            for ((x, y), w) in batches.iter().zip(&widths) {
                net.set_active_widths(w).expect("within max");
                pass(&mut net, x, y, Mode::Train);
            }
            net.set_full_width().expect("max");
            let accumulated = grads(&mut net);
            assert_eq!(accumulated.len(), sum.len());
            for (name, g) in &accumulated {
                assert_close(
                    &format!("{} widths {widths:?} {name}", spec.describe()),
                    g,
                    &sum[name],
                    1e-5,
                );
            }
        }
    }
}

/// AdamW by hand, element by element, in the order PyTorch applies it.
fn adamw_by_hand(w: f32, g: f32, m: f32, v: f32, step: i32, lr: f32, wd: f32) -> (f32, f32, f32) {
    let (b1, b2) = (0.9f32, 0.999f32);
    let m = b1 * m + (1.0 - b1) * g;
    let v = b2 * v + (1.0 - b2) * g * g;
    let w = w * (1.0 - lr * wd)
        - lr / (1.0 - b1.powi(step)) * m / (v.sqrt() / (1.0 - b2.powi(step)).sqrt() + 1e-8);
    (w, m, v)
}

struct Snapshot {
    value: Array2<f32>,
    grad: Array2<f32>,
    decay: bool,
}

fn by_id(net: &mut Network) -> HashMap<ParamId, Snapshot> {
    let mut out = HashMap::new();
    net.body.visit_parameters(&mut |p| {
        out.insert(
            p.id,
            Snapshot {
                value: p.value.to_owned(),
                grad: p.grad.to_owned(),
                decay: p.decay,
            },
        );
    });
    out
}

/// After a layer grows, each old weight keeps its moments (at the same
/// (i, j)) and the new units start from zero moments: the step equals
/// AdamW computed by hand from the moments recorded before growth.
#[test]
fn optimizer_state_follows_parameters_through_growth() {
    let mut rng = SmallRng::seed_from_u64(4);
    let spec = ModelSpec {
        backbone: Backbone::Resnet {
            d_main: 4,
            d_hidden: vec![3],
        },
        activation: Activation::Gelu,
        dropout: 0.0,
        norm: Norm::Batch,
    };
    let mut net = spec.build(3, 2, 3).expect("builds");
    let (lr, wd) = (0.01f32, 0.05f32);
    let mut opt = Optimizer::new(OptimizerKind::AdamW, 0.9, 0.999, wd);
    let mut sink = NullSink;
    for _ in 0..2 {
        net.zero_grad();
        pass(
            &mut net,
            &random(6, 3, &mut rng),
            &labels(6, 2),
            Mode::Train,
        );
        opt.step(&mut net.body, lr, &mut Ctx::new(&mut sink, 0));
    }
    let ids: Vec<ParamId> = by_id(&mut net).into_keys().collect();
    let old: HashMap<ParamId, (Array2<f32>, Array2<f32>, u64)> = ids
        .iter()
        .map(|&id| {
            let st = opt.state(id).expect("stepped");
            (id, (st.first.clone(), st.second.clone(), st.steps))
        })
        .collect();
    // Grow the main width (stem outputs, both norms, block input rows and
    // output columns, head input rows) and then the block's hidden width.
    net.grow_width(0, 2, &mut rng).expect("grows");
    net.grow_width(1, 1, &mut rng).expect("grows");
    assert_eq!(net.widths().expect("widths").max_widths(), vec![6, 4]);
    net.zero_grad();
    pass(
        &mut net,
        &random(6, 3, &mut rng),
        &labels(6, 2),
        Mode::Train,
    );
    let before = by_id(&mut net);
    assert_eq!(
        before
            .keys()
            .copied()
            .collect::<std::collections::HashSet<_>>(),
        ids.iter().copied().collect(),
        "growth keeps parameter identities"
    );
    opt.step(&mut net.body, lr, &mut Ctx::new(&mut sink, 0));
    let after = by_id(&mut net);
    let mut grown_tensors = 0;
    for (id, snap) in &before {
        let (m0, v0, steps) = &old[id];
        let (r0, c0) = m0.dim();
        if snap.value.dim() != (r0, c0) {
            grown_tensors += 1;
        }
        let st = opt.state(*id).expect("stepped");
        assert_eq!(st.steps, steps + 1);
        let wd = if snap.decay { wd } else { 0.0 };
        for ((i, j), &w) in snap.value.indexed_iter() {
            let (m, v) = if i < r0 && j < c0 {
                (m0[[i, j]], v0[[i, j]])
            } else {
                (0.0, 0.0)
            };
            let (w_exp, m_exp, v_exp) =
                adamw_by_hand(w, snap.grad[[i, j]], m, v, st.steps as i32, lr, wd);
            let got = after[id].value[[i, j]];
            assert!(
                (got - w_exp).abs() < 1e-6,
                "param {id:?} ({i},{j}): {got} vs {w_exp}"
            );
            assert!((st.first[[i, j]] - m_exp).abs() < 1e-7);
            assert!((st.second[[i, j]] - v_exp).abs() < 1e-9);
        }
    }
    // Stem weight and bias, block norm γ β, linear1 weight (rows and
    // columns) and bias, linear2 weight (rows and columns) and bias, head
    // norm γ β, head weight (rows); not the head's bias.
    assert_eq!(grown_tensors, 11);
}

/// Stepping a child updates its leading blocks with the leading blocks of
/// the moments, exactly as SGD by hand, and leaves every other weight and
/// moment alone.
#[test]
fn stepping_a_child_updates_only_its_block_with_its_moments() {
    let mut rng = SmallRng::seed_from_u64(5);
    let (spec, child) = supernets().remove(0);
    let mut net = spec.build(5, 3, 4).expect("builds");
    let (lr, wd, momentum) = (0.05f32, 0.01f32, 0.9f32);
    let mut opt = Optimizer::new(OptimizerKind::Sgd, momentum, 0.0, wd);
    let mut sink = NullSink;
    for _ in 0..2 {
        net.zero_grad();
        pass(
            &mut net,
            &random(6, 5, &mut rng),
            &labels(6, 3),
            Mode::Train,
        );
        opt.step(&mut net.body, lr, &mut Ctx::new(&mut sink, 0));
    }
    let full_before = by_id(&mut net);
    let moments_before: HashMap<ParamId, Array2<f32>> = full_before
        .keys()
        .map(|&id| (id, opt.state(id).expect("stepped").first.clone()))
        .collect();
    net.set_active_widths(&child).expect("within max");
    net.zero_grad();
    pass(
        &mut net,
        &random(6, 5, &mut rng),
        &labels(6, 3),
        Mode::Train,
    );
    let child_before = by_id(&mut net);
    opt.step(&mut net.body, lr, &mut Ctx::new(&mut sink, 0));
    net.set_full_width().expect("max");
    let full_after = by_id(&mut net);
    for (id, full) in &full_before {
        let block = &child_before[id];
        let (r, c) = block.value.dim();
        let wd = if block.decay { wd } else { 0.0 };
        let m_after = &opt.state(*id).expect("stepped").first;
        for ((i, j), &w) in full.value.indexed_iter() {
            let got = full_after[id].value[[i, j]];
            let m0 = moments_before[id][[i, j]];
            if i < r && j < c {
                let d = block.grad[[i, j]] + wd * w;
                let m = momentum * m0 + d;
                assert!((got - (w - lr * m)).abs() < 1e-6, "{id:?} ({i},{j})");
                assert!((m_after[[i, j]] - m).abs() < 1e-6);
            } else {
                assert_eq!(got, w, "{id:?} ({i},{j}) is outside the child");
                assert_eq!(m_after[[i, j]], m0);
            }
        }
    }
}

/// Forward hooks see each layer's input and output (equal to running the
/// layers by hand), backward hooks the gradient at each layer's output
/// (equal to finite differences of the loss through the layers after it);
/// the first layer's input gradient is there when asked for.
#[test]
fn hooks_match_a_manual_forward_and_finite_differences() {
    let mut rng = SmallRng::seed_from_u64(6);
    let spec = ModelSpec {
        backbone: Backbone::Mlp { widths: vec![6, 5] },
        activation: Activation::Tanh,
        dropout: 0.0,
        norm: Norm::Layer,
    };
    let mut net = spec.build(4, 3, 7).expect("builds");
    perturb(&mut net, &mut rng);
    let x = random(5, 4, &mut rng);
    let y = labels(5, 3);
    let mut recorder = Recorder::default();
    let mut sink = NullSink;
    {
        let mut ctx = Ctx::with_observer(&mut sink, 0, &mut recorder);
        let mut loss = LossKind::SoftmaxCrossEntropy.build(5, 3);
        net.body.forward(x.view(), Mode::Eval, &mut ctx);
        loss.forward(net.body.output(), y.view(), &mut ctx);
        loss.backward(net.body.output(), y.view(), &mut ctx);
        net.body.backward(x.view(), loss.grad(), true, &mut ctx);
    }
    let names: Vec<String> = net.body.names().to_vec();
    assert_eq!(
        names,
        ["linear0", "norm0", "act0", "linear1", "norm1", "act1", "head"]
    );
    assert_eq!(recorder.forward.len(), names.len());
    assert_eq!(recorder.backward.len(), names.len());
    assert_eq!(
        recorder.forward[2].kind,
        LayerKind::Activation(Activation::Tanh)
    );
    let input_grad = recorder.backward.last().and_then(|b| b.grad_input.clone());
    assert_eq!(input_grad.as_ref(), Some(&net.body.grad_input().to_owned()));
    // The network's layers run by hand from layer `from` on `h`; returns
    // the loss.
    let run_from = |net: &mut Network, from: usize, h: &Array2<f32>| -> (f64, Array2<f32>) {
        let mut sink = NullSink;
        let mut ctx = Ctx::new(&mut sink, 0);
        let mut cur = h.clone();
        for layer in &mut net.body.layers_mut()[from..] {
            layer.forward(cur.view(), Mode::Eval, &mut ctx);
            cur = layer.output().to_owned();
        }
        let mut loss = LossKind::SoftmaxCrossEntropy.build(5, 3);
        (loss.forward(cur.view(), y.view(), &mut ctx), cur)
    };
    let mut h = x.clone();
    for (k, name) in names.iter().enumerate() {
        assert_eq!(recorder.input(name), Some(&h), "{name} input");
        // Output: the first k+1 layers by hand.
        let mut sink = NullSink;
        let mut ctx = Ctx::new(&mut sink, 0);
        let layer = &mut net.body.layers_mut()[k];
        layer.forward(h.view(), Mode::Eval, &mut ctx);
        h = layer.output().to_owned();
        assert_eq!(recorder.output(name), Some(&h), "{name} output");
        // Output gradient: central differences through the layers after.
        let grad = recorder.grad_output(name).expect("recorded").clone();
        let eps = 1e-2f32;
        for (r, c) in [(0, 0), (1, h.ncols() - 1), (4, h.ncols() / 2)] {
            let mut hp = h.clone();
            hp[[r, c]] += eps;
            let (up, _) = run_from(&mut net, k + 1, &hp);
            hp[[r, c]] -= 2.0 * eps;
            let (down, _) = run_from(&mut net, k + 1, &hp);
            let numeric = (up - down) / (2.0 * f64::from(eps));
            let analytic = f64::from(grad[[r, c]]);
            assert!(
                (numeric - analytic).abs() <= 1e-3 + 2e-2 * analytic.abs(),
                "{name} grad[{r},{c}]: numeric {numeric} analytic {analytic}"
            );
        }
    }
    // The input gradient (jacob_cov's) against central differences.
    let input_grad = input_grad.expect("asked for");
    let eps = 1e-2f32;
    for (r, c) in [(0, 0), (2, 3), (4, 1)] {
        let mut xp = x.clone();
        xp[[r, c]] += eps;
        let (up, _) = run_from(&mut net, 0, &xp);
        xp[[r, c]] -= 2.0 * eps;
        let (down, _) = run_from(&mut net, 0, &xp);
        let numeric = (up - down) / (2.0 * f64::from(eps));
        let analytic = f64::from(input_grad[[r, c]]);
        assert!(
            (numeric - analytic).abs() <= 1e-3 + 2e-2 * analytic.abs(),
            "input grad[{r},{c}]: numeric {numeric} analytic {analytic}"
        );
    }
}

/// Paths are stable and readable, the same in the visitor and the hooks,
/// and nested blocks are reached.
#[test]
fn paths_name_layers_in_visitor_and_hooks_alike() {
    let spec = ModelSpec {
        backbone: Backbone::Resnet {
            d_main: 4,
            d_hidden: vec![5, 6],
        },
        activation: Activation::Relu,
        dropout: 0.1,
        norm: Norm::Batch,
    };
    let mut net = spec.build(3, 2, 0).expect("builds");
    let mut visited = Vec::new();
    visit_layers(&mut net.body, &mut |path, layer| {
        let tag = match layer {
            LayerRef::Linear(_) => "linear",
            LayerRef::Activation(_) => "activation",
            LayerRef::BatchNorm(_) => "batchnorm",
            LayerRef::LayerNorm(_) => "layernorm",
            LayerRef::Dropout(_) => "dropout",
            LayerRef::Sequential(_) => "sequential",
            LayerRef::Residual(_) => "residual",
            LayerRef::SelectToken(_) => "token",
            LayerRef::Tokenizer(_) => "tokenizer",
            LayerRef::Attention(_) => "attention",
            LayerRef::Reglu(_) => "reglu",
            LayerRef::Other(_) => "other",
        };
        visited.push(format!("{path}:{tag}"));
    });
    let expect = [
        ":sequential",
        "stem:linear",
        "block0:residual",
        "block0.norm:batchnorm",
        "block0.linear1:linear",
        "block0.act:activation",
        "block0.dropout1:dropout",
        "block0.linear2:linear",
        "block0.dropout2:dropout",
        "block1:residual",
        "block1.norm:batchnorm",
        "block1.linear1:linear",
        "block1.act:activation",
        "block1.dropout1:dropout",
        "block1.linear2:linear",
        "block1.dropout2:dropout",
        "head_norm:batchnorm",
        "head_act:activation",
        "head:linear",
    ];
    assert_eq!(visited, expect);
    let mut recorder = Recorder::default();
    let mut sink = NullSink;
    let x = Array2::<f32>::ones((3, 3));
    {
        let mut ctx = Ctx::with_observer(&mut sink, 0, &mut recorder);
        net.body.forward(x.view(), Mode::Train, &mut ctx);
    }
    let mut hooked: Vec<&str> = recorder.forward.iter().map(|r| r.path.as_str()).collect();
    hooked.sort_unstable();
    let mut leaves: Vec<&str> = expect
        .iter()
        .map(|e| e.split(':').next().expect("path"))
        .filter(|p| !p.is_empty())
        .collect();
    leaves.sort_unstable();
    assert_eq!(hooked, leaves);
    let mut names = Vec::new();
    visit_named_parameters(&mut net.body, &mut |path, p| {
        names.push(format!("{path}.{}", p.name))
    });
    assert_eq!(
        names[..4],
        [
            "stem.weight",
            "stem.bias",
            "block0.norm.gamma",
            "block0.norm.beta"
        ]
    );
}

/// σ'' of every activation against central differences of σ' (ReLU: of
/// the softplus surrogate's σ', which is sigmoid(βx)); σ' against σ.
#[test]
fn second_derivatives_match_finite_differences() {
    let h = 1e-3f64;
    for act in Activation::ALL {
        for i in 0..41 {
            let x = -4.0 + 0.2 * i as f64;
            if act == Activation::Selu && x.abs() < 0.01 {
                continue; // the kink
            }
            let d1 = |x: f64| -> f64 {
                match act {
                    Activation::Relu => 1.0 / (1.0 + (-f64::from(RELU_SURROGATE_BETA) * x).exp()),
                    _ => {
                        let xf = x as f32;
                        f64::from(act.derivative(xf, act.apply(xf)))
                    }
                }
            };
            let numeric = (d1(x + h) - d1(x - h)) / (2.0 * h);
            let analytic = f64::from(act.second_derivative(x as f32));
            assert!(
                (numeric - analytic).abs() <= 2e-2 + 1e-2 * analytic.abs(),
                "{act:?} σ''({x}): numeric {numeric} analytic {analytic}"
            );
            if act != Activation::Relu || x.abs() > 0.01 {
                let f = |x: f64| f64::from(act.apply(x as f32));
                let numeric = (f(x + h) - f(x - h)) / (2.0 * h);
                let analytic = d1(x);
                let analytic = if act == Activation::Relu {
                    f64::from(u8::from(x > 0.0))
                } else {
                    analytic
                };
                assert!(
                    (numeric - analytic).abs() <= 2e-2,
                    "{act:?} σ'({x}): numeric {numeric} analytic {analytic}"
                );
            }
        }
    }
}

/// BatchNorm recalibration for a child: reset, cumulative averaging, and
/// forward passes leave the child's running mean equal to the mean of its
/// batches' means (and the running variance to the mean of the unbiased
/// batch variances).
#[test]
fn batchnorm_statistics_recalibrate_per_child() {
    let mut rng = SmallRng::seed_from_u64(7);
    let (spec, child) = supernets().remove(0);
    let mut net = spec.build(5, 3, 5).expect("builds");
    perturb(&mut net, &mut rng);
    net.set_active_widths(&child).expect("within max");
    visit_layers(&mut net.body, &mut |_, layer| {
        if let LayerRef::BatchNorm(bn) = layer {
            bn.reset_running_stats();
            bn.set_momentum(None);
        }
    });
    let mut recorder = Recorder::default();
    let mut sink = NullSink;
    {
        let mut ctx = Ctx::with_observer(&mut sink, 0, &mut recorder);
        for _ in 0..3 {
            net.body
                .forward(random(8, 5, &mut rng).view(), Mode::Train, &mut ctx);
        }
    }
    let mut checked = 0;
    let mut stats = Vec::new();
    visit_layers(&mut net.body, &mut |path, layer| {
        if let LayerRef::BatchNorm(bn) = layer {
            let (m, v) = bn.running_stats();
            stats.push((path.to_owned(), m.to_owned(), v.to_owned()));
        }
    });
    for (path, mean, var) in stats {
        let inputs: Vec<&Array2<f32>> = recorder
            .forward
            .iter()
            .filter(|r| r.path == path)
            .map(|r| &r.input)
            .collect();
        assert_eq!(inputs.len(), 3);
        assert_eq!(mean.len(), inputs[0].ncols(), "{path}: child width");
        for j in 0..mean.len() {
            let means: Vec<f64> = inputs
                .iter()
                .map(|x| x.column(j).iter().map(|&v| f64::from(v)).sum::<f64>() / 8.0)
                .collect();
            let vars: Vec<f64> = inputs
                .iter()
                .zip(&means)
                .map(|(x, m)| {
                    x.column(j)
                        .iter()
                        .map(|&v| (f64::from(v) - m).powi(2))
                        .sum::<f64>()
                        / 7.0
                })
                .collect();
            let (em, ev) = (
                means.iter().sum::<f64>() / 3.0,
                vars.iter().sum::<f64>() / 3.0,
            );
            assert!((f64::from(mean[j]) - em).abs() < 1e-5, "{path} mean {j}");
            assert!(
                (f64::from(var[j]) - ev).abs() < 1e-4 * (1.0 + ev),
                "{path} var {j}"
            );
            checked += 1;
        }
    }
    assert_eq!(checked, 5 + 7 + 2);
}

/// A grown network converts to a spec, and the spec builds a network of
/// the same shape; growth with zero input rows keeps an MLP's function.
#[test]
fn a_grown_network_converts_to_a_spec_that_rebuilds_its_shape() {
    let mut rng = SmallRng::seed_from_u64(8);
    for (spec, _) in supernets() {
        let mut net = spec.build(5, 3, 6).expect("builds");
        assert_eq!(net.spec().expect("spec"), spec);
        let x = random(4, 5, &mut rng);
        let y = labels(4, 3);
        pass(&mut net, &x, &y, Mode::Eval);
        let before = net.body.output().to_owned();
        let free = net.widths().expect("widths").free.len();
        for i in 0..free {
            net.grow_width(i, i + 1, &mut rng).expect("grows");
        }
        let grown = net.spec().expect("a grown network has a spec");
        let expect_widths: Vec<usize> = match &spec.backbone {
            Backbone::Mlp { widths } => widths.clone(),
            Backbone::Resnet { d_main, d_hidden } => std::iter::once(*d_main)
                .chain(d_hidden.iter().copied())
                .collect(),
            other => panic!("no supernet of {other:?} here"),
        }
        .iter()
        .enumerate()
        .map(|(i, w)| w + i + 1)
        .collect();
        assert_eq!(net.widths().expect("widths").max_widths(), expect_widths);
        let mut rebuilt = grown.build(5, 3, 9).expect("builds");
        assert_eq!(rebuilt.parameter_count(), net.parameter_count());
        assert_eq!(rebuilt.body.describe(), net.body.describe());
        assert_eq!(rebuilt.widths(), net.widths());
        pass(&mut net, &x, &y, Mode::Eval);
        if spec.norm != Norm::Layer {
            // LayerNorm normalises over the new units too; the others
            // leave the old units' function alone.
            assert_close(
                &format!("{} after growth", spec.describe()),
                &net.body.output().to_owned(),
                &before,
                1e-5,
            );
        }
    }
}

/// Networks a spec does not describe are refused, with the reason.
#[test]
fn a_network_without_a_spec_is_an_error() {
    let mut rng = SmallRng::seed_from_u64(9);
    let body = Sequential::named(
        3,
        vec![
            (
                "a".into(),
                Box::new(Linear::new(3, 4, &mut rng)) as Box<dyn Layer>,
            ),
            (
                "b".into(),
                Box::new(ActivationLayer::new(Activation::Relu, 4)),
            ),
            ("c".into(), Box::new(Linear::new(4, 4, &mut rng))),
            (
                "d".into(),
                Box::new(ActivationLayer::new(Activation::Tanh, 4)),
            ),
            ("e".into(), Box::new(Linear::new(4, 2, &mut rng))),
        ],
    );
    let mut net = Network {
        body,
        inputs: 3,
        outputs: 2,
    };
    assert!(matches!(
        net.spec(),
        Err(super::spec_of::SpecOfError::Mixed("activation"))
    ));
    net.body.layers_mut()[3] = Box::new(ActivationLayer::new(Activation::Relu, 4));
    // Same choices, but the layers are not named as a spec names them.
    assert!(matches!(
        net.spec(),
        Err(super::spec_of::SpecOfError::Structure(_))
    ));
    // Widths out of range are refused, and nothing changes.
    assert!(net.set_active_widths(&[5, 4]).is_err());
    assert!(net.set_active_widths(&[4]).is_err());
    assert_eq!(net.widths().expect("widths").active_widths(), vec![4, 4]);
}

/// The widths of an FT-Transformer: the token width, then each block's
/// ReGLU width are free; each ReGLU's input (its linear layer's outputs)
/// is derived as `H + h`; setting them narrows every layer consistently
/// (the network still runs), the max widths restore it, and growth is
/// refused rather than silently skipping the attention.
#[test]
fn ft_transformer_widths_are_token_width_then_reglu_widths() {
    let spec = ModelSpec {
        backbone: Backbone::FtTransformer {
            d_token: 8,
            n_blocks: 2,
            n_heads: 2,
            d_ffn: 5,
            dropouts: nn_plan::FtDropouts::PUBLISHED,
            feature_widths: vec![1, 2],
        },
        ..ModelSpec::ft_transformer(Vec::new())
    };
    let mut net = spec.build(3, 2, 0).expect("builds");
    let graph = net.widths().expect("ft widths are known");
    assert_eq!(graph.max_widths(), [8, 5, 5]);
    assert_eq!(graph.gated.len(), 2);
    net.set_active_widths(&[4, 2, 3]).expect("valid widths");
    let mut linear1 = Vec::new();
    visit_layers(&mut net.body, &mut |path, layer| {
        if let LayerRef::Linear(l) = layer {
            if path.ends_with("linear1") {
                linear1.push((l.in_dim(), l.out_dim()));
            }
        }
    });
    // H + h outputs: the value half's leading h, the gate half's leading h.
    assert_eq!(linear1, [(4, 5 + 2), (4, 5 + 3)]);
    let x = random(4, 3, &mut SmallRng::seed_from_u64(1));
    assert!(pass(&mut net, &x, &labels(4, 2), Mode::Eval).is_finite());
    assert_eq!(net.body.output().dim(), (4, 2));
    // A token width the heads do not divide, refused before any change.
    assert!(net.set_active_widths(&[3, 2, 3]).is_err());
    assert_eq!(net.widths().unwrap().active_widths(), [4, 2, 3]);
    net.set_full_width().expect("max");
    assert_eq!(net.widths().unwrap().active_widths(), [8, 5, 5]);
    let mut rng = SmallRng::seed_from_u64(0);
    assert!(matches!(
        net.grow_width(0, 1, &mut rng),
        Err(WidthError::Unsupported { .. })
    ));
}
