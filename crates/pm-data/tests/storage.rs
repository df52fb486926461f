//! Public-API tests of shard format version 2: encoded storage, the shard writer's parking and
//! label offsets, packs written in parallel, appends, whole-dataset verification, the loader's
//! replacement of unreadable records, and CMYK JPEG input.
//!
//! Every image is generated here (tiny PNGs and JPEGs), so each test runs in well under a second.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use image::{ImageBuffer, Rgb, RgbImage};
use pm_data::{
    Crop, Dataset, Error, Manifest, PackConfig, Pick, Preprocess, SHARD_VERSION, Shard,
    ShardWriter, Storage, assemble, pack_folder, rgb_record, verify_dataset,
};

/// Length of the shard header: the data section starts here.
const HEADER_LEN: usize = 80;

/// Side of the packed crops, unless a test says otherwise.
const SIDE: u32 = 8;

/// Largest per-channel error accepted from a JPEG round trip at the packer's quality (smooth
/// 32×32 gradients come back within 2).
const JPEG_TOLERANCE: u8 = 6;

/// Bytes of one raw record of `SIDE × SIDE` pixels.
const RAW_LEN: usize = (SIDE * SIDE * 3) as usize;

/// A pack of whole images (centre crop of the full square) to `size × size`.
fn config(size: u32, storage: Storage) -> PackConfig {
    PackConfig {
        exclude: BTreeSet::new(),
        min_images: 1,
        preprocess: Preprocess {
            crop: Crop::Center { fraction: 1.0 },
            size,
        },
        max_images_per_shard: 6,
        storage,
        append: false,
    }
}

fn put_png(root: &Path, rel: &str, img: &RgbImage) {
    let path = root.join(rel);
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    img.save(path).unwrap();
}

fn solid(colour: [u8; 3]) -> RgbImage {
    RgbImage::from_pixel(SIDE, SIDE, Rgb(colour))
}

/// Writes `<root>/<name>/<k>.png` in the given colours for each identity.
fn put_tree(root: &Path, identities: &[(&str, Vec<[u8; 3]>)]) {
    for (name, colours) in identities {
        for (k, &colour) in colours.iter().enumerate() {
            put_png(root, &format!("{name}/{k}.png"), &solid(colour));
        }
    }
}

/// Every file in `dir` with its bytes, by name.
fn files(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .map(|p| {
            (
                p.file_name().unwrap().to_str().unwrap().to_owned(),
                std::fs::read(&p).unwrap(),
            )
        })
        .collect()
}

/// Largest per-channel difference between two pixel buffers of the same length.
fn max_diff(a: &[u8], b: &[u8]) -> u8 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(x, y)| x.abs_diff(*y))
        .max()
        .unwrap_or(0)
}

/// True when every pixel of `pixels` is within `tolerance` of `colour` in every channel.
fn all_near(pixels: &[u8], colour: [u8; 3], tolerance: u8) -> bool {
    pixels.chunks_exact(3).all(|px| {
        px.iter()
            .zip(colour)
            .all(|(&a, b)| a.abs_diff(b) <= tolerance)
    })
}

/// The stored pixels of every label's records, in label order.
fn records_by_label(dataset: &Dataset) -> Vec<Vec<Vec<u8>>> {
    (0..dataset.n_identities() as u32)
        .map(|label| {
            let ids = dataset.identity(label).unwrap();
            (ids.first..ids.first + u64::from(ids.count))
                .map(|record| rgb_record(dataset, ids.shard, record).unwrap().into_owned())
                .collect()
        })
        .collect()
}

/// Flips one byte inside `record` of a raw `SIDE × SIDE` shard, in place.
fn corrupt_raw_record(shard: &Path, record: u64) {
    let mut bytes = std::fs::read(shard).unwrap();
    bytes[HEADER_LEN + record as usize * RAW_LEN + 5] ^= 0x5A;
    std::fs::write(shard, bytes).unwrap();
}

/// Bytes of `img` encoded as `format`.
fn encode(img: &RgbImage, format: image::ImageFormat) -> Vec<u8> {
    let mut bytes = Vec::new();
    img.write_to(&mut std::io::Cursor::new(&mut bytes), format)
        .unwrap();
    bytes
}

