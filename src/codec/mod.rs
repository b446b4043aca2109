//! Payload codecs: TLV, SenML-CBOR, SenML-JSON, LwM2M-CBOR, LwM2M JSON, plain
//! text, opaque and single-value CBOR.
//!
//! Every decoder borrows strings and bytes from its input where the format
//! allows it, never allocates in proportion to a length field before checking it
//! against the bytes present, bounds nesting and the number of records, and
//! reports failures with the byte offset where they were found. Every encoder
//! writes into a [`bytes::BufMut`] and round-trips: decoding what it wrote gives
//! back the records it was given.
//!
//! Values are typed through the [`Registry`]: TLV carries no types at all, and a
//! SenML number may be an integer, an unsigned integer, a float or a time. A
//! resource the registry does not know gets its wire type (opaque in TLV).
//!
//! Records come back in payload order for SenML (which may repeat a path with
//! different times) and in payload order for the tree formats too; sort them by
//! path when an order is needed.

mod base64;
pub mod cbor;
mod cbor_util;
mod error;
mod json;
pub mod lwm2m_cbor;
pub mod lwm2m_json;
pub mod opaque;
mod senml;
pub mod senml_cbor;
pub mod senml_json;
pub mod text;
pub mod tlv;

use alloc::vec::Vec;
use bytes::BufMut;

pub use error::{DecodeError, DecodeErrorKind, EncodeError, TlvKind};

use crate::model::{ContentFormat, DataType, Path, Record, Registry, TypeLookup};

/// Limits that keep a decoder's work and memory bounded on hostile input.
///
/// ```
/// use lwm2m_fota::codec::DecodeOptions;
/// let options = DecodeOptions::default().with_max_records(16);
/// assert_eq!(options.max_records, 16);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct DecodeOptions {
    /// Most records one payload may produce (default 65,536).
    pub max_records: usize,
    /// Deepest nesting of containers (CBOR arrays and maps, JSON values) the
    /// decoders follow, including inside ignored SenML labels (default 16).
    pub max_depth: usize,
}

impl DecodeOptions {
    /// The default limits.
    pub const DEFAULT: DecodeOptions = DecodeOptions { max_records: 65_536, max_depth: 16 };

    /// The same options with another record limit.
    pub const fn with_max_records(mut self, max_records: usize) -> DecodeOptions {
        self.max_records = max_records;
        self
    }

    /// The same options with another nesting limit.
    pub const fn with_max_depth(mut self, max_depth: usize) -> DecodeOptions {
        self.max_depth = max_depth;
        self
    }
}

impl Default for DecodeOptions {
    fn default() -> DecodeOptions {
        DecodeOptions::DEFAULT
    }
}

/// Decodes a payload of `format` that answers `path` (the request path of the
/// Read, Write, Notify, or `/` for Send and composite operations).
///
/// # Errors
/// A [`DecodeError`] with the byte offset of the first problem.
pub fn decode<'a>(
    format: ContentFormat,
    path: &Path,
    payload: &'a [u8],
    registry: &Registry,
    options: &DecodeOptions,
) -> Result<Vec<Record<'a>>, DecodeError> {
    // A record takes a few bytes at least: reserve for the common case without
    // trusting anything the payload says.
    let mut records = Vec::with_capacity((payload.len() / 8).clamp(1, 64));
    decode_into(format, path, payload, registry, options, &mut records)?;
    Ok(records)
}

/// Like [`decode`], appending to `out` so that a caller can reuse one vector and
/// decode without allocating. On error `out` is left as it was.
///
/// # Errors
/// A [`DecodeError`] with the byte offset of the first problem.
pub fn decode_into<'a>(
    format: ContentFormat,
    path: &Path,
    payload: &'a [u8],
    registry: &Registry,
    options: &DecodeOptions,
    out: &mut Vec<Record<'a>>,
) -> Result<(), DecodeError> {
    let start = out.len();
    let result = match format {
        ContentFormat::Tlv => tlv::decode_into(path, payload, registry, options, out),
        ContentFormat::SenmlCbor => senml_cbor::decode_into(path, payload, registry, options, out),
        ContentFormat::SenmlJson => senml_json::decode_into(path, payload, registry, options, out),
        ContentFormat::Lwm2mCbor => lwm2m_cbor::decode_into(path, payload, registry, options, out),
        ContentFormat::Lwm2mJson => lwm2m_json::decode_into(path, payload, registry, options, out),
        ContentFormat::Text => text::decode(path, payload, registry).map(|r| out.push(r)),
        ContentFormat::Opaque => opaque::decode(path, payload, registry).map(|r| out.push(r)),
        ContentFormat::Cbor => cbor::decode(path, payload, registry, options).map(|r| out.push(r)),
        other => Err(DecodeError::new(0, DecodeErrorKind::UnsupportedFormat(other))),
    };
    if result.is_err() {
        out.truncate(start);
    }
    result
}

