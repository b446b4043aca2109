//! One negative test per validation rule of every decoder and encoder: each bad
//! input gives the documented error kind at the documented byte offset.

use lwm2m_fota::codec::{self, DecodeError, DecodeErrorKind as Kind, DecodeOptions, EncodeError, TlvKind};
use lwm2m_fota::model::{ContentFormat, DataType, ObjectLink, Path, Record, Registry, Value};

fn hex(text: &str) -> Vec<u8> {
    let text: String = text.split_whitespace().collect();
    (0..text.len()).step_by(2).map(|i| u8::from_str_radix(&text[i..i + 2], 16).unwrap()).collect()
}

fn path(text: &str) -> Path {
    text.parse().unwrap()
}

fn decode_err(format: ContentFormat, at: &str, payload: &[u8]) -> DecodeError {
    decode_err_with(format, at, payload, &DecodeOptions::default())
}

fn decode_err_with(format: ContentFormat, at: &str, payload: &[u8], options: &DecodeOptions) -> DecodeError {
    match codec::decode(format, &path(at), payload, &Registry::default(), options) {
        Ok(records) => panic!("{format} {at} {payload:02x?} decoded to {records:?}"),
        Err(e) => e,
    }
}

/// Decodes and detaches the records from the payload.
fn decode_ok(format: ContentFormat, at: &str, payload: &[u8], registry: &Registry) -> Vec<Record<'static>> {
    codec::decode(format, &path(at), payload, registry, &DecodeOptions::default())
        .unwrap_or_else(|e| panic!("{format} {at}: {e}"))
        .into_iter()
        .map(Record::into_owned)
        .collect()
}

fn tlv(at: &str, payload: &str) -> DecodeError {
    decode_err(ContentFormat::Tlv, at, &hex(payload))
}

fn e(offset: usize, kind: Kind) -> DecodeError {
    DecodeError { offset, kind }
}

#[test]
fn tlv_truncation_at_every_part() {
    assert_eq!(tlv("/3/0", "c1"), e(1, Kind::Truncated)); // id missing
    assert_eq!(tlv("/3/0", "e1 01"), e(2, Kind::Truncated)); // 16-bit id cut
    assert_eq!(tlv("/3/0", "c8 00"), e(2, Kind::Truncated)); // length field missing
    assert_eq!(tlv("/3/0", "d0 00 01"), e(3, Kind::Truncated)); // 16-bit length cut
    assert_eq!(tlv("/3/0", "c3 00 61 62"), e(4, Kind::Truncated)); // value cut
    assert_eq!(tlv("/3/0/0", ""), e(0, Kind::Truncated));
}

#[test]
fn tlv_container_must_end_on_a_child_boundary() {
    // Instance 0 claims 4 bytes; its second child needs 2 more inside it.
    assert_eq!(tlv("/3", "08 00 04 c1 09 01 c1 0a 01"), e(6, Kind::ContainerLength));
    // Multiple resource 6 claims 4 bytes; its second instance's header is cut by it.
    assert_eq!(tlv("/3/0", "84 06 41 00 01 41 01 05"), e(5, Kind::ContainerLength));
}

#[test]
fn tlv_duplicate_ids_at_every_level() {
    assert_eq!(tlv("/3/0", "c1 09 01 c1 09 02"), e(3, Kind::DuplicateId { id: 9 }));
    // Out of order, then a duplicate: found when the container ends.
    assert_eq!(tlv("/3/0", "c1 0a 01 c1 09 01 c1 0a 02"), e(6, Kind::DuplicateId { id: 10 }));
    assert_eq!(tlv("/3", "08 00 00 08 00 00"), e(3, Kind::DuplicateId { id: 0 }));
    assert_eq!(tlv("/3/0/6", "86 06 41 00 01 41 00 02"), e(5, Kind::DuplicateId { id: 0 }));
    // Out of order without duplicates is fine.
    let ok = decode_ok(ContentFormat::Tlv, "/3/0", &hex("c1 0a 01 c1 09 02"), &Registry::default());
    assert_eq!(ok.len(), 2);
}

