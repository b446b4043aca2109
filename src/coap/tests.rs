//! The server binding's rules one by one: malformed datagrams, CoAP ping,
//! critical options, piggybacked and NON responses, de-duplication over
//! EXCHANGE_LIFETIME, requests to devices with their retransmission, empty
//! ACKs, RSTs and separate responses, message ids, a device that moves, and
//! time.

use super::message as packet;
use super::*;
use crate::model::Protocol;
use crate::server::MemoryImage;

const LINKS: &[u8] = b"</1/0>,</3/0>,</5>;ver=1.1,</5/0>";
const IMAGE: &str = "fw.bin";
const IMAGE_SIZE: usize = 3000;
/// An option number nobody knows: odd, so critical.
const CRITICAL: u16 = 2049;
/// An option number nobody knows: even, so elective.
const ELECTIVE: u16 = 2048;

fn ms(millis: u64) -> Instant {
    Instant::from_millis(millis)
}

fn binding_with(config: CoapConfig) -> ServerBinding<u32> {
    let mut binding = ServerBinding::new(EndpointConfig::default(), config);
    let image: Vec<u8> = (0..IMAGE_SIZE).map(|i| (i * 7 % 251) as u8).collect();
    binding.endpoint_mut().add_image(IMAGE, Arc::new(MemoryImage::new(image)));
    binding
}

fn binding() -> ServerBinding<u32> {
    binding_with(CoapConfig::default())
}

fn bytes(packet: &Packet) -> Vec<u8> {
    packet.to_bytes().unwrap()
}

fn parse(datagram: &[u8]) -> Packet {
    Packet::from_bytes(datagram).unwrap()
}

/// A Register of endpoint `ep` (lifetime 300 s).
fn register_packet(kind: MessageType, message_id: u16, ep: &str) -> Packet {
    let mut p = packet(kind, MessageClass::Request(RequestType::Post), message_id, &[0xAB, message_id as u8]);
    p.add_option(CoapOption::UriPath, b"rd".to_vec());
    p.add_option(CoapOption::UriQuery, format!("ep={ep}").into_bytes());
    p.add_option(CoapOption::UriQuery, b"lt=300".to_vec());
    p.add_option(CoapOption::UriQuery, b"lwm2m=1.1".to_vec());
    p.add_option(CoapOption::ContentFormat, vec![40]);
    p.payload = LINKS.to_vec();
    p
}

/// A confirmable Registration Update of `location` (`rd/<id>`).
fn update_packet(message_id: u16, location: &str) -> Packet {
    let mut p = packet(MessageType::Confirmable, MessageClass::Request(RequestType::Post), message_id, &[0xCD]);
    for segment in location.split('/') {
        p.add_option(CoapOption::UriPath, segment.as_bytes().to_vec());
    }
    p
}

/// A confirmable GET of the image's block `number` (1024 bytes).
fn image_get(message_id: u16, number: u64) -> Packet {
    let mut p = packet(MessageType::Confirmable, MessageClass::Request(RequestType::Get), message_id, &[0x17]);
    p.add_option(CoapOption::UriPath, b"fw".to_vec());
    p.add_option(CoapOption::UriPath, IMAGE.as_bytes().to_vec());
    p.add_option(CoapOption::Block2, uint_bytes((number << 4) | 6));
    p
}

/// A confirmable POST /dp (Send) with SenML-CBOR `payload`.
fn send_packet(message_id: u16, payload: &[u8]) -> Packet {
    let mut p = packet(MessageType::Confirmable, MessageClass::Request(RequestType::Post), message_id, &[0x5E]);
    p.add_option(CoapOption::UriPath, b"dp".to_vec());
    p.add_option(CoapOption::ContentFormat, uint_bytes(112));
    p.payload = payload.to_vec();
    p
}

fn sent(b: &mut ServerBinding<u32>) -> Vec<(u32, Vec<u8>)> {
    core::iter::from_fn(|| b.poll_transmit()).collect()
}

fn sent_packets(b: &mut ServerBinding<u32>) -> Vec<(u32, Packet)> {
    sent(b).into_iter().map(|(peer, d)| (peer, parse(&d))).collect()
}

fn events(b: &mut ServerBinding<u32>) -> Vec<(DeviceId, EndpointEvent)> {
    core::iter::from_fn(|| b.poll_event()).collect()
}

fn strings(packet: &Packet, option: CoapOption) -> Vec<String> {
    packet
        .get_option(option)
        .map(|list| list.iter().map(|v| String::from_utf8(v.clone()).unwrap()).collect())
        .unwrap_or_default()
}

fn code(packet: &Packet) -> u8 {
    u8::from(packet.header.code)
}

/// The one datagram sent, parsed.
fn only(b: &mut ServerBinding<u32>) -> (u32, Packet) {
    let mut out = sent_packets(b);
    assert_eq!(out.len(), 1, "one datagram: {out:?}");
    out.pop().unwrap()
}

