//! examples/device against a minimal test-side LwM2M server over UDP on
//! loopback: registration, a pull update over CoAP Block2, a push update over
//! Block1, observation, Send, and a restart that resumes from the state file.
mod common;

#[path = "../examples/support/coap.rs"]
mod coap;

use std::net::{SocketAddr, UdpSocket};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use coap_lite::{CoapOption, MessageClass, MessageType, Packet, RequestType};
use lwm2m_fota::codec::{self, DecodeOptions};
use lwm2m_fota::model::{Block, ContentFormat, Path, Record, Registry, ResponseCode, Value};

struct Device(Child);

impl Drop for Device {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn spawn_device(port: u16, endpoint: &str, extra: &[&str]) -> Device {
    let mut args =
        vec!["--server".to_string(), format!("coap://127.0.0.1:{port}"), "--endpoint".into(), endpoint.into()];
    args.extend(extra.iter().map(|s| s.to_string()));
    Device(
        Command::new(common::example_binary("device"))
            .args(&args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    )
}

#[derive(Debug, Default)]
struct Seen {
    registers: Vec<Vec<String>>,
    updates: usize,
    sends: Vec<Vec<u8>>,
    notifications: Vec<(Vec<u8>, Vec<u8>)>,
    block2_requests: usize,
}

struct Server {
    socket: UdpSocket,
    device: Option<SocketAddr>,
    message_id: u16,
    image: Vec<u8>,
    seen: Seen,
}

impl Server {
    fn new(image: Vec<u8>) -> Server {
        let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
        socket.set_read_timeout(Some(Duration::from_millis(50))).unwrap();
        Server { socket, device: None, message_id: 100, image, seen: Seen::default() }
    }

    fn port(&self) -> u16 {
        self.socket.local_addr().unwrap().port()
    }

    fn reply(&self, to: SocketAddr, packet: &Packet) {
        self.socket.send_to(&coap::bytes(packet), to).unwrap();
    }

    /// Answers what the device sends on its own: Register, Update, Send, image blocks, notifications.
    fn service(&mut self, packet: Packet, from: SocketAddr) -> Option<Packet> {
        match packet.header.code {
            MessageClass::Request(RequestType::Post) if coap::uri_path(&packet) == ["rd"] => {
                self.device = Some(from);
                self.seen.registers.push(coap::uri_query(&packet));
                let mut response = coap::response_to(&packet, ResponseCode::CREATED);
                response.add_option(CoapOption::LocationPath, b"rd".to_vec());
                response.add_option(CoapOption::LocationPath, format!("r{}", self.seen.registers.len()).into_bytes());
                self.reply(from, &response);
                None
            }
            MessageClass::Request(RequestType::Post) if coap::uri_path(&packet) == ["dp"] => {
                self.seen.sends.push(packet.payload.clone());
                self.reply(from, &coap::response_to(&packet, ResponseCode::CHANGED));
                None
            }
            MessageClass::Request(RequestType::Post) => {
                self.seen.updates += 1;
                self.reply(from, &coap::response_to(&packet, ResponseCode::CHANGED));
                None
            }
            MessageClass::Request(RequestType::Get) if coap::uri_path(&packet) == ["fw", "image"] => {
                self.seen.block2_requests += 1;
                let requested =
                    coap::block(&packet, CoapOption::Block2).unwrap_or(Block { number: 0, more: false, size: 512 });
                let size = requested.size.min(512);
                let offset = (requested.offset() as usize).min(self.image.len());
                let end = (offset + size as usize).min(self.image.len());
                let mut response = coap::response_to(&packet, ResponseCode::CONTENT);
                coap::set_block(
                    &mut response,
                    CoapOption::Block2,
                    Block { number: (offset / size as usize) as u32, more: end < self.image.len(), size },
                );
                response.add_option(CoapOption::ETag, b"v2".to_vec());
                response.payload = self.image[offset..end].to_vec();
                self.reply(from, &response);
                None
            }
            MessageClass::Response(_)
                if packet.header.get_type() == MessageType::NonConfirmable && coap::observe(&packet).is_some() =>
            {
                self.seen.notifications.push((packet.get_token().to_vec(), packet.payload.clone()));
                None
            }
            MessageClass::Response(_) => Some(packet),
            _ => None,
        }
    }

