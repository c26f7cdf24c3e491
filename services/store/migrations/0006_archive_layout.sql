-- Which storage path the archive took, so people and programs can tell:
--   'partitioned'  plain PostgreSQL: `reading` range-partitioned by month, partitions
--                  made by the archiver (migration 0005);
--   'timescaledb'  `reading` is a TimescaleDB hypertable with compression, converted by
--                  the archiver at start-up while the archive was still empty
--                  (fleet_store::layout, services/store/timescaledb/convert.sql).
-- Every query the services and reports run is the same on both.
CREATE TABLE archive_layout (
    only_row  boolean PRIMARY KEY DEFAULT true CHECK (only_row),
    path      text NOT NULL CHECK (path IN ('partitioned', 'timescaledb')),
    chosen_at timestamptz NOT NULL DEFAULT now(),
    -- Why this path: the extension missing, the archive not empty, a failed conversion.
    reason    text NOT NULL
);
INSERT INTO archive_layout (path, reason)
VALUES ('partitioned', 'created by migration 0006; the archiver settles the path at start-up');
