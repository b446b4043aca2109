//! CBOR helpers shared by SenML-CBOR, LwM2M-CBOR and single-value CBOR: reading
//! numbers and skipping values with positioned errors and a depth
//! bound, and writing minimal CBOR heads and the shortest exact float width.

use alloc::borrow::Cow;
use alloc::string::String;
use alloc::vec::Vec;
use bytes::BufMut;

use super::{DecodeError, DecodeErrorKind as Kind};
use crate::model::{DataType, ObjectLink, Value};

/// A number as the wire carried it, before the model gives it a type.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum Number {
    /// A non-negative integer.
    Unsigned(u64),
    /// A negative integer, holding `-1 - value` as CBOR does (so -1 is 0).
    Negative(u64),
    /// A floating point number.
    Float(f64),
}

impl Number {
    pub(crate) fn as_f64(self) -> f64 {
        match self {
            Number::Unsigned(u) => u as f64,
            Number::Negative(n) => -1.0 - n as f64,
            Number::Float(f) => f,
        }
    }

    fn as_i128(self) -> Option<i128> {
        match self {
            Number::Unsigned(u) => Some(i128::from(u)),
            Number::Negative(n) => Some(-1 - i128::from(n)),
            Number::Float(f) => {
                // Integral floats stand for integers (RFC 8428: "chosen so that
                // conversion gives the same value").
                if f.is_finite() && trunc(f) == f && f.abs() < 1.9e19 { Some(f as i128) } else { None }
            }
        }
    }

    /// The sum of a base value and a value (RFC 8428 `bv` + `v`).
    pub(crate) fn add(self, other: Number) -> Number {
        match (self, other) {
            (Number::Float(_), _) | (_, Number::Float(_)) => Number::Float(self.as_f64() + other.as_f64()),
            _ => match (self.as_i128(), other.as_i128()) {
                (Some(a), Some(b)) => {
                    let sum = a + b;
                    if sum >= 0 {
                        u64::try_from(sum).map_or(Number::Float(sum as f64), Number::Unsigned)
                    } else {
                        u64::try_from(-1 - sum).map_or(Number::Float(sum as f64), Number::Negative)
                    }
                }
                _ => Number::Float(self.as_f64() + other.as_f64()),
            },
        }
    }

    /// The value this number is for a resource of `data_type` (`None`: unknown
    /// resource, typed by the wire: integers as Integer while they fit, else
    /// Unsigned Integer; floats as Float).
    pub(crate) fn typed(self, data_type: Option<DataType>) -> Result<Value<'static>, Kind> {
        let out_of_range = |dt| Kind::NumberOutOfRange(dt);
        match data_type {
            None => Ok(match self {
                Number::Unsigned(u) => i64::try_from(u).map_or(Value::UnsignedInteger(u), Value::Integer),
                Number::Negative(n) => {
                    Value::Integer(i64::try_from(-1 - i128::from(n)).map_err(|_| out_of_range(DataType::Integer))?)
                }
                Number::Float(f) => Value::Float(f),
            }),
            Some(DataType::Integer) => {
                let v = self.as_i128().ok_or(out_of_range(DataType::Integer))?;
                Ok(Value::Integer(i64::try_from(v).map_err(|_| out_of_range(DataType::Integer))?))
            }
            Some(DataType::Time) => {
                let v = match self {
                    Number::Float(f) if f.is_finite() => trunc(f) as i128,
                    other => other.as_i128().ok_or(out_of_range(DataType::Time))?,
                };
                Ok(Value::Time(i64::try_from(v).map_err(|_| out_of_range(DataType::Time))?))
            }
            Some(DataType::UnsignedInteger) => {
                let v = self.as_i128().ok_or(out_of_range(DataType::UnsignedInteger))?;
                Ok(Value::UnsignedInteger(u64::try_from(v).map_err(|_| out_of_range(DataType::UnsignedInteger))?))
            }
            Some(DataType::Float) => Ok(Value::Float(self.as_f64())),
            Some(expected) => Err(Kind::TypeMismatch { expected, found: "number" }),
        }
    }
}

