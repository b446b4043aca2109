//! The endpoint end to end: simulated devices (the `sim` device and its
//! profiles) upgraded through `server::Endpoint` under every strategy and
//! both deliveries, with the endpoint doing registration, demultiplexing,
//! tokens, observations and the Block1 push.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use lwm2m_fota::model::{ClientMessage, Instant, Operation, Path, Registration, format_object_links};
use lwm2m_fota::server::{
    Delivery, DeviceRequest, DeviceResponse, DownlinkRequest, Endpoint, EndpointConfig, EndpointEvent, EndpointOutput,
    Location, MemoryImage, Method, Outcome, Strategy, Token, UpgradeConfig,
};
use lwm2m_fota::sim::{FleetProfile, ImageStore, SimDevice, SimImage, image_bytes, profile};

const SIZE: usize = 8 * 1024;

fn query(registration: &Registration) -> Vec<String> {
    let mut query = vec![
        format!("ep={}", registration.endpoint),
        format!("lt={}", registration.lifetime),
        format!("lwm2m={}", registration.lwm2m_version),
        format!("b={}", registration.binding),
    ];
    if registration.queue_mode && registration.binding == "U" {
        query.push("Q".into());
    }
    query
}

struct World {
    endpoint: Endpoint<u32>,
    devices: Vec<SimDevice>,
    images: ImageStore,
    locations: BTreeMap<u32, Location>,
    observes: BTreeSet<Token>,
    finished: BTreeMap<String, Outcome>,
    now: Instant,
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
                let query = query(&registration);
                let query: Vec<&str> = query.iter().map(String::as_str).collect();
                let links = format_object_links(&registration.objects);
                let request = DeviceRequest {
                    query: &query,
                    payload: links.as_bytes(),
                    ..DeviceRequest::new(Method::Post, &["rd"])
                };
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

    fn step(&mut self) -> bool {
        let mut moved = false;
        for i in 0..self.devices.len() {
            while let Some(message) = self.devices[i].poll_message() {
                self.uplink(i as u32, message);
                moved = true;
            }
        }
        while let Some(output) = self.endpoint.poll_output() {
            moved = true;
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
