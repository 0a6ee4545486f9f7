-- Before each run: empty outboxes, so no run inherits another's table and index sizes.
TRUNCATE relay.outbox, bench_plain_outbox;
