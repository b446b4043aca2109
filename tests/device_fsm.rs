//! The /5 object against object5.md §6: every (state, request) pair for every
//! object version, the push block rules, the firmware's reports, deferral,
//! reboots, and a property test over random request sequences.

use lwm2m_fota::device::{
    CountingSink, FirmwareError, FirmwareInput, FirmwareOutput, FirmwareUpdate, FirmwareUpdateConfig, PackageBlock,
    PackageError, PackageSink,
};
use lwm2m_fota::model::{
    ContentFormat, DeliveryMethod, Instant, ObjectVersion, Path, Protocol, ResponseCode, State, UpdateResult, Value,
};
use proptest::prelude::*;
use std::time::Duration;

const T0: Instant = Instant::from_millis(1_000);

/// A server request as a device's LwM2M layer makes it: outputs of earlier
/// inputs are taken first (a device drains after every input), then the
/// request's first output must be its answer. Its other outputs stay queued.
fn request(fw: &mut FirmwareUpdate, now: Instant, input: FirmwareInput<'_>) -> ResponseCode {
    while fw.poll_output().is_some() {}
    fw.handle(now, input).expect("a request in time is never an error");
    match fw.poll_output() {
        Some(FirmwareOutput::Respond(code)) => code,
        other => panic!("a request's first output is its answer, not {other:?}"),
    }
}

fn write(fw: &mut FirmwareUpdate, now: Instant, resource: u16, value: &Value<'_>) -> ResponseCode {
    request(fw, now, FirmwareInput::Write { resource, value })
}

fn push(fw: &mut FirmwareUpdate, now: Instant, block: PackageBlock<'_>, sink: &mut dyn PackageSink) -> ResponseCode {
    request(fw, now, FirmwareInput::WritePackageBlock { block, sink })
}

fn execute(fw: &mut FirmwareUpdate, now: Instant, resource: u16) -> ResponseCode {
    request(fw, now, FirmwareInput::Execute { resource })
}

/// Every output queued now; none is an answer (`request` takes those).
fn outputs(fw: &mut FirmwareUpdate) -> Vec<FirmwareOutput> {
    let outputs: Vec<FirmwareOutput> = std::iter::from_fn(|| fw.poll_output()).collect();
    assert!(!outputs.iter().any(|o| matches!(o, FirmwareOutput::Respond(_))), "{outputs:?}");
    outputs
}

fn config(version: ObjectVersion) -> FirmwareUpdateConfig {
    FirmwareUpdateConfig {
        version,
        protocols: [Protocol::Coap, Protocol::Http].into_iter().collect(),
        delivery: DeliveryMethod::Both,
        max_package_size: 4096,
        ..FirmwareUpdateConfig::default()
    }
}

/// The states a server can find the object in, reached by legitimate steps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Start {
    Idle,
    DownloadingPull,
    DownloadingPush,
    Downloaded,
    Updating,
}

const STARTS: [Start; 5] =
    [Start::Idle, Start::DownloadingPull, Start::DownloadingPush, Start::Downloaded, Start::Updating];

fn object_in(start: Start, version: ObjectVersion) -> (FirmwareUpdate, CountingSink) {
    let mut fw = FirmwareUpdate::new(config(version));
    let mut sink = CountingSink::default();
    let block0 = PackageBlock { number: 0, more: true, size: 16, data: &[7; 16], total_size: None };
    match start {
        Start::Idle => {}
        Start::DownloadingPull => {
            assert_eq!(write(&mut fw, T0, 1, &Value::string("coap://h/fw")), ResponseCode::CHANGED)
        }
        Start::DownloadingPush => assert_eq!(push(&mut fw, T0, block0, &mut sink), ResponseCode::CONTINUE),
        Start::Downloaded | Start::Updating => {
            write(&mut fw, T0, 1, &Value::string("coap://h/fw"));
            fw.handle(T0, FirmwareInput::DownloadCompleted).unwrap();
            if start == Start::Updating {
                assert_eq!(execute(&mut fw, T0, 2), ResponseCode::CHANGED);
            }
        }
    }
    outputs(&mut fw);
    (fw, sink)
}

#[derive(Debug, Clone, Copy)]
enum Request {
    WriteUri,
    WriteEmptyUri,
    WriteMalformedUri,
    WriteUnsupportedScheme,
    PushFirstBlock,
    PushNul,
    PushWholeImage,
    ExecuteUpdate,
    ExecuteCancel,
    WriteSeverity,
    WriteState,
    ExecuteState,
    WriteAutomaticUpgrade,
}

