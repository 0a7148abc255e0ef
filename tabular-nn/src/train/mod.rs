//! Training and evaluation: the mini-batch loop with its optimizer and
//! schedule, early stopping on the validation split, test metrics,
//! inference timing, kernel times and (with energyd) energy.
//!
//! Entry point: [`train_and_evaluate`]. Everything it does runs on a rayon
//! pool of [`TrainConfig::threads`] threads (its GEMMs too, see
//! [`crate::gemm`]), and every op is a kernel span recorded by a
//! [`SpanRecorder`](crate::kernels::SpanRecorder).

pub mod loss;
pub mod optim;
pub mod trainer;

use crate::data::{Dataset, Split, Task};
use crate::kernels::{
    measure_record_cost_ns, span_end, span_start, KernelKind, KernelTime, SpanRecorder,
    DEFAULT_SPAN_CAPACITY,
};
use crate::meter::{MeterError, PhaseEnergy, PhaseMeter, SpanDelivery};
use crate::metrics::Metrics;
use crate::model::layers::{Ctx, Layer, Mode};
use crate::model::{BuildNetwork, ModelSpec, Network, SpecError};
pub use loss::{Loss, LossKind};
use ndarray::{s, Array2, ArrayView2};
pub use optim::{Optimizer, OptimizerKind, Schedule};
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::SeedableRng;
use serde::{Deserialize, Serialize};
use shared::MonotonicNs;

/// Everything that defines a training run besides the data.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TrainConfig {
    /// The model.
    pub model: ModelSpec,
    /// Optimizer.
    pub optimizer: OptimizerKind,
    /// Peak learning rate.
    pub lr: f32,
    /// Weight decay (decoupled for AdamW, L2 for SGD); not applied to
    /// biases and normalisation parameters.
    pub weight_decay: f32,
    /// AdamW β₁ or SGD momentum.
    pub momentum: f32,
    /// Rows per training step.
    pub batch_size: usize,
    /// Most epochs.
    pub epochs: usize,
    /// Linear warm-up length, in epochs (may be fractional).
    pub warmup_epochs: f32,
    /// Learning-rate schedule after warm-up.
    pub schedule: Schedule,
    /// Stop after this many epochs without a better validation loss; the
    /// best epoch's weights are kept. `None` trains all epochs and keeps
    /// the last weights.
    pub patience: Option<usize>,
    /// Seed of initialisation, shuffling and dropout.
    pub seed: u64,
    /// Threads for every heavy op (GEMM and element-wise kernels).
    pub threads: usize,
    /// Rows per forward pass in evaluation and inference.
    pub eval_batch_size: usize,
    /// Inference is repeated over the test split until it has run this
    /// long (for a stable timing, and an energy window energyd can resolve).
    pub inference_min_ns: u64,
    /// Ask energyd for the inference phase's energy (training energy is
    /// always asked for when energyd is used). With energyd, measuring
    /// stretches the inference phase to four policy windows (400 ms by
    /// default); a search whose energy objective is predicted from a
    /// calibration skips it.
    pub measure_inference_energy: bool,
}

impl Default for TrainConfig {
    /// The defaults of `nas-client train`: MLP 256-256 ReLU, dropout 0.1,
    /// AdamW lr 1e-3, weight decay 1e-5, batch 256, up to 40 epochs with
    /// one warm-up epoch and cosine decay, patience 8, seed 0.
    fn default() -> TrainConfig {
        TrainConfig {
            model: ModelSpec::default(),
            optimizer: OptimizerKind::AdamW,
            lr: 1e-3,
            weight_decay: 1e-5,
            momentum: 0.9,
            batch_size: 256,
            epochs: 40,
            warmup_epochs: 1.0,
            schedule: Schedule::Cosine,
            patience: Some(8),
            seed: 0,
            threads: crate::threads::available(),
            eval_batch_size: 4096,
            inference_min_ns: 300_000_000,
            measure_inference_energy: true,
        }
    }
}