/// A leaf value as the wire carried it.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum WireValue<'a> {
    Number(Number),
    Text(Cow<'a, str>),
    Bytes(Cow<'a, [u8]>),
    Boolean(bool),
    /// SenML's `vlo`: text that must be an object link.
    ObjectLink(Cow<'a, str>),
}

impl<'a> WireValue<'a> {
    fn name(&self) -> &'static str {
        match self {
            WireValue::Number(_) => "number",
            WireValue::Text(_) => "string",
            WireValue::Bytes(_) => "byte string",
            WireValue::Boolean(_) => "boolean",
            WireValue::ObjectLink(_) => "object link",
        }
    }

    /// Types the wire value through the model (`None`: unknown resource).
    pub(crate) fn typed(self, data_type: Option<DataType>) -> Result<Value<'a>, Kind> {
        let found = self.name();
        if data_type == Some(DataType::None) {
            return Err(Kind::ExecutableResource);
        }
        match (data_type, self) {
            (_, WireValue::Number(n)) => n.typed(data_type),
            (None | Some(DataType::String), WireValue::Text(s)) => Ok(Value::String(s)),
            (Some(DataType::Corelnk), WireValue::Text(s)) => Ok(Value::Corelnk(s)),
            (None | Some(DataType::Opaque), WireValue::Bytes(b)) => Ok(Value::Opaque(b)),
            (None | Some(DataType::Boolean), WireValue::Boolean(b)) => Ok(Value::Boolean(b)),
            // Leshan sends object links as `vs`; LwM2M-CBOR always carries them as text.
            (None | Some(DataType::Objlnk), WireValue::ObjectLink(s))
            | (Some(DataType::Objlnk), WireValue::Text(s)) => {
                s.parse::<ObjectLink>().map(Value::Objlnk).map_err(|_| Kind::InvalidField("object link"))
            }
            (Some(DataType::None), _) => Err(Kind::ExecutableResource),
            (Some(expected), _) => Err(Kind::TypeMismatch { expected, found }),
        }
    }
}

/// The kind of the next CBOR item, from its initial byte alone.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Type {
    /// Major type 0.
    Unsigned,
    /// Major type 1.
    Negative,
    /// Major type 2, definite.
    Bytes,
    /// Major type 2, indefinite.
    BytesIndef,
    /// Major type 3, definite.
    String,
    /// Major type 3, indefinite.
    StringIndef,
    /// Major type 4, definite.
    Array,
    /// Major type 4, indefinite.
    ArrayIndef,
    /// Major type 5, definite.
    Map,
    /// Major type 5, indefinite.
    MapIndef,
    /// Major type 6.
    Tag,
    /// `false` / `true`.
    Bool,
    /// `null`.
    Null,
    /// `undefined`.
    Undefined,
    /// Half, single or double float.
    Float,
    /// Another simple value.
    Simple,
    /// The break stop code (0xFF).
    Break,
    /// A reserved initial byte.
    Reserved,
}

fn type_of(initial: u8) -> Type {
    let info = initial & 0x1f;
    match (initial >> 5, info) {
        (_, 28..=30) => Type::Reserved,
        (0, 31) | (1, 31) | (6, 31) => Type::Reserved,
        (0, _) => Type::Unsigned,
        (1, _) => Type::Negative,
        (2, 31) => Type::BytesIndef,
        (2, _) => Type::Bytes,
        (3, 31) => Type::StringIndef,
        (3, _) => Type::String,
        (4, 31) => Type::ArrayIndef,
        (4, _) => Type::Array,
        (5, 31) => Type::MapIndef,
        (5, _) => Type::Map,
        (6, _) => Type::Tag,
        (_, 20 | 21) => Type::Bool,
        (_, 22) => Type::Null,
        (_, 23) => Type::Undefined,
        (_, 25..=27) => Type::Float,
        (_, 31) => Type::Break,
        _ => Type::Simple,
    }
}

