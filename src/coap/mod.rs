//! The CoAP binding (feature `coap`): datagrams in, datagrams out, still
//! sans-I/O. [`ServerBinding`] wraps a [`server::Endpoint`](crate::server::Endpoint)
//! and does what RFC 7252 asks of the transport around it: parsing and
//! building messages (with `coap-lite`), message ids per device, tokens (the
//! endpoint's), confirmable retransmission with exponential back-off,
//! de-duplication over EXCHANGE_LIFETIME (non-idempotent requests and
//! separate responses answered from memory; idempotent ones processed again), empty ACKs and RSTs, CoAP ping,
//! 4.02 for an unrecognized critical option, and the Observe, Block1/Block2,
//! Size1/Size2, ETag, Max-Age and Location-Path options LwM2M uses.
//!
//! ```
//! use coap_lite::{CoapOption, MessageClass, MessageType, Packet, RequestType};
//! use lwm2m_fota::coap::{CoapConfig, ServerBinding};
//! use lwm2m_fota::model::Instant;
//! use lwm2m_fota::server::{EndpointConfig, EndpointEvent};
//!
//! let mut binding: ServerBinding<u32> = ServerBinding::new(EndpointConfig::default(), CoapConfig::default());
//! // A confirmable POST /rd?ep=dev-1&lt=60 from peer 7.
//! let mut register = Packet::new();
//! register.header.set_type(MessageType::Confirmable);
//! register.header.code = MessageClass::Request(RequestType::Post);
//! register.header.message_id = 0x1234;
//! register.set_token(vec![0xAB]);
//! register.add_option(CoapOption::UriPath, b"rd".to_vec());
//! register.add_option(CoapOption::UriQuery, b"ep=dev-1".to_vec());
//! register.add_option(CoapOption::UriQuery, b"lt=60".to_vec());
//! register.payload = b"</1/0>,</3/0>,</5/0>".to_vec();
//! binding.handle_datagram(Instant::from_millis(0), 7, &register.to_bytes().unwrap()).unwrap();
//! // The answer: 2.01 Created piggybacked on the ACK, with the location.
//! let (peer, datagram) = binding.poll_transmit().unwrap();
//! let ack = Packet::from_bytes(&datagram).unwrap();
//! assert_eq!((peer, ack.header.get_type(), ack.header.message_id), (7, MessageType::Acknowledgement, 0x1234));
//! assert_eq!(u8::from(ack.header.code), 0x41);
//! assert_eq!(ack.get_option(CoapOption::LocationPath).unwrap().front().unwrap(), b"rd");
//! assert!(matches!(binding.poll_event(), Some((_, EndpointEvent::Registered { replaced: false }))));
//! // A retransmission of the Register (same message id) gets the same answer,
//! // and registers nothing new.
//! binding.handle_datagram(Instant::from_millis(2000), 7, &register.to_bytes().unwrap()).unwrap();
//! assert_eq!(binding.poll_transmit().unwrap().1, datagram);
//! assert!(binding.poll_event().is_none());
//! ```

pub mod client;

pub use client::{ClientBinding, ClientConfig, ClientEvent, RequestHandle, Target, Uplink};

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::hash::Hash;
use std::sync::Arc;
use std::time::Duration;

use coap_lite::{CoapOption, MessageClass, MessageType, Packet, RequestType};

use crate::model::{ContentFormat, Instant, Operation, ResponseCode};
use crate::server::{
    DeviceId, DeviceRequest, DeviceResponse, DownlinkRequest, Endpoint, EndpointConfig, EndpointError, EndpointEvent,
    EndpointOutput, Method, Reply, ResponseVerdict, Token, Transmit, UpgradeConfig, block_value,
};

