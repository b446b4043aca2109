//! The campaign: one value that decides, for a fleet, which device's upgrade
//! starts when (B3, U5, U8, C1–C5, C7–C9, M2). Sans-I/O: the embedder tells
//! it what happened (devices seen, upgrades ended, commands, time) and acts
//! on what it asks for ([`CampaignOutput`]): start an upgrade through the
//! endpoint, cancel one, store a device's settings.

use alloc::collections::{BTreeMap, VecDeque};
use alloc::string::String;
use alloc::sync::Arc;
use alloc::vec::Vec;
use core::time::Duration;

use super::catalogue::{Catalogue, CatalogueError, CatalogueFile};
use super::settings::{self, Settings, SettingsTree, TaskTemplate, TemplateChoice};
use super::spec::{CampaignSpec, DEFAULT_BASE_URI, PhaseSpec, SpecError};
use crate::model::{Instant, Protocol};
use crate::server::{Delivery, Outcome, Strategy, UpgradeConfig};

/// A device's place in a campaign (stable for the campaign's life).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(transparent))]
pub struct CampaignDevice(u32);

impl CampaignDevice {
    /// The device at `index` in [`Campaign::devices`] (an input naming a
    /// device the campaign does not hold is refused).
    pub const fn from_index(index: u32) -> CampaignDevice {
        CampaignDevice(index)
    }

    /// Its index in [`Campaign::devices`].
    pub fn index(self) -> usize {
        self.0 as usize
    }
}

/// A device as the embedder knows it.
#[derive(Debug, Clone, Copy)]
pub struct DeviceInfo<'a> {
    /// Its endpoint name.
    pub endpoint: &'a str,
    /// Its groups, in the order its settings resolve through them.
    pub groups: &'a [String],
    /// Its own settings.
    pub settings: &'a Settings,
    /// Its firmware version (`/3/0/3`), when known.
    pub firmware_version: Option<&'a str>,
    /// Whether it is registered now (reachable for an upgrade).
    pub online: bool,
}

/// Why the campaign stopped starting upgrades until resumed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub enum PauseReason {
    /// The operator paused it.
    Command,
    /// A phase finished below its `min_success_percent` (the phase, from 0).
    PhaseGate(usize),
}

/// How a cancel treats running upgrades (C5).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CancelMode {
    /// No new starts; running upgrades finish.
    Soft,
    /// No new starts; running upgrades are cancelled (the task resets the
    /// device's /5).
    Hard,
}

/// What the embedder must do (exhaustive: each asks for an action or
/// reports a change the operator sees).
#[derive(Debug, Clone, PartialEq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub enum CampaignOutput {
    /// Start this device's upgrade with this configuration; report its end
    /// with [`Campaign::finished`].
    Start {
        /// The device.
        device: CampaignDevice,
        /// Its upgrade's configuration (shared by devices with the same one).
        config: Arc<UpgradeConfig>,
    },
    /// Cancel this device's running upgrade (hard cancel), then report its
    /// end as usual.
    Cancel {
        /// The device.
        device: CampaignDevice,
    },
    /// Store these settings on the device (mobile FOTA, M2: `mobileFota`,
    /// `mobileFotaFirmwareId`, `mobileFotaFirmwareName`).
    SetSettings {
        /// The device.
        device: CampaignDevice,
        /// The settings to set.
        settings: Settings,
    },
    /// A phase opened (from 0).
    PhaseStarted(usize),
    /// The campaign stopped starting upgrades until resumed.
    Paused(PauseReason),
    /// The abort rule fired: nothing starts any more.
    Aborted,
    /// Nothing more will start or run: every device's record is final.
    Completed,
}

/// Where a device is in the campaign.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub enum DeviceStatus {
    /// Waiting to start (its phase, the window, the quota, or to be seen).
    Pending,
    /// Its upgrade is running.
    Running,
    /// Its upgrade succeeded, or it was found at the target version.
    Succeeded,
    /// Its upgrade failed.
    Failed,
    /// The campaign ended without starting it.
    NotStarted,
}

impl DeviceStatus {
    /// `pending`, `running`, `succeeded`, `failed` or `not-started`.
    pub fn name(self) -> &'static str {
        match self {
            DeviceStatus::Pending => "pending",
            DeviceStatus::Running => "running",
            DeviceStatus::Succeeded => "succeeded",
            DeviceStatus::Failed => "failed",
            DeviceStatus::NotStarted => "not-started",
        }
    }
}

/// What an ended upgrade cost, as the embedder reports it.
#[derive(Debug, Clone, Copy)]
pub struct UpgradeReport<'a> {
    /// How it ended.
    pub outcome: &'a Outcome,
    /// Attempts the task made.
    pub attempts: u32,
    /// Messages the server sent to the device.
    pub downlinks: u32,
    /// Messages the device sent.
    pub uplinks: u32,
    /// The strategy the task used in the end (after any fallback, C6).
    pub strategy_used: Option<Strategy>,
}

