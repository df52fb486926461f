//! The on-disk record format: shards of fixed-size RGB8 face crops, memory-mapped for reading,
//! and a packed dataset (a folder of shards plus `manifest.json`).
//!
//! A shard file is laid out as (all integers little-endian; byte-by-byte in
//! `docs/shard-format.md`):
//!
//! ```text
//! [ header, 80 bytes, crc32-protected                                   ]
//! [ data: n_records × (height × width × 3) bytes, HWC RGB8, fixed size   ]
//! [ index: n_records × (label u32, crc32 u32)                            ]
//! [        n_identities × (label u32, count u32, first u64)             ]
//! [        crc32 u32 of the index bytes before it                       ]
//! ```
//!
//! Record `i` starts at `data_offset + i × record_len`, so a read is one slice of the map and
//! one checksum. [`Shard::open`] checks every size against the file length before allocating,
//! so a truncated or corrupted file is an [`Error::Format`], never a panic.
//! [`ShardWriter`] writes to `<path>.tmp` and renames on [`ShardWriter::finish`], so a crash
//! never leaves a partial file at `path`.

use std::fs::File;
use std::io::{BufWriter, Seek, SeekFrom, Write};
use std::ops::Range;
use std::path::{Path, PathBuf};

use memmap2::Mmap;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::preprocess::Preprocess;

/// Version of the shard format (and of the packed dataset) this crate writes and reads.
pub const SHARD_VERSION: u32 = 1;

/// First eight bytes of every shard file.
const MAGIC: [u8; 8] = *b"PMSHARD\0";
/// Length of the version-1 header, in bytes.
const HEADER_LEN: u64 = 80;
/// Byte offset of the header checksum; the checksum covers the bytes before it.
const HEADER_CRC_OFFSET: usize = 76;
/// Colour channels per pixel (RGB8).
const CHANNELS: u32 = 3;
/// Bytes per record entry of the index (label, crc32).
const RECORD_ENTRY_LEN: u64 = 8;
/// Bytes per identity entry of the index (label, count, first).
const IDENTITY_ENTRY_LEN: u64 = 16;
/// Bytes of a crc32.
const CRC_LEN: u64 = 4;

/// Name of the manifest inside a packed dataset folder.
const MANIFEST_FILE: &str = "manifest.json";

/// One run of records with the same label, as stored in the identity table.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct IdentityEntry {
    label: u32,
    count: u32,
    first: u64,
}

/// The decoded fields of a shard header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Header {
    height: u32,
    width: u32,
    n_identities: u32,
    n_records: u64,
    data_offset: u64,
    data_len: u64,
    index_offset: u64,
    index_len: u64,
}

fn format_error(path: &Path, offset: u64, what: impl Into<String>) -> Error {
    let (path, what) = (path.to_path_buf(), what.into());
    Error::Format { path, offset, what }
}

fn record_error(path: &Path, record: u64, what: impl Into<String>) -> Error {
    let (path, what) = (path.to_path_buf(), what.into());
    Error::Record { path, record, what }
}

fn read_u32(bytes: &[u8], offset: usize) -> Option<u32> {
    let field = bytes.get(offset..offset.checked_add(4)?)?;
    Some(u32::from_le_bytes(field.try_into().ok()?))
}

fn read_u64(bytes: &[u8], offset: usize) -> Option<u64> {
    let field = bytes.get(offset..offset.checked_add(8)?)?;
    Some(u64::from_le_bytes(field.try_into().ok()?))
}

/// Little-endian fields of a file, read with bounds checks; a short read is a format error.
struct Fields<'a> {
    bytes: &'a [u8],
    path: &'a Path,
}

impl Fields<'_> {
    fn u32(&self, offset: usize) -> Result<u32> {
        read_u32(self.bytes, offset).ok_or_else(|| self.truncated(offset))
    }

    fn u64(&self, offset: usize) -> Result<u64> {
        read_u64(self.bytes, offset).ok_or_else(|| self.truncated(offset))
    }

    fn truncated(&self, offset: usize) -> Error {
        format_error(self.path, offset as u64, "truncated field")
    }
}