/// Registers `ep` from `peer` (a CON with `message_id`); its location `rd/<id>`.
fn register(b: &mut ServerBinding<u32>, now: Instant, peer: u32, message_id: u16, ep: &str) -> String {
    b.handle_datagram(now, peer, &bytes(&register_packet(MessageType::Confirmable, message_id, ep))).unwrap();
    let (to, ack) = only(b);
    assert_eq!(to, peer);
    assert_eq!(code(&ack), ResponseCode::CREATED.0);
    assert!(events(b).iter().any(|(_, e)| matches!(e, EndpointEvent::Registered { .. })));
    strings(&ack, CoapOption::LocationPath).join("/")
}

fn upgrade_config() -> Arc<UpgradeConfig> {
    let mut config = UpgradeConfig::new("coap://s/fw/", IMAGE, IMAGE_SIZE as u64);
    config.protocol = Protocol::Coap;
    Arc::new(config)
}

/// A registered device upgrading, and the request that went out.
struct Upgrading {
    location: String,
    datagram: Vec<u8>,
    request: Packet,
}

/// Registers `ep` from `peer` at `now` and upgrades it.
fn upgrading(b: &mut ServerBinding<u32>, now: Instant, peer: u32, ep: &str) -> Upgrading {
    let location = register(b, now, peer, 0x0100 + peer as u16, ep);
    b.upgrade(now, ep, upgrade_config()).unwrap();
    let mut out = sent(b);
    assert_eq!(out.len(), 1, "one request: {out:?}");
    let (to, datagram) = out.pop().unwrap();
    assert_eq!(to, peer);
    let request = parse(&datagram);
    Upgrading { location, datagram, request }
}

/// A piggybacked answer (ACK) to `request`.
fn piggybacked(request: &Packet, code: ResponseCode) -> Packet {
    packet(MessageType::Acknowledgement, MessageClass::from(code.0), request.header.message_id, request.get_token())
}

fn is_request_like(p: &Packet, like: &Packet) -> bool {
    p.header.get_type() == MessageType::Confirmable
        && p.header.code == like.header.code
        && strings(p, CoapOption::UriPath) == strings(like, CoapOption::UriPath)
}

// ----- malformed datagrams -----

#[test]
fn a_datagram_of_another_version_is_ignored() {
    let mut b = binding();
    let mut datagram = bytes(&register_packet(MessageType::Confirmable, 1, "dev"));
    datagram[0] = (datagram[0] & 0x3F) | 0x80; // version 2
    b.handle_datagram(ms(0), 7, &datagram).unwrap();
    datagram[0] &= 0x3F; // version 0
    b.handle_datagram(ms(0), 7, &datagram).unwrap();
    assert!(sent(&mut b).is_empty());
    assert!(events(&mut b).is_empty());
    assert_eq!(b.stats().malformed, 2);
    assert_eq!(b.endpoint().registrations().len(), 0);
}

#[test]
fn a_datagram_shorter_than_the_header_is_ignored() {
    let mut b = binding();
    for datagram in [&[][..], &[0x40], &[0x40, 0x01], &[0x40, 0x01, 0x12]] {
        b.handle_datagram(ms(0), 7, datagram).unwrap();
    }
    assert!(sent(&mut b).is_empty());
    assert_eq!(b.stats().malformed, 4);
}

#[test]
fn an_unparsable_confirmable_datagram_is_reset() {
    let mut b = binding();
    // CON GET, message id 0x1234, no token, then an option byte with delta 15.
    b.handle_datagram(ms(0), 7, &[0x40, 0x01, 0x12, 0x34, 0xF1, 0x00]).unwrap();
    let (to, rst) = only(&mut b);
    assert_eq!(to, 7);
    assert_eq!(rst.header.get_type(), MessageType::Reset);
    assert_eq!(rst.header.message_id, 0x1234);
    assert_eq!(rst.header.code, MessageClass::Empty);
    assert!(rst.get_token().is_empty());
    assert_eq!(b.stats().malformed, 1);
}

#[test]
fn an_unparsable_non_confirmable_datagram_is_not_acknowledged() {
    let mut b = binding();
    b.handle_datagram(ms(0), 7, &[0x50, 0x01, 0x12, 0x34, 0xF1, 0x00]).unwrap();
    assert!(sent_packets(&mut b).iter().all(|(_, p)| p.header.get_type() != MessageType::Acknowledgement));
    assert_eq!(b.stats().malformed, 1);
}

#[test]
fn a_payload_marker_without_payload_is_a_format_error() {
    let mut b = binding();
    let mut datagram = bytes(&register_packet(MessageType::Confirmable, 0x2222, "dev"));
    // The same Register with its payload cut off after the marker.
    datagram.truncate(datagram.len() - LINKS.len());
    assert_eq!(datagram.last(), Some(&0xFF));
    b.handle_datagram(ms(0), 7, &datagram).unwrap();
    let (_, rst) = only(&mut b);
    assert_eq!((rst.header.get_type(), rst.header.message_id), (MessageType::Reset, 0x2222));
    assert!(events(&mut b).is_empty(), "nothing registered");
    assert_eq!(b.stats().malformed, 1);
}

