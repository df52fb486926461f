//! Fused margin softmax cross-entropy on the CPU: cosines, margin, log-sum-exp and the gradients
//! in one pass over the weight rows, holding at most a tile of the `[B, M]` logits at a time.
//!
//! Same loss as [`MarginLoss`] over `cosine_logits(z, w)` (margin, clamping and ArcFace
//! fallback included), with the gradients that candle's autograd gives for `z` and `w`.
//!
//! ```text
//! inputs  z [B, d] embeddings, w [M, d] weight rows, y [B] target columns (< M)
//! c_ij    = <z_i, w_j>
//! l_ij    = s · c_ij                 j ≠ y_i
//! l_iy    = s · φ(c_iy)              φ(c) = c − m (CosFace), cos(acos c + m) (ArcFace)
//!                                    (clamped, with margin.rs's fallback past π)
//! loss    = mean_i [ lse_i − l_iy ],  lse_i = log Σ_j exp(l_ij),  p_ij = exp(l_ij − lse_i)
//! g_ij    = s · p_ij / B              j ≠ y_i          (∂loss/∂c_ij)
//! g_iy    = s · φ'(c_iy) · (p_iy − 1) / B
//! grad_z  = g · w                      [B, d]
//! grad_w  = (gᵀ · z)[0..R]             [R, d], only the first R rows of w
//!
//! one pass over column tiles of w, per batch row i (online softmax, Milakov & Gimelshein 2018):
//! m_i ← max(m_i, max_tile l_ij)        rescale S_i and A_i by exp(m_old − m_i) when it grows
//! S_i += Σ_tile exp(l_ij − m_i)
//! A_i += Σ_tile, j≠y_i exp(l_ij − m_i) · w_j     a [b, T]·[T, d] product
//! lse_i = m_i + ln S_i,   grad_z_i = s · A_i / (B · S_i) + g_iy · w_y
//! ```
//! The cost is two `B·d·M` products (the logits and the weighted sum of rows) and `B·M`
//! exponentials; `grad_w` adds a second pass over only the first `R` rows once every `lse_i` is
//! known. Batch-row blocks and column ranges are independent tasks on the rayon pool; the
//! partial softmax states of one block are merged at the end. The products go through the
//! `gemm` crate (the kernel candle's CPU matmul uses), one thread per call.
//!
//! Inputs are not checked for NaN or infinity: a non-finite input gives a non-finite loss, as
//! it does in candle.

use std::ops::Range;

use gemm::Parallelism;
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use crate::margin::{Margin, MarginConfig, MarginLoss};
use crate::{Error, Result};

/// The cosine clamp of the ArcFace target, the same as in margin.rs.
const CLAMP: f64 = 1e-7;
/// Lower clamp bound, as candle compares it (in f32).
const CLAMP_LO: f32 = (-1.0 + CLAMP) as f32;
/// Upper clamp bound, as candle compares it (in f32).
const CLAMP_HI: f32 = (1.0 - CLAMP) as f32;
/// Work items per rayon thread in the pass over the rows: spare items balance the load on a
/// machine shared with other work.
const TASKS_PER_THREAD: usize = 4;
/// Rows of `grad_w` per task of the second pass.
const GRAD_ROWS_PER_TASK: usize = 64;

/// Margin plus the blocking of the fused pass.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FusedConfig {
    /// CosFace or ArcFace, scale and margin, as for [`MarginLoss`].
    pub margin: MarginConfig,
    /// Weight rows (logit columns) per tile: the tile of `w` should stay in the L2 cache.
    #[serde(default = "default_tile_columns")]
    pub tile_columns: usize,
    /// Batch rows per task: more rows reuse each tile of `w` more often.
    #[serde(default = "default_block_rows")]
    pub block_rows: usize,
}

fn default_tile_columns() -> usize {
    256
}

fn default_block_rows() -> usize {
    256
}

