-- Rows the broker refused for good, with the reason. $1 limit.
SELECT message_id, park_reason, count(*) OVER () AS total
FROM relay.outbox
WHERE parked_at IS NOT NULL
ORDER BY id
LIMIT $1
