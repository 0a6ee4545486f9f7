-- Un-park rows: the poller's scan (pending = not published, not parked) picks them up again.
-- The parking is kept as previous_parked_at/previous_park_reason, with retried_at, and each row
-- gets an audit row (outbox migration V7). Discarded rows are final.
-- $1 all, $2 else only these ids, $3 topic or NULL for all, $4 operator, $5 reason.
-- Returns target (the id), before and after (JSON text), by id.
WITH chosen AS (
    SELECT id, parked_at, park_reason, retried_at, previous_parked_at, previous_park_reason
    FROM relay.outbox
    WHERE parked_at IS NOT NULL AND discarded_at IS NULL AND published_at IS NULL
      AND ($1 OR id = ANY($2::bigint[]))
      AND ($3::text IS NULL OR topic = $3)
    FOR UPDATE
), changed AS (
    UPDATE relay.outbox AS o
    SET parked_at = NULL, park_reason = NULL, retried_at = clock_timestamp(),
        previous_parked_at = c.parked_at, previous_park_reason = c.park_reason
    FROM chosen AS c
    WHERE o.id = c.id
    RETURNING o.id,
        jsonb_build_object('parked_at', c.parked_at, 'park_reason', c.park_reason, 'retried_at', c.retried_at,
                           'previous_parked_at', c.previous_parked_at,
                           'previous_park_reason', c.previous_park_reason) AS before,
        jsonb_build_object('parked_at', o.parked_at, 'park_reason', o.park_reason, 'retried_at', o.retried_at,
                           'previous_parked_at', o.previous_parked_at,
                           'previous_park_reason', o.previous_park_reason) AS after
), audit AS (
    INSERT INTO relay.operator_audit (operator, command, reason, target, before, after)
    SELECT $4, 'parked retry', $5, id::text, before, after FROM changed
)
SELECT id::text AS target, before::text, after::text FROM changed ORDER BY id
