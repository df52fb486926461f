//! CosFace and ArcFace margin softmax cross-entropy.
//!
//! ```text
//! cos_ij  = <z_i, w_j>                          z, w L2-normalised; [B, C]
//! CosFace: target logit  s · (cos_iy − m)         (Wang et al., CVPR 2018)
//! ArcFace: target logit  s · cos(θ_iy + m)        (Deng et al., CVPR 2019)
//!          = s · (c·cos m − sqrt(1 − c²)·sin m),   c = clamp(cos_iy, −1+ε, 1−ε)
//!          where θ + m would pass π (c ≤ cos(π − m)), s · (c − m·sin m) instead, which keeps
//!          the target logit decreasing in θ.
//! others:  s · cos_ij
//! loss   = mean_i [ −log softmax(logits_i)_y ]
//! ```
//! The cosine is clamped before any square root, so the loss and its gradient stay finite for
//! cosines at ±1.

use candle_core::{D, DType, Tensor};
use serde::{Deserialize, Serialize};

use crate::{Error, Result};

/// The margin family.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Margin {
    /// Additive cosine margin.
    #[default]
    CosFace,
    /// Additive angular margin.
    ArcFace,
}

/// Margin, scale and family.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MarginConfig {
    /// CosFace or ArcFace.
    pub kind: Margin,
    /// Logit scale s (64 in the field's recipes).
    pub scale: f64,
    /// Margin m (CosFace 0.35–0.4, ArcFace 0.5 rad).
    pub margin: f64,
}

impl Default for MarginConfig {
    fn default() -> Self {
        Self {
            kind: Margin::CosFace,
            scale: 32.0,
            margin: 0.35,
        }
    }
}

/// A margin softmax cross-entropy.
#[derive(Clone, Debug)]
pub struct MarginLoss {
    config: MarginConfig,
}

const CLAMP: f64 = 1e-7;

/// Cosine logits `[B, C]` of normalised embeddings `[B, d]` against normalised rows `[C, d]`.
///
/// # Errors
/// Shapes that do not multiply.
pub fn cosine_logits(z: &Tensor, weights: &Tensor) -> Result<Tensor> {
    Ok(z.matmul(&weights.t()?)?)
}

/// Replaces each row's target cosine by `values` (`[B, 1]`), e.g. a leave-one-out positive,
/// keeping every other column.
///
/// # Errors
/// [`Error::Invalid`] when a target is out of range; shape errors.
pub fn replace_targets(cosines: &Tensor, targets: &[u32], values: &Tensor) -> Result<Tensor> {
    let (b, c) = cosines.dims2()?;
    if targets.len() != b || targets.iter().any(|&t| t as usize >= c) {
        return Err(Error::Invalid(format!(
            "{} targets for {b} rows of {c} classes",
            targets.len()
        )));
    }
    let one_hot = one_hot(targets, c, cosines.device())?;
    let current = (cosines * &one_hot)?.sum_keepdim(D::Minus1)?;
    let delta = (values - current)?;
    Ok((cosines + one_hot.broadcast_mul(&delta)?)?)
}

impl MarginLoss {
    /// A loss with `config`.
    ///
    /// # Errors
    /// [`Error::Invalid`] for a non-positive scale or a margin outside `[0, π/2)`.
    pub fn new(config: MarginConfig) -> Result<Self> {
        let scale_ok = config.scale.is_finite() && config.scale > 0.0;
        if !scale_ok || !(0.0..std::f64::consts::FRAC_PI_2).contains(&config.margin) {
            return Err(Error::Invalid(format!(
                "scale must be > 0 and margin in [0, pi/2), got s = {}, m = {}",
                config.scale, config.margin
            )));
        }
        Ok(Self { config })
    }

    /// The configuration.
    pub fn config(&self) -> &MarginConfig {
        &self.config
    }

    /// Mean cross-entropy of cosines `[B, C]` with target columns `targets` (B entries).
    ///
    /// # Errors
    /// [`Error::Invalid`] when a target is out of range or the lengths differ.
    pub fn forward(&self, cosines: &Tensor, targets: &[u32]) -> Result<Tensor> {
        let (b, c) = cosines.dims2()?;
        if targets.len() != b || targets.iter().any(|&t| t as usize >= c) {
            return Err(Error::Invalid(format!(
                "{} targets for {b} rows of {c} classes (every target must be < {c})",
                targets.len()
            )));
        }
        let device = cosines.device();
        let one_hot = one_hot(targets, c, device)?;
        let target_cos = (cosines * &one_hot)?.sum_keepdim(D::Minus1)?;
        let adjusted = self.target_logit(&target_cos)?;
        let delta = (adjusted - target_cos)?;
        let logits = (cosines + one_hot.broadcast_mul(&delta)?)?.affine(self.config.scale, 0.0)?;
        let targets = Tensor::from_slice(targets, b, device)?;
        Ok(candle_nn::loss::cross_entropy(&logits, &targets)?)
    }

