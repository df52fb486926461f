//! Data pipeline throughput: images/s for read + decode + augment (flip, CHW f32) from shards
//! with raw and with encoded storage, against two limits measured in the same run — a plain
//! memory copy of the same raw bytes, and a single-thread decode loop of the same JPEGs — at
//! 1 and 2 threads; then whether the bounded prefetcher hides decoding behind a simulated
//! training step.
//!
//! ```text
//! cargo bench -p pm-benches --bench data_pipeline
//! PM_BENCH_IDENTITIES=512 PM_BENCH_SIZE=112 PM_BENCH_SECONDS=2 cargo bench ...
//! ```

#![allow(clippy::print_stdout, reason = "a benchmark prints its table")]

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use pm_benches::{pack_synthetic, per_second, time_per_call};
use pm_data::{Dataset, PkSampler, Prefetcher, SamplerConfig, Storage, assemble, identity_counts};

/// Identities per batch and images per identity of the pipeline rows.
const P: usize = 32;
const K: usize = 4;

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn main() -> Result<()> {
    let identities: u64 = env_or("PM_BENCH_IDENTITIES", 256);
    let size: u32 = env_or("PM_BENCH_SIZE", 112);
    let seconds: f64 = env_or("PM_BENCH_SECONDS", 1.0);
    let min_time = Duration::from_secs_f64(seconds);
    let dir = tempfile::tempdir()?;

    let raw = pack(dir.path(), "raw", Storage::Raw, identities, size)?;
    let encoded = pack(dir.path(), "encoded", Storage::Encoded, identities, size)?;
    let n_images = raw.n_images() as usize;
    println!(
        "data pipeline: {identities} synthetic identities × {K} images of {size}×{size}, \
         batches of {P}×{K}; {} threads available",
        std::thread::available_parallelism().map_or(1, |n| n.get())
    );
    let raw_bytes: u64 = raw.shards().iter().map(|s| s.data_len()).sum();
    let jpeg_bytes: u64 = encoded.shards().iter().map(|s| s.data_len()).sum();
    println!(
        "storage: raw {:.1} MiB, encoded {:.1} MiB ({:.1}× smaller)\n",
        raw_bytes as f64 / 1048576.0,
        jpeg_bytes as f64 / 1048576.0,
        raw_bytes as f64 / jpeg_bytes.max(1) as f64
    );

    let memcpy = time_per_call(min_time, || copy_all(&raw));
    let decode = time_per_call(min_time, || decode_all(&encoded));
    let mut rows = vec![
        (
            "memory copy of the raw bytes (1 thread)",
            1,
            memcpy,
            n_images,
        ),
        ("JPEG decode loop (1 thread, no shard)", 1, decode, n_images),
    ];
    for threads in [1, 2] {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()?;
        for (name, dataset) in [("raw", &raw), ("encoded", &encoded)] {
            let mut sampler = sampler(dataset)?;
            let batch = P * K;
            let time = pool.install(|| {
                time_per_call(min_time, || {
                    let picks = sampler.next_batch();
                    let batch = assemble(dataset, &picks, K).expect("readable synthetic shards");
                    std::hint::black_box(batch);
                })
            });
            let label = match name {
                "raw" => "pipeline, raw shards: read + flip + CHW f32",
                _ => "pipeline, encoded shards: read + decode + flip + CHW f32",
            };
            rows.push((label, threads, time, batch));
        }
    }
    print_table(&rows, memcpy, decode, n_images);

    let raw = Arc::new(raw);
    let encoded = Arc::new(encoded);
    println!();
    prefetch_rows(&raw, &encoded)?;
    Ok(())
}

fn pack(
    root: &std::path::Path,
    name: &str,
    storage: Storage,
    n: u64,
    size: u32,
) -> Result<Dataset> {
    let out = root.join(name);
    pack_synthetic(&out, (n, K, size), 4096, storage).context("packing the synthetic set")?;
    Ok(Dataset::open(&out)?)
}

