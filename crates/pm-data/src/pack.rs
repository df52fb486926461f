//! The folder importer behind `cargo xtask pack`: turns `<root>/<identity>/**/<image>` into a
//! packed dataset (shards plus `manifest.json`, see [`crate::Dataset`]).
//!
//! ```text
//! scan root (sorted identities, sorted image paths)
//!   -> decode + preprocess in parallel, in chunks of DECODE_CHUNK images
//!   -> per identity: keep once min_images decode, label 0.. in name order
//!   -> shards of at most max_images_per_shard records (an identity never spans shards)
//!   -> manifest.json, then one rename of the staging folder to out_dir
//! ```
//!
//! Memory holds one chunk of decoded crops plus at most `min_images` crops of the identity in
//! progress. Undecodable images are skipped and reported, never fatal.

use std::collections::BTreeSet;
use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};

use image::RgbImage;
use rayon::prelude::*;
use serde::Serialize;

use crate::error::{Error, Result};
use crate::preprocess::Preprocess;
use crate::shard::{Manifest, SHARD_VERSION, ShardWriter, sync_parent};

/// Images decoded in parallel before their crops are written out.
const DECODE_CHUNK: usize = 256;

/// File extensions (lower case) taken as images.
const IMAGE_EXTENSIONS: [&str; 4] = ["jpg", "jpeg", "png", "bmp"];

/// What to pack and how.
#[derive(Clone, Debug)]
pub struct PackConfig {
    /// Identity folder names to leave out (for example those that overlap the test set).
    pub exclude: BTreeSet<String>,
    /// Identities with fewer decodable images than this are left out.
    pub min_images: usize,
    /// How each image becomes a crop; its `size` is the records' height and width.
    pub preprocess: Preprocess,
    /// Records per shard; an identity with more images than this gets a shard of its own.
    pub max_images_per_shard: usize,
}

/// What [`pack_folder`] did.
#[derive(Clone, Debug, Default, Serialize)]
pub struct PackReport {
    /// Identities written (labels `0..identities`).
    pub identities: usize,
    /// Images written.
    pub images: usize,
    /// Shard files written.
    pub shards: usize,
    /// Identity folders left out because they are in [`PackConfig::exclude`].
    pub excluded_identities: usize,
    /// Identities dropped by min_images.
    pub too_few_images: usize,
    /// Files and folders that were not packed, with the reason.
    pub skipped: Vec<Skipped>,
}

/// A file or folder that was not packed.
#[derive(Clone, Debug, Serialize)]
pub struct Skipped {
    /// The file or folder.
    pub path: PathBuf,
    /// Why it was left out.
    pub reason: String,
}

/// An identity folder and its image files, sorted by path.
struct Candidate {
    name: String,
    files: Vec<PathBuf>,
}

/// Packs `<root>/<identity>/**/<image>` (the LFW layout; CFP's
/// `Data/Images/<id>/{frontal,profile}/NN.jpg` also works: every image file below the identity
/// folder, recursively, sorted by path) into a dataset at `out_dir`.
///
/// Identities are the direct subfolders of root, sorted by name; labels 0.. in that order over
/// the kept identities. Image files have the extensions jpg/jpeg/png/bmp (case-insensitive);
/// other files, hidden entries and symlinked folders below an identity are skipped and
/// reported. Undecodable or truncated images are skipped, reported and logged, never fatal.
/// The output is built under a hidden sibling folder and renamed into place at the end, so
/// `out_dir` either holds a complete dataset or does not exist.
///
/// # Errors
/// [`Error::Io`] naming `root` if it is missing; [`Error::Config`] for an invalid config, an
/// existing non-empty `out_dir`, a bad landmark setup, or when no identity is kept;
/// [`Error::Io`] for failures writing the output.
pub fn pack_folder(root: &Path, out_dir: &Path, config: &PackConfig) -> Result<PackReport> {
    check_config(config)?;
    check_out_dir(out_dir)?;
    let mut report = PackReport::default();
    let candidates = scan_identities(root, config, &mut report)?;

    let staging = Staging::create(out_dir)?;
    let (identities, shards) = write_shards(&candidates, staging.path(), config, &mut report)?;
    if identities.is_empty() {
        let (excluded, too_few) = (report.excluded_identities, report.too_few_images);
        let why = format!(
            "{excluded} excluded, {too_few} below min_images {}",
            config.min_images
        );
        return Err(Error::Config(format!(
            "{}: no identity kept ({why})",
            root.display()
        )));
    }

    let manifest = Manifest {
        format_version: SHARD_VERSION,
        height: config.preprocess.size,
        width: config.preprocess.size,
        n_images: report.images as u64,
        identities,
        shards,
        preprocess: config.preprocess.clone(),
        source: root.display().to_string(),
    };
    write_manifest(staging.path(), &manifest)?;
    staging.commit(out_dir)?;

    (report.identities, report.shards) = (manifest.identities.len(), manifest.shards.len());
    log_report(&report, out_dir);
    Ok(report)
}

