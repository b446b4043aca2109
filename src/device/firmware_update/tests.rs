//! Every arm of [`FirmwareUpdate::step`]: the object is put in the arm's phase
//! directly, given the arm's input, and checked for the answer, the phase and
//! Update Result after, and the exact outputs.

use alloc::vec;
use alloc::vec::Vec;

use super::*;
use crate::device::CountingSink;

use FirmwareOutput as O;
use ResponseCode as Code;
use UpdateResult as R;

const NOW: Instant = Instant::from_millis(10_000);
const URI: &str = "coap://fw.example/v2.bin";

fn config() -> FirmwareUpdateConfig {
    FirmwareUpdateConfig {
        version: ObjectVersion::V1_2,
        protocols: ProtocolSet::EMPTY.with(Protocol::Coap).with(Protocol::Http),
        delivery: DeliveryMethod::Both,
        max_package_size: 64,
        ..FirmwareUpdateConfig::default()
    }
}

fn pull(offset: u64) -> Transfer {
    Transfer::Pull { offset }
}

fn pushed(received: u64, offset: u64, len: u32, more: bool) -> Transfer {
    Transfer::Push { received, last_block: Some(LastBlock { offset, len, more }) }
}

/// The object in `phase` with `result`, as if it had got there at time 0 (a
/// pull download in progress has its Package URI).
fn at(phase: Phase, result: UpdateResult) -> FirmwareUpdate {
    let mut fw = FirmwareUpdate::new(config());
    fw.phase = phase;
    fw.result = result;
    if let Phase::Downloading(Transfer::Pull { .. }) = phase {
        fw.package_uri = URI.into();
    }
    fw
}

/// What one input gave: the answer (a request's first output), then the rest.
#[derive(Debug, PartialEq)]
struct Outcome {
    answer: Option<ResponseCode>,
    outputs: Vec<FirmwareOutput>,
}

fn give(fw: &mut FirmwareUpdate, input: FirmwareInput<'_>) -> Result<Outcome, FirmwareError> {
    fw.handle(NOW, input)?;
    let mut outputs: Vec<FirmwareOutput> = core::iter::from_fn(|| fw.poll_output()).collect();
    let answer = match outputs.first() {
        Some(O::Respond(code)) => Some(*code),
        _ => None,
    };
    if answer.is_some() {
        outputs.remove(0);
    }
    assert!(!outputs.iter().any(|o| matches!(o, O::Respond(_))), "one answer, first: {outputs:?}");
    Ok(outcome(answer, outputs))
}

fn outcome(answer: Option<ResponseCode>, outputs: Vec<FirmwareOutput>) -> Outcome {
    Outcome { answer, outputs }
}

fn answered(code: ResponseCode, outputs: Vec<FirmwareOutput>) -> Result<Outcome, FirmwareError> {
    Ok(outcome(Some(code), outputs))
}

fn reported(outputs: Vec<FirmwareOutput>) -> Result<Outcome, FirmwareError> {
    Ok(outcome(None, outputs))
}

fn write<'a>(resource: u16, value: &'a Value<'a>) -> FirmwareInput<'a> {
    FirmwareInput::Write { resource, value }
}

fn push<'a>(block: PackageBlock<'a>, sink: &'a mut dyn PackageSink) -> FirmwareInput<'a> {
    FirmwareInput::WritePackageBlock { block, sink }
}

fn execute<'a>(resource: u16) -> FirmwareInput<'a> {
    FirmwareInput::Execute { resource }
}

fn block(number: u32, more: bool, data: &[u8]) -> PackageBlock<'_> {
    PackageBlock { number, more, size: 16, data, total_size: None }
}

/// The outputs of a change of State (`/5/0/12` exists in object 1.2).
const STATE_CHANGED: [FirmwareOutput; 2] = [O::ResourceChanged(3), O::ResourceChanged(12)];

fn all_phases() -> [Phase; 6] {
    [
        Phase::Idle,
        Phase::Downloading(pull(100)),
        Phase::Downloading(pushed(32, 16, 16, true)),
        Phase::Downloaded { transfer: pull(100), deferred_until: None },
        Phase::Downloaded { transfer: pushed(40, 32, 8, false), deferred_until: Some(NOW) },
        Phase::Updating { transfer: pull(100) },
    ]
}

/// A store that refuses at one step.
struct Refusing {
    begin: Option<PackageError>,
    write: Option<PackageError>,
    finish: Option<PackageError>,
}

impl PackageSink for Refusing {
    fn begin(&mut self, _: Option<u64>) -> Result<(), PackageError> {
        self.begin.map_or(Ok(()), Err)
    }
    fn write(&mut self, _: u64, _: &[u8]) -> Result<(), PackageError> {
        self.write.map_or(Ok(()), Err)
    }
    fn finish(&mut self, _: u64) -> Result<(), PackageError> {
        self.finish.map_or(Ok(()), Err)
    }
}

// ----- requests no State accepts -----

#[test]
fn unknown_resources_are_4_04_in_every_phase() {
    for phase in all_phases() {
        let mut fw = FirmwareUpdate {
            config: FirmwareUpdateConfig { version: ObjectVersion::V1_0, ..config() },
            ..at(phase, R::Initial)
        };
        let before = fw.clone();
        assert_eq!(give(&mut fw, write(99, &Value::Integer(1))), answered(Code::NOT_FOUND, vec![]));
        // Cancel and Severity do not exist in object 1.0.
        assert_eq!(give(&mut fw, execute(10)), answered(Code::NOT_FOUND, vec![]));
        assert_eq!(give(&mut fw, write(11, &Value::Integer(1))), answered(Code::NOT_FOUND, vec![]));
        assert_eq!(fw.phase, before.phase);
    }
}

