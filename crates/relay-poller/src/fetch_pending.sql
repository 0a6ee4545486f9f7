-- Committed rows not yet published or parked, oldest first, except the rows of the batch still
-- in flight ($3: its highest id, $4: its ids; 0 and empty when none). There is no cursor: every
-- scan starts at the lowest pending id, so a row whose transaction commits late (a lower id
-- than rows already sent) is picked up by the next scan, ahead of any later row of its key
-- (relay.enqueue serialises a key's writers, so those commit after it).
SELECT id, message_id, topic, key, msg_type, content_type, payload, headers,
       traceparent, tracestate, created_at
FROM relay.outbox
WHERE published_at IS NULL
  AND parked_at IS NULL
  AND (cardinality($1::text[]) = 0 OR topic = ANY($1::text[]))
  AND (id > $3 OR NOT (id = ANY($4::bigint[])))
ORDER BY id
LIMIT $2