#[test]
fn an_option_value_ending_in_0xff_is_not_a_payload_marker() {
    let mut b = binding();
    // GET of the image whose last option (Accept, 17) ends in a 0xFF byte.
    let mut get = packet(MessageType::Confirmable, MessageClass::Request(RequestType::Get), 0x3333, &[1]);
    get.add_option(CoapOption::UriPath, b"fw".to_vec());
    get.add_option(CoapOption::UriPath, IMAGE.as_bytes().to_vec());
    get.add_option(CoapOption::Accept, vec![0x00, 0xFF]);
    let datagram = bytes(&get);
    assert_eq!(datagram.last(), Some(&0xFF));
    b.handle_datagram(ms(0), 7, &datagram).unwrap();
    let (_, ack) = only(&mut b);
    assert_eq!((ack.header.get_type(), code(&ack)), (MessageType::Acknowledgement, ResponseCode::CONTENT.0));
    assert_eq!(b.stats().malformed, 0);
}

#[test]

fn a_payload_ending_in_0xff_is_not_a_format_error() {
    let mut b = binding();
    register(&mut b, ms(0), 7, 1, "dev");
    // A Send whose SenML-CBOR payload is an indefinite-length array (0x9F … 0xFF).
    let send = send_packet(0x4444, &[0x9F, 0xFF]);
    b.handle_datagram(ms(10), 7, &bytes(&send)).unwrap();
    let (_, ack) = only(&mut b);
    assert_eq!(ack.header.get_type(), MessageType::Acknowledgement, "answered, not reset");
    assert_eq!(ack.header.message_id, 0x4444);
    assert_eq!(code(&ack), ResponseCode::CHANGED.0);
    assert_eq!(b.stats().malformed, 0);
}

// ----- ping, options, responses to device requests -----

#[test]
fn a_coap_ping_is_answered_with_a_reset() {
    let mut b = binding();
    let ping = packet(MessageType::Confirmable, MessageClass::Empty, 0x7777, &[]);
    b.handle_datagram(ms(0), 9, &bytes(&ping)).unwrap();
    let (to, rst) = only(&mut b);
    assert_eq!(to, 9);
    assert_eq!((rst.header.get_type(), rst.header.message_id), (MessageType::Reset, 0x7777));
    assert_eq!(rst.header.code, MessageClass::Empty);
    assert!(rst.payload.is_empty() && rst.options().next().is_none());
    assert_eq!(b.stats(), BindingStats::default());
}

#[test]
fn an_unrecognized_critical_option_is_4_02() {
    let mut b = binding();
    let mut register = register_packet(MessageType::Confirmable, 0x0042, "dev");
    register.add_option(CoapOption::Unknown(CRITICAL), vec![1]);
    b.handle_datagram(ms(0), 7, &bytes(&register)).unwrap();
    let (to, ack) = only(&mut b);
    assert_eq!(to, 7);
    assert_eq!(ack.header.get_type(), MessageType::Acknowledgement);
    assert_eq!(ack.header.message_id, 0x0042);
    assert_eq!(ack.get_token(), register.get_token());
    assert_eq!(code(&ack), ResponseCode::new(4, 2).0);
    assert_eq!(b.stats().bad_option, 1);
    assert!(events(&mut b).is_empty(), "not registered");
    assert_eq!(b.endpoint().registrations().len(), 0);
}

#[test]
fn an_unrecognized_critical_option_in_a_get_is_4_02() {
    let mut b = binding();
    let mut get = image_get(0x0043, 0);
    get.add_option(CoapOption::Unknown(CRITICAL), vec![]);
    b.handle_datagram(ms(0), 7, &bytes(&get)).unwrap();
    let (_, ack) = only(&mut b);
    assert_eq!(code(&ack), ResponseCode::new(4, 2).0);
    assert!(ack.payload.is_empty());
    assert_eq!(b.stats().bad_option, 1);
}

#[test]
fn an_unrecognized_elective_option_is_ignored() {
    let mut b = binding();
    let mut register = register_packet(MessageType::Confirmable, 0x0044, "dev");
    register.add_option(CoapOption::Unknown(ELECTIVE), vec![1]);
    b.handle_datagram(ms(0), 7, &bytes(&register)).unwrap();
    let (_, ack) = only(&mut b);
    assert_eq!(code(&ack), ResponseCode::CREATED.0);
    assert_eq!(b.stats().bad_option, 0);
    assert!(matches!(events(&mut b)[..], [(_, EndpointEvent::Registered { replaced: false })]));
}

#[test]
fn a_register_is_answered_2_01_with_its_location_on_the_ack() {
    let mut b = binding();
    let register = register_packet(MessageType::Confirmable, 0xBEEF, "dev");
    b.handle_datagram(ms(0), 7, &bytes(&register)).unwrap();
    let (to, ack) = only(&mut b);
    assert_eq!(to, 7);
    assert_eq!(ack.header.get_type(), MessageType::Acknowledgement);
    assert_eq!(ack.header.message_id, 0xBEEF);
    assert_eq!(ack.get_token(), register.get_token());
    assert_eq!(code(&ack), ResponseCode::CREATED.0);
    let location = strings(&ack, CoapOption::LocationPath);
    assert_eq!(location.len(), 2, "{location:?}");
    assert_eq!(location[0], "rd");
    let id = b.endpoint().find("dev").unwrap();
    let registered = b.endpoint().device(id).unwrap().registration.unwrap();
    assert_eq!(registered.endpoint.as_ref(), "dev");
    // The location is where an Update goes.
    b.handle_datagram(ms(10), 7, &bytes(&update_packet(0xBEF0, &location.join("/")))).unwrap();
    let (_, changed) = only(&mut b);
    assert_eq!(code(&changed), ResponseCode::CHANGED.0);
}

