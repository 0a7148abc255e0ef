//! Stopping and resuming a supernet training: every parameter and running
//! statistic at its allocated size, and the optimizer's moments, in the
//! supernet's fixed visiting order. With [`Supernet::train_epochs`] (each
//! epoch seeded from the training seed and its number), a training resumed
//! from the checkpoint of epoch `k` continues exactly as the uninterrupted
//! one (tested).

use crate::net::{Supernet, SupernetError};
use tabular_nn::model::layers::Layer;
use tabular_nn::train::optim::ParamState;

/// A supernet's trained state, in memory (plain vectors, for the caller to
/// store as it stores its studies).
#[derive(Debug, Clone)]
pub struct SupernetCheckpoint {
    /// Epochs trained so far (resume with `train_epochs(…, epochs_done + 1..=…, …)`).
    pub epochs_done: usize,
    /// Every parameter, then every running statistic, at allocated size,
    /// row-major, in the supernet's visiting order.
    pub tensors: Vec<Vec<f32>>,
    /// The optimizer's state of each parameter, same order (`None` before
    /// its first step).
    pub moments: Vec<Option<ParamState>>,
}

impl Supernet {
    /// The supernet's weights, running statistics and optimizer moments
    /// after `epochs_done` epochs.
    pub fn checkpoint(&mut self, epochs_done: usize) -> Result<SupernetCheckpoint, SupernetError> {
        self.network().set_full_width()?;
        let mut ids = Vec::new();
        self.network()
            .body
            .visit_parameters(&mut |p| ids.push(p.id));
        let tensors = self.network().snapshot();
        let opt = &self.trainer().opt;
        let moments = ids.iter().map(|&id| opt.state(id).cloned()).collect();
        Ok(SupernetCheckpoint {
            epochs_done,
            tensors,
            moments,
        })
    }

    /// Restores a [`Supernet::checkpoint`] of a supernet of the same space
    /// and data shape; an error (nothing changed) when it does not fit.
    pub fn restore(&mut self, checkpoint: &SupernetCheckpoint) -> Result<(), SupernetError> {
        self.network().set_full_width()?;
        let mut sizes = Vec::new();
        let mut ids = Vec::new();
        let net = self.network();
        net.body.visit_parameters(&mut |p| {
            sizes.push(p.value.len());
            ids.push(p.id);
        });
        net.body.visit_buffers(&mut |b| sizes.push(b.value.len()));
        let found: Vec<usize> = checkpoint.tensors.iter().map(Vec::len).collect();
        if found != sizes || checkpoint.moments.len() != ids.len() {
            return Err(SupernetError::Config {
                field: "checkpoint",
                message: format!(
                    "tensors of sizes {found:?} and {} moments; this supernet has {sizes:?} and {} parameters",
                    checkpoint.moments.len(),
                    ids.len()
                ),
            });
        }
        net.restore(&checkpoint.tensors);
        let opt = &mut self.trainer().opt;
        for (&id, state) in ids.iter().zip(&checkpoint.moments) {
            if let Some(state) = state {
                opt.set_state(id, state.clone());
            }
        }
        Ok(())
    }
}
