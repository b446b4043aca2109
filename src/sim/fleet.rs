//! A fleet simulation: one [`Endpoint`], the server a real deployment runs,
//! serving every [`SimDevice`] being upgraded, connected to them by the
//! simulated network with CoAP's confirmable retransmissions, in virtual time.
//!
//! This is where the server and the device sides meet (the server never
//! imports the device). The fleet is the endpoint's binding, as the `coap`
//! feature's is over sockets: it turns each device's [`ClientMessage`] into
//! the [`DeviceRequest`] or [`DeviceResponse`] that message is on the wire
//! (Register as `POST /rd?ep=…&lt=…&lwm2m=…&b=…` with its object links,
//! Update and De-register at the location the 2.01 named, Send as
//! `POST /dp`), and each [`Transmit`](crate::server::Transmit) into the [`Operation`] the device
//! executes (a pushed block is a Block1 write of `/5/0/0`). The endpoint does
//! everything else a server does: registrations and their lifetimes, tokens,
//! observations and their freshness, the Block1 push and the tasks.
//!
//! The fleet models CoAP's messages, not their bytes: every request to a
//! device gets a message id (the device's [`RequestId`]: it repeats its
//! answer to a retransmission of the same id when it de-duplicates, and names
//! an observation by the id of the Observe that started it), and the fleet
//! remembers which exchange token each id carries. A response is piggybacked
//! on the ACK of its request: it stops the request's retransmissions, and a
//! copy arriving after its exchange ended is dropped, as a CoAP binding drops
//! an ACK it no longer waits for. The answer to a device's confirmable
//! uplink (Register, Update, Send, De-register) is the endpoint's reply, given
//! at once; the fleet hands it back to the device as that uplink's
//! acknowledgement ([`SimDevice::uplink_acknowledged`]), so a device under
//! NSTART = 1 sends its next confirmable uplink only then.
//!
//! Each device is configured for LwM2M Send only when the upgrade's strategy
//! is [`Strategy::Send`] (S4), as an operator configures devices for it; under
//! the other strategies devices do not send.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap};
use std::fmt::Write as _;
use std::sync::Arc;
use std::time::Duration;

use super::campaign::CampaignState;
use super::{FleetProfile, ImageStore, LinkParams, Rng, SimDevice, SimImage, UplinkStamp, image_bytes, push_decimal};
use crate::campaign::{CampaignDevice, CampaignOutput, UpgradeReport};
use crate::model::{
    Binding, ClientMessage, ContentFormat, Instant, ObjectList, Operation, Path, Registration, RequestId, ResponseCode,
};
use crate::server::{
    DeviceId, DeviceRequest, DeviceResponse, DownlinkRequest, Endpoint, EndpointConfig, EndpointEvent, EndpointOutput,
    Location, MAX_TRANSMIT_WAIT, MemoryImage, Method, Outcome, RegistrationLimits, Strategy, TaskEvent, Token,
    UpgradeConfig, UpgradeTask,
};

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
    /// Upgrades whose task fell back to reads (C6,
    /// [`UpgradeConfig::fallback`]): the devices whose `strategy_used` is
    /// not the configured strategy.
    pub fell_back: u64,
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
    /// The endpoint's next deadline (one such event is queued at a time).
    EndpointTimer,
    /// A request (the message with this id) reaches a device.
    Downlink(MemberRef, RequestId),
    /// A device message (held in the uplink store) reaches the server.
    Uplink(MemberRef, u32),
    /// A confirmable request's retransmission timer.
    Retransmit(MemberRef, RequestId, u8),
    /// A confirmable uplink's retransmission (the device resends it).
    UplinkRetransmit(MemberRef, u32, u8),
    /// The campaign's next deadline (one such event is queued at a time).
    CampaignTimer,
    /// A campaign's device (by its campaign index) registers for the first
    /// time, or a companion installed the image on it.
    CampaignSeen(u32),
    /// The operator's command (by its place in the simulation's list).
    CampaignCommand(u32),
}

/// An event in the queue, to cancel it by.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct EventHandle {
    node: u32,
    seq: u64,
}

/// A queued event's handle, as the campaign's side of the fleet keeps it.
pub(super) type EventHandleSlot = EventHandle;

const NIL: u32 = u32::MAX;

/// One queued event in the queue's arena.
#[derive(Debug)]
struct Node {
    /// Insertion number (ties in time come out in insertion order); 0 while
    /// the node is free or its event was cancelled.
    seq: u64,
    /// When its event is due.
    at: Instant,
    /// Next node of its bucket's list, or of the free list.
    next: u32,
    /// In a bucket's list (else in a heap, or free).
    linked: bool,
    /// None while the node is free or its event was cancelled.
    event: Option<Event>,
}

/// Heap keys: time, insertion number, node.
type Key = Reverse<(Instant, u64, u32)>;

