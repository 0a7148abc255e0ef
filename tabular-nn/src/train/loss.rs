//! Losses: softmax cross-entropy over class logits and mean squared error,
//! each a forward and a backward kernel, against hard targets (class
//! indices, values) or soft ones (a teacher's probabilities or outputs).

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

    /// Gradient of the last [`Loss::backward`] or [`Loss::backward_soft`].
    pub fn grad(&self) -> ArrayView2<'_, f32> {
        self.grad.view()
    }

    /// Mean loss against *soft* targets, as in-place distillation uses (a
    /// supernet's children learn the largest child's predictions):
    /// cross-entropy `−Σ_c p_c·log softmax(z)_c` against a probability row
    /// per sample (`targets`: (batch, classes), rows summing to 1), or for
    /// MSE the squared error against a (batch, 1) column of teacher outputs.
    pub fn forward_soft(
        &mut self,
        outputs: ArrayView2<f32>,
        targets: ArrayView2<f32>,
        ctx: &mut Ctx,
    ) -> f64 {
        assert_eq!(outputs.dim(), targets.dim(), "targets match outputs");
        let t = span_start(ctx.sink);
        let (value, kind) = match self.kind {
            LossKind::SoftmaxCrossEntropy => {
                let sum =
                    Zip::from(outputs.rows())
                        .and(targets.rows())
                        .fold(0.0f64, |acc, z, p| {
                            let max = z.fold(f32::NEG_INFINITY, |m, &v| m.max(v));
                            let lse = z.fold(0.0f64, |s, &v| s + f64::from(v - max).exp()).ln()
                                + f64::from(max);
                            acc + Zip::from(&z)
                                .and(&p)
                                .fold(0.0f64, |a, &z, &p| a + f64::from(p) * (lse - f64::from(z)))
                        });
                (sum, KernelKind::SoftmaxXentFwd)
            }
            LossKind::Mse => {
                let sum = Zip::from(&outputs)
                    .and(&targets)
                    .fold(0.0f64, |a, &p, &y| a + f64::from(p - y).powi(2));
                (sum, KernelKind::MseFwd)
            }
        };
        span_end(ctx.sink, kind, t);
        value / outputs.nrows().max(1) as f64
    }

    /// Gradient of [`Loss::forward_soft`]'s mean loss with respect to
    /// `outputs`, into [`Loss::grad`]: `(softmax(z) − p)/n`, or
    /// `2(ŷ − y)/n` for MSE.
    pub fn backward_soft(
        &mut self,
        outputs: ArrayView2<f32>,
        targets: ArrayView2<f32>,
        ctx: &mut Ctx,
    ) {
        assert_eq!(outputs.dim(), targets.dim(), "targets match outputs");
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
                    .and(targets.rows())
                    .for_each(|mut g, z, p| {
                        let max = z.fold(f32::NEG_INFINITY, |m, &v| m.max(v));
                        let mut sum = 0.0f32;
                        Zip::from(&mut g).and(&z).for_each(|g, &v| {
                            *g = (v - max).exp();
                            sum += *g;
                        });
                        let scale = 1.0 / sum;
                        // The targets' row sum (1 for a distribution) keeps
                        // the gradient exact for any non-negative row.
                        let mass = p.sum();
                        Zip::from(&mut g)
                            .and(&p)
                            .for_each(|g, &p| *g = inv_n * (*g * scale * mass - p));
                    });
                span_end(ctx.sink, KernelKind::SoftmaxXentBwd, t);
            }
            LossKind::Mse => {
                Zip::from(&mut self.grad)
                    .and(&outputs)
                    .and(&targets)
                    .for_each(|g, &p, &y| *g = 2.0 * (p - y) * inv_n);
                span_end(ctx.sink, KernelKind::MseBwd, t);
            }
        }
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

    /// Soft-target losses: gradients match finite differences, and one-hot
    /// soft targets give the hard-target loss and gradient.
    #[test]
    fn soft_target_losses_match_finite_differences_and_hard_targets() {
        let mut sink = NullSink;
        let mut ctx = Ctx::new(&mut sink, 0);
        let z = array![[0.3f32, -1.2, 0.5], [2.0, 0.1, -0.4]];
        let p = array![[0.2f32, 0.5, 0.3], [0.7, 0.1, 0.2]];
        let mut loss = LossKind::SoftmaxCrossEntropy.build(2, 3);
        loss.backward_soft(z.view(), p.view(), &mut ctx);
        let analytic = loss.grad().to_owned();
        let eps = 1e-3f32;
        for r in 0..2 {
            for c in 0..3 {
                let mut zp = z.clone();
                zp[[r, c]] += eps;
                let up = loss.forward_soft(zp.view(), p.view(), &mut ctx);
                zp[[r, c]] -= 2.0 * eps;
                let down = loss.forward_soft(zp.view(), p.view(), &mut ctx);
                let numeric = (up - down) / (2.0 * f64::from(eps));
                let a = f64::from(analytic[[r, c]]);
                assert!((numeric - a).abs() < 1e-3, "[{r},{c}]: {numeric} vs {a}");
            }
        }
        // One-hot soft targets are the hard targets.
        let hard = array![2.0f32, 0.0];
        let one_hot = array![[0.0f32, 0.0, 1.0], [1.0, 0.0, 0.0]];
        let soft_value = loss.forward_soft(z.view(), one_hot.view(), &mut ctx);
        loss.backward_soft(z.view(), one_hot.view(), &mut ctx);
        let soft_grad = loss.grad().to_owned();
        let hard_value = loss.forward(z.view(), hard.view(), &mut ctx);
        loss.backward(z.view(), hard.view(), &mut ctx);
        assert!((soft_value - hard_value).abs() < 1e-9);
        for (a, b) in soft_grad.iter().zip(loss.grad().iter()) {
            assert!((a - b).abs() < 1e-6);
        }
        // MSE against a teacher's column.
        let mut mse = LossKind::Mse.build(2, 1);
        let (yhat, teacher) = (array![[0.5f32], [-1.0]], array![[0.0f32], [1.0]]);
        let value = mse.forward_soft(yhat.view(), teacher.view(), &mut ctx);
        assert!((value - (0.25 + 4.0) / 2.0).abs() < 1e-9);
        mse.backward_soft(yhat.view(), teacher.view(), &mut ctx);
        assert_eq!(mse.grad().to_owned(), array![[0.5f32], [-2.0]]);
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
