//! Public-API tests of `pm-eval`: metrics against hand-computed cases and a brute-force
//! reference, protocol parsing on small trees made in a tempdir, and (when `PM_SHARED_DATA` is
//! set) the real LFW and CFP protocols.

use std::fs;
use std::path::{Path, PathBuf};

use pm_eval::{
    CfpKind, Error, FoldAccuracy, Pair, PairProtocol, TarAtFar, VerificationResult, cfp_pairs,
    format_table, kfold_accuracy, lfw_pairs, tar_at_far, verify,
};
use proptest::prelude::*;

// ---------------------------------------------------------------------------------------------
// Helpers

/// Whether `a` and `b` agree within `abs + rel * |b|`.
fn close(a: f64, b: f64) -> bool {
    const ABS: f64 = 1e-12;
    const REL: f64 = 1e-9;
    (a - b).abs() <= ABS + REL * b.abs()
}

/// Asserts element-wise closeness of two slices.
fn assert_all_close(found: &[f64], expected: &[f64], what: &str) {
    assert_eq!(found.len(), expected.len(), "{what}: length");
    for (k, (&f, &e)) in found.iter().zip(expected).enumerate() {
        assert!(close(f, e), "{what}[{k}]: found {f}, expected {e}");
    }
}

/// Writes `text` to `path`, creating parent folders.
fn write(path: &Path, text: &str) {
    fs::create_dir_all(path.parent().unwrap()).unwrap();
    fs::write(path, text).unwrap();
}

/// Creates an empty fake image (existence is all a protocol reader checks).
fn touch(path: &Path) {
    write(path, "");
}

// ---------------------------------------------------------------------------------------------
// k-fold accuracy

#[test]
fn separable_scores_give_full_accuracy() {
    // Four folds of (same, different); every same score is above every different score.
    let scores = [0.9, 0.1, 0.8, 0.2, 0.95, 0.3, 0.7, 0.05];
    let same = [true, false, true, false, true, false, true, false];
    let result = kfold_accuracy(&scores, &same, 4).unwrap();
    assert_all_close(&result.folds, &[1.0; 4], "fold accuracy");
    assert!(
        close(result.mean, 1.0) && close(result.std, 0.0),
        "{result:?}"
    );
}

#[test]
fn hand_computed_thresholds_prefer_the_smallest_on_ties() {
    // Fold 0: S .875, S .375, D .3125, D .125.   Fold 1: S .5, S .1875, D .25, D .0625.
    // Held-out fold 0, trained on fold 1 (sorted D .0625, S .1875, D .25, S .5): the candidates
    // -.9375, .125, .21875, .375, 1.5 get 2, 3, 2, 3, 2 right: tie between .125 and .375 → .125.
    // On fold 0 that gets .3125 (D) wrong: 3/4.
    // Held-out fold 1, trained on fold 0 (sorted D .125, D .3125, S .375, S .875): .34375 gets all
    // 4 right. On fold 1 that gets .1875 (S) wrong: 3/4.
    let scores = [0.875, 0.375, 0.3125, 0.125, 0.5, 0.1875, 0.25, 0.0625];
    let same = [true, true, false, false, true, true, false, false];
    let result = kfold_accuracy(&scores, &same, 2).unwrap();
    assert_all_close(&result.thresholds, &[0.125, 0.34375], "thresholds");
    assert_all_close(&result.folds, &[0.75, 0.75], "fold accuracy");
    assert!(
        close(result.mean, 0.75) && close(result.std, 0.0),
        "{result:?}"
    );
}

#[test]
fn std_is_the_population_std_and_ends_are_candidates() {
    // Fold 0: S .75, D .25.  Fold 1: S .5, D .625.
    // Held-out 0, trained on fold 1: "everything same" (min - 1 = -.5) gets 1 of 2, as does
    // max + 1; the smallest wins → -.5, which gets 1 of 2 on fold 0.
    // Held-out 1, trained on fold 0: .5 separates; on fold 1 both pairs are wrong.
    let scores = [0.75, 0.25, 0.5, 0.625];
    let same = [true, false, true, false];
    let result = kfold_accuracy(&scores, &same, 2).unwrap();
    assert_all_close(&result.thresholds, &[-0.5, 0.5], "thresholds");
    assert_all_close(&result.folds, &[0.5, 0.0], "fold accuracy");
    // Population std of {0.5, 0} is 0.25; the sample std would be 0.354.
    assert!(
        close(result.mean, 0.25) && close(result.std, 0.25),
        "{result:?}"
    );
}

