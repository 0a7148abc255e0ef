//! The connection to energyd during training: registers this process,
//! ships kernel spans in batches, and asks for the energy of a phase
//! (training, inference) per domain and per kernel.
//!
//! Spans travel in two hops so that the timed loop never does i/o: the
//! [`SpanRecorder`](crate::kernels::SpanRecorder) hands full buffers to a
//! [`PendingSpans`] queue (a memory copy), and the training loop submits
//! the queue at epoch ends, outside the timed steps.

use crate::kernels::{KernelKind, KernelSpan, SpanUploader};
use serde::Serialize;
use shared::client::{Client, ClientError};
use shared::protocol::{Breakdown, KernelEnergy, SpanBatch};
use shared::{MonotonicNs, Provenance};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

/// Why energy could not be measured.
#[derive(Debug, thiserror::Error)]
pub enum EnergyError {
    /// The daemon could not be reached or refused a request.
    #[error("energyd at {socket}: {source}")]
    Client {
        /// Socket path.
        socket: PathBuf,
        /// Cause.
        source: ClientError,
    },
}

/// Spans waiting to be submitted, shared between the recorder's uploader
/// and the session.
#[derive(Clone, Default)]
pub struct PendingSpans {
    queue: Arc<Mutex<Vec<(u32, u32, KernelSpan)>>>,
}

impl SpanUploader for PendingSpans {
    fn upload(&mut self, pid: u32, tid: u32, spans: &[KernelSpan]) {
        // A poisoned lock only means another thread panicked mid-push; the
        // spans already queued are still valid.
        let mut q = self.queue.lock().unwrap_or_else(|e| e.into_inner());
        q.extend(spans.iter().map(|s| (pid, tid, *s)));
    }
}

/// A registered connection to energyd.
pub struct EnergySession {
    client: Client,
    socket: PathBuf,
    pid: u32,
    pending: PendingSpans,
    /// Spans the daemon stored.
    pub spans_accepted: u64,
    /// Spans the daemon refused.
    pub spans_rejected: u64,
}

impl EnergySession {
    /// Connects to the daemon at `socket` and registers this process.
    pub fn connect(socket: &Path) -> Result<EnergySession, EnergyError> {
        let err = |source| EnergyError::Client {
            socket: socket.to_owned(),
            source,
        };
        let mut client = Client::connect(socket, "nas-client").map_err(err)?;
        let pid = std::process::id();
        client.register_process(pid, false).map_err(err)?;
        Ok(EnergySession {
            client,
            socket: socket.to_owned(),
            pid,
            pending: PendingSpans::default(),
            spans_accepted: 0,
            spans_rejected: 0,
        })
    }

    /// The socket this session talks to.
    pub fn socket(&self) -> &Path {
        &self.socket
    }

    /// The daemon's minimum attribution window for this client, ns.
    pub fn min_window_ns(&self) -> u64 {
        self.client.policy.min_window_ns
    }

    /// An uploader that queues spans for [`EnergySession::submit_pending`].
    pub fn uploader(&self) -> Box<dyn SpanUploader> {
        Box::new(self.pending.clone())
    }

    /// Sends the queued spans to the daemon.
    pub fn submit_pending(&mut self) -> Result<(), EnergyError> {
        let spans = {
            let mut q = self.pending.queue.lock().unwrap_or_else(|e| e.into_inner());
            std::mem::take(&mut *q)
        };
        if spans.is_empty() {
            return Ok(());
        }
        let mut batch = SpanBatch {
            names: KernelKind::ALL
                .iter()
                .map(|k| k.as_str().to_owned())
                .collect(),
            spans: Vec::with_capacity(spans.len()),
        };
        for (pid, tid, s) in spans {
            batch.spans.push(shared::protocol::SpanRecord {
                name: s.kind.as_index() as u32,
                start: s.start,
                end: s.end,
                pid,
                tid,
            });
        }
        let (accepted, rejected) =
            self.client
                .submit_spans(&batch)
                .map_err(|source| EnergyError::Client {
                    socket: self.socket.clone(),
                    source,
                })?;
        self.spans_accepted += accepted;
        self.spans_rejected += rejected;
        Ok(())
    }

    /// Energy of this process between `from` and `to`, per domain and per
    /// kernel, as energyd attributes it.
    pub fn phase(
        &mut self,
        from: MonotonicNs,
        to: MonotonicNs,
    ) -> Result<PhaseEnergy, EnergyError> {
        let b = self
            .client
            .breakdown(self.pid, Some(from), Some(to))
            .map_err(|source| EnergyError::Client {
                socket: self.socket.clone(),
                source,
            })?;
        Ok(PhaseEnergy::from_breakdown(b))
    }

    /// Stops tracking this process (best effort: the daemon also forgets
    /// processes that exit).
    pub fn close(mut self) {
        if let Err(e) = self.client.unregister_process(self.pid) {
            tracing::debug!("unregister from energyd: {e}");
        }
    }
}

/// Energy of one phase of a run.
#[derive(Debug, Clone, Serialize)]
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
#[derive(Debug, Clone, Serialize)]
pub struct DomainEnergy {
    /// energyd's source id.
    pub source: u32,
    /// Energy attributed to this process, joules.
    pub process_j: f64,
    /// Where the figure comes from.
    pub provenance: Provenance,
}

impl PhaseEnergy {
    /// Sums a daemon breakdown.
    pub fn from_breakdown(b: Breakdown) -> PhaseEnergy {
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
        PhaseEnergy {
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
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use shared::protocol::{AttributionMethod, DomainShare};
    use shared::SourceId;

    #[test]
    fn pending_spans_queue_until_taken() {
        let mut p = PendingSpans::default();
        let span = KernelSpan {
            kind: KernelKind::LinearFwd,
            start: MonotonicNs(5),
            end: MonotonicNs(9),
        };
        p.upload(1, 2, &[span, span]);
        assert_eq!(p.queue.lock().expect("lock").len(), 2);
    }

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
        let b = Breakdown {
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
        let p = PhaseEnergy::from_breakdown(b);
        assert_eq!(p.process_j, 4.0);
        assert_eq!(p.provenance, Provenance::Estimated);
        assert!((p.uncertainty_j - 18f64.sqrt()).abs() < 1e-12);
        assert_eq!(p.kernels.len(), 1);
    }
}
