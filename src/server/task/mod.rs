//! One device's upgrade task, sans-I/O.
//!
//! The files, by concept: [`io`] the inputs and outputs, `facts` what payloads
//! say, `requests` what a request is for and what it becomes, `timers` the
//! deadlines, `table` the phases and the one transition table, `snapshot` the
//! serde form and its versions.

use alloc::boxed::Box;
use alloc::collections::VecDeque;
use alloc::sync::Arc;

use super::config::{Strategy, UpgradeConfig};
use super::outcome::{Outcome, Step, TaskEvent};
use crate::model::{DeliveryMethod, Instant, ProtocolSet, RequestId, ResponseCode, State, UpdateResult};

mod facts;
mod io;
mod requests;
#[cfg(feature = "serde")]
mod snapshot;
mod table;
mod timers;

use facts::Facts;
pub use io::{CachedModel, RequestKind, TaskError, TaskInput, TaskOutput, TaskRequest};
use requests::{Action, InFlight, Observations};
use table::{Event, Phase};
use timers::{Timer, Timers};

/// The device's link as the task sees it: its registration, and the lifetime
/// the task wrote.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
struct Link {
    registered: bool,
    queue_mode: bool,
    /// The Server Object instance whose Lifetime the task writes (`/1/x/1`).
    server_instance: u16,
    /// The Lifetime of the registration before the task extended it.
    original_lifetime: u32,
    lifetime: Lifetime,
    /// The last exchange was lost and none answered since: one more loss is
    /// a downlink failure.
    lost_one: bool,
}

/// U11: the Lifetime the task wrote in this registration.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
enum Lifetime {
    /// The device's own.
    #[default]
    Original,
    /// Extended (or given up on: the upgrade does not depend on it).
    Extended,
    /// Restored after the upgrade.
    Restored,
}

/// What the task knows of the device's /5/0 and `/3/0/3`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
struct Known {
    state: Option<State>,
    result: Option<UpdateResult>,
    protocols: Option<ProtocolSet>,
    delivery: Option<DeliveryMethod>,
    /// `/3/0/3` as last counted (a boxed str: the task stays small).
    version: Option<Box<str>>,
}

/// What one attempt decided and saw; a retry starts a new one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
struct Attempt {
    /// 1 for the first.
    number: u32,
    /// U2: the image is pushed (decided while inspecting).
    push: bool,
    /// U12: the operator released the Execute.
    released: bool,
    /// The device was seen Downloading or Downloaded in an answer or a
    /// notification.
    seen_downloading: bool,
    /// The strategy owes a Read of `/5/0` (S1 and S2 when the device speaks,
    /// B7 at a step deadline, a look after a refusal).
    read_owed: bool,
    /// The last action refused and looked at: refused again, it counts at once.
    refused: Option<Action>,
}

impl Attempt {
    fn first() -> Attempt {
        Attempt { number: 1, push: false, released: false, seen_downloading: false, read_owed: false, refused: None }
    }

    fn next(self) -> Attempt {
        Attempt { number: self.number + 1, read_owed: true, ..Attempt::first() }
    }
}

/// What happened over all attempts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
struct History {
    /// An Execute was sent: the device may run the new image.
    execute_sent: bool,
    /// Package URI writes sent (saturating).
    uri_writes: u8,
    /// A Send arrived (S4).
    seen_send: bool,
    /// A Send with State or Update Result arrived (S4; C6 falls back to
    /// reads without one).
    #[cfg_attr(feature = "serde", serde(default))]
    sent_state: bool,
    /// C6: the device refused what the configured strategy needs; the task
    /// reads (S1) from then on.
    #[cfg_attr(feature = "serde", serde(default))]
    fell_back: bool,
}

