//! LwM2M operations as messages, independent of CoAP: what a server asks of a
//! device and what a device sends to a server. The device side, the server
//! side, the simulator and the CoAP examples all speak these.

use alloc::string::String;
use alloc::vec::Vec;
use bytes::Bytes;
use core::fmt;

use super::{ContentFormat, ObjectVersion, Path, ResponseCode};

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

/// One object of a registration's link list: `</5>;ver=1.1,</5/0>`.
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct ObjectLinks {
    /// Object id.
    pub object_id: u16,
    /// The `ver` attribute, when given.
    pub version: Option<ObjectVersion>,
    /// Instance ids listed.
    pub instances: Vec<u16>,
}

/// A link list that does not parse.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("malformed registration link list at byte {offset}")]
pub struct LinkFormatError {
    /// Byte offset of the problem.
    pub offset: usize,
}

/// Parses a Register/Update payload (CoRE Link Format, RFC 6690) into objects.
/// The root link (`</>;rt="oma.lwm2m"`) and an alternate root path are skipped;
/// `ver` is taken from object links or, as some clients send it, instance links.
///
/// ```
/// use lwm2m_fota::model::{parse_object_links, ObjectVersion};
/// let objects = parse_object_links(r#"</>;rt="oma.lwm2m";ct=11543,</1/0>,</3>;ver=1.1,</3/0>,</5>;ver="1.2",</5/0>"#).unwrap();
/// assert_eq!(objects.len(), 3);
/// assert_eq!(objects[2].object_id, 5);
/// assert_eq!(objects[2].version, Some(ObjectVersion::V1_2));
/// assert_eq!(objects[2].instances, [0]);
/// ```
///
/// # Errors
/// [`LinkFormatError`] with the offset of a link that is not `<…>` or a path
/// that is not numeric.
pub fn parse_object_links(text: &str) -> Result<Vec<ObjectLinks>, LinkFormatError> {
    match parse_plain_links(text) {
        Some(objects) => Ok(objects),
        None => parse_any_links(text),
    }
}

/// [`parse_object_links`] for any text.
fn parse_any_links(text: &str) -> Result<Vec<ObjectLinks>, LinkFormatError> {
    let mut objects: Vec<ObjectLinks> = Vec::new();
    // An alternate root path (`</lwm2m>;rt="oma.lwm2m"`) prefixes every object link.
    let mut root = "";
    let bytes = text.as_bytes();
    let mut pos = 0;
    while pos < bytes.len() {
        while pos < bytes.len() && matches!(bytes[pos], b' ' | b'\n' | b'\r' | b'\t' | b',') {
            pos += 1;
        }
        if pos >= bytes.len() {
            break;
        }
        if bytes[pos] != b'<' {
            return Err(LinkFormatError { offset: pos });
        }
        let close = text[pos..].find('>').ok_or(LinkFormatError { offset: pos })? + pos;
        let target = &text[pos + 1..close];
        // Attributes run to the next comma outside quotes.
        let mut end = close + 1;
        let mut quoted = false;
        while end < bytes.len() && (quoted || bytes[end] != b',') {
            if bytes[end] == b'"' {
                quoted = !quoted;
            }
            end += 1;
        }
        let attributes = &text[close + 1..end];
        let version = attributes.split(';').find_map(|a| {
            let value = a.trim().strip_prefix("ver=")?;
            value.trim_matches('"').parse::<ObjectVersion>().ok()
        });
        if attributes.contains("rt=\"oma.lwm2m\"") {
            root = target.trim_end_matches('/');
            pos = end;
            continue;
        }
        let target = target.strip_prefix(root).unwrap_or(target);
        // An object or object instance path: at most two numeric segments
        // (empty ones ignored); none is a link to skip.
        let mut ids = [0u16; 2];
        let mut count = 0;
        for segment in target.trim_matches('/').split('/').filter(|s| !s.is_empty()) {
            let Some(id) = segment.parse::<u16>().ok().filter(|_| count < ids.len()) else {
                return Err(LinkFormatError { offset: pos + 1 });
            };
            ids[count] = id;
            count += 1;
        }
        match ids[..count] {
            [] => {}
            [object] => add_link(&mut objects, object, None, version),
            [object, instance] => add_link(&mut objects, object, Some(instance), version),
            _ => return Err(LinkFormatError { offset: pos + 1 }),
        }
        pos = end;
    }
    Ok(objects)
}

