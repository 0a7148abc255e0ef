//! Calibrated searches: a candidate's energy predicted from a per-kernel
//! calibration of this machine instead of (or before) measuring it.
//!
//! The energy model (`energy-model`) is linked in process: a trial's
//! [`NetworkRun`] is built from the very [`TrainConfig`] its child trains
//! (see [`TrainingEvaluator::train_config`]) and the data's shape, and
//! priced from the `nn_plan` kernel plan the trainer's spans follow, in
//! microseconds (`bench/pricing` measures it).
//!
//! Three uses, all behind `--calibration FILE`:
//! - [`CalibratedEvaluator`]: the energy objectives are predicted
//!   ([`TrialMetric::PredictedInferenceEnergyJPer1k`],
//!   [`TrialMetric::PredictedTrainingEnergyJ`]); the trial still trains
//!   (accuracy needs it) and energyd still measures the training phase
//!   (what the search spent), but the inference phase is a single timed
//!   pass with no energy window.
//! - pre-screening (`nas_search::prescreen::Prescreen`) with
//!   [`CalibrationPricer`]: each new candidate is priced before it is
//!   trained.
//! - [`measure_front`]: after the search, the predicted front is trained
//!   again with energyd measuring, and the measured figures are stored next
//!   to the predicted ones in the same trials (`nas_search::remeasure`).
//!
//! Every predicted figure is labelled `estimated`, whatever the calibration
//! was measured with: a model's output is never a measurement.

use super::trainer::{prediction_provenance, TrainingEvaluator, TrialMetric};
use anyhow::{Context, Result};
use energy_model::{Calibration, NetworkEnergyPrediction, NetworkPredictError, NetworkRun};
use nas_search::evaluator::{EvalError, Evaluator, TrialResult};
use nas_search::objective::ObjectiveSet;
use nas_search::prescreen::{CandidatePricer, PrescreenMetrics};
use nas_search::remeasure::{remeasure_front, FrontMeasurement, RemeasureMetrics};
use nas_search::space::Config;
use nas_search::study::StudyLocation;
use nn_plan::{DatasetShape, RunShape};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use tabular_nn::train::TrainConfig;

/// A loaded calibration, shared by the worker threads of a search.
#[derive(Debug)]
pub struct EnergyModel {
    calibration: Calibration,
    path: PathBuf,
}

impl EnergyModel {
    /// Loads `path` and checks it was made on this machine (with `force`,
    /// another machine is only warned about).
    pub fn load(path: &Path, force: bool) -> Result<EnergyModel> {
        let calibration = Calibration::load(path, force)?;
        Ok(EnergyModel {
            calibration,
            path: path.to_path_buf(),
        })
    }

    /// The calibration file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The calibration.
    pub fn calibration(&self) -> &Calibration {
        &self.calibration
    }

    /// Predicted energy of one network run.
    pub fn predict(
        &self,
        network: &NetworkRun,
    ) -> Result<NetworkEnergyPrediction, NetworkPredictError> {
        self.calibration.predict_network(network)
    }
}

/// Builds the [`NetworkRun`] of a trial from the configuration its child
/// trains.
#[derive(Debug, Clone)]
pub struct TrialPricer {
    /// The evaluator whose children are priced.
    pub trainer: TrainingEvaluator,
    /// The data's shape.
    pub shape: DatasetShape,
}

impl TrialPricer {
    /// The network run of `config` at `fidelity`, trained for `epochs`
    /// (the configured maximum when `None`: before training, early
    /// stopping is not known).
    pub fn network(
        &self,
        config: &Config,
        fidelity: f64,
        epochs: Option<usize>,
    ) -> Result<NetworkRun, EvalError> {
        let train = self.trainer.train_config(config, fidelity, 0)?;
        Ok(network_run(
            &train,
            &self.shape,
            epochs.unwrap_or(train.epochs),
        ))
    }
}

/// The network run of training `config` on data of `shape` for `epochs`.
pub fn network_run(config: &TrainConfig, shape: &DatasetShape, epochs: usize) -> NetworkRun {
    NetworkRun {
        model: config.model.clone(),
        data: *shape,
        run: RunShape {
            optimizer: config.optimizer,
            batch_size: config.batch_size,
            eval_batch_size: config.eval_batch_size,
            epochs: epochs.max(1),
            threads: config.threads.max(1) as u32,
        },
    }
}

/// Trains each trial (accuracy needs it) and predicts its energy from the
/// calibration; energyd measures the training phase only.
pub struct CalibratedEvaluator {
    /// Builds networks; its trainer runs the trials (with
    /// `measure_inference` off).
    pub pricer: TrialPricer,
    /// The energy model.
    pub model: Arc<EnergyModel>,
}

impl Evaluator for CalibratedEvaluator {
    fn evaluate(
        &self,
        config: &Config,
        fidelity: f64,
        seed: u64,
    ) -> Result<TrialResult, EvalError> {
        let mut result = self.pricer.trainer.evaluate(config, fidelity, seed)?;
        let epochs_run = result
            .metrics
            .get(TrialMetric::EpochsRun.name())
            .map(|&e| e.round() as usize);
        let network = self.pricer.network(config, fidelity, epochs_run)?;
        let p = self
            .model
            .predict(&network)
            .map_err(|e| EvalError::Failed(format!("predicting the trial's energy: {e}")))?;
        for (metric, value) in [
            (
                TrialMetric::PredictedInferenceEnergyJPer1k,
                p.inference_j_per_1000_rows,
            ),
            (
                TrialMetric::PredictedInferenceEnergySigma,
                p.inference_uncertainty_j_per_1000_rows,
            ),
            (TrialMetric::PredictedTrainingEnergyJ, p.training_j),
            (
                TrialMetric::PredictedTrainingEnergySigma,
                p.training_uncertainty_j,
            ),
        ] {
            if value.is_finite() {
                result.metrics.insert(metric.name().to_owned(), value);
            }
        }
        result.provenance = Some(prediction_provenance(result.provenance));
        result.notes.push(format!(
            "energy objectives predicted from calibration {} (fitted on {} energy); \
             training energy measured by energyd when it ran",
            self.model.path().display(),
            p.provenance
        ));
        Ok(result)
    }
}

