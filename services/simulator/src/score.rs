//! Scoring a detector's alarms against a fleet's ground truth, with the rules of the
//! shared scorer (`score_alarms.py`) so that the figures agree with it:
//!
//! - only `RAISED` alarms count;
//! - the first alarm of an episode's pump and kind detected inside its window is a hit;
//! - further alarms for an episode already hit are *repeats* (a detector that flaps);
//! - an alarm after the windows of its pump and kind closed, of an episode not hit, is
//!   *late* (the episode stays a miss);
//! - any other alarm is a *false alarm*;
//! - an episode with no hit is a miss unless it is optional.
//!
//! One addition for a fleet that is still running: an episode whose window is still
//! open at the moment of scoring (`until`) and has no hit yet is *pending*, neither a
//! hit nor a miss.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use fleet_core::AlarmKind;

use crate::truth::Episode;

/// A `RAISED` alarm event, as far as scoring needs it.
#[derive(Debug, Clone, PartialEq)]
pub struct RaisedAlarm {
    pub pump_id: String,
    pub kind: AlarmKind,
    pub detected_at: DateTime<Utc>,
}

/// One alarm kind's figures.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct KindScore {
    /// Episodes labelled (optional ones included) up to the moment of scoring.
    pub episodes: u32,
    pub hits: u32,
    pub misses: u32,
    pub pending: u32,
    pub false_alarms: u32,
    pub late: u32,
    pub repeats: u32,
    /// Hours from onset to detection, per hit, in detection order.
    pub delays_h: Vec<f64>,
}

impl KindScore {
    /// Hits over hits plus misses; `None` with nothing to find.
    pub fn recall(&self) -> Option<f64> {
        ratio(self.hits, self.hits + self.misses)
    }

    /// Hits over hits plus false alarms; `None` with nothing raised.
    pub fn precision(&self) -> Option<f64> {
        ratio(self.hits, self.hits + self.false_alarms)
    }

    pub fn median_delay_h(&self) -> Option<f64> {
        let mut d = self.delays_h.clone();
        d.sort_by(f64::total_cmp);
        match d.len() {
            0 => None,
            n if n % 2 == 1 => Some(d[n / 2]),
            n => Some((d[n / 2 - 1] + d[n / 2]) / 2.0),
        }
    }

    fn add(&mut self, other: &KindScore) {
        self.episodes += other.episodes;
        self.hits += other.hits;
        self.misses += other.misses;
        self.pending += other.pending;
        self.false_alarms += other.false_alarms;
        self.late += other.late;
        self.repeats += other.repeats;
        self.delays_h.extend(&other.delays_h);
    }
}

fn ratio(num: u32, den: u32) -> Option<f64> {
    (den > 0).then(|| f64::from(num) / f64::from(den))
}

/// What went wrong with one episode or alarm, for a summary to explain.
#[derive(Debug, Clone, PartialEq)]
pub enum Finding {
    Missed(Episode),
    FalseAlarm(RaisedAlarm),
    Late(RaisedAlarm),
}

/// The score of a run, per kind.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Score {
    pub kinds: BTreeMap<AlarmKind, KindScore>,
    /// Misses, false alarms and late alarms, for the record.
    pub findings: Vec<Finding>,
}

impl Score {
    /// Scores `alarms` against the `episodes` that began by `until` (later ones are not
    /// labelled yet as far as the run is concerned), for the `scored` kinds.
    pub fn of(
        episodes: &[Episode],
        alarms: &[RaisedAlarm],
        scored: &[AlarmKind],
        until: DateTime<Utc>,
    ) -> Score {
        let episodes: Vec<&Episode> = episodes
            .iter()
            .filter(|e| e.window_start <= until && scored.contains(&e.kind))
            .collect();
        let mut hit = vec![false; episodes.len()];
        let mut score = Score {
            kinds: scored.iter().map(|&k| (k, KindScore::default())).collect(),
            findings: Vec::new(),
        };
        let mut alarms: Vec<&RaisedAlarm> = alarms.iter().collect();
        alarms.sort_by_key(|a| a.detected_at);
        for alarm in alarms {
            let Some(kind) = score.kinds.get_mut(&alarm.kind) else {
                continue;
            };
            let t = alarm.detected_at;
            let mine: Vec<usize> = (0..episodes.len())
                .filter(|&i| episodes[i].pump_id == alarm.pump_id && episodes[i].kind == alarm.kind)
                .collect();
            let inside: Vec<usize> = mine
                .iter()
                .copied()
                .filter(|&i| episodes[i].window_start <= t && t <= episodes[i].window_end)
                .collect();
            if !inside.is_empty() {
                match inside.iter().find(|&&i| !hit[i]) {
                    Some(&i) => {
                        hit[i] = true;
                        kind.hits += 1;
                        kind.delays_h
                            .push((t - episodes[i].onset).num_seconds() as f64 / 3600.0);
                    }
                    None => kind.repeats += 1,
                }
                continue;
            }
            let closed: Vec<usize> = mine
                .into_iter()
                .filter(|&i| t > episodes[i].window_end)
                .collect();
            if closed.is_empty() {
                kind.false_alarms += 1;
                score.findings.push(Finding::FalseAlarm(alarm.clone()));
            } else if closed.iter().all(|&i| hit[i]) {
                kind.repeats += 1;
            } else {
                kind.late += 1;
                score.findings.push(Finding::Late(alarm.clone()));
            }
        }
        for (episode, hit) in episodes.iter().zip(hit) {
            let kind = score.kinds.get_mut(&episode.kind).expect("scored kind");
            kind.episodes += 1;
            if hit {
                continue;
            }
            if episode.window_end > until {
                kind.pending += 1;
            } else if !episode.optional {
                kind.misses += 1;
                score.findings.push(Finding::Missed((*episode).clone()));
            }
        }
        score
    }

