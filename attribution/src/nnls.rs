//! Non-negative least squares: min ‖A x − b‖ subject to x ≥ 0, by the
//! active-set method of Lawson and Hanson (Solving Least Squares Problems,
//! 1974, ch. 23), on the normal equations (the "fast NNLS" arrangement of
//! Bro and De Jong, 1997: AᵀA and Aᵀb are formed once, each inner step is a
//! Cholesky solve on the passive set).
//!
//! Why our own: the problems here are small and dense (a few hundred
//! columns at most) but have many rows that are built sparsely and never
//! stored whole, so the solver works from AᵀA; we also need the passive
//! set's (AᵀA)⁻¹ for standard errors, and to know which columns were left
//! out as linearly dependent. The maintained Rust crates either take a
//! full dense A or pull in a LAPACK backend. ~200 lines, tested against
//! hand-computed cases and known coefficients below.
//!
//! Columns are scaled to unit norm inside the solver, so tolerances are
//! relative and badly scaled regressors (seconds of kernel time next to a
//! window length) do not hurt the Cholesky steps.

/// Why NNLS could not run.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum NnlsError {
    /// Inputs of inconsistent sizes.
    #[error("dimension mismatch: {0}")]
    Dimensions(String),
    /// A NaN or infinity in the input.
    #[error("non-finite value in {0}")]
    NonFinite(&'static str),
}

/// A dense row-major matrix, for callers that have A itself.
#[derive(Debug, Clone, PartialEq)]
pub struct DenseMatrix {
    rows: usize,
    cols: usize,
    data: Vec<f64>,
}

impl DenseMatrix {
    /// A matrix from row-major data; `data.len()` must be `rows * cols`.
    pub fn from_row_major(rows: usize, cols: usize, data: Vec<f64>) -> Result<Self, NnlsError> {
        if rows.checked_mul(cols) != Some(data.len()) {
            return Err(NnlsError::Dimensions(format!(
                "{} values for a {rows}x{cols} matrix",
                data.len()
            )));
        }
        Ok(DenseMatrix { rows, cols, data })
    }

    /// Number of rows.
    pub fn rows(&self) -> usize {
        self.rows
    }

    /// Number of columns.
    pub fn cols(&self) -> usize {
        self.cols
    }

    /// Row `i`.
    pub fn row(&self, i: usize) -> &[f64] {
        &self.data[i * self.cols..(i + 1) * self.cols]
    }
}

/// The normal equations of a least-squares problem.
#[derive(Debug, Clone, PartialEq)]
pub struct NormalEquations {
    /// Number of unknowns.
    pub n: usize,
    /// AᵀA, row-major `n × n`.
    pub gram: Vec<f64>,
    /// Aᵀb.
    pub atb: Vec<f64>,
    /// bᵀb.
    pub btb: f64,
    /// Number of observations (rows of A).
    pub observations: usize,
}

impl NormalEquations {
    /// Empty equations for `n` unknowns, to be filled by [`Self::add_row`].
    pub fn new(n: usize) -> Self {
        NormalEquations {
            n,
            gram: vec![0.0; n * n],
            atb: vec![0.0; n],
            btb: 0.0,
            observations: 0,
        }
    }

    /// Adds one observation given sparsely as `(column, value)` pairs
    /// (columns must be distinct and `< n`).
    pub fn add_sparse_row(&mut self, row: &[(usize, f64)], b: f64) {
        for &(i, vi) in row {
            self.atb[i] += vi * b;
            for &(j, vj) in row {
                self.gram[i * self.n + j] += vi * vj;
            }
        }
        self.btb += b * b;
        self.observations += 1;
    }

    /// Adds one dense observation.
    pub fn add_row(&mut self, row: &[f64], b: f64) {
        let sparse: Vec<(usize, f64)> = row
            .iter()
            .copied()
            .enumerate()
            .filter(|&(_, v)| v != 0.0)
            .collect();
        self.add_sparse_row(&sparse, b);
    }
}

