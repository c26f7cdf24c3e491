//! The API over gRPC (`fleet.api.v1.FleetApi`): the token in the `authorization`
//! metadata, the operations in [`Service`], the answers mapped to protobuf. The
//! caller's address is the connection's (`Request::remote_addr`), or the client a
//! trusted proxy names in `x-forwarded-for` metadata (see `limits.rs`).

use std::sync::Arc;
use std::time::Instant;

use chrono::{DateTime, Utc};
use fleet_proto::api::v1 as pb;
use fleet_proto::api::v1::fleet_api_server::FleetApi;
use prost_types::Timestamp;
use tonic::{Request, Response, Status};

use crate::metrics::ApiMetrics;
use crate::model::{self, AcknowledgeRequest, AlarmFilter};
use crate::service::{ApiError, Caller, Service};

#[derive(Debug, Clone)]
pub struct Grpc {
    service: Arc<Service>,
    metrics: ApiMetrics,
}

impl Grpc {
    pub fn new(service: Arc<Service>, metrics: ApiMetrics) -> Self {
        Self { service, metrics }
    }

    /// Runs one call and counts it by its gRPC code.
    async fn observed<T>(
        &self,
        operation: &str,
        call: impl Future<Output = Result<Response<T>, Status>>,
    ) -> Result<Response<T>, Status> {
        let started = Instant::now();
        let answer = call.await;
        let outcome = match &answer {
            Ok(_) => "Ok".to_owned(),
            Err(status) => format!("{:?}", status.code()),
        };
        self.metrics
            .observe("grpc", operation, &outcome, started.elapsed());
        answer
    }

    async fn caller<T>(&self, request: &Request<T>, what: &str) -> Result<Caller, Status> {
        let token = request
            .metadata()
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "));
        let forwarded = request
            .metadata()
            .get_all("x-forwarded-for")
            .iter()
            .filter_map(|v| v.to_str().ok());
        let origin = self
            .service
            .limits()
            .origin("grpc", request.remote_addr(), forwarded);
        Ok(self.service.authenticate(token, what, origin).await?)
    }
}

impl From<ApiError> for Status {
    fn from(e: ApiError) -> Status {
        match &e {
            ApiError::Unauthenticated => Status::unauthenticated(e.to_string()),
            ApiError::Denied(_) => Status::permission_denied(e.to_string()),
            ApiError::NotFound(_) => Status::not_found(e.to_string()),
            ApiError::Invalid(_) => Status::invalid_argument(e.to_string()),
            ApiError::RateLimited { .. } => Status::resource_exhausted(e.to_string()),
            ApiError::Unavailable(inner) => {
                tracing::error!(error = %inner, "database error answering an API call");
                Status::unavailable(e.to_string())
            }
            ApiError::Internal(inner) => {
                tracing::error!(error = %inner, "internal error answering an API call");
                Status::internal(e.to_string())
            }
        }
    }
}

fn timestamp(t: DateTime<Utc>) -> Timestamp {
    Timestamp {
        seconds: t.timestamp(),
        nanos: t.timestamp_subsec_nanos() as i32,
    }
}

fn time(t: Option<Timestamp>, name: &str) -> Result<Option<DateTime<Utc>>, Status> {
    t.map(|t| {
        DateTime::from_timestamp(t.seconds, t.nanos.max(0) as u32)
            .ok_or_else(|| Status::invalid_argument(format!("{name} is out of range")))
    })
    .transpose()
}

fn some(text: String) -> Option<String> {
    (!text.is_empty()).then_some(text)
}

fn alarm(a: model::Alarm) -> pb::Alarm {
    pb::Alarm {
        alarm_id: a.alarm_id,
        revision: a.revision,
        pump_id: a.pump_id,
        clinic_id: a.clinic_id.unwrap_or_default(),
        kind: a.kind,
        priority: a.priority,
        state: a.state,
        raised_at: Some(timestamp(a.raised_at)),
        updated_at: Some(timestamp(a.updated_at)),
        message: a.message,
        acknowledged_at: a.acknowledged_at.map(timestamp),
        acknowledged_by: a.acknowledged_by.unwrap_or_default(),
    }
}

/// The operations themselves; the trait below counts each call.
impl Grpc {
    async fn answer_list_alarms(
        &self,
        request: Request<pb::ListAlarmsRequest>,
    ) -> Result<Response<pb::ListAlarmsResponse>, Status> {
        let caller = self.caller(&request, "ListAlarms").await?;
        let r = request.into_inner();
        let filter = AlarmFilter {
            state: some(r.state),
            priority: some(r.priority),
            kind: some(r.kind),
            pump_id: some(r.pump_id),
            since: time(r.since, "since")?,
            until: time(r.until, "until")?,
            active: r.active,
            limit: (r.limit > 0).then_some(r.limit),
        };
        let alarms = self.service.list_alarms(&caller, filter).await?;
        Ok(Response::new(pb::ListAlarmsResponse {
            alarms: alarms.into_iter().map(alarm).collect(),
        }))
    }

