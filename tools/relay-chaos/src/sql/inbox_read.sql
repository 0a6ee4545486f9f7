-- What one inbox stored, in the order it stored it.
SELECT message_id, sequence, key, payload, source
FROM relay.inbox
WHERE inbox = $1 AND topic = $2
ORDER BY seq
