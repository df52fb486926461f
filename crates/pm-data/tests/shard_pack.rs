//! Public-API tests of the shard format, the dataset reader, preprocessing and the folder
//! packer: round trips, corruption and truncation, and packing a generated image tree.
//!
//! One test packs three real LFW identities; it needs `PM_SHARED_DATA` (the shared data folder)
//! and says so when the variable is unset.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use image::{DynamicImage, ImageBuffer, Luma, Rgb, RgbImage, Rgba};
use pm_data::{
    Crop, Dataset, Error, IdentityRecords, PackConfig, Preprocess, SHARD_VERSION, Shard,
    ShardWriter, Storage, pack_folder,
};
use proptest::prelude::*;

/// Length of the shard header.
const HEADER_LEN: usize = 80;

/// Deterministic filler bytes (xorshift), so a failing case can be replayed from its seed.
fn filler(seed: u64, len: usize) -> Vec<u8> {
    let mut state = seed | 1;
    (0..len)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state >> 24) as u8
        })
        .collect()
}

/// Writes a shard holding `records` (label, pixels) and returns its path.
fn write_shard(dir: &Path, h: u32, w: u32, records: &[(u32, Vec<u8>)]) -> PathBuf {
    let path = dir.join("test.pms");
    let mut writer = ShardWriter::create(&path, h, w, Storage::Raw).unwrap();
    for (label, pixels) in records {
        writer.push(*label, pixels).unwrap();
    }
    writer.finish().unwrap();
    path
}

/// Three records of 2×3 pixels: labels 4, 4, 9.
fn small_shard(dir: &Path) -> (PathBuf, Vec<(u32, Vec<u8>)>) {
    let records: Vec<_> = [4, 4, 9]
        .iter()
        .zip(1..)
        .map(|(&l, s)| (l, filler(s, 18)))
        .collect();
    (write_shard(dir, 2, 3, &records), records)
}

fn flip_byte(path: &Path, offset: usize) -> PathBuf {
    let mut bytes = std::fs::read(path).unwrap();
    bytes[offset] ^= 0x5A;
    let out = path.with_file_name(format!("flipped-{offset}.pms"));
    std::fs::write(&out, bytes).unwrap();
    out
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]

    #[test]
    fn shard_round_trip(
        h in 1u32..5,
        w in 1u32..5,
        runs in prop::collection::vec((0u32..3, 1usize..4), 0..6),
        seed in any::<u64>(),
    ) {
        let dir = tempfile::tempdir().unwrap();
        let record_len = (h * w * 3) as usize;
        let mut records = Vec::new();
        let mut label = 0u32;
        for (gap, count) in &runs {
            label += gap;
            for _ in 0..*count {
                let pixels = filler(seed ^ records.len() as u64, record_len);
                records.push((label, pixels));
            }
        }
        let path = write_shard(dir.path(), h, w, &records);

        let shard = Shard::open(&path).unwrap();
        prop_assert_eq!(shard.len(), records.len() as u64);
        prop_assert_eq!(shard.is_empty(), records.is_empty());
        prop_assert_eq!(shard.image_size(), (h, w));
        for (i, (label, pixels)) in (0u64..).zip(&records) {
            prop_assert_eq!(shard.label(i).unwrap(), *label);
            prop_assert_eq!(shard.record(i).unwrap(), pixels.as_slice());
        }

        let mut expected: Vec<(u32, u64, u32)> = Vec::new();
        for (i, (label, _)) in (0u64..).zip(&records) {
            match expected.last_mut() {
                Some((l, _, count)) if l == label => *count += 1,
                _ => expected.push((*label, i, 1)),
            }
        }
        prop_assert_eq!(shard.identities().collect::<Vec<_>>(), expected);
        prop_assert!(shard.record(records.len() as u64).is_err());
    }
}

/// The loader reads shards from several threads at once.
#[test]
fn readers_are_send_and_sync() {
    fn send_sync<T: Send + Sync>() {}
    send_sync::<Shard>();
    send_sync::<Dataset>();
}

#[test]
fn finished_writer_leaves_no_temporary_and_dropped_writer_leaves_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let (path, _) = small_shard(dir.path());
    assert!(path.exists());
    assert!(!dir.path().join("test.pms.tmp").exists());

    let abandoned = dir.path().join("abandoned.pms");
    let mut writer = ShardWriter::create(&abandoned, 1, 1, Storage::Raw).unwrap();
    writer.push(0, &[1, 2, 3]).unwrap();
    assert!(dir.path().join("abandoned.pms.tmp").exists());
    drop(writer);
    assert!(!abandoned.exists());
    assert!(!dir.path().join("abandoned.pms.tmp").exists());
}

