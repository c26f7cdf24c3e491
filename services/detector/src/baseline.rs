//! The status quo to beat: relaying only what the pump itself says — its own audible
//! alarms, its ERI/EOS flags and its motor-stall log — one alarm per pump and kind.
//! Used to measure what the detector adds (the generalisation table), never in
//! production.

use std::collections::HashSet;

use fleet_core::alarm::{AlarmEvent, AlarmKind, AlarmPriority, AlarmState};
use fleet_core::{PumpEvent, Reading};

#[derive(Debug, Default)]
pub struct DeviceAlarmRelay {
    raised: HashSet<(String, AlarmKind)>,
}

impl DeviceAlarmRelay {
    pub fn observe(&mut self, r: &Reading) -> Vec<AlarmEvent> {
        let mut kinds = Vec::new();
        if r.eri || r.eos {
            kinds.push(AlarmKind::BatteryEol);
        }
        for event in &r.events {
            match event {
                PumpEvent::DeviceAlarm(a) if a.code.contains("RESERVOIR") => {
                    kinds.push(AlarmKind::LowReservoir)
                }
                PumpEvent::DeviceAlarm(a) if a.code == "ERI" || a.code == "EOS" => {
                    kinds.push(AlarmKind::BatteryEol)
                }
                PumpEvent::DeviceAlarm(a) if a.code == "MOTOR_STALL" => {
                    kinds.push(AlarmKind::Occlusion)
                }
                PumpEvent::MotorStall(_) => kinds.push(AlarmKind::Occlusion),
                _ => {}
            }
        }
        kinds
            .into_iter()
            .filter(|k| self.raised.insert((r.pump_id.clone(), *k)))
            .map(|kind| AlarmEvent {
                alarm_id: format!("{}:{}:device", r.pump_id, kind.name()),
                revision: 1,
                pump_id: r.pump_id.clone(),
                kind,
                priority: AlarmPriority::Medium,
                state: AlarmState::Raised,
                detected_at: r.measured_at,
                onset_at: None,
                message: format!("Pump {} raised its own {} alarm.", r.pump_id, kind.name()),
                evidence: Default::default(),
            })
            .collect()
    }
}
