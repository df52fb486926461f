//! Public-API tests of the device-side memory ops (`pm_memory::ops`) against the CPU oracle:
//! `PrototypeMemory` (host rows, slots and write steps) and hand-computed vectors.
//!
//! Every case is one body taking a `&Device`; `device_test!` runs it on the CPU always and on
//! CUDA device 0 under the `cuda` feature, which is how the kernels are checked on a GPU.

use candle_core::{DType, Device, Tensor, Var};
use pm_memory::ops::{
    EMPTY_STEP, ages, empty_write_steps, gather_weights, oldest_slot, scatter_rows,
    scatter_rows_inplace, touch_slots, touch_slots_inplace,
};
use pm_memory::{Error, Eviction, MemoryConfig, PrototypeMemory, Result};
use proptest::prelude::*;

/// Emits `mod $case { cpu, cuda }` tests that run the body `$case(&Device)` on each device.
macro_rules! device_test {
    ($case:ident) => {
        mod $case {
            #[test]
            fn cpu() -> pm_memory::Result<()> {
                super::$case(&candle_core::Device::Cpu)
            }

            #[cfg(feature = "cuda")]
            #[test]
            fn cuda() -> pm_memory::Result<()> {
                super::$case(&candle_core::Device::new_cuda(0)?)
            }
        }
    };
}

/// The devices this build has: the CPU, and CUDA device 0 under the `cuda` feature.
fn devices() -> Vec<Device> {
    #[allow(unused_mut)]
    let mut devices = vec![Device::Cpu];
    #[cfg(feature = "cuda")]
    devices.push(Device::new_cuda(0).expect("the cuda feature needs CUDA device 0"));
    devices
}

const REL: f32 = 1e-6;
const ABS: f32 = 1e-7;

/// Element-wise `|actual - expected| <= ABS + REL * |expected|`.
fn assert_close(actual: &[f32], expected: &[f32], what: &str) {
    assert_eq!(actual.len(), expected.len(), "{what}: lengths differ");
    for (i, (a, e)) in actual.iter().zip(expected).enumerate() {
        assert!(
            (a - e).abs() <= ABS + REL * e.abs(),
            "{what}[{i}]: {a} but expected {e}"
        );
    }
}

fn flat(t: &Tensor) -> Vec<f32> {
    t.flatten_all().unwrap().to_vec1::<f32>().unwrap()
}

fn u32s(values: &[u32], device: &Device) -> Tensor {
    Tensor::from_slice(values, values.len(), device).unwrap()
}

fn slots_u32(slots: &[usize], device: &Device) -> Tensor {
    let slots: Vec<u32> = slots.iter().map(|&s| s as u32).collect();
    u32s(&slots, device)
}

fn memory(capacity: usize, dim: usize) -> PrototypeMemory {
    let config = MemoryConfig {
        capacity,
        dim,
        eviction: Eviction::OldestWrite,
        max_age: None,
    };
    PrototypeMemory::new(config).unwrap()
}

/// A distinct, deterministic row for `identity` at `step`.
fn row_of(identity: u64, step: u64, dim: usize) -> Vec<f32> {
    (0..dim)
        .map(|j| identity as f32 + 0.25 * step as f32 + 0.01 * j as f32)
        .collect()
}

fn rows_for(identities: &[u64], step: u64, dim: usize) -> Vec<f32> {
    identities
        .iter()
        .flat_map(|&id| row_of(id, step, dim))
        .collect()
}

/// The oracle's memory as device tensors: rows `[M, d]` and write steps `[M]` (empty slots
/// hold `EMPTY_STEP`).
fn oracle_tensors(memory: &PrototypeMemory, device: &Device) -> (Tensor, Tensor) {
    let m = memory.config().capacity;
    let d = memory.config().dim;
    let mut rows = Vec::with_capacity(m * d);
    let mut steps = Vec::with_capacity(m);
    for slot in 0..m {
        rows.extend_from_slice(memory.row(slot));
        steps.push(match memory.identity_at(slot) {
            Some(_) => memory.write_step(slot) as u32,
            None => EMPTY_STEP,
        });
    }
    let rows = Tensor::from_vec(rows, (m, d), device).unwrap();
    (rows, u32s(&steps, device))
}

fn is_invalid<T: std::fmt::Debug>(result: Result<T>) -> bool {
    matches!(result, Err(Error::Invalid(_)))
}

