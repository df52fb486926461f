//! Errors of the prototype memory.

/// Everything that can go wrong in the memory.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A tensor operation failed.
    #[error(transparent)]
    Candle(#[from] candle_core::Error),

    /// Arguments whose shapes or contents do not fit the memory.
    #[error("prototype memory: {0}")]
    Invalid(String),

    /// A saved memory that does not match this memory's configuration.
    #[error(
        "prototype memory checkpoint does not match: {field} is {found} in the checkpoint, {expected} here"
    )]
    Mismatch {
        /// Which setting differs.
        field: &'static str,
        /// The value in this memory.
        expected: String,
        /// The value in the checkpoint.
        found: String,
    },
}

/// Result with [`Error`].
pub type Result<T> = std::result::Result<T, Error>;