/// The campaign's reason for an upgrade that found the device current.
pub const ALREADY_CURRENT: &str = "already-current";

const NO_REASON: u32 = u32::MAX;

/// One targeted device's record (C8).
#[derive(Debug, Clone, PartialEq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
struct Record {
    endpoint: String,
    plan: u32,
    phase: u8,
    status: DeviceStatus,
    online: bool,
    queued: bool,
    start: Option<Instant>,
    end: Option<Instant>,
    reason: u32,
    attempts: u32,
    downlinks: u32,
    uplinks: u32,
    strategy_used: Option<Strategy>,
}

/// A configuration devices share: the same groups and settings choose the
/// same template.
#[derive(Debug, Clone, PartialEq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
struct Plan {
    groups: Vec<String>,
    /// The device settings it was chosen with.
    own: Settings,
    config: Arc<UpgradeConfig>,
    template: TemplateChoice,
    mobile_fota: bool,
    settings: Settings,
}

/// One phase's state and counts.
#[derive(Debug, Clone, PartialEq, Default)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
struct Phase {
    /// Devices of the phase that are online and waiting, in order.
    ready: VecDeque<u32>,
    devices: u64,
    running: u64,
    succeeded: u64,
    failed: u64,
    started: Option<Instant>,
    finished: Option<Instant>,
}

/// Progress of one phase (C8).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct PhaseProgress {
    /// Its devices.
    pub devices: u64,
    /// Running now.
    pub running: u64,
    /// Succeeded (already-current ones included).
    pub succeeded: u64,
    /// Failed.
    pub failed: u64,
    /// When its first upgrade started.
    pub started: Option<Instant>,
    /// When its last upgrade ended.
    pub finished: Option<Instant>,
}

/// Progress of one group (C8).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct GroupProgress {
    /// Targeted devices in it.
    pub devices: u64,
    /// Running now.
    pub running: u64,
    /// Succeeded.
    pub succeeded: u64,
    /// Failed.
    pub failed: u64,
    /// Not started (so far, or for good once the campaign ended).
    pub waiting: u64,
}

/// The campaign's progress (B3, C8).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct CampaignProgress {
    /// Targeted devices.
    pub targeted: u64,
    /// Running now.
    pub running: u64,
    /// Succeeded.
    pub succeeded: u64,
    /// Failed, by reason.
    pub failed: BTreeMap<String, u64>,
    /// Not started, by reason (`pending` while the campaign runs).
    pub not_started: BTreeMap<String, u64>,
    /// Per phase.
    pub phases: Vec<PhaseProgress>,
    /// Per group (a device counts in each of its groups).
    pub groups: BTreeMap<String, GroupProgress>,
    /// Devices by template name (`default` for the default system task).
    pub templates: BTreeMap<String, u64>,
    /// Devices marked for mobile FOTA (M2).
    pub mobile_fota: u64,
    /// The most upgrades that ran at once.
    pub max_concurrent_seen: u64,
    /// The most starts in any 60 s.
    pub max_starts_in_60s: u64,
    /// Whether it is paused, and why.
    pub paused: Option<PauseReason>,
    /// Whether the abort rule fired.
    pub aborted: bool,
    /// Whether it was cancelled.
    pub cancelled: bool,
    /// Whether it has completed.
    pub completed: bool,
}

