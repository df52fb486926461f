//! The list-file and RecordIO importers end to end: from input files to a dataset that opens,
//! with labels, names, skipped records and storage checked.
//!
//! One test imports the real-format RecordIO fixture; it needs `PM_SHARED_DATA` (the shared
//! data folder) and says so when the variable is unset.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use image::{Rgb, RgbImage};
use pm_data::{
    Crop, Dataset, Error, PackConfig, Preprocess, Storage, pack_list, pack_recordio,
    record_payload, rgb_record, write_record,
};

fn config(storage: Storage) -> PackConfig {
    PackConfig {
        exclude: BTreeSet::new(),
        min_images: 1,
        preprocess: Preprocess {
            crop: Crop::Center { fraction: 1.0 },
            size: 8,
        },
        max_images_per_shard: 4,
        storage,
        append: false,
    }
}

fn jpeg(colour: [u8; 3], side: u32) -> Vec<u8> {
    let mut bytes = Vec::new();
    let img = RgbImage::from_pixel(side, side, Rgb(colour));
    img.write_to(
        &mut std::io::Cursor::new(&mut bytes),
        image::ImageFormat::Jpeg,
    )
    .unwrap();
    bytes
}

fn mean_colour(pixels: &[u8]) -> [u8; 3] {
    let n = (pixels.len() / 3).max(1);
    let mut sum = [0usize; 3];
    for px in pixels.chunks_exact(3) {
        (0..3).for_each(|c| sum[c] += px[c] as usize);
    }
    sum.map(|s| (s / n) as u8)
}

fn close(a: [u8; 3], b: [u8; 3]) -> bool {
    a.iter().zip(b).all(|(&x, y)| x.abs_diff(y) <= 10)
}

#[test]
fn list_file_with_spaces_and_numeric_labels_packs_in_label_order() {
    let dir = tempfile::tempdir().unwrap();
    let images = dir.path().join("my images");
    std::fs::create_dir_all(&images).unwrap();
    let colours = [[200, 20, 20], [20, 200, 20], [20, 20, 200]];
    for (i, colour) in colours.iter().enumerate() {
        std::fs::write(images.join(format!("face {i}.jpg")), jpeg(*colour, 16)).unwrap();
    }
    std::fs::write(images.join("broken.jpg"), b"not a jpeg").unwrap();
    let list = dir.path().join("train.txt");
    let text = "my images/face 0.jpg 10\nmy images/face 1.jpg 2\nmy images/face 2.jpg 10\n\
                my images/broken.jpg 2\nmy images/missing.jpg 2\n";
    std::fs::write(&list, text).unwrap();

    let out = dir.path().join("ds");
    let report = pack_list(&list, &out, &config(Storage::Raw)).unwrap();
    assert_eq!((report.identities, report.images), (2, 3));
    assert_eq!(report.skipped.len(), 2, "{:?}", report.skipped);
    let dataset = Dataset::open(&out).unwrap();
    // Numeric order: "2" before "10".
    assert_eq!(dataset.manifest().identities, ["2", "10"]);
    let two = dataset.identity(0).unwrap();
    assert_eq!(two.count, 1);
    let (pixels, _) = dataset.record(two.shard, two.first).unwrap();
    assert!(close(mean_colour(pixels), colours[1]));
    let ten = dataset.identity(1).unwrap();
    let (pixels, _) = dataset.record(ten.shard, ten.first + 1).unwrap();
    assert!(close(mean_colour(pixels), colours[2]));
}

#[test]
fn list_file_errors_name_the_line() {
    let dir = tempfile::tempdir().unwrap();
    let list = dir.path().join("train.lst");
    std::fs::write(&list, "0\ta.jpg\t1\n1\tb.jpg\n").unwrap();
    let err = pack_list(&list, &dir.path().join("ds"), &config(Storage::Raw)).unwrap_err();
    assert!(matches!(&err, Error::Parse { line: 2, .. }), "{err}");
    assert!(!dir.path().join("ds").exists());
}

/// Writes an im2rec-style set (no header record, keys from 1) of `classes` with `per_class`
/// images each, `corrupt` naming a (class, image) whose payload is not an image.
fn write_im2rec(dir: &Path, classes: u32, per_class: u32, corrupt: (u32, u32)) -> PathBuf {
    std::fs::create_dir_all(dir).unwrap();
    let (mut rec, mut idx) = (Vec::new(), String::new());
    let mut key = 1u64;
    for class in 0..classes {
        for image in 0..per_class {
            let colour = [(40 * class) as u8, 100, (30 * image) as u8];
            let body = match (class, image) == corrupt {
                true => b"\xFF\xD8 not really a jpeg".to_vec(),
                false => jpeg(colour, 12),
            };
            idx.push_str(&format!("{key}\t{}\n", rec.len()));
            write_record(
                &mut rec,
                &record_payload(&[], class as f32, key, 0, &body),
                false,
            );
            key += 1;
        }
    }
    std::fs::write(dir.join("train.rec"), rec).unwrap();
    std::fs::write(dir.join("train.idx"), idx).unwrap();
    std::fs::write(dir.join("property"), format!("{classes},12,12")).unwrap();
    dir.to_path_buf()
}

