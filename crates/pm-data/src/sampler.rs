//! P identities × K images per batch.
//!
//! A batch holds P distinct identities and K images of each, identity-major. Which identities
//! it holds depends on the [`SamplingMode`]:
//!
//! - [`SamplingMode::Epoch`] (the default): identities are drawn without replacement within an
//!   epoch, in an order reshuffled per epoch from the seed; an epoch ends when fewer than P
//!   identities remain.
//! - [`SamplingMode::IdentityBalanced`]: every batch draws P distinct identities uniformly at
//!   random, whatever their image counts.
//! - [`SamplingMode::ImageBalanced`]: every batch draws P distinct identities with probability
//!   proportional to their image counts, the weight that iterating over images (as insightface's
//!   arcface_torch does) gives each identity. It keeps one cumulative count per identity (a
//!   `u64`, O(identities) memory) and draws by binary search; nothing is kept per image.
//!
//! In the two random modes a duplicate inside a batch is redrawn, which samples without
//! replacement from the same weights; after many collisions in a row the next free label is
//! taken instead, so a batch is always complete. Their "epoch" counts the same number of
//! identities as an Epoch-mode epoch ([`PkSampler::batches_per_epoch`] batches), which keeps
//! [`SamplerState`] meaningful and the schedule comparable across modes.
//!
//! Each identity gives K images: without replacement when it has at least K, otherwise with
//! replacement (an identity with one image yields K views of it that differ by augmentation).
//! Every draw is a pure function of `(seed, mode, epoch, position)`, so [`SamplerState`] — two
//! integers — is all a checkpoint needs for a resumed run to draw exactly the batches the
//! uninterrupted run would.
//!
//! # Look-alikes
//!
//! Doppelganger mining: with [`SamplerConfig::lookalike_fraction`] f > 0 and a
//! [`LookalikeSource`] set ([`PkSampler::set_lookalikes`]), a batch takes `P - floor(P·f)`
//! anchor identities from the mode's draw (the position advances by that many), then asks the
//! source for look-alikes of each anchor in turn, round-robin, and adds those that are valid
//! labels not yet in the batch. Slots the source cannot fill are filled by the mode's draw
//! (uniform over identities in Epoch mode, whose epoch order is kept for anchors), so a batch
//! always holds P distinct identities. Without a source the fraction changes nothing: the
//! batches are exactly those of f = 0.
//!
//! The source is consulted when a batch is drawn. Behind a [`crate::Prefetcher`] that is a few
//! batches ahead of the trainer, so the source answers from a memory a few steps old. Exact
//! replay after a resume requires the source to answer the same way as in the uninterrupted run:
//! the trainer rebuilds it from the checkpointed memory.

use std::collections::HashSet;
use std::fmt;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::rng::SplitMix64;
use crate::{Error, Result};

/// Redraws of a duplicate identity before taking the next free label instead.
const MAX_REDRAWS: usize = 64;

/// Look-alikes asked of each anchor beyond its share of the look-alike slots, to make up for
/// answers that are skipped (out of range, or already in the batch).
const LOOKALIKE_SLACK: usize = 2;

/// How the identities of each batch are chosen.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SamplingMode {
    /// Iterate-and-shuffle: every identity once per epoch, order reshuffled each epoch.
    #[default]
    Epoch,
    /// Each batch draws P distinct identities uniformly at random (with replacement across
    /// batches), whatever their image counts.
    IdentityBalanced,
    /// Each batch draws P distinct identities with probability proportional to their image
    /// count (what iterating over images, as insightface's arcface_torch does, gives each
    /// identity).
    ImageBalanced,
}

impl SamplingMode {
    /// The key that separates the random streams of the modes.
    fn key(self) -> u64 {
        match self {
            Self::Epoch => 0,
            Self::IdentityBalanced => 1,
            Self::ImageBalanced => 2,
        }
    }
}

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
    /// How the identities of a batch are chosen.
    #[serde(default)]
    pub mode: SamplingMode,
    /// Share of each batch's P identities filled with look-alikes of its other identities, in
    /// [0, 1); used only when a [`LookalikeSource`] is set.
    #[serde(default)]
    pub lookalike_fraction: f32,
}

