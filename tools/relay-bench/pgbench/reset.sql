-- Before each run: empty outboxes, so no run inherits another's table and index sizes; the
-- accounts vacuumed and a checkpoint taken, so no run meets the previous run's dead rows or a
-- checkpoint's full-page writes that another did not.
TRUNCATE relay.outbox, bench_plain_outbox;
VACUUM bench_account;
CHECKPOINT;
