//! The endpoint's rules one by one: the registration interface, method and
//! path dispatch, Send, Block2 image serving, tokens and demultiplexing,
//! observations and their freshness, the Block1 push, the bounds, time, and
//! the token generator.

extern crate std;

use alloc::format;
use alloc::string::ToString;
use alloc::vec;

use super::*;
use crate::codec;
use crate::model::{Protocol, Record, Registry, Value};
use crate::server::{Delivery, Failure, MemoryImage, Outcome, Step, Strategy, TaskEvent};

const LINKS: &[u8] = b"</1/0>,</3/0>,</5>;ver=1.1,</5/0>";
const IMAGE: &str = "fw.bin";
const IMAGE_SIZE: usize = 3000;
/// SenML-CBOR.
const SENML_CBOR: u16 = 112;

fn secs(s: u64) -> Instant {
    Instant::from_millis(s * 1000)
}

fn image_bytes() -> Vec<u8> {
    (0..IMAGE_SIZE).map(|i| (i * 7 % 251) as u8).collect()
}

fn endpoint_with(config: EndpointConfig) -> Endpoint<u32> {
    let mut endpoint = Endpoint::new(config);
    endpoint.add_image(IMAGE, Arc::new(MemoryImage::new(image_bytes())));
    endpoint
}

fn endpoint() -> Endpoint<u32> {
    endpoint_with(EndpointConfig::default())
}

fn register_with(endpoint: &mut Endpoint<u32>, now: Instant, peer: u32, query: &[&str], payload: &[u8]) -> Reply {
    let request = DeviceRequest { query, payload, ..DeviceRequest::new(Method::Post, &["rd"]) };
    endpoint.handle_request(now, peer, &request).unwrap()
}

/// Registers `ep` (lifetime 300 s) from `peer`; its location.
fn register(endpoint: &mut Endpoint<u32>, now: Instant, peer: u32, ep: &str) -> Location {
    let ep = format!("ep={ep}");
    let reply = register_with(endpoint, now, peer, &[&ep, "lt=300", "lwm2m=1.1"], LINKS);
    assert_eq!(reply.code, ResponseCode::CREATED);
    reply.location.expect("2.01 names a location")
}

fn update(endpoint: &mut Endpoint<u32>, now: Instant, peer: u32, location: &str, query: &[&str]) -> Reply {
    let path = ["rd", location];
    let request = DeviceRequest { query, ..DeviceRequest::new(Method::Post, &path) };
    endpoint.handle_request(now, peer, &request).unwrap()
}

fn deregister(endpoint: &mut Endpoint<u32>, now: Instant, peer: u32, location: &str) -> Reply {
    let path = ["rd", location];
    endpoint.handle_request(now, peer, &DeviceRequest::new(Method::Delete, &path)).unwrap()
}

fn code_of(endpoint: &mut Endpoint<u32>, peer: u32, request: &DeviceRequest<'_>) -> ResponseCode {
    let now = endpoint.last_now;
    endpoint.handle_request(now, peer, request).unwrap().code
}

fn outputs(endpoint: &mut Endpoint<u32>) -> Vec<EndpointOutput<u32>> {
    core::iter::from_fn(|| endpoint.poll_output()).collect()
}

fn events(outputs: &[EndpointOutput<u32>]) -> Vec<(DeviceId, EndpointEvent)> {
    outputs
        .iter()
        .filter_map(|o| match o {
            EndpointOutput::Event(device, event) => Some((*device, event.clone())),
            _ => None,
        })
        .collect()
}

fn transmits(outputs: &[EndpointOutput<u32>]) -> Vec<Transmit<u32>> {
    outputs
        .iter()
        .filter_map(|o| match o {
            EndpointOutput::Transmit(t) => Some(t.clone()),
            _ => None,
        })
        .collect()
}

fn abandoned(outputs: &[EndpointOutput<u32>]) -> Vec<Token> {
    outputs
        .iter()
        .filter_map(|o| match o {
            EndpointOutput::Abandon { token, .. } => Some(*token),
            _ => None,
        })
        .collect()
}

fn upgrade_config(strategy: Strategy, delivery: Delivery) -> Arc<UpgradeConfig> {
    let mut config = UpgradeConfig::new("coap://server/fw/", IMAGE, IMAGE_SIZE as u64);
    config.strategy = strategy;
    config.delivery = delivery;
    config.protocol = Protocol::Coap;
    Arc::new(config)
}

/// `/5/0` as SenML-CBOR: State, Update Result, delivery both, protocols CoAP
/// and HTTP.
fn firmware_payload(state: i64, result: i64) -> Vec<u8> {
    let records = [
        Record::new(Path::resource(5, 0, 3), Value::Integer(state)),
        Record::new(Path::resource(5, 0, 5), Value::Integer(result)),
        Record::new(Path::resource(5, 0, 9), Value::Integer(2)),
        Record::new(Path::resource_instance(5, 0, 8, 0), Value::Integer(0)),
        Record::new(Path::resource_instance(5, 0, 8, 1), Value::Integer(2)),
    ];
    let mut out = Vec::new();
    codec::encode(ContentFormat::SenmlCbor, &Path::instance(5, 0), &records, &Registry::default(), &mut out).unwrap();
    out
}

fn is_observe(t: &Transmit<u32>) -> bool {
    matches!(t.request, DownlinkRequest::Operation(Operation::Observe { .. }))
}

fn is_block(t: &Transmit<u32>) -> bool {
    matches!(t.request, DownlinkRequest::Block { .. })
}

fn wire_block(t: &Transmit<u32>) -> (Block, u64, Bytes) {
    match &t.request {
        DownlinkRequest::Block { block, size1, payload } => (*block, *size1, payload.clone()),
        other => panic!("not a block: {other:?}"),
    }
}

/// Answers `t` as a conforming idle device would (an Observe with Observe 0).
fn answer(endpoint: &mut Endpoint<u32>, now: Instant, t: &Transmit<u32>) -> ResponseVerdict {
    let payload = firmware_payload(0, 0);
    let response = match &t.request {
        DownlinkRequest::Operation(Operation::Read { .. } | Operation::Observe { .. }) => DeviceResponse {
            content_format: Some(SENML_CBOR),
            observe: is_observe(t).then_some(0),
            ..DeviceResponse::new(t.token, ResponseCode::CONTENT, &payload)
        },
        DownlinkRequest::Block { block, .. } => {
            let code = if block.more { ResponseCode::CONTINUE } else { ResponseCode::CHANGED };
            DeviceResponse { block1: Some(block_value(*block)), ..DeviceResponse::new(t.token, code, &[]) }
        }
        DownlinkRequest::Operation(_) => DeviceResponse::new(t.token, ResponseCode::CHANGED, &[]),
    };
    endpoint.handle_response(now, t.peer, &response).unwrap()
}

/// Answers the endpoint's requests as a conforming device until one matches
/// `wanted` (left unanswered); the outputs seen on the way come along.
fn drive_until(
    endpoint: &mut Endpoint<u32>,
    now: Instant,
    wanted: impl Fn(&Transmit<u32>) -> bool,
) -> (Transmit<u32>, Vec<EndpointOutput<u32>>) {
    let mut seen = Vec::new();
    for _ in 0..50 {
        let out = outputs(endpoint);
        seen.extend(out.iter().cloned());
        let t = transmits(&out).pop().expect("the task has a request out");
        if wanted(&t) {
            return (t, seen);
        }
        assert_eq!(answer(endpoint, now, &t), ResponseVerdict::Accepted);
    }
    panic!("no wanted request in 50 exchanges: {seen:?}");
}

/// A registered device "dev" (peer 7) upgrading under `strategy`/`delivery`.
fn upgrading(endpoint: &mut Endpoint<u32>, strategy: Strategy, delivery: Delivery) -> DeviceId {
    register(endpoint, Instant::ZERO, 7, "dev");
    endpoint.upgrade(Instant::ZERO, "dev", upgrade_config(strategy, delivery)).unwrap()
}