/// RFC 7252 §4.8 transmission parameters, and the binding's bounds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CoapConfig {
    /// ACK_TIMEOUT (2 s).
    pub ack_timeout: Duration,
    /// ACK_RANDOM_FACTOR × 1000 (1500: the first timeout is random in
    /// [ACK_TIMEOUT, 1.5 × ACK_TIMEOUT)).
    pub ack_random_factor_milli: u32,
    /// MAX_RETRANSMIT (4).
    pub max_retransmit: u32,
    /// EXCHANGE_LIFETIME (247 s): how long a device's message id is
    /// remembered for de-duplication.
    pub exchange_lifetime: Duration,
    /// Remembered message ids at most (the oldest go first beyond it).
    pub max_remembered: usize,
    /// Seed of message ids and retransmission timeouts.
    pub seed: u64,
}

impl CoapConfig {
    /// A confirmable message's first retransmission timeout (RFC 7252 §4.2),
    /// drawn by `random` from [ACK_TIMEOUT, ACK_TIMEOUT × ACK_RANDOM_FACTOR).
    fn first_timeout(&self, random: u64) -> Duration {
        let base = self.ack_timeout.as_millis() as u64;
        let spread = u64::from(self.ack_random_factor_milli.saturating_sub(1000));
        Duration::from_millis(base + random % (base * spread / 1000).max(1))
    }
}

/// The next value of a SplitMix64 stream: message ids and back-off need
/// spread, not secrecy (the tokens carry that).
fn splitmix64(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

impl Default for CoapConfig {
    fn default() -> CoapConfig {
        CoapConfig {
            ack_timeout: Duration::from_secs(2),
            ack_random_factor_milli: 1500,
            max_retransmit: 4,
            exchange_lifetime: Duration::from_secs(247),
            max_remembered: 250_000,
            seed: 0x5eed,
        }
    }
}

/// Counters of what the binding dropped or did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct BindingStats {
    /// Datagrams that are not CoAP version 1, or that do not parse.
    pub malformed: u64,
    /// Duplicate requests and responses answered from memory.
    pub duplicates: u64,
    /// Confirmable requests sent again.
    pub retransmissions: u64,
    /// Exchanges given up after MAX_RETRANSMIT.
    pub gave_up: u64,
    /// Requests refused with 4.02 for an unrecognized critical option.
    pub bad_option: u64,
    /// ACKs and RSTs that matched no request awaiting one (the endpoint
    /// counts the responses and notifications it did not match).
    pub unmatched: u64,
    /// Of those, the ones from an address no device is registered from.
    pub unmatched_foreign: u64,
}

#[derive(Debug)]
struct Pending<P> {
    device: DeviceId,
    peer: P,
    message_id: u16,
    datagram: Vec<u8>,
    timeout: Duration,
    sends: u32,
    deadline: Instant,
}

/// The CoAP binding of a server [`Endpoint`]: see the [module](self).
pub struct ServerBinding<P> {
    endpoint: Endpoint<P>,
    config: CoapConfig,
    rng: u64,
    /// The next message id per device (RFC 7252 §4.4: unique per peer).
    message_ids: HashMap<DeviceId, u16>,
    /// Confirmable requests not yet acknowledged, by token.
    pending: HashMap<Token, Pending<P>>,
    by_message_id: HashMap<(P, u16), Token>,
    retransmit: BTreeSet<(Instant, Token)>,
    /// What was answered to a device's message id (the datagram to send again
    /// for a duplicate), and when.
    remembered: HashMap<(P, u16), Vec<u8>>,
    remembered_order: VecDeque<(Instant, P, u16)>,
    transmits: VecDeque<(P, Vec<u8>)>,
    events: VecDeque<(DeviceId, EndpointEvent)>,
    last_now: Instant,
    stats: BindingStats,
}

impl<P: core::fmt::Debug> core::fmt::Debug for ServerBinding<P> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("ServerBinding")
            .field("endpoint", &self.endpoint)
            .field("pending", &self.pending.len())
            .field("stats", &self.stats)
            .finish_non_exhaustive()
    }
}

