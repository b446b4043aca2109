//! Many simulated devices over real UDP, against any LwM2M server, for load
//! and interop tests.
//!
//! ```text
//! cargo run --release --example swarm -- --server coap://HOST:PORT --devices N [--profile P] [--lwm2m V] \
//!     [--prefix NAME] [--json] [--timeout S] [--install-s S]
//! cargo run --release --example swarm -- --write-image FILE [--image-size BYTES] [--image-version V]
//! ```
//!
//! Each device is the simulator's device (`sim::SimDevice`: the /5 object and
//! a behaviour profile) on its own UDP socket, registering as `<prefix><i>`,
//! speaking CoAP through the library's client binding (`coap::ClientBinding`)
//! and downloading a pulled image block by block over CoAP Block2. It exits
//! when every device has finished an upgrade or given up, printing one
//! summary (with `--json`: `devices`, `upgraded`, `failed`, `wall_ms`).
//! `--write-image` writes an image the simulated devices accept (its first
//! line names its version) and exits.

use std::collections::{BinaryHeap, HashMap};
use std::net::{SocketAddr, ToSocketAddrs};
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use lwm2m_fota::coap::{ClientBinding, ClientEvent, CoapConfig, RequestHandle, Target, Uplink};
use lwm2m_fota::model::{
    ClientMessage, Instant, Lwm2mVersion, Operation, RequestId, ResponseCode, State, UpdateResult,
};
use lwm2m_fota::sim::{FleetProfile, ImageStore, Profile, SimDevice, image_bytes, registration_query};
use mio::net::UdpSocket;
use mio::{Events, Interest, Poll, Token};

#[derive(Parser)]
struct Args {
    /// The LwM2M server, `coap://HOST:PORT`.
    #[arg(long, required_unless_present = "write_image")]
    server: Option<String>,
    /// Devices to simulate.
    #[arg(long, default_value_t = 1)]
    devices: usize,
    /// Behaviour profile (conforming, lossy, no-dedup, busy, rebooting, slow-uplink, no-send, poor, mixed).
    #[arg(long, default_value = "conforming", value_parser = |s: &str| FleetProfile::from_name(s).ok_or("unknown profile"))]
    profile: FleetProfile,
    /// LwM2M version the devices register with (default: the profile's).
    #[arg(long, value_parser = |s: &str| Lwm2mVersion::parse(s).ok_or("1.0, 1.1 or 1.2"))]
    lwm2m: Option<Lwm2mVersion>,
    /// Seconds a device takes to install an image (default: the profile's).
    #[arg(long)]
    install_s: Option<u64>,
    /// Endpoint name prefix.
    #[arg(long, default_value = "swarm-")]
    prefix: String,
    /// One JSON summary.
    #[arg(long)]
    json: bool,
    /// Give up on devices not done after this many seconds.
    #[arg(long, default_value_t = 600)]
    timeout: u64,
    /// Write an image the devices accept to FILE and exit.
    #[arg(long)]
    write_image: Option<std::path::PathBuf>,
    #[arg(long, default_value_t = 32 * 1024)]
    image_size: usize,
    #[arg(long, default_value = "2.0.0")]
    image_version: String,
}

/// One device: the simulated client, its CoAP transport, its socket.
struct Member {
    sim: SimDevice,
    coap: ClientBinding,
    socket: UdpSocket,
    /// Server requests being answered, by the id the sim device knows them by.
    requests: HashMap<RequestId, (RequestHandle, bool)>,
    /// Observations: the sim device's id of the Observe → its token.
    observations: HashMap<RequestId, Vec<u8>>,
    /// The image being fetched: where, its path, and the next block.
    fetch: Option<(SocketAddr, Vec<String>)>,
    last_register: Option<ClientMessage>,
    deadline: Option<Instant>,
    started_upgrade: bool,
    /// The id the sim device knows the last server request by.
    next_request: RequestId,
}

