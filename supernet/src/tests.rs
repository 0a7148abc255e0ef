//! The acceptance tests of issue 13 for supernets: children against
//! standalone networks with their sliced weights (every depth), sandwich
//! accumulation against the sum of per-child gradients, BatchNorm
//! recalibration against statistics computed by hand, and sandwich
//! training on a small synthetic problem.

use crate::{
    ChildSettings, EvalSettings, SandwichConfig, Supernet, SupernetCheckpoint, SupernetSpace,
};
use ndarray::{array, s, Array1, Array2, AsArray, Ix2};
use nn_plan::{Activation, Norm};
use rand::rngs::{SmallRng, StdRng};
use rand::{Rng, SeedableRng};
use std::collections::HashMap;
use tabular_nn::data::{read_table_bytes, Dataset, LoadOptions, Task};
use tabular_nn::kernels::NullSink;
use tabular_nn::model::layers::{Ctx, Layer, LayerRef, Mode};
use tabular_nn::model::visit::{visit_layers, visit_named_parameters};
use tabular_nn::model::{BuildNetwork, Network};
use tabular_nn::train::loss::softmax;
use tabular_nn::train::LossKind;

/// Uniform in ±1.2 (shared with the FT tests).
pub(crate) fn random(rows: usize, cols: usize, rng: &mut SmallRng) -> Array2<f32> {
    Array2::from_shape_fn((rows, cols), |_| rng.gen_range(-1.2f32..1.2))
}

fn labels(rows: usize, classes: usize) -> Array1<f32> {
    Array1::from_shape_fn(rows, |i| (i % classes) as f32)
}

fn settings(norm: Norm, activation: Activation, dropout: f32) -> ChildSettings {
    ChildSettings {
        activation,
        norm,
        dropout,
    }
}

/// Spaces with depth decisions, with and without BatchNorm, and children
/// of every depth (choice vectors in decision order).
fn spaces(dropout: f32) -> Vec<(SupernetSpace, Vec<Vec<usize>>)> {
    let mlp = |norm, act| {
        SupernetSpace::mlp(
            vec![vec![3, 6, 9], vec![2, 7], vec![4, 6]],
            vec![1, 2, 3],
            settings(norm, act, dropout),
        )
        .expect("valid")
    };
    let resnet = |norm, act| {
        SupernetSpace::resnet(
            vec![4, 8],
            vec![vec![3, 10], vec![2, 6]],
            vec![1, 2],
            settings(norm, act, dropout),
        )
        .expect("valid")
    };
    let mlp_children = vec![vec![0, 1, 0, 1], vec![1, 2, 1, 0], vec![2, 1, 0, 0]];
    let resnet_children = vec![vec![0, 0, 1, 0], vec![1, 1, 0, 1], vec![0, 1, 1, 0]];
    vec![
        (mlp(Norm::Batch, Activation::Relu), mlp_children.clone()),
        (mlp(Norm::None, Activation::Gelu), mlp_children),
        (
            resnet(Norm::Batch, Activation::Silu),
            resnet_children.clone(),
        ),
        (
            resnet(Norm::None, Activation::Relu),
            resnet_children.clone(),
        ),
        (resnet(Norm::Layer, Activation::Tanh), resnet_children),
    ]
}

