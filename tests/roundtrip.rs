//! Property tests: for every codec, decode(encode(records)) == records over
//! arbitrary model-valid records (every data type, single and multiple
//! resources, 8- and 16-bit ids, known and unknown objects, SenML times), and
//! `decode_each` sees exactly what `decode` returns.

mod common;

use common::*;
use lwm2m_fota::codec::{self, DecodeOptions};
use lwm2m_fota::model::{ContentFormat, DataType, Path, Record};
use proptest::prelude::*;

fn round_trip(
    format: ContentFormat,
    path: &Path,
    records: &[Record<'_>],
) -> Result<Vec<Record<'static>>, TestCaseError> {
    let registry = registry();
    let mut payload = Vec::new();
    codec::encode(format, path, records, &registry, &mut payload)
        .map_err(|e| TestCaseError::fail(format!("{format} encode at {path}: {e}")))?;
    let decoded = codec::decode(format, path, &payload, &registry, &DecodeOptions::default())
        .map_err(|e| TestCaseError::fail(format!("{format} decode at {path}: {e}; payload {payload:02x?}")))?;
    // The streaming decoder sees the same records in the same order.
    let mut streamed = Vec::new();
    codec::decode_each(format, path, &payload, &registry, &DecodeOptions::default(), |r| streamed.push(r))
        .map_err(|e| TestCaseError::fail(format!("{format} decode_each at {path}: {e}")))?;
    prop_assert_eq!(&streamed, &decoded);
    Ok(decoded.into_iter().map(Record::into_owned).collect())
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
