//! This process's connection to energyd, the one client every program of
//! the ML half uses to measure itself (a training run, a calibration
//! window): it registers the process, ships kernel spans, and asks for the
//! energy of a window per domain and per kernel.
//!
//! For training it is the [`PhaseMeter`] the loop takes. Spans travel in
//! two hops so that the timed loop never does i/o: the
//! [`SpanRecorder`](crate::kernels::SpanRecorder) hands full buffers to a
//! [`PendingSpans`] queue (a memory copy), and the training loop polls the
//! session outside the timed steps (at epoch ends), which moves the queue
//! into a [`shared::uploader::SpanUploader`]. The uploader, not the epoch,
//! decides when a batch goes out (every 5 s or one frame of spans), sends
//! each batch under an idempotent id, waits out rate limits and reconnects
//! (issue 12: per-epoch submissions of short epochs hit the per-uid rate
//! limit and lost 3% of their spans, and workers of one search starved
//! each other). Before the energy of a phase is asked for, the session
//! flushes, so the daemon has every span of the phase. What became of
//! the spans is counted in a [`SpanDelivery`], with the first problem met
//! as one warning.
//!
//! For calibration, [`ProcessSession::measure_window`] reports one window
//! as a single named span and returns the process's energy over it.

use crate::kernels::{KernelSpan, SpanUploader};
use crate::meter::{MeterError, PhaseEnergy, PhaseMeter, SpanDelivery};
use shared::client::{Client, ClientError};
use shared::protocol::Breakdown;
use shared::uploader::{SpanUploader as DaemonUploader, UploaderConfig};
use shared::{MonotonicNs, SourceInfo};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How long a flush at the end of a phase waits for the daemon to take
/// every span (rate limits included) before the phase's energy is asked
/// for anyway; what is still pending then is counted, not lost silently.
pub const FLUSH_TIMEOUT: Duration = Duration::from_secs(60);

/// How long a query (breakdown, sources) is retried while the daemon asks
/// to slow down (its per-uid rate limit, shared with the uid's other
/// processes).
const QUERY_RETRY_FOR: Duration = Duration::from_secs(30);

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
    /// Sends spans, and carries the queries (reconnecting as needed).
    uploader: DaemonUploader,
    socket: PathBuf,
    pid: u32,
    pending: PendingSpans,
    /// The daemon's minimum window, from the first handshake.
    min_window_ns: u64,
    /// The uploader's first problem, taken once and kept for the report.
    warning: Option<String>,
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
        let mut uploader = DaemonUploader::new(UploaderConfig::new(socket.to_owned(), client_name));
        let pid = std::process::id();
        uploader.register(pid, include_children).map_err(err)?;
        let min_window_ns = uploader.client().map_err(err)?.policy.min_window_ns;
        Ok(ProcessSession {
            uploader,
            socket: socket.to_owned(),
            pid,
            pending: PendingSpans::default(),
            min_window_ns,
            warning: None,
        })
    }

    fn err(&self, source: ClientError) -> SessionError {
        SessionError::Client {
            socket: self.socket.clone(),
            source,
        }
    }

    /// Runs a query on the connection, retried while the daemon asks to
    /// slow down or the connection must be made again (bounded).
    fn query<T>(
        &mut self,
        mut ask: impl FnMut(&mut Client) -> Result<T, ClientError>,
    ) -> Result<T, SessionError> {
        let deadline = Instant::now() + QUERY_RETRY_FOR;
        let mut wait = Duration::from_millis(50);
        loop {
            let result = self.uploader.client().and_then(&mut ask);
            match result {
                Ok(v) => return Ok(v),
                Err(e) if (e.retry_later() || e.daemon_gone()) && Instant::now() < deadline => {
                    std::thread::sleep(wait);
                    wait = (wait * 2).min(Duration::from_secs(2));
                }
                Err(e) => return Err(self.err(e)),
            }
        }
    }

    /// The socket this session uses.
    pub fn socket(&self) -> &Path {
        &self.socket
    }

    /// The daemon's energy sources.
    pub fn sources(&mut self) -> Result<Vec<SourceInfo>, SessionError> {
        self.query(|c| c.sources())
    }

    /// The daemon's breakdown of this process over `[from, to]`.
    pub fn breakdown(
        &mut self,
        from: MonotonicNs,
        to: MonotonicNs,
    ) -> Result<Breakdown, SessionError> {
        let pid = self.pid;
        self.query(|c| c.breakdown(pid, Some(from), Some(to)))
    }

    /// Moves the spans queued by recorders into the uploader (a memory
    /// copy) and lets it send what is due by time or size.
    pub fn poll(&mut self) {
        self.take_queue();
        self.uploader.poll();
        self.keep_warning();
    }

    /// Delivers every span queued so far, waiting out rate limits for at
    /// most `timeout`; what is left is counted as pending.
    pub fn flush(&mut self, timeout: Duration) {
        self.take_queue();
        self.uploader.flush(timeout);
        self.keep_warning();
    }

    fn take_queue(&mut self) {
        let spans = {
            let mut q = self.pending.queue.lock().unwrap_or_else(|e| e.into_inner());
            std::mem::take(&mut *q)
        };
        for (pid, tid, s) in spans {
            self.uploader
                .record(s.kind.as_str(), s.start, s.end, pid, tid);
        }
    }

    fn keep_warning(&mut self) {
        if let Some(w) = self.uploader.take_warning() {
            self.warning.get_or_insert_with(|| w.to_string());
        }
    }

    /// What became of the spans so far, with the first problem met.
    pub fn delivery(&self) -> SpanDelivery {
        let c = self.uploader.counts();
        SpanDelivery {
            recorded: c.recorded,
            accepted: c.accepted,
            rejected: c.rejected,
            dropped: c.dropped,
            pending: c.pending,
            retries: c.retries,
            reconnects: c.reconnects,
            warning: self.warning.clone(),
        }
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
        let tid = nix::unistd::gettid().as_raw() as u32;
        self.flush(FLUSH_TIMEOUT);
        self.uploader.record(name, from, to, self.pid, tid);
        self.flush(FLUSH_TIMEOUT);
        std::thread::sleep(settle);
        self.energy(from, to)
    }

    /// Unregisters the process (the daemon also forgets it when it exits).
    pub fn close(mut self) {
        let pid = self.pid;
        if let Err(e) = self
            .uploader
            .client()
            .and_then(|c| c.unregister_process(pid))
        {
            tracing::debug!("unregister from energyd: {e}");
        }
    }
}

impl PhaseMeter for ProcessSession {
    fn uploader(&self) -> Box<dyn SpanUploader> {
        Box::new(self.pending.clone())
    }
    fn poll_spans(&mut self) {
        self.poll();
    }
    fn flush_spans(&mut self) {
        self.flush(FLUSH_TIMEOUT);
    }
    fn min_window_ns(&self) -> u64 {
        self.min_window_ns
    }
    fn phase(&mut self, from: MonotonicNs, to: MonotonicNs) -> Result<PhaseEnergy, MeterError> {
        Ok(self.energy(from, to)?)
    }
    fn span_delivery(&self) -> SpanDelivery {
        self.delivery()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::KernelKind;

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
