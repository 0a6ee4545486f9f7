-- The stored messages of ids a batch found already in the inbox, to tell a redelivery (same
-- content) from a conflict (other content). $1 inbox, $2 message ids.
SELECT message_id, source, topic, key, msg_type, content_type, payload, headers, traceparent, tracestate,
       sequence, created_at, kafka_topic, kafka_partition, kafka_offset
FROM relay.inbox
WHERE inbox = $1 AND message_id = ANY($2::uuid[])
