-- Give messages another attempt at once: un-park them and clear their backoff. The parking is
-- kept as previous_parked_at/previous_park_reason, with retried_at (inbox migration V9);
-- attempts and last_error stay. Each message gets an audit row. Processed messages are final.
-- $1 inbox, $2 all (every parked message), $3 else only these message ids (parked or failing),
-- $4 operator, $5 reason. Returns target (the message id), before and after (JSON text).
WITH chosen AS (
    SELECT inbox, message_id, parked_at, park_reason, next_attempt_at, retried_at, previous_parked_at,
           previous_park_reason
    FROM relay.inbox
    WHERE inbox = $1 AND processed_at IS NULL
      AND (($2 AND parked_at IS NOT NULL)
           OR (NOT $2 AND message_id = ANY($3::uuid[]) AND (parked_at IS NOT NULL OR attempts > 0)))
    FOR UPDATE
), changed AS (
    UPDATE relay.inbox AS i
    SET parked_at = NULL, park_reason = NULL, next_attempt_at = NULL, retried_at = clock_timestamp(),
        previous_parked_at = coalesce(c.parked_at, c.previous_parked_at),
        previous_park_reason = CASE WHEN c.parked_at IS NULL THEN c.previous_park_reason ELSE c.park_reason END
    FROM chosen AS c
    WHERE i.inbox = c.inbox AND i.message_id = c.message_id
    RETURNING i.message_id,
        jsonb_build_object('parked_at', c.parked_at, 'park_reason', c.park_reason,
                           'next_attempt_at', c.next_attempt_at, 'retried_at', c.retried_at,
                           'previous_parked_at', c.previous_parked_at,
                           'previous_park_reason', c.previous_park_reason,
                           'attempts', i.attempts, 'last_error', i.last_error) AS before,
        jsonb_build_object('parked_at', i.parked_at, 'park_reason', i.park_reason,
                           'next_attempt_at', i.next_attempt_at, 'retried_at', i.retried_at,
                           'previous_parked_at', i.previous_parked_at,
                           'previous_park_reason', i.previous_park_reason,
                           'attempts', i.attempts, 'last_error', i.last_error) AS after
), audit AS (
    INSERT INTO relay.operator_audit (operator, command, reason, target, before, after)
    SELECT $4, 'processing retry', $5, message_id::text, before, after FROM changed
)
SELECT message_id::text AS target, before::text, after::text FROM changed ORDER BY message_id
