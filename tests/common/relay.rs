//! A seeded, lossy UDP relay on loopback for the real-UDP tests.
//!
//! It listens on `127.0.0.1:R` and forwards every datagram a client sends there
//! to the server through an upstream socket of its own for that client's
//! address, so the server sees one distinct address per client socket and its
//! answers go back to the right client. Each direction drops, duplicates and
//! delays datagrams (a base delay plus uniform jitter, so datagrams overtake
//! each other) with SplitMix64 randomness from a seed. It runs on its own
//! threads and stops when dropped. At most `max_clients` client addresses are
//! mapped at once; the least recently heard one makes room for a new one.
//!
//! A test can tap what the relay receives (before any loss or delay) to see
//! the message ids and tokens on the wire.
#![allow(dead_code)]

use std::cmp::Ordering as CmpOrdering;
use std::collections::{BinaryHeap, HashMap};
use std::net::{SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::Sender;
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// SplitMix64 (Steele, Lea, Flood 2014): small, fast, good enough for a test
/// network, and the same sequence from the same seed everywhere.
#[derive(Debug, Clone)]
pub struct SplitMix64(u64);

impl SplitMix64 {
    pub fn new(seed: u64) -> Self {
        SplitMix64(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1).
    pub fn next_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Uniform in [0, bound) (0 when bound is 0).
    pub fn below(&mut self, bound: u64) -> u64 {
        if bound == 0 { 0 } else { self.next_u64() % bound }
    }
}

/// What one direction does to datagrams.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Impairment {
    /// Probability that a datagram is dropped.
    pub loss: f64,
    /// Probability that a forwarded datagram is sent twice (each copy with its own delay).
    pub duplicate: f64,
    /// Delay of every datagram.
    pub delay: Duration,
    /// Extra delay, uniform in [0, jitter): reorders datagrams.
    pub jitter: Duration,
}

impl Impairment {
    /// Forwards everything at once.
    pub const CLEAN: Impairment =
        Impairment { loss: 0.0, duplicate: 0.0, delay: Duration::ZERO, jitter: Duration::ZERO };

    pub fn new(loss: f64, duplicate: f64, delay_ms: u64, jitter_ms: u64) -> Impairment {
        Impairment { loss, duplicate, delay: Duration::from_millis(delay_ms), jitter: Duration::from_millis(jitter_ms) }
    }
}

/// The relay's configuration.
#[derive(Debug, Clone)]
pub struct RelayConfig {
    /// Seeds the randomness of both directions.
    pub seed: u64,
    /// Client to server.
    pub up: Impairment,
    /// Server to client.
    pub down: Impairment,
    /// Client addresses mapped at once.
    pub max_clients: usize,
}

impl RelayConfig {
    pub fn new(seed: u64, up: Impairment, down: Impairment) -> RelayConfig {
        RelayConfig { seed, up, down, max_clients: 256 }
    }

    /// The longest run of consecutive drops among the first `datagrams`
    /// datagrams travelling `way`: the relay's own draws, replayed.
    pub fn longest_loss_run(&self, way: Way, datagrams: usize) -> usize {
        let (mut rng, impairment) = match way {
            Way::Up => (SplitMix64::new(self.seed), self.up),
            Way::Down => (SplitMix64::new(self.seed ^ DOWN_SEED), self.down),
        };
        let (mut longest, mut run) = (0, 0);
        for _ in 0..datagrams {
            match decide(&mut rng, &impairment) {
                None => {
                    run += 1;
                    longest = longest.max(run);
                }
                Some(_) => run = 0,
            }
        }
        longest
    }
}

/// Mixed into the seed for the server-to-client direction.
const DOWN_SEED: u64 = 0x5eed_d0e5_0000_0001;

/// One datagram's fate: `None` dropped, else the delays of its copies (one, or
/// two when duplicated).
fn decide(rng: &mut SplitMix64, impairment: &Impairment) -> Option<Vec<Duration>> {
    if rng.next_f64() < impairment.loss {
        return None;
    }
    let copies = if rng.next_f64() < impairment.duplicate { 2 } else { 1 };
    let jitter_ms = impairment.jitter.as_millis() as u64;
    Some((0..copies).map(|_| impairment.delay + Duration::from_millis(rng.below(jitter_ms))).collect())
}

/// Which way a datagram travels.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Way {
    /// Client to server.
    Up,
    /// Server to client.
    Down,
}