impl Default for FusedConfig {
    fn default() -> Self {
        Self {
            margin: MarginConfig::default(),
            tile_columns: default_tile_columns(),
            block_rows: default_block_rows(),
        }
    }
}

/// The fused margin softmax cross-entropy with its gradients.
#[derive(Clone, Debug)]
pub struct FusedMarginCe {
    config: FusedConfig,
}

/// Loss and gradients of one [`FusedMarginCe::forward_backward`] call.
#[derive(Clone, Debug, PartialEq)]
pub struct FusedOutput {
    /// Mean cross-entropy over the batch.
    pub loss: f32,
    /// `∂loss/∂z`, row-major `[B, d]`.
    pub grad_z: Vec<f32>,
    /// `∂loss/∂w` for the first `rows_with_grad` rows of `w`, row-major `[rows_with_grad, d]`;
    /// `None` when `rows_with_grad` is 0.
    pub grad_w: Option<Vec<f32>>,
}

/// Validated sizes of one call.
#[derive(Clone, Copy, Debug)]
struct Dims {
    batch: usize,
    rows: usize,
    dim: usize,
    rows_with_grad: usize,
}

/// The target column's logit `s·φ(c)` and its slope `s·φ'(c)` (zero where the clamp cuts).
#[derive(Clone, Copy, Debug)]
struct TargetTerm {
    logit: f32,
    slope: f64,
}

impl FusedMarginCe {
    /// A loss with `config`.
    ///
    /// # Errors
    /// [`Error::Invalid`] for a scale or margin that [`MarginLoss::new`] rejects, or a zero tile
    /// or block size.
    pub fn new(config: FusedConfig) -> Result<Self> {
        MarginLoss::new(config.margin.clone())?;
        if config.tile_columns == 0 || config.block_rows == 0 {
            return Err(Error::Invalid(format!(
                "tile_columns and block_rows must be > 0, got {} and {}",
                config.tile_columns, config.block_rows
            )));
        }
        Ok(Self { config })
    }

    /// The configuration.
    pub fn config(&self) -> &FusedConfig {
        &self.config
    }

    /// Loss, `∂loss/∂z` and `∂loss/∂w` for the first `rows_with_grad` rows of `w`.
    ///
    /// `z`: `[B, d]` row-major unit embeddings, `B = targets.len()`; `w`: `[M, d]` row-major unit
    /// rows; `targets`: the column of each batch row's class (`< M`); `rows_with_grad`: how many
    /// leading rows of `w` need a gradient (0 for a detached memory).
    ///
    /// # Errors
    /// [`Error::Invalid`] when `d` is 0, the batch is empty, `z` is not `B·d` values, `w` is not a
    /// positive multiple of `d`, a target is `≥ M`, or `rows_with_grad > M`.
    pub fn forward_backward(
        &self,
        z: &[f32],
        w: &[f32],
        d: usize,
        targets: &[u32],
        rows_with_grad: usize,
    ) -> Result<FusedOutput> {
        let dims = Dims::check(z, w, d, targets, rows_with_grad)?;
        let terms: Vec<TargetTerm> = (0..dims.batch)
            .map(|i| {
                let y = targets[i] as usize;
                self.target_term(dot(&z[i * d..(i + 1) * d], &w[y * d..(y + 1) * d]))
            })
            .collect();

        let softmax = self.online_pass(z, w, dims, targets, &terms);
        let (loss, grad_z, target_grads) = self.finish(w, dims, targets, &terms, &softmax);

        let grad_w = (rows_with_grad > 0)
            .then(|| self.grad_rows(z, w, dims, targets, &softmax, &target_grads));
        Ok(FusedOutput {
            loss,
            grad_z,
            grad_w,
        })
    }

