-- Committed rows not yet published or parked, oldest first, after $3 (0 = from the start).
-- There is no persistent cursor: only published_at/parked_at take a row out of this set, so a
-- row whose transaction commits late (a lower id than rows already sent) is found by the next
-- scan from the start. $3 is non-zero only while the batch before it is still in flight, and
-- the poller scans from the start whenever it catches up and at least every few batches.
SELECT id, message_id, topic, key, msg_type, content_type, payload, headers,
       traceparent, tracestate, created_at
FROM relay.outbox
WHERE published_at IS NULL
  AND parked_at IS NULL
  AND (cardinality($1::text[]) = 0 OR topic = ANY($1::text[]))
  AND id > $3
ORDER BY id
LIMIT $2
