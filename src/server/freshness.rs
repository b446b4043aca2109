//! RFC 7641 §3.4: which of two notifications of one observation is the
//! fresher, so that a reordered, older one is dropped.

use core::time::Duration;

use crate::model::Instant;

/// How long the Observe sequence alone decides (RFC 7641 §3.4: 128 s).
pub const OBSERVE_SEQUENCE_LIFETIME: Duration = Duration::from_secs(128);

/// The last notification accepted of one observation: its Observe option
/// value (24 bits) and when it arrived.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct ObserveSequence {
    /// The Observe option's value.
    pub value: u32,
    /// When the notification arrived.
    pub at: Instant,
}

impl ObserveSequence {
    /// True when a notification with Observe `value` arriving `at` is newer
    /// than this one (RFC 7641 §3.4): its value is ahead modulo 2^24 by less
    /// than 2^23, or more than 128 s have passed (the client may have
    /// restarted its counter).
    ///
    /// ```
    /// use lwm2m_fota::model::Instant;
    /// use lwm2m_fota::server::ObserveSequence;
    /// let last = ObserveSequence { value: 10, at: Instant::from_millis(0) };
    /// assert!(last.is_older_than(11, Instant::from_millis(5)));
    /// assert!(!last.is_older_than(9, Instant::from_millis(5)), "reordered: dropped");
    /// assert!(last.is_older_than(9, Instant::from_millis(129_000)), "after 128 s anything goes");
    /// ```
    pub fn is_older_than(&self, value: u32, at: Instant) -> bool {
        const HALF: u32 = 1 << 23;
        let (v1, v2) = (self.value & 0xFF_FFFF, value & 0xFF_FFFF);
        (v1 < v2 && v2 - v1 < HALF) || (v1 > v2 && v1 - v2 > HALF) || at > self.at + OBSERVE_SEQUENCE_LIFETIME
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn last(value: u32) -> ObserveSequence {
        ObserveSequence { value, at: Instant::from_millis(1_000) }
    }

    #[test]
    fn the_rfc_7641_rule() {
        let soon = Instant::from_millis(2_000);
        assert!(last(0).is_older_than(1, soon));
        assert!(!last(1).is_older_than(1, soon), "the same value is no newer");
        assert!(!last(5).is_older_than(4, soon));
        // Wrapping at 2^24.
        assert!(last(0xFF_FFFF).is_older_than(0, soon));
        assert!(!last(0).is_older_than(0xFF_FFFF, soon));
        // Half the space ahead is not newer; just under half is.
        assert!(last(0).is_older_than((1 << 23) - 1, soon));
        assert!(!last(0).is_older_than(1 << 23, soon));
        // Time decides after 128 s, and only strictly after.
        assert!(!last(5).is_older_than(4, Instant::from_millis(129_000)));
        assert!(last(5).is_older_than(4, Instant::from_millis(129_001)));
    }
}
