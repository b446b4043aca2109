//! The upgrade task's phases and its transition table: one `match` on
//! (phase, event), each arm naming the features.md row (or object5.md rule)
//! it implements.
//!
//! Every input becomes one [`Event`]. After it, the table is asked once more
//! with [`Event::Check`] for as long as the phase moves: a phase whose exit
//! condition already holds (Downloaded seen while writing the URI, say) moves
//! on at once. That settling ends by construction: checks only move forward
//! through the steps, or back to a phase whose check cannot move (a retry's
//! inspection, whose State is unknown; an Execute, which waits for its answer).

use alloc::boxed::Box;
use alloc::string::String;
use core::time::Duration;

use super::facts::Facts;
use super::requests::{self, Action, STATE_AND_RESULT, Target};
use super::timers::Timer;
use super::{Lifetime, UpgradeTask};
use crate::model::{DeliveryMethod, Instant, Protocol, ProtocolSet, RequestId, ResponseCode, State, UpdateResult};
use crate::server::config::{Delivery, Strategy};
use crate::server::outcome::{Failure, Outcome, Step, TaskEvent};

/// RFC 7252 §5.10.5: Max-Age when a response does not carry it.
const DEFAULT_MAX_AGE: Duration = Duration::from_secs(60);

/// Where the upgrade stands, with the data only that phase needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub(super) enum Phase {
    NotStarted,
    WaitingForDevice,
    /// Learning State, Update Result, protocols, delivery methods (and the
    /// version of an Idle device with Update Result 1).
    Inspecting,
    Resetting,
    ExtendingLifetime,
    Observing,
    WritingUri {
        /// The look after an ambiguous refusal of the write.
        look: Option<Look>,
    },
    Pushing {
        /// The block to send next.
        next_block: u32,
        /// Transfers the device restarted (4.08).
        restarts: u8,
        /// The look after an ambiguous refusal of block `next_block`.
        look: Option<Look>,
    },
    Downloading,
    HoldingExecute,
    Executing {
        /// The look after an ambiguous refusal of the Execute.
        look: Option<Look>,
    },
    Updating {
        /// The Execute went unanswered: a device still Downloaded never got it.
        unconfirmed: bool,
    },
    Verifying,
    Finished {
        /// B4: the device's state machine must be reset (a cancel after the
        /// image was on its way).
        reset_owed: bool,
        /// The watch for a late success, after a failure that may hide an
        /// applied update (until [`Timer::Upgrade`]).
        watch: Option<Watch>,
    },
}

/// A refusal that may only mean the request arrived twice, looked at before
/// it counts: the code, and the State the look's own answers carried (a report
/// that arrives in between may be a stale one).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub(super) struct Look {
    pub code: ResponseCode,
    pub seen: Option<State>,
}

/// The watch for a late success.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub(super) struct Watch {
    /// The device spoke: look at State, Update Result and version.
    pub look: bool,
}

impl Phase {
    pub fn step(self) -> Step {
        match self {
            Phase::NotStarted => Step::NotStarted,
            Phase::WaitingForDevice => Step::WaitingForDevice,
            Phase::Inspecting => Step::Inspecting,
            Phase::Resetting => Step::Resetting,
            Phase::ExtendingLifetime => Step::ExtendingLifetime,
            Phase::Observing => Step::Observing,
            Phase::WritingUri { .. } => Step::WritingUri,
            Phase::Pushing { .. } => Step::Pushing,
            Phase::Downloading => Step::Downloading,
            Phase::HoldingExecute => Step::HoldingExecute,
            Phase::Executing { .. } => Step::Executing,
            Phase::Updating { .. } => Step::Updating,
            Phase::Verifying => Step::Verifying,
            Phase::Finished { .. } => Step::Finished,
        }
    }

    /// The look after a refusal under way, if any.
    fn look(self) -> Option<Look> {
        match self {
            Phase::WritingUri { look } | Phase::Pushing { look, .. } | Phase::Executing { look } => look,
            _ => None,
        }
    }

    /// Steps whose deadline (B7) falls back to a look when the device is silent.
    fn has_step_deadline(step: Step) -> bool {
        matches!(step, Step::Downloading | Step::Updating | Step::Verifying | Step::Inspecting)
    }
}

/// One input, as the table sees it.
#[derive(Debug)]
pub(super) enum Event<'a> {
    /// Operator: start (U1).
    Start,
    /// Operator: cancel (B4).
    Cancel,
    /// Operator: release the Execute (U12).
    ReleaseExecute,
    /// A Register; the request in flight (if any) was dropped with the old
    /// registration.
    Registered { dropped: Option<Action> },
    /// A Registration Update.
    RegistrationUpdated,
    /// The answer to the request in flight.
    Answer { id: RequestId, action: Action, code: ResponseCode, facts: Option<&'a Facts<'a>> },
    /// 5.03 to the request in flight.
    Busy { action: Action, max_age: Option<Duration> },
    /// The request in flight was lost: CoAP gave up on it (a transport
    /// failure), or it was never answered ([`Timer::Request`]).
    Lost { action: Action, unanswered: bool },
    /// A notification of an observation the task holds.
    Notification { facts: Option<&'a Facts<'a>> },
    /// An LwM2M Send.
    Send { facts: Option<&'a Facts<'a>> },
    /// A deadline.
    Timer(Timer),
    /// Settling: does the phase's exit condition hold now?
    Check,
}

/// 5.01 Not Implemented (RFC 7252 §5.9.3.2).
const NOT_IMPLEMENTED: ResponseCode = ResponseCode::new(5, 1);

/// C6: 4.04, 4.05 and 5.01 to an Observe say the device does not support it.
fn unsupported(code: ResponseCode) -> bool {
    matches!(code, ResponseCode::NOT_FOUND | ResponseCode::METHOD_NOT_ALLOWED | NOT_IMPLEMENTED)
}

