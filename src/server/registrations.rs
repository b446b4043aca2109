//! The registration interface as a server runs it (LwM2M TS Core §6.2,
//! spec/operations.md §6): Register, Registration Update and De-register,
//! strictly checked, with lifetimes that expire and a bound on how many
//! registrations are kept. Sans-I/O: the caller passes the Uri-Query values
//! and the payload of each request and sends the answer the result names.

use alloc::collections::binary_heap::PeekMut;
use alloc::collections::{BinaryHeap, VecDeque};
use alloc::vec::Vec;
use core::cmp::Reverse;
use core::fmt;
use core::time::Duration;

use super::index::{HashIndex, hash_of};
use crate::model::{Binding, Instant, Lwm2mVersion, ObjectList, Registration, ResponseCode};

/// Bounds and rules of a [`Registrations`] table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct RegistrationLimits {
    /// Registrations kept at most; a Register of a new endpoint beyond it is
    /// answered 5.03 (the table never grows without bound).
    pub max_registrations: usize,
    /// The longest endpoint name accepted, in bytes.
    pub max_endpoint_len: usize,
    /// How long after its lifetime a silent registration is kept (0: exactly
    /// the lifetime, as the TS says).
    pub expiry_grace: Duration,
}

impl Default for RegistrationLimits {
    fn default() -> RegistrationLimits {
        RegistrationLimits { max_registrations: 1_000_000, max_endpoint_len: 255, expiry_grace: Duration::ZERO }
    }
}

/// Why a registration request is refused; [`code`](Self::code) is the answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RegistrationError {
    /// No `ep`, an empty one, or one longer than the limit (4.00).
    #[error("missing, empty or too long endpoint name")]
    InvalidEndpoint,
    /// `lt` is not a whole number of seconds from 1 to 2^32 − 1 (4.00).
    #[error("lifetime is not a positive whole number of seconds")]
    InvalidLifetime,
    /// `b` names no binding, or repeats or mixes unknown letters (4.00).
    #[error("invalid binding")]
    InvalidBinding,
    /// A parameter given twice, or one without its value (4.00).
    #[error("malformed query parameter")]
    InvalidQuery,
    /// The payload is not a CoRE link list of objects (4.00).
    #[error("malformed object links at byte {offset}")]
    InvalidLinks {
        /// Byte offset in the payload.
        offset: usize,
    },
    /// An LwM2M version this server does not speak (4.12: the client falls
    /// back to an older one, TS 1.1 §6.2.1).
    #[error("unsupported LwM2M version")]
    UnsupportedVersion,
    /// Update or De-register of a location nobody holds (4.04).
    #[error("no registration at this location")]
    UnknownLocation,
    /// The table holds [`RegistrationLimits::max_registrations`] (5.03).
    #[error("registration table full")]
    Full,
    /// `now` is earlier than an instant given before (a caller's bug).
    #[error("time went backwards")]
    TimeWentBackwards,
}

impl RegistrationError {
    /// The CoAP code to answer the request with.
    pub fn code(&self) -> ResponseCode {
        match self {
            RegistrationError::UnsupportedVersion => ResponseCode::PRECONDITION_FAILED,
            RegistrationError::UnknownLocation => ResponseCode::NOT_FOUND,
            RegistrationError::Full => ResponseCode::SERVICE_UNAVAILABLE,
            RegistrationError::TimeWentBackwards => ResponseCode::INTERNAL_SERVER_ERROR,
            _ => ResponseCode::BAD_REQUEST,
        }
    }
}

/// A registration's location (`/rd/<id>`), unique for the table's life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct Location(u64);

impl Location {
    /// The path segments after `rd` (`Location-Path: rd`, then this).
    pub fn id(&self) -> u64 {
        self.0
    }

    /// The registration's slot in its table: below the number of
    /// registrations the table has held at once (an index for a vector of
    /// what goes with each registration; a slot is reused, under a new
    /// location, once its registration is gone).
    pub fn slot(&self) -> usize {
        (self.0 & 0xffff_ffff) as usize
    }

    /// The generation of the slot's registrations this one is.
    fn generation(&self) -> u32 {
        (self.0 >> 32) as u32
    }

    /// The location a request to `/rd/<segment>` names, if it is one.
    pub fn parse(segment: &str) -> Option<Location> {
        if segment.is_empty() || segment.len() > 16 || !segment.bytes().all(|b| b.is_ascii_hexdigit()) {
            return None;
        }
        u64::from_str_radix(segment, 16).ok().map(Location)
    }
}

impl fmt::Display for Location {
    /// The segment after `rd`: lowercase hex.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:x}", self.0)
    }
}

