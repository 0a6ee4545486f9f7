-- Messages stored more than $2 seconds ago (on this database's clock) that the receiving service has not processed yet and that are not
-- parked (parked ones are listed by unprocessed_parked.sql). $1 inbox, $2 seconds, $3 limit.
SELECT message_id, count(*) OVER () AS total
FROM relay.inbox
WHERE inbox = $1 AND processed_at IS NULL AND parked_at IS NULL AND received_at < now() - make_interval(secs => $2)
ORDER BY received_at, message_id
LIMIT $3
