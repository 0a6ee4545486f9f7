-- Messages stored before $2 that the receiving service has not processed yet and that are not
-- parked (parked ones are listed by unprocessed_parked.sql). $1 inbox, $2 stored before, $3 limit.
SELECT message_id, count(*) OVER () AS total
FROM relay.inbox
WHERE inbox = $1 AND processed_at IS NULL AND parked_at IS NULL AND received_at < $2
ORDER BY received_at, message_id
LIMIT $3
