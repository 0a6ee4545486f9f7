-- One message in an outbox, as JSON without its payload, so columns added by later migrations
-- (discarded_at: outbox V3) are read where present. $1 message id.
SELECT to_jsonb(o) - 'payload' - 'headers' FROM relay.outbox AS o WHERE o.message_id = $1
