//! The proxies themselves, each a function of a spec and the data (see the
//! crate doc for the protocol and what differs from the references).

use crate::probe::{
    abs_parameters, build, hessian_vector_product, loss_backward, sum_backward, weights,
};
use crate::{ProxyData, ProxyError, ProxyKind, JACOB_COV_K, ZEN_MIXUP};
use linfa_linalg::eigh::EigValsh;
use ndarray::{Array2, ArrayView2, Axis};
use nn_plan::ModelSpec;
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use rand_distr::StandardNormal;
use std::collections::HashMap;
use tabular_nn::model::layers::{Ctx, Layer, Mode};
use tabular_nn::model::visit::{LayerKind, Observer};
use tabular_nn::model::Network;

/// Dispatches to the proxy's function.
pub(crate) fn compute(
    kind: ProxyKind,
    spec: &ModelSpec,
    data: &ProxyData,
    seed: u64,
) -> Result<f64, ProxyError> {
    let net = || build(spec, data.inputs(), data.outputs(), seed, false);
    Ok(match kind {
        ProxyKind::GradNorm => grad_norm(&mut net()?, data),
        ProxyKind::Snip => snip(&mut net()?, data),
        ProxyKind::Grasp => grasp(&mut net()?, data),
        ProxyKind::Fisher => fisher(&mut net()?, data),
        ProxyKind::Synflow => synflow(&mut build(spec, data.inputs(), data.outputs(), seed, true)?),
        ProxyKind::JacobCov => jacob_cov(&mut net()?, data),
        ProxyKind::Naswot => naswot(&mut net()?, data),
        ProxyKind::Zen => zen(&mut net()?, data.batches()[0].x.nrows(), seed),
        ProxyKind::Zico => zico(&mut net()?, data),
        ProxyKind::ExpressFlow => express_flow(&mut net()?, data),
        ProxyKind::Params => net()?.parameter_count() as f64,
        ProxyKind::Flops => net()?.flops_per_row().0 as f64,
    })
}

/// Σ over linear layers of ‖∂L/∂W‖_F.
pub(crate) fn grad_norm(net: &mut Network, data: &ProxyData) -> f64 {
    loss_backward(net, &data.batches()[0], data.loss(), None);
    weights(net)
        .iter()
        .map(|w| {
            w.grad
                .iter()
                .map(|&g| f64::from(g).powi(2))
                .sum::<f64>()
                .sqrt()
        })
        .sum()
}

/// Σ |W ⊙ ∂L/∂W|.
pub(crate) fn snip(net: &mut Network, data: &ProxyData) -> f64 {
    loss_backward(net, &data.batches()[0], data.loss(), None);
    saliency(net)
}

/// −Σ W ⊙ (H g), g = ∂L/∂W (GraSP as the reference code signs it).
pub(crate) fn grasp(net: &mut Network, data: &ProxyData) -> f64 {
    let batch = &data.batches()[0];
    loss_backward(net, batch, data.loss(), None);
    let w = weights(net);
    let g: Vec<Array2<f32>> = w.iter().map(|w| w.grad.clone()).collect();
    let hg = hessian_vector_product(net, batch, data.loss(), &g);
    -w.iter()
        .zip(&hg)
        .map(|(w, h)| {
            w.value
                .iter()
                .zip(h)
                .map(|(&v, &h)| f64::from(v) * h)
                .sum::<f64>()
        })
        .sum::<f64>()
}

/// Keeps each linear layer's output and output gradient (fisher).
#[derive(Default)]
struct LinearTaps {
    /// Path → (output, fan-in), in forward order.
    outputs: Vec<(String, Array2<f32>, usize)>,
    /// Path → output gradient.
    grads: HashMap<String, Array2<f32>>,
}

impl Observer for LinearTaps {
    fn on_forward(
        &mut self,
        path: &str,
        kind: LayerKind,
        input: ArrayView2<f32>,
        output: ArrayView2<f32>,
    ) {
        if kind == LayerKind::Linear {
            self.outputs
                .push((path.to_owned(), output.to_owned(), input.ncols()));
        }
    }
    fn on_backward(
        &mut self,
        path: &str,
        kind: LayerKind,
        grad_output: ArrayView2<f32>,
        _grad_input: Option<ArrayView2<f32>>,
    ) {
        if kind == LayerKind::Linear {
            self.grads.insert(path.to_owned(), grad_output.to_owned());
        }
    }
}

