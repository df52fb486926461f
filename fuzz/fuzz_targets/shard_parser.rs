//! Fuzz target for the shard parser: [`pm_data::check_shard_bytes`] must return `Ok` or `Err`
//! for any bytes, never panic, overflow or allocate in proportion to a header field.
//!
//! Each input is parsed twice: as it is, and with its header and index checksums recomputed,
//! so that mutations reach the layout, record-table and identity-table checks behind them
//! (a random mutation almost never keeps a crc32 valid).
//!
//! Run with `cargo +nightly fuzz run shard_parser fuzz/seeds/shard_parser` from the
//! workspace root, or `cargo +nightly fuzz run shard_parser seeds/shard_parser` from `fuzz/`.

#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let path = Path::new("fuzz.pms");
    let _ = pm_data::check_shard_bytes(data, path);
    let _ = pm_data::check_shard_bytes(&with_checksums(data), path);
});

/// `data` with the header crc (bytes 76..80) and, where the header's index range lies inside
/// the input, the index crc (its last 4 bytes) recomputed.
fn with_checksums(data: &[u8]) -> Vec<u8> {
    let mut bytes = data.to_vec();
    if bytes.len() < 80 {
        return bytes;
    }
    let field = |at: usize| u64::from_le_bytes(bytes[at..at + 8].try_into().unwrap_or([0; 8]));
    let (start, len) = (field(56), field(64));
    let end = start.checked_add(len).filter(|&end| end <= bytes.len() as u64 && len >= 4);
    if let Some(end) = end {
        let (start, end) = (start as usize, end as usize);
        let crc = crc32fast::hash(&bytes[start..end - 4]);
        bytes[end - 4..end].copy_from_slice(&crc.to_le_bytes());
    }
    let crc = crc32fast::hash(&bytes[..76]);
    bytes[76..80].copy_from_slice(&crc.to_le_bytes());
    bytes
}
