-- Unprocessed messages of one inbox that are parked or failed at least once, oldest first, each
-- with how many later unprocessed messages of its key (source, topic, key) wait behind it.
-- $1 inbox, $2 limit.
SELECT i.message_id, i.source, i.topic, i.key, i.sequence, i.attempts,
       to_char(i.received_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"') AS received_at,
       to_char(i.parked_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"') AS parked_at,
       i.park_reason,
       to_char(i.next_attempt_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"') AS next_attempt_at,
       i.last_error,
       (SELECT count(*) FROM relay.inbox AS w
        WHERE w.inbox = i.inbox AND w.source = i.source AND w.topic = i.topic AND w.key = i.key
          AND w.processed_at IS NULL AND w.sequence > i.sequence) AS waiting,
       count(*) OVER () AS total
FROM relay.inbox AS i
WHERE i.inbox = $1 AND i.processed_at IS NULL AND (i.parked_at IS NOT NULL OR i.attempts > 0)
ORDER BY i.received_at, i.sequence
LIMIT $2
