//! The fused margin cross-entropy head against the bare matrix product, at a training batch.
//!
//! Batch B = 256 unit embeddings of d = 512 against M unit rows (10^4, 10^5; 10^6 with
//! `PM_BENCH_LARGE=1`), CosFace s = 32, m = 0.35, targets in the first 64 rows (the batch's
//! fresh prototypes). Rows, each timed in the same run, best of a few interleaved rounds:
//! ```text
//! matmul        candle z[B,d] · wᵀ[d,M]                       the reference (ratio 1)
//! gemm          the same product with the gemm crate into a reused buffer (no allocation)
//! fused R=0     FusedMarginCe::forward_backward, rows_with_grad = 0
//! fused R=256   the same with grad_w for the first 256 rows
//! unfused       candle cosine_logits + MarginLoss + backward    grad to z only (M ≤ 10^5)
//! ```
//! The GFLOP/s column counts 2·B·d·M per product: one for the matmul, two for the fused rows
//! (logits, weighted sum of rows; plus 4·B·d·R for grad_w) and for the unfused head (logits,
//! the input gradient).
//!
//! The floor row is what no exact f32 forward+backward can beat: its two products at the
//! machine's fused multiply-add peak, measured first in the same run (independent AVX2 FMA
//! chains in registers on every rayon thread; x86-64 only).
//!
//! ```text
//! cargo bench -p pm-benches --bench fused_head
//! PM_BENCH_LARGE=1 PM_BENCH_SECONDS=3 PM_FUSED_TILE=256 PM_FUSED_BLOCK=128 cargo bench ...
//! ```

#![allow(clippy::print_stdout, reason = "a benchmark prints its table")]

use std::time::Duration;

use anyhow::Result;
use candle_core::{Device, Tensor, Var};
use pm_benches::time_per_call;
use pm_loss::{FusedConfig, FusedMarginCe, MarginConfig, MarginLoss, cosine_logits};
use rayon::prelude::*;

/// Batch rows.
const B: usize = 256;
/// Embedding dimension.
const D: usize = 512;
/// Interleaved timing rounds; each row reports its best round.
const ROUNDS: usize = 3;

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// `n` unit rows of `D` values from a hash of (seed, index), filled in parallel.
fn unit_rows(n: usize, seed: u64) -> Vec<f32> {
    let mut rows = vec![0f32; n * D];
    rows.par_chunks_mut(D).enumerate().for_each(|(r, row)| {
        for (k, v) in row.iter_mut().enumerate() {
            let mut x = seed ^ ((r * D + k) as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15);
            x = (x ^ (x >> 29)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            *v = ((x >> 40) as f32 / (1u64 << 24) as f32) - 0.5;
        }
        let norm = row.iter().map(|v| v * v).sum::<f32>().sqrt();
        row.iter_mut().for_each(|v| *v /= norm);
    });
    rows
}

/// `out[B, M] = z[B, D] · w[M, D]ᵀ` with the gemm crate (candle's CPU kernel) on all rayon
/// threads, without allocating: how fast the bare product can be, next to candle's matmul,
/// which also allocates and zero-fills its `[B, M]` output every call.
fn product_into(out: &mut [f32], z: &[f32], w: &[f32]) {
    let m = w.len() / D;
    assert!(z.len() == B * D && w.len() == m * D && out.len() == B * m);
    // SAFETY: the assertion bounds every access: `z` is read as B rows of D contiguous values,
    // `w` as m rows of D (the transposed view reads w[j·D + k]), and `out` is written as B
    // contiguous rows of m values; `out` is a unique borrow, disjoint from both inputs.
    unsafe {
        gemm::gemm(
            B,
            m,
            D,
            out.as_mut_ptr(),
            1,
            m as isize,
            false,
            z.as_ptr(),
            1,
            D as isize,
            w.as_ptr(),
            D as isize,
            1,
            0.0,
            1.0,
            false,
            false,
            false,
            gemm::Parallelism::Rayon(rayon::current_num_threads()),
        );
    }
    std::hint::black_box(out);
}

/// One row of the table: a name, the products it does (in B·d·M units) and a step to time.
struct Row<'a> {
    name: &'static str,
    products: f64,
    step: Box<dyn FnMut() + 'a>,
}

fn main() -> Result<()> {
    let large = std::env::var("PM_BENCH_LARGE").is_ok_and(|v| v == "1");
    let seconds: f64 = env_or("PM_BENCH_SECONDS", 2.0);
    let min_time = Duration::from_secs_f64(seconds / ROUNDS as f64);
    let config = FusedConfig {
        margin: MarginConfig::default(),
        tile_columns: env_or("PM_FUSED_TILE", FusedConfig::default().tile_columns),
        block_rows: env_or("PM_FUSED_BLOCK", FusedConfig::default().block_rows),
    };
    println!(
        "fused margin CE head: B = {B}, d = {D}, {} rayon threads, tile {} columns × {} rows, \
         best of {ROUNDS} rounds",
        rayon::current_num_threads(),
        config.tile_columns,
        config.block_rows
    );
    println!(
        "| {:>9} | {:<30} | {:>10} | {:>8} | {:>8} |",
        "M", "row", "ms / step", "GFLOP/s", "× matmul"
    );
    println!(
        "|{:->11}|{:->32}|{:->12}|{:->10}|{:->10}|",
        "", "", "", "", ""
    );

    let peak = fma_peak_gflops();
    let mut sizes = vec![10_000, 100_000];
    if large {
        sizes.push(1_000_000);
    }
    for m in sizes {
        measure(m, &config, min_time, peak)?;
    }
    match peak {
        Some(peak) => println!("FMA peak of this machine: {peak:.1} GFLOP/s"),
        None => println!("FMA peak not measured (needs x86-64 with AVX2 and FMA)"),
    }
    Ok(())
}

