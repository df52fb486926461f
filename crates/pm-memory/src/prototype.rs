//! Fresh prototypes from the embeddings of a P×K batch.
//!
//! ```text
//! z_i   = x_i / ‖x_i‖                     normalised embedding of image i
//! w_i   = 1/K            (equal)          exemplar weight
//!       = ‖x_i‖ / Σ_j ‖x_j‖ (norm)         over the K images j of the same identity
//! p_c   = Σ_i w_i z_i / ‖Σ_i w_i z_i‖      prototype of identity c
//! ```
//! With [`PrototypeSource::LeaveOneOut`] the positive of image i is the prototype of the other
//! K−1 images of its identity, `p_c∖i = Σ_{j≠i} w_j z_j / ‖·‖` ([`leave_one_out`]), so an image
//! never scores against a mean that contains itself; the memory still stores the full `p_c`.
//!
//! With [`PrototypeGrad::Detached`] the prototype is a constant for the loss (as in every
//! known peer); with [`PrototypeGrad::Through`] the loss's gradient flows through the mean into
//! the embeddings that made it.
//!
//! Shapes: `x` is `[P·K, d]`, identity-major (rows `c·K .. c·K+K` belong to identity c);
//! the result is `[P, d]`.

use candle_core::{D, Tensor};
use serde::{Deserialize, Serialize};

use crate::{Error, Result};

/// Which images make a prototype.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PrototypeSource {
    /// All K images of the identity in the batch.
    #[default]
    Mean,
    /// For the loss, image i's positive is the mean of the other K−1 images.
    LeaveOneOut,
}

/// Whether gradients flow through a fresh prototype.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PrototypeGrad {
    /// The prototype is a constant for the loss.
    #[default]
    Detached,
    /// Gradients flow through the mean into the encoder.
    Through,
}

/// How the K exemplars are weighted.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ExemplarWeights {
    /// Each image counts 1/K.
    #[default]
    Equal,
    /// Proportional to the embedding norm (a proxy for image quality).
    Norm,
}

/// Prototype generation options (see the module formula).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PrototypeConfig {
    /// Which images make the prototype.
    #[serde(default)]
    pub source: PrototypeSource,
    /// Detached or differentiable.
    #[serde(default)]
    pub grad: PrototypeGrad,
    /// Exemplar weights.
    #[serde(default)]
    pub weights: ExemplarWeights,
}

const EPS: f64 = 1e-12;

/// One prototype per identity from un-normalised embeddings `x` (`[P·K, d]`, identity-major).
///
/// # Errors
/// [`Error::Invalid`] when the rows are not a multiple of `k` or `k` is zero.
pub fn prototypes(x: &Tensor, k: usize, config: &PrototypeConfig) -> Result<Tensor> {
    let (b, d) = x.dims2()?;
    if k == 0 || b % k != 0 {
        return Err(Error::Invalid(format!(
            "{b} embeddings are not P groups of K = {k}"
        )));
    }
    let x = match config.grad {
        PrototypeGrad::Detached => x.detach(),
        PrototypeGrad::Through => x.clone(),
    };
    let norms = x
        .sqr()?
        .sum_keepdim(D::Minus1)?
        .sqrt()?
        .clamp(EPS, f64::MAX)?;
    let z = x.broadcast_div(&norms)?;
    let weighted = match config.weights {
        ExemplarWeights::Equal => z,
        ExemplarWeights::Norm => z.broadcast_mul(&norms)?,
    };
    let sums = weighted.reshape((b / k, k, d))?.sum(1)?;
    Ok(normalize_rows(&sums)?)
}

/// L2-normalises each row of a `[n, d]` tensor.
///
/// # Errors
/// A tensor operation failed.
pub fn normalize_rows(xs: &Tensor) -> candle_core::Result<Tensor> {
    let norms = xs
        .sqr()?
        .sum_keepdim(D::Minus1)?
        .sqrt()?
        .clamp(EPS, f64::MAX)?;
    xs.broadcast_div(&norms)
}

/// Leave-one-out positives: row i is the prototype of the other K−1 images of its identity
/// (`[P·K, d]` in, `[P·K, d]` out), with the same weights and gradient rule as [`prototypes`].
///
/// # Errors
/// [`Error::Invalid`] when the rows are not a multiple of `k` or `k < 2`.
pub fn leave_one_out(x: &Tensor, k: usize, config: &PrototypeConfig) -> Result<Tensor> {
    let (b, d) = x.dims2()?;
    if k < 2 || b % k != 0 {
        return Err(Error::Invalid(format!(
            "leave-one-out needs P groups of K >= 2 embeddings, got {b} rows and K = {k}"
        )));
    }
    let x = match config.grad {
        PrototypeGrad::Detached => x.detach(),
        PrototypeGrad::Through => x.clone(),
    };
    let weighted = match config.weights {
        ExemplarWeights::Equal => normalize_rows(&x)?,
        ExemplarWeights::Norm => x,
    };
    let groups = weighted.reshape((b / k, k, d))?;
    let sums = groups.sum_keepdim(1)?.broadcast_as((b / k, k, d))?;
    let others = (sums - groups)?.reshape((b, d))?;
    Ok(normalize_rows(&others)?)
}
