//! Registration link lists (CoRE Link Format, RFC 6690) and bindings: the
//! parsers, the formatter, and the compact forms a server keeps for each of
//! its registrations ([`ObjectList`], [`Binding`]).

use alloc::boxed::Box;
use alloc::string::String;
use alloc::vec::Vec;
use core::fmt;

use super::ObjectVersion;

/// One object of a registration's link list: `</5>;ver=1.1,</5/0>`.
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct ObjectLinks {
    /// Object id.
    pub object_id: u16,
    /// The `ver` attribute, when given.
    pub version: Option<ObjectVersion>,
    /// Instance ids listed.
    pub instances: Vec<u16>,
}

/// A link list that does not parse.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("malformed registration link list at byte {offset}")]
pub struct LinkFormatError {
    /// Byte offset of the problem.
    pub offset: usize,
}

/// Parses a Register/Update payload (CoRE Link Format, RFC 6690) into objects.
/// The root link (`</>;rt="oma.lwm2m"`) and an alternate root path are skipped;
/// `ver` is taken from object links or, as some clients send it, instance links.
///
/// ```
/// use lwm2m_fota::model::{parse_object_links, ObjectVersion};
/// let objects = parse_object_links(r#"</>;rt="oma.lwm2m";ct=11543,</1/0>,</3>;ver=1.1,</3/0>,</5>;ver="1.2",</5/0>"#).unwrap();
/// assert_eq!(objects.len(), 3);
/// assert_eq!(objects[2].object_id, 5);
/// assert_eq!(objects[2].version, Some(ObjectVersion::V1_2));
/// assert_eq!(objects[2].instances, [0]);
/// ```
///
/// # Errors
/// [`LinkFormatError`] with the offset of a link that is not `<…>` or a path
/// that is not numeric.
pub fn parse_object_links(text: &str) -> Result<Vec<ObjectLinks>, LinkFormatError> {
    let mut objects = Vec::new();
    parse_links(text, &mut objects)?;
    Ok(objects)
}

/// Where the parsers put what they read: a `Vec` of [`ObjectLinks`] or an
/// [`ObjectList`].
trait LinkSink {
    /// Adds the link `</object>` or `</object/instance>` with its `ver`.
    fn add(&mut self, object: u16, instance: Option<u16>, version: Option<ObjectVersion>);
    /// Forgets what was added (the one-pass reader gave up half way).
    fn clear(&mut self);
}

/// Reads `text` into `sink`: the one-pass reader first, the general one for
/// what it declines.
fn parse_links(text: &str, sink: &mut impl LinkSink) -> Result<(), LinkFormatError> {
    if parse_plain_links(text, sink) {
        return Ok(());
    }
    sink.clear();
    parse_any_links(text, sink)
}

/// [`parse_object_links`] for any text.
fn parse_any_links(text: &str, objects: &mut impl LinkSink) -> Result<(), LinkFormatError> {
    // An alternate root path (`</lwm2m>;rt="oma.lwm2m"`) prefixes every object link.
    let mut root = "";
    let bytes = text.as_bytes();
    let mut pos = 0;
    while pos < bytes.len() {
        while pos < bytes.len() && matches!(bytes[pos], b' ' | b'\n' | b'\r' | b'\t' | b',') {
            pos += 1;
        }
        if pos >= bytes.len() {
            break;
        }
        if bytes[pos] != b'<' {
            return Err(LinkFormatError { offset: pos });
        }
        let close = text[pos..].find('>').ok_or(LinkFormatError { offset: pos })? + pos;
        let target = &text[pos + 1..close];
        // Attributes run to the next comma outside quotes.
        let mut end = close + 1;
        let mut quoted = false;
        while end < bytes.len() && (quoted || bytes[end] != b',') {
            if bytes[end] == b'"' {
                quoted = !quoted;
            }
            end += 1;
        }
        let attributes = &text[close + 1..end];
        let version = attributes.split(';').find_map(|a| {
            let value = a.trim().strip_prefix("ver=")?;
            value.trim_matches('"').parse::<ObjectVersion>().ok()
        });
        if attributes.contains("rt=\"oma.lwm2m\"") {
            root = target.trim_end_matches('/');
            pos = end;
            continue;
        }
        let target = target.strip_prefix(root).unwrap_or(target);
        // An object or object instance path: at most two numeric segments
        // (empty ones ignored); none is a link to skip.
        let mut ids = [0u16; 2];
        let mut count = 0;
        for segment in target.trim_matches('/').split('/').filter(|s| !s.is_empty()) {
            let Some(id) = segment.parse::<u16>().ok().filter(|_| count < ids.len()) else {
                return Err(LinkFormatError { offset: pos + 1 });
            };
            ids[count] = id;
            count += 1;
        }
        match ids[..count] {
            [] => {}
            [object] => objects.add(object, None, version),
            [object, instance] => objects.add(object, Some(instance), version),
            _ => return Err(LinkFormatError { offset: pos + 1 }),
        }
        pos = end;
    }
    Ok(())
}

