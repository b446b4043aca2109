//! Replays the checked-in fuzz corpus, `tests/data/fuzz/<target>/*`, through the
//! same check the cargo-fuzz targets in `fuzz/` run (see `FUZZING.md`).
//!
//! This file is the one home of that check: `fuzz/src/lib.rs` includes it with
//! `#[path]`, so the fuzz targets and this test cannot drift apart. It therefore
//! uses only `std` and `lwm2m_fota`.
//!
//! An input is one selector byte followed by the payload. The selector picks the
//! request path (for `senml_paths`: SenML-CBOR when even, SenML-JSON when odd).
//! The check:
//!
//! 1. decoding never panics, and on error leaves the output vector as it was;
//! 2. when decoding succeeds, the records are encoded again in the same format
//!    for the same path. The encoder may refuse only for reasons that are
//!    legitimate for decoded input ([`may_refuse`]); the check ends there then;
//! 3. decoding the encoder's output succeeds and gives the same records (floats
//!    and times compared with a small relative tolerance, NaN equal to NaN; the
//!    tree formats TLV and LwM2M-CBOR compared in path order, since their
//!    encoders sort);
//! 4. encoding those records again gives the same bytes (the round trip has
//!    reached a fixed point).
//!
//! Files named `crash-*` reproduce bugs still open in `src/`; they are replayed
//! only by the ignored test `open_bug_reproducers` (see `FUZZING.md`).

use std::sync::OnceLock;

use lwm2m_fota::codec::{self, DecodeOptions, EncodeError};
use lwm2m_fota::model::{ContentFormat, Path, Record, Registry, Value};

/// One fuzz target per decoder, plus the name-only SenML lists.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    /// OMA TLV.
    Tlv,
    /// SenML-CBOR.
    SenmlCbor,
    /// SenML-JSON.
    SenmlJson,
    /// LwM2M-CBOR.
    Lwm2mCbor,
    /// LwM2M JSON (1.0).
    Lwm2mJson,
    /// Plain text.
    Text,
    /// Opaque.
    Opaque,
    /// Single-value CBOR.
    Cbor,
    /// `decode_paths` for SenML-CBOR (even selector) and SenML-JSON (odd).
    SenmlPaths,
}

impl Target {
    /// Every target.
    pub const ALL: [Target; 9] = [
        Target::Tlv,
        Target::SenmlCbor,
        Target::SenmlJson,
        Target::Lwm2mCbor,
        Target::Lwm2mJson,
        Target::Text,
        Target::Opaque,
        Target::Cbor,
        Target::SenmlPaths,
    ];

    /// The fuzz target's name, which is also its corpus folder's name.
    pub const fn name(self) -> &'static str {
        match self {
            Target::Tlv => "tlv",
            Target::SenmlCbor => "senml_cbor",
            Target::SenmlJson => "senml_json",
            Target::Lwm2mCbor => "lwm2m_cbor",
            Target::Lwm2mJson => "lwm2m_json",
            Target::Text => "text",
            Target::Opaque => "opaque",
            Target::Cbor => "cbor",
            Target::SenmlPaths => "senml_paths",
        }
    }

    /// The content format the target decodes, and the request paths its
    /// selector byte chooses from (`selector % paths.len()`).
    pub fn format_and_paths(self, selector: u8) -> (ContentFormat, &'static [Path]) {
        match self {
            Target::Tlv => (ContentFormat::Tlv, &TREE_PATHS),
            Target::SenmlCbor => (ContentFormat::SenmlCbor, &TREE_PATHS),
            Target::SenmlJson => (ContentFormat::SenmlJson, &TREE_PATHS),
            Target::Lwm2mCbor => (ContentFormat::Lwm2mCbor, &TREE_PATHS),
            Target::Lwm2mJson => (ContentFormat::Lwm2mJson, &TREE_PATHS),
            Target::Text => (ContentFormat::Text, &VALUE_PATHS),
            Target::Opaque => (ContentFormat::Opaque, &VALUE_PATHS),
            Target::Cbor => (ContentFormat::Cbor, &VALUE_PATHS),
            Target::SenmlPaths if selector & 1 == 0 => (ContentFormat::SenmlCbor, &[]),
            Target::SenmlPaths => (ContentFormat::SenmlJson, &[]),
        }
    }
}

