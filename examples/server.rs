//! A real LwM2M server over CoAP/UDP that upgrades the devices that register:
//! the socket loop and configuration around the library's `server::Endpoint`
//! and its CoAP binding (`coap::ServerBinding`), which hold every LwM2M and
//! CoAP rule (registration interface, tokens, observations, Block1 push and
//! Block2 image serving, retransmission, de-duplication).
//!
//! ```text
//! cargo run --release --example server -- --listen 127.0.0.1:5683 --image FILE \
//!     [--target-version V] [--strategy read|observe-resources|observe-instance|send|observe-only] \
//!     [--delivery pull|push] [--protocol coap|http] [--base-uri URI] [--timeout S] [--count N] [--json]
//! ```
//!
//! It upgrades the first N devices that register (default 1), prints one line
//! per device (a JSON object with `--json`) and exits 0 when every upgrade
//! succeeded. The Package URI is `--base-uri` followed by the image's file
//! name: by default the server's own image resource, `coap://<listen>/fw/`
//! (or `http://<host>:<port>/fw/` with `--protocol http`, served by tiny_http).
//! Without `--protocol`, the URI's scheme chooses the protocol.

use std::collections::HashMap;
use std::net::{SocketAddr, UdpSocket};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use clap::Parser;
use lwm2m_fota::coap::{CoapConfig, ServerBinding};
use lwm2m_fota::model::{Instant, Protocol};
use lwm2m_fota::server::{
    Delivery, EndpointConfig, EndpointEvent, MAX_TRANSMIT_WAIT, MemoryImage, Outcome, RegistrationLimits, Strategy,
    TaskEvent, UpgradeConfig,
};

/// Upgrades the first N devices that register.
#[derive(Parser)]
struct Args {
    /// UDP address to serve CoAP on.
    #[arg(long)]
    listen: SocketAddr,
    /// The firmware image to serve or push.
    #[arg(long)]
    image: std::path::PathBuf,
    /// The version the device must report afterwards.
    #[arg(long)]
    target_version: Option<String>,
    #[arg(long, default_value = "read", value_parser = |s: &str| Strategy::from_name(s).ok_or("read, observe-resources, observe-instance, send or observe-only"))]
    strategy: Strategy,
    #[arg(long, default_value = "pull", value_parser = |s: &str| Delivery::from_name(s).ok_or("pull or push"))]
    delivery: Delivery,
    #[arg(long, value_parser = |s: &str| match s { "coap" => Ok(Protocol::Coap), "http" => Ok(Protocol::Http), _ => Err("coap or http") })]
    protocol: Option<Protocol>,
    /// The Package URI's prefix (any place serving the image under its name).
    #[arg(long, value_parser = |s: &str| s.split_once("://").and_then(|(p, _)| Protocol::from_scheme(p)).map(|_| s.to_string()).ok_or("a coap://, coaps://, http:// or https:// URI"))]
    base_uri: Option<String>,
    /// Upgrade timeout, seconds.
    #[arg(long, default_value_t = 1200)]
    timeout: u64,
    /// Devices to upgrade.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u64).range(1..))]
    count: u64,
    /// One JSON object per device.
    #[arg(long)]
    json: bool,
}

struct Device {
    started: std::time::Instant,
    done: bool,
}

