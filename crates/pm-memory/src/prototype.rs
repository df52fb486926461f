//! Fresh prototypes from the embeddings of a P×K batch.
//!
//! ```text
//! z_i   = x_i / ‖x_i‖                      normalised embedding of image i
//! w_i   = 1                (equal)         exemplar weight
//!       = ‖x_i‖            (norm)          (any common factor cancels in N)
//! N(v)  = v / max(‖v‖, ε)                  L2 normalisation, ε = 1e-12
//! ```
//! The three sources ([`PrototypeSource`]) differ in which images i of identity c make the
//! prototype and which images take the loss:
//! ```text
//! mean           p_c   = N( Σ_{i<K}        w_i z_i )   loss on every image i < K
//! leave_one_out  p_c∖i = N( Σ_{j<K, j≠i}   w_j z_j )   image i's positive; loss on every i < K;
//!                p_c   = N( Σ_{i<K}        w_i z_i )   the memory stores the full mean
//! split          p_c   = N( Σ_{i<e}        w_i z_i )   exemplars i < e make it (and the memory
//!                                                       row); queries e ≤ i < K take the loss
//! ```
//! Indices i are positions inside the identity's K rows. For `split`, `e` is
//! [`PrototypeConfig::exemplars`], 0 meaning `max(1, ⌊K/2⌋)`, and `1 ≤ e < K` is required
//! ([`resolved_exemplars`]); [`query_rows`] lists the batch rows that take the loss, so the
//! trainer can `index_select` them (the target column of row r stays `r / K`).
//! [`leave_one_out`] computes the `p_c∖i`; [`prototypes`] computes the `p_c`.
//!
//! With [`PrototypeGrad::Detached`] the prototype is a constant for the loss (as in every
//! known peer); with [`PrototypeGrad::Through`] the loss's gradient flows through the mean,
//! both normalisations and the norm weights into the embeddings that made it.
//!
//! Shapes: `x` is `[P·K, d]`, identity-major (rows `c·K .. c·K+K` belong to identity c);
//! [`prototypes`] returns `[P, d]`, [`leave_one_out`] `[P·K, d]`.

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
    /// The first [`PrototypeConfig::exemplars`] images make the prototype; the rest are
    /// queries, the only images that take the loss ([`query_rows`]).
    Split,
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
    /// With [`PrototypeSource::Split`], how many of each identity's K images are exemplars
    /// (the first ones); 0 means `max(1, ⌊K/2⌋)`. Must resolve below K. Ignored by the other
    /// sources, where all K images make the prototype.
    #[serde(default)]
    pub exemplars: usize,
}

const EPS: f64 = 1e-12;

/// One prototype per identity from un-normalised embeddings `x` (`[P·K, d]`, identity-major):
/// `[P, d]`, made from all K images, or from the exemplars only with
/// [`PrototypeSource::Split`].
///
/// # Errors
/// [`Error::Invalid`] when the rows are not a multiple of `k`, `k` is zero, or the split's
/// exemplar count does not resolve to `1 ≤ e < k` ([`resolved_exemplars`]).
pub fn prototypes(x: &Tensor, k: usize, config: &PrototypeConfig) -> Result<Tensor> {
    let (b, d) = x.dims2()?;
    if k == 0 || b % k != 0 {
        return Err(Error::Invalid(format!(
            "{b} embeddings are not P groups of K = {k}"
        )));
    }
    let e = resolved_exemplars(k, config)?;
    let x = match config.grad {
        PrototypeGrad::Detached => x.detach(),
        PrototypeGrad::Through => x.clone(),
    };

    // Only the first e rows of each identity are exemplars (all K unless split).
    let exemplars = x.reshape((b / k, k, d))?.narrow(1, 0, e)?;
    let norms = exemplars
        .sqr()?
        .sum_keepdim(D::Minus1)?
        .sqrt()?
        .clamp(EPS, f64::MAX)?;
    let z = exemplars.broadcast_div(&norms)?;
    let weighted = match config.weights {
        ExemplarWeights::Equal => z,
        ExemplarWeights::Norm => z.broadcast_mul(&norms)?,
    };
    Ok(normalize_rows(&weighted.sum(1)?)?)
}

