//! Losses: softmax cross-entropy over class logits and mean squared error,
//! each a forward and a backward kernel.

use crate::kernels::{span_end, span_start, KernelKind};
use crate::model::layers::Ctx;
use ndarray::{Array2, ArrayView1, ArrayView2, Axis, Zip};

/// Which loss.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LossKind {
    /// Softmax over the logits, then the mean negative log-likelihood of the
    /// target class (targets are class indices stored as f32).
    SoftmaxCrossEntropy,
    /// Mean of (prediction − target)² over a (batch, 1) output.
    Mse,
}

impl LossKind {
    /// A loss for batches of `batch` rows and `cols` outputs (buffers are
    /// resized if later batches differ).
    pub fn build(self, batch: usize, cols: usize) -> Loss {
        Loss {
            kind: self,
            grad: Array2::zeros((batch, cols)),
        }
    }
}

/// A loss with its gradient buffer.
pub struct Loss {
    kind: LossKind,
    grad: Array2<f32>,
}

/// Smallest probability used in a log, so a confident mistake costs a large
/// finite loss instead of infinity.
const MIN_PROB: f64 = 1e-12;

impl Loss {
    /// Which loss this is.
    pub fn kind(&self) -> LossKind {
        self.kind
    }

    /// Mean loss over the rows of `outputs`.
    pub fn forward(
        &mut self,
        outputs: ArrayView2<f32>,
        targets: ArrayView1<f32>,
        ctx: &mut Ctx,
    ) -> f64 {
        let (kernel, value) = match self.kind {
            LossKind::SoftmaxCrossEntropy => {
                let t = span_start(ctx.sink);
                (t, sum_cross_entropy(outputs, targets))
            }
            LossKind::Mse => {
                let t = span_start(ctx.sink);
                let s: f64 = Zip::from(outputs.column(0))
                    .and(&targets)
                    .fold(0.0, |a, &p, &y| a + f64::from(p - y).powi(2));
                (t, s)
            }
        };
        let kind = match self.kind {
            LossKind::SoftmaxCrossEntropy => KernelKind::SoftmaxXentFwd,
            LossKind::Mse => KernelKind::MseFwd,
        };
        span_end(ctx.sink, kind, kernel);
        value / outputs.nrows().max(1) as f64
    }

    /// Gradient of the mean loss with respect to `outputs`, into
    /// [`Loss::grad`].
    pub fn backward(&mut self, outputs: ArrayView2<f32>, targets: ArrayView1<f32>, ctx: &mut Ctx) {
        let t = span_start(ctx.sink);
        let (n, c) = outputs.dim();
        if self.grad.dim() != (n, c) {
            self.grad = Array2::zeros((n, c));
        }
        let inv_n = 1.0 / n.max(1) as f32;
        match self.kind {
            LossKind::SoftmaxCrossEntropy => {
                Zip::from(self.grad.rows_mut())
                    .and(outputs.rows())
                    .and(&targets)
                    .for_each(|mut g, z, &y| {
                        let max = z.fold(f32::NEG_INFINITY, |m, &v| m.max(v));
                        let mut sum = 0.0f32;
                        Zip::from(&mut g).and(&z).for_each(|g, &v| {
                            *g = (v - max).exp();
                            sum += *g;
                        });
                        let scale = inv_n / sum;
                        g.mapv_inplace(|e| e * scale);
                        let y = y as usize;
                        if y < g.len() {
                            g[y] -= inv_n;
                        }
                    });
                span_end(ctx.sink, KernelKind::SoftmaxXentBwd, t);
            }
            LossKind::Mse => {
                Zip::from(self.grad.column_mut(0))
                    .and(outputs.column(0))
                    .and(&targets)
                    .for_each(|g, &p, &y| *g = 2.0 * (p - y) * inv_n);
                span_end(ctx.sink, KernelKind::MseBwd, t);
            }
        }
    }

    /// Gradient of the last [`Loss::backward`].
    pub fn grad(&self) -> ArrayView2<'_, f32> {
        self.grad.view()
    }
}

/// Sum over rows of −log softmax(z)[y], computed stably in f64.
fn sum_cross_entropy(logits: ArrayView2<f32>, targets: ArrayView1<f32>) -> f64 {
    Zip::from(logits.rows())
        .and(&targets)
        .fold(0.0f64, |acc, z, &y| {
            let max = z.fold(f32::NEG_INFINITY, |m, &v| m.max(v));
            let lse = z.fold(0.0f64, |s, &v| s + f64::from(v - max).exp()).ln() + f64::from(max);
            let zy = z.get(y as usize).copied().map_or(f64::NAN, f64::from);
            acc + (lse - zy).min(-MIN_PROB.ln())
        })
}

/// Row-wise softmax of logits (probabilities for metrics).
pub fn softmax(logits: ArrayView2<f32>) -> Array2<f64> {
    let mut p = logits.mapv(f64::from);
    for mut row in p.axis_iter_mut(Axis(0)) {
        let max = row.fold(f64::NEG_INFINITY, |m, &v| m.max(v));
        row.mapv_inplace(|v| (v - max).exp());
        let s = row.sum();
        row.mapv_inplace(|v| v / s);
    }
    p
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::NullSink;
    use ndarray::{array, Array1};

    /// Finite-difference check of both losses' gradients.
    #[test]
    fn loss_gradients_match_finite_differences() {
        let mut sink = NullSink;
        let mut ctx = Ctx::new(&mut sink, 0);
        let cases: [(LossKind, Array2<f32>, Array1<f32>); 2] = [
            (
                LossKind::SoftmaxCrossEntropy,
                array![[0.3, -1.2, 0.5], [2.0, 0.1, -0.4], [-0.7, 0.2, 0.9]],
                array![2.0, 0.0, 1.0],
            ),
            (
                LossKind::Mse,
                array![[0.3], [-1.1], [2.5]],
                array![0.0, -1.0, 1.0],
            ),
        ];
        for (kind, z, y) in cases {
            let mut loss = kind.build(3, z.ncols());
            loss.backward(z.view(), y.view(), &mut ctx);
            let analytic = loss.grad().to_owned();
            let eps = 1e-3f32;
            for i in 0..z.len() {
                let (r, c) = (i / z.ncols(), i % z.ncols());
                let mut zp = z.clone();
                zp[[r, c]] += eps;
                let lp = loss.forward(zp.view(), y.view(), &mut ctx);
                zp[[r, c]] -= 2.0 * eps;
                let lm = loss.forward(zp.view(), y.view(), &mut ctx);
                let numeric = (lp - lm) / (2.0 * f64::from(eps));
                let a = f64::from(analytic[[r, c]]);
                assert!(
                    (numeric - a).abs() < 1e-3,
                    "{kind:?} [{r},{c}]: {numeric} vs {a}"
                );
            }
        }
    }

    #[test]
    fn cross_entropy_of_uniform_logits_is_log_classes() {
        let mut sink = NullSink;
        let mut ctx = Ctx::new(&mut sink, 0);
        let z = Array2::<f32>::zeros((4, 3));
        let y = array![0.0, 1.0, 2.0, 0.0];
        let l = LossKind::SoftmaxCrossEntropy
            .build(4, 3)
            .forward(z.view(), y.view(), &mut ctx);
        assert!((l - 3f64.ln()).abs() < 1e-6);
        let p = softmax(z.view());
        assert!((p[[0, 0]] - 1.0 / 3.0).abs() < 1e-12);
    }
}
