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
    /// uid charged for these spans (the tracked process's owner).
    owner_uid: u32,
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
    /// The owner's span budget, or the daemon's, is spent.
    OverBudget,
}

/// How many spans the store keeps, per process, per uid and in all.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SpanLimits {
    /// Per process; the oldest are dropped (and counted) past it.
    pub per_process: usize,
    /// Per owner uid over all its processes; further spans are refused.
    pub per_uid: usize,
    /// Over every uid; further spans are refused.
    pub total: usize,
}

impl SpanLimits {
    /// Only the per-process bound (tests and tools).
    pub fn per_process(per_process: usize) -> SpanLimits {
        SpanLimits {
            per_process,
            per_uid: usize::MAX,
            total: usize::MAX,
        }
    }
}

#[derive(Debug, Default)]
struct Stored {
    /// By tracking record key (a process instance; see `service`).
    by_pid: HashMap<u64, ProcessSpans>,
    per_uid: HashMap<u32, usize>,
    total: usize,
}

impl Stored {
    fn forget(&mut self, owner: u32, n: usize) {
        self.total -= n;
        if let Some(c) = self.per_uid.get_mut(&owner) {
            *c -= n;
            if *c == 0 {
                self.per_uid.remove(&owner);
            }
        }
    }
}

/// All stored spans.
#[derive(Debug)]
pub struct SpanStore {
    limits: SpanLimits,
    stored: Mutex<Stored>,
}

/// A VecDeque (or map) keeps its peak capacity after draining; past this
/// slack it is shrunk, so memory is returned once spans expire.
const SHRINK_SLACK: usize = 4_096;

impl SpanStore {
    /// A store keeping at most `max_per_process` spans per process.
    pub fn new(max_per_process: usize) -> SpanStore {
        SpanStore::with_limits(SpanLimits::per_process(max_per_process))
    }

    /// A store with every bound.
    pub fn with_limits(limits: SpanLimits) -> SpanStore {
        SpanStore {
            limits: SpanLimits {
                per_process: limits.per_process.max(1),
                ..limits
            },
            stored: Mutex::new(Stored::default()),
        }
    }

