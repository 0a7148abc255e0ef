//! Objectives and constraints, and the multi-objective arithmetic on them:
//! Pareto dominance, non-dominated sorting, crowding distance and exact
//! hypervolume.
//!
//! Every routine below works on *minimisation vectors*: an objective declared
//! `max` is negated once, in [`ObjectiveSet::minimization_vector`], so no
//! other code has to think about directions.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt;

/// Whether an objective is minimised or maximised.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Direction {
    /// Smaller is better (energy, latency, parameters).
    Minimize,
    /// Larger is better (accuracy).
    Maximize,
}

/// A named objective, read from a trial's metrics.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Objective {
    /// Metric name, e.g. `val_accuracy`, `inference_energy_j_per_1k`.
    pub name: String,
    /// Direction.
    pub direction: Direction,
    /// Hypervolume reference point for this objective (the worst value that
    /// still counts), in the metric's own units.
    #[serde(default)]
    pub reference: Option<f64>,
    /// Best value expected (for normalising hypervolume to `[0, 1]`).
    #[serde(default)]
    pub ideal: Option<f64>,
}

impl Objective {
    /// Objective without a reference point.
    pub fn new(name: &str, direction: Direction) -> Objective {
        Objective {
            name: name.into(),
            direction,
            reference: None,
            ideal: None,
        }
    }

    /// Parses `NAME:min` or `NAME:max`, optionally followed by
    /// `:ref=X` and `:ideal=Y`.
    pub fn parse(spec: &str) -> Result<Objective, ObjectiveError> {
        let bad = |m: &str| ObjectiveError::Parse {
            spec: spec.into(),
            message: m.into(),
        };
        let mut parts = spec.split(':');
        let name = parts.next().unwrap_or("").trim();
        if name.is_empty() {
            return Err(bad("empty objective name"));
        }
        let direction = match parts.next().map(str::trim) {
            Some("min") => Direction::Minimize,
            Some("max") => Direction::Maximize,
            _ => return Err(bad("expected NAME:min or NAME:max")),
        };
        let mut o = Objective::new(name, direction);
        for extra in parts {
            let (k, v) = extra
                .split_once('=')
                .ok_or_else(|| bad("extras are ref=X or ideal=Y"))?;
            let x: f64 = v
                .trim()
                .parse()
                .map_err(|_| bad(&format!("`{v}` is not a number")))?;
            match k.trim() {
                "ref" => o.reference = Some(x),
                "ideal" => o.ideal = Some(x),
                other => return Err(bad(&format!("unknown extra `{other}`"))),
            }
        }
        Ok(o)
    }
}

impl fmt::Display for Objective {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let d = match self.direction {
            Direction::Minimize => "min",
            Direction::Maximize => "max",
        };
        write!(f, "{}:{d}", self.name)?;
        if let Some(r) = self.reference {
            write!(f, ":ref={r}")?;
        }
        if let Some(i) = self.ideal {
            write!(f, ":ideal={i}")?;
        }
        Ok(())
    }
}

/// A bound on a metric.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Bound {
    /// `metric >= x`.
    AtLeast(f64),
    /// `metric <= x`.
    AtMost(f64),
    /// `metric >= f × best`, best = largest value found so far.
    AtLeastFractionOfBest(f64),
    /// `metric <= f × best`, best = smallest value found so far.
    AtMostFactorOfBest(f64),
}

/// A constraint: trials violating it are never on the front.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Constraint {
    /// Metric constrained.
    pub metric: String,
    /// The bound.
    pub bound: Bound,
}

