//! senml-deser 0.2.1 decoding the main crate's SenML-CBOR packs (`data/*.cbor`).
//!
//! - `decode_cbor`: senml-deser's entry point, `Decoder::decode_cbor`, which
//!   returns a `Pack` of at most 32 records (more panic inside senml-deser).
//! - `decode_pack64`: the same deserialization (`serde_cbor::de::from_slice_with_scratch`
//!   into `Pack`) with room for 64 records, which (c) needs.
//! - `decode_resolve`: `decode_pack64`, then every record through senml-deser's
//!   `records_iter()` with its name resolved (base name + name) and its value and
//!   time read: the nearest equivalent of what the main crate's decoder returns
//!   (it also parses names into paths and types values through a registry).
//!
//! Start-up decodes every pack once and prints what senml-deser makes of it.

use std::time::Duration;

use divan::counter::BytesCount;
use divan::{AllocProfiler, Bencher, black_box};
use senml_deser::Cbor;
use senml_deser::content::pack::Pack;
use senml_deser::deser::de::Decoder;
use senml_deser_bench::{PACKS, RECORD_COUNTS, pack};

#[global_allocator]
static ALLOC: AllocProfiler = AllocProfiler::system();

/// Room for (c)'s 50 records.
const CAPACITY: usize = 64;

/// The packs senml-deser decodes (start-up checks this list): not (a), whose
/// Objlnk resource 22 is carried under the text label `"vlo"`.
const DECODABLE: [&str; 4] = ["a_device_no22", "b_firmware", "c_send50", "d_package64k"];

/// The decodable packs of at most 32 records.
const FITS_32: [&str; 3] = ["a_device_no22", "b_firmware", "d_package64k"];

/// senml-deser only needs scratch space for indefinite-length strings (none here).
const SCRATCH: usize = 1024;

fn from_slice_pack64<'a>(bytes: &'a [u8], scratch: &mut [u8]) -> Result<Pack<'a, Cbor, CAPACITY>, serde_cbor::Error> {
    serde_cbor::de::from_slice_with_scratch(bytes, scratch)
}

/// Walks every resolved record, reading what a caller would; returns a checksum
/// and the number of records.
fn resolve(pack: &Pack<'_, Cbor, CAPACITY>) -> Result<(f64, usize), senml_deser::Error> {
    let mut sum = 0.0;
    let mut count = 0;
    for record in pack.records_iter() {
        let record = record?;
        let name = record.resolved_name::<32>()?;
        sum += name.len() as f64;
        if let Some(v) = record.resolved_value() {
            sum += v;
        } else if let Some(s) = record.string_value() {
            sum += s.len() as f64;
        } else if let Some(b) = record.boolean_value() {
            sum += f64::from(u8::from(b));
        } else if let Some(d) = record.data_value() {
            sum += d.len() as f64;
        }
        if let Some(t) = record.absolute_time().or(record.relative_time()) {
            sum += t;
        }
        count += 1;
    }
    Ok((sum, count))
}

fn check_packs() {
    let mut scratch = [0u8; SCRATCH];
    for (name, expected) in PACKS.iter().zip(RECORD_COUNTS) {
        let bytes = pack(name);
        match from_slice_pack64(bytes, &mut scratch) {
            Ok(decoded) => {
                let (_, resolved) = resolve(&decoded).unwrap_or_else(|e| panic!("{name}: resolving: {e:?}"));
                eprintln!("pack {name:<14} {:>6} bytes: {} records, {resolved} resolved", bytes.len(), decoded.len());
                assert_eq!(decoded.len(), expected, "{name}: record count");
                assert_eq!(resolved, expected, "{name}: resolved record count");
                assert!(DECODABLE.contains(name), "{name} decodes now: add it to DECODABLE");
            }
            Err(e) => {
                eprintln!(
                    "pack {name:<14} {:>6} bytes: senml-deser cannot decode it: {:?} error at byte {} ({e:?})",
                    bytes.len(),
                    e.classify(),
                    e.offset()
                );
                assert!(!DECODABLE.contains(name), "{name}: {e}");
            }
        }
    }
    // `Decoder::decode_cbor` (32 records at most) on (c): senml-deser panics.
    let hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(|_| {}));
    let result = std::panic::catch_unwind(|| {
        let mut scratch = [0u8; SCRATCH];
        let mut decoder = Decoder::new();
        decoder.decode_cbor(pack("c_send50"), &mut scratch).map(|p| p.len()).ok()
    });
    std::panic::set_hook(hook);
    match result {
        Ok(n) => eprintln!("pack c_send50 through Decoder::decode_cbor: {n:?}"),
        Err(_) => eprintln!("pack c_send50 through Decoder::decode_cbor: panics (more than 32 records)"),
    }
}

fn main() {
    check_packs();
    divan::Divan::default()
        .sample_count(100)
        .min_time(Duration::from_millis(500))
        .max_time(Duration::from_secs(2))
        .config_with_args()
        .main();
}

#[divan::bench(args = FITS_32)]
fn decode_cbor(bencher: Bencher, name: &str) {
    let bytes = pack(name);
    let mut scratch = [0u8; SCRATCH];
    bencher.counter(BytesCount::of_slice(bytes)).bench_local(|| {
        let mut decoder = Decoder::new();
        let decoded = decoder.decode_cbor(black_box(bytes), &mut scratch).unwrap();
        black_box(&decoded);
        decoded.len()
    });
}

#[divan::bench(args = DECODABLE)]
fn decode_pack64(bencher: Bencher, name: &str) {
    let bytes = pack(name);
    let mut scratch = [0u8; SCRATCH];
    bencher.counter(BytesCount::of_slice(bytes)).bench_local(|| {
        let decoded = from_slice_pack64(black_box(bytes), &mut scratch).unwrap();
        black_box(&decoded);
        decoded.len()
    });
}

#[divan::bench(args = DECODABLE)]
fn decode_resolve(bencher: Bencher, name: &str) {
    let bytes = pack(name);
    let mut scratch = [0u8; SCRATCH];
    bencher.counter(BytesCount::of_slice(bytes)).bench_local(|| {
        let decoded = from_slice_pack64(black_box(bytes), &mut scratch).unwrap();
        resolve(&decoded).unwrap()
    });
}
