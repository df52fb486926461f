//! Face encoders: images `[B, 3, H, W]` in [-1, 1] to embeddings `[B, d]`.
//!
//! The crate knows no data: it takes tensors and gives tensors.

mod encoder;
mod error;
mod init;

pub use encoder::{Encoder, EncoderConfig};
pub use error::{Error, Result};
pub use init::seeded_init;
