//! Finite-difference checks of the gradients that flow through fresh prototypes.
//!
//! For every option that carries gradients (`grad = through`; source mean, leave-one-out and
//! split; weights equal and norm), with a fixed random `x: [P·K, d]` and `R`:
//! ```text
//! L(x)        = Σ_{c,j} f(x)_{cj} · R_{cj}        f = prototypes or leave_one_out
//! ∂L/∂x_ij    ≈ (L(x + h e_ij) − L(x − h e_ij)) / 2h,   h = 1e-5, in f64
//! ```
//! The central difference has error O(h²) + O(ε_f64 · |L| / h), about 1e-10 here, so the
//! tolerance (1e-6 relative + 1e-7 absolute) would still catch a gradient that misses one
//! term of a normalisation, whose size is of order one.
//! With `grad = detached` the prototype must add nothing to `∂L/∂x`.

use candle_core::{Device, Tensor, Var};
use pm_memory::{
    ExemplarWeights, PrototypeConfig, PrototypeGrad, PrototypeSource, leave_one_out, prototypes,
};

const P: usize = 3;
const K: usize = 4;
const D: usize = 5;
const H: f64 = 1e-5;

/// Relative + absolute tolerance: `|found − expected| ≤ abs + rel·|expected|`.
#[derive(Clone, Copy, Debug)]
struct Tolerance {
    rel: f64,
    abs: f64,
}

impl Tolerance {
    const GRADIENT: Self = Self {
        rel: 1e-6,
        abs: 1e-7,
    };

    fn check(self, found: &[f64], expected: &[f64], what: &str) {
        assert_eq!(found.len(), expected.len(), "{what}: lengths differ");
        for (i, (a, b)) in found.iter().zip(expected).enumerate() {
            assert!(
                (a - b).abs() <= self.abs + self.rel * b.abs(),
                "{what}: entry {i} (row {}, col {}): backward {a}, finite difference {b}",
                i / D,
                i % D
            );
        }
    }
}

/// Deterministic values in about N(0, 1) (splitmix64, sum of four uniforms), so a failure
/// reproduces; candle's CPU generator cannot be seeded.
fn values(n: usize, seed: u64) -> Vec<f64> {
    let mut state = seed;
    let mut uniform = move || {
        state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = state;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        (z ^ (z >> 31)) as f64 / u64::MAX as f64
    };
    (0..n)
        .map(|_| ((0..4).map(|_| uniform()).sum::<f64>() - 2.0) * 3f64.sqrt())
        .collect()
}

fn tensor(data: &[f64], rows: usize) -> Tensor {
    Tensor::from_slice(data, (rows, D), &Device::Cpu).expect("shape fits the data")
}

/// The generators under test, each with the number of rows it returns.
#[derive(Clone, Copy, Debug)]
enum Generator {
    Prototypes,
    LeaveOneOut,
}

impl Generator {
    fn rows(self) -> usize {
        match self {
            Self::Prototypes => P,
            Self::LeaveOneOut => P * K,
        }
    }

    fn apply(self, x: &Tensor, config: &PrototypeConfig) -> Tensor {
        match self {
            Self::Prototypes => prototypes(x, K, config),
            Self::LeaveOneOut => leave_one_out(x, K, config),
        }
        .expect("valid batch and config")
    }
}

/// `L = Σ f(x) ⊙ R`.
fn loss(generator: Generator, x: &Tensor, r: &Tensor, config: &PrototypeConfig) -> Tensor {
    let f = generator.apply(x, config);
    (f * r).and_then(|t| t.sum_all()).expect("same shapes")
}

/// `∂L/∂x` by backward.
fn backward(generator: Generator, x: &[f64], r: &Tensor, config: &PrototypeConfig) -> Vec<f64> {
    let var = Var::from_tensor(&tensor(x, P * K)).unwrap();
    let grads = loss(generator, var.as_tensor(), r, config)
        .backward()
        .unwrap();
    let grad = grads
        .get(var.as_tensor())
        .unwrap_or_else(|| panic!("{generator:?} {config:?}: no gradient reached x"));
    grad.flatten_all().unwrap().to_vec1::<f64>().unwrap()
}

