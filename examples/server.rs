//! A real LwM2M server over CoAP/UDP that upgrades the devices that register,
//! built on the crate's upgrade task.
//!
//! ```text
//! cargo run --release --example server -- --listen 127.0.0.1:5683 --image FILE \
//!     [--target-version V] [--strategy read|observe-resources|observe-instance|send|observe-only] \
//!     [--delivery pull|push] [--protocol coap|http] [--base-uri URI] [--timeout S] [--count N] [--json]
//! ```
//!
//! It runs the registration interface (Register answers 2.01 with a location,
//! Registration Update, De-register; 4.12 for an LwM2M version it cannot speak),
//! starts one upgrade task for each of the first N devices that register, routes
//! responses, notifications and Sends to it, retransmits confirmable requests
//! with RFC 7252 timing, serves the image over CoAP Block2 (and plain HTTP/1.1 on
//! a second port with `--protocol http`), and pushes it over Block1 with
//! `--delivery push`. It prints one line per device (a JSON object with
//! `--json`) and exits 0 when every upgrade succeeded.
//!
//! The Package URI is `--base-uri` followed by the image's file name: by
//! default the server's own image resource, `coap://<listen>/fw/` (or
//! `http://<host>:<port>/fw/` with `--protocol http`), otherwise any prefix
//! that serves the same image under the same name (a relay, a proxy, a CDN).
//! Without `--protocol`, the URI's scheme chooses the protocol.
//!
//! Responses match requests as RFC 7252 §5.3.2 says: a piggybacked ACK by the
//! address the request went to, its message id and its token; an empty ACK by
//! address and message id; a separate response by address and token.
//! Notifications count only from the device's registered address. Tokens are
//! 64 random bits and message ids start at a random value. Whatever matches
//! nothing is dropped and counted (`unmatched_responses` in the JSON lines,
//! and on stderr at exit).

use std::collections::HashMap;
use std::net::{SocketAddr, UdpSocket};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use coap_lite::{CoapOption, MessageClass, MessageType, Packet, RequestType};
use lwm2m_fota::model::{ContentFormat, Instant, Operation, Protocol, Registration, RequestId, ResponseCode};
use lwm2m_fota::server::{
    Delivery, Location, MAX_BLOCK_SIZE, MemoryImage, ObserveSequence, Outcome, PushStep, RegistrationError,
    RegistrationLimits, Registrations, RequestKind, Strategy, TaskEvent, TaskInput, TaskOutput, UpgradeConfig,
    UpgradeTask, WireBlock, serve_block,
};

#[path = "support/coap.rs"]
mod coap;

const USAGE: &str = "usage: server --listen HOST:PORT --image FILE [--target-version V] [--strategy read|observe-resources|observe-instance|send|observe-only] [--delivery pull|push] [--protocol coap|http] [--base-uri URI] [--timeout S] [--count N] [--json]";

struct Args {
    listen: SocketAddr,
    image: Vec<u8>,
    image_name: String,
    target_version: Option<String>,
    strategy: Strategy,
    delivery: Delivery,
    protocol: Protocol,
    base_uri: Option<String>,
    timeout: Duration,
    count: usize,
    json: bool,
}