/// The simulation's event queue: a timing wheel of `BUCKETS` buckets of
/// `BUCKET_MS` each, with a binary heap for the bucket being run and one for
/// events beyond the wheel. Events come out exactly as from one binary heap
/// ordered by (time, insertion). Events live in an arena; a bucket is a list
/// threaded through its events' nodes (its head in a table of 4-byte
/// entries), so queueing an event writes only its own node and one table
/// entry, where vectors per bucket cost two cache misses per event in a
/// large fleet (the bucket's vector and its buffer). After warm-up nothing is
/// allocated per event. An event can be cancelled: a node in a heap is freed
/// at once (its key is skipped when it comes up), one in a bucket's list when
/// the wheel reaches that bucket; neither wakes anything.
struct EventQueue {
    nodes: Vec<Node>,
    free: u32,
    /// First node of each bucket's list (`NIL`: empty).
    heads: Vec<u32>,
    current: BinaryHeap<Key>,
    /// Absolute number of the bucket `current` holds.
    cursor: u64,
    far: BinaryHeap<Key>,
    /// Events in bucket lists, `current` and `far`, cancelled ones included.
    len: usize,
    seq: u64,
}

const BUCKET_MS: u64 = 16;
const BUCKETS: u64 = 1 << 16;

impl EventQueue {
    fn new() -> EventQueue {
        EventQueue {
            nodes: Vec::new(),
            free: NIL,
            heads: vec![NIL; BUCKETS as usize],
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
        let node = Node { seq, at, next: NIL, linked: false, event: Some(event) };
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
        self.place(index);
        EventHandle { node: index, seq }
    }

    /// Puts a live node in its bucket's list, the current heap or the far heap.
    fn place(&mut self, index: u32) {
        let node = &mut self.nodes[index as usize];
        let bucket = node.at.as_millis() / BUCKET_MS;
        if bucket <= self.cursor {
            self.current.push(Reverse((node.at, node.seq, index)));
        } else if bucket < self.cursor + BUCKETS {
            let head = &mut self.heads[(bucket % BUCKETS) as usize];
            node.next = *head;
            node.linked = true;
            *head = index;
        } else {
            self.far.push(Reverse((node.at, node.seq, index)));
        }
    }

    /// Returns a node to the free list.
    fn release(&mut self, index: u32) {
        let node = &mut self.nodes[index as usize];
        node.seq = 0;
        node.event = None;
        node.linked = false;
        node.next = self.free;
        self.free = index;
    }

    /// Sets a one-at-a-time timer (`timer`: when it fires and its event) to
    /// fire `event` at `due`: nothing when it already does, else the queued
    /// one is cancelled and, if `due` is set, a new one queued.
    fn rearm(&mut self, timer: &mut Option<(Instant, EventHandle)>, due: Option<Instant>, event: Event) {
        if timer.map(|(t, _)| t) == due {
            return;
        }
        if let Some((_, handle)) = timer.take() {
            self.cancel(handle);
        }
        if let Some(due) = due {
            *timer = Some((due, self.push(due, event)));
        }
    }

    /// Takes back a queued event; a handle to one already run does nothing.
    /// A node in a heap is freed at once (so the arena holds few dead
    /// events); its key stays queued and is skipped when it comes up, as the
    /// node no longer carries its insertion number. A node in a bucket's
    /// list stays there, empty, until the wheel reaches the bucket.
    fn cancel(&mut self, handle: EventHandle) {
        let Some(node) = self.nodes.get_mut(handle.node as usize) else { return };
        if node.seq != handle.seq {
            return;
        }
        if node.linked {
            node.seq = 0;
            node.event = None;
        } else {
            self.release(handle.node);
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
            let event = node.event.take();
            self.release(index);
            if let Some(event) = event {
                return Some((at, event));
            }
        }
    }

    /// Moves the cursor to the next bucket and loads it into `current`.
    fn advance(&mut self) {
        self.cursor += 1;
        let slot = (self.cursor % BUCKETS) as usize;
        let mut at = core::mem::replace(&mut self.heads[slot], NIL);
        while at != NIL {
            let node = &mut self.nodes[at as usize];
            let next = node.next;
            if node.seq == 0 {
                // Cancelled while in the list.
                self.len -= 1;
                self.release(at);
            } else {
                node.linked = false;
                self.current.push(Reverse((node.at, node.seq, at)));
            }
            at = next;
        }
        // Far events that now fall inside the wheel's window.
        while let Some(&Reverse((at, seq, index))) = self.far.peek() {
            if at.as_millis() / BUCKET_MS >= self.cursor + BUCKETS {
                break;
            }
            self.far.pop();
            if self.nodes[index as usize].seq == seq {
                self.place(index);
            } else {
                // Cancelled: its node was freed already.
                self.len -= 1;
            }
        }
        if self.current.is_empty() && self.len == self.far.len() {
            // Only far events remain: jump to the next one instead of scanning.
            if let Some(&Reverse((at, _, _))) = self.far.peek() {
                self.cursor = self.cursor.max((at.as_millis() / BUCKET_MS).saturating_sub(1));
            }
        }
    }
}

/// A device message and, for a confirmable one, the device's stamp for it.
type Uplink = (ClientMessage, Option<UplinkStamp>);

/// Uplinks in flight, each stored once and named by an index in events.
#[derive(Default)]
struct UplinkStore {
    messages: Vec<Option<Uplink>>,
    free: Vec<u32>,
}

impl UplinkStore {
    fn insert(&mut self, message: Uplink) -> u32 {
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

    fn take(&mut self, index: u32) -> Option<Uplink> {
        let message = self.messages.get_mut(index as usize)?.take();
        if message.is_some() {
            self.free.push(index);
        }
        message
    }
}

/// A request in flight to a device, retransmitted until answered.
#[derive(Debug)]
struct Outstanding {
    /// Its message id (what the device sees as the request's id).
    message: RequestId,
    /// The endpoint's exchange it carries.
    token: Token,
    operation: Operation,
    retransmit: Option<EventHandle>,
}

struct Member {
    device: SimDevice,
    /// Its handle in the endpoint.
    id: DeviceId,
    /// Its registration's location, from the endpoint's 2.01.
    location: Option<Location>,
    /// Requests in flight (usually one: the task asks one thing at a time).
    outstanding: Vec<Outstanding>,
    /// The message ids of the Observes sent to it, with their tokens: its
    /// notifications name the Observe's id.
    observations: Vec<(RequestId, Token)>,
    device_timer: Option<(Instant, EventHandle)>,
    started_at: Instant,
    /// Its index in the campaign driving the fleet (unused without one).
    campaign: u32,
}

/// A place for one running upgrade; slots are reused as upgrades end. A
/// slot's number is its device's peer address at the endpoint.
struct Slot {
    generation: u32,
    member: Option<Member>,
}

/// The simulation.
#[allow(missing_debug_implementations)]
pub struct Fleet {
    config: FleetConfig,
    /// The server: it serves every member, and forgets each as it leaves.
    endpoint: Endpoint<u32>,
    /// The queued [`Event::EndpointTimer`], at the endpoint's deadline.
    endpoint_timer: Option<(Instant, EventHandle)>,
    /// The running upgrades, stored densely (at most the concurrency limit).
    slots: Vec<Slot>,
    free_slots: Vec<u32>,
    /// The slot of each member, by its handle's index in the endpoint.
    by_device: Vec<Option<(DeviceId, u32)>>,
    images: ImageStore,
    queue: EventQueue,
    uplinks: UplinkStore,
    rng: Rng,
    now: Instant,
    /// The last message id given to a request.
    message_id: RequestId,
    /// Link lists as Register payloads, by the objects they list (a fleet's
    /// devices register with a handful of different ones).
    links: Vec<(ObjectList, String)>,
    /// The Uri-Query values of the Register being sent, reused.
    query: String,
    report: FleetReport,
    durations: Vec<u32>,
    next_to_start: usize,
    active: usize,
    finished: usize,
    /// Devices the endpoint refused an upgrade (none while the device table
    /// is as large as the concurrency limit): counted as stuck.
    refused: u64,
    /// The campaign that chooses which upgrade starts when, if one does
    /// ([`run_campaign`](super::run_campaign)); else upgrades start in order.
    campaign: Option<Box<CampaignState>>,
}

impl Fleet {
    /// Builds the fleet; upgrades start at time zero up to the concurrency
    /// limit, then one for each that ends. Devices register within their first
    /// seconds.
    pub fn new(config: FleetConfig) -> Fleet {
        Fleet::build(config, None)
    }