#[test]
fn tlv_identifier_types_where_they_do_not_belong() {
    assert_eq!(tlv("/3/0", "41 00 01"), e(0, Kind::UnexpectedTlv { found: TlvKind::ResourceInstance }));
    assert_eq!(tlv("/3", "c1 00 01"), e(0, Kind::UnexpectedTlv { found: TlvKind::Resource }));
    assert_eq!(tlv("/3", "08 00 03 08 01 00"), e(3, Kind::UnexpectedTlv { found: TlvKind::ObjectInstance }));
    assert_eq!(tlv("/3/0", "82 06 80 00"), e(2, Kind::UnexpectedTlv { found: TlvKind::MultipleResource }));
    assert_eq!(tlv("/3/0/6", "08 00 00"), e(0, Kind::UnexpectedTlv { found: TlvKind::ObjectInstance }));
    assert_eq!(tlv("/3/0/6/1", "c1 06 01"), e(0, Kind::UnexpectedTlv { found: TlvKind::Resource }));
}

#[test]
fn tlv_ids_must_match_the_request_path() {
    assert_eq!(tlv("/3/0", "08 01 03 c1 09 01"), e(0, Kind::IdMismatch { expected: 0, found: 1 }));
    assert_eq!(tlv("/5/0/1", "c0 02"), e(0, Kind::IdMismatch { expected: 1, found: 2 }));
    assert_eq!(tlv("/3/0/6/1", "41 02 05"), e(0, Kind::IdMismatch { expected: 1, found: 2 }));
    // One TLV answers a single resource; more is trailing data.
    assert_eq!(tlv("/5/0/1", "c0 01 c0 01"), e(2, Kind::TrailingBytes));
    assert_eq!(tlv("/3/0/6/1", "41 01 05 00"), e(3, Kind::TrailingBytes));
    assert_eq!(tlv("/3/0", "08 00 00 00"), e(3, Kind::TrailingBytes));
}

#[test]
fn tlv_value_widths_are_strict() {
    for width in [3usize, 5, 6, 7] {
        let payload = format!("c{width:x} 09 {}", "00".repeat(width));
        assert_eq!(tlv("/3/0", &payload), e(2, Kind::InvalidLength { data_type: DataType::Integer, length: width }));
    }
    assert_eq!(tlv("/5/0", "c0 0d"), e(2, Kind::InvalidLength { data_type: DataType::UnsignedInteger, length: 0 }));
    assert_eq!(tlv("/5/0", "c3 0c 00 00 00"), e(2, Kind::InvalidLength { data_type: DataType::Time, length: 3 }));
    assert_eq!(tlv("/5/0", "c2 0e 00 01"), e(2, Kind::InvalidLength { data_type: DataType::Boolean, length: 2 }));
    assert_eq!(tlv("/5/0", "c1 0e 02"), e(2, Kind::InvalidBoolean(2)));
    assert_eq!(
        tlv("/3/0", "85 16 43 00 00 00 03"),
        e(4, Kind::InvalidLength { data_type: DataType::Objlnk, length: 3 })
    );
    assert_eq!(tlv("/3/0", "c2 00 c3 28"), e(2, Kind::InvalidUtf8));
    assert_eq!(tlv("/3/0", "c3 00 61 ff 62"), e(3, Kind::InvalidUtf8));
    assert_eq!(tlv("/5/0", "c0 02"), e(2, Kind::ExecutableResource));
}

#[test]
fn tlv_float_widths() {
    let mut registry = Registry::default();
    registry.register(
        lwm2m_fota::model::ObjectDef::new(
            3303,
            "Temperature",
            lwm2m_fota::model::ObjectVersion::V1_0,
            true,
            false,
            vec![lwm2m_fota::model::ResourceDef::new(
                5700,
                "Sensor Value",
                lwm2m_fota::model::Operations::READ,
                DataType::Float,
                false,
                true,
            )],
        )
        .unwrap(),
    );
    let bad_payload = hex("e2 16 44 00 00");
    let bad = codec::decode(ContentFormat::Tlv, &path("/3303/0"), &bad_payload, &registry, &DecodeOptions::default());
    assert_eq!(bad.unwrap_err(), e(3, Kind::InvalidLength { data_type: DataType::Float, length: 2 }));
    let ok = decode_ok(ContentFormat::Tlv, "/3303/0", &hex("e4 16 44 3f c0 00 00"), &registry);
    assert_eq!(ok[0].value, Value::Float(1.5));
}

#[test]
fn tlv_cannot_answer_root() {
    assert_eq!(tlv("/", ""), e(0, Kind::UnsupportedPath { format: ContentFormat::Tlv, path: Path::ROOT }));
}

