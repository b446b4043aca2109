//! Decode or encode one LwM2M payload from the command line.
//!
//! ```text
//! cargo run --release --example inspect -- decode --format F --path P [--hex HEX]   # else bytes on stdin
//! cargo run --release --example inspect -- encode --format F --path P              # JSON on stdin, hex out
//! ```
//!
//! F is a format name (`tlv`, `senml-cbor`, `senml-json`, `lwm2m-cbor`,
//! `lwm2m-json`, `text`, `opaque`, `cbor`) or its Content-Format number (11542,
//! 112, 110, 11544, 11543, 0, 42, 60). P is the request path the payload answers
//! (`/3`, `/5/0`, `/5/0/3`, `/3/0/6/1`, `/` for Send and composite payloads).
//!
//! `decode` prints one JSON array sorted by path of `{"path", "type", "value"}`
//! (plus `"time"` for SenML records that carry one); `encode` reads such an array
//! and prints the payload as lowercase hex. Bad input exits with status 1 and one
//! line on stderr saying what and where.

use std::io::{Read, Write};
use std::process::ExitCode;

use lwm2m_fota::codec::{self, DecodeOptions};
use lwm2m_fota::model::{ContentFormat, Path, Registry};

#[path = "support/records_json.rs"]
mod records_json;

const USAGE: &str = "usage: inspect decode --format F --path P [--hex HEX]  |  inspect encode --format F --path P";

struct Args {
    command: String,
    format: ContentFormat,
    path: Path,
    hex: Option<String>,
}

fn parse_args() -> Result<Args, String> {
    let mut args = std::env::args().skip(1);
    let command = args.next().ok_or(USAGE)?;
    if command != "decode" && command != "encode" {
        return Err(format!("unknown command {command:?}; {USAGE}"));
    }
    let (mut format, mut path, mut hex) = (None, None, None);
    while let Some(flag) = args.next() {
        let value = args.next().ok_or_else(|| format!("{flag} needs a value"))?;
        match flag.as_str() {
            "--format" => {
                format = Some(value.parse::<ContentFormat>().map_err(|e| format!("--format {value:?}: {e}"))?)
            }
            "--path" => path = Some(value.parse::<Path>().map_err(|e| format!("--path {value:?}: {e}"))?),
            "--hex" if command == "decode" => hex = Some(value),
            other => return Err(format!("unknown option {other}; {USAGE}")),
        }
    }
    Ok(Args { command, format: format.ok_or("--format is required")?, path: path.ok_or("--path is required")?, hex })
}

fn run() -> Result<String, String> {
    let args = parse_args()?;
    let registry = Registry::default();
    if args.command == "decode" {
        let payload = match &args.hex {
            Some(hex) => records_json::unhex(hex).map_err(|e| format!("--hex: {e}"))?,
            None => {
                let mut bytes = Vec::new();
                std::io::stdin().read_to_end(&mut bytes).map_err(|e| format!("reading stdin: {e}"))?;
                bytes
            }
        };
        let records = codec::decode(args.format, &args.path, &payload, &registry, &DecodeOptions::default())
            .map_err(|e| format!("{} decode error: {e}", args.format))?;
        Ok(records_json::records_to_json(&records).to_string())
    } else {
        let mut text = String::new();
        std::io::stdin().read_to_string(&mut text).map_err(|e| format!("reading stdin: {e}"))?;
        let json: serde_json::Value = serde_json::from_str(&text)
            .map_err(|e| format!("invalid JSON at line {} column {}: {e}", e.line(), e.column()))?;
        let records = records_json::records_from_json(&json)?;
        let mut payload = Vec::new();
        codec::encode(args.format, &args.path, &records, &registry, &mut payload)
            .map_err(|e| format!("{} encode error: {e}", args.format))?;
        Ok(records_json::hex(&payload))
    }
}

fn main() -> ExitCode {
    match run() {
        Ok(output) => {
            let mut stdout = std::io::stdout().lock();
            // A closed stdout (e.g. `| head`) is not worth a panic.
            let _ = writeln!(stdout, "{output}");
            ExitCode::SUCCESS
        }
        Err(message) => {
            eprintln!("error: {message}");
            ExitCode::FAILURE
        }
    }
}