/// 4.00, 4.05 and 4.06 may only mean a request arrived twice.
fn ambiguous(code: ResponseCode) -> bool {
    matches!(code, ResponseCode::BAD_REQUEST | ResponseCode::METHOD_NOT_ALLOWED | ResponseCode::NOT_ACCEPTABLE)
}

impl UpgradeTask {
    /// One event, then settling.
    pub(super) fn on(&mut self, now: Instant, event: Event<'_>) {
        self.transition(now, event);
        // Debug builds (the tests, the fuzzer) turn a livelock into a failure:
        // no phase sequence settles in more moves than there are steps, plus
        // the retries.
        #[cfg(debug_assertions)]
        let mut moves = 0u32;
        loop {
            let before = core::mem::discriminant(&self.phase);
            self.transition(now, Event::Check);
            if core::mem::discriminant(&self.phase) == before {
                break;
            }
            #[cfg(debug_assertions)]
            {
                moves += 1;
                debug_assert!(moves <= 16 + self.config.retry.max_attempts, "settling does not end: {:?}", self.phase);
            }
        }
    }

    /// The transition table. Inlined into [`on`](Self::on), where the
    /// settling calls it with [`Event::Check`] alone: the compiler then keeps
    /// only the exit-condition arms for that call.
    #[inline(always)]
    fn transition(&mut self, now: Instant, event: Event<'_>) {
        use Event as E;
        use Phase as P;
        // (The first arm matches any phase: the dispatch tests the event first.)
        match (self.phase, event) {
            // ----- reports (S2–S5) -----

            // S4: a Send is an uplink; CoAP may deliver it late, so it never
            // proves a lost download.
            (_, E::Send { facts }) => {
                self.uplink(now);
                if let Some(facts) = facts {
                    self.learn(facts);
                }
            }
            // S2, S3, S5: notifications of one observation come in order
            // (RFC 7641). A device seen Downloading that shows Idle with
            // Update Result 0 while the task waits for its download has lost
            // it: the URI is written again.
            (_, E::Notification { facts, .. }) => {
                let state = facts.and_then(|facts| self.learn(facts));
                if self.uri_lost(state) {
                    self.enter(now, P::WritingUri { look: None });
                }
            }

            // ----- operator commands -----

            // U1: the timeout runs from the start. U6: the server's cached
            // model may spare the inspection.
            (P::NotStarted, E::Start) => {
                self.timers.set(Timer::Upgrade, now + self.config.timeout);
                if let Some(cached) = self.cached.take().filter(|_| self.config.use_cached_data_model) {
                    self.known.state = cached.state;
                    self.known.result = cached.result;
                    self.known.protocols = cached.protocols;
                    self.known.delivery = cached.delivery;
                }
                self.enter(now, if self.link.registered { P::Inspecting } else { P::WaitingForDevice });
            }
            (_, E::Start) => {}
            (P::Finished { .. }, E::Cancel) => {}
            // B4: a device that has the image, or fetches it, is reset (not
            // one that shows the update done: Verifying keeps its Update Result 1).
            (phase, E::Cancel) => {
                let on_its_way =
                    matches!(phase, P::Downloading | P::HoldingExecute | P::Executing { .. } | P::Updating { .. });
                let reset_owed = on_its_way || matches!(self.known.state, Some(State::Downloading | State::Downloaded));
                self.finish(now, Outcome::Failed(Failure::Cancelled), reset_owed);
            }
            // U12: the held Execute goes.
            (P::HoldingExecute, E::ReleaseExecute) => {
                self.attempt.released = true;
                self.enter(now, P::Executing { look: None });
            }
            // U12: released early, the Execute will not be held.
            (_, E::ReleaseExecute) => self.attempt.released = true,

            // ----- the device's registration (S1 reads on uplinks, U7, U11) -----
            (_, E::Registered { dropped }) => {
                match dropped {
                    // The device registered again after an Execute: it went
                    // down to install, so the Execute is taken as delivered
                    // (and sent again only if the device still shows Downloaded).
                    Some(Action::Execute) if self.phase.step() != Step::Finished => self.execute_unanswered(now),
                    // Observations are established again with the new registration.
                    Some(Action::Observe(_)) | None => {}
                    // Anything else is simply asked again (B10: a push at the same block).
                    Some(action) => self.resume_action(action),
                }
                self.uplink(now);
                self.late_look_on_uplink();
                if matches!(self.phase, P::WaitingForDevice) {
                    self.enter(now, P::Inspecting);
                }
            }
            (_, E::RegistrationUpdated) => {
                self.uplink(now);
                self.late_look_on_uplink();
            }

            // ----- answers -----

            // 5.03: the same request after Max-Age, capped by the step
            // timeout, and at least a second later (Max-Age 0 must not make
            // the task hammer a busy device).
            (_, E::Busy { action, max_age }) => {
                let wait = max_age.unwrap_or(DEFAULT_MAX_AGE).min(self.config.step_timeout).max(Duration::from_secs(1));
                self.timers.set(Timer::Busy, now + wait);
                self.resume_action(action);
            }
            // The version is informative only when no target is set.
            (_, E::Answer { action: Action::ReadVersion, code, .. })
                if code != ResponseCode::CONTENT && self.config.target_version.is_none() =>
            {
                self.known.version = Some(Box::from(""));
            }
            // C6: an Observe refused as not allowed or not supported: the
            // strategy cannot work, reads can (the request in flight was the
            // Observe, so the phase's next request is the Read it now wants).
            (_, E::Answer { action: Action::Observe(_), code, .. }) if self.config.fallback && unsupported(code) => {
                self.fall_back()
            }
            // A look refused (4.05 to Observe under S2, say): the strategy cannot work.
            (_, E::Answer { action, code, .. }) if action.looks() && code != ResponseCode::CONTENT => {
                self.fail(now, Failure::Rejected { step: self.phase.step(), code });
            }
            // The look after an ambiguous refusal: complete with the Read's
            // answer, or under S5 with both new observations' first answers.
            (
                phase @ (P::WritingUri { look: Some(look) }
                | P::Pushing { look: Some(look), .. }
                | P::Executing { look: Some(look) }),
                E::Answer { id, action, facts, .. },
            ) if action.looks() => {
                if let Action::Observe(target) = action {
                    self.observations.established(target, id);
                }
                let seen = facts.and_then(|facts| self.learn(facts)).or(look.seen);
                let complete = match action {
                    Action::ReadFirmware => true,
                    Action::Observe(Target::State | Target::Result) => {
                        !self.strategy().reads() && self.observations.observed() & STATE_AND_RESULT == STATE_AND_RESULT
                    }
                    _ => false,
                };
                let look = Look { code: look.code, seen };
                let reject = Failure::Rejected { step: self.phase.step(), code: look.code };
                match (phase, complete) {
                    (P::WritingUri { .. }, false) => self.phase = P::WritingUri { look: Some(look) },
                    (P::Executing { .. }, false) => self.phase = P::Executing { look: Some(look) },
                    (P::Pushing { next_block, restarts, .. }, false) => {
                        self.phase = P::Pushing { next_block, restarts, look: Some(look) }
                    }
                    // What the look after a refused Package URI write found.
                    (P::WritingUri { .. }, true) => {
                        self.attempt.refused = Some(Action::WriteUri);
                        self.phase = P::WritingUri { look: None };
                        match seen {
                            // The device fetches (or has fetched) what our
                            // earlier copy named.
                            Some(State::Downloading | State::Downloaded) => self.enter(now, P::Downloading),
                            // It took our earlier copy and its download failed
                            // since: that failure (retryable or not) is the
                            // news, not the 4.00.
                            _ if matches!(
                                self.known.result,
                                Some(
                                    UpdateResult::NotEnoughFlash
                                        | UpdateResult::OutOfRam
                                        | UpdateResult::ConnectionLost
                                        | UpdateResult::IntegrityCheckFailure
                                        | UpdateResult::UnsupportedPackageType
                                )
                            ) =>
                            {
                                self.enter(now, P::Downloading)
                            }
                            // Invalid URI, unsupported protocol: the refusal's reason.
                            _ if self.result_failure().is_some() => self.fail(now, reject),
                            // Idle: written once more; a second refusal counts.
                            _ => {}
                        }
                    }
                    // What the look after a refused Execute found.
                    (P::Executing { .. }, true) => {
                        self.attempt.refused = Some(Action::Execute);
                        self.phase = P::Executing { look: None };
                        match (seen, self.known.result) {
                            // The first copy was executed.
                            (Some(State::Updating), _) | (Some(State::Idle), Some(UpdateResult::Success)) => {
                                self.known.version = None;
                                self.enter(now, P::Updating { unconfirmed: false });
                            }
                            // Still Downloaded: executed once more; a second refusal counts.
                            (Some(State::Downloaded), _) => {}
                            // A push whose last block did not arrive after all: send it again.
                            (Some(State::Downloading), _) if self.attempt.push => {
                                self.attempt.refused = None;
                                let next_block = requests::last_block(&self.config);
                                self.enter(now, P::Pushing { next_block, restarts: 0, look: None });
                            }
                            // Not Downloaded after all (a stale report said so): wait for it.
                            (Some(State::Downloading) | None, _) | (Some(State::Idle), Some(UpdateResult::Initial)) => {
                                self.attempt.refused = None;
                                self.enter(now, P::Downloading);
                            }
                            _ => self.fail(now, reject),
                        }
                    }
                    // What the look after a refused push block found.
                    (P::Pushing { next_block: number, restarts, .. }, true) => {
                        self.attempt.refused = Some(Action::PushBlock(number));
                        self.phase = P::Pushing { next_block: number, restarts, look: None };
                        match seen {
                            Some(State::Downloaded) => self.push_complete(now),
                            // The device holds the block: go on with the next,
                            // or send the last one once more.
                            Some(State::Downloading) => {
                                let last = number >= requests::last_block(&self.config);
                                let next_block = if last { number } else { number + 1 };
                                self.phase = P::Pushing { next_block, restarts, look: None };
                            }
                            _ => self.fail(now, reject),
                        }
                    }
                    _ => {}
                }
            }
            // S1–S5: a Read's answer, or an Observe's first.
            (_, E::Answer { id, action, facts, .. }) if action.looks() => {
                if let Action::Observe(target) = action {
                    self.observations.established(target, id);
                }
                let state = facts.and_then(|facts| self.learn(facts));
                let of_state = matches!(action, Action::ReadFirmware | Action::Observe(Target::State));
                if matches!(action, Action::ReadFirmware | Action::Observe(Target::State | Target::Instance))
                    && self.uri_lost(state)
                {
                    self.enter(now, P::WritingUri { look: None });
                } else if of_state
                    && matches!(state, Some(State::Downloading | State::Downloaded))
                    && matches!(self.phase, P::WritingUri { look: None })
                    && !self.attempt.push
                    && self.history.uri_writes > 0
                {
                    // The device fetches (or has fetched) the URI an earlier
                    // write of ours named (a busy device was reset first, so
                    // only ours can have started it): writing again would only
                    // be refused. This answer itself must say so: what reports
                    // said before may be stale.
                    self.enter(now, P::Downloading);
                }
            }
            // Reset (object5.md T5, T9): Idle with Update Result 0.
            (P::Resetting, E::Answer { action: Action::Reset, code: ResponseCode::CHANGED, .. }) => {
                self.known.state = Some(State::Idle);
                self.known.result = Some(UpdateResult::Initial);
                self.enter(now, P::ExtendingLifetime);
            }
            // Updating: wait for it to finish, then look again.
            (_, E::Answer { action: Action::Reset, code: ResponseCode::METHOD_NOT_ALLOWED, .. }) => {
                self.attempt.read_owed = true;
                self.known.state = Some(State::Updating);
            }
            (P::Resetting, E::Answer { action: Action::Reset, code, .. }) => {
                self.fail(now, Failure::Rejected { step: self.phase.step(), code })
            }
            // U11: best effort, whatever the answer.
            (_, E::Answer { action: Action::WriteLifetime, .. }) => self.link.lifetime = Lifetime::Extended,
            (_, E::Answer { action: Action::RestoreLifetime, .. }) => self.link.lifetime = Lifetime::Restored,
            // U2 pull: the write starts a new process (T1); earlier results are stale.
            (P::WritingUri { .. }, E::Answer { action: Action::WriteUri, code: ResponseCode::CHANGED, .. }) => {
                if self.known.result != Some(UpdateResult::Initial) {
                    self.known.result = None;
                }
                self.enter(now, P::Downloading);
            }
            // A second copy of our write may be what the device refused: look first.
            (P::WritingUri { .. }, E::Answer { action: Action::WriteUri, code, .. })
                if ambiguous(code) && self.attempt.refused != Some(Action::WriteUri) =>
            {
                self.refresh_state();
                self.phase = P::WritingUri { look: Some(Look { code, seen: None }) };
            }
            // Anjay answers 4.00 with Update Result 9 for an unsupported scheme.
            (P::WritingUri { .. }, E::Answer { action: Action::WriteUri, code, .. }) => {
                self.attempt.read_owed = true;
                self.fail(now, Failure::Rejected { step: self.phase.step(), code });
            }
            // U2 push, B10: the device holds one more block. (2.31 to the last
            // block asks for bytes the image does not have: RFC 7959 §2.3 uses
            // it for non-final blocks only, so it is refused below.)
            (
                P::Pushing { restarts, .. },
                E::Answer { action: Action::PushBlock(number), code: ResponseCode::CONTINUE, .. },
            ) if number < requests::last_block(&self.config) => {
                let next_block = number + 1;
                self.phase = P::Pushing { next_block, restarts, look: None };
                let total = self.config.image_size;
                self.events.push_back(TaskEvent::PushProgress {
                    bytes: requests::pushed_bytes(&self.config, next_block),
                    total,
                });
            }
            // U2 push: the last block; the device is Downloaded (T3).
            (P::Pushing { .. }, E::Answer { action: Action::PushBlock(_), code: ResponseCode::CHANGED, .. }) => {
                self.push_complete(now)
            }
            // B10: the device lost the transfer (e.g. rebooted): start over, three times at most.
            (
                P::Pushing { restarts, .. },
                E::Answer { action: Action::PushBlock(_), code: ResponseCode::REQUEST_ENTITY_INCOMPLETE, .. },
            ) if restarts < 3 => self.phase = P::Pushing { next_block: 0, restarts: restarts + 1, look: None },
            // object5.md: Update Result 2 for an image too large.
            (
                P::Pushing { .. },
                E::Answer { action: Action::PushBlock(_), code: ResponseCode::REQUEST_ENTITY_TOO_LARGE, .. },
            ) => self.fail(now, Failure::UpdateResult(UpdateResult::NotEnoughFlash)),
            // B10: a second copy of the block may be what the device refused: look first.
            (P::Pushing { restarts, .. }, E::Answer { action: Action::PushBlock(number), code, .. })
                if ambiguous(code) && self.attempt.refused != Some(Action::PushBlock(number)) =>
            {
                self.refresh_state();
                self.phase = P::Pushing { next_block: number, restarts, look: Some(Look { code, seen: None }) };
            }
            (P::Pushing { .. }, E::Answer { action: Action::PushBlock(_), code, .. }) => {
                self.fail(now, Failure::Rejected { step: self.phase.step(), code })
            }
            // T7: the device installs.
            (P::Executing { .. }, E::Answer { action: Action::Execute, code: ResponseCode::CHANGED, .. }) => {
                self.known.version = None;
                self.known.state = Some(State::Updating);
                self.known.result = Some(UpdateResult::Initial);
                self.enter(now, P::Updating { unconfirmed: false });
            }
            // A second copy of the Execute may be what the device refused
            // (4.05 while Updating), or a stale report made the task believe
            // the device Downloaded: look first.
            (P::Executing { .. }, E::Answer { action: Action::Execute, code, .. })
                if ambiguous(code) && self.attempt.refused != Some(Action::Execute) =>
            {
                self.refresh_state();
                self.phase = P::Executing { look: Some(Look { code, seen: None }) };
            }
            (P::Executing { .. }, E::Answer { action: Action::Execute, code, .. }) => {
                self.fail(now, Failure::Rejected { step: self.phase.step(), code })
            }
            // An answer to a request of another phase (nothing in flight
            // outlives its phase but a look): nothing to do.
            (_, E::Answer { .. }) => {}

            // ----- lost exchanges (U7) -----

            // A look of the watch went unanswered: forgotten.
            (P::Finished { .. }, E::Lost { unanswered: true, .. }) => {}

            // U11 is best effort: the upgrade does not depend on it.
            (_, E::Lost { action: Action::WriteLifetime | Action::RestoreLifetime, .. }) => {
                self.link.lifetime = Lifetime::Extended
            }
            // The Execute may have arrived and the answer been lost as the
            // device went down to install: watch what it does next.
            (P::Finished { .. }, E::Lost { action: Action::Execute, .. }) => {}
            (_, E::Lost { action: Action::Execute, .. }) => self.execute_unanswered(now),
            // U7: the same action at the device's next uplink.
            (_, E::Lost { action, .. }) if self.config.resume_after_downlink_failure => {
                self.resume = Some(action);
                self.timers.set(Timer::Window, now);
                if let Action::Observe(target) = action {
                    self.observations.wanted &= !target.bit();
                }
            }
            // One lost exchange (0.16 % of them at 15 % loss each way) is no
            // reason to start the attempt over: the same request goes once
            // more at once (a push at the same block).
            (_, E::Lost { action, .. }) if !self.link.lost_one => {
                self.link.lost_one = true;
                self.resume_action(action);
            }
            // Two in a row are a downlink failure.
            (_, E::Lost { .. }) => self.fail(now, Failure::DownlinkFailure { step: self.phase.step() }),

            // ----- deadlines -----

            // The watch for a late success ends.
            (P::Finished { reset_owed, watch: Some(_) }, E::Timer(Timer::Upgrade)) => {
                self.phase = P::Finished { reset_owed, watch: None }
            }
            (P::Finished { .. } | P::NotStarted, E::Timer(_)) => {}
            // U1.
            (_, E::Timer(Timer::Upgrade)) => {
                let no_send_received = self.strategy() == Strategy::Send && !self.history.seen_send;
                self.end_failed(now, Failure::Timeout { step: self.phase.step(), no_send_received });
            }
            // The request timer is taken as the request lost (`Event::Lost`).
            (_, E::Timer(Timer::Request)) => {}
            // B7: the device said nothing for a step timeout.
            (_, E::Timer(Timer::Step)) => {
                self.timers.set(Timer::Step, now + self.config.step_timeout);
                match self.strategy() {
                    // S5 never reads: observe again, whose answer carries the value.
                    Strategy::ObserveOnly => self.refresh_state(),
                    // C6: a device that sent no state for a step timeout
                    // while the task waits for one is read instead.
                    Strategy::Send
                        if self.config.fallback
                            && !self.history.sent_state
                            && self.phase.step() != Step::Inspecting =>
                    {
                        self.fall_back()
                    }
                    // S4 reads only what Sends lack: a device that never sent waits.
                    Strategy::Send if !self.history.seen_send && self.phase.step() != Step::Inspecting => {}
                    _ => self.attempt.read_owed = true,
                }
            }
            // The wait a device asked for is over; a queue-mode device's window closed.
            (_, E::Timer(Timer::Busy | Timer::Window)) => {}

            // ----- settling: exit conditions -----
            (P::Inspecting, E::Check) => {
                if self.needs_inspection() || self.known.state == Some(State::Updating) {
                    // Still learning, or an earlier process is installing: wait for it to end.
                    return;
                }
                if self.known.state == Some(State::Idle) && self.known.result == Some(UpdateResult::Success) {
                    // Update Result 1 is no proof the device is free: an
                    // earlier attempt's update (its answers lost), or someone
                    // else's, may have installed the target already. Verify
                    // before downloading again: never install twice (C7, B9).
                    match (&self.config.target_version, &self.known.version) {
                        (Some(_), None) => return, // reading /3/0/3
                        (Some(expected), Some(reported)) if **expected == **reported => {
                            let version = Some(String::from(&**reported));
                            self.finish(now, Outcome::Succeeded { version }, false);
                            return;
                        }
                        (Some(expected), Some(reported)) if self.history.execute_sent => {
                            let (expected, reported) = (expected.clone(), String::from(&**reported));
                            self.finish(now, Outcome::Failed(Failure::VersionMismatch { expected, reported }), false);
                            return;
                        }
                        (None, _) if self.history.execute_sent => {
                            self.enter(now, P::Verifying);
                            return;
                        }
                        // Another version, and nothing of ours applied: upgrade.
                        _ => {}
                    }
                }
                // U2, U3, U10.
                match self.choose_delivery() {
                    Err(failure) => self.fail(now, failure),
                    Ok(push) => {
                        self.attempt.push = push;
                        let busy = self.known.state != Some(State::Idle)
                            || !matches!(self.known.result, Some(UpdateResult::Initial | UpdateResult::Success));
                        self.enter(now, if busy { P::Resetting } else { P::ExtendingLifetime });
                    }
                }
            }
            // U11.
            (P::ExtendingLifetime, E::Check)
                if !self.config.extend_lifetime || self.link.lifetime == Lifetime::Extended =>
            {
                self.observations.wanted = self.observe_targets();
                self.enter(now, P::Observing);
            }
            // S2, S3, S5: all observations in place.
            (P::Observing, E::Check) if self.observations.wanted & !self.observations.observed() == 0 => {
                let next = if self.attempt.push {
                    P::Pushing { next_block: 0, restarts: 0, look: None }
                } else {
                    P::WritingUri { look: None }
                };
                self.enter(now, next);
            }
            // The last block's answer may be lost (CoAP still resends it)
            // while a notification or Send already says Downloaded: that is
            // the answer.
            (P::Pushing { .. }, E::Check)
                if self.known.state == Some(State::Downloaded)
                    && self
                        .in_flight
                        .is_some_and(|f| f.action == Action::PushBlock(requests::last_block(&self.config))) =>
            {
                self.take_in_flight();
                self.push_complete(now);
            }
            (P::Downloading, E::Check) => match self.known.state {
                // T3 seen: Execute, or hold it (U12).
                Some(State::Downloaded) if self.known.result != Some(UpdateResult::UpdateFailed) => {
                    if self.config.execute_immediately || self.attempt.released {
                        self.enter(now, P::Executing { look: None });
                    } else {
                        self.events.push_back(TaskEvent::ExecuteHeld);
                        self.enter(now, P::HoldingExecute);
                    }
                }
                // T14, Automatic Upgrade at Download (1.2): the device went on by itself.
                Some(State::Updating) => {
                    self.known.version = None;
                    self.enter(now, P::Updating { unconfirmed: false });
                }
                // T4: the download failed (B8 retries some results).
                _ => {
                    if let Some(failure) = self.result_failure() {
                        self.fail(now, failure);
                    }
                }
            },
            (P::HoldingExecute, E::Check) if self.attempt.released => self.enter(now, P::Executing { look: None }),
            (P::Updating { unconfirmed }, E::Check) => match (self.known.state, self.known.result) {
                // T11: verify the version (B1).
                (Some(State::Idle), Some(UpdateResult::Success)) => self.enter(now, P::Verifying),
                // The unanswered Execute never arrived: send it again.
                (Some(State::Downloaded), Some(UpdateResult::Initial)) if unconfirmed => {
                    self.enter(now, P::Executing { look: None })
                }
                // T12, T13: the update failed.
                _ => {
                    if let Some(failure) = self.result_failure() {
                        self.fail(now, failure);
                    }
                }
            },
            // B1, B9: the version decides.
            (P::Verifying, E::Check) => {
                let Some(reported) = self.known.version.as_deref().map(String::from) else { return };
                match &self.config.target_version {
                    Some(expected) if *expected != reported => {
                        let expected = expected.clone();
                        self.finish(now, Outcome::Failed(Failure::VersionMismatch { expected, reported }), false);
                    }
                    _ => {
                        let version = (!reported.is_empty()).then_some(reported);
                        self.finish(now, Outcome::Succeeded { version }, false);
                    }
                }
            }
            // The watch: a device that shows Idle, Update Result 1 and (with a
            // target) the target version succeeded after all.
            (P::Finished { watch: Some(_), .. }, E::Check) => self.check_late_success(),
            (_, E::Check) => {}
        }
    }