impl Default for SamplerConfig {
    fn default() -> Self {
        Self {
            identities_per_batch: 32,
            images_per_identity: 2,
            seed: 0,
            flip_probability: 0.5,
            mode: SamplingMode::Epoch,
            lookalike_fraction: 0.0,
        }
    }
}

/// Supplies identities that look like a given one (doppelganger mining): typically the trainer,
/// from the nearest rows of its prototype memory.
pub trait LookalikeSource: Send + Sync {
    /// Appends to `out` up to `n` labels of identities that look like `label`, most similar
    /// first.
    fn lookalikes(&self, label: u32, n: usize, out: &mut Vec<u32>);
}

/// Where a sampler stands: enough to resume it exactly.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SamplerState {
    /// Epochs completed.
    pub epoch: u64,
    /// Identities of the current epoch already drawn (anchors only, not look-alikes or fills).
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
#[derive(Clone)]
pub struct PkSampler {
    config: SamplerConfig,
    counts: Vec<u32>,
    /// Epoch mode: this epoch's identity order. Empty in the other modes.
    order: Vec<u32>,
    /// Image-balanced mode: `cumulative[l]` is the image count of identities `0..=l`. Empty in
    /// the other modes.
    cumulative: Vec<u64>,
    state: SamplerState,
    /// Look-alike slots per batch, `floor(P·f)`, when a source is set.
    lookalike_slots: usize,
    lookalikes: Option<Arc<dyn LookalikeSource>>,
    /// Whether the missing look-alike source has been logged.
    told_no_source: bool,
}

impl fmt::Debug for PkSampler {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PkSampler")
            .field("config", &self.config)
            .field("n_identities", &self.counts.len())
            .field("state", &self.state)
            .field("lookalike_slots", &self.lookalike_slots)
            .field("lookalike_source", &self.lookalikes.is_some())
            .finish_non_exhaustive()
    }
}

impl PkSampler {
    /// A sampler over identities `0..counts.len()` where identity `l` has `counts[l]` images.
    ///
    /// # Errors
    /// [`Error::Config`] when K < 2, P < 1, fewer than P identities, an identity has no image,
    /// or the look-alike fraction is not a finite number in [0, 1).
    pub fn new(config: SamplerConfig, counts: Vec<u32>) -> Result<Self> {
        validate(&config, &counts)?;
        let (p, k) = (config.identities_per_batch, config.images_per_identity);
        let singles = counts.iter().filter(|&&c| (c as usize) < k).count();
        if singles > 0 {
            tracing::info!(
                identities = singles,
                k,
                "identities with fewer than K images are sampled with replacement"
            );
        }

        let lookalike_slots = lookalike_slots(p, config.lookalike_fraction);
        if config.lookalike_fraction > 0.0 && lookalike_slots == 0 {
            tracing::info!(
                fraction = config.lookalike_fraction,
                p,
                "the look-alike fraction gives no look-alike slot at this P"
            );
        }
        let cumulative = match config.mode {
            SamplingMode::ImageBalanced => counts
                .iter()
                .scan(0u64, |total, &c| {
                    *total += u64::from(c);
                    Some(*total)
                })
                .collect(),
            SamplingMode::Epoch | SamplingMode::IdentityBalanced => Vec::new(),
        };

        let mut sampler = Self {
            config,
            counts,
            order: Vec::new(),
            cumulative,
            state: SamplerState::default(),
            lookalike_slots,
            lookalikes: None,
            told_no_source: false,
        };
        sampler.shuffle_epoch();
        Ok(sampler)
    }

    /// The configuration.
    pub fn config(&self) -> &SamplerConfig {
        &self.config
    }

    /// Sets (or, with `None`, removes) the source of look-alikes. It takes effect from the next
    /// batch, and only when [`SamplerConfig::lookalike_fraction`] gives at least one slot.
    pub fn set_lookalikes(&mut self, source: Option<Arc<dyn LookalikeSource>>) {
        self.lookalikes = source;
    }

