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
    /// Upgrades that succeeded.
    pub succeeded: u64,
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

#[derive(Debug)]
enum Event {
    DeviceTimer(u32),
    TaskTimer(u32),
    /// A request reaches a device.
    Downlink(u32, RequestId),
    /// A device message reaches the server.
    Uplink(u32, Box<ClientMessage>),
    /// A confirmable request's retransmission timer.
    Retransmit(u32, RequestId, u8),
    /// A confirmable uplink's retransmission (the device resends it).
    UplinkRetransmit(u32, Box<ClientMessage>, u8),
}

/// Heap entries ordered by time, then insertion.
struct Scheduled(Instant, u64, Event);

impl PartialEq for Scheduled {
    fn eq(&self, other: &Self) -> bool {
        (self.0, self.1) == (other.0, other.1)
    }
}
impl Eq for Scheduled {}
impl PartialOrd for Scheduled {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Scheduled {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        (self.0, self.1).cmp(&(other.0, other.1))
    }
}

/// The simulation's event queue: a timing wheel of `BUCKETS` buckets of
/// `BUCKET_MS` each, with a binary heap for the bucket being run and one for
/// events beyond the wheel. Events come out exactly as from one binary heap
/// ordered by (time, insertion), at a fraction of the cost for millions of
/// pending events.
struct EventQueue {
    current: BinaryHeap<Reverse<Scheduled>>,
    buckets: Vec<Vec<Scheduled>>,
    /// Absolute number of the bucket `current` holds.
    cursor: u64,
    far: BinaryHeap<Reverse<Scheduled>>,
    len: usize,
}

const BUCKET_MS: u64 = 16;
const BUCKETS: u64 = 1 << 17;

impl EventQueue {
    fn new() -> EventQueue {
        EventQueue {
            current: BinaryHeap::new(),
            buckets: (0..BUCKETS).map(|_| Vec::new()).collect(),
            cursor: 0,
            far: BinaryHeap::new(),
            len: 0,
        }
    }

    fn push(&mut self, entry: Scheduled) {
        self.len += 1;
        let bucket = entry.0.as_millis() / BUCKET_MS;
        if bucket <= self.cursor {
            self.current.push(Reverse(entry));
        } else if bucket < self.cursor + BUCKETS {
            self.buckets[(bucket % BUCKETS) as usize].push(entry);
        } else {
            self.far.push(Reverse(entry));
        }
    }

    fn pop(&mut self) -> Option<Scheduled> {
        while self.current.is_empty() {
            if self.len == 0 {
                return None;
            }
            self.cursor += 1;
            let slot = &mut self.buckets[(self.cursor % BUCKETS) as usize];
            if !slot.is_empty() {
                let entries = std::mem::take(slot);
                self.current.extend(entries.into_iter().map(Reverse));
            }
            // Far events that now fall inside the wheel's window.
            while let Some(Reverse(entry)) = self.far.peek() {
                let bucket = entry.0.as_millis() / BUCKET_MS;
                if bucket >= self.cursor + BUCKETS {
                    break;
                }
                let Some(Reverse(entry)) = self.far.pop() else { break };
                if bucket <= self.cursor {
                    self.current.push(Reverse(entry));
                } else {
                    self.buckets[(bucket % BUCKETS) as usize].push(entry);
                }
            }
            if self.current.is_empty() && self.buckets_empty_hint() {
                // Jump straight to the next far event instead of scanning.
                if let Some(Reverse(entry)) = self.far.peek() {
                    self.cursor = (entry.0.as_millis() / BUCKET_MS).saturating_sub(1);
                }
            }
        }
        self.len -= 1;
        self.current.pop().map(|Reverse(entry)| entry)
    }

    /// True when only far events remain (the wheel holds nothing).
    fn buckets_empty_hint(&self) -> bool {
        self.len == self.far.len()
    }
}

/// A request in flight from the server, retransmitted until answered.
#[derive(Debug, Clone)]
struct Outstanding {
    id: RequestId,
    operation: Operation,
    answered: bool,
}

struct Member {
    device: SimDevice,
    task: UpgradeTask,
    outstanding: Option<Box<Outstanding>>,
    device_timer: Option<Instant>,
    task_timer: Option<Instant>,
    started_at: Instant,
}

