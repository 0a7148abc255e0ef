//! What the training loop needs from an energy meter, as a trait: a place
//! for span buffers to go and the energy of a phase (training, inference)
//! of this process. The loop knows nothing of energyd;
//! [`crate::session::ProcessSession`] is the energyd implementation, tests
//! can plug in others.

use crate::kernels::SpanUploader;
use serde::{Deserialize, Serialize};
use shared::protocol::{Breakdown, KernelEnergy};
use shared::{MonotonicNs, Provenance};

/// Why a meter could not answer (its own error, boxed: the loop only logs
/// it or reports it as the reason energy is missing).
pub type MeterError = Box<dyn std::error::Error + Send + Sync>;

/// Measures the energy of this process's phases and takes its kernel
/// spans (the training loop's view of energyd).
pub trait PhaseMeter: Send {
    /// Where full span buffers go; handing one over is a memory copy, never
    /// i/o (it happens inside timed steps).
    fn uploader(&self) -> Box<dyn SpanUploader>;
    /// Moves the spans handed over so far towards the daemon; batches go
    /// out when due by time or size, not on every call. Called at epoch
    /// ends, outside timed steps (cheap when nothing is due).
    fn poll_spans(&mut self);
    /// Delivers every span handed over so far (waiting out rate limits,
    /// within a bound). Called at the end of the measured phases, before
    /// their energy is asked for.
    fn flush_spans(&mut self);
    /// Shortest phase the meter can resolve, ns.
    fn min_window_ns(&self) -> u64;
    /// Energy attributed to this process over `[from, to]`.
    fn phase(&mut self, from: MonotonicNs, to: MonotonicNs) -> Result<PhaseEnergy, MeterError>;
    /// What became of the spans so far.
    fn span_delivery(&self) -> SpanDelivery;
}

/// What became of a run's kernel spans on their way to energyd: the counts
/// a user checks to know the per-kernel figures rest on every span.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SpanDelivery {
    /// Spans handed to the uploader.
    pub recorded: u64,
    /// Spans the daemon stored.
    pub accepted: u64,
    /// Spans the daemon refused (not permitted, malformed, over budget).
    pub rejected: u64,
    /// Spans dropped after waiting too long for an unreachable daemon.
    pub dropped: u64,
    /// Spans still unsent when the run ended (the daemon stayed away or
    /// kept asking to slow down past the flush timeout).
    pub pending: u64,
    /// Sends that failed and were retried (rate limits, reconnects).
    pub retries: u64,
    /// Connections made again after a broken one.
    pub reconnects: u64,
    /// The first problem met, once (later ones are only counted).
    pub warning: Option<String>,
}

impl SpanDelivery {
    /// Whether every recorded span reached the daemon and was stored.
    pub fn complete(&self) -> bool {
        self.accepted == self.recorded
    }
}

/// Energy of one phase of a run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PhaseEnergy {
    /// Start, CLOCK_MONOTONIC ns.
    pub from_ns: u64,
    /// End, CLOCK_MONOTONIC ns.
    pub to_ns: u64,
    /// Energy attributed to this process over all domains, joules.
    pub process_j: f64,
    /// One-sigma uncertainty of `process_j` (domains added in quadrature).
    pub uncertainty_j: f64,
    /// Weakest provenance of the domains summed.
    pub provenance: Provenance,
    /// Per domain: source id, energy, provenance.
    pub domains: Vec<DomainEnergy>,
    /// Per kernel type, as energyd attributed it.
    pub kernels: Vec<KernelEnergy>,
    /// The daemon's notes on method and caveats.
    pub notes: Vec<String>,
}

/// One domain's part of a phase.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DomainEnergy {
    /// energyd's source id.
    pub source: u32,
    /// Energy attributed to this process, joules.
    pub process_j: f64,
    /// Where the figure comes from.
    pub provenance: Provenance,
}

impl PhaseEnergy {
    /// Sums a daemon breakdown over its domains: energy added, one-sigma
    /// uncertainties added in quadrature, the weakest provenance kept.
    /// `None` when the breakdown has no domain (nothing was attributed).
    pub fn from_breakdown(b: Breakdown) -> Option<PhaseEnergy> {
        if b.domains.is_empty() {
            return None;
        }
        let process_j = b.domains.iter().map(|d| d.process_j).sum();
        let uncertainty_j = b
            .domains
            .iter()
            .map(|d| d.uncertainty_j.powi(2))
            .sum::<f64>()
            .sqrt();
        let provenance = b
            .domains
            .iter()
            .map(|d| d.provenance)
            .reduce(Provenance::combine)
            .unwrap_or(Provenance::Estimated);
        let mut kernels = b.kernels;
        kernels.sort_by(|a, b| {
            b.energy_j
                .unwrap_or(0.0)
                .total_cmp(&a.energy_j.unwrap_or(0.0))
        });
        Some(PhaseEnergy {
            from_ns: b.from.as_ns(),
            to_ns: b.to.as_ns(),
            process_j,
            uncertainty_j,
            provenance,
            domains: b
                .domains
                .iter()
                .map(|d| DomainEnergy {
                    source: d.source.0,
                    process_j: d.process_j,
                    provenance: d.provenance,
                })
                .collect(),
            kernels,
            notes: b.notes,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use shared::protocol::{AttributionMethod, DomainShare};
    use shared::SourceId;

    #[test]
    fn phase_sums_domains_with_weakest_provenance() {
        let domain = |id, j, provenance| DomainShare {
            source: SourceId(id),
            machine_j: j * 2.0,
            process_j: j,
            process_dynamic_j: j / 2.0,
            activity_share: 0.5,
            unattributed_j: 0.0,
            uncertainty_j: 3.0,
            provenance,
        };
        let mut b = Breakdown {
            pid: 1,
            from: MonotonicNs(10),
            to: MonotonicNs(20),
            domains: vec![
                domain(0, 1.5, Provenance::Measured),
                domain(1, 2.5, Provenance::Estimated),
            ],
            kernels: vec![KernelEnergy {
                name: "linear_fwd".into(),
                count: 3,
                total_time_ns: 7,
                energy_j: Some(4.0),
                share: Some(1.0),
                uncertainty_j: 0.1,
                confidence: 0.9,
                method: AttributionMethod::Integrated,
            }],
            notes: vec![],
        };
        let p = PhaseEnergy::from_breakdown(b.clone()).expect("domains");
        assert_eq!(p.process_j, 4.0);
        assert_eq!(p.provenance, Provenance::Estimated);
        assert!((p.uncertainty_j - 18f64.sqrt()).abs() < 1e-12);
        assert_eq!(p.kernels.len(), 1);
        b.domains.clear();
        assert_eq!(PhaseEnergy::from_breakdown(b), None);
    }
}
