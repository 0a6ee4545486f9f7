-- Two changes to what sessions can hold and take on the origin side.
--
-- 1. relay.enqueue holds a bounded number of locks. V1 took one advisory lock per (topic, key)
--    until commit, so one transaction enqueueing tens of thousands of keys filled the server's
--    shared lock table ("out of shared memory") for every database on the server. Now each
--    (topic, key) maps to one of 1024 lock slots of the database: same key, same slot, so
--    same-key writers still wait for each other and, per key, id order is still commit order.
--    One transaction holds at most 1024 of these locks, and since they are exclusive the whole
--    database never holds more than 1024 granted. The price: two writers whose keys share a slot
--    also wait for each other (1 in 1024 for single-key transactions), and transactions that
--    enqueue several keys can deadlock on slots even when they enqueue keys in the same order;
--    PostgreSQL then aborts one of them (SQLSTATE 40P01) after deadlock_timeout, to be retried.
--
-- 2. Poller leadership is a lease row only relay_outbox_poller may change (relay.outbox_leader),
--    not an advisory lock any role could take. See the table's comment below.

-- Slot locks use their own class ('RELE'), apart from V1's per-key locks (1380273217), the
-- leader markers (1380273218), the migration lock (1380273219) and the inbox retention lock
-- (1380273220).
--
-- Upgrade from V1 to V4: a transaction still open from before this migration may hold V1's
-- per-key lock on a key without holding its slot. Before taking the slot, relay.enqueue waits
-- for any such holder of the same key (a shared lock on V1's key, released at once, so it
-- costs no lasting lock), so a transaction that began under V1 still commits ahead of a later
-- writer of its key. Nothing takes V1's per-key locks any more, so the wait is empty otherwise.
CREATE OR REPLACE FUNCTION relay.enqueue(
    topic        text,
    key          text,
    payload      bytea,
    headers      jsonb DEFAULT '{}',
    msg_type     text  DEFAULT '',
    content_type text  DEFAULT 'application/octet-stream',
    traceparent  text  DEFAULT NULL,
    tracestate   text  DEFAULT NULL
) RETURNS uuid
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
#variable_conflict use_variable
DECLARE
    new_id   uuid;
    key_hash integer;
BEGIN
    IF topic IS NULL OR topic !~ '^[A-Za-z0-9._-]{1,249}$' OR topic IN ('.', '..') THEN
        RAISE EXCEPTION 'relay.enqueue: topic % is not a valid Kafka topic name', quote_nullable(topic)
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF key IS NULL THEN
        RAISE EXCEPTION 'relay.enqueue: key must not be null' USING ERRCODE = 'null_value_not_allowed';
    END IF;
    IF payload IS NULL THEN
        RAISE EXCEPTION 'relay.enqueue: payload must not be null' USING ERRCODE = 'null_value_not_allowed';
    END IF;
    IF headers IS NULL OR jsonb_typeof(headers) <> 'object'
       OR EXISTS (SELECT 1 FROM jsonb_each(headers) AS h WHERE jsonb_typeof(h.value) <> 'string') THEN
        RAISE EXCEPTION 'relay.enqueue: headers must be a JSON object of string values'
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF msg_type IS NULL OR content_type IS NULL THEN
        RAISE EXCEPTION 'relay.enqueue: msg_type and content_type must not be null'
            USING ERRCODE = 'null_value_not_allowed';
    END IF;

    key_hash := hashtext(topic || chr(31) || key);
    -- A writer from before this migration still holding this key's V1 lock goes first.
    PERFORM pg_advisory_lock_shared(1380273217, key_hash);
    PERFORM pg_advisory_unlock_shared(1380273217, key_hash);
    -- The key's slot, held until commit or abort: 0..1023, the low ten bits of the key's hash.
    PERFORM pg_advisory_xact_lock(1380273221, key_hash & 1023);

    INSERT INTO relay.outbox (topic, key, payload, headers, msg_type, content_type, traceparent, tracestate)
    VALUES (topic, key, payload, headers, msg_type, content_type, traceparent, tracestate)
    RETURNING outbox.message_id INTO new_id;

    -- Delivered at commit; the poller wakes at once instead of waiting for its poll interval.
    PERFORM pg_notify('relay_outbox', '');
    RETURN new_id;
END
$$;
-- CREATE OR REPLACE keeps V4's SECURITY DEFINER, owner and grants; restated for a DBA reading
-- this file alone.
ALTER FUNCTION relay.enqueue(text, text, bytea, jsonb, text, text, text, text) SECURITY DEFINER;

-- Leadership of the pollers of one outbox, one row per topic selection (`name`, for example
-- 'outbox-poller:payments.v1'). Only relay_outbox_poller (and the owner) may insert or update
-- it, and locking a row needs UPDATE: so no application role can take leadership, hold it, or
-- keep the leader from renewing. Advisory locks, which V1 to V4 used, are open to every role.
--
-- A poller leads while its row names it: `term` counts leaderships (it only grows),
-- `holder_pid` is the backend of the leader's lease session, which holds the session advisory
-- lock (1380273218, holder_lock) for as long as it lives. The leader renews `renewed_at` every
-- few hundred milliseconds. Another poller takes the row over, with term + 1, when
--   - the holder's session is gone (killed process, cut connection, server-side termination,
--     or a session pooler's reset): the marker lock is no longer held by holder_pid, or
--   - the lease expired: renewed_at is older than the lease time (a frozen or partitioned
--     leader whose session is still open),
-- and a leader that fails to renew for half the lease time stands down by itself.
CREATE TABLE relay.outbox_leader (
    name        text        NOT NULL,
    term        bigint      NOT NULL DEFAULT 0,
    holder      text,
    holder_pid  integer,
    holder_lock integer,
    acquired_at timestamptz,
    renewed_at  timestamptz,
    CONSTRAINT outbox_leader_pkey PRIMARY KEY (name)
);

GRANT SELECT, INSERT, UPDATE ON relay.outbox_leader TO relay_outbox_poller;
GRANT SELECT ON relay.outbox_leader TO relay_reconciler, relay_operator;

-- Fencing: a leader's publishing session declares its lease and term (session settings
-- relay.leader_lease and relay.leader_term). A statement marking rows published or parked from
-- such a session fails once another poller has taken the lease over, so a superseded leader
-- records nothing more; the rows it sent stay pending and the new leader sends them (the inbox
-- stores each message once). Sessions that declare no lease (relay-admin, the reconciler) are
-- not affected. One check per statement, not per row.
CREATE FUNCTION relay.outbox_leader_fence() RETURNS trigger
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    declared_lease text := current_setting('relay.leader_lease', true);
    declared_term  text := current_setting('relay.leader_term', true);
BEGIN
    IF coalesce(declared_lease, '') <> '' AND NOT EXISTS (
        SELECT FROM relay.outbox_leader AS l WHERE l.name = declared_lease AND l.term::text = declared_term
    ) THEN
        RAISE EXCEPTION 'relay: term % of lease % has ended; this poller no longer leads',
            declared_term, declared_lease
            USING ERRCODE = 'RL001';
    END IF;
    RETURN NULL;
END
$$;

CREATE TRIGGER outbox_leader_fence
    BEFORE UPDATE OF published_at, parked_at ON relay.outbox
    FOR EACH STATEMENT EXECUTE FUNCTION relay.outbox_leader_fence();
