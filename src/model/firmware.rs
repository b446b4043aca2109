//! The Firmware Update object's (/5) enumerations, shared by the device's object
//! and the server's upgrade task: State, Update Result, protocols and delivery
//! methods, with their wire numbers (OMA registry `5.xml`).

use core::fmt;

/// `/5/0/3` State.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub enum State {
    /// 0: before a download, or after a successful update, a reset, a cancel or
    /// most failures.
    #[default]
    Idle,
    /// 1: the image is being transferred (push or pull).
    Downloading,
    /// 2: the image is complete; Update may be executed.
    Downloaded,
    /// 3: the image is being applied.
    Updating,
}

impl State {
    /// The value on the wire.
    pub const fn code(self) -> i64 {
        match self {
            State::Idle => 0,
            State::Downloading => 1,
            State::Downloaded => 2,
            State::Updating => 3,
        }
    }

    /// The state a wire value names, if any (only 0..=3 exist).
    pub const fn from_code(code: i64) -> Option<State> {
        Some(match code {
            0 => State::Idle,
            1 => State::Downloading,
            2 => State::Downloaded,
            3 => State::Updating,
            _ => return None,
        })
    }
}

/// `/5/0/5` Update Result.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[non_exhaustive]
pub enum UpdateResult {
    /// 0: initial value; reset whenever an update process starts and on reset.
    #[default]
    Initial,
    /// 1: firmware updated successfully.
    Success,
    /// 2: not enough flash memory for the new package.
    NotEnoughFlash,
    /// 3: out of RAM during download.
    OutOfRam,
    /// 4: connection lost during download.
    ConnectionLost,
    /// 5: integrity check failure for the downloaded package.
    IntegrityCheckFailure,
    /// 6: unsupported package type.
    UnsupportedPackageType,
    /// 7: invalid URI.
    InvalidUri,
    /// 8: firmware update failed.
    UpdateFailed,
    /// 9: unsupported protocol.
    UnsupportedProtocol,
    /// 10: firmware update cancelled (object 1.1+).
    Cancelled,
    /// 11: firmware update deferred (object 1.1+).
    Deferred,
    /// A value no object version defines (> 11); servers treat it as a failure.
    Unknown(i64),
}

impl UpdateResult {
    /// The value on the wire.
    pub const fn code(self) -> i64 {
        match self {
            UpdateResult::Initial => 0,
            UpdateResult::Success => 1,
            UpdateResult::NotEnoughFlash => 2,
            UpdateResult::OutOfRam => 3,
            UpdateResult::ConnectionLost => 4,
            UpdateResult::IntegrityCheckFailure => 5,
            UpdateResult::UnsupportedPackageType => 6,
            UpdateResult::InvalidUri => 7,
            UpdateResult::UpdateFailed => 8,
            UpdateResult::UnsupportedProtocol => 9,
            UpdateResult::Cancelled => 10,
            UpdateResult::Deferred => 11,
            UpdateResult::Unknown(code) => code,
        }
    }

    /// The result a wire value names.
    pub const fn from_code(code: i64) -> UpdateResult {
        match code {
            0 => UpdateResult::Initial,
            1 => UpdateResult::Success,
            2 => UpdateResult::NotEnoughFlash,
            3 => UpdateResult::OutOfRam,
            4 => UpdateResult::ConnectionLost,
            5 => UpdateResult::IntegrityCheckFailure,
            6 => UpdateResult::UnsupportedPackageType,
            7 => UpdateResult::InvalidUri,
            8 => UpdateResult::UpdateFailed,
            9 => UpdateResult::UnsupportedProtocol,
            10 => UpdateResult::Cancelled,
            11 => UpdateResult::Deferred,
            other => UpdateResult::Unknown(other),
        }
    }

    /// True for the download failures (2–7, 9) that return State to Idle.
    pub const fn is_download_failure(self) -> bool {
        matches!(
            self,
            UpdateResult::NotEnoughFlash
                | UpdateResult::OutOfRam
                | UpdateResult::ConnectionLost
                | UpdateResult::IntegrityCheckFailure
                | UpdateResult::UnsupportedPackageType
                | UpdateResult::InvalidUri
                | UpdateResult::UnsupportedProtocol
        )
    }
}

impl fmt::Display for UpdateResult {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let text = match self {
            UpdateResult::Initial => "initial value",
            UpdateResult::Success => "firmware updated successfully",
            UpdateResult::NotEnoughFlash => "not enough flash memory for the new package",
            UpdateResult::OutOfRam => "out of RAM during download",
            UpdateResult::ConnectionLost => "connection lost during download",
            UpdateResult::IntegrityCheckFailure => "integrity check failure for the downloaded package",
            UpdateResult::UnsupportedPackageType => "unsupported package type",
            UpdateResult::InvalidUri => "invalid URI",
            UpdateResult::UpdateFailed => "firmware update failed",
            UpdateResult::UnsupportedProtocol => "unsupported protocol",
            UpdateResult::Cancelled => "firmware update cancelled",
            UpdateResult::Deferred => "firmware update deferred",
            UpdateResult::Unknown(code) => return write!(f, "unknown update result {code}"),
        };
        write!(f, "{text} ({})", self.code())
    }
}

