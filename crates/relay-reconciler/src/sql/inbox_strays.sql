-- Inbox rows from no configured source, or on a topic the inbox does not subscribe to: forged or
-- misrouted. No configured outbox gives them a cutoff, so created_at (the origin's clock) is aged
-- by this database's now(). $1 inbox, $2 sources, $3 topics, $4 grace in seconds (on this database's clock), $5 limit.
SELECT message_id, count(*) OVER () AS total
FROM relay.inbox
WHERE inbox = $1 AND created_at < now() - make_interval(secs => $4) AND NOT (source = ANY($2) AND topic = ANY($3))
ORDER BY seq
LIMIT $5
