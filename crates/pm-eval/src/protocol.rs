//! Verification protocols read from their official text files: LFW View 2 (`pairs.txt`) and
//! CFP (frontal-frontal and frontal-profile).
//!
//! A protocol is a list of unique image paths (each embedded once) and a list of pairs that index
//! into it, in official fold order: folds are contiguous equal blocks of pairs. Every referenced
//! image must exist when the protocol is read; a missing one is an error naming the protocol file
//! and line, never a silently dropped pair, because a dropped pair would shift every later fold.

use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::fs;
use std::path::{Component, Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// One verification pair: two indices into [`PairProtocol::images`] and whether they show the
/// same person.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Pair {
    /// Index of the first image.
    pub a: usize,
    /// Index of the second image.
    pub b: usize,
    /// Whether both images show the same identity.
    pub same: bool,
}

/// A verification protocol: unique images and the pairs over them, in official fold order.
#[derive(Clone, Debug)]
pub struct PairProtocol {
    /// Short name, e.g. `lfw`, `cfp_ff`, `cfp_fp`.
    pub name: String,
    /// Unique image paths in order of first use; each is embedded once.
    pub images: Vec<PathBuf>,
    /// The pairs, fold after fold; `pairs.len()` is a multiple of `folds`.
    pub pairs: Vec<Pair>,
    /// Number of contiguous equal folds.
    pub folds: usize,
}

/// The two CFP protocols.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum CfpKind {
    /// Frontal against frontal.
    FF,
    /// Frontal against profile.
    FP,
}

impl CfpKind {
    /// Folder name under `Protocol/Split/`: `FF` or `FP`.
    pub fn split_dir(self) -> &'static str {
        match self {
            CfpKind::FF => "FF",
            CfpKind::FP => "FP",
        }
    }

    /// The protocol name used in reports: `cfp_ff` or `cfp_fp`.
    pub fn protocol_name(self) -> &'static str {
        match self {
            CfpKind::FF => "cfp_ff",
            CfpKind::FP => "cfp_fp",
        }
    }
}

/// Number of folds in the official CFP split.
const CFP_FOLDS: usize = 10;

/// Unique images in order of first use, each checked for existence when first seen.
#[derive(Default)]
struct ImageSet {
    images: Vec<PathBuf>,
    index_of: HashMap<PathBuf, usize>,
}

impl ImageSet {
    /// Index of `image`, adding it if new; `file` and `line` name where the protocol refers to it.
    fn intern(&mut self, image: PathBuf, file: &Path, line: usize) -> Result<usize> {
        match self.index_of.entry(image) {
            Entry::Occupied(slot) => Ok(*slot.get()),
            Entry::Vacant(slot) => {
                if !slot.key().is_file() {
                    let image = slot.into_key();
                    return Err(Error::MissingImage {
                        path: file.to_path_buf(),
                        line,
                        image,
                    });
                }
                let index = self.images.len();
                self.images.push(slot.key().clone());
                slot.insert(index);
                Ok(index)
            }
        }
    }

    /// The finished protocol over these images.
    fn into_protocol(self, name: &str, pairs: Vec<Pair>, folds: usize) -> PairProtocol {
        let images = self.images;
        tracing::info!(
            protocol = name,
            pairs = pairs.len(),
            folds,
            images = images.len()
        );
        PairProtocol {
            name: name.to_owned(),
            images,
            pairs,
            folds,
        }
    }
}

/// Reads a whole text file.
fn read_text(path: &Path) -> Result<String> {
    let text = fs::read_to_string(path).map_err(|source| Error::Io {
        path: path.to_path_buf(),
        source,
    })?;
    // Editors on some systems start UTF-8 files with a byte-order mark.
    Ok(text
        .strip_prefix('\u{feff}')
        .map(str::to_string)
        .unwrap_or(text))
}

/// Non-blank lines of `text` with their 1-based line numbers, trimmed.
fn numbered_lines(text: &str) -> impl Iterator<Item = (usize, &str)> {
    text.lines()
        .enumerate()
        .map(|(i, line)| (i + 1, line.trim()))
        .filter(|(_, line)| !line.is_empty())
}

/// A `Parse` error at `path:line`.
fn parse_error(path: &Path, line: usize, what: impl Into<String>) -> Error {
    Error::Parse {
        path: path.to_path_buf(),
        line,
        what: what.into(),
    }
}

/// Parses a non-negative integer field, naming `what` it should have been.
fn parse_number(field: &str, what: &str, path: &Path, line: usize) -> Result<usize> {
    field
        .parse()
        .map_err(|_| parse_error(path, line, format!("expected {what}, found `{field}`")))
}