fn parse_args() -> Result<Args, String> {
    let mut it = std::env::args().skip(1);
    let (mut listen, mut image, mut image_name, mut target_version) = (None, None, String::from("image.bin"), None);
    let (mut strategy, mut delivery, mut protocol) = (Strategy::Reads, Delivery::Pull, None);
    let mut base_uri: Option<String> = None;
    let (mut timeout, mut count, mut json) = (Duration::from_secs(20 * 60), 1usize, false);
    while let Some(flag) = it.next() {
        if flag == "--json" {
            json = true;
            continue;
        }
        let value = it.next().ok_or_else(|| format!("{flag} needs a value; {USAGE}"))?;
        match flag.as_str() {
            "--listen" => listen = Some(value.parse::<SocketAddr>().map_err(|e| format!("--listen {value:?}: {e}"))?),
            "--image" => {
                image = Some(std::fs::read(&value).map_err(|e| format!("--image {value:?}: {e}"))?);
                image_name = std::path::Path::new(&value)
                    .file_name()
                    .and_then(|n| n.to_str())
                    .filter(|n| n.bytes().all(|b| b.is_ascii_alphanumeric() || b"-._".contains(&b)))
                    .unwrap_or("image.bin")
                    .to_string();
            }
            "--target-version" => target_version = Some(value),
            "--strategy" => strategy = Strategy::from_name(&value).ok_or(format!("--strategy {value:?}; {USAGE}"))?,
            "--delivery" => {
                delivery = match value.as_str() {
                    "pull" => Delivery::Pull,
                    "push" => Delivery::Push,
                    _ => return Err(format!("--delivery {value:?}: pull or push")),
                }
            }
            "--protocol" => {
                protocol = Some(match value.as_str() {
                    "coap" => Protocol::Coap,
                    "http" => Protocol::Http,
                    _ => return Err(format!("--protocol {value:?}: coap or http")),
                })
            }
            "--base-uri" => {
                if value.split_once("://").and_then(|(s, _)| Protocol::from_scheme(s)).is_none() {
                    return Err(format!("--base-uri {value:?}: not a coap://, coaps://, http:// or https:// URI"));
                }
                base_uri = Some(value)
            }
            "--timeout" => {
                timeout = Duration::from_secs(value.parse().map_err(|_| format!("--timeout {value:?}: whole seconds"))?)
            }
            "--count" => count = value.parse().map_err(|_| format!("--count {value:?}: a number"))?,
            other => return Err(format!("unknown option {other}; {USAGE}")),
        }
    }
    // The Package URI's scheme and the protocol the task checks /5/0/8 for agree.
    let scheme = base_uri.as_deref().and_then(|u| u.split_once("://")).and_then(|(s, _)| Protocol::from_scheme(s));
    let protocol = match (protocol, scheme) {
        (None, Some(s)) => s,
        (None, None) => Protocol::Coap,
        (Some(p), Some(s)) if p != s => {
            return Err(format!("--base-uri is {}:// but --protocol is {}", s.scheme(), p.scheme()));
        }
        (Some(p), _) => p,
    };
    Ok(Args {
        listen: listen.ok_or(format!("--listen is required; {USAGE}"))?,
        image: image.ok_or(format!("--image is required; {USAGE}"))?,
        image_name,
        target_version,
        strategy,
        delivery,
        protocol,
        base_uri,
        timeout,
        count: count.max(1),
        json,
    })
}

/// A confirmable request to a device, retransmitted until answered.
struct Pending {
    device: usize,
    /// Where the request went: only this address can answer it.
    addr: SocketAddr,
    request: RequestId,
    token: Vec<u8>,
    message_id: u16,
    datagram: Vec<u8>,
    retransmission: coap::Retransmission,
    /// Push: the task's block on the wire (`server::WireBlock` splits it when
    /// the device wants smaller ones).
    push: Option<WireBlock>,
    observe: bool,
}

struct Device {
    endpoint: String,
    addr: SocketAddr,
    /// Where its registration lives (`/rd/<location>`), while it has one.
    location: Option<Location>,
    registration: Registration,
    task: Option<UpgradeTask>,
    started: Instant,
    downlinks: u64,
    uplinks: u64,
    /// Observations by token: the Observe request, and the last Observe
    /// sequence number with when it came (RFC 7641 §3.4 reordering).
    observations: HashMap<Vec<u8>, (RequestId, u64, Instant)>,
    /// The Block1 size the device asked for (4.13 or a smaller SZX in 2.31).
    push_size: u32,
    done: bool,
}

struct Server {
    args: Args,
    /// The registration interface: strict, bounded, with expiring lifetimes.
    registrations: Registrations,
    socket: UdpSocket,
    clock: std::time::Instant,
    config: Arc<UpgradeConfig>,
    devices: Vec<Device>,
    pending: Vec<Pending>,
    ids: coap::Ids,
    finished: usize,
    all_succeeded: bool,
    /// The image as `/fw/<name>` serves it.
    image: MemoryImage,
    recent: Vec<(SocketAddr, u16, Vec<u8>)>,
    /// Exchanges answered lately (address, token): a retransmitted
    /// confirmable separate response gets its ACK again.
    answered: std::collections::VecDeque<(SocketAddr, Vec<u8>)>,
    /// Responses that matched no request and notifications that matched no
    /// observation of the device they came from: dropped.
    unmatched: u64,
    /// Of those, the ones from an address no device registered from.
    unmatched_foreign: u64,
}

