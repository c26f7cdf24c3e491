//! Takes due pages from the delivery log and delivers them: many at once across clinics
//! and pumps, one at a time per pump (in order), none to a clinic whose circuit is
//! open; retries with backoff and jitter, never giving up; after `fallback_after`
//! failures an operator alarm and the clinic's fallback receiver. Also fires due
//! escalation timers.

use std::sync::Arc;
use std::time::{Duration, Instant};

use fleet_core::Clinic;
use fleet_store::registry::RegistryWatch;
use rand::Rng;
use sqlx::PgPool;
use tokio::sync::Notify;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::breaker::Breakers;
use crate::config::NotifierConfig;
use crate::deliver::{Clients, deliver};
use crate::log::{self, Page, Target};
use crate::metrics::NotifierMetrics;

type Outcome = (Page, Result<String, String>);

#[derive(Debug)]
pub struct Dispatcher {
    pub pool: PgPool,
    pub registry: RegistryWatch,
    pub config: NotifierConfig,
    pub metrics: NotifierMetrics,
    pub wake: Arc<Notify>,
}

impl Dispatcher {
    pub async fn run(self, shutdown: CancellationToken) {
        let mut breakers =
            Breakers::new(self.config.breaker_threshold, self.config.breaker_cool_down);
        let mut clients = Clients::default();
        let mut tasks: JoinSet<Outcome> = JoinSet::new();
        loop {
            self.escalate().await;
            self.start_due(&mut breakers, &mut clients, &mut tasks)
                .await;
            self.metrics.in_flight.set(tasks.len() as i64);
            tokio::select! {
                () = shutdown.cancelled() => break,
                () = self.wake.notified() => {}
                () = tokio::time::sleep(self.config.poll) => {}
                Some(done) = tasks.join_next() => {
                    if let Ok(outcome) = done {
                        self.record(outcome, &mut breakers).await;
                    }
                }
            }
            while let Some(done) = tasks.try_join_next() {
                if let Ok(outcome) = done {
                    self.record(outcome, &mut breakers).await;
                }
            }
        }
        // Pages in flight finish within their deadline; record what they got.
        while let Some(done) = tasks.join_next().await {
            if let Ok(outcome) = done {
                self.record(outcome, &mut breakers).await;
            }
        }
    }

    async fn escalate(&self) {
        match log::escalate_due(&self.pool, 100).await {
            Ok(0) => {}
            Ok(n) => {
                self.metrics.escalations_total.inc_by(n as u64);
                tracing::info!(pages = n, "escalated unacknowledged alarms");
            }
            Err(e) => {
                self.metrics.log_errors_total.inc();
                tracing::warn!(error = %e, "escalation scan failed; retrying");
            }
        }
    }

    async fn start_due(
        &self,
        breakers: &mut Breakers,
        clients: &mut Clients,
        tasks: &mut JoinSet<Outcome>,
    ) {
        let room = self.config.max_in_flight.saturating_sub(tasks.len());
        if room == 0 {
            return;
        }
        let open = breakers.open_clinics(Instant::now());
        // Held long enough for the call and its bookkeeping; a replica that dies with
        // the lease leaves the page to another after it.
        let lease = self.config.deadline + Duration::from_secs(5);
        let pages = match log::claim(&self.pool, room, &open, lease).await {
            Ok(pages) => pages,
            Err(e) => {
                self.metrics.log_errors_total.inc();
                tracing::warn!(error = %e, "claiming due pages failed; retrying");
                return;
            }
        };
        let registry = Arc::clone(&self.registry.borrow());
        for page in pages {
            let clinic = registry.clinic(&page.clinic_id).cloned();
            let secret = clinic
                .as_ref()
                .and_then(|c| c.signing_secret.clone())
                .unwrap_or_else(|| self.config.signing_secret.clone());
            let deadline = self.config.deadline;
            let Some(clinic) = clinic else {
                let why = format!("clinic {} is not in the registry", page.clinic_id);
                tasks.spawn(async move { (page, Err(why)) });
                continue;
            };
            let url = endpoint(&clinic, page.target).to_owned();
            let channel = clients.channel(&url, deadline);
            tasks.spawn(async move {
                let result = match channel {
                    Ok(channel) => deliver(channel, &url, &page, secret.as_bytes(), deadline).await,
                    Err(e) => Err(e),
                };
                (page, result)
            });
        }
    }

