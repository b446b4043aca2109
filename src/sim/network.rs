//! A simulated network: messages in flight with latency, jitter (and so
//! reordering), loss and duplication, driven by a seed and virtual time.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::time::Duration;

use super::Rng;
use crate::model::Instant;

/// How one direction of a link behaves.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct LinkParams {
    /// Fixed one-way delay.
    pub latency: Duration,
    /// Extra delay, uniform in `0..=jitter`; messages overtake each other when it
    /// exceeds their spacing.
    pub jitter: Duration,
    /// Chance a message is lost, in parts per million.
    pub loss_ppm: u32,
    /// Chance a delivered message arrives twice, in parts per million.
    pub duplicate_ppm: u32,
}

impl LinkParams {
    /// A perfect link with a fixed latency.
    pub const fn ideal(latency: Duration) -> LinkParams {
        LinkParams { latency, jitter: Duration::ZERO, loss_ppm: 0, duplicate_ppm: 0 }
    }
}

/// Messages of type `T` in flight, delivered in time order (ties in sending
/// order).
#[derive(Debug)]
pub struct Network<T> {
    in_flight: BinaryHeap<Reverse<(Instant, u64, Slot<T>)>>,
    next_seq: u64,
    rng: Rng,
    sent: u64,
    lost: u64,
    duplicated: u64,
}

/// Heap entries compare by (time, sequence) only.
#[derive(Debug)]
struct Slot<T>(T);

impl<T> PartialEq for Slot<T> {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}
impl<T> Eq for Slot<T> {}
impl<T> PartialOrd for Slot<T> {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl<T> Ord for Slot<T> {
    fn cmp(&self, _: &Self) -> std::cmp::Ordering {
        std::cmp::Ordering::Equal
    }
}

impl<T: Clone> Network<T> {
    /// An empty network whose randomness comes from `seed`.
    pub fn new(seed: u64) -> Network<T> {
        Network { in_flight: BinaryHeap::new(), next_seq: 0, rng: Rng::new(seed), sent: 0, lost: 0, duplicated: 0 }
    }

    /// Puts `message` on a link at `now`. Returns false if the link lost it.
    pub fn transmit(&mut self, now: Instant, link: &LinkParams, message: T) -> bool {
        self.sent += 1;
        if self.rng.chance(link.loss_ppm) {
            self.lost += 1;
            return false;
        }
        if self.rng.chance(link.duplicate_ppm) {
            self.duplicated += 1;
            let at = self.arrival(now, link);
            self.push(at, message.clone());
        }
        let at = self.arrival(now, link);
        self.push(at, message);
        true
    }

    /// Delivers `message` exactly at `at`, bypassing loss (for local timers).
    pub fn schedule(&mut self, at: Instant, message: T) {
        self.push(at, message);
    }

    fn arrival(&mut self, now: Instant, link: &LinkParams) -> Instant {
        let jitter_ms = link.jitter.as_millis() as u64;
        now + link.latency + Duration::from_millis(self.rng.below(jitter_ms + 1))
    }

    fn push(&mut self, at: Instant, message: T) {
        self.in_flight.push(Reverse((at, self.next_seq, Slot(message))));
        self.next_seq += 1;
    }

    /// When the next message arrives.
    pub fn next_arrival(&self) -> Option<Instant> {
        self.in_flight.peek().map(|Reverse((at, _, _))| *at)
    }

    /// The next message due at or before `now`, with its arrival time.
    pub fn deliver(&mut self, now: Instant) -> Option<(Instant, T)> {
        if self.next_arrival()? > now {
            return None;
        }
        self.in_flight.pop().map(|Reverse((at, _, Slot(message)))| (at, message))
    }

    /// Messages still in flight.
    pub fn in_flight(&self) -> usize {
        self.in_flight.len()
    }

    /// (sent, lost, duplicated) so far.
    pub fn counters(&self) -> (u64, u64, u64) {
        (self.sent, self.lost, self.duplicated)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delivers_in_time_order_with_loss_and_duplicates() {
        let mut net = Network::new(3);
        let link = LinkParams {
            latency: Duration::from_millis(100),
            jitter: Duration::from_millis(50),
            loss_ppm: 100_000,
            duplicate_ppm: 100_000,
        };
        for i in 0..10_000u32 {
            net.transmit(Instant::from_millis(u64::from(i)), &link, i);
        }
        let (sent, lost, duplicated) = net.counters();
        assert_eq!(sent, 10_000);
        assert!((800..1200).contains(&lost), "{lost}");
        assert!((700..1100).contains(&duplicated), "{duplicated}");
        let mut last = Instant::ZERO;
        let mut count = 0;
        let mut reordered = false;
        let mut previous = 0;
        while let Some((at, value)) = net.deliver(Instant::from_millis(1_000_000)) {
            assert!(at >= last);
            reordered |= value < previous;
            previous = value;
            last = at;
            count += 1;
        }
        assert_eq!(count as u64, sent - lost + duplicated);
        assert!(reordered, "jitter larger than spacing reorders");
        assert_eq!(net.in_flight(), 0);
    }

    #[test]
    fn nothing_before_its_time() {
        let mut net = Network::new(1);
        net.transmit(Instant::from_millis(0), &LinkParams::ideal(Duration::from_millis(10)), "x");
        assert_eq!(net.deliver(Instant::from_millis(9)), None);
        assert_eq!(net.next_arrival(), Some(Instant::from_millis(10)));
        assert_eq!(net.deliver(Instant::from_millis(10)), Some((Instant::from_millis(10), "x")));
    }
}
