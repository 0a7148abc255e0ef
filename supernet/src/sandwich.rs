//! Sandwich-rule training (US-Nets; the loop of AttentiveNAS's
//! `train_attentive_nas.py`): per step the largest child on the labels,
//! then `n` random children and the smallest child, each on the largest
//! child's soft targets (in-place distillation) or on the labels; their
//! gradients accumulate in the shared parameters, and one optimizer step
//! updates the whole supernet.
//!
//! Faithful: order (largest, random…, smallest last), the teacher's
//! outputs taken from its training-mode forward pass (dropout on) and
//! detached, one step per batch. Changed: children keep the space's
//! dropout (AttentiveNAS sets it to 0 for all but the largest), so a
//! child trains with the dropout its [`ModelSpec`](nn_plan::ModelSpec)
//! states and a from-scratch retraining would use; TabNAS's layer warm-up
//! is not implemented.

use crate::net::{Supernet, SupernetError};
use ndarray::{Array1, Array2, ArrayView1, ArrayView2};
use rand::rngs::{SmallRng, StdRng};
use rand::seq::SliceRandom;
use rand::SeedableRng;
use shared::MonotonicNs;
use tabular_nn::data::{Dataset, Task};
use tabular_nn::kernels::{
    span_end, span_start, KernelKind, KernelTime, SpanRecorder, DEFAULT_SPAN_CAPACITY,
};
use tabular_nn::meter::{PhaseEnergy, PhaseMeter, SpanDelivery};
use tabular_nn::model::layers::{Ctx, Layer};
use tabular_nn::train::loss::softmax;
use tabular_nn::train::{gather_rows, Optimizer, OptimizerKind, Schedule};

/// Settings of a supernet training.
#[derive(Debug, Clone, PartialEq)]
pub struct SandwichConfig {
    /// Passes over the training split.
    pub epochs: usize,
    /// Rows per step (every child of a step sees the same batch).
    pub batch_size: usize,
    /// Peak learning rate.
    pub lr: f32,
    /// Optimizer.
    pub optimizer: OptimizerKind,
    /// AdamW β₁ or SGD momentum.
    pub momentum: f32,
    /// Weight decay (not on biases and norm parameters).
    pub weight_decay: f32,
    /// Linear warm-up, in epochs.
    pub warmup_epochs: f32,
    /// Schedule after warm-up.
    pub schedule: Schedule,
    /// Random children per step besides the largest and the smallest.
    pub random_children: usize,
    /// Whether smaller children learn the largest child's outputs (in-place
    /// distillation) rather than the labels.
    pub distillation: bool,
    /// Seed of shuffling, child sampling and dropout.
    pub seed: u64,
    /// Threads for every heavy op.
    pub threads: usize,
}

impl Default for SandwichConfig {
    /// AdamW lr 1e-3 (as `nas-client train`), batch 256, 20 epochs, one
    /// warm-up epoch, cosine decay, two random children, distillation on.
    fn default() -> SandwichConfig {
        SandwichConfig {
            epochs: 20,
            batch_size: 256,
            lr: 1e-3,
            optimizer: OptimizerKind::AdamW,
            momentum: 0.9,
            weight_decay: 1e-5,
            warmup_epochs: 1.0,
            schedule: Schedule::Cosine,
            random_children: 2,
            distillation: true,
            seed: 0,
            threads: tabular_nn::threads::available(),
        }
    }
}

/// One epoch of supernet training.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SandwichEpoch {
    /// 1-based epoch.
    pub epoch: usize,
    /// Mean loss of the largest child on the labels.
    pub largest_loss: f64,
    /// Mean loss of the smallest child (against the teacher's targets with
    /// distillation).
    pub smallest_loss: f64,
    /// Mean loss of the random children.
    pub random_loss: f64,
    /// Learning rate of the epoch's last step.
    pub lr: f32,
    /// Time in training steps, ns.
    pub step_time_ns: u64,
}

