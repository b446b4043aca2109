//! Snapshots of the /5 object written before its inputs became one enum
//! (`tests/data/firmware_update_snapshot_v0_*.json`, serialized by commit
//! 92f5d9c's code): they read into today's object, write back unchanged, and
//! continue as that code continued them.

use lwm2m_fota::device::{
    CountingSink, FirmwareError, FirmwareInput, FirmwareOutput, FirmwareUpdate, PackageBlock, PackageSink,
};
use lwm2m_fota::model::{Instant, Path, ResponseCode, State, UpdateResult, Value};

const NAMES: [&str; 5] = ["downloading", "pushing", "downloaded", "deferred", "updating"];

fn text(name: &str) -> String {
    let path = format!("{}/tests/data/firmware_update_snapshot_v0_{name}.json", env!("CARGO_MANIFEST_DIR"));
    std::fs::read_to_string(path).unwrap()
}

fn restore(name: &str) -> FirmwareUpdate {
    serde_json::from_str(&text(name)).unwrap()
}

fn at(millis: u64) -> Instant {
    Instant::from_millis(millis)
}

/// Every output queued now.
fn outputs(fw: &mut FirmwareUpdate) -> Vec<FirmwareOutput> {
    std::iter::from_fn(|| fw.poll_output()).collect()
}

/// A request's answer, and what follows it.
fn request(fw: &mut FirmwareUpdate, now: Instant, input: FirmwareInput<'_>) -> (ResponseCode, Vec<FirmwareOutput>) {
    assert_eq!(outputs(fw), [], "drained before the request");
    fw.handle(now, input).unwrap();
    let mut outputs = outputs(fw);
    match outputs.remove(0) {
        FirmwareOutput::Respond(code) => (code, outputs),
        other => panic!("a request's first output is its answer, not {other:?}"),
    }
}

use FirmwareOutput::{ApplyUpdate, DiscardImage, Persist, ResourceChanged, StartDownload};

#[test]
fn format_0_snapshots_read_and_write_back_unchanged() {
    for name in NAMES {
        let fw = restore(name);
        let written = serde_json::to_value(&fw).unwrap();
        let recorded: serde_json::Value = serde_json::from_str(&text(name)).unwrap();
        assert_eq!(written, recorded, "{name}");
        let again: FirmwareUpdate = serde_json::from_value(written).unwrap();
        assert_eq!(again, fw, "{name}");
    }
}

#[test]
fn a_pull_download_resumes_at_its_offset() {
    let mut fw = restore("downloading");
    assert_eq!((fw.state(), fw.update_result(), fw.transferred()), (State::Downloading, UpdateResult::Initial, 2048));
    assert_eq!((fw.package_uri(), fw.last_input_time()), ("coap://fw.example/v2.bin", at(6_000)));
    // The snapshot's clock goes on: a device whose clock restarts at zero
    // continues from the snapshot's last input.
    assert_eq!(fw.handle(at(5_999), FirmwareInput::Rebooted), Err(FirmwareError::TimeWentBackwards));
    fw.handle(at(7_000), FirmwareInput::Rebooted).unwrap();
    // What the snapshot had queued is gone; the download resumes.
    assert_eq!(outputs(&mut fw), [StartDownload { uri: "coap://fw.example/v2.bin".into(), offset: 2048 }]);
    fw.handle(at(7_500), FirmwareInput::DownloadProgress { offset: 4096 }).unwrap();
    fw.handle(at(8_000), FirmwareInput::DownloadCompleted).unwrap();
    assert_eq!(outputs(&mut fw), [ResourceChanged(3), ResourceChanged(12), Persist]);
    assert_eq!((fw.state(), fw.transferred()), (State::Downloaded, 4096));
    assert_eq!(fw.read(&Path::resource(5, 0, 12)).unwrap()[0].value, Value::Time(1_700_000_008));
    let answer = request(&mut fw, at(9_000), FirmwareInput::Execute { resource: 2 });
    assert_eq!(answer, (ResponseCode::CHANGED, vec![ResourceChanged(3), ResourceChanged(12), Persist, ApplyUpdate]));
    fw.handle(at(20_000), FirmwareInput::UpdateSucceeded).unwrap();
    assert_eq!((fw.state(), fw.update_result()), (State::Idle, UpdateResult::Success));
}

#[test]
fn a_push_continues_at_the_next_byte() {
    let mut fw = restore("pushing");
    assert_eq!((fw.state(), fw.transferred()), (State::Downloading, 32));
    fw.handle(at(5_000), FirmwareInput::Rebooted).unwrap();
    assert_eq!(outputs(&mut fw), []);
    let mut sink = CountingSink::default();
    let sink: &mut dyn PackageSink = &mut sink;
    // Block 1 again (its 2.31 was lost before the reboot): acknowledged only.
    let block1 = PackageBlock { number: 1, more: true, size: 16, data: &[1; 16], total_size: Some(40) };
    let answer = request(&mut fw, at(5_100), FirmwareInput::WritePackageBlock { block: block1, sink });
    assert_eq!(answer, (ResponseCode::CONTINUE, vec![]));
    let last = PackageBlock { number: 2, more: false, size: 16, data: &[2; 8], total_size: Some(40) };
    let answer = request(&mut fw, at(5_200), FirmwareInput::WritePackageBlock { block: last, sink });
    // Object 1.0 has no /5/0/12.
    assert_eq!(answer, (ResponseCode::CHANGED, vec![ResourceChanged(3), Persist]));
    assert_eq!((fw.state(), fw.transferred()), (State::Downloaded, 40));
    let answer = request(&mut fw, at(5_300), FirmwareInput::Execute { resource: 2 });
    assert_eq!(answer, (ResponseCode::CHANGED, vec![ResourceChanged(3), Persist, ApplyUpdate]));
}