    // ----- effects the table's arms share -----

    /// Moves to `phase`; a new step is reported and gets its deadline (B7).
    fn enter(&mut self, now: Instant, phase: Phase) {
        let step = phase.step();
        if step != self.phase.step() {
            self.events.push_back(TaskEvent::StepChanged(step));
            if Phase::has_step_deadline(step) {
                self.timers.set(Timer::Step, now + self.config.step_timeout);
            } else {
                self.timers.stop(Timer::Step);
            }
        }
        self.phase = phase;
    }

    fn finish(&mut self, now: Instant, outcome: Outcome, reset_owed: bool) {
        if self.outcome.is_some() {
            return;
        }
        self.enter(now, Phase::Finished { reset_owed, watch: None });
        // A request still in flight is forgotten: its answer is stale.
        self.take_in_flight();
        self.timers.stop(Timer::Upgrade);
        self.events.push_back(TaskEvent::Finished(outcome.clone()));
        self.outcome = Some(Box::new(outcome));
    }

    /// B8: a retryable failure starts the next attempt while time and
    /// attempts remain; any other ends the task.
    fn fail(&mut self, now: Instant, failure: Failure) {
        if self.outcome.is_some() {
            return;
        }
        let retryable = match &failure {
            Failure::UpdateResult(result) => self.config.retry.retries(*result),
            Failure::DownlinkFailure { .. } => self.config.retry.retry_downlink_failures,
            _ => false,
        };
        let time_left = self.timers.get(Timer::Upgrade).is_some_and(|deadline| now < deadline);
        if retryable && self.attempt.number < self.config.retry.max_attempts && time_left {
            self.attempt = self.attempt.next();
            // An action the last attempt waited to resume is the old attempt's.
            self.resume = None;
            self.events.push_back(TaskEvent::Retrying { failure, attempt: self.attempt.number });
            self.known.state = None;
            // A version seen before proves nothing about this attempt.
            self.known.version = None;
            self.enter(now, Phase::Inspecting);
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
        if self.outcome.is_some() {
            return;
        }
        let may_have_applied = self.history.execute_sent
            && matches!(failure, Failure::Timeout { .. } | Failure::DownlinkFailure { .. } | Failure::Rejected { .. });
        self.finish(now, Outcome::Failed(failure), false);
        if may_have_applied {
            self.phase = Phase::Finished { reset_owed: false, watch: Some(Watch { look: false }) };
            self.timers.set(Timer::Upgrade, now + self.config.timeout);
            // The device may have come back already (its next uplink can be
            // an extended lifetime away): look at once.
            self.late_look_on_uplink();
        }
    }

    /// While watching: a device that shows Idle, Update Result 1 and (with a
    /// target) the target version succeeded after all.
    fn check_late_success(&mut self) {
        let Phase::Finished { reset_owed, watch: Some(_) } = self.phase else { return };
        if self.known.state != Some(State::Idle) || self.known.result != Some(UpdateResult::Success) {
            return;
        }
        let version = match (&self.config.target_version, &self.known.version) {
            (Some(expected), Some(reported)) if **expected == **reported => Some(String::from(&**reported)),
            (Some(_), _) => return,
            (None, version) => version.as_deref().filter(|v| !v.is_empty()).map(String::from),
        };
        let Some(Outcome::Failed(failure)) = self.outcome.as_deref().cloned() else { return };
        let outcome = Outcome::LateSuccess { version, failure: Box::new(failure) };
        self.phase = Phase::Finished { reset_owed, watch: None };
        self.events.push_back(TaskEvent::LateSuccess(outcome.clone()));
        self.outcome = Some(Box::new(outcome));
    }

    /// While watching for a late success, each registration or update of the
    /// device is a reason to look at it again (S5 relies on its observations).
    fn late_look_on_uplink(&mut self) {
        let Phase::Finished { reset_owed, watch: Some(_) } = self.phase else { return };
        self.phase = Phase::Finished { reset_owed, watch: Some(Watch { look: true }) };
        if self.strategy().reads() {
            self.attempt.read_owed = true;
            self.known.state = None;
            self.known.result = None;
            self.known.version = None;
        }
    }

    /// The device spoke on its own: it is awake, S1 and S2 read now, and an
    /// action that failed on the downlink is retried (U7).
    fn uplink(&mut self, now: Instant) {
        self.awake(now);
        if let Some(action) = self.resume {
            self.resume = None;
            self.resume_action(action);
        }
        // S1 and S2 read when the device speaks; S3 and S4 only fall back to
        // reads at step deadlines; S5 never reads.
        if Phase::has_step_deadline(self.phase.step())
            && matches!(self.strategy(), Strategy::Reads | Strategy::ObserveResources)
        {
            self.attempt.read_owed = true;
        }
    }

    /// C6: the device refused what the strategy needs: S1 reads from now on
    /// (no more Observes; a Read owed at once; reads on every uplink).
    /// Observations already in place stay: their notifications still count.
    fn fall_back(&mut self) {
        if self.history.fell_back {
            return;
        }
        let from = self.strategy();
        self.history.fell_back = true;
        self.observations.wanted = 0;
        self.attempt.read_owed = true;
        self.events.push_back(TaskEvent::StrategyChanged { from, to: Strategy::Reads });
    }

    /// The request for `action` goes again.
    fn resume_action(&mut self, action: Action) {
        match action {
            Action::PushBlock(number) => {
                if let Phase::Pushing { restarts, look, .. } = self.phase {
                    self.phase = Phase::Pushing { next_block: number, restarts, look };
                }
            }
            Action::ReadFirmware | Action::ReadVersion => self.attempt.read_owed = true,
            Action::Observe(target) => self.observations.wanted |= target.bit(),
            _ => {}
        }
    }

    /// Asks the device for State and Update Result again, as the strategy allows.
    fn refresh_state(&mut self) {
        if self.strategy().reads() {
            self.attempt.read_owed = true;
        } else {
            self.observations.void(Target::State);
            self.observations.void(Target::Result);
            self.observations.wanted |= STATE_AND_RESULT;
        }
    }

    /// The Execute may have arrived and the answer been lost as the device
    /// went down to install: watch what the device does next rather than fail
    /// (a Downloaded device gets the Execute again).
    fn execute_unanswered(&mut self, now: Instant) {
        self.known.version = None;
        self.known.state = None;
        self.known.result = None;
        self.refresh_state();
        self.enter(now, Phase::Updating { unconfirmed: true });
    }

    /// The device acknowledged the last pushed block: it is Downloaded.
    fn push_complete(&mut self, now: Instant) {
        let total = self.config.image_size;
        self.events.push_back(TaskEvent::PushProgress { bytes: total, total });
        self.known.state = Some(State::Downloaded);
        self.known.result = Some(UpdateResult::Initial);
        self.enter(now, Phase::Downloading);
    }

    /// True when the State of the task's own look (or a notification) shows
    /// a device that lost its download: seen Downloading in this attempt,
    /// Idle with Update Result 0 now, while the task waits for the pull. A
    /// late copy of the reset (an empty Package URI) reached a client without
    /// a response cache after the URI write, or the device forgot it. (Devices
    /// that hide Downloading never set the mark.)
    fn uri_lost(&mut self, state: Option<State>) -> bool {
        match state {
            Some(State::Downloading | State::Downloaded) => {
                self.attempt.seen_downloading = true;
                false
            }
            Some(State::Idle)
                if matches!(self.phase, Phase::Downloading)
                    && !self.attempt.push
                    && self.attempt.seen_downloading
                    && self.known.result == Some(UpdateResult::Initial) =>
            {
                self.attempt.seen_downloading = false;
                self.attempt.refused = None;
                true
            }
            _ => false,
        }
    }

    /// Applies what a payload says; returns the State it carried, if any.
    #[inline(always)]
    fn learn(&mut self, facts: &Facts<'_>) -> Option<State> {
        if let Some(state) = facts.state {
            self.known.state = Some(state);
        }
        if let Some(result) = facts.result {
            self.known.result = Some(result);
        }
        if let Some(delivery) = facts.delivery {
            self.known.delivery = delivery;
        }
        if let Some(protocols) = facts.protocols {
            self.known.protocols = Some(protocols);
        }
        // A version counts only once the update is over: one sent along with
        // Idle + Update Result 1, or read on its own while verifying. An earlier
        // one proves nothing: a device rebooting mid-install still runs the old
        // image, and a Send from before the update, resent late by CoAP,
        // carries the old version with Idle and Update Result 0. Read on its
        // own, it also counts where the task checks whether an Idle device
        // with Update Result 1 already runs the target (while inspecting, and
        // while watching for a late success).
        if let Some(version) = &facts.version {
            let finished = self.known.state == Some(State::Idle) && self.known.result == Some(UpdateResult::Success);
            let step = self.phase.step();
            let counts = if facts.state_seen() {
                finished
            } else {
                step == Step::Verifying || (finished && (step == Step::Inspecting || self.watching()))
            };
            if counts {
                self.known.version = Some(Box::from(version.as_ref()));
            }
        }
        if facts.state_seen() {
            if let (Some(state), Some(result)) = (self.known.state, self.known.result) {
                self.events.push_back(TaskEvent::StateSeen { state, result });
            }
            if self.timers.is_armed(Timer::Step) {
                self.timers.set(Timer::Step, self.last_now + self.config.step_timeout);
            }
        }
        facts.state
    }

    // ----- what is known, and what the phases ask for -----

    /// True while inspecting an Idle device with Update Result 1 whose
    /// version must be known before it is upgraded (a target is set).
    fn needs_version(&self) -> bool {
        self.known.state == Some(State::Idle)
            && self.known.result == Some(UpdateResult::Success)
            && self.config.target_version.is_some()
            && self.known.version.is_none()
    }

    fn needs_inspection(&self) -> bool {
        let check = self.config.check_delivery_and_protocol || self.config.delivery == Delivery::Auto;
        self.known.state.is_none()
            || self.known.result.is_none()
            || (check && (self.known.protocols.is_none() || self.known.delivery.is_none()))
    }

    fn observe_targets(&self) -> u8 {
        match self.strategy() {
            Strategy::ObserveResources | Strategy::ObserveOnly => STATE_AND_RESULT,
            Strategy::ObserveInstance => Target::Instance.bit(),
            Strategy::Reads | Strategy::Send => 0,
        }
    }

    /// U2, U3, U10: pull (`false`) or push (`true`), checked against what the
    /// device supports.
    fn choose_delivery(&self) -> Result<bool, Failure> {
        let method = self.known.delivery.unwrap_or(DeliveryMethod::Both);
        let protocols = self.known.protocols.unwrap_or(ProtocolSet::EMPTY.with(Protocol::Coap));
        let protocol_ok = protocols.contains(self.config.protocol);
        let check = self.config.check_delivery_and_protocol;
        let wanted = self.config.delivery;
        let push = match wanted {
            Delivery::Push => {
                if check && !method.allows_push() {
                    return Err(Failure::UnsupportedDeliveryMethod { wanted, device: method });
                }
                true
            }
            Delivery::Pull => {
                if check && !method.allows_pull() {
                    return Err(Failure::UnsupportedDeliveryMethod { wanted, device: method });
                }
                if check && !protocol_ok {
                    return Err(Failure::UnsupportedProtocol { wanted: self.config.protocol, device: protocols });
                }
                false
            }
            Delivery::Auto => {
                if method.allows_pull() && protocol_ok {
                    false
                } else if method.allows_push() {
                    true
                } else {
                    return Err(Failure::UnsupportedProtocol { wanted: self.config.protocol, device: protocols });
                }
            }
        };
        if !push {
            let uri = self.config.package_uri();
            let scheme_ok = uri
                .split_once("://")
                .is_some_and(|(scheme, _)| scheme.eq_ignore_ascii_case(self.config.protocol.scheme()));
            if uri.len() > 255 || !scheme_ok {
                return Err(Failure::InvalidPackageUri);
            }
        }
        Ok(push)
    }

    fn result_failure(&self) -> Option<Failure> {
        match self.known.result? {
            UpdateResult::Initial | UpdateResult::Success | UpdateResult::Deferred => None,
            other => Some(Failure::UpdateResult(other)),
        }
    }

    /// The request each phase wants next, if any.
    pub(super) fn wanted(&self) -> Option<Action> {
        let reads = self.strategy().reads();
        let observe = |targets: u8| self.observations.missing(targets).map(Action::Observe);
        if let Phase::Finished { reset_owed, watch } = self.phase {
            if reset_owed {
                return Some(Action::Reset);
            }
            if self.link.lifetime == Lifetime::Extended && self.config.extend_lifetime {
                return Some(Action::RestoreLifetime);
            }
            if !watch.is_some_and(|watch| watch.look) {
                return None;
            }
            // The look of a watch for a late success: State and Update
            // Result, then the version of an Idle device with Update Result 1.
            let finished = self.known.state == Some(State::Idle) && self.known.result == Some(UpdateResult::Success);
            let version = finished && self.config.target_version.is_some() && self.known.version.is_none();
            return if reads {
                if self.attempt.read_owed { Some(Action::ReadFirmware) } else { version.then_some(Action::ReadVersion) }
            } else {
                observe(STATE_AND_RESULT | if version { Target::Version.bit() } else { 0 })
            };
        }
        if self.resume.is_some() {
            return None;
        }
        if self.phase.look().is_some() {
            // The look after a refusal: a Read, or under S5 new observations,
            // whose first answers carry the values.
            return if reads {
                self.attempt.read_owed.then_some(Action::ReadFirmware)
            } else {
                observe(STATE_AND_RESULT)
            };
        }
        match self.phase {
            Phase::Inspecting => {
                let inspect = self.needs_inspection();
                if !inspect && self.needs_version() {
                    return if reads { Some(Action::ReadVersion) } else { observe(Target::Version.bit()) };
                }
                if !inspect && self.known.state != Some(State::Updating) {
                    return None;
                }
                if reads {
                    return (inspect || self.attempt.read_owed).then_some(Action::ReadFirmware);
                }
                // S5: an Observe's first answer carries the value.
                let mut wanted = STATE_AND_RESULT;
                if self.config.check_delivery_and_protocol || self.config.delivery == Delivery::Auto {
                    wanted |= Target::Protocols.bit() | Target::Delivery.bit();
                }
                observe(wanted)
            }
            Phase::Resetting => Some(Action::Reset),
            Phase::ExtendingLifetime => Some(Action::WriteLifetime),
            Phase::Observing => observe(self.observations.wanted),
            Phase::WritingUri { .. } => Some(Action::WriteUri),
            Phase::Pushing { next_block, .. } => Some(Action::PushBlock(next_block)),
            Phase::Executing { .. } => Some(Action::Execute),
            Phase::Downloading | Phase::Updating { .. } => {
                // U11 again after a re-registration mid-download.
                if matches!(self.phase, Phase::Downloading)
                    && self.config.extend_lifetime
                    && self.link.lifetime == Lifetime::Original
                {
                    return Some(Action::WriteLifetime);
                }
                if let Some(action) = observe(self.observations.wanted) {
                    return Some(action);
                }
                (reads && self.attempt.read_owed).then_some(Action::ReadFirmware)
            }
            Phase::Verifying => {
                if self.known.version.is_some() {
                    return None;
                }
                if reads { Some(Action::ReadVersion) } else { Some(Action::Observe(Target::Version)) }
            }
            Phase::NotStarted | Phase::WaitingForDevice | Phase::HoldingExecute | Phase::Finished { .. } => None,
        }
    }

    /// Bookkeeping for request `id` sent for `action`.
    pub(super) fn sent(&mut self, id: RequestId, action: Action) {
        match action {
            Action::ReadFirmware | Action::ReadVersion => self.attempt.read_owed = false,
            Action::Observe(target) => {
                self.observations.void(target);
                self.observations.wanted |= target.bit();
            }
            Action::Reset => {
                if let Phase::Finished { watch, .. } = self.phase {
                    self.phase = Phase::Finished { reset_owed: false, watch };
                }
            }
            Action::RestoreLifetime => self.link.lifetime = Lifetime::Restored,
            Action::WriteUri => self.history.uri_writes = self.history.uri_writes.saturating_add(1),
            Action::Execute => self.history.execute_sent = true,
            Action::WriteLifetime | Action::PushBlock(_) => {}
        }
        // Requests sent after the task finished are fire-and-forget, but for
        // the looks of a watch for a late success.
        if self.outcome.is_none() || (action.looks() && self.watching()) {
            self.in_flight = Some(super::InFlight { id: u32::try_from(id).unwrap_or(u32::MAX), action });
            self.timers.set(Timer::Request, self.last_now + self.config.request_timeout);
        }
    }
}

#[cfg(test)]
#[path = "table_tests.rs"]
mod tests;