/// Why training failed.
#[derive(Debug, thiserror::Error)]
pub enum TrainError {
    /// The model description is invalid.
    #[error(transparent)]
    Spec(#[from] SpecError),
    /// A setting is out of range.
    #[error("invalid setting: {0}")]
    Config(String),
    /// The thread pool could not be built.
    #[error("cannot build a pool of {threads} threads: {message}")]
    ThreadPool {
        /// Threads asked for.
        threads: usize,
        /// Cause.
        message: String,
    },
    /// The loss became NaN or infinite.
    #[error("training diverged at epoch {epoch} (loss {loss}); lower the learning rate")]
    Diverged {
        /// 1-based epoch.
        epoch: usize,
        /// The loss.
        loss: f64,
    },
}

/// One epoch of training.
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
pub struct EpochRecord {
    /// 1-based epoch.
    pub epoch: usize,
    /// Mean training loss over the epoch's steps.
    pub train_loss: f64,
    /// Validation loss (log loss, or MSE of the standardised target).
    pub val_loss: f64,
    /// Validation headline score (accuracy or R²).
    pub val_score: f64,
    /// Learning rate of the epoch's last step.
    pub lr: f32,
    /// Time in training steps this epoch, ns.
    pub step_time_ns: u64,
}

/// Inference timing over the test split.
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
pub struct InferenceTiming {
    /// Rows predicted in total (test rows × passes).
    pub rows: u64,
    /// Passes over the test split.
    pub passes: u32,
    /// Time of all passes, ns.
    pub time_ns: u64,
    /// Rows per second.
    pub rows_per_s: f64,
}

/// Energy of a run, from energyd.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RunEnergy {
    /// The training phase (all epochs, validation included).
    pub train: PhaseEnergy,
    /// The inference phase (see [`InferenceTiming`]); `None` when not
    /// measured ([`TrainConfig::measure_inference_energy`]).
    pub inference: Option<PhaseEnergy>,
    /// Inference energy per 1000 rows, joules (`None` when not measured).
    pub inference_j_per_1000_rows: Option<f64>,
}

/// Everything a run produced.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TrainReport {
    /// Dataset name.
    pub dataset: String,
    /// Task.
    pub task: Task,
    /// The configuration used.
    pub config: TrainConfig,
    /// One-line model description.
    pub model: String,
    /// Trainable scalars.
    pub parameters: usize,
    /// Floating-point operations per row of inference.
    pub flops_per_row_inference: u64,
    /// Floating-point operations per row of a training step.
    pub flops_per_row_training: u64,
    /// Rows of train/validation/test.
    pub rows: [usize; 3],
    /// Epochs run.
    pub epochs_run: usize,
    /// Epoch whose weights were kept.
    pub best_epoch: usize,
    /// Whether early stopping ended training.
    pub stopped_early: bool,
    /// Per-epoch figures.
    pub history: Vec<EpochRecord>,
    /// Validation metrics of the kept weights.
    pub val: Metrics,
    /// Test metrics of the kept weights.
    pub test: Metrics,
    /// Time in training steps (forward, backward, optimizer), ns.
    pub train_step_time_ns: u64,
    /// Wall time of the training phase including validation, ns.
    pub train_wall_ns: u64,
    /// Training rows per second of step time.
    pub train_rows_per_s: f64,
    /// Inference timing.
    pub inference: InferenceTiming,
    /// Per-kernel time in the training phase.
    pub train_kernels: Vec<KernelTime>,
    /// Per-kernel time in the inference phase.
    pub inference_kernels: Vec<KernelTime>,
    /// Spans recorded.
    pub spans_recorded: u64,
    /// Measured cost of recording one span, ns.
    pub span_cost_ns: f64,
    /// Estimated share of training step time spent recording spans.
    pub span_overhead_fraction: f64,
    /// Energy, when energyd was used.
    pub energy: Option<RunEnergy>,
    /// Why there is no energy, when there is none.
    pub energy_unavailable: Option<String>,
    /// What became of the kernel spans sent to energyd (`None` without
    /// energyd).
    #[serde(default)]
    pub span_delivery: Option<SpanDelivery>,
}

