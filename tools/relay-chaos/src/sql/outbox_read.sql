-- What was sent: each message of the topic with its outbox id (per-key commit order).
SELECT message_id, id, key, payload FROM relay.outbox WHERE topic = $1
