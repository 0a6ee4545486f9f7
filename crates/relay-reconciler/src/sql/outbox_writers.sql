-- The transactions writing to relay.outbox right now, by virtual transaction id. An INSERT
-- takes the table's RowExclusiveLock before it draws an id and keeps it until its transaction
-- ends, so a transaction that may still commit a row with an id drawn earlier is listed here.
-- Only this database's outbox counts; the lock view is readable by every role.
SELECT coalesce(array_agg(DISTINCT l.virtualtransaction), '{}')
FROM pg_catalog.pg_locks AS l
WHERE l.locktype = 'relation'
  AND l.database = (SELECT oid FROM pg_catalog.pg_database WHERE datname = current_database())
  AND l.relation = 'relay.outbox'::regclass
  AND l.mode IN ('RowExclusiveLock', 'ShareRowExclusiveLock', 'ExclusiveLock', 'AccessExclusiveLock')
  AND l.granted
