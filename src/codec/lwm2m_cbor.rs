//! LwM2M-CBOR (Content-Format 11544, LwM2M 1.2): nested CBOR maps whose keys are
//! ids or arrays of ids, read from the root; the concatenated keys form the path
//! of each leaf value.
//!
//! Input: definite and indefinite maps, arrays and strings; keys as single ids or
//! id arrays at any level (`{[5,0]: {3: 1}}`, `{5: {0: {3: 1}}}`,
//! `{[5,0,3]: 1}`); object links as `"oid:iid"` text; numbers of any CBOR form.
//! A `null` leaf is refused ([`DecodeErrorKind::NullValue`]): it carries no value.
//! Output: definite maps, the request path as one id-array key and the rest
//! nested by id.
//!
//! ```
//! use lwm2m_fota::codec::{lwm2m_cbor, DecodeOptions};
//! use lwm2m_fota::model::{Path, Record, Registry, Value};
//! // A real client's Notify of /5/0/3: {_ [5, 0, 3]: 2}
//! let mut records = Vec::new();
//! lwm2m_cbor::decode_into(&Path::resource(5, 0, 3), &[0xbf, 0x83, 0x05, 0x00, 0x03, 0x02, 0xff],
//!                         &Registry::default(), &DecodeOptions::default(), &mut records)?;
//! assert_eq!(records, [Record::new(Path::resource(5, 0, 3), Value::Integer(2))]);
//! # Ok::<(), lwm2m_fota::codec::DecodeError>(())
//! ```

use alloc::vec::Vec;
use bytes::BufMut;

#[cfg(doc)]
use super::DecodeErrorKind;
use super::cbor_util::{self, MAJOR_ARRAY, MAJOR_MAP, MAJOR_UNSIGNED, Reader, Type};
use super::{DecodeError, DecodeErrorKind as Kind, DecodeOptions, EncodeError};
use crate::model::{ContentFormat, MAX_ID, Path, PathError, Record, Registry};

struct Decoder<'a, 'r, 'o> {
    reader: Reader<'a>,
    request: Path,
    registry: &'r Registry,
    options: &'r DecodeOptions,
    out: &'o mut Vec<Record<'a>>,
    start_len: usize,
    /// Where each record's key started, to report a repeated path.
    key_offsets: Vec<usize>,
}

/// Decodes an LwM2M-CBOR payload answering `path`, appending its records to `out`.
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
    let start_len = out.len();
    let mut decoder = Decoder {
        reader: Reader::new(bytes),
        request: *path,
        registry,
        options,
        out,
        start_len,
        key_offsets: Vec::new(),
    };
    decoder.map(Path::ROOT, 0)?;
    if !decoder.reader.at_end() {
        return Err(decoder.reader.error(Kind::TrailingBytes));
    }
    decoder.check_paths()
}

impl<'a> Decoder<'a, '_, '_> {
    fn map(&mut self, prefix: Path, nesting: usize) -> Result<(), DecodeError> {
        if nesting > self.options.max_depth {
            return Err(self.reader.error(Kind::TooDeep { limit: self.options.max_depth }));
        }
        if !matches!(self.reader.datatype()?, Type::Map | Type::MapIndef) {
            return Err(self.reader.error(Kind::InvalidField("LwM2M-CBOR node (expected a map)")));
        }
        match self.reader.map()? {
            Some(count) => {
                for _ in 0..count {
                    self.entry(prefix, nesting)?;
                }
            }
            None => {
                while !self.reader.take_break()? {
                    self.entry(prefix, nesting)?;
                }
            }
        }
        Ok(())
    }

    fn entry(&mut self, prefix: Path, nesting: usize) -> Result<(), DecodeError> {
        let key_offset = self.reader.position();
        let path = self.key(prefix)?;
        match self.reader.datatype()? {
            Type::Map | Type::MapIndef => self.map(path, nesting + 1),
            _ => {
                if !path.starts_with(&self.request) {
                    return Err(DecodeError::new(key_offset, Kind::PathOutsideRequest { path, request: self.request }));
                }
                if !path.is_value_path() {
                    return Err(DecodeError::new(key_offset, Kind::NotAValuePath(path)));
                }
                if self.out.len() - self.start_len >= self.options.max_records {
                    let limit = self.options.max_records;
                    return Err(DecodeError::new(key_offset, Kind::TooManyRecords { limit }));
                }
                let value_offset = self.reader.position();
                let wire = self.reader.leaf()?;
                let value =
                    wire.typed(self.registry.data_type(&path)).map_err(|kind| DecodeError::new(value_offset, kind))?;
                self.out.push(Record::new(path, value));
                self.key_offsets.push(key_offset);
                Ok(())
            }
        }
    }

