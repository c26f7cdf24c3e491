//! The gateway's disk outbox: every reading is written here, durably (fsync on commit),
//! before it is published, and leaves only when the cloud acknowledges end to end that
//! it is in the log. A `kill -9` or a power cut between the two loses nothing.
//!
//! Disk use is bounded by `capacity` readings. When full, the policy is: drop the
//! oldest routine reading first (one with no events); readings that carry events
//! (refills, stalls, resets, the pump's own alarms) are kept before routine ones. Every
//! drop is counted, persistently, and reported in the gateway's status.

use std::path::Path;

use fleet_core::{Reading, protobuf};
use redb::{Database, ReadableDatabase, ReadableTable, ReadableTableMetadata, TableDefinition};

/// `(pump_id, seq)` → one flag byte (1 = carries events) followed by the protobuf reading.
const ENTRIES: TableDefinition<(&str, u64), &[u8]> = TableDefinition::new("entries");
/// Persistent counters.
const COUNTERS: TableDefinition<&str, u64> = TableDefinition::new("counters");
const DROPPED_TOTAL: &str = "dropped_total";

const FLAG_EVENTS: u8 = 1;
const FLAG_ROUTINE: u8 = 0;

#[derive(Debug, thiserror::Error)]
#[error("outbox {path}: {source}")]
pub struct OutboxError {
    path: String,
    #[source]
    source: redb::Error,
}

/// A reading waiting for its end-to-end ack.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pending {
    pub pump_id: String,
    pub seq: u64,
    /// The protobuf-encoded reading, as published.
    pub payload: Vec<u8>,
}

impl Pending {
    pub fn key(&self) -> (String, u64) {
        (self.pump_id.clone(), self.seq)
    }
}

/// What one `put` did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PutOutcome {
    pub stored: usize,
    /// Readings dropped to stay within capacity (older ones, or the new routine one).
    pub dropped: usize,
}

#[derive(Debug)]
pub struct Outbox {
    db: Database,
    path: String,
    capacity: u64,
}

impl Outbox {
    /// Opens (or creates) the outbox file. `capacity` is the most readings kept.
    pub fn open(path: &Path, capacity: u64) -> Result<Outbox, OutboxError> {
        let name = path.display().to_string();
        let err = |e: redb::Error| OutboxError {
            path: name.clone(),
            source: e,
        };
        let db = Database::create(path).map_err(|e| err(e.into()))?;
        // Create the tables so readers never meet a missing one.
        let tx = db.begin_write().map_err(|e| err(e.into()))?;
        tx.open_table(ENTRIES).map_err(|e| err(e.into()))?;
        tx.open_table(COUNTERS).map_err(|e| err(e.into()))?;
        tx.commit().map_err(|e| err(e.into()))?;
        Ok(Outbox {
            db,
            path: name,
            capacity: capacity.max(1),
        })
    }

    fn err(&self, e: impl Into<redb::Error>) -> OutboxError {
        OutboxError {
            path: self.path.clone(),
            source: e.into(),
        }
    }

    /// Stores readings durably in one transaction (one fsync), applying the capacity
    /// policy. A reading already present (same pump and seq) is left as it was.
    pub fn put(&self, readings: &[Reading]) -> Result<PutOutcome, OutboxError> {
        let mut outcome = PutOutcome::default();
        let tx = self.db.begin_write().map_err(|e| self.err(e))?;
        {
            let mut entries = tx.open_table(ENTRIES).map_err(|e| self.err(e))?;
            for reading in readings {
                let key = (reading.pump_id.as_str(), reading.seq);
                if entries.get(key).map_err(|e| self.err(e))?.is_some() {
                    continue;
                }
                let routine = reading.events.is_empty();
                let mut keep_new = true;
                while entries.len().map_err(|e| self.err(e))? >= self.capacity {
                    let oldest_routine =
                        first_key(&entries, Some(FLAG_ROUTINE)).map_err(|e| self.err(e))?;
                    let victim = match oldest_routine {
                        Some(k) => k,
                        None if routine => {
                            keep_new = false;
                            break;
                        }
                        None => match first_key(&entries, None).map_err(|e| self.err(e))? {
                            Some(k) => k,
                            None => break,
                        },
                    };
                    entries
                        .remove((victim.0.as_str(), victim.1))
                        .map_err(|e| self.err(e))?;
                    outcome.dropped += 1;
                }
                if !keep_new {
                    outcome.dropped += 1;
                    continue;
                }
                let mut value = Vec::with_capacity(600);
                value.push(if routine { FLAG_ROUTINE } else { FLAG_EVENTS });
                value.extend_from_slice(&protobuf::encode_reading(reading));
                entries
                    .insert(key, value.as_slice())
                    .map_err(|e| self.err(e))?;
                outcome.stored += 1;
            }
            if outcome.dropped > 0 {
                let mut counters = tx.open_table(COUNTERS).map_err(|e| self.err(e))?;
                let before = counters
                    .get(DROPPED_TOTAL)
                    .map_err(|e| self.err(e))?
                    .map_or(0, |v| v.value());
                counters
                    .insert(DROPPED_TOTAL, before + outcome.dropped as u64)
                    .map_err(|e| self.err(e))?;
            }
        }
        tx.commit().map_err(|e| self.err(e))?;
        Ok(outcome)
    }