#[test]
fn kfold_rejects_bad_input() {
    let same = [true, false, true, false];
    let nan = [0.5, f32::NAN, 0.1, 0.2];
    assert!(matches!(
        kfold_accuracy(&nan, &same, 2),
        Err(Error::Protocol(_))
    ));
    let scores = [0.5, 0.4, 0.1, 0.2];
    assert!(matches!(
        kfold_accuracy(&scores, &same, 3),
        Err(Error::Protocol(_))
    ));
    assert!(matches!(
        kfold_accuracy(&scores, &same, 1),
        Err(Error::Protocol(_))
    ));
    assert!(matches!(
        kfold_accuracy(&scores[..3], &same, 2),
        Err(Error::Protocol(_))
    ));
    assert!(matches!(
        kfold_accuracy(&[], &[], 2),
        Err(Error::Protocol(_))
    ));
}

// ---------------------------------------------------------------------------------------------
// TAR@FAR

#[test]
fn tar_at_far_is_conservative() {
    // Same: .875, .75, .375.   Different: .625, .25, .125, .0625 (4 of them).
    let scores = [0.875, 0.625, 0.75, 0.25, 0.375, 0.125, 0.0625];
    let same = [true, false, true, false, true, false, false];
    let check = |target: f64, tar: f64, far: f64, threshold: f64| {
        let found: TarAtFar = tar_at_far(&scores, &same, target).unwrap();
        assert!(close(found.tar, tar), "target {target}: {found:?}");
        assert!(close(found.far, far), "target {target}: {found:?}");
        assert!(
            close(found.threshold, threshold),
            "target {target}: {found:?}"
        );
        assert!(found.far <= target);
    };
    // 0.2 allows no accepted different pair (1/4 > 0.2): the threshold must clear .625, and the
    // lowest such candidate is the midpoint to .75. The nearest ROC point (FAR .25) would exceed.
    check(0.2, 2.0 / 3.0, 0.0, 0.6875);
    check(0.0, 2.0 / 3.0, 0.0, 0.6875);
    // 0.25 is met exactly by accepting only .625: threshold between .25 and .375.
    check(0.25, 1.0, 0.25, 0.3125);
    // 1.0 accepts everything: the lower end, min - 1.
    check(1.0, 1.0, 1.0, 0.0625 - 1.0);
}

#[test]
fn tar_at_far_rejects_bad_input() {
    let scores = [0.5, 0.4];
    assert!(matches!(
        tar_at_far(&scores, &[true, true], 1e-3),
        Err(Error::Protocol(_))
    ));
    assert!(matches!(
        tar_at_far(&scores, &[true, false], 1.5),
        Err(Error::Protocol(_))
    ));
    assert!(matches!(
        tar_at_far(&scores, &[true, false], f64::NAN),
        Err(Error::Protocol(_))
    ));
    let nan = [f32::NAN, 0.4];
    assert!(matches!(
        tar_at_far(&nan, &[true, false], 1e-3),
        Err(Error::Protocol(_))
    ));
}

// ---------------------------------------------------------------------------------------------
// Brute-force references: every candidate threshold against every pair, O(n²).

/// Midpoints between consecutive distinct sorted scores, plus `min - 1` and `max + 1`.
fn reference_candidates(scores: &[f32]) -> Vec<f64> {
    let mut distinct: Vec<f64> = scores.iter().map(|&s| f64::from(s)).collect();
    distinct.sort_by(f64::total_cmp);
    distinct.dedup();
    let mut candidates = vec![distinct[0] - 1.0];
    candidates.extend(distinct.windows(2).map(|w| (w[0] + w[1]) / 2.0));
    candidates.push(distinct[distinct.len() - 1] + 1.0);
    candidates
}

