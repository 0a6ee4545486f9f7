-- Whether some poller validly leads topic selection $1: its lease was renewed within its
-- holder's lease time (the row's lease_secs; $2, this poller's lease time in seconds, for a row
-- that records none) and its lease session still lives and holds its marker lock (an advisory
-- lock of class 1380273218 that the session took before taking the lease). Outbox migration V7's
-- relay.outbox_lease_valid. Returns no row before the lease row exists.
SELECT l.term, relay.outbox_lease_valid(l, $2::float8, clock_timestamp()) AS valid
FROM relay.outbox_leader AS l
WHERE l.name = $1
