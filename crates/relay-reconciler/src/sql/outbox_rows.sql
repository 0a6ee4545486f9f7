-- One differing bucket, row by row. $1 topics, $2 cutoff, $3 from id, $4 last id (inclusive: i64::MAX has no successor).
-- `published` only counts when it happened before the cutoff: a message published later is
-- still in flight, not missing.
SELECT message_id, ('x' || left(md5(message_id::text || chr(31) || id::text || chr(31) || topic || chr(31) || key || chr(31) || msg_type || chr(31) || content_type || chr(31) || headers::text || chr(31) || md5(payload)), 16))::bit(64)::bigint AS h, coalesce(published_at < $2, false) AS published
FROM relay.outbox
WHERE topic = ANY($1) AND parked_at IS NULL AND created_at < $2 AND id >= $3 AND id <= $4
