//! Differential tests against an independent CBOR implementation (ciborium's
//! `Value`), both directions: what our encoders write, ciborium reads back to the
//! same records; what ciborium writes, our decoders read back to the same records.

mod common;

use std::borrow::Cow;

use ciborium::Value as Cbor;
use common::*;
use lwm2m_fota::codec::{self, DecodeOptions};
use lwm2m_fota::model::{ContentFormat, DataType, ObjectLink, Path, Record, Registry, Value};
use proptest::prelude::*;

fn to_cbor(value: &Value<'_>) -> (i64, Cbor) {
    // (SenML label, CBOR value); -100 stands for the text label "vlo".
    match value {
        Value::Integer(v) | Value::Time(v) => (2, Cbor::Integer((*v).into())),
        Value::UnsignedInteger(v) => (2, Cbor::Integer((*v).into())),
        Value::Float(v) => (2, Cbor::Float(*v)),
        Value::Boolean(v) => (4, Cbor::Bool(*v)),
        Value::String(s) | Value::Corelnk(s) => (3, Cbor::Text(s.to_string())),
        Value::Opaque(b) => (8, Cbor::Bytes(b.to_vec())),
        Value::Objlnk(link) => (-100, Cbor::Text(link.to_string())),
        _ => unreachable!(),
    }
}

/// Types a CBOR leaf through the model, independently of the crate's decoders.
fn from_cbor(registry: &Registry, path: &Path, cbor: &Cbor, vlo: bool) -> Value<'static> {
    let integer = |c: &Cbor| c.as_integer().map(i128::from);
    match registry.data_type(path) {
        Some(DataType::Integer) => Value::Integer(integer(cbor).unwrap() as i64),
        Some(DataType::Time) => Value::Time(integer(cbor).unwrap() as i64),
        Some(DataType::UnsignedInteger) => Value::UnsignedInteger(integer(cbor).unwrap() as u64),
        Some(DataType::Float) => Value::Float(cbor.as_float().or_else(|| integer(cbor).map(|i| i as f64)).unwrap()),
        Some(DataType::Boolean) => Value::Boolean(cbor.as_bool().unwrap()),
        Some(DataType::String) => Value::String(Cow::Owned(cbor.as_text().unwrap().to_owned())),
        Some(DataType::Corelnk) => Value::Corelnk(Cow::Owned(cbor.as_text().unwrap().to_owned())),
        Some(DataType::Opaque) => Value::Opaque(Cow::Owned(cbor.as_bytes().unwrap().clone())),
        Some(DataType::Objlnk) => Value::Objlnk(cbor.as_text().unwrap().parse::<ObjectLink>().unwrap()),
        None => match cbor {
            Cbor::Integer(i) => {
                let i = i128::from(*i);
                i64::try_from(i).map_or(Value::UnsignedInteger(i as u64), Value::Integer)
            }
            Cbor::Float(f) => Value::Float(*f),
            Cbor::Bool(b) => Value::Boolean(*b),
            Cbor::Text(t) if vlo => Value::Objlnk(t.parse().unwrap()),
            Cbor::Text(t) => Value::String(Cow::Owned(t.clone())),
            Cbor::Bytes(b) => Value::Opaque(Cow::Owned(b.clone())),
            other => panic!("unexpected leaf {other:?}"),
        },
        Some(other) => panic!("unexpected type {other:?}"),
    }
}

fn key_label(key: &Cbor) -> i64 {
    match key {
        Cbor::Integer(i) => i128::from(*i) as i64,
        Cbor::Text(t) if t == "vlo" => -100,
        other => panic!("unexpected SenML label {other:?}"),
    }
}

fn number(cbor: &Cbor) -> f64 {
    cbor.as_float().unwrap_or_else(|| i128::from(cbor.as_integer().unwrap()) as f64)
}

