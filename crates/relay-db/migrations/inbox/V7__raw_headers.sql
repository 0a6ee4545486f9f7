-- A dead letter keeps every Kafka header of its record as it arrived, so that a re-drive
-- (`relay-admin dead-letters redrive`) judges exactly the record the consumer refused: a header
-- name that is not UTF-8, a repeated signature header, or header bytes librdkafka cannot parse
-- are refused again, the same way.
--
-- jsonb: [{"name": "<hex>", "value": "<hex>" or null}, ...] in record order, or
-- {"unreadable": "<librdkafka's reason>"}. Names and values are hex because either may be any
-- bytes. NULL for dead letters older than this migration; a re-drive then uses raw_key_id and
-- raw_signature (V5) as their only headers.
ALTER TABLE relay.dead_letter
    ADD COLUMN raw_headers jsonb;

-- A re-drive tells a redelivery from a conflict (the same message id with other content) by
-- comparing with the stored message, so relay-admin reads the stored content it compares.
GRANT SELECT (source, topic, key, msg_type, content_type, payload, headers, traceparent, tracestate, sequence,
              created_at, kafka_topic, kafka_partition, kafka_offset)
    ON relay.inbox TO relay_operator;
