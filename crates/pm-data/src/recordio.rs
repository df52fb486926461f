//! Reader of MXNet RecordIO training sets as insightface distributes them: `train.rec` (the
//! records), `train.idx` (optional, one `key<TAB>byte_offset` line per record) and `property`
//! (optional, `num_classes,height,width`). The format is described in `FORMATS.md`, section
//! "MXNet RecordIO".
//!
//! `train.rec` is a sequence of chunks, all integers little-endian:
//!
//! ```text
//! [ u32 magic 0xCED7230A | u32 lrec = cflag << 29 | len | len bytes | zero padding to 4 ]
//! old files: magic 0x3ED7230A, lrec = cflag << 30 | len
//! cflag 0: a whole record; 1, 2, 3: first, middle, last piece of a split record
//! record payload: u32 flag, f32 label, u64 id, u64 id2, flag × f32 labels, image bytes
//! ```
//!
//! [`RecordIo::open`] maps the file and scans it once from byte 0, checking every length against
//! the file, then checks `train.idx` against the record offsets it found and sorts the records
//! into image records and insightface metadata records (the header at key 0 and one record per
//! identity). The header's ranges are float32, exact only below 2^24: they are trusted only when
//! they are exact and agree with the scan; otherwise the records are classified by their
//! contents and a note says so. Nothing in a file can make the reader panic or allocate more
//! than the file's size.

use std::borrow::Cow;
use std::path::{Path, PathBuf};

use memmap2::Mmap;

use crate::error::{Error, Result, format_error, parse_error, read_u32, record_error};

mod chunks;

use chunks::{Head, Magic, Scan, read_record, scan};
pub use chunks::{check_recordio_bytes, record_payload, write_record};

/// Chunk magic of current RecordIO files (cflag in the top 3 bits of `lrec`).
const MAGIC: u32 = 0xCED7_230A;
/// Chunk magic of old RecordIO files (cflag in the top 2 bits of `lrec`).
const OLD_MAGIC: u32 = 0x3ED7_230A;
/// Bytes of a chunk header: magic and `lrec`.
const CHUNK_HEADER_LEN: usize = 8;
/// Bytes of a record's `IRHeader`: flag, label, id, id2.
const IR_HEADER_LEN: usize = 24;
/// Most extra labels a record may declare; a larger `flag` is taken as corruption.
const MAX_FLAG: u32 = 1024;
/// Integers from 0 up to (not including) this are exact in an `f32`.
const F32_EXACT: u64 = 1 << 24;

/// `property` file: `num_classes,height,width` (a 4-line variant may follow; read the first
/// line's 3 numbers, ignore the rest).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Property {
    /// Number of classes the set declares (max label + 1).
    pub num_classes: u64,
    /// Image height in pixels.
    pub height: u32,
    /// Image width in pixels.
    pub width: u32,
}

/// Which layout the file turned out to have.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RecordIoLayout {
    /// insightface: record 0 is a header (flag = 2, labels `[a, b]`) with no image; images are
    /// keys `1 .. a-1` and keys `a .. b-1` are one record per identity holding `[first, end)` of
    /// its image keys.
    Insightface {
        /// The header's `a` (first identity record), converted with saturation; meaningful only
        /// when `ranges_trusted`.
        header_images_end: u64,
        /// The header's `b` (end of the identity records), converted with saturation;
        /// meaningful only when `ranges_trusted`.
        header_identities_end: u64,
        /// True when `a` and `b` are exact integers below 2^24 and agree with the records
        /// found; false when the records were classified from their contents instead.
        ranges_trusted: bool,
        /// How many identity records were found (and, with trusted ranges, validated).
        identity_records: u64,
    },
    /// im2rec output or a shuffled set: image records only (keys from 1, or 0..N-1).
    ImagesOnly,
}

/// One image record: where it is and its class.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RecordIoImage {
    /// The record's key (from `train.idx`, or its position in the file).
    pub key: u64,
    /// Byte offset of the record's first chunk in `train.rec`.
    pub offset: u64,
    /// The class: the record's label, or the first of its labels.
    pub label: u32,
}

