//! Object and resource definitions, and the registry that types payloads.

use alloc::borrow::Cow;
#[cfg(test)]
use alloc::vec::Vec;
use core::fmt;

use super::{DataType, Path, Value};

/// An object version such as 1.0, 1.1 or 1.2 (the `ver` attribute of a registration).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct ObjectVersion {
    /// Major version.
    pub major: u8,
    /// Minor version.
    pub minor: u8,
}

impl ObjectVersion {
    /// Version 1.0.
    pub const V1_0: ObjectVersion = ObjectVersion { major: 1, minor: 0 };
    /// Version 1.1.
    pub const V1_1: ObjectVersion = ObjectVersion { major: 1, minor: 1 };
    /// Version 1.2.
    pub const V1_2: ObjectVersion = ObjectVersion { major: 1, minor: 2 };
}

impl fmt::Display for ObjectVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.major, self.minor)
    }
}

impl core::str::FromStr for ObjectVersion {
    type Err = ObjectVersionError;

    fn from_str(text: &str) -> Result<ObjectVersion, ObjectVersionError> {
        let (major, minor) = text.split_once('.').ok_or(ObjectVersionError)?;
        let digits = |t: &str| !t.is_empty() && t.len() <= 3 && t.bytes().all(|b| b.is_ascii_digit());
        if !digits(major) || !digits(minor) {
            return Err(ObjectVersionError);
        }
        Ok(ObjectVersion {
            major: major.parse().map_err(|_| ObjectVersionError)?,
            minor: minor.parse().map_err(|_| ObjectVersionError)?,
        })
    }
}

/// A version text that is not `<major>.<minor>`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("object version must be \"<major>.<minor>\", e.g. \"1.1\"")]
pub struct ObjectVersionError;

/// The operations a resource allows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Operations {
    /// Read (and Observe).
    pub read: bool,
    /// Write.
    pub write: bool,
    /// Execute.
    pub execute: bool,
}

impl Operations {
    /// Read only (`R`).
    pub const READ: Operations = Operations { read: true, write: false, execute: false };
    /// Write only (`W`).
    pub const WRITE: Operations = Operations { read: false, write: true, execute: false };
    /// Read and write (`RW`).
    pub const READ_WRITE: Operations = Operations { read: true, write: true, execute: false };
    /// Execute only (`E`).
    pub const EXECUTE: Operations = Operations { read: false, write: false, execute: true };
}

/// The range of values a resource accepts, as its definition states it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ValueRange {
    /// Signed numeric range, inclusive.
    Integer {
        /// Smallest allowed value.
        min: i64,
        /// Largest allowed value.
        max: i64,
    },
    /// Unsigned numeric range, inclusive.
    Unsigned {
        /// Smallest allowed value.
        min: u64,
        /// Largest allowed value.
        max: u64,
    },
    /// Length of a string or opaque value in bytes, inclusive.
    Length {
        /// Shortest allowed length.
        min: usize,
        /// Longest allowed length.
        max: usize,
    },
}

impl ValueRange {
    /// True when `value` lies within the range (values of a kind the range does
    /// not speak of are accepted).
    pub fn contains(&self, value: &Value<'_>) -> bool {
        match (*self, value) {
            (ValueRange::Integer { min, max }, Value::Integer(v) | Value::Time(v)) => (min..=max).contains(v),
            (ValueRange::Integer { min, max }, Value::UnsignedInteger(v)) => {
                i64::try_from(*v).is_ok_and(|v| (min..=max).contains(&v))
            }
            (ValueRange::Unsigned { min, max }, Value::UnsignedInteger(v)) => (min..=max).contains(v),
            (ValueRange::Unsigned { min, max }, Value::Integer(v)) => {
                u64::try_from(*v).is_ok_and(|v| (min..=max).contains(&v))
            }
            (ValueRange::Length { min, max }, Value::String(s) | Value::Corelnk(s)) => (min..=max).contains(&s.len()),
            (ValueRange::Length { min, max }, Value::Opaque(b)) => (min..=max).contains(&b.len()),
            _ => true,
        }
    }
}

