//! Runs an upgrade campaign over simulated devices, one strategy at a time or
//! all five side by side, and prints what each cost.
//!
//! ```text
//! cargo run --release --example fleet -- [--devices N] [--strategy S] [--delivery D] [--profile P] [--seed K] [--timeout S] [--json] [--advise] [--fallback]
//! ```
//!
//! S: `read`, `observe-resources`, `observe-instance`, `send`, `observe-only`,
//! or `all` (default). D: `pull` (default) or `push`. P: `conforming`, `lossy`,
//! `no-dedup`, `busy`, `rebooting`, `slow-uplink`, `no-send`, `poor`,
//! `offline` or `mixed` (default). `--timeout`: the upgrade timeout in seconds
//! (U1, default 1200, the library's). Devices are configured for LwM2M Send
//! only under `send` (as an operator configures them for S4), so `read` pays
//! the idle time between uplinks. Without `--json`: a progress bar and a table
//! per strategy; with it, one JSON object per strategy per line.
//!
//! `--advise` is the strategy advisor (B6): every profile (`mixed` included)
//! × every strategy, each pair one fleet run of `--devices` (2,000 unless
//! given; `--profile` or `--strategy`, when given, narrow it), and per profile
//! the recommended strategy with the reason. The rule: fewest failures
//! (devices − succeeded: failures, late successes and stuck tasks all count),
//! then the lowest p50 duration, then the lowest p99, then the fewest messages
//! (downlinks + uplinks), then the fewest notification and Send bytes. Without
//! `--json` a table per profile; with it one JSON object per profile per line:
//! `profile`, `recommended`, `reason`, `rule`, `devices`, `delivery`,
//! `timeout_s`, and `strategies`, an array of the objects `--json` prints per
//! strategy.
//!
//! `--fallback` turns on the adaptive strategy (C6, `UpgradeConfig::fallback`,
//! off by default): a device that refuses what the strategy needs is read
//! instead of failed; the table and the JSON then also count the devices that
//! fell back (`fell_back`).

use std::collections::BTreeMap;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use lwm2m_fota::model::Protocol;
use lwm2m_fota::server::{Delivery, Strategy, UpgradeConfig};
use lwm2m_fota::sim::{FleetConfig, FleetProfile, FleetReport, profile, run_fleet};

/// Upgrades running at once (a campaign's concurrency limit, B3): devices join
/// the simulation when their upgrade starts, so memory follows this, not the
/// fleet's size. It changes the order in which the devices draw from the
/// simulation's one random stream, so single devices fare differently, but not
/// the fleet's statistics; it changes the simulation's speed: the state of
/// 2,000 live devices (about 1 KB each) stays in the CPU's caches (measurements
/// in BENCHMARKS.md).
const CONCURRENCY: usize = 2_000;

const USAGE: &str = "usage: fleet [--devices N] [--strategy read|observe-resources|observe-instance|send|observe-only|all] [--delivery pull|push] [--profile conforming|lossy|no-dedup|busy|rebooting|slow-uplink|no-send|poor|offline|mixed] [--seed K] [--timeout S] [--json] [--advise] [--fallback]";

/// Devices per (profile, strategy) run of `--advise` unless `--devices` says.
const ADVISE_DEVICES: usize = 2_000;

/// How `--advise` ranks strategies, as printed.
const RULE: &str = "fewest failures (devices - succeeded), then lowest p50, then lowest p99, then fewest messages (downlinks + uplinks), then fewest notify bytes";

struct Args {
    devices: usize,
    strategies: Vec<Strategy>,
    delivery: Delivery,
    profile: FleetProfile,
    seed: u64,
    json: bool,
    fallback: bool,
    advise: bool,
    timeout: Duration,
    /// Given on the command line (else `--advise` takes every one).
    devices_given: bool,
    strategy_given: bool,
    profile_given: bool,
}

