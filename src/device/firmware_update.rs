//! The Firmware Update object (/5) as a device runs it: the state machine of
//! OMA LwM2M object 5 (versions 1.0, 1.1 and 1.2), sans-I/O.
//!
//! [`FirmwareUpdate::step`] holds the whole transition table of object5.md §6.1.

use alloc::borrow::Cow;
use alloc::collections::VecDeque;
use alloc::string::String;
use alloc::vec::Vec;
use bytes::BufMut;
use core::fmt;
use core::time::Duration;

use super::package::{PackageBlock, PackageError, PackageSink};
use super::uri::{self, UriProblem};
use crate::codec::{self, EncodeError};
use crate::model::{
    ContentFormat, DeliveryMethod, Instant, ObjectVersion, Path, Protocol, ProtocolSet, Record, Registry, ResponseCode,
    State, UpdateResult, Value,
};

#[cfg(feature = "serde")]
mod snapshot;
#[cfg(test)]
mod tests;

/// How a device's firmware sets up its /5 object.
#[derive(Debug, Clone, PartialEq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct FirmwareUpdateConfig {
    /// Object version: 1.0 (resources 0–3, 5–9), 1.1 (adds 10–13), 1.2 (adds 14).
    pub version: ObjectVersion,
    /// `/5/0/8`: the download protocols the device implements for pull.
    pub protocols: ProtocolSet,
    /// `/5/0/9`: pull, push or both.
    pub delivery: DeliveryMethod,
    /// Largest image the device can store; a larger one gives Update Result 2.
    pub max_package_size: u64,
    /// When the device has a user interface that defers updates: how long the
    /// user postpones an Execute Update (bounded by Maximum Defer Period, and
    /// never for Severity Critical). `None`: the update starts at once.
    pub user_deferral: Option<Duration>,
    /// Emit [`FirmwareOutput::SendState`] on every State or Update Result change
    /// (LwM2M 1.1+ Send, for servers that use the Send strategy).
    pub send_on_change: bool,
    /// Seconds to add to `now` (in seconds) to get Unix time, for `/5/0/12`
    /// Last State Change Time. Zero when the device has no wall clock.
    pub unix_time_offset: i64,
}

impl Default for FirmwareUpdateConfig {
    fn default() -> FirmwareUpdateConfig {
        FirmwareUpdateConfig {
            version: ObjectVersion::V1_1,
            protocols: ProtocolSet::EMPTY.with(Protocol::Coap).with(Protocol::Http),
            delivery: DeliveryMethod::Both,
            max_package_size: 16 * 1024 * 1024,
            user_deferral: None,
            send_on_change: false,
            unix_time_offset: 0,
        }
    }
}

/// One input to [`FirmwareUpdate::handle`]: a request of the server, or a
/// report of the device's firmware.
///
/// A request is always answered: the first output it gives is
/// [`FirmwareOutput::Respond`] with the CoAP code to send back. A report gives
/// no answer; a report that does not fit the object's State is an `Err`.
#[non_exhaustive]
pub enum FirmwareInput<'a> {
    /// Request: a Write of `/5/0/{resource}` other than the Package (a
    /// Package write is [`WritePackageBlock`](Self::WritePackageBlock), also
    /// when it is not block-wise).
    Write {
        /// The resource written.
        resource: u16,
        /// The value, as the payload decoded.
        value: &'a Value<'a>,
    },
    /// Request: one block of a Package write to `/5/0/0` (RFC 7959 Block1), or
    /// a whole Package as [`PackageBlock::whole`]. The object streams the bytes
    /// into `sink` and never buffers the image.
    WritePackageBlock {
        /// The block.
        block: PackageBlock<'a>,
        /// Where the image goes.
        sink: &'a mut dyn PackageSink,
    },
    /// Request: an Execute of `/5/0/{resource}` (2 Update, 10 Cancel).
    Execute {
        /// The resource executed.
        resource: u16,
    },
    /// Report: a pull download fetched `offset` bytes so far (kept to resume
    /// after a reboot).
    DownloadProgress {
        /// Bytes fetched.
        offset: u64,
    },
    /// Report: the pull download finished and the image checked out.
    DownloadCompleted,
    /// Report: the pull download failed with one of Update Results 2–7 or 9.
    DownloadFailed {
        /// Why.
        result: UpdateResult,
    },
    /// Report: the new image runs.
    UpdateSucceeded,
    /// Report: installing the image failed.
    UpdateFailed {
        /// True when the stored image can be installed again (back to
        /// Downloaded), false when it is gone or broken (back to Idle).
        image_usable: bool,
        /// 8 (update failed), or 5 (integrity check failure) for an unusable image.
        result: UpdateResult,
    },
    /// Report: the user accepts a deferred update now.
    DeferredUpdateAccepted,
    /// Report: the device booted with this object restored from its last
    /// snapshot. Outputs queued before the reboot are dropped; a pull download
    /// resumes where it stopped and an update that was being installed is
    /// applied again. `now` must not be earlier than the snapshot's last input:
    /// a clock that restarts at boot continues from
    /// [`FirmwareUpdate::last_input_time`].
    Rebooted,
}

impl fmt::Debug for FirmwareInput<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FirmwareInput::Write { resource, value } => {
                f.debug_struct("Write").field("resource", resource).field("value", value).finish()
            }
            FirmwareInput::WritePackageBlock { block, .. } => {
                f.debug_struct("WritePackageBlock").field("block", block).finish_non_exhaustive()
            }
            FirmwareInput::Execute { resource } => f.debug_struct("Execute").field("resource", resource).finish(),
            FirmwareInput::DownloadProgress { offset } => {
                f.debug_struct("DownloadProgress").field("offset", offset).finish()
            }
            FirmwareInput::DownloadCompleted => f.write_str("DownloadCompleted"),
            FirmwareInput::DownloadFailed { result } => {
                f.debug_struct("DownloadFailed").field("result", result).finish()
            }
            FirmwareInput::UpdateSucceeded => f.write_str("UpdateSucceeded"),
            FirmwareInput::UpdateFailed { image_usable, result } => {
                f.debug_struct("UpdateFailed").field("image_usable", image_usable).field("result", result).finish()
            }
            FirmwareInput::DeferredUpdateAccepted => f.write_str("DeferredUpdateAccepted"),
            FirmwareInput::Rebooted => f.write_str("Rebooted"),
        }
    }
}

