//! Start-up discovery: turns the `[sources]` section of the daemon's
//! configuration into opened sources, and reports every zone or device that
//! could not be opened as a [`SourceProblem`] instead of failing.
//!
//! RAPL path choice with `rapl = "auto"` (cheapest available first):
//! 1. `perf` — the kernel `power` PMU: one `read()` of a binary 64-bit
//!    value per domain, already wrap-extended and scaled by the kernel
//!    (which also knows per-domain unit quirks such as the fixed DRAM unit
//!    of server parts). Needs CAP_PERFMON or `perf_event_paranoid <= 0`.
//! 2. `msr` — `/dev/cpu/N/msr`: one `pread` of a binary register, but a raw
//!    32-bit counter that we wrap-correct and scale ourselves. Needs root and
//!    the `msr` module.
//! 3. `powercap` — `/sys/class/powercap`: the most widely available, but
//!    each read formats and parses decimal text through sysfs, the slowest
//!    of the three per sample.
//!
//! When no RAPL path yields a source, the estimated CPU source is used
//! (provenance Estimated). The simulated source is added whenever it is
//! configured.

use crate::engine::ConfiguredSource;
use crate::estimated::{EstimatedCpuConfig, EstimatedCpuSampler};
use crate::nvml::{self, GpuProvider, NvmlProvider};
use crate::simulated::{SimulatedConfig, SimulatedSampler};
use crate::source::Sampler;
use crate::{msr, perf_rapl, powercap};
use serde::Deserialize;
use std::path::PathBuf;
use std::sync::Arc;

/// Which RAPL access path to use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RaplPath {
    /// The cheapest available: perf, then msr, then powercap.
    #[default]
    Auto,
    /// `/sys/class/powercap` only.
    Powercap,
    /// `/dev/cpu/N/msr` only.
    Msr,
    /// The perf `power` PMU only.
    Perf,
    /// No RAPL.
    Off,
}

/// The `[sources]` section of the daemon's configuration.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SourcesConfig {
    /// Powercap class directory. Default `/sys/class/powercap`.
    pub powercap_root: PathBuf,
    /// MSR device directory. Default `/dev/cpu`.
    pub msr_root: PathBuf,
    /// CPU topology directory (package of each CPU, for the MSR path).
    /// Default `/sys/devices/system/cpu`.
    pub cpu_sysfs_root: PathBuf,
    /// perf event-source directory (holding `power/`). Default
    /// `/sys/bus/event_source/devices`.
    pub perf_event_source_root: PathBuf,
    /// procfs mount (for the estimated source). Default `/proc`.
    pub proc_root: PathBuf,
    /// RAPL access path. Default auto.
    pub rapl: RaplPath,
    /// RAPL sampling period. Default 1 ms (RAPL refreshes about every 1 ms).
    pub rapl_period_ns: u64,
    /// Open NVIDIA GPUs through NVML. Default true.
    pub nvml: bool,
    /// NVML sampling period; 0 (default) means each GPU's own sensor
    /// update period (20–100 ms by model).
    pub nvml_period_ns: u64,
    /// Estimated CPU source, used when no RAPL source is readable.
    pub estimated: EstimatedCpuConfig,
    /// A simulated source, added when present.
    pub simulated: Option<SimulatedConfig>,
}

impl Default for SourcesConfig {
    fn default() -> Self {
        Self {
            powercap_root: PathBuf::from("/sys/class/powercap"),
            msr_root: PathBuf::from("/dev/cpu"),
            cpu_sysfs_root: PathBuf::from("/sys/devices/system/cpu"),
            perf_event_source_root: PathBuf::from("/sys/bus/event_source/devices"),
            proc_root: PathBuf::from("/proc"),
            rapl: RaplPath::Auto,
            rapl_period_ns: 1_000_000,
            nvml: true,
            nvml_period_ns: 0,
            estimated: EstimatedCpuConfig::default(),
            simulated: None,
        }
    }
}

/// A zone or device that could not be opened, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourceProblem {
    /// What: a zone, device or path, e.g. `intel-rapl:1` or `nvml`.
    pub what: String,
    /// Why, e.g. `permission denied reading .../energy_uj`.
    pub why: String,
}

impl std::fmt::Display for SourceProblem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.what, self.why)
    }
}

/// The result of discovery.
#[derive(Default)]
pub struct Discovery {
    /// Opened sources with their periods, in a stable order (RAPL, GPUs,
    /// estimated, simulated).
    pub sources: Vec<ConfiguredSource>,
    /// What could not be opened.
    pub problems: Vec<SourceProblem>,
    /// The RAPL path in use (`perf`, `msr`, `powercap`), if any.
    pub rapl_path_in_use: Option<String>,
    /// The GPU provider the GPU sources read, when NVML loaded: the daemon
    /// also asks it for per-process GPU utilisation.
    pub gpu_provider: Option<Arc<dyn GpuProvider>>,
}

impl std::fmt::Debug for Discovery {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Discovery")
            .field("sources", &self.sources.len())
            .field("problems", &self.problems)
            .field("rapl_path_in_use", &self.rapl_path_in_use)
            .field("gpu_provider", &self.gpu_provider.is_some())
            .finish()
    }
}

fn push(sources: &mut Vec<ConfiguredSource>, sampler: Box<dyn Sampler>, period_ns: u64) {
    let period_ns = if period_ns == 0 {
        sampler.descriptor().default_period_ns.max(1)
    } else {
        period_ns
    };
    sources.push(ConfiguredSource { sampler, period_ns });
}

