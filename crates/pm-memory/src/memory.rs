//! The memory: `capacity` slots of `dim` floats, one slot per identity, with the policy that
//! decides which slot a new identity takes when the memory is full.
//!
//! Per slot it keeps the identity it holds, the step of its last write, the step of its last
//! use and how often it was refreshed. Rows live in host memory; each step gathers the rows the
//! logits need into one `[C, dim]` tensor on the device of the fresh prototypes.

use std::collections::{BTreeSet, HashMap, HashSet};

use candle_core::{DType, Device, Tensor};
use serde::{Deserialize, Serialize};

use crate::{Error, Result};

/// Which slot is given up when a new identity arrives and the memory is full.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Eviction {
    /// The row written longest ago (a FIFO queue of prototypes, the paper's policy).
    #[default]
    OldestWrite,
    /// The row used longest ago, where a row is used when it is written or when it was the
    /// highest-scoring wrong class of some image of a step (see [`PrototypeMemory::mark_used`]).
    LeastRecentlyUsed,
}

/// Shape and policy of a memory.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MemoryConfig {
    /// Number of slots M.
    pub capacity: usize,
    /// Embedding dimension d.
    pub dim: usize,
    /// Eviction policy when full.
    #[serde(default)]
    pub eviction: Eviction,
    /// Rows not written for more than this many steps are dropped, even when the memory is
    /// not full.
    #[serde(default)]
    pub max_age: Option<u64>,
}

/// What one [`PrototypeMemory::update`] did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct UpdateStats {
    /// Identities already in memory whose row was overwritten.
    pub refreshed: usize,
    /// Identities that took a free slot.
    pub inserted: usize,
    /// Identities that took the slot of an evicted identity.
    pub evicted: usize,
    /// Rows dropped because they were older than `max_age`.
    pub expired: usize,
}

/// The softmax weights of one step.
#[derive(Debug)]
pub struct Classifier {
    /// `[P + others, dim]`: the batch's fresh prototypes, then the stored rows of every other
    /// identity in memory.
    pub weights: Tensor,
    /// Number of fresh rows (P); column `j < P` is the class of the batch's j-th identity.
    pub n_fresh: usize,
    /// For column `P + i`, the memory slot it came from.
    pub other_slots: Vec<usize>,
}

const EMPTY: i64 = -1;

/// A fixed-size memory of class prototypes.
#[derive(Clone, Debug)]
pub struct PrototypeMemory {
    config: MemoryConfig,
    rows: Vec<f32>,
    identity: Vec<i64>,
    write_step: Vec<u64>,
    last_use: Vec<u64>,
    refreshes: Vec<u64>,
    slot_of: HashMap<u64, usize>,
    free: BTreeSet<usize>,
    /// Occupied slots ordered by the eviction key (write step or last use), then slot.
    queue: BTreeSet<(u64, usize)>,
}

impl PrototypeMemory {
    /// An empty memory.
    ///
    /// # Errors
    /// [`Error::Invalid`] when capacity or dim is zero.
    pub fn new(config: MemoryConfig) -> Result<Self> {
        if config.capacity == 0 || config.dim == 0 {
            return Err(Error::Invalid(format!(
                "capacity and dim must be positive, got {} and {}",
                config.capacity, config.dim
            )));
        }
        let m = config.capacity;
        Ok(Self {
            rows: vec![0.0; m * config.dim],
            identity: vec![EMPTY; m],
            write_step: vec![0; m],
            last_use: vec![0; m],
            refreshes: vec![0; m],
            slot_of: HashMap::new(),
            free: (0..m).collect(),
            queue: BTreeSet::new(),
            config,
        })
    }

    /// The configuration.
    pub fn config(&self) -> &MemoryConfig {
        &self.config
    }

    /// Number of occupied slots.
    pub fn len(&self) -> usize {
        self.slot_of.len()
    }

    /// True when no slot is occupied.
    pub fn is_empty(&self) -> bool {
        self.slot_of.is_empty()
    }

