//! The server endpoint's datagram input as a fuzz check: bytes become a
//! sequence of datagrams from up to eight peers — raw bytes, Registers and
//! Updates, answers to the server's last request (any code, options and
//! payload), notifications of its observations, the server's own datagrams
//! mutated and sent back — and time passing. The binding and endpoint must
//! never panic, never exceed their bounds (registrations, exchanges per
//! device, remembered message ids, requests awaiting acknowledgement), never
//! name a deadline in the past, and once the peers fall silent, end every
//! upgrade by its deadlines with nothing left in flight.
//!
//! `cargo test --test fuzz_endpoint` runs the check on generated inputs and on
//! the seeds in `tests/data/fuzz/endpoint/` (datagrams recorded from a swarm
//! device's client binding, and Anjay's payloads from `real-client.json`
//! wrapped as notifications and Sends); the `endpoint` fuzz target (fuzz/,
//! see FUZZING.md) runs the same function.
#![allow(dead_code)]

use std::sync::Arc;
use std::time::Duration;

use coap_lite::{CoapOption, MessageClass, MessageType, Packet, RequestType};
use lwm2m_fota::coap::{CoapConfig, ServerBinding};
use lwm2m_fota::model::Instant;
use lwm2m_fota::server::{
    Delivery, EndpointConfig, EndpointEvent, MemoryImage, RegistrationLimits, Strategy, UpgradeConfig,
};

const PEERS: u8 = 8;
const MAX_REGISTRATIONS: usize = 6;
const MAX_EXCHANGES: usize = 3;
const MAX_REMEMBERED: usize = 64;

fn option_uint(value: u64) -> Vec<u8> {
    let bytes = value.to_be_bytes();
    let skip = bytes.iter().take_while(|&&b| b == 0).count();
    bytes[skip..].to_vec()
}

fn packet(kind: MessageType, code: MessageClass, message_id: u16, token: &[u8]) -> Packet {
    let mut packet = Packet::new();
    packet.header.set_type(kind);
    packet.header.code = code;
    packet.header.message_id = message_id;
    packet.set_token(token.to_vec());
    packet
}

/// A Register of endpoint `name` with lifetime `lt`.
pub fn register(message_id: u16, name: &str, lt: u8, links: &str) -> Vec<u8> {
    let mut p = packet(MessageType::Confirmable, MessageClass::Request(RequestType::Post), message_id, &[1, 2]);
    p.add_option(CoapOption::UriPath, b"rd".to_vec());
    p.add_option(CoapOption::UriQuery, format!("ep={name}").into_bytes());
    p.add_option(CoapOption::UriQuery, format!("lt={}", u32::from(lt) + 20).into_bytes());
    p.add_option(CoapOption::UriQuery, b"lwm2m=1.1".to_vec());
    p.payload = links.as_bytes().to_vec();
    p.to_bytes().unwrap_or_default()
}

struct Driver {
    binding: ServerBinding<u8>,
    now: Instant,
    /// The server's last datagram to each peer.
    last_to: Vec<Option<Vec<u8>>>,
    /// Each peer's last Observe token and its Location.
    observe_token: Vec<Option<Vec<u8>>>,
    location: Vec<Option<String>>,
    message_id: u16,
}

impl Driver {
    fn new(choice: u8) -> Driver {
        let endpoint = EndpointConfig {
            registrations: RegistrationLimits { max_registrations: MAX_REGISTRATIONS, ..RegistrationLimits::default() },
            max_exchanges: MAX_EXCHANGES,
            max_observations: 4,
            ..EndpointConfig::default()
        };
        let coap = CoapConfig { max_remembered: MAX_REMEMBERED, ..CoapConfig::default() };
        let mut binding = ServerBinding::new(endpoint, coap);
        let image: Vec<u8> = (0..3000u32).map(|i| i as u8).collect();
        binding.endpoint_mut().add_image("fw.bin", Arc::new(MemoryImage::new(image)));
        let mut config = UpgradeConfig::new("coap://server/fw/", "fw.bin", 3000);
        config.strategy = Strategy::ALL[usize::from(choice) % Strategy::ALL.len()];
        config.delivery = if choice & 8 == 0 { Delivery::Pull } else { Delivery::Push };
        config.protocol = lwm2m_fota::model::Protocol::Coap;
        config.timeout = Duration::from_secs(600);
        config.target_version = Some("2.0.0".into());
        let config = Arc::new(config);
        for name in ["d0", "d1", "d2"] {
            binding.upgrade(Instant::ZERO, name, config.clone()).unwrap();
        }
        let peers = usize::from(PEERS);
        Driver {
            binding,
            now: Instant::ZERO,
            last_to: vec![None; peers],
            observe_token: vec![None; peers],
            location: vec![None; peers],
            message_id: 0,
        }
    }

    fn deliver(&mut self, peer: u8, datagram: &[u8]) {
        self.binding.handle_datagram(self.now, peer, datagram).unwrap();
        self.collect();
    }

