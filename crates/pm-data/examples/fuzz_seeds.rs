//! Writes the seed inputs of the fuzz targets (`fuzz/seeds/`): small valid shards (raw and
//! encoded, several identities) and small RecordIO files (whole, split and old-magic records),
//! so the fuzzer starts from inputs that pass the first checks.
//!
//! ```text
//! cargo run -p pm-data --example fuzz_seeds -- fuzz/seeds
//! ```

#![allow(
    clippy::print_stdout,
    reason = "a command-line example reports on stdout"
)]

use std::path::Path;

use anyhow::{Context, Result};
use pm_data::{ShardWriter, Storage, record_payload, write_record};

fn main() -> Result<()> {
    let out = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "fuzz/seeds".into());
    let out = Path::new(&out);
    let shards = out.join("shard_parser");
    let rec = out.join("recordio_chunks");
    std::fs::create_dir_all(&shards)?;
    std::fs::create_dir_all(&rec)?;

    let raw = [
        (0, vec![1u8; 12]),
        (0, vec![2; 12]),
        (3, vec![3; 12]),
        (7, vec![4; 12]),
    ];
    write_shard(&shards.join("raw.pms"), Storage::Raw, &raw)?;
    let encoded = [(1, vec![9u8; 5]), (1, vec![8; 17]), (2, vec![7; 1])];
    write_shard(&shards.join("encoded.pms"), Storage::Encoded, &encoded)?;
    write_shard(&shards.join("empty.pms"), Storage::Raw, &[])?;

    for (name, old_magic) in [("current.rec", false), ("old.rec", true)] {
        let mut bytes = Vec::new();
        write_record(
            &mut bytes,
            &record_payload(&[3.0, 5.0], 0.0, 0, 1, &[]),
            old_magic,
        );
        write_record(
            &mut bytes,
            &record_payload(&[], 1.0, 1, 0, b"\xFF\xD8 jpeg"),
            old_magic,
        );
        // A payload holding the magic at an aligned offset is split into three chunks.
        let mut split = b"\xFF\xD8\x00\x00".to_vec();
        split.extend(0xCED7_230Au32.to_le_bytes());
        split.extend(b"tail");
        write_record(
            &mut bytes,
            &record_payload(&[2.0], 2.0, 2, 0, &split),
            old_magic,
        );
        std::fs::write(rec.join(name), bytes).with_context(|| name.to_owned())?;
    }
    println!("seeds written to {}", out.display());
    Ok(())
}

fn write_shard(path: &Path, storage: Storage, records: &[(u32, Vec<u8>)]) -> Result<()> {
    let mut writer = ShardWriter::create(path, 2, 2, storage)?;
    for (label, bytes) in records {
        writer.push(*label, bytes)?;
    }
    writer.finish()?;
    Ok(())
}