#[test]
fn a_downloaded_image_is_installed_and_installed_again_after_a_failure() {
    let mut fw = restore("downloaded");
    let read = |fw: &FirmwareUpdate, r| fw.read(&Path::resource(5, 0, r)).unwrap()[0].value.clone().into_owned();
    assert_eq!(read(&fw, 6), Value::string("app"));
    assert_eq!(read(&fw, 7), Value::string("3.0.0"));
    assert_eq!(read(&fw, 11), Value::Integer(2));
    assert_eq!(read(&fw, 14), Value::Boolean(false));
    assert_eq!((fw.state(), fw.transferred()), (State::Downloaded, 3000));
    fw.handle(at(10_000), FirmwareInput::Rebooted).unwrap();
    assert_eq!(outputs(&mut fw), []);
    let answer = request(&mut fw, at(10_000), FirmwareInput::Execute { resource: 2 });
    assert_eq!(answer, (ResponseCode::CHANGED, vec![ResourceChanged(3), ResourceChanged(12), Persist, ApplyUpdate]));
    let failed = FirmwareInput::UpdateFailed { image_usable: true, result: UpdateResult::UpdateFailed };
    fw.handle(at(11_000), failed).unwrap();
    assert_eq!((fw.state(), fw.update_result()), (State::Downloaded, UpdateResult::UpdateFailed));
    outputs(&mut fw);
    let (code, _) = request(&mut fw, at(12_000), FirmwareInput::Execute { resource: 2 });
    assert_eq!((code, fw.state(), fw.update_result()), (ResponseCode::CHANGED, State::Updating, UpdateResult::Initial));
}

#[test]
fn a_deferral_ends_at_its_deadline_or_restarts_after_a_reboot() {
    // No reboot: the recorded deadline holds.
    let mut fw = restore("deferred");
    assert_eq!(
        (fw.state(), fw.update_result(), fw.poll_timeout()),
        (State::Downloaded, UpdateResult::Deferred, Some(at(35_000)))
    );
    fw.handle_timeout(at(34_999)).unwrap();
    assert_eq!((fw.state(), outputs(&mut fw)), (State::Downloaded, vec![]));
    fw.handle_timeout(at(35_000)).unwrap();
    let started = vec![ResourceChanged(3), ResourceChanged(12), ResourceChanged(5), Persist, ApplyUpdate];
    assert_eq!((fw.state(), outputs(&mut fw)), (State::Updating, started.clone()));
    // A reboot: the user's 30 s start again (within Maximum Defer Period, 120 s).
    let mut fw = restore("deferred");
    fw.handle(at(6_000), FirmwareInput::Rebooted).unwrap();
    assert_eq!(fw.poll_timeout(), Some(at(36_000)));
    fw.handle_timeout(at(35_000)).unwrap();
    assert_eq!(fw.state(), State::Downloaded);
    fw.handle_timeout(at(36_000)).unwrap();
    assert_eq!((fw.state(), outputs(&mut fw)), (State::Updating, started));
}

#[test]
fn an_update_being_installed_is_applied_again() {
    let mut fw = restore("updating");
    fw.handle(at(4_000), FirmwareInput::Rebooted).unwrap();
    assert_eq!(outputs(&mut fw), [ApplyUpdate]);
    let failed = FirmwareInput::UpdateFailed { image_usable: false, result: UpdateResult::IntegrityCheckFailure };
    fw.handle(at(5_000), failed).unwrap();
    let want = [DiscardImage, ResourceChanged(3), ResourceChanged(12), ResourceChanged(5), Persist];
    assert_eq!(outputs(&mut fw), want);
    assert_eq!((fw.state(), fw.update_result()), (State::Idle, UpdateResult::IntegrityCheckFailure));
}

#[test]
fn a_snapshot_whose_fields_contradict_each_other_is_refused() {
    let edit = |name: &str, field: &str, value: serde_json::Value| {
        let mut json: serde_json::Value = serde_json::from_str(&text(name)).unwrap();
        json[field] = value;
        serde_json::from_value::<FirmwareUpdate>(json).unwrap_err().to_string()
    };
    assert!(edit("downloading", "state", "Idle".into()).contains("in Idle with an image transfer"));
    assert!(edit("downloading", "transfer", "None".into()).contains("without an image transfer"));
    assert!(edit("updating", "deferred_until", 5.into()).contains("deferral outside Downloaded"));
}
