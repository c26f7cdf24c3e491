//! The page load both paging measurements carry: one LOW_RESERVOIR alarm raised per
//! pump, worded and evidenced as the detector words it, so the bare gRPC ceiling and
//! the real notifier move the same few hundred bytes per page. A storm of one alarm
//! per pump is also the realistic burst (a region's gateways coming back at once), and
//! the shape the notifier parallelises: it delivers one page at a time per pump.

use chrono::{DateTime, Duration, Utc};
use fleet_core::protobuf::{PageHeader, notification};
use fleet_core::signing::sign;
use fleet_core::{AlarmEvent, AlarmKind, AlarmPriority, AlarmState, Evidence};
use fleet_proto::clinic::v1::AlarmNotification;
use fleet_proto::prost::Message;

/// The clinic every page is addressed to.
pub const CLINIC: &str = "loadtest-clinic";

/// `count` alarms, one per pump (`LOAD-00000`, ...), detected at `at`.
pub fn alarms(count: usize, at: DateTime<Utc>) -> Vec<AlarmEvent> {
    (0..count)
        .map(|i| low_reservoir(&format!("LOAD-{i:05}"), at))
        .collect()
}

/// What the detector raises for a pump at its low-reservoir threshold.
fn low_reservoir(pump_id: &str, at: DateTime<Utc>) -> AlarmEvent {
    let (reservoir, rate) = (4.2, 0.48);
    let days_to_empty = 8.75;
    let stamp = |t: DateTime<Utc>| t.format("%Y-%m-%dT%H:%M:%SZ").to_string();
    let evidence = [
        ("reservoir_ml", Evidence::from(reservoir)),
        ("threshold_ml", 5.0.into()),
        ("rate_ml_per_day", rate.into()),
        ("refill_due_at", stamp(at + Duration::days(12)).into()),
        ("days_to_empty", days_to_empty.into()),
        (
            "projected_empty_at",
            stamp(at + Duration::hours(210)).into(),
        ),
    ];
    AlarmEvent {
        alarm_id: format!("{pump_id}:LOW_RESERVOIR:{}", at.timestamp()),
        revision: 1,
        pump_id: pump_id.to_owned(),
        kind: AlarmKind::LowReservoir,
        priority: AlarmPriority::Medium,
        state: AlarmState::Raised,
        detected_at: at,
        onset_at: None,
        message: format!(
            "Pump {pump_id} (morphine) is at or below its low-reservoir threshold: \
             {reservoir:.1} mL left at {rate:.2} mL/day, empty in about {days_to_empty} days; \
             refill before it runs dry."
        ),
        evidence: evidence
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v))
            .collect(),
    }
}

/// A page as the notifier sends it on a first attempt: the notification and its
/// signature (the `x-fleet-signature` metadata value) with `secret`.
#[derive(Debug, Clone)]
pub struct SignedPage {
    pub notification: AlarmNotification,
    pub signature: String,
}

pub fn signed(alarm: &AlarmEvent, secret: &[u8]) -> SignedPage {
    let header = PageHeader {
        clinic_id: CLINIC,
        delivery_attempt: 1,
        escalation: 0,
    };
    let notification = notification(alarm, header);
    let signature = sign(secret, &notification.encode_to_vec());
    SignedPage {
        notification,
        signature,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_valid_alarm_per_pump_and_a_page_of_realistic_size() {
        let alarms = alarms(3, Utc::now());
        let pumps: std::collections::BTreeSet<_> = alarms.iter().map(|a| &a.pump_id).collect();
        assert_eq!(pumps.len(), 3);
        let page = signed(&alarms[0], b"a-secret-of-some-length");
        let bytes = page.notification.encoded_len();
        assert!((200..1000).contains(&bytes), "{bytes} bytes");
        let back =
            fleet_core::protobuf::decode_alarm(&fleet_core::protobuf::encode_alarm(&alarms[0]))
                .expect("the alarm is valid by the contract");
        assert_eq!(back, alarms[0]);
    }
}
