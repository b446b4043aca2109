//! Values of every LwM2M data type, and the records that pair them with paths.

use alloc::borrow::Cow;
use core::fmt;
use core::str::FromStr;

use super::Path;

/// An LwM2M data type, as an object definition declares it for a resource.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(rename_all = "lowercase"))]
#[non_exhaustive]
pub enum DataType {
    /// Signed 64-bit integer.
    Integer,
    /// Unsigned 64-bit integer (LwM2M 1.1 and later).
    UnsignedInteger,
    /// IEEE-754 floating point (binary32 or binary64 on the wire).
    Float,
    /// Boolean.
    Boolean,
    /// UTF-8 string.
    String,
    /// Raw bytes.
    Opaque,
    /// Unix time in seconds, signed.
    Time,
    /// Object link: an object id and an object instance id.
    Objlnk,
    /// A CoRE Link Format string (LwM2M 1.1 and later).
    Corelnk,
    /// No value: an executable resource.
    None,
}

impl DataType {
    /// The lowercase name the `inspect` example prints for values of this type.
    pub const fn name(self) -> &'static str {
        match self {
            DataType::Integer => "integer",
            DataType::UnsignedInteger => "unsigned",
            DataType::Float => "float",
            DataType::Boolean => "boolean",
            DataType::String => "string",
            DataType::Opaque => "opaque",
            DataType::Time => "time",
            DataType::Objlnk => "objlnk",
            DataType::Corelnk => "corelnk",
            DataType::None => "none",
        }
    }
}

/// An object link (`Objlnk`): object id and object instance id. The null link is
/// `65535:65535`.
///
/// ```
/// use lwm2m_fota::model::ObjectLink;
/// let link: ObjectLink = "66:1".parse().unwrap();
/// assert_eq!(link, ObjectLink { object_id: 66, instance_id: 1 });
/// assert_eq!(ObjectLink::NULL.to_string(), "65535:65535");
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct ObjectLink {
    /// The linked object's id.
    pub object_id: u16,
    /// The linked object instance's id.
    pub instance_id: u16,
}

impl ObjectLink {
    /// The null link, `65535:65535`.
    pub const NULL: ObjectLink = ObjectLink { object_id: u16::MAX, instance_id: u16::MAX };

    /// True for the null link.
    pub fn is_null(&self) -> bool {
        *self == ObjectLink::NULL
    }
}

/// An object link text that is not `<object id>:<instance id>` in decimal.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("object link must be \"<object id>:<instance id>\" with decimal ids up to 65535")]
pub struct ObjectLinkError;

impl FromStr for ObjectLink {
    type Err = ObjectLinkError;

    fn from_str(text: &str) -> Result<ObjectLink, ObjectLinkError> {
        let (object, instance) = text.split_once(':').ok_or(ObjectLinkError)?;
        Ok(ObjectLink { object_id: parse_u16(object)?, instance_id: parse_u16(instance)? })
    }
}

fn parse_u16(text: &str) -> Result<u16, ObjectLinkError> {
    // `u16::from_str` accepts a leading '+'; the link format does not.
    if text.is_empty() || text.len() > 5 || !text.bytes().all(|b| b.is_ascii_digit()) {
        return Err(ObjectLinkError);
    }
    text.parse().map_err(|_| ObjectLinkError)
}

impl fmt::Display for ObjectLink {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.object_id, self.instance_id)
    }
}

