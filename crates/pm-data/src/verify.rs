//! Whole-dataset verification behind `pm inspect` and `cargo xtask verify`: every record's
//! checksum, optionally a test decode of every encoded image, and per-shard statistics.
//!
//! Opening the dataset already checks headers, index checksums, identity tables and labels
//! (see [`Dataset::open`]); this pass reads every record once, shards in parallel.

use std::fmt;
use std::path::{Path, PathBuf};

use rayon::prelude::*;
use serde::Serialize;

use crate::dataset::Dataset;
use crate::error::{Error, Result};
use crate::loader::rgb_record;
use crate::shard::{Shard, Storage};

/// Failures listed per shard; the counts keep going past it.
const MAX_LISTED: usize = 20;

/// What verification found in one shard.
#[derive(Clone, Debug, Serialize)]
pub struct ShardStats {
    /// Shard file name.
    pub name: String,
    /// How its images are stored.
    pub storage: Storage,
    /// Records.
    pub records: u64,
    /// Identities.
    pub identities: u32,
    /// Fewest, mean and most images of an identity.
    pub images_per_identity: (u32, f64, u32),
    /// Bytes of the data section.
    pub data_bytes: u64,
    /// Records whose checksum does not match.
    pub checksum_failures: u64,
    /// Encoded records that do not decode to the dataset's size (only with decoding on).
    pub decode_failures: u64,
    /// The first failures, each naming its record.
    pub failures: Vec<String>,
}

/// What verification found in a dataset.
#[derive(Clone, Debug, Serialize)]
pub struct VerifyReport {
    /// The dataset folder.
    pub root: PathBuf,
    /// Identities (labels).
    pub identities: usize,
    /// Records.
    pub images: u64,
    /// Image size, (height, width).
    pub image_size: (u32, u32),
    /// Whether encoded images were test-decoded.
    pub decoded: bool,
    /// One entry per shard, in manifest order.
    pub shards: Vec<ShardStats>,
    /// Shard files in the folder that the manifest does not list (left by an interrupted
    /// append; safe to delete).
    pub unlisted_files: Vec<String>,
}

impl VerifyReport {
    /// True when no record failed.
    pub fn is_clean(&self) -> bool {
        self.shards
            .iter()
            .all(|s| s.checksum_failures == 0 && s.decode_failures == 0)
    }
}

/// Opens the dataset at `dir` (all structural checks), then reads every record, checking its
/// checksum and, with `decode`, that every encoded image decodes to the dataset's size.
///
/// Failing records are counted and named in the report, not returned as errors: the report
/// says how much of the dataset is usable.
///
/// # Errors
/// The errors of [`Dataset::open`] (a dataset that cannot be opened at all), and
/// [`Error::Io`] if the folder cannot be listed.
pub fn verify_dataset(dir: &Path, decode: bool) -> Result<VerifyReport> {
    let dataset = Dataset::open(dir)?;
    let manifest = dataset.manifest();
    let shards: Vec<ShardStats> = (0u32..)
        .zip(dataset.shards())
        .zip(&manifest.shards)
        .collect::<Vec<_>>()
        .into_par_iter()
        .map(|((index, shard), name)| shard_stats(&dataset, index, shard, name, decode))
        .collect();
    Ok(VerifyReport {
        root: dir.to_path_buf(),
        identities: dataset.n_identities(),
        images: dataset.n_images(),
        image_size: dataset.image_size(),
        decoded: decode,
        shards,
        unlisted_files: unlisted_files(dir, &manifest.shards)?,
    })
}

fn shard_stats(
    dataset: &Dataset,
    index: u32,
    shard: &Shard,
    name: &str,
    decode: bool,
) -> ShardStats {
    let counts: Vec<u32> = shard.identities().map(|(_, _, count)| count).collect();
    let min = counts.iter().copied().min().unwrap_or(0);
    let max = counts.iter().copied().max().unwrap_or(0);
    let mean = match counts.len() {
        0 => 0.0,
        n => shard.len() as f64 / n as f64,
    };
    let mut stats = ShardStats {
        name: name.to_owned(),
        storage: shard.storage(),
        records: shard.len(),
        identities: shard.n_identities(),
        images_per_identity: (min, mean, max),
        data_bytes: shard.data_len(),
        checksum_failures: 0,
        decode_failures: 0,
        failures: Vec::new(),
    };

    for record in 0..shard.len() {
        let failure = match shard.record(record) {
            Err(e) => Some((true, e)),
            Ok(_) if decode && shard.storage() == Storage::Encoded => {
                rgb_record(dataset, index, record).err().map(|e| (false, e))
            }
            Ok(_) => None,
        };
        let Some((checksum, error)) = failure else {
            continue;
        };
        match checksum {
            true => stats.checksum_failures += 1,
            false => stats.decode_failures += 1,
        }
        if stats.failures.len() < MAX_LISTED {
            stats.failures.push(error.to_string());
        }
    }
    stats
}

/// `shard-*.pms` files in `dir` that `listed` does not name.
fn unlisted_files(dir: &Path, listed: &[String]) -> Result<Vec<String>> {
    let mut unlisted = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(|e| Error::io(dir, e))? {
        let entry = entry.map_err(|e| Error::io(dir, e))?;
        let Some(name) = entry.file_name().to_str().map(str::to_owned) else {
            continue;
        };
        let is_shard =
            name.starts_with("shard-") && (name.ends_with(".pms") || name.ends_with(".tmp"));
        if is_shard && !listed.contains(&name) {
            unlisted.push(name);
        }
    }
    unlisted.sort();
    Ok(unlisted)
}

impl fmt::Display for VerifyReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (h, w) = self.image_size;
        writeln!(
            f,
            "{}: {} identities, {} images of {h}×{w}, {} shard(s)",
            self.root.display(),
            self.identities,
            self.images,
            self.shards.len()
        )?;
        writeln!(
            f,
            "{:<18} {:>8} {:>10} {:>10} {:>20} {:>12} {:>9} {:>8}",
            "shard",
            "storage",
            "identities",
            "images",
            "imgs/id min/mean/max",
            "MiB",
            "bad crc",
            "bad img"
        )?;
        for s in &self.shards {
            let (min, mean, max) = s.images_per_identity;
            let storage = match s.storage {
                Storage::Raw => "raw",
                Storage::Encoded => "encoded",
            };
            let decode = match self.decoded || s.storage == Storage::Raw {
                true => s.decode_failures.to_string(),
                false => "-".into(),
            };
            writeln!(
                f,
                "{:<18} {storage:>8} {:>10} {:>10} {:>20} {:>12.1} {:>9} {decode:>8}",
                s.name,
                s.identities,
                s.records,
                format!("{min}/{mean:.1}/{max}"),
                s.data_bytes as f64 / (1024.0 * 1024.0),
                s.checksum_failures,
            )?;
        }
        for s in &self.shards {
            for failure in &s.failures {
                writeln!(f, "  {failure}")?;
            }
        }
        for name in &self.unlisted_files {
            writeln!(
                f,
                "  {name}: not listed in the manifest (an interrupted append left it)"
            )?;
        }
        let verdict = match self.is_clean() {
            true => "every record checked out",
            false => "some records are damaged (they are skipped in training)",
        };
        write!(f, "{verdict}")
    }
}
