//! The pages the clinics' reference receivers wrote, read as they arrive.

use std::collections::BTreeMap;
use std::io::{BufRead, Seek, SeekFrom};
use std::path::PathBuf;

use chrono::{DateTime, Utc};
use fleet_core::{AlarmKind, AlarmState};
use fleetctl::receiver::RecordedPage;

/// Every page each clinic received so far, read incrementally from the receivers'
/// JSON Lines files (only whole lines: a page being written is read next time).
#[derive(Debug)]
pub struct Pages {
    files: Vec<(String, PathBuf, u64)>,
    pub by_clinic: BTreeMap<String, Vec<RecordedPage>>,
}

impl Pages {
    pub fn new(files: Vec<(String, PathBuf)>) -> Pages {
        Pages {
            by_clinic: files.iter().map(|(c, _)| (c.clone(), Vec::new())).collect(),
            files: files.into_iter().map(|(c, p)| (c, p, 0)).collect(),
        }
    }

    /// Reads what was appended since the last call.
    pub fn refresh(&mut self) -> anyhow::Result<()> {
        for (clinic, path, offset) in &mut self.files {
            let Ok(mut file) = std::fs::File::open(&*path) else {
                continue; // the receiver writes its file with the first page
            };
            file.seek(SeekFrom::Start(*offset))?;
            let mut reader = std::io::BufReader::new(file);
            let mut line = String::new();
            while reader.read_line(&mut line)? > 0 {
                if !line.ends_with('\n') {
                    break;
                }
                let page: RecordedPage = serde_json::from_str(&line).map_err(|e| {
                    anyhow::anyhow!("{}: a page that is not JSON: {e}", path.display())
                })?;
                *offset += line.len() as u64;
                self.by_clinic.entry(clinic.clone()).or_default().push(page);
                line.clear();
            }
        }
        Ok(())
    }

    pub fn all(&self) -> impl Iterator<Item = &RecordedPage> {
        self.by_clinic.values().flatten()
    }

    /// Whether `pump_id` had an alarm of `kind` open at its clinic at `at`: its latest
    /// page of that kind by then (first attempts, not escalations) raised it.
    pub fn open_at(&self, pump_id: &str, kind: AlarmKind, at: DateTime<Utc>) -> bool {
        self.all()
            .filter(|p| {
                p.escalation == 0
                    && p.alarm.pump_id == pump_id
                    && p.alarm.kind == kind
                    && p.alarm.detected_at <= at
            })
            .max_by_key(|p| (p.alarm.detected_at, p.alarm.revision))
            .is_some_and(|p| p.alarm.state == AlarmState::Raised)
    }

    pub fn count(&self) -> usize {
        self.by_clinic.values().map(Vec::len).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A receiver's line for revision `revision` of `alarm_id`, in `state`, at `at`.
    fn line(alarm_id: &str, revision: u32, state: &str, at: &str, escalation: u32) -> String {
        format!(
            r#"{{"alarm_id":"{alarm_id}","revision":{revision},"pump_id":"P-1","kind":"TELEMETRY_LOST","priority":"MEDIUM","state":"{state}","detected_at":"{at}","message":"m","evidence":{{}},"clinic_id":"c","delivery_attempt":1,"escalation":{escalation},"received_at":"{at}","receipt_id":"r"}}"#
        ) + "\n"
    }

    #[test]
    fn an_alarm_is_open_from_its_raise_until_its_clear() {
        let dir = tempfile::tempdir().expect("tmp");
        let file = dir.path().join("c.jsonl");
        let lines = [
            line("a1", 1, "RAISED", "2026-10-16T17:40:00Z", 0),
            line("a1", 2, "CLEARED", "2026-10-17T22:43:00Z", 0),
            // An escalation of a later alarm: a reminder, not a new raise.
            line("a2", 1, "RAISED", "2026-10-20T00:00:00Z", 1),
        ];
        std::fs::write(&file, lines.concat()).expect("write");
        let mut pages = Pages::new(vec![("c".into(), file)]);
        pages.refresh().expect("read");
        let at = |t: &str| t.parse::<DateTime<Utc>>().expect("time");
        let open = |t: &str| pages.open_at("P-1", AlarmKind::TelemetryLost, at(t));
        assert!(!open("2026-10-16T17:00:00Z"), "before the raise");
        assert!(open("2026-10-17T03:32:00Z"), "raised and not yet cleared");
        assert!(!open("2026-10-18T00:00:00Z"), "cleared");
        assert!(!open("2026-10-21T00:00:00Z"), "escalations do not count");
        assert!(!pages.open_at("P-2", AlarmKind::TelemetryLost, at("2026-10-17T03:32:00Z")));
        assert!(!pages.open_at("P-1", AlarmKind::Occlusion, at("2026-10-17T03:32:00Z")));
    }
}
