//! Classifier heads at scale: step time and peak resident memory of Prototype Memory (two
//! sizes), the full softmax and Partial FC for 10^3 .. 10^5 identities (batch 256 × 512-d
//! embeddings fed in), each case in a fresh child process of this binary. Ratios are against the
//! same head at the smallest N of the run; `pm bench scale` runs the same library code and
//! writes the table and a chart.
//!
//! ```text
//! cargo bench -p pm-benches --bench head_scale                   # N up to 10^5
//! PM_SCALE_HEAD_MAX=10000000 cargo bench -p pm-benches --bench head_scale
//! ```

#![allow(clippy::print_stdout, reason = "a benchmark prints its table")]

use anyhow::{Result, anyhow};
use pm_train::scale::{ScaleConfig, child_main, run_scale};

fn main() -> Result<()> {
    // The child processes run_scale starts are this binary again: hand over first.
    if let Some(line) = child_main() {
        println!("{}", line.map_err(|e| anyhow!("scale case: {e}"))?);
        return Ok(());
    }
    let max: u64 = std::env::var("PM_SCALE_HEAD_MAX")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100_000);
    let defaults = ScaleConfig::default();
    let config = ScaleConfig {
        identities: defaults
            .identities
            .iter()
            .copied()
            .filter(|&n| n <= max)
            .collect(),
        ..defaults
    };
    let report = run_scale(&config, |result| {
        eprintln!(
            "{} N={}: {:?}",
            result.case.head.label(),
            result.case.identities,
            result.outcome
        );
    })?;
    print!("{}", report.table());
    Ok(())
}