/// Number of pairs classified correctly by `score > threshold`.
fn reference_correct(scores: &[f32], same: &[bool], threshold: f64) -> usize {
    scores
        .iter()
        .zip(same)
        .filter(|&(&s, &y)| (f64::from(s) > threshold) == y)
        .count()
}

/// k-fold accuracy by trying every candidate on every training pair.
fn reference_kfold(scores: &[f32], same: &[bool], folds: usize) -> (Vec<f64>, Vec<f64>) {
    let fold_size = scores.len() / folds;
    let (mut accuracies, mut thresholds) = (Vec::new(), Vec::new());
    for fold in 0..folds {
        let held_out = fold * fold_size..(fold + 1) * fold_size;
        let train: Vec<usize> = (0..scores.len())
            .filter(|i| !held_out.contains(i))
            .collect();
        let train_scores: Vec<f32> = train.iter().map(|&i| scores[i]).collect();
        let train_same: Vec<bool> = train.iter().map(|&i| same[i]).collect();
        let mut best = (0, f64::NAN);
        for t in reference_candidates(&train_scores) {
            let correct = reference_correct(&train_scores, &train_same, t);
            if best.1.is_nan() || correct > best.0 {
                best = (correct, t);
            }
        }
        let right = reference_correct(&scores[held_out.clone()], &same[held_out], best.1);
        accuracies.push(right as f64 / fold_size as f64);
        thresholds.push(best.1);
    }
    (accuracies, thresholds)
}

/// TAR@FAR by computing the FAR of every candidate, lowest first.
fn reference_tar_at_far(scores: &[f32], same: &[bool], target: f64) -> (f64, f64, f64) {
    let n_same = same.iter().filter(|&&y| y).count() as f64;
    let n_different = same.len() as f64 - n_same;
    for t in reference_candidates(scores) {
        let accepted = |want: bool| {
            let n = scores
                .iter()
                .zip(same)
                .filter(|&(&s, &y)| y == want && f64::from(s) > t);
            n.count() as f64
        };
        let far = accepted(false) / n_different;
        if far <= target {
            return (accepted(true) / n_same, far, t);
        }
    }
    unreachable!("max + 1 accepts nothing")
}

