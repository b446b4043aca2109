//! Built-in object definitions: /1 Server, /3 Device and /5 Firmware Update.
//!
//! Resource tables follow the OMA LwM2M registry (`1.xml`, `3.xml`, `5.xml` and the
//! /5 version history 1.0, 1.1, 1.2).

use super::DataType as T;
use super::definition::{ObjectDef, ObjectVersion, Operations as Op, ResourceDef as R, ValueRange};

const fn int_range(min: i64, max: i64) -> ValueRange {
    ValueRange::Integer { min, max }
}

const fn len_range(max: usize) -> ValueRange {
    ValueRange::Length { min: 0, max }
}

/// The /5 resource table: those of object version 1.0 (resource 4 was removed
/// before LwM2M 1.0 and is not defined), then the later versions' additions.
macro_rules! firmware_update_table {
    ($update_result_max:expr; $($added:expr),*) => {
        [
            R::new(0, "Package", Op::WRITE, T::Opaque, false, true),
            R::new(1, "Package URI", Op::READ_WRITE, T::String, false, true).with_range(len_range(255)),
            R::new(2, "Update", Op::EXECUTE, T::None, false, true),
            R::new(3, "State", Op::READ, T::Integer, false, true).with_range(int_range(0, 3)),
            R::new(5, "Update Result", Op::READ, T::Integer, false, true).with_range(int_range(0, $update_result_max)),
            R::new(6, "PkgName", Op::READ, T::String, false, false).with_range(len_range(255)),
            R::new(7, "PkgVersion", Op::READ, T::String, false, false).with_range(len_range(255)),
            R::new(8, "Firmware Update Protocol Support", Op::READ, T::Integer, true, false)
                .with_range(int_range(0, 5)),
            R::new(9, "Firmware Update Delivery Method", Op::READ, T::Integer, false, true).with_range(int_range(0, 2)),
            $($added),*
        ]
    };
}

const fn cancel() -> R {
    R::new(10, "Cancel", Op::EXECUTE, T::None, false, false)
}
const fn severity() -> R {
    R::new(11, "Severity", Op::READ_WRITE, T::Integer, false, false).with_range(int_range(0, 2))
}
const fn last_state_change_time() -> R {
    R::new(12, "Last State Change Time", Op::READ, T::Time, false, false)
}
const fn maximum_defer_period() -> R {
    R::new(13, "Maximum Defer Period", Op::READ_WRITE, T::UnsignedInteger, false, false).with_units("s")
}
const fn automatic_upgrade_at_download() -> R {
    R::new(14, "Automatic Upgrade at Download", Op::READ_WRITE, T::Boolean, false, false)
}

static FIRMWARE_UPDATE_1_0_TABLE: [R; 9] = firmware_update_table!(9;);
static FIRMWARE_UPDATE_1_1_TABLE: [R; 13] =
    firmware_update_table!(11; cancel(), severity(), last_state_change_time(), maximum_defer_period());
static FIRMWARE_UPDATE_1_2_TABLE: [R; 14] = firmware_update_table!(11;
    cancel(), severity(), last_state_change_time(), maximum_defer_period(), automatic_upgrade_at_download());

static FIRMWARE_UPDATE_1_0: ObjectDef =
    ObjectDef::from_sorted(5, "Firmware Update", ObjectVersion::V1_0, false, false, &FIRMWARE_UPDATE_1_0_TABLE);
static FIRMWARE_UPDATE_1_1: ObjectDef =
    ObjectDef::from_sorted(5, "Firmware Update", ObjectVersion::V1_1, false, false, &FIRMWARE_UPDATE_1_1_TABLE);
static FIRMWARE_UPDATE_1_2: ObjectDef = FIRMWARE_UPDATE_1_2_DEF;
pub(crate) const FIRMWARE_UPDATE_1_2_DEF: ObjectDef =
    ObjectDef::from_sorted(5, "Firmware Update", ObjectVersion::V1_2, false, false, &FIRMWARE_UPDATE_1_2_TABLE);

