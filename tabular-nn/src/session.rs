//! This process's connection to energyd, the one client every program of
//! the ML half uses to measure itself (a training run, a calibration
//! window): it registers the process, ships kernel spans in batches, and
//! asks for the energy of a window per domain and per kernel.
//!
//! For training it is the [`PhaseMeter`] the loop takes. Spans travel in
//! two hops so that the timed loop never does i/o: the
//! [`SpanRecorder`](crate::kernels::SpanRecorder) hands full buffers to a
//! [`PendingSpans`] queue (a memory copy), and the training loop submits
//! the queue at epoch ends, outside the timed steps.
//!
//! For calibration, [`ProcessSession::measure_window`] reports one window
//! as a single named span and returns the process's energy over it.

use crate::kernels::{KernelKind, KernelSpan, SpanUploader};
use crate::meter::{MeterError, PhaseEnergy, PhaseMeter};
use shared::client::{Client, ClientError};
use shared::protocol::{Breakdown, SpanBatch};
use shared::{MonotonicNs, SourceInfo};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Why energy could not be measured.
#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    /// The daemon could not be reached or refused a request.
    #[error("energyd at {socket}: {source}")]
    Client {
        /// The socket.
        socket: PathBuf,
        /// What went wrong.
        source: ClientError,
    },
    /// The daemon attributed nothing to this process over a window.
    #[error("energyd at {socket} reported no energy domains for the window ({notes})")]
    NoDomains {
        /// The socket.
        socket: PathBuf,
        /// The daemon's notes, joined.
        notes: String,
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

/// A registered connection to energyd measuring this process.
pub struct ProcessSession {
    client: Client,
    socket: PathBuf,
    pid: u32,
    pending: PendingSpans,
    spans_accepted: u64,
    spans_rejected: u64,
}

impl ProcessSession {
    /// Connects to the daemon at `socket` as `client_name` and registers
    /// this process (with its children when `include_children`).
    pub fn connect(
        socket: &Path,
        client_name: &str,
        include_children: bool,
    ) -> Result<ProcessSession, SessionError> {
        let err = |source| SessionError::Client {
            socket: socket.to_owned(),
            source,
        };
        let mut client = Client::connect(socket, client_name).map_err(err)?;
        let pid = std::process::id();
        client
            .register_process(pid, include_children)
            .map_err(err)?;
        Ok(ProcessSession {
            client,
            socket: socket.to_owned(),
            pid,
            pending: PendingSpans::default(),
            spans_accepted: 0,
            spans_rejected: 0,
        })
    }

    fn err(&self, source: ClientError) -> SessionError {
        SessionError::Client {
            socket: self.socket.clone(),
            source,
        }
    }

    /// The socket this session uses.
    pub fn socket(&self) -> &Path {
        &self.socket
    }

    /// The daemon's energy sources.
    pub fn sources(&mut self) -> Result<Vec<SourceInfo>, SessionError> {
        self.client.sources().map_err(|e| self.err(e))
    }

    /// The daemon's breakdown of this process over `[from, to]`.
    pub fn breakdown(
        &mut self,
        from: MonotonicNs,
        to: MonotonicNs,
    ) -> Result<Breakdown, SessionError> {
        self.client
            .breakdown(self.pid, Some(from), Some(to))
            .map_err(|e| self.err(e))
    }

    /// Submits the spans queued by uploaders.
    pub fn submit_queued(&mut self) -> Result<(), SessionError> {
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
        let (accepted, rejected) = self.client.submit_spans(&batch).map_err(|e| self.err(e))?;
        self.spans_accepted += accepted;
        self.spans_rejected += rejected;
        Ok(())
    }

    /// Energy of this process over `[from, to]`, summed over domains.
    pub fn energy(
        &mut self,
        from: MonotonicNs,
        to: MonotonicNs,
    ) -> Result<PhaseEnergy, SessionError> {
        let b = self.breakdown(from, to)?;
        let notes = b.notes.join("; ");
        PhaseEnergy::from_breakdown(b).ok_or(SessionError::NoDomains {
            socket: self.socket.clone(),
            notes,
        })
    }

    /// Reports `[from, to]`, during which this process ran only `name`, as
    /// one span of that name (so the daemon's per-kernel breakdown sees it
    /// too), waits `settle` for the daemon's samplers to pass `to`, and
    /// returns the process's energy over the window: the kernel's energy,
    /// whatever method the daemon uses for per-kernel splits.
    pub fn measure_window(
        &mut self,
        name: &str,
        from: MonotonicNs,
        to: MonotonicNs,
        settle: Duration,
    ) -> Result<PhaseEnergy, SessionError> {
        let mut batch = SpanBatch::default();
        let tid = nix::unistd::gettid().as_raw() as u32;
        batch.push(name, from, to, self.pid, tid);
        self.client.submit_spans(&batch).map_err(|e| self.err(e))?;
        std::thread::sleep(settle);
        self.energy(from, to)
    }

    /// Unregisters the process (the daemon also forgets it when it exits).
    pub fn close(mut self) {
        if let Err(e) = self.client.unregister_process(self.pid) {
            tracing::debug!("unregister from energyd: {e}");
        }
    }
}

impl PhaseMeter for ProcessSession {
    fn uploader(&self) -> Box<dyn SpanUploader> {
        Box::new(self.pending.clone())
    }
    fn submit_pending(&mut self) -> Result<(), MeterError> {
        Ok(self.submit_queued()?)
    }
    fn min_window_ns(&self) -> u64 {
        self.client.policy.min_window_ns
    }
    fn phase(&mut self, from: MonotonicNs, to: MonotonicNs) -> Result<PhaseEnergy, MeterError> {
        Ok(self.energy(from, to)?)
    }
    fn span_counts(&self) -> (u64, u64) {
        (self.spans_accepted, self.spans_rejected)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
}