/// Drives an S3 upgrade until the Observe of /5/0 is answered 2.05 with
/// Observe 5; its token and the request the task sent next.
fn observing(endpoint: &mut Endpoint<u32>) -> (Token, Transmit<u32>) {
    upgrading(endpoint, Strategy::ObserveInstance, Delivery::Pull);
    let (observe, _) = drive_until(endpoint, Instant::ZERO, is_observe);
    assert_eq!(
        observe.request,
        DownlinkRequest::Operation(Operation::Observe { path: Path::instance(5, 0), accept: None })
    );
    let payload = firmware_payload(0, 0);
    let response = DeviceResponse {
        content_format: Some(SENML_CBOR),
        observe: Some(5),
        ..DeviceResponse::new(observe.token, ResponseCode::CONTENT, &payload)
    };
    assert_eq!(endpoint.handle_response(Instant::ZERO, 7, &response).unwrap(), ResponseVerdict::Accepted);
    let next = transmits(&outputs(endpoint)).pop().expect("the task goes on after the Observe");
    (observe.token, next)
}

fn notify<'a>(token: Token, sequence: u32, payload: &'a [u8]) -> DeviceResponse<'a> {
    DeviceResponse {
        content_format: Some(SENML_CBOR),
        observe: Some(sequence),
        ..DeviceResponse::new(token, ResponseCode::CONTENT, payload)
    }
}

// ----- Register -----

#[test]
fn register_is_created_with_a_location_and_retrievable() {
    let mut e = endpoint();
    let reply = register_with(&mut e, Instant::ZERO, 7, &["ep=dev-1", "lt=300", "lwm2m=1.1"], LINKS);
    assert_eq!(reply.code, ResponseCode::CREATED);
    let location = reply.location.expect("a location");
    let registration = e.registrations().at(location).expect("registered at its location");
    assert_eq!((registration.endpoint.as_ref(), registration.lifetime), ("dev-1", 300));
    assert_eq!(registration.objects.len(), 3);
    assert_eq!(e.registrations().location_of("dev-1"), Some(location));
    let id = e.find("dev-1").expect("the endpoint knows the device");
    assert_eq!(e.find_peer(7), Some(id));
    assert_eq!(e.peer_of(id), Some(7));
    let view = e.device(id).unwrap();
    assert_eq!((view.name, view.peer, view.uplinks), ("dev-1", Some(7), 1));
    assert_eq!(view.registration.map(|r| r.endpoint.as_ref()), Some("dev-1"));
    assert!(view.task.is_none());
    assert_eq!(events(&outputs(&mut e)), vec![(id, EndpointEvent::Registered { replaced: false })]);
    assert_eq!(e.stats(), EndpointStats::default());
}

#[test]
fn malformed_registers_are_refused_with_the_right_code() {
    let cases: [(&[&str], &[u8], ResponseCode); 9] = [
        (&["ep=", "lt=300"], LINKS, ResponseCode::BAD_REQUEST),
        (&["lt=300", "lwm2m=1.1"], LINKS, ResponseCode::BAD_REQUEST),
        (&["ep=a", "lt=abc"], LINKS, ResponseCode::BAD_REQUEST),
        (&["ep=a", "lt=-1"], LINKS, ResponseCode::BAD_REQUEST),
        (&["ep=a", "lt=0"], LINKS, ResponseCode::BAD_REQUEST),
        (&["ep=a", "lt=300"], b"</5/0", ResponseCode::BAD_REQUEST),
        (&["ep=a", "lt=300"], b"</5/0>,\xff\xfe", ResponseCode::BAD_REQUEST),
        (&["ep=a", "lt=300"], b"\xc3\x28", ResponseCode::BAD_REQUEST),
        (&["ep=a", "lwm2m=9.9"], LINKS, ResponseCode::PRECONDITION_FAILED),
    ];
    let mut e = endpoint();
    for (i, (query, payload, code)) in cases.iter().enumerate() {
        let reply = register_with(&mut e, Instant::ZERO, 7, query, payload);
        assert_eq!(reply.code, *code, "case {i}: {query:?}");
        assert_eq!(reply.location, None, "case {i}");
        assert!(e.registrations().is_empty(), "case {i}");
        assert_eq!(e.find("a"), None, "case {i}");
        assert_eq!(e.find_peer(7), None, "case {i}");
        assert!(outputs(&mut e).is_empty(), "case {i}: no event");
        assert_eq!(e.stats().refused, i as u64 + 1, "case {i}");
    }
}

#[test]
fn a_second_register_replaces_the_first_and_voids_its_location() {
    let mut e = endpoint();
    let first = register(&mut e, Instant::ZERO, 7, "dev");
    let id = e.find("dev").unwrap();
    assert_eq!(events(&outputs(&mut e)), vec![(id, EndpointEvent::Registered { replaced: false })]);
    let second = register(&mut e, secs(1), 7, "dev");
    assert_ne!(first, second, "a new location");
    assert_eq!(e.find("dev"), Some(id), "the same device");
    assert_eq!(events(&outputs(&mut e)), vec![(id, EndpointEvent::Registered { replaced: true })]);
    assert_eq!(e.registrations().len(), 1);
    assert_eq!(e.registrations().location_of("dev"), Some(second));
    let old = first.to_string();
    assert_eq!(update(&mut e, secs(2), 7, &old, &[]).code, ResponseCode::NOT_FOUND);
    assert_eq!(deregister(&mut e, secs(2), 7, &old).code, ResponseCode::NOT_FOUND);
    assert!(outputs(&mut e).is_empty());
    // The new one works.
    assert_eq!(update(&mut e, secs(3), 7, &second.to_string(), &[]).code, ResponseCode::CHANGED);
}

// ----- Update -----

#[test]
fn an_update_by_location_is_changed_and_reported() {
    let mut e = endpoint();
    let location = register(&mut e, Instant::ZERO, 7, "dev");
    let id = e.find("dev").unwrap();
    outputs(&mut e);
    let reply = update(&mut e, secs(10), 7, &location.to_string(), &["lt=600"]);
    assert_eq!(reply.code, ResponseCode::CHANGED);
    assert_eq!(events(&outputs(&mut e)), vec![(id, EndpointEvent::Updated)]);
    assert_eq!(e.registrations().at(location).unwrap().lifetime, 600);
    assert_eq!(e.device(id).unwrap().uplinks, 2);
}

#[test]
fn an_update_of_an_unknown_or_garbage_location_is_not_found() {
    let mut e = endpoint();
    let location = register(&mut e, Instant::ZERO, 7, "dev");
    outputs(&mut e);
    let unknown = Location::parse("ffff").unwrap();
    assert_ne!(unknown, location);
    for segment in ["ffff", "zz", "not-hex", "", "12345678901234567"] {
        assert_eq!(update(&mut e, secs(1), 7, segment, &[]).code, ResponseCode::NOT_FOUND, "{segment:?}");
    }
    assert!(outputs(&mut e).is_empty(), "no Updated event");
    assert_eq!(e.stats().refused, 5);
}

#[test]
fn an_update_from_a_new_peer_moves_the_device() {
    let mut e = endpoint();
    let location = register(&mut e, Instant::ZERO, 7, "dev");
    let id = e.find("dev").unwrap();
    assert_eq!(update(&mut e, secs(1), 8, &location.to_string(), &[]).code, ResponseCode::CHANGED);
    assert_eq!(e.find_peer(8), Some(id));
    assert_eq!(e.peer_of(id), Some(8));
    assert_eq!(e.find_peer(7), None, "the old address no longer finds it");
    // Its Send now comes from the new address only.
    let send = DeviceRequest { content_format: Some(SENML_CBOR), ..DeviceRequest::new(Method::Post, &["dp"]) };
    assert_eq!(code_of(&mut e, 7, &send), ResponseCode::NOT_FOUND);
    assert_eq!(code_of(&mut e, 8, &send), ResponseCode::CHANGED);
}