/// What the device must do after an input, drained with
/// [`FirmwareUpdate::poll_output`]. Exhaustive: a new kind is a compile error
/// in the caller, not an output silently ignored.
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub enum FirmwareOutput {
    /// Download the image from `uri` starting at byte `offset` (non-zero when a
    /// download resumes after a reboot), reporting through
    /// [`FirmwareInput::DownloadProgress`], [`FirmwareInput::DownloadCompleted`]
    /// or [`FirmwareInput::DownloadFailed`].
    StartDownload {
        /// The Package URI.
        uri: String,
        /// First byte to fetch.
        offset: u64,
    },
    /// Stop the pull download in progress.
    AbortDownload,
    /// Delete the stored image (after a reset, a cancel or a failure).
    DiscardImage,
    /// Install the downloaded image now (usually a reboot), then report
    /// [`FirmwareInput::UpdateSucceeded`] or [`FirmwareInput::UpdateFailed`].
    ApplyUpdate,
    /// An observable resource of /5/0 changed: notify its observers.
    ResourceChanged(u16),
    /// State or Update Result changed and the device is configured to Send: send
    /// [`FirmwareUpdate::encode_send`] to the server (`POST /dp`).
    SendState,
    /// The object changed: save [`FirmwareUpdate`] (serde) so that a reboot
    /// resumes from here.
    Persist,
    /// Answer the server's request with this CoAP code. Every request input
    /// gives exactly one, as its first output; send it before acting on the
    /// outputs after it (an Execute Update is answered before the update runs).
    // Declared last so that the variants a format-0 snapshot's queue holds
    // keep their serde indices.
    Respond(ResponseCode),
}

/// A device application input the object did not expect (programming errors
/// of the caller, not protocol events). The object is unchanged, but for the
/// time it has seen.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum FirmwareError {
    /// The input does not fit the current State (e.g. a download completion while Idle).
    #[error("{input} is not expected in state {state:?}")]
    UnexpectedInput {
        /// What the caller reported.
        input: &'static str,
        /// The object's State.
        state: State,
    },
    /// An Update Result that cannot describe this failure.
    #[error("update result {0} cannot describe this failure")]
    InvalidResult(UpdateResult),
    /// `now` is earlier than an instant given before (by any input, server
    /// requests and [`FirmwareInput::Rebooted`] included). Nothing changed and
    /// a request got no answer.
    #[error("time went backwards")]
    TimeWentBackwards,
}

/// Where the object stands in object5.md §6: the State, with the data only
/// that State has.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// State 0.
    Idle,
    /// State 1: the transfer in progress.
    Downloading(Transfer),
    /// State 2: how the image arrived, and when a user's deferral ends (T8).
    Downloaded { transfer: Transfer, deferred_until: Option<Instant> },
    /// State 3: how the image arrived (kept for T12, back to Downloaded).
    Updating { transfer: Transfer },
}

impl Phase {
    fn state(self) -> State {
        match self {
            Phase::Idle => State::Idle,
            Phase::Downloading(_) => State::Downloading,
            Phase::Downloaded { .. } => State::Downloaded,
            Phase::Updating { .. } => State::Updating,
        }
    }
}

/// An image transfer: in progress while Downloading, and how the image
/// arrived afterwards.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Transfer {
    /// Push: bytes received so far and the last block accepted, to acknowledge
    /// a retransmission without writing it twice.
    Push { received: u64, last_block: Option<LastBlock> },
    /// Pull from the Package URI: the bytes fetched so far (the resume point).
    Pull { offset: u64 },
}

impl Transfer {
    fn bytes(self) -> u64 {
        match self {
            Transfer::Push { received, .. } => received,
            Transfer::Pull { offset } => offset,
        }
    }
}

/// The last pushed block the object accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct LastBlock {
    offset: u64,
    len: u32,
    more: bool,
}

impl LastBlock {
    /// The push after this block.
    fn transfer(self) -> Transfer {
        Transfer::Push { received: self.offset + u64::from(self.len), last_block: Some(self) }
    }

    /// True when `block` is this block again (its acknowledgement was lost).
    fn is_repeated_by(&self, block: &PackageBlock<'_>) -> bool {
        self.offset == block.offset() && self.len as usize == block.data.len()
    }
}

/// An input as the transition table sees it: requests sorted by what they
/// ask for, which does not depend on the State; and the store's verdict on a
/// pushed block, which the table hands itself after storing one.
enum Trigger<'i> {
    // ----- server requests -----
    /// A resource this object version does not have: 4.04.
    UnknownResource,
    /// A Write of a resource that cannot be written (State, Update Result, …;
    /// the Package through [`FirmwareInput::Write`]): 4.05.
    NotWritable,
    /// An Execute of a resource that cannot be executed: 4.05.
    NotExecutable,
    /// A Write whose value has the wrong type or range (a URI over 255 bytes,
    /// Severity 3, …): 4.00.
    InvalidValue,
    /// The empty Package URI or the NUL Package (§6.3).
    Reset,
    /// A non-empty Package URI, and what the device makes of it.
    WriteUri {
        uri: &'i str,
        check: Result<Protocol, UriProblem>,
    },
    /// `/5/0/11` Severity.
    WriteSeverity(i64),
    /// `/5/0/13` Maximum Defer Period.
    WriteDeferPeriod(u64),
    /// `/5/0/14` Automatic Upgrade at Download.
    WriteAutomaticUpgrade(bool),
    /// A Package block on a pull-only device: 4.05.
    PushNotSupported,
    /// A Package block with more to come that is not a whole block: 4.00.
    MalformedBlock,
    /// A Package block.
    Block {
        block: PackageBlock<'i>,
        sink: &'i mut dyn PackageSink,
    },
    /// Execute `/5/0/2` Update.
    ExecuteUpdate,
    /// Execute `/5/0/10` Cancel.
    ExecuteCancel,
    // ----- the firmware's reports -----
    DownloadProgress(u64),
    DownloadCompleted,
    DownloadFailed(UpdateResult),
    UpdateSucceeded,
    UpdateFailed {
        image_usable: bool,
        result: UpdateResult,
    },
    DeferredUpdateAccepted,
    Rebooted,
    // ----- time -----
    /// [`FirmwareUpdate::handle_timeout`].
    Timeout,
    // ----- within a push -----
    /// The sink's verdict on the block just stored.
    Stored(Stored),
}

