//! Training-loop tests on a tiny synthetic dataset: a resumed run is bit-identical to an
//! uninterrupted one, the loss falls, and bad configurations fail cleanly.

use std::collections::{BTreeSet, HashMap};
use std::path::Path;

use candle_core::{Device, Tensor};
use pm_data::{Crop, PackConfig, Preprocess, SynthConfig};
use pm_train::{NoProgress, TrainConfig, Trainer};

const SIDE: u32 = 32;

/// Renders and packs `identities` synthetic identities into `dir/dataset`.
fn dataset(dir: &Path, identities: u64, images: usize) -> std::path::PathBuf {
    let synth = SynthConfig {
        size: SIDE,
        ..SynthConfig::default()
    };
    pm_data::write_synth_folder(&synth, &dir.join("faces"), 0..identities, images).unwrap();
    let config = PackConfig {
        exclude: BTreeSet::new(),
        min_images: 2,
        preprocess: Preprocess {
            crop: Crop::Center { fraction: 1.0 },
            size: SIDE,
        },
        max_images_per_shard: 1000,
        storage: pm_data::Storage::Raw,
        append: false,
    };
    let out = dir.join("dataset");
    pm_data::pack_folder(&dir.join("faces"), &out, &config).unwrap();
    out
}

fn config(dataset: &Path, run: &Path, steps: u64, capacity: usize) -> TrainConfig {
    let text = format!(
        r#"
[data]
dataset = "{}"
identities_per_batch = 8
images_per_identity = 2
[model]
input_size = {SIDE}
widths = [8, 16, 32]
blocks_per_stage = 1
stem_stride = 2
embedding_dim = 16
[memory]
capacity = {capacity}
[optim]
lr = 0.05
momentum = 0.9
weight_decay = 5e-4
steps = {steps}
warmup_steps = 2
[run]
dir = "{}"
checkpoint_every = 5
log_every = 1
"#,
        dataset.display(),
        run.display()
    );
    TrainConfig::from_toml(&text, Path::new("test.toml")).unwrap()
}

fn weights(run: &Path) -> HashMap<String, Tensor> {
    candle_core::safetensors::load(run.join("model.safetensors"), &Device::Cpu).unwrap()
}

fn assert_same(a: &HashMap<String, Tensor>, b: &HashMap<String, Tensor>) {
    assert_eq!(a.len(), b.len());
    for (name, ta) in a {
        let va = ta.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        let vb = b[name].flatten_all().unwrap().to_vec1::<f32>().unwrap();
        assert!(va == vb, "{name} differs after resume");
    }
}

#[test]
fn a_resumed_run_matches_the_uninterrupted_run_exactly() {
    let dir = tempfile::tempdir().unwrap();
    let data = dataset(dir.path(), 30, 3);

    let straight = dir.path().join("straight");
    let mut trainer = Trainer::new(config(&data, &straight, 12, 24), false).unwrap();
    trainer.run(&mut NoProgress, None).unwrap();

    let interrupted = dir.path().join("interrupted");
    let mut first = Trainer::new(config(&data, &interrupted, 12, 24), false).unwrap();
    first.run(&mut NoProgress, Some(7)).unwrap();
    drop(first);
    let mut second = Trainer::new(config(&data, &interrupted, 12, 24), true).unwrap();
    assert_eq!(second.step(), 7);
    let summary = second.run(&mut NoProgress, None).unwrap();
    assert_eq!((summary.resumed_from, summary.steps), (7, 12));

    assert_same(&weights(&straight), &weights(&interrupted));
    let memory_a = trainer.memory().to_tensors().unwrap();
    let memory_b = second.memory().to_tensors().unwrap();
    for (name, t) in &memory_a {
        let a = t
            .flatten_all()
            .unwrap()
            .to_dtype(candle_core::DType::F64)
            .unwrap();
        let b = memory_b[name]
            .flatten_all()
            .unwrap()
            .to_dtype(candle_core::DType::F64)
            .unwrap();
        assert_eq!(
            a.to_vec1::<f64>().unwrap(),
            b.to_vec1::<f64>().unwrap(),
            "{name}"
        );
    }
    let lines = std::fs::read_to_string(interrupted.join("metrics.jsonl")).unwrap();
    let steps: Vec<u64> = lines
        .lines()
        .map(|l| {
            serde_json::from_str::<pm_train::StepMetrics>(l)
                .unwrap()
                .step
        })
        .collect();
    assert_eq!(
        steps,
        (1..=12).collect::<Vec<_>>(),
        "one metrics line per step, no repeats"
    );
}

