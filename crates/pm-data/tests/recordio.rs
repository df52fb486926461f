//! Public-API tests of the RecordIO reader: small sets in every layout (insightface header,
//! im2rec, shuffled, split records, old magic, float-array labels, an untrusted header) built in
//! a tempdir with tiny real JPEG and PNG images, the errors a bad set must give, and the real
//! insightface-format fixture.
//!
//! The fixture test needs `PM_SHARED_DATA` (the shared data folder), or `../shared/data` next
//! to the workspace, and says so on stderr when neither exists.

use std::borrow::Cow;
use std::io::Cursor;
use std::path::{Path, PathBuf};

use image::{ImageFormat, RgbImage};
use pm_data::{
    Error, Property, RecordIo, RecordIoImage, RecordIoLayout, record_payload, write_record,
};

/// Both chunk magics, as the bytes a payload would hold.
const MAGIC_BYTES: [u8; 4] = 0xCED7_230Au32.to_le_bytes();

/// A tiny image of one colour per `seed`, encoded as JPEG or PNG.
fn tiny_image(seed: u8, format: ImageFormat) -> Vec<u8> {
    let image = RgbImage::from_fn(8, 6, |x, y| {
        image::Rgb([seed.wrapping_mul(37), (x * 30) as u8, (y * 40) as u8])
    });
    let mut bytes = Cursor::new(Vec::new());
    image.write_to(&mut bytes, format).unwrap();
    bytes.into_inner()
}

/// A RecordIO set under construction: the `.rec` bytes and its `.idx` text.
#[derive(Default)]
struct SetBuilder {
    rec: Vec<u8>,
    idx: String,
    old_magic: bool,
}

impl SetBuilder {
    /// Appends a record with `key` and returns its offset.
    fn push(&mut self, key: u64, payload: &[u8]) -> u64 {
        let offset = self.rec.len() as u64;
        write_record(&mut self.rec, payload, self.old_magic);
        self.idx.push_str(&format!("{key}\t{offset}\n"));
        offset
    }

    /// Appends an image record with a scalar label.
    fn push_image(&mut self, key: u64, label: f32, image: &[u8]) -> u64 {
        self.push(key, &record_payload(&[], label, 0, 0, image))
    }

    /// Writes `train.rec`, `train.idx` (if `with_idx`) and `property` (if given) into `dir`.
    fn write(&self, dir: &Path, with_idx: bool, property: Option<&str>) {
        std::fs::write(dir.join("train.rec"), &self.rec).unwrap();
        if with_idx {
            std::fs::write(dir.join("train.idx"), &self.idx).unwrap();
        }
        if let Some(property) = property {
            std::fs::write(dir.join("property"), property).unwrap();
        }
    }
}

/// An insightface set: header `[a, b)`, `labels.len()` images, one identity record per run of
/// equal labels. Returns the builder and the encoded images in key order.
fn insightface_set(labels: &[u32]) -> (SetBuilder, Vec<Vec<u8>>) {
    let mut runs: Vec<(u64, u64)> = Vec::new();
    for (key, pair) in (1..).zip(labels.iter().enumerate()) {
        match runs.last_mut() {
            Some(run) if pair.0 > 0 && labels[pair.0 - 1] == *pair.1 => run.1 = key + 1,
            _ => runs.push((key, key + 1)),
        }
    }
    let a = labels.len() as u64 + 1;
    let b = a + runs.len() as u64;

    let mut set = SetBuilder::default();
    set.push(0, &record_payload(&[a as f32, b as f32], 0.0, 0, 1, b""));
    let mut images = Vec::new();
    for (key, &label) in (1..).zip(labels) {
        let format = if key % 2 == 0 {
            ImageFormat::Png
        } else {
            ImageFormat::Jpeg
        };
        images.push(tiny_image(key as u8, format));
        set.push_image(key, label as f32, images.last().unwrap());
    }
    for (key, &(first, end)) in (a..).zip(&runs) {
        set.push(
            key,
            &record_payload(&[first as f32, end as f32], 0.0, 0, 0, b""),
        );
    }
    (set, images)
}

