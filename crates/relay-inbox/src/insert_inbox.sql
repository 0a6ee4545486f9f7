-- One statement per batch. ON CONFLICT DO NOTHING on (inbox, message_id) makes redeliveries and
-- re-published duplicates no-ops; RETURNING names what was new, and the caller compares the rest
-- with what is stored (a conflict is dead-lettered). Rows keep batch order, so
-- seq follows arrival order.
INSERT INTO relay.inbox (inbox, message_id, source, topic, key, msg_type, content_type, payload, headers,
                         traceparent, tracestate, sequence, created_at, kafka_topic, kafka_partition, kafka_offset)
SELECT $1, m.message_id, m.source, m.topic, m.key, m.msg_type, m.content_type, m.payload, m.headers,
       m.traceparent, m.tracestate, m.sequence, m.created_at, m.kafka_topic, m.kafka_partition, m.kafka_offset
FROM unnest($2::uuid[], $3::text[], $4::text[], $5::text[], $6::text[], $7::text[], $8::bytea[], $9::jsonb[],
            $10::text[], $11::text[], $12::bigint[], $13::timestamptz[], $14::text[], $15::integer[], $16::bigint[])
     WITH ORDINALITY AS m(message_id, source, topic, key, msg_type, content_type, payload, headers,
                          traceparent, tracestate, sequence, created_at, kafka_topic, kafka_partition, kafka_offset, ord)
ORDER BY m.ord
ON CONFLICT (inbox, message_id) DO NOTHING
RETURNING message_id
