-- Re-drive: forget that these rows were published, so the poller sends them again (inboxes
-- deduplicate, so receivers that have them are unaffected). The publication is kept as
-- previous_published_at, previous_kafka_partition and previous_kafka_offset, with redriven_at,
-- and each row gets an audit row (outbox migration V7), in the same statement.
-- $1 message ids, $2 operator, $3 reason. Returns the message ids re-driven.
WITH chosen AS (
    SELECT id, message_id, published_at, kafka_partition, kafka_offset, redriven_at, previous_published_at,
           previous_kafka_partition, previous_kafka_offset
    FROM relay.outbox
    WHERE message_id = ANY($1) AND published_at IS NOT NULL AND parked_at IS NULL
    FOR UPDATE
), changed AS (
    UPDATE relay.outbox AS o
    SET published_at = NULL, kafka_partition = NULL, kafka_offset = NULL, redriven_at = clock_timestamp(),
        previous_published_at = c.published_at, previous_kafka_partition = c.kafka_partition,
        previous_kafka_offset = c.kafka_offset
    FROM chosen AS c
    WHERE o.id = c.id
    RETURNING o.id, o.message_id,
        jsonb_build_object('message_id', c.message_id, 'published_at', c.published_at,
                           'kafka_partition', c.kafka_partition, 'kafka_offset', c.kafka_offset,
                           'redriven_at', c.redriven_at, 'previous_published_at', c.previous_published_at,
                           'previous_kafka_partition', c.previous_kafka_partition,
                           'previous_kafka_offset', c.previous_kafka_offset) AS before,
        jsonb_build_object('message_id', o.message_id, 'published_at', o.published_at,
                           'kafka_partition', o.kafka_partition, 'kafka_offset', o.kafka_offset,
                           'redriven_at', o.redriven_at, 'previous_published_at', o.previous_published_at,
                           'previous_kafka_partition', o.previous_kafka_partition,
                           'previous_kafka_offset', o.previous_kafka_offset) AS after
), audit AS (
    INSERT INTO relay.operator_audit (operator, command, reason, target, before, after)
    SELECT $2, 'reconciler repair', $3, id::text, before, after FROM changed
)
SELECT message_id FROM changed ORDER BY id
