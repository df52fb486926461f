//! The training loop.
//!
//! One step, for a batch of P identities × K images (B = P·K):
//! ```text
//! images [B,3,S,S] ─encoder→ x [B,d] ─normalise→ z [B,d]
//! x ─prototypes→ fresh [P,d]              (pm-memory, detached by default)
//! W = [fresh ; stored rows of other identities]   [C,d]
//! cos = z·Wᵀ [B,C] ─margin softmax CE→ loss   (target of image i: column i / K)
//! backward, SGD step; then memory.update(identities, fresh)   (after the step: see CANDLE.md)
//! ```
//! With `[head] kind = "full_softmax"` or `"partial_fc"` the classifier is a learned-row head
//! instead of the memory (see [`crate::head`]).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use candle_core::{D, DType, Device, ModuleT, Tensor, Var};
use candle_nn::{VarBuilder, VarMap};
use pm_data::{Batch, Dataset, PkSampler, Prefetcher, SamplerConfig, identity_counts};
use pm_loss::{MarginLoss, replace_targets};
use pm_memory::{
    Eviction, PrototypeMemory, PrototypeSource, leave_one_out, normalize_rows, prototypes,
    query_rows,
};
use pm_models::{Encoder, EncoderConfig, seeded_init};
use serde::Serialize;

use crate::checkpoint::{self, Checkpoint};
use crate::config::{Schedule, TrainConfig};
use crate::head::LearnedHead;
use crate::metrics::{MetricsWriter, StepMetrics};
use crate::obsolescence::{self, Obsolescence};
use crate::sgd::SgdMomentum;
use crate::{Error, Result};

/// Receives progress; the CLI draws a bar with it, tests ignore it.
pub trait Progress {
    /// Training starts at `done` of `total` steps.
    fn start(&mut self, total: u64, done: u64);
    /// A metrics window closed.
    fn update(&mut self, metrics: &StepMetrics);
    /// Training ended.
    fn finish(&mut self);
}

/// A [`Progress`] that shows nothing.
#[derive(Debug, Default)]
pub struct NoProgress;

impl Progress for NoProgress {
    fn start(&mut self, _: u64, _: u64) {}
    fn update(&mut self, _: &StepMetrics) {}
    fn finish(&mut self) {}
}

/// What a finished run reports.
#[derive(Clone, Debug, Serialize)]
pub struct TrainSummary {
    /// The run directory.
    pub run_dir: PathBuf,
    /// Steps completed.
    pub steps: u64,
    /// Step the run resumed from (0 for a fresh run).
    pub resumed_from: u64,
    /// Mean loss of the first metrics window of this invocation.
    pub first_loss: f64,
    /// Mean loss of the last metrics window.
    pub last_loss: f64,
    /// Wall time of this invocation, seconds.
    pub seconds: f64,
}

/// A training run.
pub struct Trainer {
    pub(crate) config: TrainConfig,
    pub(crate) device: Device,
    pub(crate) dataset: Arc<Dataset>,
    varmap: VarMap,
    pub(crate) encoder: Encoder,
    pub(crate) optimizer: SgdMomentum,
    memory: PrototypeMemory,
    /// A learned-row head, or `None` for the prototype memory.
    head: Option<LearnedHead>,
    pub(crate) loss: MarginLoss,
    sampler: PkSampler,
    pub(crate) step: u64,
    pub(crate) nonfinite_in_row: usize,
    resumed_from: u64,
}

/// What one step measured.
#[derive(Default)]
pub(crate) struct StepOutcome {
    pub(crate) loss: Option<f64>,
    pub(crate) correct: usize,
    /// Images that took the loss (the queries of an exemplar/query split, else all).
    pub(crate) scored: usize,
    pub(crate) classes: usize,
    pub(crate) ages: Vec<u64>,
    pub(crate) stats: pm_memory::UpdateStats,
    pub(crate) obsolescence: Option<Obsolescence>,
}

