-- Service mode may skip ids below this next cycle: nothing below it is pending, recent, or
-- parked without a decision (an operator may still retry such a row; discarded rows are final).
-- $1 settle window in seconds, on this database's clock.
SELECT least(
    (SELECT min(id) FROM relay.outbox WHERE published_at IS NULL AND parked_at IS NULL),
    (SELECT min(id) FROM relay.outbox WHERE parked_at IS NOT NULL AND discarded_at IS NULL),
    (SELECT min(id) FROM relay.outbox WHERE created_at >= now() - make_interval(secs => $1)),
    (SELECT coalesce(max(id), 0) + 1 FROM relay.outbox)
)
