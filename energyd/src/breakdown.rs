//! Per-process, per-kernel energy breakdowns: gathers the history, the
//! process's CPU activity and its spans, and hands them to the
//! `attribution` crate.

use crate::service::DaemonState;
use shared::protocol::{Breakdown, DomainShare};
use shared::MonotonicNs;

/// Breakdown of `pid` over `[from, to]`.
pub fn compute(state: &DaemonState, pid: u32, from: MonotonicNs, to: MonotonicNs) -> Breakdown {
    let cpu = state.tracker.cpu_between(pid, from, to);
    let mut notes = Vec::new();
    let share = match &cpu {
        Some(c) if c.machine_total_cpu_ns > 0 => {
            c.process_cpu_ns as f64 / c.machine_total_cpu_ns as f64
        }
        _ => {
            notes.push("no CPU activity samples for this process in the interval".to_owned());
            0.0
        }
    };
    let domains = state
        .engine
        .sources()
        .iter()
        .map(|info| {
            let e = state.engine.energy(info.id, from, to);
            let machine_j = e.as_ref().map_or(0.0, |e| e.joules);
            DomainShare {
                source: info.id,
                machine_j,
                process_j: machine_j * share,
                process_dynamic_j: 0.0,
                activity_share: share,
                unattributed_j: machine_j * share,
                uncertainty_j: e.as_ref().map_or(0.0, |e| e.uncertainty_j) * share,
                provenance: info.provenance,
            }
        })
        .collect();
    Breakdown {
        pid,
        from,
        to,
        domains,
        kernels: Vec::new(),
        notes,
    }
}