impl Server {
    fn now(&self) -> Instant {
        Instant::from_millis(self.clock.elapsed().as_millis() as u64)
    }

    fn send_to(&self, addr: SocketAddr, packet: &Packet) {
        let _ = self.socket.send_to(&coap::bytes(packet), addr);
    }

    fn reply(&mut self, addr: SocketAddr, request: &Packet, response: &Packet) {
        let bytes = coap::bytes(response);
        let _ = self.socket.send_to(&bytes, addr);
        if request.header.get_type() == MessageType::Confirmable {
            self.recent.push((addr, request.header.message_id, bytes));
            if self.recent.len() > 256 {
                self.recent.remove(0);
            }
        }
    }

    fn handle_datagram(&mut self, datagram: &[u8], from: SocketAddr) {
        let Some(packet) = coap::parse(datagram) else { return };
        match packet.header.code {
            MessageClass::Request(method) => {
                if packet.header.get_type() == MessageType::Confirmable {
                    if let Some((_, _, bytes)) =
                        self.recent.iter().find(|(a, id, _)| *a == from && *id == packet.header.message_id)
                    {
                        let bytes = bytes.clone();
                        let _ = self.socket.send_to(&bytes, from);
                        return;
                    }
                }
                self.handle_request(method, &packet, from);
            }
            MessageClass::Response(_) | MessageClass::Empty => self.handle_response(&packet, from),
            MessageClass::Reserved(_) => {}
        }
    }

    fn device_index(&self, from: SocketAddr) -> Option<usize> {
        self.devices.iter().position(|d| d.addr == from)
    }

    fn handle_request(&mut self, method: RequestType, packet: &Packet, from: SocketAddr) {
        let path = coap::uri_path(packet);
        match (method, path.as_slice()) {
            (RequestType::Post, [rd]) if rd == "rd" => self.register(packet, from),
            (RequestType::Get, [fw, name]) if fw == "fw" && *name == self.args.image_name => {
                self.serve_block(packet, from)
            }
            (RequestType::Post, [dp]) if dp == "dp" => {
                let response = coap::response_to(packet, ResponseCode::CHANGED);
                self.reply(from, packet, &response);
                if let Some(i) = self.device_index(from) {
                    self.devices[i].uplinks += 1;
                    if let Some(format) = coap::content_format(packet) {
                        self.input(i, TaskInput::Send { format, payload: &packet.payload });
                    }
                }
            }
            (RequestType::Post, [rd, id]) if rd == "rd" => {
                let now = self.now();
                let queries = coap::uri_query(packet);
                let updated = match (Location::parse(id), std::str::from_utf8(&packet.payload)) {
                    (None, _) => Err(RegistrationError::UnknownLocation),
                    (Some(_), Err(_)) => Err(RegistrationError::InvalidLinks { offset: 0 }),
                    (Some(location), Ok(links)) => self
                        .registrations
                        .update(now, location, queries.iter().map(String::as_str), links)
                        .map(|registration| (location, registration.clone())),
                };
                let (location, registration) = match updated {
                    Ok(updated) => updated,
                    Err(error) => {
                        let response = coap::response_to(packet, error.code());
                        return self.reply(from, packet, &response);
                    }
                };
                let Some(i) = self.devices.iter().position(|d| d.location == Some(location)) else {
                    let response = coap::response_to(packet, ResponseCode::NOT_FOUND);
                    return self.reply(from, packet, &response);
                };
                self.devices[i].registration = registration;
                if self.devices[i].addr != from {
                    // The device moved (a NAT rebinding): its requests follow it.
                    self.devices[i].addr = from;
                    for p in self.pending.iter_mut().filter(|p| p.device == i) {
                        p.addr = from;
                    }
                }
                self.devices[i].uplinks += 1;
                let response = coap::response_to(packet, ResponseCode::CHANGED);
                self.reply(from, packet, &response);
                self.input(i, TaskInput::RegistrationUpdated);
            }
            (RequestType::Delete, [rd, id]) if rd == "rd" => {
                let now = self.now();
                let removed = Location::parse(id)
                    .ok_or(RegistrationError::UnknownLocation)
                    .and_then(|location| self.registrations.deregister(now, location).map(|_| location));
                let location = match removed {
                    Ok(location) => location,
                    Err(error) => {
                        let response = coap::response_to(packet, error.code());
                        return self.reply(from, packet, &response);
                    }
                };
                let response = coap::response_to(packet, ResponseCode::DELETED);
                self.reply(from, packet, &response);
                if let Some(i) = self.devices.iter().position(|d| d.location == Some(location)) {
                    self.devices[i].location = None;
                    self.devices[i].uplinks += 1;
                    self.input(i, TaskInput::Deregistered);
                }
            }
            _ => {
                let response = coap::response_to(packet, ResponseCode::NOT_FOUND);
                self.reply(from, packet, &response);
            }
        }
    }

