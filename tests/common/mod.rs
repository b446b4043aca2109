//! Strategies shared by the property tests: model-valid records of every data
//! type under a request path.
#![allow(dead_code)]

use std::borrow::Cow;
use std::collections::BTreeMap;

use lwm2m_fota::model::{
    ContentFormat, DataType, ObjectDef, ObjectLink, ObjectVersion, Operations, Path, Record, Registry, ResourceDef,
    Value,
};
use proptest::prelude::*;

/// A test object holding every data type: resources 0–8 single, 10–18 multiple.
pub const TYPED: u16 = 4000;
/// An object the model does not know: values keep their wire types.
pub const UNKNOWN: u16 = 32769;
pub const TYPES: [DataType; 9] = [
    DataType::Integer,
    DataType::UnsignedInteger,
    DataType::Float,
    DataType::Boolean,
    DataType::String,
    DataType::Opaque,
    DataType::Time,
    DataType::Objlnk,
    DataType::Corelnk,
];

pub fn registry() -> Registry {
    let mut registry = Registry::default();
    let mut resources = Vec::new();
    for (i, data_type) in TYPES.iter().enumerate() {
        let id = i as u16;
        resources.push(ResourceDef::new(id, "single", Operations::READ_WRITE, *data_type, false, false));
        resources.push(ResourceDef::new(id + 10, "multiple", Operations::READ_WRITE, *data_type, true, false));
    }
    registry.register(ObjectDef::new(TYPED, "Every type", ObjectVersion::V1_0, true, false, resources).unwrap());
    registry
}

pub fn finite_f64() -> impl Strategy<Value = f64> {
    prop_oneof![
        any::<f64>().prop_filter("finite", |f| f.is_finite()),
        any::<f32>().prop_filter("finite", |f| f.is_finite()).prop_map(f64::from),
        (-70000i32..70000).prop_map(|i| f64::from(i) / 4.0),
    ]
}

pub fn value(data_type: DataType) -> BoxedStrategy<Value<'static>> {
    match data_type {
        DataType::Integer => any::<i64>().prop_map(Value::Integer).boxed(),
        DataType::UnsignedInteger => any::<u64>().prop_map(Value::UnsignedInteger).boxed(),
        DataType::Float => finite_f64().prop_map(Value::Float).boxed(),
        DataType::Boolean => any::<bool>().prop_map(Value::Boolean).boxed(),
        DataType::String => ".{0,24}".prop_map(|s| Value::String(Cow::Owned(s))).boxed(),
        DataType::Opaque => {
            prop::collection::vec(any::<u8>(), 0..40).prop_map(|b| Value::Opaque(Cow::Owned(b))).boxed()
        }
        DataType::Time => any::<i64>().prop_map(Value::Time).boxed(),
        DataType::Objlnk => (any::<u16>(), any::<u16>())
            .prop_map(|(o, i)| Value::Objlnk(ObjectLink { object_id: o, instance_id: i }))
            .boxed(),
        DataType::Corelnk => "[</>a-z0-9;=,]{0,24}".prop_map(|s| Value::Corelnk(Cow::Owned(s))).boxed(),
        _ => unreachable!(),
    }
}

/// Types an unknown resource can carry through `format` and come back as (the
/// wire decides the type when the model cannot).
pub fn unknown_types(format: ContentFormat) -> Vec<DataType> {
    use DataType::*;
    match format {
        ContentFormat::Tlv | ContentFormat::Opaque => vec![Opaque],
        ContentFormat::Text => vec![String],
        ContentFormat::SenmlCbor | ContentFormat::SenmlJson => vec![Integer, Float, Boolean, String, Opaque, Objlnk],
        ContentFormat::Lwm2mCbor | ContentFormat::Cbor => vec![Integer, Float, Boolean, String, Opaque],
        ContentFormat::Lwm2mJson => vec![Integer, Float, Boolean, String, Objlnk],
        _ => vec![],
    }
}

pub fn unknown_value(format: ContentFormat) -> BoxedStrategy<Value<'static>> {
    let strategies: Vec<_> = unknown_types(format).into_iter().map(value).collect();
    prop::strategy::Union::new(strategies).boxed()
}

