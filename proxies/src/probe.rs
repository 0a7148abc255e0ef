//! The passes proxies are made of, over the trainer's layer API: building
//! the scored network, a loss backward pass, a backward pass of the summed
//! outputs, the linear layers' weights with their gradients, and the
//! Hessian-vector product of GraSP.

use crate::{ProxyBatch, ProxyError, HVP_STEP};
use ndarray::{Array2, ArrayView2};
use nn_plan::{ModelSpec, Norm};
use tabular_nn::kernels::NullSink;
use tabular_nn::model::layers::{Ctx, Layer, Mode};
use tabular_nn::model::visit::{visit_named_parameters, Observer};
use tabular_nn::model::{BuildNetwork, Network};
use tabular_nn::train::LossKind;

/// The network proxies score for `spec`: dropout removed, normalisation
/// removed too when `strip_norm` (synflow), initialised from `seed`.
pub fn build(
    spec: &ModelSpec,
    inputs: usize,
    outputs: usize,
    seed: u64,
    strip_norm: bool,
) -> Result<Network, ProxyError> {
    let mut spec = spec.clone();
    spec.dropout = 0.0;
    if strip_norm {
        spec.norm = Norm::None;
    }
    Ok(spec.build(inputs, outputs, seed)?)
}

/// Forward in training mode, the mean `loss` over the batch, and its
/// backward pass: afterwards every parameter holds ∂L/∂θ (cleared first).
/// Returns the loss.
pub fn loss_backward(
    net: &mut Network,
    batch: &ProxyBatch,
    loss: LossKind,
    observer: Option<&mut dyn Observer>,
) -> f64 {
    let mut sink = NullSink;
    let mut ctx = match observer {
        Some(o) => Ctx::with_observer(&mut sink, 0, o),
        None => Ctx::new(&mut sink, 0),
    };
    let mut l = loss.build(batch.x.nrows(), net.outputs);
    net.zero_grad();
    net.body.forward(batch.x.view(), Mode::Train, &mut ctx);
    let value = l.forward(net.body.output(), batch.y.view(), &mut ctx);
    l.backward(net.body.output(), batch.y.view(), &mut ctx);
    net.body.backward(batch.x.view(), l.grad(), false, &mut ctx);
    value
}

/// Forward `x` in `mode`, then back-propagates R = Σ outputs (an output
/// gradient of ones): parameters hold ∂R/∂θ (cleared first); with
/// `input_grad`, returns ∂R/∂x, one row per sample.
pub fn sum_backward(
    net: &mut Network,
    x: ArrayView2<f32>,
    mode: Mode,
    input_grad: bool,
    observer: Option<&mut dyn Observer>,
) -> Option<Array2<f32>> {
    let mut sink = NullSink;
    let mut ctx = match observer {
        Some(o) => Ctx::with_observer(&mut sink, 0, o),
        None => Ctx::new(&mut sink, 0),
    };
    net.zero_grad();
    net.body.forward(x, mode, &mut ctx);
    let ones = Array2::<f32>::ones(net.body.output().raw_dim());
    net.body.backward(x, ones.view(), input_grad, &mut ctx);
    input_grad.then(|| net.body.grad_input().to_owned())
}

/// A linear layer's weight matrix with its accumulated gradient.
#[derive(Debug, Clone)]
pub struct WeightGrad {
    /// The layer's path (`linear0`, `block1.linear2`, `head`).
    pub path: String,
    /// Weights, (in, out).
    pub value: Array2<f32>,
    /// Gradient, (in, out).
    pub grad: Array2<f32>,
}

/// Every linear layer's weights and gradient, in visit order (the
/// parameters named `weight`: only linear layers have one; norms have
/// `gamma`/`beta`).
pub fn weights(net: &mut Network) -> Vec<WeightGrad> {
    let mut out = Vec::new();
    visit_named_parameters(&mut net.body, &mut |path, p| {
        if p.name == "weight" {
            out.push(WeightGrad {
                path: path.to_owned(),
                value: p.value.to_owned(),
                grad: p.grad.to_owned(),
            });
        }
    });
    out
}

/// Calls `f` on each linear layer's weight matrix, in the order of
/// [`weights`], with its index.
pub fn map_weights(net: &mut Network, f: &mut dyn FnMut(usize, ndarray::ArrayViewMut2<f32>)) {
    let mut i = 0;
    visit_named_parameters(&mut net.body, &mut |_, p| {
        if p.name == "weight" {
            f(i, p.value);
            i += 1;
        }
    });
}

/// Replaces every parameter (weights, biases, norm scales and shifts) by
/// its absolute value: synflow's and ExpressFlow's "linearised" network.
pub fn abs_parameters(net: &mut Network) {
    net.body
        .visit_parameters(&mut |mut p| p.value.mapv_inplace(f32::abs));
}

/// H·v, the Hessian of the mean loss on `batch` with respect to the
/// linear layers' weights times `v` (one matrix per layer, in the order of
/// [`weights`]), by a central difference of two gradients with the largest
/// weight moving by [`HVP_STEP`]. The weights are restored afterwards.
pub fn hessian_vector_product(
    net: &mut Network,
    batch: &ProxyBatch,
    loss: LossKind,
    v: &[Array2<f32>],
) -> Vec<Array2<f64>> {
    let vmax = v
        .iter()
        .flat_map(|m| m.iter())
        .fold(0.0f32, |a, &x| a.max(x.abs()));
    if vmax == 0.0 || !vmax.is_finite() {
        return v.iter().map(|m| Array2::zeros(m.raw_dim())).collect();
    }
    let eps = HVP_STEP / vmax;
    let base: Vec<Array2<f32>> = weights(net).into_iter().map(|w| w.value).collect();
    let grad_at = |sign: f32, net: &mut Network| -> Vec<Array2<f32>> {
        map_weights(net, &mut |i, mut w| {
            ndarray::Zip::from(&mut w)
                .and(&base[i])
                .and(&v[i])
                .for_each(|w, &b, &d| *w = b + sign * eps * d);
        });
        loss_backward(net, batch, loss, None);
        weights(net).into_iter().map(|w| w.grad).collect()
    };
    let plus = grad_at(1.0, net);
    let minus = grad_at(-1.0, net);
    map_weights(net, &mut |i, mut w| w.assign(&base[i]));
    // (g+ − g−) / 2ε with ε the nominal step: the applied step differs
    // from it by f32 rounding, about ulp(w) / step (3e-5 relative for the
    // largest component at a weight near 0.3; smaller components round
    // more but weigh proportionally less).
    plus.iter()
        .zip(&minus)
        .map(|(p, m)| {
            let mut out = Array2::<f64>::zeros(p.raw_dim());
            ndarray::Zip::from(&mut out)
                .and(p)
                .and(m)
                .for_each(|o, &a, &b| *o = (f64::from(a) - f64::from(b)) / (2.0 * f64::from(eps)));
            out
        })
        .collect()
}
