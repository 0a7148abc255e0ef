//! Estimated CPU power for machines without readable RAPL (VMs, like ours):
//! a linear model of power in CPU utilisation, read from `/proc/stat`.
//!
//! Model, per CPU listed in `/proc/stat`:
//! `P = idle_w_per_core + (max_w_per_core − idle_w_per_core) × utilisation`.
//! Integrated exactly over time, the cumulative energy is
//! `E(t) = idle_w_per_core × cpus × elapsed + (max − idle) × busy CPU-seconds`,
//! which is what the source reports (a cumulative energy reading, so any
//! sampling period gives the same interval energies; the counter steps by
//! one clock tick of busy time, 10 ms at USER_HZ = 100).
//!
//! Default coefficients: 0.74 W idle and 3.5 W at full load per vCPU, the
//! averages the Cloud Carbon Footprint methodology derives from SPECpower
//! results for AWS instances (cloudcarbonfootprint.org/docs/methodology,
//! "Compute"). They are rough: every figure is labelled
//! [`Provenance::Estimated`] and is only good for relative comparisons.

use crate::procstat::{ns_per_tick, ProcStatReader};
use crate::source::{Reading, SampleError, Sampler, SourceDescriptor};
use serde::Deserialize;
use shared::source::{ReadingKind, SourceKind};
use shared::{Domain, Joules, MonotonicNs, Provenance};
use std::path::Path;

/// Configuration of the estimated CPU source (`[sources.estimated]`).
#[derive(Debug, Clone, Copy, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct EstimatedCpuConfig {
    /// Power of one idle CPU. Default 0.74 W (Cloud Carbon Footprint, AWS average).
    pub idle_w_per_core: f64,
    /// Power of one fully busy CPU. Default 3.5 W (same source).
    pub max_w_per_core: f64,
    /// Sampling period. Default 10 ms, one clock tick: finer periods add
    /// reads but no information.
    pub period_ns: u64,
}

impl Default for EstimatedCpuConfig {
    fn default() -> Self {
        Self {
            idle_w_per_core: 0.74,
            max_w_per_core: 3.5,
            period_ns: 10_000_000,
        }
    }
}

/// Utilisation-based CPU power model over `/proc/stat`.
#[derive(Debug)]
pub struct EstimatedCpuSampler {
    config: EstimatedCpuConfig,
    reader: ProcStatReader,
    /// Clock and busy time at the first reading: the origin of the energy.
    origin: Option<(MonotonicNs, u64)>,
    cpus: u32,
}

impl EstimatedCpuSampler {
    /// Opens `<proc_root>/stat` and checks it parses.
    pub fn open(
        proc_root: &Path,
        config: EstimatedCpuConfig,
    ) -> Result<Self, crate::procstat::ProcStatError> {
        let mut reader = ProcStatReader::open(proc_root)?;
        let first = reader.read()?;
        Ok(Self {
            config,
            reader,
            origin: None,
            cpus: first.cpus.max(1),
        })
    }
}

impl Sampler for EstimatedCpuSampler {
    fn descriptor(&self) -> SourceDescriptor {
        let dynamic_w = (self.config.max_w_per_core - self.config.idle_w_per_core).max(0.0);
        SourceDescriptor {
            name: format!("estimated-cpu ({} cpus)", self.cpus),
            domain: Domain::Cpu,
            kind: SourceKind::EstimatedCpu,
            provenance: Provenance::Estimated,
            reading: ReadingKind::CumulativeEnergy,
            // One tick of busy time at the dynamic power.
            resolution_j: dynamic_w * ns_per_tick() as f64 * 1e-9,
            update_period_ns: ns_per_tick(),
            default_period_ns: self.config.period_ns,
        }
    }

    fn sample(&mut self) -> Result<Reading, SampleError> {
        let now = MonotonicNs::now();
        let cpu = self
            .reader
            .read()
            .map_err(|e| SampleError::Retry(e.to_string()))?;
        let (t0, busy0) = *self.origin.get_or_insert((now, cpu.busy_ns));
        let elapsed_s = now.saturating_sub(t0) as f64 * 1e-9;
        let busy_s = cpu.busy_ns.saturating_sub(busy0) as f64 * 1e-9;
        let idle_w = self.config.idle_w_per_core.max(0.0);
        let dynamic_w = (self.config.max_w_per_core - idle_w).max(0.0);
        Ok(Reading::Energy(Joules(
            idle_w * self.cpus as f64 * elapsed_s + dynamic_w * busy_s,
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn idle_fixture_costs_idle_power_and_busy_adds_dynamic_power() {
        let dir = tempfile::tempdir().unwrap();
        let stat = |busy: u64| {
            format!("cpu  {busy} 0 0 1000 0 0 0 0 0 0\ncpu0 {busy} 0 0 500 0 0 0 0 0 0\ncpu1 0 0 0 500 0 0 0 0 0 0\nctxt 0\nbtime 0\nprocesses 0\n")
        };
        std::fs::write(dir.path().join("stat"), stat(0)).unwrap();
        let cfg = EstimatedCpuConfig {
            idle_w_per_core: 1.0,
            max_w_per_core: 3.0,
            period_ns: 10_000_000,
        };
        let mut s = EstimatedCpuSampler::open(dir.path(), cfg).unwrap();
        assert_eq!(s.descriptor().provenance, Provenance::Estimated);
        let t0 = MonotonicNs::now();
        assert_eq!(s.sample().unwrap(), Reading::Energy(Joules(0.0)));
        // 100 busy ticks = 1 CPU-second at USER_HZ 100.
        std::fs::write(dir.path().join("stat"), stat(procfs::ticks_per_second())).unwrap();
        std::thread::sleep(std::time::Duration::from_millis(50));
        let Reading::Energy(Joules(e)) = s.sample().unwrap() else {
            panic!("energy expected")
        };
        let elapsed_s = MonotonicNs::now().saturating_sub(t0) as f64 * 1e-9;
        // 2 cpus × 1 W × elapsed + 2 W × 1 s busy.
        assert!(
            e >= 2.0 + 2.0 * 0.05 - 1e-6 && e <= 2.0 + 2.0 * elapsed_s + 1e-6,
            "{e}"
        );
    }
}
