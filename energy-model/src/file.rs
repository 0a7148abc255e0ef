//! The calibration file: a versioned, human-readable TOML document holding
//! the machine fingerprint, the provenance of the energy figures, and the
//! per-kernel models.
//!
//! Layout (format version 2):
//! ```toml
//! format_version = 2
//! created_by = "calibration 0.1.0"
//! created_at_unix_s = 1790000000
//! provenance = "estimated"
//! notes = ["…"]
//!
//! [machine]
//! cpu_model = "AMD EPYC"
//! logical_cpus = 2
//! kernel_release = "6.18.44"
//! provenance = "estimated"
//! [[machine.energy_sources]]
//! name = "estimated-cpu (cpu)"
//! kind = "estimated-cpu"
//! provenance = "estimated"
//!
//! [[kernels]]
//! kernel = "dense_forward"
//! threads = 1
//! [kernels.cpu_time_ns]
//! features = ["batch_in_out", "batch_in", "batch_out", "in_out", "batch", "one"]
//! coefficients = [0.25, 1.5, 0.7, 0.0, 0.0, 4000.0]
//! [kernels.cpu_time_ns.fit]
//! samples = 12
//! r2 = 0.998
//! …
//! ```
//! Loading checks the version before anything else, then the structure
//! (serde names the missing or unexpected field with its line), then the
//! invariants serde cannot see (coefficient counts, finite non-negative
//! numbers, duplicate models), naming the offending field.

use crate::fingerprint::{DifferenceWeight, FingerprintDifference, MachineFingerprint};
use crate::model::{KernelModel, LinearModel};
use serde::{Deserialize, Serialize};
use shared::Provenance;
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

/// The format version this build writes and reads.
///
/// Version 2: `cpu_time_ns` models process CPU time per call and `power_w`
/// energy per CPU-second (version 1 had wall time and watts).
/// Version 3: observations and models are at the fit coordinates of
/// `FitShape::of` (row-wise kernels at `(rows, width, width)`, optimizer
/// steps at `(1, parameters, 1)`: one step over a whole model, as the
/// trainer records it); version 2 fitted optimizer steps per dense layer
/// at `(batch, in, out)`, which the plan no longer lists.
pub const FORMAT_VERSION: u32 = 3;

/// A machine's calibration: what each kernel type costs here.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Calibration {
    /// Always [`FORMAT_VERSION`] for files this build writes.
    pub format_version: u32,
    /// Program and version that wrote the file.
    pub created_by: String,
    /// When it was written (Unix seconds; for people, not for arithmetic).
    pub created_at_unix_s: u64,
    /// Provenance of every energy figure in (and predicted from) the file.
    #[serde(with = "crate::fingerprint::provenance_label")]
    pub provenance: Provenance,
    /// How the models were obtained (grid, repetitions, caveats).
    #[serde(default)]
    pub notes: Vec<String>,
    /// The machine it was measured on.
    pub machine: MachineFingerprint,
    /// One model per (kernel type, thread count).
    pub kernels: Vec<KernelModel>,
    /// Energy around the kernels per call, per thread count (absent: 0).
    #[serde(default)]
    pub overheads: Vec<crate::predict::OverheadModel>,
}

