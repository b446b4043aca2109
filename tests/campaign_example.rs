//! examples/campaign as DESIGN.md specifies it: the design's own spec runs
//! to completion with its phases, window, quota and mobile FOTA; bad specs
//! exit 1 with one line naming the field; and under `mixed`, with fallback,
//! every strategy upgrades at least 99.9 % of the devices that can be.
mod common;

use std::collections::BTreeMap;
use std::process::Command;

use lwm2m_fota::campaign::{CampaignSpec, Catalogue, NewFile, TaskTemplate};
use lwm2m_fota::model::Instant;
use lwm2m_fota::server::Strategy;
use lwm2m_fota::sim::{CampaignSimConfig, DeviceBlock, FleetProfile, run_campaign};

const DESIGN: &str = "tests/data/campaign/design.json";

fn campaign(args: &[&str]) -> std::process::Output {
    Command::new(common::example_binary("campaign")).args(args).output().unwrap()
}

#[test]
fn the_design_spec_runs_to_completion_within_its_rules() {
    let out = std::env::temp_dir().join(format!("campaign-devices-{}.jsonl", std::process::id()));
    let output = campaign(&["--spec", DESIGN, "--json", "--devices-out", out.to_str().unwrap()]);
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let v: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    for key in [
        "devices",
        "targeted",
        "succeeded",
        "failed",
        "not_started",
        "stuck",
        "phases",
        "paused",
        "aborted",
        "max_concurrent_seen",
        "max_starts_in_60s",
        "max_bytes_in_1s",
        "templates",
        "mobile_fota",
        "sim_duration_s",
        "wall_ms",
    ] {
        assert!(v.get(key).is_some(), "{key} missing: {v}");
    }
    assert_eq!(v["devices"], 1650);
    // The south group is not targeted.
    assert_eq!(v["targeted"], 1600);
    assert_eq!(v["stuck"], 0);
    let failed: u64 = v["failed"].as_object().unwrap().values().map(|n| n.as_u64().unwrap()).sum();
    assert_eq!(v["succeeded"].as_u64().unwrap() + failed, 1600);
    // Quota: 500 at once, 1000 starts a minute, 5 MB/s (at 20 kB/s each: 250 at once).
    assert!(v["max_concurrent_seen"].as_u64().unwrap() <= 250);
    assert!(v["max_starts_in_60s"].as_u64().unwrap() <= 1000);
    assert!(v["max_bytes_in_1s"].as_u64().unwrap() <= 5_000_000);
    // Phases: 1 %, 25 %, 100 % of 1600; the first starts when the window opens.
    let phases = v["phases"].as_array().unwrap();
    let devices: Vec<u64> = phases.iter().map(|p| p["devices"].as_u64().unwrap()).collect();
    assert_eq!(devices, [16, 384, 1200]);
    assert_eq!(phases[0]["started_s"], 3600.0);
    for k in 1..3 {
        assert!(phases[k]["started_s"].as_f64() >= phases[k - 1]["finished_s"].as_f64());
    }
    assert_eq!(v["mobile_fota"], 100);
    assert_eq!(v["templates"]["fast"], 1600);
    // Per device: the field devices' companion delivered before they came online.
    let lines: Vec<serde_json::Value> =
        std::fs::read_to_string(&out).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    let _ = std::fs::remove_file(&out);
    assert_eq!(lines.len(), 1600);
    let field = lines.iter().find(|l| l["endpoint"] == "f-0").unwrap();
    assert_eq!(field["outcome"], "succeeded");
    assert_eq!(field["reason"], "already-current");
    assert_eq!(field["start_s"], serde_json::Value::Null);
    assert_eq!(field["settings"]["mobileFota"], "available");
    assert_eq!(field["settings"]["mobileFotaFirmwareId"], "fw-2");
    assert_eq!(field["settings"]["mobileFotaFirmwareName"], "app-2.0.0.bin");
    let north = lines.iter().find(|l| l["endpoint"] == "n-0").unwrap();
    assert_eq!(north["template"], "fast");
    assert_eq!(north["strategy"], "observe-instance");
    assert_eq!(north["settings"]["firmwareUpdateUseObserve"], true);
    assert!(north["downlinks"].as_u64().unwrap() > 0 && north["attempts"] == 1);
    for key in ["groups", "strategy_used", "phase", "end_s", "uplinks"] {
        assert!(north.get(key).is_some(), "{key}");
    }
}

