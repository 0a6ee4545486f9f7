-- Who holds the outbox-poller's leader lock (advisory, class 1380273218): the holder session's
-- application_name, which each poller sets in its DATABASE_URL.
SELECT a.application_name
FROM pg_locks l
JOIN pg_stat_activity a ON a.pid = l.pid
WHERE l.locktype = 'advisory' AND l.classid = 1380273218 AND l.granted
ORDER BY a.backend_start
LIMIT 1
