//! Simulated devices driven by a scripted server over the simulated network:
//! pull and push updates end to end, observations, Send, queue mode, and the
//! quirks of each profile.

use std::time::Duration;

use bytes::Bytes;
use lwm2m_fota::codec::{self, DecodeOptions};
use lwm2m_fota::model::{
    Attributes, Block, ClientMessage, ContentFormat, Instant, Operation, Path, Record, Registry, RequestId,
    ResponseCode, Value,
};
use lwm2m_fota::sim::{FleetProfile, ImageStore, Network, Profile, SimDevice, SimImage, image_bytes, profile};

const URI: &str = "coap://fw.example/v2.bin";

struct Harness {
    device: SimDevice,
    images: ImageStore,
    down: Network<(RequestId, Operation)>,
    up: Network<ClientMessage>,
    now: Instant,
    next_id: RequestId,
    inbox: Vec<ClientMessage>,
}

impl Harness {
    fn new(profile: Profile, seed: u64) -> Harness {
        let mut images = ImageStore::new();
        images.insert(URI, SimImage { size: 64_000, version: Some("2.0.0".into()) });
        images.insert("coap://fw.example/raw.bin", SimImage { size: 1_000, version: None });
        Harness {
            device: SimDevice::new(7, FleetProfile::Uniform(profile).for_device(seed, 7), seed, "1.0.0", Instant::ZERO),
            images,
            down: Network::new(seed ^ 1),
            up: Network::new(seed ^ 2),
            now: Instant::ZERO,
            next_id: 1,
            inbox: Vec::new(),
        }
    }

    /// Advances virtual time until `done` holds for a received message, or `limit` passes.
    fn run_until(&mut self, limit: Duration, mut done: impl FnMut(&ClientMessage) -> bool) -> Option<ClientMessage> {
        let deadline = self.now + limit;
        loop {
            while let Some((_, (id, operation))) = self.down.deliver(self.now) {
                self.device.handle(self.now, id, operation, &self.images);
            }
            while let Some(message) = self.device.poll_message() {
                let link = self.device.profile().uplink;
                self.up.transmit(self.now, &link, message);
            }
            while let Some((_, message)) = self.up.deliver(self.now) {
                self.inbox.push(message.clone());
                if done(&message) {
                    return Some(message);
                }
            }
            let next = [self.device.poll_timeout(), self.up.next_arrival(), self.down.next_arrival()]
                .into_iter()
                .flatten()
                .min();
            match next {
                Some(t) if t <= deadline => {
                    self.now = self.now.max(t);
                    if self.device.poll_timeout().is_some_and(|d| d <= self.now) {
                        self.device.handle_timeout(self.now, &self.images);
                    }
                }
                _ => {
                    self.now = deadline;
                    return None;
                }
            }
        }
    }

    fn request(&mut self, operation: Operation) -> RequestId {
        let id = self.next_id;
        self.next_id += 1;
        let link = self.device.profile().downlink;
        self.down.transmit(self.now, &link, (id, operation));
        id
    }

    /// Sends a request and waits for its response.
    fn call(&mut self, operation: Operation) -> (ResponseCode, Option<ContentFormat>, Bytes) {
        let id = self.request(operation);
        match self
            .run_until(Duration::from_secs(30), |m| matches!(m, ClientMessage::Response { id: r, .. } if *r == id))
        {
            Some(ClientMessage::Response { code, format, payload, .. }) => (code, format, payload),
            other => panic!("no response to request {id}: {other:?}"),
        }
    }

    fn registered(&mut self) {
        let registered = self.run_until(Duration::from_secs(60), |m| matches!(m, ClientMessage::Register(_)));
        assert!(registered.is_some(), "device never registered");
    }
}

fn decode(path: &Path, format: Option<ContentFormat>, payload: &[u8]) -> Vec<Record<'static>> {
    codec::decode(format.unwrap(), path, payload, &Registry::default(), &DecodeOptions::default())
        .unwrap()
        .into_iter()
        .map(Record::into_owned)
        .collect()
}

