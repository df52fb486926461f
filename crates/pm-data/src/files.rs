//! Opening the files a user hands over, safely: only regular files (a FIFO would block the
//! reader forever, a device like `/dev/zero` never ends), and small text files read with a
//! size cap, so that a mislabelled path is an error naming it rather than a hang or an
//! out-of-memory abort.

use std::fs::File;
use std::io::Read;
use std::path::Path;

use crate::error::{Error, Result};

/// Opens `path` for reading if it is (or links to) a regular file.
///
/// # Errors
/// [`Error::Io`] naming the path if it is missing or unreadable, or is not a regular file.
pub(crate) fn open_regular(path: &Path) -> Result<File> {
    let meta = std::fs::metadata(path).map_err(|e| Error::io(path, e))?;
    if !meta.is_file() {
        let kind = if meta.is_dir() {
            "a folder"
        } else {
            "not a regular file (device, pipe, socket)"
        };
        let what = format!("expected a regular file, found {kind}");
        return Err(Error::io(
            path,
            std::io::Error::new(std::io::ErrorKind::InvalidInput, what),
        ));
    }
    File::open(path).map_err(|e| Error::io(path, e))
}

/// Reads a regular file of at most `max_bytes`.
///
/// # Errors
/// The errors of [`open_regular`], and [`Error::Io`] naming the path if the file is larger
/// than `max_bytes`.
pub(crate) fn read_capped(path: &Path, max_bytes: u64) -> Result<Vec<u8>> {
    let file = open_regular(path)?;
    let mut bytes = Vec::new();
    file.take(max_bytes.saturating_add(1))
        .read_to_end(&mut bytes)
        .map_err(|e| Error::io(path, e))?;
    if bytes.len() as u64 > max_bytes {
        let what = format!("larger than the {max_bytes} bytes accepted for this kind of file");
        return Err(Error::io(
            path,
            std::io::Error::new(std::io::ErrorKind::InvalidData, what),
        ));
    }
    Ok(bytes)
}

/// Reads a regular UTF-8 text file of at most `max_bytes`.
///
/// # Errors
/// The errors of [`read_capped`], and [`Error::Parse`] for content that is not UTF-8.
pub(crate) fn read_text_capped(path: &Path, max_bytes: u64) -> Result<String> {
    let bytes = read_capped(path, max_bytes)?;
    String::from_utf8(bytes).map_err(|e| Error::Parse {
        path: path.to_path_buf(),
        line: 0,
        what: format!("not UTF-8 text: {e}"),
    })
}

/// Cap of one image file (a 4096² PNG is well below it).
pub(crate) const MAX_IMAGE_FILE: u64 = 256 << 20;
/// Cap of a small text file (manifest, `property`, name list, landmark file).
pub(crate) const MAX_SMALL_TEXT: u64 = 1 << 30;
