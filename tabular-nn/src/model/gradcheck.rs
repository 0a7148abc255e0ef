//! Finite-difference checks of every layer's backward pass: the gradient
//! with respect to the input and to every parameter is compared with
//! central differences of the scalar `L = Σ output ⊙ r` for a random `r`.

use super::layers::*;
use super::{Backbone, BuildNetwork, ModelSpec};
use crate::kernels::NullSink;
use ndarray::Array2;
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

const EPS: f32 = 1e-2;
/// Dropout masks are reproduced by seeding every forward pass alike.
const CTX_SEED: u64 = 11;

fn random(rows: usize, cols: usize, rng: &mut SmallRng, away_from_zero: bool) -> Array2<f32> {
    Array2::from_shape_fn((rows, cols), |_| {
        let v: f32 = rng.gen_range(0.15..1.2);
        let sign = if rng.gen::<bool>() { 1.0 } else { -1.0 };
        if away_from_zero {
            sign * v
        } else {
            rng.gen_range(-1.2..1.2)
        }
    })
}

fn objective(layer: &mut dyn Layer, x: &Array2<f32>, r: &Array2<f32>, mode: Mode) -> f64 {
    let mut sink = NullSink;
    let mut ctx = Ctx::new(&mut sink, CTX_SEED);
    layer.forward(x.view(), mode, &mut ctx);
    layer
        .output()
        .iter()
        .zip(r.iter())
        .map(|(&o, &w)| f64::from(o) * f64::from(w))
        .sum()
}

fn set_param(layer: &mut dyn Layer, tensor: usize, index: usize, value: f32) -> f32 {
    let mut k = 0;
    let mut old = 0.0;
    layer.visit_parameters(&mut |mut p| {
        if k == tensor {
            let cell = p.value.iter_mut().nth(index).expect("index in range");
            old = *cell;
            *cell = value;
        }
        k += 1;
    });
    old
}

fn close(numeric: f64, analytic: f64) -> bool {
    (numeric - analytic).abs() <= 5e-3 + 2e-2 * analytic.abs().max(numeric.abs())
}

/// Checks `layer` on `x`; panics with the first mismatch.
fn check(name: &str, layer: &mut dyn Layer, x: Array2<f32>, mode: Mode) {
    let mut rng = SmallRng::seed_from_u64(99);
    let mut sink = NullSink;
    let mut ctx = Ctx::new(&mut sink, CTX_SEED);
    layer.forward(x.view(), mode, &mut ctx);
    let r = random(layer.out_rows(x.nrows()), layer.out_dim(), &mut rng, false);
    layer.backward(x.view(), r.view(), true, &mut ctx);
    let grad_in = layer.grad_input().to_owned();
    // A second pass after clearing: gradients accumulate, so this checks
    // that `zero_grad` really clears them.
    let mut grads: Vec<Vec<f32>> = Vec::new();
    layer.zero_grad();
    layer.backward(x.view(), r.view(), true, &mut ctx);
    layer.visit_parameters(&mut |p| grads.push(p.grad.iter().copied().collect()));

    let mut x_mut = x.clone();
    for i in 0..x.len() {
        let (row, col) = (i / x.ncols(), i % x.ncols());
        let v = x[[row, col]];
        x_mut[[row, col]] = v + EPS;
        let up = objective(layer, &x_mut, &r, mode);
        x_mut[[row, col]] = v - EPS;
        let down = objective(layer, &x_mut, &r, mode);
        x_mut[[row, col]] = v;
        let numeric = (up - down) / (2.0 * f64::from(EPS));
        let analytic = f64::from(grad_in[[row, col]]);
        assert!(
            close(numeric, analytic),
            "{name}: d/dx[{row},{col}] numeric {numeric} analytic {analytic}"
        );
    }
    for (k, g) in grads.iter().enumerate() {
        // Every element of small tensors; a spread sample of large ones.
        let step = (g.len() / 40).max(1);
        for j in (0..g.len()).step_by(step) {
            let v = set_param(layer, k, j, 0.0);
            set_param(layer, k, j, v + EPS);
            let up = objective(layer, &x, &r, mode);
            set_param(layer, k, j, v - EPS);
            let down = objective(layer, &x, &r, mode);
            set_param(layer, k, j, v);
            let numeric = (up - down) / (2.0 * f64::from(EPS));
            let analytic = f64::from(g[j]);
            assert!(
                close(numeric, analytic),
                "{name}: d/dparam{k}[{j}] numeric {numeric} analytic {analytic}"
            );
        }
    }
}

