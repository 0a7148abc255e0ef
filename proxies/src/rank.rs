//! Rank correlations between proxy scores and trained accuracies, and the
//! two kinds of samples GreenMachine judges proxies on: uniform random,
//! and stratified (architectures binned by accuracy, equal draws per bin,
//! so a proxy must also order the bad ones against the good ones).
//!
//! Scores that are NaN or -∞ (degenerate networks) rank lowest, tied
//! with each other: a proxy that cannot score a network says it is the
//! worst.

use rand::rngs::SmallRng;
use rand::seq::SliceRandom;
use rand::SeedableRng;
use std::cmp::Ordering;

/// The value a score ranks by: NaN as -∞, -0 as +0 (so the total order
/// below ties them).
fn rank_key(v: f64) -> f64 {
    if v.is_nan() {
        f64::NEG_INFINITY
    } else {
        v + 0.0
    }
}

fn compare(a: &f64, b: &f64) -> Ordering {
    rank_key(*a).total_cmp(&rank_key(*b))
}

/// Kendall's τ-b (ties in either variable accounted for), by the
/// `kendalls` crate (Knight's O(n log n) algorithm). `None` with fewer than
/// two pairs, different lengths, or when one side is constant.
pub fn kendall_tau_b(x: &[f64], y: &[f64]) -> Option<f64> {
    if x.len() != y.len() || x.len() < 2 {
        return None;
    }
    let x: Vec<f64> = x.iter().map(|&v| rank_key(v)).collect();
    let y: Vec<f64> = y.iter().map(|&v| rank_key(v)).collect();
    let (tau, _significance) = kendalls::tau_b_with_comparator(&x, &y, compare).ok()?;
    tau.is_finite().then_some(tau)
}

/// Ranks from 1, ties sharing their average rank.
pub fn average_ranks(x: &[f64]) -> Vec<f64> {
    let mut order: Vec<usize> = (0..x.len()).collect();
    order.sort_by(|&a, &b| compare(&x[a], &x[b]));
    let mut ranks = vec![0.0; x.len()];
    let mut i = 0;
    while i < order.len() {
        let mut j = i;
        while j + 1 < order.len() && compare(&x[order[j + 1]], &x[order[i]]) == Ordering::Equal {
            j += 1;
        }
        // Positions i..=j (0-based) share ranks i+1..=j+1.
        let avg = (i + j) as f64 / 2.0 + 1.0;
        for &k in &order[i..=j] {
            ranks[k] = avg;
        }
        i = j + 1;
    }
    ranks
}

/// Spearman's ρ: the Pearson correlation of average ranks. `None` with
/// fewer than two values, different lengths, or a constant side.
pub fn spearman_rho(x: &[f64], y: &[f64]) -> Option<f64> {
    if x.len() != y.len() || x.len() < 2 {
        return None;
    }
    pearson(&average_ranks(x), &average_ranks(y))
}

fn pearson(a: &[f64], b: &[f64]) -> Option<f64> {
    let n = a.len() as f64;
    let (ma, mb) = (a.iter().sum::<f64>() / n, b.iter().sum::<f64>() / n);
    let (mut sab, mut saa, mut sbb) = (0.0, 0.0, 0.0);
    for (&x, &y) in a.iter().zip(b) {
        sab += (x - ma) * (y - mb);
        saa += (x - ma) * (x - ma);
        sbb += (y - mb) * (y - mb);
    }
    let r = sab / (saa * sbb).sqrt();
    r.is_finite().then_some(r)
}

/// `count` distinct indices of `0..n` drawn uniformly (all of them, in a
/// random order, when `count >= n`).
pub fn random_sample(n: usize, count: usize, seed: u64) -> Vec<usize> {
    let mut rng = SmallRng::seed_from_u64(seed);
    let mut all: Vec<usize> = (0..n).collect();
    all.shuffle(&mut rng);
    all.truncate(count.min(n));
    all
}

