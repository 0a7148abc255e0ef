//! RAPL through the kernel's perf `power` PMU: events `energy-pkg`,
//! `energy-cores`, `energy-gpu`, `energy-ram`, `energy-psys`, one counter
//! per package on the CPU its `cpumask` names.
//!
//! Everything about the PMU is read from sysfs under a configurable root
//! (`/sys/bus/event_source/devices` by default): `power/type` (the dynamic
//! PMU type number), `power/cpumask`, `power/format/event` (which config
//! bits the event number goes in), and per event `events/<name>` (e.g.
//! `event=0x02`), `events/<name>.scale` (joules per count, e.g.
//! `2.3283064365386962890625e-10`) and `events/<name>.unit` (`Joules`).
//!
//! The kernel extends the 32-bit hardware counter to 64 bits, so the
//! [`WrappingCounter`] here has a 64-bit range; it is still the one place
//! that would correct a wrap.

use crate::counter::WrappingCounter;
use crate::discovery::SourceProblem;
use crate::source::{Reading, SampleError, Sampler, SourceDescriptor};
use perf_event::events::Raw;
use perf_event::{Builder, Counter};
use shared::source::{ReadingKind, SourceKind};
use shared::{Domain, Joules, Provenance};
use std::path::Path;

/// One event of the `power` PMU.
#[derive(Debug, Clone, PartialEq)]
pub struct PowerEvent {
    /// Event name, e.g. `energy-pkg`.
    pub name: String,
    /// `perf_event_attr.config` value.
    pub config: u64,
    /// Joules per count.
    pub scale: f64,
    /// Unit string (`Joules`).
    pub unit: String,
}

/// The `power` PMU as described in sysfs.
#[derive(Debug, Clone, PartialEq)]
pub struct PowerPmu {
    /// `perf_event_attr.type` of the PMU.
    pub pmu_type: u32,
    /// CPUs to open counters on, one per package, in package order.
    pub cpus: Vec<u32>,
    /// Energy events, sorted by name.
    pub events: Vec<PowerEvent>,
}

fn read_trimmed(path: &Path) -> Result<String, String> {
    std::fs::read_to_string(path)
        .map(|s| s.trim().to_string())
        .map_err(|e| format!("cannot read {}: {e}", path.display()))
}

/// Parses a CPU list like `0`, `0,28` or `0-3,8`.
pub fn parse_cpu_list(text: &str) -> Result<Vec<u32>, String> {
    let mut cpus = Vec::new();
    for part in text.trim().split(',').filter(|p| !p.is_empty()) {
        let bad = || format!("bad cpu list {text:?}");
        match part.split_once('-') {
            Some((a, b)) => {
                let (a, b): (u32, u32) =
                    (a.parse().map_err(|_| bad())?, b.parse().map_err(|_| bad())?);
                if b < a {
                    return Err(bad());
                }
                cpus.extend(a..=b);
            }
            None => cpus.push(part.parse().map_err(|_| bad())?),
        }
    }
    Ok(cpus)
}

/// Parses an event definition like `event=0x02` into a config value,
/// placing it at the lowest bit of `format/event` (`config:0-7`).
fn parse_event_config(text: &str, event_shift: u32) -> Result<u64, String> {
    for term in text.trim().split(',') {
        if let Some(v) = term.trim().strip_prefix("event=") {
            let value = match v.strip_prefix("0x") {
                Some(hex) => u64::from_str_radix(hex, 16),
                None => v.parse(),
            }
            .map_err(|_| format!("bad event value in {text:?}"))?;
            return Ok(value << event_shift);
        }
    }
    Err(format!("no event= term in {text:?}"))
}

/// Reads the `power` PMU description under `event_source_root`.
pub fn read_power_pmu(event_source_root: &Path) -> Result<PowerPmu, String> {
    let dir = event_source_root.join("power");
    if !dir.is_dir() {
        return Err(format!(
            "no perf power PMU ({} missing: kernel without RAPL perf support, or a VM)",
            dir.display()
        ));
    }
    let pmu_type: u32 = read_trimmed(&dir.join("type"))?
        .parse()
        .map_err(|e| format!("bad {}: {e}", dir.join("type").display()))?;
    let cpus = parse_cpu_list(&read_trimmed(&dir.join("cpumask"))?)?;
    // `config:0-7` -> shift 0. Missing format: the event number is config itself.
    let event_shift = read_trimmed(&dir.join("format").join("event"))
        .ok()
        .and_then(|f| {
            f.strip_prefix("config:")
                .and_then(|r| r.split('-').next())
                .and_then(|s| s.parse().ok())
        })
        .unwrap_or(0);
    let mut events = Vec::new();
    let entries = std::fs::read_dir(dir.join("events"))
        .map_err(|e| format!("cannot list {}/events: {e}", dir.display()))?;
    for e in entries.flatten() {
        let Some(name) = e.file_name().to_str().map(str::to_string) else {
            continue;
        };
        if !name.starts_with("energy-") || name.contains('.') {
            continue;
        }
        let base = dir.join("events");
        let config = parse_event_config(&read_trimmed(&base.join(&name))?, event_shift)?;
        let scale: f64 = read_trimmed(&base.join(format!("{name}.scale")))?
            .parse()
            .map_err(|e| format!("bad scale for {name}: {e}"))?;
        let unit = read_trimmed(&base.join(format!("{name}.unit")))
            .unwrap_or_else(|_| "Joules".to_string());
        events.push(PowerEvent {
            name,
            config,
            scale,
            unit,
        });
    }
    events.sort_by(|a, b| a.name.cmp(&b.name));
    if events.is_empty() {
        return Err(format!("{} lists no energy events", dir.display()));
    }
    Ok(PowerPmu {
        pmu_type,
        cpus,
        events,
    })
}

