//! A fleet simulation: one [`UpgradeTask`] per [`SimDevice`], connected by the
//! simulated network with CoAP's confirmable retransmissions, in virtual time.
//!
//! This is where the server and the device sides meet (the server never
//! imports the device).

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;

use super::{FleetProfile, ImageStore, LinkParams, Rng, SimDevice, SimImage, image_bytes};
use crate::model::{ClientMessage, ContentFormat, Instant, Operation, Path, RequestId};
use crate::server::{Outcome, RequestKind, TaskInput, TaskOutput, TaskRequest, UpgradeConfig, UpgradeTask};

/// RFC 7252 ACK_TIMEOUT (the simulation uses its lower bound).
const ACK_TIMEOUT: Duration = Duration::from_secs(2);
/// RFC 7252 MAX_RETRANSMIT.
const MAX_RETRANSMIT: u8 = 4;

/// What to simulate.
#[derive(Debug, Clone)]
pub struct FleetConfig {
    /// Number of devices.
    pub devices: usize,
    /// Their behaviour.
    pub profile: FleetProfile,
    /// The task configuration every device's upgrade uses (its `base_uri` and
    /// `image_name` name the image the simulation serves; `target_version` is
    /// the image's version).
    pub upgrade: Arc<UpgradeConfig>,
    /// The version devices run before the upgrade.
    pub initial_version: String,
    /// Seed of every random choice.
    pub seed: u64,
    /// Most upgrades running at once (B3); 0 for no limit. A device joins the
    /// simulation when its upgrade starts and leaves it when the upgrade ends,
    /// so memory follows this limit, not the fleet's size.
    pub concurrency: usize,
}

/// Percentiles of the simulated upgrade durations.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Durations {
    /// Median, seconds.
    pub p50: f64,
    /// 99th percentile, seconds.
    pub p99: f64,
    /// Maximum, seconds.
    pub max: f64,
}

/// What a fleet run measured.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct FleetReport {
    /// Devices simulated.
    pub devices: usize,
    /// Upgrades that succeeded ([`Outcome::Succeeded`]).
    pub succeeded: u64,
    /// Upgrades whose task failed but whose device proved afterwards that the
    /// update applied ([`Outcome::LateSuccess`]), by the failure's reason.
    pub late_succeeded: BTreeMap<String, u64>,
    /// Failures by reason ([`crate::server::Failure::reason`]).
    pub failed: BTreeMap<String, u64>,
    /// Tasks that never ended (must be 0).
    pub stuck: u64,
    /// Messages the server sent (retransmissions included).
    pub downlinks: u64,
    /// Messages devices sent (retransmissions included).
    pub uplinks: u64,
    /// Payload bytes of notifications and Sends.
    pub notify_bytes: u64,
    /// Simulated time from start to outcome, over the tasks that ended.
    pub durations: Durations,
    /// Size of one task's state in bytes (its struct; the shared configuration
    /// is not counted).
    pub task_bytes: usize,
}

/// A member's place in the simulation: its slot and the slot's generation,
/// so that an event for an upgrade that has ended is recognised as stale once
/// the slot holds another device.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct MemberRef {
    slot: u32,
    generation: u32,
}

#[derive(Debug)]
enum Event {
    DeviceTimer(MemberRef),
    TaskTimer(MemberRef),
    /// A request reaches a device.
    Downlink(MemberRef, RequestId),
    /// A device message (held in the uplink store) reaches the server.
    Uplink(MemberRef, u32),
    /// A confirmable request's retransmission timer.
    Retransmit(MemberRef, RequestId, u8),
    /// A confirmable uplink's retransmission (the device resends it).
    UplinkRetransmit(MemberRef, u32, u8),
}

/// An event in the queue, to cancel it by.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct EventHandle {
    node: u32,
    seq: u64,
}

const NIL: u32 = u32::MAX;

/// One queued event in the queue's arena.
#[derive(Debug)]
struct Node {
    /// Insertion number (ties in time come out in insertion order); 0 while
    /// the node is free.
    seq: u64,
    /// Next node of the free list.
    next: u32,
    /// None while the node is free.
    event: Option<Event>,
}

