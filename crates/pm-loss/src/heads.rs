//! Learned-row classifier heads, the peers Prototype Memory is measured against: a full softmax
//! over N learned rows and Partial FC (sampled softmax, An et al., "Partial FC: Training 10
//! Million Identities on a Single Machine", ICCVW 2021; insightface's `PartialFC`).
//!
//! Both keep one row per identity, `W [N, d]`, and their own SGD-momentum state `V [N, d]`. The
//! rows are normalised in the forward pass, so the margin losses of [`crate::MarginLoss`] apply
//! to their cosines unchanged:
//! ```text
//! full softmax:  cos = ẑ · Ŵᵀ                        [B, N],  ŵ_j = w_j / ‖w_j‖, ẑ unit rows
//!                all N rows take gradient and are updated every step
//! Partial FC:    P = distinct labels of the batch (all positives)
//!                S = P ∪ R,  R ⊂ {0..N} \ P uniform without replacement,
//!                    |R| = ⌈r · (N − |P|)⌉               r = sample rate in (0, 1]
//!                cos = ẑ · Ŵ_Sᵀ                      [B, |S|], target of image i: position of
//!                                                               its label in S (S sorted)
//!                only the rows of S (weights and momentum) are updated
//! row update (both, rows j that were used):
//!                g_j = ∇w_j + λ · w_j
//!                v_j ← μ · v_j + g_j
//!                w_j ← w_j − η · v_j,   last_update_step_j ← step
//! ```
//! Rows start as unit vectors of seeded Gaussian directions (candle's CPU generator cannot be
//! seeded). Partial FC draws R from a generator whose state is a pure function of
//! (seed, step): a resumed run draws the same columns, and no generator state is hidden in
//! the head. A row's age at step t is `t − last_update_step`: the number of steps since its
//! last update (Partial FC rows of rarely sampled classes grow old, which is the obsolescence
//! Prototype Memory avoids).
//!
//! [`FullSoftmaxHead::state`] and [`PartialFcHead::state`] give the rows, the momentum and the
//! update steps as named tensors (`head.weights`, `head.momentum`, `head.last_update_step`)
//! for a checkpoint.

use std::collections::{HashMap, HashSet};

use candle_core::{D, DType, Device, Tensor, Var};

use crate::{Error, Result, cosine_logits};

/// Checkpoint name of the rows `[N, d]`.
pub const HEAD_WEIGHTS: &str = "head.weights";
/// Checkpoint name of the momentum `[N, d]`.
pub const HEAD_MOMENTUM: &str = "head.momentum";
/// Checkpoint name of the update steps `[N]` (i64).
pub const HEAD_LAST_UPDATE: &str = "head.last_update_step";

const EPS: f64 = 1e-12;
/// Stream keys, so that the initial rows and the column draws never share random numbers.
const INIT_KEY: u64 = 0x4EAD_1417;
const SAMPLE_KEY: u64 = 0x5A3B_1E00;

/// SGD with momentum and weight decay for the rows of a head.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct RowSgd {
    /// Learning rate η.
    pub lr: f64,
    /// Momentum μ.
    pub momentum: f64,
    /// Weight decay λ.
    pub weight_decay: f64,
}

impl RowSgd {
    /// New rows and momentum from rows `w`, momentum `v` and gradient `grad` (same shapes).
    fn apply(&self, w: &Tensor, v: &Tensor, grad: &Tensor) -> Result<(Tensor, Tensor)> {
        let grad = match self.weight_decay > 0.0 {
            true => (grad + w.affine(self.weight_decay, 0.0)?)?,
            false => grad.clone(),
        };
        let v = ((v * self.momentum)? + grad)?.detach();
        let w = (w - v.affine(self.lr, 0.0)?)?.detach();
        Ok((w, v))
    }
}

/// A full softmax head: N learned rows, all of them in every step's softmax.
#[derive(Debug)]
pub struct FullSoftmaxHead {
    rows: Rows,
}

