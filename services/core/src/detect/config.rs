//! Every number a clinic may want to change, with the contract's defaults.

use chrono::Duration;

#[derive(Debug, Clone)]
pub struct DetectorConfig {
    /// TELEMETRY_LOST after this long without a reading.
    pub telemetry_lost_after: Duration,
    /// MISSED_REFILL once the appointment has passed by more than this.
    pub refill_grace: Duration,
    /// Once a refill is overdue, LOW_RESERVOIR when the threshold is this close.
    pub overdue_projection_horizon: Duration,
    /// BATTERY_EOL when ERI is projected within this.
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
    pub mri_recovery: Duration,
    /// Stalls outside the MRI window, within `stall_window`, that raise OCCLUSION. One:
    /// a stall means therapy stopped, and mild shaft wear stalls only every day or two.
    pub stalls_to_alarm: usize,
    pub stall_window: Duration,
    /// LOW_RESERVOIR priority: HIGH when projected empty within this (drugs with a
    /// withdrawal risk; one step lower otherwise), MEDIUM within the second.
    pub reservoir_urgent_within: Duration,
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
