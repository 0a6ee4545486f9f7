-- A redelivered poison record is recorded once per position. The signature headers are kept
-- so that a re-drive can check the signature again.
INSERT INTO relay.dead_letter (inbox, kafka_topic, kafka_partition, kafka_offset, raw_key, raw_value, error,
                               raw_key_id, raw_signature)
SELECT $1, d.kafka_topic, d.kafka_partition, d.kafka_offset, d.raw_key, d.raw_value, d.error,
       d.raw_key_id, d.raw_signature
FROM unnest($2::text[], $3::integer[], $4::bigint[], $5::bytea[], $6::bytea[], $7::text[], $8::bytea[],
            $9::bytea[])
     AS d(kafka_topic, kafka_partition, kafka_offset, raw_key, raw_value, error, raw_key_id, raw_signature)
ON CONFLICT ON CONSTRAINT dead_letter_position_unique DO NOTHING
