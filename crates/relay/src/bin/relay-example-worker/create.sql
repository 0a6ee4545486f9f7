-- The example's business table ({table} is replaced by EXAMPLE_TABLE): one row per effect.
-- No unique key on purpose, so that a message acted on twice would show as two rows.
-- `position` counts the key's effects in the order they committed (1, 2, ...).
CREATE TABLE IF NOT EXISTS {table} (
    message_id uuid        NOT NULL,
    source     text        NOT NULL,
    topic      text        NOT NULL,
    key        text        NOT NULL,
    sequence   bigint      NOT NULL,
    position   bigint      NOT NULL,
    written_at timestamptz NOT NULL DEFAULT clock_timestamp()
);
CREATE INDEX IF NOT EXISTS {table}_key_position ON {table} (source, topic, key, position);
