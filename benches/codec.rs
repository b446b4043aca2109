//! Codec throughput: TLV and SenML-CBOR decode/encode on four payload packs, with
//! baselines on the SenML-CBOR packs (`ciborium::Value`, and a bare minicbor token
//! walk as the floor). See BENCHMARKS.md for the packs, the targets and results.
//!
//! Run with `cargo bench --bench codec` (or `benches/run.sh` for everything).
//!
//! The packs are built with the crate's own encoders when the bench starts. The
//! SenML-CBOR packs are also committed as files under `benches/senml-deser/data/`
//! for the separate senml-deser bench; start-up asserts that the encoders still
//! produce exactly those bytes (`CODEC_BENCH_WRITE_DATA=1` rewrites the files).
//!
//! Allocations per iteration are counted by divan's allocation profiler (the
//! rows under a benchmark; none means no allocation).

use std::borrow::Cow;
use std::sync::LazyLock;
use std::time::Duration;

use divan::counter::BytesCount;
use divan::{AllocProfiler, Bencher, black_box};
use lwm2m_fota::codec::{DecodeOptions, decode_into, encode};
use lwm2m_fota::model::{
    ContentFormat, DataType, ObjectDef, ObjectLink, ObjectVersion, Operations, Path, Record, Registry, ResourceDef,
    Value,
};

#[global_allocator]
static ALLOC: AllocProfiler = AllocProfiler::system();

// ---------------------------------------------------------------------------
// Packs.

/// The packs in both formats, by name (the divan argument).
const PACKS: [&str; 4] = ["a_device", "b_firmware", "c_send50", "d_package64k"];

/// SenML-CBOR packs: the four above plus (a) without its Objlnk resource 22, which
/// senml-deser cannot decode (it has no `vlo`), so that (a) can be compared at all.
const SENML_PACKS: [&str; 5] = ["a_device", "a_device_no22", "b_firmware", "c_send50", "d_package64k"];

/// One payload: what was encoded, where, and the bytes.
struct Payload {
    path: Path,
    records: Vec<Record<'static>>,
    bytes: Vec<u8>,
    registry: &'static Registry,
}

