-- Give messages another attempt at once: un-park them and clear their backoff. attempts and
-- last_error stay, as evidence of what happened before. Processed messages are final.
-- $1 inbox, $2 all (every parked message), $3 else only these message ids (parked or failing).
UPDATE relay.inbox
SET parked_at = NULL, park_reason = NULL, next_attempt_at = NULL
WHERE inbox = $1 AND processed_at IS NULL
  AND (($2 AND parked_at IS NOT NULL)
       OR (NOT $2 AND message_id = ANY($3::uuid[]) AND (parked_at IS NOT NULL OR attempts > 0)))
RETURNING message_id
