//! The server's endpoint: one value that serves many devices, as quinn-proto's
//! `Endpoint` serves many connections. It owns the registration interface,
//! the exchanges and their tokens, the observations (RFC 7641 freshness), the
//! block-wise push (one owner for what 2.31 and 4.13 mean), the image served
//! over Block2, and one [`UpgradeTask`] per device being upgraded.
//!
//! It is sans-I/O and knows no wire format: a binding (the crate's `coap`
//! feature, or the simulator) parses datagrams into [`DeviceRequest`]s and
//! [`DeviceResponse`]s, and turns [`Transmit`]s and [`Reply`]s into
//! datagrams, with retransmission and de-duplication. `P` is the binding's
//! peer address (a `SocketAddr`, a simulated device number).
//!
//! ```
//! use std::sync::Arc;
//! use lwm2m_fota::model::{Instant, ResponseCode};
//! use lwm2m_fota::server::{
//!     DeviceRequest, Endpoint, EndpointConfig, EndpointEvent, EndpointOutput, MemoryImage, Method, UpgradeConfig,
//! };
//!
//! let mut endpoint: Endpoint<u32> = Endpoint::new(EndpointConfig::default());
//! endpoint.add_image("fw.bin", Arc::new(MemoryImage::new(vec![0u8; 4096])));
//! let now = Instant::from_millis(0);
//! // A device registers from peer 7.
//! let register = DeviceRequest {
//!     query: &["ep=dev-1", "lt=300", "lwm2m=1.1"],
//!     payload: b"</1/0>,</3/0>,</5/0>",
//!     ..DeviceRequest::new(Method::Post, &["rd"])
//! };
//! let reply = endpoint.handle_request(now, 7, &register).unwrap();
//! assert_eq!(reply.code, ResponseCode::CREATED);
//! let Some(EndpointOutput::Event(device, EndpointEvent::Registered { replaced: false })) = endpoint.poll_output()
//! else { panic!() };
//! // Upgrade it: the task's first request goes to peer 7.
//! let config = Arc::new(UpgradeConfig::new("coap://server/fw/", "fw.bin", 4096));
//! endpoint.upgrade(now, "dev-1", config).unwrap();
//! let mut sent = 0;
//! while let Some(output) = endpoint.poll_output() {
//!     if let EndpointOutput::Transmit(transmit) = output {
//!         assert_eq!((transmit.device, transmit.peer), (device, 7));
//!         sent += 1;
//!     }
//! }
//! assert!(sent > 0);
//! ```

mod deadlines;
#[cfg(test)]
mod forget_tests;
mod io;
#[cfg(feature = "serde")]
mod snapshot;
#[cfg(test)]
mod tests;

use alloc::boxed::Box;
use alloc::collections::{BTreeMap, VecDeque};
use alloc::string::String;
use alloc::sync::Arc;
use alloc::vec::Vec;
use core::fmt::Debug;
use core::hash::Hash;

use bytes::Bytes;

use deadlines::Deadlines;
pub use io::{
    DeviceId, DeviceRequest, DeviceResponse, DownlinkRequest, EndpointError, EndpointEvent, EndpointOutput,
    EndpointStats, Method, Reply, ResponseVerdict, Token, Transmit,
};

use super::index::{HashIndex, hash_of, siphash24};
use super::{
    ImageSource, Location, MAX_BLOCK_SIZE, ObserveSequence, PushStep, RegistrationError, RegistrationLimits,
    Registrations, RequestKind, TaskInput, TaskOutput, UpgradeConfig, UpgradeTask, WireBlock, serve_block,
};
use crate::model::{Block, ContentFormat, Instant, Operation, Path, Registration, RequestId, ResponseCode};

/// Bounds and names of an [`Endpoint`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct EndpointConfig {
    /// The registration table's bounds (registrations beyond
    /// `max_registrations` are answered 5.03).
    pub registrations: RegistrationLimits,
    /// Requests in flight to one device at most; a task request beyond it
    /// fails at once as a transport failure (counted in
    /// [`EndpointStats::exchange_limit`]).
    pub max_exchanges: usize,
    /// Observations kept per device at most; beyond it the answer to an
    /// Observe still reaches the task but its notifications are unmatched.
    pub max_observations: usize,
    /// The largest Block2 size the image is served in (16 to 1024).
    pub max_block_size: u32,
    /// The first Uri-Path segment of served images: `/<image_path>/<name>`.
    pub image_path: String,
    /// The key of the token generator (a caller's random 128 bits: tokens are
    /// unpredictable to whoever does not know it, and the same key gives the
    /// same tokens, for deterministic simulations).
    pub token_key: [u64; 2],
}

impl Default for EndpointConfig {
    fn default() -> EndpointConfig {
        EndpointConfig {
            registrations: RegistrationLimits::default(),
            max_exchanges: 8,
            max_observations: 16,
            max_block_size: MAX_BLOCK_SIZE,
            image_path: String::from("fw"),
            token_key: [0x0123_4567_89ab_cdef, 0xfedc_ba98_7654_3210],
        }
    }
}

/// What one exchange in flight is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
enum Exchange {
    /// A request of the task, answered to it.
    Plain,
    /// An Observe: a 2.05 starts an observation of `path`.
    Observe(Path),
    /// A wire block of a pushed task block.
    Push(WireBlock),
}

#[derive(Debug, Clone, Copy)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
struct InFlight {
    token: Token,
    request: RequestId,
    exchange: Exchange,
}

#[derive(Debug, Clone, Copy)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
struct Observation {
    token: Token,
    request: RequestId,
    path: Path,
    last: ObserveSequence,
}

