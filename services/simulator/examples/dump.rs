//! Writes a simulated fleet as a scenario: readings (JSON Lines, arrival order) to
//! stdout and the truth file to the path given.
//!
//! usage: cargo run -p fleet-simulator --example dump -- SEED PUMPS DAYS TRUTH.json [FAULT]
//! `DUMP_CADENCE_MIN` sets the interrogation cadence in minutes (default 60).

use std::io::Write;

use chrono::{Duration, TimeZone, Utc};
use fleet_simulator::{FaultKind, FaultMix, Fleet, FleetSpec};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [seed, pumps, days, truth_path, rest @ ..] = args.as_slice() else {
        return Err("usage: dump SEED PUMPS DAYS TRUTH.json [FAULT]".into());
    };
    let start = Utc
        .with_ymd_and_hms(2026, 1, 5, 0, 0, 0)
        .single()
        .ok_or("bad start")?;
    let end = start + Duration::days(days.parse()?);
    let mut spec = FleetSpec::new(seed.parse()?, pumps.parse()?, start, end).with_name("dump");
    if let Some(name) = rest.first() {
        let kind = FaultKind::ALL
            .into_iter()
            .find(|k| k.name() == name)
            .ok_or("unknown fault")?;
        spec = spec.with_faults(FaultMix::only(kind));
    }
    if let Ok(minutes) = std::env::var("DUMP_CADENCE_MIN") {
        spec = spec.with_cadence(Duration::minutes(minutes.parse()?));
    }
    let mut fleet = Fleet::try_new(spec)?;
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    for reading in fleet.advance_until(end) {
        writeln!(out, "{}", fleet_core::json::to_json(&reading))?;
    }
    std::fs::write(truth_path, serde_json::to_string_pretty(&fleet.truth())?)?;
    Ok(())
}
