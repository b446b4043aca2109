//! The client binding's rules one by one: the uplinks it builds, the answer
//! to Register, retransmission, empty ACKs and separate responses, the server
//! requests it parses into operations, responses and their duplicates,
//! notifications, Block2 fetches, and CoAP ping.

use super::super::message as packet;
use super::*;

const LINKS: &str = "</1/0>,</3/0>,</5/0>";
/// An option number nobody knows: odd, so critical.
const CRITICAL: u16 = 2049;

fn ms(millis: u64) -> Instant {
    Instant::from_millis(millis)
}

fn client() -> ClientBinding {
    ClientBinding::new(CoapConfig::default())
}

fn bytes(packet: &Packet) -> Vec<u8> {
    packet.to_bytes().unwrap()
}

fn sent(c: &mut ClientBinding) -> Vec<(Target, Vec<u8>)> {
    core::iter::from_fn(|| c.poll_transmit()).collect()
}

fn sent_packets(c: &mut ClientBinding) -> Vec<(Target, Packet)> {
    sent(c).into_iter().map(|(t, d)| (t, Packet::from_bytes(&d).unwrap())).collect()
}

/// The one datagram sent, parsed.
fn only(c: &mut ClientBinding) -> (Target, Packet) {
    let mut out = sent_packets(c);
    assert_eq!(out.len(), 1, "one datagram: {out:?}");
    out.pop().unwrap()
}

fn events(c: &mut ClientBinding) -> Vec<ClientEvent> {
    core::iter::from_fn(|| c.poll_event()).collect()
}

fn strings(packet: &Packet, option: CoapOption) -> Vec<String> {
    packet
        .get_option(option)
        .map(|list| list.iter().map(|v| String::from_utf8(v.clone()).unwrap()).collect())
        .unwrap_or_default()
}

fn code(packet: &Packet) -> ResponseCode {
    ResponseCode(u8::from(packet.header.code))
}

/// The piggybacked answer to `request` with `code`.
fn piggybacked(request: &Packet, code: ResponseCode) -> Packet {
    packet(MessageType::Acknowledgement, MessageClass::from(code.0), request.header.message_id, request.get_token())
}

/// A client registered at `rd/5`; the Register it sent.
fn registered(c: &mut ClientBinding, now: Instant) -> Packet {
    c.register(now, &["ep=dev", "lt=300"], LINKS);
    let (_, register) = only(c);
    let mut answer = piggybacked(&register, ResponseCode::CREATED);
    answer.add_option(CoapOption::LocationPath, b"rd".to_vec());
    answer.add_option(CoapOption::LocationPath, b"5".to_vec());
    c.handle_datagram(now, Target::Server, &bytes(&answer));
    assert_eq!(events(c), vec![ClientEvent::Answered(Uplink::Register, ResponseCode::CREATED)]);
    assert_eq!(c.location(), Some("rd/5"));
    register
}

/// A server request: `method` on `path`.
fn server_request(kind: MessageType, method: RequestType, message_id: u16, path: &[&str]) -> Packet {
    let mut p = packet(kind, MessageClass::Request(method), message_id, &[0x51, 0x52]);
    for segment in path {
        p.add_option(CoapOption::UriPath, segment.as_bytes().to_vec());
    }
    p
}

/// What the client made of `request`.
fn operation_of(request: &Packet) -> Result<Operation, ResponseCode> {
    let mut c = client();
    c.handle_datagram(ms(0), Target::Server, &bytes(request));
    let mut out = events(&mut c);
    assert_eq!(out.len(), 1, "{out:?}");
    match out.pop().unwrap() {
        ClientEvent::Request(handle, operation) => {
            assert_eq!(handle.token(), request.get_token());
            operation
        }
        other => panic!("not a request: {other:?}"),
    }
}

// ----- uplinks -----

#[test]
fn register_is_a_confirmable_post_to_rd() {
    let mut c = client();
    c.register(ms(0), &["ep=dev", "lt=300", "lwm2m=1.1"], LINKS);
    let (target, p) = only(&mut c);
    assert_eq!(target, Target::Server);
    assert_eq!(p.header.get_type(), MessageType::Confirmable);
    assert_eq!(p.header.code, MessageClass::Request(RequestType::Post));
    assert_eq!(strings(&p, CoapOption::UriPath), ["rd"]);
    assert_eq!(strings(&p, CoapOption::UriQuery), ["ep=dev", "lt=300", "lwm2m=1.1"]);
    assert_eq!(uint(&p, CoapOption::ContentFormat), Some(40));
    assert_eq!(p.payload, LINKS.as_bytes());
    assert!(!p.get_token().is_empty());
    assert_eq!(c.location(), None);
}

#[test]
fn a_piggybacked_2_01_sets_the_location() {
    let mut c = client();
    let register = registered(&mut c, ms(0));
    // Nothing answers an ACK, and nothing is retransmitted.
    assert!(sent(&mut c).is_empty());
    assert_eq!(c.poll_timeout(), None);
    c.handle_timeout(ms(10_000));
    assert!(sent(&mut c).is_empty());
    // A second copy of the answer matches nothing.
    c.handle_datagram(ms(100), Target::Server, &bytes(&piggybacked(&register, ResponseCode::CREATED)));
    assert!(events(&mut c).is_empty());
}

#[test]
fn a_register_answered_with_an_error_sets_no_location() {
    let mut c = client();
    c.register(ms(0), &["ep=dev"], LINKS);
    let (_, register) = only(&mut c);
    c.handle_datagram(ms(10), Target::Server, &bytes(&piggybacked(&register, ResponseCode::BAD_REQUEST)));
    assert_eq!(events(&mut c), vec![ClientEvent::Answered(Uplink::Register, ResponseCode::BAD_REQUEST)]);
    assert_eq!(c.location(), None);
    c.update(ms(20), &[]);
    assert!(sent(&mut c).is_empty());
}

