//! The campaign's rules, one test each: targeting, schedule and window
//! edges, quota bounds, phase gates, the abort rule, each command, mobile
//! FOTA, already-current devices, no device twice, dynamic targeting, and
//! restore after any step.

use std::collections::BTreeMap;
use std::time::Duration;

use lwm2m_fota::campaign::*;
use lwm2m_fota::model::Instant;
use lwm2m_fota::server::{Delivery, Failure, Outcome, Step, Strategy};
use proptest::prelude::*;
use proptest::strategy::Strategy as _;

fn at(s: u64) -> Instant {
    Instant::from_millis(s * 1000)
}

fn catalogue() -> Catalogue {
    let mut catalogue = Catalogue::default();
    let mut file = NewFile::firmware("fw-2", "app-2.0.0.bin", 65_536);
    file.version = Some("2.0.0".into());
    catalogue.add(Instant::ZERO, file).unwrap();
    catalogue
}

struct Fleet {
    names: Vec<String>,
    groups: Vec<Vec<String>>,
    versions: Vec<String>,
    online: Vec<bool>,
    settings: Settings,
}

impl Fleet {
    fn new(n: usize) -> Fleet {
        Fleet {
            names: (0..n).map(|i| format!("d-{i}")).collect(),
            groups: vec![Vec::new(); n],
            versions: vec!["1.0.0".into(); n],
            online: vec![true; n],
            settings: Settings::new(),
        }
    }

    fn infos(&self) -> Vec<DeviceInfo<'_>> {
        (0..self.names.len())
            .map(|i| DeviceInfo {
                endpoint: &self.names[i],
                groups: &self.groups[i],
                settings: &self.settings,
                firmware_version: Some(&self.versions[i]),
                online: self.online[i],
            })
            .collect()
    }

    fn campaign(&self, spec: CampaignSpec) -> Campaign {
        Campaign::new(Instant::ZERO, spec, &catalogue(), BTreeMap::new(), SettingsTree::default(), self.infos())
            .unwrap()
    }
}

fn success() -> Outcome {
    Outcome::Succeeded { version: None }
}

fn failure() -> Outcome {
    Outcome::Failed(Failure::Timeout { step: Step::Downloading, no_send_received: false })
}

fn report(outcome: &Outcome) -> UpgradeReport<'_> {
    UpgradeReport { outcome, attempts: 1, downlinks: 4, uplinks: 5, strategy_used: Some(Strategy::Reads) }
}

/// Drains the outputs: the devices started, the rest kept.
fn drain(campaign: &mut Campaign, other: &mut Vec<CampaignOutput>) -> Vec<CampaignDevice> {
    let mut started = Vec::new();
    while let Some(output) = campaign.poll_output() {
        match output {
            CampaignOutput::Start { device, .. } => started.push(device),
            output => other.push(output),
        }
    }
    started
}

/// Runs the campaign: every upgrade takes `took` seconds and ends as
/// `outcome(device index)` says; returns (start, end) per started device
/// and the other outputs.
fn run(
    campaign: &mut Campaign,
    took: u64,
    outcome: impl Fn(usize) -> bool,
    until: u64,
) -> (BTreeMap<usize, (u64, u64)>, Vec<CampaignOutput>) {
    let mut spans = BTreeMap::new();
    let mut other = Vec::new();
    let mut ends: BTreeMap<(u64, usize), CampaignDevice> = BTreeMap::new();
    let mut now = 0;
    loop {
        for device in drain(campaign, &mut other) {
            spans.insert(device.index(), (now, 0));
            ends.insert((now + took, device.index()), device);
        }
        let next_end = ends.keys().next().map(|&(t, _)| t);
        let wake = campaign.poll_timeout().map(|t| t.as_secs());
        let next = match (next_end, wake) {
            (Some(a), Some(b)) => a.min(b),
            (a, b) => match a.or(b) {
                Some(t) => t,
                None => break,
            },
        };
        if next > until {
            break;
        }
        now = next.max(now);
        if next_end == Some(next) {
            let (&key, &device) = ends.iter().next().unwrap();
            ends.remove(&key);
            let result = if outcome(device.index()) { success() } else { failure() };
            campaign.finished(at(now), device, report(&result)).unwrap();
            spans.get_mut(&device.index()).unwrap().1 = now;
        } else {
            campaign.handle_timeout(at(now)).unwrap();
        }
    }
    (spans, other)
}