impl FullSoftmaxHead {
    /// `n_classes` rows of dimension `dim`, drawn from `seed`.
    ///
    /// # Errors
    /// [`Error::Invalid`] for zero classes or dimension; tensor errors.
    pub fn new(n_classes: usize, dim: usize, seed: u64, device: &Device) -> Result<Self> {
        Ok(Self {
            rows: Rows::new(n_classes, dim, seed, device)?,
        })
    }

    /// Cosines `[B, N]` of unit embeddings `z_unit [B, d]` against the normalised rows; the
    /// gradient reaches [`FullSoftmaxHead::weights`].
    ///
    /// # Errors
    /// Shapes that do not multiply.
    pub fn cosines(&self, z_unit: &Tensor) -> Result<Tensor> {
        cosine_logits(z_unit, &normalize_rows(self.rows.weights.as_tensor())?)
    }

    /// Updates every row with its gradient `grad [N, d]` (from the loss's backward pass
    /// through [`FullSoftmaxHead::cosines`]) and records `step` as their update step.
    ///
    /// # Errors
    /// [`Error::Invalid`] for a gradient of another shape; tensor errors.
    pub fn step(&mut self, grad: &Tensor, sgd: RowSgd, step: u64) -> Result<()> {
        let rows = &mut self.rows;
        rows.check_grad(grad, rows.n_classes())?;
        let w = rows.weights.as_tensor().detach();
        let (w, v) = sgd.apply(&w, &rows.momentum, grad)?;
        rows.weights.set(&w)?;
        rows.momentum = v;
        rows.last_update_step.fill(step);
        Ok(())
    }

    /// Number of classes N.
    pub fn n_classes(&self) -> usize {
        self.rows.n_classes()
    }

    /// Row dimension d.
    pub fn dim(&self) -> usize {
        self.rows.dim
    }

    /// The rows `[N, d]` (not normalised).
    pub fn weights(&self) -> &Var {
        &self.rows.weights
    }

    /// The momentum `[N, d]`.
    pub fn momentum(&self) -> &Tensor {
        &self.rows.momentum
    }

    /// The step of each row's last update (0: never updated since initialisation).
    pub fn last_update_step(&self) -> &[u64] {
        &self.rows.last_update_step
    }

    /// Rows, momentum and update steps as named tensors (copies).
    ///
    /// # Errors
    /// Tensor errors.
    pub fn state(&self) -> Result<HashMap<String, Tensor>> {
        self.rows.state()
    }

    /// Restores what [`FullSoftmaxHead::state`] wrote.
    ///
    /// # Errors
    /// [`Error::Invalid`] naming a missing entry or a mismatched N or d.
    pub fn restore(&mut self, tensors: &HashMap<String, Tensor>) -> Result<()> {
        self.rows.restore(tensors)
    }
}

/// The columns of one Partial FC step.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Sampled {
    /// Classes whose rows take part, sorted ascending: every positive and the drawn negatives.
    pub columns: Vec<u32>,
    /// For each label passed to [`PartialFcHead::sample`], the position of its class in
    /// `columns`: the target of the margin loss.
    pub targets: Vec<u32>,
    /// The drawn negative classes, sorted ascending (a subset of `columns`).
    pub negatives: Vec<u32>,
}

/// Cosines of a Partial FC step and the rows they were computed from.
#[derive(Debug)]
pub struct SampledCosines {
    /// `[B, S]`, S = `columns.len()`.
    pub cosines: Tensor,
    /// A copy of the sampled rows `[S, d]`: the gradient of the loss with respect to it is
    /// what [`PartialFcHead::step`] takes.
    pub rows: Var,
}

/// Partial FC: N learned rows; each step uses all positive rows and a random fraction of the
/// negative rows, and updates only those.
#[derive(Debug)]
pub struct PartialFcHead {
    rows: Rows,
    sample_rate: f64,
    seed: u64,
}

impl PartialFcHead {
    /// `n_classes` rows of dimension `dim` drawn from `seed`; each step keeps a fraction
    /// `sample_rate` (r) of the negatives.
    ///
    /// # Errors
    /// [`Error::Invalid`] for r outside (0, 1], zero classes or dimension.
    pub fn new(
        n_classes: usize,
        dim: usize,
        sample_rate: f64,
        seed: u64,
        device: &Device,
    ) -> Result<Self> {
        if !(sample_rate > 0.0 && sample_rate <= 1.0) {
            return Err(Error::Invalid(format!(
                "partial_fc head: sample_rate must be in (0, 1], got {sample_rate}"
            )));
        }
        Ok(Self {
            rows: Rows::new(n_classes, dim, seed, device)?,
            sample_rate,
            seed,
        })
    }

