//! Prototype obsolescence, measured: for a sample of the stored rows a step's loss used, their
//! age in steps and the cosine between the stored row and the same identity's prototype
//! recomputed by the encoder as it is after that step's update.
//!
//! ```text
//! S   = up to `rows` of the step's stored (non-fresh) classifier rows, chosen by a seed of the step
//! F   = up to `rows` of the step's own fresh prototypes (age 0): the control
//! for each slot s ∈ S with identity c, stored row r_s (unit norm), write step w_s:
//!   age_s = step − w_s
//!   p_c   = normalise(mean_i normalise(f(x_i)))   over the first K images of c, no flip,
//!                                                   f = the encoder in inference mode
//!   cos_s = r_s · p_c
//! ```
//!
//! The control F measures what the comparison itself costs: a fresh row was made from a
//! training-mode forward (batch statistics, flipped views, the images the sampler drew) and is
//! compared with an inference-mode prototype of the identity's first images after one update.
//! The gap between `fresh_cos_mean` and `cos_mean` is what age adds: obsolescence proper.
//!
//! The rows are copied before the memory update of the step (an update may evict them); the
//! images are embedded after it, so `p_c` is what the memory would store if `c` came back now.
//! The measurement changes nothing: no BatchNorm statistics (inference mode), no sampler draw,
//! no trainer randomness, so a run with it is bit-identical to one without.
//!
//! With a learned-row head (`[head] kind = "full_softmax"` or `"partial_fc"`), S is drawn
//! from the rows the loss used as stored rows (every row, or Partial FC's drawn negatives) by
//! [`choose`], w_s is the row's last update step, r_s the row normalised, and the control F is
//! the batch's mean prototypes ([`sample_rows`]); the rows are copied before their update.

use candle_core::{Device, ModuleT, Tensor};
use pm_data::{Dataset, Pick, SplitMix64, assemble};
use pm_memory::{PrototypeMemory, normalize_rows};
use pm_models::Encoder;
use serde::{Deserialize, Serialize};

use crate::Result;

/// What one measurement found; written into the metrics line that follows it.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Obsolescence {
    /// Step measured.
    pub step: u64,
    /// Rows measured.
    pub rows: usize,
    /// Mean age in steps.
    pub age_mean: f64,
    /// Mean cosine between stored rows and recomputed prototypes.
    pub cos_mean: f64,
    /// 10th percentile of the cosine (the stalest tenth).
    pub cos_p10: f64,
    /// Median cosine.
    pub cos_p50: f64,
    /// Each measured row's age, in the order of `cosines`.
    pub ages: Vec<u64>,
    /// Each measured row's cosine.
    pub cosines: Vec<f32>,
    /// Control rows measured: the step's own fresh prototypes (age 0).
    #[serde(default)]
    pub fresh_rows: usize,
    /// Mean cosine of the control rows to their recomputed prototypes.
    #[serde(default)]
    pub fresh_cos_mean: f64,
}

/// Stored rows copied before a memory update, waiting for the updated encoder.
pub(crate) struct Pending {
    step: u64,
    identities: Vec<u32>,
    rows: Vec<Vec<f32>>,
    ages: Vec<u64>,
    fresh_identities: Vec<u32>,
    fresh_rows: Vec<Vec<f32>>,
}

/// Copies up to `rows` of `used_slots` (with their ages at `step`) before the memory update,
/// and up to `rows` of the step's fresh prototypes (`fresh`: `[P, d]` row-major, one row per
/// identity of `batch_identities`) as the control.
pub(crate) fn sample(
    memory: &PrototypeMemory,
    used_slots: &[usize],
    (batch_identities, fresh): (&[u64], &[f32]),
    rows: usize,
    step: u64,
) -> Pending {
    let dim = memory.config().dim;
    let (fresh_identities, fresh_rows) = control(batch_identities, fresh, dim, rows);
    let mut slots = used_slots.to_vec();
    SplitMix64::from_keys(&[0x0B50_1E5C, step]).shuffle(&mut slots);
    slots.truncate(rows);
    slots.sort_unstable();
    let ages = memory.ages(&slots, step);
    let identities = slots
        .iter()
        .filter_map(|&slot| memory.identity_at(slot))
        .map(|identity| identity as u32)
        .collect();
    let rows = slots
        .iter()
        .map(|&slot| memory.row(slot).to_vec())
        .collect();
    Pending {
        step,
        identities,
        rows,
        ages,
        fresh_identities,
        fresh_rows,
    }
}

