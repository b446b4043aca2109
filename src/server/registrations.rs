//! The registration interface as a server runs it (LwM2M TS Core §6.2,
//! spec/operations.md §6): Register, Registration Update and De-register,
//! strictly checked, with lifetimes that expire and a bound on how many
//! registrations are kept. Sans-I/O: the caller passes the Uri-Query values
//! and the payload of each request and sends the answer the result names.

use alloc::collections::{BTreeMap, BTreeSet, VecDeque, btree_map};
use alloc::string::String;
use core::fmt;
use core::time::Duration;

use crate::model::{Instant, Lwm2mVersion, ObjectLinks, Registration, ResponseCode, parse_object_links};

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
}

/// The registrations a server holds, by location and by endpoint name.
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
/// assert_eq!((expired.location, expired.registration.endpoint.as_str()), (registered.location, "dev-1"));
/// assert_eq!(table.deregister(Instant::from_millis(60_000), registered.location), Err(RegistrationError::UnknownLocation));
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Default)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct Registrations {
    limits: RegistrationLimits,
    entries: BTreeMap<Location, Entry>,
    by_endpoint: BTreeMap<String, Location>,
    expiries: BTreeSet<(Instant, Location)>,
    next_location: u64,
    last_now: Instant,
    expired: VecDeque<Expired>,
}

/// The parameters of a Register or an Update, checked.
#[derive(Default)]
struct Params<'q> {
    endpoint: Option<&'q str>,
    lifetime: Option<u32>,
    version: Option<Lwm2mVersion>,
    binding: Option<&'q str>,
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
            (_, Some(value)) => {
                binding(value)?;
                p.binding = Some(value);
            }
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

/// `b`: each of U, T, S, N (and 1.0's Q) at most once.
fn binding(value: &str) -> Result<(), RegistrationError> {
    let mut seen = 0u8;
    for b in value.bytes() {
        let bit = match b {
            b'U' => 1,
            b'T' => 2,
            b'S' => 4,
            b'N' => 8,
            b'Q' => 16,
            _ => return Err(RegistrationError::InvalidBinding),
        };
        if seen & bit != 0 {
            return Err(RegistrationError::InvalidBinding);
        }
        seen |= bit;
    }
    // Q alone is no transport.
    if seen & 15 == 0 {
        return Err(RegistrationError::InvalidBinding);
    }
    Ok(())
}

fn links(payload: &str) -> Result<alloc::vec::Vec<ObjectLinks>, RegistrationError> {
    parse_object_links(payload).map_err(|e| RegistrationError::InvalidLinks { offset: e.offset })
}

impl Registrations {
    /// An empty table with these limits.
    pub fn new(limits: RegistrationLimits) -> Registrations {
        Registrations { limits, ..Registrations::default() }
    }

    /// The limits.
    pub fn limits(&self) -> &RegistrationLimits {
        &self.limits
    }

    /// Registrations held.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// True when none is held.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The registration of `endpoint`.
    pub fn get(&self, endpoint: &str) -> Option<&Registration> {
        let location = self.by_endpoint.get(endpoint)?;
        self.entries.get(location).map(|entry| &entry.registration)
    }

    /// The location of `endpoint`'s registration.
    pub fn location_of(&self, endpoint: &str) -> Option<Location> {
        self.by_endpoint.get(endpoint).copied()
    }

