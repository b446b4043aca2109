//! Cost of one datagram to the server endpoint through its CoAP binding (a
//! notification, a Registration Update, a Block2 image request), and the
//! memory an idle registration holds.
//!
//! `cargo bench --bench endpoint`

use std::alloc::{GlobalAlloc, Layout, System};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicIsize, Ordering};

use coap_lite::{CoapOption, MessageClass, MessageType, Packet, RequestType};
use divan::{Bencher, black_box};
use lwm2m_fota::coap::{CoapConfig, ServerBinding};
use lwm2m_fota::codec;
use lwm2m_fota::model::{ContentFormat, Instant, Path, Protocol, Record, Registry, Value};
use lwm2m_fota::server::{
    DeviceRequest, Endpoint, EndpointConfig, MemoryImage, Method, RegistrationLimits, Strategy, UpgradeConfig,
};

/// The system allocator, counting live bytes (for the idle-registration figure).
struct Counting;

static LIVE: AtomicIsize = AtomicIsize::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        LIVE.fetch_add(layout.size() as isize, Ordering::Relaxed);
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(layout.size() as isize, Ordering::Relaxed);
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        LIVE.fetch_add(new_size as isize - layout.size() as isize, Ordering::Relaxed);
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOC: Counting = Counting;

const LINKS: &str = "</1/0>,</3/0>,</5>;ver=1.1,</5/0>";

fn main() {
    // Under a profiler, skip the memory figure (200,000 registrations).
    if std::env::var_os("ENDPOINT_BENCH_NO_IDLE").is_none() {
        idle_registrations();
    }
    divan::main();
}

/// Live heap bytes per idle registration: 100,000 devices registered with an
/// Endpoint, and with a ServerBinding once EXCHANGE_LIFETIME has passed (its
/// de-duplication memory of the Registers is gone by then).
fn idle_registrations() {
    const N: u32 = 100_000;
    let limits = RegistrationLimits { max_registrations: N as usize, ..RegistrationLimits::default() };
    let config = EndpointConfig { registrations: limits, ..EndpointConfig::default() };
    // The peer a UDP server has, an IPv6 socket address, first (the RSS of
    // the second run reuses pages the first freed), then the simulator's.
    let peer = |i: u32| SocketAddr::from((std::net::Ipv6Addr::from(0x2001_0db8_u128 << 96 | u128::from(i)), 5683));
    let (socket_bytes, socket_rss) = idle_endpoint(&config, N, peer);
    let (endpoint_bytes, endpoint_rss) = idle_endpoint(&config, N, |i| i);
    let before = LIVE.load(Ordering::Relaxed);
    let mut binding: ServerBinding<u32> = ServerBinding::new(config, CoapConfig::default());
    for i in 0..N {
        let datagram = register_datagram(i as u16, &format!("device-{i:06}"));
        binding.handle_datagram(Instant::ZERO, i, &datagram).unwrap();
        while binding.poll_transmit().is_some() {}
        while binding.poll_event().is_some() {}
    }
    binding.handle_timeout(Instant::from_millis(248_000)).unwrap();
    let binding_bytes = (LIVE.load(Ordering::Relaxed) - before) as f64 / f64::from(N);
    println!(
        "idle registration: {endpoint_bytes:.0} bytes allocated, {endpoint_rss:.0} bytes of RSS (Endpoint<u32>); {socket_bytes:.0} bytes allocated, {socket_rss:.0} bytes of RSS (Endpoint<SocketAddr>); {binding_bytes:.0} bytes allocated (ServerBinding<u32> after EXCHANGE_LIFETIME); over {N} devices"
    );
    black_box(binding);
}

/// Live heap bytes and RSS per registration of `n` devices registered
/// from `peer(i)`.
fn idle_endpoint<P: Copy + Ord + std::hash::Hash + std::fmt::Debug>(
    config: &EndpointConfig,
    n: u32,
    peer: impl Fn(u32) -> P,
) -> (f64, f64) {
    let before = LIVE.load(Ordering::Relaxed);
    let rss_before = rss_bytes();
    let mut endpoint: Endpoint<P> = Endpoint::new(config.clone());
    for i in 0..n {
        let ep = format!("ep=device-{i:06}");
        let query = [ep.as_str(), "lt=86400", "lwm2m=1.1"];
        let request =
            DeviceRequest { query: &query, payload: LINKS.as_bytes(), ..DeviceRequest::new(Method::Post, &["rd"]) };
        endpoint.handle_request(Instant::ZERO, peer(i), &request).unwrap();
        while endpoint.poll_output().is_some() {}
    }
    let bytes = (LIVE.load(Ordering::Relaxed) - before) as f64 / f64::from(n);
    let rss = (rss_bytes() - rss_before) as f64 / f64::from(n);
    black_box(&endpoint);
    (bytes, rss)
}

/// Resident set size, from /proc/self/statm (0 where there is none).
fn rss_bytes() -> i64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    statm.split_whitespace().nth(1).and_then(|pages| pages.parse::<i64>().ok()).unwrap_or(0) * 4096
}

