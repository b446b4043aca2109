//! LwM2M operations as messages, independent of CoAP: what a server asks of a
//! device and what a device sends to a server. The device side, the server
//! side, the simulator and the CoAP examples all speak these.

use alloc::boxed::Box;
use bytes::Bytes;
use core::fmt;

use super::{Binding, ContentFormat, ObjectList, ObjectVersion, Path, ResponseCode};

/// The LwM2M enabler version a client registers with (`lwm2m=`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub enum Lwm2mVersion {
    /// 1.0 (the default when `lwm2m=` is absent).
    #[default]
    V1_0,
    /// 1.1.
    V1_1,
    /// 1.2.
    V1_2,
}

impl Lwm2mVersion {
    /// The text of the `lwm2m=` parameter.
    pub const fn as_str(self) -> &'static str {
        match self {
            Lwm2mVersion::V1_0 => "1.0",
            Lwm2mVersion::V1_1 => "1.1",
            Lwm2mVersion::V1_2 => "1.2",
        }
    }

    /// The version a `lwm2m=` text names (patch releases such as "1.1.1" map to
    /// their minor version).
    pub fn parse(text: &str) -> Option<Lwm2mVersion> {
        // What clients send, at once.
        match text {
            "1.0" => return Some(Lwm2mVersion::V1_0),
            "1.1" => return Some(Lwm2mVersion::V1_1),
            "1.2" => return Some(Lwm2mVersion::V1_2),
            _ => {}
        }
        let mut parts = text.split('.');
        let (major, minor) = (parts.next()?, parts.next()?);
        if parts.next().is_some_and(|p| !p.bytes().all(|b| b.is_ascii_digit())) || major != "1" {
            return None;
        }
        match minor {
            "0" => Some(Lwm2mVersion::V1_0),
            "1" => Some(Lwm2mVersion::V1_1),
            "2" => Some(Lwm2mVersion::V1_2),
            _ => None,
        }
    }

    /// The /5 object version implied when a client omits `ver` (object5.md §1:
    /// 1.0 for LwM2M 1.0 and 1.1, 1.1 for 1.2).
    pub const fn implied_firmware_update_version(self) -> ObjectVersion {
        match self {
            Lwm2mVersion::V1_0 | Lwm2mVersion::V1_1 => ObjectVersion::V1_0,
            Lwm2mVersion::V1_2 => ObjectVersion::V1_1,
        }
    }
}

impl fmt::Display for Lwm2mVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What a client tells the server when it registers.
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct Registration {
    /// Endpoint client name (`ep=`).
    pub endpoint: Box<str>,
    /// Lifetime in seconds (`lt=`, default 86400).
    pub lifetime: u32,
    /// Enabler version (`lwm2m=`).
    pub lwm2m_version: Lwm2mVersion,
    /// Binding (`b=`, default `U`).
    pub binding: Binding,
    /// Queue mode (`Q`, or a `Q` in a 1.0 binding).
    pub queue_mode: bool,
    /// The objects and instances the client has.
    pub objects: ObjectList,
}

impl Registration {
    /// The version of object `object_id` the client runs: its `ver`, else the
    /// core-object rule for /5, else 1.0.
    pub fn object_version(&self, object_id: u16) -> Option<ObjectVersion> {
        let object = self.objects.get(object_id)?;
        Some(object.version.unwrap_or(if object_id == 5 {
            self.lwm2m_version.implied_firmware_update_version()
        } else {
            ObjectVersion::V1_0
        }))
    }
}

/// The Block1 option of a pushed request: number, more flag and size.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct Block {
    /// Block number (NUM).
    pub number: u32,
    /// More blocks follow (M).
    pub more: bool,
    /// Block size in bytes, a power of two from 16 to 1024.
    pub size: u32,
}

impl Block {
    /// Byte offset of the block.
    pub const fn offset(&self) -> u64 {
        self.number as u64 * self.size as u64
    }
}

