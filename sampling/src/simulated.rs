//! A simulated source following a configured power curve (constant, sine or
//! steps). For tests, demos and benchmarks on machines without energy
//! counters; every figure it produces is labelled [`Provenance::Simulated`].
//!
//! The source reports cumulative energy computed in closed form from the
//! curve, so the expected energy of any interval is known exactly and tests
//! can compare against it.

use crate::source::{Reading, SampleError, Sampler, SourceDescriptor};
use serde::Deserialize;
use shared::source::{ReadingKind, SourceKind};
use shared::{Domain, Joules, MonotonicNs, Provenance};
use std::f64::consts::TAU;

/// One segment of a step curve.
#[derive(Debug, Clone, Copy, PartialEq, Deserialize)]
pub struct PowerStep {
    /// How long the segment lasts.
    pub duration_ns: u64,
    /// Power during the segment.
    pub watts: f64,
}

/// A power curve over time since the source started.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(tag = "shape", rename_all = "snake_case", deny_unknown_fields)]
pub enum PowerCurve {
    /// Constant power.
    Constant {
        /// Power.
        watts: f64,
    },
    /// `mean_w + amplitude_w * sin(2π t / period_ns)`.
    Sine {
        /// Mean power.
        mean_w: f64,
        /// Amplitude (keep it at most `mean_w`: power is not negative).
        amplitude_w: f64,
        /// Period of the oscillation.
        period_ns: u64,
    },
    /// Piecewise-constant power, repeating after the last step.
    Steps {
        /// The segments, in order.
        steps: Vec<PowerStep>,
    },
}

impl PowerCurve {
    /// Power `t_ns` after the start.
    pub fn power_at(&self, t_ns: u64) -> f64 {
        match self {
            PowerCurve::Constant { watts } => *watts,
            PowerCurve::Sine {
                mean_w,
                amplitude_w,
                period_ns,
            } => {
                let phase = (t_ns % (*period_ns).max(1)) as f64 / (*period_ns).max(1) as f64;
                mean_w + amplitude_w * (TAU * phase).sin()
            }
            PowerCurve::Steps { steps } => {
                let cycle_ns: u64 = steps.iter().map(|s| s.duration_ns).sum();
                if cycle_ns == 0 {
                    return 0.0;
                }
                let mut rest = t_ns % cycle_ns;
                for s in steps {
                    if rest < s.duration_ns {
                        return s.watts;
                    }
                    rest -= s.duration_ns;
                }
                0.0
            }
        }
    }

    /// Energy in joules from the start to `t_ns`, in closed form.
    pub fn energy_until(&self, t_ns: u64) -> f64 {
        let t_s = t_ns as f64 * 1e-9;
        match self {
            PowerCurve::Constant { watts } => watts * t_s,
            PowerCurve::Sine {
                mean_w,
                amplitude_w,
                period_ns,
            } => {
                let p_s = (*period_ns).max(1) as f64 * 1e-9;
                // ∫ sin(2πt/P) dt = P/(2π) (1 - cos(2πt/P)).
                mean_w * t_s + amplitude_w * p_s / TAU * (1.0 - (TAU * t_s / p_s).cos())
            }
            PowerCurve::Steps { steps } => {
                let cycle_ns: u64 = steps.iter().map(|s| s.duration_ns).sum();
                if cycle_ns == 0 {
                    return 0.0;
                }
                let cycle_j: f64 = steps
                    .iter()
                    .map(|s| s.watts * s.duration_ns as f64 * 1e-9)
                    .sum();
                let mut energy_j = (t_ns / cycle_ns) as f64 * cycle_j;
                let mut rest = t_ns % cycle_ns;
                for s in steps {
                    let d = rest.min(s.duration_ns);
                    energy_j += s.watts * d as f64 * 1e-9;
                    rest -= d;
                    if rest == 0 {
                        break;
                    }
                }
                energy_j
            }
        }
    }

    /// Energy in joules over `[from_ns, to_ns]` after the start.
    pub fn energy_between(&self, from_ns: u64, to_ns: u64) -> f64 {
        self.energy_until(to_ns) - self.energy_until(from_ns)
    }
}

/// What the simulated source reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SimulatedReading {
    /// A cumulative energy counter (like RAPL).
    #[default]
    Energy,
    /// Instantaneous power (like NVML power readings).
    Power,
}

/// Configuration of the simulated source (`[sources.simulated]`).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SimulatedConfig {
    /// Source name. Default `simulated`.
    pub name: String,
    /// The power curve. Default: constant 50 W.
    pub curve: PowerCurve,
    /// Sampling period. Default 1 ms (the RAPL default).
    pub period_ns: u64,
    /// What a reading is. Default cumulative energy.
    pub reading: SimulatedReading,
    /// Counter resolution. Default 1 µJ (powercap's unit).
    pub resolution_j: f64,
}

