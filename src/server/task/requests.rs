//! Requests: what a request in flight is for, the observations the task
//! holds, and the LwM2M operation each action becomes.

use bytes::Bytes;

use super::io::{RequestKind, text};
use crate::model::{Block, ContentFormat, Operation, Path};
use crate::server::UpgradeConfig;

/// What a request is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub(super) enum Action {
    ReadFirmware,
    ReadVersion,
    Reset,
    WriteLifetime,
    RestoreLifetime,
    Observe(Target),
    WriteUri,
    PushBlock(u32),
    Execute,
}

impl Action {
    /// A request that only looks at the device.
    pub fn looks(self) -> bool {
        self.looked_at().is_some()
    }

    /// What a look reads or observes (its answer's payload is about this path).
    pub fn looked_at(self) -> Option<Path> {
        match self {
            Action::ReadFirmware => Some(Path::instance(5, 0)),
            Action::ReadVersion => Some(Path::resource(3, 0, 3)),
            Action::Observe(target) => Some(target.path()),
            _ => None,
        }
    }
}

/// Observation targets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub(super) enum Target {
    State,
    Result,
    Instance,
    Version,
    Protocols,
    Delivery,
}

impl Target {
    pub const ALL: [Target; 6] =
        [Target::State, Target::Result, Target::Instance, Target::Version, Target::Protocols, Target::Delivery];

    fn index(self) -> usize {
        self as usize
    }

    pub fn bit(self) -> u8 {
        1 << self.index()
    }

    pub fn path(self) -> Path {
        match self {
            Target::State => Path::resource(5, 0, 3),
            Target::Result => Path::resource(5, 0, 5),
            Target::Instance => Path::instance(5, 0),
            Target::Version => Path::resource(3, 0, 3),
            Target::Protocols => Path::resource(5, 0, 8),
            Target::Delivery => Path::resource(5, 0, 9),
        }
    }
}

/// State and Update Result, the observations every look under S5 needs.
pub(super) const STATE_AND_RESULT: u8 = 1 << 0 | 1 << 1;

/// No request (ids start at 1).
const NO_ID: u32 = 0;

/// The observations the task holds (by the id of the Observe request that
/// started each; ids fit 32 bits: a task sends far fewer than 2^32 requests)
/// and those it wants.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub(super) struct Observations {
    pub ids: [u32; 6],
    pub wanted: u8,
}

impl Observations {
    /// The target observed by request `id`.
    pub fn target_of(&self, id: u64) -> Option<Target> {
        Target::ALL.into_iter().find(|t| self.ids[t.index()] != NO_ID && u64::from(self.ids[t.index()]) == id)
    }

    /// The observation of `target` is established by request `id`.
    pub fn established(&mut self, target: Target, id: u64) {
        self.ids[target.index()] = u32::try_from(id).unwrap_or(NO_ID);
    }

    /// The observation of `target` is void.
    pub fn void(&mut self, target: Target) {
        self.ids[target.index()] = NO_ID;
    }

    /// All observations are void (a new registration, a de-registration).
    pub fn void_all(&mut self) {
        self.ids = [NO_ID; 6];
    }

    /// The targets observed now.
    pub fn observed(&self) -> u8 {
        Target::ALL.into_iter().filter(|t| self.ids[t.index()] != NO_ID).fold(0, |m, t| m | t.bit())
    }

    /// The first of `targets` not observed.
    pub fn missing(&self, targets: u8) -> Option<Target> {
        Target::ALL.into_iter().find(|t| targets & t.bit() != 0 && self.ids[t.index()] == NO_ID)
    }
}

/// The request in flight (at most one).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub(super) struct InFlight {
    pub id: u32,
    pub action: Action,
}

/// The push block size on the wire: the configured one as a power of two in
/// 16..=1024 (RFC 7959 block sizes).
pub(super) fn block_size(config: &UpgradeConfig) -> u32 {
    config.block_size.clamp(16, 1024).next_power_of_two()
}

/// The number of the image's last push block.
pub(super) fn last_block(config: &UpgradeConfig) -> u32 {
    let blocks = config.image_size.div_ceil(u64::from(block_size(config))).max(1);
    u32::try_from(blocks - 1).unwrap_or(u32::MAX)
}

/// The bytes the device holds once it acknowledged blocks `0..blocks`.
pub(super) fn pushed_bytes(config: &UpgradeConfig, blocks: u32) -> u64 {
    (u64::from(blocks) * u64::from(block_size(config))).min(config.image_size)
}

