//! Deterministic randomness and simulated-time arithmetic.
//!
//! What *happens* (boluses, stalls, visits) is drawn from one seeded generator per pump,
//! in event order. What is *measured* (sensor noise) is hashed from the pump and the
//! interrogation slot, so building a reading consumes no draws: a dry run that skips
//! building readings stays in step with the real run.

use chrono::{DateTime, Duration, Utc};
use rand::Rng;

pub(crate) const SECONDS_PER_DAY: f64 = 86_400.0;

/// SplitMix64 finaliser: a good 64-bit mixer, the usual way to derive seeds.
pub(crate) fn splitmix64(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// A seed for a sub-stream: `mix(seed, i)` differs for every `i`.
pub(crate) fn mix(seed: u64, stream: u64) -> u64 {
    splitmix64(seed ^ splitmix64(stream.wrapping_add(0x5851_F42D_4C95_7F2D)))
}

/// Uniform in `[0, 1)` from 53 bits of a hash.
fn unit(hash: u64) -> f64 {
    (hash >> 11) as f64 / (1u64 << 53) as f64
}

/// Measurement channels; each gets independent noise.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Channel {
    Jitter = 1,
    BatteryPct,
    BatteryV,
    Temperature,
    Pressure,
    Current,
    StallCurrent,
}

/// Noise that is a pure function of (pump, slot, channel).
#[derive(Debug, Clone, Copy)]
pub(crate) struct HashedNoise {
    pub(crate) seed: u64,
}

impl HashedNoise {
    pub(crate) fn uniform(self, slot: u64, channel: Channel) -> f64 {
        unit(mix(mix(self.seed, slot), channel as u64))
    }

    /// Standard normal (Box-Muller).
    pub(crate) fn gaussian(self, slot: u64, channel: Channel) -> f64 {
        let h = mix(mix(self.seed, slot), channel as u64);
        let u1 = unit(h).max(f64::MIN_POSITIVE);
        let u2 = unit(splitmix64(h));
        (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
    }
}

/// Standard normal from a generator (Box-Muller; avoids a distributions crate).
pub(crate) fn gaussian(rng: &mut impl Rng) -> f64 {
    let u1: f64 = rng.random::<f64>().max(f64::MIN_POSITIVE);
    let u2: f64 = rng.random();
    (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
}

/// Waiting time of a Poisson process, in days.
pub(crate) fn exponential_days(rng: &mut impl Rng, mean_days: f64) -> f64 {
    let u: f64 = rng.random::<f64>().max(f64::MIN_POSITIVE);
    -u.ln() * mean_days
}

/// Uniform in `[low, high)`; `low` when the range is empty.
pub(crate) fn between(rng: &mut impl Rng, low: f64, high: f64) -> f64 {
    if high > low {
        rng.random_range(low..high)
    } else {
        low
    }
}

pub(crate) fn days_between(from: DateTime<Utc>, to: DateTime<Utc>) -> f64 {
    (to - from).num_milliseconds() as f64 / (SECONDS_PER_DAY * 1000.0)
}

/// `at` plus a span in days, rounded to the second: every simulated instant is a whole
/// second, as in the pump's own clock.
pub(crate) fn plus_days(at: DateTime<Utc>, days: f64) -> DateTime<Utc> {
    at + Duration::seconds((days * SECONDS_PER_DAY).round() as i64)
}

/// Like [`plus_days`] but rounded up, so a level computed to be crossed at the result
/// really is crossed by then.
pub(crate) fn plus_days_ceil(at: DateTime<Utc>, days: f64) -> DateTime<Utc> {
    at + Duration::seconds((days * SECONDS_PER_DAY).ceil() as i64)
}

pub(crate) fn plus_hours(at: DateTime<Utc>, hours: f64) -> DateTime<Utc> {
    plus_days(at, hours / 24.0)
}

/// Rounded to `decimals` places, as the pump writes it (divide, don't multiply by the
/// step, so 0.3 stays 0.3 and not 0.30000000000000004).
pub(crate) fn round_dp(value: f64, decimals: i32) -> f64 {
    let scale = 10f64.powi(decimals);
    (value * scale).round() / scale
}
