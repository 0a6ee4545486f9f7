-- Dead letters of one inbox, of one Kafka topic when known, oldest first: the raw value (its
-- envelope names the message id when it decodes), the raw key, and the rest as JSON (with
-- raw_headers, whose ce_id names a CloudEvents record's message id).
-- $1 inbox, $2 Kafka topic or NULL for every topic.
SELECT d.raw_value, d.raw_key,
       to_jsonb(d) - 'raw_value' - 'raw_key' - 'raw_key_id' - 'raw_signature' AS fields
FROM relay.dead_letter AS d
WHERE d.inbox = $1 AND ($2::text IS NULL OR d.kafka_topic = $2)
ORDER BY d.id
