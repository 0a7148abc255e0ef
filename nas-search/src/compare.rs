//! Conventional (accuracy-only) search against energy-aware search: how much
//! inference energy the energy-aware pick saves at (nearly) the accuracy of
//! the conventional pick, and how well FLOPs rank trials by measured energy.

use crate::objective::{Bound, Constraint};
use crate::payback::{
    payback, search_against_search, search_energy_figure, Candidate, Figure, FigureProvenance,
    Payback, PaybackPoint, PaybackReference, PaybackSettings, SearchOutcome, SearchPayback,
};
use crate::report::{
    search_progress, with_derived_references, OutDir, ParetoPlot, PickLabel, PointClass,
    ProgressPlot, ProgressSeries, ReportError, ReportFiles, ScatterPoint, ThresholdLine,
};
use crate::study::{StudySpec, TrialRecord, TrialStatus};
use serde::Serialize;
use shared::Provenance;
use std::path::Path;

/// Which metrics to compare, and the accuracy tolerance.
#[derive(Debug, Clone)]
pub struct CompareOptions {
    /// Accuracy metric (maximised), e.g. `val_accuracy`.
    pub accuracy_metric: String,
    /// Inference energy metric (minimised), e.g. `inference_energy_j_per_1k`.
    pub energy_metric: String,
    /// FLOPs metric, e.g. `flops`.
    pub flops_metric: String,
    /// The energy-aware pick must reach this fraction of the conventional
    /// pick's accuracy (0.98 in the issue).
    pub accuracy_fraction: f64,
}

impl Default for CompareOptions {
    fn default() -> Self {
        CompareOptions {
            accuracy_metric: "val_accuracy".into(),
            energy_metric: "inference_energy_j_per_1k".into(),
            flops_metric: "flops".into(),
            accuracy_fraction: 0.98,
        }
    }
}

/// A picked trial.
#[derive(Debug, Clone, Serialize)]
pub struct Pick {
    /// Trial number in its study.
    pub number: u64,
    /// Its accuracy.
    pub accuracy: f64,
    /// Its inference energy.
    pub energy: f64,
    /// Provenance of the energy figure.
    pub provenance: Option<Provenance>,
    /// Its configuration, as text.
    pub config: String,
}

/// Result of a comparison.
#[derive(Debug, Clone, Serialize)]
pub struct Comparison {
    /// Most accurate trial of the conventional search.
    pub conventional_pick: Pick,
    /// Least inference energy among energy-aware trials reaching the floor
    /// (`None` when none reaches it: the energy-aware search found nothing
    /// accurate enough, a result in itself).
    pub energy_aware_pick: Option<Pick>,
    /// Most accurate energy-aware trial (to say how far it fell short when
    /// none reaches the floor).
    pub energy_aware_best: Pick,
    /// `accuracy_fraction × conventional accuracy`.
    pub accuracy_floor: f64,
    /// `1 - energy_aware / conventional` inference energy (0.4 = 40% less);
    /// `None` without an energy-aware pick.
    pub inference_energy_reduction: Option<f64>,
    /// Weakest provenance of the two energy figures compared.
    pub energy_provenance: Option<Provenance>,
    /// Spearman rank correlation between FLOPs and measured inference
    /// energy over all finished trials of both studies (`None` if fewer than
    /// 3 trials have both, or one is constant).
    pub spearman_flops_energy: Option<f64>,
    /// Trials in that correlation.
    pub correlated_trials: usize,
}

/// Errors of a comparison.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CompareError {
    /// No finished trial with the accuracy and energy metrics.
    #[error("the {which} study has no finished full-fidelity trial with metrics `{accuracy}` and `{energy}`")]
    NoTrials {
        /// `conventional` or `energy-aware`.
        which: &'static str,
        /// Accuracy metric.
        accuracy: String,
        /// Energy metric.
        energy: String,
    },
}

fn usable<'a>(trials: &'a [TrialRecord], o: &CompareOptions) -> Vec<(&'a TrialRecord, f64, f64)> {
    trials
        .iter()
        .filter(|t| t.status == TrialStatus::Finished && (t.fidelity - 1.0).abs() < 1e-9)
        .filter_map(|t| {
            let m = t.metrics.as_ref()?;
            let a = *m.get(&o.accuracy_metric)?;
            let e = *m.get(&o.energy_metric)?;
            (a.is_finite() && e.is_finite()).then_some((t, a, e))
        })
        .collect()
}