#[test]
fn requests_follow_a_device_that_moved() {
    let mut e = endpoint();
    let id = upgrading(&mut e, Strategy::Reads, Delivery::Pull);
    let read = transmits(&outputs(&mut e)).pop().unwrap();
    assert_eq!(read.peer, 7);
    let location = e.registrations().location_of("dev").unwrap().to_string();
    assert_eq!(update(&mut e, secs(1), 8, &location, &[]).code, ResponseCode::CHANGED);
    // The answer to the request sent to 7 now comes from 8.
    assert_eq!(answer(&mut e, secs(1), &Transmit { peer: 8, ..read.clone() }), ResponseVerdict::Accepted);
    let next = transmits(&outputs(&mut e)).pop().expect("the task goes on");
    assert_eq!((next.device, next.peer), (id, 8));
}

#[test]
fn a_register_from_another_devices_address_displaces_it() {
    let mut e = endpoint();
    register(&mut e, Instant::ZERO, 7, "a");
    let a = e.find("a").unwrap();
    register(&mut e, secs(1), 7, "b");
    let b = e.find("b").unwrap();
    assert_ne!(a, b);
    assert_eq!(e.find_peer(7), Some(b));
    assert_eq!(e.peer_of(a), None);
    assert!(e.device(a).unwrap().registration.is_some(), "a is still registered");
}

// ----- De-register -----

#[test]
fn deregister_is_deleted_reported_and_forgets_an_idle_device() {
    let mut e = endpoint();
    let location = register(&mut e, Instant::ZERO, 7, "dev");
    let id = e.find("dev").unwrap();
    outputs(&mut e);
    assert_eq!(deregister(&mut e, secs(1), 7, &location.to_string()).code, ResponseCode::DELETED);
    assert_eq!(events(&outputs(&mut e)), vec![(id, EndpointEvent::Deregistered)]);
    assert!(e.registrations().is_empty());
    assert_eq!(e.find("dev"), None, "no upgrade: forgotten");
    assert_eq!(e.find_peer(7), None);
    assert!(e.device(id).is_none());
    assert_eq!(e.peer_of(id), None);
    // Again: the location is gone.
    assert_eq!(deregister(&mut e, secs(2), 7, &location.to_string()).code, ResponseCode::NOT_FOUND);
}

#[test]
fn deregister_of_an_unknown_location_is_not_found() {
    let mut e = endpoint();
    register(&mut e, Instant::ZERO, 7, "dev");
    outputs(&mut e);
    for segment in ["ffff", "xyz"] {
        assert_eq!(deregister(&mut e, secs(1), 7, segment).code, ResponseCode::NOT_FOUND, "{segment}");
    }
    assert!(outputs(&mut e).is_empty());
    assert_eq!(e.registrations().len(), 1);
    assert!(e.find("dev").is_some());
}

#[test]
fn a_deregistered_device_with_an_upgrade_is_kept_and_its_exchanges_abandoned() {
    let mut e = endpoint();
    let id = upgrading(&mut e, Strategy::Reads, Delivery::Pull);
    let read = transmits(&outputs(&mut e)).pop().unwrap();
    let location = e.registrations().location_of("dev").unwrap().to_string();
    assert_eq!(deregister(&mut e, secs(1), 7, &location).code, ResponseCode::DELETED);
    let out = outputs(&mut e);
    assert_eq!(abandoned(&out), vec![read.token]);
    assert!(events(&out).contains(&(id, EndpointEvent::Deregistered)));
    assert_eq!(e.find("dev"), Some(id), "kept for its upgrade");
    assert_eq!(e.peer_of(id), None);
    let view = e.device(id).unwrap();
    assert!(view.registration.is_none() && view.task.is_some());
    assert_eq!(answer(&mut e, secs(1), &read), ResponseVerdict::Unmatched);
}

#[test]
fn a_released_slot_is_reused_under_a_new_generation() {
    let mut e = endpoint();
    let location = register(&mut e, Instant::ZERO, 7, "a");
    let a = e.find("a").unwrap();
    deregister(&mut e, secs(1), 7, &location.to_string());
    register(&mut e, secs(2), 8, "b");
    let b = e.find("b").unwrap();
    assert_eq!(b.slot, a.slot, "the slot is reused");
    assert_ne!(b, a, "but the handle is not");
    assert!(e.device(a).is_none());
    assert_eq!(e.device(b).unwrap().name, "b");
    assert_eq!(e.cancel(secs(2), a), Err(EndpointError::UnknownDevice));
}

// ----- Expiry -----

#[test]
fn a_registration_expires_at_its_lifetime() {
    let mut e = endpoint();
    let reply = register_with(&mut e, Instant::ZERO, 7, &["ep=dev", "lt=60"], LINKS);
    let location = reply.location.unwrap();
    let id = e.find("dev").unwrap();
    outputs(&mut e);
    assert_eq!(e.poll_timeout(), Some(secs(60)));
    e.handle_timeout(Instant::from_millis(59_999)).unwrap();
    assert!(outputs(&mut e).is_empty(), "not yet");
    assert!(e.registrations().at(location).is_some());
    e.handle_timeout(secs(60)).unwrap();
    assert_eq!(events(&outputs(&mut e)), vec![(id, EndpointEvent::Expired)]);
    assert!(e.registrations().is_empty());
    assert_eq!(e.find("dev"), None);
    assert_eq!(e.poll_timeout(), None);
    assert_eq!(update(&mut e, secs(61), 7, &location.to_string(), &[]).code, ResponseCode::NOT_FOUND);
}

#[test]
fn an_update_pushes_the_expiry_out() {
    let mut e = endpoint();
    let reply = register_with(&mut e, Instant::ZERO, 7, &["ep=dev", "lt=60"], LINKS);
    let location = reply.location.unwrap().to_string();
    let id = e.find("dev").unwrap();
    assert_eq!(update(&mut e, secs(30), 7, &location, &[]).code, ResponseCode::CHANGED);
    outputs(&mut e);
    assert_eq!(e.poll_timeout(), Some(secs(90)));
    e.handle_timeout(secs(60)).unwrap();
    assert!(outputs(&mut e).is_empty(), "renewed");
    assert!(e.find("dev").is_some());
    e.handle_timeout(secs(90)).unwrap();
    assert_eq!(events(&outputs(&mut e)), vec![(id, EndpointEvent::Expired)]);
}

#[test]
fn an_expired_device_with_an_upgrade_is_kept_and_its_task_told() {
    let mut e = endpoint();
    let reply = register_with(&mut e, Instant::ZERO, 7, &["ep=dev", "lt=60", "lwm2m=1.1"], LINKS);
    assert_eq!(reply.code, ResponseCode::CREATED);
    let id = e.upgrade(Instant::ZERO, "dev", upgrade_config(Strategy::Reads, Delivery::Pull)).unwrap();
    let read = transmits(&outputs(&mut e)).pop().unwrap();
    e.handle_timeout(secs(60)).unwrap();
    let out = outputs(&mut e);
    assert!(events(&out).contains(&(id, EndpointEvent::Expired)), "{out:?}");
    assert_eq!(abandoned(&out), vec![read.token]);
    assert_eq!(e.find("dev"), Some(id), "kept for its upgrade");
    let view = e.device(id).unwrap();
    assert!(view.registration.is_none() && view.peer.is_none() && view.task.is_some());
    assert_eq!(e.task_of(id).outcome(), None, "the task waits for the device");
}

// ----- method and path -----

#[test]
fn methods_and_paths() {
    let mut e = endpoint();
    let location = register(&mut e, Instant::ZERO, 7, "dev").to_string();
    let cases: [(Method, &[&str], ResponseCode); 9] = [
        (Method::Get, &["rd"], ResponseCode::METHOD_NOT_ALLOWED),
        (Method::Put, &["rd"], ResponseCode::METHOD_NOT_ALLOWED),
        (Method::Get, &["rd", &location], ResponseCode::METHOD_NOT_ALLOWED),
        (Method::Get, &["dp"], ResponseCode::METHOD_NOT_ALLOWED),
        (Method::Get, &["nope"], ResponseCode::NOT_FOUND),
        (Method::Get, &[], ResponseCode::NOT_FOUND),
        (Method::Post, &["rd", &location, "x"], ResponseCode::NOT_FOUND),
        (Method::Post, &["fw", IMAGE], ResponseCode::METHOD_NOT_ALLOWED),
        (Method::Post, &["fw", "other.bin"], ResponseCode::NOT_FOUND),
    ];
    for (i, (method, path, code)) in cases.iter().enumerate() {
        assert_eq!(code_of(&mut e, 7, &DeviceRequest::new(*method, path)), *code, "{method:?} {path:?}");
        assert_eq!(e.stats().refused, i as u64 + 1);
    }
    assert!(e.registrations().at(Location::parse(&location).unwrap()).is_some(), "untouched");
}