/// A CBOR reader (RFC 8949) over a byte slice: it borrows text and byte
/// strings, bounds every length by the bytes present, and reports errors with
/// the offset of the item at fault. Small `Copy` state, no allocation except to
/// join indefinite-length strings.
pub(crate) struct Reader<'a> {
    pub(crate) bytes: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    pub(crate) fn new(bytes: &'a [u8]) -> Reader<'a> {
        Reader { bytes, pos: 0 }
    }

    #[inline]
    pub(crate) fn position(&self) -> usize {
        self.pos
    }

    /// The next initial byte, if any (no decoding).
    #[inline]
    pub(crate) fn peek(&self) -> Option<u8> {
        self.bytes.get(self.pos).copied()
    }

    /// Skips `n` bytes already examined with [`peek`](Self::peek).
    #[inline]
    pub(crate) fn advance(&mut self, n: usize) {
        self.pos = (self.pos + n).min(self.bytes.len());
    }

    #[inline]
    pub(crate) fn at_end(&self) -> bool {
        self.pos >= self.bytes.len()
    }

    pub(crate) fn error(&self, kind: Kind) -> DecodeError {
        DecodeError::new(self.pos, kind)
    }

    fn truncated(&self) -> DecodeError {
        DecodeError::new(self.bytes.len(), Kind::Truncated)
    }

    /// The kind of the next item.
    #[inline]
    pub(crate) fn datatype(&self) -> Result<Type, DecodeError> {
        self.peek().map(type_of).ok_or_else(|| self.truncated())
    }

    /// Reads a head: (major type, argument); `None` argument for indefinite.
    #[inline]
    fn head(&mut self) -> Result<(u8, Option<u64>), DecodeError> {
        let start = self.pos;
        let initial = *self.bytes.get(start).ok_or_else(|| self.truncated())?;
        let info = initial & 0x1f;
        let width = match info {
            0..=23 => {
                self.pos = start + 1;
                return Ok((initial >> 5, Some(u64::from(info))));
            }
            24 => 1,
            25 => 2,
            26 => 4,
            27 => 8,
            31 => {
                self.pos = start + 1;
                return Ok((initial >> 5, None));
            }
            _ => return Err(DecodeError::new(start, Kind::InvalidCbor("reserved additional information"))),
        };
        let argument = self.bytes.get(start + 1..start + 1 + width).ok_or_else(|| self.truncated())?;
        self.pos = start + 1 + width;
        Ok((initial >> 5, Some(argument.iter().fold(0u64, |acc, &b| (acc << 8) | u64::from(b)))))
    }

    /// A head of `major` with a definite argument.
    fn definite(&mut self, major: u8, what: &'static str) -> Result<u64, DecodeError> {
        let start = self.pos;
        match self.head()? {
            (m, Some(argument)) if m == major => Ok(argument),
            _ => Err(DecodeError::new(start, Kind::InvalidCbor(what))),
        }
    }

    /// Consumes a break byte (`0xFF`) if one is next.
    #[inline]
    pub(crate) fn take_break(&mut self) -> Result<bool, DecodeError> {
        match self.peek() {
            Some(0xFF) => {
                self.pos += 1;
                Ok(true)
            }
            Some(_) => Ok(false),
            None => Err(self.truncated()),
        }
    }

    fn container(&mut self, major: u8, what: &'static str) -> Result<Option<u64>, DecodeError> {
        let start = self.pos;
        match self.head()? {
            (m, argument) if m == major => Ok(argument),
            _ => Err(DecodeError::new(start, Kind::InvalidCbor(what))),
        }
    }

    /// An array head: `Some(n)` for definite, `None` for indefinite.
    pub(crate) fn array(&mut self) -> Result<Option<u64>, DecodeError> {
        self.container(MAJOR_ARRAY, "expected an array")
    }

    /// A map head: `Some(n)` for definite, `None` for indefinite.
    pub(crate) fn map(&mut self) -> Result<Option<u64>, DecodeError> {
        self.container(MAJOR_MAP, "expected a map")
    }

    /// The bytes of a definite string whose head says `len`.
    fn string_bytes(&mut self, len: u64) -> Result<&'a [u8], DecodeError> {
        let start = self.pos;
        let end = usize::try_from(len).ok().and_then(|l| start.checked_add(l)).filter(|&e| e <= self.bytes.len());
        let end = end.ok_or_else(|| self.truncated())?;
        self.pos = end;
        Ok(&self.bytes[start..end])
    }

    fn utf8(&self, bytes: &'a [u8], offset: usize) -> Result<&'a str, DecodeError> {
        core::str::from_utf8(bytes).map_err(|e| DecodeError::new(offset + e.valid_up_to(), Kind::InvalidUtf8))
    }

    /// Text as its bytes, for text that is parsed byte by byte anyway (SenML
    /// names). The UTF-8 check runs only when a byte is not ASCII, so errors
    /// are those of [`text`](Self::text) while ASCII text skips the check.
    pub(crate) fn text_bytes(&mut self) -> Result<Cow<'a, [u8]>, DecodeError> {
        let start = self.pos;
        match self.head()? {
            (MAJOR_TEXT, Some(len)) => {
                let at = self.pos;
                let bytes = self.string_bytes(len)?;
                if !bytes.is_ascii() {
                    self.utf8(bytes, at)?;
                }
                Ok(Cow::Borrowed(bytes))
            }
            (MAJOR_TEXT, None) => {
                self.pos = start;
                self.text().map(|text| Cow::Owned(text.into_owned().into_bytes()))
            }
            _ => Err(DecodeError::new(start, Kind::InvalidCbor("expected text"))),
        }
    }

    /// Text, borrowed when definite, joined when indefinite.
    pub(crate) fn text(&mut self) -> Result<Cow<'a, str>, DecodeError> {
        let start = self.pos;
        match self.head()? {
            (MAJOR_TEXT, Some(len)) => {
                let at = self.pos;
                let bytes = self.string_bytes(len)?;
                self.utf8(bytes, at).map(Cow::Borrowed)
            }
            (MAJOR_TEXT, None) => {
                let mut joined = String::new();
                while !self.take_break()? {
                    let len = self.definite(MAJOR_TEXT, "indefinite text chunk must be definite text")?;
                    let at = self.pos;
                    let bytes = self.string_bytes(len)?;
                    joined.push_str(self.utf8(bytes, at)?);
                }
                Ok(Cow::Owned(joined))
            }
            _ => Err(DecodeError::new(start, Kind::InvalidCbor("expected text"))),
        }
    }

    /// A byte string, borrowed when definite, joined when indefinite.
    pub(crate) fn bytes(&mut self) -> Result<Cow<'a, [u8]>, DecodeError> {
        let start = self.pos;
        match self.head()? {
            (MAJOR_BYTES, Some(len)) => self.string_bytes(len).map(Cow::Borrowed),
            (MAJOR_BYTES, None) => {
                let mut joined = Vec::new();
                while !self.take_break()? {
                    let len = self.definite(MAJOR_BYTES, "indefinite byte chunk must be definite bytes")?;
                    joined.extend_from_slice(self.string_bytes(len)?);
                }
                Ok(Cow::Owned(joined))
            }
            _ => Err(DecodeError::new(start, Kind::InvalidCbor("expected a byte string"))),
        }
    }

    /// A boolean.
    pub(crate) fn bool(&mut self) -> Result<bool, DecodeError> {
        match self.peek() {
            Some(0xF4) => {
                self.pos += 1;
                Ok(false)
            }
            Some(0xF5) => {
                self.pos += 1;
                Ok(true)
            }
            Some(_) => Err(self.error(Kind::InvalidCbor("expected a boolean"))),
            None => Err(self.truncated()),
        }
    }

    /// An unsigned integer.
    pub(crate) fn u64(&mut self) -> Result<u64, DecodeError> {
        self.definite(MAJOR_UNSIGNED, "expected an unsigned integer")
    }

    /// A number: an integer of either sign, a float of any width, a decimal
    /// fraction (tag 4) or an epoch time (tag 1) around one of those.
    pub(crate) fn number(&mut self) -> Result<Number, DecodeError> {
        let start = self.pos;
        let initial = self.peek().ok_or_else(|| self.truncated())?;
        match initial {
            0xF9 => {
                let b = self.bytes.get(start + 1..start + 3).ok_or_else(|| self.truncated())?;
                self.pos = start + 3;
                Ok(Number::Float(f16_to_f64(u16::from_be_bytes([b[0], b[1]]))))
            }
            0xFA => {
                let b = self.bytes.get(start + 1..start + 5).ok_or_else(|| self.truncated())?;
                self.pos = start + 5;
                Ok(Number::Float(f64::from(f32::from_be_bytes([b[0], b[1], b[2], b[3]]))))
            }
            0xFB => {
                let b = self.bytes.get(start + 1..start + 9).ok_or_else(|| self.truncated())?;
                self.pos = start + 9;
                Ok(Number::Float(f64::from_be_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]])))
            }
            _ => match self.head()? {
                (MAJOR_UNSIGNED, Some(n)) => Ok(Number::Unsigned(n)),
                (MAJOR_NEGATIVE, Some(n)) => Ok(Number::Negative(n)),
                (6, Some(1)) => match self.peek() {
                    Some(0xC0..=0xDB) => Err(DecodeError::new(start, Kind::InvalidCbor("nested tag in a number"))),
                    _ => self.number(),
                },
                (6, Some(4)) => self.decimal_fraction(start),
                (6, _) => Err(DecodeError::new(start, Kind::InvalidCbor("unsupported tag on a number"))),
                _ => Err(DecodeError::new(start, Kind::InvalidField("number"))),
            },
        }
    }

    fn decimal_fraction(&mut self, start: usize) -> Result<Number, DecodeError> {
        if self.array()? != Some(2) {
            return Err(DecodeError::new(start, Kind::InvalidCbor("decimal fraction must be [exponent, mantissa]")));
        }
        let integer = |r: &mut Self| -> Result<i128, DecodeError> {
            let at = r.pos;
            match r.head()? {
                (MAJOR_UNSIGNED, Some(n)) => Ok(i128::from(n)),
                (MAJOR_NEGATIVE, Some(n)) => Ok(-1 - i128::from(n)),
                _ => Err(DecodeError::new(at, Kind::InvalidCbor("decimal fraction parts must be integers"))),
            }
        };
        let exponent = integer(self)?;
        let mantissa = integer(self)?;
        let exponent = exponent.clamp(-400, 400) as i32;
        Ok(Number::Float(scale10(mantissa as f64, exponent)))
    }

    /// Skips one data item of any kind, following at most `max_depth` levels.
    pub(crate) fn skip(&mut self, depth: usize, max_depth: usize) -> Result<(), DecodeError> {
        if depth > max_depth {
            return Err(self.error(Kind::TooDeep { limit: max_depth }));
        }
        let start = self.pos;
        match self.datatype()? {
            Type::Break => Err(DecodeError::new(start, Kind::InvalidCbor("unexpected break"))),
            Type::Reserved => Err(DecodeError::new(start, Kind::InvalidCbor("reserved initial byte"))),
            Type::Float | Type::Bool | Type::Null | Type::Undefined | Type::Simple => {
                let width = match self.bytes[start] & 0x1f {
                    24 => 2,
                    25 => 3,
                    26 => 5,
                    27 => 9,
                    _ => 1,
                };
                if start + width > self.bytes.len() {
                    return Err(self.truncated());
                }
                self.pos = start + width;
                Ok(())
            }
            Type::String | Type::StringIndef => self.text().map(drop),
            Type::Bytes | Type::BytesIndef => self.bytes().map(drop),
            Type::Unsigned | Type::Negative => self.head().map(drop),
            Type::Tag => {
                self.head()?;
                self.skip(depth + 1, max_depth)
            }
            Type::Array | Type::ArrayIndef | Type::Map | Type::MapIndef => {
                let (major, count) = self.head()?;
                let per_entry = if major == MAJOR_MAP { 2 } else { 1 };
                match count {
                    Some(n) => {
                        for _ in 0..n {
                            for _ in 0..per_entry {
                                self.skip(depth + 1, max_depth)?;
                            }
                        }
                    }
                    None => {
                        while !self.take_break()? {
                            for _ in 0..per_entry {
                                self.skip(depth + 1, max_depth)?;
                            }
                        }
                    }
                }
                Ok(())
            }
        }
    }

    /// A plain CBOR leaf value (LwM2M-CBOR and Content-Format 60): a number,
    /// text, a byte string or a boolean. `null` and `undefined` carry no value.
    pub(crate) fn leaf(&mut self) -> Result<WireValue<'a>, DecodeError> {
        let start = self.pos;
        match self.datatype()? {
            Type::String | Type::StringIndef => self.text().map(WireValue::Text),
            Type::Bytes | Type::BytesIndef => self.bytes().map(WireValue::Bytes),
            Type::Bool => self.bool().map(WireValue::Boolean),
            Type::Null | Type::Undefined => Err(DecodeError::new(start, Kind::NullValue)),
            Type::Array | Type::ArrayIndef | Type::Map | Type::MapIndef => {
                Err(DecodeError::new(start, Kind::InvalidField("leaf value (found a container)")))
            }
            _ => self.number().map(WireValue::Number),
        }
    }
}