    /// All kinds together.
    pub fn total(&self) -> KindScore {
        let mut total = KindScore::default();
        for k in self.kinds.values() {
            total.add(k);
        }
        total
    }
}

#[cfg(test)]
mod tests {
    use chrono::Duration;

    use super::*;

    fn at(h: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_700_000_000, 0).expect("a valid time") + Duration::hours(h)
    }

    fn episode(pump: &str, kind: AlarmKind, from: i64, to: i64) -> Episode {
        Episode {
            pump_id: pump.into(),
            kind,
            onset: at(from),
            window_start: at(from),
            window_end: at(to),
            harm_at: None,
            note: String::new(),
            optional: false,
        }
    }

    fn raised(pump: &str, kind: AlarmKind, h: i64) -> RaisedAlarm {
        RaisedAlarm {
            pump_id: pump.into(),
            kind,
            detected_at: at(h),
        }
    }

    #[test]
    fn hits_repeats_late_false_alarms_and_misses_follow_the_shared_rules() {
        use AlarmKind::{LowReservoir as Low, Occlusion};
        let episodes = [
            episode("P1", Low, 0, 10),
            episode("P2", Low, 0, 10),
            episode("P3", Occlusion, 0, 10),
            // Still open when scored at hour 50: pending, not a miss.
            episode("P4", Occlusion, 45, 60),
            // Begins after the moment of scoring: not counted at all.
            episode("P5", Occlusion, 55, 70),
        ];
        let alarms = [
            raised("P1", Low, 3),       // hit, 3 h after onset
            raised("P1", Low, 5),       // repeat inside the window
            raised("P1", Low, 20),      // repeat after the window
            raised("P2", Low, 12),      // late: P2's episode is missed
            raised("P3", Low, 4),       // false: P3 has no LOW_RESERVOIR episode
            raised("P9", Occlusion, 1), // false
        ];
        let score = Score::of(&episodes, &alarms, &AlarmKind::CONTRACT, at(50));
        let low = &score.kinds[&Low];
        assert_eq!(
            (
                low.episodes,
                low.hits,
                low.misses,
                low.repeats,
                low.late,
                low.false_alarms
            ),
            (2, 1, 1, 2, 1, 1)
        );
        assert_eq!(low.delays_h, vec![3.0]);
        assert_eq!(low.recall(), Some(0.5));
        assert_eq!(low.precision(), Some(0.5));
        let occlusion = &score.kinds[&Occlusion];
        assert_eq!(
            (
                occlusion.episodes,
                occlusion.hits,
                occlusion.misses,
                occlusion.pending
            ),
            (2, 0, 1, 1)
        );
        assert_eq!(occlusion.false_alarms, 1);
        let total = score.total();
        assert_eq!((total.hits, total.misses, total.false_alarms), (1, 2, 2));
        assert_eq!(score.findings.len(), 5, "{:?}", score.findings);
    }

    #[test]
    fn an_optional_episode_missed_is_not_held_against_the_detector() {
        let mut e = episode("P1", AlarmKind::TelemetryLost, 0, 10);
        e.optional = true;
        let score = Score::of(&[e], &[], &AlarmKind::CONTRACT, at(50));
        let lost = &score.kinds[&AlarmKind::TelemetryLost];
        assert_eq!((lost.episodes, lost.misses, lost.recall()), (1, 0, None));
    }
}