/// A download protocol of `/5/0/8` Firmware Update Protocol Support.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub enum Protocol {
    /// 0: CoAP (RFC 7252) with block-wise transfer, `coap://`.
    Coap,
    /// 1: CoAP over DTLS, `coaps://`.
    Coaps,
    /// 2: HTTP 1.1, `http://`.
    Http,
    /// 3: HTTPS 1.1, `https://`.
    Https,
    /// 4: CoAP over TCP (RFC 8323), `coap+tcp://`.
    CoapTcp,
    /// 5: CoAP over TLS (RFC 8323), `coaps+tcp://`.
    CoapTls,
}

impl Protocol {
    /// Every protocol, by wire value.
    pub const ALL: [Protocol; 6] =
        [Protocol::Coap, Protocol::Coaps, Protocol::Http, Protocol::Https, Protocol::CoapTcp, Protocol::CoapTls];

    /// The value in `/5/0/8`.
    pub const fn code(self) -> i64 {
        match self {
            Protocol::Coap => 0,
            Protocol::Coaps => 1,
            Protocol::Http => 2,
            Protocol::Https => 3,
            Protocol::CoapTcp => 4,
            Protocol::CoapTls => 5,
        }
    }

    /// The protocol a `/5/0/8` value names; unknown values are to be ignored.
    pub const fn from_code(code: i64) -> Option<Protocol> {
        Some(match code {
            0 => Protocol::Coap,
            1 => Protocol::Coaps,
            2 => Protocol::Http,
            3 => Protocol::Https,
            4 => Protocol::CoapTcp,
            5 => Protocol::CoapTls,
            _ => return None,
        })
    }

    /// The URI scheme a Package URI uses for this protocol.
    pub const fn scheme(self) -> &'static str {
        match self {
            Protocol::Coap => "coap",
            Protocol::Coaps => "coaps",
            Protocol::Http => "http",
            Protocol::Https => "https",
            Protocol::CoapTcp => "coap+tcp",
            Protocol::CoapTls => "coaps+tcp",
        }
    }

    /// The protocol of a URI scheme (ASCII case-insensitive, RFC 3986 §3.1).
    pub fn from_scheme(scheme: &str) -> Option<Protocol> {
        Protocol::ALL.into_iter().find(|p| p.scheme().eq_ignore_ascii_case(scheme))
    }
}

/// A set of [`Protocol`]s (the instances of `/5/0/8`), stored as bits.
///
/// ```
/// use lwm2m_fota::model::{Protocol, ProtocolSet};
/// let set = ProtocolSet::from_iter([Protocol::Coap, Protocol::Http]);
/// assert!(set.contains(Protocol::Http) && !set.contains(Protocol::Https));
/// assert_eq!(set.iter().collect::<Vec<_>>(), [Protocol::Coap, Protocol::Http]);
/// assert_eq!(set.len(), 2);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(transparent))]
pub struct ProtocolSet(u8);

impl ProtocolSet {
    /// No protocol.
    pub const EMPTY: ProtocolSet = ProtocolSet(0);

    /// The set with `protocol` added.
    pub const fn with(self, protocol: Protocol) -> ProtocolSet {
        ProtocolSet(self.0 | (1 << protocol.code()))
    }

    /// True when `protocol` is in the set.
    pub const fn contains(self, protocol: Protocol) -> bool {
        self.0 & (1 << protocol.code()) != 0
    }

    /// How many protocols the set holds.
    pub const fn len(self) -> usize {
        self.0.count_ones() as usize
    }

    /// True when the set is empty.
    pub const fn is_empty(self) -> bool {
        self.0 == 0
    }

    /// The protocols in wire order.
    pub fn iter(self) -> impl Iterator<Item = Protocol> {
        Protocol::ALL.into_iter().filter(move |p| self.contains(*p))
    }
}

impl FromIterator<Protocol> for ProtocolSet {
    fn from_iter<I: IntoIterator<Item = Protocol>>(iter: I) -> ProtocolSet {
        iter.into_iter().fold(ProtocolSet::EMPTY, ProtocolSet::with)
    }
}

/// `/5/0/9` Firmware Update Delivery Method.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub enum DeliveryMethod {
    /// 0: pull only (the server writes a Package URI).
    Pull,
    /// 1: push only (the server writes the Package block-wise).
    Push,
    /// 2: both.
    #[default]
    Both,
}

