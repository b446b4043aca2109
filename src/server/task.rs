//! One device's upgrade task, sans-I/O.

use alloc::boxed::Box;
use alloc::collections::VecDeque;
use alloc::string::String;
use alloc::sync::Arc;
use bytes::Bytes;
use core::time::Duration;

use super::config::{Delivery, Strategy, UpgradeConfig};
use super::outcome::{Failure, Outcome, Step, TaskEvent};
use crate::codec::{self, DecodeOptions};
use crate::model::{
    Block, ContentFormat, DeliveryMethod, Instant, ObjectVersion, Operation, Path, Protocol, ProtocolSet, Registration,
    Registry, RequestId, ResponseCode, State, UpdateResult, Value,
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

/// An input from the device or the transport.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum TaskInput<'a> {
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
#[non_exhaustive]
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

/// What [`UpgradeTask::poll_output`] yields.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
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

/// What a request in flight is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
enum Action {
    ReadFirmware,
    ReadVersion,
    Reset,
    WriteLifetime,
    RestoreLifetime,
    Observe(Target),
    WriteUri,
    PushBlock(u32),
    Execute,
}

/// A refusal the task looks at before it counts (`UpgradeTask::check_refusal`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
struct Refusal {
    action: Action,
    code: ResponseCode,
    looking: bool,
    /// The State the look's own answers carried (a report that arrives in
    /// between may be a stale one).
    seen: Option<State>,
}

/// Observation targets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
enum Target {
    State,
    Result,
    Instance,
    Version,
    Protocols,
    Delivery,
}

impl Target {
    const ALL: [Target; 6] =
        [Target::State, Target::Result, Target::Instance, Target::Version, Target::Protocols, Target::Delivery];

    fn index(self) -> usize {
        self as usize
    }

    fn bit(self) -> u8 {
        1 << self.index()
    }

    fn path(self) -> Path {
        match self {
            Target::State => Path::resource(5, 0, 3),
            Target::Result => Path::resource(5, 0, 5),
            Target::Instance => Path::instance(5, 0),
            Target::Version => Path::resource(3, 0, 3),
            Target::Protocols => Path::resource(5, 0, 8),
            Target::Delivery => Path::resource(5, 0, 9),
        }
    }
}

/// A request the device rejected or never got, remembered for U7.
const NO_ID: u32 = 0;

/// RFC 7252 §5.10.5: Max-Age when a response does not carry it.
const DEFAULT_MAX_AGE: Duration = Duration::from_secs(60);

/// One device's firmware upgrade: strategy × delivery × protocol, timeout,
/// resume, retries and verification (features.md U1–U12, S1–S5, B1, B4,
/// B7–B10), sans-I/O.
///
/// Its methods fall into families, as in quinn-proto:
/// - commands: [`start`](Self::start), [`cancel`](Self::cancel),
///   [`release_execute`](Self::release_execute);
/// - inputs: [`handle`](Self::handle) (registration, responses, notifications,
///   Send, transport failures) and [`handle_timeout`](Self::handle_timeout);
/// - outputs: [`poll_output`](Self::poll_output) (drain it after every input:
///   events first, then at most one request in flight to the device) and
///   [`poll_timeout`](Self::poll_timeout).
///
/// Time comes with every input and must not go backwards; a spurious
/// `handle_timeout` is harmless. Device misbehaviour never panics and never
/// hangs: it ends in [`Outcome::Failed`] with a precise [`Failure`]. The whole
/// task serializes with serde; a task restored from a snapshot taken after any
/// step continues exactly as the original.
#[derive(Debug, Clone, PartialEq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct UpgradeTask {
    config: Arc<UpgradeConfig>,
    step: Step,
    deadline: Instant,
    wait_until: Option<Instant>,
    last_now: Instant,
    registered: bool,
    queue_mode: bool,
    awake_until: Instant,
    firmware_object: ObjectVersion,
    server_instance: u16,
    original_lifetime: u32,
    state: Option<State>,
    result: Option<UpdateResult>,
    protocols: Option<ProtocolSet>,
    delivery_method: Option<DeliveryMethod>,
    /// `/3/0/3` as last counted (a boxed str: the task stays small).
    version: Option<Box<str>>,
    cached: Option<Box<CachedModel>>,
    attempt: u32,
    push: bool,
    next_block: u32,
    block_restarts: u8,
    delivered: bool,
    lifetime_extended: bool,
    lifetime_restored: bool,
    reset_done: bool,
    execute_released: bool,
    need_read: bool,
    seen_send: bool,
    want_observe: u8,
    /// Observation request ids by target (ids fit 32 bits: a task sends far
    /// fewer than 2^32 requests).
    observations: [u32; 6],
    next_id: RequestId,
    in_flight: Option<(u32, Action, Instant)>,
    resume: Option<Action>,
    cancel_reset: bool,
    execute_unconfirmed: bool,
    /// Package URI writes sent, over all attempts (saturating).
    #[cfg_attr(feature = "serde", serde(default))]
    uri_writes: u8,
    /// 5.03 Service Unavailable: no request before then (in the past when
    /// the device never asked to wait).
    #[cfg_attr(feature = "serde", serde(default))]
    busy_until: Instant,
    /// The last refusal looked at in this attempt: while `looking`, the task
    /// reads State and Update Result before the refusal counts; afterwards a
    /// second refusal of the same action counts at once.
    #[cfg_attr(feature = "serde", serde(default))]
    refusal: Option<Refusal>,
    /// An Execute was sent (in any attempt): the device may run the new image.
    #[cfg_attr(feature = "serde", serde(default))]
    execute_sent: bool,
    /// After a failure that may hide an applied update, the task watches the
    /// device for proof of a late success until `deadline`.
    #[cfg_attr(feature = "serde", serde(default))]
    watching: bool,
    /// While watching: the device spoke, look at State, Update Result and version.
    #[cfg_attr(feature = "serde", serde(default))]
    late_look: bool,
    /// The request in flight repeats one whose exchange failed.
    #[cfg_attr(feature = "serde", serde(default))]
    resent: bool,
    /// In this attempt the device was seen Downloading or Downloaded in an
    /// answer or a notification.
    #[cfg_attr(feature = "serde", serde(default))]
    seen_downloading: bool,
    outcome: Option<Box<Outcome>>,
    events: VecDeque<TaskEvent>,
}

