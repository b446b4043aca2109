//! A campaign over simulated devices: the [`Campaign`] decides which upgrade
//! starts when, the fleet runs each through the endpoint, and the devices'
//! registrations, companions and downloads are reported back to it, as an
//! embedder's server would.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use super::fleet::{EventHandleSlot, Fleet, FleetConfig, FleetReport};
use super::{FleetProfile, SimDevice};
use crate::campaign::{
    Campaign, CampaignError, CampaignOutput, CampaignSpec, CancelMode, Catalogue, DEFAULT_BASE_URI, DeviceInfo,
    Settings, SettingsTree, TaskTemplate,
};
use crate::model::Instant;
use crate::server::{DeviceId, UpgradeConfig};

/// A block of alike simulated devices: `count` devices named `prefix0`,
/// `prefix1`, ….
#[derive(Debug, Clone, PartialEq)]
pub struct DeviceBlock {
    /// The endpoint names' prefix.
    pub prefix: String,
    /// How many devices.
    pub count: usize,
    /// Their behaviour.
    pub profile: FleetProfile,
    /// Their groups, in resolution order.
    pub groups: Vec<String>,
    /// The firmware version they run.
    pub version: String,
    /// Their own settings.
    pub settings: Settings,
    /// When they first register (zero: registered when the campaign starts).
    pub online_after: Duration,
    /// When a companion (a phone) installs the target image on them while
    /// they are offline (mobile FOTA), if one does.
    pub companion_delivers_at: Option<Duration>,
}

impl DeviceBlock {
    /// `count` devices of `profile` named `prefix…`, at version `version`,
    /// online from the start, in no group.
    pub fn new(prefix: &str, count: usize, profile: FleetProfile, version: &str) -> DeviceBlock {
        DeviceBlock {
            prefix: prefix.into(),
            count,
            profile,
            groups: Vec::new(),
            version: version.into(),
            settings: Settings::new(),
            online_after: Duration::ZERO,
            companion_delivers_at: None,
        }
    }
}

/// An operator's command to a running campaign (C5).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Command {
    /// Stop starting upgrades.
    Pause,
    /// Start them again.
    Resume,
    /// No new starts; running upgrades finish.
    SoftCancel,
    /// No new starts; running upgrades are cancelled.
    HardCancel,
}

impl Command {
    /// The command of a name: `pause`, `resume`, `soft-cancel`, `hard-cancel`.
    pub fn from_name(name: &str) -> Option<Command> {
        Some(match name {
            "pause" => Command::Pause,
            "resume" => Command::Resume,
            "soft-cancel" => Command::SoftCancel,
            "hard-cancel" => Command::HardCancel,
            _ => return None,
        })
    }
}

/// What to simulate: the campaign's definition, what it chooses from, and
/// the devices.
#[derive(Debug, Clone)]
pub struct CampaignSimConfig {
    /// The campaign.
    pub spec: CampaignSpec,
    /// The firmware catalogue its file comes from.
    pub catalogue: Catalogue,
    /// Named task templates.
    pub templates: BTreeMap<String, TaskTemplate>,
    /// Default and group settings.
    pub tree: SettingsTree,
    /// The devices.
    pub blocks: Vec<DeviceBlock>,
    /// Seed of every random choice.
    pub seed: u64,
    /// The operator's commands, at simulated times from the creation.
    pub commands: Vec<(Duration, Command)>,
}

/// Why a campaign simulation cannot run.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SimError {
    /// The campaign cannot be created.
    #[error(transparent)]
    Campaign(#[from] CampaignError),
    /// More devices than [`MAX_SIM_DEVICES`].
    #[error("devices: more than {MAX_SIM_DEVICES} devices in all")]
    TooManyDevices,
    /// Two targeted devices have the same endpoint name.
    #[error("devices: two devices are named {0:?}")]
    DuplicateEndpoint(String),
    /// The file is larger than [`MAX_SIM_IMAGE`] (the simulation holds the
    /// image it pushes in memory).
    #[error("files: {0:?} is larger than {MAX_SIM_IMAGE} bytes")]
    ImageTooLarge(String),
}

