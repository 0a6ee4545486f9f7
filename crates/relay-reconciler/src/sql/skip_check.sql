-- Whether service mode's lock argument holds for this outbox database: is it a hot standby
-- (whose pg_locks lacks the primary's writers), and how many ids does relay.outbox's id
-- sequence cache per session (above 1, an idle session holds ids that no lock shows).
SELECT pg_catalog.pg_is_in_recovery(),
       (SELECT s.seqcache
        FROM pg_catalog.pg_sequence AS s
        WHERE s.seqrelid = pg_catalog.pg_get_serial_sequence('relay.outbox', 'id')::regclass)