/// What one step of the table gives back: a request's answer, nothing for a
/// report, or the caller's mistake.
type Step = Result<Option<ResponseCode>, FirmwareError>;

const fn answer(code: ResponseCode) -> Step {
    Ok(Some(code))
}

const DONE: Step = Ok(None);

/// What storing one pushed block at the transfer's next byte came to. The sink
/// has the last word; the table decides what follows.
#[derive(Clone, Copy)]
enum Stored {
    /// Accepted, more to come.
    More(LastBlock),
    /// The last block, and the sink verified the image.
    Complete(LastBlock),
    /// Refused by the size limit or the sink; `verifying` when the last block
    /// itself arrived whole and only the image's verification failed.
    Failed { error: PackageError, verifying: bool },
}

/// The Firmware Update object instance /5/0 of a device.
///
/// One input at a time goes to [`handle`](Self::handle): the server's requests
/// (Write, Package block write, Execute) and the firmware's reports (download
/// progress and outcome, update outcome, a deferred update accepted, a reboot),
/// each with the current time. [`handle_timeout`](Self::handle_timeout) fires
/// deadlines when [`poll_timeout`](Self::poll_timeout) says. After every input,
/// drain [`poll_output`](Self::poll_output) until it returns `None`: a request's
/// first output is its [`FirmwareOutput::Respond`], then come the actions.
///
/// Reads change nothing, so they are queries, not inputs: [`read`](Self::read),
/// [`encode_read`](Self::encode_read), [`send_records`](Self::send_records),
/// [`encode_send`](Self::encode_send) and the getters.
///
/// Time must not go backwards: an earlier `now` than any input's before is
/// [`FirmwareError::TimeWentBackwards`], for every input.
///
/// The whole object serializes (serde): save it on [`FirmwareOutput::Persist`],
/// restore it after a reboot, then hand it [`FirmwareInput::Rebooted`].
///
/// ```
/// use lwm2m_fota::device::{FirmwareInput, FirmwareOutput, FirmwareUpdate, FirmwareUpdateConfig};
/// use lwm2m_fota::model::{Instant, ResponseCode, State, UpdateResult, Value};
///
/// # fn main() -> Result<(), lwm2m_fota::device::FirmwareError> {
/// let mut fw = FirmwareUpdate::new(FirmwareUpdateConfig::default());
/// let now = Instant::from_millis(0);
/// // The server writes a Package URI: the device answers 2.04 and starts downloading.
/// let uri = Value::string("coap://fw.example/v2.bin");
/// fw.handle(now, FirmwareInput::Write { resource: 1, value: &uri })?;
/// assert_eq!(fw.poll_output(), Some(FirmwareOutput::Respond(ResponseCode::CHANGED)));
/// assert_eq!(fw.state(), State::Downloading);
/// while let Some(output) = fw.poll_output() {
///     match output {
///         FirmwareOutput::Respond(code) => println!("answer {code}"),
///         FirmwareOutput::StartDownload { uri, offset } => println!("fetch {uri} from byte {offset}"),
///         FirmwareOutput::AbortDownload => println!("stop the download"),
///         FirmwareOutput::DiscardImage => println!("erase the image"),
///         FirmwareOutput::ApplyUpdate => println!("install"),
///         FirmwareOutput::ResourceChanged(resource) => println!("notify /5/0/{resource}"),
///         FirmwareOutput::SendState => println!("send State and Update Result"),
///         FirmwareOutput::Persist => println!("save the object"),
///     }
/// }
/// fw.handle(now, FirmwareInput::DownloadCompleted)?;
/// fw.handle(now, FirmwareInput::Execute { resource: 2 })?;
/// assert_eq!(fw.state(), State::Updating);
/// // After the reboot into the new image:
/// fw.handle(now, FirmwareInput::UpdateSucceeded)?;
/// assert_eq!((fw.state(), fw.update_result()), (State::Idle, UpdateResult::Success));
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct FirmwareUpdate {
    config: FirmwareUpdateConfig,
    phase: Phase,
    result: UpdateResult,
    package_uri: String,
    package_name: String,
    package_version: String,
    severity: i64,
    last_state_change: i64,
    maximum_defer_period: u64,
    automatic_upgrade: bool,
    last_now: Instant,
    outputs: VecDeque<FirmwareOutput>,
}

/// Severity default (1 Mandatory).
const SEVERITY_MANDATORY: i64 = 1;
const SEVERITY_CRITICAL: i64 = 0;
/// `/5/0/1` holds at most 255 bytes.
const MAX_URI_LENGTH: usize = 255;

impl FirmwareUpdate {
    /// A new object in State Idle with Update Result 0.
    pub fn new(config: FirmwareUpdateConfig) -> FirmwareUpdate {
        FirmwareUpdate {
            config,
            phase: Phase::Idle,
            result: UpdateResult::Initial,
            package_uri: String::new(),
            package_name: String::new(),
            package_version: String::new(),
            severity: SEVERITY_MANDATORY,
            last_state_change: 0,
            maximum_defer_period: 0,
            automatic_upgrade: false,
            last_now: Instant::ZERO,
            outputs: VecDeque::new(),
        }
    }

    // ----- getters -----

    /// The configuration.
    pub fn config(&self) -> &FirmwareUpdateConfig {
        &self.config
    }

    /// `/5/0/3` State.
    pub fn state(&self) -> State {
        self.phase.state()
    }

    /// `/5/0/5` Update Result.
    pub fn update_result(&self) -> UpdateResult {
        self.result
    }

    /// `/5/0/1` Package URI.
    pub fn package_uri(&self) -> &str {
        &self.package_uri
    }