/// Result of [`nnls`] / [`nnls_normal`].
#[derive(Debug, Clone, PartialEq)]
pub struct NnlsSolution {
    /// The solution, `x ≥ 0`.
    pub x: Vec<f64>,
    /// Columns in the final passive set (free, strictly positive).
    pub passive: Vec<bool>,
    /// Columns left out: all-zero, or linearly dependent on the passive set.
    pub dependent: Vec<bool>,
    /// Residual sum of squares ‖A x − b‖², from the normal equations (may
    /// lose digits to cancellation when the fit is nearly exact).
    pub rss: f64,
    /// Outer iterations used.
    pub iterations: usize,
}

/// Smallest Cholesky pivot (of the unit-norm-scaled Gram matrix) accepted:
/// below it the new column is, to ~5 digits, a combination of the others.
const MIN_PIVOT: f64 = 1e-10;

/// In-place Cholesky of the symmetric `k × k` matrix `m` (row-major, lower
/// triangle used). Returns false if a pivot falls below [`MIN_PIVOT`].
fn cholesky(m: &mut [f64], k: usize) -> bool {
    for j in 0..k {
        let mut d = m[j * k + j];
        for p in 0..j {
            d -= m[j * k + p] * m[j * k + p];
        }
        if d <= MIN_PIVOT {
            return false;
        }
        let d = d.sqrt();
        m[j * k + j] = d;
        for i in j + 1..k {
            let mut s = m[i * k + j];
            for p in 0..j {
                s -= m[i * k + p] * m[j * k + p];
            }
            m[i * k + j] = s / d;
        }
    }
    true
}

/// Solves L Lᵀ z = r for a factor from [`cholesky`].
fn cholesky_solve(l: &[f64], k: usize, r: &[f64]) -> Vec<f64> {
    let mut y = vec![0.0; k];
    for i in 0..k {
        let mut s = r[i];
        for p in 0..i {
            s -= l[i * k + p] * y[p];
        }
        y[i] = s / l[i * k + i];
    }
    for i in (0..k).rev() {
        let mut s = y[i];
        for p in i + 1..k {
            s -= l[p * k + i] * y[p];
        }
        y[i] = s / l[i * k + i];
    }
    y
}

/// The submatrix of `gram` (n × n) on `set`, row-major.
fn submatrix(gram: &[f64], n: usize, set: &[usize]) -> Vec<f64> {
    let k = set.len();
    let mut m = vec![0.0; k * k];
    for (a, &i) in set.iter().enumerate() {
        for (b, &j) in set.iter().enumerate() {
            m[a * k + b] = gram[i * n + j];
        }
    }
    m
}

/// `(Gram_SS)⁻¹` for the columns in `set`, or `None` if that submatrix is
/// not positive definite (to the solver's pivot tolerance). Row-major
/// `|set| × |set|`, in the original (unscaled) units.
pub fn inverse_on(gram: &[f64], n: usize, set: &[usize]) -> Option<Vec<f64>> {
    let k = set.len();
    let scale: Vec<f64> = set.iter().map(|&i| gram[i * n + i].sqrt()).collect();
    if scale.iter().any(|&s| s <= 0.0 || !s.is_finite()) {
        return None;
    }
    let mut m = submatrix(gram, n, set);
    for a in 0..k {
        for b in 0..k {
            m[a * k + b] /= scale[a] * scale[b];
        }
    }
    if !cholesky(&mut m, k) {
        return None;
    }
    let mut inv = vec![0.0; k * k];
    let mut e = vec![0.0; k];
    for c in 0..k {
        e.iter_mut().for_each(|v| *v = 0.0);
        e[c] = 1.0;
        let col = cholesky_solve(&m, k, &e);
        for r in 0..k {
            inv[r * k + c] = col[r] / (scale[r] * scale[c]);
        }
    }
    Some(inv)
}

