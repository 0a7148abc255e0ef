//! Splitting matrices from the network's hooks.
//!
//! For each mini-batch the network runs forward and backward in evaluation
//! mode with an [`Observer`] that keeps, per site, the incoming linear
//! layer's input `x`, the activation's input `h` (after the batch norm) and
//! the gradient `g` at the activation's output. A neuron `j`'s terms are
//! then `x̃ = [x, 1]` and the per-sample coefficient
//! `c_j = g_j·σ''(h_j)·a_j²`, with `a_j = γ_j/√(var_j + ε)` the batch
//! norm's scale (1 without one): the second derivative of
//! `σ(a_j·θ_jᵀx̃ + const)` in `θ_j` is `σ''·a_j²·x̃x̃ᵀ`. Its splitting
//! matrix is `S_j = mean over rows of c_j·x̃x̃ᵀ`.

use crate::site::{split_sites, SplitSite};
use crate::SplitError;
use ndarray::{s, Array2, ArrayView1, ArrayView2, Axis};
use tabular_nn::kernels::NullSink;
use tabular_nn::model::layers::{Ctx, Layer, LayerKind, LayerRef, Mode, Observer, NORM_EPS};
use tabular_nn::model::visit::visit_layers;
use tabular_nn::model::Network;
use tabular_nn::train::LossKind;

/// One site's terms on one mini-batch.
#[derive(Debug, Clone)]
pub struct SiteBatch {
    /// `x̃` per row: the neurons' input with a trailing 1, `(rows, fan_in + 1)`.
    pub inputs: Array2<f64>,
    /// Per-sample `g·σ''(h)·a²`, `(rows, neurons)`.
    pub coef: Array2<f64>,
}

impl SiteBatch {
    /// `S_j·v_j` of this batch for every neuron `j` at once (column `j` of
    /// `v` is neuron `j`'s vector): `X̃ᵀ(C ∘ X̃V)/rows`, two matrix products
    /// (the Hessian-vector product the reference gets from one extra
    /// backward pass).
    pub fn products(&self, v: ArrayView2<f64>) -> Array2<f64> {
        let mut u = self.inputs.dot(&v);
        u *= &self.coef;
        let mut sv = self.inputs.t().dot(&u);
        sv /= self.inputs.nrows().max(1) as f64;
        sv
    }
}

/// What the observer keeps of one site on the current batch.
#[derive(Default)]
struct Seen {
    x: Option<Array2<f32>>,
    h: Option<Array2<f32>>,
    g: Option<Array2<f32>>,
}

struct SiteObserver<'a> {
    sites: &'a [SplitSite],
    seen: Vec<Seen>,
}

impl Observer for SiteObserver<'_> {
    fn on_forward(
        &mut self,
        path: &str,
        _kind: LayerKind,
        input: ArrayView2<f32>,
        _output: ArrayView2<f32>,
    ) {
        for (site, seen) in self.sites.iter().zip(&mut self.seen) {
            if site.incoming == path {
                seen.x = Some(input.to_owned());
            }
            if site.activation_path == path {
                seen.h = Some(input.to_owned());
            }
        }
    }
    fn on_backward(
        &mut self,
        path: &str,
        _kind: LayerKind,
        grad_output: ArrayView2<f32>,
        _grad_input: Option<ArrayView2<f32>>,
    ) {
        for (site, seen) in self.sites.iter().zip(&mut self.seen) {
            if site.activation_path == path {
                seen.g = Some(grad_output.to_owned());
            }
        }
    }
}

/// Each site's batch-norm scale `a_j` (ones without a norm).
pub(crate) fn norm_scales(net: &mut Network, sites: &[SplitSite]) -> Vec<Vec<f64>> {
    let mut scales: Vec<Vec<f64>> = sites.iter().map(|s| vec![1.0; s.width]).collect();
    visit_layers(&mut net.body, &mut |path, layer| {
        let LayerRef::BatchNorm(bn) = layer else {
            return;
        };
        for (site, scale) in sites.iter().zip(&mut scales) {
            if site.norm.as_deref() != Some(path) {
                continue;
            }
            let var: Vec<f32> = bn.running_stats().1.to_vec();
            let mut gamma = Vec::new();
            bn.visit_parameters(&mut |p| {
                if p.name == "gamma" {
                    gamma = p.value.iter().copied().collect();
                }
            });
            for ((a, &g), &v) in scale.iter_mut().zip(&gamma).zip(&var) {
                *a = f64::from(g) / f64::from(v + NORM_EPS).sqrt();
            }
        }
    });
    scales
}