fn pick((t, a, e): (&TrialRecord, f64, f64)) -> Pick {
    Pick {
        number: t.number,
        accuracy: a,
        energy: e,
        provenance: t.provenance,
        config: t.config.to_string(),
    }
}

/// Compares a conventional study's trials with an energy-aware study's.
pub fn compare(
    conventional: &[TrialRecord],
    energy_aware: &[TrialRecord],
    options: &CompareOptions,
) -> Result<Comparison, CompareError> {
    let no_trials = |which| CompareError::NoTrials {
        which,
        accuracy: options.accuracy_metric.clone(),
        energy: options.energy_metric.clone(),
    };
    let conv = usable(conventional, options);
    let aware = usable(energy_aware, options);
    // Most accurate; ties go to the cheaper one.
    let best = conv
        .iter()
        .copied()
        .max_by(|a, b| a.1.total_cmp(&b.1).then(b.2.total_cmp(&a.2)))
        .ok_or_else(|| no_trials("conventional"))?;
    let aware_best = aware
        .iter()
        .copied()
        .max_by(|a, b| a.1.total_cmp(&b.1).then(b.2.total_cmp(&a.2)))
        .ok_or_else(|| no_trials("energy-aware"))?;
    let floor = options.accuracy_fraction * best.1;
    let chosen = aware
        .iter()
        .copied()
        .filter(|x| x.1 >= floor)
        .min_by(|a, b| a.2.total_cmp(&b.2).then(b.1.total_cmp(&a.1)));
    let reduction = chosen.map(|c| {
        if best.2 > 0.0 {
            1.0 - c.2 / best.2
        } else {
            0.0
        }
    });
    let compared = chosen.unwrap_or(aware_best);
    let provenance = match (best.0.provenance, compared.0.provenance) {
        (Some(a), Some(b)) => Some(a.combine(b)),
        (a, b) => a.or(b),
    };
    let mut flops = Vec::new();
    let mut energy = Vec::new();
    for t in conventional.iter().chain(energy_aware) {
        if t.status != TrialStatus::Finished {
            continue;
        }
        let Some(m) = &t.metrics else { continue };
        if let (Some(f), Some(e)) = (m.get(&options.flops_metric), m.get(&options.energy_metric)) {
            if f.is_finite() && e.is_finite() {
                flops.push(*f);
                energy.push(*e);
            }
        }
    }
    Ok(Comparison {
        conventional_pick: pick(best),
        energy_aware_pick: chosen.map(pick),
        energy_aware_best: pick(aware_best),
        accuracy_floor: floor,
        inference_energy_reduction: reduction,
        energy_provenance: provenance,
        spearman_flops_energy: spearman(&flops, &energy),
        correlated_trials: flops.len(),
    })
}

/// Ranks with ties averaged (1-based).
fn ranks(v: &[f64]) -> Vec<f64> {
    let mut order: Vec<usize> = (0..v.len()).collect();
    order.sort_by(|&a, &b| v[a].total_cmp(&v[b]));
    let mut r = vec![0.0; v.len()];
    let mut i = 0;
    while i < order.len() {
        let mut j = i;
        while j + 1 < order.len() && v[order[j + 1]] == v[order[i]] {
            j += 1;
        }
        let avg = (i + j) as f64 / 2.0 + 1.0;
        for &k in &order[i..=j] {
            r[k] = avg;
        }
        i = j + 1;
    }
    r
}

/// Spearman rank correlation (Pearson correlation of tie-averaged ranks).
/// `None` for fewer than 3 pairs or a constant series.
pub fn spearman(x: &[f64], y: &[f64]) -> Option<f64> {
    if x.len() != y.len() || x.len() < 3 {
        return None;
    }
    let (rx, ry) = (ranks(x), ranks(y));
    let n = x.len() as f64;
    let (mx, my) = (rx.iter().sum::<f64>() / n, ry.iter().sum::<f64>() / n);
    let cov: f64 = rx.iter().zip(&ry).map(|(a, b)| (a - mx) * (b - my)).sum();
    let vx: f64 = rx.iter().map(|a| (a - mx).powi(2)).sum();
    let vy: f64 = ry.iter().map(|b| (b - my).powi(2)).sum();
    (vx > 0.0 && vy > 0.0).then(|| cov / (vx * vy).sqrt())
}