/// Copies `source` rows `idx` into `dst` (resized if needed): the
/// mini-batch gather.
pub fn gather_rows(source: &Array2<f32>, idx: &[usize], dst: &mut Array2<f32>) {
    let cols = source.ncols();
    if dst.dim() != (idx.len(), cols) {
        // Keep the allocation across the full-size/last-batch switch.
        let (mut values, _) = std::mem::take(dst).into_raw_vec_and_offset();
        values.resize(idx.len() * cols, 0.0);
        *dst = Array2::from_shape_vec((idx.len(), cols), values).expect("length is rows × cols");
    }
    for (mut row, &i) in dst.rows_mut().into_iter().zip(idx) {
        row.assign(&source.row(i));
    }
}

/// Trains a model on `dataset` as `config` says, evaluates it, and times
/// inference; with an energy `PhaseMeter` (energyd's session), also measures
/// the energy of training and inference. `on_epoch` sees each epoch as it ends (progress
/// bars, search pruning).
pub fn train_and_evaluate(
    dataset: &Dataset,
    config: &TrainConfig,
    energy: Option<&mut dyn PhaseMeter>,
    on_epoch: &mut (dyn FnMut(&EpochRecord) + Send),
) -> Result<TrainReport, TrainError> {
    validate(config)?;
    let pool = crate::threads::build_pool(config.threads).map_err(|e| TrainError::ThreadPool {
        threads: config.threads,
        message: e.to_string(),
    })?;
    // The recorder is created on the pool thread that runs the loop, so the
    // spans carry that thread's id.
    pool.install(|| {
        let net = config
            .model
            .build(dataset.n_features(), dataset.n_outputs(), config.seed)?;
        run(dataset, config, net, energy, on_epoch).map(|(report, _)| report)
    })
}

/// [`train_and_evaluate`] starting from the weights of `net` instead of a
/// fresh initialisation of `config.model` (fine-tuning a network that
/// grew, as neuron splitting does between rounds); returns the trained
/// network with the report. `net` must be the network `config.model`
/// describes (its report names that model). The optimizer starts fresh.
pub fn train_network(
    dataset: &Dataset,
    config: &TrainConfig,
    net: Network,
    energy: Option<&mut dyn PhaseMeter>,
    on_epoch: &mut (dyn FnMut(&EpochRecord) + Send),
) -> Result<(TrainReport, Network), TrainError> {
    validate(config)?;
    if net.inputs != dataset.n_features() || net.outputs != dataset.n_outputs() {
        return Err(TrainError::Config(format!(
            "the network maps {} inputs to {} outputs; the dataset has {} features and {} outputs",
            net.inputs,
            net.outputs,
            dataset.n_features(),
            dataset.n_outputs()
        )));
    }
    let pool = crate::threads::build_pool(config.threads).map_err(|e| TrainError::ThreadPool {
        threads: config.threads,
        message: e.to_string(),
    })?;
    pool.install(|| run(dataset, config, net, energy, on_epoch))
}

fn validate(config: &TrainConfig) -> Result<(), TrainError> {
    let bad = |m: &str| Err(TrainError::Config(m.to_owned()));
    if config.batch_size == 0 || config.eval_batch_size == 0 {
        return bad("batch sizes must be at least 1");
    }
    if config.epochs == 0 {
        return bad("epochs must be at least 1");
    }
    if !(config.lr.is_finite() && config.lr > 0.0) {
        return bad("the learning rate must be a positive number");
    }
    if !(0.0..1.0).contains(&config.momentum) {
        return bad("momentum must be in [0, 1)");
    }
    if config.weight_decay.is_nan() || config.weight_decay < 0.0 {
        return bad("weight decay must be non-negative");
    }
    Ok(())
}

fn loss_kind(task: Task) -> LossKind {
    match task {
        Task::Regression => LossKind::Mse,
        _ => LossKind::SoftmaxCrossEntropy,
    }
}

