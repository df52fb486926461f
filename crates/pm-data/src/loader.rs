//! Turns sampler picks into training batches: reads the records from the mapped shards,
//! decodes encoded ones, converts RGB8 HWC to `f32` NCHW scaled to [-1, 1], applies the flip,
//! in parallel over the batch (rayon), and prefetches a bounded number of batches on a
//! background thread, so the trainer waits on data only when decoding a batch takes longer
//! than computing one.
//!
//! Shapes: a batch of B = P·K images is `images: [B, 3, H, W]` (row-major `Vec<f32>`) with
//! `labels: [B]`, identity-major (the K images of one identity are adjacent).

use std::sync::Arc;
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};
use std::thread::JoinHandle;

use rayon::prelude::*;

use std::borrow::Cow;

use crate::preprocess::decode;
use crate::sampler::{Pick, PkSampler, SamplerState};
use crate::shard::Storage;
use crate::{Dataset, Error, Result};

/// One training batch.
#[derive(Clone, Debug)]
pub struct Batch {
    /// Pixels, `[B, 3, H, W]` row-major, in [-1, 1].
    pub images: Vec<f32>,
    /// `[B, 3, H, W]`.
    pub shape: [usize; 4],
    /// Identity label of each image.
    pub labels: Vec<u32>,
    /// Images per identity (the batch is identity-major).
    pub images_per_identity: usize,
    /// The sampler's state after drawing this batch: what a checkpoint taken after training
    /// on this batch must store.
    pub sampler_after: SamplerState,
    /// Records that could not be read (checksum, decode) and were replaced by another image of
    /// the same identity, each with its error.
    pub replaced: Vec<String>,
}

/// The image counts of every identity of a dataset, in label order (the sampler's input).
pub fn identity_counts(dataset: &Dataset) -> Result<Vec<u32>> {
    (0..dataset.n_identities() as u32)
        .map(|label| {
            dataset
                .identity(label)
                .map(|ids| ids.count)
                .ok_or_else(|| Error::Config(format!("identity {label} missing from the index")))
        })
        .collect()
}

/// Reads, decodes and converts the picked images into a batch.
///
/// A record that fails its checksum or does not decode is skipped, logged and replaced by the
/// next readable image of the same identity; [`Batch::replaced`] lists what was replaced.
///
/// # Errors
/// A pick outside the dataset, or an identity none of whose images can be read.
pub fn assemble(dataset: &Dataset, picks: &[Pick], images_per_identity: usize) -> Result<Batch> {
    let (height, width) = dataset.image_size();
    let plane = height as usize * width as usize;
    let mut images = vec![0f32; picks.len() * 3 * plane];
    let replaced: Vec<Vec<String>> = images
        .par_chunks_mut(3 * plane)
        .zip(picks.par_iter())
        .map(|(out, pick)| {
            let (pixels, replaced) = readable_pixels(dataset, pick)?;
            write_chw(&pixels, width as usize, pick.flip, out);
            Ok::<_, Error>(replaced)
        })
        .collect::<Result<_>>()?;
    Ok(Batch {
        images,
        shape: [picks.len(), 3, height as usize, width as usize],
        labels: picks.iter().map(|p| p.label).collect(),
        images_per_identity,
        sampler_after: SamplerState::default(),
        replaced: replaced.into_iter().flatten().collect(),
    })
}

/// The RGB8 pixels of the pick, or of the next readable image of its identity; with the
/// errors of the records passed over.
fn readable_pixels<'a>(dataset: &'a Dataset, pick: &Pick) -> Result<(Cow<'a, [u8]>, Vec<String>)> {
    let ids = dataset
        .identity(pick.label)
        .ok_or_else(|| Error::Config(format!("label {} is not in the dataset", pick.label)))?;
    if pick.image >= ids.count {
        return Err(Error::Config(format!(
            "image {} of identity {} does not exist (it has {})",
            pick.image, pick.label, ids.count
        )));
    }
    let mut replaced = Vec::new();
    for step in 0..ids.count {
        let image = (pick.image + step) % ids.count;
        match rgb_record(dataset, ids.shard, ids.first + u64::from(image)) {
            Ok(pixels) => return Ok((pixels, replaced)),
            Err(e) => {
                tracing::warn!(label = pick.label, image, error = %e, "replacing an unreadable image");
                replaced.push(e.to_string());
            }
        }
    }
    Err(Error::Config(format!(
        "identity {} has no readable image: {}",
        pick.label,
        replaced.join("; ")
    )))
}

