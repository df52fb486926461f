//! The one error type of `pm-eval`: every failure names the file, the line and what was expected.

use std::path::PathBuf;

/// Everything that can go wrong while reading a verification protocol or scoring it.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// An error from the data crate (decoding, shards).
    #[error(transparent)]
    Data(#[from] pm_data::Error),

    /// An error from candle while embedding images.
    #[error(transparent)]
    Candle(#[from] candle_core::Error),

    /// An operating-system error on a file or folder.
    #[error("{path}: {source}", path = path.display())]
    Io {
        /// The file or folder.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },

    /// A text protocol file that does not follow its format.
    #[error("{path}:{line}: {what}", path = path.display())]
    Parse {
        /// The protocol file.
        path: PathBuf,
        /// 1-based line number in that file (0 when the problem is the file as a whole).
        line: usize,
        /// What was expected and what was found.
        what: String,
    },

    /// A protocol line that refers to an image that does not exist.
    #[error(
        "{path}:{line}: image {image} does not exist (a dropped pair would shift the folds)",
        path = path.display(),
        image = image.display()
    )]
    MissingImage {
        /// The protocol file that names the image.
        path: PathBuf,
        /// 1-based line number in that file.
        line: usize,
        /// The image path that was looked for.
        image: PathBuf,
    },

    /// Scores, labels or embeddings that cannot be evaluated (length mismatch, NaN, zero vector).
    #[error("verification protocol: {0}")]
    Protocol(String),
}

/// `Result` with this crate's [`Error`].
pub type Result<T> = std::result::Result<T, Error>;
