-- Rows still unpublished after the stuck threshold. $1 created before, $2 limit.
SELECT message_id, count(*) OVER () AS total
FROM relay.outbox
WHERE published_at IS NULL AND parked_at IS NULL AND created_at < $1
ORDER BY id
LIMIT $2