    /// `s·φ(c)` and `s·φ'(c)` of a target cosine, with candle's clamp and its gradient rule (a
    /// value exactly at a bound gets half the slope).
    fn target_term(&self, c: f32) -> TargetTerm {
        let MarginConfig {
            kind,
            scale: s,
            margin: m,
        } = self.config.margin;
        match kind {
            Margin::CosFace => TargetTerm {
                logit: (s * (f64::from(c) - m)) as f32,
                slope: s,
            },
            Margin::ArcFace => {
                let clamp_slope = clamp_slope(c);
                let cc = c.clamp(CLAMP_LO, CLAMP_HI);
                let threshold = (std::f64::consts::PI - m).cos() as f32;
                let cc64 = f64::from(cc);
                let (phi, dphi) = if cc <= threshold {
                    (cc64 - m * m.sin(), 1.0)
                } else {
                    let sin = (1.0 - cc64 * cc64).sqrt();
                    (
                        cc64 * m.cos() - sin * m.sin(),
                        m.cos() + m.sin() * cc64 / sin,
                    )
                };
                TargetTerm {
                    logit: (s * phi) as f32,
                    slope: s * dphi * clamp_slope,
                }
            }
        }
    }

    /// The online softmax over all columns: per batch row its running max, sum and weighted
    /// sum of the non-target rows, merged over the column ranges.
    fn online_pass(
        &self,
        z: &[f32],
        w: &[f32],
        dims: Dims,
        targets: &[u32],
        terms: &[TargetTerm],
    ) -> Partial {
        let tile = self.config.tile_columns;
        let block = self.config.block_rows.min(dims.batch);
        let row_blocks = dims.batch.div_ceil(block);
        let tiles = dims.rows.div_ceil(tile);
        let wanted = (TASKS_PER_THREAD * rayon::current_num_threads()).div_ceil(row_blocks);
        let tiles_per_chunk = tiles.div_ceil(wanted.clamp(1, tiles));
        let chunks = tiles.div_ceil(tiles_per_chunk);

        // Row blocks × column chunks on the pool; each block's chunks merge as they finish.
        let blocks: Vec<Partial> = (0..row_blocks)
            .into_par_iter()
            .map(|b| {
                let rows = b * block..((b + 1) * block).min(dims.batch);
                (0..chunks)
                    .into_par_iter()
                    .map(|c| {
                        let first = c * tiles_per_chunk * tile;
                        let columns = first..(first + tiles_per_chunk * tile).min(dims.rows);
                        self.scan(z, w, dims.dim, rows.clone(), columns, targets, terms)
                    })
                    .reduce_with(|mut left, right| {
                        left.merge(&right);
                        left
                    })
                    .expect("chunks ≥ 1: every call has at least one weight row")
            })
            .collect();
        Partial::concat(blocks)
    }

    /// One task: batch `rows` against weight `columns`, tile by tile.
    #[allow(clippy::too_many_arguments, reason = "a private step of online_pass")]
    fn scan(
        &self,
        z: &[f32],
        w: &[f32],
        d: usize,
        rows: Range<usize>,
        columns: Range<usize>,
        targets: &[u32],
        terms: &[TargetTerm],
    ) -> Partial {
        let b = rows.len();
        let z_block = View::row_major(&z[rows.start * d..rows.end * d], b, d);
        let mut state = Partial::new(b, d);
        let mut logits = vec![0f32; b * self.config.tile_columns.min(columns.len())];

        for start in columns.clone().step_by(self.config.tile_columns) {
            let end = (start + self.config.tile_columns).min(columns.end);
            let t = end - start;
            let w_tile = View::row_major(&w[start * d..end * d], t, d);
            let tile = &mut logits[..b * t];
            matmul(
                tile,
                z_block,
                w_tile.t(),
                self.config.margin.scale as f32,
                false,
            );

            for (r, row) in tile.chunks_exact_mut(t).enumerate() {
                let y = targets[rows.start + r] as usize;
                let target = (start..end).contains(&y).then(|| y - start);
                if let Some(j) = target {
                    row[j] = terms[rows.start + r].logit;
                }
                state.absorb(r, row, target);
            }
            matmul(
                &mut state.acc,
                View::row_major(tile, b, t),
                w_tile,
                1.0,
                true,
            );
        }
        state
    }

