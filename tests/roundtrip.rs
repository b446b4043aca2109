//! Property tests: for every codec, decode(encode(records)) == records over
//! arbitrary model-valid records (every data type, single and multiple
//! resources, 8- and 16-bit ids, known and unknown objects, SenML times).

use std::borrow::Cow;
use std::collections::BTreeMap;

use lwm2m_fota::codec::{self, DecodeOptions};
use lwm2m_fota::model::{
    ContentFormat, DataType, ObjectDef, ObjectLink, ObjectVersion, Operations, Path, Record, Registry, ResourceDef,
    Value,
};
use proptest::prelude::*;

/// A test object holding every data type: resources 0–8 single, 10–18 multiple.
const TYPED: u16 = 4000;
/// An object the model does not know: values keep their wire types.
const UNKNOWN: u16 = 32769;
const TYPES: [DataType; 9] = [
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

fn registry() -> Registry {
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

fn finite_f64() -> impl Strategy<Value = f64> {
    prop_oneof![
        any::<f64>().prop_filter("finite", |f| f.is_finite()),
        any::<f32>().prop_filter("finite", |f| f.is_finite()).prop_map(f64::from),
        (-70000i32..70000).prop_map(|i| f64::from(i) / 4.0),
    ]
}

fn value(data_type: DataType) -> BoxedStrategy<Value<'static>> {
    match data_type {
        DataType::Integer => any::<i64>().prop_map(Value::Integer).boxed(),
        DataType::UnsignedInteger => any::<u64>().prop_map(Value::UnsignedInteger).boxed(),
        DataType::Float => finite_f64().prop_map(Value::Float).boxed(),
        DataType::Boolean => any::<bool>().prop_map(Value::Boolean).boxed(),
        DataType::String => ".{0,24}".prop_map(|s| Value::String(Cow::Owned(s))).boxed(),
        DataType::Opaque => prop::collection::vec(any::<u8>(), 0..40).prop_map(|b| Value::Opaque(Cow::Owned(b))).boxed(),
        DataType::Time => any::<i64>().prop_map(Value::Time).boxed(),
        DataType::Objlnk => {
            (any::<u16>(), any::<u16>()).prop_map(|(o, i)| Value::Objlnk(ObjectLink { object_id: o, instance_id: i })).boxed()
        }
        DataType::Corelnk => "[</>a-z0-9;=,]{0,24}".prop_map(|s| Value::Corelnk(Cow::Owned(s))).boxed(),
        _ => unreachable!(),
    }
}

/// Types an unknown resource can carry through `format` and come back as (the
/// wire decides the type when the model cannot).
fn unknown_types(format: ContentFormat) -> Vec<DataType> {
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

fn unknown_value(format: ContentFormat) -> BoxedStrategy<Value<'static>> {
    let strategies: Vec<_> = unknown_types(format).into_iter().map(value).collect();
    prop::strategy::Union::new(strategies).boxed()
}

/// One resource's records: a single value, or instances of a multiple resource.
fn resource(format: ContentFormat, object: u16, instance: u16) -> BoxedStrategy<Vec<Record<'static>>> {
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
fn instance_records(format: ContentFormat, object: u16, instance: u16) -> BoxedStrategy<Vec<Record<'static>>> {
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
fn tree_case(format: ContentFormat) -> BoxedStrategy<(Path, Vec<Record<'static>>)> {
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

fn sorted(mut records: Vec<Record<'_>>) -> Vec<Record<'_>> {
    records.sort_by_key(|r| r.path);
    records
}

fn round_trip(format: ContentFormat, path: &Path, records: &[Record<'_>]) -> Result<Vec<Record<'static>>, TestCaseError> {
    let registry = registry();
    let mut payload = Vec::new();
    codec::encode(format, path, records, &registry, &mut payload)
        .map_err(|e| TestCaseError::fail(format!("{format} encode at {path}: {e}")))?;
    let decoded = codec::decode(format, path, &payload, &registry, &DecodeOptions::default())
        .map_err(|e| TestCaseError::fail(format!("{format} decode at {path}: {e}; payload {payload:02x?}")))?;
    Ok(decoded.into_iter().map(Record::into_owned).collect())
}

fn with_times(records: Vec<Record<'static>>, times: Option<Vec<f64>>) -> Vec<Record<'static>> {
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

fn time_list() -> impl Strategy<Value = Option<Vec<f64>>> {
    prop::option::of(prop::collection::vec(
        prop_oneof![(0i64..1i64 << 40).prop_map(|t| t as f64), -1.0e12..1.0e12f64, Just(1_700_000_000.25)],
        1..4,
    ))
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn tlv_round_trips((path, records) in tree_case(ContentFormat::Tlv)) {
        prop_assert_eq!(sorted(round_trip(ContentFormat::Tlv, &path, &records)?), sorted(records));
    }

    #[test]
    fn lwm2m_cbor_round_trips((path, records) in tree_case(ContentFormat::Lwm2mCbor), root in any::<bool>()) {
        let path = if root { Path::ROOT } else { path };
        prop_assert_eq!(sorted(round_trip(ContentFormat::Lwm2mCbor, &path, &records)?), sorted(records));
    }

    #[test]
    fn senml_cbor_round_trips(
        (path, records) in tree_case(ContentFormat::SenmlCbor),
        times in time_list(),
        root in any::<bool>(),
        repeat in any::<bool>(),
    ) {
        let path = if root { Path::ROOT } else { path };
        // SenML may repeat a path (historical values) and keeps payload order.
        let mut records = records;
        if repeat {
            records.extend(records.clone());
        }
        let records = with_times(records, times);
        prop_assert_eq!(round_trip(ContentFormat::SenmlCbor, &path, &records)?, records);
    }

    #[test]
    fn senml_json_round_trips(
        (path, records) in tree_case(ContentFormat::SenmlJson),
        times in time_list(),
        root in any::<bool>(),
    ) {
        let path = if root { Path::ROOT } else { path };
        let records = with_times(records, times);
        prop_assert_eq!(round_trip(ContentFormat::SenmlJson, &path, &records)?, records);
    }

    #[test]
    fn lwm2m_json_round_trips((path, records) in tree_case(ContentFormat::Lwm2mJson), times in time_list()) {
        let records = with_times(records, times);
        prop_assert_eq!(round_trip(ContentFormat::Lwm2mJson, &path, &records)?, records);
    }

    #[test]
    fn single_value_formats_round_trip(
        (records, format) in prop_oneof![Just(ContentFormat::Text), Just(ContentFormat::Cbor), Just(ContentFormat::Opaque)]
            .prop_flat_map(|format| (resource(format, TYPED, 0).prop_union(resource(format, UNKNOWN, 0)), Just(format)))
    ) {
        prop_assume!(!records.is_empty());
        let record = &records[0];
        let known_ok = match format {
            ContentFormat::Opaque => record.value.data_type() == DataType::Opaque,
            _ => true,
        };
        prop_assume!(known_ok);
        let decoded = round_trip(format, &record.path, std::slice::from_ref(record))?;
        prop_assert_eq!(decoded, vec![record.clone()]);
    }

    #[test]
    fn paths_round_trip_through_text(segments in prop::collection::vec(0u16..=65534, 0..=4)) {
        let path = Path::from_segments(&segments).unwrap();
        prop_assert_eq!(path.to_string().parse::<Path>().unwrap(), path);
    }

    #[test]
    fn name_lists_round_trip(segments in prop::collection::vec(prop::collection::vec(0u16..=65534, 0..=4), 0..6)) {
        let paths: Vec<Path> = segments.iter().map(|s| Path::from_segments(s).unwrap()).collect();
        for format in [ContentFormat::SenmlCbor, ContentFormat::SenmlJson] {
            let mut payload = Vec::new();
            codec::encode_paths(format, &paths, &mut payload).unwrap();
            prop_assert_eq!(&codec::decode_paths(format, &payload, &DecodeOptions::default()).unwrap(), &paths);
        }
    }
}