/// Folds, and scores drawn either from a coarse grid (many ties) or from a continuous range.
fn scored_pairs() -> impl Strategy<Value = (usize, Vec<(f32, bool)>)> {
    (2usize..=6, 1usize..=25, any::<bool>()).prop_flat_map(|(folds, fold_size, coarse)| {
        let score = if coarse {
            (0u8..12).prop_map(|k| f32::from(k) / 8.0 - 0.5).boxed()
        } else {
            (-1.0f32..1.0).boxed()
        };
        let pairs = proptest::collection::vec((score, any::<bool>()), folds * fold_size);
        (Just(folds), pairs)
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    #[test]
    fn kfold_matches_brute_force((folds, pairs) in scored_pairs()) {
        let (scores, same): (Vec<f32>, Vec<bool>) = pairs.into_iter().unzip();
        let found: FoldAccuracy = kfold_accuracy(&scores, &same, folds).unwrap();
        let (accuracies, thresholds) = reference_kfold(&scores, &same, folds);
        assert_all_close(&found.thresholds, &thresholds, "thresholds");
        assert_all_close(&found.folds, &accuracies, "fold accuracy");

        let mean = accuracies.iter().sum::<f64>() / folds as f64;
        let var = accuracies.iter().map(|a| (a - mean).powi(2)).sum::<f64>() / folds as f64;
        prop_assert!(close(found.mean, mean) && close(found.std, var.sqrt()));
    }

    #[test]
    fn tar_at_far_matches_brute_force(
        (_, pairs) in scored_pairs(),
        target in prop_oneof![Just(0.0), Just(1e-3), Just(0.1), Just(0.25), Just(0.5), Just(1.0)],
    ) {
        let (scores, same): (Vec<f32>, Vec<bool>) = pairs.into_iter().unzip();
        prop_assume!(same.iter().any(|&y| y) && same.iter().any(|&y| !y));
        let found = tar_at_far(&scores, &same, target).unwrap();
        let (tar, far, threshold) = reference_tar_at_far(&scores, &same, target);
        prop_assert!(close(found.tar, tar) && close(found.far, far), "{found:?} vs {tar} {far}");
        prop_assert!(close(found.threshold, threshold), "{found:?} vs {threshold}");
    }
}

// ---------------------------------------------------------------------------------------------
// verify and the report table

/// Two folds of (same, different) over four 2-d images.
fn tiny_protocol() -> PairProtocol {
    let pair = |a, b, same| Pair { a, b, same };
    PairProtocol {
        name: "tiny".to_owned(),
        images: (0..4).map(|k| PathBuf::from(format!("{k}.jpg"))).collect(),
        pairs: vec![
            pair(0, 1, true),
            pair(0, 2, false),
            pair(2, 3, true),
            pair(1, 3, false),
        ],
        folds: 2,
    }
}

#[test]
fn verify_scores_pairs_by_cosine() {
    // Rows are unnormalised: 0 and 1 point the same way, 2 and 3 nearly so, 0 ⟂ 2.
    let embeddings = [3.0, 0.0, 0.5, 0.0, 0.0, 2.0, 0.1, 1.0];
    let result = verify(&tiny_protocol(), &embeddings, 2, "toy").unwrap();
    assert_eq!((result.pairs, result.folds), (4, 2));
    assert_eq!(
        (result.protocol.as_str(), result.model.as_str()),
        ("tiny", "toy")
    );
    assert!(close(result.accuracy.mean, 1.0), "{result:?}");
    assert!(close(result.tar_at_far.tar, 1.0) && close(result.tar_at_far.far, 0.0));
    assert!(result.threshold_rule.contains("population std"));
}

#[test]
fn verify_rejects_zero_rows_and_wrong_shapes() {
    let zero_row = [3.0, 0.0, 0.0, 0.0, 0.0, 2.0, 0.1, 1.0];
    let err = verify(&tiny_protocol(), &zero_row, 2, "toy").unwrap_err();
    assert!(
        matches!(&err, Error::Protocol(what) if what.contains("1.jpg")),
        "{err}"
    );
    let short = [1.0; 7];
    assert!(matches!(
        verify(&tiny_protocol(), &short, 2, "toy"),
        Err(Error::Protocol(_))
    ));
    assert!(matches!(
        verify(&tiny_protocol(), &[], 0, "toy"),
        Err(Error::Protocol(_))
    ));
}

#[test]
fn table_columns_are_aligned() {
    let embeddings = [3.0, 0.0, 0.5, 0.0, 0.0, 2.0, 0.1, 1.0];
    let short = verify(&tiny_protocol(), &embeddings, 2, "a").unwrap();
    let mut long: VerificationResult = short.clone();
    long.protocol = "a_longer_protocol".to_owned();
    long.model = "resnet-with-a-long-name".to_owned();

    let table = format_table(&[short, long]);
    let lines: Vec<&str> = table.lines().collect();
    assert_eq!(lines.len(), 3, "{table}");
    assert!(lines[1].contains("100.00 ± 0.00"), "{table}");
    let model_column =
        |line: &str, model: &str| line.find(model).map(|b| line[..b].chars().count());
    assert_eq!(
        model_column(lines[0], "model"),
        model_column(lines[1], "a  "),
        "{table}"
    );
    assert_eq!(
        model_column(lines[0], "model"),
        model_column(lines[2], "resnet"),
        "{table}"
    );
    let ends: Vec<usize> = lines.iter().map(|l| l.chars().count()).collect();
    assert!(
        ends.windows(2).all(|w| w[0] == w[1]),
        "right-aligned numbers end together:\n{table}"
    );
}

// ---------------------------------------------------------------------------------------------
// LFW pairs.txt

/// An LFW-like tree: Alice 1-2, Bob 1-2, Carol 1; returns (images root, pairs.txt path).
fn lfw_tree(dir: &Path, pairs: &str) -> (PathBuf, PathBuf) {
    let root = dir.join("images");
    for (name, n) in [("Alice", 2), ("Bob", 2), ("Carol", 1)] {
        for i in 1..=n {
            touch(&root.join(name).join(format!("{name}_{i:04}.jpg")));
        }
    }
    let pairs_txt = dir.join("pairs.txt");
    write(&pairs_txt, pairs);
    (root, pairs_txt)
}

#[test]
fn lfw_reads_folds_and_deduplicates_images() {
    let dir = tempfile::tempdir().unwrap();
    let text = "2\t1\nAlice\t1\t2\nAlice\t1\tBob\t1\nBob 1 2\nCarol  1 Alice 2\n\n";
    let (root, pairs_txt) = lfw_tree(dir.path(), text);
    let protocol = lfw_pairs(&root, &pairs_txt, "lfw-mini").unwrap();

    assert_eq!((protocol.name.as_str(), protocol.folds), ("lfw-mini", 2));
    let expected_images = [
        "Alice/Alice_0001",
        "Alice/Alice_0002",
        "Bob/Bob_0001",
        "Bob/Bob_0002",
    ];
    let mut expected: Vec<PathBuf> = expected_images
        .iter()
        .map(|p| root.join(format!("{p}.jpg")))
        .collect();
    expected.push(root.join("Carol/Carol_0001.jpg"));
    assert_eq!(protocol.images, expected);
    let pair = |a, b, same| Pair { a, b, same };
    let pairs = vec![
        pair(0, 1, true),
        pair(0, 2, false),
        pair(2, 3, true),
        pair(4, 1, false),
    ];
    assert_eq!(protocol.pairs, pairs);
}

#[test]
fn lfw_unknown_identity_is_a_missing_image_with_its_line() {
    let dir = tempfile::tempdir().unwrap();
    let text = "2\t1\nAlice\t1\t2\nAlice\t1\tBob\t1\nBob\t1\t2\nDave\t1\tAlice\t2\n";
    let (root, pairs_txt) = lfw_tree(dir.path(), text);
    let err = lfw_pairs(&root, &pairs_txt, "lfw").unwrap_err();
    let Error::MissingImage { path, line, image } = &err else {
        panic!("{err}")
    };
    assert_eq!((path, *line), (&pairs_txt, 5));
    assert_eq!(image, &root.join("Dave/Dave_0001.jpg"));
    assert!(err.to_string().contains("pairs.txt:5"), "{err}");
}

/// Asserts that parsing `pairs` fails with a `Parse` error at `expected_line`.
fn assert_lfw_parse_error(pairs: &str, expected_line: usize) {
    let dir = tempfile::tempdir().unwrap();
    let (root, pairs_txt) = lfw_tree(dir.path(), pairs);
    match lfw_pairs(&root, &pairs_txt, "lfw") {
        Err(Error::Parse { path, line, what }) => {
            assert_eq!((&path, line), (&pairs_txt, expected_line), "{what}");
        }
        other => panic!("expected a parse error at line {expected_line}: {other:?}"),
    }
}

#[test]
fn lfw_bad_header_is_a_parse_error() {
    assert_lfw_parse_error("2\nAlice 1 2\nAlice 1 Bob 1\n", 1);
    assert_lfw_parse_error("two 1\nAlice 1 2\nAlice 1 Bob 1\n", 1);
    assert_lfw_parse_error("0 1\n", 1);
    assert_lfw_parse_error("", 1);
}

#[test]
fn lfw_wrong_counts_are_parse_errors() {
    // Too few lines: the error points at the last line read.
    assert_lfw_parse_error("2 1\nAlice 1 2\nAlice 1 Bob 1\nBob 1 2\n", 4);
    // Too many: the first extra line.
    assert_lfw_parse_error(
        "2 1\nAlice 1 2\nAlice 1 Bob 1\nBob 1 2\nCarol 1 Bob 1\nBob 1 2\n",
        6,
    );
    // A different-person line where a same-person line belongs, and the reverse.
    assert_lfw_parse_error(
        "2 1\nAlice 1 Bob 1\nAlice 1 Bob 1\nBob 1 2\nCarol 1 Alice 2\n",
        2,
    );
    assert_lfw_parse_error("2 1\nAlice 1 2\nBob 1 2\nBob 1 2\nCarol 1 Alice 2\n", 3);
    // Not a number.
    assert_lfw_parse_error(
        "2 1\nAlice one 2\nAlice 1 Bob 1\nBob 1 2\nCarol 1 Alice 2\n",
        2,
    );
    assert_lfw_parse_error(
        "2 1\nAlice 1 2\nAlice 1 Bob -1\nBob 1 2\nCarol 1 Alice 2\n",
        3,
    );
    // One fold cannot choose a threshold on the others.
    assert_lfw_parse_error("1 1\nAlice 1 2\nAlice 1 Bob 1\n", 1);
}

#[test]
fn missing_pairs_file_is_an_io_error() {
    let dir = tempfile::tempdir().unwrap();
    let err = lfw_pairs(dir.path(), &dir.path().join("nope.txt"), "lfw").unwrap_err();
    assert!(
        matches!(&err, Error::Io { path, .. } if path.ends_with("nope.txt")),
        "{err}"
    );
}

// ---------------------------------------------------------------------------------------------
// CFP

/// A CFP-like tree: 3 frontal and 2 profile images, 10 folds of (same, different).
fn cfp_tree(root: &Path) {
    let images = root.join("Data/Images");
    for image in [
        "001/frontal/01",
        "001/frontal/02",
        "002/frontal/01",
        "001/profile/01",
    ] {
        touch(&images.join(format!("{image}.jpg")));
    }
    touch(&images.join("002/profile/01.jpg"));

    let protocol = root.join("Protocol");
    let frontal = "1 ../Data/Images/001/frontal/01.jpg\n2 ../Data/Images/001/frontal/02.jpg\n\
                   3 ../Data/Images/002/frontal/01.jpg\n";
    write(&protocol.join("Pair_list_F.txt"), frontal);
    let profile = "1 ../Data/Images/001/profile/01.jpg\n2 ../Data/Images/002/profile/01.jpg\n";
    write(&protocol.join("Pair_list_P.txt"), profile);
    for fold in 1..=10 {
        let ff = protocol.join(format!("Split/FF/{fold:02}"));
        write(&ff.join("same.txt"), "1,2\n");
        write(&ff.join("diff.txt"), "1,3\n");
        let fp = protocol.join(format!("Split/FP/{fold:02}"));
        write(&fp.join("same.txt"), "1,1\n");
        write(&fp.join("diff.txt"), "3, 1\n");
    }
}

#[test]
fn cfp_reads_both_protocols_in_fold_order() {
    let dir = tempfile::tempdir().unwrap();
    cfp_tree(dir.path());
    let images = dir.path().join("Data/Images");
    let pair = |a, b, same| Pair { a, b, same };

    let ff = cfp_pairs(dir.path(), CfpKind::FF).unwrap();
    assert_eq!(
        (ff.name.as_str(), ff.folds, ff.pairs.len()),
        ("cfp_ff", 10, 20)
    );
    let expected = [
        "001/frontal/01.jpg",
        "001/frontal/02.jpg",
        "002/frontal/01.jpg",
    ];
    assert_eq!(ff.images, expected.map(|p| images.join(p)));
    assert_eq!(ff.pairs[..2], [pair(0, 1, true), pair(0, 2, false)]);

    let fp = cfp_pairs(dir.path(), CfpKind::FP).unwrap();
    assert_eq!(
        (fp.name.as_str(), fp.folds, fp.pairs.len()),
        ("cfp_fp", 10, 20)
    );
    let expected = [
        "001/frontal/01.jpg",
        "001/profile/01.jpg",
        "002/frontal/01.jpg",
    ];
    assert_eq!(fp.images, expected.map(|p| images.join(p)));
    assert_eq!(fp.pairs[18..], [pair(0, 1, true), pair(2, 1, false)]);
}

#[test]
fn cfp_out_of_range_index_names_the_split_file_and_line() {
    let dir = tempfile::tempdir().unwrap();
    cfp_tree(dir.path());
    let split = dir.path().join("Protocol/Split/FP/05/diff.txt");
    write(&split, "3,1\n1,3\n");
    match cfp_pairs(dir.path(), CfpKind::FP) {
        Err(Error::Parse { path, line, what }) => {
            assert_eq!((&path, line), (&split, 2), "{what}");
            assert!(what.contains("out of range"), "{what}");
        }
        other => panic!("expected a parse error: {other:?}"),
    }
    // Index 0 is out of range too (indices are 1-based); FF is untouched by the FP edit.
    write(&dir.path().join("Protocol/Split/FF/10/same.txt"), "0,2\n");
    let err = cfp_pairs(dir.path(), CfpKind::FF).unwrap_err();
    assert!(matches!(&err, Error::Parse { line: 1, .. }), "{err}");
}

#[test]
fn cfp_missing_image_names_the_pair_list_line() {
    let dir = tempfile::tempdir().unwrap();
    cfp_tree(dir.path());
    fs::remove_file(dir.path().join("Data/Images/002/frontal/01.jpg")).unwrap();
    let err = cfp_pairs(dir.path(), CfpKind::FF).unwrap_err();
    let Error::MissingImage { path, line, image } = &err else {
        panic!("{err}")
    };
    assert!(path.ends_with("Protocol/Pair_list_F.txt"), "{err}");
    assert_eq!(*line, 3);
    assert!(image.ends_with("002/frontal/01.jpg"), "{err}");
}

#[test]
fn cfp_unequal_folds_are_rejected() {
    let dir = tempfile::tempdir().unwrap();
    cfp_tree(dir.path());
    write(
        &dir.path().join("Protocol/Split/FF/07/diff.txt"),
        "1,3\n2,3\n",
    );
    let err = cfp_pairs(dir.path(), CfpKind::FF).unwrap_err();
    assert!(
        matches!(&err, Error::Parse { path, .. } if path.ends_with("FF/07")),
        "{err}"
    );
}

// ---------------------------------------------------------------------------------------------
// The real protocols, from `$PM_SHARED_DATA`

/// The shared data folder, or `None` with a skip message.
fn shared_data(test: &str) -> Option<PathBuf> {
    match std::env::var_os("PM_SHARED_DATA") {
        Some(dir) => Some(PathBuf::from(dir)),
        None => {
            eprintln!("SKIPPED {test}: set PM_SHARED_DATA to the shared data folder to run it");
            None
        }
    }
}

/// Checks the fold structure every official protocol shares: `folds` blocks, each half same
/// then half different (LFW) or at least half same (CFP writes same before diff as well).
fn assert_fold_blocks(protocol: &PairProtocol, folds: usize, pairs: usize) {
    assert_eq!((protocol.pairs.len(), protocol.folds), (pairs, folds));
    let per_fold = pairs / folds;
    for (k, pair) in protocol.pairs.iter().enumerate() {
        assert_eq!(pair.same, k % per_fold < per_fold / 2, "pair {k}");
        assert!(pair.a < protocol.images.len() && pair.b < protocol.images.len());
    }
}

#[test]
fn real_lfw_pairs() -> pm_eval::Result<()> {
    let Some(data) = shared_data("real_lfw_pairs") else {
        return Ok(());
    };
    let lfw = data.join("lfw");
    let protocol = lfw_pairs(&lfw.join("images"), &lfw.join("pairs.txt"), "lfw")?;
    assert_fold_blocks(&protocol, 10, 6000);
    eprintln!(
        "lfw: {} pairs, {} unique images",
        protocol.pairs.len(),
        protocol.images.len()
    );
    // Counted independently from pairs.txt with awk | sort -u.
    assert_eq!(protocol.images.len(), 7701);
    Ok(())
}

#[test]
fn real_cfp_pairs() -> pm_eval::Result<()> {
    let Some(data) = shared_data("real_cfp_pairs") else {
        return Ok(());
    };
    for (kind, unique_images) in [(CfpKind::FF, 4764), (CfpKind::FP, 5901)] {
        let protocol = cfp_pairs(&data.join("cfp"), kind)?;
        assert_fold_blocks(&protocol, 10, 7000);
        let name = &protocol.name;
        eprintln!(
            "{name}: {} pairs, {} unique images",
            protocol.pairs.len(),
            protocol.images.len()
        );
        // Counted independently from the split files with awk | sort -u.
        assert_eq!(protocol.images.len(), unique_images, "{name}");
    }
    Ok(())
}