/// One device's firmware upgrade: strategy × delivery × protocol, timeout,
/// resume, retries and verification (features.md U1–U12, S1–S5, B1, B4,
/// B7–B10), sans-I/O.
///
/// The contract of DESIGN.md:
/// - inputs: [`handle`](Self::handle) takes one [`TaskInput`] (operator
///   commands, registrations, answers, notifications, Sends, transport
///   failures); [`handle_timeout`](Self::handle_timeout) fires due deadlines.
///   [`start`](Self::start), [`cancel`](Self::cancel) and
///   [`release_execute`](Self::release_execute) are the commands' shorthands;
/// - outputs: [`poll_output`](Self::poll_output) (drain it after every input:
///   events first, then at most one request in flight to the device) and
///   [`poll_timeout`](Self::poll_timeout).
///
/// Time comes with every input and must not go backwards (a misuse error,
/// never clamped); a spurious `handle_timeout` is harmless. Device misbehaviour
/// never panics and never hangs: it ends in [`Outcome::Failed`] with a precise
/// [`Failure`](super::Failure). The whole task serializes with serde (with a
/// format number; snapshots of earlier versions still load); a task restored
/// from a snapshot taken after any step continues exactly as the original.
///
/// Inside, the task is a phase with its own data ([`Step`] names them) and one
/// transition table that matches (phase, event).
#[derive(Debug, Clone, PartialEq)]
pub struct UpgradeTask {
    config: Arc<UpgradeConfig>,
    phase: Phase,
    timers: Timers,
    last_now: Instant,
    link: Link,
    known: Known,
    attempt: Attempt,
    history: History,
    observations: Observations,
    next_id: RequestId,
    in_flight: Option<InFlight>,
    /// U7: the action a downlink failure stopped, resumed at the next uplink.
    resume: Option<Action>,
    /// U6: the server's cache, used at the start.
    cached: Option<Box<CachedModel>>,
    outcome: Option<Box<Outcome>>,
    events: VecDeque<TaskEvent>,
}

