//! The device side of the CoAP binding: one LwM2M client's messages to and
//! from its server, sans-I/O. [`ClientBinding`] turns the server's requests
//! into [`Operation`]s (answered with [`ClientBinding::respond`], duplicates
//! answered again from memory unless [`ClientConfig::deduplicate`] is off),
//! builds the client's own messages (Register, Update, De-register, Send,
//! notifications, Block2 image fetches), and retransmits the confirmable ones
//! with RFC 7252 back-off.
//!
//! Message ids count up from a random start and tokens are 8 bytes, both drawn
//! from [`CoapConfig::seed`]: a real device seeds it from the operating
//! system's randomness. The binding knows two peers, [`Target::Server`] and
//! [`Target::Download`] (the host of a pulled image); the caller says which one
//! each datagram came from and filters out datagrams from anywhere else
//! (RFC 7252 §5.3.2: a response comes from where its request went).

use std::collections::VecDeque;
use std::time::Duration;

use coap_lite::{CoapOption, MessageClass, MessageType, Packet, RequestType};

use super::{CoapConfig, answer_to, empty, message, splitmix64, to_bytes, uint, uint_bytes};
use crate::model::{Attributes, Block, ContentFormat, Instant, Operation, Path, ResponseCode};
use crate::server::{block_value, parse_block};

/// Which of the client's messages an event is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Uplink {
    /// Register.
    Register,
    /// Registration Update.
    Update,
    /// De-register.
    Deregister,
    /// Send.
    Send,
    /// A confirmable notification.
    Notification,
    /// A Block2 request of an image fetch.
    Fetch,
}

/// Where a datagram goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    /// The LwM2M server.
    Server,
    /// The host of the image being fetched.
    Download,
}

/// How a [`ClientBinding`] behaves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientConfig {
    /// Transmission parameters, and the seed of message ids, tokens and
    /// back-off.
    pub coap: CoapConfig,
    /// Remember the answers to server requests and send one again, without
    /// surfacing the request, when a copy of it comes (the same message id
    /// within EXCHANGE_LIFETIME), as RFC 7252 §4.5 asks. On by default; off,
    /// every copy of a request is surfaced and processed again, as by a client
    /// built without a response cache (to test servers against such clients).
    pub deduplicate: bool,
}

impl Default for ClientConfig {
    fn default() -> ClientConfig {
        ClientConfig { coap: CoapConfig::default(), deduplicate: true }
    }
}

/// How to answer one server request, and what of the request its
/// [`Operation`] does not carry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestHandle {
    message_id: u16,
    token: Vec<u8>,
    confirmable: bool,
    accept: Option<ContentFormat>,
    block1: Option<Block>,
    query: Vec<String>,
}

impl RequestHandle {
    /// The request's token (a notification of an observation carries it).
    pub fn token(&self) -> &[u8] {
        &self.token
    }

    /// The request's Accept option, for every operation (a Cancel
    /// Observation's answer is in the format asked for, too). An Accept the
    /// binding does not know never gets here: the request is 4.06.
    pub fn accept(&self) -> Option<ContentFormat> {
        self.accept
    }

    /// The request's Uri-Query items (`pmin=10`), as sent: a Write-Attributes
    /// item without a value (`pmin`) removes the attribute, which
    /// [`Attributes`] cannot say.
    pub fn query(&self) -> &[String] {
        &self.query
    }
}

/// What the client must act on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClientEvent {
    /// A server request: answer it with [`ClientBinding::respond`]. An
    /// operation the binding cannot read is the code to answer with.
    Request(RequestHandle, Result<Operation, ResponseCode>),
    /// The server answered an uplink (for Register, a 2.01 also sets the
    /// location Updates and the De-register go to).
    Answered(Uplink, ResponseCode),
    /// The answer to a Block2 fetch.
    Block {
        /// Its code (2.05 with a block, or an error).
        code: ResponseCode,
        /// The Block2 option.
        block: Option<Block>,
        /// The image's ETag.
        etag: Option<Vec<u8>>,
        /// Size2, when given.
        size2: Option<u64>,
        /// The bytes.
        payload: Vec<u8>,
    },
    /// An uplink went unanswered through every retransmission.
    Failed(Uplink),
    /// The server reset a notification of the observation with this token:
    /// it has forgotten the observation (RFC 7641 §3.6).
    ObservationReset(Vec<u8>),
}

#[derive(Debug)]
struct Outstanding {
    what: Uplink,
    message_id: u16,
    token: Vec<u8>,
    target: Target,
    datagram: Vec<u8>,
    timeout: Duration,
    sends: u32,
    deadline: Instant,
    /// An empty ACK came: no more retransmission, the answer is separate.
    acked: bool,
}

