//! Scale benchmark of the classifier heads (`pm bench scale`, `benches/benches/head_scale.rs`):
//! step time and peak resident memory of one head step for N identities, with the embeddings
//! fed in, so the encoder does not hide the head.
//!
//! ```text
//! inputs   z [B, d] random unit rows (a Var: the step computes grad_z, as training does)
//!          labels: P = B/K distinct identities uniform in 0..N, each K times (identity-major)
//! full     cos = z·Ŵᵀ [B, N]            → CosFace → backward → SGD step on all N rows
//! partial  S = sample(labels, step)      cos = z·Ŵ_Sᵀ [B, |S|], |S| ≈ P + r·(N − P)
//!                                        → CosFace → backward → SGD step on the |S| rows
//! memory   fresh = mean prototypes [P, d]; cos = z·[fresh; stored]ᵀ [B, P + min(M, N) − hits]
//!          → CosFace → backward (to z) → memory.update(identities, fresh)
//! CosFace: s = 64, m = 0.35.  Row SGD: η = 0.1, μ = 0.9, λ = 5e-4.
//! ```
//! The memory starts full: `min(M, N)` identities spread over `0..N` with random rows, so a step
//! refreshes or evicts as it would in a long run. Each case runs `warmup` untimed steps, then
//! `steps` timed ones; batch drawing is outside the timing.
//!
//! Cases run in a child process ([`Isolation::ChildProcess`]): [`run_scale`] re-invokes
//! [`std::env::current_exe`] with the case in the environment variable [`CHILD_ENV`], and the
//! binary's `main` must hand over to [`child_main`] first thing. The child's `VmHWM` is then
//! that case's peak alone. A case whose [`estimate_bytes`] exceeds the budget is not run; the
//! report gives the memory it would need.

use std::collections::HashSet;
use std::fmt::Write as _;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use candle_core::{DType, Device, Tensor, Var};
use pm_data::SplitMix64;
use pm_loss::{
    FullSoftmaxHead, Margin, MarginConfig, MarginLoss, PartialFcHead, RowSgd, cosine_logits,
    negatives_per_step,
};
use pm_memory::{MemoryConfig, PrototypeConfig, PrototypeMemory, normalize_rows, prototypes};
use serde::{Deserialize, Serialize};

use crate::plot::{Dash, Panel, Series, svg};
use crate::{Error, Result};

/// Environment variable that carries one case (JSON) to the child process.
pub const CHILD_ENV: &str = "PM_SCALE_HEAD_CASE";

const GIB: f64 = (1u64 << 30) as f64;
const MIB: f64 = (1u64 << 20) as f64;
const SGD: RowSgd = RowSgd {
    lr: 0.1,
    momentum: 0.9,
    weight_decay: 5e-4,
};
/// Bytes of a process before any head exists (binary, allocator, thread stacks).
const BASELINE_BYTES: f64 = 64.0 * MIB;
/// `[rows, d]` f32 tensors alive at the peak of a learned-row step, per learned or sampled row
/// (rows, momentum, squares, normalised rows, their gradients, SGD temporaries).
const ROW_COPIES: f64 = 8.0;
/// `[B, C]` f32 tensors alive at the peak of the margin loss and its backward pass.
const LOGIT_COPIES: f64 = 22.0;
/// Bytes per memory slot beside its row (identity, steps, map and queue entries).
const SLOT_BOOKKEEPING: f64 = 128.0;

/// Which head a case measures.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ScaleHead {
    /// Prototype Memory with `capacity` slots.
    PrototypeMemory {
        /// Number of slots M.
        capacity: usize,
    },
    /// A full softmax over N learned rows.
    FullSoftmax,
    /// Partial FC over N learned rows.
    PartialFc,
}

impl ScaleHead {
    /// The name in tables and legends.
    pub fn label(&self) -> String {
        match self {
            ScaleHead::PrototypeMemory { capacity } => format!("prototype memory M={capacity}"),
            ScaleHead::FullSoftmax => "full softmax".into(),
            ScaleHead::PartialFc => "partial FC".into(),
        }
    }
}

/// Where the cases run.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Isolation {
    /// One child process per case: a clean peak RSS. The binary must call [`child_main`].
    #[default]
    ChildProcess,
    /// In this process, one case after another (tests): no peak RSS is reported, because the
    /// high-water mark of a process never goes down.
    InProcess,
}

