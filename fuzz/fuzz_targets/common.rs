//! Comparisons shared by the targets: a reading's numbers compared as numbers, with a
//! NaN equal to a NaN (a legitimate decoded value, not yet validated) and -0.0 equal
//! to 0.0 (proto3 leaves out a double equal to its default, 0.0, and prost compares
//! numerically, so -0.0 arrives as 0.0: the same value to every rule).
//!
//! Each target uses part of it.
#![allow(dead_code)]

use fleet_core::{AlarmEvent, Evidence, PumpEvent, Reading};

/// Every number of a reading, in a fixed order.
pub fn numbers_mut(r: &mut Reading) -> Vec<&mut f64> {
    let mut out = vec![
        &mut r.concentration_mg_per_ml,
        &mut r.reservoir_ml,
        &mut r.reservoir_capacity_ml,
        &mut r.low_reservoir_threshold_ml,
        &mut r.programmed_rate_ml_per_day,
        &mut r.delivered_total_ml,
        &mut r.battery_v,
        &mut r.battery_pct,
        &mut r.temperature_c,
    ];
    out.extend(r.catheter_pressure_kpa.as_mut());
    out.extend(r.motor_current_ma.as_mut());
    for event in &mut r.events {
        match event {
            PumpEvent::Refill(e) => out.extend([
                &mut e.residual_expected_ml,
                &mut e.residual_measured_ml,
                &mut e.volume_added_ml,
            ]),
            PumpEvent::Reprogram(e) => {
                out.extend([&mut e.rate_ml_per_day, &mut e.previous_rate_ml_per_day])
            }
            PumpEvent::Bolus(e) => out.push(&mut e.volume_ml),
            PumpEvent::Mri(_)
            | PumpEvent::MotorStall(_)
            | PumpEvent::LowBatteryReset(_)
            | PumpEvent::DeviceAlarm(_) => {}
        }
    }
    out
}

pub fn all_finite(r: &Reading) -> bool {
    numbers_mut(&mut r.clone()).iter().all(|n| n.is_finite())
}

fn same_number(a: f64, b: f64) -> bool {
    a == b || (a.is_nan() && b.is_nan())
}

/// Splits off a reading's numbers (zeroed in what is returned) so the rest can be
/// compared with `==`.
fn split(r: &Reading) -> (Reading, Vec<f64>) {
    let mut rest = r.clone();
    let numbers = numbers_mut(&mut rest)
        .into_iter()
        .map(|n| std::mem::replace(n, 0.0))
        .collect();
    (rest, numbers)
}

pub fn same_reading(a: &Reading, b: &Reading) -> bool {
    let (a_rest, a_numbers) = split(a);
    let (b_rest, b_numbers) = split(b);
    a_rest == b_rest
        && a_numbers.len() == b_numbers.len()
        && a_numbers
            .iter()
            .zip(&b_numbers)
            .all(|(x, y)| same_number(*x, *y))
}

pub fn same_alarm(a: &AlarmEvent, b: &AlarmEvent) -> bool {
    let numbers_apart = |e: &AlarmEvent| {
        let mut rest = e.clone();
        let mut numbers = Vec::new();
        for value in rest.evidence.values_mut() {
            if let Evidence::Number(n) = value {
                numbers.push(std::mem::replace(n, 0.0));
            }
        }
        (rest, numbers)
    };
    let (a_rest, a_numbers) = numbers_apart(a);
    let (b_rest, b_numbers) = numbers_apart(b);
    a_rest == b_rest
        && a_numbers.len() == b_numbers.len()
        && a_numbers
            .iter()
            .zip(&b_numbers)
            .all(|(x, y)| same_number(*x, *y))
}