#[test]
fn every_device_upgrades_once_and_the_campaign_completes() {
    let fleet = Fleet::new(10);
    let mut campaign = fleet.campaign(CampaignSpec::new("fw-2"));
    let (spans, other) = run(&mut campaign, 30, |_| true, 10_000);
    assert_eq!(spans.len(), 10);
    assert!(other.contains(&CampaignOutput::Completed));
    let progress = campaign.progress();
    assert_eq!((progress.targeted, progress.succeeded), (10, 10));
    assert!(campaign.devices().all(|d| d.status() == DeviceStatus::Succeeded && d.downlinks() == 4));
}

#[test]
fn groups_target_and_absent_groups_mean_every_device() {
    let mut fleet = Fleet::new(6);
    for i in 0..6 {
        fleet.groups[i] = vec![if i % 2 == 0 { "north".into() } else { "south".into() }];
    }
    let mut spec = CampaignSpec::new("fw-2");
    spec.groups = Some(vec!["north".into()]);
    spec.devices = vec!["d-1".into()];
    let campaign = fleet.campaign(spec);
    let names: Vec<_> = campaign.devices().map(|d| d.endpoint().to_string()).collect();
    assert_eq!(names, ["d-0", "d-1", "d-2", "d-4"]);
    assert_eq!(campaign.progress().groups["north"].devices, 3);
    assert_eq!(fleet.campaign(CampaignSpec::new("fw-2")).devices().len(), 6);
}

#[test]
fn nothing_starts_before_the_schedule_and_after_its_end() {
    let mut fleet = Fleet::new(4);
    fleet.online[3] = false;
    let mut spec = CampaignSpec::new("fw-2");
    spec.schedule.start_s = 100;
    spec.schedule.end_s = Some(200);
    spec.quota.max_concurrent = Some(1);
    let mut campaign = fleet.campaign(spec);
    assert_eq!(campaign.poll_timeout(), Some(at(100)));
    let (spans, _) = run(&mut campaign, 60, |_| true, 10_000);
    // Starts at 100 and 160; the third would start at 220, after the end.
    assert_eq!(spans.values().map(|s| s.0).collect::<Vec<_>>(), [100, 160]);
    assert!(campaign.is_completed());
    let not_started = &campaign.progress().not_started;
    assert_eq!(not_started.get("schedule-ended"), Some(&1));
    assert_eq!(not_started.get("offline"), Some(&1));
}

#[test]
fn upgrades_start_only_inside_the_window_and_may_finish_after_it() {
    let fleet = Fleet::new(3);
    let mut spec = CampaignSpec::new("fw-2");
    spec.schedule.window = Some(Window { every_s: 1000, offset_s: 100, duration_s: 50 });
    spec.quota.max_concurrent = Some(1);
    let mut campaign = fleet.campaign(spec);
    assert_eq!(campaign.poll_timeout(), Some(at(100)));
    let (spans, _) = run(&mut campaign, 40, |_| true, 100_000);
    // 100 (window open), 140 (still open, ends at 180 after it closed at
    // 150), then the next period's opening at 1100.
    let starts: Vec<u64> = spans.values().map(|s| s.0).collect();
    assert_eq!(starts, [100, 140, 1100]);
    assert_eq!(spans[&1].1, 180);
}

#[test]
fn concurrency_and_start_rate_quotas_hold() {
    let fleet = Fleet::new(50);
    let mut spec = CampaignSpec::new("fw-2");
    spec.quota.max_concurrent = Some(10);
    spec.quota.max_starts_per_minute = Some(7);
    let mut campaign = fleet.campaign(spec);
    let (spans, _) = run(&mut campaign, 5, |_| true, 100_000);
    assert_eq!(spans.len(), 50);
    let starts: Vec<u64> = spans.values().map(|s| s.0).collect();
    for &t in &starts {
        let in_minute = starts.iter().filter(|&&s| s >= t && s < t + 60).count();
        assert!(in_minute <= 7, "{in_minute} starts in the minute from {t}");
    }
    let progress = campaign.progress();
    assert_eq!(progress.max_starts_in_60s, 7);
    assert!(progress.max_concurrent_seen <= 7);
}

