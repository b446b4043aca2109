//! Plain text (Content-Format 0): one value of one resource or resource instance,
//! as decimal numbers, `0`/`1` booleans, `oid:iid` object links and base64
//! (standard alphabet, padded) opaque values. An empty payload is an empty string.
//!
//! ```
//! use lwm2m_fota::codec::text;
//! use lwm2m_fota::model::{Path, Registry, Value};
//! let record = text::decode(&Path::resource(5, 0, 5), b"10", &Registry::default())?;
//! assert_eq!(record.value, Value::Integer(10)); // Update Result: cancelled
//! # Ok::<(), lwm2m_fota::codec::DecodeError>(())
//! ```

use alloc::borrow::Cow;
use bytes::BufMut;

use super::base64::{self, Alphabet};
use super::json;
use super::{DecodeError, DecodeErrorKind as Kind, EncodeError};
use crate::model::{ContentFormat, DataType, ObjectLink, Path, Record, Registry, Value};

/// The record a text payload carries for `path`, typed by the model (a resource
/// the model does not know is a string).
///
/// # Errors
/// A [`DecodeError`]: invalid UTF-8, or text that does not parse as the type.
pub fn decode<'a>(path: &Path, bytes: &'a [u8], registry: &Registry) -> Result<Record<'a>, DecodeError> {
    if !path.is_value_path() {
        return Err(DecodeError::new(0, Kind::UnsupportedPath { format: ContentFormat::Text, path: *path }));
    }
    let text = core::str::from_utf8(bytes).map_err(|e| DecodeError::new(e.valid_up_to(), Kind::InvalidUtf8))?;
    let data_type = registry.data_type(path);
    let invalid = |dt: DataType| DecodeError::new(0, Kind::InvalidText(dt));
    let value = match data_type {
        None | Some(DataType::String) => Value::string(text),
        Some(DataType::Corelnk) => Value::Corelnk(Cow::Borrowed(text)),
        Some(dt @ (DataType::Integer | DataType::Time)) => {
            let v = parse_integer(text).ok_or(invalid(dt))?;
            if dt == DataType::Time { Value::Time(v) } else { Value::Integer(v) }
        }
        Some(DataType::UnsignedInteger) => {
            if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
                return Err(invalid(DataType::UnsignedInteger));
            }
            Value::UnsignedInteger(text.parse().map_err(|_| invalid(DataType::UnsignedInteger))?)
        }
        Some(DataType::Float) => {
            // Decimal notation only: no "inf", "NaN" or leading '+'.
            let plain = !text.is_empty()
                && !text.starts_with('+')
                && text.bytes().all(|b| matches!(b, b'0'..=b'9' | b'-' | b'+' | b'.' | b'e' | b'E'));
            if !plain {
                return Err(invalid(DataType::Float));
            }
            Value::Float(text.parse().map_err(|_| invalid(DataType::Float))?)
        }
        Some(DataType::Boolean) => match text {
            "0" => Value::Boolean(false),
            "1" => Value::Boolean(true),
            _ => return Err(invalid(DataType::Boolean)),
        },
        Some(DataType::Objlnk) => Value::Objlnk(text.parse::<ObjectLink>().map_err(|_| invalid(DataType::Objlnk))?),
        Some(DataType::Opaque) => {
            Value::Opaque(Cow::Owned(base64::decode(bytes).map_err(|i| DecodeError::new(i, Kind::InvalidBase64))?))
        }
        Some(DataType::None) => return Err(DecodeError::new(0, Kind::ExecutableResource)),
    };
    Ok(Record::new(*path, value))
}

fn parse_integer(text: &str) -> Option<i64> {
    let digits = text.strip_prefix('-').unwrap_or(text);
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    text.parse().ok()
}

/// Writes one record as text.
///
/// # Errors
/// [`EncodeError`] when the record's type is not the model's or a float is not
/// finite.
pub fn encode<B: BufMut>(
    path: &Path,
    record: &Record<'_>,
    registry: &Registry,
    buf: &mut B,
) -> Result<(), EncodeError> {
    super::check_record(path, record, registry)?;
    match &record.value {
        Value::Integer(v) | Value::Time(v) => json::put_i64(buf, *v),
        Value::UnsignedInteger(v) => json::put_u64(buf, *v),
        Value::Float(v) => {
            if !v.is_finite() {
                return Err(EncodeError::NonFinite(record.path));
            }
            json::put_f64(buf, *v);
        }
        Value::Boolean(v) => buf.put_u8(if *v { b'1' } else { b'0' }),
        Value::String(s) | Value::Corelnk(s) => buf.put_slice(s.as_bytes()),
        Value::Opaque(b) => base64::encode_into(b, Alphabet::Standard, |c| buf.put_u8(c)),
        Value::Objlnk(link) => {
            json::put_u64(buf, u64::from(link.object_id));
            buf.put_u8(b':');
            json::put_u64(buf, u64::from(link.instance_id));
        }
    }
    Ok(())
}