#[test]
fn send_needs_a_registered_peer_and_a_content_format() {
    let mut e = endpoint();
    let payload = firmware_payload(0, 0);
    let senml = DeviceRequest {
        content_format: Some(SENML_CBOR),
        payload: &payload,
        ..DeviceRequest::new(Method::Post, &["dp"])
    };
    assert_eq!(code_of(&mut e, 7, &senml), ResponseCode::NOT_FOUND, "unregistered: refused");
    assert_eq!(e.stats().refused, 1);
    register(&mut e, Instant::ZERO, 7, "dev");
    let bare = DeviceRequest { payload: &payload, ..DeviceRequest::new(Method::Post, &["dp"]) };
    assert_eq!(code_of(&mut e, 7, &bare), ResponseCode::UNSUPPORTED_CONTENT_FORMAT);
    let unknown = DeviceRequest { content_format: Some(9999), ..bare };
    assert_eq!(code_of(&mut e, 7, &unknown), ResponseCode::UNSUPPORTED_CONTENT_FORMAT);
    assert_eq!(e.stats().refused, 3);
    assert_eq!(code_of(&mut e, 7, &senml), ResponseCode::CHANGED);
    assert_eq!(e.stats().refused, 3);
    assert_eq!(code_of(&mut e, 8, &senml), ResponseCode::NOT_FOUND, "another peer");
}

// ----- Block2 image serving -----

fn get_block(e: &mut Endpoint<u32>, name: &str, block2: Option<u64>) -> Reply {
    let path = ["fw", name];
    let request = DeviceRequest { block2, ..DeviceRequest::new(Method::Get, &path) };
    e.handle_request(e.last_now, 9, &request).unwrap()
}

#[test]
fn the_image_is_served_in_every_block_size() {
    let mut e = endpoint();
    let image = image_bytes();
    let etag = MemoryImage::new(image.clone()).etag();
    for szx in 0..=6u32 {
        let size = 16u32 << szx;
        let last = (IMAGE_SIZE as u32 - 1) / size;
        for number in [0, 1, last / 2, last] {
            let reply = get_block(&mut e, IMAGE, Some(block_value(Block { number, more: false, size })));
            assert_eq!(reply.code, ResponseCode::CONTENT, "SZX {szx} block {number}");
            assert_eq!(reply.block2, Some(Block { number, more: number < last, size }), "SZX {szx} block {number}");
            let start = (number * size) as usize;
            let end = (start + size as usize).min(IMAGE_SIZE);
            assert_eq!(reply.payload, image[start..end], "SZX {szx} block {number}");
            assert_eq!(reply.etag, Some(etag));
            assert_eq!(reply.content_format, Some(ContentFormat::Opaque));
            assert_eq!(reply.size2, (number == 0).then_some(IMAGE_SIZE as u64), "SZX {szx} block {number}");
        }
        let past = get_block(&mut e, IMAGE, Some(block_value(Block { number: last + 1, more: false, size })));
        assert_eq!(past.code, ResponseCode::BAD_REQUEST, "SZX {szx}: past the end");
    }
    assert_eq!(e.stats().refused, 7);
}

#[test]
fn image_refusals() {
    let mut e = endpoint();
    assert_eq!(get_block(&mut e, IMAGE, Some(7)).code, ResponseCode::BAD_REQUEST, "SZX 7");
    assert_eq!(get_block(&mut e, IMAGE, Some(1 << 4 | 7)).code, ResponseCode::BAD_REQUEST, "SZX 7");
    assert_eq!(get_block(&mut e, IMAGE, Some(3 << 4 | 6)).code, ResponseCode::BAD_REQUEST, "offset 3072");
    assert_eq!(get_block(&mut e, IMAGE, Some(u64::MAX << 4 | 6)).code, ResponseCode::BAD_REQUEST);
    assert_eq!(get_block(&mut e, "other.bin", Some(6)).code, ResponseCode::NOT_FOUND);
    assert_eq!(get_block(&mut e, "", None).code, ResponseCode::NOT_FOUND);
    assert_eq!(e.stats().refused, 6);
    // No Block2: the first block at the largest size.
    let first = get_block(&mut e, IMAGE, None);
    assert_eq!(first.block2, Some(Block { number: 0, more: true, size: 1024 }));
    assert_eq!(first.payload.len(), 1024);
}

#[test]
fn max_block_size_caps_the_served_blocks_at_the_asked_offset() {
    let mut e = endpoint_with(EndpointConfig { max_block_size: 256, ..EndpointConfig::default() });
    let image = image_bytes();
    let reply = get_block(&mut e, IMAGE, Some(block_value(Block { number: 1, more: false, size: 1024 })));
    assert_eq!(reply.code, ResponseCode::CONTENT);
    assert_eq!(reply.block2, Some(Block { number: 4, more: true, size: 256 }), "offset 1024 in 256-byte blocks");
    assert_eq!(reply.payload, image[1024..1280]);
    assert_eq!(reply.size2, None);
    let first = get_block(&mut e, IMAGE, None);
    assert_eq!((first.block2.map(|b| b.size), first.size2), (Some(256), Some(IMAGE_SIZE as u64)));
    let small = get_block(&mut e, IMAGE, Some(block_value(Block { number: 3, more: false, size: 64 })));
    assert_eq!(small.block2, Some(Block { number: 3, more: true, size: 64 }), "smaller asks are kept");
}

#[test]
fn the_image_path_is_configurable() {
    let mut e = endpoint_with(EndpointConfig { image_path: "images".into(), ..EndpointConfig::default() });
    let path = ["images", IMAGE];
    assert_eq!(code_of(&mut e, 9, &DeviceRequest::new(Method::Get, &path)), ResponseCode::CONTENT);
    assert_eq!(get_block(&mut e, IMAGE, None).code, ResponseCode::NOT_FOUND, "/fw is nothing now");
}

// ----- upgrades, tokens, demultiplexing -----

impl<P: Copy + Ord + core::hash::Hash + Debug> Endpoint<P> {
    fn task_of(&self, device: DeviceId) -> &UpgradeTask {
        self.device(device).and_then(|d| d.task).expect("an upgrade")
    }
}

#[test]
fn an_upgrade_transmits_to_the_peer_with_tokens_of_its_slot() {
    let mut e = endpoint();
    register(&mut e, Instant::ZERO, 5, "a");
    register(&mut e, Instant::ZERO, 6, "b");
    register(&mut e, Instant::ZERO, 7, "dev");
    outputs(&mut e);
    let id = e.upgrade(Instant::ZERO, "dev", upgrade_config(Strategy::Reads, Delivery::Pull)).unwrap();
    assert_eq!(id.slot, 2);
    let out = outputs(&mut e);
    let sent = transmits(&out);
    assert_eq!(sent.len(), 1, "{out:?}");
    let read = &sent[0];
    assert_eq!((read.device, read.peer), (id, 7));
    assert_eq!(read.request, DownlinkRequest::Operation(Operation::Read { path: Path::instance(5, 0), accept: None }));
    assert_eq!(read.token.0 >> 32, 2, "the high 32 bits are the slot");
    assert_eq!(read.token.slot(), 2);
    assert_eq!(Token::from_bytes(&read.token.to_bytes()), Some(read.token));
    assert_eq!(e.device(id).unwrap().downlinks, 1);
    // The next request has a fresh token of the same slot.
    assert_eq!(answer(&mut e, secs(1), read), ResponseVerdict::Accepted);
    let next = transmits(&outputs(&mut e)).pop().unwrap();
    assert_ne!(next.token, read.token);
    assert_eq!(next.token.0 >> 32, 2);
    assert_eq!(e.device(id).unwrap().uplinks, 2, "Register and one answer");
}