    /// The columns of step `step` for a batch with `labels`: all distinct labels plus
    /// ⌈r·(N − positives)⌉ negatives drawn without replacement by a generator seeded with
    /// (seed, step) only.
    ///
    /// # Errors
    /// [`Error::Invalid`] for a label ≥ N.
    pub fn sample(&self, labels: &[u32], step: u64) -> Result<Sampled> {
        let n = self.n_classes();
        if let Some(&bad) = labels.iter().find(|&&l| l as usize >= n) {
            return Err(Error::Invalid(format!(
                "partial_fc head: label {bad} out of range for {n} classes"
            )));
        }
        let mut positives = labels.to_vec();
        positives.sort_unstable();
        positives.dedup();

        // Draw ranks among the negatives, then map each rank to its class id.
        let n_negatives = n - positives.len();
        let count = negatives_per_step(self.sample_rate, n_negatives);
        let mut rng = SplitMix64::from_keys(&[self.seed, SAMPLE_KEY, step]);
        let mut ranks = distinct_below(n_negatives as u64, count, &mut rng);
        ranks.sort_unstable();
        let negatives = skip_positives(&ranks, &positives);

        let mut columns = [positives.as_slice(), negatives.as_slice()].concat();
        columns.sort_unstable();
        let targets = labels
            .iter()
            .map(|l| {
                let at = columns.binary_search(l).expect("every label is a column");
                at as u32
            })
            .collect();
        Ok(Sampled {
            columns,
            targets,
            negatives,
        })
    }

    /// Cosines `[B, S]` of unit embeddings `z_unit [B, d]` against the normalised sampled rows.
    ///
    /// # Errors
    /// A column ≥ N; shapes that do not multiply.
    pub fn cosines(&self, z_unit: &Tensor, sampled: &Sampled) -> Result<SampledCosines> {
        let index = self.rows.index(&sampled.columns)?;
        let rows = Var::from_tensor(&self.rows.weights.as_tensor().index_select(&index, 0)?)?;
        let cosines = cosine_logits(z_unit, &normalize_rows(rows.as_tensor())?)?;
        Ok(SampledCosines { cosines, rows })
    }

    /// Updates the sampled rows and their momentum with their gradient `grad`, either `[S, d]`
    /// (with respect to [`SampledCosines::rows`]) or `[N, d]`; every other row and its
    /// momentum stay as they are. Records `step` as the sampled rows' update step.
    ///
    /// # Errors
    /// [`Error::Invalid`] for a gradient of another shape or a column ≥ N; tensor errors.
    pub fn step(&mut self, grad: &Tensor, sampled: &Sampled, sgd: RowSgd, step: u64) -> Result<()> {
        let rows = &mut self.rows;
        let s = sampled.columns.len();
        let index = rows.index(&sampled.columns)?;
        let grad = match grad.dims2()? {
            (r, _) if r == s => grad.clone(),
            (r, _) if r == rows.n_classes() => grad.index_select(&index, 0)?,
            _ => grad.clone(),
        };
        rows.check_grad(&grad, s)?;

        let w = rows.weights.as_tensor().index_select(&index, 0)?.detach();
        let v = rows.momentum.index_select(&index, 0)?;
        let (w, v) = sgd.apply(&w, &v, &grad)?;
        // Row writes outside any differentiated path (scatter backward is wrong in candle 0.11).
        let rows_index = index
            .reshape((s, 1))?
            .broadcast_as((s, rows.dim))?
            .contiguous()?;
        rows.weights.as_tensor().scatter_set(&rows_index, &w, 0)?;
        rows.momentum.scatter_set(&rows_index, &v, 0)?;
        for &column in &sampled.columns {
            rows.last_update_step[column as usize] = step;
        }
        Ok(())
    }