#[test]
fn not_writable_not_executable_and_push_on_a_pull_only_device_are_4_05() {
    let pull_only = FirmwareUpdateConfig { delivery: DeliveryMethod::Pull, ..config() };
    for phase in all_phases() {
        let mut fw = at(phase, R::Initial);
        assert_eq!(give(&mut fw, write(3, &Value::Integer(0))), answered(Code::METHOD_NOT_ALLOWED, vec![]));
        assert_eq!(give(&mut fw, write(0, &Value::Opaque(vec![0].into()))), answered(Code::METHOD_NOT_ALLOWED, vec![]));
        assert_eq!(give(&mut fw, execute(3)), answered(Code::METHOD_NOT_ALLOWED, vec![]));
        let mut fw = FirmwareUpdate { config: pull_only.clone(), ..at(phase, R::Initial) };
        let mut sink = CountingSink::default();
        // Even the reset value: a pull-only device has no Package to write.
        assert_eq!(
            give(&mut fw, push(PackageBlock::whole(&[0]), &mut sink)),
            answered(Code::METHOD_NOT_ALLOWED, vec![])
        );
        assert_eq!((fw.phase, sink.transfers), (phase, 0));
    }
}

#[test]
fn invalid_values_and_malformed_blocks_are_4_00_in_every_phase() {
    let long = "coap://h/".repeat(30);
    for phase in all_phases() {
        let mut fw = at(phase, R::Initial);
        for (resource, value) in [
            (1, Value::string(&long)),
            (1, Value::Integer(1)),
            (11, Value::Integer(3)),
            (11, Value::string("x")),
            (13, Value::Integer(-1)),
            (13, Value::Boolean(true)),
            (14, Value::Integer(1)),
        ] {
            assert_eq!(
                give(&mut fw, write(resource, &value)),
                answered(Code::BAD_REQUEST, vec![]),
                "{resource} {value:?}"
            );
        }
        // A block with more to come must be a whole block.
        let mut sink = CountingSink::default();
        assert_eq!(give(&mut fw, push(block(0, true, &[1; 5]), &mut sink)), answered(Code::BAD_REQUEST, vec![]));
        assert_eq!((fw.phase, sink.transfers), (phase, 0));
    }
}

// ----- settings -----

#[test]
fn settings_are_written_in_every_phase() {
    for phase in all_phases() {
        let mut fw = at(phase, R::Initial);
        let persisted = |resource| vec![O::ResourceChanged(resource), O::Persist];
        assert_eq!(give(&mut fw, write(11, &Value::Integer(0))), answered(Code::CHANGED, persisted(11)));
        assert_eq!(give(&mut fw, write(13, &Value::UnsignedInteger(60))), answered(Code::CHANGED, persisted(13)));
        assert_eq!(give(&mut fw, write(13, &Value::Integer(70))), answered(Code::CHANGED, persisted(13)));
        assert_eq!(give(&mut fw, write(14, &Value::Boolean(true))), answered(Code::CHANGED, persisted(14)));
        assert_eq!((fw.severity, fw.maximum_defer_period, fw.automatic_upgrade), (0, 70, true));
        assert_eq!(fw.phase, phase);
    }
}

// ----- Package URI -----

#[test]
fn t1_a_package_uri_in_idle_starts_a_download() {
    let mut fw = at(Phase::Idle, R::IntegrityCheckFailure);
    let uri = Value::string(URI);
    let mut want = vec![O::ResourceChanged(1)];
    want.extend(STATE_CHANGED);
    want.extend([O::ResourceChanged(5), O::Persist, O::StartDownload { uri: URI.into(), offset: 0 }]);
    assert_eq!(give(&mut fw, write(1, &uri)), answered(Code::CHANGED, want));
    assert_eq!((fw.phase, fw.result, fw.package_uri.as_str()), (Phase::Downloading(pull(0)), R::Initial, URI));
    assert_eq!(fw.last_state_change, 10);
}

#[test]
fn t4_before_the_download_a_bad_uri_is_update_result_7_or_9() {
    let push_only = FirmwareUpdateConfig { delivery: DeliveryMethod::Push, ..config() };
    for (config, uri, result) in [
        (config(), "not a uri", R::InvalidUri),
        (config(), "https://h/fw", R::UnsupportedProtocol),
        (push_only, URI, R::UnsupportedProtocol),
    ] {
        let mut fw = FirmwareUpdate { config, ..at(Phase::Idle, R::Initial) };
        let value = Value::string(uri);
        let want = vec![O::ResourceChanged(1), O::ResourceChanged(5), O::Persist];
        assert_eq!(give(&mut fw, write(1, &value)), answered(Code::CHANGED, want));
        assert_eq!((fw.phase, fw.result, fw.package_uri.as_str()), (Phase::Idle, result, uri));
        // The same again: only the Persist of an unchanged object.
        assert_eq!(give(&mut fw, write(1, &value)), answered(Code::CHANGED, vec![O::Persist]));
    }
}

#[test]
fn a_package_uri_out_of_idle_is_refused() {
    for phase in all_phases().into_iter().skip(1) {
        let mut fw = at(phase, R::Initial);
        let code = if phase.state() == State::Updating { Code::METHOD_NOT_ALLOWED } else { Code::BAD_REQUEST };
        for uri in [URI, "not a uri", "https://h/fw"] {
            assert_eq!(give(&mut fw, write(1, &Value::string(uri))), answered(code, vec![]), "{phase:?}");
        }
        assert_eq!(fw.phase, phase);
    }
}

// ----- reset -----

