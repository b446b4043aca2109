//! SenML-CBOR (Content-Format 112, RFC 8428 §6 with the LwM2M profile).
//!
//! Input: integer labels and their text names (`"bn"`, `"vlo"`, …), definite and
//! indefinite arrays, maps and strings, half/single/double floats, decimal
//! fractions (tag 4) and epoch times (tag 1). Unknown labels are skipped, labels
//! ending in `_` refused. Output: a definite-length array of definite maps with
//! integer labels (`"vlo"` as text), the request path factored into the first
//! record's base name, integers in their shortest form and floats in the
//! shortest exact width.
//!
//! ```
//! use lwm2m_fota::codec::{senml_cbor, DecodeOptions};
//! use lwm2m_fota::model::{Path, Registry, Value};
//! // A Notify of /5/0/3 from a real client: [{-2: "/5/0/3", -3: 1795840919.7351913, 2: 1}]
//! let payload = [0x81, 0xa3, 0x21, 0x66, 0x2f, 0x35, 0x2f, 0x30, 0x2f, 0x33, 0x22, 0xfb, 0x41, 0xda,
//!                0xc2, 0x96, 0xe5, 0xef, 0x0d, 0x60, 0x02, 0x01];
//! let mut records = Vec::new();
//! senml_cbor::decode_into(&Path::resource(5, 0, 3), &payload, &Registry::default(),
//!                         &DecodeOptions::default(), &mut records)?;
//! assert_eq!(records[0].value, Value::Integer(1));
//! assert!(records[0].time.is_some());
//! # Ok::<(), lwm2m_fota::codec::DecodeError>(())
//! ```

use alloc::vec::Vec;
use bytes::BufMut;

use super::cbor_util::{self, MAJOR_ARRAY, MAJOR_MAP, Reader, Type, WireValue};
use super::senml::{self, Context, Label, OutRecord, RawRecord};
use super::{DecodeError, DecodeErrorKind as Kind, DecodeOptions, EncodeError};
use crate::model::{ContentFormat, Path, Record, Registry, Value};

/// Decodes a SenML-CBOR pack answering `path` (`/` for Send and composite
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
    let mut reader = Reader::new(bytes);
    // One record buffer for the whole pack: records are read into it in place.
    let mut raw = RawRecord::default();
    if !matches!(reader.datatype()?, Type::Array | Type::ArrayIndef) {
        return Err(reader.error(Kind::InvalidField("SenML pack (expected an array)")));
    }
    match reader.array()? {
        Some(count) => {
            for _ in 0..count {
                let offset = reader.position();
                read_record(&mut reader, options, &mut raw)?;
                each(&mut raw, offset)?;
            }
        }
        None => {
            while !reader.take_break()? {
                let offset = reader.position();
                read_record(&mut reader, options, &mut raw)?;
                each(&mut raw, offset)?;
            }
        }
    }
    if !reader.at_end() {
        return Err(reader.error(Kind::TrailingBytes));
    }
    Ok(())
}

enum Key {
    Label(Label),
    Unknown,
    MustUnderstand,
}

fn read_record<'a>(
    reader: &mut Reader<'a>,
    options: &DecodeOptions,
    raw: &mut RawRecord<'a>,
) -> Result<(), DecodeError> {
    if !matches!(reader.peek(), Some(0xa0..=0xbb | 0xbf)) && !matches!(reader.datatype()?, Type::Map | Type::MapIndef) {
        return Err(reader.error(Kind::InvalidField("SenML record (expected a map)")));
    }
    raw.clear();
    match reader.map()? {
        Some(count) => {
            for _ in 0..count {
                read_field(reader, raw, options)?;
            }
        }
        None => {
            while !reader.take_break()? {
                read_field(reader, raw, options)?;
            }
        }
    }
    Ok(())
}

