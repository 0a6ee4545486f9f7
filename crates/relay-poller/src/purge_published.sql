-- One retention batch: deletes the longest run of expired rows at the start of the outbox (id
-- order) and raises relay.outbox_purged.below_id past it, in this one statement. Rows below
-- below_id are then exactly the rows deleted on purpose, so the reconciler can skip that range.
-- $1 retention in hours, $2 batch size.
--
-- The head is locked (FOR UPDATE) and `expired` is evaluated on the locked row versions, so a
-- row changed meanwhile (a re-drive clearing published_at) is judged as it now is and stops the
-- run instead of leaving a hole below the marker. Two pollers of one database (different
-- OUTBOX_TOPICS) may run this at once: the second waits on the row locks, skips the rows the
-- first deleted, and below_id only ever grows.
WITH head AS (
    SELECT id,
           -- RETENTION PREDICATE: the one place that says which row may go. Published long
           -- enough ago, or discarded by an operator long enough ago. A parked row nobody has
           -- decided on yet has neither, and is kept.
           coalesce(published_at < now() - make_interval(hours => $1) AND parked_at IS NULL, false)
           OR coalesce(discarded_at < now() - make_interval(hours => $1), false) AS expired
    FROM relay.outbox
    ORDER BY id
    LIMIT $2
    FOR UPDATE
),
-- The first row that must stay ends the run; a row not yet committed is not in the head at all.
doomed AS (
    SELECT id FROM head
    WHERE id < coalesce((SELECT min(id) FROM head WHERE NOT expired), (SELECT max(id) + 1 FROM head))
),
deleted AS (
    DELETE FROM relay.outbox AS o
    USING doomed AS d
    WHERE o.id = d.id
    RETURNING o.id
),
marked AS (
    INSERT INTO relay.outbox_purged AS p (below_id)
    SELECT max(id) + 1 FROM deleted HAVING count(*) > 0
    ON CONFLICT (singleton) DO UPDATE
        SET below_id = greatest(p.below_id, excluded.below_id), purged_at = now()
    RETURNING below_id
)
SELECT (SELECT count(*) FROM deleted) AS deleted,
       (SELECT below_id FROM marked) AS below_id
