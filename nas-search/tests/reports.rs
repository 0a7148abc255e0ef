//! Reports of the fixture study: the decision and its payback recomputed
//! by hand from the trials, and the plots carrying what the user decides
//! on (the floor, the infeasible trials, the labelled picks, predicted
//! against re-measured points).
//!
//! With `NAS_SEARCH_REPORT_EXAMPLES=DIR` the reports are also written into
//! DIR (`study/`, `calibrated/`, `compare/`): that is how the example
//! images under `docs/report-examples/` are made, to be looked at.

mod fixture;

use nas_search::compare::{compare_report, write_compare_report, CompareOptions};
use nas_search::payback::{
    BaselineModel, CarbonIntensities, FigureProvenance, GramsCo2PerKwh, PaybackPoint,
    PaybackReference, PaybackSettings, PredictionsPerDay,
};
use nas_search::report::write_report_with;
use nas_search::study::{TrialRecord, TrialStatus};
use std::path::{Path, PathBuf};

fn metric(t: &TrialRecord, name: &str) -> Option<f64> {
    t.metrics.as_ref()?.get(name).copied()
}

fn out_dirs(name: &str) -> (tempfile::TempDir, PathBuf) {
    let tmp = tempfile::tempdir().unwrap();
    let dir = match std::env::var_os("NAS_SEARCH_REPORT_EXAMPLES") {
        Some(d) => PathBuf::from(d).join(name),
        None => tmp.path().join(name),
    };
    (tmp, dir)
}

/// Width and height of a PNG, from its IHDR chunk.
fn png_size(path: &Path) -> (u32, u32) {
    let b = std::fs::read(path).unwrap();
    assert_eq!(&b[1..4], b"PNG", "{}", path.display());
    let be = |i: usize| u32::from_be_bytes([b[i], b[i + 1], b[i + 2], b[i + 3]]);
    (be(16), be(20))
}

fn settings() -> PaybackSettings {
    PaybackSettings {
        baseline: None,
        predictions_per_day: Some(PredictionsPerDay::new(50_000.0).unwrap()),
        carbon: Some(CarbonIntensities::uniform(
            GramsCo2PerKwh::new(250.0).unwrap(),
        )),
        search_carbon: None,
    }
}