/// One LwM2M client's CoAP transport. See the [module](self).
#[derive(Debug)]
pub struct ClientBinding {
    config: CoapConfig,
    deduplicate: bool,
    rng: u64,
    message_id: u16,
    location: Option<String>,
    outstanding: Vec<Outstanding>,
    /// Answers to recent server requests by message id, for duplicates.
    answered: VecDeque<(u16, Instant, Vec<u8>)>,
    /// Server requests surfaced and not answered yet (a copy of one is
    /// dropped: the answer will come).
    in_progress: Vec<u16>,
    transmits: VecDeque<(Target, Vec<u8>)>,
    events: VecDeque<ClientEvent>,
}

/// Answers remembered for duplicates at most.
const REMEMBERED: usize = 32;

impl ClientBinding {
    /// A client with no registration yet, de-duplicating server requests.
    pub fn new(config: CoapConfig) -> ClientBinding {
        ClientBinding::with_config(ClientConfig { coap: config, ..ClientConfig::default() })
    }

    /// A client with no registration yet, configured in full.
    pub fn with_config(config: ClientConfig) -> ClientBinding {
        let ClientConfig { coap: config, deduplicate } = config;
        let mut binding = ClientBinding {
            config,
            deduplicate,
            rng: config.seed ^ 0xD1B5_4A32_D192_ED03,
            message_id: 0,
            location: None,
            outstanding: Vec::new(),
            answered: VecDeque::new(),
            in_progress: Vec::new(),
            transmits: VecDeque::new(),
            events: VecDeque::new(),
        };
        binding.message_id = binding.random() as u16;
        binding
    }

    fn random(&mut self) -> u64 {
        splitmix64(&mut self.rng)
    }

    fn next_message_id(&mut self) -> u16 {
        self.message_id = self.message_id.wrapping_add(1);
        self.message_id
    }

    /// Where the registration lives (`rd/<id>`), once registered.
    pub fn location(&self) -> Option<&str> {
        self.location.as_deref()
    }

    /// Whether an uplink of this kind awaits its answer.
    pub fn awaiting(&self, what: Uplink) -> bool {
        self.outstanding.iter().any(|o| o.what == what)
    }

    /// Forgets every uplink of this kind that awaits its answer: no more
    /// retransmissions, no event, and a late answer matches nothing. For a
    /// Register or Update a newer one replaces, or the Block2 fetch of a
    /// download the device aborted.
    pub fn abandon(&mut self, what: Uplink) {
        self.outstanding.retain(|o| o.what != what);
    }

    /// Register: `query` are the Uri-Query values (`ep=…`, `lt=…`), `links`
    /// the object list.
    pub fn register(&mut self, now: Instant, query: &[&str], links: &str) {
        self.location = None;
        let mut packet = self.request(RequestType::Post, &["rd"]);
        for item in query {
            packet.add_option(CoapOption::UriQuery, item.as_bytes().to_vec());
        }
        packet.add_option(CoapOption::ContentFormat, uint_bytes(40));
        packet.payload = links.as_bytes().to_vec();
        self.confirmable(now, Uplink::Register, Target::Server, packet);
    }

    /// A Registration Update with `query` (e.g. `lt=…`); nothing before a
    /// registration.
    pub fn update(&mut self, now: Instant, query: &[&str]) {
        let Some(location) = self.location.clone() else { return };
        let mut packet = self.request(RequestType::Post, &[]);
        for segment in location.split('/') {
            packet.add_option(CoapOption::UriPath, segment.as_bytes().to_vec());
        }
        for item in query {
            packet.add_option(CoapOption::UriQuery, item.as_bytes().to_vec());
        }
        self.confirmable(now, Uplink::Update, Target::Server, packet);
    }

    /// De-register; nothing before a registration.
    pub fn deregister(&mut self, now: Instant) {
        let Some(location) = self.location.take() else { return };
        let mut packet = self.request(RequestType::Delete, &[]);
        for segment in location.split('/') {
            packet.add_option(CoapOption::UriPath, segment.as_bytes().to_vec());
        }
        self.confirmable(now, Uplink::Deregister, Target::Server, packet);
    }

    /// LwM2M Send (`POST /dp`).
    pub fn send(&mut self, now: Instant, format: ContentFormat, payload: &[u8]) {
        let mut packet = self.request(RequestType::Post, &["dp"]);
        packet.add_option(CoapOption::ContentFormat, uint_bytes(u64::from(format.number())));
        packet.payload = payload.to_vec();
        self.confirmable(now, Uplink::Send, Target::Server, packet);
    }