/// The multiply-add throughput of all rayon threads together, in GFLOP/s: best of three short
/// runs of 12 independent 8-lane FMA chains per thread (enough to cover the FMA latency).
fn fma_peak_gflops() -> Option<f64> {
    #[cfg(target_arch = "x86_64")]
    if is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma") {
        const ITERS: u64 = 20_000_000;
        let per_thread = ITERS as f64 * 12.0 * 8.0 * 2.0;
        let best = (0..3)
            .map(|_| {
                let start = std::time::Instant::now();
                // SAFETY: the CPU supports AVX2 and FMA, checked just above.
                let sums = rayon::broadcast(|_| unsafe { fma_chains(ITERS) });
                std::hint::black_box(sums);
                start.elapsed().as_secs_f64()
            })
            .fold(f64::INFINITY, f64::min);
        return Some(rayon::current_num_threads() as f64 * per_thread / best / 1e9);
    }
    None
}

/// `iters` rounds of 12 independent 8-wide `x ← x·a + b`; returns a sum so nothing is elided.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
fn fma_chains(iters: u64) -> f32 {
    use std::arch::x86_64::{_mm256_add_ps, _mm256_fmadd_ps, _mm256_set1_ps, _mm256_storeu_ps};
    let (a, b) = (_mm256_set1_ps(0.999_999), _mm256_set1_ps(1e-7));
    let mut chains = [_mm256_set1_ps(0.0); 12];
    for _ in 0..iters {
        for x in &mut chains {
            *x = _mm256_fmadd_ps(*x, a, b);
        }
    }
    let sum = chains
        .iter()
        .fold(_mm256_set1_ps(0.0), |s, &x| _mm256_add_ps(s, x));
    let mut lanes = [0f32; 8];
    // SAFETY: `lanes` holds the 8 floats the unaligned store writes.
    unsafe { _mm256_storeu_ps(lanes.as_mut_ptr(), sum) };
    lanes.iter().sum()
}

/// Times every row at `m` weight rows and prints them.
fn measure(m: usize, config: &FusedConfig, min_time: Duration, peak: Option<f64>) -> Result<()> {
    let device = Device::Cpu;
    let z = unit_rows(B, 1);
    let w = unit_rows(m, 2);
    let targets: Vec<u32> = (0..B as u32).map(|i| i / 4).collect();
    let z_t = Tensor::from_slice(&z, (B, D), &device)?;
    let w_t = Tensor::from_slice(&w, (m, D), &device)?;
    let fused = FusedMarginCe::new(config.clone())?;
    let margin = MarginLoss::new(config.margin.clone())?;
    let grad_rows = 256;

    let (z_ref, w_ref) = (z_t.clone(), w_t.clone());
    let (z_rows, w_rows) = (&z, &w);
    let mut rows = vec![Row {
        name: "candle matmul z·wᵀ (reference)",
        products: 1.0,
        step: Box::new(move || {
            let cosines = z_ref.matmul(&w_ref.t().expect("2-d")).expect("[B,d]·[d,M]");
            std::hint::black_box(cosines);
        }),
    }];
    let mut out = vec![0f32; B * m];
    rows.push(Row {
        name: "gemm z·wᵀ into a reused buffer",
        products: 1.0,
        step: Box::new(move || product_into(&mut out, z_rows, w_rows)),
    });
    for (name, r) in [
        ("fused fwd+bwd, R = 0", 0),
        ("fused fwd+bwd, R = 256", grad_rows),
    ] {
        let (z, w, targets, fused) = (&z, &w, targets.clone(), &fused);
        rows.push(Row {
            name,
            products: 2.0 + 2.0 * r as f64 / m as f64,
            step: Box::new(move || {
                let out = fused.forward_backward(z, w, D, &targets, r);
                std::hint::black_box(out.expect("valid shapes"));
            }),
        });
    }

    // Last in each round: it allocates and frees gigabytes, which would slow the next row.
    // At 10^6 rows it needs about 17 GB for its forward alone.
    if m <= 100_000 {
        let z_var = Var::from_tensor(&z_t)?;
        let targets = targets.clone();
        rows.push(Row {
            name: "unfused candle head fwd+bwd",
            products: 2.0,
            step: Box::new(move || {
                let cosines = cosine_logits(z_var.as_tensor(), &w_t).expect("[B,d]·[d,M]");
                let loss = margin.forward(&cosines, &targets).expect("targets < M");
                std::hint::black_box(loss.backward().expect("differentiable"));
            }),
        });
    }
    let mut best = vec![Duration::MAX; rows.len()];
    for _ in 0..ROUNDS {
        for (row, best) in rows.iter_mut().zip(&mut best) {
            *best = (*best).min(time_per_call(min_time, &mut row.step));
        }
    }
    let flops = 2.0 * (B * D * m) as f64;
    for (row, time) in rows.iter().zip(&best) {
        println!(
            "| {m:>9} | {:<30} | {:>10.1} | {:>8.1} | {:>8.2} |",
            row.name,
            time.as_secs_f64() * 1e3,
            row.products * flops / time.as_secs_f64() / 1e9,
            time.as_secs_f64() / best[0].as_secs_f64()
        );
    }
    if let Some(peak) = peak {
        let floor = 2.0 * flops / (peak * 1e9);
        println!(
            "| {m:>9} | {:<30} | {:>10.1} | {:>8.1} | {:>8.2} |",
            "floor: 2 products at FMA peak",
            floor * 1e3,
            peak,
            floor / best[0].as_secs_f64()
        );
    }
    Ok(())
}
