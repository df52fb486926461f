//! The learned-row heads in the training loop: `[head] kind = "full_softmax"` or
//! `"partial_fc"` (the peers; `pm_loss`'s [`FullSoftmaxHead`] and [`PartialFcHead`]). The
//! default, `"prototype_memory"`, has no [`LearnedHead`] and runs the memory path of the trainer.
//!
//! One step with a learned head, for a batch of B images with labels y:
//! ```text
//! images ─encoder→ x [B,d] ─normalise→ z [B,d]
//! full softmax: cos = z·Ŵᵀ [B,N],      target of image i: y_i
//! Partial FC:   S = sample(y, step),   cos = z·Ŵ_Sᵀ [B,|S|],  target: position of y_i in S
//! margin softmax CE → loss; backward; SGD step on the encoder, then on the rows the loss used
//! ```
//! N is the dataset's number of identities and d the encoder's embedding dimension; the rows
//! share the encoder's learning-rate schedule, momentum and weight decay. The rows the loss used
//! as "stored" rows (all N for the full softmax, the drawn negatives for Partial FC) give the
//! step's row ages and the obsolescence sample.

use std::collections::HashMap;

use candle_core::backprop::GradStore;
use candle_core::{Device, ModuleT, Tensor, Var};
use pm_data::Batch;
use pm_loss::{FullSoftmaxHead, PartialFcHead, RowSgd, Sampled};
use pm_memory::{PrototypeConfig, normalize_rows, prototypes};

use crate::config::{HeadKind, TrainConfig};
use crate::obsolescence::{self, Pending};
use crate::trainer::{StepOutcome, Trainer, correct_predictions};
use crate::{Error, Result};

impl Trainer {
    /// One step of a learned-row head: the encoder and the rows the loss used are both
    /// updated; the memory is not used.
    pub(crate) fn learned_step(
        &mut self,
        head: &mut LearnedHead,
        batch: &Batch,
    ) -> Result<StepOutcome> {
        let k = batch.images_per_identity;
        let [b, c, h, w] = batch.shape;
        let images = Tensor::from_slice(&batch.images, (b, c, h, w), &self.device)?;
        let identities: Vec<u64> = batch.labels.iter().step_by(k).map(|&l| l as u64).collect();

        // Forward and loss; a non-finite loss or row gradient skips the step.
        let x = self.encoder.forward_t(&images, true)?;
        let z = normalize_rows(&x)?;
        let forward = head.forward(&z, &batch.labels, self.step + 1)?;
        let loss = self.loss.forward(&forward.cosines, &forward.targets)?;
        let loss_value = loss.to_scalar::<f32>()? as f64;
        self.step += 1;
        if !loss_value.is_finite() {
            return self.skip_step(loss_value, "loss");
        }
        let grads = loss.backward()?;
        if let Some(name) = self.optimizer.non_finite_gradient(&grads)? {
            return self.skip_step(loss_value, &format!("gradient of {name}"));
        }
        let (row_grad, finite) = LearnedHead::gradient(&forward, &grads)?;
        if !finite {
            return self.skip_step(loss_value, "row gradient");
        }
        self.nonfinite_in_row = 0;

        // Encoder step, then the rows' (ages and obsolescence copies are taken before it).
        let lr = self.learning_rate(self.step - 1);
        self.optimizer.step(&grads, lr)?;
        let ages = head.ages(&forward, self.step);
        let pending = self.pending_obsolescence(head, &forward, &x, &identities, k)?;
        let o = &self.config.optim;
        let sgd = RowSgd {
            lr,
            momentum: o.momentum,
            weight_decay: o.weight_decay,
        };
        head.update(&forward, &row_grad, sgd, self.step)?;

        let measure = |p| obsolescence::measure(p, &self.encoder, &self.dataset, k, &self.device);
        let obsolescence = pending.map(measure).transpose()?;
        Ok(StepOutcome {
            loss: Some(loss_value),
            correct: correct_predictions(&forward.cosines, &forward.targets)?,
            scored: forward.targets.len(),
            classes: forward.cosines.dim(1)?,
            ages,
            stats: pm_memory::UpdateStats::default(),
            obsolescence,
        })
    }