#[test]
fn record_limit_applies_to_every_multi_value_format() {
    let options = DecodeOptions::default().with_max_records(2);
    let tlv = hex("c1 09 01 c1 0a 01 c1 14 01");
    assert_eq!(decode_err_with(ContentFormat::Tlv, "/3/0", &tlv, &options), e(6, Kind::TooManyRecords { limit: 2 }));
    let senml = hex("83 a2 00 66 2f332f302f39 02 01 a2 00 66 2f332f302f39 02 02 a2 00 66 2f332f302f39 02 03");
    assert_eq!(
        decode_err_with(ContentFormat::SenmlCbor, "/", &senml, &options),
        e(23, Kind::TooManyRecords { limit: 2 })
    );
    let json = br#"[{"n":"/3/0/9","v":1},{"n":"/3/0/9","v":2},{"n":"/3/0/9","v":3}]"#;
    assert_eq!(decode_err_with(ContentFormat::SenmlJson, "/", json, &options).kind, Kind::TooManyRecords { limit: 2 });
    let lwm2m = hex("a1 82 03 00 a3 09 01 0a 01 14 01");
    assert_eq!(
        decode_err_with(ContentFormat::Lwm2mCbor, "/3/0", &lwm2m, &options),
        e(9, Kind::TooManyRecords { limit: 2 })
    );
    let legacy = br#"{"bn":"/3/0/","e":[{"n":"9","v":1},{"n":"10","v":1},{"n":"20","v":1}]}"#;
    assert_eq!(
        decode_err_with(ContentFormat::Lwm2mJson, "/3/0", legacy, &options).kind,
        Kind::TooManyRecords { limit: 2 }
    );
}

fn senml(at: &str, payload: &str) -> DecodeError {
    decode_err(ContentFormat::SenmlCbor, at, &hex(payload))
}

#[test]
fn senml_cbor_structure() {
    assert_eq!(senml("/", "a0"), e(0, Kind::InvalidField("SenML pack (expected an array)")));
    assert_eq!(senml("/", "81 80"), e(1, Kind::InvalidField("SenML record (expected a map)")));
    assert_eq!(senml("/", "82 a2 00 66 2f332f302f39 02 01"), e(12, Kind::Truncated));
    assert!(matches!(senml("/", "81 a0").kind, Kind::InvalidPath(_)));
    assert_eq!(senml("/", "80 00"), e(1, Kind::TrailingBytes));
    assert_eq!(senml("/", "81 a1 f4 00"), e(2, Kind::InvalidField("SenML label (expected an integer or text)")));
    assert_eq!(senml("/", "81 a1 21 01"), e(3, Kind::InvalidField("bn (expected text)")));
    assert_eq!(senml("/", "81 a1 00 62 2f ff"), e(5, Kind::InvalidUtf8)); // the offending byte
    assert_eq!(senml("/", "9f ff 00"), e(2, Kind::TrailingBytes));
    assert_eq!(senml("/", "ff"), e(0, Kind::InvalidField("SenML pack (expected an array)")));
}

#[test]
fn senml_cbor_record_rules() {
    // Label twice, two values, no value.
    assert_eq!(senml("/", "81 a3 00 66 2f332f302f39 02 01 02 02"), e(12, Kind::DuplicateLabel));
    assert_eq!(senml("/", "81 a3 00 66 2f332f302f39 02 01 03 61 78"), e(12, Kind::MultipleValues));
    assert_eq!(senml("/", "81 a1 00 66 2f332f302f39"), e(1, Kind::MissingValue));
    // A must-understand label ("x_") is refused; other unknown labels are skipped.
    assert_eq!(senml("/", "81 a3 00 66 2f332f302f39 62 785f 01 02 01"), e(10, Kind::MustUnderstandLabel));
    let ok = decode_ok(
        ContentFormat::SenmlCbor,
        "/",
        &hex("81 a4 00 66 2f332f302f39 61 78 82 01 a1 01 02 18 2a 02 02 01"),
        &Registry::default(),
    );
    assert_eq!(ok[0].value, Value::Integer(1));
    // bver newer than 10.
    assert_eq!(senml("/", "81 a3 20 0b 00 66 2f332f302f39 02 01"), e(1, Kind::UnsupportedVersion(11)));
    assert_eq!(senml("/", "81 a1 20 20"), e(3, Kind::InvalidField("bver (expected an unsigned integer)")));
}

