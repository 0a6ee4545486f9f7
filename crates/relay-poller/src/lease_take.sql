-- Takes the lease of topic selection $1 for this session, as a new term, unless another poller
-- validly holds it (the test of lease_state.sql, evaluated again under the row lock, so of two
-- pollers trying at once exactly one gets the term). $2 this poller's lease time in seconds
-- (recorded, so others judge this lease by it), $3 who this is (for operators), $4 the marker
-- lock this session holds (advisory, class 1380273218). Returns the new term, or no row.
UPDATE relay.outbox_leader AS l
SET term = l.term + 1,
    holder = $3,
    holder_pid = pg_backend_pid(),
    holder_lock = $4,
    lease_secs = $2::float8,
    acquired_at = clock_timestamp(),
    renewed_at = clock_timestamp()
WHERE l.name = $1
  AND NOT relay.outbox_lease_valid(l, $2::float8, clock_timestamp())
RETURNING l.term
