//! `pm`: train a face encoder with Prototype Memory, verify it, or run the embedded demo.
//!
//! The binary only parses arguments, installs logging and progress, and calls the libraries.

#![allow(
    clippy::print_stdout,
    reason = "a command-line program reports on stdout"
)]

mod eval;
mod progress;

use std::path::PathBuf;

use std::io::IsTerminal;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use pm_train::demo::{DemoConfig, run_demo};
use pm_train::{TrainConfig, Trainer};
use tracing_subscriber::EnvFilter;
use tracing_subscriber::prelude::*;

/// Prototype Memory face training.
#[derive(Debug, Parser)]
#[command(name = "pm", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Train an encoder from a TOML configuration.
    Train {
        /// The run configuration (see configs/).
        #[arg(long)]
        config: PathBuf,
        /// Continue from the newest checkpoint of the run directory.
        #[arg(long)]
        resume: bool,
        /// Stop after this many steps (the run can be resumed later).
        #[arg(long)]
        max_steps: Option<u64>,
    },
    /// Verify a trained run on a protocol (LFW pairs, CFP-FF, CFP-FP).
    Eval(eval::EvalArgs),
    /// Draw a chart of training runs as SVG (e.g. `pm plot obsolescence --run M=256=runs/a`).
    Plot {
        /// Which chart.
        #[arg(value_enum)]
        chart: Chart,
        /// A run to draw, as `LABEL=RUN_DIR` (repeat for several runs).
        #[arg(long = "run", required = true)]
        runs: Vec<String>,
        /// Output SVG file.
        #[arg(long)]
        out: PathBuf,
    },
    /// Check every record of a packed dataset and print per-shard statistics.
    Inspect {
        /// Packed dataset folder (made by `cargo xtask pack`).
        dataset: PathBuf,
        /// Checksums only: skip the test decode of encoded images.
        #[arg(long)]
        no_decode: bool,
        /// Print the report as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Render synthetic faces, train on some, verify on held-out ones: no download needed.
    Demo {
        /// Output directory (replaced if it holds an earlier demo).
        #[arg(long, default_value = "runs/demo")]
        out: PathBuf,
        /// Training steps.
        #[arg(long, default_value_t = DemoConfig::default().steps)]
        steps: u64,
        /// Synthetic training identities.
        #[arg(long, default_value_t = DemoConfig::default().train_identities)]
        identities: u64,
        /// Seed of the whole demo.
        #[arg(long, default_value_t = 0)]
        seed: u64,
    },
}

fn main() {
    let cli = Cli::parse();
    if let Err(err) = run(cli) {
        eprintln!("error: {}", error_chain(&err));
        std::process::exit(1);
    }
}

/// The error and its causes, skipping a cause whose text its parent already shows.
fn error_chain(err: &anyhow::Error) -> String {
    let mut text = String::new();
    for cause in err.chain() {
        let message = cause.to_string();
        if !text.contains(&message) {
            if !text.is_empty() {
                text.push_str(": ");
            }
            text.push_str(&message);
        }
    }
    text
}

fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Train {
            config,
            resume,
            max_steps,
        } => train(&config, resume, max_steps),
        Command::Eval(args) => {
            init_logging(None)?;
            eval::run(&args)
        }
        Command::Plot { chart, runs, out } => plot(chart, &runs, &out),
        Command::Inspect {
            dataset,
            no_decode,
            json,
        } => inspect(&dataset, no_decode, json),
        Command::Demo {
            out,
            steps,
            identities,
            seed,
        } => demo(out, steps, identities, seed),
    }
}

fn train(config_path: &std::path::Path, resume: bool, max_steps: Option<u64>) -> Result<()> {
    let config = TrainConfig::from_file(config_path)?;
    std::fs::create_dir_all(&config.run.dir)
        .with_context(|| format!("creating {}", config.run.dir.display()))?;
    init_logging(Some(config.run.dir.join("train.log")))?;
    let run_dir = config.run.dir.clone();
    let mut trainer = Trainer::new(config, resume)?;
    tracing::info!(config = %config_path.display(), run = %run_dir.display(), "resolved configuration written to the run directory");
    let summary = trainer.run(&mut progress::Bar::new("train"), max_steps)?;
    println!("{}", serde_json::to_string_pretty(&summary)?);
    Ok(())
}

/// Charts `pm plot` draws.
#[derive(Clone, Copy, Debug, clap::ValueEnum)]
enum Chart {
    /// Cosine of the stored rows to the current encoder's prototypes, and their age, by step.
    Obsolescence,
}

fn plot(chart: Chart, runs: &[String], out: &std::path::Path) -> Result<()> {
    let runs = runs
        .iter()
        .map(|run| match run.rsplit_once('=') {
            Some((label, dir)) if !label.is_empty() => Ok((label.to_owned(), PathBuf::from(dir))),
            _ => Err(anyhow::anyhow!("--run {run}: expected LABEL=RUN_DIR")),
        })
        .collect::<Result<Vec<_>>>()?;
    let svg = match chart {
        Chart::Obsolescence => pm_train::plot::obsolescence_chart(&runs)?,
    };
    std::fs::write(out, svg).with_context(|| format!("writing {}", out.display()))?;
    println!("wrote {}", out.display());
    Ok(())
}

fn inspect(dataset: &std::path::Path, no_decode: bool, json: bool) -> Result<()> {
    init_logging(None)?;
    let report = pm_data::verify_dataset(dataset, !no_decode)
        .with_context(|| format!("inspecting {}", dataset.display()))?;
    match json {
        true => println!("{}", serde_json::to_string_pretty(&report)?),
        false => println!("{report}"),
    }
    if !report.is_clean() {
        anyhow::bail!("{}: damaged records found", dataset.display());
    }
    Ok(())
}

fn demo(out: PathBuf, steps: u64, identities: u64, seed: u64) -> Result<()> {
    init_logging(None)?;
    let config = DemoConfig {
        out,
        steps,
        train_identities: identities,
        seed,
        ..DemoConfig::default()
    };
    let report = run_demo(&config, &mut progress::Bar::new("demo"))?;
    println!(
        "Prototype Memory demo: {} synthetic identities ({} images) trained for {} steps in {:.0} s; loss {:.3} -> {:.3}",
        report.pack.identities,
        report.pack.images,
        report.train.steps,
        report.train.seconds,
        report.train.first_loss,
        report.train.last_loss
    );
    println!(
        "Verification on {} held-out synthetic identities:",
        config.test_identities
    );
    print!("{}", pm_eval::format_table(&report.results));
    println!("Report: {}", config.out.join("demo.json").display());
    Ok(())
}

/// Logs to stderr (level from `RUST_LOG`, default info) and, for runs, to a file too.
fn init_logging(file: Option<PathBuf>) -> Result<()> {
    let filter = || EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let stderr = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .with_target(false)
        .with_filter(filter());
    let file_layer = match file {
        Some(path) => {
            let log = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&path)
                .with_context(|| format!("opening log file {}", path.display()))?;
            Some(
                tracing_subscriber::fmt::layer()
                    .with_writer(std::sync::Mutex::new(log))
                    .with_ansi(false)
                    .with_filter(filter()),
            )
        }
        None => None,
    };
    tracing_subscriber::registry()
        .with(stderr)
        .with(file_layer)
        .init();
    Ok(())
}
