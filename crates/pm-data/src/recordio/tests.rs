//! Unit tests of the RecordIO reader: chunks, splits, truncation, hostile headers, `.idx` and
//! `property` parsing.

use super::chunks::read_chunk;
use super::*;

const REC: &str = "test.rec";

fn rec_path() -> &'static Path {
    Path::new(REC)
}

/// Payloads of every record of `bytes`, in file order.
fn payloads(bytes: &[u8]) -> Result<Vec<Vec<u8>>> {
    let magic = scan(bytes, rec_path())?.magic;
    let (mut out, mut pos) = (Vec::new(), 0);
    while pos < bytes.len() {
        let (payload, next) = read_record(bytes, pos, magic, rec_path())?;
        out.push(payload.into_owned());
        pos = next;
    }
    Ok(out)
}

/// (cflag, len) of every chunk of `bytes`.
fn chunks(bytes: &[u8], magic: Magic) -> Vec<(u32, usize)> {
    let (mut out, mut pos) = (Vec::new(), 0);
    while pos < bytes.len() {
        let chunk = read_chunk(bytes, pos, magic, rec_path()).unwrap();
        out.push((chunk.cflag, chunk.data.len()));
        pos = chunk.next;
    }
    out
}

fn image_payload(label: f32, image: &[u8]) -> Vec<u8> {
    record_payload(&[], label, 0, 0, image)
}

#[test]
fn whole_records_round_trip() {
    let payloads_in = [
        image_payload(0.0, b"abc"),
        image_payload(1.0, b"abcd"),
        record_payload(&[2.0, 7.0], 0.0, 1, 2, b""),
    ];
    let mut file = Vec::new();
    payloads_in
        .iter()
        .for_each(|p| write_record(&mut file, p, false));
    assert_eq!(file.len() % 4, 0);
    assert_eq!(chunks(&file, Magic::Current), [(0, 27), (0, 28), (0, 32)]);
    assert_eq!(payloads(&file).unwrap(), payloads_in);

    let scanned = scan(&file, rec_path()).unwrap();
    assert_eq!(scanned.split, 0);
    let offsets: Vec<u64> = scanned.records.iter().map(|r| r.offset).collect();
    assert_eq!(offsets, [0, 36, 72]);
    assert_eq!(scanned.records[2].values, [2.0, 7.0]);
    assert!(!scanned.records[2].has_image && scanned.records[1].has_image);
}

#[test]
fn magic_at_aligned_offsets_splits_and_joins() {
    let m = MAGIC.to_le_bytes();
    // Magic at image offsets 0, 4 (adjacent), 12 and at the very end (payload offsets 24,
    // 28, 36, 44): a first piece, middle pieces (one empty) and an empty last piece.
    let image: Vec<u8> = [&m[..], &m, b"abcd", &m, b"xyzw", &m].concat();
    let payload = image_payload(3.0, &image);
    let mut file = Vec::new();
    write_record(&mut file, &payload, false);
    let expected = [(1, 24), (2, 0), (2, 4), (2, 4), (3, 0)];
    assert_eq!(chunks(&file, Magic::Current), expected);
    assert_eq!(payloads(&file).unwrap(), [payload]);
    assert_eq!(scan(&file, rec_path()).unwrap().split, 1);
}

#[test]
fn magic_at_unaligned_offset_is_not_split() {
    let m = MAGIC.to_le_bytes();
    let image: Vec<u8> = [&b"a"[..], &m, b"bcdefg"].concat();
    let payload = image_payload(0.0, &image);
    let mut file = Vec::new();
    write_record(&mut file, &payload, false);
    assert_eq!(chunks(&file, Magic::Current), [(0, payload.len())]);
    assert_eq!(payloads(&file).unwrap(), [payload]);
}