#[test]
fn concurrency_quota_caps_running_upgrades() {
    let fleet = Fleet::new(30);
    let mut spec = CampaignSpec::new("fw-2");
    spec.quota.max_concurrent = Some(4);
    let mut campaign = fleet.campaign(spec);
    let (spans, _) = run(&mut campaign, 10, |_| true, 100_000);
    for t in 0..100 {
        let running = spans.values().filter(|&&(s, e)| s <= t && t < e).count();
        assert!(running <= 4);
    }
    assert_eq!(campaign.progress().max_concurrent_seen, 4);
}

#[test]
fn the_byte_rate_quota_paces_devices_and_bounds_how_many_run() {
    let fleet = Fleet::new(20);
    let mut spec = CampaignSpec::new("fw-2");
    spec.quota.max_bytes_per_s = Some(100_000);
    spec.quota.device_bytes_per_s = Some(30_000);
    let mut campaign = fleet.campaign(spec);
    assert_eq!(campaign.delivery_pace(), Some(30_000));
    run(&mut campaign, 10, |_| true, 100_000);
    // 100,000 / 30,000: three paced downloads at once, 90,000 B/s at most.
    assert_eq!(campaign.progress().max_concurrent_seen, 3);
}

#[test]
fn under_a_byte_rate_quota_pushed_images_carry_the_pace_and_pulled_ones_do_not() {
    let mut fleet = Fleet::new(4);
    fleet.groups[0] = vec!["pushed".into()];
    let mut templates = BTreeMap::new();
    templates.insert("push".to_string(), TaskTemplate { delivery: Some(Delivery::Push), ..TaskTemplate::default() });
    let mut tree = SettingsTree::default();
    tree.groups.insert("pushed".into(), [(TEMPLATE_NAME.to_string(), SettingValue::Text("push".into()))].into());
    let mut spec = CampaignSpec::new("fw-2");
    spec.quota.max_bytes_per_s = Some(100_000);
    spec.quota.device_bytes_per_s = Some(25_000);
    let campaign =
        Campaign::new(Instant::ZERO, spec.clone(), &catalogue(), templates.clone(), tree.clone(), fleet.infos())
            .unwrap();
    let configs: Vec<_> = campaign.devices().map(|d| (d.config().delivery, d.config().push_pace)).collect();
    assert_eq!(configs[0], (Delivery::Push, Some(25_000)));
    assert!(configs[1..].iter().all(|c| *c == (Delivery::Pull, None)), "{configs:?}");
    // Without the quota nothing is paced.
    spec.quota.max_bytes_per_s = None;
    let campaign = Campaign::new(Instant::ZERO, spec, &catalogue(), templates, tree, fleet.infos()).unwrap();
    assert_eq!(campaign.devices().next().unwrap().config().push_pace, None);
}

#[test]
fn a_phase_starts_only_when_the_previous_one_finished() {
    let fleet = Fleet::new(100);
    let mut spec = CampaignSpec::new("fw-2");
    spec.phases = vec![PhaseSpec::new(10, Some(90)), PhaseSpec::new(50, None), PhaseSpec::new(100, None)];
    let mut campaign = fleet.campaign(spec);
    let (spans, other) = run(&mut campaign, 30, |_| true, 100_000);
    let progress = campaign.progress();
    assert_eq!(progress.phases.iter().map(|p| p.devices).collect::<Vec<_>>(), [10, 40, 50]);
    // Phase 0 at 0, phase 1 when it finished at 30, phase 2 at 60.
    for (i, (start, _)) in spans {
        assert_eq!(start, [0, 30, 60][campaign.record(campaign.find(&format!("d-{i}")).unwrap()).unwrap().phase()]);
    }
    let phases: Vec<_> = other.iter().filter(|o| matches!(o, CampaignOutput::PhaseStarted(_))).collect();
    assert_eq!(phases.len(), 3);
    assert_eq!(progress.phases[1].started, Some(at(30)));
    assert_eq!(progress.phases[1].finished, Some(at(60)));
}

