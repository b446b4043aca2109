//! OMA TLV (Content-Format 11542; 1542 accepted on input), LwM2M TS Core §7.4.3.
//!
//! Decoding is strict: integers and times must be 1, 2, 4 or 8 bytes (as the TS
//! says; Anjay agrees, Leshan accepts 1..8), floats 4 or 8, booleans one byte 0 or
//! 1, object links 4 bytes; containers must end exactly on a child boundary;
//! siblings may not repeat an id. Non-minimal length and id forms are accepted.
//! Encoding always uses the minimal form: the shortest length field, 8-bit ids
//! below 256, the narrowest integer width that keeps the sign, binary32 for floats
//! it represents exactly.
//!
//! ```
//! use lwm2m_fota::codec::tlv;
//! use lwm2m_fota::model::{Path, Record, Registry, Value};
//! let records = [Record::new(Path::resource(3, 0, 9), Value::Integer(200))];
//! let mut payload = Vec::new();
//! tlv::encode(&Path::instance(3, 0), &records, &Registry::default(), &mut payload).unwrap();
//! assert_eq!(payload, [0xC2, 0x09, 0x00, 0xC8]); // 200 needs two bytes as a signed integer
//! ```

use alloc::vec::Vec;
use bytes::BufMut;

use super::{DecodeError, DecodeErrorKind as Kind, DecodeOptions, EncodeError, TlvKind};
use crate::model::{ContentFormat, DataType, ObjectLink, Path, Record, Registry, Value};

/// Longest value a TLV length field can state.
pub const MAX_VALUE_LENGTH: usize = (1 << 24) - 1;

#[derive(Debug, Clone, Copy)]
struct Header {
    kind: TlvKind,
    id: u16,
    /// Offset of the type byte.
    start: usize,
    /// Value range.
    value_start: usize,
    value_end: usize,
}

/// Reads the header at `pos` of a TLV that must end by `end` (the end of the
/// payload or of the enclosing container).
fn read_header(bytes: &[u8], pos: usize, end: usize) -> Result<Header, DecodeError> {
    // A child running past its container's end is a container-length error; past
    // the payload's end, a truncation.
    let overrun = |at: usize| {
        if end < bytes.len() {
            DecodeError::new(pos, Kind::ContainerLength)
        } else {
            DecodeError::new(at, Kind::Truncated)
        }
    };
    let type_byte = match bytes.get(pos) {
        Some(&b) if pos < end => b,
        _ => return Err(overrun(pos)),
    };
    let kind = match type_byte >> 6 {
        0b00 => TlvKind::ObjectInstance,
        0b01 => TlvKind::ResourceInstance,
        0b10 => TlvKind::MultipleResource,
        _ => TlvKind::Resource,
    };
    let id_len = if type_byte & 0x20 != 0 { 2 } else { 1 };
    let length_len = usize::from((type_byte >> 3) & 0x03);
    let header_end = pos + 1 + id_len + length_len;
    if header_end > end {
        return Err(overrun(end));
    }
    let id = if id_len == 2 { u16::from_be_bytes([bytes[pos + 1], bytes[pos + 2]]) } else { u16::from(bytes[pos + 1]) };
    let length = if length_len == 0 {
        usize::from(type_byte & 0x07)
    } else {
        bytes[pos + 1 + id_len..header_end].iter().fold(0usize, |acc, &b| (acc << 8) | usize::from(b))
    };
    if length > end - header_end {
        return Err(overrun(end));
    }
    Ok(Header { kind, id, start: pos, value_start: header_end, value_end: header_end + length })
}

struct Decoder<'a, 'r, F> {
    bytes: &'a [u8],
    registry: &'r Registry,
    max_records: usize,
    each: F,
    count: usize,
}

/// Decodes a TLV payload answering `path`, appending its records to `out`.
///
/// Accepted shapes: for `/O`, object-instance TLVs; for `/O/I`, resource and
/// multiple-resource TLVs (or one object-instance TLV with id I wrapping them);
/// for `/O/I/R`, one resource TLV or one multiple-resource TLV with id R (or bare
/// resource-instance TLVs); for `/O/I/R/RI`, one resource-instance TLV with id RI.
///
/// # Errors
/// A [`DecodeError`] with the offset of the first problem; `out` may then hold
/// part of the records (the [`super::decode_into`] wrapper removes them).
pub fn decode_into<'a>(
    path: &Path,
    bytes: &'a [u8],
    registry: &Registry,
    options: &DecodeOptions,
    out: &mut Vec<Record<'a>>,
) -> Result<(), DecodeError> {
    decode_each(path, bytes, registry, options, |record| out.push(record))
}