/// Request paths of the multi-value formats: composite/Send, objects, instances,
/// a single resource, a multiple resource, a resource instance, and an object
/// the model does not know.
pub const TREE_PATHS: [Path; 8] = [
    Path::ROOT,
    Path::object(3),
    Path::instance(3, 0),
    Path::instance(5, 0),
    Path::resource(5, 0, 3),
    Path::resource(5, 0, 8),
    Path::resource_instance(3, 0, 6, 1),
    Path::instance(32769, 0),
];

/// Request paths of the single-value formats (text, opaque, CBOR): one resource
/// of every data type the default registry has, an executable resource, and an
/// unknown object's resource and resource instance.
pub const VALUE_PATHS: [Path; 16] = [
    Path::resource(5, 0, 3),              // integer
    Path::resource(5, 0, 8),              // integer, multiple resource
    Path::resource_instance(3, 0, 6, 1),  // integer, resource instance
    Path::resource(5, 0, 0),              // opaque
    Path::resource(5, 0, 1),              // string
    Path::resource(5, 0, 5),              // integer
    Path::resource(5, 0, 12),             // time
    Path::resource(5, 0, 13),             // unsigned integer
    Path::resource(5, 0, 14),             // boolean
    Path::resource_instance(3, 0, 22, 0), // objlnk
    Path::resource(5, 0, 2),              // executable: no value
    Path::resource(32769, 0, 1),          // unknown
    Path::resource_instance(32769, 0, 1, 0),
    Path::resource(3, 0, 3), // string
    Path::resource(1, 0, 1), // integer
    Path::resource(5, 0, 9), // integer
];

fn registry() -> &'static Registry {
    static REGISTRY: OnceLock<Registry> = OnceLock::new();
    REGISTRY.get_or_init(Registry::default)
}

/// Runs the round-trip check on one fuzz input: a selector byte, then the payload.
///
/// # Panics
/// When the code under test panics or the round trip is not stable.
pub fn check(target: Target, input: &[u8]) {
    let Some((&selector, payload)) = input.split_first() else {
        return;
    };
    let (format, paths) = target.format_and_paths(selector);
    if target == Target::SenmlPaths {
        check_paths(format, payload);
    } else {
        check_records(format, &paths[usize::from(selector) % paths.len()], payload);
    }
}

/// Encoder refusals that are legitimate for records a decoder produced.
pub fn may_refuse(format: ContentFormat, error: &EncodeError) -> bool {
    match error {
        // SenML: a timed record followed by an untimed one (a base time stays in force).
        EncodeError::TimelessAfterTimed(_)
        // Tree formats: a path given twice, or a resource both whole and by instance.
        | EncodeError::ConflictingRecords(_)
        // JSON and text have no infinities or NaN; SenML times must be finite.
        | EncodeError::NonFinite(_)
        // TLV: an empty multiple-resource TLV for a single-instance resource.
        | EncodeError::NotSingleValue(0)
        | EncodeError::ValueTooLong(_) => true,
        // LwM2M JSON reads a payload for `/` but has no composite form to write.
        EncodeError::UnsupportedPath { .. } => format == ContentFormat::Lwm2mJson,
        _ => false,
    }
}