impl<P: Copy + Ord + Hash + core::fmt::Debug> ServerBinding<P> {
    /// A binding around a new endpoint.
    pub fn new(endpoint: EndpointConfig, config: CoapConfig) -> ServerBinding<P> {
        ServerBinding {
            endpoint: Endpoint::new(endpoint),
            rng: config.seed ^ 0x9E37_79B9_7F4A_7C15,
            config,
            message_ids: HashMap::new(),
            pending: HashMap::new(),
            by_message_id: HashMap::new(),
            retransmit: BTreeSet::new(),
            remembered: HashMap::new(),
            remembered_order: VecDeque::new(),
            transmits: VecDeque::new(),
            events: VecDeque::new(),
            last_now: Instant::ZERO,
            stats: BindingStats::default(),
        }
    }

    /// The endpoint.
    pub fn endpoint(&self) -> &Endpoint<P> {
        &self.endpoint
    }

    /// The endpoint, to add images or read devices (commands go through
    /// [`upgrade`](Self::upgrade) and [`cancel`](Self::cancel), which send what
    /// they cause).
    pub fn endpoint_mut(&mut self) -> &mut Endpoint<P> {
        &mut self.endpoint
    }

    /// What the binding counted.
    pub fn stats(&self) -> BindingStats {
        self.stats
    }

    /// Confirmable requests awaiting their acknowledgement.
    pub fn pending(&self) -> usize {
        self.pending.len()
    }

    /// Devices' message ids remembered for de-duplication (at most
    /// [`CoapConfig::max_remembered`]).
    pub fn remembered(&self) -> usize {
        self.remembered.len()
    }

    /// [`Endpoint::upgrade`].
    ///
    /// # Errors
    /// As [`Endpoint::upgrade`].
    pub fn upgrade(&mut self, now: Instant, name: &str, config: Arc<UpgradeConfig>) -> Result<DeviceId, EndpointError> {
        self.tick(now)?;
        let device = self.endpoint.upgrade(now, name, config)?;
        self.drain(now);
        Ok(device)
    }

    /// [`Endpoint::cancel`].
    ///
    /// # Errors
    /// As [`Endpoint::cancel`].
    pub fn cancel(&mut self, now: Instant, device: DeviceId) -> Result<(), EndpointError> {
        self.tick(now)?;
        self.endpoint.cancel(now, device)?;
        self.drain(now);
        Ok(())
    }

    /// [`Endpoint::release_execute`].
    ///
    /// # Errors
    /// As [`Endpoint::release_execute`].
    pub fn release_execute(&mut self, now: Instant, device: DeviceId) -> Result<(), EndpointError> {
        self.tick(now)?;
        self.endpoint.release_execute(now, device)?;
        self.drain(now);
        Ok(())
    }

    fn random(&mut self) -> u64 {
        splitmix64(&mut self.rng)
    }

    fn tick(&mut self, now: Instant) -> Result<(), EndpointError> {
        if now < self.last_now {
            return Err(EndpointError::TimeWentBackwards);
        }
        self.last_now = now;
        Ok(())
    }

    /// A datagram from `peer`.
    ///
    /// # Errors
    /// [`EndpointError::TimeWentBackwards`] (a bad datagram is dropped or
    /// answered, never an error).
    pub fn handle_datagram(&mut self, now: Instant, peer: P, datagram: &[u8]) -> Result<(), EndpointError> {
        self.tick(now)?;
        self.datagram(now, peer, datagram)?;
        self.drain(now);
        Ok(())
    }