impl LinkSink for Vec<ObjectLinks> {
    fn add(&mut self, object: u16, instance: Option<u16>, version: Option<ObjectVersion>) {
        add_link(self, object, instance, version);
    }

    fn clear(&mut self) {
        Vec::clear(self);
    }
}

/// Adds the link `</object>` or `</object/instance>` (with its `ver`) to `objects`.
fn add_link(objects: &mut Vec<ObjectLinks>, object: u16, instance: Option<u16>, version: Option<ObjectVersion>) {
    let Some(instance) = instance else {
        match objects.iter_mut().find(|o| o.object_id == object) {
            Some(existing) => existing.version = existing.version.or(version),
            None => objects.push(ObjectLinks { object_id: object, version, instances: Vec::new() }),
        }
        return;
    };
    let i = match objects.iter().position(|o| o.object_id == object) {
        Some(i) => i,
        None => {
            objects.push(ObjectLinks { object_id: object, version: None, instances: Vec::new() });
            objects.len() - 1
        }
    };
    let entry = &mut objects[i];
    entry.version = entry.version.or(version);
    if !entry.instances.contains(&instance) {
        entry.instances.push(instance);
    }
}

/// The link list as clients usually send it, read in one pass:
/// `</1/0>,</3/0>,</5>;ver=1.1,</5/0>` — links of one or two numeric
/// segments, each with at most a `ver` attribute of digits and dots,
/// separated by single commas, and nothing else. `None` for any other text,
/// which the general parser reads (for these it gives the same objects);
/// `false` then, with part of the text perhaps in `objects`.
fn parse_plain_links(text: &str, objects: &mut impl LinkSink) -> bool {
    plain_links(text, objects).is_some()
}

fn plain_links(text: &str, objects: &mut impl LinkSink) -> Option<()> {
    /// The decimal number at `pos` (at least one digit, at most `u16::MAX`)
    /// and where it ends.
    fn number(bytes: &[u8], mut pos: usize) -> Option<(u16, usize)> {
        let start = pos;
        let mut value = 0u32;
        while let Some(digit) = bytes.get(pos).filter(|b| b.is_ascii_digit()) {
            value = value * 10 + u32::from(digit - b'0');
            if value > u32::from(u16::MAX) {
                return None;
            }
            pos += 1;
        }
        (pos > start).then_some((value as u16, pos))
    }
    let bytes = text.as_bytes();
    let mut pos = 0;
    loop {
        if bytes.get(pos..pos + 2) != Some(b"</") {
            return None;
        }
        let (object, end) = number(bytes, pos + 2)?;
        pos = end;
        let mut instance = None;
        if bytes.get(pos) == Some(&b'/') {
            let (id, end) = number(bytes, pos + 1)?;
            instance = Some(id);
            pos = end;
        }
        if bytes.get(pos) != Some(&b'>') {
            return None;
        }
        pos += 1;
        let mut version = None;
        if bytes[pos..].starts_with(b";ver=") {
            let start = pos + 5;
            pos = start;
            while bytes.get(pos).is_some_and(|b| b.is_ascii_digit() || *b == b'.') {
                pos += 1;
            }
            version = text[start..pos].parse::<ObjectVersion>().ok();
        }
        objects.add(object, instance, version);
        match bytes.get(pos) {
            None => return Some(()),
            Some(b',') => pos += 1,
            Some(_) => return None,
        }
    }
}

