-- Operator decisions about dead letters (relay-admin).
--
-- A dead letter is never deleted. It is resolved either by re-driving it (its raw record went
-- through the consumer's checks again and is now in relay.inbox) or by discarding it, with a
-- note saying why. Unresolved dead letters are the ones that want attention.
ALTER TABLE relay.dead_letter
    ADD COLUMN resolved_at     timestamptz,
    ADD COLUMN resolution      text,
    ADD COLUMN resolution_note text,
    -- NOT VALID: existing rows have none of these set, so there is nothing to scan.
    ADD CONSTRAINT dead_letter_resolution_kind
        CHECK (resolution IN ('redriven', 'discarded')) NOT VALID,
    ADD CONSTRAINT dead_letter_resolved_with_resolution
        CHECK ((resolved_at IS NULL) = (resolution IS NULL)) NOT VALID;

-- `relay-admin dead-letters list/redrive/discard` read the unresolved ones of one inbox.
CREATE INDEX dead_letter_unresolved ON relay.dead_letter (inbox, id) WHERE resolved_at IS NULL;