    /// A notification of the observation whose request had `token`.
    pub fn notify(
        &mut self,
        now: Instant,
        token: &[u8],
        sequence: u32,
        format: ContentFormat,
        payload: &[u8],
        confirmable: bool,
    ) {
        let kind = if confirmable { MessageType::Confirmable } else { MessageType::NonConfirmable };
        let message_id = self.next_message_id();
        let mut packet = message(kind, MessageClass::from(ResponseCode::CONTENT.0), message_id, token);
        packet.add_option(CoapOption::Observe, uint_bytes(u64::from(sequence & 0xFF_FFFF)));
        packet.add_option(CoapOption::ContentFormat, uint_bytes(u64::from(format.number())));
        packet.payload = payload.to_vec();
        if confirmable {
            self.confirmable(now, Uplink::Notification, Target::Server, packet);
        } else {
            self.transmits.push_back((Target::Server, to_bytes(&packet)));
        }
    }

    /// A Block2 GET of block `number` of size `size` of the image at `path`
    /// (to [`Target::Download`]).
    pub fn fetch(&mut self, now: Instant, path: &[&str], number: u32, size: u32) {
        let mut packet = self.request(RequestType::Get, path);
        let block = Block { number, more: false, size };
        packet.add_option(CoapOption::Block2, uint_bytes(block_value(block)));
        self.confirmable(now, Uplink::Fetch, Target::Download, packet);
    }

    fn request(&mut self, method: RequestType, path: &[&str]) -> Packet {
        let message_id = self.next_message_id();
        // 64 bits: RFC 7252 §5.3.1 asks for enough randomness that an
        // off-path attacker cannot guess a token.
        let token = self.random().to_be_bytes();
        let mut packet = message(MessageType::Confirmable, MessageClass::Request(method), message_id, &token);
        for segment in path {
            packet.add_option(CoapOption::UriPath, segment.as_bytes().to_vec());
        }
        packet
    }

    fn confirmable(&mut self, now: Instant, what: Uplink, target: Target, packet: Packet) {
        let datagram = to_bytes(&packet);
        let random = self.random();
        let timeout = self.config.first_timeout(random);
        self.transmits.push_back((target, datagram.clone()));
        self.outstanding.push(Outstanding {
            what,
            message_id: packet.header.message_id,
            token: packet.get_token().to_vec(),
            target,
            datagram,
            timeout,
            sends: 1,
            deadline: now + timeout,
            acked: false,
        });
    }

    /// Answers a server request: piggybacked on the ACK of a confirmable one,
    /// else a NON with the client's next message id. `observe` is the Observe
    /// option of the first answer to an Observe. The answer to a Block1 block
    /// (2.31 Continue, or 2.04 Changed for the last) carries the block's
    /// Block1 option back (RFC 7959 §2.3), with M set on a 2.31.
    pub fn respond(
        &mut self,
        now: Instant,
        request: &RequestHandle,
        code: ResponseCode,
        format: Option<ContentFormat>,
        payload: &[u8],
        observe: Option<u32>,
    ) {
        // A NON answer takes the next message id; an ACK takes the request's.
        let non_id = if request.confirmable { 0 } else { self.next_message_id() };
        let mut packet = answer_to(request.confirmable, request.message_id, non_id, code, &request.token);
        if let Some(sequence) = observe {
            packet.add_option(CoapOption::Observe, uint_bytes(u64::from(sequence & 0xFF_FFFF)));
        }
        if let Some(format) = format {
            packet.add_option(CoapOption::ContentFormat, uint_bytes(u64::from(format.number())));
        }
        if let Some(block) = request.block1.filter(|_| code == ResponseCode::CONTINUE || code == ResponseCode::CHANGED)
        {
            let block = Block { more: code == ResponseCode::CONTINUE, ..block };
            packet.add_option(CoapOption::Block1, uint_bytes(block_value(block)));
        }
        packet.payload = payload.to_vec();
        let bytes = to_bytes(&packet);
        if self.deduplicate {
            self.in_progress.retain(|id| *id != request.message_id);
            self.answered.push_back((request.message_id, now, bytes.clone()));
            if self.answered.len() > REMEMBERED {
                self.answered.pop_front();
            }
        }
        self.transmits.push_back((Target::Server, bytes));
    }