/// Bytes per record for an image of `height × width` RGB8 pixels, if it fits in a `u64`.
fn record_len(height: u32, width: u32) -> Option<u64> {
    u64::from(height)
        .checked_mul(u64::from(width))?
        .checked_mul(u64::from(CHANNELS))
}

/// Bytes of the index section for the given counts, if it fits in a `u64`.
fn index_len(n_records: u64, n_identities: u32) -> Option<u64> {
    let records = n_records.checked_mul(RECORD_ENTRY_LEN)?;
    let identities = u64::from(n_identities).checked_mul(IDENTITY_ENTRY_LEN)?;
    records.checked_add(identities)?.checked_add(CRC_LEN)
}

impl Header {
    /// The layout for `n_records` records of `height × width`, or `None` on overflow.
    fn for_contents(height: u32, width: u32, n_records: u64, n_identities: u32) -> Option<Header> {
        let data_len = n_records.checked_mul(record_len(height, width)?)?;
        let index_offset = HEADER_LEN.checked_add(data_len)?;
        let index_len = index_len(n_records, n_identities)?;
        index_offset.checked_add(index_len)?;
        Some(Header {
            height,
            width,
            n_identities,
            n_records,
            data_offset: HEADER_LEN,
            data_len,
            index_offset,
            index_len,
        })
    }

    fn record_len(&self) -> u64 {
        // `check_layout` (reader) and `for_contents` (writer) established that this fits.
        record_len(self.height, self.width).unwrap_or(0)
    }

    fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(HEADER_LEN as usize);
        out.extend_from_slice(&MAGIC);
        let small = [
            SHARD_VERSION,
            HEADER_LEN as u32,
            self.height,
            self.width,
            CHANNELS,
        ];
        small
            .iter()
            .chain([&self.n_identities])
            .for_each(|f| out.extend(f.to_le_bytes()));
        let large = [self.n_records, self.data_offset, self.data_len];
        let large = large.iter().chain([&self.index_offset, &self.index_len]);
        large.for_each(|f| out.extend(f.to_le_bytes()));
        out.extend(0u32.to_le_bytes());
        let crc = crc32fast::hash(&out);
        out.extend(crc.to_le_bytes());
        out
    }

    /// Parses and checks the header at the start of `bytes` (the whole file).
    fn decode(bytes: &[u8], path: &Path) -> Result<Header> {
        let fields = Fields { bytes, path };
        check_preamble(&fields)?;
        let header = Header {
            height: fields.u32(16)?,
            width: fields.u32(20)?,
            n_identities: fields.u32(28)?,
            n_records: fields.u64(32)?,
            data_offset: fields.u64(40)?,
            data_len: fields.u64(48)?,
            index_offset: fields.u64(56)?,
            index_len: fields.u64(64)?,
        };
        header.check_layout(bytes.len() as u64, path)?;
        Ok(header)
    }

    /// Checks that the sections follow each other exactly and end at the end of the file.
    fn check_layout(&self, file_len: u64, path: &Path) -> Result<()> {
        let (h, w, n) = (self.height, self.width, self.n_records);
        if h == 0 || w == 0 {
            return Err(format_error(
                path,
                16,
                format!("image size {h}×{w} is empty"),
            ));
        }
        let Some(expected) = Header::for_contents(h, w, n, self.n_identities) else {
            let what = format!("{n} records of {h}×{w} overflow a 64-bit file size");
            return Err(format_error(path, 32, what));
        };

        let fields = [
            (40, "data offset", self.data_offset, expected.data_offset),
            (48, "data length", self.data_len, expected.data_len),
            (56, "index offset", self.index_offset, expected.index_offset),
            (64, "index length", self.index_len, expected.index_len),
        ];
        for (offset, name, found, wanted) in fields {
            if found != wanted {
                let what =
                    format!("{name} is {found}, the record and identity counts need {wanted}");
                return Err(format_error(path, offset, what));
            }
        }

        // `for_contents` checked that this sum fits.
        let end = expected.index_offset.saturating_add(expected.index_len);
        if end != file_len {
            let what = format!("file is {file_len} bytes, the header describes {end}");
            return Err(format_error(path, file_len.min(end), what));
        }
        Ok(())
    }
}

