//! What the binary benchmarks and validates: tabular-nn's kernels and
//! training loop (the default), or the reference kernels of
//! [`calibration::reference`] (a check of the method on its own).

use anyhow::{bail, Context};
use calibration::meter::{metered, DaemonMeter, SETTLE};
use calibration::microbench::{EnergyMeter, KernelRunner, NetworkObservation, RunCheckpoint};
use calibration::reference::{self, ReferenceKernels, ReferenceMlp};
use clap::ValueEnum;
use energy_model::predict::NetworkPlan;
use energy_model::validate::{NetworkComparison, Phase};
use energy_model::{Calibration, FitShape, NetworkRun};
use nn_plan::{
    Activation, Backbone, KernelKind, KernelShape, ModelSpec, Norm, OptimizerKind, RunShape,
};
use shared::MonotonicNs;
use tabular_nn::meter::PhaseEnergy;
use tabular_nn::train::{train_and_evaluate, TrainConfig};

/// Which kernels to measure.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum RunnerKind {
    /// tabular-nn's kernels, run with the training code (`run_isolated`).
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

/// Kernel types of a runner: for the trainer, every kind it records.
pub fn kernel_names(kind: RunnerKind) -> Vec<String> {
    match kind {
        RunnerKind::Reference => reference::KERNELS.iter().map(|s| s.to_string()).collect(),
        RunnerKind::Trainer => KernelKind::ALL
            .iter()
            .map(|k| k.as_str().to_owned())
            .collect(),
    }
}

/// tabular-nn's `run_isolated`: the same code the training loop runs.
struct TrainerKernels;

impl KernelRunner for TrainerKernels {
    fn fit_shape(&self, kernel: &str, grid: FitShape) -> FitShape {
        match KernelKind::from_name(kernel) {
            Some(kind) => FitShape::of(&KernelShape::in_dense_block(
                kind,
                grid.batch,
                grid.in_width,
                grid.out_width,
            )),
            None => grid,
        }
    }

    fn run(
        &mut self,
        kernel: &str,
        shape: FitShape,
        threads: u32,
        iters: u32,
    ) -> Result<f64, String> {
        let kind = KernelKind::from_name(kernel)
            .ok_or_else(|| format!("{kernel:?} is not a kernel of this trainer"))?;
        let shape = shape.call_shape(kind.shape_class());
        tabular_nn::bench::run_isolated(kind, shape, threads as usize, iters)
            .map(|t| t.mean_ns)
            .map_err(|e| e.to_string())
    }
}

/// A runner of the chosen kind.
pub fn kernel_runner(kind: RunnerKind) -> Box<dyn KernelRunner> {
    match kind {
        RunnerKind::Reference => Box::new(ReferenceKernels),
        RunnerKind::Trainer => Box::new(TrainerKernels),
    }
}

/// Wall time each measured phase is run for: long enough that the 10 ms
/// steps of the estimated source are ~1 % of it.
const TRAIN_WINDOW_NS: u64 = 2_000_000_000;
const INFER_WINDOW_NS: u64 = 1_000_000_000;

/// Held-out networks of the trainer validation: widths, batch sizes,
/// activations and normalisations that are not points of the calibration
/// grid (whose widths are 8, 16, 64, 128, 256, 512 and batches 16, 64, 256,
/// 1024), and one network of each backbone, so `validate` reports its
/// accuracy per backbone (the FT-Transformer: d_token 48, 2 blocks, 4
/// heads, d_ffn 96; activation, dropout and norm of the tuple do not apply
/// to it, its own are the published ones). (backbone, architecture,
/// activation, dropout, norm, batch, optimizer)
const TRAINER_NETWORKS: [(&str, &str, Activation, f32, Norm, usize, OptimizerKind); 6] = [
    (
        "mlp",
        "96-48",
        Activation::Relu,
        0.0,
        Norm::None,
        100,
        OptimizerKind::AdamW,
    ),
    (
        "mlp",
        "200-200-200",
        Activation::Gelu,
        0.1,
        Norm::None,
        48,
        OptimizerKind::AdamW,
    ),
    (
        "resnet",
        "80-160-160",
        Activation::Relu,
        0.1,
        Norm::Layer,
        200,
        OptimizerKind::AdamW,
    ),
    (
        "mlp",
        "300-150",
        Activation::Silu,
        0.0,
        Norm::Batch,
        512,
        OptimizerKind::Sgd,
    ),
    (
        "mlp",
        "40-10",
        Activation::Tanh,
        0.0,
        Norm::None,
        32,
        OptimizerKind::AdamW,
    ),
    (
        "ft-transformer",
        "48-2-4-96",
        Activation::Relu,
        0.0,
        Norm::Layer,
        96,
        OptimizerKind::AdamW,
    ),
];

