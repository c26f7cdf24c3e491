//! What a simulated fleet is asked to be: its size, time span, cadence and seed
//! ([`FleetSpec`]), which faults are injected into how many pumps ([`FaultMix`]), and
//! the knobs that vary the fleet away from the default one to test that a detector
//! generalises: sensor noise, programmed rates, pump models ([`ModelMix`]) and fault
//! size. Every knob defaults to the behaviour the simulator had before it existed, bit
//! for bit, so a default spec keeps giving the same readings and truth.

use chrono::{DateTime, Duration, Utc};
use rand::Rng;
use rand::seq::SliceRandom;
use serde::{Deserialize, Serialize};

/// The interrogation cadence the contract calls the default.
pub const DEFAULT_CADENCE: Duration = Duration::hours(1);

/// The first pump serial number, so ids read like the field's (`ITP40-100000`).
pub const DEFAULT_FIRST_PUMP_NUMBER: u32 = 100_000;

/// Programmed rates drawn by default, mL/day (log-uniform, then limited by the refill
/// interval the pump's reservoir allows).
pub const DEFAULT_RATE_RANGE_ML_PER_DAY: (f64, f64) = (0.3, 1.6);
/// Rates a clinic may program, mL/day: from a slow ziconotide or morphine infusion
/// that a 20 mL pump holds for six months, to a high-volume bupivacaine mix that
/// needs a refill every couple of weeks.
pub const RATE_LIMITS_ML_PER_DAY: (f64, f64) = (0.05, 3.0);
/// Allowed range of [`FleetSpec::noise_scale`].
pub const NOISE_SCALE_LIMITS: (f64, f64) = (0.0, 5.0);
/// Allowed range of [`FleetSpec::fault_scale`].
pub const FAULT_SCALE_LIMITS: (f64, f64) = (0.25, 4.0);

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
    /// Multiplies every measurement noise the pumps have: catheter pressure (0.7 kPa
    /// standard deviation at 1), motor current (0.03 mA), fuel gauge (0.03 %), cell
    /// voltage (3 mV), temperature (0.05 °C) and the clinician's aspiration of the
    /// residual at a refill (0.05 mL, clipped at three deviations). The reservoir
    /// volume is the pump's computation from commanded delivery, not a measurement, so
    /// it has no noise to scale. Noise never changes what happens (it is hashed, or
    /// drawn after the event), only what is measured. Realistic: 1 to 3; 0 gives
    /// noiseless sensors; at most 5, where a healthy refill's aspiration error (at most
    /// 0.75 mL) still stays below the 1 mL a clinic calls consequential.
    pub noise_scale: f64,
    /// The range programmed rates are drawn from, mL/day, log-uniformly. Each pump's
    /// reservoir narrows it: the maximum is lowered to what keeps refills at least 14
    /// days apart (never below the minimum), and the minimum raised to what keeps them
    /// at most six months apart (`pumps.md`: refills every one to six months; never
    /// above the maximum). Default 0.3-1.6 (refills every two weeks to four months);
    /// realistic variants 0.1-0.4 (slow infusions, long intervals) and 0.8-2.5
    /// (high-volume mixes, frequent refills); within [`RATE_LIMITS_ML_PER_DAY`].
    pub rate_range_ml_per_day: (f64, f64),
    /// Which pump models the fleet is made of.
    pub models: ModelMix,
    /// How big the injected faults are, 1 being the default sizes:
    ///
    /// - catheter occlusion on a sensor pump: the pressure ramp (6-15 kPa/day at 1);
    /// - catheter occlusion on a valve pump: the residual excess found at the refill
    ///   above the consequential discrepancy (1 mL on 20 mL pumps, 2 mL on 40 mL
    ///   pumps): `(1 + scale) x consequential + scale x U(0, 1)` mL, never less than
    ///   the consequential volume plus the largest aspiration error plus 0.1 mL, so a
    ///   labelled occlusion is always a consequential one by the contract's definition;
    /// - premature battery depletion (internal short): the drain, through the time
    ///   from the short to ERI (divided by the scale, and never so long that ERI minus
    ///   the 90-day horizon falls outside the run), at least 0.25 %/day (five times
    ///   nominal) times the scale when the scale is below 1;
    /// - shaft wear: how often the motor stalls (stall intervals divided by the scale);
    /// - a rate raised without moving the appointment: the rise over the old rate
    ///   (x1.6-2.2 at 1), never less than what makes the reservoir reach its threshold
    ///   three days before the appointment, so it stays a LOW_RESERVOIR episode.
    ///
    /// Benign look-alikes and outages are not faults of a size and do not change.
    /// Realistic: 0.5 (a partial occlusion, a mild short) to 2; within
    /// [`FAULT_SCALE_LIMITS`]. Truth windows follow the size: a slow pressure ramp gets
    /// until it is 24 kPa above baseline (4 days at the default slowest 6 kPa/day).
    pub fault_scale: f64,
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
            noise_scale: 1.0,
            rate_range_ml_per_day: DEFAULT_RATE_RANGE_ML_PER_DAY,
            models: ModelMix::realistic(),
            fault_scale: 1.0,
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

    /// See [`FleetSpec::noise_scale`].
    pub fn with_noise_scale(mut self, scale: f64) -> Self {
        self.noise_scale = scale;
        self
    }

    /// See [`FleetSpec::rate_range_ml_per_day`].
    pub fn with_rate_range(mut self, min_ml_per_day: f64, max_ml_per_day: f64) -> Self {
        self.rate_range_ml_per_day = (min_ml_per_day, max_ml_per_day);
        self
    }

    /// See [`FleetSpec::models`].
    pub fn with_models(mut self, models: ModelMix) -> Self {
        self.models = models;
        self
    }

    /// See [`FleetSpec::fault_scale`].
    pub fn with_fault_scale(mut self, scale: f64) -> Self {
        self.fault_scale = scale;
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
        let within =
            |value: f64, (lo, hi): (f64, f64)| value.is_finite() && lo <= value && value <= hi;
        if !within(self.noise_scale, NOISE_SCALE_LIMITS) {
            return Err(SpecError::BadNoiseScale {
                scale: self.noise_scale,
            });
        }
        let (min, max) = self.rate_range_ml_per_day;
        if !(within(min, RATE_LIMITS_ML_PER_DAY)
            && within(max, RATE_LIMITS_ML_PER_DAY)
            && min <= max)
        {
            return Err(SpecError::BadRateRange { min, max });
        }
        if !within(self.fault_scale, FAULT_SCALE_LIMITS) {
            return Err(SpecError::BadFaultScale {
                scale: self.fault_scale,
            });
        }
        self.models.validate()?;
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
    #[error(
        "noise scale {scale} is not within {}..={}",
        NOISE_SCALE_LIMITS.0,
        NOISE_SCALE_LIMITS.1
    )]
    BadNoiseScale { scale: f64 },
    #[error(
        "rate range {min}..{max} mL/day is not an ordered range within {}..={}",
        RATE_LIMITS_ML_PER_DAY.0,
        RATE_LIMITS_ML_PER_DAY.1
    )]
    BadRateRange { min: f64, max: f64 },
    #[error(
        "fault scale {scale} is not within {}..={}",
        FAULT_SCALE_LIMITS.0,
        FAULT_SCALE_LIMITS.1
    )]
    BadFaultScale { scale: f64 },
    #[error("unknown pump model {model:?} (known: ITP-20, ITP-40, ITV-20, ITV-40)")]
    UnknownModel { model: String },
    #[error("model weight {weight} for {model} is not a finite number of at least 0")]
    BadModelWeight { model: &'static str, weight: f64 },
    #[error("the model mix has no model with a weight above 0")]
    NoModel,
}