impl Constraint {
    /// Parses `METRIC>=X`, `METRIC<=X`, `METRIC>=F*best`, `METRIC<=F*best`.
    pub fn parse(spec: &str) -> Result<Constraint, ObjectiveError> {
        let bad = |m: &str| ObjectiveError::Parse {
            spec: spec.into(),
            message: m.into(),
        };
        let (metric, rest, at_least) = if let Some((m, r)) = spec.split_once(">=") {
            (m, r, true)
        } else if let Some((m, r)) = spec.split_once("<=") {
            (m, r, false)
        } else {
            return Err(bad("expected METRIC>=X, METRIC<=X or METRIC>=F*best"));
        };
        let metric = metric.trim();
        if metric.is_empty() {
            return Err(bad("empty metric name"));
        }
        let rest = rest.trim();
        let (num, relative) = match rest.strip_suffix("*best") {
            Some(n) => (n.trim(), true),
            None => (rest, false),
        };
        let x: f64 = num
            .parse()
            .map_err(|_| bad(&format!("`{num}` is not a number")))?;
        let bound = match (at_least, relative) {
            (true, false) => Bound::AtLeast(x),
            (false, false) => Bound::AtMost(x),
            (true, true) => Bound::AtLeastFractionOfBest(x),
            (false, true) => Bound::AtMostFactorOfBest(x),
        };
        Ok(Constraint {
            metric: metric.into(),
            bound,
        })
    }
}

/// Errors about objectives.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ObjectiveError {
    /// An objective or constraint string is malformed.
    #[error("cannot parse `{spec}`: {message}")]
    Parse {
        /// The string.
        spec: String,
        /// What is wrong.
        message: String,
    },
    /// A trial lacks a metric an objective needs.
    #[error("metric `{name}` missing from trial metrics")]
    MissingMetric {
        /// The metric.
        name: String,
    },
    /// Hypervolume needs a reference point for every objective.
    #[error("objective `{name}` has no reference point (declare ref=X)")]
    NoReference {
        /// The objective.
        name: String,
    },
    /// No objective declared.
    #[error("no objectives declared")]
    Empty,
}

/// Metrics of one trial, by name.
pub type Metrics = BTreeMap<String, f64>;

/// Fraction of an objective's observed range a derived reference point
/// lies beyond its worst value.
pub const REFERENCE_MARGIN: f64 = 0.1;

impl Objective {
    /// Gives the objective a reference point (worst observed value plus
    /// [`REFERENCE_MARGIN`] of the range) and an ideal (best observed
    /// value) from `observed`, keeping either when already declared, so
    /// that hypervolumes of runs over the same figures are comparable.
    /// `None` (nothing changed) when no metrics carry the objective.
    pub fn derive_reference(&mut self, observed: &[Metrics]) -> Option<()> {
        let values = observed.iter().filter_map(|m| m.get(&self.name).copied());
        let (lo, hi) = values.fold(None, |acc: Option<(f64, f64)>, v| {
            Some(acc.map_or((v, v), |(lo, hi)| (lo.min(v), hi.max(v))))
        })?;
        let margin = REFERENCE_MARGIN * (hi - lo).max(1e-12);
        let (best, worst) = match self.direction {
            Direction::Minimize => (lo, hi + margin),
            Direction::Maximize => (hi, lo - margin),
        };
        self.reference.get_or_insert(worst);
        self.ideal.get_or_insert(best);
        Some(())
    }
}

/// The objectives and constraints of a study.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ObjectiveSet {
    /// Objectives, in declaration order.
    pub objectives: Vec<Objective>,
    /// Constraints.
    #[serde(default)]
    pub constraints: Vec<Constraint>,
}

impl ObjectiveSet {
    /// A set of objectives without constraints.
    pub fn new(objectives: Vec<Objective>) -> Result<ObjectiveSet, ObjectiveError> {
        if objectives.is_empty() {
            return Err(ObjectiveError::Empty);
        }
        Ok(ObjectiveSet {
            objectives,
            constraints: Vec::new(),
        })
    }

    /// Adds a constraint.
    pub fn with_constraint(mut self, c: Constraint) -> ObjectiveSet {
        self.constraints.push(c);
        self
    }