fn log_report(report: &PackReport, out_dir: &Path) {
    tracing::info!(
        out_dir = %out_dir.display(),
        identities = report.identities,
        images = report.images,
        shards = report.shards,
        excluded = report.excluded_identities,
        too_few_images = report.too_few_images,
        skipped = report.skipped.len(),
        "packed dataset"
    );
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
            "output folder {} exists and is not empty",
            out_dir.display()
        );
        return Err(Error::Config(what));
    }
    Ok(())
}

/// The entries of `dir`, sorted by path.
fn read_dir_sorted(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut paths = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(|e| Error::io(dir, e))? {
        paths.push(entry.map_err(|e| Error::io(dir, e))?.path());
    }
    paths.sort();
    Ok(paths)
}

fn is_hidden(path: &Path) -> bool {
    path.file_name()
        .and_then(|n| n.to_str())
        .is_some_and(|n| n.starts_with('.'))
}

fn skip(report: &mut PackReport, path: &Path, reason: impl Into<String>) {
    report.skipped.push(Skipped {
        path: path.to_path_buf(),
        reason: reason.into(),
    });
}

/// Lists the identity folders of `root` in name order with their image files.
fn scan_identities(
    root: &Path,
    config: &PackConfig,
    report: &mut PackReport,
) -> Result<Vec<Candidate>> {
    let mut candidates = Vec::new();
    for path in read_dir_sorted(root)? {
        // Identity folders may be symlinks (a hand-made subset of a larger tree).
        let is_dir = std::fs::metadata(&path).is_ok_and(|m| m.is_dir());
        let name = path.file_name().and_then(|n| n.to_str()).map(str::to_owned);
        match name {
            _ if is_hidden(&path) => skip(report, &path, "hidden entry"),
            _ if !is_dir => skip(report, &path, "not an identity folder"),
            None => skip(report, &path, "identity folder name is not UTF-8"),
            Some(name) if config.exclude.contains(&name) => report.excluded_identities += 1,
            Some(name) => {
                let mut files = Vec::new();
                collect_images(&path, &mut files, report)?;
                files.sort();
                candidates.push(Candidate { name, files });
            }
        }
    }
    check_exclusions(root, config, report)?;
    Ok(candidates)
}

/// An exclusion list that matched no identity folder is almost always the wrong file or column,
/// and would silently leak test identities into training: it is an error. Partial matches are
/// reported.
fn check_exclusions(root: &Path, config: &PackConfig, report: &PackReport) -> Result<()> {
    if config.exclude.is_empty() {
        return Ok(());
    }
    if report.excluded_identities == 0 {
        return Err(Error::Config(format!(
            "none of the {} names to exclude matches an identity folder of {} (wrong file or \
             column?)",
            config.exclude.len(),
            root.display()
        )));
    }
    let unmatched = config.exclude.len() - report.excluded_identities;
    if unmatched > 0 {
        tracing::warn!(
            unmatched,
            matched = report.excluded_identities,
            "names to exclude that match no identity folder"
        );
    }
    Ok(())
}

