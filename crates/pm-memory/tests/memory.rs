//! Public-API tests of the prototype memory: slot discipline, eviction, expiry, the classifier
//! weights, prototype generation and checkpoint round trips.

use candle_core::{Device, Tensor};
use pm_memory::{
    Error, Eviction, ExemplarWeights, MemoryConfig, PrototypeConfig, PrototypeGrad,
    PrototypeMemory, prototypes,
};

fn memory(capacity: usize, eviction: Eviction, max_age: Option<u64>) -> PrototypeMemory {
    let config = MemoryConfig {
        capacity,
        dim: 2,
        eviction,
        max_age,
    };
    PrototypeMemory::new(config).expect("valid config")
}

fn rows(ids: &[u64]) -> Vec<f32> {
    ids.iter().flat_map(|&id| [id as f32, 1.0]).collect()
}

fn held(memory: &PrototypeMemory) -> Vec<u64> {
    let mut ids: Vec<u64> = memory
        .occupied_slots()
        .into_iter()
        .filter_map(|s| memory.identity_at(s))
        .collect();
    ids.sort_unstable();
    ids
}

#[test]
fn oldest_write_is_evicted_first_and_refresh_keeps_the_slot() {
    let mut m = memory(3, Eviction::OldestWrite, None);
    m.update(&[1, 2], &rows(&[1, 2]), 1).unwrap();
    m.update(&[3], &rows(&[3]), 2).unwrap();
    let slot_of_1 = m.slot_of(1).unwrap();
    let stats = m.update(&[1], &[9.0, 9.0], 3).unwrap();
    assert_eq!(stats.refreshed, 1);
    assert_eq!(m.slot_of(1), Some(slot_of_1));
    assert_eq!(m.row(slot_of_1), &[9.0, 9.0]);
    assert_eq!(m.refreshes(slot_of_1), 1);

    // 2 is now the oldest write (step 1): it goes first.
    let stats = m.update(&[4], &rows(&[4]), 4).unwrap();
    assert_eq!(stats.evicted, 1);
    assert_eq!(held(&m), vec![1, 3, 4]);
    assert_eq!(m.len(), 3);
}

#[test]
fn least_recently_used_spares_rows_that_were_used() {
    let mut m = memory(3, Eviction::LeastRecentlyUsed, None);
    m.update(&[1, 2, 3], &rows(&[1, 2, 3]), 1).unwrap();
    let slot_of_1 = m.slot_of(1).unwrap();
    let slot_of_2 = m.slot_of(2).unwrap();
    m.mark_used(&[slot_of_1, slot_of_2], 5);
    m.update(&[4], &rows(&[4]), 6).unwrap();
    assert_eq!(held(&m), vec![1, 2, 4]);

    let mut fifo = memory(3, Eviction::OldestWrite, None);
    fifo.update(&[1, 2, 3], &rows(&[1, 2, 3]), 1).unwrap();
    fifo.mark_used(&[fifo.slot_of(3).unwrap()], 5);
    fifo.update(&[4], &rows(&[4]), 6).unwrap();
    assert_eq!(held(&fifo).len(), 3);
    assert!(
        !held(&fifo).contains(&1),
        "FIFO evicts by write step, ties by slot"
    );
}

#[test]
fn max_age_drops_rows_even_when_not_full() {
    let mut m = memory(10, Eviction::OldestWrite, Some(2));
    m.update(&[1], &rows(&[1]), 1).unwrap();
    m.update(&[2], &rows(&[2]), 3).unwrap();
    assert_eq!(held(&m), vec![1, 2]);
    let stats = m.update(&[3], &rows(&[3]), 4).unwrap();
    assert_eq!(stats.expired, 1);
    assert_eq!(held(&m), vec![2, 3]);
}

#[test]
fn bad_updates_are_errors_not_panics() {
    let mut m = memory(2, Eviction::OldestWrite, None);
    assert!(matches!(
        m.update(&[1, 1], &rows(&[1, 1]), 1),
        Err(Error::Invalid(_))
    ));
    assert!(matches!(
        m.update(&[1, 2, 3], &rows(&[1, 2, 3]), 1),
        Err(Error::Invalid(_))
    ));
    assert!(matches!(m.update(&[1], &[1.0], 1), Err(Error::Invalid(_))));
    assert!(m.is_empty());
}

