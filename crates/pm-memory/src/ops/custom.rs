//! The candle custom ops behind [`super`]'s functions: CPU forward passes (always built) and,
//! under the `cuda` feature, forwards that launch the kernels of `kernels/memory.cu`.
//!
//! Every op expects contiguous inputs of the dtypes its wrapper checked (f32 rows, u32 slots
//! and steps) and still checks each slot index on the CPU, so a direct misuse is an error, not
//! a panic.

use candle_core::{
    CpuStorage, CustomOp2, CustomOp3, InplaceOp2, InplaceOp3, Layout, Shape, Tensor,
};
use candle_core::{WithDType, bail};

use super::EMPTY_STEP;

/// `rows[slots[i], :] = fresh[i, :]`, in place on `rows` (`[M, d]`); srcs `slots` `[P]` u32,
/// `fresh` `[P, d]` f32.
pub(super) struct ScatterRows;

/// `[fresh; rows[slots]]`: args `fresh` `[P, d]` f32, `rows` `[M, d]` f32, `slots` `[C]` u32;
/// result `[P + C, d]`, gradient to `fresh` only.
pub(super) struct GatherWeights;

/// `write_step[slots[i]] = step`, in place on `write_step` (`[M]` u32); src `slots` `[P]` u32.
pub(super) struct TouchSlots {
    pub(super) step: u32,
}

/// `step - write_step[slots[i]]` (saturating at 0; [`EMPTY_STEP`] for an empty slot): args
/// `write_step` `[M]` u32, `slots` `[P]` u32; result `[P]` u32.
pub(super) struct Ages {
    pub(super) step: u32,
}

impl InplaceOp3 for ScatterRows {
    fn name(&self) -> &'static str {
        "pm-scatter-rows"
    }

    fn cpu_fwd(
        &self,
        rows: &mut CpuStorage,
        rows_l: &Layout,
        slots: &CpuStorage,
        slots_l: &Layout,
        fresh: &CpuStorage,
        fresh_l: &Layout,
    ) -> candle_core::Result<()> {
        let (capacity, dim) = rows_l.shape().dims2()?;
        let slots = cpu_slice::<u32>(slots, slots_l, self.name())?;
        let fresh = cpu_slice::<f32>(fresh, fresh_l, self.name())?;
        let rows = cpu_slice_mut_f32(rows, rows_l, self.name())?;
        if dim == 0 || fresh.len() != slots.len() * dim {
            bail!(
                "{}: {} slots for {} floats of fresh rows",
                self.name(),
                slots.len(),
                fresh.len()
            );
        }

        for (i, (&slot, row)) in slots.iter().zip(fresh.chunks_exact(dim)).enumerate() {
            let slot = checked_slot(slot, capacity, i, self.name())?;
            rows[slot * dim..(slot + 1) * dim].copy_from_slice(row);
        }
        Ok(())
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        rows: &mut candle_core::CudaStorage,
        rows_l: &Layout,
        slots: &candle_core::CudaStorage,
        slots_l: &Layout,
        fresh: &candle_core::CudaStorage,
        fresh_l: &Layout,
    ) -> candle_core::Result<()> {
        super::cuda::scatter_rows(rows, rows_l, slots, slots_l, fresh, fresh_l)
    }
}

impl CustomOp3 for GatherWeights {
    fn name(&self) -> &'static str {
        "pm-gather-weights"
    }

    fn cpu_fwd(
        &self,
        fresh: &CpuStorage,
        fresh_l: &Layout,
        rows: &CpuStorage,
        rows_l: &Layout,
        slots: &CpuStorage,
        slots_l: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let (n_fresh, dim) = fresh_l.shape().dims2()?;
        let (capacity, rows_dim) = rows_l.shape().dims2()?;
        if rows_dim != dim {
            bail!(
                "{}: fresh rows of {dim} floats, memory rows of {rows_dim}",
                self.name()
            );
        }
        let fresh = cpu_slice::<f32>(fresh, fresh_l, self.name())?;
        let rows = cpu_slice::<f32>(rows, rows_l, self.name())?;
        let slots = cpu_slice::<u32>(slots, slots_l, self.name())?;

        let mut out = Vec::with_capacity((n_fresh + slots.len()) * dim);
        out.extend_from_slice(fresh);
        for (i, &slot) in slots.iter().enumerate() {
            let slot = checked_slot(slot, capacity, i, self.name())?;
            out.extend_from_slice(&rows[slot * dim..(slot + 1) * dim]);
        }
        Ok((
            CpuStorage::F32(out),
            Shape::from((n_fresh + slots.len(), dim)),
        ))
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        fresh: &candle_core::CudaStorage,
        fresh_l: &Layout,
        rows: &candle_core::CudaStorage,
        rows_l: &Layout,
        slots: &candle_core::CudaStorage,
        slots_l: &Layout,
    ) -> candle_core::Result<(candle_core::CudaStorage, Shape)> {
        super::cuda::gather_weights(fresh, fresh_l, rows, rows_l, slots, slots_l)
    }

    /// The first P rows of the result are `fresh` itself, the rest are constants.
    fn bwd(
        &self,
        fresh: &Tensor,
        _rows: &Tensor,
        _slots: &Tensor,
        _res: &Tensor,
        grad_res: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let n_fresh = fresh.dim(0)?;
        Ok((Some(grad_res.narrow(0, 0, n_fresh)?), None, None))
    }
}