/// Checks magic, length, version, header length and header checksum.
fn check_preamble(fields: &Fields<'_>) -> Result<()> {
    let (bytes, path) = (fields.bytes, fields.path);
    let prefix = bytes.len().min(MAGIC.len());
    if bytes.get(..prefix) != MAGIC.get(..prefix) {
        return Err(format_error(
            path,
            0,
            format!("not a shard: no magic bytes {MAGIC:?}"),
        ));
    }
    if (bytes.len() as u64) < HEADER_LEN {
        let what = format!(
            "truncated: {} bytes, the header needs {HEADER_LEN}",
            bytes.len()
        );
        return Err(format_error(path, 0, what));
    }

    let version = fields.u32(8)?;
    if version != SHARD_VERSION {
        let what = format!(
            "shard version {version} is not supported (this reader: version {SHARD_VERSION})"
        );
        return Err(format_error(path, 8, what));
    }
    let header_len = fields.u32(12)?;
    if u64::from(header_len) != HEADER_LEN {
        let what = format!("header length {header_len}, version 1 requires {HEADER_LEN}");
        return Err(format_error(path, 12, what));
    }

    let stored = fields.u32(HEADER_CRC_OFFSET)?;
    let computed = bytes.get(..HEADER_CRC_OFFSET).map_or(0, crc32fast::hash);
    if computed != stored {
        let what = format!("header checksum {stored:#010x}, computed {computed:#010x}");
        return Err(format_error(path, HEADER_CRC_OFFSET as u64, what));
    }
    if fields.u32(24)? != CHANNELS || fields.u32(72)? != 0 {
        let what = format!("expected {CHANNELS} channels and a zero reserved field");
        return Err(format_error(path, 24, what));
    }
    Ok(())
}

/// The parsed index section of a shard.
struct Index {
    labels: Vec<u32>,
    crcs: Vec<u32>,
    identities: Vec<IdentityEntry>,
}

impl Index {
    /// Parses the index section; `header` has been checked against the file length already.
    fn decode(bytes: &[u8], header: &Header, path: &Path) -> Result<Index> {
        let body = checked_index_body(bytes, header, path)?;
        let records_len =
            usize::try_from(header.n_records.saturating_mul(RECORD_ENTRY_LEN)).unwrap_or(0);
        let (record_bytes, identity_bytes) = body.split_at_checked(records_len).unwrap_or_default();

        let records = record_bytes.chunks_exact(RECORD_ENTRY_LEN as usize);
        let field = |entry: &[u8], offset| read_u32(entry, offset).unwrap_or_default();
        let labels = records.clone().map(|entry| field(entry, 0)).collect();
        let crcs = records.map(|entry| field(entry, 4)).collect();
        let identities = identity_bytes
            .chunks_exact(IDENTITY_ENTRY_LEN as usize)
            .map(|entry| IdentityEntry {
                label: field(entry, 0),
                count: field(entry, 4),
                first: read_u64(entry, 8).unwrap_or_default(),
            })
            .collect();

        let index = Index {
            labels,
            crcs,
            identities,
        };
        index.check_identities(header.index_offset + records_len as u64, path)?;
        Ok(index)
    }

    /// Checks that the identity table covers the records in order, one run per label, and that
    /// every record's label matches its run.
    fn check_identities(&self, table_offset: u64, path: &Path) -> Result<()> {
        let n_records = self.labels.len() as u64;
        let mut next = 0u64;
        let mut previous: Option<u32> = None;
        for (k, entry) in (0u64..).zip(&self.identities) {
            let end = entry.first.saturating_add(u64::from(entry.count));
            let ordered = previous.is_none_or(|p| entry.label > p);
            if entry.first != next || entry.count == 0 || !ordered || end > n_records {
                let (label, first, count) = (entry.label, entry.first, entry.count);
                let what = format!(
                    "identity entry {k} (label {label}, first {first}, count {count}): expected \
                     a non-empty run from record {next} with a label above the previous one"
                );
                return Err(format_error(
                    path,
                    table_offset + k * IDENTITY_ENTRY_LEN,
                    what,
                ));
            }

            let labels = self
                .labels
                .get(next as usize..end as usize)
                .unwrap_or_default();
            if let Some(offset) = labels.iter().position(|&l| l != entry.label) {
                let what = format!(
                    "label differs from its identity entry's label {}",
                    entry.label
                );
                return Err(record_error(path, next + offset as u64, what));
            }
            (next, previous) = (end, Some(entry.label));
        }

        if next != n_records {
            let what = format!("identity table covers {next} of {n_records} records");
            return Err(format_error(path, table_offset, what));
        }
        Ok(())
    }
}

