//! Delivering kernel spans to energyd from a long-running client (a
//! trainer), whatever the daemon does meanwhile: busy, rate-limiting,
//! restarting, or gone for a while.
//!
//! Issue 12 found a trainer flushing once per epoch (so short epochs hit
//! the rate limit and lost 3 % of their spans with only a warning), a
//! client repeating its warning 92 times and never reconnecting, and a
//! batch whose answer was lost stored twice when resent. [`SpanUploader`]:
//! - seals the spans recorded so far into a batch every `flush_interval`
//!   or `flush_spans` spans, whichever comes first, independent of epochs;
//! - sends each batch with [`Request::SubmitSpansOnce`](crate::protocol::Request::SubmitSpansOnce)
//!   under an id unique to this uploader, and keeps it until the daemon
//!   answers, so a batch resent after a lost answer is not stored twice;
//! - on a rate limit or exhausted resource, waits (exponential back-off)
//!   and retries the same batch; nothing is lost unless more than
//!   `max_pending_spans` wait, and then the count says so;
//! - on a broken connection or an absent daemon, reconnects at the next
//!   attempt (with back-off) and registers its processes again;
//! - never prints: [`SpanUploader::take_warning`] hands out the first
//!   problem once (later ones are counted, in [`UploadCounts`]).
//!
//! It needs no thread: the owner calls [`SpanUploader::poll`] from its
//! loop (cheap when nothing is due) and [`SpanUploader::flush`] at the end.

use crate::client::{Client, ClientError, SPANS_PER_FRAME};
use crate::protocol::SpanBatch;
use crate::time::MonotonicNs;
use std::collections::VecDeque;
use std::hash::{BuildHasher, Hasher};
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// Settings of a [`SpanUploader`].
#[derive(Debug, Clone, PartialEq)]
pub struct UploaderConfig {
    /// The daemon's socket.
    pub socket: PathBuf,
    /// Client name sent in the handshake.
    pub client_name: String,
    /// Spans recorded are sealed into a batch at least this often.
    /// Default 5 s: well inside the daemon's unprivileged idle timeout
    /// (60 s), and a few requests a minute.
    pub flush_interval: Duration,
    /// ... or as soon as this many are waiting. Default
    /// [`SPANS_PER_FRAME`] (one frame).
    pub flush_spans: usize,
    /// Spans kept waiting for the daemon at most; past it the oldest
    /// batches are dropped and counted. Default 2 000 000 (~48 MiB of
    /// spans; ten minutes of a trainer emitting 3 000 kernels a second).
    pub max_pending_spans: usize,
    /// First wait after a failed send. Default 100 ms.
    pub initial_backoff: Duration,
    /// Longest wait between attempts. Default 5 s.
    pub max_backoff: Duration,
    /// Wait for each answer at most this long. Default 30 s.
    pub read_timeout: Duration,
}

impl UploaderConfig {
    /// Defaults for `socket`.
    pub fn new(socket: PathBuf, client_name: &str) -> UploaderConfig {
        UploaderConfig {
            socket,
            client_name: client_name.to_owned(),
            flush_interval: Duration::from_secs(5),
            flush_spans: SPANS_PER_FRAME,
            max_pending_spans: 2_000_000,
            initial_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(5),
            read_timeout: crate::client::DEFAULT_READ_TIMEOUT,
        }
    }
}

/// What happened to the spans so far.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct UploadCounts {
    /// Spans handed to the uploader.
    pub recorded: u64,
    /// Spans the daemon stored.
    pub accepted: u64,
    /// Spans the daemon refused (not permitted, malformed, over budget).
    pub rejected: u64,
    /// Spans dropped by the uploader: more than `max_pending_spans`
    /// waited for an unreachable or refusing daemon.
    pub dropped: u64,
    /// Spans waiting to be sent.
    pub pending: u64,
    /// Sends that failed and will be retried.
    pub retries: u64,
    /// Connections made after the first.
    pub reconnects: u64,
}

