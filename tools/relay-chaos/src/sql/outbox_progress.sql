-- The outbox of one topic: all rows, rows not yet published (and not parked), parked rows.
SELECT count(*),
       count(*) FILTER (WHERE published_at IS NULL AND parked_at IS NULL),
       count(*) FILTER (WHERE parked_at IS NOT NULL)
FROM relay.outbox
WHERE topic = $1