    /// A datagram `from` the server or the download host. Empty ACKs and RSTs
    /// it sends in answer go back there; only the server's requests are
    /// surfaced (a confirmable one from the download host is reset).
    pub fn handle_datagram(&mut self, now: Instant, from: Target, datagram: &[u8]) {
        if datagram.len() < 4 || datagram[0] >> 6 != 1 {
            return;
        }
        let Ok(packet) = Packet::from_bytes(datagram) else { return };
        let kind = packet.header.get_type();
        let message_id = packet.header.message_id;
        let code = datagram[1];
        if code == 0 {
            match kind {
                // CoAP ping (RFC 7252 §4.3), answered where it came from.
                MessageType::Confirmable => {
                    self.transmits.push_back((from, to_bytes(&empty(MessageType::Reset, message_id))))
                }
                MessageType::Acknowledgement => {
                    if let Some(o) = self.outstanding.iter_mut().find(|o| o.message_id == message_id) {
                        // The separate response has until EXCHANGE_LIFETIME to come.
                        o.acked = true;
                        o.deadline = now + self.config.exchange_lifetime;
                    }
                }
                MessageType::Reset => {
                    if let Some(i) = self.outstanding.iter().position(|o| o.message_id == message_id) {
                        let o = self.outstanding.swap_remove(i);
                        if o.what == Uplink::Notification {
                            self.events.push_back(ClientEvent::ObservationReset(o.token));
                        } else {
                            self.events.push_back(ClientEvent::Failed(o.what));
                        }
                    }
                }
                MessageType::NonConfirmable => {}
            }
            return;
        }
        if code >> 5 == 0 {
            if from == Target::Download {
                // Only the LwM2M server operates on the client.
                if kind == MessageType::Confirmable {
                    self.transmits.push_back((from, to_bytes(&empty(MessageType::Reset, message_id))));
                }
                return;
            }
            return self.server_request(now, kind, message_id, &packet);
        }
        // A response: piggybacked (by message id and token) or separate (by token).
        let found = self.outstanding.iter().position(|o| {
            o.token == packet.get_token() && (kind != MessageType::Acknowledgement || o.message_id == message_id)
        });
        if kind == MessageType::Confirmable {
            self.transmits.push_back((from, to_bytes(&empty(MessageType::Acknowledgement, message_id))));
        }
        let Some(i) = found else { return };
        let o = self.outstanding.swap_remove(i);
        let code = ResponseCode(code);
        if o.what == Uplink::Register && code == ResponseCode::CREATED {
            self.location = Some(strings(&packet, CoapOption::LocationPath).join("/"));
        }
        if o.what == Uplink::Fetch {
            self.events.push_back(ClientEvent::Block {
                code,
                block: uint(&packet, CoapOption::Block2).and_then(parse_block),
                etag: packet.get_first_option(CoapOption::ETag).cloned(),
                size2: uint(&packet, CoapOption::Size2),
                payload: packet.payload,
            });
        } else {
            self.events.push_back(ClientEvent::Answered(o.what, code));
        }
    }

    fn server_request(&mut self, now: Instant, kind: MessageType, message_id: u16, packet: &Packet) {
        if !self.deduplicate {
            return self.surface(kind, message_id, packet);
        }
        if let Some((_, _, answer)) =
            self.answered.iter().find(|(id, at, _)| *id == message_id && *at + self.config.exchange_lifetime > now)
        {
            // A retransmission: the same answer again, not processed twice.
            let answer = answer.clone();
            self.transmits.push_back((Target::Server, answer));
            return;
        }
        if self.in_progress.contains(&message_id) {
            // A copy of a request being answered: not processed twice.
            return;
        }
        if self.in_progress.len() >= REMEMBERED {
            self.in_progress.remove(0);
        }
        self.in_progress.push(message_id);
        self.surface(kind, message_id, packet);
    }

    fn surface(&mut self, kind: MessageType, message_id: u16, packet: &Packet) {
        let handle = RequestHandle {
            message_id,
            token: packet.get_token().to_vec(),
            confirmable: kind == MessageType::Confirmable,
            accept: uint(packet, CoapOption::Accept).and_then(|n| ContentFormat::from_number(u16::try_from(n).ok()?)),
            block1: uint(packet, CoapOption::Block1).and_then(parse_block),
            query: strings(packet, CoapOption::UriQuery),
        };
        self.events.push_back(ClientEvent::Request(handle, operation(packet)));
    }

