//! The acceptance tests of issue 13 for FT-Transformer supernets: a child
//! (token width, depth, ReGLU width) against a standalone FT-Transformer
//! built from its spec holding weights sliced here by hand from the
//! supernet's full-size tensors; stop and resume; sandwich training on a
//! small synthetic problem.

use crate::tests::{assert_close, pass, random};
use crate::{FtSettings, SandwichConfig, Supernet, SupernetSpace};
use ndarray::{concatenate, s, Array1, Array2, ArrayView2, Axis};
use nn_plan::{Backbone, FtDropouts};
use rand::rngs::{SmallRng, StdRng};
use rand::{Rng, SeedableRng};
use std::collections::HashMap;
use tabular_nn::data::{read_table_bytes, Dataset, LoadOptions, Task};
use tabular_nn::kernels::NullSink;
use tabular_nn::model::layers::{Ctx, Layer, Mode};
use tabular_nn::model::visit::visit_named_parameters;
use tabular_nn::model::{BuildNetwork, Network};

/// Five input columns: a numeric feature, a categorical one of three
/// one-hot columns, a numeric one.
const FEATURE_WIDTHS: [usize; 3] = [1, 3, 1];
/// The space's largest ReGLU width (the offset of the gate half).
const MAX_HIDDEN: usize = 6;

fn space(dropouts: FtDropouts) -> SupernetSpace {
    SupernetSpace::ft_transformer(
        vec![4, 8],
        vec![1, 2],
        vec![3, MAX_HIDDEN],
        FtSettings {
            heads: 2,
            dropouts,
            feature_widths: FEATURE_WIDTHS.to_vec(),
        },
    )
    .expect("valid")
}

/// Every dropout on, so masks are drawn in every place they can be.
const DROPOUTS: FtDropouts = FtDropouts {
    attention: 0.2,
    ffn: 0.1,
    residual: 0.1,
};

/// Every parameter by full name (`ffn0.linear1.weight`).
fn named_values(net: &mut Network) -> HashMap<String, Array2<f32>> {
    let mut out = HashMap::new();
    visit_named_parameters(&mut net.body, &mut |path, p| {
        out.insert(format!("{path}.{}", p.name), p.value.to_owned());
    });
    out
}

fn named_grads(net: &mut Network) -> HashMap<String, Array2<f32>> {
    let mut out = HashMap::new();
    visit_named_parameters(&mut net.body, &mut |path, p| {
        out.insert(format!("{path}.{}", p.name), p.grad.to_owned());
    });
    out
}

/// Whether `name` is the first FFN layer of a block (ReGLU's input).
fn is_reglu_input(name: &str) -> bool {
    name.starts_with("ffn") && name.contains(".linear1.")
}

/// The child's block of a full-size tensor, by hand: `[..rows, ..cols]`,
/// except ReGLU's input layer, whose columns are the leading `cols / 2` of
/// the value half and of the gate half (which starts at `gate`).
fn slice_for(
    name: &str,
    full: ArrayView2<f32>,
    rows: usize,
    cols: usize,
    gate: usize,
) -> Array2<f32> {
    if is_reglu_input(name) {
        let h = cols / 2;
        concatenate![
            Axis(1),
            full.slice(s![..rows, ..h]),
            full.slice(s![..rows, gate..gate + h])
        ]
    } else {
        full.slice(s![..rows, ..cols]).to_owned()
    }
}