#[test]
fn classifier_puts_fresh_rows_first_and_skips_their_stored_rows() {
    let mut m = memory(4, Eviction::OldestWrite, None);
    m.update(&[10, 20, 30], &rows(&[10, 20, 30]), 1).unwrap();
    let fresh = Tensor::new(&[[0.0f32, 1.0], [1.0, 0.0]], &Device::Cpu).unwrap();
    let classifier = m.classifier(&[20, 99], &fresh).unwrap();
    assert_eq!(classifier.n_fresh, 2);
    let w = classifier.weights.to_vec2::<f32>().unwrap();
    assert_eq!(w.len(), 4);
    assert_eq!(&w[..2], &[vec![0.0, 1.0], vec![1.0, 0.0]]);
    let others: Vec<u64> = classifier
        .other_slots
        .iter()
        .map(|&s| m.identity_at(s).unwrap())
        .collect();
    assert_eq!(others, vec![10, 30]);
    assert_eq!(&w[2..], &[vec![10.0, 1.0], vec![30.0, 1.0]]);
}

#[test]
fn state_round_trips_bit_exactly_and_refuses_other_configs() {
    let mut m = memory(4, Eviction::LeastRecentlyUsed, Some(100));
    m.update(&[5, 6, 7], &[0.1, 0.2, 0.3, 0.4, 0.5, 0.6], 3)
        .unwrap();
    m.mark_used(&[m.slot_of(6).unwrap()], 4);
    let saved = m.to_tensors().unwrap();
    let mut restored = PrototypeMemory::from_tensors(m.config().clone(), &saved).unwrap();
    assert_eq!(restored.to_tensors().unwrap().len(), saved.len());
    for slot in 0..4 {
        assert_eq!(restored.row(slot), m.row(slot));
        assert_eq!(restored.identity_at(slot), m.identity_at(slot));
        assert_eq!(restored.write_step(slot), m.write_step(slot));
    }
    // Both must evict the same identity next.
    m.update(&[8, 9], &rows(&[8, 9]), 5).unwrap();
    restored.update(&[8, 9], &rows(&[8, 9]), 5).unwrap();
    assert_eq!(held(&m), held(&restored));

    let mut other = m.config().clone();
    other.capacity = 8;
    let err = PrototypeMemory::from_tensors(other, &saved).unwrap_err();
    assert!(
        matches!(
            err,
            Error::Mismatch {
                field: "capacity",
                ..
            }
        ),
        "{err}"
    );
    let mut other = m.config().clone();
    other.eviction = Eviction::OldestWrite;
    let err = PrototypeMemory::from_tensors(other, &saved).unwrap_err();
    assert!(err.to_string().contains("eviction"), "{err}");
}

#[test]
fn prototypes_are_normalised_weighted_means() {
    let x = Tensor::new(
        &[[3.0f32, 0.0], [0.0, 1.0], [0.0, 2.0], [0.0, 5.0]],
        &Device::Cpu,
    )
    .unwrap();
    let equal = PrototypeConfig::default();
    let p = prototypes(&x, 2, &equal).unwrap().to_vec2::<f32>().unwrap();
    let h = std::f32::consts::FRAC_1_SQRT_2;
    assert!(
        (p[0][0] - h).abs() < 1e-6 && (p[0][1] - h).abs() < 1e-6,
        "{p:?}"
    );
    assert!((p[1][1] - 1.0).abs() < 1e-6);

    let by_norm = PrototypeConfig {
        weights: ExemplarWeights::Norm,
        ..equal
    };
    let p = prototypes(&x, 2, &by_norm)
        .unwrap()
        .to_vec2::<f32>()
        .unwrap();
    let n = (9.0f32 + 1.0).sqrt();
    assert!(
        (p[0][0] - 3.0 / n).abs() < 1e-6 && (p[0][1] - 1.0 / n).abs() < 1e-6,
        "{p:?}"
    );
    assert!(prototypes(&x, 3, &equal).is_err());
}

#[test]
fn gradient_flows_through_prototypes_only_when_asked() {
    let x = candle_core::Var::new(&[[1.0f32, 2.0], [0.5, -1.0]], &Device::Cpu).unwrap();
    for (grad, expect_grad) in [
        (PrototypeGrad::Detached, false),
        (PrototypeGrad::Through, true),
    ] {
        let config = PrototypeConfig {
            grad,
            ..PrototypeConfig::default()
        };
        let p = prototypes(x.as_tensor(), 2, &config).unwrap();
        let target = Tensor::new(&[[0.3f32, 0.7]], &Device::Cpu).unwrap();
        let loss = (p * target).unwrap().sum_all().unwrap();
        let has_grad = loss.backward().unwrap().get(x.as_tensor()).is_some();
        assert_eq!(has_grad, expect_grad, "{grad:?}");
    }
}