/// Formats objects as a Register payload: `</1>;ver=1.1,</1/0>,</3/0>,…`.
pub fn format_object_links(objects: &[ObjectLinks]) -> String {
    let mut out = String::new();
    let _ = write_links(&mut out, objects.iter().map(ObjectLinks::entry));
    out
}

/// Writes objects in link format: `</1>;ver=1.1,</1/0>,</3/0>,…`.
fn write_links<'a, W: fmt::Write>(out: &mut W, objects: impl Iterator<Item = ObjectEntry<'a>>) -> fmt::Result {
    let mut first = true;
    let mut comma = |out: &mut W| if core::mem::take(&mut first) { Ok(()) } else { out.write_char(',') };
    for object in objects {
        if object.version.is_some() || object.instances.is_empty() {
            comma(out)?;
            write!(out, "</{}>", object.object_id)?;
            if let Some(version) = object.version {
                write!(out, ";ver={version}")?;
            }
        }
        for instance in object.instances {
            comma(out)?;
            write!(out, "</{}/{}>", object.object_id, instance)?;
        }
    }
    Ok(())
}

impl ObjectLinks {
    /// This object as an [`ObjectEntry`].
    pub fn entry(&self) -> ObjectEntry<'_> {
        ObjectEntry { object_id: self.object_id, version: self.version, instances: &self.instances }
    }
}

/// One object of an [`ObjectList`]: its id, its `ver`, its instances.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ObjectEntry<'a> {
    /// Object id.
    pub object_id: u16,
    /// The `ver` attribute, when given.
    pub version: Option<ObjectVersion>,
    /// Instance ids listed, in the order of the link list.
    pub instances: &'a [u16],
}

/// A registration's objects, compactly: one allocation of 16-bit words
/// however many objects and instances (a server keeps one per registered
/// device, a million of them). Per object, in link-list order: its id, a
/// flags word (bit 0: a `ver` is given; bit 1: 65,536 is added to the
/// instance count), the `ver` (major × 256 + minor), the instance count
/// modulo 65,536, then the instance ids.
///
/// ```
/// use lwm2m_fota::model::{ObjectList, ObjectVersion};
/// let objects = ObjectList::parse("</1/0>,</3/0>,</5>;ver=1.1,</5/0>").unwrap();
/// assert_eq!(objects.len(), 3);
/// let firmware = objects.get(5).unwrap();
/// assert_eq!((firmware.version, firmware.instances), (Some(ObjectVersion::V1_1), &[0u16][..]));
/// assert_eq!(objects.to_string(), "</1/0>,</3/0>,</5>;ver=1.1,</5/0>");
/// ```
#[derive(Clone, PartialEq, Eq, Default)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(into = "Vec<ObjectLinks>", from = "Vec<ObjectLinks>"))]
pub struct ObjectList {
    words: Box<[u16]>,
}

/// Words before an object's instances.
const HEADER: usize = 4;

/// An [`ObjectList`] being built: the same words in a growable vector.
struct ObjectListBuilder {
    words: Vec<u16>,
}

impl ObjectListBuilder {
    /// The header position of `object`, if it was added.
    fn find(&self, object: u16) -> Option<usize> {
        let mut at = 0;
        while at + HEADER <= self.words.len() {
            if self.words[at] == object {
                return Some(at);
            }
            at += HEADER + instance_count(&self.words[at..at + HEADER]);
        }
        None
    }

    fn push_object(&mut self, object: u16, version: Option<ObjectVersion>) -> usize {
        let at = self.words.len();
        let (flags, version) = match version {
            Some(v) => (1, u16::from(v.major) << 8 | u16::from(v.minor)),
            None => (0, 0),
        };
        self.words.extend_from_slice(&[object, flags, version, 0]);
        at
    }

