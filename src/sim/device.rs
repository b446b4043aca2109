//! A simulated LwM2M device: the /5 object of [`crate::device`], a minimal /3,
//! registration, observations and Send, behaving as its [`Profile`] says, in
//! virtual time.

use std::collections::{HashMap, VecDeque};
use std::time::Duration;

use bytes::Bytes;

use super::Rng;
use super::profile::{Profile, SendMode};
use crate::codec::{self, DecodeOptions};
use crate::device::{
    FirmwareInput, FirmwareOutput, FirmwareUpdate, FirmwareUpdateConfig, Observations, PackageBlock, PackageError,
    PackageSink,
};
use crate::model::{
    Binding, ClientMessage, ContentFormat, DeliveryMethod, Instant, Lwm2mVersion, ObjectEntry, ObjectVersion,
    Operation, Path, Protocol, Record, Registration, Registry, RequestId, ResponseCode, State, UpdateResult, Value,
};

/// The first line of a firmware image names its version:
/// `lwm2m-fota-image version=<v>`.
pub const IMAGE_HEADER: &str = "lwm2m-fota-image version=";

/// The version an image's first line names, if it has that line.
///
/// ```
/// use lwm2m_fota::sim::image_version;
/// assert_eq!(image_version(b"lwm2m-fota-image version=2.1.0\nrest"), Some("2.1.0".to_string()));
/// assert_eq!(image_version(b"\x7fELF"), None);
/// ```
pub fn image_version(head: &[u8]) -> Option<String> {
    let line = head.split(|&b| b == b'\n').next()?;
    let line = std::str::from_utf8(line).ok()?.trim_end_matches('\r');
    let version = line.strip_prefix(IMAGE_HEADER)?.trim();
    (!version.is_empty()).then(|| version.to_string())
}

/// An image of `size` bytes (at least its header line) naming `version`.
pub fn image_bytes(version: &str, size: usize) -> Vec<u8> {
    let mut image = format!("{IMAGE_HEADER}{version}\n").into_bytes();
    let mut filler = Rng::new(size as u64);
    while image.len() < size {
        image.push(filler.next_u64() as u8);
    }
    image
}

/// An image a simulated device can download from a Package URI.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SimImage {
    /// Size in bytes.
    pub size: u64,
    /// The version its header names (None: no header, Update Result 6).
    pub version: Option<String>,
}

/// The images reachable by URI in a simulation (the download servers).
#[derive(Debug, Clone, Default)]
pub struct ImageStore {
    images: HashMap<String, SimImage>,
}

impl ImageStore {
    /// An empty store.
    pub fn new() -> ImageStore {
        ImageStore::default()
    }

    /// Serves `image` at `uri`.
    pub fn insert(&mut self, uri: impl Into<String>, image: SimImage) {
        self.images.insert(uri.into(), image);
    }

    /// The image at `uri`.
    pub fn get(&self, uri: &str) -> Option<&SimImage> {
        self.images.get(uri)
    }
}

/// Keeps a pushed image's head (for its version) and size, nothing else.
#[derive(Debug, Clone, Default)]
struct HeadSink {
    head: Vec<u8>,
}

const HEAD_BYTES: usize = 128;

impl PackageSink for HeadSink {
    fn begin(&mut self, _total_size: Option<u64>) -> Result<(), PackageError> {
        self.head.clear();
        Ok(())
    }

    fn write(&mut self, offset: u64, data: &[u8]) -> Result<(), PackageError> {
        if offset < HEAD_BYTES as u64 {
            let take = (HEAD_BYTES - offset as usize).min(data.len());
            self.head.truncate(offset as usize);
            self.head.extend_from_slice(&data[..take]);
        }
        Ok(())
    }