/// Whole networks `calibration run` trains after the microbenchmarks, to
/// fit the energy spent around kernels: a dataset and networks apart from
/// the validation ones. (backbone, architecture, activation, dropout,
/// norm, batch, optimizer)
const CALIBRATION_DATASET: &str = "credit_g";
const CALIBRATION_NETWORKS: [(&str, &str, Activation, f32, Norm, usize, OptimizerKind); 3] = [
    (
        "mlp",
        "64-64",
        Activation::Relu,
        0.0,
        Norm::None,
        64,
        OptimizerKind::AdamW,
    ),
    (
        "mlp",
        "16-16-16",
        Activation::Selu,
        0.1,
        Norm::None,
        16,
        OptimizerKind::Sgd,
    ),
    (
        "resnet",
        "128-256",
        Activation::Gelu,
        0.0,
        Norm::Batch,
        256,
        OptimizerKind::AdamW,
    ),
];

/// Held-out networks of the reference validation: widths and batch sizes
/// that are not points of the calibration grid.
const REFERENCE_NETWORKS: [(&[usize], usize); 4] = [
    (&[20, 96, 48, 2], 100),
    (&[30, 200, 200, 200, 1], 48),
    (&[12, 40, 10], 512),
    (&[64, 300, 150, 10], 200),
];

/// Trains (and runs inference on) held-out networks while energyd
/// measures them, and returns predicted against measured energy.
pub fn validate_networks(
    kind: RunnerKind,
    calibration: &Calibration,
    meter: &mut DaemonMeter,
    dataset: &str,
    threads: u32,
) -> anyhow::Result<Vec<NetworkComparison>> {
    match kind {
        RunnerKind::Reference => validate_reference(calibration, meter, threads),
        RunnerKind::Trainer => validate_trainer(calibration, meter, dataset, threads),
    }
}

/// One network trained and run for inference while energyd measured it.
struct MeasuredNetwork {
    name: String,
    description: NetworkRun,
    report: tabular_nn::train::TrainReport,
    /// (phase, measured J, provenance)
    phases: [(Phase, f64, shared::Provenance); 2],
}

/// Trains one network of a table entry on `dataset`, sized from the
/// calibration so training lasts about [`TRAIN_WINDOW_NS`], and measures
/// both phases.
fn train_measured(
    spec: (&str, &str, Activation, f32, Norm, usize, OptimizerKind),
    dataset: &tabular_nn::Dataset,
    calibration: &Calibration,
    meter: &mut DaemonMeter,
    threads: u32,
) -> anyhow::Result<MeasuredNetwork> {
    let (backbone, arch, activation, dropout, norm, batch_size, optimizer) = spec;
    let mut model = ModelSpec {
        backbone: Backbone::parse(backbone, arch)?,
        activation,
        dropout,
        norm,
    };
    // An FT-Transformer tokenizes each input feature: one token per numeric
    // column, one per categorical (its one-hot block), as `nas-client train`
    // builds it.
    if let Backbone::FtTransformer { feature_widths, .. } = &mut model.backbone {
        *feature_widths = dataset.feature_widths();
    }
    let mut config = TrainConfig {
        model,
        optimizer,
        batch_size,
        patience: None,
        threads: threads as usize,
        inference_min_ns: INFER_WINDOW_NS,
        ..TrainConfig::default()
    };
    let describe = |epochs: usize| NetworkRun {
        model: config.model.clone(),
        data: dataset.shape(),
        run: RunShape {
            optimizer,
            batch_size,
            eval_batch_size: config.eval_batch_size,
            epochs,
            threads,
        },
    };
    // Size the run from the prediction, so training lasts about its window.
    let one_epoch = calibration.predict_plan(&NetworkPlan::of(&describe(1).plan()?).training)?;
    // At most 5000 epochs: a small dataset (credit_g) needs many to fill
    // the window.
    config.epochs =
        (TRAIN_WINDOW_NS as f64 / one_epoch.cpu_time_ns.max(1.0)).clamp(1.0, 5000.0) as usize;
    let name = format!(
        "{} {} batch {batch_size}",
        dataset.name,
        config.model.describe()
    );
    let report = train_and_evaluate(dataset, &config, Some(meter.session()), &mut |_| {})
        .with_context(|| format!("training {name}"))?;
    let energy = report.energy.as_ref().with_context(|| {
        format!(
            "energyd measured nothing for {name}: {}",
            report
                .energy_unavailable
                .as_deref()
                .unwrap_or("no reason given")
        )
    })?;
    // Re-ask once the daemon has sampled past the end of each window.
    std::thread::sleep(SETTLE);
    let mut measure = |phase: Phase, window: &PhaseEnergy| {
        let measured = meter
            .session()
            .energy(MonotonicNs(window.from_ns), MonotonicNs(window.to_ns))
            .map(|p| metered(&p))
            .with_context(|| format!("asking energyd for the {phase} of {name}"))?;
        anyhow::Ok((phase, measured.joules, measured.provenance))
    };
    let phases = [
        measure(Phase::Training, &energy.train)?,
        measure(
            Phase::Inference,
            energy
                .inference
                .as_ref()
                .with_context(|| format!("the inference phase of {name} was not measured"))?,
        )?,
    ];
    let description = describe(report.epochs_run);
    Ok(MeasuredNetwork {
        name,
        description,
        report,
        phases,
    })
}

