//! Reader of image list files: one image and its label per line, in one of two forms, detected
//! per file from its first content line.
//!
//! ```text
//! path/to/some image.jpg 17          (a) path, whitespace, label (the last token)
//! 1<TAB>path/to/image.jpg<TAB>17      (b) im2rec / insightface `.lst`: index, path, label
//! ```
//!
//! Blank lines and lines starting with `#` are skipped, a UTF-8 byte order mark is ignored,
//! and relative paths are resolved against the list file's folder.

use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

/// One line of a list file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ListEntry {
    /// The image path, resolved against the list file's folder when relative.
    pub path: PathBuf,
    /// The label as written (not parsed).
    pub label: String,
    /// 1-based line number in the list file.
    pub line: usize,
}

/// The two line forms of a list file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Form {
    /// `path label`: the label is the last whitespace-separated token.
    Whitespace,
    /// `index<TAB>path<TAB>label`, possibly with more fields before the label.
    Tabbed,
}

impl Form {
    /// Three or more tab-separated fields make a `.lst` file; anything else is `path label`.
    fn detect(line: &str) -> Form {
        if line.split('\t').count() >= 3 {
            Form::Tabbed
        } else {
            Form::Whitespace
        }
    }
}

/// Reads a list file. Two forms, detected per file: (a) `path label` with whitespace between;
/// the label is the last whitespace-separated token and the path is everything before it,
/// trimmed (so paths may contain spaces); (b) tab-separated `.lst` lines, insightface's
/// `index<TAB>path<TAB>label` or MXNet im2rec's `index<TAB>label<TAB>path` (told apart by
/// which field is a number). Blank lines and lines starting with `#` are skipped; a UTF-8 BOM at the start
/// is ignored; relative paths are resolved against the list file's folder.
///
/// # Errors
/// [`Error::Io`] if the file cannot be read; [`Error::Parse`] naming the file and 1-based line
/// for a line with no label, an empty path, fewer than 3 fields in a `.lst` file, or bytes
/// that are not UTF-8.
pub fn read_list_file(path: &Path) -> Result<Vec<ListEntry>> {
    let bytes = crate::files::read_capped(path, crate::files::MAX_SMALL_TEXT * 16)?;
    parse_list(&bytes, path)
}

fn parse_error(path: &Path, line: usize, what: impl Into<String>) -> Error {
    let (path, what) = (path.to_path_buf(), what.into());
    Error::Parse { path, line, what }
}

/// Parses the bytes of the list file at `path`.
fn parse_list(bytes: &[u8], path: &Path) -> Result<Vec<ListEntry>> {
    let bytes = bytes.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(bytes);
    let folder = path.parent().unwrap_or(Path::new(""));
    let mut form = None;
    let mut entries = Vec::new();
    // Classic Mac files end lines with CR alone.
    let separator = match bytes.contains(&b'\n') {
        true => b'\n',
        false => b'\r',
    };
    for (i, raw) in bytes.split(|&b| b == separator).enumerate() {
        let line = i + 1;
        let text = std::str::from_utf8(raw).map_err(|e| {
            let what = format!(
                "not UTF-8 text (bad byte at column {})",
                e.valid_up_to() + 1
            );
            parse_error(path, line, what)
        })?;
        let text = text.strip_suffix('\r').unwrap_or(text);
        if text.trim().is_empty() || text.trim_start().starts_with('#') {
            continue;
        }

        let form = *form.get_or_insert_with(|| Form::detect(text));
        let (file, label) = match form {
            Form::Whitespace => split_whitespace_line(text),
            Form::Tabbed => split_tabbed_line(text),
        }
        .map_err(|what| parse_error(path, line, what))?;
        entries.push(ListEntry {
            path: folder.join(file),
            label: label.to_owned(),
            line,
        });
    }
    Ok(entries)
}

/// Splits `path label` at the last run of whitespace.
fn split_whitespace_line(text: &str) -> std::result::Result<(&str, &str), String> {
    let text = text.trim();
    let Some(at) = text.rfind(char::is_whitespace) else {
        return Err(format!("no label: expected `path label`, found {text:?}"));
    };
    let (file, label) = text.split_at(at);
    let file = file.trim();
    if file.is_empty() {
        return Err("empty path before the label".to_owned());
    }
    Ok((file, label.trim()))
}

