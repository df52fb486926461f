//! Embedding the images of a protocol, the field's way: decode, preprocess to the model's
//! input, embed the image and its horizontal flip, and L2-normalise the sum of the two.
//!
//! Two embedders: a trained or untrained [`Encoder`], and [`RawPixels`] — the preprocessed
//! image itself as a vector, the reference a learned encoder must beat.

use std::path::PathBuf;

use candle_core::{Device, ModuleT, Tensor};
use pm_data::{Preprocess, write_chw};
use pm_models::Encoder;
use rayon::prelude::*;

use crate::Result;

/// Maps a batch of images `[n, 3, S, S]` (row-major, in [-1, 1]) to `[n, dim]` features.
pub trait Embedder: Sync {
    /// Feature dimension.
    fn dim(&self, side: usize) -> usize;
    /// Features of `n` images, row-major.
    ///
    /// # Errors
    /// A tensor operation failed.
    fn embed(&self, images: Vec<f32>, n: usize, side: usize) -> Result<Vec<f32>>;
}

/// The preprocessed pixels as the embedding.
#[derive(Clone, Copy, Debug, Default)]
pub struct RawPixels;

impl Embedder for RawPixels {
    fn dim(&self, side: usize) -> usize {
        3 * side * side
    }

    fn embed(&self, images: Vec<f32>, _: usize, _: usize) -> Result<Vec<f32>> {
        Ok(images)
    }
}

/// An encoder in inference mode on the CPU.
#[derive(Debug)]
pub struct EncoderEmbedder<'a> {
    encoder: &'a Encoder,
}

impl<'a> EncoderEmbedder<'a> {
    /// Wraps `encoder`.
    pub fn new(encoder: &'a Encoder) -> Self {
        Self { encoder }
    }
}

impl Embedder for EncoderEmbedder<'_> {
    fn dim(&self, _: usize) -> usize {
        self.encoder.config().embedding_dim
    }

    fn embed(&self, images: Vec<f32>, n: usize, side: usize) -> Result<Vec<f32>> {
        let xs = Tensor::from_vec(images, (n, 3, side, side), &Device::Cpu)?;
        let ys = self.encoder.forward_t(&xs, false)?;
        Ok(ys.flatten_all()?.to_vec1::<f32>()?)
    }
}

/// Embeds `paths` (each once) with flip augmentation; returns `[paths.len(), dim]` row-major,
/// rows L2-normalised.
///
/// # Errors
/// An image that cannot be read or preprocessed (named in the error), or a tensor error.
pub fn embed_images(
    paths: &[PathBuf],
    preprocess: &Preprocess,
    embedder: &dyn Embedder,
    batch_size: usize,
) -> Result<Vec<f32>> {
    let side = preprocess.size as usize;
    let dim = embedder.dim(side);
    let mut out = Vec::with_capacity(paths.len() * dim);
    for chunk in paths.chunks(batch_size.max(1)) {
        let (plain, flipped) = load_batch(chunk, preprocess)?;
        let a = embedder.embed(plain, chunk.len(), side)?;
        let b = embedder.embed(flipped, chunk.len(), side)?;
        for (ra, rb) in a.chunks_exact(dim).zip(b.chunks_exact(dim)) {
            out.extend(normalized_sum(ra, rb));
        }
    }
    Ok(out)
}

/// Decodes a chunk in parallel into plain and mirrored `[n, 3, S, S]` buffers.
fn load_batch(paths: &[PathBuf], preprocess: &Preprocess) -> Result<(Vec<f32>, Vec<f32>)> {
    let side = preprocess.size as usize;
    let len = 3 * side * side;
    let mut plain = vec![0f32; paths.len() * len];
    let mut flipped = vec![0f32; paths.len() * len];
    plain
        .par_chunks_mut(len)
        .zip(flipped.par_chunks_mut(len))
        .zip(paths.par_iter())
        .try_for_each(|((p, f), path)| {
            let image = preprocess.load(path)?;
            write_chw(image.as_raw(), side, false, p);
            write_chw(image.as_raw(), side, true, f);
            Ok::<(), crate::Error>(())
        })?;
    Ok((plain, flipped))
}

fn normalized_sum(a: &[f32], b: &[f32]) -> Vec<f32> {
    let sum: Vec<f32> = a.iter().zip(b).map(|(x, y)| x + y).collect();
    let norm = sum.iter().map(|v| v * v).sum::<f32>().sqrt().max(1e-12);
    sum.iter().map(|v| v / norm).collect()
}

/// Verifies `protocol` with each named embedder, in order.
///
/// # Errors
/// As [`embed_images`] and [`crate::verify`].
pub fn evaluate(
    protocol: &crate::PairProtocol,
    preprocess: &Preprocess,
    embedders: &[(&str, &dyn Embedder)],
) -> Result<Vec<crate::VerificationResult>> {
    let side = preprocess.size as usize;
    embedders
        .iter()
        .map(|(name, embedder)| {
            tracing::info!(protocol = %protocol.name, model = name, images = protocol.images.len(), "embedding");
            let features = embed_images(&protocol.images, preprocess, *embedder, 128)?;
            crate::verify(protocol, &features, embedder.dim(side), name)
        })
        .collect()
}