/// Which of `candidates` stored rows a measurement at `step` takes: up to `rows` indices,
/// chosen by the same seed of the step as [`sample`], ascending.
pub(crate) fn choose(candidates: usize, rows: usize, step: u64) -> Vec<usize> {
    let mut chosen: Vec<usize> = (0..candidates).collect();
    SplitMix64::from_keys(&[0x0B50_1E5C, step]).shuffle(&mut chosen);
    chosen.truncate(rows);
    chosen.sort_unstable();
    chosen
}

/// [`sample`] for rows that do not live in a prototype memory (a learned head's): the chosen
/// rows (`identities`, `stored` rows of any norm, normalised here, and their `ages`), and up to
/// `rows` of the step's fresh prototypes as the control.
pub(crate) fn sample_rows(
    (identities, stored, ages): (Vec<u32>, Vec<Vec<f32>>, Vec<u64>),
    (batch_identities, fresh): (&[u64], &[f32]),
    dim: usize,
    rows: usize,
    step: u64,
) -> Pending {
    let (fresh_identities, fresh_rows) = control(batch_identities, fresh, dim, rows);
    let stored = stored.iter().map(|row| unit(row)).collect();
    Pending {
        step,
        identities,
        rows: stored,
        ages,
        fresh_identities,
        fresh_rows,
    }
}

/// Up to `rows` of the step's fresh prototypes (`[P, d]` row-major) with their identities.
fn control(
    batch_identities: &[u64],
    fresh: &[f32],
    dim: usize,
    rows: usize,
) -> (Vec<u32>, Vec<Vec<f32>>) {
    let fresh_rows: Vec<Vec<f32>> = fresh
        .chunks_exact(dim.max(1))
        .take(rows)
        .map(<[f32]>::to_vec)
        .collect();
    let fresh_identities = batch_identities
        .iter()
        .take(fresh_rows.len())
        .map(|&i| i as u32)
        .collect();
    (fresh_identities, fresh_rows)
}

/// Embeds the sampled identities with the current encoder and compares.
pub(crate) fn measure(
    pending: Pending,
    encoder: &Encoder,
    dataset: &Dataset,
    images_per_identity: usize,
    device: &Device,
) -> Result<Obsolescence> {
    let identities: Vec<u32> = pending
        .identities
        .iter()
        .chain(&pending.fresh_identities)
        .copied()
        .collect();
    let prototypes = recompute(&identities, encoder, dataset, images_per_identity, device)?;
    let (stored, control) = prototypes.split_at(pending.identities.len().min(prototypes.len()));
    let cosines: Vec<f32> = stored
        .iter()
        .zip(&pending.rows)
        .map(|(p, r)| dot(p, r))
        .collect();
    let controls: Vec<f32> = control
        .iter()
        .zip(&pending.fresh_rows)
        .map(|(p, r)| dot(p, r))
        .collect();

    let mut summary = summarise(pending.step, pending.ages, cosines);
    summary.fresh_rows = controls.len();
    summary.fresh_cos_mean =
        controls.iter().map(|&c| f64::from(c)).sum::<f64>() / controls.len().max(1) as f64;
    Ok(summary)
}

