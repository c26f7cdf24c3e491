//! What a simulated fleet is asked to be: its size, time span, cadence and seed
//! ([`FleetSpec`]), and which faults are injected into how many pumps ([`FaultMix`]).

use chrono::{DateTime, Duration, Utc};
use rand::Rng;
use rand::seq::SliceRandom;
use serde::{Deserialize, Serialize};

/// The interrogation cadence the contract calls the default.
pub const DEFAULT_CADENCE: Duration = Duration::hours(1);

/// The first pump serial number, so ids read like the field's (`ITP40-100000`).
pub const DEFAULT_FIRST_PUMP_NUMBER: u32 = 100_000;

/// A fleet to simulate. Same spec, same readings and truth, bit for bit.
#[derive(Debug, Clone, PartialEq)]
pub struct FleetSpec {
    /// The scenario's name in the truth file.
    pub name: String,
    pub seed: u64,
    pub pump_count: usize,
    pub start: DateTime<Utc>,
    /// Readings are measured in `[start, end]`.
    pub end: DateTime<Utc>,
    /// Time between two interrogations of one pump. Must stay well below the 12 h
    /// after which the contract calls telemetry lost, or every pump looks lost.
    pub cadence: Duration,
    pub faults: FaultMix,
    /// Serial number of the first pump; the others follow, one each.
    pub first_pump_number: u32,
}

impl FleetSpec {
    /// An hourly fleet with the realistic fault mix, named `simulated`.
    pub fn new(seed: u64, pump_count: usize, start: DateTime<Utc>, end: DateTime<Utc>) -> Self {
        FleetSpec {
            name: "simulated".to_owned(),
            seed,
            pump_count,
            start,
            end,
            cadence: DEFAULT_CADENCE,
            faults: FaultMix::realistic(),
            first_pump_number: DEFAULT_FIRST_PUMP_NUMBER,
        }
    }

    pub fn with_faults(mut self, faults: FaultMix) -> Self {
        self.faults = faults;
        self
    }

    pub fn with_name(mut self, name: impl Into<String>) -> Self {
        self.name = name.into();
        self
    }

    pub fn with_cadence(mut self, cadence: Duration) -> Self {
        self.cadence = cadence;
        self
    }

    /// Checks the spec; every problem a fleet could not be built with.
    pub fn validate(&self) -> Result<(), SpecError> {
        if self.end <= self.start {
            return Err(SpecError::EmptyRun {
                start: self.start,
                end: self.end,
            });
        }
        if self.cadence < Duration::seconds(1) {
            return Err(SpecError::CadenceTooShort {
                cadence_s: self.cadence.num_seconds(),
            });
        }
        let last = u64::from(self.first_pump_number) + self.pump_count as u64;
        if last > u64::from(u32::MAX) {
            return Err(SpecError::PumpNumbersOverflow {
                first: self.first_pump_number,
                pump_count: self.pump_count,
            });
        }
        self.faults.validate(self.pump_count)
    }
}

/// Why a [`FleetSpec`] cannot be simulated.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum SpecError {
    #[error("the run is empty: end {end} is not after start {start}")]
    EmptyRun {
        start: DateTime<Utc>,
        end: DateTime<Utc>,
    },
    #[error("cadence of {cadence_s} s is shorter than one second")]
    CadenceTooShort { cadence_s: i64 },
    #[error("pump numbers from {first} for {pump_count} pumps do not fit in 32 bits")]
    PumpNumbersOverflow { first: u32, pump_count: usize },
    #[error("fault probability {probability} for {kind} is not within 0..=1")]
    BadProbability { kind: FaultKind, probability: f64 },
    #[error("fault probabilities add up to {total}, more than 1")]
    ProbabilitiesAboveOne { total: f64 },
    #[error("fault counts add up to {total}, more than the {pump_count} pumps")]
    CountsAboveFleet { total: usize, pump_count: usize },
}