/// Checks that every image decodes and its bytes are `expected[i]`.
fn assert_images(set: &RecordIo, expected: &[Vec<u8>]) {
    assert_eq!(set.images().len(), expected.len());
    for (image, want) in set.images().iter().zip(expected) {
        let bytes = set.image_bytes(image).unwrap();
        assert_eq!(&*bytes, &want[..], "image {}", image.key);
        let decoded = image::load_from_memory(&bytes).unwrap();
        assert_eq!((decoded.width(), decoded.height()), (8, 6));
    }
}

fn labels(set: &RecordIo) -> Vec<u32> {
    set.images().iter().map(|i| i.label).collect()
}

fn keys(set: &RecordIo) -> Vec<u64> {
    set.images().iter().map(|i| i.key).collect()
}

#[test]
fn insightface_header_identities_idx_and_property() {
    let dir = tempfile::tempdir().unwrap();
    let (set, images) = insightface_set(&[0, 0, 1, 1, 1, 2]);
    set.write(dir.path(), true, Some("3,6,8\n"));

    let rec = RecordIo::open(dir.path()).unwrap();
    assert_eq!(
        rec.layout(),
        &RecordIoLayout::Insightface {
            header_images_end: 7,
            header_identities_end: 10,
            ranges_trusted: true,
            identity_records: 3,
        }
    );
    assert_eq!(keys(&rec), [1, 2, 3, 4, 5, 6]);
    assert_eq!(labels(&rec), [0, 0, 1, 1, 1, 2]);
    assert_eq!(rec.n_classes(), 3);
    let property = Property {
        num_classes: 3,
        height: 6,
        width: 8,
    };
    assert_eq!(rec.property(), Some(property));
    assert_eq!(rec.rec_path(), dir.path().join("train.rec"));
    assert!(rec.notes().is_empty(), "{:?}", rec.notes());
    assert_images(&rec, &images);

    // The same set opened through its .rec file.
    let by_file = RecordIo::open(&dir.path().join("train.rec")).unwrap();
    assert_eq!(by_file.images(), rec.images());
}

#[test]
fn identity_record_spanning_two_labels_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let mut set = SetBuilder::default();
    set.push(0, &record_payload(&[4.0, 6.0], 0.0, 0, 1, b""));
    for (key, label) in [(1, 0.0), (2, 0.0), (3, 1.0)] {
        set.push_image(key, label, &tiny_image(key as u8, ImageFormat::Png));
    }
    set.push(4, &record_payload(&[1.0, 4.0], 0.0, 0, 0, b""));
    set.push(5, &record_payload(&[3.0, 4.0], 0.0, 0, 0, b""));
    set.write(dir.path(), true, None);

    match RecordIo::open(dir.path()) {
        Err(Error::Record {
            record: 4, what, ..
        }) => assert!(what.contains("one label"), "{what}"),
        other => panic!("expected a record error for key 4, got {other:?}"),
    }
}

#[test]
fn im2rec_keys_from_one_without_header() {
    let dir = tempfile::tempdir().unwrap();
    let mut set = SetBuilder::default();
    let mut images = Vec::new();
    for (key, label) in (1..).zip([0.0, 1.0, 1.0, 0.0]) {
        images.push(tiny_image(key as u8, ImageFormat::Jpeg));
        set.push_image(key, label, images.last().unwrap());
    }
    set.write(dir.path(), true, Some("2,6,8"));

    let rec = RecordIo::open(dir.path()).unwrap();
    assert_eq!(rec.layout(), &RecordIoLayout::ImagesOnly);
    assert_eq!(keys(&rec), [1, 2, 3, 4]);
    assert_eq!(labels(&rec), [0, 1, 1, 0]);
    assert_eq!(rec.n_classes(), 2);
    assert_images(&rec, &images);
    let image = rec.images()[0];
    assert!(matches!(rec.image_bytes(&image).unwrap(), Cow::Borrowed(_)));
}

