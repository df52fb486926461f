//! The importers behind `cargo xtask pack`: a folder of identity folders, a list file, or an
//! insightface/MXNet RecordIO set becomes a packed dataset (shards plus `manifest.json`, see
//! [`crate::Dataset`]), new or appended to an existing one.
//!
//! ```text
//! source -> candidates (identity name, its images), exclusions applied
//!   -> groups of whole identities, at most max_images_per_shard images each
//!   -> one shard per group, written in parallel (rayon); inside a group, images are decoded
//!      in parallel chunks of DECODE_CHUNK; an identity is kept once min_images decode, and
//!      its records carry group-local labels 0..
//!   -> labels made global: group g's labels shifted by the identities kept before it
//!   -> shards finished (index + header, fsync, rename), then manifest.json
//! ```
//!
//! A new dataset is built in a hidden sibling folder renamed into place at the end; an append
//! writes new shards next to the old ones and takes effect with the atomic replacement of
//! `manifest.json`, so a reader sees the old dataset or the new one, never a mix. Undecodable,
//! truncated or corrupt images are skipped, counted and reported with their file and record,
//! never fatal.

mod folder;
mod list;
mod names;
mod rec;
mod synth;

use std::collections::BTreeSet;
use std::io::Write as _;
use std::ops::Range;
use std::path::{Path, PathBuf};

use image::RgbImage;
use rayon::prelude::*;
use serde::Serialize;

use crate::dataset::{MANIFEST_FILE, Manifest, read_manifest, write_manifest};
use crate::error::{Error, Result};
use crate::preprocess::Preprocess;
use crate::shard::{SHARD_VERSION, ShardWriter, Storage, sync_parent};

pub use folder::pack_folder;
pub use list::pack_list;
pub use names::read_name_list;
pub use rec::pack_recordio;
pub use synth::pack_synth;

/// Images decoded in parallel before they are written out (fewer for large images: see
/// [`decode_chunk`]).
const DECODE_CHUNK: usize = 256;
/// Bytes of decoded images a group holds at once, at most (about).
const CHUNK_BYTES: u64 = 64 << 20;
/// Skipped images logged one by one; past this only the report lists them.
const LOGGED_SKIPS: usize = 100;

/// Images per parallel decode chunk: `DECODE_CHUNK`, fewer when the images are large, so a
/// group holds about `CHUNK_BYTES` of pixels at most.
fn decode_chunk((height, width): (u32, u32)) -> usize {
    let image = u64::from(height) * u64::from(width) * 3;
    let fit = (CHUNK_BYTES / image.max(1)) as usize;
    fit.clamp(8, DECODE_CHUNK)
}

/// JPEG quality of crops re-encoded for encoded storage.
const JPEG_QUALITY: u8 = 95;

/// What to pack and how.
#[derive(Clone, Debug)]
pub struct PackConfig {
    /// Identity names to leave out (for example those that overlap the test set).
    pub exclude: BTreeSet<String>,
    /// Identities with fewer decodable images than this are left out.
    pub min_images: usize,
    /// How each image file becomes a crop (folder and list imports); its `size` is the records'
    /// height and width. RecordIO sets are already aligned and take their own size.
    pub preprocess: Preprocess,
    /// Records per shard; an identity with more images than this gets a shard of its own.
    pub max_images_per_shard: usize,
    /// Raw pixels (fastest to read) or encoded images (smallest).
    pub storage: Storage,
    /// Add to the dataset already at the output folder instead of creating a new one.
    pub append: bool,
}

/// What a pack did.
#[derive(Clone, Debug, Default, Serialize)]
pub struct PackReport {
    /// Identities written (labels `first_label..first_label + identities`).
    pub identities: usize,
    /// The first label given to this pack's identities (0 for a new dataset).
    pub first_label: usize,
    /// Images written.
    pub images: usize,
    /// Shard files written.
    pub shards: usize,
    /// Identities left out because they are in [`PackConfig::exclude`].
    pub excluded_identities: usize,
    /// Identities dropped by min_images.
    pub too_few_images: usize,
    /// Files, folders and records that were not packed, with the reason.
    pub skipped: Vec<Skipped>,
    /// What the importer detected or repaired in the input (RecordIO layouts).
    pub notes: Vec<String>,
}