/// What a supernet training did.
#[derive(Debug, Clone)]
pub struct SandwichReport {
    /// Each epoch.
    pub history: Vec<SandwichEpoch>,
    /// Optimizer steps of this call.
    pub steps: u64,
    /// Child forward/backward passes of this call (children per step ×
    /// steps).
    pub child_passes: u64,
    /// Wall time of the training, ns.
    pub train_wall_ns: u64,
    /// Per-kernel counts and times.
    pub train_kernels: Vec<KernelTime>,
    /// Energy of the training phase from the meter (measured by energyd
    /// with its provenance); `None` without a meter or when it failed.
    pub energy: Option<PhaseEnergy>,
    /// Why energy is missing.
    pub energy_unavailable: Option<String>,
    /// What became of the kernel spans (with a meter).
    pub span_delivery: Option<SpanDelivery>,
}

/// Losses of one sandwich step, in the order of the children.
#[derive(Debug, Clone, PartialEq)]
pub struct StepLosses {
    /// One mean loss per child (the first is the teacher's, on the labels).
    pub per_child: Vec<f64>,
}

impl Supernet {
    /// The children of one sandwich step: the largest, `random` children
    /// drawn uniformly from `rng`, the smallest last.
    pub fn sandwich_children(&self, random: usize, rng: &mut StdRng) -> Vec<Vec<usize>> {
        let space = self.space();
        let mut out = vec![space.largest()];
        out.extend((0..random).map(|_| space.sample(rng)));
        out.push(space.smallest());
        out
    }

    /// Forward and backward passes of `children` on one batch, adding to
    /// the accumulated gradients (no optimizer step). The first child is
    /// the teacher and learns the labels `y`; the others learn its
    /// training-mode outputs (softmax probabilities, or values for
    /// regression) when `distillation`, else the labels.
    pub fn accumulate_sandwich(
        &mut self,
        x: ArrayView2<f32>,
        y: ArrayView1<f32>,
        children: &[Vec<usize>],
        distillation: bool,
        ctx: &mut Ctx,
    ) -> Result<StepLosses, SupernetError> {
        self.check_input(x, Some(y.len()))?;
        if children.is_empty() {
            return Err(SupernetError::Config {
                field: "children",
                message: "a sandwich step needs at least one child".to_owned(),
            });
        }
        let regression = self.task() == Task::Regression;
        let mut per_child = Vec::with_capacity(children.len());
        let mut teacher: Option<Array2<f32>> = None;
        for (i, child) in children.iter().enumerate() {
            let targets = teacher.as_ref().filter(|_| distillation);
            let (loss, outputs) = self.with_child(child, |t| match targets {
                Some(targets) => (t.accumulate_soft(x, targets.view(), ctx), None),
                None => {
                    let loss = t.accumulate(x, y, ctx);
                    let out = t.net.body.output();
                    let soft = (i == 0 && distillation).then(|| {
                        if regression {
                            out.to_owned()
                        } else {
                            softmax(out).mapv(|p| p as f32)
                        }
                    });
                    (loss, soft)
                }
            })?;
            if outputs.is_some() {
                teacher = outputs;
            }
            per_child.push(loss);
        }
        Ok(StepLosses { per_child })
    }

    /// One optimizer step over the whole supernet (every layer at its
    /// allocated width, so every child's gradients are applied), then the
    /// gradients are cleared.
    pub fn apply(&mut self, lr: f32, ctx: &mut Ctx) -> Result<(), SupernetError> {
        self.network().set_full_width()?;
        self.trainer().apply(lr, ctx);
        Ok(())
    }

    /// Trains the supernet by the sandwich rule on `dataset`'s training
    /// split. With a meter, kernel spans go to it and the report carries
    /// the training phase's energy. `on_epoch` sees each epoch as it ends.
    /// The optimizer starts fresh.
    pub fn train(
        &mut self,
        dataset: &Dataset,
        config: &SandwichConfig,
        energy: Option<&mut dyn PhaseMeter>,
        on_epoch: &mut (dyn FnMut(&SandwichEpoch) + Send),
    ) -> Result<SandwichReport, SupernetError> {
        self.train_epochs(dataset, config, 1..=config.epochs, energy, on_epoch)
    }

