//! Workspace tasks, reached as `cargo xtask <task>`:
//! - `pack`: a folder tree `<root>/<identity>/<image>` into memory-mapped shards;
//! - `synth`: render synthetic identities into that folder layout, with an LFW-style pairs file.
//!
//! Arguments are parsed here; the work is done by `pm-data`.

#![allow(
    clippy::print_stdout,
    reason = "a command-line program reports on stdout"
)]

use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use clap::{Parser, Subcommand};
use pm_data::{Crop, PackConfig, Preprocess, SynthConfig};

#[derive(Debug, Parser)]
#[command(name = "xtask", about = "Dataset packing and other workspace tasks")]
struct Cli {
    #[command(subcommand)]
    task: Task,
}

#[derive(Debug, Subcommand)]
enum Task {
    /// Pack `<input>/<identity>/**/<image>` into a shard dataset at `<output>`.
    Pack(PackArgs),
    /// Render synthetic identities as `<output>/<name>/<name>_NNNN.jpg`.
    Synth(SynthArgs),
}

#[derive(Debug, clap::Args)]
struct PackArgs {
    /// Root folder: one sub-folder per identity.
    #[arg(long)]
    input: PathBuf,
    /// Output dataset directory (must not exist or be empty).
    #[arg(long)]
    output: PathBuf,
    /// File of identity names to leave out (one per line, or a TSV column with --exclude-column).
    #[arg(long)]
    exclude: Option<PathBuf>,
    /// Column of the --exclude TSV file holding the folder names (e.g. lfw_folder).
    #[arg(long)]
    exclude_column: Option<String>,
    /// Identities with fewer decodable images are left out.
    #[arg(long, default_value_t = 2)]
    min_images: usize,
    /// Output side in pixels (the model's input size).
    #[arg(long, default_value_t = 64)]
    size: u32,
    /// Centre square crop, as a fraction of the shorter side.
    #[arg(long, default_value_t = 0.5)]
    crop_fraction: f32,
    /// Crop around landmark points instead: the fiducials folder mirroring --input
    /// (CFP: Data/Fiducials).
    #[arg(long)]
    landmarks: Option<PathBuf>,
    /// Margin of the landmark crop, relative to the landmark box.
    #[arg(long, default_value_t = 0.35)]
    landmark_margin: f32,
    /// Images per shard file (an identity never spans two shards).
    #[arg(long, default_value_t = 200_000)]
    max_images_per_shard: usize,
}

#[derive(Debug, clap::Args)]
struct SynthArgs {
    /// Output folder.
    #[arg(long)]
    output: PathBuf,
    /// Number of identities.
    #[arg(long)]
    identities: u64,
    /// First identity number (held-out sets start elsewhere, e.g. 1000000).
    #[arg(long, default_value_t = 0)]
    first: u64,
    /// Images per identity.
    #[arg(long, default_value_t = 6)]
    images_per_identity: usize,
    /// Image side in pixels.
    #[arg(long, default_value_t = 64)]
    size: u32,
    /// Seed.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Also write an LFW-format pairs file here (10 folds).
    #[arg(long)]
    pairs: Option<PathBuf>,
    /// Same and different pairs per fold.
    #[arg(long, default_value_t = 60)]
    pairs_per_class: usize,
}

fn main() {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_target(false)
        .init();
    let result = match Cli::parse().task {
        Task::Pack(args) => pack(&args),
        Task::Synth(args) => synth(&args),
    };
    if let Err(err) = result {
        // Causes whose text the error already shows are not repeated.
        let mut text = String::new();
        for cause in err.chain().map(ToString::to_string) {
            if !text.contains(&cause) {
                text = if text.is_empty() {
                    cause
                } else {
                    format!("{text}: {cause}")
                };
            }
        }
        eprintln!("error: {text}");
        std::process::exit(1);
    }
}

fn pack(args: &PackArgs) -> Result<()> {
    let exclude = match &args.exclude {
        Some(path) => pm_data::read_name_list(path, args.exclude_column.as_deref())?,
        None => Default::default(),
    };
    let crop = match &args.landmarks {
        Some(fiducials) => Crop::Landmarks {
            images_root: args.input.clone(),
            fiducials_root: fiducials.clone(),
            margin: args.landmark_margin,
        },
        None => Crop::Center {
            fraction: args.crop_fraction,
        },
    };
    let config = PackConfig {
        exclude,
        min_images: args.min_images,
        preprocess: Preprocess {
            crop,
            size: args.size,
        },
        max_images_per_shard: args.max_images_per_shard,
    };
    config.preprocess.validate()?;
    let report = pm_data::pack_folder(&args.input, &args.output, &config)
        .with_context(|| format!("packing --input {}", args.input.display()))?;
    println!(
        "packed {} identities, {} images into {} shard(s) at {}",
        report.identities,
        report.images,
        report.shards,
        args.output.display()
    );
    println!(
        "left out: {} excluded identities, {} identities with fewer than {} images",
        report.excluded_identities, report.too_few_images, args.min_images
    );
    println!("skipped files: {}", report.skipped.len());
    for skipped in &report.skipped {
        println!("  {}: {}", skipped.path.display(), skipped.reason);
    }
    Ok(())
}

fn synth(args: &SynthArgs) -> Result<()> {
    if args.identities == 0 {
        bail!("--identities must be at least 1");
    }
    let config = SynthConfig {
        seed: args.seed,
        size: args.size,
        ..SynthConfig::default()
    };
    let identities = args.first..args.first + args.identities;
    let written = pm_data::write_synth_folder(
        &config,
        &args.output,
        identities.clone(),
        args.images_per_identity,
    )?;
    println!(
        "wrote {written} images of {} identities to {}",
        args.identities,
        args.output.display()
    );
    if let Some(pairs) = &args.pairs {
        pm_data::write_synth_pairs(
            pairs,
            identities,
            args.images_per_identity,
            10,
            args.pairs_per_class,
            args.seed,
        )?;
        println!("wrote pairs to {}", pairs.display());
    }
    Ok(())
}