fn run(
    dataset: &Dataset,
    config: &TrainConfig,
    mut net: Network,
    mut energy: Option<&mut dyn PhaseMeter>,
    on_epoch: &mut (dyn FnMut(&EpochRecord) + Send),
) -> Result<(TrainReport, Network), TrainError> {
    let parameters = net.parameter_count();
    let (flops_inf, flops_train) = net.flops_per_row();
    let mut recorder =
        SpanRecorder::new(DEFAULT_SPAN_CAPACITY, energy.as_ref().map(|e| e.uploader()));
    let mut ctx = Ctx::new(&mut recorder, config.seed.wrapping_add(0x5eed));
    let mut opt = Optimizer::new(
        config.optimizer,
        config.momentum,
        0.999,
        config.weight_decay,
    );
    let mut loss = loss_kind(dataset.task).build(config.batch_size, dataset.n_outputs());
    let train = &dataset.train;
    let n = train.rows();
    let steps_per_epoch = n.div_ceil(config.batch_size);
    let total_steps = steps_per_epoch * config.epochs;
    let warmup =
        ((config.warmup_epochs.max(0.0) * steps_per_epoch as f32) as usize).min(total_steps);
    let mut shuffle_rng = StdRng::seed_from_u64(config.seed);
    let mut order: Vec<usize> = (0..n).collect();
    let mut xb = Array2::<f32>::zeros((config.batch_size, dataset.n_features()));
    let mut yb = ndarray::Array1::<f32>::zeros(config.batch_size);

    let train_start = MonotonicNs::now();
    let mut history = Vec::new();
    let mut best: Option<(f64, usize, Vec<Vec<f32>>)> = None;
    let mut step = 0usize;
    let mut step_time_ns = 0u64;
    let mut stopped_early = false;
    for epoch in 1..=config.epochs {
        order.shuffle(&mut shuffle_rng);
        let epoch_start = MonotonicNs::now();
        let mut loss_sum = 0.0f64;
        let mut lr = config.lr;
        for chunk in order.chunks(config.batch_size) {
            let t = span_start(ctx.sink);
            gather_rows(&train.x, chunk, &mut xb);
            if yb.len() != chunk.len() {
                yb = ndarray::Array1::zeros(chunk.len());
            }
            for (y, &i) in yb.iter_mut().zip(chunk) {
                *y = train.y[i];
            }
            span_end(ctx.sink, KernelKind::BatchGather, t);
            net.zero_grad();
            net.body.forward(xb.view(), Mode::Train, &mut ctx);
            loss_sum += loss.forward(net.body.output(), yb.view(), &mut ctx);
            loss.backward(net.body.output(), yb.view(), &mut ctx);
            net.body.backward(xb.view(), loss.grad(), false, &mut ctx);
            lr = config.schedule.lr(config.lr, step, total_steps, warmup);
            opt.step(&mut net.body, lr, &mut ctx);
            step += 1;
        }
        let epoch_steps_ns = MonotonicNs::now().saturating_sub(epoch_start);
        step_time_ns += epoch_steps_ns;
        let train_loss = loss_sum / steps_per_epoch.max(1) as f64;
        if !train_loss.is_finite() {
            return Err(TrainError::Diverged {
                epoch,
                loss: train_loss,
            });
        }
        let (val_loss, val_metrics) = evaluate(&mut net, dataset, &dataset.val, config, &mut ctx);
        let record = EpochRecord {
            epoch,
            train_loss,
            val_loss,
            val_score: val_metrics.score(),
            lr,
            step_time_ns: epoch_steps_ns,
        };
        history.push(record);
        on_epoch(&record);
        ctx.sink.flush();
        if let Some(session) = energy.as_deref_mut() {
            // Outside the timed steps; sends only what is due.
            session.poll_spans();
        }
        if let Some(patience) = config.patience {
            let improved = best.as_ref().is_none_or(|(b, _, _)| val_loss < *b);
            if improved {
                best = Some((val_loss, epoch, net.snapshot()));
            } else if best.as_ref().is_some_and(|(_, e, _)| epoch - e >= patience) {
                stopped_early = epoch < config.epochs;
                break;
            }
        }
    }
    let epochs_run = history.len();
    let best_epoch = match &best {
        Some((_, epoch, snapshot)) => {
            net.restore(snapshot);
            *epoch
        }
        None => epochs_run,
    };
    let (_, val) = evaluate(&mut net, dataset, &dataset.val, config, &mut ctx);
    let (_, test) = evaluate(&mut net, dataset, &dataset.test, config, &mut ctx);
    ctx.sink.flush();
    let train_end = MonotonicNs::now();
    // `ctx` borrows the recorder; its last use is above.
    let train_kernels = recorder.kernel_times();
    let train_spans = recorder.recorded();

    // Inference: forward passes over the test split, its own recorder so the
    // kernel table separates it.
    let mut infer_recorder =
        SpanRecorder::new(DEFAULT_SPAN_CAPACITY, energy.as_ref().map(|e| e.uploader()));
    let min_ns = match &energy {
        // Long enough for the daemon's minimum window, with margin.
        Some(s) if config.measure_inference_energy => config
            .inference_min_ns
            .max(s.min_window_ns().saturating_mul(4)),
        _ => config.inference_min_ns,
    };
    let infer_start = MonotonicNs::now();
    let mut passes = 0u32;
    {
        let mut ictx = Ctx::new(&mut infer_recorder, config.seed);
        loop {
            forward_all(
                &mut net,
                dataset.test.x.view(),
                config.eval_batch_size,
                &mut ictx,
                |_, _| {},
            );
            passes += 1;
            if MonotonicNs::now().saturating_sub(infer_start) >= min_ns {
                break;
            }
        }
        ictx.sink.flush();
    }
    let infer_end = MonotonicNs::now();
    let infer_ns = infer_end.saturating_sub(infer_start);
    let infer_rows = u64::from(passes) * dataset.test.rows() as u64;

    let span_delivery = energy.as_deref_mut().map(|session| {
        // Every span of both phases reaches the daemon before their energy
        // (and its per-kernel split) is asked for.
        session.flush_spans();
        session.span_delivery()
    });
    let (energy_report, energy_unavailable) = match energy {
        None => (None, Some("energyd not used".to_owned())),
        Some(session) => {
            let infer = config
                .measure_inference_energy
                .then_some((infer_start, infer_end));
            match measure_phases(session, (train_start, train_end), infer) {
                Ok((train_e, infer_e)) => {
                    let per_1000 = infer_e
                        .as_ref()
                        .map(|e| e.process_j / infer_rows.max(1) as f64 * 1000.0);
                    (
                        Some(RunEnergy {
                            train: train_e,
                            inference: infer_e,
                            inference_j_per_1000_rows: per_1000,
                        }),
                        None,
                    )
                }
                Err(e) => {
                    tracing::warn!("no energy figures: {e}");
                    (None, Some(e.to_string()))
                }
            }
        }
    };

    let span_cost_ns = measure_record_cost_ns(100_000);
    let spans_recorded = train_spans + infer_recorder.recorded();
    let span_overhead_fraction = train_spans as f64 * span_cost_ns / step_time_ns.max(1) as f64;
    let train_rows_per_s = (epochs_run * n) as f64 / (step_time_ns.max(1) as f64 * 1e-9);
    let report = TrainReport {
        dataset: dataset.name.clone(),
        task: dataset.task,
        config: config.clone(),
        model: config.model.describe(),
        parameters,
        flops_per_row_inference: flops_inf,
        flops_per_row_training: flops_train,
        rows: [n, dataset.val.rows(), dataset.test.rows()],
        epochs_run,
        best_epoch,
        stopped_early,
        history,
        val,
        test,
        train_step_time_ns: step_time_ns,
        train_wall_ns: train_end.saturating_sub(train_start),
        train_rows_per_s,
        inference: InferenceTiming {
            rows: infer_rows,
            passes,
            time_ns: infer_ns,
            rows_per_s: infer_rows as f64 / (infer_ns.max(1) as f64 * 1e-9),
        },
        train_kernels,
        inference_kernels: infer_recorder.kernel_times(),
        spans_recorded,
        span_cost_ns,
        span_overhead_fraction,
        energy: energy_report,
        energy_unavailable,
        span_delivery,
    };
    Ok((report, net))
}

