//! Does a search pay for itself? The energy a search spent, set against what
//! its pick saves at inference time.
//!
//! The payback of a pick is `search energy / saving per prediction`, where
//! the saving is the reference's inference energy minus the pick's. The
//! reference is stated with the result ([`PaybackReference`]): the pick of
//! an accuracy-only search, the most accurate trial of the same study (its
//! stand-in when no accuracy-only search ran), or a model the user runs
//! today. The result is a number of predictions, and a number of days given
//! a [`PredictionsPerDay`]; with no saving it is [`PaybackPoint::Never`],
//! never a division by zero.
//!
//! [`search_against_search`] answers the second question: is it worth
//! running the costlier of two searches (a multi-trial search rather than a
//! calibrated or one-shot one)? Its extra energy is repaid by its pick's
//! saving over the cheaper search's pick, or never.
//!
//! Every figure is a [`Figure`]: a value, its one-sigma uncertainty when the
//! source gave one, and its [`FigureProvenance`]. A payback carries the
//! provenance of each figure it combines and the weakest of them, and a
//! one-sigma range computed from the uncertainties that are known (the
//! figures without one are listed, so a narrow range is not mistaken for a
//! full one). Where carbon intensity is known ([`CarbonIntensities`]), the
//! same payback is stated in grams of CO₂.

use crate::metric::MetricRegistry;
use crate::study::{TrialRecord, TrialStatus};
use serde::Serialize;
use shared::Provenance;
use std::fmt;
use std::str::FromStr;

/// Names of the measured metrics this module reads from trials. Their
/// predictions and the predictions' uncertainties are found through the
/// study's [`MetricRegistry`], whatever they are called.
pub mod metric {
    /// Inference energy per 1000 predictions (rows), joules.
    pub const INFERENCE_ENERGY_J_PER_1K: &str = "inference_energy_j_per_1k";
    /// One-sigma uncertainty of [`INFERENCE_ENERGY_J_PER_1K`], joules.
    pub const INFERENCE_ENERGY_SIGMA_J_PER_1K: &str = "inference_energy_sigma_j_per_1k";
    /// One-sigma uncertainty of a trial's `energy_spent_j`, joules.
    pub const ENERGY_SPENT_SIGMA_J: &str = "energy_spent_sigma_j";
    /// Validation accuracy, fraction.
    pub const VAL_ACCURACY: &str = "val_accuracy";
}

/// Joules in a kilowatt-hour.
const J_PER_KWH: f64 = 3.6e6;

/// Where a figure comes from, from the strongest to the weakest (the order
/// `Ord` follows, so the weakest of several is their `max`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum FigureProvenance {
    /// Read from a hardware energy counter.
    Measured,
    /// Computed by energyd from a model of other readings (no counter).
    Estimated,
    /// Predicted from a calibration, before anything ran.
    Predicted,
    /// Stated by the user (a baseline model's energy); nothing here checked it.
    UserGiven,
    /// From a simulated source: not a property of any machine.
    Simulated,
}

impl FigureProvenance {
    /// Lower-case label for reports.
    pub fn label(self) -> &'static str {
        match self {
            FigureProvenance::Measured => "measured",
            FigureProvenance::Estimated => "estimated",
            FigureProvenance::Predicted => "predicted",
            FigureProvenance::UserGiven => "user-given",
            FigureProvenance::Simulated => "simulated",
        }
    }
}

impl From<Provenance> for FigureProvenance {
    fn from(p: Provenance) -> FigureProvenance {
        match p {
            Provenance::Measured => FigureProvenance::Measured,
            Provenance::Estimated => FigureProvenance::Estimated,
            Provenance::Simulated => FigureProvenance::Simulated,
        }
    }
}

impl fmt::Display for FigureProvenance {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.label())
    }
}

/// A number with its one-sigma uncertainty (when its source gave one) and
/// its provenance. The unit is in the name of the field holding it.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Figure {
    /// The value.
    pub value: f64,
    /// One-sigma uncertainty, same unit; `None` when the source gave none
    /// (which is not the same as 0).
    pub sigma: Option<f64>,
    /// Where it comes from.
    pub provenance: FigureProvenance,
}

impl Figure {
    /// A figure without a known uncertainty.
    pub fn new(value: f64, provenance: FigureProvenance) -> Figure {
        Figure {
            value,
            sigma: None,
            provenance,
        }
    }

    /// A figure with a one-sigma uncertainty.
    pub fn with_sigma(value: f64, sigma: f64, provenance: FigureProvenance) -> Figure {
        Figure {
            value,
            sigma: Some(sigma.abs()),
            provenance,
        }
    }

    fn scaled(self, k: f64) -> Figure {
        Figure {
            value: self.value * k,
            sigma: self.sigma.map(|s| s * k.abs()),
            provenance: self.provenance,
        }
    }
}

/// What a figure is, in a payback (to say which figures lack an
/// uncertainty, and where each provenance comes from).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum FigureRole {
    /// Energy the search spent.
    SearchEnergy,
    /// Inference energy of the pick.
    PickEnergy,
    /// Inference energy of the reference.
    ReferenceEnergy,
}

impl FigureRole {
    /// Label for reports.
    pub fn label(self) -> &'static str {
        match self {
            FigureRole::SearchEnergy => "search energy",
            FigureRole::PickEnergy => "pick's inference energy",
            FigureRole::ReferenceEnergy => "reference's inference energy",
        }
    }
}

/// Provenance of a combined figure: each part's, and the weakest.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CombinedProvenance {
    /// The weakest provenance among the parts: the combined figure is no
    /// stronger than that.
    pub weakest: FigureProvenance,
    /// Each part's provenance.
    pub parts: Vec<(FigureRole, FigureProvenance)>,
}

impl CombinedProvenance {
    fn of(parts: Vec<(FigureRole, FigureProvenance)>) -> CombinedProvenance {
        CombinedProvenance {
            weakest: parts
                .iter()
                .map(|p| p.1)
                .max()
                .unwrap_or(FigureProvenance::Estimated),
            parts,
        }
    }