    /// Bytes of the image received so far (push) or fetched (pull).
    pub fn transferred(&self) -> u64 {
        match self.phase {
            Phase::Idle => 0,
            Phase::Downloading(transfer) | Phase::Downloaded { transfer, .. } | Phase::Updating { transfer } => {
                transfer.bytes()
            }
        }
    }

    /// The latest `now` an input or [`handle_timeout`](Self::handle_timeout)
    /// carried; the next must not be earlier. A device whose clock restarts at
    /// boot adds its clock to this when it restores a snapshot.
    pub fn last_input_time(&self) -> Instant {
        self.last_now
    }

    // ----- the firmware's commands -----

    /// Sets `/5/0/6` PkgName and `/5/0/7` PkgVersion from the package's
    /// metadata (each cut to 255 bytes). Not a transition: State and Update
    /// Result stay.
    pub fn set_package_info(&mut self, name: &str, version: &str) {
        self.package_name.clear();
        self.package_name.push_str(&name[..floor_boundary(name, MAX_URI_LENGTH)]);
        self.package_version.clear();
        self.package_version.push_str(&version[..floor_boundary(version, MAX_URI_LENGTH)]);
        self.outputs.push_back(FirmwareOutput::ResourceChanged(6));
        self.outputs.push_back(FirmwareOutput::ResourceChanged(7));
        self.outputs.push_back(FirmwareOutput::Persist);
    }

    // ----- inputs -----

    /// Hands the object one input at `now`. Drain [`poll_output`](Self::poll_output)
    /// afterwards: a request's first output is its [`FirmwareOutput::Respond`].
    ///
    /// # Errors
    /// [`FirmwareError::TimeWentBackwards`] for any input earlier than the last
    /// (nothing changes, a request gets no answer); for a report that does not
    /// fit the State, [`FirmwareError::UnexpectedInput`] or
    /// [`FirmwareError::InvalidResult`]. A request is never an `Err` otherwise:
    /// what the server got wrong is in its answer.
    pub fn handle(&mut self, now: Instant, input: FirmwareInput<'_>) -> Result<(), FirmwareError> {
        self.tick(now)?;
        let first = self.outputs.len();
        let trigger = self.classify(input);
        if let Some(code) = self.step(now, trigger)? {
            // The answer goes before what the request set in motion.
            self.outputs.insert(first, FirmwareOutput::Respond(code));
        }
        Ok(())
    }

    /// A server request answered at once: [`handle`](Self::handle), then its
    /// [`FirmwareOutput::Respond`] is taken out of the outputs and returned
    /// (`None` for a firmware report, which has no answer). What the request
    /// set in motion stays queued for [`poll_output`](Self::poll_output), in order.
    ///
    /// # Errors
    /// As [`handle`](Self::handle).
    pub fn request(&mut self, now: Instant, input: FirmwareInput<'_>) -> Result<Option<ResponseCode>, FirmwareError> {
        let first = self.outputs.len();
        self.handle(now, input)?;
        match self.outputs.get(first) {
            Some(&FirmwareOutput::Respond(code)) => {
                self.outputs.remove(first);
                Ok(Some(code))
            }
            _ => Ok(None),
        }
    }

    /// Fires due deadlines: a deferral whose time is up starts the update
    /// (Maximum Defer Period). A spurious call is harmless.
    ///
    /// # Errors
    /// [`FirmwareError::TimeWentBackwards`].
    pub fn handle_timeout(&mut self, now: Instant) -> Result<(), FirmwareError> {
        self.tick(now)?;
        self.step(now, Trigger::Timeout).map(drop)
    }

    /// The next thing the device must do, if any.
    pub fn poll_output(&mut self) -> Option<FirmwareOutput> {
        // The buffer (a few outputs) is kept, so that requests do not allocate.
        self.outputs.pop_front()
    }

    /// When [`handle_timeout`](Self::handle_timeout) must be called next: the end
    /// of a user's deferral.
    pub fn poll_timeout(&self) -> Option<Instant> {
        match self.phase {
            Phase::Downloaded { deferred_until, .. } => deferred_until,
            _ => None,
        }
    }

    fn tick(&mut self, now: Instant) -> Result<(), FirmwareError> {
        if now < self.last_now {
            return Err(FirmwareError::TimeWentBackwards);
        }
        self.last_now = now;
        Ok(())
    }

    fn has(&self, resource: u16) -> bool {
        crate::model::builtin::firmware_update(self.config.version).resource(resource).is_some()
    }