/// The /5 Firmware Update object in the requested object version: 1.0 (resources
/// 0–3, 5–9; Update Result 0..9), 1.1 (adds 10–13; Update Result 0..11) or 1.2
/// (adds 14). Versions below 1.1 map to 1.0, above 1.2 to 1.2.
///
/// ```
/// use lwm2m_fota::model::{builtin, ObjectVersion};
/// let v1_0 = builtin::firmware_update(ObjectVersion::V1_0);
/// assert!(v1_0.resource(10).is_none());
/// assert!(builtin::firmware_update(ObjectVersion::V1_2).resource(14).is_some());
/// ```
pub fn firmware_update(version: ObjectVersion) -> &'static ObjectDef {
    if version < ObjectVersion::V1_1 {
        &FIRMWARE_UPDATE_1_0
    } else if version < ObjectVersion::V1_2 {
        &FIRMWARE_UPDATE_1_1
    } else {
        &FIRMWARE_UPDATE_1_2
    }
}

static DEVICE_TABLE: [R; 23] = [
    R::new(0, "Manufacturer", Op::READ, T::String, false, false),
    R::new(1, "Model Number", Op::READ, T::String, false, false),
    R::new(2, "Serial Number", Op::READ, T::String, false, false),
    R::new(3, "Firmware Version", Op::READ, T::String, false, false),
    R::new(4, "Reboot", Op::EXECUTE, T::None, false, true),
    R::new(5, "Factory Reset", Op::EXECUTE, T::None, false, false),
    R::new(6, "Available Power Sources", Op::READ, T::Integer, true, false).with_range(int_range(0, 7)),
    R::new(7, "Power Source Voltage", Op::READ, T::Integer, true, false).with_units("mV"),
    R::new(8, "Power Source Current", Op::READ, T::Integer, true, false).with_units("mA"),
    R::new(9, "Battery Level", Op::READ, T::Integer, false, false).with_range(int_range(0, 100)).with_units("%"),
    R::new(10, "Memory Free", Op::READ, T::Integer, false, false).with_units("KB"),
    R::new(11, "Error Code", Op::READ, T::Integer, true, true).with_range(int_range(0, 32)),
    R::new(12, "Reset Error Code", Op::EXECUTE, T::None, false, false),
    R::new(13, "Current Time", Op::READ_WRITE, T::Time, false, false),
    R::new(14, "UTC Offset", Op::READ_WRITE, T::String, false, false),
    R::new(15, "Timezone", Op::READ_WRITE, T::String, false, false),
    R::new(16, "Supported Binding and Modes", Op::READ, T::String, false, true),
    R::new(17, "Device Type", Op::READ, T::String, false, false),
    R::new(18, "Hardware Version", Op::READ, T::String, false, false),
    R::new(19, "Software Version", Op::READ, T::String, false, false),
    R::new(20, "Battery Status", Op::READ, T::Integer, false, false).with_range(int_range(0, 6)),
    R::new(21, "Memory Total", Op::READ, T::Integer, false, false).with_units("KB"),
    R::new(22, "ExtDevInfo", Op::READ, T::Objlnk, true, false),
];

pub(crate) const DEVICE: ObjectDef =
    ObjectDef::from_sorted(3, "Device", ObjectVersion::V1_2, false, true, &DEVICE_TABLE);

/// The /3 Device object (mandatory for every client; single instance).
pub fn device() -> ObjectDef {
    DEVICE
}

