//! Deterministic simulation (feature `sim`): simulated devices built on
//! [`crate::device`], behaviour profiles, and a lossy, delaying network, all
//! driven by a seed and virtual time: no clock, no threads, no sockets.
//!
//! Profiles ([`profile::PROFILES`], and the [`FleetProfile::Mixed`] blend):
//! `conforming`, `lossy`, `no-dedup`, `busy`, `rebooting`, `slow-uplink`,
//! `no-send`, `poor` and `offline` (first Register 1–6 h late, then rarely:
//! lifetime 12 h, queue mode), each a documented set of [`Profile`]
//! parameters.
//!
//! A device sends LwM2M Send only when the server configured it for Send
//! ([`SimDevice::configure_send`]; a new device is configured): a [`Fleet`]
//! configures its devices only when the upgrade's strategy is
//! [`Strategy::Send`](crate::server::Strategy::Send), as an operator does for
//! S4, so the other strategies see only the uplinks a device makes anyway
//! (Registration Updates, notifications) and reads-only (S1) pays the idle
//! time between them. The `no-send` profile is configured and still silent.
//! Under NSTART = 1 ([`SimDevice::set_nstart`], which the fleet turns on) a
//! device sends no confirmable uplink before the previous one was
//! acknowledged ([`SimDevice::uplink_acknowledged`]): its after-boot Send
//! waits for the Register's answer.
//!
//! `examples/fleet.rs` runs fleets side by side per strategy, and with
//! `--advise` every profile × every strategy with a recommendation per profile
//! (B6).
//!
//! ```
//! use lwm2m_fota::model::{ClientMessage, Instant, Operation, Path, Value};
//! use lwm2m_fota::sim::{profile, ImageStore, SimDevice, SimImage};
//!
//! let mut images = ImageStore::new();
//! images.insert("coap://fw/v2", SimImage { size: 40_000, version: Some("2.0.0".into()) });
//! let mut device = SimDevice::new(1, &profile::CONFORMING, 42, "1.0.0", Instant::ZERO);
//! let mut now = Instant::ZERO;
//! // Run until it has registered.
//! while device.registrations() == 0 {
//!     now = device.poll_timeout().unwrap();
//!     device.handle_timeout(now, &images);
//! }
//! assert!(matches!(device.poll_message(), Some(ClientMessage::Register(_))));
//! ```

mod campaign;
mod device;
mod fleet;
mod network;
pub mod profile;
mod rng;

pub use campaign::{
    CampaignRun, CampaignSimConfig, Command, DeviceBlock, MAX_SIM_DEVICES, MAX_SIM_IMAGE, SimError, run_campaign,
};
pub use device::{IMAGE_HEADER, ImageStore, SimDevice, SimImage, UplinkStamp, image_bytes, image_version};
pub use fleet::{Durations, Fleet, FleetConfig, FleetReport, registration_query, run_fleet};
pub use network::{LinkParams, Network};
pub use profile::{FleetProfile, Profile, SendMode};
pub use rng::Rng;

/// Appends `n` in decimal, without `format!`.
fn push_decimal(buffer: &mut String, n: u64) {
    let mut digits = [0u8; 20];
    let mut i = digits.len();
    let mut n = n;
    loop {
        i -= 1;
        digits[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    buffer.extend(digits[i..].iter().map(|&d| char::from(d)));
}