#[test]
fn a_piggybacked_answer_with_the_wrong_token_is_ignored() {
    let mut c = client();
    c.register(ms(0), &["ep=dev"], LINKS);
    let (_, register) = only(&mut c);
    let mut token = register.get_token().to_vec();
    token[0] ^= 0xFF;
    let answer = packet(
        MessageType::Acknowledgement,
        MessageClass::from(ResponseCode::CREATED.0),
        register.header.message_id,
        &token,
    );
    c.handle_datagram(ms(10), Target::Server, &bytes(&answer));
    assert!(events(&mut c).is_empty());
    assert_eq!(c.location(), None);
    assert!(c.poll_timeout().is_some(), "still awaiting its answer");
}

#[test]
fn update_before_registration_does_nothing() {
    let mut c = client();
    c.update(ms(0), &["lt=60"]);
    c.deregister(ms(0));
    assert!(sent(&mut c).is_empty());
    assert_eq!(c.poll_timeout(), None);
}

#[test]
fn update_posts_to_the_location() {
    let mut c = client();
    let register = registered(&mut c, ms(0));
    c.update(ms(1_000), &["lt=60"]);
    let (target, p) = only(&mut c);
    assert_eq!(target, Target::Server);
    assert_eq!(p.header.get_type(), MessageType::Confirmable);
    assert_eq!(p.header.code, MessageClass::Request(RequestType::Post));
    assert_eq!(strings(&p, CoapOption::UriPath), ["rd", "5"]);
    assert_eq!(strings(&p, CoapOption::UriQuery), ["lt=60"]);
    assert_eq!(p.header.message_id, register.header.message_id.wrapping_add(1));
    c.handle_datagram(ms(1_010), Target::Server, &bytes(&piggybacked(&p, ResponseCode::CHANGED)));
    assert_eq!(events(&mut c), vec![ClientEvent::Answered(Uplink::Update, ResponseCode::CHANGED)]);
    assert_eq!(c.location(), Some("rd/5"));
}

#[test]
fn deregister_deletes_the_location() {
    let mut c = client();
    registered(&mut c, ms(0));
    c.deregister(ms(1_000));
    let (_, p) = only(&mut c);
    assert_eq!(p.header.get_type(), MessageType::Confirmable);
    assert_eq!(p.header.code, MessageClass::Request(RequestType::Delete));
    assert_eq!(strings(&p, CoapOption::UriPath), ["rd", "5"]);
    assert!(p.payload.is_empty());
    assert_eq!(c.location(), None);
    c.handle_datagram(ms(1_010), Target::Server, &bytes(&piggybacked(&p, ResponseCode::DELETED)));
    assert_eq!(events(&mut c), vec![ClientEvent::Answered(Uplink::Deregister, ResponseCode::DELETED)]);
    c.deregister(ms(2_000));
    assert!(sent(&mut c).is_empty(), "not registered any more");
}

#[test]
fn send_posts_to_dp() {
    let mut c = client();
    c.send(ms(0), ContentFormat::SenmlCbor, &[0x81, 0xA1]);
    let (target, p) = only(&mut c);
    assert_eq!(target, Target::Server);
    assert_eq!(p.header.get_type(), MessageType::Confirmable);
    assert_eq!(p.header.code, MessageClass::Request(RequestType::Post));
    assert_eq!(strings(&p, CoapOption::UriPath), ["dp"]);
    assert_eq!(uint(&p, CoapOption::ContentFormat), Some(112));
    assert_eq!(p.payload, [0x81, 0xA1]);
    c.handle_datagram(ms(10), Target::Server, &bytes(&piggybacked(&p, ResponseCode::CHANGED)));
    assert_eq!(events(&mut c), vec![ClientEvent::Answered(Uplink::Send, ResponseCode::CHANGED)]);
}

// ----- retransmission -----

#[test]
fn an_unanswered_uplink_is_retransmitted_with_back_off_then_failed() {
    let mut c = client();
    let t0 = ms(1_000);
    c.register(t0, &["ep=dev"], LINKS);
    let (target, datagram) = sent(&mut c).pop().unwrap();
    assert_eq!(target, Target::Server);
    let first = c.poll_timeout().unwrap();
    let timeout = first - t0;
    assert!(timeout >= Duration::from_secs(2) && timeout < Duration::from_secs(3), "{timeout:?}");
    let mut at = t0;
    let mut wait = timeout;
    for n in 1..=4 {
        at = at + wait;
        assert_eq!(c.poll_timeout(), Some(at));
        c.handle_timeout(ms(at.as_millis() - 1));
        assert!(sent(&mut c).is_empty(), "retransmission {n} too early");
        c.handle_timeout(at);
        assert_eq!(sent(&mut c), vec![(Target::Server, datagram.clone())], "retransmission {n}");
        assert!(events(&mut c).is_empty());
        wait *= 2;
    }
    at = at + wait;
    assert_eq!(at - t0, timeout * 31);
    c.handle_timeout(ms(at.as_millis() - 1));
    assert!(events(&mut c).is_empty());
    c.handle_timeout(at);
    assert!(sent(&mut c).is_empty(), "no fifth retransmission");
    assert_eq!(events(&mut c), vec![ClientEvent::Failed(Uplink::Register)]);
    assert_eq!(c.poll_timeout(), None);
}

#[test]
fn the_first_timeout_is_random_between_ack_timeout_and_1_5_times_it() {
    let timeouts: std::collections::BTreeSet<Duration> = (0..16)
        .map(|seed| {
            let mut c = ClientBinding::new(CoapConfig { seed, ..CoapConfig::default() });
            c.register(ms(0), &["ep=dev"], LINKS);
            c.poll_timeout().unwrap() - ms(0)
        })
        .collect();
    assert!(timeouts.iter().all(|t| *t >= Duration::from_secs(2) && *t < Duration::from_secs(3)), "{timeouts:?}");
    assert!(timeouts.len() >= 8, "spread out: {timeouts:?}");
}