#[test]
fn a_phase_below_its_success_rate_pauses_the_campaign_until_resumed() {
    let fleet = Fleet::new(100);
    let mut spec = CampaignSpec::new("fw-2");
    spec.phases = vec![PhaseSpec::new(10, Some(90)), PhaseSpec::new(100, None)];
    let mut campaign = fleet.campaign(spec);
    // Two of the first ten fail: 80 % < 90 %.
    let (spans, other) = run(&mut campaign, 30, |i| i >= 2, 100_000);
    assert_eq!(spans.len(), 10);
    assert!(other.contains(&CampaignOutput::Paused(PauseReason::PhaseGate(0))));
    assert_eq!(campaign.progress().paused, Some(PauseReason::PhaseGate(0)));
    assert!(!campaign.is_completed());
    campaign.resume(at(1000)).unwrap();
    let mut rest = Vec::new();
    assert_eq!(drain(&mut campaign, &mut rest).len(), 90);
    assert!(rest.contains(&CampaignOutput::PhaseStarted(1)));
}

#[test]
fn the_abort_rule_stops_new_starts() {
    let fleet = Fleet::new(100);
    let mut spec = CampaignSpec::new("fw-2");
    spec.quota.max_concurrent = Some(5);
    spec.abort = Some(AbortRule { min_finished: 10, max_failure_percent: 20 });
    let mut campaign = fleet.campaign(spec);
    // Every third fails: above 20 % once ten have finished.
    let (spans, other) = run(&mut campaign, 10, |i| i % 3 != 0, 100_000);
    assert!(other.contains(&CampaignOutput::Aborted));
    assert!(campaign.is_completed());
    let progress = campaign.progress();
    assert!(progress.aborted);
    assert!(spans.len() < 20, "{} started", spans.len());
    assert_eq!(progress.not_started["aborted"] as usize, 100 - spans.len());
}

#[test]
fn below_the_minimum_finished_the_abort_rule_waits() {
    let fleet = Fleet::new(5);
    let mut spec = CampaignSpec::new("fw-2");
    spec.abort = Some(AbortRule { min_finished: 10, max_failure_percent: 0 });
    let mut campaign = fleet.campaign(spec);
    let (spans, other) = run(&mut campaign, 10, |_| false, 100_000);
    assert_eq!(spans.len(), 5);
    assert!(!other.contains(&CampaignOutput::Aborted));
}

#[test]
fn pause_stops_starts_and_resume_restarts_them() {
    let fleet = Fleet::new(10);
    let mut spec = CampaignSpec::new("fw-2");
    spec.quota.max_concurrent = Some(2);
    let mut campaign = fleet.campaign(spec);
    let mut other = Vec::new();
    let first = drain(&mut campaign, &mut other);
    assert_eq!(first.len(), 2);
    campaign.pause(at(1)).unwrap();
    campaign.finished(at(5), first[0], report(&success())).unwrap();
    assert!(drain(&mut campaign, &mut other).is_empty());
    assert!(other.contains(&CampaignOutput::Paused(PauseReason::Command)));
    campaign.resume(at(6)).unwrap();
    assert_eq!(drain(&mut campaign, &mut other).len(), 1);
}

#[test]
fn soft_cancel_lets_running_upgrades_finish() {
    let fleet = Fleet::new(10);
    let mut spec = CampaignSpec::new("fw-2");
    spec.quota.max_concurrent = Some(3);
    let mut campaign = fleet.campaign(spec);
    let mut other = Vec::new();
    let running = drain(&mut campaign, &mut other);
    campaign.cancel(at(1), CancelMode::Soft).unwrap();
    assert!(campaign.poll_output().is_none(), "soft cancel cancels nothing");
    for device in running {
        campaign.finished(at(9), device, report(&success())).unwrap();
    }
    assert!(drain(&mut campaign, &mut other).is_empty());
    assert!(campaign.is_completed());
    let progress = campaign.progress();
    assert_eq!((progress.succeeded, progress.not_started["cancelled"]), (3, 7));
}

#[test]
fn hard_cancel_cancels_running_upgrades() {
    let fleet = Fleet::new(10);
    let mut spec = CampaignSpec::new("fw-2");
    spec.quota.max_concurrent = Some(3);
    let mut campaign = fleet.campaign(spec);
    let mut other = Vec::new();
    let running = drain(&mut campaign, &mut other);
    campaign.cancel(at(1), CancelMode::Hard).unwrap();
    let mut cancels = Vec::new();
    while let Some(output) = campaign.poll_output() {
        if let CampaignOutput::Cancel { device } = output {
            cancels.push(device);
        }
    }
    assert_eq!(cancels, running);
    for device in cancels {
        campaign.finished(at(2), device, report(&Outcome::Failed(Failure::Cancelled))).unwrap();
    }
    assert!(campaign.is_completed());
    assert_eq!(campaign.progress().failed["cancelled"], 3);
}