fn register_datagram(message_id: u16, name: &str) -> Vec<u8> {
    let mut p = Packet::new();
    p.header.set_type(MessageType::Confirmable);
    p.header.code = MessageClass::Request(RequestType::Post);
    p.header.message_id = message_id;
    p.set_token(vec![1, 2, 3, 4]);
    p.add_option(CoapOption::UriPath, b"rd".to_vec());
    p.add_option(CoapOption::UriQuery, format!("ep={name}").into_bytes());
    p.add_option(CoapOption::UriQuery, b"lt=86400".to_vec());
    p.add_option(CoapOption::UriQuery, b"lwm2m=1.1".to_vec());
    p.payload = LINKS.as_bytes().to_vec();
    p.to_bytes().unwrap()
}

fn firmware(state: i64) -> Vec<u8> {
    let records = [
        Record::new(Path::resource(5, 0, 3), Value::Integer(state)),
        Record::new(Path::resource(5, 0, 5), Value::Integer(0)),
        Record::new(Path::resource_instance(5, 0, 8, 0), Value::Integer(0)),
        Record::new(Path::resource(5, 0, 9), Value::Integer(2)),
    ];
    let mut out = Vec::new();
    codec::encode(ContentFormat::SenmlCbor, &Path::instance(5, 0), &records, &Registry::default(), &mut out).unwrap();
    out
}

/// A binding with 1,000 registered devices, device 7 upgrading under
/// observe-instance and waiting in Downloading with its observation of /5/0
/// in place: its location and the observation's token.
fn observing() -> (ServerBinding<u32>, String, Vec<u8>) {
    let mut binding: ServerBinding<u32> = ServerBinding::new(EndpointConfig::default(), CoapConfig::default());
    binding.endpoint_mut().add_image("fw.bin", Arc::new(MemoryImage::new(vec![0x5a; 32 * 1024])));
    let mut location = String::new();
    for i in 0..1000u32 {
        binding.handle_datagram(Instant::ZERO, i, &register_datagram(i as u16, &format!("device-{i}"))).unwrap();
        while let Some((to, datagram)) = binding.poll_transmit() {
            let p = Packet::from_bytes(&datagram).unwrap();
            if to == 7 {
                let segments: Vec<String> = p
                    .get_option(CoapOption::LocationPath)
                    .unwrap()
                    .iter()
                    .map(|s| String::from_utf8_lossy(s).into_owned())
                    .collect();
                location = segments.join("/");
            }
        }
        while binding.poll_event().is_some() {}
    }
    let mut config = UpgradeConfig::new("coap://server/fw/", "fw.bin", 32 * 1024);
    config.strategy = Strategy::ObserveInstance;
    config.protocol = Protocol::Coap;
    binding.upgrade(Instant::ZERO, "device-7", Arc::new(config)).unwrap();
    let mut token = None;
    for _ in 0..20 {
        let Some((_, datagram)) = binding.poll_transmit() else { break };
        let request = Packet::from_bytes(&datagram).unwrap();
        let mut answer = Packet::new();
        answer.header.set_type(MessageType::Acknowledgement);
        answer.header.message_id = request.header.message_id;
        answer.set_token(request.get_token().to_vec());
        let observe = request.get_first_option(CoapOption::Observe).is_some_and(|v| v.is_empty());
        if request.header.code == MessageClass::Request(RequestType::Get) {
            answer.header.code = MessageClass::from(0x45);
            answer.add_option(CoapOption::ContentFormat, vec![112]);
            if observe {
                answer.add_option(CoapOption::Observe, vec![1]);
                token = Some(request.get_token().to_vec());
            }
            answer.payload = firmware(if observe { 1 } else { 0 });
        } else {
            answer.header.code = MessageClass::from(0x44);
        }
        binding.handle_datagram(Instant::ZERO, 7, &answer.to_bytes().unwrap()).unwrap();
        while binding.poll_event().is_some() {}
        if token.is_some() {
            break;
        }
    }
    while binding.poll_transmit().is_some() {}
    (binding, location, token.expect("the task observes /5/0"))
}

/// A NON notification of the observation, State Downloading, with sequence `n`.
#[divan::bench]
fn notification(bencher: Bencher) {
    let (mut binding, _, token) = observing();
    let payload = firmware(1);
    let datagrams: Vec<Vec<u8>> = (0..4096u32)
        .map(|n| {
            let mut p = Packet::new();
            p.header.set_type(MessageType::NonConfirmable);
            p.header.code = MessageClass::from(0x45);
            p.header.message_id = n as u16;
            p.set_token(token.clone());
            p.add_option(CoapOption::Observe, (n + 2).to_be_bytes()[1..].to_vec());
            p.add_option(CoapOption::ContentFormat, vec![112]);
            p.payload = payload.clone();
            p.to_bytes().unwrap()
        })
        .collect();
    let mut i = 0usize;
    let mut now = 0u64;
    bencher.bench_local(|| {
        // A fresh sequence each time: the ring wraps after 4,096, 129 s later
        // (past RFC 7641's 128 s, so the notification is fresh again).
        if i % 4096 == 0 {
            now += 129_000;
        }
        binding.handle_datagram(Instant::from_millis(now), 7, black_box(&datagrams[i % 4096])).unwrap();
        i += 1;
        while binding.poll_transmit().is_some() {}
        while binding.poll_event().is_some() {}
    });
}

