-- Least-privilege group roles on the receiving side. Each service logs in as its own LOGIN user,
-- a member of one of these NOLOGIN roles, and runs with RELAY_MIGRATE=false; only the migrating
-- user (or a DBA) owns and changes the schema.
--
--   relay_inbox_consumer  inbox-consumer: insert messages and dead letters, purge old inbox rows
--                         (retention); never change a stored message or read a dead letter's record
--   relay_reconciler      reconciler: read only
--   relay_operator        relay-admin: list, re-drive and discard dead letters
--
-- Roles belong to the whole cluster, so they may exist already (made by a DBA, or by the
-- migration of another database): only missing ones are created, which needs CREATEROLE.
DO $$
DECLARE
    role_name text;
BEGIN
    FOREACH role_name IN ARRAY ARRAY['relay_inbox_consumer', 'relay_reconciler', 'relay_operator'] LOOP
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
                                     'relay_inbox_consumer, relay_reconciler and relay_operator first';
            END;
        END IF;
    END LOOP;
END
$$;

GRANT USAGE ON SCHEMA relay TO relay_inbox_consumer, relay_reconciler, relay_operator;

-- The consumer inserts batches (insert_inbox.sql; ON CONFLICT on the key needs SELECT) and
-- retention reads and deletes its old rows and raises the marker (purge_received.sql). Dead
-- letters: insert, with SELECT only on the position columns ON CONFLICT checks. The identity
-- columns (seq, id) need no sequence grant.
GRANT SELECT, INSERT, DELETE ON relay.inbox TO relay_inbox_consumer;
GRANT INSERT, SELECT (inbox, kafka_topic, kafka_partition, kafka_offset) ON relay.dead_letter TO relay_inbox_consumer;
GRANT SELECT, INSERT, UPDATE ON relay.inbox_purged TO relay_inbox_consumer;

GRANT SELECT ON relay.inbox, relay.inbox_purged TO relay_reconciler;

-- relay-admin dead-letters list/discard, and redrive: the raw record goes through the
-- consumer's insert (SELECT on the key for ON CONFLICT) and the dead letter is resolved.
GRANT SELECT ON relay.dead_letter TO relay_operator;
GRANT UPDATE (error, resolved_at, resolution, resolution_note) ON relay.dead_letter TO relay_operator;
GRANT INSERT, SELECT (inbox, message_id) ON relay.inbox TO relay_operator;

-- The migration history, where refinery keeps it (not when a DBA applied these files by hand):
-- services started with RELAY_MIGRATE=false read it to check that the schema is up to date.
DO $$
DECLARE
    history regclass := to_regclass('relay_inbox_schema_history');
BEGIN
    IF history IS NOT NULL THEN
        EXECUTE format('GRANT SELECT ON %s TO relay_inbox_consumer, relay_operator', history);
    END IF;
END
$$;
