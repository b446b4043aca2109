//! What SenML-CBOR and SenML-JSON share (RFC 8428 with the LwM2M profile): the
//! labels, resolving base name + name into paths and base time + time into record
//! times, typing values through the model, and the record layout encoders use.

use alloc::borrow::Cow;
use bytes::BufMut;

use super::cbor_util::{Number, WireValue};
use super::{DecodeError, DecodeErrorKind as Kind, DecodeOptions, EncodeError};
use crate::model::{ContentFormat, Path, PathError, PathParser, Record, Registry, TypeLookup, Value};

/// The SenML labels (RFC 8428 Table 4 plus LwM2M's `vlo`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Label {
    BaseVersion,
    BaseName,
    BaseTime,
    BaseUnit,
    BaseValue,
    BaseSum,
    Name,
    Unit,
    Value,
    StringValue,
    BooleanValue,
    Sum,
    Time,
    UpdateTime,
    DataValue,
    ObjectLinkValue,
}

impl Label {
    /// The label of a CBOR integer key.
    pub(crate) fn from_cbor_key(key: i64) -> Option<Label> {
        Some(match key {
            -1 => Label::BaseVersion,
            -2 => Label::BaseName,
            -3 => Label::BaseTime,
            -4 => Label::BaseUnit,
            -5 => Label::BaseValue,
            -6 => Label::BaseSum,
            0 => Label::Name,
            1 => Label::Unit,
            2 => Label::Value,
            3 => Label::StringValue,
            4 => Label::BooleanValue,
            5 => Label::Sum,
            6 => Label::Time,
            7 => Label::UpdateTime,
            8 => Label::DataValue,
            _ => return None,
        })
    }

    /// The label of a text key (JSON always; CBOR for `vlo` and lenient peers).
    pub(crate) fn from_text(key: &str) -> Option<Label> {
        Some(match key {
            "bver" => Label::BaseVersion,
            "bn" => Label::BaseName,
            "bt" => Label::BaseTime,
            "bu" => Label::BaseUnit,
            "bv" => Label::BaseValue,
            "bs" => Label::BaseSum,
            "n" => Label::Name,
            "u" => Label::Unit,
            "v" => Label::Value,
            "vs" => Label::StringValue,
            "vb" => Label::BooleanValue,
            "s" => Label::Sum,
            "t" => Label::Time,
            "ut" => Label::UpdateTime,
            "vd" => Label::DataValue,
            "vlo" => Label::ObjectLinkValue,
            _ => return None,
        })
    }

    fn bit(self) -> u32 {
        1 << (self as u32)
    }
}

/// What one SenML record said, before base fields are applied.
#[derive(Debug, Default)]
pub(crate) struct RawRecord<'a> {
    pub(crate) version: Option<u64>,
    /// Name text as bytes (already checked as UTF-8).
    pub(crate) base_name: Option<Cow<'a, [u8]>>,
    /// Name text as bytes (already checked as UTF-8).
    pub(crate) name: Option<Cow<'a, [u8]>>,
    pub(crate) base_time: Option<f64>,
    pub(crate) time: Option<f64>,
    pub(crate) base_value: Option<Number>,
    pub(crate) value: Option<WireValue<'a>>,
    seen: u32,
}

impl RawRecord<'_> {
    /// Empties the record for the next one (base fields were already taken
    /// into the context).
    pub(crate) fn clear(&mut self) {
        self.version = None;
        self.base_name = None;
        self.name = None;
        self.base_time = None;
        self.time = None;
        self.base_value = None;
        self.value = None;
        self.seen = 0;
    }

    /// Notes that `label` appeared at `offset`; a label may appear once per record.
    pub(crate) fn mark(&mut self, label: Label, offset: usize) -> Result<(), DecodeError> {
        if self.seen & label.bit() != 0 {
            return Err(DecodeError::new(offset, Kind::DuplicateLabel));
        }
        let values = Label::Value.bit()
            | Label::StringValue.bit()
            | Label::BooleanValue.bit()
            | Label::DataValue.bit()
            | Label::ObjectLinkValue.bit();
        if label.bit() & values != 0 && self.seen & values != 0 {
            return Err(DecodeError::new(offset, Kind::MultipleValues));
        }
        self.seen |= label.bit();
        Ok(())
    }
}

/// A label name that RFC 8428 §4.4 says receivers must understand.
pub(crate) fn is_must_understand(key: &str) -> bool {
    key.ends_with('_')
}

/// RFC 8428's current SenML version; packs of a newer one are refused.
pub(crate) const SENML_VERSION: u64 = 10;

/// The base fields in force while a pack is read.
#[derive(Debug, Default)]
pub(crate) struct Context {
    /// The parser state after the base name, so each record parses only its
    /// name (None before any base name: an empty one).
    base_parsed: Option<Result<PathParser, PathError>>,
    base_time: Option<f64>,
    base_value: Option<Number>,
}

