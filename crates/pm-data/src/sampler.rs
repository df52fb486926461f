//! P identities × K images per batch.
//!
//! Identities are drawn without replacement within an epoch, in an order reshuffled per epoch
//! from the seed; an epoch ends when fewer than P identities remain. Each identity gives K
//! images: without replacement when it has at least K, otherwise with replacement (an identity
//! with one image yields K views of it that differ by augmentation). Every draw is a pure
//! function of `(seed, epoch, position)`, so [`SamplerState`] — two integers — is all a
//! checkpoint needs for a resumed run to draw exactly the batches the uninterrupted run would.

use serde::{Deserialize, Serialize};

use crate::rng::SplitMix64;
use crate::{Error, Result};

/// How batches are drawn.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SamplerConfig {
    /// Identities per batch (P).
    pub identities_per_batch: usize,
    /// Images per identity (K ≥ 2: prototypes and the loss need at least two views).
    pub images_per_identity: usize,
    /// Seed of the identity order and the image choice.
    pub seed: u64,
    /// Probability of a horizontal flip of each image.
    pub flip_probability: f32,
}

impl Default for SamplerConfig {
    fn default() -> Self {
        Self {
            identities_per_batch: 32,
            images_per_identity: 2,
            seed: 0,
            flip_probability: 0.5,
        }
    }
}

/// Where a sampler stands: enough to resume it exactly.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SamplerState {
    /// Epochs completed.
    pub epoch: u64,
    /// Identities of the current epoch already drawn.
    pub position: u64,
}

/// One image of a batch: which identity, which of its images, and its augmentation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Pick {
    /// Identity label.
    pub label: u32,
    /// Index of the image within the identity, `0..count`.
    pub image: u32,
    /// Flip horizontally.
    pub flip: bool,
}

/// The P×K sampler over identities with known image counts.
#[derive(Clone, Debug)]
pub struct PkSampler {
    config: SamplerConfig,
    counts: Vec<u32>,
    order: Vec<u32>,
    state: SamplerState,
}

impl PkSampler {
    /// A sampler over identities `0..counts.len()` where identity `l` has `counts[l]` images.
    ///
    /// # Errors
    /// [`Error::Config`] when K < 2, P < 1, fewer than P identities, or an identity has no image.
    pub fn new(config: SamplerConfig, counts: Vec<u32>) -> Result<Self> {
        let (p, k) = (config.identities_per_batch, config.images_per_identity);
        if p == 0 || k < 2 {
            return Err(Error::Config(format!(
                "sampler needs P >= 1 and K >= 2, got P = {p}, K = {k}"
            )));
        }
        if counts.len() < p {
            return Err(Error::Config(format!(
                "{} identities cannot fill a batch of P = {p} identities",
                counts.len()
            )));
        }
        if let Some(label) = counts.iter().position(|&c| c == 0) {
            return Err(Error::Config(format!("identity {label} has no image")));
        }
        let singles = counts.iter().filter(|&&c| (c as usize) < k).count();
        if singles > 0 {
            tracing::info!(
                identities = singles,
                k,
                "identities with fewer than K images are sampled with replacement"
            );
        }
        let mut sampler = Self {
            config,
            counts,
            order: Vec::new(),
            state: SamplerState::default(),
        };
        sampler.shuffle_epoch();
        Ok(sampler)
    }

    /// The configuration.
    pub fn config(&self) -> &SamplerConfig {
        &self.config
    }

    /// Batches per epoch.
    pub fn batches_per_epoch(&self) -> usize {
        self.counts.len() / self.config.identities_per_batch
    }

    /// The current position, to be saved in a checkpoint.
    pub fn state(&self) -> SamplerState {
        self.state
    }

    /// Moves to a saved position.
    ///
    /// # Errors
    /// [`Error::Config`] when the position lies beyond the epoch (a state from another dataset).
    pub fn restore(&mut self, state: SamplerState) -> Result<()> {
        if state.position as usize > self.counts.len() {
            return Err(Error::Config(format!(
                "sampler position {} is beyond the {} identities of this dataset",
                state.position,
                self.counts.len()
            )));
        }
        let new_epoch = state.epoch != self.state.epoch;
        self.state = state;
        // The order is a function of (seed, epoch): reshuffle only when the epoch changes, so
        // that following the prefetcher costs O(1) per step, not O(identities).
        if new_epoch {
            self.shuffle_epoch();
        }
        Ok(())
    }