struct Packs {
    tlv: Vec<(&'static str, Payload)>,
    senml: Vec<(&'static str, Payload)>,
}

impl Packs {
    fn tlv(&self, name: &str) -> &Payload {
        &self.tlv.iter().find(|(n, _)| *n == name).expect("TLV pack").1
    }

    fn senml(&self, name: &str) -> &Payload {
        &self.senml.iter().find(|(n, _)| *n == name).expect("SenML-CBOR pack").1
    }
}

static DEFAULT_REGISTRY: LazyLock<Registry> = LazyLock::new(Registry::default);

/// `Registry::default()` plus a bench-only /3303 (Temperature) whose resources 0..=49
/// and 5700 (Sensor Value) are all Float: (c) needs typed numbers in both formats.
static SEND_REGISTRY: LazyLock<Registry> = LazyLock::new(|| {
    let mut resources: Vec<ResourceDef> = (0..50)
        .map(|id| ResourceDef::new(id, "Bench Float", Operations::READ, DataType::Float, false, false))
        .collect();
    resources.push(ResourceDef::new(5700, "Sensor Value", Operations::READ, DataType::Float, false, true));
    let mut registry = Registry::default();
    registry.register(ObjectDef::new(3303, "Temperature", ObjectVersion::V1_0, true, false, resources).unwrap());
    registry
});

static PACK_DATA: LazyLock<Packs> = LazyLock::new(build_packs);

fn string(s: &'static str) -> Value<'static> {
    Value::String(Cow::Borrowed(s))
}

/// (a) A Read of /3/0 (Device), every readable resource of the object.
fn device_records(with_objlnk: bool) -> Vec<Record<'static>> {
    let r = |id, value| Record::new(Path::resource(3, 0, id), value);
    let ri = |id, instance, value| Record::new(Path::resource_instance(3, 0, id, instance), value);
    let mut records = vec![
        r(0, string("Open Mobile Alliance")),
        r(1, string("Lightweight M2M Client")),
        r(2, string("345000123")),
        r(3, string("1.0")),
        ri(6, 0, Value::Integer(1)),
        ri(6, 1, Value::Integer(5)),
        ri(7, 0, Value::Integer(3800)),
        ri(7, 1, Value::Integer(5000)),
        ri(8, 0, Value::Integer(125)),
        ri(8, 1, Value::Integer(900)),
        r(9, Value::Integer(100)),
        r(10, Value::Integer(15)),
        ri(11, 0, Value::Integer(0)),
        r(13, Value::Time(1_367_491_215)),
        r(14, string("+02:00")),
        r(15, string("Europe/Berlin")),
        r(16, string("U")),
        r(17, string("Smart Meter")),
        r(18, string("1.0")),
        r(19, string("1.0.2")),
        r(20, Value::Integer(0)),
        r(21, Value::Integer(128)),
    ];
    if with_objlnk {
        records.push(ri(22, 0, Value::Objlnk(ObjectLink { object_id: 66, instance_id: 0 })));
        records.push(ri(22, 1, Value::Objlnk(ObjectLink { object_id: 66, instance_id: 1 })));
    }
    records
}

/// (b) A Read of /5/0 (Firmware Update 1.2): the resources the brief lists.
fn firmware_records() -> Vec<Record<'static>> {
    let r = |id, value| Record::new(Path::resource(5, 0, id), value);
    let mut records = vec![r(1, string("")), r(3, Value::Integer(2)), r(5, Value::Integer(0))];
    // Firmware Update Protocol Support: all six protocols, 0 (CoAP) ..= 5 (CoAP over TLS).
    records.extend((0..=5).map(|i| Record::new(Path::resource_instance(5, 0, 8, i), Value::Integer(i64::from(i)))));
    records.extend([
        r(9, Value::Integer(2)),
        r(11, Value::Integer(1)),
        r(12, Value::Time(1_767_225_600)),
        r(13, Value::UnsignedInteger(86_400)),
        r(14, Value::Boolean(true)),
    ]);
    records
}

/// A sensor-like reading with one decimal (most are not exact in binary16/32, so
/// SenML-CBOR carries them as binary64, TLV as 8-byte floats).
fn reading(i: u16) -> f64 {
    15.0 + f64::from((i * 37) % 100) / 10.0
}

/// (c) SenML-CBOR: a 50-record Send at `/`, 5 temperature sensors x 10 timestamps.
fn send_records() -> Vec<Record<'static>> {
    (0..50u16)
        .map(|i| Record {
            path: Path::resource(3303, i % 5, 5700),
            value: Value::Float(reading(i)),
            time: Some(1_767_225_600.0 + f64::from(i / 5) * 60.0),
        })
        .collect()
}

/// (c) TLV: TLV has no Send (no `/` payloads, no times), so 50 Float resources of
/// one instance, /3303/0/0..=49, with the same 50 values.
fn send_tlv_records() -> Vec<Record<'static>> {
    (0..50u16).map(|i| Record::new(Path::resource(3303, 0, i), Value::Float(reading(i)))).collect()
}

/// (d) A 64 KiB firmware Package written to /5/0/0 (deterministic xorshift bytes).
fn package_records() -> Vec<Record<'static>> {
    let mut state = 0x9E37_79B9_7F4A_7C15u64;
    let bytes: Vec<u8> = (0..64 * 1024)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state >> 24) as u8
        })
        .collect();
    vec![Record::new(Path::resource(5, 0, 0), Value::Opaque(Cow::Owned(bytes)))]
}