/// Adds the link `</object>` or `</object/instance>` (with its `ver`) to `objects`.
fn add_link(objects: &mut Vec<ObjectLinks>, object: u16, instance: Option<u16>, version: Option<ObjectVersion>) {
    let Some(instance) = instance else {
        match objects.iter_mut().find(|o| o.object_id == object) {
            Some(existing) => existing.version = existing.version.or(version),
            None => objects.push(ObjectLinks { object_id: object, version, instances: Vec::new() }),
        }
        return;
    };
    let i = match objects.iter().position(|o| o.object_id == object) {
        Some(i) => i,
        None => {
            objects.push(ObjectLinks { object_id: object, version: None, instances: Vec::new() });
            objects.len() - 1
        }
    };
    let entry = &mut objects[i];
    entry.version = entry.version.or(version);
    if !entry.instances.contains(&instance) {
        entry.instances.push(instance);
    }
}

/// The link list as clients usually send it, read in one pass:
/// `</1/0>,</3/0>,</5>;ver=1.1,</5/0>` — links of one or two numeric
/// segments, each with at most a `ver` attribute of digits and dots,
/// separated by single commas, and nothing else. `None` for any other text,
/// which the general parser reads (for these it gives the same objects).
fn parse_plain_links(text: &str) -> Option<Vec<ObjectLinks>> {
    /// The decimal number at `pos` (at least one digit, at most `u16::MAX`)
    /// and where it ends.
    fn number(bytes: &[u8], mut pos: usize) -> Option<(u16, usize)> {
        let start = pos;
        let mut value = 0u32;
        while let Some(digit) = bytes.get(pos).filter(|b| b.is_ascii_digit()) {
            value = value * 10 + u32::from(digit - b'0');
            if value > u32::from(u16::MAX) {
                return None;
            }
            pos += 1;
        }
        (pos > start).then_some((value as u16, pos))
    }
    let bytes = text.as_bytes();
    let mut objects = Vec::new();
    let mut pos = 0;
    loop {
        if bytes.get(pos..pos + 2) != Some(b"</") {
            return None;
        }
        let (object, end) = number(bytes, pos + 2)?;
        pos = end;
        let mut instance = None;
        if bytes.get(pos) == Some(&b'/') {
            let (id, end) = number(bytes, pos + 1)?;
            instance = Some(id);
            pos = end;
        }
        if bytes.get(pos) != Some(&b'>') {
            return None;
        }
        pos += 1;
        let mut version = None;
        if bytes[pos..].starts_with(b";ver=") {
            let start = pos + 5;
            pos = start;
            while bytes.get(pos).is_some_and(|b| b.is_ascii_digit() || *b == b'.') {
                pos += 1;
            }
            version = text[start..pos].parse::<ObjectVersion>().ok();
        }
        add_link(&mut objects, object, instance, version);
        match bytes.get(pos) {
            None => return Some(objects),
            Some(b',') => pos += 1,
            Some(_) => return None,
        }
    }
}

/// Formats objects as a Register payload: `</1>;ver=1.1,</1/0>,</3/0>,…`.
pub fn format_object_links(objects: &[ObjectLinks]) -> String {
    use core::fmt::Write;
    let mut out = String::new();
    for object in objects {
        if object.version.is_some() || object.instances.is_empty() {
            if !out.is_empty() {
                out.push(',');
            }
            let _ = write!(out, "</{}>", object.object_id);
            if let Some(version) = object.version {
                let _ = write!(out, ";ver={version}");
            }
        }
        for instance in &object.instances {
            if !out.is_empty() {
                out.push(',');
            }
            let _ = write!(out, "</{}/{}>", object.object_id, instance);
        }
    }
    out
}

/// What a client tells the server when it registers.
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct Registration {
    /// Endpoint client name (`ep=`).
    pub endpoint: String,
    /// Lifetime in seconds (`lt=`, default 86400).
    pub lifetime: u32,
    /// Enabler version (`lwm2m=`).
    pub lwm2m_version: Lwm2mVersion,
    /// Binding (`b=`, default `U`).
    pub binding: String,
    /// Queue mode (`Q`, or a `Q` in a 1.0 binding).
    pub queue_mode: bool,
    /// The objects and instances the client has.
    pub objects: Vec<ObjectLinks>,
}

