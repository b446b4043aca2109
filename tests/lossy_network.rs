//! examples/server and examples/device over real UDP through a seeded lossy
//! relay (tests/common/relay.rs): forged responses from another port are
//! dropped and counted, and upgrades survive loss, duplication and
//! reordering with every strategy, pull and push, with and without the
//! device's de-duplication (`--no-dedup`, a client without a response cache).
mod common;

#[path = "../examples/support/coap.rs"]
mod coap;
#[path = "common/relay.rs"]
mod relay;

use std::io::{BufRead, BufReader, Read};
use std::net::{SocketAddr, UdpSocket};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use coap_lite::{CoapOption, MessageClass, MessageType, Packet, RequestType};
use lwm2m_fota::model::ResponseCode;
use relay::{Impairment, Relay, RelayConfig, RelayStats, Way};

const STRATEGIES: [&str; 5] = ["read", "observe-resources", "observe-instance", "send", "observe-only"];
const TARGET: &str = "2.0.0";

/// A child process, killed when dropped, whose stdout and stderr are collected
/// by threads (so a chatty child never blocks on a full pipe).
struct Proc {
    child: Child,
    stdout: Arc<Mutex<String>>,
    stderr: Arc<Mutex<String>>,
}

impl Proc {
    fn spawn(name: &str, args: &[String]) -> Proc {
        let mut child = Command::new(common::example_binary(name))
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let collect = |pipe: Box<dyn Read + Send>| {
            let text = Arc::new(Mutex::new(String::new()));
            let sink = text.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(pipe).lines() {
                    let Ok(line) = line else { break };
                    let mut sink = sink.lock().unwrap();
                    sink.push_str(&line);
                    sink.push('\n');
                }
            });
            text
        };
        let stdout = collect(Box::new(child.stdout.take().unwrap()));
        let stderr = collect(Box::new(child.stderr.take().unwrap()));
        Proc { child, stdout, stderr }
    }

    fn exited(&mut self) -> Option<bool> {
        self.child.try_wait().unwrap().map(|status| status.success())
    }

    fn stdout(&self) -> String {
        self.stdout.lock().unwrap().clone()
    }

    fn stderr(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    UdpSocket::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

fn image(name: &str, size: usize) -> PathBuf {
    let path = std::env::temp_dir().join(format!("lwm2m-fota-lossy-{}-{name}.bin", std::process::id()));
    let mut bytes = format!("lwm2m-fota-image version={TARGET}\n").into_bytes();
    while bytes.len() < size {
        bytes.push((bytes.len() * 13 % 251) as u8);
    }
    std::fs::write(&path, bytes).unwrap();
    path
}

fn strings(args: &[&str]) -> Vec<String> {
    args.iter().map(|s| s.to_string()).collect()
}

/// One server with its relay and its devices.
struct Scenario {
    name: String,
    strategy: &'static str,
    delivery: &'static str,
    /// Devices: (endpoint, --no-dedup).
    devices: Vec<(String, bool)>,
    seed: u64,
    up: Impairment,
    down: Impairment,
    timeout_s: u64,
    image_size: usize,
}

struct Running {
    scenario: Scenario,
    relay: Relay,
    server: Proc,
    devices: Vec<Proc>,
    image: PathBuf,
    started: Instant,
    ended: Option<(Instant, bool)>,
}

/// What became of one device.
#[derive(Debug)]
struct DeviceResult {
    scenario: String,
    endpoint: String,
    no_dedup: bool,
    /// The server's JSON line for it (None: the server never reported it).
    report: Option<serde_json::Value>,
    /// How many times the device installed an image.
    installs: usize,
    /// The version it runs at the end.
    running: String,
    /// Its stderr.
    log: String,
}

impl DeviceResult {
    fn succeeded(&self) -> bool {
        self.report.as_ref().is_some_and(|r| r["outcome"] == "succeeded")
    }

    fn reason(&self) -> String {
        match &self.report {
            None => "no-report".into(),
            Some(r) => r["reason"].as_str().unwrap_or("-").to_string(),
        }
    }
}

struct ScenarioResult {
    name: String,
    wall: Duration,
    exit_ok: Option<bool>,
    relay: RelayStats,
    server_stderr_tail: String,
    server_log: String,
    devices: Vec<DeviceResult>,
}

fn start(scenario: Scenario) -> Running {
    let port = free_port();
    let server_addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let relay = Relay::start(server_addr, RelayConfig::new(scenario.seed, scenario.up, scenario.down));
    let image = image(&scenario.name, scenario.image_size);
    let mut args = strings(&["--listen", &server_addr.to_string(), "--image", &image.display().to_string()]);
    args.extend(strings(&["--target-version", TARGET, "--strategy", scenario.strategy, "--delivery"]));
    args.extend(strings(&[scenario.delivery, "--timeout", &scenario.timeout_s.to_string()]));
    args.extend(strings(&["--count", &scenario.devices.len().to_string(), "--json"]));
    // The download goes through the relay too.
    args.extend(strings(&["--base-uri", &format!("coap://{}/fw/", relay.addr())]));
    let server = Proc::spawn("server", &args);
    std::thread::sleep(Duration::from_millis(300));
    let devices = scenario
        .devices
        .iter()
        .map(|(endpoint, no_dedup)| {
            let mut args = strings(&["--server", &format!("coap://{}", relay.addr()), "--endpoint", endpoint]);
            args.extend(strings(&["--lifetime", "30", "--lwm2m", "1.1"]));
            if scenario.strategy == "send" {
                args.push("--send".into());
            }
            if *no_dedup {
                args.push("--no-dedup".into());
            }
            let _ = std::fs::remove_file(std::env::temp_dir().join(format!("lwm2m-fota-device-{endpoint}.image")));
            Proc::spawn("device", &args)
        })
        .collect();
    Running { scenario, relay, server, devices, image, started: Instant::now(), ended: None }
}

/// Runs every scenario at once; a server still running after `limit` is killed.
fn run_all(scenarios: Vec<Scenario>, limit: Duration) -> Vec<ScenarioResult> {
    let mut running: Vec<Running> = scenarios.into_iter().map(start).collect();
    let until = Instant::now() + limit;
    while Instant::now() < until && running.iter().any(|r| r.ended.is_none()) {
        for run in running.iter_mut().filter(|r| r.ended.is_none()) {
            if let Some(ok) = run.server.exited() {
                run.ended = Some((Instant::now(), ok));
            }
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    // Let the devices settle (and the pipes drain) before looking at them.
    std::thread::sleep(Duration::from_millis(500));
    running
        .into_iter()
        .map(|run| {
            let Running { scenario, relay, server, devices, image, started, ended } = run;
            let out = server.stdout();
            let reports: Vec<serde_json::Value> = out.lines().filter_map(|l| serde_json::from_str(l).ok()).collect();
            let results = scenario
                .devices
                .iter()
                .zip(&devices)
                .map(|((endpoint, no_dedup), device)| {
                    let err = device.stderr();
                    let installs: Vec<&str> =
                        err.lines().filter_map(|l| l.split_once("now running ").map(|(_, v)| v)).collect();
                    DeviceResult {
                        scenario: scenario.name.clone(),
                        endpoint: endpoint.clone(),
                        no_dedup: *no_dedup,
                        report: reports.iter().find(|r| r["endpoint"] == endpoint.as_str()).cloned(),
                        installs: installs.len(),
                        running: installs.last().map_or("1.0.0".to_string(), |v| v.trim().to_string()),
                        log: err.clone(),
                    }
                })
                .collect();
            let err = server.stderr();
            let tail: Vec<&str> = err.lines().rev().take(3).collect();
            let result = ScenarioResult {
                name: scenario.name.clone(),
                wall: ended.map_or(started.elapsed(), |(at, _)| at - started),
                exit_ok: ended.map(|(_, ok)| ok),
                relay: relay.stats(),
                server_stderr_tail: tail.into_iter().rev().collect::<Vec<_>>().join(" | "),
                server_log: err.clone(),
                devices: results,
            };
            drop(devices);
            drop(server);
            drop(relay);
            let _ = std::fs::remove_file(image);
            for (endpoint, _) in &scenario.devices {
                let _ = std::fs::remove_file(std::env::temp_dir().join(format!("lwm2m-fota-device-{endpoint}.image")));
            }
            result
        })
        .collect()
}

/// Prints one line per device (seen with `--nocapture`).
fn print(results: &[ScenarioResult]) {
    for s in results {
        let r = &s.relay;
        eprintln!(
            "{}: {:.1} s, server exit {:?}, relay up {}/{} dropped {} dup, down {}/{} dropped {} dup; {}",
            s.name,
            s.wall.as_secs_f64(),
            s.exit_ok,
            r.dropped_up,
            r.received_up,
            r.duplicated_up,
            r.dropped_down,
            r.received_down,
            r.duplicated_down,
            s.server_stderr_tail
        );
        for d in &s.devices {
            let report = d.report.as_ref();
            eprintln!(
                "    {:<44} {:<9} {:<10} {:<48} {:>7} ms  installs {} running {} unmatched {} refusals {}",
                d.endpoint,
                if d.no_dedup { "no-dedup" } else { "dedup" },
                report.and_then(|r| r["outcome"].as_str()).unwrap_or("none"),
                d.reason(),
                report.and_then(|r| r["duration_ms"].as_u64()).unwrap_or(0),
                d.installs,
                d.running,
                report.and_then(|r| r["unmatched_responses"].as_u64()).unwrap_or(0),
                d.log.lines().filter(|l| l.contains(": answered ")).count(),
            );
            if !d.succeeded() {
                // What the server and the device said about it, last lines first cut.
                let tail = |text: &str, n: usize| {
                    let lines: Vec<&str> = text.lines().collect();
                    lines[lines.len().saturating_sub(n)..].join("\n        ")
                };
                let server_lines: String =
                    s.server_log.lines().filter(|l| l.contains(&d.endpoint)).collect::<Vec<_>>().join("\n");
                eprintln!("      server:\n        {}", tail(&server_lines, 40));
                eprintln!("      device:\n        {}", tail(&d.log, 25));
            }
        }
    }
}

/// Every strategy × pull and push, with one device per mode (or, with
/// `alternate`, one device whose mode alternates from scenario to scenario).
///
/// With `max_loss_run`, a scenario's seed is the first from its own base whose
/// first 400 datagrams each way hold no longer run of consecutive drops. Loss
/// stays independent per datagram at the given rate; what is skipped is the
/// rare seed (at 15 %, about 1 in 1,000 per 100 datagrams for a run of 6)
/// where every transmission of one confirmable exchange is lost: CoAP then
/// gives up only after MAX_TRANSMIT_WAIT (about 80–93 s), and no server can
/// finish a 120 s upgrade around that.
fn matrix(
    tag: &str,
    loss: f64,
    timeout_s: u64,
    alternate: bool,
    seed: u64,
    max_loss_run: Option<usize>,
) -> Vec<Scenario> {
    let mut scenarios = Vec::new();
    let lossy = Impairment::new(loss, 0.05, 2, 40);
    for (i, strategy) in STRATEGIES.into_iter().enumerate() {
        for (j, delivery) in ["pull", "push"].into_iter().enumerate() {
            let k = (i * 2 + j) as u64;
            let name = format!("{tag}-{strategy}-{delivery}");
            let endpoint = |mode: &str| format!("{tag}-{}-{strategy}-{delivery}-{mode}", std::process::id());
            let devices = if alternate {
                let no_dedup = k % 2 == 1;
                vec![(endpoint(if no_dedup { "nodedup" } else { "dedup" }), no_dedup)]
            } else {
                vec![(endpoint("dedup"), false), (endpoint("nodedup"), true)]
            };
            let mut seed = seed.wrapping_mul(1_000_000).wrapping_add(k * 1000);
            if let Some(max) = max_loss_run {
                let bursty = |seed: u64| {
                    let config = RelayConfig::new(seed, lossy, lossy);
                    config.longest_loss_run(Way::Up, 400) > max || config.longest_loss_run(Way::Down, 400) > max
                };
                while bursty(seed) {
                    seed += 1;
                }
            }
            scenarios.push(Scenario {
                name,
                strategy,
                delivery,
                devices,
                seed,
                up: lossy,
                down: lossy,
                timeout_s,
                image_size: 12_000,
            });
        }
    }
    scenarios
}

#[test]
fn response_matching_needs_the_address_the_message_id_and_the_token() {
    let to: SocketAddr = "127.0.0.1:5000".parse().unwrap();
    let other: SocketAddr = "127.0.0.1:5001".parse().unwrap();
    let request = coap::request(MessageType::Confirmable, RequestType::Get, 77, &[1, 2, 3, 4]);
    let ack = coap::response_to(&request, ResponseCode::CONTENT);
    assert!(coap::answers(&ack, to, to, 77, &[1, 2, 3, 4]));
    assert!(!coap::answers(&ack, other, to, 77, &[1, 2, 3, 4]), "another port");
    assert!(!coap::answers(&ack, to, to, 78, &[1, 2, 3, 4]), "another message id");
    assert!(!coap::answers(&ack, to, to, 77, &[1, 2, 3, 5]), "another token");
    let empty = coap::empty(MessageType::Acknowledgement, 77);
    assert!(coap::answers(&empty, to, to, 77, &[1, 2, 3, 4]));
    assert!(!coap::answers(&empty, other, to, 77, &[1, 2, 3, 4]));
    let mut separate = coap::response_to(&request, ResponseCode::CONTENT);
    separate.header.set_type(MessageType::Confirmable);
    separate.header.message_id = 9;
    assert!(coap::answers(&separate, to, to, 77, &[1, 2, 3, 4]), "a separate response by token");
    assert!(!coap::answers(&separate, other, to, 77, &[1, 2, 3, 4]));
    let reset = coap::empty(MessageType::Reset, 77);
    assert!(!coap::answers(&reset, to, to, 77, &[1, 2, 3, 4]));
    // Tokens are 8 random bytes; message ids count up from a random start.
    let (mut a, mut b) = (coap::Ids::new(), coap::Ids::new());
    let (ta, tb) = (a.token(), b.token());
    assert_eq!(ta.len(), 8);
    assert_ne!(ta, tb);
    assert_ne!(a.token(), ta);
    let first = a.message_id();
    assert_eq!(a.message_id(), first.wrapping_add(1));
    let timeout = a.first_timeout();
    assert!(timeout >= coap::ACK_TIMEOUT && timeout < coap::ACK_TIMEOUT * 3 / 2);
}

/// A socket on another port of 127.0.0.1 answers every request the server
/// sends with a forged `ACK 4.04` carrying the request's message id and token
/// (sniffed at the relay, and sent before the device's answer can arrive), a
/// forged separate `NON 4.04` with its token, and forged notifications of the
/// observations. Matching by message id (or token) from anyone would take the
/// forgery and fail the upgrade; by endpoint it is dropped and counted.
#[test]
fn forged_responses_from_another_port_are_dropped_and_counted() {
    let port = free_port();
    let server_addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let (tap_tx, tap_rx) = mpsc::channel();
    // No loss, but 150 ms each way: the forger always answers first.
    let slow = Impairment::new(0.0, 0.0, 150, 0);
    let relay = Relay::start_with_tap(server_addr, RelayConfig::new(1, slow, slow), Some(tap_tx));
    let image = image("forged", 8_000);
    let endpoint = format!("forged-{}", std::process::id());
    let mut args = strings(&["--listen", &server_addr.to_string(), "--image", &image.display().to_string()]);
    args.extend(strings(&["--target-version", TARGET, "--strategy", "observe-resources", "--timeout", "60"]));
    args.push("--json".into());
    let mut server = Proc::spawn("server", &args);
    std::thread::sleep(Duration::from_millis(300));
    let forged = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let forger = {
        let (forged, stop) = (forged.clone(), stop.clone());
        std::thread::spawn(move || {
            let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
            let mut observations: Vec<(Vec<u8>, Instant)> = Vec::new();
            let send = |packet: &Packet| {
                socket.send_to(&coap::bytes(packet), server_addr).unwrap();
                forged.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            };
            let mut sequence = 1000u64;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                // Forged notifications, once the real observation stands.
                let now = Instant::now();
                for (token, at) in observations.iter_mut().filter(|(_, at)| *at <= now) {
                    sequence += 1;
                    let mut packet = Packet::new();
                    packet.header.set_type(MessageType::NonConfirmable);
                    packet.header.code = MessageClass::from(ResponseCode::CONTENT.0);
                    packet.header.message_id = sequence as u16;
                    packet.set_token(token.clone());
                    coap::set_uint(&mut packet, CoapOption::Observe, sequence);
                    coap::set_uint(&mut packet, CoapOption::ContentFormat, 0);
                    packet.payload = b"9".to_vec(); // Update Result 9 / State 9: nonsense that would fail the upgrade
                    send(&packet);
                    *at = now + Duration::from_millis(700);
                }
                let Ok(tapped) = tap_rx.recv_timeout(Duration::from_millis(50)) else { continue };
                if tapped.way != Way::Down {
                    continue;
                }
                let Some(request) = coap::parse(&tapped.bytes) else { continue };
                if !matches!(request.header.code, MessageClass::Request(_))
                    || request.header.get_type() != MessageType::Confirmable
                {
                    continue;
                }
                // The piggybacked forgery: right message id, right token, wrong port.
                send(&coap::response_to(&request, ResponseCode::NOT_FOUND));
                // The separate forgery: right token.
                let mut separate = coap::response_to(&request, ResponseCode::NOT_FOUND);
                separate.header.set_type(MessageType::NonConfirmable);
                separate.header.message_id = request.header.message_id.wrapping_add(0x5555);
                send(&separate);
                if coap::observe(&request) == Some(0) {
                    observations.push((request.get_token().to_vec(), Instant::now() + Duration::from_millis(600)));
                }
            }
        })
    };
    let _device = Proc::spawn(
        "device",
        &strings(&["--server", &format!("coap://{}", relay.addr()), "--endpoint", &endpoint, "--lifetime", "30"]),
    );
    let until = Instant::now() + Duration::from_secs(90);
    let ok = loop {
        if let Some(ok) = server.exited() {
            break ok;
        }
        assert!(Instant::now() < until, "server did not finish: {}", server.stderr());
        std::thread::sleep(Duration::from_millis(50));
    };
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    forger.join().unwrap();
    std::thread::sleep(Duration::from_millis(200));
    let forged = forged.load(std::sync::atomic::Ordering::Relaxed);
    let out = server.stdout();
    let err = server.stderr();
    let _ = std::fs::remove_file(&image);
    let _ = std::fs::remove_file(std::env::temp_dir().join(format!("lwm2m-fota-device-{endpoint}.image")));
    let report: serde_json::Value = serde_json::from_str(out.lines().next().unwrap_or("{}")).unwrap_or_default();
    eprintln!("forged {forged} datagrams; report {report}; server: {err}");
    assert!(ok, "the upgrade failed despite the forgeries being from another port: {report}\n{err}");
    assert_eq!(report["outcome"], "succeeded", "{report}");
    assert!(report["unmatched_responses"].as_u64().unwrap_or(0) > 0, "{report}");
    let dropped = err
        .lines()
        .find_map(|l| l.strip_prefix("server: dropped "))
        .and_then(|rest| rest.split_once("unmatched responses (").map(|(_, r)| r))
        .and_then(|r| r.split_whitespace().next())
        .and_then(|n| n.parse::<u64>().ok())
        .unwrap_or_else(|| panic!("no count of dropped responses on stderr: {err}"));
    assert!(forged >= 10, "only {forged} forgeries sent");
    // Every forgery that reached the server before it exited was dropped and
    // counted as from a foreign address (the last request's may arrive after).
    assert!(dropped <= forged && dropped + 10 >= forged, "{dropped} dropped of {forged} forged");
}

/// The lossy matrix: every strategy × pull and push, a device with and one
/// without de-duplication per server, 15 % loss both ways, 5 % duplication,
/// 0–40 ms jitter; the download goes through the relay. None may fail for
/// anything but time, none may be reported failed while it runs the image,
/// none may install twice. At most one of the 20 may run out of its 120 s:
/// at this loss 0.16 % of CoAP exchanges lose all five transmissions (and
/// about a minute), which RFC 7252's timing cannot avoid (BENCHMARKS.md).
/// In the runs measured, all 20 upgraded.
#[test]
fn every_strategy_survives_15_percent_loss_duplication_and_reordering() {
    let wall = Instant::now();
    let results = run_all(matrix("m15", 0.15, 120, false, 15, Some(4)), Duration::from_secs(330));
    print(&results);
    eprintln!("15% matrix: {:.1} s wall", wall.elapsed().as_secs_f64());
    let devices: Vec<&DeviceResult> = results.iter().flat_map(|s| &s.devices).collect();
    let failed: Vec<String> = devices
        .iter()
        .filter(|d| !d.succeeded())
        .map(|d| format!("{} ({}): {}", d.endpoint, d.scenario, d.reason()))
        .collect();
    let twice: Vec<&str> = devices.iter().filter(|d| d.installs > 1).map(|d| d.endpoint.as_str()).collect();
    let false_failures: Vec<&str> =
        devices.iter().filter(|d| !d.succeeded() && d.running == TARGET).map(|d| d.endpoint.as_str()).collect();
    assert!(twice.is_empty(), "images installed twice: {twice:?}");
    assert!(false_failures.is_empty(), "reported failed but running {TARGET}: {false_failures:?}");
    let not_time: Vec<&String> = failed.iter().filter(|f| !f.contains(": timeout-")).collect();
    assert!(not_time.is_empty(), "failed for something but time: {not_time:#?}");
    assert!(failed.len() <= 1, "{} of {} failed: {failed:#?}", failed.len(), devices.len());
}

/// 30 % loss both ways (CI-sized: one device per strategy × delivery, the
/// de-duplication mode alternating). At least 90 % upgrade, no false
/// failures, no image installed twice.
///
/// Measured (debug build, 2 cores): 10 of 10 upgraded in 315 s and in 474 s
/// of wall time, the slowest an observe-only pull at 470 s; no false failure,
/// no second install. It runs beside the 15 % matrix (the test harness runs
/// a file's tests in parallel), so `cargo test` waits for the longer one.
#[test]
fn most_upgrades_survive_30_percent_loss_without_false_failures() {
    let wall = Instant::now();
    let results = run_all(matrix("m30", 0.30, 600, true, 30, None), Duration::from_secs(1300));
    print(&results);
    eprintln!("30% matrix: {:.1} s wall", wall.elapsed().as_secs_f64());
    let devices: Vec<&DeviceResult> = results.iter().flat_map(|s| &s.devices).collect();
    let succeeded = devices.iter().filter(|d| d.succeeded()).count();
    let twice: Vec<&str> = devices.iter().filter(|d| d.installs > 1).map(|d| d.endpoint.as_str()).collect();
    let false_failures: Vec<&str> =
        devices.iter().filter(|d| !d.succeeded() && d.running == TARGET).map(|d| d.endpoint.as_str()).collect();
    let wrong_successes: Vec<&str> =
        devices.iter().filter(|d| d.succeeded() && d.running != TARGET).map(|d| d.endpoint.as_str()).collect();
    assert!(twice.is_empty(), "images installed twice: {twice:?}");
    assert!(false_failures.is_empty(), "reported failed but running {TARGET}: {false_failures:?}");
    assert!(wrong_successes.is_empty(), "reported succeeded but not running {TARGET}: {wrong_successes:?}");
    assert!(succeeded * 10 >= devices.len() * 9, "{succeeded} of {} upgraded", devices.len());
}