/// Why a [`Campaign`] cannot be created.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CampaignError {
    /// The definition is invalid.
    #[error(transparent)]
    Spec(#[from] SpecError),
    /// The file cannot be chosen (unknown, not firmware, expired).
    #[error("campaign.file: {0}")]
    File(#[from] CatalogueError),
    /// An input named a device this campaign does not hold.
    #[error("no device {0} in this campaign")]
    UnknownDevice(u32),
    /// An input went back in time.
    #[error("time went back: {now} is before {last}")]
    TimeWentBack {
        /// The input's time.
        now: Instant,
        /// The latest time seen.
        last: Instant,
    },
}

/// A campaign over a fleet.
///
/// ```
/// use std::collections::BTreeMap;
/// use lwm2m_fota::campaign::*;
/// use lwm2m_fota::model::Instant;
///
/// let mut catalogue = Catalogue::default();
/// let mut file = NewFile::firmware("fw-2", "app-2.bin", 65_536);
/// file.version = Some("2.0.0".into());
/// catalogue.add(Instant::ZERO, file).unwrap();
/// let mut spec = CampaignSpec::new("fw-2");
/// spec.quota.max_concurrent = Some(1);
/// let settings = Settings::new();
/// let devices = ["a", "b"].map(|endpoint| DeviceInfo {
///     endpoint, groups: &[], settings: &settings, firmware_version: Some("1.0.0"), online: true,
/// });
/// let mut campaign = Campaign::new(
///     Instant::ZERO, spec, &catalogue, BTreeMap::new(), SettingsTree::default(), devices,
/// ).unwrap();
/// campaign.handle_timeout(Instant::ZERO).unwrap();
/// assert_eq!(campaign.poll_output(), Some(CampaignOutput::PhaseStarted(0)));
/// // One upgrade at a time.
/// let Some(CampaignOutput::Start { device, .. }) = campaign.poll_output() else { panic!() };
/// assert_eq!(campaign.poll_output(), None);
/// let outcome = lwm2m_fota::server::Outcome::Succeeded { version: None };
/// let report = UpgradeReport { outcome: &outcome, attempts: 1, downlinks: 5, uplinks: 6, strategy_used: None };
/// campaign.finished(Instant::from_millis(9_000), device, report).unwrap();
/// assert!(matches!(campaign.poll_output(), Some(CampaignOutput::Start { .. })));
/// ```
#[derive(Debug, Clone, PartialEq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct Campaign {
    spec: CampaignSpec,
    file: CatalogueFile,
    base: UpgradeConfig,
    templates: BTreeMap<String, TaskTemplate>,
    tree: SettingsTree,
    phase_specs: Vec<PhaseSpec>,
    records: Vec<Record>,
    /// Targeted devices by endpoint (C7: never twice).
    by_name: BTreeMap<String, u32>,
    plans: Vec<Plan>,
    /// Plans by the groups and own settings that chose them (a list of
    /// pairs in JSON, whose keys are strings only).
    #[cfg_attr(feature = "serde", serde(with = "pairs"))]
    plan_by_key: BTreeMap<(Vec<String>, Settings), u32>,
    phases: Vec<Phase>,
    reasons: Vec<String>,
    /// The highest open phase.
    open_phase: usize,
    running: u64,
    /// Devices still [`DeviceStatus::Pending`].
    pending: u64,
    /// Start times in the last 60 s.
    recent_starts: VecDeque<Instant>,
    max_concurrent_seen: u64,
    max_starts_in_60s: u64,
    finished_count: u64,
    failed_count: u64,
    paused: Option<PauseReason>,
    aborted: bool,
    cancelled: bool,
    ended: bool,
    completed: bool,
    started_phase0: bool,
    now: Instant,
    wake: Option<Instant>,
    outputs: VecDeque<CampaignOutput>,
}

/// One minute, the starts-per-minute quota's span.
const MINUTE: Duration = Duration::from_secs(60);

