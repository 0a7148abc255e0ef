//! The search's carbon through the report path: a small study whose trials
//! span UTC hour boundaries, charged against trace files written in a
//! temporary directory; every gram recomputed by hand.

mod fixture;

use carbon::{ClockAnchor, IntensitySpec, Pue, UtcMillis};
use nas_search::footprint::{
    account_search, CarbonSettings, CarbonTiming, ClockContext, FootprintError, PueOrigin,
    SignalKind,
};
use nas_search::payback::{FigureProvenance, PaybackSettings};
use nas_search::report::write_report_with;
use nas_search::study::{TrialRecord, TrialStatus};
use shared::Provenance;
use std::path::Path;

/// 2020-01-01 00:00:00 UTC, ms.
const T0_MS: i64 = 1_577_836_800_000;
const MIN_NS: u64 = 60_000_000_000;
/// Monotonic time (ns) of the anchor: 100 s after boot ↔ 2020-01-01 00:00 UTC.
const ANCHOR_NS: u64 = 100_000_000_000;
const BOOT: &str = "boot-A";

fn clock() -> ClockContext {
    ClockContext {
        anchor: ClockAnchor::new(shared::MonotonicNs(ANCHOR_NS), UtcMillis(T0_MS)),
        boot_id: BOOT.into(),
    }
}

/// A trial run from `from_min` to `to_min` minutes after 00:00 UTC in boot
/// `BOOT`, spending `kwh`.
fn timed(
    number: u64,
    acc: f64,
    j_per_1k: f64,
    from_min: u64,
    to_min: u64,
    kwh: f64,
) -> TrialRecord {
    let mut t = fixture::trial(
        number,
        &[16],
        &[
            ("val_accuracy", acc),
            ("inference_energy_j_per_1k", j_per_1k),
        ],
        Some(kwh * 3.6e6),
        Provenance::Measured,
    );
    t.worker = Some(format!("host/{BOOT}/4242/77/0"));
    t.started_ns = Some(ANCHOR_NS + from_min * MIN_NS);
    t.finished_ns = Some(ANCHOR_NS + to_min * MIN_NS);
    t
}

/// Trial 0: 00:30–01:30, 2 kWh (1 kWh in each hour); the most accurate,
/// 2 J/1k. Trial 1: 01:30–02:00, 1 kWh; the pick (0.89 ≥ 0.98 × 0.90),
/// 1 J/1k. Trial 2: 02:00–02:15, 0.5 kWh, failed.
fn trials() -> Vec<TrialRecord> {
    let mut failed = timed(2, 0.80, 0.5, 120, 135, 0.5);
    failed.status = TrialStatus::Failed;
    failed.metrics = None;
    vec![
        timed(0, 0.90, 2.0, 30, 90, 2.0),
        timed(1, 0.89, 1.0, 90, 120, 1.0),
        failed,
    ]
}

fn write(dir: &Path, name: &str, text: &str) -> std::path::PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p
}

/// Hour 00: points 80 and 120 (mean 100); hour 01: 300; hour 02: 50.
const TRACE: &str = "Time,Carbon Intensity\n\
    2020-01-01 00:00:00,80\n\
    2020-01-01 00:30:00,120\n\
    2020-01-01 01:00:00,300\n\
    2020-01-01 02:00:00,50\n";

fn settings_for(spec: &str, pue: Option<f64>) -> CarbonSettings {
    let signal = spec.parse::<IntensitySpec>().unwrap().load().unwrap();
    CarbonSettings {
        signal,
        pue: Pue::new(pue.unwrap_or(1.0)).unwrap(),
        pue_origin: if pue.is_some() {
            PueOrigin::Given
        } else {
            PueOrigin::Default
        },
        clock: clock(),
    }
}