/// The definition of one resource of an object.
#[derive(Debug, Clone, PartialEq)]
pub struct ResourceDef {
    /// Resource id.
    pub id: u16,
    /// Name as the object definition gives it.
    pub name: Cow<'static, str>,
    /// Allowed operations.
    pub operations: Operations,
    /// Data type of its values ([`DataType::None`] for executable resources).
    pub data_type: DataType,
    /// True for a multiple-instance resource.
    pub multiple: bool,
    /// True when every instance of the object must have it.
    pub mandatory: bool,
    /// Allowed values, if the definition restricts them.
    pub range: Option<ValueRange>,
    /// Units, if any.
    pub units: Option<&'static str>,
}

impl ResourceDef {
    /// A definition with the given basics, no range and no units.
    pub const fn new(
        id: u16,
        name: &'static str,
        operations: Operations,
        data_type: DataType,
        multiple: bool,
        mandatory: bool,
    ) -> ResourceDef {
        ResourceDef {
            id,
            name: Cow::Borrowed(name),
            operations,
            data_type,
            multiple,
            mandatory,
            range: None,
            units: None,
        }
    }

    /// The same definition with a value range.
    pub const fn with_range(mut self, range: ValueRange) -> ResourceDef {
        self.range = Some(range);
        self
    }

    /// The same definition with units.
    pub const fn with_units(mut self, units: &'static str) -> ResourceDef {
        self.units = Some(units);
        self
    }
}

/// The definition of an object: its id, version and resources.
#[derive(Debug, Clone, PartialEq)]
pub struct ObjectDef {
    /// Object id.
    pub id: u16,
    /// Name as the definition gives it.
    pub name: Cow<'static, str>,
    /// Object version.
    pub version: ObjectVersion,
    /// True when the object may have several instances.
    pub multiple_instances: bool,
    /// True when every client must implement it.
    pub mandatory: bool,
    /// Resources, sorted by id (construct with [`ObjectDef::new`] to guarantee it).
    resources: Cow<'static, [ResourceDef]>,
}

impl ObjectDef {
    /// A definition from its parts; resources are sorted by id.
    ///
    /// # Errors
    /// [`DefinitionError::DuplicateResource`] when two resources share an id.
    pub fn new(
        id: u16,
        name: impl Into<Cow<'static, str>>,
        version: ObjectVersion,
        multiple_instances: bool,
        mandatory: bool,
        resources: impl Into<Cow<'static, [ResourceDef]>>,
    ) -> Result<ObjectDef, DefinitionError> {
        let mut resources = resources.into();
        if !resources.windows(2).all(|w| w[0].id < w[1].id) {
            resources.to_mut().sort_by_key(|r| r.id);
            if let Some(w) = resources.windows(2).find(|w| w[0].id == w[1].id) {
                return Err(DefinitionError::DuplicateResource { object: id, resource: w[0].id });
            }
        }
        Ok(ObjectDef { id, name: name.into(), version, multiple_instances, mandatory, resources })
    }

    /// For built-in tables already sorted by id.
    pub(crate) const fn from_sorted(
        id: u16,
        name: &'static str,
        version: ObjectVersion,
        multiple_instances: bool,
        mandatory: bool,
        resources: &'static [ResourceDef],
    ) -> ObjectDef {
        ObjectDef {
            id,
            name: Cow::Borrowed(name),
            version,
            multiple_instances,
            mandatory,
            resources: Cow::Borrowed(resources),
        }
    }

    /// All resources, sorted by id.
    pub fn resources(&self) -> &[ResourceDef] {
        &self.resources
    }

    /// The resource with this id, if the object defines it.
    pub fn resource(&self, id: u16) -> Option<&ResourceDef> {
        // Ids are sorted and distinct, so resource `id` sits at an index of at
        // most `id`; objects number their resources nearly densely from 0 (/5
        // lacks 4), so it is usually there or a step or two below.
        let resources: &[ResourceDef] = &self.resources;
        let top = usize::from(id).min(resources.len().checked_sub(1)?);
        for r in resources[top.saturating_sub(2)..=top].iter().rev() {
            if r.id == id {
                return Some(r);
            }
            if r.id < id {
                return None;
            }
        }
        resources.binary_search_by_key(&id, |r| r.id).ok().map(|i| &resources[i])
    }
}

