-- The outbox an idle poller scans: 100,000 rows, all published, vacuumed (so the pending index
-- is empty, as autovacuum keeps it).
TRUNCATE relay.outbox;
INSERT INTO relay.outbox (topic, key, payload, published_at)
SELECT 'bench.payments', 'account-' || g, decode(repeat(md5(g::text), 8), 'hex'), now()
FROM generate_series(1, 100000) AS g;
VACUUM ANALYZE relay.outbox;