fn main() -> ExitCode {
    let args = Args::parse();
    match run(args) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run(args: Args) -> Result<bool, String> {
    let image = std::fs::read(&args.image).map_err(|e| format!("--image {:?}: {e}", args.image))?;
    let image_name = (args.image.file_name().and_then(|n| n.to_str()))
        .filter(|n| n.bytes().all(|b| b.is_ascii_alphanumeric() || b"-._".contains(&b)))
        .unwrap_or("image.bin")
        .to_string();
    // The Package URI's scheme and the protocol the task checks /5/0/8 for agree.
    let scheme = args.base_uri.as_deref().and_then(|u| u.split_once("://")).and_then(|(s, _)| Protocol::from_scheme(s));
    let protocol = match (args.protocol, scheme) {
        (Some(p), Some(s)) if p != s => {
            return Err(format!("--base-uri is {}:// but --protocol is {}", s.scheme(), p.scheme()));
        }
        (p, s) => p.or(s).unwrap_or(Protocol::Coap),
    };
    let socket = UdpSocket::bind(args.listen).map_err(|e| format!("binding {}: {e}", args.listen))?;
    let local = socket.local_addr().map_err(|e| e.to_string())?;
    let own_uri = match protocol {
        Protocol::Http => {
            let http = tiny_http::Server::http(format!("{}:0", args.listen.ip()))
                .map_err(|e| format!("starting the HTTP server: {e}"))?;
            let port = http.server_addr().to_ip().map(|a| a.port()).unwrap_or(0);
            let (image, name) = (image.clone(), format!("/fw/{image_name}"));
            std::thread::spawn(move || serve_http(http, &name, &image));
            format!("http://{}:{port}/fw/", args.listen.ip())
        }
        _ => format!("coap://{local}/fw/"),
    };
    let mut config = UpgradeConfig::new(args.base_uri.as_deref().unwrap_or(&own_uri), &image_name, image.len() as u64);
    config.strategy = args.strategy;
    config.delivery = args.delivery;
    config.protocol = protocol;
    config.timeout = Duration::from_secs(args.timeout);
    config.target_version.clone_from(&args.target_version);
    config.step_timeout = Duration::from_secs(20);
    let config = Arc::new(config);
    eprintln!("server: listening on {local}, package URI {}", config.package_uri());

    // Tokens keyed from the operating system's randomness; a lifetime ends
    // MAX_TRANSMIT_WAIT late (the Update renewing it may be in retransmission).
    let key = std::collections::hash_map::RandomState::new();
    let random = |n: u64| std::hash::BuildHasher::hash_one(&key, n);
    let endpoint = EndpointConfig {
        registrations: RegistrationLimits { expiry_grace: MAX_TRANSMIT_WAIT, ..RegistrationLimits::default() },
        token_key: [random(1), random(2)],
        ..EndpointConfig::default()
    };
    let mut binding: ServerBinding<SocketAddr> =
        ServerBinding::new(endpoint, CoapConfig { seed: random(3), ..CoapConfig::default() });
    binding.endpoint_mut().add_image(&image_name, Arc::new(MemoryImage::new(image)));

    let clock = std::time::Instant::now();
    let now = || Instant::from_millis(clock.elapsed().as_millis() as u64);
    let mut devices: HashMap<String, Device> = HashMap::new();
    let (mut finished, mut all_succeeded) = (0u64, true);
    let mut buf = vec![0u8; 65_536];
    while finished < args.count {
        let wait = binding.poll_timeout().map_or(50, |at| at.as_millis().saturating_sub(now().as_millis()));
        socket.set_read_timeout(Some(Duration::from_millis(wait.clamp(1, 50)))).ok();
        if let Ok((n, from)) = socket.recv_from(&mut buf) {
            let _ = binding.handle_datagram(now(), from, &buf[..n]);
        }
        if binding.poll_timeout().is_some_and(|at| at <= now()) {
            let _ = binding.handle_timeout(now());
        }
        while let Some((device, event)) = binding.poll_event() {
            let name = binding.endpoint().device(device).map(|d| d.name.to_string()).unwrap_or_default();
            match event {
                EndpointEvent::Registered { .. } if !devices.contains_key(&name) => {
                    let upgrade = devices.len() < args.count as usize;
                    devices.insert(name.clone(), Device { started: std::time::Instant::now(), done: !upgrade });
                    if upgrade {
                        binding.upgrade(now(), &name, config.clone()).map_err(|e| e.to_string())?;
                    }
                }
                EndpointEvent::Task(event) => log_event(clock, &name, &event),
                EndpointEvent::Finished(outcome) => {
                    let Some(d) = devices.get_mut(&name).filter(|d| !d.done) else { continue };
                    d.done = true;
                    finished += 1;
                    all_succeeded &= outcome.is_success();
                    let view = binding.endpoint().device(device);
                    let (downlinks, uplinks) = view.map_or((0, 0), |v| (v.downlinks, v.uplinks));
                    let unmatched = binding.endpoint().stats().unmatched + binding.stats().unmatched;
                    report(&args, &name, &outcome, d.started.elapsed(), downlinks, uplinks, unmatched);
                }
                _ => {}
            }
        }
        while let Some((to, datagram)) = binding.poll_transmit() {
            let _ = socket.send_to(&datagram, to);
        }
    }
    let (stats, coap) = (binding.endpoint().stats(), binding.stats());
    eprintln!(
        "server: dropped {} unmatched responses ({} from addresses no device registered from), {} stale notifications; {} malformed datagrams, {} duplicates, {} retransmissions",
        stats.unmatched + coap.unmatched,
        stats.unmatched_foreign + coap.unmatched_foreign,
        stats.stale,
        coap.malformed,
        coap.duplicates,
        coap.retransmissions
    );
    Ok(all_succeeded)
}

/// What the task went through, on stderr (one line per step, state seen, retry).
fn log_event(clock: std::time::Instant, name: &str, event: &TaskEvent) {
    let what = match event {
        TaskEvent::StepChanged(step) => format!("step: {step}"),
        TaskEvent::StateSeen { state, result } => format!("state {state:?}, update result: {result}"),
        TaskEvent::Retrying { failure, attempt } => format!("attempt {attempt} after: {failure}"),
        TaskEvent::ExecuteHeld => "execute held".into(),
        TaskEvent::LateSuccess(outcome) => format!("late success: {}", outcome.reason().unwrap_or_default()),
        _ => return,
    };
    eprintln!("server: {:7.1} s {name}: {what}", clock.elapsed().as_secs_f64());
}

fn report(args: &Args, name: &str, outcome: &Outcome, took: Duration, downlinks: u64, uplinks: u64, unmatched: u64) {
    let (result, detail) = match outcome {
        Outcome::Succeeded { version } => {
            ("succeeded", version.clone().map(|v| format!("version {v}")).unwrap_or_default())
        }
        Outcome::LateSuccess { version, failure } => {
            ("succeeded", format!("late: {failure}, then version {}", version.as_deref().unwrap_or("(not read)")))
        }
        Outcome::Failed(failure) => ("failed", failure.to_string()),
    };
    let duration_ms = took.as_millis() as u64;
    if args.json {
        let reason = outcome.reason().filter(|r| !r.is_empty());
        let line = serde_json::json!({
            "endpoint": name, "outcome": result, "reason": reason, "detail": detail, "duration_ms": duration_ms,
            "downlinks": downlinks, "uplinks": uplinks, "strategy": args.strategy.name(),
            "delivery": args.delivery.name(), "unmatched_responses": unmatched,
        });
        println!("{line}");
    } else {
        println!("{name} {result} {detail} ({duration_ms} ms, {downlinks} downlinks, {uplinks} uplinks)");
    }
}

/// Plain HTTP/1.1 with tiny_http, honouring a `Range: bytes=N-` header.
fn serve_http(http: tiny_http::Server, name: &str, image: &[u8]) {
    for request in http.incoming_requests() {
        if request.url() != name {
            let _ = request.respond(tiny_http::Response::from_data(Vec::new()).with_status_code(404));
            continue;
        }
        let range = request.headers().iter().find(|h| h.field.equiv("Range"));
        let start = range
            .and_then(|h| h.value.as_str().strip_prefix("bytes=")?.strip_suffix('-')?.parse::<usize>().ok())
            .filter(|&n| n < image.len());
        let response = match start {
            Some(start) => tiny_http::Response::from_data(image[start..].to_vec()).with_status_code(206),
            None => tiny_http::Response::from_data(image.to_vec()).with_status_code(200),
        };
        let _ = request.respond(response);
    }
}