/// A definition that cannot be registered.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DefinitionError {
    /// Two resources of one object share an id.
    #[error("object {object} defines resource {resource} twice")]
    DuplicateResource {
        /// Object id.
        object: u16,
        /// The repeated resource id.
        resource: u16,
    },
}

/// The object definitions a codec consults to type values (TLV carries no types;
/// SenML numbers could be any numeric type).
///
/// [`Registry::default`] holds the built-in /1 Server, /3 Device and /5 Firmware
/// Update (object version 1.2, whose resources are a superset of 1.0 and 1.1);
/// [`Registry::register`] adds or replaces objects.
///
/// ```
/// use lwm2m_fota::model::{DataType, ObjectDef, ObjectVersion, Operations, Path, Registry, ResourceDef};
/// let mut registry = Registry::default();
/// registry.register(ObjectDef::new(
///     3303, "Temperature", ObjectVersion::V1_0, true, false,
///     vec![ResourceDef::new(5700, "Sensor Value", Operations::READ, DataType::Float, false, true)],
/// ).unwrap());
/// assert_eq!(registry.data_type(&Path::resource(3303, 0, 5700)), Some(DataType::Float));
/// assert_eq!(registry.data_type(&Path::resource(5, 0, 13)), Some(DataType::UnsignedInteger));
/// assert_eq!(registry.data_type(&Path::resource(32769, 0, 1)), None);
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct Registry {
    // Sorted by object id, one definition per id; borrowed from a static table
    // until something is registered, so the built-in registry costs nothing.
    objects: Cow<'static, [ObjectDef]>,
}

static BUILTIN: [ObjectDef; 3] =
    [super::builtin::SERVER, super::builtin::DEVICE, super::builtin::FIRMWARE_UPDATE_1_2_DEF];

impl Registry {
    /// A registry without any object.
    pub const fn empty() -> Registry {
        Registry { objects: Cow::Borrowed(&[]) }
    }

    /// The built-in objects (/1, /3, /5 version 1.2) without allocating: the same
    /// as [`Registry::default`].
    pub const fn builtin() -> Registry {
        Registry { objects: Cow::Borrowed(&BUILTIN) }
    }

    /// Adds `object`, returning the definition it replaced for the same id.
    pub fn register(&mut self, object: ObjectDef) -> Option<ObjectDef> {
        let objects = self.objects.to_mut();
        match objects.binary_search_by_key(&object.id, |o| o.id) {
            Ok(i) => Some(core::mem::replace(&mut objects[i], object)),
            Err(i) => {
                objects.insert(i, object);
                None
            }
        }
    }

    /// The definition of object `id`, if registered.
    pub fn object(&self, id: u16) -> Option<&ObjectDef> {
        if self.objects.len() <= 8 {
            // The usual registry (/1, /3, /5 and a few more): a scan is quicker.
            return self.objects.iter().find(|o| o.id == id);
        }
        self.objects.binary_search_by_key(&id, |o| o.id).ok().map(|i| &self.objects[i])
    }

    /// Every registered object, sorted by id.
    pub fn objects(&self) -> &[ObjectDef] {
        &self.objects
    }

    /// The definition of the resource a path names (`None` above resource level or
    /// when the object or resource is unknown).
    pub fn resource(&self, path: &Path) -> Option<&ResourceDef> {
        self.object(path.object_id()?)?.resource(path.resource_id()?)
    }

    /// The data type of the resource a path names, if known.
    pub fn data_type(&self, path: &Path) -> Option<DataType> {
        self.resource(path).map(|r| r.data_type)
    }
}

/// Data types for the records of one pack: the object of the last lookup is
/// kept, as a pack's records mostly share it (one object scan per pack
/// instead of one per record).
pub(crate) struct TypeLookup<'r> {
    registry: &'r Registry,
    last: Option<(u16, Option<&'r ObjectDef>)>,
}