#[test]
fn an_upgrade_of_an_unregistered_device_waits_for_it() {
    let mut e = endpoint();
    let id = e.upgrade(Instant::ZERO, "dev", upgrade_config(Strategy::Reads, Delivery::Pull)).unwrap();
    assert!(transmits(&outputs(&mut e)).is_empty());
    assert_eq!(e.find("dev"), Some(id));
    assert_eq!(e.task_of(id).step(), Step::WaitingForDevice);
    register(&mut e, secs(1), 7, "dev");
    let out = outputs(&mut e);
    assert!(events(&out).contains(&(id, EndpointEvent::Registered { replaced: false })));
    let sent = transmits(&out);
    assert_eq!(sent.len(), 1);
    assert_eq!((sent[0].device, sent[0].peer), (id, 7));
}

#[test]
fn a_second_upgrade_is_refused_while_the_first_runs() {
    let mut e = endpoint();
    let id = upgrading(&mut e, Strategy::Reads, Delivery::Pull);
    let config = upgrade_config(Strategy::Reads, Delivery::Pull);
    assert_eq!(e.upgrade(secs(1), "dev", config.clone()), Err(EndpointError::AlreadyUpgrading));
    assert_eq!(e.upgrade(secs(1), "", config.clone()), Err(EndpointError::InvalidEndpoint));
    let long = "x".repeat(256);
    assert_eq!(e.upgrade(secs(1), &long, config.clone()), Err(EndpointError::InvalidEndpoint));
    // Once finished (here: cancelled), a new one may start.
    outputs(&mut e);
    e.cancel(secs(2), id).unwrap();
    let out = outputs(&mut e);
    assert!(events(&out).contains(&(id, EndpointEvent::Finished(Outcome::Failed(Failure::Cancelled)))), "{out:?}");
    assert_eq!(e.upgrade(secs(3), "dev", config), Ok(id));
}

#[test]
fn commands_need_a_device_with_an_upgrade() {
    let mut e = endpoint();
    register(&mut e, Instant::ZERO, 7, "dev");
    let id = e.find("dev").unwrap();
    assert_eq!(e.cancel(secs(1), id), Err(EndpointError::UnknownDevice));
    assert_eq!(e.release_execute(secs(1), id), Err(EndpointError::UnknownDevice));
}

#[test]
fn unmatched_responses_are_dropped_and_counted() {
    let mut e = endpoint();
    upgrading(&mut e, Strategy::Reads, Delivery::Pull);
    let read = transmits(&outputs(&mut e)).pop().unwrap();
    let other_token = Token(read.token.0 ^ 1);
    assert_eq!(answer(&mut e, secs(1), &Transmit { token: other_token, ..read.clone() }), ResponseVerdict::Unmatched);
    assert_eq!(e.stats().unmatched, 1);
    let no_slot = Token(99 << 32 | (read.token.0 & 0xffff_ffff));
    assert_eq!(answer(&mut e, secs(1), &Transmit { token: no_slot, ..read.clone() }), ResponseVerdict::Unmatched);
    assert_eq!(e.stats().unmatched, 2);
    // The right token from another address.
    assert_eq!(answer(&mut e, secs(1), &Transmit { peer: 8, ..read.clone() }), ResponseVerdict::Unmatched);
    assert_eq!(e.stats().unmatched, 3);
    assert!(outputs(&mut e).is_empty(), "nothing reached the task");
    assert_eq!(answer(&mut e, secs(1), &read), ResponseVerdict::Accepted);
    assert!(!transmits(&outputs(&mut e)).is_empty(), "the task went on");
    // Answered once: a duplicate is unmatched.
    assert_eq!(answer(&mut e, secs(1), &read), ResponseVerdict::Unmatched);
    assert_eq!(e.stats().unmatched, 4);
}

#[test]
fn a_failed_exchange_reaches_the_task() {
    let mut e = endpoint();
    let id = upgrading(&mut e, Strategy::Reads, Delivery::Pull);
    let first = transmits(&outputs(&mut e)).pop().unwrap();
    e.exchange_failed(secs(10), first.token).unwrap();
    let out = outputs(&mut e);
    let again = transmits(&out).pop().expect("the task sends again");
    assert_eq!(again.request, first.request);
    assert_ne!(again.token, first.token, "a fresh exchange");
    assert_eq!(answer(&mut e, secs(10), &first), ResponseVerdict::Unmatched, "the failed exchange is gone");
    // A second loss in a row is a downlink failure: the task retries (B8).
    e.exchange_failed(secs(20), again.token).unwrap();
    let out = outputs(&mut e);
    assert!(
        events(&out)
            .iter()
            .any(|(d, ev)| *d == id && matches!(ev, EndpointEvent::Task(TaskEvent::Retrying { attempt: 2, .. }))),
        "{out:?}"
    );
    assert!(!transmits(&out).is_empty());
    // An unknown token is ignored.
    e.exchange_failed(secs(21), Token(12345)).unwrap();
    assert!(outputs(&mut e).is_empty());
}

#[test]
fn a_service_unavailable_answer_passes_max_age_to_the_task() {
    let mut e = endpoint();
    upgrading(&mut e, Strategy::Reads, Delivery::Pull);
    let read = transmits(&outputs(&mut e)).pop().unwrap();
    let busy =
        DeviceResponse { max_age: Some(5), ..DeviceResponse::new(read.token, ResponseCode::SERVICE_UNAVAILABLE, &[]) };
    assert_eq!(e.handle_response(Instant::ZERO, 7, &busy).unwrap(), ResponseVerdict::Accepted);
    assert!(transmits(&outputs(&mut e)).is_empty());
    assert_eq!(e.poll_timeout(), Some(secs(5)));
    e.handle_timeout(secs(5)).unwrap();
    let again = transmits(&outputs(&mut e)).pop().expect("asked again after Max-Age");
    assert_eq!(again.request, read.request);
}

#[test]
fn an_upgrade_after_a_cancel_ignores_answers_to_the_old_task() {
    let mut e = endpoint();
    let id = upgrading(&mut e, Strategy::Reads, Delivery::Pull);
    let old = transmits(&outputs(&mut e)).pop().unwrap();
    e.cancel(secs(1), id).unwrap();
    outputs(&mut e);
    e.upgrade(secs(2), "dev", upgrade_config(Strategy::Reads, Delivery::Pull)).unwrap();
    let new = transmits(&outputs(&mut e)).pop().unwrap();
    assert_eq!(new.request, old.request);
    // The late answer to the cancelled task's Read is not the new task's.
    answer(&mut e, secs(3), &old);
    assert!(transmits(&outputs(&mut e)).is_empty(), "the new task still waits for its own answer");
    assert_eq!(answer(&mut e, secs(3), &new), ResponseVerdict::Accepted);
    assert!(!transmits(&outputs(&mut e)).is_empty());
}

// ----- observations -----

