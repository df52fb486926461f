//! `pm eval`: verify a trained run on LFW pairs, CFP-FF or CFP-FP, next to the two references
//! (raw pixels, the same encoder untrained), and write the results as JSON.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use candle_core::Device;
use clap::{Args, ValueEnum};
use pm_data::{Crop, Preprocess};
use pm_eval::{CfpKind, Embedder, EncoderEmbedder, PairProtocol, RawPixels};

/// Which protocol.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub(crate) enum ProtocolArg {
    /// LFW View 2 `pairs.txt` (6,000 pairs) or any file in its format.
    Lfw,
    /// CFP frontal-frontal (7,000 pairs).
    CfpFf,
    /// CFP frontal-profile (7,000 pairs).
    CfpFp,
}

/// Arguments of `pm eval`.
#[derive(Debug, Args)]
pub(crate) struct EvalArgs {
    /// Run directory written by `pm train` (config.toml + model.safetensors).
    #[arg(long)]
    run: PathBuf,
    /// Weights to use instead of the run's final ones (e.g. a checkpoint's model.safetensors).
    #[arg(long)]
    weights: Option<PathBuf>,
    /// The protocol.
    #[arg(long, value_enum)]
    protocol: ProtocolArg,
    /// LFW: the folder of identity folders; CFP: the CFP root (with Protocol/ and Data/).
    #[arg(long)]
    data: PathBuf,
    /// LFW: the pairs file (default: <data>/../pairs.txt).
    #[arg(long)]
    pairs: Option<PathBuf>,
    /// Centre-crop fraction instead of the training set's crop.
    #[arg(long)]
    crop_fraction: Option<f32>,
    /// CFP: crop around the 30 fiducial points with this margin (default 0.35); a
    /// negative value uses the centre crop instead.
    #[arg(long)]
    landmark_margin: Option<f32>,
    /// Skip the two references (raw pixels, untrained encoder).
    #[arg(long)]
    no_references: bool,
    /// Where to write the JSON results (default: <run>/eval-<protocol>.json).
    #[arg(long)]
    json: Option<PathBuf>,
}

/// Default margin of the landmark crop (CFP); docs/results.md measures the choice.
const LANDMARK_MARGIN: f32 = 0.35;
/// Default centre crop when the training set's crop cannot apply (LFW: 125 of 250 px).
const DEFAULT_CENTER_FRACTION: f32 = 0.5;

pub(crate) fn run(args: &EvalArgs) -> Result<()> {
    let (config, trained) = pm_train::load_encoder(&args.run, args.weights.as_deref())?;
    let protocol = read_protocol(args)?;
    let preprocess = preprocess_for(args, &config)?;
    tracing::info!(?preprocess, "preprocessing");

    let (_, untrained) =
        pm_train::build_encoder(&config.model, &Device::Cpu, Some(config.run.seed))?;
    let trained_embedder = EncoderEmbedder::new(&trained);
    let untrained_embedder = EncoderEmbedder::new(&untrained);
    let mut embedders: Vec<(&str, &dyn Embedder)> = Vec::new();
    if !args.no_references {
        embedders.push(("raw pixels", &RawPixels));
        embedders.push(("untrained encoder", &untrained_embedder));
    }
    embedders.push(("trained encoder", &trained_embedder));
    let results = pm_eval::evaluate(&protocol, &preprocess, &embedders)?;

    print!("{}", pm_eval::format_table(&results));
    let json = args.json.clone().unwrap_or_else(|| {
        args.run
            .join(format!("eval-{}.json", protocol.name.replace(' ', "_")))
    });
    std::fs::write(&json, serde_json::to_string_pretty(&results)?)
        .with_context(|| format!("writing {}", json.display()))?;
    println!("Results: {}", json.display());
    Ok(())
}

fn read_protocol(args: &EvalArgs) -> Result<PairProtocol> {
    Ok(match args.protocol {
        ProtocolArg::Lfw => {
            let pairs = match &args.pairs {
                Some(p) => p.clone(),
                None => args
                    .data
                    .parent()
                    .unwrap_or(Path::new("."))
                    .join("pairs.txt"),
            };
            pm_eval::lfw_pairs(&args.data, &pairs, "lfw")?
        }
        ProtocolArg::CfpFf => pm_eval::cfp_pairs(&args.data, CfpKind::FF)?,
        ProtocolArg::CfpFp => pm_eval::cfp_pairs(&args.data, CfpKind::FP)?,
    })
}

/// The training set's preprocessing, with the CFP landmark crop where asked.
fn preprocess_for(args: &EvalArgs, config: &pm_train::TrainConfig) -> Result<Preprocess> {
    let size = config.model.input_size as u32;
    let margin = args.landmark_margin.unwrap_or(LANDMARK_MARGIN);
    let is_cfp = args.protocol != ProtocolArg::Lfw;
    if is_cfp && margin >= 0.0 && args.crop_fraction.is_none() {
        return Ok(Preprocess {
            crop: Crop::Landmarks {
                images_root: args.data.join("Data/Images"),
                fiducials_root: args.data.join("Data/Fiducials"),
                margin,
            },
            size,
        });
    }
    if let Some(fraction) = args.crop_fraction {
        if !(fraction > 0.0 && fraction <= 1.0) {
            bail!("--crop-fraction must be in (0, 1], got {fraction}");
        }
        return Ok(Preprocess {
            crop: Crop::Center { fraction },
            size,
        });
    }
    let manifest = pm_data::Dataset::open(&config.data.dataset)
        .with_context(|| "reading the training set's crop (pass --crop-fraction to override)")?
        .manifest()
        .preprocess
        .clone();
    let Some(manifest) = manifest else {
        // Stored as they came (an aligned RecordIO set): test images get the whole frame.
        return Ok(Preprocess {
            crop: Crop::Center { fraction: 1.0 },
            size,
        });
    };
    if let Crop::Landmarks { .. } = manifest.crop {
        // Landmark files exist only for the training set's own images.
        tracing::info!(
            fraction = DEFAULT_CENTER_FRACTION,
            "the training set was cropped on landmarks; using a centre crop for this protocol"
        );
        return Ok(Preprocess {
            crop: Crop::Center {
                fraction: DEFAULT_CENTER_FRACTION,
            },
            size,
        });
    }
    Ok(Preprocess { size, ..manifest })
}