    /// The registration at `location`.
    pub fn at(&self, location: Location) -> Option<&Registration> {
        self.entries.get(&location).map(|entry| &entry.registration)
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
        let version = p.version.unwrap_or(Lwm2mVersion::V1_0);
        let binding = p.binding.unwrap_or("U");
        let location = Location(self.next_location);
        // One search of the name index: a known endpoint's entry is pointed
        // at the new location, and its earlier registration goes.
        let replaced = match self.by_endpoint.entry(String::from(endpoint)) {
            btree_map::Entry::Occupied(mut indexed) => {
                let old = core::mem::replace(indexed.get_mut(), location);
                self.entries.remove(&old).map(|entry| {
                    self.expiries.remove(&(entry.expires, old));
                    entry.registration
                })
            }
            btree_map::Entry::Vacant(vacant) => {
                if self.entries.len() >= self.limits.max_registrations {
                    return Err(RegistrationError::Full);
                }
                vacant.insert(location);
                None
            }
        };
        let registration = Registration {
            endpoint: String::from(endpoint),
            lifetime: p.lifetime.unwrap_or(86_400),
            lwm2m_version: version,
            binding: String::from(binding),
            queue_mode: p.queue || binding.contains('Q'),
            objects,
        };
        self.next_location += 1;
        let expires = self.expiry(now, registration.lifetime);
        self.expiries.insert((expires, location));
        self.entries.insert(location, Entry { registration, expires });
        Ok(Registered { location, replaced })
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
        if !self.entries.contains_key(&location) {
            return Err(RegistrationError::UnknownLocation);
        }
        let p = params(query)?;
        if p.endpoint.is_some() || p.version.is_some() {
            // Name and version are the Register's.
            return Err(RegistrationError::InvalidQuery);
        }
        let objects = if payload.trim().is_empty() { None } else { Some(links(payload)?) };
        let grace = self.limits.expiry_grace;
        let Some(entry) = self.entries.get_mut(&location) else { return Err(RegistrationError::UnknownLocation) };
        let registration = &mut entry.registration;
        if let Some(lifetime) = p.lifetime {
            registration.lifetime = lifetime;
        }
        if let Some(binding) = p.binding {
            registration.binding = String::from(binding);
            // A `Q` in the binding is queue mode (1.0's way, accepted from
            // any client); a 1.0 binding without it turns queue mode off. 1.1+
            // clients say `Q` at Register, so their binding alone does not.
            if binding.contains('Q') {
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
        self.expiries.remove(&(entry.expires, location));
        entry.expires = expires;
        self.expiries.insert((expires, location));
        Ok(&entry.registration)
    }

    /// A De-register (`DELETE /rd/<location>`): answer 2.02 Deleted.
    ///
    /// # Errors
    /// [`RegistrationError::UnknownLocation`] (4.04).
    pub fn deregister(&mut self, now: Instant, location: Location) -> Result<Registration, RegistrationError> {
        self.tick(now)?;
        self.remove(location).ok_or(RegistrationError::UnknownLocation)
    }

    fn remove(&mut self, location: Location) -> Option<Registration> {
        let entry = self.entries.remove(&location)?;
        self.expiries.remove(&(entry.expires, location));
        self.by_endpoint.remove(&entry.registration.endpoint);
        Some(entry.registration)
    }

    /// Removes the registrations whose lifetime passed by `now`; drain them
    /// with [`poll_expired`](Self::poll_expired).
    ///
    /// # Errors
    /// [`RegistrationError::TimeWentBackwards`].
    pub fn handle_timeout(&mut self, now: Instant) -> Result<(), RegistrationError> {
        self.tick(now)?;
        while let Some(&(at, location)) = self.expiries.first() {
            if at > now {
                break;
            }
            if let Some(registration) = self.remove(location) {
                self.expired.push_back(Expired { location, registration });
            }
        }
        Ok(())
    }

    /// The next registration removed by its lifetime.
    pub fn poll_expired(&mut self) -> Option<Expired> {
        self.expired.pop_front()
    }

    /// When the next lifetime ends.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.expiries.first().map(|(at, _)| *at)
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
            (r.lifetime, r.lwm2m_version, r.binding.as_str(), r.queue_mode),
            (300, Lwm2mVersion::V1_1, "U", true)
        );
        assert_eq!(r.objects.len(), 3);
        assert_eq!(table.location_of("a"), Some(registered.location));
        assert_eq!(table.at(registered.location).map(|r| r.endpoint.as_str()), Some("a"));
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
        assert_eq!(table.deregister(secs(1), at).map(|r| r.endpoint), Ok(String::from("a")));
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
        assert_eq!((expired.location, expired.registration.endpoint.as_str()), (a, "a"));
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
            assert_eq!(table.entries.len(), table.by_endpoint.len());
            assert_eq!(table.entries.len(), table.expiries.len());
            for (location, entry) in &table.entries {
                assert_eq!(table.by_endpoint.get(&entry.registration.endpoint), Some(location));
                assert!(table.expiries.contains(&(entry.expires, *location)));
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