/// IEEE-754 binary16 to binary64 (exact).
pub(crate) fn f16_to_f64(bits: u16) -> f64 {
    let sign = if bits & 0x8000 != 0 { -1.0 } else { 1.0 };
    let exponent = i32::from((bits >> 10) & 0x1F);
    let fraction = f64::from(bits & 0x3FF);
    match exponent {
        0 => sign * fraction * 5.960_464_477_539_063e-8, // 2^-24
        31 if fraction == 0.0 => sign * f64::INFINITY,
        31 => f64::NAN,
        _ => {
            let scale =
                if exponent >= 15 { (1u32 << (exponent - 15)) as f64 } else { 1.0 / (1u32 << (15 - exponent)) as f64 };
            sign * (1.0 + fraction / 1024.0) * scale
        }
    }
}

/// Writes a value as a plain CBOR data item (LwM2M-CBOR and Content-Format 60):
/// object links as "oid:iid" text, times as integer seconds.
pub(crate) fn put_leaf<B: BufMut>(buf: &mut B, value: &Value<'_>) {
    match value {
        Value::Integer(v) | Value::Time(v) => put_i64(buf, *v),
        Value::UnsignedInteger(v) => put_head(buf, MAJOR_UNSIGNED, *v),
        Value::Float(v) => put_float(buf, *v),
        Value::Boolean(v) => put_bool(buf, *v),
        Value::String(s) | Value::Corelnk(s) => put_text(buf, s),
        Value::Opaque(b) => put_bytes(buf, b),
        Value::Objlnk(link) => {
            use core::fmt::Write;
            let mut text = super::senml_cbor::LinkText::default();
            let _ = write!(text, "{link}");
            put_text(buf, text.as_str());
        }
    }
}

