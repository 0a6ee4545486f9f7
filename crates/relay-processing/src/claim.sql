-- Up to $2 due heads of distinct keys of inbox $1, locked until the transaction ends (V6).
SELECT message_id, source, topic, key, msg_type, content_type, payload, headers, traceparent, tracestate,
       sequence, created_at, received_at, attempts
FROM relay.claim($1, $2)