impl Trainer {
    /// Prepares a run: opens the dataset, builds the encoder with seeded weights, an empty
    /// memory, and writes the resolved configuration into the run directory. With `resume`,
    /// continues from the run's newest checkpoint instead (if it has one).
    ///
    /// # Errors
    /// Unreadable data, a dataset whose image size differs from the model's input, a
    /// checkpoint that does not match the configuration.
    pub fn new(config: TrainConfig, resume: bool) -> Result<Self> {
        let device = Device::Cpu;
        let dataset = Dataset::open(&config.data.dataset).map_err(|e| Error::Config {
            path: config.data.dataset.clone(),
            what: format!(
                "cannot open the packed dataset ({e}); pack it first with `cargo xtask pack`"
            ),
        })?;
        let dataset = Arc::new(dataset);
        check_dataset(&config, &dataset)?;
        std::fs::create_dir_all(&config.run.dir).map_err(|e| Error::io(&config.run.dir, e))?;
        let (varmap, encoder) = build_encoder(&config.model, &device, Some(config.run.seed))?;
        let optimizer = SgdMomentum::new(
            named_vars(&varmap)?,
            config.optim.momentum,
            config.optim.weight_decay,
        );
        let sampler = PkSampler::new(sampler_config(&config), identity_counts(&dataset)?)?;
        let head = LearnedHead::new(&config, dataset.n_identities(), &device)?;
        let mut trainer = Self {
            memory: PrototypeMemory::new(config.memory_config())?,
            head,
            loss: MarginLoss::new(config.loss.clone())?,
            config,
            device,
            dataset,
            varmap,
            encoder,
            optimizer,
            sampler,
            step: 0,
            nonfinite_in_row: 0,
            resumed_from: 0,
        };
        if resume {
            trainer.resume()?;
        } else {
            refuse_existing_run(&trainer.config.run.dir)?;
        }
        trainer.write_resolved_config()?;
        Ok(trainer)
    }

    /// Steps completed so far.
    pub fn step(&self) -> u64 {
        self.step
    }

    /// The prototype memory.
    pub fn memory(&self) -> &PrototypeMemory {
        &self.memory
    }

    fn resume(&mut self) -> Result<()> {
        let Some(dir) = checkpoint::latest_checkpoint(&self.config.run.dir)? else {
            tracing::warn!(run = %self.config.run.dir.display(), "no checkpoint to resume; starting fresh");
            return truncate_metrics(&self.config.run.dir.join("metrics.jsonl"), 0);
        };
        check_same_run(&self.config, &dir)?;
        let loaded = checkpoint::load(&dir, &mut self.varmap)?;
        self.memory = PrototypeMemory::from_tensors(self.config.memory_config(), &loaded.state)
            .map_err(|e| Error::Checkpoint {
                path: dir.clone(),
                what: e.to_string(),
            })?;
        self.optimizer.restore(&loaded.state)?;
        if let Some(head) = &mut self.head {
            head.restore(&loaded.state, &dir)?;
        }
        self.sampler.restore(loaded.checkpoint.sampler)?;
        self.step = loaded.checkpoint.step;
        self.nonfinite_in_row = loaded.checkpoint.nonfinite_in_row;
        self.resumed_from = self.step;
        truncate_metrics(&self.config.run.dir.join("metrics.jsonl"), self.step)?;
        tracing::info!(path = %dir.display(), step = self.step, "resumed");
        Ok(())
    }

    fn write_resolved_config(&self) -> Result<()> {
        let path = self.config.run.dir.join("config.toml");
        std::fs::write(&path, self.config.to_toml()?).map_err(|e| Error::io(&path, e))
    }

