-- Give up on parked rows; they stay parked, for the audit trail, with when and why.
-- $1 all, $2 else only these ids, $3 topic or NULL for all, $4 reason.
UPDATE relay.outbox
SET discarded_at = clock_timestamp(), discard_reason = $4
WHERE parked_at IS NOT NULL AND discarded_at IS NULL
  AND ($1 OR id = ANY($2::bigint[]))
  AND ($3::text IS NULL OR topic = $3)
RETURNING id