const REQUESTS: [Request; 13] = [
    Request::WriteUri,
    Request::WriteEmptyUri,
    Request::WriteMalformedUri,
    Request::WriteUnsupportedScheme,
    Request::PushFirstBlock,
    Request::PushNul,
    Request::PushWholeImage,
    Request::ExecuteUpdate,
    Request::ExecuteCancel,
    Request::WriteSeverity,
    Request::WriteState,
    Request::ExecuteState,
    Request::WriteAutomaticUpgrade,
];

fn apply(fw: &mut FirmwareUpdate, sink: &mut CountingSink, now: Instant, request: Request) -> ResponseCode {
    match request {
        Request::WriteUri => write(fw, now, 1, &Value::string("http://h/fw2")),
        Request::WriteEmptyUri => write(fw, now, 1, &Value::string("")),
        Request::WriteMalformedUri => write(fw, now, 1, &Value::string("not a uri")),
        Request::WriteUnsupportedScheme => write(fw, now, 1, &Value::string("https://h/fw")),
        Request::PushFirstBlock => {
            push(fw, now, PackageBlock { number: 0, more: true, size: 16, data: &[7; 16], total_size: None }, sink)
        }
        Request::PushNul => push(fw, now, PackageBlock::whole(&[0]), sink),
        Request::PushWholeImage => push(fw, now, PackageBlock::whole(b"image"), sink),
        Request::ExecuteUpdate => execute(fw, now, 2),
        Request::ExecuteCancel => execute(fw, now, 10),
        Request::WriteSeverity => write(fw, now, 11, &Value::Integer(2)),
        Request::WriteState => write(fw, now, 3, &Value::Integer(0)),
        Request::ExecuteState => execute(fw, now, 3),
        Request::WriteAutomaticUpgrade => write(fw, now, 14, &Value::Boolean(true)),
    }
}

/// object5.md §6.1 (T1–T14 and the rejected-request table), restated: the
/// answer and the resulting (State, Update Result).
fn expected(start: Start, request: Request, version: ObjectVersion) -> (ResponseCode, State, UpdateResult) {
    use ResponseCode as C;
    use UpdateResult as R;
    let before = match start {
        Start::Idle => State::Idle,
        Start::DownloadingPull | Start::DownloadingPush => State::Downloading,
        Start::Downloaded => State::Downloaded,
        Start::Updating => State::Updating,
    };
    let same = |code| (code, before, R::Initial);
    let v1_1 = version >= ObjectVersion::V1_1;
    match (request, start) {
        (_, Start::Updating) if matches!(request, Request::WriteSeverity) && v1_1 => same(C::CHANGED),
        (Request::WriteSeverity, _) if !v1_1 => same(C::NOT_FOUND),
        (Request::WriteSeverity, _) => same(C::CHANGED),
        (Request::WriteAutomaticUpgrade, _) if version < ObjectVersion::V1_2 => same(C::NOT_FOUND),
        (Request::WriteAutomaticUpgrade, _) => same(C::CHANGED),
        (Request::ExecuteCancel, _) if !v1_1 => same(C::NOT_FOUND),
        (Request::WriteState | Request::ExecuteState, _) => same(C::METHOD_NOT_ALLOWED),
        (_, Start::Updating) => same(C::METHOD_NOT_ALLOWED),
        // T1 and its failures (errors via Update Result, the Write succeeds).
        (Request::WriteUri, Start::Idle) => (C::CHANGED, State::Downloading, R::Initial),
        (Request::WriteMalformedUri, Start::Idle) => (C::CHANGED, State::Idle, R::InvalidUri),
        (Request::WriteUnsupportedScheme, Start::Idle) => (C::CHANGED, State::Idle, R::UnsupportedProtocol),
        (Request::WriteUri | Request::WriteMalformedUri | Request::WriteUnsupportedScheme, _) => same(C::BAD_REQUEST),
        // Reset (T5, T9).
        (Request::WriteEmptyUri | Request::PushNul, _) => (C::CHANGED, State::Idle, R::Initial),
        // T2, T3; a block 0 again restarts a push (or is its retransmission).
        (Request::PushFirstBlock, Start::Idle | Start::DownloadingPush) => {
            (C::CONTINUE, State::Downloading, R::Initial)
        }
        (Request::PushWholeImage, Start::Idle | Start::DownloadingPush) => (C::CHANGED, State::Downloaded, R::Initial),
        (Request::PushFirstBlock | Request::PushWholeImage, _) => same(C::BAD_REQUEST),
        // T7.
        (Request::ExecuteUpdate, Start::Downloaded) => (C::CHANGED, State::Updating, R::Initial),
        (Request::ExecuteUpdate, _) => same(C::METHOD_NOT_ALLOWED),
        // T6, T10.
        (Request::ExecuteCancel, Start::DownloadingPull | Start::DownloadingPush | Start::Downloaded) => {
            (C::CHANGED, State::Idle, R::Cancelled)
        }
        (Request::ExecuteCancel, _) => same(C::METHOD_NOT_ALLOWED),
    }
}

