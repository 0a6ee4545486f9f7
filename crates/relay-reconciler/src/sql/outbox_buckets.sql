-- Per-bucket count and order-independent hash of the outbox rows an inbox should hold.
-- $1 topics, $2 cutoff (created before, on the outbox's clock), $3 first id, $4 bucket size,
-- $5 last id (inclusive: i64::MAX has no successor).
SELECT id / $4 AS bucket, count(*) AS n, sum(h)::text AS hash
FROM (SELECT id, ('x' || left(md5(message_id::text || chr(31) || id::text || chr(31) || topic || chr(31) || key || chr(31) || msg_type || chr(31) || content_type || chr(31) || headers::text || chr(31) || md5(payload)), 16))::bit(64)::bigint AS h
      FROM relay.outbox
      WHERE topic = ANY($1) AND parked_at IS NULL AND created_at < $2 AND id >= $3 AND id <= $5) AS r
GROUP BY bucket
