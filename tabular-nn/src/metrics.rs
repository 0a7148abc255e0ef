//! Evaluation metrics: accuracy, balanced accuracy, log loss and ROC AUC
//! for classification; RMSE, MAE and R² for regression.

use ndarray::{Array2, ArrayView1};
use serde::Serialize;

/// Metrics of one split. Classification fills the first four (ROC AUC for
/// binary tasks only), regression the last three.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, serde::Deserialize)]
pub struct Metrics {
    /// Share of rows whose most probable class is the true one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub accuracy: Option<f64>,
    /// Mean over classes of the per-class recall.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub balanced_accuracy: Option<f64>,
    /// Mean negative log-likelihood of the true class (natural log).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub log_loss: Option<f64>,
    /// Area under the ROC curve of the positive class (binary only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub roc_auc: Option<f64>,
    /// Root mean squared error, in the target's units.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rmse: Option<f64>,
    /// Mean absolute error, in the target's units.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mae: Option<f64>,
    /// Coefficient of determination.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub r2: Option<f64>,
}

impl Metrics {
    /// The headline figure, higher is better: accuracy, or R² for regression.
    pub fn score(&self) -> f64 {
        self.accuracy.or(self.r2).unwrap_or(f64::NAN)
    }

    /// Classification metrics from class probabilities (rows × classes) and
    /// true class indices.
    pub fn classification(probs: &Array2<f64>, labels: ArrayView1<f32>) -> Metrics {
        let (n, k) = probs.dim();
        let mut correct = 0usize;
        let mut per_class = vec![(0usize, 0usize); k];
        let mut nll = 0.0f64;
        for (row, &y) in probs.rows().into_iter().zip(labels.iter()) {
            let y = y as usize;
            let pred = argmax(row.iter().copied());
            if y < k {
                per_class[y].1 += 1;
                if pred == y {
                    per_class[y].0 += 1;
                    correct += 1;
                }
                nll -= row[y].max(1e-15).ln();
            }
        }
        let present: Vec<f64> = per_class
            .iter()
            .filter(|(_, total)| *total > 0)
            .map(|&(hit, total)| hit as f64 / total as f64)
            .collect();
        let roc_auc = (k == 2).then(|| {
            let scores: Vec<f64> = probs.column(1).to_vec();
            let positive: Vec<bool> = labels.iter().map(|&y| y as usize == 1).collect();
            roc_auc(&scores, &positive)
        });
        Metrics {
            accuracy: Some(correct as f64 / n.max(1) as f64),
            balanced_accuracy: Some(present.iter().sum::<f64>() / present.len().max(1) as f64),
            log_loss: Some(nll / n.max(1) as f64),
            roc_auc: roc_auc.flatten(),
            ..Metrics::default()
        }
    }

    /// Regression metrics from predictions and targets in the same units.
    pub fn regression(pred: &[f64], target: &[f64]) -> Metrics {
        let n = pred.len().max(1) as f64;
        let mean = target.iter().sum::<f64>() / n;
        let (mut se, mut ae, mut tot) = (0.0, 0.0, 0.0);
        for (&p, &y) in pred.iter().zip(target) {
            se += (p - y) * (p - y);
            ae += (p - y).abs();
            tot += (y - mean) * (y - mean);
        }
        Metrics {
            rmse: Some((se / n).sqrt()),
            mae: Some(ae / n),
            r2: Some(if tot > 0.0 { 1.0 - se / tot } else { 0.0 }),
            ..Metrics::default()
        }
    }
}

fn argmax(values: impl Iterator<Item = f64>) -> usize {
    let mut best = (0, f64::NEG_INFINITY);
    for (i, v) in values.enumerate() {
        if v > best.1 {
            best = (i, v);
        }
    }
    best.0
}

/// ROC AUC by the rank-sum (Mann–Whitney) formula, ties counted half;
/// `None` when one class is absent.
pub fn roc_auc(scores: &[f64], positive: &[bool]) -> Option<f64> {
    let mut order: Vec<usize> = (0..scores.len()).collect();
    order.sort_by(|&a, &b| scores[a].total_cmp(&scores[b]));
    let n_pos = positive.iter().filter(|&&p| p).count();
    let n_neg = positive.len() - n_pos;
    if n_pos == 0 || n_neg == 0 {
        return None;
    }
    // Average ranks over ties.
    let mut rank_sum_pos = 0.0f64;
    let mut i = 0;
    while i < order.len() {
        let mut j = i;
        while j + 1 < order.len() && scores[order[j + 1]] == scores[order[i]] {
            j += 1;
        }
        let avg_rank = (i + j) as f64 / 2.0 + 1.0;
        for &idx in &order[i..=j] {
            if positive[idx] {
                rank_sum_pos += avg_rank;
            }
        }
        i = j + 1;
    }
    let u = rank_sum_pos - (n_pos * (n_pos + 1)) as f64 / 2.0;
    Some(u / (n_pos as f64 * n_neg as f64))
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::array;

    #[test]
    fn classification_metrics_by_hand() {
        let probs = array![[0.9, 0.1], [0.2, 0.8], [0.6, 0.4], [0.3, 0.7]];
        let labels = array![0.0f32, 1.0, 1.0, 1.0];
        let m = Metrics::classification(&probs, labels.view());
        assert_eq!(m.accuracy, Some(0.75));
        // Recall: class 0 = 1, class 1 = 2/3.
        assert!((m.balanced_accuracy.expect("set") - (1.0 + 2.0 / 3.0) / 2.0).abs() < 1e-12);
        let ll = -(0.9f64.ln() + 0.8f64.ln() + 0.4f64.ln() + 0.7f64.ln()) / 4.0;
        assert!((m.log_loss.expect("set") - ll).abs() < 1e-12);
        // Scores of positives 0.8, 0.4, 0.7 vs the negative's 0.1: all above.
        assert_eq!(m.roc_auc, Some(1.0));
        assert_eq!(m.rmse, None);
    }

    #[test]
    fn auc_counts_ties_half_and_needs_both_classes() {
        assert_eq!(roc_auc(&[0.5, 0.5], &[true, false]), Some(0.5));
        assert_eq!(roc_auc(&[0.1, 0.9, 0.4], &[false, true, true]), Some(1.0));
        assert_eq!(roc_auc(&[0.9, 0.1], &[true, true]), None);
        assert_eq!(roc_auc(&[0.9, 0.1, 0.5], &[false, true, false]), Some(0.0));
    }

    #[test]
    fn regression_metrics_by_hand() {
        let m = Metrics::regression(&[1.0, 2.0, 4.0], &[1.0, 3.0, 3.0]);
        assert!((m.rmse.expect("set") - (2.0f64 / 3.0).sqrt()).abs() < 1e-12);
        assert!((m.mae.expect("set") - 2.0 / 3.0).abs() < 1e-12);
        // Targets mean 7/3; total sum of squares 8/3; residual 2.
        assert!((m.r2.expect("set") - (1.0 - 2.0 / (8.0 / 3.0))).abs() < 1e-12);
        assert_eq!(m.score(), m.r2.expect("set"));
    }
}
