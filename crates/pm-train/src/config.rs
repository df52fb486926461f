//! The run configuration: one TOML file, every table with unknown keys refused, so that a
//! typo is an error naming the key instead of a silently ignored setting.

use std::path::{Path, PathBuf};

use pm_loss::MarginConfig;
use pm_memory::{Eviction, MemoryConfig, PrototypeConfig};
use pm_models::EncoderConfig;
use serde::{Deserialize, Serialize};

use crate::{Error, Result};

/// The whole run.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrainConfig {
    /// The packed training set and the sampler.
    pub data: DataSection,
    /// The encoder.
    #[serde(default)]
    pub model: EncoderConfig,
    /// The prototype memory.
    #[serde(default)]
    pub memory: MemorySection,
    /// The classifier head: the prototype memory (default) or a learned-row peer.
    #[serde(default)]
    pub head: HeadSection,
    /// The margin loss.
    #[serde(default)]
    pub loss: MarginConfig,
    /// The optimiser and its schedule.
    #[serde(default)]
    pub optim: OptimSection,
    /// Where and how often to write.
    pub run: RunSection,
}

/// The training data.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DataSection {
    /// A dataset directory written by `cargo xtask pack`.
    pub dataset: PathBuf,
    /// Identities per batch (P).
    #[serde(default = "default_p")]
    pub identities_per_batch: usize,
    /// Images per identity (K ≥ 2).
    #[serde(default = "default_k")]
    pub images_per_identity: usize,
    /// Seed of the sampler.
    #[serde(default)]
    pub seed: u64,
    /// Probability of a horizontal flip.
    #[serde(default = "default_flip")]
    pub flip_probability: f32,
    /// Batches decoded ahead of the trainer.
    #[serde(default = "default_prefetch")]
    pub prefetch: usize,
    /// How identities are chosen: `epoch` (each once per epoch), `identity_balanced` or
    /// `image_balanced` (see `pm_data::SamplingMode`).
    #[serde(default)]
    pub sampling: pm_data::SamplingMode,
}

/// The prototype memory (its dimension is the encoder's embedding dimension).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MemorySection {
    /// Slots M.
    pub capacity: usize,
    /// Eviction when full.
    #[serde(default)]
    pub eviction: Eviction,
    /// Drop rows older than this many steps.
    #[serde(default)]
    pub max_age: Option<u64>,
    /// How fresh prototypes are made.
    #[serde(default)]
    pub prototype: PrototypeConfig,
}

impl Default for MemorySection {
    fn default() -> Self {
        Self {
            capacity: 1024,
            eviction: Eviction::default(),
            max_age: None,
            prototype: PrototypeConfig::default(),
        }
    }
}

/// Which classifier the margin loss scores against.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HeadKind {
    /// The prototype memory of `[memory]` (the method).
    #[default]
    PrototypeMemory,
    /// N learned rows, all in every step's softmax (N: the dataset's identities).
    FullSoftmax,
    /// N learned rows; each step all positives and a fraction `sample_rate` of the negatives.
    PartialFc,
}

/// The classifier head. The learned-row heads have one row per identity of the dataset, are
/// trained by SGD with `[optim]`'s momentum, weight decay and learning-rate schedule, and
/// ignore `[memory]`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HeadSection {
    /// `prototype_memory`, `full_softmax` or `partial_fc`.
    #[serde(default)]
    pub kind: HeadKind,
    /// Partial FC: fraction r in (0, 1] of the negative rows drawn per step.
    #[serde(default = "default_sample_rate")]
    pub sample_rate: f64,
}

impl Default for HeadSection {
    fn default() -> Self {
        Self {
            kind: HeadKind::default(),
            sample_rate: default_sample_rate(),
        }
    }
}

/// Learning-rate schedule after warm-up.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Schedule {
    /// Cosine decay to `final_lr_fraction · lr`.
    #[default]
    Cosine,
    /// Constant.
    Constant,
}

/// SGD with momentum, linear warm-up then decay.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OptimSection {
    /// Peak learning rate.
    pub lr: f64,
    /// Momentum.
    pub momentum: f64,
    /// Weight decay on convolution and linear weights (not on BatchNorm).
    pub weight_decay: f64,
    /// Total training steps.
    pub steps: u64,
    /// Linear warm-up steps.
    pub warmup_steps: u64,
    /// Decay after warm-up.
    #[serde(default)]
    pub schedule: Schedule,
    /// Final learning rate as a fraction of `lr`.
    #[serde(default = "default_final_lr")]
    pub final_lr_fraction: f64,
    /// Stop after this many steps in a row with a non-finite loss or gradient (each is skipped
    /// and logged).
    #[serde(default = "default_nonfinite")]
    pub max_nonfinite_in_row: usize,
}

impl Default for OptimSection {
    fn default() -> Self {
        Self {
            lr: 0.1,
            momentum: 0.9,
            weight_decay: 5e-4,
            steps: 1000,
            warmup_steps: 100,
            schedule: Schedule::Cosine,
            final_lr_fraction: default_final_lr(),
            max_nonfinite_in_row: default_nonfinite(),
        }
    }
}