/// Reads LFW View 2 from `pairs.txt`, with images at `images_root/name/name_%04d.jpg`.
///
/// The header is `folds n`; then, per fold, `n` same-person lines `name i j` followed by `n`
/// different-person lines `name1 i name2 j`. Fields may be separated by tabs or spaces.
///
/// # Errors
/// [`Error::Io`] if `pairs.txt` cannot be read; [`Error::Parse`] (with the line) for a bad header,
/// a wrong field count, a non-number, or a pair-line count other than `folds * 2n`;
/// [`Error::MissingImage`] for a referenced image that does not exist.
pub fn lfw_pairs(images_root: &Path, pairs_txt: &Path, name: &str) -> Result<PairProtocol> {
    let text = read_text(pairs_txt)?;
    let mut lines = numbered_lines(&text);
    let Some((header_line, header)) = lines.next() else {
        return Err(parse_error(
            pairs_txt,
            1,
            "empty file, expected header `folds n`",
        ));
    };
    let (folds, per_class) = parse_lfw_header(header, pairs_txt, header_line)?;
    let expected = per_class
        .checked_mul(2)
        .and_then(|per_fold| folds.checked_mul(per_fold))
        .ok_or_else(|| parse_error(pairs_txt, header_line, "header promises too many pairs"))?;
    let per_fold = 2 * per_class;

    let mut images = ImageSet::default();
    // The header is untrusted: reserve no more than the file could hold.
    let mut pairs = Vec::with_capacity(expected.min(text.len() / 4));
    let mut last_line = header_line;
    for (line, fields) in lines {
        last_line = line;
        if pairs.len() == expected {
            let what = format!("header promises {expected} pair lines, found more");
            return Err(parse_error(pairs_txt, line, what));
        }
        let same = pairs.len() % per_fold < per_class;
        let [first, second] = parse_lfw_line(fields, same, pairs_txt, line)?;
        let a = images.intern(lfw_image_path(images_root, first), pairs_txt, line)?;
        let b = images.intern(lfw_image_path(images_root, second), pairs_txt, line)?;
        pairs.push(Pair { a, b, same });
    }

    if pairs.len() != expected {
        let what = format!(
            "header promises {expected} pair lines, found {}",
            pairs.len()
        );
        return Err(parse_error(pairs_txt, last_line, what));
    }
    Ok(images.into_protocol(name, pairs, folds))
}

/// Parses the `folds n` header of `pairs.txt`; both must be positive.
fn parse_lfw_header(header: &str, path: &Path, line: usize) -> Result<(usize, usize)> {
    let fields: Vec<&str> = header.split_whitespace().collect();
    let [folds, per_class] = fields[..] else {
        let what = format!(
            "expected header `folds n` (2 fields), found {} fields",
            fields.len()
        );
        return Err(parse_error(path, line, what));
    };
    let folds = parse_number(folds, "the number of folds", path, line)?;
    let per_class = parse_number(per_class, "the pairs per class and fold", path, line)?;
    if folds < 2 || per_class == 0 {
        return Err(parse_error(
            path,
            line,
            format!("header `folds n` needs folds >= 2 and n >= 1, found `{header}`"),
        ));
    }
    Ok((folds, per_class))
}