    fn register(&mut self, packet: &Packet, from: SocketAddr) {
        let now = self.now();
        let queries = coap::uri_query(packet);
        let registered = match std::str::from_utf8(&packet.payload) {
            Ok(links) => self.registrations.register(now, queries.iter().map(String::as_str), links),
            Err(_) => Err(RegistrationError::InvalidLinks { offset: 0 }),
        };
        let location = match registered {
            Ok(registered) => registered.location,
            Err(error) => {
                // 4.12 for a version we cannot speak: the client falls back (TS 1.1 §6.2.1).
                let response = coap::response_to(packet, error.code());
                return self.reply(from, packet, &response);
            }
        };
        let Some(registration) = self.registrations.at(location).cloned() else { return };
        let endpoint = registration.endpoint.clone();
        let index = match self.devices.iter().position(|d| d.endpoint == endpoint) {
            Some(i) => i,
            None => {
                let now = self.now();
                let task = (self.devices.len() < self.args.count).then(|| UpgradeTask::new(self.config.clone()));
                self.devices.push(Device {
                    endpoint: endpoint.clone(),
                    addr: from,
                    location: None,
                    registration: registration.clone(),
                    task,
                    started: now,
                    downlinks: 0,
                    uplinks: 0,
                    observations: HashMap::new(),
                    push_size: 1024,
                    done: false,
                });
                self.devices.len() - 1
            }
        };
        // A new registration: a new location, and the old observations are void.
        let device = &mut self.devices[index];
        device.addr = from;
        device.location = Some(location);
        device.registration = registration;
        device.uplinks += 1;
        device.observations.clear();
        let mut response = coap::response_to(packet, ResponseCode::CREATED);
        response.add_option(CoapOption::LocationPath, b"rd".to_vec());
        response.add_option(CoapOption::LocationPath, location.to_string().into_bytes());
        self.reply(from, packet, &response);
        self.pending.retain(|p| p.device != index);
        let registration = self.devices[index].registration.clone();
        let now = self.now();
        let device = &mut self.devices[index];
        if let Some(task) = device.task.as_mut() {
            let _ = task.handle(now, TaskInput::Registered(&registration));
            if task.step() == lwm2m_fota::server::Step::NotStarted {
                device.started = now;
                let _ = task.start(now);
            }
        }
        self.drain(index);
    }

    /// Serves the image over CoAP Block2 (RFC 7959) with ETag and Size2
    /// (`server::serve_block`: 4.00 for the reserved SZX 7 or a block past the end).
    fn serve_block(&mut self, packet: &Packet, from: SocketAddr) {
        let block2 = coap::uint(packet, CoapOption::Block2);
        let mut payload = Vec::new();
        let response = match serve_block(&self.image, block2, MAX_BLOCK_SIZE, &mut payload) {
            Ok(served) => {
                let mut response = coap::response_to(packet, ResponseCode::CONTENT);
                coap::set_content_format(&mut response, ContentFormat::Opaque);
                response.add_option(CoapOption::ETag, served.etag.to_vec());
                coap::set_block(&mut response, CoapOption::Block2, served.block);
                if let Some(size) = served.size2 {
                    coap::set_uint(&mut response, CoapOption::Size2, size);
                }
                response.payload = payload;
                response
            }
            Err(code) => coap::response_to(packet, code),
        };
        self.reply(from, packet, &response);
    }