/// The design spec with `edit` applied.
fn bad_spec(edit: impl FnOnce(&mut serde_json::Value)) -> String {
    let mut v: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(DESIGN).unwrap()).unwrap();
    edit(&mut v);
    let path = std::env::temp_dir().join(format!("campaign-bad-{}-{}.json", std::process::id(), rand_suffix()));
    std::fs::write(&path, v.to_string()).unwrap();
    path.to_str().unwrap().to_string()
}

fn rand_suffix() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    N.fetch_add(1, Ordering::Relaxed)
}

fn refused(path: &str, naming: &str) {
    let output = campaign(&["--spec", path, "--json"]);
    assert_eq!(output.status.code(), Some(1), "{path}");
    let stderr = String::from_utf8(output.stderr).unwrap();
    assert_eq!(stderr.lines().count(), 1, "one line: {stderr}");
    assert!(stderr.contains(naming), "{naming} not in {stderr}");
    assert!(output.stdout.is_empty());
    let _ = std::fs::remove_file(path);
}

#[test]
fn bad_specs_are_refused_with_one_line_naming_the_field() {
    refused(&bad_spec(|v| v["templates"]["fast"]["stratgy"] = "read".into()), "stratgy");
    refused(&bad_spec(|v| v["templates"]["fast"]["strategy"] = "sometimes".into()), "strategy");
    refused(
        &bad_spec(|v| v["campaign"]["phases"] = serde_json::json!([{"percent": 30}, {"percent": 20}])),
        "campaign.phases",
    );
    refused(&bad_spec(|v| v["campaign"]["phases"] = serde_json::json!([{"percent": 50}])), "campaign.phases");
    refused(
        &bad_spec(|v| v["campaign"]["schedule"]["window"]["duration_s"] = 90000.into()),
        "campaign.schedule.window.duration_s",
    );
    refused(&bad_spec(|v| v["files"][0]["category"] = "document".into()), "fw-2");
    refused(&bad_spec(|v| v["files"][0]["retention_s"] = 0.into()), "fw-2");
    refused(&bad_spec(|v| v["campaign"]["file"] = "fw-9".into()), "fw-9");
    refused(&bad_spec(|v| v["campaign"]["quota"]["max_concurent"] = 1.into()), "max_concurent");
    refused(&bad_spec(|v| v["devices"][0]["profile"] = "grumpy".into()), "devices[0].profile");
    refused(&bad_spec(|v| v["surprise"] = 1.into()), "surprise");
    refused(&bad_spec(|v| v["devices"][0]["count"] = 1_000_000_000_000u64.into()), "devices");
    refused(&bad_spec(|v| v["devices"][1]["prefix"] = "n-".into()), "devices: two devices are named \"n-0\"");
    refused(&bad_spec(|v| v["files"][0]["size"] = 1_000_000_000_000u64.into()), "files");
    refused("/nonexistent/spec.json", "/nonexistent/spec.json");
    let output = campaign(&["--spec"]);
    assert_eq!(output.status.code(), Some(1));
    assert_eq!(String::from_utf8(output.stderr).unwrap().lines().count(), 1);
}