/// A file, folder or record that was not packed.
#[derive(Clone, Debug, Serialize)]
pub struct Skipped {
    /// The file or folder.
    pub path: PathBuf,
    /// The record inside the file (a RecordIO key), if the file holds many images.
    pub record: Option<u64>,
    /// Why it was left out.
    pub reason: String,
}

/// What an image becomes in a shard.
pub(crate) enum Stored {
    /// RGB8 pixels, for a raw shard.
    Pixels(RgbImage),
    /// Encoded image bytes, for an encoded shard.
    Encoded(Vec<u8>),
}

impl Stored {
    /// A decoded crop in the form `storage` keeps.
    pub(crate) fn from_crop(crop: RgbImage, storage: Storage) -> Result<Stored> {
        match storage {
            Storage::Raw => Ok(Stored::Pixels(crop)),
            Storage::Encoded => {
                let mut bytes = Vec::new();
                let encoder =
                    image::codecs::jpeg::JpegEncoder::new_with_quality(&mut bytes, JPEG_QUALITY);
                crop.write_with_encoder(encoder)
                    .map_err(|e| Error::Config(format!("cannot encode a JPEG crop: {e}")))?;
                Ok(Stored::Encoded(bytes))
            }
        }
    }

    fn bytes(&self) -> &[u8] {
        match self {
            Stored::Pixels(img) => img.as_raw(),
            Stored::Encoded(bytes) => bytes,
        }
    }
}

/// An identity to pack: its name and its images, in the order they are written.
pub(crate) struct Candidate<I> {
    pub(crate) name: String,
    pub(crate) items: Vec<I>,
}

/// Where the images of a pack come from.
pub(crate) trait Source: Sync {
    /// One image of the source (a path, a record).
    type Item: Sync;

    /// Decodes and prepares one image in the form `storage` keeps.
    ///
    /// [`Error::Config`] stops the pack; every other error skips the image.
    fn load(&self, item: &Self::Item, storage: Storage) -> Result<Stored>;

    /// The file and record that hold `item`, for reports.
    fn locate(&self, item: &Self::Item) -> (PathBuf, Option<u64>);

    /// (height, width) of every stored image.
    fn image_size(&self) -> (u32, u32);

    /// The crop applied to every image, if any.
    fn preprocess(&self) -> Option<Preprocess>;

    /// The source as the manifest records it.
    fn describe(&self) -> String;
}

/// Packs `candidates` of `source` into `out_dir` (new, or appended to with `config.append`).
pub(crate) fn run_pack<S: Source>(
    source: &S,
    candidates: &[Candidate<S::Item>],
    out_dir: &Path,
    config: &PackConfig,
    mut report: PackReport,
) -> Result<PackReport> {
    check_config(config)?;
    let mut target = Target::open(out_dir, config.append, source)?;
    target.check_names(candidates)?;

    let groups = plan_groups(candidates, config.max_images_per_shard);
    let first_shard = target.next_shard_index();
    let outputs: Vec<Result<GroupOutput>> = groups
        .par_iter()
        .enumerate()
        .map(|(g, range)| {
            let path = target.dir().join(shard_name(first_shard + g));
            write_group(source, &candidates[range.clone()], &path, config)
        })
        .collect();

    let (names, shards) = finish_groups(outputs, &mut target, &mut report)?;
    if names.is_empty() {
        let (excluded, too_few) = (report.excluded_identities, report.too_few_images);
        let why = format!(
            "{excluded} excluded, {too_few} below min_images {}",
            config.min_images
        );
        return Err(Error::Config(format!(
            "{}: no identity kept ({why})",
            source.describe()
        )));
    }
    report.first_label = target.manifest.identities.len();
    (report.identities, report.shards) = (names.len(), shards.len());
    target.manifest.identities.extend(names);
    target.manifest.shards.extend(shards);
    target.manifest.n_images += report.images as u64;
    target.manifest.sources.push(source.describe());
    target.commit(out_dir)?;
    log_report(&report, out_dir);
    Ok(report)
}

