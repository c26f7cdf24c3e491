//! Checkpoints in PostgreSQL: one partition's next offset, clock and changed pump states
//! in one transaction, fenced by an epoch so that an owner that lost the partition in a
//! rebalance cannot overwrite the new owner's progress.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use fleet_core::detect::{Detector, DetectorConfig, PumpState};
use sqlx::{PgPool, Row};

/// The encoding of `detector_pump.state`: postcard of [`PumpState`]. Raise it whenever
/// `PumpState` changes shape; a build refuses state written in another format rather
/// than misreading it.
pub const STATE_FORMAT: i32 = 4;

#[derive(Debug, thiserror::Error)]
pub enum CheckpointError {
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
    #[error(
        "partition {partition}: the checkpoint was written in state format {found}, this build reads format {STATE_FORMAT}; reset the detector state for this consumer group or run the matching build"
    )]
    Format { partition: i32, found: i32 },
    #[error("partition {partition}, pump {pump_id}: stored state does not decode: {source}")]
    Corrupt {
        partition: i32,
        pump_id: String,
        source: postcard::Error,
    },
    #[error("partition {partition}, pump {pump_id}: state does not encode: {source}")]
    Encode {
        partition: i32,
        pump_id: String,
        source: postcard::Error,
    },
    #[error("partition {partition}: more pumps than a checkpoint can number")]
    TooManyPumps { partition: i32 },
    #[error(
        "partition {partition}: another detector now owns it (our epoch {epoch} is no longer current)"
    )]
    Fenced { partition: i32, epoch: i64 },
}

/// A partition taken over from its last checkpoint.
#[derive(Debug)]
pub struct Claimed {
    pub epoch: i64,
    /// The first offset the restored state has not seen; `None` when there is no
    /// checkpoint yet (start from the group's position).
    pub next_offset: Option<i64>,
    pub detector: Detector,
}

/// Pump states serialized but not yet written (kept across a failed write, so the next
/// attempt still carries them): ordinal → (pump id, bytes).
pub type Unsaved = BTreeMap<usize, (String, Vec<u8>)>;

/// Where one consumer group keeps its checkpoints for one topic.
#[derive(Debug, Clone)]
pub struct CheckpointStore {
    pool: PgPool,
    group: String,
    topic: String,
}

impl CheckpointStore {
    pub fn new(pool: PgPool, group: impl Into<String>, topic: impl Into<String>) -> Self {
        CheckpointStore {
            pool,
            group: group.into(),
            topic: topic.into(),
        }
    }

    /// Takes ownership of a partition (a new epoch) and loads its state.
    pub async fn claim(
        &self,
        partition: i32,
        config: &DetectorConfig,
    ) -> Result<Claimed, CheckpointError> {
        let mut tx = self.pool.begin().await?;
        let row = sqlx::query(
            "INSERT INTO detector_partition (consumer_group, topic, partition, epoch, state_format)
             VALUES ($1, $2, $3, 1, $4)
             ON CONFLICT (consumer_group, topic, partition)
             DO UPDATE SET epoch = detector_partition.epoch + 1, updated_at = now()
             RETURNING epoch, next_offset, clock_ns, state_format",
        )
        .bind(&self.group)
        .bind(&self.topic)
        .bind(partition)
        .bind(STATE_FORMAT)
        .fetch_one(&mut *tx)
        .await?;
        let epoch: i64 = row.try_get("epoch")?;
        let next_offset: Option<i64> = row.try_get("next_offset")?;
        let clock_ns: Option<i64> = row.try_get("clock_ns")?;
        let found: i32 = row.try_get("state_format")?;
        if found != STATE_FORMAT && next_offset.is_some() {
            return Err(CheckpointError::Format { partition, found });
        }
        let rows = sqlx::query(
            "SELECT pump_id, state FROM detector_pump
             WHERE consumer_group = $1 AND topic = $2 AND partition = $3
             ORDER BY ordinal",
        )
        .bind(&self.group)
        .bind(&self.topic)
        .bind(partition)
        .fetch_all(&mut *tx)
        .await?;
        tx.commit().await?;
        let mut pumps = Vec::with_capacity(rows.len());
        for row in rows {
            let pump_id: String = row.try_get("pump_id")?;
            let bytes: Vec<u8> = row.try_get("state")?;
            let state = postcard::from_bytes::<PumpState>(&bytes).map_err(|source| {
                CheckpointError::Corrupt {
                    partition,
                    pump_id: pump_id.clone(),
                    source,
                }
            })?;
            pumps.push(state);
        }
        let clock = clock_ns.map(DateTime::<Utc>::from_timestamp_nanos);
        Ok(Claimed {
            epoch,
            next_offset,
            detector: Detector::restore(config.clone(), clock, pumps),
        })
    }

