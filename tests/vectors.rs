//! Every test vector in tests/data/*.json (copied from shared/vectors and the
//! examples of shared/spec): decode to exactly the expected records, re-encode
//! byte for byte where the vector is canonical, and round-trip by value always.

#[path = "../examples/support/records_json.rs"]
#[allow(dead_code)]
mod records_json;

use lwm2m_fota::codec::{self, DecodeOptions};
use lwm2m_fota::model::{ContentFormat, DataType, ObjectDef, ObjectVersion, Operations, Path, Registry, ResourceDef};
use serde_json::Value as Json;

/// The registry the vectors assume: built-ins plus /2 and the TS test objects 65, 66.
pub fn vector_registry() -> Registry {
    let mut registry = Registry::default();
    let r = |id, data_type, multiple| ResourceDef::new(id, "test", Operations::READ_WRITE, data_type, multiple, false);
    registry.register(
        ObjectDef::new(
            2,
            "Access Control",
            ObjectVersion::V1_0,
            true,
            false,
            vec![
                r(0, DataType::Integer, false),
                r(1, DataType::Integer, false),
                r(2, DataType::Integer, true),
                r(3, DataType::Integer, false),
            ],
        )
        .unwrap(),
    );
    registry.register(
        ObjectDef::new(
            65,
            "Test 65",
            ObjectVersion::V1_0,
            true,
            false,
            vec![r(0, DataType::Objlnk, true), r(1, DataType::String, false), r(2, DataType::Integer, false)],
        )
        .unwrap(),
    );
    registry.register(
        ObjectDef::new(
            66,
            "Test 66",
            ObjectVersion::V1_0,
            true,
            false,
            vec![r(0, DataType::String, false), r(1, DataType::String, false), r(2, DataType::Objlnk, false)],
        )
        .unwrap(),
    );
    registry
}

struct Vector {
    name: String,
    format: ContentFormat,
    path: Path,
    payload: Vec<u8>,
    canonical: Option<bool>,
    expect: Json,
}

fn load(file: &str) -> Vec<Vector> {
    let text = std::fs::read_to_string(format!("{}/tests/data/{file}", env!("CARGO_MANIFEST_DIR"))).unwrap();
    let json: Json = serde_json::from_str(&text).unwrap();
    let vectors: Vec<Vector> = json
        .as_array()
        .unwrap()
        .iter()
        .map(|v| Vector {
            name: v["name"].as_str().unwrap().to_owned(),
            format: ContentFormat::from_number(v["format"].as_u64().unwrap() as u16).unwrap(),
            path: v["path"].as_str().unwrap().parse().unwrap(),
            payload: records_json::unhex(v["hex"].as_str().unwrap()).unwrap(),
            canonical: v.get("canonical").and_then(Json::as_bool),
            expect: v["expect"].clone(),
        })
        .collect();
    assert!(!vectors.is_empty(), "{file} holds no vectors");
    vectors
}

/// Equal JSON, with numbers compared by a small relative tolerance.
fn same(a: &Json, b: &Json) -> bool {
    match (a, b) {
        (Json::Number(x), Json::Number(y)) => match (x.as_i64(), y.as_i64(), x.as_u64(), y.as_u64()) {
            (Some(x), Some(y), _, _) => x == y,
            (_, _, Some(x), Some(y)) => x == y,
            _ => {
                let (x, y) = (x.as_f64().unwrap(), y.as_f64().unwrap());
                (x - y).abs() <= 1e-9 * x.abs().max(y.abs()).max(1.0)
            }
        },
        (Json::Array(x), Json::Array(y)) => x.len() == y.len() && x.iter().zip(y).all(|(x, y)| same(x, y)),
        (Json::Object(x), Json::Object(y)) => {
            x.len() == y.len() && x.iter().all(|(k, v)| y.get(k).is_some_and(|w| same(v, w)))
        }
        _ => a == b,
    }
}