impl Campaign {
    /// A campaign of `spec` over `devices` (the fleet at creation: those the
    /// targets select are taken in this order for the phases). The file must
    /// be a firmware file of `catalogue` whose retention has not ended;
    /// `templates` and `tree` choose each device's configuration (T1–T3).
    pub fn new<'a>(
        now: Instant,
        spec: CampaignSpec,
        catalogue: &Catalogue,
        templates: BTreeMap<String, TaskTemplate>,
        tree: SettingsTree,
        devices: impl IntoIterator<Item = DeviceInfo<'a>>,
    ) -> Result<Campaign, CampaignError> {
        spec.check()?;
        let file = catalogue.choose(now, &spec.file)?.clone();
        let base_uri = spec.base_uri.as_deref().unwrap_or(DEFAULT_BASE_URI);
        let mut base = UpgradeConfig::new(base_uri, &file.name, file.size);
        base.target_version = file.version.clone();
        // The default system task pulls over the base URI's own protocol
        // (a template may choose another, with its own base URI's scheme).
        if let Some(protocol) = base_uri.split_once("://").and_then(|(scheme, _)| Protocol::from_scheme(scheme)) {
            base.protocol = protocol;
        }
        let phase_specs = spec.phases_or_default();
        let phases = phase_specs.iter().map(|_| Phase::default()).collect();
        let mut campaign = Campaign {
            spec,
            file,
            base,
            templates,
            tree,
            phase_specs,
            records: Vec::new(),
            by_name: BTreeMap::new(),
            plans: Vec::new(),
            plan_by_key: BTreeMap::new(),
            phases,
            reasons: Vec::new(),
            open_phase: 0,
            running: 0,
            pending: 0,
            recent_starts: VecDeque::new(),
            max_concurrent_seen: 0,
            max_starts_in_60s: 0,
            finished_count: 0,
            failed_count: 0,
            paused: None,
            aborted: false,
            cancelled: false,
            ended: false,
            completed: false,
            started_phase0: false,
            now,
            wake: None,
            outputs: VecDeque::new(),
        };
        // Targeted devices first, then their phases by cumulative percent.
        let mut targeted = Vec::new();
        for device in devices {
            if campaign.targets(&device) && !campaign.by_name.contains_key(device.endpoint) {
                let index = campaign.target(device, 0);
                targeted.push((index, device.online, device.firmware_version));
            }
        }
        let total = targeted.len() as u64;
        let mut phase = 0;
        for (n, (index, online, version)) in targeted.into_iter().enumerate() {
            while phase + 1 < campaign.phase_specs.len()
                && (n as u64) * 100 >= total * u64::from(campaign.phase_specs[phase].percent)
            {
                phase += 1;
            }
            campaign.records[index as usize].phase = phase as u8;
            campaign.phases[phase].devices += 1;
            campaign.seen(index, online, version);
        }
        campaign.step();
        Ok(campaign)
    }

    /// Whether the campaign's targets select `device`.
    fn targets(&self, device: &DeviceInfo<'_>) -> bool {
        self.spec.targets(device.endpoint, device.groups)
    }

    /// Adds a record for a targeted device (its phase set by the caller) and
    /// emits its mobile FOTA settings.
    fn target(&mut self, device: DeviceInfo<'_>, phase: u8) -> u32 {
        let plan = self.plan(device.groups, device.settings);
        let index = self.records.len() as u32;
        self.records.push(Record {
            endpoint: String::from(device.endpoint),
            plan,
            phase,
            status: DeviceStatus::Pending,
            online: false,
            queued: false,
            start: None,
            end: None,
            reason: NO_REASON,
            attempts: 0,
            downlinks: 0,
            uplinks: 0,
            strategy_used: None,
        });
        self.by_name.insert(String::from(device.endpoint), index);
        self.pending += 1;
        let plan = &self.plans[plan as usize];
        if plan.mobile_fota {
            let mut marks = Settings::new();
            for key in [settings::MOBILE_FOTA, settings::MOBILE_FOTA_FIRMWARE_ID, settings::MOBILE_FOTA_FIRMWARE_NAME] {
                if let Some(value) = plan.settings.get(key) {
                    marks.insert(String::from(key), value.clone());
                }
            }
            self.outputs.push_back(CampaignOutput::SetSettings { device: CampaignDevice(index), settings: marks });
        }
        index
    }

    /// The plan of a device in `groups` with `own` settings, shared with
    /// every device of the same groups and settings.
    fn plan(&mut self, groups: &[String], own: &Settings) -> u32 {
        // Devices come in runs of alike ones: the latest plans first,
        // without building a key.
        let recent = self.plans.iter().enumerate().rev().take(4);
        if let Some((index, _)) = recent.into_iter().find(|(_, p)| p.groups == groups && p.own == *own) {
            return index as u32;
        }
        let key = (groups.to_vec(), own.clone());
        if let Some(&plan) = self.plan_by_key.get(&key) {
            return plan;
        }
        let names = settings::group_names(groups);
        let mut upgrade = settings::configure(&self.base, &self.templates, &self.tree, own, &names, &self.file);
        if upgrade.config.delivery == Delivery::Push {
            // Under a byte-rate quota the endpoint paces what it pushes; a
            // pulled image is paced by whoever serves it (delivery_pace).
            upgrade.config.push_pace = self.delivery_pace();
        }
        let config = match self.plans.iter().find(|p| *p.config == upgrade.config) {
            Some(existing) => existing.config.clone(),
            None => Arc::new(upgrade.config),
        };
        let index = self.plans.len() as u32;
        self.plans.push(Plan {
            groups: groups.to_vec(),
            own: own.clone(),
            config,
            template: upgrade.template,
            mobile_fota: upgrade.mobile_fota,
            settings: upgrade.settings,
        });
        self.plan_by_key.insert(key, index);
        index
    }

    /// A device's reachability or version changed.
    fn seen(&mut self, index: u32, online: bool, version: Option<&str>) {
        let record = &mut self.records[index as usize];
        record.online = online;
        if record.status != DeviceStatus::Pending {
            return;
        }
        if let (Some(version), Some(target)) = (version, self.file.version.as_deref()) {
            if version == target {
                // C7: found current (a companion delivered it, a re-run):
                // success without a download.
                record.status = DeviceStatus::Succeeded;
                self.pending -= 1;
                record.end = Some(self.now);
                record.reason = intern(&mut self.reasons, ALREADY_CURRENT);
                let phase = &mut self.phases[record.phase as usize];
                phase.succeeded += 1;
                phase.finished = Some(self.now);
                return;
            }
        }
        if online && !record.queued {
            record.queued = true;
            self.phases[record.phase as usize].ready.push_back(index);
        }
    }

    fn advance(&mut self, now: Instant) -> Result<(), CampaignError> {
        if now < self.now {
            return Err(CampaignError::TimeWentBack { now, last: self.now });
        }
        self.now = now;
        Ok(())
    }

    fn id(&self, device: CampaignDevice) -> Result<u32, CampaignError> {
        if device.index() < self.records.len() { Ok(device.0) } else { Err(CampaignError::UnknownDevice(device.0)) }
    }

    /// A device appeared or changed (registered, went offline, joined a
    /// group, reported its version). A device the campaign does not hold
    /// that its targets now select is included, in the last phase (C9);
    /// one it holds is never started twice (C7). Returns its place, if
    /// targeted.
    pub fn device(&mut self, now: Instant, device: DeviceInfo<'_>) -> Result<Option<CampaignDevice>, CampaignError> {
        self.advance(now)?;
        let index = match self.by_name.get(device.endpoint) {
            Some(&index) => index,
            None => {
                if !self.targets(&device) || self.ended || self.cancelled || self.completed {
                    return Ok(None);
                }
                let last = self.phases.len() - 1;
                let index = self.target(device, last as u8);
                self.phases[last].devices += 1;
                index
            }
        };
        self.seen(index, device.online, device.firmware_version);
        self.step();
        Ok(Some(CampaignDevice(index)))
    }

    /// The device's upgrade ended (after a [`CampaignOutput::Start`]).
    pub fn finished(
        &mut self,
        now: Instant,
        device: CampaignDevice,
        report: UpgradeReport<'_>,
    ) -> Result<(), CampaignError> {
        self.advance(now)?;
        let index = self.id(device)?;
        let record = &mut self.records[index as usize];
        if record.status != DeviceStatus::Running {
            return Ok(());
        }
        let success = report.outcome.is_success();
        record.status = if success { DeviceStatus::Succeeded } else { DeviceStatus::Failed };
        record.end = Some(now);
        record.attempts = report.attempts;
        record.downlinks = report.downlinks;
        record.uplinks = report.uplinks;
        record.strategy_used = report.strategy_used;
        record.reason = match report.outcome.reason() {
            Some(reason) => intern(&mut self.reasons, &reason),
            None => NO_REASON,
        };
        let phase = &mut self.phases[record.phase as usize];
        phase.running -= 1;
        phase.finished = Some(now);
        if success {
            phase.succeeded += 1;
        } else {
            phase.failed += 1;
            self.failed_count += 1;
        }
        self.running -= 1;
        self.finished_count += 1;
        if let Some(rule) = self.spec.abort {
            // Upgrades a cancel ended are not failures the rule judges.
            if !self.aborted
                && !self.cancelled
                && self.finished_count >= rule.min_finished
                && self.failed_count * 100 > u64::from(rule.max_failure_percent) * self.finished_count
            {
                self.aborted = true;
                self.outputs.push_back(CampaignOutput::Aborted);
            }
        }
        self.step();
        Ok(())
    }

    /// Stops new starts until [`resume`](Self::resume) (C5).
    pub fn pause(&mut self, now: Instant) -> Result<(), CampaignError> {
        self.advance(now)?;
        if self.paused.is_none() && !self.completed {
            self.paused = Some(PauseReason::Command);
            self.outputs.push_back(CampaignOutput::Paused(PauseReason::Command));
        }
        self.step();
        Ok(())
    }

    /// Starts upgrades again; after a phase gate held the campaign, the
    /// next phase opens (the operator accepts the phase).
    pub fn resume(&mut self, now: Instant) -> Result<(), CampaignError> {
        self.advance(now)?;
        if self.completed {
            return Ok(());
        }
        if let Some(PauseReason::PhaseGate(phase)) = self.paused {
            if self.open_phase == phase && phase + 1 < self.phases.len() {
                self.open_phase += 1;
                self.outputs.push_back(CampaignOutput::PhaseStarted(self.open_phase));
            }
        }
        self.paused = None;
        self.step();
        Ok(())
    }

    /// Cancels the campaign (C5): nothing starts any more; with
    /// [`CancelMode::Hard`] every running upgrade is cancelled too.
    pub fn cancel(&mut self, now: Instant, mode: CancelMode) -> Result<(), CampaignError> {
        self.advance(now)?;
        if self.completed {
            return Ok(());
        }
        self.cancelled = true;
        if mode == CancelMode::Hard {
            for (index, record) in self.records.iter().enumerate() {
                if record.status == DeviceStatus::Running {
                    self.outputs.push_back(CampaignOutput::Cancel { device: CampaignDevice(index as u32) });
                }
            }
        }
        self.step();
        Ok(())
    }

    /// Time passed: starts what the window and quota now allow.
    pub fn handle_timeout(&mut self, now: Instant) -> Result<(), CampaignError> {
        self.advance(now)?;
        self.step();
        Ok(())
    }

    /// When the campaign next needs [`handle_timeout`](Self::handle_timeout)
    /// without any other input (a window opening, the start-rate quota
    /// freeing, the schedule's start or end).
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.wake
    }

    /// The next thing to do.
    pub fn poll_output(&mut self) -> Option<CampaignOutput> {
        self.outputs.pop_front()
    }

    /// The pace each upgrade's image must be delivered at, when a byte-rate
    /// quota is set (bytes per second). Pushed images are paced by the
    /// endpoint: the campaign puts this pace in their configuration
    /// ([`UpgradeConfig::push_pace`]); a pulled image is paced by the server
    /// that serves it.
    pub fn delivery_pace(&self) -> Option<u64> {
        self.spec.quota.max_bytes_per_s.map(|_| self.spec.device_pace())
    }

    /// The definition.
    pub fn spec(&self) -> &CampaignSpec {
        &self.spec
    }

    /// The file being installed.
    pub fn file(&self) -> &CatalogueFile {
        &self.file
    }

    /// Whether every record is final.
    pub fn is_completed(&self) -> bool {
        self.completed
    }

    /// Upgrades running now.
    pub fn running(&self) -> u64 {
        self.running
    }

    /// The targeted devices' records, in campaign order.
    pub fn devices(&self) -> impl ExactSizeIterator<Item = DeviceRecord<'_>> {
        (0..self.records.len()).map(|i| DeviceRecord { campaign: self, index: i })
    }

    /// One device's record.
    pub fn record(&self, device: CampaignDevice) -> Option<DeviceRecord<'_>> {
        (device.index() < self.records.len()).then_some(DeviceRecord { campaign: self, index: device.index() })
    }

    /// The device an endpoint name has in the campaign.
    pub fn find(&self, endpoint: &str) -> Option<CampaignDevice> {
        self.by_name.get(endpoint).map(|&i| CampaignDevice(i))
    }

    /// Ends the campaign where it stands, as an operator closing it: nothing
    /// starts any more and every device still waiting is recorded as not
    /// started, with the reason it waited (`offline`, `paused`, `aborted`,
    /// `cancelled`, `phase-gate`, or `schedule-ended` for one the window or
    /// the quota held back). Running upgrades still report their end.
    pub fn close(&mut self, now: Instant) -> Result<(), CampaignError> {
        self.advance(now)?;
        self.ended = true;
        self.step();
        Ok(())
    }

    /// Progress per phase, group, template and reason (C8).
    pub fn progress(&self) -> CampaignProgress {
        let mut progress = CampaignProgress {
            targeted: self.records.len() as u64,
            running: self.running,
            max_concurrent_seen: self.max_concurrent_seen,
            max_starts_in_60s: self.max_starts_in_60s,
            paused: self.paused,
            aborted: self.aborted,
            cancelled: self.cancelled,
            completed: self.completed,
            ..CampaignProgress::default()
        };
        for phase in &self.phases {
            progress.phases.push(PhaseProgress {
                devices: phase.devices,
                running: phase.running,
                succeeded: phase.succeeded,
                failed: phase.failed,
                started: phase.started,
                finished: phase.finished,
            });
        }
        for record in self.devices() {
            let status = record.status();
            let reason = record.reason().unwrap_or("pending");
            match status {
                DeviceStatus::Succeeded => progress.succeeded += 1,
                DeviceStatus::Failed => *progress.failed.entry(String::from(reason)).or_insert(0) += 1,
                DeviceStatus::NotStarted | DeviceStatus::Pending => {
                    *progress.not_started.entry(String::from(reason)).or_insert(0) += 1
                }
                DeviceStatus::Running => {}
            }
            let plan = &self.plans[self.records[record.index].plan as usize];
            *progress.templates.entry(String::from(plan.template.name())).or_insert(0) += 1;
            progress.mobile_fota += u64::from(plan.mobile_fota);
            for group in &plan.groups {
                let entry = progress.groups.entry(group.clone()).or_default();
                entry.devices += 1;
                match status {
                    DeviceStatus::Pending | DeviceStatus::NotStarted => entry.waiting += 1,
                    DeviceStatus::Running => entry.running += 1,
                    DeviceStatus::Succeeded => entry.succeeded += 1,
                    DeviceStatus::Failed => entry.failed += 1,
                }
            }
        }
        progress
    }

    /// Whether upgrades may start at `self.now` as far as the schedule and
    /// commands go; else when they might (None: not before another input).
    fn gate(&self) -> Result<(), Option<Instant>> {
        if self.completed || self.ended || self.cancelled || self.aborted || self.paused.is_some() {
            return Err(None);
        }
        let start = self.spec.start();
        if self.now < start {
            return Err(Some(start));
        }
        if let Some(window) = self.spec.schedule.window {
            if !window.is_open(self.now) {
                return Err(Some(window.next_open(self.now)));
            }
        }
        Ok(())
    }

    /// The most upgrades the quota lets run at once.
    fn concurrency(&self) -> u64 {
        let by_count = self.spec.quota.max_concurrent.map_or(u64::MAX, u64::from);
        let by_bytes = self.spec.quota.max_bytes_per_s.map_or(u64::MAX, |max| max / self.spec.device_pace());
        by_count.min(by_bytes)
    }

    /// Moves the campaign as far as it can go at `self.now`: schedule end,
    /// phase gates, starts, completion; then sets the next wake-up.
    fn step(&mut self) {
        let now = self.now;
        self.wake = None;
        if self.completed {
            return;
        }
        if let Some(end) = self.spec.end() {
            if now >= end {
                self.ended = true;
            } else {
                self.wake = Some(end);
            }
        }
        while let Some(&at) = self.recent_starts.front() {
            if at + MINUTE > now {
                break;
            }
            self.recent_starts.pop_front();
        }
        self.gates();
        match self.gate() {
            Ok(()) => self.start_ready(),
            Err(at) => self.wake_at(at),
        }
        if self.running == 0 && self.nothing_can_start() {
            self.finalize();
        }
    }

    fn wake_at(&mut self, at: Option<Instant>) {
        if let Some(at) = at {
            self.wake = Some(self.wake.map_or(at, |w| w.min(at)));
        }
    }

    /// Opens the next phase while the open one is finished and passed its gate.
    fn gates(&mut self) {
        if !self.started_phase0 && self.now >= self.spec.start() {
            self.started_phase0 = true;
            self.outputs.push_back(CampaignOutput::PhaseStarted(0));
        }
        // Phases open only while upgrades may start at all.
        if !self.started_phase0 || self.cancelled || self.aborted || self.ended {
            return;
        }
        while self.open_phase + 1 < self.phases.len() && self.paused.is_none() {
            let k = self.open_phase;
            let ready = self.has_ready(k);
            let phase = &self.phases[k];
            let finished = phase.succeeded + phase.failed;
            // Finished: nothing runs and nothing that is online waits. A
            // phase none of whose devices was seen yet is not decided.
            if phase.running > 0 || ready || (finished == 0 && phase.devices > 0) {
                return;
            }
            let required = self.phase_specs[k].min_success_percent.map_or(0, u64::from);
            if phase.succeeded * 100 < required * finished {
                self.paused = Some(PauseReason::PhaseGate(k));
                self.outputs.push_back(CampaignOutput::Paused(PauseReason::PhaseGate(k)));
                return;
            }
            self.open_phase += 1;
            self.outputs.push_back(CampaignOutput::PhaseStarted(self.open_phase));
        }
    }

    /// Whether phase `k` has a device online and waiting.
    fn has_ready(&mut self, k: usize) -> bool {
        let records = &mut self.records;
        let ready = &mut self.phases[k].ready;
        while let Some(&front) = ready.front() {
            let record = &mut records[front as usize];
            if record.status == DeviceStatus::Pending && record.online {
                return true;
            }
            record.queued = false;
            ready.pop_front();
        }
        false
    }

    /// Starts waiting devices of the open phases, lowest phase first, while
    /// the quota allows.
    fn start_ready(&mut self) {
        let limit = self.concurrency();
        let per_minute = self.spec.quota.max_starts_per_minute.map(u64::from);
        for k in 0..=self.open_phase {
            while self.has_ready(k) {
                if self.running >= limit {
                    return;
                }
                if let Some(max) = per_minute {
                    if self.recent_starts.len() as u64 >= max {
                        let free = self.recent_starts.front().map(|&at| at + MINUTE);
                        self.wake_at(free);
                        return;
                    }
                }
                let Some(index) = self.phases[k].ready.pop_front() else { break };
                self.start(index);
            }
        }
    }

    fn start(&mut self, index: u32) {
        let now = self.now;
        let record = &mut self.records[index as usize];
        record.queued = false;
        record.status = DeviceStatus::Running;
        self.pending -= 1;
        record.start = Some(now);
        let phase = &mut self.phases[record.phase as usize];
        phase.running += 1;
        phase.started.get_or_insert(now);
        self.running += 1;
        self.max_concurrent_seen = self.max_concurrent_seen.max(self.running);
        self.recent_starts.push_back(now);
        self.max_starts_in_60s = self.max_starts_in_60s.max(self.recent_starts.len() as u64);
        let config = self.plans[record.plan as usize].config.clone();
        self.outputs.push_back(CampaignOutput::Start { device: CampaignDevice(index), config });
    }

    /// Whether no waiting device can ever start without another input that
    /// changes the campaign's state: everything finished, or starts stopped
    /// for good (ended, cancelled, aborted).
    fn nothing_can_start(&self) -> bool {
        self.ended || self.cancelled || self.aborted || self.pending == 0
    }

    /// Makes every record final: waiting devices are not started, with why.
    fn finalize(&mut self) {
        let reason = if self.cancelled {
            "cancelled"
        } else if self.aborted {
            "aborted"
        } else if self.paused.is_some() {
            "paused"
        } else {
            "schedule-ended"
        };
        let reasons = [
            intern(&mut self.reasons, reason),
            intern(&mut self.reasons, "offline"),
            intern(&mut self.reasons, "phase-gate"),
        ];
        for record in &mut self.records {
            if record.status == DeviceStatus::Pending {
                record.status = DeviceStatus::NotStarted;
                self.pending -= 1;
                record.reason = if !record.online {
                    reasons[1]
                } else if usize::from(record.phase) > self.open_phase && reason == "schedule-ended" {
                    reasons[2]
                } else {
                    reasons[0]
                };
                record.queued = false;
            }
        }
        for phase in &mut self.phases {
            phase.ready.clear();
        }
        self.completed = true;
        self.wake = None;
        self.outputs.push_back(CampaignOutput::Completed);
    }
}

