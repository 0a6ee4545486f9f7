-- Operators leave evidence, and each topic has exactly one publisher.
--
-- 1. The operator audit trail (relay.operator_audit, below), and history columns on
--    relay.outbox, so the evidence an operator's action replaces stays queryable:
--      `relay-admin parked retry` clears parked_at/park_reason (the poller's scan takes rows
--      that are neither published nor parked) and keeps them as previous_parked_at and
--      previous_park_reason, with retried_at;
--      `reconciler --repair --execute` clears published_at and the position (so the poller
--      sends the row again) and keeps them as previous_published_at, previous_kafka_partition
--      and previous_kafka_offset, with redriven_at.
--    Each later retry or repair overwrites these columns; the audit rows keep every one.
--
-- 2. Topic leases (relay.outbox_topic_lease): V5 elects one leader per topic selection
--    (OUTBOX_TOPICS), so two pollers with overlapping but different selections ({a,b} and
--    {b,c}) both led and both published b. Now the leader of a selection also claims each of
--    its topics (relay.outbox_claim_topics); a topic has at most one row here, naming the
--    lease that publishes it, and a poller publishes only the topics it claimed. See the
--    function's comment.

-- The operator audit trail: one row per row an operator command changed (relay-admin, and
-- `reconciler --repair --execute`), written in the same transaction as the change, so there is
-- no change without its row and no row without its change. Shared by the outbox and inbox
-- schemas (one database may hold both), hence IF NOT EXISTS and CREATE OR REPLACE.
--
--   at            when: the transaction's start (now()), set by the trigger below
--   db_role       who, as the database knows it: current_user, set by the trigger
--   session_role  session_user (differs from db_role after SET ROLE), set by the trigger
--   operator      who, as the operator named themself (--operator / RELAY_OPERATOR)
--   command       what was run, for example 'parked retry'
--   reason        why (--reason)
--   target        which row: an outbox id, a dead-letter id, or an inbox message id
--   before/after  the columns the command changed, before and after it, as JSON
--
-- Append-only: no role but the owner is granted UPDATE, DELETE or TRUNCATE, and triggers
-- refuse those for the owner too (an owner who must rewrite history has to disable them first,
-- which is itself visible in the server log with log_statement = 'ddl').
CREATE TABLE IF NOT EXISTS relay.operator_audit (
    id           bigint      GENERATED ALWAYS AS IDENTITY,
    at           timestamptz NOT NULL DEFAULT now(),
    db_role      text        NOT NULL DEFAULT current_user,
    session_role text        NOT NULL DEFAULT session_user,
    operator     text        NOT NULL,
    command      text        NOT NULL,
    reason       text        NOT NULL,
    target       text        NOT NULL,
    before       jsonb,
    after        jsonb,
    CONSTRAINT operator_audit_pkey PRIMARY KEY (id),
    CONSTRAINT operator_audit_operator_named CHECK (btrim(operator) <> ''),
    CONSTRAINT operator_audit_reason_given CHECK (btrim(reason) <> '')
);
CREATE INDEX IF NOT EXISTS operator_audit_target ON relay.operator_audit (target);

-- Who and when are the database's word, not the writer's.
CREATE OR REPLACE FUNCTION relay.operator_audit_stamp() RETURNS trigger
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    NEW.at := now();
    NEW.db_role := current_user;
    NEW.session_role := session_user;
    RETURN NEW;
END
$$;

CREATE OR REPLACE FUNCTION relay.operator_audit_append_only() RETURNS trigger
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    RAISE EXCEPTION 'relay.operator_audit is append-only: % refused', TG_OP
        USING ERRCODE = 'insufficient_privilege';
END
$$;

DROP TRIGGER IF EXISTS operator_audit_stamp ON relay.operator_audit;
CREATE TRIGGER operator_audit_stamp
    BEFORE INSERT ON relay.operator_audit
    FOR EACH ROW EXECUTE FUNCTION relay.operator_audit_stamp();
DROP TRIGGER IF EXISTS operator_audit_append_only ON relay.operator_audit;
CREATE TRIGGER operator_audit_append_only
    BEFORE UPDATE OR DELETE ON relay.operator_audit
    FOR EACH ROW EXECUTE FUNCTION relay.operator_audit_append_only();
DROP TRIGGER IF EXISTS operator_audit_no_truncate ON relay.operator_audit;
CREATE TRIGGER operator_audit_no_truncate
    BEFORE TRUNCATE ON relay.operator_audit
    FOR EACH STATEMENT EXECUTE FUNCTION relay.operator_audit_append_only();

REVOKE ALL ON relay.operator_audit FROM PUBLIC;
GRANT SELECT, INSERT (operator, command, reason, target, before, after) ON relay.operator_audit TO relay_operator;
GRANT SELECT ON relay.operator_audit TO relay_reconciler;

ALTER TABLE relay.outbox
    ADD COLUMN retried_at               timestamptz,
    ADD COLUMN previous_parked_at       timestamptz,
    ADD COLUMN previous_park_reason     text,
    ADD COLUMN redriven_at              timestamptz,
    ADD COLUMN previous_published_at    timestamptz,
    ADD COLUMN previous_kafka_partition integer,
    ADD COLUMN previous_kafka_offset    bigint;
GRANT UPDATE (retried_at, previous_parked_at, previous_park_reason, redriven_at, previous_published_at,
              previous_kafka_partition, previous_kafka_offset)
    ON relay.outbox TO relay_operator;