/// The answer to an accepted Register.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Registered {
    /// Answer 2.01 Created with `Location-Path: rd` and this.
    pub location: Location,
    /// The endpoint's earlier registration, which this one replaces: its
    /// observations are void and its exchanges over.
    pub replaced: Option<Registration>,
}

/// A registration removed because its lifetime passed without an Update.
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct Expired {
    /// Its location.
    pub location: Location,
    /// What it was.
    pub registration: Registration,
}

#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
struct Entry {
    registration: Registration,
    expires: Instant,
    /// When its live entry in the expiry heap is due: at or before
    /// `expires` (an Update that moves the expiry later keeps the entry,
    /// which moves when it reaches the top).
    queued: Instant,
}

#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
struct Slot {
    /// Counts the slot's registrations: a location names slot and
    /// generation, so an old location never reaches a new registration.
    generation: u32,
    entry: Option<Entry>,
}

/// The registrations a server holds, by location and by endpoint name.
///
/// Compact, for a million registrations: the registrations live in a slab
/// whose slot and generation make the location, the name index is a hash
/// table of slot numbers (SipHash under [`Registrations::with_key`]'s key),
/// and the lifetimes wait in one binary heap.
///
/// ```
/// use lwm2m_fota::model::{Instant, ResponseCode};
/// use lwm2m_fota::server::{Registrations, RegistrationError};
///
/// let mut table = Registrations::default();
/// let now = Instant::from_millis(0);
/// let registered = table.register(now, ["ep=dev-1", "lt=60", "lwm2m=1.1"], "</1/0>,</3/0>,</5/0>").unwrap();
/// assert_eq!(table.get("dev-1").unwrap().lifetime, 60);
/// // Strict: a negative lifetime is 4.00, not 2.01.
/// let refused = table.register(now, ["ep=dev-2", "lt=-1"], "</5/0>").unwrap_err();
/// assert_eq!(refused.code(), ResponseCode::BAD_REQUEST);
/// // Sixty seconds without an Update: the registration expires.
/// table.handle_timeout(Instant::from_millis(60_000)).unwrap();
/// let expired = table.poll_expired().unwrap();
/// assert_eq!((expired.location, &*expired.registration.endpoint), (registered.location, "dev-1"));
/// assert_eq!(table.deregister(Instant::from_millis(60_000), registered.location), Err(RegistrationError::UnknownLocation));
/// ```
///
/// With the `serde` feature it serializes, all but its name index, which is
/// rebuilt when it is read back.
#[derive(Debug, Clone)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(from = "Stored"))]
pub struct Registrations {
    limits: RegistrationLimits,
    key: [u64; 2],
    slots: Vec<Slot>,
    free: Vec<u32>,
    #[cfg_attr(feature = "serde", serde(skip))]
    len: usize,
    #[cfg_attr(feature = "serde", serde(skip))]
    names: HashIndex,
    /// (when, slot, generation): one live entry per registration, at its
    /// `queued`; the others are stale and skipped. The top is always live
    /// and due at its registration's expiry (see `settle`).
    expiries: BinaryHeap<Reverse<(Instant, u32, u32)>>,
    last_now: Instant,
    expired: VecDeque<Expired>,
}

/// [`Registrations`] as stored: the same fields but the name index.
#[cfg(feature = "serde")]
#[derive(serde::Deserialize)]
struct Stored {
    limits: RegistrationLimits,
    key: [u64; 2],
    slots: Vec<Slot>,
    free: Vec<u32>,
    expiries: BinaryHeap<Reverse<(Instant, u32, u32)>>,
    last_now: Instant,
    expired: VecDeque<Expired>,
}

#[cfg(feature = "serde")]
impl From<Stored> for Registrations {
    fn from(stored: Stored) -> Registrations {
        let mut table = Registrations {
            limits: stored.limits,
            key: stored.key,
            slots: stored.slots,
            free: stored.free,
            len: 0,
            names: HashIndex::default(),
            expiries: stored.expiries,
            last_now: stored.last_now,
            expired: stored.expired,
        };
        for slot in 0..table.slots.len() {
            if let Some(entry) = &table.slots[slot].entry {
                let hash = hash_of(table.key, &*entry.registration.endpoint);
                table.names.insert(hash, slot as u32);
                table.len += 1;
            }
        }
        table
    }
}

impl Default for Registrations {
    fn default() -> Registrations {
        Registrations::new(RegistrationLimits::default())
    }
}

/// The name index's key when the caller gives none.
const DEFAULT_KEY: [u64; 2] = [0x5851_f42d_4c95_7f2d, 0x1405_7b7e_f767_814f];

