-- Messages committed to the outbox so far.
SELECT count(*) FROM relay.outbox
