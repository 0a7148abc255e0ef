//! Energy of a whole network predicted from a calibration, without running it.
//!
//! A network is described by the kernels it emits: a [`KernelPlan`] is a
//! list of (kernel type, fit coordinates, number of calls) at one thread
//! count, and a [`NetworkPlan`] holds one plan for a whole training run and
//! one for inference over a known number of rows. Which kernels a network
//! emits is `nn_plan`'s answer (the plan the trainer's spans follow);
//! [`KernelPlan::from_calls`] turns it into the calibration's names and
//! coordinates, and this module sums model predictions over them. Kernel
//! names are strings here because a calibration also holds reference
//! kernels that are not the trainer's.
//!
//! Uncertainty: a model's error is systematic across calls of the same
//! kernel type, so within a type the relative fit error (the mean absolute
//! percentage residual of its energy fit) scales the type's whole energy;
//! across types the errors are taken as independent and added in
//! quadrature.

use crate::file::Calibration;
use crate::model::FitShape;
use nn_plan::{KernelCall, KernelKind, Pass, PlannedCalls, RunPlan};
use serde::{Deserialize, Serialize};
use shared::Provenance;

/// Energy a program spends around its kernels, per kernel call: span
/// recording, loop and slicing glue, what no microbenchmark isolates.
/// Fitted on whole calibration networks (never the validation ones) as
/// measured energy minus the kernels' predicted energy, per call.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OverheadModel {
    /// Threads the networks ran with.
    pub threads: u32,
    /// Energy per kernel call spent outside kernels, joules (≥ 0).
    pub j_per_call: f64,
    /// Phases of whole networks it was fitted on.
    pub samples: u32,
}

/// Calls of one kernel type at one shape.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlannedKernel {
    /// Kernel type (the trainer's span name).
    pub kernel: String,
    /// Shape of each call.
    pub shape: FitShape,
    /// Number of calls.
    pub calls: u64,
}

/// The kernels a piece of work emits, at one thread count.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct KernelPlan {
    /// Threads the kernels run with.
    pub threads: u32,
    /// Calls per (kernel type, shape); [`KernelPlan::add`] merges repeats.
    pub kernels: Vec<PlannedKernel>,
}

impl KernelPlan {
    /// An empty plan at `threads` threads.
    pub fn new(threads: u32) -> Self {
        Self {
            threads,
            kernels: Vec::new(),
        }
    }

    /// Adds `calls` calls of `kernel` at `shape`.
    pub fn add(&mut self, kernel: &str, shape: FitShape, calls: u64) {
        match self
            .kernels
            .iter_mut()
            .find(|k| k.kernel == kernel && k.shape == shape)
        {
            Some(k) => k.calls += calls,
            None => self.kernels.push(PlannedKernel {
                kernel: kernel.to_owned(),
                shape,
                calls,
            }),
        }
    }

    /// Multiplies every call count by `factor` (e.g. steps per epoch).
    pub fn repeated(&self, factor: u64) -> KernelPlan {
        KernelPlan {
            threads: self.threads,
            kernels: self
                .kernels
                .iter()
                .map(|k| PlannedKernel {
                    calls: k.calls * factor,
                    ..k.clone()
                })
                .collect(),
        }
    }

    /// Appends all calls of `other` (same thread count assumed).
    pub fn extend(&mut self, other: &KernelPlan) {
        for k in &other.kernels {
            self.add(&k.kernel, k.shape, k.calls);
        }
    }
}

impl KernelPlan {
    /// The calls of a trainer plan at `threads` threads, under the names
    /// and fit coordinates the calibration file uses. One call is priced as
    /// another kernel: an evaluation-mode `dropout_fwd` span covers only a
    /// copy, the work of `dropout_bwd` (no random draws, about a tenth of a
    /// training-mode forward), so it is priced as `dropout_bwd`.
    pub fn from_calls(threads: u32, calls: &PlannedCalls) -> KernelPlan {
        let mut plan = KernelPlan::new(threads);
        for (call, count) in &calls.calls {
            plan.add(priced_as(call).as_str(), FitShape::of(&call.shape), *count);
        }
        plan
    }
}

/// The kernel whose model prices `call` (see [`KernelPlan::from_calls`]).
pub fn priced_as(call: &KernelCall) -> KernelKind {
    match (call.kind, call.pass) {
        (KernelKind::DropoutFwd, Pass::Eval) => KernelKind::DropoutBwd,
        (kind, _) => kind,
    }
}

/// The kernels of a network's training run and of its inference.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetworkPlan {
    /// Every kernel call of the whole training run.
    pub training: KernelPlan,
    /// Every kernel call of inference over `inference_rows` rows.
    pub inference: KernelPlan,
    /// Rows `inference` covers.
    pub inference_rows: u64,
}

