//! An upgrade task's configuration: the reference platform's options with its
//! defaults (features.md U1–U12, S1–S5, B8).

use alloc::string::String;
use core::time::Duration;

use crate::model::{Protocol, UpdateResult};

/// RFC 7252 MAX_TRANSMIT_WAIT with the default transmission parameters: the
/// longest a confirmable request can wait for its answer.
pub const MAX_TRANSMIT_WAIT: Duration = Duration::from_secs(93);

#[cfg(feature = "serde")]
fn default_request_timeout() -> Duration {
    MAX_TRANSMIT_WAIT
}

/// How the server learns the device's FOTA State and Update Result
/// (features.md S1–S5). More optimised strategies demand more of the device;
/// with [`UpgradeConfig::fallback`] (C6) a device that refuses what S2–S5
/// need is read as under S1 instead of failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[non_exhaustive]
pub enum Strategy {
    /// S1: Reads only, triggered by the device's uplinks. Most resilient, least
    /// economical; idle time between uplinks stretches the upgrade.
    #[default]
    Reads,
    /// S2: Reads plus Observe on State and Update Result.
    ObserveResources,
    /// S3: one Observe on the whole /5/0 instance.
    ObserveInstance,
    /// S4: the device reports with LwM2M Send on every change.
    Send,
    /// S5: Observe the single resources and never Read.
    ObserveOnly,
}

impl Strategy {
    /// Every strategy, S1 to S5.
    pub const ALL: [Strategy; 5] =
        [Strategy::Reads, Strategy::ObserveResources, Strategy::ObserveInstance, Strategy::Send, Strategy::ObserveOnly];

    /// The command-line name (`read`, `observe-resources`, `observe-instance`,
    /// `send`, `observe-only`).
    pub const fn name(self) -> &'static str {
        match self {
            Strategy::Reads => "read",
            Strategy::ObserveResources => "observe-resources",
            Strategy::ObserveInstance => "observe-instance",
            Strategy::Send => "send",
            Strategy::ObserveOnly => "observe-only",
        }
    }

    /// The strategy of a command-line name.
    pub fn from_name(name: &str) -> Option<Strategy> {
        Strategy::ALL.into_iter().find(|s| s.name() == name)
    }

    /// True when the strategy may Read (all but S5).
    pub const fn reads(self) -> bool {
        !matches!(self, Strategy::ObserveOnly)
    }
}

/// How the image reaches the device (U2).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub enum Delivery {
    /// The device downloads from the Package URI (default).
    #[default]
    Pull,
    /// The server writes the image block-wise into `/5/0/0`.
    Push,
    /// Pull if the device supports it (with the configured protocol), else push,
    /// as `/5/0/9` and `/5/0/8` say.
    Auto,
}

impl Delivery {
    /// The command-line name.
    pub const fn name(self) -> &'static str {
        match self {
            Delivery::Pull => "pull",
            Delivery::Push => "push",
            Delivery::Auto => "auto",
        }
    }

    /// The delivery of a command-line name.
    pub fn from_name(name: &str) -> Option<Delivery> {
        [Delivery::Pull, Delivery::Push, Delivery::Auto].into_iter().find(|d| d.name() == name)
    }
}

/// Bounded automatic retries of failures marked retryable (B8).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct RetryPolicy {
    /// Attempts in all, the first included (1: never retry).
    pub max_attempts: u32,
    /// Update Results that allow a retry, as a bit set of their codes.
    pub retryable_results: u32,
    /// Whether a downlink failure allows a retry.
    pub retry_downlink_failures: bool,
}

impl RetryPolicy {
    /// No retries.
    pub const NONE: RetryPolicy = RetryPolicy { max_attempts: 1, retryable_results: 0, retry_downlink_failures: false };

    /// True when a failure with `result` may be retried.
    pub fn retries(&self, result: UpdateResult) -> bool {
        let code = result.code();
        (0..32).contains(&code) && self.retryable_results & (1 << code) != 0
    }
}

impl Default for RetryPolicy {
    /// Three attempts; retry on connection lost (4) and integrity failure (5)
    /// and on downlink failures.
    fn default() -> RetryPolicy {
        RetryPolicy { max_attempts: 3, retryable_results: (1 << 4) | (1 << 5), retry_downlink_failures: true }
    }
}