// ---------------------------------------------------------------------------------------------
// Encoded storage

/// A smooth 32×32 gradient, different for each (identity, image).
fn gradient(identity: u32, image: u32) -> RgbImage {
    ImageBuffer::from_fn(32, 32, |x, y| {
        Rgb([
            (x * 6 + identity * 20) as u8,
            (y * 6 + image * 30) as u8,
            ((x + y) * 3 + 20) as u8,
        ])
    })
}

#[test]
fn encoded_records_decode_close_to_raw_ones_and_take_less_space() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("root");
    for identity in 0..3 {
        for image in 0..2 {
            put_png(
                &root,
                &format!("id{identity}/{image}.png"),
                &gradient(identity, image),
            );
        }
    }
    let (raw_dir, encoded_dir) = (dir.path().join("raw"), dir.path().join("encoded"));
    pack_folder(&root, &raw_dir, &config(32, Storage::Raw)).unwrap();
    pack_folder(&root, &encoded_dir, &config(32, Storage::Encoded)).unwrap();
    let (raw, encoded) = (
        Dataset::open(&raw_dir).unwrap(),
        Dataset::open(&encoded_dir).unwrap(),
    );

    assert_eq!(raw.manifest().identities, encoded.manifest().identities);
    assert!(raw.shards().iter().all(|s| s.storage() == Storage::Raw));
    assert!(
        encoded
            .shards()
            .iter()
            .all(|s| s.storage() == Storage::Encoded)
    );
    let (raw_records, encoded_records) = (records_by_label(&raw), records_by_label(&encoded));
    assert_eq!(raw_records.len(), 3);
    for (label, (raw_images, encoded_images)) in
        raw_records.iter().zip(&encoded_records).enumerate()
    {
        assert_eq!(raw_images.len(), encoded_images.len(), "label {label}");
        for (image, (r, e)) in raw_images.iter().zip(encoded_images).enumerate() {
            assert_eq!(r.len(), 32 * 32 * 3);
            let diff = max_diff(r, e);
            assert!(
                diff <= JPEG_TOLERANCE,
                "label {label} image {image}: JPEG is off by {diff}"
            );
        }
    }
    // The two identities' gradients differ by more than the tolerance: the check can fail.
    assert!(max_diff(&raw_records[0][0], &encoded_records[2][0]) > JPEG_TOLERANCE);

    let stored = |d: &Dataset| d.shards().iter().map(Shard::data_len).sum::<u64>();
    let (raw_bytes, encoded_bytes) = (stored(&raw), stored(&encoded));
    assert_eq!(raw_bytes, 6 * 32 * 32 * 3);
    assert!(
        encoded_bytes < raw_bytes,
        "encoded {encoded_bytes} B, raw {raw_bytes} B"
    );
    let shard = &encoded.shards()[0];
    assert_eq!(
        shard.record(0).unwrap().get(..2),
        Some(&[0xFF, 0xD8][..]),
        "a JPEG"
    );
}

#[test]
fn writer_round_trips_encoded_records_of_any_length_and_rejects_empty_ones() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("enc.pms");
    let records: [(u32, Vec<u8>); 4] = [
        (0, vec![7]),
        (0, (0..=255).collect()),
        (3, b"short".to_vec()),
        (3, vec![0xAB; 1000]),
    ];
    let mut writer = ShardWriter::create(&path, 4, 4, Storage::Encoded).unwrap();
    for (label, bytes) in &records {
        writer.push(*label, bytes).unwrap();
    }
    let err = writer.push(3, &[]).unwrap_err();
    assert!(matches!(err, Error::Record { record: 4, .. }), "{err}");
    assert_eq!(writer.len(), 4);
    writer.finish().unwrap();

    let shard = Shard::open(&path).unwrap();
    assert_eq!(shard.storage(), Storage::Encoded);
    assert_eq!(shard.len(), 4);
    assert_eq!(
        shard.data_len(),
        records.iter().map(|(_, b)| b.len() as u64).sum::<u64>()
    );
    for (i, (label, bytes)) in (0u64..).zip(&records) {
        assert_eq!(shard.label(i).unwrap(), *label, "record {i}");
        assert_eq!(shard.record(i).unwrap(), bytes.as_slice(), "record {i}");
    }
    assert_eq!(
        shard.identities().collect::<Vec<_>>(),
        [(0, 0, 2), (3, 2, 2)]
    );
}