/// A stratified sample: the architectures sorted by accuracy and cut into
/// `bins` bins of equal accuracy *range* (GreenMachine bins by accuracy),
/// then `per_bin` drawn from each bin (all of a bin that has fewer).
/// Indices of `accuracy`, bins in increasing accuracy. NaN accuracies are
/// never drawn.
pub fn stratified_sample(accuracy: &[f64], bins: usize, per_bin: usize, seed: u64) -> Vec<usize> {
    let finite: Vec<usize> = (0..accuracy.len())
        .filter(|&i| accuracy[i].is_finite())
        .collect();
    if finite.is_empty() || bins == 0 {
        return Vec::new();
    }
    let lo = finite
        .iter()
        .map(|&i| accuracy[i])
        .fold(f64::INFINITY, f64::min);
    let hi = finite
        .iter()
        .map(|&i| accuracy[i])
        .fold(f64::NEG_INFINITY, f64::max);
    let width = (hi - lo) / bins as f64;
    let mut members: Vec<Vec<usize>> = vec![Vec::new(); bins];
    for &i in &finite {
        let b = if width > 0.0 {
            (((accuracy[i] - lo) / width) as usize).min(bins - 1)
        } else {
            0
        };
        members[b].push(i);
    }
    let mut rng = SmallRng::seed_from_u64(seed);
    let mut out = Vec::new();
    for mut bin in members {
        bin.shuffle(&mut rng);
        bin.truncate(per_bin);
        out.extend(bin);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kendall_by_hand() {
        // Pairs of (1,2,3,4) vs (1,3,2,4): 5 concordant, 1 discordant.
        let t = kendall_tau_b(&[1.0, 2.0, 3.0, 4.0], &[1.0, 3.0, 2.0, 4.0]).unwrap();
        assert!((t - 4.0 / 6.0).abs() < 1e-12, "{t}");
        // Reversed order: -1.
        let t = kendall_tau_b(&[1.0, 2.0, 3.0], &[3.0, 2.0, 1.0]).unwrap();
        assert!((t + 1.0).abs() < 1e-12);
        // Ties: x = (1,1,2,3), y = (1,2,3,4). Pairs: (0,1) tied in x only;
        // the other 5 concordant. tau_b = 5 / sqrt((5+0+1)(5+0+0)) = 5/sqrt(30).
        let t = kendall_tau_b(&[1.0, 1.0, 2.0, 3.0], &[1.0, 2.0, 3.0, 4.0]).unwrap();
        assert!((t - 5.0 / 30f64.sqrt()).abs() < 1e-12, "{t}");
        // A constant side has no correlation.
        assert_eq!(kendall_tau_b(&[1.0, 1.0, 1.0], &[1.0, 2.0, 3.0]), None);
        assert_eq!(kendall_tau_b(&[1.0], &[1.0]), None);
    }

    #[test]
    fn degenerate_scores_rank_lowest() {
        // NaN and -inf tie at the bottom: x = (NaN, -inf, 1, 2) vs
        // y = (1, 2, 3, 4): the tied pair is tied in x only, other 5 concordant.
        let t = kendall_tau_b(
            &[f64::NAN, f64::NEG_INFINITY, 1.0, 2.0],
            &[1.0, 2.0, 3.0, 4.0],
        )
        .unwrap();
        assert!((t - 5.0 / 30f64.sqrt()).abs() < 1e-12, "{t}");
        assert_eq!(
            average_ranks(&[f64::NAN, 5.0, f64::NEG_INFINITY]),
            vec![1.5, 3.0, 1.5]
        );
    }

    #[test]
    fn spearman_by_hand() {
        // Ranks (1,2,3,4) vs (1,3,2,4): d² = 0+1+1+0 = 2, no ties:
        // rho = 1 - 6·2 / (4·15) = 0.8.
        let r = spearman_rho(&[10.0, 20.0, 30.0, 40.0], &[1.0, 3.0, 2.0, 4.0]).unwrap();
        assert!((r - 0.8).abs() < 1e-12, "{r}");
        // Ties: ranks of (1,1,3) are (1.5,1.5,3); against (1,2,3):
        // Pearson of (1.5,1.5,3) and (1,2,3) = 0.75/sqrt(1.5·2) = sqrt(3)/2.
        let r = spearman_rho(&[1.0, 1.0, 3.0], &[1.0, 2.0, 3.0]).unwrap();
        assert!((r - 3f64.sqrt() / 2.0).abs() < 1e-12, "{r}");
        assert_eq!(spearman_rho(&[2.0, 2.0], &[1.0, 2.0]), None);
    }

    #[test]
    fn samples() {
        let s = random_sample(10, 4, 1);
        assert_eq!(s.len(), 4);
        let mut d = s.clone();
        d.sort();
        d.dedup();
        assert_eq!(d.len(), 4);
        assert_eq!(random_sample(3, 10, 1).len(), 3);
        // Accuracies over [0, 0.9] in 3 equal-range bins of width 0.3
        // (no value near a boundary): {0,1,2}, {3,4,5}, {6,7,8,9}; 2 from each.
        let acc = [0.0, 0.05, 0.1, 0.35, 0.4, 0.45, 0.7, 0.8, 0.85, 0.9];
        let s = stratified_sample(&acc, 3, 2, 7);
        assert_eq!(s.len(), 6);
        assert!(s[..2].iter().all(|&i| i <= 2));
        assert!(s[2..4].iter().all(|&i| (3..=5).contains(&i)));
        assert!(s[4..].iter().all(|&i| i >= 6));
        // Seeded.
        assert_eq!(s, stratified_sample(&acc, 3, 2, 7));
    }
}