/// The parameters of a Register or an Update, checked.
#[derive(Default)]
struct Params<'q> {
    endpoint: Option<&'q str>,
    lifetime: Option<u32>,
    version: Option<Lwm2mVersion>,
    binding: Option<Binding>,
    queue: bool,
}

/// Reads the Uri-Query values of a registration request. Unknown parameters
/// (`sms`, `pid`, vendor ones) are allowed and ignored; each known one at most once.
fn params<'q>(query: impl IntoIterator<Item = &'q str>) -> Result<Params<'q>, RegistrationError> {
    let mut p = Params::default();
    let mut seen = 0u8;
    for item in query {
        let (name, value) = match item.bytes().position(|b| b == b'=') {
            Some(i) => (&item[..i], Some(&item[i + 1..])),
            None => (item, None),
        };
        let bit = match name {
            "ep" => 1,
            "lt" => 2,
            "lwm2m" => 4,
            "b" => 8,
            "Q" => 16,
            _ => continue,
        };
        if seen & bit != 0 {
            return Err(RegistrationError::InvalidQuery);
        }
        seen |= bit;
        match (name, value) {
            ("Q", None) => p.queue = true,
            ("Q", Some(_)) => return Err(RegistrationError::InvalidQuery),
            (_, None) => return Err(RegistrationError::InvalidQuery),
            ("ep", Some(value)) => p.endpoint = Some(value),
            ("lt", Some(value)) => p.lifetime = Some(lifetime(value)?),
            ("lwm2m", Some(value)) => {
                p.version = Some(Lwm2mVersion::parse(value).ok_or(RegistrationError::UnsupportedVersion)?)
            }
            (_, Some(value)) => p.binding = Some(Binding::parse(value).ok_or(RegistrationError::InvalidBinding)?),
        }
    }
    Ok(p)
}

/// `lt`: decimal digits only (no sign, no spaces), 1 to 2^32 − 1.
fn lifetime(value: &str) -> Result<u32, RegistrationError> {
    if value.is_empty() || value.len() > 10 || !value.bytes().all(|b| b.is_ascii_digit()) {
        return Err(RegistrationError::InvalidLifetime);
    }
    match value.parse::<u32>() {
        Ok(seconds) if seconds > 0 => Ok(seconds),
        _ => Err(RegistrationError::InvalidLifetime),
    }
}

fn links(payload: &str) -> Result<ObjectList, RegistrationError> {
    ObjectList::parse(payload).map_err(|e| RegistrationError::InvalidLinks { offset: e.offset })
}

impl Registrations {
    /// An empty table with these limits (and a fixed key for its name
    /// index: see [`with_key`](Self::with_key)).
    pub fn new(limits: RegistrationLimits) -> Registrations {
        Registrations::with_key(limits, DEFAULT_KEY)
    }

    /// An empty table whose name index hashes under `key`: with a random
    /// key, endpoint names cannot be chosen to collide in it (a server that
    /// takes Registers from anyone should give one).
    pub fn with_key(limits: RegistrationLimits, key: [u64; 2]) -> Registrations {
        Registrations {
            limits,
            key,
            slots: Vec::new(),
            free: Vec::new(),
            len: 0,
            names: HashIndex::default(),
            expiries: BinaryHeap::new(),
            last_now: Instant::ZERO,
            expired: VecDeque::new(),
        }
    }

    /// The limits.
    pub fn limits(&self) -> &RegistrationLimits {
        &self.limits
    }

    /// Registrations held.
    pub fn len(&self) -> usize {
        self.len
    }

    /// True when none is held.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The slot of `endpoint`'s registration.
    fn slot_of(&self, endpoint: &str) -> Option<u32> {
        self.slot_hashed(endpoint, hash_of(self.key, endpoint))
    }

    /// The slot of `endpoint`'s registration, the name's hash being `hash`.
    fn slot_hashed(&self, endpoint: &str, hash: u32) -> Option<u32> {
        let slots = &self.slots;
        let is_key =
            |slot: u32| slots[slot as usize].entry.as_ref().is_some_and(|e| &*e.registration.endpoint == endpoint);
        self.names.find(hash, is_key)
    }

    fn location(&self, slot: u32) -> Location {
        Location((u64::from(self.slots[slot as usize].generation) << 32) | u64::from(slot))
    }

    fn entry(&self, location: Location) -> Option<&Entry> {
        let slot = self.slots.get(location.slot())?;
        (slot.generation == location.generation()).then_some(slot.entry.as_ref()).flatten()
    }

    fn entry_mut(&mut self, location: Location) -> Option<&mut Entry> {
        let slot = self.slots.get_mut(location.slot())?;
        (slot.generation == location.generation()).then_some(slot.entry.as_mut()).flatten()
    }

