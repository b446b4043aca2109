//! Errors of the codecs: every decoding failure carries the byte offset where it
//! was found.

use core::fmt;

use crate::model::{ContentFormat, DataType, Path, PathError};

/// A payload that could not be decoded, and where.
///
/// ```
/// use lwm2m_fota::codec::{self, DecodeErrorKind, DecodeOptions};
/// use lwm2m_fota::model::{ContentFormat, Path, Registry};
/// // A resource TLV announcing 3 bytes of value, of which only 2 are present.
/// let error = codec::decode(ContentFormat::Tlv, &Path::instance(3, 0), &[0xC3, 0x00, b'a', b'b'],
///                           &Registry::default(), &DecodeOptions::default()).unwrap_err();
/// assert_eq!(error.offset, 4); // where the bytes ran out
/// assert_eq!(error.kind, DecodeErrorKind::Truncated);
/// assert_eq!(error.to_string(), "payload ends inside a value or header at byte 4");
/// ```
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{kind} at byte {offset}")]
pub struct DecodeError {
    /// Byte offset into the payload where the problem was found.
    pub offset: usize,
    /// What was wrong.
    pub kind: DecodeErrorKind,
}

impl DecodeError {
    pub(crate) const fn new(offset: usize, kind: DecodeErrorKind) -> DecodeError {
        DecodeError { offset, kind }
    }
}

/// The kinds of decoding failure.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum DecodeErrorKind {
    /// The payload ends inside a header or a value.
    #[error("payload ends inside a value or header")]
    Truncated,
    /// Bytes follow the end of a complete payload.
    #[error("unexpected bytes after the end of the payload")]
    TrailingBytes,
    /// A TLV container's length does not end on the boundary of its last child.
    #[error("container length does not end on a child boundary")]
    ContainerLength,
    /// Two siblings carry the same id.
    #[error("duplicate id {id} at the same level")]
    DuplicateId {
        /// The repeated id.
        id: u16,
    },
    /// A path given twice, or a resource given both whole and by instance
    /// (LwM2M-CBOR).
    #[error("path {0} given twice or both whole and by instance")]
    ConflictingPaths(Path),
    /// A TLV of a kind that cannot stand at this place for this request path.
    #[error("{found} TLV not allowed here")]
    UnexpectedTlv {
        /// The kind of TLV found.
        found: TlvKind,
    },
    /// A TLV id that does not match the request path.
    #[error("TLV id {found} does not match the request path's id {expected}")]
    IdMismatch {
        /// The id the request path demands.
        expected: u16,
        /// The id found.
        found: u16,
    },
    /// A value whose length is not one its type allows (integers 1/2/4/8 bytes,
    /// floats 4/8, booleans 1, object links 4).
    #[error("{length}-byte value is not a valid {data_type:?}")]
    InvalidLength {
        /// Type the model gives the resource.
        data_type: DataType,
        /// Length found.
        length: usize,
    },
    /// A boolean other than 0 or 1.
    #[error("boolean byte {0:#04x} is neither 0 nor 1")]
    InvalidBoolean(u8),
    /// Text that is not UTF-8.
    #[error("text is not valid UTF-8")]
    InvalidUtf8,
    /// A value of another type than the resource's.
    #[error("{found} value where the model expects {expected:?}")]
    TypeMismatch {
        /// The model's type.
        expected: DataType,
        /// What the payload held.
        found: &'static str,
    },
    /// A number that does not fit the resource's type.
    #[error("number out of range for {0:?}")]
    NumberOutOfRange(DataType),
    /// A name or key that does not form a valid path.
    #[error("invalid path: {0}")]
    InvalidPath(PathError),
    /// A record outside the path the payload answers.
    #[error("record path {path} lies outside the request path {request}")]
    PathOutsideRequest {
        /// The record's path.
        path: Path,
        /// The request path.
        request: Path,
    },
    /// A value at a path above resource level.
    #[error("value at {0}, which is not a resource or resource instance")]
    NotAValuePath(Path),
    /// A record without a value where one is required.
    #[error("record has no value")]
    MissingValue,
    /// A record with more than one value field.
    #[error("record has more than one value")]
    MultipleValues,
    /// A SenML record that repeats a label.
    #[error("label repeated in one record")]
    DuplicateLabel,
    /// A SenML label ending in `_`, which receivers must understand (RFC 8428 §4.4).
    #[error("unknown must-understand label")]
    MustUnderstandLabel,
    /// A SenML base version newer than RFC 8428's 10.
    #[error("unsupported SenML version {0}")]
    UnsupportedVersion(u64),
    /// A value of the wrong kind for a SenML label or an LwM2M-CBOR key.
    #[error("invalid {0}")]
    InvalidField(&'static str),
    /// Malformed CBOR.
    #[error("malformed CBOR: {0}")]
    InvalidCbor(&'static str),
    /// Malformed JSON.
    #[error("malformed JSON: {0}")]
    InvalidJson(&'static str),
    /// Malformed base64.
    #[error("malformed base64")]
    InvalidBase64,
    /// A plain-text value that does not parse as the resource's type.
    #[error("text does not parse as {0:?}")]
    InvalidText(DataType),
    /// A CBOR `null` or `undefined` leaf, which carries no LwM2M value.
    #[error("null value")]
    NullValue,
    /// More records than [`DecodeOptions::max_records`](super::DecodeOptions::max_records).
    #[error("more than {limit} records")]
    TooManyRecords {
        /// The limit in force.
        limit: usize,
    },
    /// Nesting deeper than the format allows or [`DecodeOptions::max_depth`](super::DecodeOptions::max_depth).
    #[error("nesting deeper than {limit}")]
    TooDeep {
        /// The limit in force.
        limit: usize,
    },
    /// An executable resource, which has no value.
    #[error("executable resource carries no value")]
    ExecutableResource,
    /// A request path the format cannot answer (e.g. TLV for `/`, text for `/3/0`).
    #[error("{format} cannot carry a payload for {path}")]
    UnsupportedPath {
        /// The format.
        format: ContentFormat,
        /// The request path.
        path: Path,
    },
    /// A format this crate does not decode values from.
    #[error("{0} is not a value format")]
    UnsupportedFormat(ContentFormat),
}

/// The four TLV identifier types.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TlvKind {
    /// `00`: an object instance containing resources.
    ObjectInstance,
    /// `01`: one instance of a multiple resource.
    ResourceInstance,
    /// `10`: a multiple resource containing resource instances.
    MultipleResource,
    /// `11`: a resource with its value.
    Resource,
}

impl fmt::Display for TlvKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            TlvKind::ObjectInstance => "object instance",
            TlvKind::ResourceInstance => "resource instance",
            TlvKind::MultipleResource => "multiple resource",
            TlvKind::Resource => "resource",
        })
    }
}