#[test]
fn a_non_confirmable_request_gets_a_non_confirmable_response() {
    let mut b = binding();
    let register = register_packet(MessageType::NonConfirmable, 0x0101, "dev");
    b.handle_datagram(ms(0), 7, &bytes(&register)).unwrap();
    let (to, response) = only(&mut b);
    assert_eq!(to, 7);
    assert_eq!(response.header.get_type(), MessageType::NonConfirmable);
    assert_eq!(response.get_token(), register.get_token());
    assert_eq!(code(&response), ResponseCode::CREATED.0);
    assert_eq!(strings(&response, CoapOption::LocationPath)[0], "rd");
}

// ----- de-duplication -----

#[test]
fn a_duplicate_post_is_answered_from_memory() {
    let mut b = binding();
    let register = bytes(&register_packet(MessageType::Confirmable, 0x0500, "dev"));
    b.handle_datagram(ms(0), 7, &register).unwrap();
    let first = sent(&mut b);
    assert_eq!(first.len(), 1);
    assert_eq!(events(&mut b).len(), 1);
    let location = b.endpoint().device(b.endpoint().find("dev").unwrap()).unwrap().registration.cloned();
    b.handle_datagram(ms(2500), 7, &register).unwrap();
    assert_eq!(sent(&mut b), first, "the identical bytes");
    assert!(events(&mut b).is_empty(), "not registered again");
    assert_eq!(b.stats().duplicates, 1);
    assert_eq!(b.endpoint().registrations().len(), 1);
    let again = b.endpoint().device(b.endpoint().find("dev").unwrap()).unwrap().registration.cloned();
    assert_eq!(again, location);
}

#[test]
fn a_duplicate_is_processed_again_after_exchange_lifetime() {
    let mut b = binding();
    let register = bytes(&register_packet(MessageType::Confirmable, 0x0600, "dev"));
    b.handle_datagram(ms(0), 7, &register).unwrap();
    sent(&mut b);
    events(&mut b);
    // Still remembered just before EXCHANGE_LIFETIME.
    b.handle_timeout(ms(246_999)).unwrap();
    b.handle_datagram(ms(246_999), 7, &register).unwrap();
    assert_eq!(sent(&mut b).len(), 1);
    assert!(events(&mut b).is_empty());
    assert_eq!(b.stats().duplicates, 1);
    // Forgotten at 247 s: a new Register.
    b.handle_timeout(ms(247_000)).unwrap();
    assert_eq!(b.remembered(), 0);
    b.handle_datagram(ms(247_000), 7, &register).unwrap();
    let (_, ack) = only(&mut b);
    assert_eq!(code(&ack), ResponseCode::CREATED.0);
    assert!(events(&mut b).iter().any(|(_, e)| *e == EndpointEvent::Registered { replaced: true }));
    assert_eq!(b.stats().duplicates, 1);
}

#[test]
fn the_same_message_id_from_another_peer_is_not_a_duplicate() {
    let mut b = binding();
    b.handle_datagram(ms(0), 7, &bytes(&register_packet(MessageType::Confirmable, 0x0700, "dev-a"))).unwrap();
    sent(&mut b);
    events(&mut b);
    b.handle_datagram(ms(10), 8, &bytes(&register_packet(MessageType::Confirmable, 0x0700, "dev-b"))).unwrap();
    let (to, ack) = only(&mut b);
    assert_eq!((to, code(&ack)), (8, ResponseCode::CREATED.0));
    assert!(matches!(events(&mut b)[..], [(_, EndpointEvent::Registered { replaced: false })]));
    assert_eq!(b.stats().duplicates, 0);
    assert!(b.endpoint().find("dev-b").is_some());
    assert_eq!(b.remembered(), 2);
}

#[test]
fn a_duplicate_image_get_is_served_again() {
    let mut b = binding();
    let get = bytes(&image_get(0x0800, 1));
    b.handle_datagram(ms(0), 7, &get).unwrap();
    let (_, first) = only(&mut b);
    assert_eq!(code(&first), ResponseCode::CONTENT.0);
    assert_eq!(first.payload.len(), 1024);
    assert_eq!(b.remembered(), 0, "an image block is not kept");
    b.handle_datagram(ms(100), 7, &get).unwrap();
    let (_, second) = only(&mut b);
    assert_eq!(second.header.message_id, 0x0800);
    assert_eq!(code(&second), ResponseCode::CONTENT.0);
    assert_eq!(second.payload, first.payload);
    assert_eq!(b.remembered(), 0);
    assert_eq!(b.stats().duplicates, 0, "processed again, not answered from memory");
}