#[test]
fn an_empty_ack_stops_retransmission_and_the_separate_response_is_matched() {
    let mut c = client();
    c.register(ms(0), &["ep=dev"], LINKS);
    let (_, register) = only(&mut c);
    let ack = packet(MessageType::Acknowledgement, MessageClass::Empty, register.header.message_id, &[]);
    c.handle_datagram(ms(100), Target::Server, &bytes(&ack));
    assert!(sent(&mut c).is_empty());
    assert!(events(&mut c).is_empty());
    // No more copies; the separate response has until EXCHANGE_LIFETIME.
    assert_eq!(c.poll_timeout(), Some(ms(100 + 247_000)));
    for s in [3u64, 10, 60] {
        c.handle_timeout(ms(s * 1000));
        assert!(sent(&mut c).is_empty(), "no copy at {s} s");
    }
    assert!(events(&mut c).is_empty(), "not failed");
    // The separate response: CON, the same token, the server's message id.
    let mut response =
        packet(MessageType::Confirmable, MessageClass::from(ResponseCode::CREATED.0), 0x9001, register.get_token());
    response.add_option(CoapOption::LocationPath, b"rd".to_vec());
    response.add_option(CoapOption::LocationPath, b"12".to_vec());
    c.handle_datagram(ms(61_000), Target::Server, &bytes(&response));
    let (target, empty_ack) = only(&mut c);
    assert_eq!(target, Target::Server);
    assert_eq!(empty_ack.header.get_type(), MessageType::Acknowledgement);
    assert_eq!(empty_ack.header.message_id, 0x9001);
    assert_eq!(empty_ack.header.code, MessageClass::Empty);
    assert_eq!(events(&mut c), vec![ClientEvent::Answered(Uplink::Register, ResponseCode::CREATED)]);
    assert_eq!(c.location(), Some("rd/12"));
}

#[test]
fn a_separate_response_with_another_token_is_not_matched() {
    let mut c = client();
    c.register(ms(0), &["ep=dev"], LINKS);
    let (_, register) = only(&mut c);
    let mut token = register.get_token().to_vec();
    token[0] ^= 0xFF;
    let response = packet(MessageType::Confirmable, MessageClass::from(ResponseCode::CREATED.0), 0x9002, &token);
    c.handle_datagram(ms(10), Target::Server, &bytes(&response));
    assert!(events(&mut c).is_empty());
    assert_eq!(c.location(), None);
    assert!(c.poll_timeout().is_some());
}

// ----- server requests -----

#[test]
fn a_get_is_a_read_with_its_accept() {
    let mut get = server_request(MessageType::Confirmable, RequestType::Get, 1, &["5", "0", "3"]);
    get.add_option(CoapOption::Accept, uint_bytes(112));
    assert_eq!(
        operation_of(&get),
        Ok(Operation::Read { path: Path::resource(5, 0, 3), accept: Some(ContentFormat::SenmlCbor) })
    );
    let plain = server_request(MessageType::Confirmable, RequestType::Get, 2, &["3", "0"]);
    assert_eq!(operation_of(&plain), Ok(Operation::Read { path: Path::instance(3, 0), accept: None }));
}

#[test]
fn a_get_with_observe_0_is_an_observe() {
    let mut get = server_request(MessageType::Confirmable, RequestType::Get, 1, &["5", "0"]);
    get.add_option(CoapOption::Observe, Vec::new());
    get.add_option(CoapOption::Accept, uint_bytes(112));
    assert_eq!(
        operation_of(&get),
        Ok(Operation::Observe { path: Path::instance(5, 0), accept: Some(ContentFormat::SenmlCbor) })
    );
}

#[test]
fn a_get_with_observe_1_cancels_the_observation() {
    let mut get = server_request(MessageType::Confirmable, RequestType::Get, 1, &["5", "0", "3"]);
    get.add_option(CoapOption::Observe, vec![1]);
    assert_eq!(operation_of(&get), Ok(Operation::CancelObservation { path: Path::resource(5, 0, 3) }));
}

#[test]
fn a_put_with_a_content_format_is_a_write() {
    let mut put = server_request(MessageType::Confirmable, RequestType::Put, 1, &["5", "0", "1"]);
    put.add_option(CoapOption::ContentFormat, uint_bytes(0));
    put.payload = b"coap://s/fw/fw.bin".to_vec();
    assert_eq!(
        operation_of(&put),
        Ok(Operation::Write {
            path: Path::resource(5, 0, 1),
            format: ContentFormat::Text,
            payload: bytes::Bytes::from_static(b"coap://s/fw/fw.bin"),
        })
    );
}

#[test]
fn a_put_without_a_content_format_is_4_15() {
    let mut put = server_request(MessageType::Confirmable, RequestType::Put, 1, &["5", "0", "1"]);
    put.payload = b"x".to_vec();
    assert_eq!(operation_of(&put), Err(ResponseCode::UNSUPPORTED_CONTENT_FORMAT));
}

#[test]
fn a_put_with_block1_is_a_write_block() {
    let mut put = server_request(MessageType::Confirmable, RequestType::Put, 1, &["5", "0", "0"]);
    put.add_option(CoapOption::ContentFormat, uint_bytes(42));
    let block = Block { number: 2, more: true, size: 512 };
    put.add_option(CoapOption::Block1, uint_bytes(block_value(block)));
    put.add_option(CoapOption::Size1, uint_bytes(4096));
    put.payload = vec![7; 512];
    assert_eq!(
        operation_of(&put),
        Ok(Operation::WriteBlock {
            path: Path::resource(5, 0, 0),
            format: ContentFormat::Opaque,
            block,
            total_size: Some(4096),
            payload: bytes::Bytes::from(vec![7; 512]),
        })
    );
    // Without Size1, no total size.
    let mut last = server_request(MessageType::Confirmable, RequestType::Put, 2, &["5", "0", "0"]);
    last.add_option(CoapOption::ContentFormat, uint_bytes(42));
    let end = Block { number: 7, more: false, size: 512 };
    last.add_option(CoapOption::Block1, uint_bytes(block_value(end)));
    last.payload = vec![1; 10];
    assert!(matches!(
        operation_of(&last),
        Ok(Operation::WriteBlock { block, total_size: None, .. }) if block == end
    ));
}