    /// The registration of `endpoint`.
    pub fn get(&self, endpoint: &str) -> Option<&Registration> {
        let slot = self.slot_of(endpoint)?;
        self.slots[slot as usize].entry.as_ref().map(|entry| &entry.registration)
    }

    /// The location of `endpoint`'s registration.
    pub fn location_of(&self, endpoint: &str) -> Option<Location> {
        self.slot_of(endpoint).map(|slot| self.location(slot))
    }

    /// The registration at `location`.
    pub fn at(&self, location: Location) -> Option<&Registration> {
        self.entry(location).map(|entry| &entry.registration)
    }

    fn tick(&mut self, now: Instant) -> Result<(), RegistrationError> {
        if now < self.last_now {
            return Err(RegistrationError::TimeWentBackwards);
        }
        self.last_now = now;
        Ok(())
    }

    fn expiry(&self, now: Instant, lifetime: u32) -> Instant {
        now + Duration::from_secs(u64::from(lifetime)) + self.limits.expiry_grace
    }

    /// A Register (`POST /rd?ep=…`): `query` are its Uri-Query values and
    /// `payload` its link list. A known endpoint's earlier registration is
    /// replaced (a new location; [`Registered::replaced`] says what went).
    ///
    /// # Errors
    /// [`RegistrationError`]: its [`code`](RegistrationError::code) is the answer.
    pub fn register<'q>(
        &mut self,
        now: Instant,
        query: impl IntoIterator<Item = &'q str>,
        payload: &str,
    ) -> Result<Registered, RegistrationError> {
        self.tick(now)?;
        let p = params(query)?;
        let endpoint = p.endpoint.filter(|ep| !ep.is_empty() && ep.len() <= self.limits.max_endpoint_len);
        let endpoint = endpoint.ok_or(RegistrationError::InvalidEndpoint)?;
        let objects = links(payload)?;
        let hash = hash_of(self.key, endpoint);
        let known = self.slot_hashed(endpoint, hash);
        if known.is_none() && self.len >= self.limits.max_registrations {
            return Err(RegistrationError::Full);
        }
        // A known endpoint's earlier registration goes: its slot and its
        // index entry are taken over by the new one, under a new generation.
        let replaced = known.and_then(|slot| self.vacate(slot));
        let version = p.version.unwrap_or(Lwm2mVersion::V1_0);
        let binding = p.binding.unwrap_or(Binding::UDP);
        let registration = Registration {
            endpoint: endpoint.into(),
            lifetime: p.lifetime.unwrap_or(86_400),
            lwm2m_version: version,
            binding,
            queue_mode: p.queue || binding.contains(Binding::QUEUE),
            objects,
        };
        let expires = self.expiry(now, registration.lifetime);
        let entry = Entry { registration, expires, queued: expires };
        let slot = match known {
            Some(slot) => slot,
            None => {
                let slot = match self.free.pop() {
                    Some(slot) => slot,
                    None => {
                        self.slots.push(Slot { generation: 0, entry: None });
                        (self.slots.len() - 1) as u32
                    }
                };
                self.names.insert(hash, slot);
                slot
            }
        };
        let held = &mut self.slots[slot as usize];
        held.generation = held.generation.wrapping_add(1);
        held.entry = Some(entry);
        self.len += 1;
        self.expiries.push(Reverse((expires, slot, held.generation)));
        self.settle();
        Ok(Registered { location: self.location(slot), replaced })
    }

    /// A Registration Update (`POST /rd/<location>`): only what changed is
    /// given (`lt`, `b`; a non-empty payload is the complete new link list).
    /// The lifetime starts again.
    ///
    /// # Errors
    /// [`RegistrationError`]: 4.04 for an unknown location, 4.00 for a bad
    /// parameter or link list (the registration is then unchanged).
    pub fn update<'q>(
        &mut self,
        now: Instant,
        location: Location,
        query: impl IntoIterator<Item = &'q str>,
        payload: &str,
    ) -> Result<&Registration, RegistrationError> {
        self.tick(now)?;
        if self.entry(location).is_none() {
            return Err(RegistrationError::UnknownLocation);
        }
        let p = params(query)?;
        if p.endpoint.is_some() || p.version.is_some() {
            // Name and version are the Register's.
            return Err(RegistrationError::InvalidQuery);
        }
        let objects = if payload.trim().is_empty() { None } else { Some(links(payload)?) };
        let grace = self.limits.expiry_grace;
        let Some(entry) = self.entry_mut(location) else { return Err(RegistrationError::UnknownLocation) };
        let registration = &mut entry.registration;
        if let Some(lifetime) = p.lifetime {
            registration.lifetime = lifetime;
        }
        if let Some(binding) = p.binding {
            registration.binding = binding;
            // A `Q` in the binding is queue mode (1.0's way, accepted from
            // any client); a 1.0 binding without it turns queue mode off. 1.1+
            // clients say `Q` at Register, so their binding alone does not.
            if binding.contains(Binding::QUEUE) {
                registration.queue_mode = true;
            } else if registration.lwm2m_version == Lwm2mVersion::V1_0 {
                registration.queue_mode = false;
            }
        }
        registration.queue_mode |= p.queue;
        if let Some(objects) = objects {
            registration.objects = objects;
        }
        let expires = now + Duration::from_secs(u64::from(registration.lifetime)) + grace;
        entry.expires = expires;
        // A later expiry keeps the heap entry (it moves when it reaches the
        // top); an earlier one needs an entry of its own.
        if expires < entry.queued {
            entry.queued = expires;
            self.expiries.push(Reverse((expires, location.slot() as u32, location.generation())));
        }
        self.settle();
        self.at(location).ok_or(RegistrationError::UnknownLocation)
    }

    /// A De-register (`DELETE /rd/<location>`): answer 2.02 Deleted.
    ///
    /// # Errors
    /// [`RegistrationError::UnknownLocation`] (4.04).
    pub fn deregister(&mut self, now: Instant, location: Location) -> Result<Registration, RegistrationError> {
        self.tick(now)?;
        self.entry(location).ok_or(RegistrationError::UnknownLocation)?;
        let registration = self.remove(location.slot() as u32).ok_or(RegistrationError::UnknownLocation)?;
        self.settle();
        Ok(registration)
    }

    /// Removes the registration in `slot` for good: out of the slot and the
    /// name index, the slot freed (its heap entry goes stale).
    fn remove(&mut self, slot: u32) -> Option<Registration> {
        let registration = self.vacate(slot)?;
        self.names.remove(hash_of(self.key, &*registration.endpoint), slot);
        self.free.push(slot);
        Some(registration)
    }

    /// Takes the registration out of `slot` (its index entry and heap entry
    /// are the caller's to drop or reuse).
    fn vacate(&mut self, slot: u32) -> Option<Registration> {
        let entry = self.slots[slot as usize].entry.take()?;
        self.len -= 1;
        Some(entry.registration)
    }

    /// Restores the heap's promise: its top is live and due exactly at its
    /// registration's expiry. Stale entries on top are dropped, a moved
    /// expiry on top is re-filed; and when stale entries outnumber the live
    /// ones the heap is rebuilt, so it stays within twice the table.
    fn settle(&mut self) {
        if self.expiries.len() > 2 * self.len + 32 {
            let live = self.slots.iter().enumerate().filter_map(|(slot, held)| {
                let entry = held.entry.as_ref()?;
                Some(Reverse((entry.queued, slot as u32, held.generation)))
            });
            self.expiries = live.collect();
        }
        while let Some(mut top) = self.expiries.peek_mut() {
            let Reverse((at, slot, generation)) = *top;
            let held = &mut self.slots[slot as usize];
            let same = held.generation == generation;
            match held.entry.as_mut().filter(|e| same && e.queued == at) {
                None => drop(PeekMut::pop(top)),
                Some(entry) if entry.expires > at => {
                    entry.queued = entry.expires;
                    *top = Reverse((entry.expires, slot, generation));
                }
                Some(_) => break,
            }
        }
    }

    /// Removes the registrations whose lifetime passed by `now`; drain them
    /// with [`poll_expired`](Self::poll_expired).
    ///
    /// # Errors
    /// [`RegistrationError::TimeWentBackwards`].
    pub fn handle_timeout(&mut self, now: Instant) -> Result<(), RegistrationError> {
        self.tick(now)?;
        // After settle, the top is a live registration due at its expiry.
        while let Some(&Reverse((at, slot, _))) = self.expiries.peek() {
            if at > now {
                break;
            }
            self.expiries.pop();
            let location = self.location(slot);
            if let Some(registration) = self.remove(slot) {
                self.expired.push_back(Expired { location, registration });
            }
            self.settle();
        }
        Ok(())
    }

    /// The next registration removed by its lifetime.
    pub fn poll_expired(&mut self) -> Option<Expired> {
        self.expired.pop_front()
    }

    /// When the next lifetime ends.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.expiries.peek().map(|Reverse((at, _, _))| *at)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::vec;

    const LINKS: &str = "</1/0>,</3/0>,</5>;ver=1.1,</5/0>";

    fn secs(s: u64) -> Instant {
        Instant::from_millis(s * 1000)
    }

    fn refused(table: &mut Registrations, query: &[&str], payload: &str) -> RegistrationError {
        table.register(secs(0), query.iter().copied(), payload).unwrap_err()
    }

    #[test]
    fn a_register_with_every_parameter() {
        let mut table = Registrations::default();
        let registered =
            table.register(secs(0), ["ep=a", "lt=300", "lwm2m=1.1", "b=U", "Q", "sms=123"], LINKS).unwrap();
        assert_eq!(registered.replaced, None);
        let r = table.get("a").unwrap();
        assert_eq!(
            (r.lifetime, r.lwm2m_version, r.binding, r.queue_mode),
            (300, Lwm2mVersion::V1_1, Binding::UDP, true)
        );
        assert_eq!(r.objects.len(), 3);
        assert_eq!(table.location_of("a"), Some(registered.location));
        assert_eq!(table.at(registered.location).map(|r| &*r.endpoint), Some("a"));
        assert_eq!(table.poll_timeout(), Some(secs(300)));
    }

    #[test]
    fn defaults_and_the_1_0_queue_binding() {
        let mut table = Registrations::default();
        table.register(secs(0), ["ep=a", "b=UQ"], "").unwrap();
        let r = table.get("a").unwrap();
        assert_eq!((r.lifetime, r.lwm2m_version, r.queue_mode), (86_400, Lwm2mVersion::V1_0, true));
        assert!(r.objects.is_empty());
    }

    #[test]
    fn strict_answers() {
        let mut table = Registrations::default();
        for (query, payload, error) in [
            (vec!["lt=60"], LINKS, RegistrationError::InvalidEndpoint),
            (vec!["ep="], LINKS, RegistrationError::InvalidEndpoint),
            (vec!["ep=a", "lt=abc"], LINKS, RegistrationError::InvalidLifetime),
            (vec!["ep=a", "lt=-1"], LINKS, RegistrationError::InvalidLifetime),
            (vec!["ep=a", "lt=0"], LINKS, RegistrationError::InvalidLifetime),
            (vec!["ep=a", "lt=4294967296"], LINKS, RegistrationError::InvalidLifetime),
            (vec!["ep=a", "lt= 5"], LINKS, RegistrationError::InvalidLifetime),
            (vec!["ep=a", "lt"], LINKS, RegistrationError::InvalidQuery),
            (vec!["ep=a", "ep=b"], LINKS, RegistrationError::InvalidQuery),
            (vec!["ep=a", "Q=1"], LINKS, RegistrationError::InvalidQuery),
            (vec!["ep=a", "b=X"], LINKS, RegistrationError::InvalidBinding),
            (vec!["ep=a", "b=UU"], LINKS, RegistrationError::InvalidBinding),
            (vec!["ep=a", "b=Q"], LINKS, RegistrationError::InvalidBinding),
            (vec!["ep=a", "b="], LINKS, RegistrationError::InvalidBinding),
            (vec!["ep=a", "lwm2m=2.0"], LINKS, RegistrationError::UnsupportedVersion),
            (vec!["ep=a"], "</5/0>,x", RegistrationError::InvalidLinks { offset: 7 }),
            (vec!["ep=a"], "</5/x>", RegistrationError::InvalidLinks { offset: 1 }),
        ] {
            assert_eq!(refused(&mut table, &query, payload), error, "{query:?} {payload:?}");
        }
        let long = alloc::format!("ep={}", "x".repeat(256));
        assert_eq!(refused(&mut table, &[&long], LINKS), RegistrationError::InvalidEndpoint);
        assert!(table.is_empty(), "nothing refused is kept");
        assert_eq!(RegistrationError::UnsupportedVersion.code(), ResponseCode::PRECONDITION_FAILED);
        assert_eq!(RegistrationError::InvalidLifetime.code(), ResponseCode::BAD_REQUEST);
        assert_eq!(RegistrationError::Full.code(), ResponseCode::SERVICE_UNAVAILABLE);
        assert_eq!(RegistrationError::UnknownLocation.code(), ResponseCode::NOT_FOUND);
    }

    #[test]
    fn a_new_register_replaces_the_old_registration() {
        let mut table = Registrations::default();
        let first = table.register(secs(0), ["ep=a", "lt=60"], LINKS).unwrap();
        let second = table.register(secs(10), ["ep=a", "lt=120"], LINKS).unwrap();
        assert_ne!(first.location, second.location, "a new location");
        assert_eq!(second.replaced.map(|r| r.lifetime), Some(60));
        assert_eq!(table.len(), 1);
        assert_eq!(table.at(first.location), None);
        assert_eq!(table.poll_timeout(), Some(secs(130)), "the old lifetime is gone too");
        assert_eq!(table.update(secs(11), first.location, [], "").unwrap_err(), RegistrationError::UnknownLocation);
    }

    #[test]
    fn updates_change_only_what_they_carry_and_restart_the_lifetime() {
        let mut table = Registrations::default();
        let at = table.register(secs(0), ["ep=a", "lt=60", "lwm2m=1.1"], LINKS).unwrap().location;
        let r = table.update(secs(50), at, [], "").unwrap();
        assert_eq!((r.lifetime, r.objects.len()), (60, 3));
        assert_eq!(table.poll_timeout(), Some(secs(110)));
        let r = table.update(secs(60), at, ["lt=30", "b=UQ"], "</5/0>").unwrap();
        assert_eq!((r.lifetime, r.queue_mode, r.objects.len()), (30, true, 1));
        assert_eq!(table.poll_timeout(), Some(secs(90)));
        // A bad Update changes nothing.
        assert_eq!(table.update(secs(61), at, ["lt=x"], "").unwrap_err(), RegistrationError::InvalidLifetime);
        assert_eq!(table.update(secs(61), at, ["ep=b"], "").unwrap_err(), RegistrationError::InvalidQuery);
        assert_eq!(table.update(secs(61), at, [], "<x").unwrap_err(), RegistrationError::InvalidLinks { offset: 0 });
        assert_eq!(table.get("a").unwrap().lifetime, 30);
        assert_eq!(table.poll_timeout(), Some(secs(90)));
        // A 1.0 client turns queue mode off with a binding without Q.
        let old = table.register(secs(70), ["ep=c", "b=UQ"], "").unwrap().location;
        assert!(!table.update(secs(71), old, ["b=U"], "").unwrap().queue_mode);
    }

    #[test]
    fn deregister_and_unknown_locations() {
        let mut table = Registrations::default();
        let at = table.register(secs(0), ["ep=a"], LINKS).unwrap().location;
        assert_eq!(table.deregister(secs(1), Location(at.id() + 1)), Err(RegistrationError::UnknownLocation));
        assert_eq!(table.deregister(secs(1), at).map(|r| r.endpoint), Ok("a".into()));
        assert_eq!(table.deregister(secs(1), at), Err(RegistrationError::UnknownLocation));
        assert!(table.is_empty());
        assert_eq!(table.poll_timeout(), None);
    }

    #[test]
    fn lifetimes_expire_with_the_grace() {
        let mut table =
            Registrations::new(RegistrationLimits { expiry_grace: Duration::from_secs(5), ..Default::default() });
        let a = table.register(secs(0), ["ep=a", "lt=10"], LINKS).unwrap().location;
        table.register(secs(0), ["ep=b", "lt=20"], LINKS).unwrap();
        table.handle_timeout(secs(14)).unwrap();
        assert_eq!(table.poll_expired(), None);
        table.handle_timeout(secs(15)).unwrap();
        let expired = table.poll_expired().unwrap();
        assert_eq!((expired.location, &*expired.registration.endpoint), (a, "a"));
        assert_eq!(table.poll_expired(), None);
        assert_eq!(table.get("a"), None);
        assert_eq!(table.poll_timeout(), Some(secs(25)));
        assert_eq!(table.handle_timeout(secs(1)), Err(RegistrationError::TimeWentBackwards));
    }

    #[test]
    fn the_table_is_bounded() {
        let mut table = Registrations::new(RegistrationLimits { max_registrations: 2, ..Default::default() });
        table.register(secs(0), ["ep=a"], "").unwrap();
        table.register(secs(0), ["ep=b"], "").unwrap();
        assert_eq!(refused(&mut table, &["ep=c"], ""), RegistrationError::Full);
        // A known endpoint may register again when full.
        assert!(table.register(secs(0), ["ep=a"], "").unwrap().replaced.is_some());
        assert_eq!(table.len(), 2);
    }

    /// Generated requests (a SplitMix64 stream over the parameters' corner
    /// cases) never panic, and the three indexes always agree.
    #[test]
    fn generated_requests_keep_the_table_consistent() {
        let mut state = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = move || {
            state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
            let mut z = state;
            z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            z ^ (z >> 31)
        };
        let parts = [
            "ep=a",
            "ep=b",
            "ep=c",
            "ep=",
            "ep",
            "lt=1",
            "lt=5",
            "lt=0",
            "lt=-1",
            "lt=x",
            "lwm2m=1.0",
            "lwm2m=1.1",
            "lwm2m=9",
            "b=U",
            "b=UQ",
            "b=T",
            "b=QQ",
            "Q",
            "Q=",
            "sms=1",
            "=",
            "",
        ];
        let payloads = ["", LINKS, "</5/0>", "<", "</a>", ",,,", "</5>;ver=\"1.2\",</5/0>"];
        let mut table = Registrations::new(RegistrationLimits { max_registrations: 2, ..Default::default() });
        let mut now = 0u64;
        let mut locations = vec![];
        for _ in 0..5_000 {
            now += next() % 3_000;
            let at = Instant::from_millis(now);
            let query: alloc::vec::Vec<&str> =
                (0..next() % 5).map(|_| parts[(next() % parts.len() as u64) as usize]).collect();
            let payload = payloads[(next() % payloads.len() as u64) as usize];
            match next() % 4 {
                0 | 1 => {
                    if let Ok(registered) = table.register(at, query.iter().copied(), payload) {
                        locations.push(registered.location);
                    }
                }
                2 if !locations.is_empty() => {
                    let location = locations[(next() % locations.len() as u64) as usize];
                    let _ = table.update(at, location, query.iter().copied(), payload);
                }
                2 => {}
                _ => {
                    table.handle_timeout(at).unwrap();
                    while table.poll_expired().is_some() {}
                    if let Some(&location) = locations.last() {
                        let _ = table.deregister(at, location);
                    }
                }
            }
            assert!(table.len() <= 2);
            table.check();
        }
    }

    impl Registrations {
        /// The indexes agree with the slab: every registration is found by
        /// name and location, the free slots are empty, and the heap's top is
        /// live and exact, with a live entry no later than each expiry.
        fn check(&self) {
            let live: alloc::vec::Vec<(usize, &Entry)> =
                self.slots.iter().enumerate().filter_map(|(i, s)| s.entry.as_ref().map(|e| (i, e))).collect();
            assert_eq!(live.len(), self.len);
            assert_eq!(self.names.len(), self.len);
            assert_eq!(self.free.len() + self.len, self.slots.len());
            for &slot in &self.free {
                assert!(self.slots[slot as usize].entry.is_none());
            }
            for (slot, entry) in live {
                let name = &*entry.registration.endpoint;
                assert_eq!(self.slot_of(name), Some(slot as u32));
                let location = self.location(slot as u32);
                assert_eq!(self.at(location).map(|r| &*r.endpoint), Some(name));
                assert!(entry.queued <= entry.expires);
                let generation = self.slots[slot].generation;
                assert!(self.expiries.iter().any(|Reverse(e)| *e == (entry.queued, slot as u32, generation)));
            }
            if let Some(Reverse((at, slot, generation))) = self.expiries.peek() {
                let held = &self.slots[*slot as usize];
                assert_eq!(held.generation, *generation);
                assert_eq!(held.entry.as_ref().map(|e| e.expires), Some(*at));
                let earliest = self.slots.iter().filter_map(|s| s.entry.as_ref()).map(|e| e.expires).min();
                assert_eq!(earliest, Some(*at));
            }
            assert!(self.expiries.len() <= 2 * self.len + 33);
        }
    }

    /// Updates that move lifetimes later and earlier, registrations
    /// replaced and removed: the heap keeps one live entry each, its top is
    /// always the next expiry, and what expires is exactly what is due.
    #[test]
    fn expiries_follow_updates_both_ways() {
        let mut table = Registrations::new(RegistrationLimits { max_registrations: 64, ..Default::default() });
        let mut now = 0;
        let mut locations = vec![];
        for i in 0..64u64 {
            let ep = alloc::format!("ep=d{i}");
            let lt = alloc::format!("lt={}", 10 + i % 7);
            locations.push(table.register(secs(now), [ep.as_str(), lt.as_str()], "").unwrap().location);
            table.check();
        }
        for round in 0..200u64 {
            now += 1;
            let at = locations[(round * 17 % 64) as usize];
            let lt = alloc::format!("lt={}", 1 + round % 23);
            let _ = table.update(secs(now), at, [lt.as_str()], "");
            table.check();
            if round % 9 == 0 {
                let ep = alloc::format!("ep=d{}", round % 64);
                if let Ok(registered) = table.register(secs(now), [ep.as_str(), "lt=5"], "") {
                    locations[(round % 64) as usize] = registered.location;
                }
                table.check();
            }
            table.handle_timeout(secs(now)).unwrap();
            while let Some(expired) = table.poll_expired() {
                assert!(table.at(expired.location).is_none());
                assert!(!expired.registration.endpoint.is_empty());
            }
            table.check();
            for slot in table.slots.iter().filter_map(|s| s.entry.as_ref()) {
                assert!(slot.expires > secs(now), "nothing due is kept");
            }
        }
    }

    #[test]
    fn locations_print_and_parse() {
        let location = Location(0x1f);
        assert_eq!(alloc::format!("{location}"), "1f");
        assert_eq!(Location::parse("1f"), Some(location));
        for bad in ["", "xyz", "-1", "11111111111111111"] {
            assert_eq!(Location::parse(bad), None, "{bad:?}");
        }
    }
}