fn resets() -> [fn(&mut CountingSink) -> FirmwareInput<'_>; 3] {
    static EMPTY_URI: Value<'static> = Value::String(Cow::Borrowed(""));
    [
        |_| write(1, &EMPTY_URI),
        |sink| push(PackageBlock::whole(&[0]), sink),
        |sink| push(PackageBlock::whole(&[]), sink),
    ]
}

#[test]
fn a_reset_while_updating_is_4_05() {
    for reset in resets() {
        let mut fw = at(Phase::Updating { transfer: pull(9) }, R::Initial);
        let mut sink = CountingSink::default();
        assert_eq!(give(&mut fw, reset(&mut sink)), answered(Code::METHOD_NOT_ALLOWED, vec![]));
        assert_eq!(fw.phase, Phase::Updating { transfer: pull(9) });
    }
}

#[test]
fn a_reset_in_idle_clears_a_stale_update_result() {
    for reset in resets() {
        let mut fw = at(Phase::Idle, R::InvalidUri);
        fw.package_uri = "not a uri".into();
        let mut sink = CountingSink::default();
        let want = vec![O::ResourceChanged(1), O::ResourceChanged(5), O::Persist];
        assert_eq!(give(&mut fw, reset(&mut sink)), answered(Code::CHANGED, want));
        assert_eq!((fw.phase, fw.result, fw.package_uri.as_str()), (Phase::Idle, R::Initial, ""));
    }
}

#[test]
fn t5_a_reset_while_downloading_stops_the_download() {
    for reset in resets() {
        for (transfer, abort) in [(pull(100), true), (pushed(32, 16, 16, true), false)] {
            let mut fw = at(Phase::Downloading(transfer), R::Initial);
            let mut sink = CountingSink::default();
            let mut want = if abort {
                vec![O::AbortDownload, O::DiscardImage, O::ResourceChanged(1)]
            } else {
                vec![O::DiscardImage]
            };
            want.extend(STATE_CHANGED);
            want.push(O::Persist);
            assert_eq!(give(&mut fw, reset(&mut sink)), answered(Code::CHANGED, want));
            assert_eq!((fw.phase, fw.result, fw.package_uri.as_str()), (Phase::Idle, R::Initial, ""));
            assert_eq!(sink.transfers, 0);
        }
    }
}

#[test]
fn t9_a_reset_when_downloaded_discards_the_image() {
    for reset in resets() {
        let mut fw = at(Phase::Downloaded { transfer: pull(100), deferred_until: Some(NOW) }, R::Deferred);
        let mut sink = CountingSink::default();
        let mut want = vec![O::DiscardImage];
        want.extend(STATE_CHANGED);
        want.extend([O::ResourceChanged(5), O::Persist]);
        assert_eq!(give(&mut fw, reset(&mut sink)), answered(Code::CHANGED, want));
        assert_eq!((fw.phase, fw.result, fw.poll_timeout()), (Phase::Idle, R::Initial, None));
    }
}

// ----- Package blocks -----

#[test]
fn a_block_while_updating_is_4_05() {
    let mut fw = at(Phase::Updating { transfer: pushed(40, 32, 8, false) }, R::Initial);
    let mut sink = CountingSink::default();
    // Not even the final block again.
    assert_eq!(give(&mut fw, push(block(2, false, &[1; 8]), &mut sink)), answered(Code::METHOD_NOT_ALLOWED, vec![]));
    assert_eq!(give(&mut fw, push(block(0, true, &[1; 16]), &mut sink)), answered(Code::METHOD_NOT_ALLOWED, vec![]));
    assert_eq!(sink, CountingSink::default());
}

#[test]
fn the_final_block_again_after_t3_is_acknowledged_not_written() {
    let downloaded = Phase::Downloaded { transfer: pushed(40, 32, 8, false), deferred_until: None };
    let mut fw = at(downloaded, R::Initial);
    let mut sink = CountingSink::default();
    assert_eq!(give(&mut fw, push(block(2, false, &[1; 8]), &mut sink)), answered(Code::CHANGED, vec![]));
    // The same block number with other bytes is no repetition.
    assert_eq!(give(&mut fw, push(block(2, false, &[1; 7]), &mut sink)), answered(Code::BAD_REQUEST, vec![]));
    assert_eq!((fw.phase, sink.written), (downloaded, 0));
}

#[test]
fn a_block_when_downloaded_or_pulling_is_4_00() {
    for phase in [
        Phase::Downloaded { transfer: pull(100), deferred_until: None },
        Phase::Downloaded { transfer: pushed(40, 32, 8, false), deferred_until: None },
        Phase::Downloading(pull(100)),
    ] {
        let mut fw = at(phase, R::Initial);
        let mut sink = CountingSink::default();
        assert_eq!(give(&mut fw, push(block(0, true, &[1; 16]), &mut sink)), answered(Code::BAD_REQUEST, vec![]));
        assert_eq!(give(&mut fw, push(PackageBlock::whole(b"img"), &mut sink)), answered(Code::BAD_REQUEST, vec![]));
        assert_eq!((fw.phase, sink.transfers), (phase, 0));
    }
}

#[test]
fn the_block_just_accepted_again_is_acknowledged_not_written() {
    let downloading = Phase::Downloading(pushed(32, 16, 16, true));
    let mut fw = at(downloading, R::Initial);
    let mut sink = CountingSink::default();
    assert_eq!(give(&mut fw, push(block(1, true, &[1; 16]), &mut sink)), answered(Code::CONTINUE, vec![]));
    assert_eq!((fw.phase, sink.written), (downloading, 0));
}

