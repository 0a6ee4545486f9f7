-- The dead letter's message is in the inbox now. $1 id, $2 note.
UPDATE relay.dead_letter
SET resolved_at = clock_timestamp(), resolution = 'redriven', resolution_note = $2
WHERE id = $1