    /// The trial's objective values as a minimisation vector (`max`
    /// objectives negated). Errors if a metric is missing or not finite.
    pub fn minimization_vector(&self, metrics: &Metrics) -> Result<Vec<f64>, ObjectiveError> {
        self.objectives
            .iter()
            .map(|o| {
                let v = metrics
                    .get(&o.name)
                    .copied()
                    .filter(|v| v.is_finite())
                    .ok_or_else(|| ObjectiveError::MissingMetric {
                        name: o.name.clone(),
                    })?;
                Ok(match o.direction {
                    Direction::Minimize => v,
                    Direction::Maximize => -v,
                })
            })
            .collect()
    }

    /// Total constraint violation of each trial (0 = feasible). Relative
    /// bounds use the best value among all the given trials.
    pub fn violations(&self, all: &[&Metrics]) -> Vec<f64> {
        let mut out = vec![0.0; all.len()];
        for c in &self.constraints {
            let values: Vec<Option<f64>> = all
                .iter()
                .map(|m| m.get(&c.metric).copied().filter(|v| v.is_finite()))
                .collect();
            let best_max = values
                .iter()
                .flatten()
                .copied()
                .fold(f64::NEG_INFINITY, f64::max);
            let best_min = values
                .iter()
                .flatten()
                .copied()
                .fold(f64::INFINITY, f64::min);
            for (i, v) in values.iter().enumerate() {
                let Some(v) = *v else {
                    out[i] += 1e9; // a missing constrained metric is infeasible
                    continue;
                };
                let scale = |x: f64| x.abs().max(1e-12);
                out[i] += match c.bound {
                    Bound::AtLeast(x) => ((x - v) / scale(x)).max(0.0),
                    Bound::AtMost(x) => ((v - x) / scale(x)).max(0.0),
                    Bound::AtLeastFractionOfBest(f) => {
                        let x = f * best_max;
                        ((x - v) / scale(x)).max(0.0)
                    }
                    Bound::AtMostFactorOfBest(f) => {
                        let x = f * best_min;
                        ((v - x) / scale(x)).max(0.0)
                    }
                };
            }
        }
        out
    }

    /// The reference point as a minimisation vector, and the scale that maps
    /// `ideal..reference` to `0..1` per objective (1 where no ideal).
    pub fn reference_vector(&self) -> Result<(Vec<f64>, Vec<f64>), ObjectiveError> {
        let mut reference = Vec::new();
        let mut ideal = Vec::new();
        for o in &self.objectives {
            let r = o.reference.ok_or_else(|| ObjectiveError::NoReference {
                name: o.name.clone(),
            })?;
            let sign = match o.direction {
                Direction::Minimize => 1.0,
                Direction::Maximize => -1.0,
            };
            reference.push(sign * r);
            ideal.push(o.ideal.map(|i| sign * i));
        }
        let scale = reference
            .iter()
            .zip(&ideal)
            .map(|(r, i)| match i {
                Some(i) if r > i => r - i,
                _ => 1.0,
            })
            .collect();
        Ok((reference, scale))
    }

    /// Hypervolume of the feasible trials among `all`, against the declared
    /// reference point, normalised by `reference - ideal` where ideals are
    /// declared (then 1.0 is the whole box).
    pub fn hypervolume(&self, all: &[&Metrics]) -> Result<f64, ObjectiveError> {
        let (reference, scale) = self.reference_vector()?;
        let violations = self.violations(all);
        let mut points = Vec::new();
        for (m, v) in all.iter().zip(&violations) {
            if *v > 0.0 {
                continue;
            }
            let Ok(p) = self.minimization_vector(m) else {
                continue;
            };
            points.push(p);
        }
        let normalised_ref: Vec<f64> = vec![0.0; reference.len()];
        let shifted: Vec<Vec<f64>> = points
            .iter()
            .map(|p| {
                p.iter()
                    .zip(&reference)
                    .zip(&scale)
                    .map(|((x, r), s)| (x - r) / s)
                    .collect()
            })
            .collect();
        Ok(hypervolume(&shifted, &normalised_ref))
    }
}

