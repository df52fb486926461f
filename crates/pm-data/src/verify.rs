//! Whole-dataset verification behind `pm inspect` and `cargo xtask verify`: every record's
//! checksum, optionally a test decode of every encoded image, and per-shard statistics.
//!
//! Each shard is opened on its own (header, index checksum, record and identity tables) and a
//! shard that fails is reported and passed over, so one damaged shard does not hide the state
//! of the others; then every record of every shard that opened is read once, shards in
//! parallel, and the cross-shard checks of [`Dataset::open`] (labels against the manifest, one
//! shard per identity, image counts) run last.

use std::fmt;
use std::path::{Path, PathBuf};

use rayon::prelude::*;
use serde::Serialize;

use crate::dataset::{Dataset, MANIFEST_FILE, read_manifest};
use crate::error::{Error, Result};
use crate::loader::decode_record;
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
    /// Why the shard could not be opened at all (then nothing else of it was checked).
    pub open_error: Option<String>,
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
    /// Why the dataset as a whole does not open (labels, identities, counts), if it does not.
    pub dataset_error: Option<String>,
}

impl VerifyReport {
    /// True when no record failed.
    pub fn is_clean(&self) -> bool {
        let shards_clean = self
            .shards
            .iter()
            .all(|s| s.open_error.is_none() && s.checksum_failures == 0 && s.decode_failures == 0);
        shards_clean && self.dataset_error.is_none()
    }
}

/// Checks the dataset at `dir`: opens each shard the manifest lists (all structural checks),
/// reads every record of every shard that opens, checking its checksum and, with `decode`,
/// that every encoded image decodes to the dataset's size, then runs the cross-shard checks.
///
/// Damaged shards and records are counted and named in the report, not returned as errors:
/// the report says how much of the dataset is usable.
///
/// # Errors
/// The manifest cannot be read or parsed, or the folder cannot be listed.
pub fn verify_dataset(dir: &Path, decode: bool) -> Result<VerifyReport> {
    let manifest = read_manifest(&dir.join(MANIFEST_FILE))?;
    let size = (manifest.height, manifest.width);
    let shards: Vec<ShardStats> = manifest
        .shards
        .par_iter()
        .map(|name| match Shard::open(&dir.join(name)) {
            Ok(shard) => shard_stats(&shard, name, decode, size),
            Err(e) => ShardStats::unopened(name, e.to_string()),
        })
        .collect();
    Ok(VerifyReport {
        root: dir.to_path_buf(),
        identities: manifest.identities.len(),
        images: manifest.n_images,
        image_size: size,
        decoded: decode,
        shards,
        unlisted_files: unlisted_files(dir, &manifest.shards)?,
        dataset_error: Dataset::open(dir).err().map(|e| e.to_string()),
    })
}

impl ShardStats {
    fn unopened(name: &str, error: String) -> ShardStats {
        ShardStats {
            name: name.to_owned(),
            storage: Storage::Raw,
            records: 0,
            identities: 0,
            images_per_identity: (0, 0.0, 0),
            data_bytes: 0,
            checksum_failures: 0,
            decode_failures: 0,
            failures: Vec::new(),
            open_error: Some(error),
        }
    }
}

fn shard_stats(shard: &Shard, name: &str, decode: bool, size: (u32, u32)) -> ShardStats {
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
        open_error: None,
    };

    for record in 0..shard.len() {
        let failure = match shard.record(record) {
            Err(e) => Some((true, e)),
            Ok(bytes) if decode && shard.storage() == Storage::Encoded => {
                decode_record(bytes, shard.path(), record, size)
                    .err()
                    .map(|e| (false, e))
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
            if let Some(error) = &s.open_error {
                writeln!(f, "  {}: cannot be opened: {error}", s.name)?;
            }
            for failure in &s.failures {
                writeln!(f, "  {failure}")?;
            }
            let more =
                (s.checksum_failures + s.decode_failures).saturating_sub(s.failures.len() as u64);
            if more > 0 {
                writeln!(f, "  {}: {more} more damaged records not listed", s.name)?;
            }
        }
        if let Some(error) = &self.dataset_error {
            writeln!(f, "  the dataset does not open: {error}")?;
        }
        for name in &self.unlisted_files {
            writeln!(
                f,
                "  {name}: not listed in the manifest (an interrupted append left it)"
            )?;
        }
        let encoded = self.shards.iter().any(|s| s.storage == Storage::Encoded);
        let verdict = match (self.is_clean(), self.decoded || !encoded) {
            (true, true) => "every record checked out",
            (true, false) => "every checksum checked out (encoded images not decoded: --no-decode)",
            (false, _) => {
                "damaged: see above (damaged records are skipped in training; a shard \
                           that does not open stops it)"
            }
        };
        write!(f, "{verdict}")
    }
}