#[test]
fn leave_one_out_excludes_the_image_itself() {
    let x = Tensor::new(
        &[
            [1.0f32, 0.0],
            [0.0, 2.0],
            [0.0, 3.0],
            [3.0, 4.0],
            [1.0, 0.0],
            [0.0, 5.0],
        ],
        &Device::Cpu,
    )
    .unwrap();
    let loo = pm_memory::leave_one_out(&x, 3, &PrototypeConfig::default()).unwrap();
    let loo = loo.to_vec2::<f32>().unwrap();
    // Row 0: others are (0,1) and (0,1) normalised -> (0,1).
    assert!(
        (loo[0][0]).abs() < 1e-6 && (loo[0][1] - 1.0).abs() < 1e-6,
        "{loo:?}"
    );
    // Row 1: others (1,0) and (0,1) -> (h, h).
    let h = std::f32::consts::FRAC_1_SQRT_2;
    assert!(
        (loo[1][0] - h).abs() < 1e-6 && (loo[1][1] - h).abs() < 1e-6,
        "{loo:?}"
    );
    // Row 3: others (1,0), (0,1) of the second identity.
    assert!((loo[3][0] - h).abs() < 1e-6, "{loo:?}");
    assert!(pm_memory::leave_one_out(&x, 1, &PrototypeConfig::default()).is_err());
}

/// Two simulated data-parallel workers receive the all-gathered updates in different arrival
/// orders, sometimes with an identity drawn by both; their memories stay identical.
#[test]
fn two_workers_applying_gathered_updates_keep_identical_memories() {
    use pm_memory::WorkerUpdate;

    let config = MemoryConfig {
        capacity: 16,
        dim: 3,
        eviction: Eviction::LeastRecentlyUsed,
        max_age: Some(9),
    };
    let mut a = PrototypeMemory::new(config.clone()).unwrap();
    let mut b = PrototypeMemory::new(config).unwrap();
    let mut state = 11u64;
    let mut next = move || {
        state = state
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1);
        state >> 33
    };
    for step in 1..=300u64 {
        let gathered: Vec<WorkerUpdate> = (0..2)
            .map(|rank| {
                let mut identities: Vec<u64> = (0..3).map(|_| next() % 40).collect();
                identities.sort_unstable();
                identities.dedup();
                let rows = identities
                    .iter()
                    .flat_map(|_| [0, 1, 2].map(|_| (next() % 100) as f32 / 50.0 - 1.0))
                    .collect();
                WorkerUpdate {
                    rank,
                    identities,
                    rows,
                }
            })
            .collect();
        let reversed: Vec<WorkerUpdate> = gathered.iter().rev().cloned().collect();
        a.update_gathered(&gathered, step).unwrap();
        b.update_gathered(&reversed, step).unwrap();
        let used = [(next() % 16) as usize];
        a.mark_used(&used, step);
        b.mark_used(&used, step);
    }
    let (ta, tb) = (a.to_tensors().unwrap(), b.to_tensors().unwrap());
    for (name, t) in &ta {
        let x = t
            .flatten_all()
            .unwrap()
            .to_dtype(candle_core::DType::F64)
            .unwrap();
        let y = tb[name]
            .flatten_all()
            .unwrap()
            .to_dtype(candle_core::DType::F64)
            .unwrap();
        assert_eq!(
            x.to_vec1::<f64>().unwrap(),
            y.to_vec1::<f64>().unwrap(),
            "{name}"
        );
    }
    assert!(a.len() > 8, "the memory should be in use: {}", a.len());

    // Two updates claiming the same rank cannot be ordered deterministically.
    let dup = vec![
        WorkerUpdate {
            rank: 0,
            identities: vec![1],
            rows: vec![1.0, 0.0, 0.0],
        },
        WorkerUpdate {
            rank: 0,
            identities: vec![2],
            rows: vec![0.0, 1.0, 0.0],
        },
    ];
    assert!(
        a.update_gathered(&dup, 301).is_err(),
        "a repeated rank is refused"
    );
}