#[test]
fn writer_rejects_wrong_length_and_decreasing_labels() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("w.pms");
    let mut writer = ShardWriter::create(&path, 2, 2, Storage::Raw).unwrap();
    let err = writer.push(0, &[0; 11]).unwrap_err();
    assert!(matches!(err, Error::Record { record: 0, .. }), "{err}");

    writer.push(3, &[0; 12]).unwrap();
    let err = writer.push(2, &[0; 12]).unwrap_err();
    assert!(matches!(err, Error::Record { record: 1, .. }), "{err}");
    assert_eq!(writer.len(), 1);
    assert!(ShardWriter::create(&path, 0, 2, Storage::Raw).is_err());
}

#[test]
fn truncated_shard_is_a_format_error_at_every_length() {
    let dir = tempfile::tempdir().unwrap();
    let (path, _) = small_shard(dir.path());
    let bytes = std::fs::read(&path).unwrap();
    let cut = dir.path().join("cut.pms");
    for len in 0..bytes.len() {
        std::fs::write(&cut, &bytes[..len]).unwrap();
        let result = Shard::open(&cut);
        assert!(
            matches!(result, Err(Error::Format { .. })),
            "length {len}: {:?}",
            result.err()
        );
    }

    let mut longer = bytes.clone();
    longer.push(0);
    std::fs::write(&cut, &longer).unwrap();
    assert!(matches!(Shard::open(&cut), Err(Error::Format { .. })));
}

#[test]
fn flipped_record_byte_names_the_record() {
    let dir = tempfile::tempdir().unwrap();
    let (path, records) = small_shard(dir.path());
    let flipped = flip_byte(&path, HEADER_LEN + 18 + 5);

    let shard = Shard::open(&flipped).unwrap();
    match shard.record(1) {
        Err(Error::Record { path, record, .. }) => {
            assert_eq!(path, flipped);
            assert_eq!(record, 1);
        }
        other => panic!("expected a record error for record 1, got {other:?}"),
    }
    assert_eq!(shard.record(0).unwrap(), records[0].1.as_slice());
    assert_eq!(shard.record(2).unwrap(), records[2].1.as_slice());
}

#[test]
fn every_flipped_header_or_index_byte_is_rejected() {
    let dir = tempfile::tempdir().unwrap();
    let (path, _) = small_shard(dir.path());
    let len = std::fs::read(&path).unwrap().len();
    let index_start = HEADER_LEN + 3 * 18;
    for offset in (0..HEADER_LEN).chain(index_start..len) {
        let result = Shard::open(&flip_byte(&path, offset));
        assert!(
            matches!(result, Err(Error::Format { .. })),
            "byte {offset}: {:?}",
            result.err()
        );
    }
}

#[test]
fn unknown_version_is_named_in_the_error() {
    let dir = tempfile::tempdir().unwrap();
    let (path, _) = small_shard(dir.path());
    let mut bytes = std::fs::read(&path).unwrap();
    bytes[8..12].copy_from_slice(&7u32.to_le_bytes());
    let crc = crc32fast::hash(&bytes[..76]);
    bytes[76..80].copy_from_slice(&crc.to_le_bytes());
    std::fs::write(&path, bytes).unwrap();

    let err = Shard::open(&path).err().unwrap();
    let message = err.to_string();
    assert!(message.contains("version 7"), "{message}");
    assert!(
        message.contains(&format!("version {SHARD_VERSION}")),
        "{message}"
    );
}

#[test]
fn not_a_shard_is_rejected() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("text.pms");
    std::fs::write(&path, vec![b'x'; 200]).unwrap();
    assert!(matches!(
        Shard::open(&path),
        Err(Error::Format { offset: 0, .. })
    ));
}

// ---------------------------------------------------------------------------------------------
// Preprocessing

/// A 20×20 gradient: pixel (x, y) = (10x, 10y, 7).
fn gradient() -> RgbImage {
    ImageBuffer::from_fn(20, 20, |x, y| Rgb([(x * 10) as u8, (y * 10) as u8, 7]))
}

