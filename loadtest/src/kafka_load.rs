//! Putting a backlog into a topic as fast as the broker takes it, through the services'
//! own idempotent producer: the raw produce ceiling, and the input of the hops that
//! are timed working one off (detector, notifier). Records are queued in call order,
//! so one pump's records keep their order (the detector's rules depend on it), and at
//! most [`IN_FLIGHT`] wait for their delivery report at once.

use std::collections::VecDeque;

use fleet_core::{AlarmEvent, Reading};
use fleet_kafka::{BusError, FleetProducer, PendingDelivery};

/// Records queued but not yet confirmed by the broker.
pub const IN_FLIGHT: usize = 2000;

/// Produces `readings` to the producer's readings topic; returns once all are durable.
pub async fn readings<'a>(
    producer: &FleetProducer,
    readings: impl IntoIterator<Item = &'a Reading>,
) -> anyhow::Result<()> {
    queue_all(readings, |r| producer.queue_reading(r)).await
}

/// Produces `alarms` to the producer's alarms topic; returns once all are durable.
pub async fn alarms(producer: &FleetProducer, alarms: &[AlarmEvent]) -> anyhow::Result<()> {
    queue_all(alarms, |a| producer.queue_alarm(a)).await
}

async fn queue_all<'a, T: 'a, F>(
    items: impl IntoIterator<Item = &'a T>,
    queue: impl Fn(&'a T) -> F,
) -> anyhow::Result<()>
where
    F: Future<Output = Result<PendingDelivery, BusError>>,
{
    let mut pending: VecDeque<PendingDelivery> = VecDeque::with_capacity(IN_FLIGHT);
    for item in items {
        if pending.len() >= IN_FLIGHT
            && let Some(oldest) = pending.pop_front()
        {
            oldest.delivered().await?;
        }
        pending.push_back(queue(item).await?);
    }
    for delivery in pending {
        delivery.delivered().await?;
    }
    Ok(())
}