#[test]
fn notifications_are_fresh_or_stale_by_rfc_7641() {
    let mut e = endpoint();
    let (observation, uri) = observing(&mut e);
    assert!(
        matches!(&uri.request, DownlinkRequest::Operation(Operation::Write { path, .. }) if *path == Path::resource(5, 0, 1)),
        "{uri:?}"
    );
    assert_eq!(answer(&mut e, Instant::ZERO, &uri), ResponseVerdict::Accepted);
    assert!(transmits(&outputs(&mut e)).is_empty(), "waiting for Downloaded");
    let downloaded = firmware_payload(2, 0);
    // Older than 5, and 5 again: stale, and the task does not hear them.
    assert_eq!(e.handle_response(secs(1), 7, &notify(observation, 4, &downloaded)).unwrap(), ResponseVerdict::Stale);
    assert_eq!(e.handle_response(secs(1), 7, &notify(observation, 5, &downloaded)).unwrap(), ResponseVerdict::Stale);
    assert_eq!(e.stats().stale, 2);
    assert!(transmits(&outputs(&mut e)).is_empty(), "stale notifications are dropped");
    assert_eq!(e.handle_response(secs(2), 7, &notify(observation, 6, &downloaded)).unwrap(), ResponseVerdict::Accepted);
    let execute = transmits(&outputs(&mut e)).pop().expect("Downloaded: Execute");
    assert_eq!(execute.request, DownlinkRequest::Operation(Operation::Execute { path: Path::resource(5, 0, 2) }));
    assert_eq!(e.handle_response(secs(2), 7, &notify(observation, 6, &downloaded)).unwrap(), ResponseVerdict::Stale);
    assert_eq!(e.stats().stale, 3);
}

#[test]
fn an_old_sequence_is_fresh_after_128_seconds() {
    let mut e = endpoint();
    let (observation, _) = observing(&mut e);
    let idle = firmware_payload(0, 0);
    assert_eq!(e.handle_response(secs(128), 7, &notify(observation, 4, &idle)).unwrap(), ResponseVerdict::Stale);
    let later = Instant::from_millis(128_001);
    assert_eq!(e.handle_response(later, 7, &notify(observation, 4, &idle)).unwrap(), ResponseVerdict::Accepted);
    assert_eq!(e.handle_response(later, 7, &notify(observation, 3, &idle)).unwrap(), ResponseVerdict::Stale);
}

#[test]
fn an_error_notification_ends_the_observation() {
    let mut e = endpoint();
    let (observation, _) = observing(&mut e);
    let idle = firmware_payload(0, 0);
    assert_eq!(e.handle_response(secs(1), 7, &notify(observation, 6, &idle)).unwrap(), ResponseVerdict::Accepted);
    let error = DeviceResponse::new(observation, ResponseCode::NOT_FOUND, &[]);
    assert_eq!(e.handle_response(secs(2), 7, &error).unwrap(), ResponseVerdict::Accepted);
    assert_eq!(e.handle_response(secs(3), 7, &notify(observation, 7, &idle)).unwrap(), ResponseVerdict::Unmatched);
    assert_eq!(e.stats().unmatched, 1);
}

#[test]
fn a_content_without_observe_ends_the_observation() {
    let mut e = endpoint();
    let (observation, _) = observing(&mut e);
    let idle = firmware_payload(0, 0);
    let plain = DeviceResponse {
        content_format: Some(SENML_CBOR),
        ..DeviceResponse::new(observation, ResponseCode::CONTENT, &idle)
    };
    assert_eq!(e.handle_response(secs(1), 7, &plain).unwrap(), ResponseVerdict::Accepted);
    assert_eq!(e.handle_response(secs(2), 7, &notify(observation, 9, &idle)).unwrap(), ResponseVerdict::Unmatched);
}

#[test]
fn a_notification_from_another_peer_is_unmatched() {
    let mut e = endpoint();
    let (observation, _) = observing(&mut e);
    let idle = firmware_payload(0, 0);
    assert_eq!(e.handle_response(secs(1), 8, &notify(observation, 6, &idle)).unwrap(), ResponseVerdict::Unmatched);
    assert_eq!(e.handle_response(secs(1), 7, &notify(observation, 6, &idle)).unwrap(), ResponseVerdict::Accepted);
}

#[test]
fn a_reset_observation_is_forgotten() {
    let mut e = endpoint();
    let (observation, _) = observing(&mut e);
    e.exchange_failed(secs(1), observation).unwrap();
    let idle = firmware_payload(0, 0);
    assert_eq!(e.handle_response(secs(2), 7, &notify(observation, 6, &idle)).unwrap(), ResponseVerdict::Unmatched);
}

#[test]
fn a_re_register_abandons_the_observations_and_exchanges() {
    let mut e = endpoint();
    let (observation, uri) = observing(&mut e);
    register(&mut e, secs(1), 7, "dev");
    let out = outputs(&mut e);
    let gone = abandoned(&out);
    assert!(gone.contains(&observation), "{out:?}");
    assert!(gone.contains(&uri.token), "the URI write in flight too: {out:?}");
    let idle = firmware_payload(0, 0);
    assert_eq!(e.handle_response(secs(2), 7, &notify(observation, 6, &idle)).unwrap(), ResponseVerdict::Unmatched);
    assert_eq!(answer(&mut e, secs(2), &uri), ResponseVerdict::Unmatched);
    assert_eq!(e.stats().unmatched, 2);
}

#[test]
fn observations_beyond_the_bound_are_not_kept() {
    let mut e = endpoint_with(EndpointConfig { max_observations: 0, ..EndpointConfig::default() });
    let (observation, next) = observing(&mut e);
    assert_eq!(e.stats().observation_limit, 1);
    assert!(matches!(next.request, DownlinkRequest::Operation(Operation::Write { .. })), "the task heard the answer");
    let idle = firmware_payload(0, 0);
    assert_eq!(e.handle_response(secs(1), 7, &notify(observation, 6, &idle)).unwrap(), ResponseVerdict::Unmatched);
}

// ----- push -----

#[test]
fn a_4_13_renegotiates_the_block_size_at_the_same_offset() {
    let mut e = endpoint();
    upgrading(&mut e, Strategy::Reads, Delivery::Push);
    let image = image_bytes();
    let (first, _) = drive_until(&mut e, Instant::ZERO, is_block);
    let (block, size1, payload) = wire_block(&first);
    assert_eq!((block, size1), (Block { number: 0, more: true, size: 1024 }, IMAGE_SIZE as u64));
    assert_eq!(payload, image[..1024]);
    let too_large = DeviceResponse {
        block1: Some(block_value(Block { number: 0, more: true, size: 256 })),
        ..DeviceResponse::new(first.token, ResponseCode::REQUEST_ENTITY_TOO_LARGE, &[])
    };
    assert_eq!(e.handle_response(secs(1), 7, &too_large).unwrap(), ResponseVerdict::Accepted);
    let out = outputs(&mut e);
    assert!(events(&out).is_empty(), "the task does not hear the 4.13: {out:?}");
    let again = transmits(&out).pop().expect("the block again");
    assert_ne!(again.token, first.token, "a fresh token");
    let (block, _, payload) = wire_block(&again);
    assert_eq!(block, Block { number: 0, more: true, size: 256 });
    assert_eq!(payload, image[..256]);
    assert_eq!(answer(&mut e, secs(1), &first), ResponseVerdict::Unmatched, "the 1024-byte exchange is over");
    // 2.31 Continue: the rest of the task's first block, 256 bytes at a time.
    let mut wire = again;
    for number in 1..4u32 {
        assert_eq!(answer(&mut e, secs(1), &wire), ResponseVerdict::Accepted);
        let out = outputs(&mut e);
        assert!(events(&out).is_empty(), "still inside the task block: {out:?}");
        wire = transmits(&out).pop().unwrap();
        let (block, _, payload) = wire_block(&wire);
        assert_eq!(block, Block { number, more: true, size: 256 });
        let start = number as usize * 256;
        assert_eq!(payload, image[start..start + 256]);
    }
    // The fourth 2.31 completes the task block: the task's next block goes
    // out in the device's size.
    assert_eq!(answer(&mut e, secs(1), &wire), ResponseVerdict::Accepted);
    let out = outputs(&mut e);
    assert!(
        events(&out)
            .iter()
            .any(|(_, ev)| *ev == EndpointEvent::Task(TaskEvent::PushProgress { bytes: 1024, total: 3000 })),
        "{out:?}"
    );
    let next = transmits(&out).pop().unwrap();
    let (block, _, payload) = wire_block(&next);
    assert_eq!(block, Block { number: 4, more: true, size: 256 });
    assert_eq!(payload, image[1024..1280]);
}