static SERVER_TABLE: [R; 28] = [
    R::new(0, "Short Server ID", Op::READ, T::Integer, false, true).with_range(int_range(1, 65534)),
    R::new(1, "Lifetime", Op::READ_WRITE, T::Integer, false, true).with_units("s"),
    R::new(2, "Default Minimum Period", Op::READ_WRITE, T::Integer, false, false).with_units("s"),
    R::new(3, "Default Maximum Period", Op::READ_WRITE, T::Integer, false, false).with_units("s"),
    R::new(4, "Disable", Op::EXECUTE, T::None, false, false),
    R::new(5, "Disable Timeout", Op::READ_WRITE, T::Integer, false, false).with_units("s"),
    R::new(6, "Notification Storing When Disabled or Offline", Op::READ_WRITE, T::Boolean, false, true),
    R::new(7, "Binding", Op::READ_WRITE, T::String, false, true),
    R::new(8, "Registration Update Trigger", Op::EXECUTE, T::None, false, true),
    R::new(9, "Bootstrap-Request Trigger", Op::EXECUTE, T::None, false, false),
    R::new(10, "APN Link", Op::READ_WRITE, T::Objlnk, false, false),
    R::new(11, "TLS-DTLS Alert Code", Op::READ, T::UnsignedInteger, false, false),
    R::new(12, "Last Bootstrapped", Op::READ, T::Time, false, false),
    R::new(13, "Registration Priority Order", Op::READ_WRITE, T::UnsignedInteger, false, false),
    R::new(14, "Initial Registration Delay Timer", Op::READ_WRITE, T::UnsignedInteger, false, false).with_units("s"),
    R::new(15, "Registration Failure Block", Op::READ_WRITE, T::Boolean, false, false),
    R::new(16, "Bootstrap on Registration Failure", Op::READ_WRITE, T::Boolean, false, false),
    R::new(17, "Communication Retry Count", Op::READ_WRITE, T::UnsignedInteger, false, false),
    R::new(18, "Communication Retry Timer", Op::READ_WRITE, T::UnsignedInteger, false, false).with_units("s"),
    R::new(19, "Communication Sequence Delay Timer", Op::READ_WRITE, T::UnsignedInteger, false, false).with_units("s"),
    R::new(20, "Communication Sequence Retry Count", Op::READ_WRITE, T::UnsignedInteger, false, false),
    R::new(21, "Trigger", Op::READ_WRITE, T::Boolean, false, false),
    R::new(22, "Preferred Transport", Op::READ_WRITE, T::String, false, false),
    R::new(23, "Mute Send", Op::READ_WRITE, T::Boolean, false, false),
    R::new(24, "Alternate APN Links", Op::READ_WRITE, T::Objlnk, true, false),
    R::new(25, "Supported Server Versions", Op::READ_WRITE, T::String, true, false),
    R::new(26, "Default Notification Mode", Op::READ_WRITE, T::Integer, false, false).with_range(int_range(0, 1)),
    R::new(27, "Profile ID Hash Algorithm", Op::READ_WRITE, T::UnsignedInteger, false, false),
];

pub(crate) const SERVER: ObjectDef =
    ObjectDef::from_sorted(1, "LwM2M Server", ObjectVersion::V1_2, true, true, &SERVER_TABLE);

/// The /1 Server object (its Lifetime, /1/x/1, is what a server extends while a
/// device is busy downloading).
pub fn server() -> ObjectDef {
    SERVER
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_are_sorted_and_versioned() {
        for def in [
            firmware_update(ObjectVersion::V1_0).clone(),
            firmware_update(ObjectVersion::V1_1).clone(),
            firmware_update(ObjectVersion::V1_2).clone(),
            device(),
            server(),
        ] {
            assert!(def.resources().windows(2).all(|w| w[0].id < w[1].id), "{}", def.name);
            for r in def.resources() {
                assert_eq!(def.resource(r.id).unwrap().id, r.id);
            }
        }
        let v10 = firmware_update(ObjectVersion::V1_0);
        assert_eq!(v10.resources().len(), 9);
        assert!(v10.resource(4).is_none());
        assert_eq!(v10.resource(5).unwrap().range, Some(int_range(0, 9)));
        let v11 = firmware_update(ObjectVersion::V1_1);
        assert_eq!(v11.resource(5).unwrap().range, Some(int_range(0, 11)));
        assert!(v11.resource(14).is_none());
        assert_eq!(firmware_update(ObjectVersion::V1_2).resource(13).unwrap().data_type, T::UnsignedInteger);
        assert_eq!(firmware_update(ObjectVersion { major: 2, minor: 0 }).version, ObjectVersion::V1_2);
        assert!(device().resource(8).unwrap().multiple);
        assert_eq!(server().resource(12).unwrap().data_type, T::Time);
    }
}
