//! A real LwM2M device over CoAP/UDP, built on the crate's /5 object and its
//! CoAP client binding.
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
//! Every CoAP rule is the library's [`ClientBinding`]: message ids and tokens
//! (64-bit tokens, a random first message id, seeded here from the operating
//! system's randomness), RFC 7252 retransmission, the Block2 requests of a
//! CoAP download, and the answers to confirmable requests seen again (a
//! retransmission, or a duplicate made by the network), sent again from memory
//! as RFC 7252 §4.5 asks; with `--no-dedup` there is no such memory and the
//! request is executed again, as by a client built without one (Anjay's
//! default build). This file is the socket loop around it: one socket for the
//! server, which takes datagrams only from the server's address, and one per
//! CoAP download, which takes them only from the image's host.

use std::fs::{File, OpenOptions};
use std::hash::{BuildHasher, RandomState};
use std::io::{Read, Seek, SeekFrom, Write};
use std::net::{SocketAddr, ToSocketAddrs};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Receiver, Sender};
use std::time::Duration;

use lwm2m_fota::coap::{ClientBinding, ClientConfig, ClientEvent, CoapConfig, RequestHandle, Target, Uplink};
use lwm2m_fota::codec::{self, DecodeOptions};
use lwm2m_fota::device::{
    FirmwareInput, FirmwareOutput, FirmwareUpdate, FirmwareUpdateConfig, Observations, PackageBlock, PackageError,
    PackageSink,
};
use lwm2m_fota::model::{
    Block, ContentFormat, DeliveryMethod, Instant, Lwm2mVersion, ObjectLinks, ObjectVersion, Operation, Path, Protocol,
    Record, Registry, ResponseCode, UpdateResult, Value, format_object_links,
};
use mio::net::UdpSocket;
use mio::{Events, Interest, Poll, Token};
use sha2::{Digest, Sha256};

const USAGE: &str = "usage: device --server coap://HOST:PORT --endpoint NAME [--lifetime S] [--lwm2m 1.0|1.1|1.2] [--queue] [--send] [--state-file PATH] [--no-dedup] [--download-pace MS]";
const IMAGE_HEADER: &str = "lwm2m-fota-image version=";
const INITIAL_VERSION: &str = "1.0.0";
const SOFTWARE_VERSION: &str = "lwm2m-fota-device";
/// RFC 7252 MAX_TRANSMIT_WAIT: how long a queue-mode device listens after an uplink.
const AWAKE_WINDOW: Duration = Duration::from_secs(93);
/// The longest the loop sleeps: the /5 object's timers, due notifications
/// and an HTTP download's progress are looked at this often.
const TICK: Duration = Duration::from_millis(20);
/// The first Block2 size asked for (the server may answer with a smaller one).
const BLOCK_SIZE: u32 = 1024;
const SERVER: Token = Token(0);
const DOWNLOAD: Token = Token(1);
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
                let (host_port, _) = split_uri(&uri, 5683).ok_or(format!("--server {uri:?}: not coap://HOST:PORT"))?;
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

/// Splits `coap://host:port/a/b` into ("host:port", ["a", "b"]); `default_port`
/// when none is given.
fn split_uri(uri: &str, default_port: u16) -> Option<(String, Vec<String>)> {
    let rest = uri.split_once("://")?.1;
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i + 1..]),
        None => (rest, ""),
    };
    let path = path.split(['?', '#']).next().unwrap_or("");
    let has_port = match authority.strip_prefix('[') {
        Some(v6) => v6.contains("]:"),
        None => authority.contains(':'),
    };
    let host_port = if has_port { authority.to_string() } else { format!("{authority}:{default_port}") };
    Some((host_port, path.split('/').filter(|s| !s.is_empty()).map(str::to_string).collect()))
}

/// An unbound UDP socket of the address's family.
fn bind_for(addr: SocketAddr) -> std::io::Result<UdpSocket> {
    UdpSocket::bind(if addr.is_ipv6() { "[::]:0" } else { "0.0.0.0:0" }.parse().expect("an address"))
}