    /// On a measurement step, copies of the stored rows the loss used (before their update)
    /// and the batch's fresh prototypes (the control).
    fn pending_obsolescence(
        &self,
        head: &LearnedHead,
        forward: &HeadForward,
        x: &Tensor,
        identities: &[u64],
        k: usize,
    ) -> Result<Option<Pending>> {
        let every = self.config.run.obsolescence_every;
        if every == 0 || !self.step.is_multiple_of(every) {
            return Ok(None);
        }
        let fresh = prototypes(x, k, &PrototypeConfig::default())?;
        let fresh = fresh.detach().flatten_all()?.to_vec1::<f32>()?;
        let count = self.config.run.obsolescence_rows;
        let pending = head.obsolescence_sample(forward, (identities, &fresh), count, self.step)?;
        Ok(Some(pending))
    }
}

/// A learned-row head.
#[derive(Debug)]
pub(crate) enum LearnedHead {
    /// All N rows every step.
    Full(FullSoftmaxHead),
    /// Positives and a sampled fraction of the negatives.
    Partial(PartialFcHead),
}

/// What one forward pass through a learned head produced.
pub(crate) struct HeadForward {
    /// `[B, C]` cosines, C = N or the sampled columns.
    pub(crate) cosines: Tensor,
    /// Target column of each image.
    pub(crate) targets: Vec<u32>,
    /// The variable whose gradient updates the rows: all rows, or the sampled copy.
    rows: Var,
    /// Partial FC's columns.
    sampled: Option<Sampled>,
}

impl LearnedHead {
    /// The head `config` asks for, with one row per identity of the dataset; `None` for the
    /// prototype memory.
    pub(crate) fn new(
        config: &TrainConfig,
        n_identities: usize,
        device: &Device,
    ) -> Result<Option<Self>> {
        let (dim, seed) = (config.model.embedding_dim, config.run.seed);
        Ok(match config.head.kind {
            HeadKind::PrototypeMemory => None,
            HeadKind::FullSoftmax => Some(Self::Full(FullSoftmaxHead::new(
                n_identities,
                dim,
                seed,
                device,
            )?)),
            HeadKind::PartialFc => Some(Self::Partial(PartialFcHead::new(
                n_identities,
                dim,
                config.head.sample_rate,
                seed,
                device,
            )?)),
        })
    }

    /// Cosines of unit embeddings `z [B, d]` with image labels `labels` at step `step`.
    pub(crate) fn forward(&self, z: &Tensor, labels: &[u32], step: u64) -> Result<HeadForward> {
        match self {
            Self::Full(head) => Ok(HeadForward {
                cosines: head.cosines(z)?,
                targets: labels.to_vec(),
                rows: head.weights().clone(),
                sampled: None,
            }),
            Self::Partial(head) => {
                let sampled = head.sample(labels, step)?;
                let out = head.cosines(z, &sampled)?;
                Ok(HeadForward {
                    cosines: out.cosines,
                    targets: sampled.targets.clone(),
                    rows: out.rows,
                    sampled: Some(sampled),
                })
            }
        }
    }

    /// The loss's gradient with respect to the rows it used, and whether it is finite.
    pub(crate) fn gradient(forward: &HeadForward, grads: &GradStore) -> Result<(Tensor, bool)> {
        let grad = match grads.get(forward.rows.as_tensor()) {
            Some(grad) => grad.clone(),
            None => forward.rows.as_tensor().zeros_like()?,
        };
        // A sum, not a sum of squares: finite entries above 1.8e19 must not count as NaN.
        let finite = grad.sum_all()?.to_scalar::<f32>()?.is_finite();
        Ok((grad, finite))
    }

