//! Classical baselines from linfa, fitted on the same encoded training
//! split, to show where a neural network stands: logistic regression and a
//! decision tree for classification, linear regression for regression.

use crate::data::{Dataset, Task};
use crate::metrics::{roc_auc, Metrics};
use linfa::prelude::*;
use linfa_linear::LinearRegression;
use linfa_logistic::{LogisticRegression, MultiLogisticRegression};
use linfa_trees::DecisionTree;
use ndarray::{Array1, Array2};
use serde::Serialize;
use shared::MonotonicNs;

/// Depth of the baseline decision tree (deep enough to be a fair tree,
/// shallow enough to fit adult in about a second).
const TREE_DEPTH: usize = 10;
/// Iterations of the logistic regression solver.
const LOGISTIC_ITERATIONS: u64 = 200;

/// One baseline's result.
#[derive(Debug, Clone, Serialize)]
pub struct BaselineResult {
    /// Model name.
    pub model: String,
    /// Test metrics.
    pub test: Metrics,
    /// Fit time, ns.
    pub fit_ns: u64,
}

/// Why a baseline could not be fitted.
#[derive(Debug, thiserror::Error)]
#[error("baseline {model}: {message}")]
pub struct BaselineError {
    /// Model name.
    pub model: String,
    /// Cause.
    pub message: String,
}

/// Fits the baselines that fit the task and scores them on the test split.
pub fn run_baselines(dataset: &Dataset) -> Vec<Result<BaselineResult, BaselineError>> {
    let x = dataset.train.x.mapv(f64::from);
    let xt = dataset.test.x.mapv(f64::from);
    match dataset.task {
        Task::Regression => vec![linear(dataset, x, &xt)],
        Task::Binary | Task::Multiclass => {
            let y: Array1<usize> = dataset.train.y.mapv(|v| v as usize);
            vec![
                logistic(dataset, x.clone(), y.clone(), &xt),
                tree(dataset, x, y, &xt),
            ]
        }
    }
}

fn err(model: &str, e: impl std::fmt::Display) -> BaselineError {
    BaselineError {
        model: model.to_owned(),
        message: e.to_string(),
    }
}

fn logistic(
    dataset: &Dataset,
    x: Array2<f64>,
    y: Array1<usize>,
    xt: &Array2<f64>,
) -> Result<BaselineResult, BaselineError> {
    const NAME: &str = "logistic regression";
    let t0 = MonotonicNs::now();
    let data = linfa::Dataset::new(x, y);
    let k = dataset.classes.len();
    let probs: Array2<f64> = if k == 2 {
        let fitted = LogisticRegression::default()
            .max_iterations(LOGISTIC_ITERATIONS)
            .fit(&data)
            .map_err(|e| err(NAME, e))?;
        let p_pos = fitted.predict_probabilities(xt);
        let pos = fitted.labels().pos.class;
        let mut probs = Array2::zeros((xt.nrows(), 2));
        for (i, &p) in p_pos.iter().enumerate() {
            probs[[i, pos]] = p;
            probs[[i, 1 - pos]] = 1.0 - p;
        }
        probs
    } else {
        MultiLogisticRegression::default()
            .max_iterations(LOGISTIC_ITERATIONS)
            .fit(&data)
            .map_err(|e| err(NAME, e))?
            .predict_probabilities(xt)
    };
    let fit_ns = MonotonicNs::now().saturating_sub(t0);
    Ok(BaselineResult {
        model: NAME.into(),
        test: Metrics::classification(&probs, dataset.test.y.view()),
        fit_ns,
    })
}

fn tree(
    dataset: &Dataset,
    x: Array2<f64>,
    y: Array1<usize>,
    xt: &Array2<f64>,
) -> Result<BaselineResult, BaselineError> {
    let name = format!("decision tree (depth {TREE_DEPTH})");
    let t0 = MonotonicNs::now();
    let data = linfa::Dataset::new(x, y);
    let fitted = DecisionTree::params()
        .max_depth(Some(TREE_DEPTH))
        .fit(&data)
        .map_err(|e| err(&name, e))?;
    let pred: Array1<usize> = fitted.predict(xt);
    let fit_ns = MonotonicNs::now().saturating_sub(t0);
    // A tree gives hard labels here: probabilities are one-hot, so log loss
    // is not meaningful and is dropped; AUC is that of the hard labels.
    let k = dataset.classes.len();
    let mut probs = Array2::zeros((pred.len(), k));
    for (i, &c) in pred.iter().enumerate() {
        probs[[i, c.min(k - 1)]] = 1.0;
    }
    let mut test = Metrics::classification(&probs, dataset.test.y.view());
    test.log_loss = None;
    if k == 2 {
        let scores: Vec<f64> = pred.iter().map(|&c| c as f64).collect();
        let positive: Vec<bool> = dataset.test.y.iter().map(|&v| v as usize == 1).collect();
        test.roc_auc = roc_auc(&scores, &positive);
    }
    Ok(BaselineResult {
        model: name,
        test,
        fit_ns,
    })
}

fn linear(
    dataset: &Dataset,
    x: Array2<f64>,
    xt: &Array2<f64>,
) -> Result<BaselineResult, BaselineError> {
    const NAME: &str = "linear regression";
    let t0 = MonotonicNs::now();
    let y: Array1<f64> = dataset.train.y.mapv(f64::from);
    let data = linfa::Dataset::new(x, y);
    let fitted = LinearRegression::new()
        .fit(&data)
        .map_err(|e| err(NAME, e))?;
    let pred: Array1<f64> = fitted.predict(xt);
    let fit_ns = MonotonicNs::now().saturating_sub(t0);
    let scale = dataset.target_scale;
    let pred: Vec<f64> = pred.iter().map(|&v| scale.unscale(v)).collect();
    let truth: Vec<f64> = dataset
        .test
        .y
        .iter()
        .map(|&v| scale.unscale(f64::from(v)))
        .collect();
    Ok(BaselineResult {
        model: NAME.into(),
        test: Metrics::regression(&pred, &truth),
        fit_ns,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn baselines_beat_chance_on_phoneme() {
        let ds = crate::data::bundled::load("phoneme", 0).expect("loads");
        let majority = {
            let ones = ds.test.y.iter().filter(|&&v| v == 1.0).count() as f64;
            let n = ds.test.rows() as f64;
            (ones / n).max(1.0 - ones / n)
        };
        for r in run_baselines(&ds) {
            let r = r.expect("fits");
            let acc = r.test.accuracy.expect("classification");
            assert!(acc > majority, "{}: {acc} vs majority {majority}", r.model);
        }
    }
}