/// Writes `images/id/01.png` (the gradient) and `fid/id/01.txt` holding `landmarks`.
fn landmark_tree(dir: &Path, landmarks: &str) -> (PathBuf, Crop) {
    let image = dir.join("images/id/01.png");
    std::fs::create_dir_all(image.parent().unwrap()).unwrap();
    gradient().save(&image).unwrap();
    std::fs::create_dir_all(dir.join("fid/id")).unwrap();
    std::fs::write(dir.join("fid/id/01.txt"), landmarks).unwrap();
    let crop = Crop::Landmarks {
        images_root: dir.join("images"),
        fiducials_root: dir.join("fid"),
        margin: 0.0,
    };
    (image, crop)
}

#[test]
fn landmark_crop_cuts_the_box() {
    let dir = tempfile::tempdir().unwrap();
    let (image, crop) = landmark_tree(dir.path(), "12,4\n16.0, 8\n\n");
    let out = Preprocess { crop, size: 4 }.load(&image).unwrap();
    let src = gradient();
    for (i, j, pixel) in out.enumerate_pixels() {
        assert_eq!(pixel, src.get_pixel(12 + i, 4 + j), "at ({i}, {j})");
    }
}

#[test]
fn landmark_crop_clamps_outside_pixels_to_the_edge() {
    let dir = tempfile::tempdir().unwrap();
    let (image, crop) = landmark_tree(dir.path(), "17,17\n19,19\n");
    let Crop::Landmarks {
        images_root,
        fiducials_root,
        ..
    } = crop
    else {
        unreachable!()
    };
    let crop = Crop::Landmarks {
        images_root,
        fiducials_root,
        margin: 1.0,
    };

    // Box side 2, margin 1 -> side 6 centred on (18, 18): columns and rows 15..21.
    let out = Preprocess { crop, size: 6 }.load(&image).unwrap();
    let src = gradient();
    assert_eq!(out.get_pixel(0, 0), src.get_pixel(15, 15));
    assert_eq!(out.get_pixel(4, 4), src.get_pixel(19, 19));
    assert_eq!(out.get_pixel(5, 5), src.get_pixel(19, 19));
    assert_eq!(out.get_pixel(5, 0), src.get_pixel(19, 15));
}

#[test]
fn missing_or_malformed_landmark_file_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let (image, crop) = landmark_tree(dir.path(), "1,2\n3;4\n");
    let preprocess = Preprocess { crop, size: 4 };
    let err = preprocess.load(&image).unwrap_err();
    let fid = dir.path().join("fid/id/01.txt");
    assert!(
        matches!(&err, Error::Parse { path, line: 2, .. } if *path == fid),
        "{err}"
    );

    let second = dir.path().join("images/id/02.png");
    gradient().save(&second).unwrap();
    let err = preprocess.load(&second).unwrap_err();
    let missing = dir.path().join("fid/id/02.txt");
    assert!(
        matches!(&err, Error::Io { path, .. } if *path == missing),
        "{err}"
    );
}

#[test]
fn centre_crop_takes_the_middle_square() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("c.png");
    let src: RgbImage = ImageBuffer::from_fn(30, 20, |x, y| Rgb([x as u8, y as u8, 0]));
    src.save(&path).unwrap();
    let out = Preprocess {
        crop: Crop::Center { fraction: 0.5 },
        size: 10,
    }
    .load(&path)
    .unwrap();
    assert_eq!(out.dimensions(), (10, 10));
    assert_eq!(out.get_pixel(0, 0), src.get_pixel(10, 5));
    assert_eq!(out.get_pixel(9, 9), src.get_pixel(19, 14));
}

#[test]
fn gray_rgba_and_16_bit_images_become_rgb8() {
    let dir = tempfile::tempdir().unwrap();
    let gray16: ImageBuffer<Luma<u16>, Vec<u16>> = ImageBuffer::from_pixel(9, 7, Luma([65535]));
    let rgba: ImageBuffer<Rgba<u8>, Vec<u8>> = ImageBuffer::from_pixel(9, 7, Rgba([255; 4]));
    let gray8: ImageBuffer<Luma<u8>, Vec<u8>> = ImageBuffer::from_pixel(9, 7, Luma([255]));
    let files = [
        ("g16.png", DynamicImage::from(gray16)),
        ("rgba.png", rgba.into()),
        ("g8.jpg", gray8.into()),
    ];

    let preprocess = Preprocess {
        crop: Crop::Center { fraction: 1.0 },
        size: 5,
    };
    for (name, img) in files {
        let path = dir.path().join(name);
        img.save(&path).unwrap();
        let out = preprocess.load(&path).unwrap();
        assert_eq!(out.dimensions(), (5, 5), "{name}");
        assert!(
            out.pixels().all(|p| p.0.iter().all(|&c| c >= 250)),
            "{name}: {:?}",
            out.get_pixel(2, 2)
        );
    }
}