#[test]
fn trials_across_hour_boundaries_are_charged_hour_by_hour_with_pue() {
    let tmp = tempfile::tempdir().unwrap();
    let trace = write(tmp.path(), "grid.csv", TRACE);
    let spec_text = format!("trace:{}", trace.display());
    let c = account_search(&trials(), &settings_for(&spec_text, Some(1.5))).unwrap();
    // By hand: hour 00 1 kWh × 100, hour 01 (1 + 1) kWh × 300, hour 02
    // 0.5 kWh × 50 = 725 g; × PUE 1.5 = 1087.5 g over 3.5 kWh.
    assert!((c.grams_co2eq - 1087.5).abs() < 1e-9, "{}", c.grams_co2eq);
    assert!((c.it_energy_kwh - 3.5).abs() < 1e-12);
    assert_eq!(c.trials_charged, 3, "the failed trial spent energy too");
    assert_eq!(c.timing, CarbonTiming::HourlyFromTrialTimes);
    let hours: Vec<(String, f64, f64, f64)> = c
        .hours
        .iter()
        .map(|h| {
            (
                h.hour_start.to_string(),
                h.it_energy_kwh,
                h.intensity_g_per_kwh,
                h.grams_co2eq,
            )
        })
        .collect();
    let expected = [
        ("2020-01-01 00:00:00", 1.0, 100.0, 150.0),
        ("2020-01-01 01:00:00", 2.0, 300.0, 900.0),
        ("2020-01-01 02:00:00", 0.5, 50.0, 37.5),
    ];
    assert_eq!(hours.len(), 3);
    for (got, want) in hours.iter().zip(expected) {
        assert_eq!(got.0, want.0);
        assert!((got.1 - want.1).abs() < 1e-12, "{got:?}");
        assert!((got.2 - want.2).abs() < 1e-12, "{got:?}");
        assert!((got.3 - want.3).abs() < 1e-9, "{got:?}");
    }
    assert_eq!(c.intensity_kind, SignalKind::Average);
    assert_eq!(c.energy_provenance, Some(FigureProvenance::Measured));
    // Deployment: the mean of the trace's 3 hours, (100 + 300 + 50) / 3
    // = 150, × 1.5 = 225.
    assert!((c.deployment_intensity_g_per_kwh - 225.0).abs() < 1e-9);
    assert_eq!(c.deployment_hours, Some(3));

    // Through the report: the payback's CO₂ is the accounted grams.
    let spec = fixture::energy_aware_spec("inference_energy_j_per_1k");
    let trials = trials();
    let settings = PaybackSettings::default().with_search_carbon(c);
    let out = tmp.path().join("report");
    let (summary, _) =
        write_report_with(&spec, &trials, Path::new("carbon.db"), &out, &settings).unwrap();
    let d = summary.decision.as_ref().unwrap();
    assert_eq!(d.deploy.number, 1);
    let p = d.payback.as_ref().unwrap();
    let co2 = p.carbon.as_ref().unwrap();
    assert!((co2.search_co2_g.value - 1087.5).abs() < 1e-6);
    // Saving 1e-3 J per prediction at 225 g/kWh = 6.25e-8 g; 1087.5 g /
    // 6.25e-8 g = 1.74e10 predictions.
    assert!((co2.saving_co2_g_per_prediction.value - 6.25e-8).abs() < 1e-18);
    assert!((co2.payback.central.predictions() / 1.74e10 - 1.0).abs() < 1e-9);

    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("summary.json")).unwrap()).unwrap();
    let j = &json["carbon"];
    assert_eq!(j["intensity_source"], spec_text.as_str());
    assert_eq!(j["intensity_kind"], "average");
    assert_eq!(j["pue"], 1.5);
    assert_eq!(j["pue_origin"], "given");
    assert_eq!(j["energy_provenance"], "measured");
    assert_eq!(j["timing"], "hourly-from-trial-times");
    assert!((j["grams_co2eq"].as_f64().unwrap() - 1087.5).abs() < 1e-9);
    assert_eq!(j["hours"][1]["hour_start"], "2020-01-01 01:00:00");

    let md = std::fs::read_to_string(out.join("summary.md")).unwrap();
    let label = format!("average intensity from {spec_text}, PUE 1.5");
    assert!(
        md.contains(&format!(
            "Carbon of the search: **1088 gCO₂eq** ({label}), from 3.500 kWh of measured energy over 3 trials"
        )),
        "{md}"
    );
    assert!(
        md.contains("| 2020-01-01 01:00:00 | 2.000 | 300.0 | 900.0 |"),
        "{md}"
    );
    assert!(
        md.contains(&format!("- CO₂ ({label}): the search emitted")),
        "{md}"
    );
    assert!(
        md.contains("the mean of the source's 3 hours × PUE"),
        "{md}"
    );
}

