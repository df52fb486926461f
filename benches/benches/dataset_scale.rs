//! Dataset scale: pack synthetic sets of 10^3 .. 10^6 identities (small images), then open
//! each in a fresh process and measure the index build time and the resident memory of the
//! dataset index plus the sampler. Anonymous memory (the heap) must grow with identities only;
//! records stay in the mapped files (file-backed memory, paged in on demand).
//!
//! ```text
//! cargo bench -p pm-benches --bench dataset_scale                  # up to 10^6 identities
//! PM_SCALE_MAX=100000 PM_SCALE_SIZE=8 cargo bench -p pm-benches --bench dataset_scale
//! ```

#![allow(clippy::print_stdout, reason = "a benchmark prints its table")]

use std::path::Path;
use std::process::Command;
use std::time::Instant;

use anyhow::{Context, Result, bail};
use pm_benches::{pack_synthetic, resident_kib};
use pm_data::{Dataset, PkSampler, SamplerConfig, Storage, identity_counts};

/// Environment variable through which the bench calls itself to measure one dataset.
const CHILD: &str = "PM_SCALE_CHILD";

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn main() -> Result<()> {
    if let Ok(dir) = std::env::var(CHILD) {
        return measure(Path::new(&dir));
    }
    let max: u64 = env_or("PM_SCALE_MAX", 1_000_000);
    let size: u32 = env_or("PM_SCALE_SIZE", 8);
    let root = tempfile::tempdir()?;
    println!(
        "dataset scale: synthetic identities of {size}×{size} raw images, shards of 10^5 images"
    );
    println!(
        "| {:>10} | {:>7} | {:>10} | {:>6} | {:>8} | {:>10} | {:>11} | {:>10} | {:>9} |",
        "identities",
        "img/id",
        "images",
        "shards",
        "pack s",
        "open+index",
        "sampler",
        "heap MiB",
        "heap B/id"
    );
    println!(
        "|{:->12}|{:->9}|{:->12}|{:->8}|{:->10}|{:->12}|{:->13}|{:->12}|{:->11}|",
        "", "", "", "", "", "", "", "", ""
    );
    let mut cases: Vec<(u64, usize)> = [1_000u64, 10_000, 100_000, 1_000_000]
        .into_iter()
        .filter(|&n| n <= max)
        .map(|n| (n, 2))
        .collect();
    if max >= 100_000 {
        cases.insert(cases.len().min(3), (100_000, 8));
    }
    for (identities, per_identity) in cases {
        let dir = root.path().join(format!("{identities}x{per_identity}"));
        let start = Instant::now();
        pack(&dir, identities, per_identity, size)?;
        let pack_s = start.elapsed().as_secs_f64();
        let output = Command::new(std::env::current_exe()?)
            .env(CHILD, &dir)
            .output()
            .context("measuring in a child process")?;
        if !output.status.success() {
            bail!("child failed: {}", String::from_utf8_lossy(&output.stderr));
        }
        let line = String::from_utf8_lossy(&output.stdout);
        let fields: Vec<f64> = line
            .split_whitespace()
            .filter_map(|f| f.parse().ok())
            .collect();
        let [open_s, sampler_s, heap_kib, shards] = fields[..] else {
            bail!("unexpected child output: {line}");
        };
        println!(
            "| {identities:>10} | {per_identity:>7} | {:>10} | {shards:>6} | {pack_s:>8.1} | \
             {:>8.3} s | {:>9.3} s | {:>10.1} | {:>9.0} |",
            identities * per_identity as u64,
            open_s,
            sampler_s,
            heap_kib / 1024.0,
            heap_kib * 1024.0 / identities as f64
        );
        std::fs::remove_dir_all(&dir)?;
    }
    Ok(())
}

fn pack(dir: &Path, identities: u64, per_identity: usize, size: u32) -> Result<()> {
    pack_synthetic(dir, (identities, per_identity, size), 100_000, Storage::Raw)?;
    Ok(())
}

/// In the child: open the dataset, build the sampler, print
/// `open_seconds sampler_seconds heap_kib_growth shards`.
fn measure(dir: &Path) -> Result<()> {
    let (heap_before, _) = resident_kib().unwrap_or((0, 0));
    let start = Instant::now();
    let dataset = Dataset::open(dir)?;
    let open_s = start.elapsed().as_secs_f64();
    let start = Instant::now();
    let config = SamplerConfig {
        identities_per_batch: 64,
        images_per_identity: 2,
        ..SamplerConfig::default()
    };
    let mut sampler = PkSampler::new(config, identity_counts(&dataset)?)?;
    std::hint::black_box(sampler.next_batch());
    let sampler_s = start.elapsed().as_secs_f64();
    let (heap_after, _) = resident_kib().unwrap_or((0, 0));
    println!(
        "{open_s} {sampler_s} {} {}",
        heap_after.saturating_sub(heap_before),
        dataset.shards().len()
    );
    std::hint::black_box((&dataset, &sampler));
    Ok(())
}
