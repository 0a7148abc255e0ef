//! splitting: splitting steepest descent over tabular-nn networks (Liu et
//! al., NeurIPS 2019) and its fast, energy-aware variant (Wang et al.,
//! ICLR 2020).
//!
//! A hidden neuron `σ(θᵀx̃)` replaced by two offspring at `θ ± ε·v`, each
//! with half the outgoing weight, leaves the network's function unchanged
//! to first order; the loss changes by `(ε²/2)·vᵀS v` with the neuron's
//! *splitting matrix* `S = E[g·σ''(h)·x̃x̃ᵀ]` (`g` the loss gradient at the
//! neuron's output, `h` its pre-activation, `x̃` its input with a 1 for the
//! bias). Splitting the neurons whose minimum eigenvalue is most negative,
//! along its eigenvector, is the steepest second-order descent on the
//! architecture.
//!
//! Map of the crate, bottom up:
//! - [`site`]: where a network can split (a linear layer, an optional
//!   BatchNorm, an activation, the linear layer reading it);
//! - [`matrices`]: per-batch terms of every site from the network's hooks,
//!   and the splitting matrices averaged over the data;
//! - [`eigen`]: the exact solver (symmetric eigendecomposition, linfa-linalg);
//! - [`rayleigh`]: the fast solver (Rayleigh-quotient RMSprop on `S·v`
//!   products);
//! - [`cost`]: the energy of one more neuron per site (calibrated energy
//!   model, or a labelled FLOPs fallback);
//! - [`select`]: which neurons split (plain quantile, or the LP relaxation
//!   of the energy knapsack, good_lp with microlp);
//! - [`split`]: the split itself, optimizer state included.
//!
//! What is reproduced faithfully and what changed (reference code:
//! klightz/splitting and dilinwang820/fast-energy-aware-splitting):
//! - S is accumulated over the whole training split in evaluation mode
//!   (BatchNorm on running statistics, folded in as the scale `γ/√(var+ε)`
//!   on the neuron's pre-activation, dropout off), symmetrised, and its
//!   minimum eigenpair taken, as `compute_A`/`calculate_eigen` do. ReLU
//!   uses the softplus(β = 3) surrogate σ'' (`nn_plan::RELU_SURROGATE_BETA`).
//! - The fast solver's `S·v` comes from the same hooked activations as two
//!   matrix products per layer and batch instead of a dummy variable's
//!   backward pass; the product is the same. RMSprop (lr 1e-3, momentum
//!   0.9, α 0.9, lr × 0.2 every 2 epochs) on the Rayleigh quotient with
//!   `v` renormalised after every step, as the reference. The reported λ is
//!   the Rayleigh quotient of the final `v` averaged over one more pass
//!   (the reference averages λ over the last epoch's changing `v`).
//! - Energy-aware selection prices a neuron by the calibrated energy model
//!   (joules per 1000 inferences) rather than √FLOPs; one budget for all
//!   layers (the reference has two layer groups).
//! - Offspring at `θ ± ε·v` with `ε = 1e-2` and `‖v‖ = 1`, outgoing weights
//!   halved, BatchNorm parameters and statistics duplicated, as
//!   `main_split.py`.
//!
//! Invariant: the library never prints.
#![warn(missing_docs)]

pub mod cost;
pub mod eigen;
pub mod matrices;
pub mod rayleigh;
pub mod select;
pub mod site;
pub mod split;
#[cfg(test)]
mod tests;

pub use cost::{CostSource, NeuronCosts};
pub use eigen::{exact_eigenpairs, NeuronEigen};
pub use matrices::{splitting_matrices, SplittingMatrices};
pub use rayleigh::{fast_eigenpairs, RayleighConfig, RayleighSolver};
pub use select::{select_energy_aware, select_plain, Selection};
pub use site::{split_sites, SplitSite};
pub use split::{apply_splits, SplitPlan, DEFAULT_EPSILON};

/// Why splitting could not proceed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SplitError {
    /// The network's widths are inconsistent.
    #[error(transparent)]
    Widths(#[from] tabular_nn::model::layers::WidthError),
    /// The network has no layer this crate can split.
    #[error("the network has no splittable hidden layer (a linear layer, an optional batch norm, an activation, then a linear layer)")]
    NoSites,
    /// The data do not fit the network.
    #[error("the data have {got} columns; the network takes {expected}")]
    Inputs {
        /// Inputs of the network.
        expected: usize,
        /// Columns given.
        got: usize,
    },
    /// No rows to average over.
    #[error("no rows to compute splitting matrices on")]
    NoRows,
    /// A split refers to a site or neuron that does not exist, or a
    /// direction of the wrong length.
    #[error("split of {site}/{neuron}: {reason}")]
    BadSplit {
        /// Site index.
        site: usize,
        /// Neuron index.
        neuron: usize,
        /// What is wrong.
        reason: String,
    },
    /// The linear program failed.
    #[error("selection LP: {0}")]
    Lp(String),
    /// The energy model could not price a network.
    #[error("pricing {spec}: {message}")]
    Pricing {
        /// The spec being priced.
        spec: String,
        /// Cause.
        message: String,
    },
}
