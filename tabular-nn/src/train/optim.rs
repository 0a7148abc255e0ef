//! Optimizers (AdamW, SGD with momentum) and the learning-rate schedule.
//!
//! One optimizer step over the whole model is one kernel (`adamw_step` or
//! `sgd_step`). State is kept per parameter identity ([`ParamId`]), so it
//! follows a parameter through width changes and growth. Large parameter tensors are updated in parallel chunks on
//! the current rayon pool (the `--threads` pool).

use crate::kernels::{span_end, span_start, KernelKind};
use crate::model::layers::{Ctx, Layer, ParamId};
use crate::model::param::grown;
use ndarray::{s, Array2, Zip};
use rayon::prelude::*;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;

pub use nn_plan::OptimizerKind;

/// Adam's ε (PyTorch's default).
const ADAM_EPS: f32 = 1e-8;

/// Parameter tensors at least this long are updated in parallel chunks.
const PAR_MIN_PARAMS: usize = 1 << 16;
const PAR_CHUNK: usize = 1 << 14;

/// The state of one parameter tensor, at the largest shape it has had.
///
/// Invariant: element `(i, j)` of the moments belongs to element `(i, j)`
/// of the parameter. Parameters only change shape by growing (appending
/// rows or columns) or by running on a leading block, both of which keep
/// every element at its `(i, j)`, so the moments are grown with zeros or
/// used through their leading block and never shift.
#[derive(Debug, Clone)]
pub struct ParamState {
    /// AdamW's first moment, or SGD's momentum buffer.
    pub first: Array2<f32>,
    /// AdamW's second moment (empty for SGD).
    pub second: Array2<f32>,
    /// Steps this tensor took (for Adam's bias correction and SGD's first
    /// step), as PyTorch counts per tensor.
    pub steps: u64,
}

impl ParamState {
    fn new(kind: OptimizerKind, rows: usize, cols: usize) -> ParamState {
        ParamState {
            first: Array2::zeros((rows, cols)),
            second: match kind {
                OptimizerKind::AdamW => Array2::zeros((rows, cols)),
                OptimizerKind::Sgd => Array2::zeros((0, 0)),
            },
            steps: 0,
        }
    }

    /// Makes the moments cover `(rows, cols)`, zero-padding new cells.
    fn cover(&mut self, kind: OptimizerKind, rows: usize, cols: usize) {
        let (r, c) = self.first.dim();
        if rows <= r && cols <= c {
            return;
        }
        let (nr, nc) = (rows.max(r), cols.max(c));
        let pad = |a: &Array2<f32>| grown(a.view(), nr, nc, |_, _| 0.0);
        self.first = pad(&self.first);
        if kind == OptimizerKind::AdamW {
            self.second = pad(&self.second);
        }
    }
}

/// Optimizer state: moments per parameter tensor, keyed by [`ParamId`].
///
/// A step updates the parameters as the model shows them, at their active
/// widths: stepping a supernet at full width updates every weight (with
/// the gradients that every child accumulated, zero where none reached);
/// stepping a child updates only its leading blocks, with the leading
/// blocks of the moments.
pub struct Optimizer {
    kind: OptimizerKind,
    /// AdamW β₁, or SGD momentum.
    beta1: f32,
    /// AdamW β₂ (unused by SGD).
    beta2: f32,
    /// Weight decay.
    weight_decay: f32,
    state: HashMap<ParamId, ParamState>,
    steps: u64,
}

/// One AdamW element update.
#[derive(Clone, Copy)]
struct AdamStep {
    b1: f32,
    b2: f32,
    decay: f32,
    step_size: f32,
    bc2_sqrt: f32,
}

impl AdamStep {
    #[inline(always)]
    fn apply(self, w: &mut f32, g: f32, m: &mut f32, v: &mut f32) {
        *w *= self.decay;
        *m = self.b1 * *m + (1.0 - self.b1) * g;
        *v = self.b2 * *v + (1.0 - self.b2) * g * g;
        *w -= self.step_size * *m / (v.sqrt() / self.bc2_sqrt + ADAM_EPS);
    }
}

/// One SGD element update.
#[derive(Clone, Copy)]
struct SgdStep {
    momentum: f32,
    wd: f32,
    lr: f32,
    first_step: bool,
}

impl SgdStep {
    #[inline(always)]
    fn apply(self, w: &mut f32, g: f32, m: &mut f32) {
        let d = g + self.wd * *w;
        // PyTorch starts the momentum buffer at the first gradient.
        *m = if self.first_step {
            d
        } else {
            self.momentum * *m + d
        };
        *w -= self.lr * *m;
    }
}

impl Optimizer {
    /// An optimizer; `beta1` is SGD's momentum.
    pub fn new(kind: OptimizerKind, beta1: f32, beta2: f32, weight_decay: f32) -> Optimizer {
        Optimizer {
            kind,
            beta1,
            beta2,
            weight_decay,
            state: HashMap::new(),
            steps: 0,
        }
    }

    /// Steps taken.
    pub fn steps(&self) -> u64 {
        self.steps
    }

