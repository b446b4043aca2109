//! The task's I/O surface: what goes in ([`TaskInput`]), what comes out
//! ([`TaskOutput`]), and the misuse errors.

use bytes::Bytes;
use core::time::Duration;

use super::super::outcome::TaskEvent;
use crate::model::{
    Block, ContentFormat, DeliveryMethod, Operation, ProtocolSet, Registration, RequestId, ResponseCode, State,
    UpdateResult,
};

/// What the server knows of a device without asking it (U6).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct CachedModel {
    /// `/5/0/3`.
    pub state: Option<State>,
    /// `/5/0/5`.
    pub result: Option<UpdateResult>,
    /// `/5/0/8`.
    pub protocols: Option<ProtocolSet>,
    /// `/5/0/9`.
    pub delivery: Option<DeliveryMethod>,
}

/// One input: an operator command, or something from the device or the
/// transport. Every input comes with the time it happened, which must not go
/// backwards ([`TaskError::TimeWentBackwards`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum TaskInput<'a> {
    /// Operator: start the upgrade; its timeout (U1) runs from here. A task
    /// already started ignores it.
    Start,
    /// Operator: cancel the upgrade (B4). The device's state machine is reset
    /// with an empty Package URI if the image was already on its way. A
    /// finished task ignores it.
    Cancel,
    /// Operator: release the Execute held at Downloaded (U12). Given before
    /// the device is Downloaded, the Execute is not held at all.
    ReleaseExecute,
    /// A Register: a new registration (the old one's observations are void).
    Registered(&'a Registration),
    /// A Registration Update.
    RegistrationUpdated,
    /// A De-register.
    Deregistered,
    /// The device's answer to request `id`.
    Response {
        /// The request.
        id: RequestId,
        /// The code.
        code: ResponseCode,
        /// The payload's format, if it has one.
        format: Option<ContentFormat>,
        /// The payload.
        payload: &'a [u8],
    },
    /// The device answered request `id` with 5.03 Service Unavailable: it is
    /// busy (e.g. with a block-wise transfer) and asks to be asked again after
    /// `max_age` (the response's Max-Age option, RFC 7252 §5.9.3.4; `None`
    /// when absent, meaning its default of 60 s). The task sends the same
    /// request again then, never sooner, and never later than one step
    /// timeout. A plain [`TaskInput::Response`] with code 5.03 is taken the
    /// same way, with the default Max-Age.
    ServiceUnavailable {
        /// The request.
        id: RequestId,
        /// The Max-Age option's value.
        max_age: Option<Duration>,
    },
    /// Request `id` could not be delivered (CoAP retransmissions exhausted).
    TransportFailure {
        /// The request.
        id: RequestId,
    },
    /// A notification of the observation started by request `observation`.
    Notification {
        /// The Observe request.
        observation: RequestId,
        /// Payload format.
        format: ContentFormat,
        /// Payload.
        payload: &'a [u8],
    },
    /// An LwM2M Send (`POST /dp`).
    Send {
        /// Payload format.
        format: ContentFormat,
        /// Payload.
        payload: &'a [u8],
    },
}

/// A request the caller must send to the device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RequestKind {
    /// An LwM2M operation, ready to send.
    Operation(Operation),
    /// One block of the pushed image: send bytes `block.offset()` up to
    /// `block.offset() + block.size` (or the end) of the image as a
    /// `WriteBlock` to `/5/0/0` (Content-Format 42) with Size1 = `total_size`.
    PackageBlock {
        /// Block number, more flag and size.
        block: Block,
        /// The image's size.
        total_size: u64,
    },
}

/// A request with the id the caller echoes in [`TaskInput::Response`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaskRequest {
    /// Request id.
    pub id: RequestId,
    /// What to send.
    pub kind: RequestKind,
}

/// What [`UpgradeTask::poll_output`](super::UpgradeTask::poll_output) yields.
/// Exhaustive: the caller must act on every kind.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TaskOutput {
    /// Send this request to the device.
    Request(TaskRequest),
    /// Report this.
    Event(TaskEvent),
}

/// Misuse of the task (not device behaviour, which only ever produces events).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TaskError {
    /// `now` is earlier than an instant given before.
    #[error("time went backwards")]
    TimeWentBackwards,
    /// A response or failure for a request id this task never issued.
    #[error("request {0} was never issued by this task")]
    UnknownRequest(RequestId),
}

/// Text payload helper for requests: the bytes of `s`.
pub(super) fn text(s: &str) -> Bytes {
    Bytes::copy_from_slice(s.as_bytes())
}