fn check_records(format: ContentFormat, path: &Path, payload: &[u8]) {
    let registry = registry();
    let options = DecodeOptions::default();
    // A record already in the vector: decode_into must append after it, and
    // leave the vector as it was on error.
    let sentinel = Record::new(Path::resource(0, 0, 0), Value::Boolean(true));
    let mut out = vec![sentinel.clone()];
    let collected = codec::decode_into(format, path, payload, registry, &options, &mut out);
    // The streaming decoder agrees: the same error, or the same records in
    // the same order (before an error it may have seen a prefix of them).
    let mut streamed = Vec::new();
    let streaming = codec::decode_each(format, path, payload, registry, &options, |r| streamed.push(r));
    assert_eq!(streaming, collected, "{format} decode_each and decode_into disagree on {}", hex(payload));
    if collected.is_err() {
        assert_eq!(out, [sentinel], "{format} decode_into changed the output vector on error");
        return;
    }
    assert_eq!(out[0], sentinel, "{format} decode_into overwrote a record already in the output vector");
    let first = &out[1..];
    assert!(
        same_records(&streamed, first, false),
        "{format} decode_each saw other records than decode_into\nstreamed: {streamed:?}\ncollected: {first:?}"
    );

    let mut encoded = Vec::new();
    match codec::encode(format, path, first, registry, &mut encoded) {
        Ok(()) => {}
        Err(error) if may_refuse(format, &error) => return,
        Err(error) => {
            panic!("{format} encoder refused records its decoder produced for {path}: {error}\nrecords: {first:?}")
        }
    }
    let second = codec::decode(format, path, &encoded, registry, &options).unwrap_or_else(|error| {
        panic!(
            "{format} decoder refused its encoder's output for {path}: {error}\nencoded: {}\nrecords: {first:?}",
            hex(&encoded)
        )
    });
    let sorted = matches!(format, ContentFormat::Tlv | ContentFormat::Lwm2mCbor);
    assert!(
        same_records(first, &second, sorted),
        "{format} decode -> encode -> decode changed the records for {path}\n\
         first:    {first:?}\nencoded:  {}\nsecond:   {second:?}",
        hex(&encoded)
    );

    let mut again = Vec::new();
    codec::encode(format, path, &second, registry, &mut again)
        .unwrap_or_else(|error| panic!("{format} encoder refused its own round trip for {path}: {error}"));
    assert!(
        again == encoded,
        "{format} encoding is not a fixed point for {path}\nfirst:  {}\nsecond: {}\nrecords: {second:?}",
        hex(&encoded),
        hex(&again)
    );
}

fn check_paths(format: ContentFormat, payload: &[u8]) {
    let options = DecodeOptions::default();
    let Ok(first) = codec::decode_paths(format, payload, &options) else {
        return;
    };
    let mut encoded = Vec::new();
    codec::encode_paths(format, &first, &mut encoded)
        .unwrap_or_else(|error| panic!("{format} cannot encode a path list: {error}"));
    let second = codec::decode_paths(format, &encoded, &options).unwrap_or_else(|error| {
        panic!("{format} decode_paths refused encode_paths' output: {error}\nencoded: {}", hex(&encoded))
    });
    assert_eq!(first, second, "{format} path list changed in the round trip\nencoded: {}", hex(&encoded));
    let mut again = Vec::new();
    codec::encode_paths(format, &second, &mut again)
        .unwrap_or_else(|error| panic!("{format} cannot encode a path list: {error}"));
    assert!(again == encoded, "{format} path list encoding is not a fixed point");
}

/// Record lists equal up to float tolerance; `sorted`: compared in path order.
pub fn same_records(a: &[Record<'_>], b: &[Record<'_>], sorted: bool) -> bool {
    if a.len() != b.len() {
        return false;
    }
    let mut a: Vec<&Record<'_>> = a.iter().collect();
    let mut b: Vec<&Record<'_>> = b.iter().collect();
    if sorted {
        a.sort_by_key(|r| r.path);
        b.sort_by_key(|r| r.path);
    }
    a.iter().zip(&b).all(|(x, y)| same_record(x, y))
}

fn same_record(a: &Record<'_>, b: &Record<'_>) -> bool {
    let same_time = match (a.time, b.time) {
        (None, None) => true,
        (Some(x), Some(y)) => same_f64(x, y),
        _ => false,
    };
    let same_value = match (&a.value, &b.value) {
        (Value::Float(x), Value::Float(y)) => same_f64(*x, *y),
        (x, y) => x == y,
    };
    a.path == b.path && same_time && same_value
}

