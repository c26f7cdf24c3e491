-- The registry (contract §5), loaded with `fleetctl registry import FILE`: clinics and
-- where they are paged, pumps and the gateway and clinic of each.

CREATE TABLE clinic (
    id                  text   PRIMARY KEY,
    name                text   NOT NULL,
    webhook             text   NOT NULL,
    escalation_after_ms bigint NOT NULL CHECK (escalation_after_ms > 0),
    escalation_webhook  text,
    fallback_webhook    text,
    signing_secret      text,
    updated_at          timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE pump (
    pump_id    text PRIMARY KEY,
    gateway_id text NOT NULL,
    clinic_id  text NOT NULL REFERENCES clinic (id),
    updated_at timestamptz NOT NULL DEFAULT now()
);

-- Bumped by every import that changed something: readers poll this one row and reload
-- the registry only when it moved.
CREATE TABLE registry_version (
    only_row boolean PRIMARY KEY DEFAULT true CHECK (only_row),
    version  bigint  NOT NULL
);
INSERT INTO registry_version (version) VALUES (0);
