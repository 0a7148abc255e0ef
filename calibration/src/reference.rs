//! Reference kernels: a dense layer's three GEMMs and ReLU, written
//! directly with ndarray, and a small MLP trained with exactly those
//! kernels.
//!
//! They exist to check the *method* (microbenchmarks → fitted models →
//! predicted network energy against energyd's measurement) independently
//! of the trainer, and to calibrate the pipeline on a machine where the
//! trainer is not built. Their names carry a `reference_` prefix so a
//! calibration made with them can never be mistaken for one of the
//! trainer's kernels: predicting a trainer plan from it fails with
//! "no model of kernel".

use crate::microbench::KernelRunner;
use energy_model::model::FitShape;
use energy_model::predict::KernelPlan;
use ndarray::linalg::general_mat_mul;
use ndarray::{Array2, Zip};
use shared::MonotonicNs;

/// Dense forward `Y = X·W`, GEMM (batch×in)·(in×out).
pub const LINEAR_FWD: &str = "reference_linear_fwd";
/// Backward to the input `dX = dY·Wᵀ`.
pub const LINEAR_BWD_DATA: &str = "reference_linear_bwd_data";
/// Backward to the weights `dW = Xᵀ·dY`.
pub const LINEAR_BWD_WEIGHT: &str = "reference_linear_bwd_weight";
/// ReLU forward on (batch, out).
pub const RELU_FWD: &str = "reference_relu_fwd";
/// ReLU backward on (batch, out).
pub const RELU_BWD: &str = "reference_relu_bwd";

/// Every reference kernel.
pub const KERNELS: [&str; 5] = [
    LINEAR_FWD,
    LINEAR_BWD_DATA,
    LINEAR_BWD_WEIGHT,
    RELU_FWD,
    RELU_BWD,
];

/// Deterministic pseudo-random matrix in [-1, 1) (no RNG state to thread
/// through; the values only need to be non-trivial).
fn matrix(rows: usize, cols: usize, salt: u64) -> Array2<f32> {
    Array2::from_shape_fn((rows, cols), |(r, c)| {
        let mut h = (r as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15)
            ^ (c as u64).wrapping_mul(0xC2B2_AE3D_27D4_EB4F)
            ^ salt;
        h ^= h >> 29;
        h = h.wrapping_mul(0xBF58_476D_1CE4_E5B9);
        h ^= h >> 32;
        (h % 2000) as f32 / 1000.0 - 1.0
    })
}

fn relu_fwd(x: &Array2<f32>, y: &mut Array2<f32>) {
    Zip::from(y).and(x).for_each(|y, &x| *y = x.max(0.0));
}

fn relu_bwd(x: &Array2<f32>, g: &Array2<f32>, out: &mut Array2<f32>) {
    Zip::from(out)
        .and(x)
        .and(g)
        .for_each(|o, &x, &g| *o = if x > 0.0 { g } else { 0.0 });
}

/// Runs the reference kernels in isolation.
#[derive(Debug, Default)]
pub struct ReferenceKernels;

impl KernelRunner for ReferenceKernels {
    fn run(
        &mut self,
        kernel: &str,
        shape: FitShape,
        _threads: u32,
        iters: u32,
    ) -> Result<f64, String> {
        let (b, i, o) = (
            shape.batch as usize,
            shape.in_width as usize,
            shape.out_width as usize,
        );
        if b == 0 || i == 0 || o == 0 {
            return Err(format!("shape {shape} has a zero dimension"));
        }
        let x = matrix(b, i, 1);
        let w = matrix(i, o, 2);
        let g = matrix(b, o, 3);
        let mut y = Array2::<f32>::zeros((b, o));
        let mut dx = Array2::<f32>::zeros((b, i));
        let mut dw = Array2::<f32>::zeros((i, o));
        let mut call: Box<dyn FnMut()> = match kernel {
            LINEAR_FWD => Box::new(|| general_mat_mul(1.0, &x, &w, 0.0, &mut y)),
            LINEAR_BWD_DATA => Box::new(|| general_mat_mul(1.0, &g, &w.t(), 0.0, &mut dx)),
            LINEAR_BWD_WEIGHT => Box::new(|| general_mat_mul(1.0, &x.t(), &g, 0.0, &mut dw)),
            RELU_FWD => Box::new(|| relu_fwd(&g, &mut y)),
            RELU_BWD => {
                let pre = g.clone();
                Box::new(move || relu_bwd(&pre, &g, &mut y))
            }
            other => return Err(format!("{other:?} is not a reference kernel")),
        };
        call(); // warm-up: first-touch page faults do not belong to the kernel
        let iters = iters.max(1);
        let t0 = MonotonicNs::now();
        for _ in 0..iters {
            call();
        }
        let t1 = MonotonicNs::now();
        Ok(t1.saturating_sub(t0) as f64 / f64::from(iters))
    }
}