fn read_key(reader: &mut Reader<'_>) -> Result<Key, DecodeError> {
    if let Some(b) = reader.peek() {
        if b < 0x18 || (0x20..0x38).contains(&b) {
            let key = if b < 0x18 { i64::from(b) } else { -1 - i64::from(b - 0x20) };
            reader.advance(1);
            return Ok(Label::from_cbor_key(key).map_or(Key::Unknown, Key::Label));
        }
    }
    Ok(match reader.datatype()? {
        Type::Unsigned | Type::Negative => {
            let key = reader.number()?;
            match key {
                cbor_util::Number::Unsigned(k) => i64::try_from(k).ok().and_then(Label::from_cbor_key),
                cbor_util::Number::Negative(k) => i64::try_from(k).ok().and_then(|k| Label::from_cbor_key(-1 - k)),
                cbor_util::Number::Float(_) => None,
            }
            .map_or(Key::Unknown, Key::Label)
        }
        Type::String | Type::StringIndef => {
            let key = reader.text()?;
            match Label::from_text(&key) {
                Some(label) => Key::Label(label),
                None if senml::is_must_understand(&key) => Key::MustUnderstand,
                None => Key::Unknown,
            }
        }
        _ => return Err(reader.error(Kind::InvalidField("SenML label (expected an integer or text)"))),
    })
}

/// The usual fields of real packs in a few instructions: a name or base name
/// of fewer than 24 ASCII bytes, or a value that is a small integer. Anything
/// else (and every error) goes through [`read_field`]'s general path, so the
/// outcome is the same either way. Returns false when it did not apply.
#[inline]
fn read_common_field<'a>(reader: &mut Reader<'a>, raw: &mut RawRecord<'a>) -> Result<bool, DecodeError> {
    let at = reader.position();
    let (Some(&key), Some(&initial)) = (reader.bytes.get(at), reader.bytes.get(at + 1)) else {
        return Ok(false);
    };
    match (key, initial) {
        // n (0) or bn (-2) with a short definite text.
        (0x00 | 0x21, 0x60..=0x77) => {
            let len = usize::from(initial - 0x60);
            let Some(text) = reader.bytes.get(at + 2..at + 2 + len) else { return Ok(false) };
            if !text.is_ascii() {
                return Ok(false);
            }
            let label = if key == 0x00 { Label::Name } else { Label::BaseName };
            raw.mark(label, at)?;
            reader.advance(2 + len);
            let text = Some(alloc::borrow::Cow::Borrowed(text));
            if key == 0x00 {
                raw.name = text
            } else {
                raw.base_name = text
            }
            Ok(true)
        }
        // v (2) with an integer in the initial byte.
        (0x02, 0x00..=0x17 | 0x20..=0x37) => {
            raw.mark(Label::Value, at)?;
            reader.advance(2);
            let number = if initial < 0x20 {
                cbor_util::Number::Unsigned(u64::from(initial))
            } else {
                cbor_util::Number::Negative(u64::from(initial - 0x20))
            };
            raw.value = Some(WireValue::Number(number));
            Ok(true)
        }
        _ => Ok(false),
    }
}

#[inline]
fn read_field<'a>(
    reader: &mut Reader<'a>,
    raw: &mut RawRecord<'a>,
    options: &DecodeOptions,
) -> Result<(), DecodeError> {
    if read_common_field(reader, raw)? {
        return Ok(());
    }
    read_any_field(reader, raw, options)
}