    /// Whether the parts differ in provenance.
    pub fn is_mixed(&self) -> bool {
        self.parts.iter().any(|p| p.1 != self.weakest)
    }
}

impl fmt::Display for CombinedProvenance {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if !self.is_mixed() {
            return write!(f, "{}", self.weakest);
        }
        let parts: Vec<String> = self
            .parts
            .iter()
            .map(|(r, p)| format!("{} {p}", r.label()))
            .collect();
        write!(f, "{} at best ({})", self.weakest, parts.join(", "))
    }
}

/// Errors of payback inputs.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum PaybackError {
    /// A rate or intensity that must be a positive finite number is not.
    #[error("{what} must be a positive number, got `{given}`")]
    NotPositive {
        /// Which input.
        what: &'static str,
        /// What was given.
        given: String,
    },
    /// A quantity that must be a finite number ≥ 0 is not.
    #[error("{what} must be a number >= 0, got `{given}`")]
    Negative {
        /// Which input.
        what: &'static str,
        /// What was given.
        given: String,
    },
    /// A fraction outside 0..=1.
    #[error("{what} must be a fraction between 0 and 1, got `{given}`")]
    NotAFraction {
        /// Which input.
        what: &'static str,
        /// What was given.
        given: String,
    },
}

fn positive(what: &'static str, x: f64) -> Result<f64, PaybackError> {
    if x.is_finite() && x > 0.0 {
        Ok(x)
    } else {
        Err(PaybackError::NotPositive {
            what,
            given: x.to_string(),
        })
    }
}

/// How many predictions the deployed network serves per day (`> 0`).
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct PredictionsPerDay(f64);

impl PredictionsPerDay {
    /// A positive finite rate.
    pub fn new(per_day: f64) -> Result<PredictionsPerDay, PaybackError> {
        positive("predictions per day", per_day).map(PredictionsPerDay)
    }

    /// The rate.
    pub fn get(self) -> f64 {
        self.0
    }
}

impl FromStr for PredictionsPerDay {
    type Err = PaybackError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let x: f64 = s.trim().parse().map_err(|_| PaybackError::NotPositive {
            what: "predictions per day",
            given: s.to_owned(),
        })?;
        PredictionsPerDay::new(x)
    }
}

/// Grid carbon intensity, grams of CO₂-equivalent per kWh (`≥ 0`: an hour
/// of a trace may be fully clean).
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct GramsCo2PerKwh(f64);

impl GramsCo2PerKwh {
    /// A finite, non-negative intensity.
    pub fn new(g_per_kwh: f64) -> Result<GramsCo2PerKwh, PaybackError> {
        if g_per_kwh.is_finite() && g_per_kwh >= 0.0 {
            Ok(GramsCo2PerKwh(g_per_kwh))
        } else {
            Err(PaybackError::Negative {
                what: "carbon intensity (gCO2/kWh)",
                given: g_per_kwh.to_string(),
            })
        }
    }

    /// The intensity.
    pub fn get(self) -> f64 {
        self.0
    }
}

impl FromStr for GramsCo2PerKwh {
    type Err = PaybackError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let x: f64 = s.trim().parse().map_err(|_| PaybackError::Negative {
            what: "carbon intensity (gCO2/kWh)",
            given: s.to_owned(),
        })?;
        GramsCo2PerKwh::new(x)
    }
}

/// Carbon intensity while the search ran and where the pick will run,
/// PUE included. From an intensity source,
/// [`crate::footprint::SearchCarbon::intensities`] gives the search's
/// energy-weighted mean over the hours its trials ran (so search energy ×
/// `search` is the search's accounted grams) and labels them.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CarbonIntensities {
    /// While searching.
    pub search: GramsCo2PerKwh,
    /// While serving predictions.
    pub deployment: GramsCo2PerKwh,
    /// Where they come from (source, kind, PUE), as reports print it;
    /// `None` for bare numbers given by a caller.
    pub source: Option<String>,
}

impl CarbonIntensities {
    /// The same intensity for both, without a named source.
    pub fn uniform(g: GramsCo2PerKwh) -> CarbonIntensities {
        CarbonIntensities {
            search: g,
            deployment: g,
            source: None,
        }
    }
}

/// A model the user runs today, to measure a pick's saving against.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct BaselineModel {
    /// Its inference energy per 1000 predictions, joules (user-given).
    pub energy_j_per_1k: Figure,
    /// Its accuracy, when the user gave it.
    pub accuracy: Option<f64>,
}

impl BaselineModel {
    /// A baseline of `energy_j_per_1k` joules per 1000 predictions (`> 0`),
    /// with an optional one-sigma uncertainty and accuracy.
    pub fn new(
        energy_j_per_1k: f64,
        sigma_j_per_1k: Option<f64>,
        accuracy: Option<f64>,
    ) -> Result<BaselineModel, PaybackError> {
        let e = positive("baseline energy per 1000 predictions (J)", energy_j_per_1k)?;
        if let Some(s) = sigma_j_per_1k {
            if !s.is_finite() || s < 0.0 {
                return Err(PaybackError::NotPositive {
                    what: "baseline energy uncertainty (J per 1000 predictions)",
                    given: s.to_string(),
                });
            }
        }
        if let Some(a) = accuracy {
            if !(0.0..=1.0).contains(&a) {
                return Err(PaybackError::NotAFraction {
                    what: "baseline accuracy",
                    given: a.to_string(),
                });
            }
        }
        Ok(BaselineModel {
            energy_j_per_1k: Figure {
                value: e,
                sigma: sigma_j_per_1k,
                provenance: FigureProvenance::UserGiven,
            },
            accuracy,
        })
    }

    /// As a payback reference.
    pub fn reference(&self) -> PaybackReference {
        PaybackReference::Baseline(Candidate {
            trial: None,
            accuracy: self.accuracy,
            energy_j_per_1k: self.energy_j_per_1k,
        })
    }
}

