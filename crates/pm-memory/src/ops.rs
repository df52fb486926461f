//! Device-side operations on a prototype memory held as tensors, written as candle custom ops:
//! a CPU implementation that is always built (and is the oracle of the tests) and CUDA kernels
//! (`kernels/memory.cu`, compiled to PTX) behind the `cuda` feature.
//!
//! [`PrototypeMemory`](crate::PrototypeMemory) keeps its rows in host memory; these ops let a
//! downstream crate keep the same memory on the training device instead:
//!
//! ```text
//! rows        [M, d]  f32  one row per slot
//! write_step  [M]     u32  step of each slot's last write; EMPTY_STEP (u32::MAX) = empty slot
//! slots       [P]     u32  slot indices, each below M
//! fresh       [P, d]  f32  the batch's fresh prototypes
//! ```
//!
//! | function | computes | custom op |
//! |---|---|---|
//! | [`scatter_rows`], [`scatter_rows_inplace`] | `rows[slots[i]] = fresh[i]` | `InplaceOp3` |
//! | [`gather_weights`] | `[fresh; rows[other_slots]]`, `[P + C, d]` | `CustomOp3` (grad: fresh) |
//! | [`touch_slots`], [`touch_slots_inplace`] | `write_step[slots[i]] = step` | `InplaceOp2` |
//! | [`ages`] | `step - write_step[slots[i]]`, `[P]` | `CustomOp2` |
//! | [`oldest_slot`] | the slot written longest ago, or `None` | candle's `min`, `where_cond` |
//!
//! Steps are u32 because both candle storages (CPU and CUDA) hold u32 natively and the
//! sentinel `u32::MAX` then sorts after every real step: the oldest write is a plain minimum
//! that never picks an empty slot. Steps must stay below [`EMPTY_STEP`].
//!
//! Slot indices are validated on the host before any kernel runs (one small device-to-host copy
//! of `slots` on CUDA): an index out of range is an error on every device, and so is a slot
//! repeated within one scatter, whose result would depend on the order of the GPU's writes.

#[cfg(feature = "cuda")]
mod cuda;
mod custom;

use std::collections::HashSet;

use candle_core::{DType, Device, Tensor};

use crate::{Error, Result};
use custom::{Ages, GatherWeights, ScatterRows, TouchSlots};

/// The `write_step` of an empty slot.
pub const EMPTY_STEP: u32 = u32::MAX;

/// A `write_step` vector `[capacity]` u32 of empty slots, on `device`.
///
/// # Errors
/// The tensor could not be allocated.
pub fn empty_write_steps(capacity: usize, device: &Device) -> Result<Tensor> {
    Ok(Tensor::full(EMPTY_STEP, capacity, device)?)
}

/// The memory `rows` (`[M, d]` f32) with `fresh[i]` (`[P, d]` f32) written to row `slots[i]`
/// (`[P]` u32), as a new tensor; `rows` is unchanged. No gradient flows through it: the memory
/// is updated after the optimizer step, from detached prototypes.
///
/// # Errors
/// [`Error::Invalid`] for a dtype or shape that does not fit, a slot not below M or a slot
/// given twice; [`Error::Candle`] when the op fails or the tensors sit on different devices.
pub fn scatter_rows(rows: &Tensor, slots: &Tensor, fresh: &Tensor) -> Result<Tensor> {
    let out = rows.detach().copy()?;
    let out = if out.is_contiguous() {
        out
    } else {
        out.contiguous()?
    };
    scatter_rows_inplace(&out, slots, fresh)?;
    Ok(out)
}

/// [`scatter_rows`] written into `rows` itself, which must be contiguous: every tensor sharing
/// its storage sees the new rows. Use it on a memory that no live autograd graph has read.
///
/// # Errors
/// As [`scatter_rows`], and [`Error::Invalid`] when `rows` is not contiguous.
pub fn scatter_rows_inplace(rows: &Tensor, slots: &Tensor, fresh: &Tensor) -> Result<()> {
    let (capacity, dim) = rows_dims(rows, "rows")?;
    if !rows.is_contiguous() {
        return Err(Error::Invalid(
            "rows must be contiguous to be written in place".into(),
        ));
    }
    let n_fresh = fresh_dims(fresh, dim)?;
    let host = host_slots(slots, "slots", capacity, Distinct::Required)?;
    same_count(host.len(), n_fresh, "slots", "fresh")?;
    if n_fresh == 0 {
        return Ok(());
    }

    let slots = slots.contiguous()?;
    let fresh = fresh.detach().contiguous()?;
    rows.inplace_op3(&slots, &fresh, &ScatterRows)?;
    Ok(())
}