    fn datagram(&mut self, now: Instant, peer: P, datagram: &[u8]) -> Result<(), EndpointError> {
        // RFC 7252 §3: version 1 only; anything else is silently ignored.
        if datagram.len() < 4 || datagram[0] >> 6 != 1 {
            self.stats.malformed += 1;
            return Ok(());
        }
        let kind = (datagram[0] >> 4) & 3;
        let code = datagram[1];
        let message_id = u16::from_be_bytes([datagram[2], datagram[3]]);
        let Some(packet) = Packet::from_bytes(datagram).ok().filter(|_| well_formed(datagram)) else {
            self.stats.malformed += 1;
            // §4.2/§4.3: a confirmable message we cannot process is rejected.
            if kind == 0 {
                self.send(peer, empty(MessageType::Reset, message_id));
            }
            return Ok(());
        };
        match (code >> 5, code & 31) {
            (0, 0) => {
                self.empty_message(now, peer, kind, message_id);
                Ok(())
            }
            (0, _) => self.request(now, peer, code, &packet),
            (2 | 4 | 5, _) => self.response(now, peer, kind, code, &packet),
            _ => Ok(()),
        }
    }

    fn empty_message(&mut self, now: Instant, peer: P, kind: u8, message_id: u16) {
        match kind {
            // CoAP ping (§4.3): answered with a RST.
            0 => self.send(peer, empty(MessageType::Reset, message_id)),
            // An empty ACK: the response follows separately, by token.
            2 => match self.by_message_id.remove(&(peer, message_id)) {
                Some(token) => {
                    self.forget_pending(token);
                }
                None => self.unmatched(peer),
            },
            // A RST: the device could not process the request.
            3 => match self.by_message_id.remove(&(peer, message_id)) {
                Some(token) => {
                    self.forget_pending(token);
                    let _ = self.endpoint.exchange_failed(now, token);
                }
                None => self.unmatched(peer),
            },
            _ => {}
        }
    }

    fn unmatched(&mut self, peer: P) {
        self.stats.unmatched += 1;
        if self.endpoint.find_peer(peer).is_none() {
            self.stats.unmatched_foreign += 1;
        }
    }

    fn forget_pending(&mut self, token: Token) -> Option<Pending<P>> {
        let pending = self.pending.remove(&token)?;
        self.retransmit.remove(&(pending.deadline, token));
        self.by_message_id.remove(&(pending.peer, pending.message_id));
        Some(pending)
    }

    fn remember(&mut self, now: Instant, peer: P, message_id: u16, datagram: Vec<u8>) {
        if self.remembered.insert((peer, message_id), datagram).is_none() {
            self.remembered_order.push_back((now, peer, message_id));
        }
        while self.remembered.len() > self.config.max_remembered {
            let Some((_, p, id)) = self.remembered_order.pop_front() else { break };
            self.remembered.remove(&(p, id));
        }
    }

    /// A duplicate of a message already answered: the answer again.
    fn duplicate(&mut self, peer: P, message_id: u16) -> bool {
        let Some(answer) = self.remembered.get(&(peer, message_id)) else { return false };
        let answer = answer.clone();
        self.stats.duplicates += 1;
        self.transmits.push_back((peer, answer));
        true
    }

    fn request(&mut self, now: Instant, peer: P, code: u8, packet: &Packet) -> Result<(), EndpointError> {
        let message_id = packet.header.message_id;
        let confirmable = packet.header.get_type() == MessageType::Confirmable;
        if self.duplicate(peer, message_id) {
            return Ok(());
        }
        let reply = match device_request(packet) {
            Ok(request) => {
                let (path, query) = (&request.0, &request.1);
                let request = DeviceRequest {
                    method: method(code),
                    path,
                    query,
                    content_format: uint(packet, CoapOption::ContentFormat).and_then(|v| u16::try_from(v).ok()),
                    block2: uint(packet, CoapOption::Block2),
                    payload: &packet.payload,
                };
                self.endpoint.handle_request(now, peer, &request)?
            }
            Err(code) => {
                if code == ResponseCode::new(4, 2) {
                    self.stats.bad_option += 1;
                }
                Reply::code(code)
            }
        };
        let response = reply_packet(packet, reply, confirmable, self.random() as u16);
        let bytes = to_bytes(&response);
        // §4.5: a duplicate of an idempotent request (GET, PUT, DELETE) may be
        // processed again — an image block is served again rather than kept
        // for EXCHANGE_LIFETIME; a POST (Register, Update, Send) is answered
        // from memory.
        if !matches!(code, 1 | 3 | 4) {
            self.remember(now, peer, message_id, bytes.clone());
        }
        self.transmits.push_back((peer, bytes));
        Ok(())
    }