/// Heap keys: time, insertion number, node.
type Key = Reverse<(Instant, u64, u32)>;

/// The simulation's event queue: a timing wheel of `BUCKETS` buckets of
/// `BUCKET_MS` each, with a binary heap for the bucket being run and one for
/// events beyond the wheel. Events come out exactly as from one binary heap
/// ordered by (time, insertion). Events live in an arena and buckets hold only
/// their keys, in vectors recycled through a pool, so after warm-up nothing is
/// allocated per event. An event can be cancelled: its node is freed at once
/// and its key skipped when it comes up, without waking anything.
struct EventQueue {
    nodes: Vec<Node>,
    free: u32,
    buckets: Vec<Vec<Key>>,
    /// Emptied bucket vectors, kept for reuse.
    pool: Vec<Vec<Key>>,
    current: BinaryHeap<Key>,
    /// Absolute number of the bucket `current` holds.
    cursor: u64,
    far: BinaryHeap<Key>,
    /// Events in buckets, `current` and `far`, cancelled ones included.
    len: usize,
    seq: u64,
}

const BUCKET_MS: u64 = 16;
/// The largest bucket vector kept for reuse.
const POOLED_CAPACITY: usize = 256;
const BUCKETS: u64 = 1 << 16;

impl EventQueue {
    fn new() -> EventQueue {
        EventQueue {
            nodes: Vec::new(),
            free: NIL,
            buckets: (0..BUCKETS).map(|_| Vec::new()).collect(),
            pool: Vec::new(),
            current: BinaryHeap::new(),
            cursor: 0,
            far: BinaryHeap::new(),
            len: 0,
            seq: 0,
        }
    }

    fn push(&mut self, at: Instant, event: Event) -> EventHandle {
        self.len += 1;
        self.seq += 1;
        let seq = self.seq;
        let node = Node { seq, next: NIL, event: Some(event) };
        let index = if self.free == NIL {
            self.nodes.push(node);
            (self.nodes.len() - 1) as u32
        } else {
            let index = self.free;
            let slot = &mut self.nodes[index as usize];
            self.free = slot.next;
            *slot = node;
            index
        };
        self.place(Reverse((at, seq, index)));
        EventHandle { node: index, seq }
    }

    /// Puts a key in its bucket, the current heap or the far heap.
    fn place(&mut self, key: Key) {
        let bucket = key.0.0.as_millis() / BUCKET_MS;
        if bucket <= self.cursor {
            self.current.push(key);
        } else if bucket < self.cursor + BUCKETS {
            let keys = &mut self.buckets[(bucket % BUCKETS) as usize];
            if keys.capacity() == 0 {
                *keys = self.pool.pop().unwrap_or_else(|| Vec::with_capacity(16));
            }
            keys.push(key);
        } else {
            self.far.push(key);
        }
    }

    /// Takes back a queued event; a handle to one already run does nothing.
    /// Its node is freed at once (so the arena holds only live events and
    /// stays small); its key stays queued and is skipped when it comes up, as
    /// the node no longer carries its insertion number.
    fn cancel(&mut self, handle: EventHandle) {
        if let Some(node) = self.nodes.get_mut(handle.node as usize) {
            if node.seq == handle.seq {
                node.seq = 0;
                node.event = None;
                node.next = self.free;
                self.free = handle.node;
            }
        }
    }

    fn pop(&mut self) -> Option<(Instant, Event)> {
        loop {
            while self.current.is_empty() {
                if self.len == 0 {
                    return None;
                }
                self.advance();
            }
            let Reverse((at, seq, index)) = self.current.pop()?;
            self.len -= 1;
            let node = &mut self.nodes[index as usize];
            if node.seq != seq {
                // Cancelled: the node was freed (and may hold another event).
                continue;
            }
            node.seq = 0;
            node.next = self.free;
            self.free = index;
            if let Some(event) = node.event.take() {
                return Some((at, event));
            }
        }
    }

