//! The LwM2M data model: paths, values, content formats, and the object and
//! resource definitions that give payload values their types.

pub mod builtin;
mod content_format;
mod definition;
mod firmware;
mod links;
mod operation;
mod path;
mod time;
mod value;

pub(crate) use definition::TypeLookup;

pub use content_format::{ContentFormat, UnknownContentFormat};
pub use definition::{
    DefinitionError, ObjectDef, ObjectVersion, ObjectVersionError, Operations, Registry, ResourceDef, ValueRange,
};
pub use firmware::{DeliveryMethod, Protocol, ProtocolSet, ResponseCode, State, UpdateResult};
pub use links::{
    Binding, BindingError, LinkFormatError, ObjectEntry, ObjectIter, ObjectLinks, ObjectList, format_object_links,
    parse_object_links,
};
pub use operation::{Attributes, Block, ClientMessage, Lwm2mVersion, Operation, Registration, RequestId};
pub(crate) use path::PathParser;
pub use path::{MAX_ID, Path, PathError};
pub use time::Instant;
pub use value::{DataType, ObjectLink, ObjectLinkError, Record, SENML_RELATIVE_TIME_LIMIT, Value};
