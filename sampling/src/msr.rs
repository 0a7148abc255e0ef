//! RAPL through the MSR device (`/dev/cpu/N/msr`, root configurable): the
//! energy-status registers, scaled by the energy unit from the power-unit
//! register.
//!
//! Registers (address = file offset; each read is an 8-byte little-endian
//! `pread` at that offset, exactly what the `msr` driver serves):
//! - Intel: unit `MSR_RAPL_POWER_UNIT` 0x606; package 0x611, PP0 (core)
//!   0x639, PP1 (uncore) 0x641, DRAM 0x619, psys 0x64D (platform-wide, read
//!   once, on the first package).
//! - AMD (family 17h+): unit 0xC0010299; core 0xC001029A (one per physical
//!   core: we sum the cores of each package), package 0xC001029B.
//!
//! The energy unit is 1/2^ESU joules, ESU = bits 12:8 of the unit register.
//! (Some Intel server parts count DRAM in a fixed 15.3 µJ unit instead; the
//! perf path knows this, this one does not: prefer perf there.)
//!
//! Status registers are 32 bits wide: at 61 µJ per unit they wrap after
//! 262 kJ (22 minutes at 200 W), at AMD's 15.3 µJ after 65.5 kJ (3.6
//! minutes at 300 W). Every register gets its own [`WrappingCounter`], and
//! [`Sampler::counter_range_j`] lets the engine keep the period well below
//! half a wrap (see [`crate::counter`]).
//!
//! Vendor detection: the AMD unit register is tried first; on Intel it
//! does not exist (EIO), so Intel is assumed. A register that is absent
//! (EIO, short read) or reads exactly 0 at discovery is not a domain of this
//! machine (a live energy counter is never 0; servers report a dead PP1 as
//! 0).

use crate::counter::WrappingCounter;
use crate::discovery::SourceProblem;
use crate::source::{Reading, SampleError, Sampler, SourceDescriptor};
use shared::source::{ReadingKind, SourceKind};
use shared::{Domain, Joules, Provenance};
use std::collections::BTreeMap;
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Intel `MSR_RAPL_POWER_UNIT`.
pub const INTEL_POWER_UNIT: u64 = 0x606;
/// Intel `MSR_PKG_ENERGY_STATUS`.
pub const INTEL_PKG_ENERGY: u64 = 0x611;
/// Intel `MSR_PP0_ENERGY_STATUS` (cores).
pub const INTEL_PP0_ENERGY: u64 = 0x639;
/// Intel `MSR_PP1_ENERGY_STATUS` (uncore / integrated GPU).
pub const INTEL_PP1_ENERGY: u64 = 0x641;
/// Intel `MSR_DRAM_ENERGY_STATUS`.
pub const INTEL_DRAM_ENERGY: u64 = 0x619;
/// Intel `MSR_PLATFORM_ENERGY_STATUS` (psys).
pub const INTEL_PSYS_ENERGY: u64 = 0x64D;
/// AMD `MSR_AMD_RAPL_POWER_UNIT`.
pub const AMD_POWER_UNIT: u64 = 0xC001_0299;
/// AMD `MSR_AMD_CORE_ENERGY_STATUS` (per core).
pub const AMD_CORE_ENERGY: u64 = 0xC001_029A;
/// AMD `MSR_AMD_PKG_ENERGY_STATUS`.
pub const AMD_PKG_ENERGY: u64 = 0xC001_029B;

/// CPU vendor, as far as RAPL registers go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MsrVendor {
    /// Intel layout.
    Intel,
    /// AMD layout.
    Amd,
}

/// How register numbers map to file offsets.
///
/// The `msr` driver serves register N at offset N, 8 bytes per read, even
/// though consecutive registers are only one offset apart. A regular file
/// cannot do that: AMD's unit, core and package registers (…299, …29A,
/// …29B) would overlap. Fixture images of such layouts therefore store
/// register N at offset 8·N; everything else about the read is the same.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum MsrAddressing {
    /// Offset = register number (the real device).
    #[default]
    Device,
    /// Offset = 8 × register number (fixture images with adjacent registers).
    EightBytesPerRegister,
}

impl MsrAddressing {
    /// File offset of a register.
    pub fn offset(self, register: u64) -> u64 {
        match self {
            MsrAddressing::Device => register,
            MsrAddressing::EightBytesPerRegister => register * 8,
        }
    }
}

