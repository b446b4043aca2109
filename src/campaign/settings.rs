//! Settings on devices, groups and a default, resolved device first, then
//! its groups in order, then the default (features.md T3), and the task
//! templates a setting names (T1, with the default system task when it names
//! none, T2). The settings the library reads: `firmwareUpdateTaskTemplateName`
//! (T1), `firmwareUpdateUseObserve` (U9), `mobileFotaEnabled` (M1); the ones
//! it writes when it schedules a mobile FOTA device (M2): `mobileFota`,
//! `mobileFotaFirmwareId`, `mobileFotaFirmwareName`.

use alloc::collections::BTreeMap;
use alloc::string::String;
use alloc::vec::Vec;
use core::time::Duration;

use super::CatalogueFile;
use crate::model::Protocol;
use crate::server::{Delivery, Strategy, UpgradeConfig};

/// `firmwareUpdateTaskTemplateName`: the task template an upgrade uses (T1).
pub const TEMPLATE_NAME: &str = "firmwareUpdateTaskTemplateName";
/// `firmwareUpdateUseObserve`: observe State and Update Result under S1 (U9).
pub const USE_OBSERVE: &str = "firmwareUpdateUseObserve";
/// `mobileFotaEnabled`: the device can take its image from a companion (M1).
pub const MOBILE_FOTA_ENABLED: &str = "mobileFotaEnabled";
/// `mobileFota`: `available` once an upgrade is scheduled for a mobile FOTA device (M2).
pub const MOBILE_FOTA: &str = "mobileFota";
/// `mobileFotaFirmwareId`: the scheduled file's id (M2).
pub const MOBILE_FOTA_FIRMWARE_ID: &str = "mobileFotaFirmwareId";
/// `mobileFotaFirmwareName`: the scheduled file's name (M2).
pub const MOBILE_FOTA_FIRMWARE_NAME: &str = "mobileFotaFirmwareName";

/// One setting's value.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(untagged))]
pub enum SettingValue {
    /// `true` or `false`.
    Bool(bool),
    /// A whole number.
    Integer(i64),
    /// Text.
    Text(String),
}

/// Settings by name (on a device, a group, or the default).
pub type Settings = BTreeMap<String, SettingValue>;

/// Where a resolved setting came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SettingSource {
    /// The device's own settings.
    Device,
    /// The group of this name.
    Group(String),
    /// The default settings.
    Default,
}

/// The settings of every level: the default and each group's (a device's
/// own are passed to [`resolve`](Self::resolve)).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(deny_unknown_fields))]
pub struct SettingsTree {
    /// The default settings.
    #[cfg_attr(feature = "serde", serde(default))]
    pub default: Settings,
    /// Each group's settings.
    #[cfg_attr(feature = "serde", serde(default))]
    pub groups: BTreeMap<String, Settings>,
}

impl SettingsTree {
    /// The value of setting `name` for a device with settings `device` in
    /// `groups` (in their order), and where it came from (T3).
    pub fn lookup<'a>(
        &'a self,
        device: &'a Settings,
        groups: &[&str],
        name: &str,
    ) -> Option<(&'a SettingValue, SettingSource)> {
        if let Some(value) = device.get(name) {
            return Some((value, SettingSource::Device));
        }
        for group in groups {
            if let Some(value) = self.groups.get(*group).and_then(|s| s.get(name)) {
                return Some((value, SettingSource::Group(String::from(*group))));
            }
        }
        self.default.get(name).map(|value| (value, SettingSource::Default))
    }

    /// Every setting of the device, resolved: the default's, overridden by
    /// its groups' from the last to the first, overridden by its own.
    pub fn resolve(&self, device: &Settings, groups: &[&str]) -> Settings {
        let mut resolved = self.default.clone();
        for group in groups.iter().rev() {
            if let Some(settings) = self.groups.get(*group) {
                resolved.extend(settings.iter().map(|(k, v)| (k.clone(), v.clone())));
            }
        }
        resolved.extend(device.iter().map(|(k, v)| (k.clone(), v.clone())));
        resolved
    }
}

/// A setting read as a flag: `true`, or the text `"true"` as settings
/// stores often keep it.
fn flag(settings: &Settings, name: &str) -> Option<bool> {
    match settings.get(name)? {
        SettingValue::Bool(b) => Some(*b),
        SettingValue::Text(t) if t == "true" => Some(true),
        SettingValue::Text(t) if t == "false" => Some(false),
        _ => None,
    }
}