    /// Updates the rows the forward pass used, recording `step`.
    pub(crate) fn update(
        &mut self,
        forward: &HeadForward,
        grad: &Tensor,
        sgd: RowSgd,
        step: u64,
    ) -> Result<()> {
        match (self, &forward.sampled) {
            (Self::Full(head), _) => head.step(grad, sgd, step)?,
            (Self::Partial(head), Some(sampled)) => head.step(grad, sampled, sgd, step)?,
            (Self::Partial(_), None) => {
                let what = "partial_fc forward without columns".to_string();
                return Err(candle_core::Error::Msg(what).into());
            }
        }
        Ok(())
    }

    /// The stored rows of negatives the loss used: every class not in the batch, or the drawn
    /// negatives (the same set as the memory's rows of other identities, so the statistics of
    /// the heads compare).
    fn used(&self, forward: &HeadForward) -> Vec<u32> {
        match (&forward.sampled, self) {
            (Some(sampled), _) => sampled.negatives.clone(),
            (None, head) => {
                // Full softmax: targets are the batch's class ids.
                let mut in_batch = forward.targets.clone();
                in_batch.sort_unstable();
                in_batch.dedup();
                (0..head.last_update_step().len() as u32)
                    .filter(|class| in_batch.binary_search(class).is_err())
                    .collect()
            }
        }
    }

    fn last_update_step(&self) -> &[u64] {
        match self {
            Self::Full(head) => head.last_update_step(),
            Self::Partial(head) => head.last_update_step(),
        }
    }

    fn weights(&self) -> &Var {
        match self {
            Self::Full(head) => head.weights(),
            Self::Partial(head) => head.weights(),
        }
    }

    /// Ages at `step` (steps since the last update) of the stored rows the loss used; call
    /// before [`LearnedHead::update`].
    pub(crate) fn ages(&self, forward: &HeadForward, step: u64) -> Vec<u64> {
        let last = self.last_update_step();
        self.used(forward)
            .iter()
            .map(|&class| step.saturating_sub(last[class as usize]))
            .collect()
    }

    /// Copies up to `rows` of the stored rows the loss used, with their ages, for an
    /// obsolescence measurement; call before [`LearnedHead::update`]. `batch` holds the
    /// batch's identities and fresh prototypes (`[P, d]` row-major), the control.
    pub(crate) fn obsolescence_sample(
        &self,
        forward: &HeadForward,
        batch: (&[u64], &[f32]),
        rows: usize,
        step: u64,
    ) -> Result<Pending> {
        let used = self.used(forward);
        let chosen: Vec<u32> = obsolescence::choose(used.len(), rows, step)
            .into_iter()
            .map(|i| used[i])
            .collect();
        let last = self.last_update_step();
        let ages = chosen
            .iter()
            .map(|&class| step.saturating_sub(last[class as usize]))
            .collect();
        let index = Tensor::new(chosen.as_slice(), self.weights().device())?;
        let stored = match chosen.is_empty() {
            true => Vec::new(),
            false => self
                .weights()
                .as_tensor()
                .index_select(&index, 0)?
                .to_vec2::<f32>()?,
        };
        let dim = self.weights().dim(1)?;
        Ok(obsolescence::sample_rows(
            (chosen, stored, ages),
            batch,
            dim,
            rows,
            step,
        ))
    }

    /// Rows, momentum and update steps for a checkpoint.
    pub(crate) fn state(&self) -> Result<HashMap<String, Tensor>> {
        Ok(match self {
            Self::Full(head) => head.state()?,
            Self::Partial(head) => head.state()?,
        })
    }

    /// Restores [`LearnedHead::state`] from a checkpoint's tensors (`checkpoint` names it).
    pub(crate) fn restore(
        &mut self,
        tensors: &HashMap<String, Tensor>,
        checkpoint: &std::path::Path,
    ) -> Result<()> {
        let restored = match self {
            Self::Full(head) => head.restore(tensors),
            Self::Partial(head) => head.restore(tensors),
        };
        restored.map_err(|e| Error::Checkpoint {
            path: checkpoint.to_path_buf(),
            what: e.to_string(),
        })
    }
}
