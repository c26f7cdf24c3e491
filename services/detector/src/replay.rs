//! `replay`: the detection code over a file of readings, in file order, with the fleet
//! watermark as its clock; its output is deterministic.

use std::io::{BufRead, Write};
use std::path::Path;

use anyhow::Context;
use fleet_core::detect::{Detector, DetectorConfig};

/// What a replay did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ReplaySummary {
    pub readings: u64,
    pub invalid_lines: u64,
    pub alarm_events: u64,
}

/// Replays JSON Lines readings from `input`, writing alarm events as JSON Lines to
/// `output`. Invalid lines are reported on stderr with their line number and skipped.
pub fn replay(
    input: impl BufRead,
    output: impl Write,
    config: DetectorConfig,
) -> anyhow::Result<ReplaySummary> {
    let mut detector = Detector::new(config);
    replay_with(input, output, |r| detector.observe(r))
}

/// Replays with the device-alarm relay instead of the detector (the baseline).
pub fn replay_baseline(input: impl BufRead, output: impl Write) -> anyhow::Result<ReplaySummary> {
    let mut relay = crate::baseline::DeviceAlarmRelay::default();
    replay_with(input, output, |r| relay.observe(r))
}

fn replay_with(
    mut input: impl BufRead,
    mut output: impl Write,
    mut observe: impl FnMut(&fleet_core::Reading) -> Vec<fleet_core::AlarmEvent>,
) -> anyhow::Result<ReplaySummary> {
    let mut summary = ReplaySummary::default();
    // One line buffer for the whole file: no allocation per line.
    let mut line = String::new();
    let mut n = 0u64;
    loop {
        line.clear();
        n += 1;
        if input
            .read_line(&mut line)
            .with_context(|| format!("reading line {n}"))?
            == 0
        {
            break;
        }
        let text = line.trim_end_matches(['\n', '\r']);
        if text.trim().is_empty() {
            continue;
        }
        let reading = match fleet_core::json::parse_reading(text) {
            Ok(r) => r,
            Err(e) => {
                summary.invalid_lines += 1;
                eprintln!("fleet-detector: line {n}: {e}");
                continue;
            }
        };
        summary.readings += 1;
        for event in observe(&reading) {
            serde_json::to_writer(&mut output, &event)?;
            output.write_all(b"\n")?;
            summary.alarm_events += 1;
        }
    }
    output.flush()?;
    Ok(summary)
}

/// `replay` between files (`-` is stdin or stdout; gzip input is read transparently);
/// with `baseline`, the device-alarm relay instead of the detector.
pub fn replay_files(
    input: &Path,
    output: &Path,
    config: DetectorConfig,
    baseline: bool,
) -> anyhow::Result<ReplaySummary> {
    let reader = fleet_runtime::input::open(input)?;
    let writer: Box<dyn Write> = if output == Path::new("-") {
        Box::new(std::io::BufWriter::new(std::io::stdout().lock()))
    } else {
        let file = std::fs::File::create(output)
            .with_context(|| format!("creating {}", output.display()))?;
        Box::new(std::io::BufWriter::new(file))
    };
    if baseline {
        replay_baseline(reader, writer)
    } else {
        replay(reader, writer, config)
    }
}
