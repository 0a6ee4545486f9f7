-- One differing bucket, row by row.
-- $1 inbox, $2 source, $3 topics, $4 cutoff, $5 from sequence, $6 last sequence (inclusive).
SELECT message_id, ('x' || left(md5(message_id::text || chr(31) || sequence::text || chr(31) || topic || chr(31) || key || chr(31) || msg_type || chr(31) || content_type || chr(31) || headers::text || chr(31) || md5(payload)), 16))::bit(64)::bigint AS h
FROM relay.inbox
WHERE inbox = $1 AND source = $2 AND topic = ANY($3) AND created_at < $4 AND sequence >= $5 AND sequence <= $6