    /// Trains until `optim.steps`, or until `stop_after` more steps when given (used to
    /// simulate an interruption).
    ///
    /// # Errors
    /// Data, tensor or I/O errors; [`Error::Diverged`] after too many non-finite losses.
    pub fn run(
        &mut self,
        progress: &mut dyn Progress,
        stop_after: Option<u64>,
    ) -> Result<TrainSummary> {
        let started = Instant::now();
        let total = self.config.optim.steps;
        let end = stop_after.map_or(total, |n| (self.step + n).min(total));
        let prefetcher = Prefetcher::start(
            self.dataset.clone(),
            self.sampler.clone(),
            self.config.data.prefetch,
        );
        let mut metrics = MetricsWriter::append(&self.config.run.dir.join("metrics.jsonl"))?;
        let mut window = Window::new();
        let (mut first_loss, mut last_loss) = (None, f64::NAN);
        progress.start(total, self.step);
        tracing::info!(
            from = self.step,
            to = end,
            identities = self.dataset.n_identities(),
            images = self.dataset.n_images(),
            "training"
        );
        while self.step < end {
            let batch = prefetcher.next_batch()?;
            let outcome = self.train_step(&batch)?;
            self.sampler.restore(batch.sampler_after)?;
            window.add(&outcome, batch.labels.len());
            window.replaced += batch.replaced.len();
            if self.step.is_multiple_of(self.config.run.log_every) || self.step == end {
                let line = window.close(self, batch.sampler_after.epoch);
                first_loss.get_or_insert(line.loss);
                last_loss = line.loss;
                metrics.write(&line)?;
                progress.update(&line);
            }
            if self.step.is_multiple_of(self.config.run.checkpoint_every) || self.step == end {
                self.save_checkpoint()?;
            }
        }
        progress.finish();
        self.save_final()?;
        Ok(TrainSummary {
            run_dir: self.config.run.dir.clone(),
            steps: self.step,
            resumed_from: self.resumed_from,
            first_loss: first_loss.unwrap_or(f64::NAN),
            last_loss,
            seconds: started.elapsed().as_secs_f64(),
        })
    }

    /// One optimisation step with the configured head. A skipped step (non-finite loss or
    /// gradient) leaves no trace: its training-mode forward already moved the BatchNorm running
    /// statistics, so they are put back as they were.
    fn train_step(&mut self, batch: &Batch) -> Result<StepOutcome> {
        let running = self.running_statistics()?;
        let saved = running
            .iter()
            .map(|var| var.as_tensor().copy())
            .collect::<candle_core::Result<Vec<_>>>()?;
        let skipped_before = self.nonfinite_in_row;
        let outcome = match self.head.take() {
            None => self.memory_step(batch),
            Some(mut head) => {
                let outcome = self.learned_step(&mut head, batch);
                self.head = Some(head);
                outcome
            }
        };
        if self.nonfinite_in_row > skipped_before {
            for (var, saved) in running.iter().zip(&saved) {
                var.set(saved)?;
            }
        }
        outcome
    }

    /// The BatchNorm running means and variances: variables that no gradient reaches.
    fn running_statistics(&self) -> Result<Vec<Var>> {
        let vars = self
            .varmap
            .data()
            .lock()
            .map_err(|_| candle_core::Error::Msg("variable map lock poisoned".into()))?;
        Ok(vars
            .iter()
            .filter(|(name, _)| name.ends_with("running_mean") || name.ends_with("running_var"))
            .map(|(_, var)| var.clone())
            .collect())
    }

