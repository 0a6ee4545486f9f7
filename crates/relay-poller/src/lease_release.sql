-- Gives up term $2 of topic selection $1 (shutdown, or a term ended by an error), so a standby
-- takes over at its next try instead of when the lease expires.
UPDATE relay.outbox_leader
SET holder_pid = NULL, holder_lock = NULL, renewed_at = NULL
WHERE name = $1 AND term = $2 AND holder_pid = pg_backend_pid()