fn check_config(config: &PackConfig) -> Result<()> {
    config.preprocess.validate()?;
    if config.max_images_per_shard == 0 {
        return Err(Error::Config(
            "max_images_per_shard must be at least 1".into(),
        ));
    }
    Ok(())
}

fn shard_name(index: usize) -> String {
    format!("shard-{index:05}.pms")
}

/// Splits the candidates into runs of whole identities of at most `max_images` images (an
/// identity with more gets a run of its own).
fn plan_groups<I>(candidates: &[Candidate<I>], max_images: usize) -> Vec<Range<usize>> {
    let mut groups = Vec::new();
    let (mut start, mut images) = (0, 0usize);
    for (i, candidate) in candidates.iter().enumerate() {
        let n = candidate.items.len();
        if i > start && images.saturating_add(n) > max_images {
            groups.push(start..i);
            (start, images) = (i, 0);
        }
        images = images.saturating_add(n);
    }
    if start < candidates.len() {
        groups.push(start..candidates.len());
    }
    groups
}

/// One group's shard (parked, labels group-local) and what happened to its identities.
struct GroupOutput {
    writer: ShardWriter,
    kept: Vec<String>,
    images: usize,
    too_few: usize,
    skipped: Vec<Skipped>,
}

/// Decodes a group's images in parallel chunks and writes the kept identities to one shard.
fn write_group<S: Source>(
    source: &S,
    candidates: &[Candidate<S::Item>],
    path: &Path,
    config: &PackConfig,
) -> Result<GroupOutput> {
    let (height, width) = source.image_size();
    let writer = ShardWriter::create(path, height, width, config.storage)?;
    let mut sink = GroupSink {
        writer,
        min_images: config.min_images.max(1),
        kept: Vec::new(),
        images: 0,
        too_few: 0,
        skipped: Vec::new(),
        current: None,
    };

    let items: Vec<(usize, &S::Item)> = (0..)
        .zip(candidates)
        .flat_map(|(c, candidate)| candidate.items.iter().map(move |item| (c, item)))
        .collect();
    for chunk in items.chunks(decode_chunk((height, width))) {
        let loaded: Vec<Result<Stored>> = chunk
            .par_iter()
            .map(|(_, item)| source.load(item, config.storage))
            .collect();
        for (&(c, item), result) in chunk.iter().zip(loaded) {
            match result {
                Ok(stored) => sink.accept(c, &candidates[c].name, stored)?,
                Err(e @ Error::Config(_)) => return Err(e),
                Err(e) => sink.skip(source.locate(item), e),
            }
        }
    }
    sink.end_identity();
    sink.writer.park()?;
    // Every candidate that did not become an identity, including one none of whose images
    // decoded (it never opened a run in the sink).
    sink.too_few = candidates.len() - sink.kept.len();
    Ok(GroupOutput {
        writer: sink.writer,
        kept: sink.kept,
        images: sink.images,
        too_few: sink.too_few,
        skipped: sink.skipped,
    })
}

/// The identity whose images are arriving.
struct Pending {
    candidate: usize,
    /// Images held until `min_images` have decoded.
    buffer: Vec<Stored>,
    /// Group-local label, once the identity is kept.
    label: Option<u32>,
}

/// Receives decoded images in candidate order and writes the kept identities.
struct GroupSink {
    writer: ShardWriter,
    min_images: usize,
    kept: Vec<String>,
    images: usize,
    too_few: usize,
    skipped: Vec<Skipped>,
    current: Option<Pending>,
}

