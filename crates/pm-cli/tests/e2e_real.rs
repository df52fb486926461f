//! End to end on real faces: pack a few hundred LFW images, train a short Prototype Memory run
//! with the `pm` binary, verify on LFW pairs of other people, and check that the loss falls and
//! the report is well formed. Needs `PM_SHARED_DATA` (set by `.ci/run`) pointing at
//! `../shared/data`; without it the test says so and does nothing (under CI it fails).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;

use pm_data::{Crop, PackConfig, Preprocess};

fn shared_data() -> Option<PathBuf> {
    match std::env::var_os("PM_SHARED_DATA") {
        Some(dir) => Some(PathBuf::from(dir)),
        None if std::env::var_os("CI").is_some() => {
            panic!("PM_SHARED_DATA is not set under CI: .ci/run must point it at ../shared/data")
        }
        None => {
            eprintln!(
                "SKIPPED: set PM_SHARED_DATA=<path to shared/data> to run the real-face test"
            );
            None
        }
    }
}

/// The first `per_class` same and different pairs of each fold of the real pairs.txt.
fn pairs_subset(pairs_txt: &Path, per_class: usize) -> (String, BTreeSet<String>) {
    let text = std::fs::read_to_string(pairs_txt).expect("pairs.txt");
    let lines: Vec<&str> = text.lines().skip(1).collect();
    let mut out = format!("10\t{per_class}\n");
    let mut names = BTreeSet::new();
    for fold in lines.chunks(600) {
        for half in fold.chunks(300) {
            for line in &half[..per_class] {
                let fields: Vec<&str> = line.split_whitespace().collect();
                names.insert(fields[0].to_string());
                if fields.len() == 4 {
                    names.insert(fields[2].to_string());
                }
                out.push_str(line);
                out.push('\n');
            }
        }
    }
    (out, names)
}

/// Links up to `per_identity` images of `identities` LFW identities (≥ 4 images each, none of
/// them in `held_out`) into `dest/<name>/`.
fn training_subset(images: &Path, held_out: &BTreeSet<String>, dest: &Path) -> usize {
    let mut folders: BTreeMap<String, Vec<PathBuf>> = BTreeMap::new();
    for entry in std::fs::read_dir(images).expect("lfw images") {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().to_string();
        let mut files: Vec<PathBuf> = std::fs::read_dir(&path)
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        files.sort();
        if files.len() >= 4 && !held_out.contains(&name) {
            folders.insert(name, files);
        }
    }
    let mut linked = 0;
    for (name, files) in folders.iter().take(40) {
        std::fs::create_dir_all(dest.join(name)).unwrap();
        for file in files.iter().take(6) {
            std::os::unix::fs::symlink(file, dest.join(name).join(file.file_name().unwrap()))
                .unwrap();
            linked += 1;
        }
    }
    linked
}

fn pm(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_pm"))
        .args(args)
        .env("RUST_LOG", "warn")
        .output()
        .expect("run pm")
}

const CONFIG: &str = r#"
[data]
dataset = "DATASET"
identities_per_batch = 8
images_per_identity = 2
[model]
input_size = 32
widths = [8, 16, 32]
blocks_per_stage = 1
stem_stride = 2
embedding_dim = 32
[memory]
capacity = 32
[optim]
lr = 0.1
momentum = 0.9
weight_decay = 5e-4
steps = 120
warmup_steps = 10
[run]
dir = "RUN"
checkpoint_every = 60
log_every = 5
"#;

#[test]
fn pack_train_and_verify_on_real_faces() {
    let Some(shared) = shared_data() else { return };
    let lfw = shared.join("lfw");
    let dir = tempfile::tempdir().unwrap();

    // Held-out pairs, and training identities that never appear in them.
    let (pairs, held_out) = pairs_subset(&lfw.join("pairs.txt"), 10);
    let pairs_file = dir.path().join("pairs.txt");
    std::fs::write(&pairs_file, pairs).unwrap();
    let linked = training_subset(&lfw.join("images"), &held_out, &dir.path().join("train"));
    assert!((150..=240).contains(&linked), "{linked} training images");

    // Pack.
    let dataset = dir.path().join("dataset");
    let pack = PackConfig {
        exclude: BTreeSet::new(),
        min_images: 2,
        preprocess: Preprocess {
            crop: Crop::Center { fraction: 0.5 },
            size: 32,
        },
        max_images_per_shard: 100,
        storage: pm_data::Storage::Raw,
        append: false,
    };
    let report = pm_data::pack_folder(&dir.path().join("train"), &dataset, &pack).unwrap();
    assert_eq!((report.identities, report.images), (40, linked));

    // Train with the binary.
    let run = dir.path().join("run");
    let config = CONFIG
        .replace("DATASET", &dataset.display().to_string())
        .replace("RUN", &run.display().to_string());
    let config_file = dir.path().join("train.toml");
    std::fs::write(&config_file, config).unwrap();
    let out = pm(&["train", "--config", config_file.to_str().unwrap()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let summary: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(summary["steps"], 120);
    assert_loss_falls(&run.join("metrics.jsonl"));
    for file in [
        "config.toml",
        "model.safetensors",
        "train.log",
        "checkpoints/step-00000120/trainer.json",
    ] {
        assert!(
            run.join(file).is_file(),
            "{file} missing from the run directory"
        );
    }

    // Verify on the held-out pairs.
    let json = dir.path().join("eval.json");
    let args = [
        "eval",
        "--run",
        run.to_str().unwrap(),
        "--protocol",
        "lfw",
        "--data",
    ];
    let images = lfw.join("images");
    let mut args: Vec<&str> = args.to_vec();
    args.extend([
        images.to_str().unwrap(),
        "--pairs",
        pairs_file.to_str().unwrap(),
    ]);
    args.extend(["--json", json.to_str().unwrap()]);
    let out = pm(&args);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_report_well_formed(&json);
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(
        table.contains("trained encoder") && table.contains("raw pixels"),
        "{table}"
    );
}

fn assert_loss_falls(metrics: &Path) {
    let lines: Vec<serde_json::Value> = std::fs::read_to_string(metrics)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 24);
    // The memory (32 slots, 40 identities) is full from the fifth step on: compare the first
    // full windows with the last ones.
    let loss = |m: &serde_json::Value| m["loss"].as_f64().unwrap();
    let early = (loss(&lines[1]) + loss(&lines[2])) / 2.0;
    let late = (loss(&lines[22]) + loss(&lines[23])) / 2.0;
    assert!(late < early, "loss did not fall: {early:.3} -> {late:.3}");
}

fn assert_report_well_formed(json: &Path) {
    let results: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(json).unwrap()).unwrap();
    let results = results.as_array().unwrap();
    let models: Vec<&str> = results
        .iter()
        .map(|r| r["model"].as_str().unwrap())
        .collect();
    assert_eq!(
        models,
        ["raw pixels", "untrained encoder", "trained encoder"]
    );
    for r in results {
        assert_eq!(r["pairs"], 200);
        assert_eq!(r["folds"], 10);
        let folds = r["accuracy"]["folds"].as_array().unwrap();
        assert_eq!(folds.len(), 10);
        let mean = r["accuracy"]["mean"].as_f64().unwrap();
        assert!((0.0..=1.0).contains(&mean) && r["accuracy"]["std"].as_f64().unwrap() >= 0.0);
        let tar = r["tar_at_far"]["tar"].as_f64().unwrap();
        assert!((0.0..=1.0).contains(&tar));
        assert!(r["tar_at_far"]["far"].as_f64().unwrap() <= 1e-3);
    }
}
