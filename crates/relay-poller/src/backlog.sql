-- The backlog for /metrics: pending rows, the age in seconds of the oldest, and parked rows
-- awaiting an operator (discarded ones are settled).
-- $1 the poller's topics (empty: all). One pass over the pending rows (partial index) for both
-- the count and the age; parked rows use their own partial index.
SELECT pending.n, pending.age_seconds,
    (SELECT count(*) FROM relay.outbox
      WHERE parked_at IS NOT NULL AND discarded_at IS NULL AND (cardinality($1::text[]) = 0 OR topic = ANY($1)))
FROM (
    SELECT count(*) AS n, coalesce(extract(epoch FROM now() - min(created_at)), 0)::float8 AS age_seconds
    FROM relay.outbox
    WHERE published_at IS NULL AND parked_at IS NULL AND (cardinality($1::text[]) = 0 OR topic = ANY($1))
) AS pending
