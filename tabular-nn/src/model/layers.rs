//! Layers with hand-written forward and backward passes on `ndarray`.
//!
//! Every layer owns its output buffer and its input-gradient buffer and
//! reuses them from step to step (they are reallocated only when the batch
//! size changes), so the training loop does not allocate.
//!
//! Parameters ([`Param`]) have an identity and a 2-D shape; their gradients
//! *accumulate* over backward passes until [`Layer::zero_grad`] (see
//! [`super::param`]). Tools reach layers through [`super::visit`] (stable
//! paths such as `blocks.2.linear`, typed [`LayerRef`]s) and see each
//! layer's input, output and output gradient through an [`Observer`] on the
//! [`Ctx`].
//!
//! Widths: every layer holds its parameters at a *max* width and runs at an
//! *active* width, on the leading block of its weights (`W[..in, ..out]`),
//! which is how the children of a weight-sharing supernet run; at full
//! width the block is the whole contiguous matrix and the GEMMs are the same
//! as without widths. Layers grow by appending units. Which widths must
//! agree across layers is found by [`super::widths`].
//!
//! Token axis: an activation of shape (batch, tokens, features) is passed
//! between layers as the row-major 2-D matrix (batch·tokens, features)
//! (see [`super::tokens`]). Per-token layers (linear, norms, activations,
//! dropout) are therefore unchanged; a layer that mixes or selects tokens
//! knows its token count.

use super::param::{grown, GradBuf};
pub use super::param::{Buffer, Param, ParamId, WidthError};
pub use super::visit::{LayerKind, LayerRef, Observer};
use crate::gemm::gemm;
use crate::kernels::{span_end, span_start, KernelKind, SpanSink};
use ndarray::{s, Array1, Array2, ArrayView2, Axis, Zip};
pub use nn_plan::{Activation, Norm, RELU_SURROGATE_BETA};
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

/// What a layer needs besides its input: where spans go, the random
/// stream for dropout, and an optional observer of activations.
pub struct Ctx<'a> {
    /// Span destination.
    pub sink: &'a mut dyn SpanSink,
    /// Random stream for dropout masks.
    pub rng: SmallRng,
    /// Sees every layer's input, output and output gradient (hooks); `None`
    /// in training, where it would cost a path string per layer.
    pub observer: Option<&'a mut dyn Observer>,
    /// Path of the layer being run (maintained only while observing).
    path: String,
}

impl<'a> Ctx<'a> {
    /// A context reporting to `sink`, dropout seeded by `seed`.
    pub fn new(sink: &'a mut dyn SpanSink, seed: u64) -> Ctx<'a> {
        Ctx {
            sink,
            rng: SmallRng::seed_from_u64(seed),
            observer: None,
            path: String::new(),
        }
    }

    /// A context whose layers report to `observer` as they run.
    pub fn with_observer(
        sink: &'a mut dyn SpanSink,
        seed: u64,
        observer: &'a mut dyn Observer,
    ) -> Ctx<'a> {
        Ctx {
            observer: Some(observer),
            ..Ctx::new(sink, seed)
        }
    }

    /// Appends `name` to the current path; returns the length to restore.
    fn enter(&mut self, name: &str) -> usize {
        let len = self.path.len();
        if !self.path.is_empty() {
            self.path.push('.');
        }
        self.path.push_str(name);
        len
    }

    fn leave(&mut self, len: usize) {
        self.path.truncate(len);
    }
}

