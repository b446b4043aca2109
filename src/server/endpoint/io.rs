//! What goes into an [`Endpoint`](super::Endpoint) and what comes out: device
//! requests and the endpoint's replies, device responses and notifications,
//! requests to devices, and events.

use alloc::vec::Vec;
use bytes::Bytes;

use crate::model::{Block, ContentFormat, Operation, ResponseCode};
use crate::server::{Location, Outcome, TaskError, TaskEvent};

/// A token: the endpoint's name for one exchange with a device, written as the
/// CoAP token's 8 bytes (big-endian). The high 32 bits say which device slot
/// it belongs to, the low 32 bits are pseudo-random (RFC 7252 §5.3.1 asks at
/// least 32 bits of randomness of a client on the Internet).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct Token(pub u64);

impl Token {
    /// The CoAP token's bytes.
    pub const fn to_bytes(self) -> [u8; 8] {
        self.0.to_be_bytes()
    }

    /// A token the endpoint could have issued (exactly 8 bytes), else `None`.
    pub fn from_bytes(bytes: &[u8]) -> Option<Token> {
        let bytes: [u8; 8] = bytes.try_into().ok()?;
        Some(Token(u64::from_be_bytes(bytes)))
    }

    pub(super) const fn slot(self) -> u32 {
        (self.0 >> 32) as u32
    }
}

/// Which device an event or request concerns: a slot and its generation, so a
/// handle to a device that has gone never names its successor.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct DeviceId {
    pub(super) slot: u32,
    pub(super) generation: u32,
}

impl DeviceId {
    /// The device's slot in the endpoint: below the number of devices the
    /// endpoint has held at once, and not shared by two devices it holds
    /// now (a caller's table of its devices can be a vector indexed by it;
    /// a slot is reused once its device is gone, under a new [`DeviceId`]).
    pub fn index(&self) -> usize {
        self.slot as usize
    }
}

/// A CoAP request method (RFC 7252 §12.1.1, RFC 8132).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Method {
    /// GET.
    Get,
    /// POST.
    Post,
    /// PUT.
    Put,
    /// DELETE.
    Delete,
    /// FETCH, PATCH, iPATCH or a method code this crate has no name for.
    Other(u8),
}

/// A request a device sent to the server (already parsed by the binding).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DeviceRequest<'a> {
    /// The method.
    pub method: Method,
    /// The Uri-Path segments.
    pub path: &'a [&'a str],
    /// The Uri-Query values.
    pub query: &'a [&'a str],
    /// The Content-Format number, if given.
    pub content_format: Option<u16>,
    /// The Block2 option's raw value, if given (`serve_block` reads it: the
    /// reserved SZX 7 is 4.00).
    pub block2: Option<u64>,
    /// The payload.
    pub payload: &'a [u8],
}

impl<'a> DeviceRequest<'a> {
    /// A request with no query, format, block or payload.
    pub const fn new(method: Method, path: &'a [&'a str]) -> DeviceRequest<'a> {
        DeviceRequest { method, path, query: &[], content_format: None, block2: None, payload: &[] }
    }
}

/// The endpoint's answer to a [`DeviceRequest`]: the binding sends it
/// piggybacked on the ACK of a confirmable request, or as a NON.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    /// The response code.
    pub code: ResponseCode,
    /// For 2.01 Created: `Location-Path: rd`, then this.
    pub location: Option<Location>,
    /// The payload's Content-Format.
    pub content_format: Option<ContentFormat>,
    /// ETag (image blocks).
    pub etag: Option<[u8; 8]>,
    /// Block2 (image blocks).
    pub block2: Option<Block>,
    /// Size2: the image's size (first image block).
    pub size2: Option<u64>,
    /// The payload.
    pub payload: Vec<u8>,
}

impl Reply {
    /// A reply with a code and nothing else.
    pub const fn code(code: ResponseCode) -> Reply {
        Reply { code, location: None, content_format: None, etag: None, block2: None, size2: None, payload: Vec::new() }
    }
}

/// A device's response to one of the endpoint's requests, or a notification of
/// one of its observations (the binding parsed it; the token matches it to the
/// exchange).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DeviceResponse<'a> {
    /// The exchange it answers.
    pub token: Token,
    /// The response code.
    pub code: ResponseCode,
    /// The Content-Format number, if given.
    pub content_format: Option<u16>,
    /// The Observe option, if given (a notification, or the first answer to
    /// an Observe).
    pub observe: Option<u32>,
    /// The Block1 option's raw value, if given (the answer to a pushed block).
    pub block1: Option<u64>,
    /// Size1, if given (with 4.13: the largest size the device takes).
    pub size1: Option<u64>,
    /// Max-Age in seconds, if given (with 5.03: when to ask again).
    pub max_age: Option<u32>,
    /// The payload.
    pub payload: &'a [u8],
}

