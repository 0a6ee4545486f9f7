-- One message in one inbox, as JSON without its payload, so the processing columns (inbox V6,
-- V8) are read where present. $1 inbox, $2 message id.
SELECT to_jsonb(i) - 'payload' - 'headers' FROM relay.inbox AS i WHERE i.inbox = $1 AND i.message_id = $2
