//! Checkpoints: everything a resumed run needs to continue exactly where it stopped.
//!
//! `<run>/checkpoints/step-NNNNNNNN/` holds
//! - `model.safetensors`: the encoder's variables, BatchNorm running statistics included;
//! - `state.safetensors`: the prototype memory (`memory.*`), the momentum buffers
//!   (`optim.*`) and, with a learned-row head, its rows, momentum and update steps (`head.*`);
//! - `trainer.json`: the step, the sampler's position and the non-finite streak;
//! - `config.toml`: the configuration that wrote it (a resume under another one is refused).
//!
//! A checkpoint is written into `step-NNNNNNNN.tmp` and renamed when complete, so a crash
//! never leaves a directory that [`latest_checkpoint`] would pick.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use candle_core::{Device, Tensor};
use pm_data::SamplerState;
use serde::{Deserialize, Serialize};

use crate::{Error, Result};

/// The small, human-readable part of a checkpoint.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Checkpoint {
    /// Steps completed.
    pub step: u64,
    /// Sampler position after the last trained batch.
    pub sampler: SamplerState,
    /// Non-finite losses in a row at that step.
    pub nonfinite_in_row: usize,
}

const MODEL: &str = "model.safetensors";
const STATE: &str = "state.safetensors";
const TRAINER: &str = "trainer.json";

/// Directory of the checkpoint at `step`.
pub(crate) fn checkpoint_dir(run_dir: &Path, step: u64) -> PathBuf {
    run_dir.join("checkpoints").join(format!("step-{step:08}"))
}

/// Writes a checkpoint atomically.
pub(crate) fn save(
    dir: &Path,
    varmap: &candle_nn::VarMap,
    state: &HashMap<String, Tensor>,
    checkpoint: &Checkpoint,
    config_toml: &str,
) -> Result<()> {
    let tmp = dir.with_extension("tmp");
    if tmp.exists() {
        std::fs::remove_dir_all(&tmp).map_err(|e| Error::io(&tmp, e))?;
    }
    std::fs::create_dir_all(&tmp).map_err(|e| Error::io(&tmp, e))?;
    varmap.save(tmp.join(MODEL))?;
    candle_core::safetensors::save(state, tmp.join(STATE))?;
    let json = serde_json::to_string_pretty(checkpoint).map_err(|e| Error::Checkpoint {
        path: tmp.clone(),
        what: e.to_string(),
    })?;
    std::fs::write(tmp.join("config.toml"), config_toml)
        .map_err(|e| Error::io(tmp.join("config.toml"), e))?;
    std::fs::write(tmp.join(TRAINER), json).map_err(|e| Error::io(tmp.join(TRAINER), e))?;
    if dir.exists() {
        std::fs::remove_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    }
    std::fs::rename(&tmp, dir).map_err(|e| Error::io(dir, e))?;
    tracing::info!(path = %dir.display(), step = checkpoint.step, "checkpoint saved");
    Ok(())
}

/// The newest complete checkpoint of a run, if any.
///
/// # Errors
/// The checkpoints folder exists but cannot be listed.
pub fn latest_checkpoint(run_dir: &Path) -> Result<Option<PathBuf>> {
    let root = run_dir.join("checkpoints");
    if !root.exists() {
        return Ok(None);
    }
    let entries = std::fs::read_dir(&root).map_err(|e| Error::io(&root, e))?;
    let mut best: Option<(u64, PathBuf)> = None;
    for entry in entries {
        let path = entry.map_err(|e| Error::io(&root, e))?.path();
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
        let Some(step) = name
            .strip_prefix("step-")
            .and_then(|s| s.parse::<u64>().ok())
        else {
            continue;
        };
        if path.join(TRAINER).is_file() && best.as_ref().is_none_or(|(s, _)| step > *s) {
            best = Some((step, path));
        }
    }
    Ok(best.map(|(_, path)| path))
}

/// What [`load`] reads back.
pub(crate) struct Loaded {
    pub(crate) checkpoint: Checkpoint,
    pub(crate) state: HashMap<String, Tensor>,
}

/// Loads a checkpoint's weights into `varmap` (whose variables must already exist) and returns
/// the rest.
pub(crate) fn load(dir: &Path, varmap: &mut candle_nn::VarMap) -> Result<Loaded> {
    let fail = |what: String| Error::Checkpoint {
        path: dir.to_path_buf(),
        what,
    };
    let trainer =
        std::fs::read_to_string(dir.join(TRAINER)).map_err(|e| fail(format!("{TRAINER}: {e}")))?;
    let checkpoint: Checkpoint =
        serde_json::from_str(&trainer).map_err(|e| fail(format!("{TRAINER}: {e}")))?;
    varmap
        .load(dir.join(MODEL))
        .map_err(|e| fail(format!("{MODEL}: {e}")))?;
    let state = candle_core::safetensors::load(dir.join(STATE), &Device::Cpu)
        .map_err(|e| fail(format!("{STATE}: {e}")))?;
    Ok(Loaded { checkpoint, state })
}