/// Prices a candidate before it is trained from the calibration: its
/// predicted inference energy per 1000 rows.
pub struct CalibrationPricer {
    /// Builds the network.
    pub pricer: TrialPricer,
    /// Prices it.
    pub model: Arc<EnergyModel>,
}

impl CandidatePricer for CalibrationPricer {
    fn predicted_cost(&self, config: &Config, fidelity: f64) -> Option<f64> {
        let network = self.pricer.network(config, fidelity, None).ok()?;
        let p = self.model.predict(&network).ok()?;
        Some(p.inference_j_per_1000_rows)
    }
}

/// What pre-screening reads of finished trials: validation accuracy
/// against the registry's prediction of the inference energy.
pub fn prescreen_metrics() -> Result<PrescreenMetrics> {
    Ok(PrescreenMetrics::resolve(
        &TrialMetric::registry(),
        TrialMetric::ValAccuracy.name(),
        TrialMetric::InferenceEnergyJPer1k.name(),
    )?)
}

/// Trains every member of the study's front under `objectives` again with
/// energyd measuring both phases (`measurer` must measure inference) and
/// stores the measured figures in the same trials (measured inference
/// energy and latency, the re-run's accuracy as
/// [`TrialMetric::RemeasuredValAccuracy`], its energy added to what the
/// trial spent). Trials already measured are skipped, so a stopped run
/// continues. `progress(done, total)` after each.
pub fn measure_front(
    study_file: &StudyLocation,
    objectives: &ObjectiveSet,
    measurer: &TrainingEvaluator,
    progress: &dyn Fn(usize, usize),
) -> Result<Vec<FrontMeasurement>> {
    let names = RemeasureMetrics {
        measured: TrialMetric::InferenceEnergyJPer1k.name().to_owned(),
        quality: TrialMetric::ValAccuracy.name().to_owned(),
        copied: vec![
            (
                TrialMetric::LatencyMsPer1k.name().to_owned(),
                TrialMetric::LatencyMsPer1k.name().to_owned(),
            ),
            (
                TrialMetric::ValAccuracy.name().to_owned(),
                TrialMetric::RemeasuredValAccuracy.name().to_owned(),
            ),
        ],
    };
    remeasure_front(study_file, objectives, measurer, &names, progress)
        .with_context(|| format!("re-measuring the front of {study_file} (is energyd running?)"))
}

/// The name a calibrated search optimises in place of an objective: the
/// measured energy objectives a user names (`inference_energy_j_per_1k`,
/// `training_energy_j`) are read from their predictions in the
/// [`TrialMetric`] registry; other objectives are unchanged.
pub fn predicted_objective_name(name: &str) -> &str {
    match TrialMetric::from_name(name).and_then(TrialMetric::predicted) {
        Some(predicted) => predicted.name(),
        None => name,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::search::trainer::DataSource;

    fn pricer(threads: usize) -> TrialPricer {
        TrialPricer {
            trainer: TrainingEvaluator {
                exe: PathBuf::from("nas-client"),
                data: DataSource::Bundled("phoneme".into()),
                socket: None,
                threads,
                measure_inference: false,
            },
            shape: DatasetShape {
                inputs: 5,
                outputs: 2,
                regression: false,
                train_rows: 3000,
                val_rows: 1000,
                test_rows: 1000,
            },
        }
    }

    #[test]
    fn a_trial_is_priced_as_its_child_will_train_it() {
        let config = Config::from_json(
            r#"{"n_layers":2,"width_1":64,"width_2":32,"activation":"gelu","normalization":"layer","batch_size":128,"epochs":9,"dropout":0.1}"#,
        )
        .unwrap();
        let p = pricer(2);
        let n = p.network(&config, 1.0 / 3.0, None).unwrap();
        let trained = p.trainer.train_config(&config, 1.0 / 3.0, 7).unwrap();
        assert_eq!(n.model, trained.model);
        assert_eq!(n.run.batch_size, 128);
        // A third of 9 epochs, as the child trains.
        assert_eq!(n.run.epochs, 3);
        assert_eq!(n.run.threads, 2);
        assert_eq!(
            (n.data.inputs, n.data.outputs, n.data.test_rows),
            (5, 2, 1000)
        );
        // Epochs actually run override the most.
        assert_eq!(p.network(&config, 1.0, Some(5)).unwrap().run.epochs, 5);
    }

    #[test]
    fn energy_objectives_map_to_their_predictions() {
        assert_eq!(
            predicted_objective_name(TrialMetric::InferenceEnergyJPer1k.name()),
            TrialMetric::PredictedInferenceEnergyJPer1k.name()
        );
        assert_eq!(
            predicted_objective_name(TrialMetric::TrainingEnergyJ.name()),
            TrialMetric::PredictedTrainingEnergyJ.name()
        );
        assert_eq!(predicted_objective_name("val_accuracy"), "val_accuracy");
        assert_eq!(predicted_objective_name("no_such_metric"), "no_such_metric");
    }

    #[test]
    fn a_missing_calibration_is_a_clear_error() {
        let e = EnergyModel::load(Path::new("/nonexistent/c.toml"), false).unwrap_err();
        assert!(format!("{e:#}").contains("/nonexistent/c.toml"), "{e:#}");
    }
}