#[test]
fn linear_gradients() {
    let mut rng = SmallRng::seed_from_u64(1);
    let mut layer = Linear::new(5, 4, &mut rng);
    check(
        "linear",
        &mut layer,
        random(6, 5, &mut rng, false),
        Mode::Train,
    );
}

#[test]
fn activation_gradients() {
    let mut rng = SmallRng::seed_from_u64(2);
    for act in [
        Activation::Relu,
        Activation::Gelu,
        Activation::Silu,
        Activation::Tanh,
        Activation::Selu,
    ] {
        let mut layer = ActivationLayer::new(act, 5);
        // Inputs kept away from 0, where ReLU and SELU have a kink.
        check(
            &format!("{act:?}"),
            &mut layer,
            random(4, 5, &mut rng, true),
            Mode::Train,
        );
    }
}

#[test]
fn batchnorm_gradients_with_batch_statistics() {
    let mut rng = SmallRng::seed_from_u64(3);
    let mut layer = BatchNorm::new(4);
    // Non-trivial γ and β so their gradients are exercised.
    layer.visit_parameters(&mut |mut p| {
        for (i, v) in p.value.iter_mut().enumerate() {
            *v += 0.3 * i as f32 - 0.2;
        }
    });
    check(
        "batchnorm",
        &mut layer,
        random(7, 4, &mut rng, false),
        Mode::Train,
    );
}

/// In evaluation BN is the affine map of its running statistics, and its
/// backward pass is that map's (neuron splitting differentiates a network
/// in evaluation, as the reference code does with BN in `eval()`).
#[test]
fn batchnorm_gradients_with_running_statistics() {
    let mut rng = SmallRng::seed_from_u64(4);
    let mut layer = BatchNorm::new(4);
    layer.visit_parameters(&mut |mut p| {
        for (i, v) in p.value.iter_mut().enumerate() {
            *v += 0.3 * i as f32 - 0.2;
        }
    });
    layer.visit_buffers(&mut |mut b| {
        for (i, v) in b.value.iter_mut().enumerate() {
            *v += 0.25 * i as f32 + 0.1;
        }
    });
    check(
        "batchnorm eval",
        &mut layer,
        random(7, 4, &mut rng, false),
        Mode::Eval,
    );
}

#[test]
fn layernorm_gradients() {
    let mut rng = SmallRng::seed_from_u64(4);
    let mut layer = LayerNorm::new(6);
    layer.visit_parameters(&mut |mut p| {
        for (i, v) in p.value.iter_mut().enumerate() {
            *v += 0.25 * i as f32 - 0.5;
        }
    });
    check(
        "layernorm",
        &mut layer,
        random(5, 6, &mut rng, false),
        Mode::Train,
    );
}

#[test]
fn dropout_gradients_with_a_fixed_mask() {
    let mut rng = SmallRng::seed_from_u64(5);
    let mut layer = Dropout::new(0.3, 8);
    check(
        "dropout",
        &mut layer,
        random(6, 8, &mut rng, false),
        Mode::Train,
    );
    check(
        "dropout eval",
        &mut layer,
        random(6, 8, &mut rng, false),
        Mode::Eval,
    );
}

#[test]
fn sequential_and_residual_gradients() {
    let mut rng = SmallRng::seed_from_u64(6);
    let inner = Sequential::new(
        4,
        vec![
            Box::new(LayerNorm::new(4)),
            Box::new(Linear::new(4, 6, &mut rng)),
            Box::new(ActivationLayer::new(Activation::Tanh, 6)),
            Box::new(Linear::new(6, 4, &mut rng)),
        ],
    );
    let mut block = Residual::new(inner);
    check(
        "residual",
        &mut block,
        random(5, 4, &mut rng, false),
        Mode::Train,
    );
    let mut empty = Sequential::new(3, Vec::new());
    check(
        "empty sequential",
        &mut empty,
        random(2, 3, &mut rng, false),
        Mode::Train,
    );
}

#[test]
fn whole_backbones_gradients() {
    let mut rng = SmallRng::seed_from_u64(7);
    for (backbone, norm) in [
        (Backbone::Mlp { widths: vec![6, 5] }, Norm::Batch),
        (
            Backbone::Resnet {
                d_main: 4,
                d_hidden: vec![6, 3],
            },
            Norm::Layer,
        ),
    ] {
        let spec = ModelSpec {
            backbone,
            activation: Activation::Gelu,
            dropout: 0.2,
            norm,
        };
        let mut net = spec.build(3, 2, 1).expect("builds");
        check(
            &spec.describe(),
            &mut net.body,
            random(8, 3, &mut rng, false),
            Mode::Train,
        );
    }
}