#[test]
fn every_state_and_request_for_every_version() {
    let mut checked = 0;
    for version in [ObjectVersion::V1_0, ObjectVersion::V1_1, ObjectVersion::V1_2] {
        for start in STARTS {
            for request in REQUESTS {
                let (mut fw, mut sink) = object_in(start, version);
                let code = apply(&mut fw, &mut sink, T0 + Duration::from_secs(1), request);
                let want = expected(start, request, version);
                assert_eq!((code, fw.state(), fw.update_result()), want, "object {version}, {start:?} + {request:?}");
                checked += 1;
            }
        }
    }
    assert_eq!(checked, 3 * 5 * 13);
}

#[test]
fn resources_exist_only_in_their_versions() {
    for (version, present, absent) in [
        (ObjectVersion::V1_0, &[1u16, 3, 5, 6, 7, 8, 9][..], &[10u16, 11, 12, 13, 14][..]),
        (ObjectVersion::V1_1, &[1, 3, 5, 11, 12, 13][..], &[14][..]),
        (ObjectVersion::V1_2, &[1, 3, 5, 11, 12, 13, 14][..], &[][..]),
    ] {
        let fw = FirmwareUpdate::new(config(version));
        for r in present {
            assert!(fw.read(&Path::resource(5, 0, *r)).is_ok(), "{version} /5/0/{r}");
        }
        for r in absent {
            assert_eq!(fw.read(&Path::resource(5, 0, *r)).unwrap_err(), ResponseCode::NOT_FOUND, "{version} /5/0/{r}");
        }
        let all = fw.read(&Path::instance(5, 0)).unwrap();
        assert!(all.iter().all(|r| !absent.contains(&r.path.resource_id().unwrap())));
        assert!(present.iter().all(|p| all.iter().any(|r| r.path.resource_id() == Some(*p))));
        assert_eq!(fw.read(&Path::resource(5, 0, 0)).unwrap_err(), ResponseCode::METHOD_NOT_ALLOWED);
        assert_eq!(fw.read(&Path::resource(5, 0, 2)).unwrap_err(), ResponseCode::METHOD_NOT_ALLOWED);
        assert_eq!(fw.read(&Path::resource(5, 1, 3)).unwrap_err(), ResponseCode::NOT_FOUND);
    }
}

#[test]
fn read_encodes_in_every_multi_value_format() {
    let fw = FirmwareUpdate::new(config(ObjectVersion::V1_2));
    for format in [ContentFormat::Tlv, ContentFormat::SenmlCbor, ContentFormat::SenmlJson, ContentFormat::Lwm2mCbor] {
        let mut buf = Vec::new();
        fw.encode_read(&Path::instance(5, 0), format, &mut buf).unwrap();
        let records = lwm2m_fota::codec::decode(
            format,
            &Path::instance(5, 0),
            &buf,
            &lwm2m_fota::model::Registry::default(),
            &Default::default(),
        )
        .unwrap();
        assert_eq!(records.len(), 12, "{format}"); // 1,3,5,6,7,8/0,8/1,9,11,12,13,14
    }
    let mut buf = Vec::new();
    fw.encode_read(&Path::resource(5, 0, 3), ContentFormat::Text, &mut buf).unwrap();
    assert_eq!(buf, b"0");
    assert_eq!(fw.encode_read(&Path::instance(5, 0), ContentFormat::Text, &mut buf), Err(ResponseCode::NOT_ACCEPTABLE));
    let instance = fw.read(&Path::resource_instance(5, 0, 8, 1)).unwrap();
    assert_eq!(instance[0].value, Value::Integer(2)); // HTTP
}

fn block(number: u32, more: bool, data: &[u8]) -> PackageBlock<'_> {
    PackageBlock { number, more, size: 16, data, total_size: None }
}