#[test]
fn t2_the_first_block_starts_a_push() {
    let mut fw = at(Phase::Idle, R::ConnectionLost);
    fw.package_uri = URI.into();
    let mut sink = CountingSink::default();
    let mut want = vec![O::ResourceChanged(1)];
    want.extend(STATE_CHANGED);
    want.extend([O::ResourceChanged(5), O::Persist, O::Persist]);
    assert_eq!(give(&mut fw, push(block(0, true, &[1; 16]), &mut sink)), answered(Code::CONTINUE, want));
    assert_eq!(
        (fw.phase, fw.result, fw.package_uri.as_str()),
        (Phase::Downloading(pushed(16, 0, 16, true)), R::Initial, "")
    );
    assert_eq!((sink.transfers, sink.written), (1, 16));
}

#[test]
fn t2_a_new_block_0_restarts_a_push() {
    let mut fw = at(Phase::Downloading(pushed(32, 16, 16, true)), R::Initial);
    let mut sink = CountingSink::default();
    assert_eq!(
        give(&mut fw, push(block(0, true, &[2; 16]), &mut sink)),
        answered(Code::CONTINUE, vec![O::Persist, O::Persist])
    );
    assert_eq!((fw.phase, sink.transfers), (Phase::Downloading(pushed(16, 0, 16, true)), 1));
}

#[test]
fn t2_then_t3_a_whole_package_downloads_at_once() {
    let mut fw = at(Phase::Idle, R::Initial);
    let mut sink = CountingSink::default();
    let mut want = STATE_CHANGED.to_vec();
    want.push(O::Persist);
    want.extend(STATE_CHANGED);
    want.push(O::Persist);
    assert_eq!(give(&mut fw, push(PackageBlock::whole(b"image"), &mut sink)), answered(Code::CHANGED, want));
    let transfer = Transfer::Push { received: 5, last_block: Some(LastBlock { offset: 0, len: 5, more: false }) };
    assert_eq!(fw.phase, Phase::Downloaded { transfer, deferred_until: None });
}

#[test]
fn t4_an_announced_image_too_large_is_4_13_before_a_byte() {
    for phase in [Phase::Idle, Phase::Downloading(pushed(32, 16, 16, true))] {
        let mut fw = at(phase, R::Initial);
        let mut sink = CountingSink::default();
        let announced = PackageBlock { total_size: Some(65), ..block(0, true, &[1; 16]) };
        let mut want = if phase == Phase::Idle { vec![] } else { STATE_CHANGED.to_vec() };
        want.extend([O::ResourceChanged(5), O::Persist]);
        assert_eq!(give(&mut fw, push(announced, &mut sink)), answered(Code::REQUEST_ENTITY_TOO_LARGE, want));
        assert_eq!((fw.phase, fw.result, sink.transfers), (Phase::Idle, R::NotEnoughFlash, 0));
    }
}

#[test]
fn t4_a_store_that_refuses_the_transfer() {
    for (error, code) in [
        (PackageError::NotEnoughFlash, Code::REQUEST_ENTITY_TOO_LARGE),
        (PackageError::OutOfRam, Code::INTERNAL_SERVER_ERROR),
        (PackageError::UnsupportedPackageType, Code::BAD_REQUEST),
    ] {
        let mut fw = at(Phase::Idle, R::Initial);
        let mut sink = Refusing { begin: Some(error), write: None, finish: None };
        let want = vec![O::DiscardImage, O::ResourceChanged(5), O::Persist];
        assert_eq!(give(&mut fw, push(block(0, true, &[1; 16]), &mut sink)), answered(code, want));
        assert_eq!((fw.phase, fw.result), (Phase::Idle, error.update_result()));
    }
}

#[test]
fn the_next_block_is_stored_and_the_last_is_t3() {
    let mut fw = at(Phase::Downloading(pushed(32, 16, 16, true)), R::Initial);
    let mut sink = CountingSink::default();
    assert_eq!(give(&mut fw, push(block(2, true, &[1; 16]), &mut sink)), answered(Code::CONTINUE, vec![O::Persist]));
    assert_eq!(fw.phase, Phase::Downloading(pushed(48, 32, 16, true)));
    // Smaller blocks continue at the same byte (3 × 16 = 6 × 8).
    let last = PackageBlock { number: 6, more: false, size: 8, data: &[1; 5], total_size: None };
    let mut want = STATE_CHANGED.to_vec();
    want.push(O::Persist);
    assert_eq!(give(&mut fw, push(last, &mut sink)), answered(Code::CHANGED, want));
    assert_eq!(fw.phase, Phase::Downloaded { transfer: pushed(53, 48, 5, false), deferred_until: None });
    assert_eq!(sink.written, 21);
}

#[test]
fn t14_the_last_block_with_automatic_upgrade_applies_the_image() {
    let mut fw = at(Phase::Downloading(pushed(32, 16, 16, true)), R::Initial);
    fw.automatic_upgrade = true;
    let mut sink = CountingSink::default();
    let mut want = STATE_CHANGED.to_vec();
    want.push(O::Persist);
    want.extend(STATE_CHANGED);
    want.extend([O::Persist, O::ApplyUpdate]);
    assert_eq!(give(&mut fw, push(block(2, false, &[1; 3]), &mut sink)), answered(Code::CHANGED, want));
    assert_eq!(fw.phase, Phase::Updating { transfer: pushed(35, 32, 3, false) });
    // Object 1.1 has no resource 14: the setting does nothing there.
    let mut fw = FirmwareUpdate {
        config: FirmwareUpdateConfig { version: ObjectVersion::V1_1, ..config() },
        ..at(Phase::Downloading(pushed(32, 16, 16, true)), R::Initial)
    };
    fw.automatic_upgrade = true;
    give(&mut fw, push(block(2, false, &[1; 3]), &mut sink)).unwrap();
    assert_eq!(fw.state(), State::Downloaded);
}