#[test]
fn recordio_import_skips_a_corrupt_record_by_key_and_keeps_jpeg_bytes() {
    let dir = tempfile::tempdir().unwrap();
    let rec = write_im2rec(&dir.path().join("rec"), 3, 3, (1, 2));
    let out = dir.path().join("ds");
    let report = pack_recordio(&rec, &out, &config(Storage::Encoded), None).unwrap();
    assert_eq!((report.identities, report.images), (3, 8));
    assert_eq!(report.skipped.len(), 1);
    // Class 1's third image is key 1 + 3 + 2 = 6.
    assert_eq!(report.skipped[0].record, Some(6), "{:?}", report.skipped);

    let dataset = Dataset::open(&out).unwrap();
    assert_eq!(dataset.image_size(), (12, 12));
    assert_eq!(dataset.manifest().preprocess, None);
    assert_eq!(dataset.manifest().identities, ["0", "1", "2"]);
    let class2 = dataset.identity(2).unwrap();
    let (bytes, storage) = dataset.record(class2.shard, class2.first).unwrap();
    assert_eq!(storage, Storage::Encoded);
    assert_eq!(
        bytes,
        jpeg([80, 100, 0], 12).as_slice(),
        "stored as it came"
    );
    let pixels = rgb_record(&dataset, class2.shard, class2.first).unwrap();
    assert!(close(mean_colour(&pixels), [80, 100, 0]));
}

#[test]
fn recordio_import_resizes_to_the_requested_size() {
    let dir = tempfile::tempdir().unwrap();
    let rec = write_im2rec(&dir.path().join("rec"), 2, 2, (9, 9));
    let out = dir.path().join("ds");
    let report = pack_recordio(&rec, &out, &config(Storage::Raw), Some(6)).unwrap();
    assert_eq!((report.identities, report.images), (2, 4));
    let dataset = Dataset::open(&out).unwrap();
    assert_eq!(dataset.image_size(), (6, 6));
    let one = dataset.identity(1).unwrap();
    let (pixels, _) = dataset.record(one.shard, one.first + 1).unwrap();
    assert_eq!(pixels.len(), 6 * 6 * 3);
    assert!(close(mean_colour(pixels), [40, 100, 30]));
}

#[test]
fn recordio_property_mismatch_is_an_error_and_writes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let rec = write_im2rec(&dir.path().join("rec"), 2, 2, (9, 9));
    std::fs::write(rec.join("property"), "5,12,12").unwrap();
    let out = dir.path().join("ds");
    let err = pack_recordio(&rec, &out, &config(Storage::Raw), None).unwrap_err();
    assert!(err.to_string().contains("property"), "{err}");
    assert!(!out.exists());
}

#[test]
fn real_recordio_fixture_imports_with_its_own_jpegs() {
    let Some(shared) = std::env::var_os("PM_SHARED_DATA") else {
        eprintln!("SKIPPED real_recordio_fixture_imports_with_its_own_jpegs: PM_SHARED_DATA unset");
        return;
    };
    let rec = Path::new(&shared).join("insightface_format_fixtures/cfp_sample_rec");
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("ds");
    let report = pack_recordio(&rec, &out, &config(Storage::Encoded), None).unwrap();
    assert_eq!((report.identities, report.images), (10, 100));
    assert!(report.skipped.is_empty());
    let dataset = Dataset::open(&out).unwrap();
    assert_eq!(dataset.image_size(), (112, 112));
    let stored: u64 = dataset.shards().iter().map(|s| s.data_len()).sum();
    let rec_len = std::fs::metadata(rec.join("train.rec")).unwrap().len();
    // The JPEGs as they came: the data is the .rec minus its headers and metadata records.
    assert!(
        stored < rec_len && stored > rec_len * 9 / 10,
        "{stored} vs {rec_len}"
    );
    for label in 0..10 {
        let ids = dataset.identity(label).unwrap();
        assert_eq!(ids.count, 10);
        let pixels = rgb_record(&dataset, ids.shard, ids.first).unwrap();
        assert_eq!(pixels.len(), 112 * 112 * 3);
    }
}

#[test]
fn list_labels_keep_leading_zeros_so_exclusions_match() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("x.jpg"), jpeg([90, 90, 90], 16)).unwrap();
    std::fs::write(dir.path().join("y.jpg"), jpeg([10, 90, 90], 16)).unwrap();
    let list = dir.path().join("train.txt");
    std::fs::write(&list, "x.jpg 006\ny.jpg 010\ny.jpg 010\nx.jpg 12.000000\n").unwrap();
    let config = PackConfig {
        exclude: BTreeSet::from(["006".to_owned()]),
        ..config(Storage::Raw)
    };
    let report = pack_list(&list, &dir.path().join("ds"), &config).unwrap();
    assert_eq!(report.excluded_identities, 1);
    assert_eq!(
        report.skipped.len(),
        1,
        "the repeated line: {:?}",
        report.skipped
    );
    let dataset = Dataset::open(&dir.path().join("ds")).unwrap();
    assert_eq!(dataset.manifest().identities, ["010", "12"]);
}

#[test]
fn a_fifo_in_a_list_is_an_error_not_a_hang() {
    let dir = tempfile::tempdir().unwrap();
    let fifo = dir.path().join("fifo.jpg");
    let status = std::process::Command::new("mkfifo").arg(&fifo).status();
    if !status.is_ok_and(|s| s.success()) {
        eprintln!("SKIPPED a_fifo_in_a_list_is_an_error_not_a_hang: mkfifo unavailable");
        return;
    }
    std::fs::write(dir.path().join("ok.jpg"), jpeg([90, 90, 90], 16)).unwrap();
    let list = dir.path().join("train.txt");
    std::fs::write(&list, "fifo.jpg 1\nok.jpg 1\n").unwrap();
    let report = pack_list(&list, &dir.path().join("ds"), &config(Storage::Raw)).unwrap();
    assert_eq!((report.images, report.skipped.len()), (1, 1));
    assert!(
        report.skipped[0].reason.contains("regular file"),
        "{:?}",
        report.skipped
    );
}
