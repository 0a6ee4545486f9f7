-- Give up on messages without acting on them: processed_at and skipped_at say when, skip_reason
-- why; parked_at, park_reason, attempts and last_error stay. The key's next message is claimed.
-- $1 inbox, $2 all (every parked message), $3 else only these message ids (parked or failing),
-- $4 reason.
UPDATE relay.inbox
SET processed_at = clock_timestamp(), skipped_at = clock_timestamp(), skip_reason = $4
WHERE inbox = $1 AND processed_at IS NULL
  AND (($2 AND parked_at IS NOT NULL)
       OR (NOT $2 AND message_id = ANY($3::uuid[]) AND (parked_at IS NOT NULL OR attempts > 0)))
RETURNING message_id
