//! SenML-JSON (Content-Format 110, RFC 8428 §5 with the LwM2M profile).
//!
//! Opaque values (`vd`) are written in base64url without padding (RFC 8428) and
//! read in either base64 alphabet, padded or not (older LwM2M clients send
//! standard base64). Floats are written in their shortest round-trip form and
//! always with a fraction or exponent, so they read back as floats.
//!
//! ```
//! use lwm2m_fota::codec::{senml_json, DecodeOptions};
//! use lwm2m_fota::model::{Path, Registry, Value};
//! let payload = br#"[{"bn":"/5/0/0","vd":"AQIDBAU"}]"#;
//! let mut records = Vec::new();
//! senml_json::decode_into(&Path::resource(5, 0, 0), payload, &Registry::default(),
//!                         &DecodeOptions::default(), &mut records)?;
//! assert_eq!(records[0].value, Value::opaque(&[1, 2, 3, 4, 5]));
//! # Ok::<(), lwm2m_fota::codec::DecodeError>(())
//! ```

use alloc::borrow::Cow;
use alloc::vec::Vec;
use bytes::BufMut;

use super::base64::{self, Alphabet};
use super::cbor_util::{Number, WireValue};
use super::json::{self, JsonReader};
use super::senml::{self, Context, Label, OutRecord, RawRecord};
use super::{DecodeError, DecodeErrorKind as Kind, DecodeOptions, EncodeError};
use crate::model::{ContentFormat, Path, Record, Registry, Value};

/// Decodes a SenML-JSON pack answering `path` (`/` for Send and composite
/// operations), appending its records to `out` in pack order.
///
/// # Errors
/// A [`DecodeError`] with the offset of the first problem.
pub fn decode_into<'a>(
    path: &Path,
    bytes: &'a [u8],
    registry: &Registry,
    options: &DecodeOptions,
    out: &mut Vec<Record<'a>>,
) -> Result<(), DecodeError> {
    decode_each(path, bytes, registry, options, |record| out.push(record))
}

/// Decodes a pack answering `path`, handing each record to `each` in pack order
/// instead of collecting them; nothing is allocated per record.
///
/// # Errors
/// A [`DecodeError`] with the offset of the first problem; `each` has then
/// seen the records before it.
pub fn decode_each<'a>(
    path: &Path,
    bytes: &'a [u8],
    registry: &Registry,
    options: &DecodeOptions,
    each: impl FnMut(Record<'a>),
) -> Result<(), DecodeError> {
    for_each_record(bytes, options, senml::resolver(path, registry, options, each))
}

/// Decodes a name-only pack (a Read-Composite or Observe-Composite request body).
///
/// # Errors
/// A [`DecodeError`] with the offset of the first problem.
pub fn decode_paths(bytes: &[u8], options: &DecodeOptions) -> Result<Vec<Path>, DecodeError> {
    let mut paths = Vec::new();
    let mut context = Context::default();
    for_each_record(bytes, options, |raw, offset| {
        if paths.len() >= options.max_records {
            return Err(DecodeError::new(offset, Kind::TooManyRecords { limit: options.max_records }));
        }
        paths.push(context.name_only(raw, offset)?);
        Ok(())
    })?;
    Ok(paths)
}

fn for_each_record<'a>(
    bytes: &'a [u8],
    options: &DecodeOptions,
    mut each: impl FnMut(&mut RawRecord<'a>, usize) -> Result<(), DecodeError>,
) -> Result<(), DecodeError> {
    let mut reader = JsonReader::new(bytes, options.max_depth);
    let mut raw = RawRecord::default();
    reader.expect(b'[', "expected a SenML pack (an array)")?;
    if !reader.empty_container(b']') {
        loop {
            reader.skip_whitespace();
            let offset = reader.position();
            read_record(&mut reader, &mut raw)?;
            each(&mut raw, offset)?;
            if !reader.next_element(b']')? {
                break;
            }
        }
    }
    if !reader.at_end() {
        return Err(DecodeError::new(reader.position(), Kind::TrailingBytes));
    }
    Ok(())
}