#[test]
fn linear_at_a_narrower_active_width_gradients() {
    let mut rng = SmallRng::seed_from_u64(8);
    let mut layer = Linear::new(6, 5, &mut rng);
    layer.set_active(4, 3).expect("within max");
    check(
        "linear 4→3 of 6→5",
        &mut layer,
        random(5, 4, &mut rng, false),
        Mode::Train,
    );
}

#[test]
fn token_selection_gradients() {
    let mut rng = SmallRng::seed_from_u64(9);
    let mut layer = crate::model::tokens::SelectToken::new(3, 1, 4);
    check(
        "select token",
        &mut layer,
        random(6, 4, &mut rng, false),
        Mode::Train,
    );
}

#[test]
fn supernet_children_gradients() {
    let mut rng = SmallRng::seed_from_u64(10);
    for (backbone, norm, child) in [
        (
            Backbone::Mlp { widths: vec![7, 6] },
            Norm::Batch,
            vec![4, 3],
        ),
        (
            Backbone::Resnet {
                d_main: 6,
                d_hidden: vec![7, 5],
            },
            Norm::Layer,
            vec![4, 3, 5],
        ),
    ] {
        let spec = ModelSpec {
            backbone,
            activation: Activation::Silu,
            dropout: 0.2,
            norm,
        };
        let mut net = spec.build(3, 2, 1).expect("builds");
        net.set_active_widths(&child).expect("within max");
        check(
            &format!("{} child {child:?}", spec.describe()),
            &mut net.body,
            random(8, 3, &mut rng, false),
            Mode::Train,
        );
    }
}

#[test]
fn feature_tokenizer_gradients() {
    use crate::model::ft::FeatureTokenizer;
    let mut rng = SmallRng::seed_from_u64(12);
    // Numeric, a categorical of 3, numeric, a categorical of 2.
    let mut layer = FeatureTokenizer::new(&[1, 3, 1, 2], 4, &mut rng);
    check(
        "tokenizer",
        &mut layer,
        random(3, 7, &mut rng, false),
        Mode::Train,
    );
    // One-hot blocks as the encoder writes them (zeros are skipped in the
    // lookup; the derivative there is still the embedding row).
    let x = ndarray::array![
        [0.5f32, 0.0, 1.0, 0.0, -1.2, 1.0, 0.0],
        [-0.3, 1.0, 0.0, 0.0, 0.7, 0.0, 0.0],
    ];
    check("tokenizer one-hot", &mut layer, x, Mode::Train);
}

#[test]
fn attention_gradients() {
    use crate::model::ft::MultiHeadAttention;
    let mut rng = SmallRng::seed_from_u64(13);
    // Two heads with W_out and attention dropout; one head without.
    for (heads, p) in [(2, 0.3), (1, 0.0)] {
        let mut layer = MultiHeadAttention::new(3, 4, heads, p, &mut rng);
        for mode in [Mode::Train, Mode::Eval] {
            check(
                &format!("attention {heads} heads p {p} {mode:?}"),
                &mut layer,
                random(6, 4, &mut rng, false),
                mode,
            );
        }
    }
}

#[test]
fn reglu_gradients() {
    let mut rng = SmallRng::seed_from_u64(14);
    let mut layer = crate::model::ft::Reglu::new(3);
    // Away from 0, where ReLU has its kink.
    check(
        "reglu",
        &mut layer,
        random(4, 6, &mut rng, true),
        Mode::Train,
    );
}

#[test]
fn ft_transformer_gradients() {
    let mut rng = SmallRng::seed_from_u64(15);
    let spec = ModelSpec {
        backbone: Backbone::FtTransformer {
            d_token: 4,
            n_blocks: 2,
            n_heads: 2,
            d_ffn: 3,
            dropouts: nn_plan::FtDropouts {
                attention: 0.2,
                ffn: 0.1,
                residual: 0.1,
            },
            feature_widths: vec![1, 2, 1],
        },
        ..ModelSpec::ft_transformer(Vec::new())
    };
    let mut net = spec.build(4, 2, 1).expect("builds");
    assert_eq!(
        net.parameter_count(),
        spec.architecture(4, 2).unwrap().parameters()
    );
    check(
        &spec.describe(),
        &mut net.body,
        random(3, 4, &mut rng, false),
        Mode::Train,
    );
}
