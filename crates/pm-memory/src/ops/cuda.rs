//! CUDA forwards of the memory ops (`cuda` feature): each launches one kernel of
//! `kernels/memory.cu`, whose PTX build.rs wrote into `OUT_DIR` and candle loads once per
//! device (`get_or_load_custom_func`).
//!
//! Slot indices were validated on the host by the public functions; the kernels still skip an
//! index out of range instead of touching memory outside the tensors.

use candle_core::cuda_backend::WrapErr;
use candle_core::cuda_backend::cudarc::driver::{LaunchConfig, PushKernelArg};
use candle_core::{CudaStorage, Layout, Result, Shape, bail};

const PTX: &str = include_str!(concat!(env!("OUT_DIR"), "/memory.ptx"));
const MODULE: &str = "pm_memory_ops";
const BLOCK: u32 = 256;
/// Enough blocks to fill any current GPU; the kernels' grid-stride loops cover the rest.
const MAX_BLOCKS: u64 = 1 << 16;

/// One thread per element up to [`MAX_BLOCKS`] blocks.
fn launch_config(n: usize) -> LaunchConfig {
    let blocks = (n as u64).div_ceil(u64::from(BLOCK)).clamp(1, MAX_BLOCKS) as u32;
    LaunchConfig {
        grid_dim: (blocks, 1, 1),
        block_dim: (BLOCK, 1, 1),
        shared_mem_bytes: 0,
    }
}

fn offsets(layout: &Layout, what: &str) -> Result<(usize, usize)> {
    match layout.contiguous_offsets() {
        Some(range) => Ok(range),
        None => bail!("pm-memory ops: {what} must be contiguous"),
    }
}

/// `pm_scatter_rows_f32`: `rows[slots[i], :] = fresh[i, :]` in place.
pub(super) fn scatter_rows(
    rows: &mut CudaStorage,
    rows_l: &Layout,
    slots: &CudaStorage,
    slots_l: &Layout,
    fresh: &CudaStorage,
    fresh_l: &Layout,
) -> Result<()> {
    let (capacity, dim) = rows_l.shape().dims2()?;
    let n_slots = slots_l.shape().dims1()?;
    if n_slots == 0 || dim == 0 {
        return Ok(());
    }
    let device = rows.device.clone();
    let func = device.get_or_load_custom_func("pm_scatter_rows_f32", MODULE, PTX)?;

    let (s0, s1) = offsets(slots_l, "slots")?;
    let (f0, f1) = offsets(fresh_l, "fresh")?;
    let (r0, r1) = offsets(rows_l, "rows")?;
    let slots = slots.as_cuda_slice::<u32>()?.slice(s0..s1);
    let fresh = fresh.as_cuda_slice::<f32>()?.slice(f0..f1);
    let mut rows = rows.as_cuda_slice_mut::<f32>()?.slice_mut(r0..r1);
    let (n_slots_arg, dim_arg, capacity_arg) = (n_slots as u64, dim as u64, capacity as u64);

    let mut builder = func.builder();
    builder.arg(&slots);
    builder.arg(&fresh);
    builder.arg(&mut rows);
    builder.arg(&n_slots_arg);
    builder.arg(&dim_arg);
    builder.arg(&capacity_arg);
    // SAFETY: the arguments match `pm_scatter_rows_f32`'s parameters in type and order; the
    // kernel reads `n_slots` slots and `n_slots * dim` fresh floats, the lengths of those views,
    // and writes only rows `< capacity` of the `capacity * dim` view.
    unsafe { builder.launch(launch_config(n_slots * dim)) }.w()?;
    Ok(())
}

