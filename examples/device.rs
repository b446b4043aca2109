//! A real LwM2M device over CoAP/UDP, built on the crate's /5 object.
//!
//! ```text
//! cargo run --example device -- --server coap://127.0.0.1:5683 --endpoint NAME \
//!     [--lifetime S] [--lwm2m 1.0|1.1|1.2] [--queue] [--send] [--state-file PATH] [--no-dedup]
//! ```
//!
//! It registers with /1, /3 and /5 (and their object versions), keeps the
//! registration alive with Registration Updates, answers Read, Write, Execute,
//! Observe, Cancel Observation, Write-Attributes and Discover on /1, /3 and /5
//! (honouring Accept), downloads pull images over CoAP Block2 or plain HTTP,
//! accepts pushed images over Block1, and on Execute Update "reboots": it sends a
//! new Register and then reports Update Result 1 and the new /3/0/3. The new
//! version comes from the image: its first line `lwm2m-fota-image version=<v>`,
//! else `sha256:<first 16 hex digits of the image's SHA-256>`. With `--send` it
//! issues LwM2M Send (POST /dp) on every State or Update Result change. With
//! `--state-file` the /5 state survives restarts (a download resumes where it
//! stopped). With `--queue` it registers in queue mode and ignores requests
//! outside the 93 s (MAX_TRANSMIT_WAIT) after each of its uplinks.
//!
//! A confirmable request seen again (a retransmission, or a duplicate made by
//! the network) is answered from a cache of recent responses, as RFC 7252
//! §4.5 asks; with `--no-dedup` there is no such cache and the request is
//! executed again, as by a client built without one (Anjay's default build).
//! It accepts datagrams only from the server's address; responses match its
//! requests by message id and token (RFC 7252 §5.3.2), and its tokens and
//! message ids are random (64-bit tokens, a random first message id), in its
//! Block2 downloads too.

use std::collections::VecDeque;
use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::net::{SocketAddr, ToSocketAddrs, UdpSocket};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Receiver, Sender};
use std::time::Duration;

use coap_lite::{CoapOption, MessageClass, MessageType, Packet, RequestType};
use lwm2m_fota::codec::{self, DecodeOptions};
use lwm2m_fota::device::{
    FirmwareInput, FirmwareOutput, FirmwareUpdate, FirmwareUpdateConfig, Observations, PackageBlock, PackageError,
    PackageSink,
};
use lwm2m_fota::model::{
    Block, ContentFormat, DeliveryMethod, Instant, Lwm2mVersion, ObjectLinks, ObjectVersion, Path, Protocol, Record,
    Registry, ResponseCode, UpdateResult, Value, format_object_links,
};
use sha2::{Digest, Sha256};

#[path = "support/coap.rs"]
mod coap;

const USAGE: &str = "usage: device --server coap://HOST:PORT --endpoint NAME [--lifetime S] [--lwm2m 1.0|1.1|1.2] [--queue] [--send] [--state-file PATH] [--no-dedup] [--download-pace MS]";
const IMAGE_HEADER: &str = "lwm2m-fota-image version=";
const INITIAL_VERSION: &str = "1.0.0";
const SOFTWARE_VERSION: &str = "lwm2m-fota-device";
/// RFC 7252 MAX_TRANSMIT_WAIT: how long a queue-mode device listens after an uplink.
const AWAKE_WINDOW: Duration = Duration::from_secs(93);

#[derive(Debug, Clone)]
struct Args {
    server: SocketAddr,
    endpoint: String,
    lifetime: u32,
    lwm2m: Lwm2mVersion,
    queue: bool,
    send: bool,
    state_file: Option<PathBuf>,
    /// No response cache: repeated confirmable requests are executed again.
    no_dedup: bool,
    /// A pause after each downloaded block (a slow link; tests use it to
    /// catch a download under way).
    download_pace: Duration,
}

fn parse_args() -> Result<Args, String> {
    let mut args = std::env::args().skip(1);
    let (mut server, mut endpoint, mut lifetime, mut lwm2m) = (None, None, 60u32, Lwm2mVersion::V1_1);
    let (mut queue, mut send, mut state_file, mut no_dedup) = (false, false, None, false);
    let mut download_pace = Duration::ZERO;
    while let Some(flag) = args.next() {
        let mut value = || args.next().ok_or_else(|| format!("{flag} needs a value"));
        match flag.as_str() {
            "--server" => {
                let uri = value()?;
                let (host_port, _) =
                    coap::split_uri(&uri, 5683).ok_or(format!("--server {uri:?}: not coap://HOST:PORT"))?;
                if !uri.starts_with("coap://") {
                    return Err(format!("--server {uri:?}: only coap:// is supported"));
                }
                let addr = host_port
                    .to_socket_addrs()
                    .map_err(|e| format!("--server {uri:?}: {e}"))?
                    .next()
                    .ok_or(format!("--server {uri:?}: no address"))?;
                server = Some(addr);
            }
            "--endpoint" => endpoint = Some(value()?),
            "--lifetime" => lifetime = value()?.parse().map_err(|_| "--lifetime takes whole seconds".to_string())?,
            "--lwm2m" => {
                let v = value()?;
                lwm2m = Lwm2mVersion::parse(&v).ok_or(format!("--lwm2m {v:?}: expected 1.0, 1.1 or 1.2"))?;
            }
            "--queue" => queue = true,
            "--send" => send = true,
            "--state-file" => state_file = Some(PathBuf::from(value()?)),
            "--no-dedup" => no_dedup = true,
            "--download-pace" => {
                let ms = value()?.parse().map_err(|_| "--download-pace takes milliseconds".to_string())?;
                download_pace = Duration::from_millis(ms);
            }
            other => return Err(format!("unknown option {other}; {USAGE}")),
        }
    }
    Ok(Args {
        server: server.ok_or(format!("--server is required; {USAGE}"))?,
        endpoint: endpoint.ok_or(format!("--endpoint is required; {USAGE}"))?,
        lifetime: lifetime.max(10),
        lwm2m,
        queue,
        send,
        state_file,
        download_pace,
        no_dedup,
    })
}