/// A confirmable Registration Update (no parameters) of device 7.
#[divan::bench]
fn registration_update(bencher: Bencher) {
    let (mut binding, location, _) = observing();
    let datagrams: Vec<Vec<u8>> = (0..4096u32)
        .map(|n| {
            let mut p = Packet::new();
            p.header.set_type(MessageType::Confirmable);
            p.header.code = MessageClass::Request(RequestType::Post);
            p.header.message_id = 20_000 + n as u16;
            p.set_token(vec![9, 9]);
            for segment in location.split('/') {
                p.add_option(CoapOption::UriPath, segment.as_bytes().to_vec());
            }
            p.to_bytes().unwrap()
        })
        .collect();
    let mut i = 0usize;
    let mut now = 0u64;
    bencher.bench_local(|| {
        // Each message id once per EXCHANGE_LIFETIME, as a device sends them.
        if i % 4096 == 0 {
            now += 248_000;
        }
        binding.handle_datagram(Instant::from_millis(now), 7, black_box(&datagrams[i % 4096])).unwrap();
        i += 1;
        while binding.poll_transmit().is_some() {}
        while binding.poll_event().is_some() {}
    });
}

/// A Block2 request of the 32 KiB image, 1,024-byte blocks in turn.
#[divan::bench]
fn block2_request(bencher: Bencher) {
    let (mut binding, _, _) = observing();
    let datagrams: Vec<Vec<u8>> = (0..32u32)
        .map(|n| {
            let mut p = Packet::new();
            p.header.set_type(MessageType::Confirmable);
            p.header.code = MessageClass::Request(RequestType::Get);
            p.header.message_id = 40_000 + n as u16;
            p.set_token(vec![7]);
            p.add_option(CoapOption::UriPath, b"fw".to_vec());
            p.add_option(CoapOption::UriPath, b"fw.bin".to_vec());
            let value = (n << 4) | 6;
            p.add_option(CoapOption::Block2, value.to_be_bytes().iter().copied().skip_while(|b| *b == 0).collect());
            p.to_bytes().unwrap()
        })
        .collect();
    let mut i = 0usize;
    bencher.bench_local(|| {
        binding.handle_datagram(Instant::ZERO, 7, black_box(&datagrams[i % 32])).unwrap();
        i += 1;
        while binding.poll_transmit().is_some() {}
    });
}

/// The same Registration Update to the endpoint alone (no CoAP parsing).
#[divan::bench]
fn registration_update_endpoint_only(bencher: Bencher) {
    let mut endpoint: Endpoint<u32> = Endpoint::new(EndpointConfig::default());
    let links = LINKS.as_bytes();
    let query = ["ep=device-7", "lt=300", "lwm2m=1.1"];
    let reply = endpoint
        .handle_request(
            Instant::ZERO,
            7,
            &DeviceRequest { query: &query, payload: links, ..DeviceRequest::new(Method::Post, &["rd"]) },
        )
        .unwrap();
    let location_segment = reply.location.unwrap().to_string();
    let path = ["rd", location_segment.as_str()];
    let mut now = 0;
    bencher.bench_local(|| {
        now += 1;
        let reply = endpoint
            .handle_request(Instant::from_millis(now), 7, black_box(&DeviceRequest::new(Method::Post, &path)))
            .unwrap();
        while endpoint.poll_output().is_some() {}
        reply
    });
}

/// Baseline, measured in the same run: coap-lite parsing the notification
/// datagram and building and serializing an empty ACK (what any CoAP server
/// spends before it knows what the message means).
#[divan::bench]
fn baseline_coap_lite_parse_and_ack(bencher: Bencher) {
    let (_, _, token) = observing();
    let mut p = Packet::new();
    p.header.set_type(MessageType::NonConfirmable);
    p.header.code = MessageClass::from(0x45);
    p.header.message_id = 77;
    p.set_token(token);
    p.add_option(CoapOption::Observe, vec![5]);
    p.add_option(CoapOption::ContentFormat, vec![112]);
    p.payload = firmware(1);
    let datagram = p.to_bytes().unwrap();
    bencher.bench_local(|| {
        let packet = Packet::from_bytes(black_box(&datagram)).unwrap();
        let mut ack = Packet::new();
        ack.header.set_type(MessageType::Acknowledgement);
        ack.header.message_id = packet.header.message_id;
        ack.to_bytes().unwrap()
    });
}