/// The largest image a campaign simulation takes, bytes.
pub const MAX_SIM_IMAGE: u64 = 256 * 1024 * 1024;

/// What a campaign simulation measured.
#[derive(Debug)]
pub struct CampaignRun {
    /// The campaign at the end: every device's record, progress.
    pub campaign: Campaign,
    /// The fleet's figures over the upgrades that ran.
    pub fleet: FleetReport,
    /// The most image bytes delivered in any second (pull downloads spread
    /// over their span, pushed blocks when sent).
    pub max_bytes_in_1s: u64,
    /// Simulated time from the campaign's creation to its last event.
    pub sim_duration: Duration,
    /// Devices given the mobile FOTA settings (M2).
    pub mobile_fota_marked: u64,
    /// The campaign's phase, pause, abort and completion outputs, with when.
    pub events: Vec<(Instant, CampaignOutput)>,
}

/// The campaign's side of a fleet.
#[derive(Debug)]
pub(super) struct CampaignState {
    pub(super) campaign: Campaign,
    blocks: Vec<DeviceBlock>,
    /// The first fleet index of each block.
    block_starts: Vec<usize>,
    /// The fleet index of each campaign device.
    targets: Vec<u32>,
    target_version: Option<String>,
    /// Running upgrades by campaign index.
    pub(super) running: HashMap<u32, DeviceId>,
    pub(super) timer: Option<(Instant, EventHandleSlot)>,
    /// Image bytes delivered in each second from `bytes_base` on, while a
    /// download counted may still add to it (counts start at the
    /// simulation's current time, which only moves forward).
    bytes: VecDeque<u64>,
    bytes_base: u64,
    /// The most in any second that has left `bytes`.
    bytes_max: u64,
    pub(super) mobile_fota_marked: u64,
    pub(super) events: Vec<(Instant, CampaignOutput)>,
    pub(super) end: Instant,
    commands: Vec<Command>,
}

impl CampaignState {
    fn block(&self, fleet_index: u32) -> (&DeviceBlock, usize) {
        let i = self.block_starts.partition_point(|&start| start <= fleet_index as usize) - 1;
        (&self.blocks[i], fleet_index as usize - self.block_starts[i])
    }

    /// The version a device runs at `now`: its block's, or the target once
    /// its companion installed it.
    fn version_at(&self, block: &DeviceBlock, now: Instant) -> String {
        match (block.companion_delivers_at, &self.target_version) {
            (Some(at), Some(target)) if Instant::ZERO + at <= now => target.clone(),
            _ => block.version.clone(),
        }
    }

    /// The simulated device for campaign device `index`, and the pace its
    /// downloads are held to.
    pub(super) fn sim_device(&self, index: u32, seed: u64, now: Instant) -> (SimDevice, Option<u64>) {
        let fleet_index = self.targets[index as usize];
        let (block, _) = self.block(fleet_index);
        let profile = block.profile.for_device(seed, u64::from(fleet_index));
        let version = self.version_at(block, now);
        (SimDevice::new(u64::from(fleet_index), profile, seed, &version, now), self.campaign.delivery_pace())
    }

    /// Campaign device `index` registered for the first time, or its
    /// companion delivered: the campaign hears it.
    pub(super) fn seen(&mut self, index: u32, now: Instant) {
        let fleet_index = self.targets[index as usize];
        let (block, i) = self.block(fleet_index);
        let name = format!("{}{i}", block.prefix);
        let version = self.version_at(block, now);
        let online = Instant::ZERO + block.online_after <= now;
        let (groups, settings) = (block.groups.clone(), block.settings.clone());
        let info = DeviceInfo {
            endpoint: &name,
            groups: &groups,
            settings: &settings,
            firmware_version: Some(&version),
            online,
        };
        let _ = self.campaign.device(now, info);
    }

