-- Operators leave evidence (receiving side): the operator audit trail (relay.operator_audit,
-- below; the same table as the outbox schema's), and history columns on relay.inbox so what
-- `relay-admin processing retry` replaces stays queryable: it clears parked_at, park_reason and
-- next_attempt_at (so the message is claimed again) and keeps the parking as
-- previous_parked_at and previous_park_reason, with retried_at. attempts and last_error were
-- kept already. Dead letters keep their resolution and note; a re-drive that still fails
-- replaces `error`, and the audit row keeps the previous one.

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

ALTER TABLE relay.inbox
    ADD COLUMN retried_at           timestamptz,
    ADD COLUMN previous_parked_at   timestamptz,
    ADD COLUMN previous_park_reason text;
GRANT UPDATE (retried_at, previous_parked_at, previous_park_reason) ON relay.inbox TO relay_operator;