/// The index section without its trailing crc32, after checking that crc32.
fn checked_index_body<'a>(bytes: &'a [u8], header: &Header, path: &Path) -> Result<&'a [u8]> {
    let start = usize::try_from(header.index_offset).ok();
    let len = usize::try_from(header.index_len).ok();
    let section = start
        .zip(len)
        .and_then(|(s, l)| bytes.get(s..s.checked_add(l)?));
    let section =
        section.ok_or_else(|| format_error(path, header.index_offset, "index outside the file"))?;

    let body_len = section.len().saturating_sub(CRC_LEN as usize);
    let stored = read_u32(section, body_len);
    let body = section.get(..body_len).unwrap_or_default();
    if stored != Some(crc32fast::hash(body)) {
        let offset = header.index_offset + body_len as u64;
        return Err(format_error(path, offset, "index checksum mismatch"));
    }
    Ok(body)
}

/// Streams records into a new shard file.
///
/// Records go to `<path>.tmp`; [`ShardWriter::finish`] appends the index, writes the header,
/// fsyncs and renames the file to `path`. Dropping a writer without finishing removes the
/// temporary file, and a crash never leaves a file at `path`.
pub struct ShardWriter {
    path: PathBuf,
    tmp_path: PathBuf,
    file: Option<BufWriter<File>>,
    height: u32,
    width: u32,
    record_len: u64,
    labels: Vec<u32>,
    crcs: Vec<u32>,
    identities: Vec<IdentityEntry>,
    done: bool,
}

impl ShardWriter {
    /// Writes to `<path>.tmp`; `finish` fsyncs and renames, so a crash never leaves a file at
    /// `path`.
    ///
    /// Records are `height × width × 3` bytes of RGB8 in HWC order.
    ///
    /// # Errors
    /// [`Error::Config`] for an empty or overflowing image size, [`Error::Io`] if the
    /// temporary file cannot be created.
    pub fn create(path: &Path, height: u32, width: u32) -> Result<ShardWriter> {
        let record_len = record_len(height, width)
            .filter(|&len| len > 0)
            .ok_or_else(|| {
                Error::Config(format!(
                    "{}: cannot store {height}×{width} images",
                    path.display()
                ))
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
            height,
            width,
            record_len,
            labels: Vec::new(),
            crcs: Vec::new(),
            identities: Vec::new(),
            done: false,
        })
    }

    /// Appends one record.
    ///
    /// Labels must be non-decreasing (records of one identity are contiguous); error otherwise.
    ///
    /// # Errors
    /// [`Error::Record`] if `pixels.len()` is not `height × width × 3` or `label` is below the
    /// previous label; [`Error::Io`] if writing fails.
    pub fn push(&mut self, label: u32, pixels: &[u8]) -> Result<()> {
        let record = self.len();
        if pixels.len() as u64 != self.record_len {
            let (h, w, len) = (self.height, self.width, pixels.len());
            let what = format!("expected {h}×{w}×3 = {} bytes, got {len}", self.record_len);
            return Err(record_error(&self.path, record, what));
        }
        match self.identities.last_mut() {
            Some(last) if label < last.label => {
                let what = format!(
                    "label {label} after {}: labels must not decrease",
                    last.label
                );
                return Err(record_error(&self.path, record, what));
            }
            Some(last) if label == last.label => {
                let too_many = || record_error(&self.path, record, "2^32 records of one label");
                last.count = last.count.checked_add(1).ok_or_else(too_many)?;
            }
            _ => self.identities.push(IdentityEntry {
                label,
                count: 1,
                first: record,
            }),
        }

        let file = self
            .file
            .as_mut()
            .ok_or_else(|| Error::Config("writer finished".into()))?;
        file.write_all(pixels)
            .map_err(|e| Error::io(&self.tmp_path, e))?;
        self.labels.push(label);
        self.crcs.push(crc32fast::hash(pixels));
        Ok(())
    }

    /// Number of records pushed so far.
    pub fn len(&self) -> u64 {
        self.labels.len() as u64
    }

