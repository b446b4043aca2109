//! What an operator schedules: the campaign's definition (file, targets,
//! schedule and window, quota, phases, abort rule), checked before anything
//! starts. Times are seconds on the caller's clock ([`Instant`]'s origin).

use alloc::string::String;
use alloc::vec::Vec;
use core::time::Duration;

use crate::model::Instant;

/// Each device's delivery pace when a byte-rate quota is set and
/// [`Quota::device_bytes_per_s`] is not: 20,000 bytes per second.
pub const DEFAULT_DEVICE_PACE: u64 = 20_000;

/// The base URI of the default system task when the campaign names none.
pub const DEFAULT_BASE_URI: &str = "coap://localhost:5683/fw/";

/// A campaign's definition (U5, U8, C1–C4, C9).
///
/// ```
/// use lwm2m_fota::campaign::{CampaignSpec, PhaseSpec};
/// let mut spec = CampaignSpec::new("fw-2");
/// spec.phases = vec![PhaseSpec::new(10, Some(90)), PhaseSpec::new(100, None)];
/// assert!(spec.check().is_ok());
/// spec.phases = vec![PhaseSpec::new(50, None)]; // does not rise to 100
/// assert_eq!(spec.check().unwrap_err().field, "campaign.phases");
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Default)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(deny_unknown_fields))]
#[non_exhaustive]
pub struct CampaignSpec {
    /// The catalogue file to install (its id).
    pub file: String,
    /// Targeted groups; `None` targets every device.
    #[cfg_attr(feature = "serde", serde(default))]
    pub groups: Option<Vec<String>>,
    /// Devices targeted by endpoint name, beside the groups.
    #[cfg_attr(feature = "serde", serde(default))]
    pub devices: Vec<String>,
    /// The default system task's base URI (U4); [`DEFAULT_BASE_URI`] if absent.
    #[cfg_attr(feature = "serde", serde(default))]
    pub base_uri: Option<String>,
    /// When upgrades may start (U8, C4).
    #[cfg_attr(feature = "serde", serde(default))]
    pub schedule: Schedule,
    /// What the campaign may consume (U5, C3).
    #[cfg_attr(feature = "serde", serde(default))]
    pub quota: Quota,
    /// Phases (C1); empty means one phase of every device.
    #[cfg_attr(feature = "serde", serde(default))]
    pub phases: Vec<PhaseSpec>,
    /// The abort rule (C2).
    #[cfg_attr(feature = "serde", serde(default))]
    pub abort: Option<AbortRule>,
}

/// Start, end, and the recurring maintenance window (U8, C4).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(deny_unknown_fields))]
#[non_exhaustive]
pub struct Schedule {
    /// No upgrade starts before this second (0: at once, "always").
    #[cfg_attr(feature = "serde", serde(default))]
    pub start_s: u64,
    /// No upgrade starts from this second on; `None`: no end.
    #[cfg_attr(feature = "serde", serde(default))]
    pub end_s: Option<u64>,
    /// Upgrades start only inside this window.
    #[cfg_attr(feature = "serde", serde(default))]
    pub window: Option<Window>,
}

/// A recurring window: open from `offset_s` for `duration_s` in every period
/// of `every_s`, periods counted from the clock's origin. An upgrade started
/// inside it may finish after it closes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(deny_unknown_fields))]
pub struct Window {
    /// The period, seconds (more than 0).
    pub every_s: u64,
    /// Where in the period the window opens, seconds (less than `every_s`).
    #[cfg_attr(feature = "serde", serde(default))]
    pub offset_s: u64,
    /// How long it stays open, seconds (at most `every_s`).
    pub duration_s: u64,
}

