-- The leader's renewal of term $2 of topic selection $1; no row once another poller took over.
UPDATE relay.outbox_leader
SET renewed_at = clock_timestamp()
WHERE name = $1 AND term = $2 AND holder_pid = pg_backend_pid()