/// Trains the calibration networks at `threads` threads and records them
/// in the checkpoint (for [`calibration::microbench::fit_overheads`]).
pub fn measure_calibration_networks(
    checkpoint: &mut RunCheckpoint,
    meter: &mut DaemonMeter,
    threads: u32,
) -> anyhow::Result<()> {
    // Models of the points measured so far size the runs.
    let (partial, _) = checkpoint.fit("calibration (partial)");
    let dataset = tabular_nn::data::bundled::load(CALIBRATION_DATASET, 0)
        .with_context(|| format!("loading bundled dataset {CALIBRATION_DATASET}"))?;
    for spec in CALIBRATION_NETWORKS {
        let m = train_measured(spec, &dataset, &partial, meter, threads)?;
        checkpoint.record_network(
            NetworkObservation {
                description: m.description,
                inference_passes: m.report.inference.passes,
                training_j: m.phases[0].1,
                inference_j: m.phases[1].1,
            },
            m.phases[0].2.combine(m.phases[1].2),
        );
    }
    Ok(())
}

fn validate_trainer(
    calibration: &Calibration,
    meter: &mut DaemonMeter,
    dataset_name: &str,
    threads: u32,
) -> anyhow::Result<Vec<NetworkComparison>> {
    let dataset = tabular_nn::data::bundled::load(dataset_name, 0)
        .with_context(|| format!("loading bundled dataset {dataset_name}"))?;
    let mut rows = Vec::new();
    for spec in TRAINER_NETWORKS {
        let m = train_measured(spec, &dataset, calibration, meter, threads)?;
        let plan = NetworkPlan::of(&m.description.plan()?);
        let predicted_plans = [
            (plan.training, &m.report.train_kernels),
            (
                plan.inference
                    .repeated(u64::from(m.report.inference.passes)),
                &m.report.inference_kernels,
            ),
        ];
        for ((phase, measured_j, provenance), (kernels, recorded)) in
            m.phases.into_iter().zip(predicted_plans)
        {
            let predicted = calibration.predict_plan(&kernels)?;
            tracing::info!(
                network = %m.name,
                %phase,
                predicted_kernel_cpu_ms = predicted.cpu_time_ns / 1e6,
                predicted_overhead_j = predicted.overhead_j,
                recorded_kernel_wall_ms =
                    recorded.iter().map(|k| k.total_ns).sum::<u64>() as f64 / 1e6,
                "predicted kernel CPU time against the recorded spans (wall)"
            );
            for k in &predicted.per_kernel {
                let spans_ns = recorded
                    .iter()
                    .find(|r| r.kind.as_str() == k.kernel)
                    .map_or(0, |r| r.total_ns);
                tracing::debug!(
                    network = %m.name,
                    %phase,
                    kernel = %k.kernel,
                    predicted_cpu_ms = k.cpu_time_ns / 1e6,
                    recorded_wall_ms = spans_ns as f64 / 1e6,
                    "kernel time"
                );
            }
            rows.push(NetworkComparison {
                network: m.name.clone(),
                backbone: m.description.model.backbone.clone(),
                phase,
                predicted_j: predicted.energy_j,
                measured_j,
                provenance: predicted.provenance.combine(provenance),
            });
        }
    }
    Ok(rows)
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
        // The reference widths list input and output too; the backbone
        // names the hidden layers only.
        let backbone = nn_plan::Backbone::Mlp {
            widths: widths
                .get(1..widths.len().saturating_sub(1))
                .unwrap_or_default()
                .to_vec(),
        };
        let step = mlp.training_step_plan(batch, threads);
        let infer = mlp.inference_plan(batch, threads);

        // Size the runs from the prediction, so each lasts about its window.
        let step_pred = calibration.predict_plan(&step)?;
        let infer_pred = calibration.predict_plan(&infer)?;
        let steps =
            (TRAIN_WINDOW_NS as f64 / step_pred.cpu_time_ns.max(1.0)).clamp(3.0, 1e6) as u32;
        let batches =
            (INFER_WINDOW_NS as f64 / infer_pred.cpu_time_ns.max(1.0)).clamp(3.0, 1e6) as u32;

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
            backbone: backbone.clone(),
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
            backbone,
            phase: Phase::Inference,
            predicted_j: predicted.energy_j,
            measured_j: measured.joules,
            provenance: predicted.provenance.combine(measured.provenance),
        });
    }
    if rows.is_empty() {
        bail!("no reference network was validated");
    }
    Ok(rows)
}