/// Σ over linear layers and their output units k of
/// fan-in × ½ mean_n (a_nk ∂L/∂a_nk)² (the reference's per-channel Δ_k,
/// broadcast to the unit's weights, summed).
pub(crate) fn fisher(net: &mut Network, data: &ProxyData) -> f64 {
    let mut taps = LinearTaps::default();
    loss_backward(net, &data.batches()[0], data.loss(), Some(&mut taps));
    let mut total = 0.0;
    for (path, a, fan_in) in &taps.outputs {
        let Some(g) = taps.grads.get(path) else {
            continue;
        };
        let rows = a.nrows() as f64;
        for k in 0..a.ncols() {
            let mean_sq: f64 = a
                .column(k)
                .iter()
                .zip(g.column(k))
                .map(|(&a, &g)| (f64::from(a) * f64::from(g)).powi(2))
                .sum::<f64>()
                / rows;
            total += *fan_in as f64 * 0.5 * mean_sq;
        }
    }
    total
}

/// Σ |W ⊙ ∂R/∂W| of the |θ| network (norms already removed by the
/// caller), input a single all-ones row, R = Σ outputs.
pub(crate) fn synflow(net: &mut Network) -> f64 {
    abs_parameters(net);
    let ones = Array2::<f32>::ones((1, net.inputs));
    sum_backward(net, ones.view(), Mode::Eval, false, None);
    saliency(net)
}

/// Σ |W ⊙ ∂/∂W| over the linear weights, of the gradient the last backward
/// pass left: SNIP's and synflow's sum, on their different passes.
fn saliency(net: &mut Network) -> f64 {
    weights(net)
        .iter()
        .map(|w| {
            w.value
                .iter()
                .zip(&w.grad)
                .map(|(&v, &g)| (f64::from(v) * f64::from(g)).abs())
                .sum::<f64>()
        })
        .sum()
}

/// −Σ [log(λ + k) + 1/(λ + k)] over the eigenvalues λ of the correlation
/// matrix of the per-sample input Jacobians of Σ outputs.
pub(crate) fn jacob_cov(net: &mut Network, data: &ProxyData) -> f64 {
    let x = &data.batches()[0].x;
    let Some(j) = sum_backward(net, x.view(), Mode::Train, true, None) else {
        return f64::NEG_INFINITY;
    };
    let Some(c) = row_correlation(j.view()) else {
        return f64::NEG_INFINITY;
    };
    let Ok(values) = c.eigvalsh() else {
        return f64::NEG_INFINITY;
    };
    -values
        .iter()
        .map(|&v| {
            let v = v.max(0.0) + JACOB_COV_K;
            v.ln() + 1.0 / v
        })
        .sum::<f64>()
}

/// Pearson correlation between the rows of `m` (numpy's `corrcoef`);
/// `None` when a row is constant (its correlation is undefined).
pub(crate) fn row_correlation(m: ArrayView2<f32>) -> Option<Array2<f64>> {
    let mut z = m.mapv(f64::from);
    for mut row in z.axis_iter_mut(Axis(0)) {
        let mean = row.mean()?;
        row.mapv_inplace(|v| v - mean);
        let norm = row.iter().map(|v| v * v).sum::<f64>().sqrt();
        if norm == 0.0 || !norm.is_finite() {
            return None;
        }
        row.mapv_inplace(|v| v / norm);
    }
    Some(z.dot(&z.t()))
}

/// Accumulates NASWOT's kernel from every activation's input.
struct CodeKernel {
    k: Array2<f64>,
}

impl Observer for CodeKernel {
    fn on_forward(
        &mut self,
        _path: &str,
        kind: LayerKind,
        input: ArrayView2<f32>,
        _output: ArrayView2<f32>,
    ) {
        if !matches!(kind, LayerKind::Activation(_)) {
            return;
        }
        let c = input.mapv(|v| if v > 0.0 { 1.0f64 } else { 0.0 });
        let nc = c.mapv(|v| 1.0 - v);
        self.k += &c.dot(&c.t());
        self.k += &nc.dot(&nc.t());
    }
    fn on_backward(
        &mut self,
        _: &str,
        _: LayerKind,
        _: ArrayView2<f32>,
        _: Option<ArrayView2<f32>>,
    ) {
    }
}

