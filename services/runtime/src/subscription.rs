//! An MQTT subscription that must hold on every connection (clean sessions forget
//! theirs): sent on each CONNACK, sent again while unanswered, settled by the SUBACK.
//!
//! It is sent from a task of its own that waits for room in the client's request
//! queue. Just after a reconnection that queue may still be full of the lost
//! connection's requests, and a subscription that failed to queue there once left a
//! client connected, silent and never subscribed again (seen under load in ingest).
//! The owner's event loop keeps being polled meanwhile, which is what empties the
//! queue.

use std::time::Duration;

use rumqttc::{AsyncClient, QoS, SubAck};
use tokio::time::Instant;

#[derive(Debug)]
pub struct Subscription {
    topic: String,
    qos: QoS,
    /// How long an answer may take before the subscription is sent again.
    timeout: Duration,
    /// Connected and not answered yet: when to send it again.
    due: Option<Instant>,
}

impl Subscription {
    pub fn new(topic: impl Into<String>, qos: QoS, timeout: Duration) -> Self {
        Subscription {
            topic: topic.into(),
            qos,
            timeout,
            due: None,
        }
    }

    /// A connection is up (CONNACK): subscribe on it.
    pub fn connected(&mut self, client: &AsyncClient) {
        self.send(client);
    }

    /// The broker answered (SUBACK): true when it granted the subscription. A refusal
    /// (the ACL: the certificate is not the identity that may read this topic) is
    /// logged here and not resent, since the ACL will not change its mind; the caller
    /// counts it and decides what it means for its readiness.
    pub fn answered(&mut self, ack: &SubAck) -> bool {
        self.due = None;
        let refused = crate::mqtt::suback_refused(ack);
        if refused {
            tracing::error!(topic = %self.topic, "the broker refused this subscription (ACL): is the certificate the right identity's?");
        }
        !refused
    }

    /// The connection is gone: nothing to wait for until the next one.
    pub fn disconnected(&mut self) {
        self.due = None;
    }

    /// Resolves when the subscription has gone unanswered for too long (never while
    /// it is answered or disconnected); then call [`resend`](Self::resend).
    pub async fn overdue(&self) {
        match self.due {
            Some(at) => tokio::time::sleep_until(at).await,
            None => std::future::pending().await,
        }
    }

    /// Sends the subscription again after [`overdue`](Self::overdue).
    pub fn resend(&mut self, client: &AsyncClient) {
        tracing::error!(
            topic = %self.topic,
            timeout_s = self.timeout.as_secs(),
            "mqtt subscription unanswered; sending it again"
        );
        self.send(client);
    }

    fn send(&mut self, client: &AsyncClient) {
        self.due = Some(Instant::now() + self.timeout);
        let (client, topic, qos) = (client.clone(), self.topic.clone(), self.qos);
        tokio::spawn(async move {
            if let Err(e) = client.subscribe(&topic, qos).await {
                tracing::error!(%topic, error = %e, "cannot send the mqtt subscription");
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn an_unanswered_subscription_falls_due_and_an_answered_one_never_does() {
        let options = rumqttc::MqttOptions::new("test", "127.0.0.1", 1);
        // A queue of one, already full: the subscription waits for room, never fails.
        let (client, _eventloop) = AsyncClient::new(options, 1);
        client
            .try_publish("t", QoS::AtMostOnce, false, vec![1])
            .expect("queued");
        let timeout = Duration::from_millis(50);
        let mut sub = Subscription::new("fleet/#", QoS::AtLeastOnce, timeout);
        tokio::select! {
            () = sub.overdue() => panic!("due before any connection"),
            () = tokio::time::sleep(timeout * 3) => {}
        }
        sub.connected(&client);
        tokio::select! {
            () = sub.overdue() => {}
            () = tokio::time::sleep(timeout * 20) => panic!("not due after its timeout"),
        }
        sub.resend(&client);
        let granted = SubAck::new(
            1,
            vec![rumqttc::SubscribeReasonCode::Success(QoS::AtLeastOnce)],
        );
        assert!(sub.answered(&granted));
        let refused = SubAck::new(2, vec![rumqttc::SubscribeReasonCode::Failure]);
        assert!(!sub.answered(&refused));
        tokio::select! {
            () = sub.overdue() => panic!("an answered subscription is never due"),
            () = tokio::time::sleep(timeout * 3) => {}
        }
    }
}