/// Opens every configured source that is available; NVML is loaded from
/// the system library when `config.nvml` is on.
pub fn discover(config: &SourcesConfig) -> Discovery {
    let gpus = if config.nvml {
        Some(NvmlProvider::init().map(|p| Arc::new(p) as Arc<dyn GpuProvider>))
    } else {
        None
    };
    discover_with_gpus(config, gpus)
}

/// [`discover`] with the GPU provider given: `None` when NVML is off,
/// `Some(Err(why))` when it could not be loaded. Tests pass a mock.
pub fn discover_with_gpus(
    config: &SourcesConfig,
    gpus: Option<Result<Arc<dyn GpuProvider>, String>>,
) -> Discovery {
    let mut out = Discovery::default();
    discover_rapl(config, &mut out);
    let have_rapl = !out.sources.is_empty();
    match gpus {
        None => {}
        Some(Err(why)) => out.problems.push(SourceProblem {
            what: "nvml".to_string(),
            why: format!("no NVML source: {why}"),
        }),
        Some(Ok(provider)) => {
            out.gpu_provider = Some(Arc::clone(&provider));
            let (samplers, problems) = nvml::open_all(provider);
            out.problems.extend(problems);
            for s in samplers {
                push(&mut out.sources, Box::new(s), config.nvml_period_ns);
            }
        }
    }
    if !have_rapl {
        match EstimatedCpuSampler::open(&config.proc_root, config.estimated) {
            Ok(s) => push(&mut out.sources, Box::new(s), config.estimated.period_ns),
            Err(e) => out.problems.push(SourceProblem {
                what: "estimated-cpu".to_string(),
                why: e.to_string(),
            }),
        }
    }
    if let Some(sim) = &config.simulated {
        let period_ns = sim.period_ns;
        push(
            &mut out.sources,
            Box::new(SimulatedSampler::new(sim.clone())),
            period_ns,
        );
    }
    for p in &out.problems {
        tracing::info!(what = %p.what, why = %p.why, "source not available");
    }
    if let Some(path) = &out.rapl_path_in_use {
        tracing::info!(path = %path, "RAPL path in use");
    }
    out
}

/// Opens the RAPL sources of one path.
fn open_rapl_path(
    config: &SourcesConfig,
    path: RaplPath,
) -> (Vec<Box<dyn Sampler>>, Vec<SourceProblem>) {
    fn boxed<S: Sampler + 'static>(
        (s, p): (Vec<S>, Vec<SourceProblem>),
    ) -> (Vec<Box<dyn Sampler>>, Vec<SourceProblem>) {
        (
            s.into_iter()
                .map(|s| Box::new(s) as Box<dyn Sampler>)
                .collect(),
            p,
        )
    }
    match path {
        RaplPath::Perf => boxed(perf_rapl::open_all(&config.perf_event_source_root)),
        RaplPath::Msr => boxed(msr::open_all(&config.msr_root, &config.cpu_sysfs_root)),
        RaplPath::Powercap => boxed(powercap::open_all(&config.powercap_root)),
        RaplPath::Auto | RaplPath::Off => (Vec::new(), Vec::new()),
    }
}

fn path_label(path: RaplPath) -> &'static str {
    match path {
        RaplPath::Perf => "perf",
        RaplPath::Msr => "msr",
        RaplPath::Powercap => "powercap",
        RaplPath::Auto => "auto",
        RaplPath::Off => "off",
    }
}

fn discover_rapl(config: &SourcesConfig, out: &mut Discovery) {
    let candidates: &[RaplPath] = match config.rapl {
        RaplPath::Off => return,
        RaplPath::Auto => &AUTO_RAPL_ORDER,
        RaplPath::Perf => &[RaplPath::Perf],
        RaplPath::Msr => &[RaplPath::Msr],
        RaplPath::Powercap => &[RaplPath::Powercap],
    };
    for &path in candidates {
        let (samplers, problems) = open_rapl_path(config, path);
        // Problems of paths tried and passed over are kept: they explain the choice.
        out.problems.extend(problems);
        if !samplers.is_empty() {
            for s in samplers {
                push(&mut out.sources, s, config.rapl_period_ns);
            }
            out.rapl_path_in_use = Some(path_label(path).to_string());
            return;
        }
    }
}

/// The order `rapl = "auto"` tries, cheapest read first (see the module doc).
pub const AUTO_RAPL_ORDER: [RaplPath; 3] = [RaplPath::Perf, RaplPath::Msr, RaplPath::Powercap];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_documented_values_and_toml_overrides_them() {
        let d = SourcesConfig::default();
        assert_eq!(d.rapl_period_ns, 1_000_000);
        assert!(d.nvml);
        let c: SourcesConfig = toml::from_str(
            r#"
            rapl = "msr"
            msr_root = "/tmp/msr"
            [estimated]
            idle_w_per_core = 1.5
            [simulated]
            curve = { shape = "constant", watts = 12.0 }
            "#,
        )
        .unwrap();
        assert_eq!(c.rapl, RaplPath::Msr);
        assert_eq!(c.msr_root, PathBuf::from("/tmp/msr"));
        assert_eq!(c.estimated.idle_w_per_core, 1.5);
        assert_eq!(c.estimated.max_w_per_core, 3.5);
        assert!(c.simulated.is_some());
        assert!(toml::from_str::<SourcesConfig>("rapl = \"fast\"").is_err());
        assert!(toml::from_str::<SourcesConfig>("unknown_key = 1").is_err());
    }
}