#[test]
fn push_blocks_in_order_with_retransmissions_gaps_and_restarts() {
    let mut fw = FirmwareUpdate::new(config(ObjectVersion::V1_1));
    let mut sink = CountingSink::default();
    assert_eq!(push(&mut fw, T0, block(0, true, &[1; 16]), &mut sink), ResponseCode::CONTINUE);
    // Retransmitted block 0: acknowledged, not written twice.
    assert_eq!(push(&mut fw, T0, block(0, true, &[1; 16]), &mut sink), ResponseCode::CONTINUE);
    assert_eq!(sink.written, 16);
    assert_eq!(push(&mut fw, T0, block(1, true, &[2; 16]), &mut sink), ResponseCode::CONTINUE);
    assert_eq!(push(&mut fw, T0, block(1, true, &[2; 16]), &mut sink), ResponseCode::CONTINUE);
    assert_eq!(sink.written, 32);
    // A gap is refused and changes nothing.
    assert_eq!(push(&mut fw, T0, block(3, true, &[4; 16]), &mut sink), ResponseCode::REQUEST_ENTITY_INCOMPLETE);
    assert_eq!(fw.transferred(), 32);
    // A non-final block shorter than the block size is malformed.
    assert_eq!(push(&mut fw, T0, block(2, true, &[3; 5]), &mut sink), ResponseCode::BAD_REQUEST);
    // A smaller block size continues at the same byte offset (2 × 16 = 4 × 8).
    let small = PackageBlock { number: 4, more: true, size: 8, data: &[3; 8], total_size: None };
    assert_eq!(push(&mut fw, T0, small, &mut sink), ResponseCode::CONTINUE);
    assert_eq!(fw.transferred(), 40);
    let last = PackageBlock { number: 5, more: false, size: 8, data: &[9; 3], total_size: None };
    assert_eq!(push(&mut fw, T0, last, &mut sink), ResponseCode::CHANGED);
    assert_eq!((fw.state(), fw.transferred()), (State::Downloaded, 43));
    // The last block again (its 2.04 was lost): acknowledged in Downloaded.
    assert_eq!(push(&mut fw, T0, last, &mut sink), ResponseCode::CHANGED);
    assert_eq!(sink.written, 43);
    // A new block 0 restarts an unfinished transfer.
    let mut fw = FirmwareUpdate::new(config(ObjectVersion::V1_1));
    push(&mut fw, T0, block(0, true, &[1; 16]), &mut sink);
    push(&mut fw, T0, block(1, true, &[1; 16]), &mut sink);
    assert_eq!(push(&mut fw, T0, block(0, true, &[5; 16]), &mut sink), ResponseCode::CONTINUE);
    assert_eq!((fw.transferred(), sink.written, sink.transfers), (16, 16, 3));
    // A first block that is not block 0 is a gap.
    let mut fresh = FirmwareUpdate::new(config(ObjectVersion::V1_1));
    assert_eq!(push(&mut fresh, T0, block(1, true, &[1; 16]), &mut sink), ResponseCode::REQUEST_ENTITY_INCOMPLETE);
    assert_eq!(fresh.state(), State::Idle);
}

#[test]
fn push_too_large_gives_update_result_2() {
    let mut fw = FirmwareUpdate::new(config(ObjectVersion::V1_1));
    let mut sink = CountingSink::default();
    let announced = PackageBlock { total_size: Some(1 << 20), ..block(0, true, &[0; 16]) };
    assert_eq!(push(&mut fw, T0, announced, &mut sink), ResponseCode::REQUEST_ENTITY_TOO_LARGE);
    assert_eq!((fw.state(), fw.update_result()), (State::Idle, UpdateResult::NotEnoughFlash));
    // Discovered while receiving: capacity is 4096 bytes.
    let mut fw = FirmwareUpdate::new(config(ObjectVersion::V1_1));
    let data = [1u8; 1024];
    for n in 0..4 {
        let b = PackageBlock { number: n, more: true, size: 1024, data: &data, total_size: None };
        assert_eq!(push(&mut fw, T0, b, &mut sink), ResponseCode::CONTINUE);
    }
    let b = PackageBlock { number: 4, more: true, size: 1024, data: &data, total_size: None };
    assert_eq!(push(&mut fw, T0, b, &mut sink), ResponseCode::REQUEST_ENTITY_TOO_LARGE);
    assert_eq!((fw.state(), fw.update_result()), (State::Idle, UpdateResult::NotEnoughFlash));
}

struct FailingSink(PackageError, bool);

impl PackageSink for FailingSink {
    fn begin(&mut self, _: Option<u64>) -> Result<(), PackageError> {
        Ok(())
    }
    fn write(&mut self, _: u64, _: &[u8]) -> Result<(), PackageError> {
        if self.1 { Err(self.0) } else { Ok(()) }
    }
    fn finish(&mut self, _: u64) -> Result<(), PackageError> {
        Err(self.0)
    }
}

