//! The detector service. `replay` runs the same detection code as the streaming
//! detector over a file of readings, in file order, with the fleet watermark as its
//! clock; its output is deterministic.

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
    mut output: impl Write,
    config: DetectorConfig,
) -> anyhow::Result<ReplaySummary> {
    let mut detector = Detector::new(config);
    let mut summary = ReplaySummary::default();
    for (n, line) in input.lines().enumerate() {
        let line = line.with_context(|| format!("reading line {}", n + 1))?;
        if line.trim().is_empty() {
            continue;
        }
        let reading = match fleet_core::json::parse_reading(&line) {
            Ok(r) => r,
            Err(e) => {
                summary.invalid_lines += 1;
                eprintln!("fleet-detector: line {}: {e}", n + 1);
                continue;
            }
        };
        summary.readings += 1;
        for event in detector.observe(&reading) {
            serde_json::to_writer(&mut output, &event)?;
            output.write_all(b"\n")?;
            summary.alarm_events += 1;
        }
    }
    output.flush()?;
    Ok(summary)
}

/// `replay` between files (`-` is stdin or stdout; gzip input is read transparently).
pub fn replay_files(
    input: &Path,
    output: &Path,
    config: DetectorConfig,
) -> anyhow::Result<ReplaySummary> {
    let reader = fleet_runtime::input::open(input)?;
    if output == Path::new("-") {
        let stdout = std::io::stdout().lock();
        replay(reader, std::io::BufWriter::new(stdout), config)
    } else {
        let file = std::fs::File::create(output)
            .with_context(|| format!("creating {}", output.display()))?;
        replay(reader, std::io::BufWriter::new(file), config)
    }
}
