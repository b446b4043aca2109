//! The Firmware Update object (/5) as a device runs it: the state machine of
//! OMA LwM2M object 5 (versions 1.0, 1.1 and 1.2), sans-I/O.

use alloc::borrow::Cow;
use alloc::collections::VecDeque;
use alloc::string::String;
use alloc::vec::Vec;
use bytes::BufMut;
use core::time::Duration;

use super::uri::{self, UriProblem};
use crate::codec::{self, EncodeError};
use crate::model::{
    ContentFormat, DeliveryMethod, Instant, ObjectVersion, Path, Protocol, ProtocolSet, Record, Registry, ResponseCode,
    State, UpdateResult, Value,
};

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
    /// Emit [`FirmwareEvent::SendState`] on every State or Update Result change
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

/// What the device's firmware must do after an input, drained with
/// [`FirmwareUpdate::poll_event`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[non_exhaustive]
pub enum FirmwareEvent {
    /// Download the image from `uri` starting at byte `offset` (non-zero when a
    /// download resumes after a reboot), reporting through
    /// [`FirmwareUpdate::download_progress`], [`FirmwareUpdate::download_completed`]
    /// or [`FirmwareUpdate::download_failed`].
    StartDownload {
        /// The Package URI.
        uri: String,
        /// First byte to fetch.
        offset: u64,
    },
    /// Stop the pull download in progress.
    AbortDownload,
    /// Delete the stored image (after a reset or a cancel).
    DiscardImage,
    /// Install the downloaded image now (usually a reboot), then report
    /// [`FirmwareUpdate::update_succeeded`] or [`FirmwareUpdate::update_failed`].
    ApplyUpdate,
    /// An observable resource of /5/0 changed: notify its observers.
    ResourceChanged(u16),
    /// State or Update Result changed and the device is configured to Send: send
    /// [`FirmwareUpdate::encode_send`] to the server (`POST /dp`).
    SendState,
    /// The object changed: save [`FirmwareUpdate`] (serde) so that a reboot
    /// resumes from here.
    Persist,
}

/// One Block1 block of a pushed Package write (`/5/0/0`), or a whole
/// non-block-wise write as block 0 without more blocks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PackageBlock<'a> {
    /// Block number (NUM).
    pub number: u32,
    /// True when more blocks follow (M).
    pub more: bool,
    /// Block size in bytes (16 × 2^SZX); the block's offset is `number × size`.
    pub size: u32,
    /// The block's bytes.
    pub data: &'a [u8],
    /// Total image size, when the server announced it (Size1).
    pub total_size: Option<u64>,
}

impl<'a> PackageBlock<'a> {
    /// A whole Package write that is not block-wise.
    pub fn whole(data: &'a [u8]) -> PackageBlock<'a> {
        PackageBlock { number: 0, more: false, size: data.len().max(1) as u32, data, total_size: None }
    }

    fn offset(&self) -> u64 {
        u64::from(self.number) * u64::from(self.size)
    }
}

/// Why the image store refused bytes; each maps to an Update Result.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PackageError {
    /// Update Result 2.
    #[error("not enough flash memory for the new package")]
    NotEnoughFlash,
    /// Update Result 3.
    #[error("out of RAM during download")]
    OutOfRam,
    /// Update Result 5.
    #[error("integrity check failure for the downloaded package")]
    IntegrityCheckFailure,
    /// Update Result 6.
    #[error("unsupported package type")]
    UnsupportedPackageType,
}

impl PackageError {
    /// The Update Result the device reports.
    pub fn update_result(self) -> UpdateResult {
        match self {
            PackageError::NotEnoughFlash => UpdateResult::NotEnoughFlash,
            PackageError::OutOfRam => UpdateResult::OutOfRam,
            PackageError::IntegrityCheckFailure => UpdateResult::IntegrityCheckFailure,
            PackageError::UnsupportedPackageType => UpdateResult::UnsupportedPackageType,
        }
    }
}