    /// Moves the cursor to the next bucket and loads it into `current`.
    fn advance(&mut self) {
        self.cursor += 1;
        let slot = (self.cursor % BUCKETS) as usize;
        if !self.buckets[slot].is_empty() {
            let mut keys = std::mem::take(&mut self.buckets[slot]);
            self.current.extend(keys.drain(..));
            // Small vectors are kept for the next buckets; a large one (a
            // burst) is freed rather than held by a bucket that needs little.
            if keys.capacity() <= POOLED_CAPACITY {
                self.pool.push(keys);
            }
        }
        // Far events that now fall inside the wheel's window.
        while let Some(&Reverse((at, _, _))) = self.far.peek() {
            if at.as_millis() / BUCKET_MS >= self.cursor + BUCKETS {
                break;
            }
            let Some(key) = self.far.pop() else { break };
            self.place(key);
        }
        if self.current.is_empty() && self.len == self.far.len() {
            // Only far events remain: jump to the next one instead of scanning.
            if let Some(&Reverse((at, _, _))) = self.far.peek() {
                self.cursor = self.cursor.max((at.as_millis() / BUCKET_MS).saturating_sub(1));
            }
        }
    }
}

/// Uplinks in flight, each stored once and named by an index in events.
#[derive(Default)]
struct UplinkStore {
    messages: Vec<Option<ClientMessage>>,
    free: Vec<u32>,
}

impl UplinkStore {
    fn insert(&mut self, message: ClientMessage) -> u32 {
        match self.free.pop() {
            Some(index) => {
                self.messages[index as usize] = Some(message);
                index
            }
            None => {
                self.messages.push(Some(message));
                (self.messages.len() - 1) as u32
            }
        }
    }

    fn take(&mut self, index: u32) -> Option<ClientMessage> {
        let message = self.messages.get_mut(index as usize)?.take();
        if message.is_some() {
            self.free.push(index);
        }
        message
    }
}

/// A member's two timers.
#[derive(Debug, Clone, Copy)]
enum Timer {
    Device,
    Task,
}

/// A request in flight from the server, retransmitted until answered.
#[derive(Debug)]
struct Outstanding {
    id: RequestId,
    operation: Operation,
    retransmit: Option<EventHandle>,
}

struct Member {
    device: SimDevice,
    task: UpgradeTask,
    outstanding: Option<Outstanding>,
    device_timer: Option<(Instant, EventHandle)>,
    task_timer: Option<(Instant, EventHandle)>,
    started_at: Instant,
}

/// A place for one running upgrade; slots are reused as upgrades end.
struct Slot {
    generation: u32,
    member: Option<Member>,
}

/// The simulation.
#[allow(missing_debug_implementations)]
pub struct Fleet {
    config: FleetConfig,
    /// The running upgrades, stored densely (at most the concurrency limit).
    slots: Vec<Slot>,
    free_slots: Vec<u32>,
    images: ImageStore,
    image: Bytes,
    queue: EventQueue,
    uplinks: UplinkStore,
    rng: Rng,
    now: Instant,
    report: FleetReport,
    durations: Vec<u32>,
    next_to_start: usize,
    active: usize,
    finished: usize,
}

impl Fleet {
    /// Builds the fleet; upgrades start at time zero up to the concurrency
    /// limit, then one for each that ends. Devices register within their first
    /// seconds.
    pub fn new(config: FleetConfig) -> Fleet {
        let upgrade = config.upgrade.clone();
        let version = upgrade.target_version.clone().unwrap_or_else(|| "2.0.0".into());
        let mut images = ImageStore::new();
        images.insert(upgrade.package_uri(), SimImage { size: upgrade.image_size, version: Some(version.clone()) });
        let image = Bytes::from(image_bytes(&version, upgrade.image_size as usize));
        let devices = config.devices;
        let mut fleet = Fleet {
            rng: Rng::derive(config.seed, u64::MAX),
            config,
            slots: Vec::new(),
            free_slots: Vec::new(),
            images,
            image,
            queue: EventQueue::new(),
            uplinks: UplinkStore::default(),
            now: Instant::ZERO,
            report: FleetReport::default(),
            durations: Vec::with_capacity(devices),
            next_to_start: 0,
            active: 0,
            finished: 0,
        };
        fleet.report.devices = devices;
        fleet.report.task_bytes = std::mem::size_of::<UpgradeTask>();
        fleet.start_more();
        fleet
    }

