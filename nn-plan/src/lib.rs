//! nn-plan: what a network *is*, without any of its numbers.
//!
//! The bottom of the ML half of the workspace. The trainer (`tabular-nn`)
//! builds and runs networks from these descriptions; the energy model
//! (`energy-model`) prices them; neither knows the other. Both read the
//! same kernel plan, so what is priced is what is recorded.
//!
//! - [`kernel`]: the kernel kinds the trainer records as spans
//!   ([`KernelKind`]), the shape of one call ([`KernelShape`]: a GEMM, a
//!   row-wise kernel or an element-wise one), one planned call
//!   ([`KernelCall`]);
//! - [`spec`]: the model description ([`ModelSpec`]: [`Backbone`],
//!   [`Activation`], [`Norm`], dropout), the optimizer choice
//!   ([`OptimizerKind`]) and the shape-only [`Architecture`] every backbone
//!   expands to (the one walk of a backbone: the trainer builds its layers
//!   from it, the plan lists its kernels from it);
//! - [`plan`]: the kernels of one training step, one forward pass and a
//!   whole training run with its inference ([`RunPlan`]), for a dataset of a
//!   given [`DatasetShape`].
//!
//! Invariant: no numerics beyond the scalar definition of each activation
//! (no arrays, no weights, no I/O); the plan lists exactly the spans the
//! trainer records, in order (tabular-nn's tests check it against a real
//! run).
#![warn(missing_docs)]

pub mod kernel;
pub mod plan;
pub mod spec;

pub use kernel::{KernelCall, KernelKind, KernelShape, Pass, ShapeClass};
pub use plan::{DatasetShape, PlanError, PlannedCalls, RunPlan, RunShape};
pub use spec::{
    Activation, Architecture, Backbone, FtDropouts, LayerShape, ModelSpec, NamedLayer, Norm,
    OptimizerKind, SpecError, RELU_SURROGATE_BETA,
};