    fn pump(&mut self, until: Instant) -> Option<Packet> {
        let mut buf = [0u8; 4096];
        while Instant::now() < until {
            if let Ok((n, from)) = self.socket.recv_from(&mut buf) {
                if let Some(packet) = coap::parse(&buf[..n]) {
                    if let Some(response) = self.service(packet, from) {
                        return Some(response);
                    }
                }
            }
        }
        None
    }

    fn wait(&mut self, limit: Duration, mut done: impl FnMut(&Seen) -> bool) {
        let until = Instant::now() + limit;
        while !done(&self.seen) {
            assert!(Instant::now() < until, "timed out; seen {:?}", self.seen);
            self.pump(Instant::now() + Duration::from_millis(50));
        }
    }

    /// Sends a confirmable request and returns its response (retransmitting as RFC 7252 says).
    fn call(&mut self, mut packet: Packet) -> Packet {
        self.message_id += 1;
        packet.header.set_type(MessageType::Confirmable);
        packet.header.message_id = self.message_id;
        packet.set_token(self.message_id.to_be_bytes().to_vec());
        let device = self.device.expect("device registered");
        for _ in 0..4 {
            self.socket.send_to(&coap::bytes(&packet), device).unwrap();
            let until = Instant::now() + Duration::from_secs(2);
            while let Some(response) = self.pump(until) {
                if response.header.message_id == self.message_id || response.get_token() == packet.get_token() {
                    return response;
                }
            }
        }
        panic!("no response to {:?}", packet.header.code);
    }

    fn read(&mut self, path: Path) -> Vec<Record<'static>> {
        let mut request = coap::request(MessageType::Confirmable, RequestType::Get, 0, &[]);
        coap::set_path(&mut request, &path);
        let response = self.call(request);
        assert_eq!(coap::code_of(&response), ResponseCode::CONTENT);
        let format = coap::content_format(&response).unwrap();
        codec::decode(format, &path, &response.payload, &Registry::default(), &DecodeOptions::default())
            .unwrap()
            .into_iter()
            .map(Record::into_owned)
            .collect()
    }

    fn value(&mut self, path: Path) -> Value<'static> {
        self.read(path).into_iter().find(|r| r.path == path).unwrap().value
    }

    fn write_text(&mut self, path: Path, text: &str) -> ResponseCode {
        let mut request = coap::request(MessageType::Confirmable, RequestType::Put, 0, &[]);
        coap::set_path(&mut request, &path);
        coap::set_content_format(&mut request, ContentFormat::Text);
        request.payload = text.as_bytes().to_vec();
        coap::code_of(&self.call(request))
    }

    fn execute(&mut self, path: Path) -> ResponseCode {
        let mut request = coap::request(MessageType::Confirmable, RequestType::Post, 0, &[]);
        coap::set_path(&mut request, &path);
        coap::code_of(&self.call(request))
    }

    fn wait_state(&mut self, state: i64, limit: Duration) {
        let until = Instant::now() + limit;
        loop {
            if self.value(Path::resource(5, 0, 3)) == Value::Integer(state) {
                return;
            }
            assert!(Instant::now() < until, "State {state} not reached");
            self.pump(Instant::now() + Duration::from_millis(200));
        }
    }
}

fn image(version: &str, size: usize) -> Vec<u8> {
    let mut bytes = format!("lwm2m-fota-image version={version}\n").into_bytes();
    while bytes.len() < size {
        bytes.push((bytes.len() % 251) as u8);
    }
    bytes
}

fn temp_state(name: &str) -> PathBuf {
    let path = std::env::temp_dir().join(format!("lwm2m-fota-test-{}-{name}.json", std::process::id()));
    let _ = std::fs::remove_file(&path);
    path
}

