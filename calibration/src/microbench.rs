//! Microbenchmarks: every kernel type over a grid of shapes and thread
//! counts, each run long enough for energyd to attribute its energy, with a
//! checkpoint after every point so a stopped run resumes where it stopped.
//!
//! What runs the kernels ([`KernelRunner`]) and what measures their energy
//! ([`EnergyMeter`]) are traits: the binary plugs in nas-client's
//! `run_isolated` and energyd ([`crate::meter::DaemonMeter`]); tests plug in
//! fakes with known costs.
//!
//! One point is measured as: a short probe run to learn the time per call,
//! then enough calls to fill a window of `window_ms` (so the estimated CPU
//! source, which steps every 10 ms tick, resolves it to a few percent),
//! timed on CLOCK_MONOTONIC, with the process's CPU time read
//! (CLOCK_PROCESS_CPUTIME_ID) at both ends; the meter reports the energy
//! attributed to this process over exactly that window.
//!
//! Costs are kept per *CPU-second*, not per wall second: CPU time per call
//! = wall time per call × (process CPU time / wall time of the window), and
//! power = energy / process CPU time of the window. energyd attributes a
//! domain's energy to a process by its share of the activity (CPU time),
//! so on a machine shared with other work the wall time of a kernel
//! stretches with the competition while its CPU time and the energy
//! charged for it do not. Energy per call = CPU time per call × power.

use energy_model::file::{write_atomically, Calibration, CalibrationError, FORMAT_VERSION};
use energy_model::fingerprint::MachineFingerprint;
use energy_model::model::{FitError, FitShape, KernelModel, Observation};
use energy_model::predict::{NetworkPlan, OverheadModel};
use energy_model::NetworkRun;
use serde::{Deserialize, Serialize};
use shared::{MonotonicNs, Provenance};
use std::path::{Path, PathBuf};

/// Runs one kernel type in isolation.
pub trait KernelRunner {
    /// The fit coordinates a call of `kernel` at grid shape `grid` runs
    /// at, which its observation records (the grid's shapes are dense-block
    /// coordinates: batch, inputs, outputs). The default is the grid shape
    /// itself (the reference kernels); the trainer's runner projects
    /// through `nn_plan::KernelShape::in_dense_block` and `FitShape::of`.
    fn fit_shape(&self, _kernel: &str, grid: FitShape) -> FitShape {
        grid
    }
    /// Runs `kernel` `iters` times at `shape` with `threads` threads and
    /// returns the mean time of one call in nanoseconds.
    fn run(
        &mut self,
        kernel: &str,
        shape: FitShape,
        threads: u32,
        iters: u32,
    ) -> Result<f64, String>;
}

/// Energy attributed to this process over an interval.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct MeteredEnergy {
    /// Joules attributed to the process over the interval (all domains).
    pub joules: f64,
    /// One-sigma uncertainty.
    pub uncertainty_j: f64,
    /// Weakest provenance of the domains summed.
    pub provenance: Provenance,
}

/// Measures the energy this process spent running one kernel type.
pub trait EnergyMeter {
    /// Energy attributed to this process over `[from, to]`, during which it
    /// ran only `kernel`.
    fn measure(
        &mut self,
        kernel: &str,
        from: MonotonicNs,
        to: MonotonicNs,
    ) -> Result<MeteredEnergy, String>;
}

/// One point of the grid.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GridPoint {
    /// Kernel type.
    pub kernel: String,
    /// Shape.
    pub shape: FitShape,
    /// Threads.
    pub threads: u32,
}

/// What to measure.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Grid {
    /// Kernel types (the trainer's span names).
    pub kernels: Vec<String>,
    /// Shapes every kernel type is run at.
    pub shapes: Vec<FitShape>,
    /// Thread counts.
    pub threads: Vec<u32>,
    /// Length of the measured window of one point, milliseconds.
    pub window_ms: u64,
}