    fn handle_response(&mut self, packet: &Packet, from: SocketAddr) {
        let kind = packet.header.get_type();
        if kind == MessageType::Reset {
            return;
        }
        let token = packet.get_token().to_vec();
        let separate = matches!(kind, MessageType::Confirmable | MessageType::NonConfirmable);
        // A notification of an observation, from the device that holds it?
        if separate
            && coap::observe(packet).is_some()
            && !self.pending.iter().any(|p| p.addr == from && p.token == token)
        {
            let known = self.device_index(from).and_then(|i| Some((i, *self.devices[i].observations.get(&token)?)));
            if let Some((i, (observation, last, at))) = known {
                if kind == MessageType::Confirmable {
                    self.send_to(from, &coap::empty(MessageType::Acknowledgement, packet.header.message_id));
                }
                self.devices[i].uplinks += 1;
                let now = self.now();
                let sequence = coap::observe(packet).unwrap_or(0);
                let last = ObserveSequence { value: last as u32, at };
                if !last.is_older_than(sequence as u32, now) {
                    // An older notification overtaken by a newer one: ignore it.
                    return;
                }
                self.devices[i].observations.insert(token, (observation, sequence, now));
                if let Some(format) = coap::content_format(packet) {
                    self.input(i, TaskInput::Notification { observation, format, payload: &packet.payload });
                }
                return;
            }
        }
        let Some(index) = self.pending.iter().position(|p| coap::answers(packet, from, p.addr, p.message_id, &p.token))
        else {
            if kind == MessageType::Confirmable {
                if self.answered.iter().any(|(a, t)| *a == from && *t == token) {
                    // Our ACK of this separate response was lost: acknowledge it again.
                    self.send_to(from, &coap::empty(MessageType::Acknowledgement, packet.header.message_id));
                    return;
                }
                // An unknown confirmable message (e.g. a stale notification): reject it.
                self.send_to(from, &coap::empty(MessageType::Reset, packet.header.message_id));
            }
            self.unmatched += 1;
            if self.device_index(from).is_none() {
                self.unmatched_foreign += 1;
            }
            return;
        };
        if packet.header.code == MessageClass::Empty {
            // Empty ACK: the response follows separately.
            self.pending[index].retransmission.acknowledge();
            return;
        }
        if kind == MessageType::Confirmable {
            self.send_to(from, &coap::empty(MessageType::Acknowledgement, packet.header.message_id));
            self.answered.push_back((from, token.clone()));
            if self.answered.len() > 64 {
                self.answered.pop_front();
            }
        }
        let pending = self.pending.remove(index);
        let device = pending.device;
        self.devices[device].uplinks += 1;
        let code = coap::code_of(packet);
        if !code.is_success() {
            let at = self.clock.elapsed().as_secs_f64();
            let path = coap::uri_path(&coap::parse(&pending.datagram).unwrap_or_default()).join("/");
            eprintln!("server: {at:7.1} s {}: /{path} answered {code}", self.devices[device].endpoint);
        }
        if let Some(push) = pending.push {
            if self.continue_push(device, pending.request, push, code, packet) {
                return;
            }
        }
        if pending.observe && code == ResponseCode::CONTENT {
            let sequence = coap::observe(packet).unwrap_or(0);
            let now = self.now();
            self.devices[device].observations.insert(pending.token.clone(), (pending.request, sequence, now));
        }
        if code == ResponseCode::SERVICE_UNAVAILABLE {
            // 5.03: the device is busy; Max-Age (seconds) says when to ask again.
            let max_age = coap::uint(packet, CoapOption::MaxAge).map(Duration::from_secs);
            return self.input(device, TaskInput::ServiceUnavailable { id: pending.request, max_age });
        }
        let format = coap::content_format(packet);
        self.input(device, TaskInput::Response { id: pending.request, code, format, payload: &packet.payload });
    }

    /// Block-wise push bookkeeping (`server::WireBlock` decides what a 2.31
    /// or 4.13 means): returns true when the task's block needs more wire
    /// blocks, false when the task hears the answer.
    fn continue_push(
        &mut self,
        device: usize,
        request: RequestId,
        push: WireBlock,
        code: ResponseCode,
        packet: &Packet,
    ) -> bool {
        let block1 = coap::block(packet, CoapOption::Block1);
        let size1 = coap::uint(packet, CoapOption::Size1);
        if let Some(size) = block1.map(|b| b.size).filter(|size| *size < self.devices[device].push_size) {
            // The device's size for the task's next blocks too.
            self.devices[device].push_size = size.max(16);
        }
        match push.answer(code, block1, size1) {
            PushStep::Answer(_) => false,
            PushStep::Send(next) => {
                self.devices[device].push_size = next.size();
                self.send_block(device, request, next);
                true
            }
        }
    }

