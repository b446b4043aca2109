//! The JSON form of decoded records shared by the `inspect` example and the
//! vector tests: `[{"path": "/3/0/0", "type": "string", "value": "…"}]`, sorted by
//! path, with `"time"` for records that carry one.

use std::borrow::Cow;

use lwm2m_fota::model::{ObjectLink, Path, Record, Value};
use serde_json::{Map, Value as Json, json};

/// Records as the JSON array `inspect decode` prints, sorted by path (records
/// with the same path keep their payload order).
pub fn records_to_json(records: &[Record<'_>]) -> Json {
    let mut sorted: Vec<&Record<'_>> = records.iter().collect();
    sorted.sort_by_key(|r| r.path);
    Json::Array(sorted.into_iter().map(record_to_json).collect())
}

fn record_to_json(record: &Record<'_>) -> Json {
    let (kind, value) = match &record.value {
        Value::Integer(v) => ("integer", json!(v)),
        Value::UnsignedInteger(v) => ("unsigned", json!(v)),
        Value::Float(v) => ("float", json!(v)),
        Value::Boolean(v) => ("boolean", json!(v)),
        Value::String(v) => ("string", json!(v)),
        Value::Opaque(v) => ("opaque", json!(hex(v))),
        Value::Time(v) => ("time", json!(v)),
        Value::Objlnk(v) => ("objlnk", json!(v.to_string())),
        Value::Corelnk(v) => ("corelnk", json!(v)),
        _ => ("unknown", Json::Null),
    };
    let mut object = Map::new();
    object.insert("path".into(), json!(record.path.to_string()));
    object.insert("type".into(), json!(kind));
    object.insert("value".into(), value);
    if let Some(time) = record.time {
        // Integral times print as integers, others as floats.
        let time = if time.fract() == 0.0 && time.abs() < 9.0e15 { json!(time as i64) } else { json!(time) };
        object.insert("time".into(), time);
    }
    Json::Object(object)
}

/// Lowercase hex.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Bytes from hex (either case); the error names the offending character's index.
pub fn unhex(text: &str) -> Result<Vec<u8>, String> {
    let text = text.trim();
    if text.len() % 2 != 0 {
        return Err(format!("hex has an odd number of digits ({})", text.len()));
    }
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&text[i..i + 2], 16).map_err(|_| format!("invalid hex digit at character {i}")))
        .collect()
}

/// Records from the JSON array `inspect encode` reads.
pub fn records_from_json(json: &Json) -> Result<Vec<Record<'static>>, String> {
    let items = json.as_array().ok_or("expected a JSON array of records")?;
    items.iter().enumerate().map(|(i, item)| record_from_json(item).map_err(|e| format!("record {i}: {e}"))).collect()
}

fn record_from_json(item: &Json) -> Result<Record<'static>, String> {
    let path: Path = item
        .get("path")
        .and_then(Json::as_str)
        .ok_or("missing \"path\" string")?
        .parse()
        .map_err(|e| format!("path: {e}"))?;
    let kind = item.get("type").and_then(Json::as_str).ok_or("missing \"type\" string")?;
    let value = item.get("value").ok_or("missing \"value\"")?;
    let bad = || format!("value does not fit type {kind}");
    let value = match kind {
        "integer" => Value::Integer(value.as_i64().ok_or_else(bad)?),
        "unsigned" => Value::UnsignedInteger(value.as_u64().ok_or_else(bad)?),
        "float" => Value::Float(value.as_f64().ok_or_else(bad)?),
        "boolean" => Value::Boolean(value.as_bool().ok_or_else(bad)?),
        "string" => Value::String(Cow::Owned(value.as_str().ok_or_else(bad)?.to_owned())),
        "corelnk" => Value::Corelnk(Cow::Owned(value.as_str().ok_or_else(bad)?.to_owned())),
        "opaque" => Value::Opaque(Cow::Owned(unhex(value.as_str().ok_or_else(bad)?)?)),
        "time" => Value::Time(value.as_i64().ok_or_else(bad)?),
        "objlnk" => Value::Objlnk(value.as_str().ok_or_else(bad)?.parse::<ObjectLink>().map_err(|e| e.to_string())?),
        other => return Err(format!("unknown type {other:?}")),
    };
    let time = match item.get("time") {
        None | Some(Json::Null) => None,
        Some(t) => Some(t.as_f64().ok_or("\"time\" must be a number")?),
    };
    Ok(Record { path, value, time })
}