    /// Loss, `grad_z` and each row's target gradient `g_iy` from the merged softmax state.
    fn finish(
        &self,
        w: &[f32],
        dims: Dims,
        targets: &[u32],
        terms: &[TargetTerm],
        softmax: &Partial,
    ) -> (f32, Vec<f32>, Vec<f64>) {
        let (batch, d) = (dims.batch as f64, dims.dim);
        let scale = self.config.margin.scale;
        let mut loss = 0.0;
        let mut grad_z = vec![0f32; dims.batch * d];
        let mut target_grads = Vec::with_capacity(dims.batch);

        for (i, out) in grad_z.chunks_exact_mut(d).enumerate() {
            let lse = f64::from(softmax.max[i]) + softmax.sum[i].ln();
            let shift = f64::from(terms[i].logit) - lse;
            loss -= shift;
            let target_grad = terms[i].slope * shift.exp_m1() / batch;
            target_grads.push(target_grad);

            let y = targets[i] as usize;
            let rows_coef = (scale / (batch * softmax.sum[i])) as f32;
            let acc = &softmax.acc[i * d..(i + 1) * d];
            for ((o, &a), &wy) in out.iter_mut().zip(acc).zip(&w[y * d..(y + 1) * d]) {
                *o = rows_coef * a + (target_grad * f64::from(wy)) as f32;
            }
        }
        ((loss / batch) as f32, grad_z, target_grads)
    }

    /// `grad_w` for the first `R` rows: their logits again, the probabilities from the final
    /// softmax state, and `gᵀ · z`, in tasks of [`GRAD_ROWS_PER_TASK`] rows.
    fn grad_rows(
        &self,
        z: &[f32],
        w: &[f32],
        dims: Dims,
        targets: &[u32],
        softmax: &Partial,
        target_grads: &[f64],
    ) -> Vec<f32> {
        let (batch, d) = (dims.batch, dims.dim);
        let scale = self.config.margin.scale;
        let z_all = View::row_major(z, batch, d);
        let mut grad = vec![0f32; dims.rows_with_grad * d];

        grad.par_chunks_mut(GRAD_ROWS_PER_TASK * d)
            .enumerate()
            .for_each(|(chunk, out)| {
                let first = chunk * GRAD_ROWS_PER_TASK;
                let n = out.len() / d;
                let w_rows = View::row_major(&w[first * d..(first + n) * d], n, d);
                let mut coef = vec![0f32; batch * n];
                matmul(&mut coef, z_all, w_rows.t(), scale as f32, false);

                for (i, row) in coef.chunks_exact_mut(n).enumerate() {
                    exp_shifted_sum(row, softmax.max[i]);
                    let to_grad = (scale / (batch as f64 * softmax.sum[i])) as f32;
                    row.iter_mut().for_each(|p| *p *= to_grad);
                    let y = targets[i] as usize;
                    if (first..first + n).contains(&y) {
                        row[y - first] = target_grads[i] as f32;
                    }
                }
                let coef_t = View::row_major(&coef, batch, n).t();
                matmul(out, coef_t, z_all, 1.0, false);
            });
        grad
    }
}

impl Dims {
    fn check(
        z: &[f32],
        w: &[f32],
        d: usize,
        targets: &[u32],
        rows_with_grad: usize,
    ) -> Result<Self> {
        let batch = targets.len();
        if d == 0 || batch == 0 {
            return Err(Error::Invalid(format!(
                "fused margin loss needs d > 0 and a non-empty batch, got d = {d}, {batch} targets"
            )));
        }
        if batch.checked_mul(d) != Some(z.len()) {
            return Err(Error::Invalid(format!(
                "z has {} values, expected {batch} targets × d = {d}",
                z.len()
            )));
        }
        if w.is_empty() || !w.len().is_multiple_of(d) {
            return Err(Error::Invalid(format!(
                "w has {} values, expected a positive multiple of d = {d}",
                w.len()
            )));
        }
        let rows = w.len() / d;
        if let Some((i, &t)) = targets
            .iter()
            .enumerate()
            .find(|&(_, &t)| t as usize >= rows)
        {
            return Err(Error::Invalid(format!(
                "target {t} of batch row {i} is out of range for {rows} weight rows"
            )));
        }
        if rows_with_grad > rows {
            return Err(Error::Invalid(format!(
                "rows_with_grad = {rows_with_grad} exceeds the {rows} weight rows"
            )));
        }
        Ok(Self {
            batch,
            rows,
            dim: d,
            rows_with_grad,
        })
    }
}

