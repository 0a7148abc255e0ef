//! The machine a calibration belongs to: CPU model, logical CPU count,
//! kernel release, GPU, and the energy sources energyd reads (their kinds
//! and provenance).
//!
//! A calibration is a property of one machine and one way of measuring it.
//! [`MachineFingerprint::differences`] says which identity fields differ;
//! the caller refuses a calibration when any *identity* field differs (CPU
//! model, CPU count, GPU, energy source kinds) and only warns when the
//! kernel release differs, since kernel updates rarely change what a kernel
//! of arithmetic costs.

use serde::{Deserialize, Serialize};
use shared::{Provenance, SourceInfo};
use std::path::Path;

/// Identity of a machine and its energy sources, as stored in a calibration file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MachineFingerprint {
    /// CPU model name from `/proc/cpuinfo` (`model name`), or `unknown`.
    pub cpu_model: String,
    /// Logical CPUs listed in `/proc/cpuinfo`.
    pub logical_cpus: u32,
    /// Kernel release (`/proc/sys/kernel/osrelease`, as `uname -r`).
    pub kernel_release: String,
    /// GPU name from NVML; absent when there is none (or no driver).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gpu: Option<String>,
    /// The energy sources energyd read while calibrating.
    #[serde(default)]
    pub energy_sources: Vec<EnergySourceSummary>,
    /// Weakest provenance of those sources: figures derived from this
    /// calibration carry it.
    #[serde(with = "provenance_label")]
    pub provenance: Provenance,
}

/// One energy source, as far as a calibration cares.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EnergySourceSummary {
    /// Name the daemon gave it, e.g. `estimated-cpu (cpu)`.
    pub name: String,
    /// Kind label (`rapl-powercap`, `nvml`, `estimated-cpu`, …).
    pub kind: String,
    /// Where its numbers come from.
    #[serde(with = "provenance_label")]
    pub provenance: Provenance,
}

/// How important a difference between two fingerprints is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DifferenceWeight {
    /// A different machine or a different way of measuring it: refuse.
    Identity,
    /// Worth a warning only.
    Minor,
}

/// One field that differs between the calibrated machine and this one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FingerprintDifference {
    /// Field name, as in the calibration file.
    pub field: &'static str,
    /// Value recorded in the calibration.
    pub calibrated: String,
    /// Value on this machine.
    pub current: String,
    /// Refuse or warn.
    pub weight: DifferenceWeight,
}

impl std::fmt::Display for FingerprintDifference {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}: calibrated on {:?}, this machine has {:?}",
            self.field, self.calibrated, self.current
        )
    }
}

/// Why the local machine could not be described.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum FingerprintError {
    /// A file under the proc root could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: std::path::PathBuf,
        /// Cause.
        source: std::io::Error,
    },
}

impl MachineFingerprint {
    /// Describes this machine from `/proc` and NVML, with the given energy
    /// sources (from energyd's `ListSources`; empty when no daemon is asked).
    pub fn probe(sources: &[SourceInfo]) -> Result<Self, FingerprintError> {
        Self::probe_from(Path::new("/proc"), nvml_gpu_name(), sources)
    }

    /// Describes a machine from a proc tree rooted at `proc_root` (tests
    /// use a fixture directory) and a GPU name found by the caller.
    pub fn probe_from(
        proc_root: &Path,
        gpu: Option<String>,
        sources: &[SourceInfo],
    ) -> Result<Self, FingerprintError> {
        let cpuinfo_path = proc_root.join("cpuinfo");
        let cpuinfo = read(&cpuinfo_path)?;
        let (cpu_model, logical_cpus) = parse_cpuinfo(&cpuinfo);
        let release_path = proc_root.join("sys/kernel/osrelease");
        let kernel_release = read(&release_path)?.trim().to_owned();
        let energy_sources: Vec<EnergySourceSummary> = sources
            .iter()
            .map(|s| EnergySourceSummary {
                name: s.name.clone(),
                kind: s.kind.label().to_owned(),
                provenance: s.provenance,
            })
            .collect();
        Ok(MachineFingerprint {
            cpu_model,
            logical_cpus,
            kernel_release,
            gpu,
            provenance: weakest_provenance(&energy_sources),
            energy_sources,
        })
    }

