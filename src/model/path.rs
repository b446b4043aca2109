//! LwM2M paths: `/`, `/O`, `/O/I`, `/O/I/R` and `/O/I/R/RI`.

use core::fmt;
use core::str::FromStr;

/// The largest identifier LwM2M allows; 65535 is reserved as "no ID" (`MAX_ID`).
pub const MAX_ID: u16 = 65534;

/// A path into a device's object tree: the root `/`, an object `/O`, an object
/// instance `/O/I`, a resource `/O/I/R` or a resource instance `/O/I/R/RI`.
///
/// Paths are small `Copy` values ordered segment by segment, numerically, with a
/// path before everything below it: `/3/0/2` < `/3/0/6` < `/3/0/6/0` < `/3/0/13`.
///
/// ```
/// use lwm2m_fota::model::Path;
/// let path: Path = "/5/0/3".parse().unwrap();
/// assert_eq!(path.resource_id(), Some(3));
/// assert_eq!(path.to_string(), "/5/0/3");
/// assert!(path.starts_with(&Path::instance(5, 0)));
/// ```
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Path {
    // Unused trailing segments are always zero, so the derived (segments, length)
    // order is the numeric segment-by-segment order with parents first.
    ids: [u16; 4],
    len: u8,
}

/// Why a text could not be parsed as a [`Path`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PathError {
    /// The text does not start with `/`.
    #[error("path must start with '/' (at byte {offset})")]
    MissingLeadingSlash {
        /// Byte offset of the offending character.
        offset: usize,
    },
    /// A segment is empty (`//`, or a trailing `/` after a segment).
    #[error("empty path segment at byte {offset}")]
    EmptySegment {
        /// Byte offset where the segment should start.
        offset: usize,
    },
    /// A segment holds something other than decimal digits.
    #[error("path segment is not a decimal number (at byte {offset})")]
    NotANumber {
        /// Byte offset of the offending character.
        offset: usize,
    },
    /// A segment is larger than 65534 ([`MAX_ID`]).
    #[error("path segment exceeds the largest LwM2M id 65534 (at byte {offset})")]
    IdOutOfRange {
        /// Byte offset where the segment starts.
        offset: usize,
    },
    /// More than four segments.
    #[error("path has more than four segments (at byte {offset})")]
    TooDeep {
        /// Byte offset of the fifth segment.
        offset: usize,
    },
}

impl PathError {
    /// Byte offset in the parsed text where the problem was found.
    pub fn offset(&self) -> usize {
        match *self {
            PathError::MissingLeadingSlash { offset }
            | PathError::EmptySegment { offset }
            | PathError::NotANumber { offset }
            | PathError::IdOutOfRange { offset }
            | PathError::TooDeep { offset } => offset,
        }
    }
}

impl Path {
    /// The root path `/`, target of composite operations and LwM2M Send.
    pub const ROOT: Path = Path { ids: [0; 4], len: 0 };

    /// The root path `/`.
    pub const fn root() -> Path {
        Path::ROOT
    }

    /// An object path `/O`.
    pub const fn object(object: u16) -> Path {
        Path { ids: [object, 0, 0, 0], len: 1 }
    }

    /// An object instance path `/O/I`.
    pub const fn instance(object: u16, instance: u16) -> Path {
        Path { ids: [object, instance, 0, 0], len: 2 }
    }

    /// A resource path `/O/I/R`.
    pub const fn resource(object: u16, instance: u16, resource: u16) -> Path {
        Path { ids: [object, instance, resource, 0], len: 3 }
    }

    /// A resource instance path `/O/I/R/RI` (LwM2M 1.1 and later).
    pub const fn resource_instance(object: u16, instance: u16, resource: u16, resource_instance: u16) -> Path {
        Path { ids: [object, instance, resource, resource_instance], len: 4 }
    }

    /// Builds a path from up to four segments; `None` if there are more.
    pub fn from_segments(segments: &[u16]) -> Option<Path> {
        if segments.len() > 4 {
            return None;
        }
        let mut ids = [0u16; 4];
        ids[..segments.len()].copy_from_slice(segments);
        Some(Path { ids, len: segments.len() as u8 })
    }

    /// The segments, outermost first (empty for the root).
    pub fn segments(&self) -> &[u16] {
        &self.ids[..self.len as usize]
    }

    /// Number of segments: 0 for `/`, 4 for a resource instance.
    pub const fn depth(&self) -> usize {
        self.len as usize
    }

    /// True for the root path `/`.
    pub const fn is_root(&self) -> bool {
        self.len == 0
    }

    /// The object id, if the path has one.
    pub const fn object_id(&self) -> Option<u16> {
        if self.len >= 1 { Some(self.ids[0]) } else { None }
    }

    /// The object instance id, if the path has one.
    pub const fn instance_id(&self) -> Option<u16> {
        if self.len >= 2 { Some(self.ids[1]) } else { None }
    }

