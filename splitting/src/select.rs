//! Which neurons split.
//!
//! - Plain ([`select_plain`]): pool every neuron's λ_min, threshold at the
//!   `grow_rate` quantile (the reference's `grow_rate = 0.3`), split the
//!   neurons below it whose λ_min is negative.
//! - Energy-aware ([`select_energy_aware`]): the LP relaxation of a
//!   knapsack, `min Σ β_i λ_i` subject to `Σ β_i·cost_i ≤ budget`, per
//!   site `Σ β_i ≤ cap`, `0 ≤ β_i ≤ 1` (good_lp with the pure-Rust microlp
//!   solver); split where `β_i ≥ 0.99`. Only λ < 0 neurons can lower the
//!   objective, so only they enter the program.
//!
//! Both keep at most the site's cap per site (most negative λ first); the
//! reference's cap is `min(current, max − current)`.

use crate::eigen::NeuronEigen;
use crate::SplitError;
use good_lp::{constraint, microlp, variable, variables, Expression, Solution, SolverModel};

/// β at or above which a relaxed knapsack item is taken (reference: 0.99).
pub const BETA_THRESHOLD: f64 = 0.99;

/// The neurons chosen to split.
#[derive(Debug, Clone, PartialEq)]
pub struct Selection {
    /// Indices into the eigenpairs given, most negative λ first.
    pub chosen: Vec<usize>,
    /// Σ cost of the chosen neurons (0 for the plain rule, which has no
    /// costs).
    pub cost: f64,
    /// Predicted loss change per ε²/2: Σ λ of the chosen neurons.
    pub lambda_sum: f64,
}

/// Keeps, per site, the `caps[site]` most negative of `candidates` (indices
/// into `eigs`); sorted by λ.
fn cap_per_site(eigs: &[NeuronEigen], mut candidates: Vec<usize>, caps: &[usize]) -> Vec<usize> {
    candidates.sort_by(|&a, &b| eigs[a].lambda.total_cmp(&eigs[b].lambda));
    let mut taken = vec![0usize; caps.len()];
    candidates.retain(|&i| {
        let site = eigs[i].site;
        let ok = taken.get(site).is_some_and(|&t| t < caps[site]);
        if ok {
            taken[site] += 1;
        }
        ok
    });
    candidates
}

/// The plain rule: λ_min below the `grow_rate` quantile of all λ_min and
/// negative.
pub fn select_plain(eigs: &[NeuronEigen], grow_rate: f64, caps: &[usize]) -> Selection {
    let mut sorted: Vec<f64> = eigs.iter().map(|e| e.lambda).collect();
    sorted.sort_by(f64::total_cmp);
    let chosen = if sorted.is_empty() {
        Vec::new()
    } else {
        let k = ((grow_rate.clamp(0.0, 1.0) * sorted.len() as f64).ceil() as usize)
            .clamp(1, sorted.len());
        let threshold = sorted[k - 1];
        let candidates = (0..eigs.len())
            .filter(|&i| eigs[i].lambda < 0.0 && eigs[i].lambda <= threshold)
            .collect();
        cap_per_site(eigs, candidates, caps)
    };
    let lambda_sum = chosen.iter().map(|&i| eigs[i].lambda).sum();
    Selection {
        chosen,
        cost: 0.0,
        lambda_sum,
    }
}

