//! The task's serde form, with a format number, and the snapshots of earlier
//! versions.
//!
//! Format 1 (this one) carries `"format": 1` and the phase with its data.
//! Format 0 is the flag-based task of lwm2m-fota before the transition table
//! (no `format` field); it still loads, and the restored task continues where
//! the old one stood. Loading both needs a self-describing serde format (JSON,
//! CBOR, MessagePack with field names…).

use alloc::boxed::Box;
use alloc::collections::VecDeque;
use alloc::sync::Arc;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::requests::{Action, InFlight, Observations};
use super::table::{Look, Phase, Watch};
use super::timers::{Timer, Timers};
use super::{Attempt, CachedModel, History, Known, Lifetime, Link, UpgradeTask};
use crate::model::{DeliveryMethod, Instant, ProtocolSet, RequestId, ResponseCode, State, UpdateResult};
use crate::server::config::UpgradeConfig;
use crate::server::outcome::{Outcome, Step, TaskEvent};

/// The snapshot format this version writes.
pub const FORMAT: u32 = 1;

/// Format 1, borrowed for writing.
#[derive(Serialize)]
struct CurrentRef<'a> {
    format: u32,
    config: &'a Arc<UpgradeConfig>,
    phase: &'a Phase,
    timers: &'a Timers,
    last_now: Instant,
    link: &'a Link,
    known: &'a Known,
    attempt: &'a Attempt,
    history: &'a History,
    observations: &'a Observations,
    next_id: RequestId,
    in_flight: &'a Option<InFlight>,
    resume: &'a Option<Action>,
    cached: &'a Option<Box<CachedModel>>,
    outcome: &'a Option<Box<Outcome>>,
    events: &'a VecDeque<TaskEvent>,
}

/// Format 1, owned for reading.
#[derive(Deserialize)]
struct Current {
    format: u32,
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
    resume: Option<Action>,
    cached: Option<Box<CachedModel>>,
    outcome: Option<Box<Outcome>>,
    events: VecDeque<TaskEvent>,
}

impl Serialize for UpgradeTask {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        CurrentRef {
            format: FORMAT,
            config: &self.config,
            phase: &self.phase,
            timers: &self.timers,
            last_now: self.last_now,
            link: &self.link,
            known: &self.known,
            attempt: &self.attempt,
            history: &self.history,
            observations: &self.observations,
            next_id: self.next_id,
            in_flight: &self.in_flight,
            resume: &self.resume,
            cached: &self.cached,
            outcome: &self.outcome,
            events: &self.events,
        }
        .serialize(serializer)
    }
}

impl<'de> Deserialize<'de> for UpgradeTask {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<UpgradeTask, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Any {
            Current(Box<Current>),
            Legacy(Box<Legacy>),
        }
        match Any::deserialize(deserializer).map_err(|_| {
            serde::de::Error::custom("not an upgrade task snapshot of format 1 or of the unversioned format 0")
        })? {
            Any::Current(current) if current.format != FORMAT => Err(serde::de::Error::custom(alloc::format!(
                "upgrade task snapshot format {} is newer than this version reads ({FORMAT})",
                current.format
            ))),
            Any::Current(current) => {
                let c = *current;
                Ok(UpgradeTask {
                    config: c.config,
                    phase: c.phase,
                    timers: c.timers,
                    last_now: c.last_now,
                    link: c.link,
                    known: c.known,
                    attempt: c.attempt,
                    history: c.history,
                    observations: c.observations,
                    next_id: c.next_id,
                    in_flight: c.in_flight,
                    resume: c.resume,
                    cached: c.cached,
                    outcome: c.outcome,
                    events: c.events,
                })
            }
            Any::Legacy(legacy) => Ok(legacy.into_task()),
        }
    }
}

/// A refusal under check, as format 0 kept it.
#[derive(Deserialize)]
struct LegacyRefusal {
    action: Action,
    code: ResponseCode,
    looking: bool,
    seen: Option<State>,
}

