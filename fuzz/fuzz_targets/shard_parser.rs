//! Fuzz target for the shard parser: [`pm_data::check_shard_bytes`] must return `Ok` or `Err`
//! for any bytes, never panic, overflow or allocate in proportion to a header field.
//!
//! Run with `cargo +nightly fuzz run shard_parser` from `fuzz/`.

#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // Only the absence of a panic is checked; an accepted shard needs nothing more.
    let _ = pm_data::check_shard_bytes(data, Path::new("fuzz.pms"));
});