    /// The fraction r of negatives drawn per step.
    pub fn sample_rate(&self) -> f64 {
        self.sample_rate
    }

    /// Number of classes N.
    pub fn n_classes(&self) -> usize {
        self.rows.n_classes()
    }

    /// Row dimension d.
    pub fn dim(&self) -> usize {
        self.rows.dim
    }

    /// The rows `[N, d]` (not normalised).
    pub fn weights(&self) -> &Var {
        &self.rows.weights
    }

    /// The momentum `[N, d]`.
    pub fn momentum(&self) -> &Tensor {
        &self.rows.momentum
    }

    /// The step of each row's last update (0: never updated since initialisation).
    pub fn last_update_step(&self) -> &[u64] {
        &self.rows.last_update_step
    }

    /// Rows, momentum and update steps as named tensors (copies).
    ///
    /// # Errors
    /// Tensor errors.
    pub fn state(&self) -> Result<HashMap<String, Tensor>> {
        self.rows.state()
    }

    /// Restores what [`PartialFcHead::state`] wrote.
    ///
    /// # Errors
    /// [`Error::Invalid`] naming a missing entry or a mismatched N or d.
    pub fn restore(&mut self, tensors: &HashMap<String, Tensor>) -> Result<()> {
        self.rows.restore(tensors)
    }
}

/// Number of negatives a step draws: ⌈r·n⌉, guarded against the rounding of r·n (0.1·30 is
/// 3.0000000000000004 in binary floating point, and must give 3).
pub fn negatives_per_step(sample_rate: f64, n_negatives: usize) -> usize {
    if n_negatives == 0 {
        return 0;
    }
    let exact = sample_rate * n_negatives as f64;
    let count = (exact - 1e-9 * exact.max(1.0)).ceil().max(1.0) as usize;
    count.min(n_negatives)
}

/// The rows, their momentum and their update steps: what both heads share.
#[derive(Debug)]
struct Rows {
    weights: Var,
    momentum: Tensor,
    last_update_step: Vec<u64>,
    dim: usize,
}

impl Rows {
    fn new(n_classes: usize, dim: usize, seed: u64, device: &Device) -> Result<Self> {
        if n_classes == 0 || dim == 0 || n_classes > u32::MAX as usize {
            return Err(Error::Invalid(format!(
                "head: need 1 to 2^32 - 1 classes and a dimension >= 1, got N = {n_classes}, \
                 d = {dim}"
            )));
        }
        let weights = Var::from_tensor(&seeded_unit_rows(n_classes, dim, seed, device)?)?;
        Ok(Self {
            weights,
            momentum: Tensor::zeros((n_classes, dim), DType::F32, device)?,
            last_update_step: vec![0; n_classes],
            dim,
        })
    }

    fn n_classes(&self) -> usize {
        self.last_update_step.len()
    }

    /// The columns as an index tensor, each checked against N.
    fn index(&self, columns: &[u32]) -> Result<Tensor> {
        let n = self.n_classes();
        if let Some(&bad) = columns.iter().find(|&&c| c as usize >= n) {
            return Err(Error::Invalid(format!(
                "head: column {bad} out of range for {n} classes"
            )));
        }
        Ok(Tensor::from_slice(
            columns,
            columns.len(),
            self.weights.device(),
        )?)
    }

    fn check_grad(&self, grad: &Tensor, rows: usize) -> Result<()> {
        if grad.dims() != [rows, self.dim] {
            return Err(Error::Invalid(format!(
                "head: gradient of shape {:?} for {rows} rows of dimension {}",
                grad.dims(),
                self.dim
            )));
        }
        Ok(())
    }

    fn state(&self) -> Result<HashMap<String, Tensor>> {
        let steps: Vec<i64> = self.last_update_step.iter().map(|&s| s as i64).collect();
        let n = steps.len();
        Ok(HashMap::from([
            (HEAD_WEIGHTS.to_string(), self.weights.as_tensor().copy()?),
            (HEAD_MOMENTUM.to_string(), self.momentum.copy()?),
            (
                HEAD_LAST_UPDATE.to_string(),
                Tensor::from_vec(steps, n, &Device::Cpu)?,
            ),
        ]))
    }