    fn set_version_if_none(&mut self, at: usize, version: Option<ObjectVersion>) {
        if let Some(v) = version.filter(|_| self.words[at + 1] & 1 == 0) {
            self.words[at + 1] |= 1;
            self.words[at + 2] = u16::from(v.major) << 8 | u16::from(v.minor);
        }
    }
}

/// The instance count an object's header words say.
fn instance_count(header: &[u16]) -> usize {
    usize::from(header[3]) + if header[1] & 2 != 0 { 1 << 16 } else { 0 }
}

impl LinkSink for ObjectListBuilder {
    fn add(&mut self, object: u16, instance: Option<u16>, version: Option<ObjectVersion>) {
        let at = match self.find(object) {
            Some(at) => {
                self.set_version_if_none(at, version);
                at
            }
            None => self.push_object(object, version),
        };
        let Some(instance) = instance else { return };
        let count = instance_count(&self.words[at..at + HEADER]);
        let end = at + HEADER + count;
        if self.words[at + HEADER..end].contains(&instance) {
            return;
        }
        self.words.insert(end, instance);
        // At most 65,536 distinct ids: the count is below 2^17.
        let count = count + 1;
        self.words[at + 3] = count as u16;
        if count >> 16 != 0 {
            self.words[at + 1] |= 2;
        }
    }

    fn clear(&mut self) {
        self.words.clear();
    }
}

impl ObjectList {
    /// Parses a Register/Update payload, as [`parse_object_links`] does.
    ///
    /// # Errors
    /// [`LinkFormatError`], as [`parse_object_links`].
    pub fn parse(text: &str) -> Result<ObjectList, LinkFormatError> {
        // A link of n characters adds at most n − 1 words (`</1/0>`: a
        // header and an instance), so this is room enough for small lists.
        let mut builder = ObjectListBuilder { words: Vec::with_capacity(text.len().min(64)) };
        parse_links(text, &mut builder)?;
        Ok(ObjectList { words: builder.words.into_boxed_slice() })
    }

    /// The objects in link-list order.
    pub fn iter(&self) -> ObjectIter<'_> {
        ObjectIter { words: &self.words }
    }

    /// How many objects.
    pub fn len(&self) -> usize {
        self.iter().count()
    }

    /// True when there are none.
    pub fn is_empty(&self) -> bool {
        self.words.is_empty()
    }

    /// Object `object_id`, if listed.
    pub fn get(&self, object_id: u16) -> Option<ObjectEntry<'_>> {
        self.iter().find(|o| o.object_id == object_id)
    }

    /// The objects as [`ObjectLinks`].
    pub fn to_links(&self) -> Vec<ObjectLinks> {
        self.iter()
            .map(|o| ObjectLinks { object_id: o.object_id, version: o.version, instances: o.instances.to_vec() })
            .collect()
    }
}

impl From<&[ObjectLinks]> for ObjectList {
    /// The same objects; an instance listed twice is kept once, as the
    /// parsers do.
    fn from(links: &[ObjectLinks]) -> ObjectList {
        links.iter().map(ObjectLinks::entry).collect()
    }
}

impl<'a> FromIterator<ObjectEntry<'a>> for ObjectList {
    /// The objects, merged as the parsers merge links: an object given twice
    /// is one object (its first `ver` kept), an instance given twice is kept
    /// once.
    fn from_iter<I: IntoIterator<Item = ObjectEntry<'a>>>(objects: I) -> ObjectList {
        let objects = objects.into_iter();
        // Room for the usual list (one instance per object) at once, so that
        // a list of n such objects takes one allocation of its exact size.
        let room = objects.size_hint().0.saturating_mul(HEADER + 1).min(1 << 12);
        let mut builder = ObjectListBuilder { words: Vec::with_capacity(room) };
        for object in objects {
            let distinct = object.instances.len() < 2 || object.instances.windows(2).all(|w| w[0] < w[1]);
            if distinct && object.instances.len() < 1 << 16 && builder.find(object.object_id).is_none() {
                // A new object with distinct instances: its words at once.
                let at = builder.push_object(object.object_id, object.version);
                builder.words[at + 3] = object.instances.len() as u16;
                builder.words.extend_from_slice(object.instances);
                continue;
            }
            builder.add(object.object_id, None, object.version);
            for &instance in object.instances {
                builder.add(object.object_id, Some(instance), None);
            }
        }
        ObjectList { words: builder.words.into_boxed_slice() }
    }
}