fn value_at(records: &[Record<'_>], path: Path) -> Value<'static> {
    records.iter().find(|r| r.path == path).unwrap().value.clone().into_owned()
}

fn state_of(h: &mut Harness) -> i64 {
    let (code, format, payload) = h.call(Operation::Read { path: Path::resource(5, 0, 3), accept: None });
    assert_eq!(code, ResponseCode::CONTENT);
    value_at(&decode(&Path::resource(5, 0, 3), format, &payload), Path::resource(5, 0, 3)).as_i64().unwrap()
}

fn write_uri(h: &mut Harness, uri: &str) -> ResponseCode {
    h.call(Operation::Write {
        path: Path::resource(5, 0, 1),
        format: ContentFormat::Text,
        payload: Bytes::from(uri.to_string()),
    })
    .0
}

fn wait_for_state(h: &mut Harness, state: i64, limit: Duration) {
    let deadline = h.now + limit;
    while h.now < deadline {
        if state_of(h) == state {
            return;
        }
        h.run_until(Duration::from_secs(2), |_| false);
    }
    panic!("state {state} not reached, still {}", state_of(h));
}

#[test]
fn pull_update_end_to_end_with_observe_and_send() {
    let mut h = Harness::new(profile::CONFORMING, 1);
    h.registered();
    // Observe State and Update Result; the device notifies each change.
    let observe = h.request(Operation::Observe { path: Path::resource(5, 0, 3), accept: Some(ContentFormat::Text) });
    h.run_until(Duration::from_secs(5), |m| matches!(m, ClientMessage::Response { id, .. } if *id == observe));
    assert_eq!(write_uri(&mut h, URI), ResponseCode::CHANGED);
    let downloaded = h.run_until(Duration::from_secs(60), |m| {
        matches!(m, ClientMessage::Notify { observation, payload, .. } if *observation == observe && payload.as_ref() == b"2")
    });
    assert!(downloaded.is_some(), "no notification of State 2");
    let sends = h.inbox.iter().filter(|m| matches!(m, ClientMessage::Send { .. })).count();
    assert!(sends >= 2, "Send on each State change, got {sends}");
    assert_eq!(h.call(Operation::Execute { path: Path::resource(5, 0, 2) }).0, ResponseCode::CHANGED);
    // Reboot into the new image: a new registration.
    h.registered();
    let (_, format, payload) = h.call(Operation::Read { path: Path::instance(3, 0), accept: None });
    let device = decode(&Path::instance(3, 0), format, &payload);
    assert_eq!(value_at(&device, Path::resource(3, 0, 3)), Value::string("2.0.0"));
    let (_, format, payload) =
        h.call(Operation::Read { path: Path::instance(5, 0), accept: Some(ContentFormat::SenmlCbor) });
    let fw = decode(&Path::instance(5, 0), format, &payload);
    assert_eq!(value_at(&fw, Path::resource(5, 0, 3)), Value::Integer(0));
    assert_eq!(value_at(&fw, Path::resource(5, 0, 5)), Value::Integer(1));
    // The old observation died with the old registration.
    let before = h.inbox.len();
    write_uri(&mut h, "");
    h.run_until(Duration::from_secs(5), |_| false);
    assert!(
        !h.inbox[before..]
            .iter()
            .any(|m| matches!(m, ClientMessage::Notify { observation, .. } if *observation == observe))
    );
}

#[test]
fn push_update_end_to_end() {
    let mut h = Harness::new(profile::CONFORMING, 2);
    h.registered();
    let image = image_bytes("3.1.4", 5_000);
    let size = 512u32;
    let blocks = image.len().div_ceil(size as usize);
    for (number, chunk) in image.chunks(size as usize).enumerate() {
        let more = number + 1 < blocks;
        let (code, _, _) = h.call(Operation::WriteBlock {
            path: Path::resource(5, 0, 0),
            format: ContentFormat::Opaque,
            block: Block { number: number as u32, more, size },
            total_size: Some(image.len() as u64),
            payload: Bytes::copy_from_slice(chunk),
        });
        assert_eq!(code, if more { ResponseCode::CONTINUE } else { ResponseCode::CHANGED });
    }
    assert_eq!(state_of(&mut h), 2);
    h.call(Operation::Execute { path: Path::resource(5, 0, 2) });
    h.registered();
    let (_, format, payload) = h.call(Operation::Read { path: Path::resource(3, 0, 3), accept: None });
    assert_eq!(decode(&Path::resource(3, 0, 3), format, &payload)[0].value, Value::string("3.1.4"));
}

#[test]
fn failed_downloads_report_update_results() {
    let mut h = Harness::new(profile::CONFORMING, 3);
    h.registered();
    write_uri(&mut h, "coap://fw.example/missing.bin");
    wait_for_state(&mut h, 0, Duration::from_secs(10));
    let (_, format, payload) = h.call(Operation::Read { path: Path::resource(5, 0, 5), accept: None });
    assert_eq!(decode(&Path::resource(5, 0, 5), format, &payload)[0].value, Value::Integer(7));
    write_uri(&mut h, "coap://fw.example/raw.bin");
    h.run_until(Duration::from_secs(10), |_| false);
    let (_, format, payload) = h.call(Operation::Read { path: Path::resource(5, 0, 5), accept: None });
    assert_eq!(decode(&Path::resource(5, 0, 5), format, &payload)[0].value, Value::Integer(6));
    write_uri(&mut h, "ftp://fw.example/x");
    let (_, format, payload) = h.call(Operation::Read { path: Path::resource(5, 0, 5), accept: None });
    assert_eq!(decode(&Path::resource(5, 0, 5), format, &payload)[0].value, Value::Integer(9));
}

#[test]
fn pmax_notifies_without_changes() {
    let mut h = Harness::new(profile::CONFORMING, 4);
    h.registered();
    let attributes = Attributes { pmin: Some(0), pmax: Some(10) };
    assert_eq!(h.call(Operation::WriteAttributes { path: Path::instance(5, 0), attributes }).0, ResponseCode::CHANGED);
    let observe = h.request(Operation::Observe { path: Path::instance(5, 0), accept: None });
    let notifications = (0..3)
        .filter(|_| {
            h.run_until(
                Duration::from_secs(11),
                |m| matches!(m, ClientMessage::Notify { observation, .. } if *observation == observe),
            )
            .is_some()
        })
        .count();
    assert_eq!(notifications, 3);
}

#[test]
fn poor_device_quirks() {
    let mut h = Harness::new(profile::POOR, 5);
    h.registered();
    assert!(h.inbox.iter().all(|m| !matches!(m, ClientMessage::Send { .. })));
    let (code, _, _) = h.call(Operation::Observe { path: Path::resource(5, 0, 3), accept: None });
    assert_eq!(code, ResponseCode::METHOD_NOT_ALLOWED);
    let (code, _, _) = h.call(Operation::Read { path: Path::instance(5, 0), accept: Some(ContentFormat::SenmlCbor) });
    assert_eq!(code, ResponseCode::NOT_ACCEPTABLE);
    let (code, format, _) = h.call(Operation::Read { path: Path::instance(5, 0), accept: None });
    assert_eq!((code, format), (ResponseCode::CONTENT, Some(ContentFormat::Tlv)));
    write_uri(&mut h, URI);
    // Downloading is never shown: Idle, then Downloaded.
    assert_eq!(state_of(&mut h), 0);
    wait_for_state(&mut h, 2, Duration::from_secs(60));
}

#[test]
fn queue_mode_device_listens_only_after_uplinks() {
    let mut h = Harness::new(profile::SLOW_UPLINK, 6);
    h.registered();
    assert!(h.device.reachable(h.now));
    h.run_until(Duration::from_secs(40), |_| false);
    assert!(!h.device.reachable(h.now), "asleep after the awake window");
    let lost = h.request(Operation::Read { path: Path::resource(5, 0, 3), accept: None });
    let answered =
        h.run_until(Duration::from_secs(5), |m| matches!(m, ClientMessage::Response { id, .. } if *id == lost));
    assert!(answered.is_none());
    // The next Registration Update opens a window again.
    let update = h.run_until(Duration::from_secs(600), |m| matches!(m, ClientMessage::Update { .. }));
    assert!(update.is_some());
    assert!(h.device.reachable(h.now));
}

#[test]
fn rebooting_devices_resume_and_lossy_links_drop() {
    // Across many seeds a rebooting device still completes its download.
    let mut rebooted = 0;
    for seed in 0..20 {
        let mut h = Harness::new(profile::REBOOTING, 100 + seed);
        h.registered();
        write_uri(&mut h, URI);
        let mut state = 0;
        for _ in 0..60 {
            h.run_until(Duration::from_secs(5), |_| false);
            if h.device.reachable(h.now) {
                state = state_of(&mut h);
                if state == 2 {
                    break;
                }
            }
        }
        assert_eq!(state, 2, "seed {seed}: registrations {}", h.device.registrations());
        rebooted += usize::from(h.device.registrations() > 1);
    }
    assert!(rebooted >= 2, "only {rebooted} of 20 devices rebooted mid-download");
    // A rebooting device de-registers before installing, then registers anew.
    let mut h = Harness::new(profile::REBOOTING, 77);
    h.registered();
    write_uri(&mut h, URI);
    for _ in 0..60 {
        h.run_until(Duration::from_secs(5), |_| false);
        if h.device.reachable(h.now) && state_of(&mut h) == 2 {
            break;
        }
    }
    let before = h.device.registrations();
    h.call(Operation::Execute { path: Path::resource(5, 0, 2) });
    let deregistered = h.run_until(Duration::from_secs(5), |m| matches!(m, ClientMessage::Deregister));
    assert!(deregistered.is_some());
    h.registered();
    assert!(h.device.registrations() > before);
    let mut net = Network::new(9);
    for i in 0..1000u32 {
        net.transmit(Instant::ZERO, &profile::LOSSY.uplink, i);
    }
    let (_, lost, duplicated) = net.counters();
    assert!(lost > 20 && duplicated > 5, "lost {lost}, duplicated {duplicated}");
}

#[test]
fn a_device_without_deduplication_executes_copies_and_a_busy_one_answers_5_03() {
    // A conforming device answers a copy (the same request id) from its cache.
    let mut h = Harness::new(profile::CONFORMING, 3);
    h.registered();
    let write = |uri: &str| Operation::Write {
        path: Path::resource(5, 0, 1),
        format: ContentFormat::Text,
        payload: Bytes::copy_from_slice(uri.as_bytes()),
    };
    let answers = |h: &mut Harness, id: RequestId| {
        for _ in 0..2 {
            h.device.handle(h.now, id, write(URI), &h.images);
        }
        let mut codes = Vec::new();
        while let Some(message) = h.device.poll_message() {
            if let ClientMessage::Response { id: answered, code, .. } = message {
                assert_eq!(answered, id);
                codes.push(code);
            }
        }
        codes
    };
    assert_eq!(answers(&mut h, 90), vec![ResponseCode::CHANGED, ResponseCode::CHANGED]);
    // Without de-duplication the copy is a second write while Downloading: 4.00.
    let mut h = Harness::new(profile::NO_DEDUP, 3);
    h.registered();
    assert_eq!(answers(&mut h, 90), vec![ResponseCode::CHANGED, ResponseCode::BAD_REQUEST]);
    // A busy device answers 5.03 to whatever arrives while it downloads.
    let mut h = Harness::new(profile::BUSY, 3);
    h.registered();
    assert_eq!(answers(&mut h, 90), vec![ResponseCode::CHANGED, ResponseCode::SERVICE_UNAVAILABLE]);
    let id = h.request(Operation::Read { path: Path::resource(5, 0, 3), accept: None });
    h.device.handle(h.now, id, Operation::Read { path: Path::resource(5, 0, 3), accept: None }, &h.images);
    assert!(matches!(
        h.device.poll_message(),
        Some(ClientMessage::Response { code: ResponseCode::SERVICE_UNAVAILABLE, .. })
    ));
}

#[test]
fn a_registration_that_never_got_through_is_tried_again() {
    let mut h = Harness::new(profile::CONFORMING, 4);
    h.registered();
    let registration = h.inbox.iter().find(|m| matches!(m, ClientMessage::Register(_))).cloned().unwrap();
    let before = h.device.registrations();
    h.device.uplink_failed(h.now, None, &registration);
    let again = h.run_until(Duration::from_secs(61), |m| matches!(m, ClientMessage::Register(_)));
    assert!(again.is_some(), "no new Register");
    assert_eq!(h.device.registrations(), before + 1);
    // A lost Send is not a reason to register again.
    let before = h.device.registrations();
    h.device.uplink_failed(
        h.now,
        None,
        &ClientMessage::Send { format: ContentFormat::SenmlCbor, payload: Bytes::new() },
    );
    assert!(h.run_until(Duration::from_secs(61), |m| matches!(m, ClientMessage::Register(_))).is_none());
    assert_eq!(h.device.registrations(), before);
}