#[test]
fn sink_failures_become_update_results() {
    for (error, result, on_write, code) in [
        (PackageError::OutOfRam, UpdateResult::OutOfRam, true, ResponseCode::INTERNAL_SERVER_ERROR),
        (PackageError::NotEnoughFlash, UpdateResult::NotEnoughFlash, true, ResponseCode::REQUEST_ENTITY_TOO_LARGE),
        (PackageError::IntegrityCheckFailure, UpdateResult::IntegrityCheckFailure, false, ResponseCode::CHANGED),
        (PackageError::UnsupportedPackageType, UpdateResult::UnsupportedPackageType, false, ResponseCode::CHANGED),
    ] {
        let mut fw = FirmwareUpdate::new(config(ObjectVersion::V1_1));
        let mut sink = FailingSink(error, on_write);
        assert_eq!(push(&mut fw, T0, PackageBlock::whole(b"img"), &mut sink), code, "{error:?}");
        assert_eq!((fw.state(), fw.update_result()), (State::Idle, result));
    }
}

#[test]
fn delivery_method_and_protocol_support_are_enforced() {
    let mut pull_only =
        FirmwareUpdate::new(FirmwareUpdateConfig { delivery: DeliveryMethod::Pull, ..config(ObjectVersion::V1_1) });
    assert_eq!(
        push(&mut pull_only, T0, PackageBlock::whole(b"x"), &mut CountingSink::default()),
        ResponseCode::METHOD_NOT_ALLOWED
    );
    let mut push_only =
        FirmwareUpdate::new(FirmwareUpdateConfig { delivery: DeliveryMethod::Push, ..config(ObjectVersion::V1_1) });
    assert_eq!(write(&mut push_only, T0, 1, &Value::string("coap://h/x")), ResponseCode::CHANGED);
    assert_eq!(push_only.update_result(), UpdateResult::UnsupportedProtocol);
    let mut fw = FirmwareUpdate::new(config(ObjectVersion::V1_1));
    assert_eq!(write(&mut fw, T0, 1, &Value::string(&"coap://h/".repeat(40))), ResponseCode::BAD_REQUEST);
    assert_eq!(write(&mut fw, T0, 1, &Value::Integer(1)), ResponseCode::BAD_REQUEST);
    assert_eq!(write(&mut fw, T0, 11, &Value::Integer(3)), ResponseCode::BAD_REQUEST);
    assert_eq!(write(&mut fw, T0, 99, &Value::Integer(3)), ResponseCode::NOT_FOUND);
}

#[test]
fn pull_download_reports() {
    let mut fw = FirmwareUpdate::new(config(ObjectVersion::V1_1));
    assert!(matches!(fw.handle(T0, FirmwareInput::DownloadCompleted), Err(FirmwareError::UnexpectedInput { .. })));
    write(&mut fw, T0, 1, &Value::string("coap://h/fw"));
    let events: Vec<_> = std::iter::from_fn(|| fw.poll_output()).collect();
    assert!(events.contains(&FirmwareOutput::StartDownload { uri: "coap://h/fw".into(), offset: 0 }));
    assert!(events.contains(&FirmwareOutput::ResourceChanged(3)));
    assert!(events.contains(&FirmwareOutput::Persist));
    fw.handle(T0, FirmwareInput::DownloadProgress { offset: 512 }).unwrap();
    assert_eq!(
        fw.handle(T0, FirmwareInput::DownloadFailed { result: UpdateResult::Success }),
        Err(FirmwareError::InvalidResult(UpdateResult::Success))
    );
    for result in [2, 3, 4, 5, 6, 7, 9].map(UpdateResult::from_code) {
        let mut fw = FirmwareUpdate::new(config(ObjectVersion::V1_1));
        write(&mut fw, T0, 1, &Value::string("coap://h/fw"));
        fw.handle(T0, FirmwareInput::DownloadFailed { result }).unwrap();
        assert_eq!((fw.state(), fw.update_result()), (State::Idle, result));
    }
    assert_eq!(
        fw.handle(Instant::from_millis(0), FirmwareInput::DownloadProgress { offset: 1 }),
        Err(FirmwareError::TimeWentBackwards)
    );
}