/// A child of every kind (smallest, largest, narrow and deep, wide and
/// shallow, ...) computes the loss, outputs, input gradient and parameter
/// gradients of a standalone FT-Transformer built from its spec holding
/// its weights, sliced here by hand from the supernet's full tensors, in
/// training mode (every dropout on) and in evaluation mode. The unused
/// value columns of ReGLU's input layer get exactly zero gradient, the
/// supernet keeps its layers, and its gradients stay in place.
#[test]
fn an_ft_child_equals_a_standalone_network_with_its_sliced_weights() {
    let space = space(DROPOUTS);
    let (inputs, outputs) = (5, 3);
    let mut sup =
        Supernet::new(space.clone(), inputs, outputs, Task::Multiclass, 11).expect("builds");
    let mut rng = SmallRng::seed_from_u64(3);
    // Away from the initial values (zero attention biases, unit norms).
    sup.network().set_full_width().expect("max");
    sup.network().body.visit_parameters(&mut |mut p| {
        p.value.mapv_inplace(|v| v + rng.gen_range(-0.3f32..0.3));
    });
    let full = named_values(sup.network());
    let whole_names = sup.network().body.names().to_vec();
    let children = [
        space.smallest(),
        space.largest(),
        vec![1, 0, 0],
        vec![0, 1, 1],
        vec![1, 1, 0],
    ];
    for choice in children {
        let spec = space.child_spec(&choice).expect("valid");
        let Backbone::FtTransformer {
            d_token,
            n_blocks,
            d_ffn,
            ..
        } = spec.backbone
        else {
            panic!("an ft space built {spec:?}");
        };
        let what = format!("{} child {choice:?}", spec.describe());
        let x = random(7, inputs, &mut rng);
        let y = Array1::from_shape_fn(7, |i| (i % outputs) as f32);
        let mut alone = spec.build(inputs, outputs, 12).expect("builds");
        visit_named_parameters(&mut alone.body, &mut |path, mut p| {
            let name = format!("{path}.{}", p.name);
            let (rows, cols) = p.value.dim();
            let source = full.get(&name).unwrap_or_else(|| panic!("{what}: {name}"));
            p.value
                .assign(&slice_for(&name, source.view(), rows, cols, MAX_HIDDEN));
        });
        let alone_params = alone.parameter_count();
        let kept = sup
            .with_child(&choice, |t| {
                let blocks = t.net.body.names().iter().filter(|n| n.starts_with("ffn"));
                assert_eq!(blocks.count(), n_blocks, "{what}");
                for mode in [Mode::Train, Mode::Eval] {
                    t.net.zero_grad();
                    alone.zero_grad();
                    let a = pass(&mut t.net, &x, &y, mode);
                    let b = pass(&mut alone, &x, &y, mode);
                    let what = format!("{what} {mode:?}");
                    assert!((a - b).abs() < 1e-6, "{what}: loss {a} vs {b}");
                    assert_close(
                        &format!("{what} output"),
                        t.net.body.output(),
                        alone.body.output(),
                        1e-5,
                    );
                    assert_close(
                        &format!("{what} input gradient"),
                        t.net.body.grad_input(),
                        alone.body.grad_input(),
                        1e-5,
                    );
                    let (child, standalone) = (named_grads(&mut t.net), named_grads(&mut alone));
                    assert_eq!(child.len(), standalone.len(), "{what}");
                    for (name, g) in &standalone {
                        let c = &child[name];
                        if is_reglu_input(name) {
                            // (d, H + h): the ignored value columns h..H.
                            assert_eq!(c.dim(), (g.nrows(), MAX_HIDDEN + d_ffn), "{what} {name}");
                            assert!(
                                c.slice(s![.., d_ffn..MAX_HIDDEN]).iter().all(|&v| v == 0.0),
                                "{what} {name}: unused columns have a gradient"
                            );
                        }
                        let sliced = slice_for(name, c.view(), g.nrows(), g.ncols(), MAX_HIDDEN);
                        assert_close(&format!("{what} {name}"), sliced.view(), g.view(), 1e-5);
                    }
                }
                named_grads(&mut t.net)
            })
            .expect("a valid child");
        // The gradients are the supernet's: the same child sees them again.
        let again = sup
            .with_child(&choice, |t| named_grads(&mut t.net))
            .expect("valid");
        assert_eq!(again, kept, "{what}");
        assert_eq!(sup.network().body.names(), whole_names.as_slice());
        // The standalone network has the child's parameters (the child's
        // views of ReGLU's input also hold the unused columns).
        let unused: usize = (0..n_blocks)
            .map(|_| (d_token + 1) * (MAX_HIDDEN - d_ffn))
            .sum();
        let child_params = sup
            .with_child(&choice, |t| t.net.parameter_count())
            .expect("valid");
        assert_eq!(child_params, alone_params + unused, "{what}");
    }
}