/// A partial upgrade configuration (T1): what it gives replaces the
/// default system task's value, what it leaves out keeps it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(try_from = "TemplateSpec", into = "TemplateSpec"))]
pub struct TaskTemplate {
    /// S1–S5.
    pub strategy: Option<Strategy>,
    /// U2.
    pub delivery: Option<Delivery>,
    /// U3.
    pub protocol: Option<Protocol>,
    /// U1.
    pub timeout: Option<Duration>,
    /// U6.
    pub use_cached_data_model: Option<bool>,
    /// U7.
    pub resume_after_downlink_failure: Option<bool>,
    /// U12.
    pub execute_immediately: Option<bool>,
    /// U10.
    pub check_delivery_and_protocol: Option<bool>,
    /// U11.
    pub extend_lifetime: Option<bool>,
    /// U9 (a device's `firmwareUpdateUseObserve` setting still wins).
    pub use_observe: Option<bool>,
    /// B8: attempts in all.
    pub max_attempts: Option<u32>,
    /// C6, the adaptive strategy ([`UpgradeConfig::fallback`]): JSON
    /// `fallback`. Unlike the other fields, a template that leaves it out
    /// turns it on (templates fall back by default); `Some(false)` keeps the
    /// reference's behaviour of failing the device.
    pub fallback: Option<bool>,
}

/// The protocol names templates use.
const PROTOCOLS: [(&str, Protocol); 6] = [
    ("coap", Protocol::Coap),
    ("coaps", Protocol::Coaps),
    ("http", Protocol::Http),
    ("https", Protocol::Https),
    ("coap+tcp", Protocol::CoapTcp),
    ("coaps+tcp", Protocol::CoapTls),
];

/// The protocol of a template's `protocol` name.
pub fn protocol_from_name(name: &str) -> Option<Protocol> {
    PROTOCOLS.iter().find(|(n, _)| *n == name).map(|(_, p)| *p)
}

/// The name of `protocol` in a template.
pub fn protocol_name(protocol: Protocol) -> &'static str {
    PROTOCOLS.iter().find(|(_, p)| *p == protocol).map_or("coap", |(n, _)| n)
}

/// A template field that is not valid; names the field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("template field {field}: {problem}")]
pub struct TemplateError {
    /// The field (`strategy`, `timeout_s`, …).
    pub field: &'static str,
    /// What is wrong with it.
    pub problem: String,
}

/// [`TaskTemplate`] as JSON writes it: names for the enums, seconds for
/// the timeout; an unknown field is an error naming it.
#[cfg(feature = "serde")]
#[derive(serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct TemplateSpec {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    strategy: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    delivery: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    protocol: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    timeout_s: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    use_cached_data_model: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    resume_after_downlink_failure: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    execute_immediately: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    check_delivery_and_protocol: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    extend_lifetime: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    use_observe: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    max_attempts: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    fallback: Option<bool>,
}

#[cfg(feature = "serde")]
impl TryFrom<TemplateSpec> for TaskTemplate {
    type Error = TemplateError;

    fn try_from(spec: TemplateSpec) -> Result<TaskTemplate, TemplateError> {
        fn bad(field: &'static str, value: &str, expected: &str) -> TemplateError {
            TemplateError { field, problem: alloc::format!("{value:?} is not one of {expected}") }
        }
        let strategy = match spec.strategy.as_deref() {
            None => None,
            Some(name) => Some(Strategy::from_name(name).ok_or_else(|| {
                bad("strategy", name, "read, observe-resources, observe-instance, send, observe-only")
            })?),
        };
        let delivery = match spec.delivery.as_deref() {
            None => None,
            Some(name) => Some(Delivery::from_name(name).ok_or_else(|| bad("delivery", name, "pull, push, auto"))?),
        };
        let protocol = match spec.protocol.as_deref() {
            None => None,
            Some(name) => Some(
                protocol_from_name(name)
                    .ok_or_else(|| bad("protocol", name, "coap, coaps, http, https, coap+tcp, coaps+tcp"))?,
            ),
        };
        if spec.timeout_s == Some(0) {
            return Err(TemplateError { field: "timeout_s", problem: String::from("must be at least 1 s") });
        }
        if spec.max_attempts == Some(0) {
            return Err(TemplateError { field: "max_attempts", problem: String::from("must be at least 1") });
        }
        Ok(TaskTemplate {
            strategy,
            delivery,
            protocol,
            timeout: spec.timeout_s.map(Duration::from_secs),
            use_cached_data_model: spec.use_cached_data_model,
            resume_after_downlink_failure: spec.resume_after_downlink_failure,
            execute_immediately: spec.execute_immediately,
            check_delivery_and_protocol: spec.check_delivery_and_protocol,
            extend_lifetime: spec.extend_lifetime,
            use_observe: spec.use_observe,
            max_attempts: spec.max_attempts,
            fallback: spec.fallback,
        })
    }
}

