-- Signed envelopes: a dead letter keeps the record's signature headers (relay-key-id and
-- relay-signature) as they arrived, so that `relay-admin dead-letters redrive` can check the
-- signature of the raw value again. Neither is secret: a key id names a key, a signature is an
-- HMAC of the value. Both stay NULL for unsigned records and for rows older than this migration.
ALTER TABLE relay.dead_letter
    ADD COLUMN raw_key_id    bytea,
    ADD COLUMN raw_signature bytea;