/// NNLS from the normal equations (see the module doc).
pub fn nnls_normal(eq: &NormalEquations) -> Result<NnlsSolution, NnlsError> {
    let n = eq.n;
    if eq.gram.len() != n * n || eq.atb.len() != n {
        return Err(NnlsError::Dimensions(format!(
            "gram has {} values and atb {} for n = {n}",
            eq.gram.len(),
            eq.atb.len()
        )));
    }
    if eq.gram.iter().any(|v| !v.is_finite()) {
        return Err(NnlsError::NonFinite("AᵀA"));
    }
    if eq.atb.iter().any(|v| !v.is_finite()) || !eq.btb.is_finite() {
        return Err(NnlsError::NonFinite("Aᵀb"));
    }
    // Unit-norm column scaling: x = D⁻¹ x', G' = D⁻¹ G D⁻¹, h' = D⁻¹ h.
    let scale: Vec<f64> = (0..n).map(|i| eq.gram[i * n + i].max(0.0).sqrt()).collect();
    let mut dependent: Vec<bool> = scale.iter().map(|&s| s == 0.0).collect();
    let mut g = vec![0.0; n * n];
    let mut h = vec![0.0; n];
    for i in 0..n {
        if dependent[i] {
            continue;
        }
        h[i] = eq.atb[i] / scale[i];
        for j in 0..n {
            if !dependent[j] {
                g[i * n + j] = eq.gram[i * n + j] / (scale[i] * scale[j]);
            }
        }
    }
    // Gradient tolerance: w_j = a'_jᵀ r with ‖a'_j‖ = 1, so |w_j| ≤ ‖r‖ ≤ ‖b‖.
    let tol = 1e-11 * eq.btb.sqrt().max(f64::MIN_POSITIVE);
    let mut x = vec![0.0; n];
    let mut passive = vec![false; n];
    let gradient = |x: &[f64], g: &[f64], h: &[f64]| -> Vec<f64> {
        (0..n)
            .map(|i| h[i] - (0..n).map(|j| g[i * n + j] * x[j]).sum::<f64>())
            .collect()
    };
    let max_iterations = 3 * n + 10;
    let mut iterations = 0;
    let mut w = gradient(&x, &g, &h);
    while iterations < max_iterations {
        let candidate = (0..n)
            .filter(|&j| !passive[j] && !dependent[j] && w[j] > tol)
            .max_by(|&a, &b| w[a].total_cmp(&w[b]));
        let Some(t) = candidate else { break };
        iterations += 1;
        passive[t] = true;
        // Inner loop: move towards the unconstrained solution on the
        // passive set, dropping variables that would turn negative.
        loop {
            let set: Vec<usize> = (0..n).filter(|&j| passive[j]).collect();
            let mut m = submatrix(&g, n, &set);
            if !cholesky(&mut m, set.len()) {
                // The column just added is (numerically) a combination of
                // the passive ones: leave it out for good.
                passive[t] = false;
                dependent[t] = true;
                break;
            }
            let rhs: Vec<f64> = set.iter().map(|&j| h[j]).collect();
            let z = cholesky_solve(&m, set.len(), &rhs);
            if z.iter().all(|&v| v > 0.0) {
                x.iter_mut().for_each(|v| *v = 0.0);
                for (a, &j) in set.iter().enumerate() {
                    x[j] = z[a];
                }
                break;
            }
            // Step from x towards z as far as feasibility allows.
            let mut alpha = f64::INFINITY;
            for (a, &j) in set.iter().enumerate() {
                if z[a] <= 0.0 {
                    let denom = x[j] - z[a];
                    if denom > 0.0 {
                        alpha = alpha.min(x[j] / denom);
                    }
                }
            }
            if !alpha.is_finite() {
                alpha = 0.0;
            }
            for (a, &j) in set.iter().enumerate() {
                x[j] += alpha * (z[a] - x[j]);
                if x[j] <= 1e-15 {
                    x[j] = 0.0;
                    passive[j] = false;
                }
            }
            if !passive.iter().any(|&p| p) {
                break;
            }
        }
        w = gradient(&x, &g, &h);
    }
    if iterations >= max_iterations {
        tracing::debug!(iterations, "NNLS stopped at the iteration limit");
    }
    // A column the loop never tried (its gradient was not positive) may
    // still be a combination of the passive ones: a duplicate of a passive
    // column has exactly zero gradient at the optimum. Its zero is then not
    // information (any split between it and its twins fits as well), so
    // mark it: callers must not publish a figure for it.
    let set: Vec<usize> = (0..n).filter(|&j| passive[j]).collect();
    for j in 0..n {
        if passive[j] || dependent[j] {
            continue;
        }
        let mut with_j = set.clone();
        with_j.push(j);
        let mut m = submatrix(&g, n, &with_j);
        if !cholesky(&mut m, with_j.len()) {
            dependent[j] = true;
        }
    }
    // Back to original units.
    let x: Vec<f64> = (0..n)
        .map(|j| if scale[j] > 0.0 { x[j] / scale[j] } else { 0.0 })
        .collect();
    let gx: Vec<f64> = (0..n)
        .map(|i| (0..n).map(|j| eq.gram[i * n + j] * x[j]).sum())
        .collect();
    let rss = (eq.btb - 2.0 * dot(&x, &eq.atb) + dot(&x, &gx)).max(0.0);
    Ok(NnlsSolution {
        x,
        passive,
        dependent,
        rss,
        iterations,
    })
}

