//! The labelled ground truth of a simulated fleet, in the shape of
//! `shared/scenarios/*.truth.json`: which pump carries which fault, and for each fault
//! a detector must find, the episode with a fair detection window.
//!
//! Episodes come from the plan plus a dry run of the faulty pump to the end of the run,
//! so their times are the simulated ones (when the reservoir really crossed its
//! threshold), not estimates.

use chrono::{DateTime, Duration, Utc};
use fleet_core::AlarmKind;
use serde::{Deserialize, Serialize};

use crate::pump::{EOS_BATTERY_PCT, ERI_BATTERY_PCT, FaultPlan, Milestone, VirtualPump};
use crate::random::plus_days;
use crate::spec::{FaultKind, FleetSpec};

/// How early a detector may project ERI within 90 days and still be right: slope
/// estimates from a noisy gauge err by a couple of weeks.
const BATTERY_PROJECTION_SLACK: Duration = Duration::days(14);
/// The contract's horizon for BATTERY_EOL.
const BATTERY_EOL_HORIZON: Duration = Duration::days(90);
/// The contract's grace after a missed appointment.
const MISSED_REFILL_GRACE: Duration = Duration::hours(24);
/// The contract's silence before TELEMETRY_LOST.
const TELEMETRY_LOST_AFTER: Duration = Duration::hours(12);
/// Catheter pressure above baseline at which an occlusion is evident: well clear of the
/// daily swing (at most 6 kPa peak to peak) and the sensor noise.
const OCCLUSION_EVIDENT_EXCESS_KPA: f64 = 24.0;
/// The shortest detection window of a sensor-pump occlusion: a day for the ramp to rise
/// clear of the daily swing, then three.
const OCCLUSION_SHORTEST_WINDOW_DAYS: f64 = 4.0;

/// Days from the onset of a sensor-pump occlusion ramping at `ramp_kpa_per_day` to the
/// end of its detection window: until the pressure is evidently high, and at least
/// [`OCCLUSION_SHORTEST_WINDOW_DAYS`] (which the default ramps of 6 kPa/day or more
/// reach first).
pub(crate) fn sensor_occlusion_window_days(ramp_kpa_per_day: f64) -> f64 {
    (OCCLUSION_EVIDENT_EXCESS_KPA / ramp_kpa_per_day).max(OCCLUSION_SHORTEST_WINDOW_DAYS)
}

/// A scenario's labels. Serialises to exactly the keys of the shared truth files.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GroundTruth {
    pub name: String,
    pub seed: u64,
    pub pump_count: usize,
    /// Whole days of the run, rounded up.
    pub days: u64,
    pub cadence_min: u64,
    #[serde(with = "timestamp")]
    pub start: DateTime<Utc>,
    #[serde(with = "timestamp")]
    pub end: DateTime<Utc>,
    pub scored_kinds: Vec<AlarmKind>,
    pub episodes: Vec<Episode>,
    pub pumps: Vec<TruthPump>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TruthPump {
    pub pump_id: String,
    pub gateway_id: String,
    pub model: String,
    pub fault: FaultKind,
}

/// One condition a detector must raise once, inside `[window_start, window_end]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Episode {
    pub pump_id: String,
    pub kind: AlarmKind,
    /// When the condition began (or became observable), for the delay metric.
    #[serde(with = "timestamp")]
    pub onset: DateTime<Utc>,
    #[serde(with = "timestamp")]
    pub window_start: DateTime<Utc>,
    #[serde(with = "timestamp")]
    pub window_end: DateTime<Utc>,
    /// When the patient is harmed if nobody acts (reservoir empty, end of service),
    /// for the lead-time metric.
    #[serde(with = "opt_timestamp")]
    pub harm_at: Option<DateTime<Utc>>,
    pub note: String,
    /// A miss is not counted against the detector.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub optional: bool,
}

impl GroundTruth {
    pub(crate) fn label(spec: &FleetSpec, pumps: &[VirtualPump]) -> GroundTruth {
        let run = spec.end - spec.start;
        let days = (run.num_seconds() as u64).div_ceil(86_400);
        let mut episodes = Vec::new();
        for pump in pumps {
            if pump.fault.has_episodes() {
                let mut mine = label_pump(pump, spec);
                mine.sort_by_key(|e| (e.window_start, e.kind));
                episodes.extend(mine);
            }
        }
        GroundTruth {
            name: spec.name.clone(),
            seed: spec.seed,
            pump_count: spec.pump_count,
            days,
            cadence_min: (spec.cadence.num_seconds().max(0) as u64).div_ceil(60),
            start: spec.start,
            end: spec.end,
            scored_kinds: AlarmKind::CONTRACT.to_vec(),
            episodes,
            pumps: pumps
                .iter()
                .map(|p| TruthPump {
                    pump_id: p.pump_id.clone(),
                    gateway_id: p.gateway_id.clone(),
                    model: p.model.to_owned(),
                    fault: p.fault,
                })
                .collect(),
        }
    }
}