/// The logits' weight matrix `[P + C, d]`: the fresh prototypes `fresh` (`[P, d]` f32) first,
/// then the stored rows `rows[other_slots]` (`rows`: `[M, d]` f32, `other_slots`: `[C]` u32).
///
/// Gradients flow to `fresh` only; the stored rows are constants of the step.
///
/// # Errors
/// [`Error::Invalid`] for a dtype or shape that does not fit or a slot not below M;
/// [`Error::Candle`] when the op fails or the tensors sit on different devices.
pub fn gather_weights(rows: &Tensor, fresh: &Tensor, other_slots: &Tensor) -> Result<Tensor> {
    let (capacity, dim) = rows_dims(rows, "rows")?;
    fresh_dims(fresh, dim)?;
    let host = host_slots(other_slots, "other_slots", capacity, Distinct::NotRequired)?;
    if host.is_empty() {
        // Nothing stored to append: the weights are the fresh prototypes themselves.
        return Ok(fresh.contiguous()?);
    }

    let rows = rows.detach().contiguous()?;
    let other_slots = other_slots.contiguous()?;
    Ok(fresh
        .contiguous()?
        .apply_op3(&rows, &other_slots, GatherWeights)?)
}

/// `write_step` (`[M]` u32) with the entries of `slots` (`[P]` u32) set to `step`, as a new
/// tensor; `write_step` is unchanged.
///
/// # Errors
/// [`Error::Invalid`] for a dtype or shape that does not fit, a slot not below M, or a step
/// not below [`EMPTY_STEP`]; [`Error::Candle`] when the op fails.
pub fn touch_slots(write_step: &Tensor, slots: &Tensor, step: u64) -> Result<Tensor> {
    let out = write_step.detach().copy()?;
    let out = if out.is_contiguous() {
        out
    } else {
        out.contiguous()?
    };
    touch_slots_inplace(&out, slots, step)?;
    Ok(out)
}

/// [`touch_slots`] written into `write_step` itself, which must be contiguous.
///
/// # Errors
/// As [`touch_slots`], and [`Error::Invalid`] when `write_step` is not contiguous.
pub fn touch_slots_inplace(write_step: &Tensor, slots: &Tensor, step: u64) -> Result<()> {
    let capacity = write_steps_len(write_step)?;
    if !write_step.is_contiguous() {
        return Err(Error::Invalid(
            "write_step must be contiguous to be written in place".into(),
        ));
    }
    let step = step_u32(step)?;
    let host = host_slots(slots, "slots", capacity, Distinct::NotRequired)?;
    if host.is_empty() {
        return Ok(());
    }

    write_step.inplace_op2(&slots.contiguous()?, &TouchSlots { step })?;
    Ok(())
}

/// Ages `[P]` u32 of the slots `slots` (`[P]` u32) at `step`: `step - write_step[slot]`, 0 for
/// a write later than `step`, and [`EMPTY_STEP`] for an empty slot.
///
/// # Errors
/// [`Error::Invalid`] for a dtype or shape that does not fit, a slot not below M, or a step
/// not below [`EMPTY_STEP`]; [`Error::Candle`] when the op fails.
pub fn ages(write_step: &Tensor, slots: &Tensor, step: u64) -> Result<Tensor> {
    let capacity = write_steps_len(write_step)?;
    let step = step_u32(step)?;
    let host = host_slots(slots, "slots", capacity, Distinct::NotRequired)?;
    if host.is_empty() {
        return Ok(Tensor::zeros(0, DType::U32, slots.device())?);
    }

    let write_step = write_step.contiguous()?;
    Ok(write_step.apply_op2_no_bwd(&slots.contiguous()?, &Ages { step })?)
}

