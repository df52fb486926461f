//! A small residual CNN encoder sized for CPU training.
//!
//! ```text
//! [B, 3, S, S] ─ conv3×3(w0, stride 1 or 2) BN ReLU
//!   └ stage i (i = 1..n): residual block, stride 2, width w_i   (+ blocks_per_stage−1 at stride 1)
//!       block: conv3×3 BN ReLU conv3×3 BN  +  shortcut (conv1×1 stride 2 BN when the shape changes)
//!   └ BN ─ flatten [B, w_n·(S/2^n)²] ─ linear ─ BN1d ─ [B, d]
//! ```
//! The flatten + linear "output layer" keeps spatial layout in the embedding, as the field's
//! IResNet heads do, instead of global average pooling.

use candle_core::{Module, ModuleT, Tensor};
use candle_nn::{BatchNorm, Conv2d, Conv2dConfig, Linear, VarBuilder};
use serde::{Deserialize, Serialize};

use crate::{Error, Result};

/// Shape of the encoder.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EncoderConfig {
    /// Input side S (square images).
    pub input_size: usize,
    /// Stem width followed by one width per stage; each stage halves the resolution.
    pub widths: Vec<usize>,
    /// Residual blocks per stage.
    pub blocks_per_stage: usize,
    /// Stride of the stem convolution (2 halves the resolution before the first stage, which
    /// cuts the cost of a CPU step by about three).
    #[serde(default = "default_stem_stride")]
    pub stem_stride: usize,
    /// Embedding dimension d.
    pub embedding_dim: usize,
}

impl Default for EncoderConfig {
    fn default() -> Self {
        Self {
            input_size: 64,
            widths: vec![16, 32, 64, 128],
            blocks_per_stage: 1,
            stem_stride: 2,
            embedding_dim: 128,
        }
    }
}

fn default_stem_stride() -> usize {
    2
}

#[derive(Debug)]
struct ConvBn {
    conv: Conv2d,
    bn: BatchNorm,
}

impl ConvBn {
    fn new(cin: usize, cout: usize, k: usize, stride: usize, vb: VarBuilder) -> Result<Self> {
        let cfg = Conv2dConfig {
            padding: k / 2,
            stride,
            ..Default::default()
        };
        Ok(Self {
            conv: candle_nn::conv2d_no_bias(cin, cout, k, cfg, vb.pp("conv"))?,
            bn: candle_nn::batch_norm(cout, 1e-5, vb.pp("bn"))?,
        })
    }

    fn forward_t(&self, xs: &Tensor, train: bool) -> candle_core::Result<Tensor> {
        self.bn.forward_t(&self.conv.forward(xs)?, train)
    }
}

#[derive(Debug)]
struct Block {
    a: ConvBn,
    b: ConvBn,
    shortcut: Option<ConvBn>,
}

impl Block {
    fn new(cin: usize, cout: usize, stride: usize, vb: VarBuilder) -> Result<Self> {
        let shortcut = if stride != 1 || cin != cout {
            Some(ConvBn::new(cin, cout, 1, stride, vb.pp("shortcut"))?)
        } else {
            None
        };
        Ok(Self {
            a: ConvBn::new(cin, cout, 3, stride, vb.pp("a"))?,
            b: ConvBn::new(cout, cout, 3, 1, vb.pp("b"))?,
            shortcut,
        })
    }

    fn forward_t(&self, xs: &Tensor, train: bool) -> candle_core::Result<Tensor> {
        let ys = self.a.forward_t(xs, train)?.relu()?;
        let ys = self.b.forward_t(&ys, train)?;
        let skip = match &self.shortcut {
            Some(s) => s.forward_t(xs, train)?,
            None => xs.clone(),
        };
        (ys + skip)?.relu()
    }
}

/// The encoder.
#[derive(Debug)]
pub struct Encoder {
    config: EncoderConfig,
    stem: ConvBn,
    blocks: Vec<Block>,
    out_bn: BatchNorm,
    fc: Linear,
    embedding_bn: BatchNorm,
}

impl Encoder {
    /// Builds the encoder's variables under `vb`.
    ///
    /// # Errors
    /// [`Error::Config`] when the widths are empty, a size is zero, or the input side is not
    /// divisible by 2 per stage.
    pub fn new(config: &EncoderConfig, vb: VarBuilder) -> Result<Self> {
        let stages = check(config)?;
        let stem = ConvBn::new(3, config.widths[0], 3, config.stem_stride, vb.pp("stem"))?;
        let mut blocks = Vec::new();
        for (i, pair) in config.widths.windows(2).enumerate() {
            for j in 0..config.blocks_per_stage {
                let (cin, stride) = if j == 0 { (pair[0], 2) } else { (pair[1], 1) };
                blocks.push(Block::new(
                    cin,
                    pair[1],
                    stride,
                    vb.pp(format!("stage{i}.{j}")),
                )?);
            }
        }
        let last = *config.widths.last().unwrap_or(&1);
        let side = (config.input_size / config.stem_stride) >> stages;
        let out_bn = candle_nn::batch_norm(last, 1e-5, vb.pp("out_bn"))?;
        let fc = candle_nn::linear(last * side * side, config.embedding_dim, vb.pp("fc"))?;
        let embedding_bn = candle_nn::batch_norm(config.embedding_dim, 1e-5, vb.pp("emb_bn"))?;
        Ok(Self {
            config: config.clone(),
            stem,
            blocks,
            out_bn,
            fc,
            embedding_bn,
        })
    }

    /// The configuration.
    pub fn config(&self) -> &EncoderConfig {
        &self.config
    }
}

impl EncoderConfig {
    /// Checks that the configuration builds an encoder.
    ///
    /// # Errors
    /// [`Error::Config`] as for [`Encoder::new`].
    pub fn validate(&self) -> Result<()> {
        check(self).map(|_| ())
    }
}

fn check(config: &EncoderConfig) -> Result<usize> {
    let stages = config.widths.len().saturating_sub(1);
    let stride = config.stem_stride;
    let ok = !config.widths.is_empty()
        && (stride == 1 || stride == 2)
        && config.widths.iter().all(|&w| w > 0)
        && config.blocks_per_stage > 0
        && config.embedding_dim > 0
        && config.input_size > 0
        && config.input_size.is_multiple_of(stride << stages);
    if !ok {
        return Err(Error::Config(format!(
            "need non-empty positive widths, blocks and dim, and an input side divisible by \
             2^{stages}; got {config:?}"
        )));
    }
    Ok(stages)
}

impl ModuleT for Encoder {
    fn forward_t(&self, xs: &Tensor, train: bool) -> candle_core::Result<Tensor> {
        let mut ys = self.stem.forward_t(xs, train)?.relu()?;
        for block in &self.blocks {
            ys = block.forward_t(&ys, train)?;
        }
        let ys = self.out_bn.forward_t(&ys, train)?.flatten_from(1)?;
        let ys = self.fc.forward(&ys)?;
        self.embedding_bn.forward_t(&ys, train)
    }
}
