-- The caller's network address on every audit row (fleet-api: the TCP peer, or the
-- client named by X-Forwarded-For when the peer is a trusted proxy). NULL where there
-- is no network caller (rows written before this column, or by local tools).
--
-- inet, not text: PostgreSQL checks it is an address, and an investigation can ask
-- for a whole network (`WHERE caller_addr <<= '203.0.113.0/24'`; a btree index serves
-- that too, as a range).
-- The client's port is not kept: it is ephemeral and says nothing about who called.
-- Adding a nullable column rewrites no row, so the append-only trigger is not involved.
ALTER TABLE audit_log ADD COLUMN caller_addr inet;
CREATE INDEX audit_log_by_caller ON audit_log (caller_addr, at);
