//! Runs an upgrade campaign over simulated devices, one strategy at a time or
//! all five side by side, and prints what each cost.
//!
//! ```text
//! cargo run --release --example fleet -- [--devices N] [--strategy S] [--delivery D] [--profile P] [--seed K] [--json] [--fallback]
//! ```
//!
//! S: `read`, `observe-resources`, `observe-instance`, `send`, `observe-only`,
//! or `all` (default). D: `pull` (default) or `push`. P: `conforming`, `lossy`,
//! `rebooting`, `slow-uplink`, `no-send`, `poor` or `mixed` (default). Without
//! `--json`: a progress bar and a table per strategy; with it, one JSON object
//! per strategy per line. `--fallback` turns on the adaptive strategy (C6,
//! `UpgradeConfig::fallback`, off by default): a device that refuses what the
//! strategy needs is read instead of failed; the table and the JSON then also
//! count the devices that fell back (`fell_back`).

use std::collections::BTreeMap;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use lwm2m_fota::model::Protocol;
use lwm2m_fota::server::{Delivery, Strategy, UpgradeConfig};
use lwm2m_fota::sim::{FleetConfig, FleetProfile, FleetReport, run_fleet};

/// Upgrades running at once (a campaign's concurrency limit, B3): devices join
/// the simulation when their upgrade starts, so memory follows this, not the
/// fleet's size. It changes the order in which the devices draw from the
/// simulation's one random stream, so single devices fare differently, but not
/// the fleet's statistics; it changes the simulation's speed: the state of
/// 2,000 live devices (about 1 KB each) stays in the CPU's caches (measurements
/// in BENCHMARKS.md).
const CONCURRENCY: usize = 2_000;

const USAGE: &str = "usage: fleet [--devices N] [--strategy read|observe-resources|observe-instance|send|observe-only|all] [--delivery pull|push] [--profile conforming|lossy|rebooting|slow-uplink|no-send|poor|mixed] [--seed K] [--json] [--fallback]";

struct Args {
    devices: usize,
    strategies: Vec<Strategy>,
    delivery: Delivery,
    profile: FleetProfile,
    seed: u64,
    json: bool,
    fallback: bool,
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
        let value = it.next().ok_or_else(|| format!("{flag} needs a value; {USAGE}"))?;
        match flag.as_str() {
            "--devices" => args.devices = value.parse().map_err(|_| format!("--devices {value:?}: not a number"))?,
            "--strategy" if value == "all" => args.strategies = Strategy::ALL.to_vec(),
            "--strategy" => {
                args.strategies = vec![Strategy::from_name(&value).ok_or(format!("--strategy {value:?}; {USAGE}"))?]
            }
            "--delivery" => {
                args.delivery = match value.as_str() {
                    "pull" => Delivery::Pull,
                    "push" => Delivery::Push,
                    _ => return Err(format!("--delivery {value:?}: pull or push")),
                }
            }
            "--profile" => {
                args.profile = FleetProfile::from_name(&value).ok_or(format!("--profile {value:?}; {USAGE}"))?
            }
            "--seed" => args.seed = value.parse().map_err(|_| format!("--seed {value:?}: not a number"))?,
            other => return Err(format!("unknown option {other}; {USAGE}")),
        }
    }
    Ok(args)
}

fn upgrade_config(strategy: Strategy, delivery: Delivery, fallback: bool) -> UpgradeConfig {
    let mut config = UpgradeConfig::new("coap://fw.example.com/images/", "device-fw-2.0.0.bin", 64 * 1024);
    config.strategy = strategy;
    config.delivery = delivery;
    config.protocol = Protocol::Coap;
    config.target_version = Some("2.0.0".into());
    config.fallback = fallback;
    config
}

fn json_line(args: &Args, strategy: Strategy, report: &FleetReport, wall_ms: u128) -> String {
    let failed: BTreeMap<&str, u64> = report.failed.iter().map(|(k, v)| (k.as_str(), *v)).collect();
    let mut line = serde_json::json!({
        "strategy": strategy.name(),
        "delivery": args.delivery.name(),
        "profile": args.profile.name(),
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
    line.to_string()
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

fn main() -> ExitCode {
    let args = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::FAILURE;
        }
    };
    let mut rows = Vec::new();
    for &strategy in &args.strategies {
        let config = FleetConfig {
            devices: args.devices,
            profile: args.profile,
            upgrade: Arc::new(upgrade_config(strategy, args.delivery, args.fallback)),
            initial_version: "1.0.0".into(),
            seed: args.seed,
            concurrency: CONCURRENCY,
        };
        let bar = (!args.json && args.devices >= 1000).then(|| {
            let bar = indicatif::ProgressBar::new(args.devices as u64);
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
        if args.json {
            println!("{}", json_line(&args, strategy, &report, wall));
        }
        rows.push((strategy, report, wall));
    }
    if !args.json {
        table(&args, &rows);
    }
    ExitCode::SUCCESS
}
