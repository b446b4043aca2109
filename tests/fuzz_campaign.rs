//! The campaign's input surface as a fuzz check: bytes become a campaign
//! definition (phases, gates, window, quota, abort rule, schedule end) and a
//! sequence of what an embedder reports and an operator commands (time
//! passing, upgrades ending well or badly, devices going on- and offline,
//! joining a group, reporting the target version, pause, resume, soft and
//! hard cancel, close). The campaign must never panic, never start a device
//! twice or start one after a cancel or abort, never exceed its quota, never
//! ask to be woken in the past, and, once every upgrade has reported its end
//! and its schedule has ended, complete with every record final.
//!
//! `cargo test --test fuzz_campaign` runs the check on generated inputs; the
//! `campaign` fuzz target (fuzz/, see FUZZING.md) runs the same function.
#![allow(dead_code)]

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::time::Duration;

use lwm2m_fota::campaign::{
    AbortRule, Campaign, CampaignDevice, CampaignOutput, CampaignSpec, CancelMode, Catalogue, DeviceInfo, DeviceStatus,
    NewFile, PhaseSpec, Settings, SettingsTree, UpgradeReport, Window,
};
use lwm2m_fota::model::Instant;
use lwm2m_fota::server::{Failure, Outcome, Step};

struct Bytes<'a>(&'a [u8]);

impl Bytes<'_> {
    fn next(&mut self) -> u8 {
        match self.0.split_first() {
            Some((&b, rest)) => {
                self.0 = rest;
                b
            }
            None => 0,
        }
    }
}

const DEVICES: usize = 24;

