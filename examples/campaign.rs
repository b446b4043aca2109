//! Runs a whole campaign, as an operator defines it, over simulated devices:
//! the library's `Campaign` decides which upgrade starts when, the simulated
//! fleet runs each through the server endpoint.
//!
//! ```text
//! cargo run --release --example campaign -- --spec FILE [--seed K] [--json] [--devices-out FILE]
//! ```
//!
//! The spec is one JSON document (DESIGN.md, `campaign`): `files` (the
//! catalogue), `templates`, `settings` (`default`, `groups`), `devices`
//! (blocks of alike simulated devices) and `campaign` (file, groups, base URI,
//! schedule with window, quota, phases, abort). Times are simulated seconds
//! from the campaign's creation; an unknown field is an error. Without
//! `--json`: a progress bar and a summary; with it, one JSON object.
//! `--devices-out FILE` writes one JSON line per targeted device. Bad input:
//! exit status 1 and one line on stderr. Beyond DESIGN.md, the spec may hold
//! `commands`: `[{"at_s": 600, "command": "pause"}]`, each `pause`, `resume`,
//! `soft-cancel` or `hard-cancel`, given to the campaign at that time.

use std::collections::BTreeMap;
use std::io::Write as _;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use clap::Parser;
use lwm2m_fota::campaign::{
    CampaignOutput, CampaignSpec, Catalogue, Category, DeviceStatus, NewFile, Retention, SettingValue, Settings,
    SettingsTree, TaskTemplate,
};
use lwm2m_fota::model::Instant as SimInstant;
use lwm2m_fota::sim::{CampaignRun, CampaignSimConfig, Command, DeviceBlock, FleetProfile, run_campaign};
use serde::Deserialize;

