//! The on-disk record format: shards of face crops, memory-mapped for reading, stored either
//! as raw RGB8 pixels (fastest to read) or as encoded images (JPEG as it came: the field's
//! choice at 10^8 images).
//!
//! A shard file is laid out as (all integers little-endian; byte-by-byte in
//! `docs/shard-format.md`):
//!
//! ```text
//! [ header, 80 bytes, crc32-protected                                          ]
//! [ data: the records back to back (raw: h × w × 3 bytes each; encoded: any)   ]
//! [ index: n_records × (label u32, crc32 u32, offset u64, len u32, 0 u32)      ]
//! [        n_identities × (label u32, count u32, first u64)                    ]
//! [        crc32 u32 of the index bytes before it                              ]
//! ```
//!
//! [`Shard::open`] checks every size against the file length before it allocates anything,
//! then walks the index once (records tile the data section, runs of labels tile the records)
//! without keeping a per-record structure: the record table is read from the map on demand,
//! so the memory a shard costs beyond its mapping is constant. A read is one slice of the
//! map and one checksum. [`ShardWriter`] (in `shard/writer.rs`) writes to `<path>.tmp` and
//! renames on finish, so a crash never leaves a partial file at `path`.

mod writer;

use std::fs::File;
use std::path::{Path, PathBuf};

use memmap2::Mmap;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result, format_error, read_u32, read_u64, record_error};

pub use writer::ShardWriter;

/// Version of the shard format (and of the packed dataset) this crate writes and reads.
pub const SHARD_VERSION: u32 = 2;

/// First eight bytes of every shard file.
const MAGIC: [u8; 8] = *b"PMSHARD\0";
/// Length of the header, in bytes.
const HEADER_LEN: u64 = 80;
/// Byte offset of the header checksum; the checksum covers the bytes before it.
const HEADER_CRC_OFFSET: usize = 76;
/// Colour channels per pixel (RGB8).
const CHANNELS: u32 = 3;
/// Bytes per record entry of the index (label, crc32, offset, len, reserved).
const RECORD_ENTRY_LEN: u64 = 24;
/// Bytes per identity entry of the index (label, count, first).
const IDENTITY_ENTRY_LEN: u64 = 16;
/// Bytes of a crc32.
const CRC_LEN: u64 = 4;

/// How a shard stores its images.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Storage {
    /// `height × width × 3` bytes of RGB8, HWC: no decoding on read.
    #[default]
    Raw,
    /// An encoded image (JPEG, PNG or BMP) that decodes to `height × width`.
    Encoded,
}

impl Storage {
    fn code(self) -> u32 {
        match self {
            Storage::Raw => 0,
            Storage::Encoded => 1,
        }
    }

    fn from_code(code: u32) -> Option<Storage> {
        match code {
            0 => Some(Storage::Raw),
            1 => Some(Storage::Encoded),
            _ => None,
        }
    }
}

/// One run of records with the same label, as stored in the identity table.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct IdentityEntry {
    pub(crate) label: u32,
    pub(crate) count: u32,
    pub(crate) first: u64,
}

/// One entry of the record table.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct RecordEntry {
    label: u32,
    crc: u32,
    /// Offset of the record inside the data section.
    offset: u64,
    len: u32,
    reserved: u32,
}

/// The decoded fields of a shard header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Header {
    height: u32,
    width: u32,
    storage: Storage,
    n_identities: u32,
    n_records: u64,
    data_offset: u64,
    data_len: u64,
    index_offset: u64,
    index_len: u64,
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