#[test]
fn a_put_with_pmin_and_pmax_and_no_payload_writes_attributes() {
    let mut put = server_request(MessageType::Confirmable, RequestType::Put, 1, &["5", "0", "3"]);
    put.add_option(CoapOption::UriQuery, b"pmin=10".to_vec());
    put.add_option(CoapOption::UriQuery, b"pmax=60".to_vec());
    assert_eq!(
        operation_of(&put),
        Ok(Operation::WriteAttributes {
            path: Path::resource(5, 0, 3),
            attributes: Attributes { pmin: Some(10), pmax: Some(60) },
        })
    );
    let mut only_pmax = server_request(MessageType::Confirmable, RequestType::Put, 2, &["5", "0"]);
    only_pmax.add_option(CoapOption::UriQuery, b"pmax=5".to_vec());
    assert_eq!(
        operation_of(&only_pmax),
        Ok(Operation::WriteAttributes {
            path: Path::instance(5, 0),
            attributes: Attributes { pmin: None, pmax: Some(5) },
        })
    );
}

#[test]
fn a_post_with_no_payload_is_an_execute() {
    let post = server_request(MessageType::Confirmable, RequestType::Post, 1, &["5", "0", "2"]);
    assert_eq!(operation_of(&post), Ok(Operation::Execute { path: Path::resource(5, 0, 2) }));
}

#[test]
fn a_delete_is_4_05() {
    let delete = server_request(MessageType::Confirmable, RequestType::Delete, 1, &["5", "0"]);
    assert_eq!(operation_of(&delete), Err(ResponseCode::METHOD_NOT_ALLOWED));
}

#[test]
fn a_non_numeric_path_is_4_04() {
    let get = server_request(MessageType::Confirmable, RequestType::Get, 1, &["fw", "0"]);
    assert_eq!(operation_of(&get), Err(ResponseCode::NOT_FOUND));
    let deep = server_request(MessageType::Confirmable, RequestType::Get, 2, &["1", "2", "3", "4", "5"]);
    assert_eq!(operation_of(&deep), Err(ResponseCode::NOT_FOUND));
}

#[test]
fn an_unknown_critical_option_is_4_02() {
    let mut get = server_request(MessageType::Confirmable, RequestType::Get, 1, &["5", "0", "3"]);
    get.add_option(CoapOption::Unknown(CRITICAL), vec![1]);
    assert_eq!(operation_of(&get), Err(ResponseCode::new(4, 2)));
    // An unknown elective option is ignored.
    let mut elective = server_request(MessageType::Confirmable, RequestType::Get, 2, &["5", "0", "3"]);
    elective.add_option(CoapOption::Unknown(CRITICAL - 1), vec![1]);
    assert!(matches!(operation_of(&elective), Ok(Operation::Read { .. })));
}

#[test]
fn an_unknown_accept_is_4_06() {
    let mut get = server_request(MessageType::Confirmable, RequestType::Get, 1, &["5", "0", "3"]);
    get.add_option(CoapOption::Accept, uint_bytes(9999));
    assert_eq!(operation_of(&get), Err(ResponseCode::NOT_ACCEPTABLE));
}

// ----- responses and duplicates -----

#[test]
fn respond_piggybacks_on_the_ack() {
    let mut c = client();
    let mut observe = server_request(MessageType::Confirmable, RequestType::Get, 0x4242, &["5", "0"]);
    observe.add_option(CoapOption::Observe, Vec::new());
    c.handle_datagram(ms(0), Target::Server, &bytes(&observe));
    let Some(ClientEvent::Request(handle, Ok(Operation::Observe { .. }))) = c.poll_event() else { panic!() };
    c.respond(ms(5), &handle, ResponseCode::CONTENT, Some(ContentFormat::SenmlCbor), b"abc", Some(7));
    let (target, ack) = only(&mut c);
    assert_eq!(target, Target::Server);
    assert_eq!(ack.header.get_type(), MessageType::Acknowledgement);
    assert_eq!(ack.header.message_id, 0x4242);
    assert_eq!(ack.get_token(), observe.get_token());
    assert_eq!(code(&ack), ResponseCode::CONTENT);
    assert_eq!(uint(&ack, CoapOption::Observe), Some(7));
    assert_eq!(uint(&ack, CoapOption::ContentFormat), Some(112));
    assert_eq!(ack.payload, b"abc");
    // Without Observe or format, neither option.
    let read = server_request(MessageType::Confirmable, RequestType::Get, 0x4243, &["5", "0", "3"]);
    c.handle_datagram(ms(10), Target::Server, &bytes(&read));
    let Some(ClientEvent::Request(handle, _)) = c.poll_event() else { panic!() };
    c.respond(ms(11), &handle, ResponseCode::NOT_FOUND, None, &[], None);
    let (_, ack) = only(&mut c);
    assert_eq!((ack.header.message_id, code(&ack)), (0x4243, ResponseCode::NOT_FOUND));
    assert!(ack.get_option(CoapOption::Observe).is_none());
    assert!(ack.get_option(CoapOption::ContentFormat).is_none());
}

#[test]
fn a_non_confirmable_request_gets_a_non_confirmable_response() {
    let mut c = client();
    let read = server_request(MessageType::NonConfirmable, RequestType::Get, 0x4300, &["3", "0"]);
    c.handle_datagram(ms(0), Target::Server, &bytes(&read));
    let Some(ClientEvent::Request(handle, _)) = c.poll_event() else { panic!() };
    c.respond(ms(1), &handle, ResponseCode::CONTENT, Some(ContentFormat::Text), b"x", None);
    let (_, response) = only(&mut c);
    assert_eq!(response.header.get_type(), MessageType::NonConfirmable);
    assert_eq!(response.get_token(), read.get_token());
}

