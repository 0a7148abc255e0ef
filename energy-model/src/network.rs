//! Pricing a whole network: a [`NetworkRun`] (model, data sizes, run
//! settings) → its `nn_plan` run plan → predicted training energy and
//! inference energy per 1000 rows.
//!
//! The plan is `nn_plan`'s, the one the trainer's spans follow (checked
//! against a real run by tabular-nn's `plan_matches_training` test), so
//! what is priced is what is trained; the optimizer step is one call over
//! every parameter, as the trainer records it, priced at its fit
//! coordinates `(1, parameters, 1)`.

use crate::file::Calibration;
use crate::predict::{NetworkPlan, PredictError};
use nn_plan::{DatasetShape, ModelSpec, PlanError, RunPlan, RunShape};
use serde::{Deserialize, Serialize};
use shared::Provenance;

/// What decides the kernels of a training run and of its inference.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NetworkRun {
    /// The model.
    pub model: ModelSpec,
    /// The data's sizes.
    pub data: DatasetShape,
    /// Optimizer, batch sizes, epochs, threads.
    pub run: RunShape,
}

impl NetworkRun {
    /// The run's kernel plan.
    pub fn plan(&self) -> Result<RunPlan, PlanError> {
        RunPlan::new(&self.model, &self.data, &self.run)
    }
}

/// Predicted energy of a network: its whole training run, and inference
/// per 1000 rows.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NetworkEnergyPrediction {
    /// Energy of the whole training run (all epochs of the run, validation
    /// passes included).
    pub training_j: f64,
    /// One-sigma uncertainty of `training_j` from the fit residuals.
    pub training_uncertainty_j: f64,
    /// Predicted kernel time of the training run.
    pub training_cpu_time_ns: f64,
    /// Inference energy per 1000 rows (eval batches of the run).
    pub inference_j_per_1000_rows: f64,
    /// One-sigma uncertainty of `inference_j_per_1000_rows`.
    pub inference_uncertainty_j_per_1000_rows: f64,
    /// Predicted kernel time of inference over 1000 rows.
    pub inference_cpu_time_ns_per_1000_rows: f64,
    /// Provenance of the energy the calibration was fitted on. A
    /// prediction itself is never a measurement; callers label it so.
    #[serde(with = "crate::fingerprint::provenance_label")]
    pub provenance: Provenance,
}

