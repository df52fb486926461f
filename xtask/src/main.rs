//! Workspace tasks, reached as `cargo xtask <task>`:
//! - `pack`: a folder tree `<root>/<identity>/<image>`, a list file or an insightface RecordIO
//!   set into memory-mapped shards (new, or appended to an existing dataset);
//! - `verify`: check every record of a packed dataset and print per-shard statistics;
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
use pm_data::{Crop, PackConfig, Preprocess, Storage, SynthConfig};

#[derive(Debug, Parser)]
#[command(name = "xtask", about = "Dataset packing and other workspace tasks")]
struct Cli {
    #[command(subcommand)]
    task: Task,
}

#[derive(Debug, Subcommand)]
enum Task {
    /// Pack a folder tree, a list file or a RecordIO set into a shard dataset at `<output>`.
    Pack(PackArgs),
    /// Check every record of a packed dataset; print per-shard statistics.
    Verify(VerifyArgs),
    /// Render synthetic identities as `<output>/<name>/<name>_NNNN.jpg`.
    Synth(SynthArgs),
}

#[derive(Debug, clap::Args)]
#[command(group(clap::ArgGroup::new("source").required(true).args(["input", "list", "recordio"])))]
struct PackArgs {
    /// Root folder: one sub-folder per identity.
    #[arg(long)]
    input: Option<PathBuf>,
    /// List file: `path label` per line (paths may hold spaces), or an im2rec `.lst`.
    #[arg(long)]
    list: Option<PathBuf>,
    /// insightface/MXNet RecordIO set: a folder with train.rec, train.idx and property, or the
    /// .rec file. Images are stored at --size if given, else at the size in `property`.
    #[arg(long)]
    recordio: Option<PathBuf>,
    /// Output dataset directory (must not exist or be empty, unless --append).
    #[arg(long)]
    output: PathBuf,
    /// Add the new identities to the dataset at --output.
    #[arg(long)]
    append: bool,
    /// `raw` pixels (fastest to read) or `encoded` images (JPEG as it came from RecordIO,
    /// re-encoded crops otherwise; smallest).
    #[arg(long, value_enum, default_value_t = StorageArg::Raw)]
    storage: StorageArg,
    /// File of identity names to leave out (one per line, or a TSV column with --exclude-column).
    #[arg(long)]
    exclude: Option<PathBuf>,
    /// Column of the --exclude TSV file holding the folder names (e.g. lfw_folder).
    #[arg(long)]
    exclude_column: Option<String>,
    /// Identities with fewer decodable images are left out.
    #[arg(long, default_value_t = 2)]
    min_images: usize,
    /// Output side in pixels (the model's input size) [default: 64; RecordIO: its own size].
    #[arg(long)]
    size: Option<u32>,
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

#[derive(Clone, Copy, Debug, clap::ValueEnum)]
enum StorageArg {
    Raw,
    Encoded,
}

#[derive(Debug, clap::Args)]
struct VerifyArgs {
    /// Packed dataset folder.
    dataset: PathBuf,
    /// Skip the test decode of encoded images (checksums only).
    #[arg(long)]
    no_decode: bool,
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
        Task::Verify(args) => verify(&args),
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
    let crop = match (&args.landmarks, &args.input) {
        (Some(fiducials), Some(input)) => Crop::Landmarks {
            images_root: input.clone(),
            fiducials_root: fiducials.clone(),
            margin: args.landmark_margin,
        },
        (Some(_), None) => bail!("--landmarks needs --input (a folder mirrored by the fiducials)"),
        (None, _) => Crop::Center {
            fraction: args.crop_fraction,
        },
    };
    let config = PackConfig {
        exclude,
        min_images: args.min_images,
        preprocess: Preprocess {
            crop,
            size: args.size.unwrap_or(64),
        },
        max_images_per_shard: args.max_images_per_shard,
        storage: match args.storage {
            StorageArg::Raw => Storage::Raw,
            StorageArg::Encoded => Storage::Encoded,
        },
        append: args.append,
    };
    config.preprocess.validate()?;
    let (report, source) = match (&args.input, &args.list, &args.recordio) {
        (Some(input), _, _) => (pm_data::pack_folder(input, &args.output, &config), input),
        (_, Some(list), _) => (pm_data::pack_list(list, &args.output, &config), list),
        (_, _, Some(rec)) => (
            pm_data::pack_recordio(rec, &args.output, &config, args.size),
            rec,
        ),
        _ => bail!("give one of --input, --list or --recordio"),
    };
    let report = report.with_context(|| format!("packing {}", source.display()))?;
    print_report(&report, args);
    Ok(())
}

fn print_report(report: &pm_data::PackReport, args: &PackArgs) {
    for note in &report.notes {
        println!("note: {note}");
    }
    let first = report.first_label;
    println!(
        "packed {} identities (labels {first}..{}), {} images into {} shard(s) at {}",
        report.identities,
        first + report.identities,
        report.images,
        report.shards,
        args.output.display()
    );
    println!(
        "left out: {} excluded identities, {} identities with fewer than {} images",
        report.excluded_identities, report.too_few_images, args.min_images
    );
    println!("skipped: {}", report.skipped.len());
    for skipped in &report.skipped {
        match skipped.record {
            Some(key) => println!(
                "  {} record {key}: {}",
                skipped.path.display(),
                skipped.reason
            ),
            None => println!("  {}: {}", skipped.path.display(), skipped.reason),
        }
    }
}

fn verify(args: &VerifyArgs) -> Result<()> {
    let report = pm_data::verify_dataset(&args.dataset, !args.no_decode)
        .with_context(|| format!("verifying {}", args.dataset.display()))?;
    println!("{report}");
    if !report.is_clean() {
        bail!("{}: damaged records found", args.dataset.display());
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
