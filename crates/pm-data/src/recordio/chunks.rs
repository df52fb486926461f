//! The chunk layer of RecordIO: chunk headers, split records joined (magic bytes put back
//! between the pieces), record headers (`IRHeader` and extra labels), the one-pass scan of a
//! whole `.rec` file, and the writer used by tests, benchmarks and the fuzz seeds.

use std::borrow::Cow;
use std::path::Path;

use super::{
    CHUNK_HEADER_LEN, IR_HEADER_LEN, MAGIC, MAX_FLAG, OLD_MAGIC, Record, format_error, read_f32,
    read_u32,
};
use crate::error::Result;

/// Which of the two chunk magics a file uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Magic {
    Current,
    Old,
}

impl Magic {
    pub(super) fn detect(word: u32) -> Option<Magic> {
        match word {
            MAGIC => Some(Magic::Current),
            OLD_MAGIC => Some(Magic::Old),
            _ => None,
        }
    }

    pub(super) fn word(self) -> u32 {
        match self {
            Magic::Current => MAGIC,
            Magic::Old => OLD_MAGIC,
        }
    }

    /// Bits of `lrec` that hold the length.
    pub(super) fn len_bits(self) -> u32 {
        match self {
            Magic::Current => 29,
            Magic::Old => 30,
        }
    }

    /// Splits `lrec` into (cflag, len).
    pub(super) fn decode(self, lrec: u32) -> (u32, usize) {
        let bits = self.len_bits();
        (lrec >> bits, (lrec & ((1 << bits) - 1)) as usize)
    }
}

/// The parsed `IRHeader` of a payload.
#[derive(Clone, Copy, Debug)]
pub(super) struct Head {
    pub(super) flag: u32,
    pub(super) values: [f32; 2],
    pub(super) image_start: usize,
    pub(super) image_len: usize,
}

/// One chunk: its flag, its data and where the next chunk starts.
#[derive(Debug)]
pub(super) struct Chunk<'a> {
    pub(super) cflag: u32,
    pub(super) data: &'a [u8],
    pub(super) next: usize,
}

/// A whole-file scan: the magic used, the records in file order, how many were split.
#[derive(Debug)]
pub(super) struct Scan {
    pub(super) magic: Magic,
    pub(super) records: Vec<Record>,
    pub(super) split: usize,
}

/// Reads the chunk at `pos`, checking its magic, flag and length against the file.
pub(super) fn read_chunk<'a>(
    bytes: &'a [u8],
    pos: usize,
    magic: Magic,
    path: &Path,
) -> Result<Chunk<'a>> {
    let at = |what: String| format_error(path, pos as u64, what);
    let left = bytes.len().saturating_sub(pos);
    let (Some(word), Some(lrec)) = (read_u32(bytes, pos), read_u32(bytes, pos.saturating_add(4)))
    else {
        return Err(at(format!(
            "truncated chunk: {left} bytes left, a chunk header needs {CHUNK_HEADER_LEN}"
        )));
    };
    if word != magic.word() {
        let expected = magic.word();
        return Err(at(format!(
            "expected magic {expected:#010X}, found {word:#010X}"
        )));
    }

    let (cflag, len) = magic.decode(lrec);
    if cflag > 3 {
        return Err(at(format!("chunk flag {cflag} is not one of 0, 1, 2, 3")));
    }
    let start = pos.saturating_add(CHUNK_HEADER_LEN);
    let room = left.saturating_sub(CHUNK_HEADER_LEN);
    let Some(data) = start.checked_add(len).and_then(|end| bytes.get(start..end)) else {
        return Err(at(format!(
            "chunk length {len} runs past the end of the file ({room} bytes left)"
        )));
    };

    let padded = len.div_ceil(4) * 4;
    match start.checked_add(padded) {
        Some(next) if next <= bytes.len() => Ok(Chunk { cflag, data, next }),
        _ => Err(at(format!(
            "file ends inside the zero padding of a {len}-byte chunk"
        ))),
    }
}