#[test]
fn a_duplicate_server_request_is_answered_again_from_memory() {
    let mut c = client();
    let execute = server_request(MessageType::Confirmable, RequestType::Post, 0x4400, &["5", "0", "2"]);
    c.handle_datagram(ms(0), Target::Server, &bytes(&execute));
    let Some(ClientEvent::Request(handle, Ok(Operation::Execute { .. }))) = c.poll_event() else { panic!() };
    c.respond(ms(1), &handle, ResponseCode::CHANGED, None, &[], None);
    let answer = sent(&mut c);
    assert_eq!(answer.len(), 1);
    // The server did not hear the ACK and sends the request again.
    c.handle_datagram(ms(2_500), Target::Server, &bytes(&execute));
    assert_eq!(sent(&mut c), answer, "the identical bytes");
    assert!(events(&mut c).is_empty(), "not executed twice");
    // Another message id is a new request.
    let next = server_request(MessageType::Confirmable, RequestType::Post, 0x4401, &["5", "0", "2"]);
    c.handle_datagram(ms(3_000), Target::Server, &bytes(&next));
    assert!(matches!(events(&mut c)[..], [ClientEvent::Request(_, Ok(Operation::Execute { .. }))]));
}

#[test]

fn a_duplicate_server_request_before_the_answer_is_not_surfaced_again() {
    let mut c = client();
    let execute = server_request(MessageType::Confirmable, RequestType::Post, 0x4500, &["5", "0", "2"]);
    c.handle_datagram(ms(0), Target::Server, &bytes(&execute));
    assert_eq!(events(&mut c).len(), 1);
    // The server retransmits before the application answered.
    c.handle_datagram(ms(2_500), Target::Server, &bytes(&execute));
    assert!(events(&mut c).is_empty(), "one Execute, not two");
}

// ----- notifications -----

#[test]
fn notify_builds_a_non_confirmable_2_05_with_the_observation_token() {
    let mut c = client();
    let token = [0xA1, 0xA2, 0xA3];
    c.notify(ms(0), &token, 0x0123_4567, ContentFormat::SenmlCbor, b"state", false);
    let (target, n) = only(&mut c);
    assert_eq!(target, Target::Server);
    assert_eq!(n.header.get_type(), MessageType::NonConfirmable);
    assert_eq!(code(&n), ResponseCode::CONTENT);
    assert_eq!(n.get_token(), token);
    let observe = n.get_first_option(CoapOption::Observe).unwrap();
    assert!(observe.len() <= 3, "{observe:?}");
    assert_eq!(uint(&n, CoapOption::Observe), Some(0x23_4567), "24 bits");
    assert_eq!(uint(&n, CoapOption::ContentFormat), Some(112));
    assert_eq!(n.payload, b"state");
    assert_eq!(c.poll_timeout(), None, "a NON is not retransmitted");
    // The next one has the next message id.
    c.notify(ms(1), &token, 1, ContentFormat::SenmlCbor, b"s2", false);
    let (_, m) = only(&mut c);
    assert_eq!(m.header.message_id, n.header.message_id.wrapping_add(1));
    assert_eq!(uint(&m, CoapOption::Observe), Some(1));
}

#[test]
fn a_confirmable_notification_is_retransmitted_and_a_reset_ends_the_observation() {
    let mut c = client();
    let token = [0xB1, 0xB2];
    c.notify(ms(0), &token, 9, ContentFormat::SenmlCbor, b"state", true);
    let (_, datagram) = sent(&mut c).pop().unwrap();
    let n = Packet::from_bytes(&datagram).unwrap();
    assert_eq!(n.header.get_type(), MessageType::Confirmable);
    assert_eq!(n.get_token(), token);
    assert_eq!(uint(&n, CoapOption::Observe), Some(9));
    let first = c.poll_timeout().unwrap();
    c.handle_timeout(first);
    assert_eq!(sent(&mut c), vec![(Target::Server, datagram)]);
    let rst = packet(MessageType::Reset, MessageClass::Empty, n.header.message_id, &[]);
    c.handle_datagram(first, Target::Server, &bytes(&rst));
    assert_eq!(events(&mut c), vec![ClientEvent::ObservationReset(token.to_vec())]);
    assert_eq!(c.poll_timeout(), None);
}

#[test]
fn an_acknowledged_notification_is_not_retransmitted() {
    let mut c = client();
    c.notify(ms(0), &[1], 2, ContentFormat::SenmlCbor, b"s", true);
    let (_, n) = only(&mut c);
    let ack = packet(MessageType::Acknowledgement, MessageClass::Empty, n.header.message_id, &[]);
    c.handle_datagram(ms(10), Target::Server, &bytes(&ack));
    c.handle_timeout(ms(10_000));
    assert!(sent(&mut c).is_empty());
    assert!(events(&mut c).is_empty());
}

// ----- image fetch -----

#[test]
fn fetch_is_a_block2_get_to_the_download_host() {
    let mut c = client();
    c.fetch(ms(0), &["fw", "fw.bin"], 3, 512);
    let (target, get) = only(&mut c);
    assert_eq!(target, Target::Download);
    assert_eq!(get.header.get_type(), MessageType::Confirmable);
    assert_eq!(get.header.code, MessageClass::Request(RequestType::Get));
    assert_eq!(strings(&get, CoapOption::UriPath), ["fw", "fw.bin"]);
    assert_eq!(uint(&get, CoapOption::Block2), Some((3 << 4) | 5));
    // Its retransmissions go to the download host too.
    let first = c.poll_timeout().unwrap();
    c.handle_timeout(first);
    assert!(matches!(sent(&mut c)[..], [(Target::Download, _)]));
}

#[test]
fn the_answer_to_a_fetch_is_a_block_event() {
    let mut c = client();
    c.fetch(ms(0), &["fw", "fw.bin"], 3, 512);
    let (_, get) = only(&mut c);
    let mut answer = piggybacked(&get, ResponseCode::CONTENT);
    answer.add_option(CoapOption::ETag, vec![1, 2, 3, 4, 5, 6, 7, 8]);
    answer.add_option(CoapOption::Block2, uint_bytes(block_value(Block { number: 3, more: true, size: 512 })));
    answer.add_option(CoapOption::Size2, uint_bytes(4096));
    answer.payload = vec![0x5A; 512];
    c.handle_datagram(ms(10), Target::Download, &bytes(&answer));
    assert_eq!(
        events(&mut c),
        vec![ClientEvent::Block {
            code: ResponseCode::CONTENT,
            block: Some(Block { number: 3, more: true, size: 512 }),
            etag: Some(vec![1, 2, 3, 4, 5, 6, 7, 8]),
            size2: Some(4096),
            payload: vec![0x5A; 512],
        }]
    );
    assert_eq!(c.poll_timeout(), None);
}