#[test]
fn parked_writer_finishes_with_offset_labels() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("parked.pms");
    let mut writer = ShardWriter::create(&path, 1, 2, Storage::Raw).unwrap();
    let labels = [0u32, 0, 1, 2, 2, 2];
    for (i, &label) in (0u8..).zip(&labels) {
        writer.push(label, &[i; 6]).unwrap();
    }
    writer.park().unwrap();
    assert!(!path.exists(), "a parked shard is not finished");

    let overflow = writer.offset_labels(u32::MAX - 1).unwrap_err();
    assert!(matches!(overflow, Error::Config(_)), "{overflow}");
    writer.offset_labels(40).unwrap();
    writer.finish().unwrap();

    let shard = Shard::open(&path).unwrap();
    for (i, &label) in (0u64..).zip(&labels) {
        assert_eq!(shard.label(i).unwrap(), label + 40, "record {i}");
        assert_eq!(shard.record(i).unwrap(), [i as u8; 6], "record {i}");
    }
    assert_eq!(
        shard.identities().collect::<Vec<_>>(),
        [(40, 0, 2), (41, 2, 1), (42, 3, 3)]
    );
}

#[test]
fn a_refused_push_leaves_the_parked_writer_consistent() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("parked.pms");
    let mut writer = ShardWriter::create(&path, 1, 1, Storage::Raw).unwrap();
    writer.push(0, &[1, 2, 3]).unwrap();
    writer.park().unwrap();
    assert!(
        writer.push(1, &[4, 5, 6]).is_err(),
        "a parked writer takes no record"
    );
    assert_eq!(writer.n_identities(), 1);
    writer.finish().unwrap();

    let shard = Shard::open(&path).unwrap();
    assert_eq!(shard.identities().collect::<Vec<_>>(), [(0, 0, 1)]);
}

// ---------------------------------------------------------------------------------------------
// Packing in parallel and appending

/// The colour of image `k` of identity `i` (every one distinct).
fn id_colour(i: usize, k: usize) -> [u8; 3] {
    [(i * 6) as u8, (k * 60) as u8, 200]
}

/// 40 identities `p00`..`p39` with 1 to 4 images each, created out of name order.
fn forty_identities(root: &Path) -> Vec<(String, Vec<[u8; 3]>)> {
    let identities: Vec<(String, Vec<[u8; 3]>)> = (0..40)
        .map(|i| {
            (
                format!("p{i:02}"),
                (0..i % 4 + 1).map(|k| id_colour(i, k)).collect(),
            )
        })
        .collect();
    for step in 0..40 {
        let (name, colours) = &identities[(step * 7) % 40];
        put_tree(root, &[(name.as_str(), colours.clone())]);
    }
    identities
}

#[test]
fn parallel_pack_gives_name_ordered_labels_and_identical_files_every_time() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("root");
    let identities = forty_identities(&root);
    let n_images: usize = identities.iter().map(|(_, c)| c.len()).sum();

    let out = dir.path().join("packed");
    let report = pack_folder(&root, &out, &config(SIDE, Storage::Raw)).unwrap();
    assert_eq!(
        (report.identities, report.images, report.first_label),
        (40, n_images, 0)
    );
    assert!(
        report.shards >= n_images.div_ceil(6),
        "{} shards",
        report.shards
    );
    let dataset = Dataset::open(&out).unwrap();
    let names: Vec<&String> = identities.iter().map(|(name, _)| name).collect();
    assert_eq!(
        dataset.manifest().identities.iter().collect::<Vec<_>>(),
        names
    );

    let records = records_by_label(&dataset);
    for ((name, colours), stored) in identities.iter().zip(&records) {
        assert_eq!(stored.len(), colours.len(), "{name}");
        for (pixels, &colour) in stored.iter().zip(colours) {
            assert!(all_near(pixels, colour, 0), "{name}: expected {colour:?}");
        }
    }
    let mut shard_of_label: BTreeMap<u32, usize> = BTreeMap::new();
    for (s, shard) in dataset.shards().iter().enumerate() {
        assert!(
            shard.len() <= 6 || shard.n_identities() == 1,
            "shard {s} is too large"
        );
        for (label, _, _) in shard.identities() {
            assert_eq!(
                shard_of_label.insert(label, s),
                None,
                "label {label} in two shards"
            );
        }
    }
    assert_eq!(
        shard_of_label.keys().copied().collect::<Vec<_>>(),
        (0..40).collect::<Vec<_>>()
    );

    let again = dir.path().join("again");
    pack_folder(&root, &again, &config(SIDE, Storage::Raw)).unwrap();
    assert_eq!(files(&out), files(&again), "two packs of one tree differ");
}