/// Which pump models a fleet is drawn from, by weight. Faults that need a motor and
/// its sensors (MRI stall, shaft wear, clinician bolus spikes) go to the peristaltic
/// (`ITP`) models of the mix, either size equally likely; in a mix without one they
/// are not injected, and the truth says `none` for that pump.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ModelMix {
    /// In the order of [`ModelMix::MODELS`].
    weights: [f64; 4],
}

impl ModelMix {
    /// Peristaltic pumps with catheter pressure and motor current sensors (`ITP`), and
    /// valve-gated pumps without (`ITV`), each with a 20 or 40 mL reservoir.
    pub const MODELS: [&'static str; 4] = ["ITP-20", "ITP-40", "ITV-20", "ITV-40"];

    /// The default: two thirds sensor pumps, a little more 20 mL than 40 mL.
    pub fn realistic() -> Self {
        ModelMix {
            weights: [0.35, 0.30, 0.20, 0.15],
        }
    }

    /// The listed models, equally likely. Names as in [`ModelMix::MODELS`].
    pub fn only<S: AsRef<str>>(models: &[S]) -> Result<Self, SpecError> {
        let mut mix = ModelMix { weights: [0.0; 4] };
        for model in models {
            let model = model.as_ref().trim();
            let i = ModelMix::MODELS
                .iter()
                .position(|m| *m == model)
                .ok_or_else(|| SpecError::UnknownModel {
                    model: model.to_owned(),
                })?;
            mix.weights[i] = 1.0;
        }
        mix.validate()?;
        Ok(mix)
    }

    /// `(model, weight)` of every model that can be drawn, in [`ModelMix::MODELS`] order.
    pub fn weights(&self) -> Vec<(&'static str, f64)> {
        ModelMix::MODELS
            .into_iter()
            .zip(self.weights)
            .filter(|&(_, w)| w > 0.0)
            .collect()
    }

    fn validate(&self) -> Result<(), SpecError> {
        for (model, weight) in ModelMix::MODELS.into_iter().zip(self.weights) {
            if !(weight.is_finite() && weight >= 0.0) {
                return Err(SpecError::BadModelWeight { model, weight });
            }
        }
        if self.weights.iter().all(|&w| w <= 0.0) {
            return Err(SpecError::NoModel);
        }
        Ok(())
    }
}

impl Default for ModelMix {
    fn default() -> Self {
        ModelMix::realistic()
    }
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