/// A comparison with what the user decides on: the paybacks of the
/// energy-aware pick, and the files that show it.
#[derive(Debug, Clone, Serialize)]
pub struct CompareReport {
    /// The picks and the reduction.
    pub comparison: Comparison,
    /// Energy the accuracy-only search spent.
    pub search_energy_conventional_j: Option<Figure>,
    /// Energy the energy-aware search spent.
    pub search_energy_energy_aware_j: Option<Figure>,
    /// The energy-aware search's energy against its pick's saving over the
    /// accuracy-only pick (`None` without an energy-aware pick or without
    /// search energy).
    pub payback_vs_accuracy_only: Option<Payback>,
    /// The same against the user's baseline model, when one was given.
    pub payback_vs_baseline: Option<Payback>,
    /// The two searches as alternatives: the costlier one's extra energy
    /// against its pick's saving over the other's.
    pub search_vs_search: Option<SearchPayback>,
    /// A calibrated (or one-shot) search against the multi-trial
    /// energy-aware one, when one ran.
    pub calibrated_vs_multi_trial: Option<SearchPayback>,
    /// The settings the paybacks were computed with (their
    /// `search_carbon` is the energy-aware search's).
    pub settings: PaybackSettings,
    /// The accuracy-only search's carbon, from the same intensity source;
    /// `None` from [`compare_report`]: the caller, which holds the source,
    /// accounts it (`crate::footprint::account_search`) and sets it.
    pub search_carbon_conventional: Option<crate::footprint::SearchCarbon>,
    /// A one-shot search beside the two, when one ran; `None` from
    /// [`compare_report`]: the caller sets it from [`oneshot_comparison`].
    pub oneshot: Option<OneshotComparison>,
}

/// A one-shot search (supernet, controller, picks retrained as trials)
/// beside the accuracy-only and the multi-trial energy-aware searches, on
/// measured figures.
#[derive(Debug, Clone, Serialize)]
pub struct OneshotComparison {
    /// Its retrained trial with the least inference energy at or above the
    /// accuracy floor of the accuracy-only pick (the same floor as
    /// [`Comparison::accuracy_floor`]); `None` when none reaches it.
    pub pick: Option<Pick>,
    /// Its most accurate retrained trial.
    pub best: Pick,
    /// `1 - pick / accuracy-only pick` inference energy; `None` without a
    /// pick.
    pub inference_energy_reduction: Option<f64>,
    /// Weakest provenance of the two energy figures compared.
    pub energy_provenance: Option<Provenance>,
    /// Energy it spent: every trial's `energy_spent_j`, the supernet's
    /// training and the controller included (their own trial).
    pub search_energy_j: Option<Figure>,
    /// Hypervolume of its measured front and of the multi-trial
    /// energy-aware search's, under one reference point; `None` from
    /// [`oneshot_comparison`]: the caller, which chooses the objectives and
    /// reference, sets them.
    pub hypervolume: Option<f64>,
    /// The multi-trial energy-aware search's hypervolume, same reference.
    pub hypervolume_multi_trial: Option<f64>,
    /// The one-shot search against the multi-trial energy-aware one, as
    /// alternatives (`None` without search energies or picks).
    pub vs_multi_trial: Option<SearchPayback>,
}

/// Compares a one-shot search's trials with the accuracy-only and the
/// multi-trial energy-aware searches': its pick at the accuracy-only
/// pick's floor, its search energy, and the two energy-aware searches as
/// alternatives. Trials without the accuracy and energy metrics (the
/// supernet's own trial) count for the search energy only.
pub fn oneshot_comparison(
    conventional: &[TrialRecord],
    energy_aware: &[TrialRecord],
    oneshot: &[TrialRecord],
    options: &CompareOptions,
    settings: &PaybackSettings,
) -> Result<OneshotComparison, CompareError> {
    let against_conventional = compare(conventional, oneshot, options).map_err(|e| match e {
        CompareError::NoTrials {
            which: "energy-aware",
            accuracy,
            energy,
        } => CompareError::NoTrials {
            which: "one-shot",
            accuracy,
            energy,
        },
        other => other,
    })?;
    let spent = search_energy_figure(oneshot);
    let vs_multi_trial = (|| {
        let multi_pick = compare(conventional, energy_aware, options)
            .ok()?
            .energy_aware_pick?;
        let multi = SearchOutcome {
            label: "multi-trial energy-aware".into(),
            search_energy_j: search_energy_figure(energy_aware)?,
            pick: candidate_of(&multi_pick, energy_aware),
        };
        let one = SearchOutcome {
            label: "one-shot".into(),
            search_energy_j: spent?,
            pick: candidate_of(against_conventional.energy_aware_pick.as_ref()?, oneshot),
        };
        Some(search_against_search(
            one,
            multi,
            settings.predictions_per_day,
        ))
    })();
    Ok(OneshotComparison {
        pick: against_conventional.energy_aware_pick,
        best: against_conventional.energy_aware_best,
        inference_energy_reduction: against_conventional.inference_energy_reduction,
        energy_provenance: against_conventional.energy_provenance,
        search_energy_j: spent,
        hypervolume: None,
        hypervolume_multi_trial: None,
        vs_multi_trial,
    })
}

