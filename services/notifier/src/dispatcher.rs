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
use crate::log::{self, Attempt, Page, Target};
use crate::metrics::NotifierMetrics;

/// A finished attempt: the page, the endpoint and target it went to, and the receipt
/// or the error.
/// A page, the endpoint tried (empty: none), its target, the receipt or the error, and
/// how long the attempt took.
type Outcome = (Page, String, Target, Result<String, String>, Duration);

#[derive(Debug)]
pub struct Dispatcher {
    pub pool: PgPool,
    pub registry: RegistryWatch,
    pub config: NotifierConfig,
    pub metrics: NotifierMetrics,
    pub wake: Arc<Notify>,
    /// Extra trusted roots for `https://` clinic endpoints.
    pub clinic_roots: Option<tonic::transport::Certificate>,
}

impl Dispatcher {
    pub async fn run(self, shutdown: CancellationToken) {
        let mut breakers =
            Breakers::new(self.config.breaker_threshold, self.config.breaker_cool_down);
        let mut clients = Clients::new(self.clinic_roots.clone());
        let mut tasks: JoinSet<Outcome> = JoinSet::new();
        // Escalation timers are scanned once per poll interval, not on every turn of
        // the loop (which turns for every finished delivery).
        let mut escalated_at: Option<Instant> = None;
        loop {
            if escalated_at.is_none_or(|t| t.elapsed() >= self.config.poll) {
                self.escalate().await;
                escalated_at = Some(Instant::now());
            }
            self.start_due(&mut breakers, &mut clients, &mut tasks)
                .await;
            self.metrics.in_flight.set(tasks.len() as i64);
            tokio::select! {
                () = shutdown.cancelled() => break,
                () = self.wake.notified() => {}
                () = tokio::time::sleep(self.config.poll) => {}
                Some(done) = tasks.join_next() => self.reap(done, &mut breakers).await,
            }
            while let Some(done) = tasks.try_join_next() {
                self.reap(done, &mut breakers).await;
            }
        }
        // Pages in flight finish within their deadline; record what they got.
        while let Some(done) = tasks.join_next().await {
            self.reap(done, &mut breakers).await;
        }
    }