/// The unit prototype of each identity from its first `images_per_identity` images, embedded
/// without flip by the encoder in inference mode.
fn recompute(
    identities: &[u32],
    encoder: &Encoder,
    dataset: &Dataset,
    images_per_identity: usize,
    device: &Device,
) -> Result<Vec<Vec<f32>>> {
    let mut picks = Vec::new();
    let mut groups = Vec::with_capacity(identities.len());
    for &label in identities {
        let count = dataset.identity(label).map_or(0, |r| r.count);
        let k = (count as usize).min(images_per_identity).max(1);
        groups.push(k);
        picks.extend((0..k as u32).map(|image| Pick {
            label,
            image,
            flip: false,
        }));
    }
    if picks.is_empty() {
        return Ok(Vec::new());
    }

    let batch = assemble(dataset, &picks, images_per_identity)?;
    let [b, c, h, w] = batch.shape;
    let images = Tensor::from_vec(batch.images, (b, c, h, w), device)?;
    let z = normalize_rows(&encoder.forward_t(&images, false)?)?;
    let z = z.to_vec2::<f32>()?;
    let mut start = 0;
    let mut prototypes = Vec::with_capacity(groups.len());
    for k in groups {
        prototypes.push(unit_mean(&z[start..start + k]));
        start += k;
    }
    Ok(prototypes)
}

fn unit_mean(rows: &[Vec<f32>]) -> Vec<f32> {
    let dim = rows.first().map_or(0, Vec::len);
    let mut mean = vec![0f32; dim];
    for row in rows {
        mean.iter_mut().zip(row).for_each(|(m, v)| *m += v);
    }
    unit(&mean)
}

fn unit(row: &[f32]) -> Vec<f32> {
    let norm = dot(row, row).sqrt().max(1e-12);
    row.iter().map(|v| v / norm).collect()
}

fn dot(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

fn summarise(step: u64, ages: Vec<u64>, cosines: Vec<f32>) -> Obsolescence {
    let n = cosines.len().max(1) as f64;
    let mut sorted = cosines.clone();
    sorted.sort_by(f32::total_cmp);
    let quantile = |q: f64| {
        let at = ((sorted.len().saturating_sub(1)) as f64 * q).round() as usize;
        sorted.get(at).copied().map_or(f64::NAN, f64::from)
    };
    Obsolescence {
        step,
        rows: cosines.len(),
        age_mean: ages.iter().sum::<u64>() as f64 / ages.len().max(1) as f64,
        cos_mean: cosines.iter().map(|&c| f64::from(c)).sum::<f64>() / n,
        cos_p10: quantile(0.1),
        cos_p50: quantile(0.5),
        ages,
        cosines,
        fresh_rows: 0,
        fresh_cos_mean: f64::NAN,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn summary_quantiles_and_means() {
        let o = summarise(7, vec![1, 2, 3, 4], vec![0.9, 0.5, 0.7, 0.1]);
        assert_eq!(o.rows, 4);
        assert!((o.age_mean - 2.5).abs() < 1e-12);
        assert!((o.cos_mean - 0.55).abs() < 1e-6);
        assert!((o.cos_p10 - 0.1).abs() < 1e-6, "{}", o.cos_p10);
        assert!((o.cos_p50 - 0.7).abs() < 1e-6 || (o.cos_p50 - 0.5).abs() < 1e-6);
    }

    #[test]
    fn learned_rows_are_chosen_by_the_step_and_normalised() {
        let chosen = choose(10, 4, 3);
        assert_eq!(chosen, choose(10, 4, 3));
        assert_eq!(chosen.len(), 4);
        assert!(chosen.windows(2).all(|w| w[0] < w[1]) && chosen.iter().all(|&i| i < 10));
        assert_eq!(choose(3, 4, 3), [0, 1, 2]);
        let stored = (vec![5], vec![vec![3.0, 4.0]], vec![2]);
        let pending = sample_rows(stored, (&[1, 2], &[1.0, 0.0, 0.0, 1.0]), 2, 1, 9);
        assert_eq!(pending.rows, [vec![0.6, 0.8]]);
        assert_eq!((pending.identities, pending.ages), (vec![5], vec![2]));
        assert_eq!(pending.fresh_identities, [1]);
    }

    #[test]
    fn unit_mean_is_normalised() {
        let m = unit_mean(&[vec![1.0, 0.0], vec![0.0, 1.0]]);
        assert!((dot(&m, &m) - 1.0).abs() < 1e-6);
        assert!((m[0] - m[1]).abs() < 1e-6);
    }
}
