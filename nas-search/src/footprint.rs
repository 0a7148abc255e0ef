//! The carbon footprint of a search: the energy its trials spent, charged at
//! the grid intensity of the hours it was spent in, times the PUE.
//!
//! [`account_search`] builds one `carbon::EnergyRecord` from the trials
//! (every trial that reported `energy_spent_j`, failed ones included: the
//! same trials as the search-energy figure of the payback) and hands it to
//! `carbon::account`: energy split pro rata by time across UTC hours, each
//! hour at its own intensity, × PUE. The result, [`SearchCarbon`], names the
//! intensity source, its kind (average / marginal), the PUE and the energy's
//! provenance, and gives the payback its intensities
//! ([`SearchCarbon::intensities`]).
//!
//! Time: a trial runs from `started_ns` (its last claim) to `finished_ns`
//! (its result committed), CLOCK_MONOTONIC of its worker's machine. These
//! are placed on the UTC calendar with a `carbon::ClockAnchor` read here,
//! which is only valid for trials run in this boot (the worker id names
//! the boot). A trial of another boot, or without times, cannot be placed:
//! with a time-varying source (a trace) that is an error naming the trial,
//! never a guess; with a constant source (`const:`, `cmd:`) time does not
//! matter and every trial is charged at that one value. The anchor also
//! assumes the wall clock was not stepped and the machine not suspended
//! between the trial and the report (CLOCK_MONOTONIC stops in suspend).

use crate::payback::{search_energy_figure, CarbonIntensities, FigureProvenance, GramsCo2PerKwh};
use crate::study::{TrialRecord, WorkerIdentity};
use carbon::{
    ClockAnchor, EnergyInterval, EnergyProvenance, EnergyRecord, IntensityKind, IntensitySignal,
    Pue, UtcMillis,
};
use serde::Serialize;
use std::fmt;

/// Where this process stands in time: both clocks read together, and the
/// boot they belong to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClockContext {
    /// CLOCK_MONOTONIC and UTC read back to back.
    pub anchor: ClockAnchor,
    /// The kernel boot id of this machine (`/proc/sys/kernel/random/boot_id`).
    pub boot_id: String,
}

impl ClockContext {
    /// Reads the clocks and the boot id now.
    pub fn current() -> ClockContext {
        ClockContext {
            anchor: ClockAnchor::now(),
            boot_id: WorkerIdentity::current(0).boot_id,
        }
    }
}

/// Whether the PUE was given or is the default (stated in every report).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum PueOrigin {
    /// `--pue` was given.
    Given,
    /// Not given: 1.0, no facility overhead counted (CodeCarbon's default).
    Default,
}

/// What the carbon of a search is computed with.
#[derive(Debug, Clone, PartialEq)]
pub struct CarbonSettings {
    /// The grid intensity signal (constant or hourly), with its source.
    pub signal: IntensitySignal,
    /// Facility energy over IT energy.
    pub pue: Pue,
    /// Whether the PUE was given.
    pub pue_origin: PueOrigin,
    /// The clocks, to place trial times on the calendar.
    pub clock: ClockContext,
}

/// Why a search's carbon cannot be computed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum FootprintError {
    /// A trial that spent energy has no start or finish time, and the
    /// source varies by hour.
    #[error("trial {trial} reported energy but has no start/finish time, so the hour it was spent in is unknown and the time-varying source {source_name} cannot be applied; give a constant source (const:G) instead")]
    NoTimes {
        /// The trial number.
        trial: u64,
        /// The intensity source.
        source_name: String,
    },
    /// A trial ran in another boot (or its worker is unknown): its
    /// monotonic times cannot be placed on the calendar here.
    #[error("trial {trial} ran on worker {worker:?}, not in this boot ({boot_id}): its CLOCK_MONOTONIC times cannot be placed on the UTC calendar here, so the time-varying source {source_name} cannot be applied; report on the machine and boot the search ran in, or give a constant source (const:G)")]
    OtherBoot {
        /// The trial number.
        trial: u64,
        /// The trial's worker id (`host/boot/pid/start/thread`), or `unknown`.
        worker: String,
        /// This machine's boot id.
        boot_id: String,
        /// The intensity source.
        source_name: String,
    },
    /// A trial finished before it started.
    #[error("trial {trial}: finished ({finished_ns} ns) before it started ({started_ns} ns)")]
    BadTimes {
        /// The trial number.
        trial: u64,
        /// Its start, CLOCK_MONOTONIC ns.
        started_ns: u64,
        /// Its finish, CLOCK_MONOTONIC ns.
        finished_ns: u64,
    },
    /// The accounting itself failed (an hour the trace lacks, …).
    #[error("charging the search's energy: {0}")]
    Carbon(#[from] carbon::CarbonError),
    /// An intensity the payback cannot use.
    #[error("{0}")]
    Payback(#[from] crate::payback::PaybackError),
}

/// Average or marginal, as reports write it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum SignalKind {
    /// Emissions of the whole generation mix per kWh.
    Average,
    /// Emissions of the marginal generator per extra kWh (WattTime MOER).
    Marginal,
}

