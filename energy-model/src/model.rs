//! Per-kernel cost models: what one call of a kernel type costs in time and
//! power as a function of its shape, fitted with linfa-linear.
//!
//! Each kernel type gets, per thread count, three linear models:
//! - **energy per call** (J) over [`TIME_FEATURES`]: multiply-accumulates
//!   of a dense layer (`batch·in·out`), input and output activation
//!   elements (`batch·in`, `batch·out`), weight elements (`in·out`), rows
//!   (`batch`, for losses over one column) and a constant (launch
//!   overhead): energy ~ FLOPs + bytes moved + launch overhead. Predictions
//!   use this model;
//! - **CPU time per call** (ns, the process's CPU time over all threads;
//!   see [`crate::microbench`] for why CPU time) over the same features;
//! - **power while running** (W per busy CPU, i.e. J per CPU-second) over
//!   [`POWER_FEATURES`]: a constant and `log2(batch·in·out)`, since larger
//!   calls keep more of the machine busy.
//!
//! Time and power say *why* a kernel costs what it does and give predicted
//! kernel time; their product is close to the energy model but noisier
//! (see [`KernelModel::energy_j`]). The features are generic over kernel
//! types (an element-wise kernel simply gets a zero coefficient on the
//! dense term), so a new kernel type the trainer emits needs no formula
//! here, only microbenchmarks.
//!
//! Fitting minimises *relative* error (each row is weighted by the inverse
//! of its target), because a network's energy is a sum over calls whose
//! costs span five orders of magnitude, and keeps coefficients
//! non-negative (a feature whose coefficient comes out negative is dropped
//! and the rest refitted), so predictions never go below zero when a shape
//! lies outside the calibrated grid.
//!
//! These types are stored verbatim in the calibration file (see
//! [`crate::file`]), which is why they derive serde.

use linfa::traits::Fit;
use linfa::DatasetBase;
use linfa_linear::LinearRegression;
use ndarray::{Array1, Array2};
use serde::{Deserialize, Serialize};

/// The coordinates a kernel model is fitted and evaluated at: a batch of
/// rows going from `in_width` to `out_width` features. A call's
/// [`nn_plan::KernelShape`] maps to these by [`FitShape::of`] (one
/// projection, used for observations and predictions alike); reference
/// kernels outside the trainer are measured at these coordinates directly.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FitShape {
    /// Rows in the batch.
    pub batch: u64,
    /// Input width.
    pub in_width: u64,
    /// Output width.
    pub out_width: u64,
}

impl FitShape {
    /// The fit coordinates of a call of the trainer:
    /// - a GEMM of `count` products (m×k)·(k×n): `(count·m, k, n)`, so
    ///   multiply-accumulates, input and output elements come out right;
    /// - a row-wise kernel over `rows` × `width`: `(rows, width, width)`;
    /// - `n` independent elements (an optimizer step over n parameters):
    ///   `(1, n, 1)`, so the weight-elements feature counts the parameters.
    pub fn of(shape: &nn_plan::KernelShape) -> FitShape {
        match *shape {
            nn_plan::KernelShape::Gemm { m, n, k, count } => FitShape {
                batch: count * m,
                in_width: k,
                out_width: n,
            },
            nn_plan::KernelShape::Rows { rows, width } => FitShape {
                batch: rows,
                in_width: width,
                out_width: width,
            },
            nn_plan::KernelShape::Elementwise { n } => FitShape {
                batch: 1,
                in_width: n,
                out_width: 1,
            },
        }
    }
}

impl FitShape {
    /// The call shape of class `class` whose fit coordinates these are
    /// (the inverse of [`FitShape::of`], for the microbenchmarks: a point
    /// of the grid, in fit coordinates, is run at this shape).
    pub fn call_shape(self, class: nn_plan::ShapeClass) -> nn_plan::KernelShape {
        match class {
            nn_plan::ShapeClass::Gemm => {
                nn_plan::KernelShape::dense(self.batch, self.in_width, self.out_width)
            }
            nn_plan::ShapeClass::Rows => nn_plan::KernelShape::Rows {
                rows: self.batch,
                width: self.in_width,
            },
            nn_plan::ShapeClass::Elementwise => {
                nn_plan::KernelShape::Elementwise { n: self.in_width }
            }
        }
    }
}