impl Grid {
    /// The default shape grid: four batch sizes crossed with four
    /// (in, out) pairs chosen so that input width, output width and their
    /// product vary independently (16 shapes, enough for the 6 time
    /// features), spanning the batch sizes and layer widths of the search
    /// spaces (batch 16 to 1024, widths 8 to 512).
    pub fn default_shapes() -> Vec<FitShape> {
        let pairs = [(8, 128), (128, 16), (64, 64), (256, 512)];
        let mut shapes = Vec::new();
        for batch in [16, 64, 256, 1024] {
            for (in_width, out_width) in pairs {
                shapes.push(FitShape {
                    batch,
                    in_width,
                    out_width,
                });
            }
        }
        shapes
    }

    /// Every point, thread count outermost (a thread count is one process,
    /// see the binary), then kernel, then shape.
    pub fn points(&self) -> Vec<GridPoint> {
        let mut out = Vec::new();
        for &threads in &self.threads {
            for kernel in &self.kernels {
                for &shape in &self.shapes {
                    out.push(GridPoint {
                        kernel: kernel.clone(),
                        shape,
                        threads,
                    });
                }
            }
        }
        out
    }
}

/// Why a point or a run failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum MicrobenchError {
    /// The kernel could not run.
    #[error("kernel {kernel} at {shape} with {threads} threads failed: {message}")]
    Kernel {
        /// Kernel type.
        kernel: String,
        /// Shape.
        shape: FitShape,
        /// Threads.
        threads: u32,
        /// Cause.
        message: String,
    },
    /// The energy could not be measured.
    #[error("energy of kernel {kernel} at {shape} could not be measured: {message}")]
    Meter {
        /// Kernel type.
        kernel: String,
        /// Shape.
        shape: FitShape,
        /// Cause.
        message: String,
    },
    /// The checkpoint file is unusable.
    #[error("checkpoint {path}: {message}")]
    Checkpoint {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// Writing a file failed.
    #[error(transparent)]
    File(#[from] CalibrationError),
}

/// Measures one grid point (see the module documentation).
pub fn measure_point(
    runner: &mut dyn KernelRunner,
    meter: &mut dyn EnergyMeter,
    point: &GridPoint,
    window_ms: u64,
) -> Result<(Observation, Provenance), MicrobenchError> {
    let kernel_error = |message: String| MicrobenchError::Kernel {
        kernel: point.kernel.clone(),
        shape: point.shape,
        threads: point.threads,
        message,
    };
    let probe_ns = runner
        .run(&point.kernel, point.shape, point.threads, 3)
        .map_err(kernel_error)?;
    let window_ns = window_ms as f64 * 1e6;
    // At least 5 calls so one slow call does not dominate; at most 2 M so a
    // probe that measured ~0 ns cannot ask for an unbounded loop.
    let iters = (window_ns / probe_ns.max(1.0)).clamp(5.0, 2_000_000.0) as u32;
    let cpu_from = process_cpu_ns().map_err(kernel_error)?;
    let from = MonotonicNs::now();
    let mean_ns = runner
        .run(&point.kernel, point.shape, point.threads, iters)
        .map_err(kernel_error)?;
    let to = MonotonicNs::now();
    let cpu_ns = process_cpu_ns()
        .map_err(kernel_error)?
        .saturating_sub(cpu_from);
    let metered =
        meter
            .measure(&point.kernel, from, to)
            .map_err(|message| MicrobenchError::Meter {
                kernel: point.kernel.clone(),
                shape: point.shape,
                message,
            })?;
    let elapsed_ns = to.saturating_sub(from);
    if !(metered.joules.is_finite() && metered.joules > 0.0)
        || elapsed_ns == 0
        || cpu_ns == 0
        || mean_ns <= 0.0
    {
        return Err(MicrobenchError::Meter {
            kernel: point.kernel.clone(),
            shape: point.shape,
            message: format!(
                "no energy attributed ({} J over {elapsed_ns} ns wall, {cpu_ns} ns CPU, \
                 {mean_ns} ns per call)",
                metered.joules
            ),
        });
    }
    let cpu_per_wall = cpu_ns as f64 / elapsed_ns as f64;
    let power_w = metered.joules / (cpu_ns as f64 * 1e-9);
    Ok((
        Observation {
            kernel: point.kernel.clone(),
            shape: point.shape,
            threads: point.threads,
            calls: u64::from(iters),
            wall_time_per_call_ns: mean_ns,
            cpu_time_per_call_ns: mean_ns * cpu_per_wall,
            power_w,
        },
        metered.provenance,
    ))
}

/// CPU time this process has used, all threads, nanoseconds.
fn process_cpu_ns() -> Result<u64, String> {
    let t = nix::time::clock_gettime(nix::time::ClockId::CLOCK_PROCESS_CPUTIME_ID)
        .map_err(|e| format!("reading the process CPU clock: {e}"))?;
    Ok(t.tv_sec() as u64 * 1_000_000_000 + t.tv_nsec() as u64)
}

/// Everything measured so far, written after every point (`<out>.partial.json`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RunCheckpoint {
    /// [`FORMAT_VERSION`] of the calibration this run will produce.
    pub format_version: u32,
    /// The machine being calibrated.
    pub machine: MachineFingerprint,
    /// The grid being measured.
    pub grid: Grid,
    /// Weakest provenance of the measurements so far.
    #[serde(with = "energy_model::fingerprint::provenance_label")]
    pub provenance: Provenance,
    /// Points measured.
    pub observations: Vec<Observation>,
    /// Points that failed, with the reason (retried on resume).
    #[serde(default)]
    pub failures: Vec<String>,
    /// Whole calibration networks measured after the points (for the
    /// overhead around kernels).
    #[serde(default)]
    pub networks: Vec<NetworkObservation>,
}