#[test]
fn old_magic_round_trip_and_split() {
    let old = OLD_MAGIC.to_le_bytes();
    let new = MAGIC.to_le_bytes();
    // The old writer splits at the old magic only.
    let image: Vec<u8> = [&new[..], &old, b"tail"].concat();
    let payload = image_payload(5.0, &image);
    let mut file = Vec::new();
    write_record(&mut file, &payload, true);
    write_record(&mut file, &image_payload(6.0, b"x"), true);
    assert_eq!(read_u32(&file, 0), Some(OLD_MAGIC));
    assert_eq!(chunks(&file, Magic::Old), [(1, 28), (3, 4), (0, 25)]);
    let scanned = scan(&file, rec_path()).unwrap();
    assert_eq!(scanned.magic, Magic::Old);
    assert_eq!(payloads(&file).unwrap()[0], payload);

    assert_eq!(Magic::Old.decode((3 << 30) | 17), (3, 17));
    assert_eq!(Magic::Current.decode((3 << 29) | 17), (3, 17));
    // A 30-bit length is a cflag bit for the current magic.
    assert_eq!(Magic::Current.decode(1 << 29), (1, 0));
}

/// Record boundaries of a file of three records, one of them split.
fn three_records() -> (Vec<u8>, Vec<usize>) {
    let m = MAGIC.to_le_bytes();
    let mut file = Vec::new();
    let mut ends = vec![0];
    for image in [
        &b"first"[..],
        &[&m[..], b"ab", &m, b"cdef"].concat(),
        b"xyz",
    ] {
        write_record(&mut file, &image_payload(1.0, image), false);
        ends.push(file.len());
    }
    (file, ends)
}

#[test]
fn every_truncation_is_an_error_unless_at_a_record_boundary() {
    let (file, ends) = three_records();
    for cut in 0..file.len() {
        let result = scan(&file[..cut], rec_path());
        match ends.iter().position(|&e| e == cut) {
            Some(n) => assert_eq!(result.unwrap().records.len(), n, "cut at {cut}"),
            None => match result {
                Err(Error::Format { offset, .. }) => assert!(offset <= cut as u64),
                other => panic!("cut at {cut}: expected a format error, got {other:?}"),
            },
        }
    }
}

#[test]
fn hostile_chunk_headers_are_errors() {
    let mut file = Vec::new();
    write_record(&mut file, &image_payload(0.0, b"abcd"), false);
    let lrec_at = |file: &mut Vec<u8>, lrec: u32| file[4..8].copy_from_slice(&lrec.to_le_bytes());

    let mut huge = file.clone();
    lrec_at(&mut huge, (1 << 29) - 1);
    let err = scan(&huge, rec_path()).unwrap_err();
    assert!(matches!(err, Error::Format { offset: 0, ref what, .. } if what.contains("past")));

    let mut bad_flag = file.clone();
    lrec_at(&mut bad_flag, (5 << 29) | 28);
    assert!(matches!(
        scan(&bad_flag, rec_path()),
        Err(Error::Format { .. })
    ));

    let mut bad_magic = file.clone();
    bad_magic[0] ^= 1;
    assert!(matches!(
        scan(&bad_magic, rec_path()),
        Err(Error::Format { offset: 0, .. })
    ));

    let mut garbage = file.clone();
    garbage.extend(b"junkjunk");
    let err = scan(&garbage, rec_path()).unwrap_err();
    assert!(matches!(err, Error::Format { offset: 36, .. }), "{err}");
    let mut short_garbage = file.clone();
    short_garbage.extend(b"ju");
    assert!(matches!(
        scan(&short_garbage, rec_path()),
        Err(Error::Format { offset: 36, .. })
    ));
}

#[test]
fn bad_piece_sequences_are_errors() {
    let mut file = Vec::new();
    let push = |file: &mut Vec<u8>, cflag: u32, data: &[u8]| {
        file.extend(MAGIC.to_le_bytes());
        file.extend(((cflag << 29) | data.len() as u32).to_le_bytes());
        file.extend_from_slice(data);
    };
    let header = image_payload(0.0, b"");
    push(&mut file, 3, &header);
    assert!(matches!(
        scan(&file, rec_path()),
        Err(Error::Format { offset: 0, .. })
    ));

    file.clear();
    push(&mut file, 1, &header);
    push(&mut file, 0, &header);
    let err = scan(&file, rec_path()).unwrap_err();
    let Error::Format { offset, what, .. } = err else {
        panic!("expected a format error, got {err}");
    };
    assert_eq!(offset, 32);
    assert!(what.contains("cflag 2 or 3"), "{what}");

    file.clear();
    push(&mut file, 1, &header);
    push(&mut file, 1, &header);
    assert!(matches!(
        scan(&file, rec_path()),
        Err(Error::Format { offset: 32, .. })
    ));
}