/// What survives a restart.
#[derive(serde::Serialize, serde::Deserialize)]
struct Persisted {
    firmware: FirmwareUpdate,
    firmware_version: String,
}

/// Writes a pushed image into the image file.
struct FileSink {
    path: PathBuf,
    file: Option<File>,
}

impl PackageSink for FileSink {
    fn begin(&mut self, _total_size: Option<u64>) -> Result<(), PackageError> {
        self.file = File::create(&self.path).ok();
        self.file.as_ref().map(drop).ok_or(PackageError::NotEnoughFlash)
    }

    fn write(&mut self, offset: u64, data: &[u8]) -> Result<(), PackageError> {
        if self.file.is_none() {
            // After a restart mid-push: reopen and continue.
            self.file = OpenOptions::new().write(true).open(&self.path).ok();
        }
        let file = self.file.as_mut().ok_or(PackageError::NotEnoughFlash)?;
        file.seek(SeekFrom::Start(offset)).map_err(|_| PackageError::NotEnoughFlash)?;
        file.write_all(data).map_err(|_| PackageError::NotEnoughFlash)
    }

    fn finish(&mut self, size: u64) -> Result<(), PackageError> {
        let file = self.file.take().ok_or(PackageError::NotEnoughFlash)?;
        file.set_len(size).map_err(|_| PackageError::NotEnoughFlash)?;
        file.sync_all().map_err(|_| PackageError::NotEnoughFlash)
    }
}

/// The version an image names: its header line, else a SHA-256 prefix.
fn image_version(path: &PathBuf) -> String {
    let mut bytes = Vec::new();
    if File::open(path).and_then(|mut f| f.read_to_end(&mut bytes)).is_err() {
        return "unknown".into();
    }
    let first = bytes.split(|&b| b == b'\n').next().unwrap_or(&[]);
    if let Some(version) =
        std::str::from_utf8(first).ok().and_then(|l| l.trim_end_matches('\r').strip_prefix(IMAGE_HEADER))
    {
        if !version.trim().is_empty() {
            return version.trim().to_string();
        }
    }
    let digest = Sha256::digest(&bytes);
    let hex: String = digest.iter().take(8).map(|b| format!("{b:02x}")).collect();
    format!("sha256:{hex}")
}

enum DownloadMessage {
    Progress(u64),
    Done,
    Failed(UpdateResult),
}

/// A pull download on its own thread, reporting over a channel.
struct Download {
    messages: Receiver<DownloadMessage>,
    cancel: Arc<AtomicBool>,
}

fn start_download(uri: String, offset: u64, image: PathBuf, pace: Duration) -> Download {
    let (tx, rx) = mpsc::channel();
    let cancel = Arc::new(AtomicBool::new(false));
    let stop = cancel.clone();
    std::thread::spawn(move || {
        let result = if uri.to_ascii_lowercase().starts_with("coap://") {
            download_coap(&uri, offset, &image, &tx, &stop, pace)
        } else if uri.to_ascii_lowercase().starts_with("http://") {
            download_http(&uri, offset, &image, &tx, &stop, pace)
        } else {
            Err(UpdateResult::UnsupportedProtocol)
        };
        let _ = tx.send(match result {
            Ok(()) => DownloadMessage::Done,
            Err(r) => DownloadMessage::Failed(r),
        });
    });
    Download { messages: rx, cancel }
}

fn open_image(image: &PathBuf, offset: u64) -> Result<File, UpdateResult> {
    let file = if offset == 0 {
        File::create(image)
    } else {
        OpenOptions::new().write(true).create(true).truncate(false).open(image)
    };
    let mut file = file.map_err(|_| UpdateResult::NotEnoughFlash)?;
    file.set_len(offset).map_err(|_| UpdateResult::NotEnoughFlash)?;
    file.seek(SeekFrom::Start(offset)).map_err(|_| UpdateResult::NotEnoughFlash)?;
    Ok(file)
}

