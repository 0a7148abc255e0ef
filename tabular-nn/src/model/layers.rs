//! Layers with hand-written forward and backward passes on `ndarray`.
//!
//! Every layer owns its output buffer and its input-gradient buffer and
//! reuses them from step to step (they are reallocated only when the batch
//! size changes), so the training loop does not allocate. Gradients of
//! parameters are *overwritten* by each backward pass, not accumulated.
//! Parameters and their gradients are reached through
//! [`Layer::visit_parameters`], which optimizers, weight sharing and
//! gradient-based proxies use; layer outputs through [`Layer::output`].

use crate::kernels::{span_end, span_start, KernelKind, SpanSink};
use ndarray::linalg::general_mat_mul;
use ndarray::{Array1, Array2, ArrayView2, Zip};
pub use nn_plan::{Activation, Norm};
use rand::rngs::SmallRng;
use rand::{Rng, RngCore, SeedableRng};

/// Below this many elements an element-wise kernel runs on one thread:
/// splitting smaller tensors costs more in synchronisation than it saves.
const PAR_MIN_ELEMENTS: usize = 1 << 15;

/// Training or evaluation behaviour (dropout, batch statistics).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Dropout active, batch normalisation on batch statistics.
    Train,
    /// Dropout off, batch normalisation on running statistics.
    Eval,
}

/// What a layer needs besides its input: where spans go and the random
/// stream for dropout.
pub struct Ctx<'a> {
    /// Span destination.
    pub sink: &'a mut dyn SpanSink,
    /// Random stream for dropout masks.
    pub rng: SmallRng,
}

impl<'a> Ctx<'a> {
    /// A context reporting to `sink`, dropout seeded by `seed`.
    pub fn new(sink: &'a mut dyn SpanSink, seed: u64) -> Ctx<'a> {
        Ctx {
            sink,
            rng: SmallRng::seed_from_u64(seed),
        }
    }
}

/// One parameter tensor with its gradient, as a flat slice.
pub struct Param<'a> {
    /// What it is ("weight", "bias", "gamma", "beta").
    pub name: &'static str,
    /// Values, row-major.
    pub value: &'a mut [f32],
    /// Gradient of the last backward pass, same layout.
    pub grad: &'a [f32],
    /// Whether weight decay applies (not to biases and norm parameters).
    pub decay: bool,
}

