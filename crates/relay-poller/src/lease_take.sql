-- Takes the lease of topic selection $1 for this session, as a new term, unless another poller
-- validly holds it (the test of lease_state.sql, evaluated again under the row lock, so of two
-- pollers trying at once exactly one gets the term). $2 lease time in seconds, $3 who this is
-- (for operators), $4 the marker lock this session holds (advisory, class 1380273218).
-- Returns the new term, or no row.
UPDATE relay.outbox_leader AS l
SET term = l.term + 1,
    holder = $3,
    holder_pid = pg_backend_pid(),
    holder_lock = $4,
    acquired_at = clock_timestamp(),
    renewed_at = clock_timestamp()
WHERE l.name = $1
  AND NOT coalesce(
      l.holder_pid IS NOT NULL
      AND l.renewed_at > clock_timestamp() - make_interval(secs => $2::float8)
      AND EXISTS (
          SELECT FROM pg_catalog.pg_locks AS k
          WHERE k.locktype = 'advisory'
            AND k.database = (SELECT oid FROM pg_catalog.pg_database WHERE datname = current_database())
            AND k.classid = 1380273218 AND k.objid = l.holder_lock::oid AND k.objsubid = 2
            AND k.pid = l.holder_pid AND k.granted
      ), false)
RETURNING l.term