/// CoAP GET with Block2 (RFC 7959 §2.4), CON with RFC 7252 retransmission;
/// restarts from 0 if the ETag changes.
fn download_coap(
    uri: &str,
    offset: u64,
    image: &PathBuf,
    tx: &Sender<DownloadMessage>,
    stop: &AtomicBool,
    pace: Duration,
) -> Result<(), UpdateResult> {
    let (host_port, path) = coap::split_uri(uri, 5683).ok_or(UpdateResult::InvalidUri)?;
    let addr = host_port.to_socket_addrs().ok().and_then(|mut a| a.next()).ok_or(UpdateResult::InvalidUri)?;
    let socket = UdpSocket::bind(if addr.is_ipv6() { "[::]:0" } else { "0.0.0.0:0" })
        .map_err(|_| UpdateResult::ConnectionLost)?;
    let mut size: u32 = 1024;
    let mut number = (offset / u64::from(size)) as u32;
    let mut written = u64::from(number) * u64::from(size);
    let mut file = open_image(image, written)?;
    let mut etag: Option<Vec<u8>> = None;
    let mut ids = coap::Ids::new();
    let path_refs: Vec<&str> = path.iter().map(String::as_str).collect();
    loop {
        if stop.load(Ordering::Relaxed) {
            return Err(UpdateResult::ConnectionLost);
        }
        let (message_id, token) = (ids.message_id(), ids.token());
        let mut request = coap::request(MessageType::Confirmable, RequestType::Get, message_id, &token);
        coap::set_uri_path(&mut request, &path_refs);
        coap::set_block(&mut request, CoapOption::Block2, Block { number, more: false, size });
        let datagram = coap::bytes(&request);
        let response = exchange(&socket, addr, &datagram, message_id, &token, ids.first_timeout(), stop)?;
        match coap::code_of(&response) {
            ResponseCode::CONTENT => {}
            ResponseCode::NOT_FOUND => return Err(UpdateResult::InvalidUri),
            _ => return Err(UpdateResult::ConnectionLost),
        }
        let tag = response.get_first_option(CoapOption::ETag).cloned();
        if etag.is_some() && tag != etag {
            // The image changed under us: start again.
            etag = None;
            number = 0;
            written = 0;
            file = open_image(image, 0)?;
            continue;
        }
        etag = tag;
        let block = coap::block(&response, CoapOption::Block2).unwrap_or(Block { number, more: false, size });
        if block.offset() != written {
            // The server answered with another size: continue at our byte offset.
            size = block.size.min(size);
            number = (written / u64::from(size)) as u32;
            if block.offset() != written {
                continue;
            }
        }
        file.write_all(&response.payload).map_err(|_| UpdateResult::NotEnoughFlash)?;
        written += response.payload.len() as u64;
        let _ = tx.send(DownloadMessage::Progress(written));
        std::thread::sleep(pace);
        if !block.more {
            file.sync_all().map_err(|_| UpdateResult::NotEnoughFlash)?;
            return Ok(());
        }
        size = block.size;
        number = (written / u64::from(size)) as u32;
    }
}

/// One confirmable request and its response, retransmitted with RFC 7252
/// back-off (MAX_RETRANSMIT resends) until an answer from `addr` matches its
/// message id and token. An empty ACK stops the resends; the separate response
/// is then awaited for as long as the resends would have taken, and
/// acknowledged if confirmable.
fn exchange(
    socket: &UdpSocket,
    addr: SocketAddr,
    datagram: &[u8],
    message_id: u16,
    token: &[u8],
    first_timeout: Duration,
    stop: &AtomicBool,
) -> Result<Packet, UpdateResult> {
    let start = std::time::Instant::now();
    let mut retransmission = coap::Retransmission::new(Instant::ZERO, first_timeout);
    let now = || Instant::from_millis(start.elapsed().as_millis() as u64);
    // MAX_TRANSMIT_WAIT-like bound on the whole exchange.
    let give_up = first_timeout * ((1 << (coap::MAX_RETRANSMIT + 1)) - 1);
    socket.send_to(datagram, addr).map_err(|_| UpdateResult::ConnectionLost)?;
    let mut buf = [0u8; 2048];
    loop {
        if stop.load(Ordering::Relaxed) {
            return Err(UpdateResult::ConnectionLost);
        }
        match retransmission.poll(now()) {
            coap::RetransmitAction::Resend => {
                socket.send_to(datagram, addr).map_err(|_| UpdateResult::ConnectionLost)?;
            }
            coap::RetransmitAction::GiveUp => return Err(UpdateResult::ConnectionLost),
            coap::RetransmitAction::Wait if start.elapsed() > give_up => return Err(UpdateResult::ConnectionLost),
            coap::RetransmitAction::Wait => {}
        }
        // Short reads, so resends are on time and a cancel is seen.
        socket.set_read_timeout(Some(Duration::from_millis(50))).ok();
        let Ok((n, from)) = socket.recv_from(&mut buf) else { continue };
        let Some(packet) = coap::parse(&buf[..n]) else { continue };
        if !coap::answers(&packet, from, addr, message_id, token) {
            continue;
        }
        if packet.header.code == MessageClass::Empty {
            retransmission.acknowledge();
            continue;
        }
        if packet.header.get_type() == MessageType::Confirmable {
            let _ = socket
                .send_to(&coap::bytes(&coap::empty(MessageType::Acknowledgement, packet.header.message_id)), from);
        }
        return Ok(packet);
    }
}

/// Plain HTTP/1.1 GET with ureq, resuming with a Range header.
fn download_http(
    uri: &str,
    offset: u64,
    image: &PathBuf,
    tx: &Sender<DownloadMessage>,
    stop: &AtomicBool,
    pace: Duration,
) -> Result<(), UpdateResult> {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .timeout_global(Some(Duration::from_secs(300)))
        .http_status_as_error(false)
        .build()
        .into();
    let mut request = agent.get(uri);
    if offset > 0 {
        request = request.header("Range", &format!("bytes={offset}-"));
    }
    let mut response = request.call().map_err(|_| UpdateResult::ConnectionLost)?;
    let start = match response.status().as_u16() {
        206 => offset,
        200 => 0,
        404 | 410 => return Err(UpdateResult::InvalidUri),
        _ => return Err(UpdateResult::ConnectionLost),
    };
    let mut file = open_image(image, start)?;
    let mut reader = response.body_mut().as_reader();
    let mut written = start;
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        if stop.load(Ordering::Relaxed) {
            return Err(UpdateResult::ConnectionLost);
        }
        let n = reader.read(&mut buf).map_err(|_| UpdateResult::ConnectionLost)?;
        if n == 0 {
            file.sync_all().map_err(|_| UpdateResult::NotEnoughFlash)?;
            return Ok(());
        }
        file.write_all(&buf[..n]).map_err(|_| UpdateResult::NotEnoughFlash)?;
        written += n as u64;
        let _ = tx.send(DownloadMessage::Progress(written));
        std::thread::sleep(pace);
    }
}

