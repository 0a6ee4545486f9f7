-- One differing bucket, row by row. $1 topics, $2 cutoff, $3 from id, $4 to id (exclusive).
SELECT message_id, ('x' || left(md5(message_id::text || chr(31) || topic || chr(31) || key || chr(31) || md5(payload)), 16))::bit(64)::bigint AS h, published_at IS NOT NULL AS published
FROM relay.outbox
WHERE topic = ANY($1) AND parked_at IS NULL AND created_at < $2 AND id >= $3 AND id < $4
