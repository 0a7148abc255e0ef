//! What the binary benchmarks and validates: the trainer's kernels
//! (nas-client, feature `trainer`) or the reference kernels of
//! [`calibration::reference`].

use anyhow::{bail, Context};
use calibration::meter::DaemonMeter;
use calibration::microbench::{EnergyMeter, KernelRunner};
use calibration::reference::{self, ReferenceKernels, ReferenceMlp};
use calibration::validate::{NetworkComparison, Phase};
use calibration::Calibration;
use clap::ValueEnum;
use shared::MonotonicNs;
use std::path::Path;

/// Which kernels to measure.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum RunnerKind {
    /// nas-client's kernels, run with the training code (`run_isolated`).
    Trainer,
    /// The reference dense/ReLU kernels of this crate (checks the method).
    Reference,
}

impl RunnerKind {
    /// Name used on the worker command line.
    pub fn arg(self) -> &'static str {
        match self {
            RunnerKind::Trainer => "trainer",
            RunnerKind::Reference => "reference",
        }
    }
}

/// Fixes the GEMM thread count of this process. matrixmultiply reads
/// `MATMUL_NUM_THREADS` once, at the first GEMM, so this must run before
/// any kernel; it is why `run` uses one worker process per thread count.
pub fn set_gemm_threads(threads: u32) {
    // Edition 2021: set_var is safe; called at start-up before any thread
    // that reads the environment exists.
    std::env::set_var("MATMUL_NUM_THREADS", threads.max(1).to_string());
}

/// Kernel types of a runner.
pub fn kernel_names(kind: RunnerKind) -> anyhow::Result<Vec<String>> {
    match kind {
        RunnerKind::Reference => Ok(reference::KERNELS.iter().map(|s| s.to_string()).collect()),
        RunnerKind::Trainer => trainer_kernel_names(),
    }
}

/// A runner of the chosen kind.
pub fn kernel_runner(kind: RunnerKind) -> anyhow::Result<Box<dyn KernelRunner>> {
    match kind {
        RunnerKind::Reference => Ok(Box::new(ReferenceKernels)),
        RunnerKind::Trainer => trainer_runner(),
    }
}

#[cfg(feature = "trainer")]
fn trainer_kernel_names() -> anyhow::Result<Vec<String>> {
    Ok(nas_client::kernels::KernelKind::ALL
        .iter()
        .map(|k| k.as_str().to_owned())
        .collect())
}

#[cfg(feature = "trainer")]
fn trainer_runner() -> anyhow::Result<Box<dyn KernelRunner>> {
    /// nas-client's `run_isolated`: the same code the training loop runs.
    struct TrainerKernels;
    impl KernelRunner for TrainerKernels {
        fn run(
            &mut self,
            kernel: &str,
            shape: calibration::KernelShape,
            threads: u32,
            iters: u32,
        ) -> Result<f64, String> {
            use nas_client::kernels::{run_isolated, KernelKind, KernelShape};
            let kind = KernelKind::from_name(kernel)
                .ok_or_else(|| format!("{kernel:?} is not a kernel of this trainer"))?;
            let shape = KernelShape {
                batch: shape.batch as usize,
                inputs: shape.in_width as usize,
                outputs: shape.out_width as usize,
            };
            run_isolated(kind, shape, threads as usize, iters)
                .map(|t| t.mean_ns)
                .map_err(|e| e.to_string())
        }
    }
    Ok(Box::new(TrainerKernels))
}

#[cfg(not(feature = "trainer"))]
const NO_TRAINER: &str = "this build of calibration has no trainer kernels: nas-client does not \
     export `kernels::run_isolated` yet (rebuild with `--features trainer` once it does), or use \
     `--runner reference`";

#[cfg(not(feature = "trainer"))]
fn trainer_kernel_names() -> anyhow::Result<Vec<String>> {
    bail!(NO_TRAINER)
}