/// The request `action` becomes. `original_lifetime` and `server_instance`
/// come from the registration.
pub(super) fn request_for(
    config: &UpgradeConfig,
    action: Action,
    original_lifetime: u32,
    server_instance: u16,
) -> RequestKind {
    let write = |path: Path, payload: Bytes| {
        RequestKind::Operation(Operation::Write { path, format: ContentFormat::Text, payload })
    };
    match action {
        Action::ReadFirmware | Action::ReadVersion => {
            RequestKind::Operation(Operation::Read { path: action.looked_at().unwrap_or(Path::ROOT), accept: None })
        }
        Action::Reset => write(Path::resource(5, 0, 1), Bytes::new()),
        Action::WriteLifetime | Action::RestoreLifetime => {
            let seconds = if action == Action::WriteLifetime {
                config.extended_lifetime.as_secs()
            } else {
                u64::from(original_lifetime.max(1))
            };
            let digits = Digits::of(seconds);
            write(Path::resource(1, server_instance, 1), Bytes::copy_from_slice(digits.as_bytes()))
        }
        Action::Observe(target) => RequestKind::Operation(Operation::Observe { path: target.path(), accept: None }),
        Action::WriteUri => write(Path::resource(5, 0, 1), text(&config.package_uri())),
        Action::PushBlock(number) => {
            let size = block_size(config);
            let offset = u64::from(number) * u64::from(size);
            let more = offset + u64::from(size) < config.image_size;
            RequestKind::PackageBlock { block: Block { number, more, size }, total_size: config.image_size }
        }
        Action::Execute => RequestKind::Operation(Operation::Execute { path: Path::resource(5, 0, 2) }),
    }
}

/// Decimal digits of a number without allocating.
struct Digits {
    bytes: [u8; 20],
    start: usize,
}

impl Digits {
    fn of(mut n: u64) -> Digits {
        let mut digits = Digits { bytes: [0; 20], start: 20 };
        loop {
            digits.start -= 1;
            digits.bytes[digits.start] = b'0' + (n % 10) as u8;
            n /= 10;
            if n == 0 {
                return digits;
            }
        }
    }

    fn as_bytes(&self) -> &[u8] {
        &self.bytes[self.start..]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::sync::Arc;

    fn config() -> UpgradeConfig {
        UpgradeConfig::new("coap://fw.example/", "v2.bin", 60_000)
    }

    #[test]
    fn digits() {
        for n in [0, 7, 10, 86_400, u64::MAX] {
            assert_eq!(Digits::of(n).as_bytes(), alloc::format!("{n}").as_bytes());
        }
    }

    #[test]
    fn block_sizes_are_rounded_up_to_a_power_of_two() {
        let mut c = config();
        c.block_size = 1000;
        c.image_size = 4000;
        assert_eq!(block_size(&c), 1024);
        assert_eq!(last_block(&c), 3);
        assert_eq!(pushed_bytes(&c, 1), 1024);
        assert_eq!(pushed_bytes(&c, 4), 4000);
        c.block_size = 1;
        assert_eq!(block_size(&c), 16);
        c.block_size = 5000;
        assert_eq!(block_size(&c), 1024);
        c.image_size = 0;
        assert_eq!(last_block(&c), 0);
    }

    #[test]
    fn requests() {
        let mut c = config();
        c.image_size = 2048;
        c.block_size = 1024;
        let c = Arc::new(c);
        let kind = request_for(&c, Action::PushBlock(1), 300, 0);
        assert_eq!(
            kind,
            RequestKind::PackageBlock { block: Block { number: 1, more: false, size: 1024 }, total_size: 2048 }
        );
        let RequestKind::Operation(Operation::Write { path, payload, .. }) =
            request_for(&c, Action::RestoreLifetime, 300, 4)
        else {
            panic!()
        };
        assert_eq!((path, &payload[..]), (Path::resource(1, 4, 1), &b"300"[..]));
        let RequestKind::Operation(Operation::Write { payload, .. }) = request_for(&c, Action::Reset, 300, 0) else {
            panic!()
        };
        assert!(payload.is_empty());
    }

    #[test]
    fn observations() {
        let mut o = Observations::default();
        assert_eq!(o.missing(STATE_AND_RESULT), Some(Target::State));
        o.established(Target::State, 7);
        assert_eq!(o.target_of(7), Some(Target::State));
        assert_eq!(o.target_of(0), None);
        assert_eq!(o.missing(STATE_AND_RESULT), Some(Target::Result));
        o.established(Target::Result, 8);
        assert_eq!(o.observed(), STATE_AND_RESULT);
        o.void(Target::State);
        assert_eq!(o.observed(), Target::Result.bit());
        o.void_all();
        assert_eq!(o.observed(), 0);
    }
}
