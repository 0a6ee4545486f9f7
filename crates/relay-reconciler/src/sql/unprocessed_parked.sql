-- Messages the receiving service parked after its last attempt, with the reason, that no
-- operator has retried or skipped yet (relay-admin processing). $1 inbox, $2 limit.
SELECT message_id, park_reason, count(*) OVER () AS total
FROM relay.inbox
WHERE inbox = $1 AND processed_at IS NULL AND parked_at IS NOT NULL
ORDER BY parked_at, message_id
LIMIT $2