impl NetworkPlan {
    /// The priced form of a trainer's run plan.
    pub fn of(plan: &RunPlan) -> NetworkPlan {
        NetworkPlan {
            training: KernelPlan::from_calls(plan.threads, &plan.training),
            inference: KernelPlan::from_calls(plan.threads, &plan.inference),
            inference_rows: plan.inference_rows,
        }
    }
}

/// Predicted energy of one kernel type within a plan.
#[derive(Debug, Clone, PartialEq)]
pub struct KernelPrediction {
    /// Kernel type.
    pub kernel: String,
    /// Calls in the plan.
    pub calls: u64,
    /// Predicted time of those calls.
    pub cpu_time_ns: f64,
    /// Predicted energy of those calls.
    pub energy_j: f64,
}

/// Predicted energy of a plan.
#[derive(Debug, Clone, PartialEq)]
pub struct EnergyPrediction {
    /// Total predicted energy.
    pub energy_j: f64,
    /// One-sigma uncertainty from the fit residuals.
    pub uncertainty_j: f64,
    /// Part of `energy_j` spent around the kernels (see [`OverheadModel`]).
    pub overhead_j: f64,
    /// Total predicted kernel time.
    pub cpu_time_ns: f64,
    /// Provenance of the calibration the prediction comes from.
    pub provenance: Provenance,
    /// Per kernel type, sorted by name.
    pub per_kernel: Vec<KernelPrediction>,
}

impl EnergyPrediction {
    fn scaled(mut self, factor: f64) -> Self {
        self.energy_j *= factor;
        self.uncertainty_j *= factor;
        self.overhead_j *= factor;
        self.cpu_time_ns *= factor;
        for k in &mut self.per_kernel {
            k.energy_j *= factor;
            k.cpu_time_ns *= factor;
        }
        self
    }
}

/// Why a plan could not be predicted.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum PredictError {
    /// The calibration has no model of this kernel type.
    #[error("the calibration has no model of kernel {kernel:?} (calibrated kernels: {known}); recalibrate with the current trainer")]
    UnknownKernel {
        /// The kernel type.
        kernel: String,
        /// Kernel types it has, comma-separated.
        known: String,
    },
    /// The kernel type is calibrated, but not at this thread count.
    #[error("kernel {kernel:?} is calibrated at {available:?} threads, not {threads}; run `calibration run --threads {threads}`")]
    UnknownThreads {
        /// The kernel type.
        kernel: String,
        /// Threads asked for.
        threads: u32,
        /// Threads calibrated.
        available: Vec<u32>,
    },
    /// The inference plan covers no rows.
    #[error("the inference plan covers 0 rows")]
    NoRows,
}

impl Calibration {
    /// Predicted energy of every call in `plan`.
    pub fn predict_plan(&self, plan: &KernelPlan) -> Result<EnergyPrediction, PredictError> {
        let mut per_kernel: Vec<(KernelPrediction, f64)> = Vec::new();
        for planned in &plan.kernels {
            let model = self.model(&planned.kernel, plan.threads).ok_or_else(|| {
                let available = self.threads_of(&planned.kernel);
                if available.is_empty() {
                    PredictError::UnknownKernel {
                        kernel: planned.kernel.clone(),
                        known: self
                            .kernel_names()
                            .into_iter()
                            .collect::<Vec<_>>()
                            .join(", "),
                    }
                } else {
                    PredictError::UnknownThreads {
                        kernel: planned.kernel.clone(),
                        threads: plan.threads,
                        available,
                    }
                }
            })?;
            let calls = planned.calls as f64;
            let cpu_time_ns = model.cpu_time_per_call_ns(planned.shape) * calls;
            let energy_j = model.energy_per_call_j(planned.shape) * calls;
            let rel_error = model.energy_j.fit.mean_abs_pct_error / 100.0;
            match per_kernel
                .iter_mut()
                .find(|(k, _)| k.kernel == planned.kernel)
            {
                Some((k, err)) => {
                    k.calls += planned.calls;
                    k.cpu_time_ns += cpu_time_ns;
                    k.energy_j += energy_j;
                    *err += energy_j * rel_error;
                }
                None => per_kernel.push((
                    KernelPrediction {
                        kernel: planned.kernel.clone(),
                        calls: planned.calls,
                        cpu_time_ns,
                        energy_j,
                    },
                    energy_j * rel_error,
                )),
            }
        }
        per_kernel.sort_by(|a, b| a.0.kernel.cmp(&b.0.kernel));
        let uncertainty_j = per_kernel.iter().map(|(_, e)| e * e).sum::<f64>().sqrt();
        let per_kernel: Vec<KernelPrediction> = per_kernel.into_iter().map(|(k, _)| k).collect();
        let calls: u64 = plan.kernels.iter().map(|k| k.calls).sum();
        let overhead_j = self
            .overheads
            .iter()
            .find(|o| o.threads == plan.threads)
            .map_or(0.0, |o| o.j_per_call * calls as f64);
        Ok(EnergyPrediction {
            energy_j: per_kernel.iter().map(|k| k.energy_j).sum::<f64>() + overhead_j,
            overhead_j,
            cpu_time_ns: per_kernel.iter().map(|k| k.cpu_time_ns).sum(),
            uncertainty_j,
            provenance: self.provenance,
            per_kernel,
        })
    }

