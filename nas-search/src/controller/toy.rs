//! The TabNAS toy problem, as the official notebooks define it: a network
//! 2 → a → b → 1 with hidden widths a, b ∈ {2, 3, 4}, at most 25 parameters
//! (weights and biases), and a fixed loss table; reward = 1 − loss. 4-2
//! and 3-3 both have exactly 25 parameters; 4-2 (loss 0.6) is the best
//! feasible child, 4-4 (loss 0.1, 37 parameters) the best overall. Used by
//! the controller's tests and `examples/tabnas_toy.rs`.

use super::{Child, ControllerError, Decision};
use crate::space::ParamValue;

/// The options of both hidden layers.
pub const WIDTHS: [usize; 3] = [2, 3, 4];
/// The parameter budget.
pub const PARAMETER_BUDGET: f64 = 25.0;
/// The notebook's iteration count.
pub const STEPS: u64 = 500;
/// The best feasible child, 4-2, as option indices.
pub const BEST_FEASIBLE: [usize; 2] = [2, 0];

/// The two decisions, `width1` and `width2`.
pub fn decisions() -> Vec<Decision> {
    ["width1", "width2"]
        .iter()
        .map(|name| Decision {
            name: name.to_string(),
            choices: WIDTHS.iter().map(|&w| ParamValue::Int(w as i64)).collect(),
        })
        .collect()
}

/// Every child of the toy space.
pub fn all_children() -> Vec<Child> {
    (0..WIDTHS.len())
        .flat_map(|a| (0..WIDTHS.len()).map(move |b| Child(vec![a, b])))
        .collect()
}

/// The hidden widths (a, b) of a child of the toy space.
pub fn widths(child: &Child) -> Result<(usize, usize), ControllerError> {
    match child.0.as_slice() {
        [a, b] if *a < WIDTHS.len() && *b < WIDTHS.len() => Ok((WIDTHS[*a], WIDTHS[*b])),
        _ => Err(ControllerError::ChildShape {
            message: format!("{child:?} is not a child of the TabNAS toy space"),
        }),
    }
}

/// Parameters of 2 → a → b → 1 with biases: `3a + ab + 2b + 1`.
pub fn parameters_of(a: usize, b: usize) -> usize {
    2 * a + a + a * b + b + b + 1
}

/// A child's parameter count (its cost in the toy).
pub fn parameter_count(child: &Child) -> Result<f64, ControllerError> {
    let (a, b) = widths(child)?;
    Ok(parameters_of(a, b) as f64)
}

/// The notebook's loss table.
pub fn loss(child: &Child) -> Result<f64, ControllerError> {
    Ok(match widths(child)? {
        (2, 4) | (3, 3) => 0.66,
        (4, 2) => 0.6,
        (3, 4) | (4, 3) => 0.3,
        (4, 4) => 0.1,
        // (2, 2), (2, 3), (3, 2).
        _ => 0.9,
    })
}

/// The reward, `1 − loss`.
pub fn quality(child: &Child) -> Result<f64, ControllerError> {
    Ok(1.0 - loss(child)?)
}

/// Children within the budget.
pub fn feasible_children() -> Vec<Child> {
    all_children()
        .into_iter()
        .filter(|z| parameter_count(z).is_ok_and(|p| p <= PARAMETER_BUDGET))
        .collect()
}
