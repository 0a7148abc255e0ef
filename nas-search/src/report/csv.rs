//! Trials as CSV.

use crate::study::TrialRecord;
use std::collections::BTreeSet;

fn csv_field(s: &str) -> String {
    if s.contains([',', '"', '\n']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_string()
    }
}

/// All trials as CSV: bookkeeping columns, then every parameter and metric
/// seen in any trial (empty where inactive or missing).
pub fn trials_csv(trials: &[TrialRecord]) -> String {
    let params: BTreeSet<&String> = trials.iter().flat_map(|t| t.config.0.keys()).collect();
    let metrics: BTreeSet<&String> = trials
        .iter()
        .filter_map(|t| t.metrics.as_ref())
        .flat_map(|m| m.keys())
        .collect();
    let mut out = String::from(
        "number,status,fidelity,seed,attempts,provenance,energy_spent_j,eval_ms,overhead_ms,tag,error",
    );
    for p in &params {
        out.push(',');
        out.push_str(&csv_field(p));
    }
    for m in &metrics {
        out.push(',');
        out.push_str(&csv_field(m));
    }
    out.push('\n');
    let opt = |x: Option<f64>| x.map(|v| v.to_string()).unwrap_or_default();
    for t in trials {
        let row = [
            t.number.to_string(),
            t.status.label().to_string(),
            t.fidelity.to_string(),
            t.seed.to_string(),
            t.attempts.to_string(),
            t.provenance
                .map(|p| p.label().to_string())
                .unwrap_or_default(),
            opt(t.energy_spent_j),
            opt(t.eval_ns.map(|n| n as f64 / 1e6)),
            opt(t.overhead_ns.map(|n| n as f64 / 1e6)),
            csv_field(t.tag.as_deref().unwrap_or("")),
            csv_field(t.error.as_deref().unwrap_or("")),
        ];
        out.push_str(&row.join(","));
        for p in &params {
            out.push(',');
            out.push_str(&csv_field(
                &t.config.get(p).map(|v| v.to_string()).unwrap_or_default(),
            ));
        }
        for m in &metrics {
            out.push(',');
            out.push_str(&opt(t.metrics.as_ref().and_then(|x| x.get(*m).copied())));
        }
        out.push('\n');
    }
    out
}
