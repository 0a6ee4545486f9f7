-- Baseline: the business change and a plain INSERT of an outbox-shaped row.
\set aid random(1, 100000)
\set delta random(-5000, 5000)
BEGIN;
UPDATE bench_account SET balance = balance + :delta WHERE id = :aid;
INSERT INTO bench_plain_outbox (topic, key, payload)
    VALUES ('bench.payments', 'account-' || :aid, decode(repeat(md5(:aid::text), 8), 'hex'));
END;
