-- The record still cannot be stored: it stays unresolved, with today's reason. $1 id, $2 reason.
UPDATE relay.dead_letter
SET error = $2
WHERE id = $1