/// One device's upgrade.
#[derive(Debug)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
struct Upgrade {
    task: UpgradeTask,
    /// Its outcome was reported.
    reported: bool,
    /// When its first pushed block went and the image bytes pushed since
    /// ([`UpgradeConfig::push_pace`]).
    #[cfg_attr(feature = "serde", serde(default))]
    pushed: Option<(Instant, u64)>,
    /// A Block1 request the push pace holds back, and when it may go.
    #[cfg_attr(feature = "serde", serde(default))]
    paced: Option<(Instant, RequestId, WireBlock)>,
}

#[derive(Debug)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
struct Device<P> {
    name: Box<str>,
    /// Where it is registered from, while it is.
    peer: Option<P>,
    location: Option<Location>,
    upgrade: Option<Box<Upgrade>>,
    in_flight: Vec<InFlight>,
    observations: Vec<Observation>,
    /// The Block1 size it last asked for.
    push_size: u32,
    uplinks: u64,
    downlinks: u64,
}

#[derive(Debug)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
struct Slot<P> {
    generation: u32,
    device: Option<Device<P>>,
}

/// A read-only view of one device.
#[derive(Debug, Clone, Copy)]
pub struct DeviceView<'e, P> {
    /// Its endpoint name.
    pub name: &'e str,
    /// Where it is registered from, while it is.
    pub peer: Option<P>,
    /// Its registration, while it has one.
    pub registration: Option<&'e Registration>,
    /// Its upgrade task, if it was given one.
    pub task: Option<&'e UpgradeTask>,
    /// Messages it sent that the endpoint matched.
    pub uplinks: u64,
    /// Requests sent to it (retransmissions the binding records included).
    pub downlinks: u64,
}

/// The server's endpoint: registrations, exchanges, observations, push, image
/// serving and upgrade tasks of many devices. See [`crate::server`] for how the endpoint and its binding fit together, and the crate README.
///
/// With the `serde` feature it serializes (format 1), all but its images:
/// after restoring, add them again with [`add_image`](Self::add_image); the
/// restored endpoint continues exactly as the original would have. Restoring
/// needs a self-describing format (JSON, CBOR), as the tasks inside do.
pub struct Endpoint<P> {
    config: EndpointConfig,
    registrations: Registrations,
    slots: Vec<Slot<P>>,
    free: Vec<u32>,
    /// Device slots by the hash of their name.
    by_name: HashIndex,
    /// Registered devices' slots by the hash of their peer: a device's
    /// peer always indexes it.
    by_peer: HashIndex,
    /// The key the two indexes hash under (from the token key).
    index_key: [u64; 2],
    /// Device slots by their registration's slot in the registration table
    /// ([`Location::slot`]; an entry is the device's while its location is
    /// that location). Locations are the server's own numbers, so a vector
    /// serves, without a hash.
    by_location: Vec<u32>,
    images: BTreeMap<String, Arc<dyn ImageSource + Send + Sync>>,
    /// Each upgrade's task deadline, by slot (see [`deadlines`]).
    deadlines: Deadlines,
    outputs: VecDeque<EndpointOutput<P>>,
    /// Task requests that could not go out, failed at the next timeout.
    deferred: VecDeque<(DeviceId, RequestId)>,
    counter: u64,
    last_now: Instant,
    stats: EndpointStats,
}

impl<P: Debug> Debug for Endpoint<P> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Endpoint")
            .field("devices", &self.by_name.len())
            .field("registrations", &self.registrations.len())
            .field("stats", &self.stats)
            .finish_non_exhaustive()
    }
}

impl<P: Copy + Ord + Hash + Debug> Endpoint<P> {
    /// An endpoint with no devices.
    pub fn new(config: EndpointConfig) -> Endpoint<P> {
        let index_key = index_key(config.token_key);
        Endpoint {
            registrations: Registrations::with_key(config.registrations, [index_key[1], index_key[0]]),
            config,
            slots: Vec::new(),
            free: Vec::new(),
            by_name: HashIndex::default(),
            by_peer: HashIndex::default(),
            index_key,
            by_location: Vec::new(),
            images: BTreeMap::new(),
            deadlines: Deadlines::default(),
            outputs: VecDeque::new(),
            deferred: VecDeque::new(),
            counter: 0,
            last_now: Instant::ZERO,
            stats: EndpointStats::default(),
        }
    }

    /// Serves `image` at `/<image_path>/<name>` over Block2, and pushes it to
    /// devices whose upgrade names it ([`UpgradeConfig::image_name`]).
    pub fn add_image(&mut self, name: &str, image: Arc<dyn ImageSource + Send + Sync>) {
        self.images.insert(String::from(name), image);
    }

    /// The registration table.
    pub fn registrations(&self) -> &Registrations {
        &self.registrations
    }

    /// What was dropped or refused so far.
    pub fn stats(&self) -> EndpointStats {
        self.stats
    }

    /// The device with endpoint name `name`, if the endpoint knows it.
    pub fn find(&self, name: &str) -> Option<DeviceId> {
        let slot = self.slot_named(name)?;
        Some(DeviceId { slot, generation: self.slots[slot as usize].generation })
    }

    /// The device registered from `peer`.
    pub fn find_peer(&self, peer: P) -> Option<DeviceId> {
        let slot = self.slot_at(peer)?;
        Some(DeviceId { slot, generation: self.slots[slot as usize].generation })
    }

    /// The slot of device `name`.
    fn slot_named(&self, name: &str) -> Option<u32> {
        self.slot_hashed(name, hash_of(self.index_key, name))
    }

    /// The slot of device `name`, whose hash is `hash`.
    fn slot_hashed(&self, name: &str, hash: u32) -> Option<u32> {
        let slots = &self.slots;
        let is_key = |slot: u32| slots[slot as usize].device.as_ref().is_some_and(|d| &*d.name == name);
        self.by_name.find(hash, is_key)
    }