/// Why a calibration file could not be used.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CalibrationError {
    /// The file could not be read or written.
    #[error("cannot access calibration file {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// Cause.
        source: std::io::Error,
    },
    /// Not TOML, or not the expected structure (the message names the
    /// field and line).
    #[error("calibration file {path} is not valid: {message}")]
    Syntax {
        /// The file.
        path: PathBuf,
        /// What the parser said.
        message: String,
    },
    /// No `format_version` at the top of the file.
    #[error("calibration file {path} has no `format_version` field: is it a calibration file?")]
    MissingVersion {
        /// The file.
        path: PathBuf,
    },
    /// A version this build does not read.
    #[error(
        "calibration file {path} has format_version {found}; this build reads version {supported}: \
         recalibrate with `calibration run`"
    )]
    UnsupportedVersion {
        /// The file.
        path: PathBuf,
        /// Version in the file.
        found: i64,
        /// Version this build reads.
        supported: u32,
    },
    /// A field is present and well-typed but its value is unusable.
    #[error("calibration file {path}: field `{field}` {reason}")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// Dotted path of the field, e.g. `kernels[2].cpu_time_ns.coefficients`.
        field: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The calibration was made on another machine (or measured another way).
    #[error(
        "calibration file {path} was made on a different machine ({}); \
         recalibrate here with `calibration run`, or force its use (--force-calibration) \
         knowing predictions may be wrong",
        differences.iter().map(ToString::to_string).collect::<Vec<_>>().join("; ")
    )]
    MachineMismatch {
        /// The file.
        path: PathBuf,
        /// The identity fields that differ.
        differences: Vec<FingerprintDifference>,
    },
    /// This machine could not be described.
    #[error(transparent)]
    Fingerprint(#[from] crate::fingerprint::FingerprintError),
}

impl Calibration {
    /// Reads a calibration and checks it was made on this machine (CPU
    /// model, CPU count, GPU). With `force`, a different machine is only
    /// warned about. Energy sources are checked by [`Calibration::check_machine`]
    /// when the caller has asked the daemon for them.
    pub fn load(path: &Path, force: bool) -> Result<Calibration, CalibrationError> {
        let calibration = Self::load_unchecked(path)?;
        let here = MachineFingerprint::probe(&[])?;
        calibration.check_machine(path, &here, force)?;
        Ok(calibration)
    }

    /// Reads and validates a calibration without comparing machines.
    pub fn load_unchecked(path: &Path) -> Result<Calibration, CalibrationError> {
        let text = std::fs::read_to_string(path).map_err(|source| CalibrationError::Io {
            path: path.to_owned(),
            source,
        })?;
        Self::from_toml_str(&text, path)
    }

    /// Parses and validates the text of a calibration file; `origin` names
    /// it in errors.
    pub fn from_toml_str(text: &str, origin: &Path) -> Result<Calibration, CalibrationError> {
        let syntax = |message: String| CalibrationError::Syntax {
            path: origin.to_owned(),
            message,
        };
        // The version is checked on the bare table first, so a file from a
        // newer format gets "wrong version", not a confusing field error.
        let table: toml::Table = toml::from_str(text).map_err(|e| syntax(e.to_string()))?;
        match table.get("format_version") {
            None => {
                return Err(CalibrationError::MissingVersion {
                    path: origin.to_owned(),
                })
            }
            Some(toml::Value::Integer(v)) if *v == i64::from(FORMAT_VERSION) => {}
            Some(toml::Value::Integer(v)) => {
                return Err(CalibrationError::UnsupportedVersion {
                    path: origin.to_owned(),
                    found: *v,
                    supported: FORMAT_VERSION,
                })
            }
            Some(other) => {
                return Err(CalibrationError::Invalid {
                    path: origin.to_owned(),
                    field: "format_version".into(),
                    reason: format!("must be an integer, found {}", other.type_str()),
                })
            }
        }
        let calibration: Calibration = toml::from_str(text).map_err(|e| syntax(e.to_string()))?;
        calibration.validate(origin)?;
        Ok(calibration)
    }

    /// The file's text (a comment header, then TOML).
    pub fn to_toml_string(&self) -> Result<String, CalibrationError> {
        let body = toml::to_string(self).map_err(|e| CalibrationError::Syntax {
            path: PathBuf::from("<memory>"),
            message: e.to_string(),
        })?;
        Ok(format!(
            "# Energy calibration of one machine: per-kernel time and power models.\n\
             # Written by `calibration run`; energy figures derived from it are {}.\n\
             # cpu_time_ns (process CPU time per call) and power_w (J per CPU-second) are\n\
             # linear in the listed features of a call's shape (batch, in_width, out_width);\n\
             # energy per call = cpu_time_ns * 1e-9 * power_w.\n\n{body}",
            self.provenance
        ))
    }