-- Which lease publishes which topic. topic '*' stands for "every topic": the claim of a poller
-- with no OUTBOX_TOPICS, which conflicts with every other claim.
CREATE TABLE relay.outbox_topic_lease (
    topic      text        NOT NULL,
    lease      text        NOT NULL REFERENCES relay.outbox_leader (name),
    claimed_at timestamptz NOT NULL,
    CONSTRAINT outbox_topic_lease_pkey PRIMARY KEY (topic)
);
GRANT SELECT ON relay.outbox_topic_lease TO relay_outbox_poller, relay_reconciler, relay_operator;

-- The holder's own lease time (OUTBOX_LEADER_LEASE_MS, in seconds), set when a poller takes the
-- lease: whether a lease has expired is judged by its holder's lease time, never by the lease
-- time of the poller asking (a poller with a short lease would otherwise end the term of a
-- healthy one with a longer lease). NULL for a lease taken by a poller older than V7: the
-- asker's lease time is used then.
ALTER TABLE relay.outbox_leader ADD COLUMN lease_secs double precision;

-- Whether lease row `l` is validly held at time `at_time`: renewed within its holder's lease time
-- (`lease_secs` when the row records none) by a session that still holds its marker lock (the
-- test of the poller's lease_state.sql and lease_take.sql).
CREATE FUNCTION relay.outbox_lease_valid(l relay.outbox_leader, lease_secs float8, at_time timestamptz)
RETURNS boolean
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT coalesce(
        l.holder_pid IS NOT NULL
        AND l.renewed_at > at_time - make_interval(secs => coalesce(l.lease_secs, lease_secs))
        AND EXISTS (
            SELECT FROM pg_catalog.pg_locks AS k
            WHERE k.locktype = 'advisory'
              AND k.database = (SELECT oid FROM pg_catalog.pg_database WHERE datname = current_database())
              AND k.classid = 1380273218 AND k.objid = l.holder_lock::oid AND k.objsubid = 2
              AND k.pid = l.holder_pid AND k.granted
        ), false)
$$;

-- Claims the topics of lease `lease` for its holder, which must be the calling session (the
-- poller's lease session, right after it took the lease and then at every retry). For each
-- wanted topic ('*' when `topics` is empty: every topic) it returns one row: led_by NULL when
-- the lease holds the topic now, else the name of the other lease that validly holds it (or,
-- for '*', holds any topic; for a topic, holds '*'). `lease_secs` is the caller's lease time,
-- used only for leases whose row records none.
--
-- Claims are serialised by a table lock only relay_outbox_poller (and the owner) can take, so of
-- two leaders claiming one topic at once exactly one gets it. A topic is taken over only from a
-- lease whose term this call ended: the conflicting leases' rows are locked, each is judged
-- once, at one instant read once per call, and a lease nobody validly holds then has its term
-- ended in the same step (term + 1, no holder). Its poller, if merely frozen, is fenced by V5's
-- trigger (which accepts marks only from the current term), its renewal finds no row and it
-- stands down; so a topic never has two publishers that can both mark rows. A lease judged valid
-- keeps its topics (the row lock keeps a standby that just took it from losing them).
CREATE FUNCTION relay.outbox_claim_topics(lease text, lease_secs float8, topics text[])
RETURNS TABLE (topic text, led_by text)
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
#variable_conflict use_variable
DECLARE
    wanted text[] := CASE WHEN coalesce(cardinality(topics), 0) = 0 THEN ARRAY['*'] ELSE topics END;
    asked_at timestamptz := clock_timestamp();
    t      text;
    held   relay.outbox_leader;
    other  text;
BEGIN
    IF NOT EXISTS (SELECT FROM relay.outbox_leader AS l WHERE l.name = lease AND l.holder_pid = pg_backend_pid()) THEN
        RAISE EXCEPTION 'relay: this session does not hold lease %', lease USING ERRCODE = 'RL002';
    END IF;
    LOCK TABLE relay.outbox_topic_lease IN SHARE ROW EXCLUSIVE MODE;
    FOREACH t IN ARRAY wanted LOOP
        other := NULL;
        -- Each conflicting lease, locked (in name order, as every claim locks them) and judged
        -- once: valid ones keep the topic, the terms of the others end here.
        FOR held IN
            SELECT * FROM relay.outbox_leader AS c
            WHERE c.name <> lease
              AND c.name IN (SELECT o.lease FROM relay.outbox_topic_lease AS o
                             WHERE t = '*' OR o.topic = t OR o.topic = '*')
            ORDER BY c.name
            FOR UPDATE
        LOOP
            IF relay.outbox_lease_valid(held, lease_secs, asked_at) THEN
                other := coalesce(other, held.name);
            ELSE
                UPDATE relay.outbox_leader AS c
                SET term = c.term + 1, holder_pid = NULL, holder_lock = NULL, renewed_at = NULL,
                    lease_secs = NULL
                WHERE c.name = held.name;
            END IF;
        END LOOP;
        IF other IS NOT NULL THEN
            topic := t;
            led_by := other;
            RETURN NEXT;
            CONTINUE;
        END IF;
        -- Every conflicting lease's term was ended above.
        DELETE FROM relay.outbox_topic_lease AS o
        WHERE o.lease <> lease AND (t = '*' OR o.topic = t OR o.topic = '*');
        INSERT INTO relay.outbox_topic_lease AS o (topic, lease, claimed_at)
        VALUES (t, lease, asked_at)
        ON CONFLICT ON CONSTRAINT outbox_topic_lease_pkey DO NOTHING;
        topic := t;
        led_by := NULL;
        RETURN NEXT;
    END LOOP;
END
$$;
REVOKE EXECUTE ON FUNCTION relay.outbox_claim_topics(text, float8, text[]) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION relay.outbox_claim_topics(text, float8, text[]) TO relay_outbox_poller;
-- The function runs with the caller's rights: the poller needs these to claim.
GRANT INSERT, UPDATE, DELETE ON relay.outbox_topic_lease TO relay_outbox_poller;