fn main() -> ExitCode {
    let args = Args::parse();
    if let Some(path) = &args.write_image {
        return match std::fs::write(path, image_bytes(&args.image_version, args.image_size)) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("error: writing {}: {e}", path.display());
                ExitCode::FAILURE
            }
        };
    }
    match run(&args) {
        Ok(all) => {
            if all {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            }
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

fn resolve(uri: &str) -> Option<(SocketAddr, Vec<String>)> {
    let rest = uri.strip_prefix("coap://")?;
    let (authority, path) = rest.split_once('/').unwrap_or((rest, ""));
    let authority = if authority.contains(':') { authority.to_string() } else { format!("{authority}:5683") };
    let addr = authority.to_socket_addrs().ok()?.next()?;
    Some((addr, path.split('/').filter(|s| !s.is_empty()).map(str::to_string).collect()))
}

fn run(args: &Args) -> Result<bool, String> {
    let server_uri = args.server.as_deref().unwrap_or_default();
    let (server, _) = resolve(server_uri).ok_or(format!("--server {server_uri:?}: not coap://HOST:PORT"))?;
    let clock = std::time::Instant::now();
    let now = || Instant::from_millis(clock.elapsed().as_millis() as u64);
    let mut poll = Poll::new().map_err(|e| e.to_string())?;
    let mut leaked: HashMap<String, &'static Profile> = HashMap::new();
    let mut members = Vec::with_capacity(args.devices);
    let bind: SocketAddr = if server.is_ipv4() { "0.0.0.0:0" } else { "[::]:0" }.parse().unwrap();
    for i in 0..args.devices {
        let mut profile = args.profile.for_device(0x5a4d, i as u64);
        if args.lwm2m.is_some() || args.install_s.is_some() {
            // One changed copy per profile, for the life of the process.
            profile = leaked.entry(profile.name.to_string()).or_insert_with(|| {
                let mut changed = *profile;
                changed.lwm2m_version = args.lwm2m.unwrap_or(changed.lwm2m_version);
                changed.install_time = args.install_s.map_or(changed.install_time, Duration::from_secs);
                Box::leak(Box::new(changed))
            });
        }
        let mut socket = UdpSocket::bind(bind).map_err(|e| format!("binding a socket: {e}"))?;
        poll.registry().register(&mut socket, Token(i), Interest::READABLE).map_err(|e| e.to_string())?;
        let mut sim = SimDevice::new(i as u64, profile, 0x5a4d, "1.0.0", now());
        sim.set_external_downloads();
        let coap = ClientBinding::new(CoapConfig { seed: i as u64, ..CoapConfig::default() });
        members.push(Member {
            sim,
            coap,
            socket,
            requests: HashMap::new(),
            observations: HashMap::new(),
            fetch: None,
            last_register: None,
            deadline: None,
            started_upgrade: false,
            next_request: 0,
        });
    }
    let images = ImageStore::new();
    let mut timers: BinaryHeap<std::cmp::Reverse<(Instant, usize)>> = BinaryHeap::new();
    for (i, member) in members.iter_mut().enumerate() {
        pump(member, i, now(), &images, server, &args.prefix, &mut timers);
    }
    let mut events = Events::with_capacity(1024);
    let mut buf = vec![0u8; 2048];
    let give_up = now() + Duration::from_secs(args.timeout);
    // Once every device is done the sockets stay open until the server has
    // been quiet for two seconds: it still verifies the last upgrades.
    let (mut all_done_at, mut last_heard) = (None, now());
    loop {
        if all_done_at.is_none() && members.iter().all(|m| finished(m).is_some()) {
            all_done_at = Some(now());
        }
        let quiet = now().saturating_duration_since(last_heard) >= Duration::from_secs(2);
        let lingered = all_done_at.is_some_and(|at| now().saturating_duration_since(at) >= Duration::from_secs(30));
        if (all_done_at.is_some() && (quiet || lingered)) || now() >= give_up {
            break;
        }
        let next = timers.peek().map(|r| r.0.0);
        let wait = next.map_or(100, |at| at.as_millis().saturating_sub(now().as_millis())).min(100);
        poll.poll(&mut events, Some(Duration::from_millis(wait))).map_err(|e| e.to_string())?;
        for event in events.iter() {
            let i = event.token().0;
            while let Ok((n, from)) = members[i].socket.recv_from(&mut buf) {
                // The image's host, when it is not the server itself.
                let download = from != server && members[i].fetch.as_ref().is_some_and(|(addr, _)| *addr == from);
                let target = if download { Target::Download } else { Target::Server };
                members[i].coap.handle_datagram(now(), target, &buf[..n]);
                last_heard = now();
            }
            pump(&mut members[i], i, now(), &images, server, &args.prefix, &mut timers);
        }
        while let Some(&std::cmp::Reverse((at, i))) = timers.peek() {
            if at > now() {
                break;
            }
            timers.pop();
            if members[i].deadline != Some(at) {
                continue;
            }
            members[i].deadline = None;
            members[i].sim.handle_timeout(now(), &images);
            members[i].coap.handle_timeout(now());
            pump(&mut members[i], i, now(), &images, server, &args.prefix, &mut timers);
        }
    }
    let upgraded = members.iter().filter(|m| finished(m) == Some(true)).count();
    let failed = members.len() - upgraded;
    let wall_ms = clock.elapsed().as_millis() as u64;
    if args.json {
        println!(
            "{}",
            serde_json::json!({"devices": members.len(), "upgraded": upgraded, "failed": failed, "wall_ms": wall_ms})
        );
    } else {
        println!("{} devices: {upgraded} upgraded, {failed} failed, {wall_ms} ms", members.len());
    }
    Ok(failed == 0)
}

/// Done: upgraded (Some(true)), or the upgrade failed and the device is idle
/// with a failure result (Some(false)); None while anything is under way.
fn finished(m: &Member) -> Option<bool> {
    if m.sim.firmware_version() != "1.0.0" {
        return Some(true);
    }
    let firmware = m.sim.firmware();
    let failed = m.started_upgrade
        && firmware.state() == State::Idle
        && !matches!(firmware.update_result(), UpdateResult::Initial | UpdateResult::Success);
    failed.then_some(false)
}

/// Moves messages between the sim device, its CoAP binding and its socket,
/// until nothing is left, then files its next deadline.
fn pump(
    m: &mut Member,
    index: usize,
    now: Instant,
    images: &ImageStore,
    server: SocketAddr,
    prefix: &str,
    timers: &mut BinaryHeap<std::cmp::Reverse<(Instant, usize)>>,
) {
    loop {
        let mut moved = false;
        while let Some(message) = m.sim.poll_message() {
            moved = true;
            uplink(m, now, message, prefix);
        }
        if let Some((uri, offset)) = m.sim.poll_fetch() {
            moved = true;
            m.started_upgrade = true;
            match resolve(&uri) {
                Some((addr, path)) => {
                    let refs: Vec<&str> = path.iter().map(String::as_str).collect();
                    m.coap.fetch(now, &refs, (offset / 1024) as u32, 1024);
                    m.fetch = Some((addr, path));
                }
                None => m.sim.fetch_finished(now, Err(UpdateResult::UnsupportedProtocol), images),
            }
        }
        while let Some(event) = m.coap.poll_event() {
            moved = true;
            match event {
                ClientEvent::Request(handle, Ok(operation)) => {
                    m.next_request += 1;
                    let id = m.next_request;
                    let observe = matches!(operation, Operation::Observe { .. });
                    m.started_upgrade |= matches!(operation, Operation::Write { .. } | Operation::WriteBlock { .. });
                    if observe {
                        m.observations.insert(id, handle.token().to_vec());
                    }
                    m.requests.insert(id, (handle, observe));
                    m.sim.handle(now, id, operation, images);
                }
                ClientEvent::Request(handle, Err(code)) => m.coap.respond(now, &handle, code, None, &[], None),
                ClientEvent::Answered(Uplink::Register | Uplink::Update, code) if !code.is_success() => {
                    if let Some(register) = m.last_register.clone() {
                        m.sim.uplink_failed(now, None, &register);
                    }
                }
                ClientEvent::Failed(Uplink::Register | Uplink::Update) => {
                    if let Some(register) = m.last_register.clone() {
                        m.sim.uplink_failed(now, None, &register);
                    }
                }
                ClientEvent::Block { code, block, payload, .. } => match (code, block) {
                    (ResponseCode::CONTENT, Some(block)) if m.sim.is_fetching() => {
                        m.sim.fetched(now, block.offset(), &payload, images);
                        match (&m.fetch, block.more) {
                            (Some((_, path)), true) => {
                                let refs: Vec<&str> = path.iter().map(String::as_str).collect();
                                m.coap.fetch(now, &refs, block.number + 1, block.size);
                            }
                            _ => m.sim.fetch_finished(now, Ok(()), images),
                        }
                    }
                    (ResponseCode::NOT_FOUND, _) => m.sim.fetch_finished(now, Err(UpdateResult::InvalidUri), images),
                    _ => m.sim.fetch_finished(now, Err(UpdateResult::ConnectionLost), images),
                },
                ClientEvent::Failed(Uplink::Fetch) => {
                    m.sim.fetch_finished(now, Err(UpdateResult::ConnectionLost), images)
                }
                _ => {}
            }
        }
        while let Some((target, datagram)) = m.coap.poll_transmit() {
            moved = true;
            let to = match (target, &m.fetch) {
                (Target::Download, Some((addr, _))) => *addr,
                _ => server,
            };
            let _ = m.socket.send_to(&datagram, to);
        }
        if !moved {
            break;
        }
    }
    let deadline = [m.sim.poll_timeout(), m.coap.poll_timeout()].into_iter().flatten().min();
    if deadline != m.deadline {
        m.deadline = deadline;
        if let Some(at) = deadline {
            timers.push(std::cmp::Reverse((at, index)));
        }
    }
}

fn uplink(m: &mut Member, now: Instant, message: ClientMessage, prefix: &str) {
    match &message {
        ClientMessage::Register(registration) => {
            let mut renamed = registration.clone();
            renamed.endpoint = format!("{prefix}{}", registration.endpoint.trim_start_matches("sim-")).into();
            let mut buffer = String::new();
            let (query, count) = registration_query(&mut buffer, &renamed);
            m.coap.register(now, &query[..count], &registration.objects.to_string());
            m.observations.clear();
            m.last_register = Some(message);
        }
        ClientMessage::Update { lifetime, .. } => {
            let lt = lifetime.map(|lt| format!("lt={lt}"));
            let refs: Vec<&str> = lt.iter().map(String::as_str).collect();
            m.coap.update(now, &refs);
        }
        ClientMessage::Deregister => m.coap.deregister(now),
        ClientMessage::Response { id, code, format, payload } => {
            if let Some((handle, observe)) = m.requests.remove(id) {
                let sequence = (observe && code.is_success()).then_some(0);
                m.coap.respond(now, &handle, *code, *format, payload, sequence);
            }
        }
        ClientMessage::Notify { observation, sequence, format, payload } => {
            if let Some(token) = m.observations.get(observation) {
                let token = token.clone();
                m.coap.notify(now, &token, *sequence, *format, payload, false);
            }
        }
        ClientMessage::Send { format, payload } => m.coap.send(now, *format, payload),
        _ => {}
    }
}
