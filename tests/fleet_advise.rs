//! examples/fleet --advise: every profile × every strategy, one JSON object
//! per profile, each recommending a strategy with the fewest failures.
mod common;

use std::process::Command;

const STRATEGIES: [&str; 5] = ["read", "observe-resources", "observe-instance", "send", "observe-only"];
const PROFILES: [&str; 10] =
    ["conforming", "lossy", "no-dedup", "busy", "rebooting", "slow-uplink", "no-send", "poor", "offline", "mixed"];

#[test]
fn advise_recommends_a_strategy_with_the_fewest_failures_for_every_profile() {
    let output = Command::new(common::example_binary("fleet"))
        .args(["--advise", "--json", "--devices", "40", "--seed", "3"])
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let lines: Vec<serde_json::Value> = String::from_utf8(output.stdout)
        .unwrap()
        .lines()
        .map(|line| serde_json::from_str(line).expect("one JSON object per line"))
        .collect();
    let profiles: Vec<&str> = lines.iter().map(|l| l["profile"].as_str().unwrap()).collect();
    assert_eq!(profiles, PROFILES);
    for line in &lines {
        let profile = line["profile"].as_str().unwrap();
        assert!(line["reason"].as_str().is_some_and(|r| !r.is_empty()), "{profile}: {line}");
        assert!(line["rule"].as_str().is_some_and(|r| r.starts_with("fewest failures")), "{profile}");
        let per = line["strategies"].as_array().unwrap();
        let names: Vec<&str> = per.iter().map(|s| s["strategy"].as_str().unwrap()).collect();
        assert_eq!(names, STRATEGIES, "{profile}");
        let mut fewest = u64::MAX;
        let mut failures = std::collections::BTreeMap::new();
        for s in per {
            // The figures of the fleet's own JSON lines.
            for key in ["delivery", "profile", "devices", "succeeded", "failed", "stuck", "downlinks", "uplinks"] {
                assert!(s.get(key).is_some(), "{profile}: {key} missing in {s}");
            }
            for key in ["notify_bytes", "wall_ms", "task_bytes"] {
                assert!(s[key].is_u64(), "{profile}: {key} in {s}");
            }
            for q in ["p50", "p99", "max"] {
                assert!(s["sim_duration_s"][q].is_number(), "{profile}: sim_duration_s.{q} in {s}");
            }
            assert_eq!(s["profile"], profile);
            assert_eq!(s["devices"], 40);
            assert_eq!(s["stuck"], 0, "{profile}: {s}");
            let failed = s["devices"].as_u64().unwrap() - s["succeeded"].as_u64().unwrap();
            fewest = fewest.min(failed);
            failures.insert(s["strategy"].as_str().unwrap().to_string(), failed);
        }
        let recommended = line["recommended"].as_str().unwrap();
        assert_eq!(failures.get(recommended), Some(&fewest), "{profile}: {recommended} of {failures:?}");
    }
    // The trade-offs the reference documents: a poor device only upgrades
    // with reads; a device that never sends not under Send.
    let of = |p: &str| lines.iter().find(|l| l["profile"] == p).unwrap()["recommended"].clone();
    assert_eq!(of("poor"), "read");
    assert_ne!(of("no-send"), "send");
}

#[test]
fn reads_only_pays_the_idle_time_observations_remove() {
    let output = Command::new(common::example_binary("fleet"))
        .args(["--json", "--devices", "100", "--profile", "conforming"])
        .output()
        .unwrap();
    assert!(output.status.success());
    let p50 = |strategy: &str| {
        let text = String::from_utf8_lossy(&output.stdout);
        let line = text.lines().find(|l| l.contains(&format!("\"strategy\":\"{strategy}\""))).unwrap();
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        v["sim_duration_s"]["p50"].as_f64().unwrap()
    };
    for strategy in ["observe-resources", "observe-instance", "send", "observe-only"] {
        assert!(p50("read") > 2.0 * p50(strategy), "read {} vs {strategy} {}", p50("read"), p50(strategy));
    }
}
