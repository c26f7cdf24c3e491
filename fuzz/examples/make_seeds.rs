//! Writes the committed seed corpora under `fuzz/seeds/` from the shared scenario files
//! and the registry examples, so they can be remade after a change of the contract:
//!
//!     cd fuzz && cargo run --example make_seeds
//!
//! A small spread rather than everything: one reading per event type and shape (with
//! and without flow sensors, several events, none), in snake_case and lowerCamelCase
//! JSON, and the same readings as protobuf; an alarm event of each state; the local
//! stack's registry and a registry using every optional key. libFuzzer finds the rest.

use std::collections::BTreeSet;
use std::fs;
use std::io::{BufRead, BufReader};
use std::path::Path;

use fleet_core::{
    AlarmEvent, AlarmKind, AlarmPriority, AlarmState, Evidence, Reading, json, protobuf,
};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let data = root.join("../services/core/tests/data");
    let seeds = root.join("seeds");

    let mut picked: Vec<Reading> = Vec::new();
    let mut shapes = BTreeSet::new();
    for file in ["smoke.readings.jsonl.gz", "standard.readings.jsonl.gz"] {
        let gz = flate2::read::GzDecoder::new(fs::File::open(data.join(file))?);
        for line in BufReader::new(gz).lines() {
            let reading = json::parse_reading(&line?)?;
            let mut types: Vec<&str> = reading.events.iter().map(|e| e.type_name()).collect();
            types.dedup();
            let shape = (
                reading.model.clone(),
                reading.catheter_pressure_kpa.is_some(),
                types.join("+"),
            );
            if shapes.insert(shape) && picked.len() < 40 {
                picked.push(reading);
            }
        }
    }

    let json_dir = seeds.join("json_reading");
    let pb_dir = seeds.join("protobuf_reading");
    for dir in [&json_dir, &pb_dir] {
        fs::create_dir_all(dir)?;
    }
    for (i, reading) in picked.iter().enumerate() {
        let text = json::to_json(reading);
        fs::write(json_dir.join(format!("reading-{i:02}.json")), &text)?;
        fs::write(
            pb_dir.join(format!("reading-{i:02}.pb")),
            protobuf::encode_reading(reading),
        )?;
        if i < 4 {
            fs::write(
                json_dir.join(format!("reading-{i:02}-camel.json")),
                camel_case(&text),
            )?;
        }
    }
    // proto3 JSON's other spellings: 64-bit integers and numbers as strings, prefixed
    // enum names, and a reading that decodes but does not validate.
    let first = json::to_json(&picked[0]);
    let seq = format!("\"seq\":{}", picked[0].seq);
    fs::write(
        json_dir.join("proto3-strings.json"),
        first
            .replace(&seq, &format!("\"seq\":\"{}\"", picked[0].seq))
            .replace("\"battery_v\":", "\"battery_v\":\"")
            .replace(",\"battery_pct\"", "\",\"battery_pct\"")
            .replace("\"type\":\"", "\"type\":\"EVENT_TYPE_"),
    )?;
    fs::write(
        json_dir.join("invalid-values.json"),
        first
            .replace("\"pump_id\":\"", "\"pump_id\":\" ")
            .replace("\"temperature_c\":", "\"temperature_c\":\"NaN\",\"x\":"),
    )?;

    let at = picked[0].measured_at;
    for (i, state) in [AlarmState::Raised, AlarmState::Updated, AlarmState::Cleared]
        .into_iter()
        .enumerate()
    {
        let alarm = AlarmEvent {
            alarm_id: format!("{}:OCCLUSION:1", picked[0].pump_id),
            revision: i as u32 + 1,
            pump_id: picked[0].pump_id.clone(),
            kind: AlarmKind::Occlusion,
            priority: AlarmPriority::High,
            state,
            detected_at: at,
            onset_at: (i > 0).then_some(at),
            message: "catheter occlusion suspected".into(),
            evidence: [
                ("catheter_pressure_kpa".to_owned(), Evidence::from(41.5)),
                ("rule".to_owned(), Evidence::from("pressure_rise")),
            ]
            .into_iter()
            .collect(),
        };
        fs::write(
            pb_dir.join(format!("alarm-{i}.pb")),
            protobuf::encode_alarm(&alarm),
        )?;
    }

    let reg_dir = seeds.join("registry_toml");
    fs::create_dir_all(&reg_dir)?;
    fs::copy(
        root.join("../deploy/local/registry.toml"),
        reg_dir.join("local-stack.toml"),
    )?;
    fs::write(reg_dir.join("every-key.toml"), EVERY_KEY)?;
    println!(
        "{} readings (json + protobuf), 3 alarms, 2 registries into {}",
        picked.len(),
        seeds.display()
    );
    Ok(())
}

/// The lowerCamelCase names proto3 JSON also allows.
fn camel_case(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut in_key = false;
    let mut upper = false;
    for c in text.chars() {
        match c {
            '"' if !in_key && matches!(out.chars().last(), Some('{' | ',')) => {
                in_key = true;
                out.push(c);
            }
            '"' if in_key => {
                in_key = false;
                out.push(c);
            }
            '_' if in_key => upper = true,
            c if upper => {
                out.extend(c.to_uppercase());
                upper = false;
            }
            c => out.push(c),
        }
    }
    out
}

const EVERY_KEY: &str = r#"# Every key the registry reads, optional ones included.
[[clinic]]
id = "clinic-001"
name = "Northside Pain Center"
webhook = "https://clinic-001.example/alarms"
escalation_after = "15m 30s"
escalation_webhook = "https://on-call.example/alarms"
fallback_webhook = "http://127.0.0.1:50079"
signing_secret = "0123456789abcdef-northside"

[[clinic]]
id = "clinic-002"
name = 'Riverside "Spasticity" Clinic'
webhook = "http://127.0.0.1:50072"
escalation_after = "1h"

[[pump]]
pump_id = "ITP40-100002"
gateway_id = "gw-100002"
clinic_id = "clinic-001"

[[pump]]
pump_id = "ITV20-100009"
gateway_id = "gw-100009"
clinic_id = "clinic-002"
"#;