#[test]
fn study_report_opens_with_the_decision_and_its_payback() {
    let spec = fixture::energy_aware_spec("inference_energy_j_per_1k");
    let trials = fixture::energy_aware_trials();
    let (_tmp, dir) = out_dirs("study");
    let (summary, files) =
        write_report_with(&spec, &trials, Path::new("fixture.db"), &dir, &settings()).unwrap();

    // By hand: floor 0.98 × best accuracy; the thriftiest trial at or
    // above it is deployed; the most accurate trial is the reference.
    let finished: Vec<&TrialRecord> = trials
        .iter()
        .filter(|t| t.status == TrialStatus::Finished)
        .collect();
    let acc = |t: &TrialRecord| metric(t, "val_accuracy").unwrap();
    let energy = |t: &TrialRecord| metric(t, "inference_energy_j_per_1k").unwrap();
    let best = finished.iter().map(|t| acc(t)).fold(f64::MIN, f64::max);
    let floor = 0.98 * best;
    let pick = finished
        .iter()
        .filter(|t| acc(t) >= floor)
        .min_by(|a, b| energy(a).total_cmp(&energy(b)))
        .unwrap();
    let reference = finished
        .iter()
        .max_by(|a, b| acc(a).total_cmp(&acc(b)))
        .unwrap();
    let spent: f64 = trials.iter().filter_map(|t| t.energy_spent_j).sum();
    let saving = (energy(reference) - energy(pick)) / 1000.0;
    assert!(saving > 0.0, "the fixture's pick must save energy");
    let expected = spent / saving;

    let d = summary.decision.as_ref().unwrap();
    assert_eq!(d.deploy.number, pick.number);
    assert!((summary.floors[0].value - floor).abs() < 1e-12);
    let p = d.payback.as_ref().unwrap();
    assert!(matches!(
        p.reference,
        PaybackReference::MostAccurateInStudy(_)
    ));
    assert_eq!(p.reference.candidate().trial, Some(reference.number));
    match p.payback.central {
        PaybackPoint::After { predictions, days } => {
            assert!((predictions / expected - 1.0).abs() < 1e-9);
            assert!((days.unwrap() - expected / 50_000.0).abs() < 1e-6);
        }
        other => panic!("{other:?}"),
    }
    // Uncertainty: every figure has one in the fixture (5% each); the
    // earliest end is (spent − σ) / (saving + σ).
    let s_spent = trials
        .iter()
        .map(|t| metric(t, "energy_spent_sigma_j").unwrap().powi(2))
        .sum::<f64>()
        .sqrt();
    let s_saving = (0.05 * energy(reference)).hypot(0.05 * energy(pick)) / 1000.0;
    match p.payback.earliest {
        PaybackPoint::After { predictions, .. } => {
            assert!((predictions / ((spent - s_spent) / (saving + s_saving)) - 1.0).abs() < 1e-9)
        }
        other => panic!("{other:?}"),
    }
    assert!(p.without_uncertainty.is_empty());
    assert_eq!(p.provenance.weakest, FigureProvenance::Simulated);
    // CO₂ at one intensity: the same number of predictions.
    let c = p.carbon.as_ref().unwrap();
    assert!((c.search_co2_g.value - spent / 3.6e6 * 250.0).abs() < 1e-9);
    assert!((c.payback.central.predictions() / expected - 1.0).abs() < 1e-9);

    // summary.md: the decision first, then the detail.
    let md = std::fs::read_to_string(dir.join("summary.md")).unwrap();
    let head = format!(
        "# Architecture search report\n\n## Decision\n\n**Deploy trial {}** (",
        pick.number
    );
    assert!(md.starts_with(&head), "{md}");
    let decision_end = md.find("## Study").unwrap();
    let decision = &md[..decision_end];
    assert!(decision.contains("Pays for itself after"), "{decision}");
    assert!(decision.contains("simulated"), "{decision}");
    assert!(decision.contains("CO₂"), "{decision}");
    assert!(md.find("## Pareto front").unwrap() > decision_end);

    // Plots: both files of both plots, the PNGs at their size, the SVG
    // carrying the floor, the infeasible trials and the labelled picks.
    for name in ["pareto.svg", "pareto.png", "progress.svg", "progress.png"] {
        assert!(files.files.contains(&dir.join(name)), "{name}");
    }
    assert_eq!(png_size(&dir.join("pareto.png")), (980, 620));
    assert_eq!(png_size(&dir.join("progress.png")), (980, 680));
    let svg = std::fs::read_to_string(dir.join("pareto.svg")).unwrap();
    assert!(svg.contains("floor: val_accuracy ≥"), "floor line label");
    assert!(svg.contains("infeasible (breaks a constraint)"));
    assert!(
        svg.contains(&format!("#{} deploy", pick.number)),
        "pick label"
    );
    assert!(svg.contains(&format!("#{} most accurate", reference.number)));
    let infeasible = finished.iter().filter(|t| acc(t) < floor).count();
    assert!(infeasible > 0, "the fixture has infeasible trials");
    assert!(
        svg.contains(&format!("{infeasible} infeasible")),
        "title counts them"
    );
    // Progress: one point per completed trial, energy summed in order.
    assert_eq!(summary.progress.len(), trials.len());
    let last = summary.progress.last().unwrap();
    assert!((last.cumulative_search_energy_j - spent).abs() < 1e-9);
    assert!(
        (last.best_feasible_energy_j_per_1k.unwrap() - energy(pick)).abs() < 1e-15,
        "the front's least energy at the end is the pick's"
    );
    assert_eq!(last.hypervolume, summary.hypervolume);
}

#[test]
fn a_user_baseline_replaces_the_study_reference() {
    let spec = fixture::energy_aware_spec("inference_energy_j_per_1k");
    let trials = fixture::energy_aware_trials();
    let mut s = settings();
    // A baseline costing 0.5 J per 1000 predictions: the saving is
    // (0.5 − pick) / 1000 per prediction.
    s.baseline = Some(BaselineModel::new(0.5, None, Some(0.9)).unwrap());
    let summary = nas_search::report::summarize_with(&spec, &trials, &s);
    let d = summary.decision.unwrap();
    let p = d.payback.unwrap();
    let pick_e = d.candidate.unwrap().energy_j_per_1k.value;
    let spent: f64 = trials.iter().filter_map(|t| t.energy_spent_j).sum();
    assert!((p.payback.central.predictions() - spent / ((0.5 - pick_e) / 1000.0)).abs() < 1e-3);
    assert_eq!(p.provenance.weakest, FigureProvenance::Simulated);
    assert!(p
        .provenance
        .parts
        .iter()
        .any(|(_, pr)| *pr == FigureProvenance::UserGiven));
    // The baseline has no sigma: listed, so the range is not taken as full.
    assert_eq!(p.without_uncertainty.len(), 1);
}

