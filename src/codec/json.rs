//! A small JSON reader and writer for SenML-JSON and LwM2M JSON: strings borrow
//! from the input unless they hold escapes, numbers keep integers exact, nesting
//! is bounded, and every error carries its byte offset.

use alloc::borrow::Cow;
use alloc::string::String;
use bytes::BufMut;

use super::cbor_util::{self, Number};
use super::{DecodeError, DecodeErrorKind as Kind};

pub(crate) struct JsonReader<'a> {
    bytes: &'a [u8],
    pos: usize,
    max_depth: usize,
}

impl<'a> JsonReader<'a> {
    pub(crate) fn new(bytes: &'a [u8], max_depth: usize) -> JsonReader<'a> {
        JsonReader { bytes, pos: 0, max_depth }
    }

    pub(crate) fn position(&self) -> usize {
        self.pos
    }

    pub(crate) fn error(&self, what: &'static str) -> DecodeError {
        if self.pos >= self.bytes.len() {
            DecodeError::new(self.bytes.len(), Kind::Truncated)
        } else {
            DecodeError::new(self.pos, Kind::InvalidJson(what))
        }
    }

    pub(crate) fn skip_whitespace(&mut self) {
        while let Some(b' ' | b'\t' | b'\n' | b'\r') = self.bytes.get(self.pos) {
            self.pos += 1;
        }
    }

    /// The next non-blank byte, not consumed.
    pub(crate) fn peek(&mut self) -> Option<u8> {
        self.skip_whitespace();
        self.bytes.get(self.pos).copied()
    }

    pub(crate) fn expect(&mut self, byte: u8, what: &'static str) -> Result<(), DecodeError> {
        if self.peek() == Some(byte) {
            self.pos += 1;
            Ok(())
        } else {
            Err(self.error(what))
        }
    }

    /// After an element of an array or object: true if another follows (a comma
    /// was consumed), false at the closing bracket (consumed).
    pub(crate) fn next_element(&mut self, close: u8) -> Result<bool, DecodeError> {
        match self.peek() {
            Some(b',') => {
                self.pos += 1;
                Ok(true)
            }
            Some(b) if b == close => {
                self.pos += 1;
                Ok(false)
            }
            _ => Err(self.error("expected ',' or a closing bracket")),
        }
    }

    /// True (and consumed) if the container opened just before is empty.
    pub(crate) fn empty_container(&mut self, close: u8) -> bool {
        if self.peek() == Some(close) {
            self.pos += 1;
            true
        } else {
            false
        }
    }

    pub(crate) fn at_end(&mut self) -> bool {
        self.peek().is_none()
    }

    pub(crate) fn string(&mut self) -> Result<Cow<'a, str>, DecodeError> {
        self.expect(b'"', "expected a string")?;
        let start = self.pos;
        // Fast path: no escapes, borrow.
        while let Some(&b) = self.bytes.get(self.pos) {
            match b {
                b'"' => {
                    let text = core::str::from_utf8(&self.bytes[start..self.pos])
                        .map_err(|e| DecodeError::new(start + e.valid_up_to(), Kind::InvalidUtf8))?;
                    self.pos += 1;
                    return Ok(Cow::Borrowed(text));
                }
                b'\\' => break,
                0x00..=0x1F => return Err(self.error("control character in a string")),
                _ => self.pos += 1,
            }
        }
        if self.pos >= self.bytes.len() {
            return Err(DecodeError::new(self.bytes.len(), Kind::Truncated));
        }
        let mut owned = String::from(
            core::str::from_utf8(&self.bytes[start..self.pos])
                .map_err(|e| DecodeError::new(start + e.valid_up_to(), Kind::InvalidUtf8))?,
        );
        loop {
            let run_start = self.pos;
            while let Some(&b) = self.bytes.get(self.pos) {
                if b == b'"' || b == b'\\' || b < 0x20 {
                    break;
                }
                self.pos += 1;
            }
            owned.push_str(
                core::str::from_utf8(&self.bytes[run_start..self.pos])
                    .map_err(|e| DecodeError::new(run_start + e.valid_up_to(), Kind::InvalidUtf8))?,
            );
            match self.bytes.get(self.pos) {
                None => return Err(DecodeError::new(self.bytes.len(), Kind::Truncated)),
                Some(b'"') => {
                    self.pos += 1;
                    return Ok(Cow::Owned(owned));
                }
                Some(b'\\') => {
                    self.pos += 1;
                    let c = match self.bytes.get(self.pos) {
                        None => return Err(DecodeError::new(self.bytes.len(), Kind::Truncated)),
                        Some(b'"') => '"',
                        Some(b'\\') => '\\',
                        Some(b'/') => '/',
                        Some(b'b') => '\u{8}',
                        Some(b'f') => '\u{c}',
                        Some(b'n') => '\n',
                        Some(b'r') => '\r',
                        Some(b't') => '\t',
                        Some(b'u') => {
                            self.pos += 1;
                            let escape_start = self.pos - 2;
                            let high = self.hex4()?;
                            let code = if (0xD800..0xDC00).contains(&high) {
                                if self.bytes.get(self.pos..self.pos + 2) != Some(b"\\u") {
                                    return Err(DecodeError::new(escape_start, Kind::InvalidJson("lone surrogate")));
                                }
                                self.pos += 2;
                                let low = self.hex4()?;
                                if !(0xDC00..0xE000).contains(&low) {
                                    return Err(DecodeError::new(escape_start, Kind::InvalidJson("lone surrogate")));
                                }
                                0x10000 + ((high - 0xD800) << 10) + (low - 0xDC00)
                            } else {
                                high
                            };
                            let c = char::from_u32(code)
                                .ok_or(DecodeError::new(escape_start, Kind::InvalidJson("lone surrogate")))?;
                            owned.push(c);
                            continue;
                        }
                        Some(_) => return Err(self.error("invalid escape")),
                    };
                    self.pos += 1;
                    owned.push(c);
                }
                Some(_) => return Err(self.error("control character in a string")),
            }
        }
    }