impl<'a> DeviceResponse<'a> {
    /// A response with a code and a payload and no options.
    pub const fn new(token: Token, code: ResponseCode, payload: &'a [u8]) -> DeviceResponse<'a> {
        DeviceResponse {
            token,
            code,
            content_format: None,
            observe: None,
            block1: None,
            size1: None,
            max_age: None,
            payload,
        }
    }
}

/// What the endpoint made of a [`DeviceResponse`]: the binding acknowledges a
/// confirmable message it accepted or found stale and resets one it did not
/// match (RFC 7641 §3.6: a RST ends an observation the server has forgotten).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResponseVerdict {
    /// It answered an exchange or notified an observation.
    Accepted,
    /// A notification older than one already seen (RFC 7641 §3.4): dropped.
    Stale,
    /// No exchange or observation of that device has this token, or it came
    /// from another address: dropped.
    Unmatched,
}

/// A request to a device: the binding gives it a message id and sends it
/// confirmable, with [`token`](Self::token) as the CoAP token.
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct Transmit<P> {
    /// The device.
    pub device: DeviceId,
    /// Where it is registered from.
    pub peer: P,
    /// The exchange (for a Cancel Observation, the observation's own token).
    pub token: Token,
    /// What to send.
    pub request: DownlinkRequest,
}

/// What a [`Transmit`] carries.
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub enum DownlinkRequest {
    /// An LwM2M operation (Observe is GET with Observe 0, Cancel Observation
    /// GET with Observe 1).
    Operation(Operation),
    /// One Block1 block of a pushed image: PUT `/5/0/0`, Content-Format 42,
    /// Block1 `block`, Size1 `size1`.
    Block {
        /// The Block1 option.
        block: Block,
        /// Size1: the image's size.
        size1: u64,
        /// The block's bytes.
        payload: Bytes,
    },
}

/// What the caller must do next, from [`Endpoint::poll_output`](super::Endpoint::poll_output).
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub enum EndpointOutput<P> {
    /// Send a request to a device.
    Transmit(Transmit<P>),
    /// The endpoint forgot this exchange (its device registered again or
    /// left, or the endpoint was told to [forget](super::Endpoint::forget)
    /// the device): stop retransmitting it; a message with its token is
    /// unmatched.
    Abandon {
        /// The device the exchange was with.
        device: DeviceId,
        /// The exchange.
        token: Token,
    },
    /// Something happened to a device.
    Event(DeviceId, EndpointEvent),
}

/// What happened to a device.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub enum EndpointEvent {
    /// It registered (`replaced`: it was registered already, and that
    /// registration's observations and exchanges are void).
    Registered {
        /// It replaced an earlier registration.
        replaced: bool,
    },
    /// A Registration Update renewed its registration.
    Updated,
    /// It de-registered.
    Deregistered,
    /// Its lifetime passed without an Update: the registration is gone.
    Expired,
    /// Its upgrade task reported something.
    Task(TaskEvent),
    /// Its upgrade ended, for good (a failed task watching for a late success
    /// is reported when the watch ends or the success comes).
    Finished(Outcome),
}

/// Counters of what the endpoint dropped or refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct EndpointStats {
    /// Responses and notifications that matched no exchange or observation
    /// of the device they came from.
    pub unmatched: u64,
    /// Of those, the ones from an address no device is registered from.
    pub unmatched_foreign: u64,
    /// Notifications older than one already seen.
    pub stale: u64,
    /// Device requests answered with an error code.
    pub refused: u64,
    /// Task requests failed at once because the device had
    /// [`max_exchanges`](super::EndpointConfig::max_exchanges) in flight.
    pub exchange_limit: u64,
    /// Observations not kept because the device had
    /// [`max_observations`](super::EndpointConfig::max_observations).
    pub observation_limit: u64,
}

/// Misuse of the endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum EndpointError {
    /// `now` is earlier than a time given before.
    #[error("time went backwards")]
    TimeWentBackwards,
    /// The device already has an upgrade that has not finished.
    #[error("the device is already upgrading")]
    AlreadyUpgrading,
    /// No such device (it left, or the handle is of an earlier one).
    #[error("no such device")]
    UnknownDevice,
    /// The device table is full.
    #[error("the device table is full")]
    Full,
    /// The endpoint name is empty or too long.
    #[error("invalid endpoint name")]
    InvalidEndpoint,
    /// The task refused an input.
    #[error("task: {0}")]
    Task(#[from] TaskError),
}