/// Is this datagram a request or a ping (CON or NON, code class 0)? A
/// queue-mode device with its radio off never hears one; responses to its
/// own uplinks still come while it listens for them.
fn is_request(datagram: &[u8]) -> bool {
    datagram.len() >= 4 && (datagram[0] >> 4) & 3 < 2 && datagram[1] >> 5 == 0
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

/// A plain HTTP download on its own thread, reporting over a channel.
struct HttpDownload {
    messages: Receiver<DownloadMessage>,
    cancel: Arc<AtomicBool>,
}

/// A CoAP Block2 download, one block after another through the binding
/// (RFC 7959 §2.4), restarting from 0 if the ETag changes.
struct CoapDownload {
    /// The image's host, and the socket that talks to it.
    addr: SocketAddr,
    socket: UdpSocket,
    path: Vec<String>,
    file: File,
    /// Bytes in the file so far.
    written: u64,
    /// The block asked for.
    number: u32,
    size: u32,
    etag: Option<Vec<u8>>,
    /// When to ask for the next block (`--download-pace` after the last one).
    next_fetch: Option<Instant>,
}

enum Download {
    Http(HttpDownload),
    Coap(CoapDownload),
    /// It could not start; the /5 object hears it on the next tick.
    Failed(UpdateResult),
}

fn start_http(uri: String, offset: u64, image: PathBuf, pace: Duration) -> HttpDownload {
    let (tx, rx) = mpsc::channel();
    let cancel = Arc::new(AtomicBool::new(false));
    let stop = cancel.clone();
    std::thread::spawn(move || {
        let _ = tx.send(match download_http(&uri, offset, &image, &tx, &stop, pace) {
            Ok(()) => DownloadMessage::Done,
            Err(r) => DownloadMessage::Failed(r),
        });
    });
    HttpDownload { messages: rx, cancel }
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

struct Device {
    args: Args,
    lwm2m: Lwm2mVersion,
    poll: Poll,
    socket: UdpSocket,
    coap: ClientBinding,
    clock: std::time::Instant,
    /// Where this run's clock starts: the restored object's last input, so that
    /// time never goes backwards across a restart.
    clock_origin: Instant,
    firmware: FirmwareUpdate,
    firmware_version: String,
    sink: FileSink,
    image: PathBuf,
    /// Registered (the binding holds where); false again when an Update or
    /// Register goes unanswered.
    registered: bool,
    lifetime: u32,
    next_update: Instant,
    awake_until: Instant,
    /// Observations by CoAP token.
    observations: Observations<Vec<u8>>,
    download: Option<Download>,
    reboot_at: Option<Instant>,
    send_after_register: bool,
}

impl Device {
    fn new(args: Args) -> Result<Device, String> {
        let poll = Poll::new().map_err(|e| format!("creating a poll: {e}"))?;
        let mut socket = bind_for(args.server).map_err(|e| format!("binding a UDP socket: {e}"))?;
        poll.registry().register(&mut socket, SERVER, Interest::READABLE).map_err(|e| e.to_string())?;
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
        // Unpredictable message ids and tokens (RFC 7252 §5.3.1, §5.4.2): std's
        // RandomState is keyed from the operating system's randomness.
        let seed = RandomState::new().hash_one(std::process::id());
        let coap = ClientBinding::with_config(ClientConfig {
            coap: CoapConfig { seed, ..CoapConfig::default() },
            deduplicate: !args.no_dedup,
        });
        let lifetime = args.lifetime;
        Ok(Device {
            lwm2m: args.lwm2m,
            args,
            poll,
            socket,
            coap,
            clock: std::time::Instant::now(),
            clock_origin: firmware.last_input_time(),
            firmware,
            firmware_version,
            sink: FileSink { path: image.clone(), file: None },
            image,
            registered: false,
            lifetime,
            next_update: Instant::ZERO,
            awake_until: Instant::ZERO,
            observations: Observations::new(),
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

    /// Sends what the binding has for the server and the download host.
    fn flush(&mut self) {
        while let Some((target, datagram)) = self.coap.poll_transmit() {
            match (target, &self.download) {
                (Target::Server, _) => {
                    let _ = self.socket.send_to(&datagram, self.args.server);
                    self.awake_until = self.now() + AWAKE_WINDOW;
                }
                (Target::Download, Some(Download::Coap(download))) => {
                    let _ = download.socket.send_to(&datagram, download.addr);
                }
                // For a download that has ended.
                (Target::Download, _) => {}
            }
        }
    }

    /// Acts on what the binding made of the datagrams and timeouts so far.
    fn process(&mut self) {
        while let Some(event) = self.coap.poll_event() {
            match event {
                ClientEvent::Request(handle, operation) => self.serve(&handle, operation),
                ClientEvent::Answered(what, code) => self.answered(what, code),
                ClientEvent::Block { code, block, etag, payload, .. } => self.block(code, block, etag, &payload),
                ClientEvent::Failed(Uplink::Fetch) => {
                    if matches!(self.download, Some(Download::Coap(_))) {
                        self.download_finished(Err(UpdateResult::ConnectionLost));
                    }
                }
                ClientEvent::Failed(Uplink::Register | Uplink::Update) => {
                    // No answer from the server: try registering again later.
                    self.registered = false;
                    self.next_update = self.now() + Duration::from_secs(5);
                }
                ClientEvent::Failed(Uplink::Send | Uplink::Notification | Uplink::Deregister) => {}
                ClientEvent::ObservationReset(token) => self.observations.cancel_key(&token),
            }
        }
        self.flush();
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
        self.registered = false;
        self.observations.clear();
        let mut query = vec![
            format!("ep={}", self.args.endpoint),
            format!("lt={}", self.lifetime),
            format!("lwm2m={}", self.lwm2m),
            format!("b={}", if self.args.queue && self.lwm2m == Lwm2mVersion::V1_0 { "UQ" } else { "U" }),
        ];
        if self.args.queue && self.lwm2m >= Lwm2mVersion::V1_1 {
            query.push("Q".into());
        }
        let query: Vec<&str> = query.iter().map(String::as_str).collect();
        eprintln!("device {}: register (LwM2M {})", self.args.endpoint, self.lwm2m);
        // A new Register replaces one still unanswered.
        self.coap.abandon(Uplink::Register);
        let links = self.object_links();
        self.coap.register(self.now(), &query, &links);
    }

    fn update_registration(&mut self, with_lifetime: bool) {
        if !self.registered {
            return;
        }
        let lifetime = format!("lt={}", self.lifetime);
        let query: &[&str] = if with_lifetime { &[&lifetime] } else { &[] };
        self.coap.abandon(Uplink::Update);
        self.coap.update(self.now(), query);
        self.next_update = self.now() + Duration::from_secs(u64::from(self.lifetime) / 2);
    }

    fn send_state(&mut self) {
        if self.lwm2m < Lwm2mVersion::V1_1 || !self.registered {
            return;
        }
        let mut payload = Vec::new();
        if self.firmware.encode_send(&self.firmware_version, SOFTWARE_VERSION, &mut payload).is_err() {
            return;
        }
        self.coap.send(self.now(), ContentFormat::SenmlCbor, &payload);
    }

    fn answered(&mut self, what: Uplink, code: ResponseCode) {
        match what {
            Uplink::Register if code == ResponseCode::CREATED => {
                self.registered = true;
                self.next_update = self.now() + Duration::from_secs(u64::from(self.lifetime) / 2);
                eprintln!("device {}: registered at /{}", self.args.endpoint, self.coap.location().unwrap_or_default());
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
            Uplink::Update | Uplink::Deregister | Uplink::Send | Uplink::Notification | Uplink::Fetch => {}
        }
    }

    /// Answers one server request, then acts on what the /5 object asked for.
    fn serve(&mut self, handle: &RequestHandle, operation: Result<Operation, ResponseCode>) {
        let now = self.now();
        let what = match &operation {
            Ok(operation) => format!("{} {}", operation_name(operation), operation.path()),
            Err(_) => "a request the binding could not read".to_string(),
        };
        let block = match &operation {
            Ok(Operation::WriteBlock { block, .. }) => format!(" (block {})", block.number),
            _ => String::new(),
        };
        let (code, format, payload, observe) = match operation {
            Ok(operation) => self.operate(now, handle, operation),
            Err(code) => (code, None, Vec::new(), None),
        };
        if !code.is_success() {
            eprintln!("device {}: answered {code} to {what}{block}", self.args.endpoint);
        }
        self.coap.respond(now, handle, code, format, &payload, observe);
        self.drain_events();
    }

    /// An operation's answer: code, format, payload, and the Observe option.
    fn operate(
        &mut self,
        now: Instant,
        handle: &RequestHandle,
        operation: Operation,
    ) -> (ResponseCode, Option<ContentFormat>, Vec<u8>, Option<u32>) {
        let refused = |code| (code, None, Vec::new(), None);
        match operation {
            Operation::Read { path, accept: Some(ContentFormat::LinkFormat) } => match self.discover(&path) {
                Ok(links) => (ResponseCode::CONTENT, Some(ContentFormat::LinkFormat), links.into_bytes(), None),
                Err(code) => refused(code),
            },
            Operation::Read { path, accept } => match self.encode(&path, accept) {
                Ok((format, payload)) => (ResponseCode::CONTENT, Some(format), payload, None),
                Err(code) => refused(code),
            },
            Operation::Observe { path, accept } => match self.encode(&path, accept) {
                Ok((format, payload)) => {
                    self.observations.observe(handle.token().to_vec(), path, format, now);
                    (ResponseCode::CONTENT, Some(format), payload, Some(1))
                }
                Err(code) => refused(code),
            },
            Operation::CancelObservation { path } => match self.encode(&path, handle.accept()) {
                Ok((format, payload)) => {
                    self.observations.cancel_key(&handle.token().to_vec());
                    self.observations.cancel(&path);
                    (ResponseCode::CONTENT, Some(format), payload, None)
                }
                Err(code) => refused(code),
            },
            Operation::WriteAttributes { path, .. } => {
                // From the query as sent: an item without a value removes the attribute.
                let mut attributes = self.observations.attributes(&path);
                for query in handle.query() {
                    let (name, value) = query.split_once('=').unwrap_or((query, ""));
                    let number = value.parse::<u32>().ok();
                    match name {
                        "pmin" => attributes.pmin = number,
                        "pmax" => attributes.pmax = number,
                        _ => {}
                    }
                }
                self.observations.set_attributes(path, attributes);
                refused(ResponseCode::CHANGED)
            }
            Operation::Write { path, format, payload } => refused(self.write(now, &path, format, &payload, None)),
            Operation::WriteBlock { path, format, block, total_size, payload } => {
                refused(self.write(now, &path, format, &payload, Some((block, total_size))))
            }
            Operation::Execute { path } => refused(self.execute(now, &path)),
            _ => refused(ResponseCode::METHOD_NOT_ALLOWED),
        }
    }

    fn discover(&self, path: &Path) -> Result<String, ResponseCode> {
        let records = self.records(path)?;
        let mut links: Vec<String> = vec![format!("<{path}>")];
        let mut seen = Vec::new();
        for record in &records {
            let resource = record.path.truncate(3);
            if !seen.contains(&resource) && resource != *path {
                seen.push(resource);
                links.push(format!("<{resource}>"));
            }
        }
        Ok(links.join(","))
    }

    /// A Write, or one Block1 block of one (`block`: the block and Size1).
    fn write(
        &mut self,
        now: Instant,
        path: &Path,
        format: ContentFormat,
        payload: &[u8],
        block: Option<(Block, Option<u64>)>,
    ) -> ResponseCode {
        if !self.supports(format) {
            return ResponseCode::UNSUPPORTED_CONTENT_FORMAT;
        }
        if *path == Path::resource(5, 0, 0) {
            // A Package in another format (e.g. TLV): decode the opaque value first.
            let decoded = match format {
                ContentFormat::Opaque => None,
                _ => match codec::decode(format, path, payload, &self.registry(), &DecodeOptions::default()) {
                    Ok(records) => match records.first().map(|r| &r.value) {
                        Some(Value::Opaque(bytes)) => Some(bytes.to_vec()),
                        _ => return ResponseCode::BAD_REQUEST,
                    },
                    Err(_) => return ResponseCode::BAD_REQUEST,
                },
            };
            let data = decoded.as_deref().unwrap_or(payload);
            let block = match block {
                Some((b, total_size)) => {
                    PackageBlock { number: b.number, more: b.more, size: b.size, data, total_size }
                }
                None => PackageBlock::whole(data),
            };
            let input = FirmwareInput::WritePackageBlock { block, sink: &mut self.sink };
            return answer(&mut self.firmware, now, input);
        }
        let records = match codec::decode(format, path, payload, &self.registry(), &DecodeOptions::default()) {
            Ok(records) => records,
            Err(_) => return ResponseCode::BAD_REQUEST,
        };
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
                return result;
            }
        }
        ResponseCode::CHANGED
    }

    fn execute(&mut self, now: Instant, path: &Path) -> ResponseCode {
        match (path.object_id(), path.instance_id(), path.resource_id()) {
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

    /// Sends the notifications due now (`changed`: /5/0 resources that changed,
    /// bit R for resource R), as NON with the observation's token.
    fn notify_due(&mut self, changed: u32) {
        let now = self.now();
        for due in self.observations.due(now, changed) {
            let Ok((_, payload)) = self.encode(&due.path, Some(due.format)) else { continue };
            self.coap.notify(now, &due.key, due.sequence, due.format, &payload, false);
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
                    self.start_download(uri, offset);
                }
                FirmwareOutput::AbortDownload => self.stop_download(),
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

    fn start_download(&mut self, uri: String, offset: u64) {
        self.stop_download();
        let scheme = uri.split_once("://").map(|(s, _)| s.to_ascii_lowercase());
        self.download = Some(match scheme.as_deref() {
            Some("coap") => match self.start_coap(&uri, offset) {
                Ok(download) => Download::Coap(download),
                Err(result) => Download::Failed(result),
            },
            Some("http") => Download::Http(start_http(uri, offset, self.image.clone(), self.args.download_pace)),
            _ => Download::Failed(UpdateResult::UnsupportedProtocol),
        });
        self.fetch_due();
    }

    /// A CoAP download from the block holding byte `offset`.
    fn start_coap(&mut self, uri: &str, offset: u64) -> Result<CoapDownload, UpdateResult> {
        let (host_port, path) = split_uri(uri, 5683).ok_or(UpdateResult::InvalidUri)?;
        let addr = host_port.to_socket_addrs().ok().and_then(|mut a| a.next()).ok_or(UpdateResult::InvalidUri)?;
        let mut socket = bind_for(addr).map_err(|_| UpdateResult::ConnectionLost)?;
        self.poll
            .registry()
            .register(&mut socket, DOWNLOAD, Interest::READABLE)
            .map_err(|_| UpdateResult::ConnectionLost)?;
        let number = (offset / u64::from(BLOCK_SIZE)) as u32;
        let written = u64::from(number) * u64::from(BLOCK_SIZE);
        let file = open_image(&self.image, written)?;
        let now = self.now();
        Ok(CoapDownload {
            addr,
            socket,
            path,
            file,
            written,
            number,
            size: BLOCK_SIZE,
            etag: None,
            next_fetch: Some(now),
        })
    }

    /// Asks for the next block if it is time.
    fn fetch_due(&mut self) {
        let now = self.now();
        let Some(Download::Coap(download)) = &mut self.download else { return };
        if download.next_fetch.is_none_or(|at| at > now) {
            return;
        }
        download.next_fetch = None;
        let path: Vec<&str> = download.path.iter().map(String::as_str).collect();
        self.coap.fetch(now, &path, download.number, download.size);
        self.flush();
    }

    /// The answer to a Block2 request of the CoAP download.
    fn block(&mut self, code: ResponseCode, block: Option<Block>, etag: Option<Vec<u8>>, payload: &[u8]) {
        let now = self.now();
        let pace = self.args.download_pace;
        let Some(Download::Coap(download)) = &mut self.download else { return };
        match code {
            ResponseCode::CONTENT => {}
            ResponseCode::NOT_FOUND => return self.download_finished(Err(UpdateResult::InvalidUri)),
            _ => return self.download_finished(Err(UpdateResult::ConnectionLost)),
        }
        if download.etag.is_some() && etag != download.etag {
            // The image changed under us: start again.
            download.etag = None;
            download.number = 0;
            download.written = 0;
            match open_image(&self.image, 0) {
                Ok(file) => download.file = file,
                Err(result) => return self.download_finished(Err(result)),
            }
            download.next_fetch = Some(now);
            return self.fetch_due();
        }
        download.etag = etag;
        let block = block.unwrap_or(Block { number: download.number, more: false, size: download.size });
        if block.offset() != download.written {
            // The server answered with another size: continue at our byte offset.
            download.size = block.size.min(download.size);
            download.number = (download.written / u64::from(download.size)) as u32;
            download.next_fetch = Some(now);
            return self.fetch_due();
        }
        if download.file.write_all(payload).is_err() {
            return self.download_finished(Err(UpdateResult::NotEnoughFlash));
        }
        download.written += payload.len() as u64;
        let offset = download.written;
        if !block.more {
            let synced = download.file.sync_all().map_err(|_| UpdateResult::NotEnoughFlash);
            let _ = self.firmware.handle(now, FirmwareInput::DownloadProgress { offset });
            self.persist();
            return self.download_finished(synced);
        }
        download.size = block.size;
        download.number = (download.written / u64::from(download.size)) as u32;
        download.next_fetch = Some(now + pace);
        let _ = self.firmware.handle(now, FirmwareInput::DownloadProgress { offset });
        self.persist();
        self.drain_events();
        self.fetch_due();
    }

    /// Ends the download, without telling the /5 object.
    fn stop_download(&mut self) {
        match self.download.take() {
            Some(Download::Http(download)) => download.cancel.store(true, Ordering::Relaxed),
            Some(Download::Coap(mut download)) => {
                self.coap.abandon(Uplink::Fetch);
                let _ = self.poll.registry().deregister(&mut download.socket);
            }
            Some(Download::Failed(_)) | None => {}
        }
    }

    /// Ends the download and tells the /5 object how it went.
    fn download_finished(&mut self, result: Result<(), UpdateResult>) {
        self.stop_download();
        let now = self.now();
        match result {
            Ok(()) => {
                eprintln!("device {}: download complete", self.args.endpoint);
                let _ = self.firmware.handle(now, FirmwareInput::DownloadCompleted);
            }
            Err(result) => {
                eprintln!("device {}: download failed: {result}", self.args.endpoint);
                let _ = self.firmware.handle(now, FirmwareInput::DownloadFailed { result });
            }
        }
        self.drain_events();
    }

    fn reboot(&mut self) {
        let now = self.now();
        eprintln!("device {}: rebooting", self.args.endpoint);
        if self.firmware.state() == lwm2m_fota::model::State::Updating {
            self.firmware_version = image_version(&self.image);
            let _ = self.firmware.handle(now, FirmwareInput::UpdateSucceeded);
            eprintln!("device {}: now running {}", self.args.endpoint, self.firmware_version);
        }
        self.stop_download();
        self.persist();
        // Drop events raised while "down"; a Send follows the new registration.
        while self.firmware.poll_output().is_some() {}
        self.send_after_register = true;
        self.register();
    }

    fn tick(&mut self) {
        let now = self.now();
        // Retransmit confirmable uplinks (RFC 7252 §4.2).
        self.coap.handle_timeout(now);
        self.process();
        let mut finished = None;
        match &self.download {
            Some(Download::Http(download)) => {
                let mut progress = None;
                while let Ok(message) = download.messages.try_recv() {
                    match message {
                        DownloadMessage::Progress(offset) => progress = Some(offset),
                        DownloadMessage::Done => finished = Some(Ok(())),
                        DownloadMessage::Failed(result) => finished = Some(Err(result)),
                    }
                }
                if let Some(offset) = progress {
                    let _ = self.firmware.handle(now, FirmwareInput::DownloadProgress { offset });
                    self.persist();
                }
            }
            Some(Download::Failed(result)) => finished = Some(Err(*result)),
            Some(Download::Coap(_)) | None => {}
        }
        if let Some(result) = finished {
            self.download_finished(result);
        }
        self.fetch_due();
        self.drain_events();
        if self.reboot_at.is_some_and(|at| now >= at) {
            self.reboot_at = None;
            self.reboot();
        }
        if now >= self.next_update {
            if self.registered {
                self.update_registration(false);
            } else if !self.coap.awaiting(Uplink::Register) {
                self.register();
            }
        }
        let _ = self.firmware.handle_timeout(now);
        self.drain_events();
        self.notify_due(0);
        self.flush();
    }

    /// How long the loop may sleep.
    fn wait(&self) -> Duration {
        let now = self.now();
        let next_fetch = match &self.download {
            Some(Download::Coap(download)) => download.next_fetch,
            _ => None,
        };
        [self.coap.poll_timeout(), next_fetch]
            .into_iter()
            .flatten()
            .map(|at| at.saturating_duration_since(now))
            .fold(TICK, Duration::min)
    }

    /// Takes every datagram waiting on both sockets into the binding.
    fn receive(&mut self, buf: &mut [u8]) {
        while let Ok((n, from)) = self.socket.recv_from(buf) {
            if from != self.args.server {
                continue;
            }
            if self.args.queue && self.now() > self.awake_until && is_request(&buf[..n]) {
                continue; // asleep: the radio is off
            }
            self.coap.handle_datagram(self.now(), Target::Server, &buf[..n]);
            self.process();
        }
        while let Some(Download::Coap(download)) = &self.download {
            let Ok((n, from)) = download.socket.recv_from(buf) else { break };
            if from != download.addr {
                continue;
            }
            self.coap.handle_datagram(self.now(), Target::Download, &buf[..n]);
            self.process();
        }
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
                    self.start_download(uri, offset);
                }
                FirmwareOutput::ApplyUpdate => self.reboot_at = Some(self.now()),
                _ => {}
            }
        }
        self.register();
        self.flush();
        let mut events = Events::with_capacity(8);
        let mut buf = vec![0u8; 65_536];
        loop {
            // Both sockets are drained whatever the events say.
            let _ = self.poll.poll(&mut events, Some(self.wait()));
            self.receive(&mut buf);
            self.tick();
        }
    }
}

/// How the log names an operation.
fn operation_name(operation: &Operation) -> &'static str {
    match operation {
        Operation::Read { accept: Some(ContentFormat::LinkFormat), .. } => "Discover",
        Operation::Read { .. } => "Read",
        Operation::Write { .. } => "Write",
        Operation::WriteBlock { .. } => "Write (Block1)",
        Operation::Execute { .. } => "Execute",
        Operation::Observe { .. } => "Observe",
        Operation::CancelObservation { .. } => "Cancel Observation",
        Operation::WriteAttributes { .. } => "Write-Attributes",
        _ => "an operation",
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
