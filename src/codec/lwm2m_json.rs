//! LwM2M JSON (Content-Format 11543; 1543 accepted on input), the LwM2M 1.0 JSON
//! dialect that predates SenML: `{"bn": "/3/0/", "bt": 0, "e": [{"n": "0", "sv":
//! "…"}, {"n": "6/0", "v": 1}, …]}` with `v` numbers, `sv` strings (opaque as
//! standard base64), `bv` booleans, `ov` object links and `t` times.
//!
//! Legacy only: LwM2M 1.1 replaced it with SenML-JSON. Early drafts quoted numbers
//! (`"v": "1"`); those are accepted on input.
//!
//! ```
//! use lwm2m_fota::codec::{lwm2m_json, DecodeOptions};
//! use lwm2m_fota::model::{Path, Registry, Value};
//! let payload = br#"{"bn":"/5/0/","e":[{"n":"3","v":1},{"n":"5","v":0}]}"#;
//! let mut records = Vec::new();
//! lwm2m_json::decode_into(&Path::instance(5, 0), payload, &Registry::default(),
//!                         &DecodeOptions::default(), &mut records)?;
//! assert_eq!(records[0].value, Value::Integer(1));
//! # Ok::<(), lwm2m_fota::codec::DecodeError>(())
//! ```

use alloc::borrow::Cow;
use alloc::vec::Vec;
use bytes::BufMut;

use super::base64::{self, Alphabet};
use super::cbor_util::{Number, WireValue};
use super::json::{self, JsonReader};
use super::senml::PathText;
use super::{DecodeError, DecodeErrorKind as Kind, DecodeOptions, EncodeError};
use crate::model::{ContentFormat, DataType, Path, Record, Registry, TypeLookup, Value};

#[derive(Default)]
struct Entry<'a> {
    offset: usize,
    name: Option<Cow<'a, str>>,
    value: Option<WireValue<'a>>,
    /// `sv` keeps its offset for base64 errors.
    string_offset: usize,
    time: Option<f64>,
}

/// Decodes an LwM2M JSON payload answering `path`, appending its records to `out`.
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
    let mut reader = JsonReader::new(bytes, options.max_depth);
    let mut base_name: Cow<'a, str> = Cow::Borrowed("");
    let mut base_time: Option<f64> = None;
    let mut entries: Vec<Entry<'a>> = Vec::new();
    reader.expect(b'{', "expected an LwM2M JSON object")?;
    if !reader.empty_container(b'}') {
        loop {
            reader.skip_whitespace();
            let key = reader.string()?;
            reader.expect(b':', "expected ':'")?;
            match &*key {
                "bn" => base_name = string(&mut reader, "bn (expected a string)")?,
                "bt" => base_time = Some(number(&mut reader, "bt (expected a number)")?.as_f64()),
                "e" => read_entries(&mut reader, options, &mut entries)?,
                _ => reader.skip_value(1)?,
            }
            if !reader.next_element(b'}')? {
                break;
            }
        }
    }
    if !reader.at_end() {
        return Err(DecodeError::new(reader.position(), Kind::TrailingBytes));
    }
    let start_len = out.len();
    for entry in entries {
        let offset = entry.offset;
        let name = entry.name.as_deref().unwrap_or("");
        let record_path =
            Path::parse_concat(&base_name, name).map_err(|e| DecodeError::new(offset, Kind::InvalidPath(e)))?;
        if !record_path.starts_with(path) {
            return Err(DecodeError::new(offset, Kind::PathOutsideRequest { path: record_path, request: *path }));
        }
        if !record_path.is_value_path() {
            return Err(DecodeError::new(offset, Kind::NotAValuePath(record_path)));
        }
        let data_type = registry.data_type(&record_path);
        let wire = entry.value.ok_or(DecodeError::new(offset, Kind::MissingValue))?;
        let wire = match (data_type, wire) {
            (Some(DataType::Opaque), WireValue::Text(text)) => WireValue::Bytes(Cow::Owned(
                base64::decode(text.as_bytes())
                    .map_err(|i| DecodeError::new(entry.string_offset + 1 + i, Kind::InvalidBase64))?,
            )),
            (_, wire) => wire,
        };
        let value = wire.typed(data_type).map_err(|kind| DecodeError::new(offset, kind))?;
        let time = match (base_time, entry.time) {
            (None, None) => None,
            (base, time) => Some(base.unwrap_or(0.0) + time.unwrap_or(0.0)),
        };
        if out.len() - start_len >= options.max_records {
            return Err(DecodeError::new(offset, Kind::TooManyRecords { limit: options.max_records }));
        }
        out.push(Record { path: record_path, value, time });
    }
    Ok(())
}