fn domain_for(event: &str, package: u32) -> Domain {
    match event {
        "energy-pkg" => Domain::Package { index: package },
        "energy-cores" => Domain::Core { package },
        "energy-gpu" => Domain::Uncore { package },
        "energy-ram" => Domain::Dram { package },
        "energy-psys" => Domain::Psys,
        other => Domain::Other(format!("{other}-{package}")),
    }
}

/// One `power` PMU event on one package.
#[derive(Debug)]
pub struct PerfRaplSampler {
    name: String,
    domain: Domain,
    scale: f64,
    counter: Counter,
    wrapping: WrappingCounter,
}

impl PerfRaplSampler {
    /// Opens `event` on `cpu` (CPU-wide, any process).
    pub fn open(
        pmu: &PowerPmu,
        event: &PowerEvent,
        cpu: u32,
        package: u32,
    ) -> Result<Self, String> {
        let mut builder = Builder::new(Raw::new(event.config));
        builder.attrs_mut().type_ = pmu.pmu_type;
        // The power PMU refuses exclusion filters: count everything.
        builder
            .any_pid()
            .one_cpu(cpu as usize)
            .include_kernel()
            .include_hv();
        let mut counter = builder
            .build()
            .map_err(|e| format!("cannot open perf {} on cpu{cpu}: {e}", event.name))?;
        counter
            .enable()
            .map_err(|e| format!("cannot enable perf {} on cpu{cpu}: {e}", event.name))?;
        let mut wrapping = WrappingCounter::new(u64::MAX);
        let first = counter
            .read()
            .map_err(|e| format!("cannot read perf {} on cpu{cpu}: {e}", event.name))?;
        wrapping.update(first).map_err(|e| e.to_string())?;
        Ok(Self {
            name: format!("perf {} (cpu{cpu})", event.name),
            domain: domain_for(&event.name, package),
            scale: event.scale,
            counter,
            wrapping,
        })
    }
}

impl Sampler for PerfRaplSampler {
    fn descriptor(&self) -> SourceDescriptor {
        SourceDescriptor {
            name: self.name.clone(),
            domain: self.domain.clone(),
            kind: SourceKind::RaplPerf,
            provenance: Provenance::Measured,
            reading: ReadingKind::CumulativeEnergy,
            // The kernel scales 2^-32 J counts, but the hardware still
            // steps in RAPL units.
            resolution_j: crate::powercap::TYPICAL_RAPL_UNIT_J,
            update_period_ns: crate::powercap::RAPL_UPDATE_PERIOD_NS,
            default_period_ns: 1_000_000,
        }
    }

    fn sample(&mut self) -> Result<Reading, SampleError> {
        let raw = self
            .counter
            .read()
            .map_err(|e| SampleError::Retry(format!("{}: {e}", self.name)))?;
        self.wrapping
            .update(raw)
            .map_err(|e| SampleError::Retry(e.to_string()))?;
        Ok(Reading::Energy(Joules(
            self.wrapping.total() as f64 * self.scale,
        )))
    }

    fn wraps(&self) -> u64 {
        self.wrapping.wraps()
    }
}

/// Opens every energy event on every package; what cannot be opened is a
/// problem. psys is platform-wide and opened once.
pub fn open_all(event_source_root: &Path) -> (Vec<PerfRaplSampler>, Vec<SourceProblem>) {
    let mut samplers = Vec::new();
    let mut problems = Vec::new();
    let pmu = match read_power_pmu(event_source_root) {
        Ok(p) => p,
        Err(why) => {
            problems.push(SourceProblem {
                what: "rapl-perf".to_string(),
                why,
            });
            return (samplers, problems);
        }
    };
    for (package, &cpu) in pmu.cpus.iter().enumerate() {
        for event in &pmu.events {
            if event.name == "energy-psys" && package > 0 {
                continue;
            }
            match PerfRaplSampler::open(&pmu, event, cpu, package as u32) {
                Ok(s) => samplers.push(s),
                Err(why) => problems.push(SourceProblem {
                    what: format!("{} cpu{cpu}", event.name),
                    why,
                }),
            }
        }
    }
    (samplers, problems)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_lists_and_event_terms_parse() {
        assert_eq!(parse_cpu_list("0").unwrap(), vec![0]);
        assert_eq!(parse_cpu_list("0,28\n").unwrap(), vec![0, 28]);
        assert_eq!(parse_cpu_list("0-2,8").unwrap(), vec![0, 1, 2, 8]);
        assert!(parse_cpu_list("3-1").is_err());
        assert!(parse_cpu_list("a").is_err());
        assert_eq!(parse_event_config("event=0x02", 0).unwrap(), 2);
        assert_eq!(parse_event_config("event=3", 8).unwrap(), 3 << 8);
        assert!(parse_event_config("umask=1", 0).is_err());
    }
}