#[test]
fn mobile_fota_marks_the_devices_it_is_enabled_for() {
    let mut fleet = Fleet::new(4);
    fleet.groups[1] = vec!["field".into()];
    fleet.groups[2] = vec!["field".into()];
    let mut tree = SettingsTree::default();
    tree.groups.insert("field".into(), [(MOBILE_FOTA_ENABLED.to_string(), SettingValue::Bool(true))].into());
    let mut campaign =
        Campaign::new(Instant::ZERO, CampaignSpec::new("fw-2"), &catalogue(), BTreeMap::new(), tree, fleet.infos())
            .unwrap();
    let mut marked = Vec::new();
    while let Some(output) = campaign.poll_output() {
        if let CampaignOutput::SetSettings { device, settings } = output {
            assert_eq!(settings[MOBILE_FOTA], SettingValue::Text("available".into()));
            assert_eq!(settings[MOBILE_FOTA_FIRMWARE_ID], SettingValue::Text("fw-2".into()));
            assert_eq!(settings[MOBILE_FOTA_FIRMWARE_NAME], SettingValue::Text("app-2.0.0.bin".into()));
            marked.push(device.index());
        }
    }
    assert_eq!(marked, [1, 2]);
    assert_eq!(campaign.progress().mobile_fota, 2);
    let record = campaign.record(campaign.find("d-1").unwrap()).unwrap();
    assert!(record.mobile_fota() && record.settings().contains_key(MOBILE_FOTA));
}

#[test]
fn a_device_at_the_target_version_succeeds_without_a_download() {
    let mut fleet = Fleet::new(3);
    fleet.versions[1] = "2.0.0".into();
    fleet.online[2] = false;
    let mut campaign = fleet.campaign(CampaignSpec::new("fw-2"));
    let mut other = Vec::new();
    let started = drain(&mut campaign, &mut other);
    assert_eq!(started.iter().map(|d| d.index()).collect::<Vec<_>>(), [0]);
    let record = campaign.record(campaign.find("d-1").unwrap()).unwrap();
    assert_eq!(
        (record.status(), record.reason(), record.start()),
        (DeviceStatus::Succeeded, Some(ALREADY_CURRENT), None)
    );
    // A companion installed it while d-2 was offline: found current when it registers.
    let (groups, settings) = (Vec::new(), Settings::new());
    let info = DeviceInfo {
        endpoint: "d-2",
        groups: &groups,
        settings: &settings,
        firmware_version: Some("2.0.0"),
        online: true,
    };
    campaign.device(at(50), info).unwrap();
    assert!(drain(&mut campaign, &mut other).is_empty());
    campaign.finished(at(60), started[0], report(&success())).unwrap();
    assert!(campaign.is_completed());
    assert_eq!(campaign.progress().succeeded, 3);
}

#[test]
fn no_device_is_upgraded_twice() {
    let fleet = Fleet::new(2);
    let mut campaign = fleet.campaign(CampaignSpec::new("fw-2"));
    let mut other = Vec::new();
    let started = drain(&mut campaign, &mut other);
    campaign.finished(at(10), started[0], report(&failure())).unwrap();
    // It registers again, still at the old version: not started again.
    let infos = fleet.infos();
    assert_eq!(campaign.device(at(20), infos[0]).unwrap(), Some(started[0]));
    assert!(drain(&mut campaign, &mut other).is_empty());
    // A duplicate end report changes nothing.
    campaign.finished(at(21), started[0], report(&success())).unwrap();
    assert_eq!(campaign.record(started[0]).unwrap().status(), DeviceStatus::Failed);
}