fn scatter_writes_only_the_given_slots(device: &Device) -> Result<()> {
    let rows = Tensor::arange(0f32, 12., device)?.reshape((4, 3))?;
    let fresh = Tensor::from_slice(&[-1f32, -2., -3., -4., -5., -6.], (2, 3), device)?;
    let slots = u32s(&[2, 0], device);

    let written = scatter_rows(&rows, &slots, &fresh)?;
    let expected = [-4., -5., -6., 3., 4., 5., -1., -2., -3., 9., 10., 11.];
    assert_close(&flat(&written), &expected, "scatter_rows");
    assert_close(
        &flat(&rows),
        &(0..12).map(|x| x as f32).collect::<Vec<_>>(),
        "input",
    );

    scatter_rows_inplace(&rows, &slots, &fresh)?;
    assert_close(&flat(&rows), &expected, "scatter_rows_inplace");
    Ok(())
}
device_test!(scatter_writes_only_the_given_slots);

fn scatter_and_touch_match_memory_update(device: &Device) -> Result<()> {
    let dim = 3;
    let mut oracle = memory(4, dim);
    oracle.update(&[10, 11, 12], &rows_for(&[10, 11, 12], 1, dim), 1)?;
    oracle.update(&[13], &rows_for(&[13], 2, dim), 2)?;
    let (rows, write_step) = oracle_tensors(&oracle, device);

    // A refresh (11) and an eviction (14 takes the oldest write, which is 10's or 12's slot).
    let identities = [11, 14];
    let fresh = rows_for(&identities, 3, dim);
    oracle.update(&identities, &fresh, 3)?;
    let slots: Vec<usize> = identities
        .iter()
        .map(|&id| oracle.slot_of(id).unwrap())
        .collect();
    let (expected_rows, expected_steps) = oracle_tensors(&oracle, &Device::Cpu);

    let fresh = Tensor::from_vec(fresh, (2, dim), device)?;
    let slots = slots_u32(&slots, device);
    let rows = scatter_rows(&rows, &slots, &fresh)?;
    let write_step = touch_slots(&write_step, &slots, 3)?;
    assert_close(&flat(&rows), &flat(&expected_rows), "rows");
    assert_eq!(
        write_step.to_vec1::<u32>()?,
        expected_steps.to_vec1::<u32>()?
    );
    Ok(())
}
device_test!(scatter_and_touch_match_memory_update);

fn gather_matches_classifier(device: &Device) -> Result<()> {
    let dim = 4;
    let mut oracle = memory(6, dim);
    oracle.update(&[1, 2, 3, 4], &rows_for(&[1, 2, 3, 4], 1, dim), 1)?;
    let batch = [2, 7];
    let fresh = Tensor::from_vec(rows_for(&batch, 5, dim), (2, dim), device)?;
    let classifier = oracle.classifier(&batch, &fresh)?;
    let (rows, _) = oracle_tensors(&oracle, device);

    let other_slots = slots_u32(&classifier.other_slots, device);
    let weights = gather_weights(&rows, &fresh, &other_slots)?;
    assert_eq!(weights.dims(), classifier.weights.dims());
    assert_close(&flat(&weights), &flat(&classifier.weights), "weights");
    Ok(())
}
device_test!(gather_matches_classifier);

fn gather_gradient_reaches_fresh_only(device: &Device) -> Result<()> {
    let (p, c, dim) = (2, 3, 3);
    let rows = Var::from_tensor(&Tensor::arange(0f32, 15., device)?.reshape((5, dim))?)?;
    let fresh = Var::from_tensor(&Tensor::ones((p, dim), DType::F32, device)?)?;
    let other_slots = u32s(&[4, 1, 4], device);
    let coeff = Tensor::arange(1f32, ((p + c) * dim + 1) as f32, device)?.reshape((p + c, dim))?;

    let weights = gather_weights(rows.as_tensor(), fresh.as_tensor(), &other_slots)?;
    let loss = (weights * &coeff)?.sum_all()?;
    let grads = loss.backward()?;

    let fresh_grad = grads.get(fresh.as_tensor()).expect("fresh has a gradient");
    assert_close(
        &flat(fresh_grad),
        &flat(&coeff.narrow(0, 0, p)?),
        "d loss / d fresh",
    );
    assert!(
        grads.get(rows.as_tensor()).is_none(),
        "the memory rows got a gradient"
    );
    assert!(
        grads.get(&other_slots).is_none(),
        "the slots got a gradient"
    );
    Ok(())
}
device_test!(gather_gradient_reaches_fresh_only);