#[test]
fn update_outcomes() {
    // T11
    let (mut fw, _) = object_in(Start::Updating, ObjectVersion::V1_1);
    fw.handle(T0, FirmwareInput::UpdateSucceeded).unwrap();
    assert_eq!((fw.state(), fw.update_result()), (State::Idle, UpdateResult::Success));
    // T12
    let (mut fw, _) = object_in(Start::Updating, ObjectVersion::V1_1);
    fw.handle(T0, FirmwareInput::UpdateFailed { image_usable: true, result: UpdateResult::UpdateFailed }).unwrap();
    assert_eq!((fw.state(), fw.update_result()), (State::Downloaded, UpdateResult::UpdateFailed));
    // T13
    let (mut fw, _) = object_in(Start::Updating, ObjectVersion::V1_1);
    fw.handle(T0, FirmwareInput::UpdateFailed { image_usable: false, result: UpdateResult::IntegrityCheckFailure })
        .unwrap();
    assert_eq!((fw.state(), fw.update_result()), (State::Idle, UpdateResult::IntegrityCheckFailure));
    let (mut fw, _) = object_in(Start::Updating, ObjectVersion::V1_1);
    assert!(
        fw.handle(T0, FirmwareInput::UpdateFailed { image_usable: true, result: UpdateResult::IntegrityCheckFailure })
            .is_err()
    );
    assert!(
        fw.handle(T0, FirmwareInput::UpdateFailed { image_usable: false, result: UpdateResult::OutOfRam }).is_err()
    );
    let (mut fw, _) = object_in(Start::Idle, ObjectVersion::V1_1);
    assert!(fw.handle(T0, FirmwareInput::UpdateSucceeded).is_err());
}

#[test]
fn automatic_upgrade_at_download() {
    let mut fw = FirmwareUpdate::new(config(ObjectVersion::V1_2));
    write(&mut fw, T0, 14, &Value::Boolean(true));
    write(&mut fw, T0, 1, &Value::string("coap://h/fw"));
    fw.handle(T0, FirmwareInput::DownloadCompleted).unwrap();
    assert_eq!(fw.state(), State::Updating);
    assert!(std::iter::from_fn(|| fw.poll_output()).any(|e| e == FirmwareOutput::ApplyUpdate));
}

#[test]
fn deferral_and_maximum_defer_period() {
    let deferring =
        FirmwareUpdateConfig { user_deferral: Some(Duration::from_secs(3600)), ..config(ObjectVersion::V1_1) };
    let mut fw = FirmwareUpdate::new(deferring.clone());
    write(&mut fw, T0, 13, &Value::UnsignedInteger(60));
    write(&mut fw, T0, 1, &Value::string("coap://h/fw"));
    fw.handle(T0, FirmwareInput::DownloadCompleted).unwrap();
    assert_eq!(execute(&mut fw, T0, 2), ResponseCode::CHANGED);
    assert_eq!((fw.state(), fw.update_result()), (State::Downloaded, UpdateResult::Deferred));
    // Maximum Defer Period (60 s) bounds the user's hour.
    assert_eq!(fw.poll_timeout(), Some(T0 + Duration::from_secs(60)));
    fw.handle_timeout(T0 + Duration::from_secs(59)).unwrap();
    assert_eq!(fw.state(), State::Downloaded);
    fw.handle_timeout(T0 + Duration::from_secs(60)).unwrap();
    assert_eq!((fw.state(), fw.update_result()), (State::Updating, UpdateResult::Initial));
    // Critical severity is never deferred; a zero defer period neither.
    let mut fw = FirmwareUpdate::new(deferring.clone());
    write(&mut fw, T0, 13, &Value::UnsignedInteger(60));
    write(&mut fw, T0, 11, &Value::Integer(0));
    write(&mut fw, T0, 1, &Value::string("coap://h/fw"));
    fw.handle(T0, FirmwareInput::DownloadCompleted).unwrap();
    execute(&mut fw, T0, 2);
    assert_eq!(fw.state(), State::Updating);
    // The user may accept early.
    let mut fw = FirmwareUpdate::new(deferring);
    write(&mut fw, T0, 13, &Value::UnsignedInteger(60));
    write(&mut fw, T0, 1, &Value::string("coap://h/fw"));
    fw.handle(T0, FirmwareInput::DownloadCompleted).unwrap();
    execute(&mut fw, T0, 2);
    fw.handle(T0, FirmwareInput::DeferredUpdateAccepted).unwrap();
    assert_eq!(fw.state(), State::Updating);
}