/// A confirmable uplink awaiting its ACK.
struct Pending {
    message_id: u16,
    token: Vec<u8>,
    datagram: Vec<u8>,
    retransmission: coap::Retransmission,
    kind: Uplink,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Uplink {
    Register,
    Update,
    Send,
}

struct Device {
    args: Args,
    lwm2m: Lwm2mVersion,
    socket: UdpSocket,
    clock: std::time::Instant,
    /// Where this run's clock starts: the restored object's last input, so that
    /// time never goes backwards across a restart.
    clock_origin: Instant,
    firmware: FirmwareUpdate,
    /// What the /5 object asked for while a request was being answered, acted
    /// on once the answer is out.
    firmware_version: String,
    sink: FileSink,
    image: PathBuf,
    location: Option<Vec<String>>,
    lifetime: u32,
    next_update: Instant,
    awake_until: Instant,
    /// Observations by CoAP token.
    observations: Observations<Vec<u8>>,
    pending: Vec<Pending>,
    recent: VecDeque<(u16, Vec<u8>)>,
    ids: coap::Ids,
    download: Option<Download>,
    reboot_at: Option<Instant>,
    send_after_register: bool,
}

impl Device {
    fn new(args: Args) -> Result<Device, String> {
        let socket = UdpSocket::bind(if args.server.is_ipv6() { "[::]:0" } else { "0.0.0.0:0" })
            .map_err(|e| format!("binding a UDP socket: {e}"))?;
        socket.set_read_timeout(Some(Duration::from_millis(20))).ok();
        let image = match &args.state_file {
            Some(state) => PathBuf::from(format!("{}.image", state.display())),
            None => std::env::temp_dir().join(format!("lwm2m-fota-device-{}.image", args.endpoint)),
        };
        let object_version = match args.lwm2m {
            Lwm2mVersion::V1_0 => ObjectVersion::V1_0,
            Lwm2mVersion::V1_1 => ObjectVersion::V1_1,
            Lwm2mVersion::V1_2 => ObjectVersion::V1_2,
        };
        let config = FirmwareUpdateConfig {
            version: object_version,
            protocols: [Protocol::Coap, Protocol::Http].into_iter().collect(),
            delivery: DeliveryMethod::Both,
            max_package_size: 256 * 1024 * 1024,
            user_deferral: None,
            send_on_change: args.send,
            unix_time_offset: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_secs() as i64)
                .unwrap_or(0),
        };
        let restored = args
            .state_file
            .as_ref()
            .and_then(|path| std::fs::read(path).ok())
            .and_then(|bytes| serde_json::from_slice::<Persisted>(&bytes).ok());
        let (firmware, firmware_version) = match restored {
            Some(p) => (p.firmware, p.firmware_version),
            None => (FirmwareUpdate::new(config), INITIAL_VERSION.to_string()),
        };
        let lifetime = args.lifetime;
        Ok(Device {
            lwm2m: args.lwm2m,
            args,
            socket,
            clock: std::time::Instant::now(),
            clock_origin: firmware.last_input_time(),
            firmware,
            firmware_version,
            sink: FileSink { path: image.clone(), file: None },
            image,
            location: None,
            lifetime,
            next_update: Instant::ZERO,
            awake_until: Instant::ZERO,
            observations: Observations::new(),
            pending: Vec::new(),
            recent: VecDeque::new(),
            ids: coap::Ids::new(),
            download: None,
            reboot_at: None,
            send_after_register: false,
        })
    }

    fn now(&self) -> Instant {
        self.clock_origin + self.clock.elapsed()
    }

    fn persist(&self) {
        let Some(path) = &self.args.state_file else { return };
        let persisted = Persisted { firmware: self.firmware.clone(), firmware_version: self.firmware_version.clone() };
        if let Ok(json) = serde_json::to_vec(&persisted) {
            let tmp = PathBuf::from(format!("{}.tmp", path.display()));
            if std::fs::write(&tmp, json).is_ok() {
                let _ = std::fs::rename(&tmp, path);
            }
        }
    }

    fn message_id(&mut self) -> u16 {
        self.ids.message_id()
    }

    fn token(&mut self) -> Vec<u8> {
        self.ids.token()
    }

    fn transmit(&mut self, datagram: &[u8]) {
        let _ = self.socket.send_to(datagram, self.args.server);
        self.awake_until = self.now() + AWAKE_WINDOW;
    }

    fn send_confirmable(&mut self, mut packet: Packet, kind: Uplink) {
        let message_id = self.message_id();
        let token = self.token();
        packet.header.message_id = message_id;
        packet.set_token(token.clone());
        let datagram = coap::bytes(&packet);
        self.transmit(&datagram);
        let now = self.now();
        self.pending.retain(|p| p.kind != kind || kind == Uplink::Send);
        self.pending.push(Pending {
            message_id,
            token,
            datagram,
            retransmission: coap::Retransmission::new(now, self.ids.first_timeout()),
            kind,
        });
    }

    fn object_links(&self) -> String {
        let v1_1 = self.lwm2m >= Lwm2mVersion::V1_1;
        let version = |v: ObjectVersion| v1_1.then_some(v);
        format_object_links(&[
            ObjectLinks { object_id: 1, version: version(ObjectVersion::V1_1), instances: vec![0] },
            ObjectLinks { object_id: 3, version: version(ObjectVersion::V1_1), instances: vec![0] },
            ObjectLinks { object_id: 5, version: version(self.firmware.config().version), instances: vec![0] },
        ])
    }

