//! Errors of the trainer.

use std::path::PathBuf;

/// Everything that can go wrong in a training run.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Reading the data.
    #[error(transparent)]
    Data(#[from] pm_data::Error),
    /// The prototype memory.
    #[error(transparent)]
    Memory(#[from] pm_memory::Error),
    /// The loss.
    #[error(transparent)]
    Loss(#[from] pm_loss::Error),
    /// The encoder.
    #[error(transparent)]
    Model(#[from] pm_models::Error),
    /// Evaluation (the demo's report).
    #[error(transparent)]
    Eval(#[from] pm_eval::Error),
    /// A tensor operation.
    #[error(transparent)]
    Candle(#[from] candle_core::Error),
    /// A file of the run directory.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// A configuration file that does not parse or does not make sense.
    #[error("{path}: {what}")]
    Config {
        /// The configuration file (or `<config>` for one built in code).
        path: PathBuf,
        /// What is wrong.
        what: String,
    },
    /// A checkpoint that cannot be resumed.
    #[error("checkpoint {path}: {what}")]
    Checkpoint {
        /// The checkpoint directory.
        path: PathBuf,
        /// What is wrong.
        what: String,
    },
    /// The run stopped because the loss or a gradient was not finite too many steps in a row.
    #[error("the loss or a gradient was not finite for {0} steps in a row; stopping")]
    Diverged(usize),
}

impl Error {
    /// Wraps an I/O error with its path.
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            path: path.into(),
            source,
        }
    }
}

/// Result with [`Error`].
pub type Result<T> = std::result::Result<T, Error>;
