//! The memory under data-parallel training.
//!
//! Every worker makes fresh prototypes for the identities of its own batch. All workers must
//! then apply the *same* update, or their memories — and so their softmax weights — drift
//! apart. The protocol:
//! 1. all-gather `(rank, identities, rows)` from every worker (any transport);
//! 2. every worker calls [`PrototypeMemory::update_gathered`] with what it received, in
//!    whatever order it arrived: the update sorts by rank, merges an identity drawn by several
//!    workers into the normalised mean of its rows (in rank order), and applies one ordinary
//!    [`PrototypeMemory::update`]. The result depends only on the gathered contents.

use std::collections::BTreeMap;

use crate::{Error, PrototypeMemory, Result, UpdateStats};

/// One worker's contribution to a step's memory update.
#[derive(Clone, Debug, PartialEq)]
pub struct WorkerUpdate {
    /// The worker's rank.
    pub rank: usize,
    /// Identities of its batch, one per row.
    pub identities: Vec<u64>,
    /// Its detached fresh prototypes, `[identities.len(), dim]` row-major.
    pub rows: Vec<f32>,
}

impl PrototypeMemory {
    /// Applies the all-gathered updates of every worker at `step`, identically on every worker.
    ///
    /// # Errors
    /// [`Error::Invalid`] for a repeated rank, rows of the wrong length, or more identities
    /// than the memory holds.
    pub fn update_gathered(&mut self, gathered: &[WorkerUpdate], step: u64) -> Result<UpdateStats> {
        let dim = self.config().dim;
        let mut by_rank: Vec<&WorkerUpdate> = gathered.iter().collect();
        by_rank.sort_by_key(|w| w.rank);
        if by_rank.windows(2).any(|w| w[0].rank == w[1].rank) {
            return Err(Error::Invalid(
                "two updates carry the same worker rank".into(),
            ));
        }

        // Merge, in rank order, the rows of an identity drawn by several workers.
        let mut merged: BTreeMap<u64, (usize, Vec<f32>)> = BTreeMap::new();
        let mut order: Vec<u64> = Vec::new();
        for worker in by_rank {
            if worker.rows.len() != worker.identities.len() * dim {
                return Err(Error::Invalid(format!(
                    "worker {} sent {} floats for {} identities of dim {dim}",
                    worker.rank,
                    worker.rows.len(),
                    worker.identities.len()
                )));
            }
            for (&identity, row) in worker.identities.iter().zip(worker.rows.chunks_exact(dim)) {
                let entry = merged.entry(identity).or_insert_with(|| {
                    order.push(identity);
                    (0, vec![0.0; dim])
                });
                entry.0 += 1;
                entry.1.iter_mut().zip(row).for_each(|(sum, x)| *sum += x);
            }
        }

        let mut rows = Vec::with_capacity(order.len() * dim);
        for identity in &order {
            let (count, sum) = &merged[identity];
            rows.extend(normalized(sum, *count));
        }
        self.update(&order, &rows, step)
    }
}

/// A single row is kept as sent; a merged one is re-normalised.
fn normalized(sum: &[f32], count: usize) -> Vec<f32> {
    if count == 1 {
        return sum.to_vec();
    }
    let norm = sum.iter().map(|x| x * x).sum::<f32>().sqrt().max(1e-12);
    sum.iter().map(|x| x / norm).collect()
}
