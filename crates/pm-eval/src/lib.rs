//! Face verification for Prototype Memory: the LFW and CFP protocols read from their official
//! text files, k-fold accuracy and TAR@FAR computed exactly from pair scores, and a report table.
//!
//! Flow: read a [`PairProtocol`] ([`lfw_pairs`], [`cfp_pairs`]), embed each of its unique images
//! once, then [`verify`] scores the pairs by cosine similarity and returns a
//! [`VerificationResult`]; [`format_table`] renders several of them.

mod embed;
mod error;
mod metrics;
mod protocol;
mod report;

pub use embed::{Embedder, EncoderEmbedder, RawPixels, embed_images, evaluate};
pub use error::{Error, Result};
pub use metrics::{FoldAccuracy, TarAtFar, kfold_accuracy, tar_at_far};
pub use protocol::{CfpKind, Pair, PairProtocol, cfp_pairs, lfw_pairs};
pub use report::{TAR_FAR_TARGET, VerificationResult, format_table, verify};