#[test]
fn max_remembered_drops_the_oldest() {
    let mut b = binding_with(CoapConfig { max_remembered: 2, ..CoapConfig::default() });
    // Sends from an unregistered peer: 4.04, remembered all the same (POST).
    for (i, id) in [0x0901u16, 0x0902, 0x0903].into_iter().enumerate() {
        b.handle_datagram(ms(i as u64), 9, &bytes(&send_packet(id, b"x"))).unwrap();
        assert_eq!(code(&only(&mut b).1), ResponseCode::NOT_FOUND.0);
        assert!(b.remembered() <= 2);
    }
    assert_eq!(b.remembered(), 2);
    // The newest is still answered from memory …
    b.handle_datagram(ms(10), 9, &bytes(&send_packet(0x0903, b"x"))).unwrap();
    only(&mut b);
    assert_eq!(b.stats().duplicates, 1);
    // … the oldest was forgotten: processed again.
    b.handle_datagram(ms(11), 9, &bytes(&send_packet(0x0901, b"x"))).unwrap();
    only(&mut b);
    assert_eq!(b.stats().duplicates, 1);
    assert_eq!(b.remembered(), 2);
}

// ----- requests to devices -----

#[test]
fn an_upgrade_sends_a_confirmable_request_with_an_8_byte_token() {
    let mut b = binding();
    let Upgrading { request, .. } = upgrading(&mut b, ms(0), 7, "dev");
    assert_eq!(request.header.get_type(), MessageType::Confirmable);
    assert!(matches!(request.header.code, MessageClass::Request(_)));
    assert_eq!(request.get_token().len(), 8);
    assert!(!strings(&request, CoapOption::UriPath).is_empty());
    assert_eq!(b.pending(), 1);
}

#[test]
fn an_unanswered_request_is_retransmitted_with_back_off_then_given_up() {
    let mut b = binding();
    let t0 = ms(1_000);
    let Upgrading { datagram, request, .. } = upgrading(&mut b, t0, 7, "dev");
    let first = b.poll_timeout().unwrap();
    let timeout = first - t0;
    assert!(timeout >= Duration::from_secs(2) && timeout < Duration::from_secs(3), "{timeout:?}");
    let mut at = t0;
    let mut wait = timeout;
    for n in 1..=4u64 {
        at = at + wait;
        b.handle_timeout(ms(at.as_millis() - 1)).unwrap();
        assert!(sent(&mut b).is_empty(), "retransmission {n} too early");
        b.handle_timeout(at).unwrap();
        assert_eq!(sent(&mut b), vec![(7, datagram.clone())], "retransmission {n}");
        assert_eq!(b.stats().retransmissions, n);
        assert_eq!(b.stats().gave_up, 0);
        wait *= 2;
    }
    // After the fourth, one more (doubled) timeout, then it is given up.
    at = at + wait;
    assert_eq!(at - t0, timeout * 31);
    b.handle_timeout(ms(at.as_millis() - 1)).unwrap();
    assert!(sent(&mut b).is_empty());
    assert_eq!(b.stats().gave_up, 0);
    b.handle_timeout(at).unwrap();
    assert_eq!(b.stats().gave_up, 1);
    assert_eq!(b.stats().retransmissions, 4);
    // The task heard a transport failure: it asks again, in a new exchange.
    let out = sent_packets(&mut b);
    assert_eq!(out.len(), 1, "{out:?}");
    let (to, again) = &out[0];
    assert_eq!(*to, 7);
    assert!(is_request_like(again, &request), "{again:?}");
    assert_ne!(again.get_token(), request.get_token());
    assert_ne!(again.header.message_id, request.header.message_id);
    assert_eq!(b.pending(), 1);
}

#[test]
fn the_first_timeout_is_random_between_ack_timeout_and_1_5_times_it() {
    let timeouts: std::collections::BTreeSet<Duration> = (0..16)
        .map(|seed| {
            let mut b = binding_with(CoapConfig { seed, ..CoapConfig::default() });
            upgrading(&mut b, ms(0), 7, "dev");
            b.poll_timeout().unwrap() - ms(0)
        })
        .collect();
    assert!(timeouts.iter().all(|t| *t >= Duration::from_secs(2) && *t < Duration::from_secs(3)), "{timeouts:?}");
    assert!(timeouts.len() >= 8, "spread out: {timeouts:?}");
}

#[test]
fn poll_timeout_names_the_earliest_retransmission() {
    let mut b = binding();
    let t0 = ms(0);
    upgrading(&mut b, t0, 7, "dev");
    let first = b.poll_timeout().unwrap();
    assert!(first > t0 && first < t0 + Duration::from_secs(3));
    b.handle_timeout(ms(first.as_millis() - 1)).unwrap();
    assert!(sent(&mut b).is_empty());
    assert_eq!(b.poll_timeout(), Some(first));
    b.handle_timeout(first).unwrap();
    assert_eq!(sent(&mut b).len(), 1);
    assert_eq!(b.poll_timeout(), Some(first + (first - t0) * 2));
    // A second device's later request does not hide the first one's.
    let later = first + Duration::from_millis(500);
    register(&mut b, later, 8, 0x0808, "dev-b");
    b.upgrade(later, "dev-b", upgrade_config()).unwrap();
    sent(&mut b);
    let second_first = b.pending();
    assert_eq!(second_first, 2);
    let poll = b.poll_timeout().unwrap();
    assert!(poll <= first + (first - t0) * 2);
    assert!(poll > later);
}