/// A fault injected into one pump. The benign ones (late refill, reprogram with a
/// moved appointment, MRI, clinician bolus, short outage) look alarming to a naive
/// rule and must not raise an alarm; the others each have labelled episodes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FaultKind {
    None,
    /// The patient misses the refill appointment and comes only after the reservoir
    /// ran empty: MISSED_REFILL and LOW_RESERVOIR.
    MissedRefill,
    /// Refilled late, but within the 24 h grace: no alarm.
    LateRefill,
    /// Rate raised without moving the refill date, so the reservoir reaches its
    /// threshold before the appointment: LOW_RESERVOIR.
    ReprogramUp,
    /// Rate raised and the appointment moved earlier to match: no alarm.
    ReprogramMovedRefill,
    /// Catheter occlusion. Sensor models (ITP): catheter pressure and motor current
    /// ramp. Valve models (ITV): residual discrepancy at the next refill. OCCLUSION.
    Occlusion,
    /// The battery reaches ERI within the run at the nominal drain: BATTERY_EOL.
    BatteryNominalEri,
    /// Internal short: fast drain and LOW_BATTERY_RESET events: BATTERY_EOL.
    BatteryPremature,
    /// An MRI, then motor stalls within 24 h, then recovery: no alarm.
    MriStall,
    /// Motor stalls without an MRI (shaft wear), therapy stops: OCCLUSION.
    MotorStall,
    /// Clinician boluses with catheter pressure spikes: no alarm.
    BolusSpikes,
    /// Gateway offline for 2-8 h, readings buffered and delivered late: no alarm.
    GatewayOutageShort,
    /// Gateway offline for more than 12 h, readings buffered and delivered when it
    /// reconnects: TELEMETRY_LOST.
    GatewayOutageBacklog,
    /// Gateway powered off for more than 12 h: the pump is not interrogated and the
    /// period has no readings: TELEMETRY_LOST.
    GatewayOutageLost,
}

impl FaultKind {
    pub const ALL: [FaultKind; 14] = [
        FaultKind::None,
        FaultKind::MissedRefill,
        FaultKind::LateRefill,
        FaultKind::ReprogramUp,
        FaultKind::ReprogramMovedRefill,
        FaultKind::Occlusion,
        FaultKind::BatteryNominalEri,
        FaultKind::BatteryPremature,
        FaultKind::MriStall,
        FaultKind::MotorStall,
        FaultKind::BolusSpikes,
        FaultKind::GatewayOutageShort,
        FaultKind::GatewayOutageBacklog,
        FaultKind::GatewayOutageLost,
    ];

    /// The name written in the truth file.
    pub fn name(self) -> &'static str {
        match self {
            FaultKind::None => "none",
            FaultKind::MissedRefill => "missed_refill",
            FaultKind::LateRefill => "late_refill",
            FaultKind::ReprogramUp => "reprogram_up",
            FaultKind::ReprogramMovedRefill => "reprogram_moved_refill",
            FaultKind::Occlusion => "occlusion",
            FaultKind::BatteryNominalEri => "battery_nominal_eri",
            FaultKind::BatteryPremature => "battery_premature",
            FaultKind::MriStall => "mri_stall",
            FaultKind::MotorStall => "motor_stall",
            FaultKind::BolusSpikes => "bolus_spikes",
            FaultKind::GatewayOutageShort => "gateway_outage_short",
            FaultKind::GatewayOutageBacklog => "gateway_outage_backlog",
            FaultKind::GatewayOutageLost => "gateway_outage_lost",
        }
    }

    /// Whether a correct detector raises an alarm for this fault.
    pub fn has_episodes(self) -> bool {
        !matches!(
            self,
            FaultKind::None
                | FaultKind::LateRefill
                | FaultKind::ReprogramMovedRefill
                | FaultKind::MriStall
                | FaultKind::BolusSpikes
                | FaultKind::GatewayOutageShort
        )
    }

    /// Whether the fault shows only on a peristaltic pump with a motor and the
    /// pressure and current sensors.
    pub(crate) fn needs_flow_sensors(self) -> bool {
        matches!(
            self,
            FaultKind::MriStall | FaultKind::MotorStall | FaultKind::BolusSpikes
        )
    }
}

impl std::fmt::Display for FaultKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// How much of one fault a fleet gets.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum FaultShare {
    /// Each pump independently, with this probability.
    Probability(f64),
    /// Exactly this many pumps, chosen at random.
    Count(usize),
}

/// Which faults are injected. Counts are placed first, on randomly chosen pumps; the
/// remaining pumps draw one fault each from the probabilities, and `None` from what is
/// left. A fault that does not fit the run (too short to show it) is not injected and
/// the truth file says `none` for that pump.
#[derive(Debug, Clone, PartialEq)]
pub struct FaultMix {
    shares: Vec<(FaultKind, FaultShare)>,
}

impl FaultMix {
    /// No fault anywhere.
    pub fn none() -> Self {
        FaultMix { shares: Vec::new() }
    }

    /// Every pump gets `kind`.
    pub fn only(kind: FaultKind) -> Self {
        FaultMix::none().with(kind, FaultShare::Probability(1.0))
    }