    /// Stores the spans of `batch` whose process `owner_of(pid)` says the
    /// caller may report for (`Some((record key, owner uid))`: stored
    /// under the key, charged to the owner) and that ended by `now`.
    /// Returns (accepted, rejected).
    pub fn insert(
        &self,
        batch: &SpanBatch,
        now: MonotonicNs,
        mut owner_of: impl FnMut(u32) -> Option<(u64, u32)>,
    ) -> (u32, u32) {
        let mut accepted = 0u32;
        let mut rejected = 0u32;
        let mut verdicts: HashMap<u32, Option<(u64, u32)>> = HashMap::new();
        let mut stored = self.stored.lock().unwrap_or_else(|p| p.into_inner());
        for span in &batch.spans {
            let owner = *verdicts
                .entry(span.pid)
                .or_insert_with(|| owner_of(span.pid));
            let result = match owner {
                Some((key, owner)) => self.insert_one(&mut stored, key, owner, batch, span, now),
                None => Err(SpanRejection::NotPermitted),
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
        stored: &mut Stored,
        key: u64,
        owner: u32,
        batch: &SpanBatch,
        span: &SpanRecord,
        now: MonotonicNs,
    ) -> Result<(), SpanRejection> {
        let full = stored
            .by_pid
            .get(&key)
            .is_some_and(|p| p.spans.len() >= self.limits.per_process);
        // A full process replaces its oldest span: no budget needed.
        if !full
            && (stored.total >= self.limits.total
                || stored.per_uid.get(&owner).copied().unwrap_or(0) >= self.limits.per_uid)
        {
            return Err(SpanRejection::OverBudget);
        }
        let proc_spans = stored.by_pid.entry(key).or_insert_with(|| ProcessSpans {
            owner_uid: owner,
            ..ProcessSpans::default()
        });
        let added = Self::push(proc_spans, self.limits.per_process, batch, span, now)?;
        if added {
            stored.total += 1;
            *stored.per_uid.entry(owner).or_default() += 1;
        }
        Ok(())
    }

    /// Appends one span; `Ok(true)` when the store grew by one (`false`
    /// when it replaced the process's oldest).
    fn push(
        proc_spans: &mut ProcessSpans,
        per_process: usize,
        batch: &SpanBatch,
        span: &SpanRecord,
        now: MonotonicNs,
    ) -> Result<bool, SpanRejection> {
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
        let mut grew = true;
        if proc_spans.spans.len() >= per_process {
            proc_spans.spans.pop_front();
            proc_spans.dropped += 1;
            grew = false;
        }
        proc_spans.spans.push_back(StoredSpan {
            name: id,
            start: span.start,
            end: span.end,
            tid: span.tid,
        });
        Ok(grew)
    }

    /// Spans of `pid` that a breakdown over `[from, to]` would consider
    /// (what it costs; see `policy.breakdown_spans_per_token`).
    pub fn count_in(&self, key: u64, from: MonotonicNs, to: MonotonicNs) -> usize {
        let stored = self.stored.lock().unwrap_or_else(|p| p.into_inner());
        stored.by_pid.get(&key).map_or(0, |p| {
            p.spans
                .iter()
                .filter(|s| s.end >= from && s.start <= to)
                .count()
        })
    }

    /// Spans held for `uid`'s processes, and in all.
    pub fn held(&self, uid: u32) -> (usize, usize) {
        let stored = self.stored.lock().unwrap_or_else(|p| p.into_inner());
        (stored.per_uid.get(&uid).copied().unwrap_or(0), stored.total)
    }

    /// Heap the stored spans take, from the containers' capacities (not
    /// their lengths: what the allocator holds for us).
    pub fn heap_bytes(&self) -> usize {
        let stored = self.stored.lock().unwrap_or_else(|p| p.into_inner());
        stored
            .by_pid
            .values()
            .map(|p| {
                p.spans.capacity() * std::mem::size_of::<StoredSpan>()
                    + p.names.iter().map(|n| 2 * n.capacity() + 48).sum::<usize>()
            })
            .sum()
    }

    /// Spans of record `key` overlapping `[from, to]`.
    pub fn slice(&self, key: u64, from: MonotonicNs, to: MonotonicNs) -> SpanSlice {
        let stored = self.stored.lock().unwrap_or_else(|p| p.into_inner());
        match stored.by_pid.get(&key) {
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

    /// Forgets the spans of record `key`.
    pub fn remove(&self, key: u64) {
        let mut stored = self.stored.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(p) = stored.by_pid.remove(&key) {
            stored.forget(p.owner_uid, p.spans.len());
        }
        if stored.by_pid.capacity() > 2 * stored.by_pid.len() + 64 {
            stored.by_pid.shrink_to_fit();
        }
    }

    /// Drops spans that ended before `cutoff` (older than the history),
    /// and returns the memory they held to the allocator: a drained
    /// VecDeque keeps its peak capacity otherwise (1.4 GiB stayed resident
    /// after an attack's spans expired).
    pub fn expire_before(&self, cutoff: MonotonicNs) {
        let mut stored = self.stored.lock().unwrap_or_else(|p| p.into_inner());
        let mut forgotten: Vec<(u32, usize)> = Vec::new();
        for p in stored.by_pid.values_mut() {
            let before = p.spans.len();
            while p.spans.front().is_some_and(|s| s.end < cutoff) {
                p.spans.pop_front();
            }
            if p.spans.len() < before {
                forgotten.push((p.owner_uid, before - p.spans.len()));
            }
            if p.spans.capacity() > 2 * p.spans.len() + SHRINK_SLACK {
                p.spans.shrink_to_fit();
            }
        }
        for (owner, n) in forgotten {
            stored.forget(owner, n);
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
        let (acc, rej) = store.insert(&batch(), NOW, |pid| (pid == 1).then_some((1, 7)));
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
        assert_eq!(
            store.insert(&b, NOW, |pid| Some((u64::from(pid), 7))),
            (0, 3)
        );
    }

    #[test]
    fn spans_ending_after_now_are_refused() {
        let store = SpanStore::new(100);
        let mut b = SpanBatch::default();
        b.push("ok", MonotonicNs(10), NOW, 1, 1);
        b.push("late", MonotonicNs(10), MonotonicNs(NOW.0 + 1), 1, 1);
        b.push("clock_end", MonotonicNs(0), MonotonicNs(u64::MAX), 1, 1);
        assert_eq!(
            store.insert(&b, NOW, |pid| Some((u64::from(pid), 7))),
            (1, 2)
        );
        assert_eq!(
            store
                .slice(1, MonotonicNs(0), MonotonicNs(u64::MAX))
                .spans
                .len(),
            1
        );
    }

    #[test]
    fn budgets_per_uid_and_in_all_refuse_further_spans() {
        let store = SpanStore::with_limits(SpanLimits {
            per_process: 100,
            per_uid: 3,
            total: 5,
        });
        let mut b = SpanBatch::default();
        for pid in 1..=4 {
            b.push("k", MonotonicNs(1), MonotonicNs(2), pid, 1);
        }
        // uid 7 owns pids 1-4: three spans fit its budget.
        assert_eq!(
            store.insert(&b, NOW, |pid| Some((u64::from(pid), 7))),
            (3, 1)
        );
        assert_eq!(store.held(7), (3, 3));
        // uid 8: the total (5) leaves it two.
        let (acc, rej) = store.insert(&b, NOW, |pid| Some((u64::from(pid) + 10, 8)));
        assert_eq!((acc, rej), (2, 2));
        // Removing a process returns its spans to the budgets.
        store.remove(1);
        assert_eq!(store.held(7), (2, 4));
    }

    #[test]
    fn memory_is_returned_after_expiry() {
        let store = SpanStore::new(1_000_000);
        let mut b = SpanBatch::default();
        for i in 0..200_000u64 {
            b.push("k", MonotonicNs(i), MonotonicNs(i + 1), 1, 1);
        }
        store.insert(&b, MonotonicNs(1_000_000), |_| Some((1, 7)));
        let full = store.heap_bytes();
        assert!(full >= 200_000 * std::mem::size_of::<StoredSpan>());
        store.expire_before(MonotonicNs(500_000));
        assert!(
            store.heap_bytes() < full / 10,
            "{} bytes kept of {full} after every span expired",
            store.heap_bytes()
        );
        assert_eq!(store.held(7), (0, 0));
    }

    #[test]
    fn oldest_spans_are_dropped_at_capacity() {
        let store = SpanStore::new(2);
        store.insert(&batch(), NOW, |pid| Some((u64::from(pid), 7)));
        let mut b = SpanBatch::default();
        b.push("late", MonotonicNs(50), MonotonicNs(60), 1, 1);
        store.insert(&b, NOW, |pid| Some((u64::from(pid), 7)));
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
