-- A redelivered poison record is recorded once per position. Its headers are kept as they
-- arrived (raw_headers, and the signature headers in their own columns), so that a re-drive
-- judges the same record.
INSERT INTO relay.dead_letter (inbox, kafka_topic, kafka_partition, kafka_offset, raw_key, raw_value, error,
                               raw_key_id, raw_signature, raw_headers)
SELECT $1, d.kafka_topic, d.kafka_partition, d.kafka_offset, d.raw_key, d.raw_value, d.error,
       d.raw_key_id, d.raw_signature, d.raw_headers
FROM unnest($2::text[], $3::integer[], $4::bigint[], $5::bytea[], $6::bytea[], $7::text[], $8::bytea[],
            $9::bytea[], $10::jsonb[])
     AS d(kafka_topic, kafka_partition, kafka_offset, raw_key, raw_value, error, raw_key_id, raw_signature,
          raw_headers)
ON CONFLICT ON CONSTRAINT dead_letter_position_unique DO NOTHING