/// What a user says about the deployment a payback is computed for.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct PaybackSettings {
    /// A model in use today: the saving is measured against it instead of
    /// the accuracy-only pick.
    pub baseline: Option<BaselineModel>,
    /// Predictions per day, to state the payback in days.
    pub predictions_per_day: Option<PredictionsPerDay>,
    /// Carbon intensities, to state it in CO₂.
    pub carbon: Option<CarbonIntensities>,
    /// The search's own carbon, accounted hour by hour from an intensity
    /// source (reports state it); set with
    /// [`PaybackSettings::with_search_carbon`], which also sets `carbon`.
    pub search_carbon: Option<crate::footprint::SearchCarbon>,
}

impl PaybackSettings {
    /// These settings with the search's accounted carbon, and the
    /// payback's intensities taken from it (none when the search spent no
    /// energy).
    pub fn with_search_carbon(mut self, c: crate::footprint::SearchCarbon) -> PaybackSettings {
        self.carbon = c.intensities();
        self.search_carbon = Some(c);
        self
    }
}

/// A network, as a payback sees it: its trial, accuracy and inference
/// energy.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Candidate {
    /// Trial number in its study (`None` for a model from outside).
    pub trial: Option<u64>,
    /// Validation accuracy, when known.
    pub accuracy: Option<f64>,
    /// Inference energy per 1000 predictions, joules.
    pub energy_j_per_1k: Figure,
}

impl Candidate {
    /// The candidate of a finished trial: its accuracy and its inference
    /// energy, measured when the trial holds a measurement (with the
    /// trial's provenance; estimated when it names none, as
    /// `report::search_energy` does), else the prediction `metrics`
    /// declares of it, with the prediction's declared uncertainty. `None`
    /// without either figure.
    pub fn of_trial(t: &TrialRecord, metrics: &MetricRegistry) -> Option<Candidate> {
        let m = t.metrics.as_ref()?;
        let finite = |name: &str| m.get(name).copied().filter(|v| v.is_finite());
        let energy = match Candidate::measured_energy(t) {
            Some(figure) => figure,
            None => {
                let predicted = metrics.prediction_of(metric::INFERENCE_ENERGY_J_PER_1K)?;
                Figure {
                    value: finite(&predicted.name)?,
                    sigma: metrics
                        .uncertainty_of(&predicted.name)
                        .and_then(|s| finite(&s.name))
                        .map(f64::abs),
                    provenance: FigureProvenance::Predicted,
                }
            }
        };
        Some(Candidate {
            trial: Some(t.number),
            accuracy: finite(metric::VAL_ACCURACY),
            energy_j_per_1k: energy,
        })
    }

    /// The candidate of a finished trial from measured figures only
    /// (`None` without a measured inference energy).
    pub fn of_measured_trial(t: &TrialRecord) -> Option<Candidate> {
        let energy = Candidate::measured_energy(t)?;
        let accuracy = t
            .metrics
            .as_ref()
            .and_then(|m| m.get(metric::VAL_ACCURACY).copied())
            .filter(|v| v.is_finite());
        Some(Candidate {
            trial: Some(t.number),
            accuracy,
            energy_j_per_1k: energy,
        })
    }

    fn measured_energy(t: &TrialRecord) -> Option<Figure> {
        let m = t.metrics.as_ref()?;
        let finite = |name: &str| m.get(name).copied().filter(|v| v.is_finite());
        let p = t
            .provenance
            .map_or(FigureProvenance::Estimated, FigureProvenance::from);
        Some(Figure {
            value: finite(metric::INFERENCE_ENERGY_J_PER_1K)?,
            sigma: finite(metric::INFERENCE_ENERGY_SIGMA_J_PER_1K).map(f64::abs),
            provenance: p,
        })
    }
}

/// What a pick's saving is measured against.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "kebab-case", tag = "kind")]
pub enum PaybackReference {
    /// The most accurate trial of a separate accuracy-only search: what the
    /// user would deploy without energy-aware search.
    AccuracyOnlyPick(Candidate),
    /// The most accurate trial of the same study, standing in for an
    /// accuracy-only pick when no accuracy-only search ran.
    MostAccurateInStudy(Candidate),
    /// A model the user runs today, with the energy they stated.
    Baseline(Candidate),
}

impl PaybackReference {
    /// The reference network.
    pub fn candidate(&self) -> &Candidate {
        match self {
            PaybackReference::AccuracyOnlyPick(c)
            | PaybackReference::MostAccurateInStudy(c)
            | PaybackReference::Baseline(c) => c,
        }
    }

    /// A user-given baseline (see [`BaselineModel::new`]).
    pub fn baseline(
        energy_j_per_1k: f64,
        sigma_j_per_1k: Option<f64>,
        accuracy: Option<f64>,
    ) -> Result<PaybackReference, PaybackError> {
        BaselineModel::new(energy_j_per_1k, sigma_j_per_1k, accuracy).map(|b| b.reference())
    }

    /// How reports name it.
    pub fn describe(&self) -> String {
        match self {
            PaybackReference::AccuracyOnlyPick(c) => match c.trial {
                Some(n) => format!("the accuracy-only search's pick, trial {n}"),
                None => "the accuracy-only search's pick".into(),
            },
            PaybackReference::MostAccurateInStudy(c) => match c.trial {
                Some(n) => format!(
                    "this study's most accurate trial, {n}, standing in for an accuracy-only pick"
                ),
                None => "this study's most accurate trial".into(),
            },
            PaybackReference::Baseline(_) => "the user-given baseline model".into(),
        }
    }
}

/// When a cost is paid back.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
#[serde(rename_all = "kebab-case", tag = "when")]
pub enum PaybackPoint {
    /// Nothing to pay back (no extra cost) and something saved per
    /// prediction.
    Immediately,
    /// After this many predictions; `days` at the stated rate, if one was
    /// given.
    After {
        /// Predictions until the saving equals the cost.
        predictions: f64,
        /// `predictions / rate`.
        days: Option<f64>,
    },
    /// Nothing is saved per prediction: the cost is never paid back.
    Never,
}