    fn hex4(&mut self) -> Result<u32, DecodeError> {
        let digits =
            self.bytes.get(self.pos..self.pos + 4).ok_or(DecodeError::new(self.bytes.len(), Kind::Truncated))?;
        let mut v = 0u32;
        for (i, &d) in digits.iter().enumerate() {
            let n = (d as char)
                .to_digit(16)
                .ok_or(DecodeError::new(self.pos + i, Kind::InvalidJson("invalid \\u escape")))?;
            v = (v << 4) | n;
        }
        self.pos += 4;
        Ok(v)
    }

    /// A JSON number: integers stay exact while they fit 64 bits.
    pub(crate) fn number(&mut self) -> Result<Number, DecodeError> {
        self.skip_whitespace();
        let start = self.pos;
        let b = self.bytes;
        let mut i = self.pos;
        let negative = b.get(i) == Some(&b'-');
        if negative {
            i += 1;
        }
        let int_start = i;
        match b.get(i) {
            Some(b'0') => i += 1,
            Some(b'1'..=b'9') => {
                while let Some(b'0'..=b'9') = b.get(i) {
                    i += 1;
                }
            }
            _ => {
                self.pos = i;
                return Err(self.error("expected a number"));
            }
        }
        let int_end = i;
        let mut is_float = false;
        if b.get(i) == Some(&b'.') {
            is_float = true;
            i += 1;
            let digits = i;
            while let Some(b'0'..=b'9') = b.get(i) {
                i += 1;
            }
            if i == digits {
                self.pos = i;
                return Err(self.error("expected digits after '.'"));
            }
        }
        if let Some(b'e' | b'E') = b.get(i) {
            is_float = true;
            i += 1;
            if let Some(b'+' | b'-') = b.get(i) {
                i += 1;
            }
            let digits = i;
            while let Some(b'0'..=b'9') = b.get(i) {
                i += 1;
            }
            if i == digits {
                self.pos = i;
                return Err(self.error("expected exponent digits"));
            }
        }
        self.pos = i;
        // Only ASCII digits, sign, '.', 'e' were accepted above.
        let text = core::str::from_utf8(&b[start..i]).unwrap_or("");
        if !is_float {
            let digits = core::str::from_utf8(&b[int_start..int_end]).unwrap_or("");
            if let Ok(magnitude) = digits.parse::<u64>() {
                return Ok(if !negative {
                    Number::Unsigned(magnitude)
                } else if magnitude == 0 {
                    Number::Unsigned(0)
                } else {
                    Number::Negative(magnitude - 1)
                });
            }
        }
        text.parse::<f64>().map(Number::Float).map_err(|_| DecodeError::new(start, Kind::InvalidJson("invalid number")))
    }