#[cfg(not(feature = "trainer"))]
fn trainer_runner() -> anyhow::Result<Box<dyn KernelRunner>> {
    bail!(NO_TRAINER)
}

/// Held-out networks of the reference validation: widths and batch sizes
/// that are not points of the calibration grid.
const REFERENCE_NETWORKS: [(&[usize], usize); 4] = [
    (&[20, 96, 48, 2], 100),
    (&[30, 200, 200, 200, 1], 48),
    (&[12, 40, 10], 512),
    (&[64, 300, 150, 10], 200),
];

/// Wall time each measured phase is run for: long enough that the 10 ms
/// steps of the estimated source are ~1 % of it.
const TRAIN_WINDOW_NS: u64 = 2_000_000_000;
const INFER_WINDOW_NS: u64 = 1_000_000_000;

/// Trains (and runs inference on) held-out networks while energyd
/// measures them, and returns predicted against measured energy.
pub fn validate_networks(
    kind: RunnerKind,
    calibration: &Calibration,
    meter: &mut DaemonMeter,
    data: &Path,
    threads: u32,
    epochs: u32,
) -> anyhow::Result<Vec<NetworkComparison>> {
    match kind {
        RunnerKind::Reference => validate_reference(calibration, meter, threads),
        RunnerKind::Trainer => {
            let _ = (data, epochs);
            bail!(
                "validating the trainer needs nas-client's `train_and_evaluate` and a model \
                 description that lists the kernels a network emits (KernelPlan); neither is \
                 exported yet. Use `--runner reference` to validate the method meanwhile"
            )
        }
    }
}

fn validate_reference(
    calibration: &Calibration,
    meter: &mut DaemonMeter,
    threads: u32,
) -> anyhow::Result<Vec<NetworkComparison>> {
    let mut rows = Vec::new();
    for (widths, batch) in REFERENCE_NETWORKS {
        let mut mlp = ReferenceMlp::new(widths);
        let name = format!("{} batch {batch}", mlp.describe());
        let step = mlp.training_step_plan(batch, threads);
        let infer = mlp.inference_plan(batch, threads);

        // Size the runs from the prediction, so each lasts about its window.
        let step_pred = calibration.predict_plan(&step)?;
        let infer_pred = calibration.predict_plan(&infer)?;
        let steps = (TRAIN_WINDOW_NS as f64 / step_pred.time_ns.max(1.0)).clamp(3.0, 1e6) as u32;
        let batches = (INFER_WINDOW_NS as f64 / infer_pred.time_ns.max(1.0)).clamp(3.0, 1e6) as u32;

        mlp.train(batch, 1); // warm-up outside the window: first-touch faults
        let from = MonotonicNs::now();
        mlp.train(batch, steps);
        let to = MonotonicNs::now();
        let measured = meter
            .measure("reference_mlp_train", from, to)
            .map_err(anyhow::Error::msg)
            .with_context(|| format!("measuring training of {name}"))?;
        let predicted = calibration.predict_plan(&step.repeated(u64::from(steps)))?;
        rows.push(NetworkComparison {
            network: name.clone(),
            phase: Phase::Training,
            predicted_j: predicted.energy_j,
            measured_j: measured.joules,
            provenance: predicted.provenance.combine(measured.provenance),
        });

        let from = MonotonicNs::now();
        mlp.infer(batch, batches);
        let to = MonotonicNs::now();
        let measured = meter
            .measure("reference_mlp_infer", from, to)
            .map_err(anyhow::Error::msg)
            .with_context(|| format!("measuring inference of {name}"))?;
        let predicted = calibration.predict_plan(&infer.repeated(u64::from(batches)))?;
        rows.push(NetworkComparison {
            network: name,
            phase: Phase::Inference,
            predicted_j: predicted.energy_j,
            measured_j: measured.joules,
            provenance: predicted.provenance.combine(measured.provenance),
        });
    }
    Ok(rows)
}
