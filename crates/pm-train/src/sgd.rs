//! SGD with momentum and decoupled-from-BatchNorm weight decay, as face recipes use it.
//!
//! ```text
//! g ← ∇w + λ·w     (λ only for convolution and linear weights: rank ≥ 2)
//! v ← μ·v + g
//! w ← w − η·v
//! ```
//! The momentum buffers are named after their variables so a checkpoint can hold them.

use std::collections::HashMap;

use candle_core::backprop::GradStore;
use candle_core::{DType, Tensor, Var};

use crate::Result;

/// The optimiser.
#[derive(Debug)]
pub struct SgdMomentum {
    vars: Vec<(String, Var)>,
    momentum: f64,
    weight_decay: f64,
    velocity: HashMap<String, Tensor>,
}

impl SgdMomentum {
    /// An optimiser over named variables.
    pub fn new(vars: Vec<(String, Var)>, momentum: f64, weight_decay: f64) -> Self {
        Self {
            vars,
            momentum,
            weight_decay,
            velocity: HashMap::new(),
        }
    }

    /// One update with learning rate `lr`. Variables without a gradient are left alone.
    ///
    /// # Errors
    /// A tensor operation failed.
    pub fn step(&mut self, grads: &GradStore, lr: f64) -> Result<()> {
        for (name, var) in &self.vars {
            let Some(grad) = grads.get(var.as_tensor()) else {
                continue;
            };
            let grad = if self.weight_decay > 0.0 && var.rank() >= 2 {
                (grad + var.as_tensor().affine(self.weight_decay, 0.0)?)?
            } else {
                grad.clone()
            };
            // Detached, or every buffer would keep the whole history of graphs alive.
            let v = match self.velocity.get(name) {
                Some(v) => ((v * self.momentum)? + grad)?,
                None => grad,
            }
            .detach();
            var.set(&(var.as_tensor() - v.affine(lr, 0.0)?)?)?;
            self.velocity.insert(name.clone(), v);
        }
        Ok(())
    }

    /// The name of the first variable whose gradient holds a NaN or an infinity, if any.
    ///
    /// One reduction over all gradients is read back; the per-variable search runs only when it
    /// is not finite. (A gradient whose entries are finite but sum past the f32 range counts as
    /// not finite too: such a step would wreck the weights anyway.)
    ///
    /// # Errors
    /// A tensor operation failed.
    pub fn non_finite_gradient(&self, grads: &GradStore) -> Result<Option<&str>> {
        let with_grad: Vec<(&str, &Tensor)> = self
            .vars
            .iter()
            .filter_map(|(name, var)| grads.get(var.as_tensor()).map(|g| (name.as_str(), g)))
            .collect();
        let sums = with_grad
            .iter()
            .map(|(_, g)| g.sum_all()?.to_dtype(DType::F32))
            .collect::<candle_core::Result<Vec<_>>>()?;
        if sums.is_empty() {
            return Ok(None);
        }
        let total = Tensor::stack(&sums, 0)?.to_vec1::<f32>()?;
        Ok(total
            .iter()
            .zip(&with_grad)
            .find(|(sum, _)| !sum.is_finite())
            .map(|(_, (name, _))| *name))
    }

    /// The momentum buffers as named tensors (`optim.<variable>`).
    pub fn state(&self) -> HashMap<String, Tensor> {
        self.velocity
            .iter()
            .map(|(name, v)| (format!("optim.{name}"), v.clone()))
            .collect()
    }

    /// Restores momentum buffers saved by [`SgdMomentum::state`]; entries of unknown variables
    /// are ignored, shapes are checked.
    ///
    /// # Errors
    /// A buffer whose shape differs from its variable's.
    pub fn restore(&mut self, tensors: &HashMap<String, Tensor>) -> Result<()> {
        self.velocity.clear();
        for (name, var) in &self.vars {
            if let Some(v) = tensors.get(&format!("optim.{name}")) {
                if v.shape() != var.shape() {
                    return Err(candle_core::Error::Msg(format!(
                        "momentum of {name} is {:?}, the variable is {:?}",
                        v.shape(),
                        var.shape()
                    ))
                    .into());
                }
                self.velocity.insert(name.clone(), v.clone());
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    #[test]
    fn names_the_first_variable_with_a_non_finite_gradient() {
        let a = Var::new(&[1.0f32, 2.0], &Device::Cpu).unwrap();
        let b = Var::new(&[3.0f32], &Device::Cpu).unwrap();
        let opt = SgdMomentum::new(
            vec![("a".into(), a.clone()), ("b".into(), b.clone())],
            0.9,
            0.0,
        );
        let finite = (a.as_tensor().sum_all().unwrap() + b.as_tensor().sum_all().unwrap()).unwrap();
        assert_eq!(
            opt.non_finite_gradient(&finite.backward().unwrap())
                .unwrap(),
            None
        );
        // d/db of sqrt(b - 3) at b = 3 is infinite; a's gradient stays finite.
        let sqrt = b
            .as_tensor()
            .affine(1.0, -3.0)
            .unwrap()
            .sqrt()
            .unwrap()
            .sum_all()
            .unwrap();
        let loss = (a.as_tensor().sum_all().unwrap() + sqrt).unwrap();
        assert!(loss.to_scalar::<f32>().unwrap().is_finite());
        assert_eq!(
            opt.non_finite_gradient(&loss.backward().unwrap()).unwrap(),
            Some("b")
        );
    }

    #[test]
    fn follows_the_momentum_recurrence() {
        let w = Var::new(&[[1.0f32, 2.0]], &Device::Cpu).unwrap();
        let mut opt = SgdMomentum::new(vec![("w".into(), w.clone())], 0.5, 0.1);
        // loss = sum(w) → grad 1; with decay: g = 1 + 0.1·w.
        let loss = w.as_tensor().sum_all().unwrap();
        opt.step(&loss.backward().unwrap(), 0.1).unwrap();
        let after1 = w.as_tensor().to_vec2::<f32>().unwrap();
        assert!(
            (after1[0][0] - (1.0 - 0.1 * 1.1)).abs() < 1e-6,
            "{after1:?}"
        );
        let loss = w.as_tensor().sum_all().unwrap();
        opt.step(&loss.backward().unwrap(), 0.1).unwrap();
        let v2 = 0.5 * 1.1 + (1.0 + 0.1 * after1[0][0]);
        let after2 = w.as_tensor().to_vec2::<f32>().unwrap();
        assert!(
            (after2[0][0] - (after1[0][0] - 0.1 * v2)).abs() < 1e-6,
            "{after2:?}"
        );
    }
}