    /// Sorts a request by what it asks for: the checks every State makes alike
    /// (the resource exists in this object version, the value's type and range,
    /// the delivery method, the block's shape, the URI's scheme).
    fn classify<'i>(&self, input: FirmwareInput<'i>) -> Trigger<'i> {
        match input {
            FirmwareInput::Write { resource, .. } | FirmwareInput::Execute { resource } if !self.has(resource) => {
                Trigger::UnknownResource
            }
            FirmwareInput::Write { resource, value } => match (resource, value) {
                (1, Value::String(uri)) if uri.is_empty() => Trigger::Reset,
                (1, Value::String(uri)) if uri.len() > MAX_URI_LENGTH => Trigger::InvalidValue,
                (1, Value::String(uri)) => {
                    // Errors go to Update Result; the Write itself succeeds (TS resource 5 text).
                    let check = if self.config.delivery.allows_pull() {
                        uri::check(uri, self.config.protocols)
                    } else {
                        Err(UriProblem::UnsupportedScheme)
                    };
                    Trigger::WriteUri { uri, check }
                }
                (11, value) => match value.as_i64() {
                    Some(severity @ 0..=2) => Trigger::WriteSeverity(severity),
                    _ => Trigger::InvalidValue,
                },
                (13, Value::UnsignedInteger(seconds)) => Trigger::WriteDeferPeriod(*seconds),
                (13, Value::Integer(seconds)) if *seconds >= 0 => Trigger::WriteDeferPeriod(*seconds as u64),
                (14, Value::Boolean(on)) => Trigger::WriteAutomaticUpgrade(*on),
                (1 | 13 | 14, _) => Trigger::InvalidValue,
                // The Package needs the block-wise path; the rest is read-only or executable.
                _ => Trigger::NotWritable,
            },
            FirmwareInput::WritePackageBlock { .. } if !self.config.delivery.allows_push() => Trigger::PushNotSupported,
            // A single NUL byte (1.0.1+) or, as 1.0 said, an empty Package.
            FirmwareInput::WritePackageBlock { block, .. } if block.is_whole() && matches!(block.data, [] | [0]) => {
                Trigger::Reset
            }
            FirmwareInput::WritePackageBlock { block, .. }
                if block.more && block.data.len() as u64 != u64::from(block.size) =>
            {
                Trigger::MalformedBlock
            }
            FirmwareInput::WritePackageBlock { block, sink } => Trigger::Block { block, sink },
            FirmwareInput::Execute { resource: 2 } => Trigger::ExecuteUpdate,
            FirmwareInput::Execute { resource: 10 } => Trigger::ExecuteCancel,
            FirmwareInput::Execute { .. } => Trigger::NotExecutable,
            FirmwareInput::DownloadProgress { offset } => Trigger::DownloadProgress(offset),
            FirmwareInput::DownloadCompleted => Trigger::DownloadCompleted,
            FirmwareInput::DownloadFailed { result } => Trigger::DownloadFailed(result),
            FirmwareInput::UpdateSucceeded => Trigger::UpdateSucceeded,
            FirmwareInput::UpdateFailed { image_usable, result } => Trigger::UpdateFailed { image_usable, result },
            FirmwareInput::DeferredUpdateAccepted => Trigger::DeferredUpdateAccepted,
            FirmwareInput::Rebooted => Trigger::Rebooted,
        }
    }

    /// The transition table: object5.md §6.1 (T1–T14 and the rejected
    /// requests), §6.3 (reset), §6.5 (deferral) and §6.6 (reboot), with the
    /// block-wise rules of RFC 7959 for pushed Packages. Each arm names its row.
    fn step(&mut self, now: Instant, trigger: Trigger<'_>) -> Step {
        use ResponseCode as Code;
        use Trigger as T;
        let unexpected = |input, state| Err(FirmwareError::UnexpectedInput { input, state });
        match (self.phase, trigger) {
            // ----- requests no State accepts -----
            (_, T::UnknownResource) => answer(Code::NOT_FOUND),
            (_, T::NotWritable | T::NotExecutable | T::PushNotSupported) => answer(Code::METHOD_NOT_ALLOWED),
            (_, T::InvalidValue | T::MalformedBlock) => answer(Code::BAD_REQUEST),

            // ----- settings, written in any State (§2) -----
            (_, T::WriteSeverity(severity)) => {
                self.severity = severity;
                self.changed(11);
                answer(Code::CHANGED)
            }
            (_, T::WriteDeferPeriod(seconds)) => {
                self.maximum_defer_period = seconds;
                self.changed(13);
                answer(Code::CHANGED)
            }
            (_, T::WriteAutomaticUpgrade(on)) => {
                self.automatic_upgrade = on;
                self.changed(14);
                answer(Code::CHANGED)
            }

            // ----- Package URI (pull) -----
            // T1: Idle → Downloading, Update Result 0.
            (Phase::Idle, T::WriteUri { uri, check: Ok(_) }) => {
                self.set_uri(uri);
                self.transition(now, Phase::Downloading(Transfer::Pull { offset: 0 }), UpdateResult::Initial);
                self.outputs.push_back(FirmwareOutput::StartDownload { uri: String::from(uri), offset: 0 });
                answer(Code::CHANGED)
            }
            // T4 before the download starts (OMA #136): Idle → Idle with Update
            // Result 7 or 9; the Write itself succeeds (errors via Update Result only).
            (Phase::Idle, T::WriteUri { uri, check: Err(problem) }) => {
                self.set_uri(uri);
                let result = match problem {
                    UriProblem::Malformed => UpdateResult::InvalidUri,
                    UriProblem::UnsupportedScheme => UpdateResult::UnsupportedProtocol,
                };
                self.transition(now, Phase::Idle, result);
                answer(Code::CHANGED)
            }
            // Rejected: Write non-empty /5/0/1 ≠ Idle (Anjay: 4.05 while Updating, 4.00 otherwise).
            (Phase::Updating { .. }, T::WriteUri { .. }) => answer(Code::METHOD_NOT_ALLOWED),
            (Phase::Downloading(_) | Phase::Downloaded { .. }, T::WriteUri { .. }) => answer(Code::BAD_REQUEST),

            // ----- reset by write (§6.3): empty Package URI or NUL Package -----
            // Rejected: the reset value while Updating (Anjay: 4.05).
            (Phase::Updating { .. }, T::Reset) => answer(Code::METHOD_NOT_ALLOWED),
            // In Idle it clears a stale Update Result (§6.2).
            (Phase::Idle, T::Reset) => {
                self.set_uri("");
                self.transition(now, Phase::Idle, UpdateResult::Initial);
                answer(Code::CHANGED)
            }
            // T5: Downloading → Idle, Update Result 0; the download stops.
            (Phase::Downloading(transfer), T::Reset) => {
                self.abort(transfer);
                self.set_uri("");
                self.transition(now, Phase::Idle, UpdateResult::Initial);
                answer(Code::CHANGED)
            }
            // T9: Downloaded → Idle, Update Result 0; the image goes.
            (Phase::Downloaded { .. }, T::Reset) => {
                self.outputs.push_back(FirmwareOutput::DiscardImage);
                self.set_uri("");
                self.transition(now, Phase::Idle, UpdateResult::Initial);
                answer(Code::CHANGED)
            }

            // ----- Package blocks (push, RFC 7959 Block1) -----
            // Rejected: an image to /5/0/0 while Updating (Anjay: 4.05).
            (Phase::Updating { .. }, T::Block { .. }) => answer(Code::METHOD_NOT_ALLOWED),
            // The last block again after T3 (its 2.04 was lost): acknowledged, not written.
            (
                Phase::Downloaded { transfer: Transfer::Push { last_block: Some(last), .. }, .. },
                T::Block { block, .. },
            ) if !last.more && last.is_repeated_by(&block) => answer(Code::CHANGED),
            // Rejected: an image to /5/0/0 ≠ Idle (Anjay: 4.00).
            (Phase::Downloaded { .. } | Phase::Downloading(Transfer::Pull { .. }), T::Block { .. }) => {
                answer(Code::BAD_REQUEST)
            }
            // The block just accepted again (its 2.31 or 2.04 was lost): acknowledged, not written.
            (Phase::Downloading(Transfer::Push { last_block: Some(last), .. }), T::Block { block, .. })
                if last.is_repeated_by(&block) =>
            {
                answer(if last.more { Code::CONTINUE } else { Code::CHANGED })
            }
            // T2: the first block starts a push (a new block 0 restarts one).
            (Phase::Idle | Phase::Downloading(Transfer::Push { .. }), T::Block { block, sink })
                if block.offset() == 0 =>
            {
                if block.total_size.is_some_and(|total| total > self.config.max_package_size) {
                    // T4 before a byte: the announced image cannot fit (Update Result 2).
                    self.transition(now, Phase::Idle, UpdateResult::NotEnoughFlash);
                    return answer(Code::REQUEST_ENTITY_TOO_LARGE);
                }
                if let Err(error) = sink.begin(block.total_size) {
                    // T4: the store refuses the transfer.
                    return answer(self.push_failed(now, error));
                }
                self.set_uri("");
                let transfer = Transfer::Push { received: 0, last_block: None };
                self.transition(now, Phase::Downloading(transfer), UpdateResult::Initial);
                let stored = self.store(&block, 0, sink);
                self.step(now, T::Stored(stored))
            }
            // The next block of the push.
            (Phase::Downloading(Transfer::Push { received, .. }), T::Block { block, sink })
                if block.offset() == received =>
            {
                let stored = self.store(&block, received, sink);
                self.step(now, T::Stored(stored))
            }
            // A gap (or a first block that is not block 0): 4.08, nothing changes.
            (Phase::Idle | Phase::Downloading(Transfer::Push { .. }), T::Block { .. }) => {
                answer(Code::REQUEST_ENTITY_INCOMPLETE)
            }
            // The store's verdict on the block just stored (the push is
            // Downloading: the arm that stored it made it so).
            // More to come: Downloading stays.
            (_, T::Stored(Stored::More(last))) => {
                self.phase = Phase::Downloading(last.transfer());
                self.outputs.push_back(FirmwareOutput::Persist);
                answer(Code::CONTINUE)
            }
            // T3: Downloading → Downloaded, Update Result stays 0; T14 when
            // Automatic Upgrade at Download is on (object 1.2).
            (_, T::Stored(Stored::Complete(last))) => {
                let transfer = last.transfer();
                self.transition(now, Phase::Downloaded { transfer, deferred_until: None }, UpdateResult::Initial);
                if self.automatic_upgrade && self.has(14) {
                    self.start_update(now, transfer);
                }
                answer(Code::CHANGED)
            }
            // T4: Downloading → Idle with the store's Update Result. When only
            // the image's verification failed, the last block's Write itself
            // succeeded.
            (_, T::Stored(Stored::Failed { error, verifying: true })) => {
                self.push_failed(now, error);
                answer(Code::CHANGED)
            }
            (_, T::Stored(Stored::Failed { error, verifying: false })) => answer(self.push_failed(now, error)),

            // ----- Execute Update -----
            (Phase::Downloaded { transfer, deferred_until }, T::ExecuteUpdate) => {
                match self.deferral_end(now) {
                    // T8: the user defers; Downloaded stays, Update Result 11. A
                    // second Execute never extends a deferral.
                    Some(until) => {
                        let deferred_until = Some(deferred_until.map_or(until, |d| d.min(until)));
                        self.transition(now, Phase::Downloaded { transfer, deferred_until }, UpdateResult::Deferred);
                    }
                    // T7: Downloaded → Updating, Update Result 0.
                    None => self.start_update(now, transfer),
                }
                answer(Code::CHANGED)
            }
            // Rejected: Execute Update ≠ Downloaded (4.05).
            (_, T::ExecuteUpdate) => answer(Code::METHOD_NOT_ALLOWED),

            // ----- Execute Cancel (object 1.1+; §6.4) -----
            // T6: Downloading → Idle, Update Result 10.
            (Phase::Downloading(transfer), T::ExecuteCancel) => {
                self.abort(transfer);
                self.transition(now, Phase::Idle, UpdateResult::Cancelled);
                answer(Code::CHANGED)
            }
            // T10: Downloaded → Idle, Update Result 10.
            (Phase::Downloaded { .. }, T::ExecuteCancel) => {
                self.outputs.push_back(FirmwareOutput::DiscardImage);
                self.transition(now, Phase::Idle, UpdateResult::Cancelled);
                answer(Code::CHANGED)
            }
            // Rejected: Cancel in Updating (MUST 4.05) and in Idle (Anjay: 4.05).
            (Phase::Idle | Phase::Updating { .. }, T::ExecuteCancel) => answer(Code::METHOD_NOT_ALLOWED),

            // ----- pull download reports -----
            (Phase::Downloading(Transfer::Pull { .. }), T::DownloadProgress(offset)) => {
                // Kept for a resume; not worth a Persist of its own.
                self.phase = Phase::Downloading(Transfer::Pull { offset });
                DONE
            }
            (phase, T::DownloadProgress(_)) => unexpected("download progress", phase.state()),
            // T3: Downloading → Downloaded, Update Result stays 0; T14 when
            // Automatic Upgrade at Download is on (object 1.2).
            (Phase::Downloading(transfer @ Transfer::Pull { .. }), T::DownloadCompleted) => {
                self.transition(now, Phase::Downloaded { transfer, deferred_until: None }, UpdateResult::Initial);
                if self.automatic_upgrade && self.has(14) {
                    self.start_update(now, transfer);
                }
                DONE
            }
            (phase, T::DownloadCompleted) => unexpected("download completed", phase.state()),
            (_, T::DownloadFailed(result)) if !result.is_download_failure() => {
                Err(FirmwareError::InvalidResult(result))
            }
            // T4: Downloading → Idle with Update Result 2–7 or 9.
            (Phase::Downloading(Transfer::Pull { .. }), T::DownloadFailed(result)) => {
                self.outputs.push_back(FirmwareOutput::DiscardImage);
                self.transition(now, Phase::Idle, result);
                DONE
            }
            (phase, T::DownloadFailed(_)) => unexpected("download failed", phase.state()),

            // ----- update reports -----
            // T11: Updating → Idle, Update Result 1.
            (Phase::Updating { .. }, T::UpdateSucceeded) => {
                self.transition(now, Phase::Idle, UpdateResult::Success);
                DONE
            }
            (phase, T::UpdateSucceeded) => unexpected("update succeeded", phase.state()),
            // T12: Updating → Downloaded, Update Result 8; the image stays.
            (
                Phase::Updating { transfer },
                T::UpdateFailed { image_usable: true, result: UpdateResult::UpdateFailed },
            ) => {
                let downloaded = Phase::Downloaded { transfer, deferred_until: None };
                self.transition(now, downloaded, UpdateResult::UpdateFailed);
                DONE
            }
            // T13: Updating → Idle, Update Result 8 or 5; the image goes.
            (
                Phase::Updating { .. },
                T::UpdateFailed {
                    image_usable: false,
                    result: result @ (UpdateResult::UpdateFailed | UpdateResult::IntegrityCheckFailure),
                },
            ) => {
                self.outputs.push_back(FirmwareOutput::DiscardImage);
                self.transition(now, Phase::Idle, result);
                DONE
            }
            (Phase::Updating { .. }, T::UpdateFailed { result, .. }) => Err(FirmwareError::InvalidResult(result)),
            (phase, T::UpdateFailed { .. }) => unexpected("update failed", phase.state()),

            // ----- deferral (§6.5) -----
            // T8, then Downloaded → Updating: the user accepts.
            (Phase::Downloaded { transfer, .. }, T::DeferredUpdateAccepted)
                if self.result == UpdateResult::Deferred =>
            {
                self.start_update(now, transfer);
                DONE
            }
            (phase, T::DeferredUpdateAccepted) => unexpected("accept deferred update", phase.state()),
            // T8, then Downloaded → Updating: Maximum Defer Period is over.
            (Phase::Downloaded { transfer, deferred_until: Some(until) }, T::Timeout) if now >= until => {
                self.start_update(now, transfer);
                DONE
            }
            (_, T::Timeout) => DONE,

            // ----- reboot (§6.6): what was queued before is gone -----
            // A pull download resumes at its offset.
            (Phase::Downloading(Transfer::Pull { offset }), T::Rebooted) => {
                self.outputs.clear();
                self.outputs.push_back(FirmwareOutput::StartDownload { uri: self.package_uri.clone(), offset });
                DONE
            }
            // An update being installed is applied again.
            (Phase::Updating { .. }, T::Rebooted) => {
                self.outputs.clear();
                self.outputs.push_back(FirmwareOutput::ApplyUpdate);
                DONE
            }
            // Wall time is lost across a reboot: a deferral restarts from now.
            (Phase::Downloaded { transfer, deferred_until: Some(_) }, T::Rebooted) => {
                self.outputs.clear();
                let postpone = self.config.user_deferral.unwrap_or_default();
                let until = now + postpone.min(Duration::from_secs(self.maximum_defer_period));
                self.phase = Phase::Downloaded { transfer, deferred_until: Some(until) };
                DONE
            }
            // Idle, a push (the server continues it), Downloaded without a deferral.
            (_, T::Rebooted) => {
                self.outputs.clear();
                DONE
            }
        }
    }

    /// Hands `block` (at byte `offset`) to the sink, and the image to its
    /// verification after the last block. Decides nothing: the table does, on
    /// [`Trigger::Stored`].
    fn store(&self, block: &PackageBlock<'_>, offset: u64, sink: &mut dyn PackageSink) -> Stored {
        let last = LastBlock { offset, len: block.data.len() as u32, more: block.more };
        let end = offset + block.data.len() as u64;
        if end > self.config.max_package_size {
            return Stored::Failed { error: PackageError::NotEnoughFlash, verifying: false };
        }
        if let Err(error) = sink.write(offset, block.data) {
            return Stored::Failed { error, verifying: false };
        }
        if block.more {
            return Stored::More(last);
        }
        match sink.finish(end) {
            Ok(()) => Stored::Complete(last),
            Err(error) => Stored::Failed { error, verifying: true },
        }
    }

    /// What T4 of a push does: the image goes and Update Result says why.
    /// Returns the code a refused block gets.
    fn push_failed(&mut self, now: Instant, error: PackageError) -> ResponseCode {
        self.outputs.push_back(FirmwareOutput::DiscardImage);
        self.transition(now, Phase::Idle, error.update_result());
        match error {
            PackageError::NotEnoughFlash => ResponseCode::REQUEST_ENTITY_TOO_LARGE,
            PackageError::OutOfRam => ResponseCode::INTERNAL_SERVER_ERROR,
            _ => ResponseCode::BAD_REQUEST,
        }
    }

    /// When an Execute Update is deferred (T8), the end of the deferral: the
    /// device's user postpones it, bounded by Maximum Defer Period, unless
    /// Severity is Critical or the period is 0 (deferral not allowed).
    fn deferral_end(&self, now: Instant) -> Option<Instant> {
        let may_defer = self.severity != SEVERITY_CRITICAL && self.maximum_defer_period > 0 && self.has(11);
        let postpone = self.config.user_deferral.filter(|_| may_defer)?;
        Some(now + postpone.min(Duration::from_secs(self.maximum_defer_period)))
    }

    /// T7 (and T8 or T14 ending in Updating): Updating, Update Result 0, apply.
    fn start_update(&mut self, now: Instant, transfer: Transfer) {
        self.transition(now, Phase::Updating { transfer }, UpdateResult::Initial);
        self.outputs.push_back(FirmwareOutput::ApplyUpdate);
    }

    /// Stops a transfer that a reset or a cancel ends: a pull download is
    /// aborted, and the image goes.
    fn abort(&mut self, transfer: Transfer) {
        if let Transfer::Pull { .. } = transfer {
            self.outputs.push_back(FirmwareOutput::AbortDownload);
        }
        self.outputs.push_back(FirmwareOutput::DiscardImage);
    }

    /// Moves to `phase` with `result`, announcing what changed.
    fn transition(&mut self, now: Instant, phase: Phase, result: UpdateResult) {
        let state_changed = phase.state() != self.phase.state();
        let result_changed = result != self.result;
        self.phase = phase;
        if state_changed {
            self.last_state_change = self.config.unix_time_offset.saturating_add(now.as_secs() as i64);
            self.outputs.push_back(FirmwareOutput::ResourceChanged(3));
            if self.has(12) {
                self.outputs.push_back(FirmwareOutput::ResourceChanged(12));
            }
        }
        if result_changed {
            self.result = result;
            self.outputs.push_back(FirmwareOutput::ResourceChanged(5));
        }
        if (state_changed || result_changed) && self.config.send_on_change {
            self.outputs.push_back(FirmwareOutput::SendState);
        }
        self.outputs.push_back(FirmwareOutput::Persist);
    }

    fn set_uri(&mut self, uri: &str) {
        if self.package_uri != uri {
            self.package_uri.clear();
            self.package_uri.push_str(uri);
            self.outputs.push_back(FirmwareOutput::ResourceChanged(1));
        }
    }

    fn changed(&mut self, resource: u16) {
        self.outputs.push_back(FirmwareOutput::ResourceChanged(resource));
        self.outputs.push_back(FirmwareOutput::Persist);
    }

    // ----- reads: queries, they change nothing -----

    /// The records a Read of `path` (`/5`, `/5/0`, `/5/0/R` or `/5/0/R/RI`)
    /// returns, or the error code (4.04 absent, 4.05 not readable).
    pub fn read(&self, path: &Path) -> Result<Vec<Record<'_>>, ResponseCode> {
        if path.object_id() != Some(5) || path.instance_id().is_some_and(|i| i != 0) {
            return Err(ResponseCode::NOT_FOUND);
        }
        let Some(resource) = path.resource_id() else {
            let definition = crate::model::builtin::firmware_update(self.config.version);
            let readable = definition.resources().iter().filter(|def| def.operations.read).count();
            // One allocation of the exact size: resource 8 has an instance per protocol.
            let mut records = Vec::with_capacity(readable + self.config.protocols.len().saturating_sub(1));
            for def in crate::model::builtin::firmware_update(self.config.version).resources() {
                if def.operations.read {
                    self.push_resource(def.id, &mut records);
                }
            }
            return Ok(records);
        };
        let def = crate::model::builtin::firmware_update(self.config.version)
            .resource(resource)
            .ok_or(ResponseCode::NOT_FOUND)?;
        if !def.operations.read {
            return Err(ResponseCode::METHOD_NOT_ALLOWED);
        }
        let mut records = Vec::with_capacity(if resource == 8 { 6 } else { 1 });
        self.push_resource(resource, &mut records);
        if let Some(instance) = path.resource_instance_id() {
            records.retain(|r| r.path.resource_instance_id() == Some(instance));
            if records.is_empty() {
                return Err(ResponseCode::NOT_FOUND);
            }
        }
        Ok(records)
    }

    fn push_resource<'s>(&'s self, resource: u16, out: &mut Vec<Record<'s>>) {
        let path = Path::resource(5, 0, resource);
        let value = match resource {
            1 => Value::String(Cow::Borrowed(&self.package_uri)),
            3 => Value::Integer(self.state().code()),
            5 => Value::Integer(self.result.code()),
            6 => Value::String(Cow::Borrowed(&self.package_name)),
            7 => Value::String(Cow::Borrowed(&self.package_version)),
            8 => {
                for (i, protocol) in self.config.protocols.iter().enumerate() {
                    out.push(Record::new(Path::resource_instance(5, 0, 8, i as u16), Value::Integer(protocol.code())));
                }
                return;
            }
            9 => Value::Integer(self.config.delivery.code()),
            11 => Value::Integer(self.severity),
            12 => Value::Time(self.last_state_change),
            13 => Value::UnsignedInteger(self.maximum_defer_period),
            14 => Value::Boolean(self.automatic_upgrade),
            _ => return,
        };
        out.push(Record::new(path, value));
    }

    /// Encodes a Read of `path` in `format`.
    ///
    /// # Errors
    /// The CoAP code to answer: 4.04 / 4.05 from [`read`](Self::read), 4.06 when
    /// the format cannot carry the result.
    pub fn encode_read<B: BufMut>(&self, path: &Path, format: ContentFormat, buf: &mut B) -> Result<(), ResponseCode> {
        let records = self.read(path)?;
        // The built-in /5 (1.2) types every resource the older versions have.
        codec::encode(format, path, &records, &Registry::builtin(), buf)
            .map_err(|_: EncodeError| ResponseCode::NOT_ACCEPTABLE)
    }

    /// The records of a Send on State or Update Result change: `/3/0/3` Firmware
    /// Version, `/3/0/19` Software Version, `/5/0/3`, `/5/0/5`, `/5/0/8`, `/5/0/9`.
    pub fn send_records<'s>(&'s self, firmware_version: &'s str, software_version: &'s str) -> Vec<Record<'s>> {
        let mut records = alloc::vec![
            Record::new(Path::resource(3, 0, 3), Value::string(firmware_version)),
            Record::new(Path::resource(3, 0, 19), Value::string(software_version)),
        ];
        for resource in [3, 5, 8, 9] {
            self.push_resource(resource, &mut records);
        }
        records
    }

    /// Encodes [`send_records`](Self::send_records) as a SenML-CBOR Send payload.
    ///
    /// # Errors
    /// Never for the built-in model; the codec's error otherwise.
    pub fn encode_send<B: BufMut>(
        &self,
        firmware_version: &str,
        software_version: &str,
        buf: &mut B,
    ) -> Result<(), EncodeError> {
        let records = self.send_records(firmware_version, software_version);
        codec::encode(ContentFormat::SenmlCbor, &Path::ROOT, &records, &Registry::builtin(), buf)
    }
}

/// The largest index ≤ `max` on a char boundary of `text`.
fn floor_boundary(text: &str, max: usize) -> usize {
    if text.len() <= max {
        return text.len();
    }
    (0..=max).rev().find(|&i| text.is_char_boundary(i)).unwrap_or(0)
}