/// The space's decisions, specs and refusals.
#[test]
fn ft_spaces_name_their_children() {
    let space = space(FtDropouts::PUBLISHED);
    let labels: Vec<Vec<String>> = space.decisions().iter().map(|d| d.labels()).collect();
    assert_eq!(
        labels,
        [
            vec!["token width 4", "token width 8"],
            vec!["blocks 1", "blocks 2"],
            vec!["ffn hidden width 3", "ffn hidden width 6"],
        ]
    );
    assert_eq!(
        space.child_spec(&[1, 0, 0]).unwrap().backbone,
        Backbone::FtTransformer {
            d_token: 8,
            n_blocks: 1,
            n_heads: 2,
            d_ffn: 3,
            dropouts: FtDropouts::PUBLISHED,
            feature_widths: FEATURE_WIDTHS.to_vec(),
        }
    );
    assert_eq!(space.child_widths(&[0, 1, 1]).unwrap(), [4, 6, 6]);
    assert_eq!(space.canonical(&[0, 0, 1]).unwrap(), [0, 0, 1]);
    assert_eq!(
        space.supernet_spec(),
        space.child_spec(&space.largest()).unwrap()
    );
    let fitted = SupernetSpace::ft_transformer(
        vec![4],
        vec![1],
        vec![2],
        FtSettings {
            heads: 1,
            dropouts: FtDropouts::PUBLISHED,
            feature_widths: Vec::new(),
        },
    )
    .unwrap()
    .with_feature_widths(vec![2, 1]);
    assert_eq!(fitted.ft_settings().unwrap().feature_widths, [2, 1]);
    let settings = |heads| FtSettings {
        heads,
        dropouts: FtDropouts::PUBLISHED,
        feature_widths: Vec::new(),
    };
    // Token widths the heads do not divide, a depth beyond the blocks.
    assert!(SupernetSpace::ft_transformer(vec![4, 6], vec![1], vec![2], settings(4)).is_err());
    assert!(SupernetSpace::ft_transformer(vec![4], vec![1], vec![2], settings(0)).is_err());
    assert!(SupernetSpace::ft_transformer(vec![4], vec![], vec![2], settings(2)).is_err());
    assert!(SupernetSpace::ft_transformer(vec![4], vec![1], vec![], settings(2)).is_err());
    let bad_dropout = FtSettings {
        dropouts: FtDropouts {
            attention: 1.0,
            ..FtDropouts::PUBLISHED
        },
        ..settings(2)
    };
    assert!(SupernetSpace::ft_transformer(vec![4], vec![1], vec![2], bad_dropout).is_err());
}

/// Two noisy classes separated along x0 + x1, a noise column and a
/// categorical column that carries the class 80% of the time.
fn two_classes(rows: usize) -> Dataset {
    let mut rng = StdRng::seed_from_u64(42);
    let mut text = String::from("x0,x1,noise,colour,label\n");
    for i in 0..rows {
        let class = i % 2;
        let centre = if class == 0 { -1.0 } else { 1.0 };
        let x0: f64 = centre + rng.gen_range(-1.5..1.5);
        let x1: f64 = centre + rng.gen_range(-1.5..1.5);
        let noise: f64 = rng.gen_range(-3.0..3.0);
        let colour = if rng.gen_bool(0.8) { class } else { 2 };
        text.push_str(&format!(
            "{x0},{x1},{noise},{},{}\n",
            ["red", "blue", "green"][colour],
            ["no", "yes"][class]
        ));
    }
    let table = read_table_bytes("two_classes.csv", text.as_bytes()).expect("reads");
    Dataset::from_table("two_classes", &table, &LoadOptions::new("label")).expect("loads")
}

fn small_space() -> SupernetSpace {
    SupernetSpace::ft_transformer(
        vec![4, 8],
        vec![1, 2],
        vec![4, 8],
        FtSettings {
            heads: 2,
            dropouts: DROPOUTS,
            feature_widths: Vec::new(),
        },
    )
    .expect("valid")
}