    fn restore(&mut self, tensors: &HashMap<String, Tensor>) -> Result<()> {
        let get = |name: &str| {
            tensors
                .get(name)
                .ok_or_else(|| Error::Invalid(format!("head: the checkpoint has no `{name}`")))
        };
        let (n, d) = (self.n_classes(), self.dim);
        for name in [HEAD_WEIGHTS, HEAD_MOMENTUM] {
            let (saved_n, saved_d) = get(name)?.dims2()?;
            if saved_n != n {
                return Err(Error::Invalid(format!(
                    "head: `{name}` holds N = {saved_n} classes, this head has N = {n}"
                )));
            }
            if saved_d != d {
                return Err(Error::Invalid(format!(
                    "head: `{name}` holds rows of dimension d = {saved_d}, this head has d = {d}"
                )));
            }
        }
        let steps = get(HEAD_LAST_UPDATE)?
            .to_dtype(DType::I64)?
            .to_vec1::<i64>()?;
        if steps.len() != n || steps.iter().any(|&s| s < 0) {
            return Err(Error::Invalid(format!(
                "head: `{HEAD_LAST_UPDATE}` holds {} steps for N = {n} classes (or a negative one)",
                steps.len()
            )));
        }

        let device = self.weights.device().clone();
        let load = |name: &str| -> Result<Tensor> {
            Ok(get(name)?
                .to_dtype(DType::F32)?
                .to_device(&device)?
                .copy()?)
        };
        self.weights.set(&load(HEAD_WEIGHTS)?)?;
        self.momentum = load(HEAD_MOMENTUM)?;
        self.last_update_step = steps.into_iter().map(|s| s as u64).collect();
        Ok(())
    }
}

/// L2-normalised rows, differentiable.
fn normalize_rows(xs: &Tensor) -> Result<Tensor> {
    let norms = xs
        .sqr()?
        .sum_keepdim(D::Minus1)?
        .sqrt()?
        .clamp(EPS, f64::MAX)?;
    Ok(xs.broadcast_div(&norms)?)
}

/// `n` unit rows of Gaussian directions (Box–Muller on a seeded generator).
fn seeded_unit_rows(n: usize, dim: usize, seed: u64, device: &Device) -> Result<Tensor> {
    let mut rng = SplitMix64::from_keys(&[seed, INIT_KEY]);
    let mut data = Vec::with_capacity(n * dim);
    for _ in 0..n {
        let row: Vec<f64> = (0..dim).map(|_| rng.gaussian()).collect();
        let norm = row.iter().map(|x| x * x).sum::<f64>().sqrt().max(EPS);
        data.extend(row.iter().map(|x| (x / norm) as f32));
    }
    Ok(Tensor::from_vec(data, (n, dim), device)?)
}

/// `count` distinct integers below `n` (Floyd's algorithm: `count` draws, no `[n]` buffer).
fn distinct_below(n: u64, count: usize, rng: &mut SplitMix64) -> Vec<u64> {
    let mut seen = HashSet::with_capacity(count);
    let mut picked = Vec::with_capacity(count);
    for j in n - count as u64..n {
        let t = rng.below(j + 1);
        let pick = if seen.insert(t) { t } else { j };
        seen.insert(pick);
        picked.push(pick);
    }
    picked
}

/// Maps ascending ranks among the non-positive classes to class ids (`positives` sorted,
/// distinct): rank i is the class c with c − #{p ∈ positives : p < c} = i, c ∉ positives.
fn skip_positives(ranks: &[u64], positives: &[u32]) -> Vec<u32> {
    let mut skipped = 0;
    ranks
        .iter()
        .map(|&rank| {
            while skipped < positives.len()
                && u64::from(positives[skipped]) <= rank + skipped as u64
            {
                skipped += 1;
            }
            (rank + skipped as u64) as u32
        })
        .collect()
}

/// SplitMix64, keyed by several numbers; small enough to keep this crate free of other
/// workspace crates.
struct SplitMix64 {
    state: u64,
}

