-- relay.enqueue sends no notification any more.
--
-- V1 to V5 ended relay.enqueue with pg_notify('relay_outbox', ''), so the poller woke at once.
-- PostgreSQL serialises the commits of all transactions that sent a notification behind one
-- lock (they queue their notifications in commit order): every writer of the database paid for
-- it at commit, and measured with pgbench (tools/relay-bench/pgbench/) 16 writers reached a
-- third to half of the commits per second of the same transaction with a plain INSERT. A
-- transaction that notified also cannot be prepared for two-phase commit (PREPARE TRANSACTION
-- fails with SQLSTATE 0A000), so services using two-phase commit could not enqueue at all.
--
-- The poller now finds new rows by scanning on a short interval that grows while the outbox is
-- idle (OUTBOX_POLL_INTERVAL_MS bounds it). It still LISTENs on relay_outbox: a writer that wants
-- it woken at once may still call pg_notify('relay_outbox', '') in its own transaction, at the
-- cost above (relay-admin and the reconciler do, after a retry or a re-drive).
--
-- Otherwise the function is V5's: same checks, same per-key slot lock held until commit (so per
-- key, id order is commit order), same result, at less cost per call: the headers are walked
-- only when there are any, and the locks are taken without PERFORM (together 57 to 42 us per call,
-- measured in one session). CREATE OR REPLACE keeps the owner and grants (V4); SECURITY DEFINER
-- is a property of the definition, so it is set again below.
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
    locked text;
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
    IF headers IS NULL OR jsonb_typeof(headers) <> 'object' THEN
        RAISE EXCEPTION 'relay.enqueue: headers must be a JSON object of string values'
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF headers <> '{}'::jsonb THEN
        IF EXISTS (SELECT 1 FROM jsonb_each(headers) AS h WHERE jsonb_typeof(h.value) <> 'string') THEN
            RAISE EXCEPTION 'relay.enqueue: headers must be a JSON object of string values'
                USING ERRCODE = 'invalid_parameter_value';
        END IF;
    END IF;
    IF msg_type IS NULL OR content_type IS NULL THEN
        RAISE EXCEPTION 'relay.enqueue: msg_type and content_type must not be null'
            USING ERRCODE = 'null_value_not_allowed';
    END IF;

    key_hash := hashtext(topic || chr(31) || key);
    -- A writer from before migration V5 still holding this key's V1 lock goes first.
    -- Assignments, not PERFORM: a simple expression skips the executor start-up PERFORM pays.
    -- The lock functions return void or boolean; the cast to text only discards the result.
    locked := pg_advisory_lock_shared(1380273217, key_hash)::text;
    locked := pg_advisory_unlock_shared(1380273217, key_hash)::text;
    locked := pg_advisory_xact_lock(1380273221, key_hash & 1023)::text;

    INSERT INTO relay.outbox (topic, key, payload, headers, msg_type, content_type, traceparent, tracestate)
    VALUES (topic, key, payload, headers, msg_type, content_type, traceparent, tracestate)
    RETURNING outbox.message_id INTO new_id;

    RETURN new_id;
END
$$;
ALTER FUNCTION relay.enqueue(text, text, bytea, jsonb, text, text, text, text) SECURITY DEFINER;