/// Reads the logical record starting at `pos`: its payload (pieces of a split record joined
/// with the magic put back between them) and where the next record starts.
pub(super) fn read_record<'a>(
    bytes: &'a [u8],
    pos: usize,
    magic: Magic,
    path: &Path,
) -> Result<(Cow<'a, [u8]>, usize)> {
    let first = read_chunk(bytes, pos, magic, path)?;
    match first.cflag {
        0 => return Ok((Cow::Borrowed(first.data), first.next)),
        1 => {}
        other => {
            let what = format!("piece with cflag {other} (middle or last) without a first piece");
            return Err(format_error(path, pos as u64, what));
        }
    }

    // Joined pieces never exceed the file: each 4-byte magic replaces an 8-byte chunk header.
    let mut joined = first.data.to_vec();
    let mut next = first.next;
    loop {
        if next >= bytes.len() {
            let what = "file ends inside a split record: its first piece (cflag 1) has no last \
                        piece (cflag 3)";
            return Err(format_error(path, pos as u64, what));
        }
        let piece = read_chunk(bytes, next, magic, path)?;
        if !matches!(piece.cflag, 2 | 3) {
            let what = format!(
                "expected a middle or last piece (cflag 2 or 3) of the record split at byte \
                 {pos}, found cflag {}",
                piece.cflag
            );
            return Err(format_error(path, next as u64, what));
        }
        joined.extend_from_slice(&magic.word().to_le_bytes());
        joined.extend_from_slice(piece.data);
        next = piece.next;
        if piece.cflag == 3 {
            return Ok((Cow::Owned(joined), next));
        }
    }
}

impl Head {
    /// Parses the `IRHeader` and labels of the record at byte `offset`.
    pub(super) fn parse(payload: &[u8], offset: u64, path: &Path) -> Result<Head> {
        let short = || {
            let what = format!(
                "record payload of {} bytes is shorter than its {IR_HEADER_LEN}-byte header",
                payload.len()
            );
            format_error(path, offset, what)
        };
        if payload.len() < IR_HEADER_LEN {
            return Err(short());
        }
        let (Some(flag), Some(label)) = (read_u32(payload, 0), read_f32(payload, 4)) else {
            return Err(short());
        };
        if flag > MAX_FLAG {
            let what = format!("record header declares {flag} labels; at most {MAX_FLAG} accepted");
            return Err(format_error(path, offset, what));
        }

        let image_start = IR_HEADER_LEN + 4 * flag as usize;
        let Some(image_len) = payload.len().checked_sub(image_start) else {
            let what = format!(
                "record header declares {flag} labels but the payload has only {} bytes after \
                 the header",
                payload.len() - IR_HEADER_LEN
            );
            return Err(format_error(path, offset, what));
        };
        let label_at = |i: u32| {
            let value = read_f32(payload, IR_HEADER_LEN + 4 * i as usize);
            value.filter(|_| i < flag).unwrap_or(f32::NAN)
        };
        let class_value = if flag == 0 { label } else { label_at(0) };
        Ok(Head {
            flag,
            values: [class_value, label_at(1)],
            image_start,
            image_len,
        })
    }
}

/// Scans the whole file from byte 0 into logical records, keyed by file position.
pub(super) fn scan(bytes: &[u8], path: &Path) -> Result<Scan> {
    let magic = match read_u32(bytes, 0) {
        None if bytes.is_empty() => Magic::Current,
        None => return Err(format_error(path, 0, "file shorter than one chunk header")),
        Some(word) => Magic::detect(word).ok_or_else(|| {
            let what = format!(
                "expected magic {MAGIC:#010X} (or the old {OLD_MAGIC:#010X}), found {word:#010X}"
            );
            format_error(path, 0, what)
        })?,
    };

    let (mut records, mut split, mut pos) = (Vec::new(), 0, 0);
    while pos < bytes.len() {
        let (payload, next) = read_record(bytes, pos, magic, path)?;
        let offset = pos as u64;
        let head = Head::parse(&payload, offset, path)?;
        split += usize::from(matches!(payload, Cow::Owned(_)));
        records.push(Record {
            key: records.len() as u64,
            offset,
            flag: head.flag,
            values: head.values,
            has_image: head.image_len > 0,
        });
        pos = next;
    }
    Ok(Scan {
        magic,
        records,
        split,
    })
}

