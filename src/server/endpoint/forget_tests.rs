//! `Endpoint::forget`: a device the embedder is done with leaves every table.

use alloc::string::ToString;
use alloc::sync::Arc;
use alloc::vec;
use alloc::vec::Vec;

use super::*;
use crate::model::{ContentFormat, Instant};
use crate::server::{MemoryImage, Strategy};

const LINKS: &[u8] = b"</1/0>,</3/0>,</5>;ver=1.1,</5/0>";

fn endpoint() -> Endpoint<u32> {
    let mut endpoint = Endpoint::new(EndpointConfig::default());
    endpoint.add_image("fw.bin", Arc::new(MemoryImage::new(vec![7u8; 4096])));
    endpoint
}

fn config(strategy: Strategy) -> Arc<UpgradeConfig> {
    let mut config = UpgradeConfig::new("coap://server/fw/", "fw.bin", 4096);
    config.strategy = strategy;
    Arc::new(config)
}

fn register(endpoint: &mut Endpoint<u32>, now: Instant, name: &str, peer: u32) -> Location {
    let ep = alloc::format!("ep={name}");
    let query = [ep.as_str(), "lt=300", "lwm2m=1.1"];
    let request = DeviceRequest { query: &query, payload: LINKS, ..DeviceRequest::new(Method::Post, &["rd"]) };
    let reply = endpoint.handle_request(now, peer, &request).unwrap();
    assert_eq!(reply.code, ResponseCode::CREATED);
    reply.location.unwrap()
}

fn outputs(endpoint: &mut Endpoint<u32>) -> Vec<EndpointOutput<u32>> {
    core::iter::from_fn(|| endpoint.poll_output()).collect()
}

fn transmits(outputs: &[EndpointOutput<u32>]) -> Vec<&Transmit<u32>> {
    outputs
        .iter()
        .filter_map(|o| match o {
            EndpointOutput::Transmit(t) => Some(t),
            _ => None,
        })
        .collect()
}

fn abandoned(outputs: &[EndpointOutput<u32>]) -> Vec<(DeviceId, Token)> {
    outputs
        .iter()
        .filter_map(|o| match o {
            EndpointOutput::Abandon { device, token } => Some((*device, *token)),
            _ => None,
        })
        .collect()
}

/// A registered device being upgraded, with the task's first request in flight.
fn upgrading(endpoint: &mut Endpoint<u32>, name: &str, peer: u32) -> (DeviceId, Location, Transmit<u32>) {
    let now = Instant::ZERO;
    let device = endpoint.upgrade(now, name, config(Strategy::Reads)).unwrap();
    let location = register(endpoint, now, name, peer);
    let out = outputs(endpoint);
    let sent = transmits(&out);
    assert_eq!(sent.len(), 1, "{out:?}");
    assert_eq!((sent[0].device, sent[0].peer), (device, peer));
    (device, location, sent[0].clone())
}

#[test]
fn forget_removes_the_registration_and_abandons_the_exchanges() {
    let mut endpoint = endpoint();
    let (device, location, read) = upgrading(&mut endpoint, "dev-1", 7);
    assert!(endpoint.poll_timeout().is_some());
    endpoint.forget(device).unwrap();
    // The exchange in flight is abandoned, named by its device; nothing else.
    assert_eq!(outputs(&mut endpoint), [EndpointOutput::Abandon { device, token: read.token }]);
    assert_eq!(endpoint.find("dev-1"), None);
    assert_eq!(endpoint.find_peer(7), None);
    assert!(endpoint.device(device).is_none());
    assert_eq!(endpoint.peer_of(device), None);
    assert!(endpoint.registrations().is_empty());
    // The task's deadlines went with it; only nothing is left to time.
    assert_eq!(endpoint.poll_timeout(), None);
    // Its answer is unmatched, and an Update of its registration is 4.04.
    let now = Instant::from_millis(1_000);
    let answer = DeviceResponse {
        content_format: Some(ContentFormat::Text.number()),
        ..DeviceResponse::new(read.token, ResponseCode::CONTENT, b"0")
    };
    assert_eq!(endpoint.handle_response(now, 7, &answer), Ok(ResponseVerdict::Unmatched));
    let segment = location.to_string();
    let path = ["rd", segment.as_str()];
    let update = DeviceRequest::new(Method::Post, &path);
    assert_eq!(endpoint.handle_request(now, 7, &update).unwrap().code, ResponseCode::NOT_FOUND);
    assert_eq!(endpoint.forget(device), Err(EndpointError::UnknownDevice));
    endpoint.handle_timeout(Instant::from_millis(10_000_000)).unwrap();
    assert!(outputs(&mut endpoint).is_empty(), "no event of a forgotten device");
}

#[test]
fn a_forgotten_device_s_handle_never_names_the_next_one() {
    let mut endpoint = endpoint();
    let (first, _, _) = upgrading(&mut endpoint, "dev-1", 7);
    endpoint.forget(first).unwrap();
    outputs(&mut endpoint);
    // The next device takes the slot, under a new handle.
    let (second, _, read) = upgrading(&mut endpoint, "dev-2", 7);
    assert_ne!(first, second);
    assert!(endpoint.device(first).is_none());
    assert_eq!(endpoint.device(second).map(|d| d.name), Some("dev-2"));
    assert_eq!(endpoint.forget(first), Err(EndpointError::UnknownDevice));
    assert_eq!(endpoint.find("dev-2"), Some(second));
    // The same name upgrades again as a new device once forgotten.
    endpoint.forget(second).unwrap();
    assert_eq!(abandoned(&outputs(&mut endpoint)), [(second, read.token)]);
    let (third, _, _) = upgrading(&mut endpoint, "dev-2", 8);
    assert_ne!(third, second);
    assert_eq!(endpoint.registrations().len(), 1);
}

#[test]
fn forget_of_a_device_that_never_registered_or_finished() {
    let mut endpoint = endpoint();
    // Never registered: nothing to abandon.
    let waiting = endpoint.upgrade(Instant::ZERO, "dev-1", config(Strategy::Reads)).unwrap();
    outputs(&mut endpoint);
    endpoint.forget(waiting).unwrap();
    assert!(outputs(&mut endpoint).is_empty());
    assert_eq!(endpoint.find("dev-1"), None);
    // Finished (cancelled): its registration and its exchanges go.
    let (device, _, _) = upgrading(&mut endpoint, "dev-2", 9);
    endpoint.cancel(Instant::ZERO, device).unwrap();
    let out = outputs(&mut endpoint);
    assert!(out.iter().any(|o| matches!(o, EndpointOutput::Event(d, EndpointEvent::Finished(_)) if *d == device)));
    let in_flight: Vec<Token> = transmits(&out).iter().map(|t| t.token).collect();
    endpoint.forget(device).unwrap();
    let gone = abandoned(&outputs(&mut endpoint));
    assert!(gone.iter().all(|(d, _)| *d == device), "{gone:?}");
    for token in in_flight {
        assert!(gone.iter().any(|(_, t)| *t == token), "{token:?} not abandoned: {gone:?}");
    }
    assert!(endpoint.registrations().is_empty());
}

#[test]
fn a_new_registration_abandons_the_old_exchanges_naming_the_device() {
    let mut endpoint = endpoint();
    let (device, _, read) = upgrading(&mut endpoint, "dev-1", 7);
    register(&mut endpoint, Instant::from_millis(500), "dev-1", 7);
    let out = outputs(&mut endpoint);
    assert_eq!(abandoned(&out).first(), Some(&(device, read.token)), "{out:?}");
}