    /// Predicted energy of the network's whole training run.
    pub fn predict_training_energy_j(
        &self,
        plan: &NetworkPlan,
    ) -> Result<EnergyPrediction, PredictError> {
        self.predict_plan(&plan.training)
    }

    /// Predicted energy of inference over 1000 rows.
    pub fn predict_inference_energy_per_1000_rows_j(
        &self,
        plan: &NetworkPlan,
    ) -> Result<EnergyPrediction, PredictError> {
        if plan.inference_rows == 0 {
            return Err(PredictError::NoRows);
        }
        Ok(self
            .predict_plan(&plan.inference)?
            .scaled(1000.0 / plan.inference_rows as f64))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::file::tests::sample_calibration;

    fn shape(batch: u64, i: u64, o: u64) -> FitShape {
        FitShape {
            batch,
            in_width: i,
            out_width: o,
        }
    }

    #[test]
    fn plan_energy_is_the_sum_of_its_calls() {
        let cal = sample_calibration();
        let model = cal.model("dense_forward", 1).unwrap();
        let mut plan = KernelPlan::new(1);
        plan.add("dense_forward", shape(32, 10, 20), 3);
        plan.add("dense_forward", shape(32, 20, 2), 5);
        plan.add("dense_forward", shape(32, 10, 20), 1);
        assert_eq!(plan.kernels.len(), 2);
        let p = cal.predict_plan(&plan).unwrap();
        let expected = 4.0 * model.energy_per_call_j(shape(32, 10, 20))
            + 5.0 * model.energy_per_call_j(shape(32, 20, 2));
        // Plus the overhead: 1e-7 J for each of the 9 calls.
        assert!((p.overhead_j - 9e-7).abs() < 1e-18);
        let expected = expected + 9e-7;
        assert!((p.energy_j - expected).abs() < 1e-15 + 1e-12 * expected);
        assert_eq!(p.per_kernel.len(), 1);
        assert_eq!(p.per_kernel[0].calls, 9);
        assert_eq!(p.provenance, Provenance::Estimated);
        assert!(p.uncertainty_j >= 0.0 && p.uncertainty_j < p.energy_j);

        let doubled = cal.predict_plan(&plan.repeated(2)).unwrap();
        assert!((doubled.energy_j - 2.0 * p.energy_j).abs() < 1e-12);
    }

    #[test]
    fn inference_is_scaled_to_1000_rows() {
        let cal = sample_calibration();
        let mut inference = KernelPlan::new(1);
        inference.add("dense_forward", shape(250, 10, 20), 2);
        let plan = NetworkPlan {
            training: KernelPlan::new(1),
            inference: inference.clone(),
            inference_rows: 500,
        };
        let per_500 = cal.predict_plan(&inference).unwrap().energy_j;
        let per_1000 = cal
            .predict_inference_energy_per_1000_rows_j(&plan)
            .unwrap()
            .energy_j;
        assert!((per_1000 - 2.0 * per_500).abs() < 1e-12);
        let empty = NetworkPlan {
            inference_rows: 0,
            ..plan
        };
        assert_eq!(
            cal.predict_inference_energy_per_1000_rows_j(&empty),
            Err(PredictError::NoRows)
        );
    }

    #[test]
    fn unknown_kernels_and_threads_are_named() {
        let cal = sample_calibration();
        let mut plan = KernelPlan::new(1);
        plan.add("softmax", shape(8, 8, 8), 1);
        let err = cal.predict_plan(&plan).unwrap_err();
        assert!(err.to_string().contains("softmax"), "{err}");
        assert!(err.to_string().contains("dense_forward"), "{err}");

        let mut plan = KernelPlan::new(4);
        plan.add("dense_forward", shape(8, 8, 8), 1);
        let err = cal.predict_plan(&plan).unwrap_err();
        assert!(
            matches!(err, PredictError::UnknownThreads { threads: 4, .. }),
            "{err}"
        );
    }
}