/// A datagram as the relay received it (before loss and delay).
#[derive(Debug, Clone)]
pub struct Tapped {
    pub way: Way,
    /// The client's address (the sender going up, the receiver going down).
    pub client: SocketAddr,
    pub bytes: Vec<u8>,
}

/// Counters, per direction.
#[derive(Debug, Default)]
struct Counters {
    received: [AtomicU64; 2],
    forwarded: [AtomicU64; 2],
    dropped: [AtomicU64; 2],
    duplicated: [AtomicU64; 2],
    clients: AtomicU64,
    evicted: AtomicU64,
    /// Datagrams an upstream socket got from another address than the server's.
    strays: AtomicU64,
}

/// A snapshot of the counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RelayStats {
    pub received_up: u64,
    pub received_down: u64,
    pub forwarded_up: u64,
    pub forwarded_down: u64,
    pub dropped_up: u64,
    pub dropped_down: u64,
    pub duplicated_up: u64,
    pub duplicated_down: u64,
    /// Client addresses seen in all.
    pub clients: u64,
    /// Mappings dropped to make room.
    pub evicted: u64,
    pub strays: u64,
}

fn index(way: Way) -> usize {
    match way {
        Way::Up => 0,
        Way::Down => 1,
    }
}

/// One datagram waiting for its time.
struct Scheduled {
    due: Instant,
    seq: u64,
    via: Arc<UdpSocket>,
    to: SocketAddr,
    bytes: Vec<u8>,
}

impl PartialEq for Scheduled {
    fn eq(&self, other: &Self) -> bool {
        (self.due, self.seq) == (other.due, other.seq)
    }
}

impl Eq for Scheduled {}

impl PartialOrd for Scheduled {
    fn partial_cmp(&self, other: &Self) -> Option<CmpOrdering> {
        Some(self.cmp(other))
    }
}

impl Ord for Scheduled {
    /// Reversed: the max-heap pops the earliest first.
    fn cmp(&self, other: &Self) -> CmpOrdering {
        (other.due, other.seq).cmp(&(self.due, self.seq))
    }
}

struct Queue {
    heap: BinaryHeap<Scheduled>,
    seq: u64,
    rng: [SplitMix64; 2],
}

struct Shared {
    config: RelayConfig,
    server: SocketAddr,
    stop: AtomicBool,
    queue: Mutex<Queue>,
    wake: Condvar,
    counters: Counters,
    tap: Mutex<Option<Sender<Tapped>>>,
}

impl Shared {
    /// Loss, duplication and delay for one datagram, then into the queue.
    fn schedule(&self, way: Way, via: &Arc<UdpSocket>, to: SocketAddr, client: SocketAddr, bytes: &[u8]) {
        let i = index(way);
        self.counters.received[i].fetch_add(1, Ordering::Relaxed);
        if let Some(tap) = self.tap.lock().unwrap().as_ref() {
            let _ = tap.send(Tapped { way, client, bytes: bytes.to_vec() });
        }
        let impairment = match way {
            Way::Up => self.config.up,
            Way::Down => self.config.down,
        };
        let now = Instant::now();
        let mut queue = self.queue.lock().unwrap();
        let Some(delays) = decide(&mut queue.rng[i], &impairment) else {
            self.counters.dropped[i].fetch_add(1, Ordering::Relaxed);
            return;
        };
        if delays.len() > 1 {
            self.counters.duplicated[i].fetch_add(1, Ordering::Relaxed);
        }
        for delay in &delays {
            queue.seq += 1;
            let seq = queue.seq;
            queue.heap.push(Scheduled { due: now + *delay, seq, via: via.clone(), to, bytes: bytes.to_vec() });
        }
        drop(queue);
        self.wake.notify_one();
    }
}