fn measure_phases(
    session: &mut dyn PhaseMeter,
    train: (MonotonicNs, MonotonicNs),
    infer: Option<(MonotonicNs, MonotonicNs)>,
) -> Result<(PhaseEnergy, Option<PhaseEnergy>), MeterError> {
    let train = session.phase(train.0, train.1)?;
    let infer = match infer {
        Some((from, to)) => Some(session.phase(from, to)?),
        None => None,
    };
    Ok((train, infer))
}

/// Runs the network forward over `x` in chunks of `batch` rows (evaluation
/// mode), handing each chunk's row range and output to `sink`.
pub fn forward_all(
    net: &mut Network,
    x: ArrayView2<f32>,
    batch: usize,
    ctx: &mut Ctx,
    mut sink: impl FnMut(std::ops::Range<usize>, ArrayView2<f32>),
) {
    let n = x.nrows();
    let mut start = 0;
    while start < n {
        let end = (start + batch).min(n);
        net.body
            .forward(x.slice(s![start..end, ..]), Mode::Eval, ctx);
        sink(start..end, net.body.output());
        start = end;
    }
}

/// Predictions for every row of `x`: class probabilities (classification)
/// or values in the target's units (regression), with no spans recorded.
pub fn predict(
    net: &mut Network,
    dataset: &Dataset,
    x: ArrayView2<f32>,
    batch: usize,
) -> Array2<f64> {
    let mut sink = crate::kernels::NullSink;
    let mut ctx = Ctx::new(&mut sink, 0);
    let mut out = Array2::<f64>::zeros((x.nrows(), net.outputs));
    forward_all(net, x, batch, &mut ctx, |range, y| {
        let block = match dataset.task {
            Task::Regression => y.mapv(|v| dataset.target_scale.unscale(f64::from(v))),
            _ => loss::softmax(y),
        };
        out.slice_mut(s![range, ..]).assign(&block);
    });
    out
}

