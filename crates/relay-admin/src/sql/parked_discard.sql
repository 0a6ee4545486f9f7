-- Give up on parked rows; they stay parked, with when and why, and each gets an audit row.
-- $1 all, $2 else only these ids, $3 topic or NULL for all, $4 operator, $5 reason (also the
-- discard reason). Returns target (the id), before and after (JSON text), by id.
WITH changed AS (
    UPDATE relay.outbox
    SET discarded_at = clock_timestamp(), discard_reason = $5
    WHERE parked_at IS NOT NULL AND discarded_at IS NULL
      AND ($1 OR id = ANY($2::bigint[]))
      AND ($3::text IS NULL OR topic = $3)
    RETURNING id,
        jsonb_build_object('discarded_at', NULL, 'discard_reason', NULL, 'parked_at', parked_at,
                           'park_reason', park_reason) AS before,
        jsonb_build_object('discarded_at', discarded_at, 'discard_reason', discard_reason,
                           'parked_at', parked_at, 'park_reason', park_reason) AS after
), audit AS (
    INSERT INTO relay.operator_audit (operator, command, reason, target, before, after)
    SELECT $4, 'parked discard', $5, id::text, before, after FROM changed
)
SELECT id::text AS target, before::text, after::text FROM changed ORDER BY id