/// Adds the image files below `dir` to `files`; symlinked folders are not followed.
fn collect_images(dir: &Path, files: &mut Vec<PathBuf>, report: &mut PackReport) -> Result<()> {
    for path in read_dir_sorted(dir)? {
        let kind = std::fs::symlink_metadata(&path)
            .map_err(|e| Error::io(&path, e))?
            .file_type();
        if is_hidden(&path) {
            skip(report, &path, "hidden entry");
        } else if kind.is_dir() {
            collect_images(&path, files, report)?;
        } else if kind.is_symlink() && std::fs::metadata(&path).is_ok_and(|m| m.is_dir()) {
            skip(report, &path, "symlinked folder not followed");
        } else if has_image_extension(&path) && std::fs::metadata(&path).is_ok_and(|m| m.is_file())
        {
            files.push(path);
        } else if has_image_extension(&path) {
            skip(
                report,
                &path,
                "not a regular file (device, pipe or broken link)",
            );
        } else {
            skip(
                report,
                &path,
                "not an image file (extension not jpg/jpeg/png/bmp)",
            );
        }
    }
    Ok(())
}

fn has_image_extension(path: &Path) -> bool {
    let ext = path
        .extension()
        .and_then(|e| e.to_str())
        .map(str::to_ascii_lowercase);
    ext.is_some_and(|ext| IMAGE_EXTENSIONS.contains(&ext.as_str()))
}

/// Decodes every candidate image in parallel chunks and streams the kept identities into
/// shards; returns the kept identity names (label order) and the shard file names.
fn write_shards(
    candidates: &[Candidate],
    dir: &Path,
    config: &PackConfig,
    report: &mut PackReport,
) -> Result<(Vec<String>, Vec<String>)> {
    let items: Vec<(usize, &Path)> = (0..)
        .zip(candidates)
        .flat_map(|(i, c)| c.files.iter().map(move |f| (i, f.as_path())))
        .collect();
    report.too_few_images += candidates.iter().filter(|c| c.files.is_empty()).count();

    let mut sink = ShardSink::new(dir, config, report);
    for chunk in items.chunks(DECODE_CHUNK) {
        let decoded: Vec<Result<RgbImage>> = chunk
            .par_iter()
            .map(|(_, path)| config.preprocess.load(path))
            .collect();
        for (&(candidate, path), result) in chunk.iter().zip(decoded) {
            sink.accept(candidates, candidate, path, result)?;
        }
    }
    sink.finish()
}

/// The identity whose images are being decoded.
struct Pending {
    candidate: usize,
    /// Image files of the identity (an upper bound on its records).
    n_files: usize,
    /// Crops held until `min_images` have decoded.
    buffer: Vec<RgbImage>,
    /// Set once the identity is kept; later crops go straight to the shard.
    label: Option<u32>,
}

/// Receives decoded crops in candidate order and writes the kept identities to shards.
struct ShardSink<'a> {
    dir: &'a Path,
    config: &'a PackConfig,
    report: &'a mut PackReport,
    writer: Option<ShardWriter>,
    shard_names: Vec<String>,
    kept: Vec<String>,
    current: Option<Pending>,
}

impl<'a> ShardSink<'a> {
    fn new(dir: &'a Path, config: &'a PackConfig, report: &'a mut PackReport) -> Self {
        ShardSink {
            dir,
            config,
            report,
            writer: None,
            shard_names: Vec::new(),
            kept: Vec::new(),
            current: None,
        }
    }

    /// Takes the decode result of one image of candidate `candidate`.
    fn accept(
        &mut self,
        candidates: &[Candidate],
        candidate: usize,
        path: &Path,
        result: Result<RgbImage>,
    ) -> Result<()> {
        if self
            .current
            .as_ref()
            .is_none_or(|p| p.candidate != candidate)
        {
            self.end_identity();
            let n_files = candidates.get(candidate).map_or(0, |c| c.files.len());
            self.current = Some(Pending {
                candidate,
                n_files,
                buffer: Vec::new(),
                label: None,
            });
        }

        match result {
            Ok(crop) => self.add_crop(candidates, crop),
            Err(e @ Error::Config(_)) => Err(e),
            Err(e) => {
                tracing::warn!(path = %path.display(), error = %e, "skipping image");
                skip(self.report, path, e.to_string());
                Ok(())
            }
        }
    }