    /// The state of parameter `id` (`None` before its first step).
    pub fn state(&self, id: ParamId) -> Option<&ParamState> {
        self.state.get(&id)
    }

    /// The state of parameter `id`, mutable (neuron splitting copies a
    /// split unit's moments to its offspring).
    pub fn state_mut(&mut self, id: ParamId) -> Option<&mut ParamState> {
        self.state.get_mut(&id)
    }

    /// Sets the state of parameter `id` (resuming a training from states
    /// [`Optimizer::state`] gave at the same shapes: a supernet's
    /// checkpoint).
    pub fn set_state(&mut self, id: ParamId, state: ParamState) {
        self.state.insert(id, state);
    }

    /// Forgets the state of parameters not in `keep` (after layers were
    /// removed).
    pub fn retain(&mut self, keep: &dyn Fn(ParamId) -> bool) {
        self.state.retain(|&id, _| keep(id));
    }

    /// Updates every parameter of `model` from its accumulated gradients.
    pub fn step(&mut self, model: &mut dyn Layer, lr: f32, ctx: &mut Ctx) {
        let t = span_start(ctx.sink);
        self.steps += 1;
        let kind = self.kind;
        let (b1, b2, wd) = (self.beta1, self.beta2, self.weight_decay);
        let state = &mut self.state;
        model.visit_parameters(&mut |mut p| {
            let (rows, cols) = p.value.dim();
            let st = state
                .entry(p.id)
                .or_insert_with(|| ParamState::new(kind, rows, cols));
            st.cover(kind, rows, cols);
            st.steps += 1;
            let step = st.steps.min(i32::MAX as u64) as i32;
            let wd = if p.decay { wd } else { 0.0 };
            let par = p.value.len() >= PAR_MIN_PARAMS && rayon::current_num_threads() > 1;
            let mut m = st.first.slice_mut(s![..rows, ..cols]);
            match kind {
                OptimizerKind::AdamW => {
                    let bc1 = 1.0 - b1.powi(step);
                    let up = AdamStep {
                        b1,
                        b2,
                        decay: 1.0 - lr * wd,
                        step_size: lr / bc1,
                        bc2_sqrt: (1.0 - b2.powi(step)).sqrt(),
                    };
                    let mut v = st.second.slice_mut(s![..rows, ..cols]);
                    let update = |w: &mut [f32], g: &[f32], m: &mut [f32], v: &mut [f32]| {
                        for (((w, &g), m), v) in
                            w.iter_mut().zip(g).zip(m.iter_mut()).zip(v.iter_mut())
                        {
                            up.apply(w, g, m, v);
                        }
                    };
                    // Full width: four contiguous slices, as before widths.
                    match (
                        p.value.as_slice_mut(),
                        p.grad.as_slice(),
                        m.as_slice_mut(),
                        v.as_slice_mut(),
                    ) {
                        (Some(w), Some(g), Some(m), Some(v)) if par => w
                            .par_chunks_mut(PAR_CHUNK)
                            .zip(g.par_chunks(PAR_CHUNK))
                            .zip(m.par_chunks_mut(PAR_CHUNK))
                            .zip(v.par_chunks_mut(PAR_CHUNK))
                            .for_each(|(((w, g), m), v)| update(w, g, m, v)),
                        (Some(w), Some(g), Some(m), Some(v)) => update(w, g, m, v),
                        _ => Zip::from(&mut p.value)
                            .and(&p.grad)
                            .and(&mut m)
                            .and(&mut v)
                            .for_each(|w, &g, m, v| up.apply(w, g, m, v)),
                    }
                }
                OptimizerKind::Sgd => {
                    let up = SgdStep {
                        momentum: b1,
                        wd,
                        lr,
                        first_step: step == 1,
                    };
                    let update = |w: &mut [f32], g: &[f32], m: &mut [f32]| {
                        for ((w, &g), m) in w.iter_mut().zip(g).zip(m.iter_mut()) {
                            up.apply(w, g, m);
                        }
                    };
                    match (p.value.as_slice_mut(), p.grad.as_slice(), m.as_slice_mut()) {
                        (Some(w), Some(g), Some(m)) if par => w
                            .par_chunks_mut(PAR_CHUNK)
                            .zip(g.par_chunks(PAR_CHUNK))
                            .zip(m.par_chunks_mut(PAR_CHUNK))
                            .for_each(|((w, g), m)| update(w, g, m)),
                        (Some(w), Some(g), Some(m)) => update(w, g, m),
                        _ => Zip::from(&mut p.value)
                            .and(&p.grad)
                            .and(&mut m)
                            .for_each(|w, &g, m| up.apply(w, g, m)),
                    }
                }
            }
        });
        let kernel = match kind {
            OptimizerKind::AdamW => KernelKind::AdamwStep,
            OptimizerKind::Sgd => KernelKind::SgdStep,
        };
        span_end(ctx.sink, kernel, t);
    }
}

/// How the learning rate changes over training.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Schedule {
    /// Linear warm-up, then constant.
    Constant,
    /// Linear warm-up, then cosine decay to zero at the last step.
    Cosine,
}

