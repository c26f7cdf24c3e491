//! Whether a reading makes sense, with errors that name the field and the problem.
//!
//! Decoding (JSON or protobuf) reports the shape problems: missing or wrongly typed
//! fields, unparseable timestamps, unknown event types. [`Reading::validate`] then checks
//! the values. Both produce the same typed [`Violation`]s, so a dead-letter record or a
//! `fleetctl` line says the same thing whichever encoding the gateway used.

use std::fmt;

use crate::reading::{PumpEvent, Reading};

/// Slack for comparing volumes written with finite decimal precision.
const VOLUME_EPSILON_ML: f64 = 1e-6;

/// What is wrong with one field.
#[derive(Debug, Clone, PartialEq)]
pub enum Problem {
    /// The input is not JSON (or not protobuf) at all.
    Undecodable {
        detail: String,
    },
    Missing,
    WrongType {
        detail: String,
    },
    UnparseableTimestamp {
        detail: String,
    },
    UnknownEventType {
        found: String,
    },
    Empty,
    Negative {
        value: f64,
    },
    NotFinite {
        value: f64,
    },
    AboveCapacity {
        value_ml: f64,
        capacity_ml: f64,
    },
    OutOfRange {
        value: f64,
        min: f64,
        max: f64,
    },
}

impl Problem {
    /// A short stable name, used as a dead-letter reason and a metric label.
    pub fn code(&self) -> &'static str {
        match self {
            Problem::Undecodable { .. } => "undecodable",
            Problem::Missing => "missing_field",
            Problem::WrongType { .. } => "wrong_type",
            Problem::UnparseableTimestamp { .. } => "unparseable_timestamp",
            Problem::UnknownEventType { .. } => "unknown_event_type",
            Problem::Empty => "empty_id",
            Problem::Negative { .. } => "negative_value",
            Problem::NotFinite { .. } => "not_finite",
            Problem::AboveCapacity { .. } => "above_capacity",
            Problem::OutOfRange { .. } => "out_of_range",
        }
    }
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Problem::Undecodable { detail } => write!(f, "undecodable: {detail}"),
            Problem::Missing => f.write_str("missing"),
            Problem::WrongType { detail } => write!(f, "wrong type: {detail}"),
            Problem::UnparseableTimestamp { detail } => f.write_str(detail),
            Problem::UnknownEventType { found } => write!(f, "unknown event type {found:?}"),
            Problem::Empty => f.write_str("empty"),
            Problem::Negative { value } => write!(f, "negative ({value})"),
            Problem::NotFinite { value } => write!(f, "not a finite number ({value})"),
            Problem::AboveCapacity {
                value_ml,
                capacity_ml,
            } => write!(
                f,
                "{value_ml} mL is above the reservoir capacity of {capacity_ml} mL"
            ),
            Problem::OutOfRange { value, min, max } => {
                write!(f, "{value} is outside {min}..={max}")
            }
        }
    }
}

/// One problem with one field; `field` is a path such as `events[2].at`, empty when the
/// whole input is at fault.
#[derive(Debug, Clone, PartialEq)]
pub struct Violation {
    pub field: String,
    pub problem: Problem,
}

impl Violation {
    pub fn new(field: impl Into<String>, problem: Problem) -> Self {
        Violation {
            field: field.into(),
            problem,
        }
    }
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.field.is_empty() {
            write!(f, "{}", self.problem)
        } else {
            write!(f, "{}: {}", self.field, self.problem)
        }
    }
}

/// A reading that was rejected, with every problem found (at least one).
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub struct InvalidReading {
    pub violations: Vec<Violation>,
}

impl InvalidReading {
    pub fn single(field: impl Into<String>, problem: Problem) -> Self {
        InvalidReading {
            violations: vec![Violation::new(field, problem)],
        }
    }

    /// The code of the first problem: the dead-letter reason.
    pub fn reason_code(&self) -> &'static str {
        self.violations
            .first()
            .map_or("invalid", |v| v.problem.code())
    }
}

impl fmt::Display for InvalidReading {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, v) in self.violations.iter().enumerate() {
            if i > 0 {
                f.write_str("; ")?;
            }
            write!(f, "{v}")?;
        }
        Ok(())
    }
}

