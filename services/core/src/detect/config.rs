//! Every number a clinic may want to change, with the contract's defaults. Read from
//! TOML (`DetectorConfig::from_toml`): keys as the field names, durations as text like
//! `"12h"`; a key left out keeps its default, an unknown key is an error.

use chrono::Duration;
use serde::Deserialize;

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DetectorConfig {
    /// TELEMETRY_LOST after this long without a reading.
    #[serde(with = "duration_text")]
    pub telemetry_lost_after: Duration,
    /// MISSED_REFILL once the appointment has passed by more than this.
    #[serde(with = "duration_text")]
    pub refill_grace: Duration,
    /// Once a refill is overdue, LOW_RESERVOIR when the threshold is this close.
    #[serde(with = "duration_text")]
    pub overdue_projection_horizon: Duration,
    /// BATTERY_EOL when ERI is projected within this.
    #[serde(with = "duration_text")]
    pub battery_eri_horizon: Duration,
    /// The fuel-gauge level at which pumps set ERI.
    pub eri_battery_pct: f64,
    /// Days of battery history the trend is fitted on (and the least it needs).
    pub battery_trend_days: f64,
    pub battery_trend_min_days: f64,
    /// Refill residual discrepancy considered consequential, by reservoir size.
    pub residual_excess_small_ml: f64,
    pub residual_excess_large_ml: f64,
    /// Reservoirs up to this capacity use the small-pump discrepancy.
    pub small_reservoir_max_ml: f64,
    /// Catheter pressure rise over the pump's own baseline that suggests occlusion.
    pub pressure_rise_kpa: f64,
    /// Motor stalls are expected during and this long after an MRI.
    #[serde(with = "duration_text")]
    pub mri_recovery: Duration,
    /// Stalls outside the MRI window, within `stall_window`, that raise OCCLUSION. One:
    /// a stall means therapy stopped, and mild shaft wear stalls only every day or two.
    pub stalls_to_alarm: usize,
    #[serde(with = "duration_text")]
    pub stall_window: Duration,
    /// LOW_RESERVOIR priority: HIGH when projected empty within this (drugs with a
    /// withdrawal risk; one step lower otherwise), MEDIUM within the second.
    #[serde(with = "duration_text")]
    pub reservoir_urgent_within: Duration,
    #[serde(with = "duration_text")]
    pub reservoir_prompt_within: Duration,
}

impl Default for DetectorConfig {
    fn default() -> Self {
        DetectorConfig {
            telemetry_lost_after: Duration::hours(12),
            refill_grace: Duration::hours(24),
            overdue_projection_horizon: Duration::days(7),
            battery_eri_horizon: Duration::days(90),
            eri_battery_pct: 5.0,
            battery_trend_days: 30.0,
            battery_trend_min_days: 7.0,
            residual_excess_small_ml: 1.0,
            residual_excess_large_ml: 2.0,
            small_reservoir_max_ml: 20.0,
            pressure_rise_kpa: 8.0,
            mri_recovery: Duration::hours(24),
            stalls_to_alarm: 1,
            stall_window: Duration::hours(24),
            reservoir_urgent_within: Duration::days(2),
            reservoir_prompt_within: Duration::days(7),
        }
    }
}

impl DetectorConfig {
    /// The configuration in a TOML text; errors name the key and line.
    pub fn from_toml(text: &str) -> Result<Self, String> {
        toml::from_str(text).map_err(|e| e.to_string())
    }
}

/// Durations written as text (`"36h"`, `"90days"`), as everywhere else in the fleet's
/// configuration.
mod duration_text {
    use chrono::Duration;
    use serde::{Deserialize, Deserializer, de};

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let text = String::deserialize(d)?;
        let std = humantime::parse_duration(&text).map_err(|e| {
            de::Error::custom(format!("{text:?} is not a duration like \"12h\" ({e})"))
        })?;
        Duration::from_std(std).map_err(|e| de::Error::custom(format!("{text:?}: {e}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_config_file_changes_what_it_names_and_keeps_the_rest() {
        let config = DetectorConfig::from_toml(
            "telemetry_lost_after = \"6h\"\nresidual_excess_small_ml = 1.5\n",
        )
        .expect("valid");
        assert_eq!(config.telemetry_lost_after, Duration::hours(6));
        assert_eq!(config.residual_excess_small_ml, 1.5);
        let defaults = DetectorConfig::default();
        assert_eq!(config.refill_grace, defaults.refill_grace);
        assert_eq!(config.stalls_to_alarm, defaults.stalls_to_alarm);
    }

    #[test]
    fn unknown_keys_and_bad_durations_are_refused_with_their_line() {
        let unknown =
            DetectorConfig::from_toml("\ntelemetry_lost = \"6h\"\n").expect_err("unknown key");
        assert!(
            unknown.contains("line 2") && unknown.contains("telemetry_lost"),
            "{unknown}"
        );
        let bad = DetectorConfig::from_toml("refill_grace = \"soon\"").expect_err("bad duration");
        assert!(bad.contains("soon") && bad.contains("line 1"), "{bad}");
    }
}