/// Packs `identities` as a new dataset (or appended, with `append`) at `out`.
fn pack_tree(
    dir: &Path,
    tree: &str,
    identities: &[(&str, Vec<[u8; 3]>)],
    out: &Path,
    append: bool,
) -> pm_data::Result<pm_data::PackReport> {
    let root = dir.join(tree);
    put_tree(&root, identities);
    let config = PackConfig {
        append,
        max_images_per_shard: 2,
        ..config(SIDE, Storage::Raw)
    };
    pack_folder(&root, out, &config)
}

#[test]
fn append_continues_the_labels_and_keeps_the_old_records() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("packed");
    let tree_a = [
        ("ann", vec![[200, 0, 0], [190, 10, 0]]),
        ("bob", vec![[0, 200, 0]]),
    ];
    let tree_b = [
        ("cat", vec![[0, 0, 200]]),
        ("dan", vec![[90, 90, 90], [60, 60, 60]]),
    ];
    pack_tree(dir.path(), "a", &tree_a, &out, false).unwrap();
    let before = files(&out);

    let report = pack_tree(dir.path(), "b", &tree_b, &out, true).unwrap();
    assert_eq!(
        (report.first_label, report.identities, report.images),
        (2, 2, 3)
    );
    let after = files(&out);
    for (name, bytes) in before.iter().filter(|(name, _)| name.ends_with(".pms")) {
        assert_eq!(after.get(name), Some(bytes), "{name} changed");
    }
    assert_eq!(after.len(), before.len() + report.shards);

    let dataset = Dataset::open(&out).unwrap();
    assert_eq!(dataset.manifest().identities, ["ann", "bob", "cat", "dan"]);
    assert_eq!(dataset.manifest().sources.len(), 2);
    assert_eq!(dataset.n_images(), 6);
    let records = records_by_label(&dataset);
    for ((name, colours), stored) in tree_a.iter().chain(&tree_b).zip(&records) {
        assert_eq!(stored.len(), colours.len(), "{name}");
        for (pixels, &colour) in stored.iter().zip(colours) {
            assert!(all_near(pixels, colour, 0), "{name}: expected {colour:?}");
        }
    }
}

