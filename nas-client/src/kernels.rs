//! Kernel names, span recording, and running one kernel in isolation.
//!
//! Every op of training and inference is a *kernel* of a [`KernelKind`]:
//! each GEMM of the forward pass, of the backward pass for the data and for
//! the weights, each activation, normalisation, dropout, loss and optimizer
//! step. While a model runs, each kernel execution is reported to a
//! [`SpanSink`] as a span `(kind, start, end)` on CLOCK_MONOTONIC.
//!
//! [`SpanRecorder`] is the sink used in training: it appends spans to a
//! pre-allocated buffer (no allocation, no lock, no system call beyond the
//! vDSO clock read), keeps per-kind totals, and hands full buffers to an
//! optional [`SpanUploader`] (energyd, see [`crate::energy`]).
//!
//! [`run_isolated`] runs one kernel kind for a given shape, so the
//! calibration crate can microbenchmark every kind with the same code the
//! training loop uses.

use ndarray::{Array1, Array2};
use rand::rngs::SmallRng;
use rand::SeedableRng;
use serde::Serialize;
use shared::MonotonicNs;
use std::fmt;

macro_rules! kernel_kinds {
    ($($(#[doc = $doc:literal])* $variant:ident => $name:literal,)*) => {
        /// A kind of kernel. The string names ([`KernelKind::as_str`]) are
        /// stable: they are sent to energyd and stored by calibration.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub enum KernelKind {
            $($(#[doc = $doc])* $variant,)*
        }

        impl KernelKind {
            /// Every kind, in declaration order (the order of `as_index`).
            pub const ALL: &'static [KernelKind] = &[$(KernelKind::$variant,)*];

            /// The stable name of this kind.
            pub const fn as_str(self) -> &'static str {
                match self {
                    $(KernelKind::$variant => $name,)*
                }
            }

            /// The kind with this stable name.
            pub fn from_name(name: &str) -> Option<KernelKind> {
                match name {
                    $($name => Some(KernelKind::$variant),)*
                    _ => None,
                }
            }
        }
    };
}

kernel_kinds! {
    /// Gather of a mini-batch's rows (and targets) from the training matrix.
    /// Shape: (batch, in).
    BatchGather => "batch_gather",
    /// Dense layer forward: `Y = X·W + b`, GEMM (batch×in)·(in×out).
    LinearFwd => "linear_fwd",
    /// Dense layer backward to the input: `dX = dY·Wᵀ`, GEMM (batch×out)·(out×in).
    LinearBwdData => "linear_bwd_data",
    /// Dense layer backward to the weights: `dW = Xᵀ·dY`, GEMM (in×batch)·(batch×out),
    /// plus the bias gradient (column sums of dY).
    LinearBwdWeight => "linear_bwd_weight",
    /// ReLU forward, element-wise on (batch, out).
    ReluFwd => "relu_fwd",
    /// ReLU backward, element-wise.
    ReluBwd => "relu_bwd",
    /// GELU forward (tanh approximation), element-wise.
    GeluFwd => "gelu_fwd",
    /// GELU backward, element-wise.
    GeluBwd => "gelu_bwd",
    /// SiLU (swish) forward, element-wise.
    SiluFwd => "silu_fwd",
    /// SiLU backward, element-wise.
    SiluBwd => "silu_bwd",
    /// tanh forward, element-wise.
    TanhFwd => "tanh_fwd",
    /// tanh backward, element-wise.
    TanhBwd => "tanh_bwd",
    /// SELU forward, element-wise.
    SeluFwd => "selu_fwd",
    /// SELU backward, element-wise.
    SeluBwd => "selu_bwd",
    /// Batch normalisation forward (batch statistics in training, running
    /// statistics in evaluation) on (batch, features).
    BatchnormFwd => "batchnorm_fwd",
    /// Batch normalisation backward (input, scale and shift gradients).
    BatchnormBwd => "batchnorm_bwd",
    /// Layer normalisation forward, per row of (batch, features).
    LayernormFwd => "layernorm_fwd",
    /// Layer normalisation backward.
    LayernormBwd => "layernorm_bwd",
    /// Dropout forward: draws a mask and scales, element-wise.
    DropoutFwd => "dropout_fwd",
    /// Dropout backward: applies the mask, element-wise.
    DropoutBwd => "dropout_bwd",
    /// Residual addition `y = x + f(x)` of a ResNet block, element-wise.
    ResidualAddFwd => "residual_add_fwd",
    /// Residual backward: adds the skip gradient, element-wise.
    ResidualAddBwd => "residual_add_bwd",
    /// Softmax + cross-entropy loss over (batch, classes) logits.
    SoftmaxXentFwd => "softmax_xent_fwd",
    /// Gradient of softmax + cross-entropy with respect to the logits.
    SoftmaxXentBwd => "softmax_xent_bwd",
    /// Mean squared error loss over (batch, 1) predictions.
    MseFwd => "mse_fwd",
    /// Gradient of the mean squared error.
    MseBwd => "mse_bwd",
    /// One AdamW step over every parameter of the model.
    AdamwStep => "adamw_step",
    /// One SGD-with-momentum step over every parameter of the model.
    SgdStep => "sgd_step",
}

impl KernelKind {
    /// Dense index of this kind, `0..KernelKind::ALL.len()`.
    pub fn as_index(self) -> usize {
        self as usize
    }
}

impl fmt::Display for KernelKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Serialize for KernelKind {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

/// Where kernel spans go.
pub trait SpanSink {
    /// Whether spans are wanted. When `false`, callers skip the clock reads
    /// entirely (so an untimed run pays nothing).
    fn enabled(&self) -> bool;
    /// Records one kernel execution.
    fn record(&mut self, kind: KernelKind, start: MonotonicNs, end: MonotonicNs);
    /// Hands buffered spans on (e.g. to energyd). Called at epoch ends and
    /// at the end of a run, never inside a timed step.
    fn flush(&mut self) {}
}

/// A sink that wants nothing: no clock is read.
#[derive(Debug, Default, Clone, Copy)]
pub struct NullSink;

impl SpanSink for NullSink {
    fn enabled(&self) -> bool {
        false
    }
    fn record(&mut self, _: KernelKind, _: MonotonicNs, _: MonotonicNs) {}
}

/// Reads the clock when the sink wants spans; `None` otherwise.
#[inline]
pub fn span_start(sink: &dyn SpanSink) -> Option<MonotonicNs> {
    if sink.enabled() {
        Some(MonotonicNs::now())
    } else {
        None
    }
}

/// Closes a span opened with [`span_start`].
#[inline]
pub fn span_end(sink: &mut dyn SpanSink, kind: KernelKind, start: Option<MonotonicNs>) {
    if let Some(start) = start {
        sink.record(kind, start, MonotonicNs::now());
    }
}

/// One recorded kernel execution.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KernelSpan {
    /// What ran.
    pub kind: KernelKind,
    /// Start, CLOCK_MONOTONIC ns.
    pub start: MonotonicNs,
    /// End, CLOCK_MONOTONIC ns.
    pub end: MonotonicNs,
}

/// Receives full span buffers from a [`SpanRecorder`].
pub trait SpanUploader {
    /// Takes a batch of spans recorded by thread `tid` of process `pid`.
    /// Errors are the uploader's to log; recording goes on regardless.
    fn upload(&mut self, pid: u32, tid: u32, spans: &[KernelSpan]);
}

/// Count and total time of one kernel kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct KernelTime {
    /// The kind.
    pub kind: KernelKind,
    /// Number of executions.
    pub count: u64,
    /// Sum of their durations, ns.
    pub total_ns: u64,
}

/// Buffers spans in a pre-allocated vector and keeps per-kind totals.
///
/// Invariant: `record` never allocates; when the buffer is full it is handed
/// to the uploader (or dropped, totals kept, when there is none) and reused.
pub struct SpanRecorder {
    buffer: Vec<KernelSpan>,
    totals: Vec<(u64, u64)>,
    uploader: Option<Box<dyn SpanUploader>>,
    pid: u32,
    tid: u32,
    recorded: u64,
}

/// Default buffer size: a few epochs of a small model on adult, 1.5 MiB.
pub const DEFAULT_SPAN_CAPACITY: usize = 65_536;

impl SpanRecorder {
    /// A recorder holding up to `capacity` spans between flushes, recording
    /// for the calling thread.
    pub fn new(capacity: usize, uploader: Option<Box<dyn SpanUploader>>) -> SpanRecorder {
        SpanRecorder {
            buffer: Vec::with_capacity(capacity.max(1)),
            totals: vec![(0, 0); KernelKind::ALL.len()],
            uploader,
            pid: std::process::id(),
            tid: nix::unistd::gettid().as_raw() as u32,
            recorded: 0,
        }
    }

    /// Per-kind counts and times since creation (kinds never seen omitted),
    /// largest total first.
    pub fn kernel_times(&self) -> Vec<KernelTime> {
        let mut out: Vec<KernelTime> = KernelKind::ALL
            .iter()
            .zip(&self.totals)
            .filter(|(_, (count, _))| *count > 0)
            .map(|(&kind, &(count, total_ns))| KernelTime {
                kind,
                count,
                total_ns,
            })
            .collect();
        out.sort_by_key(|k| std::cmp::Reverse(k.total_ns));
        out
    }

    /// Spans recorded since creation.
    pub fn recorded(&self) -> u64 {
        self.recorded
    }

    /// Spans currently buffered (not yet flushed).
    pub fn buffered(&self) -> &[KernelSpan] {
        &self.buffer
    }

    /// Whether spans are handed to an uploader.
    pub fn has_uploader(&self) -> bool {
        self.uploader.is_some()
    }

    fn drain(&mut self) {
        if let Some(up) = self.uploader.as_mut() {
            up.upload(self.pid, self.tid, &self.buffer);
        }
        self.buffer.clear();
    }
}

impl SpanSink for SpanRecorder {
    fn enabled(&self) -> bool {
        true
    }

    #[inline]
    fn record(&mut self, kind: KernelKind, start: MonotonicNs, end: MonotonicNs) {
        if self.buffer.len() == self.buffer.capacity() {
            self.drain();
        }
        self.buffer.push(KernelSpan { kind, start, end });
        let t = &mut self.totals[kind.as_index()];
        t.0 += 1;
        t.1 += end.saturating_sub(start);
        self.recorded += 1;
    }

    fn flush(&mut self) {
        if !self.buffer.is_empty() {
            self.drain();
        }
    }
}

/// Measures what recording one span costs on this machine: two clock reads
/// plus the buffer append, in ns, averaged over `iters` spans.
pub fn measure_record_cost_ns(iters: u32) -> f64 {
    let mut rec = SpanRecorder::new(iters as usize + 1, None);
    let t0 = MonotonicNs::now();
    for _ in 0..iters {
        let s = span_start(&rec);
        span_end(&mut rec, KernelKind::ReluFwd, s);
    }
    let t1 = MonotonicNs::now();
    t1.saturating_sub(t0) as f64 / f64::from(iters.max(1))
}

/// The shape a kernel runs on in [`run_isolated`].
///
/// Linear kernels map (batch, in) to (batch, out); element-wise kernels,
/// normalisations, dropout and losses run on a (batch, out) tensor; the
/// optimizer steps update an in×out weight matrix and an out bias; the batch
/// gather copies `batch` rows of width `in`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct KernelShape {
    /// Rows of the mini-batch.
    pub batch: usize,
    /// Input features.
    pub inputs: usize,
    /// Output features.
    pub outputs: usize,
}