/// A 32×32 JPEG of one colour, as bytes.
fn jpeg_bytes(colour: [u8; 3]) -> Vec<u8> {
    encode_jpeg(&RgbImage::from_pixel(32, 32, Rgb(colour)))
}

fn encode_jpeg(img: &RgbImage) -> Vec<u8> {
    let mut bytes = Vec::new();
    img.write_to(
        &mut std::io::Cursor::new(&mut bytes),
        image::ImageFormat::Jpeg,
    )
    .unwrap();
    bytes
}

/// A 64×64 noise JPEG cut inside its scan data: the decoder itself would accept it, padding
/// the missing blocks, so only the end-of-image check catches it.
fn jpeg_cut_in_scan() -> Vec<u8> {
    let noise = filler(99, 64 * 64 * 3);
    let img = RgbImage::from_raw(64, 64, noise).unwrap();
    let bytes = encode_jpeg(&img);
    bytes[..bytes.len() * 3 / 4].to_vec()
}

#[test]
fn empty_truncated_and_non_image_files_are_decode_errors() {
    let dir = tempfile::tempdir().unwrap();
    let jpeg = jpeg_bytes([10, 20, 30]);
    let mut png = Vec::new();
    gradient()
        .write_to(&mut std::io::Cursor::new(&mut png), image::ImageFormat::Png)
        .unwrap();
    let cut_in_scan = jpeg_cut_in_scan();
    let files: [(&str, &[u8]); 5] = [
        ("zero.jpg", &[]),
        ("cut.jpg", &jpeg[..jpeg.len() / 2]),
        ("cut-in-scan.jpg", &cut_in_scan),
        ("cut.png", &png[..png.len() / 2]),
        ("text.png", b"hello, not an image\n"),
    ];

    let preprocess = Preprocess {
        crop: Crop::Center { fraction: 1.0 },
        size: 8,
    };
    for (name, bytes) in files {
        let path = dir.path().join(name);
        std::fs::write(&path, bytes).unwrap();
        let err = preprocess.load(&path).unwrap_err();
        assert!(
            matches!(&err, Error::Decode { path: p, .. } if *p == path),
            "{name}: {err}"
        );
    }
    let missing = dir.path().join("missing.jpg");
    assert!(matches!(preprocess.load(&missing), Err(Error::Io { .. })));
}

#[test]
fn preprocess_reads_its_json_form() {
    let json = r#"{"crop":{"kind":"center","fraction":0.5},"size":112}"#;
    let parsed: Preprocess = serde_json::from_str(json).unwrap();
    assert_eq!(
        parsed,
        Preprocess {
            crop: Crop::Center { fraction: 0.5 },
            size: 112
        }
    );
    let typo = r#"{"crop":{"kind":"center","fraction":0.5,"margin":1},"size":112}"#;
    assert!(serde_json::from_str::<Preprocess>(typo).is_err());
}

// ---------------------------------------------------------------------------------------------
// Packing

const RED: [u8; 3] = [220, 20, 20];
const GREEN: [u8; 3] = [20, 220, 20];
const BLUE: [u8; 3] = [20, 20, 220];
const GREY: [u8; 3] = [128, 128, 128];
const YELLOW: [u8; 3] = [220, 220, 20];

fn put_image(root: &Path, rel: &str, colour: [u8; 3]) {
    let path = root.join(rel);
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    if rel.ends_with(".jpg") {
        std::fs::write(path, jpeg_bytes(colour)).unwrap();
    } else {
        RgbImage::from_pixel(24, 24, Rgb(colour))
            .save(path)
            .unwrap();
    }
}

fn put_file(root: &Path, rel: &str, bytes: &[u8]) {
    let path = root.join(rel);
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, bytes).unwrap();
}

/// The test tree; the expected records per kept identity are in `expected_tree`.
fn make_tree(root: &Path) {
    put_image(root, "Alice/a1.png", RED);
    put_image(root, "Alice/a2.jpg", GREEN);
    put_image(root, "Alice/sub/a3.png", BLUE);
    put_file(root, "Alice/zero.jpg", &[]);
    put_file(root, "Alice/trunc.jpg", &jpeg_cut_in_scan());
    put_file(root, "Alice/notes.txt", b"not an image");
    put_image(root, "Bob/b1.png", GREY);
    put_image(root, "Bob/b2.png", YELLOW);
    put_image(root, "Bob/b3.jpg", RED);
    put_image(root, "Carol/c1.png", GREEN);
    put_image(root, "Dave/d1.png", BLUE);
    put_image(root, "Dave/d2.png", BLUE);
    put_image(root, "Eve/e1.PNG", YELLOW);
    put_image(root, "Eve/e2.png", GREEN);
    put_image(root, "Gina/g1.png", RED);
    put_file(
        root,
        "Gina/g2.jpg",
        b"garbage that only pretends to be a jpeg",
    );
}