/// A checked, memory-mapped RecordIO training set.
#[derive(Debug)]
pub struct RecordIo {
    map: Mmap,
    path: PathBuf,
    magic: Magic,
    images: Vec<RecordIoImage>,
    layout: RecordIoLayout,
    property: Option<Property>,
    n_classes: u64,
    notes: Vec<String>,
}

/// The three files of a set.
struct Files {
    rec: PathBuf,
    idx: PathBuf,
    property: PathBuf,
}

impl Files {
    /// A folder holds `train.rec`, `train.idx`, `property`; a `.rec` file has its `.idx` next
    /// to it and the folder's `property`.
    fn locate(path: &Path) -> Result<Files> {
        let meta = std::fs::metadata(path).map_err(|e| Error::io(path, e))?;
        if meta.is_dir() {
            return Ok(Files {
                rec: path.join("train.rec"),
                idx: path.join("train.idx"),
                property: path.join("property"),
            });
        }
        if path.extension().is_some_and(|e| e == "rec") {
            let folder = path.parent().unwrap_or(Path::new(""));
            return Ok(Files {
                rec: path.to_path_buf(),
                idx: path.with_extension("idx"),
                property: folder.join("property"),
            });
        }
        Err(Error::Config(format!(
            "{}: expected a folder holding train.rec, or a file ending in .rec",
            path.display()
        )))
    }
}

/// What the scan keeps of one logical record.
#[derive(Clone, Copy, Debug)]
struct Record {
    key: u64,
    offset: u64,
    flag: u32,
    /// The class value (label, or first label) and the second label (NaN if none).
    values: [f32; 2],
    has_image: bool,
}

/// One line of `train.idx`.
#[derive(Debug)]
struct IdxEntry {
    key: u64,
    offset: u64,
    line: usize,
    line_start: u64,
}

fn read_f32(bytes: &[u8], offset: usize) -> Option<f32> {
    read_u32(bytes, offset).map(f32::from_bits)
}

/// `value` as an index if it is an exact integer in `0 .. 2^24`.
fn exact_index(value: f32) -> Option<u64> {
    let exact = value.is_finite() && value >= 0.0 && value.fract() == 0.0;
    (exact && value < F32_EXACT as f32).then_some(value as u64)
}

/// At most the first 40 characters of `text`, for error messages about hostile lines.
fn excerpt(text: &str) -> String {
    match text.char_indices().nth(40) {
        Some((end, _)) => format!("{:?}…", &text[..end]),
        None => format!("{text:?}"),
    }
}

/// Reads a file that may be absent.
fn read_optional(path: &Path) -> Result<Option<Vec<u8>>> {
    match std::fs::metadata(path) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        _ => crate::files::read_capped(path, crate::files::MAX_SMALL_TEXT * 16).map(Some),
    }
}