    /// Writes the file (to a temporary sibling, then renamed, so a reader
    /// never sees half a file).
    pub fn save(&self, path: &Path) -> Result<(), CalibrationError> {
        let text = self.to_toml_string()?;
        write_atomically(path, text.as_bytes())
    }

    /// Compares the calibrated machine with `here`. Identity differences
    /// are an error unless `force`; all differences are returned (and
    /// logged) so the caller can show them.
    pub fn check_machine(
        &self,
        path: &Path,
        here: &MachineFingerprint,
        force: bool,
    ) -> Result<Vec<FingerprintDifference>, CalibrationError> {
        let differences = self.machine.differences(here);
        let identity: Vec<FingerprintDifference> = differences
            .iter()
            .filter(|d| d.weight == DifferenceWeight::Identity)
            .cloned()
            .collect();
        if !identity.is_empty() && !force {
            return Err(CalibrationError::MachineMismatch {
                path: path.to_owned(),
                differences: identity,
            });
        }
        for d in &differences {
            tracing::warn!(calibration = %path.display(), "machine differs: {d}");
        }
        Ok(differences)
    }

    /// The model of `kernel` at `threads`, if calibrated.
    pub fn model(&self, kernel: &str, threads: u32) -> Option<&KernelModel> {
        self.kernels
            .iter()
            .find(|m| m.kernel == kernel && m.threads == threads)
    }

    /// Kernel types with at least one model.
    pub fn kernel_names(&self) -> BTreeSet<&str> {
        self.kernels.iter().map(|m| m.kernel.as_str()).collect()
    }

    /// Thread counts calibrated for `kernel`.
    pub fn threads_of(&self, kernel: &str) -> Vec<u32> {
        let mut t: Vec<u32> = self
            .kernels
            .iter()
            .filter(|m| m.kernel == kernel)
            .map(|m| m.threads)
            .collect();
        t.sort_unstable();
        t
    }

    /// Checks what serde cannot: model invariants and uniqueness.
    fn validate(&self, origin: &Path) -> Result<(), CalibrationError> {
        let invalid = |field: String, reason: String| CalibrationError::Invalid {
            path: origin.to_owned(),
            field,
            reason,
        };
        if self.kernels.is_empty() {
            return Err(invalid(
                "kernels".into(),
                "is empty: no kernel models".into(),
            ));
        }
        let mut seen = BTreeSet::new();
        for (i, m) in self.kernels.iter().enumerate() {
            if m.kernel.trim().is_empty() {
                return Err(invalid(format!("kernels[{i}].kernel"), "is empty".into()));
            }
            if m.threads == 0 {
                return Err(invalid(
                    format!("kernels[{i}].threads"),
                    "must be at least 1".into(),
                ));
            }
            if !seen.insert((m.kernel.as_str(), m.threads)) {
                return Err(invalid(
                    format!("kernels[{i}]"),
                    format!(
                        "repeats the model of kernel {:?} at {} threads",
                        m.kernel, m.threads
                    ),
                ));
            }
            check_linear(&m.cpu_time_ns, &format!("kernels[{i}].cpu_time_ns"))
                .map_err(|(f, r)| invalid(f, r))?;
            check_linear(&m.power_w, &format!("kernels[{i}].power_w"))
                .map_err(|(f, r)| invalid(f, r))?;
            check_linear(&m.energy_j, &format!("kernels[{i}].energy_j"))
                .map_err(|(f, r)| invalid(f, r))?;
        }
        for (i, o) in self.overheads.iter().enumerate() {
            if !(o.j_per_call.is_finite() && o.j_per_call >= 0.0) {
                return Err(invalid(
                    format!("overheads[{i}].j_per_call"),
                    format!("is {}: must be finite and non-negative", o.j_per_call),
                ));
            }
        }
        Ok(())
    }
}