    fn response(&mut self, now: Instant, peer: P, kind: u8, code: u8, packet: &Packet) -> Result<(), EndpointError> {
        let message_id = packet.header.message_id;
        let token = Token::from_bytes(packet.get_token());
        if kind == 2 {
            // Piggybacked: it answers the request with this message id, if
            // the token agrees (§5.3.2).
            let expected = self.by_message_id.get(&(peer, message_id)).copied();
            let Some(expected) = expected.filter(|expected| token == Some(*expected)) else {
                self.unmatched(peer);
                return Ok(());
            };
            self.forget_pending(expected);
        } else if kind == 0 && self.duplicate(peer, message_id) {
            return Ok(());
        } else if let Some(token) = token.filter(|t| self.pending.get(t).is_some_and(|p| p.peer == peer)) {
            // A separate response from where the request went also ends its
            // retransmission (one from elsewhere is the endpoint's to refuse).
            self.forget_pending(token);
        }
        let verdict = match token {
            Some(token) => {
                let response = DeviceResponse {
                    token,
                    code: ResponseCode(code),
                    content_format: uint(packet, CoapOption::ContentFormat).and_then(|v| u16::try_from(v).ok()),
                    observe: uint(packet, CoapOption::Observe).and_then(|v| u32::try_from(v).ok()),
                    block1: uint(packet, CoapOption::Block1),
                    size1: uint(packet, CoapOption::Size1),
                    max_age: uint(packet, CoapOption::MaxAge).and_then(|v| u32::try_from(v).ok()),
                    payload: &packet.payload,
                };
                self.endpoint.handle_response(now, peer, &response)?
            }
            None => ResponseVerdict::Unmatched,
        };
        if kind == 2 {
            return Ok(());
        }
        // A separate response or notification: ACK what we took (CON), reset
        // what matches nothing (RFC 7641 §3.6: the device stops notifying).
        let answer = match verdict {
            ResponseVerdict::Accepted | ResponseVerdict::Stale if kind == 0 => {
                empty(MessageType::Acknowledgement, message_id)
            }
            ResponseVerdict::Unmatched => empty(MessageType::Reset, message_id),
            _ => return Ok(()),
        };
        let bytes = to_bytes(&answer);
        if kind == 0 {
            self.remember(now, peer, message_id, bytes.clone());
        }
        self.transmits.push_back((peer, bytes));
        Ok(())
    }

    fn send(&mut self, peer: P, packet: Packet) {
        self.transmits.push_back((peer, to_bytes(&packet)));
    }

    /// Moves the endpoint's outputs into datagrams and events.
    fn drain(&mut self, now: Instant) {
        while let Some(output) = self.endpoint.poll_output() {
            match output {
                EndpointOutput::Transmit(transmit) => self.transmit(now, transmit),
                EndpointOutput::Abandon { token, .. } => {
                    self.forget_pending(token);
                }
                EndpointOutput::Event(device, event) => {
                    if matches!(event, EndpointEvent::Deregistered | EndpointEvent::Expired)
                        && self.endpoint.device(device).is_none()
                    {
                        self.message_ids.remove(&device);
                    }
                    self.events.push_back((device, event));
                }
            }
        }
    }