/// The pump as it stands at the end of the run, with its milestones, simulated on a
/// copy exactly as the fleet will simulate it.
fn dry_run(pump: &VirtualPump, end: DateTime<Utc>) -> VirtualPump {
    let mut p = pump.clone();
    while p.next_due() <= end {
        let due = p.next_due();
        match p.outage {
            Some(o) if !o.buffered && o.covers(due) => p.skip_slot(),
            _ => p.next_silent(),
        }
    }
    p.advance_to(end);
    p
}

fn fmt(at: DateTime<Utc>) -> String {
    at.format("%Y-%m-%d %H:%M").to_string()
}

fn label_pump(pump: &VirtualPump, spec: &FleetSpec) -> Vec<Episode> {
    let after = dry_run(pump, spec.end);
    let episode = |kind, onset, window_start, window_end, harm_at, note: String| Episode {
        pump_id: pump.pump_id.clone(),
        kind,
        onset,
        window_start,
        window_end,
        harm_at,
        note,
        optional: false,
    };
    match &pump.plan {
        FaultPlan::FirstRefill { due } => {
            let overdue = *due + MISSED_REFILL_GRACE;
            let low = LowReservoir::after(&after, *due);
            vec![
                episode(
                    AlarmKind::MissedRefill,
                    overdue,
                    overdue,
                    overdue + Duration::hours(48),
                    None,
                    format!("no refill within 24 h of the appointment at {}", fmt(*due)),
                ),
                // Overdue, and the reservoir is then always projected to reach its
                // threshold within 7 days (the clinic booked 3-5 days ahead of it).
                episode(
                    AlarmKind::LowReservoir,
                    overdue,
                    overdue,
                    (low.crossing + Duration::hours(12)).max(overdue + Duration::hours(24)),
                    Some(low.empty),
                    format!(
                        "overdue refill: reservoir at the low threshold at {}",
                        fmt(low.crossing)
                    ),
                ),
            ]
        }
        FaultPlan::Reprogram { at, multiplier } => {
            let low = LowReservoir::after(&after, *at);
            // Until shortly before empty: a detector that waits for the pump's own
            // alarm is still in time.
            let before_empty = Duration::seconds((low.empty - low.crossing).num_seconds() / 2)
                .min(Duration::hours(12));
            vec![episode(
                AlarmKind::LowReservoir,
                *at,
                *at,
                (low.empty - before_empty).max(low.crossing + Duration::hours(2)),
                Some(low.empty),
                format!(
                    "rate raised x{multiplier:.2} without moving the refill date of {}",
                    fmt(pump.refill_due_at)
                ),
            )]
        }
        FaultPlan::Occlusion {
            onset,
            ramp_kpa_per_day: Some(ramp),
        } => vec![episode(
            AlarmKind::Occlusion,
            *onset,
            *onset,
            plus_days(*onset, sensor_occlusion_window_days(*ramp)),
            None,
            format!("catheter occlusion: pressure ramp {ramp:.1} kPa/day"),
        )],
        FaultPlan::Occlusion {
            onset,
            ramp_kpa_per_day: None,
        } => {
            // A valve pump shows nothing until a refill finds the residual
            // consequentially too high (the placement makes the first one after onset
            // do so).
            let consequential_ml = if pump.capacity_ml > 20.0 { 2.0 } else { 1.0 };
            let refill = after.milestones.iter().find_map(|m| match *m {
                Milestone::Refill { at, excess_ml }
                    if at > *onset && excess_ml > consequential_ml =>
                {
                    Some((at, excess_ml))
                }
                _ => None,
            });
            refill
                .map(|(at, excess_ml)| {
                    episode(
                        AlarmKind::Occlusion,
                        at,
                        at,
                        at + Duration::days(7),
                        None,
                        format!(
                            "valve pump: residual {excess_ml:.2} mL above expected at refill, occluded since {}",
                            fmt(*onset)
                        ),
                    )
                })
                .into_iter()
                .collect()
        }
        FaultPlan::NominalBattery | FaultPlan::Short { .. } => {
            let battery = Battery::of(&after);
            let projected = battery.eri - BATTERY_EOL_HORIZON;
            let (onset, window_start, note) = match &pump.plan {
                FaultPlan::Short {
                    at,
                    drain_pct_per_day,
                } => (
                    projected.max(*at),
                    projected.max(*at),
                    format!(
                        "premature depletion (internal short signature) from {}, {drain_pct_per_day:.2} %/day, ERI at {}",
                        fmt(*at),
                        fmt(battery.eri)
                    ),
                ),
                _ => (
                    projected.max(spec.start),
                    projected - BATTERY_PROJECTION_SLACK,
                    format!("nominal depletion to ERI at {}", fmt(battery.eri)),
                ),
            };
            vec![episode(
                AlarmKind::BatteryEol,
                onset,
                window_start,
                battery.eos,
                Some(battery.eos),
                note,
            )]
        }
        FaultPlan::Wear { onset } => vec![episode(
            AlarmKind::Occlusion,
            *onset,
            *onset,
            *onset + Duration::days(3),
            None,
            "motor stalls without an MRI (shaft wear): therapy stops".to_owned(),
        )],
        FaultPlan::Outage(outage) => {
            let Some(last) = pump.interrogation.last_slot_before(outage.start) else {
                return Vec::new();
            };
            let onset = last + TELEMETRY_LOST_AFTER;
            let window = Duration::hours(4).max(spec.cadence * 3);
            let hours = (outage.end - outage.start).num_minutes() as f64 / 60.0;
            let note = if outage.buffered {
                format!(
                    "gateway offline {hours:.0} h, backlog delivered at {}",
                    fmt(outage.end)
                )
            } else {
                format!("gateway powered off {hours:.0} h, readings lost")
            };
            vec![episode(
                AlarmKind::TelemetryLost,
                onset,
                onset - Duration::minutes(10),
                onset + window,
                None,
                note,
            )]
        }
        FaultPlan::None | FaultPlan::Mri { .. } | FaultPlan::ClinicianBoluses { .. } => Vec::new(),
    }
}

