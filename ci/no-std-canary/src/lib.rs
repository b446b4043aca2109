//! A `#![no_std]` crate that uses lwm2m-fota's no_std layers and defines its own
//! panic handler. If anything in lwm2m-fota's dependency graph links `std`, the
//! build fails with a duplicate `panic_impl` lang item: a plain host build of the
//! library alone would not notice.
#![no_std]

extern crate alloc;

use alloc::vec::Vec;
use lwm2m_fota::codec::{self, DecodeOptions};
use lwm2m_fota::model::{ContentFormat, Path, Registry};

/// Decodes a TLV Read of /5/0 and returns the State, exercising model and codec.
pub fn state_of(payload: &[u8]) -> Option<i64> {
    let registry = Registry::default();
    let records = codec::decode(ContentFormat::Tlv, &Path::instance(5, 0), payload, &registry, &DecodeOptions::default()).ok()?;
    records.iter().find(|r| r.path == Path::resource(5, 0, 3)).and_then(|r| r.value.as_i64())
}

/// Encodes State as SenML-CBOR.
pub fn encode_state(state: i64) -> Vec<u8> {
    let records = [lwm2m_fota::model::Record::new(Path::resource(5, 0, 3), lwm2m_fota::model::Value::Integer(state))];
    let mut out = Vec::new();
    let _ = codec::encode(ContentFormat::SenmlCbor, &Path::resource(5, 0, 3), &records, &Registry::default(), &mut out);
    out
}

#[panic_handler]
fn panic(_: &core::panic::PanicInfo<'_>) -> ! {
    loop {}
}

/// Runs the /5 object through a pull download, proving the device layer is no_std.
pub fn device_downloads() -> bool {
    use lwm2m_fota::device::{FirmwareInput, FirmwareOutput, FirmwareUpdate, FirmwareUpdateConfig};
    use lwm2m_fota::model::{Instant, ResponseCode, State, Value};
    let mut fw = FirmwareUpdate::new(FirmwareUpdateConfig::default());
    let uri = Value::string("coap://fw/v2");
    let written = fw.handle(Instant::ZERO, FirmwareInput::Write { resource: 1, value: &uri }).is_ok()
        && fw.poll_output() == Some(FirmwareOutput::Respond(ResponseCode::CHANGED));
    written && fw.handle(Instant::ZERO, FirmwareInput::DownloadCompleted).is_ok() && fw.state() == State::Downloaded
}

/// The server's upgrade task builds without std too.
pub fn task_size() -> usize {
    core::mem::size_of::<lwm2m_fota::server::UpgradeTask>()
}