/// `pm_gather_weights_f32`: `[fresh; rows[slots]]` into a new `[P + C, d]` tensor.
pub(super) fn gather_weights(
    fresh: &CudaStorage,
    fresh_l: &Layout,
    rows: &CudaStorage,
    rows_l: &Layout,
    slots: &CudaStorage,
    slots_l: &Layout,
) -> Result<(CudaStorage, Shape)> {
    let (n_fresh, dim) = fresh_l.shape().dims2()?;
    let (capacity, _) = rows_l.shape().dims2()?;
    let n_other = slots_l.shape().dims1()?;
    let total = (n_fresh + n_other) * dim;
    if total == 0 {
        bail!("pm-gather-weights: an empty result is not launched");
    }
    let device = fresh.device.clone();
    let func = device.get_or_load_custom_func("pm_gather_weights_f32", MODULE, PTX)?;

    let (f0, f1) = offsets(fresh_l, "fresh")?;
    let (r0, r1) = offsets(rows_l, "rows")?;
    let (s0, s1) = offsets(slots_l, "slots")?;
    let fresh = fresh.as_cuda_slice::<f32>()?.slice(f0..f1);
    let rows = rows.as_cuda_slice::<f32>()?.slice(r0..r1);
    let slots = slots.as_cuda_slice::<u32>()?.slice(s0..s1);
    // SAFETY: the kernel writes every one of the `total` elements before anything reads them.
    let mut out = unsafe { device.alloc::<f32>(total)? };
    let args = [n_fresh, n_other, dim, capacity].map(|n| n as u64);

    let mut builder = func.builder();
    builder.arg(&fresh);
    builder.arg(&rows);
    builder.arg(&slots);
    builder.arg(&mut out);
    for arg in &args {
        builder.arg(arg);
    }
    // SAFETY: the arguments match `pm_gather_weights_f32`'s parameters in type and order; the
    // kernel reads `n_fresh * dim` fresh floats, `n_other` slots and rows `< capacity`, and
    // writes the `total` floats of `out`.
    unsafe { builder.launch(launch_config(total)) }.w()?;

    let out = CudaStorage::wrap_cuda_slice(out, device);
    Ok((out, Shape::from((n_fresh + n_other, dim))))
}

/// `pm_touch_slots_u32`: `write_step[slots[i]] = step` in place.
pub(super) fn touch_slots(
    write_step: &mut CudaStorage,
    write_step_l: &Layout,
    slots: &CudaStorage,
    slots_l: &Layout,
    step: u32,
) -> Result<()> {
    let capacity = write_step_l.shape().dims1()?;
    let n_slots = slots_l.shape().dims1()?;
    if n_slots == 0 {
        return Ok(());
    }
    let device = write_step.device.clone();
    let func = device.get_or_load_custom_func("pm_touch_slots_u32", MODULE, PTX)?;

    let (s0, s1) = offsets(slots_l, "slots")?;
    let (w0, w1) = offsets(write_step_l, "write_step")?;
    let slots = slots.as_cuda_slice::<u32>()?.slice(s0..s1);
    let mut write_step = write_step.as_cuda_slice_mut::<u32>()?.slice_mut(w0..w1);
    let (n_slots_arg, capacity_arg) = (n_slots as u64, capacity as u64);

    let mut builder = func.builder();
    builder.arg(&slots);
    builder.arg(&mut write_step);
    builder.arg(&n_slots_arg);
    builder.arg(&capacity_arg);
    builder.arg(&step);
    // SAFETY: the arguments match `pm_touch_slots_u32`'s parameters in type and order; the
    // kernel reads `n_slots` slots and writes only entries `< capacity` of `write_step`.
    unsafe { builder.launch(launch_config(n_slots)) }.w()?;
    Ok(())
}

/// `pm_ages_u32`: the ages of `slots` at `step` into a new `[P]` tensor.
pub(super) fn ages(
    write_step: &CudaStorage,
    write_step_l: &Layout,
    slots: &CudaStorage,
    slots_l: &Layout,
    step: u32,
) -> Result<(CudaStorage, Shape)> {
    let capacity = write_step_l.shape().dims1()?;
    let n_slots = slots_l.shape().dims1()?;
    if n_slots == 0 {
        bail!("pm-ages: an empty result is not launched");
    }
    let device = write_step.device.clone();
    let func = device.get_or_load_custom_func("pm_ages_u32", MODULE, PTX)?;

    let (w0, w1) = offsets(write_step_l, "write_step")?;
    let (s0, s1) = offsets(slots_l, "slots")?;
    let write_step = write_step.as_cuda_slice::<u32>()?.slice(w0..w1);
    let slots = slots.as_cuda_slice::<u32>()?.slice(s0..s1);
    // SAFETY: the kernel writes each of the `n_slots` elements before anything reads them.
    let mut out = unsafe { device.alloc::<u32>(n_slots)? };
    let (n_slots_arg, capacity_arg) = (n_slots as u64, capacity as u64);

    let mut builder = func.builder();
    builder.arg(&write_step);
    builder.arg(&slots);
    builder.arg(&mut out);
    builder.arg(&n_slots_arg);
    builder.arg(&capacity_arg);
    builder.arg(&step);
    // SAFETY: the arguments match `pm_ages_u32`'s parameters in type and order; the kernel reads
    // `n_slots` slots and entries `< capacity` of `write_step`, and writes `n_slots` ages.
    unsafe { builder.launch(launch_config(n_slots)) }.w()?;

    Ok((
        CudaStorage::wrap_cuda_slice(out, device),
        Shape::from(n_slots),
    ))
}