#[test]
fn calibrated_study_shows_predicted_and_re_measured_points() {
    let spec = fixture::energy_aware_spec(fixture::MODEL_ENERGY);
    let trials = fixture::calibrated_trials();
    let (_tmp, dir) = out_dirs("calibrated");
    let (summary, _) =
        write_report_with(&spec, &trials, Path::new("fixture.db"), &dir, &settings()).unwrap();
    // The decision's energy is the re-measured one (the pick is on the
    // front, which was re-measured), with the trial's provenance.
    let d = summary.decision.unwrap();
    let e = d.candidate.unwrap().energy_j_per_1k;
    assert_eq!(e.provenance, FigureProvenance::Simulated);
    assert_eq!(
        Some(e.value),
        d.deploy.metrics.get("inference_energy_j_per_1k").copied()
    );
    let svg = std::fs::read_to_string(dir.join("pareto.svg")).unwrap();
    assert!(svg.contains("predicted energy (hollow)"));
    assert!(svg.contains("re-measured energy"));
    assert!(
        svg.contains("[predicted]"),
        "the x axis says it is predicted"
    );
}

#[test]
fn compare_report_with_paybacks_and_plots() {
    let conv = fixture::conventional_trials();
    let aware = fixture::energy_aware_trials();
    let cal = fixture::calibrated_trials();
    let mut s = settings();
    s.baseline = Some(BaselineModel::new(0.5, Some(0.05), None).unwrap());
    let options = CompareOptions::default();
    let r = compare_report(&conv, &aware, Some(&cal), &options, &s).unwrap();
    let pick = r.comparison.energy_aware_pick.clone().unwrap();
    let spent: f64 = aware.iter().filter_map(|t| t.energy_spent_j).sum();
    let conv_spent: f64 = conv.iter().filter_map(|t| t.energy_spent_j).sum();
    let saving = (r.comparison.conventional_pick.energy - pick.energy) / 1000.0;
    let p = r.payback_vs_accuracy_only.as_ref().unwrap();
    assert!((p.payback.central.predictions() / (spent / saving) - 1.0).abs() < 1e-9);
    assert!(r.payback_vs_baseline.is_some());
    // The accuracy-only search spent more and found a costlier network:
    // the energy-aware search is ahead from the start.
    let sv = r.search_vs_search.as_ref().unwrap();
    assert!(conv_spent > spent);
    assert_eq!(sv.costlier.label, "accuracy-only");
    assert_eq!(sv.payback.central, PaybackPoint::Never);
    let cvm = r.calibrated_vs_multi_trial.as_ref().unwrap();
    assert_eq!(cvm.costlier.label, "multi-trial energy-aware");
    assert_eq!(cvm.cheaper.label, "calibrated");
    let text = r.decision_text();
    assert!(text[0].starts_with(&format!(
        "decision: deploy energy-aware trial {}",
        pick.number
    )));
    assert!(
        text.iter().any(|l| l.contains("Pays for itself after")),
        "{text:?}"
    );

    let (_tmp, dir) = out_dirs("compare");
    let spec = fixture::energy_aware_spec("inference_energy_j_per_1k");
    let files = write_compare_report(&r, (&spec, &aware), &conv, &dir).unwrap();
    for name in [
        "summary.md",
        "compare.json",
        "pareto.png",
        "pareto.svg",
        "progress.png",
    ] {
        assert!(files.files.contains(&dir.join(name)), "{name}");
    }
    let md = std::fs::read_to_string(dir.join("summary.md")).unwrap();
    assert!(md.starts_with(
        "# Accuracy-only against energy-aware search\n\n## Decision\n\n**Deploy trial"
    ));
    let svg = std::fs::read_to_string(dir.join("pareto.svg")).unwrap();
    assert!(svg.contains("accuracy-only search trial"));
    assert!(svg.contains(&format!("#{} deploy (energy-aware pick)", pick.number)));
    assert!(svg.contains("accuracy-only pick"));
    let progress = std::fs::read_to_string(dir.join("progress.svg")).unwrap();
    assert!(progress.contains("accuracy-only search") && progress.contains("energy-aware search"));
}

