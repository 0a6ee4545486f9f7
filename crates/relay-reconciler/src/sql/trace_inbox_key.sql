-- The newest messages of one key in one inbox. $1 inbox, $2 topic, $3 key, $4 limit.
SELECT message_id, sequence FROM relay.inbox
WHERE inbox = $1 AND topic = $2 AND key = $3
ORDER BY sequence DESC
LIMIT $4