/// The first problem met, handed out once by [`SpanUploader::take_warning`].
#[derive(Debug)]
pub enum UploadWarning {
    /// The daemon could not be reached or the connection broke; the
    /// uploader keeps the spans and reconnects.
    DaemonUnavailable(ClientError),
    /// The daemon asked to slow down; the uploader retries.
    Throttled(ClientError),
    /// Spans were dropped after waiting too long.
    SpansDropped(u64),
}

impl std::fmt::Display for UploadWarning {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            UploadWarning::DaemonUnavailable(e) => write!(
                f,
                "energyd unavailable ({e}); spans are kept and sent when it is back"
            ),
            UploadWarning::Throttled(e) => {
                write!(f, "energyd asked to slow down ({e}); spans are retried")
            }
            UploadWarning::SpansDropped(n) => {
                write!(f, "{n} spans dropped after waiting too long for energyd")
            }
        }
    }
}

/// Sends spans in idempotent batches, retrying and reconnecting (see the
/// module documentation).
pub struct SpanUploader {
    config: UploaderConfig,
    client: Option<Client>,
    ever_connected: bool,
    registered: Vec<(u32, bool)>,
    open: SpanBatch,
    opened_at: Instant,
    sealed: VecDeque<(u64, SpanBatch)>,
    id_base: u64,
    next_seq: u64,
    counts: UploadCounts,
    next_attempt: Instant,
    backoff: Duration,
    warning: Option<UploadWarning>,
    warned: bool,
}

impl SpanUploader {
    /// An uploader for `config.socket`; it connects at the first send.
    pub fn new(config: UploaderConfig) -> SpanUploader {
        // Batch ids: a random base per uploader (std's per-process random
        // hasher keys, mixed with the pid and the clock) plus a counter,
        // so two uploaders of one uid never share an id.
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_u32(std::process::id());
        h.write_u64(MonotonicNs::now().as_ns());
        let now = Instant::now();
        SpanUploader {
            backoff: config.initial_backoff,
            config,
            client: None,
            ever_connected: false,
            registered: Vec::new(),
            open: SpanBatch::default(),
            opened_at: now,
            sealed: VecDeque::new(),
            id_base: h.finish(),
            next_seq: 0,
            counts: UploadCounts::default(),
            next_attempt: now,
            warning: None,
            warned: false,
        }
    }

    /// Tracks `pid` now and again after every reconnect (a restarted
    /// daemon has forgotten it). The error, if any, is the first attempt's;
    /// the pid is remembered either way.
    pub fn register(&mut self, pid: u32, include_children: bool) -> Result<(), ClientError> {
        if !self.registered.contains(&(pid, include_children)) {
            self.registered.push((pid, include_children));
        }
        self.connected()?.register_process(pid, include_children)
    }

    /// Records one span.
    pub fn record(&mut self, name: &str, start: MonotonicNs, end: MonotonicNs, pid: u32, tid: u32) {
        if self.open.spans.is_empty() {
            self.opened_at = Instant::now();
        }
        self.open.push(name, start, end, pid, tid);
        self.counts.recorded += 1;
        self.counts.pending += 1;
        if self.open.spans.len() >= self.config.flush_spans {
            self.seal();
        }
    }

    /// Records every span of `batch`.
    pub fn record_batch(&mut self, batch: &SpanBatch) {
        for s in &batch.spans {
            let name = batch.name_of(s).unwrap_or("?");
            self.record(name, s.start, s.end, s.pid, s.tid);
        }
    }

    /// Seals what is due and sends what can be sent now. Cheap when
    /// nothing is due; blocks for one round trip per batch sent.
    pub fn poll(&mut self) {
        if !self.open.spans.is_empty() && self.opened_at.elapsed() >= self.config.flush_interval {
            self.seal();
        }
        if !self.sealed.is_empty() && Instant::now() >= self.next_attempt {
            self.send_sealed();
        }
    }

    /// Sends everything recorded, retrying until done or `timeout` has
    /// passed; returns the counts (`pending > 0` if time ran out).
    pub fn flush(&mut self, timeout: Duration) -> UploadCounts {
        self.seal();
        let deadline = Instant::now() + timeout;
        while !self.sealed.is_empty() {
            let now = Instant::now();
            if now >= deadline {
                break;
            }
            if now < self.next_attempt {
                std::thread::sleep((self.next_attempt - now).min(deadline - now));
                continue;
            }
            self.send_sealed();
        }
        self.counts
    }