    /// Epochs `epochs` (1-based, within `1..=config.epochs`) of the
    /// training [`Supernet::train`] runs whole: stopping after some epochs
    /// ([`Supernet::checkpoint`]) and resuming from a restored state
    /// ([`Supernet::restore`]). The optimizer starts fresh only at epoch 1;
    /// the learning-rate schedule is that of `config.epochs` epochs; each
    /// epoch's shuffling, children and dropout are seeded from the seed and
    /// the epoch's number, so a resumed training equals the uninterrupted
    /// one.
    pub fn train_epochs(
        &mut self,
        dataset: &Dataset,
        config: &SandwichConfig,
        epochs: std::ops::RangeInclusive<usize>,
        energy: Option<&mut dyn PhaseMeter>,
        on_epoch: &mut (dyn FnMut(&SandwichEpoch) + Send),
    ) -> Result<SandwichReport, SupernetError> {
        validate(config)?;
        let (first_epoch, last_epoch) = (*epochs.start(), *epochs.end());
        if first_epoch == 0 || first_epoch > last_epoch || last_epoch > config.epochs {
            return Err(SupernetError::Config {
                field: "epochs",
                message: format!(
                    "{first_epoch}..={last_epoch} is not a range within 1..={}",
                    config.epochs
                ),
            });
        }
        self.check_data(dataset)?;
        let pool = tabular_nn::threads::build_pool(config.threads).map_err(|e| {
            SupernetError::ThreadPool {
                threads: config.threads,
                message: e.to_string(),
            }
        })?;
        // The recorder is created on the pool thread that runs the loop, so
        // spans carry that thread's id.
        pool.install(|| self.run(dataset, config, (first_epoch, last_epoch), energy, on_epoch))
    }

