//! The fused margin cross-entropy against the unfused candle head: `cosine_logits`,
//! [`MarginLoss`] and candle's autograd for the loss, `grad_z` and `grad_w`.

use candle_core::{Device, Tensor, Var};
use pm_loss::{
    FusedConfig, FusedMarginCe, Margin, MarginConfig, MarginLoss, Result, cosine_logits,
};

/// Relative and absolute tolerance of one comparison.
#[derive(Clone, Copy, Debug)]
struct Tolerance {
    rel: f64,
    abs: f64,
}

impl Tolerance {
    const TIGHT: Self = Self {
        rel: 1e-4,
        abs: 1e-5,
    };

    /// The first index where `got` and `want` differ by more than `abs + rel·|want|`, scaled by
    /// `unit` (the size of the values compared, so that `abs` is relative to it).
    fn mismatch(self, got: &[f32], want: &[f32], unit: f64) -> Option<(usize, f32, f32)> {
        assert_eq!(got.len(), want.len(), "lengths differ");
        got.iter()
            .zip(want)
            .enumerate()
            .find(|&(_, (&g, &w))| {
                let (g, w) = (f64::from(g), f64::from(w));
                let within = (g - w).abs() <= self.abs * unit + self.rel * w.abs();
                !within // NaN is never within
            })
            .map(|(i, (&g, &w))| (i, g, w))
    }
}

/// SplitMix64: a seeded generator without dependencies.
struct Rng(u64);

impl Rng {
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut x = self.0;
        x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        x ^ (x >> 31)
    }

    fn uniform(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    fn normal(&mut self) -> f64 {
        let (u, v) = (self.uniform().max(1e-300), self.uniform());
        (-2.0 * u.ln()).sqrt() * (std::f64::consts::TAU * v).cos()
    }

    /// `n` unit rows of `d` values.
    fn unit_rows(&mut self, n: usize, d: usize) -> Vec<f32> {
        (0..n)
            .flat_map(|_| {
                let row: Vec<f64> = (0..d).map(|_| self.normal()).collect();
                unit(&row)
            })
            .collect()
    }
}

fn unit(row: &[f64]) -> Vec<f32> {
    let norm = row.iter().map(|v| v * v).sum::<f64>().sqrt();
    row.iter().map(|v| (v / norm) as f32).collect()
}

/// A batch whose rows exercise the margin: random rows, and (where the batch has room) rows at
/// cosine ≈ 1 − 1e-3 and −1 + 1e-3 to their target, and slightly past ±1 (clamped).
fn batch(rng: &mut Rng, b: usize, d: usize, w: &[f32], m: usize) -> (Vec<f32>, Vec<u32>) {
    let targets: Vec<u32> = (0..b).map(|_| (rng.next_u64() % m as u64) as u32).collect();
    let mut z = rng.unit_rows(b, d);
    for (i, &t) in targets.iter().enumerate().skip(1) {
        let target = &w[t as usize * d..(t as usize + 1) * d];
        let row: Vec<f32> = match i {
            1 => near(rng, target, 1.0 - 1e-3),
            2 => near(rng, target, -1.0 + 1e-3),
            3 => target.iter().map(|v| v * (1.0 + 1e-4)).collect(),
            4 => target.iter().map(|v| -v * (1.0 + 1e-4)).collect(),
            _ => break,
        };
        z[i * d..(i + 1) * d].copy_from_slice(&row);
    }
    (z, targets)
}

/// A unit row at cosine `c` to the unit row `target` (in a random direction around it).
fn near(rng: &mut Rng, target: &[f32], c: f64) -> Vec<f32> {
    let noise: Vec<f64> = (0..target.len()).map(|_| rng.normal()).collect();
    let along: f64 = noise
        .iter()
        .zip(target)
        .map(|(n, &t)| n * f64::from(t))
        .sum();
    let ortho: Vec<f64> = noise
        .iter()
        .zip(target)
        .map(|(n, &t)| n - along * f64::from(t))
        .collect();
    let ortho = unit(&ortho);
    let sin = (1.0 - c * c).sqrt();
    let row: Vec<f64> = target
        .iter()
        .zip(&ortho)
        .map(|(&t, &o)| c * f64::from(t) + sin * f64::from(o))
        .collect();
    unit(&row)
}

/// Loss, `grad_z` and `grad_w` of the unfused candle head.
fn candle_head(
    margin: &MarginConfig,
    z: &[f32],
    w: &[f32],
    d: usize,
    targets: &[u32],
) -> Result<(f32, Vec<f32>, Vec<f32>)> {
    let device = Device::Cpu;
    let z_var = Var::from_tensor(&Tensor::from_slice(z, (targets.len(), d), &device)?)?;
    let w_var = Var::from_tensor(&Tensor::from_slice(w, (w.len() / d, d), &device)?)?;
    let cosines = cosine_logits(z_var.as_tensor(), w_var.as_tensor())?;
    let loss = MarginLoss::new(margin.clone())?.forward(&cosines, targets)?;
    let grads = loss.backward()?;
    let grad = |v: &Var| -> Result<Vec<f32>> {
        let g = grads.get(v.as_tensor()).expect("both inputs take part");
        Ok(g.flatten_all()?.to_vec1()?)
    };
    Ok((loss.to_scalar()?, grad(&z_var)?, grad(&w_var)?))
}

fn config(kind: Margin) -> FusedConfig {
    let margin = match kind {
        Margin::CosFace => 0.35,
        Margin::ArcFace => 0.5,
    };
    FusedConfig {
        margin: MarginConfig {
            kind,
            scale: 64.0,
            margin,
        },
        // Small tiles and blocks so that the small cases cross tile and block borders.
        tile_columns: 128,
        block_rows: 16,
    }
}