/// One field, any label and any encoding (kept out of line, so that the
/// common fields stay cheap).
#[inline(never)]
fn read_any_field<'a>(
    reader: &mut Reader<'a>,
    raw: &mut RawRecord<'a>,
    options: &DecodeOptions,
) -> Result<(), DecodeError> {
    let key_offset = reader.position();
    let label = match read_key(reader)? {
        Key::Label(label) => label,
        Key::Unknown => return reader.skip(0, options.max_depth),
        Key::MustUnderstand => return Err(DecodeError::new(key_offset, Kind::MustUnderstandLabel)),
    };
    raw.mark(label, key_offset)?;
    let at = reader.position();
    let expect = |reader: &Reader<'a>, what: &'static str, ok: bool| {
        if ok { Ok(()) } else { Err(DecodeError::new(reader.position(), Kind::InvalidField(what))) }
    };
    let is_text = |t: Type| matches!(t, Type::String | Type::StringIndef);
    match label {
        Label::BaseVersion => {
            let t = reader.datatype()?;
            expect(reader, "bver (expected an unsigned integer)", matches!(t, Type::Unsigned))?;
            raw.version = Some(reader.u64()?);
        }
        Label::BaseName => {
            expect(reader, "bn (expected text)", is_text(reader.datatype()?))?;
            raw.base_name = Some(reader.text_bytes()?);
        }
        Label::Name => {
            expect(reader, "n (expected text)", is_text(reader.datatype()?))?;
            raw.name = Some(reader.text_bytes()?);
        }
        Label::BaseTime => raw.base_time = Some(finite(reader.number()?.as_f64(), at, "bt")?),
        Label::Time => raw.time = Some(finite(reader.number()?.as_f64(), at, "t")?),
        Label::BaseValue => raw.base_value = Some(reader.number()?),
        Label::Value => raw.value = Some(WireValue::Number(reader.number()?)),
        Label::StringValue => {
            expect(reader, "vs (expected text)", is_text(reader.datatype()?))?;
            raw.value = Some(WireValue::Text(reader.text()?));
        }
        Label::ObjectLinkValue => {
            expect(reader, "vlo (expected text)", is_text(reader.datatype()?))?;
            raw.value = Some(WireValue::ObjectLink(reader.text()?));
        }
        Label::BooleanValue => {
            expect(reader, "vb (expected a boolean)", reader.datatype()? == Type::Bool)?;
            let value = reader.bool()?;
            raw.value = Some(WireValue::Boolean(value));
        }
        Label::DataValue => {
            expect(
                reader,
                "vd (expected a byte string)",
                matches!(reader.datatype()?, Type::Bytes | Type::BytesIndef),
            )?;
            raw.value = Some(WireValue::Bytes(reader.bytes()?));
        }
        Label::BaseUnit | Label::Unit => {
            expect(reader, "unit (expected text)", is_text(reader.datatype()?))?;
            reader.text()?;
        }
        Label::BaseSum | Label::Sum | Label::UpdateTime => {
            reader.number()?;
        }
    }
    Ok(())
}

fn finite(value: f64, offset: usize, what: &'static str) -> Result<f64, DecodeError> {
    if value.is_finite() { Ok(value) } else { Err(DecodeError::new(offset, Kind::InvalidField(what))) }
}

struct CborWriter;

impl<B: BufMut> senml::Writer<B> for CborWriter {
    fn begin_pack(&mut self, buf: &mut B, records: usize) {
        cbor_util::put_head(buf, MAJOR_ARRAY, records as u64);
    }

    fn record(&mut self, buf: &mut B, _index: usize, record: &OutRecord<'_, '_>) -> Result<(), EncodeError> {
        cbor_util::put_head(buf, MAJOR_MAP, record.field_count() as u64);
        if let Some(base_name) = record.base_name {
            buf.put_u8(0x21); // -2
            cbor_util::put_head(buf, cbor_util::MAJOR_TEXT, base_name.len() as u64);
            buf.put_slice(base_name);
        }
        if let Some(base_time) = record.base_time {
            buf.put_u8(0x22); // -3
            put_number(buf, base_time);
        }
        if let Some(name) = record.name {
            buf.put_u8(0x00);
            cbor_util::put_head(buf, cbor_util::MAJOR_TEXT, name.len() as u64);
            buf.put_slice(name);
        }
        put_value(buf, record.value);
        if let Some(time) = record.time {
            buf.put_u8(0x06);
            put_number(buf, time);
        }
        Ok(())
    }

    fn end_pack(&mut self, _buf: &mut B) {}
}

/// A time: an integer when it is one, else the shortest exact float.
fn put_number<B: BufMut>(buf: &mut B, v: f64) {
    if cbor_util::trunc(v) == v && v.abs() < 9.0e15 {
        cbor_util::put_i64(buf, v as i64);
    } else {
        cbor_util::put_float(buf, v);
    }
}