    /// One optimisation step and the memory update that follows it.
    fn memory_step(&mut self, batch: &Batch) -> Result<StepOutcome> {
        let k = batch.images_per_identity;
        let [b, c, h, w] = batch.shape;
        let images = Tensor::from_slice(&batch.images, (b, c, h, w), &self.device)?;
        let identities: Vec<u64> = batch.labels.iter().step_by(k).map(|&l| l as u64).collect();
        // The rows that take the loss: all of them, or the queries of an exemplar/query split.
        let prototype = &self.config.memory.prototype;
        let loss_rows = query_rows(identities.len(), k, prototype)?;
        let targets: Vec<u32> = loss_rows.iter().map(|&i| i / k as u32).collect();

        // Forward: embeddings, fresh prototypes, logits against [fresh ; memory].
        let x = self.encoder.forward_t(&images, true)?;
        let z = normalize_rows(&x)?;
        let fresh = prototypes(&x, k, prototype)?;
        let classifier = self.memory.classifier(&identities, &fresh)?;
        let z = match loss_rows.len() == b {
            true => z,
            false => z.index_select(&Tensor::new(loss_rows.as_slice(), &self.device)?, 0)?,
        };
        let cosines = z.matmul(&classifier.weights.t()?)?;
        let cosines = self.positives(&x, &z, k, cosines, &targets)?;
        let loss = self.loss.forward(&cosines, &targets)?;
        let loss_value = loss.to_scalar::<f32>()? as f64;
        self.step += 1;

        // A non-finite loss or gradient skips the step (no update of weights or memory).
        if !loss_value.is_finite() {
            return self.skip_step(loss_value, "loss");
        }
        let grads = loss.backward()?;
        if let Some(name) = self.optimizer.non_finite_gradient(&grads)? {
            return self.skip_step(loss_value, &format!("gradient of {name}"));
        }
        self.nonfinite_in_row = 0;
        self.optimizer
            .step(&grads, self.learning_rate(self.step - 1))?;

        // Memory update with the detached prototypes, after the optimiser step.
        let ages = self.memory.ages(&classifier.other_slots, self.step);
        if self.config.memory.eviction == Eviction::LeastRecentlyUsed {
            // Only this policy needs the hardest negatives: a B×C scan on the host.
            let used: Vec<usize> = hardest_negatives(&cosines, &targets)?
                .iter()
                .filter_map(|&col| col.checked_sub(classifier.n_fresh))
                .filter_map(|i| classifier.other_slots.get(i).copied())
                .collect();
            self.memory.mark_used(&used, self.step);
        }
        let rows = fresh.detach().flatten_all()?.to_vec1::<f32>()?;
        let every = self.config.run.obsolescence_every;
        let pending = (every > 0 && self.step.is_multiple_of(every)).then(|| {
            let (count, used) = (self.config.run.obsolescence_rows, &classifier.other_slots);
            let batch = (identities.as_slice(), rows.as_slice());
            obsolescence::sample(&self.memory, used, batch, count, self.step)
        });
        let stats = self.memory.update(&identities, &rows, self.step)?;
        let obsolescence = match pending {
            Some(pending) => Some(obsolescence::measure(
                pending,
                &self.encoder,
                &self.dataset,
                k,
                &self.device,
            )?),
            None => None,
        };
        let correct = correct_predictions(&cosines, &targets)?;
        Ok(StepOutcome {
            loss: Some(loss_value),
            correct,
            scored: targets.len(),
            classes: classifier.weights.dim(0)?,
            ages,
            stats,
            obsolescence,
        })
    }

    /// With leave-one-out prototypes, each image's target cosine is taken against the mean of
    /// the other images of its identity instead of the full mean.
    fn positives(
        &self,
        x: &Tensor,
        z: &Tensor,
        k: usize,
        cosines: Tensor,
        targets: &[u32],
    ) -> Result<Tensor> {
        let prototype = &self.config.memory.prototype;
        match prototype.source {
            PrototypeSource::Mean | PrototypeSource::Split => Ok(cosines),
            PrototypeSource::LeaveOneOut => {
                let others = leave_one_out(x, k, prototype)?;
                let positive = (z * others)?.sum_keepdim(D::Minus1)?;
                Ok(replace_targets(&cosines, targets, &positive)?)
            }
        }
    }

    pub(crate) fn skip_step(&mut self, loss_value: f64, what: &str) -> Result<StepOutcome> {
        self.nonfinite_in_row += 1;
        tracing::warn!(
            step = self.step,
            loss = loss_value,
            in_row = self.nonfinite_in_row,
            "non-finite {what}; step skipped"
        );
        if self.nonfinite_in_row >= self.config.optim.max_nonfinite_in_row {
            return Err(Error::Diverged(self.nonfinite_in_row));
        }
        Ok(StepOutcome::default())
    }

    /// Learning rate for the update that completes step `step + 1`.
    pub fn learning_rate(&self, step: u64) -> f64 {
        let o = &self.config.optim;
        if step < o.warmup_steps {
            return o.lr * (step + 1) as f64 / o.warmup_steps as f64;
        }
        match o.schedule {
            Schedule::Constant => o.lr,
            Schedule::Cosine => {
                let span = o.steps.saturating_sub(o.warmup_steps).max(1) as f64;
                let t = ((step - o.warmup_steps) as f64 / span).min(1.0);
                let floor = o.lr * o.final_lr_fraction;
                floor + 0.5 * (o.lr - floor) * (1.0 + (std::f64::consts::PI * t).cos())
            }
        }
    }

    fn save_checkpoint(&self) -> Result<()> {
        let mut state = self.memory.to_tensors()?;
        state.extend(self.optimizer.state());
        if let Some(head) = &self.head {
            state.extend(head.state()?);
        }
        let checkpoint = Checkpoint {
            step: self.step,
            sampler: self.sampler.state(),
            nonfinite_in_row: self.nonfinite_in_row,
        };
        let dir = checkpoint::checkpoint_dir(&self.config.run.dir, self.step);
        let config = self.config.to_toml()?;
        checkpoint::save(&dir, &self.varmap, &state, &checkpoint, &config)
    }