impl<'r> TypeLookup<'r> {
    pub(crate) fn new(registry: &'r Registry) -> TypeLookup<'r> {
        TypeLookup { registry, last: None }
    }

    /// As [`Registry::data_type`].
    #[inline]
    pub(crate) fn data_type(&mut self, path: &Path) -> Option<DataType> {
        let object_id = path.object_id()?;
        let resource_id = path.resource_id()?;
        let object = match self.last {
            Some((id, object)) if id == object_id => object,
            _ => {
                let object = self.registry.object(object_id);
                self.last = Some((object_id, object));
                object
            }
        };
        object?.resource(resource_id).map(|r| r.data_type)
    }
}

impl Default for Registry {
    fn default() -> Registry {
        Registry::builtin()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::vec;

    #[test]
    fn resources_are_found_dense_or_sparse() {
        let ids = [0u16, 1, 2, 3, 5, 6, 9, 700, 701, 5700, 65534];
        let def = ObjectDef::new(
            9001,
            "t",
            ObjectVersion::V1_0,
            false,
            false,
            ids.iter()
                .map(|&id| ResourceDef::new(id, "r", Operations::READ, DataType::Integer, false, false))
                .collect::<Vec<_>>(),
        )
        .unwrap();
        for id in 0..=u16::MAX {
            assert_eq!(def.resource(id).map(|r| r.id), ids.contains(&id).then_some(id), "{id}");
        }
        let empty = ObjectDef::new(9002, "e", ObjectVersion::V1_0, false, false, vec![]).unwrap();
        assert!(empty.resource(0).is_none());
        // /5 has no resource 4: the ones after it are found all the same.
        let firmware = crate::model::builtin::firmware_update(ObjectVersion::V1_2);
        assert!(firmware.resource(4).is_none());
        assert_eq!(firmware.resource(14).map(|r| r.id), Some(14));
    }

    #[test]
    fn object_def_sorts_and_rejects_duplicates() {
        let def = ObjectDef::new(
            9000,
            "t",
            ObjectVersion::V1_0,
            false,
            false,
            vec![
                ResourceDef::new(7, "b", Operations::READ, DataType::String, false, false),
                ResourceDef::new(2, "a", Operations::READ, DataType::Integer, false, false),
            ],
        )
        .unwrap();
        assert_eq!(def.resources()[0].id, 2);
        assert_eq!(def.resource(7).unwrap().name, "b");
        assert!(def.resource(3).is_none());
        let dup = ObjectDef::new(
            9000,
            "t",
            ObjectVersion::V1_0,
            false,
            false,
            vec![
                ResourceDef::new(1, "a", Operations::READ, DataType::Integer, false, false),
                ResourceDef::new(1, "b", Operations::READ, DataType::Integer, false, false),
            ],
        );
        assert_eq!(dup, Err(DefinitionError::DuplicateResource { object: 9000, resource: 1 }));
    }

    #[test]
    fn register_replaces() {
        let mut registry = Registry::default();
        let old = registry.register(super::super::builtin::firmware_update(ObjectVersion::V1_0).clone());
        assert_eq!(old.unwrap().version, ObjectVersion::V1_2);
        assert_eq!(registry.object(5).unwrap().version, ObjectVersion::V1_0);
        assert!(registry.resource(&Path::resource(5, 0, 14)).is_none());
        assert_eq!(registry.objects().iter().map(|o| o.id).collect::<Vec<_>>(), [1, 3, 5]);
    }

    #[test]
    fn ranges() {
        let r = ValueRange::Integer { min: 0, max: 3 };
        assert!(r.contains(&Value::Integer(3)));
        assert!(!r.contains(&Value::Integer(4)));
        assert!(!r.contains(&Value::UnsignedInteger(u64::MAX)));
        let l = ValueRange::Length { min: 0, max: 2 };
        assert!(!l.contains(&Value::string("abc")));
        assert!(l.contains(&Value::Boolean(true)));
        let u = ValueRange::Unsigned { min: 1, max: 2 };
        assert!(!u.contains(&Value::Integer(-1)));
    }

    #[test]
    fn versions() {
        assert_eq!("1.2".parse::<ObjectVersion>(), Ok(ObjectVersion::V1_2));
        assert_eq!(ObjectVersion::V1_1.to_string(), "1.1");
        for bad in ["1", "1.", ".1", "a.b", "1.2.3", "1000.0"] {
            assert!(bad.parse::<ObjectVersion>().is_err(), "{bad}");
        }
    }
}