#[test]
fn pull_update_over_coap_block2() {
    let mut server = Server::new(image("2.0.0", 20_000));
    let state = temp_state("pull");
    let _device =
        spawn_device(server.port(), "pull-1", &["--lwm2m", "1.1", "--send", "--state-file", state.to_str().unwrap()]);
    server.wait(Duration::from_secs(10), |s| !s.registers.is_empty());
    let query = &server.seen.registers[0];
    assert!(query.contains(&"ep=pull-1".to_string()) && query.contains(&"lwm2m=1.1".to_string()), "{query:?}");
    assert_eq!(server.value(Path::resource(3, 0, 3)), Value::string("1.0.0"));
    // Observe State: notifications follow each change.
    let mut observe = coap::request(MessageType::Confirmable, RequestType::Get, 0, &[]);
    coap::set_path(&mut observe, &Path::resource(5, 0, 3));
    coap::set_uint(&mut observe, CoapOption::Observe, 0);
    let response = server.call(observe);
    assert_eq!(coap::observe(&response), Some(1));
    let uri = format!("coap://127.0.0.1:{}/fw/image", server.port());
    assert_eq!(server.write_text(Path::resource(5, 0, 1), &uri), ResponseCode::CHANGED);
    server.wait_state(2, Duration::from_secs(30));
    assert!(server.seen.block2_requests >= 40, "{} blocks", server.seen.block2_requests);
    assert!(server.seen.notifications.iter().any(|(_, p)| p == b"2"), "{:?}", server.seen.notifications);
    assert!(server.seen.sends.len() >= 2, "a Send per change");
    assert_eq!(server.execute(Path::resource(5, 0, 2)), ResponseCode::CHANGED);
    server.wait(Duration::from_secs(10), |s| s.registers.len() >= 2);
    assert_eq!(server.value(Path::resource(5, 0, 5)), Value::Integer(1));
    assert_eq!(server.value(Path::resource(3, 0, 3)), Value::string("2.0.0"));
    let _ = std::fs::remove_file(&state);
}

#[test]
fn push_update_over_block1() {
    let firmware = image("3.0.0", 9_000);
    let mut server = Server::new(Vec::new());
    let _device = spawn_device(server.port(), "push-1", &["--lwm2m", "1.0"]);
    server.wait(Duration::from_secs(10), |s| !s.registers.is_empty());
    let size = 512u32;
    let blocks = firmware.len().div_ceil(size as usize);
    for (number, chunk) in firmware.chunks(size as usize).enumerate() {
        let more = number + 1 < blocks;
        let mut request = coap::request(MessageType::Confirmable, RequestType::Put, 0, &[]);
        coap::set_path(&mut request, &Path::resource(5, 0, 0));
        coap::set_content_format(&mut request, ContentFormat::Opaque);
        coap::set_block(&mut request, CoapOption::Block1, Block { number: number as u32, more, size });
        coap::set_uint(&mut request, CoapOption::Size1, firmware.len() as u64);
        request.payload = chunk.to_vec();
        let response = server.call(request);
        assert_eq!(coap::code_of(&response), if more { ResponseCode::CONTINUE } else { ResponseCode::CHANGED });
        assert_eq!(coap::block(&response, CoapOption::Block1).map(|b| b.number), Some(number as u32));
    }
    // LwM2M 1.0: TLV for instances.
    let records = server.read(Path::instance(5, 0));
    assert!(records.iter().any(|r| r.path == Path::resource(5, 0, 3) && r.value == Value::Integer(2)));
    assert_eq!(server.execute(Path::resource(5, 0, 2)), ResponseCode::CHANGED);
    server.wait(Duration::from_secs(10), |s| s.registers.len() >= 2);
    assert_eq!(server.value(Path::resource(3, 0, 3)), Value::string("3.0.0"));
    assert_eq!(server.value(Path::resource(5, 0, 5)), Value::Integer(1));
}