    fn save_final(&self) -> Result<()> {
        let path = self.config.run.dir.join("model.safetensors");
        self.varmap.save(&path)?;
        tracing::info!(path = %path.display(), "weights saved");
        Ok(())
    }
}

/// Running sums between two metric lines.
struct Window {
    started: Instant,
    losses: Vec<f64>,
    correct: usize,
    scored: usize,
    images: usize,
    skipped: usize,
    replaced: usize,
    last: StepOutcome,
    stats: pm_memory::UpdateStats,
    obsolescence: Option<Obsolescence>,
}

impl Window {
    fn new() -> Self {
        Self {
            started: Instant::now(),
            losses: Vec::new(),
            correct: 0,
            scored: 0,
            images: 0,
            replaced: 0,
            skipped: 0,
            last: StepOutcome::default(),
            stats: pm_memory::UpdateStats::default(),
            obsolescence: None,
        }
    }

    fn add(&mut self, outcome: &StepOutcome, batch_images: usize) {
        match outcome.loss {
            Some(loss) => self.losses.push(loss),
            None => self.skipped += 1,
        }
        self.correct += outcome.correct;
        self.scored += outcome.scored;
        self.images += batch_images;
        self.stats.refreshed += outcome.stats.refreshed;
        self.stats.inserted += outcome.stats.inserted;
        self.stats.evicted += outcome.stats.evicted;
        if outcome.obsolescence.is_some() {
            self.obsolescence.clone_from(&outcome.obsolescence);
        }
        if outcome.loss.is_some() {
            self.last = StepOutcome {
                ages: outcome.ages.clone(),
                classes: outcome.classes,
                ..StepOutcome::default()
            };
        }
    }

    fn close(&mut self, trainer: &Trainer, epoch: u64) -> StepMetrics {
        let seconds = self.started.elapsed().as_secs_f64().max(1e-9);
        let trained = self.losses.len().max(1) as f64;
        let ages = &self.last.ages;
        let line = StepMetrics {
            step: trainer.step,
            epoch,
            // NaN (written as null) when every step of the window was skipped.
            loss: if self.losses.is_empty() {
                f64::NAN
            } else {
                self.losses.iter().sum::<f64>() / trained
            },
            batch_accuracy: self.correct as f64 / self.scored.max(1) as f64,
            lr: trainer.learning_rate(trainer.step.saturating_sub(1)),
            images_per_second: self.images as f64 / seconds,
            memory_rows: trainer.memory.len(),
            classes_in_softmax: self.last.classes,
            mean_row_age: ages.iter().sum::<u64>() as f64 / ages.len().max(1) as f64,
            max_row_age: ages.iter().copied().max().unwrap_or(0),
            refreshed: self.stats.refreshed,
            inserted: self.stats.inserted,
            evicted: self.stats.evicted,
            skipped_steps: self.skipped,
            replaced_images: self.replaced,
            obsolescence: self.obsolescence.take(),
        };
        *self = Window::new();
        line
    }
}

/// Column of the highest-scoring wrong class of each row.
fn hardest_negatives(cosines: &Tensor, targets: &[u32]) -> Result<Vec<usize>> {
    let rows = cosines.detach().to_vec2::<f32>()?;
    Ok(rows
        .iter()
        .zip(targets)
        .map(|(row, &t)| {
            row.iter()
                .enumerate()
                .filter(|&(j, _)| j != t as usize)
                .max_by(|a, b| a.1.total_cmp(b.1))
                .map_or(t as usize, |(j, _)| j)
        })
        .collect())
}

pub(crate) fn correct_predictions(cosines: &Tensor, targets: &[u32]) -> Result<usize> {
    let predicted = cosines.detach().argmax(D::Minus1)?.to_vec1::<u32>()?;
    Ok(predicted
        .iter()
        .zip(targets)
        .filter(|(p, t)| p == t)
        .count())
}

fn check_dataset(config: &TrainConfig, dataset: &Dataset) -> Result<()> {
    let (h, w) = dataset.image_size();
    let side = config.model.input_size as u32;
    if h != side || w != side {
        return Err(Error::Config {
            path: config.data.dataset.clone(),
            what: format!(
                "images are {h}x{w}, the model's input_size is {side}; repack or change model.input_size"
            ),
        });
    }
    Ok(())
}

