-- One retention batch for one (inbox, source): deletes the longest run of old rows at the start
-- of the source's sequence order and raises relay.inbox_purged.below_sequence past it, in this
-- one statement. Below the marker every row of that source was deleted on purpose, so the
-- reconciler can skip that range. When the inbox processes its messages (a relay.processing
-- row), a row not processed yet (waiting, failing or parked) ends the run however old it is.
-- The caller holds the inbox's retention lock. The only change other transactions make to
-- these rows is marking them processed (relay.done, relay-admin skip), never back: a row this
-- statement's snapshot sees unprocessed at worst stops the run early, so the snapshot is a
-- safe truth to act on, and the DELETE re-checks each row's newest version anyway.
-- $1 inbox, $2 source, $3 retention in hours, $4 batch size.
WITH head AS (
    SELECT sequence FROM relay.inbox
    WHERE inbox = $1 AND source = $2
    ORDER BY sequence
    LIMIT $4
),
-- The first row that must stay ends the run: the lowest sequence in the head's range that is
-- still young or still to be processed. The range includes every row sharing the head's last sequence, so equal
-- sequences (only possible from a forged source) are never split by the marker.
bound AS (
    SELECT coalesce(
        (SELECT min(sequence) FROM relay.inbox
         WHERE inbox = $1 AND source = $2 AND sequence <= (SELECT max(sequence) FROM head)
           -- RETENTION PREDICATE (negated): received too recently to go, or still to be
           -- processed by the receiving service.
           AND (received_at >= now() - make_interval(hours => $3)
                OR (processed_at IS NULL
                    AND EXISTS (SELECT 1 FROM relay.processing AS p WHERE p.inbox = $1)))),
        (SELECT max(sequence) + 1 FROM head)
    ) AS below
),
deleted AS (
    DELETE FROM relay.inbox
    WHERE inbox = $1 AND source = $2 AND sequence < (SELECT below FROM bound)
    RETURNING sequence
),
marked AS (
    INSERT INTO relay.inbox_purged AS p (inbox, source, below_sequence)
    SELECT $1, $2, max(sequence) + 1 FROM deleted HAVING count(*) > 0
    ON CONFLICT (inbox, source) DO UPDATE
        SET below_sequence = greatest(p.below_sequence, excluded.below_sequence), purged_at = now()
    RETURNING below_sequence
)
SELECT (SELECT count(*) FROM deleted) AS deleted,
       (SELECT below_sequence FROM marked) AS below_sequence