    /// The slot of the device registered from `peer`.
    fn slot_at(&self, peer: P) -> Option<u32> {
        let slots = &self.slots;
        let is_key = |slot: u32| slots[slot as usize].device.as_ref().is_some_and(|d| d.peer == Some(peer));
        self.by_peer.find(hash_of(self.index_key, &peer), is_key)
    }

    /// A view of `device`, while the endpoint knows it.
    pub fn device(&self, device: DeviceId) -> Option<DeviceView<'_, P>> {
        let d = self.get(device)?;
        Some(DeviceView {
            name: &d.name,
            peer: d.peer,
            registration: d.location.and_then(|location| self.registrations.at(location)),
            task: d.upgrade.as_ref().map(|u| &u.task),
            uplinks: d.uplinks,
            downlinks: d.downlinks,
        })
    }

    /// Where `device` is registered from now (a binding resends a request
    /// there: a NAT rebinding moves a device in mid-exchange).
    pub fn peer_of(&self, device: DeviceId) -> Option<P> {
        self.get(device)?.peer
    }

    /// The binding sent a request to `device` again.
    pub fn record_retransmission(&mut self, device: DeviceId) {
        if let Some(d) = self.get_mut(device) {
            d.downlinks += 1;
        }
    }

    fn get(&self, device: DeviceId) -> Option<&Device<P>> {
        let slot = self.slots.get(device.slot as usize)?;
        (slot.generation == device.generation).then_some(slot.device.as_ref()).flatten()
    }

    fn get_mut(&mut self, device: DeviceId) -> Option<&mut Device<P>> {
        let slot = self.slots.get_mut(device.slot as usize)?;
        (slot.generation == device.generation).then_some(slot.device.as_mut()).flatten()
    }

    fn id(&self, slot: u32) -> DeviceId {
        DeviceId { slot, generation: self.slots[slot as usize].generation }
    }

    fn device_at(&mut self, slot: u32) -> &mut Device<P> {
        // Every slot handed around inside the endpoint holds a device.
        self.slots[slot as usize].device.as_mut().expect("slot of a known device")
    }

    /// The slot of the device registered at `location`.
    fn registered_at(&self, location: Location) -> Option<u32> {
        let slot = *self.by_location.get(location.slot())?;
        (self.slots.get(slot as usize)?.device.as_ref()?.location == Some(location)).then_some(slot)
    }

    fn tick(&mut self, now: Instant) -> Result<(), EndpointError> {
        if now < self.last_now {
            return Err(EndpointError::TimeWentBackwards);
        }
        self.last_now = now;
        Ok(())
    }

    /// The slot of device `name`, made if it is new.
    fn slot_for(&mut self, name: &str) -> Result<u32, EndpointError> {
        let hash = hash_of(self.index_key, name);
        match self.slot_hashed(name, hash) {
            Some(slot) => Ok(slot),
            None => self.new_slot(name, hash),
        }
    }

    /// A slot for new device `name`, whose hash is `hash`.
    fn new_slot(&mut self, name: &str, hash: u32) -> Result<u32, EndpointError> {
        if self.by_name.len() >= self.config.registrations.max_registrations {
            return Err(EndpointError::Full);
        }
        let device = Device {
            name: name.into(),
            peer: None,
            location: None,
            upgrade: None,
            in_flight: Vec::new(),
            observations: Vec::new(),
            push_size: MAX_BLOCK_SIZE,
            uplinks: 0,
            downlinks: 0,
        };
        let slot = match self.free.pop() {
            Some(slot) => {
                let entry = &mut self.slots[slot as usize];
                entry.generation = entry.generation.wrapping_add(1);
                entry.device = Some(device);
                slot
            }
            None => {
                self.slots.push(Slot { generation: 0, device: Some(device) });
                (self.slots.len() - 1) as u32
            }
        };
        self.by_name.insert(hash, slot);
        Ok(slot)
    }

    /// Removes a device that has neither a registration nor an upgrade.
    fn release_if_idle(&mut self, slot: u32) {
        let device = self.device_at(slot);
        if device.location.is_some() || device.upgrade.is_some() {
            return;
        }
        self.release(slot);
    }

    /// Removes the device in `slot`: its deadline, its name index entry and
    /// the slot itself (its registration's indexes are gone already).
    fn release(&mut self, slot: u32) {
        self.deadlines.remove(slot);
        let device = self.device_at(slot);
        let name = core::mem::take(&mut device.name);
        self.by_name.remove(hash_of(self.index_key, &*name), slot);
        self.slots[slot as usize].device = None;
        self.free.push(slot);
    }

    /// A fresh token for an exchange with the device in `slot`.
    fn token(&mut self, slot: u32) -> Token {
        self.counter += 1;
        let random = siphash24(self.config.token_key, self.counter) as u32;
        Token((u64::from(slot) << 32) | u64::from(random))
    }

    // ----- operator commands -----

    /// Starts upgrading device `name` with `config` (it need not have
    /// registered yet: the task waits for it). A device whose earlier upgrade
    /// has finished gets a new one.
    ///
    /// # Errors
    /// [`EndpointError::AlreadyUpgrading`], [`EndpointError::Full`],
    /// [`EndpointError::InvalidEndpoint`], [`EndpointError::TimeWentBackwards`].
    pub fn upgrade(&mut self, now: Instant, name: &str, config: Arc<UpgradeConfig>) -> Result<DeviceId, EndpointError> {
        self.tick(now)?;
        if name.is_empty() || name.len() > self.config.registrations.max_endpoint_len {
            return Err(EndpointError::InvalidEndpoint);
        }
        let slot = self.slot_for(name)?;
        let device = self.device_at(slot);
        if device.upgrade.as_ref().is_some_and(|u| !u.reported) {
            return Err(EndpointError::AlreadyUpgrading);
        }
        let location = device.location;
        let mut task = UpgradeTask::new(config);
        task.start(now)?;
        // What the earlier task had in flight or observed is not the new one's.
        self.abandon_exchanges(slot);
        self.deferred.retain(|(device, _)| device.slot != slot);
        let registration = location.and_then(|location| self.registrations.at(location));
        if let Some(registration) = registration {
            task.handle(now, TaskInput::Registered(registration))?;
        }
        self.deadlines.remove(slot);
        self.device_at(slot).upgrade = Some(Box::new(Upgrade { task, reported: false, pushed: None, paced: None }));
        self.drain(now, slot);
        Ok(self.id(slot))
    }

    /// Cancels `device`'s upgrade (the task resets what it owes and ends
    /// failed with the cancel).
    ///
    /// # Errors
    /// [`EndpointError::UnknownDevice`] when it has no upgrade.
    pub fn cancel(&mut self, now: Instant, device: DeviceId) -> Result<(), EndpointError> {
        self.tick(now)?;
        self.command(now, device, TaskInput::Cancel)
    }

    /// Lets `device`'s held Execute go (its configuration holds it, U10).
    ///
    /// # Errors
    /// [`EndpointError::UnknownDevice`] when it has no upgrade.
    pub fn release_execute(&mut self, now: Instant, device: DeviceId) -> Result<(), EndpointError> {
        self.tick(now)?;
        self.command(now, device, TaskInput::ReleaseExecute)
    }

    fn command(&mut self, now: Instant, device: DeviceId, input: TaskInput<'_>) -> Result<(), EndpointError> {
        let d = self.get_mut(device).ok_or(EndpointError::UnknownDevice)?;
        let upgrade = d.upgrade.as_mut().ok_or(EndpointError::UnknownDevice)?;
        upgrade.task.handle(now, input)?;
        self.drain(now, device.slot);
        Ok(())
    }

    /// Forgets `device` altogether, for a server that keeps only the devices
    /// it is working on (a campaign whose finished devices leave, so that
    /// memory follows the upgrades running, not the fleet's size). Its
    /// registration is removed from the table (a later Update from it is
    /// answered 4.04, as after an expiry; it may Register again as a new
    /// device), each of its exchanges and observations is announced with an
    /// [`EndpointOutput::Abandon`], and its upgrade, finished or not, is
    /// dropped: a running task ends without a [`EndpointEvent::Finished`]
    /// and its task hears nothing. Nothing else is queued (no event): the
    /// caller knows what it did. `device` names nothing afterwards (its
    /// handle never names the device that takes its slot next).
    ///
    /// ```
    /// use std::sync::Arc;
    /// use lwm2m_fota::model::Instant;
    /// use lwm2m_fota::server::{Endpoint, EndpointConfig, EndpointError, UpgradeConfig};
    ///
    /// let mut endpoint: Endpoint<u32> = Endpoint::new(EndpointConfig::default());
    /// let config = Arc::new(UpgradeConfig::new("coap://server/fw/", "fw.bin", 4096));
    /// let device = endpoint.upgrade(Instant::ZERO, "dev-1", config).unwrap();
    /// endpoint.forget(device).unwrap();
    /// assert_eq!(endpoint.find("dev-1"), None);
    /// assert!(endpoint.device(device).is_none());
    /// assert_eq!(endpoint.forget(device), Err(EndpointError::UnknownDevice));
    /// ```
    ///
    /// # Errors
    /// [`EndpointError::UnknownDevice`] when the endpoint does not know
    /// `device` (it left, or was forgotten, before).
    pub fn forget(&mut self, device: DeviceId) -> Result<(), EndpointError> {
        let location = self.get(device).ok_or(EndpointError::UnknownDevice)?.location;
        if let Some(location) = location {
            // The endpoint's clock is never behind the table's, so this only
            // fails for a location the table no longer holds.
            let _ = self.registrations.deregister(self.last_now, location);
        }
        self.forget_registration(device.slot, None);
        self.release(device.slot);
        Ok(())
    }

    // ----- device requests -----

    /// A request from `peer`: the registration interface (`/rd`), Send
    /// (`/dp`), or an image block (`/<image_path>/<name>`). The reply is for
    /// the binding to send; events and requests it causes are queued.
    ///
    /// # Errors
    /// [`EndpointError::TimeWentBackwards`] (nothing else: a bad request is an
    /// error reply, never an error).
    pub fn handle_request(
        &mut self,
        now: Instant,
        peer: P,
        request: &DeviceRequest<'_>,
    ) -> Result<Reply, EndpointError> {
        self.tick(now)?;
        let reply = match (request.method, request.path) {
            (Method::Post, ["rd"]) => self.register(now, peer, request),
            (Method::Post, ["rd", location]) => self.update(now, peer, location, request),
            (Method::Delete, ["rd", location]) => self.deregister(now, location),
            (Method::Post, ["dp"]) => self.send(now, peer, request),
            (Method::Get, [prefix, name]) if *prefix == self.config.image_path => self.serve(name, request.block2),
            (_, ["rd"] | ["rd", _] | ["dp"]) => Reply::code(ResponseCode::METHOD_NOT_ALLOWED),
            (_, [prefix, name]) if *prefix == self.config.image_path && self.images.contains_key(*name) => {
                Reply::code(ResponseCode::METHOD_NOT_ALLOWED)
            }
            _ => Reply::code(ResponseCode::NOT_FOUND),
        };
        if !reply.code.is_success() {
            self.stats.refused += 1;
        }
        Ok(reply)
    }

    fn register(&mut self, now: Instant, peer: P, request: &DeviceRequest<'_>) -> Reply {
        let links = match links(request) {
            Ok(links) => links,
            Err(reply) => return reply,
        };
        let registered = match self.registrations.register(now, request.query.iter().copied(), links) {
            Ok(registered) => registered,
            Err(error) => return Reply::code(error.code()),
        };
        let location = registered.location;
        let Some(registration) = self.registrations.at(location) else {
            return Reply::code(ResponseCode::INTERNAL_SERVER_ERROR);
        };
        let hash = hash_of(self.index_key, &*registration.endpoint);
        let slot = match self.slot_hashed(&registration.endpoint, hash) {
            Some(slot) => Ok(slot),
            None => {
                let name = registration.endpoint.clone();
                self.new_slot(&name, hash)
            }
        };
        let slot = match slot {
            Ok(slot) => slot,
            Err(_) => {
                // The device table is as large as the registration table, so
                // this is a device with an upgrade but no registration beyond it.
                let _ = self.registrations.deregister(now, location);
                return Reply::code(ResponseCode::SERVICE_UNAVAILABLE);
            }
        };
        let replaced = self.device_at(slot).location.is_some();
        // A new registration: the old one's observations and exchanges are void.
        self.forget_registration(slot, Some(peer));
        self.attach(slot, peer, location);
        self.device_at(slot).uplinks += 1;
        let id = self.id(slot);
        self.outputs.push_back(EndpointOutput::Event(id, EndpointEvent::Registered { replaced }));
        self.task_input_registered(now, slot);
        Reply { location: Some(location), ..Reply::code(ResponseCode::CREATED) }
    }

    fn task_input_registered(&mut self, now: Instant, slot: u32) {
        let Some(location) = self.slots[slot as usize].device.as_ref().and_then(|d| d.location) else { return };
        let Some(registration) = self.registrations.at(location) else { return };
        let Some(device) = self.slots[slot as usize].device.as_mut() else { return };
        if let Some(upgrade) = device.upgrade.as_mut() {
            // Time was checked by the endpoint, so the task accepts it.
            let _ = upgrade.task.handle(now, TaskInput::Registered(registration));
        }
        self.drain(now, slot);
    }

    /// The device in `slot` is registered at `location` from `peer`.
    fn attach(&mut self, slot: u32, peer: P, location: Location) {
        let device = self.device_at(slot);
        let old_peer = device.peer.replace(peer);
        device.location = Some(location);
        index_location(&mut self.by_location, location, slot);
        if old_peer == Some(peer) {
            // A device's peer always indexes it: nothing moves.
            return;
        }
        if let Some(old) = old_peer {
            self.unindex_peer(old, slot);
        }
        let hash = hash_of(self.index_key, &peer);
        if let Some(other) = self.slot_at(peer) {
            // Another device registered from this address before: it has moved
            // (or its NAT binding was reused); it is no longer reachable here.
            self.by_peer.remove(hash, other);
            if let Some(d) = self.slots[other as usize].device.as_mut() {
                d.peer = None;
            }
        }
        self.by_peer.insert(hash, slot);
    }

    /// Removes `peer`'s index entry if it names `slot`.
    fn unindex_peer(&mut self, peer: P, slot: u32) {
        self.by_peer.remove(hash_of(self.index_key, &peer), slot);
    }

    /// Forgets the observations and exchanges of `slot`'s registration and the
    /// registration's indexes (the registration table entry is gone already).
    /// `staying`: the peer the device registers from again, which keeps its
    /// index entry (the new registration's [`attach`](Self::attach) finds it).
    fn forget_registration(&mut self, slot: u32, staying: Option<P>) {
        self.abandon_exchanges(slot);
        let Some(device) = self.slots[slot as usize].device.as_mut() else { return };
        device.location = None;
        let peer = if staying.is_some() && device.peer == staying { None } else { device.peer.take() };
        if let Some(peer) = peer {
            self.unindex_peer(peer, slot);
        }
    }

    /// Forgets `slot`'s exchanges in flight and observations, telling the
    /// binding (a new registration, or a new upgrade whose task numbers its
    /// requests afresh).
    fn abandon_exchanges(&mut self, slot: u32) {
        let id = self.id(slot);
        let Some(device) = self.slots[slot as usize].device.as_mut() else { return };
        // A block the push pace held back is an exchange not yet started.
        if let Some(upgrade) = device.upgrade.as_deref_mut() {
            upgrade.paced = None;
        }
        let tokens = device.in_flight.drain(..).map(|f| f.token).chain(device.observations.drain(..).map(|o| o.token));
        self.outputs.extend(tokens.map(|token| EndpointOutput::Abandon { device: id, token }));
    }

    fn update(&mut self, now: Instant, peer: P, segment: &str, request: &DeviceRequest<'_>) -> Reply {
        let Some(location) = Location::parse(segment) else { return Reply::code(ResponseCode::NOT_FOUND) };
        let links = match links(request) {
            Ok(links) => links,
            Err(reply) => return reply,
        };
        if let Err(error) = self.registrations.update(now, location, request.query.iter().copied(), links) {
            return Reply::code(error.code());
        }
        let Some(slot) = self.registered_at(location) else {
            return Reply::code(ResponseCode::NOT_FOUND);
        };
        if self.device_at(slot).peer != Some(peer) {
            // The device moved (a NAT rebinding): its requests follow it.
            self.attach(slot, peer, location);
        }
        self.device_at(slot).uplinks += 1;
        let id = self.id(slot);
        self.outputs.push_back(EndpointOutput::Event(id, EndpointEvent::Updated));
        self.task_input(now, slot, TaskInput::RegistrationUpdated);
        Reply::code(ResponseCode::CHANGED)
    }

    fn deregister(&mut self, now: Instant, segment: &str) -> Reply {
        let Some(location) = Location::parse(segment) else { return Reply::code(ResponseCode::NOT_FOUND) };
        if let Err(error) = self.registrations.deregister(now, location) {
            return Reply::code(error.code());
        }
        if let Some(slot) = self.registered_at(location) {
            self.device_at(slot).uplinks += 1;
            self.leave(now, slot, EndpointEvent::Deregistered);
        }
        Reply::code(ResponseCode::DELETED)
    }

    /// The device in `slot` has no registration any more.
    fn leave(&mut self, now: Instant, slot: u32, event: EndpointEvent) {
        self.forget_registration(slot, None);
        let id = self.id(slot);
        self.outputs.push_back(EndpointOutput::Event(id, event));
        self.task_input(now, slot, TaskInput::Deregistered);
        self.release_if_idle(slot);
    }

    fn send(&mut self, now: Instant, peer: P, request: &DeviceRequest<'_>) -> Reply {
        // Only a registered device may Send (TS 1.1 §6.4.1: the server knows
        // the client by its registration).
        let Some(slot) = self.slot_at(peer) else { return Reply::code(ResponseCode::NOT_FOUND) };
        let Some(format) = request.content_format.and_then(ContentFormat::from_number) else {
            return Reply::code(ResponseCode::UNSUPPORTED_CONTENT_FORMAT);
        };
        self.device_at(slot).uplinks += 1;
        self.task_input(now, slot, TaskInput::Send { format, payload: request.payload });
        Reply::code(ResponseCode::CHANGED)
    }

    fn serve(&mut self, name: &str, block2: Option<u64>) -> Reply {
        let Some(image) = self.images.get(name) else { return Reply::code(ResponseCode::NOT_FOUND) };
        let mut payload = Vec::new();
        match serve_block(image.as_ref(), block2, self.config.max_block_size, &mut payload) {
            Ok(served) => Reply {
                code: ResponseCode::CONTENT,
                location: None,
                content_format: Some(ContentFormat::Opaque),
                etag: Some(served.etag),
                block2: Some(served.block),
                size2: served.size2,
                payload,
            },
            Err(code) => Reply::code(code),
        }
    }

    // ----- device responses and notifications -----

    /// A response or notification from `peer`.
    ///
    /// # Errors
    /// [`EndpointError::TimeWentBackwards`].
    pub fn handle_response(
        &mut self,
        now: Instant,
        peer: P,
        response: &DeviceResponse<'_>,
    ) -> Result<ResponseVerdict, EndpointError> {
        self.tick(now)?;
        let verdict = self.response(now, peer, response);
        match verdict {
            ResponseVerdict::Unmatched => {
                self.stats.unmatched += 1;
                if self.slot_at(peer).is_none() {
                    self.stats.unmatched_foreign += 1;
                }
            }
            ResponseVerdict::Stale => self.stats.stale += 1,
            ResponseVerdict::Accepted => {}
        }
        Ok(verdict)
    }

    fn response(&mut self, now: Instant, peer: P, response: &DeviceResponse<'_>) -> ResponseVerdict {
        let slot = response.token.slot();
        let Some(device) = self.slots.get_mut(slot as usize).and_then(|s| s.device.as_mut()) else {
            return ResponseVerdict::Unmatched;
        };
        if device.peer != Some(peer) {
            return ResponseVerdict::Unmatched;
        }
        if let Some(i) = device.in_flight.iter().position(|f| f.token == response.token) {
            let flight = device.in_flight.swap_remove(i);
            device.uplinks += 1;
            self.answer(now, slot, flight, response);
            return ResponseVerdict::Accepted;
        }
        let Some(i) = device.observations.iter().position(|o| o.token == response.token) else {
            return ResponseVerdict::Unmatched;
        };
        let (Some(sequence), true) = (response.observe, response.code == ResponseCode::CONTENT) else {
            // An error, or a 2.05 without Observe: the observation is over (RFC 7641 §3.2).
            device.observations.swap_remove(i);
            device.uplinks += 1;
            return ResponseVerdict::Accepted;
        };
        let observation = &mut device.observations[i];
        if !observation.last.is_older_than(sequence, now) {
            return ResponseVerdict::Stale;
        }
        observation.last = ObserveSequence { value: sequence, at: now };
        let request = observation.request;
        device.uplinks += 1;
        if let Some(format) = response.content_format.and_then(ContentFormat::from_number) {
            self.task_input(
                now,
                slot,
                TaskInput::Notification { observation: request, format, payload: response.payload },
            );
        }
        ResponseVerdict::Accepted
    }

    fn answer(&mut self, now: Instant, slot: u32, flight: InFlight, response: &DeviceResponse<'_>) {
        let mut code = response.code;
        match flight.exchange {
            Exchange::Push(wire) => {
                let block1 = response.block1.and_then(parse_block);
                let device = self.device_at(slot);
                if let Some(size) = block1.map(|b| b.size).filter(|size| *size < device.push_size) {
                    // The device's size for the task's next blocks too.
                    device.push_size = size.max(16);
                }
                match wire.answer(code, block1, response.size1) {
                    PushStep::Send(next) => {
                        device.push_size = next.size();
                        self.send_block(now, slot, flight.request, next);
                        return;
                    }
                    PushStep::Answer(answer) => {
                        // 5.03 with its Max-Age, below, like any answer.
                        code = answer;
                    }
                }
            }
            Exchange::Observe(path) if code == ResponseCode::CONTENT && response.observe.is_some() => {
                let max = self.config.max_observations;
                let device = self.device_at(slot);
                if device.observations.len() < max {
                    let last = ObserveSequence { value: response.observe.unwrap_or(0), at: now };
                    device.observations.push(Observation { token: flight.token, request: flight.request, path, last });
                } else {
                    self.stats.observation_limit += 1;
                }
            }
            _ => {}
        }
        if code == ResponseCode::SERVICE_UNAVAILABLE {
            let max_age = response.max_age.map(|s| core::time::Duration::from_secs(u64::from(s)));
            return self.task_input(now, slot, TaskInput::ServiceUnavailable { id: flight.request, max_age });
        }
        let format = response.content_format.and_then(ContentFormat::from_number);
        self.task_input(now, slot, TaskInput::Response { id: flight.request, code, format, payload: response.payload });
    }

    /// The binding gave up on exchange `token` (every retransmission went
    /// unanswered, or the device reset it): its task hears a transport failure.
    ///
    /// # Errors
    /// [`EndpointError::TimeWentBackwards`].
    pub fn exchange_failed(&mut self, now: Instant, token: Token) -> Result<(), EndpointError> {
        self.tick(now)?;
        let slot = token.slot();
        let Some(device) = self.slots.get_mut(slot as usize).and_then(|s| s.device.as_mut()) else { return Ok(()) };
        if let Some(i) = device.observations.iter().position(|o| o.token == token) {
            // A RST to a notification's ACK cannot happen; a RST answering an
            // observation's token means the device forgot it.
            device.observations.swap_remove(i);
            return Ok(());
        }
        let Some(i) = device.in_flight.iter().position(|f| f.token == token) else { return Ok(()) };
        let flight = device.in_flight.swap_remove(i);
        self.task_input(now, slot, TaskInput::TransportFailure { id: flight.request });
        Ok(())
    }

    // ----- the tasks' side -----

    fn task_input(&mut self, now: Instant, slot: u32, input: TaskInput<'_>) {
        let device = self.device_at(slot);
        let Some(upgrade) = device.upgrade.as_mut() else { return };
        // The endpoint checked the time, and the ids are the task's own.
        let _ = upgrade.task.handle(now, input);
        self.drain(now, slot);
    }

    /// Turns the task's outputs into transmits and events, reports its
    /// outcome once final, and files its deadline.
    fn drain(&mut self, now: Instant, slot: u32) {
        let id = self.id(slot);
        loop {
            let device = self.device_at(slot);
            let Some(upgrade) = device.upgrade.as_mut() else { return };
            let Some(output) = upgrade.task.poll_output() else { break };
            match output {
                TaskOutput::Event(event) => {
                    self.outputs.push_back(EndpointOutput::Event(id, EndpointEvent::Task(event)))
                }
                TaskOutput::Request(request) => match request.kind {
                    RequestKind::Operation(operation) => self.send_operation(now, slot, request.id, operation),
                    RequestKind::PackageBlock { block, total_size } => {
                        let wire = WireBlock::new(block, total_size, self.device_at(slot).push_size);
                        self.send_block(now, slot, request.id, wire);
                    }
                },
            }
        }
        let Some(upgrade) = self.slots[slot as usize].device.as_mut().and_then(|d| d.upgrade.as_mut()) else { return };
        if !upgrade.reported && !upgrade.task.watching() {
            if let Some(outcome) = upgrade.task.outcome().cloned() {
                upgrade.reported = true;
                self.outputs.push_back(EndpointOutput::Event(id, EndpointEvent::Finished(outcome)));
            }
        }
        self.refile(slot);
    }

    /// Files `slot`'s next deadline: its task's, or sooner the time a block
    /// held back by the push pace may go.
    fn refile(&mut self, slot: u32) {
        let upgrade = self.slots[slot as usize].device.as_ref().and_then(|d| d.upgrade.as_deref());
        let deadline = upgrade.and_then(|u| earlier(u.task.poll_timeout(), u.paced.map(|(at, _, _)| at)));
        self.deadlines.set(slot, deadline);
    }

    /// Room for one more exchange with the device in `slot`, registered: its
    /// peer; else the request fails at once.
    fn room(&mut self, slot: u32) -> Option<P> {
        let max = self.config.max_exchanges;
        let device = self.device_at(slot);
        let peer = device.peer?;
        if device.in_flight.len() >= max {
            self.stats.exchange_limit += 1;
            return None;
        }
        Some(peer)
    }

    fn send_operation(&mut self, now: Instant, slot: u32, request: RequestId, operation: Operation) {
        let Some(peer) = self.room(slot) else { return self.fail_soon(now, slot, request) };
        let (token, exchange) = match &operation {
            Operation::Observe { path, .. } => (self.token(slot), Exchange::Observe(*path)),
            Operation::CancelObservation { path } => {
                // RFC 7641 §3.6: the observation's own token cancels it.
                let device = self.device_at(slot);
                match device.observations.iter().position(|o| o.path == *path) {
                    Some(i) => (device.observations.swap_remove(i).token, Exchange::Plain),
                    None => (self.token(slot), Exchange::Plain),
                }
            }
            _ => (self.token(slot), Exchange::Plain),
        };
        let device = self.device_at(slot);
        device.in_flight.push(InFlight { token, request, exchange });
        device.downlinks += 1;
        let id = self.id(slot);
        self.outputs.push_back(EndpointOutput::Transmit(Transmit {
            device: id,
            peer,
            token,
            request: DownlinkRequest::Operation(operation),
        }));
    }

    fn send_block(&mut self, now: Instant, slot: u32, request: RequestId, wire: WireBlock) {
        let (start, end) = wire.range();
        if let Some(upgrade) = self.device_at(slot).upgrade.as_deref_mut() {
            let pace = upgrade.task.config().push_pace.filter(|pace| *pace > 0);
            if let (Some(pace), Some((first, sent))) = (pace, upgrade.pushed) {
                let due = first + core::time::Duration::from_millis(sent.saturating_mul(1000) / pace);
                if due > now {
                    upgrade.paced = Some((due, request, wire));
                    return self.refile(slot);
                }
            }
        }
        let Some(peer) = self.room(slot) else { return self.fail_soon(now, slot, request) };
        let name = self.device_at(slot).upgrade.as_ref().map(|u| u.task.config().image_name.clone());
        let mut payload = alloc::vec![0u8; (end - start) as usize];
        let read = name.as_deref().and_then(|name| self.images.get(name)).map(|image| image.read(start, &mut payload));
        if !matches!(read, Some(Ok(()))) {
            // The image to push is missing or unreadable: the block fails.
            return self.fail_soon(now, slot, request);
        }
        let token = self.token(slot);
        let device = self.device_at(slot);
        device.in_flight.push(InFlight { token, request, exchange: Exchange::Push(wire) });
        device.downlinks += 1;
        // What the pace counts: the bytes that went (a block that failed
        // before going out is not counted).
        if let Some(upgrade) = device.upgrade.as_deref_mut().filter(|u| u.task.config().push_pace.is_some()) {
            let (first, sent) = upgrade.pushed.unwrap_or((now, 0));
            upgrade.pushed = Some((first, sent + (end - start)));
        }
        let id = self.id(slot);
        self.outputs.push_back(EndpointOutput::Transmit(Transmit {
            device: id,
            peer,
            token,
            request: DownlinkRequest::Block { block: wire.block(), size1: wire.total(), payload: Bytes::from(payload) },
        }));
    }

    /// A request that cannot go out: the task hears a transport failure at
    /// the next [`handle_timeout`](Self::handle_timeout) (due at once), so a
    /// task that retries at once is refused once per call, never in a loop.
    fn fail_soon(&mut self, _now: Instant, slot: u32, request: RequestId) {
        let id = self.id(slot);
        self.deferred.push_back((id, request));
    }

    // ----- time -----

    /// Fires what is due at `now`: lifetimes that passed (the registration is
    /// removed and its task told) and the tasks' deadlines.
    ///
    /// # Errors
    /// [`EndpointError::TimeWentBackwards`].
    pub fn handle_timeout(&mut self, now: Instant) -> Result<(), EndpointError> {
        self.tick(now)?;
        for _ in 0..self.deferred.len() {
            let Some((device, request)) = self.deferred.pop_front() else { break };
            if self.get(device).is_some_and(|d| d.upgrade.is_some()) {
                self.task_input(now, device.slot, TaskInput::TransportFailure { id: request });
            }
        }
        if self.registrations.handle_timeout(now).is_ok() {
            while let Some(expired) = self.registrations.poll_expired() {
                if let Some(slot) = self.registered_at(expired.location) {
                    self.leave(now, slot, EndpointEvent::Expired);
                }
            }
        }
        while let Some(slot) = self.deadlines.pop_due(now) {
            let upgrade = self.slots[slot as usize].device.as_mut().and_then(|d| d.upgrade.as_deref_mut());
            let Some(upgrade) = upgrade else { continue };
            if let Some((_, request, wire)) = upgrade.paced.take_if(|(at, _, _)| *at <= now) {
                self.send_block(now, slot, request, wire);
            }
            let upgrade = self.slots[slot as usize].device.as_mut().and_then(|d| d.upgrade.as_deref_mut());
            let Some(upgrade) = upgrade else { continue };
            if upgrade.task.poll_timeout().is_some_and(|at| at <= now) {
                let _ = upgrade.task.handle_timeout(now);
            }
            self.drain(now, slot);
        }
        self.deadlines.settle();
        Ok(())
    }

    /// When to call [`handle_timeout`](Self::handle_timeout) next.
    pub fn poll_timeout(&self) -> Option<Instant> {
        if !self.deferred.is_empty() {
            return Some(self.last_now);
        }
        earlier(self.deadlines.peek(), self.registrations.poll_timeout())
    }

    /// The next thing to do.
    pub fn poll_output(&mut self) -> Option<EndpointOutput<P>> {
        let output = self.outputs.pop_front();
        if output.is_none() {
            // Empty: the next outputs go to the start of the buffer, whose
            // lines are in cache, not where the ring stopped (after a burst
            // it spans many).
            self.outputs.clear();
            self.deadlines.settle();
        }
        output
    }
}

