//! The FT-Transformer's own layers (Gorishniy et al., NeurIPS 2021; the
//! reference is `bin/ft_transformer.py` of yandex-research/
//! rtdl-revisiting-models): the feature tokenizer, multi-head
//! self-attention and ReGLU. The blocks around them (PreNorm residual
//! branches, the [CLS] head) are built from the common layers by
//! `nn_plan`'s expansion of `Backbone::FtTransformer`.
//!
//! Tokens travel as (batch·tokens, d_token) matrices (see
//! [`super::tokens`]).
//!
//! Active widths (supernet children, see [`super::widths`]): the tokenizer
//! and attention run on the leading `d` of their max token width (the
//! tokenizer's `E[.., ..d]`, `b[.., ..d]`, `cls[..d]`; the projections'
//! `W[..d, ..d]`); the head count is fixed, so a child's head `i` is
//! columns `i·d/heads..(i+1)·d/heads` of the leading block, exactly the
//! attention of a standalone layer of width `d` holding those weights (a
//! supernet head's dimensions are not kept together across children;
//! slicing per head instead would make the projections' columns a strided
//! rather than a leading block). ReGLU at hidden width `h` of a max `H`
//! reads the value half `[..h]` and the gate half `[H..H+h]` of its input:
//! the linear layer before it runs on its leading `H + h` outputs, and the
//! unused value columns `[h..H)` get a zero gradient (see [`Reglu`]).

use super::layers::{
    ensure_shape, Ctx, Layer, LayerKind, LayerRef, Mode, Param, ParamId, WidthError,
};
use super::param::GradBuf;
use crate::gemm::gemm;
use crate::kernels::{span_end, span_start, KernelKind};
use ndarray::linalg::general_mat_mul;
use ndarray::{
    s, Array2, Array3, ArrayView1, ArrayView2, ArrayView3, ArrayView4, ArrayViewMut1,
    ArrayViewMut2, ArrayViewMut3, ArrayViewMut4, Axis, Zip,
};
use rand::rngs::SmallRng;
use rand::{Rng, RngCore};

/// Below this many elements a loop runs on one thread.
const PAR_MIN_ELEMENTS: usize = 1 << 14;

fn parallel(len: usize) -> bool {
    len >= PAR_MIN_ELEMENTS && rayon::current_num_threads() > 1
}

/// Runs a `Zip` on the pool when `par`, here otherwise.
macro_rules! run_zip {
    ($par:expr, $zip:expr, $body:expr) => {
        if $par {
            $zip.par_for_each($body)
        } else {
            $zip.for_each($body)
        }
    };
}