/// One kernel execution a model will run: what, on which shape (see
/// [`KernelShape`] for how each kind reads it). Plans come from
/// `Layer::plan_forward`/`plan_backward` and [`crate::train::step_plan`],
/// and list exactly the spans the code records, in order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct PlannedKernel {
    /// The kernel.
    pub kind: KernelKind,
    /// Its shape.
    pub shape: KernelShape,
}

/// Result of [`run_isolated`].
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct IsolatedTiming {
    /// The kernel.
    pub kind: KernelKind,
    /// Its shape.
    pub shape: KernelShape,
    /// Timed executions (after one untimed warm-up).
    pub iters: u32,
    /// Mean time per execution, ns.
    pub mean_ns: f64,
    /// Fastest execution, ns.
    pub min_ns: u64,
    /// Floating-point operations per execution (multiply-add counted as 2).
    pub flops: u64,
}

/// Why an isolated run could not be made.
#[derive(Debug, thiserror::Error)]
pub enum IsolatedError {
    /// A dimension was zero.
    #[error("kernel shape {0:?} has a zero dimension")]
    EmptyShape(KernelShape),
    /// The thread pool could not be built.
    #[error("cannot build a thread pool of {threads} threads: {message}")]
    ThreadPool {
        /// Threads asked for.
        threads: usize,
        /// Cause.
        message: String,
    },
}

