-- Rows the broker refused for good, with the reason, that no operator has discarded yet
-- (discarded rows stay parked for the audit trail; relay-admin). $1 limit.
SELECT message_id, park_reason, count(*) OVER () AS total
FROM relay.outbox
WHERE parked_at IS NOT NULL AND discarded_at IS NULL
ORDER BY id
LIMIT $1