impl From<IntensityKind> for SignalKind {
    fn from(k: IntensityKind) -> SignalKind {
        match k {
            IntensityKind::Average => SignalKind::Average,
            IntensityKind::Marginal => SignalKind::Marginal,
        }
    }
}

impl fmt::Display for SignalKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            SignalKind::Average => "average",
            SignalKind::Marginal => "marginal",
        })
    }
}

/// How the trials were placed in time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum CarbonTiming {
    /// Each trial's energy was charged to the UTC hours between its start
    /// and finish (CLOCK_MONOTONIC mapped to UTC in this boot).
    HourlyFromTrialTimes,
    /// The source is one value for every hour: time does not matter.
    ConstantIntensity,
}

/// The carbon of one UTC hour of the search.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct HourRow {
    /// Start of the hour, UTC `YYYY-MM-DD HH:MM:SS`.
    #[serde(serialize_with = "utc_text")]
    pub hour_start: UtcMillis,
    /// IT energy spent in the hour, kWh (before PUE).
    pub it_energy_kwh: f64,
    /// The hour's intensity, gCO2eq/kWh.
    pub intensity_g_per_kwh: f64,
    /// Emissions, gCO2eq (IT energy × PUE × intensity).
    pub grams_co2eq: f64,
}

fn utc_text<S: serde::Serializer>(t: &UtcMillis, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&t.to_string())
}

/// The carbon a search emitted, and everything it rests on.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SearchCarbon {
    /// Total emissions, gCO2eq (0 when no trial reported energy).
    pub grams_co2eq: f64,
    /// IT energy charged, kWh (the sum of the trials' `energy_spent_j`).
    pub it_energy_kwh: f64,
    /// The PUE applied.
    pub pue: f64,
    /// Whether the PUE was given or is the default 1.0.
    pub pue_origin: PueOrigin,
    /// The intensity source, as its spec (`trace:…`, `const:…`).
    pub intensity_source: String,
    /// Average or marginal: what the grams mean.
    pub intensity_kind: SignalKind,
    /// Provenance of the energy charged: the weakest of the trials'
    /// (`None` when no trial reported energy).
    pub energy_provenance: Option<FigureProvenance>,
    /// Trials whose energy was charged.
    pub trials_charged: usize,
    /// How the trials were placed in time.
    pub timing: CarbonTiming,
    /// Per-hour breakdown (hourly timing only), in time order.
    pub hours: Vec<HourRow>,
    /// Grams per kWh of IT energy: grams / IT energy (PUE included);
    /// `None` without energy.
    pub search_intensity_g_per_kwh: Option<f64>,
    /// The intensity the pick's savings are charged at while it serves,
    /// PUE included: the source's constant, or the mean of every hour the
    /// trace holds (the serving hours are in the future).
    pub deployment_intensity_g_per_kwh: f64,
    /// Hours of the source the deployment intensity is the mean of
    /// (`None` for a constant).
    pub deployment_hours: Option<usize>,
}

impl SearchCarbon {
    /// The intensities a payback needs, labelled with this source; `None`
    /// when the search spent no energy.
    pub fn intensities(&self) -> Option<CarbonIntensities> {
        let search = GramsCo2PerKwh::new(self.search_intensity_g_per_kwh?).ok()?;
        let deployment = GramsCo2PerKwh::new(self.deployment_intensity_g_per_kwh).ok()?;
        Some(CarbonIntensities {
            search,
            deployment,
            source: Some(self.label()),
        })
    }

    /// `average intensity from trace:x.csv, PUE 1.2`.
    pub fn label(&self) -> String {
        format!(
            "{} intensity from {}, PUE {:?}{}",
            self.intensity_kind,
            self.intensity_source,
            self.pue,
            match self.pue_origin {
                PueOrigin::Given => "",
                PueOrigin::Default => " (default: no facility overhead counted)",
            }
        )
    }