    /// Records a finished delivery task. A task that panicked leaves its page leased;
    /// the lease runs out and the page is tried again.
    async fn reap(&self, done: Result<Outcome, tokio::task::JoinError>, breakers: &mut Breakers) {
        match done {
            Ok(outcome) => self.record(outcome, breakers).await,
            Err(e) => {
                self.metrics.log_errors_total.inc();
                tracing::error!(error = %e, "a delivery task failed; its page is retried when its lease ends");
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
        let open = breakers.open(Instant::now());
        let registry = Arc::clone(&self.registry.borrow());
        // Clinics with no endpoint to try: their pages stay in the log for now.
        let blocked: Vec<String> = registry
            .clinics
            .values()
            .filter(|c| route(c, Target::Primary, &open).is_none())
            .map(|c| c.id.clone())
            .collect();
        // Held long enough for the call and its bookkeeping; a replica that dies with
        // the lease leaves the page to another after it.
        let lease = self.config.deadline + Duration::from_secs(5);
        let pages = match log::claim(&self.pool, room, &blocked, lease).await {
            Ok(pages) => pages,
            Err(e) => {
                self.metrics.log_errors_total.inc();
                tracing::warn!(error = %e, "claiming due pages failed; retrying");
                return;
            }
        };
        for page in pages {
            let clinic = registry.clinic(&page.clinic_id).cloned();
            let secret = clinic
                .as_ref()
                .and_then(|c| c.signing_secret.clone())
                .unwrap_or_else(|| self.config.signing_secret.clone());
            let deadline = self.config.deadline;
            let Some(clinic) = clinic else {
                let why = format!("clinic {} is not in the registry", page.clinic_id);
                let target = page.target;
                tasks.spawn(async move { (page, String::new(), target, Err(why), Duration::ZERO) });
                continue;
            };
            // Every endpoint of the clinic is open: the lease runs out and the page
            // comes back after the cool-down.
            let Some((url, target)) = route(&clinic, page.target, &open) else {
                continue;
            };
            let url = url.to_owned();
            let channel = clients.channel(&url, deadline);
            tasks.spawn(async move {
                let started = Instant::now();
                let result = match channel {
                    Ok(channel) => deliver(channel, &url, &page, secret.as_bytes(), deadline).await,
                    Err(e) => Err(e),
                };
                (page, url, target, result, started.elapsed())
            });
        }
    }

    async fn record(&self, (page, url, used, result, took): Outcome, breakers: &mut Breakers) {
        if !url.is_empty() {
            let outcome = if result.is_ok() {
                "delivered"
            } else {
                "failed"
            };
            self.metrics
                .delivery_seconds
                .with_label_values(&[outcome])
                .observe(took.as_secs_f64());
        }
        let registry = Arc::clone(&self.registry.borrow());
        let clinic = registry.clinic(&page.clinic_id);
        let attempt = Attempt {
            key: &page.key,
            endpoint: &url,
            target: used,
        };
        let outcome = match result {
            Ok(receipt) => {
                breakers.succeeded(&url);
                self.metrics
                    .pages_delivered_total
                    .with_label_values(&[&page.clinic_id, used.name()])
                    .inc();
                tracing::info!(
                    alarm_id = %page.key.alarm_id,
                    revision = page.key.revision,
                    escalation = page.key.escalation,
                    clinic = %page.clinic_id,
                    attempt = page.attempts + 1,
                    target = used.name(),
                    %receipt,
                    "page delivered"
                );
                log::delivered(&self.pool, attempt, &receipt).await
            }
            Err(error) => {
                self.metrics
                    .attempts_failed_total
                    .with_label_values(&[&page.clinic_id])
                    .inc();
                if !url.is_empty() && breakers.failed(&url, Instant::now()) {
                    self.metrics
                        .breaker_opened_total
                        .with_label_values(&[&page.clinic_id])
                        .inc();
                    // A clinic's receiver that keeps failing is an operator's problem
                    // now, whether or not a fallback takes its pages meanwhile.
                    self.metrics
                        .operator_alarms_total
                        .with_label_values(&[&page.clinic_id])
                        .inc();
                    tracing::error!(clinic = %page.clinic_id, endpoint = %url, %error, "OPERATOR ALARM: circuit opened, this clinic endpoint keeps failing; its pages go to the fallback if there is one");
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
                log::failed(&self.pool, attempt, &error, retry_in, target, alerted).await
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

/// Where a page for `target` goes now: its own endpoint, or the clinic's fallback when
/// that endpoint's circuit is open; `None` when neither may be tried.
fn route<'c>(clinic: &'c Clinic, target: Target, open: &[String]) -> Option<(&'c str, Target)> {
    let preferred = match target {
        Target::Primary => clinic.webhook.as_str(),
        Target::Escalation => clinic
            .escalation_webhook
            .as_deref()
            .unwrap_or(&clinic.webhook),
        Target::Fallback => clinic
            .fallback_webhook
            .as_deref()
            .unwrap_or(&clinic.webhook),
    };
    let is_open = |url: &str| open.iter().any(|o| o == url);
    if !is_open(preferred) {
        return Some((preferred, target));
    }
    clinic
        .fallback_webhook
        .as_deref()
        .filter(|fallback| !is_open(fallback))
        .map(|fallback| (fallback, Target::Fallback))
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn clinic(fallback: Option<&str>) -> Clinic {
        Clinic {
            id: "c".into(),
            name: "C".into(),
            webhook: "http://primary".into(),
            escalation_after: Duration::from_secs(60),
            escalation_webhook: Some("http://oncall".into()),
            fallback_webhook: fallback.map(Into::into),
            signing_secret: None,
        }
    }

    #[test]
    fn pages_go_to_their_own_endpoint_while_it_is_closed() {
        let c = clinic(Some("http://fallback"));
        assert_eq!(
            route(&c, Target::Primary, &[]),
            Some(("http://primary", Target::Primary))
        );
        assert_eq!(
            route(&c, Target::Escalation, &[]),
            Some(("http://oncall", Target::Escalation))
        );
    }

    #[test]
    fn an_open_endpoint_sends_pages_to_the_fallback() {
        let c = clinic(Some("http://fallback"));
        let open = vec!["http://primary".to_owned()];
        assert_eq!(
            route(&c, Target::Primary, &open),
            Some(("http://fallback", Target::Fallback))
        );
        let both = vec!["http://primary".to_owned(), "http://fallback".to_owned()];
        assert_eq!(route(&c, Target::Primary, &both), None);
        assert_eq!(route(&clinic(None), Target::Primary, &open), None);
    }
}