fn payload(format: ContentFormat, path: Path, records: Vec<Record<'static>>, registry: &'static Registry) -> Payload {
    let mut bytes = Vec::new();
    encode(format, &path, &records, registry, &mut bytes)
        .unwrap_or_else(|e| panic!("encoding {path} as {format:?}: {e}"));
    // The payload must decode back to exactly the records it was made from.
    let mut decoded = Vec::new();
    decode_into(format, &path, &bytes, registry, &DecodeOptions::default(), &mut decoded)
        .unwrap_or_else(|e| panic!("decoding {path} as {format:?}: {e}"));
    assert_eq!(decoded, records, "{path} as {format:?} does not round-trip");
    Payload { path, records, bytes, registry }
}

fn build_packs() -> Packs {
    let default = &*DEFAULT_REGISTRY;
    let send = &*SEND_REGISTRY;
    let tlv = ContentFormat::Tlv;
    let cbor = ContentFormat::SenmlCbor;
    let device = Path::instance(3, 0);
    let firmware = Path::instance(5, 0);
    let package = Path::resource(5, 0, 0);
    Packs {
        tlv: vec![
            ("a_device", payload(tlv, device, device_records(true), default)),
            ("b_firmware", payload(tlv, firmware, firmware_records(), default)),
            ("c_send50", payload(tlv, Path::instance(3303, 0), send_tlv_records(), send)),
            ("d_package64k", payload(tlv, package, package_records(), default)),
        ],
        senml: vec![
            ("a_device", payload(cbor, device, device_records(true), default)),
            ("a_device_no22", payload(cbor, device, device_records(false), default)),
            ("b_firmware", payload(cbor, firmware, firmware_records(), default)),
            ("c_send50", payload(cbor, Path::ROOT, send_records(), send)),
            ("d_package64k", payload(cbor, package, package_records(), default)),
        ],
    }
}

/// The SenML-CBOR packs must be byte-identical to the files the senml-deser bench
/// reads; `CODEC_BENCH_WRITE_DATA=1` (re)writes them.
fn check_data_files(packs: &Packs) {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("benches/senml-deser/data");
    let write = std::env::var_os("CODEC_BENCH_WRITE_DATA").is_some_and(|v| v == "1");
    for (name, payload) in &packs.senml {
        let file = dir.join(format!("{name}.cbor"));
        if write {
            std::fs::create_dir_all(&dir).expect("create the data directory");
            std::fs::write(&file, &payload.bytes).expect("write a data file");
            eprintln!("wrote {} ({} bytes)", file.display(), payload.bytes.len());
            continue;
        }
        match std::fs::read(&file) {
            Ok(bytes) if bytes == payload.bytes => {}
            Ok(_) => panic!(
                "{} differs from what the encoder produces now; rerun with CODEC_BENCH_WRITE_DATA=1 and commit",
                file.display()
            ),
            Err(e) => panic!("{}: {e}; run with CODEC_BENCH_WRITE_DATA=1 to create it", file.display()),
        }
    }
}

fn main() {
    // Build (and check) every pack before any sample is taken.
    let packs = &*PACK_DATA;
    check_data_files(packs);
    for (format, list) in [("TLV", &packs.tlv), ("SenML-CBOR", &packs.senml)] {
        for (name, p) in list {
            eprintln!("pack {format:<10} {name:<14} {:>6} bytes, {:>2} records", p.bytes.len(), p.records.len());
        }
    }
    divan::Divan::default()
        .sample_count(100)
        .min_time(Duration::from_millis(500))
        .max_time(Duration::from_secs(2))
        .config_with_args()
        .main();
}

// ---------------------------------------------------------------------------
// Benchmarks.

const OPTIONS: DecodeOptions = DecodeOptions::DEFAULT;

fn bench_decode(bencher: Bencher, format: ContentFormat, p: &'static Payload) {
    let mut out: Vec<Record<'static>> = Vec::new();
    // Warm-up: size `out` once, so that iterations only reuse it.
    decode_into(format, &p.path, &p.bytes, p.registry, &OPTIONS, &mut out).unwrap();
    bencher.counter(BytesCount::of_slice(&p.bytes)).bench_local(|| {
        out.clear();
        decode_into(black_box(format), black_box(&p.path), black_box(&p.bytes), p.registry, &OPTIONS, &mut out)
            .unwrap();
        black_box(&out);
    });
}