/// What to measure.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ScaleConfig {
    /// Batch size B.
    pub batch: usize,
    /// Embedding dimension d.
    pub dim: usize,
    /// Images per identity K (P = B / K identities per batch).
    pub images_per_identity: usize,
    /// Numbers of identities N.
    pub identities: Vec<u64>,
    /// Prototype Memory sizes M (one series each).
    pub memory_sizes: Vec<usize>,
    /// Partial FC sample rate r.
    pub sample_rate: f64,
    /// Untimed steps before the timed ones.
    pub warmup: usize,
    /// Timed steps per case.
    pub steps: usize,
    /// Cases whose [`estimate_bytes`] exceeds this are skipped.
    pub memory_budget_bytes: u64,
    /// Child processes or this one.
    pub isolation: Isolation,
    /// Seed of rows, embeddings and labels.
    pub seed: u64,
}

impl Default for ScaleConfig {
    fn default() -> Self {
        Self {
            batch: 256,
            dim: 512,
            images_per_identity: 2,
            identities: vec![1_000, 10_000, 100_000, 1_000_000, 10_000_000],
            memory_sizes: vec![1024, 16384],
            sample_rate: 0.1,
            warmup: 1,
            steps: 3,
            memory_budget_bytes: default_memory_budget(),
            isolation: Isolation::ChildProcess,
            seed: 0,
        }
    }
}

/// 80% of the machine's memory, but no more than what is available now (the benchmark must
/// not push other work out); 19 GiB where `/proc/meminfo` cannot be read.
pub fn default_memory_budget() -> u64 {
    let Ok(info) = std::fs::read_to_string("/proc/meminfo") else {
        return 19 << 30;
    };
    let kib = |name: &str| -> Option<u64> {
        let line = info.lines().find(|l| l.starts_with(name))?;
        line.split_whitespace().nth(1)?.parse().ok()
    };
    match (kib("MemTotal:"), kib("MemAvailable:")) {
        (Some(total), available) => {
            let share = total / 10 * 8;
            share.min(available.unwrap_or(share)) * 1024
        }
        _ => 19 << 30,
    }
}

/// One head at one N: everything a child process needs.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ScaleCase {
    /// The head.
    pub head: ScaleHead,
    /// Number of identities N.
    pub identities: u64,
    /// Batch size B.
    pub batch: usize,
    /// Embedding dimension d.
    pub dim: usize,
    /// Images per identity K.
    pub images_per_identity: usize,
    /// Partial FC sample rate r.
    pub sample_rate: f64,
    /// Untimed steps.
    pub warmup: usize,
    /// Timed steps.
    pub steps: usize,
    /// Seed.
    pub seed: u64,
}

impl ScaleCase {
    /// Identities per batch P.
    fn batch_identities(&self) -> usize {
        self.batch / self.images_per_identity.max(1)
    }

    /// Columns of the softmax: N, |S| or P + the stored rows of other identities (at most).
    pub fn softmax_rows(&self) -> u64 {
        let n = self.identities;
        let p = self.batch_identities() as u64;
        match self.head {
            ScaleHead::FullSoftmax => n,
            ScaleHead::PartialFc => {
                let negatives = n.saturating_sub(p) as usize;
                p + negatives_per_step(self.sample_rate, negatives) as u64
            }
            ScaleHead::PrototypeMemory { capacity } => p + (capacity as u64).min(n),
        }
    }
}

/// Bytes a case needs at its peak (a model, not a measurement; see the constants above):
/// ```text
/// full     (ROW_COPIES·N·d + LOGIT_COPIES·B·N)·4
/// partial  (2·N·d + ROW_COPIES·S·d + LOGIT_COPIES·B·S)·4 + 8·N      S = |S|
/// memory   (3·M·d + LOGIT_COPIES·B·C)·4 + SLOT_BOOKKEEPING·M          C = P + min(M, N)
/// ```
/// plus a fixed process baseline.
pub fn estimate_bytes(case: &ScaleCase) -> u64 {
    let (n, d, b) = (case.identities as f64, case.dim as f64, case.batch as f64);
    let columns = case.softmax_rows() as f64;
    let floats = match case.head {
        ScaleHead::FullSoftmax => ROW_COPIES * n * d + LOGIT_COPIES * b * n + 2.0 * n,
        ScaleHead::PartialFc => {
            2.0 * n * d + ROW_COPIES * columns * d + LOGIT_COPIES * b * columns + 2.0 * n
        }
        ScaleHead::PrototypeMemory { capacity } => {
            let m = capacity as f64;
            3.0 * m * d + LOGIT_COPIES * b * columns + SLOT_BOOKKEEPING / 4.0 * m
        }
    };
    (floats * 4.0 + BASELINE_BYTES) as u64
}