/// Where a pushed image goes: the object streams blocks into it and never
/// buffers the image itself.
pub trait PackageSink {
    /// A new transfer starts: forget any earlier bytes.
    fn begin(&mut self, total_size: Option<u64>) -> Result<(), PackageError>;
    /// Store `data` at byte `offset` (always the next byte after the last write).
    fn write(&mut self, offset: u64, data: &[u8]) -> Result<(), PackageError>;
    /// The transfer is complete at `size` bytes: verify the image.
    fn finish(&mut self, size: u64) -> Result<(), PackageError>;
}

/// A sink that discards the bytes and only counts them, for devices that
/// validate nothing and for tests.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CountingSink {
    /// Bytes written in the current transfer.
    pub written: u64,
    /// Transfers begun.
    pub transfers: u32,
}

impl PackageSink for CountingSink {
    fn begin(&mut self, _total_size: Option<u64>) -> Result<(), PackageError> {
        self.written = 0;
        self.transfers += 1;
        Ok(())
    }

    fn write(&mut self, _offset: u64, data: &[u8]) -> Result<(), PackageError> {
        self.written += data.len() as u64;
        Ok(())
    }

    fn finish(&mut self, _size: u64) -> Result<(), PackageError> {
        Ok(())
    }
}

/// A device application input the object did not expect (programming errors
/// of the caller, not protocol events).
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
    /// `now` is earlier than an instant given before.
    #[error("time went backwards")]
    TimeWentBackwards,
}

/// The image transfer in progress, if any.
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
enum Transfer {
    None,
    /// Push: bytes received so far and the last block accepted (offset, length,
    /// more), to acknowledge a retransmission without writing it twice.
    Push {
        received: u64,
        last_block: Option<(u64, u32, bool)>,
    },
    /// Pull from the Package URI: the bytes fetched so far (the resume point).
    Pull {
        offset: u64,
    },
}