impl PaybackPoint {
    /// `cost / saving_per_prediction`: [`PaybackPoint::Never`] when the
    /// saving is not positive (or not a number), [`PaybackPoint::Immediately`]
    /// when there is no cost to repay.
    pub fn compute(
        cost: f64,
        saving_per_prediction: f64,
        rate: Option<PredictionsPerDay>,
    ) -> PaybackPoint {
        if saving_per_prediction.is_nan() || saving_per_prediction <= 0.0 || !cost.is_finite() {
            return PaybackPoint::Never;
        }
        if cost <= 0.0 {
            return PaybackPoint::Immediately;
        }
        let predictions = cost / saving_per_prediction;
        if !predictions.is_finite() {
            return PaybackPoint::Never;
        }
        PaybackPoint::After {
            predictions,
            days: rate.map(|r| predictions / r.get()),
        }
    }

    /// Predictions until payback (0 for immediately, ∞ for never).
    pub fn predictions(self) -> f64 {
        match self {
            PaybackPoint::Immediately => 0.0,
            PaybackPoint::After { predictions, .. } => predictions,
            PaybackPoint::Never => f64::INFINITY,
        }
    }
}

impl fmt::Display for PaybackPoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PaybackPoint::Immediately => f.write_str("immediately"),
            PaybackPoint::Never => f.write_str("never"),
            PaybackPoint::After { predictions, days } => {
                write!(f, "after {} predictions", count(*predictions))?;
                if let Some(d) = days {
                    write!(f, " ({})", duration_days(*d))?;
                }
                Ok(())
            }
        }
    }
}

/// A count in words a person reads at a glance: 28.1 million, 3,400.
pub fn count(n: f64) -> String {
    let a = n.abs();
    if a >= 1e12 {
        format!("{:.3} trillion", n / 1e12)
    } else if a >= 1e9 {
        format!("{:.3} billion", n / 1e9)
    } else if a >= 1e6 {
        format!("{:.3} million", n / 1e6)
    } else if a >= 1e4 {
        format!("{:.1} thousand", n / 1e3)
    } else {
        format!("{}", n.round() as i64)
    }
}

/// Days in the unit that reads best.
pub fn duration_days(d: f64) -> String {
    if d < 1.0 / 24.0 {
        format!("{:.1} minutes", d * 24.0 * 60.0)
    } else if d < 1.0 {
        format!("{:.1} hours", d * 24.0)
    } else if d < 365.0 * 2.0 {
        format!("{d:.1} days")
    } else {
        format!("{:.1} years", d / 365.25)
    }
}

/// A payback with its one-sigma range.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct PaybackEstimate {
    /// From the central values.
    pub central: PaybackPoint,
    /// Earliest within one sigma: cost − σ over saving + σ (the known
    /// sigmas only).
    pub earliest: PaybackPoint,
    /// Latest within one sigma: cost + σ over saving − σ; `Never` when the
    /// saving is within one sigma of zero.
    pub latest: PaybackPoint,
}

impl PaybackEstimate {
    fn compute(cost: Figure, saving: Figure, rate: Option<PredictionsPerDay>) -> PaybackEstimate {
        let (sc, ss) = (cost.sigma.unwrap_or(0.0), saving.sigma.unwrap_or(0.0));
        PaybackEstimate {
            central: PaybackPoint::compute(cost.value, saving.value, rate),
            earliest: PaybackPoint::compute(cost.value - sc, saving.value + ss, rate),
            latest: PaybackPoint::compute(cost.value + sc, saving.value - ss, rate),
        }
    }

    /// Whether the range is a single point (no uncertainty known, or none).
    pub fn is_point(&self) -> bool {
        self.earliest == self.central && self.latest == self.central
    }
}

impl fmt::Display for PaybackEstimate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.central)?;
        if !self.is_point() {
            let end = |p: PaybackPoint| match p {
                PaybackPoint::After { predictions, .. } => count(predictions),
                other => other.to_string(),
            };
            write!(
                f,
                " (1σ range: {} to {})",
                end(self.earliest),
                end(self.latest)
            )?;
        }
        Ok(())
    }
}

/// The same payback in grams of CO₂.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CarbonPayback {
    /// The intensities used.
    pub intensities: CarbonIntensities,
    /// CO₂ the search emitted, grams.
    pub search_co2_g: Figure,
    /// CO₂ saved per prediction, grams.
    pub saving_co2_g_per_prediction: Figure,
    /// When the search's CO₂ is paid back.
    pub payback: PaybackEstimate,
}

/// Whether a search pays for itself: its energy against its pick's saving
/// over a reference.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Payback {
    /// What the saving is measured against.
    pub reference: PaybackReference,
    /// The pick.
    pub pick: Candidate,
    /// Energy the search spent, joules.
    pub search_energy_j: Figure,
    /// Reference minus pick, joules per prediction (negative: the pick
    /// costs more).
    pub saving_j_per_prediction: Figure,
    /// `1 − pick / reference` inference energy (`None` for a zero
    /// reference).
    pub saving_fraction: Option<f64>,
    /// Pick accuracy minus reference accuracy, when both are known.
    pub accuracy_change: Option<f64>,
    /// When the search energy is paid back.
    pub payback: PaybackEstimate,
    /// The rate the days are computed at.
    pub predictions_per_day: Option<PredictionsPerDay>,
    /// The same in CO₂, where carbon intensity is known.
    pub carbon: Option<CarbonPayback>,
    /// Provenance of the figures combined.
    pub provenance: CombinedProvenance,
    /// Figures combined without a known uncertainty (the range leaves them
    /// out).
    pub without_uncertainty: Vec<FigureRole>,
}

/// Difference `a − b` of two figures: uncertainties in quadrature (known
/// only if both are), the weaker provenance.
fn difference(a: Figure, b: Figure) -> Figure {
    Figure {
        value: a.value - b.value,
        sigma: a.sigma.zip(b.sigma).map(|(x, y)| x.hypot(y)),
        provenance: a.provenance.max(b.provenance),
    }
}