#[test]
fn loss_falls_once_the_memory_holds_every_identity() {
    let dir = tempfile::tempdir().unwrap();
    let data = dataset(dir.path(), 24, 4);
    let run = dir.path().join("run");
    let mut trainer = Trainer::new(config(&data, &run, 150, 32), false).unwrap();
    trainer.run(&mut NoProgress, None).unwrap();
    let lines: Vec<pm_train::StepMetrics> = std::fs::read_to_string(run.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    // Compare equal footing: windows where the memory already holds all 24 identities.
    let full: Vec<f64> = lines
        .iter()
        .filter(|m| m.memory_rows == 24)
        .map(|m| m.loss)
        .collect();
    assert!(full.len() > 40, "memory never filled: {lines:?}");
    let early = full[..5].iter().sum::<f64>() / 5.0;
    let late = full[full.len() - 5..].iter().sum::<f64>() / 5.0;
    assert!(
        late < 0.8 * early,
        "loss did not fall: early {early:.3}, late {late:.3}: {full:?}"
    );
    assert!(run.join("config.toml").is_file());
}

#[test]
fn a_dataset_of_the_wrong_image_size_is_an_error_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let data = dataset(dir.path(), 10, 2);
    let mut config = config(&data, &dir.path().join("run"), 5, 16);
    config.model.input_size = 64;
    let err = Trainer::new(config, false)
        .err()
        .expect("size mismatch must fail");
    let msg = err.to_string();
    assert!(
        msg.contains("dataset") && msg.contains("input_size"),
        "{msg}"
    );
}

#[test]
fn a_missing_dataset_is_an_error_naming_the_path() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("no-such-dataset");
    let err = Trainer::new(config(&missing, &dir.path().join("run"), 5, 16), false)
        .err()
        .expect("missing dataset must fail");
    assert!(err.to_string().contains("no-such-dataset"), "{err}");
}

#[test]
fn a_fresh_run_refuses_a_used_run_dir_and_resume_refuses_another_config() {
    let dir = tempfile::tempdir().unwrap();
    let data = dataset(dir.path(), 12, 2);
    let run = dir.path().join("run");
    Trainer::new(config(&data, &run, 5, 16), false)
        .unwrap()
        .run(&mut NoProgress, None)
        .unwrap();

    let err = Trainer::new(config(&data, &run, 5, 16), false)
        .err()
        .expect("must refuse");
    assert!(err.to_string().contains("--resume"), "{err}");

    let mut other = config(&data, &run, 10, 16);
    other.optim.lr = 0.5;
    let err = Trainer::new(other, true).err().expect("must refuse");
    assert!(err.to_string().contains("[optim]"), "{err}");

    // A longer budget is fine: the run continues.
    let mut longer = Trainer::new(config(&data, &run, 8, 16), true).unwrap();
    assert_eq!(longer.step(), 5);
    assert_eq!(longer.run(&mut NoProgress, None).unwrap().steps, 8);
}