impl UpgradeTask {
    /// A task for one device; nothing happens until [`TaskInput::Start`].
    pub fn new(config: Arc<UpgradeConfig>) -> UpgradeTask {
        UpgradeTask {
            config,
            phase: Phase::NotStarted,
            timers: Timers::default(),
            last_now: Instant::ZERO,
            link: Link::default(),
            known: Known::default(),
            attempt: Attempt::first(),
            history: History::default(),
            observations: Observations::default(),
            next_id: 1,
            in_flight: None,
            resume: None,
            cached: None,
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
        self.phase.step()
    }

    /// The outcome, once finished.
    pub fn outcome(&self) -> Option<&Outcome> {
        self.outcome.as_deref()
    }

    /// The attempt under way (1 for the first).
    pub fn attempt(&self) -> u32 {
        self.attempt.number
    }

    /// State and Update Result as last seen.
    pub fn device_state(&self) -> (Option<State>, Option<UpdateResult>) {
        (self.known.state, self.known.result)
    }

    /// True while a failed task watches its device for a late success (for
    /// one more upgrade timeout after the failure; [`poll_timeout`](Self::poll_timeout)
    /// says when the watch ends).
    pub fn watching(&self) -> bool {
        matches!(self.phase, Phase::Finished { watch: Some(_), .. })
    }

    /// The strategy in effect: the configured one (S1 with U9
    /// `use_observe` is S2), or [`Strategy::Reads`] once the task fell back
    /// (C6, [`UpgradeConfig::fallback`]) because the device refused what the
    /// configured strategy needs. A task that finished tells the strategy it
    /// finished with; a fallback is also reported as
    /// [`TaskEvent::StrategyChanged`].
    pub fn strategy_used(&self) -> Strategy {
        self.strategy()
    }

    /// True when the task fell back to reads (C6).
    pub fn fell_back(&self) -> bool {
        self.history.fell_back
    }

    fn strategy(&self) -> Strategy {
        if self.history.fell_back {
            return Strategy::Reads;
        }
        match self.config.strategy {
            // U9: firmwareUpdateUseObserve turns S1 into S2.
            Strategy::Reads if self.config.use_observe => Strategy::ObserveResources,
            other => other,
        }
    }

    fn tick(&mut self, now: Instant) -> Result<(), TaskError> {
        if now < self.last_now {
            return Err(TaskError::TimeWentBackwards);
        }
        self.last_now = now;
        Ok(())
    }

    // ----- commands -----

    /// [`TaskInput::Start`] at `now`.
    ///
    /// # Errors
    /// [`TaskError::TimeWentBackwards`].
    pub fn start(&mut self, now: Instant) -> Result<(), TaskError> {
        self.handle(now, TaskInput::Start)
    }

    /// [`TaskInput::Cancel`] at `now`.
    ///
    /// # Errors
    /// [`TaskError::TimeWentBackwards`].
    pub fn cancel(&mut self, now: Instant) -> Result<(), TaskError> {
        self.handle(now, TaskInput::Cancel)
    }

    /// [`TaskInput::ReleaseExecute`] at `now`.
    ///
    /// # Errors
    /// [`TaskError::TimeWentBackwards`].
    pub fn release_execute(&mut self, now: Instant) -> Result<(), TaskError> {
        self.handle(now, TaskInput::ReleaseExecute)
    }

    // ----- inputs -----

    /// One input: an operator command, or something from the device or the
    /// transport.
    ///
    /// # Errors
    /// [`TaskError`] for time going backwards or a response to a request this
    /// task never issued; stale and duplicate responses are ignored.
    pub fn handle(&mut self, now: Instant, input: TaskInput<'_>) -> Result<(), TaskError> {
        self.tick(now)?;
        let event = match input {
            TaskInput::Start => Event::Start,
            TaskInput::Cancel => Event::Cancel,
            TaskInput::ReleaseExecute => Event::ReleaseExecute,
            TaskInput::Registered(registration) => {
                let server_instance = registration
                    .objects
                    .iter()
                    .find(|o| o.object_id == 1)
                    .and_then(|o| o.instances.first().copied())
                    .unwrap_or(0);
                if self.link.lifetime != Lifetime::Extended {
                    self.link.original_lifetime = registration.lifetime;
                }
                self.link = Link {
                    registered: true,
                    queue_mode: registration.queue_mode,
                    server_instance,
                    lifetime: Lifetime::Original,
                    ..self.link
                };
                // A new registration voids observations and the lifetime we wrote.
                self.observations.void_all();
                // It also ends the device's exchanges (a server drops them, a
                // rebooted device forgot them): the request in flight will
                // never be answered, so it is settled now, not at its timeout.
                Event::Registered { dropped: self.take_in_flight().map(|f| f.action) }
            }
            TaskInput::RegistrationUpdated => {
                self.link.registered = true;
                Event::RegistrationUpdated
            }
            TaskInput::Deregistered => {
                // A device may de-register before flashing: keep the task.
                self.link.registered = false;
                self.observations.void_all();
                return Ok(());
            }
            TaskInput::Response { id, code, format, payload } => {
                self.check_id(id)?;
                self.awake(now);
                let Some(action) = self.answered(id) else { return Ok(()) };
                if code == ResponseCode::SERVICE_UNAVAILABLE {
                    Event::Busy { action, max_age: None }
                } else {
                    let requested = action.looked_at();
                    let mut facts = Facts::default();
                    let decoded = match (requested, format) {
                        (Some(path), Some(format)) if code == ResponseCode::CONTENT => {
                            facts::decode_into(format, &path, payload, &mut facts)
                        }
                        _ => false,
                    };
                    self.on(now, Event::Answer { id, action, code, facts: decoded.then_some(&facts) });
                    return Ok(());
                }
            }
            TaskInput::ServiceUnavailable { id, max_age } => {
                self.check_id(id)?;
                self.awake(now);
                let Some(action) = self.answered(id) else { return Ok(()) };
                Event::Busy { action, max_age }
            }
            TaskInput::TransportFailure { id } => {
                self.check_id(id)?;
                if self.in_flight.is_none_or(|f| u64::from(f.id) != id) {
                    return Ok(());
                }
                let Some(lost) = self.take_in_flight() else { return Ok(()) };
                Event::Lost { action: lost.action, unanswered: false }
            }
            TaskInput::Notification { observation, format, payload } => {
                self.awake(now);
                let Some(target) = self.observations.target_of(observation) else { return Ok(()) };
                let mut facts = Facts::default();
                let decoded = facts::decode_into(format, &target.path(), payload, &mut facts);
                self.on(now, Event::Notification { facts: decoded.then_some(&facts) });
                return Ok(());
            }
            TaskInput::Send { format, payload } => {
                self.history.seen_send = true;
                let mut facts = Facts::default();
                let decoded = facts::decode_into(format, &crate::model::Path::ROOT, payload, &mut facts);
                if decoded && facts.state_seen() {
                    self.history.sent_state = true;
                }
                self.on(now, Event::Send { facts: decoded.then_some(&facts) });
                return Ok(());
            }
        };
        self.on(now, event);
        Ok(())
    }

    fn check_id(&self, id: RequestId) -> Result<(), TaskError> {
        if id >= self.next_id || id == 0 {
            return Err(TaskError::UnknownRequest(id));
        }
        Ok(())
    }

    /// The action of the request in flight when `id` is it: it is answered
    /// (a stale, duplicate or late response answers nothing).
    fn answered(&mut self, id: RequestId) -> Option<Action> {
        self.in_flight.filter(|f| u64::from(f.id) == id)?;
        self.link.lost_one = false;
        self.take_in_flight().map(|f| f.action)
    }

    fn take_in_flight(&mut self) -> Option<InFlight> {
        self.timers.stop(Timer::Request);
        self.in_flight.take()
    }

    /// The device spoke: a queue-mode device listens for a while.
    fn awake(&mut self, now: Instant) {
        let until = self.timers.get(Timer::Window).unwrap_or(Instant::ZERO);
        self.timers.set(Timer::Window, until.max(now + self.config.queue_window));
    }

    /// Fires due deadlines: the upgrade timeout (U1), the per-step fallback
    /// (B7), requests the transport never answered, the end of a wait a
    /// device asked for (5.03) and of a queue-mode device's window.
    ///
    /// # Errors
    /// [`TaskError::TimeWentBackwards`].
    pub fn handle_timeout(&mut self, now: Instant) -> Result<(), TaskError> {
        self.tick(now)?;
        for timer in Timer::ALL {
            // Checked one by one: a timer that fires may stop or move the next.
            if !self.timers.is_due(timer, now) {
                continue;
            }
            self.timers.stop(timer);
            let event = match timer {
                // The transport never answered, and CoAP has given up on it by now.
                Timer::Request => match self.in_flight.take() {
                    Some(lost) => Event::Lost { action: lost.action, unanswered: true },
                    None => continue,
                },
                timer => Event::Timer(timer),
            };
            self.on(now, event);
        }
        Ok(())
    }

    /// When [`handle_timeout`](Self::handle_timeout) must run next.
    pub fn poll_timeout(&self) -> Option<Instant> {
        match self.phase {
            Phase::NotStarted | Phase::Finished { watch: None, .. } => None,
            Phase::Finished { watch: Some(_), .. } => self.timers.earliest(&[Timer::Upgrade, Timer::Request]),
            _ => {
                let mut next = self.timers.earliest(&[Timer::Upgrade, Timer::Step, Timer::Request]);
                if let Some(busy) = self.timers.get(Timer::Busy).filter(|at| *at > self.last_now) {
                    next = Some(next.map_or(busy, |at| at.min(busy)));
                }
                if let Some(closes) = self.timers.fires_at(Timer::Window).filter(|_| self.link.queue_mode) {
                    next = Some(next.map_or(closes, |at| at.min(closes)));
                }
                next
            }
        }
    }

    // ----- outputs -----

    fn reachable(&self) -> bool {
        self.link.registered
            && (!self.link.queue_mode || self.timers.get(Timer::Window).is_some_and(|until| self.last_now <= until))
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
        if matches!(self.phase, Phase::Finished { .. }) && self.events.capacity() > 0 {
            self.events = VecDeque::new();
        }
        if self.in_flight.is_some() || !self.reachable() || matches!(self.phase, Phase::NotStarted) {
            return None;
        }
        // 5.03: the device asked to wait.
        if self.timers.get(Timer::Busy).is_some_and(|at| self.last_now < at) {
            return None;
        }
        let action = self.wanted()?;
        let id = self.next_id;
        self.next_id += 1;
        let kind = requests::request_for(&self.config, action, self.link.original_lifetime, self.link.server_instance);
        self.sent(id, action);
        Some(TaskOutput::Request(TaskRequest { id, kind }))
    }
}
