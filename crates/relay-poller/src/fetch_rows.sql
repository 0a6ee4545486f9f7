-- The rows fetch_pending.sql found ($1: their ids), still pending, in id order. A payload
-- larger than $2 (the largest payload limit of any topic, bytes) is not read at all: it comes
-- back NULL, with its size in payload_length, so the row is parked from its size alone and a
-- writer's oversized payloads (bytea takes up to 1 GB) never reach the poller's memory.
SELECT id, message_id, topic, key, msg_type, content_type,
       CASE WHEN octet_length(payload) <= $2::bigint THEN payload END AS payload,
       octet_length(payload)::bigint AS payload_length,
       headers, traceparent, tracestate, created_at
FROM relay.outbox
WHERE id = ANY($1::bigint[]) AND published_at IS NULL AND parked_at IS NULL
ORDER BY id