    /// The resource id, if the path has one.
    pub const fn resource_id(&self) -> Option<u16> {
        if self.len >= 3 { Some(self.ids[2]) } else { None }
    }

    /// The resource instance id, if the path has one.
    pub const fn resource_instance_id(&self) -> Option<u16> {
        if self.len >= 4 { Some(self.ids[3]) } else { None }
    }

    /// True when the path names a resource or a resource instance: the paths that
    /// carry values.
    pub const fn is_value_path(&self) -> bool {
        self.len >= 3
    }

    /// The path one segment deeper, or `None` below a resource instance.
    pub fn child(&self, id: u16) -> Option<Path> {
        if self.len >= 4 {
            return None;
        }
        let mut ids = self.ids;
        ids[self.len as usize] = id;
        Some(Path { ids, len: self.len + 1 })
    }

    /// The path one segment shorter; `None` for the root.
    pub fn parent(&self) -> Option<Path> {
        if self.len == 0 {
            return None;
        }
        let mut ids = self.ids;
        ids[self.len as usize - 1] = 0;
        Some(Path { ids, len: self.len - 1 })
    }

    /// The path cut to its first `depth` segments (itself if it is shorter).
    pub fn truncate(&self, depth: usize) -> Path {
        let len = depth.min(self.len as usize);
        let mut ids = [0u16; 4];
        ids[..len].copy_from_slice(&self.ids[..len]);
        Path { ids, len: len as u8 }
    }

    /// True when `self` equals `prefix` or lies below it.
    pub fn starts_with(&self, prefix: &Path) -> bool {
        prefix.len <= self.len && (0..prefix.len as usize).all(|i| self.ids[i] == prefix.ids[i])
    }

    /// Parses a path given as the concatenation of two texts without joining them
    /// first, as SenML does with base name and name. Offsets in errors count
    /// across both parts.
    pub fn parse_concat(first: &str, second: &str) -> Result<Path, PathError> {
        let mut parser = PathParser::default();
        parser.feed(first.as_bytes())?;
        parser.feed(second.as_bytes())?;
        parser.finish()
    }
}

/// An incremental path parser: feed it pieces (a SenML base name once, then
/// each record's name on a copy) and finish. Error offsets count across pieces.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct PathParser {
    ids: [u16; 4],
    len: u8,
    started: bool,
    /// A segment is being read: its value so far and where it starts.
    open: bool,
    value: u32,
    start: usize,
    consumed: usize,
}

impl PathParser {
    /// Feeds the next piece of text.
    #[inline]
    pub(crate) fn feed(&mut self, bytes: &[u8]) -> Result<(), PathError> {
        let base = self.consumed;
        self.consumed += bytes.len();
        let mut rest = bytes;
        let mut offset = base;
        if !self.started {
            match rest.split_first() {
                None => return Ok(()),
                Some((b'/', tail)) => {
                    self.started = true;
                    rest = tail;
                    offset += 1;
                }
                Some(_) => return Err(PathError::MissingLeadingSlash { offset }),
            }
        }
        for &byte in rest {
            match byte {
                b'0'..=b'9' => {
                    if !self.open {
                        if self.len >= 4 {
                            return Err(PathError::TooDeep { offset });
                        }
                        self.open = true;
                        self.value = 0;
                        self.start = offset;
                    }
                    self.value = self.value * 10 + u32::from(byte - b'0');
                    if self.value > u32::from(MAX_ID) {
                        return Err(PathError::IdOutOfRange { offset: self.start });
                    }
                }
                b'/' => self.close(offset)?,
                _ => return Err(PathError::NotANumber { offset }),
            }
            offset += 1;
        }
        Ok(())
    }

    #[inline]
    fn close(&mut self, offset: usize) -> Result<(), PathError> {
        if !self.open {
            return Err(PathError::EmptySegment { offset });
        }
        self.open = false;
        self.ids[usize::from(self.len)] = self.value as u16;
        self.len += 1;
        Ok(())
    }

    /// The path fed so far.
    #[inline]
    pub(crate) fn finish(mut self) -> Result<Path, PathError> {
        if !self.started {
            return Err(PathError::MissingLeadingSlash { offset: 0 });
        }
        if self.open {
            self.close(self.consumed)?;
        } else if self.len > 0 {
            // "/3/" : a trailing slash after a segment leaves an empty segment.
            return Err(PathError::EmptySegment { offset: self.consumed });
        }
        Ok(Path { ids: self.ids, len: self.len })
    }
}

impl FromStr for Path {
    type Err = PathError;

    fn from_str(text: &str) -> Result<Path, PathError> {
        Path::parse_concat(text, "")
    }
}

