//! The supernet: one max-size network whose children run on the leading
//! blocks of its weights, a child at a time, through tabular-nn's
//! [`Trainer`].
//!
//! Widths are tabular-nn's active widths (`W[..in, ..out]`). A child of
//! smaller depth is assembled for the time of a call: the supernet's
//! top-level layers that the child's own architecture names (nn-plan's one
//! expansion of a backbone gives the names, so no name is parsed here) are
//! moved into a network of their own, in order, and moved back afterwards;
//! the layers, their weights, gradients and optimizer identities are the
//! supernet's throughout.

use crate::space::{SpaceError, SupernetSpace};
use ndarray::{s, Array2, ArrayView2};
use nn_plan::{ModelSpec, SpecError};
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::SeedableRng;
use tabular_nn::data::{Dataset, Split, Task};
use tabular_nn::kernels::NullSink;
use tabular_nn::metrics::Metrics;
use tabular_nn::model::layers::{Ctx, Layer, LayerRef, Mode, Sequential, WidthError};
use tabular_nn::model::visit::visit_layers;
use tabular_nn::model::{BuildNetwork, Network};
use tabular_nn::train::loss::softmax;
use tabular_nn::train::trainer::Trainer;
use tabular_nn::train::{LossKind, Optimizer, OptimizerKind};

/// BatchNorm's running-statistics momentum outside recalibration
/// (tabular-nn's and PyTorch's default), restored after a recalibration.
const BATCHNORM_MOMENTUM: f32 = 0.1;