/// Parses one pair line into its two `(name, image number)` references.
fn parse_lfw_line<'a>(
    line_text: &'a str,
    same: bool,
    path: &Path,
    line: usize,
) -> Result<[(&'a str, usize); 2]> {
    let fields: Vec<&str> = line_text.split_whitespace().collect();
    let number = |field: &str| parse_number(field, "an image number", path, line);
    match (same, &fields[..]) {
        (true, [name, i, j]) => Ok([(name, number(i)?), (name, number(j)?)]),
        (false, [name1, i, name2, j]) => Ok([(name1, number(i)?), (name2, number(j)?)]),
        (true, _) => Err(parse_error(
            path,
            line,
            format!(
                "expected a same-person line `name i j`, found {} fields",
                fields.len()
            ),
        )),
        (false, _) => Err(parse_error(
            path,
            line,
            format!(
                "expected a different-person line `name1 i name2 j`, found {} fields",
                fields.len()
            ),
        )),
    }
}

/// `images_root/name/name_%04d.jpg`.
fn lfw_image_path(images_root: &Path, (name, number): (&str, usize)) -> PathBuf {
    images_root
        .join(name)
        .join(format!("{name}_{number:04}.jpg"))
}

/// One CFP image list (`Pair_list_F.txt` or `Pair_list_P.txt`).
struct PairList {
    /// The list file.
    file: PathBuf,
    /// `(image path, line)` for 1-based index `k` at position `k - 1`.
    entries: Vec<(PathBuf, usize)>,
}

/// Reads CFP's official protocol from `cfp_root` (the folder holding `Protocol/` and `Data/`).
///
/// Images come from `Protocol/Pair_list_F.txt` and `Pair_list_P.txt` (`index path`, paths
/// relative to `Protocol/`); pairs from `Protocol/Split/{FF,FP}/01..10/{same,diff}.txt` (`i,j`,
/// 1-based; in FP `i` is frontal and `j` profile). Pair order: fold 01 same then diff, then fold
/// 02, and so on. Image paths are joined lexically (`Protocol/../Data` becomes `Data`).
///
/// # Errors
/// [`Error::Io`] for an unreadable file; [`Error::Parse`] for a malformed line, an index out of
/// range (naming the split file and line) or folds of unequal size; [`Error::MissingImage`]
/// naming the pair-list file and line of an image that does not exist.
pub fn cfp_pairs(cfp_root: &Path, kind: CfpKind) -> Result<PairProtocol> {
    let protocol_dir = cfp_root.join("Protocol");
    let frontal = read_pair_list(&protocol_dir.join("Pair_list_F.txt"), &protocol_dir)?;
    let profile = match kind {
        CfpKind::FF => None,
        CfpKind::FP => {
            let list = protocol_dir.join("Pair_list_P.txt");
            Some(read_pair_list(&list, &protocol_dir)?)
        }
    };
    let lists = [&frontal, profile.as_ref().unwrap_or(&frontal)];

    let split_dir = protocol_dir.join("Split").join(kind.split_dir());
    let mut images = ImageSet::default();
    let mut pairs = Vec::new();
    let mut per_fold = None;
    for fold in 1..=CFP_FOLDS {
        let fold_dir = split_dir.join(format!("{fold:02}"));
        let before = pairs.len();
        read_cfp_fold(&fold_dir, lists, &mut images, &mut pairs)?;
        check_fold_size(&fold_dir, pairs.len() - before, &mut per_fold)?;
    }
    Ok(images.into_protocol(kind.protocol_name(), pairs, CFP_FOLDS))
}

/// Appends one fold's pairs, `same.txt` then `diff.txt`; `lists` are the lists `i` and `j`
/// index into.
fn read_cfp_fold(
    fold_dir: &Path,
    lists: [&PairList; 2],
    images: &mut ImageSet,
    pairs: &mut Vec<Pair>,
) -> Result<()> {
    for (file, same) in [("same.txt", true), ("diff.txt", false)] {
        let split = fold_dir.join(file);
        for (line, i, j) in read_split(&split)? {
            let a = resolve(lists[0], i, &split, line, images)?;
            let b = resolve(lists[1], j, &split, line, images)?;
            pairs.push(Pair { a, b, same });
        }
    }
    Ok(())
}

/// Reads a CFP image list; the index on line `k` (counting non-blank lines) must be `k`.
fn read_pair_list(file: &Path, protocol_dir: &Path) -> Result<PairList> {
    let text = read_text(file)?;
    let mut entries = Vec::new();
    for (line, fields) in numbered_lines(&text) {
        let Some((index, relative)) = fields.split_once(char::is_whitespace) else {
            return Err(parse_error(
                file,
                line,
                "expected `index path`, found one field",
            ));
        };
        let index = parse_number(index, "an image index", file, line)?;
        if index != entries.len() + 1 {
            let what = format!("expected index {}, found {index}", entries.len() + 1);
            return Err(parse_error(file, line, what));
        }
        entries.push((
            join_lexically(protocol_dir, Path::new(relative.trim())),
            line,
        ));
    }
    Ok(PairList {
        file: file.to_path_buf(),
        entries,
    })
}

/// Reads a CFP split file: `(line, i, j)` for every `i,j` line.
fn read_split(file: &Path) -> Result<Vec<(usize, usize, usize)>> {
    let text = read_text(file)?;
    numbered_lines(&text)
        .map(|(line, fields)| {
            let Some((i, j)) = fields.split_once(',') else {
                return Err(parse_error(
                    file,
                    line,
                    format!("expected `i,j`, found `{fields}`"),
                ));
            };
            let i = parse_number(i.trim(), "a 1-based image index", file, line)?;
            let j = parse_number(j.trim(), "a 1-based image index", file, line)?;
            Ok((line, i, j))
        })
        .collect()
}

/// Maps a 1-based `index` into `list` to an image index in `images`.
fn resolve(
    list: &PairList,
    index: usize,
    split: &Path,
    line: usize,
    images: &mut ImageSet,
) -> Result<usize> {
    let Some((image, list_line)) = index.checked_sub(1).and_then(|k| list.entries.get(k)) else {
        let what = format!(
            "index {index} is out of range 1..={} of {}",
            list.entries.len(),
            list.file.display()
        );
        return Err(parse_error(split, line, what));
    };
    images.intern(image.clone(), &list.file, *list_line)
}

/// Checks that every fold holds as many pairs as the first (folds are contiguous equal blocks).
fn check_fold_size(fold_dir: &Path, size: usize, per_fold: &mut Option<usize>) -> Result<()> {
    match *per_fold {
        None if size == 0 => Err(parse_error(fold_dir, 0, "fold has no pairs")),
        None => {
            *per_fold = Some(size);
            Ok(())
        }
        Some(first) if first != size => {
            let what = format!("fold has {size} pairs, the first fold has {first}");
            Err(parse_error(fold_dir, 0, what))
        }
        Some(_) => Ok(()),
    }
}

/// Joins `relative` onto `base`, resolving `..` against `base`'s own components.
fn join_lexically(base: &Path, relative: &Path) -> PathBuf {
    let mut joined = base.to_path_buf();
    for component in relative.components() {
        match component {
            Component::CurDir => {}
            Component::ParentDir
                if matches!(joined.components().next_back(), Some(Component::Normal(_))) =>
            {
                joined.pop();
            }
            other => joined.push(other),
        }
    }
    joined
}