#[cfg(feature = "serde")]
impl From<TaskTemplate> for TemplateSpec {
    fn from(t: TaskTemplate) -> TemplateSpec {
        TemplateSpec {
            strategy: t.strategy.map(|s| String::from(s.name())),
            delivery: t.delivery.map(|d| String::from(d.name())),
            protocol: t.protocol.map(|p| String::from(protocol_name(p))),
            timeout_s: t.timeout.map(|d| d.as_secs()),
            use_cached_data_model: t.use_cached_data_model,
            resume_after_downlink_failure: t.resume_after_downlink_failure,
            execute_immediately: t.execute_immediately,
            check_delivery_and_protocol: t.check_delivery_and_protocol,
            extend_lifetime: t.extend_lifetime,
            use_observe: t.use_observe,
            max_attempts: t.max_attempts,
            fallback: t.fallback,
        }
    }
}

impl TaskTemplate {
    /// Writes what the template gives over `config`, and turns the fallback
    /// (C6) on unless the template turns it off.
    pub fn apply(&self, config: &mut UpgradeConfig) {
        config.fallback = self.fallback.unwrap_or(true);
        if let Some(v) = self.strategy {
            config.strategy = v;
        }
        if let Some(v) = self.delivery {
            config.delivery = v;
        }
        if let Some(v) = self.protocol {
            config.protocol = v;
        }
        if let Some(v) = self.timeout {
            config.timeout = v;
        }
        let flags = [
            (self.use_cached_data_model, &mut config.use_cached_data_model),
            (self.resume_after_downlink_failure, &mut config.resume_after_downlink_failure),
            (self.execute_immediately, &mut config.execute_immediately),
            (self.check_delivery_and_protocol, &mut config.check_delivery_and_protocol),
            (self.extend_lifetime, &mut config.extend_lifetime),
            (self.use_observe, &mut config.use_observe),
        ];
        for (given, field) in flags {
            if let Some(v) = given {
                *field = v;
            }
        }
        if let Some(v) = self.max_attempts {
            config.retry.max_attempts = v;
        }
    }
}

/// Which template a device's upgrade uses, and why (T1, T2: the fallback to
/// the default system task is reported, never silent).
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[non_exhaustive]
pub enum TemplateChoice {
    /// The template its setting names.
    Named(String),
    /// The default system task: the setting is absent.
    DefaultNoSetting,
    /// The default system task: the setting names no template (or is not text).
    DefaultUnknown(String),
}

impl TemplateChoice {
    /// The template's name, or `default` for the default system task.
    pub fn name(&self) -> &str {
        match self {
            TemplateChoice::Named(name) => name,
            _ => "default",
        }
    }
}

/// One device's upgrade configuration, as its settings choose it.
#[derive(Debug, Clone, PartialEq)]
pub struct DeviceUpgrade {
    /// The configuration: the default system task (`base`), the template
    /// over it, then the device's `firmwareUpdateUseObserve`.
    pub config: UpgradeConfig,
    /// Which template, and why.
    pub template: TemplateChoice,
    /// True when `mobileFotaEnabled` resolves true (M1).
    pub mobile_fota: bool,
    /// The device's settings resolved, with the mobile FOTA outputs (M2) when
    /// `mobile_fota`.
    pub settings: Settings,
}

/// Chooses the upgrade of a device with settings `device` in `groups` to
/// `file`: `base` is the default system task (the library's defaults with
/// the campaign's base URI and image), `templates` the named templates.
pub fn configure(
    base: &UpgradeConfig,
    templates: &BTreeMap<String, TaskTemplate>,
    tree: &SettingsTree,
    device: &Settings,
    groups: &[&str],
    file: &CatalogueFile,
) -> DeviceUpgrade {
    let mut settings = tree.resolve(device, groups);
    let mut config = base.clone();
    let template = match settings.get(TEMPLATE_NAME) {
        None => TemplateChoice::DefaultNoSetting,
        Some(SettingValue::Text(name)) => match templates.get(name) {
            Some(template) => {
                template.apply(&mut config);
                TemplateChoice::Named(name.clone())
            }
            None => TemplateChoice::DefaultUnknown(name.clone()),
        },
        Some(other) => TemplateChoice::DefaultUnknown(alloc::format!("{other:?}")),
    };
    if let Some(observe) = flag(&settings, USE_OBSERVE) {
        config.use_observe = observe;
    }
    let mobile_fota = flag(&settings, MOBILE_FOTA_ENABLED).unwrap_or(false);
    if mobile_fota {
        settings.insert(String::from(MOBILE_FOTA), SettingValue::Text(String::from("available")));
        settings.insert(String::from(MOBILE_FOTA_FIRMWARE_ID), SettingValue::Text(file.id.clone()));
        settings.insert(String::from(MOBILE_FOTA_FIRMWARE_NAME), SettingValue::Text(file.name.clone()));
    }
    DeviceUpgrade { config, template, mobile_fota, settings }
}