fn read_record<'a>(reader: &mut JsonReader<'a>, raw: &mut RawRecord<'a>) -> Result<(), DecodeError> {
    reader.expect(b'{', "expected a SenML record (an object)")?;
    raw.clear();
    if reader.empty_container(b'}') {
        return Ok(());
    }
    loop {
        reader.skip_whitespace();
        let key_offset = reader.position();
        let key = reader.string()?;
        reader.expect(b':', "expected ':'")?;
        match Label::from_text(&key) {
            Some(label) => {
                raw.mark(label, key_offset)?;
                read_field(reader, raw, label)?;
            }
            None if senml::is_must_understand(&key) => {
                return Err(DecodeError::new(key_offset, Kind::MustUnderstandLabel));
            }
            None => reader.skip_value(1)?,
        }
        if !reader.next_element(b'}')? {
            return Ok(());
        }
    }
}

fn text<'a>(reader: &mut JsonReader<'a>, what: &'static str) -> Result<Cow<'a, str>, DecodeError> {
    if reader.peek() != Some(b'"') {
        return Err(DecodeError::new(reader.position(), Kind::InvalidField(what)));
    }
    reader.string()
}

fn number(reader: &mut JsonReader<'_>, what: &'static str) -> Result<Number, DecodeError> {
    match reader.peek() {
        Some(b'-' | b'0'..=b'9') => reader.number(),
        _ => Err(DecodeError::new(reader.position(), Kind::InvalidField(what))),
    }
}

fn read_field<'a>(reader: &mut JsonReader<'a>, raw: &mut RawRecord<'a>, label: Label) -> Result<(), DecodeError> {
    reader.skip_whitespace();
    let at = reader.position();
    match label {
        Label::BaseVersion => match number(reader, "bver (expected an unsigned integer)")? {
            Number::Unsigned(v) => raw.version = Some(v),
            _ => return Err(DecodeError::new(at, Kind::InvalidField("bver (expected an unsigned integer)"))),
        },
        Label::BaseName => raw.base_name = Some(senml::text_bytes(text(reader, "bn (expected a string)")?)),
        Label::Name => raw.name = Some(senml::text_bytes(text(reader, "n (expected a string)")?)),
        Label::BaseTime => raw.base_time = Some(number(reader, "bt (expected a number)")?.as_f64()),
        Label::Time => raw.time = Some(number(reader, "t (expected a number)")?.as_f64()),
        Label::BaseValue => raw.base_value = Some(number(reader, "bv (expected a number)")?),
        Label::Value => raw.value = Some(WireValue::Number(number(reader, "v (expected a number)")?)),
        Label::StringValue => raw.value = Some(WireValue::Text(text(reader, "vs (expected a string)")?)),
        Label::ObjectLinkValue => raw.value = Some(WireValue::ObjectLink(text(reader, "vlo (expected a string)")?)),
        Label::BooleanValue => match reader.peek() {
            Some(b't' | b'f') => raw.value = Some(WireValue::Boolean(reader.literal()?.unwrap_or(false))),
            _ => return Err(DecodeError::new(at, Kind::InvalidField("vb (expected true or false)"))),
        },
        Label::DataValue => {
            let encoded = text(reader, "vd (expected a base64 string)")?;
            let decoded = base64::decode(encoded.as_bytes())
                // +1: the offset of the character inside the opening quote.
                .map_err(|i| DecodeError::new(at + 1 + i, Kind::InvalidBase64))?;
            raw.value = Some(WireValue::Bytes(Cow::Owned(decoded)));
        }
        Label::BaseUnit | Label::Unit => {
            text(reader, "unit (expected a string)")?;
        }
        Label::BaseSum | Label::Sum | Label::UpdateTime => {
            number(reader, "sum or update time (expected a number)")?;
        }
    }
    Ok(())
}