#[test]
fn default_pue_is_stated_and_a_constant_ignores_time() {
    let tmp = tempfile::tempdir().unwrap();
    let trace = write(tmp.path(), "grid.csv", TRACE);
    let c = account_search(
        &trials(),
        &settings_for(&format!("trace:{}", trace.display()), None),
    )
    .unwrap();
    assert!((c.grams_co2eq - 725.0).abs() < 1e-9);
    assert_eq!(c.pue_origin, PueOrigin::Default);
    assert!(c
        .label()
        .ends_with("PUE 1.0 (default: no facility overhead counted)"));

    // const: 250 g/kWh: 3.5 kWh × 250 = 875 g whatever the times, even for
    // trials of another boot or without times.
    let mut elsewhere = trials();
    elsewhere[0].worker = Some("other/boot-B/1/1/0".into());
    elsewhere[1].started_ns = None;
    let c = account_search(&elsewhere, &settings_for("const:250", None)).unwrap();
    assert!((c.grams_co2eq - 875.0).abs() < 1e-9);
    assert_eq!(c.timing, CarbonTiming::ConstantIntensity);
    assert!(c.hours.is_empty());
    assert!((c.deployment_intensity_g_per_kwh - 250.0).abs() < 1e-12);
    let i = c.intensities().unwrap();
    assert!((i.search.get() - 250.0).abs() < 1e-9);
    assert_eq!(
        i.source.as_deref(),
        Some("average intensity from const:250, PUE 1.0 (default: no facility overhead counted)")
    );
}

#[test]
fn a_marginal_signal_is_labelled_marginal_in_the_report() {
    let tmp = tempfile::tempdir().unwrap();
    // WattTime MOER, lbs/MWh: 1000 → 453.592 g/kWh in hours 00 and 01,
    // 500 → 226.796 in hour 02.
    let moer = write(
        tmp.path(),
        "moer.csv",
        "point_time,value\n\
         2020-01-01T00:00:00Z,1000\n\
         2020-01-01T01:00:00Z,1000\n\
         2020-01-01T02:00:00Z,500\n",
    );
    let spec_text = format!("watttime:{}", moer.display());
    let c = account_search(&trials(), &settings_for(&spec_text, None)).unwrap();
    // (1 + 2) kWh × 453.592 + 0.5 kWh × 226.796 = 1474.174 g.
    assert!((c.grams_co2eq - 1474.174).abs() < 1e-9, "{}", c.grams_co2eq);
    assert_eq!(c.intensity_kind, SignalKind::Marginal);
    let spec = fixture::energy_aware_spec("inference_energy_j_per_1k");
    let out = tmp.path().join("report");
    let settings = PaybackSettings::default().with_search_carbon(c);
    write_report_with(&spec, &trials(), Path::new("m.db"), &out, &settings).unwrap();
    let md = std::fs::read_to_string(out.join("summary.md")).unwrap();
    assert!(
        md.contains(&format!("(marginal intensity from {spec_text}, PUE 1")),
        "{md}"
    );
    assert!(md.contains(
        "marginal intensity: the emissions of the generators that respond to extra load"
    ));
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("summary.json")).unwrap()).unwrap();
    assert_eq!(json["carbon"]["intensity_kind"], "marginal");
}