/// `a` dominates `b`: no worse in every objective, better in one (minimising).
pub fn dominates(a: &[f64], b: &[f64]) -> bool {
    let mut strictly = false;
    for (x, y) in a.iter().zip(b) {
        if x > y {
            return false;
        }
        if x < y {
            strictly = true;
        }
    }
    strictly
}

/// Non-dominated sort: fronts of indices (each ascending), best first.
///
/// Points are visited in lexicographic order, where anything that dominates
/// a point comes before it; a front is then peeled in one pass, a point
/// joining it unless a member already taken dominates it (whatever dominates
/// it is either a member or dominated by one). That costs the number of
/// points times the front size per front instead of the all-pairs
/// comparison of Deb et al. (2002), which NSGA-II paid on every proposal
/// over the whole history. Non-finite coordinates break the ordering
/// argument, so such inputs take the all-pairs path.
pub fn non_dominated_sort(points: &[Vec<f64>]) -> Vec<Vec<usize>> {
    non_dominated_sort_until(points, usize::MAX)
}

/// The first fronts of [`non_dominated_sort`], enough of them to hold at
/// least `at_least` points (all of them if there are fewer): for callers
/// that only need the best points (TPE's good set) and should not pay for
/// ranking every trial of a long study.
pub fn non_dominated_sort_until(points: &[Vec<f64>], at_least: usize) -> Vec<Vec<usize>> {
    if !points.iter().all(|p| p.iter().all(|x| x.is_finite())) {
        let mut fronts = non_dominated_sort_all_pairs(points);
        let mut total = 0;
        let keep = fronts
            .iter()
            .position(|f| {
                total += f.len();
                total >= at_least
            })
            .map_or(fronts.len(), |k| k + 1);
        fronts.truncate(keep);
        return fronts;
    }
    let mut order: Vec<usize> = (0..points.len()).collect();
    order.sort_by(|&a, &b| {
        points[a]
            .iter()
            .zip(&points[b])
            .map(|(x, y)| x.total_cmp(y))
            .find(|o| o.is_ne())
            .unwrap_or(std::cmp::Ordering::Equal)
            .then(a.cmp(&b))
    });
    let mut fronts = Vec::new();
    let mut total = 0;
    while !order.is_empty() && total < at_least {
        let mut front: Vec<usize> = Vec::new();
        let mut rest: Vec<usize> = Vec::new();
        for &i in &order {
            if front.iter().any(|&f| dominates(&points[f], &points[i])) {
                rest.push(i);
            } else {
                front.push(i);
            }
        }
        front.sort_unstable();
        total += front.len();
        fronts.push(front);
        order = rest;
    }
    fronts
}

/// Deb et al.'s all-pairs non-dominated sort, for inputs with non-finite
/// coordinates.
fn non_dominated_sort_all_pairs(points: &[Vec<f64>]) -> Vec<Vec<usize>> {
    let n = points.len();
    let mut dominated_by_count = vec![0usize; n];
    let mut dominates_list: Vec<Vec<usize>> = vec![Vec::new(); n];
    for i in 0..n {
        for j in (i + 1)..n {
            if dominates(&points[i], &points[j]) {
                dominates_list[i].push(j);
                dominated_by_count[j] += 1;
            } else if dominates(&points[j], &points[i]) {
                dominates_list[j].push(i);
                dominated_by_count[i] += 1;
            }
        }
    }
    let mut fronts = Vec::new();
    let mut current: Vec<usize> = (0..n).filter(|&i| dominated_by_count[i] == 0).collect();
    while !current.is_empty() {
        let mut next = Vec::new();
        for &i in &current {
            for &j in &dominates_list[i] {
                dominated_by_count[j] -= 1;
                if dominated_by_count[j] == 0 {
                    next.push(j);
                }
            }
        }
        next.sort_unstable();
        fronts.push(std::mem::take(&mut current));
        current = next;
    }
    fronts
}