impl Schedule {
    /// Parses `constant` or `cosine`.
    pub fn parse(name: &str) -> Option<Schedule> {
        match name.to_ascii_lowercase().as_str() {
            "constant" | "none" => Some(Schedule::Constant),
            "cosine" | "cos" => Some(Schedule::Cosine),
            _ => None,
        }
    }

    /// Learning rate of step `step` (0-based) of `total` steps with
    /// `warmup` warm-up steps.
    pub fn lr(self, base: f32, step: usize, total: usize, warmup: usize) -> f32 {
        if step < warmup {
            return base * (step + 1) as f32 / warmup as f32;
        }
        match self {
            Schedule::Constant => base,
            Schedule::Cosine => {
                let span = total.saturating_sub(warmup).max(1) as f32;
                let progress = ((step - warmup) as f32 / span).min(1.0);
                0.5 * base * (1.0 + (std::f32::consts::PI * progress).cos())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::NullSink;
    use crate::model::layers::Param;
    use ndarray::ArrayView2;

    /// A "layer" holding one parameter vector whose gradient is set by hand:
    /// enough to check the update rules against PyTorch's formulas.
    struct Vector {
        id: ParamId,
        w: Vec<f32>,
        g: Vec<f32>,
    }
    impl Layer for Vector {
        fn describe(&self) -> String {
            "vector".into()
        }
        fn out_dim(&self) -> usize {
            0
        }
        fn forward(&mut self, _: ArrayView2<f32>, _: crate::model::layers::Mode, _: &mut Ctx) {}
        fn output(&self) -> ArrayView2<'_, f32> {
            unreachable!("not used")
        }
        fn backward(&mut self, _: ArrayView2<f32>, _: ArrayView2<f32>, _: bool, _: &mut Ctx) {}
        fn grad_input(&self) -> ArrayView2<'_, f32> {
            unreachable!("not used")
        }
        fn kind(&self) -> crate::model::layers::LayerKind {
            crate::model::layers::LayerKind::Other
        }
        fn layer_ref(&mut self) -> crate::model::layers::LayerRef<'_> {
            crate::model::layers::LayerRef::Other(self)
        }
        fn zero_grad(&mut self) {}
        fn visit_parameters(&mut self, f: &mut dyn FnMut(Param<'_>)) {
            let n = self.w.len();
            f(Param {
                id: self.id,
                name: "w",
                value: ndarray::ArrayViewMut2::from_shape((1, n), &mut self.w).expect("1×n"),
                grad: ArrayView2::from_shape((1, n), &self.g).expect("1×n"),
                decay: true,
            });
        }
        fn flops_per_row(&self) -> (u64, u64) {
            (0, 0)
        }
    }

    #[test]
    fn adamw_first_step_moves_by_lr_and_decays() {
        let mut sink = NullSink;
        let mut ctx = Ctx::new(&mut sink, 0);
        let mut v = Vector {
            id: ParamId::fresh(),
            w: vec![1.0, -2.0],
            g: vec![0.5, -3.0],
        };
        let mut opt = Optimizer::new(OptimizerKind::AdamW, 0.9, 0.999, 0.1);
        opt.step(&mut v, 0.01, &mut ctx);
        // First Adam step: m̂/√v̂ = sign(g); decay multiplies by 1 − lr·wd.
        let expect = [1.0 * (1.0 - 0.001) - 0.01, -2.0 * (1.0 - 0.001) + 0.01];
        for (w, e) in v.w.iter().zip(expect) {
            assert!((w - e).abs() < 1e-5, "{w} vs {e}");
        }
    }

    #[test]
    fn sgd_momentum_accumulates() {
        let mut sink = NullSink;
        let mut ctx = Ctx::new(&mut sink, 0);
        let mut v = Vector {
            id: ParamId::fresh(),
            w: vec![1.0],
            g: vec![1.0],
        };
        let mut opt = Optimizer::new(OptimizerKind::Sgd, 0.9, 0.0, 0.0);
        opt.step(&mut v, 0.1, &mut ctx);
        assert!((v.w[0] - 0.9).abs() < 1e-6);
        opt.step(&mut v, 0.1, &mut ctx);
        // buffer = 0.9·1 + 1 = 1.9
        assert!((v.w[0] - (0.9 - 0.19)).abs() < 1e-6);
    }

    #[test]
    fn cosine_schedule_warms_up_then_decays_to_zero() {
        let s = Schedule::Cosine;
        assert!((s.lr(1.0, 0, 100, 10) - 0.1).abs() < 1e-6);
        assert!((s.lr(1.0, 9, 100, 10) - 1.0).abs() < 1e-6);
        assert!((s.lr(1.0, 10, 100, 10) - 1.0).abs() < 1e-6);
        assert!((s.lr(1.0, 55, 100, 10) - 0.5).abs() < 1e-6);
        assert!(s.lr(1.0, 100, 100, 10) < 1e-6);
        assert_eq!(Schedule::Constant.lr(0.5, 50, 100, 0), 0.5);
    }
}
