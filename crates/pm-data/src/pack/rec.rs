//! The RecordIO importer: an insightface/MXNet training set (`train.rec`, `train.idx`,
//! `property`) read by [`crate::RecordIo`] in any of the layouts it detects. Class `c` becomes
//! the identity named `c`; images stay in key order within a class.
//!
//! With encoded storage an image that already has the dataset's size is stored as it came
//! (the JPEG bytes of the record, after a test decode); any other image is decoded, resized
//! and stored raw or re-encoded.

use std::path::{Path, PathBuf};

use image::imageops::FilterType;

use super::{Candidate, PackConfig, PackReport, Source, Stored, apply_exclusions, run_pack};
use crate::error::{Error, Result};
use crate::preprocess::{MAX_SIZE, Preprocess, decode};
use crate::recordio::{RecordIo, RecordIoImage};
use crate::shard::Storage;

/// Packs a RecordIO set (a folder with `train.rec`, or the `.rec` file itself) into a
/// dataset at `out_dir`, with images of `size × size` pixels (`None`: the size in `property`,
/// or that of the first image when there is no `property`).
///
/// `config.preprocess` is not used: RecordIO sets hold aligned crops already. Metadata
/// records are never decoded; undecodable or truncated images are skipped and reported with
/// their key, never fatal.
///
/// # Errors
/// The errors of [`RecordIo::open`] (layout, labels, `property` class count), and those of
/// [`crate::pack_folder`] for the configuration and the output.
pub fn pack_recordio(
    path: &Path,
    out_dir: &Path,
    config: &PackConfig,
    size: Option<u32>,
) -> Result<PackReport> {
    let rec = RecordIo::open(path)?;
    let mut report = PackReport {
        notes: rec.notes().to_vec(),
        ..PackReport::default()
    };
    rec.notes()
        .iter()
        .for_each(|note| tracing::info!(note = %note, "RecordIO"));

    let image_size = match (size, rec.property()) {
        (Some(0), _) => return Err(Error::Config("image size must be at least 1".into())),
        (Some(size), _) => (size, size),
        (None, Some(p)) if p.height > 0 && p.width > 0 => (p.height, p.width),
        _ => first_image_size(&rec)?,
    };
    let (height, width) = image_size;
    if height > MAX_SIZE || width > MAX_SIZE {
        let what = format!(
            "{}: images of {height}×{width} (from `property` or --size) are beyond the \
             {MAX_SIZE}×{MAX_SIZE} this packer accepts; pass --size",
            rec.rec_path().display()
        );
        return Err(Error::Config(what));
    }
    let candidates = class_candidates(&rec);
    let description = rec.rec_path().display().to_string();
    let candidates = apply_exclusions(candidates, config, &description, &mut report)?;
    let source = RecSource { rec, image_size };
    run_pack(&source, &candidates, out_dir, config, report)
}

/// One candidate per class, its images in key order.
fn class_candidates(rec: &RecordIo) -> Vec<Candidate<RecordIoImage>> {
    let n_classes = usize::try_from(rec.n_classes()).unwrap_or(0);
    let mut classes: Vec<Vec<RecordIoImage>> = vec![Vec::new(); n_classes];
    for image in rec.images() {
        if let Some(class) = classes.get_mut(image.label as usize) {
            class.push(*image);
        }
    }
    (0..)
        .zip(classes)
        .map(|(label, items): (u64, _)| Candidate {
            name: label.to_string(),
            items,
        })
        .collect()
}

/// (height, width) of the first decodable image.
fn first_image_size(rec: &RecordIo) -> Result<(u32, u32)> {
    for image in rec.images() {
        let Ok(bytes) = rec.image_bytes(image) else {
            continue;
        };
        if let Ok(img) = decode(&bytes, rec.rec_path()) {
            return Ok((img.height(), img.width()));
        }
    }
    let what = format!(
        "{}: no `property` file and no decodable image to take the size from",
        rec.rec_path().display()
    );
    Err(Error::Config(what))
}

struct RecSource {
    rec: RecordIo,
    image_size: (u32, u32),
}

impl Source for RecSource {
    type Item = RecordIoImage;

    fn load(&self, item: &RecordIoImage, storage: Storage) -> Result<Stored> {
        let bytes = self.rec.image_bytes(item)?;
        let img = decode(&bytes, self.rec.rec_path()).map_err(|e| match e {
            Error::Decode { path, reason } => Error::Decode {
                path,
                reason: format!("record key {}: {reason}", item.key),
            },
            other => other,
        })?;
        let (height, width) = self.image_size;
        if (img.height(), img.width()) == (height, width) && storage == Storage::Encoded {
            return Ok(Stored::Encoded(bytes.into_owned()));
        }
        let rgb = img.to_rgb8();
        let rgb = match (rgb.height(), rgb.width()) == (height, width) {
            true => rgb,
            false => image::imageops::resize(&rgb, width, height, FilterType::Triangle),
        };
        Stored::from_crop(rgb, storage)
    }

    fn locate(&self, item: &RecordIoImage) -> (PathBuf, Option<u64>) {
        (self.rec.rec_path().to_path_buf(), Some(item.key))
    }

    fn image_size(&self) -> (u32, u32) {
        self.image_size
    }

    fn preprocess(&self) -> Option<Preprocess> {
        None
    }

    fn describe(&self) -> String {
        self.rec.rec_path().display().to_string()
    }
}