    fn transmit(&mut self, now: Instant, transmit: Transmit<P>) {
        let first = self.random() as u16;
        let id = self.message_ids.entry(transmit.device).or_insert(first);
        *id = id.wrapping_add(1);
        let message_id = *id;
        let packet = request_packet(message_id, transmit.token, &transmit.request);
        let datagram = to_bytes(&packet);
        let random = self.random();
        let timeout = self.config.first_timeout(random);
        let deadline = now + timeout;
        self.transmits.push_back((transmit.peer, datagram.clone()));
        self.by_message_id.insert((transmit.peer, message_id), transmit.token);
        self.retransmit.insert((deadline, transmit.token));
        let pending =
            Pending { device: transmit.device, peer: transmit.peer, message_id, datagram, timeout, sends: 1, deadline };
        if let Some(old) = self.pending.insert(transmit.token, pending) {
            // A Cancel Observation reuses its observation's token.
            self.retransmit.remove(&(old.deadline, transmit.token));
            self.by_message_id.remove(&(old.peer, old.message_id));
        }
    }

    /// Fires what is due at `now`: retransmissions, exchanges given up (their
    /// tasks hear a transport failure), forgotten message ids, and the
    /// endpoint's own deadlines.
    ///
    /// # Errors
    /// [`EndpointError::TimeWentBackwards`].
    pub fn handle_timeout(&mut self, now: Instant) -> Result<(), EndpointError> {
        self.tick(now)?;
        while let Some(&(at, token)) = self.retransmit.first() {
            if at > now {
                break;
            }
            self.retransmit.pop_first();
            let Some(mut pending) = self.pending.remove(&token) else { continue };
            if pending.sends > self.config.max_retransmit {
                self.by_message_id.remove(&(pending.peer, pending.message_id));
                self.stats.gave_up += 1;
                self.endpoint.exchange_failed(now, token)?;
                continue;
            }
            // A device that moved (NAT rebinding) gets it where it is now.
            if let Some(peer) = self.endpoint.peer_of(pending.device).filter(|p| *p != pending.peer) {
                self.by_message_id.remove(&(pending.peer, pending.message_id));
                self.by_message_id.insert((peer, pending.message_id), token);
                pending.peer = peer;
            }
            pending.sends += 1;
            pending.timeout *= 2;
            pending.deadline = now + pending.timeout;
            self.stats.retransmissions += 1;
            self.endpoint.record_retransmission(pending.device);
            self.transmits.push_back((pending.peer, pending.datagram.clone()));
            self.retransmit.insert((pending.deadline, token));
            self.pending.insert(token, pending);
        }
        while let Some(&(at, peer, id)) = self.remembered_order.front() {
            if at + self.config.exchange_lifetime > now {
                break;
            }
            self.remembered_order.pop_front();
            self.remembered.remove(&(peer, id));
        }
        self.endpoint.handle_timeout(now)?;
        self.drain(now);
        Ok(())
    }

    /// When to call [`handle_timeout`](Self::handle_timeout) next.
    pub fn poll_timeout(&self) -> Option<Instant> {
        [
            self.retransmit.first().map(|(at, _)| *at),
            self.remembered_order.front().map(|(at, _, _)| *at + self.config.exchange_lifetime),
            self.endpoint.poll_timeout(),
        ]
        .into_iter()
        .flatten()
        .min()
    }

    /// The next datagram to send, and where.
    pub fn poll_transmit(&mut self) -> Option<(P, Vec<u8>)> {
        self.transmits.pop_front()
    }

    /// The next event.
    pub fn poll_event(&mut self) -> Option<(DeviceId, EndpointEvent)> {
        self.events.pop_front()
    }
}

/// Options the server understands in a request; any other critical (odd)
/// option is 4.02 Bad Option (RFC 7252 §5.4.1).
const REQUEST_OPTIONS: [u16; 8] = [3, 7, 11, 12, 14, 15, 17, 23];

/// Is the datagram's framing sound beyond what coap-lite checks? A payload
/// marker followed by no payload is a message format error (§3); a trailing
/// 0xFF may be an option's last value byte or the payload's, so the options
/// are walked to find where the marker is.
fn well_formed(datagram: &[u8]) -> bool {
    datagram.last() != Some(&0xFF) || !ends_with_payload_marker(datagram)
}