impl std::fmt::Display for FitShape {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}x{}->{}", self.batch, self.in_width, self.out_width)
    }
}

/// A quantity derived from a [`FitShape`] that a model is linear in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Feature {
    /// `batch · in · out`: multiply-accumulates of a dense layer.
    BatchInOut,
    /// `batch · in`: input activation elements.
    BatchIn,
    /// `batch · out`: output activation elements (element-wise kernels).
    BatchOut,
    /// `in · out`: weight elements (optimizer steps).
    InOut,
    /// `batch`: rows (losses over a single column).
    Batch,
    /// `1`: fixed cost per call (launch and dispatch overhead).
    One,
    /// `log2(batch · in · out)`: a size trend, for power.
    Log2BatchInOut,
}

/// Features of the time-per-call model.
pub const TIME_FEATURES: [Feature; 6] = [
    Feature::BatchInOut,
    Feature::BatchIn,
    Feature::BatchOut,
    Feature::InOut,
    Feature::Batch,
    Feature::One,
];

/// Features of the power model.
pub const POWER_FEATURES: [Feature; 2] = [Feature::One, Feature::Log2BatchInOut];

impl Feature {
    /// Value of the feature for a shape.
    pub fn value(self, shape: FitShape) -> f64 {
        let (b, i, o) = (
            shape.batch as f64,
            shape.in_width as f64,
            shape.out_width as f64,
        );
        match self {
            Feature::BatchInOut => b * i * o,
            Feature::BatchIn => b * i,
            Feature::BatchOut => b * o,
            Feature::InOut => i * o,
            Feature::Batch => b,
            Feature::One => 1.0,
            Feature::Log2BatchInOut => (b * i * o).max(1.0).log2(),
        }
    }

    /// Name as written in the calibration file.
    pub fn name(self) -> &'static str {
        match self {
            Feature::BatchInOut => "batch_in_out",
            Feature::BatchIn => "batch_in",
            Feature::BatchOut => "batch_out",
            Feature::InOut => "in_out",
            Feature::Batch => "batch",
            Feature::One => "one",
            Feature::Log2BatchInOut => "log2_batch_in_out",
        }
    }
}

/// How well a model fits the samples it was fitted on.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FitQuality {
    /// Samples fitted.
    pub samples: u32,
    /// Coefficient of determination on the original scale (1 is perfect;
    /// 1 also when all targets are equal and predicted exactly).
    pub r2: f64,
    /// Root-mean-square residual, in the target's unit.
    pub rmse: f64,
    /// Mean absolute residual relative to the target, percent.
    pub mean_abs_pct_error: f64,
    /// Largest absolute residual relative to the target, percent.
    pub max_abs_pct_error: f64,
}

impl FitQuality {
    /// Quality of `predicted` against `observed` (same length, observed > 0).
    pub fn of(observed: &[f64], predicted: &[f64]) -> FitQuality {
        let n = observed.len().min(predicted.len());
        if n == 0 {
            return FitQuality {
                samples: 0,
                r2: 0.0,
                rmse: 0.0,
                mean_abs_pct_error: 0.0,
                max_abs_pct_error: 0.0,
            };
        }
        let mean = observed[..n].iter().sum::<f64>() / n as f64;
        let mut ss_res = 0.0;
        let mut ss_tot = 0.0;
        let mut pct_sum = 0.0;
        let mut pct_max: f64 = 0.0;
        for (&y, &p) in observed[..n].iter().zip(&predicted[..n]) {
            ss_res += (y - p) * (y - p);
            ss_tot += (y - mean) * (y - mean);
            let pct = if y != 0.0 {
                100.0 * ((p - y) / y).abs()
            } else {
                0.0
            };
            pct_sum += pct;
            pct_max = pct_max.max(pct);
        }
        let r2 = if ss_tot > 0.0 {
            1.0 - ss_res / ss_tot
        } else if ss_res == 0.0 {
            1.0
        } else {
            0.0
        };
        FitQuality {
            samples: n as u32,
            r2,
            rmse: (ss_res / n as f64).sqrt(),
            mean_abs_pct_error: pct_sum / n as f64,
            max_abs_pct_error: pct_max,
        }
    }
}

