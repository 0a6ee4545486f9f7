-- Relay origin side: the transactional outbox and the one SQL call applications use.
-- Applied by outbox-poller at start-up, or by a DBA by hand when RELAY_MIGRATE=false.
CREATE SCHEMA IF NOT EXISTS relay;

CREATE TABLE relay.outbox (
    id              bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    message_id      uuid        NOT NULL DEFAULT gen_random_uuid(),
    topic           text        NOT NULL,
    key             text        NOT NULL,
    msg_type        text        NOT NULL DEFAULT '',
    content_type    text        NOT NULL DEFAULT 'application/octet-stream',
    payload         bytea       NOT NULL,
    headers         jsonb       NOT NULL DEFAULT '{}',
    traceparent     text,
    tracestate      text,
    created_at      timestamptz NOT NULL DEFAULT clock_timestamp(),
    -- Set by the poller only after the broker acknowledged the record.
    published_at    timestamptz,
    kafka_partition integer,
    kafka_offset    bigint,
    -- Set instead of published_at when the broker refuses the record for good.
    parked_at       timestamptz,
    park_reason     text,
    CONSTRAINT outbox_message_id_unique UNIQUE (message_id),
    CONSTRAINT outbox_headers_object CHECK (jsonb_typeof(headers) = 'object')
);

-- The poller's scan: every row not yet published or parked, in id order. Kept small because
-- published rows leave it.
CREATE INDEX outbox_pending ON relay.outbox (id) WHERE published_at IS NULL AND parked_at IS NULL;

-- relay.enqueue: call inside the application's own transaction, next to its business change.
--   SELECT relay.enqueue('payments.v1', 'account-42', '\x7b7d'::bytea);
-- Returns the message id. Nothing is visible to the poller until the transaction commits.
--
-- Ordering: before drawing an id, the call takes a transaction-scoped advisory lock on
-- (topic, key). A second transaction enqueueing the same key waits until the first commits or
-- aborts, so within one key id order equals commit order, which the poller publishes in.
-- Transactions that enqueue several keys should enqueue them in a consistent order.
CREATE FUNCTION relay.enqueue(
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
    new_id uuid;
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

    -- Class 1380273217 ('RELA') keeps Relay's locks apart from the application's own.
    PERFORM pg_advisory_xact_lock(1380273217, hashtext(topic || chr(31) || key));

    INSERT INTO relay.outbox (topic, key, payload, headers, msg_type, content_type, traceparent, tracestate)
    VALUES (topic, key, payload, headers, msg_type, content_type, traceparent, tracestate)
    RETURNING outbox.message_id INTO new_id;

    -- Delivered at commit; the poller wakes at once instead of waiting for its poll interval.
    PERFORM pg_notify('relay_outbox', '');
    RETURN new_id;
END
$$;
