-- Who may use the fleet API and the dashboard. A user is a clinic's staff account
-- (sees and acknowledges only its own clinic's pumps) or the manufacturer's
-- (read-only across the fleet, device data only). The access token is stored only as
-- its SHA-256: a leaked table does not leak tokens. Created with `fleetctl user add`.
CREATE TABLE api_user (
    name          text PRIMARY KEY,
    role          text NOT NULL CHECK (role IN ('clinic', 'manufacturer')),
    clinic_id     text REFERENCES clinic (id),
    token_sha256  bytea NOT NULL UNIQUE,
    created_at    timestamptz NOT NULL DEFAULT now(),
    CHECK ((role = 'clinic') = (clinic_id IS NOT NULL))
);