    /// Fields of `current` that differ from `self` (the calibrated machine).
    /// Energy sources are compared only when both sides list some: a
    /// program that loads a calibration without asking the daemon cannot
    /// know them.
    pub fn differences(&self, current: &MachineFingerprint) -> Vec<FingerprintDifference> {
        let mut out = Vec::new();
        let mut push = |field, a: String, b: String, weight| {
            if a != b {
                out.push(FingerprintDifference {
                    field,
                    calibrated: a,
                    current: b,
                    weight,
                });
            }
        };
        push(
            "cpu_model",
            self.cpu_model.clone(),
            current.cpu_model.clone(),
            DifferenceWeight::Identity,
        );
        push(
            "logical_cpus",
            self.logical_cpus.to_string(),
            current.logical_cpus.to_string(),
            DifferenceWeight::Identity,
        );
        push(
            "gpu",
            self.gpu.clone().unwrap_or_else(|| "none".into()),
            current.gpu.clone().unwrap_or_else(|| "none".into()),
            DifferenceWeight::Identity,
        );
        push(
            "kernel_release",
            self.kernel_release.clone(),
            current.kernel_release.clone(),
            DifferenceWeight::Minor,
        );
        if !self.energy_sources.is_empty() && !current.energy_sources.is_empty() {
            push(
                "energy_sources",
                source_kinds(&self.energy_sources),
                source_kinds(&current.energy_sources),
                DifferenceWeight::Identity,
            );
        }
        out
    }
}

/// The weakest provenance of a set of sources; `Estimated` when there are
/// none (nothing measured them).
pub fn weakest_provenance(sources: &[EnergySourceSummary]) -> Provenance {
    sources
        .iter()
        .map(|s| s.provenance)
        .reduce(Provenance::combine)
        .unwrap_or(Provenance::Estimated)
}

fn source_kinds(sources: &[EnergySourceSummary]) -> String {
    let mut kinds: Vec<String> = sources
        .iter()
        .map(|s| format!("{} ({})", s.kind, s.provenance))
        .collect();
    kinds.sort();
    kinds.join(", ")
}

fn read(path: &Path) -> Result<String, FingerprintError> {
    std::fs::read_to_string(path).map_err(|source| FingerprintError::Read {
        path: path.to_owned(),
        source,
    })
}

/// CPU model and logical CPU count from the text of `/proc/cpuinfo`. Some
/// architectures have no `model name` line; `Hardware` or `cpu model` are
/// tried next, then `unknown`.
fn parse_cpuinfo(text: &str) -> (String, u32) {
    let mut model = None;
    let mut fallback = None;
    let mut processors = 0u32;
    for line in text.lines() {
        let Some((key, value)) = line.split_once(':') else {
            continue;
        };
        let key = key.trim();
        let value = value.trim();
        match key {
            "processor" => processors += 1,
            "model name" if model.is_none() => model = Some(value.to_owned()),
            "Hardware" | "cpu model" if fallback.is_none() => fallback = Some(value.to_owned()),
            _ => {}
        }
    }
    let model = model.or(fallback).unwrap_or_else(|| "unknown".to_owned());
    (model, processors.max(1))
}

/// Name of the first NVIDIA GPU, if NVML loads and lists one.
fn nvml_gpu_name() -> Option<String> {
    // Without a driver NVML fails to load its library: that is "no GPU".
    let nvml = nvml_wrapper::Nvml::init().ok()?;
    let device = nvml.device_by_index(0).ok()?;
    device.name().ok()
}

/// Serializes [`Provenance`] as its lower-case label (`measured`,
/// `estimated`, `simulated`), the form people read in the file.
pub mod provenance_label {
    use serde::{Deserialize, Deserializer, Serializer};
    use shared::Provenance;

    /// Writes the label.
    pub fn serialize<S: Serializer>(p: &Provenance, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(p.label())
    }

