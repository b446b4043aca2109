//! Deterministic simulation (feature `sim`): simulated devices built on
//! [`crate::device`], behaviour profiles, and a lossy, delaying network, all
//! driven by a seed and virtual time: no clock, no threads, no sockets.
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

pub use campaign::{CampaignRun, CampaignSimConfig, DeviceBlock, run_campaign};
pub use device::{IMAGE_HEADER, ImageStore, SimDevice, SimImage, image_bytes, image_version};
pub use fleet::{Durations, Fleet, FleetConfig, FleetReport, registration_query, run_fleet};
pub use network::{LinkParams, Network};
pub use profile::{FleetProfile, Profile, SendMode};
pub use rng::Rng;