    /// True if no record has been pushed.
    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }

    /// Writes the index and header, fsyncs, and renames `<path>.tmp` to `path`.
    ///
    /// # Errors
    /// [`Error::Io`] naming the file that failed; the temporary file is then removed.
    pub fn finish(mut self) -> Result<()> {
        let n_identities = u32::try_from(self.identities.len()).ok();
        let header =
            n_identities.and_then(|n| Header::for_contents(self.height, self.width, self.len(), n));
        let header = header
            .ok_or_else(|| Error::Config(format!("{}: shard too large", self.path.display())))?;
        let mut out = self
            .file
            .take()
            .ok_or_else(|| Error::Config("shard writer already finished".into()))?;

        let tmp = self.tmp_path.clone();
        out.write_all(&self.encode_index())
            .map_err(|e| Error::io(&tmp, e))?;
        let mut file = out
            .into_inner()
            .map_err(|e| Error::io(&tmp, e.into_error()))?;
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
        let capacity = self.labels.len() * 8 + self.identities.len() * 16 + 4;
        let mut out = Vec::with_capacity(capacity);
        for (label, crc) in self.labels.iter().zip(&self.crcs) {
            out.extend_from_slice(&label.to_le_bytes());
            out.extend_from_slice(&crc.to_le_bytes());
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

/// Makes a rename inside the parent folder durable (a no-op where folders cannot be opened).
pub(crate) fn sync_parent(path: &Path) -> Result<()> {
    #[cfg(unix)]
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        let dir = File::open(parent).map_err(|e| Error::io(parent, e))?;
        dir.sync_all().map_err(|e| Error::io(parent, e))?;
    }
    #[cfg(not(unix))]
    let _ = path;
    Ok(())
}

/// A read-only, memory-mapped shard whose header and index have been checked.
pub struct Shard {
    path: PathBuf,
    map: Mmap,
    header: Header,
    index: Index,
}

impl Shard {
    /// Maps and checks a shard: magic, version, header checksum, section sizes against the file
    /// length, index checksum and the identity table.
    ///
    /// # Errors
    /// [`Error::Io`] if the file cannot be opened or mapped; [`Error::Format`] (naming the
    /// byte offset) for a truncated, corrupted or unknown-version file; [`Error::Record`] for a
    /// record whose label disagrees with the identity table.
    pub fn open(path: &Path) -> Result<Shard> {
        let file = File::open(path).map_err(|e| Error::io(path, e))?;
        // SAFETY: shards are written once under a temporary name and renamed into place, and
        // nothing in this workspace modifies or truncates a finished shard, so the mapped bytes
        // do not change while the map lives. The map is only read, and every read is bounds-checked
        // against the map's length.
        let map = unsafe { Mmap::map(&file) }.map_err(|e| Error::io(path, e))?;
        let header = Header::decode(&map, path)?;
        let index = Index::decode(&map, &header, path)?;
        Ok(Shard {
            path: path.to_path_buf(),
            map,
            header,
            index,
        })
    }

    /// The file this shard was opened from.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Number of records.
    pub fn len(&self) -> u64 {
        self.header.n_records
    }

    /// True if the shard holds no record.
    pub fn is_empty(&self) -> bool {
        self.header.n_records == 0
    }

    /// Image size of every record, as (height, width).
    pub fn image_size(&self) -> (u32, u32) {
        (self.header.height, self.header.width)
    }

    /// The label of `record`.
    ///
    /// # Errors
    /// [`Error::Record`] if `record` is out of range.
    pub fn label(&self, record: u64) -> Result<u32> {
        let label = usize::try_from(record)
            .ok()
            .and_then(|r| self.index.labels.get(r));
        label.copied().ok_or_else(|| self.out_of_range(record))
    }

    /// The `height × width × 3` RGB8 bytes of `record`, after checking its crc32.
    ///
    /// # Errors
    /// [`Error::Record`] naming the shard and the record if it is out of range or its checksum
    /// does not match.
    pub fn pixels(&self, record: u64) -> Result<&[u8]> {
        let stored = usize::try_from(record)
            .ok()
            .and_then(|r| self.index.crcs.get(r));
        let stored = *stored.ok_or_else(|| self.out_of_range(record))?;
        let record_len = self.header.record_len();
        let start = record
            .checked_mul(record_len)
            .and_then(|o| o.checked_add(self.header.data_offset));
        let bytes = start
            .and_then(|s| Some((usize::try_from(s).ok()?, usize::try_from(record_len).ok()?)))
            .and_then(|(s, len)| self.map.get(s..s.checked_add(len)?))
            .ok_or_else(|| record_error(&self.path, record, "record lies outside the file"))?;

        let computed = crc32fast::hash(bytes);
        if computed != stored {
            let what = format!(
                "pixel checksum mismatch: stored {stored:#010x}, computed {computed:#010x}"
            );
            return Err(record_error(&self.path, record, what));
        }
        Ok(bytes)
    }

    /// (label, record range) of every identity, from the shard's identity table, in label order.
    pub fn identities(&self) -> Vec<(u32, Range<u64>)> {
        self.index
            .identities
            .iter()
            .map(|e| (e.label, e.first..e.first + u64::from(e.count)))
            .collect()
    }

    fn out_of_range(&self, record: u64) -> Error {
        let what = format!("out of range: the shard has {} records", self.len());
        record_error(&self.path, record, what)
    }
}

/// A packed dataset: a directory with `manifest.json` and `shard-00000.pms`, `shard-00001.pms`, ...
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Manifest {
    /// Format version of the dataset and its shards; must equal [`SHARD_VERSION`].
    pub format_version: u32,
    /// Image height of every record.
    pub height: u32,
    /// Image width of every record.
    pub width: u32,
    /// Total number of records over all shards.
    pub n_images: u64,
    /// Identity name of each label (label -> identity name).
    pub identities: Vec<String>,
    /// Shard file names, relative to the dataset folder, in shard-index order.
    pub shards: Vec<String>,
    /// How the images were cropped and resized.
    pub preprocess: Preprocess,
    /// Where the images came from (the packed folder, as given).
    pub source: String,
}

/// Where the records of one identity lie; an identity never spans shards.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IdentityRecords {
    /// Index of the shard in [`Manifest::shards`].
    pub shard: u32,
    /// First record of the identity inside that shard.
    pub first: u64,
    /// Number of records of the identity.
    pub count: u32,
}

