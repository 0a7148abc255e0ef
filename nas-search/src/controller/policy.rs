//! The factorized categorical policy: one softmax over logits per decision,
//! a child's probability the product of its choices' probabilities.
//!
//! Gradients are in closed form. For decision `i` with probabilities
//! `π_i = softmax(θ_i)`, `∂ log π_i[y_i] / ∂ θ_ij = 1[y_i = j] − π_ij`, so
//! for a set `S` of children (a multiset: TabNAS's Monte-Carlo estimate
//! counts a child drawn twice twice) and `P̂ = Σ_{z∈S} p(z)`,
//!
//! `∂ log(p(y) / P̂) / ∂ θ_ij = 1[y_i = j] − w_ij`, with
//! `w_ij = Σ_{z∈S, z_i = j} p(z) / P̂`
//!
//! (the `π_ij` terms of numerator and denominator cancel). With `S` the
//! whole feasible set `V`, `P̂` is the exact `P(V)` and the expression is the
//! score of the policy conditioned on feasibility.

use super::ControllerError;
use rand::distributions::{Distribution, WeightedIndex};
use rand::Rng;
use serde::{Deserialize, Serialize};
use std::cmp::Ordering;
use std::collections::BinaryHeap;

/// A child architecture: the index of the chosen option of every decision,
/// in the order of the decisions.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Child(pub Vec<usize>);

/// Logits of a factorized categorical distribution, one row per decision.
///
/// Invariant: at least one decision, every row has at least one logit, and
/// every logit is finite.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FactorizedPolicy {
    logits: Vec<Vec<f64>>,
}

impl FactorizedPolicy {
    /// The uniform policy (all logits 0, as the TabNAS notebook starts)
    /// over decisions with `choice_counts[i]` options each.
    pub fn uniform(choice_counts: &[usize]) -> Result<FactorizedPolicy, ControllerError> {
        FactorizedPolicy::from_logits(choice_counts.iter().map(|&n| vec![0.0; n]).collect())
    }

    /// A policy with these logits (checked: see the type's invariant).
    pub fn from_logits(logits: Vec<Vec<f64>>) -> Result<FactorizedPolicy, ControllerError> {
        if logits.is_empty() {
            return Err(ControllerError::Setting {
                field: "decisions",
                message: "a policy needs at least one decision".into(),
            });
        }
        for (i, row) in logits.iter().enumerate() {
            if row.is_empty() {
                return Err(ControllerError::Setting {
                    field: "decisions",
                    message: format!("decision {i} has no choice"),
                });
            }
            if let Some(x) = row.iter().find(|x| !x.is_finite()) {
                return Err(ControllerError::Setting {
                    field: "logits",
                    message: format!("decision {i} has a non-finite logit {x}"),
                });
            }
        }
        Ok(FactorizedPolicy { logits })
    }

    /// The logits, one row per decision.
    pub fn logits(&self) -> &[Vec<f64>] {
        &self.logits
    }

    /// Number of options of every decision.
    pub fn choice_counts(&self) -> Vec<usize> {
        self.logits.iter().map(Vec::len).collect()
    }

    /// The probabilities of every decision's options (softmax per row,
    /// shifted by the row's maximum so large logits cannot overflow).
    pub fn probabilities(&self) -> Vec<Vec<f64>> {
        self.logits.iter().map(|row| softmax(row)).collect()
    }

    /// Draws one child, decision by decision.
    pub fn sample(&self, rng: &mut impl Rng) -> Child {
        Child(
            self.probabilities()
                .iter()
                .map(|p| sample_index(p, rng))
                .collect(),
        )
    }

    /// Checks that `child` names one valid option per decision.
    pub fn check_child(&self, child: &Child) -> Result<(), ControllerError> {
        if child.0.len() != self.logits.len() {
            return Err(ControllerError::ChildShape {
                message: format!(
                    "child has {} choices, the policy {} decisions",
                    child.0.len(),
                    self.logits.len()
                ),
            });
        }
        for (i, (&c, row)) in child.0.iter().zip(&self.logits).enumerate() {
            if c >= row.len() {
                return Err(ControllerError::ChildShape {
                    message: format!(
                        "decision {i}: choice {c} out of range (it has {} options)",
                        row.len()
                    ),
                });
            }
        }
        Ok(())
    }

    /// `p(child)`, the product of its choices' probabilities.
    pub fn prob(&self, child: &Child) -> f64 {
        prob_with(&self.probabilities(), child)
    }

    /// `log p(child)`.
    pub fn log_prob(&self, child: &Child) -> f64 {
        self.logits
            .iter()
            .zip(&child.0)
            .map(|(row, &c)| row[c] - log_sum_exp(row))
            .sum()
    }

    /// `∇_θ log p(child)`: `1[y_i = j] − π_ij`, one row per decision.
    pub fn grad_log_prob(&self, child: &Child) -> Vec<Vec<f64>> {
        let mut grad = self.probabilities();
        for (row, &c) in grad.iter_mut().zip(&child.0) {
            for g in row.iter_mut() {
                *g = -*g;
            }
            row[c] += 1.0;
        }
        grad
    }