impl Window {
    /// Whether the window is open at `now`.
    ///
    /// ```
    /// use lwm2m_fota::campaign::Window;
    /// use lwm2m_fota::model::Instant;
    /// let w = Window { every_s: 100, offset_s: 10, duration_s: 20 };
    /// assert!(!w.is_open(Instant::from_millis(9_999)));
    /// assert!(w.is_open(Instant::from_millis(10_000)));
    /// assert!(w.is_open(Instant::from_millis(29_999)));
    /// assert!(!w.is_open(Instant::from_millis(30_000)));
    /// assert!(w.is_open(Instant::from_millis(110_000)));
    /// // 22:00 for four hours: open past midnight.
    /// let night = Window { every_s: 86_400, offset_s: 79_200, duration_s: 14_400 };
    /// assert!(night.is_open(Instant::from_millis(3_600_000)));
    /// assert!(!night.is_open(Instant::from_millis(7_200_000)));
    /// ```
    pub fn is_open(&self, now: Instant) -> bool {
        let period = self.every_s.saturating_mul(1000).max(1);
        let open = self.offset_s.saturating_mul(1000) % period;
        // Time since the latest opening: a window may run over the end of
        // its period into the next one (22:00 for 4 h).
        let since = (now.as_millis() % period + period - open) % period;
        since < self.duration_s.saturating_mul(1000)
    }

    /// The next instant at or after `now` when the window is open.
    pub fn next_open(&self, now: Instant) -> Instant {
        if self.is_open(now) || self.duration_s == 0 {
            return now;
        }
        let period = self.every_s.saturating_mul(1000).max(1);
        let base = now.as_millis() - now.as_millis() % period;
        let open = base.saturating_add(self.offset_s.saturating_mul(1000));
        let at = if open > now.as_millis() { open } else { open.saturating_add(period) };
        Instant::from_millis(at)
    }
}

/// Quota (U5, C3).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(deny_unknown_fields))]
#[non_exhaustive]
pub struct Quota {
    /// Most upgrades running at once.
    #[cfg_attr(feature = "serde", serde(default))]
    pub max_concurrent: Option<u32>,
    /// Most starts in any 60 seconds.
    #[cfg_attr(feature = "serde", serde(default))]
    pub max_starts_per_minute: Option<u32>,
    /// Most image bytes delivered in any second, over every device. The
    /// campaign enforces it by pacing: each running upgrade is delivered at
    /// most `device_bytes_per_s` ([`Campaign::delivery_pace`](super::Campaign::delivery_pace)),
    /// and no more upgrades run than the quota holds paces.
    #[cfg_attr(feature = "serde", serde(default))]
    pub max_bytes_per_s: Option<u64>,
    /// The pace one device's image is delivered at under a byte-rate quota
    /// (default [`DEFAULT_DEVICE_PACE`]).
    #[cfg_attr(feature = "serde", serde(default))]
    pub device_bytes_per_s: Option<u64>,
}

/// One phase (C1): `percent` of the targeted devices, cumulative.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(deny_unknown_fields))]
pub struct PhaseSpec {
    /// Cumulative percent of the targeted devices, 1 to 100, rising.
    pub percent: u8,
    /// The next phase starts only if at least this percent of this phase's
    /// finished upgrades succeeded (absent: no gate beyond finishing).
    #[cfg_attr(feature = "serde", serde(default))]
    pub min_success_percent: Option<u8>,
}

impl PhaseSpec {
    /// A phase up to `percent` with an optional gate.
    pub fn new(percent: u8, min_success_percent: Option<u8>) -> PhaseSpec {
        PhaseSpec { percent, min_success_percent }
    }
}

/// The abort rule (C2): once `min_finished` upgrades have finished, more than
/// `max_failure_percent` of them failed stops every new start.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(deny_unknown_fields))]
pub struct AbortRule {
    /// Finished upgrades before the rule applies.
    pub min_finished: u64,
    /// The failure rate, percent, above which the campaign aborts.
    pub max_failure_percent: u8,
}

/// A definition that cannot run, naming the field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {problem}")]
pub struct SpecError {
    /// The field, as the JSON spec names it (`campaign.phases`, …).
    pub field: &'static str,
    /// What is wrong with it.
    pub problem: String,
}

