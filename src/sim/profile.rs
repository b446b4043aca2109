//! Device behaviour profiles: each a documented set of parameters.

use std::time::Duration;

use super::network::LinkParams;
use crate::model::{Lwm2mVersion, ObjectVersion};

/// Whether and how a device reports with LwM2M Send.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SendMode {
    /// Never configured for Send.
    Off,
    /// Sends /3/0/3, /3/0/19, /5/0/3, /5/0/5, /5/0/8, /5/0/9 on every State or
    /// Update Result change, and after re-registering.
    OnChange,
    /// Configured for Send but never sends (a misconfigured device).
    Silent,
}

/// The parameters of one device behaviour.
#[derive(Debug, Clone, Copy, PartialEq)]
#[non_exhaustive]
pub struct Profile {
    /// Name used on command lines.
    pub name: &'static str,
    /// LwM2M enabler version it registers with.
    pub lwm2m_version: Lwm2mVersion,
    /// /5 object version (sent as `ver` from LwM2M 1.1 on).
    pub firmware_object: ObjectVersion,
    /// Answers Observe with notifications (else 4.05).
    pub observe: bool,
    /// Shows State 1 while downloading (else Idle until the image is complete).
    pub reports_downloading: bool,
    /// Multi-value payloads: SenML-CBOR (else TLV only).
    pub senml: bool,
    /// Send behaviour.
    pub send: SendMode,
    /// Queue mode: reachable only for `awake_window` after each uplink.
    pub queue_mode: bool,
    /// How long a queue-mode device listens after an uplink.
    pub awake_window: Duration,
    /// Registration lifetime; Updates go out at 90 % of it.
    pub lifetime: Duration,
    /// Pull download speed, bytes per second.
    pub download_rate: u64,
    /// Time to install an image and reboot.
    pub install_time: Duration,
    /// Chance, per download and per install, of an unplanned reboot part way (ppm).
    pub reboot_ppm: u32,
    /// Chance a pull download loses its connection part way (ppm): Update Result 4.
    pub download_failure_ppm: u32,
    /// De-registers before installing an image (a graceful shutdown some
    /// clients do; a server must keep the task and wait for the new Register).
    pub deregister_before_update: bool,
    /// Keeps its last answer and repeats it for a retransmitted or duplicated
    /// request (CoAP de-duplication, RFC 7252 §4.5). Without it, every copy
    /// is executed again, as by clients built without a response cache: a
    /// second Package URI write while Downloading is refused with 4.00, a
    /// second Execute while Updating with 4.05.
    pub deduplicates: bool,
    /// Answers 5.03 Service Unavailable to every request that arrives while
    /// it downloads an image (its own block-wise transfer), and to this share
    /// of the pushed blocks it already holds (ppm), as busy clients do.
    pub busy_ppm: Option<u32>,
    /// When, after power-on, its first Register goes out: uniformly between
    /// the two (later boots take 5 s).
    pub first_register: (Duration, Duration),
    /// Server to device link.
    pub downlink: LinkParams,
    /// Device to server link.
    pub uplink: LinkParams,
}

const fn link(latency_ms: u64, jitter_ms: u64, loss_ppm: u32, duplicate_ppm: u32) -> LinkParams {
    LinkParams {
        latency: Duration::from_millis(latency_ms),
        jitter: Duration::from_millis(jitter_ms),
        loss_ppm,
        duplicate_ppm,
    }
}

/// A device that implements LwM2M 1.1 and object 5 1.1 correctly, on a good link.
pub const CONFORMING: Profile = Profile {
    name: "conforming",
    lwm2m_version: Lwm2mVersion::V1_1,
    firmware_object: ObjectVersion::V1_1,
    observe: true,
    reports_downloading: true,
    senml: true,
    send: SendMode::OnChange,
    queue_mode: false,
    awake_window: Duration::from_secs(93),
    lifetime: Duration::from_secs(300),
    download_rate: 20_000,
    install_time: Duration::from_secs(20),
    reboot_ppm: 0,
    download_failure_ppm: 0,
    deregister_before_update: false,
    deduplicates: true,
    busy_ppm: None,
    first_register: (Duration::ZERO, Duration::from_secs(5)),
    downlink: link(50, 20, 0, 0),
    uplink: link(50, 20, 0, 0),
};