    fn collect(&mut self) {
        while let Some((to, datagram)) = self.binding.poll_transmit() {
            if let Ok(p) = Packet::from_bytes(&datagram) {
                let is_observe = matches!(p.header.code, MessageClass::Request(RequestType::Get))
                    && p.get_first_option(CoapOption::Observe).is_some_and(|v| v.is_empty());
                if is_observe {
                    self.observe_token[usize::from(to)] = Some(p.get_token().to_vec());
                }
                if let Some(list) = p.get_option(CoapOption::LocationPath) {
                    let segments: Vec<String> = list.iter().map(|s| String::from_utf8_lossy(s).into_owned()).collect();
                    self.location[usize::from(to)] = Some(segments.join("/"));
                }
            }
            self.last_to[usize::from(to)] = Some(datagram);
        }
        while let Some((device, event)) = self.binding.poll_event() {
            if let EndpointEvent::Finished(_) = event {
                assert!(self.binding.endpoint().device(device).is_some());
            }
        }
    }

    fn advance(&mut self, by: Duration) {
        let until = self.now + by;
        while let Some(at) = self.binding.poll_timeout().filter(|at| *at <= until) {
            assert!(at >= self.now, "a deadline in the past: {at} < {}", self.now);
            self.now = at;
            self.binding.handle_timeout(at).unwrap();
            self.collect();
        }
        self.now = until;
        self.binding.handle_timeout(until).unwrap();
        self.collect();
    }

    fn check_bounds(&self) {
        let endpoint = self.binding.endpoint();
        assert!(endpoint.registrations().len() <= MAX_REGISTRATIONS);
        assert!(self.binding.remembered() <= MAX_REMEMBERED);
        // Every exchange awaiting an ACK belongs to a device, each with at most MAX_EXCHANGES.
        assert!(self.binding.pending() <= (MAX_REGISTRATIONS + 3) * MAX_EXCHANGES, "{}", self.binding.pending());
    }

    fn step(&mut self, op: u8, peer: u8, data: &[u8]) {
        let peer = peer % PEERS;
        self.message_id = self.message_id.wrapping_add(1);
        let message_id = self.message_id;
        match op % 7 {
            0 => self.deliver(peer, data),
            1 => {
                let name = format!("d{}", data.first().copied().unwrap_or(0) % 5);
                let links = match data.get(1).copied().unwrap_or(0) % 4 {
                    0 => "</1/0>,</3/0>,</5>;ver=1.1,</5/0>".to_string(),
                    1 => String::from_utf8_lossy(data.get(2..).unwrap_or_default()).into_owned(),
                    2 => "</>;rt=\"oma.lwm2m\";ct=11543,</1/0>,</3/0>,</5/0>".to_string(),
                    _ => "</5/0".to_string(),
                };
                let datagram = register(message_id, &name, data.get(2).copied().unwrap_or(0), &links);
                self.deliver(peer, &datagram);
            }
            2 => {
                // An Update (or De-register) of this peer's location.
                let Some(location) = self.location[usize::from(peer)].clone() else { return };
                let delete = data.first().is_some_and(|b| b % 5 == 0);
                let method = if delete { RequestType::Delete } else { RequestType::Post };
                let mut p = packet(MessageType::Confirmable, MessageClass::Request(method), message_id, &[9]);
                for segment in location.split('/') {
                    p.add_option(CoapOption::UriPath, segment.as_bytes().to_vec());
                }
                if data.get(1).is_some_and(|b| b % 3 == 0) {
                    p.add_option(CoapOption::UriQuery, b"lt=45".to_vec());
                }
                self.deliver(peer, &p.to_bytes().unwrap_or_default());
            }
            3 => {
                // An answer to the server's last request to this peer.
                let Some(last) = self.last_to[usize::from(peer)].clone() else { return };
                let Ok(request) = Packet::from_bytes(&last) else { return };
                if !matches!(request.header.code, MessageClass::Request(_)) {
                    return;
                }
                let code = *data.first().unwrap_or(&0x45);
                let kind = match data.get(1).copied().unwrap_or(0) % 4 {
                    0 | 1 => MessageType::Acknowledgement,
                    2 => MessageType::Confirmable,
                    _ => MessageType::NonConfirmable,
                };
                let id = if kind == MessageType::Acknowledgement { request.header.message_id } else { message_id };
                let mut p = packet(kind, MessageClass::from(code), id, request.get_token());
                let extra = data.get(2).copied().unwrap_or(0);
                if extra & 1 != 0 {
                    p.add_option(CoapOption::Observe, option_uint(u64::from(extra >> 1)));
                }
                if extra & 2 != 0 {
                    p.add_option(
                        CoapOption::ContentFormat,
                        option_uint([0, 42, 112, 11542, 110][usize::from(extra % 5)]),
                    );
                }
                if extra & 4 != 0 {
                    p.add_option(CoapOption::Block1, option_uint(u64::from(data.get(3).copied().unwrap_or(6))));
                }
                if extra & 8 != 0 {
                    p.add_option(CoapOption::Size1, option_uint(u64::from(extra) * 40));
                }
                if extra & 16 != 0 {
                    p.add_option(CoapOption::MaxAge, option_uint(u64::from(extra % 7)));
                }
                p.payload = data.get(4..).unwrap_or_default().to_vec();
                self.deliver(peer, &p.to_bytes().unwrap_or_default());
            }
            4 => {
                // A notification of this peer's last observation.
                let Some(token) = self.observe_token[usize::from(peer)].clone() else { return };
                let kind = if data.first().is_some_and(|b| b & 1 == 0) {
                    MessageType::NonConfirmable
                } else {
                    MessageType::Confirmable
                };
                let mut p = packet(kind, MessageClass::from(0x45), message_id, &token);
                let sequence = u64::from(data.get(1).copied().unwrap_or(0));
                p.add_option(CoapOption::Observe, option_uint(sequence));
                p.add_option(CoapOption::ContentFormat, option_uint([0, 112, 11542][(sequence % 3) as usize]));
                p.payload = data.get(2..).unwrap_or_default().to_vec();
                self.deliver(peer, &p.to_bytes().unwrap_or_default());
            }
            5 => {
                let ms = u64::from(u16::from_le_bytes([
                    data.first().copied().unwrap_or(0),
                    data.get(1).copied().unwrap_or(0),
                ]));
                self.advance(Duration::from_millis(ms * 20));
            }
            _ => {
                // The server's own last datagram to this peer, mutated, sent back.
                let Some(mut last) = self.last_to[usize::from(peer)].clone() else { return };
                for (i, byte) in data.iter().enumerate() {
                    if !last.is_empty() {
                        let at = (usize::from(*byte) * 7 + i) % last.len();
                        last[at] ^= byte.rotate_left(i as u32);
                    }
                }
                self.deliver(peer, &last);
            }
        }
        self.check_bounds();
    }
}