    /// The operator's command `index` at `now`.
    pub(super) fn command(&mut self, index: u32, now: Instant) {
        let Some(&command) = self.commands.get(index as usize) else { return };
        let _ = match command {
            Command::Pause => self.campaign.pause(now),
            Command::Resume => self.campaign.resume(now),
            Command::SoftCancel => self.campaign.cancel(now, CancelMode::Soft),
            Command::HardCancel => self.campaign.cancel(now, CancelMode::Hard),
        };
    }

    /// Counts `bytes` delivered evenly from `start` to `end` (`start` is
    /// the simulation's current time: earlier seconds are final).
    pub(super) fn count_bytes(&mut self, start: Instant, end: Instant, bytes: u64) {
        if bytes == 0 {
            return;
        }
        let from = start.as_millis().max(self.bytes_base * 1000);
        let to = end.as_millis().max(from + 1);
        let span = (to - from) as f64;
        let (first, last) = (from / 1000, (to - 1) / 1000);
        while self.bytes_base < first {
            match self.bytes.pop_front() {
                Some(count) => self.bytes_max = self.bytes_max.max(count),
                None => {
                    self.bytes_base = first;
                    break;
                }
            }
            self.bytes_base += 1;
        }
        while self.bytes_base + (self.bytes.len() as u64) <= last {
            self.bytes.push_back(0);
        }
        for second in first..=last {
            let lo = from.max(second * 1000);
            let hi = to.min((second + 1) * 1000);
            let share = (bytes as f64 * (hi - lo) as f64 / span).ceil() as u64;
            if let Some(count) = self.bytes.get_mut((second - self.bytes_base) as usize) {
                *count += share;
            }
        }
    }

    /// The most image bytes counted in any second.
    fn max_bytes_in_1s(&self) -> u64 {
        self.bytes.iter().copied().max().unwrap_or(0).max(self.bytes_max)
    }
}

/// The most devices one campaign simulation takes (the records of a
/// campaign cost about 400 bytes each).
pub const MAX_SIM_DEVICES: usize = 50_000_000;