/// A whole network trained and run for inference while energyd measured
/// it: what the overhead around kernels is fitted on.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NetworkObservation {
    /// What ran (epochs = the epochs actually run).
    pub description: NetworkRun,
    /// Inference passes over the test split.
    pub inference_passes: u32,
    /// Measured energy of the training phase.
    pub training_j: f64,
    /// Measured energy of the inference phase (all passes).
    pub inference_j: f64,
}

/// Fits the energy spent around kernels, per kernel call, for each thread
/// count with network observations: the relative least-squares solution of
/// `measured − predicted kernels ≈ a × calls` over training and inference
/// phases, clamped at 0. Phases the calibration cannot price are skipped.
pub fn fit_overheads(
    calibration: &Calibration,
    networks: &[NetworkObservation],
) -> Vec<OverheadModel> {
    let mut threads: Vec<u32> = networks.iter().map(|n| n.description.run.threads).collect();
    threads.sort_unstable();
    threads.dedup();
    let mut out = Vec::new();
    for t in threads {
        let (mut num, mut den, mut samples) = (0.0, 0.0, 0u32);
        for n in networks.iter().filter(|n| n.description.run.threads == t) {
            let Ok(plan) = n.description.plan() else {
                continue;
            };
            let plan = NetworkPlan::of(&plan);
            let phases = [
                (plan.training, n.training_j),
                (
                    plan.inference.repeated(u64::from(n.inference_passes)),
                    n.inference_j,
                ),
            ];
            for (kernels, measured_j) in phases {
                let Ok(predicted) = calibration.predict_plan(&kernels) else {
                    continue;
                };
                if !(measured_j.is_finite() && measured_j > 0.0) {
                    continue;
                }
                let calls = kernels.kernels.iter().map(|k| k.calls).sum::<u64>() as f64;
                let residual_j = measured_j - (predicted.energy_j - predicted.overhead_j);
                num += residual_j * calls / (measured_j * measured_j);
                den += calls * calls / (measured_j * measured_j);
                samples += 1;
            }
        }
        if samples > 0 && den > 0.0 {
            out.push(OverheadModel {
                threads: t,
                j_per_call: (num / den).max(0.0),
                samples,
            });
        }
    }
    out
}

impl RunCheckpoint {
    /// A fresh checkpoint.
    pub fn new(machine: MachineFingerprint, grid: Grid) -> Self {
        RunCheckpoint {
            format_version: FORMAT_VERSION,
            provenance: machine.provenance,
            machine,
            grid,
            observations: Vec::new(),
            failures: Vec::new(),
            networks: Vec::new(),
        }
    }