/// Non-blank lines of a text file as (1-based line, byte offset of the line, trimmed text); a
/// line that is not UTF-8 is an [`Error::Parse`].
fn text_lines<'a>(
    bytes: &'a [u8],
    path: &'a Path,
) -> impl Iterator<Item = Result<(usize, u64, &'a str)>> + 'a {
    let mut start = 0u64;
    let lines = bytes
        .split(|&b| b == b'\n')
        .enumerate()
        .map(move |(i, raw)| {
            let line_start = start;
            start = start.saturating_add(raw.len() as u64 + 1);
            let text = std::str::from_utf8(raw).map_err(|e| {
                let what = format!(
                    "not UTF-8 text (bad byte at column {})",
                    e.valid_up_to() + 1
                );
                parse_error(path, i + 1, what)
            })?;
            Ok((i + 1, line_start, text.trim()))
        });
    lines.filter(|line| !matches!(line, Ok((_, _, ""))))
}

/// Parses `train.idx`: one `key<TAB>offset` per line; blank lines are skipped.
fn parse_idx(bytes: &[u8], path: &Path) -> Result<Vec<IdxEntry>> {
    let mut entries = Vec::new();
    for parsed in text_lines(bytes, path) {
        let (line, line_start, text) = parsed?;
        let mut fields = text.split_whitespace();
        let (Some(key), Some(offset), None) = (fields.next(), fields.next(), fields.next()) else {
            let what = format!("expected `key<TAB>offset`, found {}", excerpt(text));
            return Err(parse_error(path, line, what));
        };
        let number = |field: &str, name: &str| {
            field.parse::<u64>().map_err(|_| {
                let what = format!("{name} {} is not a non-negative integer", excerpt(field));
                parse_error(path, line, what)
            })
        };
        entries.push(IdxEntry {
            key: number(key, "key")?,
            offset: number(offset, "offset")?,
            line,
            line_start,
        });
    }
    Ok(entries)
}

/// Gives the records the keys of `train.idx`, after checking that its offsets are exactly the
/// records' offsets and its keys are unique.
fn apply_idx(records: &mut [Record], entries: &[IdxEntry], files: &Files) -> Result<()> {
    // The idx line that listed each record; 0 while none has.
    let mut listed_on = vec![0usize; records.len()];
    for entry in entries {
        let (offset, line) = (entry.offset, entry.line);
        let Ok(pos) = records.binary_search_by_key(&offset, |r| r.offset) else {
            let what = format!(
                "line {line}: offset {offset} is not the start of a record of {}",
                files.rec.display()
            );
            return Err(format_error(&files.idx, entry.line_start, what));
        };
        let previous = listed_on[pos];
        if previous != 0 {
            let what = format!("line {line}: offset {offset} is already listed on line {previous}");
            return Err(format_error(&files.idx, entry.line_start, what));
        }
        listed_on[pos] = line;
        records[pos].key = entry.key;
    }

    if let Some(pos) = listed_on.iter().position(|&line| line == 0) {
        let what = format!(
            "record is not listed in {} ({} lines for {} records); remove the index to read the \
             records in file order",
            files.idx.display(),
            entries.len(),
            records.len()
        );
        return Err(format_error(&files.rec, records[pos].offset, what));
    }

    let mut keys: Vec<(u64, usize)> = entries.iter().map(|e| (e.key, e.line)).collect();
    keys.sort_unstable();
    if let Some(pair) = keys.windows(2).find(|w| w[0].0 == w[1].0) {
        let ((key, first), (_, second)) = (pair[0], pair[1]);
        let (first, second) = (first.min(second), first.max(second));
        let what = format!("key {key} is also listed on line {first}");
        return Err(parse_error(&files.idx, second, what));
    }
    Ok(())
}

/// Keys the records (from `train.idx`, or by file position) and sorts them by key.
fn assign_keys(records: &mut [Record], files: &Files, notes: &mut Vec<String>) -> Result<()> {
    match read_optional(&files.idx)? {
        None => notes.push(format!(
            "no {}: keys assigned in file order, from 0",
            files.idx.display()
        )),
        Some(bytes) => {
            let entries = parse_idx(&bytes, &files.idx)?;
            apply_idx(records, &entries, files)?;
            if records.windows(2).any(|w| w[0].key > w[1].key) {
                notes.push("train.idx keys are not in file order (a shuffled set)".to_owned());
            }
        }
    }
    records.sort_unstable_by_key(|r| r.key);
    Ok(())
}

/// The class of an image record, checked to be an exact integer in `0 .. 2^24`.
fn class_of(record: &Record, path: &Path) -> Result<u32> {
    let value = record.values[0];
    match exact_index(value).and_then(|v| u32::try_from(v).ok()) {
        Some(label) => Ok(label),
        None => {
            let what = format!("label {value} is not an integer in 0 .. 2^24");
            Err(record_error(path, record.key, what))
        }
    }
}

/// Image records of `records` (already known to carry an image), with their classes.
fn image_list<'a>(
    records: impl Iterator<Item = &'a Record>,
    path: &Path,
) -> Result<Vec<RecordIoImage>> {
    records
        .map(|r| {
            let label = class_of(r, path)?;
            Ok(RecordIoImage {
                key: r.key,
                offset: r.offset,
                label,
            })
        })
        .collect()
}