    fn finish(&mut self, _size: u64) -> Result<(), PackageError> {
        image_version(&self.head).map(drop).ok_or(PackageError::UnsupportedPackageType)
    }
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum DownloadEnd {
    Complete,
    Fail(UpdateResult),
}

#[derive(Debug, Clone)]
struct Download {
    at: Instant,
    end: DownloadEnd,
    size: u64,
    version: Option<String>,
}

/// Names one confirmable uplink of a device under NSTART = 1, from
/// [`SimDevice::poll_uplink`] to its acknowledgement or failure: a copy of
/// an earlier uplink (a network duplicate, a retransmission that crossed its
/// answer) carries that uplink's stamp, so its answer releases nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct UplinkStamp(u32);

/// One simulated device. Sans-I/O like everything else: feed it server
/// requests with [`handle`](Self::handle) (only while [`reachable`](Self::reachable)),
/// call [`handle_timeout`](Self::handle_timeout) at [`poll_timeout`](Self::poll_timeout),
/// and take its uplinks from [`poll_message`](Self::poll_message).
#[derive(Debug, Clone)]
pub struct SimDevice {
    id: u64,
    profile: &'static Profile,
    firmware: FirmwareUpdate,
    /// What the /5 object asked for while a request was being answered, acted
    /// on once the answer is out (its `Respond` already taken).
    firmware_version: String,
    sink: HeadSink,
    rng: Rng,
    /// Offline (booting or installing) until then.
    offline_until: Option<Instant>,
    installing: bool,
    registered: bool,
    registrations: u32,
    next_update: Instant,
    awake_until: Instant,
    observations: Observations<RequestId>,
    download: Option<Download>,
    pending_version: Option<String>,
    reboot_at: Option<Instant>,
    outbox: VecDeque<ClientMessage>,
    /// The last answer, repeated for a retransmitted request (CoAP deduplication).
    last_answer: Option<(RequestId, ResponseCode, Option<ContentFormat>, Bytes)>,
    /// The highest pushed block acknowledged in the current push.
    pushed_block: Option<u32>,
    /// A Register or Update that never got through: register again then.
    register_retry_at: Option<Instant>,
    /// Encoding buffer, reused.
    scratch: Vec<u8>,
    /// Pull downloads done by the caller over a real transport
    /// ([`set_external_downloads`](Self::set_external_downloads)).
    external: Option<Box<ExternalDownload>>,
    /// The most bytes per second a server pacing its delivery lets a pull
    /// download reach ([`set_download_pace`](Self::set_download_pace)).
    pace: Option<u64>,
    /// The last download's span and bytes, until taken.
    download_span: Option<(Instant, Instant, u64)>,
    /// The server configured it for LwM2M Send ([`configure_send`](Self::configure_send)).
    send_configured: bool,
    /// NSTART = 1 ([`set_nstart`](Self::set_nstart)): the caller reports the
    /// end of each confirmable uplink, and no other goes out before.
    nstart: bool,
    /// The stamp of the confirmable uplink sent and not yet acknowledged
    /// (under NSTART = 1).
    in_flight: Option<UplinkStamp>,
    /// Confirmable uplinks stamped so far.
    stamps: u32,
    /// Confirmable uplinks waiting for `in_flight`'s acknowledgement.
    held: VecDeque<ClientMessage>,
}

/// A pull download the caller performs (the swarm, over real CoAP).
#[derive(Debug, Clone, Default)]
struct ExternalDownload {
    /// Asked for and not yet taken by [`SimDevice::poll_fetch`].
    fetch: Option<(String, u64)>,
    /// Under way: the caller's blocks are taken.
    active: bool,
}

const SOFTWARE_VERSION: &str = "lwm2m-fota-sim";
/// The block size of a simulated CoAP download.
const DOWNLOAD_BLOCK: u64 = 1024;
const BOOT_TIME: Duration = Duration::from_secs(5);
/// How long a client waits to register again after a Register or Update that
/// got no answer (LwM2M 1.1's default Communication Retry Timer).
const REGISTRATION_RETRY: Duration = Duration::from_secs(60);

impl SimDevice {
    /// Device `id` running `firmware_version`, powered on at `now` (it registers
    /// a few seconds later).
    pub fn new(id: u64, profile: &'static Profile, seed: u64, firmware_version: &str, now: Instant) -> SimDevice {
        let mut rng = Rng::derive(seed, id);
        let config = FirmwareUpdateConfig {
            version: profile.firmware_object,
            protocols: [Protocol::Coap, Protocol::Coaps, Protocol::Http, Protocol::Https].into_iter().collect(),
            delivery: DeliveryMethod::Both,
            max_package_size: 64 * 1024 * 1024,
            user_deferral: None,
            send_on_change: profile.send == SendMode::OnChange && profile.lwm2m_version >= Lwm2mVersion::V1_1,
            unix_time_offset: 1_700_000_000,
        };
        let (earliest, latest) = profile.first_register;
        let spread = latest.saturating_sub(earliest).as_millis() as u64;
        let boot = earliest + Duration::from_millis(rng.below(spread));
        SimDevice {
            id,
            profile,
            firmware: FirmwareUpdate::new(config),
            firmware_version: firmware_version.to_string(),
            sink: HeadSink::default(),
            rng,
            offline_until: Some(now + boot),
            installing: false,
            registered: false,
            registrations: 0,
            next_update: now,
            awake_until: now,
            observations: Observations::new(),
            download: None,
            pending_version: None,
            reboot_at: None,
            outbox: VecDeque::new(),
            last_answer: None,
            pushed_block: None,
            register_retry_at: None,
            scratch: Vec::new(),
            external: None,
            pace: None,
            download_span: None,
            send_configured: true,
            nstart: false,
            in_flight: None,
            stamps: 0,
            held: VecDeque::new(),
        }
    }

    /// Whether the server configured the device for LwM2M Send, as an
    /// operator does for the Send strategy (S4). A new device is configured
    /// (it sends if its profile's [`SendMode`] says so); a device that is not
    /// never sends, whatever its profile. A [`SendMode::Silent`] device is
    /// configured and still silent. Takes effect from the next State change
    /// or Register.
    pub fn configure_send(&mut self, configured: bool) {
        self.send_configured = configured;
    }

    /// Whether it sends LwM2M Send (configured for it, and its profile sends).
    pub fn sends(&self) -> bool {
        self.send_configured && self.firmware.config().send_on_change
    }

