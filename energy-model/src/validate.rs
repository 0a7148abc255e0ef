//! Predicted against measured energy of whole networks: the comparison
//! rows `calibration validate` prints, their mean absolute percentage
//! errors (MAPE) per network and overall, and, as nn-Meter reports its
//! predictors (Zhang et al., MobiSys 2021), the share of predictions within
//! ±5% and ±10% of the measurement, overall and per backbone.

use nn_plan::Backbone;
use shared::Provenance;
use std::fmt;

/// nn-Meter's headline tolerance: a prediction within ±10% of the
/// measurement counts as accurate.
pub const NN_METER_TOLERANCE_PCT: f64 = 10.0;
/// nn-Meter's tighter tolerance, ±5%.
pub const NN_METER_TIGHT_TOLERANCE_PCT: f64 = 5.0;

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
    /// The network's backbone (rows are grouped by its kind).
    pub backbone: Backbone,
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

    /// Whether the prediction is within ±`tolerance_pct` percent of the
    /// measurement (nn-Meter's ±10% accuracy counts these); never when
    /// nothing was measured.
    pub fn within_pct(&self, tolerance_pct: f64) -> bool {
        self.abs_pct_error() <= tolerance_pct
    }
}

/// Accuracy of the predictions of one group of rows.
#[derive(Debug, Clone, PartialEq)]
pub struct Accuracy {
    /// Rows (network × phase) in the group.
    pub rows: usize,
    /// MAPE over them, percent.
    pub mape_pct: f64,
    /// Share of rows within ±5%, in [0, 1].
    pub within_5pct_share: f64,
    /// Share of rows within ±10% (nn-Meter's headline figure), in [0, 1].
    pub within_10pct_share: f64,
}

impl Accuracy {
    fn of<'a>(rows: impl Iterator<Item = &'a NetworkComparison>) -> Option<Accuracy> {
        let (mut n, mut sum, mut tight, mut within) = (0usize, 0.0, 0usize, 0usize);
        for r in rows {
            n += 1;
            sum += r.abs_pct_error();
            tight += usize::from(r.within_pct(NN_METER_TIGHT_TOLERANCE_PCT));
            within += usize::from(r.within_pct(NN_METER_TOLERANCE_PCT));
        }
        (n > 0).then(|| Accuracy {
            rows: n,
            mape_pct: sum / n as f64,
            within_5pct_share: tight as f64 / n as f64,
            within_10pct_share: within as f64 / n as f64,
        })
    }
}

/// MAPE per network and overall.
#[derive(Debug, Clone, PartialEq)]
pub struct ValidationSummary {
    /// (network, MAPE over its phases in percent), in first-seen order.
    pub per_network: Vec<(String, f64)>,
    /// MAPE over every row, percent.
    pub overall_mape_pct: f64,
    /// Accuracy over every row.
    pub overall: Accuracy,
    /// (backbone kind, accuracy of its rows), in first-seen order.
    pub per_backbone: Vec<(&'static str, Accuracy)>,
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
    let mut kinds: Vec<&'static str> = Vec::new();
    for r in rows {
        let kind = r.backbone.kind_name();
        if !kinds.contains(&kind) {
            kinds.push(kind);
        }
    }
    let per_backbone = kinds
        .into_iter()
        .filter_map(|kind| {
            Accuracy::of(rows.iter().filter(|r| r.backbone.kind_name() == kind)).map(|a| (kind, a))
        })
        .collect();
    let overall = Accuracy::of(rows.iter())?;
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
        overall,
        per_backbone,
        provenance,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(network: &str, phase: Phase, predicted_j: f64, measured_j: f64) -> NetworkComparison {
        NetworkComparison {
            network: network.into(),
            backbone: Backbone::Mlp { widths: vec![8] },
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

    #[test]
    fn share_within_tolerance_per_backbone_as_nn_meter_reports() {
        let resnet = Backbone::Resnet {
            d_main: 16,
            d_hidden: vec![32],
        };
        let mut rows = vec![
            // mlp: errors 4%, 10% (on the edge: counts), 10.5%, 30%.
            row("m1", Phase::Training, 104.0, 100.0),
            row("m1", Phase::Inference, 0.9, 1.0),
            row("m2", Phase::Training, 221.0, 200.0),
            row("m2", Phase::Inference, 13.0, 10.0),
        ];
        // resnet: errors 2% and nothing measured (infinite: never within).
        for (predicted, measured) in [(49.0, 50.0), (1.0, 0.0)] {
            let mut r = row("r1", Phase::Training, predicted, measured);
            r.backbone = resnet.clone();
            rows.push(r);
        }
        let s = summarize(&rows).unwrap();
        let kinds: Vec<&str> = s.per_backbone.iter().map(|(k, _)| *k).collect();
        assert_eq!(kinds, ["mlp", "resnet"]);
        let mlp = &s.per_backbone[0].1;
        assert_eq!(mlp.rows, 4);
        assert!((mlp.within_10pct_share - 0.5).abs() < 1e-12);
        assert!((mlp.within_5pct_share - 0.25).abs() < 1e-12);
        assert!((mlp.mape_pct - (4.0 + 10.0 + 10.5 + 30.0) / 4.0).abs() < 1e-9);
        let res = &s.per_backbone[1].1;
        assert_eq!(res.rows, 2);
        assert!((res.within_10pct_share - 0.5).abs() < 1e-12);
        assert!(res.mape_pct.is_infinite());
        // Overall: 3 of 6 within ±10%, 2 of 6 within ±5%.
        assert_eq!(s.overall.rows, 6);
        assert!((s.overall.within_10pct_share - 0.5).abs() < 1e-12);
        assert!((s.overall.within_5pct_share - 2.0 / 6.0).abs() < 1e-12);
    }
}
