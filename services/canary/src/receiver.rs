//! The operator receiver: the operators' clinic's `AlarmReceiver`. It checks each page's
//! signature like any clinic must, hands the canary's LOW_RESERVOIR pages to the watch,
//! and accepts everything it can read (a refused page would only be retried forever).

use std::sync::{Arc, Mutex};
use std::time::Instant;

use chrono::Utc;
use fleet_core::protobuf::alarm_of_notification;
use fleet_core::signing::{SIGNATURE_METADATA_KEY, check_page};
use fleet_core::{AlarmKind, AlarmState, Evidence};
use fleet_proto::clinic::v1::alarm_receiver_server::AlarmReceiver;
use fleet_proto::clinic::v1::{AlarmNotification, DeliveryReceipt};
use fleet_proto::prost::Message;
use tonic::{Request, Response, Status};

use crate::metrics::CanaryMetrics;
use crate::pump::slot_of;
use crate::watch::{self, Paged, Watch};

#[derive(Debug)]
pub struct OperatorReceiver {
    pub pump_id: String,
    pub secret: Vec<u8>,
    pub watch: Arc<Mutex<Watch>>,
    pub metrics: CanaryMetrics,
}

impl OperatorReceiver {
    fn record(&self, outcome: &str) {
        self.metrics.pages_total.with_label_values(&[outcome]).inc();
    }

    /// Hands a page of ours to the watch; the outcome label.
    fn on_page(&self, notification: &AlarmNotification) -> Result<&'static str, Status> {
        let alarm = alarm_of_notification(notification)
            .map_err(|e| Status::invalid_argument(e.to_string()))?;
        if alarm.pump_id != self.pump_id {
            tracing::warn!(
                pump_id = alarm.pump_id,
                clinic_id = notification.clinic_id,
                "a page for a pump other than the canary's reached the operator receiver; \
                 accepted, but that pump is assigned to the operators' clinic"
            );
            return Ok("foreign");
        }
        let ours = alarm.kind == AlarmKind::LowReservoir
            && alarm.state == AlarmState::Raised
            && notification.escalation == 0;
        let slot = match alarm.evidence.get("reservoir_ml") {
            Some(Evidence::Number(ml)) if ours => slot_of(*ml),
            _ => None,
        };
        let Some(slot) = slot else {
            return Ok("other");
        };
        let paged = watch::lock(&self.watch).paged(slot, Instant::now());
        Ok(match paged {
            Paged::Completed {
                round,
                latency,
                lost,
            } => {
                self.metrics.rounds_completed_total.inc();
                self.metrics
                    .round_trip_seconds
                    .observe(latency.as_secs_f64());
                self.metrics
                    .last_success_timestamp_seconds
                    .set(Utc::now().timestamp());
                if lost > 0 {
                    self.metrics.rounds_lost_total.inc_by(lost);
                    tracing::error!(
                        lost,
                        round,
                        "canary rounds were never paged although a later round was: pages were lost"
                    );
                }
                tracing::debug!(round, ?latency, "canary round completed");
                "completed"
            }
            Paged::Unmatched => "unmatched",
        })
    }
}

#[tonic::async_trait]
impl AlarmReceiver for OperatorReceiver {
    async fn deliver(
        &self,
        request: Request<AlarmNotification>,
    ) -> Result<Response<DeliveryReceipt>, Status> {
        let signature = request
            .metadata()
            .get(SIGNATURE_METADATA_KEY)
            .map(|value| value.to_str().unwrap_or_default());
        if let Err(e) = check_page(&self.secret, &request.get_ref().encode_to_vec(), signature) {
            self.record("refused");
            tracing::warn!(reason = %e, "page refused at the operator receiver");
            return Err(Status::unauthenticated(e.to_string()));
        }
        let notification = request.into_inner();
        let outcome = self.on_page(&notification).inspect_err(|e| {
            self.record("refused");
            tracing::warn!(
                reason = e.message(),
                "unreadable page at the operator receiver"
            );
        })?;
        self.record(outcome);
        Ok(Response::new(DeliveryReceipt {
            accepted: true,
            receipt_id: format!(
                "canary-{}-{}-{}",
                notification.alarm_id, notification.revision, notification.escalation
            ),
        }))
    }
}
