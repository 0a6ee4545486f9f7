-- Whether some poller validly leads topic selection $1: its lease was renewed within the lease
-- time ($2, seconds) and its lease session still lives and holds its marker lock (an advisory
-- lock of class 1380273218 that the session took before taking the lease). Returns no row
-- before the lease row exists.
SELECT l.term,
       l.holder_pid IS NOT NULL
       AND l.renewed_at > clock_timestamp() - make_interval(secs => $2::float8)
       AND EXISTS (
           SELECT FROM pg_catalog.pg_locks AS k
           WHERE k.locktype = 'advisory'
             AND k.database = (SELECT oid FROM pg_catalog.pg_database WHERE datname = current_database())
             AND k.classid = 1380273218 AND k.objid = l.holder_lock::oid AND k.objsubid = 2
             AND k.pid = l.holder_pid AND k.granted
       ) AS valid
FROM relay.outbox_leader AS l
WHERE l.name = $1
