//! The training evaluator: each trial trains a network with `nas-client
//! train` in a child process of its own, so that the energy energyd reports
//! for that process belongs to that trial alone even when several trials run
//! at once (`--workers K`); the child registers itself with energyd and
//! reports its kernel spans.
//!
//! This module owns the mapping between search-space parameters and the
//! trainer's flags, and between the trainer's JSON and trial metrics.

use nas_search::evaluator::{EvalError, Evaluator, KernelEnergyFigure, TrialResult};
use nas_search::space::{Config, ParamValue};
use serde_json::Value;
use shared::Provenance;
use std::path::PathBuf;
use std::process::{Command, Stdio};

/// Metric names a training trial reports (the objectives and constraints of
/// a search refer to these).
pub mod metric {
    /// Validation accuracy (classification), fraction.
    pub const VAL_ACCURACY: &str = "val_accuracy";
    /// Test accuracy (classification), fraction.
    pub const TEST_ACCURACY: &str = "test_accuracy";
    /// Measured inference energy per 1000 rows, joules.
    pub const INFERENCE_ENERGY_J_PER_1K: &str = "inference_energy_j_per_1k";
    /// Measured training energy, joules.
    pub const TRAINING_ENERGY_J: &str = "training_energy_j";
    /// Inference time per 1000 rows, milliseconds.
    pub const LATENCY_MS_PER_1K: &str = "latency_ms_per_1k";
    /// Trainable parameters.
    pub const PARAMS: &str = "params";
    /// Forward FLOPs per row.
    pub const FLOPS: &str = "flops";
    /// Training wall time, seconds.
    pub const TRAIN_TIME_S: &str = "train_time_s";
    /// Epochs actually trained (early stopping may end before the most).
    pub const EPOCHS_RUN: &str = "epochs_run";
    /// Inference energy per 1000 rows predicted from a calibration, joules.
    pub const PREDICTED_INFERENCE_ENERGY_J_PER_1K: &str = "predicted_inference_energy_j_per_1k";
    /// Training energy predicted from a calibration, joules.
    pub const PREDICTED_TRAINING_ENERGY_J: &str = "predicted_training_energy_j";
    /// One-sigma uncertainty of the predicted inference energy, joules.
    pub const PREDICTED_INFERENCE_ENERGY_SIGMA: &str = "predicted_inference_energy_sigma_j_per_1k";
    /// One-sigma uncertainty of the predicted training energy, joules.
    pub const PREDICTED_TRAINING_ENERGY_SIGMA: &str = "predicted_training_energy_sigma_j";
}

/// Where the training data comes from, as `nas-client train` flags.
#[derive(Debug, Clone)]
pub enum DataSource {
    /// A bundled dataset by name.
    Bundled(String),
    /// A CSV/TSV file and its target column.
    File {
        /// The file.
        path: PathBuf,
        /// Target column.
        target: String,
    },
}

impl DataSource {
    /// The `nas-client train` flags naming the data.
    pub fn args(&self) -> Vec<String> {
        match self {
            DataSource::Bundled(name) => vec!["--dataset".into(), name.clone()],
            DataSource::File { path, target } => vec![
                "--data".into(),
                path.display().to_string(),
                "--target".into(),
                target.clone(),
            ],
        }
    }

    /// Short label for reports.
    pub fn label(&self) -> String {
        match self {
            DataSource::Bundled(name) => name.clone(),
            DataSource::File { path, target } => format!("{} ({target})", path.display()),
        }
    }
}

/// Trains each trial in a child `nas-client train --json` process.
#[derive(Debug, Clone)]
pub struct TrainingEvaluator {
    /// The nas-client executable.
    pub exe: PathBuf,
    /// The data.
    pub data: DataSource,
    /// energyd socket (the trainer's default when `None`).
    pub socket: Option<PathBuf>,
    /// Threads of each training process.
    pub threads: usize,
    /// Measure the inference phase's energy (the measured inference-energy
    /// objective needs it; a search on predicted energy does not).
    pub measure_inference: bool,
}

/// Search-space parameters passed to the trainer as `--FLAG value`, by name.
/// `n_layers` and `width_*` become `--arch W1-W2-...`.
const PARAM_FLAGS: &[(&str, &str)] = &[
    ("backbone", "--backbone"),
    ("activation", "--activation"),
    ("dropout", "--dropout"),
    ("normalization", "--norm"),
    ("learning_rate", "--lr"),
    ("batch_size", "--batch-size"),
];

