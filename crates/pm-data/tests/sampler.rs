//! Public-API tests of the P×K sampler: batch shape and label range in every mode, exact replay
//! after restoring a saved state, the per-epoch guarantee of Epoch mode, the identity weights of
//! the two random modes, and look-alike filling through a fake source.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use pm_data::{LookalikeSource, Pick, PkSampler, SamplerConfig, SamplingMode};
use proptest::prelude::*;

const MODES: [SamplingMode; 3] = [
    SamplingMode::Epoch,
    SamplingMode::IdentityBalanced,
    SamplingMode::ImageBalanced,
];

/// Answers, for `label`: an out-of-range label, `label` itself, `label ^ 1`, then `label + 3`.
struct Neighbours;

impl LookalikeSource for Neighbours {
    fn lookalikes(&self, label: u32, n: usize, out: &mut Vec<u32>) {
        out.extend(
            [label + 1000, label, label ^ 1, label + 3]
                .into_iter()
                .take(n),
        );
    }
}

/// Answers nothing, and counts how often it was asked.
#[derive(Default)]
struct Silent {
    calls: AtomicUsize,
}

impl LookalikeSource for Silent {
    fn lookalikes(&self, _label: u32, _n: usize, _out: &mut Vec<u32>) {
        self.calls.fetch_add(1, Ordering::Relaxed);
    }
}

fn config(mode: SamplingMode, p: usize, k: usize, seed: u64, fraction: f32) -> SamplerConfig {
    SamplerConfig {
        identities_per_batch: p,
        images_per_identity: k,
        seed,
        mode,
        lookalike_fraction: fraction,
        ..SamplerConfig::default()
    }
}

fn sampler(config: SamplerConfig, counts: &[u32], source: Option<&Arc<Neighbours>>) -> PkSampler {
    let mut sampler = PkSampler::new(config, counts.to_vec()).expect("valid sampler");
    if let Some(source) = source {
        sampler.set_lookalikes(Some(source.clone() as Arc<dyn LookalikeSource>));
    }
    sampler
}

/// Checks that a batch holds P distinct, in-range identities of K valid picks each, and returns
/// its labels in batch order.
fn batch_labels(picks: &[Pick], p: usize, k: usize, counts: &[u32]) -> Vec<u32> {
    assert_eq!(picks.len(), p * k);
    let labels: Vec<u32> = picks.chunks(k).map(|group| group[0].label).collect();
    for group in picks.chunks(k) {
        let label = group[0].label;
        assert!(
            (label as usize) < counts.len(),
            "label {label} out of range"
        );
        for pick in group {
            assert_eq!(pick.label, label, "picks are not identity-major");
            assert!(
                pick.image < counts[label as usize],
                "image {} of {label}",
                pick.image
            );
        }
    }
    let distinct: HashSet<u32> = labels.iter().copied().collect();
    assert_eq!(distinct.len(), p, "repeated identity in {labels:?}");
    labels
}

/// A mode, P, K, a seed and image counts of at least P identities.
fn setup() -> impl Strategy<Value = (SamplingMode, usize, usize, u64, Vec<u32>)> {
    (0..3usize, 1..7usize, 2..4usize, any::<u64>(), 0..24usize).prop_flat_map(
        |(mode, p, k, seed, extra)| {
            let counts = prop::collection::vec(1..12u32, p + extra);
            (Just(MODES[mode]), Just(p), Just(k), Just(seed), counts)
        },
    )
}

