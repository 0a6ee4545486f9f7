-- The processing backlog of one inbox, for its consumer's metrics: messages not processed yet
-- (waiting, failing or parked), the age of the oldest in seconds since it was stored, their
-- failed attempts, and how many are parked. No row when the inbox does not process its
-- messages (no relay.processing row). $1 inbox.
SELECT count(i.message_id) AS unprocessed,
       coalesce(extract(epoch FROM clock_timestamp() - min(i.received_at)), 0)::float8 AS oldest_age_seconds,
       coalesce(sum(i.attempts), 0)::float8 AS attempts,
       count(i.parked_at) AS parked
FROM relay.processing AS p
LEFT JOIN relay.inbox AS i ON i.inbox = p.inbox AND i.processed_at IS NULL
WHERE p.inbox = $1
GROUP BY p.inbox