#[test]
fn an_error_answer_to_a_fetch_is_a_block_event_without_a_block() {
    let mut c = client();
    c.fetch(ms(0), &["fw", "gone.bin"], 0, 1024);
    let (_, get) = only(&mut c);
    c.handle_datagram(ms(10), Target::Download, &bytes(&piggybacked(&get, ResponseCode::NOT_FOUND)));
    assert_eq!(
        events(&mut c),
        vec![ClientEvent::Block {
            code: ResponseCode::NOT_FOUND,
            block: None,
            etag: None,
            size2: None,
            payload: vec![]
        }]
    );
}

// ----- ping and malformed -----

#[test]
fn a_coap_ping_is_answered_with_a_reset() {
    let mut c = client();
    let ping = packet(MessageType::Confirmable, MessageClass::Empty, 0x5555, &[]);
    c.handle_datagram(ms(0), Target::Server, &bytes(&ping));
    let (target, rst) = only(&mut c);
    assert_eq!(target, Target::Server);
    assert_eq!(rst.header.get_type(), MessageType::Reset);
    assert_eq!(rst.header.message_id, 0x5555);
    assert_eq!(rst.header.code, MessageClass::Empty);
    assert!(events(&mut c).is_empty());
}

#[test]
fn a_datagram_of_another_version_is_ignored() {
    let mut c = client();
    let mut datagram = bytes(&server_request(MessageType::Confirmable, RequestType::Get, 1, &["3", "0"]));
    datagram[0] = (datagram[0] & 0x3F) | 0x80;
    c.handle_datagram(ms(0), Target::Server, &datagram);
    c.handle_datagram(ms(0), Target::Server, &[0x40, 0x01]);
    assert!(sent(&mut c).is_empty());
    assert!(events(&mut c).is_empty());
}

#[test]
fn a_separate_response_that_never_comes_fails_after_exchange_lifetime() {
    let mut c = client();
    c.register(ms(0), &["ep=dev"], LINKS);
    let (_, register) = only(&mut c);
    let ack = packet(MessageType::Acknowledgement, MessageClass::Empty, register.header.message_id, &[]);
    c.handle_datagram(ms(100), Target::Server, &bytes(&ack));
    c.handle_timeout(ms(247_099));
    assert!(events(&mut c).is_empty(), "not yet");
    c.handle_timeout(ms(247_100));
    assert!(sent(&mut c).is_empty(), "no copy after an empty ACK");
    assert_eq!(events(&mut c), vec![ClientEvent::Failed(Uplink::Register)]);
    assert_eq!(c.poll_timeout(), None);
}

// ----- what the device example needs -----

/// The one event, a server request.
fn request_event(c: &mut ClientBinding) -> (RequestHandle, Result<Operation, ResponseCode>) {
    let mut out = events(c);
    assert_eq!(out.len(), 1, "{out:?}");
    match out.pop().unwrap() {
        ClientEvent::Request(handle, operation) => (handle, operation),
        other => panic!("not a request: {other:?}"),
    }
}

#[test]
fn a_get_accepting_link_format_is_a_discover_answered_in_link_format() {
    let mut c = client();
    let mut get = server_request(MessageType::Confirmable, RequestType::Get, 0x4600, &["5", "0"]);
    get.add_option(CoapOption::Accept, uint_bytes(40));
    c.handle_datagram(ms(0), Target::Server, &bytes(&get));
    let (handle, operation) = request_event(&mut c);
    assert_eq!(operation, Ok(Operation::Read { path: Path::instance(5, 0), accept: Some(ContentFormat::LinkFormat) }));
    assert_eq!(handle.accept(), Some(ContentFormat::LinkFormat));
    let links = b"</5/0>,</5/0/1>,</5/0/3>";
    c.respond(ms(1), &handle, ResponseCode::CONTENT, Some(ContentFormat::LinkFormat), links, None);
    let (_, answer) = only(&mut c);
    assert_eq!(code(&answer), ResponseCode::CONTENT);
    assert_eq!(uint(&answer, CoapOption::ContentFormat), Some(40));
    assert_eq!(answer.payload, links);
}

#[test]
fn the_default_config_deduplicates() {
    assert!(ClientConfig::default().deduplicate);
    assert_eq!(ClientConfig::default().coap, CoapConfig::default());
}

#[test]
fn without_deduplication_every_copy_of_a_request_is_surfaced_and_answered_again() {
    let mut c = ClientBinding::with_config(ClientConfig { deduplicate: false, ..ClientConfig::default() });
    let execute = server_request(MessageType::Confirmable, RequestType::Post, 0x4700, &["5", "0", "2"]);
    c.handle_datagram(ms(0), Target::Server, &bytes(&execute));
    let (first, operation) = request_event(&mut c);
    assert_eq!(operation, Ok(Operation::Execute { path: Path::resource(5, 0, 2) }));
    // A copy before the answer: surfaced too.
    c.handle_datagram(ms(1), Target::Server, &bytes(&execute));
    let (second, _) = request_event(&mut c);
    c.respond(ms(2), &first, ResponseCode::CHANGED, None, &[], None);
    c.respond(ms(2), &second, ResponseCode::CHANGED, None, &[], None);
    assert_eq!(sent(&mut c).len(), 2);
    // A copy after the answer: surfaced again, nothing sent from memory.
    c.handle_datagram(ms(2_500), Target::Server, &bytes(&execute));
    assert!(sent(&mut c).is_empty(), "no remembered answer");
    let (third, _) = request_event(&mut c);
    c.respond(ms(2_501), &third, ResponseCode::METHOD_NOT_ALLOWED, None, &[], None);
    let (_, ack) = only(&mut c);
    assert_eq!((ack.header.message_id, code(&ack)), (0x4700, ResponseCode::METHOD_NOT_ALLOWED), "the new answer");
}