/// Why the header's `[a, b)` cannot be trusted, or `None` if they are exact and agree with the
/// records (sorted by key, the header first with key 0).
fn distrust_reason(records: &[Record], a: f32, b: f32) -> Option<String> {
    let (Some(a), Some(b)) = (exact_index(a), exact_index(b)) else {
        return Some(format!(
            "header ranges [{a}, {b}) are not exact integers below 2^24 (= {F32_EXACT})"
        ));
    };
    if a < 1 || b < a {
        return Some(format!(
            "header ranges [{a}, {b}) are not ordered as 1 <= a <= b"
        ));
    }

    let images = records.iter().filter(|r| r.has_image).count() as u64;
    let identities = (records.len() as u64).saturating_sub(1 + images);
    if images != a - 1 || identities != b - a {
        return Some(format!(
            "header ranges [{a}, {b}) promise {} images and {} identity records, the file holds \
             {images} and {identities}",
            a - 1,
            b - a
        ));
    }
    let misplaced = records
        .iter()
        .skip(1)
        .find(|r| r.key >= b || r.has_image != (r.key < a));
    misplaced.map(|r| {
        let kind = if r.has_image {
            "an image"
        } else {
            "a metadata record"
        };
        format!(
            "record {} is {kind}, outside where header ranges [{a}, {b}) put it",
            r.key
        )
    })
}

/// For each image index, the end (exclusive) of the run of equal labels it belongs to.
fn label_run_ends(images: &[RecordIoImage]) -> Vec<usize> {
    let mut ends = vec![images.len(); images.len()];
    for i in (1..images.len()).rev() {
        if images[i - 1].label != images[i].label {
            ends[i - 1] = i;
        } else {
            ends[i - 1] = ends[i];
        }
    }
    ends
}

/// Checks identity records against trusted ranges: each holds `[first, end)` within the image
/// keys `1 .. a`, and all images in it share one label. `images` are exactly keys `1 .. a`.
fn check_identities(
    identities: &[Record],
    images: &[RecordIoImage],
    a: u64,
    path: &Path,
) -> Result<()> {
    let run_ends = label_run_ends(images);
    for record in identities {
        let [first, end] = record.values;
        if record.flag < 2 {
            let what = format!("identity record holds {} labels, expected 2", record.flag);
            return Err(record_error(path, record.key, what));
        }
        let range = exact_index(first).zip(exact_index(end));
        let Some((first, end)) = range.filter(|&(f, e)| 1 <= f && f < e && e <= a) else {
            let what = format!(
                "identity range [{first}, {end}) is not a non-empty range of image keys 1 .. {a}"
            );
            return Err(record_error(path, record.key, what));
        };

        // Image key k sits at index k - 1; the range was checked against 1 .. a above.
        let (i, last) = ((first - 1) as usize, (end - 2) as usize);
        if run_ends[i] <= last {
            let what = format!(
                "images {first} .. {end} of this identity do not share one label: image \
                 {first} has label {}, image {} has label {}",
                images[i].label,
                run_ends[i] + 1,
                images[run_ends[i]].label
            );
            return Err(record_error(path, record.key, what));
        }
    }
    Ok(())
}

/// Sorts the records (by key) into the layout and its image records.
fn classify(
    records: &[Record],
    path: &Path,
    notes: &mut Vec<String>,
) -> Result<(RecordIoLayout, Vec<RecordIoImage>)> {
    let header = records
        .first()
        .filter(|r| r.key == 0 && r.flag >= 2 && !r.has_image);
    let Some(header) = header else {
        // Without a header every record is an image record; one with no image bytes fails to
        // decode and is skipped with its key by the importer.
        return Ok((
            RecordIoLayout::ImagesOnly,
            image_list(records.iter(), path)?,
        ));
    };

    let [a, b] = header.values;
    let (header_images_end, header_identities_end) = (a as u64, b as u64);
    let rest = records.get(1..).unwrap_or_default();
    let reason = distrust_reason(records, a, b);
    let (images, identity_records) = match &reason {
        None => {
            let split = rest.partition_point(|r| r.key < header_images_end);
            let (images, identities) = rest.split_at(split);
            let images = image_list(images.iter(), path)?;
            check_identities(identities, &images, header_images_end, path)?;
            (images, identities.len() as u64)
        }
        Some(reason) => {
            let images = image_list(rest.iter().filter(|r| r.has_image), path)?;
            let identities = (rest.len() - images.len()) as u64;
            notes.push(format!(
                "{reason}: index rebuilt from the records ({} image records, {identities} \
                 metadata records)",
                images.len()
            ));
            tracing::warn!(path = %path.display(), reason = %reason, "untrusted RecordIO header");
            (images, identities)
        }
    };

    let layout = RecordIoLayout::Insightface {
        header_images_end,
        header_identities_end,
        ranges_trusted: reason.is_none(),
        identity_records,
    };
    Ok((layout, images))
}