fn dot(a: &[f64], b: &[f64]) -> f64 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

/// NNLS on a dense matrix: min ‖A x − b‖, x ≥ 0.
pub fn nnls(a: &DenseMatrix, b: &[f64]) -> Result<NnlsSolution, NnlsError> {
    if b.len() != a.rows {
        return Err(NnlsError::Dimensions(format!(
            "b has {} values for {} rows",
            b.len(),
            a.rows
        )));
    }
    if a.data.iter().any(|v| !v.is_finite()) {
        return Err(NnlsError::NonFinite("A"));
    }
    if b.iter().any(|v| !v.is_finite()) {
        return Err(NnlsError::NonFinite("b"));
    }
    let mut eq = NormalEquations::new(a.cols);
    for (i, &bi) in b.iter().enumerate() {
        eq.add_row(a.row(i), bi);
    }
    let mut sol = nnls_normal(&eq)?;
    // Recompute the residual from A itself (no cancellation).
    sol.rss = (0..a.rows)
        .map(|i| (dot(a.row(i), &sol.x) - b[i]).powi(2))
        .sum();
    Ok(sol)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: f64, b: f64, tol: f64) -> bool {
        (a - b).abs() <= tol
    }

    #[test]
    fn unconstrained_optimum_inside_the_orthant_is_returned() {
        // A = I, b = (1, 2): x = b.
        let a = DenseMatrix::from_row_major(2, 2, vec![1.0, 0.0, 0.0, 1.0]).unwrap();
        let s = nnls(&a, &[1.0, 2.0]).unwrap();
        assert!(close(s.x[0], 1.0, 1e-12) && close(s.x[1], 2.0, 1e-12));
        assert_eq!(s.passive, vec![true, true]);
        assert!(s.rss < 1e-20);
    }

    #[test]
    fn negative_component_is_clamped_hand_computed() {
        // A = I, b = (1, -1): x = (1, 0), rss = 1.
        let a = DenseMatrix::from_row_major(2, 2, vec![1.0, 0.0, 0.0, 1.0]).unwrap();
        let s = nnls(&a, &[1.0, -1.0]).unwrap();
        assert_eq!(s.x, vec![1.0, 0.0]);
        assert!(close(s.rss, 1.0, 1e-12));
        assert_eq!(s.passive, vec![true, false]);
    }

    #[test]
    fn coupled_case_hand_computed() {
        // A = [[1,1],[1,0],[0,1]], b = (2, 1, -1).
        // Unconstrained: AᵀA = [[2,1],[1,2]], Aᵀb = (3, 1) → x = (5/3, -1/3),
        // infeasible. With x2 = 0: x1 = Aᵀb_1 / 2 = 1.5; gradient for x2 is
        // a2ᵀ(b - a1 x1) = (2-1.5) + (-1) = -0.5 < 0, so (1.5, 0) is optimal.
        let a = DenseMatrix::from_row_major(3, 2, vec![1.0, 1.0, 1.0, 0.0, 0.0, 1.0]).unwrap();
        let s = nnls(&a, &[2.0, 1.0, -1.0]).unwrap();
        assert!(close(s.x[0], 1.5, 1e-12), "{:?}", s.x);
        assert_eq!(s.x[1], 0.0);
        // rss = 0.5² + 0.5² + 1² = 1.5
        assert!(close(s.rss, 1.5, 1e-12));
    }

    #[test]
    fn recovers_known_coefficients_of_a_noiseless_overdetermined_system() {
        // 40 rows, 4 columns of badly scaled regressors, x = (3, 0.5, 0, 7e3).
        let truth = [3.0, 0.5, 0.0, 7e3];
        let mut data = Vec::new();
        let mut b = Vec::new();
        for i in 0..40 {
            let f = i as f64;
            let row = [
                (f * 0.37).sin().abs() * 1e-4,
                ((f * 1.3).cos() + 1.1) * 1e-4,
                (f % 7.0) * 1e-5,
                1e-3 + (f % 3.0) * 1e-6,
            ];
            b.push(row.iter().zip(&truth).map(|(r, t)| r * t).sum());
            data.extend_from_slice(&row);
        }
        let a = DenseMatrix::from_row_major(40, 4, data).unwrap();
        let s = nnls(&a, &b).unwrap();
        for (got, want) in s.x.iter().zip(truth) {
            assert!(close(*got, want, 1e-6 * want.max(1.0)), "{:?}", s.x);
        }
    }

    #[test]
    fn duplicate_column_is_marked_dependent() {
        let a = DenseMatrix::from_row_major(3, 2, vec![1.0, 1.0, 2.0, 2.0, 3.0, 3.0]).unwrap();
        let s = nnls(&a, &[2.0, 4.0, 6.0]).unwrap();
        assert!(close(s.x[0] + s.x[1], 2.0, 1e-9));
        assert!(s.dependent.iter().any(|&d| d));
    }

    #[test]
    fn zero_column_and_bad_input() {
        let a = DenseMatrix::from_row_major(2, 2, vec![0.0, 1.0, 0.0, 1.0]).unwrap();
        let s = nnls(&a, &[1.0, 1.0]).unwrap();
        assert_eq!(s.x[0], 0.0);
        assert!(close(s.x[1], 1.0, 1e-12), "{:?}", s.x);
        assert!(s.dependent[0]);
        assert!(matches!(nnls(&a, &[1.0]), Err(NnlsError::Dimensions(_))));
        assert!(matches!(
            nnls(&a, &[f64::NAN, 1.0]),
            Err(NnlsError::NonFinite("b"))
        ));
        assert!(DenseMatrix::from_row_major(2, 2, vec![1.0]).is_err());
    }

    #[test]
    fn inverse_matches_hand_computed_two_by_two() {
        // [[2,1],[1,2]]⁻¹ = [[2,-1],[-1,2]] / 3
        let g = [2.0, 1.0, 1.0, 2.0];
        let inv = inverse_on(&g, 2, &[0, 1]).unwrap();
        let want = [2.0 / 3.0, -1.0 / 3.0, -1.0 / 3.0, 2.0 / 3.0];
        for (a, b) in inv.iter().zip(want) {
            assert!(close(*a, b, 1e-12));
        }
        assert!(inverse_on(&[1.0, 1.0, 1.0, 1.0], 2, &[0, 1]).is_none());
    }
}