/// A one-shot search beside the two: its supernet's trial (energy, no
/// objective metrics) counts for the search energy only; its pick is its
/// cheapest retrained trial at the accuracy-only pick's floor, recomputed
/// here by hand; the report and the decision lines say so.
#[test]
fn compare_report_with_a_oneshot_search() {
    use nas_search::compare::oneshot_comparison;
    use shared::Provenance::Simulated;
    let conv = fixture::conventional_trials();
    let aware = fixture::energy_aware_trials();
    let options = CompareOptions::default();
    let s = settings();
    let mut r = compare_report(&conv, &aware, None, &options, &s).unwrap();
    let floor = r.comparison.accuracy_floor;
    let conv_e = r.comparison.conventional_pick.energy;
    // The supernet (no metrics but its energy), then three retrained
    // children: one just under the floor and cheapest, one at the floor,
    // one above it and costlier.
    let mut supernet = fixture::trial(0, &[256, 256, 256], &[], Some(40.0), Simulated);
    supernet.metrics = None;
    let retrained = |n: u64, acc: f64, e: f64| {
        fixture::trial(
            n,
            &[32],
            &[("val_accuracy", acc), ("inference_energy_j_per_1k", e)],
            Some(2.0),
            Simulated,
        )
    };
    let oneshot = vec![
        supernet,
        retrained(1, floor - 1e-3, 0.1 * conv_e),
        retrained(2, floor, 0.25 * conv_e),
        retrained(3, floor + 0.01, 0.5 * conv_e),
    ];
    let o = oneshot_comparison(&conv, &aware, &oneshot, &options, &s).unwrap();
    let pick = o.pick.as_ref().unwrap();
    assert_eq!(pick.number, 2);
    assert!((o.inference_energy_reduction.unwrap() - 0.75).abs() < 1e-12);
    assert_eq!(o.best.number, 3);
    // 40 J of supernet and controller, 3 × 2 J of retraining.
    assert!((o.search_energy_j.unwrap().value - 46.0).abs() < 1e-12);
    let vm = o.vs_multi_trial.as_ref().unwrap();
    let aware_spent: f64 = aware.iter().filter_map(|t| t.energy_spent_j).sum();
    let (one, multi) = if vm.costlier.label == "one-shot" {
        (&vm.costlier, &vm.cheaper)
    } else {
        (&vm.cheaper, &vm.costlier)
    };
    assert_eq!(multi.label, "multi-trial energy-aware");
    assert!((one.search_energy_j.value - 46.0).abs() < 1e-12);
    assert!((multi.search_energy_j.value - aware_spent).abs() < 1e-9);
    assert!((one.pick.energy_j_per_1k.value - 0.25 * conv_e).abs() < 1e-15);

    r.oneshot = Some(nas_search::compare::OneshotComparison {
        hypervolume: Some(0.3),
        hypervolume_multi_trial: Some(0.4),
        ..o
    });
    let text = r.decision_text();
    assert!(
        text.iter().any(|l| l.starts_with("one-shot pick: trial 2 ")
            && l.contains("75.0% less than the accuracy-only pick [simulated]")),
        "{text:?}"
    );
    assert!(
        text.iter().any(|l| l
            == "measured hypervolume: one-shot 0.300000, multi-trial energy-aware 0.400000 \
                (ratio 0.750, same reference point)"),
        "{text:?}"
    );
    let md = r.markdown();
    assert!(
        md.contains("One-shot search:\n\n- one-shot pick: trial 2 "),
        "{md}"
    );
    assert!(md.contains("supernet and controller included"), "{md}");
    assert!(md.contains("\n| one-shot pick | 2 | "), "{md}");

    // No retrained trial at the floor: no pick, no reduction, said so.
    let short = vec![oneshot[0].clone(), oneshot[1].clone()];
    let o = oneshot_comparison(&conv, &aware, &short, &options, &s).unwrap();
    assert!(o.pick.is_none() && o.inference_energy_reduction.is_none());
    assert!(o.vs_multi_trial.is_none());
    // Only the supernet's trial: an error naming the one-shot study.
    let err = oneshot_comparison(&conv, &aware, &short[..1], &options, &s).unwrap_err();
    assert!(err.to_string().contains("one-shot study"), "{err}");
}
