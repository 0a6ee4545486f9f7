-- Dead letters of one inbox, oldest first. $1 inbox, $2 include resolved ones, $3 limit.
SELECT id, kafka_topic, kafka_partition, kafka_offset, raw_key, octet_length(raw_value) AS value_bytes,
       to_char(created_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"') AS created_at,
       error,
       to_char(resolved_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"') AS resolved_at,
       resolution, resolution_note,
       count(*) OVER () AS total
FROM relay.dead_letter
WHERE inbox = $1 AND ($2 OR resolved_at IS NULL)
ORDER BY id
LIMIT $3
