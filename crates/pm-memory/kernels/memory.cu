// Device-side operations of the prototype memory (see crates/pm-memory/src/ops.rs and
// docs/memory-ops.md). Compiled to PTX by build.rs only under the `cuda` feature, loaded at run
// time through candle's `get_or_load_custom_func`.
//
// Layout: `rows` is a row-major [n_rows, dim] f32 matrix, `write_step` a [n_rows] u32 vector
// whose value 0xFFFFFFFF marks an empty slot, `slots` a [n_slots] u32 vector of slot indices.
// The host validates every slot index before a launch; an index out of range is still skipped
// here (scatter, touch), or yields NaN (gather) and the empty sentinel (ages), never a wild
// access.
//
// Every kernel is a grid-stride loop over a 64-bit element count, so any grid size is correct.

#include <stdint.h>

#define PM_EMPTY_STEP 0xFFFFFFFFu

// rows[slots[i], :] = fresh[i, :] for i < n_slots. `rows` is written in place.
extern "C" __global__ void pm_scatter_rows_f32(
    const uint32_t *slots,
    const float *fresh,
    float *rows,
    uint64_t n_slots,
    uint64_t dim,
    uint64_t n_rows
) {
    const uint64_t total = n_slots * dim;
    const uint64_t stride = (uint64_t)blockDim.x * gridDim.x;
    for (uint64_t idx = (uint64_t)blockIdx.x * blockDim.x + threadIdx.x; idx < total;
         idx += stride) {
        const uint64_t i = idx / dim;
        const uint64_t j = idx - i * dim;
        const uint64_t slot = slots[i];
        if (slot < n_rows) {
            rows[slot * dim + j] = fresh[idx];
        }
    }
}

// out = [fresh; rows[slots, :]]: out[r, :] = fresh[r, :] for r < n_fresh, then
// out[n_fresh + c, :] = rows[slots[c], :] for c < n_other.
extern "C" __global__ void pm_gather_weights_f32(
    const float *fresh,
    const float *rows,
    const uint32_t *slots,
    float *out,
    uint64_t n_fresh,
    uint64_t n_other,
    uint64_t dim,
    uint64_t n_rows
) {
    const uint64_t fresh_total = n_fresh * dim;
    const uint64_t total = (n_fresh + n_other) * dim;
    const uint64_t stride = (uint64_t)blockDim.x * gridDim.x;
    for (uint64_t idx = (uint64_t)blockIdx.x * blockDim.x + threadIdx.x; idx < total;
         idx += stride) {
        if (idx < fresh_total) {
            out[idx] = fresh[idx];
            continue;
        }
        const uint64_t c = (idx - fresh_total) / dim;
        const uint64_t j = (idx - fresh_total) - c * dim;
        const uint64_t slot = slots[c];
        out[idx] = slot < n_rows ? rows[slot * dim + j] : __int_as_float(0x7fc00000);
    }
}

// write_step[slots[i]] = step for i < n_slots. `write_step` is written in place.
extern "C" __global__ void pm_touch_slots_u32(
    const uint32_t *slots,
    uint32_t *write_step,
    uint64_t n_slots,
    uint64_t n_rows,
    uint32_t step
) {
    const uint64_t stride = (uint64_t)blockDim.x * gridDim.x;
    for (uint64_t i = (uint64_t)blockIdx.x * blockDim.x + threadIdx.x; i < n_slots; i += stride) {
        const uint64_t slot = slots[i];
        if (slot < n_rows) {
            write_step[slot] = step;
        }
    }
}

// out[i] = step - write_step[slots[i]] (0 when the write is later than `step`), or the empty
// sentinel for an empty slot.
extern "C" __global__ void pm_ages_u32(
    const uint32_t *write_step,
    const uint32_t *slots,
    uint32_t *out,
    uint64_t n_slots,
    uint64_t n_rows,
    uint32_t step
) {
    const uint64_t stride = (uint64_t)blockDim.x * gridDim.x;
    for (uint64_t i = (uint64_t)blockIdx.x * blockDim.x + threadIdx.x; i < n_slots; i += stride) {
        const uint64_t slot = slots[i];
        const uint32_t written = slot < n_rows ? write_step[slot] : PM_EMPTY_STEP;
        if (written == PM_EMPTY_STEP) {
            out[i] = PM_EMPTY_STEP;
        } else {
            out[i] = step >= written ? step - written : 0u;
        }
    }
}