fn parse_args() -> Result<Args, String> {
    let mut args = Args {
        devices: 10_000,
        strategies: Strategy::ALL.to_vec(),
        delivery: Delivery::Pull,
        profile: FleetProfile::Mixed,
        seed: 1,
        json: false,
        fallback: false,
        advise: false,
        timeout: Duration::from_secs(20 * 60),
        devices_given: false,
        strategy_given: false,
        profile_given: false,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        if flag == "--json" {
            args.json = true;
            continue;
        }
        if flag == "--fallback" {
            args.fallback = true;
            continue;
        }
        if flag == "--advise" {
            args.advise = true;
            continue;
        }
        let value = it.next().ok_or_else(|| format!("{flag} needs a value; {USAGE}"))?;
        match flag.as_str() {
            "--devices" => {
                args.devices = value.parse().map_err(|_| format!("--devices {value:?}: not a number"))?;
                args.devices_given = true;
            }
            "--strategy" if value == "all" => args.strategies = Strategy::ALL.to_vec(),
            "--strategy" => {
                args.strategies = vec![Strategy::from_name(&value).ok_or(format!("--strategy {value:?}; {USAGE}"))?];
                args.strategy_given = true;
            }
            "--timeout" => {
                let seconds: u64 = value.parse().map_err(|_| format!("--timeout {value:?}: not a number"))?;
                if seconds == 0 {
                    return Err("--timeout 0: must be at least 1 s".into());
                }
                args.timeout = Duration::from_secs(seconds);
            }
            "--delivery" => {
                args.delivery = match value.as_str() {
                    "pull" => Delivery::Pull,
                    "push" => Delivery::Push,
                    _ => return Err(format!("--delivery {value:?}: pull or push")),
                }
            }
            "--profile" => {
                args.profile = FleetProfile::from_name(&value).ok_or(format!("--profile {value:?}; {USAGE}"))?;
                args.profile_given = true;
            }
            "--seed" => args.seed = value.parse().map_err(|_| format!("--seed {value:?}: not a number"))?,
            other => return Err(format!("unknown option {other}; {USAGE}")),
        }
    }
    Ok(args)
}

fn upgrade_config(strategy: Strategy, delivery: Delivery, timeout: Duration, fallback: bool) -> UpgradeConfig {
    let mut config = UpgradeConfig::new("coap://fw.example.com/images/", "device-fw-2.0.0.bin", 64 * 1024);
    config.strategy = strategy;
    config.delivery = delivery;
    config.protocol = Protocol::Coap;
    config.target_version = Some("2.0.0".into());
    config.timeout = timeout;
    config.fallback = fallback;
    config
}

fn json_line(args: &Args, profile: FleetProfile, strategy: Strategy, report: &FleetReport, wall_ms: u128) -> String {
    json_value(args, profile, strategy, report, wall_ms).to_string()
}

fn json_value(
    args: &Args,
    profile: FleetProfile,
    strategy: Strategy,
    report: &FleetReport,
    wall_ms: u128,
) -> serde_json::Value {
    let failed: BTreeMap<&str, u64> = report.failed.iter().map(|(k, v)| (k.as_str(), *v)).collect();
    let mut line = serde_json::json!({
        "strategy": strategy.name(),
        "delivery": args.delivery.name(),
        "profile": profile.name(),
        "devices": report.devices,
        "succeeded": report.succeeded,
        "failed": failed,
        "late_succeeded": report.late_succeeded,
        "stuck": report.stuck,
        "downlinks": report.downlinks,
        "uplinks": report.uplinks,
        "notify_bytes": report.notify_bytes,
        "sim_duration_s": { "p50": report.durations.p50, "p99": report.durations.p99, "max": report.durations.max },
        "wall_ms": wall_ms,
        "task_bytes": report.task_bytes,
    });
    // Only with --fallback: the output without it stays as it was.
    if args.fallback {
        line["fallback"] = true.into();
        line["fell_back"] = report.fell_back.into();
    }
    line
}