/// A value of one LwM2M data type. Strings and opaque bytes borrow from the payload
/// they were decoded from where they can; [`Value::into_owned`] detaches them.
#[derive(Debug, Clone, PartialEq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[non_exhaustive]
pub enum Value<'a> {
    /// Signed integer.
    Integer(i64),
    /// Unsigned integer.
    UnsignedInteger(u64),
    /// Floating point number.
    Float(f64),
    /// Boolean.
    Boolean(bool),
    /// UTF-8 text.
    String(#[cfg_attr(feature = "serde", serde(borrow))] Cow<'a, str>),
    /// Raw bytes.
    Opaque(#[cfg_attr(feature = "serde", serde(borrow))] Cow<'a, [u8]>),
    /// Unix time in seconds.
    Time(i64),
    /// Object link.
    Objlnk(ObjectLink),
    /// CoRE Link Format text.
    Corelnk(#[cfg_attr(feature = "serde", serde(borrow))] Cow<'a, str>),
}

impl<'a> Value<'a> {
    /// The data type this value belongs to.
    pub fn data_type(&self) -> DataType {
        match self {
            Value::Integer(_) => DataType::Integer,
            Value::UnsignedInteger(_) => DataType::UnsignedInteger,
            Value::Float(_) => DataType::Float,
            Value::Boolean(_) => DataType::Boolean,
            Value::String(_) => DataType::String,
            Value::Opaque(_) => DataType::Opaque,
            Value::Time(_) => DataType::Time,
            Value::Objlnk(_) => DataType::Objlnk,
            Value::Corelnk(_) => DataType::Corelnk,
        }
    }

    /// A copy that owns its strings and bytes.
    pub fn into_owned(self) -> Value<'static> {
        match self {
            Value::Integer(v) => Value::Integer(v),
            Value::UnsignedInteger(v) => Value::UnsignedInteger(v),
            Value::Float(v) => Value::Float(v),
            Value::Boolean(v) => Value::Boolean(v),
            Value::String(v) => Value::String(Cow::Owned(v.into_owned())),
            Value::Opaque(v) => Value::Opaque(Cow::Owned(v.into_owned())),
            Value::Time(v) => Value::Time(v),
            Value::Objlnk(v) => Value::Objlnk(v),
            Value::Corelnk(v) => Value::Corelnk(Cow::Owned(v.into_owned())),
        }
    }

    /// A string value borrowing `text`.
    pub fn string(text: &'a str) -> Value<'a> {
        Value::String(Cow::Borrowed(text))
    }

    /// An opaque value borrowing `bytes`.
    pub fn opaque(bytes: &'a [u8]) -> Value<'a> {
        Value::Opaque(Cow::Borrowed(bytes))
    }

    /// The value as a signed integer, if it is an integer, a time, or an unsigned
    /// integer that fits.
    pub fn as_i64(&self) -> Option<i64> {
        match *self {
            Value::Integer(v) | Value::Time(v) => Some(v),
            Value::UnsignedInteger(v) => i64::try_from(v).ok(),
            _ => None,
        }
    }

    /// The value as text, if it is a string or a CoRE link.
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Value::String(v) | Value::Corelnk(v) => Some(v),
            _ => None,
        }
    }
}

/// One resource or resource-instance value at a path, with the time a SenML
/// record carried (base time plus time, in seconds, as the payload gave it: values
/// below 2^28 are relative to "now" per RFC 8428, larger ones are absolute).
#[derive(Debug, Clone, PartialEq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct Record<'a> {
    /// Where the value lives: a resource `/O/I/R` or resource instance `/O/I/R/RI`.
    pub path: Path,
    /// The value.
    #[cfg_attr(feature = "serde", serde(borrow))]
    pub value: Value<'a>,
    /// Resolved SenML time (`bt` + `t`) in seconds, when the record carried one.
    pub time: Option<f64>,
}

impl<'a> Record<'a> {
    /// A record without a time.
    pub fn new(path: Path, value: Value<'a>) -> Record<'a> {
        Record { path, value, time: None }
    }

    /// A copy that owns its strings and bytes.
    pub fn into_owned(self) -> Record<'static> {
        Record { path: self.path, value: self.value.into_owned(), time: self.time }
    }
}

/// RFC 8428: SenML times below 2^28 seconds are relative to the present.
pub const SENML_RELATIVE_TIME_LIMIT: f64 = 268_435_456.0;

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::string::ToString;

    #[test]
    fn object_link_text() {
        assert_eq!("3:0".parse::<ObjectLink>().unwrap(), ObjectLink { object_id: 3, instance_id: 0 });
        assert_eq!("65535:65535".parse::<ObjectLink>().unwrap(), ObjectLink::NULL);
        for bad in ["", "3", "3:", ":0", "+3:0", "3:0:0", "65536:0", "a:b", "3 :0"] {
            assert_eq!(bad.parse::<ObjectLink>(), Err(ObjectLinkError), "{bad}");
        }
        assert_eq!(ObjectLink { object_id: 67, instance_id: 0 }.to_string(), "67:0");
        assert!(ObjectLink::NULL.is_null());
    }

    #[test]
    fn value_helpers() {
        assert_eq!(Value::Integer(5).data_type(), DataType::Integer);
        assert_eq!(Value::string("x").as_str(), Some("x"));
        assert_eq!(Value::UnsignedInteger(u64::MAX).as_i64(), None);
        assert_eq!(Value::Time(7).as_i64(), Some(7));
        let owned = Value::opaque(&[1, 2]).into_owned();
        assert!(matches!(owned, Value::Opaque(Cow::Owned(_))));
        assert_eq!(DataType::UnsignedInteger.name(), "unsigned");
    }
}
