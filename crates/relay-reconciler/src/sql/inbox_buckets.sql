-- The same buckets over one inbox's copy of one source's messages; the hash is the outbox's.
-- $1 inbox, $2 source, $3 topics, $4 cutoff (the outbox's clock: created_at is the origin's),
-- $5 first sequence, $6 bucket size, $7 last sequence (inclusive).
SELECT sequence / $6 AS bucket, count(*) AS n, sum(h)::text AS hash
FROM (SELECT sequence, ('x' || left(md5(message_id::text || chr(31) || sequence::text || chr(31) || topic || chr(31) || key || chr(31) || msg_type || chr(31) || content_type || chr(31) || headers::text || chr(31) || md5(payload)), 16))::bit(64)::bigint AS h
      FROM relay.inbox
      WHERE inbox = $1 AND source = $2 AND topic = ANY($3) AND created_at < $4 AND sequence >= $5 AND sequence <= $7) AS r
GROUP BY bucket
