-- Processing: the receiving service acts on every inbox message exactly once, in key order.
--
-- Opt-in per inbox (a row in relay.processing); inboxes without one behave as before. A worker
-- does, per transaction: claim -> (savepoint, business effect, relay.done) or (rollback to the
-- savepoint, relay.failed) -> COMMIT. The effect and the mark commit together, so a crash rolls
-- both back and the message is claimed again.
--
-- Ordering: per (source, topic, key) by sequence (the origin's outbox id). Only the oldest
-- unprocessed message of a key (its "head") is ever handed out; while the head is held by
-- another transaction, parked, or waiting for its retry time, nothing later of that key is.

CREATE TABLE relay.processing (
    inbox              text        PRIMARY KEY,
    max_attempts       integer     NOT NULL DEFAULT 10,
    backoff_initial_ms integer     NOT NULL DEFAULT 1000,
    backoff_max_ms     integer     NOT NULL DEFAULT 300000,
    enabled_at         timestamptz NOT NULL DEFAULT clock_timestamp(),
    CONSTRAINT processing_max_attempts CHECK (max_attempts >= 1),
    CONSTRAINT processing_backoff CHECK (backoff_initial_ms >= 0 AND backoff_max_ms >= backoff_initial_ms)
);

-- Constant defaults: adding these is a catalog change, not a rewrite of the table.
ALTER TABLE relay.inbox
    ADD COLUMN processed_at    timestamptz,
    ADD COLUMN skipped_at      timestamptz,
    ADD COLUMN attempts        integer NOT NULL DEFAULT 0,
    ADD COLUMN last_error      text,
    ADD COLUMN next_attempt_at timestamptz,
    ADD COLUMN parked_at       timestamptz,
    ADD COLUMN park_reason     text,
    ADD CONSTRAINT inbox_skipped_is_processed CHECK (skipped_at IS NULL OR processed_at IS NOT NULL) NOT VALID;

-- The heads: relay.claim walks this index key by key (one probe per key, however long a key's
-- backlog is). Rows leave it when processed.
CREATE INDEX inbox_unprocessed ON relay.inbox (inbox, source, topic, key, sequence)
    WHERE processed_at IS NULL;

-- Opts `p_inbox` in (or changes its settings); idempotent. Raises 22023 on invalid settings.
CREATE FUNCTION relay.enable_processing(
    p_inbox text,
    p_max_attempts integer DEFAULT 10,
    p_backoff_initial_ms integer DEFAULT 1000,
    p_backoff_max_ms integer DEFAULT 300000
) RETURNS void
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF p_inbox IS NULL OR p_max_attempts IS NULL OR p_max_attempts < 1
       OR p_backoff_initial_ms IS NULL OR p_backoff_initial_ms < 0
       OR p_backoff_max_ms IS NULL OR p_backoff_max_ms < p_backoff_initial_ms THEN
        RAISE EXCEPTION 'invalid processing settings for inbox %: max_attempts % (>= 1), backoff % ms to % ms (0 <= initial <= max)',
            p_inbox, p_max_attempts, p_backoff_initial_ms, p_backoff_max_ms
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    INSERT INTO relay.processing AS p (inbox, max_attempts, backoff_initial_ms, backoff_max_ms)
    VALUES (p_inbox, p_max_attempts, p_backoff_initial_ms, p_backoff_max_ms)
    ON CONFLICT (inbox) DO UPDATE
        SET max_attempts = EXCLUDED.max_attempts,
            backoff_initial_ms = EXCLUDED.backoff_initial_ms,
            backoff_max_ms = EXCLUDED.backoff_max_ms
        WHERE (p.max_attempts, p.backoff_initial_ms, p.backoff_max_ms)
              IS DISTINCT FROM (EXCLUDED.max_attempts, EXCLUDED.backoff_initial_ms, EXCLUDED.backoff_max_ms);
END
$$;

-- Up to p_limit due heads of distinct keys, locked FOR UPDATE until the caller's transaction
-- ends. Keys are visited round-robin: each session remembers (in the setting
-- relay.claim_cursor) the last key it claimed and starts after it, so a long backlog of one key
-- does not starve the others. Raises 22023 when the inbox is not opted in.
CREATE FUNCTION relay.claim(p_inbox text, p_limit integer DEFAULT 1)
RETURNS TABLE (message_id uuid, source text, topic text, key text, msg_type text, content_type text,
               payload bytea, headers jsonb, traceparent text, tracestate text, sequence bigint,
               created_at timestamptz, received_at timestamptz, attempts integer)
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
#variable_conflict use_column
DECLARE
    cursor_text text := current_setting('relay.claim_cursor', true);
    saved       jsonb;
    start_key   text[];          -- {source, topic, key} the walk began after; NULL = from the start
    pos         text[];          -- the last key visited
    wrapped     boolean;
    head        record;
    claimed     integer := 0;
    last_key    text[];
BEGIN
    IF p_limit IS NULL OR p_limit < 1 THEN
        RAISE EXCEPTION 'claim limit must be at least 1, not %', p_limit USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF NOT EXISTS (SELECT FROM relay.processing AS p WHERE p.inbox = p_inbox) THEN
        RAISE EXCEPTION 'inbox % is not enabled for processing', p_inbox
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'call relay.enable_processing(inbox) first';
    END IF;
    IF cursor_text LIKE '[%' THEN
        saved := cursor_text::jsonb;
        IF saved ->> 0 = p_inbox AND jsonb_array_length(saved) = 4 THEN
            start_key := ARRAY[saved ->> 1, saved ->> 2, saved ->> 3];
        END IF;
    END IF;
    pos := start_key;
    wrapped := start_key IS NULL;
    LOOP
        IF pos IS NULL THEN
            SELECT i.message_id, i.source, i.topic, i.key, i.parked_at, i.next_attempt_at INTO head
            FROM relay.inbox AS i
            WHERE i.inbox = p_inbox AND i.processed_at IS NULL
            ORDER BY i.source, i.topic, i.key, i.sequence
            LIMIT 1;
        ELSE
            SELECT i.message_id, i.source, i.topic, i.key, i.parked_at, i.next_attempt_at INTO head
            FROM relay.inbox AS i
            WHERE i.inbox = p_inbox AND i.processed_at IS NULL
              AND (i.source, i.topic, i.key) > (pos[1], pos[2], pos[3])
            ORDER BY i.source, i.topic, i.key, i.sequence
            LIMIT 1;
        END IF;
        IF NOT FOUND THEN
            EXIT WHEN wrapped;
            wrapped := true;
            pos := NULL;
            CONTINUE;
        END IF;
        -- The second pass ends with the key the first one started after.
        EXIT WHEN wrapped AND start_key IS NOT NULL
              AND (head.source, head.topic, head.key) > (start_key[1], start_key[2], start_key[3]);
        pos := ARRAY[head.source, head.topic, head.key];
        IF head.parked_at IS NULL AND (head.next_attempt_at IS NULL OR head.next_attempt_at <= clock_timestamp()) THEN
            -- Re-checked on the newest row version: another transaction may have processed,
            -- failed or parked it since this statement's snapshot.
            RETURN QUERY
                SELECT i.message_id, i.source, i.topic, i.key, i.msg_type, i.content_type, i.payload,
                       i.headers, i.traceparent, i.tracestate, i.sequence, i.created_at, i.received_at,
                       i.attempts
                FROM relay.inbox AS i
                WHERE i.inbox = p_inbox AND i.message_id = head.message_id
                  AND i.processed_at IS NULL AND i.parked_at IS NULL
                  AND (i.next_attempt_at IS NULL OR i.next_attempt_at <= clock_timestamp())
                FOR UPDATE SKIP LOCKED;
            IF FOUND THEN
                claimed := claimed + 1;
                last_key := pos;
                EXIT WHEN claimed >= p_limit;
            END IF;
        END IF;
    END LOOP;
    IF last_key IS NOT NULL THEN
        PERFORM set_config('relay.claim_cursor',
                           jsonb_build_array(p_inbox, last_key[1], last_key[2], last_key[3])::text, false);
    END IF;
END
$$;

-- Marks a claimed message processed, in the transaction of its business effect. Raises P0002
-- when there is no such message, 55000 when it is already processed or parked (so the effect
-- rolls back with it), 22023 when the inbox is not opted in.
CREATE FUNCTION relay.done(p_inbox text, p_message_id uuid) RETURNS void
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    row_state record;
BEGIN
    IF NOT EXISTS (SELECT FROM relay.processing AS p WHERE p.inbox = p_inbox) THEN
        RAISE EXCEPTION 'inbox % is not enabled for processing', p_inbox USING ERRCODE = 'invalid_parameter_value';
    END IF;
    UPDATE relay.inbox AS i SET processed_at = clock_timestamp()
    WHERE i.inbox = p_inbox AND i.message_id = p_message_id
      AND i.processed_at IS NULL AND i.parked_at IS NULL;
    IF FOUND THEN
        RETURN;
    END IF;
    SELECT i.processed_at, i.parked_at INTO row_state
    FROM relay.inbox AS i WHERE i.inbox = p_inbox AND i.message_id = p_message_id;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'message % is not in inbox %', p_message_id, p_inbox USING ERRCODE = 'no_data_found';
    ELSIF row_state.processed_at IS NOT NULL THEN
        RAISE EXCEPTION 'message % of inbox % was already processed at %', p_message_id, p_inbox, row_state.processed_at
            USING ERRCODE = 'object_not_in_prerequisite_state';
    ELSE
        RAISE EXCEPTION 'message % of inbox % is parked', p_message_id, p_inbox
            USING ERRCODE = 'object_not_in_prerequisite_state';
    END IF;
END
$$;

-- Records a failed attempt of a claimed message (error text kept up to 4000 characters):
-- attempts + 1 and the next attempt after min(initial * 2^(attempts - 1), max) ms; at
-- max_attempts the message is parked with the error as its reason and its key waits.
-- Returns 'retry' or 'parked'. Raises as relay.done does.
CREATE FUNCTION relay.failed(p_inbox text, p_message_id uuid, p_error text) RETURNS text
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    settings  relay.processing;
    reason    text := left(coalesce(p_error, 'unknown error'), 4000);
    attempt   integer;
    row_state record;
BEGIN
    SELECT * INTO settings FROM relay.processing AS p WHERE p.inbox = p_inbox;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'inbox % is not enabled for processing', p_inbox USING ERRCODE = 'invalid_parameter_value';
    END IF;
    UPDATE relay.inbox AS i
    SET attempts = i.attempts + 1,
        last_error = reason,
        next_attempt_at = CASE WHEN i.attempts + 1 >= settings.max_attempts THEN NULL
            ELSE clock_timestamp() + make_interval(secs => least(
                settings.backoff_initial_ms::float8 * power(2::float8, least(i.attempts, 40)),
                settings.backoff_max_ms::float8) / 1000.0) END,
        parked_at = CASE WHEN i.attempts + 1 >= settings.max_attempts THEN clock_timestamp() END,
        park_reason = CASE WHEN i.attempts + 1 >= settings.max_attempts THEN reason END
    WHERE i.inbox = p_inbox AND i.message_id = p_message_id
      AND i.processed_at IS NULL AND i.parked_at IS NULL
    RETURNING i.attempts INTO attempt;
    IF FOUND THEN
        RETURN CASE WHEN attempt >= settings.max_attempts THEN 'parked' ELSE 'retry' END;
    END IF;
    SELECT i.processed_at INTO row_state
    FROM relay.inbox AS i WHERE i.inbox = p_inbox AND i.message_id = p_message_id;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'message % is not in inbox %', p_message_id, p_inbox USING ERRCODE = 'no_data_found';
    ELSIF row_state.processed_at IS NOT NULL THEN
        RAISE EXCEPTION 'message % of inbox % was already processed', p_message_id, p_inbox
            USING ERRCODE = 'object_not_in_prerequisite_state';
    ELSE
        RAISE EXCEPTION 'message % of inbox % is parked', p_message_id, p_inbox
            USING ERRCODE = 'object_not_in_prerequisite_state';
    END IF;
END
$$;

-- The receiving service's workers: claim, done and failed through the functions above, and
-- read the inbox; nothing else (no insert or delete of messages, no dead letters).
DO $$
BEGIN
    IF NOT EXISTS (SELECT FROM pg_catalog.pg_roles WHERE rolname = 'relay_inbox_processor') THEN
        BEGIN
            CREATE ROLE relay_inbox_processor NOLOGIN;
        EXCEPTION
            WHEN duplicate_object OR unique_violation THEN NULL;
            WHEN insufficient_privilege THEN
                RAISE EXCEPTION 'role relay_inbox_processor does not exist and % may not create it', current_user
                    USING ERRCODE = 'insufficient_privilege',
                          HINT = 'grant CREATEROLE to the migrating user, or have a DBA create the NOLOGIN role relay_inbox_processor first';
        END;
    END IF;
END
$$;

REVOKE EXECUTE ON FUNCTION relay.enable_processing(text, integer, integer, integer),
                           relay.claim(text, integer),
                           relay.done(text, uuid),
                           relay.failed(text, uuid, text) FROM PUBLIC;
GRANT USAGE ON SCHEMA relay TO relay_inbox_processor;
GRANT EXECUTE ON FUNCTION relay.enable_processing(text, integer, integer, integer),
                          relay.claim(text, integer),
                          relay.done(text, uuid),
                          relay.failed(text, uuid, text) TO relay_inbox_processor;
GRANT SELECT ON relay.inbox TO relay_inbox_processor;

-- The reconciler may report unprocessed and parked messages; relay-admin lists parked messages
-- and resolves them (retry: clear the park; skip: mark processed and skipped).
GRANT SELECT ON relay.processing TO relay_reconciler, relay_operator;
GRANT SELECT ON relay.inbox TO relay_operator;
GRANT UPDATE (processed_at, skipped_at, parked_at, park_reason, next_attempt_at) ON relay.inbox TO relay_operator;

DO $$
DECLARE
    history regclass := to_regclass('relay_inbox_schema_history');
BEGIN
    IF history IS NOT NULL THEN
        EXECUTE format('GRANT SELECT ON %s TO relay_inbox_processor', history);
    END IF;
END
$$;