/// Decodes a payload of `format` that answers `path`, handing each record to
/// `each` in payload order instead of collecting them.
///
/// SenML-CBOR, SenML-JSON, TLV and the single-value formats stream: nothing is
/// allocated per record. LwM2M-CBOR and LwM2M JSON are checked as a whole
/// (a path given twice is only an error once the payload is read), so they
/// decode into a vector first.
///
/// ```
/// use lwm2m_fota::codec::{self, DecodeOptions};
/// use lwm2m_fota::model::{ContentFormat, Path, Registry, Value};
/// // State 1 and Update Result 0 of /5/0 in TLV.
/// let payload = [0xc1, 0x03, 0x01, 0xc1, 0x05, 0x00];
/// let mut state = None;
/// codec::decode_each(ContentFormat::Tlv, &Path::instance(5, 0), &payload, &Registry::builtin(),
///                    &DecodeOptions::default(), |record| {
///     if record.path == Path::resource(5, 0, 3) {
///         state = record.value.as_i64();
///     }
/// })?;
/// assert_eq!(state, Some(1));
/// # Ok::<(), lwm2m_fota::codec::DecodeError>(())
/// ```
///
/// # Errors
/// A [`DecodeError`] with the byte offset of the first problem; `each` has
/// then seen the records before it, so a caller that must not act on part of
/// a payload collects what it learns and applies it only on success.
pub fn decode_each<'a>(
    format: ContentFormat,
    path: &Path,
    payload: &'a [u8],
    registry: &Registry,
    options: &DecodeOptions,
    mut each: impl FnMut(Record<'a>),
) -> Result<(), DecodeError> {
    match format {
        ContentFormat::Tlv => tlv::decode_each(path, payload, registry, options, each),
        ContentFormat::SenmlCbor => senml_cbor::decode_each(path, payload, registry, options, each),
        ContentFormat::SenmlJson => senml_json::decode_each(path, payload, registry, options, each),
        ContentFormat::Text => text::decode(path, payload, registry).map(each),
        ContentFormat::Opaque => opaque::decode(path, payload, registry).map(each),
        ContentFormat::Cbor => cbor::decode(path, payload, registry, options).map(each),
        _ => {
            let mut records = Vec::new();
            decode_into(format, path, payload, registry, options, &mut records)?;
            records.into_iter().for_each(&mut each);
            Ok(())
        }
    }
}

