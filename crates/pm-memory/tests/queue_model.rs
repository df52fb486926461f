//! Property tests of the memory against a plain reference model of the queue: after any
//! sequence of updates and uses, both hold the same identities in the same slots, capacity is
//! never exceeded, each identity has one slot, and eviction and expiry pick the same rows.

use pm_memory::{Eviction, MemoryConfig, PrototypeMemory};
use proptest::prelude::*;

/// The reference: a list of slots scanned linearly.
#[derive(Clone, Debug)]
struct Model {
    slots: Vec<Option<(u64, u64, u64)>>, // (identity, write step, last use)
    eviction: Eviction,
    max_age: Option<u64>,
}

impl Model {
    fn update(&mut self, ids: &[u64], step: u64) {
        for &id in ids {
            let slot = self
                .find(id)
                .or_else(|| self.free())
                .unwrap_or_else(|| self.victim(ids));
            self.slots[slot] = Some((id, step, step));
        }
        if let Some(max_age) = self.max_age {
            for slot in &mut self.slots {
                if let Some((id, write, _)) = *slot
                    && step - write > max_age
                    && !ids.contains(&id)
                {
                    *slot = None;
                }
            }
        }
    }

    fn mark_used(&mut self, slot: usize, step: u64) {
        if let Some(entry) = self.slots.get_mut(slot).and_then(Option::as_mut) {
            entry.2 = step;
        }
    }

    fn find(&self, id: u64) -> Option<usize> {
        self.slots
            .iter()
            .position(|s| s.is_some_and(|(i, _, _)| i == id))
    }

    fn free(&self) -> Option<usize> {
        self.slots.iter().position(Option::is_none)
    }

    fn victim(&self, protected: &[u64]) -> usize {
        let key = |(_, write, used): (u64, u64, u64)| match self.eviction {
            Eviction::OldestWrite => write,
            Eviction::LeastRecentlyUsed => used,
        };
        (0..self.slots.len())
            .filter(|&s| self.slots[s].is_some_and(|(id, _, _)| !protected.contains(&id)))
            .min_by_key(|&s| (self.slots[s].map(key).unwrap_or(u64::MAX), s))
            .unwrap_or(0)
    }
}

#[derive(Clone, Debug)]
enum Op {
    Update(Vec<u64>),
    Use(Vec<usize>),
}

fn ops() -> impl Strategy<Value = Vec<Op>> {
    let update = proptest::collection::btree_set(0u64..24, 1..5)
        .prop_map(|ids| Op::Update(ids.into_iter().collect()));
    let uses = proptest::collection::vec(0usize..8, 0..4).prop_map(Op::Use);
    proptest::collection::vec(prop_oneof![3 => update, 1 => uses], 1..40)
}

fn policy() -> impl Strategy<Value = (Eviction, Option<u64>)> {
    let eviction = prop_oneof![
        Just(Eviction::OldestWrite),
        Just(Eviction::LeastRecentlyUsed)
    ];
    (eviction, proptest::option::of(1u64..6))
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(96))]

    #[test]
    fn memory_matches_the_reference_queue(ops in ops(), (eviction, max_age) in policy()) {
        let capacity = 8;
        let config = MemoryConfig { capacity, dim: 1, eviction, max_age };
        let mut memory = PrototypeMemory::new(config).unwrap();
        let mut model = Model { slots: vec![None; capacity], eviction, max_age };
        for (step, op) in ops.iter().enumerate() {
            let step = step as u64 + 1;
            match op {
                Op::Update(ids) => {
                    let rows: Vec<f32> = ids.iter().map(|&id| id as f32).collect();
                    memory.update(ids, &rows, step).unwrap();
                    model.update(ids, step);
                }
                Op::Use(slots) => {
                    memory.mark_used(slots, step);
                    for &slot in slots {
                        model.mark_used(slot, step);
                    }
                }
            }
            prop_assert!(memory.len() <= capacity);
            for slot in 0..capacity {
                let expected = model.slots[slot].map(|(id, _, _)| id);
                prop_assert_eq!(memory.identity_at(slot), expected, "slot {} at step {}", slot, step);
                if let Some(id) = expected {
                    prop_assert_eq!(memory.slot_of(id), Some(slot));
                    prop_assert_eq!(memory.row(slot), &[id as f32][..]);
                }
            }
        }
    }
}
