//! `summary.md`: the decision first (which network to deploy, its accuracy
//! and energy per 1000 predictions, whether the search pays for itself),
//! then the detail.

use super::{tick, Decision, DecisionRule, ReportSummary};
use crate::payback::{count, FigureProvenance, Payback, PaybackPoint};
use crate::study::StudySpec;
use std::fmt::Write as _;

fn fmt_metric(v: Option<&f64>) -> String {
    match v {
        Some(x) => tick(*x),
        None => "-".into(),
    }
}

/// `0.00324 J` or `0.00324 ± 0.0002 J`, then `[provenance]`.
pub(crate) fn figure(f: crate::payback::Figure, unit: &str) -> String {
    match f.sigma {
        Some(s) => format!("{} ± {} {unit} [{}]", sig(f.value), sig(s), f.provenance),
        None => format!("{} {unit} [{}]", sig(f.value), f.provenance),
    }
}

/// Four significant digits (scientific outside 1e-3..1e5).
pub(crate) fn sig(v: f64) -> String {
    if v == 0.0 || !v.is_finite() {
        return format!("{v}");
    }
    let a = v.abs();
    if !(1e-3..1e5).contains(&a) {
        return format!("{v:.3e}");
    }
    let decimals = (3 - a.log10().floor() as i32).max(0) as usize;
    format!("{v:.decimals$}")
}

/// What a provenance means to a reader, when it is not a measurement.
fn caveat(p: FigureProvenance) -> Option<&'static str> {
    match p {
        FigureProvenance::Measured => None,
        FigureProvenance::Estimated => Some(
            "energyd estimated these figures from a model of CPU activity (no hardware energy counter on this machine): use them to compare networks, not as absolute joules; their ± is energyd's own one-sigma (sampling and attribution), which does not cover the error of the estimate's power model",
        ),
        FigureProvenance::Predicted => {
            Some("some figures are predicted from a calibration, not measured")
        }
        FigureProvenance::UserGiven => Some("the baseline's energy is as stated by the user"),
        FigureProvenance::Simulated => {
            Some("figures come from a simulated source: they describe no real machine")
        }
    }
}

/// Markdown lines stating a payback (each a bullet).
pub(crate) fn payback_lines(p: &Payback) -> Vec<String> {
    let mut out = Vec::new();
    let r = p.reference.candidate();
    let acc = |a: Option<f64>| a.map_or(String::new(), |a| format!("accuracy {}, ", tick(a)));
    out.push(format!(
        "- Reference: {}: {}{} per 1000 predictions.",
        p.reference.describe(),
        acc(r.accuracy),
        figure(r.energy_j_per_1k, "J")
    ));
    let s = p.saving_j_per_prediction;
    let pct = p
        .saving_fraction
        .map_or(String::new(), |f| format!(", {:.1}% less", f * 100.0));
    let dacc = p
        .accuracy_change
        .map_or(String::new(), |d| format!(", accuracy {d:+.4}"));
    if s.value > 0.0 {
        out.push(format!(
            "- Saving: {} per prediction{pct}{dacc}.",
            figure(s, "J")
        ));
    } else {
        out.push(format!(
            "- Saving: none: the pick needs {} J per prediction more than the reference{dacc}.",
            tick(-s.value)
        ));
    }
    out.push(format!(
        "- Search energy: {}.",
        figure(p.search_energy_j, "J")
    ));
    let mut when = match p.payback.central {
        PaybackPoint::Never => "- **Never pays for itself**: the pick saves nothing per prediction against the reference".to_owned(),
        PaybackPoint::Immediately => "- **Pays for itself immediately**".to_owned(),
        PaybackPoint::After { predictions, days } => {
            let mut w = format!("- **Pays for itself after {} predictions", count(predictions));
            if let (Some(d), Some(r)) = (days, p.predictions_per_day) {
                let _ = write!(
                    w,
                    "** ({} at {} predictions a day)",
                    crate::payback::duration_days(d),
                    count(r.get())
                );
            } else {
                w.push_str("**");
            }
            w
        }
    };
    if !p.payback.is_point() {
        let _ = write!(when, "; {}", range(p));
    }
    when.push('.');
    out.push(when);
    if !p.without_uncertainty.is_empty() {
        let roles: Vec<&str> = p.without_uncertainty.iter().map(|r| r.label()).collect();
        out.push(format!(
            "- Uncertainty not reported for: {}{}.",
            roles.join(", "),
            if p.payback.is_point() {
                " (so no range is given)"
            } else {
                " (the range leaves these out)"
            }
        ));
    }
    if let Some(c) = &p.carbon {
        out.push(format!(
            "- CO₂{}: the search emitted {} g (at {} gCO₂/kWh); the pick saves {} g per prediction (at {} gCO₂/kWh): pays back {}.",
            c.intensities
                .source
                .as_ref()
                .map_or(String::new(), |s| format!(" ({s})")),
            tick(c.search_co2_g.value),
            sig(c.intensities.search.get()),
            tick(c.saving_co2_g_per_prediction.value),
            sig(c.intensities.deployment.get()),
            c.payback
        ));
    }
    out.push(format!(
        "- Provenance of the combined figure: {}.",
        p.provenance
    ));
    if let Some(c) = caveat(p.provenance.weakest) {
        out.push(format!("- Note: {c}."));
    }
    out
}

