-- What the reconciler needs on the receiving side.

-- Drill-down into one source's sequence range without scanning the whole inbox.
CREATE INDEX inbox_source_sequence ON relay.inbox (inbox, source, sequence);

-- Where each inbox's retention has purged up to, per source: inbox rows of `source` with
-- sequence below `below_sequence` were deleted on purpose, so the reconciler does not report
-- the matching outbox rows as missing. Written by whatever purges the inbox.
CREATE TABLE relay.inbox_purged (
    inbox          text        NOT NULL,
    source         text        NOT NULL,
    below_sequence bigint      NOT NULL,
    purged_at      timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT inbox_purged_pkey PRIMARY KEY (inbox, source)
);