    async fn record(&self, (page, result): Outcome, breakers: &mut Breakers) {
        let registry = Arc::clone(&self.registry.borrow());
        let clinic = registry.clinic(&page.clinic_id);
        let outcome = match result {
            Ok(receipt) => {
                breakers.succeeded(&page.clinic_id);
                self.metrics
                    .pages_delivered_total
                    .with_label_values(&[&page.clinic_id, page.target.name()])
                    .inc();
                tracing::info!(
                    alarm_id = %page.key.alarm_id,
                    revision = page.key.revision,
                    escalation = page.key.escalation,
                    clinic = %page.clinic_id,
                    attempt = page.attempts + 1,
                    %receipt,
                    "page delivered"
                );
                log::delivered(&self.pool, &page.key, &receipt).await
            }
            Err(error) => {
                self.metrics
                    .attempts_failed_total
                    .with_label_values(&[&page.clinic_id])
                    .inc();
                if breakers.failed(&page.clinic_id, Instant::now()) {
                    self.metrics
                        .breaker_opened_total
                        .with_label_values(&[&page.clinic_id])
                        .inc();
                    tracing::warn!(clinic = %page.clinic_id, "circuit opened: pausing pages to this clinic");
                }
                let attempts = page.attempts + 1;
                let past_bound = attempts >= self.config.fallback_after;
                let mut alerted = page.operator_alerted;
                if past_bound && !alerted {
                    alerted = true;
                    self.metrics
                        .operator_alarms_total
                        .with_label_values(&[&page.clinic_id])
                        .inc();
                    tracing::error!(
                        clinic = %page.clinic_id,
                        alarm_id = %page.key.alarm_id,
                        attempts,
                        %error,
                        "OPERATOR ALARM: a page to this clinic keeps failing"
                    );
                }
                let target = match clinic {
                    Some(c) if past_bound && c.fallback_webhook.is_some() => Target::Fallback,
                    _ => page.target,
                };
                let retry_in = self.retry_delay(attempts);
                tracing::warn!(
                    alarm_id = %page.key.alarm_id,
                    clinic = %page.clinic_id,
                    attempts,
                    retry_in = ?retry_in,
                    %error,
                    "page not delivered; will retry"
                );
                log::failed(&self.pool, &page.key, &error, retry_in, target, alerted).await
            }
        };
        if let Err(e) = outcome {
            // The lease runs out and the page is tried again: at least once, still.
            self.metrics.log_errors_total.inc();
            tracing::warn!(error = %e, alarm_id = %page.key.alarm_id, "recording a delivery outcome failed");
        }
    }

    /// Full jitter on an exponential ceiling.
    fn retry_delay(&self, attempts: i32) -> Duration {
        let exp = u32::try_from(attempts.clamp(0, 20)).unwrap_or(20);
        let ceiling = self
            .config
            .retry_initial
            .saturating_mul(1u32 << exp)
            .min(self.config.retry_max);
        let ms = u64::try_from(ceiling.as_millis())
            .unwrap_or(u64::MAX)
            .max(1);
        Duration::from_millis(rand::rng().random_range(ms / 2..=ms))
    }
}

fn endpoint(clinic: &Clinic, target: Target) -> &str {
    match target {
        Target::Primary => &clinic.webhook,
        Target::Escalation => clinic
            .escalation_webhook
            .as_deref()
            .unwrap_or(&clinic.webhook),
        Target::Fallback => clinic
            .fallback_webhook
            .as_deref()
            .unwrap_or(&clinic.webhook),
    }
}