fn candidate_of(p: &Pick, trials: &[TrialRecord]) -> Candidate {
    trials
        .iter()
        .find(|t| t.number == p.number)
        .and_then(Candidate::of_measured_trial)
        .unwrap_or(Candidate {
            trial: Some(p.number),
            accuracy: Some(p.accuracy),
            energy_j_per_1k: Figure::new(
                p.energy,
                p.provenance
                    .map_or(FigureProvenance::Estimated, FigureProvenance::from),
            ),
        })
}

/// The network a search would deploy: its energy-aware pick (least energy
/// at or above `fraction` of its own best accuracy), as a candidate.
fn deployable(trials: &[TrialRecord], options: &CompareOptions) -> Option<Candidate> {
    let usable = usable(trials, options);
    let best = usable.iter().map(|x| x.1).fold(f64::NEG_INFINITY, f64::max);
    let floor = options.accuracy_fraction * best;
    usable
        .into_iter()
        .filter(|x| x.1 >= floor)
        .min_by(|a, b| a.2.total_cmp(&b.2).then(b.1.total_cmp(&a.1)))
        .and_then(|x| Candidate::of_measured_trial(x.0))
}

/// Compares the two searches and computes the paybacks: the energy-aware
/// search against the accuracy-only pick (and the user's baseline), the
/// two searches against each other, and, given a calibrated search's
/// trials, the calibrated search against the multi-trial energy-aware one.
pub fn compare_report(
    conventional: &[TrialRecord],
    energy_aware: &[TrialRecord],
    calibrated: Option<&[TrialRecord]>,
    options: &CompareOptions,
    settings: &PaybackSettings,
) -> Result<CompareReport, CompareError> {
    let comparison = compare(conventional, energy_aware, options)?;
    let spent_conv = search_energy_figure(conventional);
    let spent_aware = search_energy_figure(energy_aware);
    let conv_pick = candidate_of(&comparison.conventional_pick, conventional);
    let aware_pick = comparison
        .energy_aware_pick
        .as_ref()
        .map(|p| candidate_of(p, energy_aware));
    let rate = settings.predictions_per_day;
    let of = |reference: PaybackReference| {
        Some(payback(
            spent_aware?,
            aware_pick.clone()?,
            reference,
            rate,
            settings.carbon.clone(),
        ))
    };
    let payback_vs_accuracy_only = of(PaybackReference::AccuracyOnlyPick(conv_pick.clone()));
    let payback_vs_baseline = settings.baseline.as_ref().and_then(|b| of(b.reference()));
    let search_vs_search = match (spent_conv, spent_aware, &aware_pick) {
        (Some(c), Some(a), Some(p)) => Some(search_against_search(
            SearchOutcome {
                label: "accuracy-only".into(),
                search_energy_j: c,
                pick: conv_pick.clone(),
            },
            SearchOutcome {
                label: "energy-aware".into(),
                search_energy_j: a,
                pick: p.clone(),
            },
            rate,
        )),
        _ => None,
    };
    let calibrated_vs_multi_trial = calibrated.and_then(|cal| {
        let multi = SearchOutcome {
            label: "multi-trial energy-aware".into(),
            search_energy_j: spent_aware?,
            pick: aware_pick.clone()?,
        };
        let cal = SearchOutcome {
            label: "calibrated".into(),
            search_energy_j: search_energy_figure(cal)?,
            pick: deployable(cal, options)?,
        };
        Some(search_against_search(cal, multi, rate))
    });
    Ok(CompareReport {
        comparison,
        search_energy_conventional_j: spent_conv,
        search_energy_energy_aware_j: spent_aware,
        payback_vs_accuracy_only,
        payback_vs_baseline,
        search_vs_search,
        calibrated_vs_multi_trial,
        settings: settings.clone(),
        search_carbon_conventional: None,
        oneshot: None,
    })
}

fn energy_text(f: Option<Figure>) -> String {
    f.map_or("not reported".into(), |f| crate::report::figure(f, "J"))
}