/// Why a network's energy could not be predicted.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum NetworkPredictError {
    /// The run has no kernel plan.
    #[error(transparent)]
    Plan(#[from] PlanError),
    /// The calibration cannot price a kernel of the plan.
    #[error(transparent)]
    Predict(#[from] PredictError),
}

impl Calibration {
    /// Predicted training energy and inference energy per 1000 rows of a
    /// run plan, without running it.
    pub fn predict_run(&self, plan: &RunPlan) -> Result<NetworkEnergyPrediction, PredictError> {
        let plan = NetworkPlan::of(plan);
        let training = self.predict_training_energy_j(&plan)?;
        let inference = self.predict_inference_energy_per_1000_rows_j(&plan)?;
        Ok(NetworkEnergyPrediction {
            training_j: training.energy_j,
            training_uncertainty_j: training.uncertainty_j,
            training_cpu_time_ns: training.cpu_time_ns,
            inference_j_per_1000_rows: inference.energy_j,
            inference_uncertainty_j_per_1000_rows: inference.uncertainty_j,
            inference_cpu_time_ns_per_1000_rows: inference.cpu_time_ns,
            provenance: self.provenance,
        })
    }

    /// [`Calibration::predict_run`] of a run's plan.
    pub fn predict_network(
        &self,
        network: &NetworkRun,
    ) -> Result<NetworkEnergyPrediction, NetworkPredictError> {
        Ok(self.predict_run(&network.plan()?)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{FitShape, KernelModel, Observation};
    use crate::predict::KernelPlan;
    use nn_plan::{Activation, Backbone, KernelKind, Norm, OptimizerKind, Pass};

    fn network(dropout: f32) -> NetworkRun {
        NetworkRun {
            model: ModelSpec {
                backbone: Backbone::Mlp {
                    widths: vec![16, 8],
                },
                activation: Activation::Relu,
                dropout,
                norm: Norm::Batch,
            },
            data: DatasetShape {
                inputs: 6,
                outputs: 2,
                regression: false,
                train_rows: 100,
                val_rows: 20,
                test_rows: 40,
            },
            run: RunShape {
                optimizer: OptimizerKind::AdamW,
                batch_size: 32,
                eval_batch_size: 64,
                epochs: 3,
                threads: 1,
            },
        }
    }

    /// A calibration where every kernel costs 1 µJ per call plus 1 nJ per
    /// unit of its `batch_in` feature.
    fn flat_calibration() -> Calibration {
        let mut cal = crate::file::tests::sample_calibration();
        cal.overheads.clear();
        cal.kernels = KernelKind::ALL
            .iter()
            .map(|k| {
                let obs: Vec<Observation> =
                    [(4u64, 3u64), (16, 9), (64, 2), (8, 40), (32, 5), (2, 7)]
                        .iter()
                        .map(|&(b, w)| Observation {
                            kernel: k.as_str().into(),
                            shape: FitShape {
                                batch: b,
                                in_width: w,
                                out_width: w + 1,
                            },
                            threads: 1,
                            calls: 10,
                            wall_time_per_call_ns: 1000.0 + (b * w) as f64,
                            cpu_time_per_call_ns: 1000.0 + (b * w) as f64,
                            power_w: 1.0,
                        })
                        .collect();
                KernelModel::fit(k.as_str(), 1, &obs).unwrap()
            })
            .collect();
        cal
    }

    #[test]
    fn a_network_is_priced_from_its_plan() {
        let cal = flat_calibration();
        let net = network(0.1);
        let p = cal.predict_network(&net).unwrap();
        assert!(p.training_j > 0.0 && p.inference_j_per_1000_rows > 0.0);
        // The same figure through the plan priced by hand.
        let plan = NetworkPlan::of(&net.plan().unwrap());
        let by_hand = cal.predict_plan(&plan.training).unwrap().energy_j;
        assert!((p.training_j - by_hand).abs() <= 1e-12 * by_hand);
        // More epochs cost more.
        let mut longer = net.clone();
        longer.run.epochs = 6;
        assert!(cal.predict_network(&longer).unwrap().training_j > p.training_j);
        // The optimizer step is one call per step over every parameter.
        let opt: Vec<_> = plan
            .training
            .kernels
            .iter()
            .filter(|k| k.kernel == "adamw_step")
            .collect();
        assert_eq!(opt.len(), 1);
        assert_eq!(opt[0].calls, 4 * 3);
        let params = net.model.architecture(6, 2).unwrap().parameters() as u64;
        assert_eq!(
            opt[0].shape,
            FitShape {
                batch: 1,
                in_width: params,
                out_width: 1
            }
        );
    }

    #[test]
    fn evaluation_dropout_is_priced_as_a_mask_multiply() {
        let plan = network(0.1).plan().unwrap();
        let eval_dropout = plan
            .inference
            .calls
            .iter()
            .filter(|(c, _)| c.kind == KernelKind::DropoutFwd)
            .inspect(|(c, _)| assert_eq!(c.pass, Pass::Eval))
            .count();
        assert_eq!(eval_dropout, 2);
        let priced = KernelPlan::from_calls(1, &plan.inference);
        assert!(priced.kernels.iter().all(|k| k.kernel != "dropout_fwd"));
        assert!(priced.kernels.iter().any(|k| k.kernel == "dropout_bwd"));
    }

    #[test]
    fn bad_runs_and_unpriced_kernels_are_errors() {
        let mut net = network(0.0);
        net.run.batch_size = 0;
        assert!(matches!(
            flat_calibration().predict_network(&net),
            Err(NetworkPredictError::Plan(PlanError::Zero("batch_size")))
        ));
        let net = network(0.0);
        let err = crate::file::tests::sample_calibration()
            .predict_network(&net)
            .unwrap_err();
        assert!(err.to_string().contains("batch_gather"), "{err}");
    }

    #[test]
    fn network_runs_are_json() {
        let net = network(0.2);
        let json = serde_json::to_string(&net).unwrap();
        assert_eq!(serde_json::from_str::<NetworkRun>(&json).unwrap(), net);
    }
}
