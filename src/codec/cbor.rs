//! Single-value CBOR (Content-Format 60, LwM2M 1.1+): one CBOR data item holding
//! the value of one resource or resource instance.
//!
//! ```
//! use lwm2m_fota::codec::{cbor, DecodeOptions};
//! use lwm2m_fota::model::{Path, Registry, Value};
//! // Half-precision 300.0 for an unknown resource decodes as a float.
//! let record = cbor::decode(&Path::resource(3442, 0, 130), &[0xf9, 0x5c, 0xb0],
//!                           &Registry::default(), &DecodeOptions::default())?;
//! assert_eq!(record.value, Value::Float(300.0));
//! # Ok::<(), lwm2m_fota::codec::DecodeError>(())
//! ```

use bytes::BufMut;

use super::cbor_util::{self, Reader};
use super::{DecodeError, DecodeErrorKind as Kind, DecodeOptions, EncodeError};
use crate::model::{ContentFormat, Path, Record, Registry};

/// The record a single-value CBOR payload carries for `path`.
///
/// # Errors
/// A [`DecodeError`] with the offset of the problem.
pub fn decode<'a>(
    path: &Path,
    bytes: &'a [u8],
    registry: &Registry,
    _options: &DecodeOptions,
) -> Result<Record<'a>, DecodeError> {
    if !path.is_value_path() {
        return Err(DecodeError::new(0, Kind::UnsupportedPath { format: ContentFormat::Cbor, path: *path }));
    }
    let mut reader = Reader::new(bytes);
    let wire = reader.leaf()?;
    if !reader.at_end() {
        return Err(reader.error(Kind::TrailingBytes));
    }
    let value = wire.typed(registry.data_type(path)).map_err(|kind| DecodeError::new(0, kind))?;
    Ok(Record::new(*path, value))
}

/// Writes one record as a single CBOR data item.
///
/// # Errors
/// [`EncodeError`] when the record's type is not the model's.
pub fn encode<B: BufMut>(
    path: &Path,
    record: &Record<'_>,
    registry: &Registry,
    buf: &mut B,
) -> Result<(), EncodeError> {
    super::check_record(path, record, registry)?;
    cbor_util::put_leaf(buf, &record.value);
    Ok(())
}
