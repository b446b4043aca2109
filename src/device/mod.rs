//! The device side of FOTA: the Firmware Update object (/5) as a device runs it.
//!
//! `no_std` + `alloc`, sans-I/O: [`FirmwareUpdate::handle`] takes the server's
//! requests and the firmware's reports as [`FirmwareInput`]s, and
//! [`FirmwareUpdate::poll_output`] hands back what the device must do as
//! [`FirmwareOutput`]s: the CoAP code to answer a request with, then the
//! actions (download, apply, notify, send, persist). Pushed image blocks stream
//! into a caller's [`PackageSink`] without being buffered. The object's state
//! serializes with serde so that a device that reboots mid-download or
//! mid-update resumes with the right State and Update Result.

mod firmware_update;
mod observe;
mod package;
mod uri;

pub use firmware_update::{FirmwareError, FirmwareInput, FirmwareOutput, FirmwareUpdate, FirmwareUpdateConfig};
pub use observe::{DueNotification, Observations};
pub use package::{CountingSink, PackageBlock, PackageError, PackageSink};
