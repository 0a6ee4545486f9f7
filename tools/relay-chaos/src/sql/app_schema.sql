-- The chaos workload's own business table: one row per committed transaction, written in the
-- same transaction as its outbox messages. After an uncertain COMMIT (the connection died while
-- committing) the workload looks its chunk up here instead of enqueueing the messages twice.
CREATE SCHEMA IF NOT EXISTS chaos_app;
CREATE TABLE IF NOT EXISTS chaos_app.batch (
    chunk        bigint      PRIMARY KEY,
    messages     integer     NOT NULL,
    committed_at timestamptz NOT NULL DEFAULT now()
);