#[test]
fn t4_a_block_the_size_limit_or_the_store_refuses() {
    let downloading = Phase::Downloading(pushed(48, 32, 16, true));
    let failed = || {
        let mut want = vec![O::DiscardImage];
        want.extend(STATE_CHANGED);
        want.extend([O::ResourceChanged(5), O::Persist]);
        want
    };
    // 48 + 17 > 64 bytes.
    let mut fw = at(downloading, R::Initial);
    let mut sink = CountingSink::default();
    let big = PackageBlock { number: 3, more: false, size: 16, data: &[1; 17], total_size: None };
    assert_eq!(give(&mut fw, push(big, &mut sink)), answered(Code::REQUEST_ENTITY_TOO_LARGE, failed()));
    assert_eq!((fw.phase, fw.result, sink.written), (Phase::Idle, R::NotEnoughFlash, 0));
    // The store refuses the bytes: the code says why.
    for (error, code) in [
        (PackageError::NotEnoughFlash, Code::REQUEST_ENTITY_TOO_LARGE),
        (PackageError::OutOfRam, Code::INTERNAL_SERVER_ERROR),
        (PackageError::IntegrityCheckFailure, Code::BAD_REQUEST),
    ] {
        let mut fw = at(downloading, R::Initial);
        let mut sink = Refusing { begin: None, write: Some(error), finish: None };
        assert_eq!(give(&mut fw, push(block(3, true, &[1; 16]), &mut sink)), answered(code, failed()));
        assert_eq!((fw.phase, fw.result), (Phase::Idle, error.update_result()));
    }
    // The image fails verification: the last block's Write itself succeeded.
    for error in [PackageError::IntegrityCheckFailure, PackageError::UnsupportedPackageType] {
        let mut fw = at(downloading, R::Initial);
        let mut sink = Refusing { begin: None, write: None, finish: Some(error) };
        assert_eq!(give(&mut fw, push(block(3, false, &[1; 4]), &mut sink)), answered(Code::CHANGED, failed()));
        assert_eq!((fw.phase, fw.result), (Phase::Idle, error.update_result()));
    }
}

#[test]
fn a_gap_is_4_08_and_changes_nothing() {
    for (phase, number) in [(Phase::Idle, 1), (Phase::Downloading(pushed(32, 16, 16, true)), 3)] {
        let mut fw = at(phase, R::Initial);
        let mut sink = CountingSink::default();
        assert_eq!(
            give(&mut fw, push(block(number, true, &[1; 16]), &mut sink)),
            answered(Code::REQUEST_ENTITY_INCOMPLETE, vec![])
        );
        assert_eq!((fw.phase, sink), (phase, CountingSink::default()));
    }
}

// ----- Execute Update -----

#[test]
fn t7_execute_update_applies_the_image() {
    let mut fw = at(Phase::Downloaded { transfer: pull(100), deferred_until: None }, R::UpdateFailed);
    let mut want = STATE_CHANGED.to_vec();
    want.extend([O::ResourceChanged(5), O::Persist, O::ApplyUpdate]);
    assert_eq!(give(&mut fw, execute(2)), answered(Code::CHANGED, want));
    assert_eq!((fw.phase, fw.result), (Phase::Updating { transfer: pull(100) }, R::Initial));
}

#[test]
fn t8_the_user_defers_within_maximum_defer_period() {
    let deferring = FirmwareUpdateConfig { user_deferral: Some(Duration::from_secs(3600)), ..config() };
    let downloaded = Phase::Downloaded { transfer: pull(100), deferred_until: None };
    let mut fw = FirmwareUpdate { config: deferring.clone(), ..at(downloaded, R::Initial) };
    fw.maximum_defer_period = 60;
    assert_eq!(give(&mut fw, execute(2)), answered(Code::CHANGED, vec![O::ResourceChanged(5), O::Persist]));
    let until = NOW + Duration::from_secs(60);
    assert_eq!(
        (fw.phase, fw.result),
        (Phase::Downloaded { transfer: pull(100), deferred_until: Some(until) }, R::Deferred)
    );
    // A second Execute never extends the deferral.
    fw.phase = Phase::Downloaded { transfer: pull(100), deferred_until: Some(NOW) };
    assert_eq!(give(&mut fw, execute(2)), answered(Code::CHANGED, vec![O::Persist]));
    assert_eq!(fw.poll_timeout(), Some(NOW));
    // No deferral for Severity Critical, a zero period, or object 1.0.
    for (severity, period, version) in
        [(0, 60, ObjectVersion::V1_2), (1, 0, ObjectVersion::V1_2), (1, 60, ObjectVersion::V1_0)]
    {
        let config = FirmwareUpdateConfig { version, ..deferring.clone() };
        let mut fw = FirmwareUpdate { config, ..at(downloaded, R::Initial) };
        (fw.severity, fw.maximum_defer_period) = (severity, period);
        give(&mut fw, execute(2)).unwrap();
        assert_eq!(fw.phase, Phase::Updating { transfer: pull(100) }, "{severity} {period} {version}");
    }
}

#[test]
fn execute_update_out_of_downloaded_is_4_05() {
    for phase in all_phases() {
        if phase.state() == State::Downloaded {
            continue;
        }
        let mut fw = at(phase, R::Initial);
        assert_eq!(give(&mut fw, execute(2)), answered(Code::METHOD_NOT_ALLOWED, vec![]));
        assert_eq!(fw.phase, phase);
    }
}

// ----- Execute Cancel -----