#[test]
fn devices_that_register_or_join_a_group_while_it_runs_are_included() {
    let mut fleet = Fleet::new(3);
    fleet.groups = vec![vec!["north".into()], vec!["south".into()], vec!["north".into()]];
    let mut spec = CampaignSpec::new("fw-2");
    spec.groups = Some(vec!["north".into()]);
    spec.phases = vec![PhaseSpec::new(50, None), PhaseSpec::new(100, None)];
    let mut campaign = fleet.campaign(spec);
    assert_eq!(campaign.devices().len(), 2);
    let settings = Settings::new();
    let north = vec!["north".to_string()];
    // d-1 joins north; d-9 registers for the first time.
    for name in ["d-1", "d-9"] {
        let info =
            DeviceInfo { endpoint: name, groups: &north, settings: &settings, firmware_version: None, online: true };
        let device = campaign.device(at(5), info).unwrap().unwrap();
        assert_eq!(campaign.record(device).unwrap().phase(), 1, "late devices join the last phase");
    }
    let other = Fleet::new(0);
    let info =
        DeviceInfo { endpoint: "x", groups: &[], settings: &other.settings, firmware_version: None, online: true };
    assert_eq!(campaign.device(at(6), info).unwrap(), None, "not targeted");
    let (spans, _) = run(&mut campaign, 10, |_| true, 100_000);
    assert_eq!(campaign.progress().succeeded, 4);
    assert!(spans.len() >= 3);
}

#[test]
fn offline_devices_start_when_they_register() {
    let mut fleet = Fleet::new(2);
    fleet.online[1] = false;
    let mut campaign = fleet.campaign(CampaignSpec::new("fw-2"));
    let mut other = Vec::new();
    assert_eq!(drain(&mut campaign, &mut other).len(), 1);
    let mut infos = fleet.infos();
    infos[1].online = true;
    campaign.device(at(3600), infos[1]).unwrap();
    assert_eq!(drain(&mut campaign, &mut other), [CampaignDevice::from_index(1)]);
}

#[test]
fn templates_are_counted_and_recorded_per_device() {
    let mut fleet = Fleet::new(4);
    fleet.groups[0] = vec!["fast".into()];
    let mut templates = BTreeMap::new();
    templates.insert(
        "quick".to_string(),
        TaskTemplate { strategy: Some(Strategy::ObserveInstance), ..TaskTemplate::default() },
    );
    let mut tree = SettingsTree::default();
    tree.groups.insert("fast".into(), [(TEMPLATE_NAME.to_string(), SettingValue::Text("quick".into()))].into());
    tree.default.insert(TEMPLATE_NAME.to_string(), SettingValue::Text("missing".into()));
    let campaign =
        Campaign::new(Instant::ZERO, CampaignSpec::new("fw-2"), &catalogue(), templates, tree, fleet.infos()).unwrap();
    let progress = campaign.progress();
    assert_eq!(progress.templates["quick"], 1);
    assert_eq!(progress.templates["default"], 3);
    let first = campaign.devices().next().unwrap();
    assert_eq!(first.config().strategy, Strategy::ObserveInstance);
    let last = campaign.devices().last().unwrap();
    assert_eq!(last.template(), &TemplateChoice::DefaultUnknown("missing".into()));
    assert_eq!(last.config().target_version.as_deref(), Some("2.0.0"));
}

#[test]
fn a_file_that_cannot_be_chosen_is_refused_naming_it() {
    let fleet = Fleet::new(1);
    let mut catalogue = catalogue();
    let mut manual = NewFile::firmware("doc", "manual.pdf", 10);
    manual.category = Category::Other("document".into());
    catalogue.add(Instant::ZERO, manual).unwrap();
    let mut old = NewFile::firmware("old", "old.bin", 10);
    old.retention = Retention::For(Duration::from_secs(10));
    catalogue.add(Instant::ZERO, old).unwrap();
    for id in ["doc", "old", "nope"] {
        let error = Campaign::new(
            at(100),
            CampaignSpec::new(id),
            &catalogue,
            BTreeMap::new(),
            SettingsTree::default(),
            fleet.infos(),
        )
        .unwrap_err();
        assert!(matches!(error, CampaignError::File(_)), "{id}: {error}");
        assert!(error.to_string().contains(id), "{error}");
    }
}

