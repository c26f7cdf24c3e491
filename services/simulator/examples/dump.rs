//! Writes a simulated fleet as a scenario: readings (JSON Lines, arrival order) to
//! stdout and the truth file to the path given.
//!
//! usage: cargo run -p fleet-simulator --example dump -- SEED PUMPS DAYS TRUTH.json [FAULT]
//!
//! Environment (each optional; defaults are the simulator's defaults):
//!
//! - `DUMP_CADENCE_MIN`: interrogation cadence in minutes (default 60);
//! - `DUMP_NOISE`: sensor noise scale (default 1; 0 to 5);
//! - `DUMP_RATE_RANGE`: programmed rates drawn, `MIN,MAX` in mL/day (default 0.3,1.6);
//! - `DUMP_MODELS`: pump models, comma-separated, equally likely (e.g. `ITV-20,ITV-40`;
//!   default the realistic mix of all four);
//! - `DUMP_FAULT_SCALE`: fault size scale (default 1; 0.25 to 4).

use std::io::Write;

use chrono::{Duration, TimeZone, Utc};
use fleet_simulator::{FaultKind, FaultMix, Fleet, FleetSpec, ModelMix, SpecError};

const USAGE: &str = "usage: dump SEED PUMPS DAYS TRUTH.json [FAULT]";

/// The value of an environment variable, if set; an error naming it if not Unicode.
fn env(name: &str) -> Result<Option<String>, String> {
    match std::env::var(name) {
        Ok(value) => Ok(Some(value)),
        Err(std::env::VarError::NotPresent) => Ok(None),
        Err(std::env::VarError::NotUnicode(_)) => Err(format!("{name}: not valid UTF-8")),
    }
}

/// A number from an argument or a variable, with an error that names it.
fn number<T: std::str::FromStr>(name: &str, text: &str) -> Result<T, String>
where
    T::Err: std::fmt::Display,
{
    text.trim()
        .parse()
        .map_err(|e| format!("{name}: {text:?} is not a valid number ({e})"))
}

/// Applies the `DUMP_*` variables to the spec; the error names the variable.
fn apply_env(mut spec: FleetSpec) -> Result<FleetSpec, String> {
    if let Some(text) = env("DUMP_CADENCE_MIN")? {
        let minutes: i64 = number("DUMP_CADENCE_MIN", &text)?;
        if minutes < 1 {
            return Err(format!(
                "DUMP_CADENCE_MIN: {minutes} is not a positive number of minutes"
            ));
        }
        spec = spec.with_cadence(Duration::minutes(minutes));
    }
    if let Some(text) = env("DUMP_NOISE")? {
        spec = spec.with_noise_scale(number("DUMP_NOISE", &text)?);
    }
    if let Some(text) = env("DUMP_RATE_RANGE")? {
        let Some((min, max)) = text.split_once(',') else {
            return Err(format!(
                "DUMP_RATE_RANGE: {text:?} is not MIN,MAX in mL/day"
            ));
        };
        spec = spec.with_rate_range(
            number("DUMP_RATE_RANGE", min)?,
            number("DUMP_RATE_RANGE", max)?,
        );
    }
    if let Some(text) = env("DUMP_MODELS")? {
        let models: Vec<&str> = text.split(',').filter(|m| !m.trim().is_empty()).collect();
        let mix = ModelMix::only(&models).map_err(|e| format!("DUMP_MODELS: {e}"))?;
        spec = spec.with_models(mix);
    }
    if let Some(text) = env("DUMP_FAULT_SCALE")? {
        spec = spec.with_fault_scale(number("DUMP_FAULT_SCALE", &text)?);
    }
    Ok(spec)
}

fn main() -> std::process::ExitCode {
    match run() {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("dump: {e}");
            std::process::ExitCode::from(2)
        }
    }
}

fn run() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [seed, pumps, days, truth_path, rest @ ..] = args.as_slice() else {
        return Err(USAGE.into());
    };
    let start = Utc
        .with_ymd_and_hms(2026, 1, 5, 0, 0, 0)
        .single()
        .ok_or("bad start")?;
    let end = start + Duration::days(number("DAYS", days)?);
    let mut spec = FleetSpec::new(number("SEED", seed)?, number("PUMPS", pumps)?, start, end)
        .with_name("dump");
    if let Some(name) = rest.first() {
        let kind = FaultKind::ALL
            .into_iter()
            .find(|k| k.name() == name)
            .ok_or_else(|| {
                let known: Vec<&str> = FaultKind::ALL.iter().map(|k| k.name()).collect();
                format!(
                    "FAULT: unknown fault {name:?} (known: {})",
                    known.join(", ")
                )
            })?;
        spec = spec.with_faults(FaultMix::only(kind));
    }
    let spec = apply_env(spec)?;
    let mut fleet = Fleet::try_new(spec).map_err(|e| {
        // Name the variable a bad knob came from.
        let variable = match e {
            SpecError::BadNoiseScale { .. } => "DUMP_NOISE: ",
            SpecError::BadRateRange { .. } => "DUMP_RATE_RANGE: ",
            SpecError::BadFaultScale { .. } => "DUMP_FAULT_SCALE: ",
            _ => "",
        };
        format!("{variable}{e}")
    })?;
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    for reading in fleet.advance_until(end) {
        writeln!(out, "{}", fleet_core::json::to_json(&reading))?;
    }
    out.flush()?;
    std::fs::write(truth_path, serde_json::to_string_pretty(&fleet.truth())?)?;
    Ok(())
}