fn bench_encode(bencher: Bencher, format: ContentFormat, p: &'static Payload) {
    let mut buf: Vec<u8> = Vec::with_capacity(p.bytes.len());
    bencher.counter(BytesCount::of_slice(&p.bytes)).bench_local(|| {
        buf.clear();
        encode(black_box(format), black_box(&p.path), black_box(&p.records), p.registry, &mut buf).unwrap();
        black_box(&buf);
    });
}

/// Our decoders, `decode_into` into one reused `Vec<Record>`.
mod decode {
    use super::*;

    #[divan::bench(args = PACKS)]
    fn tlv(bencher: Bencher, pack: &str) {
        bench_decode(bencher, ContentFormat::Tlv, PACK_DATA.tlv(pack));
    }

    #[divan::bench(args = SENML_PACKS)]
    fn senml_cbor(bencher: Bencher, pack: &str) {
        bench_decode(bencher, ContentFormat::SenmlCbor, PACK_DATA.senml(pack));
    }
}

/// Our encoders, `encode` into one reused `Vec<u8>`; throughput counts output bytes.
mod encode {
    use super::*;

    #[divan::bench(args = PACKS)]
    fn tlv(bencher: Bencher, pack: &str) {
        bench_encode(bencher, ContentFormat::Tlv, PACK_DATA.tlv(pack));
    }

    #[divan::bench(args = SENML_PACKS)]
    fn senml_cbor(bencher: Bencher, pack: &str) {
        bench_encode(bencher, ContentFormat::SenmlCbor, PACK_DATA.senml(pack));
    }
}

/// Baselines on the SenML-CBOR packs.
mod baseline {
    use super::*;
    use minicbor::Decoder;
    use minicbor::decode::Tokenizer;

    /// Generic CBOR into a `ciborium::Value` tree. Divan drops the returned tree
    /// outside the timed region, so this leaves out the cost of freeing it.
    #[divan::bench(args = SENML_PACKS)]
    fn ciborium_value(bencher: Bencher, pack: &str) {
        let bytes = &PACK_DATA.senml(pack).bytes[..];
        bencher
            .counter(BytesCount::of_slice(bytes))
            .bench(|| ciborium::de::from_reader::<ciborium::Value, _>(black_box(bytes)).unwrap());
    }

    /// The same, freeing the tree inside the timed region (what a caller pays).
    #[divan::bench(args = SENML_PACKS)]
    fn ciborium_value_and_drop(bencher: Bencher, pack: &str) {
        let bytes = &PACK_DATA.senml(pack).bytes[..];
        bencher.counter(BytesCount::of_slice(bytes)).bench(|| {
            let value = ciborium::de::from_reader::<ciborium::Value, _>(black_box(bytes)).unwrap();
            black_box(&value);
        });
    }

    /// Floor: every token of the pack through `minicbor::decode::Tokenizer`
    /// (heads, borrowed text with UTF-8 validation, borrowed bytes), nothing built.
    #[divan::bench(args = SENML_PACKS)]
    fn minicbor_tokens(bencher: Bencher, pack: &str) {
        let bytes = &PACK_DATA.senml(pack).bytes[..];
        bencher.counter(BytesCount::of_slice(bytes)).bench(|| {
            let mut count = 0usize;
            for token in Tokenizer::new(black_box(bytes)) {
                black_box(token.unwrap());
                count += 1;
            }
            count
        });
    }

    /// Floor: `minicbor::Decoder::skip` over the whole pack (one data item).
    #[divan::bench(args = SENML_PACKS)]
    fn minicbor_skip(bencher: Bencher, pack: &str) {
        let bytes = &PACK_DATA.senml(pack).bytes[..];
        bencher.counter(BytesCount::of_slice(bytes)).bench(|| {
            let mut decoder = Decoder::new(black_box(bytes));
            decoder.skip().unwrap();
            decoder.position()
        });
    }
}