    fn input(&mut self, device: usize, input: TaskInput<'_>) {
        let now = self.now();
        if let Some(task) = self.devices[device].task.as_mut() {
            let _ = task.handle(now, input);
        }
        self.drain(device);
    }

    fn drain(&mut self, device: usize) {
        loop {
            let Some(task) = self.devices[device].task.as_mut() else { return };
            let Some(output) = task.poll_output() else { break };
            match output {
                TaskOutput::Request(request) => match request.kind {
                    RequestKind::Operation(operation) => self.send_operation(device, request.id, operation),
                    RequestKind::PackageBlock { block, total_size } => {
                        let push = WireBlock::new(block, total_size, self.devices[device].push_size);
                        self.send_block(device, request.id, push)
                    }
                },
                TaskOutput::Event(event) => self.log_event(device, &event),
            }
        }
        // Reported once final: a failed task that watches its device for a
        // late success is reported when the watch ends or the success comes.
        let Some(task) = self.devices[device].task.as_ref() else { return };
        if let Some(outcome) = task.outcome().filter(|_| !task.watching()).cloned() {
            self.report(device, &outcome);
        }
    }

    /// What the task went through, on stderr (one line per step, state seen, retry).
    fn log_event(&self, device: usize, event: &TaskEvent) {
        let what = match event {
            TaskEvent::StepChanged(step) => format!("step: {step}"),
            TaskEvent::StateSeen { state, result } => format!("state {state:?}, update result: {result}"),
            TaskEvent::Retrying { failure, attempt } => format!("attempt {attempt} after: {failure}"),
            TaskEvent::ExecuteHeld => "execute held".into(),
            TaskEvent::LateSuccess(outcome) => format!("late success: {}", outcome.reason().unwrap_or_default()),
            _ => return,
        };
        let at = self.clock.elapsed().as_secs_f64();
        eprintln!("server: {at:7.1} s {}: {what}", self.devices[device].endpoint);
    }

    fn new_exchange(&mut self) -> (u16, Vec<u8>) {
        (self.ids.message_id(), self.ids.token())
    }

    fn send_operation(&mut self, device: usize, request: RequestId, operation: Operation) {
        let (message_id, token) = self.new_exchange();
        let (method, observe) = match &operation {
            Operation::Read { .. } => (RequestType::Get, None),
            Operation::Observe { .. } => (RequestType::Get, Some(0)),
            Operation::CancelObservation { .. } => (RequestType::Get, Some(1)),
            Operation::Write { .. } | Operation::WriteAttributes { .. } => (RequestType::Put, None),
            Operation::Execute { .. } | Operation::WriteBlock { .. } => (RequestType::Post, None),
            _ => (RequestType::Get, None),
        };
        let mut packet = coap::request(MessageType::Confirmable, method, message_id, &token);
        coap::set_path(&mut packet, operation.path());
        if let Some(value) = observe {
            coap::set_uint(&mut packet, CoapOption::Observe, value);
        }
        match &operation {
            Operation::Read { accept: Some(format), .. } | Operation::Observe { accept: Some(format), .. } => {
                coap::set_uint(&mut packet, CoapOption::Accept, u64::from(format.number()));
            }
            Operation::Write { format, payload, .. } => {
                coap::set_content_format(&mut packet, *format);
                packet.payload = payload.to_vec();
            }
            Operation::WriteAttributes { attributes, .. } => {
                if let Some(pmin) = attributes.pmin {
                    coap::add_query(&mut packet, &format!("pmin={pmin}"));
                }
                if let Some(pmax) = attributes.pmax {
                    coap::add_query(&mut packet, &format!("pmax={pmax}"));
                }
            }
            _ => {}
        }
        let observe = matches!(operation, Operation::Observe { .. });
        self.transmit(device, request, message_id, token, coap::bytes(&packet), None, observe);
    }