    /// The slot holding `identity`, if any.
    pub fn slot_of(&self, identity: u64) -> Option<usize> {
        self.slot_of.get(&identity).copied()
    }

    /// The identity held by `slot`, if any.
    pub fn identity_at(&self, slot: usize) -> Option<u64> {
        self.identity
            .get(slot)
            .and_then(|&id| u64::try_from(id).ok())
    }

    /// The stored row of `slot` (`dim` floats).
    pub fn row(&self, slot: usize) -> &[f32] {
        let d = self.config.dim;
        &self.rows[slot * d..(slot + 1) * d]
    }

    /// Step of the last write into `slot`.
    pub fn write_step(&self, slot: usize) -> u64 {
        self.write_step[slot]
    }

    /// How often `slot`'s identity was refreshed since it entered.
    pub fn refreshes(&self, slot: usize) -> u64 {
        self.refreshes[slot]
    }

    /// Occupied slots in ascending order.
    pub fn occupied_slots(&self) -> Vec<usize> {
        let mut slots: Vec<usize> = self.slot_of.values().copied().collect();
        slots.sort_unstable();
        slots
    }

    /// The weights of one step: `fresh` (`[P, dim]`, one row per identity of `batch_identities`,
    /// possibly carrying gradients) followed by the stored rows of all other identities.
    ///
    /// # Errors
    /// [`Error::Invalid`] when `fresh` is not `[batch_identities.len(), dim]`.
    pub fn classifier(&self, batch_identities: &[u64], fresh: &Tensor) -> Result<Classifier> {
        let (p, d) = fresh.dims2()?;
        if p != batch_identities.len() || d != self.config.dim {
            return Err(Error::Invalid(format!(
                "fresh prototypes are [{p}, {d}], expected [{}, {}]",
                batch_identities.len(),
                self.config.dim
            )));
        }
        let in_batch: HashSet<u64> = batch_identities.iter().copied().collect();
        let other_slots: Vec<usize> = self
            .occupied_slots()
            .into_iter()
            .filter(|&slot| !in_batch.contains(&(self.identity[slot] as u64)))
            .collect();
        let weights = if other_slots.is_empty() {
            fresh.clone()
        } else {
            let others = self.gather(&other_slots, fresh.device())?;
            Tensor::cat(&[&fresh.to_dtype(DType::F32)?, &others], 0)?
        };
        Ok(Classifier {
            weights,
            n_fresh: p,
            other_slots,
        })
    }

    fn gather(&self, slots: &[usize], device: &Device) -> Result<Tensor> {
        let d = self.config.dim;
        let mut data = Vec::with_capacity(slots.len() * d);
        for &slot in slots {
            data.extend_from_slice(self.row(slot));
        }
        Ok(Tensor::from_vec(data, (slots.len(), d), device)?)
    }

    /// Records that `slots` were used at `step` (the least-recently-used policy's clock).
    pub fn mark_used(&mut self, slots: &[usize], step: u64) {
        for &slot in slots {
            if slot < self.config.capacity && self.identity[slot] != EMPTY {
                self.set_last_use(slot, step);
            }
        }
    }

    /// Writes the batch's detached prototypes (`rows`: `[P, dim]` row-major) at `step`, then
    /// drops rows older than `max_age`.
    ///
    /// # Errors
    /// [`Error::Invalid`] when shapes disagree, an identity repeats, or P exceeds the capacity.
    pub fn update(&mut self, identities: &[u64], rows: &[f32], step: u64) -> Result<UpdateStats> {
        self.check_update(identities, rows)?;
        let mut stats = UpdateStats::default();
        let written: HashSet<u64> = identities.iter().copied().collect();
        for (identity, row) in identities.iter().zip(rows.chunks_exact(self.config.dim)) {
            let slot = self.slot_for(*identity, &written, &mut stats)?;
            self.write(slot, *identity, row, step);
        }
        stats.expired = self.expire(step, &written);
        Ok(stats)
    }