impl UpgradeTask {
    /// A task for one device; nothing happens until [`start`](Self::start).
    pub fn new(config: Arc<UpgradeConfig>) -> UpgradeTask {
        UpgradeTask {
            config,
            step: Step::NotStarted,
            deadline: Instant::ZERO,
            wait_until: None,
            last_now: Instant::ZERO,
            registered: false,
            queue_mode: false,
            awake_until: Instant::ZERO,
            firmware_object: ObjectVersion::V1_0,
            server_instance: 0,
            original_lifetime: 0,
            state: None,
            result: None,
            protocols: None,
            delivery_method: None,
            version: None,
            cached: None,
            attempt: 1,
            push: false,
            next_block: 0,
            block_restarts: 0,
            delivered: false,
            lifetime_extended: false,
            lifetime_restored: false,
            reset_done: false,
            execute_released: false,
            need_read: false,
            seen_send: false,
            want_observe: 0,
            observations: [NO_ID; 6],
            next_id: 1,
            in_flight: None,
            resume: None,
            cancel_reset: false,
            execute_unconfirmed: false,
            uri_writes: 0,
            busy_until: Instant::ZERO,
            refusal: None,
            execute_sent: false,
            watching: false,
            late_look: false,
            resent: false,
            seen_downloading: false,
            outcome: None,
            events: VecDeque::new(),
        }
    }

    /// A task that may start from the server's cached copy of the device's data
    /// model (U6; used when the configuration enables it and the cache has State).
    pub fn with_cached_model(config: Arc<UpgradeConfig>, cached: CachedModel) -> UpgradeTask {
        let mut task = UpgradeTask::new(config);
        task.cached = Some(Box::new(cached));
        task
    }

    /// The configuration.
    pub fn config(&self) -> &UpgradeConfig {
        &self.config
    }

    /// The current step.
    pub fn step(&self) -> Step {
        self.step
    }

    /// The outcome, once finished.
    pub fn outcome(&self) -> Option<&Outcome> {
        self.outcome.as_deref()
    }

    /// The attempt under way (1 for the first).
    pub fn attempt(&self) -> u32 {
        self.attempt
    }

    /// State and Update Result as last seen.
    pub fn device_state(&self) -> (Option<State>, Option<UpdateResult>) {
        (self.state, self.result)
    }

    fn tick(&mut self, now: Instant) -> Result<(), TaskError> {
        if now < self.last_now {
            return Err(TaskError::TimeWentBackwards);
        }
        self.last_now = now;
        Ok(())
    }

    fn set_step(&mut self, now: Instant, step: Step) {
        if self.step != step {
            self.step = step;
            self.events.push_back(TaskEvent::StepChanged(step));
            self.wait_until = matches!(step, Step::Downloading | Step::Updating | Step::Verifying | Step::Inspecting)
                .then(|| now + self.config.step_timeout);
        }
    }

    fn strategy(&self) -> Strategy {
        match self.config.strategy {
            // U9: firmwareUpdateUseObserve turns S1 into S2.
            Strategy::Reads if self.config.use_observe => Strategy::ObserveResources,
            other => other,
        }
    }

    fn finish(&mut self, now: Instant, outcome: Outcome) {
        if self.outcome.is_some() {
            return;
        }
        self.set_step(now, Step::Finished);
        self.wait_until = None;
        // A request still in flight is forgotten: its answer is stale.
        self.in_flight = None;
        self.refusal = None;
        self.events.push_back(TaskEvent::Finished(outcome.clone()));
        self.outcome = Some(Box::new(outcome));
    }

    fn fail(&mut self, now: Instant, failure: Failure) {
        if self.outcome.is_some() {
            return;
        }
        let retryable = match &failure {
            Failure::UpdateResult(result) => self.config.retry.retries(*result),
            Failure::DownlinkFailure { .. } => self.config.retry.retry_downlink_failures,
            _ => false,
        };
        if retryable && self.attempt < self.config.retry.max_attempts && now < self.deadline {
            self.attempt += 1;
            self.events.push_back(TaskEvent::Retrying { failure, attempt: self.attempt });
            self.delivered = false;
            self.next_block = 0;
            self.block_restarts = 0;
            self.reset_done = false;
            self.execute_released = false;
            self.resume = None;
            self.need_read = true;
            self.refusal = None;
            self.seen_downloading = false;
            self.state = None;
            // A version seen before proves nothing about this attempt.
            self.version = None;
            self.set_step(now, Step::Inspecting);
            return;
        }
        self.end_failed(now, failure);
    }

    /// Ends the task with `failure`. When an Execute was sent, the device may
    /// be running the new image all the same (its answers were lost, or it
    /// took longer than the timeout): the task then watches it for one more
    /// upgrade timeout, and a device that proves the update applied turns the
    /// outcome into [`Outcome::LateSuccess`].
    fn end_failed(&mut self, now: Instant, failure: Failure) {
        let may_have_applied = self.execute_sent
            && matches!(failure, Failure::Timeout { .. } | Failure::DownlinkFailure { .. } | Failure::Rejected { .. });
        let finished_now = self.outcome.is_none();
        self.finish(now, Outcome::Failed(failure));
        if finished_now && may_have_applied {
            self.watching = true;
            self.deadline = now + self.config.timeout;
            // The device may have come back already (its next uplink can be
            // an extended lifetime away): look at once.
            self.late_look_on_uplink();
        }
    }

    /// True while a failed task watches its device for a late success (for
    /// one more upgrade timeout after the failure; [`poll_timeout`](Self::poll_timeout)
    /// says when the watch ends).
    pub fn watching(&self) -> bool {
        self.watching
    }

    /// While watching: a device that shows Idle, Update Result 1 and (with a
    /// target) the target version succeeded after all.
    fn check_late_success(&mut self) {
        if !self.watching || self.state != Some(State::Idle) || self.result != Some(UpdateResult::Success) {
            return;
        }
        let version = match (&self.config.target_version, &self.version) {
            (Some(expected), Some(reported)) if **expected == **reported => Some(String::from(&**reported)),
            (Some(_), _) => return,
            (None, version) => version.as_deref().filter(|v| !v.is_empty()).map(String::from),
        };
        let Some(Outcome::Failed(failure)) = self.outcome.as_deref().cloned() else { return };
        let outcome = Outcome::LateSuccess { version, failure: Box::new(failure) };
        self.watching = false;
        self.late_look = false;
        self.events.push_back(TaskEvent::LateSuccess(outcome.clone()));
        self.outcome = Some(Box::new(outcome));
    }

    // ----- commands -----

    /// Starts the upgrade at `now`; the timeout (U1) runs from here.
    ///
    /// # Errors
    /// [`TaskError::TimeWentBackwards`].
    pub fn start(&mut self, now: Instant) -> Result<(), TaskError> {
        self.tick(now)?;
        if self.step != Step::NotStarted {
            return Ok(());
        }
        self.deadline = now + self.config.timeout;
        if let Some(cached) = self.cached.as_deref().copied().filter(|_| self.config.use_cached_data_model) {
            self.state = cached.state;
            self.result = cached.result;
            self.protocols = cached.protocols;
            self.delivery_method = cached.delivery;
        }
        self.set_step(now, if self.registered { Step::Inspecting } else { Step::WaitingForDevice });
        self.advance(now);
        Ok(())
    }