fn ages_and_oldest_slot_match_memory(device: &Device) -> Result<()> {
    let dim = 2;
    let mut oracle = memory(5, dim);
    oracle.update(&[1, 2], &rows_for(&[1, 2], 3, dim), 3)?;
    oracle.update(&[3, 4], &rows_for(&[3, 4], 5, dim), 5)?;
    oracle.update(&[1, 5], &rows_for(&[1, 5], 8, dim), 8)?;
    let (_, write_step) = oracle_tensors(&oracle, device);

    let occupied = oracle.occupied_slots();
    let got = ages(&write_step, &slots_u32(&occupied, device), 9)?.to_vec1::<u32>()?;
    let expected: Vec<u32> = oracle
        .ages(&occupied, 9)
        .iter()
        .map(|&a| a as u32)
        .collect();
    assert_eq!(got, expected);

    // The victim is the slot a new identity takes in the full memory.
    let mut probe = oracle.clone();
    probe.update(&[99], &row_of(99, 10, dim), 10)?;
    assert_eq!(oldest_slot(&write_step)?, probe.slot_of(99));
    Ok(())
}
device_test!(ages_and_oldest_slot_match_memory);

fn oldest_slot_ties_and_empty_memory(device: &Device) -> Result<()> {
    let write_step = u32s(&[EMPTY_STEP, 5, 3, 3, EMPTY_STEP], device);
    assert_eq!(oldest_slot(&write_step)?, Some(2));
    assert_eq!(oldest_slot(&empty_write_steps(4, device)?)?, None);
    assert_eq!(oldest_slot(&empty_write_steps(0, device)?)?, None);

    let got = ages(&write_step, &u32s(&[0, 1, 2, 1], device), 4)?.to_vec1::<u32>()?;
    assert_eq!(got, vec![EMPTY_STEP, 0, 1, 0]);

    let touched = touch_slots(&write_step, &u32s(&[4, 0, 4], device), 7)?;
    assert_eq!(touched.to_vec1::<u32>()?, vec![7, 5, 3, 3, 7]);
    assert_eq!(oldest_slot(&touched)?, Some(2));
    touch_slots_inplace(&write_step, &u32s(&[2, 3], device), 6)?;
    assert_eq!(oldest_slot(&write_step)?, Some(1));
    Ok(())
}
device_test!(oldest_slot_ties_and_empty_memory);

fn bad_arguments_are_errors(device: &Device) -> Result<()> {
    let rows = Tensor::zeros((3, 2), DType::F32, device)?;
    let fresh = Tensor::ones((2, 2), DType::F32, device)?;
    let write_step = empty_write_steps(3, device)?;

    assert!(is_invalid(scatter_rows(
        &rows,
        &u32s(&[0, 3], device),
        &fresh
    )));
    assert!(is_invalid(scatter_rows(
        &rows,
        &u32s(&[1, 1], device),
        &fresh
    )));
    assert!(is_invalid(scatter_rows(&rows, &u32s(&[1], device), &fresh)));
    assert!(is_invalid(gather_weights(
        &rows,
        &fresh,
        &u32s(&[5], device)
    )));
    assert!(is_invalid(touch_slots(&write_step, &u32s(&[3], device), 1)));
    assert!(is_invalid(ages(&write_step, &u32s(&[7], device), 1)));
    assert!(is_invalid(touch_slots(
        &write_step,
        &u32s(&[0], device),
        u64::from(EMPTY_STEP)
    )));

    let i64_slots = Tensor::new(&[0i64], device)?;
    assert!(is_invalid(gather_weights(&rows, &fresh, &i64_slots)));
    let f64_rows = rows.to_dtype(DType::F64)?;
    assert!(is_invalid(gather_weights(
        &f64_rows,
        &fresh,
        &u32s(&[0], device)
    )));
    let wide_fresh = Tensor::ones((2, 3), DType::F32, device)?;
    assert!(is_invalid(gather_weights(
        &rows,
        &wide_fresh,
        &u32s(&[0], device)
    )));
    Ok(())
}
device_test!(bad_arguments_are_errors);

