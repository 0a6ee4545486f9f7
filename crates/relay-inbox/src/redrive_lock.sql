-- One dead letter, locked for its re-drive; no row if it was resolved meanwhile (a concurrent
-- re-drive or discard). $1 id, $2 inbox.
SELECT kafka_topic, kafka_partition, kafka_offset, raw_key, raw_value, error, raw_key_id, raw_signature,
       raw_headers
FROM relay.dead_letter
WHERE id = $1 AND inbox = $2 AND resolved_at IS NULL
FOR UPDATE
