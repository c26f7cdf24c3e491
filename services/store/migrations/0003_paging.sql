-- The notifier's delivery log: one row per page, keyed by what receivers deduplicate
-- on. Written before the alarm event's offset is committed, so it is the durable queue
-- of pages still to deliver and the record of every page delivered.

CREATE TABLE page (
    alarm_id         text     NOT NULL,
    revision         int      NOT NULL,
    -- 0: the alarm event's own page; n: its n-th escalation.
    escalation       int      NOT NULL,
    -- Arrival order: one pump's pages are delivered in this order.
    seq              bigserial NOT NULL UNIQUE,
    pump_id          text     NOT NULL,
    clinic_id        text     NOT NULL,
    priority         text     NOT NULL,
    state            text     NOT NULL,
    -- The alarm event, protobuf fleet.alarm.v1.AlarmEvent.
    event            bytea    NOT NULL,
    status           text     NOT NULL DEFAULT 'pending'
                     CHECK (status IN ('pending', 'delivered')),
    -- Where the page went or goes: the clinic's webhook, its escalation receiver, or its
    -- fallback after repeated failures.
    target           text     NOT NULL DEFAULT 'primary'
                     CHECK (target IN ('primary', 'escalation', 'fallback')),
    attempts         int      NOT NULL DEFAULT 0,
    next_attempt_at  timestamptz NOT NULL DEFAULT now(),
    -- A replica working on the page holds it until then.
    lease_until      timestamptz,
    last_error       text,
    operator_alerted boolean  NOT NULL DEFAULT false,
    receipt_id       text,
    created_at       timestamptz NOT NULL DEFAULT now(),
    delivered_at     timestamptz,
    PRIMARY KEY (alarm_id, revision, escalation)
);
CREATE INDEX page_due ON page (next_attempt_at) WHERE status = 'pending';
CREATE INDEX page_pending_by_pump ON page (pump_id, seq) WHERE status = 'pending';

-- One row per alarm episode whose priority calls for escalation: when it is next due,
-- how often it has escalated, and what stops it (acknowledgement, clearing).
CREATE TABLE escalation (
    alarm_id        text   PRIMARY KEY,
    pump_id         text   NOT NULL,
    clinic_id       text   NOT NULL,
    priority        text   NOT NULL,
    -- The latest revision: escalation pages repeat it.
    revision        int    NOT NULL,
    event           bytea  NOT NULL,
    level           int    NOT NULL DEFAULT 0,
    -- NULL: nothing more to do (acknowledged, cleared, LOW, or MEDIUM already escalated).
    due_at          timestamptz,
    acknowledged_at timestamptz,
    acknowledged_by text,
    note            text,
    cleared_at      timestamptz
);
CREATE INDEX escalation_due ON escalation (due_at) WHERE due_at IS NOT NULL;

-- Acknowledgements as clinicians made them (the API writes these), kept even when
-- they arrive for an alarm the notifier has not seen yet.
CREATE TABLE acknowledgement (
    alarm_id        text NOT NULL,
    clinician       text NOT NULL,
    note            text NOT NULL DEFAULT '',
    acknowledged_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (alarm_id, clinician, acknowledged_at)
);