/// An opened packed dataset: its manifest, its mapped shards and the records of each label.
pub struct Dataset {
    root: PathBuf,
    manifest: Manifest,
    shards: Vec<Shard>,
    identities: Vec<IdentityRecords>,
}

impl Dataset {
    /// Reads the manifest, opens every shard and indexes the records of each label.
    ///
    /// Checks that every label is below `identities.len()`, that each identity is present
    /// exactly once, that image sizes agree and that `n_images` matches the shards.
    ///
    /// # Errors
    /// [`Error::Io`] / [`Error::Parse`] for an unreadable manifest, the errors of
    /// [`Shard::open`], [`Error::Record`] / [`Error::Format`] naming the shard that disagrees
    /// with the manifest, and [`Error::Config`] naming the manifest for a wrong version, a bad
    /// shard name, a missing identity or a wrong image count.
    pub fn open(dir: &Path) -> Result<Dataset> {
        let manifest_path = dir.join(MANIFEST_FILE);
        let manifest = read_manifest(&manifest_path)?;
        let shards = open_shards(dir, &manifest, &manifest_path)?;
        let identities = index_identities(&manifest, &shards, &manifest_path)?;

        let n_images: u64 = shards.iter().map(Shard::len).sum();
        if n_images != manifest.n_images {
            let what = format!(
                "n_images is {}, the shards hold {n_images}",
                manifest.n_images
            );
            return Err(manifest_error(&manifest_path, what));
        }
        Ok(Dataset {
            root: dir.to_path_buf(),
            manifest,
            shards,
            identities,
        })
    }

    /// The dataset's manifest.
    pub fn manifest(&self) -> &Manifest {
        &self.manifest
    }

    /// The dataset folder.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Number of identities (labels are `0..n_identities`).
    pub fn n_identities(&self) -> usize {
        self.identities.len()
    }

    /// Number of records over all shards.
    pub fn n_images(&self) -> u64 {
        self.manifest.n_images
    }