struct JsonWriter;

impl<B: BufMut> senml::Writer<B> for JsonWriter {
    fn begin_pack(&mut self, buf: &mut B, _records: usize) {
        buf.put_u8(b'[');
    }

    fn record(&mut self, buf: &mut B, index: usize, record: &OutRecord<'_, '_>) -> Result<(), EncodeError> {
        if index > 0 {
            buf.put_u8(b',');
        }
        buf.put_u8(b'{');
        let mut first = true;
        let mut key = |buf: &mut B, name: &str| {
            if !first {
                buf.put_u8(b',');
            }
            first = false;
            json::put_string(buf, name);
            buf.put_u8(b':');
        };
        // Path text is digits and '/': nothing to escape.
        let put_path = |buf: &mut B, text: &[u8]| {
            buf.put_u8(b'"');
            buf.put_slice(text);
            buf.put_u8(b'"');
        };
        if let Some(base_name) = record.base_name {
            key(buf, "bn");
            put_path(buf, base_name);
        }
        if let Some(base_time) = record.base_time {
            key(buf, "bt");
            json::put_time(buf, base_time);
        }
        if let Some(name) = record.name {
            key(buf, "n");
            put_path(buf, name);
        }
        match record.value {
            Value::Integer(v) | Value::Time(v) => {
                key(buf, "v");
                json::put_i64(buf, *v);
            }
            Value::UnsignedInteger(v) => {
                key(buf, "v");
                json::put_u64(buf, *v);
            }
            Value::Float(v) => {
                key(buf, "v");
                json::put_f64(buf, *v);
            }
            Value::Boolean(v) => {
                key(buf, "vb");
                buf.put_slice(if *v { b"true" } else { b"false" });
            }
            Value::String(s) | Value::Corelnk(s) => {
                key(buf, "vs");
                json::put_string(buf, s);
            }
            Value::Opaque(b) => {
                key(buf, "vd");
                buf.put_u8(b'"');
                base64::encode_into(b, Alphabet::UrlSafeNoPad, |c| buf.put_u8(c));
                buf.put_u8(b'"');
            }
            Value::Objlnk(link) => {
                key(buf, "vlo");
                buf.put_u8(b'"');
                json::put_u64(buf, u64::from(link.object_id));
                buf.put_u8(b':');
                json::put_u64(buf, u64::from(link.instance_id));
                buf.put_u8(b'"');
            }
        }
        if let Some(time) = record.time {
            key(buf, "t");
            json::put_time(buf, time);
        }
        buf.put_u8(b'}');
        Ok(())
    }

    fn end_pack(&mut self, buf: &mut B) {
        buf.put_u8(b']');
    }
}

/// Encodes `records` as a SenML-JSON pack answering `path`, in the order given.
///
/// # Errors
/// [`EncodeError`] when a record lies outside `path` or above resource level,
/// has a type the model does not give it, holds a non-finite float (JSON has
/// none), or has no time after timed records.
pub fn encode<B: BufMut>(
    path: &Path,
    records: &[Record<'_>],
    registry: &Registry,
    buf: &mut B,
) -> Result<(), EncodeError> {
    senml::encode(ContentFormat::SenmlJson, &mut JsonWriter, path, records, registry, buf)
}

/// Encodes a name-only pack with absolute names (a Read-Composite request body).
pub fn encode_paths<B: BufMut>(paths: &[Path], buf: &mut B) {
    buf.put_u8(b'[');
    for (i, path) in paths.iter().enumerate() {
        if i > 0 {
            buf.put_u8(b',');
        }
        buf.put_slice(b"{\"n\":");
        json::put_string(buf, senml::PathText::new(path, 0, false).as_str());
        buf.put_u8(b'}');
    }
    buf.put_u8(b']');
}