    fn send_block(&mut self, device: usize, request: RequestId, push: WireBlock) {
        let (message_id, token) = self.new_exchange();
        let mut packet = coap::request(MessageType::Confirmable, RequestType::Put, message_id, &token);
        coap::set_path(&mut packet, &lwm2m_fota::model::Path::resource(5, 0, 0));
        coap::set_content_format(&mut packet, ContentFormat::Opaque);
        coap::set_block(&mut packet, CoapOption::Block1, push.block());
        coap::set_uint(&mut packet, CoapOption::Size1, push.total());
        let (start, end) = push.range();
        packet.payload = self.args.image[start as usize..end as usize].to_vec();
        self.transmit(device, request, message_id, token, coap::bytes(&packet), Some(push), false);
    }

    #[allow(clippy::too_many_arguments)]
    fn transmit(
        &mut self,
        device: usize,
        request: RequestId,
        message_id: u16,
        token: Vec<u8>,
        datagram: Vec<u8>,
        push: Option<WireBlock>,
        observe: bool,
    ) {
        let now = self.now();
        let addr = self.devices[device].addr;
        let _ = self.socket.send_to(&datagram, addr);
        self.devices[device].downlinks += 1;
        let timeout = self.ids.first_timeout();
        self.pending.push(Pending {
            device,
            addr,
            request,
            token,
            message_id,
            datagram,
            retransmission: coap::Retransmission::new(now, timeout),
            push,
            observe,
        });
    }

    fn report(&mut self, device: usize, outcome: &Outcome) {
        let d = &mut self.devices[device];
        if d.done {
            return;
        }
        d.done = true;
        self.finished += 1;
        let duration_ms = self.clock.elapsed().as_millis() as u64
            - d.started.as_millis().min(self.clock.elapsed().as_millis() as u64);
        let (result, reason) = match outcome {
            Outcome::Succeeded { version } => {
                ("succeeded", version.clone().map(|v| format!("version {v}")).unwrap_or_default())
            }
            Outcome::LateSuccess { version, failure } => {
                ("succeeded", format!("late: {failure}, then version {}", version.as_deref().unwrap_or("(not read)")))
            }
            Outcome::Failed(failure) => {
                self.all_succeeded = false;
                ("failed", failure.to_string())
            }
        };
        if self.args.json {
            let reason_code = outcome.reason().unwrap_or_default();
            println!(
                "{}",
                serde_json::json!({
                    "endpoint": d.endpoint,
                    "outcome": result,
                    "reason": if reason_code.is_empty() { serde_json::Value::Null } else { reason_code.into() },
                    "detail": reason,
                    "duration_ms": duration_ms,
                    "downlinks": d.downlinks,
                    "uplinks": d.uplinks,
                    "strategy": self.args.strategy.name(),
                    "delivery": self.args.delivery.name(),
                    "unmatched_responses": self.unmatched,
                })
            );
        } else {
            println!(
                "{} {} {} ({} ms, {} downlinks, {} uplinks)",
                d.endpoint, result, reason, duration_ms, d.downlinks, d.uplinks
            );
        }
    }

    fn tick(&mut self) {
        let now = self.now();
        // Lifetimes that passed without an Update: the registration is gone.
        let _ = self.registrations.handle_timeout(now);
        while let Some(expired) = self.registrations.poll_expired() {
            if let Some(i) = self.devices.iter().position(|d| d.location == Some(expired.location)) {
                self.devices[i].location = None;
                self.input(i, TaskInput::Deregistered);
            }
        }
        let mut failed = Vec::new();
        let mut resend = Vec::new();
        for (i, p) in self.pending.iter_mut().enumerate() {
            match p.retransmission.poll(now) {
                coap::RetransmitAction::Wait => {}
                coap::RetransmitAction::Resend => resend.push((p.device, p.addr, p.datagram.clone())),
                coap::RetransmitAction::GiveUp => failed.push(i),
            }
        }
        for (device, addr, datagram) in resend {
            let _ = self.socket.send_to(&datagram, addr);
            self.devices[device].downlinks += 1;
        }
        for i in failed.into_iter().rev() {
            let pending = self.pending.remove(i);
            self.input(pending.device, TaskInput::TransportFailure { id: pending.request });
        }
        for device in 0..self.devices.len() {
            let due = self.devices[device].task.as_ref().and_then(UpgradeTask::poll_timeout).is_some_and(|t| t <= now);
            if due {
                if let Some(task) = self.devices[device].task.as_mut() {
                    let _ = task.handle_timeout(now);
                }
                self.drain(device);
            }
        }
    }
}