#[test]
fn a_smaller_size_in_a_2_31_holds_for_the_next_task_blocks() {
    let mut e = endpoint();
    upgrading(&mut e, Strategy::Reads, Delivery::Push);
    let image = image_bytes();
    let (first, _) = drive_until(&mut e, Instant::ZERO, is_block);
    // The device took the 1024 bytes and asks for 256 from now on.
    let smaller = DeviceResponse {
        block1: Some(block_value(Block { number: 0, more: true, size: 256 })),
        ..DeviceResponse::new(first.token, ResponseCode::CONTINUE, &[])
    };
    assert_eq!(e.handle_response(secs(1), 7, &smaller).unwrap(), ResponseVerdict::Accepted);
    let out = outputs(&mut e);
    assert!(
        events(&out)
            .iter()
            .any(|(_, ev)| *ev == EndpointEvent::Task(TaskEvent::PushProgress { bytes: 1024, total: 3000 })),
        "{out:?}"
    );
    let (block, _, payload) = wire_block(&transmits(&out).pop().unwrap());
    assert_eq!(block, Block { number: 4, more: true, size: 256 });
    assert_eq!(payload, image[1024..1280]);
}

#[test]
fn a_pushed_image_reaches_the_end_and_executes() {
    let mut e = endpoint();
    upgrading(&mut e, Strategy::Reads, Delivery::Push);
    let (execute, seen) = drive_until(&mut e, Instant::ZERO, |t| {
        matches!(t.request, DownlinkRequest::Operation(Operation::Execute { .. }))
    });
    let blocks: Vec<Block> = transmits(&seen).iter().filter(|t| is_block(t)).map(|t| wire_block(t).0).collect();
    assert_eq!(blocks.len(), 3);
    assert_eq!(blocks[2], Block { number: 2, more: false, size: 1024 });
    assert_eq!(execute.peer, 7);
}

#[test]
fn a_service_unavailable_pushed_block_is_sent_again_after_max_age() {
    let mut e = endpoint();
    upgrading(&mut e, Strategy::Reads, Delivery::Push);
    let (block, _) = drive_until(&mut e, Instant::ZERO, is_block);
    let busy =
        DeviceResponse { max_age: Some(5), ..DeviceResponse::new(block.token, ResponseCode::SERVICE_UNAVAILABLE, &[]) };
    assert_eq!(e.handle_response(Instant::ZERO, 7, &busy).unwrap(), ResponseVerdict::Accepted);
    assert!(transmits(&outputs(&mut e)).is_empty());
    assert_eq!(e.poll_timeout(), Some(secs(5)), "as for any other request (Max-Age 5)");
    e.handle_timeout(secs(5)).unwrap();
    let again = transmits(&outputs(&mut e)).pop().expect("the block again after Max-Age");
    assert_eq!(wire_block(&again).0, wire_block(&block).0);
}

#[test]
fn a_pushed_image_that_is_missing_fails_the_block() {
    let mut e: Endpoint<u32> = Endpoint::new(EndpointConfig::default());
    upgrading(&mut e, Strategy::Reads, Delivery::Push);
    let mut seen = Vec::new();
    for _ in 0..50 {
        let out = outputs(&mut e);
        seen.extend(out.iter().cloned());
        let Some(t) = transmits(&out).pop() else {
            // A block that cannot go out fails at the next timeout, due at once.
            match e.poll_timeout().filter(|at| *at < secs(1)) {
                Some(at) => e.handle_timeout(at).unwrap(),
                None => break,
            }
            continue;
        };
        assert!(!is_block(&t), "no image: no block goes out");
        answer(&mut e, Instant::ZERO, &t);
    }
    assert!(
        events(&seen)
            .iter()
            .any(|(_, ev)| matches!(ev, EndpointEvent::Task(TaskEvent::Retrying { .. }) | EndpointEvent::Finished(_))),
        "the task heard the failures: {seen:?}"
    );
}

// ----- bounds -----

#[test]
fn requests_beyond_max_exchanges_fail_at_once() {
    // The task's Read goes unanswered and the binding has not given up on it
    // yet when the task's own request timeout asks again: two exchanges.
    let mut bounded = endpoint_with(EndpointConfig { max_exchanges: 1, ..EndpointConfig::default() });
    let id = upgrading(&mut bounded, Strategy::Reads, Delivery::Pull);
    assert_eq!(transmits(&outputs(&mut bounded)).len(), 1);
    bounded.handle_timeout(secs(93)).unwrap();
    let mut out = outputs(&mut bounded);
    assert!(transmits(&out).is_empty(), "no room: {out:?}");
    assert!(bounded.stats().exchange_limit > 0);
    // The task hears it at the next timeout, due at once.
    assert_eq!(bounded.poll_timeout(), Some(secs(93)));
    bounded.handle_timeout(secs(93)).unwrap();
    out.extend(outputs(&mut bounded));
    assert!(
        events(&out).iter().any(|(d, ev)| *d == id
            && matches!(ev, EndpointEvent::Task(TaskEvent::Retrying { .. }) | EndpointEvent::Finished(_))),
        "the task heard a failure: {out:?}"
    );
    // The same with room: the second request goes out.
    let mut roomy = endpoint();
    upgrading(&mut roomy, Strategy::Reads, Delivery::Pull);
    outputs(&mut roomy);
    roomy.handle_timeout(secs(93)).unwrap();
    assert_eq!(transmits(&outputs(&mut roomy)).len(), 1);
    assert_eq!(roomy.stats().exchange_limit, 0);
}

#[test]
fn a_refused_request_fails_once_per_input() {
    let mut e = endpoint_with(EndpointConfig { max_exchanges: 1, ..EndpointConfig::default() });
    let id = upgrading(&mut e, Strategy::Reads, Delivery::Pull);
    outputs(&mut e);
    e.handle_timeout(secs(93)).unwrap();
    let out = outputs(&mut e);
    assert_eq!(e.stats().exchange_limit, 1, "one refusal per input (fail_soon: 'it never loops within one input')");
    assert!(!events(&out).iter().any(|(d, ev)| *d == id && matches!(ev, EndpointEvent::Finished(_))), "{out:?}");
}

#[test]
fn registrations_beyond_the_limit_are_service_unavailable() {
    let limits = RegistrationLimits { max_registrations: 2, ..Default::default() };
    let mut e = endpoint_with(EndpointConfig { registrations: limits, ..EndpointConfig::default() });
    register(&mut e, Instant::ZERO, 1, "a");
    let b = register(&mut e, Instant::ZERO, 2, "b");
    outputs(&mut e);
    let reply = register_with(&mut e, secs(1), 3, &["ep=c", "lt=300"], LINKS);
    assert_eq!((reply.code, reply.location), (ResponseCode::SERVICE_UNAVAILABLE, None));
    assert!(outputs(&mut e).is_empty());
    assert_eq!((e.find("c"), e.find_peer(3), e.registrations().len()), (None, None, 2));
    assert_eq!(e.upgrade(secs(1), "c", upgrade_config(Strategy::Reads, Delivery::Pull)), Err(EndpointError::Full));
    // An existing one registers again.
    let id = e.find("a").unwrap();
    register(&mut e, secs(2), 1, "a");
    assert_eq!(events(&outputs(&mut e)), vec![(id, EndpointEvent::Registered { replaced: true })]);
    // Room again once one leaves.
    deregister(&mut e, secs(3), 2, &b.to_string());
    register(&mut e, secs(4), 3, "c");
}

#[test]
fn devices_waiting_to_upgrade_count_against_the_limit() {
    let limits = RegistrationLimits { max_registrations: 2, ..Default::default() };
    let mut e = endpoint_with(EndpointConfig { registrations: limits, ..EndpointConfig::default() });
    e.upgrade(Instant::ZERO, "x", upgrade_config(Strategy::Reads, Delivery::Pull)).unwrap();
    register(&mut e, Instant::ZERO, 1, "a");
    let reply = register_with(&mut e, secs(1), 2, &["ep=b"], LINKS);
    assert_eq!(reply.code, ResponseCode::SERVICE_UNAVAILABLE);
    assert_eq!(e.registrations().get("b"), None, "the registration is rolled back");
    assert_eq!(e.registrations().len(), 1);
    // The device with the upgrade still registers.
    register(&mut e, secs(2), 3, "x");
}