fn search_payback_line(s: &SearchPayback) -> String {
    let verdict = match s.payback.central {
        PaybackPoint::Never => format!(
            "its pick saves nothing over the {} search's, so the {} search is better outright",
            s.cheaper.label, s.cheaper.label
        ),
        PaybackPoint::Immediately => "and its pick is no worse: it is ahead from the start".into(),
        _ => format!("repaid by its pick's saving {}", s.payback),
    };
    let missing = match s.figures_without_uncertainty {
        0 => String::new(),
        n => format!(
            " {n} of the 4 figures came without an uncertainty (the range leaves them out)."
        ),
    };
    format!(
        "the {} search spent {} more than the {} search ({} against {}); {verdict}. Provenance: {}.{missing}",
        s.costlier.label,
        energy_text(Some(s.extra_search_energy_j)),
        s.cheaper.label,
        energy_text(Some(s.costlier.search_energy_j)),
        energy_text(Some(s.cheaper.search_energy_j)),
        s.provenance
    )
}

impl CompareReport {
    /// The decision and the paybacks, as lines to print (no Markdown
    /// emphasis).
    pub fn decision_text(&self) -> Vec<String> {
        let strip = |l: String| l.replace("**", "").trim_start_matches("- ").to_owned();
        let mut out = Vec::new();
        out.push(match &self.comparison.energy_aware_pick {
            Some(p) => format!(
                "decision: deploy energy-aware trial {} ({}): accuracy {:.4}, {} per 1000 predictions",
                p.number,
                p.config,
                p.accuracy,
                self.payback_vs_accuracy_only
                    .as_ref()
                    .map_or(format!("{} J", crate::report::tick(p.energy)), |b| {
                        crate::report::figure(b.pick.energy_j_per_1k, "J")
                    })
            ),
            None => format!(
                "decision: deploy the accuracy-only pick, trial {} (no energy-aware trial reached the accuracy floor {:.4})",
                self.comparison.conventional_pick.number, self.comparison.accuracy_floor
            ),
        });
        for (title, p) in [
            (
                "payback against the accuracy-only pick",
                &self.payback_vs_accuracy_only,
            ),
            ("payback against the baseline", &self.payback_vs_baseline),
        ] {
            if let Some(p) = p {
                out.push(format!("{title}:"));
                out.extend(
                    crate::report::payback_lines(p)
                        .into_iter()
                        .map(|l| format!("  {}", strip(l))),
                );
            }
        }
        if let Some(s) = &self.search_vs_search {
            out.push(format!("searches: {}", search_payback_line(s)));
        }
        if let Some(s) = &self.calibrated_vs_multi_trial {
            out.push(format!(
                "calibrated against multi-trial: {}",
                search_payback_line(s)
            ));
        }
        if let Some(o) = &self.oneshot {
            out.extend(o.lines(&self.comparison).into_iter().map(strip));
        }
        out
    }