impl fmt::Display for Path {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.len == 0 {
            return f.write_str("/");
        }
        for id in self.segments() {
            write!(f, "/{id}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for Path {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Path({self})")
    }
}

#[cfg(feature = "serde")]
impl serde::Serialize for Path {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

#[cfg(feature = "serde")]
impl<'de> serde::Deserialize<'de> for Path {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Path, D::Error> {
        struct Visitor;
        impl serde::de::Visitor<'_> for Visitor {
            type Value = Path;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an LwM2M path such as \"/5/0/3\"")
            }
            fn visit_str<E: serde::de::Error>(self, text: &str) -> Result<Path, E> {
                text.parse().map_err(E::custom)
            }
        }
        deserializer.deserialize_str(Visitor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::string::ToString;

    #[test]
    fn parses_every_depth() {
        assert_eq!("/".parse::<Path>().unwrap(), Path::ROOT);
        assert_eq!("/3".parse::<Path>().unwrap(), Path::object(3));
        assert_eq!("/3/0".parse::<Path>().unwrap(), Path::instance(3, 0));
        assert_eq!("/5/0/3".parse::<Path>().unwrap(), Path::resource(5, 0, 3));
        assert_eq!("/3/0/6/1".parse::<Path>().unwrap(), Path::resource_instance(3, 0, 6, 1));
        assert_eq!("/65534".parse::<Path>().unwrap(), Path::object(65534));
    }

    #[test]
    fn formats_every_depth() {
        for text in ["/", "/3", "/3/0", "/5/0/3", "/3/0/6/1", "/65534/65534/65534/65534"] {
            assert_eq!(text.parse::<Path>().unwrap().to_string(), text);
        }
    }

    #[test]
    fn rejects_bad_text_with_offsets() {
        assert_eq!("".parse::<Path>(), Err(PathError::MissingLeadingSlash { offset: 0 }));
        assert_eq!("3/0".parse::<Path>(), Err(PathError::MissingLeadingSlash { offset: 0 }));
        assert_eq!("//3".parse::<Path>(), Err(PathError::EmptySegment { offset: 1 }));
        assert_eq!("/3/".parse::<Path>(), Err(PathError::EmptySegment { offset: 3 }));
        assert_eq!("/3/x".parse::<Path>(), Err(PathError::NotANumber { offset: 3 }));
        assert_eq!("/3/-1".parse::<Path>(), Err(PathError::NotANumber { offset: 3 }));
        assert_eq!("/65535".parse::<Path>(), Err(PathError::IdOutOfRange { offset: 1 }));
        assert_eq!("/1/999999999999".parse::<Path>(), Err(PathError::IdOutOfRange { offset: 3 }));
        assert_eq!("/1/2/3/4/5".parse::<Path>(), Err(PathError::TooDeep { offset: 9 }));
    }

    #[test]
    fn concatenation_matches_joined_text() {
        assert_eq!(Path::parse_concat("/3/0/", "6/1").unwrap(), Path::resource_instance(3, 0, 6, 1));
        assert_eq!(Path::parse_concat("/5/0", "/3").unwrap(), Path::resource(5, 0, 3));
        assert_eq!(Path::parse_concat("", "/5/0/3").unwrap(), Path::resource(5, 0, 3));
        assert_eq!(Path::parse_concat("/5/0/1", "").unwrap(), Path::resource(5, 0, 1));
        assert_eq!(Path::parse_concat("/3/0", "x"), Err(PathError::NotANumber { offset: 4 }));
    }

    #[test]
    fn orders_numerically_with_parents_first() {
        let mut paths: alloc::vec::Vec<Path> = ["/3/0/13", "/3/0/6/0", "/3/0", "/3/0/2", "/3/0/6", "/1/0/1", "/"]
            .iter()
            .map(|t| t.parse().unwrap())
            .collect();
        paths.sort();
        let texts: alloc::vec::Vec<_> = paths.iter().map(|p| p.to_string()).collect();
        assert_eq!(texts, ["/", "/1/0/1", "/3/0", "/3/0/2", "/3/0/6", "/3/0/6/0", "/3/0/13"]);
    }

    #[test]
    fn navigation() {
        let p = Path::resource(5, 0, 8);
        assert_eq!(p.child(1), Some(Path::resource_instance(5, 0, 8, 1)));
        assert_eq!(p.child(1).unwrap().child(0), None);
        assert_eq!(p.parent(), Some(Path::instance(5, 0)));
        assert_eq!(Path::ROOT.parent(), None);
        assert_eq!(p.truncate(1), Path::object(5));
        assert!(p.starts_with(&Path::ROOT));
        assert!(!Path::instance(5, 1).starts_with(&Path::instance(5, 0)));
        assert_eq!(Path::from_segments(&[1, 2, 3, 4, 5]), None);
        assert_eq!(Path::from_segments(&[5, 0]), Some(Path::instance(5, 0)));
    }
}
