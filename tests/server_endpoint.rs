//! The endpoint end to end: simulated devices (the `sim` device and its
//! profiles) upgraded through `server::Endpoint` under every strategy and
//! both deliveries, with the endpoint doing registration, demultiplexing,
//! tokens, observations and the Block1 push.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use lwm2m_fota::model::{ClientMessage, Instant, Operation, Path};
use lwm2m_fota::server::{
    Delivery, DeviceRequest, DeviceResponse, DownlinkRequest, Endpoint, EndpointConfig, EndpointEvent, EndpointOutput,
    Location, MemoryImage, Method, Outcome, Strategy, Token, UpgradeConfig,
};
use lwm2m_fota::sim::{FleetProfile, ImageStore, SimDevice, SimImage, image_bytes, profile, registration_query};

const SIZE: usize = 8 * 1024;

struct World {
    endpoint: Endpoint<u32>,
    devices: Vec<SimDevice>,
    images: ImageStore,
    locations: BTreeMap<u32, Location>,
    observes: BTreeSet<Token>,
    finished: BTreeMap<String, Outcome>,
    now: Instant,
    /// Every output of the endpoint, in order.
    transcript: Vec<String>,
    /// Snapshot and restore the endpoint (serde JSON) before every step.
    restore_every_step: bool,
}

impl World {
    fn new(strategy: Strategy, delivery: Delivery, count: u32) -> World {
        let image = image_bytes("2.0.0", SIZE);
        let mut endpoint = Endpoint::new(EndpointConfig::default());
        endpoint.add_image("v2.bin", Arc::new(MemoryImage::new(image)));
        let mut images = ImageStore::new();
        images.insert("coap://server/fw/v2.bin", SimImage { size: SIZE as u64, version: Some("2.0.0".into()) });
        let devices = (0..count)
            .map(|i| {
                let profile = FleetProfile::Uniform(profile::CONFORMING).for_device(9, u64::from(i));
                SimDevice::new(u64::from(i), profile, 9, "1.0.0", Instant::ZERO)
            })
            .collect();
        let mut world = World {
            endpoint,
            devices,
            images,
            locations: BTreeMap::new(),
            observes: BTreeSet::new(),
            finished: BTreeMap::new(),
            now: Instant::ZERO,
            transcript: Vec::new(),
            restore_every_step: false,
        };
        let mut config = UpgradeConfig::new("coap://server/fw/", "v2.bin", SIZE as u64);
        config.strategy = strategy;
        config.delivery = delivery;
        config.protocol = lwm2m_fota::model::Protocol::Coap;
        config.target_version = Some("2.0.0".into());
        let config = Arc::new(config);
        for device in &world.devices {
            world.endpoint.upgrade(Instant::ZERO, &device.endpoint(), config.clone()).unwrap();
        }
        world
    }

    fn uplink(&mut self, peer: u32, message: ClientMessage) {
        let now = self.now;
        match message {
            ClientMessage::Register(registration) => {
                let mut buffer = String::new();
                let (query, count) = registration_query(&mut buffer, &registration);
                let query = &query[..count];
                let links = registration.objects.to_string();
                let request =
                    DeviceRequest { query, payload: links.as_bytes(), ..DeviceRequest::new(Method::Post, &["rd"]) };
                let reply = self.endpoint.handle_request(now, peer, &request).unwrap();
                assert_eq!(reply.code.to_string(), "2.01", "{registration:?}");
                self.locations.insert(peer, reply.location.unwrap());
            }
            ClientMessage::Update { lifetime, .. } => {
                let location = self.locations[&peer].to_string();
                let lt = lifetime.map(|lt| format!("lt={lt}"));
                let query: Vec<&str> = lt.iter().map(String::as_str).collect();
                let path = ["rd", location.as_str()];
                let request = DeviceRequest { query: &query, ..DeviceRequest::new(Method::Post, &path) };
                let reply = self.endpoint.handle_request(now, peer, &request).unwrap();
                assert_eq!(reply.code.to_string(), "2.04");
            }
            ClientMessage::Deregister => {
                let location = self.locations.remove(&peer).unwrap().to_string();
                let path = ["rd", location.as_str()];
                let reply =
                    self.endpoint.handle_request(now, peer, &DeviceRequest::new(Method::Delete, &path)).unwrap();
                assert_eq!(reply.code.to_string(), "2.02");
            }
            ClientMessage::Response { id, code, format, payload } => {
                let token = Token(id);
                let observe = self.observes.remove(&token).then_some(0);
                let response = DeviceResponse {
                    content_format: format.map(|f| f.number()),
                    observe: observe.filter(|_| code.is_success()),
                    ..DeviceResponse::new(token, code, &payload)
                };
                self.endpoint.handle_response(now, peer, &response).unwrap();
            }
            ClientMessage::Notify { observation, sequence, format, payload } => {
                let response = DeviceResponse {
                    content_format: Some(format.number()),
                    observe: Some(sequence),
                    ..DeviceResponse::new(Token(observation), lwm2m_fota::model::ResponseCode::CONTENT, &payload)
                };
                self.endpoint.handle_response(now, peer, &response).unwrap();
            }
            ClientMessage::Send { format, payload } => {
                let request = DeviceRequest {
                    content_format: Some(format.number()),
                    payload: &payload,
                    ..DeviceRequest::new(Method::Post, &["dp"])
                };
                let reply = self.endpoint.handle_request(now, peer, &request).unwrap();
                assert_eq!(reply.code.to_string(), "2.04");
            }
            other => panic!("unexpected {other:?}"),
        }
    }