    /// Up to `limit` waiting readings after `after` (exclusive), in `(pump_id, seq)` order.
    pub fn pending_after(
        &self,
        after: Option<&(String, u64)>,
        limit: usize,
    ) -> Result<Vec<Pending>, OutboxError> {
        let tx = self.db.begin_read().map_err(|e| self.err(e))?;
        let entries = tx.open_table(ENTRIES).map_err(|e| self.err(e))?;
        let mut out = Vec::new();
        let range = match after {
            Some((pump, seq)) => entries.range((pump.as_str(), *seq)..),
            None => entries.range::<(&str, u64)>(..),
        }
        .map_err(|e| self.err(e))?;
        for item in range {
            let (k, v) = item.map_err(|e| self.err(e))?;
            let (pump_id, seq) = k.value();
            if after.is_some_and(|(p, s)| p == pump_id && *s == seq) {
                continue;
            }
            out.push(Pending {
                pump_id: pump_id.to_owned(),
                seq,
                payload: v.value()[1..].to_vec(),
            });
            if out.len() >= limit {
                break;
            }
        }
        Ok(out)
    }

    /// Removes exactly these readings (acknowledged end to end); returns how many were
    /// present.
    pub fn remove(&self, keys: &[(String, u64)]) -> Result<usize, OutboxError> {
        let tx = self.db.begin_write().map_err(|e| self.err(e))?;
        let mut removed = 0;
        {
            let mut entries = tx.open_table(ENTRIES).map_err(|e| self.err(e))?;
            for (pump_id, seq) in keys {
                if entries
                    .remove((pump_id.as_str(), *seq))
                    .map_err(|e| self.err(e))?
                    .is_some()
                {
                    removed += 1;
                }
            }
        }
        tx.commit().map_err(|e| self.err(e))?;
        Ok(removed)
    }

    /// Readings waiting for their ack.
    pub fn depth(&self) -> Result<u64, OutboxError> {
        let tx = self.db.begin_read().map_err(|e| self.err(e))?;
        let entries = tx.open_table(ENTRIES).map_err(|e| self.err(e))?;
        entries.len().map_err(|e| self.err(e))
    }

    /// Readings ever dropped by the capacity policy (survives restarts).
    pub fn dropped_total(&self) -> Result<u64, OutboxError> {
        let tx = self.db.begin_read().map_err(|e| self.err(e))?;
        let counters = tx.open_table(COUNTERS).map_err(|e| self.err(e))?;
        Ok(counters
            .get(DROPPED_TOTAL)
            .map_err(|e| self.err(e))?
            .map_or(0, |v| v.value()))
    }
}

/// The first key, in key order, whose flag is `flag` (any flag when `None`).
fn first_key(
    entries: &impl ReadableTable<(&'static str, u64), &'static [u8]>,
    flag: Option<u8>,
) -> Result<Option<(String, u64)>, redb::StorageError> {
    for item in entries.iter()? {
        let (k, v) = item?;
        if flag.is_none_or(|f| v.value().first() == Some(&f)) {
            let (pump, seq) = k.value();
            return Ok(Some((pump.to_owned(), seq)));
        }
    }
    Ok(None)
}
