-- The lowest sequence one inbox holds from one source at or above $3, so the comparison jumps
-- over empty ranges however far a sequence lies (indexed by inbox, source, sequence).
-- $1 inbox, $2 source, $3 first sequence.
SELECT min(sequence) FROM relay.inbox WHERE inbox = $1 AND source = $2 AND sequence >= $3