fn sampler_config(config: &TrainConfig) -> SamplerConfig {
    SamplerConfig {
        identities_per_batch: config.data.identities_per_batch,
        images_per_identity: config.data.images_per_identity,
        seed: config.data.seed,
        flip_probability: config.data.flip_probability,
        mode: config.data.sampling,
        ..SamplerConfig::default()
    }
}

fn named_vars(varmap: &VarMap) -> Result<Vec<(String, Var)>> {
    let vars = varmap
        .data()
        .lock()
        .map_err(|_| candle_core::Error::Msg("variable map lock poisoned".into()))?;
    let mut named: Vec<(String, Var)> = vars.iter().map(|(n, v)| (n.clone(), v.clone())).collect();
    named.sort_by(|a, b| a.0.cmp(&b.0));
    // BatchNorm running statistics are variables too, but no gradient reaches them.
    Ok(named)
}

/// Builds an encoder; with a seed its weights are drawn from it.
///
/// # Errors
/// An invalid encoder configuration.
pub fn build_encoder(
    config: &EncoderConfig,
    device: &Device,
    seed: Option<u64>,
) -> Result<(VarMap, Encoder)> {
    let varmap = VarMap::new();
    let vb = VarBuilder::from_varmap(&varmap, DType::F32, device);
    let encoder = Encoder::new(config, vb)?;
    if let Some(seed) = seed {
        seeded_init(&varmap, seed)?;
    }
    Ok((varmap, encoder))
}

/// Loads a trained encoder from a run directory (`config.toml` + `model.safetensors`), or from
/// a checkpoint directory inside it.
///
/// # Errors
/// Missing or mismatched files.
pub fn load_encoder(run_dir: &Path, weights: Option<&Path>) -> Result<(TrainConfig, Encoder)> {
    let config = TrainConfig::from_file(&run_dir.join("config.toml"))?;
    let (mut varmap, encoder) = build_encoder(&config.model, &Device::Cpu, Some(config.run.seed))?;
    let weights = weights.map_or_else(|| run_dir.join("model.safetensors"), Path::to_path_buf);
    varmap.load(&weights).map_err(|e| Error::Checkpoint {
        path: weights.clone(),
        what: e.to_string(),
    })?;
    Ok((config, encoder))
}

/// A fresh run must not mix its checkpoints and metrics with an earlier run's.
fn refuse_existing_run(run_dir: &Path) -> Result<()> {
    let metrics = run_dir.join("metrics.jsonl");
    if checkpoint::latest_checkpoint(run_dir)?.is_some() || metrics.exists() {
        return Err(Error::Config {
            path: run_dir.to_path_buf(),
            what: "the run directory already holds a run: continue it with --resume, or choose \
                   another run.dir"
                .into(),
        });
    }
    Ok(())
}

/// A checkpoint resumes only the run that wrote it: everything but the step budget and the
/// output cadence must match the configuration written with it.
fn check_same_run(config: &TrainConfig, checkpoint_dir: &Path) -> Result<()> {
    let saved_path = checkpoint_dir.join("config.toml");
    let saved = TrainConfig::from_file(&saved_path)?;
    let comparable = |c: &TrainConfig| {
        let mut c = c.clone();
        c.optim.steps = 0;
        c.data.prefetch = 0;
        c.run.checkpoint_every = 1;
        c.run.log_every = 1;
        c
    };
    let (a, b) = (comparable(config), comparable(&saved));
    let differs = [
        ("data", a.data != b.data),
        ("model", a.model != b.model),
        ("memory", a.memory != b.memory),
        ("head", a.head != b.head),
        ("loss", a.loss != b.loss),
        ("optim", a.optim != b.optim),
        ("run", a.run != b.run),
    ];
    let sections: Vec<&str> = differs
        .iter()
        .filter(|(_, d)| *d)
        .map(|(n, _)| *n)
        .collect();
    if sections.is_empty() {
        return Ok(());
    }
    Err(Error::Checkpoint {
        path: checkpoint_dir.to_path_buf(),
        what: format!(
            "written by a different configuration ([{}] differ from {}); only optim.steps, \
             data.prefetch and the run cadence may change on resume",
            sections.join("], ["),
            saved_path.display()
        ),
    })
}