fn range(p: &Payback) -> String {
    let end = |x: PaybackPoint| match x {
        PaybackPoint::After { predictions, .. } => count(predictions),
        other => other.to_string(),
    };
    format!(
        "1σ range {} to {} predictions",
        end(p.payback.earliest),
        end(p.payback.latest)
    )
}

/// The opening lines of a study's summary: the decision.
pub(crate) fn decision_lines(d: &Decision, floor: Option<&str>) -> Vec<String> {
    let mut out = Vec::new();
    let energy = d
        .candidate
        .as_ref()
        .map_or("inference energy unknown".to_owned(), |c| {
            format!("{} per 1000 predictions", figure(c.energy_j_per_1k, "J"))
        });
    out.push(format!(
        "**Deploy trial {}** (`{}`): accuracy {}, {}.",
        d.deploy.number,
        d.deploy.config,
        d.accuracy.map_or("-".into(), tick),
        energy
    ));
    out.push(String::new());
    out.push(match d.rule {
        DecisionRule::LeastEnergyWithinConstraints => format!(
            "Chosen as the network with the least inference energy among those meeting the constraints{}.",
            floor.map_or(String::new(), |f| format!(" ({f})"))
        ),
        DecisionRule::MostAccurate => {
            "Chosen as the most accurate network (the search had no energy objective).".into()
        }
    });
    out.push(String::new());
    match (&d.payback, d.payback_missing) {
        (Some(p), _) => {
            out.push("Does the search pay for itself?".into());
            out.push(String::new());
            out.extend(payback_lines(p));
        }
        (None, Some(m)) => out.push(format!("Payback: not computed: {}.", m.explain())),
        (None, None) => {}
    }
    out
}

