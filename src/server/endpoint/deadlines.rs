//! The endpoint's task deadlines: at most one entry per device slot, in a
//! binary heap that knows where each slot's entry is.
//!
//! A heap of `(when, slot)` with one entry pushed per change would hold the
//! entries of deadlines that moved (about seven per running upgrade in a
//! large fleet), each popped later only to be found stale by a look at its
//! device. Here a slot's entry is found by its place, so a deadline that moves
//! earlier moves its entry up, a finished upgrade's entry goes at once, and the
//! heap never holds more entries than upgrades. A deadline that moves later
//! (every request sets its timer later) costs nothing: the entry stays where
//! it is, due too early, and moves down to the deadline when it reaches the
//! top, looking only at this structure's own compact tables.

use alloc::vec::Vec;

use crate::model::Instant;

const NIL: u32 = u32::MAX;

/// One slot's deadline and the place of its entry in the heap.
#[derive(Debug, Clone, Copy)]
struct SlotDeadline {
    /// Index of its entry in `heap` (`NIL`: none).
    place: u32,
    /// When its task wants to run next; the entry is due at or before it.
    deadline: Option<Instant>,
}

const NONE: SlotDeadline = SlotDeadline { place: NIL, deadline: None };

/// Task deadlines by slot, earliest first (ties by slot number).
#[derive(Debug, Default)]
pub(super) struct Deadlines {
    /// `(due, slot)`, a min-heap; `due` is at or before the slot's deadline.
    heap: Vec<(Instant, u32)>,
    slots: Vec<SlotDeadline>,
}

impl Deadlines {
    /// Records that the task in `slot` next wants to run at `deadline`.
    pub(super) fn set(&mut self, slot: u32, deadline: Option<Instant>) {
        let index = slot as usize;
        if index >= self.slots.len() {
            self.slots.resize(index + 1, NONE);
        }
        let entry = &mut self.slots[index];
        entry.deadline = deadline;
        let Some(deadline) = deadline else { return };
        if entry.place == NIL {
            self.heap.push((deadline, slot));
            let place = self.heap.len() - 1;
            self.slots[index].place = place as u32;
            self.sift_up(place);
        } else {
            let place = entry.place as usize;
            if deadline < self.heap[place].0 {
                self.heap[place].0 = deadline;
                self.sift_up(place);
            }
        }
    }

    /// Forgets `slot`'s deadline (its device or its upgrade is gone).
    pub(super) fn remove(&mut self, slot: u32) {
        let Some(entry) = self.slots.get_mut(slot as usize) else { return };
        entry.deadline = None;
        let place = core::mem::replace(&mut entry.place, NIL);
        if place != NIL {
            self.remove_at(place as usize);
        }
    }

    /// Makes the top entry a real deadline: entries whose deadline moved
    /// later move down to it, those without one go.
    pub(super) fn settle(&mut self) {
        while let Some(&(due, slot)) = self.heap.first() {
            match self.slots[slot as usize].deadline {
                Some(deadline) if deadline > due => {
                    self.heap[0].0 = deadline;
                    self.sift_down(0);
                }
                Some(_) => return,
                None => self.remove(slot),
            }
        }
    }

    /// The earliest deadline, if the heap is settled (else at or before it).
    pub(super) fn peek(&self) -> Option<Instant> {
        self.heap.first().map(|&(due, _)| due)
    }

    /// The slot whose deadline is the earliest one at or before `now`, its
    /// deadline cleared (ties by slot number).
    pub(super) fn pop_due(&mut self, now: Instant) -> Option<u32> {
        self.settle();
        let &(due, slot) = self.heap.first()?;
        if due > now {
            return None;
        }
        self.remove(slot);
        Some(slot)
    }

    fn remove_at(&mut self, place: usize) {
        let Some(last) = self.heap.pop() else { return };
        if place < self.heap.len() {
            self.put(place, last);
            self.sift_down(place);
            self.sift_up(self.slots[last.1 as usize].place as usize);
        }
    }

    fn sift_up(&mut self, mut place: usize) {
        let entry = self.heap[place];
        while place > 0 {
            let parent = (place - 1) / 2;
            let above = self.heap[parent];
            if above <= entry {
                break;
            }
            self.put(place, above);
            place = parent;
        }
        self.put(place, entry);
    }

    fn sift_down(&mut self, mut place: usize) {
        let entry = self.heap[place];
        let len = self.heap.len();
        loop {
            let left = 2 * place + 1;
            if left >= len {
                break;
            }
            let right = left + 1;
            let child = if right < len && self.heap[right] < self.heap[left] { right } else { left };
            let below = self.heap[child];
            if entry <= below {
                break;
            }
            self.put(place, below);
            place = child;
        }
        self.put(place, entry);
    }

    /// Stores `entry` at `place` and tells its slot where it is.
    fn put(&mut self, place: usize, entry: (Instant, u32)) {
        self.heap[place] = entry;
        self.slots[entry.1 as usize].place = place as u32;
    }

    /// Entries held (at most one per slot).
    #[cfg(test)]
    fn len(&self) -> usize {
        self.heap.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::collections::BTreeMap;
    use proptest::prelude::*;

    proptest! {
        /// Against a map of slot to deadline: the slots come out due in
        /// (deadline, slot) order, each at most once per deadline set, and the
        /// heap never holds more entries than slots.
        #[test]
        fn deadlines_come_out_as_a_map_of_them_says(
            steps in prop::collection::vec((0u32..40, prop::option::of(0u64..1_000), 0u8..6), 1..400),
        ) {
            let mut deadlines = Deadlines::default();
            let mut model: BTreeMap<u32, u64> = BTreeMap::new();
            let mut now = 0u64;
            for (slot, deadline, op) in steps {
                match op {
                    0 => {
                        deadlines.remove(slot);
                        model.remove(&slot);
                    }
                    1 => {
                        now += deadline.unwrap_or(0) % 50;
                        let t = Instant::from_millis(now);
                        loop {
                            let expected = model
                                .iter()
                                .filter(|&(_, &d)| d <= now)
                                .map(|(&s, &d)| (d, s))
                                .min();
                            let got = deadlines.pop_due(t);
                            prop_assert_eq!(got, expected.map(|(_, s)| s));
                            let Some((_, s)) = expected else { break };
                            model.remove(&s);
                        }
                    }
                    _ => {
                        let at = deadline.map(|d| now + d);
                        deadlines.set(slot, at.map(Instant::from_millis));
                        match at {
                            Some(at) => model.insert(slot, at),
                            None => model.remove(&slot),
                        };
                    }
                }
                prop_assert!(deadlines.len() <= 40);
                deadlines.settle();
                prop_assert_eq!(deadlines.peek(), model.values().min().map(|&d| Instant::from_millis(d)));
            }
        }
    }
}