    /// The margin-adjusted target cosine (before scaling), `[B, 1]`.
    fn target_logit(&self, target_cos: &Tensor) -> Result<Tensor> {
        let m = self.config.margin;
        match self.config.kind {
            Margin::CosFace => Ok(target_cos.affine(1.0, -m)?),
            Margin::ArcFace => {
                let c = target_cos.clamp(-1.0 + CLAMP, 1.0 - CLAMP)?;
                let sin = c.sqr()?.neg()?.affine(1.0, 1.0)?.sqrt()?;
                let phi = (c.affine(m.cos(), 0.0)? - sin.affine(m.sin(), 0.0)?)?;
                let fallback = c.affine(1.0, -m * m.sin())?;
                let threshold = (std::f64::consts::PI - m).cos();
                let past_pi = c.le(threshold)?;
                Ok(past_pi.where_cond(&fallback, &phi)?)
            }
        }
    }
}

fn one_hot(targets: &[u32], classes: usize, device: &candle_core::Device) -> Result<Tensor> {
    let mut data = vec![0f32; targets.len() * classes];
    for (row, &t) in targets.iter().enumerate() {
        data[row * classes + t as usize] = 1.0;
    }
    Ok(Tensor::from_vec(data, (targets.len(), classes), device)?.to_dtype(DType::F32)?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Var};

    fn reference(cos: &[Vec<f64>], targets: &[u32], cfg: &MarginConfig) -> f64 {
        let mut total = 0.0;
        for (row, &t) in cos.iter().zip(targets) {
            let logits: Vec<f64> = row
                .iter()
                .enumerate()
                .map(|(j, &c)| {
                    let c = if j == t as usize {
                        match cfg.kind {
                            Margin::CosFace => c - cfg.margin,
                            Margin::ArcFace => (c.acos() + cfg.margin).cos(),
                        }
                    } else {
                        c
                    };
                    cfg.scale * c
                })
                .collect();
            let max = logits.iter().cloned().fold(f64::MIN, f64::max);
            let lse = logits.iter().map(|l| (l - max).exp()).sum::<f64>().ln() + max;
            total += lse - logits[t as usize];
        }
        total / cos.len() as f64
    }

    #[test]
    fn matches_a_scalar_reference() {
        let cos = vec![vec![0.8, 0.1, -0.3], vec![0.2, 0.5, 0.4]];
        let targets = [0u32, 2];
        for kind in [Margin::CosFace, Margin::ArcFace] {
            let cfg = MarginConfig {
                kind,
                scale: 16.0,
                margin: 0.3,
            };
            let t = Tensor::new(&[[0.8f32, 0.1, -0.3], [0.2, 0.5, 0.4]], &Device::Cpu).unwrap();
            let loss = MarginLoss::new(cfg.clone())
                .unwrap()
                .forward(&t, &targets)
                .unwrap();
            let got = loss.to_scalar::<f32>().unwrap() as f64;
            let want = reference(&cos, &targets, &cfg);
            assert!(
                (got - want).abs() < 1e-4 * want.abs().max(1.0),
                "{kind:?}: {got} vs {want}"
            );
        }
    }

    #[test]
    fn arcface_gradient_is_finite_at_cosine_one() {
        let cos = Var::new(&[[1.0f32, -1.0], [-1.0, 1.0]], &Device::Cpu).unwrap();
        let cfg = MarginConfig {
            kind: Margin::ArcFace,
            scale: 64.0,
            margin: 0.5,
        };
        let loss = MarginLoss::new(cfg)
            .unwrap()
            .forward(cos.as_tensor(), &[0, 0])
            .unwrap();
        let grads = loss.backward().unwrap();
        let g = grads.get(cos.as_tensor()).unwrap().flatten_all().unwrap();
        let g = g.to_vec1::<f32>().unwrap();
        assert!(loss.to_scalar::<f32>().unwrap().is_finite());
        assert!(g.iter().all(|v| v.is_finite()), "{g:?}");
    }

    #[test]
    fn bad_targets_and_configs_are_errors() {
        let t = Tensor::new(&[[0.5f32, 0.1]], &Device::Cpu).unwrap();
        let loss = MarginLoss::new(MarginConfig::default()).unwrap();
        assert!(loss.forward(&t, &[2]).is_err());
        assert!(loss.forward(&t, &[0, 1]).is_err());
        let bad = MarginConfig {
            scale: 0.0,
            ..MarginConfig::default()
        };
        assert!(MarginLoss::new(bad).is_err());
    }
}