/// Online softmax state of `n` batch rows: running max, sum of `exp(l − max)` and weighted
/// sum `[n, d]` of the non-target weight rows.
#[derive(Debug)]
struct Partial {
    max: Vec<f32>,
    sum: Vec<f64>,
    acc: Vec<f32>,
}

impl Partial {
    fn new(n: usize, d: usize) -> Self {
        Self {
            max: vec![f32::NEG_INFINITY; n],
            sum: vec![0.0; n],
            acc: vec![0.0; n * d],
        }
    }

    fn dim(&self) -> usize {
        self.acc.len() / self.max.len()
    }

    /// Takes one tile row of logits into row `r`: raises the max (rescaling what was summed),
    /// turns the logits into `exp(l − max)` in place, adds them to the sum, and zeroes the
    /// target column so that the product with the tile leaves it out.
    fn absorb(&mut self, r: usize, logits: &mut [f32], target: Option<usize>) {
        let tile_max = max_of(logits);
        if tile_max > self.max[r] {
            self.rescale(r, tile_max);
        }
        self.sum[r] += f64::from(exp_shifted_sum(logits, self.max[r]));
        if let Some(j) = target {
            logits[j] = 0.0;
        }
    }

    /// Moves row `r` to the new max `to`.
    fn rescale(&mut self, r: usize, to: f32) {
        let d = self.dim();
        let factor = (f64::from(self.max[r]) - f64::from(to)).exp();
        self.sum[r] *= factor;
        let factor = factor as f32;
        self.acc[r * d..(r + 1) * d]
            .iter_mut()
            .for_each(|a| *a *= factor);
        self.max[r] = to;
    }

    /// Merges the state of the same batch rows over other columns.
    fn merge(&mut self, other: &Partial) {
        let d = self.dim();
        for r in 0..self.max.len() {
            let to = self.max[r].max(other.max[r]);
            if to > self.max[r] {
                self.rescale(r, to);
            }
            let factor = (f64::from(other.max[r]) - f64::from(to)).exp();
            self.sum[r] += other.sum[r] * factor;
            let factor = factor as f32;
            let mine = &mut self.acc[r * d..(r + 1) * d];
            for (a, &o) in mine.iter_mut().zip(&other.acc[r * d..(r + 1) * d]) {
                *a += factor * o;
            }
        }
    }

    /// The states of consecutive row blocks as one.
    fn concat(blocks: Vec<Partial>) -> Partial {
        let mut all = Partial {
            max: Vec::new(),
            sum: Vec::new(),
            acc: Vec::new(),
        };
        for block in blocks {
            all.max.extend(block.max);
            all.sum.extend(block.sum);
            all.acc.extend(block.acc);
        }
        all
    }
}

/// candle's gradient of `clamp(c, lo, hi)` (a maximum then a minimum): 1 inside, 0 outside,
/// one half exactly at a bound, where candle splits a tie.
fn clamp_slope(c: f32) -> f64 {
    let lower = if c < CLAMP_LO {
        0.0
    } else if c == CLAMP_LO {
        0.5
    } else {
        1.0
    };
    let raised = c.max(CLAMP_LO);
    let upper = if raised > CLAMP_HI {
        0.0
    } else if raised == CLAMP_HI {
        0.5
    } else {
        1.0
    };
    lower * upper
}