/// Indices of the non-dominated points (the first front), ascending.
///
/// A point that dominates another comes before it in lexicographic order,
/// and dominance is transitive, so one sweep in that order that checks
/// each point against the front found so far is exact: O(n · front)
/// rather than the all-pairs O(n²), which the runner paid after every
/// trial over the whole history. Non-finite coordinates break the ordering
/// argument, so such inputs take the all-pairs path.
pub fn pareto_front(points: &[Vec<f64>]) -> Vec<usize> {
    if !points.iter().all(|p| p.iter().all(|x| x.is_finite())) {
        return (0..points.len())
            .filter(|&i| !points.iter().any(|q| dominates(q, &points[i])))
            .collect();
    }
    let mut order: Vec<usize> = (0..points.len()).collect();
    // `partial_cmp` (total on finite numbers) treats -0.0 as 0.0, as
    // `dominates` does.
    order.sort_by(|&a, &b| {
        points[a]
            .iter()
            .zip(&points[b])
            .filter_map(|(x, y)| x.partial_cmp(y))
            .find(|o| o.is_ne())
            .unwrap_or(std::cmp::Ordering::Equal)
            .then(a.cmp(&b))
    });
    let mut front: Vec<usize> = Vec::new();
    for i in order {
        if !front.iter().any(|&f| dominates(&points[f], &points[i])) {
            front.push(i);
        }
    }
    front.sort_unstable();
    front
}

/// Crowding distance of each member of `front` (same order); boundary
/// points get infinity.
pub fn crowding_distance(points: &[Vec<f64>], front: &[usize]) -> Vec<f64> {
    let n = front.len();
    let mut dist = vec![0.0; n];
    if n <= 2 {
        return vec![f64::INFINITY; n];
    }
    let dims = points[front[0]].len();
    // Each objective sorts the front on its own column: the index is the point.
    #[allow(clippy::needless_range_loop)]
    for d in 0..dims {
        let mut order: Vec<usize> = (0..n).collect();
        order.sort_by(|&a, &b| points[front[a]][d].total_cmp(&points[front[b]][d]));
        let lo = points[front[order[0]]][d];
        let hi = points[front[order[n - 1]]][d];
        dist[order[0]] = f64::INFINITY;
        dist[order[n - 1]] = f64::INFINITY;
        if hi > lo {
            for k in 1..n - 1 {
                let gap = points[front[order[k + 1]]][d] - points[front[order[k - 1]]][d];
                dist[order[k]] += gap / (hi - lo);
            }
        }
    }
    dist
}

/// Rank and crowding of each point under constrained domination (Deb 2002):
/// feasible points are sorted into fronts; infeasible ones come after, in
/// order of increasing violation. Smaller `(rank, -crowding)` is better.
pub fn constrained_rank(points: &[Vec<f64>], violations: &[f64]) -> Vec<(usize, f64)> {
    let mut out = vec![(usize::MAX, 0.0); points.len()];
    let feasible: Vec<usize> = (0..points.len())
        .filter(|&i| violations[i] <= 0.0)
        .collect();
    let fpoints: Vec<Vec<f64>> = feasible.iter().map(|&i| points[i].clone()).collect();
    let fronts = non_dominated_sort(&fpoints);
    let mut rank = 0;
    for front in &fronts {
        let crowd = crowding_distance(&fpoints, front);
        for (k, &fi) in front.iter().enumerate() {
            out[feasible[fi]] = (rank, crowd[k]);
        }
        rank += 1;
    }
    let mut infeasible: Vec<usize> = (0..points.len()).filter(|&i| violations[i] > 0.0).collect();
    infeasible.sort_by(|&a, &b| violations[a].total_cmp(&violations[b]));
    for i in infeasible {
        out[i] = (rank, 0.0);
        rank += 1;
    }
    out
}

/// Compares two `(rank, crowding)` keys: lower rank, then larger crowding.
pub fn better_rank(a: (usize, f64), b: (usize, f64)) -> bool {
    a.0 < b.0 || (a.0 == b.0 && a.1 > b.1)
}

