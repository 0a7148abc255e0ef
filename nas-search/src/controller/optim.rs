//! Adam on the policy's logits and the controller's EMA reward baseline,
//! both exactly as the TabNAS toy notebook runs them.

use serde::{Deserialize, Serialize};

/// Adam's constants. The notebook: betas (0.9, 0.999), eps 1e-8.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct AdamSettings {
    /// Step size.
    pub learning_rate: f64,
    /// Decay of the first moment.
    pub beta1: f64,
    /// Decay of the second moment.
    pub beta2: f64,
    /// Added to the root of the second moment.
    pub eps: f64,
}

impl AdamSettings {
    /// The notebook's Adam at this learning rate.
    pub fn with_learning_rate(learning_rate: f64) -> AdamSettings {
        AdamSettings {
            learning_rate,
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
        }
    }
}

/// Adam's moments over the flattened logits, and the number of steps
/// taken (a step the controller skips does not count, as in the notebook,
/// whose `optimizer.step()` is not reached on a rejected sample).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AdamState {
    /// First moment per logit.
    pub m: Vec<f64>,
    /// Second moment per logit.
    pub v: Vec<f64>,
    /// Steps taken.
    pub t: u64,
}

impl AdamState {
    /// Zero moments for `n` parameters.
    pub fn new(n: usize) -> AdamState {
        AdamState {
            m: vec![0.0; n],
            v: vec![0.0; n],
            t: 0,
        }
    }

    /// One step on the gradient of a loss to minimise; returns the change
    /// to add to the parameters. PyTorch's form (the notebook's):
    /// `Δ = −lr · m̂ / (√v̂ + eps)` with bias-corrected moments.
    pub fn step(&mut self, settings: &AdamSettings, grad: &[f64]) -> Vec<f64> {
        self.t += 1;
        // Exponents past i32 would only matter after 2^31 steps.
        let t = i32::try_from(self.t).unwrap_or(i32::MAX);
        let bias1 = 1.0 - settings.beta1.powi(t);
        let bias2 = 1.0 - settings.beta2.powi(t);
        grad.iter()
            .zip(self.m.iter_mut().zip(self.v.iter_mut()))
            .map(|(&g, (m, v))| {
                *m = settings.beta1 * *m + (1.0 - settings.beta1) * g;
                *v = settings.beta2 * *v + (1.0 - settings.beta2) * g * g;
                let m_hat = *m / bias1;
                let v_hat = *v / bias2;
                -settings.learning_rate * m_hat / (v_hat.sqrt() + settings.eps)
            })
            .collect()
    }
}

/// The bias-corrected exponential moving average of rewards: numerator and
/// denominator EMAs, as the notebook keeps them, so the first reward is the
/// first baseline (no pull towards 0).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EmaBaseline {
    /// Weight of the past (notebook: 0.9).
    pub momentum: f64,
    /// EMA of rewards.
    pub numerator: f64,
    /// EMA of ones.
    pub denominator: f64,
}

impl EmaBaseline {
    /// A baseline that has seen no reward.
    pub fn new(momentum: f64) -> EmaBaseline {
        EmaBaseline {
            momentum,
            numerator: 0.0,
            denominator: 0.0,
        }
    }

    /// Takes in a reward and returns the new baseline (the notebook updates
    /// the baseline with the current reward before the advantage).
    pub fn update(&mut self, reward: f64) -> f64 {
        self.numerator = self.momentum * self.numerator + (1.0 - self.momentum) * reward;
        self.denominator = self.momentum * self.denominator + 1.0 - self.momentum;
        self.numerator / self.denominator
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn adam_first_steps_by_hand() {
        let s = AdamSettings::with_learning_rate(0.1);
        let mut a = AdamState::new(2);
        // Step 1: m̂ = g, v̂ = g², so Δ = −lr · g/(|g| + eps) ≈ −lr·sign(g).
        let d = a.step(&s, &[0.5, -2.0]);
        assert!((d[0] + 0.1 * 0.5 / (0.5 + 1e-8)).abs() < 1e-15);
        assert!((d[1] - 0.1 * 2.0 / (2.0 + 1e-8)).abs() < 1e-15);
        // Step 2 with g = 0 for the first: m = 0.9·0.05 = 0.045, m̂ = 0.045/0.19;
        // v = 0.999·0.00025, v̂ = v/(1 − 0.999²).
        let d = a.step(&s, &[0.0, -2.0]);
        let m_hat = 0.045 / 0.19;
        let v_hat = 0.999 * 0.000_25 / (1.0 - 0.999f64 * 0.999);
        assert!((d[0] + 0.1 * m_hat / (v_hat.sqrt() + 1e-8)).abs() < 1e-12);
        assert_eq!(a.t, 2);
    }

    #[test]
    fn ema_baseline_is_bias_corrected() {
        let mut b = EmaBaseline::new(0.9);
        assert!((b.update(2.0) - 2.0).abs() < 1e-12);
        // (0.9·0.2 + 0.1·1) / (0.9·0.1 + 0.1) = 0.28 / 0.19.
        assert!((b.update(1.0) - 0.28 / 0.19).abs() < 1e-12);
    }
}