#[test]
fn senml_cbor_paths() {
    assert!(matches!(senml("/", "81 a2 00 63 616263 02 01").kind, Kind::InvalidPath(_)));
    assert_eq!(
        senml("/5/0", "81 a2 00 66 2f332f302f39 02 01"),
        e(1, Kind::PathOutsideRequest { path: path("/3/0/9"), request: path("/5/0") })
    );
    assert_eq!(senml("/", "81 a2 00 64 2f332f30 02 01"), e(1, Kind::NotAValuePath(path("/3/0"))));
    // Base name stays in force until replaced.
    let records = decode_ok(
        ContentFormat::SenmlCbor,
        "/",
        &hex("83 a3 21 64 2f332f30 00 62 2f39 02 01 a2 00 63 2f3130 02 02 a3 21 64 2f352f30 00 62 2f33 02 00"),
        &Registry::default(),
    );
    let paths: Vec<String> = records.iter().map(|r| r.path.to_string()).collect();
    assert_eq!(paths, ["/3/0/9", "/3/0/10", "/5/0/3"]);
}

#[test]
fn senml_cbor_values_against_the_model() {
    // /3/0/9 Battery Level is an integer: text and out-of-range numbers are refused.
    assert_eq!(
        senml("/", "81 a2 00 66 2f332f302f39 03 61 78"),
        e(1, Kind::TypeMismatch { expected: DataType::Integer, found: "string" })
    );
    assert_eq!(
        senml("/", "81 a2 00 66 2f332f302f39 02 1b ffffffffffffffff"),
        e(1, Kind::NumberOutOfRange(DataType::Integer))
    );
    assert_eq!(senml("/", "81 a2 00 66 2f352f302f32 02 01"), e(1, Kind::ExecutableResource));
    // vlo must be "oid:iid".
    assert_eq!(senml("/", "81 a2 00 67 2f332f302f3232 63 766c6f 61 78"), e(1, Kind::InvalidField("object link")));
    // Non-finite times are refused.
    assert_eq!(senml("/", "81 a3 00 66 2f332f302f39 02 01 06 f9 7c00"), e(13, Kind::InvalidField("t")));
    // Numbers: tags other than 1 and 4 are refused; nested tags too.
    assert_eq!(
        senml("/", "81 a2 00 66 2f332f302f39 02 c2 41 01"),
        e(11, Kind::InvalidCbor("unsupported tag on a number"))
    );
    assert_eq!(senml("/", "81 a2 00 66 2f332f302f39 02 c1 c1 01"), e(11, Kind::InvalidCbor("nested tag in a number")));
}

#[test]
fn senml_cbor_depth_of_skipped_labels_is_bounded() {
    let mut payload = hex("81 a2 00 66 2f332f302f39 61 78");
    payload.extend(std::iter::repeat_n(0x81, 40));
    payload.push(0x00);
    let error = decode_err_with(ContentFormat::SenmlCbor, "/", &payload, &DecodeOptions::default().with_max_depth(8));
    assert_eq!(error.kind, Kind::TooDeep { limit: 8 });
}

fn json(at: &str, payload: &str) -> DecodeError {
    decode_err(ContentFormat::SenmlJson, at, payload.as_bytes())
}

