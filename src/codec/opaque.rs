//! Opaque payloads (Content-Format 42, `application/octet-stream`): the whole
//! payload is the value of one opaque resource, such as the firmware Package
//! `/5/0/0` pushed block by block.

use bytes::BufMut;

use super::{DecodeError, DecodeErrorKind as Kind, EncodeError};
use crate::model::{ContentFormat, DataType, Path, Record, Registry, Value};

/// The record an opaque payload carries for `path` (a resource or resource
/// instance whose type is Opaque, or unknown to the model).
///
/// # Errors
/// [`DecodeErrorKind::UnsupportedPath`](super::DecodeErrorKind::UnsupportedPath)
/// above resource level; a type mismatch for a non-opaque resource.
pub fn decode<'a>(path: &Path, bytes: &'a [u8], registry: &Registry) -> Result<Record<'a>, DecodeError> {
    if !path.is_value_path() {
        return Err(DecodeError::new(0, Kind::UnsupportedPath { format: ContentFormat::Opaque, path: *path }));
    }
    match registry.data_type(path) {
        None | Some(DataType::Opaque) => Ok(Record::new(*path, Value::opaque(bytes))),
        Some(expected) => Err(DecodeError::new(0, Kind::TypeMismatch { expected, found: "opaque payload" })),
    }
}

/// Writes an opaque record's bytes.
///
/// # Errors
/// [`EncodeError::UnsupportedValue`] for any value but opaque.
pub fn encode<B: BufMut>(
    path: &Path,
    record: &Record<'_>,
    registry: &Registry,
    buf: &mut B,
) -> Result<(), EncodeError> {
    super::check_record(path, record, registry)?;
    match &record.value {
        Value::Opaque(bytes) => {
            buf.put_slice(bytes);
            Ok(())
        }
        other => Err(EncodeError::UnsupportedValue { format: ContentFormat::Opaque, data_type: other.data_type() }),
    }
}