    fn add_crop(&mut self, candidates: &[Candidate], crop: RgbImage) -> Result<()> {
        let Some(pending) = self.current.as_mut() else {
            return Ok(());
        };
        if let Some(label) = pending.label {
            return self.write(label, &crop);
        }
        pending.buffer.push(crop);
        if pending.buffer.len() >= self.config.min_images.max(1) {
            self.start_identity(candidates)?;
        }
        Ok(())
    }

    /// Keeps the identity in progress: gives it the next label, a shard with room for all its
    /// files, and writes its buffered crops.
    fn start_identity(&mut self, candidates: &[Candidate]) -> Result<()> {
        let Some(pending) = self.current.as_mut() else {
            return Ok(());
        };
        let label = u32::try_from(self.kept.len())
            .map_err(|_| Error::Config("more than 2^32 identities".into()))?;
        let name = candidates
            .get(pending.candidate)
            .map(|c| c.name.clone())
            .unwrap_or_default();
        let buffer = std::mem::take(&mut pending.buffer);
        let n_files = pending.n_files as u64;
        pending.label = Some(label);
        self.kept.push(name);

        let used = self.writer.as_ref().map_or(0, ShardWriter::len);
        if used > 0 && used.saturating_add(n_files) > self.config.max_images_per_shard as u64 {
            self.finish_shard()?;
        }
        for crop in &buffer {
            self.write(label, crop)?;
        }
        Ok(())
    }

    fn write(&mut self, label: u32, crop: &RgbImage) -> Result<()> {
        if self.writer.is_none() {
            let name = format!("shard-{:05}.pms", self.shard_names.len());
            let size = self.config.preprocess.size;
            self.writer = Some(ShardWriter::create(&self.dir.join(&name), size, size)?);
            self.shard_names.push(name);
        }
        if let Some(writer) = self.writer.as_mut() {
            writer.push(label, crop.as_raw())?;
            self.report.images += 1;
        }
        Ok(())
    }

    /// Closes the identity in progress; one that never reached `min_images` is dropped.
    fn end_identity(&mut self) {
        if self.current.take().is_some_and(|p| p.label.is_none()) {
            self.report.too_few_images += 1;
        }
    }

    fn finish_shard(&mut self) -> Result<()> {
        match self.writer.take() {
            Some(writer) => writer.finish(),
            None => Ok(()),
        }
    }

    fn finish(mut self) -> Result<(Vec<String>, Vec<String>)> {
        self.end_identity();
        self.finish_shard()?;
        Ok((self.kept, self.shard_names))
    }
}

/// Writes `manifest.json` into the staging folder and fsyncs it.
fn write_manifest(dir: &Path, manifest: &Manifest) -> Result<()> {
    let path = dir.join("manifest.json");
    let json = serde_json::to_vec_pretty(manifest).map_err(|e| {
        Error::Config(format!(
            "{}: cannot serialise the manifest: {e}",
            path.display()
        ))
    })?;
    let mut file = File::create(&path).map_err(|e| Error::io(&path, e))?;
    file.write_all(&json).map_err(|e| Error::io(&path, e))?;
    file.sync_all().map_err(|e| Error::io(&path, e))
}

/// The hidden sibling folder a dataset is built in; removed on drop unless committed.
struct Staging {
    path: PathBuf,
    committed: bool,
}

impl Staging {
    fn create(out_dir: &Path) -> Result<Staging> {
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
        let path = out_dir.with_file_name(staging_name);
        std::fs::create_dir(&path).map_err(|e| Error::io(&path, e))?;
        Ok(Staging {
            path,
            committed: false,
        })
    }

    fn path(&self) -> &Path {
        &self.path
    }

    /// Moves the finished dataset to `out_dir` (replacing an empty folder there).
    fn commit(mut self, out_dir: &Path) -> Result<()> {
        sync_parent(&self.path.join("manifest.json"))?;
        if out_dir.is_dir() {
            std::fs::remove_dir(out_dir).map_err(|e| Error::io(out_dir, e))?;
        }
        std::fs::rename(&self.path, out_dir).map_err(|e| Error::io(out_dir, e))?;
        self.committed = true;
        sync_parent(out_dir)
    }
}

impl Drop for Staging {
    fn drop(&mut self) {
        if !self.committed {
            // Best effort: the folder was created by this run and holds only partial output.
            let _ = std::fs::remove_dir_all(&self.path);
        }
    }
}

