-- For comparison: relay.enqueue plus the notification it sent before migration V6, which a
-- writer may still send to wake the poller at once.
\set aid random(1, 100000)
\set delta random(-5000, 5000)
BEGIN;
UPDATE bench_account SET balance = balance + :delta WHERE id = :aid;
SELECT relay.enqueue('bench.payments', 'account-' || :aid, decode(repeat(md5(:aid::text), 8), 'hex'));
SELECT pg_notify('relay_outbox', '');
END;