    /// Cancels the upgrade (B4): the device's state machine is reset with an
    /// empty Package URI if the image was already on its way.
    pub fn cancel(&mut self, now: Instant) {
        if self.outcome.is_some() {
            return;
        }
        self.last_now = self.last_now.max(now);
        self.cancel_reset = self.delivered || matches!(self.state, Some(State::Downloading | State::Downloaded));
        self.finish(now, Outcome::Failed(Failure::Cancelled));
    }

    /// Releases an Execute held at Downloaded (U12).
    pub fn release_execute(&mut self, now: Instant) {
        self.last_now = self.last_now.max(now);
        self.execute_released = true;
        self.advance(now);
    }

    // ----- inputs -----

    /// One input from the device or the transport.
    ///
    /// # Errors
    /// [`TaskError`] for time going backwards or a response to a request this
    /// task never issued; stale and duplicate responses are ignored.
    pub fn handle(&mut self, now: Instant, input: TaskInput<'_>) -> Result<(), TaskError> {
        self.tick(now)?;
        match input {
            TaskInput::Registered(registration) => {
                self.registered = true;
                self.queue_mode = registration.queue_mode;
                self.firmware_object = registration.object_version(5).unwrap_or(ObjectVersion::V1_0);
                self.server_instance = registration
                    .objects
                    .iter()
                    .find(|o| o.object_id == 1)
                    .and_then(|o| o.instances.first().copied())
                    .unwrap_or(0);
                if !self.lifetime_extended {
                    self.original_lifetime = registration.lifetime;
                }
                // A new registration voids observations and the lifetime we wrote.
                self.observations = [NO_ID; 6];
                self.lifetime_extended = false;
                // It also ends the device's exchanges (a server drops them, a
                // rebooted device forgot them): the request in flight will
                // never be answered, so it is settled now, not at its timeout.
                if let Some((_, action, _)) = self.in_flight.take() {
                    self.on_exchange_dropped(now, action);
                }
                self.uplink(now);
                self.late_look_on_uplink();
                if self.step == Step::WaitingForDevice {
                    self.set_step(now, Step::Inspecting);
                }
            }
            TaskInput::RegistrationUpdated => {
                self.registered = true;
                self.uplink(now);
                self.late_look_on_uplink();
            }
            TaskInput::Deregistered => {
                // A device may de-register before flashing: keep the task.
                self.registered = false;
                self.observations = [NO_ID; 6];
            }
            TaskInput::Response { id, code, format, payload } => {
                if id >= self.next_id || id == 0 {
                    return Err(TaskError::UnknownRequest(id));
                }
                self.awake(now);
                match self.in_flight {
                    Some((current, action, _)) if u64::from(current) == id => {
                        self.in_flight = None;
                        self.resent = false;
                        self.on_response(now, id, action, code, format, payload);
                    }
                    // A stale, duplicate or late response: nothing to do.
                    _ => {}
                }
            }
            TaskInput::ServiceUnavailable { id, max_age } => {
                if id >= self.next_id || id == 0 {
                    return Err(TaskError::UnknownRequest(id));
                }
                self.awake(now);
                if let Some((_, action, _)) = self.in_flight.filter(|(current, _, _)| u64::from(*current) == id) {
                    self.in_flight = None;
                    self.resent = false;
                    self.on_unavailable(now, action, max_age);
                }
            }
            TaskInput::TransportFailure { id } => {
                if id >= self.next_id || id == 0 {
                    return Err(TaskError::UnknownRequest(id));
                }
                if let Some((current, action, _)) = self.in_flight.filter(|(current, _, _)| u64::from(*current) == id) {
                    let _ = current;
                    self.in_flight = None;
                    self.on_downlink_failure(now, action);
                }
            }
            TaskInput::Notification { observation, format, payload } => {
                self.awake(now);
                let Some(target) = Target::ALL.into_iter().find(|t| {
                    self.observations[t.index()] != NO_ID && u64::from(self.observations[t.index()]) == observation
                }) else {
                    return Ok(());
                };
                let state = self.apply_payload(now, format, &target.path(), payload);
                // Notifications of one observation come in order (RFC 7641).
                self.download_state_seen(now, state);
            }
            TaskInput::Send { format, payload } => {
                self.seen_send = true;
                self.uplink(now);
                self.apply_payload(now, format, &Path::ROOT, payload);
            }
        }
        self.advance(now);
        self.check_late_success();
        Ok(())
    }

    /// While watching for a late success, each registration or update of the
    /// device is a reason to look at it again (S5 relies on its observations).
    fn late_look_on_uplink(&mut self) {
        if !self.watching {
            return;
        }
        self.late_look = true;
        if self.strategy().reads() {
            self.need_read = true;
            self.state = None;
            self.result = None;
            self.version = None;
        }
    }

    /// A State from the device's answer to a look of ours, or from a
    /// notification (in order, unlike Sends, which CoAP may resend late).
    /// A device seen Downloading in this attempt that shows Idle with Update
    /// Result 0 while the task waits for the download has lost it: a late
    /// copy of the reset (an empty Package URI) reached a client without a
    /// response cache after the URI write, or the device forgot it. The URI
    /// is written again. (Devices that hide Downloading never set the mark.)
    fn download_state_seen(&mut self, now: Instant, state: Option<State>) {
        match state {
            Some(State::Downloading | State::Downloaded) => self.seen_downloading = true,
            Some(State::Idle)
                if self.step == Step::Downloading
                    && !self.push
                    && self.seen_downloading
                    && self.result == Some(UpdateResult::Initial) =>
            {
                self.seen_downloading = false;
                self.delivered = false;
                self.refusal = None;
                self.set_step(now, Step::WritingUri);
            }
            _ => {}
        }
    }

    /// The request in flight was dropped with the device's old registration.
    fn on_exchange_dropped(&mut self, now: Instant, action: Action) {
        match action {
            // The device registered again after an Execute: it went down to
            // install, so the Execute is taken as delivered (and sent again
            // only if the device still shows Downloaded).
            Action::Execute if self.outcome.is_none() => self.execute_unanswered(now),
            // Observations are established again with the new registration.
            Action::Observe(_) => {}
            // Anything else is simply asked again (a push at the same block).
            _ => self.resume_action(action),
        }
    }

    /// 5.03: the same request again after Max-Age, capped by the step
    /// timeout, and at least a second later (Max-Age 0 must not make the task
    /// hammer a busy device).
    fn on_unavailable(&mut self, now: Instant, action: Action, max_age: Option<Duration>) {
        let wait = max_age.unwrap_or(DEFAULT_MAX_AGE).min(self.config.step_timeout).max(Duration::from_secs(1));
        self.busy_until = now + wait;
        self.resume_action(action);
    }

    fn awake(&mut self, now: Instant) {
        self.awake_until = self.awake_until.max(now + self.config.queue_window);
    }