    /// About 40 % of pumps carry a fault, every kind represented in a fleet of a
    /// hundred or more. Far more than a real clinic sees; chosen so a test fleet
    /// exercises every rule and every benign look-alike.
    pub fn realistic() -> Self {
        use FaultKind::*;
        let mut mix = FaultMix::none();
        for (kind, p) in [
            (MissedRefill, 0.03),
            (LateRefill, 0.04),
            (ReprogramUp, 0.03),
            (ReprogramMovedRefill, 0.03),
            (Occlusion, 0.04),
            (BatteryNominalEri, 0.03),
            (BatteryPremature, 0.01),
            (MriStall, 0.03),
            (MotorStall, 0.02),
            (BolusSpikes, 0.03),
            (GatewayOutageShort, 0.04),
            (GatewayOutageBacklog, 0.03),
            (GatewayOutageLost, 0.02),
        ] {
            mix = mix.with(kind, FaultShare::Probability(p));
        }
        mix
    }

    /// Sets the share of one kind, replacing an earlier one.
    pub fn with(mut self, kind: FaultKind, share: FaultShare) -> Self {
        self.shares.retain(|(k, _)| *k != kind);
        if kind != FaultKind::None {
            self.shares.push((kind, share));
        }
        self
    }

    pub fn shares(&self) -> &[(FaultKind, FaultShare)] {
        &self.shares
    }

    fn validate(&self, pump_count: usize) -> Result<(), SpecError> {
        let mut total_p = 0.0;
        let mut total_n = 0;
        for &(kind, share) in &self.shares {
            match share {
                FaultShare::Probability(p) => {
                    if !(0.0..=1.0).contains(&p) {
                        return Err(SpecError::BadProbability {
                            kind,
                            probability: p,
                        });
                    }
                    total_p += p;
                }
                FaultShare::Count(n) => total_n += n,
            }
        }
        if total_p > 1.0 + 1e-9 {
            return Err(SpecError::ProbabilitiesAboveOne { total: total_p });
        }
        if total_n > pump_count {
            return Err(SpecError::CountsAboveFleet {
                total: total_n,
                pump_count,
            });
        }
        Ok(())
    }

    /// One fault per pump.
    pub(crate) fn assign(&self, pump_count: usize, rng: &mut impl Rng) -> Vec<FaultKind> {
        let mut faults = vec![FaultKind::None; pump_count];
        let mut order: Vec<usize> = (0..pump_count).collect();
        order.shuffle(rng);
        let mut next = 0;
        for &(kind, share) in &self.shares {
            if let FaultShare::Count(n) = share {
                for &i in order.iter().skip(next).take(n) {
                    faults[i] = kind;
                }
                next += n;
            }
        }
        let probabilities: Vec<(FaultKind, f64)> = self
            .shares
            .iter()
            .filter_map(|&(kind, share)| match share {
                FaultShare::Probability(p) => Some((kind, p)),
                FaultShare::Count(_) => None,
            })
            .collect();
        for &i in order.iter().skip(next) {
            // Drawn for every pump, even with no probabilities, so adding one kind
            // does not reshuffle the others.
            let u: f64 = rng.random();
            let mut cumulative = 0.0;
            for &(kind, p) in &probabilities {
                cumulative += p;
                if u < cumulative {
                    faults[i] = kind;
                    break;
                }
            }
        }
        faults
    }
}

impl Default for FaultMix {
    fn default() -> Self {
        FaultMix::realistic()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fault_names_are_the_serde_names() {
        for kind in FaultKind::ALL {
            let json = serde_json::to_value(kind).expect("serialisable");
            assert_eq!(json, kind.name());
        }
    }

    #[test]
    fn probabilities_fill_the_fleet_and_leave_the_rest_healthy() {
        use rand::SeedableRng;
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(1);
        let faults = FaultMix::none()
            .with(FaultKind::Occlusion, FaultShare::Probability(0.5))
            .assign(1000, &mut rng);
        let occluded = faults
            .iter()
            .filter(|f| **f == FaultKind::Occlusion)
            .count();
        assert!((400..600).contains(&occluded), "{occluded}");
        assert!(
            faults
                .iter()
                .all(|f| matches!(f, FaultKind::Occlusion | FaultKind::None))
        );
        let all = FaultMix::only(FaultKind::MotorStall).assign(50, &mut rng);
        assert!(all.iter().all(|f| *f == FaultKind::MotorStall));
    }
}
