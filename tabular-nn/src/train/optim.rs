//! Optimizers (AdamW, SGD with momentum) and the learning-rate schedule.
//!
//! One optimizer step over the whole model is one kernel (`adamw_step` or
//! `sgd_step`). Large parameter tensors are updated in parallel chunks on
//! the current rayon pool (the `--threads` pool).

use crate::kernels::{span_end, span_start, KernelKind};
use crate::model::layers::{Ctx, Layer};
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

pub use nn_plan::OptimizerKind;

/// Adam's ε (PyTorch's default).
const ADAM_EPS: f32 = 1e-8;

/// Parameter tensors at least this long are updated in parallel chunks.
const PAR_MIN_PARAMS: usize = 1 << 16;
const PAR_CHUNK: usize = 1 << 14;

/// Optimizer state: one moment buffer per parameter tensor (two for AdamW).
pub struct Optimizer {
    kind: OptimizerKind,
    /// AdamW β₁, or SGD momentum.
    beta1: f32,
    /// AdamW β₂ (unused by SGD).
    beta2: f32,
    /// Weight decay.
    weight_decay: f32,
    first: Vec<Vec<f32>>,
    second: Vec<Vec<f32>>,
    steps: u64,
}

impl Optimizer {
    /// An optimizer; `beta1` is SGD's momentum.
    pub fn new(kind: OptimizerKind, beta1: f32, beta2: f32, weight_decay: f32) -> Optimizer {
        Optimizer {
            kind,
            beta1,
            beta2,
            weight_decay,
            first: Vec::new(),
            second: Vec::new(),
            steps: 0,
        }
    }

    /// Steps taken.
    pub fn steps(&self) -> u64 {
        self.steps
    }

    /// Updates every parameter of `model` from its last gradients.
    pub fn step(&mut self, model: &mut dyn Layer, lr: f32, ctx: &mut Ctx) {
        let t = span_start(ctx.sink);
        self.steps += 1;
        let kind = self.kind;
        let (b1, b2, wd) = (self.beta1, self.beta2, self.weight_decay);
        let step = self.steps as i32;
        let (first, second) = (&mut self.first, &mut self.second);
        let mut i = 0;
        model.visit_parameters(&mut |p| {
            if first.len() <= i {
                first.push(vec![0.0; p.value.len()]);
                second.push(if kind == OptimizerKind::AdamW {
                    vec![0.0; p.value.len()]
                } else {
                    Vec::new()
                });
            }
            let wd = if p.decay { wd } else { 0.0 };
            let m = &mut first[i];
            match kind {
                OptimizerKind::AdamW => {
                    let v = &mut second[i];
                    let bc1 = 1.0 - b1.powi(step);
                    let bc2_sqrt = (1.0 - b2.powi(step)).sqrt();
                    let step_size = lr / bc1;
                    let decay = 1.0 - lr * wd;
                    let update = |w: &mut [f32], g: &[f32], m: &mut [f32], v: &mut [f32]| {
                        for (((w, &g), m), v) in
                            w.iter_mut().zip(g).zip(m.iter_mut()).zip(v.iter_mut())
                        {
                            *w *= decay;
                            *m = b1 * *m + (1.0 - b1) * g;
                            *v = b2 * *v + (1.0 - b2) * g * g;
                            *w -= step_size * *m / (v.sqrt() / bc2_sqrt + ADAM_EPS);
                        }
                    };
                    if p.value.len() >= PAR_MIN_PARAMS && rayon::current_num_threads() > 1 {
                        p.value
                            .par_chunks_mut(PAR_CHUNK)
                            .zip(p.grad.par_chunks(PAR_CHUNK))
                            .zip(m.par_chunks_mut(PAR_CHUNK))
                            .zip(v.par_chunks_mut(PAR_CHUNK))
                            .for_each(|(((w, g), m), v)| update(w, g, m, v));
                    } else {
                        update(p.value, p.grad, m, v);
                    }
                }
                OptimizerKind::Sgd => {
                    let first_step = step == 1;
                    let update = |w: &mut [f32], g: &[f32], m: &mut [f32]| {
                        for ((w, &g), m) in w.iter_mut().zip(g).zip(m.iter_mut()) {
                            let d = g + wd * *w;
                            // PyTorch starts the momentum buffer at the first gradient.
                            *m = if first_step { d } else { b1 * *m + d };
                            *w -= lr * *m;
                        }
                    };
                    if p.value.len() >= PAR_MIN_PARAMS && rayon::current_num_threads() > 1 {
                        p.value
                            .par_chunks_mut(PAR_CHUNK)
                            .zip(p.grad.par_chunks(PAR_CHUNK))
                            .zip(m.par_chunks_mut(PAR_CHUNK))
                            .for_each(|((w, g), m)| update(w, g, m));
                    } else {
                        update(p.value, p.grad, m);
                    }
                }
            }
            i += 1;
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
        fn visit_parameters(&mut self, f: &mut dyn FnMut(Param<'_>)) {
            f(Param {
                name: "w",
                value: &mut self.w,
                grad: &self.g,
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