/// Runs one kernel `iters` times on random data of the given shape, with
/// `threads` threads, using the same code as training.
pub fn run_isolated(
    kind: KernelKind,
    shape: KernelShape,
    threads: usize,
    iters: u32,
) -> Result<IsolatedTiming, IsolatedError> {
    if shape.batch == 0 || shape.inputs == 0 || shape.outputs == 0 {
        return Err(IsolatedError::EmptyShape(shape));
    }
    crate::threads::set_gemm_threads(threads);
    let pool = isolated_pool(threads)?;
    pool.install(|| isolated_inner(kind, shape, iters.max(1)))
}

/// The pool `run_isolated` runs on, one per thread count, kept for the
/// life of the process: training builds its pool once and keeps it, and a
/// fresh pool per call would run every measured window on threads born at
/// its start, which an energy meter sampling a process's threads (energyd)
/// discovers only after they have already worked.
fn isolated_pool(threads: usize) -> Result<std::sync::Arc<rayon::ThreadPool>, IsolatedError> {
    use std::collections::HashMap;
    use std::sync::{Arc, Mutex, OnceLock};
    static POOLS: OnceLock<Mutex<HashMap<usize, Arc<rayon::ThreadPool>>>> = OnceLock::new();
    let mut pools = POOLS
        .get_or_init(Mutex::default)
        .lock()
        .unwrap_or_else(|e| e.into_inner());
    if let Some(pool) = pools.get(&threads) {
        return Ok(Arc::clone(pool));
    }
    let pool = crate::threads::build_pool(threads).map_err(|e| IsolatedError::ThreadPool {
        threads,
        message: e.to_string(),
    })?;
    let pool = Arc::new(pool);
    pools.insert(threads, Arc::clone(&pool));
    Ok(pool)
}