/// Why a supernet operation failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SupernetError {
    /// The space or a choice vector is invalid.
    #[error(transparent)]
    Space(#[from] SpaceError),
    /// A spec does not build.
    #[error(transparent)]
    Spec(#[from] SpecError),
    /// Widths could not be set.
    #[error(transparent)]
    Widths(#[from] WidthError),
    /// A setting is out of range.
    #[error("invalid setting {field}: {message}")]
    Config {
        /// The setting.
        field: &'static str,
        /// What is wrong.
        message: String,
    },
    /// The data does not fit the supernet.
    #[error("dataset {dataset}: {message}")]
    Data {
        /// Dataset name.
        dataset: String,
        /// What is wrong.
        message: String,
    },
    /// The thread pool could not be built.
    #[error("cannot build a pool of {threads} threads: {message}")]
    ThreadPool {
        /// Threads asked for.
        threads: usize,
        /// Cause.
        message: String,
    },
    /// The loss became NaN or infinite.
    #[error("supernet training diverged at epoch {epoch} (loss {loss}); lower the learning rate")]
    Diverged {
        /// 1-based epoch.
        epoch: usize,
        /// The loss.
        loss: f64,
    },
}

/// A weight-entangled supernet over a [`SupernetSpace`].
pub struct Supernet {
    space: SupernetSpace,
    task: Task,
    /// The trainer; its network is the whole supernet (every layer, full
    /// depth) except inside [`Supernet::with_child`].
    trainer: Trainer,
}

/// How a child's BatchNorm statistics are recalibrated and the child is
/// evaluated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EvalSettings {
    /// Training batches forwarded to recalibrate BatchNorm statistics
    /// (fewer when the training split is shorter).
    pub recalibration_batches: usize,
    /// Rows per recalibration batch.
    pub recalibration_batch_size: usize,
    /// Rows per evaluation forward pass.
    pub eval_batch_size: usize,
    /// Seed of the choice of recalibration rows.
    pub seed: u64,
}

impl Default for EvalSettings {
    /// 20 batches of 256 training rows (AttentiveNAS calibrates on a few
    /// thousand images; 5,120 rows here), 4,096 rows per forward pass.
    fn default() -> EvalSettings {
        EvalSettings {
            recalibration_batches: 20,
            recalibration_batch_size: 256,
            eval_batch_size: 4096,
            seed: 0,
        }
    }
}

/// A child evaluated with inherited weights.
#[derive(Debug, Clone)]
pub struct ChildEvaluation {
    /// The choice vector.
    pub choice: Vec<usize>,
    /// The child's description.
    pub spec: ModelSpec,
    /// Validation metrics (accuracy for classification; RMSE in the
    /// target's units for regression).
    pub metrics: Metrics,
    /// Batches its BatchNorm statistics were recalibrated on (0 without
    /// BatchNorm).
    pub recalibration_batches: usize,
}

impl ChildEvaluation {
    /// Higher is better: accuracy, or −RMSE for regression.
    pub fn score(&self) -> f64 {
        match (self.metrics.accuracy, self.metrics.rmse) {
            (Some(a), _) => a,
            (None, Some(rmse)) => -rmse,
            (None, None) => f64::NAN,
        }
    }
}

/// The loss of a task: softmax cross-entropy or mean squared error.
pub fn loss_kind(task: Task) -> LossKind {
    match task {
        Task::Regression => LossKind::Mse,
        Task::Binary | Task::Multiclass => LossKind::SoftmaxCrossEntropy,
    }
}

impl Supernet {
    /// The supernet of `space` for `inputs` features and `outputs` outputs
    /// (classes, or 1 for regression), initialised from `seed`.
    pub fn new(
        space: SupernetSpace,
        inputs: usize,
        outputs: usize,
        task: Task,
        seed: u64,
    ) -> Result<Supernet, SupernetError> {
        let net = space.supernet_spec().build(inputs, outputs, seed)?;
        // Replaced by the training's own optimizer (see `train`).
        let opt = Optimizer::new(OptimizerKind::AdamW, 0.9, 0.999, 0.0);
        Ok(Supernet {
            space,
            task,
            trainer: Trainer::new(net, opt, loss_kind(task)),
        })
    }

    /// The supernet of `space` for `dataset`'s inputs, outputs and task
    /// (an FT-Transformer space not yet fitted to its features is fitted
    /// to `dataset`'s, as `nas-client train` fits its tokenizer).
    pub fn for_dataset(
        space: SupernetSpace,
        dataset: &Dataset,
        seed: u64,
    ) -> Result<Supernet, SupernetError> {
        let space = match space.ft_settings() {
            Some(ft) if ft.feature_widths.is_empty() => {
                space.with_feature_widths(dataset.feature_widths())
            }
            _ => space,
        };
        Supernet::new(
            space,
            dataset.n_features(),
            dataset.n_outputs(),
            dataset.task,
            seed,
        )
    }

    /// Its search space.
    pub fn space(&self) -> &SupernetSpace {
        &self.space
    }

    /// Its task.
    pub fn task(&self) -> Task {
        self.task
    }

    /// The whole supernet (every layer at its allocated width after
    /// [`Network::set_full_width`]).
    pub fn network(&mut self) -> &mut Network {
        &mut self.trainer.net
    }

    /// The trainer of the whole supernet (its optimizer and loss).
    pub fn trainer(&mut self) -> &mut Trainer {
        &mut self.trainer
    }

    /// Runs `f` with the trainer whose network is the child `choice`
    /// names: at its widths and depth, sharing the supernet's layers.
    /// Gradients the child accumulates stay in the supernet's parameters.
    pub fn with_child<R>(
        &mut self,
        choice: &[usize],
        f: impl FnOnce(&mut Trainer) -> R,
    ) -> Result<R, SupernetError> {
        let spec = self.space.child_spec(choice)?;
        let widths = self.space.child_widths(choice)?;
        let (inputs, outputs) = (self.trainer.net.inputs, self.trainer.net.outputs);
        let names: Vec<String> = spec
            .architecture(inputs, outputs)?
            .layers
            .into_iter()
            .map(|l| l.name)
            .collect();
        if names.as_slice() == self.trainer.net.body.names() {
            self.trainer.net.set_active_widths(&widths)?;
            return Ok(f(&mut self.trainer));
        }
        // Top-level layers of the child, by position in the supernet.
        let body_names = self.trainer.net.body.names();
        let positions: Vec<usize> = names
            .iter()
            .map(|n| body_names.iter().position(|m| m == n))
            .collect::<Option<_>>()
            .ok_or_else(|| SupernetError::Config {
                field: "choice",
                message: format!("the child {choice:?} has a layer the supernet lacks"),
            })?;
        // The kept layers must agree on their widths before the child's are
        // set: from a deeper child, the head still has that child's input.
        at_allocated_widths(&mut self.trainer.net.body)?;
        let layers = self.trainer.net.body.layers_mut();
        let moved: Vec<(String, Box<dyn Layer>)> = names
            .into_iter()
            .zip(&positions)
            .map(|(name, &p)| (name, std::mem::replace(&mut layers[p], placeholder())))
            .collect();
        let child = Network {
            body: Sequential::named(inputs, moved),
            inputs,
            outputs,
        };
        let whole = std::mem::replace(&mut self.trainer.net, child);
        let result = self
            .trainer
            .net
            .set_active_widths(&widths)
            .map(|()| f(&mut self.trainer));
        let mut child = std::mem::replace(&mut self.trainer.net, whole);
        let layers = self.trainer.net.body.layers_mut();
        for (slot, &p) in child.body.layers_mut().iter_mut().zip(&positions) {
            layers[p] = std::mem::replace(slot, placeholder());
        }
        // The skipped layers kept an earlier child's widths; the whole
        // network's widths must agree for the next child.
        at_allocated_widths(&mut self.trainer.net.body)?;
        Ok(result?)
    }

    /// Recalibrates the BatchNorm statistics of child `choice` on `x`:
    /// running statistics reset, then up to `batches` consecutive batches
    /// of `batch_size` rows of `x` forwarded in training mode with dropout
    /// off, each folded into a cumulative average (PyTorch's
    /// `momentum=None`). Returns the batches forwarded (0 when the child has
    /// no BatchNorm). Other children's statistics are overwritten where
    /// they share units: recalibrate right before evaluating.
    pub fn recalibrate_batch_norm(
        &mut self,
        choice: &[usize],
        x: ArrayView2<f32>,
        batch_size: usize,
        batches: usize,
    ) -> Result<usize, SupernetError> {
        self.check_input(x, None)?;
        if batch_size < 2 {
            return Err(SupernetError::Config {
                field: "recalibration batch size",
                message: format!("{batch_size}: batch statistics need at least 2 rows"),
            });
        }
        self.with_child(choice, |t| {
            let mut has_batch_norm = false;
            let mut dropout = Vec::new();
            visit_layers(&mut t.net.body, &mut |_, layer| match layer {
                LayerRef::BatchNorm(bn) => {
                    has_batch_norm = true;
                    bn.reset_running_stats();
                    bn.set_momentum(None);
                }
                LayerRef::Dropout(d) => {
                    dropout.push(d.p);
                    d.p = 0.0;
                }
                _ => {}
            });
            let mut done = 0;
            if has_batch_norm {
                let mut sink = NullSink;
                let mut ctx = Ctx::new(&mut sink, 0);
                // A last batch of one row has no batch statistics.
                for start in (0..x.nrows()).step_by(batch_size).take(batches) {
                    let end = (start + batch_size).min(x.nrows());
                    if end - start < 2 {
                        break;
                    }
                    t.net
                        .body
                        .forward(x.slice(s![start..end, ..]), Mode::Train, &mut ctx);
                    done += 1;
                }
            }
            let mut saved = dropout.into_iter();
            visit_layers(&mut t.net.body, &mut |_, layer| match layer {
                LayerRef::BatchNorm(bn) => bn.set_momentum(Some(BATCHNORM_MOMENTUM)),
                LayerRef::Dropout(d) => d.p = saved.next().unwrap_or(d.p),
                _ => {}
            });
            done
        })
    }

    /// Outputs of child `choice` on every row of `x` in evaluation mode
    /// (logits, or standardised values for regression), `batch` rows per
    /// forward pass.
    pub fn child_outputs(
        &mut self,
        choice: &[usize],
        x: ArrayView2<f32>,
        batch: usize,
    ) -> Result<Array2<f32>, SupernetError> {
        self.check_input(x, None)?;
        let batch = batch.max(1);
        self.with_child(choice, |t| {
            let mut sink = NullSink;
            let mut ctx = Ctx::new(&mut sink, 0);
            let mut out = Array2::zeros((x.nrows(), t.net.outputs));
            let mut start = 0;
            while start < x.nrows() {
                let end = (start + batch).min(x.nrows());
                let y = t.predict(x.slice(s![start..end, ..]), &mut ctx);
                out.slice_mut(s![start..end, ..]).assign(&y);
                start = end;
            }
            out
        })
    }

    /// Child `choice` with inherited weights: its BatchNorm statistics
    /// recalibrated on training rows (a seeded sample of `dataset`'s
    /// training split), then its metrics on the validation split. Runs on
    /// the caller's rayon pool (install one, `tabular_nn::threads::build_pool`,
    /// to bound its threads).
    pub fn evaluate_child(
        &mut self,
        choice: &[usize],
        dataset: &Dataset,
        settings: &EvalSettings,
    ) -> Result<ChildEvaluation, SupernetError> {
        self.check_data(dataset)?;
        let spec = self.space.child_spec(choice)?;
        let rows = settings.recalibration_batches * settings.recalibration_batch_size;
        let recal_x = sample_rows(&dataset.train, rows, settings.seed);
        let recalibrated = self.recalibrate_batch_norm(
            choice,
            recal_x.view(),
            settings.recalibration_batch_size,
            settings.recalibration_batches,
        )?;
        let out = self.child_outputs(choice, dataset.val.x.view(), settings.eval_batch_size)?;
        Ok(ChildEvaluation {
            choice: choice.to_vec(),
            spec,
            metrics: metrics(dataset, &dataset.val, out.view()),
            recalibration_batches: recalibrated,
        })
    }

    /// Errors unless `x` has the supernet's input columns (and `rows` rows,
    /// when given).
    pub(crate) fn check_input(
        &self,
        x: ArrayView2<f32>,
        rows: Option<usize>,
    ) -> Result<(), SupernetError> {
        let inputs = self.trainer.net.inputs;
        if x.ncols() != inputs || rows.is_some_and(|r| r != x.nrows()) {
            return Err(SupernetError::Config {
                field: "input",
                message: format!(
                    "{} rows of {} columns{}; the supernet has {inputs} inputs",
                    x.nrows(),
                    x.ncols(),
                    rows.map_or(String::new(), |r| format!(" with {r} targets"))
                ),
            });
        }
        Ok(())
    }

    /// Errors unless `dataset` has the supernet's inputs, outputs and task.
    pub(crate) fn check_data(&self, dataset: &Dataset) -> Result<(), SupernetError> {
        let net = &self.trainer.net;
        if dataset.n_features() != net.inputs
            || dataset.n_outputs() != net.outputs
            || dataset.task != self.task
        {
            return Err(SupernetError::Data {
                dataset: dataset.name.clone(),
                message: format!(
                    "{} features, {} outputs, {:?}; the supernet has {} inputs, {} outputs, {:?}",
                    dataset.n_features(),
                    dataset.n_outputs(),
                    dataset.task,
                    net.inputs,
                    net.outputs,
                    self.task
                ),
            });
        }
        Ok(())
    }
}

/// An empty sequence, the identity: holds a layer's slot while the layer
/// is lent to a child.
fn placeholder() -> Box<dyn Layer> {
    Box::new(Sequential::new(0, Vec::new()))
}

/// Sets every layer below `body` at the width its parameters are
/// allocated for, layer by layer: unlike [`Network::set_full_width`], which
/// reads the width graph, this also works where layers disagree (the layers
/// a shallower child skipped hold the widths of an earlier child).
fn at_allocated_widths(body: &mut dyn Layer) -> Result<(), WidthError> {
    let mut result = Ok(());
    visit_layers(body, &mut |_, layer| {
        let r = match layer {
            LayerRef::Linear(l) => {
                let (i, o) = l.max_dims();
                l.set_active(i, o)
            }
            LayerRef::Activation(l) => l.set_active(l.max_features()),
            LayerRef::BatchNorm(l) => l.set_active(l.max_features()),
            LayerRef::LayerNorm(l) => l.set_active(l.max_features()),
            LayerRef::Dropout(l) => l.set_active(l.max_features()),
            LayerRef::SelectToken(l) => l.set_active(l.max_features()),
            LayerRef::Tokenizer(l) => l.set_active(l.max_features()),
            LayerRef::Attention(l) => l.set_active(l.max_features()),
            LayerRef::Reglu(l) => l.set_active(l.max_features()),
            LayerRef::Sequential(_) | LayerRef::Residual(_) | LayerRef::Other(_) => Ok(()),
        };
        if result.is_ok() {
            result = r;
        }
    });
    result
}

/// Up to `rows` rows of `split`, drawn without replacement by `seed`.
fn sample_rows(split: &Split, rows: usize, seed: u64) -> Array2<f32> {
    let mut order: Vec<usize> = (0..split.rows()).collect();
    order.shuffle(&mut StdRng::seed_from_u64(seed));
    order.truncate(rows);
    let mut out = Array2::zeros((order.len(), split.x.ncols()));
    tabular_nn::train::gather_rows(&split.x, &order, &mut out);
    out
}

/// Metrics of outputs `out` on `split`: accuracy and the rest from
/// probabilities, or RMSE and the rest in the target's units.
pub(crate) fn metrics(dataset: &Dataset, split: &Split, out: ArrayView2<f32>) -> Metrics {
    match dataset.task {
        Task::Regression => {
            let scale = dataset.target_scale;
            let unscale = |v: &f32| scale.unscale(f64::from(*v));
            let pred: Vec<f64> = out.column(0).iter().map(unscale).collect();
            let truth: Vec<f64> = split.y.iter().map(unscale).collect();
            Metrics::regression(&pred, &truth)
        }
        Task::Binary | Task::Multiclass => Metrics::classification(&softmax(out), split.y.view()),
    }
}
