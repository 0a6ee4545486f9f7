-- Un-park rows: the poller's scan (pending = not published, not parked) picks them up again.
-- Discarded rows are final. $1 all, $2 else only these ids, $3 topic or NULL for all.
UPDATE relay.outbox
SET parked_at = NULL, park_reason = NULL
WHERE parked_at IS NOT NULL AND discarded_at IS NULL AND published_at IS NULL
  AND ($1 OR id = ANY($2::bigint[]))
  AND ($3::text IS NULL OR topic = $3)
RETURNING id