/// Parses `property`: the first line's `num_classes,height,width`; later lines are ignored.
fn parse_property(bytes: &[u8], path: &Path) -> Result<Property> {
    let bytes = bytes.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(bytes);
    let Some((line, _, text)) = text_lines(bytes, path).next().transpose()? else {
        return Err(parse_error(
            path,
            1,
            "empty; expected `num_classes,height,width`",
        ));
    };
    let fields: Vec<&str> = text.split(',').map(str::trim).collect();
    let bad = || {
        let what = format!(
            "expected `num_classes,height,width`, found {}",
            excerpt(text)
        );
        parse_error(path, line, what)
    };
    let [classes, height, width] = fields.as_slice() else {
        return Err(bad());
    };
    let size = |field: &str| field.parse::<u32>().ok().filter(|&v| v > 0);
    match (classes.parse::<u64>(), size(height), size(width)) {
        (Ok(num_classes), Some(height), Some(width)) => Ok(Property {
            num_classes,
            height,
            width,
        }),
        _ => Err(bad()),
    }
}

/// Number of classes (max label + 1), after checking it against `property` and that no class
/// in `0 .. n` is without images.
fn check_classes(
    images: &[RecordIoImage],
    property: Option<(Property, &Path)>,
    rec: &Path,
) -> Result<u64> {
    let mut labels: Vec<u32> = images.iter().map(|i| i.label).collect();
    labels.sort_unstable();
    labels.dedup();
    let n_classes = labels.last().map_or(0, |&max| u64::from(max) + 1);

    if let Some((property, path)) = property
        && property.num_classes != n_classes
    {
        let found = match (labels.first(), labels.last()) {
            (Some(min), Some(max)) => format!(
                "the labels of {} run from {min} to {max} ({} distinct), so max label + 1 = \
                 {n_classes}",
                rec.display(),
                labels.len()
            ),
            _ => format!("{} holds no image record", rec.display()),
        };
        return Err(Error::Config(format!(
            "{}: num_classes = {}, but {found}",
            path.display(),
            property.num_classes
        )));
    }

    let missing = n_classes - labels.len() as u64;
    if missing > 0 {
        let first = labels
            .iter()
            .zip(0u32..)
            .find(|&(&label, class)| label != class)
            .map_or(labels.len() as u64, |(_, class)| u64::from(class));
        return Err(Error::Config(format!(
            "{}: class {first} has no image ({missing} of the {n_classes} classes 0 .. \
             {n_classes} have none); a missing label would become an empty class",
            rec.display()
        )));
    }
    Ok(n_classes)
}