/// Moves every parameter and running statistic of the whole supernet away
/// from its initial value, so biases, norms and statistics are exercised.
fn perturb(sup: &mut Supernet, rng: &mut SmallRng) {
    let net = sup.network();
    net.set_full_width().expect("max");
    net.body.visit_parameters(&mut |mut p| {
        p.value.mapv_inplace(|v| v + rng.gen_range(-0.3f32..0.3));
    });
    net.body.visit_buffers(&mut |mut b| {
        let var = b.name == "running_var";
        b.value.mapv_inplace(|v| {
            v + if var {
                rng.gen_range(0.1f32..0.5)
            } else {
                rng.gen_range(-0.3f32..0.3)
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

/// Copies a child's weights into a standalone network of the child's
/// shape: linear layers from `W[..in, ..out]`, `b[..out]` (sliced by hand
/// here, not through the child's views), other parameters and running
/// statistics through the views.
fn copy_child(child: &mut Network, alone: &mut Network) {
    let mut linear = HashMap::new();
    visit_layers(&mut child.body, &mut |path, layer| {
        if let LayerRef::Linear(l) = layer {
            let (i, o) = (l.in_dim(), l.out_dim());
            let w = l.weight.slice(s![..i, ..o]).to_owned();
            linear.insert(path.to_owned(), (w, l.bias.slice(s![..o]).to_owned()));
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
    let mut others = HashMap::new();
    visit_named_parameters(&mut child.body, &mut |path, p| {
        others.insert(format!("{path}.{}", p.name), p.value.to_owned());
    });
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

/// One forward and backward pass of the mean cross-entropy, with the input
/// gradient, dropout seeded alike on every call; returns the loss (shared
/// with the FT tests).
pub(crate) fn pass(net: &mut Network, x: &Array2<f32>, y: &Array1<f32>, mode: Mode) -> f64 {
    let mut sink = NullSink;
    let mut ctx = Ctx::new(&mut sink, 5);
    let mut loss = LossKind::SoftmaxCrossEntropy.build(x.nrows(), net.outputs);
    net.body.forward(x.view(), mode, &mut ctx);
    let value = loss.forward(net.body.output(), y.view(), &mut ctx);
    loss.backward(net.body.output(), y.view(), &mut ctx);
    net.body.backward(x.view(), loss.grad(), true, &mut ctx);
    value
}

/// Element-wise equal within a relative tolerance (arrays or views; shared
/// with the FT tests).
pub(crate) fn assert_close<'a, 'b>(
    what: &str,
    a: impl AsArray<'a, f32, Ix2>,
    b: impl AsArray<'b, f32, Ix2>,
    tol: f32,
) {
    let (a, b) = (a.into(), b.into());
    assert_eq!(a.dim(), b.dim(), "{what}: shapes");
    for ((i, &x), &y) in a.indexed_iter().zip(b.iter()) {
        assert!(
            (x - y).abs() <= tol * (1.0 + x.abs().max(y.abs())),
            "{what}{i:?}: {x} vs {y}"
        );
    }
}

/// A child (any depth, any widths) computes the outputs, input gradient
/// and parameter gradients of a standalone network built from its spec and
/// holding its sliced weights, in training mode (dropout masks, batch
/// statistics) and in evaluation mode (running statistics); its gradients
/// stay in the supernet's parameters afterwards, and the supernet keeps
/// its layers.
#[test]
fn a_child_equals_a_standalone_network_with_its_sliced_weights() {
    let mut rng = SmallRng::seed_from_u64(1);
    for (space, children) in spaces(0.25) {
        let mut sup = Supernet::new(space.clone(), 5, 3, Task::Multiclass, 11).expect("builds");
        perturb(&mut sup, &mut rng);
        let whole_params = sup.network().parameter_count();
        let whole_names = sup.network().body.names().to_vec();
        for choice in children {
            let spec = space.child_spec(&choice).expect("valid");
            let what = format!("{} child {choice:?}", spec.describe());
            let x = random(9, 5, &mut rng);
            let y = labels(9, 3);
            let alone_grads = sup
                .with_child(&choice, |t| {
                    assert_eq!(t.net.spec().expect("a child has a spec"), spec, "{what}");
                    let mut alone = spec.build(5, 3, 12).expect("builds");
                    copy_child(&mut t.net, &mut alone);
                    assert_eq!(t.net.parameter_count(), alone.parameter_count());
                    for mode in [Mode::Train, Mode::Eval] {
                        t.net.zero_grad();
                        alone.zero_grad();
                        let a = pass(&mut t.net, &x, &y, mode);
                        let b = pass(&mut alone, &x, &y, mode);
                        let what = format!("{what} {mode:?}");
                        assert!((a - b).abs() < 1e-6, "{what}: loss {a} vs {b}");
                        assert_close(
                            &format!("{what} output"),
                            &t.net.body.output().to_owned(),
                            &alone.body.output().to_owned(),
                            1e-5,
                        );
                        assert_close(
                            &format!("{what} input gradient"),
                            &t.net.body.grad_input().to_owned(),
                            &alone.body.grad_input().to_owned(),
                            1e-5,
                        );
                        let (ga, gb) = (grads(&mut t.net), grads(&mut alone));
                        assert_eq!(ga.len(), gb.len(), "{what}");
                        for (name, g) in &ga {
                            assert_close(&format!("{what} {name}"), g, &gb[name], 1e-5);
                        }
                    }
                    grads(&mut alone)
                })
                .expect("a valid child");
            let kept = sup
                .with_child(&choice, |t| grads(&mut t.net))
                .expect("valid");
            for (name, g) in &kept {
                assert_close(&format!("{what} kept {name}"), g, &alone_grads[name], 1e-5);
            }
            assert_eq!(sup.network().body.names(), whole_names.as_slice());
            sup.network().set_full_width().expect("max");
            assert_eq!(sup.network().parameter_count(), whole_params);
        }
    }
}

/// The sandwich step's accumulated gradient (largest child on the labels,
/// the others on its soft targets, children of different depths and
/// widths) equals the sum of each child's gradient computed alone, each
/// embedded in the supernet's full-size parameters.
#[test]
fn sandwich_accumulation_is_the_sum_of_per_child_gradients() {
    let mut rng = SmallRng::seed_from_u64(2);
    for (space, _) in spaces(0.0) {
        let mut sup = Supernet::new(space.clone(), 5, 3, Task::Multiclass, 3).expect("builds");
        perturb(&mut sup, &mut rng);
        let children = sup.sandwich_children(2, &mut StdRng::seed_from_u64(4));
        assert_eq!(children.len(), 4);
        assert_eq!(children[0], space.largest());
        assert_eq!(children[3], space.smallest());
        let x = random(8, 5, &mut rng);
        let y = labels(8, 3);
        let mut sink = NullSink;
        let mut ctx = Ctx::new(&mut sink, 0);
        // The teacher's probabilities from its own training-mode pass.
        let teacher = sup
            .with_child(&children[0], |t| {
                t.net.body.forward(x.view(), Mode::Train, &mut ctx);
                softmax(t.net.body.output()).mapv(|p| p as f32)
            })
            .expect("valid");
        let mut sum: HashMap<String, Array2<f32>> = HashMap::new();
        let mut losses = Vec::new();
        for (i, child) in children.iter().enumerate() {
            sup.network().zero_grad();
            let loss = sup
                .with_child(child, |t| {
                    if i == 0 {
                        t.accumulate(x.view(), y.view(), &mut ctx)
                    } else {
                        t.accumulate_soft(x.view(), teacher.view(), &mut ctx)
                    }
                })
                .expect("valid");
            losses.push(loss);
            sup.network().set_full_width().expect("max");
            for (name, g) in grads(sup.network()) {
                *sum.entry(name).or_insert_with(|| Array2::zeros(g.dim())) += &g;
            }
        }
        sup.network().zero_grad();
        let step = sup
            .accumulate_sandwich(x.view(), y.view(), &children, true, &mut ctx)
            .expect("valid");
        for (a, b) in step.per_child.iter().zip(&losses) {
            assert!((a - b).abs() < 1e-9, "loss {a} vs {b}");
        }
        sup.network().set_full_width().expect("max");
        let accumulated = grads(sup.network());
        assert_eq!(accumulated.len(), sum.len());
        let mut nonzero = 0;
        for (name, g) in &accumulated {
            assert_close(name, g, &sum[name], 1e-5);
            nonzero += usize::from(g.iter().any(|&v| v != 0.0));
        }
        assert_eq!(nonzero, accumulated.len(), "every parameter has a gradient");
        // Bad input is an error, not a panic.
        let wrong = random(8, 4, &mut rng);
        assert!(sup
            .accumulate_sandwich(wrong.view(), y.view(), &children, true, &mut ctx)
            .is_err());
        assert!(sup
            .accumulate_sandwich(x.view(), labels(7, 3).view(), &children, true, &mut ctx)
            .is_err());
        assert!(sup.child_outputs(&children[0], wrong.view(), 4).is_err());
        assert!(sup.with_child(&[0], |_| ()).is_err());
    }
}

/// BatchNorm recalibration of a child: the running mean and variance of
/// its batch norm are the mean over the batches of each batch's mean and
/// unbiased variance of `x·W[..2, ..2] + b[..2]`, computed here by hand;
/// the units beyond the child's width are reset.
#[test]
fn batchnorm_recalibration_gives_the_statistics_computed_by_hand() {
    let space = SupernetSpace::mlp(
        vec![vec![2, 3]],
        vec![],
        settings(Norm::Batch, Activation::Relu, 0.5),
    )
    .expect("valid");
    let mut sup = Supernet::new(space, 2, 2, Task::Binary, 0).expect("builds");
    let w = array![[1.0f32, -2.0, 0.5], [0.5, 1.0, 3.0]];
    let b = array![0.25f32, -1.0, 2.0];
    visit_layers(&mut sup.network().body, &mut |path, layer| {
        if let (LayerRef::Linear(l), "linear0") = (layer, path) {
            l.weight.assign(&w);
            l.bias.assign(&b);
        }
    });
    let x = array![
        [1.0f32, 2.0],
        [-1.0, 0.5],
        [3.0, -2.0],
        [0.0, 1.0],
        [2.0, 2.0],
        [-3.0, 1.5],
        [9.0, 9.0]
    ];
    // Two batches of three rows (the seventh row is beyond two batches).
    let done = sup
        .recalibrate_batch_norm(&[0], x.view(), 3, 2)
        .expect("valid");
    assert_eq!(done, 2);
    let (mean, var) = sup
        .with_child(&[0], |t| {
            let mut stats = None;
            visit_layers(&mut t.net.body, &mut |_, layer| {
                if let LayerRef::BatchNorm(bn) = layer {
                    let (m, v) = bn.running_stats();
                    stats = Some((m.to_vec(), v.to_vec()));
                }
            });
            stats.expect("a batch norm")
        })
        .expect("valid");
    assert_eq!(mean.len(), 2);
    for j in 0..2 {
        let h = |r: usize| {
            f64::from(x[[r, 0]]) * f64::from(w[[0, j]])
                + f64::from(x[[r, 1]]) * f64::from(w[[1, j]])
                + f64::from(b[j])
        };
        let (mut means, mut vars) = (0.0, 0.0);
        for batch in [0..3, 3..6] {
            let m = batch.clone().map(h).sum::<f64>() / 3.0;
            let v = batch.map(|r| (h(r) - m).powi(2)).sum::<f64>() / 2.0;
            means += m / 2.0;
            vars += v / 2.0;
        }
        assert!((f64::from(mean[j]) - means).abs() < 1e-5, "mean {j}");
        assert!((f64::from(var[j]) - vars).abs() < 1e-4, "var {j}");
    }
    // The third unit, outside the child, holds reset statistics.
    let (mean, var) = sup
        .with_child(&[1], |t| {
            let mut stats = None;
            visit_layers(&mut t.net.body, &mut |_, layer| {
                if let LayerRef::BatchNorm(bn) = layer {
                    let (m, v) = bn.running_stats();
                    stats = Some((m[2], v[2]));
                }
            });
            stats.expect("a batch norm")
        })
        .expect("valid");
    assert_eq!((mean, var), (0.0, 1.0));
}

/// Recalibration runs with dropout off (the statistics are those the
/// evaluation-mode network sees): a supernet with dropout 0.5 gets the same
/// running statistics as the same supernet without dropout, and keeps its
/// dropout afterwards.
#[test]
fn batchnorm_recalibration_runs_without_dropout() {
    let mut rng = SmallRng::seed_from_u64(6);
    let x = random(40, 4, &mut rng);
    let choice = [1, 1, 0];
    let mut stats = Vec::new();
    for dropout in [0.5, 0.0] {
        let space = SupernetSpace::mlp(
            vec![vec![3, 5], vec![2, 6]],
            vec![1, 2],
            settings(Norm::Batch, Activation::Relu, dropout),
        )
        .expect("valid");
        let mut sup = Supernet::new(space, 4, 2, Task::Binary, 3).expect("builds");
        let done = sup.recalibrate_batch_norm(&choice, x.view(), 8, 5);
        assert_eq!(done.expect("valid"), 5);
        let mut seen = Vec::new();
        let mut rates = Vec::new();
        sup.with_child(&choice, |t| {
            visit_layers(&mut t.net.body, &mut |_, layer| match layer {
                LayerRef::BatchNorm(bn) => {
                    let (m, v) = bn.running_stats();
                    seen.push((m.to_vec(), v.to_vec()));
                }
                LayerRef::Dropout(d) => rates.push(d.p),
                _ => {}
            })
        })
        .expect("valid");
        assert_eq!(seen.len(), 2, "two batch norms");
        assert_eq!(rates, vec![dropout; if dropout > 0.0 { 2 } else { 0 }]);
        stats.push(seen);
    }
    assert_eq!(stats[0], stats[1]);
}

/// Two noisy classes separated along x0 + x1, with a noise column.
fn two_classes(rows: usize) -> Dataset {
    let mut rng = StdRng::seed_from_u64(42);
    let mut text = String::from("x0,x1,noise,label\n");
    for i in 0..rows {
        let class = i % 2;
        let centre = if class == 0 { -1.0 } else { 1.0 };
        let x0: f64 = centre + rng.gen_range(-1.2..1.2);
        let x1: f64 = centre + rng.gen_range(-1.2..1.2);
        let noise: f64 = rng.gen_range(-3.0..3.0);
        text.push_str(&format!("{x0},{x1},{noise},{}\n", ["no", "yes"][class]));
    }
    let table = read_table_bytes("two_classes.csv", text.as_bytes()).expect("reads");
    Dataset::from_table("two_classes", &table, &LoadOptions::new("label")).expect("loads")
}

/// Sandwich training (with distillation, BatchNorm, depth and widths)
/// lifts both the largest and the smallest child well above chance on a
/// small synthetic problem, calls the progress callback once per epoch,
/// and is repeatable from its seed.
#[test]
fn sandwich_training_lifts_the_largest_and_smallest_children() {
    let data = two_classes(500);
    let space = SupernetSpace::mlp(
        vec![vec![2, 16], vec![2, 16]],
        vec![1, 2],
        settings(Norm::Batch, Activation::Relu, 0.0),
    )
    .expect("valid");
    let config = SandwichConfig {
        epochs: 8,
        batch_size: 32,
        lr: 1e-2,
        threads: 1,
        ..SandwichConfig::default()
    };
    let eval = EvalSettings {
        recalibration_batches: 4,
        recalibration_batch_size: 64,
        ..EvalSettings::default()
    };
    let mut scores = Vec::new();
    for _ in 0..2 {
        let mut sup = Supernet::for_dataset(space.clone(), &data, 7).expect("builds");
        let before = sup
            .evaluate_child(&space.smallest(), &data, &eval)
            .expect("evaluates");
        // Untrained, the smallest child is at chance (0.5 on this data).
        assert!(before.score() < 0.7, "untrained: {}", before.score());
        let mut epochs = Vec::new();
        let report = sup
            .train(&data, &config, None, &mut |e| epochs.push(e.epoch))
            .expect("trains");
        assert_eq!(epochs, (1..=8).collect::<Vec<_>>());
        assert_eq!(report.steps, 8 * data.train.rows().div_ceil(32) as u64);
        assert_eq!(report.child_passes, 4 * report.steps);
        assert!(report.energy.is_none());
        let largest = sup
            .evaluate_child(&space.largest(), &data, &eval)
            .expect("evaluates");
        let smallest = sup
            .evaluate_child(&space.smallest(), &data, &eval)
            .expect("evaluates");
        assert_eq!(largest.recalibration_batches, 4);
        for e in [&largest, &smallest] {
            assert!(
                e.score() >= 0.85,
                "{}: accuracy {} (before training, smallest: {})",
                e.spec.describe(),
                e.score(),
                before.score()
            );
        }
        scores.push((largest.score(), smallest.score()));
    }
    assert_eq!(scores[0], scores[1], "seeded");
}

/// A meter that keeps what the training hands it: span batches and the
/// phase asked for (a simulated figure, so nothing here reads as measured).
struct KeepingMeter {
    spans: std::sync::Arc<std::sync::Mutex<Vec<tabular_nn::kernels::KernelSpan>>>,
    polls: usize,
    flushed: bool,
}

struct KeepingUploader(std::sync::Arc<std::sync::Mutex<Vec<tabular_nn::kernels::KernelSpan>>>);

impl tabular_nn::kernels::SpanUploader for KeepingUploader {
    fn upload(&mut self, _pid: u32, _tid: u32, spans: &[tabular_nn::kernels::KernelSpan]) {
        self.0
            .lock()
            .expect("not poisoned")
            .extend_from_slice(spans);
    }
}

impl tabular_nn::meter::PhaseMeter for KeepingMeter {
    fn uploader(&self) -> Box<dyn tabular_nn::kernels::SpanUploader> {
        Box::new(KeepingUploader(self.spans.clone()))
    }
    fn poll_spans(&mut self) {
        self.polls += 1;
    }
    fn flush_spans(&mut self) {
        self.flushed = true;
    }
    fn min_window_ns(&self) -> u64 {
        0
    }
    fn phase(
        &mut self,
        from: shared::MonotonicNs,
        to: shared::MonotonicNs,
    ) -> Result<tabular_nn::meter::PhaseEnergy, tabular_nn::meter::MeterError> {
        Ok(tabular_nn::meter::PhaseEnergy {
            from_ns: from.as_ns(),
            to_ns: to.as_ns(),
            process_j: 1.5,
            uncertainty_j: 0.1,
            provenance: shared::Provenance::Simulated,
            domains: Vec::new(),
            kernels: Vec::new(),
            notes: Vec::new(),
        })
    }
    fn span_delivery(&self) -> tabular_nn::meter::SpanDelivery {
        tabular_nn::meter::SpanDelivery::default()
    }
}

/// Regression: sandwich training with distillation on the teacher's
/// outputs brings both extreme children's validation RMSE (in the target's
/// units) well under the target's deviation; the training phase goes
/// through the `PhaseMeter` (every kernel span handed over, polled once per
/// epoch, the phase asked for the training's own window).
#[test]
fn regression_supernets_train_and_report_through_the_meter() {
    use tabular_nn::kernels::KernelKind;
    let mut rng = StdRng::seed_from_u64(9);
    let mut text = String::from("x0,x1,y\n");
    for _ in 0..400 {
        let (x0, x1): (f64, f64) = (rng.gen_range(-2.0..2.0), rng.gen_range(-2.0..2.0));
        let y = 3.0 * x0 - 2.0 * x1 + 10.0 + rng.gen_range(-0.2..0.2);
        text.push_str(&format!("{x0},{x1},{y}\n"));
    }
    let table = read_table_bytes("linear.csv", text.as_bytes()).expect("reads");
    let mut opts = LoadOptions::new("y");
    opts.task = Some(Task::Regression);
    let data = Dataset::from_table("linear", &table, &opts).expect("loads");
    let space = SupernetSpace::resnet(
        vec![4, 8],
        vec![vec![4, 8], vec![4, 8]],
        vec![1, 2],
        settings(Norm::Batch, Activation::Relu, 0.0),
    )
    .expect("valid");
    let mut sup = Supernet::for_dataset(space.clone(), &data, 1).expect("builds");
    let mut meter = KeepingMeter {
        spans: Default::default(),
        polls: 0,
        flushed: false,
    };
    let config = SandwichConfig {
        epochs: 30,
        batch_size: 32,
        lr: 1e-2,
        threads: 1,
        ..SandwichConfig::default()
    };
    let report = sup
        .train(&data, &config, Some(&mut meter), &mut |_| {})
        .expect("trains");
    let energy = report.energy.as_ref().expect("the meter answered");
    assert_eq!(energy.provenance, shared::Provenance::Simulated);
    assert_eq!(energy.to_ns - energy.from_ns, report.train_wall_ns);
    assert_eq!(meter.polls, 30);
    assert!(meter.flushed);
    let spans = meter.spans.lock().expect("not poisoned");
    let recorded: u64 = report.train_kernels.iter().map(|k| k.count).sum();
    assert_eq!(spans.len() as u64, recorded, "every span handed over");
    for kind in [
        KernelKind::BatchGather,
        KernelKind::LinearFwd,
        KernelKind::BatchnormBwd,
        KernelKind::MseBwd,
    ] {
        assert!(spans.iter().any(|s| s.kind == kind), "{kind:?}");
    }
    let std = data.target_scale.std;
    for choice in [space.largest(), space.smallest()] {
        let e = sup
            .evaluate_child(&choice, &data, &EvalSettings::default())
            .expect("evaluates");
        let rmse = e.metrics.rmse.expect("regression");
        assert!(
            rmse < 0.25 * std,
            "{}: rmse {rmse}, std {std}",
            e.spec.describe()
        );
        assert_eq!(e.score(), -rmse);
    }
}

/// Stop and resume: two epochs, a checkpoint, a fresh supernet (another
/// initialisation, checked to differ) restored from it and trained two more
/// epochs ends with exactly the weights, statistics and moments of four
/// uninterrupted epochs, the progress callback seeing epochs 1 to 4 once.
/// Returns the checkpoint after epoch 2, the resumed supernet, the
/// configuration and the optimizer steps of the first two epochs, for a
/// caller's further checks. Shared by every backbone's test.
pub(crate) fn assert_resume_is_exact(
    space: &SupernetSpace,
    data: &Dataset,
) -> (SupernetCheckpoint, Supernet, SandwichConfig, u64) {
    let config = SandwichConfig {
        epochs: 4,
        batch_size: 32,
        lr: 1e-2,
        threads: 1,
        ..SandwichConfig::default()
    };
    let mut whole = Supernet::for_dataset(space.clone(), data, 5).expect("builds");
    whole
        .train(data, &config, None, &mut |_| {})
        .expect("trains");
    let expect = whole.checkpoint(4).expect("checkpoint");
    let mut first = Supernet::for_dataset(space.clone(), data, 5).expect("builds");
    let mut seen = Vec::new();
    let half = first
        .train_epochs(data, &config, 1..=2, None, &mut |e| seen.push(e.epoch))
        .expect("trains");
    let stopped = first.checkpoint(2).expect("checkpoint");
    let mut resumed = Supernet::for_dataset(space.clone(), data, 99).expect("builds");
    assert_ne!(
        resumed.checkpoint(0).expect("checkpoint").tensors,
        stopped.tensors,
        "another initialisation, or the restore proves nothing"
    );
    resumed.restore(&stopped).expect("fits");
    resumed
        .train_epochs(data, &config, 3..=4, None, &mut |e| seen.push(e.epoch))
        .expect("trains");
    assert_eq!(seen, [1, 2, 3, 4]);
    let got = resumed.checkpoint(4).expect("checkpoint");
    assert_eq!(got.tensors, expect.tensors);
    assert_eq!(got.moments.len(), expect.moments.len());
    for (a, b) in got.moments.iter().zip(&expect.moments) {
        let (a, b) = (a.as_ref().expect("stepped"), b.as_ref().expect("stepped"));
        assert_eq!(
            (&a.first, &a.second, a.steps),
            (&b.first, &b.second, b.steps)
        );
    }
    (stopped, resumed, config, half.steps)
}

/// Stop and resume a ResNet supernet with dropout and BatchNorm on (so
/// every random draw and running statistic counts); a checkpoint of
/// another space does not fit, nor does training past the configuration.
#[test]
fn a_resumed_training_equals_the_uninterrupted_one() {
    let data = two_classes(160);
    let space = SupernetSpace::resnet(
        vec![4, 8],
        vec![vec![3, 6], vec![3, 6]],
        vec![1, 2],
        settings(Norm::Batch, Activation::Relu, 0.2),
    )
    .expect("valid");
    let (stopped, mut resumed, config, half_steps) = assert_resume_is_exact(&space, &data);
    assert_eq!(half_steps, 2 * 4);
    // A checkpoint of another space does not fit.
    let other = SupernetSpace::mlp(
        vec![vec![3]],
        vec![],
        settings(Norm::None, Activation::Relu, 0.0),
    )
    .expect("valid");
    let mut small = Supernet::for_dataset(other, &data, 0).expect("builds");
    assert!(small.restore(&stopped).is_err());
    assert!(resumed
        .train_epochs(&data, &config, 3..=5, None, &mut |_| {})
        .is_err());
}