    /// Starts upgrades while the concurrency limit allows.
    fn start_more(&mut self) {
        let limit = if self.config.concurrency == 0 { usize::MAX } else { self.config.concurrency };
        while self.active < limit && self.next_to_start < self.config.devices {
            let i = self.next_to_start;
            self.next_to_start += 1;
            self.active += 1;
            let profile = self.config.profile.for_device(self.config.seed, i as u64);
            let mut task = UpgradeTask::new(self.config.upgrade.clone());
            let _ = task.start(self.now);
            let member = Member {
                device: SimDevice::new(i as u64, profile, self.config.seed, &self.config.initial_version, self.now),
                task,
                outstanding: None,
                device_timer: None,
                task_timer: None,
                started_at: self.now,
            };
            let at = match self.free_slots.pop() {
                Some(slot) => {
                    let entry = &mut self.slots[slot as usize];
                    entry.member = Some(member);
                    MemberRef { slot, generation: entry.generation }
                }
                None => {
                    self.slots.push(Slot { generation: 0, member: Some(member) });
                    MemberRef { slot: (self.slots.len() - 1) as u32, generation: 0 }
                }
            };
            self.after_task(at);
            self.after_device(at);
        }
    }

    fn schedule(&mut self, at: Instant, event: Event) -> EventHandle {
        self.queue.push(at, event)
    }

    /// Tasks finished so far.
    pub fn finished(&self) -> usize {
        self.finished
    }

    /// Runs until every task has ended or nothing is left to happen, calling
    /// `progress(finished, total)` now and then. Returns the report.
    pub fn run(mut self, mut progress: impl FnMut(usize, usize)) -> FleetReport {
        let total = self.config.devices;
        let mut steps: u64 = 0;
        while let Some((at, event)) = self.queue.pop() {
            if self.finished == total {
                break;
            }
            self.now = self.now.max(at);
            self.dispatch(event);
            steps += 1;
            if steps % 65_536 == 0 {
                progress(self.finished, total);
            }
        }
        progress(self.finished, total);
        self.report()
    }

    fn report(mut self) -> FleetReport {
        // Tasks still running when nothing was left to happen are stuck.
        self.report.stuck = self.slots.iter().filter(|s| s.member.is_some()).count() as u64
            + (self.config.devices - self.next_to_start) as u64;
        let durations = &mut self.durations;
        durations.sort_unstable();
        let pick = |q: f64| -> f64 {
            if durations.is_empty() {
                return 0.0;
            }
            let index = ((durations.len() as f64 - 1.0) * q).round() as usize;
            f64::from(durations[index]) / 1000.0
        };
        self.report.durations = Durations { p50: pick(0.5), p99: pick(0.99), max: pick(1.0) };
        self.report
    }

    /// The member `at` names, unless its upgrade has ended.
    fn member(&mut self, at: MemberRef) -> Option<&mut Member> {
        member_in(&mut self.slots, at)
    }

