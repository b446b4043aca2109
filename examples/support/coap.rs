//! CoAP by hand for the tests that play a server or a network against the
//! examples (`tests/device_example.rs`, `tests/lossy_network.rs`,
//! `tests/server_push_renegotiation.rs`, which include this file by path):
//! building and reading coap-lite packets the way LwM2M uses them, Block1/Block2
//! option values (RFC 7959), response matching and unpredictable ids. The
//! examples themselves speak CoAP through the library's `coap` module.
#![allow(dead_code)]

use std::time::Duration;

use coap_lite::{CoapOption, MessageClass, MessageType, Packet, RequestType};
use lwm2m_fota::model::{Block, ContentFormat, Path, ResponseCode};

/// RFC 7252 ACK_TIMEOUT.
pub const ACK_TIMEOUT: Duration = Duration::from_secs(2);

/// Unpredictable message ids and tokens (RFC 7252 §5.3.1, §5.4.2): a peer that
/// cannot guess them cannot forge an answer. Keyed SipHash (std's `RandomState`,
/// keyed from the operating system's randomness once per thread) over a
/// counter is a pseudo-random function: every token is 64 fresh bits, and the
/// message ids count up from a random start, so they stay distinct for
/// EXCHANGE_LIFETIME as RFC 7252 §4.4 asks.
pub struct Ids {
    key: std::collections::hash_map::RandomState,
    counter: u64,
    message_id: u16,
}

impl Default for Ids {
    fn default() -> Self {
        Self::new()
    }
}

impl Ids {
    /// A fresh key and a random first message id.
    pub fn new() -> Ids {
        use std::hash::BuildHasher;
        let key = std::collections::hash_map::RandomState::new();
        let message_id = key.hash_one(u64::MAX) as u16;
        Ids { key, counter: 0, message_id }
    }

    /// 64 pseudo-random bits.
    pub fn random(&mut self) -> u64 {
        use std::hash::BuildHasher;
        self.counter += 1;
        self.key.hash_one(self.counter)
    }

    /// The next message id.
    pub fn message_id(&mut self) -> u16 {
        self.message_id = self.message_id.wrapping_add(1);
        self.message_id
    }

    /// A new 8-byte token.
    pub fn token(&mut self) -> Vec<u8> {
        self.random().to_be_bytes().to_vec()
    }

    /// A first retransmission timeout, random in [ACK_TIMEOUT, 1.5 × ACK_TIMEOUT)
    /// (RFC 7252 §4.2, ACK_RANDOM_FACTOR 1.5).
    pub fn first_timeout(&mut self) -> Duration {
        let spread = ACK_TIMEOUT.as_millis() as u64 / 2;
        ACK_TIMEOUT + Duration::from_millis(self.random() % spread.max(1))
    }
}

/// Does `response`, received from `from`, answer the request with `message_id`
/// and `token` sent to `to` (RFC 7252 §5.3.2)? A piggybacked response is an ACK
/// carrying the request's message id and token; an empty ACK carries its
/// message id (the response follows separately); a separate response (CON or
/// NON) carries its token. All must come from the address the request went to.
pub fn answers(
    response: &Packet,
    from: std::net::SocketAddr,
    to: std::net::SocketAddr,
    message_id: u16,
    token: &[u8],
) -> bool {
    if from != to {
        return false;
    }
    let is_response = matches!(response.header.code, MessageClass::Response(_));
    match response.header.get_type() {
        MessageType::Acknowledgement if response.header.code == MessageClass::Empty => {
            response.header.message_id == message_id
        }
        MessageType::Acknowledgement => {
            is_response && response.header.message_id == message_id && response.get_token() == token
        }
        MessageType::Confirmable | MessageType::NonConfirmable => is_response && response.get_token() == token,
        MessageType::Reset => false,
    }
}

/// A request packet.
pub fn request(kind: MessageType, method: RequestType, message_id: u16, token: &[u8]) -> Packet {
    let mut packet = Packet::new();
    packet.header.set_type(kind);
    packet.header.code = MessageClass::Request(method);
    packet.header.message_id = message_id;
    packet.set_token(token.to_vec());
    packet
}

/// A response piggybacked on the ACK of `request` (or a NON response to a NON).
pub fn response_to(request: &Packet, code: ResponseCode) -> Packet {
    let mut packet = Packet::new();
    let kind = if request.header.get_type() == MessageType::Confirmable {
        MessageType::Acknowledgement
    } else {
        MessageType::NonConfirmable
    };
    packet.header.set_type(kind);
    packet.header.code = MessageClass::from(code.0);
    packet.header.message_id = request.header.message_id;
    packet.set_token(request.get_token().to_vec());
    packet
}