/// Drops metric lines past `step` (left by an interrupted run that is being resumed).
fn truncate_metrics(path: &Path, step: u64) -> Result<()> {
    let Ok(text) = std::fs::read_to_string(path) else {
        return Ok(());
    };
    let kept: String = text
        .lines()
        .filter(|line| serde_json::from_str::<StepMetrics>(line).is_ok_and(|m| m.step <= step))
        .map(|line| format!("{line}\n"))
        .collect();
    std::fs::write(path, kept).map_err(|e| Error::io(path, e))
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use pm_data::{Crop, PackConfig, Preprocess, SynthConfig};

    use super::*;

    /// A trainer on 12 synthetic identities of 4 images, 32 px, P = 4 × K = 2.
    fn trainer(dir: &Path) -> Trainer {
        let synth = SynthConfig {
            size: 32,
            ..SynthConfig::default()
        };
        pm_data::write_synth_folder(&synth, &dir.join("faces"), 0..12, 4).unwrap();
        let pack = PackConfig {
            exclude: BTreeSet::new(),
            min_images: 2,
            preprocess: Preprocess {
                crop: Crop::Center { fraction: 1.0 },
                size: 32,
            },
            max_images_per_shard: 1000,
            storage: pm_data::Storage::Raw,
            append: false,
        };
        pm_data::pack_folder(&dir.join("faces"), &dir.join("data"), &pack).unwrap();
        let text = format!(
            "[data]\ndataset = \"{}\"\nidentities_per_batch = 4\nimages_per_identity = 2\n\
             [model]\ninput_size = 32\nwidths = [8, 16]\nblocks_per_stage = 1\n\
             embedding_dim = 8\n[memory]\ncapacity = 8\n[optim]\nlr = 0.1\nmomentum = 0.9\nweight_decay = 5e-4\nsteps = 10\n\
             warmup_steps = 0\n[run]\ndir = \"{}\"\n",
            dir.join("data").display(),
            dir.join("run").display()
        );
        let config = TrainConfig::from_toml(&text, Path::new("test.toml")).unwrap();
        Trainer::new(config, false).unwrap()
    }

    /// Every variable of the encoder (weights and running statistics), copied.
    fn state(trainer: &Trainer) -> Vec<(String, Vec<f32>)> {
        let vars = trainer.varmap.data().lock().unwrap();
        let mut state: Vec<(String, Vec<f32>)> = vars
            .iter()
            .map(|(n, v)| {
                (
                    n.clone(),
                    v.as_tensor().flatten_all().unwrap().to_vec1().unwrap(),
                )
            })
            .collect();
        state.sort_by(|a, b| a.0.cmp(&b.0));
        state
    }

    fn batch(trainer: &Trainer, poison: bool) -> Batch {
        let picks = trainer.sampler.clone().next_batch();
        let batch = pm_data::assemble(&trainer.dataset, &picks, 2).unwrap();
        let mut images = batch.images;
        if poison {
            images[0] = f32::NAN;
        }
        Batch { images, ..batch }
    }

    #[test]
    fn a_skipped_step_changes_nothing_and_a_good_step_resets_the_count() {
        let dir = tempfile::tempdir().unwrap();
        let mut trainer = trainer(dir.path());
        let good = batch(&trainer, false);
        trainer.train_step(&good).unwrap();
        let before = state(&trainer);
        let memory_before = trainer.memory.len();

        let outcome = trainer.train_step(&batch(&trainer, true)).unwrap();
        assert_eq!(outcome.loss, None, "a NaN image must give a skipped step");
        assert_eq!(trainer.nonfinite_in_row, 1);
        assert_eq!(trainer.memory.len(), memory_before);
        let after = state(&trainer);
        for ((name, a), (_, b)) in before.iter().zip(&after) {
            assert!(a == b, "{name} changed in a skipped step");
        }

        let outcome = trainer.train_step(&good).unwrap();
        assert!(outcome.loss.is_some_and(f64::is_finite));
        assert_eq!(trainer.nonfinite_in_row, 0);
        assert!(
            state(&trainer) != after,
            "a good step must move the weights"
        );
    }
}