    /// Batches per epoch: identities divided by the anchors of a batch (P, or fewer when a
    /// look-alike source fills part of each batch).
    pub fn batches_per_epoch(&self) -> usize {
        self.counts.len() / self.anchors_per_batch()
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

    /// Draws the next batch: P distinct identities, K picks each, identity-major.
    pub fn next_batch(&mut self) -> Vec<Pick> {
        self.note_missing_source();
        let anchors = self.anchors_per_batch();
        if self.state.position as usize + anchors > self.counts.len() {
            self.state.epoch += 1;
            self.state.position = 0;
            self.shuffle_epoch();
        }

        let start = self.state.position;
        let labels = self.batch_labels(anchors);
        self.state.position += anchors as u64;

        let mut rng = SplitMix64::from_keys(&[self.config.seed, 1, self.state.epoch, start]);
        let k = self.config.images_per_identity;
        let mut picks = Vec::with_capacity(labels.len() * k);
        for label in labels {
            self.pick_images(label, &mut rng, &mut picks);
        }
        picks
    }

    /// Identities drawn from the mode per batch: P, less the look-alike slots when a source
    /// is set.
    fn anchors_per_batch(&self) -> usize {
        match self.lookalikes {
            Some(_) => self.config.identities_per_batch - self.lookalike_slots,
            None => self.config.identities_per_batch,
        }
    }

    /// The P labels of the batch at the current position: `anchors` from the mode's draw, then
    /// look-alikes, then the mode's draw again for whatever is left.
    fn batch_labels(&self, anchors: usize) -> Vec<u32> {
        let p = self.config.identities_per_batch;
        let (epoch, start) = (self.state.epoch, self.state.position);
        let keys = [self.config.seed, 2, self.config.mode.key(), epoch, start];
        let mut rng = SplitMix64::from_keys(&keys);
        let mut taken = HashSet::with_capacity(p);
        let mut labels = Vec::with_capacity(p);

        if self.config.mode == SamplingMode::Epoch {
            let start = start as usize;
            labels.extend_from_slice(&self.order[start..start + anchors]);
            taken.extend(labels.iter().copied());
        } else {
            for _ in 0..anchors {
                labels.push(self.draw_distinct(&mut rng, &mut taken));
            }
        }

        if let Some(source) = &self.lookalikes
            && anchors < p
        {
            self.add_lookalikes(source.as_ref(), &mut labels, &mut taken);
        }
        while labels.len() < p {
            labels.push(self.draw_distinct(&mut rng, &mut taken));
        }
        labels
    }

    /// Fills free slots with look-alikes of the anchors already in `labels`, one per anchor in
    /// turn, skipping answers out of range or already in the batch.
    fn add_lookalikes(
        &self,
        source: &dyn LookalikeSource,
        labels: &mut Vec<u32>,
        taken: &mut HashSet<u32>,
    ) {
        let p = self.config.identities_per_batch;
        let anchors = labels.len();
        let per_anchor = (p - anchors).div_ceil(anchors) + LOOKALIKE_SLACK;
        let mut answers: Vec<Option<Vec<u32>>> = vec![None; anchors];
        let mut cursors = vec![0usize; anchors];

        // Each round gives every anchor, in order, its next usable look-alike; stop when the
        // batch is full or a round added nothing.
        loop {
            let mut added = false;
            for (i, cursor) in cursors.iter_mut().enumerate() {
                if labels.len() == p {
                    return;
                }
                let anchor = labels[i];
                let answer = answers[i].get_or_insert_with(|| {
                    let mut out = Vec::with_capacity(per_anchor);
                    source.lookalikes(anchor, per_anchor, &mut out);
                    out.truncate(per_anchor);
                    out
                });
                while let Some(&candidate) = answer.get(*cursor) {
                    *cursor += 1;
                    if (candidate as usize) < self.counts.len() && taken.insert(candidate) {
                        labels.push(candidate);
                        added = true;
                        break;
                    }
                }
            }
            if !added {
                return;
            }
        }
    }

    /// One identity of the mode's distribution that is not yet `taken`, and marks it taken.
    /// Duplicates are redrawn; after [`MAX_REDRAWS`] of them the next free label is taken.
    fn draw_distinct(&self, rng: &mut SplitMix64, taken: &mut HashSet<u32>) -> u32 {
        let mut label = self.draw(rng);
        for _ in 0..MAX_REDRAWS {
            if taken.insert(label) {
                return label;
            }
            label = self.draw(rng);
        }

        // Fewer than P ≤ n labels are taken, so a free one exists.
        debug_assert!(taken.len() < self.counts.len());
        let n = self.counts.len() as u32;
        while !taken.insert(label) {
            label = (label + 1) % n;
        }
        label
    }

    /// One identity, by image count in image-balanced mode and uniformly otherwise.
    fn draw(&self, rng: &mut SplitMix64) -> u32 {
        match self.config.mode {
            SamplingMode::ImageBalanced => {
                let total = self.cumulative.last().copied().unwrap_or(0);
                let image = below_u64(rng, total);
                self.cumulative.partition_point(|&c| c <= image) as u32
            }
            SamplingMode::Epoch | SamplingMode::IdentityBalanced => {
                rng.below(self.counts.len() as u64) as u32
            }
        }
    }

    /// Logs once when look-alikes are asked for but no source is set.
    fn note_missing_source(&mut self) {
        if self.lookalike_slots > 0 && self.lookalikes.is_none() && !self.told_no_source {
            self.told_no_source = true;
            tracing::info!(
                fraction = self.config.lookalike_fraction,
                "look-alikes requested but no look-alike source is set: batches are drawn without"
            );
        }
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

    /// The identity order of the current epoch (Epoch mode only; the random modes need none).
    fn shuffle_epoch(&mut self) {
        if self.config.mode != SamplingMode::Epoch {
            return;
        }
        self.order = (0..self.counts.len() as u32).collect();
        SplitMix64::from_keys(&[self.config.seed, 0, self.state.epoch]).shuffle(&mut self.order);
    }
}

/// Checks a configuration against the image counts.
fn validate(config: &SamplerConfig, counts: &[u32]) -> Result<()> {
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
    let fraction = config.lookalike_fraction;
    if !(fraction.is_finite() && (0.0..1.0).contains(&fraction)) {
        return Err(Error::Config(format!(
            "lookalike_fraction must be a number in [0, 1), got {fraction}"
        )));
    }
    Ok(())
}

/// Look-alike slots of a batch of `p` identities: `floor(p·fraction)`, read with a relative
/// tolerance so that 0.7 × 10 gives 7 despite 0.7 not being exact in binary, and at most
/// `p - 1` so that a batch keeps an anchor.
fn lookalike_slots(p: usize, fraction: f32) -> usize {
    let exact = p as f64 * f64::from(fraction);
    let slots = (exact * (1.0 + 1e-6)).floor() as usize;
    slots.min(p - 1)
}

/// A uniform integer in `0..n` for any `n` (0 when `n` is 0), by a 128-bit multiply: image
/// totals may pass 2^32, beyond [`SplitMix64::below`].
fn below_u64(rng: &mut SplitMix64, n: u64) -> u64 {
    ((u128::from(rng.next_u64()) * u128::from(n)) >> 64) as u64
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
            ..SamplerConfig::default()
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

    /// FNV-1a over the picks and states of `batches` batches.
    fn fingerprint(s: &mut PkSampler, batches: usize) -> u64 {
        let mut hash = 0xcbf2_9ce4_8422_2325u64;
        let mut mix = |v: u64| hash = (hash ^ v).wrapping_mul(0x0100_0000_01b3);
        for _ in 0..batches {
            for pick in s.next_batch() {
                mix(u64::from(pick.label));
                mix(u64::from(pick.image));
                mix(u64::from(pick.flip));
            }
            mix(s.state().epoch ^ (s.state().position << 8));
        }
        hash
    }

    #[test]
    fn epoch_mode_draws_the_batches_of_the_sampler_before_modes_existed() {
        // Recorded from the sampler before modes and look-alikes were added.
        const BEFORE_MODES: u64 = 0x8f2a_01b3_a944_7e21;
        let counts = vec![1, 2, 5, 7, 3, 9, 4, 2, 6, 1, 8];
        assert_eq!(
            fingerprint(&mut sampler(3, 3, counts.clone()), 20),
            BEFORE_MODES
        );

        // A look-alike fraction without a source changes nothing.
        let config = SamplerConfig {
            lookalike_fraction: 0.5,
            ..sampler(3, 3, counts.clone()).config().clone()
        };
        let mut s = PkSampler::new(config, counts).expect("valid sampler");
        assert_eq!(fingerprint(&mut s, 20), BEFORE_MODES);
    }

    #[test]
    fn configs_without_the_new_fields_still_parse() {
        let old = r#"{"identities_per_batch": 8, "images_per_identity": 2, "seed": 1,
            "flip_probability": 0.5}"#;
        let config: SamplerConfig = serde_json::from_str(old).expect("old config parses");
        assert_eq!(config.mode, SamplingMode::Epoch);
        assert_eq!(config.lookalike_fraction, 0.0);

        let new = r#"{"identities_per_batch": 8, "images_per_identity": 2, "seed": 1,
            "flip_probability": 0.5, "mode": "image_balanced", "lookalike_fraction": 0.25}"#;
        let config: SamplerConfig = serde_json::from_str(new).expect("new config parses");
        assert_eq!(config.mode, SamplingMode::ImageBalanced);
        assert_eq!(config.lookalike_fraction, 0.25);
        let typo = new.replace("image_balanced", "images_balanced");
        assert!(serde_json::from_str::<SamplerConfig>(&typo).is_err());
    }

