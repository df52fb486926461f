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
use pm_train::scale::{ScaleConfig, run_scale};
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
    /// Benchmarks that write a table and a chart.
    Bench {
        /// Which benchmark.
        #[command(subcommand)]
        bench: Bench,
    },
}

/// Benchmarks of `pm bench`.
#[derive(Debug, Subcommand)]
enum Bench {
    /// Step time and peak memory of the classifier heads for N identities (each case runs in
    /// a child process of this binary); writes `scale.md` and `scale.svg`.
    Scale {
        /// Numbers of identities N, comma-separated.
        #[arg(long, value_delimiter = ',', default_values_t = ScaleConfig::default().identities)]
        identities: Vec<u64>,
        /// Prototype Memory sizes M, comma-separated.
        #[arg(long, value_delimiter = ',', default_values_t = ScaleConfig::default().memory_sizes)]
        memory_sizes: Vec<usize>,
        /// Batch size B.
        #[arg(long, default_value_t = ScaleConfig::default().batch)]
        batch: usize,
        /// Embedding dimension d.
        #[arg(long, default_value_t = ScaleConfig::default().dim)]
        dim: usize,
        /// Timed steps per case (after one warm-up step).
        #[arg(long, default_value_t = ScaleConfig::default().steps)]
        steps: usize,
        /// Skip cases estimated above this many GiB (default: 80% of RAM, at most what is free).
        #[arg(long)]
        memory_budget_gib: Option<f64>,
        /// Output folder for scale.md and scale.svg.
        #[arg(long, default_value = "docs/scale")]
        out_dir: PathBuf,
    },
}

fn main() {
    // A child process of `pm bench scale` measures one case and reports on stdout.
    if let Some(line) = pm_train::scale::child_main() {
        match line {
            Ok(line) => println!("{line}"),
            Err(err) => {
                eprintln!("error: {err}");
                std::process::exit(1);
            }
        }
        return;
    }
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
        Command::Bench { bench } => match bench {
            Bench::Scale {
                identities,
                memory_sizes,
                batch,
                dim,
                steps,
                memory_budget_gib,
                out_dir,
            } => {
                let defaults = ScaleConfig::default();
                let config = ScaleConfig {
                    identities,
                    memory_sizes,
                    batch,
                    dim,
                    steps,
                    memory_budget_bytes: memory_budget_gib
                        .map_or(defaults.memory_budget_bytes, |g| {
                            (g * (1u64 << 30) as f64) as u64
                        }),
                    ..defaults
                };
                bench_scale(&config, &out_dir)
            }
        },
    }
}

fn bench_scale(config: &ScaleConfig, out_dir: &std::path::Path) -> Result<()> {
    init_logging(None)?;
    let report = run_scale(config, |result| {
        tracing::info!(
            head = %result.case.head.label(),
            n = result.case.identities,
            outcome = ?result.outcome,
            "scale case done"
        );
    })?;
    std::fs::create_dir_all(out_dir).with_context(|| format!("creating {}", out_dir.display()))?;
    let table = report.table();
    for (name, text) in [("scale.md", &table), ("scale.svg", &report.chart())] {
        let path = out_dir.join(name);
        std::fs::write(&path, text).with_context(|| format!("writing {}", path.display()))?;
    }
    print!("{table}");
    println!("wrote {}", out_dir.join("scale.{md,svg}").display());
    Ok(())
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
    /// The same, one cosine panel per run side by side on a shared axis (e.g. Partial FC and
    /// Prototype Memory), then the ages.
    ObsolescenceByRun,
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
        Chart::ObsolescenceByRun => pm_train::plot::obsolescence_by_run_chart(&runs)?,
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