struct Mapping {
    upstream: Arc<UdpSocket>,
    last_heard: Instant,
    alive: Arc<AtomicBool>,
}

/// A running relay; dropping it stops it.
pub struct Relay {
    addr: SocketAddr,
    shared: Arc<Shared>,
    threads: Vec<JoinHandle<()>>,
}

impl Relay {
    /// Starts a relay to `server` (a loopback address) on `127.0.0.1:0`.
    pub fn start(server: SocketAddr, config: RelayConfig) -> Relay {
        Relay::start_with_tap(server, config, None)
    }

    /// Starts a relay that also sends every datagram it receives to `tap`.
    pub fn start_with_tap(server: SocketAddr, config: RelayConfig, tap: Option<Sender<Tapped>>) -> Relay {
        assert!(server.ip().is_loopback(), "the relay is for loopback only, not {server}");
        let listen = Arc::new(UdpSocket::bind("127.0.0.1:0").expect("binding the relay"));
        listen.set_read_timeout(Some(Duration::from_millis(20))).unwrap();
        let addr = listen.local_addr().unwrap();
        let seed = config.seed;
        let shared = Arc::new(Shared {
            config,
            server,
            stop: AtomicBool::new(false),
            queue: Mutex::new(Queue {
                heap: BinaryHeap::new(),
                seq: 0,
                rng: [SplitMix64::new(seed), SplitMix64::new(seed ^ DOWN_SEED)],
            }),
            wake: Condvar::new(),
            counters: Counters::default(),
            tap: Mutex::new(tap),
        });
        let sender = {
            let shared = shared.clone();
            std::thread::spawn(move || send_loop(&shared))
        };
        let listener = {
            let shared = shared.clone();
            std::thread::spawn(move || listen_loop(&shared, &listen))
        };
        Relay { addr, shared, threads: vec![sender, listener] }
    }

    /// Where clients send.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn stats(&self) -> RelayStats {
        let c = &self.shared.counters;
        let get = |a: &AtomicU64| a.load(Ordering::SeqCst);
        RelayStats {
            received_up: get(&c.received[0]),
            received_down: get(&c.received[1]),
            forwarded_up: get(&c.forwarded[0]),
            forwarded_down: get(&c.forwarded[1]),
            dropped_up: get(&c.dropped[0]),
            dropped_down: get(&c.dropped[1]),
            duplicated_up: get(&c.duplicated[0]),
            duplicated_down: get(&c.duplicated[1]),
            clients: get(&c.clients),
            evicted: get(&c.evicted),
            strays: get(&c.strays),
        }
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::Relaxed);
        self.shared.wake.notify_all();
        for thread in self.threads.drain(..) {
            let _ = thread.join();
        }
    }
}

/// Sends queued datagrams when they are due.
fn send_loop(shared: &Shared) {
    let mut queue = shared.queue.lock().unwrap();
    while !shared.stop.load(Ordering::Relaxed) {
        let now = Instant::now();
        match queue.heap.peek().map(|s| s.due) {
            Some(due) if due <= now => {
                let item = queue.heap.pop().unwrap();
                drop(queue);
                let way = if item.to == shared.server { 0 } else { 1 };
                // Counted before the send, so whoever receives the datagram
                // already sees it counted (a failed send takes it back).
                shared.counters.forwarded[way].fetch_add(1, Ordering::SeqCst);
                if item.via.send_to(&item.bytes, item.to).is_err() {
                    shared.counters.forwarded[way].fetch_sub(1, Ordering::SeqCst);
                }
                queue = shared.queue.lock().unwrap();
            }
            Some(due) => queue = shared.wake.wait_timeout(queue, due - now).unwrap().0,
            None => queue = shared.wake.wait_timeout(queue, Duration::from_millis(50)).unwrap().0,
        }
    }
}