/// The eviction victim under oldest-write-first: the occupied slot of `write_step` (`[M]` u32)
/// with the smallest write step, the lowest such slot on a tie; `None` when every slot is empty.
///
/// Runs as candle reductions on the tensor's device; only two scalars come back to the host.
///
/// # Errors
/// [`Error::Invalid`] when `write_step` is not a u32 vector; [`Error::Candle`] when a reduction
/// fails.
pub fn oldest_slot(write_step: &Tensor) -> Result<Option<usize>> {
    let capacity = write_steps_len(write_step)?;
    if capacity == 0 {
        return Ok(None);
    }
    let oldest = write_step.min(0)?.to_scalar::<u32>()?;
    if oldest == EMPTY_STEP {
        return Ok(None);
    }

    // The lowest slot whose write step is the minimum.
    let device = write_step.device();
    let is_oldest = write_step.broadcast_eq(&Tensor::new(oldest, device)?)?;
    let slot_ids = Tensor::arange(0u32, capacity as u32, device)?;
    let others = Tensor::full(u32::MAX, capacity, device)?;
    let slot = is_oldest
        .where_cond(&slot_ids, &others)?
        .min(0)?
        .to_scalar::<u32>()?;
    Ok(Some(slot as usize))
}

/// Whether a slot may appear twice in one call.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Distinct {
    Required,
    NotRequired,
}

/// `(M, d)` of an f32 memory `[M, d]` with `0 < d` and `M <= 2^32`.
fn rows_dims(rows: &Tensor, name: &str) -> Result<(usize, usize)> {
    check_dtype(rows, name, DType::F32)?;
    let (capacity, dim) = rows
        .dims2()
        .map_err(|_| Error::Invalid(format!("{name} must be [M, d], got {:?}", rows.dims())))?;
    if dim == 0 || capacity > 1 << 32 {
        return Err(Error::Invalid(format!(
            "{name} is [{capacity}, {dim}]: d must be positive and M at most 2^32"
        )));
    }
    Ok((capacity, dim))
}

/// P of fresh prototypes `[P, dim]` f32.
fn fresh_dims(fresh: &Tensor, dim: usize) -> Result<usize> {
    check_dtype(fresh, "fresh", DType::F32)?;
    match fresh.dims() {
        &[n_fresh, d] if d == dim => Ok(n_fresh),
        dims => Err(Error::Invalid(format!(
            "fresh must be [P, {dim}], got {dims:?}"
        ))),
    }
}

/// M of a `write_step` vector `[M]` u32.
fn write_steps_len(write_step: &Tensor) -> Result<usize> {
    check_dtype(write_step, "write_step", DType::U32)?;
    write_step.dims1().map_err(|_| {
        Error::Invalid(format!(
            "write_step must be [M], got {:?}",
            write_step.dims()
        ))
    })
}

/// The slot indices `[P]` u32 on the host, each below `capacity`, distinct if required.
fn host_slots(slots: &Tensor, name: &str, capacity: usize, distinct: Distinct) -> Result<Vec<u32>> {
    check_dtype(slots, name, DType::U32)?;
    let host = slots
        .to_vec1::<u32>()
        .map_err(|_| Error::Invalid(format!("{name} must be [P], got {:?}", slots.dims())))?;
    if let Some((i, slot)) = host
        .iter()
        .enumerate()
        .find(|&(_, &slot)| slot as usize >= capacity)
    {
        return Err(Error::Invalid(format!(
            "{name}[{i}] is slot {slot}, but the memory has {capacity} slots"
        )));
    }
    if distinct == Distinct::Required {
        let mut seen = HashSet::with_capacity(host.len());
        if let Some((i, slot)) = host.iter().enumerate().find(|&(_, s)| !seen.insert(*s)) {
            return Err(Error::Invalid(format!(
                "{name}[{i}] repeats slot {slot}: one write per slot"
            )));
        }
    }
    Ok(host)
}

fn check_dtype(tensor: &Tensor, name: &str, dtype: DType) -> Result<()> {
    if tensor.dtype() != dtype {
        return Err(Error::Invalid(format!(
            "{name} must be {dtype:?}, got {:?}",
            tensor.dtype()
        )));
    }
    Ok(())
}

fn same_count(a: usize, b: usize, name_a: &str, name_b: &str) -> Result<()> {
    if a != b {
        return Err(Error::Invalid(format!(
            "{name_a} has {a} entries but {name_b} has {b} rows"
        )));
    }
    Ok(())
}

fn step_u32(step: u64) -> Result<u32> {
    u32::try_from(step)
        .ok()
        .filter(|&s| s != EMPTY_STEP)
        .ok_or_else(|| {
            Error::Invalid(format!(
                "step {step} does not fit the u32 write steps (at most {})",
                EMPTY_STEP - 1
            ))
        })
}