/// A fitted linear model: `Σ coefficients[k] · features[k](shape)`.
///
/// Invariant: `features.len() == coefficients.len()`, every coefficient is
/// finite and non-negative (a feature dropped by the fit has 0).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LinearModel {
    /// The features, in coefficient order.
    pub features: Vec<Feature>,
    /// One coefficient per feature, in the target's unit per feature unit.
    pub coefficients: Vec<f64>,
    /// Fit quality on the samples.
    pub fit: FitQuality,
}

impl LinearModel {
    /// Prediction for one shape.
    pub fn predict(&self, shape: FitShape) -> f64 {
        self.features
            .iter()
            .zip(&self.coefficients)
            .map(|(f, c)| c * f.value(shape))
            .sum()
    }

    /// Coefficient of a feature (0 when the model does not use it).
    pub fn coefficient(&self, feature: Feature) -> f64 {
        self.features
            .iter()
            .position(|f| *f == feature)
            .map_or(0.0, |i| self.coefficients[i])
    }
}

/// Why a model could not be fitted.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum FitError {
    /// Fewer samples than features.
    #[error("{samples} samples cannot determine {features} coefficients")]
    NotEnoughSamples {
        /// Samples given.
        samples: usize,
        /// Features to fit.
        features: usize,
    },
    /// Shapes and targets differ in length.
    #[error("{shapes} shapes but {targets} targets")]
    LengthMismatch {
        /// Shapes given.
        shapes: usize,
        /// Targets given.
        targets: usize,
    },
    /// A target is zero, negative or not finite (relative weighting needs
    /// positive targets).
    #[error("target {index} is {value}: targets must be positive and finite")]
    BadTarget {
        /// Row.
        index: usize,
        /// Value.
        value: f64,
    },
    /// The least-squares solver failed.
    #[error("least squares failed: {0}")]
    Solver(String),
    /// No non-negative combination of the features fits.
    #[error("no non-negative model fits these samples")]
    NoNonNegativeFit,
}

/// Fits `target ≈ Σ c_k · feature_k(shape)` with `c_k ≥ 0`, minimising the
/// sum of squared *relative* residuals.
pub fn fit_linear(
    features: &[Feature],
    shapes: &[FitShape],
    targets: &[f64],
) -> Result<LinearModel, FitError> {
    if shapes.len() != targets.len() {
        return Err(FitError::LengthMismatch {
            shapes: shapes.len(),
            targets: targets.len(),
        });
    }
    // A feature equal to an earlier one on every sample cannot be told
    // apart from it (row-wise kernels have in = out, so `batch·in` is
    // `batch·out`; an optimizer step is (1, n, 1), so `batch·in·out`,
    // `batch·in` and `in·out` are all n): it is fitted once, under the
    // first name, and the others keep a zero coefficient.
    let column = |f: Feature| shapes.iter().map(|s| f.value(*s)).collect::<Vec<f64>>();
    let mut distinct: Vec<usize> = Vec::new();
    for (k, &f) in features.iter().enumerate() {
        let col = column(f);
        if !distinct.iter().any(|&d| column(features[d]) == col) {
            distinct.push(k);
        }
    }
    if shapes.len() < distinct.len() {
        return Err(FitError::NotEnoughSamples {
            samples: shapes.len(),
            features: distinct.len(),
        });
    }
    if let Some((index, &value)) = targets
        .iter()
        .enumerate()
        .find(|(_, t)| !(t.is_finite() && **t > 0.0))
    {
        return Err(FitError::BadTarget { index, value });
    }

    let mut active = distinct;
    let mut coefficients = vec![0.0; features.len()];
    loop {
        let solved = solve_relative(features, &active, shapes, targets)?;
        // Drop the most negative coefficient (in scaled terms, i.e. by its
        // weight in the fit) and refit: a small active-set loop that keeps
        // the model monotone in every feature.
        let worst = solved
            .iter()
            .enumerate()
            .filter(|(_, (_, scaled))| *scaled < 0.0)
            .min_by(|a, b| a.1 .1.total_cmp(&b.1 .1))
            .map(|(pos, _)| pos);
        match worst {
            Some(pos) if active.len() > 1 => {
                active.remove(pos);
            }
            Some(_) => return Err(FitError::NoNonNegativeFit),
            None => {
                for (&k, (c, _)) in active.iter().zip(&solved) {
                    coefficients[k] = *c;
                }
                break;
            }
        }
    }
    let mut model = LinearModel {
        features: features.to_vec(),
        coefficients,
        fit: FitQuality::of(&[], &[]),
    };
    let predicted: Vec<f64> = shapes.iter().map(|s| model.predict(*s)).collect();
    model.fit = FitQuality::of(targets, &predicted);
    Ok(model)
}

