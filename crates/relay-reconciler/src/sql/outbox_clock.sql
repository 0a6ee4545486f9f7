-- The outbox database's clock and transaction horizon at the start of a pass. Every age the
-- reconciler compares is measured on the databases' clocks, never on the reconciler host's.
-- xmin is the oldest transaction still running, xmax the next one to start (pg_current_snapshot).
-- $1 grace in seconds.
SELECT now() - make_interval(secs => $1) AS cutoff,
       pg_snapshot_xmin(pg_current_snapshot())::text AS xmin,
       pg_snapshot_xmax(pg_current_snapshot())::text AS xmax