impl GroupSink {
    fn accept(&mut self, candidate: usize, name: &str, stored: Stored) -> Result<()> {
        if self
            .current
            .as_ref()
            .is_none_or(|p| p.candidate != candidate)
        {
            self.end_identity();
            let buffer = Vec::new();
            self.current = Some(Pending {
                candidate,
                buffer,
                label: None,
            });
        }
        let Some(pending) = self.current.as_mut() else {
            return Ok(());
        };
        if let Some(label) = pending.label {
            self.images += 1;
            return self.writer.push(label, stored.bytes());
        }

        pending.buffer.push(stored);
        if pending.buffer.len() < self.min_images {
            return Ok(());
        }
        let label = u32::try_from(self.kept.len())
            .map_err(|_| Error::Config("more than 2^32 identities in one shard".into()))?;
        pending.label = Some(label);
        self.kept.push(name.to_owned());
        for stored in std::mem::take(&mut pending.buffer) {
            self.images += 1;
            self.writer.push(label, stored.bytes())?;
        }
        Ok(())
    }

    fn skip(&mut self, (path, record): (PathBuf, Option<u64>), error: Error) {
        match self.skipped.len() {
            n if n < LOGGED_SKIPS => {
                tracing::warn!(path = %path.display(), record, error = %error, "skipping image");
            }
            n if n == LOGGED_SKIPS => {
                tracing::warn!("more skipped images in this shard: listed in the report only");
            }
            _ => {}
        }
        let reason = error.to_string();
        self.skipped.push(Skipped {
            path,
            record,
            reason,
        });
    }

    /// Closes the identity in progress; one that never reached `min_images` is dropped.
    fn end_identity(&mut self) {
        if self.current.take().is_some_and(|p| p.label.is_none()) {
            self.too_few += 1;
        }
    }
}

/// Makes the group labels global and finishes the non-empty shards in order; returns the kept
/// identity names and the new shard names.
fn finish_groups(
    outputs: Vec<Result<GroupOutput>>,
    target: &mut Target,
    report: &mut PackReport,
) -> Result<(Vec<String>, Vec<String>)> {
    // Surface the first error before finishing anything; dropped writers remove their files.
    let outputs: Vec<GroupOutput> = outputs.into_iter().collect::<Result<_>>()?;
    let (mut names, mut shards) = (Vec::new(), Vec::new());
    let mut base = target.manifest.identities.len();
    for mut output in outputs {
        report.too_few_images += output.too_few;
        report.images += output.images;
        report.skipped.append(&mut output.skipped);
        if output.writer.is_empty() {
            continue;
        }
        let label_base =
            u32::try_from(base).map_err(|_| Error::Config("more than 2^32 identities".into()))?;
        output.writer.offset_labels(label_base)?;
        let path = output.writer.path().to_path_buf();
        output.writer.finish()?;
        // Recorded only once this pack's own rename succeeded: cleanup never removes a file
        // another writer put there.
        target.created.push(path.clone());
        shards.push(
            path.file_name()
                .and_then(|n| n.to_str())
                .unwrap_or_default()
                .to_owned(),
        );
        base += output.kept.len();
        names.append(&mut output.kept);
    }
    Ok((names, shards))
}

fn log_report(report: &PackReport, out_dir: &Path) {
    tracing::info!(
        out_dir = %out_dir.display(),
        identities = report.identities,
        first_label = report.first_label,
        images = report.images,
        shards = report.shards,
        excluded = report.excluded_identities,
        too_few_images = report.too_few_images,
        skipped = report.skipped.len(),
        "packed dataset"
    );
}

/// Where a pack writes: a staging folder for a new dataset, or the existing dataset folder.
struct Target {
    /// Folder the shards go to.
    dir: PathBuf,
    /// The manifest to write: empty for a new dataset, the current one for an append.
    manifest: Manifest,
    /// For a new dataset, the staging folder is removed unless committed.
    staging: bool,
    /// Shard files this pack finished (removed again unless committed).
    created: Vec<PathBuf>,
    committed: bool,
    /// The append lock this pack holds (removed on drop).
    lock: Option<PathBuf>,
}

