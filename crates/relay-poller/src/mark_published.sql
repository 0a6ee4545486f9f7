-- Runs only after the broker acknowledged each of these records. $4: how long ago each report
-- was taken, in microseconds (the poller's monotonic clock), so published_at is the time of the
-- acknowledgement on the database's clock, however long the mark itself waited.
UPDATE relay.outbox AS o
SET published_at = clock_timestamp() - d.acked_us_ago * interval '1 microsecond',
    kafka_partition = d.kafka_partition, kafka_offset = d.kafka_offset
FROM unnest($1::bigint[], $2::integer[], $3::bigint[], $4::bigint[]) AS d(id, kafka_partition, kafka_offset, acked_us_ago)
WHERE o.id = d.id AND o.published_at IS NULL