impl Default for SimulatedConfig {
    fn default() -> Self {
        Self {
            name: "simulated".to_string(),
            curve: PowerCurve::Constant { watts: 50.0 },
            period_ns: 1_000_000,
            reading: SimulatedReading::Energy,
            resolution_j: 1e-6,
        }
    }
}

/// Source following a [`PowerCurve`] from the moment it is created.
#[derive(Debug, Clone)]
pub struct SimulatedSampler {
    config: SimulatedConfig,
    start: MonotonicNs,
}

impl SimulatedSampler {
    /// Starts the curve now.
    pub fn new(config: SimulatedConfig) -> Self {
        Self::starting_at(config, MonotonicNs::now())
    }

    /// Starts the curve at `start` (tests align expectations with it).
    pub fn starting_at(config: SimulatedConfig, start: MonotonicNs) -> Self {
        Self { config, start }
    }

    /// When the curve started.
    pub fn start(&self) -> MonotonicNs {
        self.start
    }

    /// The curve followed.
    pub fn curve(&self) -> &PowerCurve {
        &self.config.curve
    }
}

impl Sampler for SimulatedSampler {
    fn descriptor(&self) -> SourceDescriptor {
        SourceDescriptor {
            name: self.config.name.clone(),
            domain: Domain::Other(self.config.name.clone()),
            kind: SourceKind::Simulated,
            provenance: Provenance::Simulated,
            reading: match self.config.reading {
                SimulatedReading::Energy => ReadingKind::CumulativeEnergy,
                SimulatedReading::Power => ReadingKind::InstantPower,
            },
            resolution_j: self.config.resolution_j,
            update_period_ns: 0,
            default_period_ns: self.config.period_ns,
        }
    }

    fn sample(&mut self) -> Result<Reading, SampleError> {
        let t_ns = MonotonicNs::now().saturating_sub(self.start);
        Ok(match self.config.reading {
            SimulatedReading::Energy => {
                let energy_j = self.config.curve.energy_until(t_ns);
                // Quantise like a real counter would.
                let res = self.config.resolution_j;
                let quantised = if res > 0.0 {
                    (energy_j / res).floor() * res
                } else {
                    energy_j
                };
                Reading::Energy(Joules(quantised))
            }
            SimulatedReading::Power => {
                Reading::Power(shared::Watts(self.config.curve.power_at(t_ns)))
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn closed_forms_match_numeric_integration() {
        let curves = [
            PowerCurve::Constant { watts: 42.0 },
            PowerCurve::Sine {
                mean_w: 40.0,
                amplitude_w: 15.0,
                period_ns: 300_000_000,
            },
            PowerCurve::Steps {
                steps: vec![
                    PowerStep {
                        duration_ns: 100_000_000,
                        watts: 10.0,
                    },
                    PowerStep {
                        duration_ns: 50_000_000,
                        watts: 80.0,
                    },
                ],
            },
        ];
        for c in &curves {
            let step_ns = 10_000u64;
            let mut numeric = 0.0;
            let mut t = 0;
            while t < 1_000_000_000 {
                numeric += c.power_at(t + step_ns / 2) * step_ns as f64 * 1e-9;
                t += step_ns;
            }
            let closed = c.energy_until(1_000_000_000);
            assert!(
                (numeric - closed).abs() < 1e-3 * closed.max(1.0),
                "{c:?}: {numeric} vs {closed}"
            );
        }
    }

    #[test]
    fn config_parses_from_toml() {
        let cfg: SimulatedConfig = toml::from_str(
            r#"
            name = "sim-gpu"
            period_ns = 20000000
            reading = "power"
            [curve]
            shape = "steps"
            steps = [{ duration_ns = 1000000000, watts = 100.0 }, { duration_ns = 500000000, watts = 300.0 }]
            "#,
        )
        .unwrap();
        assert_eq!(cfg.reading, SimulatedReading::Power);
        assert_eq!(cfg.curve.energy_until(1_500_000_000), 250.0);
        assert!(toml::from_str::<SimulatedConfig>("curve = { shape = \"triangle\" }").is_err());
    }

    #[test]
    fn energy_reading_is_monotonic_and_simulated() {
        let mut s = SimulatedSampler::new(SimulatedConfig::default());
        assert_eq!(s.descriptor().provenance, Provenance::Simulated);
        let mut last = 0.0;
        for _ in 0..100 {
            let Reading::Energy(Joules(e)) = s.sample().unwrap() else {
                panic!("energy reading expected")
            };
            assert!(e >= last);
            last = e;
        }
    }
}
