-- The lowest outbox id at or above $1, so the comparison jumps over empty id ranges (primary key).
SELECT min(id) FROM relay.outbox WHERE id >= $1