/// A differentiable layer.
///
/// Activations are 2-D: (rows, features), where rows are the batch, or
/// batch × tokens for a backbone with a token axis.
pub trait Layer: Send {
    /// Short description, e.g. `linear(14→256)`.
    fn describe(&self) -> String;
    /// What the layer is, for hooks and tools.
    fn kind(&self) -> LayerKind;
    /// The layer as a typed reference (the visitor's view of it).
    fn layer_ref(&mut self) -> LayerRef<'_>;
    /// Visits the direct sub-layers with their names (containers only).
    fn visit_children(&mut self, _f: &mut dyn FnMut(&str, &mut dyn Layer)) {}
    /// Output features at the active width.
    fn out_dim(&self) -> usize;
    /// Output rows for `rows_in` input rows: the same, except for layers
    /// that add or remove a token axis (see [`super::tokens`]).
    fn out_rows(&self, rows_in: usize) -> usize {
        rows_in
    }
    /// Computes the output of `input` into the layer's output buffer.
    fn forward(&mut self, input: ArrayView2<f32>, mode: Mode, ctx: &mut Ctx);
    /// Output of the last forward pass.
    fn output(&self) -> ArrayView2<'_, f32>;
    /// Back-propagates `grad_out` (gradient of the loss with respect to the
    /// output); `input` is the input of the last forward pass. *Adds* the
    /// parameter gradients to those accumulated since [`Layer::zero_grad`],
    /// and computes the input gradient when `need_grad_input`.
    fn backward(
        &mut self,
        input: ArrayView2<f32>,
        grad_out: ArrayView2<f32>,
        need_grad_input: bool,
        ctx: &mut Ctx,
    );
    /// Input gradient of the last backward pass that computed it.
    fn grad_input(&self) -> ArrayView2<'_, f32>;
    /// Clears the accumulated parameter gradients.
    fn zero_grad(&mut self);
    /// Visits every parameter with its gradient, at the active width, in a
    /// fixed order.
    fn visit_parameters(&mut self, f: &mut dyn FnMut(Param<'_>));
    /// Visits non-trained state that evaluation depends on (running
    /// statistics), at the active width, in a fixed order.
    fn visit_buffers(&mut self, _f: &mut dyn FnMut(Buffer<'_>)) {}
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

/// [`ensure`] for the layers of sibling modules.
pub(crate) fn ensure_shape(buf: &mut Array2<f32>, rows: usize, cols: usize) {
    ensure(buf, rows, cols);
}

/// Gives the scratch vector `buf` length `len` (contents unspecified).
fn ensure1(buf: &mut Array1<f32>, len: usize) {
    if buf.len() != len {
        *buf = Array1::zeros(len);
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

/// Checks an active width against the max width.
fn check_width(what: &'static str, active: usize, max: usize) -> Result<(), WidthError> {
    if active == 0 || active > max {
        Err(WidthError::OutOfRange { what, active, max })
    } else {
        Ok(())
    }
}

/// Fully connected layer `y = x·W + b`, W of shape (in, out).
///
/// Runs on `W[..active_in, ..active_out]` and `b[..active_out]`.
pub struct Linear {
    /// Weights at max width, (in, out).
    pub weight: Array2<f32>,
    /// Bias at max width, (out).
    pub bias: Array1<f32>,
    weight_id: ParamId,
    bias_id: ParamId,
    grad_weight: GradBuf,
    grad_bias: GradBuf,
    active_in: usize,
    active_out: usize,
    out: Array2<f32>,
    grad_in: Array2<f32>,
}

impl Linear {
    /// A layer initialised as PyTorch's `nn.Linear`: weights and bias
    /// uniform in ±1/√in.
    pub fn new(inputs: usize, outputs: usize, rng: &mut SmallRng) -> Linear {
        let bound = 1.0 / (inputs.max(1) as f32).sqrt();
        Linear::from_parts(
            Array2::from_shape_fn((inputs, outputs), |_| rng.gen_range(-bound..bound)),
            Array1::from_shape_fn(outputs, |_| rng.gen_range(-bound..bound)),
        )
    }

    /// A layer holding these weights `(in, out)` and bias `(out)`.
    pub fn from_parts(weight: Array2<f32>, bias: Array1<f32>) -> Linear {
        let (inputs, outputs) = weight.dim();
        assert_eq!(bias.len(), outputs, "bias length is the output width");
        Linear {
            weight,
            bias,
            weight_id: ParamId::fresh(),
            bias_id: ParamId::fresh(),
            grad_weight: GradBuf::zeros(inputs, outputs),
            grad_bias: GradBuf::zeros(1, outputs),
            active_in: inputs,
            active_out: outputs,
            out: Array2::zeros((0, outputs)),
            grad_in: Array2::zeros((0, inputs)),
        }
    }

    /// Input features at the active width.
    pub fn in_dim(&self) -> usize {
        self.active_in
    }

    /// Max widths `(in, out)`.
    pub fn max_dims(&self) -> (usize, usize) {
        self.weight.dim()
    }

    /// Identities of the weight and the bias.
    pub fn param_ids(&self) -> (ParamId, ParamId) {
        (self.weight_id, self.bias_id)
    }

    /// Runs on `W[..inputs, ..outputs]` from now on.
    pub fn set_active(&mut self, inputs: usize, outputs: usize) -> Result<(), WidthError> {
        let (mi, mo) = self.weight.dim();
        check_width("linear input", inputs, mi)?;
        check_width("linear output", outputs, mo)?;
        self.active_in = inputs;
        self.active_out = outputs;
        Ok(())
    }

    /// The active block of the weights.
    pub fn active_weight(&self) -> ArrayView2<'_, f32> {
        self.weight.slice(s![..self.active_in, ..self.active_out])
    }

    /// Appends `n` output units, initialised as [`Linear::new`] would
    /// (uniform in ±1/√in); the active width becomes the new max.
    pub fn grow_outputs(&mut self, n: usize, rng: &mut SmallRng) {
        let (mi, mo) = self.weight.dim();
        let bound = 1.0 / (mi.max(1) as f32).sqrt();
        self.weight = grown(self.weight.view(), mi, mo + n, |_, _| {
            rng.gen_range(-bound..bound)
        });
        let mut bias = Array1::zeros(mo + n);
        bias.slice_mut(s![..mo]).assign(&self.bias);
        bias.slice_mut(s![mo..])
            .mapv_inplace(|_| rng.gen_range(-bound..bound));
        self.bias = bias;
        self.grad_weight.resize(mi, mo + n);
        self.grad_bias.resize(1, mo + n);
        self.active_in = mi;
        self.active_out = mo + n;
    }

    /// Appends `n` input units with zero weights, so the layer's function
    /// of its old inputs is unchanged; the active width becomes the new max.
    pub fn grow_inputs(&mut self, n: usize) {
        let (mi, mo) = self.weight.dim();
        self.weight = grown(self.weight.view(), mi + n, mo, |_, _| 0.0);
        self.grad_weight.resize(mi + n, mo);
        self.active_in = mi + n;
        self.active_out = mo;
    }

    /// Adds the weight and bias gradients of `grad_out` for `input`.
    pub fn backward_weight(
        &mut self,
        input: ArrayView2<f32>,
        grad_out: ArrayView2<f32>,
        ctx: &mut Ctx,
    ) {
        let t = span_start(ctx.sink);
        let (ai, ao) = (self.active_in, self.active_out);
        let (beta, mut gw) = self.grad_weight.begin(ai, ao);
        gemm(1.0, &input.t(), &grad_out, beta, &mut gw.view_mut());
        let (beta, mut gb) = self.grad_bias.begin(1, ao);
        let mut gb = gb.row_mut(0);
        if beta == 0.0 {
            gb.fill(0.0);
        }
        for row in grad_out.rows() {
            Zip::from(&mut gb).and(&row).for_each(|g, &d| *g += d);
        }
        span_end(ctx.sink, KernelKind::LinearBwdWeight, t);
    }

    /// Input gradient `dX = dY·Wᵀ`.
    pub fn backward_data(&mut self, grad_out: ArrayView2<f32>, ctx: &mut Ctx) {
        let t = span_start(ctx.sink);
        ensure(&mut self.grad_in, grad_out.nrows(), self.active_in);
        let w = self.weight.slice(s![..self.active_in, ..self.active_out]);
        gemm(1.0, &grad_out, &w.t(), 0.0, &mut self.grad_in.view_mut());
        span_end(ctx.sink, KernelKind::LinearBwdData, t);
    }
}

impl Layer for Linear {
    fn describe(&self) -> String {
        format!("linear({}→{})", self.active_in, self.active_out)
    }
    fn kind(&self) -> LayerKind {
        LayerKind::Linear
    }
    fn layer_ref(&mut self) -> LayerRef<'_> {
        LayerRef::Linear(self)
    }
    fn out_dim(&self) -> usize {
        self.active_out
    }
    fn forward(&mut self, input: ArrayView2<f32>, _mode: Mode, ctx: &mut Ctx) {
        let t = span_start(ctx.sink);
        let ao = self.active_out;
        ensure(&mut self.out, input.nrows(), ao);
        self.out.assign(&self.bias.slice(s![..ao]));
        // At full width the slice is the whole contiguous matrix.
        let w = self.weight.slice(s![..self.active_in, ..ao]);
        gemm(1.0, &input, &w, 1.0, &mut self.out.view_mut());
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
    fn zero_grad(&mut self) {
        self.grad_weight.zero();
        self.grad_bias.zero();
    }
    fn visit_parameters(&mut self, f: &mut dyn FnMut(Param<'_>)) {
        let (ai, ao) = (self.active_in, self.active_out);
        f(Param {
            id: self.weight_id,
            name: "weight",
            value: self.weight.slice_mut(s![..ai, ..ao]),
            grad: self.grad_weight.view(ai, ao),
            decay: true,
        });
        f(Param {
            id: self.bias_id,
            name: "bias",
            value: self.bias.slice_mut(s![..ao]).insert_axis(Axis(0)),
            grad: self.grad_bias.view(1, ao),
            decay: false,
        });
    }
    fn flops_per_row(&self) -> (u64, u64) {
        let mac = (self.active_in * self.active_out) as u64;
        let out = self.active_out as u64;
        // Backward: data GEMM and weight GEMM, 2 flops per multiply-add each.
        (2 * mac + out, 4 * mac + out)
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
    active: usize,
    out: Array2<f32>,
    grad_in: Array2<f32>,
}

impl ActivationLayer {
    /// An activation over `features` columns.
    pub fn new(activation: Activation, features: usize) -> ActivationLayer {
        ActivationLayer {
            activation,
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
        check_width("activation", features, self.features)?;
        self.active = features;
        Ok(())
    }
    /// Appends `n` units; the active width becomes the new max.
    pub fn grow(&mut self, n: usize) {
        self.features += n;
        self.active = self.features;
    }
}

impl Layer for ActivationLayer {
    fn describe(&self) -> String {
        format!("{:?}", self.activation).to_lowercase()
    }
    fn kind(&self) -> LayerKind {
        LayerKind::Activation(self.activation)
    }
    fn layer_ref(&mut self) -> LayerRef<'_> {
        LayerRef::Activation(self)
    }
    fn out_dim(&self) -> usize {
        self.active
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
    fn zero_grad(&mut self) {}
    fn visit_parameters(&mut self, _f: &mut dyn FnMut(Param<'_>)) {}
    fn flops_per_row(&self) -> (u64, u64) {
        let n = self.active as u64;
        (
            n * self.activation.flops_per_element(),
            n * (self.activation.flops_per_element() + 1),
        )
    }
}

/// The ε of the normalisations' `1/√(var + ε)` (PyTorch's default); neuron
/// splitting folds a batch norm in with it.
pub const NORM_EPS: f32 = 1e-5;

/// The affine part (γ, β) of a normalisation, with identities, gradients
/// and an active width.
struct Affine {
    gamma: Array1<f32>,
    beta: Array1<f32>,
    gamma_id: ParamId,
    beta_id: ParamId,
    grad_gamma: GradBuf,
    grad_beta: GradBuf,
    active: usize,
}

impl Affine {
    fn new(features: usize) -> Affine {
        Affine {
            gamma: Array1::ones(features),
            beta: Array1::zeros(features),
            gamma_id: ParamId::fresh(),
            beta_id: ParamId::fresh(),
            grad_gamma: GradBuf::zeros(1, features),
            grad_beta: GradBuf::zeros(1, features),
            active: features,
        }
    }
    fn max(&self) -> usize {
        self.gamma.len()
    }
    fn gamma(&self) -> ndarray::ArrayView1<'_, f32> {
        self.gamma.slice(s![..self.active])
    }
    fn beta(&self) -> ndarray::ArrayView1<'_, f32> {
        self.beta.slice(s![..self.active])
    }
    /// Adds (Σ g·x̂, Σ g) to the γ and β gradients.
    fn add_grads(&mut self, sum_gx: &Array1<f32>, sum_g: &Array1<f32>) {
        let d = self.active;
        for (buf, sum) in [(&mut self.grad_gamma, sum_gx), (&mut self.grad_beta, sum_g)] {
            let (beta, mut g) = buf.begin(1, d);
            let mut g = g.row_mut(0);
            if beta == 0.0 {
                g.assign(sum);
            } else {
                g += sum;
            }
        }
    }
    fn zero_grad(&mut self) {
        self.grad_gamma.zero();
        self.grad_beta.zero();
    }
    fn visit(&mut self, f: &mut dyn FnMut(Param<'_>)) {
        let d = self.active;
        f(Param {
            id: self.gamma_id,
            name: "gamma",
            value: self.gamma.slice_mut(s![..d]).insert_axis(Axis(0)),
            grad: self.grad_gamma.view(1, d),
            decay: false,
        });
        f(Param {
            id: self.beta_id,
            name: "beta",
            value: self.beta.slice_mut(s![..d]).insert_axis(Axis(0)),
            grad: self.grad_beta.view(1, d),
            decay: false,
        });
    }
    fn set_active(&mut self, features: usize) -> Result<(), WidthError> {
        check_width("normalisation", features, self.max())?;
        self.active = features;
        Ok(())
    }
    /// Appends `n` units with γ = 1, β = 0.
    fn grow(&mut self, n: usize) {
        let d = self.max() + n;
        let extend = |v: &Array1<f32>, fill: f32| {
            let mut next = Array1::from_elem(d, fill);
            next.slice_mut(s![..v.len()]).assign(v);
            next
        };
        self.gamma = extend(&self.gamma, 1.0);
        self.beta = extend(&self.beta, 0.0);
        self.grad_gamma.resize(1, d);
        self.grad_beta.resize(1, d);
        self.active = d;
    }
}

/// Batch normalisation over the rows of a mini-batch, with running
/// statistics for evaluation (momentum 0.1, as PyTorch).
///
/// A supernet child at a narrower width uses the leading part of the
/// running statistics; before evaluating a child, recalibrate them:
/// [`BatchNorm::reset_running_stats`], [`BatchNorm::set_momentum`]`(None)`
/// (a cumulative average over the batches that follow, as PyTorch's
/// `momentum=None`), then forward passes in [`Mode::Train`].
pub struct BatchNorm {
    affine: Affine,
    running_mean: Array1<f32>,
    running_var: Array1<f32>,
    /// Weight of a new batch in the running statistics; `None`: cumulative.
    momentum: Option<f32>,
    /// Batches folded into the running statistics since the last reset.
    batches_tracked: u64,
    /// Whether the last forward pass normalised with the running
    /// statistics (evaluation), where the layer is a fixed affine map and
    /// its input gradient is `g·γ·inv_std` (as PyTorch's BN in `eval()`;
    /// neuron splitting back-propagates through a network in evaluation).
    eval_statistics: bool,
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
            affine: Affine::new(features),
            running_mean: z(),
            running_var: Array1::ones(features),
            momentum: Some(0.1),
            batches_tracked: 0,
            eval_statistics: false,
            mean: z(),
            inv_std: z(),
            xhat: Array2::zeros((0, features)),
            out: Array2::zeros((0, features)),
            grad_in: Array2::zeros((0, features)),
            sum_g: z(),
            sum_gx: z(),
        }
    }
    /// Max width.
    pub fn max_features(&self) -> usize {
        self.affine.max()
    }
    /// Runs on `features` columns (and statistics) from now on.
    pub fn set_active(&mut self, features: usize) -> Result<(), WidthError> {
        self.affine.set_active(features)
    }
    /// Appends `n` units (γ = 1, β = 0, running mean 0, variance 1).
    pub fn grow(&mut self, n: usize) {
        self.affine.grow(n);
        let d = self.affine.max();
        let mut mean = Array1::zeros(d);
        mean.slice_mut(s![..d - n]).assign(&self.running_mean);
        let mut var = Array1::ones(d);
        var.slice_mut(s![..d - n]).assign(&self.running_var);
        self.running_mean = mean;
        self.running_var = var;
    }
    /// Weight of each new batch in the running statistics: `Some(m)` is an
    /// exponential average (PyTorch's default 0.1), `None` the cumulative
    /// average of the batches since [`BatchNorm::reset_running_stats`].
    pub fn set_momentum(&mut self, momentum: Option<f32>) {
        self.momentum = momentum;
    }
    /// Running mean 0, variance 1, no batch tracked (at every width).
    pub fn reset_running_stats(&mut self) {
        self.running_mean.fill(0.0);
        self.running_var.fill(1.0);
        self.batches_tracked = 0;
    }
    /// Running (mean, variance) at the active width.
    pub fn running_stats(&self) -> (ndarray::ArrayView1<'_, f32>, ndarray::ArrayView1<'_, f32>) {
        let d = self.affine.active;
        (
            self.running_mean.slice(s![..d]),
            self.running_var.slice(s![..d]),
        )
    }
}

impl Layer for BatchNorm {
    fn describe(&self) -> String {
        format!("batchnorm({})", self.affine.active)
    }
    fn kind(&self) -> LayerKind {
        LayerKind::BatchNorm
    }
    fn layer_ref(&mut self) -> LayerRef<'_> {
        LayerRef::BatchNorm(self)
    }
    fn out_dim(&self) -> usize {
        self.affine.active
    }
    fn forward(&mut self, input: ArrayView2<f32>, mode: Mode, ctx: &mut Ctx) {
        let t = span_start(ctx.sink);
        let (n, d) = input.dim();
        ensure(&mut self.out, n, d);
        ensure(&mut self.xhat, n, d);
        ensure1(&mut self.mean, d);
        ensure1(&mut self.inv_std, d);
        let mut running_mean = self.running_mean.slice_mut(s![..d]);
        let mut running_var = self.running_var.slice_mut(s![..d]);
        self.eval_statistics = !(mode == Mode::Train && n > 1);
        if !self.eval_statistics {
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
            let momentum = match self.momentum {
                Some(m) => m,
                None => 1.0 / (self.batches_tracked as f32 + 1.0),
            };
            let keep = 1.0 - momentum;
            self.batches_tracked += 1;
            Zip::from(&mut self.inv_std)
                .and(&mut running_mean)
                .and(&mut running_var)
                .and(&self.mean)
                .for_each(|v, rm, rv, &m| {
                    let var = *v / nf;
                    *rm = keep * *rm + momentum * m;
                    *rv = keep * *rv + momentum * (*v / (nf - 1.0));
                    *v = 1.0 / (var + NORM_EPS).sqrt();
                });
        } else {
            self.mean.assign(&running_mean);
            Zip::from(&mut self.inv_std)
                .and(&running_var)
                .for_each(|s, &v| *s = 1.0 / (v + NORM_EPS).sqrt());
        }
        let (gamma, beta) = (self.affine.gamma(), self.affine.beta());
        Zip::from(self.xhat.rows_mut())
            .and(self.out.rows_mut())
            .and(input.rows())
            .for_each(|mut xh, mut o, x| {
                Zip::from(&mut xh)
                    .and(&mut o)
                    .and(&x)
                    .and(&self.mean)
                    .and(&self.inv_std)
                    .and(&gamma)
                    .for_each(|xh, o, &x, &m, &s, &g| {
                        *xh = (x - m) * s;
                        *o = *xh * g;
                    });
                o += &beta;
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
        ensure1(&mut self.sum_g, d);
        ensure1(&mut self.sum_gx, d);
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
        self.affine.add_grads(&self.sum_gx, &self.sum_g);
        if need && self.eval_statistics {
            // Fixed statistics: dx = g·γ·inv_std.
            ensure(&mut self.grad_in, n, d);
            let (gamma, inv_std) = (self.affine.gamma(), &self.inv_std);
            Zip::from(self.grad_in.rows_mut())
                .and(grad_out.rows())
                .for_each(|mut gi, g| {
                    Zip::from(&mut gi)
                        .and(&g)
                        .and(&gamma)
                        .and(inv_std)
                        .for_each(|gi, &g, &gm, &s| *gi = g * gm * s);
                });
        } else if need {
            ensure(&mut self.grad_in, n, d);
            let nf = n as f32;
            // dx = γ·inv_std/N · (N·g − Σg − x̂·Σ(g·x̂))
            let (gamma, inv_std, sum_g, sum_gx) = (
                self.affine.gamma(),
                &self.inv_std,
                &self.sum_g,
                &self.sum_gx,
            );
            Zip::from(self.grad_in.rows_mut())
                .and(grad_out.rows())
                .and(self.xhat.rows())
                .for_each(|mut gi, g, xh| {
                    Zip::from(&mut gi)
                        .and(&g)
                        .and(&gamma)
                        .and(inv_std)
                        .and(sum_g)
                        .for_each(|gi, &g, &gm, &s, &sg| *gi = gm * s / nf * (nf * g - sg));
                    Zip::from(&mut gi)
                        .and(&xh)
                        .and(&gamma)
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
    fn zero_grad(&mut self) {
        self.affine.zero_grad();
    }
    fn visit_parameters(&mut self, f: &mut dyn FnMut(Param<'_>)) {
        self.affine.visit(f);
    }
    fn visit_buffers(&mut self, f: &mut dyn FnMut(Buffer<'_>)) {
        let d = self.affine.active;
        f(Buffer {
            name: "running_mean",
            value: self.running_mean.slice_mut(s![..d]).insert_axis(Axis(0)),
        });
        f(Buffer {
            name: "running_var",
            value: self.running_var.slice_mut(s![..d]).insert_axis(Axis(0)),
        });
    }
    fn flops_per_row(&self) -> (u64, u64) {
        let d = self.affine.active as u64;
        (6 * d, 10 * d)
    }
}

/// Layer normalisation over the features of each row.
pub struct LayerNorm {
    affine: Affine,
    inv_std: Array1<f32>,
    xhat: Array2<f32>,
    out: Array2<f32>,
    grad_in: Array2<f32>,
    sum_g: Array1<f32>,
    sum_gx: Array1<f32>,
}

impl LayerNorm {
    /// Layer normalisation of `features` columns, γ = 1, β = 0.
    pub fn new(features: usize) -> LayerNorm {
        LayerNorm {
            affine: Affine::new(features),
            inv_std: Array1::zeros(0),
            xhat: Array2::zeros((0, features)),
            out: Array2::zeros((0, features)),
            grad_in: Array2::zeros((0, features)),
            sum_g: Array1::zeros(features),
            sum_gx: Array1::zeros(features),
        }
    }
    /// Max width.
    pub fn max_features(&self) -> usize {
        self.affine.max()
    }
    /// Runs on `features` columns from now on.
    pub fn set_active(&mut self, features: usize) -> Result<(), WidthError> {
        self.affine.set_active(features)
    }
    /// Appends `n` units (γ = 1, β = 0).
    pub fn grow(&mut self, n: usize) {
        self.affine.grow(n);
    }
}
impl Layer for LayerNorm {
    fn describe(&self) -> String {
        format!("layernorm({})", self.affine.active)
    }
    fn kind(&self) -> LayerKind {
        LayerKind::LayerNorm
    }
    fn layer_ref(&mut self) -> LayerRef<'_> {
        LayerRef::LayerNorm(self)
    }
    fn out_dim(&self) -> usize {
        self.affine.active
    }
    fn forward(&mut self, input: ArrayView2<f32>, _mode: Mode, ctx: &mut Ctx) {
        let t = span_start(ctx.sink);
        let (n, d) = input.dim();
        ensure(&mut self.out, n, d);
        ensure(&mut self.xhat, n, d);
        if self.inv_std.len() != n {
            self.inv_std = Array1::zeros(n);
        }
        let (gamma, beta) = (self.affine.gamma(), self.affine.beta());
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
                .and(&gamma)
                .and(&beta)
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
        ensure1(&mut self.sum_g, d);
        ensure1(&mut self.sum_gx, d);
        self.sum_g.fill(0.0);
        self.sum_gx.fill(0.0);
        for (g, xh) in grad_out.rows().into_iter().zip(self.xhat.rows()) {
            Zip::from(&mut self.sum_gx)
                .and(&mut self.sum_g)
                .and(&g)
                .and(&xh)
                .for_each(|gg, gb, &g, &xh| {
                    *gg += g * xh;
                    *gb += g;
                });
        }
        self.affine.add_grads(&self.sum_gx, &self.sum_g);
        if need {
            ensure(&mut self.grad_in, n, d);
            let gamma = self.affine.gamma();
            let df = d as f32;
            let body = |mut gi: ndarray::ArrayViewMut1<f32>,
                        g: ndarray::ArrayView1<f32>,
                        xh: ndarray::ArrayView1<f32>,
                        &s: &f32| {
                // With ĝ = g·γ: dx = inv_std/D · (D·ĝ − Σĝ − x̂·Σ(ĝ·x̂))
                let mut sum = 0.0f32;
                let mut sum_x = 0.0f32;
                Zip::from(&g).and(&xh).and(&gamma).for_each(|&g, &xh, &gm| {
                    sum += g * gm;
                    sum_x += g * gm * xh;
                });
                Zip::from(&mut gi)
                    .and(&g)
                    .and(&xh)
                    .and(&gamma)
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
    fn zero_grad(&mut self) {
        self.affine.zero_grad();
    }
    fn visit_parameters(&mut self, f: &mut dyn FnMut(Param<'_>)) {
        self.affine.visit(f);
    }
    fn flops_per_row(&self) -> (u64, u64) {
        let d = self.affine.active as u64;
        (7 * d, 10 * d)
    }
}

/// Inverted dropout: in training, zeroes each element with probability `p`
/// and scales the rest by 1/(1−p); in evaluation, the identity.
pub struct Dropout {
    /// Drop probability, in [0, 1).
    pub p: f32,
    features: usize,
    active: usize,
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
            active: features,
            mask: Array2::zeros((0, features)),
            masked: false,
            out: Array2::zeros((0, features)),
            grad_in: Array2::zeros((0, features)),
        }
    }
}

impl Dropout {
    /// Max width.
    pub fn max_features(&self) -> usize {
        self.features
    }
    /// Runs on `features` columns from now on.
    pub fn set_active(&mut self, features: usize) -> Result<(), WidthError> {
        check_width("dropout", features, self.features)?;
        self.active = features;
        Ok(())
    }
    /// Appends `n` units; the active width becomes the new max.
    pub fn grow(&mut self, n: usize) {
        self.features += n;
        self.active = self.features;
    }
}

impl Layer for Dropout {
    fn describe(&self) -> String {
        format!("dropout({})", self.p)
    }
    fn kind(&self) -> LayerKind {
        LayerKind::Dropout
    }
    fn layer_ref(&mut self) -> LayerRef<'_> {
        LayerRef::Dropout(self)
    }
    fn out_dim(&self) -> usize {
        self.active
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
    fn zero_grad(&mut self) {}
    fn visit_parameters(&mut self, _f: &mut dyn FnMut(Param<'_>)) {}
    fn flops_per_row(&self) -> (u64, u64) {
        (self.active as u64, self.active as u64)
    }
}

/// Layers applied one after the other, each with a name (its path
/// segment).
pub struct Sequential {
    layers: Vec<Box<dyn Layer>>,
    names: Vec<String>,
    in_dim: usize,
    /// Holds the (empty) output and input gradient of a sequence without
    /// layers, which is the identity.
    identity_in: Array2<f32>,
    identity_grad: Array2<f32>,
}

impl Sequential {
    /// A sequence over inputs of `in_dim` features; layers are named by
    /// their index.
    pub fn new(in_dim: usize, layers: Vec<Box<dyn Layer>>) -> Sequential {
        let named = layers
            .into_iter()
            .enumerate()
            .map(|(i, l)| (i.to_string(), l))
            .collect();
        Sequential::named(in_dim, named)
    }
    /// A sequence of named layers (names are path segments: no dots).
    pub fn named(in_dim: usize, layers: Vec<(String, Box<dyn Layer>)>) -> Sequential {
        let (names, layers): (Vec<String>, Vec<Box<dyn Layer>>) = layers.into_iter().unzip();
        debug_assert!(names.iter().all(|n| !n.contains('.')), "{names:?}");
        Sequential {
            layers,
            names,
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
    /// The layers' names, in order.
    pub fn names(&self) -> &[String] {
        &self.names
    }
    /// Input features (the output width of an empty sequence).
    pub fn in_dim(&self) -> usize {
        self.in_dim
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
    fn kind(&self) -> LayerKind {
        LayerKind::Sequential
    }
    fn layer_ref(&mut self) -> LayerRef<'_> {
        LayerRef::Sequential(self)
    }
    fn visit_children(&mut self, f: &mut dyn FnMut(&str, &mut dyn Layer)) {
        for (name, layer) in self.names.iter().zip(&mut self.layers) {
            f(name, layer.as_mut());
        }
    }
    fn out_dim(&self) -> usize {
        self.layers.last().map_or(self.in_dim, |l| l.out_dim())
    }
    fn forward(&mut self, input: ArrayView2<f32>, mode: Mode, ctx: &mut Ctx) {
        if self.layers.is_empty() {
            self.identity_in = input.to_owned();
            return;
        }
        let observing = ctx.observer.is_some();
        for i in 0..self.layers.len() {
            let (done, rest) = self.layers.split_at_mut(i);
            let x = match done.last() {
                Some(l) => l.output(),
                None => input.view(),
            };
            let layer = &mut rest[0];
            if observing {
                let len = ctx.enter(&self.names[i]);
                layer.forward(x, mode, ctx);
                if let Some(obs) = ctx.observer.as_deref_mut() {
                    obs.on_forward(&ctx.path, layer.kind(), x, layer.output());
                }
                ctx.leave(len);
            } else {
                layer.forward(x, mode, ctx);
            }
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
        let observing = ctx.observer.is_some();
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
            let need_here = i > 0 || need;
            if observing {
                let len = ctx.enter(&self.names[i]);
                current.backward(x, g, need_here, ctx);
                if let Some(obs) = ctx.observer.as_deref_mut() {
                    let gi = need_here.then(|| current.grad_input());
                    obs.on_backward(&ctx.path, current.kind(), g, gi);
                }
                ctx.leave(len);
            } else {
                current.backward(x, g, need_here, ctx);
            }
        }
    }
    fn grad_input(&self) -> ArrayView2<'_, f32> {
        self.layers
            .first()
            .map_or(self.identity_grad.view(), |l| l.grad_input())
    }
    fn zero_grad(&mut self) {
        for l in &mut self.layers {
            l.zero_grad();
        }
    }
    fn visit_parameters(&mut self, f: &mut dyn FnMut(Param<'_>)) {
        for l in &mut self.layers {
            l.visit_parameters(f);
        }
    }
    fn visit_buffers(&mut self, f: &mut dyn FnMut(Buffer<'_>)) {
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
    fn out_rows(&self, rows_in: usize) -> usize {
        self.layers.iter().fold(rows_in, |rows, l| l.out_rows(rows))
    }
}

/// A residual block `y = x + f(x)`; `f` must keep the width. The block is
/// transparent in paths: its branch's layers are its children.
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
    /// The residual branch, mutable.
    pub fn inner_mut(&mut self) -> &mut Sequential {
        &mut self.inner
    }
}

impl Layer for Residual {
    fn describe(&self) -> String {
        format!("residual[{}]", self.inner.describe())
    }
    fn kind(&self) -> LayerKind {
        LayerKind::Residual
    }
    fn layer_ref(&mut self) -> LayerRef<'_> {
        LayerRef::Residual(self)
    }
    fn visit_children(&mut self, f: &mut dyn FnMut(&str, &mut dyn Layer)) {
        self.inner.visit_children(f);
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
    fn zero_grad(&mut self) {
        self.inner.zero_grad();
    }
    fn visit_parameters(&mut self, f: &mut dyn FnMut(Param<'_>)) {
        self.inner.visit_parameters(f);
    }
    fn visit_buffers(&mut self, f: &mut dyn FnMut(Buffer<'_>)) {
        self.inner.visit_buffers(f);
    }
    fn flops_per_row(&self) -> (u64, u64) {
        let (f, b) = self.inner.flops_per_row();
        let d = self.out_dim() as u64;
        (f + d, b + d)
    }
}

/// Total number of trainable scalars of a layer (at its active widths).
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