/// Sandwich training of an FT supernet (tokenizer fitted to the data's
/// categorical column) lowers the largest and the smallest child's loss
/// and lifts both well above chance; seeded, so repeatable.
#[test]
fn ft_sandwich_training_lowers_the_loss() {
    let data = two_classes(240);
    let space = small_space();
    let config = SandwichConfig {
        epochs: 15,
        batch_size: 32,
        lr: 1e-2,
        threads: 1,
        ..SandwichConfig::default()
    };
    let mut sup = Supernet::for_dataset(space.clone(), &data, 7).expect("builds");
    // Fitted to the data: x0, x1, noise, one three-column categorical.
    let fitted = sup
        .space()
        .ft_settings()
        .expect("ft")
        .feature_widths
        .clone();
    assert_eq!(fitted, data.feature_widths());
    assert!(fitted.contains(&3), "{fitted:?}");
    let report = sup
        .train(&data, &config, None, &mut |_| {})
        .expect("trains");
    let (first, last) = (report.history[0], report.history[14]);
    assert!(
        last.largest_loss < 0.8 * first.largest_loss,
        "largest: {} → {}",
        first.largest_loss,
        last.largest_loss
    );
    assert!(
        last.smallest_loss < first.smallest_loss,
        "smallest: {} → {}",
        first.smallest_loss,
        last.smallest_loss
    );
    let eval = crate::EvalSettings::default();
    for choice in [space.largest(), space.smallest()] {
        let e = sup
            .evaluate_child(&choice, &data, &eval)
            .expect("evaluates");
        // No BatchNorm: nothing to recalibrate.
        assert_eq!(e.recalibration_batches, 0);
        assert!(e.score() >= 0.85, "{}: {}", e.spec.describe(), e.score());
    }
}

/// Stop and resume an FT supernet (dropouts on): as exact as for the other
/// backbones (`tests::assert_resume_is_exact`).
#[test]
fn a_resumed_ft_training_equals_the_uninterrupted_one() {
    crate::tests::assert_resume_is_exact(&small_space(), &two_classes(96));
}

/// The sandwich step on an FT supernet (largest child on the labels, the
/// others on its soft targets, children of different token widths, depths
/// and ReGLU widths) accumulates exactly the sum of each child's gradient
/// computed alone in the supernet's full-size parameters.
#[test]
fn ft_sandwich_accumulation_is_the_sum_of_per_child_gradients() {
    use tabular_nn::train::loss::softmax;
    let space = space(FtDropouts {
        attention: 0.0,
        ffn: 0.0,
        residual: 0.0,
    });
    let mut sup = Supernet::new(space.clone(), 5, 3, Task::Multiclass, 3).expect("builds");
    let mut rng = SmallRng::seed_from_u64(4);
    let children = vec![
        space.largest(),
        vec![0, 1, 1],
        vec![1, 0, 0],
        space.smallest(),
    ];
    let x = random(6, 5, &mut rng);
    let y = Array1::from_shape_fn(6, |i| (i % 3) as f32);
    let mut sink = NullSink;
    let mut ctx = Ctx::new(&mut sink, 0);
    let teacher = sup
        .with_child(&children[0], |t| {
            t.net.body.forward(x.view(), Mode::Train, &mut ctx);
            softmax(t.net.body.output()).mapv(|p| p as f32)
        })
        .expect("valid");
    let mut sum: HashMap<String, Array2<f32>> = HashMap::new();
    for (i, child) in children.iter().enumerate() {
        sup.network().zero_grad();
        sup.with_child(child, |t| {
            if i == 0 {
                t.accumulate(x.view(), y.view(), &mut ctx)
            } else {
                t.accumulate_soft(x.view(), teacher.view(), &mut ctx)
            }
        })
        .expect("valid");
        sup.network().set_full_width().expect("max");
        for (name, g) in named_grads(sup.network()) {
            *sum.entry(name).or_insert_with(|| Array2::zeros(g.dim())) += &g;
        }
    }
    sup.network().zero_grad();
    sup.accumulate_sandwich(x.view(), y.view(), &children, true, &mut ctx)
        .expect("valid");
    sup.network().set_full_width().expect("max");
    let accumulated = named_grads(sup.network());
    assert_eq!(accumulated.len(), sum.len());
    for (name, g) in &accumulated {
        assert_close(name, g.view(), sum[name].view(), 1e-5);
        assert!(g.iter().any(|&v| v != 0.0), "{name} has no gradient");
    }
}