/// Runs the campaign an input describes, checking its rules throughout.
pub fn drive(input: &[u8]) {
    let mut bytes = Bytes(input);
    let mut spec = CampaignSpec::new("fw-2");
    let flags = bytes.next();
    if flags & 1 != 0 {
        let a = 1 + bytes.next() % 60;
        spec.phases = vec![PhaseSpec::new(a, Some(bytes.next() % 101)), PhaseSpec::new(100, None)];
    }
    if flags & 2 != 0 {
        let every = 10 + u64::from(bytes.next());
        spec.schedule.window = Some(Window {
            every_s: every,
            offset_s: u64::from(bytes.next()) % every,
            duration_s: 1 + u64::from(bytes.next()) % every,
        });
    }
    let max_concurrent = (flags & 4 != 0).then(|| 1 + u32::from(bytes.next() % 8));
    spec.quota.max_concurrent = max_concurrent;
    let per_minute = (flags & 8 != 0).then(|| 1 + u32::from(bytes.next() % 8));
    spec.quota.max_starts_per_minute = per_minute;
    if flags & 16 != 0 {
        spec.abort =
            Some(AbortRule { min_finished: u64::from(bytes.next() % 10), max_failure_percent: bytes.next() % 101 });
    }
    spec.schedule.start_s = u64::from(bytes.next() % 50);
    let end = spec.schedule.start_s + 1 + u64::from(bytes.next()) * 20;
    spec.schedule.end_s = Some(end);
    if flags & 32 != 0 {
        spec.groups = Some(vec!["g0".into()]);
    }
    let mut catalogue = Catalogue::default();
    let mut file = NewFile::firmware("fw-2", "fw-2.bin", 1000);
    file.version = Some("2.0.0".into());
    let _ = catalogue.add(Instant::ZERO, file);

    let names: Vec<String> = (0..DEVICES).map(|i| format!("d-{i}")).collect();
    let groups: Vec<Vec<String>> = (0..DEVICES).map(|i| vec![format!("g{}", i % 2)]).collect();
    let settings = Settings::new();
    let mut online: Vec<bool> = (0..DEVICES).map(|i| bytes.next() & 1 == 0 || i == 0).collect();
    let infos: Vec<DeviceInfo<'_>> = (0..DEVICES)
        .map(|i| DeviceInfo {
            endpoint: &names[i],
            groups: &groups[i],
            settings: &settings,
            firmware_version: Some("1.0.0"),
            online: online[i],
        })
        .collect();
    let Ok(mut campaign) =
        Campaign::new(Instant::ZERO, spec, &catalogue, BTreeMap::new(), SettingsTree::default(), infos.iter().copied())
    else {
        return;
    };
    let mut now = 0u64;
    let mut running: VecDeque<CampaignDevice> = VecDeque::new();
    let mut started: BTreeSet<CampaignDevice> = BTreeSet::new();
    let mut starts: Vec<u64> = Vec::new();
    let mut stopped = false;
    let success = Outcome::Succeeded { version: None };
    let failure = Outcome::Failed(Failure::Timeout { step: Step::Downloading, no_send_received: false });

    let mut take = |campaign: &mut Campaign, now: u64, running: &mut VecDeque<CampaignDevice>, stopped: &mut bool| {
        while let Some(output) = campaign.poll_output() {
            match output {
                CampaignOutput::Start { device, .. } => {
                    assert!(!*stopped, "a start after a cancel or abort");
                    assert!(started.insert(device), "{device:?} started twice");
                    running.push_back(device);
                    starts.push(now);
                }
                CampaignOutput::Aborted => *stopped = true,
                CampaignOutput::Cancel { device } => assert!(running.contains(&device)),
                _ => {}
            }
        }
        if let Some(max) = max_concurrent {
            assert!(running.len() <= max as usize, "{} running, quota {max}", running.len());
        }
        if let Some(max) = per_minute {
            let recent = starts.iter().filter(|&&s| s + 60 > now).count();
            assert!(recent <= max as usize, "{recent} starts in a minute, quota {max}");
        }
        if let Some(wake) = campaign.poll_timeout() {
            assert!(wake >= Instant::from_millis(now * 1000), "woken in the past");
        }
        assert_eq!(campaign.running() as usize, running.len());
    };
    take(&mut campaign, now, &mut running, &mut stopped);
    let at = |s: u64| Instant::from_millis(s * 1000);
    for _ in 0..200 {
        if bytes.0.is_empty() {
            break;
        }
        let op = bytes.next();
        let arg = bytes.next();
        match op % 10 {
            0 | 1 => {
                now += u64::from(arg);
                campaign.handle_timeout(at(now)).unwrap();
            }
            2 | 3 => {
                if let Some(device) = running.pop_front() {
                    let outcome = if arg & 1 == 0 { &success } else { &failure };
                    let report = UpgradeReport { outcome, attempts: 1, downlinks: 1, uplinks: 1, strategy_used: None };
                    campaign.finished(at(now), device, report).unwrap();
                }
            }
            4 => {
                let i = usize::from(arg) % DEVICES;
                online[i] = !online[i];
                let version = if arg & 0x80 != 0 { "2.0.0" } else { "1.0.0" };
                let info = DeviceInfo { online: online[i], firmware_version: Some(version), ..infos[i] };
                campaign.device(at(now), info).unwrap();
            }
            5 => {
                // A new device, or one joining the targeted group.
                let name = format!("late-{arg}");
                let info = DeviceInfo {
                    endpoint: &name,
                    groups: &groups[0],
                    settings: &settings,
                    firmware_version: None,
                    online: true,
                };
                campaign.device(at(now), info).unwrap();
            }
            6 => campaign.pause(at(now)).unwrap(),
            7 => campaign.resume(at(now)).unwrap(),
            8 => {
                stopped = true;
                let mode = if arg & 1 == 0 { CancelMode::Soft } else { CancelMode::Hard };
                campaign.cancel(at(now), mode).unwrap();
            }
            _ => {
                // A report for a device that is not running changes nothing.
                let device = CampaignDevice::from_index(u32::from(arg) % 40);
                if !running.contains(&device) {
                    let before = campaign.record(device).map(|r| r.status());
                    let report =
                        UpgradeReport { outcome: &success, attempts: 1, downlinks: 0, uplinks: 0, strategy_used: None };
                    let _ = campaign.finished(at(now), device, report);
                    assert_eq!(campaign.record(device).map(|r| r.status()), before);
                }
            }
        }
        take(&mut campaign, now, &mut running, &mut stopped);
    }
    // The device side falls quiet: every upgrade reports its end, time runs
    // past the schedule's end, and the campaign completes.
    for _ in 0..10_000 {
        if let Some(device) = running.pop_front() {
            let report =
                UpgradeReport { outcome: &success, attempts: 1, downlinks: 1, uplinks: 1, strategy_used: None };
            campaign.finished(at(now), device, report).unwrap();
        } else {
            match campaign.poll_timeout() {
                Some(wake) => now = now.max(wake.as_secs()),
                None => now = now.max(end),
            }
            campaign.handle_timeout(at(now)).unwrap();
        }
        take(&mut campaign, now, &mut running, &mut stopped);
        if campaign.is_completed() && running.is_empty() {
            break;
        }
    }
    assert!(campaign.is_completed(), "not completed at {now} s");
    assert!(
        campaign
            .devices()
            .all(|d| matches!(d.status(), DeviceStatus::Succeeded | DeviceStatus::Failed | DeviceStatus::NotStarted))
    );
    let progress = campaign.progress();
    assert_eq!(progress.running, 0);
    let _ = Duration::ZERO;
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(3000))]
        #[test]
        fn any_input_keeps_the_campaign_within_its_rules(input in prop::collection::vec(any::<u8>(), 0..400)) {
            super::drive(&input);
        }
    }
}