/// What one case measured.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Measurement {
    /// Mean wall time of a timed step, milliseconds.
    pub step_ms: f64,
    /// Peak resident memory of the process (`VmHWM`); `None` in process or off Linux.
    pub peak_rss_bytes: Option<u64>,
    /// Softmax columns of the last step.
    pub softmax_rows: usize,
    /// Loss of the last step.
    pub loss: f64,
}

/// How a case ended.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// It ran.
    Measured(Measurement),
    /// Not run: the estimate exceeds the budget.
    Skipped {
        /// The estimate.
        needs_bytes: u64,
        /// The budget.
        budget_bytes: u64,
    },
    /// The child process failed (out of memory, a tensor error): its exit status and stderr.
    Failed(String),
}

/// One row of the report.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CaseResult {
    /// The case.
    pub case: ScaleCase,
    /// [`estimate_bytes`] of the case.
    pub estimate_bytes: u64,
    /// What happened.
    pub outcome: Outcome,
}

/// Every case of a run, in the order run (head by head, N ascending).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ScaleReport {
    /// The configuration.
    pub config: ScaleConfig,
    /// The cases.
    pub results: Vec<CaseResult>,
}

/// Runs every head at every N of `config`; `progress` sees each case as it ends.
///
/// # Errors
/// [`Error::Config`] for a batch that is not P groups of K, or an N below P; [`Error::Io`] when
/// the child process cannot be started. A child that fails is a [`Outcome::Failed`] row, not an
/// error; in process, a case's tensor error is returned.
pub fn run_scale(
    config: &ScaleConfig,
    mut progress: impl FnMut(&CaseResult),
) -> Result<ScaleReport> {
    check_config(config)?;
    let mut results = Vec::new();
    for case in cases(config) {
        let estimate = estimate_bytes(&case);
        let outcome = if estimate > config.memory_budget_bytes {
            Outcome::Skipped {
                needs_bytes: estimate,
                budget_bytes: config.memory_budget_bytes,
            }
        } else {
            match config.isolation {
                Isolation::InProcess => Outcome::Measured(run_case(&case)?),
                Isolation::ChildProcess => run_child(&case)?,
            }
        };
        let result = CaseResult {
            case,
            estimate_bytes: estimate,
            outcome,
        };
        progress(&result);
        results.push(result);
    }
    Ok(ScaleReport {
        config: config.clone(),
        results,
    })
}

fn check_config(config: &ScaleConfig) -> Result<()> {
    let invalid = |what: String| Error::Config {
        path: "<scale>".into(),
        what,
    };
    let k = config.images_per_identity;
    if k == 0 || config.batch == 0 || !config.batch.is_multiple_of(k) || config.dim == 0 {
        return Err(invalid(format!(
            "batch {} must be P groups of K = {k} images, dim {} positive",
            config.batch, config.dim
        )));
    }
    let p = (config.batch / k) as u64;
    if let Some(&n) = config
        .identities
        .iter()
        .find(|&&n| n < p || n > u64::from(u32::MAX))
    {
        return Err(invalid(format!(
            "N = {n} identities: need P = {p} <= N < 2^32"
        )));
    }
    if config.steps == 0 || config.memory_sizes.contains(&0) {
        return Err(invalid("steps and memory sizes must be positive".into()));
    }
    Ok(())
}

