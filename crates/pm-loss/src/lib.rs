//! Margin softmax losses for face recognition over any set of weight rows: a learned
//! classifier, a sampled one, or the rows of a prototype memory.
//!
//! The crate depends on candle and nothing else of the workspace.

mod error;
mod fused;
mod heads;
mod margin;

pub use error::{Error, Result};
pub use fused::{FusedConfig, FusedMarginCe, FusedOutput};
pub use heads::{
    FullSoftmaxHead, HEAD_LAST_UPDATE, HEAD_MOMENTUM, HEAD_WEIGHTS, PartialFcHead, RowSgd, Sampled,
    SampledCosines, negatives_per_step,
};
pub use margin::{Margin, MarginConfig, MarginLoss, cosine_logits, replace_targets};