// ----- time -----

#[test]
fn time_never_goes_backwards() {
    let mut e = endpoint();
    let id = upgrading(&mut e, Strategy::Reads, Delivery::Pull);
    let read = transmits(&outputs(&mut e)).pop().unwrap();
    e.handle_timeout(secs(10)).unwrap();
    let before = secs(9);
    let back = Err(EndpointError::TimeWentBackwards);
    let register = DeviceRequest { query: &["ep=late"], payload: LINKS, ..DeviceRequest::new(Method::Post, &["rd"]) };
    assert_eq!(e.handle_request(before, 8, &register), back);
    assert_eq!(e.find("late"), None, "nothing happened");
    let image = DeviceRequest::new(Method::Get, &["fw", IMAGE]);
    assert_eq!(e.handle_request(before, 8, &image), back);
    let response = DeviceResponse::new(read.token, ResponseCode::CONTENT, &[]);
    assert_eq!(e.handle_response(before, 7, &response), Err(EndpointError::TimeWentBackwards));
    assert_eq!(e.handle_timeout(before), Err(EndpointError::TimeWentBackwards));
    assert_eq!(e.exchange_failed(before, read.token), Err(EndpointError::TimeWentBackwards));
    let config = upgrade_config(Strategy::Reads, Delivery::Pull);
    assert_eq!(e.upgrade(before, "other", config), Err(EndpointError::TimeWentBackwards));
    assert_eq!(e.find("other"), None);
    assert_eq!(e.cancel(before, id), Err(EndpointError::TimeWentBackwards));
    assert_eq!(e.release_execute(before, id), Err(EndpointError::TimeWentBackwards));
    assert!(outputs(&mut e).is_empty());
    assert_eq!(e.stats(), EndpointStats::default());
    // The same instant again is fine.
    e.handle_timeout(secs(10)).unwrap();
    assert_eq!(e.handle_request(secs(10), 8, &register).unwrap().code, ResponseCode::CREATED);
}

// ----- tokens and blocks -----

#[allow(deprecated)]
fn reference_siphash(key: [u64; 2], message: u64) -> u64 {
    use core::hash::Hasher;
    let mut hasher = std::hash::SipHasher::new_with_keys(key[0], key[1]);
    hasher.write(&message.to_le_bytes());
    hasher.finish()
}

#[test]
fn siphash24_matches_the_reference() {
    let keys =
        [[0, 0], EndpointConfig::default().token_key, [u64::MAX, 1], [0x0706_0504_0302_0100, 0x0f0e_0d0c_0b0a_0908]];
    for key in keys {
        for message in [0, 1, 2, 0xdead_beef, 0x0123_4567_89ab_cdef, u64::MAX] {
            assert_eq!(siphash24(key, message), reference_siphash(key, message), "key {key:x?} message {message:#x}");
        }
    }
}

#[test]
fn tokens_are_keyed_and_deterministic() {
    let first_token = |key: [u64; 2]| {
        let mut e = endpoint_with(EndpointConfig { token_key: key, ..EndpointConfig::default() });
        upgrading(&mut e, Strategy::Reads, Delivery::Pull);
        transmits(&outputs(&mut e)).pop().unwrap().token
    };
    let key = EndpointConfig::default().token_key;
    assert_eq!(first_token(key), Token(u64::from(siphash24(key, 1) as u32)), "slot 0, counter 1");
    assert_eq!(first_token(key), first_token(key), "the same key, the same tokens");
    assert_ne!(first_token(key), first_token([1, 2]), "another key, other tokens");
}

#[test]
fn block_values_round_trip() {
    for szx in 0..7u32 {
        for (number, more) in [(0, false), (1, true), (0xF_FFFF, true)] {
            let block = Block { number, more, size: 16 << szx };
            let value = block_value(block);
            assert_eq!(value & 7, u64::from(szx));
            assert_eq!(parse_block(value), Some(block));
        }
    }
    assert_eq!(parse_block(7), None);
    assert_eq!(parse_block(5 << 4 | 8 | 7), None);
    assert_eq!(block_value(Block { number: 2, more: true, size: 256 }), 2 << 4 | 8 | 4);
}

#[test]
fn a_push_pace_holds_each_block_until_the_bytes_before_it_fit_the_pace() {
    let mut e = endpoint();
    register(&mut e, Instant::ZERO, 7, "dev");
    let mut config = (*upgrade_config(Strategy::Reads, Delivery::Push)).clone();
    config.push_pace = Some(512);
    e.upgrade(Instant::ZERO, "dev", Arc::new(config)).unwrap();
    // The first block goes at once.
    let (first, _) = drive_until(&mut e, Instant::ZERO, is_block);
    assert_eq!(wire_block(&first).0.number, 0);
    assert_eq!(answer(&mut e, Instant::ZERO, &first), ResponseVerdict::Accepted);
    // 1,024 bytes at 512 bytes a second: the next one waits 2 s.
    assert!(transmits(&outputs(&mut e)).iter().all(|t| !is_block(t)));
    assert_eq!(e.poll_timeout(), Some(secs(2)));
    e.handle_timeout(Instant::from_millis(1_999)).unwrap();
    assert!(transmits(&outputs(&mut e)).is_empty(), "not before its time");
    e.handle_timeout(secs(2)).unwrap();
    let second = transmits(&outputs(&mut e)).pop().expect("the second block at 2 s");
    assert_eq!(wire_block(&second).0.number, 1);
    // Answered late (at 3 s), the third is due at 4 s: 2,048 bytes since 0 s.
    assert_eq!(answer(&mut e, secs(3), &second), ResponseVerdict::Accepted);
    assert!(transmits(&outputs(&mut e)).iter().all(|t| !is_block(t)));
    assert_eq!(e.poll_timeout(), Some(secs(4)));
    e.handle_timeout(secs(4)).unwrap();
    let third = transmits(&outputs(&mut e)).pop().expect("the third block at 4 s");
    assert_eq!(wire_block(&third).0, Block { number: 2, more: false, size: 1024 });
}

#[test]
fn without_a_push_pace_each_block_follows_the_answer_at_once() {
    let mut e = endpoint();
    upgrading(&mut e, Strategy::Reads, Delivery::Push);
    let (first, _) = drive_until(&mut e, Instant::ZERO, is_block);
    assert_eq!(answer(&mut e, Instant::ZERO, &first), ResponseVerdict::Accepted);
    let next = transmits(&outputs(&mut e)).pop().expect("the next block at once");
    assert_eq!(wire_block(&next).0.number, 1);
}

#[test]
fn a_block_held_by_the_pace_goes_once_across_a_new_registration() {
    let mut e = endpoint();
    register(&mut e, Instant::ZERO, 7, "dev");
    let mut config = (*upgrade_config(Strategy::Reads, Delivery::Push)).clone();
    config.push_pace = Some(100);
    e.upgrade(Instant::ZERO, "dev", Arc::new(config)).unwrap();
    let (first, _) = drive_until(&mut e, Instant::ZERO, is_block);
    assert_eq!(answer(&mut e, Instant::ZERO, &first), ResponseVerdict::Accepted);
    let mut seen = outputs(&mut e);
    // The device registers anew while block 1 is held (due at 10.24 s): the
    // held request is dropped with the old registration's exchanges, and
    // what the task sends again is paced as before, so block 1 goes once.
    register(&mut e, secs(1), 7, "dev");
    seen.extend(outputs(&mut e));
    let mut times: Vec<u64> = (2_000..=20_000).step_by(1_000).chain([10_240]).collect();
    times.sort_unstable();
    for ms in times {
        e.handle_timeout(Instant::from_millis(ms)).unwrap();
        seen.extend(outputs(&mut e));
    }
    let ones: Vec<_> = transmits(&seen).into_iter().filter(|t| is_block(t) && wire_block(t).0.number == 1).collect();
    assert_eq!(ones.len(), 1, "{ones:?}");
}