fn refuse(field: &'static str, problem: &str) -> Result<(), SpecError> {
    Err(SpecError { field, problem: String::from(problem) })
}

impl CampaignSpec {
    /// A campaign of `file` over every device, at once, without limits.
    pub fn new(file: &str) -> CampaignSpec {
        CampaignSpec { file: String::from(file), ..CampaignSpec::default() }
    }

    /// Checks everything that does not need the catalogue.
    pub fn check(&self) -> Result<(), SpecError> {
        if self.file.is_empty() {
            return refuse("campaign.file", "empty");
        }
        if let Some(end) = self.schedule.end_s {
            if end <= self.schedule.start_s {
                return refuse("campaign.schedule.end_s", "not after start_s");
            }
        }
        if let Some(window) = self.schedule.window {
            if window.every_s == 0 {
                return refuse("campaign.schedule.window.every_s", "must be more than 0");
            }
            if window.duration_s > window.every_s {
                return refuse("campaign.schedule.window.duration_s", "longer than its period every_s");
            }
            if window.duration_s == 0 {
                return refuse("campaign.schedule.window.duration_s", "must be more than 0");
            }
            if window.offset_s >= window.every_s {
                return refuse("campaign.schedule.window.offset_s", "not inside its period every_s");
            }
        }
        if self.quota.max_concurrent == Some(0) {
            return refuse("campaign.quota.max_concurrent", "must be more than 0");
        }
        if self.quota.max_starts_per_minute == Some(0) {
            return refuse("campaign.quota.max_starts_per_minute", "must be more than 0");
        }
        if self.quota.device_bytes_per_s == Some(0) {
            return refuse("campaign.quota.device_bytes_per_s", "must be more than 0");
        }
        if let Some(max) = self.quota.max_bytes_per_s {
            if max < self.device_pace() {
                return refuse("campaign.quota.max_bytes_per_s", "less than one device's pace (device_bytes_per_s)");
            }
        }
        let mut previous = 0;
        for phase in &self.phases {
            if phase.percent <= previous || phase.percent > 100 {
                return refuse("campaign.phases", "percents must rise, each from 1 to 100, and end at 100");
            }
            if phase.min_success_percent.is_some_and(|p| p > 100) {
                return refuse("campaign.phases.min_success_percent", "more than 100");
            }
            previous = phase.percent;
        }
        if !self.phases.is_empty() && previous != 100 {
            return refuse("campaign.phases", "percents must rise, each from 1 to 100, and end at 100");
        }
        if let Some(abort) = self.abort {
            if abort.max_failure_percent > 100 {
                return refuse("campaign.abort.max_failure_percent", "more than 100");
            }
        }
        Ok(())
    }

    /// Whether the targets select the device `endpoint` in `groups`: no
    /// groups given selects every device; else one of its groups, or its
    /// name among `devices`.
    pub fn targets(&self, endpoint: &str, groups: &[String]) -> bool {
        match &self.groups {
            None => true,
            Some(targeted) => groups.iter().any(|g| targeted.contains(g)) || self.devices.iter().any(|d| d == endpoint),
        }
    }

    /// The pace each device is delivered at under the byte-rate quota.
    pub fn device_pace(&self) -> u64 {
        self.quota.device_bytes_per_s.unwrap_or(DEFAULT_DEVICE_PACE)
    }

    /// The phases, one of 100 % when none are given.
    pub(crate) fn phases_or_default(&self) -> Vec<PhaseSpec> {
        if self.phases.is_empty() { alloc::vec![PhaseSpec::new(100, None)] } else { self.phases.clone() }
    }

    pub(crate) fn start(&self) -> Instant {
        Instant::ZERO + Duration::from_secs(self.schedule.start_s)
    }

    pub(crate) fn end(&self) -> Option<Instant> {
        self.schedule.end_s.map(|s| Instant::ZERO + Duration::from_secs(s))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn field(spec: &CampaignSpec) -> &'static str {
        spec.check().unwrap_err().field
    }