#[test]
fn shuffled_keys_are_returned_in_key_order() {
    let dir = tempfile::tempdir().unwrap();
    let mut set = SetBuilder::default();
    let order = [3u64, 0, 4, 1, 2];
    let mut offsets = [0u64; 5];
    let mut images = vec![Vec::new(); 5];
    for &key in &order {
        images[key as usize] = tiny_image(key as u8, ImageFormat::Png);
        offsets[key as usize] = set.push_image(key, (key % 3) as f32, &images[key as usize]);
    }
    set.write(dir.path(), true, None);

    let rec = RecordIo::open(dir.path()).unwrap();
    assert_eq!(rec.layout(), &RecordIoLayout::ImagesOnly);
    let expected: Vec<RecordIoImage> = (0..5)
        .map(|key| RecordIoImage {
            key,
            offset: offsets[key as usize],
            label: (key % 3) as u32,
        })
        .collect();
    assert_eq!(rec.images(), expected);
    assert_eq!(rec.property(), None);
    assert!(
        rec.notes().iter().any(|n| n.contains("shuffled")),
        "{:?}",
        rec.notes()
    );
    assert_images(&rec, &images);
}

#[test]
fn split_records_are_joined_with_the_magic_put_back() {
    let dir = tempfile::tempdir().unwrap();
    let mut set = SetBuilder::default();
    // Trailing bytes after the JPEG, with the magic at aligned payload offsets (the 24-byte
    // header keeps the alignment of the image bytes); decoders ignore them.
    let mut image = tiny_image(1, ImageFormat::Jpeg);
    image.resize(image.len().next_multiple_of(4), 0);
    image.extend(MAGIC_BYTES);
    image.extend(b"tail");
    image.extend(MAGIC_BYTES);
    set.push_image(1, 0.0, &image);
    let plain = tiny_image(2, ImageFormat::Jpeg);
    set.push_image(2, 0.0, &plain);
    set.write(dir.path(), true, None);
    // One record per key: the split record took more than one chunk.
    let chunks = set
        .rec
        .chunks_exact(4)
        .filter(|w| *w == MAGIC_BYTES)
        .count();
    assert!(chunks >= 4, "{chunks} chunk magics");

    let rec = RecordIo::open(dir.path()).unwrap();
    assert_eq!(keys(&rec), [1, 2]);
    let bytes = rec.image_bytes(&rec.images()[0]).unwrap();
    assert!(matches!(bytes, Cow::Owned(_)));
    assert_eq!(&*bytes, &image[..]);
    image::load_from_memory(&bytes).unwrap();
    assert_eq!(&*rec.image_bytes(&rec.images()[1]).unwrap(), &plain[..]);
    assert!(
        rec.notes().iter().any(|n| n.contains("split")),
        "{:?}",
        rec.notes()
    );
}

#[test]
fn old_magic_files_read() {
    let dir = tempfile::tempdir().unwrap();
    let mut set = SetBuilder {
        old_magic: true,
        ..SetBuilder::default()
    };
    let mut images = Vec::new();
    for (key, label) in (1..).zip([1.0, 0.0, 1.0]) {
        images.push(tiny_image(key as u8, ImageFormat::Png));
        set.push_image(key, label, images.last().unwrap());
    }
    set.write(dir.path(), true, Some("2,6,8"));
    assert_eq!(set.rec[..4], 0x3ED7_230Au32.to_le_bytes());

    let rec = RecordIo::open(dir.path()).unwrap();
    assert_eq!(labels(&rec), [1, 0, 1]);
    assert!(
        rec.notes().iter().any(|n| n.contains("old")),
        "{:?}",
        rec.notes()
    );
    assert_images(&rec, &images);
}

#[test]
fn float_array_labels_take_the_first_as_class() {
    let dir = tempfile::tempdir().unwrap();
    let mut set = SetBuilder::default();
    let mut images = Vec::new();
    for (key, class) in (0..).zip([2.0f32, 0.0, 1.0]) {
        images.push(tiny_image(key as u8, ImageFormat::Jpeg));
        let payload = record_payload(&[class, 0.25], 99.0, key, 0, images.last().unwrap());
        set.push(key, &payload);
    }
    set.write(dir.path(), false, Some("3,6,8"));

    let rec = RecordIo::open(dir.path()).unwrap();
    assert_eq!(rec.layout(), &RecordIoLayout::ImagesOnly);
    assert_eq!(keys(&rec), [0, 1, 2]);
    assert_eq!(labels(&rec), [2, 0, 1]);
    assert!(
        rec.notes().iter().any(|n| n.contains("no ")),
        "{:?}",
        rec.notes()
    );
    assert_images(&rec, &images);
}