impl InplaceOp2 for TouchSlots {
    fn name(&self) -> &'static str {
        "pm-touch-slots"
    }

    fn cpu_fwd(
        &self,
        write_step: &mut CpuStorage,
        write_step_l: &Layout,
        slots: &CpuStorage,
        slots_l: &Layout,
    ) -> candle_core::Result<()> {
        let capacity = write_step_l.shape().dims1()?;
        let slots = cpu_slice::<u32>(slots, slots_l, self.name())?;
        let write_step = cpu_slice_mut_u32(write_step, write_step_l, self.name())?;
        for (i, &slot) in slots.iter().enumerate() {
            write_step[checked_slot(slot, capacity, i, self.name())?] = self.step;
        }
        Ok(())
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        write_step: &mut candle_core::CudaStorage,
        write_step_l: &Layout,
        slots: &candle_core::CudaStorage,
        slots_l: &Layout,
    ) -> candle_core::Result<()> {
        super::cuda::touch_slots(write_step, write_step_l, slots, slots_l, self.step)
    }
}

impl CustomOp2 for Ages {
    fn name(&self) -> &'static str {
        "pm-ages"
    }

    fn cpu_fwd(
        &self,
        write_step: &CpuStorage,
        write_step_l: &Layout,
        slots: &CpuStorage,
        slots_l: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let capacity = write_step_l.shape().dims1()?;
        let write_step = cpu_slice::<u32>(write_step, write_step_l, self.name())?;
        let slots = cpu_slice::<u32>(slots, slots_l, self.name())?;
        let ages = slots
            .iter()
            .enumerate()
            .map(|(i, &slot)| {
                let written = write_step[checked_slot(slot, capacity, i, self.name())?];
                Ok(age(written, self.step))
            })
            .collect::<candle_core::Result<Vec<u32>>>()?;
        let n = ages.len();
        Ok((CpuStorage::U32(ages), Shape::from(n)))
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        write_step: &candle_core::CudaStorage,
        write_step_l: &Layout,
        slots: &candle_core::CudaStorage,
        slots_l: &Layout,
    ) -> candle_core::Result<(candle_core::CudaStorage, Shape)> {
        super::cuda::ages(write_step, write_step_l, slots, slots_l, self.step)
    }
}

/// The age of a slot written at `written`, seen at `step` (the kernel's formula).
fn age(written: u32, step: u32) -> u32 {
    if written == EMPTY_STEP {
        EMPTY_STEP
    } else {
        step.saturating_sub(written)
    }
}

fn checked_slot(slot: u32, capacity: usize, i: usize, op: &str) -> candle_core::Result<usize> {
    let slot = slot as usize;
    if slot >= capacity {
        bail!("{op}: slots[{i}] is {slot}, but the memory has {capacity} slots");
    }
    Ok(slot)
}

/// The elements of a contiguous CPU tensor.
fn cpu_slice<'a, T: WithDType>(
    storage: &'a CpuStorage,
    layout: &Layout,
    op: &str,
) -> candle_core::Result<&'a [T]> {
    let Some((start, end)) = layout.contiguous_offsets() else {
        bail!("{op}: inputs must be contiguous");
    };
    Ok(&storage.as_slice::<T>()?[start..end])
}

fn cpu_slice_mut_f32<'a>(
    storage: &'a mut CpuStorage,
    layout: &Layout,
    op: &str,
) -> candle_core::Result<&'a mut [f32]> {
    let Some((start, end)) = layout.contiguous_offsets() else {
        bail!("{op}: the memory must be contiguous");
    };
    match storage {
        CpuStorage::F32(values) => Ok(&mut values[start..end]),
        _ => bail!("{op}: the memory rows must be f32"),
    }
}

fn cpu_slice_mut_u32<'a>(
    storage: &'a mut CpuStorage,
    layout: &Layout,
    op: &str,
) -> candle_core::Result<&'a mut [u32]> {
    let Some((start, end)) = layout.contiguous_offsets() else {
        bail!("{op}: write_step must be contiguous");
    };
    match storage {
        CpuStorage::U32(values) => Ok(&mut values[start..end]),
        _ => bail!("{op}: write_step must be u32"),
    }
}