    /// Draws the next batch: P identities, K picks each, identity-major.
    pub fn next_batch(&mut self) -> Vec<Pick> {
        let p = self.config.identities_per_batch;
        if self.state.position as usize + p > self.order.len() {
            self.state.epoch += 1;
            self.state.position = 0;
            self.shuffle_epoch();
        }
        let start = self.state.position as usize;
        let mut rng = SplitMix64::from_keys(&[self.config.seed, 1, self.state.epoch, start as u64]);
        let mut picks = Vec::with_capacity(p * self.config.images_per_identity);
        for &label in &self.order[start..start + p] {
            self.pick_images(label, &mut rng, &mut picks);
        }
        self.state.position += p as u64;
        picks
    }

    /// K images of `label`: distinct when it has K or more; otherwise each of its images once,
    /// then repeats, and a repeated image takes the opposite flip of its previous view so that
    /// two views of one image always differ.
    fn pick_images(&self, label: u32, rng: &mut SplitMix64, picks: &mut Vec<Pick>) {
        let k = self.config.images_per_identity;
        let count = self.counts[label as usize] as usize;
        let mut all: Vec<u32> = (0..count as u32).collect();
        // Partial Fisher–Yates: the first min(k, count) of a random permutation.
        for i in 0..k.min(count) {
            let j = i + rng.below((count - i) as u64) as usize;
            all.swap(i, j);
        }
        all.truncate(k);
        while all.len() < k {
            all.push(rng.below(count as u64) as u32);
        }
        let first = picks.len();
        for image in all {
            let previous = picks[first..].iter().rev().find(|p| p.image == image);
            let flip = match previous {
                Some(view) => !view.flip,
                None => rng.unit_f32() < self.config.flip_probability,
            };
            picks.push(Pick { label, image, flip });
        }
    }

    fn shuffle_epoch(&mut self) {
        self.order = (0..self.counts.len() as u32).collect();
        SplitMix64::from_keys(&[self.config.seed, 0, self.state.epoch]).shuffle(&mut self.order);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    fn sampler(p: usize, k: usize, counts: Vec<u32>) -> PkSampler {
        let config = SamplerConfig {
            identities_per_batch: p,
            images_per_identity: k,
            seed: 3,
            flip_probability: 0.5,
        };
        PkSampler::new(config, counts).expect("valid sampler")
    }

    #[test]
    fn an_epoch_draws_each_identity_at_most_once() {
        let mut s = sampler(4, 2, vec![5; 18]);
        let mut seen = HashSet::new();
        for _ in 0..s.batches_per_epoch() {
            for pick in s.next_batch().iter().step_by(2) {
                assert!(seen.insert(pick.label), "identity {} twice", pick.label);
            }
        }
        assert_eq!(seen.len(), 16);
        s.next_batch();
        assert_eq!(s.state().epoch, 1);
    }

    #[test]
    fn repeated_views_of_one_image_differ_by_their_flip() {
        let mut s = sampler(2, 2, vec![1, 1, 1]);
        for _ in 0..5 {
            for pair in s.next_batch().chunks(2) {
                assert_eq!(pair[0].image, pair[1].image);
                assert_ne!(pair[0].flip, pair[1].flip);
            }
        }
    }

    #[test]
    fn k_images_are_distinct_when_available_and_repeat_otherwise() {
        let mut s = sampler(3, 4, vec![4, 1, 9, 2]);
        for _ in 0..10 {
            for group in s.next_batch().chunks(4) {
                let label = group[0].label;
                assert!(group.iter().all(|p| p.label == label));
                let distinct: HashSet<u32> = group.iter().map(|p| p.image).collect();
                let count = [4, 1, 9, 2][label as usize];
                assert_eq!(distinct.len(), count.min(4) as usize, "label {label}");
            }
        }
    }

    #[test]
    fn restored_state_replays_the_same_batches() {
        let mut a = sampler(2, 2, vec![3; 7]);
        for _ in 0..5 {
            a.next_batch();
        }
        let mut b = sampler(2, 2, vec![3; 7]);
        b.restore(a.state()).expect("restore");
        for _ in 0..10 {
            assert_eq!(a.next_batch(), b.next_batch());
        }
    }

    #[test]
    fn bad_configurations_are_errors() {
        let config = SamplerConfig {
            identities_per_batch: 4,
            images_per_identity: 1,
            ..SamplerConfig::default()
        };
        assert!(PkSampler::new(config.clone(), vec![3; 10]).is_err());
        let config = SamplerConfig {
            images_per_identity: 2,
            ..config
        };
        assert!(PkSampler::new(config.clone(), vec![3; 3]).is_err());
        assert!(PkSampler::new(config, vec![3, 0, 3, 3, 3]).is_err());
    }
}