/// Bytes of a raw record of `height × width` RGB8 pixels, if it fits in a `u64`.
fn raw_record_len(height: u32, width: u32) -> Option<u64> {
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
    /// The layout for `n_records` records holding `data_len` bytes, or `None` on overflow.
    fn for_contents(
        (height, width, storage): (u32, u32, Storage),
        n_records: u64,
        n_identities: u32,
        data_len: u64,
    ) -> Option<Header> {
        let index_offset = HEADER_LEN.checked_add(data_len)?;
        let index_len = index_len(n_records, n_identities)?;
        index_offset.checked_add(index_len)?;
        Some(Header {
            height,
            width,
            storage,
            n_identities,
            n_records,
            data_offset: HEADER_LEN,
            data_len,
            index_offset,
            index_len,
        })
    }

    fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(HEADER_LEN as usize);
        out.extend_from_slice(&MAGIC);
        let small = [SHARD_VERSION, HEADER_LEN as u32, self.height, self.width];
        let small = small.iter().chain([&CHANNELS, &self.n_identities]);
        small.for_each(|f| out.extend(f.to_le_bytes()));
        let large = [self.n_records, self.data_offset, self.data_len];
        let large = large.iter().chain([&self.index_offset, &self.index_len]);
        large.for_each(|f| out.extend(f.to_le_bytes()));
        out.extend(self.storage.code().to_le_bytes());
        let crc = crc32fast::hash(&out);
        out.extend(crc.to_le_bytes());
        out
    }

    /// Parses and checks the header at the start of `bytes` (the whole file).
    fn decode(bytes: &[u8], path: &Path) -> Result<Header> {
        let fields = Fields { bytes, path };
        check_preamble(&fields)?;
        let storage_code = fields.u32(72)?;
        let storage = Storage::from_code(storage_code).ok_or_else(|| {
            let what = format!("storage {storage_code}, expected 0 (raw) or 1 (encoded)");
            format_error(path, 72, what)
        })?;
        let header = Header {
            height: fields.u32(16)?,
            width: fields.u32(20)?,
            storage,
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
            let what = format!("image size {h}×{w} is empty");
            return Err(format_error(path, 16, what));
        }
        let raw_len = raw_record_len(h, w).and_then(|len| n.checked_mul(len));
        if self.storage == Storage::Raw && raw_len != Some(self.data_len) {
            let what = format!(
                "data length {} is not {n} raw records of {h}×{w}×3 bytes",
                self.data_len
            );
            return Err(format_error(path, 48, what));
        }
        let layout = (h, w, self.storage);
        let Some(expected) = Header::for_contents(layout, n, self.n_identities, self.data_len)
        else {
            let what = format!(
                "{n} records and {} data bytes overflow a file",
                self.data_len
            );
            return Err(format_error(path, 32, what));
        };

        let fields = [
            (40, "data offset", self.data_offset, expected.data_offset),
            (56, "index offset", self.index_offset, expected.index_offset),
            (64, "index length", self.index_len, expected.index_len),
        ];
        for (offset, name, found, wanted) in fields {
            if found != wanted {
                let what = format!("{name} is {found}, the counts and data length need {wanted}");
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

    /// Byte offset of the identity table.
    fn identity_table_offset(&self) -> u64 {
        // `check_layout` established that the whole index fits in the file.
        self.index_offset + self.n_records * RECORD_ENTRY_LEN
    }
}

/// Checks magic, length, version, header length, header checksum and channels.
fn check_preamble(fields: &Fields<'_>) -> Result<()> {
    let (bytes, path) = (fields.bytes, fields.path);
    let prefix = bytes.len().min(MAGIC.len());
    if bytes.get(..prefix) != MAGIC.get(..prefix) {
        let what = format!("not a shard: no magic bytes {MAGIC:?}");
        return Err(format_error(path, 0, what));
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
            "shard version {version} is not supported (this reader: version {SHARD_VERSION}); \
             re-pack the dataset from its source"
        );
        return Err(format_error(path, 8, what));
    }
    let header_len = fields.u32(12)?;
    if u64::from(header_len) != HEADER_LEN {
        let what =
            format!("header length {header_len}, version {SHARD_VERSION} requires {HEADER_LEN}");
        return Err(format_error(path, 12, what));
    }

    let stored = fields.u32(HEADER_CRC_OFFSET)?;
    let computed = bytes.get(..HEADER_CRC_OFFSET).map_or(0, crc32fast::hash);
    if computed != stored {
        let what = format!("header checksum {stored:#010x}, computed {computed:#010x}");
        return Err(format_error(path, HEADER_CRC_OFFSET as u64, what));
    }
    let channels = fields.u32(24)?;
    if channels != CHANNELS {
        let what = format!("{channels} channels, expected {CHANNELS}");
        return Err(format_error(path, 24, what));
    }
    Ok(())
}

/// Parses a shard held in memory: header, index checksum, record table and identity table.
///
/// This is the whole of [`Shard::open`] after mapping, exposed for the fuzz target: it never
/// panics and never allocates more than a constant amount, whatever `bytes` holds.
///
/// # Errors
/// [`Error::Format`] or [`Error::Record`] naming `path` and the offset or record, as
/// [`Shard::open`].
pub fn check_shard_bytes(bytes: &[u8], path: &Path) -> Result<ShardSummary> {
    let header = Header::decode(bytes, path)?;
    check_index(bytes, &header, path)?;
    Ok(ShardSummary {
        height: header.height,
        width: header.width,
        storage: header.storage,
        n_records: header.n_records,
        n_identities: header.n_identities,
        data_len: header.data_len,
    })
}

/// What a checked shard header says.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ShardSummary {
    /// Image height of every record.
    pub height: u32,
    /// Image width of every record.
    pub width: u32,
    /// How the images are stored.
    pub storage: Storage,
    /// Records in the shard.
    pub n_records: u64,
    /// Identities (runs of one label) in the shard.
    pub n_identities: u32,
    /// Bytes of the data section.
    pub data_len: u64,
}