/// `mantissa × 10^exponent`, dividing by an exact power of ten for negative
/// exponents so that e.g. 45 × 10^-1 gives exactly the double nearest 4.5.
fn scale10(mantissa: f64, exponent: i32) -> f64 {
    let mut power = 1.0f64;
    for _ in 0..exponent.unsigned_abs() {
        power *= 10.0;
    }
    if exponent < 0 { mantissa / power } else { mantissa * power }
}

/// `f64::trunc` without `std` (core has no float math on stable): values of
/// magnitude 2^52 and above are already integral.
pub(crate) fn trunc(f: f64) -> f64 {
    if f.abs() < 4_503_599_627_370_496.0 { (f as i64) as f64 } else { f }
}

/// Writes a CBOR head in its shortest form.
#[inline]
pub(crate) fn put_head<B: BufMut>(buf: &mut B, major: u8, value: u64) {
    let major = major << 5;
    match value {
        0..=23 => buf.put_u8(major | value as u8),
        24..=0xFF => {
            buf.put_u8(major | 24);
            buf.put_u8(value as u8);
        }
        0x100..=0xFFFF => {
            buf.put_u8(major | 25);
            buf.put_u16(value as u16);
        }
        0x1_0000..=0xFFFF_FFFF => {
            buf.put_u8(major | 26);
            buf.put_u32(value as u32);
        }
        _ => {
            buf.put_u8(major | 27);
            buf.put_u64(value);
        }
    }
}