/// A ReLU MLP trained with the reference kernels (forward and backward; no
/// optimizer update, which has no reference kernel).
pub struct ReferenceMlp {
    widths: Vec<usize>,
    weights: Vec<Array2<f32>>,
}

impl ReferenceMlp {
    /// An MLP with layer widths `widths` (input first, output last).
    pub fn new(widths: &[usize]) -> Self {
        let weights = widths
            .windows(2)
            .enumerate()
            .map(|(k, w)| matrix(w[0], w[1], 10 + k as u64).mapv(|v| v * 0.1))
            .collect();
        Self {
            widths: widths.to_vec(),
            weights,
        }
    }

    /// `mlp 14-64-64-2` style description.
    pub fn describe(&self) -> String {
        let w: Vec<String> = self.widths.iter().map(ToString::to_string).collect();
        format!("mlp {}", w.join("-"))
    }

    fn shape(&self, batch: usize, layer: usize) -> FitShape {
        FitShape {
            batch: batch as u64,
            in_width: self.widths[layer] as u64,
            out_width: self.widths[layer + 1] as u64,
        }
    }

    /// Kernels of one training step (forward + backward) at `batch` rows.
    pub fn training_step_plan(&self, batch: usize, threads: u32) -> KernelPlan {
        let mut plan = KernelPlan::new(threads);
        let layers = self.weights.len();
        for l in 0..layers {
            plan.add(LINEAR_FWD, self.shape(batch, l), 1);
            if l + 1 < layers {
                let s = self.shape(batch, l);
                plan.add(
                    RELU_FWD,
                    FitShape {
                        in_width: s.out_width,
                        ..s
                    },
                    1,
                );
                plan.add(
                    RELU_BWD,
                    FitShape {
                        in_width: s.out_width,
                        ..s
                    },
                    1,
                );
            }
            plan.add(LINEAR_BWD_WEIGHT, self.shape(batch, l), 1);
            if l > 0 {
                plan.add(LINEAR_BWD_DATA, self.shape(batch, l), 1);
            }
        }
        plan
    }

    /// Kernels of inference (forward only) over one batch of `batch` rows.
    pub fn inference_plan(&self, batch: usize, threads: u32) -> KernelPlan {
        let mut plan = KernelPlan::new(threads);
        let layers = self.weights.len();
        for l in 0..layers {
            plan.add(LINEAR_FWD, self.shape(batch, l), 1);
            if l + 1 < layers {
                let s = self.shape(batch, l);
                plan.add(
                    RELU_FWD,
                    FitShape {
                        in_width: s.out_width,
                        ..s
                    },
                    1,
                );
            }
        }
        plan
    }