/// Notification attributes of a Write-Attributes request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct Attributes {
    /// Minimum period between notifications, seconds.
    pub pmin: Option<u32>,
    /// Maximum period without a notification, seconds.
    pub pmax: Option<u32>,
}

/// A request from the server to the device.
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[non_exhaustive]
pub enum Operation {
    /// Read (GET), with an optional Accept.
    Read {
        /// Target.
        path: Path,
        /// Requested format.
        accept: Option<ContentFormat>,
    },
    /// Write (PUT replace, or POST partial update).
    Write {
        /// Target.
        path: Path,
        /// Payload format.
        format: ContentFormat,
        /// Payload.
        payload: Bytes,
    },
    /// One Block1 block of a Write (the pushed Package).
    WriteBlock {
        /// Target (`/5/0/0`).
        path: Path,
        /// Payload format (42, opaque).
        format: ContentFormat,
        /// The Block1 option.
        block: Block,
        /// Size1: total size, when announced.
        total_size: Option<u64>,
        /// This block's bytes.
        payload: Bytes,
    },
    /// Execute (POST without payload).
    Execute {
        /// Target.
        path: Path,
    },
    /// Observe (GET with Observe 0).
    Observe {
        /// Target.
        path: Path,
        /// Requested format.
        accept: Option<ContentFormat>,
    },
    /// Cancel Observation (GET with Observe 1).
    CancelObservation {
        /// Target.
        path: Path,
    },
    /// Write-Attributes (PUT with query, no payload).
    WriteAttributes {
        /// Target.
        path: Path,
        /// The attributes.
        attributes: Attributes,
    },
}

impl Operation {
    /// The target path.
    pub fn path(&self) -> &Path {
        match self {
            Operation::Read { path, .. }
            | Operation::Write { path, .. }
            | Operation::WriteBlock { path, .. }
            | Operation::Execute { path }
            | Operation::Observe { path, .. }
            | Operation::CancelObservation { path }
            | Operation::WriteAttributes { path, .. } => path,
        }
    }
}

/// A server request id, echoed in the device's response (the CoAP layer maps
/// it to a token and message id).
pub type RequestId = u64;

/// A message from the device to the server.
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[non_exhaustive]
pub enum ClientMessage {
    /// Register (a new registration: observations of an old one are void).
    Register(Registration),
    /// Registration Update.
    Update {
        /// New lifetime, if changed.
        lifetime: Option<u32>,
        /// New object list, if changed.
        objects: Option<ObjectList>,
    },
    /// De-register.
    Deregister,
    /// The answer to request `id`.
    Response {
        /// The request answered.
        id: RequestId,
        /// Response code.
        code: ResponseCode,
        /// Payload format, if there is a payload.
        format: Option<ContentFormat>,
        /// Payload.
        payload: Bytes,
    },
    /// A notification of the observation started by request `observation`.
    Notify {
        /// The Observe request this notification belongs to.
        observation: RequestId,
        /// Observe sequence number.
        sequence: u32,
        /// Payload format.
        format: ContentFormat,
        /// Payload.
        payload: Bytes,
    },
    /// LwM2M Send (`POST /dp`).
    Send {
        /// Payload format.
        format: ContentFormat,
        /// Payload.
        payload: Bytes,
    },
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions() {
        assert_eq!(Lwm2mVersion::parse("1.1.1"), Some(Lwm2mVersion::V1_1));
        assert_eq!(Lwm2mVersion::parse("2.0"), None);
        assert_eq!(Lwm2mVersion::V1_2.implied_firmware_update_version(), ObjectVersion::V1_1);
        let registration = Registration {
            endpoint: "ep".into(),
            lifetime: 60,
            lwm2m_version: Lwm2mVersion::V1_2,
            binding: Binding::UDP,
            queue_mode: false,
            objects: ObjectList::parse("</3/0>,</5/0>").unwrap(),
        };
        assert_eq!(registration.object_version(5), Some(ObjectVersion::V1_1));
        assert_eq!(registration.object_version(3), Some(ObjectVersion::V1_0));
        assert_eq!(registration.object_version(4), None);
    }
}
