-- The rows fetch_pending.sql found ($1: their ids), still pending, in id order.
SELECT id, message_id, topic, key, msg_type, content_type, payload, headers,
       traceparent, tracestate, created_at
FROM relay.outbox
WHERE id = ANY($1::bigint[]) AND published_at IS NULL AND parked_at IS NULL
ORDER BY id
