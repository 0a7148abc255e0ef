//! Span recording: every kernel execution of training and inference is
//! reported to a [`SpanSink`] as a span `(kind, start, end)` on
//! CLOCK_MONOTONIC.
//!
//! [`SpanRecorder`] is the sink used in training: it appends spans to a
//! pre-allocated buffer (no allocation, no lock, no system call beyond the
//! vDSO clock read), keeps per-kind totals, and hands full buffers to an
//! optional [`SpanUploader`] (energyd, see [`crate::session`]).
//!
//! The kinds and shapes of kernels are the shared vocabulary of
//! [`nn_plan`], re-exported here.

pub use nn_plan::{KernelCall, KernelKind, KernelShape, Pass};
use serde::{Deserialize, Serialize};
use shared::MonotonicNs;

/// Where kernel spans go.
pub trait SpanSink {
    /// Whether spans are wanted. When `false`, callers skip the clock reads
    /// entirely (so an untimed run pays nothing).
    fn enabled(&self) -> bool;
    /// Records one kernel execution.
    fn record(&mut self, kind: KernelKind, start: MonotonicNs, end: MonotonicNs);
    /// Hands buffered spans on (e.g. to energyd). Called at epoch ends and
    /// at the end of a run, never inside a timed step.
    fn flush(&mut self) {}
}

/// A sink that wants nothing: no clock is read.
#[derive(Debug, Default, Clone, Copy)]
pub struct NullSink;

impl SpanSink for NullSink {
    fn enabled(&self) -> bool {
        false
    }
    fn record(&mut self, _: KernelKind, _: MonotonicNs, _: MonotonicNs) {}
}

/// Reads the clock when the sink wants spans; `None` otherwise.
#[inline]
pub fn span_start(sink: &dyn SpanSink) -> Option<MonotonicNs> {
    if sink.enabled() {
        Some(MonotonicNs::now())
    } else {
        None
    }
}

/// Closes a span opened with [`span_start`].
#[inline]
pub fn span_end(sink: &mut dyn SpanSink, kind: KernelKind, start: Option<MonotonicNs>) {
    if let Some(start) = start {
        sink.record(kind, start, MonotonicNs::now());
    }
}

/// One recorded kernel execution.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KernelSpan {
    /// What ran.
    pub kind: KernelKind,
    /// Start, CLOCK_MONOTONIC ns.
    pub start: MonotonicNs,
    /// End, CLOCK_MONOTONIC ns.
    pub end: MonotonicNs,
}

/// Receives full span buffers from a [`SpanRecorder`].
pub trait SpanUploader {
    /// Takes a batch of spans recorded by thread `tid` of process `pid`.
    /// Errors are the uploader's to log; recording goes on regardless.
    fn upload(&mut self, pid: u32, tid: u32, spans: &[KernelSpan]);
}

/// Count and total time of one kernel kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct KernelTime {
    /// The kind.
    pub kind: KernelKind,
    /// Number of executions.
    pub count: u64,
    /// Sum of their durations, ns.
    pub total_ns: u64,
}

/// Buffers spans in a pre-allocated vector and keeps per-kind totals.
///
/// Invariant: `record` never allocates; when the buffer is full it is handed
/// to the uploader (or dropped, totals kept, when there is none) and reused.
pub struct SpanRecorder {
    buffer: Vec<KernelSpan>,
    totals: Vec<(u64, u64)>,
    uploader: Option<Box<dyn SpanUploader>>,
    pid: u32,
    tid: u32,
    recorded: u64,
}

/// Default buffer size: a few epochs of a small model on adult, 1.5 MiB.
pub const DEFAULT_SPAN_CAPACITY: usize = 65_536;

impl SpanRecorder {
    /// A recorder holding up to `capacity` spans between flushes, recording
    /// for the calling thread.
    pub fn new(capacity: usize, uploader: Option<Box<dyn SpanUploader>>) -> SpanRecorder {
        SpanRecorder {
            buffer: Vec::with_capacity(capacity.max(1)),
            totals: vec![(0, 0); KernelKind::ALL.len()],
            uploader,
            pid: std::process::id(),
            tid: nix::unistd::gettid().as_raw() as u32,
            recorded: 0,
        }
    }

    /// Per-kind counts and times since creation (kinds never seen omitted),
    /// largest total first.
    pub fn kernel_times(&self) -> Vec<KernelTime> {
        let mut out: Vec<KernelTime> = KernelKind::ALL
            .iter()
            .zip(&self.totals)
            .filter(|(_, (count, _))| *count > 0)
            .map(|(&kind, &(count, total_ns))| KernelTime {
                kind,
                count,
                total_ns,
            })
            .collect();
        out.sort_by_key(|k| std::cmp::Reverse(k.total_ns));
        out
    }

    /// Spans recorded since creation.
    pub fn recorded(&self) -> u64 {
        self.recorded
    }

    /// Spans currently buffered (not yet flushed).
    pub fn buffered(&self) -> &[KernelSpan] {
        &self.buffer
    }

    /// Whether spans are handed to an uploader.
    pub fn has_uploader(&self) -> bool {
        self.uploader.is_some()
    }

    fn drain(&mut self) {
        if let Some(up) = self.uploader.as_mut() {
            up.upload(self.pid, self.tid, &self.buffer);
        }
        self.buffer.clear();
    }
}

impl SpanSink for SpanRecorder {
    fn enabled(&self) -> bool {
        true
    }

    #[inline]
    fn record(&mut self, kind: KernelKind, start: MonotonicNs, end: MonotonicNs) {
        if self.buffer.len() == self.buffer.capacity() {
            self.drain();
        }
        self.buffer.push(KernelSpan { kind, start, end });
        let t = &mut self.totals[kind.as_index()];
        t.0 += 1;
        t.1 += end.saturating_sub(start);
        self.recorded += 1;
    }

    fn flush(&mut self) {
        if !self.buffer.is_empty() {
            self.drain();
        }
    }
}

/// Measures what recording one span costs on this machine: two clock reads
/// plus the buffer append, in ns, averaged over `iters` spans.
pub fn measure_record_cost_ns(iters: u32) -> f64 {
    let mut rec = SpanRecorder::new(iters as usize + 1, None);
    let t0 = MonotonicNs::now();
    for _ in 0..iters {
        let s = span_start(&rec);
        span_end(&mut rec, KernelKind::ReluFwd, s);
    }
    let t1 = MonotonicNs::now();
    t1.saturating_sub(t0) as f64 / f64::from(iters.max(1))
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Collect(std::rc::Rc<std::cell::RefCell<Vec<KernelSpan>>>);
    impl SpanUploader for Collect {
        fn upload(&mut self, _: u32, _: u32, spans: &[KernelSpan]) {
            self.0.borrow_mut().extend_from_slice(spans);
        }
    }

    #[test]
    fn recorder_flushes_when_full_and_keeps_totals() {
        let got = std::rc::Rc::new(std::cell::RefCell::new(Vec::new()));
        let mut rec = SpanRecorder::new(4, Some(Box::new(Collect(got.clone()))));
        for i in 0..10u64 {
            rec.record(
                KernelKind::LinearFwd,
                MonotonicNs(i * 10),
                MonotonicNs(i * 10 + 3),
            );
        }
        assert_eq!(got.borrow().len(), 8);
        assert_eq!(rec.buffered().len(), 2);
        rec.flush();
        assert_eq!(got.borrow().len(), 10);
        let times = rec.kernel_times();
        assert_eq!(times.len(), 1);
        assert_eq!(times[0].count, 10);
        assert_eq!(times[0].total_ns, 30);
    }
}