/// Runs one input: `[strategy/delivery choice] ([op] [peer] [len] [len bytes])*`.
pub fn drive(input: &[u8]) {
    let Some((&choice, mut rest)) = input.split_first() else { return };
    let mut driver = Driver::new(choice);
    let mut steps = 0;
    while rest.len() >= 3 && steps < 400 {
        let (op, peer, len) = (rest[0], rest[1], usize::from(rest[2]));
        let end = (3 + len).min(rest.len());
        driver.step(op, peer, &rest[3..end]);
        rest = &rest[end..];
        steps += 1;
    }
    // The peers fall silent: every upgrade ends by its deadlines.
    for _ in 0..200 {
        match driver.binding.poll_timeout() {
            Some(at) => {
                assert!(at >= driver.now);
                driver.now = at;
                driver.binding.handle_timeout(at).unwrap();
                driver.collect();
            }
            None => break,
        }
        let endpoint = driver.binding.endpoint();
        let running = ["d0", "d1", "d2"]
            .iter()
            .filter_map(|n| endpoint.find(n))
            .any(|d| endpoint.device(d).and_then(|v| v.task).is_some_and(|t| t.outcome().is_none() || t.watching()));
        if !running && driver.binding.pending() == 0 {
            return;
        }
    }
    let endpoint = driver.binding.endpoint();
    for name in ["d0", "d1", "d2"] {
        let task = endpoint.find(name).and_then(|d| endpoint.device(d)).and_then(|v| v.task);
        assert!(
            task.is_none_or(|t| t.outcome().is_some() && !t.watching()),
            "{name} never ended: {:?}",
            task.map(|t| t.step())
        );
    }
    assert_eq!(driver.binding.pending(), 0, "requests still awaiting an ACK after every deadline");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_inputs_keep_every_rule() {
        let mut state = 0xE4D_u64;
        let mut next = || {
            state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut z = state;
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            z ^ (z >> 31)
        };
        for _ in 0..1_500 {
            let len = (next() % 700) as usize;
            let mut input: Vec<u8> = (0..len).map(|_| next() as u8).collect();
            // Mostly well-formed ops with short payloads, some raw.
            let mut i = 1;
            while i + 2 < input.len() {
                if next() % 4 != 0 {
                    input[i + 2] %= 24;
                }
                i += 3 + usize::from(input[i + 2]);
            }
            drive(&input);
        }
    }

    #[test]
    fn the_committed_seeds_keep_every_rule() {
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/fuzz/endpoint");
        let mut seen = 0;
        for entry in std::fs::read_dir(dir).expect("tests/data/fuzz/endpoint") {
            let bytes = std::fs::read(entry.unwrap().path()).unwrap();
            drive(&bytes);
            seen += 1;
        }
        assert!(seen > 0, "no seeds in {dir}");
    }
}