fn sampler(dataset: &Dataset) -> Result<PkSampler> {
    let config = SamplerConfig {
        identities_per_batch: P,
        images_per_identity: K,
        seed: 1,
        ..SamplerConfig::default()
    };
    Ok(PkSampler::new(config, identity_counts(dataset)?)?)
}

/// Copies every raw record into one reused buffer (the bandwidth limit).
fn copy_all(dataset: &Dataset) {
    let mut buffer = Vec::new();
    for shard in dataset.shards() {
        for record in 0..shard.len() {
            let bytes = shard.record(record).expect("checked record");
            buffer.clear();
            buffer.extend_from_slice(bytes);
            std::hint::black_box(&buffer);
        }
    }
}

/// Decodes every JPEG of the encoded shards on one thread, without checksums or conversion.
fn decode_all(dataset: &Dataset) {
    for shard in dataset.shards() {
        for record in 0..shard.len() {
            let bytes = shard.record(record).expect("checked record");
            let img = image::load_from_memory(bytes).expect("a valid JPEG");
            std::hint::black_box(img.to_rgb8());
        }
    }
}

fn print_table(
    rows: &[(&str, usize, Duration, usize)],
    memcpy: Duration,
    decode: Duration,
    n_images: usize,
) {
    let memcpy_rate = n_images as f64 / memcpy.as_secs_f64();
    let decode_rate = n_images as f64 / decode.as_secs_f64();
    println!(
        "| {:<58} | {:>7} | {:>12} | {:>10} | {:>10} |",
        "what", "threads", "images/s", "vs memcpy", "vs decode"
    );
    println!(
        "|{:-<60}|{:->9}|{:->14}|{:->12}|{:->12}|",
        "", "", "", "", ""
    );
    for &(name, threads, time, images) in rows {
        let rate = images as f64 / time.as_secs_f64();
        println!(
            "| {name:<58} | {threads:>7} | {:>12} | {:>9.3}× | {:>9.2}× |",
            per_second(images as f64, time),
            rate / memcpy_rate,
            rate / decode_rate
        );
    }
}

/// Runs the prefetcher against a simulated training step of a fixed duration and reports how
/// long the consumer waited for data: near zero whenever the step is longer than a batch's
/// decode time.
fn prefetch_rows(raw: &Arc<Dataset>, encoded: &Arc<Dataset>) -> Result<()> {
    println!(
        "| {:<10} | {:>14} | {:>9} | {:>16} | {:>14} |",
        "storage", "step (busy ms)", "batches", "waited for data", "of the run"
    );
    println!(
        "|{:-<12}|{:->16}|{:->11}|{:->18}|{:->16}|",
        "", "", "", "", ""
    );
    for (name, dataset) in [("raw", raw), ("encoded", encoded)] {
        for step_ms in [0u64, 50] {
            let batches = 40;
            let prefetcher = Prefetcher::start(Arc::clone(dataset), sampler(dataset)?, 4);
            prefetcher.next_batch()?; // the first batch is always a wait
            let (mut waited, start) = (Duration::ZERO, Instant::now());
            for _ in 0..batches {
                let t = Instant::now();
                std::hint::black_box(prefetcher.next_batch()?);
                waited += t.elapsed();
                spin(Duration::from_millis(step_ms));
            }
            let total = start.elapsed();
            println!(
                "| {name:<10} | {step_ms:>14} | {batches:>9} | {:>13.1} ms | {:>13.1}% |",
                waited.as_secs_f64() * 1e3,
                100.0 * waited.as_secs_f64() / total.as_secs_f64()
            );
        }
    }
    Ok(())
}

/// Busy-waits (a training step occupies a core; sleeping would free it).
fn spin(duration: Duration) {
    let start = Instant::now();
    while start.elapsed() < duration {
        std::hint::spin_loop();
    }
}