/// Whether the options run up to a payload marker that is the last byte.
fn ends_with_payload_marker(datagram: &[u8]) -> bool {
    let tkl = usize::from(datagram[0] & 0x0F);
    let mut i = 4 + tkl;
    while i < datagram.len() {
        let byte = datagram[i];
        if byte == 0xFF {
            return i + 1 == datagram.len();
        }
        i += 1;
        let mut ext = |nibble: u8| -> Option<usize> {
            match nibble {
                13 => {
                    let v = usize::from(*datagram.get(i)?) + 13;
                    i += 1;
                    Some(v)
                }
                14 => {
                    let v = usize::from(u16::from_be_bytes([*datagram.get(i)?, *datagram.get(i + 1)?])) + 269;
                    i += 2;
                    Some(v)
                }
                15 => None,
                n => Some(usize::from(n)),
            }
        };
        let (Some(_), Some(length)) = (ext(byte >> 4), ext(byte & 0x0F)) else { return true };
        i += length;
    }
    false
}

type PathAndQuery<'p> = (Vec<&'p str>, Vec<&'p str>);

/// The Uri-Path and Uri-Query of a request, or the code refusing it.
fn device_request(packet: &Packet) -> Result<PathAndQuery<'_>, ResponseCode> {
    for (number, _) in packet.options() {
        if number % 2 == 1 && !REQUEST_OPTIONS.contains(number) {
            return Err(ResponseCode::new(4, 2));
        }
    }
    let strings = |option| -> Result<Vec<&str>, ResponseCode> {
        match packet.get_option(option) {
            None => Ok(Vec::new()),
            Some(list) => list.iter().map(|v| core::str::from_utf8(v).map_err(|_| ResponseCode::BAD_REQUEST)).collect(),
        }
    };
    Ok((strings(CoapOption::UriPath)?, strings(CoapOption::UriQuery)?))
}

fn method(code: u8) -> Method {
    match code {
        1 => Method::Get,
        2 => Method::Post,
        3 => Method::Put,
        4 => Method::Delete,
        other => Method::Other(other),
    }
}

/// An unsigned option's value (RFC 7252 §3.2), if present and at most 8 bytes.
fn uint(packet: &Packet, option: CoapOption) -> Option<u64> {
    let value = packet.get_first_option(option)?;
    (value.len() <= 8).then(|| value.iter().fold(0u64, |acc, &b| (acc << 8) | u64::from(b)))
}

fn uint_bytes(value: u64) -> Vec<u8> {
    let bytes = value.to_be_bytes();
    let skip = bytes.iter().take_while(|&&b| b == 0).count();
    bytes[skip..].to_vec()
}

/// A message with its header set and nothing else.
fn message(kind: MessageType, code: MessageClass, message_id: u16, token: &[u8]) -> Packet {
    let mut packet = Packet::new();
    packet.header.set_type(kind);
    packet.header.code = code;
    packet.header.message_id = message_id;
    packet.set_token(token.to_vec());
    packet
}

/// An empty ACK or RST.
fn empty(kind: MessageType, message_id: u16) -> Packet {
    message(kind, MessageClass::Empty, message_id, &[])
}

/// The header of the answer to a request: piggybacked on the ACK of a
/// confirmable one (its message id), else a NON with `non_id`.
fn answer_to(confirmable: bool, message_id: u16, non_id: u16, code: ResponseCode, token: &[u8]) -> Packet {
    let (kind, message_id) = match confirmable {
        true => (MessageType::Acknowledgement, message_id),
        false => (MessageType::NonConfirmable, non_id),
    };
    message(kind, MessageClass::from(code.0), message_id, token)
}

fn to_bytes(packet: &Packet) -> Vec<u8> {
    // Everything the binding builds is far below any limit.
    packet.to_bytes_unlimited().unwrap_or_default()
}