    /// What happened so far.
    pub fn counts(&self) -> UploadCounts {
        self.counts
    }

    /// The first problem met, once; `None` afterwards (later problems are
    /// in the counts only), so a caller that prints it prints one line.
    pub fn take_warning(&mut self) -> Option<UploadWarning> {
        self.warning.take()
    }

    /// The connection, for queries between sends (reconnecting if needed).
    pub fn client(&mut self) -> Result<&mut Client, ClientError> {
        self.connected()
    }

    fn seal(&mut self) {
        if self.open.spans.is_empty() {
            return;
        }
        let batch = std::mem::take(&mut self.open);
        let id = self.id_base.wrapping_add(self.next_seq);
        self.next_seq += 1;
        self.sealed.push_back((id, batch));
        let mut waiting: usize = self.sealed.iter().map(|(_, b)| b.spans.len()).sum();
        let mut dropped = 0u64;
        while waiting > self.config.max_pending_spans {
            let Some((_, old)) = self.sealed.pop_front() else {
                break;
            };
            waiting -= old.spans.len();
            dropped += old.spans.len() as u64;
        }
        if dropped > 0 {
            self.counts.dropped += dropped;
            self.counts.pending -= dropped;
            self.warn(UploadWarning::SpansDropped(dropped));
        }
    }

    fn warn(&mut self, w: UploadWarning) {
        if !self.warned {
            self.warned = true;
            self.warning = Some(w);
        }
    }

    fn connected(&mut self) -> Result<&mut Client, ClientError> {
        if self.client.is_none() {
            let client = Client::connect_with_timeout(
                &self.config.socket,
                &self.config.client_name,
                self.config.read_timeout,
            )?;
            self.client = Some(client);
            if self.ever_connected {
                self.counts.reconnects += 1;
                // A restarted daemon forgot our processes.
                let pids = self.registered.clone();
                for (pid, children) in pids {
                    if let Some(c) = self.client.as_mut() {
                        if let Err(e) = c.register_process(pid, children) {
                            if e.daemon_gone() {
                                self.client = None;
                                return Err(e);
                            }
                        }
                    }
                }
            }
            self.ever_connected = true;
        }
        self.client.as_mut().ok_or(ClientError::Closed)
    }

    fn fail(&mut self, e: ClientError, gone: bool) {
        self.counts.retries += 1;
        if gone {
            self.client = None;
        }
        self.next_attempt = Instant::now() + self.backoff;
        self.backoff = (self.backoff * 2).min(self.config.max_backoff);
        self.warn(if gone {
            UploadWarning::DaemonUnavailable(e)
        } else {
            UploadWarning::Throttled(e)
        });
    }

    fn send_sealed(&mut self) {
        while let Some((id, batch)) = self.sealed.front() {
            let (id, n) = (*id, batch.spans.len() as u64);
            let result = match self.connected() {
                Err(e) => Err(e),
                Ok(_) => match (self.client.as_mut(), self.sealed.front()) {
                    (Some(client), Some((_, batch))) => client.submit_spans_once(id, batch),
                    _ => Err(ClientError::Closed),
                },
            };
            match result {
                Ok((accepted, rejected)) => {
                    self.counts.accepted += accepted;
                    self.counts.rejected += rejected;
                    self.counts.pending -= n;
                    self.sealed.pop_front();
                    self.backoff = self.config.initial_backoff;
                }
                Err(e) if e.retry_later() => return self.fail(e, false),
                Err(e @ ClientError::Timeout(_)) => return self.fail(e, true),
                Err(e) if e.daemon_gone() => return self.fail(e, true),
                Err(_) => {
                    // Refused for good (malformed, not permitted): resending
                    // cannot help; the spans count as rejected.
                    self.counts.rejected += n;
                    self.counts.pending -= n;
                    self.sealed.pop_front();
                }
            }
        }
    }
}