#[test]
fn t6_cancel_while_downloading() {
    for (transfer, abort) in [(pull(100), true), (pushed(32, 16, 16, true), false)] {
        let mut fw = at(Phase::Downloading(transfer), R::Initial);
        let mut want = if abort { vec![O::AbortDownload] } else { vec![] };
        want.push(O::DiscardImage);
        want.extend(STATE_CHANGED);
        want.extend([O::ResourceChanged(5), O::Persist]);
        assert_eq!(give(&mut fw, execute(10)), answered(Code::CHANGED, want));
        // The Package URI stays (unlike a reset).
        let uri = if abort { URI } else { "" };
        assert_eq!((fw.phase, fw.result, fw.package_uri.as_str()), (Phase::Idle, R::Cancelled, uri));
    }
}

#[test]
fn t10_cancel_when_downloaded() {
    let mut fw = at(Phase::Downloaded { transfer: pull(100), deferred_until: Some(NOW) }, R::Deferred);
    let mut want = vec![O::DiscardImage];
    want.extend(STATE_CHANGED);
    want.extend([O::ResourceChanged(5), O::Persist]);
    assert_eq!(give(&mut fw, execute(10)), answered(Code::CHANGED, want));
    assert_eq!((fw.phase, fw.result, fw.poll_timeout()), (Phase::Idle, R::Cancelled, None));
}

#[test]
fn cancel_in_idle_or_updating_is_4_05() {
    for phase in [Phase::Idle, Phase::Updating { transfer: pull(100) }] {
        let mut fw = at(phase, R::Initial);
        assert_eq!(give(&mut fw, execute(10)), answered(Code::METHOD_NOT_ALLOWED, vec![]));
        assert_eq!(fw.phase, phase);
    }
}

// ----- pull download reports -----

fn unexpected(input: &'static str, phase: Phase) -> Result<Outcome, FirmwareError> {
    Err(FirmwareError::UnexpectedInput { input, state: phase.state() })
}

#[test]
fn download_progress_moves_the_resume_point_of_a_pull() {
    let mut fw = at(Phase::Downloading(pull(100)), R::Initial);
    assert_eq!(give(&mut fw, FirmwareInput::DownloadProgress { offset: 2048 }), reported(vec![]));
    assert_eq!((fw.phase, fw.transferred()), (Phase::Downloading(pull(2048)), 2048));
    for phase in all_phases() {
        if phase == Phase::Downloading(pull(100)) {
            continue;
        }
        let mut fw = at(phase, R::Initial);
        assert_eq!(
            give(&mut fw, FirmwareInput::DownloadProgress { offset: 1 }),
            unexpected("download progress", phase)
        );
        assert_eq!(fw.phase, phase);
    }
}

#[test]
fn t3_a_pull_completes() {
    let mut fw = at(Phase::Downloading(pull(100)), R::Initial);
    let mut want = STATE_CHANGED.to_vec();
    want.push(O::Persist);
    assert_eq!(give(&mut fw, FirmwareInput::DownloadCompleted), reported(want));
    assert_eq!(fw.phase, Phase::Downloaded { transfer: pull(100), deferred_until: None });
    for phase in all_phases() {
        if phase == Phase::Downloading(pull(100)) {
            continue;
        }
        let mut fw = at(phase, R::Initial);
        assert_eq!(give(&mut fw, FirmwareInput::DownloadCompleted), unexpected("download completed", phase));
    }
}

#[test]
fn t14_a_pull_completes_with_automatic_upgrade() {
    let mut fw = at(Phase::Downloading(pull(100)), R::Initial);
    fw.automatic_upgrade = true;
    let mut want = STATE_CHANGED.to_vec();
    want.push(O::Persist);
    want.extend(STATE_CHANGED);
    want.extend([O::Persist, O::ApplyUpdate]);
    assert_eq!(give(&mut fw, FirmwareInput::DownloadCompleted), reported(want));
    assert_eq!(fw.phase, Phase::Updating { transfer: pull(100) });
}

#[test]
fn t4_a_pull_fails() {
    for code in [2, 3, 4, 5, 6, 7, 9] {
        let result = R::from_code(code);
        let mut fw = at(Phase::Downloading(pull(100)), R::Initial);
        let mut want = vec![O::DiscardImage];
        want.extend(STATE_CHANGED);
        want.extend([O::ResourceChanged(5), O::Persist]);
        assert_eq!(give(&mut fw, FirmwareInput::DownloadFailed { result }), reported(want));
        assert_eq!((fw.phase, fw.result), (Phase::Idle, result));
    }
    // Not a download failure: refused before the State is looked at.
    for phase in all_phases() {
        for code in [0, 1, 8, 10, 11, 12] {
            let result = R::from_code(code);
            let mut fw = at(phase, R::Initial);
            assert_eq!(
                give(&mut fw, FirmwareInput::DownloadFailed { result }),
                Err(FirmwareError::InvalidResult(result))
            );
        }
        if phase != Phase::Downloading(pull(100)) {
            let mut fw = at(phase, R::Initial);
            let result = R::ConnectionLost;
            assert_eq!(give(&mut fw, FirmwareInput::DownloadFailed { result }), unexpected("download failed", phase));
        }
    }
}

// ----- update reports -----

#[test]
fn t11_the_update_succeeds() {
    let mut fw = at(Phase::Updating { transfer: pull(100) }, R::Initial);
    let mut want = STATE_CHANGED.to_vec();
    want.extend([O::ResourceChanged(5), O::Persist]);
    assert_eq!(give(&mut fw, FirmwareInput::UpdateSucceeded), reported(want));
    assert_eq!((fw.phase, fw.result, fw.transferred()), (Phase::Idle, R::Success, 0));
    for phase in all_phases().into_iter().take(5) {
        let mut fw = at(phase, R::Initial);
        assert_eq!(give(&mut fw, FirmwareInput::UpdateSucceeded), unexpected("update succeeded", phase));
    }
}