/// `∂L/∂x` by central differences.
fn finite_difference(
    generator: Generator,
    x: &[f64],
    r: &Tensor,
    config: &PrototypeConfig,
) -> Vec<f64> {
    let at = |data: &[f64]| {
        let l = loss(generator, &tensor(data, P * K), r, config);
        l.to_scalar::<f64>().unwrap()
    };
    let mut shifted = x.to_vec();
    (0..x.len())
        .map(|i| {
            shifted[i] = x[i] + H;
            let plus = at(&shifted);
            shifted[i] = x[i] - H;
            let minus = at(&shifted);
            shifted[i] = x[i];
            (plus - minus) / (2.0 * H)
        })
        .collect()
}

/// Every `through` configuration with the generator that carries its loss.
fn through_cases() -> Vec<(Generator, PrototypeConfig)> {
    let mut cases = Vec::new();
    for weights in [ExemplarWeights::Equal, ExemplarWeights::Norm] {
        let through = PrototypeConfig {
            grad: PrototypeGrad::Through,
            weights,
            ..PrototypeConfig::default()
        };
        cases.push((Generator::Prototypes, through));
        let loo = PrototypeConfig {
            source: PrototypeSource::LeaveOneOut,
            ..through
        };
        cases.push((Generator::Prototypes, loo));
        cases.push((Generator::LeaveOneOut, loo));
        for exemplars in [0, 1, 3] {
            let split = PrototypeConfig {
                source: PrototypeSource::Split,
                exemplars,
                ..through
            };
            cases.push((Generator::Prototypes, split));
        }
    }
    cases
}

#[test]
fn backward_matches_central_differences_for_every_through_option() {
    let x = values(P * K * D, 1);
    for (n, (generator, config)) in through_cases().into_iter().enumerate() {
        let r = tensor(
            &values(generator.rows() * D, 100 + n as u64),
            generator.rows(),
        );
        let found = backward(generator, &x, &r, &config);
        let expected = finite_difference(generator, &x, &r, &config);
        assert!(
            expected.iter().any(|g| g.abs() > 1e-3),
            "{generator:?} {config:?}: the loss does not depend on x"
        );
        Tolerance::GRADIENT.check(&found, &expected, &format!("{generator:?} {config:?}"));
    }
}

#[test]
fn split_queries_get_no_gradient_through_the_prototype() {
    let x = values(P * K * D, 2);
    let r = tensor(&values(P * D, 3), P);
    let config = PrototypeConfig {
        source: PrototypeSource::Split,
        grad: PrototypeGrad::Through,
        exemplars: 1,
        ..PrototypeConfig::default()
    };
    let grad = backward(Generator::Prototypes, &x, &r, &config);
    for (row, g) in grad.chunks(D).enumerate() {
        let is_exemplar = row % K < 1;
        assert_eq!(g.iter().any(|v| *v != 0.0), is_exemplar, "row {row}: {g:?}");
    }
}

/// With `detached`, `L = Σ f(x) ⊙ R + Σ x ⊙ S` has `∂L/∂x = S` exactly: the prototype adds
/// nothing, for every source and weight.
#[test]
fn detached_prototypes_add_nothing_to_the_gradient() {
    let x = values(P * K * D, 4);
    let s = tensor(&values(P * K * D, 5), P * K);
    let expected = s.flatten_all().unwrap().to_vec1::<f64>().unwrap();
    for (n, (generator, through)) in through_cases().into_iter().enumerate() {
        let config = PrototypeConfig {
            grad: PrototypeGrad::Detached,
            ..through
        };
        let r = tensor(
            &values(generator.rows() * D, 200 + n as u64),
            generator.rows(),
        );
        let var = Var::from_tensor(&tensor(&x, P * K)).unwrap();
        let direct = (var.as_tensor() * &s).unwrap().sum_all().unwrap();
        let l = (loss(generator, var.as_tensor(), &r, &config) + direct).unwrap();
        let grads = l.backward().unwrap();
        let found = grads
            .get(var.as_tensor())
            .expect("the direct term reaches x");
        let found = found.flatten_all().unwrap().to_vec1::<f64>().unwrap();
        assert_eq!(found, expected, "{generator:?} {config:?}");
    }
}
