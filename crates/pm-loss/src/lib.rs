//! Margin softmax losses for face recognition over any set of weight rows: a learned
//! classifier, a sampled one, or the rows of a prototype memory.
//!
//! The crate depends on candle and nothing else of the workspace.

mod error;
mod margin;

pub use error::{Error, Result};
pub use margin::{Margin, MarginConfig, MarginLoss, cosine_logits, replace_targets};