/// How much energy the candidate saves per prediction against the
/// reference, with the range-relevant sigma: a figure missing its sigma
/// contributes 0 to the range (and is listed as such by the caller).
fn saving_per_prediction(reference: &Candidate, pick: &Candidate) -> Figure {
    let (r, p) = (reference.energy_j_per_1k, pick.energy_j_per_1k);
    let known = |f: Figure| Figure {
        sigma: Some(f.sigma.unwrap_or(0.0)),
        ..f
    };
    let mut d = difference(known(r), known(p)).scaled(1.0 / 1000.0);
    if r.sigma.is_none() && p.sigma.is_none() {
        d.sigma = None;
    }
    d
}

/// The payback of a search's `pick` against `reference`, given the energy
/// the search spent (`search_energy_j`), an optional rate and optional
/// carbon intensities.
pub fn payback(
    search_energy_j: Figure,
    pick: Candidate,
    reference: PaybackReference,
    predictions_per_day: Option<PredictionsPerDay>,
    carbon: Option<CarbonIntensities>,
) -> Payback {
    let r = reference.candidate().clone();
    let saving = saving_per_prediction(&r, &pick);
    let estimate = PaybackEstimate::compute(search_energy_j, saving, predictions_per_day);
    let carbon = carbon.map(|c| {
        let search_co2 = search_energy_j.scaled(c.search.get() / J_PER_KWH);
        let saving_co2 = saving.scaled(c.deployment.get() / J_PER_KWH);
        CarbonPayback {
            intensities: c,
            search_co2_g: search_co2,
            saving_co2_g_per_prediction: saving_co2,
            payback: PaybackEstimate::compute(search_co2, saving_co2, predictions_per_day),
        }
    });
    let roles = [
        (FigureRole::SearchEnergy, search_energy_j),
        (FigureRole::PickEnergy, pick.energy_j_per_1k),
        (FigureRole::ReferenceEnergy, r.energy_j_per_1k),
    ];
    Payback {
        saving_fraction: (r.energy_j_per_1k.value != 0.0)
            .then(|| 1.0 - pick.energy_j_per_1k.value / r.energy_j_per_1k.value),
        accuracy_change: pick.accuracy.zip(r.accuracy).map(|(a, b)| a - b),
        provenance: CombinedProvenance::of(roles.iter().map(|(k, f)| (*k, f.provenance)).collect()),
        without_uncertainty: roles
            .iter()
            .filter(|(_, f)| f.sigma.is_none())
            .map(|(k, _)| *k)
            .collect(),
        reference,
        pick,
        search_energy_j,
        saving_j_per_prediction: saving,
        payback: estimate,
        predictions_per_day,
        carbon,
    }
}

/// A search as [`search_against_search`] sees it: what it spent and what
/// it picked.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SearchOutcome {
    /// How reports name it (`calibrated`, `multi-trial`, `one-shot`).
    pub label: String,
    /// Energy it spent, joules.
    pub search_energy_j: Figure,
    /// Its pick.
    pub pick: Candidate,
}

/// Whether the costlier of two searches repays its extra energy through a
/// better pick.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SearchPayback {
    /// The search that spent more (on a tie, the one with the thriftier
    /// pick).
    pub costlier: SearchOutcome,
    /// The other.
    pub cheaper: SearchOutcome,
    /// Costlier minus cheaper search energy, joules (≥ 0).
    pub extra_search_energy_j: Figure,
    /// Cheaper pick's inference energy minus the costlier pick's, joules
    /// per prediction (positive: the costlier search found a thriftier
    /// network).
    pub saving_j_per_prediction: Figure,
    /// When the extra search energy is repaid; `Never` when the costlier
    /// search's pick saves nothing: the cheaper search then wins outright.
    pub payback: PaybackEstimate,
    /// Provenance of the four figures combined (search energies and picks
    /// of both, in that order: costlier, cheaper).
    pub provenance: CombinedProvenance,
    /// How many of those four figures came without an uncertainty (the
    /// range leaves them out).
    pub figures_without_uncertainty: usize,
}

/// Compares two searches (e.g. a calibrated or one-shot search against a
/// multi-trial one): the costlier one's extra energy against the saving of
/// its pick over the other's.
pub fn search_against_search(
    a: SearchOutcome,
    b: SearchOutcome,
    predictions_per_day: Option<PredictionsPerDay>,
) -> SearchPayback {
    // On a tie in search energy, the one with the thriftier pick is taken
    // as the "costlier": its better pick then comes at no extra cost, which
    // reads "immediately".
    let b_first = match b.search_energy_j.value.total_cmp(&a.search_energy_j.value) {
        std::cmp::Ordering::Greater => true,
        std::cmp::Ordering::Less => false,
        std::cmp::Ordering::Equal => b.pick.energy_j_per_1k.value < a.pick.energy_j_per_1k.value,
    };
    let (costlier, cheaper) = if b_first { (b, a) } else { (a, b) };
    let extra = difference(costlier.search_energy_j, cheaper.search_energy_j);
    let saving = saving_per_prediction(&cheaper.pick, &costlier.pick);
    let provenance = CombinedProvenance::of(vec![
        (
            FigureRole::SearchEnergy,
            costlier.search_energy_j.provenance,
        ),
        (
            FigureRole::PickEnergy,
            costlier.pick.energy_j_per_1k.provenance,
        ),
        (FigureRole::SearchEnergy, cheaper.search_energy_j.provenance),
        (
            FigureRole::ReferenceEnergy,
            cheaper.pick.energy_j_per_1k.provenance,
        ),
    ]);
    let figures_without_uncertainty = [
        costlier.search_energy_j,
        costlier.pick.energy_j_per_1k,
        cheaper.search_energy_j,
        cheaper.pick.energy_j_per_1k,
    ]
    .iter()
    .filter(|f| f.sigma.is_none())
    .count();
    SearchPayback {
        figures_without_uncertainty,
        payback: PaybackEstimate::compute(extra, saving, predictions_per_day),
        extra_search_energy_j: extra,
        saving_j_per_prediction: saving,
        provenance,
        costlier,
        cheaper,
    }
}

