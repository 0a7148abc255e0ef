//! One training step as an API: a network, its optimizer and its loss,
//! for methods that drive steps themselves (the sandwich rule of supernet
//! training accumulates several children's gradients, with soft targets
//! from the largest, before one optimizer step; neuron splitting
//! fine-tunes between rounds). The `train_and_evaluate` loop keeps its own
//! copy of these few lines, for now.

use super::loss::{Loss, LossKind};
use super::optim::Optimizer;
use crate::model::layers::{Ctx, Layer, Mode};
use crate::model::Network;
use ndarray::{ArrayView1, ArrayView2};

/// A network with its optimizer and loss.
pub struct Trainer {
    /// The network (possibly at narrower active widths).
    pub net: Network,
    /// Its optimizer (state keyed by parameter identity).
    pub opt: Optimizer,
    /// The loss and its gradient buffer.
    pub loss: Loss,
}

impl Trainer {
    /// A trainer for `net` with `opt` and a `loss` loss.
    pub fn new(net: Network, opt: Optimizer, loss: LossKind) -> Trainer {
        let outputs = net.outputs;
        Trainer {
            net,
            opt,
            loss: loss.build(0, outputs),
        }
    }

    /// Forward and backward on a mini-batch with hard targets, adding to
    /// the accumulated gradients (no optimizer step); the mean loss.
    pub fn accumulate(&mut self, x: ArrayView2<f32>, y: ArrayView1<f32>, ctx: &mut Ctx) -> f64 {
        self.net.body.forward(x, Mode::Train, ctx);
        let value = self.loss.forward(self.net.body.output(), y, ctx);
        self.loss.backward(self.net.body.output(), y, ctx);
        self.net.body.backward(x, self.loss.grad(), false, ctx);
        value
    }

    /// [`Trainer::accumulate`] against soft targets (a teacher's
    /// probabilities or outputs: in-place distillation).
    pub fn accumulate_soft(
        &mut self,
        x: ArrayView2<f32>,
        targets: ArrayView2<f32>,
        ctx: &mut Ctx,
    ) -> f64 {
        self.net.body.forward(x, Mode::Train, ctx);
        let value = self.loss.forward_soft(self.net.body.output(), targets, ctx);
        self.loss
            .backward_soft(self.net.body.output(), targets, ctx);
        self.net.body.backward(x, self.loss.grad(), false, ctx);
        value
    }

    /// One optimizer step with the accumulated gradients, which are then
    /// cleared.
    pub fn apply(&mut self, lr: f32, ctx: &mut Ctx) {
        self.opt.step(&mut self.net.body, lr, ctx);
        self.net.zero_grad();
    }

    /// A plain training step: clear, forward, backward, optimizer step; the
    /// mean loss.
    pub fn step(&mut self, x: ArrayView2<f32>, y: ArrayView1<f32>, lr: f32, ctx: &mut Ctx) -> f64 {
        self.net.zero_grad();
        let value = self.accumulate(x, y, ctx);
        self.opt.step(&mut self.net.body, lr, ctx);
        value
    }

    /// Outputs of the network on `x` in evaluation mode (no gradients).
    pub fn predict(&mut self, x: ArrayView2<f32>, ctx: &mut Ctx) -> ArrayView2<'_, f32> {
        self.net.body.forward(x, Mode::Eval, ctx);
        self.net.body.output()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::NullSink;
    use crate::model::layers::{Activation, Norm};
    use crate::model::{Backbone, BuildNetwork, ModelSpec};
    use crate::train::OptimizerKind;
    use ndarray::{Array1, Array2};

    /// A sandwich step (largest child on the labels, two smaller ones on
    /// its predictions, one optimizer step at full width) lowers the
    /// largest child's loss on a fixed batch, and `step` is the plain loop.
    #[test]
    fn sandwich_steps_train_the_supernet() {
        let spec = ModelSpec {
            backbone: Backbone::Mlp {
                widths: vec![16, 16],
            },
            activation: Activation::Relu,
            dropout: 0.0,
            norm: Norm::None,
        };
        let net = spec.build(2, 2, 0).expect("builds");
        let opt = Optimizer::new(OptimizerKind::AdamW, 0.9, 0.999, 0.0);
        let mut t = Trainer::new(net, opt, LossKind::SoftmaxCrossEntropy);
        let x = Array2::from_shape_fn((32, 2), |(i, j)| ((i * 7 + j * 3) % 11) as f32 / 5.0 - 1.0);
        let y = Array1::from_shape_fn(32, |i| f32::from(u8::from(x[[i, 0]] > x[[i, 1]])));
        let mut sink = NullSink;
        let mut ctx = Ctx::new(&mut sink, 0);
        let first = {
            t.net.zero_grad();
            t.accumulate(x.view(), y.view(), &mut ctx)
        };
        t.net.zero_grad();
        let mut last = first;
        for _ in 0..60 {
            t.net.set_full_width().expect("max");
            last = t.accumulate(x.view(), y.view(), &mut ctx);
            let teacher = crate::train::loss::softmax(t.net.body.output()).mapv(|p| p as f32);
            for widths in [[4, 4], [9, 12]] {
                t.net.set_active_widths(&widths).expect("within max");
                t.accumulate_soft(x.view(), teacher.view(), &mut ctx);
            }
            t.net.set_full_width().expect("max");
            t.apply(0.01, &mut ctx);
        }
        assert!(last < 0.5 * first, "loss {first} → {last}");
        let before = t.step(x.view(), y.view(), 0.01, &mut ctx);
        assert!(before.is_finite());
        assert_eq!(t.opt.steps(), 61);
    }
}