fn cases(config: &ScaleConfig) -> Vec<ScaleCase> {
    let mut heads: Vec<ScaleHead> = config
        .memory_sizes
        .iter()
        .map(|&capacity| ScaleHead::PrototypeMemory { capacity })
        .collect();
    heads.extend([ScaleHead::FullSoftmax, ScaleHead::PartialFc]);
    let mut identities = config.identities.clone();
    identities.sort_unstable();
    identities.dedup();
    heads
        .into_iter()
        .flat_map(|head| identities.iter().map(move |&n| (head, n)))
        .map(|(head, identities)| ScaleCase {
            head,
            identities,
            batch: config.batch,
            dim: config.dim,
            images_per_identity: config.images_per_identity,
            sample_rate: config.sample_rate,
            warmup: config.warmup,
            steps: config.steps,
            seed: config.seed,
        })
        .collect()
}

/// Runs `case` in a child process and reads its [`Measurement`] from the last line of stdout.
fn run_child(case: &ScaleCase) -> Result<Outcome> {
    let exe = std::env::current_exe().map_err(|e| Error::io("<current executable>", e))?;
    let json = serde_json::to_string(case).expect("a case serialises");
    tracing::info!(head = %case.head.label(), n = case.identities, "scale case in a child");
    let output = Command::new(&exe)
        .env(CHILD_ENV, json)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| Error::io(&exe, e))?;
    let stdout = String::from_utf8_lossy(&output.stdout);
    let last = stdout.lines().rev().find(|l| !l.trim().is_empty());
    match (output.status.success(), last.map(serde_json::from_str)) {
        (true, Some(Ok(measurement))) => Ok(Outcome::Measured(measurement)),
        _ => {
            let stderr = String::from_utf8_lossy(&output.stderr);
            let tail: String = stderr.lines().rev().take(3).collect::<Vec<_>>().join(" / ");
            Ok(Outcome::Failed(format!("{}: {tail}", output.status)))
        }
    }
}

/// In a process started by [`run_scale`] (the environment holds [`CHILD_ENV`]): runs the case
/// and returns the line the binary must print on stdout; `None` in any other process.
///
/// Call it first thing in `main`; on `Some(Err(_))` print the error to stderr and exit non-zero.
pub fn child_main() -> Option<Result<String>> {
    let json = std::env::var(CHILD_ENV).ok()?;
    let run = || -> Result<String> {
        let case: ScaleCase = serde_json::from_str(&json).map_err(|e| Error::Config {
            path: CHILD_ENV.into(),
            what: e.to_string(),
        })?;
        let mut measurement = run_case(&case)?;
        measurement.peak_rss_bytes = peak_rss_bytes();
        Ok(serde_json::to_string(&measurement).expect("a measurement serialises"))
    };
    Some(run())
}

/// `VmHWM` of this process in bytes; `None` off Linux.
fn peak_rss_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// Runs one case in this process (no peak RSS: see [`Isolation::InProcess`]).
///
/// # Errors
/// Tensor, loss and memory errors.
pub fn run_case(case: &ScaleCase) -> Result<Measurement> {
    // A case can come from the environment of a child process: check it as a whole config.
    check_config(&ScaleConfig {
        batch: case.batch,
        dim: case.dim,
        images_per_identity: case.images_per_identity,
        identities: vec![case.identities],
        memory_sizes: match case.head {
            ScaleHead::PrototypeMemory { capacity } => vec![capacity],
            _ => Vec::new(),
        },
        sample_rate: case.sample_rate,
        warmup: case.warmup,
        steps: case.steps,
        seed: case.seed,
        ..ScaleConfig::default()
    })?;
    let device = Device::Cpu;
    let loss = MarginLoss::new(MarginConfig {
        kind: Margin::CosFace,
        scale: 64.0,
        margin: 0.35,
    })?;
    let mut head = CaseHead::new(case, &device)?;
    let mut timed = Duration::ZERO;
    let mut last = (0, f64::NAN);
    for step in 1..=(case.warmup + case.steps) as u64 {
        let batch = Batch::draw(case, step, &device)?;
        let start = Instant::now();
        last = head.step(&batch, &loss, step)?;
        if step > case.warmup as u64 {
            timed += start.elapsed();
        }
    }
    Ok(Measurement {
        step_ms: timed.as_secs_f64() * 1e3 / case.steps.max(1) as f64,
        peak_rss_bytes: None,
        softmax_rows: last.0,
        loss: last.1,
    })
}

/// One step's inputs.
struct Batch {
    z: Var,
    labels: Vec<u32>,
    identities: Vec<u64>,
    k: usize,
}