/// An empty ACK (or RST) for a confirmable message.
pub fn empty(kind: MessageType, message_id: u16) -> Packet {
    let mut packet = Packet::new();
    packet.header.set_type(kind);
    packet.header.code = MessageClass::Empty;
    packet.header.message_id = message_id;
    packet
}

/// The response code of a response packet.
pub fn code_of(packet: &Packet) -> ResponseCode {
    ResponseCode(u8::from(packet.header.code))
}

/// Minimal big-endian unsigned option value (RFC 7252 §3.2).
pub fn uint_option(value: u64) -> Vec<u8> {
    let bytes = value.to_be_bytes();
    let skip = bytes.iter().take_while(|&&b| b == 0).count();
    bytes[skip..].to_vec()
}

/// An unsigned option's value.
pub fn read_uint(bytes: &[u8]) -> Option<u64> {
    (bytes.len() <= 8).then(|| bytes.iter().fold(0u64, |acc, &b| (acc << 8) | u64::from(b)))
}

/// The first value of an unsigned option.
pub fn uint(packet: &Packet, option: CoapOption) -> Option<u64> {
    packet.get_first_option(option).and_then(|v| read_uint(v))
}

pub fn set_uint(packet: &mut Packet, option: CoapOption, value: u64) {
    packet.clear_option(option);
    packet.add_option(option, uint_option(value));
}

/// Content-Format of a packet, as our type.
pub fn content_format(packet: &Packet) -> Option<ContentFormat> {
    ContentFormat::from_number(uint(packet, CoapOption::ContentFormat)? as u16)
}

pub fn set_content_format(packet: &mut Packet, format: ContentFormat) {
    set_uint(packet, CoapOption::ContentFormat, u64::from(format.number()));
}

/// Uri-Path segments.
pub fn uri_path(packet: &Packet) -> Vec<String> {
    packet
        .get_option(CoapOption::UriPath)
        .map(|list| list.iter().map(|s| String::from_utf8_lossy(s).into_owned()).collect())
        .unwrap_or_default()
}

/// Uri-Query items.
pub fn uri_query(packet: &Packet) -> Vec<String> {
    packet
        .get_option(CoapOption::UriQuery)
        .map(|list| list.iter().map(|s| String::from_utf8_lossy(s).into_owned()).collect())
        .unwrap_or_default()
}

pub fn set_uri_path(packet: &mut Packet, segments: &[&str]) {
    packet.clear_option(CoapOption::UriPath);
    for segment in segments {
        if !segment.is_empty() {
            packet.add_option(CoapOption::UriPath, segment.as_bytes().to_vec());
        }
    }
}

pub fn add_query(packet: &mut Packet, item: &str) {
    packet.add_option(CoapOption::UriQuery, item.as_bytes().to_vec());
}

/// The LwM2M path of a request's Uri-Path (`None` if a segment is not an id).
pub fn lwm2m_path(segments: &[String]) -> Option<Path> {
    let ids: Option<Vec<u16>> = segments.iter().map(|s| s.parse::<u16>().ok().filter(|id| *id != u16::MAX)).collect();
    Path::from_segments(&ids?)
}

pub fn set_path(packet: &mut Packet, path: &Path) {
    let segments: Vec<String> = path.segments().iter().map(u16::to_string).collect();
    let refs: Vec<&str> = segments.iter().map(String::as_str).collect();
    set_uri_path(packet, &refs);
}

/// Block1/Block2 option values (RFC 7959 §2.2): the library's, which the
/// endpoint and its CoAP binding use.
pub use lwm2m_fota::server::{block_value, parse_block};

pub fn block(packet: &Packet, option: CoapOption) -> Option<Block> {
    parse_block(uint(packet, option)?)
}

pub fn set_block(packet: &mut Packet, option: CoapOption, block: Block) {
    set_uint(packet, option, block_value(block));
}

/// The Observe option's value, if present.
pub fn observe(packet: &Packet) -> Option<u64> {
    packet.get_first_option(CoapOption::Observe).and_then(|v| read_uint(v))
}

/// Serializes a packet (LwM2M payloads here stay well under 64 KiB).
pub fn bytes(packet: &Packet) -> Vec<u8> {
    packet.to_bytes_unlimited().unwrap_or_default()
}

/// Parses a datagram.
pub fn parse(datagram: &[u8]) -> Option<Packet> {
    Packet::from_bytes(datagram).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn block_values() {
        // RFC 7959 examples from operations.md §9.2.
        assert_eq!(block_value(Block { number: 639, more: false, size: 128 }), 0x27F3);
        assert_eq!(block_value(Block { number: 0, more: true, size: 128 }), 0x0B);
        assert_eq!(uint_option(0), Vec::<u8>::new());
        assert_eq!(parse_block(0x27F3), Some(Block { number: 639, more: false, size: 128 }));
        assert_eq!(parse_block(7), None);
    }
}