/// Decodes a TLV payload answering `path` as [`decode_into`] does, handing
/// each record to `each` in payload order instead of collecting them.
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
    let mut decoder = Decoder { bytes, registry, max_records: options.max_records, each, count: 0 };
    let end = bytes.len();
    match *path.segments() {
        [] => Err(DecodeError::new(0, Kind::UnsupportedPath { format: ContentFormat::Tlv, path: *path })),
        [object] => decoder.object(object, 0, end),
        [object, instance] => {
            if end > 0 {
                let first = read_header(bytes, 0, end)?;
                if first.kind == TlvKind::ObjectInstance {
                    // Leshan-compatible: one wrapping object-instance TLV with id I.
                    if first.id != instance {
                        return Err(DecodeError::new(0, Kind::IdMismatch { expected: instance, found: first.id }));
                    }
                    if first.value_end != end {
                        return Err(DecodeError::new(first.value_end, Kind::TrailingBytes));
                    }
                    return decoder.instance(object, instance, first.value_start, first.value_end);
                }
            }
            decoder.instance(object, instance, 0, end)
        }
        [object, instance, resource] => {
            let base = Path::resource(object, instance, resource);
            let first = read_header(bytes, 0, end)?;
            match first.kind {
                TlvKind::Resource | TlvKind::MultipleResource => {
                    if first.id != resource {
                        return Err(DecodeError::new(0, Kind::IdMismatch { expected: resource, found: first.id }));
                    }
                    if first.value_end != end {
                        return Err(DecodeError::new(first.value_end, Kind::TrailingBytes));
                    }
                    if first.kind == TlvKind::Resource {
                        decoder.leaf(base, registry.data_type(&base), &first)
                    } else {
                        decoder.multiple(base, registry.data_type(&base), first.value_start, first.value_end)
                    }
                }
                // Leshan-compatible: the instances of R without their wrapper.
                TlvKind::ResourceInstance => decoder.multiple(base, registry.data_type(&base), 0, end),
                found => Err(DecodeError::new(0, Kind::UnexpectedTlv { found })),
            }
        }
        [object, instance, resource, resource_instance, ..] => {
            let first = read_header(bytes, 0, end)?;
            if first.kind != TlvKind::ResourceInstance {
                return Err(DecodeError::new(0, Kind::UnexpectedTlv { found: first.kind }));
            }
            if first.id != resource_instance {
                return Err(DecodeError::new(0, Kind::IdMismatch { expected: resource_instance, found: first.id }));
            }
            if first.value_end != end {
                return Err(DecodeError::new(first.value_end, Kind::TrailingBytes));
            }
            {
                let path = Path::resource_instance(object, instance, resource, resource_instance);
                decoder.leaf(path, registry.data_type(&path), &first)
            }
        }
    }
}

/// Tracks sibling ids; ids in ascending order (what every encoder emits) cost one
/// comparison, and only disordered containers are re-walked and sorted.
#[derive(Default)]
struct Siblings {
    last: Option<u16>,
    disordered: bool,
}

impl Siblings {
    fn see(&mut self, id: u16) {
        match self.last {
            Some(last) if id <= last => self.disordered = true,
            _ => self.last = Some(id),
        }
    }

    fn check(&self, bytes: &[u8], start: usize, end: usize) -> Result<(), DecodeError> {
        if !self.disordered {
            return Ok(());
        }
        let mut seen: Vec<(u16, usize)> = Vec::new();
        let mut pos = start;
        while pos < end {
            let header = read_header(bytes, pos, end)?;
            seen.push((header.id, header.start));
            pos = header.value_end;
        }
        seen.sort_unstable();
        match seen.windows(2).find(|w| w[0].0 == w[1].0) {
            Some(w) => Err(DecodeError::new(w[1].1, Kind::DuplicateId { id: w[1].0 })),
            None => Ok(()),
        }
    }
}