/// Files `slot` as the device registered at `location`.
fn index_location(by_location: &mut Vec<u32>, location: Location, slot: u32) {
    let at = location.slot();
    if by_location.len() <= at {
        by_location.resize(at + 1, u32::MAX);
    }
    by_location[at] = slot;
}

/// The key of the endpoint's indexes: the token key, changed so that the
/// two never hash the same input alike.
fn index_key(token_key: [u64; 2]) -> [u64; 2] {
    [token_key[0] ^ 0x6e61_6d65_7370_6163, token_key[1].rotate_left(17) ^ 0x7065_6572_7370_6163]
}

/// The earlier of two optional times.
fn earlier(a: Option<Instant>, b: Option<Instant>) -> Option<Instant> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

/// A registration request's link list as text, or the 4.00 refusing bytes
/// that are not UTF-8 (at the first such byte).
fn links<'r>(request: &DeviceRequest<'r>) -> Result<&'r str, Reply> {
    core::str::from_utf8(request.payload)
        .map_err(|e| Reply::code(RegistrationError::InvalidLinks { offset: e.valid_up_to() }.code()))
}

/// A Block1/Block2 option from its value (`None` for the reserved SZX 7).
pub fn parse_block(value: u64) -> Option<Block> {
    let szx = (value & 7) as u32;
    let number = u32::try_from(value >> 4).ok()?;
    (szx < 7).then(|| Block { number, more: value & 8 != 0, size: 16 << szx })
}

/// A Block1/Block2 option's value (RFC 7959 §2.2).
pub fn block_value(block: Block) -> u64 {
    let szx = block.size.clamp(16, 1024).trailing_zeros() - 4;
    (u64::from(block.number) << 4) | (u64::from(block.more) << 3) | u64::from(szx)
}