fn cell(v: &ParamValue) -> String {
    match v {
        ParamValue::Bool(b) => b.to_string(),
        ParamValue::Int(i) => i.to_string(),
        ParamValue::Float(x) => x.to_string(),
        ParamValue::Str(s) => s.clone(),
    }
}

/// The trainer flags (model and schedule; no data, seed or threads) for
/// `config` at `fidelity` (a fraction of `epochs`, at least one epoch).
pub fn train_flags(config: &Config, fidelity: f64) -> Result<Vec<String>, EvalError> {
    let num = |name: &str| config.get(name).and_then(ParamValue::as_f64);
    let n_layers = num("n_layers")
        .ok_or_else(|| EvalError::Failed("configuration has no integer `n_layers`".into()))?
        as usize;
    let mut widths = Vec::with_capacity(n_layers);
    for i in 1..=n_layers {
        let w = num(&format!("width_{i}")).ok_or_else(|| {
            EvalError::Failed(format!(
                "configuration has {n_layers} layers but no width_{i}"
            ))
        })?;
        widths.push((w.round() as i64).to_string());
    }
    // A ResNet's arch is `D_MAIN-D_HIDDEN-...` (one hidden width per block):
    // the first width is also the main width.
    let backbone = config.get("backbone").and_then(ParamValue::as_str);
    if backbone == Some("resnet") {
        widths.insert(0, widths[0].clone());
    }
    let mut flags = vec!["--arch".to_string(), widths.join("-")];
    for (param, flag) in PARAM_FLAGS {
        if let Some(v) = config.get(param) {
            flags.push((*flag).to_string());
            flags.push(cell(v));
        }
    }
    if let Some(epochs) = num("epochs") {
        let scaled = (epochs * fidelity).ceil().max(1.0) as u64;
        flags.push("--epochs".into());
        flags.push(scaled.to_string());
    }
    Ok(flags)
}

impl TrainingEvaluator {
    /// Every flag of the `nas-client train` child of a trial, but `--json`
    /// and `--socket`: the data, the model and schedule, the seed, threads.
    pub fn child_flags(
        &self,
        config: &Config,
        fidelity: f64,
        seed: u64,
    ) -> Result<Vec<String>, EvalError> {
        let mut flags = self.data.args();
        flags.extend(train_flags(config, fidelity)?);
        flags.extend(["--seed".to_string(), seed.to_string()]);
        flags.extend(["--threads".to_string(), self.threads.max(1).to_string()]);
        if !self.measure_inference {
            flags.push("--no-inference-energy".to_string());
        }
        Ok(flags)
    }
}

impl Evaluator for TrainingEvaluator {
    fn evaluate(
        &self,
        config: &Config,
        fidelity: f64,
        seed: u64,
    ) -> Result<TrialResult, EvalError> {
        let mut cmd = Command::new(&self.exe);
        cmd.arg("train")
            .args(self.child_flags(config, fidelity, seed)?)
            .arg("--json")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        if let Some(socket) = &self.socket {
            cmd.arg("--socket").arg(socket);
        }
        let output = cmd.output().map_err(|e| {
            EvalError::Failed(format!("cannot start {} train: {e}", self.exe.display()))
        })?;
        let stdout = String::from_utf8_lossy(&output.stdout);
        if !output.status.success() {
            let stderr = String::from_utf8_lossy(&output.stderr);
            let tail: Vec<&str> = stderr.lines().rev().take(5).collect();
            return Err(EvalError::Failed(format!(
                "nas-client train exited with {}: {}",
                output.status,
                tail.into_iter().rev().collect::<Vec<_>>().join(" | ")
            )));
        }
        let json = last_json_object(&stdout).ok_or_else(|| {
            EvalError::Failed("nas-client train --json printed no JSON object".into())
        })?;
        trial_result_from_train_json(&json)
    }
}

/// The last line of `text` that parses as a JSON object (the trainer prints
/// one; anything before it is ignored).
fn last_json_object(text: &str) -> Option<Value> {
    if let Ok(v @ Value::Object(_)) = serde_json::from_str::<Value>(text.trim()) {
        return Some(v);
    }
    text.lines()
        .rev()
        .filter_map(|l| serde_json::from_str::<Value>(l.trim()).ok())
        .find(Value::is_object)
}