fn put_value<B: BufMut>(buf: &mut B, value: &Value<'_>) {
    match value {
        Value::Integer(v) | Value::Time(v) => {
            buf.put_u8(0x02);
            cbor_util::put_i64(buf, *v);
        }
        Value::UnsignedInteger(v) => {
            buf.put_u8(0x02);
            cbor_util::put_head(buf, cbor_util::MAJOR_UNSIGNED, *v);
        }
        Value::Float(v) => {
            buf.put_u8(0x02);
            cbor_util::put_float(buf, *v);
        }
        Value::Boolean(v) => {
            buf.put_u8(0x04);
            cbor_util::put_bool(buf, *v);
        }
        Value::String(s) | Value::Corelnk(s) => {
            buf.put_u8(0x03);
            cbor_util::put_text(buf, s);
        }
        Value::Opaque(b) => {
            buf.put_u8(0x08);
            cbor_util::put_bytes(buf, b);
        }
        Value::Objlnk(link) => {
            cbor_util::put_text(buf, "vlo");
            let mut text = LinkText::default();
            use core::fmt::Write;
            let _ = write!(text, "{link}");
            cbor_util::put_text(buf, text.as_str());
        }
    }
}

/// "65535:65535" at most.
#[derive(Default)]
pub(crate) struct LinkText {
    bytes: [u8; 11],
    len: usize,
}

impl LinkText {
    pub(crate) fn as_str(&self) -> &str {
        core::str::from_utf8(&self.bytes[..self.len]).unwrap_or("")
    }
}

impl core::fmt::Write for LinkText {
    fn write_str(&mut self, s: &str) -> core::fmt::Result {
        let end = self.len + s.len();
        if end > self.bytes.len() {
            return Err(core::fmt::Error);
        }
        self.bytes[self.len..end].copy_from_slice(s.as_bytes());
        self.len = end;
        Ok(())
    }
}

/// Encodes `records` as a SenML-CBOR pack answering `path`, in the order given.
///
/// # Errors
/// [`EncodeError`] when a record lies outside `path` or above resource level,
/// has a type the model does not give it, or has no time after timed records.
pub fn encode<B: BufMut>(
    path: &Path,
    records: &[Record<'_>],
    registry: &Registry,
    buf: &mut B,
) -> Result<(), EncodeError> {
    senml::encode(ContentFormat::SenmlCbor, &mut CborWriter, path, records, registry, buf)
}

/// Encodes a name-only pack with absolute names (a Read-Composite request body).
pub fn encode_paths<B: BufMut>(paths: &[Path], buf: &mut B) {
    cbor_util::put_head(buf, MAJOR_ARRAY, paths.len() as u64);
    for path in paths {
        buf.put_u8(0xA1);
        buf.put_u8(0x00);
        cbor_util::put_text(buf, senml::PathText::new(path, 0, false).as_str());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Everything the record holds, the labels seen included.
    fn fields(raw: &RawRecord<'_>) -> String {
        format!("{raw:?}")
    }

    /// Reads one field from `bytes` into a record that already holds the field
    /// `before` (to see duplicate-label and multiple-value errors), with the
    /// fast path allowed or not; returns the record and the reader's position,
    /// or the error.
    fn read(bytes: &[u8], before: Option<Label>, fast: bool) -> Result<(String, usize), DecodeError> {
        let mut reader = Reader::new(bytes);
        let mut raw = RawRecord::default();
        if let Some(label) = before {
            raw.mark(label, 0)?;
        }
        let options = DecodeOptions::default();
        if fast {
            read_field(&mut reader, &mut raw, &options)?;
        } else {
            read_any_field(&mut reader, &mut raw, &options)?;
        }
        Ok((fields(&raw), reader.position()))
    }

    proptest! {
        #[test]
        fn the_fast_path_reads_what_the_general_path_reads(
            key in prop::sample::select(vec![0x00u8, 0x21, 0x02, 0x03, 0x06]),
            value in prop::collection::vec(any::<u8>(), 0..4),
            text in "[/0-9a-z\\u{e9}]{0,25}",
            as_text in any::<bool>(),
            before in prop::sample::select(vec![
                None, Some(Label::Name), Some(Label::BaseName), Some(Label::Value),
                Some(Label::StringValue), Some(Label::Time),
            ]),
        ) {
            let mut bytes = vec![key];
            if as_text {
                let bytes_of_text = &text.as_bytes()[..text.len().min(23)];
                bytes.push(0x60 + bytes_of_text.len() as u8);
                bytes.extend_from_slice(bytes_of_text);
            } else {
                bytes.extend_from_slice(&value);
            }
            prop_assert_eq!(read(&bytes, before, true), read(&bytes, before, false), "{:02x?}", bytes);
        }
    }
}
