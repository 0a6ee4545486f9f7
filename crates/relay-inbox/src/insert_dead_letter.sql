-- A redelivered poison record is recorded once per position.
INSERT INTO relay.dead_letter (inbox, kafka_topic, kafka_partition, kafka_offset, raw_key, raw_value, error)
SELECT $1, d.kafka_topic, d.kafka_partition, d.kafka_offset, d.raw_key, d.raw_value, d.error
FROM unnest($2::text[], $3::integer[], $4::bigint[], $5::bytea[], $6::bytea[], $7::text[])
     AS d(kafka_topic, kafka_partition, kafka_offset, raw_key, raw_value, error)
ON CONFLICT ON CONSTRAINT dead_letter_position_unique DO NOTHING