/// Runs a campaign over simulated devices until it completes or nothing is
/// left to happen (then it is closed: waiting devices are not started),
/// calling `progress(finished, targeted)` now and then. More than
/// [`MAX_SIM_DEVICES`] devices are refused ([`SimError::TooManyDevices`]).
///
/// ```
/// use lwm2m_fota::campaign::{Catalogue, CampaignSpec, NewFile};
/// use lwm2m_fota::model::Instant;
/// use lwm2m_fota::sim::{CampaignSimConfig, DeviceBlock, FleetProfile, run_campaign};
///
/// let mut catalogue = Catalogue::default();
/// let mut file = NewFile::firmware("fw-2", "app-2.bin", 32_768);
/// file.version = Some("2.0.0".into());
/// catalogue.add(Instant::ZERO, file).unwrap();
/// let mut spec = CampaignSpec::new("fw-2");
/// spec.quota.max_concurrent = Some(10);
/// let config = CampaignSimConfig {
///     spec, catalogue, templates: Default::default(), tree: Default::default(),
///     blocks: vec![DeviceBlock::new("d-", 50, FleetProfile::Uniform(lwm2m_fota::sim::profile::CONFORMING), "1.0.0")],
///     seed: 1, commands: Vec::new(),
/// };
/// let run = run_campaign(config, |_, _| {}).unwrap();
/// assert_eq!(run.campaign.progress().succeeded, 50);
/// assert!(run.campaign.progress().max_concurrent_seen <= 10);
/// ```
pub fn run_campaign(config: CampaignSimConfig, progress: impl FnMut(usize, usize)) -> Result<CampaignRun, SimError> {
    let CampaignSimConfig { spec, catalogue, templates, tree, blocks, seed, commands } = config;
    let total = blocks.iter().try_fold(0usize, |sum, b| sum.checked_add(b.count));
    if total.is_none_or(|n| n > MAX_SIM_DEVICES) {
        return Err(SimError::TooManyDevices);
    }
    let mut block_starts = Vec::with_capacity(blocks.len());
    let mut names = Vec::new();
    for block in &blocks {
        block_starts.push(names.len());
        names.extend((0..block.count).map(|i| format!("{}{i}", block.prefix)));
    }
    let file = catalogue.choose(Instant::ZERO, &spec.file).map_err(CampaignError::from)?.clone();
    if file.size > MAX_SIM_IMAGE {
        return Err(SimError::ImageTooLarge(file.id));
    }
    let target = file.version.clone();
    let mut targets = Vec::new();
    let mut infos = Vec::with_capacity(names.len());
    let mut offline = Vec::new();
    for (b, block) in blocks.iter().enumerate() {
        let delivered = block.companion_delivers_at == Some(Duration::ZERO);
        let version = if delivered { target.as_deref() } else { Some(block.version.as_str()) };
        for i in 0..block.count {
            let k = block_starts[b] + i;
            let name = &names[k];
            if spec.targets(name, &block.groups) {
                let index = targets.len() as u32;
                targets.push(k as u32);
                let later = |at: Duration| (at > Duration::ZERO).then_some(Instant::ZERO + at);
                offline.extend(later(block.online_after).map(|at| (at, index)));
                offline.extend(block.companion_delivers_at.and_then(later).map(|at| (at, index)));
            }
            let online = block.online_after == Duration::ZERO;
            infos.push(DeviceInfo {
                endpoint: name,
                groups: &block.groups,
                settings: &block.settings,
                firmware_version: version,
                online,
            });
        }
    }
    let base_uri = spec.base_uri.clone().unwrap_or_else(|| DEFAULT_BASE_URI.into());
    let max_concurrent = spec.quota.max_concurrent;
    let campaign = Campaign::new(Instant::ZERO, spec, &catalogue, templates, tree, infos)?;
    if campaign.devices().len() != targets.len() {
        // The campaign took a name once; the fleet's devices would no longer
        // line up with its records.
        let mut seen = std::collections::HashSet::new();
        let twice = targets.iter().map(|&k| names[k as usize].as_str()).find(|n| !seen.insert(*n));
        return Err(SimError::DuplicateEndpoint(twice.unwrap_or_default().to_string()));
    }
    drop(names);
    let mut upgrade = UpgradeConfig::new(&base_uri, &file.name, file.size);
    upgrade.target_version = target.clone();
    let fleet_config = FleetConfig {
        devices: targets.len(),
        profile: FleetProfile::Uniform(super::profile::CONFORMING),
        upgrade: Arc::new(upgrade),
        initial_version: String::new(),
        seed,
        concurrency: max_concurrent.map_or(0, |m| m as usize),
    };
    let state = CampaignState {
        campaign,
        blocks,
        block_starts,
        targets,
        target_version: target,
        running: HashMap::new(),
        timer: None,
        bytes: VecDeque::new(),
        bytes_base: 0,
        bytes_max: 0,
        mobile_fota_marked: 0,
        events: Vec::new(),
        end: Instant::ZERO,
        commands: commands.iter().map(|&(_, c)| c).collect(),
    };
    let mut fleet = Fleet::build(fleet_config, Some(Box::new(state)));
    for (at, index) in offline {
        fleet.schedule_campaign_event(at, index);
    }
    for (index, &(at, _)) in commands.iter().enumerate() {
        fleet.schedule_campaign_command(Instant::ZERO + at, index as u32);
    }
    let (report, state) = fleet.run_campaign(progress);
    let state = *state;
    Ok(CampaignRun {
        max_bytes_in_1s: state.max_bytes_in_1s(),
        sim_duration: state.end - Instant::ZERO,
        mobile_fota_marked: state.mobile_fota_marked,
        events: state.events,
        campaign: state.campaign,
        fleet: report,
    })
}
