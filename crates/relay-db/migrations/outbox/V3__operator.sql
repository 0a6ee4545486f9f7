-- Operator decisions about parked rows (relay-admin).
--
-- A parked row an operator gives up on is discarded, not deleted: it stays parked (the poller
-- never sends it) and keeps its payload and park reason, with when and why it was discarded.
-- Retrying a parked row clears parked_at and park_reason, so the poller sends it again.
ALTER TABLE relay.outbox
    ADD COLUMN discarded_at   timestamptz,
    ADD COLUMN discard_reason text,
    -- Only a parked row can be discarded, and never without a reason. NOT VALID: every existing
    -- row has neither column set, so there is nothing to check and no reason to scan the table.
    ADD CONSTRAINT outbox_discarded_is_parked
        CHECK (discarded_at IS NULL OR (parked_at IS NOT NULL AND discard_reason IS NOT NULL)) NOT VALID;

-- Parked rows that still want a decision: what the reconciler reports and `relay-admin parked
-- list` shows. Discarded rows accumulate for the audit trail and stay out of this index.
DROP INDEX relay.outbox_parked;
CREATE INDEX outbox_parked ON relay.outbox (id) WHERE parked_at IS NOT NULL AND discarded_at IS NULL;
