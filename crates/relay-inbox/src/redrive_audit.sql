-- The audit row of one re-driven dead letter, in the re-drive's transaction (inbox migration
-- V9): its resolution and error before and after. $1 operator, $2 reason, $3 dead-letter id,
-- $4 its error before the re-drive.
INSERT INTO relay.operator_audit (operator, command, reason, target, before, after)
SELECT $1, 'dead-letters redrive', $2, d.id::text,
       jsonb_build_object('resolved_at', NULL, 'resolution', NULL, 'resolution_note', NULL, 'error', $4::text),
       jsonb_build_object('resolved_at', d.resolved_at, 'resolution', d.resolution,
                          'resolution_note', d.resolution_note, 'error', d.error)
FROM relay.dead_letter AS d
WHERE d.id = $3
