//! Predicted against measured energy of whole networks: the comparison
//! rows `calibration validate` prints, and their mean absolute percentage
//! errors (MAPE) per network and overall.

use shared::Provenance;
use std::fmt;

/// What part of a network's life a figure covers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// The whole training run.
    Training,
    /// Inference over the evaluation rows.
    Inference,
}

impl fmt::Display for Phase {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Phase::Training => "training",
            Phase::Inference => "inference",
        })
    }
}

/// One network and phase: predicted and measured energy side by side.
#[derive(Debug, Clone, PartialEq)]
pub struct NetworkComparison {
    /// Network description (e.g. `mlp 64-64 relu batch 128`).
    pub network: String,
    /// Phase.
    pub phase: Phase,
    /// Energy predicted from the calibration.
    pub predicted_j: f64,
    /// Energy energyd attributed to the run.
    pub measured_j: f64,
    /// Weakest provenance of the two figures.
    pub provenance: Provenance,
}

impl NetworkComparison {
    /// |predicted − measured| / measured, percent (infinite when nothing
    /// was measured).
    pub fn abs_pct_error(&self) -> f64 {
        if self.measured_j > 0.0 {
            100.0 * ((self.predicted_j - self.measured_j) / self.measured_j).abs()
        } else {
            f64::INFINITY
        }
    }
}

/// MAPE per network and overall.
#[derive(Debug, Clone, PartialEq)]
pub struct ValidationSummary {
    /// (network, MAPE over its phases in percent), in first-seen order.
    pub per_network: Vec<(String, f64)>,
    /// MAPE over every row, percent.
    pub overall_mape_pct: f64,
    /// Weakest provenance of every row.
    pub provenance: Provenance,
}

/// Summarises comparison rows; `None` when there are none.
pub fn summarize(rows: &[NetworkComparison]) -> Option<ValidationSummary> {
    if rows.is_empty() {
        return None;
    }
    let mut per_network: Vec<(String, f64, u32)> = Vec::new();
    for r in rows {
        match per_network.iter_mut().find(|(n, _, _)| *n == r.network) {
            Some((_, sum, count)) => {
                *sum += r.abs_pct_error();
                *count += 1;
            }
            None => per_network.push((r.network.clone(), r.abs_pct_error(), 1)),
        }
    }
    let overall_mape_pct = rows
        .iter()
        .map(NetworkComparison::abs_pct_error)
        .sum::<f64>()
        / rows.len() as f64;
    let provenance = rows
        .iter()
        .map(|r| r.provenance)
        .reduce(Provenance::combine)
        .unwrap_or(Provenance::Estimated);
    Some(ValidationSummary {
        per_network: per_network
            .into_iter()
            .map(|(n, sum, count)| (n, sum / f64::from(count)))
            .collect(),
        overall_mape_pct,
        provenance,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(network: &str, phase: Phase, predicted_j: f64, measured_j: f64) -> NetworkComparison {
        NetworkComparison {
            network: network.into(),
            phase,
            predicted_j,
            measured_j,
            provenance: Provenance::Estimated,
        }
    }

    #[test]
    fn mape_per_network_and_overall() {
        let rows = [
            row("a", Phase::Training, 110.0, 100.0),
            row("a", Phase::Inference, 0.9, 1.0),
            row("b", Phase::Training, 50.0, 40.0),
        ];
        let s = summarize(&rows).unwrap();
        assert_eq!(s.per_network.len(), 2);
        assert!((s.per_network[0].1 - 10.0).abs() < 1e-9);
        assert!((s.per_network[1].1 - 25.0).abs() < 1e-9);
        assert!((s.overall_mape_pct - 15.0).abs() < 1e-9);
        assert_eq!(s.provenance, Provenance::Estimated);
        assert!(summarize(&[]).is_none());
        assert!(row("c", Phase::Training, 1.0, 0.0)
            .abs_pct_error()
            .is_infinite());
    }
}