    pub(crate) fn literal(&mut self) -> Result<Option<bool>, DecodeError> {
        self.skip_whitespace();
        let rest = &self.bytes[self.pos..];
        for (word, value) in [(&b"true"[..], Some(true)), (b"false", Some(false)), (b"null", None)] {
            if rest.starts_with(word) {
                self.pos += word.len();
                return Ok(value);
            }
        }
        Err(self.error("expected true, false or null"))
    }

    /// Skips one value of any kind, following at most `max_depth` levels.
    pub(crate) fn skip_value(&mut self, depth: usize) -> Result<(), DecodeError> {
        if depth > self.max_depth {
            return Err(DecodeError::new(self.pos, Kind::TooDeep { limit: self.max_depth }));
        }
        match self.peek() {
            Some(b'"') => self.string().map(drop),
            Some(b'{') => {
                self.pos += 1;
                if self.empty_container(b'}') {
                    return Ok(());
                }
                loop {
                    self.string()?;
                    self.expect(b':', "expected ':'")?;
                    self.skip_value(depth + 1)?;
                    if !self.next_element(b'}')? {
                        return Ok(());
                    }
                }
            }
            Some(b'[') => {
                self.pos += 1;
                if self.empty_container(b']') {
                    return Ok(());
                }
                loop {
                    self.skip_value(depth + 1)?;
                    if !self.next_element(b']')? {
                        return Ok(());
                    }
                }
            }
            Some(b't' | b'f' | b'n') => self.literal().map(drop),
            Some(_) => self.number().map(drop),
            None => Err(DecodeError::new(self.bytes.len(), Kind::Truncated)),
        }
    }
}

/// Writes `text` as a JSON string with the escapes JSON requires.
pub(crate) fn put_string<B: BufMut>(buf: &mut B, text: &str) {
    buf.put_u8(b'"');
    let bytes = text.as_bytes();
    let mut run = 0;
    for (i, &b) in bytes.iter().enumerate() {
        let escape: Option<&[u8]> = match b {
            b'"' => Some(b"\\\""),
            b'\\' => Some(b"\\\\"),
            b'\n' => Some(b"\\n"),
            b'\r' => Some(b"\\r"),
            b'\t' => Some(b"\\t"),
            0x00..=0x1F => None,
            _ => continue,
        };
        buf.put_slice(&bytes[run..i]);
        match escape {
            Some(e) => buf.put_slice(e),
            None => {
                const HEX: &[u8; 16] = b"0123456789abcdef";
                buf.put_slice(b"\\u00");
                buf.put_u8(HEX[usize::from(b >> 4)]);
                buf.put_u8(HEX[usize::from(b & 0xF)]);
            }
        }
        run = i + 1;
    }
    buf.put_slice(&bytes[run..]);
    buf.put_u8(b'"');
}

/// Formats through `core::fmt` into a small stack buffer, then copies out.
struct Scratch {
    bytes: [u8; 32],
    len: usize,
}

