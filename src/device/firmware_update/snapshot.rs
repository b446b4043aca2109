//! The serde form of [`FirmwareUpdate`]: format 0, the layout the object has
//! had since it first serialized, with State, transfer and deferral as three
//! flat fields. The object keeps them as one [`Phase`]; a snapshot whose fields
//! contradict each other (a transfer in Idle, none in another State, a
//! deferral outside Downloaded) is refused, as no object writes one.
//!
//! Keeping the layout means snapshots of either side read on the other, in
//! every serde format (self-describing or not). Should it change, the new
//! layout gets a `format` number and this one stays readable.

use alloc::borrow::Cow;
use alloc::collections::VecDeque;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::{FirmwareOutput, FirmwareUpdate, FirmwareUpdateConfig, LastBlock, Phase, Transfer};
use crate::model::{Instant, State, UpdateResult};

/// Format 0, field for field. Borrowed when written, owned when read.
#[derive(Serialize, Deserialize)]
#[serde(rename = "FirmwareUpdate")]
struct Snapshot<'a> {
    config: Cow<'a, FirmwareUpdateConfig>,
    state: State,
    result: UpdateResult,
    package_uri: Cow<'a, str>,
    package_name: Cow<'a, str>,
    package_version: Cow<'a, str>,
    severity: i64,
    last_state_change: i64,
    maximum_defer_period: u64,
    automatic_upgrade: bool,
    transfer: SnapshotTransfer,
    deferred_until: Option<Instant>,
    last_now: Instant,
    events: Cow<'a, VecDeque<FirmwareOutput>>,
}

/// Format 0's transfer: `None` in Idle.
#[derive(Clone, Copy, Serialize, Deserialize)]
#[serde(rename = "Transfer")]
enum SnapshotTransfer {
    None,
    Push { received: u64, last_block: Option<(u64, u32, bool)> },
    Pull { offset: u64 },
}

impl From<Transfer> for SnapshotTransfer {
    fn from(transfer: Transfer) -> SnapshotTransfer {
        match transfer {
            Transfer::Push { received, last_block } => SnapshotTransfer::Push {
                received,
                last_block: last_block.map(|last| (last.offset, last.len, last.more)),
            },
            Transfer::Pull { offset } => SnapshotTransfer::Pull { offset },
        }
    }
}

impl SnapshotTransfer {
    fn restore(self) -> Option<Transfer> {
        match self {
            SnapshotTransfer::None => None,
            SnapshotTransfer::Push { received, last_block } => Some(Transfer::Push {
                received,
                last_block: last_block.map(|(offset, len, more)| LastBlock { offset, len, more }),
            }),
            SnapshotTransfer::Pull { offset } => Some(Transfer::Pull { offset }),
        }
    }
}

impl<'a> Snapshot<'a> {
    fn of(fw: &'a FirmwareUpdate) -> Snapshot<'a> {
        let (transfer, deferred_until) = match fw.phase {
            Phase::Idle => (SnapshotTransfer::None, None),
            Phase::Downloading(transfer) | Phase::Updating { transfer } => (transfer.into(), None),
            Phase::Downloaded { transfer, deferred_until } => (transfer.into(), deferred_until),
        };
        Snapshot {
            config: Cow::Borrowed(&fw.config),
            state: fw.phase.state(),
            result: fw.result,
            package_uri: Cow::Borrowed(&fw.package_uri),
            package_name: Cow::Borrowed(&fw.package_name),
            package_version: Cow::Borrowed(&fw.package_version),
            severity: fw.severity,
            last_state_change: fw.last_state_change,
            maximum_defer_period: fw.maximum_defer_period,
            automatic_upgrade: fw.automatic_upgrade,
            transfer,
            deferred_until,
            last_now: fw.last_now,
            events: Cow::Borrowed(&fw.outputs),
        }
    }

    fn restore(self) -> Result<FirmwareUpdate, &'static str> {
        let phase = match (self.state, self.transfer.restore(), self.deferred_until) {
            (State::Idle, None, None) => Phase::Idle,
            (State::Downloading, Some(transfer), None) => Phase::Downloading(transfer),
            (State::Downloaded, Some(transfer), deferred_until) => Phase::Downloaded { transfer, deferred_until },
            (State::Updating, Some(transfer), None) => Phase::Updating { transfer },
            (State::Idle, Some(_), _) => return Err("a firmware update snapshot in Idle with an image transfer"),
            (_, None, _) => return Err("a firmware update snapshot out of Idle without an image transfer"),
            (_, _, Some(_)) => return Err("a firmware update snapshot with a deferral outside Downloaded"),
        };
        Ok(FirmwareUpdate {
            config: self.config.into_owned(),
            phase,
            result: self.result,
            package_uri: self.package_uri.into_owned(),
            package_name: self.package_name.into_owned(),
            package_version: self.package_version.into_owned(),
            severity: self.severity,
            last_state_change: self.last_state_change,
            maximum_defer_period: self.maximum_defer_period,
            automatic_upgrade: self.automatic_upgrade,
            last_now: self.last_now,
            outputs: self.events.into_owned(),
        })
    }
}

impl Serialize for FirmwareUpdate {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        Snapshot::of(self).serialize(serializer)
    }
}

impl<'de> Deserialize<'de> for FirmwareUpdate {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<FirmwareUpdate, D::Error> {
        Snapshot::deserialize(deserializer)?.restore().map_err(serde::de::Error::custom)
    }
}