#[test]
fn failed_appends_leave_the_dataset_as_it_was() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("packed");
    let tree_a = [
        ("ann", vec![[200, 0, 0]]),
        ("bob", vec![[0, 200, 0], [0, 0, 200]]),
    ];
    pack_tree(dir.path(), "a", &tree_a, &out, false).unwrap();
    let before = files(&out);
    let unchanged = |what: &str| {
        assert_eq!(files(&out), before, "after {what}");
        let dataset = Dataset::open(&out).unwrap();
        assert_eq!(
            dataset.manifest().identities,
            ["ann", "bob"],
            "after {what}"
        );
    };

    let clash = [
        ("abe", vec![[1, 2, 3]]),
        ("bob", vec![[4, 5, 6]]),
        ("zed", vec![[7, 8, 9]]),
    ];
    let err = pack_tree(dir.path(), "clash", &clash, &out, true).unwrap_err();
    assert!(
        matches!(&err, Error::Config(what) if what.contains("`bob`")),
        "{err}"
    );
    unchanged("a name clash");

    let fresh = dir.path().join("fresh");
    put_tree(
        &fresh,
        &[
            ("cid", vec![[1, 1, 1], [2, 2, 2]]),
            ("dee", vec![[3, 3, 3]]),
        ],
    );
    let appending = PackConfig {
        append: true,
        max_images_per_shard: 1,
        ..config(SIDE, Storage::Raw)
    };
    let too_few = PackConfig {
        min_images: 3,
        ..appending.clone()
    };
    let err = pack_folder(&fresh, &out, &too_few).unwrap_err();
    assert!(
        matches!(&err, Error::Config(what) if what.contains("no identity")),
        "{err}"
    );
    unchanged("an append that keeps nothing");

    let preprocess = Preprocess {
        size: 2 * SIDE,
        ..appending.preprocess.clone()
    };
    let larger = PackConfig {
        preprocess,
        ..appending.clone()
    };
    let err = pack_folder(&fresh, &out, &larger).unwrap_err();
    let size = format!("{0}×{0}", 2 * SIDE);
    assert!(
        matches!(&err, Error::Config(what) if what.contains(&size)),
        "{err}"
    );
    unchanged("an append of another image size");

    // The shards are finished, then the manifest cannot be replaced: they must go again.
    let blocker = out.join("manifest.json.tmp");
    std::fs::create_dir(&blocker).unwrap();
    let err = pack_folder(&fresh, &out, &appending).unwrap_err();
    assert!(
        matches!(&err, Error::Io { path, .. } if *path == blocker),
        "{err}"
    );
    std::fs::remove_dir(&blocker).unwrap();
    unchanged("an append whose manifest could not be written");

    let empty = dir.path().join("empty");
    std::fs::create_dir(&empty).unwrap();
    let err = pack_folder(&fresh, &empty, &appending).unwrap_err();
    let manifest = empty.join("manifest.json");
    assert!(
        matches!(&err, Error::Io { path, .. } if *path == manifest),
        "{err}"
    );
    assert_eq!(
        std::fs::read_dir(&empty).unwrap().count(),
        0,
        "an append needs a dataset"
    );
}

// ---------------------------------------------------------------------------------------------
// Verification

const RED: [u8; 3] = [220, 20, 20];
const GREEN: [u8; 3] = [20, 220, 20];
const BLUE: [u8; 3] = [20, 20, 220];
const GREY: [u8; 3] = [128, 128, 128];

/// Packs a raw dataset of three identities (3, 1 and 2 images) into `<dir>/packed`.
fn packed_three(dir: &Path) -> PathBuf {
    let out = dir.join("packed");
    let tree = [
        ("ann", vec![RED, GREEN, BLUE]),
        ("bob", vec![GREY]),
        ("cy", vec![BLUE, RED]),
    ];
    pack_tree(dir, "tree", &tree, &out, false).unwrap();
    out
}

/// The shard file and first record of `label`.
fn locate(out: &Path, label: u32) -> (PathBuf, u64) {
    let dataset = Dataset::open(out).unwrap();
    let records = dataset.identity(label).unwrap();
    (
        dataset.shards()[records.shard as usize]
            .path()
            .to_path_buf(),
        records.first,
    )
}

#[test]
fn verify_passes_a_clean_dataset_and_names_a_flipped_record_byte() {
    let dir = tempfile::tempdir().unwrap();
    let out = packed_three(dir.path());
    let report = verify_dataset(&out, true).unwrap();
    assert!(report.is_clean(), "{report}");
    assert_eq!(
        (report.identities, report.images, report.image_size),
        (3, 6, (SIDE, SIDE))
    );
    assert!(
        report.unlisted_files.is_empty(),
        "{:?}",
        report.unlisted_files
    );
    let dataset = Dataset::open(&out).unwrap();
    assert_eq!(report.shards.len(), dataset.shards().len());
    for (stats, shard) in report.shards.iter().zip(dataset.shards()) {
        assert_eq!(
            (stats.records, stats.identities),
            (shard.len(), shard.n_identities())
        );
        assert_eq!(
            (stats.storage, stats.data_bytes),
            (Storage::Raw, shard.data_len())
        );
        assert!(stats.failures.is_empty(), "{:?}", stats.failures);
    }
    let table = report.to_string();
    for name in &dataset.manifest().shards {
        assert!(
            table.contains(name.as_str()),
            "{name} missing from\n{table}"
        );
    }
    drop(dataset);

    let (shard_path, first) = locate(&out, 0);
    corrupt_raw_record(&shard_path, first + 1);
    let report = verify_dataset(&out, false).unwrap();
    assert!(!report.is_clean());
    let name = shard_path.file_name().unwrap().to_str().unwrap();
    for stats in &report.shards {
        let expected = u64::from(stats.name == name);
        assert_eq!(stats.checksum_failures, expected, "{}", stats.name);
        assert_eq!(stats.decode_failures, 0, "{}", stats.name);
    }
    let failures: Vec<&String> = report.shards.iter().flat_map(|s| &s.failures).collect();
    assert_eq!(failures.len(), 1, "{failures:?}");
    assert!(
        failures[0].contains(&format!("record {}", first + 1)),
        "{}",
        failures[0]
    );
    assert!(failures[0].contains(name), "{}", failures[0]);
    assert!(report.to_string().contains(failures[0].as_str()));
}

