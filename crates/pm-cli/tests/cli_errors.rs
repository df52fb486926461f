//! The `pm` binary on bad input: every case exits non-zero with a message naming the file and
//! what was wrong, and none panics.

use std::process::{Command, Output};

fn pm(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_pm"))
        .args(args)
        .env("RUST_LOG", "off")
        .output()
        .expect("run pm")
}

fn assert_clean_failure(out: &Output, expected: &[&str]) {
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    for piece in expected {
        assert!(stderr.contains(piece), "stderr lacks {piece:?}: {stderr}");
    }
}

#[test]
fn a_config_with_a_typo_names_the_key_and_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("typo.toml");
    std::fs::write(
        &config,
        "[data]\ndataset = \"d\"\nidentites_per_batch = 4\n[run]\ndir = \"r\"\n",
    )
    .unwrap();
    let out = pm(&["train", "--config", config.to_str().unwrap()]);
    assert_clean_failure(&out, &["typo.toml", "identites_per_batch"]);
}

#[test]
fn a_missing_config_and_a_missing_dataset_are_named() {
    let dir = tempfile::tempdir().unwrap();
    let out = pm(&["train", "--config", "/nonexistent/run.toml"]);
    assert_clean_failure(&out, &["/nonexistent/run.toml"]);

    let config = dir.path().join("run.toml");
    let run = dir.path().join("run");
    let text = format!(
        "[data]\ndataset = \"/nonexistent/data\"\n[run]\ndir = \"{}\"\n",
        run.display()
    );
    std::fs::write(&config, text).unwrap();
    let out = pm(&["train", "--config", config.to_str().unwrap()]);
    assert_clean_failure(&out, &["/nonexistent/data", "cargo xtask pack"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        stderr.matches("(os error 2)").count(),
        1,
        "cause repeated: {stderr}"
    );
}

#[test]
fn eval_of_a_missing_run_is_named() {
    let out = pm(&[
        "eval",
        "--run",
        "/nonexistent/run",
        "--protocol",
        "lfw",
        "--data",
        "/x",
    ]);
    assert_clean_failure(&out, &["/nonexistent/run"]);
}