fn table(args: &Args, rows: &[(Strategy, FleetReport, u128)]) {
    println!(
        "\n{} devices, profile {}, delivery {}, seed {}, at most {} upgrades at once\n",
        args.devices,
        args.profile.name(),
        args.delivery.name(),
        args.seed,
        CONCURRENCY
    );
    println!(
        "{:<18} {:>9} {:>8} {:>6} {:>10} {:>10} {:>12} {:>9} {:>9} {:>9} {:>8}",
        "strategy",
        "succeeded",
        "failed",
        "stuck",
        "downlinks",
        "uplinks",
        "notify bytes",
        "p50 s",
        "p99 s",
        "max s",
        "wall ms"
    );
    for (strategy, r, wall) in rows {
        let failed: u64 = r.failed.values().sum();
        println!(
            "{:<18} {:>9} {:>8} {:>6} {:>10} {:>10} {:>12} {:>9.0} {:>9.0} {:>9.0} {:>8}",
            strategy.name(),
            r.succeeded,
            failed,
            r.stuck,
            r.downlinks,
            r.uplinks,
            r.notify_bytes,
            r.durations.p50,
            r.durations.p99,
            r.durations.max,
            wall
        );
    }
    println!("\nfailures by reason:");
    for (strategy, r, _) in rows {
        if r.failed.is_empty() {
            continue;
        }
        let reasons: Vec<String> = r.failed.iter().map(|(k, v)| format!("{k} {v}")).collect();
        println!("  {:<18} {}", strategy.name(), reasons.join(", "));
    }
    for (strategy, r, _) in rows {
        if r.late_succeeded.is_empty() {
            continue;
        }
        let reasons: Vec<String> = r.late_succeeded.iter().map(|(k, v)| format!("after {k} {v}")).collect();
        println!("  {:<18} late successes: {}", strategy.name(), reasons.join(", "));
    }
    if args.fallback {
        println!("\nfallback on (C6): devices that fell back to reads:");
        for (strategy, r, _) in rows {
            println!("  {:<18} {}", strategy.name(), r.fell_back);
        }
    }
    if let Some((_, r, _)) = rows.first() {
        println!("\none task's state: {} bytes", r.task_bytes);
    }
}

/// One fleet run of `devices` devices under `profile` and `strategy`, with a
/// progress bar when `bar` (and the run is long): the report and the wall time.
fn run_one(args: &Args, profile: FleetProfile, strategy: Strategy, devices: usize, bar: bool) -> (FleetReport, u128) {
    let config = FleetConfig {
        devices,
        profile,
        upgrade: Arc::new(upgrade_config(strategy, args.delivery, args.timeout, args.fallback)),
        initial_version: "1.0.0".into(),
        seed: args.seed,
        concurrency: CONCURRENCY,
    };
    let bar = (bar && devices >= 1000).then(|| {
        let bar = indicatif::ProgressBar::new(devices as u64);
        bar.set_style(
            indicatif::ProgressStyle::with_template("{msg:>18} [{bar:40}] {pos}/{len} {elapsed}")
                .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
                .progress_chars("=> "),
        );
        bar.set_message(strategy.name());
        bar.enable_steady_tick(Duration::from_millis(200));
        bar
    });
    let start = Instant::now();
    let report = run_fleet(config, |done, _| {
        if let Some(bar) = &bar {
            bar.set_position(done as u64);
        }
    });
    let wall = start.elapsed().as_millis();
    if let Some(bar) = bar {
        bar.finish();
    }
    (report, wall)
}

/// Upgrades that did not succeed: failures, late successes and stuck tasks.
fn failures(r: &FleetReport) -> u64 {
    (r.devices as u64).saturating_sub(r.succeeded)
}

fn messages(r: &FleetReport) -> u64 {
    r.downlinks + r.uplinks
}

/// The ranking of [`RULE`]: smaller is better.
fn rank(a: &FleetReport, b: &FleetReport) -> std::cmp::Ordering {
    failures(a)
        .cmp(&failures(b))
        .then(a.durations.p50.total_cmp(&b.durations.p50))
        .then(a.durations.p99.total_cmp(&b.durations.p99))
        .then(messages(a).cmp(&messages(b)))
        .then(a.notify_bytes.cmp(&b.notify_bytes))
}