impl SplitMix64 {
    fn from_keys(keys: &[u64]) -> Self {
        let mut rng = Self {
            state: 0x243F_6A88_85A3_08D3,
        };
        for &key in keys {
            rng.state ^= key;
            rng.state = rng.next_u64();
        }
        rng
    }

    fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (`n > 0`), by the multiply-shift reduction.
    fn below(&mut self, n: u64) -> u64 {
        ((u128::from(self.next_u64()) * u128::from(n)) >> 64) as u64
    }

    /// A standard normal draw.
    fn gaussian(&mut self) -> f64 {
        let unit = |x: u64| ((x >> 11) as f64 + 0.5) / (1u64 << 53) as f64;
        let (u1, u2) = (unit(self.next_u64()), unit(self.next_u64()));
        (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{MarginConfig, MarginLoss};
    use proptest::prelude::*;

    const SGD: RowSgd = RowSgd {
        lr: 0.1,
        momentum: 0.9,
        weight_decay: 5e-4,
    };

    fn unit_batch(b: usize, d: usize, seed: u64) -> Tensor {
        normalize_rows(&seeded_unit_rows(b, d, seed, &Device::Cpu).unwrap()).unwrap()
    }

    fn rows_of(t: &Tensor) -> Vec<Vec<f32>> {
        t.to_vec2::<f32>().unwrap()
    }

    fn check_sample(n: usize, rate: f64, labels: &[u32], step: u64) -> Sampled {
        let head = PartialFcHead::new(n, 4, rate, 7, &Device::Cpu).unwrap();
        let sampled = head.sample(labels, step).unwrap();
        let mut positives = labels.to_vec();
        positives.sort_unstable();
        positives.dedup();
        let expected = positives.len() + negatives_per_step(rate, n - positives.len());
        assert_eq!(sampled.columns.len(), expected);
        assert!(
            sampled.columns.windows(2).all(|w| w[0] < w[1]),
            "sorted, no duplicates"
        );
        assert!(sampled.columns.iter().all(|&c| (c as usize) < n));
        for (label, &target) in labels.iter().zip(&sampled.targets) {
            assert_eq!(
                sampled.columns[target as usize], *label,
                "target points at the label"
            );
        }
        assert!(
            sampled
                .negatives
                .iter()
                .all(|c| positives.binary_search(c).is_err())
        );
        assert_eq!(
            sampled.negatives.len() + positives.len(),
            sampled.columns.len()
        );
        assert_eq!(
            head.sample(labels, step).unwrap(),
            sampled,
            "pure in (seed, step)"
        );
        sampled
    }

    #[test]
    fn sampling_counts_positives_and_the_rounded_fraction_of_negatives() {
        // 22 negatives at r = 0.1: ⌈2.2⌉ = 3; 20 negatives: exactly 2, not 3.
        let labels = [3u32, 3, 9, 9, 0, 0, 29, 29, 5, 5, 7, 7, 8, 8, 12, 12];
        let sampled = check_sample(30, 0.1, &labels, 4);
        assert_eq!(sampled.negatives.len(), 3);
        assert_eq!(negatives_per_step(0.1, 20), 2);
        assert_eq!(negatives_per_step(0.1, 30), 3);
        assert_eq!(negatives_per_step(1.0, 30), 30);
        assert_eq!(negatives_per_step(1e-6, 30), 1);
        // r = 1 takes every class; a batch of every class takes no negative.
        assert_eq!(check_sample(30, 1.0, &labels, 4).columns.len(), 30);
        let all: Vec<u32> = (0..6).collect();
        assert!(check_sample(6, 0.5, &all, 1).negatives.is_empty());
    }

    #[test]
    fn sampling_depends_on_the_step_and_the_seed() {
        let a = PartialFcHead::new(1000, 4, 0.1, 7, &Device::Cpu).unwrap();
        let b = PartialFcHead::new(1000, 4, 0.1, 8, &Device::Cpu).unwrap();
        let labels = [1u32, 1, 2, 2];
        let at = |h: &PartialFcHead, step| h.sample(&labels, step).unwrap().negatives;
        assert_ne!(at(&a, 1), at(&a, 2));
        assert_ne!(at(&a, 1), at(&b, 1));
        assert_eq!(at(&a, 1), at(&a, 1));
        assert!(a.sample(&[1000], 1).is_err(), "a label >= N is refused");
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(48))]
        #[test]
        fn sampling_invariants_hold(
            n in 1usize..200,
            rate in 0.001f64..=1.0,
            raw in proptest::collection::vec(0u32..200, 1..40),
            step in 0u64..1_000_000,
        ) {
            let labels: Vec<u32> = raw.iter().map(|&l| l % n as u32).collect();
            check_sample(n, rate, &labels, step);
        }
    }