pub(crate) const MAJOR_UNSIGNED: u8 = 0;
pub(crate) const MAJOR_NEGATIVE: u8 = 1;
pub(crate) const MAJOR_BYTES: u8 = 2;
pub(crate) const MAJOR_TEXT: u8 = 3;
pub(crate) const MAJOR_ARRAY: u8 = 4;
pub(crate) const MAJOR_MAP: u8 = 5;

pub(crate) fn put_i64<B: BufMut>(buf: &mut B, v: i64) {
    if v >= 0 {
        put_head(buf, MAJOR_UNSIGNED, v as u64);
    } else {
        put_head(buf, MAJOR_NEGATIVE, (-1 - v) as u64);
    }
}

pub(crate) fn put_text<B: BufMut>(buf: &mut B, text: &str) {
    put_head(buf, MAJOR_TEXT, text.len() as u64);
    buf.put_slice(text.as_bytes());
}

pub(crate) fn put_bytes<B: BufMut>(buf: &mut B, bytes: &[u8]) {
    put_head(buf, MAJOR_BYTES, bytes.len() as u64);
    buf.put_slice(bytes);
}

pub(crate) fn put_bool<B: BufMut>(buf: &mut B, v: bool) {
    buf.put_u8(if v { 0xF5 } else { 0xF4 });
}