/// Writes a one-shard encoded dataset of `SIDE × SIDE` images by hand: identity `k` is called
/// `id<k>` and the records are (label, stored bytes).
fn hand_made_encoded_dataset(dir: &Path, records: &[(u32, Vec<u8>)]) {
    std::fs::create_dir_all(dir).unwrap();
    let shard = "shard-00000.pms";
    let mut writer = ShardWriter::create(&dir.join(shard), SIDE, SIDE, Storage::Encoded).unwrap();
    for (label, bytes) in records {
        writer.push(*label, bytes).unwrap();
    }
    writer.finish().unwrap();

    let labels: BTreeSet<u32> = records.iter().map(|(label, _)| *label).collect();
    let manifest = Manifest {
        format_version: SHARD_VERSION,
        height: SIDE,
        width: SIDE,
        n_images: records.len() as u64,
        identities: labels.iter().map(|k| format!("id{k}")).collect(),
        shards: vec![shard.into()],
        preprocess: None,
        sources: vec!["written by hand".into()],
    };
    std::fs::write(
        dir.join("manifest.json"),
        serde_json::to_vec(&manifest).unwrap(),
    )
    .unwrap();
}

#[test]
fn verify_decodes_encoded_records_when_asked_and_lists_unlisted_shards() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("hand");
    let good = encode(&solid(RED), image::ImageFormat::Jpeg);
    let too_large = encode(
        &RgbImage::from_pixel(2 * SIDE, SIDE, Rgb(RED)),
        image::ImageFormat::Png,
    );
    let records = [
        (0, good.clone()),
        (0, b"a valid checksum over bytes that are no image".to_vec()),
        (1, too_large),
        (1, good),
    ];
    hand_made_encoded_dataset(&out, &records);

    let report = verify_dataset(&out, false).unwrap();
    assert!(report.is_clean(), "{report}");
    assert_eq!(
        (
            report.shards[0].decode_failures,
            report.shards[0].checksum_failures
        ),
        (0, 0)
    );

    let report = verify_dataset(&out, true).unwrap();
    assert!(!report.is_clean());
    let stats = &report.shards[0];
    assert_eq!(
        (stats.decode_failures, stats.checksum_failures),
        (2, 0),
        "{report}"
    );
    assert!(
        stats.failures[0].contains("record 1"),
        "{}",
        stats.failures[0]
    );
    assert!(
        stats.failures[1].contains("record 2"),
        "{}",
        stats.failures[1]
    );
    assert!(report.unlisted_files.is_empty());

    std::fs::write(
        out.join("shard-00099.pms"),
        b"left by an interrupted append",
    )
    .unwrap();
    std::fs::write(out.join("notes.txt"), b"not a shard").unwrap();
    let report = verify_dataset(&out, false).unwrap();
    assert_eq!(report.unlisted_files, ["shard-00099.pms"]);
    let table = report.to_string();
    assert!(
        table.contains("shard-00000.pms") && table.contains("shard-00099.pms"),
        "{table}"
    );
}

// ---------------------------------------------------------------------------------------------
// The loader

