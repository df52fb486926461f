//! A packed dataset: a folder with `manifest.json` and shard files, opened as one identity
//! index across all shards.
//!
//! The index holds one 16-byte entry per identity (shard, first record, count) and nothing per
//! image: records are reached through the shards' memory maps. Building it reads each shard's
//! identity table once, so opening costs O(identities + shards) memory and one pass over the
//! index sections (see `docs/benchmarks.md` for the scale measurements).

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::preprocess::Preprocess;
use crate::shard::{SHARD_VERSION, Shard, Storage, sync_parent};

/// Name of the manifest inside a packed dataset folder.
pub(crate) const MANIFEST_FILE: &str = "manifest.json";

/// A packed dataset's description: `manifest.json`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    /// Format version of the dataset and its shards; must equal [`SHARD_VERSION`].
    pub format_version: u32,
    /// Image height of every record.
    pub height: u32,
    /// Image width of every record.
    pub width: u32,
    /// Total number of records over all shards.
    pub n_images: u64,
    /// Identity name of each label (label -> identity name).
    pub identities: Vec<String>,
    /// Shard file names, relative to the dataset folder, in shard-index order.
    pub shards: Vec<String>,
    /// How the images were cropped and resized; `None` when they were stored as they came
    /// (an already aligned RecordIO set).
    pub preprocess: Option<Preprocess>,
    /// Where the images came from, one entry per pack or append, as given.
    pub sources: Vec<String>,
}

/// Where the records of one identity lie; an identity never spans shards.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IdentityRecords {
    /// Index of the shard in [`Manifest::shards`].
    pub shard: u32,
    /// First record of the identity inside that shard.
    pub first: u64,
    /// Number of records of the identity.
    pub count: u32,
}

/// An opened packed dataset: its manifest, its mapped shards and the records of each label.
pub struct Dataset {
    root: PathBuf,
    manifest: Manifest,
    shards: Vec<Shard>,
    identities: Vec<IdentityRecords>,
}

impl Dataset {
    /// Reads the manifest, opens every shard and indexes the records of each label.
    ///
    /// This is the one validation of labels before training: every shard label must be below
    /// `identities.len()`, each identity must have records in exactly one shard (a missing
    /// label is an error, never an empty class), image sizes must agree and `n_images` must
    /// match the shards.
    ///
    /// # Errors
    /// [`Error::Io`] / [`Error::Parse`] for an unreadable manifest, the errors of
    /// [`Shard::open`], [`Error::Record`] / [`Error::Format`] naming the shard that disagrees
    /// with the manifest, and [`Error::Config`] naming the manifest for a wrong version, a bad
    /// shard name, a missing identity or a wrong image count.
    pub fn open(dir: &Path) -> Result<Dataset> {
        let manifest_path = dir.join(MANIFEST_FILE);
        let manifest = read_manifest(&manifest_path)?;
        let mut names = std::collections::HashSet::with_capacity(manifest.identities.len());
        if let Some(name) = manifest
            .identities
            .iter()
            .find(|n| !names.insert(n.as_str()))
        {
            let what = format!("identity `{name}` is listed twice");
            return Err(manifest_error(&manifest_path, what));
        }
        drop(names);
        let shards = open_shards(dir, &manifest, &manifest_path)?;
        let identities = index_identities(&manifest, &shards, &manifest_path)?;

        let n_images: u64 = shards.iter().map(Shard::len).sum();
        if n_images != manifest.n_images {
            let what = format!(
                "n_images is {}, the shards hold {n_images}",
                manifest.n_images
            );
            return Err(manifest_error(&manifest_path, what));
        }
        Ok(Dataset {
            root: dir.to_path_buf(),
            manifest,
            shards,
            identities,
        })
    }

    /// The dataset's manifest.
    pub fn manifest(&self) -> &Manifest {
        &self.manifest
    }

    /// The dataset folder.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Number of identities (labels are `0..n_identities`).
    pub fn n_identities(&self) -> usize {
        self.identities.len()
    }

    /// Number of records over all shards.
    pub fn n_images(&self) -> u64 {
        self.manifest.n_images
    }

    /// Image size of every record, as (height, width).
    pub fn image_size(&self) -> (u32, u32) {
        (self.manifest.height, self.manifest.width)
    }

    /// The opened shards, in manifest order.
    pub fn shards(&self) -> &[Shard] {
        &self.shards
    }

    /// Where the records of `label` lie, or `None` if there is no such label.
    pub fn identity(&self, label: u32) -> Option<IdentityRecords> {
        self.identities.get(usize::try_from(label).ok()?).copied()
    }

    /// The checked stored bytes of `record` in shard `shard`, with the shard's storage.
    ///
    /// # Errors
    /// [`Error::Config`] for a shard index out of range, and the errors of [`Shard::record`].
    pub fn record(&self, shard: u32, record: u64) -> Result<(&[u8], Storage)> {
        let found = usize::try_from(shard).ok().and_then(|s| self.shards.get(s));
        let what = || format!("shard {shard} out of range ({} shards)", self.shards.len());
        let found = found.ok_or_else(|| manifest_error(&self.root, what()))?;
        Ok((found.record(record)?, found.storage()))
    }
}