fn check_linear(model: &LinearModel, field: &str) -> Result<(), (String, String)> {
    if model.features.is_empty() {
        return Err((format!("{field}.features"), "is empty".into()));
    }
    if model.features.len() != model.coefficients.len() {
        return Err((
            format!("{field}.coefficients"),
            format!(
                "has {} values for {} features",
                model.coefficients.len(),
                model.features.len()
            ),
        ));
    }
    if let Some((k, c)) = model
        .coefficients
        .iter()
        .enumerate()
        .find(|(_, c)| !(c.is_finite() && **c >= 0.0))
    {
        return Err((
            format!("{field}.coefficients[{k}]"),
            format!("is {c}: coefficients must be finite and non-negative"),
        ));
    }
    Ok(())
}

/// Writes `bytes` to `path` through a temporary file in the same directory.
pub fn write_atomically(path: &Path, bytes: &[u8]) -> Result<(), CalibrationError> {
    let io = |source| CalibrationError::Io {
        path: path.to_owned(),
        source,
    };
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    std::fs::write(&tmp, bytes).map_err(io)?;
    std::fs::rename(&tmp, path).map_err(io)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::fingerprint::EnergySourceSummary;
    use crate::model::{FitQuality, FitShape, Observation};

    pub(crate) fn sample_calibration() -> Calibration {
        let mut observations = Vec::new();
        for &batch in &[16u64, 64, 256] {
            for &width in &[8u64, 64, 256] {
                let shape = FitShape {
                    batch,
                    in_width: width,
                    out_width: width / 2 + 1,
                };
                observations.push(Observation {
                    kernel: "dense_forward".into(),
                    shape,
                    threads: 1,
                    calls: 50,
                    wall_time_per_call_ns: 3000.0 + 0.4 * (batch * width * (width / 2 + 1)) as f64,
                    cpu_time_per_call_ns: 3000.0 + 0.4 * (batch * width * (width / 2 + 1)) as f64,
                    power_w: 2.5 + 0.01 * (batch as f64).log2(),
                });
            }
        }
        Calibration {
            format_version: FORMAT_VERSION,
            created_by: "calibration test".into(),
            created_at_unix_s: 1,
            provenance: Provenance::Estimated,
            notes: vec!["synthetic".into()],
            machine: MachineFingerprint {
                cpu_model: "Test CPU".into(),
                logical_cpus: 2,
                kernel_release: "6.1".into(),
                gpu: None,
                energy_sources: vec![EnergySourceSummary {
                    name: "estimated-cpu (cpu)".into(),
                    kind: "estimated-cpu".into(),
                    provenance: Provenance::Estimated,
                }],
                provenance: Provenance::Estimated,
            },
            kernels: vec![KernelModel::fit("dense_forward", 1, &observations).unwrap()],
            overheads: vec![crate::predict::OverheadModel {
                threads: 1,
                j_per_call: 1e-7,
                samples: 4,
            }],
        }
    }

    fn parse(text: &str) -> Result<Calibration, CalibrationError> {
        Calibration::from_toml_str(text, Path::new("test.toml"))
    }

    #[test]
    fn round_trip_through_a_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cal.toml");
        let cal = sample_calibration();
        cal.save(&path).unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.starts_with("# Energy calibration"));
        assert!(text.contains("provenance = \"estimated\""));
        assert!(text.contains(&format!("format_version = {FORMAT_VERSION}")));
        let back = Calibration::load_unchecked(&path).unwrap();
        assert_eq!(back, cal);
    }

    #[test]
    fn garbage_is_a_syntax_error_naming_the_file() {
        let err = parse("this is = not [ toml").unwrap_err();
        assert!(matches!(err, CalibrationError::Syntax { .. }), "{err}");
        assert!(err.to_string().contains("test.toml"), "{err}");
    }

    #[test]
    fn missing_or_wrong_version_is_reported_first() {
        let err = parse("kernels = []").unwrap_err();
        assert!(
            matches!(err, CalibrationError::MissingVersion { .. }),
            "{err}"
        );
        // Version 2 fitted optimizer steps per dense layer: refused.
        let err = parse("format_version = 2\nsomething_old = true").unwrap_err();
        assert!(
            matches!(err, CalibrationError::UnsupportedVersion { found: 2, .. }),
            "{err}"
        );
        assert!(err.to_string().contains("reads version 3"), "{err}");
        let err = parse("format_version = \"2\"").unwrap_err();
        assert!(err.to_string().contains("format_version"), "{err}");
    }

    #[test]
    fn missing_field_is_named() {
        let text = sample_calibration().to_toml_string().unwrap();
        let without_model: String = text
            .lines()
            .filter(|l| !l.starts_with("cpu_model"))
            .collect::<Vec<_>>()
            .join("\n");
        let err = parse(&without_model).unwrap_err();
        assert!(err.to_string().contains("cpu_model"), "{err}");
    }

    #[test]
    fn bad_provenance_and_feature_names_are_named() {
        let text = sample_calibration().to_toml_string().unwrap();
        let err = parse(&text.replacen("\"estimated\"", "\"guessed\"", 1)).unwrap_err();
        assert!(err.to_string().contains("guessed"), "{err}");
        let err = parse(&text.replacen("\"batch_in_out\"", "\"flops\"", 1)).unwrap_err();
        assert!(err.to_string().contains("flops"), "{err}");
    }

    #[test]
    fn invalid_values_name_their_field() {
        let mut cal = sample_calibration();
        cal.kernels[0].cpu_time_ns.coefficients.pop();
        let err = parse(&cal.to_toml_string().unwrap()).unwrap_err();
        assert!(
            err.to_string()
                .contains("kernels[0].cpu_time_ns.coefficients"),
            "{err}"
        );

        let mut cal = sample_calibration();
        cal.kernels[0].power_w.coefficients[0] = -1.0;
        let err = parse(&cal.to_toml_string().unwrap()).unwrap_err();
        assert!(
            err.to_string()
                .contains("kernels[0].power_w.coefficients[0]"),
            "{err}"
        );

        let mut cal = sample_calibration();
        cal.kernels.push(cal.kernels[0].clone());
        let err = parse(&cal.to_toml_string().unwrap()).unwrap_err();
        assert!(err.to_string().contains("repeats"), "{err}");

        let mut cal = sample_calibration();
        cal.kernels.clear();
        let err = parse(&cal.to_toml_string().unwrap()).unwrap_err();
        assert!(err.to_string().contains("`kernels` is empty"), "{err}");
    }

    #[test]
    fn another_machine_is_refused_unless_forced() {
        let cal = sample_calibration();
        let path = Path::new("cal.toml");
        let same = cal.machine.clone();
        assert!(cal.check_machine(path, &same, false).unwrap().is_empty());

        let other = MachineFingerprint {
            cpu_model: "Other CPU".into(),
            logical_cpus: 64,
            ..cal.machine.clone()
        };
        let err = cal.check_machine(path, &other, false).unwrap_err();
        let text = err.to_string();
        assert!(matches!(err, CalibrationError::MachineMismatch { .. }));
        assert!(
            text.contains("cpu_model") && text.contains("Other CPU"),
            "{text}"
        );
        assert!(text.contains("logical_cpus"), "{text}");
        assert!(text.contains("--force-calibration"), "{text}");

        let forced = cal.check_machine(path, &other, true).unwrap();
        assert_eq!(forced.len(), 2);

        // A kernel update alone is a warning, not a refusal.
        let updated = MachineFingerprint {
            kernel_release: "6.9".into(),
            ..cal.machine.clone()
        };
        assert_eq!(cal.check_machine(path, &updated, false).unwrap().len(), 1);
    }

    #[test]
    fn fit_quality_is_kept_in_the_file() {
        let cal = sample_calibration();
        let q: FitQuality = cal.kernels[0].cpu_time_ns.fit;
        assert_eq!(q.samples, 9);
        assert!(q.r2 > 0.99);
    }
}