/// The response to `request`: piggybacked on its ACK, or a NON of its own.
fn reply_packet(request: &Packet, reply: Reply, confirmable: bool, non_id: u16) -> Packet {
    let mut packet = answer_to(confirmable, request.header.message_id, non_id, reply.code, request.get_token());
    if let Some(location) = reply.location {
        packet.add_option(CoapOption::LocationPath, b"rd".to_vec());
        packet.add_option(CoapOption::LocationPath, location.to_string().into_bytes());
    }
    if let Some(etag) = reply.etag {
        packet.add_option(CoapOption::ETag, etag.to_vec());
    }
    if let Some(format) = reply.content_format {
        packet.add_option(CoapOption::ContentFormat, uint_bytes(u64::from(format.number())));
    }
    if let Some(block) = reply.block2 {
        packet.add_option(CoapOption::Block2, uint_bytes(block_value(block)));
    }
    if let Some(size) = reply.size2 {
        packet.add_option(CoapOption::Size2, uint_bytes(size));
    }
    packet.payload = reply.payload;
    packet
}

/// A confirmable request to a device.
fn request_packet(message_id: u16, token: Token, request: &DownlinkRequest) -> Packet {
    let header =
        |method| message(MessageType::Confirmable, MessageClass::Request(method), message_id, &token.to_bytes());
    let operation = match request {
        DownlinkRequest::Block { block, size1, payload } => {
            let mut packet = header(RequestType::Put);
            set_path(&mut packet, &crate::model::Path::resource(5, 0, 0));
            packet.add_option(CoapOption::ContentFormat, uint_bytes(u64::from(ContentFormat::Opaque.number())));
            packet.add_option(CoapOption::Block1, uint_bytes(block_value(*block)));
            packet.add_option(CoapOption::Size1, uint_bytes(*size1));
            packet.payload = payload.to_vec();
            return packet;
        }
        DownlinkRequest::Operation(operation) => operation,
    };
    let mut packet = header(operation_method(operation));
    set_path(&mut packet, operation.path());
    match operation {
        Operation::Observe { accept, .. } => {
            packet.add_option(CoapOption::Observe, Vec::new());
            if let Some(format) = accept {
                packet.add_option(CoapOption::Accept, uint_bytes(u64::from(format.number())));
            }
        }
        Operation::CancelObservation { .. } => packet.add_option(CoapOption::Observe, vec![1]),
        Operation::Read { accept: Some(format), .. } => {
            packet.add_option(CoapOption::Accept, uint_bytes(u64::from(format.number())));
        }
        Operation::Write { format, payload, .. } => {
            packet.add_option(CoapOption::ContentFormat, uint_bytes(u64::from(format.number())));
            packet.payload = payload.to_vec();
        }
        Operation::WriteBlock { format, block, total_size, payload, .. } => {
            packet.add_option(CoapOption::ContentFormat, uint_bytes(u64::from(format.number())));
            packet.add_option(CoapOption::Block1, uint_bytes(block_value(*block)));
            if let Some(size) = total_size {
                packet.add_option(CoapOption::Size1, uint_bytes(*size));
            }
            packet.payload = payload.to_vec();
        }
        Operation::WriteAttributes { attributes, .. } => {
            if let Some(pmin) = attributes.pmin {
                packet.add_option(CoapOption::UriQuery, format!("pmin={pmin}").into_bytes());
            }
            if let Some(pmax) = attributes.pmax {
                packet.add_option(CoapOption::UriQuery, format!("pmax={pmax}").into_bytes());
            }
        }
        _ => {}
    }
    packet
}

fn set_path(packet: &mut Packet, path: &crate::model::Path) {
    for segment in path.segments() {
        packet.add_option(CoapOption::UriPath, segment.to_string().into_bytes());
    }
}

fn operation_method(operation: &Operation) -> RequestType {
    match operation {
        Operation::Write { .. } | Operation::WriteAttributes { .. } | Operation::WriteBlock { .. } => RequestType::Put,
        Operation::Execute { .. } => RequestType::Post,
        _ => RequestType::Get,
    }
}

#[cfg(test)]
mod tests;
