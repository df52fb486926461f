//! Errors of the models.

/// Everything that can go wrong building or running an encoder.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A tensor operation failed.
    #[error(transparent)]
    Candle(#[from] candle_core::Error),

    /// A configuration that cannot build a model.
    #[error("encoder configuration: {0}")]
    Config(String),
}

/// Result with [`Error`].
pub type Result<T> = std::result::Result<T, Error>;