impl From<Vec<ObjectLinks>> for ObjectList {
    fn from(links: Vec<ObjectLinks>) -> ObjectList {
        ObjectList::from(links.as_slice())
    }
}

impl From<ObjectList> for Vec<ObjectLinks> {
    fn from(list: ObjectList) -> Vec<ObjectLinks> {
        list.to_links()
    }
}

impl fmt::Debug for ObjectList {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.iter()).finish()
    }
}

impl fmt::Display for ObjectList {
    /// The link list: `</1>;ver=1.1,</1/0>,</3/0>,…`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write_links(f, self.iter())
    }
}

impl<'a> IntoIterator for &'a ObjectList {
    type Item = ObjectEntry<'a>;
    type IntoIter = ObjectIter<'a>;

    fn into_iter(self) -> ObjectIter<'a> {
        self.iter()
    }
}

/// The objects of an [`ObjectList`].
#[derive(Debug, Clone)]
pub struct ObjectIter<'a> {
    words: &'a [u16],
}

impl<'a> Iterator for ObjectIter<'a> {
    type Item = ObjectEntry<'a>;

    fn next(&mut self) -> Option<ObjectEntry<'a>> {
        let header = self.words.get(..HEADER)?;
        let end = HEADER + instance_count(header);
        // The words are only ever built by ObjectListBuilder; a short tail
        // cannot occur, and would end the iteration.
        let instances = self.words.get(HEADER..end)?;
        let version =
            (header[1] & 1 != 0).then(|| ObjectVersion { major: (header[2] >> 8) as u8, minor: header[2] as u8 });
        let entry = ObjectEntry { object_id: header[0], version, instances };
        self.words = &self.words[end..];
        Some(entry)
    }
}

/// The transports of a registration (`b=`): UDP, TCP, SMS, Non-IP, and
/// LwM2M 1.0's queue mode letter. Each at most once, and at least one
/// transport.
///
/// ```
/// use lwm2m_fota::model::Binding;
/// let binding = Binding::parse("UQ").unwrap();
/// assert!(binding.contains(Binding::UDP) && binding.contains(Binding::QUEUE));
/// assert_eq!(binding.to_string(), "UQ");
/// assert_eq!(Binding::parse("UU"), None);
/// assert_eq!(Binding::parse("Q"), None);
/// ```
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(into = "String", try_from = "String"))]
pub struct Binding(u8);

/// The letters of a binding, in the order it is written.
const BINDING_LETTERS: [(u8, char); 5] = [(1, 'U'), (2, 'T'), (4, 'S'), (8, 'N'), (16, 'Q')];

impl Binding {
    /// `U`: CoAP over UDP.
    pub const UDP: Binding = Binding(1);
    /// `T`: CoAP over TCP.
    pub const TCP: Binding = Binding(2);
    /// `S`: SMS.
    pub const SMS: Binding = Binding(4);
    /// `N`: Non-IP.
    pub const NON_IP: Binding = Binding(8);
    /// `Q`: queue mode, as LwM2M 1.0 wrote it in the binding (never alone).
    pub const QUEUE: Binding = Binding(16);

    /// The binding a `b=` value names: letters U, T, S, N, Q, each at most
    /// once, at least one of them a transport; `None` otherwise.
    pub fn parse(text: &str) -> Option<Binding> {
        let mut bits = 0u8;
        for letter in text.bytes() {
            let (bit, _) = BINDING_LETTERS.iter().find(|(_, l)| *l as u8 == letter)?;
            if bits & bit != 0 {
                return None;
            }
            bits |= bit;
        }
        (bits & 15 != 0).then_some(Binding(bits))
    }

    /// True when every letter of `other` is in this binding.
    pub const fn contains(self, other: Binding) -> bool {
        self.0 & other.0 == other.0
    }

    /// This binding with `other`'s letters added.
    #[must_use]
    pub const fn with(self, other: Binding) -> Binding {
        Binding(self.0 | other.0)
    }