    /// The device spoke on its own: it is awake, S1 and S2 read now, and an
    /// action that failed on the downlink is retried (U7).
    fn uplink(&mut self, now: Instant) {
        self.awake(now);
        if let Some(action) = self.resume.take() {
            self.resume_action(action);
        }
        // S1 and S2 read when the device speaks; S3 and S4 only fall back to
        // reads at step deadlines; S5 never reads.
        if matches!(self.step, Step::Downloading | Step::Updating | Step::Verifying | Step::Inspecting)
            && matches!(self.strategy(), Strategy::Reads | Strategy::ObserveResources)
        {
            self.need_read = true;
        }
    }

    fn resume_action(&mut self, action: Action) {
        match action {
            Action::PushBlock(number) => self.next_block = number,
            Action::ReadFirmware | Action::ReadVersion => self.need_read = true,
            Action::Observe(target) => self.want_observe |= target.bit(),
            _ => {}
        }
    }

    /// Asks the device for State and Update Result again, as the strategy allows.
    fn refresh_state(&mut self) {
        if self.strategy().reads() {
            self.need_read = true;
        } else {
            self.observations[Target::State.index()] = NO_ID;
            self.observations[Target::Result.index()] = NO_ID;
            self.want_observe |= Target::State.bit() | Target::Result.bit();
        }
    }

    fn on_downlink_failure(&mut self, now: Instant, action: Action) {
        if matches!(action, Action::RestoreLifetime | Action::WriteLifetime) {
            // Best effort: the upgrade does not depend on it.
            self.lifetime_extended = true;
            return;
        }
        if action == Action::Execute {
            self.execute_unanswered(now);
            return;
        }
        if self.config.resume_after_downlink_failure {
            // U7: retry the same action at the device's next uplink.
            self.resume = Some(action);
            self.awake_until = now;
            if let Action::Observe(target) = action {
                self.want_observe &= !target.bit();
            }
            return;
        }
        if !self.resent {
            // One lost exchange (0.16 % of them at 15 % loss each way) is
            // no reason to start the attempt over: the same request goes
            // once more at once (a push at the same block). Two in a row
            // are a downlink failure.
            self.resent = true;
            self.resume_action(action);
            return;
        }
        let step = self.step;
        self.fail(now, Failure::DownlinkFailure { step });
    }

    /// The Execute may have arrived and the answer been lost as the device
    /// went down to install: watch what the device does next rather than fail
    /// (a Downloaded device gets the Execute again).
    fn execute_unanswered(&mut self, now: Instant) {
        self.execute_unconfirmed = true;
        self.version = None;
        self.state = None;
        self.result = None;
        self.refresh_state();
        self.set_step(now, Step::Updating);
    }

    /// A refusal that may only mean the request arrived twice: a client
    /// without a response cache executes a retransmitted (or duplicated)
    /// request again, and the copy is refused (4.00 to a second Package URI
    /// write while Downloading, 4.05 to a second Execute while Updating),
    /// while the first copy succeeded and its answer was lost or overtaken.
    /// Before it counts, the task looks at State and Update Result (a Read,
    /// or under S5 new observations); the same action refused twice in one
    /// attempt counts at once. Returns true when a look starts.
    fn check_refusal(&mut self, action: Action, code: ResponseCode) -> bool {
        let ambiguous =
            matches!(code, ResponseCode::BAD_REQUEST | ResponseCode::METHOD_NOT_ALLOWED | ResponseCode::NOT_ACCEPTABLE);
        if !ambiguous || self.refusal.is_some_and(|refusal| refusal.action == action) {
            return false;
        }
        self.refusal = Some(Refusal { action, code, looking: true, seen: None });
        self.refresh_state();
        true
    }

    /// What the look after a refusal of `refused` found (`state`: the State in
    /// the look's own answer).
    fn resolve_refusal(&mut self, now: Instant, refused: Action, code: ResponseCode, state: Option<State>) {
        let reject = Failure::Rejected { step: self.step, code };
        match refused {
            Action::WriteUri => match state {
                // The device fetches (or has fetched) what our earlier copy named.
                Some(State::Downloading | State::Downloaded) => self.delivered = true,
                // It took our earlier copy and its download failed since:
                // that failure (retryable or not) is the news, not the 4.00.
                _ if matches!(
                    self.result,
                    Some(
                        UpdateResult::NotEnoughFlash
                            | UpdateResult::OutOfRam
                            | UpdateResult::ConnectionLost
                            | UpdateResult::IntegrityCheckFailure
                            | UpdateResult::UnsupportedPackageType
                    )
                ) =>
                {
                    self.delivered = true
                }
                // Invalid URI, unsupported protocol: the refusal's reason.
                _ if self.result_failure().is_some() => self.fail(now, reject),
                // Idle: written once more; a second refusal counts.
                _ => {}
            },
            Action::Execute => match (state, self.result) {
                // The first copy was executed.
                (Some(State::Updating), _) | (Some(State::Idle), Some(UpdateResult::Success)) => {
                    self.execute_unconfirmed = false;
                    self.version = None;
                    self.set_step(now, Step::Updating);
                }
                // Still Downloaded: executed once more; a second refusal counts.
                (Some(State::Downloaded), _) => {}
                // A push whose last block did not arrive after all: send it again.
                (Some(State::Downloading), _) if self.push => {
                    self.refusal = None;
                    self.delivered = false;
                    self.next_block = self.last_block();
                    self.set_step(now, Step::Pushing);
                }
                // Not Downloaded after all (a stale report said so): wait for it.
                (Some(State::Downloading) | None, _) | (Some(State::Idle), Some(UpdateResult::Initial)) => {
                    self.refusal = None;
                    self.set_step(now, Step::Downloading);
                }
                _ => self.fail(now, reject),
            },
            Action::PushBlock(number) => match state {
                Some(State::Downloaded) => self.push_complete(number),
                // The device holds the block: go on with the next, or send the
                // last one once more.
                Some(State::Downloading) => {
                    let last = u64::from(number + 1) * u64::from(self.block_size()) >= self.config.image_size;
                    self.next_block = if last { number } else { number + 1 };
                }
                _ => self.fail(now, reject),
            },
            _ => {}
        }
    }

    /// The push block size on the wire: the configured one as a power of two
    /// in 16..=1024 (RFC 7959 block sizes).
    fn block_size(&self) -> u32 {
        self.config.block_size.clamp(16, 1024).next_power_of_two()
    }

    /// The number of the image's last push block.
    fn last_block(&self) -> u32 {
        let blocks = self.config.image_size.div_ceil(u64::from(self.block_size())).max(1);
        u32::try_from(blocks - 1).unwrap_or(u32::MAX)
    }

    /// The device acknowledged the last pushed block: it is Downloaded.
    fn push_complete(&mut self, number: u32) {
        self.delivered = true;
        self.next_block = number + 1;
        let total = self.config.image_size;
        self.events.push_back(TaskEvent::PushProgress { bytes: total, total });
        self.state = Some(State::Downloaded);
        self.result = Some(UpdateResult::Initial);
    }

