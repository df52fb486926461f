//! The synthetic importer: renders [`crate::render_face`] identities straight into shards,
//! with no image files in between, for scale tests (10^6 identities and more) and benchmarks.

use std::ops::Range;
use std::path::{Path, PathBuf};

use super::{Candidate, PackConfig, PackReport, Source, Stored, run_pack};
use crate::error::{Error, Result};
use crate::preprocess::Preprocess;
use crate::shard::Storage;
use crate::synth::{SynthConfig, render_face, synth_identity_name};

/// Packs synthetic identities `identities`, `images_per_identity` images each, rendered at
/// `synth.size`, into a dataset at `out_dir`. Identity names are [`synth_identity_name`];
/// `config.preprocess` is not used (the renders are aligned faces already) and neither are
/// `exclude` and `min_images`.
///
/// # Errors
/// [`Error::Config`] for an invalid synthetic configuration or no image per identity, and the
/// errors of [`crate::pack_folder`] for the output.
pub fn pack_synth(
    synth: &SynthConfig,
    identities: Range<u64>,
    images_per_identity: usize,
    out_dir: &Path,
    config: &PackConfig,
) -> Result<PackReport> {
    synth.validate()?;
    if images_per_identity == 0 || identities.is_empty() {
        return Err(Error::Config(
            "synthetic pack needs identities and images".into(),
        ));
    }
    let candidates: Vec<Candidate<(u64, u64)>> = identities
        .map(|identity| Candidate {
            name: synth_identity_name(identity),
            items: (0..images_per_identity as u64)
                .map(|image| (identity, image))
                .collect(),
        })
        .collect();
    let config = PackConfig {
        min_images: 1,
        ..config.clone()
    };
    let source = SynthSource {
        config: synth.clone(),
    };
    run_pack(
        &source,
        &candidates,
        out_dir,
        &config,
        PackReport::default(),
    )
}

struct SynthSource {
    config: SynthConfig,
}

impl Source for SynthSource {
    type Item = (u64, u64);

    fn load(&self, &(identity, image): &(u64, u64), storage: Storage) -> Result<Stored> {
        Stored::from_crop(render_face(&self.config, identity, image), storage)
    }

    fn locate(&self, &(identity, image): &(u64, u64)) -> (PathBuf, Option<u64>) {
        (PathBuf::from(synth_identity_name(identity)), Some(image))
    }

    fn image_size(&self) -> (u32, u32) {
        (self.config.size, self.config.size)
    }

    fn preprocess(&self) -> Option<Preprocess> {
        None
    }

    fn describe(&self) -> String {
        format!("synthetic faces, seed {}", self.config.seed)
    }
}
