//! A fixed-capacity ring of timestamped values, searchable by time. Backs
//! the energy history and the CPU-activity history: memory is bounded by
//! the capacity chosen at creation, and the oldest entry is overwritten
//! when it is full.
//!
//! Invariant: timestamps are pushed in non-decreasing order, so the logical
//! sequence (oldest to newest) is sorted and binary search applies.

/// Fixed-capacity, time-ordered ring buffer.
#[derive(Debug, Clone)]
pub struct TimeRing<T> {
    /// Storage; grows up to `capacity`, then is overwritten in place.
    entries: Vec<(u64, T)>,
    capacity: usize,
    /// Physical index of the oldest entry once `entries` is full.
    head: usize,
}

impl<T: Copy> TimeRing<T> {
    /// An empty ring holding at most `capacity` entries (at least 2).
    pub fn new(capacity: usize) -> Self {
        let capacity = capacity.max(2);
        Self {
            // Grow on demand: a source that fails early never costs its full window.
            entries: Vec::with_capacity(capacity.min(4096)),
            capacity,
            head: 0,
        }
    }

    /// Entries held.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether no entry is held.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Maximum entries held.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Appends an entry, dropping the oldest if full. A timestamp earlier
    /// than the newest one is raised to it, keeping the ring sorted.
    pub fn push(&mut self, t_ns: u64, value: T) {
        let t_ns = match self.last() {
            Some((last_t, _)) if t_ns < last_t => last_t,
            _ => t_ns,
        };
        if self.entries.len() < self.capacity {
            self.entries.push((t_ns, value));
        } else {
            self.entries[self.head] = (t_ns, value);
            self.head = (self.head + 1) % self.capacity;
        }
    }

    /// The `i`-th entry from the oldest.
    pub fn get(&self, i: usize) -> Option<(u64, T)> {
        if i >= self.entries.len() {
            return None;
        }
        let physical = if self.entries.len() < self.capacity {
            i
        } else {
            (self.head + i) % self.capacity
        };
        Some(self.entries[physical])
    }

    /// The oldest entry.
    pub fn first(&self) -> Option<(u64, T)> {
        self.get(0)
    }

    /// The newest entry.
    pub fn last(&self) -> Option<(u64, T)> {
        self.entries.len().checked_sub(1).and_then(|i| self.get(i))
    }

    /// Number of entries with timestamp `<= t_ns` (so the entry at or just
    /// before `t_ns` is `partition(t_ns) - 1`).
    pub fn partition(&self, t_ns: u64) -> usize {
        let (mut lo, mut hi) = (0usize, self.entries.len());
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            match self.get(mid) {
                Some((t, _)) if t <= t_ns => lo = mid + 1,
                _ => hi = mid,
            }
        }
        lo
    }

    /// Entries in `[from, to]` plus the one just before `from` and the one
    /// just after `to`, when present.
    pub fn range_with_neighbours(&self, from_ns: u64, to_ns: u64) -> Vec<(u64, T)> {
        if self.entries.is_empty() || to_ns < from_ns {
            return Vec::new();
        }
        // First index with t >= from, minus one for the neighbour before.
        let start = self.partition(from_ns.saturating_sub(1)).saturating_sub(1);
        let start = if from_ns == 0 { 0 } else { start };
        // One past the last index with t <= to, plus one for the neighbour after.
        let end = (self.partition(to_ns) + 1).min(self.entries.len());
        (start..end).filter_map(|i| self.get(i)).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overwrites_oldest_and_stays_sorted() {
        let mut r = TimeRing::new(3);
        for t in 1..=5u64 {
            r.push(t * 10, t);
        }
        assert_eq!(r.len(), 3);
        assert_eq!(r.first(), Some((30, 3)));
        assert_eq!(r.last(), Some((50, 5)));
        assert_eq!(r.partition(29), 0);
        assert_eq!(r.partition(30), 1);
        assert_eq!(r.partition(45), 2);
        assert_eq!(r.partition(99), 3);
    }

    #[test]
    fn range_includes_neighbours() {
        let mut r = TimeRing::new(100);
        for t in 0..10u64 {
            r.push(t * 10, t);
        }
        let got: Vec<u64> = r
            .range_with_neighbours(25, 45)
            .iter()
            .map(|e| e.0)
            .collect();
        assert_eq!(got, vec![20, 30, 40, 50]);
        let exact: Vec<u64> = r
            .range_with_neighbours(30, 40)
            .iter()
            .map(|e| e.0)
            .collect();
        assert_eq!(exact, vec![20, 30, 40, 50]);
        assert!(r.range_with_neighbours(50, 40).is_empty());
    }

    #[test]
    fn out_of_order_timestamp_is_clamped() {
        let mut r = TimeRing::new(4);
        r.push(10, 1);
        r.push(5, 2);
        assert_eq!(r.last(), Some((10, 2)));
    }
}
