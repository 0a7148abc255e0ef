//! Kernel spans submitted by clients, kept per process.
//!
//! Spans are stored with their names interned per process, oldest first,
//! and bounded per process (the oldest are dropped, and counted) and in the
//! number of distinct names, so a hostile client cannot grow the daemon
//! without bound.

use shared::protocol::{SpanBatch, SpanRecord};
use shared::MonotonicNs;
use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;

/// Distinct kernel names kept per process; further names are refused.
pub const MAX_NAMES_PER_PROCESS: usize = 4_096;
/// Longest kernel name accepted, in bytes.
pub const MAX_NAME_LEN: usize = 256;

/// One stored span; `name` indexes the process's name table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StoredSpan {
    /// Index into the process's names.
    pub name: u32,
    /// Start.
    pub start: MonotonicNs,
    /// End (`>= start`).
    pub end: MonotonicNs,
    /// Thread.
    pub tid: u32,
}

#[derive(Debug, Default)]
struct ProcessSpans {
    names: Vec<String>,
    ids: HashMap<String, u32>,
    spans: VecDeque<StoredSpan>,
    dropped: u64,
}

/// Spans of one process over an interval, as handed to attribution.
#[derive(Debug, Clone, Default)]
pub struct SpanSlice {
    /// Kernel names.
    pub names: Vec<String>,
    /// Spans overlapping the interval, in submission order.
    pub spans: Vec<StoredSpan>,
    /// Spans dropped for this process since tracking began (store full).
    pub dropped: u64,
}

/// Why a span was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SpanRejection {
    /// `end < start` or a name index out of range.
    Malformed,
    /// The name is too long or the process has too many distinct names.
    NameLimit,
    /// The caller may not report spans for that process.
    NotPermitted,
    /// The span ends after the daemon's clock at submission: clients
    /// report spans once they ended, on the same CLOCK_MONOTONIC, so such
    /// a span is corrupt (or hostile) and would distort every later query.
    InFuture,
}

/// All stored spans.
#[derive(Debug)]
pub struct SpanStore {
    max_per_process: usize,
    by_pid: Mutex<HashMap<u32, ProcessSpans>>,
}

impl SpanStore {
    /// A store keeping at most `max_per_process` spans per process.
    pub fn new(max_per_process: usize) -> SpanStore {
        SpanStore {
            max_per_process: max_per_process.max(1),
            by_pid: Mutex::new(HashMap::new()),
        }
    }

    /// Stores the spans of `batch` for which `permitted(pid)` holds and
    /// that ended by `now`. Returns (accepted, rejected).
    pub fn insert(
        &self,
        batch: &SpanBatch,
        now: MonotonicNs,
        mut permitted: impl FnMut(u32) -> bool,
    ) -> (u32, u32) {
        let mut accepted = 0u32;
        let mut rejected = 0u32;
        let mut verdicts: HashMap<u32, bool> = HashMap::new();
        let mut by_pid = self.by_pid.lock().unwrap_or_else(|p| p.into_inner());
        for span in &batch.spans {
            let ok = *verdicts
                .entry(span.pid)
                .or_insert_with(|| permitted(span.pid));
            let result = if ok {
                self.insert_one(by_pid.entry(span.pid).or_default(), batch, span, now)
            } else {
                Err(SpanRejection::NotPermitted)
            };
            match result {
                Ok(()) => accepted = accepted.saturating_add(1),
                Err(_) => rejected = rejected.saturating_add(1),
            }
        }
        (accepted, rejected)
    }

    fn insert_one(
        &self,
        proc_spans: &mut ProcessSpans,
        batch: &SpanBatch,
        span: &SpanRecord,
        now: MonotonicNs,
    ) -> Result<(), SpanRejection> {
        if span.end < span.start {
            return Err(SpanRejection::Malformed);
        }
        if span.end > now {
            return Err(SpanRejection::InFuture);
        }
        let name = batch.name_of(span).ok_or(SpanRejection::Malformed)?;
        if name.len() > MAX_NAME_LEN {
            return Err(SpanRejection::NameLimit);
        }
        let id = match proc_spans.ids.get(name) {
            Some(id) => *id,
            None => {
                if proc_spans.names.len() >= MAX_NAMES_PER_PROCESS {
                    return Err(SpanRejection::NameLimit);
                }
                let id = proc_spans.names.len() as u32;
                proc_spans.names.push(name.to_owned());
                proc_spans.ids.insert(name.to_owned(), id);
                id
            }
        };
        if proc_spans.spans.len() >= self.max_per_process {
            proc_spans.spans.pop_front();
            proc_spans.dropped += 1;
        }
        proc_spans.spans.push_back(StoredSpan {
            name: id,
            start: span.start,
            end: span.end,
            tid: span.tid,
        });
        Ok(())
    }