/// Receives from clients, maps each to its upstream socket, and spawns one
/// reader per upstream socket for the server's answers.
fn listen_loop(shared: &Arc<Shared>, listen: &Arc<UdpSocket>) {
    let mut mappings: HashMap<SocketAddr, Mapping> = HashMap::new();
    let mut readers: Vec<JoinHandle<()>> = Vec::new();
    let mut buf = vec![0u8; 65_536];
    while !shared.stop.load(Ordering::Relaxed) {
        let Ok((n, client)) = listen.recv_from(&mut buf) else { continue };
        if !mappings.contains_key(&client) {
            if mappings.len() >= shared.config.max_clients.max(1) {
                let oldest = *mappings.iter().min_by_key(|(_, m)| m.last_heard).map(|(a, _)| a).unwrap();
                if let Some(mapping) = mappings.remove(&oldest) {
                    mapping.alive.store(false, Ordering::Relaxed);
                }
                shared.counters.evicted.fetch_add(1, Ordering::Relaxed);
            }
            let Ok(upstream) = UdpSocket::bind("127.0.0.1:0") else { continue };
            upstream.set_read_timeout(Some(Duration::from_millis(20))).unwrap();
            let upstream = Arc::new(upstream);
            let alive = Arc::new(AtomicBool::new(true));
            shared.counters.clients.fetch_add(1, Ordering::Relaxed);
            readers.retain(|r| !r.is_finished());
            readers.push({
                let (shared, listen, upstream, alive) =
                    (shared.clone(), listen.clone(), upstream.clone(), alive.clone());
                std::thread::spawn(move || read_loop(&shared, &listen, &upstream, &alive, client))
            });
            mappings.insert(client, Mapping { upstream, last_heard: Instant::now(), alive });
        }
        let mapping = mappings.get_mut(&client).unwrap();
        mapping.last_heard = Instant::now();
        let upstream = mapping.upstream.clone();
        shared.schedule(Way::Up, &upstream, shared.server, client, &buf[..n]);
    }
    for mapping in mappings.values() {
        mapping.alive.store(false, Ordering::Relaxed);
    }
    for reader in readers {
        let _ = reader.join();
    }
}