/// A differentiable layer.
pub trait Layer: Send {
    /// Short description, e.g. `linear(14→256)`.
    fn describe(&self) -> String;
    /// Output features.
    fn out_dim(&self) -> usize;
    /// Computes the output of `input` into the layer's output buffer.
    fn forward(&mut self, input: ArrayView2<f32>, mode: Mode, ctx: &mut Ctx);
    /// Output of the last forward pass.
    fn output(&self) -> ArrayView2<'_, f32>;
    /// Back-propagates `grad_out` (gradient of the loss with respect to the
    /// output); `input` is the input of the last forward pass. Computes the
    /// parameter gradients, and the input gradient when `need_grad_input`.
    fn backward(
        &mut self,
        input: ArrayView2<f32>,
        grad_out: ArrayView2<f32>,
        need_grad_input: bool,
        ctx: &mut Ctx,
    );
    /// Input gradient of the last backward pass that computed it.
    fn grad_input(&self) -> ArrayView2<'_, f32>;
    /// Visits every parameter with its gradient, in a fixed order.
    fn visit_parameters(&mut self, f: &mut dyn FnMut(Param<'_>));
    /// Visits non-trained state that evaluation depends on (running
    /// statistics), in a fixed order.
    fn visit_buffers(&mut self, _f: &mut dyn FnMut(&mut [f32])) {}
    /// Floating-point operations per row: (forward, backward).
    fn flops_per_row(&self) -> (u64, u64);
}

/// Gives `buf` the shape (rows, cols), keeping its allocation when it is
/// large enough. Batches alternate between the full size and a smaller
/// last chunk; reallocating each time would map and fault in fresh pages
/// for every layer at every switch (megabytes for wide layers).
fn ensure(buf: &mut Array2<f32>, rows: usize, cols: usize) {
    if buf.dim() != (rows, cols) {
        let (mut values, offset) = std::mem::take(buf).into_raw_vec_and_offset();
        if offset.unwrap_or(0) != 0 {
            // Not produced by this module (owned buffers here start at 0).
            values = Vec::new();
        }
        values.resize(rows * cols, 0.0);
        *buf = Array2::from_shape_vec((rows, cols), values).expect("length is rows × cols");
    }
}

fn parallel(len: usize) -> bool {
    len >= PAR_MIN_ELEMENTS && rayon::current_num_threads() > 1
}

fn map_into(out: &mut Array2<f32>, a: ArrayView2<f32>, f: impl Fn(f32) -> f32 + Sync + Send) {
    let z = Zip::from(out).and(&a);
    if parallel(a.len()) {
        z.par_for_each(|o, &x| *o = f(x));
    } else {
        z.for_each(|o, &x| *o = f(x));
    }
}

fn map2_into(
    out: &mut Array2<f32>,
    a: ArrayView2<f32>,
    b: ArrayView2<f32>,
    f: impl Fn(f32, f32) -> f32 + Sync + Send,
) {
    let z = Zip::from(out).and(&a).and(&b);
    if parallel(a.len()) {
        z.par_for_each(|o, &x, &y| *o = f(x, y));
    } else {
        z.for_each(|o, &x, &y| *o = f(x, y));
    }
}

/// `dst = a + b`, element-wise (the residual addition).
pub fn residual_add(dst: &mut Array2<f32>, a: ArrayView2<f32>, b: ArrayView2<f32>) {
    ensure(dst, a.nrows(), a.ncols());
    map2_into(dst, a, b, |x, y| x + y);
}

/// Fully connected layer `y = x·W + b`, W of shape (in, out).
pub struct Linear {
    /// Weights, (in, out).
    pub weight: Array2<f32>,
    /// Bias, (out).
    pub bias: Array1<f32>,
    grad_weight: Array2<f32>,
    grad_bias: Array1<f32>,
    out: Array2<f32>,
    grad_in: Array2<f32>,
}

impl Linear {
    /// A layer initialised as PyTorch's `nn.Linear`: weights and bias
    /// uniform in ±1/√in.
    pub fn new(inputs: usize, outputs: usize, rng: &mut SmallRng) -> Linear {
        let bound = 1.0 / (inputs.max(1) as f32).sqrt();
        Linear {
            weight: Array2::from_shape_fn((inputs, outputs), |_| rng.gen_range(-bound..bound)),
            bias: Array1::from_shape_fn(outputs, |_| rng.gen_range(-bound..bound)),
            grad_weight: Array2::zeros((inputs, outputs)),
            grad_bias: Array1::zeros(outputs),
            out: Array2::zeros((0, outputs)),
            grad_in: Array2::zeros((0, inputs)),
        }
    }

    /// Input features.
    pub fn in_dim(&self) -> usize {
        self.weight.nrows()
    }

    /// Weight and bias gradients of the last backward pass.
    pub fn backward_weight(
        &mut self,
        input: ArrayView2<f32>,
        grad_out: ArrayView2<f32>,
        ctx: &mut Ctx,
    ) {
        let t = span_start(ctx.sink);
        general_mat_mul(1.0, &input.t(), &grad_out, 0.0, &mut self.grad_weight);
        self.grad_bias.fill(0.0);
        for row in grad_out.rows() {
            Zip::from(&mut self.grad_bias)
                .and(&row)
                .for_each(|g, &d| *g += d);
        }
        span_end(ctx.sink, KernelKind::LinearBwdWeight, t);
    }

    /// Input gradient `dX = dY·Wᵀ`.
    pub fn backward_data(&mut self, grad_out: ArrayView2<f32>, ctx: &mut Ctx) {
        let t = span_start(ctx.sink);
        ensure(&mut self.grad_in, grad_out.nrows(), self.weight.nrows());
        general_mat_mul(1.0, &grad_out, &self.weight.t(), 0.0, &mut self.grad_in);
        span_end(ctx.sink, KernelKind::LinearBwdData, t);
    }
}

impl Layer for Linear {
    fn describe(&self) -> String {
        format!("linear({}→{})", self.weight.nrows(), self.weight.ncols())
    }
    fn out_dim(&self) -> usize {
        self.weight.ncols()
    }
    fn forward(&mut self, input: ArrayView2<f32>, _mode: Mode, ctx: &mut Ctx) {
        let t = span_start(ctx.sink);
        ensure(&mut self.out, input.nrows(), self.weight.ncols());
        self.out.assign(&self.bias);
        general_mat_mul(1.0, &input, &self.weight, 1.0, &mut self.out);
        span_end(ctx.sink, KernelKind::LinearFwd, t);
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
        self.backward_weight(input, grad_out, ctx);
        if need {
            self.backward_data(grad_out, ctx);
        }
    }
    fn grad_input(&self) -> ArrayView2<'_, f32> {
        self.grad_in.view()
    }
    fn visit_parameters(&mut self, f: &mut dyn FnMut(Param<'_>)) {
        f(Param {
            name: "weight",
            value: self
                .weight
                .as_slice_mut()
                .expect("owned arrays are contiguous"),
            grad: self
                .grad_weight
                .as_slice()
                .expect("owned arrays are contiguous"),
            decay: true,
        });
        f(Param {
            name: "bias",
            value: self
                .bias
                .as_slice_mut()
                .expect("owned arrays are contiguous"),
            grad: self
                .grad_bias
                .as_slice()
                .expect("owned arrays are contiguous"),
            decay: false,
        });
    }
    fn flops_per_row(&self) -> (u64, u64) {
        let mac = (self.weight.nrows() * self.weight.ncols()) as u64;
        // Backward: data GEMM and weight GEMM, 2 flops per multiply-add each.
        (
            2 * mac + self.weight.ncols() as u64,
            4 * mac + self.weight.ncols() as u64,
        )
    }
}

/// An activation fixed by its type: `Fixed<A>` is a zero-sized value, so a
/// closure that captures it carries no runtime state and, once inlined,
/// `apply`/`derivative` are a single variant's arithmetic and the loop
/// vectorises. (Binding a `let act = Activation::Relu` instead is not
/// enough: the closure then holds the enum as a field and rustc kept a
/// per-element jump table, measured here as a scalar ReLU at ~0.7 ns per
/// element, several times slower than the vectorised loop.)
#[derive(Clone, Copy)]
struct Fixed<const A: u8>;

impl<const A: u8> Fixed<A> {
    const ACTIVATION: Activation = Activation::from_index(A);

    #[inline(always)]
    fn apply(self, x: f32) -> f32 {
        Self::ACTIVATION.apply(x)
    }

    #[inline(always)]
    fn derivative(self, x: f32, y: f32) -> f32 {
        Self::ACTIVATION.derivative(x, y)
    }
}

/// Runs `$body` with `$act` bound to the [`Fixed`] activation of
/// `$activation`: `$body` is compiled once per variant.
macro_rules! with_constant_activation {
    ($activation:expr, |$act:ident| $body:expr) => {
        match $activation {
            Activation::Relu => {
                let $act = Fixed::<{ Activation::Relu as u8 }>;
                $body
            }
            Activation::Gelu => {
                let $act = Fixed::<{ Activation::Gelu as u8 }>;
                $body
            }
            Activation::Silu => {
                let $act = Fixed::<{ Activation::Silu as u8 }>;
                $body
            }
            Activation::Tanh => {
                let $act = Fixed::<{ Activation::Tanh as u8 }>;
                $body
            }
            Activation::Selu => {
                let $act = Fixed::<{ Activation::Selu as u8 }>;
                $body
            }
        }
    };
}

/// An activation applied element-wise.
pub struct ActivationLayer {
    /// The function.
    pub activation: Activation,
    features: usize,
    out: Array2<f32>,
    grad_in: Array2<f32>,
}

impl ActivationLayer {
    /// An activation over `features` columns.
    pub fn new(activation: Activation, features: usize) -> ActivationLayer {
        ActivationLayer {
            activation,
            features,
            out: Array2::zeros((0, features)),
            grad_in: Array2::zeros((0, features)),
        }
    }
}

impl Layer for ActivationLayer {
    fn describe(&self) -> String {
        format!("{:?}", self.activation).to_lowercase()
    }
    fn out_dim(&self) -> usize {
        self.features
    }
    fn forward(&mut self, input: ArrayView2<f32>, _mode: Mode, ctx: &mut Ctx) {
        let t = span_start(ctx.sink);
        ensure(&mut self.out, input.nrows(), input.ncols());
        with_constant_activation!(self.activation, |act| {
            map_into(&mut self.out, input, move |x| act.apply(x))
        });
        span_end(ctx.sink, self.activation.forward_kind(), t);
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
        ensure(&mut self.grad_in, input.nrows(), input.ncols());
        let par = parallel(input.len());
        let z = Zip::from(&mut self.grad_in)
            .and(&input)
            .and(&self.out)
            .and(&grad_out);
        with_constant_activation!(self.activation, |act| {
            if par {
                z.par_for_each(|g, &x, &y, &d| *g = d * act.derivative(x, y));
            } else {
                z.for_each(|g, &x, &y, &d| *g = d * act.derivative(x, y));
            }
        });
        span_end(ctx.sink, self.activation.backward_kind(), t);
    }
    fn grad_input(&self) -> ArrayView2<'_, f32> {
        self.grad_in.view()
    }
    fn visit_parameters(&mut self, _f: &mut dyn FnMut(Param<'_>)) {}
    fn flops_per_row(&self) -> (u64, u64) {
        let n = self.features as u64;
        (
            n * self.activation.flops_per_element(),
            n * (self.activation.flops_per_element() + 1),
        )
    }
}

const NORM_EPS: f32 = 1e-5;

/// Batch normalisation over the rows of a mini-batch, with running
/// statistics for evaluation (momentum 0.1, as PyTorch).
pub struct BatchNorm {
    gamma: Array1<f32>,
    beta: Array1<f32>,
    grad_gamma: Array1<f32>,
    grad_beta: Array1<f32>,
    running_mean: Array1<f32>,
    running_var: Array1<f32>,
    mean: Array1<f32>,
    inv_std: Array1<f32>,
    xhat: Array2<f32>,
    out: Array2<f32>,
    grad_in: Array2<f32>,
    sum_g: Array1<f32>,
    sum_gx: Array1<f32>,
}

impl BatchNorm {
    /// Batch normalisation of `features` columns, γ = 1, β = 0.
    pub fn new(features: usize) -> BatchNorm {
        let z = || Array1::<f32>::zeros(features);
        BatchNorm {
            gamma: Array1::ones(features),
            beta: z(),
            grad_gamma: z(),
            grad_beta: z(),
            running_mean: z(),
            running_var: Array1::ones(features),
            mean: z(),
            inv_std: z(),
            xhat: Array2::zeros((0, features)),
            out: Array2::zeros((0, features)),
            grad_in: Array2::zeros((0, features)),
            sum_g: z(),
            sum_gx: z(),
        }
    }
}

impl Layer for BatchNorm {
    fn describe(&self) -> String {
        format!("batchnorm({})", self.gamma.len())
    }
    fn out_dim(&self) -> usize {
        self.gamma.len()
    }
    fn forward(&mut self, input: ArrayView2<f32>, mode: Mode, ctx: &mut Ctx) {
        let t = span_start(ctx.sink);
        let (n, d) = input.dim();
        ensure(&mut self.out, n, d);
        ensure(&mut self.xhat, n, d);
        if mode == Mode::Train && n > 1 {
            self.mean.fill(0.0);
            for row in input.rows() {
                Zip::from(&mut self.mean)
                    .and(&row)
                    .for_each(|m, &x| *m += x);
            }
            self.mean /= n as f32;
            // Variance in a second pass (numerically safer than E[x²]−E[x]²).
            self.inv_std.fill(0.0);
            for row in input.rows() {
                Zip::from(&mut self.inv_std)
                    .and(&row)
                    .and(&self.mean)
                    .for_each(|v, &x, &m| *v += (x - m) * (x - m));
            }
            let nf = n as f32;
            Zip::from(&mut self.inv_std)
                .and(&mut self.running_mean)
                .and(&mut self.running_var)
                .and(&self.mean)
                .for_each(|v, rm, rv, &m| {
                    let var = *v / nf;
                    *rm = 0.9 * *rm + 0.1 * m;
                    *rv = 0.9 * *rv + 0.1 * (*v / (nf - 1.0));
                    *v = 1.0 / (var + NORM_EPS).sqrt();
                });
        } else {
            self.mean.assign(&self.running_mean);
            Zip::from(&mut self.inv_std)
                .and(&self.running_var)
                .for_each(|s, &v| *s = 1.0 / (v + NORM_EPS).sqrt());
        }
        Zip::from(self.xhat.rows_mut())
            .and(self.out.rows_mut())
            .and(input.rows())
            .for_each(|mut xh, mut o, x| {
                Zip::from(&mut xh)
                    .and(&mut o)
                    .and(&x)
                    .and(&self.mean)
                    .and(&self.inv_std)
                    .and(&self.gamma)
                    .for_each(|xh, o, &x, &m, &s, &g| {
                        *xh = (x - m) * s;
                        *o = *xh * g;
                    });
                o += &self.beta;
            });
        span_end(ctx.sink, KernelKind::BatchnormFwd, t);
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
        let t = span_start(ctx.sink);
        let (n, d) = input.dim();
        self.sum_g.fill(0.0);
        self.sum_gx.fill(0.0);
        for (g, xh) in grad_out.rows().into_iter().zip(self.xhat.rows()) {
            Zip::from(&mut self.sum_g)
                .and(&mut self.sum_gx)
                .and(&g)
                .and(&xh)
                .for_each(|sg, sgx, &g, &xh| {
                    *sg += g;
                    *sgx += g * xh;
                });
        }
        self.grad_beta.assign(&self.sum_g);
        self.grad_gamma.assign(&self.sum_gx);
        if need {
            ensure(&mut self.grad_in, n, d);
            let nf = n as f32;
            // dx = γ·inv_std/N · (N·g − Σg − x̂·Σ(g·x̂))
            let (gamma, inv_std, sum_g, sum_gx) =
                (&self.gamma, &self.inv_std, &self.sum_g, &self.sum_gx);
            Zip::from(self.grad_in.rows_mut())
                .and(grad_out.rows())
                .and(self.xhat.rows())
                .for_each(|mut gi, g, xh| {
                    Zip::from(&mut gi)
                        .and(&g)
                        .and(gamma)
                        .and(inv_std)
                        .and(sum_g)
                        .for_each(|gi, &g, &gm, &s, &sg| *gi = gm * s / nf * (nf * g - sg));
                    Zip::from(&mut gi)
                        .and(&xh)
                        .and(gamma)
                        .and(inv_std)
                        .and(sum_gx)
                        .for_each(|gi, &xh, &gm, &s, &sgx| *gi -= gm * s / nf * xh * sgx);
                });
        }
        span_end(ctx.sink, KernelKind::BatchnormBwd, t);
    }
    fn grad_input(&self) -> ArrayView2<'_, f32> {
        self.grad_in.view()
    }
    fn visit_parameters(&mut self, f: &mut dyn FnMut(Param<'_>)) {
        f(Param {
            name: "gamma",
            value: self.gamma.as_slice_mut().expect("contiguous"),
            grad: self.grad_gamma.as_slice().expect("contiguous"),
            decay: false,
        });
        f(Param {
            name: "beta",
            value: self.beta.as_slice_mut().expect("contiguous"),
            grad: self.grad_beta.as_slice().expect("contiguous"),
            decay: false,
        });
    }
    fn visit_buffers(&mut self, f: &mut dyn FnMut(&mut [f32])) {
        f(self.running_mean.as_slice_mut().expect("contiguous"));
        f(self.running_var.as_slice_mut().expect("contiguous"));
    }
    fn flops_per_row(&self) -> (u64, u64) {
        let d = self.gamma.len() as u64;
        (6 * d, 10 * d)
    }
}

/// Layer normalisation over the features of each row.
pub struct LayerNorm {
    gamma: Array1<f32>,
    beta: Array1<f32>,
    grad_gamma: Array1<f32>,
    grad_beta: Array1<f32>,
    inv_std: Array1<f32>,
    xhat: Array2<f32>,
    out: Array2<f32>,
    grad_in: Array2<f32>,
}

impl LayerNorm {
    /// Layer normalisation of `features` columns, γ = 1, β = 0.
    pub fn new(features: usize) -> LayerNorm {
        LayerNorm {
            gamma: Array1::ones(features),
            beta: Array1::zeros(features),
            grad_gamma: Array1::zeros(features),
            grad_beta: Array1::zeros(features),
            inv_std: Array1::zeros(0),
            xhat: Array2::zeros((0, features)),
            out: Array2::zeros((0, features)),
            grad_in: Array2::zeros((0, features)),
        }
    }
}

impl Layer for LayerNorm {
    fn describe(&self) -> String {
        format!("layernorm({})", self.gamma.len())
    }
    fn out_dim(&self) -> usize {
        self.gamma.len()
    }
    fn forward(&mut self, input: ArrayView2<f32>, _mode: Mode, ctx: &mut Ctx) {
        let t = span_start(ctx.sink);
        let (n, d) = input.dim();
        ensure(&mut self.out, n, d);
        ensure(&mut self.xhat, n, d);
        if self.inv_std.len() != n {
            self.inv_std = Array1::zeros(n);
        }
        let (gamma, beta) = (&self.gamma, &self.beta);
        let df = d as f32;
        let z = Zip::from(self.xhat.rows_mut())
            .and(self.out.rows_mut())
            .and(input.rows())
            .and(&mut self.inv_std);
        let body = |mut xh: ndarray::ArrayViewMut1<f32>,
                    mut o: ndarray::ArrayViewMut1<f32>,
                    x: ndarray::ArrayView1<f32>,
                    s: &mut f32| {
            let mean = x.sum() / df;
            let var = x.fold(0.0, |a, &v| a + (v - mean) * (v - mean)) / df;
            *s = 1.0 / (var + NORM_EPS).sqrt();
            let inv = *s;
            Zip::from(&mut xh)
                .and(&mut o)
                .and(&x)
                .and(gamma)
                .and(beta)
                .for_each(|xh, o, &x, &g, &b| {
                    *xh = (x - mean) * inv;
                    *o = *xh * g + b;
                });
        };
        if parallel(n * d) {
            z.par_for_each(body);
        } else {
            z.for_each(body);
        }
        span_end(ctx.sink, KernelKind::LayernormFwd, t);
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
        let t = span_start(ctx.sink);
        let (n, d) = input.dim();
        self.grad_gamma.fill(0.0);
        self.grad_beta.fill(0.0);
        for (g, xh) in grad_out.rows().into_iter().zip(self.xhat.rows()) {
            Zip::from(&mut self.grad_gamma)
                .and(&mut self.grad_beta)
                .and(&g)
                .and(&xh)
                .for_each(|gg, gb, &g, &xh| {
                    *gg += g * xh;
                    *gb += g;
                });
        }
        if need {
            ensure(&mut self.grad_in, n, d);
            let gamma = &self.gamma;
            let df = d as f32;
            let body = |mut gi: ndarray::ArrayViewMut1<f32>,
                        g: ndarray::ArrayView1<f32>,
                        xh: ndarray::ArrayView1<f32>,
                        &s: &f32| {
                // With ĝ = g·γ: dx = inv_std/D · (D·ĝ − Σĝ − x̂·Σ(ĝ·x̂))
                let mut sum = 0.0f32;
                let mut sum_x = 0.0f32;
                Zip::from(&g).and(&xh).and(gamma).for_each(|&g, &xh, &gm| {
                    sum += g * gm;
                    sum_x += g * gm * xh;
                });
                Zip::from(&mut gi)
                    .and(&g)
                    .and(&xh)
                    .and(gamma)
                    .for_each(|gi, &g, &xh, &gm| *gi = s / df * (df * g * gm - sum - xh * sum_x));
            };
            let z = Zip::from(self.grad_in.rows_mut())
                .and(grad_out.rows())
                .and(self.xhat.rows())
                .and(&self.inv_std);
            if parallel(n * d) {
                z.par_for_each(body);
            } else {
                z.for_each(body);
            }
        }
        span_end(ctx.sink, KernelKind::LayernormBwd, t);
    }
    fn grad_input(&self) -> ArrayView2<'_, f32> {
        self.grad_in.view()
    }
    fn visit_parameters(&mut self, f: &mut dyn FnMut(Param<'_>)) {
        f(Param {
            name: "gamma",
            value: self.gamma.as_slice_mut().expect("contiguous"),
            grad: self.grad_gamma.as_slice().expect("contiguous"),
            decay: false,
        });
        f(Param {
            name: "beta",
            value: self.beta.as_slice_mut().expect("contiguous"),
            grad: self.grad_beta.as_slice().expect("contiguous"),
            decay: false,
        });
    }
    fn flops_per_row(&self) -> (u64, u64) {
        let d = self.gamma.len() as u64;
        (7 * d, 10 * d)
    }
}

/// Inverted dropout: in training, zeroes each element with probability `p`
/// and scales the rest by 1/(1−p); in evaluation, the identity.
pub struct Dropout {
    /// Drop probability, in [0, 1).
    pub p: f32,
    features: usize,
    mask: Array2<f32>,
    /// Whether the last forward pass applied a mask (training mode).
    masked: bool,
    out: Array2<f32>,
    grad_in: Array2<f32>,
}

impl Dropout {
    /// Dropout with probability `p` over `features` columns.
    pub fn new(p: f32, features: usize) -> Dropout {
        Dropout {
            p,
            features,
            mask: Array2::zeros((0, features)),
            masked: false,
            out: Array2::zeros((0, features)),
            grad_in: Array2::zeros((0, features)),
        }
    }
}

impl Layer for Dropout {
    fn describe(&self) -> String {
        format!("dropout({})", self.p)
    }
    fn out_dim(&self) -> usize {
        self.features
    }
    fn forward(&mut self, input: ArrayView2<f32>, mode: Mode, ctx: &mut Ctx) {
        let t = span_start(ctx.sink);
        let (n, d) = input.dim();
        ensure(&mut self.out, n, d);
        self.masked = mode == Mode::Train && self.p > 0.0;
        if self.masked {
            ensure(&mut self.mask, n, d);
            let scale = 1.0 / (1.0 - self.p);
            // Integer threshold on 32 random bits; each 64-bit draw serves
            // two elements, and mask and output are written in one pass.
            let threshold = (f64::from(self.p) * 4_294_967_296.0) as u64;
            let rng = &mut ctx.rng;
            let mut bits = 0u64;
            let mut left = 0u32;
            Zip::from(&mut self.mask)
                .and(&mut self.out)
                .and(&input)
                .for_each(|m, o, &x| {
                    if left == 0 {
                        bits = rng.next_u64();
                        left = 2;
                    }
                    let r = bits & 0xffff_ffff;
                    bits >>= 32;
                    left -= 1;
                    *m = if r < threshold { 0.0 } else { scale };
                    *o = x * *m;
                });
        } else {
            // Evaluation (or p = 0): the identity.
            self.out.assign(&input);
        }
        span_end(ctx.sink, KernelKind::DropoutFwd, t);
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
        ensure(&mut self.grad_in, input.nrows(), input.ncols());
        if self.masked {
            map2_into(&mut self.grad_in, grad_out, self.mask.view(), |g, m| g * m);
        } else {
            self.grad_in.assign(&grad_out);
        }
        span_end(ctx.sink, KernelKind::DropoutBwd, t);
    }
    fn grad_input(&self) -> ArrayView2<'_, f32> {
        self.grad_in.view()
    }
    fn visit_parameters(&mut self, _f: &mut dyn FnMut(Param<'_>)) {}
    fn flops_per_row(&self) -> (u64, u64) {
        (self.features as u64, self.features as u64)
    }
}

/// Layers applied one after the other.
pub struct Sequential {
    layers: Vec<Box<dyn Layer>>,
    in_dim: usize,
    /// Holds the (empty) output and input gradient of a sequence without
    /// layers, which is the identity.
    identity_in: Array2<f32>,
    identity_grad: Array2<f32>,
}

impl Sequential {
    /// A sequence over inputs of `in_dim` features.
    pub fn new(in_dim: usize, layers: Vec<Box<dyn Layer>>) -> Sequential {
        Sequential {
            layers,
            in_dim,
            identity_in: Array2::zeros((0, in_dim)),
            identity_grad: Array2::zeros((0, in_dim)),
        }
    }
    /// The layers, in order.
    pub fn layers(&self) -> &[Box<dyn Layer>] {
        &self.layers
    }
    /// The layers, mutable (for weight sharing and proxies).
    pub fn layers_mut(&mut self) -> &mut [Box<dyn Layer>] {
        &mut self.layers
    }
}

impl Layer for Sequential {
    fn describe(&self) -> String {
        self.layers
            .iter()
            .map(|l| l.describe())
            .collect::<Vec<_>>()
            .join(" → ")
    }
    fn out_dim(&self) -> usize {
        self.layers.last().map_or(self.in_dim, |l| l.out_dim())
    }
    fn forward(&mut self, input: ArrayView2<f32>, mode: Mode, ctx: &mut Ctx) {
        if self.layers.is_empty() {
            self.identity_in = input.to_owned();
            return;
        }
        for i in 0..self.layers.len() {
            let (done, rest) = self.layers.split_at_mut(i);
            let x = match done.last() {
                Some(l) => l.output(),
                None => input.view(),
            };
            rest[0].forward(x, mode, ctx);
        }
    }
    fn output(&self) -> ArrayView2<'_, f32> {
        self.layers
            .last()
            .map_or(self.identity_in.view(), |l| l.output())
    }
    fn backward(
        &mut self,
        input: ArrayView2<f32>,
        grad_out: ArrayView2<f32>,
        need: bool,
        ctx: &mut Ctx,
    ) {
        let n = self.layers.len();
        if n == 0 {
            if need {
                self.identity_grad = grad_out.to_owned();
            }
            return;
        }
        for i in (0..n).rev() {
            let (before, rest) = self.layers.split_at_mut(i);
            let (current, after) = rest.split_first_mut().expect("i < n");
            let x = match before.last() {
                Some(l) => l.output(),
                None => input.view(),
            };
            let g = match after.first() {
                Some(l) => l.grad_input(),
                None => grad_out.view(),
            };
            current.backward(x, g, i > 0 || need, ctx);
        }
    }
    fn grad_input(&self) -> ArrayView2<'_, f32> {
        self.layers
            .first()
            .map_or(self.identity_grad.view(), |l| l.grad_input())
    }
    fn visit_parameters(&mut self, f: &mut dyn FnMut(Param<'_>)) {
        for l in &mut self.layers {
            l.visit_parameters(f);
        }
    }
    fn visit_buffers(&mut self, f: &mut dyn FnMut(&mut [f32])) {
        for l in &mut self.layers {
            l.visit_buffers(f);
        }
    }
    fn flops_per_row(&self) -> (u64, u64) {
        self.layers.iter().fold((0, 0), |(a, b), l| {
            let (f, g) = l.flops_per_row();
            (a + f, b + g)
        })
    }
}

/// A residual block `y = x + f(x)`; `f` must keep the width.
pub struct Residual {
    inner: Sequential,
    out: Array2<f32>,
    grad_in: Array2<f32>,
}

impl Residual {
    /// A block around `inner`.
    pub fn new(inner: Sequential) -> Residual {
        let d = inner.out_dim();
        Residual {
            inner,
            out: Array2::zeros((0, d)),
            grad_in: Array2::zeros((0, d)),
        }
    }
    /// The residual branch.
    pub fn inner(&self) -> &Sequential {
        &self.inner
    }
}

impl Layer for Residual {
    fn describe(&self) -> String {
        format!("residual[{}]", self.inner.describe())
    }
    fn out_dim(&self) -> usize {
        self.inner.out_dim()
    }
    fn forward(&mut self, input: ArrayView2<f32>, mode: Mode, ctx: &mut Ctx) {
        self.inner.forward(input, mode, ctx);
        let t = span_start(ctx.sink);
        residual_add(&mut self.out, input, self.inner.output());
        span_end(ctx.sink, KernelKind::ResidualAddFwd, t);
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
        self.inner.backward(input, grad_out, need, ctx);
        if need {
            let t = span_start(ctx.sink);
            residual_add(&mut self.grad_in, grad_out, self.inner.grad_input());
            span_end(ctx.sink, KernelKind::ResidualAddBwd, t);
        }
    }
    fn grad_input(&self) -> ArrayView2<'_, f32> {
        self.grad_in.view()
    }
    fn visit_parameters(&mut self, f: &mut dyn FnMut(Param<'_>)) {
        self.inner.visit_parameters(f);
    }
    fn visit_buffers(&mut self, f: &mut dyn FnMut(&mut [f32])) {
        self.inner.visit_buffers(f);
    }
    fn flops_per_row(&self) -> (u64, u64) {
        let (f, b) = self.inner.flops_per_row();
        let d = self.out_dim() as u64;
        (f + d, b + d)
    }
}

/// Total number of trainable scalars of a layer.
pub fn parameter_count(layer: &mut dyn Layer) -> usize {
    let mut n = 0;
    layer.visit_parameters(&mut |p| n += p.value.len());
    n
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `with_constant_activation` maps each variant to `Fixed<variant as
    /// u8>`, and `Fixed` maps the index back: the two orders must agree.
    #[test]
    fn fixed_activations_are_the_variants_they_stand_for() {
        for a in [
            Activation::Relu,
            Activation::Gelu,
            Activation::Silu,
            Activation::Tanh,
            Activation::Selu,
        ] {
            assert_eq!(Activation::from_index(a as u8), a);
            let xs = [-2.0f32, -0.5, 0.0, 0.5, 2.0];
            let fixed: Vec<(f32, f32)> = with_constant_activation!(a, |act| xs
                .iter()
                .map(|&x| (act.apply(x), act.derivative(x, act.apply(x))))
                .collect());
            let direct: Vec<(f32, f32)> = xs
                .iter()
                .map(|&x| (a.apply(x), a.derivative(x, a.apply(x))))
                .collect();
            assert_eq!(fixed, direct, "{a:?}");
        }
    }
}
