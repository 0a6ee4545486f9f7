-- The backlog for /metrics: pending rows, the age in seconds of the oldest, and parked rows
-- awaiting an operator (discarded ones are settled).
-- $1 the poller's topics (empty: all). Both counts use the partial indexes.
SELECT
    (SELECT count(*) FROM relay.outbox
      WHERE published_at IS NULL AND parked_at IS NULL AND (cardinality($1::text[]) = 0 OR topic = ANY($1))),
    (SELECT coalesce(extract(epoch FROM now() - min(created_at)), 0)::float8 FROM relay.outbox
      WHERE published_at IS NULL AND parked_at IS NULL AND (cardinality($1::text[]) = 0 OR topic = ANY($1))),
    (SELECT count(*) FROM relay.outbox
      WHERE parked_at IS NOT NULL AND discarded_at IS NULL AND (cardinality($1::text[]) = 0 OR topic = ANY($1)))