/// The Firmware Update object instance /5/0 of a device.
///
/// Inputs come in three families:
/// - server requests, each answered with the CoAP code the device sends back:
///   [`write`](Self::write), [`write_package_block`](Self::write_package_block),
///   [`execute`](Self::execute), and [`read`](Self::read);
/// - the firmware's reports: [`download_progress`](Self::download_progress),
///   [`download_completed`](Self::download_completed),
///   [`download_failed`](Self::download_failed),
///   [`update_succeeded`](Self::update_succeeded),
///   [`update_failed`](Self::update_failed),
///   [`accept_deferred_update`](Self::accept_deferred_update),
///   [`rebooted`](Self::rebooted);
/// - time: [`handle_timeout`](Self::handle_timeout) when
///   [`poll_timeout`](Self::poll_timeout) says.
///
/// After each input, drain [`poll_event`](Self::poll_event) until it returns
/// `None`. The whole object serializes (serde): save it on
/// [`FirmwareEvent::Persist`] and restore it after a reboot, then call
/// [`rebooted`](Self::rebooted).
///
/// ```
/// use lwm2m_fota::device::{FirmwareEvent, FirmwareUpdate, FirmwareUpdateConfig};
/// use lwm2m_fota::model::{Instant, ResponseCode, State, UpdateResult, Value};
///
/// let mut fw = FirmwareUpdate::new(FirmwareUpdateConfig::default());
/// let now = Instant::from_millis(0);
/// // The server writes a Package URI: the device starts downloading.
/// let code = fw.write(now, 1, &Value::string("coap://fw.example/v2.bin"));
/// assert_eq!(code, ResponseCode::CHANGED);
/// assert_eq!(fw.state(), State::Downloading);
/// let events: Vec<FirmwareEvent> = std::iter::from_fn(|| fw.poll_event()).collect();
/// assert!(events.iter().any(|e| matches!(e, FirmwareEvent::StartDownload { .. })));
/// fw.download_completed(now).unwrap();
/// assert_eq!(fw.execute(now, 2), ResponseCode::CHANGED);
/// assert_eq!(fw.state(), State::Updating);
/// // After the reboot into the new image:
/// fw.update_succeeded(now).unwrap();
/// assert_eq!((fw.state(), fw.update_result()), (State::Idle, UpdateResult::Success));
/// ```
#[derive(Debug, Clone, PartialEq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct FirmwareUpdate {
    config: FirmwareUpdateConfig,
    state: State,
    result: UpdateResult,
    package_uri: String,
    package_name: String,
    package_version: String,
    severity: i64,
    last_state_change: i64,
    maximum_defer_period: u64,
    automatic_upgrade: bool,
    transfer: Transfer,
    deferred_until: Option<Instant>,
    last_now: Instant,
    events: VecDeque<FirmwareEvent>,
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
            state: State::Idle,
            result: UpdateResult::Initial,
            package_uri: String::new(),
            package_name: String::new(),
            package_version: String::new(),
            severity: SEVERITY_MANDATORY,
            last_state_change: 0,
            maximum_defer_period: 0,
            automatic_upgrade: false,
            transfer: Transfer::None,
            deferred_until: None,
            last_now: Instant::ZERO,
            events: VecDeque::new(),
        }
    }

    // ----- getters -----

    /// The configuration.
    pub fn config(&self) -> &FirmwareUpdateConfig {
        &self.config
    }

    /// `/5/0/3` State.
    pub fn state(&self) -> State {
        self.state
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
        match self.transfer {
            Transfer::None => 0,
            Transfer::Push { received, .. } => received,
            Transfer::Pull { offset, .. } => offset,
        }
    }

    /// Sets `/5/0/6` PkgName and `/5/0/7` PkgVersion from the package's metadata.
    pub fn set_package_info(&mut self, name: &str, version: &str) {
        self.package_name.clear();
        self.package_name.push_str(&name[..floor_boundary(name, MAX_URI_LENGTH)]);
        self.package_version.clear();
        self.package_version.push_str(&version[..floor_boundary(version, MAX_URI_LENGTH)]);
        self.events.push_back(FirmwareEvent::ResourceChanged(6));
        self.events.push_back(FirmwareEvent::ResourceChanged(7));
        self.events.push_back(FirmwareEvent::Persist);
    }

    /// The next thing the firmware must do, if any.
    pub fn poll_event(&mut self) -> Option<FirmwareEvent> {
        // The buffer (a few events) is kept, so that requests do not allocate.
        self.events.pop_front()
    }

    /// When [`handle_timeout`](Self::handle_timeout) must be called next: the end
    /// of a user's deferral.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.deferred_until
    }

    fn has(&self, resource: u16) -> bool {
        crate::model::builtin::firmware_update(self.config.version).resource(resource).is_some()
    }

    fn tick(&mut self, now: Instant) -> Result<(), FirmwareError> {
        if now < self.last_now {
            return Err(FirmwareError::TimeWentBackwards);
        }
        self.last_now = now;
        Ok(())
    }

    /// Moves to `state` with `result`, announcing what changed.
    fn transition(&mut self, now: Instant, state: State, result: UpdateResult) {
        let state_changed = state != self.state;
        let result_changed = result != self.result;
        if state_changed {
            self.state = state;
            self.last_state_change = self.config.unix_time_offset.saturating_add(now.as_secs() as i64);
            self.events.push_back(FirmwareEvent::ResourceChanged(3));
            if self.has(12) {
                self.events.push_back(FirmwareEvent::ResourceChanged(12));
            }
        }
        if result_changed {
            self.result = result;
            self.events.push_back(FirmwareEvent::ResourceChanged(5));
        }
        if state != State::Downloaded {
            self.deferred_until = None;
        }
        if (state_changed || result_changed) && self.config.send_on_change {
            self.events.push_back(FirmwareEvent::SendState);
        }
        self.events.push_back(FirmwareEvent::Persist);
    }

    fn set_uri(&mut self, uri: &str) {
        if self.package_uri != uri {
            self.package_uri.clear();
            self.package_uri.push_str(uri);
            self.events.push_back(FirmwareEvent::ResourceChanged(1));
        }
    }

    /// Reset by an empty Package URI or a NUL Package (T5, T9; in Idle it clears
    /// a stale Update Result). Refused while Updating.
    fn reset(&mut self, now: Instant) -> ResponseCode {
        match self.state {
            State::Updating => ResponseCode::METHOD_NOT_ALLOWED,
            State::Idle => {
                self.set_uri("");
                self.transition(now, State::Idle, UpdateResult::Initial);
                ResponseCode::CHANGED
            }
            State::Downloading | State::Downloaded => {
                self.abort_transfer();
                self.set_uri("");
                self.transition(now, State::Idle, UpdateResult::Initial);
                ResponseCode::CHANGED
            }
        }
    }

    fn abort_transfer(&mut self) {
        if matches!(self.transfer, Transfer::Pull { .. }) && self.state == State::Downloading {
            self.events.push_back(FirmwareEvent::AbortDownload);
        }
        self.transfer = Transfer::None;
        self.events.push_back(FirmwareEvent::DiscardImage);
    }

    // ----- server requests -----

    /// A Write of resource `/5/0/{resource}` other than the Package (use
    /// [`write_package_block`](Self::write_package_block) for `/5/0/0`); returns
    /// the response code.
    pub fn write(&mut self, now: Instant, resource: u16, value: &Value<'_>) -> ResponseCode {
        if self.tick(now).is_err() {
            return ResponseCode::INTERNAL_SERVER_ERROR;
        }
        if !self.has(resource) {
            return ResponseCode::NOT_FOUND;
        }
        match (resource, value) {
            (1, Value::String(uri)) => self.write_package_uri(now, uri),
            (11, value) => match value.as_i64() {
                Some(severity @ 0..=2) => {
                    self.severity = severity;
                    self.changed(11);
                    ResponseCode::CHANGED
                }
                _ => ResponseCode::BAD_REQUEST,
            },
            (13, Value::UnsignedInteger(seconds)) => self.set_defer_period(*seconds),
            (13, Value::Integer(seconds)) if *seconds >= 0 => self.set_defer_period(*seconds as u64),
            (14, Value::Boolean(on)) => {
                self.automatic_upgrade = *on;
                self.changed(14);
                ResponseCode::CHANGED
            }
            (1 | 13 | 14, _) => ResponseCode::BAD_REQUEST,
            // Package needs the block-wise path; the rest is read-only or executable.
            _ => ResponseCode::METHOD_NOT_ALLOWED,
        }
    }

    fn set_defer_period(&mut self, seconds: u64) -> ResponseCode {
        self.maximum_defer_period = seconds;
        self.changed(13);
        ResponseCode::CHANGED
    }

    fn changed(&mut self, resource: u16) {
        self.events.push_back(FirmwareEvent::ResourceChanged(resource));
        self.events.push_back(FirmwareEvent::Persist);
    }

    /// Write `/5/0/1` (object5.md §6.1 T1, T5, T9 and the rejected-request table).
    fn write_package_uri(&mut self, now: Instant, uri: &str) -> ResponseCode {
        if uri.is_empty() {
            return self.reset(now);
        }
        if uri.len() > MAX_URI_LENGTH {
            return ResponseCode::BAD_REQUEST;
        }
        match self.state {
            State::Updating => return ResponseCode::METHOD_NOT_ALLOWED,
            State::Downloading | State::Downloaded => return ResponseCode::BAD_REQUEST,
            State::Idle => {}
        }
        self.set_uri(uri);
        // Errors go to Update Result; the Write itself succeeds (TS resource 5 text).
        let checked = if self.config.delivery.allows_pull() {
            uri::check(uri, self.config.protocols)
        } else {
            Err(UriProblem::UnsupportedScheme)
        };
        match checked {
            Ok(_) => {
                self.transfer = Transfer::Pull { offset: 0 };
                self.transition(now, State::Downloading, UpdateResult::Initial);
                self.events.push_back(FirmwareEvent::StartDownload { uri: String::from(uri), offset: 0 });
            }
            Err(UriProblem::Malformed) => self.transition(now, State::Idle, UpdateResult::InvalidUri),
            Err(UriProblem::UnsupportedScheme) => self.transition(now, State::Idle, UpdateResult::UnsupportedProtocol),
        }
        ResponseCode::CHANGED
    }

    /// One block of a Package write to `/5/0/0` (T2, T3, T5, T9, T14 and the
    /// block-wise rules of RFC 7959): answers 2.31 Continue for an accepted block
    /// with more to come, 2.04 Changed for the last one, and acknowledges a
    /// retransmitted block the same way without writing it again. A new block 0
    /// restarts the transfer; a gap is refused with 4.08; an image larger than the
    /// device can store gives 4.13 and Update Result 2.
    pub fn write_package_block<S: PackageSink>(
        &mut self,
        now: Instant,
        block: PackageBlock<'_>,
        sink: &mut S,
    ) -> ResponseCode {
        if self.tick(now).is_err() {
            return ResponseCode::INTERNAL_SERVER_ERROR;
        }
        if !self.config.delivery.allows_push() {
            return ResponseCode::METHOD_NOT_ALLOWED;
        }
        let whole = block.number == 0 && !block.more;
        // Reset: a single NUL byte (1.0.1+) or, as 1.0 said, an empty Package.
        if whole && (block.data == [0] || block.data.is_empty()) {
            return self.reset(now);
        }
        if block.more && block.data.len() as u64 != u64::from(block.size) {
            return ResponseCode::BAD_REQUEST;
        }
        let offset = block.offset();
        match (self.state, &self.transfer) {
            (State::Updating, _) => ResponseCode::METHOD_NOT_ALLOWED,
            (State::Downloaded, Transfer::Push { last_block: Some((last, len, false)), .. })
                if *last == offset && *len as usize == block.data.len() =>
            {
                // The final block again: its 2.04 was lost.
                ResponseCode::CHANGED
            }
            (State::Downloaded, _) | (State::Downloading, Transfer::Pull { .. }) => ResponseCode::BAD_REQUEST,
            (State::Idle, _) | (State::Downloading, Transfer::None) => {
                if offset != 0 {
                    return ResponseCode::REQUEST_ENTITY_INCOMPLETE;
                }
                self.start_push(now, &block, sink)
            }
            (State::Downloading, Transfer::Push { received, last_block }) => {
                let (received, last_block) = (*received, *last_block);
                match last_block {
                    Some((last, len, more)) if last == offset && len as usize == block.data.len() => {
                        // Retransmission of the block just accepted.
                        if more { ResponseCode::CONTINUE } else { ResponseCode::CHANGED }
                    }
                    _ if offset == 0 => self.start_push(now, &block, sink),
                    _ if offset == received => self.accept_block(now, &block, received, sink),
                    _ => ResponseCode::REQUEST_ENTITY_INCOMPLETE,
                }
            }
        }
    }

    fn start_push<S: PackageSink>(&mut self, now: Instant, block: &PackageBlock<'_>, sink: &mut S) -> ResponseCode {
        if block.total_size.is_some_and(|total| total > self.config.max_package_size) {
            self.transfer = Transfer::None;
            self.transition(now, State::Idle, UpdateResult::NotEnoughFlash);
            return ResponseCode::REQUEST_ENTITY_TOO_LARGE;
        }
        if let Err(error) = sink.begin(block.total_size) {
            return self.fail_push(now, error);
        }
        self.set_uri("");
        self.transfer = Transfer::Push { received: 0, last_block: None };
        self.transition(now, State::Downloading, UpdateResult::Initial);
        self.accept_block(now, block, 0, sink)
    }

    fn accept_block<S: PackageSink>(
        &mut self,
        now: Instant,
        block: &PackageBlock<'_>,
        offset: u64,
        sink: &mut S,
    ) -> ResponseCode {
        let end = offset + block.data.len() as u64;
        if end > self.config.max_package_size {
            return self.fail_push(now, PackageError::NotEnoughFlash);
        }
        if let Err(error) = sink.write(offset, block.data) {
            return self.fail_push(now, error);
        }
        self.transfer =
            Transfer::Push { received: end, last_block: Some((offset, block.data.len() as u32, block.more)) };
        if block.more {
            self.events.push_back(FirmwareEvent::Persist);
            return ResponseCode::CONTINUE;
        }
        if let Err(error) = sink.finish(end) {
            // The Write itself arrived whole; the outcome is in Update Result.
            self.fail_push(now, error);
            return ResponseCode::CHANGED;
        }
        self.download_done(now);
        ResponseCode::CHANGED
    }

    fn fail_push(&mut self, now: Instant, error: PackageError) -> ResponseCode {
        self.transfer = Transfer::None;
        self.events.push_back(FirmwareEvent::DiscardImage);
        self.transition(now, State::Idle, error.update_result());
        match error {
            PackageError::NotEnoughFlash => ResponseCode::REQUEST_ENTITY_TOO_LARGE,
            PackageError::OutOfRam => ResponseCode::INTERNAL_SERVER_ERROR,
            _ => ResponseCode::BAD_REQUEST,
        }
    }

    /// T3, or T14 when Automatic Upgrade at Download is on (object 1.2).
    fn download_done(&mut self, now: Instant) {
        self.transition(now, State::Downloaded, UpdateResult::Initial);
        if self.automatic_upgrade && self.has(14) {
            self.start_update(now);
        }
    }

    fn start_update(&mut self, now: Instant) {
        self.transition(now, State::Updating, UpdateResult::Initial);
        self.events.push_back(FirmwareEvent::ApplyUpdate);
    }

    /// An Execute of `/5/0/{resource}`: Update (2) in Downloaded (T7, or T8 when
    /// the user defers), Cancel (10, object 1.1+) in Downloading or Downloaded
    /// (T6, T10); 4.05 where the state does not allow it.
    pub fn execute(&mut self, now: Instant, resource: u16) -> ResponseCode {
        if self.tick(now).is_err() {
            return ResponseCode::INTERNAL_SERVER_ERROR;
        }
        if !self.has(resource) {
            return ResponseCode::NOT_FOUND;
        }
        match (resource, self.state) {
            (2, State::Downloaded) => {
                let may_defer = self.severity != SEVERITY_CRITICAL && self.maximum_defer_period > 0;
                match self.config.user_deferral.filter(|_| may_defer && self.has(11)) {
                    Some(postpone) => {
                        let limit = Duration::from_secs(self.maximum_defer_period);
                        let until = now + postpone.min(limit);
                        self.deferred_until = Some(self.deferred_until.map_or(until, |d| d.min(until)));
                        self.transition(now, State::Downloaded, UpdateResult::Deferred);
                    }
                    None => self.start_update(now),
                }
                ResponseCode::CHANGED
            }
            (10, State::Downloading | State::Downloaded) => {
                self.abort_transfer();
                self.transition(now, State::Idle, UpdateResult::Cancelled);
                ResponseCode::CHANGED
            }
            _ => ResponseCode::METHOD_NOT_ALLOWED,
        }
    }

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
            3 => Value::Integer(self.state.code()),
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

    // ----- the firmware's reports -----

    /// A pull download fetched `offset` bytes so far (kept to resume after a reboot).
    ///
    /// # Errors
    /// [`FirmwareError`] when no pull download is in progress.
    pub fn download_progress(&mut self, now: Instant, offset: u64) -> Result<(), FirmwareError> {
        self.tick(now)?;
        match (&mut self.transfer, self.state) {
            (Transfer::Pull { offset: current, .. }, State::Downloading) => {
                *current = offset;
                Ok(())
            }
            _ => Err(FirmwareError::UnexpectedInput { input: "download progress", state: self.state }),
        }
    }

    /// The pull download finished and the image checked out (T3, or T14).
    ///
    /// # Errors
    /// [`FirmwareError`] when no pull download is in progress.
    pub fn download_completed(&mut self, now: Instant) -> Result<(), FirmwareError> {
        self.tick(now)?;
        match (&self.transfer, self.state) {
            (Transfer::Pull { .. }, State::Downloading) => {
                self.download_done(now);
                Ok(())
            }
            _ => Err(FirmwareError::UnexpectedInput { input: "download completed", state: self.state }),
        }
    }

    /// The pull download failed (T4) with one of Update Results 2–7 or 9.
    ///
    /// # Errors
    /// [`FirmwareError`] when no pull download is in progress or `result` is
    /// not a download failure.
    pub fn download_failed(&mut self, now: Instant, result: UpdateResult) -> Result<(), FirmwareError> {
        self.tick(now)?;
        if !result.is_download_failure() {
            return Err(FirmwareError::InvalidResult(result));
        }
        match (&self.transfer, self.state) {
            (Transfer::Pull { .. }, State::Downloading) => {
                self.transfer = Transfer::None;
                self.events.push_back(FirmwareEvent::DiscardImage);
                self.transition(now, State::Idle, result);
                Ok(())
            }
            _ => Err(FirmwareError::UnexpectedInput { input: "download failed", state: self.state }),
        }
    }

    /// The new image runs (T11): State Idle, Update Result 1.
    ///
    /// # Errors
    /// [`FirmwareError`] unless State is Updating.
    pub fn update_succeeded(&mut self, now: Instant) -> Result<(), FirmwareError> {
        self.tick(now)?;
        if self.state != State::Updating {
            return Err(FirmwareError::UnexpectedInput { input: "update succeeded", state: self.state });
        }
        self.transfer = Transfer::None;
        self.transition(now, State::Idle, UpdateResult::Success);
        Ok(())
    }

    /// Installing failed: back to Downloaded with Update Result 8 when the image
    /// is still usable (T12), else to Idle with 5 (integrity) or 8 (T13).
    ///
    /// # Errors
    /// [`FirmwareError`] unless State is Updating, or for a result other than 5 or 8.
    pub fn update_failed(
        &mut self,
        now: Instant,
        image_usable: bool,
        result: UpdateResult,
    ) -> Result<(), FirmwareError> {
        self.tick(now)?;
        if self.state != State::Updating {
            return Err(FirmwareError::UnexpectedInput { input: "update failed", state: self.state });
        }
        match (image_usable, result) {
            (true, UpdateResult::UpdateFailed) => self.transition(now, State::Downloaded, UpdateResult::UpdateFailed),
            (false, UpdateResult::UpdateFailed | UpdateResult::IntegrityCheckFailure) => {
                self.transfer = Transfer::None;
                self.events.push_back(FirmwareEvent::DiscardImage);
                self.transition(now, State::Idle, result);
            }
            _ => return Err(FirmwareError::InvalidResult(result)),
        }
        Ok(())
    }

    /// The user accepts a deferred update now (T8 → Updating).
    ///
    /// # Errors
    /// [`FirmwareError`] unless an update is deferred.
    pub fn accept_deferred_update(&mut self, now: Instant) -> Result<(), FirmwareError> {
        self.tick(now)?;
        if self.state != State::Downloaded || self.result != UpdateResult::Deferred {
            return Err(FirmwareError::UnexpectedInput { input: "accept deferred update", state: self.state });
        }
        self.start_update(now);
        Ok(())
    }

    /// Fires due deadlines: a deferral whose time is up starts the update
    /// (Maximum Defer Period). A spurious call is harmless.
    ///
    /// # Errors
    /// [`FirmwareError::TimeWentBackwards`].
    pub fn handle_timeout(&mut self, now: Instant) -> Result<(), FirmwareError> {
        self.tick(now)?;
        if self.deferred_until.is_some_and(|until| now >= until) && self.state == State::Downloaded {
            self.deferred_until = None;
            self.start_update(now);
        }
        Ok(())
    }

    /// The device booted with this object restored from its last snapshot: a
    /// pull download resumes where it stopped, and an update that was being
    /// installed is applied again (the firmware then reports its outcome).
    pub fn rebooted(&mut self, now: Instant) {
        self.last_now = now;
        self.events.clear();
        match (&self.transfer, self.state) {
            (Transfer::Pull { offset }, State::Downloading) => {
                let event = FirmwareEvent::StartDownload { uri: self.package_uri.clone(), offset: *offset };
                self.events.push_back(event);
            }
            (_, State::Updating) => self.events.push_back(FirmwareEvent::ApplyUpdate),
            _ => {}
        }
        if self.deferred_until.is_some() && self.state == State::Downloaded {
            // Wall time is lost across a reboot: restart the deferral from now.
            let postpone = self.config.user_deferral.unwrap_or_default();
            self.deferred_until = Some(now + postpone.min(Duration::from_secs(self.maximum_defer_period)));
        }
    }
}

/// The largest index ≤ `max` on a char boundary of `text`.
fn floor_boundary(text: &str, max: usize) -> usize {
    if text.len() <= max {
        return text.len();
    }
    (0..=max).rev().find(|&i| text.is_char_boundary(i)).unwrap_or(0)
}