    async fn answer_get_alarm(
        &self,
        request: Request<pb::GetAlarmRequest>,
    ) -> Result<Response<pb::GetAlarmResponse>, Status> {
        let caller = self.caller(&request, "GetAlarm").await?;
        let detail = self
            .service
            .get_alarm(&caller, &request.into_inner().alarm_id)
            .await?;
        Ok(Response::new(pb::GetAlarmResponse {
            alarm: Some(alarm(detail.alarm)),
            revisions: detail
                .revisions
                .into_iter()
                .map(|r| pb::AlarmRevision {
                    revision: r.revision,
                    state: r.state,
                    priority: r.priority,
                    detected_at: Some(timestamp(r.detected_at)),
                    message: r.message,
                    evidence_json: r.evidence.to_string(),
                })
                .collect(),
            deliveries: detail
                .deliveries
                .into_iter()
                .map(|d| pb::Delivery {
                    revision: d.revision,
                    escalation: d.escalation,
                    target: d.target,
                    status: d.status,
                    attempts: d.attempts,
                    created_at: Some(timestamp(d.created_at)),
                    delivered_at: d.delivered_at.map(timestamp),
                    last_error: d.last_error.unwrap_or_default(),
                    history: d
                        .history
                        .into_iter()
                        .map(|a| pb::DeliveryAttempt {
                            attempt: a.attempt,
                            at: Some(timestamp(a.at)),
                            target: a.target,
                            endpoint: a.endpoint,
                            accepted: a.accepted,
                            detail: a.detail,
                        })
                        .collect(),
                })
                .collect(),
            acknowledgements: detail
                .acknowledgements
                .into_iter()
                .map(|a| pb::Acknowledgement {
                    clinician: a.clinician,
                    note: a.note,
                    at: Some(timestamp(a.at)),
                })
                .collect(),
        }))
    }

    async fn answer_acknowledge_alarm(
        &self,
        request: Request<pb::AcknowledgeAlarmRequest>,
    ) -> Result<Response<pb::AcknowledgeAlarmResponse>, Status> {
        let caller = self.caller(&request, "AcknowledgeAlarm").await?;
        let r = request.into_inner();
        let answer = self
            .service
            .acknowledge(
                &caller,
                &r.alarm_id,
                &AcknowledgeRequest {
                    clinician: r.clinician,
                    note: r.note,
                },
            )
            .await?;
        Ok(Response::new(pb::AcknowledgeAlarmResponse {
            known: answer.known,
        }))
    }

    async fn answer_list_pumps(
        &self,
        request: Request<pb::ListPumpsRequest>,
    ) -> Result<Response<pb::ListPumpsResponse>, Status> {
        let caller = self.caller(&request, "ListPumps").await?;
        let pumps = self.service.list_pumps(&caller).await?;
        Ok(Response::new(pb::ListPumpsResponse {
            pumps: pumps
                .into_iter()
                .map(|p| pb::Pump {
                    pump_id: p.pump_id,
                    clinic_id: p.clinic_id.unwrap_or_default(),
                    model: p.model.unwrap_or_default(),
                    firmware: p.firmware.unwrap_or_default(),
                    last_contact: p.last_contact.map(timestamp),
                    open_alarms: p.open_alarms,
                    drug: p.drug.unwrap_or_default(),
                    reservoir_ml: p.reservoir_ml,
                    refill_due_at: p.refill_due_at.map(timestamp),
                })
                .collect(),
        }))
    }

    async fn answer_get_pump_timeline(
        &self,
        request: Request<pb::GetPumpTimelineRequest>,
    ) -> Result<Response<pb::GetPumpTimelineResponse>, Status> {
        let caller = self.caller(&request, "GetPumpTimeline").await?;
        let r = request.into_inner();
        let (Some(from), Some(to)) = (time(r.from, "from")?, time(r.to, "to")?) else {
            return Err(Status::invalid_argument("from and to are required"));
        };
        let timeline = self
            .service
            .pump_timeline(&caller, &r.pump_id, from, to)
            .await?;
        Ok(Response::new(pb::GetPumpTimelineResponse {
            bucket_seconds: u32::try_from(timeline.bucket_seconds).unwrap_or(u32::MAX),
            entries: timeline
                .rows
                .into_iter()
                .map(|e| pb::TimelineEntry {
                    at: Some(timestamp(e.at)),
                    record: e.record.as_str().to_owned(),
                    what: e.what,
                    readings: e.readings,
                    reservoir_ml: e.reservoir_ml,
                    battery_pct: e.battery_pct,
                    battery_v: e.battery_v,
                    catheter_pressure_kpa: e.catheter_pressure_kpa,
                    motor_current_ma: e.motor_current_ma,
                    detail: e.detail,
                })
                .collect(),
        }))
    }
}

#[tonic::async_trait]
impl FleetApi for Grpc {
    async fn list_alarms(
        &self,
        request: Request<pb::ListAlarmsRequest>,
    ) -> Result<Response<pb::ListAlarmsResponse>, Status> {
        self.observed("ListAlarms", self.answer_list_alarms(request))
            .await
    }

    async fn get_alarm(
        &self,
        request: Request<pb::GetAlarmRequest>,
    ) -> Result<Response<pb::GetAlarmResponse>, Status> {
        self.observed("GetAlarm", self.answer_get_alarm(request))
            .await
    }

    async fn acknowledge_alarm(
        &self,
        request: Request<pb::AcknowledgeAlarmRequest>,
    ) -> Result<Response<pb::AcknowledgeAlarmResponse>, Status> {
        self.observed("AcknowledgeAlarm", self.answer_acknowledge_alarm(request))
            .await
    }

    async fn list_pumps(
        &self,
        request: Request<pb::ListPumpsRequest>,
    ) -> Result<Response<pb::ListPumpsResponse>, Status> {
        self.observed("ListPumps", self.answer_list_pumps(request))
            .await
    }

    async fn get_pump_timeline(
        &self,
        request: Request<pb::GetPumpTimelineRequest>,
    ) -> Result<Response<pb::GetPumpTimelineResponse>, Status> {
        self.observed("GetPumpTimeline", self.answer_get_pump_timeline(request))
            .await
    }
}