/// Exact hypervolume dominated by `points` (minimising) and bounded by
/// `reference`. Points not strictly better than the reference in every
/// objective contribute nothing. Two objectives: a sweep, O(n log n);
/// more: the WFG algorithm (While, Bradstreet, Barone 2012), exact.
pub fn hypervolume(points: &[Vec<f64>], reference: &[f64]) -> f64 {
    let inside: Vec<Vec<f64>> = points
        .iter()
        .filter(|p| p.len() == reference.len() && p.iter().zip(reference).all(|(x, r)| x < r))
        .cloned()
        .collect();
    let front = nondominated_unique(inside);
    wfg(front, reference)
}

fn nondominated_unique(mut pts: Vec<Vec<f64>>) -> Vec<Vec<f64>> {
    pts.sort_by(|a, b| {
        a.iter()
            .zip(b)
            .map(|(x, y)| x.total_cmp(y))
            .find(|o| o.is_ne())
            .unwrap_or(std::cmp::Ordering::Equal)
    });
    pts.dedup();
    let front = pareto_front(&pts);
    let mut keep = vec![false; pts.len()];
    for i in front {
        keep[i] = true;
    }
    pts.into_iter()
        .zip(keep)
        .filter_map(|(p, k)| k.then_some(p))
        .collect()
}

fn wfg(mut pts: Vec<Vec<f64>>, reference: &[f64]) -> f64 {
    match (pts.len(), reference.len()) {
        (0, _) => 0.0,
        (1, _) => inclusive(&pts[0], reference),
        (_, 1) => reference[0] - pts.iter().map(|p| p[0]).fold(f64::INFINITY, f64::min),
        (_, 2) => sweep_2d(&mut pts, reference),
        _ => {
            // Sorting by the last objective, worst first, keeps limit sets small.
            let last = reference.len() - 1;
            pts.sort_by(|a, b| b[last].total_cmp(&a[last]));
            (0..pts.len())
                .map(|k| {
                    let limit: Vec<Vec<f64>> = pts[k + 1..]
                        .iter()
                        .map(|q| pts[k].iter().zip(q).map(|(a, b)| a.max(*b)).collect())
                        .collect();
                    inclusive(&pts[k], reference) - wfg(nondominated_unique(limit), reference)
                })
                .sum()
        }
    }
}

fn inclusive(p: &[f64], reference: &[f64]) -> f64 {
    p.iter()
        .zip(reference)
        .map(|(x, r)| (r - x).max(0.0))
        .product()
}