/// File that marks a dataset folder as being appended to.
const APPEND_LOCK: &str = ".pm-append.lock";

/// Takes the append lock of `dir`: one append at a time, or two would pick the same shard
/// names and both rewrite the manifest.
fn take_append_lock(dir: &Path) -> Result<PathBuf> {
    let path = dir.join(APPEND_LOCK);
    let file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&path);
    match file {
        Ok(mut file) => {
            let _ = writeln!(file, "{}", std::process::id());
            Ok(path)
        }
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Err(Error::Config(format!(
            "{}: another pack is appending to this dataset (lock file {APPEND_LOCK}); if none \
             is running, a crashed one left it: remove it",
            dir.display()
        ))),
        Err(e) => Err(Error::io(&path, e)),
    }
}

impl Target {
    fn open<S: Source>(out_dir: &Path, append: bool, source: &S) -> Result<Target> {
        let (height, width) = source.image_size();
        if !append {
            check_out_dir(out_dir)?;
            let manifest = Manifest {
                format_version: SHARD_VERSION,
                height,
                width,
                n_images: 0,
                identities: Vec::new(),
                shards: Vec::new(),
                preprocess: source.preprocess(),
                sources: Vec::new(),
            };
            let dir = staging_dir(out_dir)?;
            std::fs::create_dir(&dir).map_err(|e| Error::io(&dir, e))?;
            return Ok(Target {
                dir,
                manifest,
                staging: true,
                created: Vec::new(),
                committed: false,
                lock: None,
            });
        }

        let manifest_path = out_dir.join(MANIFEST_FILE);
        read_manifest(&manifest_path)?;
        let lock = take_append_lock(out_dir)?;
        // Read under the lock: the manifest the last append committed.
        let manifest = read_manifest(&manifest_path).inspect_err(|_| {
            let _ = std::fs::remove_file(&lock);
        })?;
        let target = Target {
            dir: out_dir.to_path_buf(),
            manifest,
            staging: false,
            created: Vec::new(),
            committed: false,
            lock: Some(lock),
        };
        let ours = (height, width, source.preprocess());
        let m = &target.manifest;
        if ours != (m.height, m.width, m.preprocess.clone()) {
            let describe = |p: &Option<Preprocess>| {
                p.as_ref()
                    .map_or("images stored as they came".to_owned(), |p| {
                        serde_json::to_string(p).unwrap_or_default()
                    })
            };
            let what = format!(
                "{}: cannot append {height}×{width} images ({}) to a dataset of {}×{} images \
                 ({})",
                manifest_path.display(),
                describe(&ours.2),
                m.height,
                m.width,
                describe(&m.preprocess)
            );
            return Err(Error::Config(what));
        }
        Ok(target)
    }

    fn dir(&self) -> &Path {
        &self.dir
    }

    /// The index of the first new shard: after every shard file already in the folder.
    fn next_shard_index(&self) -> usize {
        let taken = |i: usize| {
            let name = shard_name(i);
            let tmp = self.dir.join(format!("{name}.tmp"));
            self.manifest.shards.contains(&name) || self.dir.join(&name).exists() || tmp.exists()
        };
        let mut index = self.manifest.shards.len();
        while taken(index) {
            index += 1;
        }
        index
    }

    /// An appended identity must be new: an identity never spans shards.
    fn check_names<I>(&self, candidates: &[Candidate<I>]) -> Result<()> {
        if self.manifest.identities.is_empty() {
            return Ok(());
        }
        let existing: BTreeSet<&str> = self
            .manifest
            .identities
            .iter()
            .map(String::as_str)
            .collect();
        if let Some(c) = candidates
            .iter()
            .find(|c| existing.contains(c.name.as_str()))
        {
            let what = format!(
                "{}: identity `{}` is already in the dataset; an append adds new identities \
                 only (exclude it, or re-pack)",
                self.dir.display(),
                c.name
            );
            return Err(Error::Config(what));
        }
        Ok(())
    }

