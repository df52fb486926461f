//! Seeded weight initialisation.
//!
//! candle's CPU device cannot be seeded, so a run's initial weights are drawn here from a seeded
//! generator: He-normal for convolution and linear weights (`std = sqrt(2 / fan_in)`), zeros for
//! biases and BatchNorm shifts, ones for BatchNorm scales and running variances.

use candle_core::{Tensor, Var};
use candle_nn::VarMap;

use crate::Result;

/// Overwrites every variable of `varmap` with seeded values, visiting names in sorted order.
///
/// # Errors
/// A tensor could not be built or assigned.
pub fn seeded_init(varmap: &VarMap, seed: u64) -> Result<()> {
    let vars = varmap.data().lock().map_err(|_| poisoned())?;
    let mut names: Vec<&String> = vars.keys().collect();
    names.sort();
    let mut normal = Normal::new(seed);
    for name in names {
        let var = &vars[name];
        var.set(&initial_value(name, var, &mut normal)?)?;
    }
    Ok(())
}

fn poisoned() -> candle_core::Error {
    candle_core::Error::Msg("variable map lock poisoned".into())
}

fn initial_value(name: &str, var: &Var, normal: &mut Normal) -> Result<Tensor> {
    let shape = var.shape().clone();
    let dims = shape.dims();
    let leaf = name.rsplit('.').next().unwrap_or(name);
    let value = match leaf {
        "weight" if dims.len() >= 2 => {
            let fan_in: usize = dims[1..].iter().product();
            let std = (2.0 / fan_in as f64).sqrt();
            let data: Vec<f32> = (0..shape.elem_count())
                .map(|_| (normal.sample() * std) as f32)
                .collect();
            return Ok(Tensor::from_vec(data, shape, var.device())?.to_dtype(var.dtype())?);
        }
        // A one-dimensional weight is a BatchNorm scale.
        "weight" | "running_var" => 1.0,
        _ => 0.0,
    };
    Ok(Tensor::full(value as f32, shape, var.device())?.to_dtype(var.dtype())?)
}

/// Standard normal samples from a 64-bit LCG through Box–Muller.
struct Normal {
    state: u64,
    spare: Option<f64>,
}

impl Normal {
    fn new(seed: u64) -> Self {
        Self {
            state: seed ^ 0x5DEE_CE66_D1CE_4E5B,
            spare: None,
        }
    }

    fn uniform(&mut self) -> f64 {
        self.state = self
            .state
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        ((self.state >> 11) as f64 + 0.5) / (1u64 << 53) as f64
    }

    fn sample(&mut self) -> f64 {
        if let Some(v) = self.spare.take() {
            return v;
        }
        let (u, v) = (self.uniform(), self.uniform());
        let r = (-2.0 * u.ln()).sqrt();
        let t = std::f64::consts::TAU * v;
        self.spare = Some(r * t.sin());
        r * t.cos()
    }
}