    /// NSTART = 1 (RFC 7252 §4.7): with `on`, the device sends no confirmable
    /// uplink (Register, Update, Send, De-register) while the previous one is
    /// unacknowledged; it waits, e.g. its after-boot Send for the Register's
    /// answer. The caller then takes uplinks with their stamps from
    /// [`poll_uplink`](Self::poll_uplink) and reports each confirmable
    /// uplink's end with [`uplink_acknowledged`](Self::uplink_acknowledged)
    /// or [`uplink_failed`](Self::uplink_failed). Off by default, for callers
    /// whose transport keeps NSTART itself (the swarm's CoAP client).
    pub fn set_nstart(&mut self, on: bool) {
        self.nstart = on;
        if !on {
            self.in_flight = None;
            self.outbox.extend(self.held.drain(..));
        }
    }

    /// The server acknowledged the confirmable uplink stamped `stamp` (its
    /// response arrived): under NSTART = 1 the next waiting one goes out. An
    /// acknowledgement of anything but the uplink in flight (a duplicate's,
    /// or one sent before a reboot) is ignored.
    pub fn uplink_acknowledged(&mut self, now: Instant, stamp: UplinkStamp) {
        if self.in_flight == Some(stamp) {
            self.release(now);
        }
    }

    /// Ends the confirmable exchange in flight and sends the next one waiting.
    fn release(&mut self, now: Instant) {
        self.in_flight = None;
        if let Some(next) = self.held.pop_front() {
            self.awake_until = now + self.profile.awake_window;
            self.in_flight = Some(self.stamp());
            self.outbox.push_back(next);
        }
    }

    /// A new stamp for the confirmable uplink going out.
    fn stamp(&mut self) -> UplinkStamp {
        self.stamps = self.stamps.wrapping_add(1);
        UplinkStamp(self.stamps)
    }

    /// Caps its pull downloads at `bytes_per_s`, as a server delivering
    /// images at a pace does (a campaign's byte-rate quota).
    pub fn set_download_pace(&mut self, bytes_per_s: u64) {
        self.pace = Some(bytes_per_s.max(1));
    }

    /// The last pull download's start, end and bytes delivered (until taken):
    /// what a simulation counts against a byte-rate quota.
    pub fn take_download_span(&mut self) -> Option<(Instant, Instant, u64)> {
        self.download_span.take()
    }

    /// From now on the device's pull downloads are the caller's to perform
    /// over a real transport: [`poll_fetch`](Self::poll_fetch) says which URI
    /// from which offset, [`fetched`](Self::fetched) hands over the bytes and
    /// [`fetch_finished`](Self::fetch_finished) ends it (the profile's
    /// simulated download rate and losses no longer apply).
    pub fn set_external_downloads(&mut self) {
        self.external = Some(Box::default());
    }

    /// The download to start: the Package URI and the offset to resume from.
    pub fn poll_fetch(&mut self) -> Option<(String, u64)> {
        self.external.as_mut()?.fetch.take()
    }

    /// Whether an external download is under way (it ends when the /5 object
    /// aborts it, e.g. on a Package URI write that cancels it).
    pub fn is_fetching(&self) -> bool {
        self.external.as_ref().is_some_and(|e| e.active)
    }

    /// Bytes of the external download at `offset`.
    pub fn fetched(&mut self, now: Instant, offset: u64, data: &[u8], images: &ImageStore) {
        if !self.is_fetching() {
            return;
        }
        let _ = self.sink.write(offset, data);
        let end = offset + data.len() as u64;
        let _ = self.firmware.handle(now, FirmwareInput::DownloadProgress { offset: end });
        self.drain_firmware(now, images);
    }

    /// The external download ended: complete (the image's head names its
    /// version, else Update Result 6), or failed with `result`.
    pub fn fetch_finished(&mut self, now: Instant, result: Result<(), UpdateResult>, images: &ImageStore) {
        let Some(external) = self.external.as_mut().filter(|e| e.active) else { return };
        external.active = false;
        let input = match result.map(|()| image_version(&self.sink.head)) {
            Ok(Some(version)) => {
                self.pending_version = Some(version);
                FirmwareInput::DownloadCompleted
            }
            Ok(None) => FirmwareInput::DownloadFailed { result: UpdateResult::UnsupportedPackageType },
            Err(result) => FirmwareInput::DownloadFailed { result },
        };
        let _ = self.firmware.handle(now, input);
        self.drain_firmware(now, images);
    }

    /// The device's id.
    pub fn id(&self) -> u64 {
        self.id
    }

    /// Its endpoint name.
    pub fn endpoint(&self) -> String {
        // At its exact length (a Register copies it into a `Box<str>`
        // without reallocating), not through `format!`.
        let digits = self.id.checked_ilog10().map_or(1, |log| log as usize + 1);
        let mut name = String::with_capacity(4 + digits);
        name.push_str("sim-");
        super::push_decimal(&mut name, self.id);
        name
    }

    /// Its profile.
    pub fn profile(&self) -> &'static Profile {
        self.profile
    }

    /// `/3/0/3` Firmware Version.
    pub fn firmware_version(&self) -> &str {
        &self.firmware_version
    }

    /// The /5 object.
    pub fn firmware(&self) -> &FirmwareUpdate {
        &self.firmware
    }

