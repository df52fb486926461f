//! Prototype Memory (Smirnov, Garaev, Galyuk, "Prototype Memory for Large-scale Face
//! Representation Learning", IEEE Access 2022): a fixed-size memory of class prototypes used as
//! the weights of a margin softmax, so that the cost of a step does not depend on the number of
//! identities in the training set.
//!
//! Each step:
//! 1. [`prototypes`] makes one fresh prototype per identity of the batch from the embeddings of
//!    its K images;
//! 2. [`PrototypeMemory::classifier`] builds the softmax weights: the fresh prototypes followed by
//!    every stored row of an identity that is not in the batch;
//! 3. after the optimizer step, [`PrototypeMemory::update`] writes the detached fresh prototypes
//!    into the memory: refresh of the identity's slot, else a free slot, else eviction by policy.
//!
//! The crate depends on candle and nothing else of the workspace, so a downstream trainer can use
//! it alone.

mod error;
mod gather;
mod memory;
pub mod ops;
mod prototype;

pub use error::{Error, Result};
pub use gather::WorkerUpdate;
pub use memory::{Classifier, Eviction, MemoryConfig, PrototypeMemory, UpdateStats};
pub use prototype::{
    ExemplarWeights, PrototypeConfig, PrototypeGrad, PrototypeSource, leave_one_out,
    normalize_rows, prototypes, query_rows, resolved_exemplars,
};