#[test]
fn hostile_payload_headers_are_errors() {
    let mut file = Vec::new();
    write_record(&mut file, b"short", false);
    let err = scan(&file, rec_path()).unwrap_err();
    assert!(matches!(err, Error::Format { offset: 0, ref what, .. } if what.contains("shorter")));

    let mut payload = image_payload(0.0, b"image");
    payload[..4].copy_from_slice(&u32::MAX.to_le_bytes());
    file.clear();
    write_record(&mut file, &payload, false);
    assert!(matches!(scan(&file, rec_path()), Err(Error::Format { .. })));

    payload[..4].copy_from_slice(&2u32.to_le_bytes());
    file.clear();
    write_record(&mut file, &payload, false);
    assert!(matches!(scan(&file, rec_path()), Err(Error::Format { .. })));
}

#[test]
fn exact_index_accepts_only_exact_integers_below_2_pow_24() {
    assert_eq!(exact_index(0.0), Some(0));
    assert_eq!(exact_index(16_777_215.0), Some(16_777_215));
    for bad in [
        16_777_216.0,
        -1.0,
        0.5,
        f32::NAN,
        f32::INFINITY,
        -0.0_f32.next_down(),
    ] {
        assert_eq!(exact_index(bad), None, "{bad}");
    }
}

#[test]
fn idx_lines_parse_and_bad_lines_are_errors() {
    let path = Path::new("train.idx");
    let entries = parse_idx(b"0\t0\n1\t40\r\n\n", path).unwrap();
    let pairs: Vec<(u64, u64, usize)> = entries.iter().map(|e| (e.key, e.offset, e.line)).collect();
    assert_eq!(pairs, [(0, 0, 1), (1, 40, 2)]);
    assert_eq!(entries[1].line_start, 4);

    for (text, line) in [
        (&b"0\t0\n1\n"[..], 2),
        (b"0\t0\t9\n", 1),
        (b"x\t0\n", 1),
        (b"0\t-4\n", 1),
        (b"0\t0\n\xff\t1\n", 2),
    ] {
        match parse_idx(text, path) {
            Err(Error::Parse { line: l, .. }) => assert_eq!(l, line),
            other => panic!("{text:?}: expected a parse error, got {other:?}"),
        }
    }
}

#[test]
fn property_parses_first_line_only() {
    let path = Path::new("property");
    let expected = Property {
        num_classes: 10,
        height: 112,
        width: 112,
    };
    assert_eq!(parse_property(b"10,112,112", path).unwrap(), expected);
    let four_lines = b"\xEF\xBB\xBF10, 112, 112\r\n100\nshuffled\n2020";
    assert_eq!(parse_property(four_lines, path).unwrap(), expected);
    for bad in [
        &b""[..],
        b"10,112",
        b"10,112,0",
        b"ten,112,112",
        b"10,112,112,3",
        b"\xff",
    ] {
        let err = parse_property(bad, path).unwrap_err();
        assert!(
            matches!(err, Error::Parse { line: 1, .. }),
            "{bad:?}: {err}"
        );
    }
}

#[test]
fn label_runs_end_where_labels_change() {
    let images: Vec<RecordIoImage> = [0, 0, 1, 2, 2, 2]
        .iter()
        .zip(1..)
        .map(|(&label, key)| RecordIoImage {
            key,
            offset: 0,
            label,
        })
        .collect();
    assert_eq!(label_run_ends(&images), [2, 2, 3, 6, 6, 6]);
    assert!(label_run_ends(&[]).is_empty());
}