#[test]
fn header_ranges_beyond_2_pow_24_are_not_trusted() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (16_777_224.0f32, 16_777_232.0f32);
    let mut set = SetBuilder::default();
    set.push(0, &record_payload(&[a, b], 0.0, 0, 1, b""));
    let mut images = Vec::new();
    for (key, label) in (1..).zip([0.0, 0.0, 1.0]) {
        images.push(tiny_image(key as u8, ImageFormat::Png));
        set.push_image(key, label, images.last().unwrap());
    }
    set.push(4, &record_payload(&[1.0, 3.0], 0.0, 0, 0, b""));
    set.push(5, &record_payload(&[3.0, 4.0], 0.0, 0, 0, b""));
    set.write(dir.path(), true, Some("2,6,8"));

    let rec = RecordIo::open(dir.path()).unwrap();
    assert_eq!(
        rec.layout(),
        &RecordIoLayout::Insightface {
            header_images_end: 16_777_224,
            header_identities_end: 16_777_232,
            ranges_trusted: false,
            identity_records: 2,
        }
    );
    assert_eq!(keys(&rec), [1, 2, 3]);
    assert_eq!(labels(&rec), [0, 0, 1]);
    assert!(
        rec.notes().iter().any(|n| n.contains("2^24")),
        "{:?}",
        rec.notes()
    );
    assert_images(&rec, &images);
}

#[test]
fn header_disagreeing_with_the_records_is_not_trusted() {
    let dir = tempfile::tempdir().unwrap();
    let (mut set, images) = insightface_set(&[0, 1, 1]);
    // Another image after the identity records: the header's `a` no longer fits.
    let extra = tiny_image(9, ImageFormat::Png);
    set.push_image(7, 0.0, &extra);
    set.write(dir.path(), true, None);

    let rec = RecordIo::open(dir.path()).unwrap();
    assert!(matches!(
        rec.layout(),
        RecordIoLayout::Insightface {
            ranges_trusted: false,
            identity_records: 2,
            ..
        }
    ));
    assert_eq!(keys(&rec), [1, 2, 3, 7]);
    assert_images(&rec, &[images, vec![extra]].concat());
}

#[test]
fn property_class_count_mismatch_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let (set, _) = insightface_set(&[0, 1, 2]);
    set.write(dir.path(), true, Some("5,6,8"));

    match RecordIo::open(dir.path()) {
        Err(Error::Config(what)) => {
            assert!(what.contains("property"), "{what}");
            assert!(what.contains('5') && what.contains('3'), "{what}");
        }
        other => panic!("expected a config error, got {other:?}"),
    }
}

#[test]
fn missing_class_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let mut set = SetBuilder::default();
    for (key, label) in (1..).zip([0.0, 2.0, 3.0, 0.0]) {
        set.push_image(key, label, &tiny_image(key as u8, ImageFormat::Png));
    }
    set.write(dir.path(), true, Some("4,6,8"));

    match RecordIo::open(dir.path()) {
        Err(Error::Config(what)) => assert!(what.contains("class 1 has no image"), "{what}"),
        other => panic!("expected a config error, got {other:?}"),
    }
    // Without a property file too: a gap in the labels is never a silently empty class.
    std::fs::remove_file(dir.path().join("property")).unwrap();
    assert!(matches!(RecordIo::open(dir.path()), Err(Error::Config(_))));
}

#[test]
fn non_integral_label_is_an_error_naming_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let mut set = SetBuilder::default();
    for (key, label) in (1..).zip([0.0, 1.0, 1.5]) {
        set.push_image(key, label, &tiny_image(key as u8, ImageFormat::Png));
    }
    set.write(dir.path(), true, None);

    match RecordIo::open(dir.path()) {
        Err(Error::Record {
            record: 3, what, ..
        }) => assert!(what.contains("1.5"), "{what}"),
        other => panic!("expected a record error for key 3, got {other:?}"),
    }
}