/// A campaign over simulated devices.
#[derive(Parser, Debug)]
#[command(name = "campaign")]
struct Args {
    /// The campaign's spec, a JSON file.
    #[arg(long)]
    spec: String,
    /// Seed of every random choice.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// One JSON object instead of the progress bar and summary.
    #[arg(long)]
    json: bool,
    /// Writes one JSON line per targeted device to this file.
    #[arg(long)]
    devices_out: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SpecFile {
    #[serde(default)]
    files: Vec<FileSpec>,
    #[serde(default)]
    templates: BTreeMap<String, TaskTemplate>,
    #[serde(default)]
    settings: SettingsSpec,
    #[serde(default)]
    devices: Vec<BlockSpec>,
    campaign: CampaignSpec,
    /// Beyond DESIGN.md's spec: the operator's commands during the run.
    #[serde(default)]
    commands: Vec<CommandSpec>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CommandSpec {
    at_s: u64,
    command: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FileSpec {
    id: String,
    name: String,
    #[serde(default = "firmware")]
    category: String,
    #[serde(default)]
    version: Option<String>,
    size: u64,
    #[serde(default)]
    description: Option<String>,
    #[serde(default)]
    uploaded_s: u64,
    #[serde(default)]
    retention_s: Option<u64>,
}

fn firmware() -> String {
    "firmware".into()
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct SettingsSpec {
    #[serde(default)]
    default: Settings,
    #[serde(default)]
    groups: BTreeMap<String, Settings>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct BlockSpec {
    prefix: String,
    count: usize,
    #[serde(default = "conforming")]
    profile: String,
    #[serde(default)]
    groups: Vec<String>,
    #[serde(default = "old_version")]
    version: String,
    #[serde(default)]
    settings: Settings,
    #[serde(default)]
    online_after_s: u64,
    #[serde(default)]
    companion_delivers_at_s: Option<u64>,
}

fn conforming() -> String {
    "conforming".into()
}

fn old_version() -> String {
    "1.0.0".into()
}

/// Reads and checks the spec: the simulation's configuration, or the one
/// line saying what is wrong.
fn load(path: &str, seed: u64) -> Result<CampaignSimConfig, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{path}: {e}"))?;
    let spec: SpecFile = serde_json::from_str(&text).map_err(|e| format!("{path}: {e}"))?;
    let mut catalogue = Catalogue::default();
    for file in spec.files {
        let uploaded = SimInstant::ZERO + Duration::from_secs(file.uploaded_s);
        let new = NewFile {
            name: Some(file.name.clone()),
            description: file.description,
            category: Category::from(file.category),
            version: file.version,
            retention: file.retention_s.map_or(Retention::Forever, |s| Retention::For(Duration::from_secs(s))),
            ..NewFile::firmware(&file.id, &file.name, file.size)
        };
        catalogue.add(uploaded, new).map_err(|e| format!("files: {e}"))?;
    }
    let mut blocks = Vec::new();
    for (i, block) in spec.devices.into_iter().enumerate() {
        let profile = FleetProfile::from_name(&block.profile)
            .ok_or_else(|| format!("devices[{i}].profile: unknown profile {:?}", block.profile))?;
        blocks.push(DeviceBlock {
            groups: block.groups,
            settings: block.settings,
            online_after: Duration::from_secs(block.online_after_s),
            companion_delivers_at: block.companion_delivers_at_s.map(Duration::from_secs),
            ..DeviceBlock::new(&block.prefix, block.count, profile, &block.version)
        });
    }
    let tree = SettingsTree { default: spec.settings.default, groups: spec.settings.groups };
    let mut commands = Vec::new();
    for (i, c) in spec.commands.iter().enumerate() {
        let command = Command::from_name(&c.command).ok_or_else(|| {
            format!("commands[{i}].command: {:?} is not pause, resume, soft-cancel or hard-cancel", c.command)
        })?;
        commands.push((Duration::from_secs(c.at_s), command));
    }
    Ok(CampaignSimConfig { spec: spec.campaign, catalogue, templates: spec.templates, tree, blocks, seed, commands })
}

fn secs(at: Option<SimInstant>) -> serde_json::Value {
    at.map_or(serde_json::Value::Null, |t| serde_json::json!(t.as_millis() as f64 / 1000.0))
}

fn setting_json(value: &SettingValue) -> serde_json::Value {
    match value {
        SettingValue::Bool(b) => (*b).into(),
        SettingValue::Integer(n) => (*n).into(),
        SettingValue::Text(t) => t.as_str().into(),
    }
}

fn summary(run: &CampaignRun, devices: usize, wall_ms: u128) -> serde_json::Value {
    let progress = run.campaign.progress();
    let phases: Vec<_> = progress
        .phases
        .iter()
        .map(|p| {
            serde_json::json!({
                "devices": p.devices, "started_s": secs(p.started), "finished_s": secs(p.finished),
                "succeeded": p.succeeded, "failed": p.failed,
            })
        })
        .collect();
    let groups: BTreeMap<_, _> = progress
        .groups
        .iter()
        .map(|(name, g)| {
            let value = serde_json::json!({
                "devices": g.devices, "succeeded": g.succeeded, "failed": g.failed, "waiting": g.waiting,
            });
            (name.clone(), value)
        })
        .collect();
    let mut strategies: BTreeMap<&str, u64> = BTreeMap::new();
    let mut fell_back = 0;
    for record in run.campaign.devices() {
        if matches!(record.status(), DeviceStatus::Succeeded | DeviceStatus::Failed) && record.start().is_some() {
            *strategies.entry(record.strategy_used().name()).or_insert(0) += 1;
            fell_back += u64::from(record.strategy_used() != record.config().strategy);
        }
    }
    serde_json::json!({
        "devices": devices,
        "targeted": progress.targeted,
        "succeeded": progress.succeeded,
        "failed": progress.failed,
        "not_started": progress.not_started,
        "stuck": run.fleet.stuck,
        "phases": phases,
        "groups": groups,
        "paused": progress.paused.is_some(),
        "aborted": progress.aborted,
        "cancelled": progress.cancelled,
        "max_concurrent_seen": progress.max_concurrent_seen,
        "max_starts_in_60s": progress.max_starts_in_60s,
        "max_bytes_in_1s": run.max_bytes_in_1s,
        "templates": progress.templates,
        "mobile_fota": progress.mobile_fota,
        "strategies_used": strategies,
        "fell_back": fell_back,
        "downlinks": run.fleet.downlinks,
        "uplinks": run.fleet.uplinks,
        "sim_duration_s": run.sim_duration.as_secs_f64(),
        "wall_ms": wall_ms,
    })
}

fn write_devices(run: &CampaignRun, path: &str) -> std::io::Result<()> {
    let mut out = std::io::BufWriter::new(std::fs::File::create(path)?);
    for record in run.campaign.devices() {
        let outcome = match record.status() {
            DeviceStatus::Succeeded => "succeeded",
            DeviceStatus::Failed => "failed",
            _ => "not-started",
        };
        let settings: serde_json::Map<_, _> =
            record.settings().iter().map(|(k, v)| (k.clone(), setting_json(v))).collect();
        let line = serde_json::json!({
            "endpoint": record.endpoint(),
            "groups": record.groups(),
            "template": record.template().name(),
            "strategy": record.config().strategy.name(),
            "strategy_used": record.strategy_used().name(),
            "phase": record.phase(),
            "start_s": secs(record.start()),
            "end_s": secs(record.end()),
            "outcome": outcome,
            "reason": record.reason(),
            "attempts": record.attempts(),
            "downlinks": record.downlinks(),
            "uplinks": record.uplinks(),
            "settings": settings,
        });
        writeln!(out, "{line}")?;
    }
    out.flush()
}

fn print_summary(run: &CampaignRun, value: &serde_json::Value) {
    let progress = run.campaign.progress();
    println!("\ncampaign of {} over {} targeted devices", run.campaign.file().id, progress.targeted);
    println!("  succeeded {}   stuck {}", progress.succeeded, run.fleet.stuck);
    for (title, map) in [("failed", &progress.failed), ("not started", &progress.not_started)] {
        for (reason, count) in map {
            println!("  {title:<12} {count:>9}  {reason}");
        }
    }
    println!(
        "\n  {:<6} {:>9} {:>10} {:>10} {:>9} {:>7}",
        "phase", "devices", "started s", "finished s", "succeeded", "failed"
    );
    for (i, p) in progress.phases.iter().enumerate() {
        let t = |at: Option<SimInstant>| at.map_or("-".to_string(), |t| t.as_secs().to_string());
        println!(
            "  {:<6} {:>9} {:>10} {:>10} {:>9} {:>7}",
            i,
            p.devices,
            t(p.started),
            t(p.finished),
            p.succeeded,
            p.failed
        );
    }
    for (at, event) in &run.events {
        match event {
            CampaignOutput::Paused(reason) => println!("  paused at {}s: {reason:?}", at.as_secs()),
            CampaignOutput::Aborted => println!("  aborted at {}s", at.as_secs()),
            _ => {}
        }
    }
    println!(
        "\n  most at once {}   most starts in 60 s {}   most image bytes in 1 s {}   mobile FOTA {}",
        progress.max_concurrent_seen, progress.max_starts_in_60s, run.max_bytes_in_1s, progress.mobile_fota
    );
    println!("  templates {}   strategies used {}", value["templates"], value["strategies_used"]);
    println!("  simulated {:.0} s in {} ms", run.sim_duration.as_secs_f64(), value["wall_ms"]);
}

fn main() -> ExitCode {
    let args = match Args::try_parse() {
        Ok(args) => args,
        Err(e) if !e.use_stderr() => {
            let _ = e.print();
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            let text = e.to_string();
            eprintln!("campaign: {}", text.lines().next().unwrap_or("bad arguments"));
            return ExitCode::from(1);
        }
    };
    let config = match load(&args.spec, args.seed) {
        Ok(config) => config,
        Err(e) => {
            eprintln!("campaign: {}", e.lines().next().unwrap_or_default());
            return ExitCode::from(1);
        }
    };
    let devices = config.blocks.iter().fold(0usize, |sum, b| sum.saturating_add(b.count));
    let bar = (!args.json).then(|| {
        let bar = indicatif::ProgressBar::new(0);
        bar.set_style(
            indicatif::ProgressStyle::with_template("{msg:>10} [{bar:40}] {pos}/{len} {elapsed}")
                .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
                .progress_chars("=> "),
        );
        bar.set_message("upgrades");
        bar
    });
    let start = Instant::now();
    let run = run_campaign(config, |done, total| {
        if let Some(bar) = &bar {
            bar.set_length(total as u64);
            bar.set_position(done as u64);
        }
    });
    let run = match run {
        Ok(run) => run,
        Err(e) => {
            if let Some(bar) = bar {
                bar.finish_and_clear();
            }
            eprintln!("campaign: {e}");
            return ExitCode::from(1);
        }
    };
    let wall = start.elapsed().as_millis();
    if let Some(bar) = &bar {
        bar.finish();
    }
    let value = summary(&run, devices, wall);
    if let Some(path) = &args.devices_out {
        if let Err(e) = write_devices(&run, path) {
            eprintln!("campaign: {path}: {e}");
            return ExitCode::from(1);
        }
    }
    if args.json {
        println!("{value}");
    } else {
        print_summary(&run, &value);
    }
    ExitCode::SUCCESS
}
