//! The queue of light-scored candidates waiting for training, ranked by
//! dominance: each member keeps the count of members dominating it on
//! (light score, max; predicted inference energy, min), updated on push
//! and pop. Heavy work pops the member dominated by the fewest others (the
//! public CE-NAS simulator's lowest-dominance-count queue). Shared by the
//! simulator ([`crate::sim`]) and the live search in nas-client.

/// Members of type `T` (a candidate index, a trial number) with their
/// points. Ties of the dominance count go to the higher light score, then
/// to the smaller `T`, so the order is deterministic.
#[derive(Debug, Clone)]
pub struct DominanceQueue<T> {
    members: Vec<T>,
    counts: Vec<usize>,
    /// Minimisation points: (−score, predicted energy).
    points: Vec<[f64; 2]>,
}

impl<T> Default for DominanceQueue<T> {
    fn default() -> Self {
        DominanceQueue {
            members: Vec::new(),
            counts: Vec::new(),
            points: Vec::new(),
        }
    }
}

fn dominates(a: &[f64; 2], b: &[f64; 2]) -> bool {
    nas_search::objective::dominates(a, b)
}

impl<T: Ord> DominanceQueue<T> {
    /// An empty queue.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds `member` with its light `score` (higher is better) and
    /// predicted inference `energy` (lower is better).
    pub fn push(&mut self, member: T, score: f64, energy: f64) {
        let p = [-score, energy];
        let mut own = 0;
        for (i, q) in self.points.iter().enumerate() {
            if dominates(&p, q) {
                self.counts[i] += 1;
            }
            if dominates(q, &p) {
                own += 1;
            }
        }
        self.members.push(member);
        self.counts.push(own);
        self.points.push(p);
    }

    /// Removes and returns the member dominated by the fewest others.
    pub fn pop(&mut self) -> Option<T> {
        let best = (0..self.members.len()).min_by(|&i, &j| {
            self.counts[i]
                .cmp(&self.counts[j])
                .then(self.points[i][0].total_cmp(&self.points[j][0]))
                .then(self.members[i].cmp(&self.members[j]))
        })?;
        let member = self.members.swap_remove(best);
        self.counts.swap_remove(best);
        let p = self.points.swap_remove(best);
        for i in 0..self.members.len() {
            if dominates(&p, &self.points[i]) {
                self.counts[i] -= 1;
            }
        }
        Some(member)
    }

    /// Members waiting.
    pub fn len(&self) -> usize {
        self.members.len()
    }

    /// Whether nothing waits.
    pub fn is_empty(&self) -> bool {
        self.members.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Pops in the order of a slow recount of dominators among those left.
    #[test]
    fn pops_the_least_dominated_first_as_a_recount_says() {
        let pts: Vec<(f64, f64)> = vec![
            (0.5, 3.0),
            (0.9, 1.0),
            (0.2, 0.5),
            (0.9, 2.0),
            (0.1, 4.0),
            (0.7, 0.7),
            (0.7, 0.7),
        ];
        let mut q = DominanceQueue::new();
        for (i, &(s, e)) in pts.iter().enumerate() {
            q.push(i, s, e);
        }
        let mut left: Vec<usize> = (0..pts.len()).collect();
        while let Some(got) = q.pop() {
            let count = |i: usize| {
                left.iter()
                    .filter(|&&j| {
                        let (a, b) = (pts[j], pts[i]);
                        a.0 >= b.0 && a.1 <= b.1 && (a.0 > b.0 || a.1 < b.1)
                    })
                    .count()
            };
            let want = *left
                .iter()
                .min_by(|&&a, &&b| {
                    count(a)
                        .cmp(&count(b))
                        .then(pts[b].0.total_cmp(&pts[a].0))
                        .then(a.cmp(&b))
                })
                .unwrap();
            assert_eq!(got, want, "left {left:?}");
            left.retain(|&i| i != got);
        }
        assert!(left.is_empty() && q.is_empty());
    }
}