    fn restore(&mut self) {
        let json = serde_json::to_string(&self.endpoint).unwrap();
        self.endpoint = serde_json::from_str(&json).unwrap();
        self.endpoint.add_image("v2.bin", Arc::new(MemoryImage::new(image_bytes("2.0.0", SIZE))));
    }

    fn step(&mut self) -> bool {
        if self.restore_every_step {
            self.restore();
        }
        let mut moved = false;
        for i in 0..self.devices.len() {
            while let Some(message) = self.devices[i].poll_message() {
                self.uplink(i as u32, message);
                moved = true;
            }
        }
        while let Some(output) = self.endpoint.poll_output() {
            moved = true;
            self.transcript.push(format!("{} {output:?}", self.now));
            match output {
                EndpointOutput::Transmit(transmit) => {
                    let operation = match transmit.request {
                        DownlinkRequest::Operation(operation) => {
                            if matches!(operation, Operation::Observe { .. }) {
                                self.observes.insert(transmit.token);
                            }
                            operation
                        }
                        DownlinkRequest::Block { block, size1, payload } => Operation::WriteBlock {
                            path: Path::resource(5, 0, 0),
                            format: lwm2m_fota::model::ContentFormat::Opaque,
                            block,
                            total_size: Some(size1),
                            payload,
                        },
                    };
                    self.devices[transmit.peer as usize].handle(self.now, transmit.token.0, operation, &self.images);
                }
                EndpointOutput::Abandon { .. } => {}
                EndpointOutput::Event(device, EndpointEvent::Finished(outcome)) => {
                    let name = self.endpoint.device(device).unwrap().name.to_string();
                    assert!(self.finished.insert(name, outcome).is_none(), "reported twice");
                }
                EndpointOutput::Event(..) => {}
            }
        }
        moved
    }

    fn run(&mut self, limit: Duration) {
        let deadline = self.now + limit;
        while self.finished.len() < self.devices.len() && self.now < deadline {
            if self.step() {
                continue;
            }
            let next = self
                .devices
                .iter()
                .filter_map(SimDevice::poll_timeout)
                .chain(self.endpoint.poll_timeout())
                .min()
                .unwrap_or(deadline)
                .max(self.now);
            self.now = next;
            for device in &mut self.devices {
                if device.poll_timeout().is_some_and(|t| t <= next) {
                    device.handle_timeout(next, &self.images);
                }
            }
            self.endpoint.handle_timeout(next).unwrap();
        }
    }
}

#[test]
fn sim_devices_upgrade_through_the_endpoint_under_every_strategy() {
    for strategy in Strategy::ALL {
        for delivery in [Delivery::Pull, Delivery::Push] {
            let mut world = World::new(strategy, delivery, 5);
            world.run(Duration::from_secs(3600));
            assert_eq!(world.finished.len(), 5, "{strategy:?} {delivery:?}: {:?}", world.finished);
            for (name, outcome) in &world.finished {
                assert!(outcome.is_success(), "{strategy:?} {delivery:?} {name}: {outcome:?}");
            }
            for device in &world.devices {
                assert_eq!(device.firmware_version(), "2.0.0");
            }
            let stats = world.endpoint.stats();
            assert_eq!((stats.unmatched, stats.exchange_limit), (0, 0), "{strategy:?} {delivery:?}: {stats:?}");
        }
    }
}

/// A snapshot taken after any step continues exactly: an endpoint restored
/// from serde JSON before every step sends the same requests, with the same
/// tokens, at the same times, and reports the same outcomes.
#[test]
fn an_endpoint_restored_after_every_step_continues_identically() {
    for (strategy, delivery) in [
        (Strategy::ObserveInstance, Delivery::Pull),
        (Strategy::ObserveResources, Delivery::Push),
        (Strategy::Send, Delivery::Pull),
    ] {
        let mut plain = World::new(strategy, delivery, 3);
        plain.run(Duration::from_secs(3600));
        let mut restored = World::new(strategy, delivery, 3);
        restored.restore_every_step = true;
        restored.run(Duration::from_secs(3600));
        assert_eq!(plain.finished, restored.finished, "{strategy:?} {delivery:?}");
        assert_eq!(plain.transcript.len(), restored.transcript.len(), "{strategy:?} {delivery:?}");
        for (a, b) in plain.transcript.iter().zip(&restored.transcript) {
            assert_eq!(a, b, "{strategy:?} {delivery:?}");
        }
        assert!(plain.transcript.len() > 50);
    }
}

#[test]
fn a_snapshot_of_another_format_is_refused() {
    let world = World::new(Strategy::Reads, Delivery::Pull, 1);
    let mut json: serde_json::Value = serde_json::to_value(&world.endpoint).unwrap();
    assert_eq!(json["format"], 2);
    // Format 1 (before the registration table became a slab) and a later
    // one are refused by name.
    for format in [1, 3] {
        json["format"] = format.into();
        let error = serde_json::from_value::<Endpoint<u32>>(json.clone()).unwrap_err().to_string();
        assert!(error.contains(&format!("format {format}")), "{error}");
    }
}