/// Checks the index section in one pass without allocating: its checksum, that the records
/// tile the data section, and that the identity runs tile the records.
fn check_index(bytes: &[u8], header: &Header, path: &Path) -> Result<()> {
    check_index_crc(bytes, header, path)?;
    check_record_table(bytes, header, path)?;
    check_identity_table(bytes, header, path)
}

/// The index section without its trailing crc32, after checking that crc32.
fn check_index_crc(bytes: &[u8], header: &Header, path: &Path) -> Result<()> {
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
    Ok(())
}

/// Reads record entry `record` of a shard whose layout has been checked.
fn record_entry(bytes: &[u8], header: &Header, record: u64) -> Option<RecordEntry> {
    if record >= header.n_records {
        return None;
    }
    let at = header
        .index_offset
        .checked_add(record.checked_mul(RECORD_ENTRY_LEN)?)?;
    let at = usize::try_from(at).ok()?;
    Some(RecordEntry {
        label: read_u32(bytes, at)?,
        crc: read_u32(bytes, at + 4)?,
        offset: read_u64(bytes, at + 8)?,
        len: read_u32(bytes, at + 16)?,
        reserved: read_u32(bytes, at + 20)?,
    })
}

/// Reads identity entry `k` of a shard whose layout has been checked.
fn identity_entry(bytes: &[u8], header: &Header, k: u32) -> Option<IdentityEntry> {
    if k >= header.n_identities {
        return None;
    }
    let at = header.identity_table_offset() + u64::from(k) * IDENTITY_ENTRY_LEN;
    let at = usize::try_from(at).ok()?;
    Some(IdentityEntry {
        label: read_u32(bytes, at)?,
        count: read_u32(bytes, at + 4)?,
        first: read_u64(bytes, at + 8)?,
    })
}

/// Checks that the records follow each other in the data section with no gap and no overlap,
/// each non-empty (raw: exactly one image long), and that together they fill it.
fn check_record_table(bytes: &[u8], header: &Header, path: &Path) -> Result<()> {
    let raw_len = raw_record_len(header.height, header.width);
    let mut next = 0u64;
    for record in 0..header.n_records {
        let entry = record_entry(bytes, header, record)
            .ok_or_else(|| record_error(path, record, "record entry outside the index"))?;
        let len = u64::from(entry.len);
        let bad_len = match header.storage {
            Storage::Raw => Some(len) != raw_len,
            Storage::Encoded => len == 0,
        };
        if entry.offset != next || bad_len || entry.reserved != 0 {
            let what = format!(
                "record entry (offset {}, length {len}): expected a non-empty record at data \
                 offset {next}{} and a zero reserved field",
                entry.offset,
                raw_len.map_or(String::new(), |l| match header.storage {
                    Storage::Raw => format!(" of {l} bytes"),
                    Storage::Encoded => String::new(),
                }),
            );
            return Err(record_error(path, record, what));
        }
        next = next.saturating_add(len);
    }
    if next != header.data_len {
        let what = format!(
            "records hold {next} bytes, the data section is {}",
            header.data_len
        );
        return Err(format_error(path, header.index_offset, what));
    }
    Ok(())
}