fn main() -> ExitCode {
    let args = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::FAILURE;
        }
    };
    let socket = match UdpSocket::bind(args.listen) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("error: binding {}: {e}", args.listen);
            return ExitCode::FAILURE;
        }
    };
    socket.set_read_timeout(Some(Duration::from_millis(20))).ok();
    let local = socket.local_addr().map(|a| a.to_string()).unwrap_or_default();
    // The Package URI points at our own CoAP Block2 resource, or at the HTTP
    // server, unless --base-uri names another place.
    let own_uri = match args.protocol {
        Protocol::Http => {
            let http = match tiny_http::Server::http(format!("{}:0", args.listen.ip())) {
                Ok(server) => server,
                Err(e) => {
                    eprintln!("error: starting the HTTP server: {e}");
                    return ExitCode::FAILURE;
                }
            };
            let port = http.server_addr().to_ip().map(|a| a.port()).unwrap_or(0);
            let image = args.image.clone();
            let name = format!("/fw/{}", args.image_name);
            std::thread::spawn(move || serve_http(http, &name, &image));
            eprintln!("server: serving the image over HTTP on {}:{port}", args.listen.ip());
            format!("http://{}:{port}/fw/", args.listen.ip())
        }
        _ => format!("coap://{local}/fw/"),
    };
    let base_uri = args.base_uri.clone().unwrap_or(own_uri);
    let mut config = UpgradeConfig::new(&base_uri, &args.image_name, args.image.len() as u64);
    config.strategy = args.strategy;
    config.delivery = args.delivery;
    config.protocol = args.protocol;
    config.timeout = args.timeout;
    config.target_version = args.target_version.clone();
    config.step_timeout = Duration::from_secs(20);
    let mut server = Server {
        // A lifetime ends MAX_TRANSMIT_WAIT late: the Update that renews it
        // may be in CoAP retransmission until then.
        registrations: Registrations::new(RegistrationLimits {
            expiry_grace: lwm2m_fota::server::MAX_TRANSMIT_WAIT,
            ..RegistrationLimits::default()
        }),
        socket,
        clock: std::time::Instant::now(),
        config: Arc::new(config),
        devices: Vec::new(),
        pending: Vec::new(),
        ids: coap::Ids::new(),
        finished: 0,
        all_succeeded: true,
        image: MemoryImage::new(args.image.clone()),
        recent: Vec::new(),
        answered: std::collections::VecDeque::new(),
        unmatched: 0,
        unmatched_foreign: 0,
        args,
    };
    eprintln!("server: listening on {local}, package URI {}", server.config.package_uri());
    let mut buf = vec![0u8; 65_536];
    while server.finished < server.args.count {
        if let Ok((n, from)) = server.socket.recv_from(&mut buf) {
            let datagram = buf[..n].to_vec();
            server.handle_datagram(&datagram, from);
        }
        server.tick();
    }
    eprintln!(
        "server: dropped {} unmatched responses ({} from addresses no device registered from)",
        server.unmatched, server.unmatched_foreign
    );
    if server.all_succeeded { ExitCode::SUCCESS } else { ExitCode::FAILURE }
}

/// Plain HTTP/1.1 with tiny_http, honouring a `Range: bytes=N-` header.
fn serve_http(http: tiny_http::Server, name: &str, image: &[u8]) {
    for request in http.incoming_requests() {
        if request.url() != name {
            let _ = request.respond(tiny_http::Response::from_data(Vec::new()).with_status_code(404));
            continue;
        }
        let start = request
            .headers()
            .iter()
            .find(|h| h.field.equiv("Range"))
            .and_then(|h| {
                h.value
                    .as_str()
                    .strip_prefix("bytes=")
                    .and_then(|r| r.strip_suffix('-'))
                    .and_then(|n| n.parse::<usize>().ok())
            })
            .filter(|&n| n < image.len());
        let response = match start {
            Some(start) => tiny_http::Response::from_data(image[start..].to_vec()).with_status_code(206),
            None => tiny_http::Response::from_data(image.to_vec()).with_status_code(200),
        };
        let _ = request.respond(response);
    }
}
