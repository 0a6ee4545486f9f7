-- What the reconciler needs on the origin side.

-- Where retention has purged the outbox up to: rows with id below `below_id` were deleted on
-- purpose, so inbox rows with those sequences cannot be checked and are not reported as extra.
-- One row at most; written by whatever purges the outbox.
CREATE TABLE relay.outbox_purged (
    singleton  boolean     NOT NULL DEFAULT true,
    below_id   bigint      NOT NULL,
    purged_at  timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT outbox_purged_pkey PRIMARY KEY (singleton),
    CONSTRAINT outbox_purged_singleton CHECK (singleton)
);

-- Parked rows are few; find them without scanning the outbox.
CREATE INDEX outbox_parked ON relay.outbox (id) WHERE parked_at IS NOT NULL;

-- A poller limited to some topics (OUTBOX_TOPICS) finds their pending rows without walking the
-- other topics' backlog.
CREATE INDEX outbox_pending_topic ON relay.outbox (topic, id) WHERE published_at IS NULL AND parked_at IS NULL;

-- Every publish updates a row, so vacuum early to keep the pending indexes lean.
ALTER TABLE relay.outbox SET (autovacuum_vacuum_scale_factor = 0.02, autovacuum_analyze_scale_factor = 0.02);

-- The reconciler's service mode finds the first recent row without scanning the table.
CREATE INDEX outbox_created_brin ON relay.outbox USING brin (created_at);
