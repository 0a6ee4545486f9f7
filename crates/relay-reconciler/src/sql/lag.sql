-- Published outbox rows beyond the newest sequence the inbox holds, and the age of the oldest.
-- $1 topics, $2 inbox's newest sequence.
SELECT count(*) AS n, coalesce(extract(epoch FROM now() - min(created_at)), 0)::float8 AS seconds
FROM relay.outbox
WHERE id > $2 AND topic = ANY($1) AND published_at IS NOT NULL
