//! The token axis: activations of shape (batch, tokens, features).
//!
//! Between layers such an activation is the row-major matrix
//! (batch·tokens, features): row `b·tokens + t` is token `t` of sample `b`.
//! The 3-D view costs nothing ([`as_tokens`]). Per-token layers (linear,
//! norms, activations, dropout) run unchanged on the 2-D form, so a linear
//! layer applied to every token is one GEMM over batch·tokens rows; layers
//! that mix or pick tokens (attention, [`SelectToken`]) know their token
//! count, and [`Layer::out_rows`] tells how many rows flow on.
//!
//! The kernel plan (`nn_plan`) has no token layer yet: a backbone that
//! uses [`SelectToken`] adds its `LayerShape` there (a `batch_gather` of
//! batch rows forward, and backward when the input gradient is needed, as
//! [`SelectToken`] records), so that what is priced stays what is recorded.

use super::layers::{Ctx, Layer, LayerKind, LayerRef, Mode, Param, WidthError};
use crate::kernels::{span_end, span_start, KernelKind};
use ndarray::{s, Array2, ArrayView2, ArrayView3};

/// The (batch, tokens, features) view of a (batch·tokens, features)
/// activation.
///
/// # Panics
/// If the rows are not a multiple of `tokens` or the matrix is not in
/// standard (row-major, contiguous) layout, which every layer output is.
pub fn as_tokens(x: ArrayView2<'_, f32>, tokens: usize) -> ArrayView3<'_, f32> {
    let (rows, features) = x.dim();
    assert!(
        tokens > 0 && rows % tokens == 0,
        "{rows} rows are not whole samples of {tokens} tokens"
    );
    x.into_shape_with_order((rows / tokens, tokens, features))
        .expect("layer outputs are row-major")
}

/// The (batch·tokens, features) form of a (batch, tokens, features) view.
///
/// # Panics
/// If the view is not in standard layout.
pub fn flatten_tokens(x: ArrayView3<'_, f32>) -> ArrayView2<'_, f32> {
    let (b, t, f) = x.dim();
    x.into_shape_with_order((b * t, f))
        .expect("standard layout")
}

/// Picks token `index` of every sample: (batch·tokens, d) → (batch, d).
/// FT-Transformer's head reads the [CLS] token this way. Recorded as a
/// row gather (`batch_gather`), which is what it is.
pub struct SelectToken {
    /// Tokens per sample.
    pub tokens: usize,
    /// Which token.
    pub index: usize,
    features: usize,
    active: usize,
    out: Array2<f32>,
    grad_in: Array2<f32>,
}

impl SelectToken {
    /// Token `index` of `tokens`, each of `features` features.
    pub fn new(tokens: usize, index: usize, features: usize) -> SelectToken {
        assert!(index < tokens, "token {index} of {tokens}");
        SelectToken {
            tokens,
            index,
            features,
            active: features,
            out: Array2::zeros((0, features)),
            grad_in: Array2::zeros((0, features)),
        }
    }
    /// Max width.
    pub fn max_features(&self) -> usize {
        self.features
    }
    /// Runs on `features` columns from now on.
    pub fn set_active(&mut self, features: usize) -> Result<(), WidthError> {
        if features == 0 || features > self.features {
            return Err(WidthError::OutOfRange {
                what: "token selection",
                active: features,
                max: self.features,
            });
        }
        self.active = features;
        Ok(())
    }
    /// Appends `n` features; the active width becomes the new max.
    pub fn grow(&mut self, n: usize) {
        self.features += n;
        self.active = self.features;
    }
}

impl Layer for SelectToken {
    fn describe(&self) -> String {
        format!("token({}/{})", self.index, self.tokens)
    }
    fn kind(&self) -> LayerKind {
        LayerKind::SelectToken
    }
    fn layer_ref(&mut self) -> LayerRef<'_> {
        LayerRef::SelectToken(self)
    }
    fn out_dim(&self) -> usize {
        self.active
    }
    fn out_rows(&self, rows_in: usize) -> usize {
        rows_in / self.tokens
    }
    fn forward(&mut self, input: ArrayView2<f32>, _mode: Mode, ctx: &mut Ctx) {
        let t = span_start(ctx.sink);
        let x = as_tokens(input, self.tokens);
        self.out = x.slice(s![.., self.index, ..]).to_owned();
        span_end(ctx.sink, KernelKind::BatchGather, t);
    }
    fn output(&self) -> ArrayView2<'_, f32> {
        self.out.view()
    }
    fn backward(
        &mut self,
        input: ArrayView2<f32>,
        grad_out: ArrayView2<f32>,
        need: bool,
        ctx: &mut Ctx,
    ) {
        if !need {
            return;
        }
        let t = span_start(ctx.sink);
        self.grad_in = Array2::zeros(input.dim());
        let b = input.nrows() / self.tokens;
        let mut g = self
            .grad_in
            .view_mut()
            .into_shape_with_order((b, self.tokens, input.ncols()))
            .expect("owned and contiguous");
        g.slice_mut(s![.., self.index, ..]).assign(&grad_out);
        span_end(ctx.sink, KernelKind::BatchGather, t);
    }
    fn grad_input(&self) -> ArrayView2<'_, f32> {
        self.grad_in.view()
    }
    fn zero_grad(&mut self) {}
    fn visit_parameters(&mut self, _f: &mut dyn FnMut(Param<'_>)) {}
    fn flops_per_row(&self) -> (u64, u64) {
        (0, 0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::NullSink;
    use crate::model::layers::Linear;
    use rand::rngs::SmallRng;
    use rand::{Rng, SeedableRng};

    /// A linear layer on the flattened token matrix is the same layer
    /// applied to each token of each sample.
    #[test]
    fn linear_on_flattened_tokens_is_per_token() {
        let mut rng = SmallRng::seed_from_u64(3);
        let (b, t, f, o) = (3, 4, 5, 2);
        let x3 = ndarray::Array3::from_shape_fn((b, t, f), |_| rng.gen_range(-1.0f32..1.0));
        let mut lin = Linear::new(f, o, &mut rng);
        let mut sink = NullSink;
        let mut ctx = Ctx::new(&mut sink, 0);
        lin.forward(flatten_tokens(x3.view()), Mode::Eval, &mut ctx);
        let y3 = as_tokens(lin.output(), t).to_owned();
        for bi in 0..b {
            for ti in 0..t {
                let direct = x3.slice(s![bi, ti, ..]).dot(&lin.weight) + &lin.bias;
                for k in 0..o {
                    assert!((direct[k] - y3[[bi, ti, k]]).abs() < 1e-6);
                }
            }
        }
    }
}
