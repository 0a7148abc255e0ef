//! RAPL through the powercap sysfs tree (`/sys/class/powercap`, root
//! configurable): every `intel-rapl:*` zone and subzone (package, core,
//! uncore, dram, psys) and every `intel-rapl-mmio:*` zone. AMD processors
//! expose their RAPL counters through the same `intel-rapl` tree, so they
//! need nothing special here.
//!
//! Each zone's `energy_uj` is kept open and re-read with `pread` at offset 0
//! (sysfs regenerates the text on every read from offset 0), and fed
//! through a [`WrappingCounter`] whose maximum is the zone's
//! `max_energy_range_uj`.
//!
//! Unreadable zones are reported one by one as [`SourceProblem`]s: since
//! 2020 (CVE-2020-8694) `energy_uj` is readable by root only, so an
//! unprivileged daemon sees every zone but reads none.

use crate::counter::WrappingCounter;
use crate::discovery::SourceProblem;
use crate::source::{Reading, SampleError, Sampler, SourceDescriptor};
use shared::source::{ReadingKind, SourceKind};
use shared::{Domain, Joules, Provenance};
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

/// Typical RAPL energy status unit (2⁻¹⁴ J ≈ 61 µJ). powercap reports
/// microjoules but does not expose the hardware unit behind them, so this
/// is the resolution we state for its readings.
pub const TYPICAL_RAPL_UNIT_J: f64 = 1.0 / 16384.0;

/// RAPL refreshes its energy counters about every millisecond.
pub const RAPL_UPDATE_PERIOD_NS: u64 = 1_000_000;

/// One powercap zone as found on disk.
#[derive(Debug, Clone, PartialEq)]
pub struct PowercapZone {
    /// Directory name, e.g. `intel-rapl:0:1`.
    pub zone: String,
    /// Content of its `name` file, e.g. `dram`.
    pub name: String,
    /// Its directory.
    pub path: PathBuf,
    /// The resource it measures.
    pub domain: Domain,
    /// `max_energy_range_uj`: the counter's largest value.
    pub max_energy_range_uj: u64,
}

/// Parses a zone directory name: `(mmio, package index, is subzone)`.
fn parse_zone_dir(dir: &str) -> Option<(bool, u32, bool)> {
    let (mmio, rest) = if let Some(r) = dir.strip_prefix("intel-rapl-mmio:") {
        (true, r)
    } else if let Some(r) = dir.strip_prefix("intel-rapl:") {
        (false, r)
    } else {
        return None;
    };
    let parts: Vec<&str> = rest.split(':').collect();
    if parts.is_empty() || parts.len() > 2 || parts.iter().any(|p| p.parse::<u32>().is_err()) {
        return None;
    }
    let package = parts[0].parse().ok()?;
    Some((mmio, package, parts.len() == 2))
}

fn domain_for(name: &str, package: u32, mmio: bool) -> Domain {
    if mmio {
        // The MMIO interface duplicates a package counter; a distinct domain
        // keeps the daemon from adding it to the MSR-backed package.
        return Domain::Other(format!("{name}-mmio"));
    }
    match name {
        n if n.starts_with("package-") => Domain::Package {
            index: n["package-".len()..].parse().unwrap_or(package),
        },
        "core" => Domain::Core { package },
        "uncore" => Domain::Uncore { package },
        "dram" => Domain::Dram { package },
        "psys" => Domain::Psys,
        other => Domain::Other(format!("{other}-{package}")),
    }
}

fn read_trimmed(path: &Path) -> Result<String, String> {
    std::fs::read_to_string(path)
        .map(|s| s.trim().to_string())
        .map_err(|e| format!("cannot read {}: {e}", path.display()))
}

/// Lists the RAPL zones under `root`, with a problem for each zone
/// directory that is not a usable zone. Zones are returned sorted by
/// directory name (packages before their subzones).
pub fn find_zones(root: &Path) -> (Vec<PowercapZone>, Vec<SourceProblem>) {
    let mut zones = Vec::new();
    let mut problems = Vec::new();
    let entries = match std::fs::read_dir(root) {
        Ok(e) => e,
        Err(e) => {
            problems.push(SourceProblem {
                what: "rapl-powercap".to_string(),
                why: format!("cannot list {}: {e}", root.display()),
            });
            return (zones, problems);
        }
    };
    let mut dirs: Vec<(String, PathBuf)> = Vec::new();
    for entry in entries.flatten() {
        let Some(dir) = entry.file_name().to_str().map(str::to_string) else {
            continue;
        };
        if parse_zone_dir(&dir).is_some() {
            dirs.push((dir, entry.path()));
            // Trees with nested subzones only (no flat class links).
            if let Ok(sub) = std::fs::read_dir(entry.path()) {
                for s in sub.flatten() {
                    if let Some(name) = s.file_name().to_str() {
                        if parse_zone_dir(name).is_some() {
                            dirs.push((name.to_string(), s.path()));
                        }
                    }
                }
            }
        }
    }
    dirs.sort_by_key(|a| zone_order(&a.0));
    dirs.dedup_by(|a, b| a.0 == b.0);
    for (dir, path) in dirs {
        let Some((mmio, package, _)) = parse_zone_dir(&dir) else {
            continue;
        };
        let name = match read_trimmed(&path.join("name")) {
            Ok(n) => n,
            Err(why) => {
                problems.push(SourceProblem { what: dir, why });
                continue;
            }
        };
        let max = read_trimmed(&path.join("max_energy_range_uj")).and_then(|s| {
            s.parse::<u64>()
                .map_err(|e| format!("bad max_energy_range_uj {s:?} in {}: {e}", path.display()))
        });
        match max {
            Ok(max_energy_range_uj) if max_energy_range_uj > 0 => zones.push(PowercapZone {
                domain: domain_for(&name, package, mmio),
                zone: dir,
                name,
                path,
                max_energy_range_uj,
            }),
            Ok(_) => problems.push(SourceProblem {
                what: dir,
                why: "max_energy_range_uj is 0".to_string(),
            }),
            Err(why) => problems.push(SourceProblem { what: dir, why }),
        }
    }
    (zones, problems)
}