/// One resource's records: a single value, or instances of a multiple resource.
pub fn resource(format: ContentFormat, object: u16, instance: u16) -> BoxedStrategy<Vec<Record<'static>>> {
    if object == TYPED {
        (0usize..9, any::<bool>(), prop::collection::btree_set(prop_oneof![0u16..4, 250u16..300], 0..4))
            .prop_flat_map(move |(type_index, multiple, instances)| {
                let data_type = TYPES[type_index];
                let id = type_index as u16 + if multiple { 10 } else { 0 };
                let ids: Vec<Option<u16>> =
                    if multiple { instances.into_iter().map(Some).collect() } else { vec![None] };
                let paths: Vec<Path> = ids
                    .iter()
                    .map(|ri| match ri {
                        Some(ri) => Path::resource_instance(object, instance, id, *ri),
                        None => Path::resource(object, instance, id),
                    })
                    .collect();
                prop::collection::vec(value(data_type), paths.len()).prop_map(move |values| {
                    paths.iter().zip(values).map(|(p, v)| Record::new(*p, v)).collect::<Vec<_>>()
                })
            })
            .boxed()
    } else {
        (prop_oneof![0u16..20, 200u16..400, 60000u16..65535], unknown_value(format))
            .prop_map(move |(id, v)| vec![Record::new(Path::resource(object, instance, id), v)])
            .boxed()
    }
}

/// Records under one object instance, without repeated paths.
pub fn instance_records(format: ContentFormat, object: u16, instance: u16) -> BoxedStrategy<Vec<Record<'static>>> {
    prop::collection::vec(resource(format, object, instance), 0..6)
        .prop_map(|groups| {
            // Keep the first group per resource id so no path repeats.
            let mut by_resource: BTreeMap<u16, Vec<Record<'static>>> = BTreeMap::new();
            for group in groups {
                if let Some(first) = group.first() {
                    by_resource.entry(first.path.resource_id().unwrap()).or_insert(group);
                }
            }
            by_resource.into_values().flatten().collect()
        })
        .boxed()
}

/// A request path and records under it, for a multi-value format.
pub fn tree_case(format: ContentFormat) -> BoxedStrategy<(Path, Vec<Record<'static>>)> {
    let object = prop_oneof![Just(TYPED), Just(UNKNOWN)];
    (object, prop::collection::btree_set(prop_oneof![0u16..3, 300u16..302], 1..3), any::<bool>())
        .prop_flat_map(move |(object, instances, whole_object)| {
            let instances: Vec<u16> = instances.into_iter().collect();
            let first = instances[0];
            let per_instance: Vec<_> = instances.iter().map(|&i| instance_records(format, object, i)).collect();
            per_instance.prop_map(move |lists| {
                if whole_object {
                    (Path::object(object), lists.into_iter().flatten().collect())
                } else {
                    (Path::instance(object, first), lists.into_iter().next().unwrap())
                }
            })
        })
        .boxed()
}

pub fn sorted(mut records: Vec<Record<'_>>) -> Vec<Record<'_>> {
    records.sort_by_key(|r| r.path);
    records
}

pub fn with_times(records: Vec<Record<'static>>, times: Option<Vec<f64>>) -> Vec<Record<'static>> {
    match times {
        None => records,
        Some(times) => records
            .into_iter()
            .zip(times.into_iter().cycle())
            .map(|(mut r, t)| {
                r.time = Some(t);
                r
            })
            .collect(),
    }
}

pub fn time_list() -> impl Strategy<Value = Option<Vec<f64>>> {
    prop::option::of(prop::collection::vec(
        prop_oneof![(0i64..1i64 << 40).prop_map(|t| t as f64), -1.0e12..1.0e12f64, Just(1_700_000_000.25)],
        1..4,
    ))
}

/// The path of example `name`, which `cargo test` builds beside the test binaries
/// (test binaries live in `target/<profile>/deps`, examples in `…/examples`).
pub fn example_binary(name: &str) -> std::path::PathBuf {
    let mut path = std::env::current_exe().unwrap();
    path.pop();
    path.pop();
    path.push("examples");
    path.push(format!("{name}{}", std::env::consts::EXE_SUFFIX));
    assert!(path.exists(), "{} not built (`cargo test` builds examples)", path.display());
    path
}
