-- Least-privilege group roles on the origin side. Each service logs in as its own LOGIN user,
-- a member of one of these NOLOGIN roles, and runs with RELAY_MIGRATE=false; only the migrating
-- user (or a DBA) owns and changes the schema.
--
--   relay_outbox_writer  applications: call relay.enqueue, nothing else (no table privileges)
--   relay_outbox_poller  outbox-poller: read the outbox, mark rows published or parked, purge
--                        published rows (retention); never insert rows or change their content
--   relay_reconciler     reconciler: read only
--   relay_operator       relay-admin: retry and discard parked rows; with relay_reconciler,
--                        `reconciler --repair --execute` (clears published_at)
--
-- Roles belong to the whole cluster, so they may exist already (made by a DBA, or by the
-- migration of another database): only missing ones are created, which needs CREATEROLE.
DO $$
DECLARE
    role_name text;
BEGIN
    FOREACH role_name IN ARRAY ARRAY['relay_outbox_writer', 'relay_outbox_poller', 'relay_reconciler', 'relay_operator'] LOOP
        IF NOT EXISTS (SELECT FROM pg_catalog.pg_roles WHERE rolname = role_name) THEN
            BEGIN
                EXECUTE format('CREATE ROLE %I NOLOGIN', role_name);
            EXCEPTION
                -- Created meanwhile by the migration of another database of this cluster.
                WHEN duplicate_object OR unique_violation THEN NULL;
                WHEN insufficient_privilege THEN
                    RAISE EXCEPTION 'role % does not exist and % may not create it', role_name, current_user
                        USING ERRCODE = 'insufficient_privilege',
                              HINT = 'grant CREATEROLE to the migrating user, or have a DBA create the NOLOGIN roles '
                                     'relay_outbox_writer, relay_outbox_poller, relay_reconciler and relay_operator first';
            END;
        END IF;
    END LOOP;
END
$$;

GRANT USAGE ON SCHEMA relay TO relay_outbox_writer, relay_outbox_poller, relay_reconciler, relay_operator;

-- Writers: relay.enqueue runs with its owner's rights (its search_path is fixed to pg_catalog),
-- so applications need no privilege on relay.outbox and cannot bypass its checks and lock.
ALTER FUNCTION relay.enqueue(text, text, bytea, jsonb, text, text, text, text) SECURITY DEFINER;
REVOKE EXECUTE ON FUNCTION relay.enqueue(text, text, bytea, jsonb, text, text, text, text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION relay.enqueue(text, text, bytea, jsonb, text, text, text, text) TO relay_outbox_writer;

-- The poller reads pending rows and marks them (mark_published.sql, mark_parked.sql); retention
-- deletes old published rows and raises the purge marker (purge_published.sql, whose FOR UPDATE
-- the column UPDATE grant covers). LISTEN, NOTIFY and advisory locks need no grant.
GRANT SELECT ON relay.outbox TO relay_outbox_poller;
GRANT UPDATE (published_at, kafka_partition, kafka_offset, parked_at, park_reason) ON relay.outbox TO relay_outbox_poller;
GRANT DELETE ON relay.outbox TO relay_outbox_poller;
GRANT SELECT, INSERT, UPDATE ON relay.outbox_purged TO relay_outbox_poller;

GRANT SELECT ON relay.outbox, relay.outbox_purged TO relay_reconciler;

-- relay-admin parked list/retry/discard; published_at and the position for reconciler re-drive.
GRANT SELECT ON relay.outbox TO relay_operator;
GRANT UPDATE (parked_at, park_reason, discarded_at, discard_reason, published_at, kafka_partition, kafka_offset)
    ON relay.outbox TO relay_operator;

-- The migration history, where refinery keeps it (not when a DBA applied these files by hand):
-- services started with RELAY_MIGRATE=false read it to check that the schema is up to date.
DO $$
DECLARE
    history regclass := to_regclass('relay_outbox_schema_history');
BEGIN
    IF history IS NOT NULL THEN
        EXECUTE format('GRANT SELECT ON %s TO relay_outbox_poller, relay_operator', history);
    END IF;
END
$$;