#[test]
fn restart_mid_download_resumes_from_the_state_file() {
    let mut server = Server::new(image("4.0.0", 200_000));
    let state = temp_state("resume");
    let state_arg = state.to_str().unwrap().to_string();
    let device = spawn_device(server.port(), "resume-1", &["--state-file", &state_arg]);
    server.wait(Duration::from_secs(10), |s| !s.registers.is_empty());
    let uri = format!("coap://127.0.0.1:{}/fw/image", server.port());
    server.write_text(Path::resource(5, 0, 1), &uri);
    server.wait(Duration::from_secs(20), |s| s.block2_requests >= 100);
    drop(device);
    let served_before = server.seen.block2_requests;
    let _device = spawn_device(server.port(), "resume-1", &["--state-file", &state_arg]);
    server.wait(Duration::from_secs(10), |s| s.registers.len() >= 2);
    assert_ne!(server.value(Path::resource(5, 0, 3)), Value::Integer(0), "the restart kept the download");
    server.wait_state(2, Duration::from_secs(60));
    let total_blocks = 200_000usize.div_ceil(512);
    assert!(
        server.seen.block2_requests < served_before + total_blocks - 50,
        "resumed, not restarted: {} requests after {served_before}",
        server.seen.block2_requests
    );
    assert_eq!(server.execute(Path::resource(5, 0, 2)), ResponseCode::CHANGED);
    server.wait(Duration::from_secs(10), |s| s.registers.len() >= 3);
    assert_eq!(server.value(Path::resource(3, 0, 3)), Value::string("4.0.0"));
    let _ = std::fs::remove_file(&state);
    let _ = std::fs::remove_file(format!("{}.image", state.display()));
}

#[test]
fn pull_update_over_http_with_a_hashed_version() {
    // An image without the header line: the version is a SHA-256 prefix.
    let firmware: Vec<u8> = (0..50_000u32).map(|i| (i * 7 % 256) as u8).collect();
    let http = tiny_http::Server::http("127.0.0.1:0").unwrap();
    let http_port = http.server_addr().to_ip().unwrap().port();
    let served = firmware.clone();
    std::thread::spawn(move || {
        for request in http.incoming_requests() {
            let response = if request.url() == "/fw.bin" {
                tiny_http::Response::from_data(served.clone()).with_status_code(200)
            } else {
                tiny_http::Response::from_data(Vec::new()).with_status_code(404)
            };
            let _ = request.respond(response);
        }
    });
    let mut server = Server::new(Vec::new());
    let _device = spawn_device(server.port(), "http-1", &["--lwm2m", "1.2"]);
    server.wait(Duration::from_secs(10), |s| !s.registers.is_empty());
    assert!(server.seen.registers[0].contains(&"lwm2m=1.2".to_string()));
    // A missing image: Update Result 7.
    server.write_text(Path::resource(5, 0, 1), &format!("http://127.0.0.1:{http_port}/missing.bin"));
    let until = Instant::now() + Duration::from_secs(10);
    while server.value(Path::resource(5, 0, 5)) != Value::Integer(7) {
        assert!(Instant::now() < until, "no Update Result 7");
        server.pump(Instant::now() + Duration::from_millis(100));
    }
    server.write_text(Path::resource(5, 0, 1), &format!("http://127.0.0.1:{http_port}/fw.bin"));
    server.wait_state(2, Duration::from_secs(30));
    // LwM2M 1.2: LwM2M-CBOR on request.
    let mut request = coap::request(MessageType::Confirmable, RequestType::Get, 0, &[]);
    coap::set_path(&mut request, &Path::instance(5, 0));
    coap::set_uint(&mut request, CoapOption::Accept, 11544);
    let response = server.call(request);
    assert_eq!(coap::content_format(&response), Some(ContentFormat::Lwm2mCbor));
    assert_eq!(server.execute(Path::resource(5, 0, 2)), ResponseCode::CHANGED);
    server.wait(Duration::from_secs(10), |s| s.registers.len() >= 2);
    use sha2::Digest;
    let digest = sha2::Sha256::digest(&firmware);
    let expected: String = digest.iter().take(8).map(|b| format!("{b:02x}")).collect();
    assert_eq!(server.value(Path::resource(3, 0, 3)), Value::String(format!("sha256:{expected}").into()));
}
