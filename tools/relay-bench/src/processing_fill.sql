-- $2 messages of 256-byte payloads over $3 keys into inbox $1, sequences in key order.
INSERT INTO relay.inbox (inbox, message_id, source, topic, key, msg_type, content_type, payload, headers,
                         sequence, created_at, kafka_topic, kafka_partition, kafka_offset)
SELECT $1, gen_random_uuid(), 'bench', 'payments', 'key-' || (g % $3), 'bench', 'application/octet-stream',
       decode(repeat(md5(g::text), 8), 'hex'), '{}', g, now(), 'payments', 0, g
FROM generate_series(1::bigint, $2::bigint) AS g