impl<'a, F: FnMut(Record<'a>)> Decoder<'a, '_, F> {
    fn object(&mut self, object: u16, start: usize, end: usize) -> Result<(), DecodeError> {
        let mut siblings = Siblings::default();
        let mut pos = start;
        while pos < end {
            let header = read_header(self.bytes, pos, end)?;
            if header.kind != TlvKind::ObjectInstance {
                return Err(DecodeError::new(pos, Kind::UnexpectedTlv { found: header.kind }));
            }
            siblings.see(header.id);
            self.instance(object, header.id, header.value_start, header.value_end)?;
            pos = header.value_end;
        }
        siblings.check(self.bytes, start, end)
    }

    fn instance(&mut self, object: u16, instance: u16, start: usize, end: usize) -> Result<(), DecodeError> {
        let object_def = self.registry.object(object);
        let mut siblings = Siblings::default();
        let mut pos = start;
        while pos < end {
            let header = read_header(self.bytes, pos, end)?;
            let path = Path::resource(object, instance, header.id);
            let data_type = object_def.and_then(|o| o.resource(header.id)).map(|r| r.data_type);
            match header.kind {
                TlvKind::Resource => self.leaf(path, data_type, &header)?,
                TlvKind::MultipleResource => self.multiple(path, data_type, header.value_start, header.value_end)?,
                found => return Err(DecodeError::new(pos, Kind::UnexpectedTlv { found })),
            }
            siblings.see(header.id);
            pos = header.value_end;
        }
        siblings.check(self.bytes, start, end)
    }

    fn multiple(
        &mut self,
        resource: Path,
        data_type: Option<DataType>,
        start: usize,
        end: usize,
    ) -> Result<(), DecodeError> {
        let mut siblings = Siblings::default();
        let mut pos = start;
        while pos < end {
            let header = read_header(self.bytes, pos, end)?;
            if header.kind != TlvKind::ResourceInstance {
                return Err(DecodeError::new(pos, Kind::UnexpectedTlv { found: header.kind }));
            }
            siblings.see(header.id);
            // `resource` is a resource path, so a child always exists.
            let path = resource.child(header.id).unwrap_or(resource);
            self.leaf(path, data_type, &header)?;
            pos = header.value_end;
        }
        siblings.check(self.bytes, start, end)
    }

    fn leaf(&mut self, path: Path, data_type: Option<DataType>, header: &Header) -> Result<(), DecodeError> {
        if self.count >= self.max_records {
            return Err(DecodeError::new(header.start, Kind::TooManyRecords { limit: self.max_records }));
        }
        let value = decode_value(data_type, &self.bytes[header.value_start..header.value_end], header.value_start)?;
        self.count += 1;
        (self.each)(Record::new(path, value));
        Ok(())
    }
}

/// Decodes one TLV value as the model's type (`None`: unknown resource, opaque).
pub fn decode_value(data_type: Option<DataType>, value: &[u8], offset: usize) -> Result<Value<'_>, DecodeError> {
    let invalid_length = |data_type| DecodeError::new(offset, Kind::InvalidLength { data_type, length: value.len() });
    Ok(match data_type {
        None | Some(DataType::Opaque) => Value::opaque(value),
        Some(dt @ (DataType::Integer | DataType::Time)) => {
            if !matches!(value.len(), 1 | 2 | 4 | 8) {
                return Err(invalid_length(dt));
            }
            let mut number = i64::from(value[0] as i8);
            for &b in &value[1..] {
                number = (number << 8) | i64::from(b);
            }
            if dt == DataType::Time { Value::Time(number) } else { Value::Integer(number) }
        }
        Some(DataType::UnsignedInteger) => {
            if !matches!(value.len(), 1 | 2 | 4 | 8) {
                return Err(invalid_length(DataType::UnsignedInteger));
            }
            Value::UnsignedInteger(value.iter().fold(0u64, |acc, &b| (acc << 8) | u64::from(b)))
        }
        Some(DataType::Float) => match *value {
            [a, b, c, d] => Value::Float(f64::from(f32::from_be_bytes([a, b, c, d]))),
            [a, b, c, d, e, f, g, h] => Value::Float(f64::from_be_bytes([a, b, c, d, e, f, g, h])),
            _ => return Err(invalid_length(DataType::Float)),
        },
        Some(DataType::Boolean) => match *value {
            [0] => Value::Boolean(false),
            [1] => Value::Boolean(true),
            [other] => return Err(DecodeError::new(offset, Kind::InvalidBoolean(other))),
            _ => return Err(invalid_length(DataType::Boolean)),
        },
        Some(dt @ (DataType::String | DataType::Corelnk)) => {
            let text = core::str::from_utf8(value)
                .map_err(|e| DecodeError::new(offset + e.valid_up_to(), Kind::InvalidUtf8))?;
            if dt == DataType::String { Value::string(text) } else { Value::Corelnk(text.into()) }
        }
        Some(DataType::Objlnk) => match *value {
            [a, b, c, d] => Value::Objlnk(ObjectLink {
                object_id: u16::from_be_bytes([a, b]),
                instance_id: u16::from_be_bytes([c, d]),
            }),
            _ => return Err(invalid_length(DataType::Objlnk)),
        },
        Some(DataType::None) => return Err(DecodeError::new(offset, Kind::ExecutableResource)),
    })
}