/// Checks that image `b` of a `SIDE × SIDE` batch is `colour` everywhere.
fn assert_batch_image(batch: &pm_data::Batch, b: usize, colour: [u8; 3]) {
    let plane = (SIDE * SIDE) as usize;
    let image = &batch.images[b * 3 * plane..(b + 1) * 3 * plane];
    for (c, channel) in image.chunks_exact(plane).enumerate() {
        let expected = f32::from(colour[c]) / 127.5 - 1.0;
        let off = channel
            .iter()
            .map(|v| (v - expected).abs())
            .fold(0.0, f32::max);
        assert!(
            off < 1e-6,
            "image {b} channel {c} is off by {off}, expected {colour:?}"
        );
    }
}

#[test]
fn assemble_replaces_an_unreadable_record_by_the_next_image_of_its_identity() {
    let dir = tempfile::tempdir().unwrap();
    let out = packed_three(dir.path());
    let (shard_path, first) = locate(&out, 0);
    corrupt_raw_record(&shard_path, first + 1);

    let dataset = Dataset::open(&out).unwrap();
    let pick = |label, image| Pick {
        label,
        image,
        flip: false,
    };
    let batch = assemble(&dataset, &[pick(0, 1), pick(0, 0), pick(1, 0)], 1).unwrap();
    assert_eq!(batch.labels, [0, 0, 1]);
    assert_batch_image(&batch, 0, BLUE);
    assert_batch_image(&batch, 1, RED);
    assert_batch_image(&batch, 2, GREY);
    assert_eq!(batch.replaced.len(), 1, "{:?}", batch.replaced);
    let message = &batch.replaced[0];
    assert!(
        message.contains(&format!("record {}", first + 1)),
        "{message}"
    );
    assert!(
        message.contains(shard_path.file_name().unwrap().to_str().unwrap()),
        "{message}"
    );
    drop(dataset);

    corrupt_raw_record(&shard_path, first);
    corrupt_raw_record(&shard_path, first + 2);
    let dataset = Dataset::open(&out).unwrap();
    assert!(
        assemble(&dataset, &[pick(1, 0)], 1)
            .unwrap()
            .replaced
            .is_empty()
    );
    let err = assemble(&dataset, &[pick(1, 0), pick(0, 2)], 1).unwrap_err();
    assert!(err.to_string().contains("identity 0"), "{err}");
}

// ---------------------------------------------------------------------------------------------
// Unusual inputs

#[test]
fn non_square_images_are_packed_as_their_centre_square() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("root");
    let wide: RgbImage = ImageBuffer::from_fn(30, 17, |x, y| Rgb([x as u8 * 8, y as u8 * 15, 9]));
    put_png(&root, "w/wide.png", &wide);
    let out = dir.path().join("packed");
    pack_folder(&root, &out, &config(17, Storage::Raw)).unwrap();

    let dataset = Dataset::open(&out).unwrap();
    assert_eq!(dataset.image_size(), (17, 17));
    let record = rgb_record(&dataset, 0, 0).unwrap();
    // Side 17 = the shorter side; (30 - 17) / 2 = 6 columns are cut on the left.
    let expected: RgbImage = ImageBuffer::from_fn(17, 17, |x, y| *wide.get_pixel(x + 6, y));
    assert_eq!(&record[..], expected.as_raw().as_slice());
}

/// A solid `SIDE × SIDE` CMYK JPEG (0 = no ink), written the way Photoshop does: an Adobe
/// APP14 marker and inverted samples.
fn cmyk_jpeg(cmyk: [u8; 4]) -> Vec<u8> {
    let pixels: Vec<u8> = cmyk.iter().copied().cycle().take(RAW_LEN / 3 * 4).collect();
    let mut bytes = Vec::new();
    let (side, cmyk_type) = (SIDE as u16, jpeg_encoder::ColorType::Cmyk);
    jpeg_encoder::Encoder::new(&mut bytes, 95)
        .encode(&pixels, side, side, cmyk_type)
        .unwrap();
    bytes
}

/// The RGB a viewer shows for a CMYK colour without a colour profile: (1 - c)(1 - k), ...
fn cmyk_to_rgb(cmyk: [u8; 4]) -> [u8; 3] {
    let white = 255 - u32::from(cmyk[3]);
    [0, 1, 2].map(|i| (((255 - u32::from(cmyk[i])) * white + 127) / 255) as u8)
}

