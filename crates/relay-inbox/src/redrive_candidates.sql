-- Unresolved dead letters of one inbox to re-drive, oldest first.
-- $1 inbox, $2 all of them, $3 else only these ids.
SELECT id
FROM relay.dead_letter
WHERE inbox = $1 AND resolved_at IS NULL AND ($2 OR id = ANY($3::bigint[]))
ORDER BY id
