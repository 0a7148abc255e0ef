//! The exact solver: each averaged, symmetrised splitting matrix's
//! minimum eigenpair by a full symmetric eigendecomposition (nalgebra's
//! `SymmetricEigen`, as the reference calls `np.linalg.eig`).

use crate::matrices::SplittingMatrices;
use nalgebra::{DMatrix, SymmetricEigen};
use ndarray::ArrayView2;

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

/// `(λ_min, v_min)` of symmetric `s` (its upper triangle is read).
pub fn min_eigenpair(s: ArrayView2<f64>) -> (f64, Vec<f64>) {
    let d = s.nrows();
    let m = DMatrix::from_fn(d, d, |i, j| {
        let (a, b) = if i <= j { (i, j) } else { (j, i) };
        s[[a, b]]
    });
    let eig = SymmetricEigen::new(m);
    let (k, &lambda) = eig
        .eigenvalues
        .iter()
        .enumerate()
        .min_by(|a, b| a.1.total_cmp(b.1))
        .expect("a splitting matrix is at least 1×1");
    let v = eig.eigenvectors.column(k);
    let norm = v.norm().max(f64::MIN_POSITIVE);
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
}
