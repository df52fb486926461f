//! Scoring a protocol from precomputed embeddings, and a text table of the results.
//!
//! `verify` takes the embeddings of a protocol's unique images (row-major, `n_images × dim`),
//! scores every pair by cosine similarity and computes k-fold accuracy and TAR@FAR=1e-3.

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::metrics::{FoldAccuracy, TarAtFar, kfold_accuracy, tar_at_far};
use crate::protocol::PairProtocol;

/// The FAR bound at which [`verify`] reports TAR.
pub const TAR_FAR_TARGET: f64 = 1e-3;

/// The threshold rule, stated in every result so that numbers are never compared across rules.
const THRESHOLD_RULE: &str = "per fold, the threshold with the best accuracy on the other folds \
    (exact search, smallest on ties; same iff cosine > threshold); mean and population std of \
    fold accuracies; TAR at the lowest threshold with FAR <= target over all pairs";

/// One model scored on one protocol.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct VerificationResult {
    /// Protocol name, e.g. `lfw`.
    pub protocol: String,
    /// Model name or checkpoint.
    pub model: String,
    /// Number of pairs scored.
    pub pairs: usize,
    /// Number of folds.
    pub folds: usize,
    /// k-fold accuracy.
    pub accuracy: FoldAccuracy,
    /// TAR at FAR <= [`TAR_FAR_TARGET`] over all pairs.
    pub tar_at_far: TarAtFar,
    /// How thresholds were chosen and which std is reported.
    pub threshold_rule: String,
}

/// Scores every pair of `protocol` by the cosine of its two embeddings and evaluates the scores.
///
/// `embeddings` is row-major `protocol.images.len() × dim`, one row per image in
/// `protocol.images` order; rows need not be normalised.
///
/// # Errors
/// [`Error::Protocol`] if `dim` is 0, the buffer length does not match, a pair index is out of
/// range, a row is zero or not finite, or the metrics reject the scores.
pub fn verify(
    protocol: &PairProtocol,
    embeddings: &[f32],
    dim: usize,
    model: &str,
) -> Result<VerificationResult> {
    let scores = pair_scores(protocol, embeddings, dim)?;
    let same: Vec<bool> = protocol.pairs.iter().map(|pair| pair.same).collect();
    let accuracy = kfold_accuracy(&scores, &same, protocol.folds)?;
    let tar_at_far = tar_at_far(&scores, &same, TAR_FAR_TARGET)?;

    tracing::info!(
        protocol = %protocol.name,
        model,
        accuracy = accuracy.mean,
        std = accuracy.std,
        tar = tar_at_far.tar,
        "verification"
    );
    Ok(VerificationResult {
        protocol: protocol.name.clone(),
        model: model.to_owned(),
        pairs: protocol.pairs.len(),
        folds: protocol.folds,
        accuracy,
        tar_at_far,
        threshold_rule: THRESHOLD_RULE.to_owned(),
    })
}

/// Cosine similarity of every pair.
fn pair_scores(protocol: &PairProtocol, embeddings: &[f32], dim: usize) -> Result<Vec<f32>> {
    let n_images = protocol.images.len();
    if dim == 0 || n_images.checked_mul(dim) != Some(embeddings.len()) {
        let what = format!(
            "{} embedding values do not form {n_images} images × dim {dim}",
            embeddings.len()
        );
        return Err(Error::Protocol(what));
    }
    let rows: Vec<&[f32]> = embeddings.chunks_exact(dim).collect();
    let norms = row_norms(protocol, &rows)?;

    let mut scores = Vec::with_capacity(protocol.pairs.len());
    for (k, pair) in protocol.pairs.iter().enumerate() {
        if pair.a >= n_images || pair.b >= n_images {
            let what = format!(
                "pair {k} refers to image {} of {n_images}",
                pair.a.max(pair.b)
            );
            return Err(Error::Protocol(what));
        }
        let dot: f64 = rows[pair.a]
            .iter()
            .zip(rows[pair.b])
            .map(|(&x, &y)| f64::from(x) * f64::from(y))
            .sum();
        scores.push((dot / (norms[pair.a] * norms[pair.b])) as f32);
    }
    Ok(scores)
}

/// L2 norm of each row; a zero or non-finite row is an error naming its image.
fn row_norms(protocol: &PairProtocol, rows: &[&[f32]]) -> Result<Vec<f64>> {
    rows.iter()
        .zip(&protocol.images)
        .map(|(row, image)| {
            let norm = row
                .iter()
                .map(|&x| f64::from(x).powi(2))
                .sum::<f64>()
                .sqrt();
            if norm > 0.0 && norm.is_finite() {
                Ok(norm)
            } else {
                let what = format!("embedding of {} has norm {norm}", image.display());
                Err(Error::Protocol(what))
            }
        })
        .collect()
}

/// A small aligned text table, one line per result:
/// protocol, model, accuracy mean ± std (%), TAR@FAR=1e-3 (%).
pub fn format_table(results: &[VerificationResult]) -> String {
    let header = ["protocol", "model", "accuracy (%)", "TAR@FAR=1e-3 (%)"].map(str::to_owned);
    let mut rows = vec![header];
    rows.extend(results.iter().map(table_row));

    let mut widths = [0usize; 4];
    for row in &rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }

    let mut table = String::new();
    for row in &rows {
        let line = format!(
            "{:<w0$}  {:<w1$}  {:>w2$}  {:>w3$}",
            row[0],
            row[1],
            row[2],
            row[3],
            w0 = widths[0],
            w1 = widths[1],
            w2 = widths[2],
            w3 = widths[3],
        );
        table.push_str(line.trim_end());
        table.push('\n');
    }
    table
}

/// The four cells of one result; a TAR at another FAR bound says which.
fn table_row(result: &VerificationResult) -> [String; 4] {
    let accuracy = format!(
        "{:.2} ± {:.2}",
        result.accuracy.mean * 100.0,
        result.accuracy.std * 100.0
    );
    let tar = &result.tar_at_far;
    let tar = if tar.far_target == TAR_FAR_TARGET {
        format!("{:.2}", tar.tar * 100.0)
    } else {
        format!("{:.2} (at FAR {:e})", tar.tar * 100.0, tar.far_target)
    };
    [result.protocol.clone(), result.model.clone(), accuracy, tar]
}
