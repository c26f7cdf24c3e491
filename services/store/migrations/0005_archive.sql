-- The archive for post-market surveillance: every reading once, the events pumps
-- logged, every alarm event, a daily rollup per pump, and an append-only audit log.
-- Written by fleet-archiver (readings, events, alarm events, rollup); deliveries and
-- acknowledgements are the notifier's and the API's tables (0003, 0004).
--
-- Plain PostgreSQL path: `reading` is range-partitioned by month on measured_at; the
-- archiver creates each month's partition before writing into it
-- (fleet_store::archive::ensure_partitions). Unique keys of a partitioned table (and
-- of a TimescaleDB hypertable) must include the partition column, so the key is
-- (pump_id, seq, measured_at): a re-sent reading is the same reading, time included,
-- and is stored once.

CREATE TABLE reading (
    pump_id text NOT NULL,
    seq bigint NOT NULL,
    measured_at timestamptz NOT NULL,
    gateway_id text NOT NULL,
    model text NOT NULL,
    firmware text NOT NULL,
    drug text NOT NULL,
    concentration_mg_per_ml double precision NOT NULL,
    reservoir_ml double precision NOT NULL,
    reservoir_capacity_ml double precision NOT NULL,
    low_reservoir_threshold_ml double precision NOT NULL,
    programmed_rate_ml_per_day double precision NOT NULL,
    delivered_total_ml double precision NOT NULL,
    battery_v double precision NOT NULL,
    battery_pct double precision NOT NULL,
    eri boolean NOT NULL,
    eos boolean NOT NULL,
    temperature_c double precision NOT NULL,
    refill_due_at timestamptz NOT NULL,
    motor_stall_count bigint NOT NULL,
    catheter_pressure_kpa double precision,
    motor_current_ma double precision,
    PRIMARY KEY (pump_id, seq, measured_at)
) PARTITION BY RANGE (measured_at);

-- The highest seq archived per pump, kept in the same transaction as the readings: a
-- reading above its pump's mark cannot be in the archive yet and is copied straight
-- in; only those at or below it (re-sent, re-read or late) are checked against the
-- archive's key.
CREATE TABLE archive_watermark (
    pump_id text PRIMARY KEY,
    max_seq bigint NOT NULL
);

-- Events the pumps logged (refills, boluses, MRIs, stalls, resets, device alarms), keyed
-- by the reading that carried them and their place in its list.
CREATE TABLE pump_event (
    pump_id text NOT NULL,
    seq bigint NOT NULL,
    idx integer NOT NULL,
    at timestamptz NOT NULL,
    type text NOT NULL,
    detail jsonb NOT NULL,
    PRIMARY KEY (pump_id, seq, idx)
);
CREATE INDEX pump_event_by_pump_time ON pump_event (pump_id, at);

-- Every alarm event the detector emitted, by its idempotency key.
CREATE TABLE alarm_event (
    alarm_id text NOT NULL,
    revision integer NOT NULL,
    pump_id text NOT NULL,
    kind text NOT NULL,
    priority text NOT NULL,
    state text NOT NULL,
    detected_at timestamptz NOT NULL,
    onset_at timestamptz,
    message text NOT NULL,
    evidence jsonb NOT NULL,
    PRIMARY KEY (alarm_id, revision)
);
CREATE INDEX alarm_event_by_pump_time ON alarm_event (pump_id, detected_at);
CREATE INDEX alarm_event_by_time ON alarm_event (detected_at);

-- One row per pump and UTC day observed, maintained by the archiver in the statement
-- that inserts the readings (only rows actually inserted count, so a replayed batch
-- changes nothing). The surveillance reports read this instead of every reading.
CREATE TABLE pump_day (
    pump_id text NOT NULL,
    day date NOT NULL,
    model text NOT NULL,
    firmware text NOT NULL,
    readings integer NOT NULL,
    first_at timestamptz NOT NULL,
    last_at timestamptz NOT NULL,
    battery_pct_first double precision NOT NULL,
    battery_pct_last double precision NOT NULL,
    battery_v_min double precision NOT NULL,
    reservoir_ml_min double precision NOT NULL,
    catheter_pressure_kpa_max double precision,
    eri boolean NOT NULL,
    PRIMARY KEY (pump_id, day)
);
CREATE INDEX pump_day_by_day ON pump_day (day);

-- Who did what, when: logins, acknowledgements, denied access, registry imports.
-- Append-only: the trigger refuses updates and deletes, for everyone.
CREATE TABLE audit_log (
    id bigserial PRIMARY KEY,
    at timestamptz NOT NULL DEFAULT now(),
    actor text NOT NULL,
    action text NOT NULL,
    subject text NOT NULL,
    detail jsonb NOT NULL DEFAULT '{}'
);
CREATE INDEX audit_log_by_time ON audit_log (at);

CREATE FUNCTION audit_log_is_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'audit_log is append-only: % refused', TG_OP;
END
$$;
CREATE TRIGGER audit_log_append_only
    BEFORE UPDATE OR DELETE OR TRUNCATE ON audit_log
    FOR EACH STATEMENT EXECUTE FUNCTION audit_log_is_append_only();
