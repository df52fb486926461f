//! Shared helpers of the workspace benchmarks (`benches/benches/*.rs`): timing and tables.
//!
//! Every benchmark prints a table whose rows are ratios against a reference measured in the
//! same run (a memory copy, a single-thread loop), so the numbers compare across machines.

use std::path::Path;
use std::time::{Duration, Instant};

use pm_data::{PackConfig, PackReport, Preprocess, Storage, SynthConfig};

/// Runs `f` until at least `min_time` has passed (and at least once); returns the mean
/// duration of one call.
pub fn time_per_call(min_time: Duration, mut f: impl FnMut()) -> Duration {
    f(); // warm-up: page in the maps, fill caches
    let start = Instant::now();
    let mut calls = 0u32;
    while calls == 0 || start.elapsed() < min_time {
        f();
        calls += 1;
    }
    start.elapsed() / calls
}

/// Resident memory of this process from `/proc/self/status`: (anonymous, file-backed) in KiB;
/// `None` where the file does not exist (not Linux).
pub fn resident_kib() -> Option<(u64, u64)> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let field = |name: &str| {
        status
            .lines()
            .find(|l| l.starts_with(name))?
            .split_whitespace()
            .nth(1)?
            .parse::<u64>()
            .ok()
    };
    Some((field("RssAnon:")?, field("RssFile:")?))
}

/// Formats a count per second with a thousands separator.
pub fn per_second(count: f64, time: Duration) -> String {
    let rate = count / time.as_secs_f64().max(1e-12);
    let whole = rate.round() as u64;
    let digits = whole.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// Packs synthetic identities `0..identities`, `per_identity` images of `size × size` each,
/// into a new dataset at `out` (the input every data benchmark starts from).
///
/// # Errors
/// The errors of [`pm_data::pack_synth`].
pub fn pack_synthetic(
    out: &Path,
    (identities, per_identity, size): (u64, usize, u32),
    max_images_per_shard: usize,
    storage: Storage,
) -> pm_data::Result<PackReport> {
    let synth = SynthConfig {
        size,
        ..SynthConfig::default()
    };
    let config = PackConfig {
        exclude: Default::default(),
        min_images: 1,
        preprocess: Preprocess {
            crop: pm_data::Crop::Center { fraction: 1.0 },
            size,
        },
        max_images_per_shard,
        storage,
        append: false,
    };
    pm_data::pack_synth(&synth, 0..identities, per_identity, out, &config)
}