#[test]
fn obsolescence_is_measured_without_changing_the_run() {
    let dir = tempfile::tempdir().unwrap();
    let data = dataset(dir.path(), 30, 3);

    let plain = dir.path().join("plain");
    let mut trainer = Trainer::new(config(&data, &plain, 12, 20), false).unwrap();
    trainer.run(&mut NoProgress, None).unwrap();

    let measured = dir.path().join("measured");
    let mut with = config(&data, &measured, 12, 20);
    with.run.obsolescence_every = 4;
    with.run.obsolescence_rows = 5;
    let mut trainer = Trainer::new(with, false).unwrap();
    trainer.run(&mut NoProgress, None).unwrap();
    assert_same(&weights(&plain), &weights(&measured));

    let text = std::fs::read_to_string(measured.join("metrics.jsonl")).unwrap();
    let lines: Vec<pm_train::StepMetrics> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let found: Vec<&pm_train::Obsolescence> = lines
        .iter()
        .filter_map(|l| l.obsolescence.as_ref())
        .collect();
    assert_eq!(
        found.iter().map(|o| o.step).collect::<Vec<_>>(),
        [4, 8, 12],
        "one measurement every 4 steps"
    );
    for o in found {
        assert_eq!(
            o.rows, 5,
            "the memory holds more than 5 other rows at step {}",
            o.step
        );
        assert_eq!((o.ages.len(), o.cosines.len()), (5, 5));
        assert!(
            o.ages.iter().all(|&a| a >= 1),
            "stored rows are at least a step old"
        );
        assert!(
            o.cosines.iter().all(|c| (-1.0001..=1.0001).contains(c)),
            "{:?}",
            o.cosines
        );
        // The encoder moved since the rows were written: they are not all exactly current.
        assert!(o.cosines.iter().any(|&c| c < 0.9999), "{:?}", o.cosines);
        assert_eq!(
            o.fresh_rows, 5,
            "the control takes as many of the batch's 8 fresh rows"
        );
        assert!(
            (-1.0001..=1.0001).contains(&o.fresh_cos_mean),
            "{}",
            o.fresh_cos_mean
        );
    }
    let untouched = std::fs::read_to_string(plain.join("metrics.jsonl")).unwrap();
    assert!(!untouched.contains("obsolescence"));
}

fn head_config(data: &Path, run: &Path, steps: u64, kind: pm_train::HeadKind) -> TrainConfig {
    let mut config = config(data, run, steps, 16);
    config.head.kind = kind;
    config.head.sample_rate = 0.2;
    config
}