    /// `summary.md` of a comparison: the decision first, then the detail.
    pub fn markdown(&self) -> String {
        let c = &self.comparison;
        let mut md = String::from("# Accuracy-only against energy-aware search\n\n## Decision\n\n");
        match (&c.energy_aware_pick, &self.payback_vs_accuracy_only) {
            (Some(p), pb) => {
                let energy = pb.as_ref().map_or(format!("{} J", crate::report::tick(p.energy)), |b| {
                    crate::report::figure(b.pick.energy_j_per_1k, "J")
                });
                md.push_str(&format!(
                    "**Deploy trial {} of the energy-aware search** (`{}`): accuracy {:.4}, {energy} per 1000 predictions.\n\n",
                    p.number, p.config, p.accuracy
                ));
                md.push_str(&format!(
                    "It is the network with the least inference energy among those reaching {:.0}% of the accuracy-only pick's accuracy (floor {:.4}).\n\n",
                    100.0 * c.accuracy_floor / c.conventional_pick.accuracy.max(f64::MIN_POSITIVE),
                    c.accuracy_floor
                ));
            }
            (None, _) => md.push_str(&format!(
                "**Deploy the accuracy-only pick, trial {}** (`{}`): no energy-aware trial reached the accuracy floor {:.4} (its most accurate reached {:.4}).\n\n",
                c.conventional_pick.number, c.conventional_pick.config, c.accuracy_floor, c.energy_aware_best.accuracy
            )),
        }
        for (title, p) in [
            (
                "Does the energy-aware search pay for itself?",
                &self.payback_vs_accuracy_only,
            ),
            ("Against the baseline model", &self.payback_vs_baseline),
        ] {
            if let Some(p) = p {
                md.push_str(&format!("{title}\n\n"));
                for l in crate::report::payback_lines(p) {
                    md.push_str(&l);
                    md.push('\n');
                }
                md.push('\n');
            }
        }
        if c.energy_aware_pick.is_some() && self.payback_vs_accuracy_only.is_none() {
            md.push_str("Payback: not computed: a search did not report the energy it spent.\n\n");
        }
        if let Some(s) = &self.search_vs_search {
            md.push_str(&format!(
                "The two searches as alternatives: {}\n\n",
                search_payback_line(s)
            ));
        }
        if let Some(s) = &self.calibrated_vs_multi_trial {
            md.push_str(&format!(
                "Calibrated against multi-trial search: {}\n\n",
                search_payback_line(s)
            ));
        }
        if let Some(o) = &self.oneshot {
            md.push_str("One-shot search:\n\n");
            for l in o.lines(c) {
                md.push_str(&l);
                md.push('\n');
            }
            md.push('\n');
        }
        md.push_str("## Detail\n\n| | trial | accuracy | J / 1000 predictions | provenance | configuration |\n|---|---|---|---|---|---|\n");
        let row = |name: &str, p: &Pick| {
            format!(
                "| {name} | {} | {:.4} | {} | {} | `{}` |\n",
                p.number,
                p.accuracy,
                crate::report::tick(p.energy),
                p.provenance.map_or("-", |p| p.label()),
                p.config
            )
        };
        md.push_str(&row("accuracy-only pick", &c.conventional_pick));
        if let Some(p) = &c.energy_aware_pick {
            md.push_str(&row("energy-aware pick", p));
        }
        md.push_str(&row(
            "most accurate energy-aware trial",
            &c.energy_aware_best,
        ));
        if let Some(p) = self.oneshot.as_ref().and_then(|o| o.pick.as_ref()) {
            md.push_str(&row("one-shot pick", p));
        }
        md.push_str(&format!("\n- Accuracy floor: {:.4}\n", c.accuracy_floor));
        if let Some(r) = c.inference_energy_reduction {
            md.push_str(&format!(
                "- Inference energy reduction of the energy-aware pick: {:.1}% [{}]\n",
                r * 100.0,
                c.energy_provenance.map_or("unknown", |p| p.label())
            ));
        }
        md.push_str(&format!(
            "- Energy spent: accuracy-only search {}, energy-aware search {}\n",
            energy_text(self.search_energy_conventional_j),
            energy_text(self.search_energy_energy_aware_j)
        ));
        for (label, c) in [
            ("accuracy-only", &self.search_carbon_conventional),
            ("energy-aware", &self.settings.search_carbon),
        ] {
            if let Some(sc) = c {
                for l in crate::report::carbon_lines(Some(sc)) {
                    md.push_str(&l.replacen(
                        "Carbon of the search",
                        &format!("Carbon of the {label} search"),
                        1,
                    ));
                    md.push('\n');
                }
            }
        }
        match c.spearman_flops_energy {
            Some(r) => md.push_str(&format!(
                "- Spearman rank correlation of FLOPs and inference energy: {r:.3} over {} trials\n",
                c.correlated_trials
            )),
            None => md.push_str("- Spearman rank correlation of FLOPs and inference energy: not enough trials with both\n"),
        }
        if let Some(r) = self.settings.predictions_per_day {
            md.push_str(&format!(
                "- Days at {} predictions a day\n",
                crate::payback::count(r.get())
            ));
        }
        md.push_str("\n## Files\n\n- `pareto.svg`, `pareto.png`: energy-aware trials (front red, feasible blue, infeasible grey crosses), accuracy-only trials green triangles, the accuracy floor dashed orange, both picks labelled\n- `progress.svg`, `progress.png`: hypervolume (same objectives and reference point for both) and least feasible inference energy against the energy each search had spent\n- `compare.json`: this comparison\n");
        md
    }
}

