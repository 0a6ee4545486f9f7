-- The bare loop's mark.
UPDATE relay.inbox SET processed_at = clock_timestamp() WHERE inbox = $1 AND message_id = $2
