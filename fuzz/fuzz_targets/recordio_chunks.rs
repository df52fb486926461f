//! Fuzz target for the RecordIO chunk and record-header parser:
//! [`pm_data::check_recordio_bytes`] must return `Ok` or `Err` for any bytes, never panic or
//! allocate in proportion to a length field.
//!
//! Run with `cargo +nightly fuzz run recordio_chunks fuzz/seeds/recordio_chunks` from the
//! workspace root.

#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = pm_data::check_recordio_bytes(data, Path::new("fuzz.rec"));
});
