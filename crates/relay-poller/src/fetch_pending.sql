-- Committed rows not yet published or parked, oldest first: their ids and payload sizes only (the
-- size comes from the value's header, the payload itself is not read; the caller keeps the prefix
-- that fits OUTBOX_BATCH_MAX_BYTES, at least one row), so that a row whose
-- content cannot be read cannot fail the scan (fetch_rows.sql reads the rows, and one by one
-- when a row fails). There is no cursor: every scan starts at the lowest pending id, so a row
-- whose transaction commits late (a lower id than rows already sent) is picked up by the next
-- scan, ahead of any later row of its key (relay.enqueue serialises a key's writers, so those
-- commit after it).
-- $1 the poller's topics (empty: all); $2 batch size; $3, $4 the highest and all ids still in
-- flight or awaiting their delivery report (0 and empty when none); $5 whether a parked row
-- holds back the later rows of its key until an operator retries or discards it; $6, $7 the
-- topics and keys held back while an earlier row of theirs awaits its delivery report; $8 the
-- topics held back whole while as many records await their reports as a batch holds.
SELECT o.id, coalesce(octet_length(o.payload), 0)::bigint AS payload_length
FROM relay.outbox AS o
WHERE o.published_at IS NULL
  AND o.parked_at IS NULL
  AND (cardinality($1::text[]) = 0 OR o.topic = ANY($1::text[]))
  AND (o.id > $3 OR NOT (o.id = ANY($4::bigint[])))
  AND NOT EXISTS (
      SELECT FROM unnest($6::text[], $7::text[]) AS held(topic, key)
      WHERE held.topic = o.topic AND held.key = o.key)
  AND NOT (o.topic = ANY($8::text[]))
  AND NOT ($5::boolean AND EXISTS (
      SELECT FROM relay.outbox AS p
      WHERE p.parked_at IS NOT NULL AND p.discarded_at IS NULL
        AND p.topic = o.topic AND p.key = o.key AND p.id < o.id))
ORDER BY o.id
LIMIT $2
