//! The exact solver: each averaged, symmetrised splitting matrix's
//! minimum eigenpair by a full symmetric eigendecomposition (linfa-linalg's
//! `eigh`, as the reference calls `np.linalg.eig`; linfa-linalg is already
//! built for linfa, where nalgebra would add a minute to every clean build).

use crate::matrices::SplittingMatrices;
use linfa_linalg::eigh::Eigh;
use ndarray::{Array2, ArrayView2};

/// One neuron's minimum eigenpair: its splitting index and direction.
#[derive(Debug, Clone, PartialEq)]
pub struct NeuronEigen {
    /// Site index (into the sites the eigenpairs were computed for).
    pub site: usize,
    /// Neuron within the site.
    pub neuron: usize,
    /// `λ_min` of the neuron's splitting matrix (negative: splitting helps).
    pub lambda: f64,
    /// Unit eigenvector over `[incoming weights, bias]`.
    pub direction: Vec<f64>,
}

/// `(λ_min, v_min)` of symmetric `s` (its upper triangle is read). A
/// matrix the decomposition cannot handle (non-finite entries from a
/// diverged training) gets `λ = +∞` and a zero direction: splitting-stable,
/// so no selection ever splits that neuron.
pub fn min_eigenpair(s: ArrayView2<f64>) -> (f64, Vec<f64>) {
    let d = s.nrows();
    let m = Array2::from_shape_fn((d, d), |(i, j)| {
        let (a, b) = if i <= j { (i, j) } else { (j, i) };
        s[[a, b]]
    });
    let stable = (f64::INFINITY, vec![0.0; d]);
    if d == 0 || m.iter().any(|x| !x.is_finite()) {
        return stable;
    }
    let Ok((values, vectors)) = m.eigh() else {
        return stable;
    };
    let Some((k, &lambda)) = values.iter().enumerate().min_by(|a, b| a.1.total_cmp(b.1)) else {
        return stable;
    };
    let v = vectors.column(k);
    let norm = v.dot(&v).sqrt().max(f64::MIN_POSITIVE);
    (lambda, v.iter().map(|x| x / norm).collect())
}

/// The minimum eigenpair of every neuron's splitting matrix.
pub fn exact_eigenpairs(matrices: &SplittingMatrices) -> Vec<NeuronEigen> {
    let mut out = Vec::new();
    for (site, ms) in matrices.matrices.iter().enumerate() {
        for (neuron, s) in ms.iter().enumerate() {
            let (lambda, direction) = min_eigenpair(s.view());
            out.push(NeuronEigen {
                site,
                neuron,
                lambda,
                direction,
            });
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn min_eigenpair_of_a_known_matrix() {
        // Eigenvalues 3 and -1, eigenvectors (1,1)/√2 and (1,-1)/√2.
        let s = ndarray::array![[1.0, 2.0], [2.0, 1.0]];
        let (l, v) = min_eigenpair(s.view());
        assert!((l + 1.0).abs() < 1e-12);
        assert!((v[0] + v[1]).abs() < 1e-12 && (v[0].abs() - 0.5f64.sqrt()).abs() < 1e-12);
    }

    #[test]
    fn a_matrix_with_non_finite_entries_is_never_split() {
        let s = ndarray::array![[1.0, f64::NAN], [f64::NAN, 1.0]];
        let (l, v) = min_eigenpair(s.view());
        assert_eq!(l, f64::INFINITY);
        assert_eq!(v, vec![0.0, 0.0]);
    }

    #[test]
    fn min_eigenpair_matches_a_3x3_computed_by_hand() {
        // diag(2, -3, 5) rotated: eigenvalues stay 2, -3, 5.
        let s = ndarray::array![[2.0, 0.0, 0.0], [0.0, 1.0, 4.0], [0.0, 4.0, 1.0]];
        // The lower block [[1,4],[4,1]] has eigenvalues 5 and -3.
        let (l, v) = min_eigenpair(s.view());
        assert!((l + 3.0).abs() < 1e-10);
        assert!(v[0].abs() < 1e-10 && (v[1] + v[2]).abs() < 1e-10);
    }
}