    /// Serializes the pumps that changed since the last call into `unsaved`.
    pub fn collect_changed(
        partition: i32,
        detector: &mut Detector,
        unsaved: &mut Unsaved,
    ) -> Result<(), CheckpointError> {
        let mut failure = None;
        detector.for_each_changed(|ordinal, pump| match postcard::to_allocvec(pump) {
            Ok(bytes) => {
                unsaved.insert(ordinal, (pump.pump_id().to_owned(), bytes));
            }
            Err(source) => {
                failure.get_or_insert(CheckpointError::Encode {
                    partition,
                    pump_id: pump.pump_id().to_owned(),
                    source,
                });
            }
        });
        failure.map_or(Ok(()), Err)
    }

    /// Writes the partition's progress and its unsaved pumps in one transaction, if
    /// `epoch` still owns the partition.
    pub async fn save(
        &self,
        partition: i32,
        epoch: i64,
        next_offset: i64,
        clock: Option<DateTime<Utc>>,
        unsaved: &Unsaved,
    ) -> Result<(), CheckpointError> {
        let clock_ns = clock.and_then(|c| c.timestamp_nanos_opt());
        let mut tx = self.pool.begin().await?;
        // First, so the row lock orders this write against a new owner's claim.
        let updated = sqlx::query(
            "UPDATE detector_partition
             SET next_offset = $5, clock_ns = $6, state_format = $7, updated_at = now()
             WHERE consumer_group = $1 AND topic = $2 AND partition = $3 AND epoch = $4",
        )
        .bind(&self.group)
        .bind(&self.topic)
        .bind(partition)
        .bind(epoch)
        .bind(next_offset)
        .bind(clock_ns)
        .bind(STATE_FORMAT)
        .execute(&mut *tx)
        .await?;
        if updated.rows_affected() == 0 {
            return Err(CheckpointError::Fenced { partition, epoch });
        }
        if !unsaved.is_empty() {
            let mut ordinals = Vec::with_capacity(unsaved.len());
            let mut pump_ids = Vec::with_capacity(unsaved.len());
            let mut states = Vec::with_capacity(unsaved.len());
            for (&ordinal, (pump_id, state)) in unsaved {
                ordinals.push(
                    i32::try_from(ordinal)
                        .map_err(|_| CheckpointError::TooManyPumps { partition })?,
                );
                pump_ids.push(pump_id.as_str());
                states.push(state.as_slice());
            }
            sqlx::query(
                "INSERT INTO detector_pump (consumer_group, topic, partition, ordinal, pump_id, state)
                 SELECT $1, $2, $3, * FROM UNNEST($4::int[], $5::text[], $6::bytea[])
                 ON CONFLICT (consumer_group, topic, partition, ordinal)
                 DO UPDATE SET pump_id = EXCLUDED.pump_id, state = EXCLUDED.state",
            )
            .bind(&self.group)
            .bind(&self.topic)
            .bind(partition)
            .bind(&ordinals)
            .bind(&pump_ids)
            .bind(&states)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(())
    }
}
