-- Relay: the same business change and relay.enqueue (checks, the key's slot lock, the insert).
\set aid random(1, 100000)
\set delta random(-5000, 5000)
BEGIN;
UPDATE bench_account SET balance = balance + :delta WHERE id = :aid;
SELECT relay.enqueue('bench.payments', 'account-' || :aid, decode(repeat(md5(:aid::text), 8), 'hex'));
END;