    fn dispatch(&mut self, event: Event) {
        let now = self.now;
        match event {
            Event::DeviceTimer(at) => {
                let images = &self.images;
                let Some(member) = member_in(&mut self.slots, at) else { return };
                if member.device_timer.is_some_and(|(t, _)| t <= now) {
                    member.device_timer = None;
                    member.device.handle_timeout(now, images);
                }
                self.after_device(at);
            }
            Event::TaskTimer(at) => {
                let Some(member) = self.member(at) else { return };
                if member.task_timer.is_some_and(|(t, _)| t <= now) {
                    member.task_timer = None;
                    let _ = member.task.handle_timeout(now);
                }
                self.after_task(at);
            }
            Event::Downlink(at, id) => {
                let images = &self.images;
                let Some(member) = member_in(&mut self.slots, at) else { return };
                let Some(outstanding) = member.outstanding.as_ref().filter(|o| o.id == id) else { return };
                let operation = outstanding.operation.clone();
                member.device.handle(now, id, operation, images);
                self.after_device(at);
            }
            Event::Uplink(at, message) => {
                if let Some(message) = self.uplinks.take(message) {
                    self.uplink(at, message);
                }
            }
            Event::Retransmit(at, id, attempt) => {
                let Some(member) = self.member(at) else { return };
                let Some(outstanding) = member.outstanding.as_mut().filter(|o| o.id == id) else { return };
                outstanding.retransmit = None;
                if attempt > MAX_RETRANSMIT {
                    member.outstanding = None;
                    let _ = member.task.handle(now, TaskInput::TransportFailure { id });
                    self.after_task(at);
                } else {
                    self.send_downlink(at, id, attempt);
                }
            }
            Event::UplinkRetransmit(at, message, attempt) => {
                if let Some(message) = self.uplinks.take(message) {
                    self.send_uplink(at, message, attempt);
                }
            }
        }
    }

    fn link(&self, at: MemberRef, down: bool) -> LinkParams {
        let slot = &self.slots[at.slot as usize];
        // A message of an upgrade that has ended travels on no device's link.
        match slot.member.as_ref().filter(|_| slot.generation == at.generation) {
            Some(member) => {
                let profile = member.device.profile();
                if down { profile.downlink } else { profile.uplink }
            }
            None => LinkParams::default(),
        }
    }

    fn send_downlink(&mut self, at: MemberRef, id: RequestId, attempt: u8) {
        self.report.downlinks += 1;
        let link = self.link(at, true);
        let timeout = ACK_TIMEOUT * (1u32 << attempt);
        if !self.rng.chance(link.loss_ppm) {
            let delay = self.delay(&link);
            self.schedule(self.now + delay, Event::Downlink(at, id));
            if self.rng.chance(link.duplicate_ppm) {
                let delay = self.delay(&link);
                self.schedule(self.now + delay, Event::Downlink(at, id));
            }
        }
        let handle = self.schedule(self.now + timeout, Event::Retransmit(at, id, attempt + 1));
        if let Some(outstanding) = self.member(at).and_then(|m| m.outstanding.as_mut()) {
            outstanding.retransmit = Some(handle);
        }
    }

    fn delay(&mut self, link: &LinkParams) -> Duration {
        link.latency + Duration::from_millis(self.rng.below(link.jitter.as_millis() as u64 + 1))
    }

    /// Device messages: confirmable ones (Register, Update, Send, De-register)
    /// are resent until they get through; responses and notifications are not.
    fn send_uplink(&mut self, at: MemberRef, message: ClientMessage, attempt: u8) {
        self.report.uplinks += 1;
        if let ClientMessage::Notify { payload, .. } | ClientMessage::Send { payload, .. } = &message {
            self.report.notify_bytes += payload.len() as u64;
        }
        let link = self.link(at, false);
        let confirmable = matches!(
            message,
            ClientMessage::Register(_)
                | ClientMessage::Update { .. }
                | ClientMessage::Send { .. }
                | ClientMessage::Deregister
        );
        if self.rng.chance(link.loss_ppm) {
            if confirmable && attempt < MAX_RETRANSMIT {
                let timeout = ACK_TIMEOUT * (1u32 << attempt);
                let stored = self.uplinks.insert(message);
                self.schedule(self.now + timeout, Event::UplinkRetransmit(at, stored, attempt + 1));
            } else if confirmable {
                let now = self.now;
                if let Some(member) = self.member(at) {
                    member.device.uplink_failed(now, &message);
                }
                self.after_device(at);
            }
            return;
        }
        if self.rng.chance(link.duplicate_ppm) {
            let delay = self.delay(&link);
            let stored = self.uplinks.insert(message.clone());
            self.schedule(self.now + delay, Event::Uplink(at, stored));
        }
        let delay = self.delay(&link);
        let stored = self.uplinks.insert(message);
        self.schedule(self.now + delay, Event::Uplink(at, stored));
    }