    fn on_response(
        &mut self,
        now: Instant,
        id: RequestId,
        action: Action,
        code: ResponseCode,
        format: Option<ContentFormat>,
        payload: &[u8],
    ) {
        if code == ResponseCode::SERVICE_UNAVAILABLE {
            self.on_unavailable(now, action, None);
            return;
        }
        let step = self.step;
        match action {
            Action::ReadFirmware | Action::ReadVersion | Action::Observe(_) => {
                let path = match action {
                    Action::ReadFirmware => Path::instance(5, 0),
                    Action::ReadVersion => Path::resource(3, 0, 3),
                    Action::Observe(target) => target.path(),
                    _ => Path::ROOT,
                };
                if code != ResponseCode::CONTENT {
                    if action == Action::ReadVersion && self.config.target_version.is_none() {
                        // The version is informative only.
                        self.version = Some(Box::from(""));
                        return;
                    }
                    self.fail(now, Failure::Rejected { step, code });
                    return;
                }
                if let Action::Observe(target) = action {
                    self.observations[target.index()] = u32::try_from(id).unwrap_or(NO_ID);
                }
                let read_state = format.and_then(|format| self.apply_payload(now, format, &path, payload));
                if let Some(mut refusal) = self.refusal.filter(|refusal| refusal.looking) {
                    // The look after a refusal is complete with the Read's
                    // answer, or under S5 with both new observations' first answers.
                    if read_state.is_some() {
                        refusal.seen = read_state;
                    }
                    let both = Target::State.bit() | Target::Result.bit();
                    let complete = match action {
                        Action::ReadFirmware => true,
                        Action::Observe(Target::State | Target::Result) => {
                            !self.strategy().reads() && self.observed_mask() & both == both
                        }
                        _ => false,
                    };
                    refusal.looking = !complete;
                    self.refusal = Some(refusal);
                    if complete {
                        self.resolve_refusal(now, refusal.action, refusal.code, refusal.seen);
                    }
                    return;
                }
                if matches!(action, Action::ReadFirmware | Action::Observe(Target::State | Target::Instance)) {
                    self.download_state_seen(now, read_state);
                }
                let downloading = matches!(read_state, Some(State::Downloading | State::Downloaded));
                let looked = matches!(action, Action::ReadFirmware | Action::Observe(Target::State));
                if looked && downloading && !self.delivered && self.downloading_ours() {
                    // The device fetches (or has fetched) the URI an earlier
                    // write of ours named: writing again would only be refused.
                    // This answer itself must say so: what reports said before
                    // may be stale.
                    self.delivered = true;
                }
            }
            Action::Reset => match code {
                ResponseCode::CHANGED => {
                    self.reset_done = true;
                    self.state = Some(State::Idle);
                    self.result = Some(UpdateResult::Initial);
                }
                ResponseCode::METHOD_NOT_ALLOWED => {
                    // Updating: wait for it to finish, then look again.
                    self.need_read = true;
                    self.state = Some(State::Updating);
                }
                code => self.fail(now, Failure::Rejected { step, code }),
            },
            Action::WriteLifetime => self.lifetime_extended = true,
            Action::RestoreLifetime => self.lifetime_restored = true,
            Action::WriteUri => match code {
                ResponseCode::CHANGED => {
                    self.delivered = true;
                    // The write starts a new process (T1): earlier results are stale.
                    if self.result != Some(UpdateResult::Initial) {
                        self.result = None;
                    }
                }
                code if self.check_refusal(action, code) => {}
                // Anjay answers 4.00 with Update Result 9 for an unsupported scheme.
                code => {
                    self.need_read = true;
                    self.fail(now, Failure::Rejected { step, code });
                }
            },
            Action::PushBlock(number) => match code {
                ResponseCode::CONTINUE => {
                    self.next_block = number + 1;
                    // Progress in the block size actually sent.
                    let bytes = (u64::from(self.next_block) * u64::from(self.block_size())).min(self.config.image_size);
                    self.events.push_back(TaskEvent::PushProgress { bytes, total: self.config.image_size });
                }
                ResponseCode::CHANGED => self.push_complete(number),
                ResponseCode::REQUEST_ENTITY_INCOMPLETE if self.block_restarts < 3 => {
                    // The device lost the transfer (e.g. rebooted): start over.
                    self.block_restarts += 1;
                    self.next_block = 0;
                }
                ResponseCode::REQUEST_ENTITY_TOO_LARGE => {
                    self.fail(now, Failure::UpdateResult(UpdateResult::NotEnoughFlash))
                }
                code if self.check_refusal(action, code) => {}
                code => self.fail(now, Failure::Rejected { step, code }),
            },
            Action::Execute => match code {
                ResponseCode::CHANGED => {
                    self.execute_unconfirmed = false;
                    self.version = None;
                    self.state = Some(State::Updating);
                    self.result = Some(UpdateResult::Initial);
                    self.set_step(now, Step::Updating);
                }
                // 4.05 also when a stale report made the task believe the
                // device Downloaded: the look sends it back to waiting.
                code if self.check_refusal(action, code) => {}
                code => self.fail(now, Failure::Rejected { step, code }),
            },
        }
    }

    /// Applies what a payload says; returns the State it carried, if any.
    fn apply_payload(
        &mut self,
        _now: Instant,
        format: ContentFormat,
        requested: &Path,
        payload: &[u8],
    ) -> Option<State> {
        // What the payload says, gathered record by record (nothing is
        // allocated) and applied only if the whole payload decodes.
        let mut state = None;
        let mut result = None;
        let mut protocols = ProtocolSet::EMPTY;
        let mut protocol_records = false;
        let mut delivery = None;
        let mut version = None;
        let decoded =
            codec::decode_each(format, requested, payload, &Registry::builtin(), &DecodeOptions::default(), |record| {
                let path = record.path;
                if path == Path::resource(5, 0, 3) {
                    if let Some(code) = record.value.as_i64().and_then(State::from_code) {
                        state = Some(code);
                    }
                } else if path == Path::resource(5, 0, 5) {
                    if let Some(code) = record.value.as_i64() {
                        result = Some(UpdateResult::from_code(code));
                    }
                } else if path.starts_with(&Path::resource(5, 0, 8)) {
                    protocol_records = true;
                    if let Some(protocol) = record.value.as_i64().and_then(Protocol::from_code) {
                        protocols = protocols.with(protocol);
                    }
                } else if path == Path::resource(5, 0, 9) {
                    delivery = Some(record.value.as_i64().and_then(DeliveryMethod::from_code));
                } else if path == Path::resource(3, 0, 3) {
                    if let Value::String(text) = record.value {
                        version = Some(text);
                    }
                }
            });
        if decoded.is_err() {
            // Undecodable: treat as no information; the step deadline covers it.
            return None;
        }
        let state_seen = state.is_some() || result.is_some();
        if let Some(state) = state {
            self.state = Some(state);
        }
        if let Some(result) = result {
            self.result = Some(result);
        }
        if let Some(delivery) = delivery {
            self.delivery_method = delivery;
        }
        let saw_protocols =
            protocol_records || requested.starts_with(&Path::resource(5, 0, 8)) || *requested == Path::instance(5, 0);
        if saw_protocols {
            // Absent /5/0/8: only CoAP is safe (object5.md §5).
            self.protocols = Some(if protocols.is_empty() && !protocol_records {
                ProtocolSet::EMPTY.with(Protocol::Coap)
            } else {
                protocols
            });
        }
        // A version counts only once the update is over: one sent along with
        // Idle + Update Result 1, or read on its own while verifying. An earlier
        // one proves nothing: a device rebooting mid-install still runs the old
        // image, and a Send from before the update, resent late by CoAP,
        // carries the old version with Idle and Update Result 0. Read on its
        // own, it also counts where the task checks whether an Idle device
        // with Update Result 1 already runs the target (while inspecting, and
        // while watching for a late success).
        if let Some(version) = version {
            let finished = self.state == Some(State::Idle) && self.result == Some(UpdateResult::Success);
            let counts = if state_seen {
                finished
            } else {
                self.step == Step::Verifying || (finished && (self.step == Step::Inspecting || self.watching))
            };
            if counts {
                self.version = Some(Box::from(version.as_ref()));
            }
        }
        if state_seen {
            if let (Some(state), Some(result)) = (self.state, self.result) {
                self.events.push_back(TaskEvent::StateSeen { state, result });
            }
            if let Some(deadline) = self.wait_until.as_mut() {
                *deadline = self.last_now + self.config.step_timeout;
            }
        }
        state
    }