/// A SenML pack read through ciborium, resolved by RFC 8428's rules.
fn senml_via_ciborium(registry: &Registry, bytes: &[u8]) -> Vec<Record<'static>> {
    let pack: Cbor = ciborium::de::from_reader(bytes).unwrap();
    let mut base_name = String::new();
    let mut base_time: Option<f64> = None;
    let mut records = Vec::new();
    for record in pack.as_array().unwrap() {
        let (mut name, mut time, mut value) = (String::new(), None, None);
        for (key, v) in record.as_map().unwrap() {
            match key_label(key) {
                -2 => base_name = v.as_text().unwrap().to_owned(),
                -3 => base_time = Some(number(v)),
                0 => name = v.as_text().unwrap().to_owned(),
                6 => time = Some(number(v)),
                label => value = Some((label, v.clone())),
            }
        }
        let path: Path = format!("{base_name}{name}").parse().unwrap();
        let (label, v) = value.unwrap();
        let time = match (base_time, time) {
            (None, None) => None,
            (b, t) => Some(b.unwrap_or(0.0) + t.unwrap_or(0.0)),
        };
        records.push(Record { path, value: from_cbor(registry, &path, &v, label == -100), time });
    }
    records
}

/// An LwM2M-CBOR payload read through ciborium.
fn lwm2m_via_ciborium(registry: &Registry, bytes: &[u8]) -> Vec<Record<'static>> {
    fn walk(registry: &Registry, prefix: &[u16], node: &Cbor, out: &mut Vec<Record<'static>>) {
        for (key, value) in node.as_map().unwrap() {
            let mut segments = prefix.to_vec();
            match key {
                Cbor::Integer(i) => segments.push(i128::from(*i) as u16),
                Cbor::Array(ids) => segments.extend(ids.iter().map(|i| i128::from(i.as_integer().unwrap()) as u16)),
                other => panic!("unexpected key {other:?}"),
            }
            if value.is_map() {
                walk(registry, &segments, value, out);
            } else {
                let path = Path::from_segments(&segments).unwrap();
                out.push(Record::new(path, from_cbor(registry, &path, value, false)));
            }
        }
    }
    let root: Cbor = ciborium::de::from_reader(bytes).unwrap();
    let mut out = Vec::new();
    walk(registry, &[], &root, &mut out);
    out
}

