-- How far one (inbox, source) pair reaches on the outbox side, for the progress bar: the rows a
-- comparison will check. $1 topics, $2 cutoff, $3 first id.
SELECT count(*) FROM relay.outbox WHERE topic = ANY($1) AND parked_at IS NULL AND created_at < $2 AND id >= $3