    /// Reads a label, naming the accepted values when it is not one.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Provenance, D::Error> {
        let text = String::deserialize(d)?;
        parse(&text).ok_or_else(|| {
            serde::de::Error::custom(format!(
                "unknown provenance {text:?}: expected \"measured\", \"estimated\" or \"simulated\""
            ))
        })
    }

    /// The provenance a label names.
    pub fn parse(text: &str) -> Option<Provenance> {
        match text {
            "measured" => Some(Provenance::Measured),
            "estimated" => Some(Provenance::Estimated),
            "simulated" => Some(Provenance::Simulated),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use shared::source::{ReadingKind, SourceKind};
    use shared::{Domain, SourceId};

    fn proc_fixture(model: &str, cpus: u32, release: &str) -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        let mut cpuinfo = String::new();
        for i in 0..cpus {
            cpuinfo.push_str(&format!(
                "processor\t: {i}\nvendor_id\t: Test\nmodel name\t: {model}\n\n"
            ));
        }
        std::fs::write(dir.path().join("cpuinfo"), cpuinfo).unwrap();
        std::fs::create_dir_all(dir.path().join("sys/kernel")).unwrap();
        std::fs::write(
            dir.path().join("sys/kernel/osrelease"),
            format!("{release}\n"),
        )
        .unwrap();
        dir
    }

    fn source(kind: SourceKind, provenance: Provenance) -> SourceInfo {
        SourceInfo {
            id: SourceId(0),
            name: format!("{} (cpu)", kind.label()),
            domain: Domain::Cpu,
            kind,
            provenance,
            reading: ReadingKind::CumulativeEnergy,
            period_ns: 10_000_000,
            resolution_j: 0.01,
            update_period_ns: 0,
        }
    }

    #[test]
    fn probe_reads_model_count_release_and_sources() {
        let dir = proc_fixture("Test CPU 9000", 4, "6.1.0-test");
        let fp = MachineFingerprint::probe_from(
            dir.path(),
            None,
            &[source(SourceKind::EstimatedCpu, Provenance::Estimated)],
        )
        .unwrap();
        assert_eq!(fp.cpu_model, "Test CPU 9000");
        assert_eq!(fp.logical_cpus, 4);
        assert_eq!(fp.kernel_release, "6.1.0-test");
        assert_eq!(fp.gpu, None);
        assert_eq!(fp.energy_sources[0].kind, "estimated-cpu");
        assert_eq!(fp.provenance, Provenance::Estimated);
    }

    #[test]
    fn missing_proc_file_is_an_error_naming_the_path() {
        let dir = tempfile::tempdir().unwrap();
        let err = MachineFingerprint::probe_from(dir.path(), None, &[]).unwrap_err();
        assert!(err.to_string().contains("cpuinfo"), "{err}");
    }

    #[test]
    fn differences_classify_identity_and_minor_fields() {
        let a = MachineFingerprint::probe_from(
            proc_fixture("CPU A", 2, "6.1").path(),
            None,
            &[source(SourceKind::EstimatedCpu, Provenance::Estimated)],
        )
        .unwrap();
        assert!(a.differences(&a).is_empty());

        let newer_kernel = MachineFingerprint {
            kernel_release: "6.2".into(),
            ..a.clone()
        };
        let diffs = a.differences(&newer_kernel);
        assert_eq!(diffs.len(), 1);
        assert_eq!(diffs[0].weight, DifferenceWeight::Minor);

        let other = MachineFingerprint {
            cpu_model: "CPU B".into(),
            gpu: Some("H100".into()),
            energy_sources: vec![EnergySourceSummary {
                name: "package-0".into(),
                kind: "rapl-powercap".into(),
                provenance: Provenance::Measured,
            }],
            ..a.clone()
        };
        let fields: Vec<_> = a.differences(&other).iter().map(|d| d.field).collect();
        assert_eq!(fields, vec!["cpu_model", "gpu", "energy_sources"]);
        assert!(a
            .differences(&other)
            .iter()
            .all(|d| d.weight == DifferenceWeight::Identity));

        // Sources unknown on one side (no daemon asked) are not compared.
        let no_sources = MachineFingerprint {
            energy_sources: vec![],
            ..a.clone()
        };
        assert!(a.differences(&no_sources).is_empty());
    }

    #[test]
    fn weakest_provenance_of_mixed_sources() {
        let s = |p| EnergySourceSummary {
            name: "x".into(),
            kind: "k".into(),
            provenance: p,
        };
        assert_eq!(
            weakest_provenance(&[s(Provenance::Measured), s(Provenance::Estimated)]),
            Provenance::Estimated
        );
        assert_eq!(
            weakest_provenance(&[s(Provenance::Measured)]),
            Provenance::Measured
        );
    }
}