/// A SenML pack written by ciborium: absolute names, or base name + name, with
/// integer or text labels as `text_labels` says.
fn senml_by_ciborium(records: &[Record<'_>], split_names: bool, text_labels: bool) -> Vec<u8> {
    let label = |n: i64, text: &str| if text_labels { Cbor::Text(text.into()) } else { Cbor::Integer(n.into()) };
    let pack: Vec<Cbor> = records
        .iter()
        .map(|r| {
            let mut map = Vec::new();
            let full = r.path.to_string();
            if split_names {
                let cut = full.rfind('/').unwrap();
                map.push((label(-2, "bn"), Cbor::Text(full[..cut].to_owned())));
                map.push((label(0, "n"), Cbor::Text(full[cut..].to_owned())));
            } else {
                map.push((label(0, "n"), Cbor::Text(full)));
            }
            let (value_label, v) = to_cbor(&r.value);
            let key = match value_label {
                -100 => Cbor::Text("vlo".into()),
                2 => label(2, "v"),
                3 => label(3, "vs"),
                4 => label(4, "vb"),
                _ => label(8, "vd"),
            };
            map.push((key, v));
            if let Some(t) = r.time {
                map.push((label(6, "t"), Cbor::Float(t)));
            }
            Cbor::Map(map)
        })
        .collect();
    let mut bytes = Vec::new();
    ciborium::ser::into_writer(&Cbor::Array(pack), &mut bytes).unwrap();
    bytes
}

/// An LwM2M-CBOR payload written by ciborium: each record as its own
/// `{[o, i, r(, ri)]: value}` entry or nested by id, as `nested` says.
fn lwm2m_by_ciborium(records: &[Record<'_>], nested: bool) -> Vec<u8> {
    let entries: Vec<(Cbor, Cbor)> = records
        .iter()
        .map(|r| {
            let value = to_cbor(&r.value).1;
            let segments = r.path.segments();
            if nested {
                // {o: {i: {[r, ri...]: v}}}
                let tail = Cbor::Array(segments[2..].iter().map(|&s| Cbor::Integer(s.into())).collect());
                let inner = Cbor::Map(vec![(tail, value)]);
                let instance = Cbor::Map(vec![(Cbor::Integer(segments[1].into()), inner)]);
                (Cbor::Integer(segments[0].into()), instance)
            } else {
                (Cbor::Array(segments.iter().map(|&s| Cbor::Integer(s.into())).collect()), value)
            }
        })
        .collect();
    let mut bytes = Vec::new();
    ciborium::ser::into_writer(&Cbor::Map(entries), &mut bytes).unwrap();
    bytes
}

fn ours(format: ContentFormat, path: &Path, bytes: &[u8]) -> Vec<Record<'static>> {
    codec::decode(format, path, bytes, &registry(), &DecodeOptions::default())
        .unwrap_or_else(|e| panic!("{format}: {e}; {bytes:02x?}"))
        .into_iter()
        .map(Record::into_owned)
        .collect()
}

fn sorted(mut records: Vec<Record<'static>>) -> Vec<Record<'static>> {
    records.sort_by_key(|r| r.path);
    records
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn senml_cbor_we_write_ciborium_reads((path, records) in tree_case(ContentFormat::SenmlCbor), times in time_list()) {
        let records = with_times(records, times);
        let mut bytes = Vec::new();
        codec::encode(ContentFormat::SenmlCbor, &path, &records, &registry(), &mut bytes).unwrap();
        prop_assert_eq!(senml_via_ciborium(&registry(), &bytes), records);
    }

    #[test]
    fn senml_cbor_ciborium_writes_we_read(
        (_, records) in tree_case(ContentFormat::SenmlCbor),
        times in time_list(),
        split in any::<bool>(),
        text_labels in any::<bool>(),
    ) {
        let records = with_times(records, times);
        let bytes = senml_by_ciborium(&records, split, text_labels);
        prop_assert_eq!(ours(ContentFormat::SenmlCbor, &Path::ROOT, &bytes), records);
    }

    #[test]
    fn lwm2m_cbor_we_write_ciborium_reads((path, records) in tree_case(ContentFormat::Lwm2mCbor)) {
        let mut bytes = Vec::new();
        codec::encode(ContentFormat::Lwm2mCbor, &path, &records, &registry(), &mut bytes).unwrap();
        prop_assert_eq!(sorted(lwm2m_via_ciborium(&registry(), &bytes)), sorted(records));
    }

    #[test]
    fn lwm2m_cbor_ciborium_writes_we_read((_, records) in tree_case(ContentFormat::Lwm2mCbor), nested in any::<bool>()) {
        let bytes = lwm2m_by_ciborium(&records, nested);
        prop_assert_eq!(sorted(ours(ContentFormat::Lwm2mCbor, &Path::ROOT, &bytes)), sorted(records));
    }

    #[test]
    fn single_cbor_both_ways(records in resource(ContentFormat::Cbor, TYPED, 0).prop_union(resource(ContentFormat::Cbor, UNKNOWN, 0))) {
        prop_assume!(!records.is_empty());
        let record = &records[0];
        let mut bytes = Vec::new();
        codec::encode(ContentFormat::Cbor, &record.path, std::slice::from_ref(record), &registry(), &mut bytes).unwrap();
        let theirs: Cbor = ciborium::de::from_reader(bytes.as_slice()).unwrap();
        prop_assert_eq!(&from_cbor(&registry(), &record.path, &theirs, false), &record.value);
        let mut written = Vec::new();
        ciborium::ser::into_writer(&to_cbor(&record.value).1, &mut written).unwrap();
        prop_assert_eq!(ours(ContentFormat::Cbor, &record.path, &written), vec![record.clone()]);
    }
}