/// Sort key: numeric by each index, mmio after msr-backed zones.
fn zone_order(dir: &str) -> (bool, Vec<u32>) {
    let mmio = dir.starts_with("intel-rapl-mmio:");
    let nums = dir
        .split(':')
        .skip(1)
        .filter_map(|p| p.parse().ok())
        .collect();
    (mmio, nums)
}

/// Reads one zone's `energy_uj`.
#[derive(Debug)]
pub struct PowercapSampler {
    zone: PowercapZone,
    energy_path: PathBuf,
    file: File,
    counter: WrappingCounter,
    buf: [u8; 32],
}

impl PowercapSampler {
    /// Opens the zone's `energy_uj` and reads it once, so an unreadable
    /// zone is refused here rather than failing at every sample.
    pub fn open(zone: PowercapZone) -> Result<Self, String> {
        let energy_path = zone.path.join("energy_uj");
        let file = File::open(&energy_path).map_err(|e| describe(&energy_path, &e))?;
        let mut sampler = Self {
            counter: WrappingCounter::new(zone.max_energy_range_uj),
            zone,
            energy_path,
            file,
            buf: [0; 32],
        };
        let raw = sampler.read_raw()?;
        sampler.counter.update(raw).map_err(|e| e.to_string())?;
        Ok(sampler)
    }

    /// The zone read.
    pub fn zone(&self) -> &PowercapZone {
        &self.zone
    }

    fn read_raw(&mut self) -> Result<u64, String> {
        let n = self
            .file
            .read_at(&mut self.buf, 0)
            .map_err(|e| describe(&self.energy_path, &e))?;
        let text = std::str::from_utf8(&self.buf[..n])
            .map_err(|_| format!("{} is not text", self.energy_path.display()))?;
        text.trim().parse().map_err(|e| {
            format!(
                "bad value {:?} in {}: {e}",
                text.trim(),
                self.energy_path.display()
            )
        })
    }
}

fn describe(path: &Path, e: &std::io::Error) -> String {
    match e.raw_os_error() {
        Some(libc::EACCES) | Some(libc::EPERM) => format!(
            "permission denied reading {} (energy_uj is root-only since CVE-2020-8694)",
            path.display()
        ),
        Some(libc::EISDIR) => format!("{} is a directory, not a counter", path.display()),
        _ => format!("cannot read {}: {e}", path.display()),
    }
}

impl Sampler for PowercapSampler {
    fn descriptor(&self) -> SourceDescriptor {
        SourceDescriptor {
            name: format!("{} ({})", self.zone.zone, self.zone.name),
            domain: self.zone.domain.clone(),
            kind: SourceKind::RaplPowercap,
            provenance: Provenance::Measured,
            reading: ReadingKind::CumulativeEnergy,
            resolution_j: TYPICAL_RAPL_UNIT_J,
            update_period_ns: RAPL_UPDATE_PERIOD_NS,
            default_period_ns: 1_000_000,
        }
    }

    fn sample(&mut self) -> Result<Reading, SampleError> {
        let raw = self.read_raw().map_err(SampleError::Retry)?;
        self.counter
            .update(raw)
            .map_err(|e| SampleError::Retry(format!("{}: {e}", self.energy_path.display())))?;
        Ok(Reading::Energy(Joules(self.counter.total() as f64 * 1e-6)))
    }

    fn wraps(&self) -> u64 {
        self.counter.wraps()
    }

    fn counter_range_j(&self) -> Option<f64> {
        Some((self.zone.max_energy_range_uj as f64 + 1.0) * 1e-6)
    }
}

/// Opens every readable zone under `root`; the others become problems.
pub fn open_all(root: &Path) -> (Vec<PowercapSampler>, Vec<SourceProblem>) {
    let (zones, mut problems) = find_zones(root);
    let mut samplers = Vec::new();
    for zone in zones {
        let what = zone.zone.clone();
        match PowercapSampler::open(zone) {
            Ok(s) => samplers.push(s),
            Err(why) => problems.push(SourceProblem { what, why }),
        }
    }
    (samplers, problems)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zone_names_parse() {
        assert_eq!(parse_zone_dir("intel-rapl:0"), Some((false, 0, false)));
        assert_eq!(parse_zone_dir("intel-rapl:1:2"), Some((false, 1, true)));
        assert_eq!(parse_zone_dir("intel-rapl-mmio:0"), Some((true, 0, false)));
        assert_eq!(parse_zone_dir("intel-rapl"), None);
        assert_eq!(parse_zone_dir("intel-rapl:x"), None);
        assert_eq!(parse_zone_dir("dtpm"), None);
        assert_eq!(
            domain_for("package-1", 1, false),
            Domain::Package { index: 1 }
        );
        assert_eq!(domain_for("dram", 1, false), Domain::Dram { package: 1 });
        assert_eq!(domain_for("psys", 1, false), Domain::Psys);
        assert_eq!(
            domain_for("package-0", 0, true),
            Domain::Other("package-0-mmio".into())
        );
    }
}
