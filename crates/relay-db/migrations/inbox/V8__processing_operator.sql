-- What operating inbox processing needs beyond V6 (relay-admin, inbox-consumer, reconciler).
--
-- skip_reason: `relay-admin processing skip` records why a message was never acted on, beside
-- skipped_at, for the audit trail (as discard_reason does for parked outbox rows).
ALTER TABLE relay.inbox
    ADD COLUMN skip_reason text,
    -- NOT VALID: no existing row is skipped with a reason, so there is nothing to scan.
    ADD CONSTRAINT inbox_skip_reason_is_skipped CHECK (skip_reason IS NULL OR skipped_at IS NOT NULL) NOT VALID;
GRANT UPDATE (skip_reason) ON relay.inbox TO relay_operator;

-- The consumer's retention keeps unprocessed rows of inboxes with processing enabled, and its
-- probe publishes their backlog: both read which inboxes those are.
GRANT SELECT ON relay.processing TO relay_inbox_consumer;

-- `reconciler trace` looks for a message among the dead letters (the record's envelope names
-- its id). The reconciler reads stored messages already; dead letters hold no more than that.
GRANT SELECT ON relay.dead_letter TO relay_reconciler;