    /// `P̂ = Σ_{z∈set} p(z)` over a multiset of children (duplicates count
    /// as often as they appear, as in TabNAS's Monte-Carlo estimate).
    pub fn set_prob(&self, set: &[Child]) -> f64 {
        let probs = self.probabilities();
        set.iter().map(|z| prob_with(&probs, z)).sum()
    }

    /// `∇_θ log(p(child) / Σ_{z∈set} p(z))` in closed form (module doc):
    /// `1[y_i = j] − w_ij`. `None` when the set's probability is 0 (an empty
    /// set), where the expression is undefined.
    pub fn grad_log_conditional(&self, child: &Child, set: &[Child]) -> Option<Vec<Vec<f64>>> {
        let probs = self.probabilities();
        let mut weights: Vec<Vec<f64>> = probs.iter().map(|row| vec![0.0; row.len()]).collect();
        let mut total = 0.0;
        for z in set {
            let pz = prob_with(&probs, z);
            total += pz;
            for (row, &c) in weights.iter_mut().zip(&z.0) {
                row[c] += pz;
            }
        }
        if total <= 0.0 {
            return None;
        }
        for (row, &c) in weights.iter_mut().zip(&child.0) {
            for w in row.iter_mut() {
                *w = -*w / total;
            }
            row[c] += 1.0;
        }
        Some(weights)
    }

    /// The most probable child: the argmax of every decision (the first
    /// option on ties).
    pub fn argmax(&self) -> Child {
        Child(self.logits.iter().map(|row| argmax_index(row)).collect())
    }

    /// The most probable child that `feasible` accepts, examining children
    /// in order of decreasing probability (best-first over the product of
    /// the per-decision orders) and at most `limit` of them. `Ok(None)` when
    /// none of the first `limit` is feasible; the number examined is
    /// returned with the child.
    pub fn argmax_where<E>(
        &self,
        limit: usize,
        mut feasible: impl FnMut(&Child) -> Result<bool, E>,
    ) -> Result<Option<(Child, usize)>, E> {
        // Each decision's options sorted by decreasing log-probability; a
        // node of the search is a vector of ranks into these orders.
        let orders: Vec<Vec<(usize, f64)>> = self
            .logits
            .iter()
            .map(|row| {
                let lse = log_sum_exp(row);
                let mut o: Vec<(usize, f64)> =
                    row.iter().enumerate().map(|(j, &x)| (j, x - lse)).collect();
                o.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
                o
            })
            .collect();
        let score = |ranks: &[usize]| -> f64 {
            ranks.iter().zip(&orders).map(|(&r, o)| o[r].1).sum::<f64>()
        };
        let mut heap = BinaryHeap::new();
        let start = vec![0usize; orders.len()];
        heap.push(Node {
            score: score(&start),
            ranks: start,
        });
        let mut examined = 0;
        while let Some(Node { ranks, .. }) = heap.pop() {
            if examined >= limit {
                return Ok(None);
            }
            examined += 1;
            let child = Child(ranks.iter().zip(&orders).map(|(&r, o)| o[r].0).collect());
            if feasible(&child)? {
                return Ok(Some((child, examined)));
            }
            // Successors that step one decision at or after the last one
            // stepped from the start: every rank vector is reached from
            // exactly one parent, so nothing is pushed twice.
            let last = ranks.iter().rposition(|&r| r > 0).unwrap_or(0);
            for i in last..ranks.len() {
                if ranks[i] + 1 < orders[i].len() {
                    let mut next = ranks.clone();
                    next[i] += 1;
                    heap.push(Node {
                        score: score(&next),
                        ranks: next,
                    });
                }
            }
        }
        Ok(None)
    }

    /// Adds `delta` to the logits (an optimizer's step).
    pub(crate) fn apply(&mut self, delta: &[f64]) {
        for (x, d) in self.logits.iter_mut().flatten().zip(delta) {
            *x += d;
        }
    }
}

/// A node of the best-first search, ordered by score (then by ranks, so the
/// order is total and the search deterministic).
struct Node {
    score: f64,
    ranks: Vec<usize>,
}