/// Checks that the identity table covers the records in order, one run per label, and that
/// every record's label matches its run.
fn check_identity_table(bytes: &[u8], header: &Header, path: &Path) -> Result<()> {
    let table_offset = header.identity_table_offset();
    let mut next = 0u64;
    let mut previous: Option<u32> = None;
    for k in 0..header.n_identities {
        let offset = table_offset + u64::from(k) * IDENTITY_ENTRY_LEN;
        let entry = identity_entry(bytes, header, k)
            .ok_or_else(|| format_error(path, offset, "identity entry outside the index"))?;
        let end = entry.first.saturating_add(u64::from(entry.count));
        let ordered = previous.is_none_or(|p| entry.label > p);
        if entry.first != next || entry.count == 0 || !ordered || end > header.n_records {
            let (label, first, count) = (entry.label, entry.first, entry.count);
            let what = format!(
                "identity entry {k} (label {label}, first {first}, count {count}): expected \
                 a non-empty run from record {next} with a label above the previous one"
            );
            return Err(format_error(path, offset, what));
        }

        for record in next..end {
            let label = record_entry(bytes, header, record).map(|e| e.label);
            if label != Some(entry.label) {
                let what = format!(
                    "label {label:?} differs from its identity entry's label {}",
                    entry.label
                );
                return Err(record_error(path, record, what));
            }
        }
        (next, previous) = (end, Some(entry.label));
    }

    if next != header.n_records {
        let what = format!(
            "identity table covers {next} of {} records",
            header.n_records
        );
        return Err(format_error(path, table_offset, what));
    }
    Ok(())
}

/// A read-only, memory-mapped shard whose header and index have been checked.
pub struct Shard {
    path: PathBuf,
    map: Mmap,
    header: Header,
}

impl Shard {
    /// Maps and checks a shard: magic, version, header checksum, section sizes against the file
    /// length, index checksum, the record table and the identity table.
    ///
    /// # Errors
    /// [`Error::Io`] if the file cannot be opened or mapped; [`Error::Format`] (naming the
    /// byte offset) for a truncated, corrupted or unknown-version file; [`Error::Record`] for a
    /// record entry that does not fit or whose label disagrees with the identity table.
    pub fn open(path: &Path) -> Result<Shard> {
        let file = crate::files::open_regular(path)?;
        // SAFETY: shards are written once under a temporary name and renamed into place, and
        // nothing in this workspace modifies or truncates a finished shard, so the mapped bytes
        // do not change while the map lives. The map is only read, and every read is
        // bounds-checked against the map's length.
        let map = unsafe { Mmap::map(&file) }.map_err(|e| Error::io(path, e))?;
        let header = Header::decode(&map, path)?;
        check_index(&map, &header, path)?;
        Ok(Shard {
            path: path.to_path_buf(),
            map,
            header,
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

    /// How the records are stored.
    pub fn storage(&self) -> Storage {
        self.header.storage
    }

    /// Bytes of the data section (all records together).
    pub fn data_len(&self) -> u64 {
        self.header.data_len
    }

    /// The label of `record`.
    ///
    /// # Errors
    /// [`Error::Record`] if `record` is out of range.
    pub fn label(&self, record: u64) -> Result<u32> {
        let entry = record_entry(&self.map, &self.header, record);
        entry
            .map(|e| e.label)
            .ok_or_else(|| self.out_of_range(record))
    }

    /// The stored bytes of `record` after checking its crc32: RGB8 HWC pixels for a raw shard,
    /// the encoded image for an encoded one.
    ///
    /// # Errors
    /// [`Error::Record`] naming the shard and the record if it is out of range or its checksum
    /// does not match.
    pub fn record(&self, record: u64) -> Result<&[u8]> {
        let entry = record_entry(&self.map, &self.header, record)
            .ok_or_else(|| self.out_of_range(record))?;
        let start = entry.offset.checked_add(self.header.data_offset);
        let bytes = start
            .and_then(|s| usize::try_from(s).ok())
            .and_then(|s| self.map.get(s..s.checked_add(entry.len as usize)?))
            .ok_or_else(|| record_error(&self.path, record, "record lies outside the file"))?;

        let computed = crc32fast::hash(bytes);
        if computed != entry.crc {
            let what = format!(
                "checksum mismatch: stored {:#010x}, computed {computed:#010x}",
                entry.crc
            );
            return Err(record_error(&self.path, record, what));
        }
        Ok(bytes)
    }

    /// (label, first record, record count) of every identity, in label order.
    pub fn identities(&self) -> impl Iterator<Item = (u32, u64, u32)> + '_ {
        (0..self.header.n_identities)
            .filter_map(|k| identity_entry(&self.map, &self.header, k))
            .map(|e| (e.label, e.first, e.count))
    }

    /// Number of identities in the shard.
    pub fn n_identities(&self) -> u32 {
        self.header.n_identities
    }

    fn out_of_range(&self, record: u64) -> Error {
        let what = format!("out of range: the shard has {} records", self.len());
        record_error(&self.path, record, what)
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
