-- Runs only after the broker acknowledged each of these records.
UPDATE relay.outbox AS o
SET published_at = clock_timestamp(), kafka_partition = d.kafka_partition, kafka_offset = d.kafka_offset
FROM unnest($1::bigint[], $2::integer[], $3::bigint[]) AS d(id, kafka_partition, kafka_offset)
WHERE o.id = d.id AND o.published_at IS NULL