    /// Fires retransmissions due at `now`; an uplink that used them all up,
    /// or whose separate response did not come within EXCHANGE_LIFETIME of
    /// its empty ACK, is [`ClientEvent::Failed`].
    pub fn handle_timeout(&mut self, now: Instant) {
        let max = self.config.max_retransmit;
        let mut i = 0;
        while i < self.outstanding.len() {
            let o = &mut self.outstanding[i];
            if o.deadline > now {
                i += 1;
                continue;
            }
            if o.sends > max || o.acked {
                let o = self.outstanding.swap_remove(i);
                self.events.push_back(ClientEvent::Failed(o.what));
                continue;
            }
            o.sends += 1;
            o.timeout *= 2;
            o.deadline = now + o.timeout;
            self.transmits.push_back((o.target, o.datagram.clone()));
            i += 1;
        }
    }

    /// When to call [`handle_timeout`](Self::handle_timeout).
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.outstanding.iter().map(|o| o.deadline).min()
    }

    /// The next datagram to send.
    pub fn poll_transmit(&mut self) -> Option<(Target, Vec<u8>)> {
        self.transmits.pop_front()
    }

    /// The next event.
    pub fn poll_event(&mut self) -> Option<ClientEvent> {
        self.events.pop_front()
    }
}

/// The LwM2M operation a server's CoAP request carries, or the code refusing it.
fn operation(packet: &Packet) -> Result<Operation, ResponseCode> {
    for (number, _) in packet.options() {
        // Understood: Observe, Uri-Path, Content-Format, Uri-Query, Accept, Block1, Size1, Block2.
        if number % 2 == 1 && ![3, 7, 11, 15, 17, 23, 27, 60].contains(number) {
            return Err(ResponseCode::new(4, 2));
        }
    }
    let segments: Option<Vec<u16>> = packet
        .get_option(CoapOption::UriPath)
        // 65535 is reserved (LwM2M: MAX_ID), never an object, instance or resource.
        .map(|list| {
            list.iter().map(|s| std::str::from_utf8(s).ok()?.parse::<u16>().ok().filter(|id| *id != u16::MAX)).collect()
        })
        .unwrap_or(Some(Vec::new()));
    let path = segments.and_then(|s| Path::from_segments(&s)).ok_or(ResponseCode::NOT_FOUND)?;
    let format =
        uint(packet, CoapOption::ContentFormat).and_then(|n| ContentFormat::from_number(u16::try_from(n).ok()?));
    let accept = match uint(packet, CoapOption::Accept) {
        None => None,
        Some(n) => {
            Some(u16::try_from(n).ok().and_then(ContentFormat::from_number).ok_or(ResponseCode::NOT_ACCEPTABLE)?)
        }
    };
    let payload = bytes::Bytes::copy_from_slice(&packet.payload);
    match packet.header.code {
        MessageClass::Request(RequestType::Get) => Ok(match uint(packet, CoapOption::Observe) {
            Some(0) => Operation::Observe { path, accept },
            Some(1) => Operation::CancelObservation { path },
            _ => Operation::Read { path, accept },
        }),
        MessageClass::Request(RequestType::Put | RequestType::Post) => {
            let query = strings(packet, CoapOption::UriQuery);
            if let Some(value) = uint(packet, CoapOption::Block1) {
                let block = parse_block(value).ok_or(ResponseCode::BAD_REQUEST)?;
                let format = format.unwrap_or(ContentFormat::Opaque);
                let total_size = uint(packet, CoapOption::Size1);
                return Ok(Operation::WriteBlock { path, format, block, total_size, payload });
            }
            if !query.is_empty() && payload.is_empty() {
                let number = |name: &str| {
                    query.iter().find_map(|q| q.strip_prefix(name)?.strip_prefix('=')?.parse::<u32>().ok())
                };
                let attributes = Attributes { pmin: number("pmin"), pmax: number("pmax") };
                return Ok(Operation::WriteAttributes { path, attributes });
            }
            match (packet.header.code, format) {
                (MessageClass::Request(RequestType::Post), _) if payload.is_empty() => Ok(Operation::Execute { path }),
                (_, Some(format)) => Ok(Operation::Write { path, format, payload }),
                (_, None) => Err(ResponseCode::UNSUPPORTED_CONTENT_FORMAT),
            }
        }
        _ => Err(ResponseCode::METHOD_NOT_ALLOWED),
    }
}

/// A repeatable string option's values (UTF-8, lossily).
fn strings(packet: &Packet, option: CoapOption) -> Vec<String> {
    packet
        .get_option(option)
        .map(|list| list.iter().map(|s| String::from_utf8_lossy(s).into_owned()).collect())
        .unwrap_or_default()
}

#[cfg(test)]
#[path = "client_tests.rs"]
mod tests;