#[test]
fn trials_that_cannot_be_placed_in_time_are_an_error_naming_the_trial() {
    let tmp = tempfile::tempdir().unwrap();
    let trace = write(tmp.path(), "grid.csv", TRACE);
    let s = settings_for(&format!("trace:{}", trace.display()), None);
    let mut other = trials();
    other[1].worker = Some("other/boot-B/1/1/0".into());
    let e = account_search(&other, &s).unwrap_err();
    assert!(
        matches!(e, FootprintError::OtherBoot { trial: 1, .. }),
        "{e}"
    );
    let msg = e.to_string();
    assert!(
        msg.starts_with("trial 1 ran on worker \"other/boot-B/1/1/0\", not in this boot (boot-A)"),
        "{msg}"
    );
    assert!(msg.contains("const:G"), "{msg}");

    let mut untimed = trials();
    untimed[2].finished_ns = None;
    let e = account_search(&untimed, &s).unwrap_err();
    assert!(matches!(e, FootprintError::NoTimes { trial: 2, .. }), "{e}");

    // A trial past the end of the trace: the hour is named, never filled in.
    let mut late = trials();
    late[2].finished_ns = Some(ANCHOR_NS + 190 * MIN_NS);
    let e = account_search(&late, &s).unwrap_err();
    assert!(
        e.to_string()
            .ends_with("has no value for the hour starting 2020-01-01 03:00:00 UTC"),
        "{e}"
    );
}

#[test]
fn no_spec_means_no_carbon_figures() {
    let spec = fixture::energy_aware_spec("inference_energy_j_per_1k");
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("report");
    let (summary, _) = write_report_with(
        &spec,
        &trials(),
        Path::new("n.db"),
        &out,
        &PaybackSettings::default(),
    )
    .unwrap();
    assert!(summary.carbon.is_none());
    assert!(summary.decision.unwrap().payback.unwrap().carbon.is_none());
    let md = std::fs::read_to_string(out.join("summary.md")).unwrap();
    assert!(md.contains("Carbon of the search: not computed (no intensity source given"));
    assert!(!md.contains("gCO₂eq"));
}

#[test]
fn compare_report_states_the_carbon_of_both_searches() {
    use nas_search::compare::{compare_report, CompareOptions};
    let conv = fixture::conventional_trials();
    let aware = fixture::energy_aware_trials();
    // const:250 with PUE 1.2: every joule at 250 × 1.2 / 3.6e6 g.
    let s = CarbonSettings {
        pue: Pue::new(1.2).unwrap(),
        pue_origin: PueOrigin::Given,
        ..settings_for("const:250", None)
    };
    let per_j = 250.0 * 1.2 / 3.6e6;
    let spent = |t: &[TrialRecord]| t.iter().filter_map(|t| t.energy_spent_j).sum::<f64>();
    let settings =
        PaybackSettings::default().with_search_carbon(account_search(&aware, &s).unwrap());
    let mut r = compare_report(&conv, &aware, None, &CompareOptions::default(), &settings).unwrap();
    r.search_carbon_conventional = Some(account_search(&conv, &s).unwrap());
    let aware_g = r.settings.search_carbon.as_ref().unwrap().grams_co2eq;
    assert!((aware_g - spent(&aware) * per_j).abs() < 1e-9);
    let conv_g = r.search_carbon_conventional.as_ref().unwrap().grams_co2eq;
    assert!((conv_g - spent(&conv) * per_j).abs() < 1e-9);
    // The payback's CO₂ is the energy-aware search's accounted grams.
    let p = r.payback_vs_accuracy_only.as_ref().unwrap();
    assert!((p.carbon.as_ref().unwrap().search_co2_g.value - aware_g).abs() < 1e-9);
    let md = r.markdown();
    assert!(
        md.contains("- Carbon of the accuracy-only search: **"),
        "{md}"
    );
    assert!(
        md.contains("- Carbon of the energy-aware search: **"),
        "{md}"
    );
    assert!(
        md.contains("(average intensity from const:250, PUE 1.2)"),
        "{md}"
    );
}