#[test]
fn a_non_response_takes_the_clients_next_random_based_message_id() {
    let mut firsts = std::collections::BTreeSet::new();
    for seed in 0..8 {
        let mut c = ClientBinding::new(CoapConfig { seed, ..CoapConfig::default() });
        c.send(ms(0), ContentFormat::SenmlCbor, b"x");
        let (_, send) = only(&mut c);
        firsts.insert(send.header.message_id);
        let read = server_request(MessageType::NonConfirmable, RequestType::Get, 0x4800, &["3", "0"]);
        c.handle_datagram(ms(1), Target::Server, &bytes(&read));
        let (handle, _) = request_event(&mut c);
        c.respond(ms(2), &handle, ResponseCode::CONTENT, Some(ContentFormat::Text), b"x", None);
        let (_, response) = only(&mut c);
        assert_eq!(response.header.get_type(), MessageType::NonConfirmable);
        assert_eq!(response.header.message_id, send.header.message_id.wrapping_add(1), "seed {seed}");
        c.send(ms(3), ContentFormat::SenmlCbor, b"y");
        let (_, next) = only(&mut c);
        assert_eq!(next.header.message_id, send.header.message_id.wrapping_add(2), "one sequence, no reuse");
    }
    assert!(firsts.len() >= 7, "the sequence starts at random: {firsts:?}");
}

#[test]
fn a_ping_from_the_download_host_is_reset_there() {
    let mut c = client();
    let ping = packet(MessageType::Confirmable, MessageClass::Empty, 0x5556, &[]);
    c.handle_datagram(ms(0), Target::Download, &bytes(&ping));
    let (target, rst) = only(&mut c);
    assert_eq!(target, Target::Download);
    assert_eq!((rst.header.get_type(), rst.header.message_id), (MessageType::Reset, 0x5556));
    assert!(events(&mut c).is_empty());
}

#[test]
fn a_request_from_the_download_host_is_reset_not_surfaced() {
    let mut c = client();
    let execute = server_request(MessageType::Confirmable, RequestType::Post, 0x4900, &["5", "0", "2"]);
    c.handle_datagram(ms(0), Target::Download, &bytes(&execute));
    let (target, rst) = only(&mut c);
    assert_eq!(target, Target::Download);
    assert_eq!((rst.header.get_type(), rst.header.message_id), (MessageType::Reset, 0x4900));
    assert!(events(&mut c).is_empty(), "only the server operates on the client");
    let non = server_request(MessageType::NonConfirmable, RequestType::Get, 0x4901, &["3", "0"]);
    c.handle_datagram(ms(1), Target::Download, &bytes(&non));
    assert!(sent(&mut c).is_empty());
    assert!(events(&mut c).is_empty());
    // The same request from the server is one.
    c.handle_datagram(ms(2), Target::Server, &bytes(&execute));
    assert!(matches!(request_event(&mut c), (_, Ok(Operation::Execute { .. }))));
}

#[test]
fn a_separate_block_from_the_download_host_is_acknowledged_there() {
    let mut c = client();
    c.fetch(ms(0), &["fw"], 0, 512);
    let (_, get) = only(&mut c);
    let ack = packet(MessageType::Acknowledgement, MessageClass::Empty, get.header.message_id, &[]);
    c.handle_datagram(ms(10), Target::Download, &bytes(&ack));
    let mut response =
        packet(MessageType::Confirmable, MessageClass::from(ResponseCode::CONTENT.0), 0x7001, get.get_token());
    response.add_option(CoapOption::Block2, uint_bytes(block_value(Block { number: 0, more: false, size: 512 })));
    response.payload = vec![1; 100];
    c.handle_datagram(ms(20), Target::Download, &bytes(&response));
    let (target, empty_ack) = only(&mut c);
    assert_eq!(target, Target::Download);
    assert_eq!((empty_ack.header.get_type(), empty_ack.header.message_id), (MessageType::Acknowledgement, 0x7001));
    assert!(matches!(events(&mut c)[..], [ClientEvent::Block { code: ResponseCode::CONTENT, .. }]));
}

#[test]
fn the_answer_to_a_block1_block_carries_its_block1_back() {
    let mut c = client();
    let push = |message_id: u16, block: Block| {
        let mut put = server_request(MessageType::Confirmable, RequestType::Put, message_id, &["5", "0", "0"]);
        put.add_option(CoapOption::ContentFormat, uint_bytes(42));
        put.add_option(CoapOption::Block1, uint_bytes(block_value(block)));
        put.payload = vec![0; 64];
        put
    };
    let middle = Block { number: 4, more: true, size: 64 };
    c.handle_datagram(ms(0), Target::Server, &bytes(&push(0x4A00, middle)));
    let (handle, _) = request_event(&mut c);
    c.respond(ms(1), &handle, ResponseCode::CONTINUE, None, &[], None);
    let (_, answer) = only(&mut c);
    assert_eq!(uint(&answer, CoapOption::Block1).and_then(parse_block), Some(middle));
    // The last block: 2.04 with M clear, even if the request had it set.
    c.handle_datagram(ms(2), Target::Server, &bytes(&push(0x4A01, Block { number: 5, more: true, size: 64 })));
    let (handle, _) = request_event(&mut c);
    c.respond(ms(3), &handle, ResponseCode::CHANGED, None, &[], None);
    let (_, answer) = only(&mut c);
    assert_eq!(
        uint(&answer, CoapOption::Block1).and_then(parse_block),
        Some(Block { number: 5, more: false, size: 64 })
    );
    // A refused block, and a request without Block1: no Block1.
    c.handle_datagram(ms(4), Target::Server, &bytes(&push(0x4A02, middle)));
    let (handle, _) = request_event(&mut c);
    c.respond(ms(5), &handle, ResponseCode::new(4, 8), None, &[], None);
    assert_eq!(only(&mut c).1.get_option(CoapOption::Block1), None);
    let mut write = server_request(MessageType::Confirmable, RequestType::Put, 0x4A03, &["5", "0", "1"]);
    write.add_option(CoapOption::ContentFormat, uint_bytes(0));
    write.payload = b"coap://h/fw".to_vec();
    c.handle_datagram(ms(6), Target::Server, &bytes(&write));
    let (handle, _) = request_event(&mut c);
    c.respond(ms(7), &handle, ResponseCode::CHANGED, None, &[], None);
    assert_eq!(only(&mut c).1.get_option(CoapOption::Block1), None);
}

