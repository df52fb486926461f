//! The list-file importer: `path label` lines (or im2rec's tab-separated `.lst`), read by
//! [`crate::read_list_file`]; every distinct label is one identity.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use super::folder::FilesSource;
use super::{Candidate, PackConfig, PackReport, apply_exclusions, run_pack};
use crate::error::Result;
use crate::listfile::read_list_file;

/// Packs the images named by a list file into a dataset at `out_dir`.
///
/// Identities are the distinct labels of the list, in numeric order when every label is a
/// whole number and in text order otherwise. A label's text is its identity's name (what
/// `exclude` matches; `006` stays `006`), except that im2rec's `7.000000` is named `7`. A
/// line repeating an earlier image and label is skipped and reported. Images of one identity keep the list's order. Missing, undecodable or
/// truncated images are skipped, reported and logged, never fatal.
///
/// # Errors
/// The errors of [`read_list_file`] (naming the line), and those of
/// [`crate::pack_folder`] for the configuration and the output.
pub fn pack_list(list: &Path, out_dir: &Path, config: &PackConfig) -> Result<PackReport> {
    config.preprocess.validate()?;
    let mut report = PackReport::default();
    let entries = read_list_file(list)?;

    let mut by_label: BTreeMap<LabelKey, Vec<PathBuf>> = BTreeMap::new();
    let numeric = entries.iter().all(|e| class_number(&e.label).is_some());
    let mut seen = std::collections::HashSet::new();
    for entry in entries {
        if !seen.insert((entry.path.clone(), entry.label.clone())) {
            let what = format!("line {}: the same image and label again", entry.line);
            super::skip(&mut report, &entry.path, what);
            continue;
        }
        let name = identity_name(&entry.label);
        let key = match class_number(&entry.label).filter(|_| numeric) {
            Some(number) => LabelKey::Number(number, name),
            None => LabelKey::Text(name),
        };
        by_label.entry(key).or_default().push(entry.path);
    }
    let candidates = by_label
        .into_iter()
        .map(|(key, items)| Candidate {
            name: key.into_name(),
            items,
        })
        .collect();

    let description = list.display().to_string();
    let candidates = apply_exclusions(candidates, config, &description, &mut report)?;
    let source = FilesSource {
        description,
        preprocess: config.preprocess.clone(),
    };
    run_pack(&source, &candidates, out_dir, config, report)
}

/// The identity name of a label: its text, except that im2rec's float form of a whole number
/// (`3.000000`) is written as the integer (`3`). Leading zeros (`006`) are kept: names are
/// what exclusion lists match.
fn identity_name(label: &str) -> String {
    match label.contains('.') {
        true => class_number(label).map_or_else(|| label.to_owned(), |n| n.to_string()),
        false => label.to_owned(),
    }
}

/// A class number written as an integer or an integral float (`3`, `3.000000`, as im2rec
/// writes labels).
fn class_number(label: &str) -> Option<u64> {
    if let Ok(number) = label.parse::<u64>() {
        return Some(number);
    }
    let value = label.parse::<f64>().ok()?;
    let integral =
        value.is_finite() && value >= 0.0 && value.fract() == 0.0 && value < 2f64.powi(53);
    integral.then_some(value as u64)
}

/// A label ordered numerically when every label of the list is a number.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum LabelKey {
    Number(u64, String),
    Text(String),
}

impl LabelKey {
    fn into_name(self) -> String {
        match self {
            LabelKey::Number(_, text) | LabelKey::Text(text) => text,
        }
    }
}
