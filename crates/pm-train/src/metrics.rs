//! Scalar metrics of a run, one JSON object per line in `<run>/metrics.jsonl`.

use std::fs::{File, OpenOptions};
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::{Error, Result};

/// One line of `metrics.jsonl`: averages over the steps since the previous line.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct StepMetrics {
    /// Step reached.
    pub step: u64,
    /// Sampler epoch.
    pub epoch: u64,
    /// Mean loss over the window; NaN (`null` in the file) when every step was skipped.
    #[serde(deserialize_with = "nan_if_null")]
    pub loss: f64,
    /// Fraction of images whose highest logit (before the margin) is their own class.
    pub batch_accuracy: f64,
    /// Learning rate at `step`.
    pub lr: f64,
    /// Training throughput over the window.
    pub images_per_second: f64,
    /// Occupied memory slots.
    pub memory_rows: usize,
    /// Columns of the last step's logits (fresh + stored rows).
    pub classes_in_softmax: usize,
    /// Mean age in steps of the stored rows the last step's loss used.
    pub mean_row_age: f64,
    /// Largest such age.
    pub max_row_age: u64,
    /// Identities refreshed, inserted and evicted over the window.
    pub refreshed: usize,
    /// See `refreshed`.
    pub inserted: usize,
    /// See `refreshed`.
    pub evicted: usize,
    /// Steps skipped for a non-finite loss over the window.
    pub skipped_steps: usize,
    /// Unreadable records (bad checksum, undecodable image) replaced by another image of the
    /// same identity over the window; each is also logged with its shard and record.
    #[serde(default)]
    pub replaced_images: usize,
    /// The obsolescence measurement taken in the window, if one was due.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub obsolescence: Option<crate::Obsolescence>,
}

fn nan_if_null<'de, D: serde::Deserializer<'de>>(d: D) -> std::result::Result<f64, D::Error> {
    Ok(Option::<f64>::deserialize(d)?.unwrap_or(f64::NAN))
}

/// Appends metric lines to a file.
#[derive(Debug)]
pub(crate) struct MetricsWriter {
    path: PathBuf,
    out: BufWriter<File>,
}

impl MetricsWriter {
    /// Opens `path` for appending (a resumed run continues the same file).
    pub(crate) fn append(path: &Path) -> Result<Self> {
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .map_err(|e| Error::io(path, e))?;
        Ok(Self {
            path: path.to_path_buf(),
            out: BufWriter::new(file),
        })
    }

    /// Writes one line and flushes it.
    pub(crate) fn write(&mut self, metrics: &StepMetrics) -> Result<()> {
        let line = serde_json::to_string(metrics).map_err(|e| Error::Config {
            path: self.path.clone(),
            what: e.to_string(),
        })?;
        writeln!(self.out, "{line}")
            .and_then(|_| self.out.flush())
            .map_err(|e| Error::io(&self.path, e))
    }
}