    /// This binding without `other`'s letters (a binding of no transport
    /// is possible this way: it writes as the letters left).
    #[must_use]
    pub const fn without(self, other: Binding) -> Binding {
        Binding(self.0 & !other.0)
    }
}

impl Default for Binding {
    /// `U`, the default of a Register without `b`.
    fn default() -> Binding {
        Binding::UDP
    }
}

impl fmt::Display for Binding {
    /// The letters, in the order U, T, S, N, Q.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (bit, letter) in BINDING_LETTERS {
            if self.0 & bit != 0 {
                fmt::Write::write_char(f, letter)?;
            }
        }
        Ok(())
    }
}

impl fmt::Debug for Binding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Binding({self})")
    }
}

/// A `b=` value that is not a binding.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("binding must be letters of U, T, S, N and Q, each at most once, with a transport")]
pub struct BindingError;

impl core::str::FromStr for Binding {
    type Err = BindingError;

    fn from_str(text: &str) -> Result<Binding, BindingError> {
        Binding::parse(text).ok_or(BindingError)
    }
}

impl TryFrom<String> for Binding {
    type Error = BindingError;

    fn try_from(text: String) -> Result<Binding, BindingError> {
        text.parse()
    }
}

impl From<Binding> for String {
    fn from(binding: Binding) -> String {
        alloc::format!("{binding}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::string::ToString;
    use alloc::vec;

    fn plain(text: &str) -> Option<Vec<ObjectLinks>> {
        let mut objects = Vec::new();
        parse_plain_links(text, &mut objects).then_some(objects)
    }

    fn general(text: &str) -> Result<Vec<ObjectLinks>, LinkFormatError> {
        let mut objects = Vec::new();
        parse_any_links(text, &mut objects).map(|()| objects)
    }

    #[test]
    fn link_lists() {
        let objects = parse_object_links("</1>;ver=1.1,</1/0>,</3/0>,</5/0>;ver=1.2").unwrap();
        assert_eq!(
            objects,
            vec![
                ObjectLinks { object_id: 1, version: Some(ObjectVersion::V1_1), instances: vec![0] },
                ObjectLinks { object_id: 3, version: None, instances: vec![0] },
                ObjectLinks { object_id: 5, version: Some(ObjectVersion::V1_2), instances: vec![0] },
            ]
        );
        let text = format_object_links(&objects);
        assert_eq!(text, "</1>;ver=1.1,</1/0>,</3/0>,</5>;ver=1.2,</5/0>");
        assert_eq!(parse_object_links(&text).unwrap(), objects);
        let alternate = parse_object_links("</lwm2m>;rt=\"oma.lwm2m\",</lwm2m/3/0>").unwrap();
        assert_eq!(alternate, vec![ObjectLinks { object_id: 3, version: None, instances: vec![0] }]);
        assert_eq!(parse_object_links("3/0").unwrap_err().offset, 0);
        assert_eq!(parse_object_links("</a/b>").unwrap_err().offset, 1);
        assert!(parse_object_links("").unwrap().is_empty());
        // What clients send is read in one pass.
        let plain = plain("</1/0>,</3/0>,</5>;ver=1.1,</5/0>").unwrap();
        assert_eq!(plain, general("</1/0>,</3/0>,</5>;ver=1.1,</5/0>").unwrap());
        assert_eq!(plain[2].version, Some(ObjectVersion::V1_1));
    }

    proptest::proptest! {
        /// The one-pass reader of plain link lists gives what the general
        /// parser gives, on lists near its grammar's edges (and it declines
        /// what it does not read).
        #[test]
        fn plain_links_read_as_the_general_parser_reads_them(
            links in proptest::collection::vec(
                (
                    proptest::sample::select(vec!["0", "3", "5", "007", "65535", "65536", "+5", "", "a"]),
                    proptest::option::of(proptest::sample::select(vec!["0", "1", "2", "99999", ""])),
                    proptest::option::of(proptest::sample::select(vec!["1.0", "1.1", "1.2", "2", "1.", "1.1.1", "\"1.1\""])),
                ),
                0..6,
            ),
            separator in proptest::sample::select(vec![",", ",,", ", ", ""]),
            trailer in proptest::sample::select(vec!["", ",", ";rt=\"x\"", ">"]),
        ) {
            let mut text = String::new();
            for (i, (object, instance, version)) in links.iter().enumerate() {
                if i > 0 {
                    text.push_str(separator);
                }
                text.push_str("</");
                text.push_str(object);
                if let Some(instance) = instance {
                    text.push('/');
                    text.push_str(instance);
                }
                text.push('>');
                if let Some(version) = version {
                    text.push_str(";ver=");
                    text.push_str(version);
                }
            }
            text.push_str(trailer);
            let general = general(&text);
            if let Some(plain) = plain(&text) {
                proptest::prop_assert_eq!(Ok(plain), general.clone(), "{}", text);
            }
            proptest::prop_assert_eq!(parse_object_links(&text), general.clone(), "{}", text);
            // The compact list holds the same objects, and writes them back
            // as the formatter does.
            let compact = ObjectList::parse(&text).map(|list| list.to_links());
            proptest::prop_assert_eq!(compact, general.clone(), "{}", text);
            if let Ok(objects) = general {
                let list = ObjectList::from(objects.as_slice());
                proptest::prop_assert_eq!(list.to_string(), format_object_links(&objects));
                proptest::prop_assert_eq!(list.len(), objects.len());
            }
        }
    }

    #[test]
    fn object_lists() {
        let list = ObjectList::parse("</1/0>,</3>;ver=1.1,</3/0>,</5/1>,</5/0>,</5/1>,</9>").unwrap();
        let objects: Vec<_> = list.iter().map(|o| (o.object_id, o.version, o.instances.to_vec())).collect();
        assert_eq!(
            objects,
            vec![(1, None, vec![0]), (3, Some(ObjectVersion::V1_1), vec![0]), (5, None, vec![1, 0]), (9, None, vec![])]
        );
        assert_eq!(list.get(9).map(|o| o.instances.len()), Some(0));
        assert_eq!(list.get(4), None);
        assert!(ObjectList::parse("").unwrap().is_empty());
        assert_eq!(ObjectList::parse("</x>").unwrap_err().offset, 1);
        // An instance link's `ver` goes to its object, once.
        let list = ObjectList::parse("</5/0>;ver=1.2,</5>;ver=1.1").unwrap();
        assert_eq!(list.get(5).unwrap().version, Some(ObjectVersion::V1_2));
        assert_eq!(list.to_string(), "</5>;ver=1.2,</5/0>");
        // Version 255.255 and an object of every instance id fit.
        let mut all = ObjectLinks {
            object_id: 7,
            version: Some(ObjectVersion { major: 255, minor: 255 }),
            instances: (0..=u16::MAX).collect(),
        };
        let list = ObjectList::from(core::slice::from_ref(&all));
        assert_eq!(list.get(7).unwrap().instances.len(), 65_536);
        assert_eq!(list.to_links(), vec![all.clone()]);
        all.instances.push(3);
        assert_eq!(ObjectList::from(vec![all]).get(7).unwrap().instances.len(), 65_536);
    }

    #[test]
    fn bindings() {
        for text in ["U", "T", "S", "N", "UQ", "UTSNQ", "QU", "SU"] {
            let binding = Binding::parse(text).unwrap();
            assert_eq!(binding.to_string().len(), text.len(), "{text}");
            assert_eq!(Binding::parse(&binding.to_string()), Some(binding));
        }
        assert_eq!(Binding::parse("QU").unwrap().to_string(), "UQ");
        for text in ["", "Q", "UU", "u", "UX", "U Q"] {
            assert_eq!(Binding::parse(text), None, "{text}");
        }
        let uq = Binding::UDP.with(Binding::QUEUE);
        assert!(uq.contains(Binding::QUEUE) && !uq.contains(Binding::TCP));
        assert_eq!(uq.without(Binding::QUEUE), Binding::UDP);
        assert_eq!(Binding::default(), Binding::UDP);
        assert_eq!("T".parse::<Binding>(), Ok(Binding::TCP));
    }
}