    /// Writes the manifest (the moment an append takes effect) and, for a new dataset, moves
    /// the staging folder to `out_dir`.
    fn commit(&mut self, out_dir: &Path) -> Result<()> {
        write_manifest(&self.dir, &self.manifest)?;
        if self.staging {
            if out_dir.is_dir() {
                std::fs::remove_dir(out_dir).map_err(|e| Error::io(out_dir, e))?;
            }
            std::fs::rename(&self.dir, out_dir).map_err(|e| Error::io(out_dir, e))?;
            sync_parent(out_dir)?;
        }
        self.committed = true;
        Ok(())
    }
}

impl Drop for Target {
    fn drop(&mut self) {
        if let Some(lock) = self.lock.take() {
            // Best effort: the lock is this pack's own file.
            let _ = std::fs::remove_file(lock);
        }
        if self.committed {
            return;
        }
        // Best effort: everything removed here was created by this pack and is unreferenced.
        if self.staging {
            let _ = std::fs::remove_dir_all(&self.dir);
        } else {
            self.created.iter().for_each(|path| {
                let _ = std::fs::remove_file(path);
            });
        }
    }
}

/// The hidden sibling folder a new dataset is built in.
fn staging_dir(out_dir: &Path) -> Result<PathBuf> {
    let name = out_dir
        .file_name()
        .and_then(|n| n.to_str())
        .ok_or_else(|| {
            Error::Config(format!(
                "output {} has no UTF-8 folder name",
                out_dir.display()
            ))
        })?;
    let staging_name = format!(".{name}.packing-{}", std::process::id());
    Ok(out_dir.with_file_name(staging_name))
}

/// `out_dir` may be absent or an empty folder.
fn check_out_dir(out_dir: &Path) -> Result<()> {
    let meta = match std::fs::symlink_metadata(out_dir) {
        Ok(meta) => meta,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(Error::io(out_dir, e)),
    };
    if !meta.is_dir() {
        let what = format!("output {} exists and is not a folder", out_dir.display());
        return Err(Error::Config(what));
    }
    let mut entries = std::fs::read_dir(out_dir).map_err(|e| Error::io(out_dir, e))?;
    if entries.next().is_some() {
        let what = format!(
            "output folder {} exists and is not empty (add --append to add identities to it)",
            out_dir.display()
        );
        return Err(Error::Config(what));
    }
    Ok(())
}

/// Records a skipped file or folder in a report.
pub(crate) fn skip(report: &mut PackReport, path: &Path, reason: impl Into<String>) {
    report.skipped.push(Skipped {
        path: path.to_path_buf(),
        record: None,
        reason: reason.into(),
    });
}

/// Applies the exclusion list to candidate names: excluded ones are counted and dropped. An
/// exclusion list that matches nothing is almost always the wrong file or column, and would
/// silently leak test identities into training: it is an error.
pub(crate) fn apply_exclusions<I>(
    candidates: Vec<Candidate<I>>,
    config: &PackConfig,
    source: &str,
    report: &mut PackReport,
) -> Result<Vec<Candidate<I>>> {
    let before = candidates.len();
    let kept: Vec<Candidate<I>> = candidates
        .into_iter()
        .filter(|c| !config.exclude.contains(&c.name))
        .collect();
    report.excluded_identities += before - kept.len();
    if config.exclude.is_empty() {
        return Ok(kept);
    }
    if report.excluded_identities == 0 {
        return Err(Error::Config(format!(
            "none of the {} names to exclude matches an identity of {source} (wrong file or \
             column?)",
            config.exclude.len()
        )));
    }
    let unmatched = config
        .exclude
        .len()
        .saturating_sub(report.excluded_identities);
    if unmatched > 0 {
        tracing::warn!(
            unmatched,
            matched = report.excluded_identities,
            "names to exclude that match no identity"
        );
    }
    Ok(kept)
}