/// Look-alike fractions whose products with P are exact in binary.
fn fraction() -> impl Strategy<Value = f32> {
    prop_oneof![Just(0.0f32), Just(0.25), Just(0.5), Just(0.75)]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(32))]

    #[test]
    fn batches_hold_p_distinct_identities_of_k_valid_picks(
        (mode, p, k, seed, counts) in setup(),
        fraction in fraction(),
        with_source in any::<bool>(),
    ) {
        let source = Arc::new(Neighbours);
        let config = config(mode, p, k, seed, fraction);
        let mut s = sampler(config, &counts, with_source.then_some(&source));
        for _ in 0..2 * s.batches_per_epoch() + 1 {
            batch_labels(&s.next_batch(), p, k, &counts);
        }
    }

    #[test]
    fn a_restored_state_replays_the_next_batches(
        (mode, p, k, seed, counts) in setup(),
        fraction in fraction(),
        with_source in any::<bool>(),
        warmup in 0..12usize,
    ) {
        let source = Arc::new(Neighbours);
        let source = with_source.then_some(&source);
        let config = config(mode, p, k, seed, fraction);
        let mut original = sampler(config.clone(), &counts, source);
        for _ in 0..warmup {
            original.next_batch();
        }
        let mut resumed = sampler(config, &counts, source);
        resumed.restore(original.state()).expect("restore");
        // Past the end of the epoch, so the rollover is replayed too.
        for _ in 0..original.batches_per_epoch() + 2 {
            prop_assert_eq!(original.next_batch(), resumed.next_batch());
            prop_assert_eq!(original.state(), resumed.state());
        }
    }

    #[test]
    fn epoch_mode_draws_each_identity_at_most_once_per_epoch(
        (_, p, k, seed, counts) in setup(),
    ) {
        let mut s = sampler(config(SamplingMode::Epoch, p, k, seed, 0.0), &counts, None);
        let mut seen: HashMap<u64, HashSet<u32>> = HashMap::new();
        for _ in 0..3 * s.batches_per_epoch() {
            let labels = batch_labels(&s.next_batch(), p, k, &counts);
            let epoch = seen.entry(s.state().epoch).or_default();
            for label in labels {
                prop_assert!(epoch.insert(label), "identity {} twice in one epoch", label);
            }
        }
        prop_assert_eq!(seen.len(), 3);
        prop_assert!(seen.values().all(|labels| labels.len() == s.batches_per_epoch() * p));
    }

    #[test]
    fn a_fraction_without_a_source_draws_the_batches_of_no_fraction(
        (mode, p, k, seed, counts) in setup(),
        fraction in 0.0..0.99f32,
    ) {
        let mut plain = sampler(config(mode, p, k, seed, 0.0), &counts, None);
        let mut asked = sampler(config(mode, p, k, seed, fraction), &counts, None);
        prop_assert_eq!(plain.batches_per_epoch(), asked.batches_per_epoch());
        for _ in 0..2 * plain.batches_per_epoch() + 1 {
            prop_assert_eq!(plain.next_batch(), asked.next_batch());
            prop_assert_eq!(plain.state(), asked.state());
        }
    }

    #[test]
    fn valid_lookalikes_join_the_batch_round_robin(
        (mode, p, k, seed, counts) in setup(),
        fraction in fraction(),
    ) {
        let source = Arc::new(Neighbours);
        let mut s = sampler(config(mode, p, k, seed, fraction), &counts, Some(&source));
        let slots = (p as f32 * fraction) as usize;
        let anchors = p - slots;
        prop_assert_eq!(s.batches_per_epoch(), counts.len() / anchors);
        for _ in 0..2 * s.batches_per_epoch() + 1 {
            let before = s.state();
            let labels = batch_labels(&s.next_batch(), p, k, &counts);
            let after = s.state();
            if after.epoch == before.epoch {
                prop_assert_eq!(after.position, before.position + anchors as u64);
            } else {
                prop_assert_eq!(after.position, anchors as u64);
            }
            // In the first round each of the first `slots` anchors gets its first valid
            // answer, `anchor ^ 1`, unless it is already in the batch.
            for &anchor in &labels[..anchors.min(slots)] {
                let twin = anchor ^ 1;
                if (twin as usize) < counts.len() {
                    prop_assert!(labels.contains(&twin), "{} lacks {} in {:?}", anchor, twin, labels);
                }
            }
        }
    }
}

/// Answers, for `label`, the next three labels modulo `n`.
struct Ring {
    n: u32,
}

impl LookalikeSource for Ring {
    fn lookalikes(&self, label: u32, n: usize, out: &mut Vec<u32>) {
        out.extend((1..=3).map(|step| (label + step) % self.n).take(n));
    }
}

