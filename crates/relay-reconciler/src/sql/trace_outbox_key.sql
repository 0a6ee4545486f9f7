-- The newest messages of one key in an outbox (a sequential scan: no index serves it; an
-- operator's occasional question). $1 topic, $2 key, $3 limit.
SELECT message_id, id FROM relay.outbox WHERE topic = $1 AND key = $2 ORDER BY id DESC LIMIT $3