    /// Fires due deadlines: the upgrade timeout (U1), the per-step fallback
    /// (B7), and requests the transport never answered.
    ///
    /// # Errors
    /// [`TaskError::TimeWentBackwards`].
    pub fn handle_timeout(&mut self, now: Instant) -> Result<(), TaskError> {
        self.tick(now)?;
        if self.outcome.is_some() {
            // Watching for a late success: its look's request, and the watch's end.
            if self.in_flight.is_some_and(|(_, _, sent)| now >= sent + self.config.request_timeout) {
                self.in_flight = None;
            }
            if self.watching && now >= self.deadline {
                self.watching = false;
                self.late_look = false;
            }
            return Ok(());
        }
        if self.step == Step::NotStarted {
            return Ok(());
        }
        if now >= self.deadline {
            let step = self.step;
            let no_send_received = self.strategy() == Strategy::Send && !self.seen_send;
            self.end_failed(now, Failure::Timeout { step, no_send_received });
            return Ok(());
        }
        if let Some((_, action, sent)) = self.in_flight {
            if now >= sent + self.config.request_timeout {
                // The transport never answered, and CoAP has given up on it by
                // now: treat it as a failed downlink.
                self.in_flight = None;
                self.on_downlink_failure(now, action);
            }
        }
        if self.wait_until.is_some_and(|at| now >= at) {
            self.wait_until = Some(now + self.config.step_timeout);
            match self.strategy() {
                // S5 never reads: observe again, whose answer carries the value.
                Strategy::ObserveOnly => self.refresh_state(),
                // S4 reads only what Sends lack: a device that never sent waits.
                Strategy::Send if !self.seen_send && self.step != Step::Inspecting => {}
                _ => self.need_read = true,
            }
        }
        self.advance(now);
        Ok(())
    }