/// Conforming, on a link that drops 5 % and duplicates 2 % of messages both
/// ways, and whose downloads lose their connection 10 % of the time.
pub const LOSSY: Profile = Profile {
    name: "lossy",
    download_failure_ppm: 100_000,
    downlink: link(150, 400, 50_000, 20_000),
    uplink: link(150, 400, 50_000, 20_000),
    ..CONFORMING
};

/// On a link that drops 15 % and duplicates 5 % of messages both ways
/// (downloads included), with reordering, and without CoAP de-duplication:
/// retransmitted and duplicated requests are executed again.
pub const NO_DEDUP: Profile = Profile {
    name: "no-dedup",
    deduplicates: false,
    download_failure_ppm: 0,
    downlink: link(150, 400, 150_000, 50_000),
    uplink: link(150, 400, 150_000, 50_000),
    ..CONFORMING
};

/// Conforming on a link as [`NO_DEDUP`]'s, busy with its transfers: 5.03
/// to requests that arrive while it downloads, and to one in ten of the pushed
/// blocks it already holds.
pub const BUSY: Profile = Profile {
    name: "busy",
    busy_ppm: Some(100_000),
    download_failure_ppm: 0,
    downlink: link(150, 400, 150_000, 50_000),
    uplink: link(150, 400, 150_000, 50_000),
    ..CONFORMING
};

/// Conforming, but reboots unexpectedly part way through 30 % of downloads and
/// 30 % of installs (resuming from its persisted /5 state), and de-registers
/// before it installs an image.
pub const REBOOTING: Profile =
    Profile { name: "rebooting", reboot_ppm: 300_000, deregister_before_update: true, ..CONFORMING };

/// A queue-mode device (LwM2M 1.1 `Q`): reachable only in the 30 s after each
/// uplink, sending a Registration Update every 9 minutes.
pub const SLOW_UPLINK: Profile = Profile {
    name: "slow-uplink",
    queue_mode: true,
    awake_window: Duration::from_secs(30),
    lifetime: Duration::from_secs(600),
    download_rate: 5_000,
    downlink: link(400, 200, 0, 0),
    uplink: link(400, 200, 0, 0),
    ..CONFORMING
};

/// Conforming, configured for Send, but never sends.
pub const NO_SEND: Profile = Profile { name: "no-send", send: SendMode::Silent, ..CONFORMING };

/// A weak LwM2M 1.0 stack: no Observe (answers 4.05), never shows Downloading,
/// TLV only, no Send.
pub const POOR: Profile = Profile {
    name: "poor",
    lwm2m_version: Lwm2mVersion::V1_0,
    firmware_object: ObjectVersion::V1_0,
    observe: false,
    reports_downloading: false,
    senml: false,
    send: SendMode::Off,
    download_rate: 10_000,
    ..CONFORMING
};

/// A device that is mostly away: conforming, but its first Register comes
/// 1 to 6 hours after the upgrade is scheduled (uniformly), it then registers
/// rarely (lifetime 12 h: a Registration Update every 10.8 h), and in queue
/// mode it listens only in the 30 s after each uplink, on a slow link
/// (400 ± 200 ms, 5 kB/s downloads). Under the default 20-minute upgrade
/// timeout it is never seen in time (`timeout-waiting-for-the-device`); with
/// a timeout longer than its absence, reads-only waits hours for the next
/// Update while observations and Send need only minutes.
pub const OFFLINE: Profile = Profile {
    name: "offline",
    queue_mode: true,
    awake_window: Duration::from_secs(30),
    lifetime: Duration::from_secs(12 * 3600),
    download_rate: 5_000,
    first_register: (Duration::from_secs(3600), Duration::from_secs(6 * 3600)),
    downlink: link(400, 200, 0, 0),
    uplink: link(400, 200, 0, 0),
    ..CONFORMING
};