/// The energy-aware rule: the knapsack LP with `cost_per_site` per neuron
/// and `budget` in the same unit. The result never exceeds the budget.
pub fn select_energy_aware(
    eigs: &[NeuronEigen],
    cost_per_site: &[f64],
    budget: f64,
    caps: &[usize],
) -> Result<Selection, SplitError> {
    let candidates: Vec<usize> = (0..eigs.len())
        .filter(|&i| eigs[i].lambda < 0.0 && eigs[i].site < cost_per_site.len())
        .collect();
    let empty = Selection {
        chosen: Vec::new(),
        cost: 0.0,
        lambda_sum: 0.0,
    };
    if candidates.is_empty() || budget <= 0.0 {
        return Ok(empty);
    }
    let cost = |i: usize| cost_per_site[eigs[i].site];
    let mut vars = variables!();
    let beta: Vec<_> = candidates
        .iter()
        .map(|_| vars.add(variable().min(0.0).max(1.0)))
        .collect();
    let objective: Expression = candidates
        .iter()
        .zip(&beta)
        .map(|(&i, &b)| eigs[i].lambda * b)
        .sum();
    let spent: Expression = candidates
        .iter()
        .zip(&beta)
        .map(|(&i, &b)| cost(i) * b)
        .sum();
    let mut model = vars.minimise(objective).using(microlp);
    model = model.with(constraint!(spent <= budget));
    for (site, &cap) in caps.iter().enumerate() {
        let in_site: Expression = candidates
            .iter()
            .zip(&beta)
            .filter(|(&i, _)| eigs[i].site == site)
            .map(|(_, &b)| Expression::from(b))
            .sum();
        model = model.with(constraint!(in_site <= cap as f64));
    }
    let solution = model.solve().map_err(|e| SplitError::Lp(e.to_string()))?;
    let taken: Vec<usize> = candidates
        .iter()
        .zip(&beta)
        .filter(|(_, &b)| solution.value(b) >= BETA_THRESHOLD)
        .map(|(&i, _)| i)
        .collect();
    let mut chosen = cap_per_site(eigs, taken, caps);
    // β ≥ 0.99 items can overshoot the budget by up to 1%: drop the least
    // λ-per-cost ones until it holds.
    let mut total: f64 = chosen.iter().map(|&i| cost(i)).sum();
    while total > budget {
        let Some((k, _)) = chosen.iter().enumerate().max_by(|a, b| {
            let ra = eigs[*a.1].lambda / cost(*a.1);
            let rb = eigs[*b.1].lambda / cost(*b.1);
            ra.total_cmp(&rb)
        }) else {
            break;
        };
        total -= cost(chosen.remove(k));
    }
    let lambda_sum = chosen.iter().map(|&i| eigs[i].lambda).sum();
    Ok(Selection {
        chosen,
        cost: total,
        lambda_sum,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn eig(site: usize, neuron: usize, lambda: f64) -> NeuronEigen {
        NeuronEigen {
            site,
            neuron,
            lambda,
            direction: vec![1.0],
        }
    }

    /// The LP keeps to its budget, prefers the cheap negative λ over an
    /// equally negative expensive one, never takes λ ≥ 0, and honours the
    /// per-site cap.
    #[test]
    fn energy_aware_selection_respects_budget_and_prefers_cheap_negative_lambda() {
        let eigs = vec![
            eig(0, 0, -1.0), // expensive site
            eig(0, 1, -0.2),
            eig(1, 0, -1.0), // cheap site
            eig(1, 1, -0.9),
            eig(1, 2, -0.8),
            eig(1, 3, 0.5), // positive: never worth it
        ];
        let costs = [10.0, 1.0];
        let caps = [4, 2];
        let sel = select_energy_aware(&eigs, &costs, 3.0, &caps).unwrap();
        assert!(sel.cost <= 3.0, "{sel:?}");
        // Cap 2 at the cheap site: its two most negative; the expensive
        // neurons do not fit.
        assert_eq!(sel.chosen, vec![2, 3]);
        assert!((sel.lambda_sum + 1.9).abs() < 1e-9);
        // With room for one expensive neuron, the most negative one joins.
        let sel = select_energy_aware(&eigs, &costs, 12.0, &caps).unwrap();
        assert!(sel.cost <= 12.0);
        assert_eq!(sel.chosen, vec![0, 2, 3]);
        // No budget, nothing; a positive λ is never chosen even when free.
        assert!(select_energy_aware(&eigs, &costs, 0.0, &caps)
            .unwrap()
            .chosen
            .is_empty());
        let sel = select_energy_aware(&eigs, &costs, 1e6, &[10, 10]).unwrap();
        assert!(!sel.chosen.contains(&5));
        assert_eq!(sel.chosen.len(), 5);
    }

    #[test]
    fn plain_selection_takes_the_bottom_quantile_of_negative_lambda() {
        let eigs: Vec<_> = (0..10).map(|i| eig(i % 2, i, i as f64 - 6.0)).collect();
        // λ = -6..3; the 30% quantile is -4: λ ∈ {-6, -5, -4}.
        let sel = select_plain(&eigs, 0.3, &[10, 10]);
        assert_eq!(sel.chosen, vec![0, 1, 2]);
        // Cap one per site: the most negative of each.
        let sel = select_plain(&eigs, 0.3, &[1, 1]);
        assert_eq!(sel.chosen, vec![0, 1]);
        // A high quantile still never takes λ ≥ 0.
        let sel = select_plain(&eigs, 1.0, &[10, 10]);
        assert_eq!(sel.chosen.len(), 6);
    }
}