    fn uplink(&mut self, at: MemberRef, message: ClientMessage) {
        let now = self.now;
        let Some(member) = member_in(&mut self.slots, at) else { return };
        let mut answered = None;
        let input = match &message {
            ClientMessage::Register(registration) => TaskInput::Registered(registration),
            ClientMessage::Update { .. } => TaskInput::RegistrationUpdated,
            ClientMessage::Deregister => TaskInput::Deregistered,
            ClientMessage::Response { id, code, format, payload } => {
                if member.outstanding.as_ref().is_some_and(|o| o.id == *id) {
                    answered = member.outstanding.take().and_then(|o| o.retransmit);
                }
                TaskInput::Response { id: *id, code: *code, format: *format, payload }
            }
            ClientMessage::Notify { observation, format, payload, .. } => {
                TaskInput::Notification { observation: *observation, format: *format, payload }
            }
            ClientMessage::Send { format, payload } => TaskInput::Send { format: *format, payload },
        };
        let _ = member.task.handle(now, input);
        if let Some(handle) = answered {
            self.queue.cancel(handle);
        }
        self.after_task(at);
    }

    fn after_device(&mut self, at: MemberRef) {
        let now = self.now;
        loop {
            let Some(member) = self.member(at) else { return };
            let Some(message) = member.device.poll_message() else { break };
            self.send_uplink(at, message, 0);
        }
        let Some(member) = self.member(at) else { return };
        if let Some(due) = member.device.poll_timeout() {
            self.arm(at, due.max(now), Timer::Device);
        }
    }

    /// Sets a member's device or task timer to `due`, cancelling the one it
    /// replaces (nothing to do when it is already set to `due`).
    fn arm(&mut self, at: MemberRef, due: Instant, timer: Timer) {
        let Some(member) = self.member(at) else { return };
        let slot = match timer {
            Timer::Device => &mut member.device_timer,
            Timer::Task => &mut member.task_timer,
        };
        let previous = *slot;
        if previous.is_some_and(|(t, _)| t == due) {
            return;
        }
        if let Some((_, handle)) = previous {
            self.queue.cancel(handle);
        }
        let event = match timer {
            Timer::Device => Event::DeviceTimer(at),
            Timer::Task => Event::TaskTimer(at),
        };
        let handle = self.schedule(due, event);
        if let Some(member) = self.member(at) {
            let slot = match timer {
                Timer::Device => &mut member.device_timer,
                Timer::Task => &mut member.task_timer,
            };
            *slot = Some((due, handle));
        }
    }

    fn after_task(&mut self, at: MemberRef) {
        let now = self.now;
        loop {
            let Some(member) = self.member(at) else { return };
            // One request at a time: the task holds the next until this one ends.
            let Some(output) = member.task.poll_output() else { break };
            self.on_task_output(at, output);
        }
        let Some(member) = member_in(&mut self.slots, at) else { return };
        // A failed task that watches its device for a late success stays.
        if let Some(outcome) = member.task.outcome().filter(|_| !member.task.watching()) {
            // Done: count it, free the device and the task, start the next one.
            match outcome {
                Outcome::Succeeded { .. } => self.report.succeeded += 1,
                Outcome::Failed(failure) => *self.report.failed.entry(failure.reason()).or_insert(0) += 1,
                Outcome::LateSuccess { failure, .. } => {
                    *self.report.late_succeeded.entry(failure.reason()).or_insert(0) += 1
                }
            }
            let elapsed = now.saturating_duration_since(member.started_at).as_millis();
            self.durations.push(u32::try_from(elapsed).unwrap_or(u32::MAX));
            let handles = [
                member.device_timer.map(|(_, h)| h),
                member.task_timer.map(|(_, h)| h),
                member.outstanding.as_ref().and_then(|o| o.retransmit),
            ];
            for handle in handles.into_iter().flatten() {
                self.queue.cancel(handle);
            }
            let slot = &mut self.slots[at.slot as usize];
            slot.member = None;
            slot.generation = slot.generation.wrapping_add(1);
            self.free_slots.push(at.slot);
            self.finished += 1;
            self.active -= 1;
            self.start_more();
            return;
        }
        if let Some(due) = member.task.poll_timeout() {
            self.arm(at, due.max(now), Timer::Task);
        }
    }