fn isolated_inner(
    kind: KernelKind,
    shape: KernelShape,
    iters: u32,
) -> Result<IsolatedTiming, IsolatedError> {
    use crate::model::layers::{self, Activation, Ctx, Layer, Mode};
    use crate::train::{LossKind, Optimizer, OptimizerKind};
    let KernelShape {
        batch,
        inputs,
        outputs,
    } = shape;
    let mut rng = SmallRng::seed_from_u64(7);
    let x_in = random_matrix(batch, inputs, &mut rng);
    let x_out = random_matrix(batch, outputs, &mut rng);
    let g_out = random_matrix(batch, outputs, &mut rng);
    let mut sink = NullSink;
    let mut times = Vec::with_capacity(iters as usize + 1);
    let mut time_it = |f: &mut dyn FnMut()| {
        for i in 0..=iters {
            let t0 = MonotonicNs::now();
            f();
            let t1 = MonotonicNs::now();
            if i > 0 {
                times.push(t1.saturating_sub(t0));
            }
        }
    };
    let bo = (batch * outputs) as u64;
    let flops;
    match kind {
        KernelKind::BatchGather => {
            let source = random_matrix(batch * 4, inputs, &mut rng);
            let idx: Vec<usize> = (0..batch).map(|i| (i * 7919) % (batch * 4)).collect();
            let mut dst = Array2::<f32>::zeros((batch, inputs));
            flops = 0;
            time_it(&mut || crate::train::gather_rows(&source, &idx, &mut dst));
        }
        KernelKind::LinearFwd | KernelKind::LinearBwdData | KernelKind::LinearBwdWeight => {
            let mut lin = layers::Linear::new(inputs, outputs, &mut rng);
            flops = 2 * (batch * inputs * outputs) as u64;
            let mut ctx = Ctx::new(&mut sink, 1);
            lin.forward(x_in.view(), Mode::Train, &mut ctx);
            match kind {
                KernelKind::LinearFwd => {
                    time_it(&mut || lin.forward(x_in.view(), Mode::Train, &mut ctx))
                }
                KernelKind::LinearBwdData => {
                    time_it(&mut || lin.backward_data(g_out.view(), &mut ctx))
                }
                // Cleared first, as the training loop does every step, so the
                // GEMM overwrites (β = 0) rather than accumulates.
                _ => time_it(&mut || {
                    lin.zero_grad();
                    lin.backward_weight(x_in.view(), g_out.view(), &mut ctx)
                }),
            }
        }
        KernelKind::ReluFwd
        | KernelKind::GeluFwd
        | KernelKind::SiluFwd
        | KernelKind::TanhFwd
        | KernelKind::SeluFwd
        | KernelKind::ReluBwd
        | KernelKind::GeluBwd
        | KernelKind::SiluBwd
        | KernelKind::TanhBwd
        | KernelKind::SeluBwd => {
            let act = match kind {
                KernelKind::ReluFwd | KernelKind::ReluBwd => Activation::Relu,
                KernelKind::GeluFwd | KernelKind::GeluBwd => Activation::Gelu,
                KernelKind::SiluFwd | KernelKind::SiluBwd => Activation::Silu,
                KernelKind::TanhFwd | KernelKind::TanhBwd => Activation::Tanh,
                _ => Activation::Selu,
            };
            let mut layer = layers::ActivationLayer::new(act, outputs);
            let mut ctx = Ctx::new(&mut sink, 1);
            layer.forward(x_out.view(), Mode::Train, &mut ctx);
            flops = bo * act.flops_per_element();
            if kind == act.forward_kind() {
                time_it(&mut || layer.forward(x_out.view(), Mode::Train, &mut ctx));
            } else {
                time_it(&mut || layer.backward(x_out.view(), g_out.view(), true, &mut ctx));
            }
        }
        KernelKind::BatchnormFwd
        | KernelKind::BatchnormBwd
        | KernelKind::LayernormFwd
        | KernelKind::LayernormBwd => {
            let mut layer: Box<dyn Layer> = match kind {
                KernelKind::BatchnormFwd | KernelKind::BatchnormBwd => {
                    Box::new(layers::BatchNorm::new(outputs))
                }
                _ => Box::new(layers::LayerNorm::new(outputs)),
            };
            let mut ctx = Ctx::new(&mut sink, 1);
            layer.forward(x_out.view(), Mode::Train, &mut ctx);
            flops = bo * 8;
            if matches!(kind, KernelKind::BatchnormFwd | KernelKind::LayernormFwd) {
                time_it(&mut || layer.forward(x_out.view(), Mode::Train, &mut ctx));
            } else {
                time_it(&mut || layer.backward(x_out.view(), g_out.view(), true, &mut ctx));
            }
        }
        KernelKind::DropoutFwd | KernelKind::DropoutBwd => {
            let mut layer = layers::Dropout::new(0.1, outputs);
            let mut ctx = Ctx::new(&mut sink, 1);
            layer.forward(x_out.view(), Mode::Train, &mut ctx);
            flops = bo;
            if kind == KernelKind::DropoutFwd {
                time_it(&mut || layer.forward(x_out.view(), Mode::Train, &mut ctx));
            } else {
                time_it(&mut || layer.backward(x_out.view(), g_out.view(), true, &mut ctx));
            }
        }
        KernelKind::ResidualAddFwd | KernelKind::ResidualAddBwd => {
            let mut dst = Array2::<f32>::zeros((batch, outputs));
            flops = bo;
            time_it(&mut || layers::residual_add(&mut dst, x_out.view(), g_out.view()));
        }
        KernelKind::SoftmaxXentFwd
        | KernelKind::SoftmaxXentBwd
        | KernelKind::MseFwd
        | KernelKind::MseBwd => {
            let regression = matches!(kind, KernelKind::MseFwd | KernelKind::MseBwd);
            let cols = if regression { 1 } else { outputs.max(2) };
            let logits = random_matrix(batch, cols, &mut rng);
            let targets: Array1<f32> = (0..batch)
                .map(|i| {
                    if regression {
                        i as f32 * 0.01
                    } else {
                        (i % cols) as f32
                    }
                })
                .collect();
            let mut loss = if regression {
                LossKind::Mse
            } else {
                LossKind::SoftmaxCrossEntropy
            }
            .build(batch, cols);
            let mut ctx = Ctx::new(&mut sink, 1);
            flops = (batch * cols * 6) as u64;
            if matches!(kind, KernelKind::SoftmaxXentFwd | KernelKind::MseFwd) {
                time_it(&mut || {
                    loss.forward(logits.view(), targets.view(), &mut ctx);
                });
            } else {
                time_it(&mut || loss.backward(logits.view(), targets.view(), &mut ctx));
            }
        }
        KernelKind::AdamwStep | KernelKind::SgdStep => {
            let mut lin = layers::Linear::new(inputs, outputs, &mut rng);
            let mut ctx = Ctx::new(&mut sink, 1);
            lin.forward(x_in.view(), Mode::Train, &mut ctx);
            lin.backward_weight(x_in.view(), g_out.view(), &mut ctx);
            let opt_kind = if kind == KernelKind::AdamwStep {
                OptimizerKind::AdamW
            } else {
                OptimizerKind::Sgd
            };
            let mut opt = Optimizer::new(opt_kind, 0.9, 0.999, 1e-4);
            flops = ((inputs + 1) * outputs * 10) as u64;
            time_it(&mut || opt.step(&mut lin, 1e-3, &mut ctx));
        }
    }
    let total: u64 = times.iter().sum();
    Ok(IsolatedTiming {
        kind,
        shape,
        iters,
        mean_ns: total as f64 / times.len().max(1) as f64,
        min_ns: times.iter().copied().min().unwrap_or(0),
        flops,
    })
}