/// Looks up a number at the first of `paths` (dot-separated) that holds one.
fn number_at(v: &Value, paths: &[&str]) -> Option<f64> {
    paths.iter().find_map(|p| {
        p.split('.')
            .try_fold(v, |node, key| node.get(key))
            .and_then(Value::as_f64)
            .filter(|x| x.is_finite())
    })
}

fn string_at<'a>(v: &'a Value, paths: &[&str]) -> Option<&'a str> {
    paths.iter().find_map(|p| {
        p.split('.')
            .try_fold(v, |node, key| node.get(key))
            .and_then(Value::as_str)
    })
}

/// Converts the trainer's JSON into trial metrics, per-kernel energy and
/// provenance.
pub fn trial_result_from_train_json(v: &Value) -> Result<TrialResult, EvalError> {
    let mut result = TrialResult::default();
    // Field paths of `nas-client train --json` (nas_client::train::TrainReport).
    let mut put = |name: &str, value: Option<f64>| {
        if let Some(x) = value.filter(|x| x.is_finite()) {
            result.metrics.insert(name.to_string(), x);
        }
    };
    put(metric::VAL_ACCURACY, number_at(v, &["val.accuracy"]));
    put(metric::TEST_ACCURACY, number_at(v, &["test.accuracy"]));
    put(
        metric::INFERENCE_ENERGY_J_PER_1K,
        number_at(v, &["energy.inference_j_per_1000_rows"]),
    );
    put(
        metric::TRAINING_ENERGY_J,
        number_at(v, &["energy.train.process_j"]),
    );
    let inference_ns = number_at(v, &["inference.time_ns"]);
    let inference_rows = number_at(v, &["inference.rows"]).filter(|&r| r > 0.0);
    put(
        metric::LATENCY_MS_PER_1K,
        inference_ns
            .zip(inference_rows)
            .map(|(ns, rows)| ns / rows * 1000.0 / 1e6),
    );
    // One-sigma uncertainties energyd gave with the two phases, so that
    // reports can state a payback's range (nas_search::payback::metric).
    put(
        nas_search::payback::metric::INFERENCE_ENERGY_SIGMA_J_PER_1K,
        number_at(v, &["energy.inference.uncertainty_j"])
            .zip(inference_rows)
            .map(|(s, rows)| s / rows * 1000.0),
    );
    put(
        nas_search::payback::metric::ENERGY_SPENT_SIGMA_J,
        number_at(v, &["energy.train.uncertainty_j"])
            .map(|t| t.hypot(number_at(v, &["energy.inference.uncertainty_j"]).unwrap_or(0.0))),
    );
    put(metric::PARAMS, number_at(v, &["parameters"]));
    put(metric::FLOPS, number_at(v, &["flops_per_row_inference"]));
    put(
        metric::TRAIN_TIME_S,
        number_at(v, &["train_wall_ns"]).map(|ns| ns / 1e9),
    );
    put(metric::EPOCHS_RUN, number_at(v, &["epochs_run"]));
    if !result.metrics.contains_key(metric::VAL_ACCURACY) {
        return Err(EvalError::Failed(
            "nas-client train --json reported no validation accuracy (regression targets need --objectives on another metric)".into(),
        ));
    }
    // The provenance of the objective (inference energy) and of the
    // training energy: the weaker of the two phases.
    let phase_provenance = |phase: &str| {
        string_at(v, &[&format!("energy.{phase}.provenance")]).and_then(|p| {
            match p.to_ascii_lowercase().as_str() {
                "measured" => Some(Provenance::Measured),
                "estimated" => Some(Provenance::Estimated),
                "simulated" => Some(Provenance::Simulated),
                _ => None,
            }
        })
    };
    result.provenance = match (phase_provenance("train"), phase_provenance("inference")) {
        (Some(a), Some(b)) => Some(a.combine(b)),
        (a, b) => a.or(b),
    };
    let kernels = ["energy.train.kernels"].iter().find_map(|p| {
        p.split('.')
            .try_fold(v, |node, key| node.get(key))
            .and_then(Value::as_array)
    });
    if let Some(kernels) = kernels {
        for k in kernels {
            let Some(name) = k.get("name").and_then(Value::as_str) else {
                continue;
            };
            result.kernel_energy.push(KernelEnergyFigure {
                name: name.to_string(),
                energy_j: number_at(k, &["energy_j"]),
                time_ns: number_at(k, &["total_time_ns"]).unwrap_or(0.0) as u64,
                count: number_at(k, &["count"]).unwrap_or(0.0) as u64,
            });
        }
    }
    // What the trial cost: training plus the inference measurement.
    let training = number_at(v, &["energy.train.process_j"]);
    let measuring = number_at(v, &["energy.inference.process_j"]);
    result.energy_spent_j = training.map(|t| t + measuring.unwrap_or(0.0));
    if let Some(why) = string_at(v, &["energy_unavailable"]) {
        result.notes.push(format!("no energy: {why}"));
    }
    Ok(result)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_scale_epochs_and_join_widths() {
        let config = Config::from_json(
            r#"{"n_layers":2,"width_1":64,"width_2":32,"activation":"relu","epochs":10,"learning_rate":0.01}"#,
        )
        .unwrap();
        let flags = train_flags(&config, 1.0 / 3.0).unwrap();
        assert_eq!(
            flags,
            [
                "--arch",
                "64-32",
                "--activation",
                "relu",
                "--lr",
                "0.01",
                "--epochs",
                "4"
            ]
        );
        let missing = Config::from_json(r#"{"n_layers":2,"width_1":64}"#).unwrap();
        assert!(train_flags(&missing, 1.0).is_err());
    }

    #[test]
    fn resnet_arch_repeats_the_main_width() {
        let config =
            Config::from_json(r#"{"backbone":"resnet","n_layers":2,"width_1":64,"width_2":32}"#)
                .unwrap();
        let flags = train_flags(&config, 1.0).unwrap();
        assert_eq!(flags[..2], ["--arch", "64-64-32"]);
    }

    #[test]
    fn train_json_maps_to_metrics_and_provenance() {
        let v: Value = serde_json::from_str(
            r#"{"val":{"accuracy":0.85},"test":{"accuracy":0.84},"parameters":1000,
                "flops_per_row_inference":2000,"train_wall_ns":2000000000,
                "inference":{"rows":4000,"passes":2,"time_ns":8000000,"rows_per_s":5e5},
                "energy":{"train":{"process_j":12.5,"provenance":"Estimated","uncertainty_j":3.0,
                   "kernels":[{"name":"matmul","count":2,"total_time_ns":5,"energy_j":10.0}]},
                 "inference":{"process_j":0.5,"provenance":"Measured","uncertainty_j":4.0,"kernels":[]},
                 "inference_j_per_1000_rows":0.125}}"#,
        )
        .unwrap();
        let r = trial_result_from_train_json(&v).unwrap();
        assert_eq!(r.metrics[metric::VAL_ACCURACY], 0.85);
        assert_eq!(r.metrics[metric::INFERENCE_ENERGY_J_PER_1K], 0.125);
        assert_eq!(r.metrics[metric::FLOPS], 2000.0);
        assert_eq!(r.metrics[metric::LATENCY_MS_PER_1K], 2.0);
        assert_eq!(r.metrics[metric::TRAIN_TIME_S], 2.0);
        // The weaker provenance of the two phases.
        assert_eq!(r.provenance, Some(Provenance::Estimated));
        assert_eq!(r.kernel_energy[0].energy_j, Some(10.0));
        assert_eq!(r.energy_spent_j, Some(13.0));
        // energyd's uncertainties: hypot(3, 4) = 5 J spent; 4 J over 4000
        // rows = 1 J per 1000.
        let sigma = |m| r.metrics[m];
        assert_eq!(
            sigma(nas_search::payback::metric::ENERGY_SPENT_SIGMA_J),
            5.0
        );
        assert_eq!(
            sigma(nas_search::payback::metric::INFERENCE_ENERGY_SIGMA_J_PER_1K),
            1.0
        );
        let no_energy: Value = serde_json::from_str(
            r#"{"val":{"accuracy":0.8},"energy":null,"energy_unavailable":"no daemon"}"#,
        )
        .unwrap();
        let r = trial_result_from_train_json(&no_energy).unwrap();
        assert_eq!(r.provenance, None);
        assert_eq!(r.energy_spent_j, None);
        assert!(!r.metrics.contains_key(metric::INFERENCE_ENERGY_J_PER_1K));
        let no_acc: Value = serde_json::from_str(r#"{"parameters":3}"#).unwrap();
        assert!(trial_result_from_train_json(&no_acc).is_err());
    }
}