    /// Refuses a path given twice, or a resource given both whole and by
    /// instance (`{[5,0,3]: 1, [5,0,3]: 2}`): like TLV's duplicate ids, the
    /// payload does not say which value holds.
    fn check_paths(&self) -> Result<(), DecodeError> {
        let records = &self.out[self.start_len..];
        if records.windows(2).all(|w| w[0].path < w[1].path && !w[1].path.starts_with(&w[0].path)) {
            return Ok(());
        }
        let mut order: Vec<usize> = (0..records.len()).collect();
        order.sort_by_key(|&i| (records[i].path, self.key_offsets[i]));
        for pair in order.windows(2) {
            let (first, second) = (&records[pair[0]], &records[pair[1]]);
            if second.path.starts_with(&first.path) {
                let offset = self.key_offsets[pair[0]].max(self.key_offsets[pair[1]]);
                return Err(DecodeError::new(offset, Kind::ConflictingPaths(second.path)));
            }
        }
        Ok(())
    }

    /// Reads a key (an id or an array of ids) and appends it to `prefix`.
    fn key(&mut self, prefix: Path) -> Result<Path, DecodeError> {
        let offset = self.reader.position();
        match self.reader.datatype()? {
            Type::Array | Type::ArrayIndef => {
                let mut path = prefix;
                match self.reader.array()? {
                    Some(count) => {
                        for _ in 0..count {
                            path = self.append_id(path, offset)?;
                        }
                    }
                    None => {
                        while !self.reader.take_break()? {
                            path = self.append_id(path, offset)?;
                        }
                    }
                }
                Ok(path)
            }
            _ => self.append_id(prefix, offset),
        }
    }

    fn append_id(&mut self, path: Path, key_offset: usize) -> Result<Path, DecodeError> {
        let at = self.reader.position();
        if !matches!(self.reader.datatype()?, Type::Unsigned) {
            return Err(DecodeError::new(at, Kind::InvalidField("LwM2M-CBOR key (expected an id or an array of ids)")));
        }
        let id = self.reader.u64()?;
        if id > u64::from(MAX_ID) {
            return Err(DecodeError::new(at, Kind::InvalidPath(PathError::IdOutOfRange { offset: at })));
        }
        path.child(id as u16).ok_or(DecodeError::new(key_offset, Kind::InvalidPath(PathError::TooDeep { offset: at })))
    }
}

/// Encodes `records` as an LwM2M-CBOR payload answering `path`.
///
/// # Errors
/// [`EncodeError`] when a record lies outside `path` or above resource level,
/// has a type the model does not give it, carries a time, or repeats a path.
pub fn encode<B: BufMut>(
    path: &Path,
    records: &[Record<'_>],
    registry: &Registry,
    buf: &mut B,
) -> Result<(), EncodeError> {
    let sorted = super::tree_records(ContentFormat::Lwm2mCbor, path, records, registry)?;
    if sorted.is_empty() {
        cbor_util::put_head(buf, MAJOR_MAP, 0);
        return Ok(());
    }
    let depth = path.depth();
    if depth == 0 {
        level(buf, &sorted, 0);
        return Ok(());
    }
    cbor_util::put_head(buf, MAJOR_MAP, 1);
    cbor_util::put_head(buf, MAJOR_ARRAY, depth as u64);
    for &id in path.segments() {
        cbor_util::put_head(buf, MAJOR_UNSIGNED, u64::from(id));
    }
    match sorted.as_slice() {
        [single] if single.path == *path => cbor_util::put_leaf(buf, &single.value),
        _ => level(buf, &sorted, depth),
    }
    Ok(())
}

/// One map level: records grouped by their segment at `depth`.
fn level<B: BufMut>(buf: &mut B, records: &[&Record<'_>], depth: usize) {
    let groups = records.chunk_by(|a, b| a.path.segments()[depth] == b.path.segments()[depth]);
    cbor_util::put_head(buf, MAJOR_MAP, groups.clone().count() as u64);
    for group in groups {
        cbor_util::put_head(buf, MAJOR_UNSIGNED, u64::from(group[0].path.segments()[depth]));
        match group {
            [single] if single.path.depth() == depth + 1 => cbor_util::put_leaf(buf, &single.value),
            _ => level(buf, group, depth + 1),
        }
    }
}