    /// Spans of `pid` overlapping `[from, to]`.
    pub fn slice(&self, pid: u32, from: MonotonicNs, to: MonotonicNs) -> SpanSlice {
        let by_pid = self.by_pid.lock().unwrap_or_else(|p| p.into_inner());
        match by_pid.get(&pid) {
            None => SpanSlice::default(),
            Some(p) => SpanSlice {
                names: p.names.clone(),
                spans: p
                    .spans
                    .iter()
                    .filter(|s| s.end >= from && s.start <= to)
                    .copied()
                    .collect(),
                dropped: p.dropped,
            },
        }
    }

    /// Forgets the spans of `pid`.
    pub fn remove(&self, pid: u32) {
        self.by_pid
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&pid);
    }

    /// Drops spans that ended before `cutoff` (older than the history).
    pub fn expire_before(&self, cutoff: MonotonicNs) {
        let mut by_pid = self.by_pid.lock().unwrap_or_else(|p| p.into_inner());
        for p in by_pid.values_mut() {
            while p.spans.front().is_some_and(|s| s.end < cutoff) {
                p.spans.pop_front();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: MonotonicNs = MonotonicNs(1_000);

    fn batch() -> SpanBatch {
        let mut b = SpanBatch::default();
        b.push("gemm", MonotonicNs(10), MonotonicNs(20), 1, 1);
        b.push("relu", MonotonicNs(20), MonotonicNs(22), 1, 1);
        b.push("gemm", MonotonicNs(30), MonotonicNs(40), 2, 5);
        b
    }

    #[test]
    fn stores_permitted_spans_and_refuses_others() {
        let store = SpanStore::new(100);
        let (acc, rej) = store.insert(&batch(), NOW, |pid| pid == 1);
        assert_eq!((acc, rej), (2, 1));
        let s = store.slice(1, MonotonicNs(0), MonotonicNs(100));
        assert_eq!(s.spans.len(), 2);
        assert_eq!(s.names, vec!["gemm".to_string(), "relu".to_string()]);
        assert!(store
            .slice(2, MonotonicNs(0), MonotonicNs(100))
            .spans
            .is_empty());
        assert_eq!(
            store.slice(1, MonotonicNs(21), MonotonicNs(25)).spans.len(),
            1
        );
    }

    #[test]
    fn malformed_spans_are_counted_not_stored() {
        let store = SpanStore::new(100);
        let mut b = SpanBatch::default();
        b.push("x", MonotonicNs(10), MonotonicNs(5), 1, 1);
        b.spans.push(SpanRecord {
            name: 9,
            start: MonotonicNs(1),
            end: MonotonicNs(2),
            pid: 1,
            tid: 1,
        });
        b.push(
            &"y".repeat(MAX_NAME_LEN + 1),
            MonotonicNs(1),
            MonotonicNs(2),
            1,
            1,
        );
        assert_eq!(store.insert(&b, NOW, |_| true), (0, 3));
    }

    #[test]
    fn spans_ending_after_now_are_refused() {
        let store = SpanStore::new(100);
        let mut b = SpanBatch::default();
        b.push("ok", MonotonicNs(10), NOW, 1, 1);
        b.push("late", MonotonicNs(10), MonotonicNs(NOW.0 + 1), 1, 1);
        b.push("clock_end", MonotonicNs(0), MonotonicNs(u64::MAX), 1, 1);
        assert_eq!(store.insert(&b, NOW, |_| true), (1, 2));
        assert_eq!(
            store
                .slice(1, MonotonicNs(0), MonotonicNs(u64::MAX))
                .spans
                .len(),
            1
        );
    }

    #[test]
    fn oldest_spans_are_dropped_at_capacity() {
        let store = SpanStore::new(2);
        store.insert(&batch(), NOW, |_| true);
        let mut b = SpanBatch::default();
        b.push("late", MonotonicNs(50), MonotonicNs(60), 1, 1);
        store.insert(&b, NOW, |_| true);
        let s = store.slice(1, MonotonicNs(0), MonotonicNs(100));
        assert_eq!(s.spans.len(), 2);
        assert_eq!(s.dropped, 1);
        assert_eq!(s.spans[0].start, MonotonicNs(20));
        store.expire_before(MonotonicNs(30));
        assert_eq!(
            store.slice(1, MonotonicNs(0), MonotonicNs(100)).spans.len(),
            1
        );
    }
}