/// A configuration error about the manifest at `path`.
fn manifest_error(path: &Path, what: impl std::fmt::Display) -> Error {
    Error::Config(format!("{}: {what}", path.display()))
}

/// Reads and parses `manifest.json`, checking its version.
pub(crate) fn read_manifest(path: &Path) -> Result<Manifest> {
    let text = crate::files::read_text_capped(path, crate::files::MAX_SMALL_TEXT)?;
    let version: Option<u32> = serde_json::from_str::<serde_json::Value>(&text)
        .ok()
        .and_then(|v| v.get("format_version")?.as_u64())
        .and_then(|v| u32::try_from(v).ok());
    if let Some(version) = version.filter(|&v| v != SHARD_VERSION) {
        let what = format!(
            "dataset version {version} is not supported (this reader: version {SHARD_VERSION}); \
             re-pack the dataset from its source"
        );
        return Err(manifest_error(path, what));
    }
    serde_json::from_str(&text).map_err(|e| Error::Parse {
        path: path.to_path_buf(),
        line: e.line(),
        what: e.to_string(),
    })
}

/// Writes `manifest.json` into `dir` through a temporary name, fsynced, then renamed: the
/// rename is the moment a pack or an append takes effect.
pub(crate) fn write_manifest(dir: &Path, manifest: &Manifest) -> Result<()> {
    let path = dir.join(MANIFEST_FILE);
    let tmp = dir.join(format!("{MANIFEST_FILE}.tmp"));
    let json = serde_json::to_vec_pretty(manifest).map_err(|e| {
        Error::Config(format!(
            "{}: cannot serialise the manifest: {e}",
            path.display()
        ))
    })?;
    let mut file = File::create(&tmp).map_err(|e| Error::io(&tmp, e))?;
    file.write_all(&json).map_err(|e| Error::io(&tmp, e))?;
    file.sync_all().map_err(|e| Error::io(&tmp, e))?;
    drop(file);
    std::fs::rename(&tmp, &path).map_err(|e| Error::io(&path, e))?;
    sync_parent(&path)
}

/// Opens every shard the manifest lists and checks its image size.
fn open_shards(dir: &Path, manifest: &Manifest, manifest_path: &Path) -> Result<Vec<Shard>> {
    if u32::try_from(manifest.shards.len()).is_err() {
        return Err(manifest_error(manifest_path, "more than 2^32 shards"));
    }
    let mut shards = Vec::with_capacity(manifest.shards.len());
    for name in &manifest.shards {
        if Path::new(name)
            .file_name()
            .is_none_or(|f| f != name.as_str())
        {
            let what = format!("shard name `{name}` is not a plain file name");
            return Err(manifest_error(manifest_path, what));
        }

        let shard = Shard::open(&dir.join(name))?;
        let (h, w) = shard.image_size();
        if (h, w) != (manifest.height, manifest.width) {
            let expected = format!("{}×{}", manifest.height, manifest.width);
            let what = format!("images are {h}×{w}, the manifest says {expected}");
            return Err(Error::Format {
                path: shard.path().to_path_buf(),
                offset: 16,
                what,
            });
        }
        shards.push(shard);
    }
    Ok(shards)
}

/// Builds the label -> records table, checking labels against the manifest's identity list.
fn index_identities(
    manifest: &Manifest,
    shards: &[Shard],
    manifest_path: &Path,
) -> Result<Vec<IdentityRecords>> {
    const UNSET: IdentityRecords = IdentityRecords {
        shard: u32::MAX,
        first: 0,
        count: 0,
    };
    let n_identities = manifest.identities.len();
    let mut table = vec![UNSET; n_identities];
    for (shard_index, shard) in (0u32..).zip(shards) {
        for (label, first, count) in shard.identities() {
            let error = |what: String| Error::Record {
                path: shard.path().to_path_buf(),
                record: first,
                what,
            };
            let slot = usize::try_from(label).ok().and_then(|l| table.get_mut(l));
            let Some(slot) = slot else {
                let what = format!("label {label}, but the manifest has {n_identities} identities");
                return Err(error(what));
            };
            if slot.count > 0 {
                let name = manifest.shards.get(slot.shard as usize);
                let name = name.map_or("?", String::as_str);
                return Err(error(format!(
                    "label {label} is also stored in shard {name}"
                )));
            }
            *slot = IdentityRecords {
                shard: shard_index,
                first,
                count,
            };
        }
    }

    if let Some(label) = table.iter().position(|r| r.count == 0) {
        let name = manifest.identities.get(label).map_or("?", String::as_str);
        let what = format!("identity {label} ({name}) has no records in any shard");
        return Err(manifest_error(manifest_path, what));
    }
    Ok(table)
}