/// The whole `summary.md` of a study.
pub(crate) fn study_markdown(
    spec: &StudySpec,
    s: &ReportSummary,
    study_file: &crate::study::StudyLocation,
    pareto: bool,
    progress: bool,
    png_text: bool,
) -> String {
    let mut md = String::new();
    let _ = writeln!(md, "# Architecture search report\n");
    let _ = writeln!(md, "## Decision\n");
    let floor = s.floors.first().map(|f| {
        format!(
            "{} {} {}",
            f.metric,
            if f.at_least { "≥" } else { "≤" },
            tick(f.value)
        )
    });
    match &s.decision {
        Some(d) => {
            for l in decision_lines(d, floor.as_deref()) {
                let _ = writeln!(md, "{l}");
            }
        }
        None => {
            let _ = writeln!(
                md,
                "No network to deploy: no finished trial meets the constraints."
            );
        }
    }
    let _ = writeln!(md, "\n## Study\n");
    let _ = writeln!(md, "- Study: `{}`", study_file);
    let _ = writeln!(md, "- Strategy: `{}`, seed {}", s.strategy, spec.seed);
    let _ = writeln!(
        md,
        "- Objectives: {}",
        s.objectives
            .iter()
            .map(|o| format!("`{o}`"))
            .collect::<Vec<_>>()
            .join(", ")
    );
    if !spec.objectives.constraints.is_empty() {
        let c: Vec<String> = spec
            .objectives
            .constraints
            .iter()
            .map(|c| format!("`{} {:?}`", c.metric, c.bound))
            .collect();
        let _ = writeln!(md, "- Constraints: {}", c.join(", "));
        for f in &s.floors {
            let _ = writeln!(
                md,
                "  - resolved: `{} {} {}`",
                f.metric,
                if f.at_least { ">=" } else { "<=" },
                tick(f.value)
            );
        }
    }
    let _ = writeln!(
        md,
        "- Trials: {} finished, {} failed, {} unfinished",
        s.finished_trials, s.failed_trials, s.unfinished_trials
    );
    match s.hypervolume {
        Some(hv) => {
            let _ = writeln!(md, "- Hypervolume of the front: {hv:.6} (against the declared reference point; normalised to [0, 1] where ideals are declared)");
        }
        None => {
            let _ = writeln!(
                md,
                "- Hypervolume: not computed (no reference point declared)"
            );
        }
    }
    match (s.search_energy.energy_j, s.search_energy.provenance) {
        (Some(e), p) => {
            let _ = writeln!(
                md,
                "- Energy spent by the search itself: {e:.3} J ({}), over {} trials that reported it",
                p.map(|p| p.label()).unwrap_or("unknown provenance"),
                s.search_energy.trials_with_energy
            );
        }
        (None, _) => {
            let _ = writeln!(
                md,
                "- Energy spent by the search itself: not reported by the evaluator"
            );
        }
    }
    for l in carbon_lines(s.carbon.as_ref()) {
        let _ = writeln!(md, "{l}");
    }
    if let Some(o) = s.mean_overhead_ms {
        let _ = writeln!(
            md,
            "- Engine overhead per trial (outside the evaluator): {o:.3} ms"
        );
    }
    let names: Vec<&str> = spec
        .objectives
        .objectives
        .iter()
        .map(|o| o.name.as_str())
        .collect();
    let _ = writeln!(md, "\n## Chosen architectures\n");
    let _ = writeln!(
        md,
        "| why | trial | {} | configuration |",
        names.join(" | ")
    );
    let _ = writeln!(md, "|---|---|{}---|", "---|".repeat(names.len()));
    for c in &s.chosen {
        let vals: Vec<String> = names
            .iter()
            .map(|n| fmt_metric(c.entry.metrics.get(*n)))
            .collect();
        let _ = writeln!(
            md,
            "| {} | {}{} | {} | `{}` |",
            c.reason,
            c.entry.number,
            c.entry
                .tag
                .as_deref()
                .map_or(String::new(), |t| format!(" ({t})")),
            vals.join(" | "),
            c.entry.config
        );
    }
    let _ = writeln!(md, "\n## Pareto front ({} trials)\n", s.front.len());
    let _ = writeln!(
        md,
        "| trial | {} | provenance | configuration |",
        names.join(" | ")
    );
    let _ = writeln!(md, "|---|{}---|---|", "---|".repeat(names.len()));
    for e in &s.front {
        let vals: Vec<String> = names
            .iter()
            .map(|n| fmt_metric(e.metrics.get(*n)))
            .collect();
        let _ = writeln!(
            md,
            "| {}{} | {} | {} | `{}` |",
            e.number,
            // Which trial is what: a one-shot search's pick, a bracket.
            e.tag
                .as_deref()
                .map_or(String::new(), |t| format!(" ({t})")),
            vals.join(" | "),
            e.provenance.map(|p| p.label()).unwrap_or("-"),
            e.config
        );
    }
    if !s.predicted_vs_measured.is_empty() {
        let _ = writeln!(md, "\n## Predicted and measured\n");
        let _ = writeln!(
            md,
            "Figures predicted from the calibration next to what energyd measured for the same trial."
        );
        let _ = writeln!(md);
        let _ = writeln!(
            md,
            "| trial | metric | predicted by | predicted | measured | error |"
        );
        let _ = writeln!(md, "|---|---|---|---|---|---|");
        for p in &s.predicted_vs_measured {
            let _ = writeln!(
                md,
                "| {} | `{}` | `{}` | {} | {} | {} |",
                p.number,
                p.metric,
                p.predicted_metric,
                fmt_metric(Some(&p.predicted)),
                fmt_metric(Some(&p.measured)),
                p.error_pct.map_or("-".to_owned(), |e| format!("{e:+.1}%"))
            );
        }
        let errors: Vec<f64> = s
            .predicted_vs_measured
            .iter()
            .filter_map(|p| p.error_pct.map(f64::abs))
            .collect();
        if !errors.is_empty() {
            let _ = writeln!(
                md,
                "\nMean absolute error: {:.1}% over {} figures.",
                errors.iter().sum::<f64>() / errors.len() as f64,
                errors.len()
            );
        }
    }
    if !s.undeclared_metrics.is_empty() {
        let _ = writeln!(md, "\n## Metrics not declared\n");
        let why = if spec.metrics.is_empty() {
            "This study declares no metrics (it was written before studies stored a metric registry), so nothing below is known to be measured or predicted"
        } else {
            "The trials report metrics not declared in the study's metric registry: their unit, direction and origin (measured or predicted) are unknown, and no figure here pairs them"
        };
        let names: Vec<String> = s
            .undeclared_metrics
            .iter()
            .map(|n| format!("`{n}`"))
            .collect();
        let _ = writeln!(md, "{why}: {}.", names.join(", "));
    }
    let _ = writeln!(md, "\n## Files\n");
    let _ = writeln!(
        md,
        "- `front.csv`, `front.json`: the front; `trials.csv`, `trials.json`: every trial"
    );
    if pareto {
        let _ = writeln!(
            md,
            "- `pareto.svg`, `pareto.png`: accuracy against inference energy; front in red, other feasible trials blue, infeasible ones grey crosses, constraint thresholds dashed orange, picks ringed and labelled; predicted energies hollow, re-measured ones black diamonds"
        );
    }
    if progress {
        let _ = writeln!(
            md,
            "- `progress.svg`, `progress.png`: hypervolume and least feasible inference energy against the energy the search had spent"
        );
    }
    if (pareto || progress) && !png_text {
        let _ = writeln!(md, "- Note: no TrueType font was found, so the PNGs have no text (install `fonts-dejavu-core` or set `NAS_SEARCH_FONT`); the SVGs are labelled.");
    }
    let _ = writeln!(md, "- `summary.json`: this summary");
    md
}