    fn on_task_output(&mut self, at: MemberRef, output: TaskOutput) {
        let TaskOutput::Request(TaskRequest { id, kind }) = output else { return };
        let operation = match kind {
            RequestKind::Operation(operation) => operation,
            RequestKind::PackageBlock { block, total_size } => {
                let start = block.offset().min(total_size) as usize;
                let end = (block.offset() + u64::from(block.size)).min(total_size) as usize;
                Operation::WriteBlock {
                    path: Path::resource(5, 0, 0),
                    format: ContentFormat::Opaque,
                    block,
                    total_size: Some(total_size),
                    payload: self.image.slice(start..end),
                }
            }
        };
        let Some(member) = self.member(at) else { return };
        if let Some(handle) = member.outstanding.take().and_then(|o| o.retransmit) {
            self.queue.cancel(handle);
        }
        if let Some(member) = self.member(at) {
            member.outstanding = Some(Outstanding { id, operation, retransmit: None });
        }
        self.send_downlink(at, id, 0);
    }
}

/// The member `at` names, unless its upgrade has ended.
fn member_in(slots: &mut [Slot], at: MemberRef) -> Option<&mut Member> {
    let slot = slots.get_mut(at.slot as usize)?;
    if slot.generation != at.generation {
        return None;
    }
    slot.member.as_mut()
}

/// Runs one fleet simulation.
pub fn run_fleet(config: FleetConfig, progress: impl FnMut(usize, usize)) -> FleetReport {
    Fleet::new(config).run(progress)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn tag(event: &Event) -> u64 {
        match event {
            Event::Downlink(_, id) => *id,
            _ => u64::MAX,
        }
    }

    proptest! {
        /// The wheel gives events back exactly as one binary heap ordered by
        /// (time, insertion) would, across buckets, the far heap and jumps,
        /// and never gives back a cancelled one, while events are added as
        /// others come out.
        #[test]
        fn events_come_out_in_time_order_and_cancelled_ones_never(
            steps in prop::collection::vec((0u64..3_000_000, any::<bool>(), 0u8..4), 1..300),
        ) {
            let member = MemberRef { slot: 0, generation: 0 };
            let mut queue = EventQueue::new();
            let mut model: Vec<(Instant, u64, u64)> = Vec::new(); // (time, insertion, tag)
            let mut handles = Vec::new();
            let mut now = Instant::ZERO;
            let mut inserted = 0u64;
            for (delay, cancel, pops) in steps {
                // Delays from milliseconds to ~50 minutes: past the wheel's window.
                let at = now + Duration::from_millis(delay / if delay % 3 == 0 { 1 } else { 1000 });
                inserted += 1;
                let handle = queue.push(at, Event::Downlink(member, inserted));
                model.push((at, inserted, inserted));
                handles.push((handle, inserted));
                if cancel && handles.len() > 1 {
                    let (handle, cancelled) = handles.swap_remove((inserted as usize * 7) % handles.len());
                    queue.cancel(handle);
                    model.retain(|&(_, _, t)| t != cancelled);
                }
                for _ in 0..pops {
                    model.sort();
                    let expected = (!model.is_empty()).then(|| model.remove(0));
                    let got = queue.pop().map(|(at, event)| (at, tag(&event)));
                    prop_assert_eq!(got, expected.map(|(at, _, t)| (at, t)));
                    if let Some((at, _)) = got {
                        now = at;
                    }
                }
            }
            model.sort();
            for (at, _, t) in model {
                prop_assert_eq!(queue.pop().map(|(a, e)| (a, tag(&e))), Some((at, t)));
            }
            prop_assert!(queue.pop().is_none());
        }
    }
}
