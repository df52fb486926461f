//! Prototype memory throughput against the bandwidth limit, in bytes of f32 rows per second.
//!
//! For M ∈ {4096, 65536} slots of d = 512 floats, a full memory and a batch of P = 64
//! identities, one criterion group per M with four rows:
//! ```text
//! update        PrototypeMemory::update: write P fresh rows       (new identities: evictions)
//! copy P rows   copy_from_slice of the same P·d·4 bytes          (reference for update)
//! classifier    PrototypeMemory::classifier: gather [P + M − P, d] (batch identities in memory)
//! copy M rows   copy_from_slice of the same M·d·4 bytes          (reference for classifier)
//! ```
//! Every row reports `Throughput::Bytes` of the rows it moves, so a ratio to its copy row is
//! how far the memory is from a plain copy of the same bytes.
//!
//! ```text
//! cargo bench -p pm-benches --bench memory
//! ```

use std::hint::black_box;
use std::time::Duration;

use candle_core::{Device, Tensor};
use criterion::{Criterion, SamplingMode, Throughput, criterion_group, criterion_main};
use pm_memory::{MemoryConfig, PrototypeMemory};

/// Embedding dimension.
const DIM: usize = 512;
/// Identities per batch.
const P: usize = 64;
/// Memory sizes.
const CAPACITIES: [usize; 2] = [4096, 65536];

/// Row-major `[n, DIM]` values, different per row, without any generator state.
fn rows(n: usize, offset: usize) -> Vec<f32> {
    (0..n * DIM)
        .map(|i| ((i + offset) % 1021) as f32 / 1021.0 - 0.5)
        .collect()
}

/// A memory of `capacity` slots holding identities `0..capacity`, written at steps `1..`.
fn full_memory(capacity: usize) -> PrototypeMemory {
    let config = MemoryConfig {
        capacity,
        dim: DIM,
        eviction: Default::default(),
        max_age: None,
    };
    let mut memory = PrototypeMemory::new(config).expect("positive capacity and dim");
    let batch = rows(P, 0);
    for (step, first) in (0..capacity as u64).step_by(P).enumerate() {
        let identities: Vec<u64> = (first..first + P as u64).collect();
        memory
            .update(&identities, &batch, step as u64 + 1)
            .expect("distinct identities that fit");
    }
    memory
}

fn bytes(n_rows: usize) -> Throughput {
    Throughput::Bytes((n_rows * DIM * size_of::<f32>()) as u64)
}

/// `copy_from_slice` of `n_rows` rows between two preallocated buffers.
fn bench_copy(
    group: &mut criterion::BenchmarkGroup<'_, criterion::measurement::WallTime>,
    n: usize,
) {
    let source = rows(n, 7);
    let mut target = vec![0f32; n * DIM];
    group.throughput(bytes(n));
    group.bench_function(format!("copy {n} rows"), |b| {
        b.iter(|| {
            target.copy_from_slice(black_box(&source));
            black_box(&mut target);
        })
    });
}

fn memory_throughput(c: &mut Criterion) {
    for capacity in CAPACITIES {
        let mut memory = full_memory(capacity);
        let step0 = (capacity / P) as u64 + 1;
        let mut group = c.benchmark_group(format!("memory M={capacity} d={DIM} P={P}"));

        // update: P identities not in memory, each evicting the oldest write.
        group.sampling_mode(SamplingMode::Auto);
        group.throughput(bytes(P));
        let fresh_rows = rows(P, 3);
        let mut next = capacity as u64;
        let mut step = step0;
        let mut identities = vec![0u64; P];
        group.bench_function("update", |b| {
            b.iter(|| {
                identities
                    .iter_mut()
                    .zip(next..)
                    .for_each(|(id, n)| *id = n);
                next += P as u64;
                step += 1;
                let stats = memory.update(black_box(&identities), black_box(&fresh_rows), step);
                black_box(stats.expect("distinct new identities"));
            })
        });
        bench_copy(&mut group, P);

        // classifier: the batch's identities are the P most recently written ones.
        group.sampling_mode(SamplingMode::Flat);
        let batch: Vec<u64> = identities.clone();
        let fresh = Tensor::from_vec(rows(P, 5), (P, DIM), &Device::Cpu).expect("P×DIM values");
        // P fresh rows + (M − P) stored rows of the other identities: M rows.
        let n_rows = memory.len();
        group.throughput(bytes(n_rows));
        group.bench_function("classifier", |b| {
            b.iter(|| {
                let classifier = memory.classifier(black_box(&batch), black_box(&fresh));
                black_box(classifier.expect("fresh is [P, DIM]"));
            })
        });
        let classifier = memory
            .classifier(&batch, &fresh)
            .expect("fresh is [P, DIM]");
        assert_eq!(
            classifier.weights.dims(),
            &[n_rows, DIM],
            "one row per identity"
        );
        bench_copy(&mut group, n_rows);
        group.finish();
    }
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2))
        .sample_size(20);
    targets = memory_throughput
}
criterion_main!(benches);