/// Dot product in f64.
fn dot(a: &[f32], b: &[f32]) -> f32 {
    a.iter()
        .zip(b)
        .map(|(&x, &y)| f64::from(x) * f64::from(y))
        .sum::<f64>() as f32
}

/// Lanes of the vectorisable reductions.
const LANES: usize = 8;

/// The largest value; `−∞` for an empty slice.
fn max_of(xs: &[f32]) -> f32 {
    let (chunks, tail) = xs.as_chunks::<LANES>();
    let mut lanes = [f32::NEG_INFINITY; LANES];
    for chunk in chunks {
        for (l, &x) in lanes.iter_mut().zip(chunk) {
            *l = if x > *l { x } else { *l };
        }
    }
    let lanes_max = lanes.into_iter().fold(f32::NEG_INFINITY, f32::max);
    tail.iter().copied().fold(lanes_max, f32::max)
}

/// `x ← exp(x − shift)` for every value; returns their sum.
fn exp_shifted_sum(xs: &mut [f32], shift: f32) -> f32 {
    let (chunks, tail) = xs.as_chunks_mut::<LANES>();
    let mut lanes = [0f32; LANES];
    for chunk in chunks {
        for (l, x) in lanes.iter_mut().zip(chunk) {
            *x = fast_exp(*x - shift);
            *l += *x;
        }
    }
    let mut total: f32 = lanes.iter().sum();
    for x in tail {
        *x = fast_exp(*x - shift);
        total += *x;
    }
    total
}

/// `exp(x)` to about 2 ulp for `x ∈ [−87, 88]` (clamped outside, so tiny values do not
/// underflow to denormals), written so the compiler can vectorise a loop of it: Cody–Waite
/// range reduction `x = n·ln 2 + r` and Cephes' degree-5 polynomial for `exp(r)`.
#[inline(always)]
fn fast_exp(x: f32) -> f32 {
    /// 1.5·2^23: adding it rounds to an integer held in the low mantissa bits.
    const ROUND: f32 = 12_582_912.0;
    const LN2_HI: f32 = 0.693_359_4;
    const LN2_LO: f32 = -2.121_944_4e-4;

    let x = x.clamp(-87.0, 88.0);
    let shifted = x * std::f32::consts::LOG2_E + ROUND;
    let n = shifted - ROUND;
    let r = x - n * LN2_HI - n * LN2_LO;
    let mut p = 1.987_569_1e-4_f32;
    p = p * r + 1.398_199_9e-3;
    p = p * r + 8.333_452e-3;
    p = p * r + 4.166_579_6e-2;
    p = p * r + 1.666_666_5e-1;
    p = p * r + 0.5;
    let poly = p * r * r + r + 1.0;
    // The low bits of `shifted` hold n; move n + 127 into the exponent field.
    let exponent = shifted
        .to_bits()
        .wrapping_sub(ROUND.to_bits())
        .wrapping_add(127)
        << 23;
    poly * f32::from_bits(exponent)
}

/// A matrix over a slice with arbitrary strides.
#[derive(Clone, Copy, Debug)]
struct View<'a> {
    data: &'a [f32],
    rows: usize,
    cols: usize,
    row_stride: usize,
    col_stride: usize,
}

impl<'a> View<'a> {
    fn row_major(data: &'a [f32], rows: usize, cols: usize) -> Self {
        Self {
            data,
            rows,
            cols,
            row_stride: cols,
            col_stride: 1,
        }
    }

    /// The transpose (no copy).
    fn t(self) -> Self {
        Self {
            rows: self.cols,
            cols: self.rows,
            row_stride: self.col_stride,
            col_stride: self.row_stride,
            ..self
        }
    }

    /// Whether every element lies inside `data`.
    fn in_bounds(&self) -> bool {
        self.rows == 0
            || self.cols == 0
            || (self.rows - 1) * self.row_stride + (self.cols - 1) * self.col_stride
                < self.data.len()
    }
}