/// The server's answers on one upstream socket, back to its client.
fn read_loop(shared: &Shared, listen: &Arc<UdpSocket>, upstream: &UdpSocket, alive: &AtomicBool, client: SocketAddr) {
    let mut buf = vec![0u8; 65_536];
    while alive.load(Ordering::Relaxed) && !shared.stop.load(Ordering::Relaxed) {
        let Ok((n, from)) = upstream.recv_from(&mut buf) else { continue };
        if from != shared.server {
            shared.counters.strays.fetch_add(1, Ordering::Relaxed);
            continue;
        }
        shared.schedule(Way::Down, listen, client, client, &buf[..n]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splitmix64_reference_values() {
        // The first outputs for seed 0 (as in the reference implementation).
        let mut rng = SplitMix64::new(0);
        assert_eq!(rng.next_u64(), 0xe220_a839_7b1d_cdaf);
        assert_eq!(rng.next_u64(), 0x6e78_9e6a_a1b9_65f4);
    }

    #[test]
    fn relays_both_ways_and_keeps_clients_apart() {
        let server = UdpSocket::bind("127.0.0.1:0").unwrap();
        server.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        let relay =
            Relay::start(server.local_addr().unwrap(), RelayConfig::new(1, Impairment::CLEAN, Impairment::CLEAN));
        let a = UdpSocket::bind("127.0.0.1:0").unwrap();
        let b = UdpSocket::bind("127.0.0.1:0").unwrap();
        for s in [&a, &b] {
            s.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        }
        a.send_to(b"from a", relay.addr()).unwrap();
        let mut buf = [0u8; 64];
        let (n, seen_a) = server.recv_from(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"from a");
        b.send_to(b"from b", relay.addr()).unwrap();
        let (n, seen_b) = server.recv_from(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"from b");
        assert_ne!(seen_a, seen_b, "one upstream address per client");
        server.send_to(b"to b", seen_b).unwrap();
        server.send_to(b"to a", seen_a).unwrap();
        let (n, from) = a.recv_from(&mut buf).unwrap();
        assert_eq!((&buf[..n], from), (&b"to a"[..], relay.addr()));
        let (n, _) = b.recv_from(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"to b");
        let stats = relay.stats();
        assert_eq!((stats.forwarded_up, stats.forwarded_down, stats.clients), (2, 2, 2));
    }

    #[test]
    fn loss_and_duplication_follow_the_seed() {
        let run = |seed: u64| {
            let server = UdpSocket::bind("127.0.0.1:0").unwrap();
            server.set_read_timeout(Some(Duration::from_millis(300))).unwrap();
            let lossy = Impairment::new(0.3, 0.2, 0, 0);
            let relay = Relay::start(server.local_addr().unwrap(), RelayConfig::new(seed, lossy, Impairment::CLEAN));
            let client = UdpSocket::bind("127.0.0.1:0").unwrap();
            for i in 0..200u8 {
                client.send_to(&[i], relay.addr()).unwrap();
            }
            let mut got = Vec::new();
            let mut buf = [0u8; 8];
            while let Ok((n, _)) = server.recv_from(&mut buf) {
                got.extend_from_slice(&buf[..n]);
            }
            let stats = relay.stats();
            assert_eq!(got.len() as u64, 200 - stats.dropped_up + stats.duplicated_up);
            (got, stats.dropped_up, stats.duplicated_up)
        };
        let (first, dropped, duplicated) = run(7);
        assert!((40..=80).contains(&dropped), "{dropped} of 200 dropped at 30%");
        assert!((10..=50).contains(&duplicated), "{duplicated} duplicated at 20% of the rest");
        let (again, ..) = run(7);
        assert_eq!(first, again, "same seed, same datagrams");
        let (other, ..) = run(8);
        assert_ne!(first, other);
    }

    #[test]
    fn the_loss_run_replay_matches_the_relay() {
        // Sent one by one and waited for, datagrams reach the relay in order,
        // so the replayed draws are the relay's.
        let server = UdpSocket::bind("127.0.0.1:0").unwrap();
        server.set_read_timeout(Some(Duration::from_millis(100))).unwrap();
        let config = RelayConfig::new(11, Impairment::new(0.5, 0.0, 0, 0), Impairment::CLEAN);
        let expected = config.longest_loss_run(Way::Up, 60);
        let relay = Relay::start(server.local_addr().unwrap(), config);
        let client = UdpSocket::bind("127.0.0.1:0").unwrap();
        let (mut longest, mut run) = (0, 0);
        let mut buf = [0u8; 8];
        for i in 0..60u8 {
            client.send_to(&[i], relay.addr()).unwrap();
            match server.recv_from(&mut buf) {
                Ok(_) => run = 0,
                Err(_) => {
                    run += 1;
                    longest = longest.max(run);
                }
            }
        }
        assert_eq!(longest, expected);
        assert!(expected >= 3, "at 50 % loss a run of 3 in 60 is near certain");
    }

    #[test]
    fn jitter_reorders_and_the_bound_evicts() {
        let server = UdpSocket::bind("127.0.0.1:0").unwrap();
        server.set_read_timeout(Some(Duration::from_millis(500))).unwrap();
        let mut config = RelayConfig::new(3, Impairment::new(0.0, 0.0, 5, 40), Impairment::CLEAN);
        config.max_clients = 4;
        let relay = Relay::start(server.local_addr().unwrap(), config);
        let clients: Vec<UdpSocket> = (0..6).map(|_| UdpSocket::bind("127.0.0.1:0").unwrap()).collect();
        for i in 0..60u8 {
            clients[usize::from(i) % 6].send_to(&[i], relay.addr()).unwrap();
        }
        let mut got = Vec::new();
        let mut buf = [0u8; 8];
        while let Ok((n, _)) = server.recv_from(&mut buf) {
            got.extend_from_slice(&buf[..n]);
        }
        let mut sorted = got.clone();
        sorted.sort();
        assert_eq!(sorted, (0..60).collect::<Vec<u8>>(), "nothing lost");
        assert_ne!(got, sorted, "jitter reorders");
        let stats = relay.stats();
        assert!(stats.evicted > 0 && stats.clients > 4, "{stats:?}");
    }
}