    /// The fleet, its upgrades chosen by `campaign` if given.
    pub(super) fn build(config: FleetConfig, campaign: Option<Box<CampaignState>>) -> Fleet {
        let upgrade = config.upgrade.clone();
        let version = upgrade.target_version.clone().unwrap_or_else(|| "2.0.0".into());
        let mut images = ImageStore::new();
        images.insert(upgrade.package_uri(), SimImage { size: upgrade.image_size, version: Some(version.clone()) });
        let devices = config.devices;
        let limit = if config.concurrency == 0 { devices } else { config.concurrency.min(devices) };
        let mut keys = Rng::derive(config.seed, u64::MAX - 1);
        // A server as examples/server.rs runs it: a lifetime ends
        // MAX_TRANSMIT_WAIT late (the Update renewing it may be in
        // retransmission); tokens keyed from the seed, for determinism; as
        // many devices as upgrades run at once.
        let mut endpoint = Endpoint::new(EndpointConfig {
            registrations: RegistrationLimits {
                max_registrations: limit.max(1),
                expiry_grace: MAX_TRANSMIT_WAIT,
                ..RegistrationLimits::default()
            },
            token_key: [keys.next_u64(), keys.next_u64()],
            ..EndpointConfig::default()
        });
        // The image pushed over Block1.
        let image = image_bytes(&version, upgrade.image_size as usize);
        endpoint.add_image(&upgrade.image_name, Arc::new(MemoryImage::new(image)));
        let mut fleet = Fleet {
            rng: Rng::derive(config.seed, u64::MAX),
            config,
            endpoint,
            endpoint_timer: None,
            slots: Vec::new(),
            free_slots: Vec::new(),
            by_device: Vec::new(),
            images,
            queue: EventQueue::new(),
            uplinks: UplinkStore::default(),
            now: Instant::ZERO,
            message_id: 0,
            links: Vec::new(),
            query: String::new(),
            report: FleetReport::default(),
            durations: Vec::with_capacity(devices),
            next_to_start: 0,
            active: 0,
            finished: 0,
            refused: 0,
            campaign,
        };
        fleet.report.devices = devices;
        fleet.report.task_bytes = std::mem::size_of::<UpgradeTask>();
        fleet.after_endpoint();
        fleet
    }