/// When the reservoir reached its low threshold and when it ran (or would have run)
/// empty, after `since`.
struct LowReservoir {
    crossing: DateTime<Utc>,
    empty: DateTime<Utc>,
}

impl LowReservoir {
    fn after(after: &VirtualPump, since: DateTime<Utc>) -> LowReservoir {
        let mut crossing = None;
        let mut empty = None;
        for m in &after.milestones {
            match *m {
                Milestone::LowReservoir {
                    at,
                    consumption_ml_per_day,
                } if at >= since && crossing.is_none() => {
                    crossing = Some((at, consumption_ml_per_day));
                }
                Milestone::Empty { at } if crossing.is_some() && empty.is_none() => {
                    empty = Some(at);
                }
                // A refill before it ran empty: what would have happened without it.
                Milestone::Refill { .. } if crossing.is_some() => break,
                _ => {}
            }
        }
        let consumption = after.expected_consumption_ml_per_day();
        let (crossing, consumption_at_crossing) = crossing.unwrap_or_else(|| {
            // Beyond the run: project from its end.
            let days = (after.reservoir_ml - after.low_threshold_ml).max(0.0) / consumption;
            (plus_days(after.clock, days), consumption)
        });
        let empty = empty.unwrap_or_else(|| {
            plus_days(crossing, after.low_threshold_ml / consumption_at_crossing)
        });
        LowReservoir { crossing, empty }
    }
}

/// When the battery reached (or will reach) ERI and EOS.
struct Battery {
    eri: DateTime<Utc>,
    eos: DateTime<Utc>,
}

impl Battery {
    fn of(after: &VirtualPump) -> Battery {
        let milestone = |want_eri: bool| {
            after.milestones.iter().find_map(|m| match *m {
                Milestone::Eri { at } if want_eri => Some(at),
                Milestone::Eos { at } if !want_eri => Some(at),
                _ => None,
            })
        };
        let drain = after.drain_pct_per_day.max(f64::MIN_POSITIVE);
        let project = |level: f64| {
            plus_days(
                after.clock,
                ((after.battery_pct - level) / drain).clamp(0.0, 36_500.0),
            )
        };
        Battery {
            eri: milestone(true).unwrap_or_else(|| project(ERI_BATTERY_PCT)),
            eos: milestone(false).unwrap_or_else(|| project(EOS_BATTERY_PCT)),
        }
    }
}

/// Every truth timestamp is RFC 3339 UTC with a `Z`, like the readings'.
mod timestamp {
    use chrono::{DateTime, SecondsFormat, Utc};
    use serde::{Deserialize, Deserializer, Serializer, de};

    pub fn serialize<S: Serializer>(at: &DateTime<Utc>, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&at.to_rfc3339_opts(SecondsFormat::AutoSi, true))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<DateTime<Utc>, D::Error> {
        let text = String::deserialize(d)?;
        DateTime::parse_from_rfc3339(&text)
            .map(|t| t.with_timezone(&Utc))
            .map_err(|e| de::Error::custom(format_args!("unparseable timestamp {text:?} ({e})")))
    }
}

mod opt_timestamp {
    use chrono::{DateTime, Utc};
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(at: &Option<DateTime<Utc>>, s: S) -> Result<S::Ok, S::Error> {
        match at {
            Some(at) => super::timestamp::serialize(at, s),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<DateTime<Utc>>, D::Error> {
        #[derive(Deserialize)]
        struct Wrapped(#[serde(with = "super::timestamp")] DateTime<Utc>);
        Ok(Option::<Wrapped>::deserialize(d)?.map(|Wrapped(at)| at))
    }
}
