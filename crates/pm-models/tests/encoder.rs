//! Public-API tests of the encoder: shapes, seeded initialisation, configuration errors and
//! that it can fit a tiny problem.

use candle_core::{DType, Device, ModuleT, Tensor};
use candle_nn::{Optimizer, VarBuilder, VarMap};
use pm_models::{Encoder, EncoderConfig, seeded_init};

fn small() -> EncoderConfig {
    EncoderConfig {
        input_size: 16,
        widths: vec![4, 8, 8],
        blocks_per_stage: 1,
        stem_stride: 1,
        embedding_dim: 6,
    }
}

fn build(seed: u64) -> (VarMap, Encoder) {
    let varmap = VarMap::new();
    let vb = VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu);
    let encoder = Encoder::new(&small(), vb).expect("valid config");
    seeded_init(&varmap, seed).expect("init");
    (varmap, encoder)
}

fn input() -> Tensor {
    let data: Vec<f32> = (0..2 * 3 * 16 * 16)
        .map(|i| ((i * 37 % 101) as f32) / 50.0 - 1.0)
        .collect();
    Tensor::from_vec(data, (2, 3, 16, 16), &Device::Cpu).unwrap()
}

#[test]
fn embeds_to_the_configured_dimension() {
    let (_, encoder) = build(1);
    let out = encoder.forward_t(&input(), false).unwrap();
    assert_eq!(out.dims(), &[2, 6]);
}

#[test]
fn seeded_init_is_reproducible_and_seed_dependent() {
    let x = input();
    let a = build(7)
        .1
        .forward_t(&x, false)
        .unwrap()
        .to_vec2::<f32>()
        .unwrap();
    let b = build(7)
        .1
        .forward_t(&x, false)
        .unwrap()
        .to_vec2::<f32>()
        .unwrap();
    let c = build(8)
        .1
        .forward_t(&x, false)
        .unwrap()
        .to_vec2::<f32>()
        .unwrap();
    assert_eq!(a, b);
    assert_ne!(a, c);
}

#[test]
fn bad_configs_are_errors() {
    let varmap = VarMap::new();
    let vb = VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu);
    let odd = EncoderConfig {
        input_size: 18,
        widths: vec![4, 8, 8, 8],
        ..small()
    };
    assert!(Encoder::new(&odd, vb.clone()).is_err());
    let empty = EncoderConfig {
        widths: vec![],
        ..small()
    };
    assert!(Encoder::new(&empty, vb).is_err());
}

#[test]
fn training_mode_can_fit_two_targets() {
    let (varmap, encoder) = build(3);
    let x = input();
    let target = Tensor::new(
        &[[1f32, 0., 0., 0., 0., 0.], [0., 1., 0., 0., 0., 0.]],
        &Device::Cpu,
    )
    .unwrap();
    let mut opt = candle_nn::SGD::new(varmap.all_vars(), 0.05).unwrap();
    let mut losses = Vec::new();
    for _ in 0..60 {
        let out = encoder.forward_t(&x, true).unwrap();
        let loss = (out - &target).unwrap().sqr().unwrap().mean_all().unwrap();
        losses.push(loss.to_scalar::<f32>().unwrap());
        opt.backward_step(&loss).unwrap();
    }
    assert!(losses[59] < 0.5 * losses[0], "{losses:?}");
}