/// (name, colours of its records in order) for each kept identity, in label order.
fn expected_tree() -> Vec<(&'static str, Vec<[u8; 3]>)> {
    vec![
        ("Alice", vec![RED, GREEN, BLUE]),
        ("Bob", vec![GREY, YELLOW, RED]),
        ("Eve", vec![YELLOW, GREEN]),
    ]
}

fn tree_config() -> PackConfig {
    PackConfig {
        exclude: BTreeSet::from(["Dave".to_string(), "Nobody".to_string()]),
        min_images: 2,
        preprocess: Preprocess {
            crop: Crop::Center { fraction: 1.0 },
            size: 8,
        },
        max_images_per_shard: 5,
        storage: Storage::Raw,
        append: false,
    }
}

fn assert_colour(pixels: &[u8], colour: [u8; 3], what: &str) {
    assert_eq!(pixels.len(), 8 * 8 * 3, "{what}");
    for (i, px) in pixels.chunks_exact(3).enumerate() {
        let off = px
            .iter()
            .zip(colour)
            .map(|(&a, b)| a.abs_diff(b))
            .max()
            .unwrap();
        assert!(
            off <= 12,
            "{what}: pixel {i} is {px:?}, expected about {colour:?}"
        );
    }
}

#[test]
fn pack_folder_keeps_the_right_identities_and_images() {
    let dir = tempfile::tempdir().unwrap();
    let (root, out) = (dir.path().join("root"), dir.path().join("packed"));
    make_tree(&root);
    let report = pack_folder(&root, &out, &tree_config()).unwrap();

    assert_eq!(report.identities, 3);
    assert_eq!(report.images, 8);
    // Shards are planned on image files before decoding: [Alice], [Bob, Carol], [Eve, Gina]
    // (at most 5 files each); Carol and Gina are dropped later.
    assert_eq!(report.shards, 3);
    assert_eq!(report.excluded_identities, 1);
    assert_eq!(
        report.too_few_images, 2,
        "Carol has one image, Gina one decodable"
    );
    let skipped: BTreeSet<PathBuf> = report.skipped.iter().map(|s| s.path.clone()).collect();
    let expected: BTreeSet<PathBuf> = [
        "Alice/zero.jpg",
        "Alice/trunc.jpg",
        "Alice/notes.txt",
        "Gina/g2.jpg",
    ]
    .iter()
    .map(|rel| root.join(rel))
    .collect();
    assert_eq!(skipped, expected);

    let dataset = Dataset::open(&out).unwrap();
    assert_eq!(dataset.n_identities(), 3);
    assert_eq!(dataset.n_images(), 8);
    assert_eq!(dataset.image_size(), (8, 8));
    assert_eq!(dataset.root(), out);
    assert_eq!(
        dataset.manifest().shards,
        ["shard-00000.pms", "shard-00001.pms", "shard-00002.pms"]
    );
    assert_eq!(
        dataset.manifest().preprocess,
        Some(tree_config().preprocess)
    );
    assert_eq!(
        dataset.identity(1),
        Some(IdentityRecords {
            shard: 1,
            first: 0,
            count: 3
        })
    );
    assert_eq!(
        dataset.identity(2),
        Some(IdentityRecords {
            shard: 2,
            first: 0,
            count: 2
        })
    );
    assert_eq!(dataset.identity(3), None);

    for (label, (name, colours)) in (0u32..).zip(expected_tree()) {
        assert_eq!(dataset.manifest().identities[label as usize], name);
        let records = dataset.identity(label).unwrap();
        assert_eq!(records.count as usize, colours.len(), "{name}");
        for (record, colour) in (records.first..).zip(colours) {
            let what = format!("{name} record {record}");
            assert_colour(
                dataset.record(records.shard, record).unwrap().0,
                colour,
                &what,
            );
        }
    }
    let leftovers: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(leftovers.len(), 2, "no staging folder left: {leftovers:?}");
}