#[test]
fn an_empty_ack_stops_retransmission_and_the_separate_response_is_acked() {
    let mut b = binding();
    let Upgrading { datagram, request, .. } = upgrading(&mut b, ms(0), 7, "dev");
    let ack = packet(MessageType::Acknowledgement, MessageClass::Empty, request.header.message_id, &[]);
    b.handle_datagram(ms(500), 7, &bytes(&ack)).unwrap();
    assert!(sent(&mut b).is_empty());
    assert_eq!(b.pending(), 0);
    for s in [3u64, 10, 30, 60] {
        b.handle_timeout(ms(s * 1000)).unwrap();
        assert!(sent(&mut b).iter().all(|(_, d)| *d != datagram), "no copy at {s} s");
    }
    assert_eq!(b.stats().retransmissions, 0);
    // The separate response: CON, same token, the device's own message id.
    let mut response =
        packet(MessageType::Confirmable, MessageClass::from(ResponseCode::CONTENT.0), 0x6001, request.get_token());
    response.add_option(CoapOption::ContentFormat, uint_bytes(112));
    let uplinks = b.endpoint().device(b.endpoint().find("dev").unwrap()).unwrap().uplinks;
    b.handle_datagram(ms(61_000), 7, &bytes(&response)).unwrap();
    let out = sent_packets(&mut b);
    let acks: Vec<_> = out.iter().filter(|(_, p)| p.header.get_type() == MessageType::Acknowledgement).collect();
    assert_eq!(acks.len(), 1, "{out:?}");
    let (to, empty_ack) = acks[0];
    assert_eq!(*to, 7);
    assert_eq!(empty_ack.header.message_id, 0x6001);
    assert_eq!(empty_ack.header.code, MessageClass::Empty);
    assert!(out.iter().all(|(_, p)| p.header.get_type() != MessageType::Reset));
    let after = b.endpoint().device(b.endpoint().find("dev").unwrap()).unwrap().uplinks;
    assert_eq!(after, uplinks + 1, "the endpoint took the response");
    // A duplicate of the separate response: the same ACK, from memory.
    b.handle_datagram(ms(61_500), 7, &bytes(&response)).unwrap();
    let again = sent_packets(&mut b);
    assert_eq!(again.len(), 1);
    assert_eq!(again[0].1.header.get_type(), MessageType::Acknowledgement);
    assert_eq!(again[0].1.header.message_id, 0x6001);
    assert_eq!(b.stats().duplicates, 1);
}

#[test]
fn a_piggybacked_answer_ends_the_exchange() {
    let mut b = binding();
    let t0 = ms(0);
    let Upgrading { datagram, request, .. } = upgrading(&mut b, t0, 7, "dev");
    let first = b.poll_timeout().unwrap();
    b.handle_datagram(ms(100), 7, &bytes(&piggybacked(&request, ResponseCode::NOT_FOUND))).unwrap();
    // Nothing answers an ACK; whatever the task sends next is a new exchange.
    let out = sent_packets(&mut b);
    assert!(out.iter().all(|(_, p)| p.header.get_type() == MessageType::Confirmable), "{out:?}");
    b.handle_timeout(first).unwrap();
    assert!(sent(&mut b).iter().all(|(_, d)| *d != datagram));
    assert_eq!(b.stats().retransmissions, 0);
}

#[test]
fn a_piggybacked_answer_with_the_wrong_token_is_ignored() {
    let mut b = binding();
    let Upgrading { datagram, request, .. } = upgrading(&mut b, ms(0), 7, "dev");
    let mut wrong = request.get_token().to_vec();
    wrong[7] ^= 0xFF;
    let answer = packet(
        MessageType::Acknowledgement,
        MessageClass::from(ResponseCode::CONTENT.0),
        request.header.message_id,
        &wrong,
    );
    b.handle_datagram(ms(100), 7, &bytes(&answer)).unwrap();
    assert!(sent(&mut b).is_empty());
    assert_eq!(b.pending(), 1);
    let uplinks = b.endpoint().device(b.endpoint().find("dev").unwrap()).unwrap().uplinks;
    assert_eq!(uplinks, 1, "only the Register");
    let first = b.poll_timeout().unwrap();
    b.handle_timeout(first).unwrap();
    assert_eq!(sent(&mut b), vec![(7, datagram)], "still retransmitted");
}