/// Weighted least squares over the active features. Returns, per active
/// feature, (coefficient in natural units, coefficient in scaled units).
fn solve_relative(
    features: &[Feature],
    active: &[usize],
    shapes: &[FitShape],
    targets: &[f64],
) -> Result<Vec<(f64, f64)>, FitError> {
    let n = shapes.len();
    let k = active.len();
    // Row i is divided by its target, so the target becomes 1 and the
    // residual is relative. Columns are then scaled to a maximum of 1 so the
    // solver sees numbers of one magnitude (raw features span 1 to 1e9).
    let mut x = Array2::<f64>::zeros((n, k));
    for (i, (shape, y)) in shapes.iter().zip(targets).enumerate() {
        for (j, &f) in active.iter().enumerate() {
            x[[i, j]] = features[f].value(*shape) / y;
        }
    }
    let mut scales = vec![1.0; k];
    for (j, scale) in scales.iter_mut().enumerate() {
        let max = x.column(j).iter().fold(0.0f64, |m, v| m.max(v.abs()));
        if max > 0.0 {
            *scale = max;
            x.column_mut(j).mapv_inplace(|v| v / max);
        }
    }
    let y = Array1::<f64>::ones(n);
    let dataset = DatasetBase::new(x, y);
    let fitted = LinearRegression::new()
        .with_intercept(false)
        .fit(&dataset)
        .map_err(|e| FitError::Solver(e.to_string()))?;
    let params = fitted.params();
    Ok((0..k)
        .map(|j| {
            let scaled = params[j];
            (scaled / scales[j], scaled)
        })
        .collect())
}

/// One microbenchmark result: a kernel type run many times at one shape and
/// thread count while energyd attributed its energy.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Observation {
    /// Kernel type name (the trainer's span name).
    pub kernel: String,
    /// Shape of every call.
    pub shape: FitShape,
    /// Threads the kernel ran with.
    pub threads: u32,
    /// Calls timed.
    pub calls: u64,
    /// Mean wall time of one call.
    pub wall_time_per_call_ns: f64,
    /// Mean process CPU time (all threads) of one call: the wall time
    /// scaled by the CPU time the process used per wall second over the
    /// window.
    pub cpu_time_per_call_ns: f64,
    /// Energy attributed to the process per CPU-second it used over the
    /// window (watts per busy CPU).
    pub power_w: f64,
}

impl Observation {
    /// Energy of one call: CPU time × attributed energy per CPU-second.
    pub fn energy_per_call_j(&self) -> f64 {
        self.cpu_time_per_call_ns * 1e-9 * self.power_w
    }
}

/// The models of one kernel type at one thread count.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KernelModel {
    /// Kernel type name (the trainer's span name).
    pub kernel: String,
    /// Threads the kernel ran with.
    pub threads: u32,
    /// Process CPU time (all threads) per call, nanoseconds.
    pub cpu_time_ns: LinearModel,
    /// Energy attributed per CPU-second while the kernel runs (watts per
    /// busy CPU).
    pub power_w: LinearModel,
    /// Energy per call, joules, fitted directly on the observed energy per
    /// call over [`TIME_FEATURES`]. Predictions use this model: the
    /// observed energy per call does not depend on whether time is counted
    /// in wall or CPU seconds, while the time and power models, fitted
    /// separately, each carry the scatter of the CPU share a loaded machine
    /// gave the process.
    pub energy_j: LinearModel,
}