/// Reads one 8-byte register; `None` if absent (I/O error or short read).
pub fn read_register(file: &File, addressing: MsrAddressing, register: u64) -> Option<u64> {
    let mut buf = [0u8; 8];
    match file.read_at(&mut buf, addressing.offset(register)) {
        Ok(8) => Some(u64::from_le_bytes(buf)),
        _ => None,
    }
}

/// Energy unit in joules from the power-unit register (bits 12:8).
pub fn energy_unit_j(power_unit_register: u64) -> f64 {
    let esu = (power_unit_register >> 8) & 0x1f;
    1.0 / (1u64 << esu) as f64
}

/// One CPU's place in the topology.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct CpuPlace {
    cpu: u32,
    package: u32,
    core: u32,
}

fn read_u32(path: &Path) -> Option<u32> {
    std::fs::read_to_string(path).ok()?.trim().parse().ok()
}

/// CPUs with an msr device under `msr_root`, placed by `cpu_sysfs_root`.
fn cpus(
    msr_root: &Path,
    cpu_sysfs_root: &Path,
    problems: &mut Vec<SourceProblem>,
) -> Vec<CpuPlace> {
    let mut list = Vec::new();
    let Ok(entries) = std::fs::read_dir(msr_root) else {
        problems.push(SourceProblem {
            what: "rapl-msr".to_string(),
            why: format!(
                "cannot list {} (is the msr module loaded?)",
                msr_root.display()
            ),
        });
        return list;
    };
    for e in entries.flatten() {
        let Some(cpu) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
            continue;
        };
        let topo = cpu_sysfs_root.join(format!("cpu{cpu}")).join("topology");
        let package = read_u32(&topo.join("physical_package_id"));
        let core = read_u32(&topo.join("core_id"));
        if package.is_none() {
            problems.push(SourceProblem {
                what: format!("cpu{cpu}"),
                why: format!("no topology in {}; assuming package 0", topo.display()),
            });
        }
        list.push(CpuPlace {
            cpu,
            package: package.unwrap_or(0),
            core: core.unwrap_or(cpu),
        });
    }
    list.sort_by_key(|c| c.cpu);
    list
}

/// One register on one CPU, with its own wrap correction.
#[derive(Debug)]
struct RegisterCounter {
    file: Arc<File>,
    addressing: MsrAddressing,
    register: u64,
    counter: WrappingCounter,
}

/// A RAPL domain read from one or more energy-status registers (several
/// for AMD per-core energy summed over a package).
#[derive(Debug)]
pub struct MsrSampler {
    name: String,
    domain: Domain,
    unit_j: f64,
    registers: Vec<RegisterCounter>,
    path: PathBuf,
}

impl MsrSampler {
    /// The energy unit in joules.
    pub fn unit_j(&self) -> f64 {
        self.unit_j
    }
}

impl Sampler for MsrSampler {
    fn descriptor(&self) -> SourceDescriptor {
        SourceDescriptor {
            name: self.name.clone(),
            domain: self.domain.clone(),
            kind: SourceKind::RaplMsr,
            provenance: Provenance::Measured,
            reading: ReadingKind::CumulativeEnergy,
            resolution_j: self.unit_j,
            update_period_ns: crate::powercap::RAPL_UPDATE_PERIOD_NS,
            default_period_ns: 1_000_000,
        }
    }

    fn sample(&mut self) -> Result<Reading, SampleError> {
        let mut total_units: u128 = 0;
        for r in &mut self.registers {
            let raw = read_register(&r.file, r.addressing, r.register).ok_or_else(|| {
                SampleError::Retry(format!(
                    "cannot read MSR {:#x} from {}",
                    r.register,
                    self.path.display()
                ))
            })?;
            // Status registers hold the count in bits 31:0.
            r.counter
                .update(raw & 0xffff_ffff)
                .map_err(|e| SampleError::Retry(e.to_string()))?;
            total_units += r.counter.total();
        }
        Ok(Reading::Energy(Joules(total_units as f64 * self.unit_j)))
    }

    fn wraps(&self) -> u64 {
        self.registers.iter().map(|r| r.counter.wraps()).sum()
    }

    fn counter_range_j(&self) -> Option<f64> {
        // Each 32-bit register wraps on its own; a sum of several is read
        // as often as one.
        Some(4_294_967_296.0 * self.unit_j)
    }
}

fn open_counter(
    file: &Arc<File>,
    addressing: MsrAddressing,
    register: u64,
) -> Option<RegisterCounter> {
    let raw = read_register(file, addressing, register)? & 0xffff_ffff;
    if raw == 0 {
        return None;
    }
    let mut counter = WrappingCounter::new(u32::MAX as u64);
    counter.update(raw).ok()?;
    Some(RegisterCounter {
        file: Arc::clone(file),
        addressing,
        register,
        counter,
    })
}

