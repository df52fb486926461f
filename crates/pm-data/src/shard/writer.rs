//! Writing one shard: records are streamed to `<path>.tmp`, the index and header follow at
//! [`ShardWriter::finish`], then the file is fsynced and renamed to `path`.
//!
//! A writer can be parked (data flushed, file closed) and finished later, after its labels
//! have been shifted by [`ShardWriter::offset_labels`]: that is how shards are written in
//! parallel while labels are only known once every shard has seen which identities it kept.

use std::fs::{File, OpenOptions};
use std::io::{BufWriter, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use super::{
    HEADER_LEN, Header, IdentityEntry, Storage, raw_record_len, record_error, sync_parent,
};
use crate::error::{Error, Result};

/// Streams records into a new shard file.
///
/// Records go to `<path>.tmp`; [`ShardWriter::finish`] appends the index, writes the header,
/// fsyncs and renames the file to `path`. Dropping a writer without finishing removes the
/// temporary file, and a crash never leaves a file at `path`.
pub struct ShardWriter {
    path: PathBuf,
    tmp_path: PathBuf,
    file: Option<BufWriter<File>>,
    layout: (u32, u32, Storage),
    raw_len: u64,
    /// Per record: label, crc32, length. Offsets are their running sum.
    records: Vec<(u32, u32, u32)>,
    data_len: u64,
    identities: Vec<IdentityEntry>,
    done: bool,
}

impl ShardWriter {
    /// Starts a shard of `height × width` images stored as `storage`, written to
    /// `<path>.tmp` until [`ShardWriter::finish`].
    ///
    /// # Errors
    /// [`Error::Config`] for an empty or overflowing image size, [`Error::Io`] if the
    /// temporary file cannot be created.
    pub fn create(path: &Path, height: u32, width: u32, storage: Storage) -> Result<ShardWriter> {
        let raw_len = raw_record_len(height, width)
            .filter(|&len| len > 0 && len <= u64::from(u32::MAX))
            .ok_or_else(|| {
                let what = format!("{}: cannot store {height}×{width} images", path.display());
                Error::Config(what)
            })?;
        let mut tmp_name = path.as_os_str().to_owned();
        tmp_name.push(".tmp");
        let tmp_path = PathBuf::from(tmp_name);

        let file = File::create(&tmp_path).map_err(|e| Error::io(&tmp_path, e))?;
        let mut file = BufWriter::new(file);
        file.write_all(&[0u8; HEADER_LEN as usize])
            .map_err(|e| Error::io(&tmp_path, e))?;
        Ok(ShardWriter {
            path: path.to_path_buf(),
            tmp_path,
            file: Some(file),
            layout: (height, width, storage),
            raw_len,
            records: Vec::new(),
            data_len: 0,
            identities: Vec::new(),
            done: false,
        })
    }

    /// Appends one record: RGB8 HWC pixels for a raw shard, encoded image bytes for an encoded
    /// one (the caller checks that they decode to the shard's size).
    ///
    /// Labels must be non-decreasing (records of one identity are contiguous).
    ///
    /// # Errors
    /// [`Error::Record`] if a raw record is not `height × width × 3` bytes, an encoded record
    /// is empty or over 4 GiB, `label` is below the previous label, or the writer is parked;
    /// [`Error::Io`] if writing fails. After an error the writer is unchanged.
    pub fn push(&mut self, label: u32, bytes: &[u8]) -> Result<()> {
        let record = self.len();
        self.check_len(record, bytes.len())?;
        self.check_label(record, label)?;

        // Nothing is recorded until the bytes are written: a failed push leaves the writer as
        // it was.
        let file = self.file.as_mut().ok_or_else(|| {
            let what = "writer is parked or finished: no more records";
            record_error(&self.path, record, what)
        })?;
        file.write_all(bytes)
            .map_err(|e| Error::io(&self.tmp_path, e))?;
        self.extend_identity(record, label);
        self.records
            .push((label, crc32fast::hash(bytes), bytes.len() as u32));
        self.data_len += bytes.len() as u64;
        Ok(())
    }

    fn check_len(&self, record: u64, len: usize) -> Result<()> {
        let (h, w, storage) = self.layout;
        let what = match storage {
            Storage::Raw if len as u64 != self.raw_len => {
                format!("expected {h}×{w}×3 = {} bytes, got {len}", self.raw_len)
            }
            Storage::Encoded if len == 0 || u32::try_from(len).is_err() => {
                format!("an encoded image of {len} bytes (expected 1 byte to 4 GiB)")
            }
            _ => return Ok(()),
        };
        Err(record_error(&self.path, record, what))
    }

    /// Labels must not decrease, and one label holds at most `u32::MAX` records.
    fn check_label(&self, record: u64, label: u32) -> Result<()> {
        let what = match self.identities.last() {
            Some(last) if label < last.label => {
                format!(
                    "label {label} after {}: labels must not decrease",
                    last.label
                )
            }
            Some(last) if label == last.label && last.count == u32::MAX => {
                "2^32 records of one label".to_owned()
            }
            _ => return Ok(()),
        };
        Err(record_error(&self.path, record, what))
    }

    /// Adds a record to its identity run (after `check_label`).
    fn extend_identity(&mut self, record: u64, label: u32) {
        match self.identities.last_mut() {
            Some(last) if label == last.label => last.count += 1,
            _ => {
                let first = record;
                self.identities.push(IdentityEntry {
                    label,
                    count: 1,
                    first,
                });
            }
        }
    }

    /// Number of records pushed so far.
    pub fn len(&self) -> u64 {
        self.records.len() as u64
    }

    /// True if no record has been pushed.
    pub fn is_empty(&self) -> bool {
        self.records.is_empty()
    }

    /// Number of identities (runs of one label) pushed so far.
    pub fn n_identities(&self) -> usize {
        self.identities.len()
    }

    /// The final file name.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Flushes the records written so far and closes the file, keeping the writer's index in
    /// memory; [`ShardWriter::finish`] reopens it. Parked writers hold no file handle, so any
    /// number of them can wait for their labels.
    ///
    /// # Errors
    /// [`Error::Io`] if flushing fails.
    pub fn park(&mut self) -> Result<()> {
        if let Some(file) = self.file.take() {
            let file = file
                .into_inner()
                .map_err(|e| Error::io(&self.tmp_path, e.into_error()))?;
            file.sync_all().map_err(|e| Error::io(&self.tmp_path, e))?;
        }
        Ok(())
    }

    /// Adds `base` to every label pushed so far (labels written shard-locally from 0).
    ///
    /// # Errors
    /// [`Error::Config`] if a label would pass `u32::MAX`.
    pub fn offset_labels(&mut self, base: u32) -> Result<()> {
        let overflow = || {
            let what = format!("{}: labels offset by {base} pass 2^32", self.path.display());
            Error::Config(what)
        };
        let last = self.identities.last().map_or(0, |e| e.label);
        last.checked_add(base).ok_or_else(overflow)?;
        self.records.iter_mut().for_each(|r| r.0 += base);
        self.identities.iter_mut().for_each(|e| e.label += base);
        Ok(())
    }

    /// Writes the index and header, fsyncs, and renames `<path>.tmp` to `path`.
    ///
    /// # Errors
    /// [`Error::Io`] naming the file that failed; the temporary file is then removed.
    pub fn finish(mut self) -> Result<()> {
        let n_identities = u32::try_from(self.identities.len()).ok();
        let header = n_identities
            .and_then(|n| Header::for_contents(self.layout, self.len(), n, self.data_len));
        let header = header
            .ok_or_else(|| Error::Config(format!("{}: shard too large", self.path.display())))?;
        let tmp = self.tmp_path.clone();
        let mut out = match self.file.take() {
            Some(file) => file,
            None => {
                let file = OpenOptions::new().append(true).open(&tmp);
                BufWriter::new(file.map_err(|e| Error::io(&tmp, e))?)
            }
        };

        out.write_all(&self.encode_index())
            .map_err(|e| Error::io(&tmp, e))?;
        let mut file = out
            .into_inner()
            .map_err(|e| Error::io(&tmp, e.into_error()))?;
        drop(file);
        // Reopen without append: the header goes at byte 0.
        file = OpenOptions::new()
            .write(true)
            .open(&tmp)
            .map_err(|e| Error::io(&tmp, e))?;
        file.seek(SeekFrom::Start(0))
            .map_err(|e| Error::io(&tmp, e))?;
        file.write_all(&header.encode())
            .map_err(|e| Error::io(&tmp, e))?;
        file.sync_all().map_err(|e| Error::io(&tmp, e))?;
        drop(file);

        std::fs::rename(&tmp, &self.path).map_err(|e| Error::io(&self.path, e))?;
        self.done = true;
        sync_parent(&self.path)
    }

    /// The index section: record entries, identity table, crc32.
    fn encode_index(&self) -> Vec<u8> {
        let capacity = self.records.len() * 24 + self.identities.len() * 16 + 4;
        let mut out = Vec::with_capacity(capacity);
        let mut offset = 0u64;
        for &(label, crc, len) in &self.records {
            out.extend_from_slice(&label.to_le_bytes());
            out.extend_from_slice(&crc.to_le_bytes());
            out.extend_from_slice(&offset.to_le_bytes());
            out.extend_from_slice(&len.to_le_bytes());
            out.extend_from_slice(&0u32.to_le_bytes());
            offset += u64::from(len);
        }
        for entry in &self.identities {
            out.extend_from_slice(&entry.label.to_le_bytes());
            out.extend_from_slice(&entry.count.to_le_bytes());
            out.extend_from_slice(&entry.first.to_le_bytes());
        }
        let crc = crc32fast::hash(&out);
        out.extend_from_slice(&crc.to_le_bytes());
        out
    }
}

impl Drop for ShardWriter {
    fn drop(&mut self) {
        if !self.done {
            drop(self.file.take());
            // Best effort: the temporary file is ours and holds nothing of value.
            let _ = std::fs::remove_file(&self.tmp_path);
        }
    }
}