/// Parses a `.rec` file held in memory into logical records (chunks joined, record headers
/// checked) and returns how many it holds; the first step of [`RecordIo::open`], exposed for
/// the fuzz target. It never panics, whatever `bytes` holds.
///
/// # Errors
/// [`Error::Format`] naming `path` and the byte offset of the first inconsistency.
pub fn check_recordio_bytes(bytes: &[u8], path: &Path) -> Result<usize> {
    scan(bytes, path).map(|scan| scan.records.len())
}

/// Appends one record to `out` as dmlc's `RecordIOWriter::WriteRecord` writes it: a whole
/// record (cflag 0) when the payload holds no magic at a 4-byte aligned offset; otherwise the
/// payload is split at each such magic (which is dropped) into a first piece (cflag 1), middle
/// pieces (cflag 2) and a last piece (cflag 3). Every chunk is zero-padded to 4 bytes. With
/// `old_magic`, chunks use the old magic `0x3ED7230A` with a 30-bit length, and the payload is
/// split where that magic occurs. A fixture helper for tests and benchmarks.
///
/// # Panics
/// If `payload` is 2^29 bytes or longer (2^30 with `old_magic`), which the format cannot hold.
pub fn write_record(out: &mut Vec<u8>, payload: &[u8], old_magic: bool) {
    let magic = if old_magic {
        Magic::Old
    } else {
        Magic::Current
    };
    let len_bits = magic.len_bits();
    assert!(
        payload.len() < 1 << len_bits,
        "a RecordIO payload must be shorter than 2^{len_bits} bytes, got {}",
        payload.len()
    );
    let pattern = magic.word().to_le_bytes();
    let push_chunk = |out: &mut Vec<u8>, cflag: u32, piece: &[u8]| {
        out.extend(magic.word().to_le_bytes());
        out.extend(((cflag << len_bits) | piece.len() as u32).to_le_bytes());
        out.extend_from_slice(piece);
        out.resize(out.len() + piece.len().next_multiple_of(4) - piece.len(), 0);
    };

    let (mut piece_start, mut split) = (0, false);
    for (i, word) in payload.chunks_exact(4).enumerate() {
        if word == pattern {
            let at = 4 * i;
            push_chunk(out, if split { 2 } else { 1 }, &payload[piece_start..at]);
            (piece_start, split) = (at + 4, true);
        }
    }
    push_chunk(out, if split { 3 } else { 0 }, &payload[piece_start..]);
}

/// Builds a record payload: the `IRHeader` (`u32 flag = flag_labels.len()`, `f32 label`,
/// `u64 id`, `u64 id2`), then `flag_labels` as f32, then `image`.
///
/// # Panics
/// If `flag_labels` has more than `u32::MAX` entries.
pub fn record_payload(flag_labels: &[f32], label: f32, id: u64, id2: u64, image: &[u8]) -> Vec<u8> {
    let flag = u32::try_from(flag_labels.len()).expect("at most u32::MAX labels");
    let mut out = Vec::with_capacity(IR_HEADER_LEN + 4 * flag_labels.len() + image.len());
    out.extend(flag.to_le_bytes());
    out.extend(label.to_le_bytes());
    out.extend(id.to_le_bytes());
    out.extend(id2.to_le_bytes());
    flag_labels.iter().for_each(|l| out.extend(l.to_le_bytes()));
    out.extend_from_slice(image);
    out
}