/// Opens the RAPL domains of every package through the MSR device.
pub fn open_all(msr_root: &Path, cpu_sysfs_root: &Path) -> (Vec<MsrSampler>, Vec<SourceProblem>) {
    open_all_with(msr_root, cpu_sysfs_root, MsrAddressing::Device)
}

/// [`open_all`] with an explicit register addressing (fixture images).
pub fn open_all_with(
    msr_root: &Path,
    cpu_sysfs_root: &Path,
    addressing: MsrAddressing,
) -> (Vec<MsrSampler>, Vec<SourceProblem>) {
    let mut problems = Vec::new();
    let mut samplers = Vec::new();
    let places = cpus(msr_root, cpu_sysfs_root, &mut problems);
    // Open each CPU's device once; keep the error for the report.
    let mut files: BTreeMap<u32, Arc<File>> = BTreeMap::new();
    for p in &places {
        let path = msr_root.join(p.cpu.to_string()).join("msr");
        match File::open(&path) {
            Ok(f) => {
                files.insert(p.cpu, Arc::new(f));
            }
            Err(e) => problems.push(SourceProblem {
                what: format!("cpu{}", p.cpu),
                why: format!("cannot open {}: {e}", path.display()),
            }),
        }
    }
    let mut packages: BTreeMap<u32, Vec<CpuPlace>> = BTreeMap::new();
    for p in places.iter().filter(|p| files.contains_key(&p.cpu)) {
        packages.entry(p.package).or_default().push(*p);
    }
    let mut psys_done = false;
    for (package, members) in packages {
        let first = members[0];
        let file = &files[&first.cpu];
        let path = msr_root.join(first.cpu.to_string()).join("msr");
        let (vendor, unit_reg) = match read_register(file, addressing, AMD_POWER_UNIT) {
            Some(u) => (MsrVendor::Amd, u),
            None => match read_register(file, addressing, INTEL_POWER_UNIT) {
                Some(u) => (MsrVendor::Intel, u),
                None => {
                    problems.push(SourceProblem {
                        what: format!("package-{package}"),
                        why: format!("no RAPL power-unit register readable in {}", path.display()),
                    });
                    continue;
                }
            },
        };
        let unit_j = energy_unit_j(unit_reg);
        let mut add = |label: &str, domain: Domain, registers: Vec<RegisterCounter>| {
            if !registers.is_empty() {
                samplers.push(MsrSampler {
                    name: format!("msr cpu{} ({label})", first.cpu),
                    domain,
                    unit_j,
                    registers,
                    path: path.clone(),
                });
            }
        };
        let one = |reg| {
            open_counter(file, addressing, reg)
                .into_iter()
                .collect::<Vec<_>>()
        };
        match vendor {
            MsrVendor::Intel => {
                add(
                    &format!("package-{package}"),
                    Domain::Package { index: package },
                    one(INTEL_PKG_ENERGY),
                );
                add("core", Domain::Core { package }, one(INTEL_PP0_ENERGY));
                add("uncore", Domain::Uncore { package }, one(INTEL_PP1_ENERGY));
                add("dram", Domain::Dram { package }, one(INTEL_DRAM_ENERGY));
                if !psys_done {
                    let regs = one(INTEL_PSYS_ENERGY);
                    psys_done = !regs.is_empty();
                    add("psys", Domain::Psys, regs);
                }
            }
            MsrVendor::Amd => {
                add(
                    &format!("package-{package}"),
                    Domain::Package { index: package },
                    one(AMD_PKG_ENERGY),
                );
                // One CPU per physical core: SMT siblings share the register.
                let mut seen_cores = std::collections::BTreeSet::new();
                let cores: Vec<RegisterCounter> = members
                    .iter()
                    .filter(|m| seen_cores.insert(m.core))
                    .filter_map(|m| open_counter(&files[&m.cpu], addressing, AMD_CORE_ENERGY))
                    .collect();
                add("core", Domain::Core { package }, cores);
            }
        }
    }
    (samplers, problems)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn energy_unit_from_esu_bits() {
        // 0xA0E03: ESU = 0xE = 14 -> 61.035 µJ (a common Intel value).
        assert!((energy_unit_j(0x000A_0E03) - 1.0 / 16384.0).abs() < 1e-15);
        // AMD Zen: 0x000A1003, ESU = 16 -> 15.26 µJ.
        assert!((energy_unit_j(0x000A_1003) - 1.0 / 65536.0).abs() < 1e-15);
    }
}