/// Records that cannot be encoded in the requested format.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum EncodeError {
    /// A format this crate does not encode values into.
    #[error("{0} is not a value format")]
    UnsupportedFormat(ContentFormat),
    /// The format cannot carry a payload for this request path.
    #[error("{format} cannot carry a payload for {path}")]
    UnsupportedPath {
        /// The format.
        format: ContentFormat,
        /// The request path.
        path: Path,
    },
    /// A record outside the request path.
    #[error("record path {path} lies outside the request path {request}")]
    PathOutsideRequest {
        /// The record's path.
        path: Path,
        /// The request path.
        request: Path,
    },
    /// A record above resource level.
    #[error("record at {0}, which is not a resource or resource instance")]
    NotAValuePath(Path),
    /// Two records at one path, or a resource given both as a single value and
    /// as instances (tree formats only; SenML allows repeated paths).
    #[error("conflicting records at {0}")]
    ConflictingRecords(Path),
    /// A single-value format (text, opaque, CBOR) needs exactly one record at the
    /// request path.
    #[error("single-value format needs exactly one record at the request path, got {0}")]
    NotSingleValue(usize),
    /// A value of another type than the model gives the resource.
    #[error("{found:?} value at {path} where the model expects {expected:?}")]
    TypeMismatch {
        /// The record's path.
        path: Path,
        /// The model's type.
        expected: DataType,
        /// The value's type.
        found: DataType,
    },
    /// The format cannot carry this value (e.g. opaque in LwM2M 1.0 text).
    #[error("{format} cannot carry a {data_type:?} value")]
    UnsupportedValue {
        /// The format.
        format: ContentFormat,
        /// The value's type.
        data_type: DataType,
    },
    /// The format cannot carry record times (TLV, text, opaque, CBOR, LwM2M-CBOR).
    #[error("{0} cannot carry record times")]
    TimeNotSupported(ContentFormat),
    /// A TLV value longer than 2^24 - 1 bytes.
    #[error("value of {0} bytes exceeds TLV's 16 MiB limit")]
    ValueTooLong(usize),
    /// SenML cannot give a record no time once a base time is in force: timed
    /// records must not be followed by untimed ones.
    #[error("record at {0} has no time but follows timed records")]
    TimelessAfterTimed(Path),
    /// A time or float that is not finite where the format needs a finite number.
    #[error("non-finite number at {0}")]
    NonFinite(Path),
}
