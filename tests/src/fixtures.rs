//! What the tests of searching programs share: a small search space, and a
//! synthetic calibration for those that price networks (`search
//! --calibration`, `oneshot`, `search --carbon-aware --calibration`), made
//! with the energy-model crate's own types and fit for a given machine's
//! fingerprint, so those tests check the wiring, not the accuracy of a real
//! calibration (`bench/calibration` does that).

use energy_model::model::{FitShape, KernelModel, Observation};
use energy_model::predict::OverheadModel;
use energy_model::{Calibration, MachineFingerprint, FORMAT_VERSION};
use nn_plan::KernelKind;
use shared::Provenance;

/// A small MLP space (1–2 layers of 4–64 units, relu or tanh) whose
/// trainings last `epochs_low..=epochs_high` epochs: short enough for a
/// test, long enough (the caller's choice) for energyd to see them.
pub fn small_mlp_space(epochs_low: u32, epochs_high: u32) -> String {
    format!(
        r#"
[[param]]
name = "n_layers"
type = "int"
low = 1
high = 2
[[param]]
name = "width_1"
type = "categorical"
choices = [4, 8, 16, 32, 64]
[[param]]
name = "width_2"
type = "categorical"
choices = [4, 8, 16, 32, 64]
when = {{ param = "n_layers", at_least = 2 }}
[[param]]
name = "activation"
type = "categorical"
choices = ["relu", "tanh"]
[[param]]
name = "epochs"
type = "int"
low = {epochs_low}
high = {epochs_high}
"#
    )
}

/// Every kernel kind at one thread, time and energy linear in a call's
/// work (batch × inputs × outputs at the fit shape), 8 W per CPU-second,
/// a tiny overhead per call. `created_by` names the test that made it.
pub fn synthetic_calibration(machine: MachineFingerprint, created_by: &str) -> Calibration {
    let mut kernels = Vec::new();
    for kind in KernelKind::ALL {
        let mut observations = Vec::new();
        for batch in [16u64, 64, 256, 1024] {
            for (i, o) in [(8u64, 128u64), (128, 16), (64, 64), (256, 512)] {
                let work = (batch * i * o) as f64;
                observations.push(Observation {
                    kernel: kind.as_str().to_owned(),
                    shape: FitShape {
                        batch,
                        in_width: i,
                        out_width: o,
                    },
                    threads: 1,
                    calls: 100,
                    wall_time_per_call_ns: 2000.0 + 0.5 * work,
                    cpu_time_per_call_ns: 2000.0 + 0.5 * work,
                    power_w: 8.0,
                });
            }
        }
        kernels.push(KernelModel::fit(kind.as_str(), 1, &observations).expect("fit"));
    }
    Calibration {
        format_version: FORMAT_VERSION,
        created_by: created_by.into(),
        created_at_unix_s: 1,
        provenance: Provenance::Estimated,
        notes: vec!["synthetic".into()],
        machine,
        kernels,
        overheads: vec![OverheadModel {
            threads: 1,
            j_per_call: 1e-7,
            samples: 1,
        }],
    }
}
