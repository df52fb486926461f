//! Identity name lists for `--exclude`: plain lists or a column of a TSV file.

use std::collections::BTreeSet;
use std::path::Path;

use crate::error::{Error, Result};

/// Reads an identity list: one name per line (blank lines and `#` comments ignored); if
/// `column` is Some, the file is TSV with a header row and that column is taken (error naming
/// the file if the column is absent).
///
/// # Errors
/// [`Error::Io`] if the file cannot be read; [`Error::Parse`] naming the file and line for a
/// missing column, a short row or an empty name.
pub fn read_name_list(path: &Path, column: Option<&str>) -> Result<BTreeSet<String>> {
    let text = crate::files::read_text_capped(path, crate::files::MAX_SMALL_TEXT)?;
    let text = text.strip_prefix('\u{feff}').unwrap_or(&text);
    let is_content = |line: &&str| !line.trim().is_empty() && !line.trim_start().starts_with('#');
    match column {
        None => Ok(text
            .lines()
            .filter(is_content)
            .map(|l| l.trim().to_owned())
            .collect()),
        Some(column) => tsv_column(text, column, path),
    }
}

/// The values of `column` in a TSV text with a header row.
fn tsv_column(text: &str, column: &str, path: &Path) -> Result<BTreeSet<String>> {
    let parse_error = |line: usize, what: String| Error::Parse {
        path: path.to_path_buf(),
        line,
        what,
    };
    let mut lines = text.lines().enumerate();
    let header = lines.next().map(|(_, l)| l).unwrap_or_default();
    let fields: Vec<&str> = header.split('\t').map(str::trim).collect();
    let Some(index) = fields.iter().position(|&f| f == column) else {
        let what = format!(
            "no column `{column}` in the header (columns: {})",
            fields.join(", ")
        );
        return Err(parse_error(1, what));
    };

    let mut names = BTreeSet::new();
    for (i, line) in lines {
        if line.trim().is_empty() || line.trim_start().starts_with('#') {
            continue;
        }
        let value = line
            .split('\t')
            .nth(index)
            .map(str::trim)
            .unwrap_or_default();
        if value.is_empty() {
            return Err(parse_error(i + 1, format!("no value in column `{column}`")));
        }
        names.insert(value.to_owned());
    }
    Ok(names)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
        let path = dir.join(name);
        std::fs::write(&path, text).unwrap();
        path
    }
    #[test]
    fn plain_list_skips_blanks_and_comments() {
        let dir = tempfile::tempdir().unwrap();
        let path = write(dir.path(), "ids.txt", "# header\n006\n\n  009 \n#012\n");
        let names = read_name_list(&path, None).unwrap();
        assert_eq!(names.into_iter().collect::<Vec<_>>(), ["006", "009"]);
    }

    #[test]
    fn tsv_column_is_taken_and_missing_column_named() {
        let dir = tempfile::tempdir().unwrap();
        let text = concat!(
            "cfp_id\tcfp_name\tlfw_folder\r\n",
            "006\tAdam Sandler\tAdam_Sandler\r\n",
            "009\tAishwarya Rai\tAishwarya_Rai\r\n",
        );
        let path = write(dir.path(), "names.tsv", text);
        let names = read_name_list(&path, Some("lfw_folder")).unwrap();
        assert_eq!(
            names.into_iter().collect::<Vec<_>>(),
            ["Adam_Sandler", "Aishwarya_Rai"]
        );

        let err = read_name_list(&path, Some("nope")).unwrap_err();
        assert!(
            matches!(&err, Error::Parse { path: p, line: 1, .. } if *p == path),
            "{err}"
        );
        assert!(err.to_string().contains("nope"));
    }

    #[test]
    fn tsv_short_row_names_its_line() {
        let dir = tempfile::tempdir().unwrap();
        let path = write(dir.path(), "names.tsv", "a\tb\n1\t2\n3\n");
        let err = read_name_list(&path, Some("b")).unwrap_err();
        assert!(matches!(err, Error::Parse { line: 3, .. }), "{err}");
    }
}