    #[test]
    fn a_partial_step_touches_only_the_sampled_rows() {
        let device = Device::Cpu;
        let mut head = PartialFcHead::new(40, 8, 0.1, 3, &device).unwrap();
        let labels = [2u32, 2, 17, 17, 33, 33];
        let z = unit_batch(labels.len(), 8, 11);
        let loss = MarginLoss::new(MarginConfig::default()).unwrap();
        for step in 1..=3u64 {
            let before_w = rows_of(head.weights().as_tensor());
            let before_v = rows_of(head.momentum());
            let sampled = head.sample(&labels, step).unwrap();
            let out = head.cosines(&z, &sampled).unwrap();
            assert_eq!(out.cosines.dims(), [labels.len(), sampled.columns.len()]);
            let value = loss.forward(&out.cosines, &sampled.targets).unwrap();
            let grads = value.backward().unwrap();
            let grad = grads.get(out.rows.as_tensor()).unwrap().clone();
            head.step(&grad, &sampled, SGD, step).unwrap();

            let (after_w, after_v) = (
                rows_of(head.weights().as_tensor()),
                rows_of(head.momentum()),
            );
            let grad = rows_of(&grad);
            for class in 0..40u32 {
                let row = class as usize;
                match sampled.columns.binary_search(&class) {
                    Err(_) => {
                        assert_eq!(after_w[row], before_w[row], "row {class} moved");
                        assert_eq!(after_v[row], before_v[row], "momentum {class} moved");
                        assert!(head.last_update_step()[row] < step);
                    }
                    Ok(at) => {
                        for j in 0..8 {
                            let g = grad[at][j] + 5e-4 * before_w[row][j];
                            let v = 0.9 * before_v[row][j] + g;
                            let w = before_w[row][j] - 0.1 * v;
                            assert!((after_v[row][j] - v).abs() <= 1e-6 * (1.0 + v.abs()));
                            assert!((after_w[row][j] - w).abs() <= 1e-6 * (1.0 + w.abs()));
                        }
                        assert_eq!(head.last_update_step()[row], step);
                    }
                }
            }
        }
    }

    #[test]
    fn a_partial_step_accepts_the_full_gradient_too() {
        let device = Device::Cpu;
        let make = || PartialFcHead::new(20, 4, 0.2, 5, &device).unwrap();
        let (mut a, mut b) = (make(), make());
        let labels = [1u32, 1, 6, 6];
        let z = unit_batch(4, 4, 2);
        let sampled = a.sample(&labels, 1).unwrap();
        let loss = MarginLoss::new(MarginConfig::default()).unwrap();

        let out = a.cosines(&z, &sampled).unwrap();
        let grads = loss
            .forward(&out.cosines, &sampled.targets)
            .unwrap()
            .backward()
            .unwrap();
        a.step(grads.get(out.rows.as_tensor()).unwrap(), &sampled, SGD, 1)
            .unwrap();

        let index = Tensor::new(sampled.columns.as_slice(), &device).unwrap();
        let picked = b.weights().as_tensor().index_select(&index, 0).unwrap();
        let cos = cosine_logits(&z, &normalize_rows(&picked).unwrap()).unwrap();
        let grads = loss
            .forward(&cos, &sampled.targets)
            .unwrap()
            .backward()
            .unwrap();
        b.step(
            grads.get(b.weights().as_tensor()).unwrap(),
            &sampled,
            SGD,
            1,
        )
        .unwrap();
        assert_eq!(
            rows_of(a.weights().as_tensor()),
            rows_of(b.weights().as_tensor())
        );
        assert!(
            a.step(
                &Tensor::zeros((3, 4), DType::F32, &device).unwrap(),
                &sampled,
                SGD,
                2
            )
            .is_err()
        );
    }

