//! The folder importer: `<root>/<identity>/**/<image>` (the LFW layout; CFP's
//! `Data/Images/<id>/{frontal,profile}/NN.jpg` also works).

use std::path::{Path, PathBuf};

use super::{Candidate, PackConfig, PackReport, Source, Stored, apply_exclusions, run_pack, skip};
use crate::error::{Error, Result};
use crate::preprocess::Preprocess;
use crate::shard::Storage;

/// File extensions (lower case) taken as images.
const IMAGE_EXTENSIONS: [&str; 4] = ["jpg", "jpeg", "png", "bmp"];

/// Packs `<root>/<identity>/**/<image>` into a dataset at `out_dir`.
///
/// Identities are the direct subfolders of root, sorted by name; labels in that order over
/// the kept identities. Image files have the extensions jpg/jpeg/png/bmp (case-insensitive);
/// every image file below the identity folder is taken, recursively, sorted by path. Other
/// files, hidden entries and symlinked folders below an identity are skipped and reported.
/// Undecodable or truncated images are skipped, reported and logged, never fatal.
///
/// # Errors
/// [`Error::Io`] naming `root` if it is missing; [`Error::Config`] for an invalid config, an
/// output folder that is not empty (or, with `append`, not a dataset), a bad landmark setup,
/// an exclusion list that matches nothing, or when no identity is kept; [`Error::Io`] for
/// failures writing the output.
pub fn pack_folder(root: &Path, out_dir: &Path, config: &PackConfig) -> Result<PackReport> {
    config.preprocess.validate()?;
    let mut report = PackReport::default();
    let candidates = scan_identities(root, &mut report)?;
    let source_name = root.display().to_string();
    let candidates = apply_exclusions(candidates, config, &source_name, &mut report)?;
    let source = FilesSource {
        description: source_name,
        preprocess: config.preprocess.clone(),
    };
    run_pack(&source, &candidates, out_dir, config, report)
}

/// Image files read through a [`Preprocess`] (folder and list imports).
pub(crate) struct FilesSource {
    pub(crate) description: String,
    pub(crate) preprocess: Preprocess,
}

impl Source for FilesSource {
    type Item = PathBuf;

    fn load(&self, item: &PathBuf, storage: Storage) -> Result<Stored> {
        Stored::from_crop(self.preprocess.load(item)?, storage)
    }

    fn locate(&self, item: &PathBuf) -> (PathBuf, Option<u64>) {
        (item.clone(), None)
    }

    fn image_size(&self) -> (u32, u32) {
        (self.preprocess.size, self.preprocess.size)
    }

    fn preprocess(&self) -> Option<Preprocess> {
        Some(self.preprocess.clone())
    }

    fn describe(&self) -> String {
        self.description.clone()
    }
}

/// Lists the identity folders of `root` in name order with their image files.
fn scan_identities(root: &Path, report: &mut PackReport) -> Result<Vec<Candidate<PathBuf>>> {
    let mut candidates = Vec::new();
    for path in read_dir_sorted(root)? {
        // Identity folders may be symlinks (a hand-made subset of a larger tree).
        let is_dir = std::fs::metadata(&path).is_ok_and(|m| m.is_dir());
        let name = path.file_name().and_then(|n| n.to_str()).map(str::to_owned);
        match name {
            _ if is_hidden(&path) => skip(report, &path, "hidden entry"),
            _ if !is_dir => skip(report, &path, "not an identity folder"),
            None => skip(report, &path, "identity folder name is not UTF-8"),
            Some(name) => {
                let mut items = Vec::new();
                collect_images(&path, &mut items, report)?;
                items.sort();
                candidates.push(Candidate { name, items });
            }
        }
    }
    Ok(candidates)
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn image_extensions_are_case_insensitive() {
        assert!(has_image_extension(Path::new("a/b.JPG")));
        assert!(has_image_extension(Path::new("a/b.png")));
        assert!(!has_image_extension(Path::new("a/b.txt")));
        assert!(!has_image_extension(Path::new("a/jpg")));
    }
}
