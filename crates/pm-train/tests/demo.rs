//! The embedded demo end to end at a tiny size: it renders, packs, trains, verifies and
//! writes its report, and refuses to overwrite a folder that is not an earlier demo.

use pm_train::NoProgress;
use pm_train::demo::{DemoConfig, run_demo};

fn tiny(out: std::path::PathBuf) -> DemoConfig {
    DemoConfig {
        out,
        train_identities: 48,
        test_identities: 20,
        images_per_identity: 4,
        steps: 12,
        memory_capacity: 40,
        seed: 5,
    }
}

#[test]
fn the_demo_runs_end_to_end_and_reports_three_models() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("demo");
    let report = run_demo(&tiny(out.clone()), &mut NoProgress).unwrap();
    assert_eq!((report.pack.identities, report.pack.images), (48, 192));
    assert_eq!(report.train.steps, 12);
    let models: Vec<&str> = report.results.iter().map(|r| r.model.as_str()).collect();
    assert_eq!(
        models,
        ["raw pixels", "untrained encoder", "trained encoder"]
    );
    assert!(
        report
            .results
            .iter()
            .all(|r| r.pairs == 1200 && r.folds == 10)
    );
    assert!(out.join("demo.json").is_file());

    // A second run replaces an earlier demo.
    run_demo(&tiny(out.clone()), &mut NoProgress).unwrap();
}

#[test]
fn the_demo_refuses_a_folder_it_did_not_write() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("precious.txt"), "keep me").unwrap();
    let err = run_demo(&tiny(dir.path().to_path_buf()), &mut NoProgress).unwrap_err();
    assert!(err.to_string().contains("not an earlier demo"), "{err}");
    assert!(dir.path().join("precious.txt").is_file());
}