#[test]
fn a_cancel_observation_keeps_its_accept_on_the_handle() {
    let mut c = client();
    let mut get = server_request(MessageType::Confirmable, RequestType::Get, 0x4B00, &["5", "0", "3"]);
    get.add_option(CoapOption::Observe, vec![1]);
    get.add_option(CoapOption::Accept, uint_bytes(112));
    c.handle_datagram(ms(0), Target::Server, &bytes(&get));
    let (handle, operation) = request_event(&mut c);
    assert_eq!(operation, Ok(Operation::CancelObservation { path: Path::resource(5, 0, 3) }));
    assert_eq!(handle.accept(), Some(ContentFormat::SenmlCbor));
    assert_eq!(handle.token(), get.get_token());
    let plain = server_request(MessageType::Confirmable, RequestType::Get, 0x4B01, &["5", "0", "3"]);
    c.handle_datagram(ms(1), Target::Server, &bytes(&plain));
    assert_eq!(request_event(&mut c).0.accept(), None);
}

#[test]
fn write_attributes_query_items_are_on_the_handle_as_sent() {
    let mut c = client();
    let mut put = server_request(MessageType::Confirmable, RequestType::Put, 0x4C00, &["5", "0", "3"]);
    put.add_option(CoapOption::UriQuery, b"pmin".to_vec());
    put.add_option(CoapOption::UriQuery, b"pmax=30".to_vec());
    c.handle_datagram(ms(0), Target::Server, &bytes(&put));
    let (handle, operation) = request_event(&mut c);
    assert_eq!(
        operation,
        Ok(Operation::WriteAttributes {
            path: Path::resource(5, 0, 3),
            attributes: Attributes { pmin: None, pmax: Some(30) }
        })
    );
    assert_eq!(handle.query(), ["pmin", "pmax=30"], "the removal of pmin is visible");
    let plain = server_request(MessageType::Confirmable, RequestType::Get, 0x4C01, &["5", "0", "3"]);
    c.handle_datagram(ms(1), Target::Server, &bytes(&plain));
    assert!(request_event(&mut c).0.query().is_empty());
}

#[test]
fn abandon_stops_retransmission_and_a_late_answer_matches_nothing() {
    let mut c = client();
    c.fetch(ms(0), &["fw"], 7, 1024);
    let (_, get) = only(&mut c);
    c.send(ms(0), ContentFormat::SenmlCbor, b"s");
    let (_, send) = only(&mut c);
    assert!(c.awaiting(Uplink::Fetch) && c.awaiting(Uplink::Send));
    c.abandon(Uplink::Fetch);
    assert!(!c.awaiting(Uplink::Fetch));
    assert!(c.awaiting(Uplink::Send), "only the kind abandoned");
    c.handle_timeout(ms(3_000));
    let copies = sent_packets(&mut c);
    assert_eq!(copies.len(), 1, "{copies:?}");
    assert_eq!(copies[0].1.header.message_id, send.header.message_id, "the Send's copy, not the fetch's");
    c.handle_datagram(ms(3_100), Target::Download, &bytes(&piggybacked(&get, ResponseCode::CONTENT)));
    assert!(events(&mut c).is_empty(), "the late block matches nothing");
    c.abandon(Uplink::Send);
    assert_eq!(c.poll_timeout(), None);
    c.handle_timeout(ms(200_000));
    assert!(events(&mut c).is_empty(), "an abandoned uplink never fails");
}

#[test]
fn awaiting_follows_an_uplink_until_its_answer() {
    let mut c = client();
    assert!(!c.awaiting(Uplink::Register));
    c.register(ms(0), &["ep=dev"], LINKS);
    let (_, register) = only(&mut c);
    assert!(c.awaiting(Uplink::Register));
    assert!(!c.awaiting(Uplink::Update));
    c.handle_datagram(ms(5), Target::Server, &bytes(&piggybacked(&register, ResponseCode::CREATED)));
    assert!(!c.awaiting(Uplink::Register));
    // And until it fails.
    c.send(ms(10), ContentFormat::SenmlCbor, b"s");
    for at in [3_000, 10_000, 20_000, 40_000, 80_000, 200_000] {
        c.handle_timeout(ms(at));
    }
    assert!(events(&mut c).contains(&ClientEvent::Failed(Uplink::Send)));
    assert!(!c.awaiting(Uplink::Send));
}

#[test]
fn tokens_are_8_random_bytes() {
    let mut c = client();
    c.register(ms(0), &["ep=dev"], LINKS);
    c.fetch(ms(0), &["fw"], 0, 512);
    let tokens: Vec<Vec<u8>> = sent_packets(&mut c).iter().map(|(_, p)| p.get_token().to_vec()).collect();
    assert!(tokens.iter().all(|t| t.len() == 8), "{tokens:?}");
    assert_ne!(tokens[0], tokens[1]);
}

#[test]
fn a_path_segment_of_65535_is_4_04() {
    let get = server_request(MessageType::Confirmable, RequestType::Get, 1, &["5", "65535"]);
    assert_eq!(operation_of(&get), Err(ResponseCode::NOT_FOUND));
    let ok = server_request(MessageType::Confirmable, RequestType::Get, 2, &["5", "65534"]);
    assert!(matches!(operation_of(&ok), Ok(Operation::Read { .. })));
}

#[test]
fn an_unmatched_confirmable_response_is_acknowledged_where_it_came_from() {
    let mut c = client();
    let stray = packet(MessageType::Confirmable, MessageClass::from(ResponseCode::CONTENT.0), 0x7100, &[9; 8]);
    c.handle_datagram(ms(0), Target::Download, &bytes(&stray));
    let (target, ack) = only(&mut c);
    assert_eq!(target, Target::Download);
    assert_eq!((ack.header.get_type(), ack.header.message_id), (MessageType::Acknowledgement, 0x7100));
    c.handle_datagram(ms(1), Target::Server, &bytes(&stray));
    assert_eq!(only(&mut c).0, Target::Server);
    assert!(events(&mut c).is_empty());
}