fn read_entries<'a>(
    reader: &mut JsonReader<'a>,
    options: &DecodeOptions,
    entries: &mut Vec<Entry<'a>>,
) -> Result<(), DecodeError> {
    reader.expect(b'[', "e (expected an array)")?;
    if reader.empty_container(b']') {
        return Ok(());
    }
    loop {
        reader.skip_whitespace();
        let offset = reader.position();
        if entries.len() >= options.max_records {
            return Err(DecodeError::new(offset, Kind::TooManyRecords { limit: options.max_records }));
        }
        let mut entry = Entry { offset, ..Entry::default() };
        reader.expect(b'{', "expected an entry (an object)")?;
        if !reader.empty_container(b'}') {
            loop {
                reader.skip_whitespace();
                let key_offset = reader.position();
                let key = reader.string()?;
                reader.expect(b':', "expected ':'")?;
                reader.skip_whitespace();
                let at = reader.position();
                let is_value = matches!(&*key, "v" | "sv" | "bv" | "ov");
                if is_value && entry.value.is_some() {
                    return Err(DecodeError::new(key_offset, Kind::MultipleValues));
                }
                match &*key {
                    "n" => entry.name = Some(string(reader, "n (expected a string)")?),
                    "t" => entry.time = Some(number(reader, "t (expected a number)")?.as_f64()),
                    "v" => entry.value = Some(WireValue::Number(number(reader, "v (expected a number)")?)),
                    "sv" => {
                        entry.string_offset = at;
                        entry.value = Some(WireValue::Text(string(reader, "sv (expected a string)")?));
                    }
                    "ov" => entry.value = Some(WireValue::ObjectLink(string(reader, "ov (expected a string)")?)),
                    "bv" => match reader.peek() {
                        Some(b't' | b'f') => entry.value = Some(WireValue::Boolean(reader.literal()?.unwrap_or(false))),
                        _ => return Err(DecodeError::new(at, Kind::InvalidField("bv (expected true or false)"))),
                    },
                    _ => reader.skip_value(2)?,
                }
                if !reader.next_element(b'}')? {
                    break;
                }
            }
        }
        entries.push(entry);
        if !reader.next_element(b']')? {
            return Ok(());
        }
    }
}

fn string<'a>(reader: &mut JsonReader<'a>, what: &'static str) -> Result<Cow<'a, str>, DecodeError> {
    if reader.peek() != Some(b'"') {
        return Err(DecodeError::new(reader.position(), Kind::InvalidField(what)));
    }
    reader.string()
}

/// A number, also when quoted as early drafts did (`"v": "1"`).
fn number(reader: &mut JsonReader<'_>, what: &'static str) -> Result<Number, DecodeError> {
    let at = reader.position();
    match reader.peek() {
        Some(b'-' | b'0'..=b'9') => reader.number(),
        Some(b'"') => {
            let text = reader.string()?;
            let mut inner = JsonReader::new(text.as_bytes(), 1);
            let n = inner.number().map_err(|_| DecodeError::new(at, Kind::InvalidField(what)))?;
            if !inner.at_end() {
                return Err(DecodeError::new(at, Kind::InvalidField(what)));
            }
            Ok(n)
        }
        _ => Err(DecodeError::new(at, Kind::InvalidField(what))),
    }
}

/// Encodes `records` as LwM2M JSON answering `path`. Times are written as
/// absolute `t` values, without a base time.
///
/// # Errors
/// [`EncodeError`] when a record lies outside `path`, has a type the model does
/// not give it, or holds a non-finite number; `/` is unsupported (LwM2M JSON has
/// no composite form).
pub fn encode<B: BufMut>(
    path: &Path,
    records: &[Record<'_>],
    registry: &Registry,
    buf: &mut B,
) -> Result<(), EncodeError> {
    if path.is_root() {
        return Err(EncodeError::UnsupportedPath { format: ContentFormat::Lwm2mJson, path: *path });
    }
    let mut types = TypeLookup::new(registry);
    for record in records {
        super::check_record_in(path, record, &mut types)?;
        let non_finite =
            matches!(record.value, Value::Float(f) if !f.is_finite()) || record.time.is_some_and(|t| !t.is_finite());
        if non_finite {
            return Err(EncodeError::NonFinite(record.path));
        }
    }
    let any_at_request = records.iter().any(|r| r.path == *path);
    let base = PathText::new(path, 0, !any_at_request);
    buf.put_slice(b"{\"bn\":");
    json::put_string(buf, base.as_str());
    buf.put_slice(b",\"e\":[");
    for (i, record) in records.iter().enumerate() {
        if i > 0 {
            buf.put_u8(b',');
        }
        buf.put_u8(b'{');
        let full = PathText::new(&record.path, 0, false);
        let name = full.tail(base.as_str().len());
        if !name.is_empty() {
            buf.put_slice(b"\"n\":");
            json::put_string(buf, name);
            buf.put_u8(b',');
        }
        match &record.value {
            Value::Integer(v) | Value::Time(v) => {
                buf.put_slice(b"\"v\":");
                json::put_i64(buf, *v);
            }
            Value::UnsignedInteger(v) => {
                buf.put_slice(b"\"v\":");
                json::put_u64(buf, *v);
            }
            Value::Float(v) => {
                buf.put_slice(b"\"v\":");
                json::put_f64(buf, *v);
            }
            Value::Boolean(v) => buf.put_slice(if *v { b"\"bv\":true" } else { b"\"bv\":false" }),
            Value::String(s) | Value::Corelnk(s) => {
                buf.put_slice(b"\"sv\":");
                json::put_string(buf, s);
            }
            Value::Opaque(b) => {
                buf.put_slice(b"\"sv\":\"");
                base64::encode_into(b, Alphabet::Standard, |c| buf.put_u8(c));
                buf.put_u8(b'"');
            }
            Value::Objlnk(link) => {
                buf.put_slice(b"\"ov\":\"");
                json::put_u64(buf, u64::from(link.object_id));
                buf.put_u8(b':');
                json::put_u64(buf, u64::from(link.instance_id));
                buf.put_u8(b'"');
            }
        }
        if let Some(time) = record.time {
            buf.put_slice(b",\"t\":");
            json::put_time(buf, time);
        }
        buf.put_u8(b'}');
    }
    buf.put_slice(b"]}");
    Ok(())
}
