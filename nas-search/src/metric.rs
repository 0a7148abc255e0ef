//! What the metrics of a study are: one registry of names, units, the
//! direction that is better, whether a figure is measured or predicted
//! (and then the prediction of which measured metric), and which metric
//! holds another's one-sigma uncertainty.
//!
//! The evaluator's side declares its metrics (nas-client's `TrialMetric`
//! is the one place its names live); the study stores the registry with
//! its spec, and reports, paybacks, pre-screening and re-measurement find
//! "the prediction of X" or "the uncertainty of X" here. No code infers a
//! metric's meaning from its name: a metric a trial reports that the
//! registry does not declare is reported as undeclared, never guessed.

use crate::objective::Direction;
use serde::{Deserialize, Serialize};
use std::collections::BTreeSet;

/// Where a metric's figures come from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum MetricOrigin {
    /// Measured, or computed from what was trained (accuracy, energy from
    /// energyd with the trial's own provenance, parameter counts).
    Measured,
    /// Predicted (from a calibration), never a measurement: the prediction
    /// of the measured metric `of`.
    Predicted {
        /// Name of the measured metric this predicts.
        of: String,
    },
}

/// One metric of a study.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MetricInfo {
    /// The name trials report it under (and objectives refer to).
    pub name: String,
    /// Unit of its figures, in words (`J per 1000 rows`, `fraction`).
    pub unit: String,
    /// Which way is better.
    pub direction: Direction,
    /// Measured or predicted.
    pub origin: MetricOrigin,
    /// The metric whose one-sigma uncertainty this is, if it is one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uncertainty_of: Option<String>,
}

impl MetricInfo {
    /// A measured metric.
    pub fn measured(name: &str, unit: &str, direction: Direction) -> MetricInfo {
        MetricInfo {
            name: name.to_owned(),
            unit: unit.to_owned(),
            direction,
            origin: MetricOrigin::Measured,
            uncertainty_of: None,
        }
    }

    /// A metric predicting the measured metric `of`.
    pub fn predicted(name: &str, unit: &str, direction: Direction, of: &str) -> MetricInfo {
        MetricInfo {
            origin: MetricOrigin::Predicted { of: of.to_owned() },
            ..MetricInfo::measured(name, unit, direction)
        }
    }

    /// This metric, declared as the one-sigma uncertainty of `of`.
    pub fn uncertainty_of(mut self, of: &str) -> MetricInfo {
        self.uncertainty_of = Some(of.to_owned());
        self
    }

    /// Whether it is a figure of its own rather than the uncertainty of
    /// another.
    pub fn is_value(&self) -> bool {
        self.uncertainty_of.is_none()
    }

    /// Whether its figures are predictions.
    pub fn is_predicted(&self) -> bool {
        matches!(self.origin, MetricOrigin::Predicted { .. })
    }

    /// The measured metric it predicts (`None` for a measured metric).
    pub fn predicts(&self) -> Option<&str> {
        match &self.origin {
            MetricOrigin::Predicted { of } => Some(of),
            MetricOrigin::Measured => None,
        }
    }
}

/// A registry that does not hold together.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum MetricError {
    /// Two declarations of one name disagree.
    #[error("metric `{name}` is declared twice with different meanings: {first} and {second}")]
    Conflict {
        /// The metric.
        name: String,
        /// The first declaration, as JSON.
        first: String,
        /// The other, as JSON.
        second: String,
    },
    /// A metric refers to one the registry does not declare.
    #[error(
        "metric `{name}` refers to `{target}` ({relation}), which the registry does not declare"
    )]
    UndeclaredTarget {
        /// The declaring metric.
        name: String,
        /// What it refers to.
        target: String,
        /// `predicts` or `uncertainty of`.
        relation: &'static str,
    },
    /// A prediction of something that is not a measured metric.
    #[error("metric `{name}` predicts `{target}`, which is not a measured metric")]
    PredictsPrediction {
        /// The predicted metric.
        name: String,
        /// Its target.
        target: String,
    },
    /// Two predictions of one measured metric ("the prediction of X" would
    /// be ambiguous).
    #[error("metrics `{first}` and `{second}` both predict `{target}`")]
    TwoPredictions {
        /// The measured metric.
        target: String,
        /// One prediction.
        first: String,
        /// The other.
        second: String,
    },
    /// A metric that should be declared is not.
    #[error("metric `{name}` is not declared in the study's metric registry")]
    Undeclared {
        /// The metric.
        name: String,
    },
    /// A measured metric has no declared prediction.
    #[error("no metric in the study's registry predicts `{measured}`")]
    NoPrediction {
        /// The measured metric.
        measured: String,
    },
}