#[test]
fn t12_the_update_fails_and_the_image_stays() {
    let transfer = pushed(40, 32, 8, false);
    let mut fw = at(Phase::Updating { transfer }, R::Initial);
    let mut want = STATE_CHANGED.to_vec();
    want.extend([O::ResourceChanged(5), O::Persist]);
    let input = FirmwareInput::UpdateFailed { image_usable: true, result: R::UpdateFailed };
    assert_eq!(give(&mut fw, input), reported(want));
    assert_eq!((fw.phase, fw.result), (Phase::Downloaded { transfer, deferred_until: None }, R::UpdateFailed));
}

#[test]
fn t13_the_update_fails_and_the_image_goes() {
    for result in [R::UpdateFailed, R::IntegrityCheckFailure] {
        let mut fw = at(Phase::Updating { transfer: pull(100) }, R::Initial);
        let mut want = vec![O::DiscardImage];
        want.extend(STATE_CHANGED);
        want.extend([O::ResourceChanged(5), O::Persist]);
        assert_eq!(give(&mut fw, FirmwareInput::UpdateFailed { image_usable: false, result }), reported(want));
        assert_eq!((fw.phase, fw.result), (Phase::Idle, result));
    }
}

#[test]
fn an_update_failure_needs_a_fitting_result_and_state_updating() {
    for (image_usable, result) in [(true, R::IntegrityCheckFailure), (false, R::OutOfRam), (true, R::Success)] {
        let mut fw = at(Phase::Updating { transfer: pull(100) }, R::Initial);
        assert_eq!(
            give(&mut fw, FirmwareInput::UpdateFailed { image_usable, result }),
            Err(FirmwareError::InvalidResult(result))
        );
        assert_eq!(fw.phase, Phase::Updating { transfer: pull(100) });
    }
    // Out of Updating, the State is what is wrong, whatever the result.
    for phase in all_phases().into_iter().take(5) {
        let mut fw = at(phase, R::Initial);
        let input = FirmwareInput::UpdateFailed { image_usable: true, result: R::OutOfRam };
        assert_eq!(give(&mut fw, input), unexpected("update failed", phase));
    }
}

// ----- deferral -----

#[test]
fn t8_the_user_accepts_a_deferred_update() {
    let deferred = Phase::Downloaded { transfer: pull(100), deferred_until: Some(NOW + Duration::from_secs(60)) };
    let mut fw = at(deferred, R::Deferred);
    let mut want = STATE_CHANGED.to_vec();
    want.extend([O::ResourceChanged(5), O::Persist, O::ApplyUpdate]);
    assert_eq!(give(&mut fw, FirmwareInput::DeferredUpdateAccepted), reported(want));
    assert_eq!((fw.phase, fw.result, fw.poll_timeout()), (Phase::Updating { transfer: pull(100) }, R::Initial, None));
    // Nothing is deferred: a Downloaded without Update Result 11, or any other State.
    for phase in all_phases() {
        let mut fw = at(phase, R::Initial);
        assert_eq!(give(&mut fw, FirmwareInput::DeferredUpdateAccepted), unexpected("accept deferred update", phase));
    }
}

#[test]
fn t8_the_deferral_ends_at_its_deadline() {
    let until = NOW + Duration::from_secs(60);
    let deferred = Phase::Downloaded { transfer: pull(100), deferred_until: Some(until) };
    let mut fw = at(deferred, R::Deferred);
    assert_eq!(fw.poll_timeout(), Some(until));
    fw.handle_timeout(Instant::from_millis(until.as_millis() - 1)).unwrap();
    assert_eq!((fw.phase, fw.poll_output()), (deferred, None));
    fw.handle_timeout(until).unwrap();
    let outputs: Vec<_> = core::iter::from_fn(|| fw.poll_output()).collect();
    let mut want = STATE_CHANGED.to_vec();
    want.extend([O::ResourceChanged(5), O::Persist, O::ApplyUpdate]);
    assert_eq!(outputs, want);
    assert_eq!((fw.phase, fw.poll_timeout()), (Phase::Updating { transfer: pull(100) }, None));
    // A spurious call is harmless in every phase.
    for phase in all_phases() {
        let mut fw = at(phase, R::Initial);
        let deadline = fw.poll_timeout();
        fw.handle_timeout(Instant::from_millis(NOW.as_millis() - 1)).unwrap();
        assert_eq!((fw.phase, fw.poll_output(), fw.poll_timeout()), (phase, None, deadline));
    }
}

// ----- reboot -----

#[test]
fn a_reboot_resumes_a_pull_download_and_drops_what_was_queued() {
    let mut fw = at(Phase::Downloading(pull(2048)), R::Initial);
    fw.set_package_info("stale", "outputs");
    assert_eq!(
        give(&mut fw, FirmwareInput::Rebooted),
        reported(vec![O::StartDownload { uri: URI.into(), offset: 2048 }])
    );
    assert_eq!(fw.phase, Phase::Downloading(pull(2048)));
}

#[test]
fn a_reboot_while_updating_applies_the_image_again() {
    let mut fw = at(Phase::Updating { transfer: pull(100) }, R::Initial);
    fw.set_package_info("stale", "outputs");
    assert_eq!(give(&mut fw, FirmwareInput::Rebooted), reported(vec![O::ApplyUpdate]));
}

#[test]
fn a_reboot_restarts_a_deferral_from_now() {
    let deferring = FirmwareUpdateConfig { user_deferral: Some(Duration::from_secs(30)), ..config() };
    let deferred = Phase::Downloaded { transfer: pull(100), deferred_until: Some(Instant::from_millis(5)) };
    let mut fw = FirmwareUpdate { config: deferring, ..at(deferred, R::Deferred) };
    fw.maximum_defer_period = 20;
    assert_eq!(give(&mut fw, FirmwareInput::Rebooted), reported(vec![]));
    let until = NOW + Duration::from_secs(20);
    assert_eq!(fw.phase, Phase::Downloaded { transfer: pull(100), deferred_until: Some(until) });
}