/// The names of the groups a device is in, as `&str`s for [`configure`].
pub fn group_names(groups: &[String]) -> Vec<&str> {
    groups.iter().map(String::as_str).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::campaign::{Catalogue, NewFile};
    use crate::model::Instant;

    fn text(v: &str) -> SettingValue {
        SettingValue::Text(String::from(v))
    }

    fn settings(pairs: &[(&str, SettingValue)]) -> Settings {
        pairs.iter().map(|(k, v)| (String::from(*k), v.clone())).collect()
    }

    fn tree() -> SettingsTree {
        let mut groups = BTreeMap::new();
        groups
            .insert(String::from("north"), settings(&[(USE_OBSERVE, SettingValue::Bool(true)), ("x", text("north"))]));
        groups.insert(
            String::from("field"),
            settings(&[(MOBILE_FOTA_ENABLED, SettingValue::Bool(true)), ("x", text("field"))]),
        );
        SettingsTree { default: settings(&[(TEMPLATE_NAME, text("fast")), ("x", text("default"))]), groups }
    }

    fn file() -> CatalogueFile {
        let mut catalogue = Catalogue::default();
        catalogue.add(Instant::ZERO, NewFile::firmware("fw-2", "app-2.0.0.bin", 100)).unwrap().clone()
    }

    #[test]
    fn device_then_groups_in_order_then_default() {
        let tree = tree();
        let none = Settings::new();
        let own = settings(&[("x", text("device"))]);
        let source = |device: &Settings, groups: &[&str]| tree.lookup(device, groups, "x").map(|(v, s)| (v.clone(), s));
        assert_eq!(source(&own, &["north", "field"]), Some((text("device"), SettingSource::Device)));
        assert_eq!(source(&none, &["north", "field"]), Some((text("north"), SettingSource::Group("north".into()))));
        assert_eq!(source(&none, &["field", "north"]), Some((text("field"), SettingSource::Group("field".into()))));
        assert_eq!(source(&none, &["unknown-group"]), Some((text("default"), SettingSource::Default)));
        assert_eq!(tree.lookup(&none, &[], "absent"), None);
        let resolved = tree.resolve(&none, &["field", "north"]);
        assert_eq!(resolved["x"], text("field"));
        assert_eq!(resolved[USE_OBSERVE], SettingValue::Bool(true));
        assert_eq!(resolved[TEMPLATE_NAME], text("fast"));
        assert_eq!(tree.resolve(&own, &["north"])["x"], text("device"));
    }

    #[test]
    fn a_named_template_applies_and_a_missing_one_falls_back_reported() {
        let mut templates = BTreeMap::new();
        let fast = TaskTemplate {
            strategy: Some(Strategy::ObserveInstance),
            delivery: Some(Delivery::Push),
            timeout: Some(Duration::from_secs(1200)),
            execute_immediately: Some(false),
            max_attempts: Some(3),
            ..TaskTemplate::default()
        };
        templates.insert(String::from("fast"), fast);
        let base = UpgradeConfig::new("coap://fw/", "app.bin", 100);
        let tree = tree();
        let named = configure(&base, &templates, &tree, &Settings::new(), &[], &file());
        assert_eq!(named.template, TemplateChoice::Named("fast".into()));
        assert_eq!((named.config.strategy, named.config.delivery), (Strategy::ObserveInstance, Delivery::Push));
        assert_eq!((named.config.timeout, named.config.execute_immediately), (Duration::from_secs(1200), false));
        assert_eq!(named.config.retry.max_attempts, 3);
        // What the template leaves out keeps the default system task's value,
        // but the fallback (C6), on in templates unless they turn it off.
        assert_eq!(named.config.extend_lifetime, base.extend_lifetime);
        assert!(!base.fallback && named.config.fallback);
        let strict = TaskTemplate { fallback: Some(false), ..TaskTemplate::default() };
        templates.insert(String::from("strict"), strict);
        let strict = settings(&[(TEMPLATE_NAME, text("strict"))]);
        assert!(!configure(&base, &templates, &tree, &strict, &[], &file()).config.fallback);
        let unknown = settings(&[(TEMPLATE_NAME, text("slow"))]);
        let fallback = configure(&base, &templates, &tree, &unknown, &[], &file());
        assert_eq!(fallback.template, TemplateChoice::DefaultUnknown("slow".into()));
        assert_eq!(fallback.config, base);
        assert_eq!(fallback.template.name(), "default");
        let bare = SettingsTree::default();
        let absent = configure(&base, &templates, &bare, &Settings::new(), &[], &file());
        assert_eq!(absent.template, TemplateChoice::DefaultNoSetting);
        let number = settings(&[(TEMPLATE_NAME, SettingValue::Integer(3))]);
        assert!(matches!(
            configure(&base, &templates, &bare, &number, &[], &file()).template,
            TemplateChoice::DefaultUnknown(_)
        ));
    }

    #[test]
    fn use_observe_and_mobile_fota_come_from_settings() {
        let base = UpgradeConfig::new("coap://fw/", "app.bin", 100);
        let templates = BTreeMap::new();
        let tree = tree();
        let north = configure(&base, &templates, &tree, &Settings::new(), &["north"], &file());
        assert!(north.config.use_observe && !north.mobile_fota);
        assert!(!north.settings.contains_key(MOBILE_FOTA));
        // The device's own setting wins over its group's.
        let off = settings(&[(USE_OBSERVE, text("false"))]);
        assert!(!configure(&base, &templates, &tree, &off, &["north"], &file()).config.use_observe);
        let field = configure(&base, &templates, &tree, &Settings::new(), &["field"], &file());
        assert!(field.mobile_fota);
        assert_eq!(field.settings[MOBILE_FOTA], text("available"));
        assert_eq!(field.settings[MOBILE_FOTA_FIRMWARE_ID], text("fw-2"));
        assert_eq!(field.settings[MOBILE_FOTA_FIRMWARE_NAME], text("app-2.0.0.bin"));
        let disabled = settings(&[(MOBILE_FOTA_ENABLED, SettingValue::Bool(false))]);
        assert!(!configure(&base, &templates, &tree, &disabled, &["field"], &file()).mobile_fota);
    }

    #[cfg(feature = "serde")]
    #[test]
    fn templates_read_from_json_and_bad_fields_are_named() {
        let json = r#"{"strategy": "observe-instance", "delivery": "pull", "protocol": "coap", "timeout_s": 1200,
            "use_cached_data_model": false, "resume_after_downlink_failure": true, "execute_immediately": true,
            "check_delivery_and_protocol": true, "extend_lifetime": true, "max_attempts": 3, "fallback": false}"#;
        let template: TaskTemplate = serde_json::from_str(json).unwrap();
        assert_eq!(template.protocol, Some(Protocol::Coap));
        assert_eq!(template.fallback, Some(false));
        let unsaid: TaskTemplate = serde_json::from_str(r#"{"strategy": "send"}"#).unwrap();
        assert_eq!(unsaid.fallback, None);
        let mut config = UpgradeConfig::new("coap://fw/", "app.bin", 100);
        unsaid.apply(&mut config);
        assert!(config.fallback);
        assert_eq!(template.timeout, Some(Duration::from_secs(1200)));
        let back: TaskTemplate = serde_json::from_str(&serde_json::to_string(&template).unwrap()).unwrap();
        assert_eq!(back, template);
        for (json, field) in [
            (r#"{"strategy": "fastest"}"#, "strategy"),
            (r#"{"delivery": "mail"}"#, "delivery"),
            (r#"{"protocol": "ftp"}"#, "protocol"),
            (r#"{"timeout_s": 0}"#, "timeout_s"),
            (r#"{"max_attempts": 0}"#, "max_attempts"),
            (r#"{"colour": "blue"}"#, "colour"),
        ] {
            let error = serde_json::from_str::<TaskTemplate>(json).unwrap_err().to_string();
            assert!(error.contains(field), "{json}: {error}");
        }
        let tree: SettingsTree =
            serde_json::from_str(r#"{"default": {"firmwareUpdateTaskTemplateName": "fast"}, "groups": {"g": {"mobileFotaEnabled": true, "n": 3}}}"#).unwrap();
        assert_eq!(tree.groups["g"]["n"], SettingValue::Integer(3));
        assert!(serde_json::from_str::<SettingsTree>(r#"{"defaults": {}}"#).is_err());
        for protocol in
            [Protocol::Coap, Protocol::Coaps, Protocol::Http, Protocol::Https, Protocol::CoapTcp, Protocol::CoapTls]
        {
            assert_eq!(protocol_from_name(protocol_name(protocol)), Some(protocol));
        }
    }
}