impl Context {
    /// Applies a record's base fields and resolves its name.
    #[inline]
    fn path(&mut self, raw: &mut RawRecord<'_>, offset: usize) -> Result<Path, DecodeError> {
        if let Some(version) = raw.version {
            if version > SENML_VERSION {
                return Err(DecodeError::new(offset, Kind::UnsupportedVersion(version)));
            }
        }
        if let Some(base_name) = raw.base_name.take() {
            let mut parser = PathParser::default();
            self.base_parsed = Some(parser.feed(&base_name).map(|()| parser));
        }
        if let Some(base_time) = raw.base_time {
            self.base_time = Some(base_time);
        }
        if let Some(base_value) = raw.base_value {
            self.base_value = Some(base_value);
        }
        let name = raw.name.as_deref().unwrap_or(&[]);
        let parsed = match self.base_parsed {
            Some(Ok(mut parser)) => parser.feed(name).and_then(|()| parser.finish()),
            Some(Err(ref error)) => Err(error.clone()),
            None => {
                let mut parser = PathParser::default();
                parser.feed(name).and_then(|()| parser.finish())
            }
        };
        parsed.map_err(|e| DecodeError::new(offset, Kind::InvalidPath(e)))
    }

    /// Resolves a value record (Read, Write, Notify, Send, Write-Composite).
    #[inline]
    pub(crate) fn record<'a>(
        &mut self,
        raw: &mut RawRecord<'a>,
        offset: usize,
        request: &Path,
        types: &mut TypeLookup<'_>,
    ) -> Result<Record<'a>, DecodeError> {
        let path = self.path(raw, offset)?;
        if !path.starts_with(request) {
            return Err(DecodeError::new(offset, Kind::PathOutsideRequest { path, request: *request }));
        }
        if !path.is_value_path() {
            return Err(DecodeError::new(offset, Kind::NotAValuePath(path)));
        }
        let time = match (self.base_time, raw.time) {
            (None, None) => None,
            (base, time) => Some(base.unwrap_or(0.0) + time.unwrap_or(0.0)),
        };
        let wire = match (raw.value.take(), self.base_value) {
            (None, _) => return Err(DecodeError::new(offset, Kind::MissingValue)),
            (Some(WireValue::Number(n)), Some(base)) => WireValue::Number(base.add(n)),
            (Some(value), _) => value,
        };
        let value = wire.typed(types.data_type(&path)).map_err(|kind| DecodeError::new(offset, kind))?;
        Ok(Record { path, value, time })
    }

    /// Resolves a name-only record (Read-Composite / Observe-Composite request).
    pub(crate) fn name_only(&mut self, raw: &mut RawRecord<'_>, offset: usize) -> Result<Path, DecodeError> {
        if raw.value.is_some() {
            return Err(DecodeError::new(offset, Kind::InvalidField("value in a name-only record")));
        }
        self.path(raw, offset)
    }
}