/// The RGB8 HWC pixels of a record: the stored bytes of a raw shard, the decoded image of an
/// encoded one (which must have the dataset's size).
///
/// # Errors
/// [`Error::Record`] for a checksum mismatch, an undecodable image or a wrong size.
pub fn rgb_record(dataset: &Dataset, shard: u32, record: u64) -> Result<Cow<'_, [u8]>> {
    let (bytes, storage) = dataset.record(shard, record)?;
    if storage == Storage::Raw {
        return Ok(Cow::Borrowed(bytes));
    }
    let path = dataset
        .shards()
        .get(shard as usize)
        .map(|s| s.path().to_path_buf());
    decode_record(
        bytes,
        &path.unwrap_or_default(),
        record,
        dataset.image_size(),
    )
    .map(Cow::Owned)
}

/// Decodes an encoded record of the shard at `path` to RGB8 HWC, checking that it has
/// `(height, width)`.
///
/// # Errors
/// [`Error::Record`] naming the shard and record for an undecodable image or a wrong size.
pub(crate) fn decode_record(
    bytes: &[u8],
    path: &std::path::Path,
    record: u64,
    (height, width): (u32, u32),
) -> Result<Vec<u8>> {
    let record_error = |what: String| Error::Record {
        path: path.to_path_buf(),
        record,
        what,
    };
    let img = decode(bytes, path)
        .map_err(|e| record_error(e.to_string()))?
        .to_rgb8();
    if (img.height(), img.width()) != (height, width) {
        let what = format!(
            "decodes to {}×{}, the dataset is {height}×{width}",
            img.height(),
            img.width()
        );
        return Err(record_error(what));
    }
    Ok(img.into_raw())
}

/// Converts one RGB8 HWC image into CHW `f32` in [-1, 1], optionally mirrored.
///
/// `out` holds `3 × plane` values; pixels beyond the plane (or a short `pixels`) are ignored.
pub fn write_chw(pixels: &[u8], width: usize, flip: bool, out: &mut [f32]) {
    let plane = out.len() / 3;
    let (red, rest) = out.split_at_mut(plane);
    let (green, blue) = rest.split_at_mut(plane);
    let rows = pixels
        .chunks_exact(3 * width.max(1))
        .take(plane / width.max(1));
    for (y, row) in rows.enumerate() {
        let at = y * width;
        let (r, g, b) = (
            &mut red[at..at + width],
            &mut green[at..at + width],
            &mut blue[at..at + width],
        );
        for (x, rgb) in row.chunks_exact(3).enumerate() {
            let x = if flip { width - 1 - x } else { x };
            r[x] = f32::from(rgb[0]) / 127.5 - 1.0;
            g[x] = f32::from(rgb[1]) / 127.5 - 1.0;
            b[x] = f32::from(rgb[2]) / 127.5 - 1.0;
        }
    }
}

/// A background thread that keeps up to `depth` batches ready.
pub struct Prefetcher {
    receiver: Receiver<Result<Batch>>,
    worker: Option<JoinHandle<()>>,
}

impl Prefetcher {
    /// Starts drawing from `sampler` (already positioned) over `dataset`.
    pub fn start(dataset: Arc<Dataset>, sampler: PkSampler, depth: usize) -> Self {
        let (sender, receiver) = sync_channel(depth.max(1));
        let worker = std::thread::spawn(move || produce(dataset, sampler, sender));
        Self {
            receiver,
            worker: Some(worker),
        }
    }

    /// The next batch, waiting for it if needed.
    ///
    /// # Errors
    /// The error the worker met while reading, or [`Error::Config`] if it stopped.
    pub fn next_batch(&self) -> Result<Batch> {
        self.receiver
            .recv()
            .map_err(|_| Error::Config("the batch prefetch thread stopped".into()))?
    }
}

impl Drop for Prefetcher {
    fn drop(&mut self) {
        // Closing the channel stops the worker at its next send.
        let (_, closed) = sync_channel(1);
        drop(std::mem::replace(&mut self.receiver, closed));
        if let Some(worker) = self.worker.take() {
            let _ = worker.join();
        }
    }
}

fn produce(dataset: Arc<Dataset>, mut sampler: PkSampler, sender: SyncSender<Result<Batch>>) {
    let k = sampler.config().images_per_identity;
    loop {
        let picks = sampler.next_batch();
        let batch = assemble(&dataset, &picks, k).map(|mut batch| {
            batch.sampler_after = sampler.state();
            batch
        });
        let failed = batch.is_err();
        if sender.send(batch).is_err() || failed {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chw_conversion_scales_and_flips() {
        // 2x1 image: left pixel black, right pixel white.
        let pixels = [0u8, 0, 0, 255, 255, 255];
        let mut out = [0f32; 6];
        write_chw(&pixels, 2, false, &mut out);
        assert_eq!(out, [-1.0, 1.0, -1.0, 1.0, -1.0, 1.0]);
        write_chw(&pixels, 2, true, &mut out);
        assert_eq!(out, [1.0, -1.0, 1.0, -1.0, 1.0, -1.0]);
    }
}