/// Encodes `records` as a TLV payload answering `path`, appending to `buf`.
///
/// # Errors
/// [`EncodeError`] when a record lies outside `path`, has a type the model does
/// not give it, carries a time, repeats a path, or a value exceeds 16 MiB;
/// [`EncodeError::UnsupportedPath`] for `/` (TLV has no composite form).
pub fn encode<B: BufMut>(
    path: &Path,
    records: &[Record<'_>],
    registry: &Registry,
    buf: &mut B,
) -> Result<(), EncodeError> {
    let sorted = super::tree_records(ContentFormat::Tlv, path, records, registry)?;
    for record in &sorted {
        let length = value_length(&record.value);
        if length > MAX_VALUE_LENGTH {
            return Err(EncodeError::ValueTooLong(length));
        }
    }
    match path.depth() {
        0 => Err(EncodeError::UnsupportedPath { format: ContentFormat::Tlv, path: *path }),
        1 => {
            for group in groups(&sorted, 1) {
                let body = instance_body_length(group);
                check_length(body)?;
                write_header(buf, TlvKind::ObjectInstance, group[0].path.segments()[1], body);
                write_instance_body(buf, group);
            }
            Ok(())
        }
        2 => {
            check_length(instance_body_length(&sorted))?;
            write_instance_body(buf, &sorted);
            Ok(())
        }
        3 => match sorted.as_slice() {
            [] => {
                if registry.resource(path).is_some_and(|r| r.multiple) {
                    write_header(buf, TlvKind::MultipleResource, path.segments()[2], 0);
                    Ok(())
                } else {
                    Err(EncodeError::NotSingleValue(0))
                }
            }
            [single] if single.path == *path => {
                write_leaf(buf, TlvKind::Resource, path.segments()[2], &single.value);
                Ok(())
            }
            instances => {
                let body: usize = instances.iter().map(|r| leaf_length(r.path.segments()[3], &r.value)).sum();
                check_length(body)?;
                write_header(buf, TlvKind::MultipleResource, path.segments()[2], body);
                for record in instances {
                    write_leaf(buf, TlvKind::ResourceInstance, record.path.segments()[3], &record.value);
                }
                Ok(())
            }
        },
        _ => match sorted.as_slice() {
            [single] => {
                write_leaf(buf, TlvKind::ResourceInstance, path.segments()[3], &single.value);
                Ok(())
            }
            other => Err(EncodeError::NotSingleValue(other.len())),
        },
    }
}

fn check_length(length: usize) -> Result<(), EncodeError> {
    if length > MAX_VALUE_LENGTH { Err(EncodeError::ValueTooLong(length)) } else { Ok(()) }
}

/// Consecutive runs of records sharing the segment at `depth`.
fn groups<'s, 'r, 'a>(records: &'s [&'r Record<'a>], depth: usize) -> impl Iterator<Item = &'s [&'r Record<'a>]> {
    records.chunk_by(move |a, b| a.path.segments()[depth] == b.path.segments()[depth])
}