#[test]
fn a_reboot_elsewhere_only_drops_what_was_queued() {
    for phase in [
        Phase::Idle,
        Phase::Downloading(pushed(32, 16, 16, true)),
        Phase::Downloaded { transfer: pull(100), deferred_until: None },
    ] {
        let mut fw = at(phase, R::Initial);
        fw.set_package_info("stale", "outputs");
        assert_eq!(give(&mut fw, FirmwareInput::Rebooted), reported(vec![]));
        assert_eq!(fw.phase, phase);
    }
}

// ----- time and the answer's place -----

#[test]
fn time_going_backwards_is_an_error_for_every_input_and_changes_nothing() {
    let later = NOW + Duration::from_secs(1);
    for phase in all_phases() {
        let mut fw = at(phase, R::Initial);
        fw.handle_timeout(later).unwrap();
        fw.set_package_info("queued", "outputs");
        let before = fw.clone();
        let (uri, severity) = (Value::string(URI), Value::Integer(2));
        let mut sink = CountingSink::default();
        let inputs: [FirmwareInput<'_>; 12] = [
            write(1, &uri),
            push(PackageBlock::whole(&[0]), &mut sink),
            execute(2),
            execute(10),
            FirmwareInput::DownloadProgress { offset: 1 },
            FirmwareInput::DownloadCompleted,
            FirmwareInput::DownloadFailed { result: R::ConnectionLost },
            FirmwareInput::UpdateSucceeded,
            FirmwareInput::UpdateFailed { image_usable: true, result: R::UpdateFailed },
            FirmwareInput::DeferredUpdateAccepted,
            FirmwareInput::Rebooted,
            write(11, &severity),
        ];
        for input in inputs {
            let shown = alloc::format!("{input:?}");
            assert_eq!(fw.handle(NOW, input), Err(FirmwareError::TimeWentBackwards), "{shown}");
            assert_eq!(fw, before, "{shown}");
        }
        assert_eq!(fw.handle_timeout(NOW), Err(FirmwareError::TimeWentBackwards));
        assert_eq!(fw, before);
        // The same instant again is not backwards.
        assert!(fw.handle(later, FirmwareInput::Rebooted).is_ok());
    }
}

#[test]
fn a_refused_report_changes_nothing_but_the_time_seen() {
    let mut fw = at(Phase::Idle, R::Initial);
    let later = NOW + Duration::from_secs(5);
    assert!(fw.handle(later, FirmwareInput::DownloadCompleted).is_err());
    assert_eq!(fw, FirmwareUpdate { last_now: later, ..at(Phase::Idle, R::Initial) });
    assert_eq!(fw.last_input_time(), later);
}

#[test]
fn the_answer_comes_before_what_the_request_set_in_motion() {
    let mut fw = at(Phase::Downloaded { transfer: pull(100), deferred_until: None }, R::Initial);
    // Outputs of an earlier input not drained yet stay ahead of it.
    fw.set_package_info("app", "2.0");
    fw.handle(NOW, execute(2)).unwrap();
    let outputs: Vec<_> = core::iter::from_fn(|| fw.poll_output()).collect();
    let mut want = vec![O::ResourceChanged(6), O::ResourceChanged(7), O::Persist, O::Respond(Code::CHANGED)];
    want.extend(STATE_CHANGED);
    want.extend([O::Persist, O::ApplyUpdate]);
    assert_eq!(outputs, want);
}

#[test]
fn send_on_change_follows_every_state_or_result_change() {
    let mut fw = FirmwareUpdate {
        config: FirmwareUpdateConfig { send_on_change: true, ..config() },
        ..at(Phase::Idle, R::Initial)
    };
    let uri = Value::string(URI);
    let outcome = give(&mut fw, write(1, &uri)).unwrap();
    assert_eq!(outcome.outputs.iter().filter(|o| **o == O::SendState).count(), 1);
    // Only a Persist when nothing a server reads changed.
    fw.phase = Phase::Idle;
    let outcome = give(&mut fw, write(1, &Value::string("https://h/fw"))).unwrap();
    assert!(outcome.outputs.contains(&O::SendState));
    let outcome = give(&mut fw, write(1, &Value::string("https://h/fw"))).unwrap();
    assert_eq!(outcome.outputs, [O::Persist]);
}

#[test]
fn request_takes_the_answer_out_and_leaves_the_rest_queued_in_order() {
    let mut fw = at(Phase::Idle, R::Initial);
    let uri = Value::string("coap://fw.example/v2.bin");
    // An output of an earlier input still waits: the answer is not first in the queue.
    fw.set_package_info("fw", "2");
    let earlier: Vec<FirmwareOutput> = fw.outputs.iter().cloned().collect();
    assert_eq!(fw.request(Instant::from_millis(1), write(1, &uri)), Ok(Some(Code::CHANGED)));
    let rest: Vec<FirmwareOutput> = core::iter::from_fn(|| fw.poll_output()).collect();
    assert_eq!(rest[..earlier.len()], earlier[..]);
    assert!(rest.iter().all(|o| !matches!(o, O::Respond(_))));
    assert!(rest.iter().any(|o| matches!(o, O::StartDownload { .. })));
    // A report has no answer; time going backwards is the same error as handle's.
    let mut downloading = at(Phase::Downloading(pull(0)), R::Initial);
    assert_eq!(downloading.request(Instant::from_millis(1), FirmwareInput::DownloadCompleted), Ok(None));
    assert_eq!(downloading.request(Instant::ZERO, write(1, &uri)), Err(FirmwareError::TimeWentBackwards));
}
