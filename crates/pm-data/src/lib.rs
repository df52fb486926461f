//! Face data for Prototype Memory training: memory-mapped record shards, per-identity
//! P×K sampling, decoding and augmentation, and a synthetic face generator.
//!
//! The crate knows no model: it hands out batches as plain `f32` buffers in NCHW layout
//! scaled to [-1, 1], with one integer label per image.

mod dataset;
mod error;
mod files;
mod listfile;
mod loader;
mod pack;
mod preprocess;
mod recordio;
mod rng;
mod sampler;
mod shard;
mod synth;
mod verify;

pub use dataset::{Dataset, IdentityRecords, Manifest};
pub use error::{Error, Result};
pub use listfile::{ListEntry, read_list_file};
pub use loader::{Batch, Prefetcher, assemble, identity_counts, rgb_record, write_chw};
pub use pack::{
    PackConfig, PackReport, Skipped, pack_folder, pack_list, pack_recordio, pack_synth,
    read_name_list,
};
pub use preprocess::{Crop, Preprocess};
pub use recordio::{
    Property, RecordIo, RecordIoImage, RecordIoLayout, check_recordio_bytes, record_payload,
    write_record,
};
pub use rng::SplitMix64;
pub use sampler::{LookalikeSource, Pick, PkSampler, SamplerConfig, SamplerState, SamplingMode};
pub use shard::{SHARD_VERSION, Shard, ShardSummary, ShardWriter, Storage, check_shard_bytes};
pub use synth::{
    SynthConfig, render_face, synth_identity_name, write_synth_folder, write_synth_pairs,
};
pub use verify::{ShardStats, VerifyReport, verify_dataset};