/// The configuration of one device's upgrade, with the reference platform's
/// defaults ([`UpgradeConfig::new`]).
#[derive(Debug, Clone, PartialEq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[non_exhaustive]
pub struct UpgradeConfig {
    /// S1–S5 (default S1, reads on uplinks).
    pub strategy: Strategy,
    /// U2: pull (default), push, or chosen from `/5/0/9`.
    pub delivery: Delivery,
    /// U3: the pull protocol (default HTTP).
    pub protocol: Protocol,
    /// U4: the prefix the Package URI is built from; its scheme must be the
    /// protocol's, e.g. `http://fw.example.com/images/`.
    pub base_uri: String,
    /// The image's name under `base_uri` (URI-safe characters only).
    pub image_name: String,
    /// The image's size in bytes (push sends it block by block).
    pub image_size: u64,
    /// U1: how long the whole upgrade may take (default 20 minutes).
    pub timeout: Duration,
    /// How long to wait for a notification or Send before falling back (B7).
    pub step_timeout: Duration,
    /// How long a request may stay unanswered before it counts as a downlink
    /// failure, and how long its answer is accepted: CoAP's own span for a
    /// confirmable exchange (default 93 s, RFC 7252 MAX_TRANSMIT_WAIT), so the
    /// task never gives up on a request the transport still retransmits. A
    /// transport that reports its failures (`TaskInput::TransportFailure`)
    /// usually does so first.
    #[cfg_attr(feature = "serde", serde(default = "default_request_timeout"))]
    pub request_timeout: Duration,
    /// U6: start from the cached data model instead of a Read (default off).
    pub use_cached_data_model: bool,
    /// U10: read `/5/0/8` and `/5/0/9` and refuse what the device does not
    /// support (default on).
    pub check_delivery_and_protocol: bool,
    /// U7: after a failed downlink, resume at the device's next uplink instead
    /// of failing (default off).
    pub resume_after_downlink_failure: bool,
    /// U9: `firmwareUpdateUseObserve`: also observe State and Update Result
    /// under S1 (default off).
    pub use_observe: bool,
    /// U11: keep the registration alive while the device is busy (default on).
    pub extend_lifetime: bool,
    /// The Lifetime written to `/1/x/1` while the device is busy (default 1 h).
    pub extended_lifetime: Duration,
    /// U12: Execute Update as soon as the device is Downloaded (default on);
    /// otherwise hold until released.
    pub execute_immediately: bool,
    /// The version `/3/0/3` must show after the update (B1, B9; exact match).
    pub target_version: Option<String>,
    /// B8.
    pub retry: RetryPolicy,
    /// Push block size: 16 to 1024 bytes, a power of two (default 1024).
    pub block_size: u32,
    /// How long a queue-mode device listens after an uplink (default 93 s,
    /// RFC 7252 MAX_TRANSMIT_WAIT).
    pub queue_window: Duration,
    /// C6, the adaptive strategy: a device that refuses what the strategy
    /// needs continues with S1 reads instead of failing. It refuses an
    /// Observe (S2, S3, S5, and U9) with 4.04, 4.05 or 5.01, or, under S4,
    /// sends no Send with its /5 state for a step timeout in a step that
    /// waits for one. The task reports the change
    /// ([`TaskEvent::StrategyChanged`](super::TaskEvent::StrategyChanged))
    /// and [`UpgradeTask::strategy_used`](super::UpgradeTask::strategy_used)
    /// tells the strategy in effect.
    ///
    /// Default off here ([`UpgradeConfig::new`] keeps the reference's
    /// behaviour: such a device fails, as before this option existed, and a
    /// snapshot without the field loads with it off); campaign templates turn
    /// it on unless they say otherwise.
    #[cfg_attr(feature = "serde", serde(default))]
    pub fallback: bool,
    /// The most image bytes per second the endpoint pushes this device's
    /// image at (U5, C3: a campaign's byte-rate quota sets it for push
    /// delivery, as [`Campaign::delivery_pace`](crate::campaign::Campaign::delivery_pace)
    /// says): a Block1 request waits until the bytes sent since the first
    /// block fit the pace. `None` (the default, and a snapshot without the
    /// field): each block goes as soon as the device answered the one
    /// before. The wait counts against the request's own timeout, so a pace
    /// must let one block go well within `request_timeout`.
    #[cfg_attr(feature = "serde", serde(default))]
    pub push_pace: Option<u64>,
}

impl UpgradeConfig {
    /// The defaults for `image_name` of `image_size` bytes under `base_uri`.
    pub fn new(base_uri: &str, image_name: &str, image_size: u64) -> UpgradeConfig {
        UpgradeConfig {
            strategy: Strategy::Reads,
            delivery: Delivery::Pull,
            protocol: Protocol::Http,
            base_uri: String::from(base_uri),
            image_name: String::from(image_name),
            image_size,
            timeout: Duration::from_secs(20 * 60),
            step_timeout: Duration::from_secs(60),
            request_timeout: MAX_TRANSMIT_WAIT,
            use_cached_data_model: false,
            check_delivery_and_protocol: true,
            resume_after_downlink_failure: false,
            use_observe: false,
            extend_lifetime: true,
            extended_lifetime: Duration::from_secs(3600),
            execute_immediately: true,
            target_version: None,
            retry: RetryPolicy::default(),
            block_size: 1024,
            queue_window: Duration::from_secs(93),
            fallback: false,
            push_pace: None,
        }
    }

    /// The Package URI: `base_uri` followed by `image_name`.
    pub fn package_uri(&self) -> String {
        let mut uri = self.base_uri.clone();
        if !uri.ends_with('/') && !self.image_name.is_empty() {
            uri.push('/');
        }
        uri.push_str(&self.image_name);
        uri
    }
}
