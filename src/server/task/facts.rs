//! Facts from payloads: what a Read's answer, a notification or a Send says
//! about the device's /5/0 and `/3/0/3`, decoded by a pure function apart from
//! the transition table.

use alloc::borrow::Cow;

use crate::codec::{self, DecodeOptions};
use crate::model::{ContentFormat, DeliveryMethod, Path, Protocol, ProtocolSet, Registry, State, UpdateResult, Value};

/// What one payload says. `None` fields: the payload did not say.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub(super) struct Facts<'a> {
    /// `/5/0/3`.
    pub state: Option<State>,
    /// `/5/0/5`.
    pub result: Option<UpdateResult>,
    /// `/5/0/8`, when the payload answers for it: its instances, or CoAP
    /// alone when a Read of `/5/0` or `/5/0/8` has none (object5.md §5: only
    /// CoAP is safe then).
    pub protocols: Option<ProtocolSet>,
    /// `/5/0/9`, when present (`Some(None)`: a value no method has).
    pub delivery: Option<Option<DeliveryMethod>>,
    /// `/3/0/3`.
    pub version: Option<Cow<'a, str>>,
}

impl Facts<'_> {
    /// True when the payload carried State or Update Result.
    pub fn state_seen(&self) -> bool {
        self.state.is_some() || self.result.is_some()
    }
}

/// Decodes `payload` (an answer to a request of `requested`, a notification of
/// it, or a Send at `/`) into facts, record by record without allocating.
/// `None` when the payload does not decode: it then says nothing at all.
#[cfg(test)]
pub(super) fn decode<'a>(format: ContentFormat, requested: &Path, payload: &'a [u8]) -> Option<Facts<'a>> {
    let mut facts = Facts::default();
    decode_into(format, requested, payload, &mut facts).then_some(facts)
}

/// [`decode`] into the caller's `facts` (fresh, all `None`), which the hot
/// paths keep on their stack: false when the payload does not decode (the
/// facts are then partial, and must not be used).
pub(super) fn decode_into<'a>(
    format: ContentFormat,
    requested: &Path,
    payload: &'a [u8],
    facts: &mut Facts<'a>,
) -> bool {
    let mut protocols = ProtocolSet::EMPTY;
    let mut protocol_records = false;
    let decoded =
        codec::decode_each(format, requested, payload, &Registry::builtin(), &DecodeOptions::default(), |record| {
            let path = record.path;
            if path == Path::resource(5, 0, 3) {
                if let Some(code) = record.value.as_i64().and_then(State::from_code) {
                    facts.state = Some(code);
                }
            } else if path == Path::resource(5, 0, 5) {
                if let Some(code) = record.value.as_i64() {
                    facts.result = Some(UpdateResult::from_code(code));
                }
            } else if path.starts_with(&Path::resource(5, 0, 8)) {
                protocol_records = true;
                if let Some(protocol) = record.value.as_i64().and_then(Protocol::from_code) {
                    protocols = protocols.with(protocol);
                }
            } else if path == Path::resource(5, 0, 9) {
                facts.delivery = Some(record.value.as_i64().and_then(DeliveryMethod::from_code));
            } else if path == Path::resource(3, 0, 3) {
                if let Value::String(text) = record.value {
                    facts.version = Some(text);
                }
            }
        });
    if decoded.is_err() {
        return false;
    }
    let answers_protocols =
        protocol_records || requested.starts_with(&Path::resource(5, 0, 8)) || *requested == Path::instance(5, 0);
    if answers_protocols {
        facts.protocols = Some(if protocols.is_empty() && !protocol_records {
            ProtocolSet::EMPTY.with(Protocol::Coap)
        } else {
            protocols
        });
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Record;
    use alloc::vec::Vec;

    fn cbor(records: &[Record<'_>]) -> Vec<u8> {
        let mut out = Vec::new();
        codec::encode(ContentFormat::SenmlCbor, &Path::ROOT, records, &Registry::builtin(), &mut out).unwrap();
        out
    }

    #[test]
    fn a_send_says_state_result_version_and_delivery() {
        let payload = cbor(&[
            Record::new(Path::resource(3, 0, 3), Value::string("v2")),
            Record::new(Path::resource(5, 0, 3), Value::Integer(2)),
            Record::new(Path::resource(5, 0, 5), Value::Integer(0)),
            Record::new(Path::resource(5, 0, 9), Value::Integer(2)),
        ]);
        let facts = decode(ContentFormat::SenmlCbor, &Path::ROOT, &payload).unwrap();
        assert_eq!(facts.state, Some(State::Downloaded));
        assert_eq!(facts.result, Some(UpdateResult::Initial));
        assert_eq!(facts.version.as_deref(), Some("v2"));
        assert_eq!(facts.delivery, Some(Some(DeliveryMethod::Both)));
        // A Send at / without /5/0/8 says nothing about protocols.
        assert_eq!(facts.protocols, None);
        assert!(facts.state_seen());
    }

    #[test]
    fn a_read_of_the_instance_without_protocols_means_coap_only() {
        let payload = cbor(&[Record::new(Path::resource(5, 0, 3), Value::Integer(0))]);
        let facts = decode(ContentFormat::SenmlCbor, &Path::instance(5, 0), &payload).unwrap();
        assert_eq!(facts.protocols, Some(ProtocolSet::EMPTY.with(Protocol::Coap)));
        let listed = cbor(&[
            Record::new(Path::resource_instance(5, 0, 8, 0), Value::Integer(1)),
            Record::new(Path::resource_instance(5, 0, 8, 1), Value::Integer(99)),
        ]);
        let facts = decode(ContentFormat::SenmlCbor, &Path::instance(5, 0), &listed).unwrap();
        assert_eq!(facts.protocols, Some(ProtocolSet::EMPTY.with(Protocol::from_code(1).unwrap())));
    }

    #[test]
    fn text_answers_and_unknown_codes() {
        let facts = decode(ContentFormat::Text, &Path::resource(5, 0, 3), b"3").unwrap();
        assert_eq!(facts.state, Some(State::Updating));
        // State 7 does not exist: not a fact.
        let facts = decode(ContentFormat::Text, &Path::resource(5, 0, 3), b"7").unwrap();
        assert_eq!(facts.state, None);
        assert!(!facts.state_seen());
        let facts = decode(ContentFormat::Text, &Path::resource(5, 0, 9), b"9").unwrap();
        assert_eq!(facts.delivery, Some(None));
    }

    #[test]
    fn an_undecodable_payload_says_nothing() {
        assert_eq!(decode(ContentFormat::SenmlCbor, &Path::ROOT, &[0xff, 0x00]), None);
    }
}
