//! `fleetctl readings validate`: checks a JSON Lines file of readings with the same code
//! the ingest service uses, and names every bad line and why.

use std::io::{self, BufRead, Write};
use std::path::Path;

use anyhow::Context;
use fleet_core::json;

/// What a validation run found.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ValidationSummary {
    pub valid: u64,
    pub invalid: u64,
}

impl ValidationSummary {
    pub fn all_valid(&self) -> bool {
        self.invalid == 0
    }
}

/// Validates every line of `input`; writes one `line N: reason` per invalid line and a
/// closing count to `report`.
pub fn validate(mut input: impl BufRead, mut report: impl Write) -> io::Result<ValidationSummary> {
    let mut summary = ValidationSummary::default();
    let mut line = Vec::with_capacity(4096);
    let mut number = 0u64;
    loop {
        line.clear();
        if input.read_until(b'\n', &mut line)? == 0 {
            break;
        }
        number += 1;
        let text = trim_line_end(&line);
        let outcome = match std::str::from_utf8(text) {
            Ok(text) => json::parse_reading(text)
                .map(|_| ())
                .map_err(|e| e.to_string()),
            Err(e) => Err(format!("undecodable: not UTF-8 ({e})")),
        };
        match outcome {
            Ok(()) => summary.valid += 1,
            Err(reason) => {
                summary.invalid += 1;
                writeln!(report, "line {number}: {reason}")?;
            }
        }
    }
    writeln!(
        report,
        "{} valid readings, {} invalid lines",
        summary.valid, summary.invalid
    )?;
    Ok(summary)
}

/// Validates a file (plain or gzip; `-` for stdin), reporting to stdout.
pub fn validate_path(path: &Path) -> anyhow::Result<ValidationSummary> {
    let input = fleet_runtime::input::open(path)?;
    let stdout = io::stdout().lock();
    validate(input, io::BufWriter::new(stdout))
        .with_context(|| format!("reading {}", path.display()))
}

fn trim_line_end(line: &[u8]) -> &[u8] {
    let line = line.strip_suffix(b"\n").unwrap_or(line);
    line.strip_suffix(b"\r").unwrap_or(line)
}