impl Registration {
    /// The version of object `object_id` the client runs: its `ver`, else the
    /// core-object rule for /5, else 1.0.
    pub fn object_version(&self, object_id: u16) -> Option<ObjectVersion> {
        let object = self.objects.iter().find(|o| o.object_id == object_id)?;
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
        objects: Option<Vec<ObjectLinks>>,
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
    use alloc::vec;

    #[test]
    fn link_lists() {
        let objects = parse_object_links("</1>;ver=1.1,</1/0>,</3/0>,</5/0>;ver=1.2").unwrap();
        assert_eq!(
            objects,
            vec![
                ObjectLinks { object_id: 1, version: Some(ObjectVersion::V1_1), instances: vec![0] },
                ObjectLinks { object_id: 3, version: None, instances: vec![0] },
                ObjectLinks { object_id: 5, version: Some(ObjectVersion::V1_2), instances: vec![0] },
            ]
        );
        let text = format_object_links(&objects);
        assert_eq!(text, "</1>;ver=1.1,</1/0>,</3/0>,</5>;ver=1.2,</5/0>");
        assert_eq!(parse_object_links(&text).unwrap(), objects);
        let alternate = parse_object_links("</lwm2m>;rt=\"oma.lwm2m\",</lwm2m/3/0>").unwrap();
        assert_eq!(alternate, vec![ObjectLinks { object_id: 3, version: None, instances: vec![0] }]);
        assert_eq!(parse_object_links("3/0").unwrap_err().offset, 0);
        assert_eq!(parse_object_links("</a/b>").unwrap_err().offset, 1);
        assert!(parse_object_links("").unwrap().is_empty());
        // What clients send is read in one pass.
        let plain = parse_plain_links("</1/0>,</3/0>,</5>;ver=1.1,</5/0>").unwrap();
        assert_eq!(plain, parse_any_links("</1/0>,</3/0>,</5>;ver=1.1,</5/0>").unwrap());
        assert_eq!(plain[2].version, Some(ObjectVersion::V1_1));
    }

    proptest::proptest! {
        /// The one-pass reader of plain link lists gives what the general
        /// parser gives, on lists near its grammar's edges (and it declines
        /// what it does not read).
        #[test]
        fn plain_links_read_as_the_general_parser_reads_them(
            links in proptest::collection::vec(
                (
                    proptest::sample::select(vec!["0", "3", "5", "007", "65535", "65536", "+5", "", "a"]),
                    proptest::option::of(proptest::sample::select(vec!["0", "1", "2", "99999", ""])),
                    proptest::option::of(proptest::sample::select(vec!["1.0", "1.1", "1.2", "2", "1.", "1.1.1", "\"1.1\""])),
                ),
                0..6,
            ),
            separator in proptest::sample::select(vec![",", ",,", ", ", ""]),
            trailer in proptest::sample::select(vec!["", ",", ";rt=\"x\"", ">"]),
        ) {
            let mut text = String::new();
            for (i, (object, instance, version)) in links.iter().enumerate() {
                if i > 0 {
                    text.push_str(separator);
                }
                text.push_str("</");
                text.push_str(object);
                if let Some(instance) = instance {
                    text.push('/');
                    text.push_str(instance);
                }
                text.push('>');
                if let Some(version) = version {
                    text.push_str(";ver=");
                    text.push_str(version);
                }
            }
            text.push_str(trailer);
            let general = parse_any_links(&text);
            if let Some(plain) = parse_plain_links(&text) {
                proptest::prop_assert_eq!(Ok(plain), general.clone(), "{}", text);
            }
            proptest::prop_assert_eq!(parse_object_links(&text), general, "{}", text);
        }
    }

    #[test]
    fn versions() {
        assert_eq!(Lwm2mVersion::parse("1.1.1"), Some(Lwm2mVersion::V1_1));
        assert_eq!(Lwm2mVersion::parse("2.0"), None);
        assert_eq!(Lwm2mVersion::V1_2.implied_firmware_update_version(), ObjectVersion::V1_1);
        let registration = Registration {
            endpoint: "ep".into(),
            lifetime: 60,
            lwm2m_version: Lwm2mVersion::V1_2,
            binding: "U".into(),
            queue_mode: false,
            objects: parse_object_links("</3/0>,</5/0>").unwrap(),
        };
        assert_eq!(registration.object_version(5), Some(ObjectVersion::V1_1));
        assert_eq!(registration.object_version(3), Some(ObjectVersion::V1_0));
        assert_eq!(registration.object_version(4), None);
    }
}