    fn register(&mut self) {
        self.location = None;
        self.observations.clear();
        let mut packet = coap::request(MessageType::Confirmable, RequestType::Post, 0, &[]);
        coap::set_uri_path(&mut packet, &["rd"]);
        coap::add_query(&mut packet, &format!("ep={}", self.args.endpoint));
        coap::add_query(&mut packet, &format!("lt={}", self.lifetime));
        coap::add_query(&mut packet, &format!("lwm2m={}", self.lwm2m));
        let binding = if self.args.queue && self.lwm2m == Lwm2mVersion::V1_0 { "UQ" } else { "U" };
        coap::add_query(&mut packet, &format!("b={binding}"));
        if self.args.queue && self.lwm2m >= Lwm2mVersion::V1_1 {
            coap::add_query(&mut packet, "Q");
        }
        coap::set_uint(&mut packet, CoapOption::ContentFormat, 40);
        packet.payload = self.object_links().into_bytes();
        eprintln!("device {}: register (LwM2M {})", self.args.endpoint, self.lwm2m);
        self.send_confirmable(packet, Uplink::Register);
    }

    fn update_registration(&mut self, with_lifetime: bool) {
        let Some(location) = self.location.clone() else { return };
        let mut packet = coap::request(MessageType::Confirmable, RequestType::Post, 0, &[]);
        let refs: Vec<&str> = location.iter().map(String::as_str).collect();
        coap::set_uri_path(&mut packet, &refs);
        if with_lifetime {
            coap::add_query(&mut packet, &format!("lt={}", self.lifetime));
        }
        self.send_confirmable(packet, Uplink::Update);
        self.next_update = self.now() + Duration::from_secs(u64::from(self.lifetime) / 2);
    }

    fn send_state(&mut self) {
        if self.lwm2m < Lwm2mVersion::V1_1 || self.location.is_none() {
            return;
        }
        let mut payload = Vec::new();
        if self.firmware.encode_send(&self.firmware_version, SOFTWARE_VERSION, &mut payload).is_err() {
            return;
        }
        let mut packet = coap::request(MessageType::Confirmable, RequestType::Post, 0, &[]);
        coap::set_uri_path(&mut packet, &["dp"]);
        coap::set_content_format(&mut packet, ContentFormat::SenmlCbor);
        packet.payload = payload;
        self.send_confirmable(packet, Uplink::Send);
    }

    fn handle_datagram(&mut self, datagram: &[u8]) {
        let Some(packet) = coap::parse(datagram) else { return };
        match packet.header.code {
            MessageClass::Request(method) => {
                if self.args.queue && self.now() > self.awake_until {
                    return; // asleep: the radio is off
                }
                if packet.header.get_type() == MessageType::Confirmable && !self.args.no_dedup {
                    if let Some((_, response)) = self.recent.iter().find(|(id, _)| *id == packet.header.message_id) {
                        let response = response.clone();
                        self.transmit(&response);
                        return;
                    }
                }
                let response = self.handle_request(method, &packet);
                let code = coap::code_of(&response);
                if !code.is_success() {
                    let path = coap::uri_path(&packet).join("/");
                    let block = coap::block(&packet, CoapOption::Block1).map(|b| format!(" (block {})", b.number));
                    eprintln!(
                        "device {}: answered {code} to {method:?} /{path}{}",
                        self.args.endpoint,
                        block.unwrap_or_default()
                    );
                }
                let bytes = coap::bytes(&response);
                self.transmit(&bytes);
                if packet.header.get_type() == MessageType::Confirmable && !self.args.no_dedup {
                    self.recent.push_back((packet.header.message_id, bytes));
                    if self.recent.len() > 64 {
                        self.recent.pop_front();
                    }
                }
                self.drain_events();
            }
            MessageClass::Response(_) | MessageClass::Empty => {
                if packet.header.get_type() == MessageType::Reset {
                    return;
                }
                let server = self.args.server;
                let Some(index) =
                    self.pending.iter().position(|p| coap::answers(&packet, server, server, p.message_id, &p.token))
                else {
                    return;
                };
                if packet.header.code == MessageClass::Empty {
                    // Empty ACK of a separate response: stop retransmitting, keep waiting.
                    self.pending[index].retransmission.acknowledge();
                    return;
                }
                let pending = self.pending.remove(index);
                self.handle_uplink_response(pending.kind, &packet);
            }
            MessageClass::Reserved(_) => {}
        }
    }

    fn handle_uplink_response(&mut self, kind: Uplink, packet: &Packet) {
        let code = coap::code_of(packet);
        match kind {
            Uplink::Register if code == ResponseCode::CREATED => {
                self.location = Some(coap::location_path(packet));
                self.next_update = self.now() + Duration::from_secs(u64::from(self.lifetime) / 2);
                eprintln!(
                    "device {}: registered at /{}",
                    self.args.endpoint,
                    self.location.as_ref().map(|l| l.join("/")).unwrap_or_default()
                );
                if self.send_after_register && self.args.send {
                    self.send_after_register = false;
                    self.send_state();
                }
            }
            Uplink::Register if code == ResponseCode::PRECONDITION_FAILED && self.lwm2m > Lwm2mVersion::V1_0 => {
                // The server does not speak this version: fall back (TS 1.1 §6.2.1).
                self.lwm2m = if self.lwm2m == Lwm2mVersion::V1_2 { Lwm2mVersion::V1_1 } else { Lwm2mVersion::V1_0 };
                self.register();
            }
            Uplink::Register => {
                eprintln!("device {}: register refused with {code}", self.args.endpoint);
                self.next_update = self.now() + Duration::from_secs(5);
            }
            Uplink::Update if code == ResponseCode::NOT_FOUND => self.register(),
            Uplink::Update | Uplink::Send => {}
        }
    }

