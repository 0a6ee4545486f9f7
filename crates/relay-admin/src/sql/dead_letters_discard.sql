-- Resolve dead letters as discarded; the row, its raw record and its error stay, and each gets
-- an audit row. $1 inbox, $2 all, $3 else only these ids, $4 operator, $5 reason (also the
-- resolution note). Returns target (the id), before and after (JSON text), by id.
WITH changed AS (
    UPDATE relay.dead_letter
    SET resolved_at = clock_timestamp(), resolution = 'discarded', resolution_note = $5
    WHERE inbox = $1 AND resolved_at IS NULL
      AND ($2 OR id = ANY($3::bigint[]))
    RETURNING id,
        jsonb_build_object('resolved_at', NULL, 'resolution', NULL, 'resolution_note', NULL,
                           'error', error) AS before,
        jsonb_build_object('resolved_at', resolved_at, 'resolution', resolution,
                           'resolution_note', resolution_note, 'error', error) AS after
), audit AS (
    INSERT INTO relay.operator_audit (operator, command, reason, target, before, after)
    SELECT $4, 'dead-letters discard', $5, id::text, before, after FROM changed
)
SELECT id::text AS target, before::text, after::text FROM changed ORDER BY id