#[test]
fn a_piggybacked_answer_from_another_peer_is_ignored() {
    let mut b = binding();
    let Upgrading { datagram, request, .. } = upgrading(&mut b, ms(0), 7, "dev");
    b.handle_datagram(ms(100), 8, &bytes(&piggybacked(&request, ResponseCode::CONTENT))).unwrap();
    assert!(sent(&mut b).is_empty());
    assert_eq!(b.pending(), 1);
    let first = b.poll_timeout().unwrap();
    b.handle_timeout(first).unwrap();
    assert_eq!(sent(&mut b), vec![(7, datagram.clone())], "retransmission continues");
    assert_eq!(b.stats().retransmissions, 1);
    // The real answer from the device still ends it.
    b.handle_datagram(first, 7, &bytes(&piggybacked(&request, ResponseCode::NOT_FOUND))).unwrap();
    sent(&mut b);
    b.handle_timeout(first + Duration::from_secs(30)).unwrap();
    assert!(sent(&mut b).iter().all(|(_, d)| *d != datagram));
    assert_eq!(b.stats().retransmissions, 1);
}

#[test]
fn a_separate_response_from_another_peer_does_not_stop_retransmission() {
    let mut b = binding();
    let Upgrading { datagram, request, .. } = upgrading(&mut b, ms(0), 7, "dev");
    let response =
        packet(MessageType::Confirmable, MessageClass::from(ResponseCode::CONTENT.0), 0x7001, request.get_token());
    b.handle_datagram(ms(100), 8, &bytes(&response)).unwrap();
    // Not acknowledged as taken (the endpoint refuses it).
    assert!(sent_packets(&mut b).iter().all(|(_, p)| p.header.get_type() != MessageType::Acknowledgement));
    assert_eq!(b.pending(), 1);
    let first = b.poll_timeout().unwrap();
    b.handle_timeout(first).unwrap();
    assert_eq!(sent(&mut b), vec![(7, datagram)]);
    assert_eq!(b.stats().retransmissions, 1);
}

#[test]
fn an_unmatched_confirmable_notification_is_reset() {
    let mut b = binding();
    register(&mut b, ms(0), 7, 1, "dev");
    let mut notification = packet(
        MessageType::Confirmable,
        MessageClass::from(ResponseCode::CONTENT.0),
        0x7101,
        &[9, 9, 9, 9, 9, 9, 9, 9],
    );
    notification.add_option(CoapOption::Observe, vec![5]);
    b.handle_datagram(ms(100), 7, &bytes(&notification)).unwrap();
    let (to, rst) = only(&mut b);
    assert_eq!(to, 7);
    assert_eq!((rst.header.get_type(), rst.header.message_id), (MessageType::Reset, 0x7101));
    assert_eq!(rst.header.code, MessageClass::Empty);
}

#[test]
fn an_unmatched_non_confirmable_notification_is_reset() {
    let mut b = binding();
    register(&mut b, ms(0), 7, 1, "dev");
    let mut notification =
        packet(MessageType::NonConfirmable, MessageClass::from(ResponseCode::CONTENT.0), 0x7201, &[1, 2, 3]);
    notification.add_option(CoapOption::Observe, vec![5]);
    b.handle_datagram(ms(100), 7, &bytes(&notification)).unwrap();
    let (to, rst) = only(&mut b);
    assert_eq!(to, 7);
    assert_eq!((rst.header.get_type(), rst.header.message_id), (MessageType::Reset, 0x7201));
}

#[test]
fn a_reset_fails_the_exchange_at_once() {
    let mut b = binding();
    let Upgrading { datagram, request, .. } = upgrading(&mut b, ms(0), 7, "dev");
    let rst = packet(MessageType::Reset, MessageClass::Empty, request.header.message_id, &[]);
    b.handle_datagram(ms(100), 7, &bytes(&rst)).unwrap();
    // The task heard it: it asks again at once, in a new exchange.
    let out = sent_packets(&mut b);
    assert_eq!(out.len(), 1, "{out:?}");
    assert!(is_request_like(&out[0].1, &request));
    assert_ne!(out[0].1.get_token(), request.get_token());
    assert_eq!(b.pending(), 1);
    assert_eq!(b.stats().gave_up, 0);
    // The reset one is not retransmitted.
    b.handle_timeout(ms(2_000)).unwrap();
    b.handle_timeout(ms(3_100)).unwrap();
    assert!(sent(&mut b).iter().all(|(_, d)| *d != datagram));
}

#[test]
fn a_reset_from_another_peer_changes_nothing() {
    let mut b = binding();
    let Upgrading { request, .. } = upgrading(&mut b, ms(0), 7, "dev");
    let rst = packet(MessageType::Reset, MessageClass::Empty, request.header.message_id, &[]);
    b.handle_datagram(ms(100), 8, &bytes(&rst)).unwrap();
    assert!(sent(&mut b).is_empty());
    assert_eq!(b.pending(), 1);
}

// ----- message ids -----

#[test]
fn message_ids_of_a_device_increase_by_one() {
    let mut b = binding();
    let Upgrading { request, .. } = upgrading(&mut b, ms(0), 7, "dev");
    let mut id = request.header.message_id;
    let mut last = request;
    for n in 0..3 {
        let rst = packet(MessageType::Reset, MessageClass::Empty, last.header.message_id, &[]);
        b.handle_datagram(ms(100 * (n + 1)), 7, &bytes(&rst)).unwrap();
        let out = sent_packets(&mut b);
        assert!(!out.is_empty(), "a new request after reset {n}");
        for (_, p) in out {
            id = id.wrapping_add(1);
            assert_eq!(p.header.message_id, id);
            last = p;
        }
    }
}

