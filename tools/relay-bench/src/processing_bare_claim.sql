-- The bare loop's claim: any unprocessed message of inbox $1, no key order.
SELECT message_id FROM relay.inbox WHERE inbox = $1 AND processed_at IS NULL LIMIT 1 FOR UPDATE SKIP LOCKED