/// log |det K|, K = Σ over activations of c cᵀ + (1−c)(1−c)ᵀ with
/// c = 1[pre-activation > 0] per sample; -∞ when K is singular.
pub(crate) fn naswot(net: &mut Network, data: &ProxyData) -> f64 {
    let x = &data.batches()[0].x;
    let n = x.nrows();
    let mut kernel = CodeKernel {
        k: Array2::zeros((n, n)),
    };
    forward_only(net, x.view(), &mut kernel);
    log_abs_det_symmetric(&kernel.k)
}

/// A training-mode forward pass with an observer (no backward).
fn forward_only(net: &mut Network, x: ArrayView2<f32>, observer: &mut dyn Observer) {
    let mut sink = tabular_nn::kernels::NullSink;
    let mut ctx = Ctx::with_observer(&mut sink, 0, observer);
    net.body.forward(x, Mode::Train, &mut ctx);
}

/// log |det A| of a symmetric matrix from its eigenvalues; -∞ when an
/// eigenvalue is zero to working precision (|λ| ≤ n·max|λ|·ε, numpy's rank
/// tolerance).
pub(crate) fn log_abs_det_symmetric(a: &Array2<f64>) -> f64 {
    let Ok(values) = a.eigvalsh() else {
        return f64::NEG_INFINITY;
    };
    let max = values.iter().fold(0.0f64, |m, v| m.max(v.abs()));
    let tol = a.nrows() as f64 * max * f64::EPSILON;
    if max == 0.0 || values.iter().any(|v| v.abs() <= tol) {
        return f64::NEG_INFINITY;
    }
    values.iter().map(|v| v.abs().ln()).sum()
}

/// Zen's inputs: `rows` Gaussian rows and their perturbation direction,
/// both from `seed`.
pub fn zen_inputs(rows: usize, cols: usize, seed: u64) -> (Array2<f32>, Array2<f32>) {
    let mut rng = SmallRng::seed_from_u64(seed ^ 0x7a65_6e5f_696e_7075);
    let x = Array2::from_shape_fn((rows, cols), |_| rng.sample::<f32, _>(StandardNormal));
    let e = Array2::from_shape_fn((rows, cols), |_| rng.sample::<f32, _>(StandardNormal));
    (x, e)
}

/// Zen's re-initialisation: linear weights N(0, 1), biases 0, norm scales
/// 1 and shifts 0, from `seed`.
pub fn zen_reinit(net: &mut Network, seed: u64) {
    let mut rng = SmallRng::seed_from_u64(seed ^ 0x7a65_6e5f_7765_6967);
    net.body.visit_parameters(&mut |mut p| match p.name {
        "weight" => p
            .value
            .mapv_inplace(|_| rng.sample::<f32, _>(StandardNormal)),
        "gamma" => p.value.fill(1.0),
        _ => p.value.fill(0.0),
    });
}

/// The last linear layer's input and every batch norm's batch variance.
#[derive(Default)]
struct ZenTaps {
    head_input: Option<Array2<f32>>,
    bn_log_scales: Vec<f64>,
}

impl Observer for ZenTaps {
    fn on_forward(
        &mut self,
        _path: &str,
        kind: LayerKind,
        input: ArrayView2<f32>,
        _output: ArrayView2<f32>,
    ) {
        match kind {
            LayerKind::Linear => self.head_input = Some(input.to_owned()),
            LayerKind::BatchNorm => {
                // Batch variance (biased, as the layer normalises with it)
                // per feature, then log sqrt of its mean over features.
                let x = input.mapv(f64::from);
                let mean = x.mean_axis(Axis(0)).unwrap_or_default();
                let var = (&x - &mean).mapv(|v| v * v).mean_axis(Axis(0));
                let mean_var = var.and_then(|v| v.mean()).unwrap_or(0.0);
                self.bn_log_scales.push(mean_var.sqrt().ln());
            }
            _ => {}
        }
    }
    fn on_backward(
        &mut self,
        _: &str,
        _: LayerKind,
        _: ArrayView2<f32>,
        _: Option<ArrayView2<f32>>,
    ) {
    }
}