#[test]
fn message_ids_start_at_random() {
    let first = |seed: u64| {
        let mut b = binding_with(CoapConfig { seed, ..CoapConfig::default() });
        upgrading(&mut b, ms(0), 7, "dev").request.header.message_id
    };
    let ids: std::collections::BTreeSet<u16> = (1..=4).map(first).collect();
    assert!(ids.len() >= 3, "{ids:?}");
}

#[test]
fn two_devices_have_independent_message_ids() {
    let mut b = binding();
    let Upgrading { request: a, .. } = upgrading(&mut b, ms(0), 7, "dev-a");
    let Upgrading { request: c, .. } = upgrading(&mut b, ms(0), 8, "dev-b");
    assert_ne!(a.header.message_id, c.header.message_id, "different starts");
    assert_ne!(c.header.message_id, a.header.message_id.wrapping_add(1), "not one sequence");
    // Device b's next request does not move device a's sequence.
    let rst = packet(MessageType::Reset, MessageClass::Empty, c.header.message_id, &[]);
    b.handle_datagram(ms(100), 8, &bytes(&rst)).unwrap();
    let (to, c2) = only(&mut b);
    assert_eq!((to, c2.header.message_id), (8, c.header.message_id.wrapping_add(1)));
    let rst = packet(MessageType::Reset, MessageClass::Empty, a.header.message_id, &[]);
    b.handle_datagram(ms(200), 7, &bytes(&rst)).unwrap();
    let (to, a2) = only(&mut b);
    assert_eq!((to, a2.header.message_id), (7, a.header.message_id.wrapping_add(1)));
}

// ----- a device that moves -----

#[test]
fn a_device_that_moves_gets_the_retransmissions_where_it_is() {
    let mut b = binding();
    let t0 = ms(0);
    let Upgrading { location, datagram, request } = upgrading(&mut b, t0, 7, "dev");
    // A Registration Update from a new address (a NAT rebinding).
    b.handle_datagram(ms(500), 8, &bytes(&update_packet(0x0A01, &location))).unwrap();
    let out = sent_packets(&mut b);
    assert!(out.iter().any(|(to, p)| *to == 8 && code(p) == ResponseCode::CHANGED.0), "{out:?}");
    assert_eq!(b.endpoint().peer_of(b.endpoint().find("dev").unwrap()), Some(8));
    let first = b.poll_timeout().unwrap();
    b.handle_timeout(first).unwrap();
    let copies: Vec<_> = sent(&mut b).into_iter().filter(|(_, d)| *d == datagram).collect();
    assert_eq!(copies, vec![(8, datagram.clone())]);
    // Its answer from the new address ends the exchange.
    b.handle_datagram(first, 8, &bytes(&piggybacked(&request, ResponseCode::NOT_FOUND))).unwrap();
    sent(&mut b);
    assert!(b.pending() <= 1);
    b.handle_timeout(first + Duration::from_secs(60)).unwrap();
    assert!(sent(&mut b).iter().all(|(_, d)| *d != datagram));
    assert_eq!(b.stats().retransmissions, 1);
}

// ----- time -----

#[test]
fn time_going_backwards_is_an_error() {
    let mut b = binding();
    let ping = bytes(&packet(MessageType::Confirmable, MessageClass::Empty, 1, &[]));
    b.handle_datagram(ms(10_000), 7, &ping).unwrap();
    sent(&mut b);
    assert_eq!(b.handle_datagram(ms(9_999), 7, &ping), Err(EndpointError::TimeWentBackwards));
    assert_eq!(
        b.handle_datagram(ms(5_000), 7, &bytes(&register_packet(MessageType::Confirmable, 2, "dev"))),
        Err(EndpointError::TimeWentBackwards)
    );
    assert_eq!(b.handle_timeout(ms(9_999)), Err(EndpointError::TimeWentBackwards));
    assert!(sent(&mut b).is_empty());
    assert!(events(&mut b).is_empty());
    // The same instant again is fine.
    b.handle_timeout(ms(10_000)).unwrap();
    b.handle_datagram(ms(10_000), 7, &ping).unwrap();
    assert_eq!(sent(&mut b).len(), 1);
}

#[test]

fn time_before_an_upgrade_is_backwards_too() {
    let mut b = binding();
    register(&mut b, ms(0), 7, 1, "dev");
    b.upgrade(ms(10_000), "dev", upgrade_config()).unwrap();
    let (_, request) = only(&mut b);
    // A piggybacked answer stamped before the upgrade: refused, and the
    // exchange is left as it was.
    let answer = bytes(&piggybacked(&request, ResponseCode::CONTENT));
    assert_eq!(b.handle_datagram(ms(5_000), 7, &answer), Err(EndpointError::TimeWentBackwards));
    assert_eq!(b.pending(), 1, "the exchange is still pending");
    let ping = bytes(&packet(MessageType::Confirmable, MessageClass::Empty, 2, &[]));
    assert_eq!(b.handle_datagram(ms(5_000), 7, &ping), Err(EndpointError::TimeWentBackwards));
    assert!(sent(&mut b).is_empty());
}