fn largest(xs: &[f32]) -> f64 {
    xs.iter().fold(0f64, |m, &x| m.max(f64::from(x).abs()))
}

#[test]
fn matches_the_unfused_candle_head() -> Result<()> {
    let mut rng = Rng(0x5EED);
    for kind in [Margin::CosFace, Margin::ArcFace] {
        let fused = FusedMarginCe::new(config(kind))?;
        for d in [3, 128] {
            for m in [1, 5, 1000, 4099] {
                let w = rng.unit_rows(m, d);
                for b in [1, 7, 64] {
                    let (z, targets) = batch(&mut rng, b, d, &w, m);
                    let rows_with_grad = m.min(300);
                    let case = format!("{kind:?} B = {b}, M = {m}, d = {d}");
                    let got = fused.forward_backward(&z, &w, d, &targets, rows_with_grad)?;
                    let (loss, grad_z, grad_w) =
                        candle_head(&config(kind).margin, &z, &w, d, &targets)?;

                    let tol = Tolerance::TIGHT;
                    let loss_unit = f64::from(loss.abs()).max(1.0);
                    let bad = tol.mismatch(&[got.loss], &[loss], loss_unit);
                    assert!(bad.is_none(), "{case}: loss {bad:?}");
                    let bad = tol.mismatch(&got.grad_z, &grad_z, largest(&grad_z).max(1e-3));
                    assert!(bad.is_none(), "{case}: grad_z (index, got, want) {bad:?}");
                    let want_w = &grad_w[..rows_with_grad * d];
                    let got_w = got.grad_w.as_deref().expect("rows_with_grad > 0");
                    let bad = tol.mismatch(got_w, want_w, largest(want_w).max(1e-3));
                    assert!(bad.is_none(), "{case}: grad_w (index, got, want) {bad:?}");
                }
            }
        }
    }
    Ok(())
}

#[test]
fn results_do_not_depend_on_the_blocking() -> Result<()> {
    let mut rng = Rng(7);
    let (b, m, d) = (33, 777, 16);
    let w = rng.unit_rows(m, d);
    let (z, targets) = batch(&mut rng, b, d, &w, m);
    let reference =
        FusedMarginCe::new(config(Margin::ArcFace))?.forward_backward(&z, &w, d, &targets, 100)?;
    for (tile_columns, block_rows) in [(1, 1), (7, 5), (1000, 64)] {
        let blocked = FusedMarginCe::new(FusedConfig {
            tile_columns,
            block_rows,
            ..config(Margin::ArcFace)
        })?;
        let got = blocked.forward_backward(&z, &w, d, &targets, 100)?;
        let tol = Tolerance::TIGHT;
        assert!(tol.mismatch(&[got.loss], &[reference.loss], 1.0).is_none());
        let unit = largest(&reference.grad_z);
        assert!(tol.mismatch(&got.grad_z, &reference.grad_z, unit).is_none());
        let (got_w, want_w) = (got.grad_w.unwrap(), reference.grad_w.clone().unwrap());
        assert!(tol.mismatch(&got_w, &want_w, largest(&want_w)).is_none());
    }
    Ok(())
}

#[test]
fn a_detached_memory_has_no_row_gradient() -> Result<()> {
    let mut rng = Rng(11);
    let w = rng.unit_rows(50, 8);
    let (z, targets) = batch(&mut rng, 4, 8, &w, 50);
    let out =
        FusedMarginCe::new(FusedConfig::default())?.forward_backward(&z, &w, 8, &targets, 0)?;
    assert!(out.grad_w.is_none());
    assert!(out.loss.is_finite() && out.loss > 0.0);
    assert_eq!(out.grad_z.len(), 4 * 8);
    Ok(())
}

#[test]
fn bad_shapes_and_targets_are_errors() -> Result<()> {
    let fused = FusedMarginCe::new(FusedConfig::default())?;
    let (z, w) = (vec![0.5f32; 6], vec![0.5f32; 12]); // B = 2, d = 3, M = 4
    assert!(fused.forward_backward(&z, &w, 3, &[0, 3], 4).is_ok());
    assert!(
        fused.forward_backward(&z, &w, 3, &[0, 4], 0).is_err(),
        "target = M"
    );
    assert!(
        fused.forward_backward(&z, &w, 3, &[0], 0).is_err(),
        "z is not B·d"
    );
    assert!(
        fused.forward_backward(&z, &w[..11], 3, &[0, 1], 0).is_err(),
        "w not rows"
    );
    assert!(
        fused.forward_backward(&z, &[], 3, &[0, 1], 0).is_err(),
        "no rows"
    );
    assert!(
        fused.forward_backward(&z, &w, 0, &[0, 1], 0).is_err(),
        "d = 0"
    );
    assert!(
        fused.forward_backward(&[], &w, 3, &[], 0).is_err(),
        "empty batch"
    );
    assert!(
        fused.forward_backward(&z, &w, 3, &[0, 1], 5).is_err(),
        "rows_with_grad > M"
    );

    let bad = |tile_columns, block_rows, scale| FusedConfig {
        margin: MarginConfig {
            scale,
            ..MarginConfig::default()
        },
        tile_columns,
        block_rows,
    };
    assert!(FusedMarginCe::new(bad(0, 8, 32.0)).is_err());
    assert!(FusedMarginCe::new(bad(8, 0, 32.0)).is_err());
    assert!(FusedMarginCe::new(bad(8, 8, -1.0)).is_err());
    Ok(())
}