    fn check_update(&self, identities: &[u64], rows: &[f32]) -> Result<()> {
        if rows.len() != identities.len() * self.config.dim {
            return Err(Error::Invalid(format!(
                "{} rows of {} floats expected, got {} floats",
                identities.len(),
                self.config.dim,
                rows.len()
            )));
        }
        if identities.len() > self.config.capacity {
            return Err(Error::Invalid(format!(
                "a batch of {} identities does not fit a memory of {} slots",
                identities.len(),
                self.config.capacity
            )));
        }
        let distinct: HashSet<u64> = identities.iter().copied().collect();
        if distinct.len() != identities.len() || identities.iter().any(|&id| id > i64::MAX as u64) {
            return Err(Error::Invalid(
                "identities of one update must be distinct".into(),
            ));
        }
        Ok(())
    }

    /// The slot `identity` is written to: its own, a free one, or an evicted one — never the
    /// slot of another identity of the same update.
    fn slot_for(
        &mut self,
        identity: u64,
        written: &HashSet<u64>,
        stats: &mut UpdateStats,
    ) -> Result<usize> {
        if let Some(slot) = self.slot_of(identity) {
            stats.refreshed += 1;
            return Ok(slot);
        }
        if let Some(slot) = self.free.pop_first() {
            stats.inserted += 1;
            return Ok(slot);
        }
        let (_, slot) = self
            .queue
            .iter()
            .find(|&&(_, slot)| !written.contains(&(self.identity[slot] as u64)))
            .copied()
            .ok_or_else(|| Error::Invalid("no slot left to evict in a full memory".into()))?;
        self.clear(slot);
        self.free.remove(&slot);
        stats.evicted += 1;
        Ok(slot)
    }

    fn write(&mut self, slot: usize, identity: u64, row: &[f32], step: u64) {
        let d = self.config.dim;
        self.rows[slot * d..(slot + 1) * d].copy_from_slice(row);
        if self.identity[slot] == identity as i64 {
            self.refreshes[slot] += 1;
        } else {
            self.identity[slot] = identity as i64;
            self.refreshes[slot] = 0;
            self.slot_of.insert(identity, slot);
        }
        self.queue.remove(&(self.queue_key(slot), slot));
        self.write_step[slot] = step;
        self.last_use[slot] = step;
        self.queue.insert((self.queue_key(slot), slot));
    }

    fn set_last_use(&mut self, slot: usize, step: u64) {
        self.queue.remove(&(self.queue_key(slot), slot));
        self.last_use[slot] = step;
        self.queue.insert((self.queue_key(slot), slot));
    }

    fn queue_key(&self, slot: usize) -> u64 {
        match self.config.eviction {
            Eviction::OldestWrite => self.write_step[slot],
            Eviction::LeastRecentlyUsed => self.last_use[slot],
        }
    }

    /// Empties `slot` and returns it to the free set.
    fn clear(&mut self, slot: usize) {
        self.queue.remove(&(self.queue_key(slot), slot));
        if let Ok(identity) = u64::try_from(self.identity[slot]) {
            self.slot_of.remove(&identity);
        }
        self.identity[slot] = EMPTY;
        self.refreshes[slot] = 0;
        self.free.insert(slot);
    }

    fn expire(&mut self, step: u64, keep: &HashSet<u64>) -> usize {
        let Some(max_age) = self.config.max_age else {
            return 0;
        };
        let stale: Vec<usize> = self
            .occupied_slots()
            .into_iter()
            .filter(|&slot| step.saturating_sub(self.write_step[slot]) > max_age)
            .filter(|&slot| !keep.contains(&(self.identity[slot] as u64)))
            .collect();
        for &slot in &stale {
            self.clear(slot);
        }
        stale.len()
    }

    /// Ages (`step - write step`) of the given slots.
    pub fn ages(&self, slots: &[usize], step: u64) -> Vec<u64> {
        slots
            .iter()
            .map(|&slot| step.saturating_sub(self.write_step[slot]))
            .collect()
    }
}

mod state;