impl KernelModel {
    /// Fits the models of `kernel` at `threads` from its observations
    /// (others in the slice are ignored).
    pub fn fit(
        kernel: &str,
        threads: u32,
        observations: &[Observation],
    ) -> Result<KernelModel, FitError> {
        let rows: Vec<&Observation> = observations
            .iter()
            .filter(|o| o.kernel == kernel && o.threads == threads)
            .collect();
        let shapes: Vec<FitShape> = rows.iter().map(|o| o.shape).collect();
        let times: Vec<f64> = rows.iter().map(|o| o.cpu_time_per_call_ns).collect();
        let powers: Vec<f64> = rows.iter().map(|o| o.power_w).collect();
        let energies: Vec<f64> = rows.iter().map(|o| o.energy_per_call_j()).collect();
        Ok(KernelModel {
            kernel: kernel.to_owned(),
            threads,
            cpu_time_ns: fit_linear(&TIME_FEATURES, &shapes, &times)?,
            power_w: fit_linear(&POWER_FEATURES, &shapes, &powers)?,
            energy_j: fit_linear(&TIME_FEATURES, &shapes, &energies)?,
        })
    }

    /// Predicted time of one call, nanoseconds.
    pub fn cpu_time_per_call_ns(&self, shape: FitShape) -> f64 {
        self.cpu_time_ns.predict(shape).max(0.0)
    }