impl OneshotComparison {
    /// Its figures as Markdown list items (`- …`).
    fn lines(&self, c: &Comparison) -> Vec<String> {
        let mut out = Vec::new();
        out.push(match (&self.pick, self.inference_energy_reduction) {
            (Some(p), Some(r)) => format!(
                "- one-shot pick: trial {} (`{}`): accuracy {:.4}, {} J per 1000 predictions, {:.1}% less than the accuracy-only pick [{}]",
                p.number,
                p.config,
                p.accuracy,
                crate::report::tick(p.energy),
                r * 100.0,
                self.energy_provenance.map_or("unknown", |p| p.label())
            ),
            _ => format!(
                "- one-shot pick: none: no one-shot trial reached the accuracy floor {:.4} (its most accurate, trial {}, reached {:.4})",
                c.accuracy_floor, self.best.number, self.best.accuracy
            ),
        });
        out.push(format!(
            "- one-shot search energy (supernet and controller included): {}",
            energy_text(self.search_energy_j)
        ));
        match (self.hypervolume, self.hypervolume_multi_trial) {
            (Some(h), Some(m)) if m > 0.0 => out.push(format!(
                "- measured hypervolume: one-shot {h:.6}, multi-trial energy-aware {m:.6} (ratio {:.3}, same reference point)",
                h / m
            )),
            (Some(h), Some(m)) => out.push(format!(
                "- measured hypervolume: one-shot {h:.6}, multi-trial energy-aware {m:.6} (same reference point)"
            )),
            _ => out.push("- measured hypervolume: not computable (no measured front)".into()),
        }
        if let Some(s) = &self.vs_multi_trial {
            out.push(format!(
                "- one-shot against multi-trial: {}",
                search_payback_line(s)
            ));
        }
        out
    }
}