/// The number `e` of exemplars per identity: `config.exemplars` (0 meaning `max(1, ⌊k/2⌋)`)
/// with [`PrototypeSource::Split`], `k` with the other sources.
///
/// # Errors
/// [`Error::Invalid`] when `k` is zero, or with a split when `e` is not below `k` (every
/// identity needs at least one query).
pub fn resolved_exemplars(k: usize, config: &PrototypeConfig) -> Result<usize> {
    if k == 0 {
        return Err(Error::Invalid("K = 0 images per identity".into()));
    }
    if config.source != PrototypeSource::Split {
        return Ok(k);
    }
    let e = match config.exemplars {
        0 => (k / 2).max(1),
        e => e,
    };
    if e >= k {
        return Err(Error::Invalid(format!(
            "split source needs 1 <= exemplars < K, got exemplars = {} (resolved to {e}) \
             with K = {k}",
            config.exemplars
        )));
    }
    Ok(e)
}

/// Batch rows that take the loss, ascending: all of `0..p·k` for [`PrototypeSource::Mean`]
/// and [`PrototypeSource::LeaveOneOut`]; for [`PrototypeSource::Split`] only the queries,
/// rows `c·k + i` with `e ≤ i < k`. The target column of row `r` is `r / k`.
///
/// # Errors
/// [`Error::Invalid`] when [`resolved_exemplars`] fails or `p·k` does not fit in `u32`.
pub fn query_rows(p: usize, k: usize, config: &PrototypeConfig) -> Result<Vec<u32>> {
    let exemplars = resolved_exemplars(k, config)?;
    let first_query = match config.source {
        PrototypeSource::Split => exemplars,
        PrototypeSource::Mean | PrototypeSource::LeaveOneOut => 0,
    };
    let (Some(b), Ok(k), Ok(first_query)) = (
        p.checked_mul(k).and_then(|b| u32::try_from(b).ok()),
        u32::try_from(k),
        u32::try_from(first_query),
    ) else {
        return Err(Error::Invalid(format!(
            "P·K = {p}·{k} rows do not fit u32 indices"
        )));
    };
    Ok((0..b).filter(|r| r % k >= first_query).collect())
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
/// `config.source` and `config.exemplars` are not read: all K images count.
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

#[cfg(test)]
mod tests {
    use candle_core::Device;

    use super::*;

    /// `|a − b| ≤ abs + rel·|b|` for every entry.
    fn assert_close(found: &[f64], expected: &[f64], rel: f64, abs: f64) {
        assert_eq!(found.len(), expected.len());
        for (i, (a, b)) in found.iter().zip(expected).enumerate() {
            assert!(
                (a - b).abs() <= abs + rel * b.abs(),
                "entry {i}: found {a}, expected {b}"
            );
        }
    }

    /// Two identities of K = 4 images in d = 3, with unequal norms.
    fn batch() -> Tensor {
        let rows: [[f64; 3]; 8] = [
            [1.0, 2.0, 0.5],
            [-0.5, 3.0, 1.0],
            [4.0, 0.0, -1.0],
            [0.0, 0.0, 9.0],
            [2.0, -1.0, 0.0],
            [0.1, 0.2, 0.3],
            [-3.0, 1.0, 2.0],
            [1.0, 1.0, 1.0],
        ];
        Tensor::new(&rows, &Device::Cpu).unwrap()
    }

    /// `N(Σ_{i<e} w_i z_i)` for each identity, computed row by row in plain f64.
    fn reference(x: &Tensor, k: usize, e: usize, weights: ExemplarWeights) -> Vec<f64> {
        let rows = x.to_vec2::<f64>().unwrap();
        let norm = |v: &[f64]| v.iter().map(|a| a * a).sum::<f64>().sqrt();
        let mut out = Vec::new();
        for group in rows.chunks(k) {
            let mut sum = vec![0.0; group[0].len()];
            for row in &group[..e] {
                let scale = match weights {
                    ExemplarWeights::Equal => 1.0 / norm(row),
                    ExemplarWeights::Norm => 1.0,
                };
                sum.iter_mut().zip(row).for_each(|(s, a)| *s += scale * a);
            }
            let n = norm(&sum);
            out.extend(sum.iter().map(|a| a / n));
        }
        out
    }

    #[test]
    fn split_prototype_is_the_normalised_mean_of_the_exemplars_only() {
        let x = batch();
        for weights in [ExemplarWeights::Equal, ExemplarWeights::Norm] {
            for (exemplars, e) in [(0, 2), (1, 1), (3, 3)] {
                let config = PrototypeConfig {
                    source: PrototypeSource::Split,
                    weights,
                    exemplars,
                    ..PrototypeConfig::default()
                };
                let p = prototypes(&x, 4, &config).unwrap();
                assert_eq!(p.dims(), &[2, 3]);
                let found = p.flatten_all().unwrap().to_vec1::<f64>().unwrap();
                let expected = reference(&x, 4, e, weights);
                assert_close(&found, &expected, 1e-12, 1e-14);
                // The queries do not move it: differs from the all-K mean.
                let all = reference(&x, 4, 4, weights);
                assert!(found.iter().zip(&all).any(|(a, b)| (a - b).abs() > 1e-3));
            }
        }
    }

    #[test]
    fn mean_prototype_uses_all_images_and_ignores_exemplars() {
        let x = batch();
        let config = PrototypeConfig {
            exemplars: 1,
            ..PrototypeConfig::default()
        };
        let found = prototypes(&x, 4, &config).unwrap();
        let found = found.flatten_all().unwrap().to_vec1::<f64>().unwrap();
        assert_close(
            &found,
            &reference(&x, 4, 4, ExemplarWeights::Equal),
            1e-12,
            1e-14,
        );
    }

    #[test]
    fn query_rows_are_all_rows_or_the_queries_of_each_identity() {
        let mean = PrototypeConfig::default();
        assert_eq!(query_rows(2, 3, &mean).unwrap(), vec![0, 1, 2, 3, 4, 5]);
        let loo = PrototypeConfig {
            source: PrototypeSource::LeaveOneOut,
            ..mean
        };
        assert_eq!(query_rows(2, 2, &loo).unwrap(), vec![0, 1, 2, 3]);

        let split = |exemplars| PrototypeConfig {
            source: PrototypeSource::Split,
            exemplars,
            ..mean
        };
        assert_eq!(query_rows(2, 4, &split(0)).unwrap(), vec![2, 3, 6, 7]);
        assert_eq!(query_rows(3, 4, &split(3)).unwrap(), vec![3, 7, 11]);
        assert_eq!(query_rows(2, 5, &split(0)).unwrap(), vec![2, 3, 4, 7, 8, 9]);
        assert_eq!(query_rows(2, 2, &split(0)).unwrap(), vec![1, 3]);
        assert_eq!(resolved_exemplars(5, &split(0)).unwrap(), 2);
        assert_eq!(resolved_exemplars(5, &mean).unwrap(), 5);
    }

    #[test]
    fn invalid_exemplar_counts_are_errors_naming_the_values() {
        let split = |exemplars| PrototypeConfig {
            source: PrototypeSource::Split,
            exemplars,
            ..PrototypeConfig::default()
        };
        let x = batch();
        for (k, exemplars) in [(4, 4), (4, 7), (1, 0), (2, 2)] {
            let err = resolved_exemplars(k, &split(exemplars)).unwrap_err();
            let message = err.to_string();
            assert!(
                message.contains(&format!("exemplars = {exemplars}"))
                    && message.contains(&format!("K = {k}")),
                "{message}"
            );
            assert!(query_rows(2, k, &split(exemplars)).is_err());
        }
        assert!(prototypes(&x, 4, &split(4)).is_err());
        assert!(prototypes(&x, 1, &split(0)).is_err());
        assert!(query_rows(2, 0, &PrototypeConfig::default()).is_err());
    }

    #[test]
    fn split_has_the_serde_name_split() {
        use serde::de::{IntoDeserializer, value::Error as DeError};

        let source = PrototypeSource::deserialize("split".into_deserializer());
        let source: std::result::Result<_, DeError> = source;
        assert_eq!(source.unwrap(), PrototypeSource::Split);
    }
}
