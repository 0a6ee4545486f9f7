-- Rows still unpublished after the stuck threshold. $1 threshold in seconds, on this database's
-- clock; $2 limit.
SELECT message_id, count(*) OVER () AS total
FROM relay.outbox
WHERE published_at IS NULL AND parked_at IS NULL AND created_at < now() - make_interval(secs => $1)
ORDER BY id
LIMIT $2