impl RecordIo {
    /// Opens `dir/train.rec` with `dir/train.idx` (optional) and `dir/property` (optional). If
    /// `path` is a file ending in `.rec`, its sibling `<stem>.idx` and the folder's `property`
    /// are used.
    ///
    /// The whole `.rec` is scanned once; with an index, its offsets must be exactly the
    /// records' offsets (keys may be in any order); without one, keys are file positions
    /// from 0.
    ///
    /// # Errors
    /// [`Error::Io`] if a file cannot be read or mapped; [`Error::Config`] if `path` is neither
    /// a folder nor a `.rec` file, if `property` disagrees with the labels, or if a class in
    /// `0 .. max label` has no image; [`Error::Format`] (naming the byte offset) for a bad
    /// chunk, a truncated file or split record, a payload shorter than its header, or an index
    /// whose offsets are not the records'; [`Error::Parse`] for a bad line of the index or of
    /// `property`; [`Error::Record`] (naming the key) for a label that is not an integer in
    /// `0 .. 2^24`, or an identity record that disagrees with the images.
    pub fn open(path: &Path) -> Result<RecordIo> {
        let files = Files::locate(path)?;
        let file = crate::files::open_regular(&files.rec)?;
        // SAFETY: a training set is an input that nothing in this workspace writes while it is
        // read; as for every mapped reader, another process truncating the file meanwhile would
        // be outside this contract. The map is only read, and every read is bounds-checked
        // against its length.
        let map = unsafe { Mmap::map(&file) }.map_err(|e| Error::io(&files.rec, e))?;

        let Scan {
            magic,
            mut records,
            split,
        } = scan(&map, &files.rec)?;
        let mut notes = Vec::new();
        if magic == Magic::Old {
            notes.push(format!(
                "old chunk magic {OLD_MAGIC:#010X} (30-bit lengths)"
            ));
        }
        if split > 0 {
            notes.push(format!(
                "{split} split records joined (cflag 1, 2, 3 pieces)"
            ));
        }
        assign_keys(&mut records, &files, &mut notes)?;
        let (layout, images) = classify(&records, &files.rec, &mut notes)?;

        let property = match read_optional(&files.property)? {
            Some(bytes) => Some(parse_property(&bytes, &files.property)?),
            None => None,
        };
        let checked = property.map(|p| (p, files.property.as_path()));
        let n_classes = check_classes(&images, checked, &files.rec)?;
        Ok(RecordIo {
            map,
            path: files.rec,
            magic,
            images,
            layout,
            property,
            n_classes,
            notes,
        })
    }

    /// The `.rec` file this set was opened from.
    pub fn rec_path(&self) -> &Path {
        &self.path
    }

    /// Which layout the file turned out to have.
    pub fn layout(&self) -> &RecordIoLayout {
        &self.layout
    }

    /// The `property` file's contents, if there was one (already checked against the labels).
    pub fn property(&self) -> Option<Property> {
        self.property
    }

    /// Image records in key order (metadata records are never listed).
    pub fn images(&self) -> &[RecordIoImage] {
        &self.images
    }

    /// Number of classes: max label + 1 (0 for a set without images).
    pub fn n_classes(&self) -> u64 {
        self.n_classes
    }

    /// Human-readable notes on what was detected or repaired (an untrusted header, a missing
    /// index, old magic, split records), for an importer's report.
    pub fn notes(&self) -> &[String] {
        &self.notes
    }

    /// The encoded image bytes (JPEG/PNG) of an image record: the payload after the 24-byte
    /// header and the `flag` extra labels. A split record's pieces are joined with the magic
    /// put back between them, so this is `Cow::Owned` for split records and `Cow::Borrowed`
    /// (from the map) otherwise.
    ///
    /// # Errors
    /// [`Error::Record`] if `image` is not one of [`RecordIo::images`];
    /// [`Error::Format`] if the record no longer reads (the file changed under the map).
    pub fn image_bytes(&self, image: &RecordIoImage) -> Result<Cow<'_, [u8]>> {
        let found = self.images.binary_search_by_key(&image.key, |i| i.key);
        let known = found.ok().and_then(|i| self.images.get(i));
        let pos = usize::try_from(image.offset).ok();
        let (Some(pos), true) = (pos, known == Some(image)) else {
            let what = "not an image record of this file (key, offset or label differ)";
            return Err(record_error(&self.path, image.key, what));
        };

        let (payload, _) = read_record(&self.map, pos, self.magic, &self.path)?;
        let head = Head::parse(&payload, image.offset, &self.path)?;
        // `Head::parse` checked that `image_start <= payload.len()`.
        Ok(match payload {
            Cow::Borrowed(bytes) => {
                Cow::Borrowed(bytes.get(head.image_start..).unwrap_or_default())
            }
            Cow::Owned(mut bytes) => {
                bytes.drain(..head.image_start);
                Cow::Owned(bytes)
            }
        })
    }
}

#[cfg(test)]
mod tests;