impl core::fmt::Write for Scratch {
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

fn put_display<B: BufMut>(buf: &mut B, args: core::fmt::Arguments<'_>) {
    use core::fmt::Write;
    let mut scratch = Scratch { bytes: [0; 32], len: 0 };
    if scratch.write_fmt(args).is_ok() {
        buf.put_slice(&scratch.bytes[..scratch.len]);
    } else {
        // Longer than 32 bytes: never for the numbers written here.
        buf.put_slice(b"0");
    }
}

pub(crate) fn put_i64<B: BufMut>(buf: &mut B, v: i64) {
    put_display(buf, format_args!("{v}"));
}

pub(crate) fn put_u64<B: BufMut>(buf: &mut B, v: u64) {
    put_display(buf, format_args!("{v}"));
}

/// A finite float in its shortest round-trip form, always with a '.' or an
/// exponent so that it reads back as a float ("300.0", "1e300", "0.1").
pub(crate) fn put_f64<B: BufMut>(buf: &mut B, v: f64) {
    put_display(buf, format_args!("{v:?}"));
}

/// A time: an integer when it is one, else a float.
pub(crate) fn put_time<B: BufMut>(buf: &mut B, v: f64) {
    if cbor_util::trunc(v) == v && v.abs() < 9.0e15 {
        put_i64(buf, v as i64);
    } else {
        put_f64(buf, v);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::vec::Vec;

    #[test]
    fn strings_borrow_or_unescape() {
        let mut r = JsonReader::new(br#""plain" "a\"b\\c\/d\n\u00e9\ud83d\ude00""#, 4);
        assert!(matches!(r.string().unwrap(), Cow::Borrowed("plain")));
        assert_eq!(r.string().unwrap(), "a\"b\\c/d\né😀");
        let mut bad = JsonReader::new(br#""\ud83d""#, 4);
        assert_eq!(bad.string().unwrap_err().kind, Kind::InvalidJson("lone surrogate"));
        let mut truncated = JsonReader::new(br#""abc"#, 4);
        assert_eq!(truncated.string().unwrap_err(), DecodeError::new(4, Kind::Truncated));
        let mut control = JsonReader::new(b"\"a\x01\"", 4);
        assert_eq!(control.string().unwrap_err().offset, 2);
    }

    #[test]
    fn numbers_keep_integers_exact() {
        let n = |t: &str| JsonReader::new(t.as_bytes(), 4).number();
        assert_eq!(n("18446744073709551615").unwrap(), Number::Unsigned(u64::MAX));
        assert_eq!(n("-1").unwrap(), Number::Negative(0));
        assert_eq!(n("-9223372036854775808").unwrap(), Number::Negative(9223372036854775807));
        assert_eq!(n("1.5").unwrap(), Number::Float(1.5));
        assert_eq!(n("1e3").unwrap(), Number::Float(1000.0));
        assert_eq!(n("99999999999999999999").unwrap(), Number::Float(1e20));
        for bad in ["-", "01x", ".5", "1.", "1e", "+1"] {
            let r = n(bad);
            assert!(r.is_err() || bad == "01x", "{bad}");
        }
    }

    #[test]
    fn writes_escapes_and_floats() {
        let mut out = Vec::new();
        put_string(&mut out, "a\"b\\\n\u{1}é");
        assert_eq!(out, "\"a\\\"b\\\\\\n\\u0001é\"".as_bytes());
        let mut out = Vec::new();
        put_f64(&mut out, 300.0);
        put_u64(&mut out, 7);
        put_f64(&mut out, 1e300);
        assert_eq!(out, b"300.071e300");
    }

    #[test]
    fn skips_bounded() {
        let mut r = JsonReader::new(br#"{"a":[1,{"b":null}],"c":true}"#, 4);
        r.skip_value(0).unwrap();
        assert!(r.at_end());
        let mut deep = JsonReader::new(b"[[[[[[1]]]]]]", 4);
        assert_eq!(deep.skip_value(0).unwrap_err().kind, Kind::TooDeep { limit: 4 });
    }
}