    /// When [`handle_timeout`](Self::handle_timeout) must run next.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let in_flight = self.in_flight.map(|(_, _, sent)| sent + self.config.request_timeout);
        if self.outcome.is_some() {
            let until = self.watching.then_some(self.deadline)?;
            return Some(in_flight.map_or(until, |at| at.min(until)));
        }
        if self.step == Step::NotStarted {
            return None;
        }
        let mut next = self.deadline;
        let busy = (self.busy_until > self.last_now).then_some(self.busy_until);
        for at in [self.wait_until, in_flight, busy].into_iter().flatten() {
            next = next.min(at);
        }
        Some(next)
    }

    // ----- the state machine -----

    /// Moves through the steps as far as what is known allows.
    fn advance(&mut self, now: Instant) {
        for _ in 0..16 {
            if self.outcome.is_some() {
                return;
            }
            let before = self.step;
            self.advance_once(now);
            if self.step == before {
                return;
            }
        }
    }

    /// True while inspecting an Idle device with Update Result 1 whose
    /// version must be known before it is upgraded (a target is set).
    fn needs_version(&self) -> bool {
        self.state == Some(State::Idle)
            && self.result == Some(UpdateResult::Success)
            && self.config.target_version.is_some()
            && self.version.is_none()
    }

    fn needs_inspection(&self) -> bool {
        let check = self.config.check_delivery_and_protocol || self.config.delivery == Delivery::Auto;
        self.state.is_none()
            || self.result.is_none()
            || (check && (self.protocols.is_none() || self.delivery_method.is_none()))
    }

    fn advance_once(&mut self, now: Instant) {
        match self.step {
            Step::NotStarted | Step::Finished | Step::WaitingForDevice => {}
            Step::Inspecting => {
                if self.needs_inspection() {
                    return;
                }
                if self.state == Some(State::Updating) {
                    // An earlier process is installing: wait for it to end.
                    return;
                }
                if self.state == Some(State::Idle) && self.result == Some(UpdateResult::Success) {
                    // Update Result 1 is no proof the device is free: an
                    // earlier attempt's update (its answers lost), or someone
                    // else's, may have installed the target already. Verify
                    // before downloading again: never install twice.
                    match (&self.config.target_version, &self.version) {
                        (Some(_), None) => return, // reading /3/0/3
                        (Some(expected), Some(reported)) if **expected == **reported => {
                            let version = Some(String::from(&**reported));
                            self.finish(now, Outcome::Succeeded { version });
                            return;
                        }
                        (Some(expected), Some(reported)) if self.execute_sent => {
                            let (expected, reported) = (expected.clone(), String::from(&**reported));
                            self.finish(now, Outcome::Failed(Failure::VersionMismatch { expected, reported }));
                            return;
                        }
                        (None, _) if self.execute_sent => {
                            self.set_step(now, Step::Verifying);
                            return;
                        }
                        // Another version, and nothing of ours applied: upgrade.
                        _ => {}
                    }
                }
                if let Some(failure) = self.choose_delivery() {
                    self.fail(now, failure);
                    return;
                }
                let busy = self.state != Some(State::Idle)
                    || !matches!(self.result, Some(UpdateResult::Initial | UpdateResult::Success));
                if busy && !self.reset_done {
                    self.set_step(now, Step::Resetting);
                } else {
                    self.set_step(now, Step::ExtendingLifetime);
                }
            }
            Step::Resetting => {
                if self.reset_done {
                    self.set_step(now, Step::ExtendingLifetime);
                }
            }
            Step::ExtendingLifetime => {
                if !self.config.extend_lifetime || self.lifetime_extended {
                    self.want_observe = self.observe_targets();
                    self.set_step(now, Step::Observing);
                }
            }
            Step::Observing => {
                if self.want_observe & !self.observed_mask() == 0 {
                    self.set_step(now, if self.push { Step::Pushing } else { Step::WritingUri });
                }
            }
            Step::WritingUri | Step::Pushing => {
                // The last block's answer may be lost (CoAP still resends
                // it) while a notification or Send already says Downloaded:
                // that is the answer.
                let last = self.last_block();
                let last_in_flight = self.in_flight.is_some_and(|(_, action, _)| action == Action::PushBlock(last));
                if self.step == Step::Pushing
                    && !self.delivered
                    && last_in_flight
                    && self.state == Some(State::Downloaded)
                {
                    self.in_flight = None;
                    self.push_complete(last);
                }
                if self.delivered {
                    self.set_step(now, Step::Downloading);
                }
            }
            Step::Downloading => self.check_download(now),
            Step::HoldingExecute => {
                if self.execute_released {
                    self.set_step(now, Step::Executing);
                }
            }
            Step::Executing => {}
            Step::Updating => self.check_update(now),
            Step::Verifying => self.verify(now),
        }
    }

    /// True when, while this task writes the Package URI and has written it
    /// before, the device shows a pull in progress or done. After the reset at
    /// the start (a busy device is reset first) only a URI this task wrote can
    /// have started it. Only an answer to the task's own look (a Read, or under
    /// S5 a new Observe of State) is trusted for this: a notification or a Send
    /// may be a stale one, delivered late.
    fn downloading_ours(&self) -> bool {
        self.step == Step::WritingUri
            && !self.push
            && self.uri_writes > 0
            && matches!(self.state, Some(State::Downloading | State::Downloaded))
    }

    fn observed_mask(&self) -> u8 {
        Target::ALL.into_iter().filter(|t| self.observations[t.index()] != NO_ID).fold(0, |m, t| m | t.bit())
    }

    fn observe_targets(&self) -> u8 {
        match self.strategy() {
            Strategy::ObserveResources | Strategy::ObserveOnly => Target::State.bit() | Target::Result.bit(),
            Strategy::ObserveInstance => Target::Instance.bit(),
            Strategy::Reads | Strategy::Send => 0,
        }
    }

    /// U2, U3, U10: picks pull or push and checks the device supports it.
    fn choose_delivery(&mut self) -> Option<Failure> {
        let method = self.delivery_method.unwrap_or(DeliveryMethod::Both);
        let protocols = self.protocols.unwrap_or(ProtocolSet::EMPTY.with(Protocol::Coap));
        let protocol_ok = protocols.contains(self.config.protocol);
        let check = self.config.check_delivery_and_protocol;
        let wanted = self.config.delivery;
        self.push = match wanted {
            Delivery::Push => {
                if check && !method.allows_push() {
                    return Some(Failure::UnsupportedDeliveryMethod { wanted, device: method });
                }
                true
            }
            Delivery::Pull => {
                if check && !method.allows_pull() {
                    return Some(Failure::UnsupportedDeliveryMethod { wanted, device: method });
                }
                if check && !protocol_ok {
                    return Some(Failure::UnsupportedProtocol { wanted: self.config.protocol, device: protocols });
                }
                false
            }
            Delivery::Auto => {
                if method.allows_pull() && protocol_ok {
                    false
                } else if method.allows_push() {
                    true
                } else {
                    return Some(Failure::UnsupportedProtocol { wanted: self.config.protocol, device: protocols });
                }
            }
        };
        if !self.push {
            let uri = self.config.package_uri();
            let scheme_ok = uri
                .split_once("://")
                .is_some_and(|(scheme, _)| scheme.eq_ignore_ascii_case(self.config.protocol.scheme()));
            if uri.len() > 255 || !scheme_ok {
                return Some(Failure::InvalidPackageUri);
            }
        }
        None
    }

    fn result_failure(&self) -> Option<Failure> {
        match self.result? {
            UpdateResult::Initial | UpdateResult::Success | UpdateResult::Deferred => None,
            other => Some(Failure::UpdateResult(other)),
        }
    }

    fn check_download(&mut self, now: Instant) {
        match self.state {
            Some(State::Downloaded) if self.result != Some(UpdateResult::UpdateFailed) => {
                if self.config.execute_immediately || self.execute_released {
                    self.set_step(now, Step::Executing);
                } else {
                    self.events.push_back(TaskEvent::ExecuteHeld);
                    self.set_step(now, Step::HoldingExecute);
                }
            }
            // Automatic Upgrade at Download (1.2): the device went on by itself.
            Some(State::Updating) => {
                self.version = None;
                self.set_step(now, Step::Updating);
            }
            _ => {
                if let Some(failure) = self.result_failure() {
                    self.fail(now, failure);
                }
            }
        }
    }

    fn check_update(&mut self, now: Instant) {
        match (self.state, self.result) {
            (Some(State::Idle), Some(UpdateResult::Success)) => self.set_step(now, Step::Verifying),
            // The unanswered Execute never arrived: send it again.
            (Some(State::Downloaded), Some(UpdateResult::Initial)) if self.execute_unconfirmed => {
                self.execute_unconfirmed = false;
                self.set_step(now, Step::Executing);
            }
            _ => {
                if let Some(failure) = self.result_failure() {
                    self.fail(now, failure);
                }
            }
        }
    }

    fn verify(&mut self, now: Instant) {
        let Some(reported) = self.version.as_deref().map(String::from) else { return };
        match &self.config.target_version {
            Some(expected) if *expected != reported => {
                let expected = expected.clone();
                self.finish(now, Outcome::Failed(Failure::VersionMismatch { expected, reported }));
            }
            _ => {
                let version = (!reported.is_empty()).then_some(reported);
                self.finish(now, Outcome::Succeeded { version });
            }
        }
    }

    // ----- outputs -----

    fn reachable(&self) -> bool {
        self.registered && (!self.queue_mode || self.last_now <= self.awake_until)
    }

    /// The next request the state machine wants, if any.
    fn next_action(&self) -> Option<Action> {
        let reads = self.strategy().reads();
        let observe_missing = |targets: u8| {
            Target::ALL.into_iter().find(|t| targets & t.bit() != 0 && self.observations[t.index()] == NO_ID)
        };
        let state_and_result = Target::State.bit() | Target::Result.bit();
        if self.outcome.is_some() {
            if self.cancel_reset {
                return Some(Action::Reset);
            }
            let restore = self.lifetime_extended && !self.lifetime_restored && self.config.extend_lifetime;
            if restore {
                return Some(Action::RestoreLifetime);
            }
            if !(self.late_look && self.watching) {
                return None;
            }
            // The look of a watch for a late success: State and Update
            // Result, then the version of an Idle device with Update Result 1.
            let finished = self.state == Some(State::Idle) && self.result == Some(UpdateResult::Success);
            let version = finished && self.config.target_version.is_some() && self.version.is_none();
            return if reads {
                if self.need_read { Some(Action::ReadFirmware) } else { version.then_some(Action::ReadVersion) }
            } else {
                observe_missing(state_and_result | if version { Target::Version.bit() } else { 0 }).map(Action::Observe)
            };
        }
        if self.resume.is_some() {
            return None;
        }
        if self.refusal.is_some_and(|refusal| refusal.looking) {
            // The look after a refusal (`check_refusal`): a Read, or under S5
            // new observations, whose first answers carry the values.
            return if reads {
                self.need_read.then_some(Action::ReadFirmware)
            } else {
                observe_missing(state_and_result).map(Action::Observe)
            };
        }
        match self.step {
            Step::Inspecting => {
                let inspect = self.needs_inspection();
                if !inspect && self.needs_version() {
                    return if reads {
                        Some(Action::ReadVersion)
                    } else {
                        observe_missing(Target::Version.bit()).map(Action::Observe)
                    };
                }
                if !inspect && self.state != Some(State::Updating) {
                    return None;
                }
                if reads {
                    return (self.needs_inspection() || self.need_read).then_some(Action::ReadFirmware);
                }
                // S5: an Observe's first answer carries the value.
                let mut wanted = Target::State.bit() | Target::Result.bit();
                if self.config.check_delivery_and_protocol || self.config.delivery == Delivery::Auto {
                    wanted |= Target::Protocols.bit() | Target::Delivery.bit();
                }
                observe_missing(wanted).map(Action::Observe)
            }
            Step::Resetting => (!self.reset_done).then_some(Action::Reset),
            Step::ExtendingLifetime => Some(Action::WriteLifetime),
            Step::Observing => observe_missing(self.want_observe).map(Action::Observe),
            Step::WritingUri => (!self.delivered).then_some(Action::WriteUri),
            Step::Pushing => (!self.delivered).then_some(Action::PushBlock(self.next_block)),
            Step::Executing => Some(Action::Execute),
            Step::Downloading | Step::Updating => {
                // U11 again after a re-registration mid-download.
                if self.step == Step::Downloading && self.config.extend_lifetime && !self.lifetime_extended {
                    return Some(Action::WriteLifetime);
                }
                if let Some(target) = observe_missing(self.want_observe) {
                    return Some(Action::Observe(target));
                }
                (reads && self.need_read).then_some(Action::ReadFirmware)
            }
            Step::Verifying => {
                if self.version.is_some() {
                    return None;
                }
                if reads { Some(Action::ReadVersion) } else { Some(Action::Observe(Target::Version)) }
            }
            Step::NotStarted | Step::WaitingForDevice | Step::HoldingExecute | Step::Finished => None,
        }
    }

    fn request_for(&self, action: Action) -> RequestKind {
        let text = |s: &str| Bytes::copy_from_slice(s.as_bytes());
        let write = |path: Path, payload: Bytes| {
            RequestKind::Operation(Operation::Write { path, format: ContentFormat::Text, payload })
        };
        match action {
            Action::ReadFirmware => {
                RequestKind::Operation(Operation::Read { path: Path::instance(5, 0), accept: None })
            }
            Action::ReadVersion => {
                RequestKind::Operation(Operation::Read { path: Path::resource(3, 0, 3), accept: None })
            }
            Action::Reset => write(Path::resource(5, 0, 1), Bytes::new()),
            Action::WriteLifetime | Action::RestoreLifetime => {
                let seconds = if action == Action::WriteLifetime {
                    self.config.extended_lifetime.as_secs()
                } else {
                    u64::from(self.original_lifetime.max(1))
                };
                let mut digits = itoa(seconds);
                write(Path::resource(1, self.server_instance, 1), Bytes::copy_from_slice(digits.as_bytes_mut()))
            }
            Action::Observe(target) => RequestKind::Operation(Operation::Observe { path: target.path(), accept: None }),
            Action::WriteUri => write(Path::resource(5, 0, 1), text(&self.config.package_uri())),
            Action::PushBlock(number) => {
                let size = self.block_size();
                let offset = u64::from(number) * u64::from(size);
                let more = offset + u64::from(size) < self.config.image_size;
                RequestKind::PackageBlock { block: Block { number, more, size }, total_size: self.config.image_size }
            }
            Action::Execute => RequestKind::Operation(Operation::Execute { path: Path::resource(5, 0, 2) }),
        }
    }

    /// The next event to report or request to send. Events come first; at most
    /// one request is in flight; queue-mode devices get requests only within
    /// the window after their uplinks.
    pub fn poll_output(&mut self) -> Option<TaskOutput> {
        if let Some(event) = self.events.pop_front() {
            return Some(TaskOutput::Event(event));
        }
        // The event buffer is kept between inputs, so that handling one does
        // not allocate; a finished task gives it back.
        if self.step == Step::Finished && self.events.capacity() > 0 {
            self.events = VecDeque::new();
        }
        if self.in_flight.is_some() || !self.reachable() || self.step == Step::NotStarted {
            return None;
        }
        // 5.03: the device asked to wait.
        if self.last_now < self.busy_until {
            return None;
        }
        let action = self.next_action()?;
        let id = self.next_id;
        self.next_id += 1;
        let kind = self.request_for(action);
        match action {
            Action::ReadFirmware | Action::ReadVersion => self.need_read = false,
            Action::Observe(target) => {
                self.observations[target.index()] = NO_ID;
                self.want_observe |= target.bit();
            }
            Action::Reset if self.outcome.is_some() => self.cancel_reset = false,
            Action::RestoreLifetime => self.lifetime_restored = true,
            Action::WriteUri => self.uri_writes = self.uri_writes.saturating_add(1),
            Action::Execute => self.execute_sent = true,
            _ => {}
        }
        // Requests sent after the task finished are fire-and-forget, but for
        // the looks of a watch for a late success.
        let look = matches!(action, Action::ReadFirmware | Action::ReadVersion | Action::Observe(_));
        if self.outcome.is_none() || (look && self.watching) {
            self.in_flight = Some((u32::try_from(id).unwrap_or(u32::MAX), action, self.last_now));
        }
        Some(TaskOutput::Request(TaskRequest { id, kind }))
    }
}

/// Decimal digits of `n` without allocating.
struct Digits {
    bytes: [u8; 20],
    start: usize,
}

impl Digits {
    fn as_bytes_mut(&mut self) -> &[u8] {
        &self.bytes[self.start..]
    }
}

fn itoa(mut n: u64) -> Digits {
    let mut digits = Digits { bytes: [0; 20], start: 20 };
    loop {
        digits.start -= 1;
        digits.bytes[digits.start] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            return digits;
        }
    }
}
