-- Messages of inbox $1 processed per second since $2 (the database's clock at the start).
SELECT count(*)::float8 / greatest(extract(epoch FROM max(processed_at) - $2::timestamptz)::float8, 1e-6)
FROM relay.inbox WHERE inbox = $1 AND processed_at IS NOT NULL