fn instance_body_length(records: &[&Record<'_>]) -> usize {
    groups(records, 2).map(resource_length).sum()
}

fn resource_length(group: &[&Record<'_>]) -> usize {
    let id = group[0].path.segments()[2];
    match group {
        [single] if single.path.depth() == 3 => leaf_length(id, &single.value),
        instances => {
            let body: usize = instances.iter().map(|r| leaf_length(r.path.segments()[3], &r.value)).sum();
            header_length(id, body) + body
        }
    }
}

fn write_instance_body<B: BufMut>(buf: &mut B, records: &[&Record<'_>]) {
    for group in groups(records, 2) {
        let id = group[0].path.segments()[2];
        match group {
            [single] if single.path.depth() == 3 => write_leaf(buf, TlvKind::Resource, id, &single.value),
            instances => {
                let body: usize = instances.iter().map(|r| leaf_length(r.path.segments()[3], &r.value)).sum();
                write_header(buf, TlvKind::MultipleResource, id, body);
                for record in instances {
                    write_leaf(buf, TlvKind::ResourceInstance, record.path.segments()[3], &record.value);
                }
            }
        }
    }
}

fn header_length(id: u16, length: usize) -> usize {
    let id_len = if id > 0xFF { 2 } else { 1 };
    let length_len = match length {
        0..=7 => 0,
        8..=0xFF => 1,
        0x100..=0xFFFF => 2,
        _ => 3,
    };
    1 + id_len + length_len
}

fn leaf_length(id: u16, value: &Value<'_>) -> usize {
    let length = value_length(value);
    header_length(id, length) + length
}

fn write_header<B: BufMut>(buf: &mut B, kind: TlvKind, id: u16, length: usize) {
    let mut type_byte = match kind {
        TlvKind::ObjectInstance => 0x00,
        TlvKind::ResourceInstance => 0x40,
        TlvKind::MultipleResource => 0x80,
        TlvKind::Resource => 0xC0,
    };
    if id > 0xFF {
        type_byte |= 0x20;
    }
    match length {
        0..=7 => {
            buf.put_u8(type_byte | length as u8);
            put_id(buf, id);
        }
        8..=0xFF => {
            buf.put_u8(type_byte | 0x08);
            put_id(buf, id);
            buf.put_u8(length as u8);
        }
        0x100..=0xFFFF => {
            buf.put_u8(type_byte | 0x10);
            put_id(buf, id);
            buf.put_u16(length as u16);
        }
        _ => {
            buf.put_u8(type_byte | 0x18);
            put_id(buf, id);
            buf.put_uint(length as u64, 3);
        }
    }
}

fn put_id<B: BufMut>(buf: &mut B, id: u16) {
    if id > 0xFF {
        buf.put_u16(id);
    } else {
        buf.put_u8(id as u8);
    }
}

fn integer_width(v: i64) -> usize {
    if i8::try_from(v).is_ok() {
        1
    } else if i16::try_from(v).is_ok() {
        2
    } else if i32::try_from(v).is_ok() {
        4
    } else {
        8
    }
}

fn unsigned_width(v: u64) -> usize {
    match v {
        0..=0xFF => 1,
        0x100..=0xFFFF => 2,
        0x1_0000..=0xFFFF_FFFF => 4,
        _ => 8,
    }
}

fn float_is_single(v: f64) -> bool {
    v.is_nan() || f64::from(v as f32) == v
}

fn value_length(value: &Value<'_>) -> usize {
    match value {
        Value::Integer(v) | Value::Time(v) => integer_width(*v),
        Value::UnsignedInteger(v) => unsigned_width(*v),
        Value::Float(v) => {
            if float_is_single(*v) {
                4
            } else {
                8
            }
        }
        Value::Boolean(_) => 1,
        Value::String(s) | Value::Corelnk(s) => s.len(),
        Value::Opaque(b) => b.len(),
        Value::Objlnk(_) => 4,
    }
}

fn write_leaf<B: BufMut>(buf: &mut B, kind: TlvKind, id: u16, value: &Value<'_>) {
    write_header(buf, kind, id, value_length(value));
    match value {
        Value::Integer(v) | Value::Time(v) => {
            let width = integer_width(*v);
            buf.put_slice(&v.to_be_bytes()[8 - width..]);
        }
        Value::UnsignedInteger(v) => buf.put_uint(*v, unsigned_width(*v)),
        Value::Float(v) => {
            if float_is_single(*v) {
                buf.put_f32(*v as f32);
            } else {
                buf.put_f64(*v);
            }
        }
        Value::Boolean(v) => buf.put_u8(u8::from(*v)),
        Value::String(s) | Value::Corelnk(s) => buf.put_slice(s.as_bytes()),
        Value::Opaque(b) => buf.put_slice(b),
        Value::Objlnk(link) => {
            buf.put_u16(link.object_id);
            buf.put_u16(link.instance_id);
        }
    }
}
