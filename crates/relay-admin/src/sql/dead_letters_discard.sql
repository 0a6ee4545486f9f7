-- Resolve dead letters as discarded; the row, its raw record and its error stay.
-- $1 inbox, $2 all, $3 else only these ids, $4 reason.
UPDATE relay.dead_letter
SET resolved_at = clock_timestamp(), resolution = 'discarded', resolution_note = $4
WHERE inbox = $1 AND resolved_at IS NULL
  AND ($2 OR id = ANY($3::bigint[]))
RETURNING id