/// The metrics of a study, in declaration order; see the module doc.
///
/// Invariants (checked by [`MetricRegistry::new`]): names are unique; a
/// predicted metric predicts a declared measured metric, and no measured
/// metric has two predictions (values; the uncertainty of a prediction is
/// itself predicted, of the same measured metric); an uncertainty belongs to
/// a declared metric.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[serde(transparent)]
pub struct MetricRegistry {
    metrics: Vec<MetricInfo>,
}

impl<'de> Deserialize<'de> for MetricRegistry {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let metrics = Vec::<MetricInfo>::deserialize(d)?;
        MetricRegistry::new(metrics).map_err(serde::de::Error::custom)
    }
}

fn json(m: &MetricInfo) -> String {
    serde_json::to_string(m).unwrap_or_else(|_| format!("{m:?}"))
}

impl MetricRegistry {
    /// A registry of `metrics`, checked (see the type's invariants); the
    /// same declaration given twice counts once.
    pub fn new(
        metrics: impl IntoIterator<Item = MetricInfo>,
    ) -> Result<MetricRegistry, MetricError> {
        let mut out: Vec<MetricInfo> = Vec::new();
        for m in metrics {
            match out.iter().find(|o| o.name == m.name) {
                Some(o) if *o == m => {}
                Some(o) => {
                    return Err(MetricError::Conflict {
                        name: m.name.clone(),
                        first: json(o),
                        second: json(&m),
                    })
                }
                None => out.push(m),
            }
        }
        let registry = MetricRegistry { metrics: out };
        registry.check()?;
        Ok(registry)
    }

    fn check(&self) -> Result<(), MetricError> {
        for m in &self.metrics {
            if let Some(target) = m.predicts() {
                match self.get(target) {
                    None => {
                        return Err(MetricError::UndeclaredTarget {
                            name: m.name.clone(),
                            target: target.to_owned(),
                            relation: "predicts",
                        })
                    }
                    Some(t) if t.is_predicted() => {
                        return Err(MetricError::PredictsPrediction {
                            name: m.name.clone(),
                            target: target.to_owned(),
                        })
                    }
                    Some(_) => {}
                }
                if let Some(other) = self.metrics.iter().find(|o| {
                    m.is_value() && o.is_value() && o.name != m.name && o.predicts() == Some(target)
                }) {
                    return Err(MetricError::TwoPredictions {
                        target: target.to_owned(),
                        first: m.name.clone(),
                        second: other.name.clone(),
                    });
                }
            }
            if let Some(target) = &m.uncertainty_of {
                if self.get(target).is_none() {
                    return Err(MetricError::UndeclaredTarget {
                        name: m.name.clone(),
                        target: target.clone(),
                        relation: "uncertainty of",
                    });
                }
            }
        }
        Ok(())
    }

    /// Whether nothing is declared (a study written before registries).
    pub fn is_empty(&self) -> bool {
        self.metrics.is_empty()
    }

    /// Every metric, in declaration order.
    pub fn iter(&self) -> impl Iterator<Item = &MetricInfo> {
        self.metrics.iter()
    }

    /// The metric of this name.
    pub fn get(&self, name: &str) -> Option<&MetricInfo> {
        self.metrics.iter().find(|m| m.name == name)
    }

    /// The metric predicting the measured metric `measured` (its value,
    /// not the uncertainty of that prediction).
    pub fn prediction_of(&self, measured: &str) -> Option<&MetricInfo> {
        self.metrics
            .iter()
            .find(|m| m.is_value() && m.predicts() == Some(measured))
    }

    /// Like [`MetricRegistry::prediction_of`], an error naming the metric
    /// when there is none.
    pub fn require_prediction_of(&self, measured: &str) -> Result<&MetricInfo, MetricError> {
        self.prediction_of(measured)
            .ok_or_else(|| MetricError::NoPrediction {
                measured: measured.to_owned(),
            })
    }

    /// The metric holding the one-sigma uncertainty of `name`.
    pub fn uncertainty_of(&self, name: &str) -> Option<&MetricInfo> {
        self.metrics
            .iter()
            .find(|m| m.uncertainty_of.as_deref() == Some(name))
    }

    /// Every declaration of `self` and of `other` (a study resumed by a
    /// client that declares more metrics); an error where they disagree.
    pub fn merged(&self, other: &MetricRegistry) -> Result<MetricRegistry, MetricError> {
        MetricRegistry::new(self.metrics.iter().chain(other.metrics.iter()).cloned())
    }