#[test]
fn cmyk_jpegs_are_packed_in_their_rgb_colours() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("root");
    let cases = [
        ("red", [0, 255, 255, 0]),
        ("green", [255, 0, 255, 0]),
        ("grey", [0, 0, 0, 128]),
        ("brown", [0, 128, 255, 64]),
    ];
    assert_eq!(cmyk_to_rgb(cases[0].1), [255, 0, 0], "red ink makes red");
    for (name, cmyk) in cases {
        let path = root.join(name).join("x1.jpg");
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, cmyk_jpeg(cmyk)).unwrap();
        put_png(&root, &format!("{name}/x2.png"), &solid(BLUE));
    }
    let out = dir.path().join("packed");
    let report = pack_folder(&root, &out, &config(SIDE, Storage::Raw)).unwrap();
    assert!(report.skipped.is_empty(), "{:?}", report.skipped);

    let dataset = Dataset::open(&out).unwrap();
    let mut names: Vec<&str> = cases.iter().map(|(name, _)| *name).collect();
    names.sort_unstable();
    assert_eq!(dataset.manifest().identities, names);
    let records = records_by_label(&dataset);
    for (label, name) in names.iter().enumerate() {
        let cmyk = cases.iter().find(|(n, _)| n == name).unwrap().1;
        let (expected, found) = (cmyk_to_rgb(cmyk), &records[label][0]);
        assert!(
            all_near(found, expected, JPEG_TOLERANCE),
            "{name}: {:?}, expected {expected:?}",
            &found[..3]
        );
        assert!(
            all_near(&records[label][1], BLUE, 0),
            "{name}: the RGB image"
        );
    }
}

#[test]
fn verify_reports_every_damaged_shard_and_goes_on() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("ds");
    let ids = [
        ("a", vec![[200, 0, 0]; 2]),
        ("b", vec![[0, 200, 0]; 2]),
        ("c", vec![[0, 0, 200]; 2]),
    ];
    pack_tree(dir.path(), "tree", &ids, &out, false).unwrap();
    // Three shards of one identity each: break the header of the first, a record of the last.
    let mut first = std::fs::read(out.join("shard-00000.pms")).unwrap();
    first[20] ^= 0xFF;
    std::fs::write(out.join("shard-00000.pms"), first).unwrap();
    corrupt_raw_record(&out.join("shard-00002.pms"), 1);

    let report = pm_data::verify_dataset(&out, true).unwrap();
    assert!(!report.is_clean());
    assert_eq!(report.shards.len(), 3);
    assert!(
        report.shards[0]
            .open_error
            .as_deref()
            .is_some_and(|e| e.contains("checksum"))
    );
    assert!(report.shards[1].open_error.is_none() && report.shards[1].checksum_failures == 0);
    assert_eq!(
        report.shards[2].checksum_failures, 1,
        "the shard after the broken one is read"
    );
    assert!(
        report.dataset_error.is_some(),
        "a shard that does not open: the dataset does not"
    );
    let text = report.to_string();
    assert!(text.contains("shard-00000.pms: cannot be opened"), "{text}");
}

#[test]
fn one_append_at_a_time_and_the_lock_goes_with_it() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("ds");
    pack_tree(dir.path(), "a", &[("a", vec![[1, 2, 3]; 2])], &out, false).unwrap();
    std::fs::write(out.join(".pm-append.lock"), "12345\n").unwrap();
    let err = pack_tree(dir.path(), "b", &[("b", vec![[4, 5, 6]; 2])], &out, true).unwrap_err();
    assert!(err.to_string().contains("lock"), "{err}");
    assert_eq!(Dataset::open(&out).unwrap().n_identities(), 1);

    std::fs::remove_file(out.join(".pm-append.lock")).unwrap();
    pack_tree(dir.path(), "c", &[("c", vec![[7, 8, 9]; 2])], &out, true).unwrap();
    assert!(
        !out.join(".pm-append.lock").exists(),
        "released after the append"
    );
    assert_eq!(Dataset::open(&out).unwrap().n_identities(), 2);
}
