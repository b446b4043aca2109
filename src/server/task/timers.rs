//! The task's deadlines, in one table (as quinn-proto's `TimerTable`).

use crate::model::Instant;

/// One deadline of a task.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Timer {
    /// U1: the upgrade's timeout; after a failure that may hide an applied
    /// update, the end of the watch for a late success.
    Upgrade,
    /// The request in flight was never answered: CoAP gave up on it by now.
    Request,
    /// B7: the step's fallback, when the device has said nothing for a step
    /// timeout.
    Step,
    /// 5.03 Service Unavailable: no request before then.
    Busy,
    /// A queue-mode device listens until then (inclusive) after it spoke:
    /// the window closes (the timer fires) a millisecond later.
    Window,
}

impl Timer {
    /// In the order [`UpgradeTask::handle_timeout`](super::UpgradeTask::handle_timeout)
    /// fires them when several are due.
    pub const ALL: [Timer; 5] = [Timer::Upgrade, Timer::Request, Timer::Step, Timer::Busy, Timer::Window];
}

/// An unarmed timer (the far future is never reached).
const NEVER: Instant = Instant::from_millis(u64::MAX);

/// The latest instant an armed timer holds.
const LATEST: Instant = Instant::from_millis(u64::MAX - 1);

/// When each timer fires, [`NEVER`] when it is not armed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub(super) struct Timers([Instant; 5]);

impl Default for Timers {
    fn default() -> Timers {
        Timers([NEVER; 5])
    }
}

impl Timers {
    pub fn set(&mut self, timer: Timer, at: Instant) {
        // The far future (a saturated `Duration::MAX`) is still armed.
        self.0[timer as usize] = at.min(LATEST);
    }

    pub fn stop(&mut self, timer: Timer) {
        self.0[timer as usize] = NEVER;
    }

    pub fn get(&self, timer: Timer) -> Option<Instant> {
        Some(self.0[timer as usize]).filter(|at| *at != NEVER)
    }

    pub fn is_armed(&self, timer: Timer) -> bool {
        self.get(timer).is_some()
    }

    /// When `timer` fires, if it is armed: at its instant, but the window a
    /// millisecond after its last instant.
    pub fn fires_at(&self, timer: Timer) -> Option<Instant> {
        let at = self.get(timer)?;
        Some(if timer == Timer::Window { at + core::time::Duration::from_millis(1) } else { at })
    }

    /// True when `timer` is armed and due at `now`.
    pub fn is_due(&self, timer: Timer, now: Instant) -> bool {
        self.fires_at(timer).is_some_and(|at| now >= at)
    }

    /// The earliest firing of `timers` that are armed.
    pub fn earliest(&self, timers: &[Timer]) -> Option<Instant> {
        timers.iter().filter_map(|t| self.fires_at(*t)).min()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_table() {
        let mut timers = Timers::default();
        assert_eq!(timers.earliest(&Timer::ALL), None);
        timers.set(Timer::Step, Instant::from_millis(50));
        timers.set(Timer::Upgrade, Instant::from_millis(90));
        assert_eq!(timers.earliest(&Timer::ALL), Some(Instant::from_millis(50)));
        assert_eq!(timers.earliest(&[Timer::Upgrade, Timer::Request]), Some(Instant::from_millis(90)));
        assert!(!timers.is_due(Timer::Step, Instant::from_millis(49)));
        assert!(timers.is_due(Timer::Step, Instant::from_millis(50)));
        // The window's instant is its last: it closes a millisecond later.
        timers.set(Timer::Window, Instant::from_millis(70));
        assert!(!timers.is_due(Timer::Window, Instant::from_millis(70)));
        assert!(timers.is_due(Timer::Window, Instant::from_millis(71)));
        assert_eq!(timers.earliest(&[Timer::Window]), Some(Instant::from_millis(71)));
        timers.stop(Timer::Window);
        assert!(!timers.is_due(Timer::Busy, Instant::from_millis(50)));
        timers.stop(Timer::Step);
        assert!(!timers.is_armed(Timer::Step));
        // A saturated far future is armed all the same.
        timers.set(Timer::Busy, Instant::ZERO + core::time::Duration::MAX);
        assert!(timers.is_armed(Timer::Busy));
        timers.stop(Timer::Busy);
        assert_eq!(timers.earliest(&Timer::ALL), Some(Instant::from_millis(90)));
    }
}