/// `dst = scale · lhs · rhs` (or `dst += …` with `accumulate`), `dst` row-major and contiguous;
/// single-threaded (the callers run in parallel).
///
/// # Panics
/// When the shapes do not fit together or a view reaches outside its slice (a bug here).
fn matmul(dst: &mut [f32], lhs: View<'_>, rhs: View<'_>, scale: f32, accumulate: bool) {
    let (m, k, n) = (lhs.rows, lhs.cols, rhs.cols);
    assert!(
        rhs.rows == k && dst.len() == m * n && lhs.in_bounds() && rhs.in_bounds(),
        "matmul: [{m}, {k}] · [{}, {n}] into {} values",
        rhs.rows,
        dst.len()
    );
    if m == 0 || n == 0 {
        return;
    }
    let stride = |s: usize| s as isize;
    // SAFETY: the assertion above keeps every element that gemm reads (`lhs`, `rhs`: the
    // offsets (i·row_stride + j·col_stride) below their slices' lengths) or writes (`dst`, m·n
    // contiguous values) inside its slice; `dst` is borrowed mutably, so it aliases neither
    // input, and gemm returns before the borrows end.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst.as_mut_ptr(),
            1,
            stride(n),
            accumulate,
            lhs.data.as_ptr(),
            stride(lhs.col_stride),
            stride(lhs.row_stride),
            rhs.data.as_ptr(),
            stride(rhs.col_stride),
            stride(rhs.row_stride),
            1.0,
            scale,
            false,
            false,
            false,
            Parallelism::None,
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(got: f64, want: f64, rel: f64, abs: f64) -> bool {
        (got - want).abs() <= abs + rel * want.abs()
    }

    #[test]
    fn fast_exp_is_within_a_few_ulp() {
        for i in 0..=20_000 {
            let x = -87.0 + 175.0 * i as f32 / 20_000.0;
            let (got, want) = (f64::from(fast_exp(x)), f64::from(x).exp());
            assert!(close(got, want, 3e-7, 0.0), "exp({x}) = {got}, want {want}");
        }
        assert!(fast_exp(-1e4) > 0.0 && fast_exp(-1e4) < 1e-37);
        assert!(fast_exp(f32::NAN).is_nan());
    }

    #[test]
    fn reductions_match_plain_loops() {
        let mut xs: Vec<f32> = (0..29)
            .map(|i| ((i * 7919) % 31) as f32 / 10.0 - 1.0)
            .collect();
        let want_max = xs.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        assert_eq!(max_of(&xs), want_max);
        let want_sum: f64 = xs.iter().map(|&x| (f64::from(x) - 0.5).exp()).sum();
        let got_sum = exp_shifted_sum(&mut xs, 0.5);
        assert!(close(f64::from(got_sum), want_sum, 1e-6, 0.0));
        assert_eq!(max_of(&[]), f32::NEG_INFINITY);
    }

    #[test]
    fn merging_partials_equals_one_pass() {
        let d = 2;
        let row = [0.3f32, 2.0, -1.0, 5.0];
        let mut whole = Partial::new(1, d);
        whole.absorb(0, &mut row.clone(), None);
        let (mut a, mut b) = (Partial::new(1, d), Partial::new(1, d));
        a.absorb(0, &mut row[..1].to_vec(), None);
        b.absorb(0, &mut row[1..].to_vec(), None);
        a.merge(&b);
        assert_eq!(a.max, whole.max);
        assert!(close(a.sum[0], whole.sum[0], 1e-6, 0.0));
    }

    #[test]
    fn clamp_slope_follows_candles_tie_rule() {
        assert_eq!(clamp_slope(0.5), 1.0);
        assert_eq!(clamp_slope(1.0), 0.0);
        assert_eq!(clamp_slope(-1.0), 0.0);
        assert_eq!(clamp_slope(CLAMP_HI), 0.5);
        assert_eq!(clamp_slope(CLAMP_LO), 0.5);
    }
}
