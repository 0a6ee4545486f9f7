-- Every committed row not yet published or parked, oldest first. There is no cursor: a row whose
-- transaction commits late (lower id than rows already published) is still found by the next
-- scan, because only published_at/parked_at take a row out of this set.
SELECT id, message_id, topic, key, msg_type, content_type, payload, headers,
       traceparent, tracestate, created_at
FROM relay.outbox
WHERE published_at IS NULL
  AND parked_at IS NULL
  AND (cardinality($1::text[]) = 0 OR topic = ANY($1::text[]))
ORDER BY id
LIMIT $2
