-- The writers' side of the commit benchmark (run.sh): an account table and a plain table shaped
-- like relay.outbox (same columns, defaults, constraints and indexes), in a database that already
-- has Relay's outbox schema. 100,000 accounts, so writers rarely touch the same row.
DROP TABLE IF EXISTS bench_account, bench_plain_outbox;
CREATE TABLE bench_account (id integer PRIMARY KEY, balance bigint NOT NULL);
INSERT INTO bench_account SELECT g, 0 FROM generate_series(1, 100000) AS g;
CREATE TABLE bench_plain_outbox (LIKE relay.outbox INCLUDING ALL);
VACUUM ANALYZE bench_account;