impl DeliveryMethod {
    /// The value in `/5/0/9`.
    pub const fn code(self) -> i64 {
        match self {
            DeliveryMethod::Pull => 0,
            DeliveryMethod::Push => 1,
            DeliveryMethod::Both => 2,
        }
    }

    /// The method a `/5/0/9` value names.
    pub const fn from_code(code: i64) -> Option<DeliveryMethod> {
        Some(match code {
            0 => DeliveryMethod::Pull,
            1 => DeliveryMethod::Push,
            2 => DeliveryMethod::Both,
            _ => return None,
        })
    }

    /// True when the device accepts a Package URI.
    pub const fn allows_pull(self) -> bool {
        matches!(self, DeliveryMethod::Pull | DeliveryMethod::Both)
    }

    /// True when the device accepts a pushed Package.
    pub const fn allows_push(self) -> bool {
        matches!(self, DeliveryMethod::Push | DeliveryMethod::Both)
    }
}

/// A CoAP response code (class.detail), as LwM2M operations answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct ResponseCode(pub u8);

impl ResponseCode {
    /// 2.01 Created.
    pub const CREATED: ResponseCode = ResponseCode::new(2, 1);
    /// 2.02 Deleted.
    pub const DELETED: ResponseCode = ResponseCode::new(2, 2);
    /// 2.04 Changed.
    pub const CHANGED: ResponseCode = ResponseCode::new(2, 4);
    /// 2.05 Content.
    pub const CONTENT: ResponseCode = ResponseCode::new(2, 5);
    /// 2.31 Continue (block-wise, RFC 7959).
    pub const CONTINUE: ResponseCode = ResponseCode::new(2, 31);
    /// 4.00 Bad Request.
    pub const BAD_REQUEST: ResponseCode = ResponseCode::new(4, 0);
    /// 4.04 Not Found.
    pub const NOT_FOUND: ResponseCode = ResponseCode::new(4, 4);
    /// 4.05 Method Not Allowed.
    pub const METHOD_NOT_ALLOWED: ResponseCode = ResponseCode::new(4, 5);
    /// 4.06 Not Acceptable.
    pub const NOT_ACCEPTABLE: ResponseCode = ResponseCode::new(4, 6);
    /// 4.08 Request Entity Incomplete (block-wise gap).
    pub const REQUEST_ENTITY_INCOMPLETE: ResponseCode = ResponseCode::new(4, 8);
    /// 4.12 Precondition Failed.
    pub const PRECONDITION_FAILED: ResponseCode = ResponseCode::new(4, 12);
    /// 4.13 Request Entity Too Large.
    pub const REQUEST_ENTITY_TOO_LARGE: ResponseCode = ResponseCode::new(4, 13);
    /// 4.15 Unsupported Content-Format.
    pub const UNSUPPORTED_CONTENT_FORMAT: ResponseCode = ResponseCode::new(4, 15);
    /// 5.00 Internal Server Error.
    pub const INTERNAL_SERVER_ERROR: ResponseCode = ResponseCode::new(5, 0);
    /// 5.03 Service Unavailable: transient, try again after Max-Age (RFC 7252
    /// §5.9.3.4).
    pub const SERVICE_UNAVAILABLE: ResponseCode = ResponseCode::new(5, 3);

    /// The code `class.detail`.
    pub const fn new(class: u8, detail: u8) -> ResponseCode {
        ResponseCode((class << 5) | (detail & 0x1F))
    }

    /// The class (2 success, 4 client error, 5 server error).
    pub const fn class(self) -> u8 {
        self.0 >> 5
    }

    /// The detail.
    pub const fn detail(self) -> u8 {
        self.0 & 0x1F
    }

    /// True for 2.xx.
    pub const fn is_success(self) -> bool {
        self.class() == 2
    }
}

impl fmt::Display for ResponseCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{:02}", self.class(), self.detail())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_round_trip() {
        for code in 0..4 {
            assert_eq!(State::from_code(code).unwrap().code(), code);
        }
        assert_eq!(State::from_code(4), None);
        for code in -1..14 {
            assert_eq!(UpdateResult::from_code(code).code(), code);
        }
        assert!(UpdateResult::UnsupportedProtocol.is_download_failure());
        assert!(!UpdateResult::UpdateFailed.is_download_failure());
        for p in Protocol::ALL {
            assert_eq!(Protocol::from_code(p.code()), Some(p));
            assert_eq!(Protocol::from_scheme(p.scheme()), Some(p));
        }
        assert_eq!(Protocol::from_scheme("COAPS+TCP"), Some(Protocol::CoapTls));
        assert_eq!(ResponseCode::CONTINUE.0, 0x5F);
        assert_eq!(ResponseCode::REQUEST_ENTITY_TOO_LARGE.0, 0x8D);
        assert_eq!(ResponseCode::CHANGED.to_string(), "2.04");
        assert_eq!(UpdateResult::Deferred.to_string(), "firmware update deferred (11)");
    }
}