/// Collects violations while walking a reading.
#[derive(Default)]
struct Checker {
    violations: Vec<Violation>,
}

impl Checker {
    fn id(&mut self, field: &str, value: &str) {
        if value.trim().is_empty() {
            self.violations.push(Violation::new(field, Problem::Empty));
        }
    }

    /// Finite, any sign (temperatures, pressures).
    fn finite(&mut self, field: &str, value: f64) -> bool {
        if value.is_finite() {
            true
        } else {
            self.violations
                .push(Violation::new(field, Problem::NotFinite { value }));
            false
        }
    }

    /// Finite and not below zero (volumes, rates, concentrations, voltages).
    fn non_negative(&mut self, field: &str, value: f64) {
        if self.finite(field, value) && value < 0.0 {
            self.violations
                .push(Violation::new(field, Problem::Negative { value }));
        }
    }

    fn within(&mut self, field: &str, value: f64, min: f64, max: f64) {
        if self.finite(field, value) && !(min..=max).contains(&value) {
            self.violations.push(Violation::new(
                field,
                Problem::OutOfRange { value, min, max },
            ));
        }
    }

    fn event(&mut self, index: usize, event: &PumpEvent) {
        let field = |name: &str| format!("events[{index}].{name}");
        match event {
            PumpEvent::Refill(r) => {
                self.non_negative(&field("residual_expected_ml"), r.residual_expected_ml);
                self.non_negative(&field("residual_measured_ml"), r.residual_measured_ml);
                self.non_negative(&field("volume_added_ml"), r.volume_added_ml);
            }
            PumpEvent::Reprogram(r) => {
                self.non_negative(&field("rate_ml_per_day"), r.rate_ml_per_day);
                self.non_negative(
                    &field("previous_rate_ml_per_day"),
                    r.previous_rate_ml_per_day,
                );
            }
            PumpEvent::Bolus(b) => self.non_negative(&field("volume_ml"), b.volume_ml),
            PumpEvent::Mri(_)
            | PumpEvent::MotorStall(_)
            | PumpEvent::LowBatteryReset(_)
            | PumpEvent::DeviceAlarm(_) => {}
        }
    }
}

impl Reading {
    /// Checks every value against the contract; reports all problems, not just the first.
    pub fn validate(&self) -> Result<(), InvalidReading> {
        let mut c = Checker::default();
        c.id("pump_id", &self.pump_id);
        c.id("gateway_id", &self.gateway_id);
        c.non_negative("concentration_mg_per_ml", self.concentration_mg_per_ml);
        c.non_negative("reservoir_ml", self.reservoir_ml);
        c.non_negative("reservoir_capacity_ml", self.reservoir_capacity_ml);
        c.non_negative(
            "low_reservoir_threshold_ml",
            self.low_reservoir_threshold_ml,
        );
        c.non_negative(
            "programmed_rate_ml_per_day",
            self.programmed_rate_ml_per_day,
        );
        c.non_negative("delivered_total_ml", self.delivered_total_ml);
        c.non_negative("battery_v", self.battery_v);
        c.within("battery_pct", self.battery_pct, 0.0, 100.0);
        c.finite("temperature_c", self.temperature_c);
        if let Some(kpa) = self.catheter_pressure_kpa {
            c.finite("catheter_pressure_kpa", kpa);
        }
        if let Some(ma) = self.motor_current_ma {
            c.non_negative("motor_current_ma", ma);
        }
        let capacity_ml = self.reservoir_capacity_ml;
        if capacity_ml.is_finite() {
            for (field, value_ml) in [
                ("reservoir_ml", self.reservoir_ml),
                (
                    "low_reservoir_threshold_ml",
                    self.low_reservoir_threshold_ml,
                ),
            ] {
                if value_ml > capacity_ml + VOLUME_EPSILON_ML {
                    c.violations.push(Violation::new(
                        field,
                        Problem::AboveCapacity {
                            value_ml,
                            capacity_ml,
                        },
                    ));
                }
            }
        }
        for (i, event) in self.events.iter().enumerate() {
            c.event(i, event);
        }
        if c.violations.is_empty() {
            Ok(())
        } else {
            Err(InvalidReading {
                violations: c.violations,
            })
        }
    }
}