    /// Runs `steps` training steps on a batch of `batch` rows (the
    /// kernels of [`ReferenceMlp::training_step_plan`], in order).
    pub fn train(&mut self, batch: usize, steps: u32) {
        let layers = self.weights.len();
        let x0 = matrix(batch, self.widths[0], 99);
        let mut pre: Vec<Array2<f32>> = (0..layers)
            .map(|l| Array2::zeros((batch, self.widths[l + 1])))
            .collect();
        let mut act: Vec<Array2<f32>> = pre.clone();
        let mut dw: Vec<Array2<f32>> = self
            .weights
            .iter()
            .map(|w| Array2::zeros(w.dim()))
            .collect();
        let mut grads: Vec<Array2<f32>> = (0..=layers)
            .map(|l| Array2::zeros((batch, self.widths[l])))
            .collect();
        let mut tmp: Vec<Array2<f32>> = pre.clone();
        for _ in 0..steps {
            for l in 0..layers {
                let input = if l == 0 { &x0 } else { &act[l - 1] };
                general_mat_mul(1.0, input, &self.weights[l], 0.0, &mut pre[l]);
                if l + 1 < layers {
                    relu_fwd(&pre[l], &mut act[l]);
                } else {
                    act[l].assign(&pre[l]);
                }
            }
            // Loss gradient stand-in: the output itself (d/dy of ½‖y‖²).
            grads[layers].assign(&act[layers - 1]);
            for l in (0..layers).rev() {
                if l + 1 < layers {
                    relu_bwd(&pre[l], &grads[l + 1], &mut tmp[l]);
                    grads[l + 1].assign(&tmp[l]);
                }
                let input = if l == 0 { &x0 } else { &act[l - 1] };
                general_mat_mul(1.0, &input.t(), &grads[l + 1], 0.0, &mut dw[l]);
                if l > 0 {
                    let (lo, hi) = grads.split_at_mut(l + 1);
                    general_mat_mul(1.0, &hi[0], &self.weights[l].t(), 0.0, &mut lo[l]);
                }
            }
        }
    }

    /// Runs inference over `batches` batches of `batch` rows.
    pub fn infer(&self, batch: usize, batches: u32) {
        let layers = self.weights.len();
        let x0 = matrix(batch, self.widths[0], 98);
        let mut pre: Vec<Array2<f32>> = (0..layers)
            .map(|l| Array2::zeros((batch, self.widths[l + 1])))
            .collect();
        let mut act = pre.clone();
        for _ in 0..batches {
            for l in 0..layers {
                let input = if l == 0 { &x0 } else { &act[l - 1] };
                general_mat_mul(1.0, input, &self.weights[l], 0.0, &mut pre[l]);
                if l + 1 < layers {
                    relu_fwd(&pre[l], &mut act[l]);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_reference_kernel_runs_and_unknown_is_refused() {
        let mut k = ReferenceKernels;
        let shape = FitShape {
            batch: 8,
            in_width: 5,
            out_width: 3,
        };
        for name in KERNELS {
            let ns = k.run(name, shape, 1, 3).unwrap();
            assert!(ns > 0.0, "{name}");
        }
        assert!(k.run("linear_fwd", shape, 1, 1).is_err());
        assert!(k
            .run(LINEAR_FWD, FitShape { batch: 0, ..shape }, 1, 1)
            .is_err());
    }

    #[test]
    fn mlp_plans_count_the_kernels_it_runs() {
        let mut mlp = ReferenceMlp::new(&[6, 8, 4, 2]);
        let plan = mlp.training_step_plan(16, 1);
        let calls = |name: &str| -> u64 {
            plan.kernels
                .iter()
                .filter(|k| k.kernel == name)
                .map(|k| k.calls)
                .sum()
        };
        assert_eq!(calls(LINEAR_FWD), 3);
        assert_eq!(calls(LINEAR_BWD_WEIGHT), 3);
        assert_eq!(calls(LINEAR_BWD_DATA), 2);
        assert_eq!(calls(RELU_FWD), 2);
        assert_eq!(calls(RELU_BWD), 2);
        assert_eq!(mlp.inference_plan(16, 1).kernels.len(), 5);
        mlp.train(16, 2);
        mlp.infer(16, 2);
        assert_eq!(mlp.describe(), "mlp 6-8-4-2");
    }
}