impl PartialEq for Node {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}
impl Eq for Node {}
impl PartialOrd for Node {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Node {
    fn cmp(&self, other: &Self) -> Ordering {
        // Higher score first; among equals the smaller ranks first.
        self.score
            .total_cmp(&other.score)
            .then_with(|| other.ranks.cmp(&self.ranks))
    }
}

fn log_sum_exp(row: &[f64]) -> f64 {
    let max = row.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    max + row.iter().map(|x| (x - max).exp()).sum::<f64>().ln()
}

fn softmax(row: &[f64]) -> Vec<f64> {
    let max = row.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let exps: Vec<f64> = row.iter().map(|x| (x - max).exp()).collect();
    let sum: f64 = exps.iter().sum();
    exps.into_iter().map(|e| e / sum).collect()
}

fn prob_with(probs: &[Vec<f64>], child: &Child) -> f64 {
    probs.iter().zip(&child.0).map(|(row, &c)| row[c]).product()
}

fn argmax_index(row: &[f64]) -> usize {
    let mut best = 0;
    for (j, x) in row.iter().enumerate() {
        if *x > row[best] {
            best = j;
        }
    }
    best
}

fn sample_index(probs: &[f64], rng: &mut impl Rng) -> usize {
    // Softmax rows are positive or underflowed to 0 and sum to 1, so the
    // weighted index exists; the fallback is the argmax, never reached.
    match WeightedIndex::new(probs) {
        Ok(dist) => dist.sample(rng),
        Err(_) => argmax_index(probs),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn all_children(counts: &[usize]) -> Vec<Child> {
        let mut out = vec![Vec::new()];
        for &n in counts {
            out = out
                .into_iter()
                .flat_map(|prefix: Vec<usize>| {
                    (0..n).map(move |j| {
                        let mut c = prefix.clone();
                        c.push(j);
                        c
                    })
                })
                .collect();
        }
        out.into_iter().map(Child).collect()
    }

    #[test]
    fn probabilities_sum_to_one_and_match_log_prob() {
        let p = FactorizedPolicy::from_logits(vec![vec![0.3, -1.0, 2.0], vec![5.0, 1.0]]).unwrap();
        let total: f64 = all_children(&[3, 2]).iter().map(|c| p.prob(c)).sum();
        assert!((total - 1.0).abs() < 1e-12);
        let c = Child(vec![2, 1]);
        assert!((p.prob(&c).ln() - p.log_prob(&c)).abs() < 1e-12);
        // Hand-computed: softmax([0.3,-1,2])[2] * softmax([5,1])[1].
        let a = 2f64.exp() / (0.3f64.exp() + (-1f64).exp() + 2f64.exp());
        let b = 1f64.exp() / (5f64.exp() + 1f64.exp());
        assert!((p.prob(&c) - a * b).abs() < 1e-12);
    }

    #[test]
    fn grad_log_conditional_matches_central_differences_of_its_expression() {
        let logits = vec![vec![0.2, -0.4, 0.9], vec![-0.3, 0.5, 0.1]];
        let p = FactorizedPolicy::from_logits(logits.clone()).unwrap();
        let y = Child(vec![1, 2]);
        let set = vec![Child(vec![1, 2]), Child(vec![0, 0]), Child(vec![0, 0])];
        let grad = p.grad_log_conditional(&y, &set).unwrap();
        let f = |l: &Vec<Vec<f64>>| {
            let q = FactorizedPolicy::from_logits(l.clone()).unwrap();
            q.log_prob(&y) - q.set_prob(&set).ln()
        };
        let h = 1e-5;
        for i in 0..2 {
            for j in 0..3 {
                let mut up = logits.clone();
                up[i][j] += h;
                let mut down = logits.clone();
                down[i][j] -= h;
                let fd = (f(&up) - f(&down)) / (2.0 * h);
                assert!(
                    (fd - grad[i][j]).abs() < 1e-8,
                    "({i},{j}): {fd} vs {}",
                    grad[i][j]
                );
            }
        }
        // With the singleton set {y} the ratio is 1 and the gradient 0.
        let zero = p
            .grad_log_conditional(&y, std::slice::from_ref(&y))
            .unwrap();
        assert!(zero.iter().flatten().all(|g| g.abs() < 1e-15));
        assert!(p.grad_log_conditional(&y, &[]).is_none());
    }

    #[test]
    fn argmax_where_is_the_best_feasible_child_by_enumeration() {
        let p = FactorizedPolicy::from_logits(vec![
            vec![0.1, 1.2, -0.5, 0.7],
            vec![0.0, 0.3, 0.2],
            vec![2.0, -1.0],
        ])
        .unwrap();
        let children = all_children(&[4, 3, 2]);
        // Every feasibility rule "sum of choices <= k" for k = 0..=6.
        for k in 0..=6usize {
            let feasible = |c: &Child| c.0.iter().sum::<usize>() <= k;
            let expected = children
                .iter()
                .filter(|c| feasible(c))
                .max_by(|a, b| p.prob(a).total_cmp(&p.prob(b)))
                .cloned();
            let got = p
                .argmax_where(1000, |c| Ok::<_, ()>(feasible(c)))
                .unwrap()
                .map(|(c, _)| c);
            assert_eq!(got, expected, "k = {k}");
        }
        // Nothing feasible: every child examined once, then None.
        let mut seen = Vec::new();
        let none = p
            .argmax_where(1000, |c| {
                seen.push(c.clone());
                Ok::<_, ()>(false)
            })
            .unwrap();
        assert!(none.is_none());
        // Examined by decreasing probability, each child exactly once.
        for pair in seen.windows(2) {
            assert!(p.prob(&pair[0]) >= p.prob(&pair[1]) - 1e-15);
        }
        seen.sort();
        assert_eq!(seen, children);
        assert_eq!(p.argmax(), Child(vec![1, 1, 0]));
    }
}
