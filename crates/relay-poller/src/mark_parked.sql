-- Rows the broker will never accept as they are; kept with the reason for an operator.
UPDATE relay.outbox AS o
SET parked_at = clock_timestamp(), park_reason = d.reason
FROM unnest($1::bigint[], $2::text[]) AS d(id, reason)
WHERE o.id = d.id AND o.published_at IS NULL