/// The simulation.
#[allow(missing_debug_implementations)]
pub struct Fleet {
    config: FleetConfig,
    /// One slot per device: `None` before its upgrade starts and after it ends.
    members: Vec<Option<Box<Member>>>,
    images: ImageStore,
    image: Bytes,
    queue: EventQueue,
    seq: u64,
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
            members: (0..devices).map(|_| None).collect(),
            images,
            image,
            queue: EventQueue::new(),
            seq: 0,
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
        while self.active < limit && self.next_to_start < self.members.len() {
            let i = self.next_to_start;
            self.next_to_start += 1;
            self.active += 1;
            let profile = self.config.profile.for_device(self.config.seed, i as u64);
            let mut task = UpgradeTask::new(self.config.upgrade.clone());
            let _ = task.start(self.now);
            self.members[i] = Some(Box::new(Member {
                device: SimDevice::new(i as u64, profile, self.config.seed, &self.config.initial_version, self.now),
                task,
                outstanding: None,
                device_timer: None,
                task_timer: None,
                started_at: self.now,
            }));
            self.after_task(i as u32);
            self.after_device(i as u32);
        }
    }

    fn schedule(&mut self, at: Instant, event: Event) {
        self.seq += 1;
        self.queue.push(Scheduled(at, self.seq, event));
    }

    /// Tasks finished so far.
    pub fn finished(&self) -> usize {
        self.finished
    }

    /// Runs until every task has ended or nothing is left to happen, calling
    /// `progress(finished, total)` now and then. Returns the report.
    pub fn run(mut self, mut progress: impl FnMut(usize, usize)) -> FleetReport {
        let total = self.members.len();
        let mut steps: u64 = 0;
        while let Some(Scheduled(at, _, event)) = self.queue.pop() {
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
        self.report.stuck = self.members.iter().filter(|m| m.is_some()).count() as u64
            + (self.members.len() - self.next_to_start) as u64;
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

    fn member(&mut self, i: u32) -> Option<&mut Member> {
        self.members[i as usize].as_deref_mut()
    }

    fn dispatch(&mut self, event: Event) {
        let now = self.now;
        match event {
            Event::DeviceTimer(i) => {
                let Some(member) = self.members[i as usize].as_deref_mut() else { return };
                if member.device_timer.is_some_and(|t| t <= now) {
                    member.device_timer = None;
                    member.device.handle_timeout(now, &self.images);
                }
                self.after_device(i);
            }
            Event::TaskTimer(i) => {
                let Some(member) = self.member(i) else { return };
                if member.task_timer.is_some_and(|t| t <= now) {
                    member.task_timer = None;
                    let _ = member.task.handle_timeout(now);
                }
                self.after_task(i);
            }
            Event::Downlink(i, id) => {
                let images = &self.images;
                let Some(member) = self.members[i as usize].as_deref_mut() else { return };
                if let Some(outstanding) = member.outstanding.as_ref().filter(|o| o.id == id) {
                    let operation = outstanding.operation.clone();
                    member.device.handle(now, id, operation, images);
                }
                self.after_device(i);
            }
            Event::Uplink(i, message) => self.uplink(i, *message),
            Event::Retransmit(i, id, attempt) => {
                let Some(member) = self.member(i) else { return };
                let pending = member.outstanding.as_ref().is_some_and(|o| o.id == id && !o.answered);
                if !pending {
                    return;
                }
                if attempt > MAX_RETRANSMIT {
                    member.outstanding = None;
                    let _ = member.task.handle(now, TaskInput::TransportFailure { id });
                    self.after_task(i);
                } else {
                    self.send_downlink(i, id, attempt);
                }
            }
            Event::UplinkRetransmit(i, message, attempt) => self.send_uplink(i, *message, attempt),
        }
    }

    fn link(&self, i: u32, down: bool) -> LinkParams {
        match self.members[i as usize].as_deref() {
            Some(member) => {
                let profile = member.device.profile();
                if down { profile.downlink } else { profile.uplink }
            }
            None => LinkParams::default(),
        }
    }

    fn send_downlink(&mut self, i: u32, id: RequestId, attempt: u8) {
        self.report.downlinks += 1;
        let link = self.link(i, true);
        let timeout = ACK_TIMEOUT * (1u32 << attempt);
        if !self.rng.chance(link.loss_ppm) {
            let delay = self.delay(&link);
            self.schedule(self.now + delay, Event::Downlink(i, id));
            if self.rng.chance(link.duplicate_ppm) {
                let delay = self.delay(&link);
                self.schedule(self.now + delay, Event::Downlink(i, id));
            }
        }
        self.schedule(self.now + timeout, Event::Retransmit(i, id, attempt + 1));
    }

    fn delay(&mut self, link: &LinkParams) -> Duration {
        link.latency + Duration::from_millis(self.rng.below(link.jitter.as_millis() as u64 + 1))
    }

    /// Device messages: confirmable ones (Register, Update, Send, De-register)
    /// are resent until they get through; responses and notifications are not.
    fn send_uplink(&mut self, i: u32, message: ClientMessage, attempt: u8) {
        self.report.uplinks += 1;
        if let ClientMessage::Notify { payload, .. } | ClientMessage::Send { payload, .. } = &message {
            self.report.notify_bytes += payload.len() as u64;
        }
        let link = self.link(i, false);
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
                self.schedule(self.now + timeout, Event::UplinkRetransmit(i, Box::new(message), attempt + 1));
            }
            return;
        }
        if self.rng.chance(link.duplicate_ppm) {
            let delay = self.delay(&link);
            self.schedule(self.now + delay, Event::Uplink(i, Box::new(message.clone())));
        }
        let delay = self.delay(&link);
        self.schedule(self.now + delay, Event::Uplink(i, Box::new(message)));
    }

    fn uplink(&mut self, i: u32, message: ClientMessage) {
        let now = self.now;
        let Some(member) = self.member(i) else { return };
        let input = match &message {
            ClientMessage::Register(registration) => TaskInput::Registered(registration),
            ClientMessage::Update { .. } => TaskInput::RegistrationUpdated,
            ClientMessage::Deregister => TaskInput::Deregistered,
            ClientMessage::Response { id, code, format, payload } => {
                if let Some(outstanding) = member.outstanding.as_mut().filter(|o| o.id == *id) {
                    outstanding.answered = true;
                }
                TaskInput::Response { id: *id, code: *code, format: *format, payload }
            }
            ClientMessage::Notify { observation, format, payload, .. } => {
                TaskInput::Notification { observation: *observation, format: *format, payload }
            }
            ClientMessage::Send { format, payload } => TaskInput::Send { format: *format, payload },
        };
        let _ = member.task.handle(now, input);
        if member.outstanding.as_ref().is_some_and(|o| o.answered) {
            member.outstanding = None;
        }
        self.after_task(i);
    }

    fn after_device(&mut self, i: u32) {
        let now = self.now;
        loop {
            let Some(member) = self.member(i) else { return };
            let Some(message) = member.device.poll_message() else { break };
            self.send_uplink(i, message, 0);
        }
        let Some(member) = self.member(i) else { return };
        if let Some(at) = member.device.poll_timeout() {
            if member.device_timer.is_none_or(|t| at < t || t < now) {
                member.device_timer = Some(at);
                self.schedule(at.max(now), Event::DeviceTimer(i));
            }
        }
    }

    fn after_task(&mut self, i: u32) {
        let now = self.now;
        loop {
            let Some(member) = self.member(i) else { return };
            // One request at a time: the task holds the next until this one ends.
            let Some(output) = member.task.poll_output() else { break };
            self.on_task_output(i, output);
        }
        let Some(member) = self.members[i as usize].as_deref_mut() else { return };
        if let Some(outcome) = member.task.outcome() {
            // Done: count it, free the device and the task, start the next one.
            match outcome {
                Outcome::Succeeded { .. } => self.report.succeeded += 1,
                Outcome::Failed(failure) => *self.report.failed.entry(failure.reason()).or_insert(0) += 1,
            }
            let elapsed = now.saturating_duration_since(member.started_at).as_millis();
            self.durations.push(u32::try_from(elapsed).unwrap_or(u32::MAX));
            self.members[i as usize] = None;
            self.finished += 1;
            self.active -= 1;
            self.start_more();
            return;
        }
        if let Some(at) = member.task.poll_timeout() {
            if member.task_timer.is_none_or(|t| at < t || t < now) {
                member.task_timer = Some(at);
                self.schedule(at.max(now), Event::TaskTimer(i));
            }
        }
    }

    fn on_task_output(&mut self, i: u32, output: TaskOutput) {
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
        if let Some(member) = self.member(i) {
            member.outstanding = Some(Box::new(Outstanding { id, operation, answered: false }));
        }
        self.send_downlink(i, id, 0);
    }
}

/// Runs one fleet simulation.
pub fn run_fleet(config: FleetConfig, progress: impl FnMut(usize, usize)) -> FleetReport {
    Fleet::new(config).run(progress)
}