#[test]
fn pack_folder_refuses_a_non_empty_output_and_a_missing_root() {
    let dir = tempfile::tempdir().unwrap();
    let (root, out) = (dir.path().join("root"), dir.path().join("packed"));
    make_tree(&root);
    put_file(&out, "keep.txt", b"precious");

    let err = pack_folder(&root, &out, &tree_config()).unwrap_err();
    assert!(
        matches!(&err, Error::Config(what) if what.contains("packed")),
        "{err}"
    );
    assert_eq!(std::fs::read(out.join("keep.txt")).unwrap(), b"precious");

    let missing = dir.path().join("no-such-root");
    let err = pack_folder(&missing, &dir.path().join("out2"), &tree_config()).unwrap_err();
    assert!(
        matches!(&err, Error::Io { path, .. } if *path == missing),
        "{err}"
    );
    assert!(!dir.path().join("out2").exists());
}

#[test]
fn pack_folder_with_nothing_kept_leaves_no_output() {
    let dir = tempfile::tempdir().unwrap();
    let (root, out) = (dir.path().join("root"), dir.path().join("packed"));
    make_tree(&root);
    std::fs::create_dir(&out).unwrap();
    let config = PackConfig {
        min_images: 50,
        ..tree_config()
    };

    let err = pack_folder(&root, &out, &config).unwrap_err();
    assert!(matches!(err, Error::Config(_)), "{err}");
    let leftovers: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(
        leftovers.len(),
        2,
        "root and the untouched empty output only: {leftovers:?}"
    );
}

#[test]
fn dataset_open_rejects_a_manifest_that_disagrees_with_its_shards() {
    let dir = tempfile::tempdir().unwrap();
    let (root, out) = (dir.path().join("root"), dir.path().join("packed"));
    make_tree(&root);
    pack_folder(&root, &out, &tree_config()).unwrap();
    let manifest_path = out.join("manifest.json");
    let original = std::fs::read_to_string(&manifest_path).unwrap();

    let edits = [
        ("\"n_images\": 8", "\"n_images\": 9"),
        ("\"Eve\"", "\"Eve\", \"Zed\""),
        ("\"format_version\": 2", "\"format_version\": 3"),
        ("\"shard-00001.pms\"", "\"../shard-00001.pms\""),
        ("\"height\": 8", "\"height\": 9"),
    ];
    for (from, to) in edits {
        assert!(original.contains(from), "manifest lacks {from}");
        std::fs::write(&manifest_path, original.replace(from, to)).unwrap();
        assert!(Dataset::open(&out).is_err(), "accepted manifest with {to}");
    }
    std::fs::write(&manifest_path, "{ not json").unwrap();
    assert!(matches!(Dataset::open(&out), Err(Error::Parse { .. })));
}

/// Packs three real LFW identities from `$PM_SHARED_DATA/lfw/images` into a temporary folder.
#[test]
fn pack_three_real_lfw_identities() {
    let Some(shared) = std::env::var_os("PM_SHARED_DATA") else {
        eprintln!("skipping pack_three_real_lfw_identities: PM_SHARED_DATA is not set");
        return;
    };
    let root = Path::new(&shared).join("lfw/images");
    let wanted = ["Aaron_Peirsol", "Aaron_Sorkin", "Abel_Pacheco"];
    let exclude: BTreeSet<String> = std::fs::read_dir(&root)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|name| !wanted.contains(&name.as_str()))
        .collect();
    let preprocess = Preprocess {
        crop: Crop::Center { fraction: 0.5 },
        size: 64,
    };
    let config = PackConfig {
        exclude,
        min_images: 2,
        preprocess: preprocess.clone(),
        max_images_per_shard: 6,
        storage: Storage::Raw,
        append: false,
    };

    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("lfw3");
    let report = pack_folder(&root, &out, &config).unwrap();
    assert_eq!(
        (report.identities, report.images, report.shards),
        (3, 10, 2)
    );
    assert_eq!(report.excluded_identities, 5746);
    assert!(report.skipped.is_empty(), "{:?}", report.skipped);

    let dataset = Dataset::open(&out).unwrap();
    assert_eq!(dataset.manifest().identities, wanted);
    let counts: Vec<u32> = (0..3).map(|l| dataset.identity(l).unwrap().count).collect();
    assert_eq!(counts, [4, 2, 4]);
    let first = preprocess
        .load(&root.join("Abel_Pacheco/Abel_Pacheco_0001.jpg"))
        .unwrap();
    let records = dataset.identity(2).unwrap();
    assert_eq!(
        dataset.record(records.shard, records.first).unwrap().0,
        first.as_raw().as_slice()
    );
}