    /// How the deployment intensity was found, in words.
    pub fn deployment_basis(&self) -> String {
        match self.deployment_hours {
            None => format!(
                "the constant {} × PUE",
                self.deployment_intensity_g_per_kwh / self.pue
            ),
            Some(n) => format!("the mean of the source's {n} hours × PUE"),
        }
    }
}

/// Charges the energy of `trials` at `settings`' intensity (see the module
/// doc for how trials are placed in time).
pub fn account_search(
    trials: &[TrialRecord],
    settings: &CarbonSettings,
) -> Result<SearchCarbon, FootprintError> {
    let source = settings.signal.source();
    let constant = matches!(settings.signal, IntensitySignal::Constant { .. });
    let mut intervals = Vec::new();
    for t in trials {
        let Some(joules) = t.energy_spent_j.filter(|e| e.is_finite()) else {
            continue;
        };
        if constant {
            // One value for every hour: the instant charged is immaterial.
            intervals.push(EnergyInterval::from_joules(
                UtcMillis(0),
                UtcMillis(0),
                joules,
            ));
            continue;
        }
        let (Some(started_ns), Some(finished_ns)) = (t.started_ns, t.finished_ns) else {
            return Err(FootprintError::NoTimes {
                trial: t.number,
                source_name: source.name.clone(),
            });
        };
        let boot = t.worker.as_deref().and_then(|w| w.split('/').nth(1));
        if boot != Some(settings.clock.boot_id.as_str()) {
            return Err(FootprintError::OtherBoot {
                trial: t.number,
                worker: t.worker.clone().unwrap_or_else(|| "unknown".into()),
                boot_id: settings.clock.boot_id.clone(),
                source_name: source.name.clone(),
            });
        }
        if finished_ns < started_ns {
            return Err(FootprintError::BadTimes {
                trial: t.number,
                started_ns,
                finished_ns,
            });
        }
        let at = |ns: u64| settings.clock.anchor.to_utc(shared::MonotonicNs(ns));
        intervals.push(EnergyInterval::from_joules(
            at(started_ns),
            at(finished_ns),
            joules,
        ));
    }
    let energy_provenance = search_energy_figure(trials).map(|f| f.provenance);
    let record = EnergyRecord {
        provenance: energy_provenance.map_or(EnergyProvenance::Estimated, energy_provenance_of),
        intervals,
    };
    let trials_charged = record.intervals.len();
    let report = carbon::account(&record, &settings.signal, settings.pue)?;
    let (deployment, deployment_hours) = match &settings.signal {
        IntensitySignal::Constant { value, .. } => (value.get(), None),
        IntensitySignal::Hourly(h) => {
            let known: Vec<f64> = h.values.iter().flatten().copied().collect();
            // A parsed trace has at least one row, so at least one hour.
            let mean = known.iter().sum::<f64>() / known.len().max(1) as f64;
            (mean, Some(known.len()))
        }
    };
    Ok(SearchCarbon {
        grams_co2eq: report.grams_co2eq,
        it_energy_kwh: report.it_energy_kwh,
        pue: settings.pue.get(),
        pue_origin: settings.pue_origin,
        intensity_source: source.name.clone(),
        intensity_kind: source.kind.into(),
        energy_provenance,
        trials_charged,
        timing: if constant {
            CarbonTiming::ConstantIntensity
        } else {
            CarbonTiming::HourlyFromTrialTimes
        },
        hours: if constant {
            Vec::new()
        } else {
            report
                .hours
                .iter()
                .map(|h| HourRow {
                    hour_start: h.hour_start,
                    it_energy_kwh: h.it_energy_kwh,
                    intensity_g_per_kwh: h.intensity,
                    grams_co2eq: h.grams_co2eq,
                })
                .collect()
        },
        search_intensity_g_per_kwh: report.effective_intensity().map(|g| g.get()),
        deployment_intensity_g_per_kwh: deployment * settings.pue.get(),
        deployment_hours,
    })
}

/// The carbon crate's provenance of a search-energy figure (a search's
/// energy is never user-given; were it, it is no better than estimated).
fn energy_provenance_of(p: FigureProvenance) -> EnergyProvenance {
    match p {
        FigureProvenance::Measured => EnergyProvenance::Measured,
        FigureProvenance::Estimated | FigureProvenance::UserGiven => EnergyProvenance::Estimated,
        FigureProvenance::Predicted => EnergyProvenance::Predicted,
        FigureProvenance::Simulated => EnergyProvenance::Simulated,
    }
}