    fn records(&self, path: &Path) -> Result<Vec<Record<'static>>, ResponseCode> {
        let owned = |records: Vec<Record<'_>>| records.into_iter().map(Record::into_owned).collect();
        match path.object_id() {
            Some(5) => self.firmware.read(path).map(owned),
            Some(3) | Some(1) if path.instance_id().is_none_or(|i| i == 0) => {
                let all: Vec<Record<'static>> = if path.object_id() == Some(3) {
                    vec![
                        Record::new(Path::resource(3, 0, 0), Value::String("lwm2m-fota".into())),
                        Record::new(Path::resource(3, 0, 1), Value::String("example device".into())),
                        Record::new(Path::resource(3, 0, 2), Value::String(self.args.endpoint.clone().into())),
                        Record::new(Path::resource(3, 0, 3), Value::String(self.firmware_version.clone().into())),
                        Record::new(Path::resource_instance(3, 0, 11, 0), Value::Integer(0)),
                        Record::new(
                            Path::resource(3, 0, 16),
                            Value::String(if self.args.queue { "UQ".into() } else { "U".into() }),
                        ),
                        Record::new(Path::resource(3, 0, 19), Value::String(SOFTWARE_VERSION.into())),
                    ]
                } else {
                    vec![
                        Record::new(Path::resource(1, 0, 0), Value::Integer(1)),
                        Record::new(Path::resource(1, 0, 1), Value::Integer(i64::from(self.lifetime))),
                        Record::new(Path::resource(1, 0, 6), Value::Boolean(false)),
                        Record::new(Path::resource(1, 0, 7), Value::String("U".into())),
                    ]
                };
                let selected: Vec<Record<'static>> = all.into_iter().filter(|r| r.path.starts_with(path)).collect();
                if selected.is_empty() { Err(ResponseCode::NOT_FOUND) } else { Ok(selected) }
            }
            _ => Err(ResponseCode::NOT_FOUND),
        }
    }

    fn supports(&self, format: ContentFormat) -> bool {
        match format {
            ContentFormat::Text | ContentFormat::Tlv | ContentFormat::Opaque => true,
            ContentFormat::SenmlCbor | ContentFormat::SenmlJson | ContentFormat::Cbor => {
                self.lwm2m >= Lwm2mVersion::V1_1
            }
            ContentFormat::Lwm2mCbor => self.lwm2m >= Lwm2mVersion::V1_2,
            _ => false,
        }
    }

    fn registry(&self) -> Registry {
        let mut registry = Registry::default();
        registry.register(lwm2m_fota::model::builtin::firmware_update(self.firmware.config().version).clone());
        registry
    }

    fn encode(&self, path: &Path, accept: Option<ContentFormat>) -> Result<(ContentFormat, Vec<u8>), ResponseCode> {
        let records = self.records(path)?;
        let single = records.len() == 1 && records[0].path == *path;
        let format = match accept {
            Some(f) if self.supports(f) => f,
            Some(_) => return Err(ResponseCode::NOT_ACCEPTABLE),
            None if single => ContentFormat::Text,
            None if self.lwm2m >= Lwm2mVersion::V1_1 => ContentFormat::SenmlCbor,
            None => ContentFormat::Tlv,
        };
        let mut payload = Vec::new();
        codec::encode(format, path, &records, &self.registry(), &mut payload)
            .map_err(|_| ResponseCode::NOT_ACCEPTABLE)?;
        Ok((format, payload))
    }

    fn handle_request(&mut self, method: RequestType, request: &Packet) -> Packet {
        let now = self.now();
        let segments = coap::uri_path(request);
        let Some(path) = coap::lwm2m_path(&segments) else {
            return coap::response_to(request, ResponseCode::NOT_FOUND);
        };
        let accept = match coap::accept(request) {
            Ok(a) => a,
            Err(()) if coap::uint(request, CoapOption::Accept) == Some(40) => return self.discover(request, &path),
            Err(()) => return coap::response_to(request, ResponseCode::NOT_ACCEPTABLE),
        };
        match method {
            RequestType::Get => {
                let observe = coap::observe(request);
                let result = self.encode(&path, accept);
                let Ok((format, payload)) = result else {
                    return coap::response_to(request, result.err().unwrap_or(ResponseCode::NOT_FOUND));
                };
                let mut response = coap::response_to(request, ResponseCode::CONTENT);
                coap::set_content_format(&mut response, format);
                match observe {
                    Some(0) => {
                        self.observations.observe(request.get_token().to_vec(), path, format, now);
                        coap::set_uint(&mut response, CoapOption::Observe, 1);
                    }
                    Some(1) => {
                        self.observations.cancel_key(&request.get_token().to_vec());
                        self.observations.cancel(&path);
                    }
                    _ => {}
                }
                response.payload = payload;
                response
            }
            RequestType::Put if request.payload.is_empty() && coap::content_format_number(request).is_none() => {
                // Write-Attributes.
                let mut attributes = self.observations.attributes(&path);
                for query in coap::uri_query(request) {
                    let (name, value) = query.split_once('=').unwrap_or((&query, ""));
                    let number = value.parse::<u32>().ok();
                    match name {
                        "pmin" => attributes.pmin = number,
                        "pmax" => attributes.pmax = number,
                        _ => {}
                    }
                }
                self.observations.set_attributes(path, attributes);
                coap::response_to(request, ResponseCode::CHANGED)
            }
            RequestType::Put | RequestType::Post
                if !(method == RequestType::Post
                    && path.depth() == 3
                    && request.payload.is_empty()
                    && coap::content_format_number(request).is_none()) =>
            {
                self.write(request, &path, now)
            }
            RequestType::Post => self.execute(request, &path, now),
            _ => coap::response_to(request, ResponseCode::METHOD_NOT_ALLOWED),
        }
    }

    fn discover(&self, request: &Packet, path: &Path) -> Packet {
        let Ok(records) = self.records(path) else { return coap::response_to(request, ResponseCode::NOT_FOUND) };
        let mut links: Vec<String> = vec![format!("<{path}>")];
        let mut seen = Vec::new();
        for record in &records {
            let resource = record.path.truncate(3);
            if !seen.contains(&resource) && resource != *path {
                seen.push(resource);
                links.push(format!("<{resource}>"));
            }
        }
        let mut response = coap::response_to(request, ResponseCode::CONTENT);
        coap::set_uint(&mut response, CoapOption::ContentFormat, 40);
        response.payload = links.join(",").into_bytes();
        response
    }

    fn write(&mut self, request: &Packet, path: &Path, now: Instant) -> Packet {
        let format_number = coap::content_format_number(request);
        let Some(format) = coap::content_format(request).filter(|f| self.supports(*f)) else {
            return coap::response_to(
                request,
                if format_number.is_none() {
                    ResponseCode::BAD_REQUEST
                } else {
                    ResponseCode::UNSUPPORTED_CONTENT_FORMAT
                },
            );
        };
        if *path == Path::resource(5, 0, 0) {
            let block1 = coap::block(request, CoapOption::Block1);
            let block = match block1 {
                Some(b) => PackageBlock {
                    number: b.number,
                    more: b.more,
                    size: b.size,
                    data: &request.payload,
                    total_size: coap::uint(request, CoapOption::Size1),
                },
                None => PackageBlock::whole(&request.payload),
            };
            let data = match format {
                ContentFormat::Opaque => None,
                // A Package in another format (e.g. TLV): decode the opaque value first.
                _ => match codec::decode(format, path, &request.payload, &self.registry(), &DecodeOptions::default()) {
                    Ok(records) => match records.first().map(|r| &r.value) {
                        Some(Value::Opaque(bytes)) => Some(bytes.to_vec()),
                        _ => return coap::response_to(request, ResponseCode::BAD_REQUEST),
                    },
                    Err(_) => return coap::response_to(request, ResponseCode::BAD_REQUEST),
                },
            };
            let block = match &data {
                Some(bytes) => PackageBlock { data: bytes, ..block },
                None => block,
            };
            let input = FirmwareInput::WritePackageBlock { block, sink: &mut self.sink };
            let code = answer(&mut self.firmware, now, input);
            let mut response = coap::response_to(request, code);
            if let Some(b) = block1 {
                if code == ResponseCode::CONTINUE || code == ResponseCode::CHANGED {
                    coap::set_block(
                        &mut response,
                        CoapOption::Block1,
                        Block { more: code == ResponseCode::CONTINUE, ..b },
                    );
                }
            }
            return response;
        }
        let records = match codec::decode(format, path, &request.payload, &self.registry(), &DecodeOptions::default()) {
            Ok(records) => records,
            Err(_) => return coap::response_to(request, ResponseCode::BAD_REQUEST),
        };
        let mut code = ResponseCode::CHANGED;
        for record in &records {
            let result = match (record.path.object_id(), record.path.resource_id()) {
                (Some(5), Some(resource)) => {
                    let input = FirmwareInput::Write { resource, value: &record.value };
                    answer(&mut self.firmware, now, input)
                }
                (Some(1), Some(1)) => match record.value.as_i64() {
                    Some(lifetime) if lifetime > 0 => {
                        // Lifetime changed: tell the server in an Update.
                        self.lifetime = lifetime.min(i64::from(u32::MAX)) as u32;
                        self.update_registration(true);
                        ResponseCode::CHANGED
                    }
                    _ => ResponseCode::BAD_REQUEST,
                },
                _ => ResponseCode::METHOD_NOT_ALLOWED,
            };
            if !result.is_success() {
                code = result;
                break;
            }
        }
        coap::response_to(request, code)
    }

    fn execute(&mut self, request: &Packet, path: &Path, now: Instant) -> Packet {
        let code = match (path.object_id(), path.instance_id(), path.resource_id()) {
            (Some(5), Some(0), Some(resource)) => answer(&mut self.firmware, now, FirmwareInput::Execute { resource }),
            (Some(3), Some(0), Some(4)) => {
                self.reboot_at = Some(now + Duration::from_millis(300));
                ResponseCode::CHANGED
            }
            (Some(1), Some(0), Some(8)) => {
                self.update_registration(false);
                ResponseCode::CHANGED
            }
            _ => ResponseCode::METHOD_NOT_ALLOWED,
        };
        coap::response_to(request, code)
    }

    /// Sends the notifications due now (`changed`: /5/0 resources that changed,
    /// bit R for resource R), as NON with the observation's token.
    fn notify_due(&mut self, changed: u32) {
        let now = self.now();
        for due in self.observations.due(now, changed) {
            let Ok((_, payload)) = self.encode(&due.path, Some(due.format)) else { continue };
            let mut packet = Packet::new();
            packet.header.set_type(MessageType::NonConfirmable);
            packet.header.code = MessageClass::from(ResponseCode::CONTENT.0);
            packet.header.message_id = self.message_id();
            packet.set_token(due.key);
            coap::set_uint(&mut packet, CoapOption::Observe, u64::from(due.sequence));
            coap::set_content_format(&mut packet, due.format);
            packet.payload = payload;
            let bytes = coap::bytes(&packet);
            self.transmit(&bytes);
        }
    }

    fn drain_events(&mut self) {
        // One step's changes go out in one notification per observation.
        let mut changed = 0u32;
        while let Some(output) = self.firmware.poll_output() {
            match output {
                // Answers are taken where the request is handled (`FirmwareUpdate::request`).
                FirmwareOutput::Respond(_) => {}
                FirmwareOutput::StartDownload { uri, offset } => {
                    eprintln!("device {}: downloading {uri} from byte {offset}", self.args.endpoint);
                    self.download = Some(start_download(uri, offset, self.image.clone(), self.args.download_pace));
                }
                FirmwareOutput::AbortDownload => {
                    if let Some(download) = self.download.take() {
                        download.cancel.store(true, Ordering::Relaxed);
                    }
                }
                FirmwareOutput::DiscardImage => {
                    let _ = std::fs::remove_file(&self.image);
                }
                FirmwareOutput::ApplyUpdate => {
                    // Answer the Execute first, then "reboot".
                    self.reboot_at = Some(self.now() + Duration::from_millis(500));
                }
                FirmwareOutput::ResourceChanged(resource) => changed |= 1u32 << resource.min(31),
                FirmwareOutput::SendState => self.send_state(),
                FirmwareOutput::Persist => self.persist(),
            }
        }
        if changed != 0 {
            self.notify_due(changed);
        }
    }

    fn reboot(&mut self) {
        let now = self.now();
        eprintln!("device {}: rebooting", self.args.endpoint);
        if self.firmware.state() == lwm2m_fota::model::State::Updating {
            self.firmware_version = image_version(&self.image);
            let _ = self.firmware.handle(now, FirmwareInput::UpdateSucceeded);
            eprintln!("device {}: now running {}", self.args.endpoint, self.firmware_version);
        }
        if let Some(download) = self.download.take() {
            download.cancel.store(true, Ordering::Relaxed);
        }
        self.persist();
        // Drop events raised while "down"; a Send follows the new registration.
        while self.firmware.poll_output().is_some() {}
        self.send_after_register = true;
        self.register();
    }

    fn tick(&mut self) {
        let now = self.now();
        // Retransmit confirmable uplinks (RFC 7252 §4.2).
        let mut resend = Vec::new();
        let mut gave_up = Vec::new();
        for (i, pending) in self.pending.iter_mut().enumerate() {
            match pending.retransmission.poll(now) {
                coap::RetransmitAction::Wait => {}
                coap::RetransmitAction::Resend => resend.push(pending.datagram.clone()),
                coap::RetransmitAction::GiveUp => gave_up.push(i),
            }
        }
        for datagram in resend {
            self.transmit(&datagram);
        }
        for i in gave_up.into_iter().rev() {
            let pending = self.pending.remove(i);
            if pending.kind != Uplink::Send {
                // No answer from the server: try registering again later.
                self.location = None;
                self.next_update = now + Duration::from_secs(5);
            }
        }
        if let Some(download) = &self.download {
            let mut finished = None;
            let mut progress = None;
            while let Ok(message) = download.messages.try_recv() {
                match message {
                    DownloadMessage::Progress(offset) => progress = Some(offset),
                    other => finished = Some(other),
                }
            }
            if let Some(offset) = progress {
                let _ = self.firmware.handle(now, FirmwareInput::DownloadProgress { offset });
                self.persist();
            }
            match finished {
                Some(DownloadMessage::Done) => {
                    self.download = None;
                    eprintln!("device {}: download complete", self.args.endpoint);
                    let _ = self.firmware.handle(now, FirmwareInput::DownloadCompleted);
                }
                Some(DownloadMessage::Failed(result)) => {
                    self.download = None;
                    eprintln!("device {}: download failed: {result}", self.args.endpoint);
                    let _ = self.firmware.handle(now, FirmwareInput::DownloadFailed { result });
                }
                _ => {}
            }
            self.drain_events();
        }
        if self.reboot_at.is_some_and(|at| now >= at) {
            self.reboot_at = None;
            self.reboot();
        }
        if now >= self.next_update {
            if self.location.is_some() {
                self.update_registration(false);
            } else if !self.pending.iter().any(|p| p.kind == Uplink::Register) {
                self.register();
            }
        }
        let _ = self.firmware.handle_timeout(now);
        self.drain_events();
        self.notify_due(0);
    }

    fn run(&mut self) -> ! {
        // Resume what a restart interrupted (a download, an installation).
        if let Err(error) = self.firmware.handle(self.now(), FirmwareInput::Rebooted) {
            eprintln!("device {}: restoring the /5 state: {error}", self.args.endpoint);
        }
        let resumed: Vec<FirmwareOutput> = std::iter::from_fn(|| self.firmware.poll_output()).collect();
        for output in resumed {
            match output {
                FirmwareOutput::StartDownload { uri, offset } => {
                    eprintln!("device {}: resuming {uri} at byte {offset}", self.args.endpoint);
                    self.download = Some(start_download(uri, offset, self.image.clone(), self.args.download_pace));
                }
                FirmwareOutput::ApplyUpdate => self.reboot_at = Some(self.now()),
                _ => {}
            }
        }
        self.register();
        let mut buf = vec![0u8; 65_536];
        loop {
            match self.socket.recv_from(&mut buf) {
                Ok((n, from)) if from == self.args.server => {
                    let datagram = buf[..n].to_vec();
                    self.handle_datagram(&datagram);
                }
                _ => {}
            }
            self.tick();
        }
    }
}

/// The /5 object's answer to a server request (5.00 if it refused the
/// request's time, which the monotonic clock above never makes it do).
fn answer(firmware: &mut FirmwareUpdate, now: Instant, input: FirmwareInput<'_>) -> ResponseCode {
    match firmware.request(now, input) {
        Ok(code) => code.unwrap_or(ResponseCode::INTERNAL_SERVER_ERROR),
        Err(error) => {
            eprintln!("device: /5 refused a request: {error}");
            ResponseCode::INTERNAL_SERVER_ERROR
        }
    }
}

fn main() -> std::process::ExitCode {
    let args = match parse_args() {
        Ok(args) => args,
        Err(message) => {
            eprintln!("error: {message}");
            return std::process::ExitCode::FAILURE;
        }
    };
    match Device::new(args) {
        Ok(mut device) => device.run(),
        Err(message) => {
            eprintln!("error: {message}");
            std::process::ExitCode::FAILURE
        }
    }
}
