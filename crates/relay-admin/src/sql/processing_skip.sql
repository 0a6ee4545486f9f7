-- Give up on messages without acting on them: processed_at and skipped_at say when, skip_reason
-- why; parked_at, park_reason, attempts and last_error stay. The key's next message is claimed.
-- Each message gets an audit row.
-- $1 inbox, $2 all (every parked message), $3 else only these message ids (parked or failing),
-- $4 operator, $5 reason (also the skip reason). Returns target (the message id), before and
-- after (JSON text).
WITH changed AS (
    UPDATE relay.inbox
    SET processed_at = clock_timestamp(), skipped_at = clock_timestamp(), skip_reason = $5
    WHERE inbox = $1 AND processed_at IS NULL
      AND (($2 AND parked_at IS NOT NULL)
           OR (NOT $2 AND message_id = ANY($3::uuid[]) AND (parked_at IS NOT NULL OR attempts > 0)))
    RETURNING message_id,
        jsonb_build_object('processed_at', NULL, 'skipped_at', NULL, 'skip_reason', NULL,
                           'parked_at', parked_at, 'park_reason', park_reason, 'attempts', attempts,
                           'last_error', last_error) AS before,
        jsonb_build_object('processed_at', processed_at, 'skipped_at', skipped_at, 'skip_reason', skip_reason,
                           'parked_at', parked_at, 'park_reason', park_reason, 'attempts', attempts,
                           'last_error', last_error) AS after
), audit AS (
    INSERT INTO relay.operator_audit (operator, command, reason, target, before, after)
    SELECT $4, 'processing skip', $5, message_id::text, before, after FROM changed
)
SELECT message_id::text AS target, before::text, after::text FROM changed ORDER BY message_id