#[test]
fn reboot_resumes_from_a_snapshot() {
    let mut fw = FirmwareUpdate::new(config(ObjectVersion::V1_1));
    write(&mut fw, T0, 1, &Value::string("coap://h/fw"));
    fw.handle(T0, FirmwareInput::DownloadProgress { offset: 2048 }).unwrap();
    let snapshot = serde_json::to_string(&fw).unwrap();
    let mut restored: FirmwareUpdate = serde_json::from_str(&snapshot).unwrap();
    assert_eq!(restored, fw);
    restored.handle(T0, FirmwareInput::Rebooted).unwrap();
    assert_eq!(restored.poll_output(), Some(FirmwareOutput::StartDownload { uri: "coap://h/fw".into(), offset: 2048 }));
    assert_eq!(restored.state(), State::Downloading);
    // Mid-update: the image is applied again, then the outcome is reported.
    let (fw, _) = object_in(Start::Updating, ObjectVersion::V1_1);
    let mut restored: FirmwareUpdate = serde_json::from_str(&serde_json::to_string(&fw).unwrap()).unwrap();
    restored.handle(T0, FirmwareInput::Rebooted).unwrap();
    assert_eq!(restored.poll_output(), Some(FirmwareOutput::ApplyUpdate));
    restored.handle(T0, FirmwareInput::UpdateSucceeded).unwrap();
    assert_eq!(restored.update_result(), UpdateResult::Success);
    // Mid-push: the transfer continues at the next byte.
    let (fw, mut sink) = object_in(Start::DownloadingPush, ObjectVersion::V1_1);
    let mut restored: FirmwareUpdate = serde_json::from_str(&serde_json::to_string(&fw).unwrap()).unwrap();
    restored.handle(T0, FirmwareInput::Rebooted).unwrap();
    assert_eq!(push(&mut restored, T0, block(1, false, b"end"), &mut sink), ResponseCode::CHANGED);
    assert_eq!(restored.state(), State::Downloaded);
}

#[test]
fn send_payload_carries_the_fota_resources() {
    let mut fw = FirmwareUpdate::new(FirmwareUpdateConfig { send_on_change: true, ..config(ObjectVersion::V1_1) });
    write(&mut fw, T0, 1, &Value::string("coap://h/fw"));
    assert!(std::iter::from_fn(|| fw.poll_output()).any(|e| e == FirmwareOutput::SendState));
    let mut buf = Vec::new();
    fw.encode_send("1.0.0", "sw-1", &mut buf).unwrap();
    let records = lwm2m_fota::codec::decode(
        ContentFormat::SenmlCbor,
        &Path::ROOT,
        &buf,
        &lwm2m_fota::model::Registry::default(),
        &Default::default(),
    )
    .unwrap();
    let paths: Vec<String> = records.iter().map(|r| r.path.to_string()).collect();
    assert_eq!(paths, ["/3/0/3", "/3/0/19", "/5/0/3", "/5/0/5", "/5/0/8/0", "/5/0/8/1", "/5/0/9"]);
    assert_eq!(records[2].value, Value::Integer(1));
}

#[test]
fn time_going_backwards_is_an_error_for_a_request_a_report_and_a_reboot() {
    let (mut fw, mut sink) = object_in(Start::DownloadingPull, ObjectVersion::V1_1);
    let later = T0 + Duration::from_secs(10);
    fw.handle(later, FirmwareInput::DownloadProgress { offset: 100 }).unwrap();
    let before = fw.clone();
    let uri = Value::string("");
    let block = PackageBlock::whole(&[0]);
    let inputs = [
        FirmwareInput::Write { resource: 1, value: &uri },
        FirmwareInput::WritePackageBlock { block, sink: &mut sink },
        FirmwareInput::Execute { resource: 10 },
        FirmwareInput::DownloadProgress { offset: 200 },
        FirmwareInput::DownloadCompleted,
        FirmwareInput::Rebooted,
    ];
    for input in inputs {
        let shown = format!("{input:?}");
        assert_eq!(fw.handle(T0, input), Err(FirmwareError::TimeWentBackwards), "{shown}");
        // Nothing changed and nothing is queued: no answer, no reset, no resume.
        assert_eq!(fw, before, "{shown}");
        assert_eq!(fw.poll_output(), None, "{shown}");
    }
    assert_eq!(fw.handle_timeout(T0), Err(FirmwareError::TimeWentBackwards));
    // At the time already seen (or later) all of them are taken.
    assert_eq!(write(&mut fw, later, 1, &uri), ResponseCode::CHANGED);
    assert_eq!(fw.state(), State::Idle);
    fw.handle(later, FirmwareInput::Rebooted).unwrap();
}

/// object5.md §3: the Update Results each State allows.
fn allowed(version: ObjectVersion, state: State, result: UpdateResult) -> bool {
    let code = result.code();
    let v1_1 = version >= ObjectVersion::V1_1;
    match state {
        State::Idle => (0..=9).contains(&code) || (v1_1 && code == 10),
        State::Downloading | State::Updating => code == 0,
        State::Downloaded => code == 0 || code == 8 || (v1_1 && code == 11),
    }
}

