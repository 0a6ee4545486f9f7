-- Relay receiving side: the idempotent inbox and the dead-letter table.
-- Applied by inbox-consumer at start-up, or by a DBA by hand when RELAY_MIGRATE=false.
CREATE SCHEMA IF NOT EXISTS relay;

CREATE TABLE relay.inbox (
    -- The logical inbox (INBOX_NAME); several may share one database, each with its own copy.
    inbox           text        NOT NULL,
    message_id      uuid        NOT NULL,
    -- Arrival order within this database, to check and consume in per-key order.
    seq             bigint      GENERATED ALWAYS AS IDENTITY,
    source          text        NOT NULL,
    topic           text        NOT NULL,
    key             text        NOT NULL,
    msg_type        text        NOT NULL,
    content_type    text        NOT NULL,
    payload         bytea       NOT NULL,
    headers         jsonb       NOT NULL,
    traceparent     text,
    tracestate      text,
    -- relay.outbox.id at the source: increases in commit order per key.
    sequence        bigint      NOT NULL,
    created_at      timestamptz NOT NULL,
    kafka_topic     text        NOT NULL,
    kafka_partition integer     NOT NULL,
    kafka_offset    bigint      NOT NULL,
    received_at     timestamptz NOT NULL DEFAULT clock_timestamp(),
    -- The deduplication key: a redelivered or re-published message is stored once per inbox.
    CONSTRAINT inbox_pkey PRIMARY KEY (inbox, message_id)
);

-- Records that could not be stored, with the reason; the partition moves on past them.
CREATE TABLE relay.dead_letter (
    id              bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    inbox           text        NOT NULL,
    kafka_topic     text        NOT NULL,
    kafka_partition integer     NOT NULL,
    kafka_offset    bigint      NOT NULL,
    raw_key         bytea,
    raw_value       bytea,
    error           text        NOT NULL,
    created_at      timestamptz NOT NULL DEFAULT clock_timestamp(),
    CONSTRAINT dead_letter_position_unique UNIQUE (inbox, kafka_topic, kafka_partition, kafka_offset)
);