/// Reads an identity list: one name per line (blank lines and `#` comments ignored); if
/// `column` is Some, the file is TSV with a header row and that column is taken (error naming
/// the file if the column is absent).
///
/// # Errors
/// [`Error::Io`] if the file cannot be read; [`Error::Parse`] naming the file and line for a
/// missing column, a short row or an empty name.
pub fn read_name_list(path: &Path, column: Option<&str>) -> Result<BTreeSet<String>> {
    let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
    let text = text.strip_prefix('\u{feff}').unwrap_or(&text);
    let is_content = |line: &&str| !line.trim().is_empty() && !line.trim_start().starts_with('#');
    match column {
        None => Ok(text
            .lines()
            .filter(is_content)
            .map(|l| l.trim().to_owned())
            .collect()),
        Some(column) => tsv_column(text, column, path),
    }
}

/// The values of `column` in a TSV text with a header row.
fn tsv_column(text: &str, column: &str, path: &Path) -> Result<BTreeSet<String>> {
    let parse_error = |line: usize, what: String| Error::Parse {
        path: path.to_path_buf(),
        line,
        what,
    };
    let mut lines = text.lines().enumerate();
    let header = lines.next().map(|(_, l)| l).unwrap_or_default();
    let fields: Vec<&str> = header.split('\t').map(str::trim).collect();
    let Some(index) = fields.iter().position(|&f| f == column) else {
        let what = format!(
            "no column `{column}` in the header (columns: {})",
            fields.join(", ")
        );
        return Err(parse_error(1, what));
    };

    let mut names = BTreeSet::new();
    for (i, line) in lines {
        if line.trim().is_empty() || line.trim_start().starts_with('#') {
            continue;
        }
        let value = line
            .split('\t')
            .nth(index)
            .map(str::trim)
            .unwrap_or_default();
        if value.is_empty() {
            return Err(parse_error(i + 1, format!("no value in column `{column}`")));
        }
        names.insert(value.to_owned());
    }
    Ok(names)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
        let path = dir.join(name);
        std::fs::write(&path, text).unwrap();
        path
    }

    #[test]
    fn plain_list_skips_blanks_and_comments() {
        let dir = tempfile::tempdir().unwrap();
        let path = write(dir.path(), "ids.txt", "# header\n006\n\n  009 \n#012\n");
        let names = read_name_list(&path, None).unwrap();
        assert_eq!(names.into_iter().collect::<Vec<_>>(), ["006", "009"]);
    }

    #[test]
    fn tsv_column_is_taken_and_missing_column_named() {
        let dir = tempfile::tempdir().unwrap();
        let text = concat!(
            "cfp_id\tcfp_name\tlfw_folder\r\n",
            "006\tAdam Sandler\tAdam_Sandler\r\n",
            "009\tAishwarya Rai\tAishwarya_Rai\r\n",
        );
        let path = write(dir.path(), "names.tsv", text);
        let names = read_name_list(&path, Some("lfw_folder")).unwrap();
        assert_eq!(
            names.into_iter().collect::<Vec<_>>(),
            ["Adam_Sandler", "Aishwarya_Rai"]
        );

        let err = read_name_list(&path, Some("nope")).unwrap_err();
        assert!(
            matches!(&err, Error::Parse { path: p, line: 1, .. } if *p == path),
            "{err}"
        );
        assert!(err.to_string().contains("nope"));
    }

    #[test]
    fn tsv_short_row_names_its_line() {
        let dir = tempfile::tempdir().unwrap();
        let path = write(dir.path(), "names.tsv", "a\tb\n1\t2\n3\n");
        let err = read_name_list(&path, Some("b")).unwrap_err();
        assert!(matches!(err, Error::Parse { line: 3, .. }), "{err}");
    }

    #[test]
    fn image_extensions_are_case_insensitive() {
        assert!(has_image_extension(Path::new("a/b.JPG")));
        assert!(has_image_extension(Path::new("a/b.png")));
        assert!(!has_image_extension(Path::new("a/b.txt")));
        assert!(!has_image_extension(Path::new("a/jpg")));
    }
}