/// Loss (log loss or standardised MSE) and metrics of the network on a split.
fn evaluate(
    net: &mut Network,
    dataset: &Dataset,
    split: &Split,
    config: &TrainConfig,
    ctx: &mut Ctx,
) -> (f64, Metrics) {
    let mut loss = loss_kind(dataset.task).build(config.eval_batch_size, dataset.n_outputs());
    let mut outputs = Array2::<f32>::zeros((split.rows(), dataset.n_outputs()));
    let mut loss_sum = 0.0f64;
    let n = split.rows();
    let mut start = 0;
    while start < n {
        let end = (start + config.eval_batch_size).min(n);
        net.body
            .forward(split.x.slice(s![start..end, ..]), Mode::Eval, ctx);
        let y = split.y.slice(s![start..end]);
        loss_sum += loss.forward(net.body.output(), y, ctx) * (end - start) as f64;
        outputs
            .slice_mut(s![start..end, ..])
            .assign(&net.body.output());
        start = end;
    }
    let mean_loss = loss_sum / n.max(1) as f64;
    let metrics = match dataset.task {
        Task::Regression => {
            let scale = dataset.target_scale;
            let pred: Vec<f64> = outputs
                .column(0)
                .iter()
                .map(|&v| scale.unscale(f64::from(v)))
                .collect();
            let truth: Vec<f64> = split
                .y
                .iter()
                .map(|&v| scale.unscale(f64::from(v)))
                .collect();
            Metrics::regression(&pred, &truth)
        }
        _ => Metrics::classification(&loss::softmax(outputs.view()), split.y.view()),
    };
    (mean_loss, metrics)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::{read_table_bytes, LoadOptions};
    use crate::model::layers::{Activation, Norm};
    use crate::model::Backbone;

    /// Two Gaussian-ish blobs separated along x0 + x1, with a noise column
    /// and a categorical column that carries no signal.
    fn separable(rows: usize) -> Dataset {
        use rand::Rng;
        let mut rng = StdRng::seed_from_u64(42);
        let mut text = String::from("x0,x1,noise,color,label\n");
        for i in 0..rows {
            let class = i % 2;
            let centre = if class == 0 { -1.5 } else { 1.5 };
            let x0: f64 = centre + rng.gen_range(-1.0..1.0);
            let x1: f64 = centre + rng.gen_range(-1.0..1.0);
            let noise: f64 = rng.gen_range(-3.0..3.0);
            let color = ["red", "blue", "green"][rng.gen_range(0..3)];
            text.push_str(&format!(
                "{x0},{x1},{noise},{color},{}\n",
                ["no", "yes"][class]
            ));
        }
        let table = read_table_bytes("separable.csv", text.as_bytes()).expect("reads");
        Dataset::from_table("separable", &table, &LoadOptions::new("label")).expect("loads")
    }

    fn quick_config() -> TrainConfig {
        TrainConfig {
            model: ModelSpec {
                backbone: Backbone::Mlp {
                    widths: vec![32, 32],
                },
                activation: Activation::Relu,
                dropout: 0.0,
                norm: Norm::None,
            },
            epochs: 15,
            batch_size: 64,
            threads: 1,
            inference_min_ns: 0,
            ..TrainConfig::default()
        }
    }

    #[test]
    fn separable_data_is_learned_almost_perfectly() {
        let ds = separable(1000);
        let report = train_and_evaluate(&ds, &quick_config(), None, &mut |_| {}).expect("trains");
        let acc = report.test.accuracy.expect("classification");
        assert!(acc >= 0.98, "test accuracy {acc}");
        assert!(report.test.roc_auc.expect("binary") > 0.99);
        // Every op of a step shows up as a kernel.
        let kinds: Vec<_> = report.train_kernels.iter().map(|k| k.kind).collect();
        for k in [
            KernelKind::BatchGather,
            KernelKind::LinearFwd,
            KernelKind::LinearBwdData,
            KernelKind::LinearBwdWeight,
            KernelKind::ReluFwd,
            KernelKind::ReluBwd,
            KernelKind::SoftmaxXentFwd,
            KernelKind::SoftmaxXentBwd,
            KernelKind::AdamwStep,
        ] {
            assert!(kinds.contains(&k), "{k} missing from {kinds:?}");
        }
        assert!(report.inference.rows >= ds.test.rows() as u64);
        assert!(report.energy.is_none() && report.energy_unavailable.is_some());
    }

    /// Fine-tuning continues from the given weights: a trained network
    /// trained one epoch more starts near its old validation loss, far
    /// below a fresh one's first epoch; a network of the wrong shape is
    /// refused.
    #[test]
    fn train_network_continues_from_given_weights() {
        let ds = separable(600);
        let mut config = quick_config();
        config.epochs = 6;
        let fresh = config
            .model
            .build(ds.n_features(), ds.n_outputs(), config.seed)
            .expect("builds");
        let (first, net) = train_network(&ds, &config, fresh, None, &mut |_| {}).expect("trains");
        config.epochs = 1;
        let (again, _) = train_network(&ds, &config, net, None, &mut |_| {}).expect("trains");
        let trained = first.history.last().expect("epochs").val_loss;
        let initial = first.history[0].val_loss;
        assert!(again.history[0].val_loss < 0.5 * initial + 0.5 * trained);
        let wrong = config.model.build(3, 2, 0).expect("builds");
        assert!(train_network(&ds, &config, wrong, None, &mut |_| {}).is_err());
    }

    #[test]
    fn a_seed_makes_a_run_repeatable() {
        let ds = separable(400);
        let mut config = quick_config();
        config.epochs = 3;
        config.model.dropout = 0.2;
        let a = train_and_evaluate(&ds, &config, None, &mut |_| {}).expect("trains");
        let b = train_and_evaluate(&ds, &config, None, &mut |_| {}).expect("trains");
        let losses = |r: &TrainReport| {
            r.history
                .iter()
                .map(|e| (e.train_loss, e.val_loss))
                .collect::<Vec<_>>()
        };
        assert_eq!(losses(&a), losses(&b));
        assert_eq!(a.test.log_loss, b.test.log_loss);
        config.seed = 1;
        let c = train_and_evaluate(&ds, &config, None, &mut |_| {}).expect("trains");
        assert_ne!(losses(&a), losses(&c));
    }

    #[test]
    fn resnet_sgd_and_regression_train() {
        use rand::Rng;
        let mut rng = StdRng::seed_from_u64(1);
        let mut text = String::from("a,b,y\n");
        for _ in 0..600 {
            let a: f64 = rng.gen_range(-2.0..2.0);
            let b: f64 = rng.gen_range(-2.0..2.0);
            text.push_str(&format!("{a},{b},{}\n", 3.0 * a - b * b + 10.0));
        }
        let table = read_table_bytes("reg.csv", text.as_bytes()).expect("reads");
        let ds = Dataset::from_table("reg", &table, &LoadOptions::new("y")).expect("loads");
        let mut config = quick_config();
        config.model = ModelSpec {
            backbone: Backbone::Resnet {
                d_main: 32,
                d_hidden: vec![64, 64],
            },
            activation: Activation::Gelu,
            dropout: 0.0,
            norm: Norm::Batch,
        };
        config.optimizer = OptimizerKind::Sgd;
        config.lr = 0.05;
        config.epochs = 30;
        let report = train_and_evaluate(&ds, &config, None, &mut |_| {}).expect("trains");
        let r2 = report.test.r2.expect("regression");
        assert!(r2 > 0.95, "test R² {r2}");
        assert!(report
            .train_kernels
            .iter()
            .any(|k| k.kind == KernelKind::SgdStep));
        assert!(report
            .train_kernels
            .iter()
            .any(|k| k.kind == KernelKind::ResidualAddBwd));
    }

    #[test]
    fn early_stopping_keeps_the_best_epoch() {
        let ds = separable(300);
        let mut config = quick_config();
        config.epochs = 60;
        config.patience = Some(2);
        config.lr = 0.01;
        let report = train_and_evaluate(&ds, &config, None, &mut |_| {}).expect("trains");
        let best = report
            .history
            .iter()
            .min_by(|a, b| a.val_loss.total_cmp(&b.val_loss))
            .expect("epochs");
        assert_eq!(report.best_epoch, best.epoch);
        if report.stopped_early {
            assert_eq!(report.epochs_run, report.best_epoch + 2);
        }
    }

    /// Records every span of one step and compares with the plan.
    #[test]
    fn step_plan_lists_exactly_the_recorded_kernels() {
        struct Kinds(Vec<KernelKind>);
        impl crate::kernels::SpanSink for Kinds {
            fn enabled(&self) -> bool {
                true
            }
            fn record(&mut self, kind: KernelKind, _: MonotonicNs, _: MonotonicNs) {
                self.0.push(kind);
            }
        }
        let spec = ModelSpec {
            backbone: Backbone::Resnet {
                d_main: 8,
                d_hidden: vec![16, 12],
            },
            activation: Activation::Silu,
            dropout: 0.1,
            norm: Norm::Layer,
        };
        let mut net = spec.build(5, 3, 0).expect("builds");
        let x = Array2::<f32>::ones((7, 5));
        let y = ndarray::Array1::<f32>::zeros(7);
        let mut sink = Kinds(Vec::new());
        {
            let mut ctx = Ctx::new(&mut sink, 0);
            let t = span_start(ctx.sink);
            span_end(ctx.sink, KernelKind::BatchGather, t);
            let mut loss = LossKind::SoftmaxCrossEntropy.build(7, 3);
            let mut opt = Optimizer::new(OptimizerKind::AdamW, 0.9, 0.999, 0.0);
            net.body.forward(x.view(), Mode::Train, &mut ctx);
            loss.forward(net.body.output(), y.view(), &mut ctx);
            loss.backward(net.body.output(), y.view(), &mut ctx);
            net.body.backward(x.view(), loss.grad(), false, &mut ctx);
            opt.step(&mut net.body, 1e-3, &mut ctx);
        }
        let arch = spec.architecture(5, 3).expect("expands");
        let data = nn_plan::DatasetShape {
            inputs: 5,
            outputs: 3,
            regression: false,
            train_rows: 7,
            val_rows: 7,
            test_rows: 7,
        };
        let plan = nn_plan::plan::step_calls(&arch, &data, OptimizerKind::AdamW, 7);
        assert_eq!(plan.iter().map(|p| p.kind).collect::<Vec<_>>(), sink.0);
        assert_eq!(plan[1].shape, nn_plan::KernelShape::dense(7, 5, 8));
        assert_eq!(
            plan.last().map(|p| p.shape),
            Some(nn_plan::KernelShape::Elementwise {
                n: net.parameter_count() as u64
            })
        );
        let inference = nn_plan::plan::inference_calls(&arch, 100);
        assert!(!inference
            .iter()
            .any(|p| p.kind == KernelKind::LinearBwdData));
    }

    #[test]
    fn bad_settings_are_errors() {
        let ds = separable(100);
        let mut config = quick_config();
        config.batch_size = 0;
        assert!(matches!(
            train_and_evaluate(&ds, &config, None, &mut |_| {}),
            Err(TrainError::Config(_))
        ));
    }
}