    /// The checkpoint path that belongs to a calibration output path.
    pub fn path_for(out: &Path) -> PathBuf {
        let mut p = out.as_os_str().to_owned();
        p.push(".partial.json");
        PathBuf::from(p)
    }

    /// Reads a checkpoint.
    pub fn load(path: &Path) -> Result<Self, MicrobenchError> {
        let bad = |message: String| MicrobenchError::Checkpoint {
            path: path.to_owned(),
            message,
        };
        let text = std::fs::read_to_string(path).map_err(|e| bad(e.to_string()))?;
        let cp: RunCheckpoint = serde_json::from_str(&text).map_err(|e| bad(e.to_string()))?;
        if cp.format_version != FORMAT_VERSION {
            return Err(bad(format!(
                "format_version {} (this build writes {FORMAT_VERSION}); remove it and start again",
                cp.format_version
            )));
        }
        Ok(cp)
    }

    /// Writes the checkpoint atomically.
    pub fn save(&self, path: &Path) -> Result<(), MicrobenchError> {
        let text = serde_json::to_string_pretty(self).map_err(|e| MicrobenchError::Checkpoint {
            path: path.to_owned(),
            message: e.to_string(),
        })?;
        write_atomically(path, text.as_bytes())?;
        Ok(())
    }

    /// Whether a point was already measured.
    pub fn is_done(&self, point: &GridPoint) -> bool {
        self.observations.iter().any(|o| {
            o.kernel == point.kernel && o.shape == point.shape && o.threads == point.threads
        })
    }

    /// Records a measured point.
    pub fn record(&mut self, observation: Observation, provenance: Provenance) {
        self.provenance = self.provenance.combine(provenance);
        self.observations.push(observation);
    }

    /// Records a measured calibration network.
    pub fn record_network(&mut self, network: NetworkObservation, provenance: Provenance) {
        self.provenance = self.provenance.combine(provenance);
        self.networks.push(network);
    }