/// Runs `net` forward and backward over `x`, `y` in evaluation mode in
/// batches of `batch_size` rows and hands each batch's site terms to
/// `each`; returns the mean loss over the rows.
pub fn for_each_batch(
    net: &mut Network,
    sites: &[SplitSite],
    x: ArrayView2<f32>,
    y: ArrayView1<f32>,
    loss: LossKind,
    batch_size: usize,
    each: &mut dyn FnMut(&[SiteBatch]),
) -> Result<f64, SplitError> {
    if x.ncols() != net.inputs {
        return Err(SplitError::Inputs {
            expected: net.inputs,
            got: x.ncols(),
        });
    }
    let n = x.nrows();
    if n == 0 || y.len() != n {
        return Err(SplitError::NoRows);
    }
    let scales = norm_scales(net, sites);
    let mut loss = loss.build(batch_size, net.outputs);
    let mut sink = NullSink;
    let mut loss_sum = 0.0;
    let mut start = 0;
    while start < n {
        let end = (start + batch_size.max(1)).min(n);
        let (xb, yb) = (x.slice(s![start..end, ..]), y.slice(s![start..end]));
        let rows = end - start;
        let mut observer = SiteObserver {
            sites,
            seen: sites.iter().map(|_| Seen::default()).collect(),
        };
        {
            let mut ctx = Ctx::with_observer(&mut sink, 0, &mut observer);
            net.zero_grad();
            net.body.forward(xb, Mode::Eval, &mut ctx);
            loss_sum += loss.forward(net.body.output(), yb, &mut ctx) * rows as f64;
            loss.backward(net.body.output(), yb, &mut ctx);
            net.body.backward(xb, loss.grad(), false, &mut ctx);
        }
        net.zero_grad();
        let terms: Vec<SiteBatch> = sites
            .iter()
            .zip(observer.seen)
            .zip(&scales)
            .map(|((site, seen), scale)| {
                let (Some(xs), Some(h), Some(g)) = (seen.x, seen.h, seen.g) else {
                    unreachable!("every site's layers run in every pass")
                };
                let mut inputs = Array2::<f64>::ones((rows, site.fan_in + 1));
                inputs
                    .slice_mut(s![.., ..site.fan_in])
                    .assign(&xs.mapv(f64::from));
                // The loss is the batch mean: its gradient carries 1/rows.
                let per_sample = rows as f64;
                let mut coef = Array2::<f64>::zeros((rows, site.width));
                let scale = ndarray::ArrayView1::from(&scale[..]);
                let act = site.activation;
                for ((mut c, hr), gr) in coef
                    .axis_iter_mut(Axis(0))
                    .zip(h.axis_iter(Axis(0)))
                    .zip(g.axis_iter(Axis(0)))
                {
                    ndarray::Zip::from(&mut c)
                        .and(&hr)
                        .and(&gr)
                        .and(&scale)
                        .for_each(|c, &h, &g, &a| {
                            let s2 = f64::from(act.second_derivative(h));
                            *c = per_sample * f64::from(g) * s2 * a * a;
                        });
                }
                SiteBatch { inputs, coef }
            })
            .collect();
        each(&terms);
        start = end;
    }
    Ok(loss_sum / n as f64)
}

/// Every neuron's splitting matrix, averaged over the rows given.
#[derive(Debug, Clone)]
pub struct SplittingMatrices {
    /// The sites, in layer order.
    pub sites: Vec<SplitSite>,
    /// Per site, per neuron: `S_j`, `(fan_in + 1)²`, symmetric.
    pub matrices: Vec<Vec<Array2<f64>>>,
    /// Rows averaged over.
    pub rows: usize,
    /// Mean loss over those rows (evaluation mode).
    pub mean_loss: f64,
}

/// The splitting matrix of every neuron of every site of `net`, averaged
/// over `x`, `y` (in batches of `batch_size`), symmetrised.
pub fn splitting_matrices(
    net: &mut Network,
    x: ArrayView2<f32>,
    y: ArrayView1<f32>,
    loss: LossKind,
    batch_size: usize,
) -> Result<SplittingMatrices, SplitError> {
    let sites = split_sites(net)?;
    let mut sums: Vec<Vec<Array2<f64>>> = sites
        .iter()
        .map(|s| vec![Array2::zeros((s.fan_in + 1, s.fan_in + 1)); s.width])
        .collect();
    let mean_loss = for_each_batch(net, &sites, x, y, loss, batch_size, &mut |terms| {
        for (term, sums) in terms.iter().zip(&mut sums) {
            for (j, sum) in sums.iter_mut().enumerate() {
                // Σ_rows c_j·x̃x̃ᵀ = (X̃ ∘ c_j)ᵀ X̃.
                let weighted = &term.inputs * &term.coef.column(j).insert_axis(Axis(1));
                ndarray::linalg::general_mat_mul(1.0, &weighted.t(), &term.inputs, 1.0, sum);
            }
        }
    })?;
    let rows = x.nrows();
    for sum in sums.iter_mut().flatten() {
        let sym = (&*sum + &sum.t()) / (2.0 * rows as f64);
        *sum = sym;
    }
    Ok(SplittingMatrices {
        sites,
        matrices: sums,
        rows,
        mean_loss,
    })
}