/// Writes a comparison's `summary.md`, `compare.json`, Pareto and progress
/// plots into `out_dir`. `energy_aware` is the energy-aware study's spec,
/// whose objectives the plots use.
pub fn write_compare_report(
    report: &CompareReport,
    energy_aware: (&StudySpec, &[TrialRecord]),
    conventional: &[TrialRecord],
    out_dir: &Path,
) -> Result<ReportFiles, ReportError> {
    let (spec, aware) = energy_aware;
    let mut out = OutDir::create(out_dir)?;
    out.write("compare.json", crate::report::to_json(report).as_bytes())?;
    // One objective set for both searches: the energy-aware one, its
    // missing reference points derived from the trials of both.
    let all: Vec<_> = aware
        .iter()
        .chain(conventional)
        .filter(|t| t.status == TrialStatus::Finished)
        .filter_map(|t| t.metrics.as_ref())
        .collect();
    let mut objectives = with_derived_references(&spec.objectives, &all);
    // Feasible means what the decision used: at or above the comparison's
    // floor (a fraction of the accuracy-only pick), not the energy-aware
    // study's own relative constraint.
    if let Some(accuracy) = objectives.objectives.first().map(|o| o.name.clone()) {
        objectives.constraints = vec![Constraint {
            metric: accuracy,
            bound: Bound::AtLeast(report.comparison.accuracy_floor),
        }];
    }
    let spec = StudySpec {
        objectives,
        ..spec.clone()
    };
    let summary = crate::report::summarize(&spec, aware);
    let mut png_has_text = true;
    if let Some(mut plot) = ParetoPlot::of_study(&spec, aware, &summary) {
        let c = &report.comparison;
        plot.title = format!(
            "Energy-aware search against accuracy-only search ({})",
            plot.title.trim_start_matches("Pareto front: ")
        );
        plot.other_label = "accuracy-only search trial".into();
        let y_name = spec.objectives.objectives[0].name.clone();
        let x_name = spec
            .objectives
            .objectives
            .get(1)
            .map_or(crate::payback::metric::INFERENCE_ENERGY_J_PER_1K, |o| {
                o.name.as_str()
            })
            .to_owned();
        for t in conventional
            .iter()
            .filter(|t| t.status == TrialStatus::Finished && (t.fidelity - 1.0).abs() < 1e-9)
        {
            let get = |n: &str| {
                t.metrics
                    .as_ref()
                    .and_then(|m| m.get(n).copied())
                    .filter(|v| v.is_finite())
            };
            if let (Some(x), Some(y)) = (get(&x_name), get(&y_name)) {
                plot.points.push(ScatterPoint {
                    x,
                    y,
                    class: PointClass::OtherSearch,
                    predicted: false,
                    measured_x: None,
                });
            }
        }
        let fraction = c.accuracy_floor / c.conventional_pick.accuracy.max(f64::MIN_POSITIVE);
        plot.lines = vec![ThresholdLine {
            horizontal: true,
            value: c.accuracy_floor,
            label: format!(
                "floor: accuracy ≥ {:.4} ({fraction:.2} × accuracy-only pick)",
                c.accuracy_floor
            ),
        }];
        plot.picks.clear();
        if let Some(e) = &c.energy_aware_pick {
            plot.picks.push(PickLabel {
                x: e.energy,
                y: e.accuracy,
                text: format!("#{} deploy (energy-aware pick)", e.number),
            });
        }
        plot.picks.push(PickLabel {
            x: c.conventional_pick.energy,
            y: c.conventional_pick.accuracy,
            text: format!("#{} accuracy-only pick", c.conventional_pick.number),
        });
        png_has_text &= out.plot("pareto", &plot)?;
    }
    let series = vec![
        ProgressSeries {
            label: "accuracy-only search".into(),
            points: search_progress(&spec.objectives, &spec.metrics, conventional),
        },
        ProgressSeries {
            label: "energy-aware search".into(),
            points: search_progress(&spec.objectives, &spec.metrics, aware),
        },
    ];
    let provenance = [
        report.search_energy_conventional_j,
        report.search_energy_energy_aware_j,
    ]
    .into_iter()
    .flatten()
    .map(|f| f.provenance)
    .max();
    if let Some(p) = ProgressPlot::of_progress(series, provenance) {
        png_has_text &= out.plot("progress", &p)?;
    }
    out.write("summary.md", report.markdown().as_bytes())?;
    Ok(ReportFiles {
        files: out.files,
        png_has_text,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::space::{Config, ParamValue};

    fn t(number: u64, acc: f64, energy: f64, flops: f64) -> TrialRecord {
        let mut config = Config::default();
        config.0.insert("w".into(), ParamValue::Int(number as i64));
        TrialRecord {
            number,
            config_key: config.key(),
            config,
            fidelity: 1.0,
            tag: None,
            status: TrialStatus::Finished,
            worker: None,
            seed: 0,
            metrics: Some(
                [
                    ("val_accuracy", acc),
                    ("inference_energy_j_per_1k", energy),
                    ("flops", flops),
                ]
                .into_iter()
                .map(|(k, v)| (k.to_string(), v))
                .collect(),
            ),
            kernel_energy: Vec::new(),
            provenance: Some(Provenance::Measured),
            energy_spent_j: None,
            error: None,
            notes: Vec::new(),
            created_ns: 0,
            started_ns: None,
            finished_ns: None,
            finish_seq: None,
            eval_ns: None,
            overhead_ns: None,
            attempts: 1,
        }
    }

    #[test]
    fn spearman_by_hand() {
        assert_eq!(
            spearman(&[1.0, 2.0, 3.0, 4.0], &[10.0, 20.0, 30.0, 40.0]),
            Some(1.0)
        );
        assert_eq!(spearman(&[1.0, 2.0, 3.0], &[3.0, 2.0, 1.0]), Some(-1.0));
        // Ranks x: 1,2,3,4; y: 2,1,4,3 -> d^2 = 4 -> 1 - 6*4/(4*15) = 0.6.
        let r = spearman(&[1.0, 2.0, 3.0, 4.0], &[2.0, 1.0, 4.0, 3.0]).unwrap();
        assert!((r - 0.6).abs() < 1e-12);
        assert_eq!(ranks(&[5.0, 1.0, 5.0]), vec![2.5, 1.0, 2.5]);
        assert_eq!(spearman(&[1.0, 1.0, 1.0], &[1.0, 2.0, 3.0]), None);
    }

    #[test]
    fn energy_aware_pick_within_two_percent() {
        let conv = vec![t(0, 0.90, 10.0, 100.0), t(1, 0.85, 4.0, 40.0)];
        let aware = vec![
            t(0, 0.885, 3.0, 30.0),
            t(1, 0.80, 1.0, 10.0),
            t(2, 0.95, 9.0, 90.0),
        ];
        let c = compare(&conv, &aware, &CompareOptions::default()).unwrap();
        assert_eq!(c.conventional_pick.number, 0);
        assert!((c.accuracy_floor - 0.882).abs() < 1e-12);
        // 0.80 is below the floor; 0.885 at 3.0 J beats 0.95 at 9.0 J.
        assert_eq!(c.energy_aware_pick.as_ref().unwrap().number, 0);
        assert_eq!(c.energy_aware_best.number, 2);
        assert!((c.inference_energy_reduction.unwrap() - 0.7).abs() < 1e-12);
        assert_eq!(c.spearman_flops_energy, Some(1.0));
        assert_eq!(c.correlated_trials, 5);
        // Nothing accurate enough: no pick and no reduction, but the best
        // energy-aware trial says how far it fell short.
        let none = compare(&conv, &aware[1..2], &CompareOptions::default()).unwrap();
        assert!(none.energy_aware_pick.is_none() && none.inference_energy_reduction.is_none());
        assert_eq!(none.energy_aware_best.accuracy, 0.80);
        assert!(compare(&conv, &[], &CompareOptions::default()).is_err());
    }
}