    /// Fits one model per (kernel type, thread count) with observations and
    /// builds the calibration. Kernel types that cannot be fitted are
    /// returned with the reason instead of failing the whole calibration.
    pub fn fit(&self, created_by: &str) -> (Calibration, Vec<(String, u32, FitError)>) {
        let mut kernels = Vec::new();
        let mut failures = Vec::new();
        for &threads in &self.grid.threads {
            for kernel in &self.grid.kernels {
                if !self
                    .observations
                    .iter()
                    .any(|o| &o.kernel == kernel && o.threads == threads)
                {
                    continue;
                }
                match KernelModel::fit(kernel, threads, &self.observations) {
                    Ok(m) => kernels.push(m),
                    Err(e) => failures.push((kernel.clone(), threads, e)),
                }
            }
        }
        let created_at_unix_s = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let calibration = Calibration {
            format_version: FORMAT_VERSION,
            created_by: created_by.to_owned(),
            created_at_unix_s,
            provenance: self.provenance,
            notes: vec![
                format!(
                    "{} shapes x {} kernel types x threads {:?}, {} ms window per point, {} points measured",
                    self.grid.shapes.len(),
                    self.grid.kernels.len(),
                    self.grid.threads,
                    self.grid.window_ms,
                    self.observations.len()
                ),
                "energy per call: energy energyd attributed to the calibrating process over the \
                 window of the calls, times the mean call time over the window; CPU time per \
                 call and power per CPU-second from the process CPU time over the window"
                    .to_owned(),
            ],
            machine: self.machine.clone(),
            kernels,
            overheads: Vec::new(),
        };
        let mut calibration = calibration;
        calibration.overheads = fit_overheads(&calibration, &self.networks);
        if !calibration.overheads.is_empty() {
            calibration.notes.push(format!(
                "overhead around kernels fitted on {} whole calibration networks (not the \
                 validation networks)",
                self.networks.len()
            ));
        }
        (calibration, failures)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use energy_model::model::Feature;

    /// A kernel whose call costs `2 µs + 0.5 ns × batch·in·out` and a meter
    /// that sees a constant 3 W: the fitted model must recover both.
    struct FakeRunner {
        runs: u32,
    }
    impl KernelRunner for FakeRunner {
        fn run(
            &mut self,
            kernel: &str,
            shape: FitShape,
            _: u32,
            iters: u32,
        ) -> Result<f64, String> {
            if kernel == "broken" {
                return Err("no such kernel".into());
            }
            self.runs += 1;
            let per_call = 2000.0 + 0.5 * Feature::BatchInOut.value(shape);
            // Spin a little so the window holds some CPU time.
            let t0 = std::time::Instant::now();
            while t0.elapsed() < std::time::Duration::from_micros(300) {
                std::hint::spin_loop();
            }
            let _ = iters;
            Ok(per_call)
        }
    }
    struct ConstantPower(f64);
    impl EnergyMeter for ConstantPower {
        fn measure(
            &mut self,
            _: &str,
            from: MonotonicNs,
            to: MonotonicNs,
        ) -> Result<MeteredEnergy, String> {
            Ok(MeteredEnergy {
                joules: self.0 * to.saturating_sub(from) as f64 * 1e-9,
                uncertainty_j: 0.0,
                provenance: Provenance::Estimated,
            })
        }
    }

    fn machine() -> MachineFingerprint {
        MachineFingerprint {
            cpu_model: "Test".into(),
            logical_cpus: 2,
            kernel_release: "6.1".into(),
            gpu: None,
            energy_sources: vec![],
            provenance: Provenance::Estimated,
        }
    }

    fn grid() -> Grid {
        Grid {
            kernels: vec!["linear_fwd".into()],
            shapes: Grid::default_shapes(),
            threads: vec![1],
            window_ms: 1,
        }
    }

    #[test]
    fn checkpointed_run_resumes_and_fits() {
        let dir = tempfile::tempdir().unwrap();
        let path = RunCheckpoint::path_for(&dir.path().join("cal.toml"));
        let mut runner = FakeRunner { runs: 0 };
        let mut meter = ConstantPower(3.0);
        let mut cp = RunCheckpoint::new(machine(), grid());
        let points = cp.grid.points();
        assert_eq!(points.len(), 16);
        // Measure half, "stop", reload, measure the rest.
        for p in &points[..8] {
            let (o, prov) = measure_point(&mut runner, &mut meter, p, 1).unwrap();
            cp.record(o, prov);
            cp.save(&path).unwrap();
        }
        let mut resumed = RunCheckpoint::load(&path).unwrap();
        // JSON keeps floats to within an ulp, not bit for bit.
        assert_eq!(resumed.grid, cp.grid);
        assert_eq!(resumed.observations.len(), 8);
        for (a, b) in resumed.observations.iter().zip(&cp.observations) {
            assert_eq!((&a.kernel, a.shape, a.calls), (&b.kernel, b.shape, b.calls));
            let rel =
                (a.cpu_time_per_call_ns - b.cpu_time_per_call_ns).abs() / b.cpu_time_per_call_ns;
            assert!(rel < 1e-12, "{a:?} vs {b:?}");
        }
        let todo: Vec<_> = points.iter().filter(|p| !resumed.is_done(p)).collect();
        assert_eq!(todo.len(), 8);
        for p in todo {
            let (o, prov) = measure_point(&mut runner, &mut meter, p, 1).unwrap();
            resumed.record(o, prov);
        }
        let (cal, failures) = resumed.fit("test");
        assert!(failures.is_empty());
        assert_eq!(cal.provenance, Provenance::Estimated);
        let model = cal.model("linear_fwd", 1).unwrap();
        let shape = FitShape {
            batch: 100,
            in_width: 30,
            out_width: 40,
        };
        let expected_j = (2000.0 + 0.5 * 100.0 * 30.0 * 40.0) * 1e-9 * 3.0;
        let got_j = model.energy_per_call_j(shape);
        // Power is measured over real (slept) windows around the calls, so
        // allow for scheduling jitter in the wall-clock window.
        assert!(
            ((got_j - expected_j) / expected_j).abs() < 0.05,
            "{got_j} vs {expected_j}"
        );
    }

    /// Networks whose measured energy is the kernels' prediction plus a
    /// known energy per call: the fit recovers it.
    #[test]
    fn overhead_per_call_is_recovered() {
        use nn_plan::{
            Activation, Backbone, DatasetShape, ModelSpec, Norm, OptimizerKind, RunShape,
        };
        let kinds = [
            "batch_gather",
            "linear_fwd",
            "linear_bwd_data",
            "linear_bwd_weight",
            "relu_fwd",
            "relu_bwd",
            "softmax_xent_fwd",
            "softmax_xent_bwd",
            "adamw_step",
        ];
        let mut cp = RunCheckpoint::new(
            machine(),
            Grid {
                kernels: kinds.iter().map(|k| k.to_string()).collect(),
                ..grid()
            },
        );
        for (i, kernel) in kinds.iter().enumerate() {
            for shape in Grid::default_shapes() {
                let ns = 1000.0 * (i + 1) as f64 + 0.2 * Feature::BatchInOut.value(shape);
                cp.record(
                    Observation {
                        kernel: kernel.to_string(),
                        shape,
                        threads: 1,
                        calls: 10,
                        wall_time_per_call_ns: ns,
                        cpu_time_per_call_ns: ns,
                        power_w: 3.5,
                    },
                    Provenance::Estimated,
                );
            }
        }
        let (kernels_only, failures) = cp.fit("test");
        assert!(failures.is_empty());
        assert!(kernels_only.overheads.is_empty());
        let per_call_j = 2e-7;
        for (widths, batch) in [(vec![32, 16], 64), (vec![100], 200)] {
            let description = NetworkRun {
                model: ModelSpec {
                    backbone: Backbone::Mlp { widths },
                    activation: Activation::Relu,
                    dropout: 0.0,
                    norm: Norm::None,
                },
                data: DatasetShape {
                    inputs: 7,
                    outputs: 2,
                    regression: false,
                    train_rows: 900,
                    val_rows: 200,
                    test_rows: 300,
                },
                run: RunShape {
                    optimizer: OptimizerKind::AdamW,
                    batch_size: batch,
                    eval_batch_size: 512,
                    epochs: 3,
                    threads: 1,
                },
            };
            let plan = NetworkPlan::of(&description.plan().unwrap());
            let priced = |k: &energy_model::predict::KernelPlan| {
                let calls = k.kernels.iter().map(|c| c.calls).sum::<u64>() as f64;
                kernels_only.predict_plan(k).unwrap().energy_j + per_call_j * calls
            };
            cp.record_network(
                NetworkObservation {
                    inference_passes: 4,
                    training_j: priced(&plan.training),
                    inference_j: priced(&plan.inference.repeated(4)),
                    description,
                },
                Provenance::Estimated,
            );
        }
        let (cal, _) = cp.fit("test");
        assert_eq!(cal.overheads.len(), 1);
        let o = &cal.overheads[0];
        assert_eq!((o.threads, o.samples), (1, 4));
        assert!(
            ((o.j_per_call - per_call_j) / per_call_j).abs() < 1e-6,
            "{}",
            o.j_per_call
        );
    }

    #[test]
    fn failing_kernel_and_silent_meter_are_errors() {
        let mut runner = FakeRunner { runs: 0 };
        let point = GridPoint {
            kernel: "broken".into(),
            shape: Grid::default_shapes()[0],
            threads: 1,
        };
        let err = measure_point(&mut runner, &mut ConstantPower(3.0), &point, 1).unwrap_err();
        assert!(err.to_string().contains("no such kernel"), "{err}");
        let point = GridPoint {
            kernel: "linear_fwd".into(),
            ..point
        };
        let err = measure_point(&mut runner, &mut ConstantPower(0.0), &point, 1).unwrap_err();
        assert!(err.to_string().contains("no energy attributed"), "{err}");
    }

    #[test]
    fn corrupt_checkpoint_is_a_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.partial.json");
        std::fs::write(&path, "{ not json").unwrap();
        let err = RunCheckpoint::load(&path).unwrap_err();
        assert!(err.to_string().contains("x.partial.json"), "{err}");
    }
}