fn metric_lines(run: &Path) -> Vec<pm_train::StepMetrics> {
    std::fs::read_to_string(run.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// Every tensor of a checkpoint's `state.safetensors`, as f64.
fn state(run: &Path, step: u64) -> HashMap<String, Vec<f64>> {
    let path = run.join(format!("checkpoints/step-{step:08}/state.safetensors"));
    candle_core::safetensors::load(path, &Device::Cpu)
        .unwrap()
        .into_iter()
        .map(|(name, t)| {
            let t = t.flatten_all().unwrap();
            (
                name,
                t.to_dtype(candle_core::DType::F64)
                    .unwrap()
                    .to_vec1()
                    .unwrap(),
            )
        })
        .collect()
}

#[test]
fn every_learned_head_trains_with_either_margin() {
    use pm_train::HeadKind;
    let dir = tempfile::tempdir().unwrap();
    let data = dataset(dir.path(), 30, 3);
    let cases = [
        (HeadKind::FullSoftmax, pm_loss::Margin::CosFace, 30),
        (HeadKind::FullSoftmax, pm_loss::Margin::ArcFace, 30),
        (HeadKind::PartialFc, pm_loss::Margin::ArcFace, 8 + 5),
        (HeadKind::PartialFc, pm_loss::Margin::CosFace, 8 + 5),
    ];
    for (i, (kind, margin, classes)) in cases.into_iter().enumerate() {
        let run = dir.path().join(format!("run-{i}"));
        let mut config = head_config(&data, &run, 10, kind);
        config.loss.kind = margin;
        config.run.obsolescence_every = 5;
        config.run.obsolescence_rows = 4;
        Trainer::new(config, false)
            .unwrap()
            .run(&mut NoProgress, None)
            .unwrap();

        let lines = metric_lines(&run);
        assert_eq!(lines.len(), 10, "{kind:?}");
        let losses: Vec<f64> = lines.iter().map(|m| m.loss).collect();
        assert!(losses.iter().all(|l| l.is_finite()), "{kind:?}: {losses:?}");
        // 8 distinct positives of 30 classes; Partial FC draws ⌈0.2 · 22⌉ = 5 negatives.
        assert!(
            lines.iter().all(|m| m.classes_in_softmax == classes),
            "{kind:?}"
        );
        assert!(
            lines
                .iter()
                .all(|m| m.memory_rows == 0 && m.skipped_steps == 0)
        );
        if kind == HeadKind::FullSoftmax {
            let early = losses[..3].iter().sum::<f64>() / 3.0;
            let late = losses[7..].iter().sum::<f64>() / 3.0;
            assert!(late < early, "full softmax loss did not fall: {losses:?}");
            // Every row is updated every step: one step old when used.
            assert!(lines[1..].iter().all(|m| m.max_row_age == 1), "{lines:?}");
        }

        let found: Vec<&pm_train::Obsolescence> = lines
            .iter()
            .filter_map(|l| l.obsolescence.as_ref())
            .collect();
        assert_eq!(found.iter().map(|o| o.step).collect::<Vec<_>>(), [5, 10]);
        for o in found {
            assert_eq!((o.rows, o.fresh_rows), (4, 4), "{kind:?}");
            assert!(
                o.ages.iter().all(|&a| (1..=o.step).contains(&a)),
                "{:?}",
                o.ages
            );
            assert!(o.cosines.iter().all(|c| (-1.0001..=1.0001).contains(c)));
        }
    }
}

#[test]
fn a_resumed_partial_fc_run_matches_the_uninterrupted_run_exactly() {
    use pm_train::HeadKind;
    let dir = tempfile::tempdir().unwrap();
    let data = dataset(dir.path(), 30, 3);

    let straight = dir.path().join("straight");
    let config = |run: &Path| head_config(&data, run, 12, HeadKind::PartialFc);
    Trainer::new(config(&straight), false)
        .unwrap()
        .run(&mut NoProgress, None)
        .unwrap();

    let interrupted = dir.path().join("interrupted");
    Trainer::new(config(&interrupted), false)
        .unwrap()
        .run(&mut NoProgress, Some(7))
        .unwrap();
    let mut second = Trainer::new(config(&interrupted), true).unwrap();
    assert_eq!(second.step(), 7);
    let summary = second.run(&mut NoProgress, None).unwrap();
    assert_eq!((summary.resumed_from, summary.steps), (7, 12));

    assert_same(&weights(&straight), &weights(&interrupted));
    let (a, b) = (state(&straight, 12), state(&interrupted, 12));
    assert!(a.contains_key("head.weights") && a.contains_key("head.last_update_step"));
    assert_eq!(a.len(), b.len());
    for (name, values) in &a {
        assert!(values == &b[name], "{name} differs after resume");
    }
    let steps: Vec<u64> = metric_lines(&interrupted).iter().map(|m| m.step).collect();
    assert_eq!(steps, (1..=12).collect::<Vec<_>>());
    // Unsampled rows kept their update step: some rows were last updated before step 12.
    let last = &a["head.last_update_step"];
    assert!(
        last.iter().any(|&s| s < 12.0) && last.contains(&12.0),
        "{last:?}"
    );

    // A checkpoint of another head kind is refused.
    let mut other = config(&interrupted);
    other.head.kind = HeadKind::FullSoftmax;
    other.optim.steps = 20;
    let err = Trainer::new(other, true).err().expect("must refuse");
    assert!(err.to_string().contains("[head]"), "{err}");
}

#[test]
fn a_run_that_stays_non_finite_stops_after_the_configured_count_for_every_head() {
    use pm_train::HeadKind;
    let dir = tempfile::tempdir().unwrap();
    let data = dataset(dir.path(), 12, 3);
    for kind in [
        HeadKind::PrototypeMemory,
        HeadKind::FullSoftmax,
        HeadKind::PartialFc,
    ] {
        let run = dir.path().join(format!("run-{kind:?}"));
        let mut config = head_config(&data, &run, 40, kind);
        // One step at this rate overflows the weights; every later loss or gradient is NaN.
        config.optim.lr = 1e38;
        config.optim.warmup_steps = 0;
        config.optim.max_nonfinite_in_row = 3;
        let mut trainer = Trainer::new(config, false).unwrap();
        let err = trainer.run(&mut NoProgress, None).unwrap_err();
        assert!(
            matches!(err, pm_train::Error::Diverged(3)),
            "{kind:?}: {err}"
        );
        // It stops a few steps in, not at the end of the schedule.
        assert!(
            trainer.step() < 10,
            "{kind:?} ran to step {}",
            trainer.step()
        );
    }
}