#[derive(Debug, Clone)]
enum Step {
    Request(usize),
    Block(u32, bool, u8),
    Progress(u64),
    Completed,
    Failed(u8),
    Succeeded,
    UpdateFailed(bool, bool),
    Accept,
    Timeout(u64),
    Reboot,
    /// Request `REQUESTS[i]`, a report or a reboot at an earlier time.
    Backwards(usize),
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        (0..REQUESTS.len()).prop_map(Step::Request),
        (0u32..4, any::<bool>(), 1u8..17).prop_map(|(n, m, l)| Step::Block(n, m, l)),
        (0u64..5000).prop_map(Step::Progress),
        Just(Step::Completed),
        (0u8..12).prop_map(Step::Failed),
        Just(Step::Succeeded),
        (any::<bool>(), any::<bool>()).prop_map(|(u, i)| Step::UpdateFailed(u, i)),
        Just(Step::Accept),
        (0u64..200).prop_map(Step::Timeout),
        Just(Step::Reboot),
        (0..REQUESTS.len() + 2).prop_map(Step::Backwards),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn no_sequence_leaves_the_state_table_or_panics(
        version in prop_oneof![Just(ObjectVersion::V1_0), Just(ObjectVersion::V1_1), Just(ObjectVersion::V1_2)],
        defer in any::<bool>(),
        steps in prop::collection::vec(step(), 0..40),
    ) {
        let cfg = FirmwareUpdateConfig {
            user_deferral: defer.then_some(Duration::from_secs(30)),
            ..config(version)
        };
        let mut fw = FirmwareUpdate::new(cfg);
        write(&mut fw, T0, 13, &Value::UnsignedInteger(20));
        let mut sink = CountingSink::default();
        let mut now = T0;
        let data = [0u8; 16];
        for step in steps {
            now = now + Duration::from_millis(500);
            match step {
                Step::Request(i) => { apply(&mut fw, &mut sink, now, REQUESTS[i]); }
                Step::Block(n, more, len) => {
                    let len = if more { 16 } else { len as usize };
                    push(&mut fw, now, PackageBlock { number: n, more, size: 16, data: &data[..len], total_size: None }, &mut sink);
                }
                Step::Progress(o) => { let _ = fw.handle(now, FirmwareInput::DownloadProgress { offset: o }); }
                Step::Completed => { let _ = fw.handle(now, FirmwareInput::DownloadCompleted); }
                Step::Failed(r) => { let _ = fw.handle(now, FirmwareInput::DownloadFailed { result: UpdateResult::from_code(i64::from(r)) }); }
                Step::Succeeded => { let _ = fw.handle(now, FirmwareInput::UpdateSucceeded); }
                Step::UpdateFailed(usable, integrity) => {
                    let r = if integrity { UpdateResult::IntegrityCheckFailure } else { UpdateResult::UpdateFailed };
                    let _ = fw.handle(now, FirmwareInput::UpdateFailed { image_usable: usable, result: r });
                }
                Step::Accept => { let _ = fw.handle(now, FirmwareInput::DeferredUpdateAccepted); }
                Step::Timeout(s) => { now = now + Duration::from_secs(s); fw.handle_timeout(now).unwrap(); }
                Step::Reboot => {
                    let snapshot = serde_json::to_string(&fw).unwrap();
                    let restored: FirmwareUpdate = serde_json::from_str(&snapshot).unwrap();
                    prop_assert_eq!(&restored, &fw);
                    fw = restored;
                    fw.handle(now, FirmwareInput::Rebooted).unwrap();
                }
                Step::Backwards(i) => {
                    let before = fw.clone();
                    let earlier = Instant::from_millis(fw.last_input_time().as_millis() - 1);
                    let (uri, mut sink) = (Value::string("coap://h/fw"), CountingSink::default());
                    let input = match i {
                        0 => FirmwareInput::Write { resource: 1, value: &uri },
                        1 => FirmwareInput::WritePackageBlock { block: block(0, true, &data), sink: &mut sink },
                        2 => FirmwareInput::Execute { resource: 2 },
                        3 => FirmwareInput::DownloadCompleted,
                        4 => FirmwareInput::UpdateSucceeded,
                        _ => FirmwareInput::Rebooted,
                    };
                    prop_assert_eq!(fw.handle(earlier, input), Err(FirmwareError::TimeWentBackwards));
                    prop_assert_eq!(&fw, &before);
                }
            }
            outputs(&mut fw);
            prop_assert!(allowed(version, fw.state(), fw.update_result()), "{:?} with {:?}", fw.state(), fw.update_result());
        }
    }
}