/// A map with structured keys, serialized as a list of pairs.
#[cfg(feature = "serde")]
mod pairs {
    use alloc::collections::BTreeMap;
    use alloc::vec::Vec;
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    pub fn serialize<K: Serialize, V: Serialize, S: Serializer>(
        map: &BTreeMap<K, V>,
        serializer: S,
    ) -> Result<S::Ok, S::Error> {
        serializer.collect_seq(map.iter())
    }

    pub fn deserialize<'de, K: Deserialize<'de> + Ord, V: Deserialize<'de>, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<BTreeMap<K, V>, D::Error> {
        Ok(Vec::<(K, V)>::deserialize(deserializer)?.into_iter().collect())
    }
}

fn intern(reasons: &mut Vec<String>, reason: &str) -> u32 {
    match reasons.iter().position(|r| r == reason) {
        Some(i) => i as u32,
        None => {
            reasons.push(String::from(reason));
            (reasons.len() - 1) as u32
        }
    }
}

/// One targeted device's record, for progress and export (C8).
#[derive(Debug, Clone, Copy)]
pub struct DeviceRecord<'c> {
    campaign: &'c Campaign,
    index: usize,
}

impl<'c> DeviceRecord<'c> {
    fn record(&self) -> &'c Record {
        &self.campaign.records[self.index]
    }

    fn plan(&self) -> &'c Plan {
        &self.campaign.plans[self.record().plan as usize]
    }

    /// Its place in the campaign.
    pub fn device(&self) -> CampaignDevice {
        CampaignDevice(self.index as u32)
    }

    /// Its endpoint name.
    pub fn endpoint(&self) -> &'c str {
        &self.record().endpoint
    }

    /// Its groups.
    pub fn groups(&self) -> &'c [String] {
        &self.plan().groups
    }

    /// Which template its settings chose.
    pub fn template(&self) -> &'c TemplateChoice {
        &self.plan().template
    }

    /// Its upgrade's configuration.
    pub fn config(&self) -> &'c UpgradeConfig {
        &self.plan().config
    }

    /// The strategy used in the end (after any fallback); the configured one
    /// until the upgrade reported it.
    pub fn strategy_used(&self) -> Strategy {
        self.record().strategy_used.unwrap_or(self.plan().config.strategy)
    }

    /// Its phase (from 0).
    pub fn phase(&self) -> usize {
        usize::from(self.record().phase)
    }

    /// Where it is.
    pub fn status(&self) -> DeviceStatus {
        self.record().status
    }

    /// When its upgrade started.
    pub fn start(&self) -> Option<Instant> {
        self.record().start
    }

    /// When its upgrade ended (or it was found current).
    pub fn end(&self) -> Option<Instant> {
        self.record().end
    }

    /// Why it failed or was not started (`already-current` for a success
    /// without a download).
    pub fn reason(&self) -> Option<&'c str> {
        let reason = self.record().reason;
        (reason != NO_REASON).then(|| self.campaign.reasons[reason as usize].as_str())
    }

    /// Attempts its task made.
    pub fn attempts(&self) -> u32 {
        self.record().attempts
    }

    /// Messages sent to it.
    pub fn downlinks(&self) -> u32 {
        self.record().downlinks
    }

    /// Messages it sent.
    pub fn uplinks(&self) -> u32 {
        self.record().uplinks
    }

    /// Its resolved settings, the mobile FOTA outputs included.
    pub fn settings(&self) -> &'c Settings {
        &self.plan().settings
    }

    /// Whether it was marked for mobile FOTA.
    pub fn mobile_fota(&self) -> bool {
        self.plan().mobile_fota
    }

    /// Whether it is online, as last reported.
    pub fn online(&self) -> bool {
        self.record().online
    }
}
