//! Campaigns over fleets, the operator's side: the firmware catalogue an
//! upgrade's image is chosen from (features.md F1–F3), the settings and task
//! templates that choose each device's upgrade configuration (T1–T3, U9, M1,
//! M2), and the [`Campaign`] that decides which device's upgrade starts when
//! (schedule and window, quota, phases, abort, commands, progress: U5, U8,
//! B3, C1–C5, C7–C9). Sans-I/O and `alloc` only, like the server layer it
//! configures: the embedder starts each upgrade through its endpoint when the
//! campaign says [`CampaignOutput::Start`] and reports its end with
//! [`Campaign::finished`]; `sim::run_campaign` does so over simulated devices.
//!
//! ```
//! use std::collections::BTreeMap;
//! use lwm2m_fota::campaign::{self, Catalogue, NewFile, SettingValue, SettingsTree, TaskTemplate, TemplateChoice};
//! use lwm2m_fota::model::Instant;
//! use lwm2m_fota::server::{Strategy, UpgradeConfig};
//!
//! let mut catalogue = Catalogue::default();
//! catalogue.add(Instant::ZERO, NewFile::firmware("fw-2", "app-2.0.0.bin", 262_144)).unwrap();
//! let file = catalogue.choose(Instant::ZERO, "fw-2").unwrap();
//!
//! let mut templates = BTreeMap::new();
//! templates.insert("fast".to_string(), TaskTemplate { strategy: Some(Strategy::ObserveInstance), ..TaskTemplate::default() });
//! let mut tree = SettingsTree::default();
//! tree.default.insert(campaign::TEMPLATE_NAME.to_string(), SettingValue::Text("fast".into()));
//!
//! let base = UpgradeConfig::new("coap://fw.example.net/fw/", &file.name, file.size);
//! let upgrade = campaign::configure(&base, &templates, &tree, &Default::default(), &[], file);
//! assert_eq!(upgrade.template, TemplateChoice::Named("fast".into()));
//! assert_eq!(upgrade.config.strategy, Strategy::ObserveInstance);
//! ```

mod catalogue;
mod rollout;
mod settings;
mod spec;

pub use catalogue::{Catalogue, CatalogueError, CatalogueFile, Category, NewFile, Retention};
pub use rollout::{
    ALREADY_CURRENT, Campaign, CampaignDevice, CampaignError, CampaignOutput, CampaignProgress, CancelMode, DeviceInfo,
    DeviceRecord, DeviceStatus, GroupProgress, PauseReason, PhaseProgress, UpgradeReport,
};
pub use settings::{
    DeviceUpgrade, MOBILE_FOTA, MOBILE_FOTA_ENABLED, MOBILE_FOTA_FIRMWARE_ID, MOBILE_FOTA_FIRMWARE_NAME, SettingSource,
    SettingValue, Settings, SettingsTree, TEMPLATE_NAME, TaskTemplate, TemplateChoice, TemplateError, USE_OBSERVE,
    configure, group_names, protocol_from_name, protocol_name,
};
pub use spec::{
    AbortRule, CampaignSpec, DEFAULT_BASE_URI, DEFAULT_DEVICE_PACE, PhaseSpec, Quota, Schedule, SpecError, Window,
};
