-- Moves an EMPTY archive from the partitioned `reading` table onto a TimescaleDB
-- hypertable. Run by fleet_store::layout::settle inside one transaction, after it has
-- checked that the extension is available and that `reading` holds no row; if any
-- statement fails, the transaction rolls back and the archive stays partitioned.
--
-- Same columns, defaults and key as migration 0005 (LIKE copies them), so every query
-- runs unchanged. The primary key (pump_id, seq, measured_at) includes the time
-- column, as a hypertable's unique keys must.
CREATE EXTENSION IF NOT EXISTS timescaledb;

CREATE TABLE reading_hypertable (LIKE reading INCLUDING ALL);
DROP TABLE reading;  -- the partitioned parent and its (empty) monthly partitions
ALTER TABLE reading_hypertable RENAME TO reading;
ALTER INDEX reading_hypertable_pkey RENAME TO reading_pkey;

SELECT create_hypertable('reading', 'measured_at', chunk_time_interval => INTERVAL '7 days');

-- Compressed per pump, in seq order: a pump's readings sit together, as the timeline
-- report and the rollup read them. Chunks older than 30 days are compressed; late
-- readings can still be inserted into them (TimescaleDB 2.11 and later).
ALTER TABLE reading SET (
    timescaledb.compress,
    timescaledb.compress_segmentby = 'pump_id',
    timescaledb.compress_orderby = 'seq'
);
SELECT add_compression_policy('reading', INTERVAL '30 days');

UPDATE archive_layout
SET path = 'timescaledb', chosen_at = now(),
    reason = 'converted while empty: hypertable by 7-day chunks, compressed after 30 days';
