//! Saving a memory into named tensors (for a safetensors checkpoint) and restoring it
//! bit-exactly: rows, slot identities, write and use steps, refresh counts and the policy.

use std::collections::HashMap;

use candle_core::{Device, Tensor};

use super::{EMPTY, Eviction, MemoryConfig, PrototypeMemory};
use crate::{Error, Result};

const PREFIX: &str = "memory.";

impl PrototypeMemory {
    /// The memory as named CPU tensors, each name prefixed with `memory.`.
    ///
    /// # Errors
    /// A tensor could not be built.
    pub fn to_tensors(&self) -> Result<HashMap<String, Tensor>> {
        let cpu = Device::Cpu;
        let m = self.config.capacity;
        let steps = |v: &[u64]| v.iter().map(|&x| x as i64).collect::<Vec<i64>>();
        let max_age = self.config.max_age.map_or(-1, |a| a as i64);
        let policy = vec![
            m as i64,
            self.config.dim as i64,
            eviction_code(self.config.eviction),
            max_age,
        ];
        let tensors = [
            (
                "rows",
                Tensor::from_slice(&self.rows, (m, self.config.dim), &cpu)?,
            ),
            ("identity", Tensor::from_slice(&self.identity, m, &cpu)?),
            (
                "write_step",
                Tensor::from_vec(steps(&self.write_step), m, &cpu)?,
            ),
            (
                "last_use",
                Tensor::from_vec(steps(&self.last_use), m, &cpu)?,
            ),
            (
                "refreshes",
                Tensor::from_vec(steps(&self.refreshes), m, &cpu)?,
            ),
            ("policy", Tensor::from_vec(policy, 4, &cpu)?),
        ];
        Ok(tensors
            .into_iter()
            .map(|(name, t)| (format!("{PREFIX}{name}"), t))
            .collect())
    }

    /// Restores a memory saved by [`PrototypeMemory::to_tensors`], refusing one whose capacity,
    /// dimension or policy differs from `config`.
    ///
    /// # Errors
    /// [`Error::Mismatch`] naming the differing setting; [`Error::Invalid`] for a missing or
    /// malformed tensor.
    pub fn from_tensors(config: MemoryConfig, tensors: &HashMap<String, Tensor>) -> Result<Self> {
        let policy = load_i64(tensors, "policy", 4)?;
        check_policy(&config, &policy)?;
        let mut memory = Self::new(config)?;
        let m = memory.config.capacity;
        let rows = get(tensors, "rows")?.flatten_all()?.to_vec1::<f32>()?;
        if rows.len() != m * memory.config.dim {
            return Err(Error::Invalid(format!(
                "memory.rows holds {} floats",
                rows.len()
            )));
        }
        memory.rows = rows;
        memory.identity = load_i64(tensors, "identity", m)?;
        memory.write_step = as_steps(load_i64(tensors, "write_step", m)?)?;
        memory.last_use = as_steps(load_i64(tensors, "last_use", m)?)?;
        memory.refreshes = as_steps(load_i64(tensors, "refreshes", m)?)?;
        memory.rebuild_index()?;
        Ok(memory)
    }

    fn rebuild_index(&mut self) -> Result<()> {
        self.slot_of.clear();
        self.free.clear();
        self.queue.clear();
        for slot in 0..self.config.capacity {
            match self.identity[slot] {
                EMPTY => {
                    self.free.insert(slot);
                }
                id if id >= 0 => {
                    if self.slot_of.insert(id as u64, slot).is_some() {
                        return Err(Error::Invalid(format!("identity {id} holds two slots")));
                    }
                    self.queue.insert((self.queue_key(slot), slot));
                }
                id => return Err(Error::Invalid(format!("slot {slot} holds identity {id}"))),
            }
        }
        Ok(())
    }
}

fn eviction_code(eviction: Eviction) -> i64 {
    match eviction {
        Eviction::OldestWrite => 0,
        Eviction::LeastRecentlyUsed => 1,
    }
}

fn check_policy(config: &MemoryConfig, policy: &[i64]) -> Result<()> {
    let expected = [
        ("capacity", config.capacity as i64),
        ("dim", config.dim as i64),
        ("eviction", eviction_code(config.eviction)),
        ("max_age", config.max_age.map_or(-1, |a| a as i64)),
    ];
    for ((field, want), &found) in expected.into_iter().zip(policy) {
        if want != found {
            return Err(Error::Mismatch {
                field,
                expected: want.to_string(),
                found: found.to_string(),
            });
        }
    }
    Ok(())
}

fn get<'a>(tensors: &'a HashMap<String, Tensor>, name: &str) -> Result<&'a Tensor> {
    tensors
        .get(&format!("{PREFIX}{name}"))
        .ok_or_else(|| Error::Invalid(format!("checkpoint has no tensor {PREFIX}{name}")))
}

fn load_i64(tensors: &HashMap<String, Tensor>, name: &str, len: usize) -> Result<Vec<i64>> {
    let values = get(tensors, name)?.flatten_all()?.to_vec1::<i64>()?;
    if values.len() != len {
        return Err(Error::Invalid(format!(
            "{PREFIX}{name} has {} values, expected {len}",
            values.len()
        )));
    }
    Ok(values)
}

fn as_steps(values: Vec<i64>) -> Result<Vec<u64>> {
    values
        .into_iter()
        .map(|v| u64::try_from(v).map_err(|_| Error::Invalid(format!("negative step {v}"))))
        .collect()
}
