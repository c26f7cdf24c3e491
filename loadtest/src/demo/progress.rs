//! Progress while the simulated history plays: bars on a terminal, a plain line every
//! few seconds otherwise (a CI log, a file).

use std::io::IsTerminal;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use indicatif::{MultiProgress, ProgressBar, ProgressStyle};

/// What the demo has seen so far.
#[derive(Debug, Clone, Copy, Default)]
pub struct Snapshot {
    pub simulated: Option<DateTime<Utc>>,
    pub archived: u64,
    pub alarm_events: u64,
    pub pages: u64,
    pub acknowledged: u64,
}

#[derive(Debug)]
pub struct Progress {
    start: DateTime<Utc>,
    end: DateTime<Utc>,
    bars: Option<(MultiProgress, ProgressBar, ProgressBar, ProgressBar)>,
    last_line: Instant,
}

const PLAIN_EVERY: Duration = Duration::from_secs(10);

impl Progress {
    pub fn new(start: DateTime<Utc>, end: DateTime<Utc>, expected_readings: u64) -> Progress {
        let bars = std::io::stderr().is_terminal().then(|| {
            let multi = MultiProgress::new();
            let style = |template: &str| {
                ProgressStyle::with_template(template)
                    .unwrap_or_else(|_| ProgressStyle::default_bar())
                    .progress_chars("█▉▊▋▌▍▎▏ ")
            };
            let days = ((end - start).num_hours() as u64).div_ceil(24);
            let history = multi.add(ProgressBar::new(days).with_style(style(
                "{prefix:>18} [{bar:40.cyan/blue}] day {pos}/{len}  {msg}",
            )));
            history.set_prefix("simulated history");
            let archived = multi.add(ProgressBar::new(expected_readings).with_style(style(
                "{prefix:>18} [{bar:40.green/white}] {human_pos}/{human_len}  {per_sec}",
            )));
            archived.set_prefix("readings archived");
            let alarms = multi
                .add(ProgressBar::new_spinner().with_style(style("{prefix:>18} {spinner} {msg}")));
            alarms.set_prefix("alarms and pages");
            (multi, history, archived, alarms)
        });
        Progress {
            start,
            end,
            bars,
            last_line: Instant::now(),
        }
    }

    pub fn show(&mut self, s: &Snapshot) {
        let day = s.simulated.map_or(0, |t| {
            ((t.min(self.end) - self.start).num_hours().max(0) as u64) / 24
        });
        let when = s.simulated.map_or_else(
            || "starting".to_owned(),
            |t| t.format("%Y-%m-%d %H:%M").to_string(),
        );
        let alarms = format!(
            "{} alarm events, {} pages delivered, {} acknowledged",
            s.alarm_events, s.pages, s.acknowledged
        );
        match &self.bars {
            Some((_, history, archived, spinner)) => {
                history.set_position(day);
                history.set_message(when);
                archived.set_position(s.archived);
                spinner.set_message(alarms);
                spinner.tick();
            }
            None if self.last_line.elapsed() >= PLAIN_EVERY => {
                self.last_line = Instant::now();
                eprintln!(
                    "demo: simulated {when} (day {day}); {} readings archived; {alarms}",
                    s.archived
                );
            }
            None => {}
        }
    }

    pub fn finish(self) {
        if let Some((multi, history, archived, spinner)) = self.bars {
            history.finish();
            archived.finish();
            spinner.finish();
            let _ = multi.clear();
        }
    }
}