    #[test]
    fn lookalike_fraction_outside_zero_to_one_is_an_error() {
        for fraction in [-0.1, 1.0, 1.5, f32::NAN, f32::INFINITY] {
            let config = SamplerConfig {
                identities_per_batch: 4,
                lookalike_fraction: fraction,
                ..SamplerConfig::default()
            };
            match PkSampler::new(config, vec![3; 10]) {
                Err(Error::Config(message)) => assert!(message.contains("lookalike_fraction")),
                other => panic!("fraction {fraction}: {other:?}"),
            }
        }
        let config = SamplerConfig {
            identities_per_batch: 4,
            lookalike_fraction: 0.99,
            ..SamplerConfig::default()
        };
        assert!(PkSampler::new(config, vec![3; 10]).is_ok());
    }

    #[test]
    fn lookalike_slots_are_the_floor_of_p_times_the_fraction() {
        assert_eq!(lookalike_slots(10, 0.7), 7);
        assert_eq!(lookalike_slots(1000, 0.7), 700);
        assert_eq!(lookalike_slots(10, 0.25), 2);
        assert_eq!(lookalike_slots(3, 0.3), 0);
        assert_eq!(lookalike_slots(4, 0.999_999_9), 3);
        assert_eq!(lookalike_slots(1, 0.9), 0);
    }