    #[test]
    fn windows_longer_than_their_period_are_refused() {
        let mut spec = CampaignSpec::new("fw");
        spec.schedule.window = Some(Window { every_s: 100, offset_s: 0, duration_s: 101 });
        assert_eq!(field(&spec), "campaign.schedule.window.duration_s");
        spec.schedule.window = Some(Window { every_s: 100, offset_s: 0, duration_s: 100 });
        assert!(spec.check().is_ok());
        spec.schedule.window = Some(Window { every_s: 100, offset_s: 100, duration_s: 10 });
        assert_eq!(field(&spec), "campaign.schedule.window.offset_s");
        spec.schedule.window = Some(Window { every_s: 0, offset_s: 0, duration_s: 0 });
        assert_eq!(field(&spec), "campaign.schedule.window.every_s");
    }

    #[test]
    fn phases_must_rise_to_100() {
        let mut spec = CampaignSpec::new("fw");
        for bad in [&[50u8, 40, 100][..], &[10, 10, 100], &[10, 90], &[0, 100], &[101]] {
            spec.phases = bad.iter().map(|&p| PhaseSpec::new(p, None)).collect();
            assert_eq!(field(&spec), "campaign.phases", "{bad:?}");
        }
        spec.phases = [1, 25, 100].iter().map(|&p| PhaseSpec::new(p, Some(90))).collect();
        assert!(spec.check().is_ok());
        spec.phases[0].min_success_percent = Some(101);
        assert_eq!(field(&spec), "campaign.phases.min_success_percent");
    }

    #[test]
    fn quota_and_schedule_bounds_are_checked() {
        let mut spec = CampaignSpec::new("fw");
        spec.quota.max_concurrent = Some(0);
        assert_eq!(field(&spec), "campaign.quota.max_concurrent");
        spec.quota.max_concurrent = None;
        spec.quota.max_bytes_per_s = Some(DEFAULT_DEVICE_PACE - 1);
        assert_eq!(field(&spec), "campaign.quota.max_bytes_per_s");
        spec.quota.max_bytes_per_s = None;
        spec.schedule.start_s = 10;
        spec.schedule.end_s = Some(10);
        assert_eq!(field(&spec), "campaign.schedule.end_s");
        spec.schedule.end_s = Some(11);
        spec.abort = Some(AbortRule { min_finished: 1, max_failure_percent: 101 });
        assert_eq!(field(&spec), "campaign.abort.max_failure_percent");
        assert_eq!(field(&CampaignSpec::new("")), "campaign.file");
    }

    #[test]
    fn window_edges() {
        let w = Window { every_s: 86_400, offset_s: 3_600, duration_s: 14_400 };
        let at = |s: u64| Instant::from_millis(s * 1000);
        assert!(!w.is_open(at(3_599)));
        assert!(w.is_open(at(3_600)));
        assert!(w.is_open(at(17_999)));
        assert!(!w.is_open(at(18_000)));
        assert_eq!(w.next_open(at(0)), at(3_600));
        assert_eq!(w.next_open(at(5_000)), at(5_000));
        assert_eq!(w.next_open(at(18_000)), at(86_400 + 3_600));
        // Over the period's end: 22:00 for four hours.
        let night = Window { every_s: 86_400, offset_s: 79_200, duration_s: 14_400 };
        assert!(night.is_open(at(79_200)) && night.is_open(at(86_399)) && night.is_open(at(86_400)));
        assert!(night.is_open(at(86_400 + 7_199)) && !night.is_open(at(86_400 + 7_200)));
        assert!(!night.is_open(at(79_199)));
        assert_eq!(night.next_open(at(10_000)), at(79_200));
        assert_eq!(night.next_open(at(3_000)), at(3_000));
        let always = Window { every_s: 10, offset_s: 0, duration_s: 10 };
        assert!(always.is_open(at(9)) && always.is_open(at(10)));
    }
}