/// (samples·tokens, d) as (samples, tokens, d).
fn by_sample(x: ArrayView2<'_, f32>, tokens: usize) -> ArrayView3<'_, f32> {
    let (r, d) = x.dim();
    x.into_shape_with_order((r / tokens, tokens, d))
        .expect("row-major")
}

fn by_sample_mut(x: ArrayViewMut2<'_, f32>, tokens: usize) -> ArrayViewMut3<'_, f32> {
    let (r, d) = x.dim();
    x.into_shape_with_order((r / tokens, tokens, d))
        .expect("row-major")
}

/// (samples·heads, t, t) as (samples, heads, t, t).
fn by_head(x: ArrayView3<'_, f32>, heads: usize) -> ArrayView4<'_, f32> {
    let (r, a, b) = x.dim();
    x.into_shape_with_order((r / heads, heads, a, b))
        .expect("row-major")
}

fn by_head_mut(x: ArrayViewMut3<'_, f32>, heads: usize) -> ArrayViewMut4<'_, f32> {
    let (r, a, b) = x.dim();
    x.into_shape_with_order((r / heads, heads, a, b))
        .expect("row-major")
}

/// Softmax of one row of scores, in place (max subtracted first).
pub fn softmax_row(mut row: ArrayViewMut1<'_, f32>) {
    let max = row.fold(f32::NEG_INFINITY, |m, &v| m.max(v));
    let mut sum = 0.0;
    row.mapv_inplace(|v| {
        let e = (v - max).exp();
        sum += e;
        e
    });
    row /= sum;
}

/// Softmax backward of one row, in place: `g ← p ⊙ (g − ⟨g, p⟩)`.
pub fn softmax_row_backward(mut g: ArrayViewMut1<'_, f32>, p: ArrayView1<'_, f32>) {
    let dot = g.dot(&p);
    Zip::from(&mut g)
        .and(&p)
        .for_each(|g, &p| *g = p * (*g - dot));
}

fn uniform(rows: usize, cols: usize, bound: f32, rng: &mut SmallRng) -> Array2<f32> {
    Array2::from_shape_fn((rows, cols), |_| rng.gen_range(-bound..bound))
}

/// Feature tokenizer: sample `x` (one row of encoded columns) becomes
/// `1 + features` tokens of `d` features: the [CLS] token (the reference's
/// constant-1 feature with weight row W₀ and zero bias, i.e. a learned
/// vector) first, then for feature `j` over its encoded columns `C_j`
/// `T_j = b_j + Σ_{c∈C_j} x_c·E_c`. A numeric feature has one column
/// (`x·w_j + b_j`); a categorical one is a one-hot block, where the sum is
/// the lookup of its category's embedding (all-zero for a category unseen
/// in training), plus the feature's bias, as the reference's
/// `category_embeddings` + bias.
///
/// Initialisation as the reference (Kaiming-uniform with a = √5 on
/// (·, d) tensors): uniform in ±1/√d. No weight decay on any of its
/// parameters (the reference's optimizer groups).
pub struct FeatureTokenizer {
    feature_widths: Vec<usize>,
    /// Feature of each encoded column.
    column_feature: Vec<usize>,
    /// Max token width (the parameters' columns).
    d: usize,
    /// Active token width: the leading columns the layer runs on.
    active: usize,
    /// Embedding of each encoded column, (inputs, d).
    pub embedding: Array2<f32>,
    /// Bias of each feature, (features, d).
    pub bias: Array2<f32>,
    /// The [CLS] token, (1, d).
    pub cls: Array2<f32>,
    ids: [ParamId; 3],
    grads: [GradBuf; 3],
    out: Array2<f32>,
    grad_in: Array2<f32>,
}

impl FeatureTokenizer {
    /// A tokenizer of features spanning `feature_widths` encoded columns
    /// into tokens of `d` features.
    pub fn new(feature_widths: &[usize], d: usize, rng: &mut SmallRng) -> FeatureTokenizer {
        let inputs: usize = feature_widths.iter().sum();
        let features = feature_widths.len();
        let bound = 1.0 / (d.max(1) as f32).sqrt();
        let embedding = uniform(inputs, d, bound, rng);
        let bias = uniform(features, d, bound, rng);
        let cls = uniform(1, d, bound, rng);
        let column_feature = feature_widths
            .iter()
            .enumerate()
            .flat_map(|(j, &w)| std::iter::repeat_n(j, w))
            .collect();
        FeatureTokenizer {
            feature_widths: feature_widths.to_vec(),
            column_feature,
            d,
            active: d,
            embedding,
            bias,
            cls,
            ids: [ParamId::fresh(), ParamId::fresh(), ParamId::fresh()],
            grads: [
                GradBuf::zeros(inputs, d),
                GradBuf::zeros(features, d),
                GradBuf::zeros(1, d),
            ],
            out: Array2::zeros((0, d)),
            grad_in: Array2::zeros((0, inputs)),
        }
    }

    /// Tokens per sample (features + [CLS]).
    pub fn tokens(&self) -> usize {
        1 + self.feature_widths.len()
    }

    /// Encoded columns of each feature.
    pub fn feature_widths(&self) -> &[usize] {
        &self.feature_widths
    }

    /// Max token width.
    pub fn max_features(&self) -> usize {
        self.d
    }

    /// Runs on the leading `d` columns of every parameter from now on.
    pub fn set_active(&mut self, d: usize) -> Result<(), WidthError> {
        if d == 0 || d > self.d {
            return Err(WidthError::OutOfRange {
                what: "tokenizer",
                active: d,
                max: self.d,
            });
        }
        self.active = d;
        Ok(())
    }
}

impl Layer for FeatureTokenizer {
    fn describe(&self) -> String {
        format!(
            "tokenizer({}→{}×{})",
            self.column_feature.len(),
            self.tokens(),
            self.active
        )
    }
    fn kind(&self) -> LayerKind {
        LayerKind::Other
    }
    fn layer_ref(&mut self) -> LayerRef<'_> {
        LayerRef::Tokenizer(self)
    }
    fn out_dim(&self) -> usize {
        self.active
    }
    fn out_rows(&self, rows_in: usize) -> usize {
        rows_in * self.tokens()
    }
    fn forward(&mut self, input: ArrayView2<f32>, _mode: Mode, ctx: &mut Ctx) {
        let t = span_start(ctx.sink);
        let tokens = self.tokens();
        let n = input.nrows();
        let d = self.active;
        ensure_shape(&mut self.out, n * tokens, d);
        let (cls, bias, emb, col_feat) = (
            self.cls.slice(s![0, ..d]),
            self.bias.slice(s![.., ..d]),
            self.embedding.slice(s![.., ..d]),
            &self.column_feature,
        );
        let body = |mut out: ndarray::ArrayViewMut2<f32>, x: ndarray::ArrayView1<f32>| {
            out.row_mut(0).assign(&cls);
            out.slice_mut(s![1.., ..]).assign(&bias);
            for (c, &v) in x.iter().enumerate() {
                // One-hot blocks are mostly zeros: a lookup, not a product.
                if v != 0.0 {
                    let mut row = out.row_mut(1 + col_feat[c]);
                    row.scaled_add(v, &emb.row(c));
                }
            }
        };
        run_zip!(
            parallel(n * tokens * d),
            Zip::from(by_sample_mut(self.out.view_mut(), tokens).outer_iter_mut())
                .and(input.rows()),
            body
        );
        span_end(ctx.sink, KernelKind::TokenizerFwd, t);
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
        let tokens = self.tokens();
        let (inputs, d) = (self.embedding.nrows(), self.active);
        let features = self.feature_widths.len();
        let [ge, gb, gc] = &mut self.grads;
        let (beta, mut g_emb) = ge.begin(inputs, d);
        if beta == 0.0 {
            g_emb.fill(0.0);
        }
        let (beta, mut g_bias) = gb.begin(features, d);
        if beta == 0.0 {
            g_bias.fill(0.0);
        }
        let (beta, mut g_cls) = gc.begin(1, d);
        if beta == 0.0 {
            g_cls.fill(0.0);
        }
        for (g, x) in grad_out.axis_chunks_iter(Axis(0), tokens).zip(input.rows()) {
            g_cls.row_mut(0).scaled_add(1.0, &g.row(0));
            g_bias.scaled_add(1.0, &g.slice(s![1.., ..]));
            for (c, &v) in x.iter().enumerate() {
                if v != 0.0 {
                    g_emb
                        .row_mut(c)
                        .scaled_add(v, &g.row(1 + self.column_feature[c]));
                }
            }
        }
        if need {
            ensure_shape(&mut self.grad_in, input.nrows(), inputs);
            for (mut gi, g) in self
                .grad_in
                .rows_mut()
                .into_iter()
                .zip(grad_out.axis_chunks_iter(Axis(0), tokens))
            {
                for (c, v) in gi.iter_mut().enumerate() {
                    *v = g
                        .row(1 + self.column_feature[c])
                        .dot(&self.embedding.slice(s![c, ..d]));
                }
            }
        }
        span_end(ctx.sink, KernelKind::TokenizerBwd, t);
    }
    fn grad_input(&self) -> ArrayView2<'_, f32> {
        self.grad_in.view()
    }
    fn zero_grad(&mut self) {
        self.grads.iter_mut().for_each(GradBuf::zero);
    }
    fn visit_parameters(&mut self, f: &mut dyn FnMut(Param<'_>)) {
        let [ge, gb, gc] = &mut self.grads;
        let (ie, ib, ic) = (self.ids[0], self.ids[1], self.ids[2]);
        let (r, d) = (self.embedding.nrows(), self.active);
        f(Param {
            id: ie,
            name: "embedding",
            value: self.embedding.slice_mut(s![.., ..d]),
            grad: ge.view(r, d),
            decay: false,
        });
        let r = self.bias.nrows();
        f(Param {
            id: ib,
            name: "bias",
            value: self.bias.slice_mut(s![.., ..d]),
            grad: gb.view(r, d),
            decay: false,
        });
        f(Param {
            id: ic,
            name: "cls",
            value: self.cls.slice_mut(s![.., ..d]),
            grad: gc.view(1, d),
            decay: false,
        });
    }
    fn flops_per_row(&self) -> (u64, u64) {
        // Per input row (a sample): a multiply-add per nonzero column (at
        // most every column) and the biases.
        let d = self.active as u64;
        let work = (self.column_feature.len() as u64 + self.tokens() as u64) * d;
        (2 * work, 4 * work)
    }
}

/// Multi-head self-attention over the tokens of each sample, as the
/// reference's `MultiheadAttention`: `Q, K, V = X·W_q, X·W_k, X·W_v`
/// (with biases), per head `softmax(Q_h·K_hᵀ/√d_head)`, dropout on those
/// probabilities, `P_h·V_h`, heads concatenated and, with more than one
/// head, `·W_out`. Initialisation as the reference: W_q, W_k (and W_v when
/// there is a W_out) Xavier-uniform with gain 1/√2, W_out (and a lone
/// W_v) as `nn.Linear`, every bias zero.
pub struct MultiHeadAttention {
    tokens: usize,
    heads: usize,
    /// Attention dropout probability.
    pub p: f32,
    /// Query projection.
    pub w_q: super::layers::Linear,
    /// Key projection.
    pub w_k: super::layers::Linear,
    /// Value projection.
    pub w_v: super::layers::Linear,
    /// Output projection (more than one head only).
    pub w_out: Option<super::layers::Linear>,
    /// Softmax probabilities, (batch·heads, tokens, tokens).
    probs: Array3<f32>,
    /// Dropout mask (scaled), same shape; used when `masked`.
    mask: Array3<f32>,
    /// Probabilities after dropout (training with p > 0).
    dropped: Array3<f32>,
    masked: bool,
    /// Concatenated heads, (rows, d).
    context: Array2<f32>,
    d_probs: Array3<f32>,
    d_q: Array2<f32>,
    d_k: Array2<f32>,
    d_v: Array2<f32>,
    grad_in: Array2<f32>,
}

impl MultiHeadAttention {
    /// Attention over `tokens` tokens of `d` features with `heads` heads
    /// (dividing `d`) and dropout `p` on the probabilities.
    pub fn new(
        tokens: usize,
        d: usize,
        heads: usize,
        p: f32,
        rng: &mut SmallRng,
    ) -> MultiHeadAttention {
        assert!(heads > 0 && d % heads == 0, "{heads} heads of {d} features");
        let xavier = (0.5f32).sqrt() * (6.0 / (2.0 * d as f32)).sqrt();
        let default = 1.0 / (d.max(1) as f32).sqrt();
        let zero = || ndarray::Array1::zeros(d);
        let mut lin =
            |bound: f32| super::layers::Linear::from_parts(uniform(d, d, bound, rng), zero());
        let w_q = lin(xavier);
        let w_k = lin(xavier);
        let w_v = lin(if heads > 1 { xavier } else { default });
        let w_out = (heads > 1).then(|| lin(default));
        let e3 = || Array3::zeros((0, tokens, tokens));
        let e2 = || Array2::zeros((0, d));
        MultiHeadAttention {
            tokens,
            heads,
            p,
            w_q,
            w_k,
            w_v,
            w_out,
            probs: e3(),
            mask: e3(),
            dropped: e3(),
            masked: false,
            context: e2(),
            d_probs: e3(),
            d_q: e2(),
            d_k: e2(),
            d_v: e2(),
            grad_in: e2(),
        }
    }

    /// Active token width (the projections' leading block).
    fn d(&self) -> usize {
        self.w_q.out_dim()
    }

    /// Max token width.
    pub fn max_features(&self) -> usize {
        self.w_q.max_dims().1
    }

    /// Heads (fixed: a narrower width has narrower heads).
    pub fn heads(&self) -> usize {
        self.heads
    }

    /// Runs on the leading `d` token features from now on (every
    /// projection on `W[..d, ..d]`); `d` must be a multiple of the heads.
    pub fn set_active(&mut self, d: usize) -> Result<(), WidthError> {
        if d % self.heads != 0 {
            return Err(WidthError::OutOfRange {
                what: "attention (a multiple of its heads)",
                active: d,
                max: self.max_features(),
            });
        }
        for w in [&mut self.w_q, &mut self.w_k, &mut self.w_v] {
            w.set_active(d, d)?;
        }
        if let Some(w) = &mut self.w_out {
            w.set_active(d, d)?;
        }
        Ok(())
    }
}

fn ensure3(buf: &mut Array3<f32>, a: usize, b: usize, c: usize) {
    if buf.dim() != (a, b, c) {
        *buf = Array3::zeros((a, b, c));
    }
}

impl Layer for MultiHeadAttention {
    fn describe(&self) -> String {
        format!(
            "attention({}×{}, {} heads)",
            self.tokens,
            self.d(),
            self.heads
        )
    }
    fn kind(&self) -> LayerKind {
        LayerKind::Other
    }
    fn layer_ref(&mut self) -> LayerRef<'_> {
        LayerRef::Attention(self)
    }
    fn visit_children(&mut self, f: &mut dyn FnMut(&str, &mut dyn Layer)) {
        f("w_q", &mut self.w_q);
        f("w_k", &mut self.w_k);
        f("w_v", &mut self.w_v);
        if let Some(w) = &mut self.w_out {
            f("w_out", w);
        }
    }
    fn out_dim(&self) -> usize {
        self.d()
    }
    fn forward(&mut self, input: ArrayView2<f32>, mode: Mode, ctx: &mut Ctx) {
        let (t_, h_, d) = (self.tokens, self.heads, self.d());
        let dh = d / h_;
        let rows = input.nrows();
        let batch = rows / t_;
        let scale = 1.0 / (dh as f32).sqrt();
        self.w_q.forward(input, mode, ctx);
        self.w_k.forward(input, mode, ctx);
        self.w_v.forward(input, mode, ctx);
        let par = parallel(batch * h_ * t_ * t_.max(dh));

        let t = span_start(ctx.sink);
        ensure3(&mut self.probs, batch * h_, t_, t_);
        let (q, k) = (self.w_q.output(), self.w_k.output());
        let scores =
            |mut p: ndarray::ArrayViewMut3<f32>, qb: ArrayView2<f32>, kb: ArrayView2<f32>| {
                for h in 0..h_ {
                    let cols = s![.., h * dh..(h + 1) * dh];
                    let mut ph = p.index_axis_mut(Axis(0), h);
                    general_mat_mul(scale, &qb.slice(cols), &kb.slice(cols).t(), 0.0, &mut ph);
                }
            };
        run_zip!(
            par,
            Zip::from(by_head_mut(self.probs.view_mut(), h_).outer_iter_mut())
                .and(by_sample(q, t_).outer_iter())
                .and(by_sample(k, t_).outer_iter()),
            scores
        );
        span_end(ctx.sink, KernelKind::AttentionScoreFwd, t);

        let t = span_start(ctx.sink);
        run_zip!(par, Zip::from(self.probs.lanes_mut(Axis(2))), softmax_row);
        span_end(ctx.sink, KernelKind::AttentionSoftmaxFwd, t);

        self.masked = false;
        if self.p > 0.0 {
            let t = span_start(ctx.sink);
            if mode == Mode::Train {
                self.masked = true;
                ensure3(&mut self.mask, batch * h_, t_, t_);
                ensure3(&mut self.dropped, batch * h_, t_, t_);
                let keep_scale = 1.0 / (1.0 - self.p);
                let threshold = (f64::from(self.p) * 4_294_967_296.0) as u64;
                let rng = &mut ctx.rng;
                Zip::from(&mut self.mask)
                    .and(&mut self.dropped)
                    .and(&self.probs)
                    .for_each(|m, o, &x| {
                        let r = rng.next_u32() as u64;
                        *m = if r < threshold { 0.0 } else { keep_scale };
                        *o = x * *m;
                    });
            }
            // In evaluation the dropout is the identity: the span is kept
            // (as the plain dropout layer's) so plan and record agree.
            span_end(ctx.sink, KernelKind::DropoutFwd, t);
        }

        let t = span_start(ctx.sink);
        ensure_shape(&mut self.context, rows, d);
        let probs = if self.masked {
            &self.dropped
        } else {
            &self.probs
        };
        let v = self.w_v.output();
        let context = |mut ob: ndarray::ArrayViewMut2<f32>,
                       p: ndarray::ArrayView3<f32>,
                       vb: ArrayView2<f32>| {
            for h in 0..h_ {
                let cols = s![.., h * dh..(h + 1) * dh];
                let mut oh = ob.slice_mut(cols);
                general_mat_mul(
                    1.0,
                    &p.index_axis(Axis(0), h),
                    &vb.slice(cols),
                    0.0,
                    &mut oh,
                );
            }
        };
        run_zip!(
            par,
            Zip::from(by_sample_mut(self.context.view_mut(), t_).outer_iter_mut())
                .and(by_head(probs.view(), h_).outer_iter())
                .and(by_sample(v, t_).outer_iter()),
            context
        );
        span_end(ctx.sink, KernelKind::AttentionContextFwd, t);
        if let Some(w) = &mut self.w_out {
            w.forward(self.context.view(), mode, ctx);
        }
    }
    fn output(&self) -> ArrayView2<'_, f32> {
        match &self.w_out {
            Some(w) => w.output(),
            None => self.context.view(),
        }
    }
    fn backward(
        &mut self,
        input: ArrayView2<f32>,
        grad_out: ArrayView2<f32>,
        need: bool,
        ctx: &mut Ctx,
    ) {
        let (t_, h_, d) = (self.tokens, self.heads, self.d());
        let dh = d / h_;
        let rows = input.nrows();
        let batch = rows / t_;
        let scale = 1.0 / (dh as f32).sqrt();
        let par = parallel(batch * h_ * t_ * t_.max(dh));
        if let Some(w) = &mut self.w_out {
            w.backward_weight(self.context.view(), grad_out, ctx);
            w.backward_data(grad_out, ctx);
        }
        let d_context = match &self.w_out {
            Some(w) => w.grad_input(),
            None => grad_out.view(),
        };

        // Context backward: dP' = dO·Vᵀ, dV = P'ᵀ·dO per (sample, head).
        let t = span_start(ctx.sink);
        ensure3(&mut self.d_probs, batch * h_, t_, t_);
        ensure_shape(&mut self.d_v, rows, d);
        let probs = if self.masked {
            &self.dropped
        } else {
            &self.probs
        };
        let v = self.w_v.output();
        let body = |mut dp: ndarray::ArrayViewMut3<f32>,
                    mut dvb: ndarray::ArrayViewMut2<f32>,
                    p: ndarray::ArrayView3<f32>,
                    vb: ArrayView2<f32>,
                    dob: ArrayView2<f32>| {
            for h in 0..h_ {
                let cols = s![.., h * dh..(h + 1) * dh];
                let mut dph = dp.index_axis_mut(Axis(0), h);
                general_mat_mul(1.0, &dob.slice(cols), &vb.slice(cols).t(), 0.0, &mut dph);
                let mut dvh = dvb.slice_mut(cols);
                general_mat_mul(
                    1.0,
                    &p.index_axis(Axis(0), h).t(),
                    &dob.slice(cols),
                    0.0,
                    &mut dvh,
                );
            }
        };
        run_zip!(
            par,
            Zip::from(by_head_mut(self.d_probs.view_mut(), h_).outer_iter_mut())
                .and(by_sample_mut(self.d_v.view_mut(), t_).outer_iter_mut())
                .and(by_head(probs.view(), h_).outer_iter())
                .and(by_sample(v, t_).outer_iter())
                .and(by_sample(d_context, t_).outer_iter()),
            body
        );
        span_end(ctx.sink, KernelKind::AttentionContextBwd, t);

        if self.p > 0.0 {
            let t = span_start(ctx.sink);
            if self.masked {
                Zip::from(&mut self.d_probs)
                    .and(&self.mask)
                    .for_each(|g, &m| *g *= m);
            }
            span_end(ctx.sink, KernelKind::DropoutBwd, t);
        }

        // Softmax backward: dS = P ⊙ (dP − Σ dP⊙P) per row.
        let t = span_start(ctx.sink);
        run_zip!(
            par,
            Zip::from(self.d_probs.lanes_mut(Axis(2))).and(self.probs.lanes(Axis(2))),
            softmax_row_backward
        );
        span_end(ctx.sink, KernelKind::AttentionSoftmaxBwd, t);

        // Scores backward: dQ = s·dS·K, dK = s·dSᵀ·Q.
        let t = span_start(ctx.sink);
        ensure_shape(&mut self.d_q, rows, d);
        ensure_shape(&mut self.d_k, rows, d);
        let (q, k) = (self.w_q.output(), self.w_k.output());
        let body = |mut dqb: ndarray::ArrayViewMut2<f32>,
                    mut dkb: ndarray::ArrayViewMut2<f32>,
                    ds: ndarray::ArrayView3<f32>,
                    qb: ArrayView2<f32>,
                    kb: ArrayView2<f32>| {
            for h in 0..h_ {
                let cols = s![.., h * dh..(h + 1) * dh];
                let dsh = ds.index_axis(Axis(0), h);
                general_mat_mul(scale, &dsh, &kb.slice(cols), 0.0, &mut dqb.slice_mut(cols));
                general_mat_mul(
                    scale,
                    &dsh.t(),
                    &qb.slice(cols),
                    0.0,
                    &mut dkb.slice_mut(cols),
                );
            }
        };
        run_zip!(
            par,
            Zip::from(by_sample_mut(self.d_q.view_mut(), t_).outer_iter_mut())
                .and(by_sample_mut(self.d_k.view_mut(), t_).outer_iter_mut())
                .and(by_head(self.d_probs.view(), h_).outer_iter())
                .and(by_sample(q, t_).outer_iter())
                .and(by_sample(k, t_).outer_iter()),
            body
        );
        span_end(ctx.sink, KernelKind::AttentionScoreBwd, t);

        self.w_q.backward_weight(input, self.d_q.view(), ctx);
        self.w_k.backward_weight(input, self.d_k.view(), ctx);
        self.w_v.backward_weight(input, self.d_v.view(), ctx);
        if need {
            // dX = dQ·W_qᵀ + dK·W_kᵀ + dV·W_vᵀ, one data GEMM each.
            ensure_shape(&mut self.grad_in, rows, d);
            for (i, (g, w)) in [
                (&self.d_q, &self.w_q),
                (&self.d_k, &self.w_k),
                (&self.d_v, &self.w_v),
            ]
            .into_iter()
            .enumerate()
            {
                let t = span_start(ctx.sink);
                let beta = if i == 0 { 0.0 } else { 1.0 };
                gemm(
                    1.0,
                    &g.view(),
                    &w.active_weight().t(),
                    beta,
                    &mut self.grad_in.view_mut(),
                );
                span_end(ctx.sink, KernelKind::LinearBwdData, t);
            }
        }
    }
    fn grad_input(&self) -> ArrayView2<'_, f32> {
        self.grad_in.view()
    }
    fn zero_grad(&mut self) {
        self.visit_children(&mut |_, l| l.zero_grad());
    }
    fn visit_parameters(&mut self, f: &mut dyn FnMut(Param<'_>)) {
        self.visit_children(&mut |_, l| l.visit_parameters(f));
    }
    fn flops_per_row(&self) -> (u64, u64) {
        // Per token row: the projections, and 2·tokens·d for scores and
        // context.
        let d = self.d() as u64;
        let t = self.tokens as u64;
        let projections = if self.w_out.is_some() { 4 } else { 3 };
        let f = projections * 2 * d * d + 4 * t * d + 5 * t * self.heads as u64;
        (f, 2 * f)
    }
}

/// ReGLU `a·ReLU(b)` of the halves `(a, b)` of each row (the reference's
/// `x.chunk(2, dim=-1)` order): (rows, 2h) → (rows, h).
///
/// At an active width `h` below its max `H` (a supernet child), the
/// input is the leading `H + h` outputs of the linear layer before it:
/// value `a = x[.., ..h]`, gate `b = x[.., H..H+h]`, the leading `h` units
/// of each half of the max-width layer, so the child equals a standalone
/// ReGLU of width `h` whose linear layer holds those columns. The value
/// columns `[h..H)` are ignored and get a zero input gradient.
pub struct Reglu {
    /// Max width H.
    width: usize,
    /// Active width h.
    active: usize,
    out: Array2<f32>,
    grad_in: Array2<f32>,
}

impl Reglu {
    /// ReGLU with `width` outputs (2·`width` inputs).
    pub fn new(width: usize) -> Reglu {
        Reglu {
            width,
            active: width,
            out: Array2::zeros((0, width)),
            grad_in: Array2::zeros((0, 2 * width)),
        }
    }

    /// Max width.
    pub fn max_features(&self) -> usize {
        self.width
    }

    /// Input columns at the active width: `H + h` (`2h` at full width).
    pub fn in_dim(&self) -> usize {
        self.width + self.active
    }

    /// Runs at `h` outputs from now on (its input then has `H + h`
    /// columns, see [`Reglu`]).
    pub fn set_active(&mut self, h: usize) -> Result<(), WidthError> {
        if h == 0 || h > self.width {
            return Err(WidthError::OutOfRange {
                what: "reglu",
                active: h,
                max: self.width,
            });
        }
        self.active = h;
        Ok(())
    }
}

impl Layer for Reglu {
    fn describe(&self) -> String {
        format!("reglu({}→{})", 2 * self.active, self.active)
    }
    fn kind(&self) -> LayerKind {
        LayerKind::Other
    }
    fn layer_ref(&mut self) -> LayerRef<'_> {
        LayerRef::Reglu(self)
    }
    fn out_dim(&self) -> usize {
        self.active
    }
    fn forward(&mut self, input: ArrayView2<f32>, _mode: Mode, ctx: &mut Ctx) {
        let t = span_start(ctx.sink);
        let (h, gate) = (self.active, self.width);
        debug_assert_eq!(input.ncols(), self.in_dim(), "reglu input columns");
        ensure_shape(&mut self.out, input.nrows(), h);
        let (a, b) = (
            input.slice(s![.., ..h]),
            input.slice(s![.., gate..gate + h]),
        );
        let z = Zip::from(&mut self.out).and(a).and(b);
        if parallel(input.nrows() * h) {
            z.par_for_each(|o, &a, &b| *o = a * b.max(0.0));
        } else {
            z.for_each(|o, &a, &b| *o = a * b.max(0.0));
        }
        span_end(ctx.sink, KernelKind::RegluFwd, t);
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
        let (h, gate) = (self.active, self.width);
        ensure_shape(&mut self.grad_in, input.nrows(), gate + h);
        let (a, b) = (
            input.slice(s![.., ..h]),
            input.slice(s![.., gate..gate + h]),
        );
        let (mut ga, mut rest) = self.grad_in.view_mut().split_at(Axis(1), h);
        let (mut unused, mut gb) = rest.view_mut().split_at(Axis(1), gate - h);
        // Value columns a narrower child ignores.
        unused.fill(0.0);
        let z = Zip::from(&mut ga).and(&mut gb).and(a).and(b).and(grad_out);
        let body = |ga: &mut f32, gb: &mut f32, &a: &f32, &b: &f32, &g: &f32| {
            *ga = g * b.max(0.0);
            *gb = if b > 0.0 { g * a } else { 0.0 };
        };
        if parallel(input.nrows() * h) {
            z.par_for_each(body);
        } else {
            z.for_each(body);
        }
        span_end(ctx.sink, KernelKind::RegluBwd, t);
    }
    fn grad_input(&self) -> ArrayView2<'_, f32> {
        self.grad_in.view()
    }
    fn zero_grad(&mut self) {}
    fn visit_parameters(&mut self, _f: &mut dyn FnMut(Param<'_>)) {}
    fn flops_per_row(&self) -> (u64, u64) {
        (2 * self.active as u64, 3 * self.active as u64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::NullSink;
    use rand::SeedableRng;

    /// The tokenizer by hand: [CLS], `x·w + b` for a numeric feature, the
    /// embedding of the hot category plus the bias for a categorical one.
    #[test]
    fn tokenizer_by_hand() {
        let mut rng = SmallRng::seed_from_u64(1);
        let mut tok = FeatureTokenizer::new(&[1, 3], 2, &mut rng);
        tok.embedding = ndarray::array![[2.0, -1.0], [10.0, 20.0], [30.0, 40.0], [50.0, 60.0]];
        tok.bias = ndarray::array![[0.5, 0.25], [1.0, 2.0]];
        tok.cls = ndarray::array![[7.0, 8.0]];
        let x = ndarray::array![[3.0f32, 0.0, 1.0, 0.0], [-1.0, 0.0, 0.0, 0.0]];
        let mut sink = NullSink;
        let mut ctx = Ctx::new(&mut sink, 0);
        tok.forward(x.view(), Mode::Eval, &mut ctx);
        let want = ndarray::array![
            [7.0f32, 8.0],
            [6.5, -2.75],
            [31.0, 42.0],
            [7.0, 8.0],
            [-1.5, 1.25],
            // An unseen category (all-zero block): the bias alone.
            [1.0, 2.0],
        ];
        assert_eq!(tok.output(), want);
    }

    /// Attention against a direct f64 computation of
    /// `concat_h softmax(Q_h K_hᵀ/√d_h) V_h · W_out + b_out` per sample.
    #[test]
    fn attention_matches_a_direct_computation() {
        let mut rng = SmallRng::seed_from_u64(2);
        let (tokens, d, heads, samples) = (3, 4, 2, 2);
        let mut att = MultiHeadAttention::new(tokens, d, heads, 0.5, &mut rng);
        // Non-zero biases so that they are exercised.
        for w in [&mut att.w_q, &mut att.w_k, &mut att.w_v] {
            w.bias.mapv_inplace(|_| rng.gen_range(-0.5..0.5));
        }
        let x = uniform(samples * tokens, d, 1.0, &mut rng);
        let mut sink = NullSink;
        let mut ctx = Ctx::new(&mut sink, 0);
        // Evaluation: no dropout.
        att.forward(x.view(), Mode::Eval, &mut ctx);
        let f64m = |a: ArrayView2<f32>| a.mapv(f64::from);
        let project = |w: &super::super::layers::Linear| {
            f64m(x.view()).dot(&f64m(w.weight.view())) + &w.bias.mapv(f64::from)
        };
        let (q, k, v) = (project(&att.w_q), project(&att.w_k), project(&att.w_v));
        let dh = d / heads;
        let mut concat = ndarray::Array2::<f64>::zeros((samples * tokens, d));
        for b in 0..samples {
            for h in 0..heads {
                for i in 0..tokens {
                    let r = b * tokens + i;
                    let scores: Vec<f64> = (0..tokens)
                        .map(|j| {
                            let c = b * tokens + j;
                            (0..dh)
                                .map(|e| q[[r, h * dh + e]] * k[[c, h * dh + e]])
                                .sum::<f64>()
                                / (dh as f64).sqrt()
                        })
                        .collect();
                    let max = scores.iter().cloned().fold(f64::MIN, f64::max);
                    let z: f64 = scores.iter().map(|s| (s - max).exp()).sum();
                    for e in 0..dh {
                        concat[[r, h * dh + e]] = (0..tokens)
                            .map(|j| (scores[j] - max).exp() / z * v[[b * tokens + j, h * dh + e]])
                            .sum();
                    }
                }
            }
        }
        let w_out = att.w_out.as_ref().expect("two heads have W_out");
        let want = concat.dot(&f64m(w_out.weight.view())) + &w_out.bias.mapv(f64::from);
        for (got, want) in att.output().iter().zip(want.iter()) {
            assert!((f64::from(*got) - want).abs() < 1e-5, "{got} vs {want}");
        }
    }

    #[test]
    fn reglu_by_hand() {
        let mut layer = Reglu::new(2);
        let x = ndarray::array![[2.0f32, -3.0, 1.5, -1.0]];
        let mut sink = NullSink;
        let mut ctx = Ctx::new(&mut sink, 0);
        layer.forward(x.view(), Mode::Eval, &mut ctx);
        // a = (2, -3), b = (1.5, -1): (2·1.5, -3·0).
        assert_eq!(layer.output(), ndarray::array![[3.0f32, 0.0]]);
    }
}
