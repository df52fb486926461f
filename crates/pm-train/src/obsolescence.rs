//! Prototype obsolescence, measured: for a sample of the stored rows a step's loss used, their
//! age in steps and the cosine between the stored row and the same identity's prototype
//! recomputed by the encoder as it is after that step's update.
//!
//! ```text
//! S   = up to `rows` of the step's stored (non-fresh) classifier rows, chosen by a seed of the step
//! for each slot s ∈ S with identity c, stored row r_s (unit norm), write step w_s:
//!   age_s = step − w_s
//!   p_c   = normalise(mean_i normalise(f(x_i)))   over the first K images of c, no flip,
//!                                                   f = the encoder in inference mode
//!   cos_s = r_s · p_c
//! ```
//!
//! The rows are copied before the memory update of the step (an update may evict them); the
//! images are embedded after it, so `p_c` is what the memory would store if `c` came back now.
//! The measurement changes nothing: no BatchNorm statistics (inference mode), no sampler draw,
//! no trainer randomness, so a run with it is bit-identical to one without.

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
}

/// Stored rows copied before a memory update, waiting for the updated encoder.
pub(crate) struct Pending {
    step: u64,
    identities: Vec<u32>,
    rows: Vec<Vec<f32>>,
    ages: Vec<u64>,
}

/// Copies up to `rows` of `used_slots` (with their ages at `step`) before the memory update.
pub(crate) fn sample(
    memory: &PrototypeMemory,
    used_slots: &[usize],
    rows: usize,
    step: u64,
) -> Pending {
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
    }
}

/// Embeds the sampled identities with the current encoder and compares.
pub(crate) fn measure(
    pending: Pending,
    encoder: &Encoder,
    dataset: &Dataset,
    images_per_identity: usize,
    device: &Device,
) -> Result<Obsolescence> {
    let mut picks = Vec::new();
    let mut groups = Vec::with_capacity(pending.identities.len());
    for &label in &pending.identities {
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
        return Ok(Obsolescence {
            step: pending.step,
            ..Obsolescence::default()
        });
    }

    let batch = assemble(dataset, &picks, images_per_identity)?;
    let [b, c, h, w] = batch.shape;
    let images = Tensor::from_vec(batch.images, (b, c, h, w), device)?;
    let z = normalize_rows(&encoder.forward_t(&images, false)?)?;
    let z = z.to_vec2::<f32>()?;

    let mut cosines = Vec::with_capacity(groups.len());
    let mut start = 0;
    for (k, stored) in groups.iter().zip(&pending.rows) {
        let prototype = unit_mean(&z[start..start + k]);
        cosines.push(dot(&prototype, stored));
        start += k;
    }
    Ok(summarise(pending.step, pending.ages, cosines))
}

fn unit_mean(rows: &[Vec<f32>]) -> Vec<f32> {
    let dim = rows.first().map_or(0, Vec::len);
    let mut mean = vec![0f32; dim];
    for row in rows {
        mean.iter_mut().zip(row).for_each(|(m, v)| *m += v);
    }
    let norm = dot(&mean, &mean).sqrt().max(1e-12);
    mean.iter_mut().for_each(|m| *m /= norm);
    mean
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
    fn unit_mean_is_normalised() {
        let m = unit_mean(&[vec![1.0, 0.0], vec![0.0, 1.0]]);
        assert!((dot(&m, &m) - 1.0).abs() < 1e-6);
        assert!((m[0] - m[1]).abs() < 1e-6);
    }
}