#[test]
fn with_fallback_every_strategy_upgrades_at_least_999_per_mille_of_a_mixed_fleet() {
    for strategy in Strategy::ALL {
        let mut catalogue = Catalogue::default();
        let mut file = NewFile::firmware("fw-2", "fw-2.bin", 32_768);
        file.version = Some("2.0.0".into());
        catalogue.add(Instant::ZERO, file).unwrap();
        let mut spec = CampaignSpec::new("fw-2");
        spec.base_uri = Some("coap://fw.example.com/".into());
        spec.quota.max_concurrent = Some(500);
        let mut templates = BTreeMap::new();
        let template = TaskTemplate {
            strategy: Some(strategy),
            protocol: Some(lwm2m_fota::model::Protocol::Coap),
            ..TaskTemplate::default()
        };
        templates.insert("t".to_string(), template);
        let mut tree = lwm2m_fota::campaign::SettingsTree::default();
        tree.default
            .insert(lwm2m_fota::campaign::TEMPLATE_NAME.into(), lwm2m_fota::campaign::SettingValue::Text("t".into()));
        let blocks = vec![DeviceBlock::new("d-", 5_000, FleetProfile::Mixed, "1.0.0")];
        let config = CampaignSimConfig { spec, catalogue, templates, tree, blocks, seed: 7, commands: Vec::new() };
        let run = run_campaign(config, |_, _| {}).unwrap();
        let progress = run.campaign.progress();
        // What no strategy can upgrade: a download that lost its connection
        // on every attempt (Update Result 4).
        let hopeless = progress.failed.get("update-result-4").copied().unwrap_or(0);
        assert!(
            progress.succeeded * 1000 >= (5_000 - hopeless) * 999,
            "{}: {} succeeded, failed {:?}",
            strategy.name(),
            progress.succeeded,
            progress.failed
        );
        assert_eq!(run.fleet.stuck, 0);
        if strategy != Strategy::Reads {
            assert!(run.campaign.devices().any(|d| d.strategy_used() == Strategy::Reads), "{}", strategy.name());
        }
    }
}

#[test]
fn commands_pause_resume_and_cancel_the_simulated_campaign() {
    // Pause at 3,700 s (the window opened at 3,600), resume at 5,000, hard
    // cancel at 5,010: upgrades started before it are cancelled through the
    // endpoint, the rest are not started.
    let path = bad_spec(|v| {
        v["commands"] = serde_json::json!([
            {"at_s": 3700, "command": "pause"},
            {"at_s": 5000, "command": "resume"},
            {"at_s": 5010, "command": "hard-cancel"}
        ])
    });
    let output = campaign(&["--spec", &path, "--json"]);
    let _ = std::fs::remove_file(&path);
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let v: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(v["cancelled"], true);
    assert_eq!(v["stuck"], 0);
    let cancelled = v["failed"]["cancelled"].as_u64().unwrap_or(0);
    let not_started = v["not_started"]["cancelled"].as_u64().unwrap_or(0);
    assert!(cancelled > 0, "running upgrades were cancelled: {v}");
    assert!(not_started > 0, "the rest never started: {v}");
    let failed: u64 = v["failed"].as_object().unwrap().values().map(|n| n.as_u64().unwrap()).sum();
    let waiting: u64 = v["not_started"].as_object().unwrap().values().map(|n| n.as_u64().unwrap()).sum();
    assert_eq!(v["succeeded"].as_u64().unwrap() + failed + waiting, 1600);
    let bad = bad_spec(|v| v["commands"] = serde_json::json!([{"at_s": 1, "command": "explode"}]));
    refused(&bad, "commands[0].command");
}

/// A byte-rate quota over pushed images: the endpoint paces each push, so
/// the image bytes sent in any second stay at the quota (within one block a
/// device: a pace lets a block go once the bytes before it fit).
#[test]
fn pushed_images_stay_within_the_byte_rate_quota() {
    let output = campaign(&["--spec", "tests/data/campaign/push_quota.json", "--json"]);
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let v: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(v["succeeded"], 3000, "{v}");
    // 200,000 B/s at 2,000 B/s a device: 100 at once.
    assert_eq!(v["max_concurrent_seen"], 100, "{v}");
    let most = v["max_bytes_in_1s"].as_u64().unwrap();
    assert!(most <= 200_000 + 100 * 1024, "{most} bytes in one second");
    // Unpaced, these conforming devices take a block every round trip
    // (about 850 kB/s for 100 of them); paced, the run takes longer.
    assert!(v["sim_duration_s"].as_f64().unwrap() > 1_500.0, "{v}");
}