    /// The names among `names` that the registry does not declare, sorted
    /// and without repeats.
    pub fn undeclared<'a>(&self, names: impl IntoIterator<Item = &'a str>) -> Vec<String> {
        names
            .into_iter()
            .filter(|n| self.get(n).is_none())
            .map(str::to_owned)
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use Direction::{Maximize, Minimize};

    fn energy_registry() -> MetricRegistry {
        MetricRegistry::new([
            MetricInfo::measured("accuracy", "fraction", Maximize),
            MetricInfo::measured("energy", "J", Minimize),
            MetricInfo::measured("energy_sigma", "J", Minimize).uncertainty_of("energy"),
            MetricInfo::predicted("model_energy", "J", Minimize, "energy"),
            MetricInfo::predicted("model_energy_sd", "J", Minimize, "energy")
                .uncertainty_of("model_energy"),
        ])
        .unwrap()
    }

    #[test]
    fn predictions_and_uncertainties_are_found_by_declaration_not_name() {
        let r = energy_registry();
        assert_eq!(r.prediction_of("energy").unwrap().name, "model_energy");
        assert_eq!(r.prediction_of("model_energy"), None);
        assert_eq!(r.uncertainty_of("energy").unwrap().name, "energy_sigma");
        assert_eq!(
            r.uncertainty_of("model_energy").unwrap().name,
            "model_energy_sd"
        );
        assert!(r.get("model_energy").unwrap().is_predicted());
        assert!(matches!(
            r.require_prediction_of("energy_sigma"),
            Err(MetricError::NoPrediction { .. })
        ));
        assert_eq!(
            r.undeclared(["energy", "mystery", "a_mystery", "mystery"]),
            ["a_mystery", "mystery"]
        );
    }

    #[test]
    fn inconsistent_registries_are_refused_with_the_metric_named() {
        let e = MetricRegistry::new([MetricInfo::predicted("p", "J", Minimize, "x")]).unwrap_err();
        assert_eq!(
            e.to_string(),
            "metric `p` refers to `x` (predicts), which the registry does not declare"
        );
        let e = MetricRegistry::new([
            MetricInfo::measured("x", "J", Minimize),
            MetricInfo::measured("x", "W", Minimize),
        ])
        .unwrap_err();
        assert!(
            matches!(e, MetricError::Conflict { ref name, .. } if name == "x"),
            "{e}"
        );
        let e = MetricRegistry::new([
            MetricInfo::measured("x", "J", Minimize),
            MetricInfo::predicted("p", "J", Minimize, "x"),
            MetricInfo::predicted("q", "J", Minimize, "p"),
        ])
        .unwrap_err();
        assert!(matches!(e, MetricError::PredictsPrediction { .. }), "{e}");
        let e = MetricRegistry::new([
            MetricInfo::measured("x", "J", Minimize),
            MetricInfo::predicted("p", "J", Minimize, "x"),
            MetricInfo::predicted("q", "J", Minimize, "x"),
        ])
        .unwrap_err();
        assert!(matches!(e, MetricError::TwoPredictions { .. }), "{e}");
        let e = MetricRegistry::new([MetricInfo::measured("s", "J", Minimize).uncertainty_of("x")])
            .unwrap_err();
        assert!(matches!(e, MetricError::UndeclaredTarget { .. }), "{e}");
    }

    #[test]
    fn merging_keeps_both_sides_and_refuses_disagreement() {
        let r = energy_registry();
        let more = MetricRegistry::new([
            MetricInfo::measured("energy", "J", Minimize),
            MetricInfo::measured("latency", "ms", Minimize),
        ])
        .unwrap();
        let m = r.merged(&more).unwrap();
        assert_eq!(m.iter().count(), 6);
        assert_eq!(m.prediction_of("energy").unwrap().name, "model_energy");
        let clash = MetricRegistry::new([MetricInfo::measured("energy", "kWh", Minimize)]).unwrap();
        assert!(matches!(
            r.merged(&clash),
            Err(MetricError::Conflict { .. })
        ));
    }

    #[test]
    fn the_registry_round_trips_through_json_and_is_checked_on_the_way_in() {
        let r = energy_registry();
        let text = serde_json::to_string(&r).unwrap();
        let back: MetricRegistry = serde_json::from_str(&text).unwrap();
        assert_eq!(back, r);
        let bad = r#"[{"name":"p","unit":"J","direction":"minimize","origin":{"kind":"predicted","of":"x"}}]"#;
        let e = serde_json::from_str::<MetricRegistry>(bad).unwrap_err();
        assert!(e.to_string().contains("`x`"), "{e}");
    }
}
