//! The one error type of `pm-data`: every variant says which file, which record and what was
//! expected, so a user can find the bad input without a debugger.

use std::path::{Path, PathBuf};

/// Everything that can go wrong while packing, reading or sampling face records.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// An operating-system error on a file or folder.
    #[error("{path}: {source}")]
    Io {
        /// The file or folder.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },

    /// A binary file (a shard) that does not follow its format.
    #[error("{path}: {what} (at byte {offset})")]
    Format {
        /// The file.
        path: PathBuf,
        /// Byte offset where the problem was found.
        offset: u64,
        /// What was expected and what was found.
        what: String,
    },

    /// One record of a shard failed a check (checksum, label range).
    #[error("{path}: record {record}: {what}")]
    Record {
        /// The shard file.
        path: PathBuf,
        /// The record index inside the shard.
        record: u64,
        /// What was expected and what was found.
        what: String,
    },

    /// An image that could not be decoded or preprocessed.
    #[error("{path}: cannot decode image: {reason}")]
    Decode {
        /// The image file.
        path: PathBuf,
        /// What the decoder said.
        reason: String,
    },

    /// A text input (a list, a landmark file, a protocol file) with a bad line.
    #[error("{path}:{line}: {what}")]
    Parse {
        /// The text file.
        path: PathBuf,
        /// 1-based line number.
        line: usize,
        /// What was expected and what was found.
        what: String,
    },

    /// A configuration that cannot work (no identities left, K < 1, ...).
    #[error("invalid configuration: {0}")]
    Config(String),
}

impl Error {
    /// Wraps an I/O error with the path it happened on.
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            path: path.into(),
            source,
        }
    }
}

/// An [`Error::Format`] at byte `offset` of `path`.
pub(crate) fn format_error(path: &Path, offset: u64, what: impl Into<String>) -> Error {
    let (path, what) = (path.to_path_buf(), what.into());
    Error::Format { path, offset, what }
}

/// An [`Error::Record`] about record `record` of `path`.
pub(crate) fn record_error(path: &Path, record: u64, what: impl Into<String>) -> Error {
    let (path, what) = (path.to_path_buf(), what.into());
    Error::Record { path, record, what }
}

/// An [`Error::Parse`] at 1-based line `line` of `path`.
pub(crate) fn parse_error(path: &Path, line: usize, what: impl Into<String>) -> Error {
    let (path, what) = (path.to_path_buf(), what.into());
    Error::Parse { path, line, what }
}

/// The little-endian `u32` at `offset`, if the bytes hold it.
pub(crate) fn read_u32(bytes: &[u8], offset: usize) -> Option<u32> {
    let field = bytes.get(offset..offset.checked_add(4)?)?;
    Some(u32::from_le_bytes(field.try_into().ok()?))
}

/// The little-endian `u64` at `offset`, if the bytes hold it.
pub(crate) fn read_u64(bytes: &[u8], offset: usize) -> Option<u64> {
    let field = bytes.get(offset..offset.checked_add(8)?)?;
    Some(u64::from_le_bytes(field.try_into().ok()?))
}

/// Result with [`Error`].
pub type Result<T> = std::result::Result<T, Error>;
