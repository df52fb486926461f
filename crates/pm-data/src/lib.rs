//! Face data for Prototype Memory training: memory-mapped record shards, per-identity
//! P×K sampling, decoding and augmentation, and a synthetic face generator.
//!
//! The crate knows no model: it hands out batches as plain `f32` buffers in NCHW layout
//! scaled to [-1, 1], with one integer label per image.

mod error;
mod loader;
mod pack;
mod preprocess;
mod rng;
mod sampler;
mod shard;
mod synth;

pub use error::{Error, Result};
pub use loader::{Batch, Prefetcher, assemble, identity_counts, write_chw};
pub use pack::{PackConfig, PackReport, Skipped, pack_folder, read_name_list};
pub use preprocess::{Crop, Preprocess};
pub use rng::SplitMix64;
pub use sampler::{Pick, PkSampler, SamplerConfig, SamplerState};
pub use shard::{Dataset, IdentityRecords, Manifest, SHARD_VERSION, Shard, ShardWriter};
pub use synth::{
    SynthConfig, render_face, synth_identity_name, write_synth_folder, write_synth_pairs,
};