#[test]
fn senml_json_rules() {
    assert_eq!(json("/", "{}"), e(0, Kind::InvalidJson("expected a SenML pack (an array)")));
    assert_eq!(json("/", "[{\"n\":\"/3/0/9\",\"v\":1}"), e(21, Kind::Truncated));
    assert_eq!(
        json("/", "[{\"n\":\"/3/0/9\" \"v\":1}]"),
        e(15, Kind::InvalidJson("expected ',' or a closing bracket"))
    );
    assert_eq!(json("/", "[] x"), e(3, Kind::TrailingBytes));
    assert_eq!(json("/", r#"[{"n":"/3/0/9","v":1,"v":2}]"#), e(21, Kind::DuplicateLabel));
    assert_eq!(json("/", r#"[{"n":"/3/0/9","v":1,"vs":"x"}]"#), e(21, Kind::MultipleValues));
    assert_eq!(json("/", r#"[{"n":"/3/0/9"}]"#), e(1, Kind::MissingValue));
    assert_eq!(json("/", r#"[{"n":"/3/0/9","v":1,"q_":0}]"#), e(21, Kind::MustUnderstandLabel));
    assert_eq!(json("/", r#"[{"n":"/3/0/9","v":"1"}]"#), e(19, Kind::InvalidField("v (expected a number)")));
    assert_eq!(json("/", r#"[{"n":"/3/0/9","vb":1}]"#), e(20, Kind::InvalidField("vb (expected true or false)")));
    assert_eq!(json("/", r#"[{"n":"/5/0/0","vd":"AQ*D"}]"#), e(23, Kind::InvalidBase64));
    assert_eq!(json("/", r#"[{"bver":11,"n":"/3/0/9","v":1}]"#), e(1, Kind::UnsupportedVersion(11)));
    assert_eq!(
        json("/", r#"[{"bver":-1,"n":"/3/0/9","v":1}]"#),
        e(9, Kind::InvalidField("bver (expected an unsigned integer)"))
    );
    assert_eq!(
        json("/5/0", r#"[{"n":"/3/0/9","v":1}]"#),
        e(1, Kind::PathOutsideRequest { path: path("/3/0/9"), request: path("/5/0") })
    );
    let mut deep = String::from(r#"[{"n":"/3/0/9","v":1,"x":"#);
    deep.push_str(&"[".repeat(40));
    let error = json("/", &deep);
    assert!(matches!(error.kind, Kind::TooDeep { .. }), "{error}");
}

fn lwm2m(at: &str, payload: &str) -> DecodeError {
    decode_err(ContentFormat::Lwm2mCbor, at, &hex(payload))
}

#[test]
fn lwm2m_cbor_rules() {
    assert_eq!(lwm2m("/", "80"), e(0, Kind::InvalidField("LwM2M-CBOR node (expected a map)")));
    assert_eq!(lwm2m("/", "a1 20 01"), e(1, Kind::InvalidField("LwM2M-CBOR key (expected an id or an array of ids)")));
    assert_eq!(
        lwm2m("/", "a1 81 61 78 01"),
        e(2, Kind::InvalidField("LwM2M-CBOR key (expected an id or an array of ids)"))
    );
    assert!(matches!(lwm2m("/", "a1 83 19 ffff 00 00 01").kind, Kind::InvalidPath(_)));
    assert!(matches!(lwm2m("/", "a1 85 01 02 03 04 05 01").kind, Kind::InvalidPath(_)));
    assert_eq!(lwm2m("/", "a1 83 05 00 03 f6"), e(5, Kind::NullValue));
    assert_eq!(lwm2m("/", "a1 83 05 00 03 80"), e(5, Kind::InvalidField("leaf value (found a container)")));
    assert_eq!(lwm2m("/", "a1 82 05 00 01"), e(1, Kind::NotAValuePath(path("/5/0"))));
    assert_eq!(
        lwm2m("/3/0", "a1 83 05 00 03 01"),
        e(1, Kind::PathOutsideRequest { path: path("/5/0/3"), request: path("/3/0") })
    );
    assert_eq!(lwm2m("/", "a1 83 05 00 03 01 00"), e(6, Kind::TrailingBytes));
    // A path twice, or a resource both whole and by instance.
    assert_eq!(lwm2m("/", "a2 83 05 00 03 01 83 05 00 03 02"), e(6, Kind::ConflictingPaths(path("/5/0/3"))));
    assert_eq!(lwm2m("/", "a2 84 05 00 08 00 01 83 05 00 08 02"), e(7, Kind::ConflictingPaths(path("/5/0/8/0"))));
    assert_eq!(lwm2m("/", "a1 83 05 00 03"), e(5, Kind::Truncated));
    assert_eq!(
        lwm2m("/", "a1 83 05 00 03 61 78"),
        e(5, Kind::TypeMismatch { expected: DataType::Integer, found: "string" })
    );
    // Empty keys add no segment: nesting is bounded by max_depth, not by the path.
    let mut nested = Vec::new();
    for _ in 0..40 {
        nested.extend([0xa1, 0x80]);
    }
    nested.push(0x01);
    let error = decode_err_with(ContentFormat::Lwm2mCbor, "/", &nested, &DecodeOptions::default().with_max_depth(8));
    assert_eq!(error.kind, Kind::TooDeep { limit: 8 });
}

#[test]
fn lwm2m_json_rules() {
    let d = |p: &str| decode_err(ContentFormat::Lwm2mJson, "/3/0", p.as_bytes());
    assert_eq!(d(r#"{"bn":"/3/0/","e":[{"n":"9"}]}"#), e(19, Kind::MissingValue));
    assert!(matches!(d(r#"{"e":[{"n":"9","v":1}]}"#).kind, Kind::InvalidPath(_)));
    assert_eq!(d(r#"{"e":[{"n":"9","v":1,"sv":"x"}]}"#), e(21, Kind::MultipleValues));
    assert_eq!(d(r#"{"bn":"/3/0/","e":[{"n":"9","bv":2}]}"#), e(33, Kind::InvalidField("bv (expected true or false)")));
    assert_eq!(d(r#"{"bn":"/3/0/","e":[{"n":"9","v":"x"}]}"#), e(32, Kind::InvalidField("v (expected a number)")));
    assert_eq!(d(r#"[]"#), e(0, Kind::InvalidJson("expected an LwM2M JSON object")));
}

#[test]
fn text_rules() {
    let t = |at: &str, p: &str| decode_err(ContentFormat::Text, at, p.as_bytes());
    for bad in ["", "12a", "+1", " 1", "1.5", "99999999999999999999"] {
        assert_eq!(t("/3/0/9", bad), e(0, Kind::InvalidText(DataType::Integer)), "{bad:?}");
    }
    assert_eq!(t("/5/0/13", "-1"), e(0, Kind::InvalidText(DataType::UnsignedInteger)));
    assert_eq!(t("/5/0/14", "true"), e(0, Kind::InvalidText(DataType::Boolean)));
    assert_eq!(t("/3/0/22/0", "3"), e(0, Kind::InvalidText(DataType::Objlnk)));
    assert_eq!(t("/5/0/0", "AQ*D"), e(2, Kind::InvalidBase64));
    assert_eq!(t("/5/0/2", ""), e(0, Kind::ExecutableResource));
    assert_eq!(t("/5/0", "1"), e(0, Kind::UnsupportedPath { format: ContentFormat::Text, path: path("/5/0") }));
    assert_eq!(decode_err(ContentFormat::Text, "/3/0/0", b"ab\xffc"), e(2, Kind::InvalidUtf8));
}

#[test]
fn opaque_and_single_cbor_rules() {
    assert_eq!(
        decode_err(ContentFormat::Opaque, "/5/0/1", b"x"),
        e(0, Kind::TypeMismatch { expected: DataType::String, found: "opaque payload" })
    );
    assert_eq!(
        decode_err(ContentFormat::Opaque, "/5/0", b"x"),
        e(0, Kind::UnsupportedPath { format: ContentFormat::Opaque, path: path("/5/0") })
    );
    assert_eq!(decode_err(ContentFormat::Cbor, "/5/0/3", &hex("01 01")), e(1, Kind::TrailingBytes));
    assert_eq!(decode_err(ContentFormat::Cbor, "/5/0/3", &hex("f6")), e(0, Kind::NullValue));
    assert_eq!(decode_err(ContentFormat::Cbor, "/5/0/3", &hex("")), e(0, Kind::Truncated));
    assert_eq!(
        decode_err(ContentFormat::Cbor, "/5/0/3", &hex("61 78")),
        e(0, Kind::TypeMismatch { expected: DataType::Integer, found: "string" })
    );
    assert_eq!(
        decode_err(ContentFormat::LinkFormat, "/", b"</5>"),
        e(0, Kind::UnsupportedFormat(ContentFormat::LinkFormat))
    );
}

#[test]
fn decode_into_leaves_output_untouched_on_error() {
    let payload = hex("c1 09 01 c1 0a");
    let mut out = vec![Record::new(path("/1/0/0"), Value::Integer(1))];
    let result = codec::decode_into(
        ContentFormat::Tlv,
        &path("/3/0"),
        &payload,
        &Registry::default(),
        &DecodeOptions::default(),
        &mut out,
    );
    assert!(result.is_err());
    assert_eq!(out.len(), 1);
}

fn encode_err(format: ContentFormat, at: &str, records: &[Record<'_>]) -> EncodeError {
    let mut buf = Vec::new();
    codec::encode(format, &path(at), records, &Registry::default(), &mut buf).unwrap_err()
}

#[test]
fn encoder_rules() {
    let battery = Record::new(path("/3/0/9"), Value::Integer(5));
    assert_eq!(
        encode_err(ContentFormat::Tlv, "/", std::slice::from_ref(&battery)),
        EncodeError::UnsupportedPath { format: ContentFormat::Tlv, path: Path::ROOT }
    );
    assert_eq!(
        encode_err(ContentFormat::SenmlCbor, "/5/0", std::slice::from_ref(&battery)),
        EncodeError::PathOutsideRequest { path: path("/3/0/9"), request: path("/5/0") }
    );
    assert_eq!(
        encode_err(ContentFormat::SenmlJson, "/", &[Record::new(path("/3/0"), Value::Integer(1))]),
        EncodeError::NotAValuePath(path("/3/0"))
    );
    assert_eq!(
        encode_err(ContentFormat::Tlv, "/3/0", &[battery.clone(), battery.clone()]),
        EncodeError::ConflictingRecords(path("/3/0/9"))
    );
    assert_eq!(
        encode_err(
            ContentFormat::Lwm2mCbor,
            "/3/0",
            &[Record::new(path("/3/0/6"), Value::Integer(1)), Record::new(path("/3/0/6/0"), Value::Integer(1))]
        ),
        EncodeError::ConflictingRecords(path("/3/0/6/0"))
    );
    assert_eq!(
        encode_err(ContentFormat::Tlv, "/3/0", &[Record::new(path("/3/0/9"), Value::UnsignedInteger(5))]),
        EncodeError::TypeMismatch {
            path: path("/3/0/9"),
            expected: DataType::Integer,
            found: DataType::UnsignedInteger
        }
    );
    let timed = Record { time: Some(1.0), ..battery.clone() };
    assert_eq!(
        encode_err(ContentFormat::Tlv, "/3/0", std::slice::from_ref(&timed)),
        EncodeError::TimeNotSupported(ContentFormat::Tlv)
    );
    assert_eq!(
        encode_err(ContentFormat::Text, "/3/0/9", std::slice::from_ref(&timed)),
        EncodeError::TimeNotSupported(ContentFormat::Text)
    );
    assert_eq!(
        encode_err(ContentFormat::SenmlCbor, "/3/0", &[timed.clone(), Record::new(path("/3/0/10"), Value::Integer(1))]),
        EncodeError::TimelessAfterTimed(path("/3/0/10"))
    );
    assert_eq!(
        encode_err(ContentFormat::Text, "/3/0/9", &[battery.clone(), battery.clone()]),
        EncodeError::NotSingleValue(2)
    );
    assert_eq!(
        encode_err(ContentFormat::Opaque, "/3/0/9", std::slice::from_ref(&battery)),
        EncodeError::UnsupportedValue { format: ContentFormat::Opaque, data_type: DataType::Integer }
    );
    let unknown_nan = Record::new(path("/32769/0/1"), Value::Float(f64::NAN));
    assert_eq!(
        encode_err(ContentFormat::SenmlJson, "/", std::slice::from_ref(&unknown_nan)),
        EncodeError::NonFinite(path("/32769/0/1"))
    );
    assert_eq!(
        encode_err(ContentFormat::Text, "/32769/0/1", std::slice::from_ref(&unknown_nan)),
        EncodeError::NonFinite(path("/32769/0/1"))
    );
    assert_eq!(
        encode_err(ContentFormat::Lwm2mJson, "/", std::slice::from_ref(&battery)),
        EncodeError::UnsupportedPath { format: ContentFormat::Lwm2mJson, path: Path::ROOT }
    );
    let huge = Record::new(path("/5/0/0"), Value::Opaque(vec![0u8; 1 << 24].into()));
    assert_eq!(encode_err(ContentFormat::Tlv, "/5/0/0", &[huge]), EncodeError::ValueTooLong(1 << 24));
    assert_eq!(
        encode_err(ContentFormat::LinkFormat, "/", &[]),
        EncodeError::UnsupportedFormat(ContentFormat::LinkFormat)
    );
    // Encoding an object link where the model has one is fine; elsewhere a mismatch.
    let link = Record::new(path("/3/0/22/0"), Value::Objlnk(ObjectLink { object_id: 3, instance_id: 0 }));
    let mut buf = Vec::new();
    codec::encode(ContentFormat::Tlv, &path("/3/0/22"), &[link], &Registry::default(), &mut buf).unwrap();
    assert_eq!(buf, hex("86 16 44 00 00030000")[..2].iter().chain(&hex("44 00 00030000")).copied().collect::<Vec<_>>());
}