    fn run(
        &mut self,
        dataset: &Dataset,
        config: &SandwichConfig,
        (first_epoch, last_epoch): (usize, usize),
        mut energy: Option<&mut dyn PhaseMeter>,
        on_epoch: &mut (dyn FnMut(&SandwichEpoch) + Send),
    ) -> Result<SandwichReport, SupernetError> {
        // The optimizer's settings are the config's; a resumed training
        // keeps the moments of every parameter.
        let mut opt = Optimizer::new(
            config.optimizer,
            config.momentum,
            0.999,
            config.weight_decay,
        );
        if first_epoch > 1 {
            self.network().set_full_width()?;
            let mut ids = Vec::new();
            self.network()
                .body
                .visit_parameters(&mut |p| ids.push(p.id));
            for id in ids {
                if let Some(state) = self.trainer().opt.state(id) {
                    opt.set_state(id, state.clone());
                }
            }
        }
        self.trainer().opt = opt;
        let mut recorder =
            SpanRecorder::new(DEFAULT_SPAN_CAPACITY, energy.as_ref().map(|e| e.uploader()));
        let mut ctx = Ctx::new(&mut recorder, config.seed.wrapping_add(0x5eed));
        let train = &dataset.train;
        let n = train.rows();
        let steps_per_epoch = n.div_ceil(config.batch_size);
        let total_steps = steps_per_epoch * config.epochs;
        let warmup =
            ((config.warmup_epochs.max(0.0) * steps_per_epoch as f32) as usize).min(total_steps);
        let mut order: Vec<usize> = (0..n).collect();
        let mut xb = Array2::<f32>::zeros((config.batch_size, dataset.n_features()));
        let mut yb = Array1::<f32>::zeros(config.batch_size);
        let train_start = MonotonicNs::now();
        let mut history = Vec::with_capacity(config.epochs);
        let (mut step, mut child_passes) = ((first_epoch - 1) * steps_per_epoch, 0u64);
        self.network().zero_grad();
        for epoch in first_epoch..=last_epoch {
            // Each epoch's draws depend on the seed and the epoch only, so a
            // resumed training draws what the uninterrupted one would.
            let epoch_seed = config.seed ^ (epoch as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15);
            order.sort_unstable();
            order.shuffle(&mut StdRng::seed_from_u64(epoch_seed));
            let mut child_rng = StdRng::seed_from_u64(epoch_seed ^ 0xc41d);
            ctx.rng = SmallRng::seed_from_u64(epoch_seed ^ 0xd0);
            let epoch_start = MonotonicNs::now();
            let (mut largest, mut smallest, mut random) = (0.0f64, 0.0f64, 0.0f64);
            let mut lr = config.lr;
            for chunk in order.chunks(config.batch_size) {
                let t = span_start(ctx.sink);
                gather_rows(&train.x, chunk, &mut xb);
                if yb.len() != chunk.len() {
                    yb = Array1::zeros(chunk.len());
                }
                for (y, &i) in yb.iter_mut().zip(chunk) {
                    *y = train.y[i];
                }
                span_end(ctx.sink, KernelKind::BatchGather, t);
                let children = self.sandwich_children(config.random_children, &mut child_rng);
                let losses = self.accumulate_sandwich(
                    xb.view(),
                    yb.view(),
                    &children,
                    config.distillation,
                    &mut ctx,
                )?;
                let l = &losses.per_child;
                largest += l[0];
                smallest += l[l.len() - 1];
                if config.random_children > 0 {
                    random += l[1..l.len() - 1].iter().sum::<f64>() / config.random_children as f64;
                }
                child_passes += children.len() as u64;
                lr = config.schedule.lr(config.lr, step, total_steps, warmup);
                self.apply(lr, &mut ctx)?;
                step += 1;
            }
            let step_time_ns = MonotonicNs::now().saturating_sub(epoch_start);
            let per_step = steps_per_epoch.max(1) as f64;
            let record = SandwichEpoch {
                epoch,
                largest_loss: largest / per_step,
                smallest_loss: smallest / per_step,
                random_loss: random / per_step,
                lr,
                step_time_ns,
            };
            if !(record.largest_loss.is_finite() && record.smallest_loss.is_finite()) {
                return Err(SupernetError::Diverged {
                    epoch,
                    loss: record.largest_loss.max(record.smallest_loss),
                });
            }
            history.push(record);
            on_epoch(&record);
            ctx.sink.flush();
            if let Some(session) = energy.as_deref_mut() {
                // Outside the timed steps; sends only what is due.
                session.poll_spans();
            }
        }
        ctx.sink.flush();
        let train_end = MonotonicNs::now();
        let train_kernels = recorder.kernel_times();
        let (energy_report, energy_unavailable, span_delivery) = match energy {
            None => (None, Some("no energy meter".to_owned()), None),
            Some(session) => {
                session.flush_spans();
                let delivery = Some(session.span_delivery());
                match session.phase(train_start, train_end) {
                    Ok(e) => (Some(e), None, delivery),
                    Err(e) => (None, Some(e.to_string()), delivery),
                }
            }
        };
        Ok(SandwichReport {
            history,
            steps: (step - (first_epoch - 1) * steps_per_epoch) as u64,
            child_passes,
            train_wall_ns: train_end.saturating_sub(train_start),
            train_kernels,
            energy: energy_report,
            energy_unavailable,
            span_delivery,
        })
    }
}

fn validate(config: &SandwichConfig) -> Result<(), SupernetError> {
    let bad = |field, message: &str| {
        Err(SupernetError::Config {
            field,
            message: message.to_owned(),
        })
    };
    if config.batch_size < 2 {
        return bad("batch_size", "at least 2 rows (batch statistics)");
    }
    if config.epochs == 0 {
        return bad("epochs", "at least 1");
    }
    if !(config.lr.is_finite() && config.lr > 0.0) {
        return bad("lr", "a positive number");
    }
    if !(0.0..1.0).contains(&config.momentum) {
        return bad("momentum", "in [0, 1)");
    }
    if config.weight_decay.is_nan() || config.weight_decay < 0.0 {
        return bad("weight_decay", "non-negative");
    }
    if config.threads == 0 {
        return bad("threads", "at least 1");
    }
    Ok(())
}