/// Writes a float in the shortest of half, single and double precision that
/// holds it exactly.
pub(crate) fn put_float<B: BufMut>(buf: &mut B, v: f64) {
    if let Some(half) = f64_to_f16_exact(v) {
        buf.put_u8(0xF9);
        buf.put_u16(half);
    } else if v.is_nan() || f64::from(v as f32) == v {
        buf.put_u8(0xFA);
        buf.put_f32(v as f32);
    } else {
        buf.put_u8(0xFB);
        buf.put_f64(v);
    }
}

/// The IEEE-754 binary16 bits of `v` when binary16 holds it exactly.
pub(crate) fn f64_to_f16_exact(v: f64) -> Option<u16> {
    let bits = v.to_bits();
    let sign = ((bits >> 48) & 0x8000) as u16;
    if v.is_nan() {
        return Some(0x7E00);
    }
    if v.is_infinite() {
        return Some(sign | 0x7C00);
    }
    if v == 0.0 {
        return Some(sign);
    }
    let exponent = ((bits >> 52) & 0x7FF) as i32 - 1023;
    let fraction = bits & ((1u64 << 52) - 1);
    if (-14..=15).contains(&exponent) {
        // Normal binary16: 10 fraction bits, the other 42 must be zero.
        if fraction & ((1u64 << 42) - 1) != 0 {
            return None;
        }
        return Some(sign | (((exponent + 15) as u16) << 10) | (fraction >> 42) as u16);
    }
    if (-24..-14).contains(&exponent) {
        // Subnormal binary16: a multiple of 2^-24 below 2^-14.
        let scaled = v.abs() * 16_777_216.0; // 2^24
        if trunc(scaled) == scaled && (1.0..1024.0).contains(&scaled) {
            return Some(sign | scaled as u16);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn half_precision_exactness() {
        assert_eq!(f64_to_f16_exact(300.0), Some(0x5CB0));
        assert_eq!(f64_to_f16_exact(1.5), Some(0x3E00));
        assert_eq!(f64_to_f16_exact(-2.0), Some(0xC000));
        assert_eq!(f64_to_f16_exact(65504.0), Some(0x7BFF));
        assert_eq!(f64_to_f16_exact(65505.0), None);
        assert_eq!(f64_to_f16_exact(0.1), None);
        assert_eq!(f64_to_f16_exact(5.960464477539063e-8), Some(0x0001));
        assert_eq!(f64_to_f16_exact(-0.0), Some(0x8000));
        assert_eq!(f64_to_f16_exact(f64::INFINITY), Some(0x7C00));
        // Every binary16 bit pattern that is finite converts back to itself.
        for bits in 0u16..0x7C00 {
            for sign in [0u16, 0x8000] {
                let h = bits | sign;
                let value = half_to_f64(h);
                assert_eq!(f64_to_f16_exact(value), Some(h), "{h:#06x}");
            }
        }
    }

    #[test]
    fn half_decoding_matches() {
        for bits in 0u16..0x7C00 {
            for sign in [0u16, 0x8000] {
                assert_eq!(f16_to_f64(bits | sign), half_to_f64(bits | sign));
            }
        }
        assert!(f16_to_f64(0x7E00).is_nan());
        assert_eq!(f16_to_f64(0xFC00), f64::NEG_INFINITY);
    }

    fn half_to_f64(h: u16) -> f64 {
        let sign = if h & 0x8000 != 0 { -1.0 } else { 1.0 };
        let exponent = i32::from((h >> 10) & 0x1F);
        let fraction = f64::from(h & 0x3FF);
        if exponent == 0 {
            sign * fraction * 2f64.powi(-24)
        } else {
            sign * (1.0 + fraction / 1024.0) * 2f64.powi(exponent - 15)
        }
    }

    #[test]
    fn number_typing() {
        assert_eq!(Number::Unsigned(5).typed(Some(DataType::Integer)), Ok(Value::Integer(5)));
        assert_eq!(Number::Negative(0).typed(None), Ok(Value::Integer(-1)));
        assert_eq!(Number::Unsigned(u64::MAX).typed(None), Ok(Value::UnsignedInteger(u64::MAX)));
        assert_eq!(
            Number::Unsigned(u64::MAX).typed(Some(DataType::Integer)),
            Err(Kind::NumberOutOfRange(DataType::Integer))
        );
        assert_eq!(
            Number::Negative(0).typed(Some(DataType::UnsignedInteger)),
            Err(Kind::NumberOutOfRange(DataType::UnsignedInteger))
        );
        assert_eq!(Number::Float(2.0).typed(Some(DataType::Integer)), Ok(Value::Integer(2)));
        assert_eq!(Number::Float(2.5).typed(Some(DataType::Integer)), Err(Kind::NumberOutOfRange(DataType::Integer)));
        assert_eq!(Number::Float(2.5).typed(Some(DataType::Time)), Ok(Value::Time(2)));
        assert_eq!(Number::Unsigned(3).typed(Some(DataType::Float)), Ok(Value::Float(3.0)));
        assert!(matches!(Number::Unsigned(3).typed(Some(DataType::String)), Err(Kind::TypeMismatch { .. })));
        assert_eq!(Number::Negative(u64::MAX).typed(None), Err(Kind::NumberOutOfRange(DataType::Integer)));
        assert_eq!(Number::Unsigned(2).add(Number::Negative(4)), Number::Negative(2));
        assert_eq!(Number::Unsigned(2).add(Number::Float(0.5)), Number::Float(2.5));
    }
}