impl Batch {
    /// P distinct identities uniform in 0..N, K images each; random unit embeddings.
    fn draw(case: &ScaleCase, step: u64, device: &Device) -> Result<Self> {
        let mut rng = SplitMix64::from_keys(&[case.seed, 0xBA7C, step]);
        let (p, k) = (case.batch_identities(), case.images_per_identity);
        let mut seen = HashSet::with_capacity(p);
        let mut identities = Vec::with_capacity(p);
        while identities.len() < p {
            let id = rng.below(case.identities);
            if seen.insert(id) {
                identities.push(id);
            }
        }
        let labels = identities
            .iter()
            .flat_map(|&id| std::iter::repeat_n(id as u32, k))
            .collect();
        let z = random_unit_rows(case.batch, case.dim, &mut rng, device)?;
        Ok(Self {
            z: Var::from_tensor(&z)?,
            labels,
            identities,
            k,
        })
    }
}

/// `n` random unit rows `[n, d]` (Gaussian directions).
fn random_unit_rows(n: usize, d: usize, rng: &mut SplitMix64, device: &Device) -> Result<Tensor> {
    let data: Vec<f32> = (0..n * d)
        .map(|_| {
            let u1 = (rng.unit_f32() as f64).max(1e-12);
            let u2 = rng.unit_f32() as f64;
            ((-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()) as f32
        })
        .collect();
    Ok(normalize_rows(&Tensor::from_vec(data, (n, d), device)?)?)
}

/// The head of one case with its state.
enum CaseHead {
    Memory(PrototypeMemory),
    Full(FullSoftmaxHead),
    Partial(PartialFcHead),
}

impl CaseHead {
    fn new(case: &ScaleCase, device: &Device) -> Result<Self> {
        let n = case.identities as usize;
        Ok(match case.head {
            ScaleHead::FullSoftmax => {
                CaseHead::Full(FullSoftmaxHead::new(n, case.dim, case.seed, device)?)
            }
            ScaleHead::PartialFc => CaseHead::Partial(PartialFcHead::new(
                n,
                case.dim,
                case.sample_rate,
                case.seed,
                device,
            )?),
            ScaleHead::PrototypeMemory { capacity } => {
                CaseHead::Memory(full_memory(case, capacity, device)?)
            }
        })
    }

    /// One step; returns (softmax columns, loss).
    fn step(&mut self, batch: &Batch, loss: &MarginLoss, step: u64) -> Result<(usize, f64)> {
        let z = batch.z.as_tensor();
        match self {
            CaseHead::Full(head) => {
                let cosines = head.cosines(z)?;
                let value = loss.forward(&cosines, &batch.labels)?;
                let grads = value.backward()?;
                let grad = grads.get(head.weights().as_tensor()).cloned();
                drop(grads);
                head.step(&grad.ok_or_else(no_gradient)?, SGD, step)?;
                Ok((cosines.dim(1)?, value.to_scalar::<f32>()? as f64))
            }
            CaseHead::Partial(head) => {
                let sampled = head.sample(&batch.labels, step)?;
                let out = head.cosines(z, &sampled)?;
                let value = loss.forward(&out.cosines, &sampled.targets)?;
                let grads = value.backward()?;
                let grad = grads.get(out.rows.as_tensor()).cloned();
                drop(grads);
                head.step(&grad.ok_or_else(no_gradient)?, &sampled, SGD, step)?;
                Ok((out.cosines.dim(1)?, value.to_scalar::<f32>()? as f64))
            }
            CaseHead::Memory(memory) => memory_step(memory, batch, loss, step),
        }
    }
}

fn no_gradient() -> Error {
    Error::Config {
        path: "<scale>".into(),
        what: "the loss gave no gradient to the head's rows".into(),
    }
}

/// Prototype Memory step: fresh prototypes, classifier, loss, backward to z, memory update.
fn memory_step(
    memory: &mut PrototypeMemory,
    batch: &Batch,
    loss: &MarginLoss,
    step: u64,
) -> Result<(usize, f64)> {
    let z = batch.z.as_tensor();
    let fresh = prototypes(z, batch.k, &PrototypeConfig::default())?;
    let classifier = memory.classifier(&batch.identities, &fresh)?;
    let cosines = cosine_logits(z, &classifier.weights)?;
    let targets: Vec<u32> = (0..batch.labels.len())
        .map(|i| (i / batch.k) as u32)
        .collect();
    let value = loss.forward(&cosines, &targets)?;
    let grads = value.backward()?;
    std::hint::black_box(grads.get(z));
    drop(grads);

    let rows: Vec<f32> = fresh.flatten_all()?.to_vec1()?;
    memory.update(&batch.identities, &rows, step)?;
    Ok((cosines.dim(1)?, value.to_scalar::<f32>()? as f64))
}

/// A memory of `capacity` slots holding `min(capacity, N)` identities spread over `0..N`.
fn full_memory(case: &ScaleCase, capacity: usize, device: &Device) -> Result<PrototypeMemory> {
    let mut memory = PrototypeMemory::new(MemoryConfig {
        capacity,
        dim: case.dim,
        eviction: Default::default(),
        max_age: None,
    })?;
    let held = (capacity as u64).min(case.identities);
    let mut rng = SplitMix64::from_keys(&[case.seed, 0x5107]);
    let chunk = 4096u64.min(capacity as u64);
    let mut start = 0;
    while start < held {
        let end = (start + chunk).min(held);
        let ids: Vec<u64> = (start..end).map(|i| i * case.identities / held).collect();
        let rows = random_unit_rows(ids.len(), case.dim, &mut rng, device)?;
        let rows: Vec<f32> = rows.to_dtype(DType::F32)?.flatten_all()?.to_vec1()?;
        memory.update(&ids, &rows, 0)?;
        start = end;
    }
    Ok(memory)
}

impl ScaleReport {
    /// The report as a markdown table: step time and peak RSS per head and N, each with its
    /// ratio to the same head at the smallest N measured in this run, and the step time's ratio
    /// to the same head at the previous N (per decade: about 10 for a cost linear in N, about 1
    /// for a flat one).
    pub fn table(&self) -> String {
        let c = &self.config;
        let mut out = String::new();
        let _ = writeln!(
            out,
            "Classifier head at scale: batch {} × {}-d embeddings fed in (K = {}), CosFace s = 64 \
             m = 0.35, Partial FC r = {}; mean of {} timed steps after {} warm-up; memory \
             budget {:.1} GiB.\n",
            c.batch,
            c.dim,
            c.images_per_identity,
            c.sample_rate,
            c.steps,
            c.warmup,
            c.memory_budget_bytes as f64 / GIB
        );
        out.push_str(
            "| head | N | softmax rows | step ms | × smallest N | × previous N | peak RSS MiB \
             | × smallest N | estimate GiB |\n|---|---:|---:|---:|---:|---:|---:|---:|---:|\n",
        );
        for (index, result) in self.results.iter().enumerate() {
            out.push_str(&self.row(index, result));
        }
        out
    }

    fn row(&self, index: usize, result: &CaseResult) -> String {
        let case = &result.case;
        let reference = self.reference(&case.head);
        let previous = self.previous(index);
        // Measured columns where the case ran, the planned ones otherwise.
        let columns = match &result.outcome {
            Outcome::Measured(m) => m.softmax_rows as u64,
            _ => case.softmax_rows(),
        };
        let lead = format!(
            "| {} | {} | {} |",
            case.head.label(),
            power_of_ten(case.identities),
            thousands(columns)
        );
        let estimate = result.estimate_bytes as f64 / GIB;
        match &result.outcome {
            Outcome::Measured(m) => {
                let ratio = |x: f64, r: Option<f64>| match r {
                    Some(r) if r > 0.0 => format!("{:.2}", x / r),
                    _ => "–".into(),
                };
                let rss = m.peak_rss_bytes.map(|b| b as f64 / MIB);
                let ref_rss = reference
                    .and_then(|r| r.peak_rss_bytes)
                    .map(|b| b as f64 / MIB);
                format!(
                    "{lead} {:.1} | {} | {} | {} | {} | {estimate:.2} |\n",
                    m.step_ms,
                    ratio(m.step_ms, reference.map(|r| r.step_ms)),
                    ratio(m.step_ms, previous.map(|r| r.step_ms)),
                    rss.map_or("–".into(), |r| format!("{r:.0}")),
                    rss.map_or("–".into(), |r| ratio(r, ref_rss)),
                )
            }
            Outcome::Skipped {
                needs_bytes,
                budget_bytes,
            } => format!(
                "{lead} skipped: needs {:.1} GiB (budget {:.1} GiB) | | | | | {estimate:.2} |\n",
                *needs_bytes as f64 / GIB,
                *budget_bytes as f64 / GIB
            ),
            Outcome::Failed(why) => {
                format!(
                    "{lead} failed: {} | | | | | {estimate:.2} |\n",
                    why.replace('|', "/")
                )
            }
        }
    }

    /// The measurement of `head` at the smallest N it ran at.
    fn reference(&self, head: &ScaleHead) -> Option<&Measurement> {
        self.results
            .iter()
            .filter(|r| r.case.head == *head)
            .find_map(|r| match &r.outcome {
                Outcome::Measured(m) => Some(m),
                _ => None,
            })
    }

    /// The measurement of the same head as `results[index]` at the N just before it, if that
    /// case ran.
    fn previous(&self, index: usize) -> Option<&Measurement> {
        let head = self.results[index].case.head;
        match &self.results[..index]
            .iter()
            .rev()
            .find(|r| r.case.head == head)?
            .outcome
        {
            Outcome::Measured(m) => Some(m),
            _ => None,
        }
    }

    /// Two SVG panels, log10 step time and log10 peak RSS against log10 N, one series per head
    /// (cases that did not run are left out).
    pub fn chart(&self) -> String {
        let mut heads: Vec<ScaleHead> = Vec::new();
        for result in &self.results {
            if !heads.contains(&result.case.head) {
                heads.push(result.case.head);
            }
        }
        let series = |value: &dyn Fn(&Measurement) -> Option<f64>| -> Vec<Series> {
            heads
                .iter()
                .enumerate()
                .map(|(i, head)| Series {
                    label: head.label(),
                    points: self.points(head, value),
                    colour: i,
                    dash: if i < self.config.memory_sizes.len() {
                        Dash::Solid
                    } else {
                        Dash::Dashed
                    },
                })
                .collect()
        };
        let time = Panel {
            title: "step time".into(),
            x_label: "log10 identities N".into(),
            y_label: "log10 ms per step".into(),
            series: series(&|m| Some(m.step_ms.max(1e-6).log10())),
            y_range: None,
        };
        let memory = Panel {
            title: "peak resident memory".into(),
            x_label: "log10 identities N".into(),
            y_label: "log10 MiB".into(),
            series: series(&|m| m.peak_rss_bytes.map(|b| (b as f64 / MIB).log10())),
            y_range: None,
        };
        let c = &self.config;
        let title = format!("Classifier head at scale (B = {}, d = {})", c.batch, c.dim);
        svg(&title, &[time, memory])
    }

    fn points(
        &self,
        head: &ScaleHead,
        value: &dyn Fn(&Measurement) -> Option<f64>,
    ) -> Vec<(f64, f64)> {
        self.results
            .iter()
            .filter(|r| r.case.head == *head)
            .filter_map(|r| match &r.outcome {
                Outcome::Measured(m) => Some(((r.case.identities as f64).log10(), value(m)?)),
                _ => None,
            })
            .collect()
    }
}

/// `10^k` for exact powers of ten, the number with separators otherwise.
fn power_of_ten(n: u64) -> String {
    let k = (n as f64).log10().round() as u32;
    match 10u64.checked_pow(k) == Some(n) {
        true => format!("10^{k}"),
        false => thousands(n),
    }
}

fn thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn small(identities: Vec<u64>) -> ScaleConfig {
        ScaleConfig {
            batch: 16,
            dim: 32,
            identities,
            memory_sizes: vec![64, 256],
            warmup: 0,
            steps: 1,
            memory_budget_bytes: 1 << 30,
            isolation: Isolation::InProcess,
            ..ScaleConfig::default()
        }
    }

    fn case(head: ScaleHead, n: u64) -> ScaleCase {
        cases(&ScaleConfig {
            identities: vec![n],
            ..ScaleConfig::default()
        })
        .into_iter()
        .find(|c| c.head == head)
        .expect("every head has a case")
    }

    #[test]
    fn the_estimate_grows_with_n_for_learned_rows_only() {
        let memory = ScaleHead::PrototypeMemory { capacity: 16384 };
        let at = |head, n| estimate_bytes(&case(head, n)) as f64;
        assert_eq!(at(memory, 1_000_000), at(memory, 10_000_000));
        assert!(at(memory, 1_000) < at(memory, 100_000));
        let full = at(ScaleHead::FullSoftmax, 1_000_000);
        let ratio = at(ScaleHead::FullSoftmax, 10_000_000) / full;
        assert!((9.0..10.5).contains(&ratio), "{ratio}");
        // Full softmax at 10^6, d = 512: at least rows + momentum (4.1 GB) + 2 logit copies.
        assert!(
            full > 2.0 * 2_048_000_000.0 + 2.0 * 1_024_000_000.0,
            "{full}"
        );
        let partial = at(ScaleHead::PartialFc, 1_000_000);
        assert!(
            partial < full / 2.0 && partial > 2.0 * 2_048_000_000.0,
            "{partial}"
        );
    }

    #[test]
    fn a_case_over_the_budget_is_skipped_with_what_it_needs() {
        let config = ScaleConfig {
            memory_budget_bytes: 1 << 20,
            ..small(vec![1_000])
        };
        let mut seen = 0;
        let report = run_scale(&config, |_| seen += 1).unwrap();
        assert_eq!(seen, 4);
        for result in &report.results {
            let Outcome::Skipped { needs_bytes, .. } = result.outcome else {
                panic!("{result:?} ran under a 1 MiB budget");
            };
            assert_eq!(needs_bytes, result.estimate_bytes);
        }
        let table = report.table();
        assert_eq!(table.matches("skipped: needs ").count(), 4, "{table}");
        assert!(table.contains("(budget 0.0 GiB)"), "{table}");
    }

    #[test]
    fn a_case_with_fewer_identities_than_a_batch_holds_is_an_error() {
        let mut bad = case(ScaleHead::FullSoftmax, 0);
        bad.steps = 1;
        let err = run_case(&bad).unwrap_err();
        assert!(err.to_string().contains("N = 0 identities"), "{err}");
    }

    #[test]
    fn every_head_runs_and_the_memory_does_not_see_n() {
        let report = run_scale(&small(vec![1_000, 2_000]), |_| {}).unwrap();
        assert_eq!(report.results.len(), 8);
        let measured = |head: ScaleHead, n: u64| -> Measurement {
            let result = report
                .results
                .iter()
                .find(|r| r.case.head == head && r.case.identities == n)
                .unwrap();
            match &result.outcome {
                Outcome::Measured(m) => m.clone(),
                other => panic!("{head:?} at {n}: {other:?}"),
            }
        };
        for result in &report.results {
            let m = measured(result.case.head, result.case.identities);
            assert!(m.step_ms.is_finite() && m.step_ms > 0.0, "{m:?}");
            assert!(m.loss.is_finite(), "{m:?}");
            assert_eq!(m.peak_rss_bytes, None, "no peak RSS in process");
        }
        for capacity in [64, 256] {
            let head = ScaleHead::PrototypeMemory { capacity };
            // A full memory: its M rows plus the P = 8 fresh ones, less the batch's hits.
            for n in [1_000, 2_000] {
                let rows = measured(head, n).softmax_rows;
                assert!(
                    (capacity..=capacity + 8).contains(&rows),
                    "M = {capacity}: {rows}"
                );
            }
        }
        assert_eq!(measured(ScaleHead::FullSoftmax, 2_000).softmax_rows, 2_000);
        let table = report.table();
        assert_eq!(table.lines().filter(|l| l.starts_with("| ")).count(), 9);
        // The per-decade column: the step time over the same head's at the N before, if any.
        let rows = table.lines().filter(|l| l.starts_with("| ")).skip(1);
        for (result, line) in report.results.iter().zip(rows) {
            let cells: Vec<&str> = line.split('|').map(str::trim).collect();
            let m = measured(result.case.head, result.case.identities);
            let expected = match result.case.identities {
                1_000 => "–".to_owned(),
                _ => {
                    let before = measured(result.case.head, 1_000);
                    format!("{:.2}", m.step_ms / before.step_ms)
                }
            };
            assert_eq!(cells[6], expected, "{line}");
        }
        let chart = report.chart();
        assert_eq!(
            chart.matches("<polyline").count(),
            8,
            "two panels × four heads"
        );
    }
}
