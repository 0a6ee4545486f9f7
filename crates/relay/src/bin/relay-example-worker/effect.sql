-- The example's business effect for one message: $1 message_id, $2 source, $3 topic, $4 key,
-- $5 sequence. Its key's effects are serialised by relay.claim, so max(position) is stable here.
INSERT INTO {table} (message_id, source, topic, key, sequence, position)
SELECT $1, $2, $3, $4, $5, coalesce(max(t.position), 0) + 1
FROM {table} AS t
WHERE t.source = $2 AND t.topic = $3 AND t.key = $4