/// Energy a set of trials spent, as a figure: the sum of `energy_spent_j`,
/// its uncertainty (the per-trial sigmas in quadrature, known only when
/// every trial that spent energy reported one) and the weakest provenance
/// (a trial naming none counts as estimated). `None` when no trial
/// reported energy.
pub fn search_energy_figure(trials: &[TrialRecord]) -> Option<Figure> {
    let mut total: Option<Figure> = None;
    for t in trials {
        let Some(e) = t.energy_spent_j.filter(|e| e.is_finite()) else {
            continue;
        };
        let sigma = t
            .metrics
            .as_ref()
            .and_then(|m| m.get(metric::ENERGY_SPENT_SIGMA_J).copied())
            .filter(|s| s.is_finite());
        let p = t
            .provenance
            .map_or(FigureProvenance::Estimated, FigureProvenance::from);
        let f = Figure {
            value: e,
            sigma: sigma.map(f64::abs),
            provenance: p,
        };
        total = Some(match total {
            None => f,
            Some(acc) => Figure {
                value: acc.value + f.value,
                sigma: acc.sigma.zip(f.sigma).map(|(x, y)| x.hypot(y)),
                provenance: acc.provenance.max(f.provenance),
            },
        });
    }
    total
}

/// The most accurate finished full-fidelity trial with an inference energy
/// (measured, or predicted as `metrics` declares; ties go to the
/// cheaper), as a candidate.
pub fn most_accurate(trials: &[TrialRecord], metrics: &MetricRegistry) -> Option<Candidate> {
    trials
        .iter()
        .filter(|t| t.status == TrialStatus::Finished && (t.fidelity - 1.0).abs() < 1e-9)
        .filter_map(|t| Candidate::of_trial(t, metrics))
        .filter(|c| c.accuracy.is_some())
        .max_by(|a, b| {
            let (x, y) = (a.accuracy.unwrap_or(0.0), b.accuracy.unwrap_or(0.0));
            x.total_cmp(&y)
                .then(b.energy_j_per_1k.value.total_cmp(&a.energy_j_per_1k.value))
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cand(j_per_1k: f64, sigma: Option<f64>, p: FigureProvenance) -> Candidate {
        Candidate {
            trial: Some(1),
            accuracy: Some(0.9),
            energy_j_per_1k: Figure {
                value: j_per_1k,
                sigma,
                provenance: p,
            },
        }
    }

    fn after(p: PaybackPoint) -> f64 {
        match p {
            PaybackPoint::After { predictions, .. } => predictions,
            other => panic!("expected a finite payback, got {other:?}"),
        }
    }

    #[test]
    fn payback_with_a_saving_by_hand() {
        use FigureProvenance::Estimated;
        // The satimage case: 76 J spent; the pick needs 0.00324 J
        // per 1000 predictions, the accuracy-only pick 0.00594 J, a saving
        // of 0.0027 J per 1000 = 2.7e-6 J per prediction.
        // 76 / 2.7e-6 = 28,148,148.1 predictions.
        let p = payback(
            Figure::new(76.0, Estimated),
            cand(0.00324, None, Estimated),
            PaybackReference::AccuracyOnlyPick(cand(0.00594, None, Estimated)),
            None,
            None,
        );
        assert!((p.saving_j_per_prediction.value - 2.7e-6).abs() < 1e-15);
        assert!((after(p.payback.central) - 28_148_148.148).abs() < 1.0);
        assert!((p.saving_fraction.unwrap() - 0.454_545_45).abs() < 1e-6);
        assert!(p.payback.is_point(), "no sigma known: no range");
        assert_eq!(
            p.without_uncertainty,
            vec![
                FigureRole::SearchEnergy,
                FigureRole::PickEnergy,
                FigureRole::ReferenceEnergy
            ]
        );
        assert_eq!(
            p.payback.central.to_string(),
            "after 28.148 million predictions"
        );
        assert_eq!(p.provenance.to_string(), "estimated");
    }

    #[test]
    fn no_saving_is_never_not_a_division_by_zero() {
        use FigureProvenance::Measured;
        let same = payback(
            Figure::new(50.0, Measured),
            cand(2.0, None, Measured),
            PaybackReference::AccuracyOnlyPick(cand(2.0, None, Measured)),
            Some(PredictionsPerDay::new(1e6).unwrap()),
            None,
        );
        assert_eq!(same.payback.central, PaybackPoint::Never);
        assert_eq!(same.saving_j_per_prediction.value, 0.0);
        // A pick costing more than the reference: never either.
        let worse = payback(
            Figure::new(50.0, Measured),
            cand(3.0, None, Measured),
            PaybackReference::AccuracyOnlyPick(cand(2.0, None, Measured)),
            None,
            None,
        );
        assert_eq!(worse.payback.central, PaybackPoint::Never);
        assert_eq!(worse.payback.central.to_string(), "never");
        assert!((worse.saving_fraction.unwrap() + 0.5).abs() < 1e-12);
        // A zero reference has no saving fraction (not a division by zero).
        let zero = payback(
            Figure::new(50.0, Measured),
            cand(0.0, None, Measured),
            PaybackReference::AccuracyOnlyPick(cand(0.0, None, Measured)),
            None,
            None,
        );
        assert_eq!(zero.saving_fraction, None);
        assert_eq!(zero.payback.central, PaybackPoint::Never);
        // Nothing spent and something saved: immediately.
        assert_eq!(
            PaybackPoint::compute(0.0, 1e-6, None),
            PaybackPoint::Immediately
        );
        assert_eq!(
            PaybackPoint::compute(5.0, f64::NAN, None),
            PaybackPoint::Never
        );
    }

    #[test]
    fn days_at_a_stated_rate() {
        use FigureProvenance::Measured;
        // 100 J over (5 - 3) J / 1000 = 2e-3 J per prediction: 50,000
        // predictions; at 20,000 a day, 2.5 days.
        let p = payback(
            Figure::new(100.0, Measured),
            cand(3.0, None, Measured),
            PaybackReference::AccuracyOnlyPick(cand(5.0, None, Measured)),
            Some(PredictionsPerDay::new(20_000.0).unwrap()),
            None,
        );
        match p.payback.central {
            PaybackPoint::After { predictions, days } => {
                assert!((predictions - 50_000.0).abs() < 1e-6);
                assert!((days.unwrap() - 2.5).abs() < 1e-12);
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(
            p.payback.central.to_string(),
            "after 50.0 thousand predictions (2.5 days)"
        );
        assert!(PredictionsPerDay::new(0.0).is_err());
        assert!(PredictionsPerDay::new(f64::INFINITY).is_err());
        assert!("-3".parse::<PredictionsPerDay>().is_err());
        assert!("lots".parse::<PredictionsPerDay>().is_err());
        assert_eq!("2e4".parse::<PredictionsPerDay>().unwrap().get(), 20_000.0);
    }

    #[test]
    fn user_given_baseline_and_mixed_provenance() {
        use FigureProvenance::{Estimated, Predicted, UserGiven};
        // Baseline 10 J/1k ± 1 (user-given); pick predicted 4 J/1k ± 0.5;
        // search 300 J ± 30 estimated.
        // saving = 6e-3 J/prediction, sigma = hypot(1, 0.5)/1000 = 1.1180e-3.
        // central 300 / 6e-3 = 50,000;
        // earliest (300 - 30) / (6e-3 + 1.1180e-3) = 37,931.8;
        // latest (300 + 30) / (6e-3 - 1.1180e-3) = 67,595.7.
        let baseline = PaybackReference::baseline(10.0, Some(1.0), Some(0.91)).unwrap();
        let mut pick = cand(4.0, Some(0.5), Predicted);
        pick.accuracy = Some(0.90);
        let p = payback(
            Figure::with_sigma(300.0, 30.0, Estimated),
            pick,
            baseline,
            None,
            None,
        );
        let s = 1.0f64.hypot(0.5) / 1000.0;
        assert!((p.saving_j_per_prediction.sigma.unwrap() - s).abs() < 1e-15);
        assert!((after(p.payback.central) - 50_000.0).abs() < 1e-6);
        assert!((after(p.payback.earliest) - 270.0 / (6e-3 + s)).abs() < 1e-6);
        assert!((after(p.payback.latest) - 330.0 / (6e-3 - s)).abs() < 1e-6);
        assert!((after(p.payback.earliest) - 37_931.8).abs() < 0.1);
        assert!((after(p.payback.latest) - 67_595.7).abs() < 0.1);
        assert!((p.accuracy_change.unwrap() + 0.01).abs() < 1e-12);
        assert!(p.without_uncertainty.is_empty());
        // Mixed: estimated search, predicted pick, user-given reference;
        // the weakest is the user-given figure.
        assert!(p.provenance.is_mixed());
        assert_eq!(p.provenance.weakest, UserGiven);
        assert_eq!(
            p.provenance.to_string(),
            "user-given at best (search energy estimated, pick's inference energy predicted, reference's inference energy user-given)"
        );
        assert_eq!(p.reference.describe(), "the user-given baseline model");
        assert!(PaybackReference::baseline(0.0, None, None).is_err());
        assert!(PaybackReference::baseline(f64::NAN, None, None).is_err());
        assert!(BaselineModel::new(1.0, Some(-1.0), None).is_err());
        assert!(BaselineModel::new(1.0, None, Some(91.0)).is_err());
    }

    #[test]
    fn a_saving_within_its_uncertainty_may_never_pay_back() {
        use FigureProvenance::Measured;
        // saving 1e-3 J/prediction ± hypot(1, 1)/1000 = 1.414e-3: the
        // latest end is never.
        let p = payback(
            Figure::new(10.0, Measured),
            cand(4.0, Some(1.0), Measured),
            PaybackReference::AccuracyOnlyPick(cand(5.0, Some(1.0), Measured)),
            None,
            None,
        );
        assert!((after(p.payback.central) - 10_000.0).abs() < 1e-6);
        assert_eq!(p.payback.latest, PaybackPoint::Never);
        assert_eq!(p.without_uncertainty, vec![FigureRole::SearchEnergy]);
        assert_eq!(
            p.payback.to_string(),
            "after 10.0 thousand predictions (1σ range: 4142 to never)"
        );
    }

    #[test]
    fn carbon_payback_by_hand() {
        use FigureProvenance::Estimated;
        // Search 3.6e6 J = 1 kWh at 100 g/kWh = 100 g. Saving 1 J/1k =
        // 1e-3 J per prediction at 400 g/kWh = 1e-3 / 3.6e6 * 400 g =
        // 1.1111e-7 g. Payback: 100 / 1.1111e-7 = 9e8 predictions, a
        // quarter of the energy payback (3.6e9): a search run on a grid
        // four times cleaner than the deployment's pays back sooner in CO₂.
        let c = CarbonIntensities {
            search: GramsCo2PerKwh::new(100.0).unwrap(),
            deployment: GramsCo2PerKwh::new(400.0).unwrap(),
            source: None,
        };
        let p = payback(
            Figure::new(3.6e6, Estimated),
            cand(1.0, None, Estimated),
            PaybackReference::AccuracyOnlyPick(cand(2.0, None, Estimated)),
            None,
            Some(c),
        );
        let carbon = p.carbon.unwrap();
        assert!((carbon.search_co2_g.value - 100.0).abs() < 1e-9);
        assert!((after(carbon.payback.central) / 9e8 - 1.0).abs() < 1e-12);
        assert!((after(p.payback.central) / 3.6e9 - 1.0).abs() < 1e-12);
        assert!(GramsCo2PerKwh::new(-1.0).is_err());
        assert!(GramsCo2PerKwh::new(f64::NAN).is_err());
        // A fully clean hour is a valid intensity.
        assert_eq!(GramsCo2PerKwh::new(0.0).unwrap().get(), 0.0);
    }

    #[test]
    fn calibrated_search_against_multi_trial() {
        use FigureProvenance::{Estimated, Predicted};
        let outcome = |label: &str, spent: f64, pick_j: f64, p| SearchOutcome {
            label: label.into(),
            search_energy_j: Figure::new(spent, Estimated),
            pick: cand(pick_j, None, p),
        };
        // Multi-trial spent 160 J more and its pick saves 2 J/1k = 2e-3 J
        // per prediction: repaid after 80,000 predictions.
        let s = search_against_search(
            outcome("calibrated", 40.0, 5.0, Predicted),
            outcome("multi-trial", 200.0, 3.0, Estimated),
            Some(PredictionsPerDay::new(8_000.0).unwrap()),
        );
        assert_eq!(s.costlier.label, "multi-trial");
        assert!((s.extra_search_energy_j.value - 160.0).abs() < 1e-12);
        assert_eq!(
            s.payback.central,
            PaybackPoint::After {
                predictions: 80_000.0,
                days: Some(10.0)
            }
        );
        assert_eq!(s.provenance.weakest, Predicted);
        // The costlier search's pick is no better: the cheaper one wins
        // outright, and the extra energy is never repaid.
        let s = search_against_search(
            outcome("calibrated", 40.0, 3.0, Predicted),
            outcome("multi-trial", 200.0, 3.0, Estimated),
            None,
        );
        assert_eq!(s.payback.central, PaybackPoint::Never);
        // Equal search energy, better pick: immediately.
        let s = search_against_search(
            outcome("a", 40.0, 5.0, Estimated),
            outcome("b", 40.0, 3.0, Estimated),
            None,
        );
        assert_eq!(s.payback.central, PaybackPoint::Immediately);
    }

    #[test]
    fn figures_from_trials() {
        use crate::space::{Config, ParamValue};
        let mut config = Config::default();
        config.0.insert("w".into(), ParamValue::Int(1));
        let base = TrialRecord {
            number: 3,
            config_key: config.key(),
            config,
            fidelity: 1.0,
            tag: None,
            status: TrialStatus::Finished,
            worker: None,
            seed: 0,
            metrics: Some(
                [
                    (metric::VAL_ACCURACY, 0.8),
                    ("model_inference_j_per_1k", 2.0),
                    ("model_inference_sd_j_per_1k", 0.2),
                    (metric::ENERGY_SPENT_SIGMA_J, 3.0),
                ]
                .into_iter()
                .map(|(k, v)| (k.to_string(), v))
                .collect(),
            ),
            kernel_energy: Vec::new(),
            provenance: Some(Provenance::Estimated),
            energy_spent_j: Some(10.0),
            error: None,
            notes: Vec::new(),
            created_ns: 0,
            started_ns: None,
            finished_ns: None,
            finish_seq: None,
            eval_ns: None,
            overhead_ns: None,
            attempts: 1,
        };
        // The registry says which metric predicts the inference energy, and
        // which holds that prediction's uncertainty (names need not say).
        use crate::metric::{MetricInfo, MetricRegistry};
        use crate::objective::Direction::Minimize;
        let registry = MetricRegistry::new([
            MetricInfo::measured(metric::INFERENCE_ENERGY_J_PER_1K, "J", Minimize),
            MetricInfo::predicted(
                "model_inference_j_per_1k",
                "J",
                Minimize,
                metric::INFERENCE_ENERGY_J_PER_1K,
            ),
            MetricInfo::predicted(
                "model_inference_sd_j_per_1k",
                "J",
                Minimize,
                metric::INFERENCE_ENERGY_J_PER_1K,
            )
            .uncertainty_of("model_inference_j_per_1k"),
        ])
        .unwrap();
        // Without the registry the prediction means nothing.
        assert_eq!(Candidate::of_trial(&base, &MetricRegistry::default()), None);
        // Only predicted: the prediction and its sigma, provenance predicted.
        let c = Candidate::of_trial(&base, &registry).unwrap();
        assert_eq!(
            c.energy_j_per_1k,
            Figure::with_sigma(2.0, 0.2, FigureProvenance::Predicted)
        );
        // Re-measured: the measurement wins, with the trial's provenance.
        let mut measured = base.clone();
        measured.number = 4;
        let m = measured.metrics.as_mut().unwrap();
        m.insert(metric::INFERENCE_ENERGY_J_PER_1K.into(), 2.5);
        m.insert("val_accuracy".into(), 0.85);
        let c = Candidate::of_trial(&measured, &registry).unwrap();
        assert_eq!(Candidate::of_measured_trial(&measured), Some(c.clone()));
        assert_eq!(
            c.energy_j_per_1k,
            Figure::new(2.5, FigureProvenance::Estimated)
        );
        // Sum with sigmas in quadrature: 20 J ± hypot(3, 4) = 5.
        measured
            .metrics
            .as_mut()
            .unwrap()
            .insert(metric::ENERGY_SPENT_SIGMA_J.into(), 4.0);
        let total = search_energy_figure(&[base.clone(), measured.clone()]).unwrap();
        assert_eq!(
            total,
            Figure::with_sigma(20.0, 5.0, FigureProvenance::Estimated)
        );
        // One trial without a sigma: the sum's sigma is unknown.
        let mut bare = base.clone();
        bare.metrics = None;
        bare.provenance = Some(Provenance::Measured);
        let total = search_energy_figure(&[base.clone(), bare]).unwrap();
        assert_eq!(total.sigma, None);
        assert_eq!(total.provenance, FigureProvenance::Estimated);
        assert_eq!(
            most_accurate(&[base, measured], &registry).unwrap().trial,
            Some(4)
        );
        assert_eq!(search_energy_figure(&[]), None);
    }
}