    /// Image size of every record, as (height, width).
    pub fn image_size(&self) -> (u32, u32) {
        (self.manifest.height, self.manifest.width)
    }

    /// Where the records of `label` lie, or `None` if there is no such label.
    pub fn identity(&self, label: u32) -> Option<IdentityRecords> {
        self.identities.get(usize::try_from(label).ok()?).copied()
    }

    /// The checked RGB8 bytes of `record` in shard `shard`.
    ///
    /// # Errors
    /// [`Error::Config`] for a shard index out of range, and the errors of [`Shard::pixels`].
    pub fn pixels(&self, shard: u32, record: u64) -> Result<&[u8]> {
        let found = usize::try_from(shard).ok().and_then(|s| self.shards.get(s));
        let what = || format!("shard {shard} out of range ({} shards)", self.shards.len());
        let found = found.ok_or_else(|| manifest_error(&self.root, what()))?;
        found.pixels(record)
    }
}

/// A configuration error about the manifest at `path`.
fn manifest_error(path: &Path, what: impl std::fmt::Display) -> Error {
    Error::Config(format!("{}: {what}", path.display()))
}

/// Reads and parses `manifest.json`, checking its version.
fn read_manifest(path: &Path) -> Result<Manifest> {
    let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
    let manifest: Manifest = serde_json::from_str(&text).map_err(|e| Error::Parse {
        path: path.to_path_buf(),
        line: e.line(),
        what: e.to_string(),
    })?;
    let version = manifest.format_version;
    if version != SHARD_VERSION {
        let what = format!(
            "dataset version {version} is not supported (this reader: version {SHARD_VERSION})"
        );
        return Err(manifest_error(path, what));
    }
    Ok(manifest)
}

/// Opens every shard the manifest lists and checks its image size.
fn open_shards(dir: &Path, manifest: &Manifest, manifest_path: &Path) -> Result<Vec<Shard>> {
    if u32::try_from(manifest.shards.len()).is_err() {
        return Err(manifest_error(manifest_path, "more than 2^32 shards"));
    }
    let mut shards = Vec::with_capacity(manifest.shards.len());
    for name in &manifest.shards {
        if Path::new(name)
            .file_name()
            .is_none_or(|f| f != name.as_str())
        {
            let what = format!("shard name `{name}` is not a plain file name");
            return Err(manifest_error(manifest_path, what));
        }

        let shard = Shard::open(&dir.join(name))?;
        let (h, w) = shard.image_size();
        if (h, w) != (manifest.height, manifest.width) {
            let expected = format!("{}×{}", manifest.height, manifest.width);
            let what = format!("images are {h}×{w}, the manifest says {expected}");
            return Err(format_error(shard.path(), 16, what));
        }
        shards.push(shard);
    }
    Ok(shards)
}

/// Builds the label -> records table, checking labels against the manifest's identity list.
fn index_identities(
    manifest: &Manifest,
    shards: &[Shard],
    manifest_path: &Path,
) -> Result<Vec<IdentityRecords>> {
    let n_identities = manifest.identities.len();
    let mut table: Vec<Option<IdentityRecords>> = vec![None; n_identities];
    for (shard_index, shard) in (0u32..).zip(shards) {
        for entry in &shard.index.identities {
            let label = entry.label;
            let error = |what: String| record_error(shard.path(), entry.first, what);
            let slot = usize::try_from(label).ok().and_then(|l| table.get_mut(l));
            let Some(slot) = slot else {
                return Err(error(format!(
                    "label {label}, but only {n_identities} identities"
                )));
            };
            if let Some(other) = slot {
                let name = manifest
                    .shards
                    .get(other.shard as usize)
                    .map_or("?", String::as_str);
                return Err(error(format!(
                    "label {label} is also stored in shard {name}"
                )));
            }
            let (first, count) = (entry.first, entry.count);
            *slot = Some(IdentityRecords {
                shard: shard_index,
                first,
                count,
            });
        }
    }

    if let Some(label) = table.iter().position(Option::is_none) {
        let name = manifest.identities.get(label).map_or("?", String::as_str);
        let what = format!("identity {label} ({name}) has no records in any shard");
        return Err(manifest_error(manifest_path, what));
    }
    Ok(table.into_iter().flatten().collect())
}
