//! The device side of FOTA: the Firmware Update object (/5) as a device runs it.
//!
//! `no_std` + `alloc`, sans-I/O: the object answers the server's requests with
//! the CoAP codes the device sends back, tells the firmware what to do next
//! through [`FirmwareEvent`]s (download, apply, notify, send, persist), and
//! streams pushed image blocks into a caller's [`PackageSink`] without buffering
//! the image. Its state serializes with serde so that a device that reboots
//! mid-download or mid-update resumes with the right State and Update Result.

mod firmware_update;
mod observe;
mod uri;

pub use firmware_update::{
    CountingSink, FirmwareError, FirmwareEvent, FirmwareUpdate, FirmwareUpdateConfig, PackageBlock, PackageError,
    PackageSink,
};
pub use observe::{DueNotification, Observations};