    #[test]
    fn image_balanced_draws_handle_totals_beyond_u32() {
        // Only `draw`: a batch would list the images of an identity, 16 GiB here.
        let config = SamplerConfig {
            identities_per_batch: 1,
            mode: SamplingMode::ImageBalanced,
            ..SamplerConfig::default()
        };
        let s = PkSampler::new(config, vec![u32::MAX, u32::MAX, 1]).expect("valid sampler");
        let mut rng = SplitMix64::new(5);
        let mut seen = [0usize; 3];
        for _ in 0..200 {
            seen[s.draw(&mut rng) as usize] += 1;
        }
        assert!(seen[0] > 50 && seen[1] > 50 && seen[2] == 0, "{seen:?}");
    }

    #[test]
    fn duplicates_fall_back_to_a_free_label_when_one_identity_dominates() {
        let config = SamplerConfig {
            identities_per_batch: 4,
            mode: SamplingMode::ImageBalanced,
            ..SamplerConfig::default()
        };
        let mut s = PkSampler::new(config, vec![1_000_000, 1, 1, 1]).expect("valid sampler");
        for _ in 0..3 {
            let mut labels: Vec<u32> = s.next_batch().iter().step_by(2).map(|p| p.label).collect();
            labels.sort_unstable();
            assert_eq!(labels, [0, 1, 2, 3]);
        }
    }

    #[test]
    fn debug_shows_the_state_and_whether_a_source_is_set() {
        let text = format!("{:?}", sampler(2, 2, vec![3; 4]));
        assert!(text.contains("lookalike_source: false"), "{text}");
    }
}