#[test]
fn a_spec_with_an_unknown_field_is_refused_naming_it() {
    let error = serde_json::from_str::<CampaignSpec>(r#"{"file": "fw", "phasez": []}"#).unwrap_err();
    assert!(error.to_string().contains("phasez"), "{error}");
    let error = serde_json::from_str::<CampaignSpec>(r#"{"file": "fw", "quota": {"max_concurent": 1}}"#).unwrap_err();
    assert!(error.to_string().contains("max_concurent"), "{error}");
    let spec: CampaignSpec = serde_json::from_str(
        r#"{"file": "fw", "schedule": {"window": {"every_s": 10, "duration_s": 5}}, "phases": [{"percent": 100}]}"#,
    )
    .unwrap();
    assert!(spec.check().is_ok());
}

#[test]
fn time_going_back_is_an_error() {
    let fleet = Fleet::new(1);
    let mut campaign = fleet.campaign(CampaignSpec::new("fw-2"));
    campaign.handle_timeout(at(10)).unwrap();
    assert!(matches!(campaign.handle_timeout(at(9)), Err(CampaignError::TimeWentBack { .. })));
    assert!(matches!(
        campaign.finished(at(10), CampaignDevice::from_index(7), report(&success())),
        Err(CampaignError::UnknownDevice(7))
    ));
}

#[derive(Debug, Clone)]
enum Input {
    Tick(u64),
    Finish(bool),
    Pause,
    Resume,
    Cancel(bool),
    Online(usize, bool),
}

fn input() -> impl proptest::strategy::Strategy<Value = Input> {
    prop_oneof![
        4 => (1u64..400).prop_map(Input::Tick),
        4 => any::<bool>().prop_map(Input::Finish),
        1 => Just(Input::Pause),
        1 => Just(Input::Resume),
        1 => any::<bool>().prop_map(Input::Cancel),
        2 => (0usize..30, any::<bool>()).prop_map(|(i, o)| Input::Online(i, o)),
    ]
}

proptest! {
    /// The whole campaign serializes: restored after any step it continues
    /// exactly as the original does, and its bounds hold throughout.
    #[test]
    fn restored_after_any_step_it_continues_identically(inputs in prop::collection::vec(input(), 1..80)) {
        let mut fleet = Fleet::new(30);
        for i in 0..30 {
            fleet.online[i] = i % 4 != 0;
            fleet.groups[i] = vec![format!("g{}", i % 3)];
        }
        let mut spec = CampaignSpec::new("fw-2");
        spec.phases = vec![PhaseSpec::new(20, Some(50)), PhaseSpec::new(100, None)];
        spec.quota.max_concurrent = Some(4);
        spec.quota.max_starts_per_minute = Some(6);
        spec.schedule.window = Some(Window { every_s: 600, offset_s: 0, duration_s: 300 });
        spec.abort = Some(AbortRule { min_finished: 8, max_failure_percent: 60 });
        let mut original = fleet.campaign(spec);
        let mut now = 0;
        let mut running: Vec<CampaignDevice> = Vec::new();
        for input in inputs {
            let json = serde_json::to_string(&original).unwrap();
            let mut restored: Campaign = serde_json::from_str(&json).unwrap();
            prop_assert_eq!(&restored, &original);
            let infos = fleet.infos();
            for campaign in [&mut original, &mut restored] {
                match &input {
                    Input::Tick(s) => campaign.handle_timeout(at(now + s)).unwrap(),
                    Input::Finish(ok) => {
                        if let Some(&device) = running.first() {
                            let outcome = if *ok { success() } else { failure() };
                            campaign.finished(at(now), device, report(&outcome)).unwrap();
                        }
                    }
                    Input::Pause => campaign.pause(at(now)).unwrap(),
                    Input::Resume => campaign.resume(at(now)).unwrap(),
                    Input::Cancel(hard) => campaign
                        .cancel(at(now), if *hard { CancelMode::Hard } else { CancelMode::Soft })
                        .unwrap(),
                    Input::Online(i, online) => {
                        let mut info = infos[*i];
                        info.online = *online;
                        campaign.device(at(now), info).unwrap();
                    }
                }
            }
            if let Input::Tick(s) = input {
                now += s;
            }
            if let Input::Finish(_) = input {
                if !running.is_empty() {
                    running.remove(0);
                }
            }
            let a: Vec<_> = std::iter::from_fn(|| original.poll_output()).collect();
            let b: Vec<_> = std::iter::from_fn(|| restored.poll_output()).collect();
            prop_assert_eq!(&a, &b);
            prop_assert_eq!(&original, &restored);
            for output in a {
                if let CampaignOutput::Start { device, .. } = output {
                    running.push(device);
                }
            }
            let progress = original.progress();
            prop_assert!(progress.running <= 4 && progress.max_starts_in_60s <= 6);
            prop_assert_eq!(progress.running as usize, running.len());
        }
    }
}