/// The recommended strategy of `rows` (ranked by [`RULE`]) and why: what set
/// it apart from the next best.
fn recommend(rows: &[(Strategy, FleetReport, u128)]) -> (Strategy, String) {
    let mut order: Vec<&(Strategy, FleetReport, u128)> = rows.iter().collect();
    order.sort_by(|a, b| rank(&a.1, &b.1));
    let (best, r, _) = order[0];
    let mut reason = format!("fewest failures: {} of {}", failures(r), r.devices);
    if r.succeeded == 0 {
        reason.push_str(" (no strategy upgrades any device: raise --timeout, or these devices need mobile FOTA)");
    }
    let Some((next, n, _)) = order.get(1) else { return (*best, reason) };
    let tied: Vec<&str> =
        order.iter().skip(1).filter(|row| failures(&row.1) == failures(r)).map(|row| row.0.name()).collect();
    if failures(n) != failures(r) {
        reason.push_str(&format!("; next best {} fails {}", next.name(), failures(n)));
        return (*best, reason);
    }
    reason.push_str(&format!(", tied with {}", tied.join(", ")));
    let (p, q) = (&r.durations, &n.durations);
    if p.p50 != q.p50 {
        reason.push_str(&format!("; then lowest p50: {:.1} s (next {} {:.1} s)", p.p50, next.name(), q.p50));
    } else if p.p99 != q.p99 {
        reason.push_str(&format!("; p50 tied; then lowest p99: {:.1} s (next {} {:.1} s)", p.p99, next.name(), q.p99));
    } else if messages(r) != messages(n) {
        reason.push_str(&format!(
            "; p50 and p99 tied; then fewest messages: {} (next {} {})",
            messages(r),
            next.name(),
            messages(n)
        ));
    } else if r.notify_bytes != n.notify_bytes {
        reason.push_str(&format!(
            "; time and messages tied; then fewest notify bytes: {} (next {} {})",
            r.notify_bytes,
            next.name(),
            n.notify_bytes
        ));
    } else {
        reason.push_str("; every figure tied: the first in the order strategies are listed");
    }
    (*best, reason)
}

fn advise(args: &Args) {
    let devices = if args.devices_given { args.devices } else { ADVISE_DEVICES };
    let profiles: Vec<FleetProfile> = if args.profile_given {
        vec![args.profile]
    } else {
        profile::PROFILES.iter().map(|p| FleetProfile::Uniform(*p)).chain([FleetProfile::Mixed]).collect()
    };
    let strategies = if args.strategy_given { args.strategies.clone() } else { Strategy::ALL.to_vec() };
    if !args.json {
        println!(
            "strategy advisor: {} devices per run, delivery {}, seed {}, upgrade timeout {} s",
            devices,
            args.delivery.name(),
            args.seed,
            args.timeout.as_secs()
        );
        println!("rule: {RULE}");
    }
    for profile in profiles {
        let rows: Vec<(Strategy, FleetReport, u128)> = strategies
            .iter()
            .map(|&strategy| {
                let (report, wall) = run_one(args, profile, strategy, devices, false);
                (strategy, report, wall)
            })
            .collect();
        let (best, reason) = recommend(&rows);
        if args.json {
            let per: Vec<serde_json::Value> =
                rows.iter().map(|(s, r, w)| json_value(args, profile, *s, r, *w)).collect();
            let line = serde_json::json!({
                "profile": profile.name(),
                "recommended": best.name(),
                "reason": reason,
                "rule": RULE,
                "devices": devices,
                "delivery": args.delivery.name(),
                "timeout_s": args.timeout.as_secs(),
                "strategies": per,
            });
            println!("{line}");
            continue;
        }
        println!("\nprofile {}", profile.name());
        println!(
            "  {:<18} {:>9} {:>8} {:>9} {:>9} {:>10} {:>12}  failures by reason",
            "strategy", "succeeded", "failures", "p50 s", "p99 s", "messages", "notify bytes"
        );
        for (strategy, r, _) in &rows {
            let reasons: Vec<String> = r
                .failed
                .iter()
                .map(|(k, v)| format!("{k} {v}"))
                .chain(r.late_succeeded.iter().map(|(k, v)| format!("late success after {k} {v}")))
                .collect();
            println!(
                "{} {:<18} {:>9} {:>8} {:>9.1} {:>9.1} {:>10} {:>12}  {}",
                if *strategy == best { "*" } else { " " },
                strategy.name(),
                r.succeeded,
                failures(r),
                r.durations.p50,
                r.durations.p99,
                messages(r),
                r.notify_bytes,
                reasons.join(", ")
            );
        }
        println!("  recommended: {} ({reason})", best.name());
    }
}

fn main() -> ExitCode {
    let args = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::FAILURE;
        }
    };
    if args.advise {
        advise(&args);
        return ExitCode::SUCCESS;
    }
    let mut rows = Vec::new();
    for &strategy in &args.strategies {
        let (report, wall) = run_one(&args, args.profile, strategy, args.devices, !args.json);
        if args.json {
            println!("{}", json_line(&args, args.profile, strategy, &report, wall));
        }
        rows.push((strategy, report, wall));
    }
    if !args.json {
        table(&args, &rows);
    }
    ExitCode::SUCCESS
}
