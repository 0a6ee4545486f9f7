-- Which poller leads: the application_name (each poller sets it in its DATABASE_URL) of the
-- session holding the outbox lease (relay.outbox_leader, migration V5).
SELECT a.application_name
FROM relay.outbox_leader AS l
JOIN pg_stat_activity AS a ON a.pid = l.holder_pid
ORDER BY l.renewed_at DESC NULLS LAST
LIMIT 1