/// The per-record step of a SenML decoder's `decode_each`: counts records
/// against the limit, resolves each against the base fields in force and
/// hands it to `each`.
pub(crate) fn resolver<'a, 'r>(
    path: &'r Path,
    registry: &'r Registry,
    options: &'r DecodeOptions,
    mut each: impl FnMut(Record<'a>) + 'r,
) -> impl FnMut(&mut RawRecord<'a>, usize) -> Result<(), DecodeError> + 'r {
    let mut context = Context::default();
    let mut types = TypeLookup::new(registry);
    let mut count = 0usize;
    move |raw, offset| {
        if count >= options.max_records {
            return Err(DecodeError::new(offset, Kind::TooManyRecords { limit: options.max_records }));
        }
        count += 1;
        each(context.record(raw, offset, path, &mut types)?);
        Ok(())
    }
}

/// Decoded JSON text as the bytes a SenML name is parsed from.
pub(crate) fn text_bytes(text: Cow<'_, str>) -> Cow<'_, [u8]> {
    match text {
        Cow::Borrowed(text) => Cow::Borrowed(text.as_bytes()),
        Cow::Owned(text) => Cow::Owned(text.into_bytes()),
    }
}

/// A path as text without allocating: `/65534/65534/65534/65534` is the longest.
pub(crate) struct PathText {
    bytes: [u8; 32],
    len: usize,
}

impl PathText {
    /// The segments of `path` from `skip` on, each preceded by `/`; with
    /// `trailing_slash`, one more `/` at the end.
    #[inline]
    pub(crate) fn new(path: &Path, skip: usize, trailing_slash: bool) -> PathText {
        // At most four segments of at most six bytes and one more `/`: 25
        // bytes, so the index masks below never wrap (and need no checks).
        let mut bytes = [0u8; 32];
        let mut len = 0usize;
        for &id in path.segments().get(skip..).unwrap_or(&[]) {
            bytes[len & 31] = b'/';
            len += 1;
            // Most ids are one or two digits: write those without a loop.
            if id < 10 {
                bytes[len & 31] = b'0' + id as u8;
                len += 1;
            } else if id < 100 {
                bytes[len & 31] = b'0' + (id / 10) as u8;
                bytes[(len + 1) & 31] = b'0' + (id % 10) as u8;
                len += 2;
            } else {
                let count = if id < 1000 {
                    3
                } else if id < 10_000 {
                    4
                } else {
                    5
                };
                let mut n = id;
                for i in (0..count).rev() {
                    bytes[(len + i) & 31] = b'0' + (n % 10) as u8;
                    n /= 10;
                }
                len += count;
            }
        }
        if trailing_slash || path.depth() == skip && skip == 0 {
            bytes[len & 31] = b'/';
            len += 1;
        }
        PathText { bytes, len }
    }

    /// The text.
    pub(crate) fn as_str(&self) -> &str {
        // Only ASCII digits and '/' are ever pushed.
        core::str::from_utf8(self.as_bytes()).unwrap_or("")
    }

    /// The text as bytes (ASCII digits and `/`), without a UTF-8 check.
    pub(crate) fn as_bytes(&self) -> &[u8] {
        &self.bytes[..self.len]
    }

    /// The text without its first `n` bytes.
    pub(crate) fn tail(&self, n: usize) -> &str {
        self.as_str().get(n..).unwrap_or("")
    }
}

/// The fields of one record an encoder writes, in this order.
#[derive(Debug)]
pub(crate) struct OutRecord<'r, 'a> {
    /// Path text: ASCII digits and `/` only, so it needs no escaping.
    pub(crate) base_name: Option<&'r [u8]>,
    pub(crate) base_time: Option<f64>,
    /// Path text, as `base_name`.
    pub(crate) name: Option<&'r [u8]>,
    pub(crate) value: &'r Value<'a>,
    pub(crate) time: Option<f64>,
}

impl OutRecord<'_, '_> {
    pub(crate) fn field_count(&self) -> usize {
        1 + usize::from(self.base_name.is_some())
            + usize::from(self.base_time.is_some())
            + usize::from(self.name.is_some())
            + usize::from(self.time.is_some())
    }
}

/// A SenML serialization (CBOR or JSON).
pub(crate) trait Writer<B: BufMut> {
    fn begin_pack(&mut self, buf: &mut B, records: usize);
    fn record(&mut self, buf: &mut B, index: usize, record: &OutRecord<'_, '_>) -> Result<(), EncodeError>;
    fn end_pack(&mut self, buf: &mut B);
}

/// Lays records out compactly: the request path as base name on the first record
/// and relative names after it (absolute names for `/`), base time on the first
/// timed record and relative times after it where they are exact.
pub(crate) fn encode<B: BufMut, W: Writer<B>>(
    format: ContentFormat,
    writer: &mut W,
    request: &Path,
    records: &[Record<'_>],
    registry: &Registry,
    buf: &mut B,
) -> Result<(), EncodeError> {
    let mut types = TypeLookup::new(registry);
    for record in records {
        super::check_record_in(request, record, &mut types)?;
        if let Some(time) = record.time {
            if !time.is_finite() {
                return Err(EncodeError::NonFinite(record.path));
            }
        }
        if let Value::Float(f) = record.value {
            if !f.is_finite() && format == ContentFormat::SenmlJson {
                return Err(EncodeError::NonFinite(record.path));
            }
        }
    }
    // With a record at the request path itself the base name cannot end in '/'
    // ("/5/0/3" + "" vs "/5/0/" + "3"): use Anjay's "/5/0" + "/3" form then.
    let any_at_request = records.iter().any(|r| r.path == *request);
    let base = (!request.is_root()).then(|| PathText::new(request, 0, !any_at_request));
    writer.begin_pack(buf, records.len());
    let mut base_time: Option<f64> = None;
    for (index, record) in records.iter().enumerate() {
        let full = PathText::new(&record.path, 0, false);
        let name = match &base {
            None => Some(full.as_bytes()),
            Some(base) => {
                let relative = full.as_bytes().get(base.len..).unwrap_or(&[]);
                (!relative.is_empty()).then_some(relative)
            }
        };
        let (record_base_time, time) = match (record.time, base_time) {
            (None, None) => (None, None),
            (None, Some(_)) => return Err(EncodeError::TimelessAfterTimed(record.path)),
            (Some(time), Some(base)) if time == base => (None, None),
            (Some(time), Some(base)) if base + (time - base) == time => (None, Some(time - base)),
            (Some(time), _) => {
                base_time = Some(time);
                (Some(time), None)
            }
        };
        let out = OutRecord {
            base_name: if index == 0 { base.as_ref().map(PathText::as_bytes) } else { None },
            base_time: record_base_time,
            name,
            value: &record.value,
            time,
        };
        writer.record(buf, index, &out)?;
    }
    writer.end_pack(buf);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn path_text() {
        let p = Path::resource_instance(65534, 0, 10, 7);
        assert_eq!(PathText::new(&p, 0, false).as_str(), "/65534/0/10/7");
        assert_eq!(PathText::new(&p, 2, false).as_str(), "/10/7");
        assert_eq!(PathText::new(&Path::instance(3, 0), 0, true).as_str(), "/3/0/");
        assert_eq!(PathText::new(&Path::ROOT, 0, false).as_str(), "/");
        let longest = Path::resource_instance(65534, 65534, 65534, 65534);
        assert_eq!(PathText::new(&longest, 0, false).as_str(), "/65534/65534/65534/65534");
    }
}