fn sweep_2d(pts: &mut [Vec<f64>], reference: &[f64]) -> f64 {
    pts.sort_by(|a, b| a[0].total_cmp(&b[0]));
    let mut volume = 0.0;
    let mut best_y = reference[1];
    for p in pts.iter() {
        if p[1] < best_y {
            volume += (reference[0] - p[0]) * (best_y - p[1]);
            best_y = p[1];
        }
    }
    volume
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pareto_front_sweep_matches_all_pairs() {
        // Integer grids give ties and duplicates; a few sizes and dims.
        let mut state = 7u64;
        let mut next = || {
            state = state
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((state >> 33) % 6) as f64
        };
        for (n, dims) in [(1, 2), (30, 2), (200, 2), (120, 3), (60, 4)] {
            let points: Vec<Vec<f64>> = (0..n)
                .map(|_| (0..dims).map(|_| next()).collect())
                .collect();
            let all_pairs: Vec<usize> = (0..n)
                .filter(|&i| !points.iter().any(|q| dominates(q, &points[i])))
                .collect();
            assert_eq!(pareto_front(&points), all_pairs, "n={n} dims={dims}");
        }
        // Non-finite coordinates take the all-pairs path.
        let with_nan = vec![vec![f64::NAN, 1.0], vec![0.0, 0.0], vec![1.0, 1.0]];
        assert_eq!(pareto_front(&with_nan), vec![1]);
    }
    use rand::rngs::StdRng;
    use rand::{Rng, SeedableRng};

    fn metrics(pairs: &[(&str, f64)]) -> Metrics {
        pairs.iter().map(|(k, v)| (k.to_string(), *v)).collect()
    }

    #[test]
    fn peeled_sort_matches_all_pairs_sort() {
        let mut rng = StdRng::seed_from_u64(11);
        for n in [0usize, 1, 2, 7, 40, 120] {
            for dims in [2usize, 3] {
                // Coarse values so that ties and duplicates occur.
                let pts: Vec<Vec<f64>> = (0..n)
                    .map(|_| (0..dims).map(|_| rng.gen_range(0..6) as f64).collect())
                    .collect();
                assert_eq!(
                    non_dominated_sort(&pts),
                    non_dominated_sort_all_pairs(&pts),
                    "n={n} dims={dims}"
                );
            }
        }
    }

    #[test]
    fn dominance_and_front_by_hand() {
        let pts = vec![
            vec![1.0, 5.0],
            vec![2.0, 3.0],
            vec![3.0, 4.0], // dominated by [2,3]
            vec![4.0, 1.0],
            vec![4.0, 1.0], // duplicate: not dominated
            vec![5.0, 5.0],
        ];
        assert!(dominates(&pts[1], &pts[2]));
        assert!(!dominates(&pts[3], &pts[4]));
        assert_eq!(pareto_front(&pts), vec![0, 1, 3, 4]);
        let fronts = non_dominated_sort(&pts);
        assert_eq!(fronts, vec![vec![0, 1, 3, 4], vec![2], vec![5]]);
        let cd = crowding_distance(&pts, &[0, 1, 3]);
        assert!(cd[0].is_infinite() && cd[2].is_infinite());
        // middle point: (4-1)/3 + (5-1)/4 = 2.0
        assert!((cd[1] - 2.0).abs() < 1e-12);
    }

    #[test]
    fn hypervolume_2d_by_hand() {
        // Staircase of (1,3), (2,2), (3,1) against (4,4): 3 + 2 + 1 = 6.
        let pts = vec![
            vec![1.0, 3.0],
            vec![2.0, 2.0],
            vec![3.0, 1.0],
            vec![3.5, 3.5],
        ];
        assert!((hypervolume(&pts, &[4.0, 4.0]) - 6.0).abs() < 1e-12);
        // A point beyond the reference adds nothing.
        assert_eq!(hypervolume(&[vec![5.0, 0.0]], &[4.0, 4.0]), 0.0);
        assert!((hypervolume(&[vec![0.0, 0.0]], &[2.0, 3.0]) - 6.0).abs() < 1e-12);
    }

    #[test]
    fn hypervolume_3d_by_hand() {
        // Two unit-offset boxes against (2,2,2): (0,1,1) gives 2*1*1 = 2,
        // (1,0,1) gives 1*2*1 = 2, overlap [1,2]x[1,2]x[1,2] = 1 -> 3.
        let pts = vec![vec![0.0, 1.0, 1.0], vec![1.0, 0.0, 1.0]];
        assert!((hypervolume(&pts, &[2.0, 2.0, 2.0]) - 3.0).abs() < 1e-12);
        // Adding (1,1,0): +2 own, minus overlaps: total is 8 - 1 - 1 - 1 + 0 ... = 4.
        let pts = vec![
            vec![0.0, 1.0, 1.0],
            vec![1.0, 0.0, 1.0],
            vec![1.0, 1.0, 0.0],
        ];
        assert!((hypervolume(&pts, &[2.0, 2.0, 2.0]) - 4.0).abs() < 1e-12);
    }

    fn inclusion_exclusion(points: &[Vec<f64>], reference: &[f64]) -> f64 {
        let n = points.len();
        let mut total = 0.0;
        for mask in 1u32..(1 << n) {
            let members: Vec<&Vec<f64>> = (0..n)
                .filter(|i| mask & (1 << i) != 0)
                .map(|i| &points[i])
                .collect();
            let corner: Vec<f64> = (0..reference.len())
                .map(|d| {
                    members
                        .iter()
                        .map(|p| p[d])
                        .fold(f64::NEG_INFINITY, f64::max)
                })
                .collect();
            let vol = inclusive(&corner, reference);
            total += if members.len() % 2 == 1 { vol } else { -vol };
        }
        total
    }

    #[test]
    fn wfg_matches_inclusion_exclusion_in_3_and_4_dimensions() {
        let mut rng = StdRng::seed_from_u64(11);
        for dims in [3usize, 4] {
            for _ in 0..30 {
                let n = rng.gen_range(1..9);
                let pts: Vec<Vec<f64>> = (0..n)
                    .map(|_| (0..dims).map(|_| rng.gen_range(0.0..1.0)).collect())
                    .collect();
                let reference = vec![1.0; dims];
                let a = hypervolume(&pts, &reference);
                let b = inclusion_exclusion(&pts, &reference);
                assert!((a - b).abs() < 1e-9, "dims {dims}: {a} vs {b}");
            }
        }
    }

    #[test]
    fn directions_references_and_constraints() {
        let set = ObjectiveSet::new(vec![
            Objective::parse("acc:max:ref=0.5:ideal=1").unwrap(),
            Objective::parse("energy:min:ref=10:ideal=0").unwrap(),
        ])
        .unwrap()
        .with_constraint(Constraint::parse("acc>=0.98*best").unwrap());
        let a = metrics(&[("acc", 0.9), ("energy", 5.0)]);
        let b = metrics(&[("acc", 0.8), ("energy", 1.0)]); // 0.8 < 0.98*0.9: infeasible
        assert_eq!(set.minimization_vector(&a).unwrap(), vec![-0.9, 5.0]);
        let v = set.violations(&[&a, &b]);
        assert_eq!(v[0], 0.0);
        assert!(v[1] > 0.0);
        // Only a counts: normalised box (0.9-0.5)/0.5 x (10-5)/10 = 0.8*0.5.
        let hv = set.hypervolume(&[&a, &b]).unwrap();
        assert!((hv - 0.4).abs() < 1e-12, "{hv}");
        assert!(Objective::parse("acc:up").is_err());
        assert!(Constraint::parse("acc=3").is_err());
        assert_eq!(
            Constraint::parse("latency_ms <= 5").unwrap().bound,
            Bound::AtMost(5.0)
        );
        let no_ref = ObjectiveSet::new(vec![Objective::parse("x:min").unwrap()]).unwrap();
        assert!(matches!(
            no_ref.hypervolume(&[&a]),
            Err(ObjectiveError::NoReference { .. })
        ));
    }

    #[test]
    fn constrained_rank_puts_infeasible_last() {
        let pts = vec![vec![0.0, 0.0], vec![1.0, 1.0], vec![2.0, 0.5]];
        let r = constrained_rank(&pts, &[1.0, 0.0, 0.0]);
        assert_eq!(r[1].0, 0);
        assert_eq!(r[2].0, 0);
        assert_eq!(r[0].0, 1);
    }

    #[test]
    fn references_derive_from_observed_values_and_keep_declared_ones() {
        let observed: Vec<Metrics> = [1.0, 3.0, 2.0]
            .iter()
            .map(|&v| [("energy".to_owned(), v)].into_iter().collect())
            .collect();
        let mut o = Objective::new("energy", Direction::Minimize);
        o.derive_reference(&observed).expect("observed");
        assert_eq!(o.ideal, Some(1.0));
        assert!((o.reference.unwrap() - 3.2).abs() < 1e-12);
        let mut acc = Objective::new("accuracy", Direction::Maximize);
        assert!(acc.derive_reference(&observed).is_none());
        assert_eq!(acc.reference, None);
        let mut declared = Objective::new("energy", Direction::Maximize);
        declared.reference = Some(0.0);
        declared.derive_reference(&observed).expect("observed");
        assert_eq!(declared.reference, Some(0.0));
        assert_eq!(declared.ideal, Some(3.0));
    }
}
