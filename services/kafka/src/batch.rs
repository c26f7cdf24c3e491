//! Consuming in batches with at-least-once commits: take what the consumer has fetched,
//! write it durably, then commit the offsets after the batch's last message per
//! partition. A crash before the commit re-reads the batch; the writers are idempotent.

use std::collections::BTreeMap;
use std::time::Duration;

use futures_util::FutureExt;
use rdkafka::consumer::{CommitMode, Consumer, ConsumerContext, StreamConsumer};
use rdkafka::message::{BorrowedMessage, Message};
use rdkafka::{Offset, TopicPartitionList};
use tokio_util::sync::CancellationToken;

/// What [`next_batch_or`] came back with.
#[derive(Debug)]
pub enum Next<'c, T> {
    Batch(Vec<BorrowedMessage<'c>>),
    /// `interrupt` completed while no message had arrived yet.
    Interrupted(T),
    Stopped,
}

/// Waits for one message, then gathers more: those already fetched at once, and for up
/// to `linger` those still arriving, until `max`. None when `shutdown` fires first.
/// Memory stays bounded by `max` plus the consumer's own fetch queue.
pub async fn next_batch<'c, C: ConsumerContext + 'static>(
    consumer: &'c StreamConsumer<C>,
    max: usize,
    linger: Duration,
    shutdown: &CancellationToken,
) -> Option<Vec<BorrowedMessage<'c>>> {
    match next_batch_or(
        consumer,
        max,
        linger,
        shutdown,
        std::future::pending::<()>(),
    )
    .await
    {
        Next::Batch(batch) => Some(batch),
        Next::Interrupted(()) | Next::Stopped => None,
    }
}

/// [`next_batch`], but returns as soon as `interrupt` completes if no message has
/// arrived by then (a write finishing while the topic is idle, whose offsets should
/// be committed now rather than when the next message comes). Only the wait for the
/// first message is raced, and `recv` gives up nothing when dropped, so no message is
/// ever taken and then lost.
pub async fn next_batch_or<'c, C: ConsumerContext + 'static, T>(
    consumer: &'c StreamConsumer<C>,
    max: usize,
    linger: Duration,
    shutdown: &CancellationToken,
    interrupt: impl Future<Output = T>,
) -> Next<'c, T> {
    tokio::pin!(interrupt);
    let first = loop {
        tokio::select! {
            () = shutdown.cancelled() => return Next::Stopped,
            value = &mut interrupt => return Next::Interrupted(value),
            m = consumer.recv() => match m {
                Ok(m) => break m,
                Err(e) => tracing::warn!(error = %e, "consumer error"),
            },
        }
    };
    let mut batch = vec![first];
    let deadline = tokio::time::Instant::now() + linger;
    while batch.len() < max {
        let next = if linger.is_zero() {
            consumer.recv().now_or_never()
        } else {
            tokio::time::timeout_at(deadline, consumer.recv())
                .await
                .ok()
        };
        match next {
            Some(Ok(m)) => batch.push(m),
            Some(Err(e)) => {
                tracing::warn!(error = %e, "consumer error");
                break;
            }
            None => break,
        }
    }
    Next::Batch(batch)
}

/// Per partition, the offset after the batch's last message: what to commit once the
/// batch is durable. Owned, so the messages can be dropped while the batch is written.
pub fn offsets_after(batch: &[BorrowedMessage<'_>]) -> TopicPartitionList {
    let mut next: BTreeMap<(&str, i32), i64> = BTreeMap::new();
    for m in batch {
        let end = next.entry((m.topic(), m.partition())).or_default();
        *end = (*end).max(m.offset() + 1);
    }
    let mut offsets = TopicPartitionList::new();
    for ((topic, partition), offset) in next {
        if let Err(e) = offsets.add_partition_offset(topic, partition, Offset::Offset(offset)) {
            tracing::warn!(error = %e, topic, partition, "building an offset commit");
        }
    }
    offsets
}

/// Commits `offsets` ([`offsets_after`] a batch). Call it only once the batch is
/// durable. A failed commit is logged: the batch is read again after a restart or
/// rebalance, harmlessly.
pub fn commit<C: ConsumerContext + 'static>(
    consumer: &StreamConsumer<C>,
    offsets: &TopicPartitionList,
) {
    if let Err(e) = consumer.commit(offsets, CommitMode::Async) {
        tracing::warn!(error = %e, "committing offsets (the batch is re-read, harmlessly)");
    }
}

/// [`commit`] at shutdown: waits for the broker's answer, so the offsets are stored
/// before the consumer closes and a restart does not re-read the last batch.
pub fn commit_final<C: ConsumerContext + 'static>(
    consumer: &StreamConsumer<C>,
    offsets: &TopicPartitionList,
) {
    if let Err(e) = consumer.commit(offsets, CommitMode::Sync) {
        tracing::warn!(error = %e, "committing the last offsets at shutdown (the batch is re-read, harmlessly)");
    }
}
