-- The writers' side of the commit benchmark (run.sh): an account table and a plain table shaped
-- like relay.outbox (same columns, defaults, constraints and indexes), in a database that already
-- has Relay's outbox schema. 100,000 accounts, so writers rarely touch the same row.
DROP TABLE IF EXISTS bench_account, bench_plain_outbox;
CREATE TABLE bench_account (id integer PRIMARY KEY, balance bigint NOT NULL);
INSERT INTO bench_account SELECT g, 0 FROM generate_series(1, 100000) AS g;
CREATE TABLE bench_plain_outbox (LIKE relay.outbox INCLUDING ALL);
VACUUM ANALYZE bench_account;

-- What a function call costs by itself (function_floor.sql): relay.enqueue's language, security
-- and search_path, with only the plain INSERT inside.
CREATE OR REPLACE FUNCTION bench_insert_only(topic text, key text, payload bytea) RETURNS uuid
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
#variable_conflict use_variable
DECLARE
    new_id uuid;
BEGIN
    INSERT INTO public.bench_plain_outbox (topic, key, payload) VALUES (topic, key, payload)
    RETURNING bench_plain_outbox.message_id INTO new_id;
    RETURN new_id;
END
$$;