    /// How many times it has registered.
    pub fn registrations(&self) -> u32 {
        self.registrations
    }

    /// True when a downlink sent now would reach the device: it is up,
    /// registered, and (in queue mode) listening.
    pub fn reachable(&self, now: Instant) -> bool {
        self.offline_until.is_none() && self.registered && (!self.profile.queue_mode || now <= self.awake_until)
    }

    /// The next uplink to send.
    pub fn poll_message(&mut self) -> Option<ClientMessage> {
        // The buffer is kept: a fleet holds only the devices being upgraded.
        self.outbox.pop_front()
    }

    /// The next uplink to send and, for a confirmable one under NSTART = 1
    /// ([`set_nstart`](Self::set_nstart)), the stamp its acknowledgement or
    /// failure is reported with. Under NSTART at most one confirmable uplink
    /// is out at a time, so the stamp is the one in flight.
    pub fn poll_uplink(&mut self) -> Option<(ClientMessage, Option<UplinkStamp>)> {
        let message = self.outbox.pop_front()?;
        let stamp = if self.nstart && confirmable(&message) { self.in_flight } else { None };
        Some((message, stamp))
    }

    /// When [`handle_timeout`](Self::handle_timeout) must run next.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let mut next = self.offline_until;
        let mut consider = |t: Option<Instant>| {
            if let Some(t) = t {
                next = Some(next.map_or(t, |n| n.min(t)));
            }
        };
        if self.offline_until.is_none() {
            consider(self.registered.then_some(self.next_update));
            consider(self.download.as_ref().map(|d| d.at));
            consider(self.reboot_at);
            consider(self.register_retry_at);
            consider(self.firmware.poll_timeout());
            consider(self.observations.poll_timeout());
        }
        next
    }

    fn emit(&mut self, now: Instant, message: ClientMessage) {
        if self.nstart && confirmable(&message) {
            if self.in_flight.is_some() {
                self.held.push_back(message);
                return;
            }
            self.in_flight = Some(self.stamp());
        }
        self.awake_until = now + self.profile.awake_window;
        self.outbox.push_back(message);
    }

    fn registration(&self) -> Registration {
        let v1_1 = self.profile.lwm2m_version >= Lwm2mVersion::V1_1;
        Registration {
            endpoint: self.endpoint().into(),
            lifetime: self.profile.lifetime.as_secs() as u32,
            lwm2m_version: self.profile.lwm2m_version,
            binding: if self.profile.queue_mode && !v1_1 { Binding::UDP.with(Binding::QUEUE) } else { Binding::UDP },
            queue_mode: self.profile.queue_mode,
            objects: [
                ObjectEntry { object_id: 1, version: None, instances: &[0] },
                ObjectEntry { object_id: 3, version: None, instances: &[0] },
                ObjectEntry { object_id: 5, version: v1_1.then_some(self.profile.firmware_object), instances: &[0] },
            ]
            .into_iter()
            .collect(),
        }
    }

    /// The transport gave up on a confirmable uplink (no acknowledgement
    /// after all its retransmissions). A Register or Registration Update that
    /// never got through is followed by a new Register a minute later, as
    /// clients retry their registration.
    /// `stamp` is the one [`poll_uplink`](Self::poll_uplink) gave with it.
    pub fn uplink_failed(&mut self, now: Instant, stamp: Option<UplinkStamp>, message: &ClientMessage) {
        if stamp.is_some() && self.in_flight == stamp {
            self.release(now);
        }
        if matches!(message, ClientMessage::Register(_) | ClientMessage::Update { .. }) && self.offline_until.is_none()
        {
            self.register_retry_at = Some(now + REGISTRATION_RETRY);
        }
    }

    fn register(&mut self, now: Instant) {
        self.register_retry_at = None;
        self.registered = true;
        self.registrations += 1;
        self.observations.clear();
        self.next_update = now + self.profile.lifetime.mul_f32(0.9);
        let registration = self.registration();
        self.emit(now, ClientMessage::Register(registration));
        if self.sends() {
            self.send_state(now, true);
        }
    }

    /// A Send as real clients keep it small (Anjay's, in the shared vectors):
    /// State and Update Result, plus `/3/0/3` and `/3/0/19` after a boot.
    fn send_state(&mut self, now: Instant, after_boot: bool) {
        let records = [
            Record::new(Path::resource(3, 0, 3), Value::string(&self.firmware_version)),
            Record::new(Path::resource(3, 0, 19), Value::string(SOFTWARE_VERSION)),
            Record::new(Path::resource(5, 0, 3), Value::Integer(self.reported_state())),
            Record::new(Path::resource(5, 0, 5), Value::Integer(self.firmware.update_result().code())),
        ];
        let records = if after_boot { &records[..] } else { &records[2..] };
        let mut payload = core::mem::take(&mut self.scratch);
        payload.clear();
        if codec::encode(ContentFormat::SenmlCbor, &Path::ROOT, records, &Registry::builtin(), &mut payload).is_ok() {
            // One allocation of the exact size; the scratch buffer is kept.
            let payload_bytes = Bytes::copy_from_slice(&payload);
            self.emit(now, ClientMessage::Send { format: ContentFormat::SenmlCbor, payload: payload_bytes });
        }
        self.scratch = payload;
    }

    /// State as this device shows it (a poor device hides Downloading).
    fn reported_state(&self) -> i64 {
        match self.firmware.state() {
            State::Downloading if !self.profile.reports_downloading => State::Idle.code(),
            state => state.code(),
        }
    }

    fn go_offline(&mut self, now: Instant, duration: Duration) {
        self.offline_until = Some(now + duration);
        self.registered = false;
        self.observations.clear();
        self.download = None;
        if let Some(external) = self.external.as_mut() {
            **external = ExternalDownload::default();
        }
        self.reboot_at = None;
        self.register_retry_at = None;
        // Its CoAP state is gone: what waited is never sent, and the answer
        // to what was in flight finds no exchange.
        self.in_flight = None;
        self.held.clear();
    }

    /// A server request, answered into the outbox. Ignored while the device is
    /// not [`reachable`](Self::reachable) (the request is lost).
    pub fn handle(&mut self, now: Instant, id: RequestId, operation: Operation, images: &ImageStore) {
        if !self.reachable(now) {
            return;
        }
        if self.busy(&operation) {
            // Not processed, so nothing to repeat for a copy of it.
            let code = ResponseCode::SERVICE_UNAVAILABLE;
            self.emit(now, ClientMessage::Response { id, code, format: None, payload: Bytes::new() });
            return;
        }
        if let Some((last, code, format, payload)) =
            self.last_answer.clone().filter(|(last, ..)| *last == id && self.profile.deduplicates)
        {
            self.emit(now, ClientMessage::Response { id: last, code, format, payload });
            return;
        }
        let (code, format, payload) = self.answer(now, id, operation);
        self.last_answer = Some((id, code, format, payload.clone()));
        self.emit(now, ClientMessage::Response { id, code, format, payload });
        self.drain_firmware(now, images);
    }

    /// A busy device (`Profile::busy_ppm`) answers 5.03 to any request while
    /// it downloads, and to a share of the pushed blocks it already holds.
    fn busy(&mut self, operation: &Operation) -> bool {
        let Some(share) = self.profile.busy_ppm else { return false };
        if self.download.is_some() || self.is_fetching() {
            return true;
        }
        match operation {
            Operation::WriteBlock { block, .. } => {
                let held = self.firmware.state() == State::Downloading
                    && self.pushed_block.is_some_and(|highest| block.number <= highest);
                held && self.rng.chance(share)
            }
            _ => false,
        }
    }

    fn answer(
        &mut self,
        now: Instant,
        id: RequestId,
        operation: Operation,
    ) -> (ResponseCode, Option<ContentFormat>, Bytes) {
        let empty = |code| (code, None, Bytes::new());
        match operation {
            Operation::Read { path, accept } => match self.encode(&path, accept) {
                Ok((format, payload)) => (ResponseCode::CONTENT, Some(format), payload),
                Err(code) => empty(code),
            },
            Operation::Observe { path, accept } => {
                if !self.profile.observe {
                    return empty(ResponseCode::METHOD_NOT_ALLOWED);
                }
                match self.encode(&path, accept) {
                    Ok((format, payload)) => {
                        self.observations.observe(id, path, format, now);
                        (ResponseCode::CONTENT, Some(format), payload)
                    }
                    Err(code) => empty(code),
                }
            }
            Operation::CancelObservation { path } => {
                self.observations.cancel(&path);
                match self.encode(&path, None) {
                    Ok((format, payload)) => (ResponseCode::CONTENT, Some(format), payload),
                    Err(code) => empty(code),
                }
            }
            Operation::WriteAttributes { path, attributes } => {
                self.observations.set_attributes(path, attributes);
                empty(ResponseCode::CHANGED)
            }
            Operation::Write { path, format, payload } => empty(self.write(now, &path, format, &payload)),
            Operation::WriteBlock { path, block, total_size, payload, .. } => {
                if path != Path::resource(5, 0, 0) {
                    return empty(ResponseCode::METHOD_NOT_ALLOWED);
                }
                let number = block.number;
                let block = PackageBlock { number, more: block.more, size: block.size, data: &payload, total_size };
                let code =
                    answer(&mut self.firmware, now, FirmwareInput::WritePackageBlock { block, sink: &mut self.sink });
                // Block 0 starts a push afresh; anything but 2.31 ends it.
                self.pushed_block = (code == ResponseCode::CONTINUE).then(|| match self.pushed_block {
                    Some(highest) if number > 0 => highest.max(number),
                    _ => number,
                });
                empty(code)
            }
            Operation::Execute { path } => match (path.object_id(), path.resource_id()) {
                (Some(5), Some(resource)) if path.instance_id() == Some(0) => {
                    empty(answer(&mut self.firmware, now, FirmwareInput::Execute { resource }))
                }
                (Some(3), Some(4)) => {
                    // Reboot: answer first, then go down.
                    self.reboot_at = Some(now);
                    empty(ResponseCode::CHANGED)
                }
                _ => empty(ResponseCode::METHOD_NOT_ALLOWED),
            },
        }
    }

    fn write(&mut self, now: Instant, path: &Path, format: ContentFormat, payload: &[u8]) -> ResponseCode {
        if path.object_id() != Some(5) || path.instance_id().is_some_and(|i| i != 0) {
            return ResponseCode::METHOD_NOT_ALLOWED;
        }
        if !self.accepts(format) {
            return ResponseCode::UNSUPPORTED_CONTENT_FORMAT;
        }
        if *path == Path::resource(5, 0, 0) && matches!(format, ContentFormat::Opaque) {
            let block = PackageBlock::whole(payload);
            return answer(&mut self.firmware, now, FirmwareInput::WritePackageBlock { block, sink: &mut self.sink });
        }
        let registry = Registry::default();
        let Ok(records) = codec::decode(format, path, payload, &registry, &DecodeOptions::default()) else {
            return ResponseCode::BAD_REQUEST;
        };
        let mut code = ResponseCode::CHANGED;
        for record in records {
            let resource = record.path.resource_id().unwrap_or(0);
            let result = match (resource, &record.value) {
                (0, Value::Opaque(bytes)) => {
                    let block = PackageBlock::whole(bytes);
                    answer(&mut self.firmware, now, FirmwareInput::WritePackageBlock { block, sink: &mut self.sink })
                }
                (_, value) => answer(&mut self.firmware, now, FirmwareInput::Write { resource, value }),
            };
            if !result.is_success() {
                code = result;
                break;
            }
        }
        code
    }

    fn accepts(&self, format: ContentFormat) -> bool {
        let v1_1 = self.profile.lwm2m_version >= Lwm2mVersion::V1_1 && self.profile.senml;
        match format {
            ContentFormat::Text | ContentFormat::Tlv | ContentFormat::Opaque => true,
            ContentFormat::SenmlCbor | ContentFormat::SenmlJson | ContentFormat::Cbor => v1_1,
            ContentFormat::Lwm2mCbor => v1_1 && self.profile.lwm2m_version >= Lwm2mVersion::V1_2,
            _ => false,
        }
    }

    /// The records of `path` as this device reports them (a poor device hides
    /// State 1).
    fn records(&self, path: &Path) -> Result<Vec<Record<'_>>, ResponseCode> {
        match path.object_id() {
            Some(5) => {
                let mut records = self.firmware.read(path)?;
                if !self.profile.reports_downloading && self.firmware.state() == State::Downloading {
                    for record in &mut records {
                        if record.path == Path::resource(5, 0, 3) {
                            record.value = Value::Integer(State::Idle.code());
                        }
                    }
                }
                Ok(records)
            }
            Some(3) if path.instance_id().is_none_or(|i| i == 0) => {
                let all = [
                    (0, Value::string("lwm2m-fota")),
                    (1, Value::string("simulated device")),
                    (2, Value::String(format!("{:08}", self.id).into())),
                    (3, Value::string(&self.firmware_version)),
                    (16, Value::string(if self.profile.queue_mode { "UQ" } else { "U" })),
                    (19, Value::string(SOFTWARE_VERSION)),
                ];
                let mut records: Vec<Record<'_>> = all
                    .into_iter()
                    .map(|(r, v)| Record::new(Path::resource(3, 0, r), v))
                    .filter(|r| r.path.starts_with(path))
                    .collect();
                if Path::resource_instance(3, 0, 11, 0).starts_with(path) || path.starts_with(&Path::resource(3, 0, 11))
                {
                    records.push(Record::new(Path::resource_instance(3, 0, 11, 0), Value::Integer(0)));
                }
                records.retain(|r| r.path.starts_with(path));
                if records.is_empty() { Err(ResponseCode::NOT_FOUND) } else { Ok(records) }
            }
            _ => Err(ResponseCode::NOT_FOUND),
        }
    }

    fn encode(&self, path: &Path, accept: Option<ContentFormat>) -> Result<(ContentFormat, Bytes), ResponseCode> {
        let records = self.records(path)?;
        let single = records.len() == 1 && records[0].path == *path;
        let format = match accept {
            Some(format) if self.accepts(format) => format,
            Some(_) => return Err(ResponseCode::NOT_ACCEPTABLE),
            None if single => ContentFormat::Text,
            None if self.accepts(ContentFormat::SenmlCbor) => ContentFormat::SenmlCbor,
            None => ContentFormat::Tlv,
        };
        // The built-in /5 (1.2) types every resource the older versions have.
        let registry = Registry::builtin();
        let mut payload = Vec::with_capacity(256);
        codec::encode(format, path, &records, &registry, &mut payload).map_err(|_| ResponseCode::NOT_ACCEPTABLE)?;
        Ok((format, Bytes::from(payload)))
    }

    /// Sends the notifications due at `now` (`changed`: /5/0 resources that
    /// changed, bit R for resource R).
    fn notify_due(&mut self, now: Instant, changed: u32) {
        for due in self.observations.due(now, changed) {
            let Ok((_, payload)) = self.encode(&due.path, Some(due.format)) else { continue };
            let message =
                ClientMessage::Notify { observation: due.key, sequence: due.sequence, format: due.format, payload };
            self.emit(now, message);
        }
    }

    fn drain_firmware(&mut self, now: Instant, images: &ImageStore) {
        // Changes of one step are notified together, as clients coalesce them.
        let mut changed = 0u32;
        while let Some(output) = self.firmware.poll_output() {
            match output {
                // Answers are taken where the request is handled (`FirmwareUpdate::request`).
                FirmwareOutput::Respond(_) => {}
                FirmwareOutput::StartDownload { uri, offset } => self.start_download(now, &uri, offset, images),
                FirmwareOutput::AbortDownload => {
                    self.download = None;
                    if let Some(external) = self.external.as_mut() {
                        **external = ExternalDownload::default();
                    }
                }
                FirmwareOutput::DiscardImage => self.pending_version = None,
                FirmwareOutput::ApplyUpdate => {
                    if self.pending_version.is_none() {
                        self.pending_version = image_version(&self.sink.head);
                    }
                    if self.profile.deregister_before_update && self.registered {
                        self.emit(now, ClientMessage::Deregister);
                    }
                    self.installing = true;
                    let reboot = self.rng.chance(self.profile.reboot_ppm);
                    let install = self.profile.install_time;
                    // An unplanned reboot part way makes the device come back
                    // still Updating and apply the image again.
                    let down = if reboot { install / 2 } else { install };
                    self.go_offline(now, down);
                    if reboot {
                        self.installing = false;
                    }
                }
                FirmwareOutput::ResourceChanged(resource) => changed |= 1u32 << resource.min(31),
                FirmwareOutput::SendState => {
                    if self.profile.send == SendMode::OnChange && self.send_configured && self.registered {
                        self.send_state(now, false);
                    }
                }
                FirmwareOutput::Persist => {}
            }
        }
        if changed != 0 {
            self.notify_due(now, changed);
        }
    }

    fn start_download(&mut self, now: Instant, uri: &str, offset: u64, images: &ImageStore) {
        if let Some(external) = self.external.as_mut() {
            external.fetch = Some((uri.to_string(), offset));
            external.active = true;
            return;
        }
        let Some(image) = images.get(uri) else {
            self.download = Some(Download {
                at: now + Duration::from_millis(200),
                end: DownloadEnd::Fail(UpdateResult::InvalidUri),
                size: 0,
                version: None,
            });
            return;
        };
        let remaining = image.size.saturating_sub(offset);
        let rate = self.profile.download_rate.min(self.pace.unwrap_or(u64::MAX)).max(1);
        let mut full = Duration::from_millis(remaining.saturating_mul(1000) / rate + 100);
        // The download's CoAP blocks cross the same lossy link as everything
        // else: each lost block costs RFC 7252 back-off, and a block that
        // five transmissions did not get through ends the download (Update
        // Result 4).
        let (down, up) = (self.profile.downlink.loss_ppm, self.profile.uplink.loss_ppm);
        if down > 0 || up > 0 {
            let blocks = remaining.div_ceil(DOWNLOAD_BLOCK);
            for block in 0..blocks {
                let mut lost = 0;
                while lost <= 4 && (self.rng.chance(down) || self.rng.chance(up)) {
                    full += Duration::from_secs(2 << lost);
                    lost += 1;
                }
                if lost > 4 {
                    let at = now + full.mul_f64((block + 1) as f64 / blocks as f64);
                    self.download_span = Some((now, at, block * DOWNLOAD_BLOCK));
                    let end = DownloadEnd::Fail(UpdateResult::ConnectionLost);
                    self.download = Some(Download { at, end, size: image.size, version: None });
                    return;
                }
            }
        }
        let (at, end) = if self.rng.chance(self.profile.download_failure_ppm) {
            (now + full.mul_f64(self.rng.below(1000) as f64 / 1000.0), DownloadEnd::Fail(UpdateResult::ConnectionLost))
        } else if image.version.is_none() {
            (now + full, DownloadEnd::Fail(UpdateResult::UnsupportedPackageType))
        } else {
            (now + full, DownloadEnd::Complete)
        };
        if self.rng.chance(self.profile.reboot_ppm) {
            self.reboot_at = Some(now + full.mul_f64(self.rng.below(1000) as f64 / 1000.0));
        }
        let share = (at - now).as_millis() as f64 / full.as_millis().max(1) as f64;
        self.download_span = Some((now, at, (remaining as f64 * share.min(1.0)) as u64));
        self.download = Some(Download { at, end, size: image.size, version: image.version.clone() });
    }

    /// Fires what is due at `now`.
    pub fn handle_timeout(&mut self, now: Instant, images: &ImageStore) {
        if let Some(until) = self.offline_until {
            if now < until {
                return;
            }
            self.offline_until = None;
            if self.installing {
                self.installing = false;
                if let Some(version) = self.pending_version.take() {
                    self.firmware_version = version;
                }
                let _ = self.firmware.handle(now, FirmwareInput::UpdateSucceeded);
            } else {
                // Booted with the persisted /5 state.
                let _ = self.firmware.handle(now, FirmwareInput::Rebooted);
            }
            self.register(now);
            self.drain_firmware(now, images);
            return;
        }
        if self.reboot_at.is_some_and(|at| now >= at) {
            self.reboot_at = None;
            self.go_offline(now, BOOT_TIME);
            return;
        }
        if self.register_retry_at.is_some_and(|at| now >= at) {
            self.register(now);
            self.drain_firmware(now, images);
        }
        if let Some(download) = self.download.as_ref().filter(|d| now >= d.at) {
            let (end, size, version) = (download.end, download.size, download.version.clone());
            self.download = None;
            match end {
                DownloadEnd::Complete => {
                    let _ = self.firmware.handle(now, FirmwareInput::DownloadProgress { offset: size });
                    self.pending_version = version;
                    let _ = self.firmware.handle(now, FirmwareInput::DownloadCompleted);
                }
                DownloadEnd::Fail(result) => {
                    let _ = self.firmware.handle(now, FirmwareInput::DownloadFailed { result });
                }
            }
            self.drain_firmware(now, images);
        }
        if self.registered && now >= self.next_update {
            self.next_update = now + self.profile.lifetime.mul_f32(0.9);
            self.emit(now, ClientMessage::Update { lifetime: None, objects: None });
        }
        let _ = self.firmware.handle_timeout(now);
        self.drain_firmware(now, images);
        self.notify_due(now, 0);
    }

    /// The object versions this device registers with, for servers' tests.
    pub fn firmware_object_version(&self) -> ObjectVersion {
        self.profile.firmware_object
    }
}