/// Encodes `records` as a payload of `format` answering `path`, appending to `buf`.
///
/// # Errors
/// An [`EncodeError`] when the records do not fit the path, the model or the format.
pub fn encode<B: BufMut>(
    format: ContentFormat,
    path: &Path,
    records: &[Record<'_>],
    registry: &Registry,
    buf: &mut B,
) -> Result<(), EncodeError> {
    match format {
        ContentFormat::Tlv => tlv::encode(path, records, registry, buf),
        ContentFormat::SenmlCbor => senml_cbor::encode(path, records, registry, buf),
        ContentFormat::SenmlJson => senml_json::encode(path, records, registry, buf),
        ContentFormat::Lwm2mCbor => lwm2m_cbor::encode(path, records, registry, buf),
        ContentFormat::Lwm2mJson => lwm2m_json::encode(path, records, registry, buf),
        ContentFormat::Text => text::encode(path, single(format, path, records)?, registry, buf),
        ContentFormat::Opaque => opaque::encode(path, single(format, path, records)?, registry, buf),
        ContentFormat::Cbor => cbor::encode(path, single(format, path, records)?, registry, buf),
        other => Err(EncodeError::UnsupportedFormat(other)),
    }
}

/// Decodes a name-only list (the body of a Read-Composite or Observe-Composite
/// request) in SenML-CBOR or SenML-JSON.
///
/// # Errors
/// A [`DecodeError`] with the byte offset of the first problem;
/// [`DecodeErrorKind::UnsupportedFormat`] for other formats.
pub fn decode_paths(format: ContentFormat, payload: &[u8], options: &DecodeOptions) -> Result<Vec<Path>, DecodeError> {
    match format {
        ContentFormat::SenmlCbor => senml_cbor::decode_paths(payload, options),
        ContentFormat::SenmlJson => senml_json::decode_paths(payload, options),
        other => Err(DecodeError::new(0, DecodeErrorKind::UnsupportedFormat(other))),
    }
}

/// Encodes a name-only list (a Read-Composite request body) in SenML-CBOR or
/// SenML-JSON.
///
/// # Errors
/// [`EncodeError::UnsupportedFormat`] for other formats.
pub fn encode_paths<B: BufMut>(format: ContentFormat, paths: &[Path], buf: &mut B) -> Result<(), EncodeError> {
    match format {
        ContentFormat::SenmlCbor => {
            senml_cbor::encode_paths(paths, buf);
            Ok(())
        }
        ContentFormat::SenmlJson => {
            senml_json::encode_paths(paths, buf);
            Ok(())
        }
        other => Err(EncodeError::UnsupportedFormat(other)),
    }
}

fn single<'r, 'a>(
    format: ContentFormat,
    path: &Path,
    records: &'r [Record<'a>],
) -> Result<&'r Record<'a>, EncodeError> {
    if !path.is_value_path() {
        return Err(EncodeError::UnsupportedPath { format, path: *path });
    }
    match records {
        [record] if record.path == *path => {
            if record.time.is_some() {
                return Err(EncodeError::TimeNotSupported(format));
            }
            Ok(record)
        }
        [record] => Err(EncodeError::PathOutsideRequest { path: record.path, request: *path }),
        _ => Err(EncodeError::NotSingleValue(records.len())),
    }
}

/// Checks a record against the request path and the model before it is encoded.
fn check_record(request: &Path, record: &Record<'_>, registry: &Registry) -> Result<(), EncodeError> {
    check_record_in(request, record, &mut TypeLookup::new(registry))
}

/// As [`check_record`], for the records of one pack (`types` keeps the
/// object looked up last).
fn check_record_in(request: &Path, record: &Record<'_>, types: &mut TypeLookup<'_>) -> Result<(), EncodeError> {
    if !record.path.starts_with(request) {
        return Err(EncodeError::PathOutsideRequest { path: record.path, request: *request });
    }
    if !record.path.is_value_path() {
        return Err(EncodeError::NotAValuePath(record.path));
    }
    check_type(&record.path, record.value.data_type(), types)
}

fn check_type(path: &Path, found: DataType, types: &mut TypeLookup<'_>) -> Result<(), EncodeError> {
    match types.data_type(path) {
        Some(expected) if expected != found => Err(EncodeError::TypeMismatch { path: *path, expected, found }),
        _ => Ok(()),
    }
}

/// For the tree formats (TLV, LwM2M-CBOR): the records checked, sorted by path,
/// without repeated paths and without a resource given both whole and by instance.
fn tree_records<'r, 'a>(
    format: ContentFormat,
    request: &Path,
    records: &'r [Record<'a>],
    registry: &Registry,
) -> Result<Vec<&'r Record<'a>>, EncodeError> {
    let mut types = TypeLookup::new(registry);
    let mut sorted: Vec<&Record<'a>> = Vec::with_capacity(records.len());
    for record in records {
        check_record_in(request, record, &mut types)?;
        if record.time.is_some() {
            return Err(EncodeError::TimeNotSupported(format));
        }
        sorted.push(record);
    }
    if !sorted.windows(2).all(|w| w[0].path < w[1].path) {
        sorted.sort_by_key(|r| r.path);
    }
    for pair in sorted.windows(2) {
        // Sorted order puts /O/I/R right before /O/I/R/RI, so neighbours suffice.
        if pair[1].path.starts_with(&pair[0].path) {
            return Err(EncodeError::ConflictingRecords(pair[1].path));
        }
    }
    Ok(sorted)
}
