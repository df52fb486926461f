//! Turns sampler picks into training batches: reads the records from the mapped shards,
//! converts RGB8 HWC to `f32` NCHW scaled to [-1, 1], applies the flip, in parallel over the
//! batch (rayon), and prefetches a bounded number of batches on a background thread.
//!
//! Shapes: a batch of B = P·K images is `images: [B, 3, H, W]` (row-major `Vec<f32>`) with
//! `labels: [B]`, identity-major (the K images of one identity are adjacent).

use std::sync::Arc;
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};
use std::thread::JoinHandle;

use rayon::prelude::*;

use crate::sampler::{Pick, PkSampler, SamplerState};
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

/// Reads and converts the picked images into a batch.
///
/// # Errors
/// A record that fails its checksum, or a pick outside its identity.
pub fn assemble(dataset: &Dataset, picks: &[Pick], images_per_identity: usize) -> Result<Batch> {
    let (height, width) = dataset.image_size();
    let plane = height as usize * width as usize;
    let mut images = vec![0f32; picks.len() * 3 * plane];
    images
        .par_chunks_mut(3 * plane)
        .zip(picks.par_iter())
        .try_for_each(|(out, pick)| {
            let pixels = record_pixels(dataset, pick)?;
            write_chw(pixels, width as usize, pick.flip, out);
            Ok::<(), Error>(())
        })?;
    Ok(Batch {
        images,
        shape: [picks.len(), 3, height as usize, width as usize],
        labels: picks.iter().map(|p| p.label).collect(),
        images_per_identity,
        sampler_after: SamplerState::default(),
    })
}

fn record_pixels<'a>(dataset: &'a Dataset, pick: &Pick) -> Result<&'a [u8]> {
    let ids = dataset
        .identity(pick.label)
        .ok_or_else(|| Error::Config(format!("label {} is not in the dataset", pick.label)))?;
    if pick.image >= ids.count {
        return Err(Error::Config(format!(
            "image {} of identity {} does not exist (it has {})",
            pick.image, pick.label, ids.count
        )));
    }
    dataset.pixels(ids.shard, ids.first + pick.image as u64)
}

/// Converts one RGB8 HWC image into CHW `f32` in [-1, 1], optionally mirrored.
pub fn write_chw(pixels: &[u8], width: usize, flip: bool, out: &mut [f32]) {
    let plane = out.len() / 3;
    for (i, rgb) in pixels.chunks_exact(3).enumerate().take(plane) {
        let (y, x) = (i / width, i % width);
        let x = if flip { width - 1 - x } else { x };
        let o = y * width + x;
        for (c, &v) in rgb.iter().enumerate() {
            out[c * plane + o] = v as f32 / 127.5 - 1.0;
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