/// Outputs of the run.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RunSection {
    /// Run directory: resolved config, metrics, checkpoints.
    pub dir: PathBuf,
    /// Seed of the initial weights.
    #[serde(default)]
    pub seed: u64,
    /// Steps between checkpoints (the last step always gets one).
    #[serde(default = "default_checkpoint_every")]
    pub checkpoint_every: u64,
    /// Steps between metric lines.
    #[serde(default = "default_log_every")]
    pub log_every: u64,
    /// Steps between obsolescence measurements (age of the stored rows the loss used and their
    /// cosine to a prototype recomputed by the current encoder); 0 turns them off.
    #[serde(default)]
    pub obsolescence_every: u64,
    /// Stored rows sampled per obsolescence measurement.
    #[serde(default = "default_obsolescence_rows")]
    pub obsolescence_rows: usize,
}

/// Largest memory accepted (capacity × dim floats): 16 GiB of rows.
const MAX_MEMORY_FLOATS: usize = 1 << 32;
/// Largest batch accepted, in images.
const MAX_BATCH: usize = 1 << 16;
/// Most batches decoded ahead.
const MAX_PREFETCH: usize = 64;

fn default_sample_rate() -> f64 {
    0.1
}
fn default_obsolescence_rows() -> usize {
    64
}
fn default_p() -> usize {
    32
}
fn default_k() -> usize {
    2
}
fn default_flip() -> f32 {
    0.5
}
fn default_prefetch() -> usize {
    2
}
fn default_final_lr() -> f64 {
    0.01
}
fn default_nonfinite() -> usize {
    10
}
fn default_checkpoint_every() -> u64 {
    500
}
fn default_log_every() -> u64 {
    10
}

impl TrainConfig {
    /// Reads and checks a TOML file. Relative paths inside it stay relative to the working
    /// directory, as on a command line.
    ///
    /// # Errors
    /// [`Error::Config`] naming the file, with the parser's line and key for syntax errors and
    /// unknown keys.
    pub fn from_file(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
        Self::from_toml(&text, path)
    }

    /// Parses and checks TOML text; `path` names it in errors.
    ///
    /// # Errors
    /// [`Error::Config`] as for [`TrainConfig::from_file`].
    pub fn from_toml(text: &str, path: &Path) -> Result<Self> {
        let config: Self = toml::from_str(text).map_err(|e| Error::Config {
            path: path.to_path_buf(),
            what: e.to_string(),
        })?;
        config.validate(path)?;
        Ok(config)
    }

    /// The configuration as TOML text.
    ///
    /// # Errors
    /// [`Error::Config`] if a value cannot be written as TOML.
    pub fn to_toml(&self) -> Result<String> {
        toml::to_string_pretty(self).map_err(|e| Error::Config {
            path: PathBuf::from("<config>"),
            what: e.to_string(),
        })
    }

    /// The memory configuration this run builds.
    pub fn memory_config(&self) -> MemoryConfig {
        MemoryConfig {
            capacity: self.memory.capacity,
            dim: self.model.embedding_dim,
            eviction: self.memory.eviction,
            max_age: self.memory.max_age,
        }
    }

    fn validate(&self, path: &Path) -> Result<()> {
        let fail = |what: String| {
            Err(Error::Config {
                path: path.to_path_buf(),
                what,
            })
        };
        let p = self.data.identities_per_batch;
        if self.data.images_per_identity < 2 || p == 0 {
            return fail(format!(
                "data: need identities_per_batch >= 1 and images_per_identity >= 2, got {p} and {}",
                self.data.images_per_identity
            ));
        }
        if self.memory.capacity < p {
            return fail(format!(
                "memory.capacity ({}) must hold at least one batch of identities ({p})",
                self.memory.capacity
            ));
        }
        let lr_ok = self.optim.lr.is_finite() && self.optim.lr > 0.0;
        if self.optim.steps == 0 || !lr_ok || self.run.log_every == 0 {
            return fail("optim.steps, optim.lr and run.log_every must be positive".into());
        }
        if self.run.checkpoint_every == 0 {
            return fail("run.checkpoint_every must be positive".into());
        }
        if let Err(e) = pm_loss::MarginLoss::new(self.loss.clone()) {
            return fail(format!("[loss]: {e}"));
        }
        if let Err(e) = self.model.validate() {
            return fail(format!("[model]: {e}"));
        }
        self.validate_ranges().or_else(fail)
    }

