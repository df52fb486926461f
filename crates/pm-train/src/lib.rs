//! Training a face encoder with Prototype Memory: the loop that composes `pm-data` (batches),
//! `pm-models` (the encoder), `pm-memory` (the prototypes) and `pm-loss` (the margin softmax),
//! with checkpoints that resume bit-exactly, metrics in JSONL, and the embedded demo.

mod checkpoint;
mod config;
pub mod demo;
mod error;
mod head;
mod metrics;
mod obsolescence;
pub mod plot;
pub mod scale;
mod sgd;
mod trainer;

pub use checkpoint::{Checkpoint, latest_checkpoint};
pub use config::{
    DataSection, HeadKind, HeadSection, MemorySection, OptimSection, RunSection, Schedule,
    TrainConfig,
};
pub use error::{Error, Result};
pub use metrics::StepMetrics;
pub use obsolescence::Obsolescence;
pub use sgd::SgdMomentum;
pub use trainer::{NoProgress, Progress, TrainSummary, Trainer, build_encoder, load_encoder};