/// The search's carbon as bullets of the Study section (and, for an
/// hourly source, the hours as a table under it).
pub(crate) fn carbon_lines(c: Option<&crate::footprint::SearchCarbon>) -> Vec<String> {
    use crate::footprint::CarbonTiming;
    let Some(c) = c else {
        return vec![
            "- Carbon of the search: not computed (no intensity source given: pass `--carbon-intensity`)".into(),
        ];
    };
    let mut out = Vec::new();
    if c.trials_charged == 0 {
        out.push(format!(
            "- Carbon of the search: nothing to charge: no trial reported energy ({})",
            c.label()
        ));
        return out;
    }
    out.push(format!(
        "- Carbon of the search: **{} gCO₂eq** ({}), from {} kWh of {} energy over {} trials",
        sig(c.grams_co2eq),
        c.label(),
        sig(c.it_energy_kwh),
        c.energy_provenance.map_or("unknown", |p| p.label()),
        c.trials_charged
    ));
    out.push(match c.timing {
        CarbonTiming::HourlyFromTrialTimes => format!(
            "  - each trial's energy charged to the UTC hours between its start and finish, at each hour's intensity: {} gCO₂eq/kWh on average (PUE included)",
            c.search_intensity_g_per_kwh.map_or("-".into(), sig)
        ),
        CarbonTiming::ConstantIntensity => {
            "  - one intensity for every hour: when the trials ran does not matter".into()
        }
    });
    if c.intensity_kind == crate::footprint::SignalKind::Marginal {
        out.push("  - marginal intensity: the emissions of the generators that respond to extra load, not the grid's average mix; not comparable with average-intensity figures".into());
    }
    out.push(format!(
        "  - the pick's savings are charged at {} gCO₂eq/kWh: {}",
        sig(c.deployment_intensity_g_per_kwh),
        c.deployment_basis()
    ));
    if !c.hours.is_empty() {
        out.push(String::new());
        out.push("| hour (UTC) | IT energy (kWh) | intensity (gCO₂eq/kWh) | gCO₂eq |".into());
        out.push("|---|---|---|---|".into());
        for h in &c.hours {
            out.push(format!(
                "| {} | {} | {} | {} |",
                h.hour_start,
                sig(h.it_energy_kwh),
                sig(h.intensity_g_per_kwh),
                sig(h.grams_co2eq)
            ));
        }
        out.push(String::new());
    }
    out
}
