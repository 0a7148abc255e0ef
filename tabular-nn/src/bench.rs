//! Running one kernel in isolation, with the code training uses: the
//! calibration microbenchmarks every kind through [`run_isolated`].
//!
//! This module sits on top of the trainer (it builds layers, losses and
//! optimizers); nothing below imports it.

use crate::kernels::{KernelKind, KernelShape, NullSink};
use ndarray::{Array1, Array2};
use rand::rngs::SmallRng;
use rand::SeedableRng;
use serde::Serialize;
use shared::MonotonicNs;

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
    /// A dimension was zero (or an optimizer step over fewer than two
    /// parameters).
    #[error("kernel shape {0} has a zero dimension")]
    EmptyShape(KernelShape),
    /// The shape is not one calls of this kind have (or a batched GEMM,
    /// which no kernel of the trainer runs yet).
    #[error("kernel {kind} does not run at shape {shape}")]
    WrongShape {
        /// The kernel.
        kind: KernelKind,
        /// The shape asked for.
        shape: KernelShape,
    },
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
    let dims = dense_dims(kind, shape)?;
    let pool = isolated_pool(threads)?;
    pool.install(|| isolated_inner(kind, shape, dims, iters.max(1)))
}

/// The (rows, inputs, outputs) of the layer a call of `kind` at `shape`
/// is run in: a dense layer for GEMMs, a (rows, width) tensor for row-wise
/// kernels, and for an optimizer step over n parameters a dense layer of
/// n - 1 inputs and one output (exactly n parameters).
fn dense_dims(
    kind: KernelKind,
    shape: KernelShape,
) -> Result<(usize, usize, usize), IsolatedError> {
    if shape.is_empty() {
        return Err(IsolatedError::EmptyShape(shape));
    }
    if !shape.is(kind.shape_class()) {
        return Err(IsolatedError::WrongShape { kind, shape });
    }
    match shape {
        KernelShape::Gemm { m, n, k, count: 1 } => Ok((m as usize, k as usize, n as usize)),
        KernelShape::Gemm { .. } => Err(IsolatedError::WrongShape { kind, shape }),
        KernelShape::Rows { rows, width } => Ok((rows as usize, width as usize, width as usize)),
        KernelShape::Elementwise { n } if n >= 2 => Ok((1, n as usize - 1, 1)),
        KernelShape::Elementwise { .. } => Err(IsolatedError::EmptyShape(shape)),
    }
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
    (batch, inputs, outputs): (usize, usize, usize),
    iters: u32,
) -> Result<IsolatedTiming, IsolatedError> {
    use crate::model::layers::{self, Activation, Ctx, Layer, Mode};
    use crate::train::{LossKind, Optimizer, OptimizerKind};
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
        KernelKind::TokenizerFwd | KernelKind::TokenizerBwd => {
            // `batch` token rows of `outputs` features: samples of 8 tokens
            // (7 numeric features and [CLS]).
            use crate::model::ft::FeatureTokenizer;
            const TOKENS: usize = 8;
            let samples = (batch / TOKENS).max(1);
            let mut layer = FeatureTokenizer::new(&[1; TOKENS - 1], outputs, &mut rng);
            let x = random_matrix(samples, TOKENS - 1, &mut rng);
            let g = random_matrix(samples * TOKENS, outputs, &mut rng);
            let mut ctx = Ctx::new(&mut sink, 1);
            layer.forward(x.view(), Mode::Train, &mut ctx);
            flops = (samples * TOKENS * outputs * 2) as u64;
            if kind == KernelKind::TokenizerFwd {
                time_it(&mut || layer.forward(x.view(), Mode::Train, &mut ctx));
            } else {
                time_it(&mut || {
                    layer.zero_grad();
                    layer.backward(x.view(), g.view(), false, &mut ctx)
                });
            }
        }
        KernelKind::AttentionScoreFwd
        | KernelKind::AttentionScoreBwd
        | KernelKind::AttentionContextFwd
        | KernelKind::AttentionContextBwd => {
            // One (sample, head) product (batch×inputs)·(inputs×outputs) as
            // the attention layer runs it; backward is its two products.
            use ndarray::linalg::general_mat_mul;
            let a = random_matrix(batch, inputs, &mut rng);
            let b = random_matrix(inputs, outputs, &mut rng);
            let g = random_matrix(batch, outputs, &mut rng);
            let mut c = Array2::<f32>::zeros((batch, outputs));
            let mut da = Array2::<f32>::zeros((batch, inputs));
            let mut db = Array2::<f32>::zeros((inputs, outputs));
            let products = if matches!(
                kind,
                KernelKind::AttentionScoreFwd | KernelKind::AttentionContextFwd
            ) {
                time_it(&mut || general_mat_mul(1.0, &a, &b, 0.0, &mut c));
                1
            } else {
                time_it(&mut || {
                    general_mat_mul(1.0, &g, &b.t(), 0.0, &mut da);
                    general_mat_mul(1.0, &a.t(), &g, 0.0, &mut db);
                });
                2
            };
            flops = products * 2 * (batch * inputs * outputs) as u64;
        }
        KernelKind::AttentionSoftmaxFwd | KernelKind::AttentionSoftmaxBwd => {
            use crate::model::ft::{softmax_row, softmax_row_backward};
            let mut p = x_out.clone();
            p.rows_mut().into_iter().for_each(softmax_row);
            let mut g = g_out.clone();
            flops = bo * 4;
            if kind == KernelKind::AttentionSoftmaxFwd {
                time_it(&mut || {
                    p.rows_mut().into_iter().for_each(softmax_row);
                });
            } else {
                time_it(&mut || {
                    for (g, p) in g.rows_mut().into_iter().zip(p.rows()) {
                        softmax_row_backward(g, p);
                    }
                });
            }
        }
        KernelKind::RegluFwd | KernelKind::RegluBwd => {
            let mut layer = crate::model::ft::Reglu::new(outputs);
            let x = random_matrix(batch, 2 * outputs, &mut rng);
            let mut ctx = Ctx::new(&mut sink, 1);
            layer.forward(x.view(), Mode::Train, &mut ctx);
            flops = bo * 2;
            if kind == KernelKind::RegluFwd {
                time_it(&mut || layer.forward(x.view(), Mode::Train, &mut ctx));
            } else {
                time_it(&mut || layer.backward(x.view(), g_out.view(), true, &mut ctx));
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
    fn every_kind_runs_in_isolation() {
        for &k in KernelKind::ALL {
            let shape = KernelShape::in_dense_block(k, 8, 5, 3);
            let t = run_isolated(k, shape, 1, 2).expect("runs");
            assert_eq!(t.iters, 2);
            assert!(t.mean_ns > 0.0, "{k} took no time");
        }
        let empty = KernelShape::Rows { rows: 0, width: 3 };
        assert!(run_isolated(KernelKind::ReluFwd, empty, 1, 1).is_err());
        let gemm = KernelShape::dense(8, 5, 3);
        assert!(matches!(
            run_isolated(KernelKind::ReluFwd, gemm, 1, 1),
            Err(IsolatedError::WrongShape { .. })
        ));
    }
}