fn check(vector: &Vector, registry: &Registry) {
    let records = codec::decode(vector.format, &vector.path, &vector.payload, registry, &DecodeOptions::default())
        .unwrap_or_else(|e| panic!("{}: decode failed: {e}", vector.name));
    let got = records_json::records_to_json(&records);
    assert!(same(&got, &vector.expect), "{}:\n got    {got}\n expect {}", vector.name, vector.expect);

    let mut encoded = Vec::new();
    codec::encode(vector.format, &vector.path, &records, registry, &mut encoded)
        .unwrap_or_else(|e| panic!("{}: encode failed: {e}", vector.name));
    let again = codec::decode(vector.format, &vector.path, &encoded, registry, &DecodeOptions::default())
        .unwrap_or_else(|e| panic!("{}: decoding our own encoding failed: {e}", vector.name));
    assert_eq!(again, records, "{}: round trip changed the records", vector.name);
    // TLV has one minimal form; the other vectors say whether theirs is ours.
    let canonical = vector.canonical.unwrap_or(vector.format == ContentFormat::Tlv);
    if canonical {
        assert_eq!(
            records_json::hex(&encoded),
            records_json::hex(&vector.payload),
            "{}: re-encoding is not byte-identical",
            vector.name
        );
    }
}

#[test]
fn spec_tlv_vectors() {
    let registry = vector_registry();
    for vector in load("spec-tlv.json") {
        check(&vector, &registry);
    }
}

#[test]
fn spec_senml_and_lwm2m_cbor_vectors() {
    let registry = vector_registry();
    for vector in load("spec-senml.json") {
        check(&vector, &registry);
    }
}

#[test]
fn real_client_vectors() {
    let registry = vector_registry();
    let vectors = load("real-client.json");
    for format in [ContentFormat::Tlv, ContentFormat::SenmlCbor, ContentFormat::SenmlJson, ContentFormat::Lwm2mCbor] {
        assert!(vectors.iter().any(|v| v.format == format), "no real-client vector for {format}");
    }
    for vector in vectors {
        check(&vector, &registry);
    }
}

#[test]
fn senml_name_only_lists() {
    // V5: Read-Composite request, and its equivalent with base names.
    let v5 = records_json::unhex("83a100662f332f302f30a100662f332f302f39a100662f312f302f31").unwrap();
    let paths = codec::decode_paths(ContentFormat::SenmlCbor, &v5, &DecodeOptions::default()).unwrap();
    let expect: Vec<Path> = ["/3/0/0", "/3/0/9", "/1/0/1"].iter().map(|p| p.parse().unwrap()).collect();
    assert_eq!(paths, expect);
    let mut encoded = Vec::new();
    codec::encode_paths(ContentFormat::SenmlCbor, &paths, &mut encoded).unwrap();
    assert_eq!(encoded, v5);
    let json = br#"[{"bn":"/3/0/","n":"0"},{"n":"9"},{"bn":"/1/0/1"}]"#;
    assert_eq!(codec::decode_paths(ContentFormat::SenmlJson, json, &DecodeOptions::default()).unwrap(), expect);
    let mut encoded = Vec::new();
    codec::encode_paths(ContentFormat::SenmlJson, &paths, &mut encoded).unwrap();
    assert_eq!(encoded, br#"[{"n":"/3/0/0"},{"n":"/3/0/9"},{"n":"/1/0/1"}]"#);
    assert_eq!(codec::decode_paths(ContentFormat::SenmlJson, &encoded, &DecodeOptions::default()).unwrap(), expect);
}

#[test]
fn rfc8428_example_is_valid_cbor_but_not_lwm2m() {
    // The RFC's pack names sensors by URN: valid SenML, not an LwM2M path.
    let rfc = records_json::unhex("87a721781b75726e3a6465763a6f773a3130653230373361303130383030363a22fb41d303a15b00106223614120050067766f6c7461676501615602fb405e066666666666a3006763757272656e74062402fb3ff3333333333333a3006763757272656e74062302fb3ff4cccccccccccda3006763757272656e74062202fb3ff6666666666666a3006763757272656e74062102f93e00a3006763757272656e74062002fb3ff999999999999aa3006763757272656e74060002fb3ffb333333333333").unwrap();
    let value: ciborium::Value = ciborium::de::from_reader(rfc.as_slice()).unwrap();
    assert_eq!(value.as_array().unwrap().len(), 7);
    let error =
        codec::decode(ContentFormat::SenmlCbor, &Path::ROOT, &rfc, &Registry::default(), &DecodeOptions::default())
            .unwrap_err();
    assert_eq!(error.offset, 1, "{error}");
    assert!(matches!(error.kind, codec::DecodeErrorKind::InvalidPath(_)), "{error}");
}