fn random_matrix(rows: usize, cols: usize, rng: &mut SmallRng) -> Array2<f32> {
    use rand::Rng;
    Array2::from_shape_fn((rows, cols), |_| rng.gen_range(-1.0f32..1.0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_are_unique() {
        let mut seen = std::collections::HashSet::new();
        for (i, &k) in KernelKind::ALL.iter().enumerate() {
            assert_eq!(k.as_index(), i);
            assert_eq!(KernelKind::from_name(k.as_str()), Some(k));
            assert!(seen.insert(k.as_str()), "duplicate name {}", k);
        }
        assert_eq!(KernelKind::LinearFwd.as_str(), "linear_fwd");
        assert_eq!(KernelKind::from_name("nope"), None);
    }

    struct Collect(std::rc::Rc<std::cell::RefCell<Vec<KernelSpan>>>);
    impl SpanUploader for Collect {
        fn upload(&mut self, _: u32, _: u32, spans: &[KernelSpan]) {
            self.0.borrow_mut().extend_from_slice(spans);
        }
    }

    #[test]
    fn recorder_flushes_when_full_and_keeps_totals() {
        let got = std::rc::Rc::new(std::cell::RefCell::new(Vec::new()));
        let mut rec = SpanRecorder::new(4, Some(Box::new(Collect(got.clone()))));
        for i in 0..10u64 {
            rec.record(
                KernelKind::LinearFwd,
                MonotonicNs(i * 10),
                MonotonicNs(i * 10 + 3),
            );
        }
        assert_eq!(got.borrow().len(), 8);
        assert_eq!(rec.buffered().len(), 2);
        rec.flush();
        assert_eq!(got.borrow().len(), 10);
        let times = rec.kernel_times();
        assert_eq!(times.len(), 1);
        assert_eq!(times[0].count, 10);
        assert_eq!(times[0].total_ns, 30);
    }

    #[test]
    fn every_kind_runs_in_isolation() {
        let shape = KernelShape {
            batch: 8,
            inputs: 5,
            outputs: 3,
        };
        for &k in KernelKind::ALL {
            let t = run_isolated(k, shape, 1, 2).expect("runs");
            assert_eq!(t.iters, 2);
            assert!(t.mean_ns > 0.0, "{k} took no time");
        }
        assert!(
            run_isolated(KernelKind::ReluFwd, KernelShape { batch: 0, ..shape }, 1, 1).is_err()
        );
    }
}