#[test]
fn idx_offsets_must_be_the_record_offsets() {
    let dir = tempfile::tempdir().unwrap();
    let mut set = SetBuilder::default();
    for key in 0..3 {
        set.push_image(key, 0.0, &tiny_image(key as u8, ImageFormat::Png));
    }
    set.write(dir.path(), false, None);
    let idx = dir.path().join("train.idx");

    std::fs::write(&idx, "0\t0\n1\t4\n").unwrap();
    match RecordIo::open(dir.path()) {
        Err(Error::Format {
            path,
            offset: 4,
            what,
        }) => {
            assert_eq!(path, idx);
            assert!(what.contains("line 2"), "{what}");
        }
        other => panic!("expected a format error on line 2, got {other:?}"),
    }

    // An index that misses a record.
    let short: String = set.idx.lines().take(2).map(|l| format!("{l}\n")).collect();
    std::fs::write(&idx, short).unwrap();
    assert!(matches!(
        RecordIo::open(dir.path()),
        Err(Error::Format { .. })
    ));

    // A line that is not `key<TAB>offset`.
    std::fs::write(&idx, format!("{}x\n", set.idx)).unwrap();
    assert!(matches!(
        RecordIo::open(dir.path()),
        Err(Error::Parse { line: 4, .. })
    ));
}

#[test]
fn truncated_and_missing_files_are_errors() {
    let dir = tempfile::tempdir().unwrap();
    let (set, _) = insightface_set(&[0, 1]);
    set.write(dir.path(), false, None);
    let rec_path = dir.path().join("train.rec");
    let cut = set.rec.len() - 3;
    std::fs::write(&rec_path, &set.rec[..cut]).unwrap();
    match RecordIo::open(dir.path()) {
        Err(Error::Format { path, .. }) => assert_eq!(path, rec_path),
        other => panic!("expected a format error, got {other:?}"),
    }

    let empty = tempfile::tempdir().unwrap();
    assert!(matches!(
        RecordIo::open(empty.path()),
        Err(Error::Io { .. })
    ));
    assert!(matches!(
        RecordIo::open(&empty.path().join("nothing.rec")),
        Err(Error::Io { .. })
    ));
}

/// The shared data folder: `$PM_SHARED_DATA`, else `../shared/data` next to the workspace.
fn shared_data() -> Option<PathBuf> {
    if let Some(dir) = std::env::var_os("PM_SHARED_DATA") {
        return Some(PathBuf::from(dir));
    }
    let fallback = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/data");
    fallback.is_dir().then_some(fallback)
}

#[test]
fn real_insightface_fixture() {
    let Some(shared) = shared_data() else {
        eprintln!(
            "SKIPPED real_insightface_fixture: PM_SHARED_DATA is not set and ../shared/data \
             next to the workspace does not exist"
        );
        return;
    };
    let dir = shared.join("insightface_format_fixtures/cfp_sample_rec");
    if !dir.is_dir() {
        eprintln!(
            "SKIPPED real_insightface_fixture: {} does not exist",
            dir.display()
        );
        return;
    }

    let rec = RecordIo::open(&dir).unwrap();
    assert!(matches!(
        rec.layout(),
        RecordIoLayout::Insightface {
            header_images_end: 101,
            header_identities_end: 111,
            ranges_trusted: true,
            identity_records: 10,
        }
    ));
    assert_eq!(rec.images().len(), 100);
    assert_eq!(rec.n_classes(), 10);
    let property = Property {
        num_classes: 10,
        height: 112,
        width: 112,
    };
    assert_eq!(rec.property(), Some(property));
    let mut per_class = [0; 10];
    for image in rec.images() {
        per_class[image.label as usize] += 1;
        let bytes = rec.image_bytes(image).unwrap();
        let decoded = image::load_from_memory(&bytes).unwrap();
        assert_eq!(
            (decoded.width(), decoded.height()),
            (112, 112),
            "key {}",
            image.key
        );
    }
    assert_eq!(per_class, [10; 10]);
}