    #[test]
    fn full_softmax_learns_a_toy_problem_and_updates_every_row() {
        let device = Device::Cpu;
        let mut head = FullSoftmaxHead::new(6, 8, 1, &device).unwrap();
        let labels = [0u32, 1, 2, 3, 4, 5];
        let z = unit_batch(6, 8, 99);
        let loss = MarginLoss::new(MarginConfig::default()).unwrap();
        let mut losses = Vec::new();
        for step in 1..=20u64 {
            let value = loss.forward(&head.cosines(&z).unwrap(), &labels).unwrap();
            losses.push(value.to_scalar::<f32>().unwrap());
            let grads = value.backward().unwrap();
            let grad = grads.get(head.weights().as_tensor()).unwrap().clone();
            head.step(&grad, SGD, step).unwrap();
            assert!(head.last_update_step().iter().all(|&s| s == step));
        }
        assert!(losses.iter().all(|l| l.is_finite()));
        assert!(losses[19] < 0.5 * losses[0], "{losses:?}");
        let wrong = Tensor::zeros((5, 8), DType::F32, &device).unwrap();
        assert!(head.step(&wrong, SGD, 21).is_err());
    }

    #[test]
    fn state_round_trips_and_refuses_another_n_or_d() {
        let device = Device::Cpu;
        let mut head = PartialFcHead::new(12, 4, 0.5, 9, &device).unwrap();
        let labels = [0u32, 0, 5, 5];
        let sampled = head.sample(&labels, 3).unwrap();
        let grad = Tensor::ones((sampled.columns.len(), 4), DType::F32, &device).unwrap();
        head.step(&grad, &sampled, SGD, 3).unwrap();
        let state = head.state().unwrap();

        let mut other = PartialFcHead::new(12, 4, 0.5, 10, &device).unwrap();
        other.restore(&state).unwrap();
        assert_eq!(
            rows_of(other.weights().as_tensor()),
            rows_of(head.weights().as_tensor())
        );
        assert_eq!(rows_of(other.momentum()), rows_of(head.momentum()));
        assert_eq!(other.last_update_step(), head.last_update_step());
        let mut full = FullSoftmaxHead::new(12, 4, 0, &device).unwrap();
        full.restore(&state).unwrap();
        assert_eq!(full.last_update_step(), head.last_update_step());

        let err = PartialFcHead::new(13, 4, 0.5, 9, &device)
            .unwrap()
            .restore(&state);
        let msg = err.unwrap_err().to_string();
        assert!(msg.contains("N = 12") && msg.contains("N = 13"), "{msg}");
        let err = FullSoftmaxHead::new(12, 5, 9, &device)
            .unwrap()
            .restore(&state);
        let msg = err.unwrap_err().to_string();
        assert!(msg.contains("d = 4") && msg.contains("d = 5"), "{msg}");
        let mut partial = state.clone();
        partial.remove(HEAD_MOMENTUM);
        assert!(
            other
                .restore(&partial)
                .unwrap_err()
                .to_string()
                .contains(HEAD_MOMENTUM)
        );
    }

    #[test]
    fn rows_start_as_seeded_unit_vectors_and_bad_settings_are_errors() {
        let device = Device::Cpu;
        let a = FullSoftmaxHead::new(5, 3, 4, &device).unwrap();
        let b = FullSoftmaxHead::new(5, 3, 4, &device).unwrap();
        assert_eq!(
            rows_of(a.weights().as_tensor()),
            rows_of(b.weights().as_tensor())
        );
        for row in rows_of(a.weights().as_tensor()) {
            let norm: f32 = row.iter().map(|x| x * x).sum();
            assert!((norm - 1.0).abs() < 1e-5);
        }
        for rate in [0.0, -0.1, 1.5, f64::NAN] {
            assert!(
                PartialFcHead::new(5, 3, rate, 0, &device).is_err(),
                "{rate}"
            );
        }
        assert!(FullSoftmaxHead::new(0, 3, 0, &device).is_err());
    }
}