/// Format 0: the flag-based task. Fields added over its life are optional.
#[derive(Deserialize)]
struct Legacy {
    config: Arc<UpgradeConfig>,
    step: Step,
    deadline: Instant,
    wait_until: Option<Instant>,
    last_now: Instant,
    registered: bool,
    queue_mode: bool,
    awake_until: Instant,
    server_instance: u16,
    original_lifetime: u32,
    state: Option<State>,
    result: Option<UpdateResult>,
    protocols: Option<ProtocolSet>,
    delivery_method: Option<DeliveryMethod>,
    version: Option<Box<str>>,
    cached: Option<Box<CachedModel>>,
    attempt: u32,
    push: bool,
    next_block: u32,
    block_restarts: u8,
    lifetime_extended: bool,
    lifetime_restored: bool,
    execute_released: bool,
    need_read: bool,
    seen_send: bool,
    want_observe: u8,
    observations: [u32; 6],
    next_id: RequestId,
    in_flight: Option<(u32, Action, Instant)>,
    resume: Option<Action>,
    cancel_reset: bool,
    execute_unconfirmed: bool,
    #[serde(default)]
    uri_writes: u8,
    #[serde(default)]
    busy_until: Instant,
    #[serde(default)]
    refusal: Option<LegacyRefusal>,
    #[serde(default)]
    execute_sent: bool,
    #[serde(default)]
    watching: bool,
    #[serde(default)]
    late_look: bool,
    #[serde(default)]
    resent: bool,
    #[serde(default)]
    seen_downloading: bool,
    outcome: Option<Box<Outcome>>,
    events: VecDeque<TaskEvent>,
}

impl Legacy {
    /// The same task as a phase with its data: each flag of format 0 goes to
    /// the phase (or the attempt, link or timer) it was meaningful for.
    fn into_task(self) -> UpgradeTask {
        let look = self.refusal.as_ref().filter(|r| r.looking).map(|r| Look { code: r.code, seen: r.seen });
        let refused = self.refusal.as_ref().filter(|r| !r.looking).map(|r| r.action);
        let phase = match self.step {
            Step::NotStarted => Phase::NotStarted,
            Step::WaitingForDevice => Phase::WaitingForDevice,
            Step::Inspecting => Phase::Inspecting,
            Step::Resetting => Phase::Resetting,
            Step::ExtendingLifetime => Phase::ExtendingLifetime,
            Step::Observing => Phase::Observing,
            Step::WritingUri => Phase::WritingUri { look },
            Step::Pushing => Phase::Pushing { next_block: self.next_block, restarts: self.block_restarts, look },
            Step::Downloading => Phase::Downloading,
            Step::HoldingExecute => Phase::HoldingExecute,
            Step::Executing => Phase::Executing { look },
            Step::Updating => Phase::Updating { unconfirmed: self.execute_unconfirmed },
            Step::Verifying => Phase::Verifying,
            // `Step` is non-exhaustive only for users of the crate.
            _ => Phase::Finished {
                reset_owed: self.cancel_reset,
                watch: self.watching.then_some(Watch { look: self.late_look }),
            },
        };
        let mut timers = Timers::default();
        let finished = matches!(phase, Phase::Finished { .. });
        if phase != Phase::NotStarted && (!finished || self.watching) {
            timers.set(Timer::Upgrade, self.deadline);
        }
        if let Some(at) = self.wait_until {
            timers.set(Timer::Step, at);
        }
        if let Some((_, _, sent)) = self.in_flight {
            timers.set(Timer::Request, sent + self.config.request_timeout);
        }
        if self.busy_until > Instant::ZERO {
            timers.set(Timer::Busy, self.busy_until);
        }
        // A window already closed is as good as one whose timer fired.
        if self.awake_until >= self.last_now {
            timers.set(Timer::Window, self.awake_until);
        }
        let lifetime = match (self.lifetime_extended, self.lifetime_restored) {
            (true, true) => Lifetime::Restored,
            (true, false) => Lifetime::Extended,
            _ => Lifetime::Original,
        };
        UpgradeTask {
            phase,
            timers,
            last_now: self.last_now,
            link: Link {
                registered: self.registered,
                queue_mode: self.queue_mode,
                server_instance: self.server_instance,
                original_lifetime: self.original_lifetime,
                lifetime,
                lost_one: self.resent,
            },
            known: Known {
                state: self.state,
                result: self.result,
                protocols: self.protocols,
                delivery: self.delivery_method,
                version: self.version,
            },
            attempt: Attempt {
                number: self.attempt,
                push: self.push,
                released: self.execute_released,
                seen_downloading: self.seen_downloading,
                read_owed: self.need_read,
                refused,
            },
            history: History {
                execute_sent: self.execute_sent,
                uri_writes: self.uri_writes,
                seen_send: self.seen_send,
                // Format 0 predates C6: its configuration has no fallback.
                sent_state: self.seen_send,
                fell_back: false,
            },
            observations: Observations { ids: self.observations, wanted: self.want_observe },
            next_id: self.next_id,
            in_flight: self.in_flight.map(|(id, action, _)| InFlight { id, action }),
            resume: self.resume,
            cached: self.cached.filter(|_| self.step == Step::NotStarted),
            outcome: self.outcome,
            events: self.events,
            config: self.config,
        }
    }
}
