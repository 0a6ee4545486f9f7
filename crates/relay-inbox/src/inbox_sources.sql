-- The sources one inbox holds, found by a loose index scan of inbox_source_sequence: one index
-- probe per source instead of a pass over every row. $1 inbox.
WITH RECURSIVE sources (source) AS (
    (SELECT source FROM relay.inbox WHERE inbox = $1 ORDER BY source LIMIT 1)
    UNION ALL
    SELECT (SELECT i.source FROM relay.inbox AS i
            WHERE i.inbox = $1 AND i.source > s.source
            ORDER BY i.source LIMIT 1)
    FROM sources AS s
    WHERE s.source IS NOT NULL
)
SELECT source FROM sources WHERE source IS NOT NULL
