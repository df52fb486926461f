//! The embedded default: a complete run that needs no download.
//!
//! 1. Render synthetic identities (`pm_data::render_face`): a training set and a disjoint set of
//!    held-out identities, both in the LFW folder layout, with an LFW-format `pairs.txt` over
//!    the held-out ones.
//! 2. Pack the training folder into shards, exactly as `cargo xtask pack` does.
//! 3. Train with Prototype Memory (memory smaller than the number of identities, so eviction
//!    happens).
//! 4. Verify on the held-out identities with the LFW protocol: the trained encoder against raw
//!    pixels and the same encoder untrained.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use candle_core::Device;
use pm_data::{Crop, PackConfig, PackReport, Preprocess, SynthConfig};
use pm_eval::{Embedder, EncoderEmbedder, RawPixels, VerificationResult, lfw_pairs};
use serde::{Deserialize, Serialize};

use crate::config::{DataSection, MemorySection, OptimSection, RunSection, TrainConfig};
use crate::trainer::{Progress, TrainSummary, Trainer, build_encoder};
use crate::{Error, Result};

/// Sizes of the demo.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DemoConfig {
    /// Output directory.
    pub out: PathBuf,
    /// Training identities.
    pub train_identities: u64,
    /// Held-out identities for verification.
    pub test_identities: u64,
    /// Images rendered per identity.
    pub images_per_identity: usize,
    /// Training steps.
    pub steps: u64,
    /// Memory slots.
    pub memory_capacity: usize,
    /// Seed of everything.
    pub seed: u64,
}

impl Default for DemoConfig {
    fn default() -> Self {
        Self {
            out: PathBuf::from("runs/demo"),
            train_identities: 3000,
            test_identities: 200,
            images_per_identity: 6,
            steps: 400,
            memory_capacity: 384,
            seed: 0,
        }
    }
}

/// What the demo reports.
#[derive(Clone, Debug, Serialize)]
pub struct DemoReport {
    /// What packing did.
    pub pack: PackReport,
    /// The training run.
    pub train: TrainSummary,
    /// Raw pixels, untrained encoder, trained encoder on the held-out pairs.
    pub results: Vec<VerificationResult>,
}

/// The first identity number of the held-out set: far from the training identities.
const TEST_IDENTITY_BASE: u64 = 1_000_000;
const MARKER: &str = "demo.json";

/// Runs the whole demo and writes `<out>/demo.json`.
///
/// # Errors
/// `out` exists, is not empty and is not a previous demo; any step's error.
pub fn run_demo(config: &DemoConfig, progress: &mut dyn Progress) -> Result<DemoReport> {
    prepare_out(&config.out)?;
    let synth = SynthConfig {
        seed: config.seed,
        ..SynthConfig::default()
    };
    let (train_dir, test_dir) = (config.out.join("train"), config.out.join("test"));
    let pairs = config.out.join("test_pairs.txt");
    tracing::info!(
        identities = config.train_identities,
        held_out = config.test_identities,
        "rendering synthetic faces"
    );
    pm_data::write_synth_folder(
        &synth,
        &train_dir,
        0..config.train_identities,
        config.images_per_identity,
    )?;
    let held_out = TEST_IDENTITY_BASE..TEST_IDENTITY_BASE + config.test_identities;
    pm_data::write_synth_folder(
        &synth,
        &test_dir,
        held_out.clone(),
        config.images_per_identity,
    )?;
    pm_data::write_synth_pairs(
        &pairs,
        held_out,
        config.images_per_identity,
        10,
        60,
        config.seed,
    )?;

    let preprocess = Preprocess {
        crop: Crop::Center { fraction: 1.0 },
        size: synth.size,
    };
    let dataset = config.out.join("dataset");
    let pack = pm_data::pack_folder(&train_dir, &dataset, &pack_config(&preprocess))?;
    tracing::info!(identities = pack.identities, images = pack.images, "packed");

    let train_config = train_config(config, &dataset, synth.size as usize);
    let mut trainer = Trainer::new(train_config.clone(), false)?;
    let train = trainer.run(progress, None)?;

    let results = evaluate(&train_config, &test_dir, &pairs, &preprocess)?;
    let report = DemoReport {
        pack,
        train,
        results,
    };
    write_json(&config.out.join(MARKER), &report)?;
    Ok(report)
}

fn prepare_out(out: &Path) -> Result<()> {
    if out.exists() {
        let empty = std::fs::read_dir(out)
            .map_err(|e| Error::io(out, e))?
            .next()
            .is_none();
        if !empty && !out.join(MARKER).exists() {
            return Err(Error::Config {
                path: out.to_path_buf(),
                what: "exists and is not an earlier demo output; choose another --out".into(),
            });
        }
        std::fs::remove_dir_all(out).map_err(|e| Error::io(out, e))?;
    }
    std::fs::create_dir_all(out).map_err(|e| Error::io(out, e))
}

fn pack_config(preprocess: &Preprocess) -> PackConfig {
    PackConfig {
        exclude: BTreeSet::new(),
        min_images: 2,
        preprocess: preprocess.clone(),
        max_images_per_shard: 100_000,
        storage: pm_data::Storage::Raw,
        append: false,
    }
}

fn train_config(config: &DemoConfig, dataset: &Path, size: usize) -> TrainConfig {
    let model = pm_models::EncoderConfig {
        input_size: size,
        ..Default::default()
    };
    TrainConfig {
        data: DataSection {
            dataset: dataset.to_path_buf(),
            identities_per_batch: 32,
            images_per_identity: 2,
            seed: config.seed,
            flip_probability: 0.5,
            prefetch: 2,
            sampling: pm_data::SamplingMode::Epoch,
        },
        model,
        memory: MemorySection {
            capacity: config.memory_capacity,
            ..MemorySection::default()
        },
        head: crate::HeadSection::default(),
        loss: pm_loss::MarginConfig::default(),
        optim: OptimSection {
            steps: config.steps,
            warmup_steps: config.steps / 10,
            ..OptimSection::default()
        },
        run: RunSection {
            dir: config.out.join("run"),
            seed: config.seed,
            checkpoint_every: config.steps.div_ceil(2).max(1),
            log_every: 10,
            obsolescence_every: 0,
            obsolescence_rows: 64,
        },
    }
}

/// Raw pixels, the untrained encoder (same seed) and the trained encoder on the held-out pairs.
fn evaluate(
    config: &TrainConfig,
    images_root: &Path,
    pairs: &Path,
    preprocess: &Preprocess,
) -> Result<Vec<VerificationResult>> {
    let protocol = lfw_pairs(images_root, pairs, "synthetic held-out")?;
    let (_, untrained) = build_encoder(&config.model, &Device::Cpu, Some(config.run.seed))?;
    let (_, trained) = crate::load_encoder(&config.run.dir, None)?;
    let embedders: [(&str, &dyn Embedder); 3] = [
        ("raw pixels", &RawPixels),
        ("untrained encoder", &EncoderEmbedder::new(&untrained)),
        ("trained encoder", &EncoderEmbedder::new(&trained)),
    ];
    Ok(pm_eval::evaluate(&protocol, preprocess, &embedders)?)
}

fn write_json(path: &Path, value: &impl Serialize) -> Result<()> {
    let text = serde_json::to_string_pretty(value).map_err(|e| Error::Config {
        path: path.to_path_buf(),
        what: e.to_string(),
    })?;
    std::fs::write(path, text).map_err(|e| Error::io(path, e))
}