    /// Starts upgrades while the concurrency limit allows: each device joins
    /// the fleet and the endpoint is told to upgrade it (its task waits for
    /// the device's Register). Returns whether it started any.
    fn start_more(&mut self) -> bool {
        if self.campaign.is_some() {
            return self.campaign_outputs();
        }
        let limit = if self.config.concurrency == 0 { usize::MAX } else { self.config.concurrency };
        let mut started = false;
        while self.active < limit && self.next_to_start < self.config.devices {
            let i = self.next_to_start;
            self.next_to_start += 1;
            let profile = self.config.profile.for_device(self.config.seed, i as u64);
            let mut device =
                SimDevice::new(i as u64, profile, self.config.seed, &self.config.initial_version, self.now);
            // The operator configures devices for Send only for S4; the
            // fleet's transport acknowledges each confirmable uplink.
            device.configure_send(self.config.upgrade.strategy == Strategy::Send);
            device.set_nstart(true);
            let Ok(id) = self.endpoint.upgrade(self.now, &device.endpoint(), self.config.upgrade.clone()) else {
                self.refused += 1;
                continue;
            };
            started = true;
            self.admit(device, id, 0);
        }
        started
    }

    /// A device whose upgrade the endpoint took (`id`) joins the fleet.
    fn admit(&mut self, device: SimDevice, id: DeviceId, campaign: u32) {
        self.active += 1;
        {
            let member = Member {
                device,
                id,
                location: None,
                outstanding: Vec::new(),
                observations: Vec::new(),
                device_timer: None,
                started_at: self.now,
                campaign,
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
            if self.by_device.len() <= id.index() {
                self.by_device.resize(id.index() + 1, None);
            }
            self.by_device[id.index()] = Some((id, at.slot));
            self.after_device(at);
        }
    }

    /// Acts on what the campaign asks for: starts, cancels, settings.
    /// Returns whether it started any upgrade.
    fn campaign_outputs(&mut self) -> bool {
        let now = self.now;
        let mut started = false;
        loop {
            let Some(state) = self.campaign.as_mut() else { return started };
            let Some(output) = state.campaign.poll_output() else { break };
            match output {
                CampaignOutput::Start { device, config } => {
                    let index = device.index() as u32;
                    let (mut device, pace) = state.sim_device(index, self.config.seed, now);
                    if let Some(pace) = pace {
                        device.set_download_pace(pace);
                    }
                    device.configure_send(config.strategy == Strategy::Send);
                    device.set_nstart(true);
                    let uri = config.package_uri();
                    if self.images.get(&uri).is_none() {
                        let version = config.target_version.clone();
                        self.images.insert(uri, SimImage { size: config.image_size, version });
                    }
                    match self.endpoint.upgrade(now, &device.endpoint(), config) {
                        Ok(id) => {
                            state.running.insert(index, id);
                            started = true;
                            self.admit(device, id, index);
                        }
                        Err(_) => self.refused += 1,
                    }
                }
                CampaignOutput::Cancel { device } => {
                    if let Some(&id) = state.running.get(&(device.index() as u32)) {
                        let _ = self.endpoint.cancel(now, id);
                        // The endpoint has outputs to act on: go round again.
                        started = true;
                    }
                }
                CampaignOutput::SetSettings { .. } => state.mobile_fota_marked += 1,
                other => state.events.push((now, other)),
            }
        }
        self.campaign_timer();
        started
    }

    /// Queues the campaign's next deadline.
    fn campaign_timer(&mut self) {
        let Some(state) = self.campaign.as_mut() else { return };
        let due = state.campaign.poll_timeout().map(|due| due.max(self.now));
        self.queue.rearm(&mut state.timer, due, Event::CampaignTimer);
    }

    /// Queues an event for the campaign (its devices' first registrations).
    pub(super) fn schedule_campaign_event(&mut self, at: Instant, index: u32) {
        self.queue.push(at, Event::CampaignSeen(index));
    }

    /// Queues the operator's command `index`.
    pub(super) fn schedule_campaign_command(&mut self, at: Instant, index: u32) {
        self.queue.push(at, Event::CampaignCommand(index));
    }

    /// Whether the run is over: every upgrade ended (the sequential fleet),
    /// or the campaign completed and nothing runs.
    fn done(&self) -> bool {
        match &self.campaign {
            None => self.finished == self.config.devices,
            Some(state) => state.campaign.is_completed() && self.active == 0,
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
    pub fn run(mut self, progress: impl FnMut(usize, usize)) -> FleetReport {
        self.run_events(progress);
        self.report()
    }

    /// Runs a campaign's fleet; then closes the campaign (devices still
    /// waiting are not started) and returns it with the report.
    pub(super) fn run_campaign(mut self, progress: impl FnMut(usize, usize)) -> (FleetReport, Box<CampaignState>) {
        self.run_events(progress);
        let now = self.now;
        let mut state = self.campaign.take().expect("a campaign's fleet");
        // Every targeted upgrade counts as started: the campaign decides.
        self.next_to_start = self.config.devices;
        if !state.campaign.is_completed() {
            // Nothing is left to happen: the campaign closes where it stands.
            let _ = state.campaign.close(now);
            while let Some(output) = state.campaign.poll_output() {
                state.events.push((now, output));
            }
        }
        state.end = now;
        (self.report(), state)
    }

    fn run_events(&mut self, mut progress: impl FnMut(usize, usize)) {
        let total = self.config.devices;
        let mut steps: u64 = 0;
        while let Some((at, event)) = self.queue.pop() {
            if self.done() {
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
    }

    fn report(mut self) -> FleetReport {
        // Tasks still running when nothing was left to happen are stuck.
        let unstarted = if self.campaign.is_some() { 0 } else { self.config.devices - self.next_to_start };
        self.report.stuck =
            self.slots.iter().filter(|s| s.member.is_some()).count() as u64 + unstarted as u64 + self.refused;
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
            Event::EndpointTimer => {
                if self.endpoint_timer.is_some_and(|(t, _)| t <= now) {
                    self.endpoint_timer = None;
                    // The fleet's clock never goes back, the only error.
                    let _ = self.endpoint.handle_timeout(now);
                }
                self.after_endpoint();
            }
            Event::Downlink(at, message) => {
                let images = &self.images;
                let Some(member) = member_in(&mut self.slots, at) else { return };
                let Some(outstanding) = member.outstanding.iter().find(|o| o.message == message) else { return };
                let operation = outstanding.operation.clone();
                member.device.handle(now, message, operation, images);
                self.after_device(at);
            }
            Event::Uplink(at, message) => {
                if let Some(message) = self.uplinks.take(message) {
                    self.uplink(at, message);
                }
            }
            Event::Retransmit(at, message, attempt) => {
                let Some(member) = member_in(&mut self.slots, at) else { return };
                let Some(i) = member.outstanding.iter().position(|o| o.message == message) else { return };
                member.outstanding[i].retransmit = None;
                if attempt > MAX_RETRANSMIT {
                    // CoAP gives up: the endpoint's task hears a transport failure.
                    let token = member.outstanding.swap_remove(i).token;
                    let _ = self.endpoint.exchange_failed(now, token);
                    self.after_endpoint();
                } else {
                    self.endpoint.record_retransmission(member.id);
                    self.send_downlink(at, message, attempt);
                }
            }
            Event::UplinkRetransmit(at, message, attempt) => {
                if let Some(message) = self.uplinks.take(message) {
                    self.send_uplink(at, message, attempt);
                }
            }
            Event::CampaignTimer => {
                let Some(state) = self.campaign.as_mut() else { return };
                if state.timer.is_some_and(|(t, _)| t <= now) {
                    state.timer = None;
                    let _ = state.campaign.handle_timeout(now);
                }
                self.after_endpoint();
            }
            Event::CampaignCommand(index) => {
                let Some(state) = self.campaign.as_mut() else { return };
                state.command(index, now);
                self.after_endpoint();
            }
            Event::CampaignSeen(index) => {
                let Some(state) = self.campaign.as_mut() else { return };
                state.seen(index, now);
                self.after_endpoint();
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

    fn send_downlink(&mut self, at: MemberRef, message: RequestId, attempt: u8) {
        self.report.downlinks += 1;
        let link = self.link(at, true);
        let timeout = ACK_TIMEOUT * (1u32 << attempt);
        if !self.rng.chance(link.loss_ppm) {
            let delay = self.delay(&link);
            self.schedule(self.now + delay, Event::Downlink(at, message));
            if self.rng.chance(link.duplicate_ppm) {
                let delay = self.delay(&link);
                self.schedule(self.now + delay, Event::Downlink(at, message));
            }
        }
        let handle = self.schedule(self.now + timeout, Event::Retransmit(at, message, attempt + 1));
        let outstanding = self.member(at).and_then(|m| m.outstanding.iter_mut().find(|o| o.message == message));
        if let Some(outstanding) = outstanding {
            outstanding.retransmit = Some(handle);
        }
    }

    fn delay(&mut self, link: &LinkParams) -> Duration {
        link.latency + Duration::from_millis(self.rng.below(link.jitter.as_millis() as u64 + 1))
    }

    /// Device messages: confirmable ones (Register, Update, Send, De-register)
    /// are resent until they get through; responses and notifications are not.
    fn send_uplink(&mut self, at: MemberRef, uplink: Uplink, attempt: u8) {
        let message = &uplink.0;
        self.report.uplinks += 1;
        if let ClientMessage::Notify { payload, .. } | ClientMessage::Send { payload, .. } = message {
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
                let stored = self.uplinks.insert(uplink);
                self.schedule(self.now + timeout, Event::UplinkRetransmit(at, stored, attempt + 1));
            } else if confirmable {
                let now = self.now;
                if let Some(member) = self.member(at) {
                    member.device.uplink_failed(now, uplink.1, &uplink.0);
                }
                self.after_device(at);
            }
            return;
        }
        if self.rng.chance(link.duplicate_ppm) {
            let delay = self.delay(&link);
            let stored = self.uplinks.insert(uplink.clone());
            self.schedule(self.now + delay, Event::Uplink(at, stored));
        }
        let delay = self.delay(&link);
        let stored = self.uplinks.insert(uplink);
        self.schedule(self.now + delay, Event::Uplink(at, stored));
    }

    /// A device message reaches the server: the endpoint gets it as the
    /// request or response it is on the wire.
    fn uplink(&mut self, at: MemberRef, (message, stamp): Uplink) {
        let now = self.now;
        let peer = at.slot;
        let Some(member) = member_in(&mut self.slots, at) else { return };
        let endpoint = &mut self.endpoint;
        // A registration request the endpoint refused (4.04 for an Update
        // of a registration that expired): the device registers again, as
        // after one that never got through.
        let mut refused = false;
        match &message {
            ClientMessage::Register(registration) => {
                let (query, count) = registration_query(&mut self.query, registration);
                let links = object_links(&mut self.links, &registration.objects);
                let request = DeviceRequest {
                    query: &query[..count],
                    payload: links.as_bytes(),
                    ..DeviceRequest::new(Method::Post, &["rd"])
                };
                let reply = endpoint.handle_request(now, peer, &request);
                member.location = reply.ok().filter(|r| r.code == ResponseCode::CREATED).and_then(|r| r.location);
                refused = member.location.is_none();
            }
            ClientMessage::Update { lifetime, objects } => match member.location {
                Some(location) => {
                    let mut hex = [0u8; 16];
                    let path = ["rd", location_segment(location, &mut hex)];
                    let lt = lifetime.map(|lt| format!("lt={lt}"));
                    let query: &[&str] = match &lt {
                        Some(lt) => &[lt.as_str()],
                        None => &[],
                    };
                    let links = objects.as_ref().map_or("", |objects| object_links(&mut self.links, objects));
                    let request =
                        DeviceRequest { query, payload: links.as_bytes(), ..DeviceRequest::new(Method::Post, &path) };
                    let reply = endpoint.handle_request(now, peer, &request);
                    if !reply.is_ok_and(|r| r.code == ResponseCode::CHANGED) {
                        member.location = None;
                        refused = true;
                    }
                }
                None => refused = true,
            },
            ClientMessage::Deregister => {
                if let Some(location) = member.location.take() {
                    let mut hex = [0u8; 16];
                    let path = ["rd", location_segment(location, &mut hex)];
                    let _ = endpoint.handle_request(now, peer, &DeviceRequest::new(Method::Delete, &path));
                }
            }
            ClientMessage::Response { id, code, format, payload } => {
                // The ACK of a request: its retransmissions stop. A copy of
                // one whose exchange has ended is dropped.
                let Some(i) = member.outstanding.iter().position(|o| o.message == *id) else { return };
                let outstanding = member.outstanding.swap_remove(i);
                if let Some(handle) = outstanding.retransmit {
                    self.queue.cancel(handle);
                }
                // The device answers an Observe it accepted with the Observe option.
                let observe =
                    (matches!(outstanding.operation, Operation::Observe { .. }) && code.is_success()).then_some(0);
                let response = DeviceResponse {
                    content_format: format.map(ContentFormat::number),
                    observe,
                    ..DeviceResponse::new(outstanding.token, *code, payload)
                };
                let _ = endpoint.handle_response(now, peer, &response);
            }
            ClientMessage::Notify { observation, sequence, format, payload } => {
                let Some(&(_, token)) = member.observations.iter().find(|(id, _)| id == observation) else { return };
                let response = DeviceResponse {
                    content_format: Some(format.number()),
                    observe: Some(*sequence),
                    ..DeviceResponse::new(token, ResponseCode::CONTENT, payload)
                };
                let _ = endpoint.handle_response(now, peer, &response);
            }
            ClientMessage::Send { format, payload } => {
                let request = DeviceRequest {
                    content_format: Some(format.number()),
                    payload,
                    ..DeviceRequest::new(Method::Post, &["dp"])
                };
                let _ = endpoint.handle_request(now, peer, &request);
            }
        }
        // A confirmable uplink's answer is its ACK (the fleet delivers it at
        // once): the device may send its next one (NSTART = 1).
        let acknowledged = !refused
            && matches!(
                message,
                ClientMessage::Register(_)
                    | ClientMessage::Update { .. }
                    | ClientMessage::Send { .. }
                    | ClientMessage::Deregister
            );
        if refused {
            member.device.uplink_failed(now, stamp, &message);
        } else if let Some(stamp) = stamp.filter(|_| acknowledged) {
            member.device.uplink_acknowledged(now, stamp);
        }
        self.after_endpoint();
        if refused || acknowledged {
            self.after_device(at);
        }
    }

    /// Acts on what the endpoint asks for (requests to send, exchanges to
    /// stop, upgrades that ended), starts the upgrades that the ended ones
    /// make room for, and queues the endpoint's next deadline.
    fn after_endpoint(&mut self) {
        loop {
            while let Some(output) = self.endpoint.poll_output() {
                self.on_output(output);
            }
            if !self.start_more() {
                break;
            }
        }
        let due = self.endpoint.poll_timeout().map(|due| due.max(self.now));
        self.queue.rearm(&mut self.endpoint_timer, due, Event::EndpointTimer);
    }

    /// The fleet slot of the member the endpoint knows as `device`.
    fn member_slot(&self, device: DeviceId) -> Option<u32> {
        match self.by_device.get(device.index()) {
            Some(Some((id, slot))) if *id == device => Some(*slot),
            _ => None,
        }
    }

    fn on_output(&mut self, output: EndpointOutput<u32>) {
        match output {
            EndpointOutput::Transmit(transmit) => {
                let slot = transmit.peer;
                let Some(entry) = self.slots.get_mut(slot as usize) else { return };
                let at = MemberRef { slot, generation: entry.generation };
                let Some(member) = entry.member.as_mut().filter(|m| m.id == transmit.device) else { return };
                self.message_id += 1;
                let message = self.message_id;
                let operation = match transmit.request {
                    DownlinkRequest::Operation(operation) => operation,
                    DownlinkRequest::Block { block, size1, payload } => {
                        if let Some(state) = self.campaign.as_mut() {
                            state.count_bytes(self.now, self.now, payload.len() as u64);
                        }
                        Operation::WriteBlock {
                            path: Path::resource(5, 0, 0),
                            format: ContentFormat::Opaque,
                            block,
                            total_size: Some(size1),
                            payload,
                        }
                    }
                };
                match operation {
                    Operation::Observe { .. } => member.observations.push((message, transmit.token)),
                    // Its notifications are the endpoint's no more.
                    Operation::CancelObservation { .. } => member.observations.retain(|(_, t)| *t != transmit.token),
                    _ => {}
                }
                member.outstanding.push(Outstanding { message, token: transmit.token, operation, retransmit: None });
                self.send_downlink(at, message, 0);
            }
            EndpointOutput::Abandon { device, token } => {
                let Some(slot) = self.member_slot(device) else { return };
                let Some(member) = self.slots[slot as usize].member.as_mut() else { return };
                let queue = &mut self.queue;
                member.outstanding.retain(|o| {
                    if o.token != token {
                        return true;
                    }
                    if let Some(handle) = o.retransmit {
                        queue.cancel(handle);
                    }
                    false
                });
                member.observations.retain(|(_, t)| *t != token);
            }
            EndpointOutput::Event(device, EndpointEvent::Finished(outcome)) => {
                if let Some(slot) = self.member_slot(device) {
                    self.by_device[device.index()] = None;
                    self.finish(slot, &outcome);
                }
            }
            EndpointOutput::Event(_, EndpointEvent::Task(TaskEvent::StrategyChanged { .. })) => {
                self.report.fell_back += 1
            }
            EndpointOutput::Event(..) => {}
        }
    }

    /// The upgrade in `slot` ended for good: count it, and let the device
    /// leave the fleet and the endpoint.
    fn finish(&mut self, slot: u32, outcome: &Outcome) {
        let entry = &mut self.slots[slot as usize];
        let Some(member) = entry.member.take() else { return };
        entry.generation = entry.generation.wrapping_add(1);
        match outcome {
            Outcome::Succeeded { .. } => self.report.succeeded += 1,
            Outcome::Failed(failure) => *self.report.failed.entry(failure.reason()).or_insert(0) += 1,
            Outcome::LateSuccess { failure, .. } => {
                *self.report.late_succeeded.entry(failure.reason()).or_insert(0) += 1
            }
        }
        let elapsed = self.now.saturating_duration_since(member.started_at).as_millis();
        self.durations.push(u32::try_from(elapsed).unwrap_or(u32::MAX));
        if let Some(state) = self.campaign.as_mut() {
            let view = self.endpoint.device(member.id);
            let task = view.as_ref().and_then(|v| v.task);
            let attempts = task.map_or(0, |t| t.attempt());
            let strategy_used = task.map(|t| t.strategy_used());
            let (downlinks, uplinks) = view.map_or((0, 0), |v| (v.downlinks, v.uplinks));
            let report = UpgradeReport {
                outcome,
                attempts,
                downlinks: u32::try_from(downlinks).unwrap_or(u32::MAX),
                uplinks: u32::try_from(uplinks).unwrap_or(u32::MAX),
                strategy_used,
            };
            state.running.remove(&member.campaign);
            let _ = state.campaign.finished(self.now, CampaignDevice::from_index(member.campaign), report);
        }
        let retransmits = member.outstanding.iter().filter_map(|o| o.retransmit);
        for handle in member.device_timer.map(|(_, h)| h).into_iter().chain(retransmits) {
            self.queue.cancel(handle);
        }
        // Its exchanges' Abandons that this queues find no member.
        let _ = self.endpoint.forget(member.id);
        self.free_slots.push(slot);
        self.finished += 1;
        self.active -= 1;
    }

    fn after_device(&mut self, at: MemberRef) {
        let now = self.now;
        if let Some(state) = self.campaign.as_mut() {
            if let Some((start, end, bytes)) =
                member_in(&mut self.slots, at).and_then(|m| m.device.take_download_span())
            {
                state.count_bytes(start, end, bytes);
            }
        }
        loop {
            let Some(member) = self.member(at) else { return };
            let Some(uplink) = member.device.poll_uplink() else { break };
            self.send_uplink(at, uplink, 0);
        }
        let Some(member) = self.member(at) else { return };
        let Some(due) = member.device.poll_timeout().map(|due| due.max(now)) else { return };
        // Set the device's timer to `due`, cancelling the one it replaces
        // (nothing to do when it is already set to `due`).
        let previous = member.device_timer;
        if previous.is_some_and(|(t, _)| t == due) {
            return;
        }
        if let Some((_, handle)) = previous {
            self.queue.cancel(handle);
        }
        let handle = self.schedule(due, Event::DeviceTimer(at));
        if let Some(member) = self.member(at) {
            member.device_timer = Some((due, handle));
        }
    }
}

/// The Uri-Query values of a device's Register (`ep`, `lt`, `lwm2m`, `b`, and
/// `Q` for a queue-mode client whose binding does not say it), written into
/// `buffer` without allocating once it has grown: the values and how many
/// there are. The fleet, the swarm and the tests send Registers with it.
///
/// ```
/// use lwm2m_fota::model::{Binding, Lwm2mVersion, ObjectList, Registration};
/// let registration = Registration {
///     endpoint: "sim-7".into(), lifetime: 300, lwm2m_version: Lwm2mVersion::V1_1,
///     binding: Binding::UDP, queue_mode: true, objects: ObjectList::default(),
/// };
/// let mut buffer = String::new();
/// let (query, count) = lwm2m_fota::sim::registration_query(&mut buffer, &registration);
/// assert_eq!(query[..count], ["ep=sim-7", "lt=300", "lwm2m=1.1", "b=U", "Q"]);
/// ```
pub fn registration_query<'b>(buffer: &'b mut String, registration: &Registration) -> ([&'b str; 5], usize) {
    buffer.clear();
    let mut ends = [0; 5];
    buffer.push_str("ep=");
    buffer.push_str(&registration.endpoint);
    ends[0] = buffer.len();
    buffer.push_str("lt=");
    push_decimal(buffer, u64::from(registration.lifetime));
    ends[1] = buffer.len();
    buffer.push_str("lwm2m=");
    buffer.push_str(registration.lwm2m_version.as_str());
    ends[2] = buffer.len();
    buffer.push_str("b=");
    let _ = write!(buffer, "{}", registration.binding);
    ends[3] = buffer.len();
    let mut count = 4;
    // LwM2M 1.1 says queue mode with `Q`; 1.0 with the binding `UQ`.
    if registration.queue_mode && !registration.binding.contains(Binding::QUEUE) {
        buffer.push('Q');
        ends[4] = buffer.len();
        count = 5;
    }
    let buffer: &'b str = buffer;
    let mut query = [""; 5];
    let mut start = 0;
    for (value, &end) in query.iter_mut().zip(&ends).take(count) {
        *value = &buffer[start..end];
        start = end;
    }
    (query, count)
}

/// The path segment after `rd` of `location` (lowercase hex, as its
/// `Display`), written into `buffer`.
fn location_segment(location: Location, buffer: &mut [u8; 16]) -> &str {
    let mut id = location.id();
    let mut i = buffer.len();
    loop {
        i -= 1;
        buffer[i] = b"0123456789abcdef"[(id & 15) as usize];
        id >>= 4;
        if id == 0 {
            break;
        }
    }
    // Hex digits are ASCII.
    std::str::from_utf8(&buffer[i..]).unwrap_or_default()
}

/// The Register payload listing `objects`, formatted once per distinct list.
fn object_links<'c>(cache: &'c mut Vec<(ObjectList, String)>, objects: &ObjectList) -> &'c str {
    const CACHED: usize = 16;
    let i = match cache.iter().position(|(cached, _)| cached == objects) {
        Some(i) => i,
        None => {
            if cache.len() == CACHED {
                // More lists than a fleet has: the oldest goes.
                cache.remove(0);
            }
            cache.push((objects.clone(), objects.to_string()));
            cache.len() - 1
        }
    };
    &cache[i].1
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
