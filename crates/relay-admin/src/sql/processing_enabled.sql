-- Whether an inbox processes its messages through relay.claim (it has a relay.processing row).
-- $1 inbox.
SELECT EXISTS (SELECT 1 FROM relay.processing WHERE inbox = $1)