/// Register, Update, Send and De-register are confirmable: they are
/// retransmitted until acknowledged.
fn confirmable(message: &ClientMessage) -> bool {
    matches!(
        message,
        ClientMessage::Register(_)
            | ClientMessage::Update { .. }
            | ClientMessage::Send { .. }
            | ClientMessage::Deregister
    )
}

/// The /5 object's answer to a server request (5.00 if it refused the
/// request's time, which the simulation's clock never makes it do).
fn answer(firmware: &mut FirmwareUpdate, now: Instant, input: FirmwareInput<'_>) -> ResponseCode {
    firmware.request(now, input).ok().flatten().unwrap_or(ResponseCode::INTERNAL_SERVER_ERROR)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sim::profile;

    fn boot(device: &mut SimDevice, images: &ImageStore) -> Vec<ClientMessage> {
        let now = device.poll_timeout().unwrap();
        device.handle_timeout(now, images);
        std::iter::from_fn(|| device.poll_message()).collect()
    }

    #[test]
    fn a_device_not_configured_for_send_never_sends() {
        let images = ImageStore::new();
        let mut device = SimDevice::new(1, &profile::CONFORMING, 3, "1.0.0", Instant::ZERO);
        device.configure_send(false);
        assert!(!device.sends());
        let out = boot(&mut device, &images);
        assert!(matches!(out[..], [ClientMessage::Register(_)]), "{out:?}");
        // Configured (the default), it sends after booting.
        let mut device = SimDevice::new(1, &profile::CONFORMING, 3, "1.0.0", Instant::ZERO);
        let out = boot(&mut device, &images);
        assert!(matches!(out[..], [ClientMessage::Register(_), ClientMessage::Send { .. }]), "{out:?}");
        // Silent stays silent, configured or not.
        let mut device = SimDevice::new(1, &profile::NO_SEND, 3, "1.0.0", Instant::ZERO);
        assert!(!device.sends());
        assert!(matches!(boot(&mut device, &images)[..], [ClientMessage::Register(_)]));
    }

    #[test]
    fn under_nstart_the_after_boot_send_waits_for_the_register_ack() {
        let images = ImageStore::new();
        let mut device = SimDevice::new(2, &profile::CONFORMING, 3, "1.0.0", Instant::ZERO);
        device.set_nstart(true);
        let boot_at = device.poll_timeout().unwrap();
        device.handle_timeout(boot_at, &images);
        let Some((ClientMessage::Register(_), Some(register))) = device.poll_uplink() else { panic!("no Register") };
        assert!(device.poll_uplink().is_none());
        let now = Instant::from_millis(6_000);
        // An acknowledgement of something else (an earlier uplink's stamp)
        // releases nothing.
        device.uplink_acknowledged(now, UplinkStamp(register.0.wrapping_sub(1)));
        assert!(device.poll_message().is_none());
        device.uplink_acknowledged(now, register);
        let Some((send @ ClientMessage::Send { .. }, Some(stamp))) = device.poll_uplink() else { panic!("no Send") };
        assert_ne!(stamp, register);
        assert!(device.poll_message().is_none());
        // Acknowledging the Register again (a duplicate's answer) changes nothing.
        device.uplink_acknowledged(now, register);
        // A Send that failed releases the next one too (nothing waits here).
        device.uplink_failed(now, Some(stamp), &send);
        assert!(device.poll_message().is_none());
    }

    #[test]
    fn offline_devices_register_hours_late() {
        for id in 0..50 {
            let device = SimDevice::new(id, &profile::OFFLINE, 5, "1.0.0", Instant::ZERO);
            let first = device.poll_timeout().unwrap().as_millis();
            assert!((3_600_000..=6 * 3_600_000).contains(&first), "{first}");
        }
    }
}