    /// Bounds that keep a mistyped number from allocating terabytes or training on NaN.
    fn validate_ranges(&self) -> std::result::Result<(), String> {
        let (o, d) = (&self.optim, &self.data);
        let unit = |x: f64| x.is_finite() && (0.0..=1.0).contains(&x);
        if !unit(o.momentum) || !unit(o.final_lr_fraction) || !unit(f64::from(d.flip_probability)) {
            return Err(
                "optim.momentum, optim.final_lr_fraction and data.flip_probability must \
                        be in [0, 1]"
                    .into(),
            );
        }
        let rate = self.head.sample_rate;
        if !(rate > 0.0 && rate <= 1.0) {
            return Err(format!("head.sample_rate must be in (0, 1], got {rate}"));
        }
        if o.max_nonfinite_in_row == 0 {
            return Err("optim.max_nonfinite_in_row must be at least 1".into());
        }
        if !(o.weight_decay.is_finite() && o.weight_decay >= 0.0) {
            return Err(format!(
                "optim.weight_decay must be >= 0, got {}",
                o.weight_decay
            ));
        }
        let floats = self
            .memory
            .capacity
            .saturating_mul(self.model.embedding_dim);
        if floats > MAX_MEMORY_FLOATS {
            return Err(format!(
                "memory.capacity x model.embedding_dim = {floats} floats exceeds {MAX_MEMORY_FLOATS}"
            ));
        }
        let batch = d.identities_per_batch.saturating_mul(d.images_per_identity);
        if batch > MAX_BATCH || d.prefetch > MAX_PREFETCH {
            return Err(format!(
                "batch of {batch} images (max {MAX_BATCH}) or prefetch {} (max {MAX_PREFETCH}) too large",
                d.prefetch
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINIMAL: &str = "[data]\ndataset = \"d\"\n[run]\ndir = \"r\"\n";

    #[test]
    fn minimal_config_gets_defaults_and_round_trips() {
        let config = TrainConfig::from_toml(MINIMAL, Path::new("t.toml")).unwrap();
        assert_eq!(config.data.images_per_identity, 2);
        let again = TrainConfig::from_toml(&config.to_toml().unwrap(), Path::new("t")).unwrap();
        assert_eq!(config, again);
    }

    #[test]
    fn a_run_must_be_allowed_at_least_one_non_finite_step() {
        let optim =
            "[optim]\nlr = 0.1\nmomentum = 0.9\nweight_decay = 0.0\nsteps = 5\nwarmup_steps = 1\n";
        for (count, ok) in [(0, false), (1, true)] {
            let text = format!("{MINIMAL}{optim}max_nonfinite_in_row = {count}\n");
            let result = TrainConfig::from_toml(&text, Path::new("n.toml"));
            assert_eq!(result.is_ok(), ok, "{count}: {result:?}");
        }
    }

    #[test]
    fn a_typo_is_an_error_naming_the_key_and_file() {
        let text = format!(
            "{MINIMAL}[optim]\nlr = 0.1\nmomentum = 0.9\nweight_decay = 0.0\nsteps = 5\nwarmup_step = 1\n"
        );
        let err = TrainConfig::from_toml(&text, Path::new("typo.toml")).unwrap_err();
        let msg = err.to_string();
        assert!(
            msg.contains("typo.toml") && msg.contains("warmup_step"),
            "{msg}"
        );
    }

    #[test]
    fn bad_loss_model_and_ranges_name_the_section() {
        let cases = [
            (
                "[loss]\nkind = \"arc_face\"\nscale = 64.0\nmargin = 2.0\n",
                "[loss]",
            ),
            (
                "[model]\ninput_size = 30\nwidths = [8, 16]\nblocks_per_stage = 1\nembedding_dim = 8\n",
                "[model]",
            ),
            ("[memory]\ncapacity = 1000000000000\n", "memory.capacity"),
        ];
        for (extra, expected) in cases {
            let text = format!("{MINIMAL}{extra}");
            let err = TrainConfig::from_toml(&text, Path::new("c.toml")).unwrap_err();
            assert!(err.to_string().contains(expected), "{err}");
        }
        let text = MINIMAL.replace("[run]", "flip_probability = nan\n[run]");
        assert!(TrainConfig::from_toml(&text, Path::new("c.toml")).is_err());
    }

    #[test]
    fn the_head_section_defaults_to_the_memory_and_checks_the_rate() {
        let config = TrainConfig::from_toml(MINIMAL, Path::new("h.toml")).unwrap();
        assert_eq!(config.head, HeadSection::default());
        assert_eq!(config.head.kind, HeadKind::PrototypeMemory);
        let text = format!("{MINIMAL}[head]\nkind = \"partial_fc\"\nsample_rate = 0.25\n");
        let config = TrainConfig::from_toml(&text, Path::new("h.toml")).unwrap();
        assert_eq!(
            (config.head.kind, config.head.sample_rate),
            (HeadKind::PartialFc, 0.25)
        );
        for bad in [
            "sample_rate = 0.0",
            "sample_rate = 1.5",
            "sample_rate = nan",
            "kind = \"fc\"",
        ] {
            let text = format!("{MINIMAL}[head]\n{bad}\n");
            let err = TrainConfig::from_toml(&text, Path::new("h.toml")).unwrap_err();
            assert!(err.to_string().contains("h.toml"), "{bad}: {err}");
        }
    }

    #[test]
    fn impossible_settings_are_errors() {
        let text = MINIMAL.replace("[run]", "images_per_identity = 1\n[run]");
        assert!(TrainConfig::from_toml(&text, Path::new("k.toml")).is_err());
        let text = format!("{MINIMAL}[memory]\ncapacity = 4\n");
        assert!(TrainConfig::from_toml(&text, Path::new("m.toml")).is_err());
    }
}