/// Every named profile except `mixed`.
pub const PROFILES: [Profile; 9] = [CONFORMING, LOSSY, NO_DEDUP, BUSY, REBOOTING, SLOW_UPLINK, NO_SEND, POOR, OFFLINE];

/// The profiles as statics, so devices hold a reference instead of a copy.
static PROFILE_TABLE: [Profile; 9] = PROFILES;

/// `mixed`: a fleet blend, by device: 40 % conforming, 15 % lossy, 5 %
/// no-dedup, 5 % busy, 10 % rebooting, 10 % slow-uplink, 5 % no-send, 10 % poor
/// (no `offline`: under the default timeout every offline device fails
/// waiting, which would hide what the blend measures).
pub const MIXED_WEIGHTS: [(Profile, u32); 8] = [
    (CONFORMING, 40),
    (LOSSY, 15),
    (NO_DEDUP, 5),
    (BUSY, 5),
    (REBOOTING, 10),
    (SLOW_UPLINK, 10),
    (NO_SEND, 5),
    (POOR, 10),
];

/// A fleet's behaviour: one profile for all, or the `mixed` blend.
// A profile is a few hundred bytes of constants, copied rarely: boxing it
// would cost an allocation per fleet for nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum FleetProfile {
    /// Every device behaves the same.
    Uniform(Profile),
    /// Each device draws a profile from [`MIXED_WEIGHTS`] by its id.
    Mixed,
}

impl FleetProfile {
    /// The fleet profile of a command-line name (`conforming`, …, `mixed`).
    pub fn from_name(name: &str) -> Option<FleetProfile> {
        if name == "mixed" {
            return Some(FleetProfile::Mixed);
        }
        PROFILES.iter().find(|p| p.name == name).map(|p| FleetProfile::Uniform(*p))
    }

    /// The name.
    pub fn name(&self) -> &'static str {
        match self {
            FleetProfile::Uniform(p) => p.name,
            FleetProfile::Mixed => "mixed",
        }
    }

    /// The profile of device `id` (deterministic for a given `seed`).
    pub fn for_device(&self, seed: u64, id: u64) -> &'static Profile {
        let index = match self {
            FleetProfile::Uniform(p) => PROFILES.iter().position(|q| q.name == p.name).unwrap_or(0),
            FleetProfile::Mixed => {
                let total: u32 = MIXED_WEIGHTS.iter().map(|(_, w)| w).sum();
                let mut pick = super::Rng::derive(seed ^ 0x006D_6978_6564, id).below(u64::from(total)) as u32;
                let mut chosen = 0;
                for (i, (_, weight)) in MIXED_WEIGHTS.iter().enumerate() {
                    if pick < *weight {
                        chosen = i;
                        break;
                    }
                    pick -= weight;
                }
                PROFILES.iter().position(|q| q.name == MIXED_WEIGHTS[chosen].0.name).unwrap_or(0)
            }
        };
        &PROFILE_TABLE[index]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_blend() {
        for p in PROFILES {
            assert_eq!(FleetProfile::from_name(p.name), Some(FleetProfile::Uniform(p)));
        }
        assert_eq!(FleetProfile::from_name("mixed"), Some(FleetProfile::Mixed));
        assert_eq!(FleetProfile::from_name("nope"), None);
        let mut counts = std::collections::HashMap::new();
        for id in 0..20_000 {
            *counts.entry(FleetProfile::Mixed.for_device(9, id).name).or_insert(0u32) += 1;
        }
        assert!((7_200..8_800).contains(&counts["conforming"]), "{counts:?}");
        assert!((700..1300).contains(&counts["no-dedup"]), "{counts:?}");
        assert!((700..1300).contains(&counts["busy"]), "{counts:?}");
        assert!((700..1300).contains(&counts["no-send"]), "{counts:?}");
        assert_eq!(FleetProfile::Mixed.for_device(9, 5), FleetProfile::Mixed.for_device(9, 5));
    }
}
