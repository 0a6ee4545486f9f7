-- Parked outbox rows, oldest first. $1 topic or NULL for all, $2 include discarded rows, $3 limit.
SELECT id, message_id, topic, key,
       to_char(parked_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"') AS parked_at,
       coalesce(park_reason, '') AS park_reason,
       to_char(discarded_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"') AS discarded_at,
       discard_reason,
       count(*) OVER () AS total
FROM relay.outbox
WHERE parked_at IS NOT NULL
  AND ($2 OR discarded_at IS NULL)
  AND ($1::text IS NULL OR topic = $1)
ORDER BY id
LIMIT $3
