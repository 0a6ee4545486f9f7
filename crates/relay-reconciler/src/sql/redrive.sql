-- Re-drive: forget that these rows were published, so the poller sends them again (inboxes
-- deduplicate, so receivers that have them are unaffected). Returns the rows re-driven.
UPDATE relay.outbox
SET published_at = NULL, kafka_partition = NULL, kafka_offset = NULL
WHERE message_id = ANY($1) AND published_at IS NOT NULL AND parked_at IS NULL
RETURNING message_id
