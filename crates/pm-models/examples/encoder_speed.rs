//! Forward + backward images/s of encoder shapes on the CPU (a quick measurement, not a test).
//!
//! `cargo run --release -p pm-models --example encoder_speed -- 64 16,32,64,128 64`

use std::time::Instant;

use candle_core::{DType, Device, ModuleT, Tensor};
use candle_nn::{VarBuilder, VarMap};
use pm_models::{Encoder, EncoderConfig, seeded_init};

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let size: usize = args.get(1).map_or(Ok(64), |s| s.parse())?;
    let widths: Vec<usize> = args
        .get(2)
        .map_or("16,32,64,128", String::as_str)
        .split(',')
        .map(str::parse)
        .collect::<Result<_, _>>()?;
    let batch: usize = args.get(3).map_or(Ok(64), |s| s.parse())?;
    let config = EncoderConfig {
        input_size: size,
        widths,
        blocks_per_stage: 1,
        stem_stride: args.get(4).map_or(Ok(2), |s| s.parse())?,
        embedding_dim: 128,
    };
    let varmap = VarMap::new();
    let encoder = Encoder::new(
        &config,
        VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu),
    )?;
    seeded_init(&varmap, 0)?;
    let xs = Tensor::zeros((batch, 3, size, size), DType::F32, &Device::Cpu)?;
    for train in [false, true] {
        let start = Instant::now();
        let reps = 5;
        for _ in 0..reps {
            let ys = encoder.forward_t(&xs, train)?;
            if train {
                ys.sqr()?.mean_all()?.backward()?;
            }
        }
        let per_s = (reps * batch) as f64 / start.elapsed().as_secs_f64();
        eprintln!("{:?} train={train}: {per_s:.1} images/s", config.widths);
    }
    Ok(())
}