    /// Predicted energy of one call, joules.
    pub fn energy_per_call_j(&self, shape: FitShape) -> f64 {
        self.energy_j.predict(shape).max(0.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};

    fn grid() -> Vec<FitShape> {
        let mut shapes = Vec::new();
        for &batch in &[16, 64, 256] {
            for &in_width in &[8, 64, 256] {
                for &out_width in &[4, 32, 512] {
                    shapes.push(FitShape {
                        batch,
                        in_width,
                        out_width,
                    });
                }
            }
        }
        shapes
    }

    #[test]
    fn recovers_known_time_coefficients_under_noise() {
        // 0.25 ns per MAC, 1.5 and 0.7 ns per input and output element,
        // 0.8 ns per weight, 20 ns per row, 4 µs launch overhead; ±2 %
        // multiplicative noise.
        let truth = [0.25, 1.5, 0.7, 0.8, 20.0, 4000.0];
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        // Batch 1 makes the weight term comparable to the dense term, so
        // every coefficient is identifiable (as in the calibration grid).
        let mut shapes = grid();
        shapes.extend(grid().into_iter().map(|s| FitShape { batch: 1, ..s }));
        let targets: Vec<f64> = shapes
            .iter()
            .map(|s| {
                let exact: f64 = TIME_FEATURES
                    .iter()
                    .zip(truth)
                    .map(|(f, c)| c * f.value(*s))
                    .sum();
                exact * (1.0 + rng.gen_range(-0.02..0.02))
            })
            .collect();
        let model = fit_linear(&TIME_FEATURES, &shapes, &targets).unwrap();
        for (feature, expected) in TIME_FEATURES.iter().zip(truth) {
            let got = model.coefficient(*feature);
            assert!(
                ((got - expected) / expected).abs() < 0.05,
                "{}: got {got}, expected {expected}",
                feature.name()
            );
        }
        assert!(model.fit.r2 > 0.99, "r2 {}", model.fit.r2);
        assert!(model.fit.mean_abs_pct_error < 2.5);
    }

    #[test]
    fn features_equal_on_every_sample_are_fitted_once() {
        // Optimizer steps: (1, n, 1) for 4 sizes, cost 500 ns + 2 ns per
        // parameter: 4 samples determine the 2 distinct features.
        let shapes: Vec<FitShape> = [1000u64, 5000, 20000, 90000]
            .iter()
            .map(|&n| FitShape {
                batch: 1,
                in_width: n,
                out_width: 1,
            })
            .collect();
        let times: Vec<f64> = shapes
            .iter()
            .map(|s| 500.0 + 2.0 * s.in_width as f64)
            .collect();
        let m = fit_linear(&TIME_FEATURES, &shapes, &times).expect("fits");
        for s in &shapes {
            let want = 500.0 + 2.0 * s.in_width as f64;
            assert!((m.predict(*s) - want).abs() < 1e-6 * want, "{s}");
        }
        assert_eq!(m.coefficient(Feature::InOut), 0.0);
    }

    #[test]
    fn fit_coordinates_invert_to_call_shapes() {
        use nn_plan::{KernelKind, KernelShape};
        for &kind in KernelKind::ALL {
            let call = KernelShape::in_dense_block(kind, 16, 12, 7);
            let fit = FitShape::of(&call);
            assert_eq!(fit.call_shape(kind.shape_class()), call, "{kind}");
        }
        let step = FitShape::of(&KernelShape::Elementwise { n: 91 });
        assert_eq!((step.batch, step.in_width, step.out_width), (1, 91, 1));
        let batched = FitShape::of(&KernelShape::Gemm {
            m: 4,
            n: 5,
            k: 6,
            count: 3,
        });
        assert_eq!(
            (batched.batch, batched.in_width, batched.out_width),
            (12, 6, 5)
        );
    }

    #[test]
    fn exact_data_is_recovered_exactly() {
        let shapes = grid();
        let targets: Vec<f64> = shapes
            .iter()
            .map(|s| 3.0 + 0.5 * Feature::Log2BatchInOut.value(*s))
            .collect();
        let model = fit_linear(&POWER_FEATURES, &shapes, &targets).unwrap();
        assert!((model.coefficient(Feature::One) - 3.0).abs() < 1e-9);
        assert!((model.coefficient(Feature::Log2BatchInOut) - 0.5).abs() < 1e-9);
        assert!((model.fit.r2 - 1.0).abs() < 1e-9);
    }

    #[test]
    fn negative_coefficients_are_dropped() {
        // Time falls with weights in this made-up law; the non-negative fit
        // must drop `in_out` rather than predict with a negative coefficient.
        let shapes = grid();
        let targets: Vec<f64> = shapes
            .iter()
            .map(|s| 1000.0 + 0.1 * Feature::BatchInOut.value(*s))
            .collect();
        let model = fit_linear(&TIME_FEATURES, &shapes, &targets).unwrap();
        assert!(model.coefficients.iter().all(|c| *c >= 0.0));
        assert!((model.coefficient(Feature::BatchInOut) - 0.1).abs() < 1e-6);
    }

    #[test]
    fn bad_inputs_are_errors() {
        let shapes = grid();
        assert!(matches!(
            fit_linear(&TIME_FEATURES, &shapes[..2], &[1.0, 2.0]),
            Err(FitError::NotEnoughSamples { .. })
        ));
        assert!(matches!(
            fit_linear(&TIME_FEATURES, &shapes, &[1.0]),
            Err(FitError::LengthMismatch { .. })
        ));
        let mut targets = vec![1.0; shapes.len()];
        targets[3] = f64::NAN;
        assert!(matches!(
            fit_linear(&TIME_FEATURES, &shapes, &targets),
            Err(FitError::BadTarget { index: 3, .. })
        ));
    }

    #[test]
    fn kernel_model_energy_is_time_times_power() {
        let observations: Vec<Observation> = grid()
            .into_iter()
            .map(|shape| Observation {
                kernel: "dense_forward".into(),
                shape,
                threads: 1,
                calls: 100,
                wall_time_per_call_ns: 2000.0 + 0.3 * Feature::BatchInOut.value(shape),
                cpu_time_per_call_ns: 2000.0 + 0.3 * Feature::BatchInOut.value(shape),
                power_w: 2.8,
            })
            .collect();
        let model = KernelModel::fit("dense_forward", 1, &observations).unwrap();
        let shape = FitShape {
            batch: 128,
            in_width: 100,
            out_width: 50,
        };
        let expected = (2000.0 + 0.3 * 128.0 * 100.0 * 50.0) * 1e-9 * 2.8;
        let got = model.energy_per_call_j(shape);
        assert!(
            ((got - expected) / expected).abs() < 1e-6,
            "{got} vs {expected}"
        );
        assert!(model.energy_j.fit.r2 > 0.999);
        // Observations of other kernels or thread counts are not used.
        assert!(KernelModel::fit("relu", 1, &observations).is_err());
    }
}