/// Equal, both NaN, or within a relative 1e-12 (the formats write floats
/// exactly, so this only forgives the last bits).
pub fn same_f64(a: f64, b: f64) -> bool {
    a == b
        || (a.is_nan() && b.is_nan())
        || (a.is_finite() && b.is_finite() && (a - b).abs() <= 1e-12 * a.abs().max(b.abs()))
}

/// Lowercase hex, for failure messages.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The corpus folder of a target.
fn corpus_dir(target: Target) -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/fuzz").join(target.name())
}

/// The corpus files of a target, sorted by name; with `open_bugs`, only the
/// `crash-*` reproducers, else every other file.
fn corpus_files(target: Target, open_bugs: bool) -> Vec<std::path::PathBuf> {
    let dir = corpus_dir(target);
    let entries = std::fs::read_dir(&dir).unwrap_or_else(|error| panic!("cannot read {}: {error}", dir.display()));
    let mut files: Vec<std::path::PathBuf> = entries
        .map(|entry| entry.unwrap_or_else(|error| panic!("cannot list {}: {error}", dir.display())).path())
        .filter(|path| path.is_file())
        .filter(|path| {
            let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
            !name.starts_with('.') && name.starts_with("crash-") == open_bugs
        })
        .collect();
    files.sort();
    files
}

/// Replays files through the check; returns one line per file that failed.
fn replay(target: Target, files: &[std::path::PathBuf]) -> Vec<String> {
    let mut failures = Vec::new();
    for file in files {
        let input = std::fs::read(file).unwrap_or_else(|error| panic!("cannot read {}: {error}", file.display()));
        if let Err(panic) = std::panic::catch_unwind(|| check(target, &input)) {
            let message = panic
                .downcast_ref::<String>()
                .map(String::as_str)
                .or_else(|| panic.downcast_ref::<&str>().copied())
                .unwrap_or("(non-string panic)");
            failures.push(format!("{} (input {}): {message}", file.display(), hex(&input)));
        }
    }
    failures
}

fn replay_corpus(target: Target) {
    let files = corpus_files(target, false);
    assert!(!files.is_empty(), "no corpus files in {}: the test would check nothing", corpus_dir(target).display());
    let failures = replay(target, &files);
    assert!(failures.is_empty(), "{} of {} corpus files failed:\n{}", failures.len(), files.len(), failures.join("\n"));
}

macro_rules! corpus_tests {
    ($($test:ident => $target:expr),* $(,)?) => {
        $(
            #[test]
            fn $test() {
                replay_corpus($target);
            }
        )*
    };
}

corpus_tests! {
    tlv_corpus => Target::Tlv,
    senml_cbor_corpus => Target::SenmlCbor,
    senml_json_corpus => Target::SenmlJson,
    lwm2m_cbor_corpus => Target::Lwm2mCbor,
    lwm2m_json_corpus => Target::Lwm2mJson,
    text_corpus => Target::Text,
    opaque_corpus => Target::Opaque,
    cbor_corpus => Target::Cbor,
    senml_paths_corpus => Target::SenmlPaths,
}

/// The `crash-*` reproducers of bugs still open in `src/`: this test fails while
/// any of them still fails. Once a bug is fixed, rename its file (drop the
/// `crash-` prefix) so that the corpus tests keep it as a regression test.
#[test]
#[ignore = "replays reproducers of open bugs in src/; run with --ignored"]
fn open_bug_reproducers() {
    let mut failures = Vec::new();
    for target in Target::ALL {
        failures.extend(replay(target, &corpus_files(target, true)));
    }
    assert!(failures.is_empty(), "open bugs still reproduce:\n{}", failures.join("\n"));
}

#[test]
fn check_accepts_the_empty_input_and_tolerates_floats() {
    for target in Target::ALL {
        check(target, &[]);
    }
    assert!(same_f64(f64::NAN, f64::NAN));
    assert!(same_f64(0.1 + 0.2, 0.3));
    assert!(!same_f64(1.0, 1.0001));
    assert!(!same_f64(f64::INFINITY, f64::MAX));
}