fn strided_inputs_are_read_through_their_layout(device: &Device) -> Result<()> {
    // rows_t is [4, 3] but stored transposed; fresh is a narrowed view.
    let rows_t = Tensor::arange(0f32, 12., device)?.reshape((3, 4))?.t()?;
    let fresh = Tensor::arange(100f32, 109., device)?
        .reshape((3, 3))?
        .narrow(0, 1, 2)?;
    let expected_rows: Vec<f32> = rows_t.to_vec2::<f32>()?.concat();

    let weights = gather_weights(&rows_t, &fresh, &u32s(&[3, 0], device))?;
    let mut expected = vec![103., 104., 105., 106., 107., 108.];
    expected.extend_from_slice(&expected_rows[9..12]);
    expected.extend_from_slice(&expected_rows[0..3]);
    assert_close(&flat(&weights), &expected, "gather from strided rows");

    let written = scatter_rows(&rows_t, &u32s(&[1, 2], device), &fresh)?;
    let mut expected = expected_rows.clone();
    expected[3..9].copy_from_slice(&[103., 104., 105., 106., 107., 108.]);
    assert_close(&flat(&written), &expected, "scatter into strided rows");
    assert!(is_invalid(scatter_rows_inplace(
        &rows_t,
        &u32s(&[1], device),
        &fresh.narrow(0, 0, 1)?
    )));
    Ok(())
}
device_test!(strided_inputs_are_read_through_their_layout);

/// One update of the random sequences: distinct identities, written at the next step.
type Update = Vec<u64>;

fn update_sequence() -> impl Strategy<Value = (usize, usize, Vec<Update>)> {
    (1usize..6, 1usize..4).prop_flat_map(|(capacity, dim)| {
        let update = proptest::collection::hash_set(0u64..10, 1..=capacity)
            .prop_map(|ids| ids.into_iter().collect::<Vec<u64>>());
        (
            Just(capacity),
            Just(dim),
            proptest::collection::vec(update, 1..8),
        )
    })
}

/// Replays `updates` on the oracle and, with the slots it chose, on device tensors; after
/// each step both memories, the classifier weights and the eviction victim must agree.
fn replay_agrees_with_oracle(
    device: &Device,
    capacity: usize,
    dim: usize,
    updates: &[Update],
) -> Result<()> {
    let mut oracle = memory(capacity, dim);
    let rows = Tensor::zeros((capacity, dim), DType::F32, device)?;
    let write_step = empty_write_steps(capacity, device)?;
    let mut state = (rows, write_step);

    for (step, identities) in (1u64..).zip(updates) {
        let fresh = rows_for(identities, step, dim);
        oracle.update(identities, &fresh, step)?;
        let slots: Vec<usize> = identities
            .iter()
            .map(|&id| oracle.slot_of(id).unwrap())
            .collect();
        let (slots, fresh) = (
            slots_u32(&slots, device),
            Tensor::from_vec(fresh, (identities.len(), dim), device)?,
        );
        if step % 2 == 0 {
            scatter_rows_inplace(&state.0, &slots, &fresh)?;
            touch_slots_inplace(&state.1, &slots, step)?;
        } else {
            state = (
                scatter_rows(&state.0, &slots, &fresh)?,
                touch_slots(&state.1, &slots, step)?,
            );
        }
        check_state(&oracle, &state.0, &state.1, identities, step)?;
    }
    Ok(())
}

fn check_state(
    oracle: &PrototypeMemory,
    rows: &Tensor,
    write_step: &Tensor,
    batch: &[u64],
    step: u64,
) -> Result<()> {
    let (expected_rows, expected_steps) = oracle_tensors(oracle, &Device::Cpu);
    assert_close(&flat(rows), &flat(&expected_rows), "rows");
    assert_eq!(
        write_step.to_vec1::<u32>()?,
        expected_steps.to_vec1::<u32>()?
    );

    let fresh = Tensor::from_vec(
        rows_for(batch, step + 1, oracle.config().dim),
        (batch.len(), oracle.config().dim),
        rows.device(),
    )?;
    let classifier = oracle.classifier(batch, &fresh)?;
    let weights = gather_weights(
        rows,
        &fresh,
        &slots_u32(&classifier.other_slots, rows.device()),
    )?;
    assert_close(&flat(&weights), &flat(&classifier.weights), "weights");

    let occupied = oracle.occupied_slots();
    let got = ages(write_step, &slots_u32(&occupied, rows.device()), step + 2)?;
    let expected: Vec<u32> = oracle
        .ages(&occupied, step + 2)
        .iter()
        .map(|&a| a as u32)
        .collect();
    assert_eq!(got.to_vec1::<u32>()?, expected, "ages");

    let expected_victim = occupied
        .iter()
        .copied()
        .min_by_key(|&s| (oracle.write_step(s), s));
    assert_eq!(oldest_slot(write_step)?, expected_victim);
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]

    #[test]
    fn random_updates_agree_with_the_oracle((capacity, dim, updates) in update_sequence()) {
        for device in devices() {
            replay_agrees_with_oracle(&device, capacity, dim, &updates).unwrap();
        }
    }
}