/// log mean_n Σ_k |f(x) − f(x + γε)| + Σ_BN log sqrt(mean var), f the
/// input of the last linear layer, Gaussian weights and inputs.
pub(crate) fn zen(net: &mut Network, rows: usize, seed: u64) -> f64 {
    zen_reinit(net, seed);
    let (x, e) = zen_inputs(rows, net.inputs, seed);
    let mixed = &x + &e.mapv(|v| v * ZEN_MIXUP);
    let mut first = ZenTaps::default();
    forward_only(net, x.view(), &mut first);
    let mut second = ZenTaps::default();
    forward_only(net, mixed.view(), &mut second);
    let (Some(a), Some(b)) = (first.head_input, second.head_input) else {
        return f64::NEG_INFINITY;
    };
    let delta = a
        .iter()
        .zip(&b)
        .map(|(&p, &q)| (f64::from(p) - f64::from(q)).abs())
        .sum::<f64>()
        / rows as f64;
    delta.ln() + first.bn_log_scales.iter().sum::<f64>()
}

/// Σ over linear layers of log Σ_θ mean_b|g_θ| / std_b(g_θ) (population
/// std, weights with std 0 skipped, layers whose sum is 0 skipped), over
/// every batch.
pub(crate) fn zico(net: &mut Network, data: &ProxyData) -> f64 {
    let mut per_layer: Vec<Vec<Array2<f32>>> = Vec::new();
    for batch in data.batches() {
        loss_backward(net, batch, data.loss(), None);
        for (i, w) in weights(net).into_iter().enumerate() {
            if per_layer.len() <= i {
                per_layer.push(Vec::new());
            }
            per_layer[i].push(w.grad);
        }
    }
    let b = data.batches().len() as f64;
    let mut total = 0.0;
    for grads in &per_layer {
        let mut sum = 0.0;
        let shape = grads[0].raw_dim();
        for idx in ndarray::indices(shape) {
            let values: Vec<f64> = grads.iter().map(|g| f64::from(g[idx])).collect();
            let mean = values.iter().sum::<f64>() / b;
            let std = (values.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / b).sqrt();
            if std != 0.0 {
                let mean_abs = values.iter().map(|v| v.abs()).sum::<f64>() / b;
                sum += mean_abs / std;
            }
        }
        if sum != 0.0 {
            total += sum.ln();
        }
    }
    total
}

/// Keeps each activation's output and output gradient (ExpressFlow).
#[derive(Default)]
struct ActivationTaps {
    outputs: Vec<(String, Array2<f32>)>,
    grads: HashMap<String, Array2<f32>>,
}

impl Observer for ActivationTaps {
    fn on_forward(
        &mut self,
        path: &str,
        kind: LayerKind,
        _input: ArrayView2<f32>,
        output: ArrayView2<f32>,
    ) {
        if matches!(kind, LayerKind::Activation(_)) {
            self.outputs.push((path.to_owned(), output.to_owned()));
        }
    }
    fn on_backward(
        &mut self,
        path: &str,
        kind: LayerKind,
        grad_output: ArrayView2<f32>,
        _grad_input: Option<ArrayView2<f32>>,
    ) {
        if matches!(kind, LayerKind::Activation(_)) {
            self.grads.insert(path.to_owned(), grad_output.to_owned());
        }
    }
}

/// ExpressFlow: on the |θ| network with the batch as input and R = Σ
/// outputs, Σ over the first ⌈L/2⌉ activation layers of
/// (Σ z ⊙ |∂R/∂z|) × width, / 10.
pub(crate) fn express_flow(net: &mut Network, data: &ProxyData) -> f64 {
    abs_parameters(net);
    let mut taps = ActivationTaps::default();
    sum_backward(
        net,
        data.batches()[0].x.view(),
        Mode::Train,
        false,
        Some(&mut taps),
    );
    let take = taps.outputs.len().div_ceil(2);
    taps.outputs
        .iter()
        .take(take)
        .map(|(path, z)| {
            let Some(g) = taps.grads.get(path) else {
                return 0.0;
            };
            let v: f64 = z
                .iter()
                .zip(g)
                .map(|(&z, &g)| f64::from(z) * f64::from(g).abs())
                .sum();
            v * z.ncols() as f64
        })
        .sum::<f64>()
        / 10.0
}