/// Splits a tab-separated `.lst` line into its path and label. insightface's face2rec writes
/// `index<TAB>path<TAB>label`; MXNet's im2rec writes `index<TAB>label...<TAB>path` (labels as
/// floats). The path is the last field when that field is not a number and the second is;
/// otherwise the second field is the path and the last the label.
fn split_tabbed_line(text: &str) -> std::result::Result<(&str, &str), String> {
    let fields: Vec<&str> = text.split('\t').map(str::trim).collect();
    let (Some(&second), Some(&last), true) = (fields.get(1), fields.last(), fields.len() >= 3)
    else {
        return Err(format!(
            "expected `index<TAB>path<TAB>label` or `index<TAB>label<TAB>path` (3 or more \
             tab-separated fields), found {} field(s)",
            fields.len()
        ));
    };
    let is_number = |field: &str| field.parse::<f64>().is_ok();
    let (file, label) = match !is_number(last) && is_number(second) {
        true => (last, second),
        false => (second, last),
    };
    if label.is_empty() {
        return Err("no label: the label field is empty".to_owned());
    }
    if file.is_empty() {
        return Err("empty path: the path field is empty".to_owned());
    }
    Ok((file, label))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entries(text: &[u8]) -> Vec<(PathBuf, String, usize)> {
        let list = parse_list(text, Path::new("/data/set/list.txt")).unwrap();
        list.into_iter()
            .map(|e| (e.path, e.label, e.line))
            .collect()
    }

    fn entry(path: &str, label: &str, line: usize) -> (PathBuf, String, usize) {
        (PathBuf::from(path), label.to_owned(), line)
    }

    fn error_line(text: &[u8]) -> usize {
        match parse_list(text, Path::new("list.txt")) {
            Err(Error::Parse { path, line, .. }) => {
                assert_eq!(path, Path::new("list.txt"));
                line
            }
            other => panic!("{text:?}: expected a parse error, got {other:?}"),
        }
    }

    #[test]
    fn whitespace_form_takes_the_last_token_as_label() {
        let text = b"# comment\n\na/1.jpg 0\n  /abs/my photo 2.png\t\t12  \r\nb/x.jpg\t3\n";
        assert_eq!(
            entries(text),
            [
                entry("/data/set/a/1.jpg", "0", 3),
                entry("/abs/my photo 2.png", "12", 4),
                entry("/data/set/b/x.jpg", "3", 5),
            ]
        );
    }

    #[test]
    fn tabbed_form_takes_the_second_field_as_path_and_the_last_as_label() {
        let text = b"1\tcfp/Data/Images/001/frontal/01.jpg\t0\n\
                     2\tdir with space/x.jpg\t1\r\n\
                     3\tmore/y.jpg\t0.5\t7\n";
        assert_eq!(
            entries(text),
            [
                entry("/data/set/cfp/Data/Images/001/frontal/01.jpg", "0", 1),
                entry("/data/set/dir with space/x.jpg", "1", 2),
                entry("/data/set/more/y.jpg", "7", 3),
            ]
        );
    }

    #[test]
    fn carriage_returns_alone_end_lines() {
        let got = entries(b"a.jpg 1\rb.jpg 2\r");
        assert_eq!(got.len(), 2);
        assert_eq!((got[0].1.as_str(), got[1].1.as_str()), ("1", "2"));
    }

    #[test]
    fn im2rec_order_puts_the_path_last() {
        let got = entries(b"0\t3.000000\tsub dir/a.jpg\n1\t4.000000\tb.jpg\n");
        assert_eq!(got[0].1, "3.000000");
        assert!(got[0].0.ends_with("sub dir/a.jpg"), "{:?}", got[0].0);
        assert_eq!(got[1].1, "4.000000");
        assert!(got[1].0.ends_with("b.jpg"));
    }

    #[test]
    fn bom_is_ignored_and_relative_list_paths_resolve_next_to_the_list() {
        let list = parse_list(b"\xEF\xBB\xBFimg.jpg 4", Path::new("list.txt")).unwrap();
        assert_eq!(list[0].path, Path::new("img.jpg"));
        assert_eq!(list[0].label, "4");
        let list = parse_list(b"\xEF\xBB\xBF1\timg.jpg\t4\n", Path::new("d/l.lst")).unwrap();
        assert_eq!(list[0].path, Path::new("d/img.jpg"));
    }

    #[test]
    fn bad_lines_name_their_line() {
        assert_eq!(error_line(b"a.jpg 0\nno_label\n"), 2);
        assert_eq!(error_line(b"a.jpg 0\n\xff\xfe 1\n"), 2);
        assert_eq!(error_line(b"1\ta.jpg\t0\n2\tb.jpg\n"), 2);
        assert_eq!(error_line(b"1\ta.jpg\t0\n2\t\t3\n"), 2);
        assert_eq!(error_line(b"1\ta.jpg\t0\n\n3\tb.jpg\t\n"), 3);
    }

    #[test]
    fn an_empty_file_has_no_entries() {
        assert!(entries(b"").is_empty());
        assert!(entries(b"\xEF\xBB\xBF\n# only a comment\n").is_empty());
    }
}