#[test]
fn lookalikes_fill_the_slots_round_robin_after_the_anchors() {
    let counts = vec![4; 40];
    let ring = Arc::new(Ring { n: 40 }) as Arc<dyn LookalikeSource>;
    // (P, fraction, anchors): one look-alike per anchor, then three per anchor.
    for (p, fraction, anchors) in [(6, 0.5, 3), (8, 0.75, 2)] {
        for mode in MODES {
            let mut s =
                PkSampler::new(config(mode, p, 2, 9, fraction), counts.clone()).expect("sampler");
            s.set_lookalikes(Some(ring.clone()));
            for _ in 0..20 {
                let labels = batch_labels(&s.next_batch(), p, 2, &counts);

                // Each anchor in turn adds its next answer not yet in the batch.
                let mut expected = labels[..anchors].to_vec();
                let mut cursors = vec![1; anchors];
                while expected.len() < p {
                    let before = expected.len();
                    for (i, cursor) in cursors.iter_mut().enumerate() {
                        while *cursor <= 3 && expected.len() < p {
                            let candidate = (labels[i] + *cursor) % 40;
                            *cursor += 1;
                            if !expected.contains(&candidate) {
                                expected.push(candidate);
                                break;
                            }
                        }
                    }
                    if expected.len() == before {
                        break;
                    }
                }
                assert_eq!(labels[..expected.len()], expected[..], "{mode:?}, P = {p}");
            }
        }
    }
}

#[test]
fn a_silent_source_leaves_the_slots_to_the_modes_draw() {
    let counts = vec![3; 30];
    for mode in MODES {
        let source = Arc::new(Silent::default());
        let mut s = PkSampler::new(config(mode, 8, 2, 4, 0.5), counts.clone()).expect("sampler");
        s.set_lookalikes(Some(source.clone() as Arc<dyn LookalikeSource>));
        for _ in 0..10 {
            batch_labels(&s.next_batch(), 8, 2, &counts);
        }
        assert_eq!(source.calls.load(Ordering::Relaxed), 10 * 4, "{mode:?}");

        // With no look-alike slot the source is never asked.
        let source = Arc::new(Silent::default());
        let mut s = PkSampler::new(config(mode, 8, 2, 4, 0.0), counts.clone()).expect("sampler");
        s.set_lookalikes(Some(source.clone() as Arc<dyn LookalikeSource>));
        let mut plain = PkSampler::new(config(mode, 8, 2, 4, 0.0), counts.clone()).expect("s");
        for _ in 0..10 {
            assert_eq!(s.next_batch(), plain.next_batch());
        }
        assert_eq!(source.calls.load(Ordering::Relaxed), 0);
    }
}

/// How often each identity appears in `batches` batches of P = 2 over `counts`.
fn frequencies(mode: SamplingMode, counts: &[u32], batches: usize) -> Vec<usize> {
    let mut s = PkSampler::new(config(mode, 2, 2, 11, 0.0), counts.to_vec()).expect("sampler");
    let mut drawn = vec![0usize; counts.len()];
    for _ in 0..batches {
        for pick in s.next_batch().iter().step_by(2) {
            drawn[pick.label as usize] += 1;
        }
    }
    drawn
}

/// Twenty identities of 2 images, then twenty of 20.
fn light_and_heavy() -> Vec<u32> {
    let mut counts = vec![2; 20];
    counts.extend([20; 20]);
    counts
}

#[test]
fn image_balanced_draws_identities_in_proportion_to_their_images() {
    let drawn = frequencies(SamplingMode::ImageBalanced, &light_and_heavy(), 3000);
    let light: usize = drawn[..20].iter().sum();
    let heavy: usize = drawn[20..].iter().sum();
    let ratio = heavy as f64 / light as f64;
    assert!(
        (5.0..=20.0).contains(&ratio),
        "heavy/light = {ratio} ({heavy}/{light})"
    );
}

#[test]
fn identity_balanced_draws_identities_uniformly_whatever_their_images() {
    let drawn = frequencies(SamplingMode::IdentityBalanced, &light_and_heavy(), 3000);
    let light: usize = drawn[..20].iter().sum();
    let heavy: usize = drawn[20..].iter().sum();
    let ratio = heavy as f64 / light as f64;
    assert!(
        (0.85..=1.15).contains(&ratio),
        "heavy/light = {ratio} ({heavy}/{light})"
    );
    // 6000 draws over 40 identities: 150 each on average.
    assert!(drawn.iter().all(|&n| (75..=225).contains(&n)), "{drawn:?}");
}

#[test]
fn an_invalid_lookalike_fraction_is_an_error() {
    for fraction in [-0.5, 1.0, 2.0, f32::NAN, f32::NEG_INFINITY] {
        let result = PkSampler::new(config(SamplingMode::Epoch, 2, 2, 0, fraction), vec![2; 4]);
        assert!(result.is_err(), "fraction {fraction} accepted");
    }
}

#[test]
fn the_sampler_can_move_to_a_prefetch_thread() {
    fn send_and_clone<T: Send + Clone + 'static>() {}
    send_and_clone::<PkSampler>();
}
